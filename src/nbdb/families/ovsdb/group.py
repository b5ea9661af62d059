"""Group commit: concurrent commits of one client sent as one OVSDB transaction.

Most of what a commit costs this client is per transaction, not per row:
encoding and sending a request, the update and the reply to parse, a replica
change to settle, and the threads handing all that over under the GIL
(measured: a transaction of 8 creates costs half the CPU per object of 8
transactions of one). So commits that arrive while a transaction is in
flight wait for it, and the next one carries all of them: one caller (the
leader) sends the batch, then hands the lead to the next caller waiting.
When the last transaction carried several commits, a new leader waits a
moment (:data:`GATHER`) for as many: else the first caller back from the
last batch would go out alone, and the rest in the next one.

Each commit keeps its own semantics:

* a combined transaction that fails aborts as a whole, and the failure may
  be another commit's (or caused by one: two commits claiming the same
  unique value), so every commit of it is sent again alone and gets its
  own answer; nothing of the aborted transaction was applied;
* a combined transaction whose reply was lost landed all or nothing: each
  commit gets :class:`~nbdb.families.ovsdb.family.TransactLost` and settles
  its own plan from its own tokens, as if it had been sent alone (one not
  sent at all: each gets ``TransactNotSent`` and retries itself);
* the results of a combined transaction that succeeded are split by each
  commit's operations;
* each commit brings its deadline: one whose time ran out while it waited
  for its turn is not sent (``TransactNotSent``), and a combined
  transaction's reply is awaited until the earliest deadline among its
  commits (after which each settles its own, as for any lost reply).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

from nbdb.families.ovsdb import results
from nbdb.families.ovsdb.done import Done

__all__ = ["GroupTransact", "Transact", "split_results"]


class Transact(Protocol):
    """One OVSDB transaction on a database: ``transact(db, ops, deadline) -> results``.

    Its reply is awaited until ``deadline`` (``time.monotonic()``; None: the
    backend's ``timeout`` from now), after which the reply counts as lost.
    """

    def __call__(self, db: str, ops: list[dict[str, Any]], deadline: float | None = None) -> list[Any]: ...


DEPTH = 1
"""Transactions in flight at once."""
GATHER = 0.001
"""Seconds a leader waits for as many commits as the last transaction carried (the callers it answered)."""
MAX_COMMITS = 64
"""Commits one transaction carries at most."""
MAX_OPS = 2000
"""Operations one combined transaction carries at most (a single commit may have more, alone)."""


class _Entry:
    __slots__ = ("db", "deadline", "done", "error", "lead", "ops", "result")

    def __init__(self, db: str, ops: list[dict[str, Any]], deadline: float | None = None) -> None:
        self.db = db
        self.ops = ops
        self.deadline = deadline
        self.done = Done()
        self.lead = False
        self.result: list[Any] | None = None
        self.error: BaseException | None = None


def split_results(result: list[Any], sizes: list[int]) -> list[list[Any]] | None:
    """A successful combined transaction's results, one slice per commit (None: it did not succeed).

    A reply that failed, or that does not hold one result per operation, is
    not split: its commits are sent again alone (a failure aborted them all).
    """
    if results.check(result) is not None or len(result) != sum(sizes):
        return None
    out = []
    start = 0
    for size in sizes:
        out.append(result[start : start + size])
        start += size
    return out


class GroupTransact:
    """``transact(db, ops)`` shared by concurrent callers: what queues meanwhile goes out as one transaction.

    ``lost`` and ``not_sent`` are the exception types meaning "sent, its reply
    lost" and "certainly not sent": every commit of a combined transaction
    that raised one gets one of its own (and retries or settles itself).
    """

    def __init__(self, transact: Transact, lost: type[BaseException], not_sent: type[BaseException]) -> None:
        self._transact = transact
        self._lost = lost
        self._not_sent = not_sent
        self._lock = threading.Condition(threading.Lock())
        self._last = 1
        self._gathering = False
        self._queue: list[_Entry] = []
        self._leaders = 0
        self.combined = 0
        """Commits sent in a combined transaction (for tests and tuning)."""
        self.resent = 0
        """Commits of a combined transaction that failed, sent again alone."""

    def __call__(self, db: str, ops: list[dict[str, Any]], deadline: float | None = None) -> list[Any]:
        entry = _Entry(db, ops, deadline)
        with self._lock:
            self._queue.append(entry)
            if self._gathering:
                self._lock.notify()
            lead = self._leaders < DEPTH
            if lead:
                self._leaders += 1
                entry.lead = True  # no other leader takes it: it goes in its own batch
        if not lead:
            entry.done.wait()
            lead = entry.lead
        if lead:
            self._lead(entry)
        if entry.error is not None:
            raise entry.error
        assert entry.result is not None
        return entry.result

    def _lead(self, own: _Entry) -> None:
        """Send ``own`` and the commits queued after it, then hand the lead on (or give it up)."""
        with self._lock:
            if self._last > 1:
                deadline = time.monotonic() + GATHER
                self._gathering = True
                while len(self._queue) < self._last and (remaining := deadline - time.monotonic()) > 0:
                    self._lock.wait(remaining)
                self._gathering = False
            batch = self._take(own)
            self._last = len(batch)
        try:
            self._send(batch)
        finally:
            with self._lock:
                following = next((e for e in self._queue if not e.lead), None)
                if following is None:
                    self._leaders -= 1
                else:
                    following.lead = True
            for entry in batch:
                entry.done.set()
            if following is not None:
                following.done.set()

    def _take(self, own: _Entry) -> list[_Entry]:
        """The commits of a leader's transaction: its own and those queued on its database (not other leaders')."""
        if len(self._queue) == 1:  # ``own`` alone (a single writer's every commit): the loop's result, for less
            self._queue = []
            return [own]
        batch = [own]
        ops = len(own.ops)
        for entry in self._queue:
            if len(batch) >= MAX_COMMITS or ops + len(entry.ops) > MAX_OPS:
                break
            if entry.db == own.db and not entry.lead:
                batch.append(entry)
                ops += len(entry.ops)
        taken = {id(e) for e in batch}  # ``own`` is in the queue too
        self._queue = [e for e in self._queue if id(e) not in taken]
        return batch

    def _send(self, batch: list[_Entry]) -> None:
        if len(batch) == 1:  # alone: what the general path below does for one commit, for less
            entry = batch[0]
            if entry.deadline is not None and entry.deadline <= time.monotonic():
                entry.error = self._not_sent("the commit's time ran out while it waited for its turn")
                return
            try:
                entry.result = self._transact(entry.db, entry.ops, entry.deadline)
            except Exception as exc:
                entry.error = exc
            return
        now = time.monotonic()
        for entry in batch:
            if entry.deadline is not None and entry.deadline <= now:
                entry.error = self._not_sent("the commit's time ran out while it waited for its turn")
        batch = [entry for entry in batch if entry.error is None]
        if len(batch) > 1:
            combined = [op for entry in batch for op in entry.ops]
            self.combined += len(batch)
            deadlines = [entry.deadline for entry in batch if entry.deadline is not None]
            try:
                result = self._transact(batch[0].db, combined, min(deadlines, default=None))
            except (self._lost, self._not_sent) as exc:
                for entry in batch:
                    entry.error = type(exc)(str(exc))
                return
            except Exception:  # not run (no connection, a refused request): each alone says why
                result = None
            parts = None if result is None else split_results(result, [len(e.ops) for e in batch])
            if parts is not None:
                for entry, part in zip(batch, parts, strict=True):
                    entry.result = part
                return
            self.resent += len(batch)
        for entry in batch:
            try:
                entry.result = self._transact(entry.db, entry.ops, entry.deadline)
            except Exception as exc:
                entry.error = exc
