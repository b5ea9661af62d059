"""``with db.transaction() as txn:`` — writes collected and committed together, all or nothing."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TypeVar, cast
from uuid import UUID

from nbdb import errors
from nbdb.cascade import (
    AFRESH,
    Known,
    Walk,
    drops_of,
    learn_order,
    owns,
    plain_delete_plans,
    store_decides,
    took_along,
    walk_deletes,
    weakly_referenced,
    weigh_refusal,
    without_weak,
)
from nbdb.commit_context import CommitContext
from nbdb.models.base import Model, RefSpec, committed_all
from nbdb.revision import Revision
from nbdb.spi import ANY_VERSION, Backend, Delete, LockHandle, Mutate, Put, RefKey, WriteOp
from nbdb.writes import (
    FieldMutation,
    as_stored,
    delete_of,
    may_take,
    mutate,
    mutate_in_turn,
    mutation_args,
    mutation_of,
    put_of,
)

__all__ = ["Transaction"]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Model)

_REBASES = 50
"""How often a transaction re-applies its mutations, or settles a may_exist/if_exists op, before giving up."""


@dataclass(slots=True)
class _Step:
    """One queued write and what it became."""

    op: WriteOp | Mutate | None = None
    planned: Model | None = None
    """The stored copy a put will leave (the caller's object is not kept: a transaction of many
    writes would hold every one of them, and its containers, until the commit)."""
    may_exist: bool = False
    if_exists: bool = False
    mutation: tuple[type[Model], UUID, FieldMutation, FieldMutation] | None = None
    result: Model | None = None
    done: bool = False
    """Settled without a write (the object existed, or was already gone)."""
    onto: _Step | None = None
    """A mutate of an object this transaction creates: the create's step, whose write it was folded into
    (its result is the create's), until a ``may_exist`` create takes a stored object; then, for each mutate
    of that object after the first, the first's step, which applies it too (see :meth:`Transaction._unfold_taken`)."""
    then: list[tuple[FieldMutation, FieldMutation]] | None = None
    """The ``(add, remove)`` of the later mutates joined to this one, applied after its own, in turn."""


@dataclass(slots=True)
class _Plan:
    """What :meth:`Transaction.commit` carries from one try to the next: what its deletes doom, and how the
    weak drops of the next try are planned."""

    doomed: frozenset[RefKey]
    """The targets the transaction deletes that a weak reference may point to, and the objects they own found."""
    order: dict[str, tuple[bool, bool]]
    """The Database's per-table hint of whether deletes walk first (:func:`nbdb.cascade.plain_delete_plans`)."""
    tables: dict[str, bool]
    """Each table whose rows the transaction deletes and whose deletes plan, with whether they walked first."""
    unwalked: bool
    """Whether an owner's deletes went to the store unwalked (alone first): a refusal the walk would have
    spared (a unique value or a version an object they own holds) walks them then, before it stands."""
    plan_weak: bool = False
    """Whether each try plans weak drops beside its ops."""
    replanned: list[WriteOp] | None = None
    """The weak drops planned when the store refused the last try."""
    walked: Walk | None = None
    """What the walk for the owned objects read: the next plan's reads."""
    planned_from: Walk | None = None
    """The walk the last try's drops were planned from (what it took along)."""
    stale_named: frozenset[RefKey] | None = None
    """The referrers the last (stale) refusal named."""


@dataclass(slots=True)
class _Try:
    """One try of :meth:`Transaction.commit`: its live steps and ops (the drops last), in call order."""

    live: list[_Step | Put] = field(default_factory=list)
    """The steps that write, in the order of their ops."""
    ops: list[WriteOp | Mutate] = field(default_factory=list)
    drops: list[WriteOp] = field(default_factory=list)
    """The weak drops (and what the deletes take along) at the end of ``ops``."""
    own: set[RefKey] | None = None
    """The keys the steps' own ops write, once drops are planned (not dropped again)."""


def _creates(op: WriteOp | Mutate) -> bool:
    """Whether ``op`` creates an object (no stored copy for a walk to read)."""
    return isinstance(op, Put) and op.expect_version == 0


def _delete_instead(put: Put) -> Delete:
    """The delete of what the update ``put`` writes, at the version and revision it expects (its CAS kept)."""
    return Delete(
        put.table,
        put.id,
        put.topic,
        put.expect_version,
        put.old_refs,
        old_unique=put.old_unique,
        expect_written=put.expect_written,
    )


def _members_of(given: object) -> list[object]:
    """A mutation's members of one field (a list, tuple or set, or None: none) as a list."""
    return [] if given is None else list(cast("Iterable[object]", given))


def _id_of(member: object) -> object:
    """The id a reference member names (a model, a UUID or its text); the member itself if it names none."""
    if isinstance(member, Model):
        return member.id
    if isinstance(member, str):
        try:
            return UUID(member)
        except ValueError:
            return member
    return member


def _weigh_named(
    backend: Backend,
    refusal: errors.ReferenceError,
    stale_named: frozenset[RefKey] | None,
    mine: Sequence[WriteOp | Mutate],
    dropped: bool,
) -> tuple[Known | None, dict[RefKey, Model | None], bool, frozenset[RefKey] | None] | None:
    """A store's ``refusal`` of a transaction's delete that names every referrer of its target, weighed: None if
    it stands, else what the walks that plan the next try start from: the referrers known (``known`` of
    :func:`nbdb.cascade.walk_deletes`; None: they are listed again), those read here (not read again), whether
    it is stale, and the referrers it named if so (``stale_named``, for the next refusal).

    One no plan can drop or take along (a port of a switch deleted here) refuses any, without walking them
    again. One that let go of the target meanwhile makes it stale: the walk lists the referrers again, and its
    plan is not weighed against the refused one; named stale twice running, the same ones, it stands (see
    :meth:`nbdb.Database.delete`). The named referrers are read after the refusal, never weighed from the copies
    the refused try's walk read before its commit: one that turned weak or went away since refuses nothing.
    ``mine``: the refused commit's own writes, beside its drops (``dropped``): with
    drops or writes other than deletes and creates, the store named those still pointing to the target once
    they are applied, not those they moved away, so the walk, which plans from the stored copies, lists them
    again (a group of a switch deleted here that the transaction moves to another switch goes with it, as when
    it is refused unnamed).
    """
    weighed = weigh_refusal(backend, refusal, stale_named)
    if weighed is None:
        return None
    known, named = weighed
    stale = known is AFRESH
    read_since = dict(known.get(cast("RefKey", refusal.target), {}))  # (none if stale)
    return (
        None if stale or dropped or not all(isinstance(op, Delete) or _creates(op) for op in mine) else known,
        read_since,
        stale,
        named,
    )


class Transaction:
    """Writes collected by ``with db.transaction() as txn:`` and committed on exit.

    All or nothing where the backend's capabilities say ``atomic``. After the
    block, ``results`` holds the stored copy of each created, updated or
    mutated object (None for deletes), in call order, and ``revision`` the
    commit's revision. With ``fence=lock``, the commit applies only while
    that lock is held (LockLostError otherwise).

    A ``create(..., may_exist=True)`` whose unique value or id is taken (by an
    object of its topic) becomes the object that holds it, a ``delete(..., if_exists=True)`` of an object that
    is gone does nothing, and a ``mutate`` is re-applied to whatever version
    is stored when another writer got there first: the rest of the
    transaction commits as one either way.

    Made by :meth:`nbdb.Database.transaction`, which hands it the Database's
    :class:`~nbdb.commit_context.CommitContext` (checks, the commit seam,
    revision stamps) and its ``get``.
    """

    def __init__(
        self, context: CommitContext, get: Callable[[type[Model], UUID], Model], fence: LockHandle | None = None
    ) -> None:
        self._context = context
        self._get = get
        self._fence = fence
        self._steps: list[_Step | Put] = []
        """The queued writes in call order: a plain create or update as its Put, anything else as a _Step."""
        self.results: list[Model | None] = []
        self.revision: Revision | None = None
        """The commit's revision (for :meth:`nbdb.Cache.wait_for`), once committed."""
        self._finished: str | None = None
        """Why no more writes may be queued ("committed", "abandoned"), once none may."""

    def _refuse(self) -> None:
        # A write queued now would never be committed, yet return its planned copy as if stored.
        raise errors.ValidationError(f"this transaction was {self._finished}: start a new one")

    def create(self, obj: M, *, may_exist: bool = False, ttl: float | None = None) -> M:
        """Queue the creation of ``obj``; returns it as it will be stored (version 1).

        ``may_exist``: if an object of the same topic already holds one of its
        unique values, or is stored under its id, take that object instead (its
        stored copy is the result); one of another topic fails the commit
        (UniqueViolationError, or ConflictError for its id). A later :meth:`mutate` of it applies to
        what the create leaves (the new object or the one taken).

        The copy returned is the plan, frozen and never rewritten by the commit: ``results`` holds what
        was stored (with a later mutate's members, the object taken, or without a weak reference the
        commit dropped).
        """
        if self._finished is not None:
            self._refuse()
        obj = self._context.checked_new(obj, may_exist, ttl)
        put, planned = put_of(obj, 0, ttl, self._context.deferred)
        # A plain put is its own step (its value is the planned copy): no _Step to build and walk.
        self._steps.append(_Step(put, planned, may_exist) if may_exist else put)
        return planned

    def update(self, obj: M) -> M:
        """Queue a compare-and-swap update of ``obj`` (against ``obj.version``).

        Returns the copy it plans to store; ``results`` holds what was stored (without a weak reference
        to an object the transaction deletes, which the commit drops).
        """
        if self._finished is not None:
            self._refuse()
        obj = self._context.checked_stored(obj)
        put, planned = put_of(obj, obj.version, None, self._context.deferred)
        self._steps.append(put)
        return planned

    def delete(
        self,
        obj_or_model: Model | type[Model] | tuple[type[Model], UUID | str],
        id: UUID | str | None = None,
        *,
        if_exists: bool = False,
    ) -> None:
        """Queue the deletion of an object (at its version) or of ``Model, id`` or a ``(Model, id)`` key (any version).

        ``if_exists``: nothing to do, not an error, if it is gone by then.
        Weak references to it are dropped in the commit, as :meth:`nbdb.Database.delete` drops them:
        from the stored referrers, and from this transaction's own writes (which keep their
        compare-and-swap; ``results`` holds what they stored), as ovsdb-server drops them. The objects
        it owns (``nbdb_owned_by``) go with it, as with a plain delete, and are deleted objects for this
        transaction's own writes too: an update or mutate of one here becomes its delete (result None).
        Planned before the first commit when a plain delete of it would be (the same rule and per-table
        hint, :func:`nbdb.cascade.plain_delete_plans`): a meter's delete is one commit with its bands.
        """
        if self._finished is not None:
            self._refuse()
        op = self._context.delete_op(obj_or_model, id, if_exists)
        self._steps.append(_Step(op, if_exists=if_exists, done=op is None))

    def mutate(
        self,
        target: Model | tuple[type[Model], UUID | str],
        *,
        add: FieldMutation | None = None,
        remove: FieldMutation | None = None,
    ) -> None:
        """Queue members added to and removed from list, set or map fields of ``target``, whatever its version.

        The result (in ``results``) is the object as stored after the commit.
        """
        if self._finished is not None:
            self._refuse()
        model, uid = self._context.target(target)
        self._steps.append(_Step(mutation=(model, uid, *mutation_args(add, remove))))

    # ---------------------------------------------------------------- commit

    def commit(self) -> None:
        """Commit the queued writes now (the ``with`` block does it on exit, unless it was done already).

        In phases, each a method of its own: the deletes' first plan (:meth:`_plan_deletes`), then per try
        the ops (:meth:`_build_try`) and the weak drops beside them (:meth:`_plan_drops`), the commit through
        the backend with each step's result (:meth:`_commit_try`), a refusal weighed (:meth:`_after_gone`,
        :meth:`_after_refusal`: try again or let it stand), and the outcome published (:meth:`_publish`).
        """
        if self._finished is not None:
            self._refuse()
        steps = self._steps
        if steps and all(type(step) is Put for step in steps):
            # Plain creates and updates only (asked of the steps, not counted as they are queued, so
            # a new kind of step cannot slip through): ~40 ns a step.
            self._commit_puts()
            return
        folded = self._fold_mutates_into_creates()
        plan = self._plan_deletes()
        for _attempt in range(_REBASES):
            attempt = self._build_try(plan, folded)
            self._plan_drops(plan, attempt)
            try:
                results = self._commit_try(attempt)
            except errors.NotFoundError as exc:
                if self._after_gone(attempt, exc):
                    continue
                raise  # (here, not in the method: raised there, it and the method's frame held each other)
            except (errors.ReferenceError, errors.ConflictError) as exc:
                if self._after_refusal(plan, attempt, exc):
                    continue
                raise
            self._publish(plan, attempt, folded, results)
            return
        raise errors.ConflictError("the transaction kept conflicting with concurrent writers; try again")

    def _plan_deletes(self) -> _Plan:
        """The first plan of the queued deletes, before any try: what they doom, and who walks first.

        Weak references to what the transaction deletes are dropped in its commit, as a plain delete drops
        them (see Database.delete): from its own writes now, from the stored referrers once the store refused
        the deletes for one (most targets have none: no referrers read first). The deletes a plain delete of
        the same rows would walk first (plain_delete_plans: an owner's, a meter whose bands always hold it,
        unless its table's last delete took nothing along) walk now, before the first try: sent alone, they
        were refused for the objects they take along and committed a second time.
        """
        doomed = self._drop_doomed_from_own_writes()
        order = self._context.delete_order
        tables, first = self._walk_first(order)
        plan = _Plan(doomed, order, tables, any(not walks and owns(table) for table, walks in tables.items()))
        if first:
            try:
                plan.doomed, walk = self._walk_taking(self._context.backend, first, doomed, None)
            except errors.CorruptRecordError as corrupt:
                store_decides(corrupt, None)  # they go alone: the store's verdict decides, as a plain delete's
                plan.unwalked = True
            else:
                if walk.owned or walk.referrers:  # (else the deletes go alone, as a plain delete's would)
                    plan.walked, plan.plan_weak = walk, True
        return plan

    def _build_try(self, plan: _Plan, folded: bool) -> _Try:
        """One try's steps and ops, in call order, its drops not yet planned.

        The mutates folded into a create that took a stored object apply to that one; each mutate is rebased
        on the stored copy (without its weak references to ``plan.doomed``); steps settled without a write
        are left out.
        """
        steps = self._steps
        attempt = _Try()
        live, ops = attempt.live, attempt.ops
        if folded:
            self._unfold_taken(steps)
        doomed = plan.doomed
        for step in steps:
            if isinstance(step, Put):
                live.append(step)
                ops.append(step)
                continue
            if step.done:
                continue
            if step.mutation is not None:
                self._rebase(step)
                if doomed and isinstance(step.op, Put):
                    # A scalar weak reference of the stored copy (the remove above drops list members).
                    step.op, step.planned = self._without_doomed(step.op, doomed)
            if step.op is not None:
                live.append(step)
                ops.append(step.op)
        return attempt

    def _plan_drops(self, plan: _Plan, attempt: _Try) -> None:
        """Add to ``attempt``'s ops the weak drops (and what its deletes take along), once ``plan`` plans them.

        From the plan a refusal made (``plan.replanned``), else from the walk that read the referrers
        (``plan.walked``), else from a walk of the try's deletes now; each used once.
        """
        if not plan.plan_weak:
            return
        ops = attempt.ops
        own = attempt.own = {(op.table, op.id) for op in ops}
        if plan.replanned is not None:
            drops, plan.replanned = plan.replanned, None
        elif plan.walked is not None:
            drops, plan.planned_from, plan.walked = drops_of(plan.walked, own), plan.walked, None
        else:
            plan.planned_from = walk_deletes(self._context.backend, self._deleted(ops), skip=own)
            drops = drops_of(plan.planned_from, frozenset())
        attempt.drops = drops
        ops += drops

    def _commit_try(self, attempt: _Try) -> dict[int, Model]:
        """Commit ``attempt``'s ops through the backend and set each step's result; the revision is the commit's.

        Returns the result of each plain Put whose version is not the planned one, by the Put's id(). What
        the store refuses is raised, and so is a mutate's read back: the caller weighs them.
        """
        context = self._context
        ops, live = attempt.ops, attempt.live
        results: dict[int, Model] = {}
        if not ops:
            if self._fence is not None:  # nothing to write, but not for a holder that lost the lock
                context.check_fence(self._fence)
            self.revision = context.revision(context.backend.current_revision())
            return results
        result, revision = context.commit(ops, self._fence)
        self.revision = revision
        stamp = context.stamp(result.revision)
        token = context.store_token
        stored: list[Model] = []
        reads: list[tuple[_Step, int]] = []
        versions = result.versions[: len(live)] if attempt.drops else result.versions
        for step, version in zip(live, versions, strict=True):
            if isinstance(step, Put):
                copy: Model = step.value  # type: ignore[assignment]  # put_of's planned copy (no cast() call)
                if copy.version == version:
                    stored.append(copy)
                else:
                    results[id(step)] = as_stored(copy, version, stamp, token)
                continue
            planned = step.planned
            if planned is None:
                if isinstance(step.op, Mutate) and step.mutation is not None:
                    reads.append((step, version))
            elif planned.version == version:
                stored.append(planned)
                step.result = planned
            else:
                step.result = as_stored(planned, version, stamp, token)
        committed_all(stored, stamp, token)
        for step, version in reads:
            # Applied by the store to what it held: read what that made.
            assert step.mutation is not None
            read = self._get(step.mutation[0], step.mutation[1])
            step.result = context.read_back(read, version, result.revision)
        return results

    def _after_gone(self, attempt: _Try, exc: errors.NotFoundError) -> bool:
        """Weigh a NotFoundError of ``attempt``: True to try again (an ``if_exists`` delete's object is gone,
        or a weak referrer its drops planned for), False if it stands."""
        if self._settle_gone(attempt.live, exc):
            return True
        if exc.key is None or not any((op.table, op.id) == exc.key for op in attempt.drops):
            return False
        log.debug("transaction: weak referrer %s is gone; planning the drops again", exc.key)
        return True

    def _after_refusal(self, plan: _Plan, attempt: _Try, exc: errors.ReferenceError | errors.ConflictError) -> bool:
        """Weigh the store's refusal of ``attempt``: True to try again (``plan`` changed for it), False if it stands.

        The objects the deletes own are walked first when the refusal may be theirs (:meth:`_take_owned`):
        found, they go too. A ReferenceError is weighed by :meth:`_replan_after_reference`, any other
        conflict by :meth:`_settle_conflict`.
        """
        mine = attempt.ops[: len(attempt.ops) - len(attempt.drops)]
        known: Known | None = None
        # Referrers' stored copies read since the refusal: no walk after it reads them again.
        read_since: dict[RefKey, Model | None] = {}
        stale = False
        # Whether the objects the deletes own are walked before the refusal is weighed: after every
        # refusal for a reference, and after a unique value's or a version's when the hint sent an
        # owner's deletes alone first (the store refused the commit before weighing them: walked first,
        # the objects they own went in that commit, freeing a name the transaction creates anew; the
        # hint orders the work only).
        walks = plan.unwalked
        if isinstance(exc, errors.ReferenceError):
            # A stored weak referrer of a target deleted here (or one that gained it since the plan
            # read them): planned (again) at once. A plan that comes out the same as the one refused
            # (none the first time) leaves the refusal standing without committing again: the store
            # refused for another reason (a dangling strong reference), which another try cannot cure.
            if not plan.doomed:
                return False
            walks = True
            if exc.target in plan.doomed and exc.referrers is not None:
                # The store named every referrer it refused the delete for (see _weigh_named).
                weighed = _weigh_named(self._context.backend, exc, plan.stale_named, mine, bool(attempt.drops))
                if weighed is None:
                    return False
                known, read_since, stale, plan.stale_named = weighed
        since: Walk | None = None  # a walk made since the refusal
        if walks:
            plan.unwalked = False
            taken = self._take_owned(self._context.backend, mine, plan.doomed, known, read_since, exc)
            if taken is not None and taken[0] is not plan.doomed:
                # Objects the deleted ones own go too: the weak references the transaction's own writes
                # hold to them are dropped, and its own writes of them become their deletes. The weak
                # drops of the next try are planned from the same walk's reads.
                (plan.doomed, plan.walked), plan.plan_weak, plan.replanned = taken, True, None
                log.debug("transaction: refused (%s); the objects its deletes own go with them", exc)
                return True
            # (It found none it did not know of: the next walk lists and reads none of its again.)
            since = None if taken is None else taken[1]
        if isinstance(exc, errors.ReferenceError):
            return self._replan_after_reference(plan, attempt, exc, mine, known, read_since, stale, since)
        return self._settle_conflict(attempt, exc)

    def _replan_after_reference(
        self,
        plan: _Plan,
        attempt: _Try,
        exc: errors.ReferenceError,
        mine: Sequence[WriteOp | Mutate],
        known: Known | None,
        read_since: Mapping[RefKey, Model | None],
        stale: bool,
        since: Walk | None,
    ) -> bool:
        """Plan the weak drops again after the store refused ``attempt`` for a reference: True to try again,
        False (the refusal ``exc`` stands) if the plan comes out the same as the refused one (unless ``stale``).

        The walk starts from the referrers ``known`` and the copies read since the refusal (``read_since``,
        or the reads and listings of ``since``, the walk made since it).
        """
        own = {(op.table, op.id) for op in mine}
        try:
            plan.planned_from = walk_deletes(
                self._context.backend,
                self._deleted(mine),
                known,
                skip=own,
                reads=read_since if since is None else since.read,
                lists=None if since is None else since.listed,
            )
        except errors.CorruptRecordError as corrupt:
            store_decides(corrupt, exc)
            raise
        drops = drops_of(plan.planned_from, frozenset())
        if not stale and {(op.table, op.id) for op in drops} == {(op.table, op.id) for op in attempt.drops}:
            return False
        plan.plan_weak, plan.replanned = True, drops
        log.debug("transaction: a weak referrer refused its deletes; dropping the references")
        return True

    def _settle_conflict(self, attempt: _Try, exc: errors.ConflictError) -> bool:
        """Weigh a conflict (not a reference's) refusing ``attempt``: True to try again, False if it stands.

        Settled when it names the stored object a ``may_exist`` create takes, a weak referrer changed since
        its drops were planned, or an object a mutate changes (rebased on the next try).
        """
        if isinstance(exc, errors.UniqueViolationError):
            return self._settle_existing(attempt.live, exc)
        if self._settle_existing(attempt.live, exc):
            return True
        if exc.key is not None and any((op.table, op.id) == exc.key for op in attempt.drops):
            # Changed since the plan read it: the caller never held its version.
            log.debug("transaction: weak referrer %s changed meanwhile; planning the drops again", exc.key)
            return True
        if not any(isinstance(s, _Step) and s.mutation is not None
                   and (s.mutation[0].nbdb_table, s.mutation[1]) == exc.key for s in attempt.live):  # fmt: skip
            return False
        log.debug("transaction: %s changed meanwhile; mutating it again", exc.key)
        return True

    def _publish(self, plan: _Plan, attempt: _Try, folded: bool, results: Mapping[int, Model]) -> None:
        """After the commit: learn each deleted table's order, fill ``results`` in call order, finish."""
        steps = self._steps
        if plan.tables:
            # What each table's deletes took along, for the next delete of its rows (plain or queued).
            took = (
                took_along(plan.planned_from, cast("set[RefKey]", attempt.own))
                if plan.plan_weak and plan.planned_from is not None
                else frozenset()
            )
            for table, walks in plan.tables.items():
                learn_order(plan.order, table, walks, table in took)
        for step in steps if folded else ():
            if type(step) is _Step and step.onto is not None:
                step.result = step.onto.result  # folded into its create: what the create stored
        # A plain Put's value is its planned copy (typed ``object`` in the SPI): no cast() call per object.
        if results:
            self.results = [results.get(id(s), s.value) if isinstance(s, Put) else s.result for s in steps]  # type: ignore[arg-type]
        else:
            self.results = [s.value if isinstance(s, Put) else s.result for s in steps]  # type: ignore[misc]
        self._steps = []
        self._finished = "committed"

    def _commit_puts(self) -> None:
        """:meth:`commit` of plain creates and updates only (the common transaction): the steps are the ops.

        No step to settle, rebase or read back: one pass over the results, and
        the stored copies are the results when each has its planned version.
        """
        context = self._context
        puts = cast("list[Put]", self._steps)
        result, revision = context.commit(puts, self._fence)
        self.revision = revision
        stamp = context.stamp(result.revision)
        token = context.store_token
        stored: list[Model] = []
        for put, version in zip(puts, result.versions, strict=True):
            copy: Model = put.value  # type: ignore[assignment]  # put_of's planned copy (no cast() call)
            stored.append(copy if copy.version == version else as_stored(copy, version, stamp, token))
        committed_all(stored, stamp, token)
        self.results = stored  # type: ignore[assignment]  # list[Model] is a list[Model | None]
        self._steps = []
        self._finished = "committed"

    def _walk_first(self, order: dict[str, tuple[bool, bool]]) -> tuple[dict[str, bool], list[RefKey]]:
        """Each table whose rows this transaction deletes and whose deletes plan, with whether they walk first
        (:func:`nbdb.cascade.plain_delete_plans`, the plain delete's rule and hint ``order``); the rows of those
        that do."""
        asked: dict[str, bool | None] = {}
        first: list[RefKey] = []
        for step in self._steps:
            if type(step) is _Step and type(step.op) is Delete:
                table = step.op.table
                if table in asked:
                    walks = asked[table]
                else:
                    planned, walks = plain_delete_plans(table, order)
                    walks = asked[table] = walks if planned else None
                if walks:
                    first.append((table, step.op.id))
        return {table: walks for table, walks in asked.items() if walks is not None}, first

    @staticmethod
    def _deleted(ops: Sequence[WriteOp | Mutate]) -> list[RefKey]:
        """The keys ``ops`` delete."""
        return [(op.table, op.id) for op in ops if isinstance(op, Delete)]

    def _take_owned(
        self,
        backend: Backend,
        ops: Sequence[WriteOp | Mutate],
        doomed: frozenset[RefKey],
        known: Known | None,
        reads: Mapping[RefKey, Model | None],
        refusal: errors.NbdbError,
    ) -> tuple[frozenset[RefKey], Walk] | None:
        """Make the stored objects this transaction's deletes own part of what it deletes (:meth:`_walk_taking`).

        Returns the doomed targets with the owned ones (``doomed`` itself if there is none the transaction did
        not know of) and the walk of every delete (its reads plan the weak drops of the next try), or None if
        no deleted object may own one (no walk). ``known``: the referrers the store's refusal named, as read
        to weigh it (see :data:`nbdb.cascade.Known`); ``reads``: copies read since the refusal, not read again.
        ``refusal``: the store's refusal that made it walk; it stands if the walk reads a corrupt referrer
        (:func:`nbdb.cascade.store_decides`).
        """
        deletes = self._deleted(ops)
        if not any(owns(table) for table, _ in deletes):
            return None  # (no read when no deleted object may own one: a port group's members, say)
        try:
            return self._walk_taking(backend, deletes, doomed, known, reads)
        except errors.CorruptRecordError as corrupt:
            store_decides(corrupt, refusal)
            raise

    def _walk_taking(
        self,
        backend: Backend,
        deletes: Sequence[RefKey],
        doomed: frozenset[RefKey],
        known: Known | None,
        reads: Mapping[RefKey, Model | None] | None = None,
    ) -> tuple[frozenset[RefKey], Walk]:
        """Walk ``deletes`` and make the stored objects they own (``nbdb_owned_by``) part of what it deletes.

        As ovsdb-server collects a row whose last owner goes, whatever the same transaction wrote to it:
        this transaction's update or mutate of such an object becomes its delete (an update keeps its
        compare-and-swap), and its own writes lose their weak references to it. A create of a new object
        for an owner it deletes is left for the store to refuse (a new row must be referenced to stay).
        Returns the doomed targets with the owned ones (``doomed`` itself if the walk found none it did not
        know of) and the walk (its reads plan the weak drops of the next try).
        """
        # Ownership from the transaction's written copies: an object its update moves to an owner it does
        # not delete stays (whether or not the owner it leaves holds another), as in ovsdb-server.
        written: dict[RefKey, Model] = {}
        for step in self._steps:
            if isinstance(step, Put):
                put, copy = step, step.value
            elif step.done or not isinstance(step.op, Put):
                continue
            else:
                put, copy = step.op, step.planned
            if put.expect_version != 0 and isinstance(copy, Model):
                written[(put.table, put.id)] = copy
        walk = walk_deletes(backend, deletes, known, written, reads=reads)
        owned = walk.owned
        if owned.keys() <= doomed:
            return doomed, walk
        for index, step in enumerate(self._steps):
            if isinstance(step, Put):
                if (step.table, step.id) in owned and step.expect_version != 0:
                    self._steps[index] = _Step(_delete_instead(step))
                continue
            if step.done or step.onto is not None:
                continue
            if step.mutation is not None:
                key = (step.mutation[0].nbdb_table, step.mutation[1])
                if key in owned:
                    step.mutation, step.then, step.planned = None, None, None
                    step.op = delete_of(owned[key], lineage=False)._replace(expect_version=ANY_VERSION)
            elif isinstance(step.op, Put) and step.op.expect_version != 0 and (step.op.table, step.op.id) in owned:
                step.op, step.planned = _delete_instead(step.op), None
        return self._drop_doomed_from_own_writes(doomed | owned.keys()), walk

    def _drop_doomed_from_own_writes(self, known: frozenset[RefKey] = frozenset()) -> frozenset[RefKey]:
        """Drop the targets this transaction deletes from the weak references its own writes hold; return them.

        As ovsdb-server does at commit: a write keeping (or adding) a weak reference to an object the
        same transaction deletes stores it without that reference, and its result says so. A write
        that cannot lose it (a required weak reference, or a loss that breaks the model's rules) is
        refused: ReferenceError, as for a strong reference.
        """
        # (Asked once a table and once a model: the pass costs a transaction of 50 updates and 50
        # deletes of ports about 2 % of its instructions, docs/benchmarks.md.)
        weak: dict[str, bool] = {}
        found: set[RefKey] = set()
        for s in self._steps:
            if type(s) is _Step and type(s.op) is Delete:
                table = s.op.table
                hit = weak.get(table)
                if hit is None:
                    hit = weak[table] = weakly_referenced(table)
                if hit:
                    found.add((table, s.op.id))
        if known:
            found |= known
        doomed = frozenset(found)
        if not doomed:
            return doomed
        tables = {table for table, _ in doomed}
        holders: dict[type, bool] = {}

        for index, step in enumerate(self._steps):
            if type(step) is _Step and step.mutation is not None:
                # Dropped from what it adds, and removed from what the store holds (a store that
                # mutates natively never shows this process the stored copy; see also _rebase).
                model, uid, given_add, given_remove = step.mutation
                add, remove = dict(given_add), dict(given_remove)
                for spec in model.nbdb_references:
                    ids = [i for table, i in doomed if table == spec.target]
                    if (
                        spec.weak
                        and spec.many
                        and ids
                        and all(
                            type(given) in (list, tuple, set, frozenset) or given is None
                            for given in (add.get(spec.field), remove.get(spec.field))
                        )
                    ):  # (members of another shape are left for mutate() to refuse)
                        if spec.field in add:
                            add[spec.field] = [m for m in _members_of(add[spec.field]) if _id_of(m) not in ids]
                        removed = _members_of(remove.get(spec.field))
                        listed = {_id_of(m) for m in removed}  # (asked again once owned objects join them)
                        remove[spec.field] = [*removed, *(i for i in ids if i not in listed)]
                step.mutation = (model, uid, add, remove)
                continue
            put = step if isinstance(step, Put) else step.op
            if not isinstance(put, Put):
                continue
            held = type(put.value)
            hit = holders.get(held)
            if hit is None:
                refs: tuple[RefSpec, ...] = getattr(held, "nbdb_references", ())
                hit = holders[held] = any(spec.weak and spec.target in tables for spec in refs)
            if hit:
                new, copy = self._without_doomed(put, doomed)
                if new is put:
                    continue
                if isinstance(step, Put):
                    self._steps[index] = new
                else:
                    step.op, step.planned = new, copy
        return doomed

    def _without_doomed(self, put: Put, doomed: frozenset[RefKey]) -> tuple[Put, Model]:
        """``put`` without the weak references to ``doomed`` (itself and its value if it holds none)."""
        planned = cast("Model", put.value)
        kept = without_weak(planned, doomed)
        if kept is planned:
            return put, planned
        if kept is None:
            raise errors.ReferenceError(
                f"{put.table} {put.id} holds a weak reference it cannot lose to an object the same transaction deletes"
            )
        new, copy = put_of(kept, put.expect_version, put.ttl, self._context.deferred)
        # The stored state it replaces is the one the caller's write named (its revision too: the planned
        # copy it is derived from knows none yet), and so is its id's claim.
        replaced = new._replace(
            old_refs=put.old_refs, old_unique=put.old_unique, fresh_id=put.fresh_id, expect_written=put.expect_written
        )
        return replaced, copy

    def _fold_mutates_into_creates(self) -> bool:
        """Fold each mutate of an object this transaction creates into that create's write.

        The mutate applies to what the create leaves: the new object, so the create stores it with the
        members (one write, its result the create's); or, once a ``may_exist`` create took the stored
        object instead, that object, rebased as any mutate, all of them in one step (see
        :meth:`_unfold_taken`). (Refused with a ValidationError before: the mutate's rebase read the store,
        where the new object was not yet.) A mutate queued before the create of its object is still a
        ValidationError: there was nothing to mutate then. True if it folded one.
        """
        created: dict[RefKey, int] = {}
        for index, step in enumerate(self._steps):
            op = step if isinstance(step, Put) else step.op
            if isinstance(op, Put) and op.expect_version == 0:
                created.setdefault((op.table, op.id), index)
        if not created:
            return False
        folded = False
        for index, step in enumerate(self._steps):
            if type(step) is not _Step or step.mutation is None:
                continue
            model, uid, add, remove = step.mutation
            at = created.get((model.nbdb_table, uid))
            if at is None:
                continue
            if at > index:
                raise errors.ValidationError(
                    f"{model.nbdb_table} {uid} is mutated before this transaction creates it:"
                    " queue the mutate after the create, or create it with those members"
                )
            create = self._steps[at]
            if isinstance(create, Put):  # a plain create: a step of its own now, to hold what it stores
                create = self._steps[at] = _Step(create, cast("Model", create.value))
            put, planned = cast("Put", create.op), cast("Model", create.planned)
            new = mutate(planned, add, remove)  # validates the change, as a rebase would
            if new is not planned:
                merged, copy = put_of(new, 0, put.ttl, self._context.deferred)
                create.op, create.planned = merged._replace(fresh_id=put.fresh_id), copy
            step.onto, step.done = create, True
            folded = True
        return folded

    @staticmethod
    def _unfold_taken(steps: Sequence[_Step | Put]) -> None:
        """The mutates folded into a ``may_exist`` create that took the stored object: they apply to that one.

        The create's first mutate becomes a mutate of the stored object, as any; each later one joins it
        (:attr:`_Step.then`), so that the object is written once, with each mutation in turn, and each
        mutate's result is what they all leave. (Each was a step of its own, and the commit was refused:
        the object the caller named once "appears twice in one transaction", under the id of the object
        taken.) Before any step is planned: the first's rebase applies the later ones too.
        """
        firsts: dict[int, _Step] = {}  # by id() of a create that took a stored object: its first mutate
        for step in steps:
            if type(step) is not _Step or step.onto is None or not step.onto.done:
                continue
            create = step.onto
            model, _, add, remove = cast("tuple[type[Model], UUID, FieldMutation, FieldMutation]", step.mutation)
            first = firsts.get(id(create))
            if first is None:
                firsts[id(create)] = step
                step.mutation = (model, cast("Model", create.result).id, add, remove)
                step.onto, step.done = None, False
                continue
            first.then = [*(first.then or ()), (add, remove)]
            step.onto = first  # done (settled by the first's write): its result is the first's

    def _rebase(self, step: _Step) -> None:
        assert step.mutation is not None
        model, uid, add, remove = step.mutation
        current = self._get(model, uid)
        then = step.then or ()
        # Validates the change (and finds one that changes nothing).
        new = mutate_in_turn(current, ((add, remove), *then)) if then else mutate(current, add, remove)
        if new is current:
            step.op, step.planned, step.result = None, None, current
            return
        if self._context.backend.handles_mutations:
            step.op, step.planned = mutation_of(model, uid, add, remove, then), None
            return
        step.op, step.planned = put_of(new, current.version, None, self._context.deferred)

    def _settle_existing(self, live: Sequence[_Step | Put], exc: errors.ConflictError) -> bool:
        """True if ``exc`` names the stored object a ``may_exist`` create takes (or saw go): commit the rest again."""
        unique = exc if isinstance(exc, errors.UniqueViolationError) else None
        if (
            unique is not None
            and unique.existing is not None
            and any(
                (op.table, op.id) == (unique.table, unique.existing)
                for op in (s if isinstance(s, Put) else s.op for s in live)
                if isinstance(op, Put) and op.expect_version == 0
            )
        ):
            # The value's holder is created by this very transaction: not stored, so there is nothing to
            # take, and settling on it again and again ended in a ConflictError naming concurrent writers.
            return False
        for step in live:
            if type(step) is not _Step or not step.may_exist or not isinstance(step.op, Put):
                continue
            op = step.op
            if unique is not None:
                if op.table != unique.table or not any(
                    key.field == unique.field and json.loads(key.value) == unique.value for key in op.unique
                ):
                    continue
            elif exc.key != (op.table, op.id):
                continue  # not its id "already exists"
            assert step.planned is not None
            try:
                existing = may_take(exc, op, type(step.planned), self._get)
            except errors.ConflictError as refused:
                if refused is exc:
                    return False  # another topic's object is not the one asked for (see Database.create)
                raise refused from exc  # nor is another owner's, and may_take says which
            if existing is not None:  # else gone meanwhile: creating it may succeed now
                step.result = existing
                step.done, step.op = True, None
            return True
        return False

    def _settle_gone(self, live: Sequence[_Step | Put], exc: errors.NotFoundError) -> bool:
        for step in live:
            if (
                type(step) is _Step
                and step.if_exists
                and isinstance(step.op, Delete)
                and (step.op.table, step.op.id) == exc.key
            ):
                step.done, step.op = True, None
                return True
        return False

    def __enter__(self) -> Transaction:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            if self._finished is None:  # not committed already by an explicit commit() in the block
                self.commit()
        elif self._finished is None:
            self._finished = "abandoned (its with block raised)"
            self._steps = []
