"""What the backends of one process share per namespace: recent commits, a wake-up signal, the commit queue.

A wide-column store has no push: watchers poll the commit index. A commit
made in this process need not be read back by this process's watchers: the
committer records it in :class:`RecentCommits` (its index entry and the very
change rows it wrote) and rings the :class:`ChangeSignal`; every stream of the
namespace then delivers it from memory, in revision order, and reads the store
only for the revisions it does not hold (other processes' commits, found by
polling). And the commits of every backend of the process take their
revisions through one :class:`~nbdb.families.widecolumn.sequencer.CommitQueue`,
together.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from nbdb.families.widecolumn.changes import ChangeRow, Intent
from nbdb.families.widecolumn.sequencer import CommitQueue

__all__ = ["ChangeSignal", "NamespaceState", "RecentCommits"]


class RecentCommits:
    """The last commits (and voided revisions) of this process, by revision, exactly as stored.

    A cache of the store's history, never more: it holds what the store still
    holds (entries older than the history's TTL are not served; a compaction
    forgets what it dropped), so a stream served from it raises
    HistoryGoneError exactly when one reading the store would.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._by_revision: OrderedDict[int, tuple[Intent, tuple[ChangeRow, ...], float]] = OrderedDict()
        self._in_flight: set[int] = set()

    def begin(self, revision: int) -> None:
        """A commit of this process took ``revision`` and is on its way (:meth:`add` or :meth:`end` follows)."""
        with self._lock:
            self._in_flight.add(revision)

    def end(self, revision: int) -> None:
        """The commit that took ``revision`` is over, whatever became of it."""
        with self._lock:
            self._in_flight.discard(revision)

    def in_flight(self, revision: int) -> bool:
        """Whether a commit of this process holds ``revision`` and has not finished: it will say when it has."""
        with self._lock:
            return revision in self._in_flight

    def add(self, intent: Intent, rows: Sequence[ChangeRow]) -> None:
        """Record that revision ``intent.revision`` committed ``rows`` (none: void)."""
        with self._lock:
            self._in_flight.discard(intent.revision)
            self._by_revision[intent.revision] = (intent, tuple(rows), time.monotonic())
            while len(self._by_revision) > self._capacity:
                self._by_revision.popitem(last=False)

    def run_after(self, revision: int, max_age: float, limit: int = 1000) -> list[tuple[Intent, tuple[ChangeRow, ...]]]:
        """The commits right after ``revision``, up to the first one not held (or older than ``max_age`` s)."""
        out = []
        oldest = time.monotonic() - max_age
        with self._lock:
            for g in range(revision + 1, revision + 1 + limit):
                found = self._by_revision.get(g)
                if found is None or found[2] < oldest:
                    break
                out.append(found[:2])
        return out

    def clear(self) -> None:
        """Forget everything (the store lost commits: what is held here may not be there any more)."""
        with self._lock:
            self._by_revision.clear()

    def forget_through(self, revision: int) -> None:
        """Drop every entry up to ``revision`` (the store's history was compacted to there)."""
        with self._lock:
            for g in [g for g in self._by_revision if g <= revision]:
                del self._by_revision[g]

    def latest_landed(self, revision: int, max_age: float) -> Intent | None:
        """The newest commit of this process that landed at or below ``revision`` with change rows.

        None if none is held that landed less than ``max_age`` seconds ago.
        """
        oldest = time.monotonic() - max_age
        with self._lock:
            for g in reversed(self._by_revision):
                intent, rows, at = self._by_revision[g]
                if g <= revision and not intent.void and rows and at >= oldest:
                    return intent
        return None

    def holds_after(self, revision: int) -> bool:
        """Whether a commit above ``revision + 1`` is held: the revision right after it is someone else's."""
        with self._lock:
            return bool(self._by_revision) and next(reversed(self._by_revision)) > revision + 1


class ChangeSignal:
    """A set of events, all set by :meth:`notify`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[threading.Event] = set()

    def subscribe(self) -> threading.Event:
        """A new event that every :meth:`notify` sets (the subscriber clears it)."""
        event = threading.Event()
        with self._lock:
            self._waiters.add(event)
        return event

    def unsubscribe(self, event: threading.Event) -> None:
        """Stop setting ``event``."""
        with self._lock:
            self._waiters.discard(event)

    def notify(self) -> None:
        """Wake every subscriber."""
        with self._lock:
            waiters = list(self._waiters)
        for event in waiters:
            event.set()


@dataclass(eq=False)
class NamespaceState:
    """Shared by the backends of a process that use one namespace of one store with the same settings."""

    signal: ChangeSignal = field(default_factory=ChangeSignal)
    queue: CommitQueue = field(default_factory=CommitQueue)
    recent: RecentCommits = field(default_factory=RecentCommits)

    def __post_init__(self) -> None:
        self.queue.on_loss.append(self.recent.clear)
