"""The change-log reader of the Hazelcast backend: entries after a revision, never past an undelivered one."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from nbdb import errors
from nbdb.backends.hazelcast._records import HEAD, decode_entry, decode_head
from nbdb.families.pubsub import GENESIS, ChangeLogReader, LogEntry, LogRead

if TYPE_CHECKING:
    from nbdb.backends.hazelcast._backend import HazelcastBackend

__all__ = ["HazelcastLogReader"]


class HazelcastLogReader(ChangeLogReader):
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
            head, head_token = decode_head(backend._call(lambda: backend._meta.get(HEAD)))
            wanted = list(range(after + 1, min(head, after + limit) + 1))
            keys = [after, *wanted] if after > 0 else wanted
            found: dict[int, Any] = backend._call(partial(backend._log.get_all, keys)) if keys else {}
            trim = backend._trim_mark()
            anchor: str | None
            if after == 0:
                anchor = GENESIS if trim == 0 else None
            elif after in found:
                anchor = decode_entry(after, found[after]).token
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
                entries.append(decode_entry(revision, found[revision]))
            shown, token = (entries[-1].revision, entries[-1].token) if entries else (after, anchor or "")
            if shown == head:
                token = head_token
            return LogRead(shown, token, anchor, {name: entries for name in logs}, frozenset())

    def wait(self, logs: Sequence[str], after: int, timeout: float) -> None:
        self._backend._wait_for_log(after, timeout, lambda: self._closed)

    def close(self) -> None:
        self._closed = True
        self._backend._wake_log_waiters()
