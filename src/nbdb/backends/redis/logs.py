"""A watcher's own connection to the Redis change logs (the pub/sub family's reader)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nbdb.backends.redis.connection import text as _s
from nbdb.families.pubsub import GENESIS, ChangeLogReader, LogEntry, LogRead, decode_changes

if TYPE_CHECKING:
    from nbdb.backends.redis.backend import RedisBackend

__all__ = ["RedisLogReader"]

log = logging.getLogger(__name__)


class RedisLogReader(ChangeLogReader):
    """A watcher's own connection: MULTI(head, anchor, XREAD) reads and XREAD BLOCK waits."""

    def __init__(self, backend: RedisBackend) -> None:
        self._backend = backend
        self._connector = backend.connector
        # The socket timeout must outlast a blocking XREAD.
        self._client = self._connector.client(backend.config.socket_timeout + 2.0)
        self._closed = threading.Event()

    def read(self, logs: Sequence[str], after: int, limit: int) -> LogRead:
        root = self._backend.root

        def call() -> list[Any]:
            pipe = self._client.pipeline(transaction=True)
            pipe.hmget(root + "head", "r", "t")
            if after > 0:
                pipe.xrange(root + "clog", f"{after}-0", f"{after}-0")
            else:
                pipe.xrange(root + "clog", "-", "+", count=1)
            pipe.xread({name: f"{after}-0" for name in logs}, count=limit)
            return list(pipe.execute())

        (head_r, head_t), anchor_entries, streams = self._connector.run(call, stop=self._closed)
        head = int(head_r or 0)
        head_token = _s(head_t) if head_t is not None else ""
        anchor: str | None
        if after > 0:
            anchor = _s(anchor_entries[0][1][b"t"]) if anchor_entries else None
        elif not anchor_entries:
            anchor = GENESIS if head == 0 else None
        else:
            anchor = GENESIS if anchor_entries[0][0] == b"1-0" else None
        entries: dict[str, list[LogEntry]] = {}
        truncated = set()
        for name, items in streams or []:
            batch = []
            for entry_id, fields in items:
                revision = int(entry_id.split(b"-")[0])
                batch.append(LogEntry(revision, _s(fields[b"t"]), decode_changes(fields.get(b"c", b""), revision)))
            key = _s(name)
            entries[key] = batch
            if len(batch) >= limit:
                truncated.add(key)
        return LogRead(head, head_token, anchor, entries, frozenset(truncated))

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
