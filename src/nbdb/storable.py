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

from nbdb import errors
from nbdb.models.base import (
    VALIDATED,
    Model,
    Reference,
    check_references_resolve,
    may_hold_container,
    validation_error_of,
)
from nbdb.models.shared import FrozenDict, FrozenList, FrozenSet

__all__ = ["FIELD_VALIDATORS", "check_storable", "storable"]


def check_storable(obj: Model) -> None:
    """Refuse ``obj`` (ValidationError) if it holds text no store can hold: a lone surrogate (or bytes not UTF-8).

    pydantic's serializer refuses such a string as a value, but writes a map
    key holding one as U+FFFD characters: another key, silently stored. Every
    write is checked here (:func:`encode`, and a store that keeps values and
    never encodes them, ``keeps_values``), so that no store takes what
    another refuses and no key changes on its way in. It costs a
    per-class check of each text field's ``isascii()`` (constant time in
    CPython, ≈ 0.7 µs a port); only a non-ASCII string is encoded to find out.
    (A length bound on every ``str`` would make pydantic-core check the same
    at validation, but it cost 8 % more instructions to build or decode a
    port, on every backend and every read.)
    """
    check = _ASCII_CHECKS.get(type(obj))
    if check is None:
        check_references_resolve(type(obj))  # once per model, at its first write (not cached until it passes)
        _IN_PLACE_CHECKS[type(obj)] = _in_place_check(type(obj))
        check = _ASCII_CHECKS[type(obj)] = _ascii_check(type(obj))
    fields = obj.__dict__
    verdict = check(fields)
    if verdict is not True:
        _look_closer(obj, fields, verdict)
    in_place = _IN_PLACE_CHECKS[type(obj)]
    if in_place is not None:
        in_place(obj, fields)


def _look_closer(obj: Model, fields: dict[str, Any], verdict: object) -> None:
    """:func:`check_storable` of an object whose per-model check did not pass it at a glance."""
    if not storable(fields):
        raise errors.ValidationError(
            f"{obj.nbdb_table} {obj.id} cannot be stored: text that is not Unicode, bytes that are not UTF-8, "
            "a float that is infinite or NaN, or a value JSON cannot hold"
        )
    if verdict is _WRONG_TYPE:
        # A list or map of the object changed in place (models are frozen, their containers are not):
        # `port.external_ids["k"] = 5` was stored as it was, and every later read of it failed.
        _revalidate(
            obj,
            fields,
            "a value is not what its field holds (changed in place?)",
            "{} holds a value of another type than its field's (changed in place?)",
        )


_PLAIN = frozenset({list, dict, set})
"""The containers an object holds as its caller built them (nbdb's stored and decoded copies hold frozen ones)."""
_GOOD_LIMIT = 65536


def _in_place_check(model: type[Model]) -> Callable[[Model, dict[str, Any]], None] | None:
    """A check that ``model``'s lists, maps and sets still hold what its validators accept; None if none is needed.

    Models are frozen, their containers are not: a caller may change one in place after the object was
    validated (``port.addresses.append("garbage")``), to a value of the right type that a validator of
    the field, of its members or of the model refuses. Such a change was written as it was; on a store
    of bytes every later read of the record failed. The copies nbdb hands out hold frozen containers
    (they refuse the change), so only a container the caller's own object holds (built, or derived
    with ``replace()``) is looked at: its members, through a memo of the texts known to pass as they
    are (an address is validated once per process, not at every create), or the field's own or the
    model's validators, when it has any.
    """
    decorators = model.__pydantic_decorators__
    whole = bool(decorators.model_validators or decorators.root_validators or decorators.validators)
    validated = {name for d in decorators.field_validators.values() for name in d.info.fields}
    through_model: list[str] = []
    """The fields only the model's validator checks (its own validators, or the field's)."""
    members: list[tuple[str, Callable[[Any], None]]] = []
    texts: list[tuple[str, set[Any], Callable[[Any], None]]] = []
    """The lists and sets of texts a validator checks: each text looked up in its memo first (inline, hot)."""
    for name in model.nbdb_container_fields:
        info = model.model_fields[name]
        if whole or name in validated or "*" in validated:
            through_model.append(name)
        elif not all(_harmless(m) for m in info.metadata):
            members.append((name, _field_check(info)))
        elif not _container_of_plain(info.annotation):
            inner = _unwrapped(info.annotation)
            args = typing.get_args(inner)
            if typing.get_origin(inner) in (list, set, frozenset) and len(args) == 1 and _unwrapped(args[0]) is str:
                item, good = _valid_as_is(args[0])
                texts.append((name, good, item))
            else:
                members.append((name, _member_check(info.annotation)))
    if not through_model and not members and not texts:
        return None
    watched = tuple(through_model)
    if texts:
        # The texts a constructor or replace() just validated are valid as they are: known good from then
        # on, the write of a new port finds its addresses known instead of validating them a second time.
        noted = tuple((name, good) for name, good, _ in texts)
        VALIDATED[model] = _remember(noted)

    def refused(obj: Model, name: str, exc: Exception) -> errors.ValidationError:
        detail = (
            validation_error_of(exc, f"{model.__name__}.{name}") if isinstance(exc, pydantic.ValidationError) else exc
        )
        return errors.ValidationError(
            f"{obj.nbdb_table} {obj.id} cannot be stored: {name} was changed in place to a value its field refuses: "
            f"{detail}"
        )

    def check(obj: Model, data: dict[str, Any]) -> None:
        for name, good, item in texts:
            value = data[name]
            if value.__class__ in _PLAIN:
                for x in value:
                    if x.__class__ is not str or x not in good:
                        try:
                            item(x)
                        except (pydantic.ValidationError, ValueError) as exc:
                            raise refused(obj, name, exc) from None
        for name, checker in members:
            value = data[name]
            if value.__class__ in _PLAIN:
                try:
                    checker(value)
                except (pydantic.ValidationError, ValueError) as exc:
                    raise refused(obj, name, exc) from None
        for name in watched:
            if data[name].__class__ in _PLAIN:
                _revalidate(
                    obj,
                    data,
                    "a list, map or set was changed in place to a value the model refuses",
                    "{} changed in place to a value its field would not hold as it is",
                )
                return

    return check


def _remember(noted: tuple[tuple[str, set[Any]], ...]) -> Callable[[dict[str, Any]], None]:
    """Note the texts of the fields ``noted`` (name, memo) of fields just validated as known good."""

    def remember(data: dict[str, Any]) -> None:
        for name, good in noted:
            value = data[name]
            if value:
                if len(good) >= _GOOD_LIMIT:
                    good.clear()  # bounded
                good.update(value)

    return remember


def _revalidate(obj: Model, data: dict[str, Any], refused: str, retyped: str) -> None:
    """ValidationError unless the fields ``data`` of ``obj`` validate again, as they are, into the model.

    ``refused`` says what the model refused; ``retyped`` (``{}``: the fields) what it would hold
    only once converted (bytes where text belongs: not what a store of bytes reads back).
    """
    try:
        valid = type(obj).__pydantic_validator__.validate_python(data).__dict__
    except pydantic.ValidationError as exc:
        raise errors.ValidationError(
            f"{obj.nbdb_table} {obj.id} cannot be stored: {refused}: {validation_error_of(exc, type(obj).__name__)}"
        ) from None
    if valid != data:
        wrong = sorted(name for name, value in valid.items() if data.get(name) != value)
        raise errors.ValidationError(f"{obj.nbdb_table} {obj.id} cannot be stored: " + retyped.format(", ".join(wrong)))


def _field_check(info: pydantic.fields.FieldInfo) -> Callable[[Any], None]:
    """A function raising (ValueError or pydantic's ValidationError) unless a value of the field is valid as it is."""
    annotation: Any = info.annotation
    adapter = _adapter(typing.Annotated[annotation, *info.metadata] if info.metadata else annotation)

    def as_whole(value: Any) -> None:
        if adapter.validate_python(value) != value:
            raise ValueError("not valid as it is")

    return as_whole


def _member_check(annotation: Any) -> Callable[[Any], None]:
    """:func:`_field_check` of a field of ``annotation`` that constrains its members only (each checked alone)."""
    inner = _unwrapped(annotation)
    origin = typing.get_origin(inner)
    args = typing.get_args(inner)
    if origin in (list, set, frozenset) and len(args) == 1:
        item = _valid_as_is(args[0])[0]

        def each(value: Any) -> None:
            for x in value:
                item(x)

        return each
    if origin is dict and len(args) == 2:
        key = None if _plain_member(args[0]) else _valid_as_is(args[0])[0]
        val = None if _plain_member(args[1]) else _valid_as_is(args[1])[0]

        def pairs(value: Any) -> None:
            for k, v in value.items():
                if key is not None:
                    key(k)
                if val is not None:
                    val(v)

        return pairs
    adapter = _adapter(annotation)  # a union of containers, Any...: the value as a whole

    def as_whole(value: Any) -> None:
        if adapter.validate_python(value) != value:
            raise ValueError("not valid as it is")

    return as_whole


def _valid_as_is(annotation: Any) -> tuple[Callable[[Any], None], set[Any]]:
    """A check that one member of ``annotation`` validates to itself, and the texts known to (it adds those
    that pass; :func:`_in_place_check` adds those a model's validation just passed)."""
    adapter = _adapter(annotation)
    good: set[Any] = set()

    def item(x: Any) -> None:
        if x.__class__ is str and x in good:
            return
        if adapter.validate_python(x) != x:
            raise ValueError(f"{x!r} is not valid as it is")
        if x.__class__ is str:
            if len(good) >= _GOOD_LIMIT:
                good.clear()  # bounded
            good.add(x)

    return item, good


def _adapter(annotation: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(annotation, config=pydantic.ConfigDict(allow_inf_nan=False))


def _harmless(item: Any) -> bool:
    """Container-level metadata that replaces no value and refuses none beyond a length (which the per-model
    check of :func:`_ascii_check` bounds): a length, a reference, a field's description."""
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
    """Whether a member of ``annotation`` is valid whenever it has its type (which :func:`_ascii_check` checks)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _plain_member(args[0]) and all(isinstance(m, Reference) for m in args[1:])
    if origin in (typing.Union, types.UnionType):
        return all(_plain_member(arg) for arg in args)
    if annotation is type(None):
        return True
    return isinstance(annotation, type) and origin is None and issubclass(annotation, (str, bytes, *_NO_TEXT))


def _container_of_plain(annotation: Any) -> bool:
    """Whether ``annotation`` is a list, set or map (or None) of plain members only."""
    inner = _unwrapped(annotation)
    origin = typing.get_origin(inner)
    args = typing.get_args(inner)
    if origin in (list, set, frozenset, dict) and args:
        return all(_plain_member(arg) for arg in args)
    return False


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
    if isinstance(value, pydantic.BaseModel):
        return storable(value.__dict__)
    if isinstance(value, dict):
        return all(storable(key) and storable(item) for key, item in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return all(storable(item) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return storable(vars(value))
    if value is None or isinstance(value, int | UUID | enum.Enum):
        return True
    # Any other value (under an ``Any`` field, say): storable when pydantic's JSON serializer writes it
    # (a datetime, a Decimal...). memory:// keeps objects and never encodes them: without this it took an
    # ``object()`` that every store of bytes refuses.
    try:
        pydantic_core.to_json(value)
    except (PydanticSerializationError, ValueError, TypeError):
        return False
    return True


_ASCII_CHECKS: dict[type[Model], Callable[[dict[str, Any]], object]] = {}
_IN_PLACE_CHECKS: dict[type[Model], Callable[[Model, dict[str, Any]], None] | None] = {}
_WRONG_TYPE = 2
"""What a model's check answers when a text field holds a value of another type than its annotation's."""
_NO_TEXT = (bool, int, float, UUID, type(None), enum.Enum)
FIELD_VALIDATORS = (pydantic.AfterValidator, pydantic.BeforeValidator, pydantic.WrapValidator, pydantic.PlainValidator)
"""pydantic's validators a field's ``Annotated`` metadata may hold."""
_COLLECTIONS = frozenset({list, tuple, set, frozenset, FrozenList, FrozenSet})
_CONTAINERS = frozenset({list, dict, set, FrozenList, FrozenDict, FrozenSet})
"""What an object's field may hold that can change in place."""


def _ascii_check(model: type[Model]) -> Callable[[dict[str, Any]], object]:
    """A function of a ``model`` instance's fields: True when all its text is ASCII (False: look closer;
    ``_WRONG_TYPE``: a text field holds a value of another type, which may be invalid: validate it again;
    a text that is not ASCII does not end the look for one).

    Written for the model from its annotations: a text field is one
    ``isascii()``, a list or set of text a loop of them, a map a loop over its
    keys (and values, if text), a field that holds no text nothing; any other field
    answers False and :func:`storable` looks at the whole object. A model validator that runs
    before the fields' own (or around them) may put anything anywhere: its model's fields are all
    looked at that way; so is a field with validators of its own (a plain validator's value need
    not be its annotation's, nor validate again).
    """
    decorators = model.__pydantic_decorators__
    trusted = not decorators.root_validators and all(
        d.info.mode == "after" for d in decorators.model_validators.values()
    )
    validated = {name for d in decorators.field_validators.values() for name in d.info.fields}
    lines = ["def check(d):", "    a = True"]
    scope_names: dict[str, Any] = {
        "COLLECTIONS": _COLLECTIONS,
        "CONTAINERS": _CONTAINERS,
        "FrozenDict": FrozenDict,
        "WRONG": _WRONG_TYPE,
    }
    for name, field in model.model_fields.items():
        own = name in validated or any(isinstance(m, FIELD_VALIDATORS) for m in field.metadata)
        shape = _text_shape(field.annotation) if trusted and not own else "other"
        bounds = _length_bounds(field)
        if bounds is not None:
            # A list, map or set of a bounded length, emptied in place (`lrp.networks.clear()`), was
            # stored, and every later read of its table failed on the record: its length, checked here,
            # costs only the models that bound one.
            lines += [
                f"    v = d[{name!r}]",
                f"    if type(v) in CONTAINERS and not {bounds[0]} <= len(v) <= {bounds[1]}: return WRONG"
                if bounds[1] is not None
                else f"    if type(v) in CONTAINERS and len(v) < {bounds[0]}: return WRONG",
            ]
        if shape == "none":
            continue
        lines.append(f"    v = d[{name!r}]")
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
            lines += [
                "    if type(v) not in COLLECTIONS: return WRONG",
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
        else:
            lines.append("    if v is not None: a = False")
    lines.append("    return a")
    scope: dict[str, Any] = {}
    exec("\n".join(lines), scope_names, scope)  # code of our own
    return cast(Callable[[dict[str, Any]], object], scope["check"])


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
