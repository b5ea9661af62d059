"""Enumerations of a schema's columns, and the values a newer schema added to them.

A server's schema may be newer than the models (a rolling upgrade: OVN 24.03
added ``Logical_Router_Policy.action = "jump"``, which
:class:`~nbdb.models.RouterPolicyAction` does not know). A row holding such a
value must still read, keep its value through an update of another field and
reach the caches and watches, while nbdb's input check stays: ``action="alow"``
is refused on every backend, before anything is sent.

So an enumerated field's type is a :class:`SchemaEnum`, which accepts, beside
its members (and their text, as any enum), a :class:`NewerValue` of its own:
a ``str`` that only the decoder makes, and only for a value the store's own
schema admits (:class:`nbdb.spi.CheckedData`: OVSDB, whose server checks every
value of an enumerated column). Plain text outside the enum is refused as
before; so is a value another writer left in a store of records (memory,
Redis...), which stays a :class:`nbdb.CorruptRecordError`. A copy holding a
newer value is written only to a store that checks it against its schema
(:func:`refuse_carried`).
"""

from __future__ import annotations

import typing
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import CoreSchema
from pydantic_core import core_schema as cs

__all__ = ["NewerValue", "SchemaEnum", "carried_in", "enum_fields", "newer_held", "newer_value", "newer_values_made"]


class NewerValue(str):
    """A value of an enumerated field that its enum lacks and the store's schema admits (a newer schema's).

    Equal to its text (``policy.action == "jump"``) and written back as that
    text. Made only by the decoder, one subclass per enum (see
    :func:`newer_value`): a field of another enum refuses it.
    """

    __slots__ = ()

    enum: type[SchemaEnum]
    """The enum whose field held this value."""

    @property
    def value(self) -> str:
        """The text, as an enum member's ``value`` gives it."""
        return str(self)

    @property
    def name(self) -> str:
        """No member's name: the text, as the newer schema spells it."""
        return str(self)

    def __repr__(self) -> str:
        return f"<{self.enum.__name__} newer value {str(self)!r}>"

    def __reduce__(self) -> tuple[Any, tuple[type[SchemaEnum], str]]:
        # Pickled as its enum and text: the subclass is made at run time, under no importable name.
        return newer_value, (self.enum, str(self))


_TYPES: dict[type[SchemaEnum], type[NewerValue]] = {}
MADE: list[bool] = []
"""Not empty once the process made a :class:`NewerValue`: until then no write needs to look for one."""


def _type_of(enum: type[SchemaEnum]) -> type[NewerValue]:
    kind = _TYPES.get(enum)
    if kind is None:
        kind = _TYPES[enum] = type(f"{enum.__name__}Newer", (NewerValue,), {"__slots__": (), "enum": enum})
    return kind


def newer_value(enum: type[SchemaEnum], text: str) -> NewerValue:
    """``text`` as a value of ``enum`` that a newer schema added (for the decoder: see the module's doc)."""
    if not MADE:
        MADE.append(True)
    return _type_of(enum)(text)


def newer_values_made() -> bool:
    """Whether this process ever read a newer schema's enum value (writes look for them only then)."""
    return bool(MADE)


class SchemaEnum(StrEnum):
    """A ``StrEnum`` of a schema's enumerated column: beside its members, it holds its :class:`NewerValue`.

    Validating from Python, plain text is a member or refused as any enum's
    (the same error); an instance of this enum's newer value type is kept as
    it is. From JSON only members are read: a decoder that meets another value
    makes it a newer value only where the store vouches for it. Serialized as
    text, member or newer value alike, without a warning.
    """

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        members = handler(source)
        values = [repr(member.value) for member in cls]
        expected = f"{', '.join(values[:-1])} or {values[-1]}" if len(values) > 1 else "".join(values)
        # Members first: an ordinary value pays one union step, a typo gets the enum's own error.
        python = cs.union_schema(
            [members, cs.is_instance_schema(_type_of(cls))],
            mode="left_to_right",
            custom_error_type="enum",
            custom_error_context={"expected": expected},
        )
        return cs.json_or_python_schema(
            json_schema=members, python_schema=python, serialization=cs.simple_ser_schema("str")
        )


def carried_in(value: Any) -> Iterable[NewerValue]:
    """The newer values a field's value holds: itself, or items of a list, set or map's values."""
    if isinstance(value, NewerValue):
        yield value
    elif isinstance(value, list | tuple | set | frozenset):
        yield from (item for item in value if isinstance(item, NewerValue))
    elif isinstance(value, dict):
        yield from (item for item in value.values() if isinstance(item, NewerValue))


def enum_fields(model: type[Any]) -> dict[str, type[SchemaEnum]]:
    """The fields of ``model`` (a Model class) typed by a :class:`SchemaEnum` (themselves, their items or values)."""
    known = _FIELDS.get(model)
    if known is not None:
        return known
    found: dict[str, type[SchemaEnum]] = {}
    for name, field in model.model_fields.items():
        stack = [field.annotation]
        while stack:
            annotation = stack.pop()
            if isinstance(annotation, type) and issubclass(annotation, SchemaEnum):
                found[name] = annotation
                break
            stack.extend(typing.get_args(annotation))
    _FIELDS[model] = found  # whole, then shared (another thread may ask meanwhile)
    return found


_FIELDS: dict[type[Any], dict[str, type[SchemaEnum]]] = {}


def newer_held(obj: Any) -> dict[str, list[str]]:
    """The newer schema's values ``obj`` (a model) holds, by field (empty: none)."""
    held: dict[str, list[str]] = {}
    for name in enum_fields(type(obj)):
        values = [str(v) for v in carried_in(obj.__dict__.get(name))]
        if values:
            held[name] = values
    return held
