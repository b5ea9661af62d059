"""The change-log reader of the Hazelcast backend: entries after a revision, never past an undelivered one."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hazelcast.future import combine_futures

from nbdb.backends.hazelcast._records import HEAD, TRIM, decode_entry, decode_head
from nbdb.errors import CorruptRecordError
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
        """Entries after ``after`` up to ``head``, reported as the head.

        Every entry up to ``head`` is written and applied (``head`` moves last), so a
        missing one was trimmed; a decided commit still being applied is past ``head``.
        """
        backend = self._backend
        deadline = time.monotonic() + backend.config.timeout
        repaired = False
        while True:
            # The entries and the trim mark are asked for from head's reply callback: one round trip
            # after head, and no second wake-up of the client's reactor from this thread. Sent from
            # inside the backend's gate: refused unsent once the client has been offline for timeout.
            try:
                # At most ``timeout`` (as a get): queued behind a request to a frozen member it waited twice that.
                head_raw, found, trim_raw = backend.call(lambda: self._send_read(after, limit))
                if backend.head_deleted(head_raw):
                    raise CorruptRecordError("hazelcast: head is missing while the change log holds entries")
                head, head_token = decode_head(head_raw)
            except CorruptRecordError:
                if repaired:
                    raise
                # Another writer damaged ``head``: every poll raised until a commit put it back, so a
                # watch depended on a later writer. Put back as a commit would (under its lock).
                repaired = True
                backend.put_back_head()
                continue
            trim = trim_raw if isinstance(trim_raw, int) else 0
            wanted = list(range(after + 1, min(head, after + limit) + 1))
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
                time.sleep(0.005)  # read before ``trim`` was raised and after the entry went: read again
                continue
            else:
                # Below ``head`` and above ``trim`` all along: no trim took it (another writer did, or
                # the cluster lost it). Reported as the store being unreachable, it failed every poll of
                # the watch after ``timeout``, for good; its token cannot be checked: lost history.
                anchor = None
            hole = next((revision for revision in wanted if revision not in found), None)
            if hole is not None and hole > trim:
                if time.monotonic() < deadline and not self._closed:
                    time.sleep(0.005)  # read before ``trim`` was raised and after the entry went: read again
                    continue
                # A hole below ``head`` that no trim made: another writer moved ``head`` ahead or took
                # entries out. Waited on, it stalled every watch and cache for good, silently; the
                # stream reports the lost history instead (caches re-list).
                anchor = None
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

    def _send_read(self, after: int, limit: int) -> Any:
        """Read ``head``, then the entries after ``after`` up to it and the trim mark: all three (SendGate.ask)."""
        backend = self._backend

        def entries(done: Any) -> Any:
            head = decode_head(done.result())[0]
            wanted = list(range(after + 1, min(head, after + limit) + 1))
            keys = [after, *wanted] if after > 0 else wanted
            return combine_futures([backend.log_async.get_all(keys), backend.meta_async.get(TRIM)]).continue_with(
                lambda both: (done.result(), *both.result())
            )

        return backend.gate.ask(
            lambda: backend.meta_async.get(HEAD), backend.config.timeout, lambda sent: backend.then_send(sent, entries)
        )

    def wait(self, logs: Sequence[str], after: int, timeout: float) -> None:
        self._backend.wait_for_log(after, timeout, lambda: self._closed)

    def close(self) -> None:
        self._closed = True
        self._backend.wake_log_waiters()
