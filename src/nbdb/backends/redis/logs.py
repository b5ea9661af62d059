"""A watcher's own connection to the Redis change logs (the pub/sub family's reader)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from nbdb import errors
from nbdb.backends.redis.connection import text as _s
from nbdb.families.pubsub import ChangeLogReader, LogEntry, LogRead, decode_changes

if TYPE_CHECKING:
    from nbdb.backends.redis.backend import RedisBackend

__all__ = ["RedisLogReader", "lost_after"]

log = logging.getLogger(__name__)


def lost_after(prev: int, revision: int, fields: Mapping[bytes, bytes]) -> int | None:
    """The first revision after ``prev`` that ``log`` lost, read at the entry of ``revision`` after it; or None.

    Revisions in ``log`` are dense: every commit takes the next one (``INCR rev``) and its entry is at
    it. The only revisions no commit took are those a commit jumped over (past another writer's
    entry, or a counter that started again), and its entry names the first of them (field ``s``,
    written on that rare path only). Any other hole is an entry another writer deleted (``XDEL``),
    which a watcher skipped with no word. ``prev`` 0: a watch from the beginning, whose first
    entry the read script vouches for (``log0``), so nothing is checked before it.
    """
    if prev == 0 or revision <= prev + 1:
        return None
    skip = fields.get(b"s")
    if skip is not None and skip.isdigit() and int(skip) <= prev + 1:
        return None
    return prev + 1


class RedisLogReader(ChangeLogReader):
    """A watcher's own connection: one read script (head, anchor, XREAD) reads and XREAD BLOCK waits."""

    def __init__(self, backend: RedisBackend) -> None:
        self._backend = backend
        self._connector = backend.connector
        # The socket timeout must outlast a blocking XREAD.
        self._client = self._connector.client(backend.config.socket_timeout + 2.0)
        self._closed = threading.Event()

    def read(self, logs: Sequence[str], after: int, limit: int) -> LogRead:
        backend = self._backend
        args = [backend.root, after, limit, backend.config.history, *logs]
        head_r, head_t, anchor_t, streams = self._connector.run(
            lambda: backend.log_read_script(args=args, client=self._client), stop=self._closed
        )
        anchor = None if anchor_t is None else _s(anchor_t)
        entries: dict[str, list[LogEntry]] = {}
        truncated = set()
        commits = backend.root + "log"
        for name, items in streams or []:
            batch = []
            # 'log' holds every commit: a revision missing after ``after`` is lost history (see lost_after).
            prev = after if _s(name) == commits else -1
            for entry_id, fields in items:
                revision = int(entry_id.split(b"-")[0])
                values = dict(zip(fields[::2], fields[1::2], strict=False))
                if prev >= 0:
                    lost = lost_after(prev, revision, values)
                    if lost is not None:
                        raise errors.HistoryGoneError(
                            f"the change log {_s(name)!r} no longer holds revision {lost} (up to {revision - 1}; "
                            f"read after revision {after}): another writer deleted its entry"
                        )
                    prev = revision
                token = values.get(b"t")
                if token is None:
                    # Another writer's entry (nbdb's always has its token): like a damaged change
                    # record, it cannot be delivered, so the history is lost from there. A KeyError
                    # here killed every watch of the namespace, untyped.
                    raise errors.HistoryGoneError(
                        f"the change log entry of revision {revision} in {_s(name)!r} is damaged (no token)"
                    )
                batch.append(LogEntry(revision, _s(token), decode_changes(values.get(b"c", b""), revision)))
            key = _s(name)
            entries[key] = batch
            if len(batch) >= limit:
                truncated.add(key)
        head = int(head_r or 0)
        if commits in logs and commits not in truncated:
            # 'log''s entries reach the head (the same read): one deleted at the end left nothing
            # after it to show the hole, and the head ('last', which the commit wrote beside its
            # entry) named that commit, so a watcher advanced past it and never saw it.
            reached = entries[commits][-1].revision if entries.get(commits) else after
            # (A head without a token is the counter's, of an empty 'log': the anchor's rules decide.)
            if after < head and reached < head and head_t:
                raise errors.HistoryGoneError(
                    f"the change log {commits!r} no longer holds revision {reached + 1} (up to the head, {head}; "
                    f"read after revision {after}): another writer deleted its entry"
                )
        return LogRead(head, _s(head_t or b""), anchor, entries, frozenset(truncated))

    def wait(self, logs: Sequence[str], after: int, timeout: float) -> None:
        block = max(1, int(timeout * 1000))
        self._connector.run(
            lambda: self._client.xread({name: f"{after}-0" for name in logs}, count=1, block=block),
            stop=self._closed,
        )

    def close(self) -> None:
        self._closed.set()
        try:
            self._client.connection_pool.disconnect()
        except Exception:  # closing must not fail
            log.debug("redis log reader: error while disconnecting", exc_info=True)
