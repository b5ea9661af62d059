"""A watcher's own connection to the Redis change logs (the pub/sub family's reader)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from nbdb import errors
from nbdb.backends.redis.connection import text as _s
from nbdb.families.pubsub import ChangeLogReader, LogEntry, LogRead, decode_changes

if TYPE_CHECKING:
    from nbdb.backends.redis.backend import RedisBackend

__all__ = ["RedisLogReader"]

log = logging.getLogger(__name__)


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
        for name, items in streams or []:
            batch = []
            for entry_id, fields in items:
                revision = int(entry_id.split(b"-")[0])
                values = dict(zip(fields[::2], fields[1::2], strict=False))
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
        return LogRead(int(head_r or 0), _s(head_t or b""), anchor, entries, frozenset(truncated))

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
