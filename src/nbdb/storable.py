"""What every store can hold: the check each write passes before anything is written.

JSON, and so every store of bytes, holds Unicode text, finite floats and the
values pydantic's JSON serializer writes; ``memory://`` keeps objects and
never encodes them. So that no store takes what another refuses, every write
is held to one rule here (:func:`check_storable`, run by
:func:`nbdb.codec.encode` and by the stores that keep values), with a check
written per model from its annotations so that the common object (ASCII text
of the types its fields declare) costs a loop of ``isascii()`` calls.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import math
import types
import typing
from collections.abc import Callable
from typing import Any, cast
from uuid import UUID

import pydantic
import pydantic_core
from pydantic_core import PydanticSerializationError

from nbdb import coreschema, errors
from nbdb.models.base import (
    VALIDATED,
    Model,
    Reference,
    check_references_resolve,
    may_hold_container,
    raise_interrupt,
    validation_error_of,
)
from nbdb.models.shared import DECLARED, FrozenDict, FrozenList, FrozenSet, thawed_class

__all__ = ["FIELD_VALIDATORS", "SECRETS", "check_storable", "json_typed_fields", "storable"]


def check_storable(obj: Model) -> None:
    """Refuse ``obj`` (ValidationError) if no store can hold it as it is.

    pydantic's serializer refuses a lone surrogate in a string as a value, but writes a map
    key holding one as U+FFFD characters: another key, silently stored. Every write is checked
    here (:func:`encode`, and a store that keeps values and never encodes them,
    ``keeps_values``), so that no store takes what another refuses and no key changes on its
    way in; and so that a list, map or set of the caller's own object, changed in place after
    it was validated, still holds what its fields and validators accept. One check per model
    (:func:`_check_of`) costs the common object a loop of ``isascii()`` calls (constant time in
    CPython); only a non-ASCII string is encoded to find out. (A length bound on every ``str``
    would make pydantic-core check the text at validation, but it cost 8 % more instructions
    to build or decode a port, on every backend and every read.)
    """
    check = _CHECKS.get(type(obj))
    if check is None:
        check_references_resolve(type(obj))  # once per model, at its first write (not cached until it passes)
        _check_field_types(type(obj))
        check = _CHECKS[type(obj)] = _check_of(type(obj))
    fields = obj.__dict__
    verdict = check(fields)
    if verdict is not True:
        _look_closer(obj, fields, verdict)


def json_typed_fields(model: type[Model]) -> frozenset[str]:
    """The fields of ``model`` whose values may read back from their JSON as other classes than they hold.

    Those that may hold a value of any class (``Any``, ``object``, a bare ``list``, at any depth), read back
    as JSON's own types (text, numbers, lists, maps of text keys), and those holding a union of several
    classes at any depth (``str | bytes``, ``dict[str, list[str | date]]``), whose JSON text may be taken by
    another choice than the value's (``b"x"`` reads back as ``"x"``). Once per model."""
    known = _AS_JSON.get(model)
    if known is None:
        if model not in _CHECKS:
            _check_field_types(model)  # (a write checked it already, see check_storable)
        unions = {name for name, info in model.model_fields.items() if _has_union(info.annotation)}
        known = _AS_JSON[model] = frozenset(_UNTYPED.get(model, ())) | unions
    return known


_AS_JSON: dict[type[Model], frozenset[str]] = {}


def _has_union(annotation: Any) -> bool:
    """Whether ``annotation`` holds a union of two classes or more (None aside), at any depth."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        if sum(arg is not type(None) for arg in args) > 1:
            return True
    return any(_has_union(arg) for arg in args)


def _look_closer(obj: Model, fields: dict[str, Any], verdict: object) -> None:
    """:func:`check_storable` of an object its model's check did not pass at a glance.

    ``_WRONG`` (a value of another type than its field's, a length its field does not allow)
    and ``_AGAIN`` (all text ASCII, but a list, map or set a validator must see again) have the
    model validate the fields again, as they are: models are frozen, their containers are not,
    and a change in place (``port.external_ids["k"] = 5``, ``port.addresses.append("garbage")``)
    was stored as it was, and every later read of the record failed.
    """
    for name in _UNTYPED.get(type(obj), ()):
        if _holds_secret(fields[name]):
            raise errors.ValidationError(
                f"{obj.nbdb_table} {obj.id} cannot be stored: field {name!r} holds a pydantic secret where its "
                "annotation does not declare one (under Any, say): pydantic writes it as its mask, so the secret "
                "would be lost; declare the secret's type (SecretStr, SecretBytes, Secret[T]) where it is held"
            )
    if verdict is not _AGAIN and not storable(fields):
        wrong = ", ".join(sorted(name for name, value in fields.items() if not storable(value)))
        raise errors.ValidationError(
            f"{obj.nbdb_table} {obj.id} cannot be stored: {wrong} holds text that is not Unicode, bytes that are "
            "not UTF-8, a float that is infinite or NaN, a time whose UTC offset is not whole minutes (JSON "
            "writes it to the minute: another instant read back) or a zone's time in its repeated or skipped hour "
            "(read back at a fixed offset, never equal: write it at a fixed offset, astimezone(timezone.utc)), or a "
            "value JSON cannot hold"
        )
    if verdict is False:
        return
    try:
        valid = type(obj).__pydantic_validator__.validate_python(fields).__dict__
    except pydantic.ValidationError as exc:
        raise errors.ValidationError(
            f"{obj.nbdb_table} {obj.id} cannot be stored: a value its field or a validator refuses (a validator's own "
            f"return value, or changed in place?): {validation_error_of(exc, type(obj).__name__)}"
        ) from None
    # Bytes where text belongs, a text once normalised, a tuple where a list belongs, a frozenset where a
    # set does (equal to the set its field's validation gives, so compared by class too: it was written as
    # it was, with a pydantic serializer warning on a store of bytes): not what a store of bytes reads back.
    if not same_as_validated(valid, fields):
        wrong = ", ".join(
            sorted(name for name, value in valid.items() if not same_as_validated(value, fields.get(name)))
        )
        raise errors.ValidationError(
            f"{obj.nbdb_table} {obj.id} cannot be stored: {wrong} valid only once converted or normalised "
            "(changed in place?)"
        )
    # pydantic takes a model (or dataclass) instance inside a field as it is, never validating it again:
    # ``outer.inners[0].macs.append("garbage")`` was written, and every later read of the table failed.
    for name, rebuilt in _NESTED.get(type(obj), ()):
        if fields[name] is not None and not rebuilt(fields[name]):
            raise errors.ValidationError(
                f"{obj.nbdb_table} {obj.id} cannot be stored: {name} holds a model or dataclass changed in place "
                "to a value it refuses, or valid only once converted"
            )


def _in_place(model: type[Model], name: str) -> str | None:
    """What checks that a plain (the caller's) list, map or set of field ``name`` still holds what its
    validators accept: "model" (only the model validates it again), "texts" (a list or set of texts
    each known to pass, or the field validated as it is), "field" (the field validated as it is), None
    (its types and length, which :func:`_check_of` checks anyway)."""
    decorators = model.__pydantic_decorators__
    validated = {name for d in decorators.field_validators.values() for name in d.info.fields}
    if decorators.model_validators or decorators.root_validators or decorators.validators or validated & {name, "*"}:
        return "model"
    info = model.model_fields[name]
    if not all(_harmless(m) for m in info.metadata):
        return "field"
    inner = _unwrapped(info.annotation)
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    if origin in (list, set, frozenset, dict) and args and all(_plain_member(arg) for arg in args):
        return None
    if origin in (list, set, frozenset) and len(args) == 1 and _unwrapped(args[0]) is str:
        return "texts"
    return "field"


def _as_it_is(info: pydantic.fields.FieldInfo, known: set[str] | None) -> Callable[[Any], bool]:
    """Whether a value of the field validates to itself (its texts then ``known``, if given)."""
    annotation: Any = info.annotation
    validate = _adapter(typing.Annotated[annotation, *info.metadata] if info.metadata else annotation).validate_python

    def valid(value: Any) -> bool:
        try:
            if not same_as_validated(validate(value), value):  # a tuple or frozenset inside, too
                return False
        except (pydantic.ValidationError, ValueError):
            return False
        if known is not None:
            if len(known) >= _KNOWN_LIMIT:
                known.clear()  # bounded
            known.update(value)
        return True

    return valid


def _nests_model(annotation: Any) -> bool:
    """Whether a field of ``annotation`` may hold a pydantic model or a dataclass (at any depth)."""
    if isinstance(annotation, type) and (
        issubclass(annotation, pydantic.BaseModel) or dataclasses.is_dataclass(annotation)
    ):
        return True
    return any(_nests_model(arg) for arg in typing.get_args(annotation))


def _rebuilt(info: pydantic.fields.FieldInfo) -> Callable[[Any], bool]:
    """Whether a value of the field validates to itself once dumped (its models and dataclasses rebuilt)."""
    annotation: Any = info.annotation
    adapter = pydantic.TypeAdapter(typing.Annotated[annotation, *info.metadata] if info.metadata else annotation)

    def valid(value: Any) -> bool:
        try:
            return same_as_validated(
                adapter.validate_python(adapter.dump_python(value, round_trip=True, warnings=False)), value
            )
        except PydanticSerializationError as exc:
            raise_interrupt(exc)
            return False
        except (pydantic.ValidationError, ValueError, TypeError):
            return False

    return valid


_FROZEN_OF: dict[type, type] = {FrozenList: list, FrozenDict: dict, FrozenSet: set}
"""nbdb's frozen copies, each of the class validation gives (a stored or decoded object holds them)."""
_COMPARED = frozenset({list, tuple, set, frozenset, dict, FrozenList, FrozenDict, FrozenSet})


def same_as_validated(valid: Any, value: Any) -> bool:
    """Whether ``value`` is ``valid`` (what validation made of it) as a store of bytes reads it back: equal,
    and of the same classes at every depth (nbdb's frozen copies, a frozen twin's instance too, count as the class
    they copy).

    Equality alone takes a tuple for a list only at the top (``("a",) != ["a"]``) and never a frozenset
    for a set (``frozenset({"a"}) == {"a"}``): such a value was written as it was, and pydantic's serializer
    warned that it was not the field's type.
    """
    valid_class, value_class = thawed_class(type(valid)), thawed_class(type(value))  # a frozen twin as its class
    if valid_class not in _COMPARED and value_class not in _COMPARED:
        if isinstance(valid, pydantic.BaseModel) and value_class is valid_class:
            # Its fields: a cached_property's value, or one model_post_init set, is in __dict__ too, never stored.
            fields, held = type(valid).__pydantic_fields__, value.__dict__
            return all(
                name in held and same_as_validated(item, held[name])
                for name, item in valid.__dict__.items()
                if name in fields
            )
        if dataclasses.is_dataclass(valid) and not isinstance(valid, type) and value_class is valid_class:
            return all(
                same_as_validated(getattr(valid, f.name), getattr(value, f.name)) for f in dataclasses.fields(valid)
            )
        return bool(valid == value)
    if _FROZEN_OF.get(valid_class, valid_class) is not _FROZEN_OF.get(value_class, value_class):
        return False
    if isinstance(valid, dict):
        return valid.keys() == value.keys() and all(same_as_validated(item, value[key]) for key, item in valid.items())
    if isinstance(valid, list | tuple):
        return len(valid) == len(value) and all(same_as_validated(a, b) for a, b in zip(valid, value, strict=True))
    return bool(valid == value)  # a set's members are hashable values, compared as the set compares them


def _adapter(annotation: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(annotation, config=pydantic.ConfigDict(allow_inf_nan=False))


def _harmless(item: Any) -> bool:
    """Container-level metadata that replaces no value and refuses none beyond a length (which the per-model
    check of :func:`_check_of` bounds): a length, a reference, a field's description."""
    if isinstance(item, pydantic.fields.FieldInfo):
        return all(_harmless(inner) for inner in item.metadata)
    if isinstance(item, Reference):
        return True
    # annotated_types' MinLen and MaxLen (what Field(min_length=..., max_length=...) puts there): a length only.
    return (
        dataclasses.is_dataclass(item)
        and not isinstance(item, type)
        and {f.name for f in dataclasses.fields(item)} <= {"min_length", "max_length"}
    )


def _plain_member(annotation: Any) -> bool:
    """Whether a member of ``annotation`` is valid whenever it has its type (which :func:`_check_of` checks)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _plain_member(args[0]) and all(isinstance(m, Reference) for m in args[1:])
    if origin in (typing.Union, types.UnionType):
        return all(_plain_member(arg) for arg in args)
    if annotation is type(None):
        return True
    return isinstance(annotation, type) and origin is None and issubclass(annotation, (str, bytes, *_NO_TEXT))


def storable(value: object) -> bool:
    """Whether every string in ``value`` (and in its containers and models, at any depth) encodes as UTF-8,
    and every float is finite (JSON has no infinity nor NaN: pydantic writes them as null).

    Any pydantic model is looked into, not only nbdb's: a plain ``BaseModel`` (or
    dataclass) field has its own config, so neither ``allow_inf_nan=False`` nor
    the serializer's refusals reach inside it the way they do a model's own fields.
    """
    if isinstance(value, str):
        if value.isascii():
            return True
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, bytes):  # JSON holds bytes as UTF-8 text (pydantic's default)
        try:
            value.decode()
        except UnicodeDecodeError:
            return False
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, pydantic.BaseModel):  # its fields: a cached_property's value is in __dict__ too, never stored
        fields = type(value).__pydantic_fields__
        return all(storable(item) for name, item in value.__dict__.items() if name in fields)
    if isinstance(value, dict):
        return all(storable(key) and storable(item) for key, item in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return all(storable(item) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return all(storable(getattr(value, field.name)) for field in dataclasses.fields(value))  # slots too
    if value is None or isinstance(value, int | UUID | enum.Enum):
        return True
    if isinstance(value, datetime.datetime | datetime.time):
        # pydantic writes a UTC offset to the minute: +00:00:30 was written +00:00, another instant read back.
        offset = value.utcoffset()
        if offset is None:
            return True
        if offset % _MINUTE:
            return False
        # JSON keeps the offset, not the zone: a zone's time in its repeated or skipped hour (a DST fold or gap)
        # reads back as the same instant at a fixed offset, which Python never finds equal to it.
        return (
            type(value.tzinfo) is datetime.timezone
            or not isinstance(value, datetime.datetime)
            or (value == value.replace(tzinfo=datetime.timezone(offset)))
        )
    if isinstance(value, SECRETS):  # written by a caller's own serializer (see :func:`_secret_problem`)
        return storable(value.get_secret_value())
    if DECLARED and isinstance(value, tuple(DECLARED)):
        return _declared_storable(value)
    # Any other value (under an ``Any`` field, say): storable when pydantic's JSON serializer writes it
    # (a datetime, a Decimal...). memory:// keeps objects and never encodes them: without this it took an
    # ``object()`` that every store of bytes refuses.
    return _writes_json(pydantic_core.to_json, value)


_MINUTE = datetime.timedelta(minutes=1)
SECRETS = (pydantic.SecretStr, pydantic.SecretBytes, pydantic.Secret)
"""pydantic's secret classes (``Secret[T]``'s instances are of ``Secret`` subclasses)."""


def _check_field_types(model: type[Model]) -> None:
    """Refuse (ValidationError, naming the field) a model with a field whose values no store of bytes reads back.

    Once per model, at its first write, on every store (``memory://`` too, so that no store takes what
    another refuses): a ``Json[...]`` field (pydantic reads it only from JSON text, so every check of a
    write, and every read of a record, refused its value), a dataclass with a field of ``init=False``
    (written, then refused by every read as an unexpected argument, or read without it), a pydantic
    secret no serializer of the caller's writes (see :func:`_secret_problem`). Also notes the fields that
    may hold a secret where none is declared (under ``Any``): checked at each write (see :func:`_look_closer`).
    """
    schema = model.__pydantic_core_schema__
    refs = coreschema.definitions(schema)
    found = coreschema.model_node(schema, model)
    fields = None if found is None else found[1].get("fields")
    if fields is None:
        return
    untyped = []
    for name, field in fields.items():
        problem = coreschema.find(field, _field_problem, refs=refs)
        if problem is not None:
            raise errors.ValidationError(f"{model.__name__} cannot be stored: field {name!r} {problem}")
        if coreschema.find(field, _holds_any, refs=refs, skip=_SERIALIZERS):
            untyped.append(name)
    problem = _secret_problem(model)
    if problem is not None:
        raise errors.ValidationError(f"{model.__name__} cannot be stored: {problem}")
    if untyped:
        _UNTYPED[model] = tuple(untyped)


def _secret_problem(model: type[Model]) -> str | None:
    """Why a field of ``model`` (at any depth) would lose a pydantic secret; None if none would.

    pydantic writes a secret (``SecretStr``, ``SecretBytes``, ``Secret[T]`` and their subclasses) to JSON
    as its mask, ``"**********"``: a store of bytes would keep the mask and lose the secret (``memory://``,
    which keeps objects, would not: every store refuses it alike). A secret is accepted where the caller
    writes it with a serializer of its own: a ``field_serializer`` of the field in its class (found through
    ``__pydantic_decorators__``; pydantic's documented pattern returns ``get_secret_value()``), or a
    ``PlainSerializer`` in its ``Annotated`` metadata (plain ones only: a wrap serializer may pass the
    secret on to pydantic's, which writes the mask). Found from the public annotations
    only (``model_fields``, ``dataclasses.fields``), through ``Optional``, unions, containers, nested models
    and dataclasses.
    """
    found = _secret_field(model, set())
    if found is None:
        return None
    path, owner, leaf = found
    return (
        f'field {path!r} holds a pydantic secret, which pydantic writes to JSON as its mask ("**********"): a '
        "store of bytes would keep the mask and lose the secret. Write its value yourself, as pydantic documents, "
        f"in {owner}: @field_serializer({leaf!r}, when_used='json') def dump(self, v): return v.get_secret_value()"
    )


def _secret_field(cls: type, seen: set[type]) -> tuple[str, str, str] | None:
    """The first field of model or dataclass ``cls`` holding a secret no serializer of the caller's writes:
    its dotted path, the class that declares it and its name there; None if none."""
    if cls in seen:
        return None
    seen.add(cls)
    fields: list[tuple[str, Any, list[Any]]] = []
    if issubclass(cls, pydantic.BaseModel):
        fields = [(name, info.annotation, list(info.metadata)) for name, info in cls.model_fields.items()]
    elif dataclasses.is_dataclass(cls):
        try:
            hints = typing.get_type_hints(cls, include_extras=True)
        except Exception:  # an annotation that does not resolve here: nothing more to learn from it
            hints = {}
        fields = [(field.name, hints.get(field.name, field.type), []) for field in dataclasses.fields(cls)]
    serialized = _user_serialized_fields(cls)
    encoded = _json_encoded(cls)
    for name, annotation, metadata in fields:
        if "*" in serialized or name in serialized or _has_serializer(metadata):
            continue
        found = _secret_in(annotation, seen, encoded)
        if found is not None:
            path, owner, leaf = found
            return (name, cls.__qualname__, name) if path == "" else (f"{name}.{path}", owner, leaf)
    return None


def _secret_in(annotation: Any, seen: set[type], encoded: tuple[type, ...] = ()) -> tuple[str, str, str] | None:
    """Where ``annotation`` holds a secret no serializer of the caller's writes (see :func:`_secret_field`;
    a path of "" for the annotation itself); None if it holds none. ``encoded``: the classes the holding
    class's ``json_encoders`` write."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        inner, *metadata = typing.get_args(annotation)
        return None if _has_serializer(metadata) else _secret_in(inner, seen, encoded)
    if isinstance(annotation, typing.TypeVar):
        # An unparametrized generic's field: pydantic validates and writes it as its bound, one of its
        # constraints or its default (an unbound one as Any: checked value by value at the write).
        held = (annotation.__bound__, *annotation.__constraints__, getattr(annotation, "__default__", None))
        return next((f for arg in held if arg is not None and (f := _secret_in(arg, seen, encoded))), None)
    aliased = getattr(annotation, "__supertype__", None) or getattr(annotation, "__value__", None)
    if aliased is not None:  # a NewType, a `type X = ...` alias: pydantic writes what they name
        return _secret_in(aliased, seen, encoded)
    kind = origin if isinstance(origin, type) else annotation
    if isinstance(kind, type) and issubclass(kind, SECRETS):
        return None if issubclass(kind, encoded) else ("", "", "")
    if origin is not None:
        for arg in typing.get_args(annotation):
            found = _secret_in(arg, seen, encoded)
            if found is not None:
                return found
        return None
    if isinstance(annotation, type) and (
        issubclass(annotation, pydantic.BaseModel) or dataclasses.is_dataclass(annotation)
    ):
        return _secret_field(annotation, seen)
    return None


def _user_serialized_fields(cls: type) -> set[str]:
    """The fields of ``cls`` a ``field_serializer`` of the caller's writes ("*" for all: a plain
    ``model_serializer`` writes the whole instance)."""
    decorators = getattr(cls, "__pydantic_decorators__", None)
    if decorators is None:
        return set()
    if any(decorator.info.mode == "plain" for decorator in decorators.model_serializers.values()):
        return {"*"}
    # Plain mode only: a wrap serializer may hand the secret to pydantic's own (its handler), which writes the mask.
    return {
        field
        for decorator in decorators.field_serializers.values()
        if decorator.info.mode == "plain"
        for field in decorator.info.fields
    }


def _json_encoded(cls: type) -> tuple[type, ...]:
    """The classes the ``json_encoders`` of ``cls``'s config (pydantic's, deprecated but honoured) write."""
    config = getattr(cls, "model_config", None) if issubclass(cls, pydantic.BaseModel) else None
    if config is None:
        config = getattr(cls, "__pydantic_config__", None)
    encoders = config.get("json_encoders") if isinstance(config, dict) else None
    return tuple(kind for kind in encoders or () if isinstance(kind, type))


def _has_serializer(metadata: list[Any]) -> bool:
    return any(isinstance(item, pydantic.PlainSerializer) for item in metadata)  # (a wrap one may write the mask)


_UNTYPED: dict[type[Model], tuple[str, ...]] = {}
"""The fields of each model that may hold a value of any class (see :func:`_check_field_types`)."""
_SERIALIZERS = ("serialization",)


def _field_problem(node: dict[str, Any]) -> str | None:
    """Why a field holding core schema ``node`` (a rule of :func:`nbdb.coreschema.find`, which looks for it at
    every depth) holds values no store of bytes reads back; None if none is known."""
    kind = node.get("type")
    if kind == "json":
        return (
            "is Json[...]: pydantic takes its value only as JSON text, so no write of it is valid and no read "
            "of a stored one; declare the inner type instead (nbdb stores every field as JSON already)"
        )
    if kind == "dataclass-args":
        for field in node.get("fields", ()):
            if field.get("init") is False:
                return (
                    f"holds dataclass {node.get('dataclass_name')} whose field {field.get('name')!r} has "
                    "init=False: pydantic writes it and refuses it on every read (or reads without it); make it "
                    "an init field, or no field (a property)"
                )
    return None


def _holds_any(node: dict[str, Any]) -> bool | None:
    """True if core schema ``node`` takes a value of any class (``Any``, ``object``, a bare ``list``): a rule of
    :func:`nbdb.coreschema.find`, which asks it of every node a field may hold (its serializers' aside)."""
    kind = node.get("type")
    if kind == "any":
        return True
    if (kind in ("list", "set", "frozenset", "generator") and "items_schema" not in node) or (
        kind == "dict" and ("keys_schema" not in node or "values_schema" not in node)
    ):
        return True
    return None


def _holds_secret(value: object) -> bool:
    """Whether ``value`` holds a pydantic secret, at any depth (its lists, maps, sets, models, dataclasses)."""
    if isinstance(value, SECRETS):
        return True
    if isinstance(value, str | bytes | int | float) or value is None:
        return False
    if isinstance(value, dict):
        return any(_holds_secret(k) or _holds_secret(v) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return any(_holds_secret(item) for item in value)
    if isinstance(value, pydantic.BaseModel):
        return any(_holds_secret(item) for item in value.__dict__.values()) or _holds_secret(value.__pydantic_extra__)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return any(_holds_secret(getattr(value, field.name)) for field in dataclasses.fields(value))
    return False


def _declared_storable(value: object) -> bool:
    """Whether an instance of a class a caller declared immutable is written to JSON by its class's own schema
    (a class that has none, but takes a field's ``Annotated`` serializer, is left to that field's)."""
    kind = type(value)
    adapter = _DECLARED_ADAPTERS.get(kind, _NO_ADAPTER)
    if adapter is _NO_ADAPTER:
        try:
            adapter = pydantic.TypeAdapter(kind)
        except (pydantic.PydanticSchemaGenerationError, TypeError):
            adapter = None
        if len(_DECLARED_ADAPTERS) < 1024:
            _DECLARED_ADAPTERS[kind] = adapter
    if adapter is None:
        return True
    return _writes_json(cast(pydantic.TypeAdapter[Any], adapter).dump_json, value)


def _writes_json(dump: Callable[[Any], object], value: object) -> bool:
    """Whether the JSON serializer ``dump`` writes ``value`` (a Ctrl-C it wrapped is raised again, never a no)."""
    try:
        dump(value)
    except PydanticSerializationError as exc:
        raise_interrupt(exc)
        return False
    except (ValueError, TypeError):
        return False
    return True


_DECLARED_ADAPTERS: dict[type, object] = {}
_NO_ADAPTER = object()


_CHECKS: dict[type[Model], Callable[[dict[str, Any]], object]] = {}
_NESTED: dict[type[Model], tuple[tuple[str, Callable[[Any], bool]], ...]] = {}
"""The fields of a model that may hold a model or dataclass, each with its check (see :func:`_look_closer`)."""
_WRONG, _AGAIN = 2, 3
"""What a model's check answers when the model must validate the fields again (see :func:`_look_closer`)."""
_NO_TEXT = (bool, int, float, UUID, type(None), enum.Enum)
FIELD_VALIDATORS = (pydantic.AfterValidator, pydantic.BeforeValidator, pydantic.WrapValidator, pydantic.PlainValidator)
"""pydantic's validators a field's ``Annotated`` metadata may hold."""
_COLLECTIONS = frozenset({list, tuple, set, frozenset, FrozenList, FrozenSet})
_CONTAINERS = frozenset({list, dict, set, FrozenList, FrozenDict, FrozenSet})
"""What an object's field may hold that can change in place."""
_PLAIN = frozenset({list, dict, set, tuple, frozenset})
"""The containers an object holds as its caller built them (nbdb's stored and decoded copies hold frozen ones); a
tuple or frozenset where validation gives a list or set (put there by ``model_construct`` or in place) among them:
it was written as it was, kept so by ``memory://`` and read back as a list or set from a store of bytes."""
_KNOWN_LIMIT = 65536
"""The most texts known to pass kept for a field (then forgotten, all at once)."""


def _check_of(model: type[Model]) -> Callable[[dict[str, Any]], object]:
    """A function of a ``model`` instance's fields: True when all its text is ASCII and its lists, maps
    and sets still hold what their fields do (False: :func:`storable` looks at every value; ``_WRONG``:
    that too, and the model validates the fields again; ``_AGAIN``: the model only; a text that is
    not ASCII does not end the look for one).

    Written for the model from its annotations: a text field is one ``isascii()``, a list or set of
    text a loop of them, a map a loop over its keys (and values, if text), a field that holds no
    text nothing; any other field answers False. A model validator that runs before the fields'
    own (or around them) may put anything anywhere: its model's fields are all looked at that way;
    so is a field with validators of its own (a plain validator's value need not be its
    annotation's, nor validate again). A length its field bounds is checked (``lrp.networks.clear()``
    was stored, and every later read of its table failed on the record). A plain list, map or set,
    one the caller built or derived and may have changed in place, is checked by what
    :func:`_in_place` names: each text found among those known to pass (those the constructor and
    ``replace()`` just validated: ``Model.__init__`` notes them through ``VALIDATED``), or else the
    field validated as it is; the model's validation, if it or the field has validators of its own.
    A model with a validator of the caller's whose value nothing validates (:func:`_replaces_values`)
    is validated again at every write: its check answers ``_WRONG`` or ``_AGAIN``, never True.
    """
    decorators = model.__pydantic_decorators__
    trusted = not decorators.root_validators and all(
        d.info.mode == "after" for d in decorators.model_validators.values()
    )
    validated = {name for d in decorators.field_validators.values() for name in d.info.fields}
    # A validator of the caller's that may replace a value (a field's after, wrap or plain one, at any depth;
    # a model's after or wrap one) may return what its annotation does not allow: memory:// kept it, and a store
    # of bytes wrote it and refused it on every later read. Such a model validates every write again.
    lines = ["def check(d):", "    a = True", f"    again = {_replaces_values(model)}"]
    noted = ["def note(d):"]
    nested: list[tuple[str, Callable[[Any], bool]]] = []
    scope_names: dict[str, Any] = {
        "COLLECTIONS": _COLLECTIONS,
        "CONTAINERS": _CONTAINERS,
        "PLAIN": _PLAIN,
        "FrozenDict": FrozenDict,
        "WRONG": _WRONG,
        "AGAIN": _AGAIN,
        "LIMIT": _KNOWN_LIMIT,
    }
    for name, field in model.model_fields.items():
        own = name in validated or any(isinstance(m, FIELD_VALIDATORS) for m in field.metadata)
        shape = _text_shape(field.annotation) if trusted and not own else "other"
        bounds = _length_bounds(field)
        in_place = _in_place(model, name) if name in model.nbdb_container_fields else None
        if _nests_model(field.annotation):
            nested.append((name, _rebuilt(field)))
            lines += [f"    if d[{name!r}] is not None: again = True"]
        odd = None  # the shapes of text check their container's class already
        if in_place is None and shape in ("none", "other") and name in model.nbdb_container_fields:
            odd = _odd_collections(field.annotation)
        if shape == "none" and bounds is None and in_place is None and odd is None:
            continue
        lines.append(f"    v = d[{name!r}]")
        if bounds is not None:
            least, most = bounds
            within = f"{least} <= len(v)" + ("" if most is None else f" <= {most}")
            lines.append(f"    if type(v) in CONTAINERS and not {within}: return WRONG")
        if shape == "text":
            lines += [
                "    if v is not None:",
                "        if type(v) is not str: return WRONG",
                "        if not v.isascii(): a = False",
            ]
        elif shape == "bytes":
            lines += [
                "    if v is not None:",
                "        if type(v) is not bytes: return WRONG",
                "        if not v.isascii(): a = False",
            ]
        elif shape == "texts":
            # Only the class its field's validation gives (or nbdb's frozen copy of it): a tuple, or a set
            # where a list belongs, put there by model_copy(update=...), passed (and the memo of texts known
            # decided it: known texts passed, others were refused), and a store of bytes read back another value.
            scope_names[f"C_{name}"] = _own_collections(field.annotation)
            lines += [
                f"    if type(v) not in C_{name}: return WRONG",
                "    for x in v:",
                "        if type(x) is not str: return WRONG",
                "        if not x.isascii(): a = False",
            ]
        elif shape == "map":
            lines += [
                "    if type(v) is not dict and type(v) is not FrozenDict: return WRONG",
                "    for k, x in v.items():",
                "        if type(k) is not str or type(x) is not str: return WRONG",
                "        if not (k.isascii() and x.isascii()): a = False",
            ]
        elif shape == "keys":
            kind, nullable = _value_class(typing.get_args(_unwrapped(field.annotation))[1])
            scope_names[f"T_{name}"] = kind
            wrong = (
                "False" if kind is object else f"type(x) is not T_{name}" + (" and x is not None" if nullable else "")
            )
            lines += [
                "    if type(v) is not dict and type(v) is not FrozenDict: return WRONG",
                "    for k, x in v.items():",
                f"        if type(k) is not str or ({wrong}): return WRONG",
                "        if not k.isascii(): a = False",
            ]
        elif shape == "other":
            lines.append("    if v is not None: a = False")
        if odd is not None:
            # A list or set of values validation takes as they are: a tuple or frozenset in its place was written
            # as it was (memory:// kept it; a store of bytes read back a list or set).
            scope_names[f"O_{name}"] = odd
            lines.append(f"    if type(v) in O_{name}: return WRONG")
        if in_place == "model":
            lines.append("    if type(v) in PLAIN: again = True")
        elif in_place is not None:
            known: set[str] | None = set() if in_place == "texts" and shape == "texts" else None  # members all text
            scope_names[f"K_{name}"], scope_names[f"V_{name}"] = known, _as_it_is(field, known)
            fast = f"K_{name}.issuperset(v) or " if known is not None else ""
            lines.append(f"    if type(v) in PLAIN and not ({fast}V_{name}(v)): again = True")
            if known is not None:
                noted += [f"    if len(K_{name}) >= LIMIT: K_{name}.clear()", f"    K_{name}.update(d[{name!r}] or ())"]
    lines.append("    return (AGAIN if a else WRONG) if again else a")
    scope: dict[str, Any] = {}
    # Compiled apart, and its code object run: ``exec`` of a string is CPython's PyRun_String, which marks
    # a KeyboardInterrupt escaping the code it runs as the program's own unhandled one (a Ctrl-C arriving
    # while this compiles is raised as that code starts), and ``python -m`` then ends in SIGINT at exit: a
    # Ctrl-C early in `nbdb copy` (the first write of each model lands here) exited -2, not 130.
    code = compile("\n".join(lines + noted + ["    pass"]), f"<nbdb storable check of {model.__name__}>", "exec")
    exec(code, scope_names, scope)  # code of our own
    if len(noted) > 1:
        VALIDATED[model] = scope["note"]
    if nested:
        _NESTED[model] = tuple(nested)
    return cast(Callable[[dict[str, Any]], object], scope["check"])


_TRUSTED = frozenset({"nbdb", "pydantic", "pydantic_core", "ipaddress"})
"""The packages whose validators return values of their annotations (see :func:`_replaces_values`)."""


def _replaces_values(model: type[Model]) -> bool:
    """Whether a validator of ``model``'s core schema runs after or around a value's own validation, so that what
    it returns is never validated, and is not nbdb's, pydantic's nor ``ipaddress``'s own (whose values are of their
    annotations: a ``Path``'s, an ``IPv4Address``'s, a ``SecretStr``'s): a field's ``AfterValidator``,
    ``WrapValidator``, ``PlainValidator``, ``field_validator`` of those modes, at any depth; a ``model_validator``
    of mode after or wrap (one that sets a field). Before validators are not: their value is validated next.
    Serializers (a node's ``serialization``) are not looked at."""

    def rule(node: dict[str, Any]) -> bool | None:
        if node.get("type") in ("function-after", "function-wrap", "function-plain"):
            function = node.get("function")
            called = function.get("function") if isinstance(function, dict) else None
            owner = getattr(called, "__module__", None)
            if not (isinstance(owner, str) and owner.split(".")[0] in _TRUSTED):
                return True
        return None

    schema = model.__pydantic_core_schema__
    return bool(coreschema.find(schema, rule, refs=coreschema.definitions(schema), skip=("serialization",)))


def _odd_collections(annotation: Any) -> frozenset[type] | None:
    """The tuple and frozenset classes a list, map or set field's validation never gives (None: no such field)."""
    origin = typing.get_origin(_unwrapped(annotation))
    if origin in (list, set, dict):
        return frozenset({tuple, frozenset})
    return None


def _own_collections(annotation: Any) -> frozenset[type]:
    """The classes a list or set field of text holds once validated: the plain one, or nbdb's frozen copy of it."""
    origin = typing.get_origin(_unwrapped(annotation))
    if origin is list:
        return frozenset({list, FrozenList})
    if origin is set:
        return frozenset({set, FrozenSet})
    if origin is frozenset:
        return frozenset({frozenset})
    return _COLLECTIONS  # a union of them: any


def _length_bounds(field: pydantic.fields.FieldInfo) -> tuple[int, int | None] | None:
    """The (least, most) length a field's ``min_length``/``max_length`` allow (None: no most), if it may
    hold a container."""
    least: int = 0
    most: int | None = None
    for item in field.metadata:
        least = max(least, getattr(item, "min_length", None) or 0)
        bound = getattr(item, "max_length", None)
        if bound is not None:
            most = bound if most is None else min(most, bound)
    if (least, most) == (0, None) or not may_hold_container(field.annotation):
        return None
    return least, most


def _unwrapped(annotation: Any) -> Any:
    """``annotation`` without ``Annotated`` and ``| None``."""
    while True:
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin is typing.Annotated:
            annotation = args[0]
        elif origin in (typing.Union, types.UnionType) and type(None) in args and len(args) == 2:
            annotation = args[0] if args[1] is type(None) else args[1]
        else:
            return annotation


def _value_class(annotation: Any) -> tuple[type, bool]:
    """The class a map's values hold (a "keys" shape: no text), and whether they may be None."""
    origin = typing.get_origin(annotation)
    nullable = origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(annotation)
    kind = _unwrapped(annotation)
    return (kind if isinstance(kind, type) else object), nullable


def _text_shape(annotation: Any) -> str:
    """A field's annotation: "none" (no text), "text", "bytes", "texts" (a list or set of text), "map" (text to text),
    "keys" (text to no text) or "other"."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _text_shape(args[0])
    if origin in (typing.Union, types.UnionType):
        shapes = {_text_shape(arg) for arg in args if arg is not type(None)}
        return shapes.pop() if len(shapes) == 1 else "other"
    if origin in (list, set, frozenset) and len(args) == 1:
        inner = _text_shape(args[0])
        return "texts" if inner == "text" else inner if inner == "none" else "other"
    if origin is dict and len(args) == 2:
        key, value = _text_shape(args[0]), _text_shape(args[1])
        if key == "text" and value in ("text", "none"):
            return "map" if value == "text" else "keys"
        return "none" if key == value == "none" else "other"
    if origin is None and isinstance(annotation, type):
        if issubclass(annotation, _NO_TEXT):
            return "none"
        if annotation is str:
            return "text"
        if annotation is bytes:
            return "bytes"
    return "other"
