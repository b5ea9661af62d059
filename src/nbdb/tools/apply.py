"""Making a destination hold a given state: idempotent upserts and deletes, parents first.

The :class:`Applier` knows what the destination holds (the stored copies, with
their per-backend versions) and is told the wanted state of some objects
(a model, or None for "absent"). It writes only the difference, in an order
that never lets a reference dangle:

1. creates and updates, parents before children (:func:`nbdb.tools.order.object_order`);
   a reference to an object not written yet (a cycle) is left out for now,
2. the references left out in step 1,
3. deletes, referrers before the objects they reference.

Every write is an upsert keyed by the object's id (create if absent, else
update to the wanted content; delete if present), so running the same apply
again, or after an interruption, never duplicates nor loses an object. Writes
are grouped into transactions as far as the destination's capabilities allow
(``atomic``: up to ``batch`` objects; ``single-partition``: runs of one table
and topic); a group that fails is retried object by object after re-reading
the objects involved. With ``atomic`` transactions an owned object is written
right after its owner and deleted right before it (:func:`nbdb.tools.order.owned_after`),
and no group, nor a group's retry, separates them: OVSDB refuses a meter
without its bands (OVN's ``Meter.bands`` holds at least one) and the last band
of a meter that stays. An owner deleted as its last owned object moves to another
owner is deleted with that object's update (:meth:`Applier._owners_left`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from nbdb import errors
from nbdb.api import Database
from nbdb.capabilities import Atomicity
from nbdb.codec import plain
from nbdb.models.base import Model, model_for_table
from nbdb.tools.order import ObjectKey, key_of, object_order, owned_after, owner_of

__all__ = ["Applier", "WriteLimitReached", "content", "same_content"]

log = logging.getLogger(__name__)

_FIXED = frozenset({"id", "version", "topic"})
_ATTEMPTS = 5

Op = tuple[ObjectKey, Model | None]
"""Make the object at key look like the model (None: make it absent)."""


class WriteLimitReached(Exception):
    """The applier made as many writes as it was allowed to (``limit``), and more remain."""


def content(obj: Model) -> dict[str, Any]:
    """What a copy must preserve of ``obj``: every field but the per-backend ``version``, and a newer model's."""
    return plain(obj)


def same_content(a: Model | None, b: Model | None) -> bool:
    """Whether ``a`` and ``b`` are the same object with the same content (versions aside)."""
    if a is None or b is None:
        return a is b
    return type(a) is type(b) and content(a) == content(b)


def _updated(current: Model, want: Model) -> Model:
    """``current`` holding ``want``'s content: its fields, and the fields of a newer model it was read with."""
    new = current.replace(**{name: getattr(want, name) for name in type(want).model_fields if name not in _FIXED})
    object.__setattr__(new, "__pydantic_extra__", want.__pydantic_extra__ or None)
    return new


def _within(units: list[list[Op]], room: int, first: bool) -> list[list[Op]]:
    """The first ``units`` whose writes the ``room`` left under a limit holds, never splitting one. ``first``:
    nothing was written yet, so the first unit is taken even if larger (an owner and its children written
    together, a meter and its bands), or a run resumed with the same limit would never go on."""
    kept: list[list[Op]] = []
    size = 0
    for unit in units:
        if room <= 0 or (size + len(unit) > room and (kept or not first)):
            break
        kept.append(unit)
        size += len(unit)
    return kept


class Applier:
    """Writes wanted states into ``db``, tracking what it holds in ``state``.

    ``state`` maps (table, id) to the stored copy in the destination; start it
    from a snapshot of the destination. ``on_write(n)`` is called after every
    n objects written; with ``limit``, :class:`WriteLimitReached` is raised
    once that many writes were made and more remain (to stop a copy midway on purpose). A write is one
    create, update or delete of one object: an object that moved topic takes two (a delete, then a
    create), one on a cycle of references too (a create without the reference, then an update), and
    the limit may fall between the two.
    """

    def __init__(
        self,
        db: Database,
        state: Mapping[ObjectKey, Model] | None = None,
        *,
        batch: int = 200,
        limit: int | None = None,
        on_write: Callable[[int], None] | None = None,
        ttls: Mapping[ObjectKey, float] | None = None,
    ) -> None:
        if batch < 1:
            raise errors.ValidationError("batch must be at least 1")
        self.db = db
        self.ttls: dict[ObjectKey, float] = dict(ttls or {})
        """The ttl to create each expiring object with (the source's)."""
        self.state: dict[ObjectKey, Model] = dict(state or {})
        self.batch = batch
        self.limit = limit
        self.on_write = on_write
        self.writes = 0
        """Objects created, updated or deleted so far."""
        self._atomicity = db.capabilities.transactions

    # ---------------------------------------------------------------- planning

    def apply(self, wanted: Mapping[ObjectKey, Model | None]) -> int:
        """Make the destination hold ``wanted`` (None: absent); returns the number of objects written.

        ``wanted`` must be consistent (what a source held at one revision, or
        the net effect of whole commits on such a state): every reference
        points to an object that is wanted or already in the destination.
        """
        before = self.writes
        puts = [obj for key, obj in wanted.items() if obj is not None and not same_content(self.state.get(key), obj)]
        doomed = [self.state[key] for key, obj in wanted.items() if obj is None and key in self.state]
        if puts:
            first, deferred = self._plan_puts(puts)
            first = self._owners_left(first, doomed)
            try:
                self._run(first)
            except errors.UniqueViolationError as exc:
                # A unique value (a name) that an object to be deleted still holds: an --overwrite copy into a
                # database holding the same names under other ids, or a name freed and taken again in the
                # commits of one batch, stopped here. The deletes nothing that stays depends on go first.
                self._free(wanted, doomed, exc)
                self._run(first)
            self._run([(key_of(obj), obj) for obj in deferred])
        if doomed:
            self._run([(key_of(obj), None) for obj in reversed(self._order(doomed))])
        return self.writes - before

    def _free(
        self, wanted: Mapping[ObjectKey, Model | None], doomed: list[Model], exc: errors.UniqueViolationError
    ) -> None:
        """Delete the objects of ``doomed`` that nothing staying needs, before the puts; else raise ``exc``.

        A referrer this apply updates so that it no longer references a doomed object (a port group moved
        from a port deleted to one re-created with its name) is first written without its references to
        the doomed objects, as its stored copy would otherwise keep them from being deleted. When the store
        named the holder of the unique value and it cannot be freed so, nothing is written: ``exc`` is raised.
        """
        keys = {key_of(obj) for obj in doomed}
        interim: dict[ObjectKey, tuple[Model, set[ObjectKey]]] = {}
        for key, current in self.state.items():
            want = wanted.get(key)
            held = {t for t in current.ref_keys() if t in keys}
            if want is None or not held or held & set(want.ref_keys()):
                continue
            try:
                interim[key] = (self._without(current, held), held)
            except errors.ReferenceError:  # a required reference: the doomed object stays until its referrer goes
                continue
        freed = self._deletable_first(doomed, {key: obj for key, (obj, _) in interim.items()})
        freed_keys = {key_of(obj) for obj in freed}
        if not freed or (exc.existing is not None and (exc.table, exc.existing) not in freed_keys):
            raise exc
        self._run([(key, obj) for key, (obj, held) in interim.items() if held & freed_keys])
        self._run([(key_of(obj), None) for obj in reversed(self._order(freed))])

    def _deletable_first(self, doomed: list[Model], interim: Mapping[ObjectKey, Model]) -> list[Model]:
        """The objects of ``doomed`` that no object staying references, even indirectly, once ``interim`` is written."""
        keys = {key_of(obj) for obj in doomed}
        blocked: set[ObjectKey] = set()
        for key, obj in self.state.items():
            if key not in keys:
                blocked.update(t for t in interim.get(key, obj).ref_keys() if t in keys)
        stack = list(blocked)
        while stack:
            for target in self.state[stack.pop()].ref_keys():
                if target in keys and target not in blocked:
                    blocked.add(target)
                    stack.append(target)
        return [obj for obj in doomed if key_of(obj) not in blocked and key_of(obj) in self.state]

    def needed(self, wanted: Mapping[ObjectKey, Model | None]) -> int:
        """How many objects :meth:`apply` would write for ``wanted`` (not counting deferred references)."""
        return sum(
            1
            for key, obj in wanted.items()
            if (obj is None and key in self.state) or (obj is not None and not same_content(self.state.get(key), obj))
        )

    def _plan_puts(self, puts: list[Model]) -> tuple[list[Op], list[Model]]:
        """Puts in dependency order; a reference to a not-yet-written object is left out and deferred."""
        pending = {key_of(obj) for obj in puts}
        available = set(self.state)
        ops: list[Op] = []
        deferred: list[Model] = []
        ordered = self._order(puts)
        # A reference that neither the destination nor this apply will hold (its target in a topic or model
        # not copied, or a corrupt source record left out) is refused here, before any write. An optional or
        # list one was deferred instead, and its second write failed in the backend with the destination
        # holding most of the copy. A target outside what the destination state tracks may be there: asked.
        outside: dict[ObjectKey, Model] = {}
        for obj in ordered:
            for target in obj.ref_keys():
                if target not in available and target not in pending:
                    outside.setdefault(target, obj)
        for target, obj in outside.items():
            try:
                self.db.get(model_for_table(target[0]), target[1])
            except errors.NotFoundError:
                raise errors.ReferenceError(
                    f"{obj.nbdb_table} {obj.id} references {target[0]} {target[1]}, which is neither copied "
                    "nor in the destination (copy its topic or model too); refused before writing"
                ) from None
            available.add(target)
        for obj in ordered:
            key = key_of(obj)
            missing = {t for t in obj.ref_keys() if t not in available}
            if missing:
                obj_now = self._without(obj, missing)
                deferred.append(obj)
            else:
                obj_now = obj
            ops.append((key, obj_now))
            available.add(key)
        return ops, deferred

    def _owners_left(self, ops: list[Op], doomed: list[Model]) -> list[Op]:
        """``ops`` with the delete of each doomed owner its puts move an owned object away from (with the
        owner's other doomed objects) right after the last such put, in one unit with it (atomic transactions).

        A source whose meter was deleted as its only band moved to another meter: the band's update alone
        (the puts go before the deletes) left the meter without a band, which OVSDB refuses, and the copy
        stopped there. Written with the meter's delete, it is what the source's transaction was. An owner
        that anything else in the destination references is left to the deletes, after its referrers.
        """
        if self._atomicity is not Atomicity.ATOMIC or not doomed:
            return ops
        gone = {key_of(obj) for obj in doomed}
        last: dict[ObjectKey, int] = {}
        for i, (key, want) in enumerate(ops):
            current = self.state.get(key)
            if current is None or want is None:
                continue
            old = owner_of(current)
            if old is not None and old in gone and owner_of(want) != old:
                last[old] = i
        if not last:
            return ops
        owned: dict[ObjectKey, list[Model]] = {}
        for obj in self.state.values():
            owner = owner_of(obj)
            for target in obj.ref_keys():
                if target in last and target != owner:
                    last.pop(target)  # another referrer: the owner's delete waits for the deletes' order
            if owner in last and key_of(obj) in gone:
                owned.setdefault(owner, []).append(obj)
        after: dict[int, list[Op]] = {}
        for owner, i in last.items():
            after.setdefault(i, []).extend([*((key_of(o), None) for o in owned.get(owner, ())), (owner, None)])
        return [op for i, op in enumerate(ops) for op in (op, *after.get(i, ()))]

    def _without(self, obj: Model, missing: set[ObjectKey]) -> Model:
        changes: dict[str, Any] = {}
        for spec in obj.nbdb_references:
            ids = spec.ids(obj)
            gone = [i for i in ids if (spec.target, i) in missing]
            if not gone:
                continue
            target = (spec.target, gone[0])
            if spec.many:
                changes[spec.field] = [i for i in ids if i not in gone]
            elif spec.optional:
                changes[spec.field] = None
            else:  # a target nowhere was refused by _plan_puts: this one is written later (pending)
                raise errors.ReferenceError(
                    f"{obj.nbdb_table} {obj.id} is on a cycle of required references (through "
                    f"{spec.field} -> {target[0]} {target[1]}): it cannot be created before its target"
                )
        return obj.replace(**changes)

    def _order(self, objects: list[Model]) -> list[Model]:
        """``objects`` in the order they are written (deleted: reversed), each after those it references."""
        ordered = object_order(objects)
        return owned_after(ordered) if self._atomicity is Atomicity.ATOMIC else ordered

    # ---------------------------------------------------------------- writing

    def _units(self, ops: list[Op]) -> list[list[Op]]:
        """``ops`` cut into the runs no transaction boundary splits: with atomic transactions, an object
        and the objects it owns next to it (after it as written, before it as deleted: see :meth:`_order`)."""
        if self._atomicity is not Atomicity.ATOMIC:
            return [[op] for op in ops]
        units: list[list[Op]] = []
        keys: set[ObjectKey] = set()
        owners: set[ObjectKey] = set()
        for op in ops:
            # An object's owner as written and as stored: one moved to another owner goes with both.
            mine = {o for obj in (op[1], self.state.get(op[0])) if obj is not None and (o := owner_of(obj)) is not None}
            if units and (mine & (keys | owners) or op[0] in owners):
                units[-1].append(op)
            else:
                units.append([op])
                keys, owners = set(), set()
            keys.add(op[0])
            owners |= mine
        return units

    def _groups(self, ops: list[Op]) -> Iterable[list[list[Op]]]:
        """The transactions ``ops`` are written in, each as its :meth:`_units`."""
        if self._atomicity is Atomicity.NONE:
            for op in ops:
                yield [[op]]
            return
        group: list[list[Op]] = []
        size = 0
        partition: tuple[str, str | None] | None = None
        for unit in self._units(ops):
            op = unit[0]
            obj = op[1] or self.state.get(op[0])
            here = (op[0][0], obj.topic if obj is not None else None)
            if group and (
                size + len(unit) > self.batch or (self._atomicity is Atomicity.SINGLE_PARTITION and here != partition)
            ):
                yield group
                group, size = [], 0
            group.append(unit)
            size += len(unit)
            partition = here
        if group:
            yield group

    def _run(self, ops: list[Op]) -> None:
        ops = [op for op in ops if not self._done(op)]
        for units in self._groups(ops):
            cut = False
            if self.limit is not None:
                kept = _within(units, self.limit - self.writes, self.writes == 0)
                cut, units = len(kept) < len(units), kept
            group = [op for unit in units for op in unit]
            if group and (len(group) == 1 or not self._commit(units)):
                for unit in units:
                    unit = [op for op in unit if not self._done(op)]
                    if len(unit) > 1 and len(units) > 1 and self._commit([unit]):
                        continue  # an owner and its children, written together as they must be
                    for op in unit:
                        if self._full() and not self._done(op):  # a move before it took two writes
                            raise self._limit_reached()
                        self._single(op)
            if cut:
                raise self._limit_reached()

    def _full(self) -> bool:
        return self.limit is not None and self.writes >= self.limit

    def _limit_reached(self) -> WriteLimitReached:
        return WriteLimitReached(f"stopped after {self.writes} writes (limit {self.limit})")

    def _done(self, op: Op) -> bool:
        key, want = op
        return same_content(self.state.get(key), want)

    def _wrote(self, n: int) -> None:
        self.writes += n
        if self.on_write is not None and n:
            self.on_write(n)

    def _commit(self, units: list[list[Op]]) -> bool:
        """Write ``units`` in one transaction; False if it must be retried unit by unit, object by object."""
        group = [op for unit in units for op in unit]
        if any(
            want is not None and (cur := self.state.get(key)) is not None and cur.topic != want.topic
            for key, want in group
        ):
            # An id that moved topic is a delete and a create: not in one transaction. Decided before the
            # transaction opens, as leaving it early commits the writes staged so far, unrecorded and uncounted.
            return False
        staged: list[tuple[ObjectKey, bool]] = []
        try:
            with self.db.transaction() as txn:
                for key, want in group:
                    current = self.state.get(key)
                    if want is None:
                        if current is not None:
                            txn.delete(current)
                            staged.append((key, True))
                    elif current is None:
                        txn.create(want.model_copy(update={"version": 0}), ttl=self.ttls.get(key))
                        staged.append((key, False))
                    else:
                        txn.update(_updated(current, want))
                        staged.append((key, False))
        except (errors.ConflictError, errors.NotFoundError, errors.ReferenceError, errors.UnsupportedError) as exc:
            log.debug("a group of %d writes failed (%s); writing them one by one", len(group), exc)
            return False
        except errors.ValidationError as exc:
            # A commit larger than the destination takes (etcd's max_txn_ops, 128 operations, a --batch of 200):
            # the whole copy stopped with it. Halves are tried, never splitting a unit (an owner and its children);
            # an object that is itself invalid fails alone.
            if len(units) == 1:
                return False
            log.debug("a group of %d writes was refused (%s); writing it in halves", len(group), exc)
            half = len(units) // 2
            return self._commit(units[:half]) and self._commit(units[half:])
        for (key, deleted), stored in zip(staged, txn.results, strict=True):
            if deleted:
                self.state.pop(key, None)
            else:
                assert stored is not None
                self.state[key] = stored
        self._wrote(len(staged))
        return True

    def _refresh(self, key: ObjectKey) -> None:
        try:
            self.state[key] = self.db.get(model_for_table(key[0]), key[1])
        except errors.NotFoundError:
            self.state.pop(key, None)

    def _single(self, op: Op) -> None:
        key, want = op
        for attempt in range(_ATTEMPTS):
            current = self.state.get(key)
            if same_content(current, want):
                return
            try:
                if want is None:
                    assert current is not None
                    self.db.delete(current)
                    self.state.pop(key, None)
                elif current is None:
                    self.state[key] = self.db.create(want.model_copy(update={"version": 0}), ttl=self.ttls.get(key))
                elif current.topic != want.topic:
                    # Topics are immutable: an id that moved topic is re-created. Two writes: a limit reached
                    # by the delete stops before the create, which the next run makes (the object is absent).
                    self.db.delete(current)
                    self.state.pop(key, None)
                    self._wrote(1)
                    if self._full():
                        raise self._limit_reached()
                    continue
                else:
                    self.state[key] = self.db.update(_updated(current, want))
            except (errors.ConflictError, errors.NotFoundError):
                if attempt == _ATTEMPTS - 1:
                    raise
                self._refresh(key)  # somebody else wrote it, or our copy was stale
                continue
            except errors.ValidationError as exc:  # the destination refuses this object itself: say which
                raise errors.ValidationError(f"{key[0]} {key[1]}: {exc}", exc.errors) from exc
            self._wrote(1)
            return
