"""OVSDB values (RFC 7047 section 5.1) on the wire and as Python values, and update2 diffs.

A column's value on the wire is a *datum*: an atom, ``["set", [atoms]]`` or
``["map", [[key, value], ...]]``; a uuid atom is ``["uuid", "..."]``. Here a
column's value in Python (a *cell*) is:

* an atom (``str``, ``int``, ``float``, ``bool``; a uuid as its ``str``) for a
  scalar column (exactly one element);
* an atom or None for an optional column (zero or one element);
* a ``set`` of atoms for any other set column;
* a ``dict`` for a map column.

Cells of sets and maps are changed in place by :func:`apply_diff`, so a change
of one element of a 100,000-element set costs one element, not the set.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from nbdb import errors

__all__ = [
    "ATOMIC_TYPES",
    "INT_MAX",
    "INT_MIN",
    "BaseType",
    "ColumnType",
    "Toggled",
    "apply_diff",
    "atom_from_wire",
    "atom_to_wire",
    "cell_encoder",
    "cell_from_wire",
    "cell_to_wire",
    "default_cell",
    "unescape",
    "wire_map",
]

ATOMIC_TYPES = ("integer", "real", "boolean", "string", "uuid")

_ESCAPE = "\ufffe"
_DEFAULT_ATOM: dict[str, Any] = {"string": "", "integer": 0, "real": 0.0, "boolean": False}


@dataclass(frozen=True, slots=True)
class BaseType:
    """The type of a column's keys or values: an atomic type and its constraints (RFC 7047 <base-type>)."""

    kind: str
    enum: tuple[Any, ...] = ()
    ref_table: str | None = None
    ref_type: str = "strong"
    min_integer: int | None = None
    max_integer: int | None = None
    min_real: float | None = None
    max_real: float | None = None
    min_length: int | None = None
    max_length: int | None = None

    @classmethod
    def parse(cls, spec: Any) -> BaseType:
        """From a schema's ``<base-type>`` (a type name or an object)."""
        if isinstance(spec, str):
            if spec not in ATOMIC_TYPES:
                raise errors.ValidationError(f"unknown OVSDB atomic type {spec!r}")
            return cls(spec)
        if not isinstance(spec, dict) or spec.get("type") not in ATOMIC_TYPES:
            raise errors.ValidationError(f"not an OVSDB base type: {spec!r}")
        enum: tuple[Any, ...] = ()
        if "enum" in spec:
            raw = spec["enum"]
            enum = tuple(raw[1]) if isinstance(raw, list) and raw[:1] == ["set"] else (raw,)
        return cls(
            kind=spec["type"],
            enum=enum,
            ref_table=spec.get("refTable"),
            ref_type=spec.get("refType", "strong"),
            min_integer=spec.get("minInteger"),
            max_integer=spec.get("maxInteger"),
            min_real=spec.get("minReal"),
            max_real=spec.get("maxReal"),
            min_length=spec.get("minLength"),
            max_length=spec.get("maxLength"),
        )


@dataclass(frozen=True, slots=True)
class ColumnType:
    """The type of one column: key (and value, for maps) types and the element count bounds."""

    key: BaseType
    value: BaseType | None
    min: int
    max: int | None
    """None: unlimited."""
    is_map: bool = field(init=False, repr=False, compare=False)
    """A map column."""
    is_scalar: bool = field(init=False, repr=False, compare=False)
    """Exactly one atom."""
    is_optional: bool = field(init=False, repr=False, compare=False)
    """Zero or one atom."""
    is_set: bool = field(init=False, repr=False, compare=False)
    """Any other set: a cell that is a Python ``set``."""

    def __post_init__(self) -> None:
        # Asked for every cell a row is built or rendered from: computed once, not per call.
        scalar = self.value is None and self.min == 1 and self.max == 1
        optional = self.value is None and self.min == 0 and self.max == 1
        object.__setattr__(self, "is_map", self.value is not None)
        object.__setattr__(self, "is_scalar", scalar)
        object.__setattr__(self, "is_optional", optional)
        object.__setattr__(self, "is_set", self.value is None and not scalar and not optional)

    @classmethod
    def parse(cls, spec: Any) -> ColumnType:
        """From the ``type`` member of a column in an ``.ovsschema``."""
        if isinstance(spec, str):
            return cls(BaseType.parse(spec), None, 1, 1)
        if not isinstance(spec, dict) or "key" not in spec:
            raise errors.ValidationError(f"not an OVSDB column type: {spec!r}")
        kmax = spec.get("max", 1)
        low, high = int(spec.get("min", 1)), None if kmax == "unlimited" else int(kmax)
        if low not in (0, 1) or (high is not None and high < max(low, 1)):
            # RFC 7047: min is 0 or 1, max at least 1 and min (ovsdb-server refuses any other schema).
            raise errors.ValidationError(f"not an OVSDB column type: min {low}, max {kmax!r} in {spec!r}")
        return cls(
            BaseType.parse(spec["key"]),
            None if spec.get("value") is None else BaseType.parse(spec["value"]),
            low,
            high,
        )

    @classmethod
    def of(cls, key: str, value: str | None = None, min: int = 1, max: int | None = 1) -> ColumnType:
        """A column type from type names (for tests and generated schemas)."""
        return cls(BaseType(key), None if value is None else BaseType(value), min, max)


class _Verbatim(str):
    """A stored string that starts with the marker but is no string :func:`escape` stored: another writer's.

    Read as it is, and written back as it is: quoted again, it was another value than the row
    holds, so every compare-and-swap on the row (an update, a delete) failed its wait and was
    planned again until its ``timeout`` ran out (``BackendUnavailableError``), for good.

    Unequal to a plain string of the same text (the model's value, which :func:`escape` quotes):
    a write of the row writes that column again, quoted as nbdb stores it, instead of taking
    the row for one that reads back as written.
    """

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is _Verbatim and str.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = str.__hash__


def escape(text: str) -> str:
    """OVSDB strings cannot hold NUL: such strings (and any starting with the marker) are stored JSON-quoted."""
    if "\x00" in text or text.startswith(_ESCAPE):
        if type(text) is _Verbatim:  # (it starts with the marker: no cost for any other string)
            return str(text)
        return _ESCAPE + json.dumps(text)
    return text


def escape_each(texts: list[str]) -> list[str]:
    """``[escape(t) for t in texts]``, with one scan of all the text instead of a call per string.

    A string :func:`escape` changes holds NUL or the marker (it starts with it), so when the
    joined text holds neither, every string is written as it is.
    """
    joined = "".join(texts)
    if "\x00" not in joined and _ESCAPE not in joined:
        return texts[:]
    return [escape(t) for t in texts]


def unescape(text: Any) -> Any:
    """The string :func:`escape` stored (anything else unchanged)."""
    if isinstance(text, str) and text.startswith(_ESCAPE):
        # Only a JSON string, quoted as escape() quotes it, is one escape() stored. Another writer's
        # text after the marker may be any JSON (a number came back as its text: another value than
        # stored) or JSON nested past the recursion limit, whose RecursionError killed the
        # connection's I/O thread for good (a JSON string cannot nest: it is looked for first).
        if text.startswith(_ESCAPE + '"'):
            try:
                value = json.loads(text[len(_ESCAPE) :])
            except ValueError:
                value = None
            if isinstance(value, str) and escape(value) == text:
                return value
        return _Verbatim(text)
    return text


INT_MIN, INT_MAX = -(2**63), 2**63 - 1
"""OVSDB's integers: 64-bit, signed."""


def atom_to_wire(kind: str, value: Any) -> Any:
    """One atom of type ``kind`` as JSON; ValidationError if ``value`` is not of that type."""
    if kind == "uuid":
        return ["uuid", str(value)]
    if kind == "string":
        if not isinstance(value, str):
            raise errors.ValidationError(f"expected a string, got {value!r}")
        return escape(value)
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise errors.ValidationError(f"expected an integer, got {value!r}")
        if not INT_MIN <= value <= INT_MAX:
            # ovsdb-server refuses some (a column's value) and stores others as another number (a map's
            # key 2**64 became 0): both are refused here, before anything is sent.
            raise errors.ValidationError(f"{value} is outside OVSDB's integers (64-bit, signed)")
        return value
    if kind == "real":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise errors.ValidationError(f"expected a number, got {value!r}")
        return float(value)
    if not isinstance(value, bool):
        raise errors.ValidationError(f"expected a boolean, got {value!r}")
    return value


def atom_from_wire(kind: str, datum: Any) -> Any:
    """One atom from JSON; ValueError if it is not one of type ``kind``."""
    if kind == "uuid":
        if isinstance(datum, list) and len(datum) == 2 and datum[0] in ("uuid", "named-uuid"):
            return str(datum[1])
        raise ValueError(f"not a uuid atom: {datum!r}")
    if kind == "string":
        if not isinstance(datum, str):
            raise ValueError(f"not a string atom: {datum!r}")
        return unescape(datum)
    if kind == "real" and isinstance(datum, int | float) and not isinstance(datum, bool):
        return float(datum)
    if kind == "integer" and isinstance(datum, int) and not isinstance(datum, bool):
        return datum
    if kind == "boolean" and isinstance(datum, bool):
        return datum
    raise ValueError(f"not a {kind} atom: {datum!r}")


def _elements(datum: Any) -> list[Any]:
    """The atoms of a set datum (a bare atom is a one-element set)."""
    if isinstance(datum, list) and len(datum) == 2 and datum[0] == "set":
        return list(datum[1])
    return [datum]


def _pairs(datum: Any) -> list[Any]:
    if isinstance(datum, list) and len(datum) == 2 and datum[0] == "map" and isinstance(datum[1], list):
        return datum[1]
    raise ValueError(f"not a map datum: {datum!r}")


def _set_default(kind: str) -> Any:
    """RFC 7047's default atom of ``kind`` as a member of a set or map cell (a uuid: all zeros)."""
    return "00000000-0000-0000-0000-000000000000" if kind == "uuid" else _DEFAULT_ATOM[kind]


def default_cell(ctype: ColumnType) -> Any:
    """The cell of a column the server left out (its default: RFC 7047's, as ovsdb-server's).

    A set or map of at least one member defaults to one default atom (pair): ovsdb-server leaves
    ``[0]`` out of the rows it sends for a set of at least one integer, which read as empty.
    """
    if ctype.value is not None:  # a map
        return {_set_default(ctype.key.kind): _set_default(ctype.value.kind)} if ctype.min else {}
    if ctype.is_set:
        return {_set_default(ctype.key.kind)} if ctype.min else set()
    if ctype.is_optional:
        return None
    return _DEFAULT_ATOM.get(ctype.key.kind, "")


def cell_from_wire(ctype: ColumnType, datum: Any) -> Any:
    """A datum as a cell (see the module docstring); ValueError if it does not fit ``ctype``."""
    key = ctype.key.kind
    if ctype.value is not None:
        value = ctype.value.kind
        pairs = _pairs(datum)
        if key == "string" and value == "string":
            # external_ids and the like, the bulk of every row read: atom_from_wire inlined.
            out = {}
            for k, v in pairs:
                if not isinstance(k, str) or not isinstance(v, str):
                    raise ValueError(f"not a string atom: {k if not isinstance(k, str) else v!r}")
                out[unescape(k) if k.startswith(_ESCAPE) else k] = unescape(v) if v.startswith(_ESCAPE) else v
            return out
        return {atom_from_wire(key, k): atom_from_wire(value, v) for k, v in pairs}
    if ctype.is_scalar:
        return atom_from_wire(key, datum)
    atoms = _elements(datum)
    if ctype.is_optional:
        if len(atoms) > 1:
            raise ValueError(f"more than one atom in an optional column: {datum!r}")
        return atom_from_wire(key, atoms[0]) if atoms else None
    return {atom_from_wire(key, a) for a in atoms}


def _sort_key(atom: Any) -> Any:
    return (type(atom).__name__, atom)


def cell_to_wire(ctype: ColumnType, cell: Any) -> Any:
    """A cell (or a list for a set column) as a datum; ValidationError if it does not fit ``ctype``."""
    key = ctype.key.kind
    if ctype.value is not None:
        if not isinstance(cell, dict):
            raise errors.ValidationError(f"expected a mapping, got {cell!r}")
        value = ctype.value.kind
        return ["map", [[atom_to_wire(key, k), atom_to_wire(value, v)] for k, v in sorted(cell.items())]]
    if ctype.is_scalar:
        return atom_to_wire(key, _DEFAULT_ATOM.get(key, "") if cell is None else cell)
    if ctype.is_optional:
        return ["set", []] if cell is None else atom_to_wire(key, cell)
    if not isinstance(cell, list | tuple | set | frozenset):
        raise errors.ValidationError(f"expected a list, got {cell!r}")
    return ["set", [atom_to_wire(key, a) for a in sorted(set(cell), key=_sort_key)]]


def cell_encoder(ctype: ColumnType) -> Callable[[Any], Any]:
    """``cell_to_wire`` of one column type, compiled: the same datum (or ValidationError) for every cell.

    Every commit encodes every mapped column of the rows it writes, and the
    generic path asks the column's type the same questions for each cell.
    The columns OVN's rows are made of (strings, sets of strings, string
    maps) get a path of their own when every atom is a plain ``str``; any
    other cell takes the generic path, which also raises the errors.
    """
    key = ctype.key.kind
    generic = functools.partial(cell_to_wire, ctype)
    if ctype.is_optional:

        def optional(cell: Any) -> Any:
            return ["set", []] if cell is None else generic(cell)

        return optional
    if key != "string":
        return generic
    if ctype.value is not None:
        if ctype.value.kind != "string":
            return generic

        def string_map(cell: Any) -> Any:
            if type(cell) is dict and all(type(k) is str and type(v) is str for k, v in cell.items()):
                return ["map", [[escape(k), escape(v)] for k, v in sorted(cell.items())]]
            return generic(cell)

        return string_map
    if ctype.is_scalar:

        def string(cell: Any) -> Any:
            return escape(cell) if type(cell) is str else generic(cell)

        return string
    if ctype.is_set:

        def string_set(cell: Any) -> Any:
            # One type of atom: sorting by (type name, atom), as the generic path does, is sorting by atom.
            if type(cell) is set and all(type(a) is str for a in cell):
                return ["set", escape_each(sorted(cell))]
            return generic(cell)

        return string_set
    return generic


def wire_map(values: Iterable[tuple[str, str]]) -> list[Any]:
    """A string-to-string map datum."""
    pairs = sorted(values)
    # One scan of all the text instead of a call per key and value (as escape_each: ten pairs in
    # a port's external_ids).
    text = "".join([k + v for k, v in pairs])
    if "\x00" not in text and _ESCAPE not in text:
        return ["map", [[k, v] for k, v in pairs]]
    return ["map", [[escape(k), escape(v)] for k, v in pairs]]


@dataclass(slots=True)
class Toggled:
    """The elements a set diff added and removed (for columns whose membership is followed)."""

    added: list[Any]
    removed: list[Any]


def apply_diff(ctype: ColumnType, cell: Any, diff: Any) -> tuple[Any, Toggled | None]:
    """The cell after an update2/update3 ``modify`` diff, and for set columns what it toggled.

    As ovsdb-server sends them: for a column of at most one element (scalar,
    optional, or a map of at most one pair) the diff is the new value; for a
    set its elements are toggled (the symmetric difference); for a map, a key
    with the same value is removed, a key with another value replaced, a new
    key added. Sets and maps are changed in place. A set or map the row left
    out is at its default (:func:`default_cell`), which the diff changes.
    """
    key = ctype.key.kind
    if ctype.value is not None:
        value = ctype.value.kind
        if ctype.max == 1:  # the new value, as for any column of at most one element
            return {atom_from_wire(key, k): atom_from_wire(value, v) for k, v in _pairs(diff)}, None
        out = cell if isinstance(cell, dict) else default_cell(ctype)  # left out: at its default
        for k, v in _pairs(diff):
            k, v = atom_from_wire(key, k), atom_from_wire(value, v)
            if k in out and out[k] == v:
                del out[k]
            else:
                out[k] = v
        return out, None
    if ctype.is_scalar:
        return atom_from_wire(key, diff), None
    atoms = [atom_from_wire(key, a) for a in _elements(diff)]
    if ctype.is_optional:
        if len(atoms) > 1:
            raise ValueError(f"more than one atom for an optional column: {diff!r}")
        return (atoms[0] if atoms else None), None
    members = cell if isinstance(cell, set) else default_cell(ctype)
    toggled = Toggled([], [])
    for atom in atoms:
        if atom in members:
            members.discard(atom)
            toggled.removed.append(atom)
        else:
            members.add(atom)
            toggled.added.append(atom)
    return members, toggled
