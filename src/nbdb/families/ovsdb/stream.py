"""Change streams read from a :class:`Replica`'s history."""

from __future__ import annotations

import time
from collections.abc import Collection

from nbdb import errors
from nbdb.families.ovsdb.replica import Replica
from nbdb.spi import RecordChange, RecordStream

__all__ = ["ReplicaStream"]


class ReplicaStream(RecordStream):
    """Changes of some tables (and topics) from a replica's history, after a revision.

    One server transaction is one batch of one revision; a catch-up after a
    reconnect arrives as changes flagged ``synthetic`` (see
    :class:`nbdb.spi.RecordChange`). A revision older than the kept history,
    or one this replica never handed out, raises HistoryGoneError.
    """

    def __init__(
        self, replica: Replica, tables: Collection[str], topics: Collection[str | None] | None, since: int
    ) -> None:
        self._replica = replica
        self._tables = frozenset(tables)
        self._topics = None if topics is None else frozenset(topics)
        self._closed = False
        with replica.cond:
            if replica.created_after <= since < replica.start:
                since = replica.start  # "from now", asked just before the replica existed
            self._revision = since
            if since < replica.start or since > replica.revision:
                raise errors.HistoryGoneError(
                    f"revision {since} is not one of this connection's (they run from {replica.start} to "
                    f"{replica.revision}); revisions of OVSDB backends are per connection"
                )

    def poll(self, timeout: float | None) -> list[RecordChange]:
        replica = self._replica
        deadline = None if timeout is None else time.monotonic() + timeout
        with replica.cond:
            while True:
                if self._closed:
                    return []
                if self._revision < replica.oldest:
                    raise errors.HistoryGoneError(
                        f"revision {self._revision} is older than the kept history (from {replica.oldest})"
                    )
                if replica.revision > self._revision:
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return []
                replica.cond.wait(remaining)
            out = []
            # Newest last: walk back from the end to the first change after our revision.
            history = replica.history
            index = len(history)
            while index > 0 and history[index - 1].revision > self._revision:
                index -= 1
            for i in range(index, len(history)):
                change = history[i]
                if change.table in self._tables and (self._topics is None or change.topic in self._topics):
                    out.append(change)
            self._revision = replica.revision
            return out

    @property
    def revision(self) -> int:
        return self._revision

    def close(self) -> None:
        with self._replica.cond:
            self._closed = True
            self._replica.cond.notify_all()
