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


def _header_bytes(values: list[int], order: list[int]) -> bytes:
    return b"".join(_encode(number, 0, values[(number - 1) % 4]) for number in order)


_VALUES = st.lists(st.integers(0, 2**64 - 1) | st.integers(0, 2**80), min_size=4, max_size=4)


@settings(max_examples=500, deadline=None)
@given(
    _VALUES,
    st.permutations([1, 2, 3, 4]) | st.lists(st.integers(1, 6), max_size=6),
    st.lists(_FIELD, max_size=2),
    st.integers(0, 60),
)
def test_the_header_reader_answers_as_the_general_parser(
    values: list[int], order: list[int], extra: list[tuple[int, int, int | bytes]], cut: int
) -> None:
    # Fields in etcd's order or any other, left out or repeated, unknown ones after, values past 64 bits, cut anywhere.
    data = _header_bytes(values, order) + b"".join(_encode(*f) for f in extra)
    for message in (data, data[:cut], _header_bytes(values, [1, 2, 3, 4])):
        assert _read(wire._header, message) == _read(wire._header_general, message)


def test_a_header_as_etcd_writes_it_twice() -> None:
    # The second reply of a member finds its cluster id, member id and term remembered.
    for revision in (45029, 45030):
        data = _header_bytes([5596679759333236946, 5121013633748946582, revision, 2], [1, 2, 3, 4])
        assert wire._header(data) == wire.Header(5596679759333236946, 5121013633748946582, revision, 2)


def _response_op(kind: int, kvs: list[bytes]) -> bytes:
    """A ResponseOp: a range's (kind 1) with ``kvs``, or a put's (2) or delete's (3) with a header only."""
    header = _encode(1, 2, _header_bytes([7, 8, 9, 2], [1, 2, 3, 4]))
    inner = header + b"".join(_encode(2, 2, kv) for kv in kvs) if kind == 1 else header
    return _encode(kind, 2, inner)


_KV_BYTES = st.builds(
    lambda key, value, version: _encode(1, 2, key) + _encode(4, 0, version) + _encode(5, 2, value),
    st.binary(max_size=40),
    st.binary(max_size=200),
    st.integers(0, 2**40),
)
_TXN_FIELD = st.one_of(
    st.builds(lambda values: (1, 2, _header_bytes(values, [1, 2, 3, 4])), _VALUES),
    st.tuples(st.just(2), st.just(0), st.integers(0, 2**70)),
    st.builds(lambda kind, kvs: (3, 2, _response_op(kind, kvs)), st.integers(1, 3), st.lists(_KV_BYTES, max_size=3)),
    _FIELD,
)


@settings(max_examples=500, deadline=None)
@given(st.lists(_TXN_FIELD, max_size=6), st.integers(0, 600))
def test_the_txn_reader_answers_as_the_general_parser(fields: list[tuple[int, int, int | bytes]], cut: int) -> None:
    data = b"".join(_encode(*f) for f in fields)
    for message in (data, data[:cut]):
        assert _read(wire.parse_txn, message) == _read(wire._parse_txn_general, message)


@given(st.binary(max_size=300))
def test_a_range_op_of_one_key_is_the_general_encoding(key: bytes) -> None:
    assert wire.request_range(key) == wire._blob(b"\x0a", wire.range_request(key))


def _prefix_end_by_definition(prefix: bytes) -> bytes:
    """The smallest key above every key starting with ``prefix``: drop trailing 0xff, add one to the last byte."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes((stripped[-1] + 1,)) if stripped else b"\0"


@given(st.binary(max_size=20) | st.builds(lambda b, n: b + b"\xff" * n, st.binary(max_size=5), st.integers(0, 3)))
def test_prefix_end_is_the_smallest_key_above_the_prefix(prefix: bytes) -> None:
    assert wire.prefix_end(prefix) == _prefix_end_by_definition(prefix)


@given(st.binary(max_size=60), st.binary(max_size=300), st.integers(0, 2**63 - 1))
def test_a_put_op_is_its_general_encoding(key: bytes, value: bytes, lease: int) -> None:
    put = _encode(1, 2, key) + (_encode(2, 2, value) if value else b"") + (_encode(3, 0, lease) if lease else b"")
    assert wire.request_put(key, value, lease) == _encode(2, 2, put)
