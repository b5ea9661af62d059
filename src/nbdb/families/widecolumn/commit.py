"""The committer: read what a plan needs, take a revision, send the partition's batch, settle it.

One commit is one conditional batch in the partition of its topic::

    read the rows the plan needs (all at once), taking revision G (group commit) meanwhile
    plan -> [fenced: register G and check the lock] -> reserve cross-partition references
         -> claim unique values -> write the deadlines of objects that expire
    batch: the objects' conditional writes + IF last_rev < G SET last_rev = G + change rows at G

Everything done around the batch names G, so that whoever finds it later can
settle it by sealing the partition at G (see ``references``, ``unique``,
``fences``, ``expiry``).

A batch that does not apply (a condition failed) is re-planned from fresh reads,
which raises the typed error the transaction deserves or commits it. A batch
whose reply is lost is **settled**, never guessed: the committer seals the
partition at G (no commit at G can land after that), then looks for its change
rows at G. Found: it landed, exactly once. Absent: it never will, and the
commit is retried under a new revision. When even that cannot be done, the
caller gets :class:`nbdb.errors.CommitUnknownError`.

Commits of one process to one partition take turns (a lock per partition),
so they reach the partition in revision order instead of failing each other's
``last_rev`` condition.
"""

from __future__ import annotations

import functools
import logging
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence

from nbdb import errors
from nbdb.families import rules
from nbdb.families.widecolumn import layout as L
from nbdb.families.widecolumn import planner
from nbdb.families.widecolumn.changes import ChangeRow, Intent
from nbdb.families.widecolumn.expiry import register_deadlines
from nbdb.families.widecolumn.fences import Fences
from nbdb.families.widecolumn.options import WideColumnOptions, tries
from nbdb.families.widecolumn.partitions import Partitions
from nbdb.families.widecolumn.planner import Plan, StoredObject
from nbdb.families.widecolumn.primitives import OutcomeUnknown
from nbdb.families.widecolumn.references import ReferenceProtocol, Replan, Reservations
from nbdb.families.widecolumn.sequencer import SEAL_REACH, RevisionSequencer
from nbdb.families.widecolumn.sharing import NamespaceState
from nbdb.families.widecolumn.unique import ClaimsHeld, EarlyReplies, UniqueClaims
from nbdb.spi import CommitResult, Delete, LockHandle, Put, RefKey, WriteOp

__all__ = ["Committer"]

log = logging.getLogger(__name__)

_STRIPES = 64

Facts = tuple[dict[RefKey, StoredObject | None], dict[RefKey, str | None], set[RefKey]]
"""What a plan is made from: stored rows, where objects live, and which targets expire."""


class Committer:
    """Commits transactions of one namespace."""

    def __init__(
        self,
        partitions: Partitions,
        sequencer: RevisionSequencer,
        references: ReferenceProtocol,
        options: WideColumnOptions,
        shared: NamespaceState,
        claims: UniqueClaims,
        fences: Fences,
    ) -> None:
        self._p = partitions
        self._sequencer = sequencer
        self._refs = references
        self._claims = claims
        self._fences = fences
        self._o = options
        self._shared = shared
        self._stripes = [threading.Lock() for _ in range(_STRIPES)]
        self._registered: set[str] = set()
        self._unordered: set[str] = set()
        """Partitions this process found without a ``last_rev`` (nothing ever committed there)."""
        self.before_commit: Callable[[int], None] | None = None
        """Test hook: called with the revision between its allocation and the batch."""

    def commit(
        self,
        ops: Sequence[WriteOp],
        fence: LockHandle | None = None,
        guards: Mapping[RefKey, int | None] | None = None,
    ) -> CommitResult:
        """Apply ``ops`` (one partition) all or nothing; the commit's revision and new versions.

        ``fence``: only while that lock is held (LockLostError otherwise).
        ``guards``: the deadline each deleted object must still have (the reaper's deletes).
        """
        if not ops:
            return CommitResult(self._sequencer.current(), [])
        part = planner.check_shape(ops)
        self.register(part)
        tables = frozenset(op.table for op in ops)
        reserved: Reservations = {}
        claims: ClaimsHeld = {}
        replies = EarlyReplies()  # what the early claims not taken told, used by the claims after the take
        fenced: list[int] = []
        outcome = "failed"  # or "landed", or "unknown": then what was taken around the batch stays
        with self._stripes[zlib.crc32(part.encode()) % _STRIPES]:
            try:
                fresh = False
                for _ in tries(self._o.commit):
                    taken: list[int] = []
                    # The revision is taken while the plan's reads (and, for creates, the claims of
                    # their unique values, tied to the revision it will likely be) are in flight. Not
                    # after a batch failed: the reads then mostly show a conflict, which the plan raises
                    # before a revision is taken (a take lost for nothing, and a void for the watchers).
                    guess = None if fresh else self._sequencer.predict()
                    take = functools.partial(self._take, part, tables, taken, guess)
                    try:
                        early = self._claims.start_early(ops, part, guess) if guess is not None else []
                        try:
                            rows, located, mortal = self._facts(part, ops, fresh, overlap=None if fresh else take)
                            if early and not taken:
                                # Nothing was read (a create of a fresh id whose targets' homes are known):
                                # ask for the revision now, while the claims are in flight, not after their
                                # replies. Asking after them sent commits to the sequencer in the order their
                                # claims came back, not the order they were guessed: ~45% of the guesses were
                                # wrong (each a second compare-and-set re-tying a claim) with 16 writers.
                                take()
                        finally:
                            self._claims.collect_early(early, claims, replies)
                        plan = planner.plan(
                            self._p.ns, part, ops, rows, located,
                            mortal=mortal, now_ms=int(self._o.clock() * 1000), guards=guards,
                        )  # fmt: skip
                        self._refs.check_deletes(plan)
                        if not taken:
                            take()
                        revision = taken[0]
                        if fence is not None:
                            fenced.append(revision)
                            self._fences.guard(fence, part, revision)
                        self._refs.reserve(plan, reserved)
                        self._claims.claim(plan, revision, claims, replies)
                        register_deadlines(self._p, plan.expiring, part, revision)
                    except Replan:
                        self._void(taken, part, tables, guess)
                        fresh = True
                        continue
                    except BaseException:
                        self._void(taken, part, tables, guess)
                        raise
                    try:
                        if self.before_commit is not None:
                            self.before_commit(revision)
                        # From here an exception that is not the store's word says nothing of the batch
                        # (an interrupt mid-send): keep what was taken around it, as for a lost reply.
                        outcome = "unknown"
                        if self.send(part, revision, plan):
                            outcome = "landed"
                            self._after(ops, plan, reserved, Intent(revision, part, tables))
                            self._claims.release_given_up(plan, revision)
                            return CommitResult(revision, plan.versions)
                        outcome = "failed"
                        self._shared.recent.add(Intent(revision, part, tables, void=True), ())
                    except errors.CommitUnknownError:
                        raise
                    except errors.NbdbError:
                        if outcome == "unknown":
                            # The store's word: the batch was not applied, and never will be under this revision
                            # (``send`` voided it in the store): this process's watchers pass it too.
                            outcome = "failed"
                            self._shared.recent.add(Intent(revision, part, tables, void=True), ())
                        raise
                    finally:
                        self._shared.recent.end(revision)  # whatever happened, this process no longer holds it
                    fresh = True  # a condition failed: re-read everything and plan again
                raise errors.ConflictError("the commit kept conflicting with concurrent writers; try again")
            finally:
                if outcome == "failed":
                    self._refs.release_all(reserved)
                    self._claims.release_failed(claims)
                if fence is not None and outcome != "unknown":
                    self._fences.forget(fence, part, fenced)

    def _take(self, part: str, tables: frozenset[str], into: list[int], guess: int | None) -> None:
        try:
            revision = self._sequencer.allocate(part, tables, guess)
        except BaseException:
            into.append(0)  # the guess was passed on: nothing to give back (0: no revision to void)
            raise
        self._shared.recent.begin(revision)
        into.append(revision)

    def _void(self, taken: list[int], part: str, tables: frozenset[str], guess: int | None) -> None:
        if not taken and guess is not None:
            self._sequencer.unguess(guess)  # failed before it asked for a revision
        for revision in taken:
            if not revision:
                continue
            self._sequencer.void(revision)
            self._shared.recent.add(Intent(revision, part, tables, void=True), ())

    def register(self, part: str) -> None:
        """Record that ``part`` holds data (once per process), so that unfiltered lists find it.

        Also notes whether the partition has a ``last_rev`` yet: the first commit
        of a fresh partition conditions on ``last_rev = null`` instead of
        ``last_rev < G``, which a null never satisfies.
        """
        if part not in self._registered:
            self._p.store.apply([(L.W_TOPIC, (self._p.ns, part))])
            if self._p.last_rev(part) is None:
                self._unordered.add(part)
            self._registered.add(part)

    # ---------------------------------------------------------------- reading what the plan needs

    def _facts(
        self, part: str, ops: Sequence[WriteOp], fresh: bool, overlap: Callable[[], None] | None = None
    ) -> Facts:
        """The stored rows of the ops, where the objects the plan needs live, and which of them expire.

        Read in as few rounds as can be. ``fresh``: ignore what this process
        believes of where objects live (a batch just failed; its beliefs may be
        why). ``overlap`` runs while the first round of reads is in flight.
        """
        rows: dict[RefKey, StoredObject | None] = {}
        located: dict[RefKey, str | None] = {}
        mortal: set[RefKey] = set()
        in_ops = {(op.table, op.id) for op in ops}
        created = {(op.table, op.id) for op in ops if isinstance(op, Put) and op.expect_version == 0}
        # A create of an id no create carried before (Put.fresh_id) cannot be refused for another
        # partition holding it, nor for its own: nothing is read for it (its batch is conditioned on
        # the row's absence), and after a failed batch only its row in this partition, not the index.
        unseen = {(op.table, op.id) for op in ops if isinstance(op, Put) and op.expect_version == 0 and op.fresh_id}
        probed: set[RefKey] = set()
        for _ in range(5):
            # (what is read, for which object): an op's row, a target looked for in this
            # partition, or an id looked up in every partition.
            jobs: list[tuple[str, RefKey]] = []
            for op in ops:
                me = (op.table, op.id)
                if me in unseen:
                    if me in rows:
                        pass
                    elif fresh:  # a batch failed: see what is there
                        jobs.append(("row", me))
                    else:  # no store holds it yet: the batch's IF NOT EXISTS is the only check needed
                        rows[me] = None
                elif me in created:
                    if me not in located:
                        jobs.append(("locate", me))
                elif me not in rows:
                    jobs.append(("row", me))
                elif rows[me] is None and me not in located:
                    jobs.append(("locate", me))
            for target in _targets(ops, rows, created) - in_ops:
                if target in located:
                    continue
                cached = None if fresh else self._p.cached_partition(target)
                if cached is not None:
                    located[target] = cached
                    if self._p.cached_mortal(target):
                        mortal.add(target)
                elif target not in probed:
                    probed.add(target)  # look in this partition first: the usual home of a reference
                    jobs.append(("probe", target))
                else:
                    jobs.append(("locate", target))
            if not jobs:
                return rows, located, mortal
            reads = [self._p.locate_query(key[1]) if kind == "locate" else self._p.row_query(part, *key)
                     for kind, key in jobs]  # fmt: skip
            pending = self._p.store.start_reads(reads)
            if overlap is not None:
                run, overlap = overlap, None
                run()
            for (kind, key), found in zip(jobs, pending.result(), strict=True):
                if kind == "row":
                    rows[key] = Partitions.stored_object(found)
                elif kind == "probe":
                    row = Partitions.stored_object(found)
                    if row is not None:
                        located[key] = part
                        if row.ttl_ms is not None:
                            mortal.add(key)
                else:
                    where = self._p.located(key[0], key[1], found)
                    located[key] = None if where is None else where[0]
                    if where is not None and self._p.cached_mortal(key):
                        mortal.add(key)
        raise AssertionError("the facts of a plan take at most four rounds of reads")

    # ---------------------------------------------------------------- sending and settling

    def send(self, part: str, revision: int, plan: Plan) -> bool:
        """Send ``plan``'s batch at ``revision``: True if it landed; False (revision voided) if a condition failed.

        A lost reply is settled (CommitUnknownError if it cannot be). Any other error of the store means
        the batch was not applied: the revision is voided and the error raised.
        """
        first = part in self._unordered
        for _ in range(2):
            try:
                result = self._p.store.apply(plan.batch(self._p.ns, revision, self._o.history, first=first))
            except OutcomeUnknown as exc:
                landed = self._settle(part, revision, exc)  # voids the revision if it did not land
                if landed:
                    self._unordered.discard(part)
                return landed
            except errors.NbdbError:
                # Unsent or refused (the store's word: not applied), and never retried under this revision:
                # void it as every failed commit does. Unvoided, every watcher of another process waited
                # ``settle`` for it, then sealed the topic (one Paxos round per watching process).
                self._sequencer.void(revision)
                raise
            if result.applied:
                self._unordered.discard(part)
                return True
            # If what failed is the condition on last_rev (a null is not below G; a value is not null),
            # try the other one; if it held, an object's condition failed: plan again.
            last = result.value("last_rev")
            if last is not None and last >= revision:
                try:
                    self._past_the_sequencer(part, int(last))
                except errors.NbdbError:
                    # Not applied, and never retried under it (a last_rev nbdb did not write, or it could not
                    # be read): void it as every failed commit does.
                    self._sequencer.void(revision)
                    raise
            null = last is None
            if null == first:
                break
            first = null
        self._sequencer.void(revision)
        return False

    def _past_the_sequencer(self, part: str, last: int) -> None:
        """Check a ``last_rev`` a batch found at or above its revision against the revisions handed out.

        A commit or a seal that got there first left it at a revision the sequencer handed out: the
        next try takes a later one. Above the head it is a seal at a guess (a rival settled a unique
        claim sent early, see ``unique``): it has no change rows, and within ``SEAL_REACH`` of the head
        the sequencer takes the revisions up to it and voids them, so the next try lands right after it
        and watchers pass voids, not a hole. Otherwise it is no nbdb write (another writer's) or a
        commit the sequencer lost: every batch in the partition failed on it, a ConflictError ("kept
        conflicting with concurrent writers") that no retry could end. In the sequencer's bucket,
        numbering resumes past it (as after a store that lost commits); past it, CorruptRecordError.
        """
        head = self._sequencer.current()
        if last <= head:
            return
        if (
            last - head <= SEAL_REACH
            and not self._p.changes(part, last, last, serial=True)
            and self._sequencer.skip_to(last, part)
        ):
            return
        if L.bucket_of(last, self._sequencer.bucket_size) != L.bucket_of(max(head, 1), self._sequencer.bucket_size):
            raise errors.CorruptRecordError(
                f"topic {rules.topic_of_part(part)!r} holds last_rev {last}, past every revision handed out "
                f"({head}): nbdb did not write it, and no commit can land there until it is put back",
                key=part,
            )
        self._sequencer.passed(last)

    def _settle(self, part: str, revision: int, cause: OutcomeUnknown) -> bool:
        """Whether a batch whose reply was lost landed; CommitUnknownError if that cannot be found out."""
        error: errors.NbdbError = cause
        for _ in tries(self._o.settling):
            try:
                # After the seal a commit at ``revision`` is in the partition, or can never be.
                self._p.seal(part, revision)
                landed = bool(self._p.changes(part, revision, revision, serial=True))
            except errors.BackendUnavailableError as exc:
                error = exc
                continue
            if not landed:
                self._sequencer.void(revision)
            log.info("the commit at revision %d in %r lost its reply; it %s", revision, part, _landed(landed))
            return landed
        raise errors.CommitUnknownError(
            f"the commit at revision {revision} in topic {rules.topic_of_part(part)!r} may or may not have been "
            f"applied (its reply was lost and the store could not be asked): {error}"
        ) from error

    def _after(self, ops: Sequence[WriteOp], plan: Plan, reserved: Reservations, intent: Intent) -> None:
        for op in ops:
            if isinstance(op, Delete):
                self._p.forget((op.table, op.id))
            else:
                self._p.remember(
                    (op.table, op.id), plan.partition, op.ttl is not None if op.expect_version == 0 else None
                )
        for key in plan.release:
            self._refs.release(*key)
        # Reservations of earlier attempts that this plan no longer needs.
        self._refs.release_all(reserved, keep=frozenset(plan.reserve))
        reserved.clear()
        g = intent.revision
        rows = [
            ChangeRow(
                g,
                c.table,
                c.id,
                c.data,
                c.version,
                c.old_data,
                c.old_version,
                g if c.version else None,
                c.old_written,
            )
            for c in plan.changes
        ]
        self._shared.recent.add(intent, rows)
        self._shared.signal.notify()


def _landed(landed: bool) -> str:
    return "landed" if landed else "did not land"


def _targets(ops: Sequence[WriteOp], rows: dict[RefKey, StoredObject | None], created: set[RefKey]) -> set[RefKey]:
    """The objects whose reference entries the ops add or drop, as far as the stored rows read so far tell."""
    out: set[RefKey] = set()
    for op in ops:
        me = (op.table, op.id)
        new = op.refs if isinstance(op, Put) else frozenset()
        row = rows.get(me)
        if me in created:
            old: frozenset[RefKey] = frozenset()
        elif row is not None:
            old = row.refs
        else:
            old = op.old_refs or frozenset()  # the caller's belief until the row is read
        out |= new ^ old
    return out
