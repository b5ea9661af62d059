"""Deleting with ``cascade=True``: the dependents found through references, in one commit.

Dependents whose reference is required are deleted too (recursively); an
optional or list reference is cleared instead — unless clearing it breaks
the dependent's own rules, in which case it goes as well.

A plain delete plans too (:func:`weak_drops`): its target is dropped from the weak
references to it (``Reference(..., weak=True)``) in the same commit, as
ovsdb-server drops them; every other referrer is left for the backend to
refuse (ReferenceError), and so is a weak one the referrer cannot lose.

Objects a plain delete takes along: a model's ``nbdb_owned_by`` names its
required references to an owner that holds it alone (OVSDB's non-root rows:
a router port's gateway chassis, an HA chassis group's chassis). ovsdb-server
collects such a row with the last row holding it (``ovn-nbctl lrp-del``); a
plain delete of the owner deletes them in the same commit, on every backend,
and drops the weak references to them as to the owner.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence, Set
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

from nbdb import errors
from nbdb.codec import decode
from nbdb.models.base import Model, RefSpec, all_models, model_for_table, registry_generation
from nbdb.spi import Backend, Delete, RefKey, WriteOp
from nbdb.writes import delete_of, put_of

__all__ = [
    "AFRESH",
    "ALONE_FIRST",
    "WALK_FIRST",
    "Walk",
    "cascade_ops",
    "drops_of",
    "learn_order",
    "owns",
    "plain_delete_plans",
    "read_refusal",
    "store_decides",
    "took_along",
    "walk_deletes",
    "weak_drops",
    "weakly_referenced",
    "weigh_refusal",
    "without_weak",
]

M = TypeVar("M", bound=Model)


_planned_targets: tuple[int, frozenset[str], frozenset[str], dict[str, tuple[bool, bool]]] = (
    -1,
    frozenset(),
    frozenset(),
    {},
)
"""The tables some model defined holds a weak reference to, those some model is owned by (``nbdb_owned_by``),
what :func:`plain_delete_plans` answers for each of them, and the registry generation they were read at."""

_NO_PLAN = (False, False)


def _planned() -> tuple[frozenset[str], frozenset[str], dict[str, tuple[bool, bool]]]:
    global _planned_targets
    generation, weak, owners, plans = _planned_targets
    now = registry_generation()
    if generation != now:
        weak = frozenset(spec.target for model in all_models() for spec in model.nbdb_references if spec.weak)
        owners = frozenset(
            spec.target for model in all_models() for spec in model.nbdb_references if _owning(model, spec)
        )
        plans = {table: WALK_FIRST if table in owners else ALONE_FIRST for table in weak | owners}
        _planned_targets = (now, weak, owners, plans)
    return weak, owners, plans


def _targets() -> tuple[frozenset[str], frozenset[str]]:
    weak, owners, _ = _planned()
    return weak, owners


def _owning(model: type[Model], spec: RefSpec) -> bool:
    """Whether ``spec`` of ``model`` names the object's owner (in ``nbdb_owned_by``).

    That it is a required single strong reference is checked when the class is defined.
    """
    return spec.field in model.nbdb_owned_by


def weakly_referenced(table: str) -> bool:
    """Whether a plain delete of a row of ``table`` plans: a model defined holds a weak reference to it,
    or is owned by it (``nbdb_owned_by``).

    Asked at every delete: the tables are read from the models once, and again only after a model
    class is defined (a walk of every model's references cost 2-4 µs, a third of a delete in process).
    """
    weak, owners = _targets()
    return table in weak or table in owners


def plain_delete_plans(table: str, last: Mapping[str, tuple[bool, bool]]) -> tuple[bool, bool]:
    """Whether a delete of a row of ``table`` (a plain one, or one queued in a transaction) plans
    (:func:`weakly_referenced`), and whether it walks before the store sees it (its plan's first try).

    The rule both kinds of delete follow, one hint per table: ``last`` (kept by the Database, written with
    :func:`learn_order`) holds :data:`WALK_FIRST` if the last delete of that table that committed took
    something along or dropped a weak reference, :data:`ALONE_FIRST` if it did neither. Before any (absent),
    an owner's walks (:func:`owns`: a meter's bands always hold it; sent alone it would be refused for the
    objects it takes along, and committed again), another's goes alone, planned once refused only (most
    have no weak referrer: a port in no port group), staying one request without a read first. Which comes
    first is all the hint decides: a lone delete refused plans, a walk finding nothing commits the delete
    alone, and both end alike.
    """
    generation, _, _, plans = _planned_targets
    if generation != registry_generation():
        plans = _planned()[2]
    plan = plans.get(table, _NO_PLAN)
    if plan is _NO_PLAN:
        return plan  # (most tables: no hint to ask)
    return last.get(table, plan)


def store_decides(corrupt: errors.CorruptRecordError, refusal: errors.NbdbError | None) -> None:
    """The rule for a delete's walk (a plain delete's, or a transaction's deletes', never a cascade's) that read
    a referrer another writer corrupted: whether that one is owned or weak cannot be told, and it still holds
    the target. Before the store saw the deletes (``refusal`` None) this returns: they go alone and the
    store's verdict decides, as when the hint sends them alone first (so the outcome does not depend on it).
    Once the store refused them (``refusal``), its refusal stands, raised from ``corrupt``."""
    if refusal is not None:
        raise refusal from corrupt


WALK_FIRST = (True, True)
"""A table's hint (:func:`plain_delete_plans`): its last delete took something along; the next walks first."""

ALONE_FIRST = (True, False)
"""A table's hint (:func:`plain_delete_plans`): its last delete took nothing along; the next goes alone first."""


def learn_order(last: dict[str, tuple[bool, bool]], table: str, walked: bool, took: bool) -> None:
    """Keep in ``last`` what a committed delete of a row of ``table`` that walked first (``walked``) or went
    alone first took along (``took``), for the next (:func:`plain_delete_plans`); written when it changes only."""
    if walked != took:
        last[table] = WALK_FIRST if took else ALONE_FIRST


def took_along(walk: Walk, skip: Set[RefKey]) -> frozenset[str]:
    """The tables of the roots of ``walk`` whose delete takes something along (an object they own) or drops a
    weak reference to them from a referrer not in ``skip`` (the transaction writes those itself, dropping it
    without a walk): what a committed plan made from ``walk`` tells :func:`plain_delete_plans`. A referrer
    holding a root strongly is not counted: the commit went through, so the transaction deletes or moves it."""
    roots = frozenset(walk.keys)
    tables = {table for table, _ in roots}
    found: set[str] = set()
    for obj, weak_only in (
        *((obj, False) for obj in walk.owned.values()),
        *((obj, True) for key, obj in walk.referrers.items() if key not in skip),
    ):
        for spec in obj.nbdb_references:
            if spec.target in tables and spec.target not in found and (spec.weak or not weak_only):
                if any((spec.target, i) in roots for i in spec.ids(obj)):
                    found.add(spec.target)
    return frozenset(found)


def owns(table: str) -> bool:
    """Whether a model defined is owned by rows of ``table`` (``nbdb_owned_by``): their deletes take it along."""
    return table in _targets()[1]


Known = Mapping[RefKey, Mapping[RefKey, Model | None]]
"""Referrers of some targets the caller has read already (a store's refusal named them all), by target: each
referrer's stored object (None: not found). Neither listed nor read again (see :func:`read_refusal`)."""


AFRESH: Known = MappingProxyType({})
"""What :func:`read_refusal` returns for a stale refusal: nothing known, the walk lists every referrer again."""


def read_refusal(
    backend: Backend, target: RefKey, referrers: Sequence[RefKey], fixed: Collection[RefKey] = ()
) -> Known | None:
    """The ``referrers`` a store named refusing ``target``'s plain delete, read, for the walk that plans
    the delete again (its ``known``); None if the refusal stands; :data:`AFRESH` if it is stale.

    It stands when one of them holds a reference to ``target`` that the delete can neither drop (weak)
    nor take along (an object ``target`` owns), or cannot be read (another writer corrupted it):
    planning the delete again cannot help. It is stale when one of them is gone or no longer holds
    ``target`` (another writer let go of it meanwhile, and may have put it in another referrer the
    store did not name): the walk lists the referrers again, and the caller does not weigh the plan
    against the refused one (it was made from what the store held then), its attempts still bounded.
    Otherwise the walk starts from these reads rather than listing and reading the referrers again.
    Every one is read here, after the refusal, never taken from a copy read before the refused commit (the
    walk that planned it): a referrer that turned weak or went away between that walk and this read refuses
    nothing, and judged from the old copy it would (a switch's 40,000 ports, held by the refused plan's walk,
    are read again to refuse its delete: the price of judging from what the store holds).
    ``fixed``: referrers the store named that this Database cannot read (``ReferenceError.unseen``: OVSDB's
    rows of another namespace or client) or no plan of it can drop (``ReferenceError.undroppable``: OVSDB's
    second parents): the refusal stands (read here, they looked gone or not holding the target, and the
    delete was planned and refused a second time).
    """
    if fixed:
        return None
    read: dict[RefKey, Model | None] = {}
    stale = False
    keys = list(referrers)
    for key, record in zip(keys, backend.read_many(keys), strict=True):
        if record is None:
            stale = True  # gone since
            continue
        try:
            obj = decode(model_for_table(key[0]), record)
        except errors.CorruptRecordError:
            return None  # a referrer another writer corrupted: no plan can drop it or take it along
        read[key] = obj
        holds = False
        for spec in obj.nbdb_references:
            if spec.target == target[0] and target[1] in spec.ids(obj):
                holds = True
                if _owning(type(obj), spec):
                    break  # taken along with the target, whatever else it holds
                if not spec.weak or without_weak(obj, {target}) is None:
                    return None
        stale = stale or not holds
    return AFRESH if stale else {target: read}


def weigh_refusal(
    backend: Backend, refusal: errors.ReferenceError, stale_named: frozenset[RefKey] | None
) -> tuple[Known, frozenset[RefKey] | None] | None:
    """A store's ``refusal`` of a delete that names every referrer of its target, weighed for the next plan, by
    a plain delete and a transaction's alike: None if it stands, else the named referrers as read
    (:func:`read_refusal`; :data:`AFRESH` if it is stale) and, if stale, the referrers it named (the
    ``stale_named`` to weigh the next refusal against; None if not stale).

    Named stale twice running, the same ones (``stale_named``), it stands: the store's own record of who
    refers holds one that does not (a damaged index, which no number of tries mends).
    """
    assert refusal.target is not None and refusal.referrers is not None
    read = read_refusal(backend, refusal.target, refusal.referrers, refusal.unseen + refusal.undroppable)
    if read is None:
        return None
    if read is not AFRESH:
        return read, None
    named = frozenset(refusal.referrers)
    if named == stale_named:
        return None
    return read, named


def cascade_ops(backend: Backend, root: Delete) -> list[WriteOp]:
    """The deletes and updates that make deleting ``root`` with ``cascade=True`` leave no reference dangling.

    (A plain delete plans with :func:`weak_drops`.)
    """
    deletes: dict[RefKey, WriteOp] = {(root.table, root.id): root}
    updates: dict[RefKey, Model] = {}
    level = [(root.table, root.id)]
    while level:
        # The referrers of a whole level in batched reads (Backend.referrers_of), not a read per
        # dependent: a switch's 40,000 ports were 40,000 reads, each on Redis copying the last
        # commit's log entry (quadratic when one transaction made the ports).
        found = backend.referrers_of(level)
        # Their objects, read in batches too (Backend.read_many): one not found (deleted since it
        # was listed, or a referrer entry another writer left that names no object) has nothing to
        # delete or clear (the target's own delete checks its entries).
        wanted = list(dict.fromkeys(s for got in found.values() for s in got if s not in deletes and s not in updates))
        objects = _read(backend, wanted)
        level = []
        for target, sources in found.items():
            _plan_target(target, sources, objects, deletes, updates, level, backend.unwritable)
    ops: list[WriteOp] = list(deletes.values())
    ops += [put_of(obj, obj.version)[0] for obj in updates.values()]
    return ops


def _read(backend: Backend, keys: Sequence[RefKey]) -> dict[RefKey, Model | None]:
    """The stored objects of ``keys``, decoded, in one batch (None: not found)."""
    return {
        key: None if record is None else decode(model_for_table(key[0]), record)
        for key, record in zip(keys, backend.read_many(keys), strict=True)
    }


def _plan_target(
    target: RefKey,
    sources: list[RefKey],
    objects: Mapping[RefKey, Model | None],
    deletes: dict[RefKey, WriteOp],
    updates: dict[RefKey, Model],
    doomed_next: list[RefKey],
    unwritable: Callable[[str], str | None],
) -> None:
    """Delete or clear each referrer of ``target``; the referrers deleted join ``doomed_next``.

    A referrer of a table the store cannot write (``unwritable``: :meth:`nbdb.spi.Backend.unwritable`) is
    not rewritten: such a store drops a weak reference to a deleted row itself, as ovsdb-server does
    (planning the drop made every delete of a load balancer in OVN's ``Load_Balancer_Group`` raise
    UnsupportedError in a namespace), and refuses the delete for a strong one.
    """
    for source in sources:
        if source in deletes:
            continue
        obj = updates.get(source)
        if obj is None:
            obj = objects.get(source)
        if obj is None:
            continue  # not found when read (see cascade_ops)
        changes: dict[str, Any] = {}
        doomed = False
        for spec in obj.nbdb_references:
            if spec.target != target[0] or target[1] not in spec.ids(obj):
                continue
            if spec.many:
                changes[spec.field] = [i for i in getattr(obj, spec.field) if i != target[1]]
            elif spec.optional:
                changes[spec.field] = None
            else:
                doomed = True
        if not doomed and changes and unwritable(source[0]) is None:
            try:
                updates[source] = obj.replace(**changes)
            except errors.ValidationError:
                # Clearing the reference breaks the model's own rules (an ACL must belong to a
                # switch or a port group): it goes too.
                doomed = True
        if doomed:
            updates.pop(source, None)
            deletes[source] = delete_of(obj)
            doomed_next.append(source)


def without_weak(obj: M, doomed: Set[RefKey]) -> M | None:
    """``obj`` with the ``doomed`` targets dropped from its weak references (``obj`` itself if it holds none).

    None if it cannot lose one: a required weak reference, or a loss that breaks the model's own rules.
    """
    changes: dict[str, Any] = {}
    for spec in obj.nbdb_references:
        if not spec.weak:
            continue
        gone = {i for i in spec.ids(obj) if (spec.target, i) in doomed}
        if not gone:
            continue
        if spec.many:
            changes[spec.field] = [i for i in getattr(obj, spec.field) if i not in gone]
        elif spec.optional:
            changes[spec.field] = None
        else:
            return None
    if not changes:
        return obj
    try:
        return obj.replace(**changes)
    except errors.ValidationError:
        return None


class Walk(NamedTuple):
    """What deleting ``keys`` reaches in the store: the objects they own, recursively, and the other referrers."""

    keys: tuple[RefKey, ...]
    owned: dict[RefKey, Model]
    referrers: dict[RefKey, Model]
    listed: dict[RefKey, list[RefKey]]
    """The referrers of each target it listed (or took from ``known``), as listed."""
    read: dict[RefKey, Model | None]
    """Every referrer's stored copy it read (or was given), by key (None: not found)."""


def _referrers_of(
    backend: Backend,
    level: Sequence[RefKey],
    known: Known | None,
    lists: Mapping[RefKey, Sequence[RefKey]] | None = None,
) -> dict[RefKey, list[RefKey]]:
    """The referrers of each of ``level``: those ``known`` or listed already (``lists``) as they are, the others
    listed in one batch."""
    if not known and not lists:
        return backend.referrers_of(level)
    found = {target: list(known[target]) for target in level if target in known} if known else {}
    if lists:
        found.update((target, list(lists[target])) for target in level if target in lists and target not in found)
    rest = [target for target in level if target not in found]
    if rest:
        found.update(backend.referrers_of(rest))
    return found


def walk_deletes(
    backend: Backend,
    roots: Sequence[RefKey],
    known: Known | None = None,
    written: Mapping[RefKey, Model] | None = None,
    skip: Set[RefKey] = frozenset(),
    reads: Mapping[RefKey, Model | None] | None = None,
    lists: Mapping[RefKey, Sequence[RefKey]] | None = None,
) -> Walk:
    """The stored objects deleting ``roots`` takes along (``nbdb_owned_by``) and the other referrers it reaches.

    A transaction walks before its first try the deletes :func:`plain_delete_plans` says walk first, and
    every delete once the store refused them: the owned objects make its own writes of them deletes (as a
    plain delete of the owner treats their stored copies, see :class:`nbdb.transaction.Transaction`), and
    :func:`drops_of` plans its next try from the same reads.
    ``known``: referrers read already (see :data:`Known`). ``written``: the transaction's own updates, by
    key: an object's owner is the one its written copy names (one it moves to an owner not deleted stays,
    as ovsdb-server keeps a row another row references after the commit). ``skip``: referrers not read (the
    transaction writes them itself, see :func:`weak_drops`). ``reads`` and ``lists``: stored copies of referrers
    (None: not found) and the referrers of targets, by target, read and listed already (by another walk since
    the same refusal, :attr:`Walk.read` and :attr:`Walk.listed`), not read or listed again.
    """
    return Walk(tuple(roots), *_owned_and_referrers(backend, roots, skip, known, written, reads, lists))


def _owned_and_referrers(
    backend: Backend,
    roots: Sequence[RefKey],
    skip: Set[RefKey],
    known: Known | None,
    written: Mapping[RefKey, Model] | None = None,
    reads: Mapping[RefKey, Model | None] | None = None,
    lists: Mapping[RefKey, Sequence[RefKey]] | None = None,
) -> tuple[dict[RefKey, Model], dict[RefKey, Model], dict[RefKey, list[RefKey]], dict[RefKey, Model | None]]:
    """The stored objects ``roots`` own, recursively, and the other stored referrers of them and of ``roots``
    (but those in ``skip``), each by key; ``known``: referrers read already (see :data:`Known`), each read
    once whatever the targets it refers to; ``written``: copies whose owner counts instead of the stored
    copy's (see :func:`walk_deletes`); ``reads``, ``lists``: copies read and referrers listed already; with what
    it listed and read."""
    level = [root for root in roots if weakly_referenced(root[0])]
    doomed = set(level)
    owned: dict[RefKey, Model] = {}
    referrers: dict[RefKey, Model] = {}
    read: dict[RefKey, Model | None] = {key: obj for got in known.values() for key, obj in got.items()} if known else {}
    if reads:
        read.update(reads)
    listed: dict[RefKey, list[RefKey]] = {}
    while level:
        found = _referrers_of(backend, level, known, lists)
        listed.update(found)
        wanted = list(dict.fromkeys(s for got in found.values() for s in got if s not in skip and s not in doomed))
        unread = [key for key in wanted if key not in read]
        if unread:
            read.update(_read(backend, unread))
        level = []
        for key in wanted:
            obj = read[key]
            if obj is None:
                continue  # gone since it was listed (see cascade_ops)
            mine = written.get(key, obj) if written else obj
            if any(
                _owning(type(mine), spec) and (spec.target, getattr(mine, spec.field)) in doomed
                for spec in mine.nbdb_references
            ):
                doomed.add(key)
                owned[key] = obj
                referrers.pop(key, None)
                if weakly_referenced(key[0]):
                    # Listed only when a referrer can hold it weakly or own it: another is the store's
                    # to refuse (a meter's bands: one read less for every meter deleted).
                    level.append(key)
            elif backend.unwritable(key[0]) is None:
                referrers[key] = obj
            # else: a table the store cannot write, which drops the weak references itself (see _plan_target)
    return owned, referrers, listed, read


def weak_drops(
    backend: Backend, roots: Sequence[Delete], skip: Set[RefKey], known: Known | None = None
) -> list[WriteOp]:
    """The writes that drop every one of ``roots`` from the weak references of its stored referrers,
    and delete the objects they own (``nbdb_owned_by``, recursively; their weak referrers lose them too).

    For a transaction's deletes, planned together (a port group losing two ports it deletes is one
    update, not two that conflict), and a plain delete's (``[root]``, nothing to skip; a read is made
    only for a table a weak reference can point to or a model is owned by). Referrers in ``skip`` (the
    transaction writes them itself) are left to the caller; one that cannot lose a reference is left
    for the backend to refuse, and so is every referrer that is neither weak nor owned. ``known``:
    referrers read already (see :data:`Known`).
    """
    keys = [(root.table, root.id) for root in roots]
    return drops_of(walk_deletes(backend, keys, known, skip=skip), frozenset())


def drops_of(walk: Walk, skip: Set[RefKey]) -> list[WriteOp]:
    """The deletes of what ``walk`` found owned and the weak drops of its referrers, but of those in ``skip``
    (the transaction writes them itself)."""
    ops: list[WriteOp] = [delete_of(obj) for key, obj in walk.owned.items() if key not in skip]
    gone = frozenset([*walk.keys, *walk.owned])
    for key, obj in walk.referrers.items():
        if key in skip:
            continue
        new = without_weak(obj, gone)
        if new is not None and new is not obj:
            ops.append(put_of(new, obj.version)[0])
    return ops
