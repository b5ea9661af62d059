"""Hazelcast backend: the change-log family on an open-source Hazelcast 5 cluster.

URL (see ``docs/backends/hazelcast.md``)::

    hazelcast://host:port[,host:port...]/cluster-name[?option=value&...]

Layout: four IMaps per namespace, ``nbdb.<namespace>.<name>``::

    kv     family key -> version (8 bytes) | revision of the last write (8) | value
    log    revision -> commit token (24 ASCII bytes) | the commit's key changes (pubsub encoding)
    meta   "head" -> revision | token of the latest commit;  "trim" -> newest trimmed revision;
           "commit" is the key of the commit lock (an IMap key lock, nothing stored)
    lease  lock name -> owner token (TTL'd entries);  ids: counter name -> last id handed out

Why a commit is atomic. A commit is one Hazelcast transaction of type TWO_PHASE with
durability 1: the member coordinating it copies the transaction log to a backup member
before committing, and if the coordinator dies the backup finishes the commit or rolls it
back (never half of it). The transaction reads ``head`` with ``getForUpdate`` (a
transactional key lock, so revisions are unique and dense even if two committers ever ran
at once), checks every condition on keys it locks, and writes the objects, the ``log``
entry of revision ``head + 1`` and the new ``head``. All of it lands, or none of it.

Why readers never see half of one. Hazelcast applies the commit phase partition by
partition, so an instant exists where some keys of a commit are visible and others are
not. Every committer therefore holds the ``commit`` key lock of ``meta`` from before its
transaction begins until ``commit()`` has returned, which Hazelcast does only once every
partition applied its part. Hence when a committer holds that lock, every commit up to
``head`` is wholly visible, and a list that takes the same lock reads one revision exactly.

Why the change stream has no gap. Revisions are dense (one ``head`` key lock), each
``log`` entry holds the whole commit (so a transaction is one change in every stream),
and a reader delivers entries in order only up to the first one it cannot see yet: an
entry below ``head`` that is missing is a commit still being applied, never a hole, unless
it is at or below the ``trim`` mark, which is raised before entries are removed. A watcher
also checks that the entry of its own revision still holds the token it saw (the pub/sub
family's anchor), so a cluster that lost its data (every member restarted: the open-source
server keeps nothing on disk) gives :class:`nbdb.HistoryGoneError` and caches re-list.
A Ringbuffer or the event journal would be the grid's natural log, but neither takes part
in a transaction (nor is the journal readable from the Python client), so the log is a map.

Exactly once. The revision of a commit is known before it commits (``head + 1``), and its
``log`` entry carries a random token. When the reply to ``commit()`` is lost, the entry of
that revision says what happened: our token (it landed), another token (it did not: the
revision went to someone else), or nothing yet, in which case a fence transaction takes the
``head`` lock — which our transaction held until it finished — and reads ``head`` again.
Only if that cannot be settled within the timeout does the commit raise
:class:`nbdb.CommitUnknownError`; it is never reported as a conflict.

Locks and ids come from IMaps (TTL'd lease entries, and counters moved by
compare-and-swap), not from the CP Subsystem: since Hazelcast 5.5 the CP Subsystem is an
Enterprise feature and the open-source member refuses every CP call, unsafe mode included.
They survive the loss of a member (synchronous backups) but not a split brain.
"""

from __future__ import annotations

import logging
import re
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, TypeVar
from urllib.parse import unquote, urlsplit

from nbdb import errors
from nbdb.capabilities import Atomicity, Capabilities, Durability
from nbdb.families.kv import Condition, Exists, KeyChange, KeyValue, PrefixUnchangedSince, VersionIs
from nbdb.families.pubsub import (
    GENESIS,
    ChangeLogBackend,
    ChangeLogReader,
    LogEntry,
    LogRead,
    decode_changes,
    encode_changes,
)
from nbdb.loader import redact, url_options

try:
    import hazelcast.errors as hzerrors
    from hazelcast.client import HazelcastClient
    from hazelcast.config import IndexType
    from hazelcast.predicate import between, less_or_equal
    from hazelcast.transaction import TWO_PHASE
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        f"the hazelcast backend needs hazelcast-python-client: pip install 'nbdb[hazelcast]' ({exc})"
    ) from exc

__all__ = ["HazelcastBackend", "HazelcastConfig", "parse_url"]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_PORT = 5701
DEFAULT_HISTORY = 10_000
_HEAD, _TRIM, _COMMIT_LOCK = "head", "trim", "commit"
_KV_HEADER = struct.Struct(">qq")
_REVISION = struct.Struct(">q")
_TOKEN_BYTES = 24
_TRIM_EVERY = 64
_EXPIRY_GRAIN = 1.0
"""Hazelcast keeps entry times in whole seconds, so an entry may expire up to a second before its
TTL; leases ask for this much more, so that a lease never lapses before the TTL nbdb promised."""
_NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]{0,64}$")
_OPTIONS = frozenset(
    {"namespace", "history", "timeout", "connect_timeout", "commit_lease", "client_name", "smart_routing"}
    | {"username", "password", "ssl", "tls", "ssl_cafile", "ssl_certfile", "ssl_keyfile"}
)
_ENTERPRISE_OPTIONS = {
    "username": "client authentication (a member security realm)",
    "password": "client authentication (a member security realm)",
    "ssl": "TLS",
    "tls": "TLS",
    "ssl_cafile": "TLS",
    "ssl_certfile": "TLS",
    "ssl_keyfile": "TLS",
}


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class HazelcastConfig:
    """Connection settings parsed from a URL and options."""

    members: tuple[tuple[str, int], ...]
    cluster_name: str
    namespace: str
    history: int
    timeout: float
    connect_timeout: float
    commit_lease: float
    client_name: str | None
    smart_routing: bool

    @property
    def where(self) -> str:
        """``host:port,...`` of the members, for messages."""
        return ",".join(f"{h}:{p}" for h, p in self.members)

    def __repr__(self) -> str:
        # The cluster name is the cluster's only shared secret: keep it out of logs.
        return f"HazelcastConfig(hazelcast://{self.where}/***, namespace={self.namespace!r})"


def _number(name: str, text: Any, kind: Callable[[str], T], minimum: float) -> T:
    try:
        value = kind(str(text))
    except ValueError:
        raise errors.ValidationError(f"hazelcast option {name} must be a number, not {text!r}") from None
    if value < minimum:  # type: ignore[operator]
        raise errors.ValidationError(f"hazelcast option {name} must be >= {minimum}, not {text!r}")
    return value


def _member(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise errors.ValidationError(f"hazelcast URL: missing host in {text!r}")
    return host, _number("port", port or DEFAULT_PORT, int, 1)


def parse_url(url: str, options: Mapping[str, Any]) -> HazelcastConfig:
    """Parse ``hazelcast://host:port[,...]/cluster-name`` plus options (keywords win over the query)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "hazelcast":
        raise errors.ValidationError(f"not a hazelcast URL: {redact(url)!r}")
    query = url_options(parts.query, {k: v for k, v in options.items() if v is not None}, _OPTIONS, "hazelcast")
    netloc = parts.netloc
    if "@" in netloc:
        raise errors.UnsupportedError(
            "hazelcast URL: credentials need a member security realm, an Enterprise feature; "
            "the open-source cluster checks only the cluster name (the URL path)"
        )
    enterprise = sorted(k for k in query if k in _ENTERPRISE_OPTIONS)
    if enterprise:
        what = ", ".join(sorted({_ENTERPRISE_OPTIONS[k] for k in enterprise}))
        raise errors.UnsupportedError(
            f"hazelcast option(s) {', '.join(enterprise)}: {what} is Hazelcast Enterprise only; "
            "the open-source cluster checks only the cluster name"
        )
    members = tuple(_member(m) for m in (netloc or "127.0.0.1").split(",") if m)
    path = [unquote(p) for p in parts.path.split("/") if p]
    if len(path) > 1:
        raise errors.ValidationError("hazelcast URL path is /CLUSTER-NAME")
    namespace = str(query.get("namespace", ""))
    if not _NAMESPACE.match(namespace):
        raise errors.ValidationError(
            f"hazelcast option namespace may hold letters, digits, '_', '.', '-': {namespace!r}"
        )
    smart = str(query.get("smart_routing", "1")).strip().lower()
    if smart not in ("0", "1", "true", "false"):
        raise errors.ValidationError(f"hazelcast option smart_routing must be 0 or 1, not {smart!r}")
    return HazelcastConfig(
        members=members,
        cluster_name=path[0] if path else "dev",
        namespace=namespace,
        history=_number("history", query.get("history", DEFAULT_HISTORY), int, 1),
        timeout=_number("timeout", query.get("timeout", 10), float, 1.0),
        connect_timeout=_number("connect_timeout", query.get("connect_timeout", 10), float, 0.1),
        commit_lease=_number("commit_lease", query.get("commit_lease", 30), float, 1.0),
        client_name=query.get("client_name"),
        smart_routing=smart in ("1", "true"),
    )


# ---------------------------------------------------------------- errors


def _translate(exc: BaseException, where: str) -> errors.NbdbError:
    """The nbdb error for a hazelcast-python-client exception."""
    if isinstance(exc, errors.NbdbError):
        return exc
    if isinstance(exc, hzerrors.AuthenticationError | hzerrors.SecurityError | hzerrors.AccessControlError):
        return errors.AuthError(f"hazelcast at {where} refused the client: {exc}")
    if isinstance(exc, hzerrors.HazelcastSerializationError | hzerrors.ClassCastError):
        return errors.CorruptRecordError(f"a map of the nbdb namespace at {where} holds foreign data: {exc}")
    if isinstance(exc, hzerrors.UnsupportedOperationError):
        return errors.UnsupportedError(f"hazelcast at {where} does not support this: {exc}")
    return errors.BackendUnavailableError(f"hazelcast at {where} failed: {type(exc).__name__}: {exc}")


def _bytes(value: Any, key: object, minimum: int) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) < minimum:
        raise errors.CorruptRecordError(
            f"key {key!r} holds {type(value).__name__} data nbdb did not write", key=str(key)
        )
    return bytes(value)


def _kv(key: str, raw: Any) -> KeyValue | None:
    if raw is None:
        return None
    data = _bytes(raw, key, _KV_HEADER.size)
    version, mod_revision = _KV_HEADER.unpack_from(data)
    return KeyValue(key, data[_KV_HEADER.size :], version, mod_revision)


def _head(raw: Any) -> tuple[int, str]:
    if raw is None:
        return 0, GENESIS
    data = _bytes(raw, _HEAD, _REVISION.size)
    return _REVISION.unpack_from(data)[0], data[_REVISION.size :].decode("ascii", "replace")


def _entry(revision: int, raw: Any) -> LogEntry:
    try:
        data = _bytes(raw, revision, _TOKEN_BYTES)
    except errors.CorruptRecordError as exc:
        raise errors.HistoryGoneError(f"the change log entry of revision {revision} is damaged ({exc})") from None
    return LogEntry(
        revision, data[:_TOKEN_BYTES].decode("ascii", "replace"), decode_changes(data[_TOKEN_BYTES:], revision)
    )


class _Unsettled(Exception):
    """A commit's reply was lost and its outcome is not known yet (internal)."""


# ---------------------------------------------------------------- change-log reader


class _LogReader(ChangeLogReader):
    """Reads ``log`` entries after a revision; waits on the backend's shared ``log`` listener."""

    def __init__(self, backend: HazelcastBackend) -> None:
        self._backend = backend
        self._closed = False

    def read(self, logs: Sequence[str], after: int, limit: int) -> LogRead:
        """Entries after ``after`` up to the first one not visible yet, reported as the head.

        Entries at or below the head whose commit is still being applied are not holes:
        the read stops before them, so the stream never advances past an undelivered change.
        """
        backend = self._backend
        deadline = time.monotonic() + backend.config.timeout
        while True:
            head, head_token = _head(backend._call(lambda: backend._meta.get(_HEAD)))
            wanted = list(range(after + 1, min(head, after + limit) + 1))
            keys = [after, *wanted] if after > 0 else wanted
            found: dict[int, Any] = backend._call(partial(backend._log.get_all, keys)) if keys else {}
            trim = backend._trim_mark()
            anchor: str | None
            if after == 0:
                anchor = GENESIS if trim == 0 else None
            elif after in found:
                anchor = _entry(after, found[after]).token
            elif after == head:
                anchor = head_token
            elif after > head or after <= trim:
                anchor = None
            elif time.monotonic() < deadline and not self._closed:
                time.sleep(0.005)  # the commit of ``after`` is still being applied
                continue
            else:
                raise errors.BackendUnavailableError(
                    f"hazelcast: the change log entry of revision {after} did not become visible "
                    f"within {backend.config.timeout}s"
                )
            entries: list[LogEntry] = []
            for revision in wanted:
                if revision not in found:
                    if revision <= trim:
                        anchor = None  # trimmed under our feet: the stream reports the lost history
                    break
                entries.append(_entry(revision, found[revision]))
            shown, token = (entries[-1].revision, entries[-1].token) if entries else (after, anchor or "")
            if shown == head:
                token = head_token
            return LogRead(shown, token, anchor, {name: entries for name in logs}, frozenset())

    def wait(self, logs: Sequence[str], after: int, timeout: float) -> None:
        self._backend._wait_for_log(after, timeout, lambda: self._closed)

    def close(self) -> None:
        self._closed = True
        self._backend._wake_log_waiters()


# ---------------------------------------------------------------- the backend


class HazelcastBackend(ChangeLogBackend):
    """Key-value backend over an open-source Hazelcast 5 cluster (see the module docstring)."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        transactions=Atomicity.ATOMIC,
        linearizable_reads=True,
        server_side_topic_filter=False,
        durability=Durability.VOLATILE,
        history="the last 10,000 commits (?history=N)",
        cross_process=True,
        notes=(
            "An in-memory grid: with backup-count >= 1 (the default) every acknowledged write survives the "
            "loss of one member, but a restart of the whole cluster loses everything (Persistence is Enterprise "
            "only); watchers then get HistoryGoneError and caches re-list. Commits are serialized by one commit "
            "lock per namespace. list() filters topics on the server (key-range queries on a sorted index); "
            "watch() reads the namespace's one change log and filters topics in the client. Locks and ids live "
            "in IMaps (the CP Subsystem is Enterprise only since 5.5): they survive a member's loss, not a split "
            "brain. TLS and client credentials are Enterprise only: the cluster name is the one shared secret."
        ),
    )

    def __init__(self, config: HazelcastConfig, client: Any) -> None:
        super().__init__("")
        self.config = config
        self._client = client
        self._object_prefix = "o/"
        root = f"nbdb.{config.namespace}." if config.namespace else "nbdb."
        self._kv = client.get_map(root + "kv").blocking()
        self._log = client.get_map(root + "log").blocking()
        self._meta_async = client.get_map(root + "meta")
        self._meta = self._meta_async.blocking()
        self._lease = client.get_map(root + "lease").blocking()
        self._ids = client.get_map(root + "ids").blocking()
        self._kv_name, self._log_name, self._meta_name = self._kv.name, self._log.name, self._meta.name
        self._closed = False
        self._log_cond = threading.Condition()
        self._log_latest = 0
        self._log_listener: str | None = None

    def __repr__(self) -> str:
        return f"<HazelcastBackend {self.config!r}>"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> HazelcastBackend:
        """Connect to the cluster; AuthError when the members answer but refuse the cluster name."""
        config = parse_url(url, options)
        try:
            client = HazelcastClient(
                cluster_name=config.cluster_name,
                cluster_members=[f"{h}:{p}" for h, p in config.members],
                cluster_connect_timeout=config.connect_timeout,
                connection_timeout=min(config.connect_timeout, 5.0),
                invocation_timeout=config.timeout,
                # A frozen member keeps its sockets open: only a missed heartbeat ends a request
                # that was sent to it, so the heartbeat bounds every call by ``timeout`` too.
                heartbeat_interval=1.0,
                heartbeat_timeout=config.timeout,
                # Requests to a dead member's partitions are retried until its backups take over;
                # the default 1 s pause between tries would add most of a second to every failover.
                invocation_retry_pause=0.1,
                smart_routing=config.smart_routing,
                redo_operation=False,
                statistics_enabled=False,
                client_name=config.client_name,
            )
        except hzerrors.IllegalStateError:
            raise _unreachable(config) from None
        except hzerrors.HazelcastError as exc:
            raise _translate(exc, config.where) from None
        backend = cls(config, client)
        try:
            # Range reads of key prefixes use this index instead of scanning every entry.
            backend._call(lambda: backend._kv.add_index(attributes=["__key"], index_type=IndexType.SORTED))
        except BaseException:
            backend.close()
            raise
        return backend

    def _call(self, call: Callable[[], T]) -> T:
        if self._closed:
            raise errors.BackendUnavailableError("the hazelcast backend is closed")
        try:
            return call()
        except hzerrors.HazelcastError as exc:
            raise _translate(exc, self.config.where) from None

    # ---------------------------------------------------------------- reads

    def get_key(self, key: str) -> KeyValue | None:
        return _kv(key, self._call(lambda: self._kv.get(key)))

    def get_keys(self, keys: Sequence[str]) -> list[KeyValue | None]:
        if len(keys) <= 1:
            return [self.get_key(k) for k in keys]
        found = self._call(lambda: self._kv.get_all(list(keys)))
        return [_kv(k, found.get(k)) for k in keys]

    def range_keys(self, prefixes: Sequence[str]) -> tuple[list[KeyValue], int]:
        """Keys under ``prefixes`` at one revision: read under the commit lock (see the module docstring)."""
        with self._commit_lock():
            found: dict[str, Any] = {}
            for prefix in prefixes:
                # Keys are ASCII paths, so every key under the prefix sorts below prefix + U+FFFF.
                predicate = between("__key", prefix, prefix + "\uffff")
                found.update(self._call(partial(self._kv.entry_set, predicate)))
            revision, token = _head(self._call(lambda: self._meta.get(_HEAD)))
        self.remember_token(revision, token)
        out = [kv for key, raw in sorted(found.items()) if key.startswith(tuple(prefixes)) and (kv := _kv(key, raw))]
        return out, revision

    def revision_now(self) -> int:
        revision, token = _head(self._call(lambda: self._meta.get(_HEAD)))
        self.remember_token(revision, token)
        return revision

    def _trim_mark(self) -> int:
        raw = self._call(lambda: self._meta.get(_TRIM))
        return int(raw) if isinstance(raw, int) else 0

    # ---------------------------------------------------------------- commits

    @contextmanager
    def _commit_lock(self) -> Iterator[None]:
        """Hold the namespace's commit lock (see the module docstring), waiting at most ``timeout``.

        The client never times a lock request out by itself (it waits through a frozen
        member), so the wait is bounded here; a grant that arrives after we gave up is
        released at once. The lease bounds how long a stalled client holds committers up.
        """
        pending = self._meta_async.lock(_COMMIT_LOCK, lease_time=self.config.commit_lease)
        granted = threading.Event()
        pending.add_done_callback(lambda _: granted.set())
        if not granted.wait(self.config.timeout):
            pending.add_done_callback(self._release_abandoned_lock)
            raise errors.BackendUnavailableError(
                f"hazelcast at {self.config.where}: the commit lock was not granted within {self.config.timeout}s"
            )
        self._call(pending.result)
        try:
            yield
        finally:
            try:
                self._meta.unlock(_COMMIT_LOCK)
            except hzerrors.HazelcastError as exc:
                # The lease ran out or the member dropped our locks: nothing left to release.
                log.warning("hazelcast: releasing the commit lock failed: %s", exc)

    def _release_abandoned_lock(self, grant: Any) -> None:
        if grant.exception() is None and not self._closed:
            try:
                self._meta_async.force_unlock(_COMMIT_LOCK)
            except hzerrors.HazelcastError as exc:
                log.warning("hazelcast: releasing an abandoned commit lock failed (its lease frees it): %s", exc)

    def commit_keys(
        self, conditions: Sequence[Condition], puts: Mapping[str, bytes], deletes: Sequence[str]
    ) -> int | None:
        deadline = time.monotonic() + self.config.timeout
        delay = 0.02
        while True:
            token = secrets.token_hex(_TOKEN_BYTES // 2)
            try:
                with self._commit_lock():
                    return self._commit_once(token, conditions, puts, deletes, deadline)
            except errors.BackendUnavailableError as exc:
                # Only raised when the commit certainly did not land (see _commit_once).
                if isinstance(exc, errors.CommitUnknownError) or time.monotonic() + delay >= deadline:
                    raise
                log.debug("hazelcast: commit not applied (%s); retrying in %.2fs", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _commit_once(
        self,
        token: str,
        conditions: Sequence[Condition],
        puts: Mapping[str, bytes],
        deletes: Sequence[str],
        deadline: float,
    ) -> int | None:
        """One transaction; None if a condition failed. Raises BackendUnavailableError only if nothing landed."""
        tx = self._call(lambda: self._client.new_transaction(timeout=self.config.timeout, durability=1, type=TWO_PHASE))
        self._call(tx.begin)
        try:
            outcome = self._stage(tx, token, conditions, puts, deletes)
        except BaseException:
            _rollback(tx)
            raise
        if outcome is None:
            _rollback(tx)
            return None
        revision = outcome
        try:
            tx.commit()
        except hzerrors.HazelcastError as exc:
            log.info("hazelcast: the reply to commit %d was lost (%s); settling its outcome", revision, exc)
            self._settle(revision, token, deadline)
        self.remember_token(revision, token)
        if revision % _TRIM_EVERY == 0 and revision > self.config.history:
            self._trim(revision - self.config.history)
        return revision

    def _stage(
        self, tx: Any, token: str, conditions: Sequence[Condition], puts: Mapping[str, bytes], deletes: Sequence[str]
    ) -> int | None:
        """Check ``conditions`` and write everything inside ``tx``; the revision, or None if a condition failed."""
        kv, meta = tx.get_map(self._kv_name), tx.get_map(self._meta_name)
        try:
            revision = _head(meta.get_for_update(_HEAD))[0] + 1
            expected: dict[str, int] = {}
            for condition in conditions:
                if isinstance(condition, VersionIs) and (condition.key in puts or condition.key in deletes):
                    expected[condition.key] = condition.version  # checked by the write, which returns the old value
                elif isinstance(condition, VersionIs):
                    current = _kv(condition.key, kv.get_for_update(condition.key))
                    if (current.version if current else 0) != condition.version:
                        return None
                elif isinstance(condition, Exists):
                    if kv.get_for_update(condition.key) is None:
                        return None
                elif isinstance(condition, PrefixUnchangedSince):
                    predicate = between("__key", condition.prefix, condition.prefix + "\uffff")
                    stored = (_bytes(raw, condition.prefix, _KV_HEADER.size) for raw in kv.values(predicate))
                    if any(_KV_HEADER.unpack_from(data)[1] > condition.revision for data in stored):
                        return None
                else:  # pragma: no cover - the family has no other conditions
                    raise TypeError(f"unknown condition {condition!r}")
            changes: list[KeyChange] = []
            for key, value in puts.items():
                # A key without a version condition is most often new: write version 1 and
                # correct it in a second write only if the key existed (one round trip saved).
                version = expected[key] + 1 if key in expected else 1
                previous = _kv(key, kv.put(key, bytearray(_KV_HEADER.pack(version, revision) + value)))
                old_version = previous.version if previous else 0
                if key in expected and old_version != expected[key]:
                    return None
                if key not in expected and previous is not None:
                    version = old_version + 1
                    kv.set(key, bytearray(_KV_HEADER.pack(version, revision) + value))
                changes.append(
                    KeyChange(key, value, version, previous.value if previous else None, old_version, revision)
                )
            for key in deletes:
                previous = _kv(key, kv.remove(key))
                if key in expected and (previous.version if previous else 0) != expected[key]:
                    return None
                if previous is not None:
                    changes.append(KeyChange(key, None, 0, previous.value, previous.version, revision))
            objects = [c for c in changes if c.key.startswith(self._object_prefix)]
            tx.get_map(self._log_name).set(revision, bytearray(token.encode() + encode_changes(objects)))
            meta.set(_HEAD, bytearray(_REVISION.pack(revision) + token.encode()))
        except hzerrors.HazelcastError as exc:
            raise _translate(exc, self.config.where) from None
        return revision

    def _settle(self, revision: int, token: str, deadline: float) -> None:
        """Return if the commit of ``revision`` with ``token`` landed; raise if it did not or cannot be told."""
        delay = 0.02
        while True:
            try:
                raw = self._log.get(revision)
                if raw is not None:
                    if _entry(revision, raw).token == token:
                        return
                    raise errors.BackendUnavailableError(f"hazelcast: commit {revision} was not applied (reply lost)")
                head = self._fence_head()
                if head < revision:
                    raise errors.BackendUnavailableError(f"hazelcast: commit {revision} was not applied (reply lost)")
                # Revision taken: its entry is being applied and shows in a moment.
            except hzerrors.HazelcastError as exc:
                log.debug("hazelcast: settling commit %d: %s", revision, exc)
            if time.monotonic() + delay >= deadline:
                raise errors.CommitUnknownError(
                    f"hazelcast at {self.config.where}: the reply to commit {revision} was lost and its outcome "
                    "could not be settled in time; re-read the objects before acting again"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _fence_head(self) -> int:
        """``head`` read under its transactional lock: any earlier transaction holding it has finished."""
        tx = self._client.new_transaction(timeout=self.config.timeout, durability=1, type=TWO_PHASE)
        tx.begin()
        try:
            return _head(tx.get_map(self._meta_name).get_for_update(_HEAD))[0]
        finally:
            _rollback(tx)

    def _trim(self, through: int) -> None:
        """Drop ``log`` entries up to ``through``; the mark goes first so readers know a hole is a trim."""
        try:
            current = self._meta.get(_TRIM)
            if isinstance(current, int) and current >= through:
                return
            self._meta.set(_TRIM, through)
            self._log.remove_all(less_or_equal("__key", through))
        except hzerrors.HazelcastError as exc:
            log.warning("hazelcast: trimming the change log failed (retried on a later commit): %s", exc)

    def compact_keys(self, revision: int) -> None:
        with self._commit_lock():
            self._call(lambda: self._meta.set(_TRIM, max(revision, self._trim_mark())))
            self._call(lambda: self._log.remove_all(less_or_equal("__key", revision)))

    # ---------------------------------------------------------------- change log

    def logs_for(self, prefixes: Sequence[str]) -> list[str]:
        for prefix in prefixes:
            if not prefix.startswith(self._object_prefix):
                raise errors.UnsupportedError(f"hazelcast keeps a change log for object keys only, not {prefix!r}")
        return [self._log_name]

    def open_log_reader(self) -> ChangeLogReader:
        if self._closed:
            raise errors.BackendUnavailableError("the hazelcast backend is closed")
        with self._log_cond:
            if self._log_listener is None:
                self._log_listener = self._call(
                    lambda: self._log.add_entry_listener(include_value=False, added_func=self._on_log_entry)
                )
        return _LogReader(self)

    def _on_log_entry(self, event: Any) -> None:
        with self._log_cond:
            if isinstance(event.key, int) and event.key > self._log_latest:
                self._log_latest = event.key
            self._log_cond.notify_all()

    def _wake_log_waiters(self) -> None:
        with self._log_cond:
            self._log_cond.notify_all()

    def _wait_for_log(self, after: int, timeout: float, closed: Callable[[], bool]) -> None:
        # Events only wake readers early; a reader re-reads after ``timeout`` regardless, so
        # an event lost in a reconnect costs latency, never a change.
        end = time.monotonic() + timeout
        with self._log_cond:
            while self._log_latest <= after and not closed() and not self._closed:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return
                self._log_cond.wait(remaining)

    # ---------------------------------------------------------------- leases, ids

    def put_lease(self, key: str, value: bytes, ttl: float) -> bool:
        return self._call(lambda: self._lease.put_if_absent(key, bytearray(value), ttl=ttl + _EXPIRY_GRAIN)) is None

    def refresh_lease(self, key: str, value: bytes, ttl: float) -> bool:
        # Under the entry's lock no other client can take or drop the lease between the check and the renewal.
        self._call(lambda: self._lease.lock(key, lease_time=max(ttl, 1.0)))
        try:
            current = self._call(lambda: self._lease.get(key))
            if current is None or bytes(current) != value:
                return False
            self._call(lambda: self._lease.set(key, bytearray(value), ttl=ttl + _EXPIRY_GRAIN))
            return True
        finally:
            try:
                self._lease.unlock(key)
            except hzerrors.HazelcastError as exc:
                log.debug("hazelcast: releasing the lease lock of %r failed: %s", key, exc)

    def delete_lease(self, key: str, value: bytes) -> bool:
        return bool(self._call(lambda: self._lease.remove_if_same(key, bytearray(value))))

    def allocate_id(self, name: str) -> int:
        """The next id: a compare-and-swap on the counter (an id of a lost reply is skipped, never reused)."""
        while True:
            current = self._call(lambda: self._ids.get(name))
            if current is None:
                if self._call(lambda: self._ids.put_if_absent(name, 1)) is None:
                    return 1
                continue
            if not isinstance(current, int):
                raise errors.CorruptRecordError(
                    f"id counter {name!r} holds {type(current).__name__}, not an integer", key=name
                )
            if self._call(partial(self._ids.replace_if_same, name, current, current + 1)):
                return current + 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake_log_waiters()
        try:
            self._client.shutdown()
        except Exception:  # closing must not fail
            log.debug("hazelcast: error while shutting the client down", exc_info=True)


def _rollback(tx: Any) -> None:
    try:
        tx.rollback()
    except Exception as exc:  # the member rolls an orphaned transaction back by itself
        log.debug("hazelcast: rollback failed: %s", exc)


def _unreachable(config: HazelcastConfig) -> errors.NbdbError:
    """Why the client found no cluster: members that accept TCP but refuse the client mean a wrong cluster name."""
    for host, port in config.members:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return errors.AuthError(
                    f"hazelcast members at {config.where} answer but refused the client: "
                    "check the cluster name in the URL path (the cluster's shared secret)"
                )
        except OSError:
            continue
    return errors.BackendUnavailableError(
        f"hazelcast at {config.where} is unreachable (no member answered within {config.connect_timeout}s)"
    )
