"""Turning a caller's write into the SPI's: stored copies, unique values, and set/map mutations.

Shared by :class:`nbdb.Database` and :class:`nbdb.Transaction`: both queue
the same operations, one of them at a time and the other many at once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast, get_args, get_origin, overload
from uuid import UUID

from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from nbdb import errors
from nbdb.codec import decode, encode
from nbdb.models.base import Model, check_held_object, lineage_is_own, written_of
from nbdb.models.ids import claim
from nbdb.spi import DEFERRED, Delete, FieldChange, Mutate, Put, Record, UniqueKey
from nbdb.storable import check_storable, storable

__all__ = [
    "FieldMutation",
    "as_stored",
    "delete_of",
    "may_take",
    "mutate",
    "mutation_args",
    "mutation_changes",
    "mutation_of",
    "put_of",
    "rebase_for",
    "stored",
    "unique_keys",
]

M = TypeVar("M", bound=Model)

_NO_REFS: frozenset[tuple[str, UUID]] = frozenset()
_new_tuple = tuple.__new__
"""Builds a named tuple from all its fields as its own ``__new__`` does, without that Python call (hot)."""


def stored(obj: M, version: int, revision: int | None = None) -> M:
    """``obj`` as stored at ``version`` (committed at ``revision``)."""
    return obj.stored_copy(version, revision=revision)


def unique_keys(obj: Model) -> tuple[UniqueKey, ...]:
    """Every unique value ``obj`` holds."""
    return _keys(obj.unique_values())


def put_of(obj: M, expect_version: int, ttl: float | None = None, deferred: bool = False) -> tuple[Put, M]:
    """The write of ``obj`` against ``expect_version``, and the stored copy it will leave (version + 1).

    ``deferred``: for a store that ``keeps_values``, the put carries no bytes (:data:`nbdb.spi.DEFERRED`).
    A create (``expect_version == 0``) claims the object's id: the first create of an id this
    process made is marked ``fresh_id`` (see :func:`nbdb.models.ids.claim`), every later one is not.
    """
    refs = obj.ref_keys()
    values = obj.unique_values()
    # _keys(values), its common case (one unique name) without the call.
    unique = (
        (_new_tuple(UniqueKey, values[0]),) if len(values) == 1 and type(values[0]) is not UniqueKey else _keys(values)
    )
    copy = obj.stored_copy(expect_version + 1)
    old_refs: frozenset[tuple[str, UUID]] | None
    old_unique: tuple[UniqueKey, ...] | None
    written = None
    if expect_version:
        # The revision that wrote the copy (a write's result: its commit's; else its record's), compared with
        # its version (see nbdb.spi.Put.expect_written); None for a copy whose version was changed after it
        # was stamped, or a stamp without one: the revision is not that version's, so the store compares the
        # version alone.
        written = written_of(obj, expect_version)
        if lineage_is_own(obj):  # a stored copy, or one derived keeping its references and unique values
            old_refs, old_unique, fresh = refs, unique, False
        else:
            old_refs, old_unique, fresh = obj.stored_refs(), _keys(obj.stored_unique()), False
    else:
        old_refs, old_unique, fresh = _NO_REFS, (), claim(obj.id)
    if deferred:
        check_storable(obj)  # what encode() refuses, refused by a store that keeps values too
        data = DEFERRED
    else:
        data = encode(obj)
    put = _new_tuple(
        Put,
        (
            obj.nbdb_table,
            obj.id,
            obj.topic,
            data,
            expect_version,
            refs,
            old_refs,
            copy,
            unique,
            ttl,
            old_unique,
            fresh,
            written,
        ),
    )
    return put, copy


def may_take(exc: errors.ConflictError, put: Put, model: type[M], get: Callable[[type[M], UUID], M]) -> M | None:
    """What a ``create(..., may_exist=True)`` of ``put`` takes after its commit raised ``exc``.

    The stored object ``exc`` names: the holder of one of ``put``'s unique
    values (a UniqueViolationError), or the object stored under ``put``'s own id
    (the ConflictError "already exists" that names its key) -- when it is of
    ``put``'s topic and has the same required references (the switch of a port). None if
    that object went meanwhile (the create may go through now). ``exc`` itself is raised when
    it names no such object, or one of another topic; an error of its type saying which when the
    object has another owner: neither is the object asked for.
    """
    if isinstance(exc, errors.UniqueViolationError):
        holder = exc.existing if exc.table == put.table else None
    else:
        holder = put.id if exc.key == (put.table, put.id) else None
    if holder is None:
        raise exc
    try:
        existing = get(model, holder)
    except errors.NotFoundError:
        return None
    if existing.topic != put.topic:
        # Another topic's (another tenant's) object: it is not the one asked for, and was
        # returned as if it were, to a caller that then took it for its own.
        raise exc
    wanted = cast("Model", put.value)
    for spec in existing.nbdb_references:
        if spec.many or spec.optional or spec.weak or spec.ids(existing) == spec.ids(wanted):
            continue
        # Another owner's object (a port of another switch): not the one asked for either, as
        # ovn-nbctl's "lsp-add sw2 p1 --may-exist" refuses a p1 of sw1, and ovsdbapp's lsp_add.
        message = (
            f"{put.table} {existing.id} exists, but its {spec.field} is {spec.target} {spec.ids(existing)[0]},"
            f" not {spec.ids(wanted)[0]}: may_exist takes only the object asked for"
        )
        if isinstance(exc, errors.UniqueViolationError):
            raise errors.UniqueViolationError(
                message, table=exc.table, field=exc.field, value=exc.value, existing=exc.existing
            ) from exc
        raise errors.ConflictError(message, key=exc.key) from exc
    return existing


def as_stored(planned: M, version: int, revision: int, store: int | str | None = None) -> M:
    """The stored copy at the version the backend reports (the planned one, unless it differs), at ``revision``,
    written to the store of token ``store`` (see :meth:`Model.committed_at`)."""
    if planned.version != version:
        copy = stored(planned, version, revision)
        if store is not None:
            copy.__pydantic_private__["_store"] = store  # type: ignore[index]  # stored_copy's own dict
        return copy
    planned.committed_at(revision, store)
    return planned


@overload
def _keys(values: tuple[tuple[str, str], ...]) -> tuple[UniqueKey, ...]: ...
@overload
def _keys(values: tuple[tuple[str, str], ...] | None) -> tuple[UniqueKey, ...] | None: ...


def _keys(values: tuple[tuple[str, str], ...] | None) -> tuple[UniqueKey, ...] | None:
    """``values`` as unique keys (as they are if they are keys already)."""
    if not values or type(values[0]) is UniqueKey:
        return values  # type: ignore[return-value]  # None, (), or keys
    if len(values) == 1:  # the common case (one unique name), without a comprehension's frame
        return (_new_tuple(UniqueKey, values[0]),)
    return tuple([_new_tuple(UniqueKey, pair) for pair in values])


def delete_of(obj: Model, if_exists: bool = False, lineage: bool = True) -> Delete:
    """The compare-and-swap delete of a stored copy (of its version, and of the revision that wrote it if known).

    ``lineage``: the delete carries the references and unique values the
    copy was stored with. Without it they are unknown (None), which a store
    that keeps its own (``keeps_values``, in process) reads for nothing,
    instead of this copy deriving them from its fields (≈ 1 µs of a ≈ 10 µs delete).
    """
    # a write's result: its commit's; else its record's; None (the version alone compared) for a copy
    # whose version was changed after it was stamped (pydantic's model_copy, or in place)
    written = written_of(obj, obj.version)
    if not lineage:
        return _new_tuple(Delete, (obj.nbdb_table, obj.id, obj.topic, obj.version, None, if_exists, None, written))
    return _new_tuple(
        Delete,
        (
            obj.nbdb_table,
            obj.id,
            obj.topic,
            obj.version,
            obj.stored_refs(),
            if_exists,
            _keys(obj.stored_unique()),
            written,
        ),
    )


# ---------------------------------------------------------------- mutations

FieldMutation = Mapping[str, Any]
"""``{field: members}`` to add (lists and sets: members; maps: key -> value pairs) or remove (maps: keys)."""


def mutation_args(add: object, remove: object) -> tuple[dict[str, Any], dict[str, Any]]:
    """``add`` and ``remove`` as fresh dicts (None: nothing); ValidationError if either is no mapping.

    Shared by ``Database.mutate`` and ``Transaction.mutate``: the transaction's ``dict(add)`` raised
    ValueError or TypeError for a string or a number, and took a list of pairs the Database refused.
    """
    for name, given in (("add", add), ("remove", remove)):
        if given is not None and not isinstance(given, Mapping):
            raise errors.ValidationError(f"{name}= takes a mapping of field names to members, not {given!r}")
    return dict(cast("FieldMutation", add or {})), dict(cast("FieldMutation", remove or {}))


@functools.lru_cache(maxsize=256)
def _shape(model: type[Model], field: str) -> tuple[str, TypeAdapter[Any] | None]:
    """("list" | "set" | "map", an adapter that normalises one member or key) of a collection field."""
    info = model.model_fields.get(field)
    if info is None:
        raise errors.ValidationError(f"{model.__name__} has no field {field!r}")
    annotation = info.annotation
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin in (list, tuple):
        return "list", TypeAdapter(args[0]) if args else None
    if origin in (set, frozenset):
        return "set", TypeAdapter(args[0]) if args else None
    if origin is dict:
        return "map", TypeAdapter(args[0]) if args else None
    raise errors.ValidationError(f"{model.__name__}.{field} is not a list, set or map field: it cannot be mutated")


def _normal(adapter: TypeAdapter[Any] | None, value: Any, model: type[Model], field: str) -> Any:
    if isinstance(value, Model):
        check_held_object(model, field, value)  # a router added to a port group's ports: not a missing port
        value = value.id
    if adapter is None:
        return value
    try:
        return adapter.validate_python(value)
    except Exception as exc:  # pydantic's ValidationError, any validator's ValueError
        # pydantic's own text is several lines naming its internal schema ("json-or-python[...]"): its messages.
        why = "; ".join(e["msg"] for e in exc.errors()) if isinstance(exc, PydanticValidationError) else str(exc)
        raise errors.ValidationError(f"{model.__name__}.{field}: {value!r} is not a valid member: {why}") from None


def _key(value: Any) -> Hashable:
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value  # type: ignore[no-any-return]


def mutate(current: M, add: FieldMutation, remove: FieldMutation) -> M:
    """``current`` with members added and removed; ``current`` itself if nothing changes.

    Lists keep their order and hold each member once (an added member already
    there stays where it is); maps set the added pairs and drop the removed
    keys. The result is validated like any write.
    """
    model = type(current)
    changes: dict[str, Any] = {}
    for field in {*add, *remove}:
        kind, adapter = _shape(model, field)
        gone = {_key(_normal(adapter, m, model, field)) for m in _members(remove.get(field, ()), kind, "remove")}
        now = getattr(current, field)
        value: Any
        if kind == "map":
            pairs = add.get(field, {})
            if not isinstance(pairs, Mapping):
                raise errors.ValidationError(f"add={{{field!r}: ...}} takes a mapping of keys to values")
            value = {k: v for k, v in now.items() if _key(k) not in gone}
            value.update({_normal(adapter, k, model, field): v for k, v in pairs.items()})
        else:
            kept = [m for m in now if _key(m) not in gone]
            seen = {_key(m) for m in kept}
            for member in _members(add.get(field, ()), kind, "add"):
                normal = _normal(adapter, member, model, field)
                if _key(normal) not in seen:
                    seen.add(_key(normal))
                    kept.append(normal)
            value = kept if kind == "list" else type(now)(kept)
        if value != now:
            changes[field] = value
    return current.replace(**changes) if changes else current


def _members(value: Any, kind: str, what: str) -> Iterable[Any]:
    if kind == "map" and what == "add":
        return ()
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise errors.ValidationError(f"{what}= takes a collection of members for each field, not {value!r}")
    if isinstance(value, Model):  # iterable as pydantic's (field, value) pairs: each was refused as a member
        raise errors.ValidationError(
            f"{what}= takes a collection of members for each field, not one {type(value).__name__}: put it in a list"
        )
    return value


def mutation_changes(model: type[Model], add: FieldMutation, remove: FieldMutation) -> tuple[FieldChange, ...]:
    """The mutation as data, for stores that apply it natively (member values as stored in JSON)."""
    out = []
    for field in sorted({*add, *remove}):
        kind, adapter = _shape(model, field)
        removed = tuple(_normal(adapter, m, model, field) for m in _members(remove.get(field, ()), kind, "remove"))
        if kind == "map":
            values = _map_values(model, field)
            added: tuple[object, ...] = tuple(
                (_normal(adapter, k, model, field), _normal(values, v, model, field))
                for k, v in dict(add.get(field, {})).items()
            )
        else:
            added = tuple(_normal(adapter, m, model, field) for m in _members(add.get(field, ()), kind, "add"))
        if not (storable(added) and storable(removed)):  # as every write is checked (see nbdb.storable)
            raise errors.ValidationError(
                f"{model.__name__}.{field}: a member holds text that is not Unicode, bytes that are not UTF-8 "
                "or a float that is infinite or NaN"
            )
        out.append(FieldChange(field, added, removed))
    return tuple(out)


@functools.lru_cache(maxsize=256)
def _map_values(model: type[Model], field: str) -> TypeAdapter[Any] | None:
    """An adapter that normalises one value of map field ``field`` (None: any value)."""
    args = get_args(model.model_fields[field].annotation)
    return TypeAdapter(args[1]) if len(args) == 2 else None


def rebase_for(
    model: type[M], add: FieldMutation, remove: FieldMutation, then: Sequence[tuple[FieldMutation, FieldMutation]] = ()
) -> Callable[[Record], Put]:
    """A ``rebase(record) -> Put`` for :class:`nbdb.spi.Mutate`: the change (then each of ``then``) applied
    to the stored object."""
    mutations = ((add, remove), *then)

    def rebase(record: Record) -> Put:
        current = decode(model, record)
        return put_of(mutate_in_turn(current, mutations), current.version)[0]

    return rebase


def mutate_in_turn(current: M, mutations: Sequence[tuple[FieldMutation, FieldMutation]]) -> M:
    """``current`` with each ``(add, remove)`` of ``mutations`` applied in turn (see :func:`mutate`).

    ``current`` itself if no field they touch ends changed (a member added, then removed, changes nothing).
    """
    new = current
    for add, remove in mutations:
        new = mutate(new, add, remove)
    if new is current or len(mutations) < 2:
        return new
    touched = {field for add, remove in mutations for field in (*add, *remove)}
    return current if all(getattr(new, f) == getattr(current, f) for f in touched) else new


def changes_in_turn(
    model: type[Model], mutations: Sequence[tuple[FieldMutation, FieldMutation]]
) -> tuple[FieldChange, ...]:
    """The changes of ``mutations`` applied in turn, as one change a field (as :func:`mutation_changes`).

    Each mutation removes, then adds (a member both added and removed is there afterwards), so the turns
    compose into one such change: it removes what any turn removes, and adds what a turn adds unless a later
    turn removes it (for a map, the pairs of later turns win).
    """
    merged: dict[str, FieldChange] = {}
    for add, remove in mutations:
        for change in mutation_changes(model, add, remove):
            before = merged.get(change.field)
            if before is None:
                merged[change.field] = change
                continue
            gone = {_key(m) for m in change.remove}
            kept: list[object]
            if _shape(model, change.field)[0] == "map":  # pairs: a later turn removes a key
                kept = [p for p in cast("tuple[tuple[object, object], ...]", before.add) if _key(p[0]) not in gone]
            else:
                kept = [m for m in before.add if _key(m) not in gone]
            merged[change.field] = FieldChange(change.field, (*kept, *change.add), (*before.remove, *change.remove))
    return tuple(merged[field] for field in sorted(merged))


def mutation_of(
    model: type[Model],
    id: UUID,
    add: FieldMutation,
    remove: FieldMutation,
    then: Sequence[tuple[FieldMutation, FieldMutation]] = (),
) -> Mutate:
    """The :class:`nbdb.spi.Mutate` of a change, for stores with native mutations.

    ``then``: more ``(add, remove)`` applied after it, in turn (one transaction's mutates of one object).
    """
    if not then:
        return Mutate(model.nbdb_table, id, mutation_changes(model, add, remove), rebase_for(model, add, remove))
    mutations = ((add, remove), *then)
    return Mutate(model.nbdb_table, id, changes_in_turn(model, mutations), rebase_for(model, add, remove, then))


def check_uuid(value: UUID | str) -> UUID:
    """``value`` as an object id; ValidationError if it is not one."""
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise errors.ValidationError(f"not an object id (UUID): {value!r}") from None
