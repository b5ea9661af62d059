"""The pub/sub family: a key-value store whose change feed is a durable, ordered log.

Stores such as Redis have no native "watch from revision N" — their plain
publish/subscribe loses every message sent while a subscriber is disconnected.
A backend of this family instead appends every commit, atomically with the
commit itself, to one or more append-only *logs* (Redis Streams, a Kafka
topic, a table with an ordered key...), and watchers read the logs from a
revision. This module holds the store-independent part once:

* the entry format (:class:`LogEntry`: one commit's changes in one log) and a
  compact binary encoding of key changes (:func:`encode_changes`);
* :class:`ChangeLogBackend`, a :class:`~nbdb.families.kv.KeyValueBackend`
  whose ``watch_keys`` merges the logs that cover the watched prefixes;
* the rules that make resuming safe (:class:`LogKeyStream`).

Resume safety. Every commit carries a random *token*. Besides the change logs,
the store keeps a *commit log* (revision -> token) trimmed to the history
window. A watcher at revision R remembers the token T of commit R and, in the
same atomic read that fetches new entries, checks that the commit log still
holds (R, T). If it does not, the history the watcher stands on is gone —
trimmed, compacted, or replaced by a server that restarted without
persistence or a replica that lost the last writes in a failover — and the
watcher raises :class:`nbdb.HistoryGoneError` so that a cache re-lists. A
store that restarts *with* its data keeps (R, T) and watchers resume without a
re-list. Revision 0 ("nothing seen") is valid as long as the commit log still
starts at revision 1.

A backend supplies :meth:`ChangeLogBackend.logs_for` (which logs cover some key
prefixes) and :meth:`ChangeLogBackend.open_log_reader` (a private connection
that reads logs atomically with the head and the anchor check, and blocks until
something new may have arrived).
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nbdb import errors
from nbdb.families.kv import KeyChange, KeyStream, KeyValueBackend
from nbdb.retry import RetryPolicy

__all__ = [
    "GENESIS",
    "ChangeLogBackend",
    "ChangeLogReader",
    "LogEntry",
    "LogKeyStream",
    "LogRead",
    "decode_changes",
    "encode_changes",
    "refuse_stored_format",
]

log = logging.getLogger(__name__)

GENESIS = ""
"""The anchor token of revision 0: valid while the commit log still starts at the first commit."""

_LEN = struct.Struct(">i")
_WAIT_CHUNK = 1.0
_TOKEN_MEMORY = 4096


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One commit's changes as one log holds them (a commit may span several logs)."""

    revision: int
    token: str
    changes: tuple[KeyChange, ...]


@dataclass(frozen=True, slots=True)
class LogRead:
    """What one atomic read of the logs saw.

    ``anchor`` is the token the commit log holds for the reader's revision
    (:data:`GENESIS` for revision 0 if no history was trimmed yet), or None if
    it holds none. For a later revision, :data:`GENESIS` says that the commit
    log no longer holds it but holds every commit after it (a head read while
    the log was empty; the revision's token cannot be checked, and nothing
    after it is lost). ``entries`` are each log's entries after the reader's
    revision, oldest first, at most ``limit`` per log; ``truncated`` names the
    logs that had more.
    """

    head: int
    head_token: str
    anchor: str | None
    entries: Mapping[str, Sequence[LogEntry]]
    truncated: frozenset[str]


class ChangeLogReader(ABC):
    """One watcher's own connection to the logs (blocking reads must not share a pool)."""

    @abstractmethod
    def read(self, logs: Sequence[str], after: int, limit: int) -> LogRead:
        """Atomically: the head, the anchor of ``after`` and the entries of ``logs`` after it.

        Raises BackendUnavailableError once the store stays unreachable after
        the backend's retries.
        """

    @abstractmethod
    def wait(self, logs: Sequence[str], after: int, timeout: float) -> None:
        """Block until some log may have an entry after ``after``, or ``timeout`` seconds pass."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection; a ``read`` or ``wait`` blocked in another thread fails promptly."""


def encode_changes(changes: Sequence[KeyChange]) -> bytes:
    """The binary form of a commit's changes: 5 length-prefixed fields each (length -1: None).

    Stores that build entries server-side (a Lua script) produce the same bytes.
    """
    parts: list[bytes] = []
    for change in changes:
        for item in (
            change.key.encode(),
            change.value,
            str(change.version).encode(),
            change.prev_value,
            str(change.prev_version).encode(),
        ):
            if item is None:
                parts.append(_LEN.pack(-1))
            else:
                parts.append(_LEN.pack(len(item)))
                parts.append(item)
    return b"".join(parts)


def decode_changes(blob: bytes, revision: int) -> tuple[KeyChange, ...]:
    """Parse :func:`encode_changes` output; HistoryGoneError if it is damaged.

    A damaged log entry cannot be delivered, so the history is treated as
    lost from there: a cache re-lists instead of stalling on it.
    """
    out: list[KeyChange] = []
    pos = 0
    try:
        while pos < len(blob):
            items: list[bytes | None] = []
            for _ in range(5):
                (length,) = _LEN.unpack_from(blob, pos)
                pos += 4
                if length < 0:
                    items.append(None)
                    continue
                if pos + length > len(blob):
                    raise ValueError("field runs past the end of the entry")
                items.append(blob[pos : pos + length])
                pos += length
            key, value, version, prev_value, prev_version = items
            if key is None or version is None or prev_version is None:
                raise ValueError("missing key or version")
            out.append(KeyChange(key.decode(), value, int(version), prev_value, int(prev_version), revision))
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise errors.HistoryGoneError(f"the change log entry of revision {revision} is damaged ({exc})") from None
    return tuple(out)


class LogKeyStream(KeyStream):
    """Key changes under some prefixes, merged from the logs that cover them.

    Merging is exact because a commit is atomic: when any log shows revision
    R, every log holding a part of R shows it too, and one atomic read sees
    each log up to the same instant. When a log returned only its first
    ``limit`` entries, delivery stops at the oldest such cut so that no
    revision is half-delivered.
    """

    def __init__(
        self,
        backend: ChangeLogBackend,
        reader: ChangeLogReader,
        logs: Sequence[str],
        prefixes: Sequence[str],
        since: int,
        token: str | None,
    ) -> None:
        self._backend = backend
        self._reader = reader
        self._logs = list(logs)
        self._prefixes = tuple(prefixes)
        self._revision = since
        self._token = token
        self._closed = threading.Event()

    @property
    def revision(self) -> int:
        return self._revision

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._reader.close()

    def poll(self, timeout: float | None) -> list[KeyChange]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed.is_set():
            try:
                read = self._reader.read(self._logs, self._revision, self._backend.log_read_limit)
            except Exception:
                if self._closed.is_set():
                    return []
                raise
            self._check_anchor(read)
            changes = self._take(read)
            if changes:
                return changes
            remaining = _WAIT_CHUNK if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return []
            try:
                self._reader.wait(self._logs, self._revision, min(remaining, _WAIT_CHUNK))
            except Exception:
                if self._closed.is_set():
                    return []
                raise
        return []

    def _check_anchor(self, read: LogRead) -> None:
        if read.anchor == GENESIS and self._revision > 0:
            # The log no longer holds this revision but holds every commit after it (LogRead.anchor):
            # nothing is lost, and a token learnt for it is kept for the next check.
            if self._token is None:
                self._token = GENESIS
            return
        if read.anchor is None or (self._token is not None and read.anchor != self._token):
            what = "was trimmed or compacted" if read.anchor is None else "was rewritten"
            raise errors.HistoryGoneError(
                f"revision {self._revision} is no longer in the change history (it {what}; "
                f"the server is at revision {read.head}: history trimmed, or the server lost data "
                "in a restart or failover)"
            )
        self._token = read.anchor

    def _take(self, read: LogRead) -> list[KeyChange]:
        entries = [e for batch in read.entries.values() for e in batch if e.revision > self._revision]
        if not entries:
            self._advance(read.head, read.head_token)
            return []
        if read.truncated:
            cutoff = min(read.entries[name][-1].revision for name in read.truncated if read.entries.get(name))
        else:
            cutoff = read.head
        entries = sorted((e for e in entries if e.revision <= cutoff), key=lambda e: e.revision)
        out = [c for e in entries for c in e.changes if c.key.startswith(self._prefixes)]
        if cutoff == read.head and not read.truncated:
            self._advance(read.head, read.head_token)
        else:
            self._advance(cutoff, next(e.token for e in entries if e.revision == cutoff))
        return out

    def _advance(self, revision: int, token: str) -> None:
        if revision > self._revision:
            self._revision = revision
            self._token = token
            self._backend.remember_token(revision, token)


def refuse_stored_format(found: str, expected: str, *, where: str, page: str) -> None:
    """Raise :class:`~nbdb.errors.StoredFormatError` unless ``found`` is ``expected``.

    Backends mark a namespace with the format they write and read the mark at
    connect (each in its own way); reading another format would misread it
    silently. The message names the fix: an older format is moved with the
    nbdb that wrote it (``nbdb dump``) and this one (``nbdb load``); a newer or
    unknown one needs the nbdb that wrote it. ``where`` names the server and
    namespace, ``page`` the backend's documentation.
    """
    if found == expected:
        return
    older = found.isdecimal() and expected.isdecimal() and int(found) < int(expected)
    if older:
        fix = (
            f"which this version does not read. Fix: with the nbdb that wrote it, `nbdb dump` the data to a "
            f"file, then `nbdb load` it with this version into a new namespace (or into this one once its "
            f"keys are deleted); see {page}"
        )
    else:
        fix = (
            "written by another nbdb version, whose clients cannot share it with this one. Fix: connect with "
            f"that version (upgrade nbdb), or use another namespace; see {page}"
        )
    raise errors.StoredFormatError(
        f"{where} holds nbdb's stored format {found!r}, not {expected!r}, {fix}", found=found, expected=expected
    )


class ChangeLogBackend(KeyValueBackend):
    """A key-value backend whose watch reads durable change logs (see the module docstring).

    Subclasses implement the key-value primitives, :meth:`logs_for` and
    :meth:`open_log_reader`, and call :meth:`remember_token` with every
    (revision, token) they learn (commits, head reads), so that a watch
    started from a revision this client obtained can verify its anchor.
    """

    log_read_limit: int = 1000
    """Most entries read from one log in one round trip."""

    def __init__(self, key_prefix: str = "", retry: RetryPolicy | None = None) -> None:
        super().__init__(key_prefix, retry)
        self._tokens: OrderedDict[int, str] = OrderedDict()
        self._tokens_lock = threading.Lock()

    @abstractmethod
    def logs_for(self, prefixes: Sequence[str]) -> list[str]:
        """The logs whose entries cover every change under ``prefixes`` (UnsupportedError if none do)."""

    @abstractmethod
    def open_log_reader(self) -> ChangeLogReader:
        """A new reader with a connection of its own."""

    def remember_token(self, revision: int, token: str) -> None:
        """Record the token of commit ``revision`` (a bounded memory of the latest ones)."""
        with self._tokens_lock:
            self._tokens[revision] = token
            self._tokens.move_to_end(revision)
            while len(self._tokens) > _TOKEN_MEMORY:
                self._tokens.popitem(last=False)

    def token_of(self, revision: int) -> str | None:
        """The token of commit ``revision`` if this client saw it, else None."""
        if revision == 0:
            return GENESIS
        with self._tokens_lock:
            return self._tokens.get(revision)

    def watch_keys(self, prefixes: Sequence[str], since: int) -> KeyStream:
        """Changes under ``prefixes`` after ``since``, read from the covering logs.

        If this client learnt the token of ``since`` (from a list, a commit or
        an earlier watch), the stream checks it; otherwise it trusts what the
        commit log holds for ``since`` when it first reads.
        """
        if since < 0:
            raise errors.ValidationError(f"a revision is >= 0, not {since}")
        logs = self.logs_for(prefixes)
        return LogKeyStream(self, self.open_log_reader(), logs, prefixes, since, self.token_of(since))
