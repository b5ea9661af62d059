"""Change streams read from a :class:`Replica`'s history."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection

from nbdb import errors
from nbdb.families.ovsdb.replica import Replica
from nbdb.spi import RecordChange, RecordStream

__all__ = ["ReplicaStream"]

log = logging.getLogger(__name__)


class ReplicaStream(RecordStream):
    """Changes of some tables (and topics) from a replica's history, after a revision.

    One server transaction is one batch of one revision; a catch-up after a
    reconnect arrives as changes flagged ``synthetic`` (see
    :class:`nbdb.spi.RecordChange`). A revision older than the kept history,
    or one this replica never handed out, raises HistoryGoneError.

    Given a sink (:meth:`deliver_to`, the Database's shared watch), the thread
    that applies a server transaction to the replica (the connection's I/O
    thread) hands the stream's changes of it to the sink right after applying
    it, instead of waking the polling thread to read them: one thread wake less
    per change. A hand-over that fails, or finds the history gone, stops that
    thread's hand-overs and wakes :meth:`poll`, which hands over from where the
    sink stands (and raises what it raises). Hand-overs of one stream are one at
    a time (a lock of its own, never taken under the replica's), each gives every
    change after the last one given up to the replica's revision: in order, whole
    revisions, each once.
    """

    def __init__(
        self, replica: Replica, tables: Collection[str], topics: Collection[str | None] | None, since: int
    ) -> None:
        self._replica = replica
        self._tables = frozenset(tables)
        self._topics = None if topics is None else frozenset(topics)
        self._closed = False
        self._sink: Callable[[list[RecordChange], int], None] | None = None
        self._handing = threading.Lock()
        """Held while changes are handed to the sink (by the applying thread or in ``poll``)."""
        self._halted = False
        """True once a hand-over on the applying thread failed: only ``poll`` hands over from then on."""
        self._wake = threading.Event()
        """Wakes a sink stream's ``poll``: closed, or a hand-over it must redo."""
        with replica.cond:
            if replica.created_after <= since < replica.start:
                since = replica.start  # "from now", asked just before the replica existed
            self._revision = since
            # Up to the connection's last revision, not this replica's: a replica of some topics ticks
            # only when they change, and "from now" after a write of another topic raised HistoryGoneError.
            if since < replica.start or since > replica.clock.now():
                raise errors.HistoryGoneError(
                    f"revision {since} is not one of this connection's (they run from {replica.start} to "
                    f"{replica.revision}); revisions of OVSDB backends are per connection"
                )

    def _changes(self) -> list[RecordChange]:
        """The changes after this stream's revision up to the replica's (call under ``cond``); advances it."""
        replica = self._replica
        if self._revision < replica.oldest:
            raise errors.HistoryGoneError(
                f"revision {self._revision} is older than the kept history (from {replica.oldest})"
            )
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
        return out

    def poll(self, timeout: float | None) -> list[RecordChange]:
        if self._sink is not None:
            self._hand_over(in_poll=True)
            if not self._closed and self._wake.wait(timeout):
                self._wake.clear()
                self._hand_over(in_poll=True)
            return []
        replica = self._replica
        deadline = None if timeout is None else time.monotonic() + timeout
        with replica.cond:
            while True:
                if self._closed:
                    return []
                if self._revision < replica.oldest:
                    self._changes()  # raises HistoryGoneError
                if replica.revision > self._revision:
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return []
                replica.cond.wait(remaining)
            out = self._changes()
            self._revision = replica.revision
            return out

    def deliver_to(self, sink: Callable[[list[RecordChange], int], None]) -> bool:
        with self._handing:
            self._sink = sink
        self._replica.add_sink(self)
        return True

    def hand_over(self) -> None:
        """On the thread that applied a transaction to the replica: give the sink what it has not had yet (once
        halted: wake ``poll`` to)."""
        if self._closed:
            return
        if self._halted:
            self._wake.set()
            return
        self._hand_over(in_poll=False)

    def _hand_over(self, in_poll: bool) -> None:
        replica = self._replica
        with self._handing:
            sink = self._sink
            if sink is None or self._closed or (self._halted and not in_poll):
                return
            with replica.cond:
                revision = replica.revision
                if revision <= self._revision:
                    return
                try:
                    changes = self._changes()
                except errors.HistoryGoneError:
                    if in_poll:
                        raise
                    self._halt()
                    return
            try:
                sink(changes, revision)
            except Exception:
                if in_poll:
                    raise
                # Not on the applying thread, where it would fail the connection: poll hands these
                # changes over again, on the thread that reports a failure.
                log.exception("ovsdb: a stream's sink failed on the applying thread; handing over in poll")
                self._halt()
                return
            self._revision = revision

    def _halt(self) -> None:
        self._halted = True
        self._wake.set()

    @property
    def revision(self) -> int:
        return self._revision

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._sink is not None:
            # Not under the replica's lock: the shared watch closes its stream under its own lock, which a
            # hand-over (holding this stream's) takes. The replica drops a closed stream's sink itself.
            return
        with self._replica.cond:
            self._replica.cond.notify_all()
