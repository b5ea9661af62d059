"""The values a newer schema added to an enumerated column, read where the store's schema checks them.

A server's schema may be newer than the models (a rolling upgrade: OVN 24.03
added ``Logical_Router_Policy.action = "jump"``, which
:class:`~nbdb.models.RouterPolicyAction` does not know). A row holding such a
value must still read, keep its value through an update of another field and
reach the caches and watches, while nbdb's input check stays: ``action="alow"``
is refused on every backend, before anything is sent.

Such a value is read as a *newer member* of the field's enum
(:func:`newer_value`): an instance of the enum that is none of its declared
members, equal to its text (``policy.action == "jump"``), with that text as its
``value`` and ``name``, as Python's own pseudo-members of a ``Flag`` are. So are
an ``IntEnum``'s (``nbdb models generate`` writes one for an integer column's enum:
equal to the integer, ``name`` its text) and a ``float`` ``Enum``'s; a plain
``Enum``'s newer member holds the value, and equals only itself, as its members do.
A ``Literal`` field cannot hold one (nothing but its own values validates as a
``Literal``): a row holding a newer value there stays a corrupt record. Being
an instance of the enum, every validation (``replace()``) and serialization
(``encode``, ``model_dump``) takes it as it takes a member: the models' schemas
are unchanged, so an ordinary write pays nothing. Plain text outside the enum
is refused as before: only the decoder makes newer members, and only for a
value the store's own schema admits (:class:`nbdb.spi.CheckedData`: OVSDB,
whose server checks every value of an enumerated column). A value another
writer left in a store of records (memory, Redis...) stays a
:class:`nbdb.CorruptRecordError`, and a copy holding a newer member is written
only where the server checks the enum (see ``refuse_newer_values`` in
:mod:`nbdb.commit_context`).
"""

from __future__ import annotations

import threading
import typing
from collections.abc import Iterable, Mapping
from enum import Enum, Flag
from typing import Any

import pydantic

__all__ = ["enum_fields", "is_newer", "newer_held", "newer_value", "newer_values_made"]

MADE: list[bool] = []
"""Not empty once the process made a newer member: until then no write needs to look for one."""

_MEMBERS: dict[tuple[type[Enum], Any], Enum] = {}
_LOCK = threading.Lock()


def newer_value(enum: type[E], text: Any) -> E:
    """The newer member of ``enum`` holding ``text`` (one per enum and value; for the decoder, see the module's doc).

    ``text`` must be no member's value (a member is returned as itself), and of the enum's data type
    (:func:`data_type`): a ``StrEnum``'s text, an ``IntEnum``'s integer, a ``float`` ``Enum``'s number.
    """
    found = _MEMBERS.get((enum, text))
    if found is not None:
        return found  # type: ignore[return-value]
    try:
        return enum(text)
    except ValueError:
        pass
    with _LOCK:
        found = _MEMBERS.get((enum, text))
        if found is None:
            kind: Any = data_type(enum)
            made: Any = kind.__new__(enum) if kind is object else kind.__new__(enum, text)
            made._value_ = text
            made._name_ = str(text)
            made.__reduce_ex__ = _reducer(enum, text)  # unpickled as made
            # MADE first: another thread takes a published member from the lock-free path above, and its
            # writes look for newer members only once MADE says one exists.
            if not MADE:
                MADE.append(True)
            _MEMBERS[(enum, text)] = found = made
    return found  # type: ignore[return-value]


E = typing.TypeVar("E", bound=Enum)


def data_type(enum: type[Enum]) -> type:
    """The type of ``enum``'s values (its members are instances of it): ``str``, ``int``, ``float``, or ``object``."""
    for kind in (str, int, float):
        if issubclass(enum, kind):
            return kind
    return object


def _reducer(enum: type[Enum], text: Any) -> Any:
    # The enum's own reduction calls enum(text), which refuses a value it does not declare.
    return lambda protocol: (newer_value, (enum, text))


def is_newer(value: Any) -> bool:
    """Whether ``value`` is a newer member of its enum (read from a newer schema, not declared)."""
    # A Flag's combination is a pseudo-member of Python's own (``A | B``), not a newer schema's.
    return (
        isinstance(value, Enum) and not isinstance(value, Flag) and type(value).__members__.get(value.name) is not value
    )


def newer_values_made() -> bool:
    """Whether this process ever read a newer schema's enum value (writes look for them only then)."""
    return bool(MADE)


def carried_in(value: Any) -> Iterable[Enum]:
    """The newer members a field's value holds, wherever :func:`enum_fields` says an enum can be in it.

    Itself, the items of a list, tuple or set, a map's keys and values, a nested model's fields, and
    through any of these again.
    """
    stack = [value]
    while stack:
        value = stack.pop()
        if isinstance(value, Enum):
            if is_newer(value):
                yield value
        elif isinstance(value, list | tuple | set | frozenset):
            stack.extend(value)
        elif isinstance(value, dict):
            stack.extend(value)
            stack.extend(value.values())
        elif isinstance(value, pydantic.BaseModel):
            stack.extend(value.__dict__.values())


def enum_fields(model: type[Any]) -> dict[str, type[Enum]]:
    """The fields of ``model`` (a Model class) that can hold an enum's member (``StrEnum``, ``IntEnum``, any ``Enum``).

    Typed by one themselves, or holding one anywhere inside: items, a map's keys or values, a nested
    model's fields (each field names one such enum).
    """
    known = _FIELDS.get(model)
    if known is not None:
        return known
    found: dict[str, type[Enum]] = {}
    for name, field in model.model_fields.items():
        enum = _enum_inside(field.annotation, {model})
        if enum is not None:
            found[name] = enum
    _FIELDS[model] = found  # whole, then shared (another thread may ask meanwhile)
    return found


def _enum_inside(annotation: Any, seen: set[type[Any]]) -> type[Enum] | None:
    """An enum ``annotation`` holds: itself, in its arguments or a nested model's fields; None if none."""
    stack = [annotation]
    while stack:
        annotation = stack.pop()
        if isinstance(annotation, type) and issubclass(annotation, Enum) and not issubclass(annotation, Flag):
            return annotation
        if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
            if annotation not in seen:  # a model that holds itself is looked into once
                seen.add(annotation)
                stack.extend(field.annotation for field in annotation.model_fields.values())
            continue
        stack.extend(typing.get_args(annotation))
    return None


_FIELDS: dict[type[Any], dict[str, type[Enum]]] = {}


def newer_held(obj: Any) -> dict[str, list[Any]]:
    """The newer schema's values ``obj`` (a model) holds, by field (empty: none): texts, integers or reals."""
    held: dict[str, list[Any]] = {}
    for name in enum_fields(type(obj)):
        values = [v.value for v in carried_in(obj.__dict__.get(name))]
        if values:
            held[name] = values
    return held


def shown_held(held: Mapping[str, list[Any]]) -> str:
    """``held`` (from :func:`newer_held`) as an error message names it: ``field = 'value', 4, ...; ...``."""
    return "; ".join(f"{name} = {', '.join(map(repr, texts))}" for name, texts in sorted(held.items()))
