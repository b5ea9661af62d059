"""OVSDB values: wire <-> cells round trips and update2 diffs, for all inputs (no server)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.families.ovsdb.datum import (
    ColumnType,
    apply_diff,
    cell_encoder,
    cell_from_wire,
    cell_to_wire,
    escape,
    escape_each,
    unescape,
    wire_map,
)

pytestmark = pytest.mark.timeout(60)

text = st.text(max_size=12)
uuids = st.uuids().map(str)
ATOMS = {"string": text, "integer": st.integers(-(2**40), 2**40), "boolean": st.booleans(), "uuid": uuids,
         "real": st.floats(allow_nan=False, allow_infinity=False, width=32)}  # fmt: skip


@given(text)
def test_escape_round_trips_any_text_and_never_stores_nul(value: str) -> None:
    stored = escape(value)
    assert "\x00" not in stored
    assert unescape(stored) == value


_MAP_TEXT = text | st.sampled_from(["", "\ufffe", "\ufffex", "x\ufffe", "a\x00b", "\x00"])


@given(st.dictionaries(_MAP_TEXT, _MAP_TEXT, max_size=12))
def test_a_string_map_datum_escapes_each_key_and_value_that_needs_it(values: dict[str, str]) -> None:
    # wire_map skips the per-string escape when no string needs it: the datum is the same either way.
    expected = ["map", [[escape(k), escape(v)] for k, v in sorted(values.items())]]
    assert wire_map(values.items()) == expected


@given(st.lists(_MAP_TEXT, max_size=12))
def test_a_list_of_strings_is_escaped_string_by_string(texts: list[str]) -> None:
    out = escape_each(texts)
    assert out == [escape(t) for t in texts] and out is not texts


@given(st.data(), st.sampled_from(sorted(ATOMS)))
def test_scalar_optional_and_set_cells_round_trip(data: st.DataObject, kind: str) -> None:
    atom = data.draw(ATOMS[kind])
    assert cell_from_wire(ColumnType.of(kind), cell_to_wire(ColumnType.of(kind), atom)) == atom
    optional = ColumnType.of(kind, min=0, max=1)
    value = data.draw(st.none() | st.just(atom))
    assert cell_from_wire(optional, cell_to_wire(optional, value)) == value
    many = ColumnType.of(kind, min=0, max=None)
    members = data.draw(st.sets(ATOMS[kind], max_size=6))
    assert cell_from_wire(many, cell_to_wire(many, members)) == members


@given(st.dictionaries(text, text, max_size=6))
def test_map_cells_round_trip(value: dict[str, str]) -> None:
    ctype = ColumnType.of("string", "string", min=0, max=None)
    assert cell_from_wire(ctype, cell_to_wire(ctype, value)) == value


@pytest.mark.parametrize("pairs", [[["a", 1]], [[1, "a"]], [["a", None]], [["a"]], [["a", "b", "c"]], ["abc"]])
def test_a_string_map_holding_anything_but_string_pairs_is_refused(pairs: list[Any]) -> None:
    ctype = ColumnType.of("string", "string", min=0, max=None)
    with pytest.raises(ValueError):
        cell_from_wire(ctype, ["map", [["ok", "fine"], *pairs]])


def test_a_value_of_the_wrong_type_is_a_validation_error() -> None:
    with pytest.raises(nbdb.ValidationError):
        cell_to_wire(ColumnType.of("integer"), "three")
    with pytest.raises(nbdb.ValidationError):
        cell_to_wire(ColumnType.of("string", min=0, max=None), "not a list")
    with pytest.raises(ValueError):
        cell_from_wire(ColumnType.of("uuid"), "not a uuid atom")


@pytest.mark.parametrize("big", [2**63, 2**64, -(2**63) - 1])
def test_an_integer_outside_64_bits_is_refused_before_it_is_sent(big: int) -> None:
    """Generated models refuse these themselves; a model of plain ``int`` fields reaches this check."""
    integers = ColumnType.of("integer", min=0, max=None)
    assert cell_to_wire(integers, [2**63 - 1, -(2**63)]) == ["set", [-(2**63), 2**63 - 1]]
    for ctype, cell in ((ColumnType.of("integer"), big), (integers, [1, big])):
        with pytest.raises(nbdb.ValidationError, match="outside OVSDB's integers"):
            cell_to_wire(ctype, cell)


def _server_diff(ctype: ColumnType, old: Any, new: Any) -> Any:
    """The update2 diff ovsdb-server sends for a change from ``old`` to ``new``."""
    if ctype.max == 1:
        return cell_to_wire(ctype, new)
    if ctype.is_map:
        pairs = {k: v for k, v in old.items() if k not in new}  # removed: with their old value
        pairs.update({k: v for k, v in new.items() if old.get(k) != v})  # added or changed: the new value
        return cell_to_wire(ctype, pairs)
    return cell_to_wire(ctype, old ^ new)


@given(st.sets(uuids, max_size=8), st.sets(uuids, max_size=8))
def test_a_set_diff_toggles_exactly_the_symmetric_difference(old: set[str], new: set[str]) -> None:
    ctype = ColumnType.of("uuid", min=0, max=None)
    cell, toggled = apply_diff(ctype, set(old), _server_diff(ctype, old, new))
    assert cell == new
    assert toggled is not None
    assert set(toggled.added) == new - old and set(toggled.removed) == old - new


@given(st.dictionaries(text, text, max_size=6), st.dictionaries(text, text, max_size=6))
def test_a_map_diff_gives_the_new_map(old: dict[str, str], new: dict[str, str]) -> None:
    ctype = ColumnType.of("string", "string", min=0, max=None)
    cell, _ = apply_diff(ctype, dict(old), _server_diff(ctype, old, new))
    assert cell == new


@given(st.none() | text, st.none() | text)
def test_an_optional_diff_is_the_new_value(old: str | None, new: str | None) -> None:
    ctype = ColumnType.of("string", min=0, max=1)
    assert apply_diff(ctype, old, _server_diff(ctype, old, new))[0] == new


def test_a_set_diff_changes_the_cell_in_place() -> None:
    """One element of a 100,000-element set: the set is not copied (a port add costs one element)."""
    ctype = ColumnType.of("uuid", min=0, max=None)
    members = {f"00000000-0000-0000-0000-{i:012d}" for i in range(100_000)}
    new = "ffffffff-0000-0000-0000-000000000000"
    cell, toggled = apply_diff(ctype, members, ["uuid", new])
    assert cell is members and new in members and toggled is not None and toggled.added == [new]


# Any cell a column may be handed: every atom type (and the escaped marker), str subclasses, and containers of
# the wrong shape, for every shape of column (scalar, optional, set, map).
_KINDS = st.sampled_from(sorted(ATOMS))


class _Name(str):
    """A str subclass: the generic path sorts it by its type's name, so a compiled one must not take it."""


_TEXT = text | st.sampled_from(["", "\ufffex", "a\x00b", "b"])  # the last but one two are stored escaped
_ANY_ATOM = st.one_of(*ATOMS.values(), _TEXT, _TEXT.map(_Name), st.none())
_CELLS = st.one_of(
    _ANY_ATOM,
    st.sets(_TEXT, max_size=5),
    st.sets(st.one_of(_TEXT, st.integers(0, 9)), max_size=5),
    st.frozensets(_TEXT, max_size=4),
    st.lists(_ANY_ATOM, max_size=4),
    st.dictionaries(_TEXT, _TEXT, max_size=4),
    st.dictionaries(st.one_of(_TEXT, st.integers(0, 9)), st.one_of(_TEXT, st.integers(0, 9), st.none()), max_size=4),
)


@settings(max_examples=1000)
@given(_KINDS, st.none() | _KINDS, st.sampled_from([(1, 1), (0, 1), (0, None), (1, 5)]), _CELLS)
def test_a_compiled_encoder_writes_what_cell_to_wire_writes_or_raises_alike(
    key: str, value: str | None, bounds: tuple[int, int | None], cell: Any
) -> None:
    ctype = ColumnType.of(key, value, min=bounds[0], max=bounds[1])
    try:
        expected: Any = cell_to_wire(ctype, cell)
    except (nbdb.ValidationError, TypeError) as exc:
        expected = (type(exc), str(exc))
    try:
        got: Any = cell_encoder(ctype)(cell)
    except (nbdb.ValidationError, TypeError) as exc:
        got = (type(exc), str(exc))
    assert got == expected


_STRING_COLUMNS = [
    ColumnType.of("string"),
    ColumnType.of("string", min=0, max=1),
    ColumnType.of("string", min=0, max=None),
    ColumnType.of("string", "string", min=0, max=None),
]


@settings(max_examples=500)
@given(
    st.sampled_from(_STRING_COLUMNS),
    st.one_of(
        _TEXT,
        st.sets(_TEXT, max_size=5),
        st.sets(_TEXT | _TEXT.map(_Name), max_size=4),
        st.dictionaries(_TEXT, _TEXT, max_size=5),
        st.dictionaries(_TEXT | _TEXT.map(_Name), _TEXT | st.integers(0, 3), max_size=4),
    ),
)
def test_the_compiled_paths_of_string_columns_write_what_cell_to_wire_writes(ctype: ColumnType, cell: Any) -> None:
    # The columns OVN's rows are made of, with cells of their own shape (the paths compiled for them).
    try:
        expected: Any = cell_to_wire(ctype, cell)
    except nbdb.ValidationError as exc:
        expected = str(exc)
    try:
        got: Any = cell_encoder(ctype)(cell)
    except nbdb.ValidationError as exc:
        got = str(exc)
    assert got == expected


_STORED_TEXT = (
    text
    | text.map(lambda t: "\ufffe" + t)
    | st.sampled_from(
        [
            "\ufffe",
            "\ufffe1",
            '\ufffe"x"',
            '\ufffe"\\u0000"',
            '\ufffe"\\ufffe"',
            '\ufffe"\\u0061\\u0000"',
            '\ufffe"a" [[[',
            "\ufffe" + "[" * 50_000 + "]" * 50_000,
        ]
    )
).filter(lambda t: "\x00" not in t)


@given(_STORED_TEXT)
def test_any_string_another_writer_stores_reads_and_writes_back_as_stored(stored: str) -> None:
    """A string another writer stored (OVSDB strings hold no NUL) is written back exactly as stored.

    One starting with the marker that ``escape`` did not make was read as another value (``"\\ufffe1"``
    as ``"1"``) and written back quoted: every compare-and-swap of its row (an update, a delete)
    failed its wait until ``timeout`` (BackendUnavailableError), for good. One holding JSON nested
    past the recursion limit after the marker raised RecursionError: it killed the I/O thread.
    """
    read = unescape(stored)
    assert isinstance(read, str)
    assert escape(read) == stored
    assert cell_to_wire(ColumnType.of("string"), cell_from_wire(ColumnType.of("string"), stored)) == stored
    strings = ColumnType.of("string", "string", min=0, max=None)
    assert cell_to_wire(strings, cell_from_wire(strings, ["map", [[stored, stored]]])) == ["map", [[stored, stored]]]
    assert escape_each([read]) == [stored] and wire_map([(read, read)]) == ["map", [[stored, stored]]]
