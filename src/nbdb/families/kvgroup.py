"""Group commit for the key-value family: commits that meet in flight travel together.

Threads of one Database that commit at the same time queue up; the thread at
the head of the queue (the *leader*) takes the commits waiting behind it that
can share one request with its own, sends them as one group, hands each
waiting thread its own outcome and wakes the next leader. A thread that
commits while nothing waits and a request may leave sends its commit alone,
exactly as without grouping, so one thread is not slowed down; under
concurrency, one request carries many commits and its round trip, its
syscalls and the server's per-request cost are shared (LevelDB's writer
queue; PostgreSQL's group commit of WAL flushes). A thread that has to wait
may prepare its part of the next request meanwhile (``prepare``).

Each commit of a group keeps its own atomicity, conditions, result and
commit token: grouping changes how commits travel, never what they mean. A
store says which commits may share a request through a :class:`CommitGroup`:

* :class:`PipelinedGroup` — the store runs the group's commits one after the
  other, each atomically (a Redis pipeline of scripts): any commits fit.
* :class:`SnapshotGroup` — the store checks every commit's conditions against
  one snapshot and then applies the commits whose conditions held, at one
  revision (nested etcd transactions). That equals running them one after the
  other only if no commit writes a key another one reads or writes, so the
  group admits only commits with disjoint footprints (:func:`footprint`).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeAlias, TypeVar

from nbdb import errors
from nbdb.families.kvtypes import KeyCommit, LeaseHeld, PrefixUnchangedSince

__all__ = [
    "CommitGroup",
    "Footprint",
    "GroupCommitter",
    "GroupInterrupted",
    "Outcome",
    "PipelinedGroup",
    "SnapshotGroup",
    "footprint",
]

log = logging.getLogger(__name__)

C = TypeVar("C")

Outcome: TypeAlias = "int | BaseException | None"
"""One commit's outcome in a group: its revision, None (its conditions failed), or the error it ends with."""


class GroupInterrupted(BaseException):
    """A store's ``together`` raises it when the thread sending the group was interrupted and the store knows
    what became of the group: ``outcomes``, each commit's (the group was applied), or None (none of it was).

    The interrupt (KeyboardInterrupt, SystemExit) is its ``__cause__``; the sending thread gets that. The
    others get their commit's true outcome, or have it sent again when nothing was applied: an interrupt of
    another thread made every one of them a CommitUnknownError, though the store knew. A BaseException, as
    what it carries must reach the interrupted thread through any ``except Exception``.
    """

    def __init__(self, outcomes: list[Outcome] | None) -> None:
        super().__init__("a group commit was interrupted" if outcomes is None else "interrupted after its commit")
        self.outcomes = outcomes


class CommitGroup(Generic[C]):
    """The commits one request carries; :meth:`admit` says whether one more fits."""

    def __init__(self, max_commits: int) -> None:
        self.max_commits = max_commits
        self.commits: list[C] = []

    def admit(self, commit: C) -> bool:
        """Add ``commit`` if it fits with those already admitted (the first always does)."""
        if self.commits and (len(self.commits) >= self.max_commits or not self.fits(commit)):
            return False
        self.commits.append(commit)
        self.added(commit)
        return True

    def fits(self, commit: C) -> bool:
        """Whether ``commit`` may join the commits already admitted (subclasses add rules)."""
        return True

    def added(self, commit: C) -> None:
        """Account for an admitted commit (subclasses keep their running totals here)."""


class PipelinedGroup(CommitGroup[C]):
    """A group whose commits the store runs one after the other, each atomically: only the count is limited."""


@dataclass(frozen=True, slots=True)
class Footprint:
    """The keys a commit reads (its conditions) and writes (its puts and deletes)."""

    reads: frozenset[str]
    prefixes: tuple[str, ...]
    """Key prefixes its conditions read (PrefixUnchangedSince)."""
    writes: frozenset[str]


def footprint(commit: KeyCommit, lock_key: Callable[[str], str]) -> Footprint:
    """What ``commit`` reads and writes; ``lock_key`` names a lock's key (LeaseHeld reads it)."""
    reads: set[str] = set()
    prefixes: list[str] = []
    for condition in commit.conditions:
        if isinstance(condition, PrefixUnchangedSince):
            prefixes.append(condition.prefix)
        elif isinstance(condition, LeaseHeld):
            reads.add(lock_key(condition.name))
        else:
            reads.add(condition.key)
    writes = {*commit.puts, *commit.deletes}
    if commit.token is not None:
        writes.add(commit.token.key)
    return Footprint(frozenset(reads), tuple(prefixes), frozenset(writes))


class SnapshotGroup(CommitGroup[KeyCommit]):
    """A group whose conditions the store checks against one snapshot: footprints must be disjoint.

    A commit joins if it writes no key another member reads, writes or ranges
    over, and reads or ranges over no key another member writes: then each
    commit's conditions see exactly what they would see if the group ran one
    commit after the other, in any order. Reading the same keys is fine.
    ``cost(commit)`` returns the store operations and bytes a commit adds;
    the group stays within ``max_ops`` (per commit, once ``fixed_ops`` per
    member is counted) and ``max_bytes`` in all.
    """

    def __init__(
        self,
        max_commits: int,
        lock_key: Callable[[str], str],
        cost: Callable[[KeyCommit], tuple[int, int]],
        max_ops: int | None,
        max_bytes: int | None,
    ) -> None:
        super().__init__(max_commits if max_ops is None else min(max_commits, max_ops))
        self._lock_key, self._cost = lock_key, cost
        self._max_ops, self._max_bytes = max_ops, max_bytes
        self._reads: set[str] = set()
        self._prefixes: list[str] = []
        self._writes: set[str] = set()
        self._widest = 0
        self._bytes = 0
        self._pending: tuple[Footprint, int, int] | None = None

    def fits(self, commit: KeyCommit) -> bool:
        mark = footprint(commit, self._lock_key)
        ops, size = self._cost(commit)
        widest = max(self._widest, ops)
        if self._max_ops is not None and len(self.commits) + 1 + widest > self._max_ops:
            return False
        if self._max_bytes is not None and self._bytes + size > self._max_bytes:
            return False
        if not mark.writes.isdisjoint(self._writes) or not mark.writes.isdisjoint(self._reads):
            return False
        if not mark.reads.isdisjoint(self._writes):
            return False
        if self._prefixes and any(key.startswith(p) for key in mark.writes for p in self._prefixes):
            return False
        if mark.prefixes and any(key.startswith(p) for key in self._writes for p in mark.prefixes):
            return False
        self._pending = (mark, ops, size)
        return True

    def added(self, commit: KeyCommit) -> None:
        if self._pending is None:  # the first member: nothing was checked
            mark = footprint(commit, self._lock_key)
            ops, size = self._cost(commit)
        else:
            mark, ops, size = self._pending
            self._pending = None
        self._reads |= mark.reads
        self._prefixes += mark.prefixes
        self._writes |= mark.writes
        self._widest = max(self._widest, ops)
        self._bytes += size


class _Waiter(Generic[C]):
    """One queued commit and, once the leader has sent it, its outcome."""

    __slots__ = ("commit", "done", "leads", "outcome", "wake")

    def __init__(self, commit: C) -> None:
        self.commit = commit
        self.done = False
        self.leads = False
        self.outcome: Outcome = None
        self.wake: threading.Lock | None = None
        """Held while the waiter sleeps; released once, when it is done or heads the queue."""

    def result(self) -> int | None:
        outcome = self.outcome
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class GroupCommitter(Generic[C]):
    """Sends commits of many threads, a few requests in flight, grouping those that wait (see the module docstring).

    ``alone(commit)`` sends one commit as the store always did; ``together(commits)``
    sends a group in one request and returns each commit's :data:`Outcome` in
    order; ``new_group()`` says which commits a request may carry. At most
    ``in_flight`` requests are out at once: more than one lets a store that
    batches its own work (etcd's raft log, its disk syncs) overlap them.
    """

    def __init__(
        self,
        alone: Callable[[C], int | None],
        together: Callable[[Sequence[C]], list[Outcome]],
        new_group: Callable[[], CommitGroup[C]],
        in_flight: int = 1,
        prepare: Callable[[C], C] | None = None,
    ) -> None:
        self._alone, self._together, self._new_group = alone, together, new_group
        self._prepare = prepare
        self.in_flight = in_flight
        self._lock = threading.Lock()
        self._queue: deque[_Waiter[C]] = deque()
        """Commits not sent yet, oldest first."""
        self._sending = 0
        self.requests = 0
        """Requests sent so far (a group or a lone commit each)."""
        self.grouped = 0
        """Commits sent so far in groups of two or more."""

    def commit(self, commit: C) -> int | None:
        """Send ``commit`` (alone, or with others in flight at the same time): its revision, or None."""
        alone = self._go_alone()
        if not alone:
            if self._prepare is not None:
                # It will wait anyway: encode it now, while a request is in flight, not after.
                commit = self._prepare(commit)
            with self._lock:
                alone = self._go_alone_locked()
                if not alone:
                    # Others lead: sleep until one sent this commit, or until this one may lead.
                    # A lock of its own (not a condition on the queue's lock) wakes one thread,
                    # once, without the woken threads contending for the queue's lock.
                    me = _Waiter(commit)
                    me.wake = wake = threading.Lock()
                    wake.acquire()
                    self._queue.append(me)
        if alone:
            # Nothing waits and a request may leave: send it as if there were no grouping at all.
            try:
                return self._alone(commit)
            finally:
                self._done()
        try:
            wake.acquire()
        except BaseException:
            # Interrupted while it waits (a signal wakes the main thread's acquire): left in the queue,
            # it would be woken to lead once it heads it, and nobody would lead the commits behind it.
            self._abandon(me)
            raise
        if me.done:
            return me.result()
        with self._lock:  # woken to lead: _next_leader counted this request already
            members = self._gather()
        outcomes: list[Outcome] | None = None
        """Each member's outcome; None (until known): the others' is unknown, unless ``resend``."""
        resend = False
        """Nothing of the group was applied: the others go back to the queue, for the next leader to send."""
        try:
            try:
                outcomes = self._send(members)
            except errors.NbdbError as exc:
                # The store's answer for the whole request (unreachable, outcome unknown...): it is every member's.
                outcomes = [exc] * len(members)
            except GroupInterrupted as exc:
                interrupt = exc.__cause__ if isinstance(exc.__cause__, BaseException) else exc
                if exc.outcomes is None:  # nothing of it was applied: the others are sent again, by the next leader
                    resend = True
                    raise interrupt from None
                unknown = errors.CommitUnknownError(f"a commit sent in a group has an unknown outcome ({interrupt!r})")
                settled = len(exc.outcomes) == len(members)  # else a bug of the store's: unknown, as below
                outcomes = [interrupt, *(exc.outcomes[1:] if settled else [unknown] * (len(members) - 1))]
            except BaseException as exc:
                # Interrupted, or a bug: the leader re-raises it; the others cannot tell what reached the store.
                log.warning("a group commit failed with %r; its other commits settle their outcome", exc)
                unknown = errors.CommitUnknownError(f"a commit sent in a group has an unknown outcome ({exc!r})")
                outcomes = [exc, *([unknown] * (len(members) - 1))]
        finally:
            # Whatever interrupts this thread from here on (a second Ctrl-C, SystemExit), every other member
            # wakes: to lead (queued again, or the next head) or with its outcome; none waits for ever.
            self._settle(members, outcomes, resend)
        return me.result()

    def _settle(self, members: Sequence[_Waiter[C]], outcomes: list[Outcome] | None, resend: bool) -> None:
        """Hand the members of a sent group their outcomes (or queue the others again), then wake them."""
        try:
            if resend:
                with self._lock:
                    self._queue.extendleft(reversed(members[1:]))
            elif outcomes is not None:
                for waiter, outcome in zip(members, outcomes, strict=True):
                    waiter.outcome = outcome
                    waiter.done = True
        finally:
            try:
                self._done()  # the next leader first: its group leaves while this one's threads wake up
            finally:
                for waiter in members[1:]:
                    if resend:
                        break  # queued again: each wakes when it heads the queue (_done)
                    if not waiter.done:  # interrupted before its outcome was known or handed over
                        waiter.outcome = errors.CommitUnknownError("a commit sent in a group has an unknown outcome")
                        waiter.done = True
                    assert waiter.wake is not None  # every member waited behind its leader
                    waiter.wake.release()

    def _abandon(self, me: _Waiter[C]) -> None:
        """Take the waiter of an interrupted thread out of the queue, its commit unsent.

        Already gathered by a leader, it is sent and gets an outcome nobody reads (the interrupt says
        that the commit's outcome is unknown). Woken to lead but not leading yet, its request slot goes
        to the next commit in the queue.
        """
        leader = None
        try:
            with self._lock:
                if me not in self._queue:
                    return
                self._queue.remove(me)
                if me.leads:
                    self._sending -= 1
                    leader = self._next_leader()
        finally:
            if leader is not None:
                leader.release()

    def _go_alone(self) -> bool:
        with self._lock:
            return self._go_alone_locked()

    def _go_alone_locked(self) -> bool:
        """Take a free request slot if nothing waits (the caller holds the lock)."""
        if self._queue or self._sending >= self.in_flight:
            return False
        self._sending += 1
        self.requests += 1
        return True

    def _done(self) -> None:
        """A request came back: wake the oldest waiting commit to lead the next one, if any waits."""
        leader = None
        try:
            with self._lock:
                self._sending -= 1
                leader = self._next_leader()
        finally:
            if leader is not None:  # woken even if an interrupt arrives as the queue's lock is let go
                leader.release()

    def _next_leader(self) -> threading.Lock | None:
        """The wake-up of the oldest unsent commit if a request may leave now (the caller holds the lock)."""
        if not self._queue or self._sending >= self.in_flight:
            return None
        head = self._queue[0]
        if head.leads:
            return None  # already woken to lead, not yet gathering
        head.leads = True
        self._sending += 1  # counted now, so that no other thread wakes a second leader for it
        return head.wake

    def _gather(self) -> list[_Waiter[C]]:
        """Take the head of the queue (the caller) and the waiters behind it that fit in one group."""
        queue = self._queue
        members = [queue.popleft()]
        if queue:  # a lone commit skips working out what would fit with it
            group = self._new_group()
            group.admit(members[0].commit)
            while queue and group.admit(queue[0].commit):
                members.append(queue.popleft())
        self.requests += 1
        if len(members) > 1:
            self.grouped += len(members)
        return members

    def _send(self, members: Sequence[_Waiter[C]]) -> list[Outcome]:
        if len(members) == 1:
            try:
                return [self._alone(members[0].commit)]
            except errors.NbdbError as exc:
                return [exc]
        outcomes = self._together([w.commit for w in members])
        if len(outcomes) != len(members):
            raise AssertionError(f"a group of {len(members)} commits came back with {len(outcomes)} outcomes")
        return outcomes
