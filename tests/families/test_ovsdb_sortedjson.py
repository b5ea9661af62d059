"""The OVSDB family's JSON renders (orjson where provably alike) write ``json``'s bytes, for every value."""

from __future__ import annotations

import enum
import json
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbdb.codec import encode
from nbdb.families.ovsdb import sortedjson
from nbdb.families.ovsdb.rows import new_row, render
from nbdb.families.ovsdb.sortedjson import compact_text, sorted_bytes, sorted_text
from nbdb.models import LogicalSwitchPort

from .conftest import make_mapping

pytestmark = pytest.mark.timeout(120)

# Text that hits every escape json and orjson could disagree on: quotes, backslashes, control
# characters, DEL, non-ASCII (BMP and beyond), and the separators json spaces outside strings.
_SPECIAL = st.sampled_from(list('",:\\/{}[] \x00\x01\x1f\x7f\x80\b\f\n\r\t\u2028\u00e9\uffff\U0001f600'))
_TEXT = st.text(st.characters(exclude_categories=("Cs",)) | _SPECIAL, max_size=12) | st.lists(
    st.sampled_from(['":', '",', "\\", '\\":', '" :', "x", ":", ","]), max_size=4
).map("".join)


class _Str(str):
    pass


class _Int(int):
    pass


class _Color(enum.IntEnum):
    RED = 1


class _Name(enum.StrEnum):
    A = "a:b"


_LEAF = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1])
    | st.floats()
    | _TEXT
)
_ODD = st.sampled_from([_Str("x,y"), _Int(5), _Color.RED, _Name.A, uuid.UUID(int=1), 1.5, float("nan")])
_KEY = _TEXT | st.builds(_Str, _TEXT)


def _tree(leaf: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaf,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.lists(inner, max_size=3).map(tuple)
            | st.dictionaries(_KEY, inner, max_size=4)
        ),
        max_leaves=25,
    )


def _outcome(render: Any, value: Any) -> Any:
    try:
        return render(value)
    except (TypeError, ValueError, RecursionError) as exc:
        return type(exc)


_CASES = [
    (sorted_bytes, lambda v: json.dumps(v, sort_keys=True).encode()),
    (sorted_text, lambda v: json.dumps(v, sort_keys=True)),
    (compact_text, lambda v: json.dumps(v, sort_keys=True, separators=(",", ":"))),
]


@settings(max_examples=600, deadline=None)
@given(value=_tree(_LEAF))
def test_every_json_value_renders_as_json_does(value: Any) -> None:
    for fast, slow in _CASES:
        assert _outcome(fast, value) == _outcome(slow, value)


@settings(max_examples=300, deadline=None)
@given(
    value=_tree(_LEAF | _ODD), odd_keys=st.dictionaries(st.integers() | st.none() | st.booleans(), _LEAF, max_size=2)
)
def test_values_json_treats_its_own_way_render_as_json_does(value: Any, odd_keys: dict[Any, Any]) -> None:
    """Floats, NaN, subclasses, enums, types json refuses, keys that are not str (sorted with str ones: TypeError)."""
    for candidate in (value, odd_keys, {"k": value, **odd_keys}, [odd_keys, value]):
        for fast, slow in _CASES:
            assert _outcome(fast, candidate) == _outcome(slow, candidate)


def test_deep_and_circular_values_fail_as_json_does() -> None:
    deep: Any = "x"
    for _ in range(300):
        deep = [deep]
    loop: list[Any] = []
    loop.append(loop)
    for value in (deep, loop):
        for fast, slow in _CASES:
            assert _outcome(fast, value) == _outcome(slow, value)


def test_a_written_port_keeps_the_bytes_and_digest_json_gave_it() -> None:
    """A port's document (MACs and addresses: ':' inside strings) is rendered the fast way, to json's bytes.

    The digest stored by a client rendering with ``json`` is the digest of these bytes: such rows
    read as unchanged.
    """
    tm = make_mapping().get("LogicalSwitchPort")
    port = LogicalSwitchPort(
        switch=uuid.uuid4(), name="p:1, a", addresses=["0a:00:00:00:00:07 10.0.0.7"],
        external_ids={"neutron:device_owner": "compute:nova"}, tag_request=7,
    )  # fmt: skip
    cells, _wire, ext, parents, _values = new_row(tm, json.loads(encode(port)))
    doc = render(tm, port.id, {**cells, "external_ids": ext}, parents)
    as_json = json.dumps(json.loads(doc.data), sort_keys=True).encode()
    assert doc.data == as_json
    assert sortedjson._orjson(json.loads(doc.data)) is not None  # the fast path, not the fallback
