"""The revision sequencer: dense revisions for commits, with group commit, and the commit index.

Revisions are a dense sequence 1, 2, 3, ... kept in ``nbdb_seq``: partition
``(ns, bucket)`` holds the static ``head`` (the last revision handed out in
the bucket) and one index row per revision, "revision g is a commit to topic
T touching tables S" (or ``void``). Bucket b holds revisions b*size+1 ..
(b+1)*size, so no partition grows without bound.

**Group commit.** Taking revisions is one compare-and-set on ``head``
(``IF head = h SET head = h + k``) batched with the k index rows, so it is
atomic and isolated: the k numbers are handed out together or not at all,
and their index rows appear with them. The commits in flight in a process
share one such compare-and-set: the first caller leads, takes a number for
every commit queued behind it, and hands the lead to the next waiter when it
is done. The namespace's commit rate thus grows with the writers instead of
being one compare-and-set per commit. Processes still race each other's
compare-and-set: a loser retries on the head the failed one reported, the
longest losers first, and a process that lost its last race reads the head
before its next take rather than try the one it took last (stale by then).
A loser's next try also takes the commits that queued behind it meanwhile
(one round on the row for them, not one more take racing the others).

**Guesses.** A commit may act before its take on the number it will likely
get (:meth:`RevisionSequencer.predict`; a unique claim sent early). Each
commit in flight is guessed a number of its own, and a group's take gives
each request its guess when the guess is among the group's numbers: which
number of a take goes to which commit does not matter to the take (one
compare-and-set for all, each with its index row). No guess is made until
:data:`GUESS_AFTER` takes in a row found no other process's numbers since the
take before: while another process takes numbers too, they spoil half the guesses.

**Why it stays exact.** A number is taken only for a commit that is about
to be sent, never ahead of need, so an index row always names a commit that
lands, fails and is marked ``void``, or is stalled. The commit conditions on
its partition's ``last_rev < g`` and sets ``last_rev = g``; a watcher that
finds no change rows for g waits, then raises ``last_rev`` to g (a *seal*):
from then on the commit can never land, so passing g skips nothing. No clock
takes part. The group does not change any of this: each number of a group
is one commit's, with its own index row, resolved on its own. A seal at a
guess may be above the head: a commit that meets one takes the numbers up to
it ``void`` (:meth:`RevisionSequencer.skip_to`), so numbering goes on right
after it with no hole.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from nbdb import errors
from nbdb.families.widecolumn import layout as L
from nbdb.families.widecolumn.options import WideColumnOptions, tries
from nbdb.families.widecolumn.partitions import Partitions
from nbdb.families.widecolumn.primitives import OutcomeUnknown, WideColumnStore, Write

__all__ = [
    "REGRESSION_GAP",
    "SEAL_REACH",
    "CommitQueue",
    "RevisionSequencer",
    "assign",
    "numbers_in_bucket",
    "resume_head",
]

log = logging.getLogger(__name__)

_SLOW_TAKE = 1.0
"""Seconds past which taking revisions is logged (at DEBUG) with the races it lost."""


GUESS_AFTER = 8
"""Takes in a row that found no other process's numbers since this process's take before, after which
:meth:`RevisionSequencer.predict` guesses again (a guess is right only if no other process takes numbers
before the commit's own take: with another writing process half the guesses were wrong, a second round
each, whether or not the one take before had found its numbers)."""


REGRESSION_GAP = 1000
"""Revisions left unused after the head was found below one this process had seen (see :func:`resume_head`)."""


SEAL_REACH = REGRESSION_GAP
"""How far above the head a partition's ``last_rev`` may be and still be taken for a seal nbdb wrote.

nbdb seals only at revisions handed out and at guesses, and a guess is at most the head + the commits
in flight in the guessing process + 1 (see :meth:`RevisionSequencer.predict`): a thousand is far past
any process's commits in flight, and voiding up to it costs at most ``SEAL_REACH / max_group`` (16)
compare-and-sets, no more than the hole of the regression rule costs every watcher (a re-list). A
``last_rev`` farther than that is nobody's seal: the regression rule applies (see :meth:`skip_to`)."""


def resume_head(head: int | None, highest: int, bucket: int, wanted: int, bucket_size: int) -> int | None:
    """The head to number from in ``bucket``, given the highest revision this process has seen there.

    Normally the stored ``head``. If it is below ``highest``, the store lost
    commits (a crash without a durable commit log): numbering resumes past
    them, leaving a hole of unused revisions, so that no revision is handed
    out twice and every watcher whose position the store forgot finds the
    hole and raises HistoryGoneError. The hole stays inside the bucket.
    """
    if highest <= (head if head is not None else bucket * bucket_size) or L.bucket_of(highest, bucket_size) != bucket:
        return head
    return max(highest, min(highest + REGRESSION_GAP, (bucket + 1) * bucket_size - wanted))


def numbers_in_bucket(head: int | None, bucket: int, wanted: int, bucket_size: int) -> tuple[int, int]:
    """The first revision and how many of ``wanted`` a bucket whose ``head`` is given can still hand out.

    ``head`` None: nothing handed out in the bucket yet. (0 numbers: the bucket is full.)
    """
    first = bucket * bucket_size + 1 if head is None else head + 1
    last = (bucket + 1) * bucket_size
    return first, max(0, min(wanted, last - first + 1))


def assign(group: Sequence[_Request], first: int) -> list[int]:
    """The numbers ``first`` .. ``first + len(group) - 1`` given to ``group``, in its order: each request its
    guess if the guess is among them (and no earlier request has it), the others the numbers left, in order."""
    last = first + len(group) - 1
    out: list[int | None] = [None] * len(group)
    used: set[int] = set()
    for i, request in enumerate(group):
        if request.guess is not None and first <= request.guess <= last and request.guess not in used:
            out[i] = request.guess
            used.add(request.guess)
    left = iter(n for n in range(first, last + 1) if n not in used)
    return [n if n is not None else next(left) for n in out]


class CommitQueue:
    """The commits of a process waiting for revisions in one namespace, and what it knows of the head.

    Shared by every backend of the process on the namespace (see
    :class:`~nbdb.families.widecolumn.sharing.NamespaceState`), so that their
    commits take revisions together instead of racing each other's
    compare-and-set.
    """

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.waiting: deque[_Request] = deque()
        self.busy = False
        """A leader is taking revisions."""
        self.bucket = -1
        """The bucket the head is in, as far as this process knows (-1: not read yet)."""
        self.known: tuple[int, int | None] | None = None
        """(bucket, head) after this process's last compare-and-set on the head, if still believed current."""
        self.highest = 0
        """The highest revision this process took: the head can only be below it if the store lost commits."""
        self.contended = False
        """The last take lost a race: other processes take numbers too, so ``known`` is likely stale by now."""
        self.own: tuple[int, int] | None = None
        """(bucket, last number) of this process's last take."""
        self.alone = 0
        """Takes in a row that found no other process's numbers since this process's take before (at most
        :data:`GUESS_AFTER`; the process's first take counts as that many if it won its first try)."""
        self.guesses: set[int] = set()
        """The guesses :meth:`RevisionSequencer.predict` handed out whose commit has no revision yet (nor gave
        its guess back): no other commit is guessed one of them. Nothing else is kept of the guesses, so one
        given back (or whose take failed) is handed out again, and no guess drifts above the numbers in flight."""
        self.on_loss: list[Callable[[], None]] = []
        """Called when the store is found to have lost commits (what this process remembers of them is wrong)."""

    def lost(self) -> None:
        """The store lost commits this process made: tell whoever remembers them."""
        for callback in self.on_loss:
            callback()


@dataclass(slots=True, eq=False)
class _Request:
    """A commit waiting for its revision."""

    part: str
    tables: frozenset[str]
    guess: int | None = None
    revision: int = 0
    error: BaseException | None = None
    done: bool = False
    lead: bool = False


class RevisionSequencer:
    """Hands out revisions (group commit), reads the current one, voids and forgets them."""

    bucket_size: ClassVar[int] = L.BUCKET_SIZE
    """Revisions per index partition (a property of the stored layout; tests shrink it)."""
    max_group: ClassVar[int] = 64
    """Revisions taken by one compare-and-set at most (the index rows ride in its batch)."""

    def __init__(
        self,
        store: WideColumnStore,
        partitions: Partitions,
        options: WideColumnOptions,
        queue: CommitQueue | None = None,
    ) -> None:
        self._store = store
        self._partitions = partitions
        self._ns = partitions.ns
        self._o = options
        self._q = queue or CommitQueue()
        race = options.contention
        self._races = race.replace(backoff=0.0, max_backoff=0.0, attempts=5 * race.attempts)
        """Tries of the head's compare-and-set, under the contention deadline; the pause between two is
        :meth:`_pause`'s, which shrinks as a take loses more races (a loser is not sent to the back)."""
        self._pause_cap = min(race.max_backoff, 4 * race.backoff)
        """The longest pause after a lost race (8 ms by default)."""

    # ---------------------------------------------------------------- reading

    def bucket_hint(self) -> int:
        """The bucket the namespace's head is in, as far as this process knows (read once)."""
        if self._q.bucket < 0:
            rows = self._store.select(L.Q_META, (self._ns, "bucket"))
            value = rows[0].value if rows else None
            self._q.bucket = 0 if value is None else int(value)
        return self._q.bucket

    def _advance_bucket(self, bucket: int) -> None:
        self._q.bucket = max(self._q.bucket, bucket + 1)
        try:  # best effort: a stale hint only costs a few reads
            rows = self._store.select(L.Q_META, (self._ns, "bucket"))
            current = rows[0].value if rows else None
            if current is None or current <= bucket:
                self._store.apply([(L.W_META, (self._ns, "bucket", bucket + 1, None, current))])
        except errors.NbdbError as exc:
            log.debug("could not move the bucket hint past %d: %s", bucket, exc)

    def current(self) -> int:
        """The last revision handed out in the namespace (by any client)."""
        bucket = self.bucket_hint()
        while True:
            rows = self._store.select(L.Q_HEAD, (self._ns, bucket))
            head = rows[0].head if rows else None
            if head is None:
                return bucket * self.bucket_size
            if head >= (bucket + 1) * self.bucket_size:
                self._advance_bucket(bucket)
                bucket += 1
                continue
            return int(head)

    def predict(self) -> int | None:
        """The revision the next commit of this process will likely take (None: no guess).

        Each call hands out a guess of its own: the lowest number after the last one this process took
        (and after the commits waiting without a guess) that no commit in flight holds as its guess, as
        long as no other client took a number since as far as this process knows. Pass it to :meth:`allocate` (or to
        :meth:`unguess` if the commit takes no revision): a group's take gives each of its commits its
        guess when the guess falls among the group's numbers (any order of a group's numbers is one
        compare-and-set all the same), so concurrent commits of the process are guessed right, not
        only the first. A guess is never above the head + the commits in flight + 1, so whatever is
        done under it early (a unique claim tied to it, see ``unique``) is re-tied when it was wrong.
        None while other processes take numbers too (one of the last :data:`GUESS_AFTER` takes lost a
        race, or found numbers another process took since this process's take before it): the guess
        would be wrong about half the time, and re-tying costs a round; the claim follows the take instead.
        """
        with self._q.cond:
            known = self._q.known
            if known is None or known[1] is None or known[0] != self._q.bucket or self._q.alone < GUESS_AFTER:
                return None
            # The commits waiting without a guess take the next numbers (in the queue's order); the others
            # are each guessed the lowest number after those that no commit in flight was guessed.
            guess = int(known[1]) + 1 + sum(1 for request in self._q.waiting if request.guess is None)
            while guess in self._q.guesses:
                guess += 1
            self._q.guesses.add(guess)
            return guess

    def unguess(self, guess: int) -> None:
        """Give back a guess from :meth:`predict` that will not be passed to :meth:`allocate` (it is handed
        out again: a guess kept by nobody would leave the next commits guessed numbers they do not take)."""
        with self._q.cond:
            self._q.guesses.discard(guess)

    # ---------------------------------------------------------------- allocating

    def allocate(self, part: str, tables: frozenset[str], guess: int | None = None) -> int:
        """The next revision, for one commit to ``part`` touching ``tables``; its index row is written.

        ``guess``: what :meth:`predict` gave this commit (it gets that number if its group's take has it).
        """
        request = _Request(part, tables, guess)
        with self._q.cond:
            self._q.waiting.append(request)
            if not self._q.busy:
                self._q.busy = True
                request.lead = True
            while not request.done:
                if request.lead:
                    request.lead = False
                    self._q.cond.release()
                    try:
                        self._serve()
                    finally:
                        self._q.cond.acquire()
                    continue
                self._q.cond.wait()
        if request.error is not None:
            raise request.error
        return request.revision

    def _serve(self) -> None:
        """Take revisions for the requests at the head of the queue, then pass the lead on."""
        with self._q.cond:
            group = [self._q.waiting.popleft() for _ in range(min(len(self._q.waiting), self.max_group))]
        numbers: list[int] = []
        error: BaseException | None = None
        try:
            numbers = self._take(group)
        except BaseException as exc:  # every waiter of the group must hear of it
            error = exc
        with self._q.cond:
            for request, revision in zip(group, numbers, strict=False):
                request.revision, request.done = revision, True
            rest = group[len(numbers) :]
            if error is not None:
                for request in rest:
                    request.error, request.done = error, True
            else:
                self._q.waiting.extendleft(reversed(rest))  # a bucket filled up: they go first next time
            for request in group:  # a guess is out of play once its commit has its revision (or its error)
                if request.done and request.guess is not None:
                    self._q.guesses.discard(request.guess)
            if self._q.waiting:
                self._q.waiting[0].lead = True
            else:
                self._q.busy = False
            self._q.cond.notify_all()

    def _take(self, group: list[_Request]) -> list[int]:
        """One compare-and-set on the head for as many of ``group`` as the bucket holds.

        After a lost race ``group`` grows by the commits queued since (:meth:`_join`)."""
        cid = uuid.uuid4()
        bucket = self.bucket_hint()
        started = time.monotonic()
        reported = True
        for attempt in tries(self._races):
            if attempt:
                self._pause(attempt, reported)
                self._join(group)
            known = self._q.known
            # A head this process learnt from its own last take is stale when other processes take numbers
            # too (it then lost a race): a compare-and-set on it would be a Paxos round lost for sure, queued
            # at the row's coordinator behind everyone's. A plain quorum read is not. A head a lost race
            # reported just now is the freshest there is.
            if known is not None and known[0] == bucket and (attempt or not self._q.contended):
                head = known[1]
            else:
                # A guess the compare-and-set checks: one replica's answer (the row's coordinator, where the
                # driver sends it), not a quorum's, which waited ~1 s for a replica killed a moment before.
                rows = self._store.select(L.Q_HEAD_HINT, (self._ns, bucket))
                head = rows[0].head if rows else None
                if known is not None and known[0] == bucket and known[1] is not None and (head or 0) < known[1]:
                    # Behind this process's own last take (a plain read, after a take settled by a serial
                    # one): try the head it knows. Were the store to have lost that take, the compare-and-set
                    # reports the head, and the next try resumes past the loss.
                    head = known[1]
            start = resume_head(head, self._q.highest, bucket, len(group), self.bucket_size)
            if start != head:
                log.warning(
                    "the revision sequencer is at %s although this process saw %d: the store lost recent commits; "
                    "resuming at %d, and watchers from before the loss will re-list",
                    head, self._q.highest, start,
                )  # fmt: skip
                self._q.lost()
            first, count = numbers_in_bucket(start, bucket, len(group), self.bucket_size)
            if count == 0:
                self._advance_bucket(bucket)
                bucket = self._q.bucket
                continue
            at = int(self._o.clock() * 1000)
            numbers = assign(group[:count], first)
            writes: list[tuple[Write, tuple[Any, ...]]] = [(L.W_HEAD, (self._ns, bucket, first + count - 1, head))]
            for request, number in zip(group[:count], numbers, strict=True):
                writes.append(
                    (L.W_INTENT, (self._ns, bucket, number, request.part, set(request.tables), cid, at,
                                  self._o.history))
                )  # fmt: skip
            after: int | None = None
            try:
                result = self._store.apply(writes)
                applied = result.applied
            except OutcomeUnknown:
                applied, after = self._landed(bucket, first, cid, head)
                result = None
            if applied:
                mine = self._q.own
                if attempt or (mine is not None and mine != (bucket, head)):  # another process's numbers came
                    self._q.alone = 0  # between this take and the one before
                else:
                    self._q.alone = GUESS_AFTER if mine is None else min(GUESS_AFTER, self._q.alone + 1)
                self._q.own = self._q.known = (bucket, first + count - 1)
                self._q.contended = attempt > 0
                self._q.highest = max(self._q.highest, first + count - 1)
                if time.monotonic() - started > _SLOW_TAKE:  # where a writer's stall comes from (node loss)
                    log.debug("took %d revisions after %d lost races, in %.2fs", count, attempt,
                              time.monotonic() - started)  # fmt: skip
                return numbers
            # Another client took numbers: a failed compare-and-set reports the head it saw, and the serial
            # read that settled a lost reply read it too (a plain read of the head waited ~1 s for the rest of
            # the node's in-flight rounds after the row's coordinator was killed; the serial one did not).
            if result is None:
                reported, self._q.known = True, (bucket, after)
            else:
                reported = result.reports("head")
                self._q.known = (bucket, result.value("head")) if reported else None
        raise errors.BackendUnavailableError("could not take a revision: too much contention on the sequencer")

    def _join(self, group: list[_Request]) -> None:
        """Add to a take that lost a race the commits that queued behind it meanwhile (``max_group`` at most).

        Its next try is one compare-and-set for them too, instead of one more take after it, racing the
        other processes again: fewer rounds on the head's row while they contend, and a commit that
        arrived during a lost race waits for one take, not two. They keep the queue's order.
        """
        with self._q.cond:
            while self._q.waiting and len(group) < self.max_group:
                group.append(self._q.waiting.popleft())

    def _pause(self, losses: int, reported: bool) -> None:
        """Wait before the next try of a take that lost ``losses`` races in a row.

        Losers of a round retry together on the head the winner left, and the first to reach the row's
        coordinator wins the next. The pause shrinks with the losses, to none from the third on, so a
        take that kept losing is sent before those that lost once (a pause that grew with the losses
        kept one writer losing 50-80 races in a row after a node kill). Without a reported head (a reply
        lost, then settled as not applied) the row is read again after the longest pause.
        """
        share = 1.0 if not reported else max(0.0, (3 - losses) / 2)
        if share > 0:
            time.sleep(self._pause_cap * share * random.random())  # not cryptography

    def _landed(self, bucket: int, first: int, cid: uuid.UUID, head: int | None) -> tuple[bool, int | None]:
        """Whether a compare-and-set on ``head`` whose reply was lost took ``first`` (its index row carries
        ``cid``), and the head as the same serial read found it.

        No index row at ``first``: nobody took it, so the head is still ``head`` (were the row dropped by
        a compaction, the next compare-and-set on it fails and reports the head: a round lost, nothing else).
        """
        rows = self._partitions.read(L.Q_TAKEN, (self._ns, bucket, first), serial=True)
        if not rows:
            return False, head
        return rows[0].cid == cid, rows[0].head

    def skip_to(self, last: int, part: str) -> bool:
        """Take the revisions after the head up to ``last`` and mark them void; False if ``last`` is too far.

        For a seal found above the head (at a guess, see ``unique``): no commit can land at or below it in
        ``part``, so the numbers up to it are taken like any others (the head's compare-and-set, with their
        index rows, ``max_group`` at a time) and written ``void`` in the same batch. Numbering resumes at
        ``last + 1`` and watchers pass the voids: no hole, no HistoryGoneError. Each index row names ``part``.
        """
        cid = uuid.uuid4()
        bucket = self.bucket_hint()
        head: int | None = None
        read, reported = True, True
        for attempt in tries(self._races):
            if attempt:
                self._pause(attempt, reported)
            if read:
                rows = self._partitions.read(L.Q_HEAD, (self._ns, bucket))
                head = rows[0].head if rows else None
            start = bucket * self.bucket_size if head is None else int(head)
            if start >= last:
                return True
            if last - start > SEAL_REACH:
                return False
            end = (bucket + 1) * self.bucket_size
            if start >= end:
                self._advance_bucket(bucket)
                bucket, read = self._q.bucket, True
                continue
            first, upto = start + 1, min(last, end, start + self.max_group)
            at = int(self._o.clock() * 1000)
            writes: list[tuple[Write, tuple[Any, ...]]] = [(L.W_HEAD, (self._ns, bucket, upto, head))]
            for g in range(first, upto + 1):
                writes.append((L.W_INTENT, (self._ns, bucket, g, part, set(), cid, at, self._o.history)))
                writes.append((L.W_VOID, (self._ns, bucket, g, True, self._o.history)))
            try:
                result = self._store.apply(writes)
                applied, after = result.applied, None
            except OutcomeUnknown:
                applied, after = self._landed(bucket, first, cid, head)
                result = None
            if applied:
                head, read, reported = upto, False, True
                with self._q.cond:
                    self._q.known = (bucket, upto)
                    self._q.highest = max(self._q.highest, upto)
                continue
            if result is None:
                head, read, reported = after, False, True
            else:
                reported = result.reports("head")
                head, read = (result.value("head"), False) if reported else (None, True)
        return False

    def passed(self, revision: int) -> None:
        """A revision found in the store past the head (another writer's): the next take resumes past it."""
        with self._q.cond:
            self._q.highest = max(self._q.highest, revision)

    def void(self, revision: int) -> None:
        """Mark ``revision`` as never committed (its commit failed and will not be retried under it)."""
        bucket = L.bucket_of(revision, self.bucket_size)
        try:
            self._store.apply([(L.W_VOID, (self._ns, bucket, revision, True, self._o.history))])
        except errors.NbdbError as exc:  # watchers resolve it by sealing instead
            log.debug("could not mark revision %d void: %s", revision, exc)

    # ---------------------------------------------------------------- history

    def floor(self) -> int:
        """The revision the kept history starts after (raised by :meth:`compact`)."""
        rows = self._store.select(L.Q_META, (self._ns, "floor"))
        value = rows[0].value if rows else None
        return 0 if value is None else int(value)

    def compact(self) -> int:
        """Forget the index up to the current revision (returned); watchers behind it get HistoryGoneError."""
        revision = self.current()
        for _ in tries(self._o.contention):
            rows = self._partitions.read(L.Q_META, (self._ns, "floor"), serial=True)
            current = rows[0].value if rows else None
            if current is not None and current >= revision:
                break
            try:
                if self._store.apply([(L.W_META, (self._ns, "floor", revision, None, current))]).applied:
                    break
            except OutcomeUnknown:
                continue  # the next serial read settles it
        bucket = L.bucket_of(revision, self.bucket_size) if revision else 0
        self._store.apply([(L.W_DROP_INTENTS, (self._ns, bucket, revision))])
        return revision
