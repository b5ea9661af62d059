"""Unique values across partitions: a claim row per value, taken with a compare-and-set before the commit.

Two objects that want one value may live in two partitions, so no single
conditional batch can decide between them. Each (table, value) has a claim
row in ``nbdb_unique``: *owner* (the object that holds the value, or is
committing to take it), *part* (its partition), *rev* (the revision of the
commit that took the claim) and *prev* (see "moves" below). The object row
lists the values it holds (``uniq``), written by the same batch as the object.

**Who holds a value.** The claim names a candidate, and the candidate's own
row says whether it holds the value. A commit at ``rev`` may still be in
flight, so before believing a row, a reader *seals* the owner's partition at
``rev`` (no commit at or below it can land there afterwards; the same seal
that settles lost replies and stalled commits): then the owner holds the
value exactly when its row lists it, and nothing can change that without
changing the claim. This is what makes a crashed claimer harmless: its claim
names a revision that never lands, and the next claimer finds it empty.

**Claiming** (the committer, after taking the commit's revision G and
before sending its batch): ``INSERT ... IF NOT EXISTS`` (owner, part, G).
If a claim exists:

- it is this commit's own, from an earlier attempt (same owner, the revision
  that attempt took, which certainly did not land): it is re-tied to G;
- otherwise the holder is found as above. Nobody: the claim is taken over.
  The owner itself: the plan was made from a stale read (plan again). An
  object this same commit makes give the value up: the claim *moves*, and
  keeps that object as *prev* (if the commit fails, prev still holds it).
  Anyone else: :class:`nbdb.UniqueViolationError` naming it.

Every change of a claim row is a compare-and-set on the (owner, rev) read,
so a claim never changes hands behind a reader's back. A value is therefore
held by at most one object at any time: an object's row lists a value only
if its commit held the claim when it landed, and a claim is only taken from
an owner that certainly does not hold the value (sealed, then read).

**Giving values up.** A commit that failed drops the claims it took fresh
(``IF owner = it AND rev = its revision``); one whose outcome is unknown
keeps them (a reader settles them by the seal). After a commit that landed,
the claims of values its objects gave up are dropped if their revision is
below the commit's (such a claim can no longer be taken by a commit in
flight): one compare-and-set whose condition says both, no read first,
sent without waiting for its reply (the commit has landed; a claim of this
store waits for the drop of the same value first). Whatever is left behind
by a crash is cleared by the next claimer.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nbdb import errors
from nbdb.families import rules
from nbdb.families.widecolumn import layout as L
from nbdb.families.widecolumn.options import WideColumnOptions, tries
from nbdb.families.widecolumn.partitions import Partitions
from nbdb.families.widecolumn.planner import ClaimWanted, Plan
from nbdb.families.widecolumn.primitives import OutcomeUnknown, PendingApply
from nbdb.families.widecolumn.references import Replan
from nbdb.spi import Put, UniqueKey, WriteOp

__all__ = ["Claim", "ClaimsHeld", "EarlyClaims", "EarlyReplies", "HeldClaim", "UniqueClaims", "resolve_step"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Claim:
    """A claim row as read."""

    owner: uuid.UUID
    prev: uuid.UUID | None
    part: str
    rev: int

    @classmethod
    def of(cls, row: Mapping[str, Any] | Any | None) -> Claim | None:
        """The claim in a row read (or reported by a failed compare-and-set); None if there is none."""
        if row is None:
            return None
        get = row.get if isinstance(row, Mapping) else lambda name: getattr(row, name, None)
        owner, part, rev = get("owner"), get("part"), get("rev")
        if owner is None or part is None or rev is None:
            return None
        return cls(owner, get("prev"), part, int(rev))


@dataclass(frozen=True, slots=True)
class HeldClaim:
    """A claim a commit holds: tied to the revision of its latest attempt."""

    owner: uuid.UUID
    rev: int
    prev: uuid.UUID | None
    mark: uuid.UUID | None = None
    """The mark the claim was sent with early (its row's ``prev`` until it is re-tied): no previous holder."""


ClaimsHeld = dict[tuple[str, str], HeldClaim]
"""(table, value text) -> the claim one commit holds, across its attempts."""

EarlyClaims = list[tuple[str, str, uuid.UUID, str, int, uuid.UUID | None, PendingApply]]
"""Claims sent before the commit's revision is known: (table, value text, owner, its partition, guessed
revision, mark, reply). The mark is None for a fresh id (``Put.fresh_id``: no other create carries it, so
(owner, partition, guess) is this claim's alone); for an id the caller gave, an id drawn for the claim and
sent as its ``prev`` (:data:`~nbdb.families.widecolumn.layout.W_CLAIM_MARKED`), which no other claim carries."""


@dataclass(slots=True)
class EarlyReplies:
    """What one commit's early claims that it did not take told it, for :meth:`UniqueClaims.claim`."""

    found: dict[tuple[str, str], Claim] = field(default_factory=dict)
    """The claim that stood in the way, as the refusal (or the settling read) reported it: the claimer
    resolves it at once instead of asking for it again with a second ``IF NOT EXISTS``. Used once."""
    unsettled: dict[tuple[str, str], tuple[uuid.UUID, str, int, uuid.UUID | None]] = field(default_factory=dict)
    """(owner, partition, guess, mark as prev) of the early claims whose outcome is unknown and could not be
    read: the claim is this commit's own if the claimer finds exactly that (see :meth:`UniqueClaims.claim`)."""


def resolve_step(claim: Claim, wanted: ClaimWanted, mine: HeldClaim | None) -> str:
    """What a claimer does with an existing claim before looking at any row: ``"retie"`` or ``"resolve"``.

    Re-tying is for this commit's own claim from an earlier attempt (whose
    revision certainly did not land), unless it names as prev an object the
    commit no longer makes give the value up. The mark of its early claim
    (:data:`~nbdb.families.widecolumn.layout.W_CLAIM_MARKED`) names no object.
    """
    if (
        mine is not None
        and claim.owner == wanted.owner
        and claim.rev == mine.rev
        and (claim.prev is None or claim.prev == mine.mark or claim.prev in wanted.releasing)
    ):
        return "retie"
    return "resolve"


def after_resolution(holder: uuid.UUID | None, wanted: ClaimWanted) -> tuple[str, uuid.UUID | None]:
    """What a claimer does once it knows who holds the value: (``take`` | ``move`` | ``replan`` | ``taken``, prev)."""
    if holder is None:
        return "take", None
    if holder == wanted.owner:
        return "replan", None
    if holder in wanted.releasing:
        return "move", holder
    return "taken", holder


class UniqueClaims:
    """Claims of unique values for the commits of one namespace (see the module docstring)."""

    def __init__(self, partitions: Partitions, options: WideColumnOptions) -> None:
        self._p = partitions
        self._o = options
        self._lock = threading.Lock()
        self._giving_up: dict[tuple[str, str], PendingApply] = {}
        """Drops of given-up claims in flight (see :meth:`release_given_up`)."""

    # ---------------------------------------------------------------- reading

    def read(self, table: str, text: str, *, serial: bool = False) -> Claim | None:
        """The claim of one value."""
        rows = self._p.read(L.Q_CLAIM, (self._p.ns, table, text), serial=serial)
        return Claim.of(rows[0] if rows else None)

    def holder(self, table: str, claim: Claim, text: str, *, settle: bool) -> uuid.UUID | None:
        """Which of the claim's candidates holds the value (None: neither).

        ``settle``: seal the owner's partition at the claim's revision first and
        read serially, so that the answer stays true until the claim changes
        (a claimer's question); without it, the answer of a quorum read (a
        reader's question: an in-flight claim does not count yet).
        """
        if settle:
            self._p.seal_through(claim.part, claim.rev)
        for candidate in (claim.owner, claim.prev):
            if candidate is None:
                continue
            query, params = self._p.row_query(claim.part, table, candidate)
            row = Partitions.stored_object(self._p.read(query, params, serial=settle))
            if row is not None and text in row.unique:
                return candidate
        return None

    def owner(self, table: str, key: UniqueKey) -> uuid.UUID | None:
        """The object that holds ``key`` now (``Backend.unique_owner``)."""
        text = L.unique_text(key)
        claim = self.read(table, text)
        return None if claim is None else self.holder(table, claim, text, settle=False)

    # ---------------------------------------------------------------- claiming

    def start_early(self, ops: Sequence[WriteOp], part: str, guess: int | None) -> EarlyClaims:
        """Send the claims of a commit of creates before its revision is taken, tied to ``guess``.

        A commit of creates only claims every unique value of its objects
        (nothing of the commit gives one up), so they are known before any
        read. Sent now, they travel with the commit's reads and its revision's
        compare-and-set instead of after them. A claim tied to a guess that
        was not the commit's revision is no weaker than none: no batch is sent
        before the claim is tied to the commit's own revision (re-tied by a
        compare-and-set on the guess, see :meth:`claim`), and a reader that
        seals the owner's partition at the guess and takes the claim over
        beats that re-tie or fails against it. When the guess is right, the
        claim is exactly the one :meth:`claim` would have written.
        """
        if guess is None or not all(isinstance(op, Put) and op.expect_version == 0 for op in ops):
            return []
        out: EarlyClaims = []
        for op in ops:
            for key in op.unique if isinstance(op, Put) else ():
                text = L.unique_text(key)
                self._given_up(op.table, text)
                fresh = isinstance(op, Put) and op.fresh_id
                mark = None if fresh else uuid.uuid4()
                write = (
                    (L.W_CLAIM, (self._p.ns, op.table, text, op.id, part, guess))
                    if mark is None
                    else (L.W_CLAIM_MARKED, (self._p.ns, op.table, text, op.id, mark, part, guess))
                )
                try:
                    pending = self._p.store.start_apply([write])
                except errors.NbdbError as exc:  # the claim is taken the usual way after the revision
                    log.debug("could not send the claim of %s %s early: %s", op.table, text, exc)
                    continue
                out.append((op.table, text, op.id, part, guess, mark, pending))
        return out

    def collect_early(self, early: EarlyClaims, held: ClaimsHeld, replies: EarlyReplies | None = None) -> None:
        """Note in ``held`` the early claims that were taken (whatever happens to the commit, so that a
        commit that fails drops them). One not taken is claimed again the usual way, from what ``replies``
        keeps of it: the claim its refusal reported, or that its outcome could not be known."""
        for table, text, owner, part, guess, mark, pending in early:
            slot = (table, text)
            current: Claim | None
            try:
                try:
                    result = pending.result()
                    if result.applied:
                        held[slot] = HeldClaim(owner, guess, None, mark)
                        continue
                    current = Claim.of(result.current[0] if result.current else None)
                except OutcomeUnknown:
                    try:
                        current = self.read(table, text, serial=True)
                    except errors.NbdbError:
                        if replies is not None:
                            replies.unsettled[slot] = (owner, part, guess, mark)
                        raise
            except errors.NbdbError as exc:
                log.debug("could not tell whether the early claim of %s %s was taken: %s", table, text, exc)
                continue
            stored = None if current is None else (current.owner, current.part, current.rev, current.prev)
            if stored == (owner, part, guess, mark):
                # Its reply was lost, but the claim is there: this commit's own. A fresh id is carried by no other
                # create; an id the caller gave may be another create's under the same guess (another process
                # guesses its own numbers), but not with this claim's mark. Until 2026-12-05 such a claim of a
                # given id was resolved as any found: that sealed this commit's own topic at its guess, usually
                # its revision, which its batch then failed on and voided (a second revision taken).
                held[slot] = HeldClaim(owner, guess, None, mark)
            elif current is not None and replies is not None:
                replies.found[slot] = current

    def claim(self, plan: Plan, revision: int, held: ClaimsHeld, replies: EarlyReplies | None = None) -> None:
        """Hold every claim ``plan`` needs, tied to ``revision``; UniqueViolationError if a value is taken.

        Raises :class:`~nbdb.families.widecolumn.references.Replan` when a
        claim shows the plan was made from a stale read.

        ``replies``: what the commit's early claims not taken told (:meth:`collect_early`). A claim an
        early one was refused for is resolved as the first ``IF NOT EXISTS`` would have found it (no
        second one is sent: every step from it is a settled read or a compare-and-set on the claim as
        found, so a claim that changed since only costs a failed compare-and-set and a new try). A claim
        found naming exactly (this commit's object, partition, guess, mark) of an early claim of unknown
        outcome is that claim: what the settling read would have found, had it not failed (a fresh id is
        carried by no other create; a claim of a given id carries a mark no other claim does), so it is
        re-tied, not resolved (resolving it sealed the commit's own partition at its guess, often its
        revision: the batch then failed, a revision lost). Any other claim is resolved.
        """
        for wanted in plan.claims:
            self._claim(wanted, plan.partition, revision, held, replies)

    def _claim(
        self, wanted: ClaimWanted, part: str, revision: int, held: ClaimsHeld, replies: EarlyReplies | None = None
    ) -> None:
        p, table, text = self._p, wanted.table, wanted.text
        slot = (table, text)
        found = None if replies is None else replies.found.pop(slot, None)
        early = None if replies is None else replies.unsettled.get(slot)
        self._given_up(table, text)
        mine = held.get(slot)
        if mine is not None and mine.owner == wanted.owner and mine.prev is None:
            # Taken by this commit already: early (under a guess), or by an attempt that certainly did not land.
            if mine.rev == revision:
                return
            tied = HeldClaim(wanted.owner, revision, None)
            if self._set(table, text, Claim(mine.owner, None, part, mine.rev), tied, part):
                held[slot] = tied
                return
        for _ in tries(self._o.contention):
            current: Claim | None
            if found is not None:
                current, found = found, None  # what the early claim's refusal reported
            else:
                try:
                    result = p.store.apply([(L.W_CLAIM, (p.ns, table, text, wanted.owner, part, revision))])
                    if result.applied:
                        held[slot] = HeldClaim(wanted.owner, revision, None)
                        return
                    current = Claim.of(result.current[0] if result.current else None)
                except OutcomeUnknown:
                    current = self.read(table, text, serial=True)
                    # Ours: an early claim of another create of this id under the same number carries its mark.
                    if current is not None and (current.owner, current.rev, current.prev) == (
                        wanted.owner,
                        revision,
                        None,
                    ):
                        held[slot] = HeldClaim(wanted.owner, revision, None)
                        return
            if current is None:
                continue  # dropped meanwhile: insert again
            if early == (current.owner, current.part, current.rev, current.prev) and current.owner == wanted.owner:
                # The early claim of unknown outcome had been taken: re-tie it, as if the settling read had worked.
                prev = None
                if current.rev == revision:
                    held[slot] = HeldClaim(wanted.owner, revision, None, current.prev)
                    return
            elif resolve_step(current, wanted, held.get(slot)) == "retie":
                # Its early claim's mark (still there when the re-tie above was lost unsent) is no previous
                # holder: re-tied, the claim holds the value alone, and release_failed drops it if the commit fails.
                mine = held[slot]
                prev = None if current.prev == mine.mark else current.prev
            else:
                action, prev = after_resolution(self.holder(table, current, text, settle=True), wanted)
                if action == "replan":
                    raise Replan()
                if action == "taken":
                    raise rules.unique_taken(table, wanted.key.field, wanted.key.value, prev)
            if self._set(table, text, current, HeldClaim(wanted.owner, revision, prev), part):
                held[slot] = HeldClaim(wanted.owner, revision, prev)
                return
        raise errors.BackendUnavailableError(
            f"could not claim {table}.{wanted.key.field} = {wanted.key.value}: too much contention"
        )

    def _set(self, table: str, text: str, current: Claim, new: HeldClaim, part: str) -> bool:
        """Replace ``current`` by ``new`` if the claim is still ``current``."""
        p = self._p
        statement = (L.W_CLAIM_SET, (p.ns, table, text, new.owner, new.prev, part, new.rev, current.owner, current.rev))
        try:
            return p.store.apply([statement]).applied
        except OutcomeUnknown:
            now = self.read(table, text, serial=True)
            return now is not None and (now.owner, now.rev) == (new.owner, new.rev)

    # ---------------------------------------------------------------- giving up

    def release_failed(self, held: ClaimsHeld) -> None:
        """Drop the claims a commit that certainly did not land took fresh (moves keep their prev)."""
        for (table, text), claim in held.items():
            if claim.prev is None:
                self._drop(table, text, claim.owner, claim.rev)

    def release_given_up(self, plan: Plan, revision: int) -> None:
        """After ``plan`` landed at ``revision``: drop the claims of the values its objects gave up.

        Sent without waiting for the reply: the commit has landed, and a claim
        left behind is only a claim whose owner does not hold the value (the
        next claimer takes it over). A claim of this store waits for the drop
        of the same value first (:meth:`_given_up`), so a value given up and
        taken again in this process never finds its own leftover.
        """
        for dropped in plan.unclaims:
            # Only while the giver still owns it: a claim tied to a later revision may belong to a commit in
            # flight that takes the value again. The condition decides, so no read of the claim comes first.
            statement = (L.W_CLAIM_GIVE_UP, (self._p.ns, dropped.table, dropped.text, dropped.owner, revision))
            slot = (dropped.table, dropped.text)
            try:
                pending = self._p.store.start_apply([statement])
            except errors.NbdbError as exc:
                _not_dropped(slot, exc)
                continue
            with self._lock:
                earlier = self._giving_up.pop(slot, None)
                self._giving_up[slot] = pending
            if earlier is not None:
                _settle_drop(slot, earlier)
        self._reap()

    def _given_up(self, table: str, text: str) -> None:
        """Wait for this store's drop of the claim of ``(table, text)``, if one is in flight."""
        with self._lock:
            pending = self._giving_up.pop((table, text), None)
        if pending is not None:
            _settle_drop((table, text), pending)

    def _reap(self) -> None:
        """Forget the drops whose replies came."""
        with self._lock:
            finished = [(slot, pending) for slot, pending in self._giving_up.items() if pending.done()]
            for slot, _ in finished:
                del self._giving_up[slot]
        for slot, pending in finished:
            _settle_drop(slot, pending)

    def close(self) -> None:
        """Wait for the drops in flight (each within the store's request timeout)."""
        with self._lock:
            pending = list(self._giving_up.items())
            self._giving_up.clear()
        for slot, reply in pending:
            _settle_drop(slot, reply)

    def _drop(self, table: str, text: str, owner: uuid.UUID, rev: int) -> None:
        try:
            self._p.store.apply([(L.W_CLAIM_DROP, (self._p.ns, table, text, owner, rev))])
        except errors.NbdbError as exc:
            _not_dropped((table, text), exc)


def _settle_drop(slot: tuple[str, str], pending: PendingApply) -> None:
    try:
        pending.result()
    except errors.NbdbError as exc:
        _not_dropped(slot, exc)


def _not_dropped(slot: tuple[str, str], exc: errors.NbdbError) -> None:
    # A claim left behind is settled by the next claimer (its owner does not hold the value).
    log.debug("could not drop the claim of %s %s: %s", *slot, exc)
