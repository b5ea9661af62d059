"""etcd's wire format: the one-pass KeyValue reader against the general parser (pure logic, no server)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from nbdb.backends.etcd import wire


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_KNOWN = st.one_of(
    # The fields as etcd writes them: each of its own wire type (values past int64 included).
    st.tuples(st.sampled_from([2, 3, 4, 6]), st.just(0), st.integers(0, 2**64 - 1)),
    st.tuples(st.sampled_from([1, 5]), st.just(2), st.binary(max_size=300)),
)
_FIELD = st.one_of(
    _KNOWN,
    # Anything else a damaged or newer message may hold: unknown fields, other wire types, tags of several bytes.
    st.tuples(
        st.integers(1, 40), st.sampled_from([0, 1, 2, 3, 5, 7]), st.integers(0, 2**64 - 1) | st.binary(max_size=20)
    ),
)


def _encode(number: int, kind: int, value: int | bytes) -> bytes:
    tag = _varint(number << 3 | kind)
    if kind == 0:
        return tag + _varint(value if isinstance(value, int) else len(value))
    if kind == 2:
        blob = value if isinstance(value, bytes) else str(value).encode()
        return tag + _varint(len(blob)) + blob
    if kind == 1:
        return tag + (value if isinstance(value, bytes) else value.to_bytes(8, "little"))[:8]
    if kind == 5:
        return tag + (value if isinstance(value, bytes) else (value & 0xFFFFFFFF).to_bytes(4, "little"))[:4]
    return tag


def _read(reader: object, data: bytes) -> wire.KV | str:
    try:
        return reader(data)  # type: ignore[operator,no-any-return]
    except wire.WireError as exc:
        return f"WireError: {exc}"


@settings(max_examples=500, deadline=None)
@given(st.lists(_KNOWN, max_size=8) | st.lists(_FIELD, max_size=8), st.integers(0, 400))
def test_one_pass_reader_answers_as_the_general_parser(fields: list[tuple[int, int, int | bytes]], cut: int) -> None:
    data = b"".join(_encode(*f) for f in fields)
    for message in (data, data[:cut]):  # whole, and cut anywhere (a truncated message)
        assert _read(wire._kv, message) == _read(wire._kv_general, message)


def test_a_key_value_as_etcd_writes_it() -> None:
    data = (
        _encode(1, 2, b"nbdb/o/t/LogicalSwitchPort/1")
        + _encode(2, 0, 300)
        + _encode(3, 0, 2**40)
        + _encode(4, 0, 7)
        + _encode(5, 2, b"{}")
        + _encode(6, 0, 1)
    )
    assert wire._kv(data) == wire.KV(b"nbdb/o/t/LogicalSwitchPort/1", 300, 2**40, 7, b"{}", 1)
    assert wire._kv(b"") == wire.KV(b"", 0, 0, 0, b"", 0)
