"""Model shapes as plain data: what a backend may know of a model without seeing pydantic.

A backend (or a family) that maps fields onto a server's own types, such as
OVSDB columns, needs each field's shape: its atomic kind, whether it is a list,
a map or optional, its default, its enum values and what it references. It
gets them here, as frozen dataclasses, never by reading ``model_fields``:
the model layer is the only place that knows how pydantic annotations look.
"""

from __future__ import annotations

import functools
import types
import typing
import uuid
from dataclasses import dataclass
from enum import Enum
from typing import Any, get_args, get_origin

import pydantic
from pydantic_core import PydanticUndefined, to_jsonable_python

from nbdb.models.base import Column, Model, RefSpec, all_models

__all__ = ["BASE_FIELDS", "FieldShape", "ModelShape", "model_shapes", "shape_of"]

BASE_FIELDS = ("id", "version", "topic", "external_ids")
"""Fields every model has; a :class:`ModelShape` lists only the others."""

_ATOMS: dict[Any, str] = {str: "string", int: "integer", float: "real", bool: "boolean", uuid.UUID: "uuid"}


@dataclass(frozen=True, slots=True)
class FieldShape:
    """One field of a model, as data.

    ``kind`` is the atomic type of the value (of each item for a list or set,
    of each value for a map): ``string``, ``integer``, ``real``, ``boolean``,
    ``uuid``, ``enum`` (a string from ``enum``), or ``json`` for anything
    else (nested models, lists of lists), which only JSON text can hold.
    A ``json`` field is a ``scalar`` but for a list, set or map of ``Literal``
    values (``list[Literal[True]]``): of ``json`` items, each one atom.
    ``container`` is ``scalar``, ``list`` (ordered, duplicates allowed),
    ``set`` or ``map`` (keys of kind ``key_kind``). ``default`` is the
    default value in its JSON form (None when ``required``).
    """

    name: str
    kind: str
    container: str
    optional: bool
    required: bool
    default: Any
    key_kind: str | None = None
    enum: tuple[str, ...] = ()
    reference: str | None = None
    column: str | None = None
    """The server column that holds the field, if not the one of its name (:class:`nbdb.models.Column`)."""

    @property
    def textual(self) -> bool:
        """A string-like scalar (string, enum, uuid): stored as text without JSON quoting."""
        return self.container == "scalar" and self.kind in ("string", "enum", "uuid")


@dataclass(frozen=True, slots=True)
class ModelShape:
    """A model's table name, its own fields (not :data:`BASE_FIELDS`), references, indexes and unique groups."""

    table: str
    fields: tuple[FieldShape, ...]
    references: tuple[RefSpec, ...]
    indexes: tuple[str, ...]
    unique: tuple[tuple[str, ...], ...] = ()
    """The model's ``nbdb_unique`` groups of fields (a group of one for a single unique field)."""
    owned_by: tuple[str, ...] = ()
    """The model's ``nbdb_owned_by``: the reference field naming the object's owner, if any."""

    def field(self, name: str) -> FieldShape:
        """The field called ``name``; KeyError if the model has none."""
        for shape in self.fields:
            if shape.name == name:
                return shape
        raise KeyError(name)

    @property
    def field_names(self) -> tuple[str, ...]:
        """The names of :attr:`fields`, in declaration order."""
        return tuple(f.name for f in self.fields)


def _strip(annotation: Any) -> tuple[Any, bool]:
    """The annotation without ``Annotated`` and ``| None``, and whether None was allowed."""
    optional = False
    while True:
        origin = get_origin(annotation)
        if origin is typing.Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            optional = optional or len(args) != len(get_args(annotation))
            if len(args) != 1:
                return Any, optional
            annotation = args[0]
        else:
            return annotation, optional or annotation is type(None)


def _atom(annotation: Any) -> tuple[str, tuple[str, ...]]:
    """The atomic kind of ``annotation`` (``json`` when it is not atomic) and its enum values."""
    annotation, _ = _strip(annotation)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "enum", tuple(str(member.value) for member in annotation)
    for tp, kind in _ATOMS.items():
        if annotation is tp:
            return kind, ()
    return "json", ()


def _is_literal(annotation: Any) -> bool:
    """Whether ``annotation`` (without ``Annotated`` and ``| None``) is a ``Literal``: an atom of kind ``json``.

    Its values may be of several types (``Literal[1, "a"]``), so its kind stays ``json`` (a store keeps
    each value's JSON type), but it is one atom, never a list: a list, set or map of them is a ``list``,
    ``set`` or ``map`` of ``json`` items (a schema's set column of booleans or uuids holding a generated
    model's ``list[Literal[True]]``), not a ``json`` scalar, which an OVSDB set column took for one value.
    """
    return get_origin(_strip(annotation)[0]) is typing.Literal


def _field_shape(model: type[Model], name: str, refs: dict[str, RefSpec]) -> FieldShape:
    info = model.model_fields[name]
    annotation, optional = _strip(info.annotation)
    origin = get_origin(annotation)
    container, key_kind = "scalar", None
    kind, enum = _atom(annotation)
    if origin in (list, tuple, set, frozenset):
        args = [a for a in get_args(annotation) if a is not Ellipsis]
        item_kind, enum = _atom(args[0]) if len(args) == 1 else ("json", ())
        if item_kind != "json" or (len(args) == 1 and _is_literal(args[0])):
            container, kind = ("set" if origin in (set, frozenset) else "list"), item_kind
    elif origin is dict:
        key, value = get_args(annotation)
        kkind, _ = _atom(key)
        vkind, enum = _atom(value)
        if kkind in ("string", "integer", "uuid") and (vkind != "json" or _is_literal(value)):
            container, key_kind, kind = "map", kkind, vkind
    required = info.is_required()
    default = None
    if not required:
        value = info.get_default(call_default_factory=True)
        default = None if value is PydanticUndefined else to_jsonable_python(_revealed(value))
    ref = refs.get(name)
    return FieldShape(
        name=name,
        kind=kind,
        container=container,
        optional=optional,
        required=required,
        default=default,
        key_kind=key_kind,
        enum=enum,
        reference=None if ref is None else ref.target,
        column=next((m.name for m in info.metadata if isinstance(m, Column)), None),
    )


def _revealed(value: Any) -> Any:
    """``value`` with its pydantic secrets replaced by their values, as nbdb stores them (see ``nbdb.codec``):
    a default's JSON must be what a store of bytes holds for it, not pydantic's mask."""
    if isinstance(value, pydantic.SecretStr | pydantic.SecretBytes | pydantic.Secret):
        return _revealed(value.get_secret_value())
    if isinstance(value, list | tuple | set | frozenset):
        return type(value)(_revealed(v) for v in value) if type(value) in (list, tuple, set, frozenset) else value
    if isinstance(value, dict) and type(value) is dict:
        return {k: _revealed(v) for k, v in value.items()}
    return value


@functools.cache
def shape_of(model: type[Model]) -> ModelShape:
    """The shape of ``model`` (computed once per class)."""
    refs = {spec.field: spec for spec in model.nbdb_references}
    fields = tuple(_field_shape(model, name, refs) for name in model.model_fields if name not in BASE_FIELDS)
    return ModelShape(
        model.nbdb_table,
        fields,
        model.nbdb_references,
        model.nbdb_indexes,
        model.nbdb_unique_fields,
        model.nbdb_owned_by,
    )


def model_shapes() -> tuple[ModelShape, ...]:
    """The shapes of every model defined so far."""
    return tuple(shape_of(model) for model in all_models())
