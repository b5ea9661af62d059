"""The base model, typed references and the table registry.

A stored model is a frozen pydantic v2 model with ``id``, ``version``,
``topic`` and ``external_ids``. References name the table they point to with
``Annotated[UUID, Reference("Table")]`` (or a list of them); the model layer
knows every reference, which the API uses for integrity checks, cascades and
dependency order.
"""

from __future__ import annotations

import functools
import json
import json.encoder
import re
import types
import typing
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar, get_args, get_origin

import pydantic
from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, PlainSerializer, WrapSerializer
from pydantic_core import PydanticSerializationError, core_schema

import nbdb.models.ids as _ids
from nbdb import errors
from nbdb.models.shared import (
    FrozenDict,
    FrozenList,
    FrozenSet,
    deep_frozen,
    freeze_containers,
    is_immutable_class,
    slot_setter,
)
from nbdb.models.types import Topic
from nbdb.revision import GLOBAL_SCOPE, Revision

__all__ = [
    "DECODED",
    "VALIDATED",
    "Model",
    "RefSpec",
    "Reference",
    "all_models",
    "check_field_value",
    "check_held_object",
    "check_references_resolve",
    "committed_all",
    "freeze_lineage",
    "lineage_is_own",
    "may_hold_container",
    "model_for_table",
    "set_extra",
    "set_fields_set",
    "set_private",
    "validation_error_of",
    "written_of",
]

_REGISTRY: dict[str, type[Model]] = {}
_GENERATION = 0
"""Bumped at every model class defined (:func:`registry_generation`): what is derived from every model
is kept until it moves."""
VALIDATED: dict[type[Model], Callable[[dict[str, Any]], None]] = {}
"""What to note of a model's fields just validated (by its constructor or :meth:`Model.replace`), by model:
:mod:`nbdb.storable` remembers the members its validators passed, so that the check of a write that looks for a
change in place after validation finds them known (see :func:`nbdb.storable.check_storable`)."""
_NO_REFS: frozenset[tuple[str, uuid.UUID]] = frozenset()
_json_text = json.encoder.encode_basestring_ascii
"""``json.dumps`` of one ``str`` (what it calls for a string), without building an encoder each call."""

DECODED: dict[str, Any] = {}
"""The lineage of every decoded copy (shared, never written): it is the stored copy itself."""
_OWN: Any = object()
"""What a copy's private dict holds for lineage it does not keep: its own values are the stored ones."""


def _id_in(target: str) -> Callable[[Any], Any]:
    """What lets a reference field to ``target`` take the referenced model itself, not only its id."""

    known: set[type] = set()  # model classes of ``target``'s table met so far: no ABC check nor table look again

    def id_of(value: Any) -> Any:
        cls = type(value)
        if cls is uuid.UUID or value is None:
            return value  # the common case, without the ABC instance check a model class costs
        if cls in known:
            return value.id
        if isinstance(value, Model):
            if cls.nbdb_table != target:
                # A router given for a port's switch was taken for its id: the write then named a switch
                # that never was (ReferenceError), and a replace() or an unwritten copy pointed at nothing.
                raise ValueError(
                    f"the field references {target}: a {cls.__name__} (of table {cls.nbdb_table}) is no such object"
                )
            if len(known) >= _KNOWN_CLASSES:
                known.clear()  # bounded: classes made at run time (tests) are not kept alive for ever
            known.add(cls)
            return value.id
        return value

    return id_of


_KNOWN_CLASSES = 16
"""Model classes a reference field remembers as of its table (one or two in practice: the model, a twin)."""


@dataclass(frozen=True, slots=True)
class Reference:
    """Marks a UUID field as a reference to a row of another table.

    ``target`` is the table name of the referenced model (its class name unless
    the class says otherwise). The field accepts the referenced model itself,
    and stores its id.

    ``weak=True`` marks a weak reference (OVSDB's ``"refType": "weak"``): a plain
    delete of the target (or one in a transaction) drops it from the referrer (a list or an optional
    field) in the same commit, as ovsdb-server does, instead of refusing with
    ReferenceError. A weak reference the referrer cannot lose (a required field,
    or one whose loss breaks the model's own rules) still refuses the delete.
    """

    target: str
    weak: bool = False

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        # JSON never holds a model: the stored records a list, a cache or a watch decodes go
        # straight to the UUID validator, without a Python call per reference (4 per port).
        inner = handler(source)
        return core_schema.json_or_python_schema(
            json_schema=inner, python_schema=core_schema.no_info_before_validator_function(_id_in(self.target), inner)
        )


@dataclass(frozen=True, slots=True)
class Column:
    """Names the server's column that holds a field, where the column's own name can be no field's.

    ``nbdb models generate`` writes it for a column named as a Python keyword
    (``from``), as a model's own attribute (``id``, ``copy``) or as a name the
    model's class body uses (``list``): ``from_: Annotated[str, Column("from")]``.
    Only the OVSDB backend reads it; every other backend stores the field under
    its own name.
    """

    name: str


@dataclass(frozen=True, slots=True)
class RefSpec:
    """One reference field of a model: its name, target table, and shape."""

    field: str
    target: str
    many: bool
    optional: bool
    weak: bool = False

    def ids(self, obj: Model) -> tuple[uuid.UUID, ...]:
        """The ids this field of ``obj`` points to."""
        value = getattr(obj, self.field)
        if value is None:
            return ()
        if self.many:
            return tuple(value)
        return (value,)


def _check_owned_by(cls: type[Model], refs: tuple[RefSpec, ...]) -> None:
    """ValidationError unless ``cls.nbdb_owned_by`` is a tuple of at most one required single strong reference.

    Unchecked, "port" (a bare string) was a substring test, a typo owned nothing, and a weak reference
    named there took the child along in a transaction while a plain delete of the owner refused.
    """
    owned_by = cls.nbdb_owned_by
    if not isinstance(owned_by, tuple) or not all(isinstance(name, str) for name in owned_by):
        raise errors.ValidationError(f"{cls.__name__}.nbdb_owned_by takes a tuple of field names, not {owned_by!r}")
    if len(owned_by) > 1:
        # An object held by two owners goes with the first deleted: ovsdb-server keeps it while any holds it.
        raise errors.ValidationError(f"{cls.__name__}.nbdb_owned_by names more than one owner: {owned_by!r}")
    specs = {spec.field: spec for spec in refs}
    for name in owned_by:
        spec = specs.get(name)
        if spec is None or spec.many or spec.optional or spec.weak:
            raise errors.ValidationError(
                f"{cls.__name__}.nbdb_owned_by names {name!r}, which is not a required single strong reference field"
            )


def _reference_in(metadata: Any) -> Reference | None:
    for item in metadata:
        if isinstance(item, Reference):
            return item
    return None


def _ref_spec(name: str, info: pydantic.fields.FieldInfo) -> RefSpec | None:
    ref = _reference_in(info.metadata)
    annotation = info.annotation
    optional = False
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        optional = len(args) != len(get_args(annotation))
        annotation = args[0] if len(args) == 1 else annotation
        origin = get_origin(annotation)
    if ref is not None:
        if origin in (list, set, frozenset, tuple, dict):
            # Read as one reference whose id is the whole list: every write failed with "unhashable type:
            # 'list'" (a TypeError from deep inside the write), and no list, reference check nor cascade knew it.
            kind = origin.__name__
            if origin is dict:
                raise TypeError(
                    f"field {name!r}: Reference marks a UUID field or the UUIDs of a list or set, not a dict"
                )
            raise TypeError(
                f"field {name!r}: Reference marks the ids in a {kind}, not the {kind} itself: write "
                f'{kind}[Annotated[UUID, Reference("{ref.target}")]], not Annotated[{kind}[UUID], Reference(...)]'
            )
        return RefSpec(name, ref.target, many=False, optional=optional or not info.is_required(), weak=ref.weak)
    if origin in (list, set, frozenset, tuple):
        for arg in get_args(annotation):
            if get_origin(arg) is typing.Annotated:
                inner = _reference_in(get_args(arg)[1:])
                if inner is not None:
                    return RefSpec(name, inner.target, many=True, optional=True, weak=inner.weak)
    if origin is typing.Annotated:
        inner = _reference_in(get_args(annotation)[1:])
        if inner is not None:
            return RefSpec(name, inner.target, many=False, optional=optional or not info.is_required(), weak=inner.weak)
    return None


_INTERRUPT = re.compile(
    r"(?:^Error serializing to JSON|Error calling function `[^`]*`): (KeyboardInterrupt|SystemExit)(?::|$)"
)
"""The exception type as pydantic names it, after its own words: not a word of a message of the caller's."""


def raise_interrupt(exc: PydanticSerializationError) -> None:
    """Raise the KeyboardInterrupt (or SystemExit) that pydantic wrapped into ``exc``, if it wrapped one.

    A Ctrl-C that lands while pydantic's serializer runs a Python function (a
    field serializer, a custom type's) comes out as a PydanticSerializationError
    whose text names it, the interrupt itself dropped (no ``__cause__``). Caught
    as a serialization error it became "cannot be stored" (a ValidationError),
    and a command stopped by Ctrl-C said the caller's data was wrong.
    """
    found = _INTERRUPT.search(str(exc))
    if found is not None:
        raise (
            KeyboardInterrupt() if found.group(1) == "KeyboardInterrupt" else SystemExit(1)
        ) from exc  # its code is lost


def validation_error_of(exc: pydantic.ValidationError, title: str) -> errors.ValidationError:
    """pydantic's ``exc`` as nbdb's ValidationError: one line per problem, ``title`` naming what was invalid."""
    problems = [{"loc": tuple(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors(include_url=False)]
    lines = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or title}: {e['msg']}" for e in problems)
    return errors.ValidationError(f"invalid {title}: {lines}", problems)


F = TypeVar("F", bound=Callable[..., Any])


def _written(method: F) -> F:
    """``method``, marked as one nbdb wrote (or its default): a subclass gets its own written for its fields."""
    method.__nbdb_written__ = True  # type: ignore[attr-defined]
    return method


class Model(BaseModel):
    """Base of every stored model.

    Subclass it to define a table; the class name is the table name unless a
    ``nbdb_table`` class variable says otherwise. ``nbdb_indexes`` names the
    fields a cache indexes (reference fields are always indexed).
    ``nbdb_unique`` names the fields (or tuples of fields) whose values no two
    objects of the table may share, as an OVSDB schema's ``indexes`` do;
    stores that declare ``capabilities.unique`` enforce them atomically.

    Instances are immutable: derive a changed copy with :meth:`replace`.
    """

    # allow_inf_nan=False: JSON holds no infinity or NaN; pydantic wrote them as null, which every store
    # of bytes then kept, and every read of the object failed to decode (memory:// kept them as they were).
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=False, allow_inf_nan=False)

    id: uuid.UUID = Field(default_factory=_ids.new_id, description="Assigned on construction; kept for life.")
    version: int = Field(default=0, ge=0, description="0 until stored; bumped by every write.")
    topic: Topic | None = Field(default=None, description="Tenant or partition; immutable once stored.")
    external_ids: dict[str, str] = Field(default_factory=dict)

    nbdb_table: ClassVar[str] = ""
    nbdb_indexes: ClassVar[tuple[str, ...]] = ()
    nbdb_unique: ClassVar[tuple[str | tuple[str, ...], ...]] = ()
    nbdb_unique_fields: ClassVar[tuple[tuple[str, ...], ...]] = ()
    nbdb_references: ClassVar[tuple[RefSpec, ...]] = ()
    nbdb_owned_by: ClassVar[tuple[str, ...]] = ()
    """Required reference fields whose target owns the object: it goes with its owner (see :mod:`nbdb.cascade`)."""
    nbdb_index_fields: ClassVar[tuple[str, ...]] = ()
    nbdb_unique_groups: ClassVar[tuple[tuple[str, tuple[str, ...], bool], ...]] = ()
    """Each unique group as (its key name, its fields, whether its value is one plain ``str`` field)."""
    nbdb_lineage_fields: ClassVar[frozenset[str]] = frozenset()
    """The fields a stored copy's references and unique values are made of (see :meth:`replace`)."""
    nbdb_lineage_containers: ClassVar[tuple[str, ...]] = ()
    """The lineage fields that may hold a list, map or set: frozen in a stored copy (see :func:`freeze_lineage`)."""
    nbdb_container_fields: ClassVar[tuple[str, ...]] = ()
    """Every field that may hold a list, map or set: frozen (copied) in a stored copy (see :meth:`stored_copy`)."""
    nbdb_deep_fields: ClassVar[tuple[str, ...]] = ()
    """Fields that may hold a model, or a list, map, set or model inside another: frozen through (:func:`may_nest`)."""

    # Where an instance comes from lives in __pydantic_private__, deliberately
    # undeclared (a declared private attribute costs every decode a default
    # and a dict): None for an object built by hand (unknown: the backend
    # reads them); the shared marker DECODED for a decoded copy, and for a
    # copy derived with replace() that changes none of its references or
    # unique values (its own values are the stored ones: derived on demand);
    # a decoded copy whose record says which revision wrote it
    # (nbdb.spi.Record.written) holds a dict of it ("_written"), one
    # shared by the copies of that revision and version decoded together (a list's, a
    # cache load's: the copies of a bulk load's commits hold no dict of their
    # own), so never changed in place (committed_at replaces it, and setting
    # or deleting a declared private attribute copies it first); a copy
    # derived with replace() keeps its source's as "_written" (written_of:
    # its "_written", or its "_revision"'s): update() and delete() send it
    # (written_of) with the version, so a copy
    # of an object deleted and created again since is refused whatever its
    # version (nbdb.spi.Put.expect_written); each with the version it was
    # stamped at ("_at"): a copy whose version was changed since (pydantic's
    # model_copy, or moved in place) sends no revision, so the store compares
    # its version (a dict of two ints is no larger than one of one: the
    # saving is the sharing);
    # for a copy returned by a write, a dict of the revision of its commit
    # ("_revision") and its version ("_at"): its own values are the stored
    # ones too, and a dict holding only ints is one CPython never tracks (the references it
    # once kept here made it one more object per stored copy for every full
    # collection to scan); for any other copy derived with replace(), the
    # references and unique values of the stored copy it came from
    # ("_stored_refs", "_stored_unique").

    def __init__(self, /, **data: Any) -> None:
        # What BaseModel.__init__ does, called straight: one Python frame and
        # one keyword repacking less on every object a caller builds (~0.6 µs
        # of a port's ~3 µs validation).
        try:
            validated = self.__pydantic_validator__.validate_python(data, self_instance=self)
        except pydantic.ValidationError as exc:
            raise validation_error_of(exc, type(self).__name__) from None
        remember = VALIDATED.get(self.__class__)
        if remember is not None:
            remember(self.__dict__)
        if validated is not self:
            warnings.warn(
                f"a model validator of {type(self).__name__} returned another object than the one being built: "
                "returning anything but self is not supported when building a model",
                stacklevel=2,
            )

    # Tell pydantic this __init__ only wraps the base one: otherwise it routes
    # every model_validate_json through __init__ (JSON -> dict -> validate
    # again), which made decoding a stored record about twice as slow.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            if name in self.__private_attributes__:
                _own_private(self)  # pydantic writes a declared one into the private dict in place
            super().__setattr__(name, value)
            return
        raise errors.ValidationError(
            f"{type(self).__name__} is immutable: derive a changed copy with .replace({name}=...)"
        )

    def __delattr__(self, name: str) -> None:
        if name in self.__private_attributes__:
            _own_private(self)  # pydantic deletes a declared one from the private dict in place
        super().__delattr__(name)

    def __eq__(self, other: object) -> bool:
        # A model's value is its fields. Pydantic also compares private
        # attributes, which here record where a copy came from (the commit
        # revision of a write result, the references of its stored lineage):
        # a write result must equal the same version read back.
        if not isinstance(other, Model):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    def __getstate__(self) -> dict[Any, Any]:
        # A pickled object may be created by the process that unpickles it: its id, if this
        # process made it, is no longer one that only this process's creates can carry.
        _ids.forget(self.id)
        return super().__getstate__()

    @property
    def nbdb_revision(self) -> int | None:
        """The revision this copy was committed at, on copies returned by a write; None otherwise.

        ``create``, ``update`` and a transaction's ``results`` return stored
        copies that carry their commit's revision (a :class:`nbdb.revision.Revision`),
        for :meth:`nbdb.Cache.wait_for`. Copies decoded from a record (``get``,
        ``list``, a cache, a watch) and copies derived with :meth:`replace`
        carry None (an in-process store that keeps the written copy itself
        hands out that copy, revision included).
        """
        private = self.__pydantic_private__
        revision = None if private is None else private.get("_revision")
        # Kept as a plain int when its scope is the global one (see committed_at).
        return Revision(revision) if type(revision) is int else revision

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "nbdb_table" not in cls.__dict__ or not cls.__dict__["nbdb_table"]:
            cls.nbdb_table = cls.__name__
        table = cls.nbdb_table
        if not isinstance(table, str) or "/" in table or not table.isprintable():
            # "a/b" was stored on key-value stores under a key of one part more than an object's, that no
            # list, watch or cache ever read back (memory:// showed it): the object was silently lost.
            raise TypeError(f"{cls.__name__}.nbdb_table must be printable text without '/', not {table!r}")
        refs = tuple(spec for name, info in cls.model_fields.items() if (spec := _ref_spec(name, info)) is not None)
        cls.nbdb_references = refs
        for attr in ("nbdb_indexes", "nbdb_unique"):
            declared = getattr(cls, attr)
            if not isinstance(declared, tuple | list):
                # nbdb_unique = "name" was read as its letters: "names unknown field 'n'", or, on a model
                # of one-letter fields, each letter a unique field of its own.
                raise TypeError(f"{cls.__name__}.{attr} takes a tuple of field names, e.g. ({declared!r},)")
        for name in cls.nbdb_indexes:
            if name not in cls.model_fields:
                raise TypeError(f"{cls.__name__}.nbdb_indexes names unknown field {name!r}")
        unique = tuple((u,) if isinstance(u, str) else tuple(u) for u in cls.nbdb_unique)
        for group in unique:
            if not group or len(set(group)) != len(group):
                # () was a group no object ever held a value of: nothing was unique, without a word.
                raise TypeError(f"{cls.__name__}.nbdb_unique has a group of no field or a field twice: {group!r}")
            for name in group:
                if name not in cls.model_fields:
                    raise TypeError(f"{cls.__name__}.nbdb_unique names unknown field {name!r}")
        cls.nbdb_unique_fields = unique
        _check_owned_by(cls, refs)
        held: dict[str, str] = {}
        for name, info in cls.model_fields.items():
            if name in ("id", "version", "topic"):
                continue  # no column's: a row's _uuid, and what nbdb keeps in external_ids
            column = next((m.name for m in info.metadata if isinstance(m, Column)), name)
            if held.setdefault(column, name) != name:
                # Two fields of one column: each write of one overwrote the other, on OVSDB only.
                raise TypeError(
                    f"{cls.__name__}: fields {held[column]!r} and {name!r} are both held by column {column!r}"
                )
        cls.nbdb_unique_groups = tuple(
            ("+".join(group), group, len(group) == 1 and _plain_str(cls.model_fields[group[0]])) for group in unique
        )
        index_fields = list(cls.nbdb_indexes)
        index_fields += [r.field for r in refs if r.field not in index_fields]
        # A map (or a list of lists) is no key of a bucket: a cache indexing one failed on its first object
        # (TypeError: unhashable), on every backend. find() compares such a field object by object.
        cls.nbdb_index_fields = tuple(f for f in index_fields if _indexable(cls.model_fields[f].annotation))
        cls.nbdb_lineage_fields = frozenset([r.field for r in refs] + [name for group in unique for name in group])
        cls.nbdb_lineage_containers = tuple(
            sorted(name for name in cls.nbdb_lineage_fields if may_hold_container(cls.model_fields[name].annotation))
        )
        cls.nbdb_container_fields = tuple(
            name for name, info in cls.model_fields.items() if may_hold_container(info.annotation)
        )
        # Decided once per class: a class of atoms and flat containers of atoms (every built-in one) keeps
        # Model.stored_copy as it is, not one instruction more; one with a field that may nest gets its own.
        cls.nbdb_deep_fields = tuple(name for name, info in cls.model_fields.items() if may_nest(info.annotation))
        # Written for the class from its fields, unless it (or a base between it and Model) defines its own.
        _install_written(cls, "ref_keys", _ref_keys_of)
        _install_written(cls, "unique_values", _unique_values_of)
        if cls.nbdb_deep_fields:
            cls.stored_copy = _deep_stored_copy  # type: ignore[method-assign,assignment]
        previous = _REGISTRY.get(cls.nbdb_table)
        if previous is not None and previous.__qualname__ != cls.__qualname__:
            raise TypeError(
                f"table name {cls.nbdb_table!r} of {cls.__qualname__} is taken by {previous.__qualname__}; "
                "set nbdb_table to another name"
            )
        _REGISTRY[cls.nbdb_table] = cls
        global _GENERATION
        _GENERATION += 1
        _share_key_table(cls)

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        """Validate ``obj`` into this model; bad input raises :class:`nbdb.ValidationError`."""
        try:
            return super().model_validate(obj, *args, **kwargs)
        except pydantic.ValidationError as exc:
            raise validation_error_of(exc, cls.__name__) from None

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, *args: Any, **kwargs: Any) -> Self:
        """Validate JSON into this model; bad input raises :class:`nbdb.ValidationError`."""
        try:
            return super().model_validate_json(json_data, *args, **kwargs)
        except pydantic.ValidationError as exc:
            raise validation_error_of(exc, cls.__name__) from None

    @classmethod  # type: ignore[no-redef]  # the pydantic plugin declares one per model: this one is every model's
    def model_construct(cls, _fields_set: set[str] | None = None, **values: Any) -> Self:  # type: ignore[override]
        """Built as the constructor builds it: validated (bad input raises :class:`nbdb.ValidationError`).

        pydantic's own skips validation, and nbdb stores objects as they are: a ``name`` of 5 built
        this way was stored, and every later ``list()`` of the table on a serializing store failed
        on the record; an id given as text failed the write with an AttributeError.
        """
        return cls(**values)

    def replace(self, **changes: Any) -> Self:
        """A validated copy with ``changes`` applied, keeping id, version and topic lineage."""
        data = self.__dict__.copy()
        if len(data) != len(type(self).__pydantic_fields__):
            data = _fields_only(type(self), data)  # "Extra inputs are not permitted" of a cached_property's value
        data.update(changes)
        try:
            new = self.__pydantic_validator__.validate_python(data)
        except pydantic.ValidationError as exc:
            raise validation_error_of(exc, type(self).__name__) from None
        remember = VALIDATED.get(self.__class__)
        if remember is not None:
            remember(new.__dict__)
        private = self.__pydantic_private__
        lineage: dict[str, Any]
        if (
            private is not None
            and "_stored_refs" not in private
            and changes.keys().isdisjoint(self.nbdb_lineage_fields)
        ):
            lineage = DECODED  # its references and unique values are this stored copy's: derived on demand
            if self.nbdb_lineage_containers:
                freeze_lineage(new)
        else:
            lineage = {"_stored_refs": self.stored_refs(), "_stored_unique": self.stored_unique()}
        if private:
            stamp = _stamp_of(self)
            if stamp is not None:
                lineage = stamp if lineage is DECODED else {**lineage, **stamp}
        object.__setattr__(new, "__pydantic_private__", lineage)
        if self.__pydantic_extra__:  # the fields of a newer model this copy was read with (see codec.encode)
            object.__setattr__(new, "__pydantic_extra__", self.__pydantic_extra__)
        return new  # type: ignore[no-any-return]

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """pydantic's copy, ``update`` validated as :meth:`replace` validates it, keeping the stored lineage.

        A stored copy derives its stored references and unique values from
        its fields: a copy whose ``update`` sets one of those fields keeps
        them as the stored copy has them, as :meth:`replace` does.
        """
        copy = super().model_copy(update=update, deep=deep)  # its private dict a copy of this one's ("_at" too)
        if update:
            # pydantic does not validate ``update``: a copy holding a value its field cannot hold was
            # stored as it was (see model_construct).
            try:
                valid = self.__pydantic_validator__.validate_python(copy.__dict__).__dict__
            except pydantic.ValidationError as exc:
                raise validation_error_of(exc, type(self).__name__) from None
            # ...and holds them as validated: a MAC given as "0A-00-..." was written as given, and a store of
            # bytes read back "0a:00:..." (the constructor and replace() keep what validation returns).
            copy.__dict__.update({name: valid[name] for name in update if name in valid})
        if lineage_is_own(self):
            if update and not self.nbdb_lineage_fields.isdisjoint(update):
                lineage = {"_stored_refs": self.stored_refs(), "_stored_unique": self.stored_unique()}
                stamp = _stamp_of(self)
                if stamp is not None:  # kept, as replace() keeps it (a stale copy is refused after a re-create)
                    lineage.update(stamp)
                object.__setattr__(copy, "__pydantic_private__", lineage)
            elif deep and self.nbdb_lineage_containers:
                freeze_lineage(copy)  # a deep copy of a frozen list is a plain one
        return copy

    def stored_refs(self) -> frozenset[tuple[str, uuid.UUID]] | None:
        """The references of the stored copy this object descends from (None: unknown)."""
        private = self.__pydantic_private__
        if private is None:
            return None
        refs = private.get("_stored_refs", _OWN)
        return self.ref_keys() if refs is _OWN else refs

    def stored_unique(self) -> tuple[tuple[str, str], ...] | None:
        """The unique values of the stored copy this object descends from (None: unknown)."""
        if not self.nbdb_unique_fields:
            return ()
        private = self.__pydantic_private__
        if private is None:
            return None
        unique = private.get("_stored_unique", _OWN)
        return self.unique_values() if unique is _OWN else unique

    def stored_copy(self, version: int, *, revision: int | None = None) -> Self:
        """This object as stored at ``version``, committed at ``revision``.

        Only the version differs from a valid object, so nothing is validated
        again (the way pydantic's ``model_construct`` builds an instance). Its
        stored references and unique values are its own (derived on demand:
        see :meth:`stored_refs`), so it keeps no more than the revision.
        """
        cls = type(self)
        # The class's attributes read through the instance: read on the class, each went through
        # pydantic's metaclass __getattr__ hook (a bound wrapper built and called per read).
        new = self.__new__(cls)
        data = self.__dict__.copy()
        if len(data) != len(self.__pydantic_fields__):
            data = _fields_only(cls, data)  # a cached_property's value, cached in the caller's object
        data["version"] = version
        # Every list, map and set frozen, as a copy of its own: the caller's object (and what it
        # changes in place after the write) is not what the store and its readers hold.
        freeze_containers(data, data, self.nbdb_container_fields)
        fields_set = self.__pydantic_fields_set__
        if type(fields_set) is not FrozenSet:
            last_key, last_shared = _LAST_FIELDS  # _with_version's own first test, without its call
            fields_set = last_shared if fields_set == last_key else _with_version(fields_set)
        # One frozen set shared by the stored copies (never the caller's own set, which it may change).
        _set_dict(new, data)
        _set_fields_set(new, fields_set)
        extra = self.__pydantic_extra__
        _set_extra(new, deep_frozen(extra) if extra else extra)  # a newer model's fields it was read with
        _set_private(new, {"_revision": None if revision is None else _kept(revision), "_at": version})
        return new

    def committed_at(self, revision: int, store: int | str | None = None) -> None:
        """Record the revision of the commit that stored this copy (see :attr:`nbdb_revision`), and its store's token.

        For the Database, once the backend acknowledged the write: the copy
        is the value the commit stored, only its provenance was not known yet.
        The store's token (see :attr:`nbdb.spi.Backend.store_token`) is set
        first: an in-process store hands this very copy to readers and caches
        already, and one seen with a revision but no token was refused by
        :meth:`nbdb.Cache.wait_for` as another store's.
        """
        private = self.__pydantic_private__
        if private is None or "_revision" not in private:
            # Not a stored copy's own dict (stored_copy's holds "_revision"): DECODED, or a decoded copy's,
            # which the copies decoded with it share (see codec.decode_each): never changed in place.
            private = {} if private is None else dict(private)
            object.__setattr__(self, "__pydantic_private__", private)
        if store is not None:
            private["_store"] = store
        private["_revision"] = _kept(revision)

    def ref_keys(self) -> frozenset[tuple[str, uuid.UUID]]:
        """Every (table, id) this object points to: the rule, for every reference field of the object's class.

        Each model class that does not define its own gets one written from its fields
        (:func:`_ref_keys_of`), which answers as this does; an override may extend this one's answer
        through ``super()``.
        """
        specs = self.nbdb_references
        if not specs:
            return _NO_REFS
        fields = self.__dict__
        keys: list[tuple[str, uuid.UUID]] = []
        for spec in specs:
            value = fields[spec.field]
            if value is None:
                continue
            if spec.many:
                target = spec.target
                keys += [(target, member) for member in value]
            else:
                keys.append((spec.target, value))
        return _one_ref(keys[0]) if len(keys) == 1 else _shared_refs(keys)

    def unique_values(self) -> tuple[tuple[str, str], ...]:
        """Every unique (field, value) this object holds, as (names joined by ``+``, canonical JSON).

        A group of fields none of which is set (None) holds no value, as an
        optional unique column does in SQL. The fields of an instance were
        validated when it was made, so they are only serialised here (a plain
        ``str`` straight to its JSON); :meth:`unique_text` validates values
        that come from a caller. Each model class that does not define its own
        gets one written from its groups (:func:`_unique_values_of`), which answers as this does.
        """
        groups = self.nbdb_unique_groups
        if not groups:
            return ()
        fields = self.__dict__
        out = []
        for key, group, plain in groups:
            if plain:
                value = fields[group[0]]
                if type(value) is str:
                    out.append((key, _json_text(value)))
                    continue
            values = {name: fields[name] for name in group}
            if all(v is None for v in values.values()):
                continue
            out.append((key, self.unique_text(group, values, trusted=True)))
        return tuple(out)

    @classmethod
    def unique_text(cls, group: tuple[str, ...], values: Mapping[str, Any], *, trusted: bool = False) -> str:
        """The canonical JSON of the values of one unique group (validated as the fields would be).

        ``trusted``: the values are an instance's own, validated already; they are only serialised.
        """
        shown = []
        for name in group:
            adapter = _field_adapter(cls, name)
            try:
                value = values[name] if trusted else adapter.validate_python(values[name])
                shown.append(adapter.dump_python(value, mode="json"))
            except pydantic.ValidationError as exc:
                raise validation_error_of(exc, f"{cls.__name__}.{name}") from None
            except PydanticSerializationError as exc:  # a field serializer of the caller's that failed
                raise_interrupt(exc)
                raise errors.ValidationError(f"{cls.__name__}.{name}: {exc}") from None
        return json.dumps(shown if len(group) > 1 else shown[0], sort_keys=True, separators=(",", ":"))

    def index_values(self, field: str) -> Iterator[Any]:
        """The values under which a cache indexes this object for ``field``."""
        value = getattr(self, field)
        if isinstance(value, list | tuple | set | frozenset):
            yield from value
        else:
            yield value


_set_dict = slot_setter(BaseModel, "__dict__")
_set_fields_set = set_fields_set = slot_setter(BaseModel, "__pydantic_fields_set__")
_set_extra = set_extra = slot_setter(BaseModel, "__pydantic_extra__")
_set_private = set_private = slot_setter(BaseModel, "__pydantic_private__")
"""Set a model instance's pydantic slot, bypassing ``__setattr__`` (for the copies nbdb builds: stored, decoded)."""


_SHARED_LIMIT = 4096
_SHARED_REFS: dict[frozenset[tuple[str, uuid.UUID]], frozenset[tuple[str, uuid.UUID]]] = {}
"""Recent reference sets, shared by the objects that hold equal ones (they are immutable)."""
_SHARED_ONE: dict[tuple[str, uuid.UUID], frozenset[tuple[str, uuid.UUID]]] = {}
"""Recent sets of one reference, by that reference: no set to build to find the shared one."""
_LAST_ONE: tuple[str, object, frozenset[tuple[str, uuid.UUID]]] = ("", object(), _NO_REFS)
"""The last set of one reference handed out, with its table and the very id object it holds."""
_SHARED_FIELDS_SETS: dict[frozenset[str], FrozenSet] = {}
"""Fields sets with ``version`` added, shared by stored copies (frozen: ``model_fields_set`` hands them out)."""


def _with_version(fields_set: set[str]) -> set[str]:
    """``fields_set`` plus ``version``, shared by every stored copy built from an equal set.

    A set per stored object is one more container for the cyclic collector to
    scan, and objects of one model are mostly built with the same fields. The
    shared set is a :class:`~nbdb.models.shared.FrozenSet`: a caller changing
    one object's ``model_fields_set`` would otherwise change every copy's
    (pydantic's ``model_copy`` copies it to a plain set before changing it).
    """
    global _LAST_FIELDS
    last_key, last_shared = _LAST_FIELDS
    if fields_set == last_key:  # objects of one model are mostly built alike: no frozenset to build
        return last_shared
    key = frozenset(fields_set)
    shared = _SHARED_FIELDS_SETS.get(key)
    if shared is None:
        shared = FrozenSet(key | {"version"})
        if len(_SHARED_FIELDS_SETS) < _SHARED_LIMIT:
            _SHARED_FIELDS_SETS[key] = shared
    _LAST_FIELDS = (key, shared)
    return shared


_LAST_FIELDS: tuple[frozenset[str], set[str]] = (frozenset({"\0"}), set())
"""The fields set :func:`_with_version` saw last, and its shared copy (one tuple: replaced at once)."""


def _share_key_table(cls: type[Model]) -> None:
    """Enter the field names, in order, in the key table CPython shares between the instance dicts of ``cls``.

    A decoded copy (:func:`nbdb.codec.decode`) fills its attributes in field
    order, so its dict keeps only the values and shares the keys: about 290
    bytes less per port than the dict pydantic builds. CPython leaves room for
    new shared keys only while few instances exist, so they are entered now,
    before any; on an interpreter that shares no keys this changes nothing.
    """
    probe = cls.__new__(cls)
    slots = probe.__dict__
    for name in cls.model_fields:
        slots[name] = None


def written_of(obj: Any, at: int | None = None) -> int | None:
    """The revision that wrote ``obj``'s copy, as a record's :attr:`nbdb.spi.Record.written` tells it; None if unknown.

    The one reading of a copy's stamp, whichever way the copy carries it: a
    write's result its commit's revision ("_revision"), or that revision's
    :attr:`~nbdb.revision.Revision.written` where it carries one (OVSDB: the
    commit's token, which its rows carry; its revision counts per connection);
    a decoded copy its record's, and a derived copy its source's ("_written").
    What is left a :class:`~nbdb.revision.Revision` is one connection's, without
    a stamp (a mutation's read-back, an unpickled result): no record carries it,
    and only the store it came from can compare it (the OVSDB planner, with its
    clock). ``at``: only if the copy was stamped at that version ("_at"): a copy
    whose version was changed after it was stamped (pydantic's model_copy, or in
    place) is not that revision's, so its version alone is compared.
    """
    private = getattr(obj, "__pydantic_private__", None)
    if not private:
        return None
    written = private.get("_revision")
    if written is None:
        written = private.get("_written")
        if written is None:
            return None
    elif type(written) is Revision and written.written is not None:
        written = written.written
    if at is not None and private.get("_at") != at:
        return None
    return written  # type: ignore[no-any-return]


def _stamp_of(obj: Model) -> dict[str, Any] | None:
    """The revision that wrote a copy and the version it wrote, for a copy derived from it; None if unknown.

    A derived copy keeps :func:`written_of` its source as "_written" (its
    :attr:`Model.nbdb_revision` is None) with the version it was stamped at
    ("_at"), so its compare-and-swap checks the revision while its version
    is that one (see nbdb.writes.put_of).
    """
    written = written_of(obj)
    if written is None:
        return None
    at = obj.__pydantic_private__.get("_at")  # type: ignore[union-attr]  # written_of found it a dict
    return {"_written": written} if at is None else {"_written": written, "_at": at}


def _own_private(obj: Model) -> None:
    """Give ``obj`` a private dict of its own, before a declared private attribute is set or deleted in it.

    A decoded copy's dict is shared: DECODED by every copy decoded without a
    revision in the process, a revision's by the copies decoded with it (see
    codec.decode_each). Pydantic writes a declared private attribute into
    that dict in place, so ``a._note = x`` showed on every copy sharing it.
    """
    private = obj.__pydantic_private__
    if private is not None:
        object.__setattr__(obj, "__pydantic_private__", dict(private))


def _kept(revision: int | None) -> int | None:
    """How a copy keeps the revision of its commit: a plain int when its scope is the global one.

    Every stored object keeps one, and an instance of a Python class (even an
    ``int`` subclass without a ``__dict__``) is tracked by the cyclic
    collector; an ``int`` is not. :attr:`Model.nbdb_revision` makes it a
    :class:`~nbdb.revision.Revision` again.
    """
    if type(revision) is Revision and revision.scope is GLOBAL_SCOPE:
        return int(revision)
    return revision


def committed_all(copies: Iterable[Model], revision: int, store: int | str | None = None) -> None:
    """:meth:`Model.committed_at` of every copy that one commit stored, the revision laid out once for all.

    A transaction stamps each of its objects: this is that loop without a
    call per object.
    """
    kept = _kept(revision)
    if store is not None:  # the store's token first (see committed_at)
        for copy in copies:
            private = copy.__pydantic_private__
            if type(private) is dict and "_revision" in private:  # a stored copy's own (see committed_at)
                private["_store"] = store
                private["_revision"] = kept
            else:
                copy.committed_at(revision, store)
        return
    for copy in copies:
        private = copy.__pydantic_private__
        if type(private) is dict and "_revision" in private:
            private["_revision"] = kept
        else:
            copy.committed_at(revision)


_FROZEN: dict[type, type] = {list: FrozenList, dict: FrozenDict, set: FrozenSet}


def freeze_lineage(obj: Model) -> None:
    """Make the lists, maps and sets of ``obj``'s lineage fields immutable, in place (see :func:`lineage_is_own`).

    A copy whose stored references and unique values are derived from its own
    fields must not let them change under it: ``sw.load_balancer.append(id)``
    on such a copy, then ``update(sw)``, would find no new reference to record
    and leave the target deletable while referenced. Frozen (see
    :mod:`nbdb.models.shared`), the change raises :class:`nbdb.ValidationError`
    instead; :meth:`Model.replace` derives a changed copy.
    """
    _freeze_in(type(obj), obj.__dict__)


def _freeze_in(model: type[Model], data: dict[str, Any]) -> None:
    for name in model.nbdb_lineage_containers:
        value = data.get(name)
        frozen = _FROZEN.get(type(value))
        if frozen is not None:
            data[name] = frozen(value)


def _atom(annotation: Any) -> bool:
    """Whether a field of ``annotation`` holds a value that never changes (see :data:`nbdb.models.shared.IMMUTABLE`).

    A class of another kind (an arbitrary class, a ``deque``, a dataclass, a model) may change in place: its
    field is frozen through (:func:`may_nest`), where a value nbdb cannot freeze is refused at the write.
    """
    if annotation is type(None) or get_origin(annotation) is typing.Literal:
        return True
    if get_origin(annotation) is typing.Annotated:
        return _atom(get_args(annotation)[0])
    if get_origin(annotation) in (typing.Union, types.UnionType):
        return all(_atom(arg) for arg in get_args(annotation))
    # list[int] passes as a type (and typing.Any is a class): a generic, Any and object may hold anything
    return get_origin(annotation) is None and (
        annotation in _ATOM_MARKERS or (isinstance(annotation, type) and is_immutable_class(annotation))
    )


_ATOM_MARKERS = frozenset(
    {
        pydantic.IPvAnyAddress,
        pydantic.IPvAnyInterface,
        pydantic.IPvAnyNetwork,
        pydantic.AwareDatetime,
        pydantic.NaiveDatetime,
        pydantic.PastDate,
        pydantic.FutureDate,
        pydantic.PastDatetime,
        pydantic.FutureDatetime,
        pydantic.EmailStr,
    }
)
"""pydantic's annotation classes whose values are of :data:`IMMUTABLE` classes (an IP address, a datetime, a
text), though they are none: a field of one is an atom, frozen at no cost (it was frozen through since b472a6e)."""


def may_nest(annotation: Any) -> bool:
    """Whether a field of ``annotation`` may hold a list, map, set or model inside another, or a model.

    False only of an atom (a scalar type, an enum, a literal) and of a flat
    list, map, set or tuple of atoms (optional, annotated, or a union of
    such): their stored copies need freezing at the top only.
    """
    if _atom(annotation):
        return False
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return may_nest(get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(may_nest(arg) for arg in get_args(annotation))
    if origin in (list, set, frozenset, dict, tuple) or annotation in (list, set, frozenset, dict, tuple):
        args = get_args(annotation)
        return not args or not all(arg is Ellipsis or _atom(arg) for arg in args)
    return True


def _indexable(annotation: Any) -> bool:
    """Whether a field of ``annotation`` holds values a cache can index: atoms, or lists or sets of atoms."""
    origin = get_origin(annotation)
    if annotation is dict or origin is dict:
        return False
    if origin is typing.Annotated:
        return _indexable(get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return all(_indexable(arg) for arg in get_args(annotation))
    if origin in (list, set, frozenset):
        return not any(may_hold_container(arg) for arg in get_args(annotation))
    return True


def may_hold_container(annotation: Any) -> bool:
    """Whether a field of ``annotation`` may hold a (mutable) list, map or set."""
    if annotation in (list, dict, set):
        return True
    origin = get_origin(annotation)
    if origin in (list, dict, set):
        return True
    if origin is typing.Annotated:
        return may_hold_container(get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(may_hold_container(arg) for arg in get_args(annotation))
    return annotation is Any


def _install_written(cls: type[Model], name: str, write: Callable[[type[Model]], Callable[..., Any]]) -> None:
    """Give ``cls`` its own ``name`` written by ``write`` from its fields, unless a class between it and
    :class:`Model` in its MRO defines ``name`` by hand: then the first such answers, as it did before any was
    written (in ``C(A, B)`` with B's own, A's written one came first in the MRO and hid B's)."""
    rule = Model.__dict__[name]
    for klass in cls.__mro__:
        own = klass.__dict__.get(name)
        if own is None or own is rule or getattr(own, "__nbdb_written__", False):
            if klass is Model:
                break
            continue
        if getattr(cls, name) is not own:
            setattr(cls, name, own)
        return
    made = write(cls)
    setattr(cls, name, made if made is rule else _written(made))


def _compiled(source: str, name: str, cls: type[Model], constants: dict[str, Any]) -> Callable[..., Any]:
    """The function ``name`` that ``source`` (code of our own, reading this module's globals) defines inside
    its ``make``, called with ``constants``: each value a closure's, never its ``repr`` pasted into code (a
    ``Reference(SomeClass)`` was a SyntaxError at the class)."""
    code = compile(source, f"<nbdb {name} of {cls.__name__}>", "exec")
    scope: dict[str, Any] = {}
    exec(code, globals(), scope)
    made = scope["make"](**constants)
    made.__doc__ = Model.__dict__[name].__doc__
    return made  # type: ignore[no-any-return]


def _ref_keys_of(cls: type[Model]) -> Callable[[Model], frozenset[tuple[str, uuid.UUID]]]:
    """:meth:`Model.ref_keys` written for ``cls`` from its reference fields, each field read inline (hot: every
    write; a loop over the specs read each spec's attributes per object, 8.6k instructions a port). An object
    of another class (a subclass's, reaching it through ``super()``) gets the rule, for its own fields."""
    specs = cls.nbdb_references
    constants: dict[str, Any] = {"_cls": cls, "_rule": Model.__dict__["ref_keys"]}
    lines = ["    def ref_keys(self):", "        if type(self) is not _cls:", "            return _rule(self)"]
    if not specs:
        lines.append("        return _NO_REFS")
    else:
        lines += ["        d = self.__dict__", "        keys = []"]
        for n, spec in enumerate(specs):
            constants[f"f{n}"], constants[f"t{n}"] = spec.field, spec.target
            lines += [f"        v = d[f{n}]", "        if v is not None:"]
            if spec.many:
                lines.append(f"            for m in v: keys.append((t{n}, m))")
            else:
                lines.append(f"            keys.append((t{n}, v))")
        lines += [
            "        if len(keys) == 1:",
            "            key = keys[0]",
            "            last = _LAST_ONE",  # _one_ref's own first test, without its call
            "            return last[2] if key[1] is last[1] and key[0] == last[0] else _one_ref(key)",
            "        return _shared_refs(keys)",
        ]
    source = f"def make({', '.join(constants)}):\n" + "\n".join(lines) + "\n    return ref_keys"
    return _compiled(source, "ref_keys", cls, constants)


def _unique_values_of(cls: type[Model]) -> Callable[[Model], tuple[tuple[str, str], ...]]:
    """:meth:`Model.unique_values` written for ``cls``: when every unique group is one plain ``str`` field (a
    port's name), those fields read inline and, when they hold text, their values made at once (hot: every
    write); otherwise, for any other value, and for an object of another class, the rule."""
    groups = cls.nbdb_unique_groups
    rule = Model.__dict__["unique_values"]
    if groups and not all(plain for _, _, plain in groups):
        return rule  # type: ignore[no-any-return]
    constants: dict[str, Any] = {"_cls": cls, "_rule": rule}
    lines = ["    def unique_values(self):", "        if type(self) is not _cls:", "            return _rule(self)"]
    if not groups:
        lines.append("        return ()")
    else:
        lines.append("        d = self.__dict__")
        names = [f"v{n}" for n in range(len(groups))]
        for n, (key, group, _) in enumerate(groups):
            constants[f"f{n}"], constants[f"k{n}"] = group[0], key
            lines.append(f"        v{n} = d[f{n}]")
        lines.append("        if " + " and ".join(f"type({v}) is str" for v in names) + ":")
        made = "".join(f"(k{n}, _json_text(v{n}))," for n in range(len(groups)))
        lines += [f"            return ({made})", "        return _rule(self)"]
    source = f"def make({', '.join(constants)}):\n" + "\n".join(lines) + "\n    return unique_values"
    return _compiled(source, "unique_values", cls, constants)


def _one_ref(key: tuple[str, uuid.UUID]) -> frozenset[tuple[str, uuid.UUID]]:
    """The shared set of the one reference ``key`` (the common case: a port's switch)."""
    global _LAST_ONE
    last = _LAST_ONE
    if key[1] is last[1] and key[0] == last[0]:
        # Siblings built from one parent hold its very id: no (table, UUID) to hash, and
        # UUID.__hash__ is a Python call. A pair of names read from one tuple: never torn.
        return last[2]
    shared = _SHARED_ONE.get(key)
    if shared is None:
        if len(_SHARED_ONE) >= _SHARED_LIMIT:
            _SHARED_ONE.clear()
        shared = _SHARED_ONE[key] = frozenset((key,))
    _LAST_ONE = (key[0], key[1], shared)
    return shared


def _shared_refs(keys: list[tuple[str, uuid.UUID]]) -> frozenset[tuple[str, uuid.UUID]]:
    """The set of ``keys`` (none or more than one), shared with the objects that hold an equal one."""
    if not keys:
        return _NO_REFS
    refs = frozenset(keys)
    # Siblings point to the same parents (every port of a switch): one shared
    # set instead of a set and a tuple per stored object for the collector to scan.
    shared = _SHARED_REFS.get(refs)
    if shared is not None:
        return shared
    if len(_SHARED_REFS) >= _SHARED_LIMIT:
        _SHARED_REFS.clear()  # bounded: a workload that moves between parents starts over
    _SHARED_REFS[refs] = refs
    return refs


def _fields_only(model: type[Model], data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (an instance's ``__dict__``) without what is no field of ``model``: the values a
    ``functools.cached_property`` caches there, which are the instance's, not the object's."""
    fields = model.__pydantic_fields__
    return {name: value for name, value in data.items() if name in fields}


def _deep_stored_copy(self: Model, version: int, *, revision: int | None = None) -> Model:
    """:meth:`Model.stored_copy` frozen through, for a class with fields that may nest (``nbdb_deep_fields``)."""
    new = Model.stored_copy(self, version, revision=revision)
    data = new.__dict__
    for name in type(self).nbdb_deep_fields:
        try:
            data[name] = deep_frozen(data[name])
        except errors.ValidationError as exc:  # a value nbdb cannot freeze: refused before anything is written
            raise errors.ValidationError(f"{self.nbdb_table} {self.id}: field {name!r}: {exc}") from None
    return new


def lineage_is_own(obj: Model) -> bool:
    """Whether ``obj``'s stored references and unique values are its own (:meth:`Model.stored_refs` derives them).

    True of a stored copy (returned by a write, or decoded) and of a copy
    derived from one with :meth:`Model.replace` changing none of them.
    """
    private = obj.__pydantic_private__
    return private is not None and "_stored_refs" not in private


@functools.lru_cache(maxsize=1024)
def _field_adapter(model: type[Model], name: str) -> pydantic.TypeAdapter[Any]:
    info = model.model_fields[name]
    annotation: Any = info.annotation
    if info.metadata:
        annotation = typing.Annotated[annotation, *info.metadata]
    return pydantic.TypeAdapter(annotation)


def _plain_str(info: pydantic.fields.FieldInfo) -> bool:
    """Whether a field holds a ``str`` that serialises as itself (no serializer of its own)."""
    return info.annotation is str and not any(isinstance(m, PlainSerializer | WrapSerializer) for m in info.metadata)


def check_field_value(model: type[Model], name: str, value: Any) -> None:
    """ValidationError if ``value`` is nothing ``model``'s field ``name`` can hold (a field that may hold a
    list, map or set is not checked: a search matches it by a member)."""
    info = model.model_fields.get(name)
    if info is None or (type(value) is str and info.annotation is str) or may_hold_container(info.annotation):
        return  # text for a text field (the common miss of a find by name) needs no look
    try:
        _field_adapter(model, name).validate_python(value)
    except pydantic.ValidationError as exc:
        raise validation_error_of(exc, f"{model.__name__}.{name}") from None


@functools.lru_cache(maxsize=1024)
def held_table(model: type[Model], name: str) -> str | None:
    """The table whose objects' ids ``model``'s field ``name`` holds (its own for ``id``); None for no reference."""
    if name == "id":
        return model.nbdb_table
    return next((ref.target for ref in model.nbdb_references if ref.field == name), None)


def check_held_object(model: type[Model], name: str, value: Any) -> bool:
    """Whether ``model``'s field ``name`` holds ids of objects; ValidationError if ``value`` (an object, or a
    projected cache's view of one: anything with its table's ``nbdb_table``) is of another table than it holds.

    A router given for a port's switch (find(LogicalSwitchPort, switch=router), a mutate adding a router to a
    port group's ports) was taken for its id: a silent miss, or a ReferenceError naming a switch that never was.
    """
    table = held_table(model, name)
    if table is None:
        return False
    if type(value).nbdb_table != table:
        what = "is" if name == "id" else "references"
        raise errors.ValidationError(
            f"{model.__name__}.{name} {what} {table}: a {type(value).__name__} (of table "
            f"{type(value).nbdb_table}) is no such object"
        )
    return True


def field_value(model: type[Model], name: str, value: Any) -> Any:
    """``value`` as ``model``'s field ``name`` holds it (normalised by its validators); ValidationError if it cannot."""
    try:
        return _field_adapter(model, name).validate_python(value)
    except pydantic.ValidationError as exc:
        raise validation_error_of(exc, f"{model.__name__}.{name}") from None


def model_for_table(table: str) -> type[Model]:
    """The model class registered for ``table``; :class:`nbdb.NotFoundError` if none."""
    try:
        return _REGISTRY[table]
    except KeyError:
        raise errors.NotFoundError(f"no model is registered for table {table!r}") from None


def check_references_resolve(model: type[Model]) -> None:
    """ValidationError unless every :class:`Reference` of ``model`` names the table of a model defined by now.

    A reference names its target by table, so that a model may point to one
    defined after it (a forward reference): the name is looked up when the
    model is first written, not when it is defined. ``Reference("NoSuchModel")``
    (a typo, or a class name where the table is named otherwise) was taken, and
    every write that set it failed with a ReferenceError saying the object did not
    exist; one that left it None was stored pointing nowhere.
    """
    for spec in model.nbdb_references:
        if spec.target in _REGISTRY:
            continue
        named = [m for m in _REGISTRY.values() if m.__name__ == spec.target]
        hint = f": {named[0].__name__}'s table is {named[0].nbdb_table!r}" if named else " (defined yet)"
        raise errors.ValidationError(
            f"{model.__name__}.{spec.field} references table {spec.target!r}, which no model has{hint}; "
            "a Reference names the table of the referenced model"
        )


def all_models() -> tuple[type[Model], ...]:
    """Every model class defined so far (the logical schema and the user's own)."""
    return tuple(_REGISTRY.values())


def registry_generation() -> int:
    """A number that changes whenever a model class is defined (or defined again): :func:`all_models` may differ."""
    return _GENERATION
