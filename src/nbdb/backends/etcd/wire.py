"""The protobuf wire format of the few etcd v3 messages nbdb uses, without protobuf.

etcd's API is gRPC with protobuf messages. Generated stubs tie a client to one
protobuf runtime (the ``etcd3`` package's stubs no longer import on protobuf 4+
unless the whole process is switched to pure-Python protobuf), so nbdb encodes
and decodes the messages it needs itself: the wire format is small and stable
(varints and length-delimited fields), and this keeps the etcd extra down to
``grpcio``, which does not depend on protobuf at all.

Field numbers follow etcd's ``etcdserverpb/rpc.proto`` and ``mvccpb/kv.proto``
(identical in 3.4, 3.5 and 3.6). Only the fields nbdb reads or writes are here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

__all__ = [
    "CMP_EQUAL",
    "CMP_GREATER",
    "CMP_LESS",
    "CMP_NOT_EQUAL",
    "KV",
    "TARGET_MOD",
    "TARGET_VALUE",
    "TARGET_VERSION",
    "Event",
    "Header",
    "WatchResponse",
    "WireError",
    "authenticate_request",
    "compact_request",
    "compare",
    "lease_grant_request",
    "lease_id_request",
    "parse_authenticate",
    "parse_header_only",
    "parse_lease",
    "parse_nested_txns",
    "parse_range",
    "parse_status",
    "parse_txn",
    "parse_watch",
    "prefix_end",
    "range_request",
    "request_delete",
    "request_put",
    "request_range",
    "request_txn",
    "txn_request",
    "watch_create_request",
    "watch_progress_request",
]

CMP_EQUAL, CMP_GREATER, CMP_LESS, CMP_NOT_EQUAL = 0, 1, 2, 3
TARGET_VERSION, TARGET_CREATE, TARGET_MOD, TARGET_VALUE, TARGET_LEASE = 0, 1, 2, 3, 4
_U64 = 1 << 64


class WireError(ValueError):
    """Bytes from the server that are not the expected message."""


# ---------------------------------------------------------------- encoding


_ONE_BYTE = tuple(bytes((i,)) for i in range(0x80))


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:  # tags, flags and short lengths: most of what a commit encodes
        return _ONE_BYTE[value]
    if value < 0:
        value += _U64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class _Writer:
    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def varint(self, number: int, value: int, *, force: bool = False) -> _Writer:
        # proto3 omits zero scalars; a oneof member must be written even when zero.
        if value or force:
            self.buf += _varint(number << 3)
            self.buf += _varint(value)
        return self

    def blob(self, number: int, value: bytes, *, force: bool = False) -> _Writer:
        if value or force:
            self.buf += _varint((number << 3) | 2)
            self.buf += _varint(len(value))
            self.buf += value
        return self

    def done(self) -> bytes:
        return bytes(self.buf)


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key that starts with ``prefix`` (etcd's range_end)."""
    if prefix and prefix[-1] < 0xFF:  # every prefix nbdb asks about (they end in "/")
        return prefix[:-1] + bytes((prefix[-1] + 1,))
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every key


def range_request(
    key: bytes,
    range_end: bytes = b"",
    *,
    limit: int = 0,
    revision: int = 0,
    keys_only: bool = False,
    count_only: bool = False,
    serializable: bool = False,
) -> bytes:
    """RangeRequest (sorted by key, ascending: etcd's default for ranges)."""
    w = _Writer().blob(1, key, force=True).blob(2, range_end).varint(3, limit).varint(4, revision)
    return w.varint(7, int(serializable)).varint(8, int(keys_only)).varint(9, int(count_only)).done()


# The hot messages of a commit are built by concatenation, their one-byte tags spelled out
# (field number << 3 | wire type): a writer object per message cost more than the bytes.


def _blob(tag: bytes, value: bytes) -> bytes:
    n = len(value)
    return tag + (_ONE_BYTE[n] if n < 0x80 else _varint(n)) + value


def request_range(
    key: bytes, range_end: bytes = b"", *, limit: int = 0, revision: int = 0, keys_only: bool = False
) -> bytes:
    """RequestOp wrapping a RangeRequest (at most ``limit`` keys, 0: all; at ``revision``, 0: the transaction's own)."""
    if not (range_end or limit or revision or keys_only):  # one key as it is now (a commit token's read on failure)
        return _blob(b"\x0a", _blob(b"\x0a", key))
    return _blob(b"\x0a", range_request(key, range_end, limit=limit, revision=revision, keys_only=keys_only))


def request_put(key: bytes, value: bytes, lease: int = 0) -> bytes:
    """RequestOp wrapping a PutRequest."""
    put = _blob(b"\x0a", key)
    if value:
        put += _blob(b"\x12", value)
    if lease:
        put += b"\x18" + _lease_varint(lease)
    return _blob(b"\x12", put)


_lease_varint = lru_cache(maxsize=64)(_varint)
"""A lease id's varint (ten bytes of Python loop), remembered: every commit's token rides on the same lease."""


def request_delete(key: bytes, range_end: bytes = b"") -> bytes:
    """RequestOp wrapping a DeleteRangeRequest."""
    delete = _blob(b"\x0a", key)
    if range_end:
        delete += _blob(b"\x12", range_end)
    return _blob(b"\x1a", delete)


def request_txn(txn: bytes) -> bytes:
    """RequestOp wrapping a TxnRequest (a nested transaction, etcd 3.3+)."""
    return _blob(b"\x22", txn)


_TARGET_TAGS = {TARGET_VERSION: b"\x20", TARGET_CREATE: b"\x28", TARGET_MOD: b"\x30", TARGET_LEASE: b"\x40"}


def compare(key: bytes, target: int, result: int, value: int | bytes, range_end: bytes = b"") -> bytes:
    """A Compare: ``target`` of ``key`` (or of every key in [key, range_end)) ``result`` ``value``."""
    out = b"\x08" + _varint(result) if result else b""
    if target:
        out += b"\x10" + _varint(target)
    out += _blob(b"\x1a", key)
    if target == TARGET_VALUE:
        assert isinstance(value, bytes)
        out += _blob(b"\x3a", value)  # a oneof member: written even when empty
    else:
        assert isinstance(value, int)
        out += _TARGET_TAGS[target] + _varint(value)
    if range_end:
        out += _blob(b"\x82\x04", range_end)  # field 64
    return out


def txn_request(compares: Iterable[bytes], success: Iterable[bytes], failure: Iterable[bytes] = ()) -> bytes:
    """TxnRequest from encoded Compares and RequestOps."""
    parts = [_blob(b"\x0a", c) for c in compares]
    parts += [_blob(b"\x12", op) for op in success]
    parts += [_blob(b"\x1a", op) for op in failure]
    return b"".join(parts)


def compact_request(revision: int, physical: bool = True) -> bytes:
    """CompactionRequest."""
    return _Writer().varint(1, revision).varint(2, int(physical)).done()


def lease_grant_request(ttl: int) -> bytes:
    """LeaseGrantRequest (the server picks the ID)."""
    return _Writer().varint(1, ttl).done()


def lease_id_request(lease_id: int) -> bytes:
    """LeaseRevokeRequest / LeaseKeepAliveRequest / LeaseTimeToLiveRequest: just the ID."""
    return _Writer().varint(1, lease_id).done()


def authenticate_request(name: str, password: str) -> bytes:
    """AuthenticateRequest."""
    return _Writer().blob(1, name.encode()).blob(2, password.encode()).done()


def watch_create_request(
    key: bytes, range_end: bytes, start_revision: int, *, prev_kv: bool = True, progress_notify: bool = True
) -> bytes:
    """WatchRequest wrapping a WatchCreateRequest."""
    create = (
        _Writer()
        .blob(1, key, force=True)
        .blob(2, range_end)
        .varint(3, start_revision)
        .varint(4, int(progress_notify))
        .varint(6, int(prev_kv))
        .done()
    )
    return _Writer().blob(1, create, force=True).done()


def watch_progress_request() -> bytes:
    """WatchRequest wrapping an (empty) WatchProgressRequest."""
    return _Writer().blob(3, b"", force=True).done()


# ---------------------------------------------------------------- decoding

_Fields = dict[int, list[int | bytes]]


def _parse(data: bytes) -> _Fields:
    fields: _Fields = {}
    i, n = 0, len(data)
    try:
        while i < n:
            key = 0
            shift = 0
            while True:
                b = data[i]
                i += 1
                key |= (b & 0x7F) << shift
                if b < 0x80:
                    break
                shift += 7
            number, kind = key >> 3, key & 7
            value: int | bytes
            if kind == 0:
                value = 0
                shift = 0
                while True:
                    b = data[i]
                    i += 1
                    value |= (b & 0x7F) << shift
                    if b < 0x80:
                        break
                    shift += 7
            elif kind == 2:
                length = 0
                shift = 0
                while True:
                    b = data[i]
                    i += 1
                    length |= (b & 0x7F) << shift
                    if b < 0x80:
                        break
                    shift += 7
                if i + length > n:
                    raise WireError("truncated field")
                value = data[i : i + length]
                i += length
            elif kind == 1:
                value = data[i : i + 8]
                i += 8
            elif kind == 5:
                value = data[i : i + 4]
                i += 4
            else:
                raise WireError(f"unsupported wire type {kind}")
            fields.setdefault(number, []).append(value)
    except IndexError:
        raise WireError("truncated message") from None
    return fields


def _int(fields: _Fields, number: int, *, signed: bool = False) -> int:
    values = fields.get(number)
    if not values:
        return 0
    value = values[-1]
    if not isinstance(value, int):
        raise WireError(f"field {number} is not a varint")
    if signed and value >= 1 << 63:
        value -= _U64
    return value


def _bytes(fields: _Fields, number: int) -> bytes:
    values = fields.get(number)
    if not values:
        return b""
    value = values[-1]
    if not isinstance(value, bytes):
        raise WireError(f"field {number} is not length-delimited")
    return value


def _messages(fields: _Fields, number: int) -> list[bytes]:
    out = []
    for value in fields.get(number, ()):
        if not isinstance(value, bytes):
            raise WireError(f"field {number} is not a message")
        out.append(value)
    return out


class Header(NamedTuple):
    """ResponseHeader (a named tuple: one per reply, and a frozen dataclass took longer to build than to parse)."""

    cluster_id: int
    member_id: int
    revision: int
    raft_term: int


def _header(data: bytes) -> Header:
    """ResponseHeader: read by one regular expression when written as etcd writes it, else by :func:`_header_general`.

    Every reply carries one (a commit reads only its revision): the general
    parser's field table was a tenth of a commit's client CPU outside gRPC. The
    four varints, each under its one-byte tag in field order, are cut out in C;
    cluster and member ids (ten bytes each) and the term repeat from reply to
    reply, so their values are remembered by their bytes. Anything else (a
    field left out, another order, a negative revision) goes to the general
    parser: both give the same answer.
    """
    match = _HEADER_FIELDS.fullmatch(data)
    if match is None:
        return _header_general(data)
    cluster, member, revision, term = match.groups()
    known = _VARINTS
    try:
        values = known[cluster], known[member], known[term]
    except KeyError:
        values = _read_varint(cluster), _read_varint(member), _read_varint(term)
        if len(known) > 1024:
            known.clear()  # another thread's lookup meanwhile misses and reads its own
        known[cluster], known[member], known[term] = values
    number = _read_varint(revision)
    if number >= _I64 or values[0] >= _U64 or values[1] >= _U64 or values[2] >= _U64:
        return _header_general(data)  # a negative revision, or a varint past 64 bits: the general rules
    return Header(values[0], values[1], number, values[2])


_VARINT = rb"([\x80-\xff]*[\x00-\x7f])"
_HEADER_FIELDS = re.compile(b"\x08" + _VARINT + b"\x10" + _VARINT + b"\x18" + _VARINT + b"\x20" + _VARINT)
_VARINTS: dict[bytes, int] = {}
"""Header varints by their bytes (cluster id, member id, term: the same in reply after reply), bounded."""


def _read_varint(data: bytes) -> int:
    value = shift = 0
    for b in data:
        value |= (b & 0x7F) << shift
        shift += 7
    return value


def _header_general(data: bytes) -> Header:
    f = _parse(data)
    return Header(_int(f, 1), _int(f, 2), _int(f, 3, signed=True), _int(f, 4))


class KV(NamedTuple):
    """mvccpb.KeyValue (a named tuple: a frozen dataclass took longer to build than to parse)."""

    key: bytes
    create_revision: int
    mod_revision: int
    version: int
    value: bytes
    lease: int


def _kv(data: bytes) -> KV:
    """mvccpb.KeyValue: read in one pass when it is written as etcd writes it, else by :func:`_kv_general`.

    A list (a cache's load) parses one per object: the general parser's field
    table and lookups were about half of etcd's scan time on the client. The
    fast pass only takes one-byte tags of the six fields, each of its own wire
    type; anything else (an unknown field, another wire type, a truncation) is
    left to the general parser, so both give the same answer (or WireError).
    """
    key = value = b""
    ints = [0, 0, 0, 0, 0, 0, 0]  # by field number: create_revision 2, mod_revision 3, version 4, lease 6
    i, n = 0, len(data)
    try:
        while i < n:
            tag = data[i]
            i += 1
            if tag not in _KV_TAGS:
                return _kv_general(data)
            b = data[i]
            i += 1
            number = b & 0x7F
            shift = 7
            while b >= 0x80:
                b = data[i]
                i += 1
                number |= (b & 0x7F) << shift
                shift += 7
            if tag & 7 == 0:  # a varint field
                ints[tag >> 3] = number
            elif i + number > n:  # key (1) or value (5), ``number`` bytes long
                return _kv_general(data)
            else:
                if tag == 0x0A:
                    key = data[i : i + number]
                else:
                    value = data[i : i + number]
                i += number
    except IndexError:
        return _kv_general(data)
    create, mod, version, lease = ints[2], ints[3], ints[4], ints[6]
    if create >= _I64 or mod >= _I64 or version >= _I64 or lease >= _I64:
        return _kv_general(data)  # a negative int64 (never stored by etcd): the general parser's sign rule
    return _new_tuple(KV, (key, create, mod, version, value, lease))  # KV's own __new__ is a Python call


_KV_TAGS = frozenset({1 << 3 | 2, 2 << 3, 3 << 3, 4 << 3, 5 << 3 | 2, 6 << 3})
"""The one-byte tags of KeyValue's fields as etcd writes them: key and value length-delimited, the rest varints."""
_I64 = 1 << 63
_new_tuple = tuple.__new__


def _kv_general(data: bytes) -> KV:
    f = _parse(data)
    return KV(_bytes(f, 1), _int(f, 2, signed=True), _int(f, 3, signed=True), _int(f, 4, signed=True),
              _bytes(f, 5), _int(f, 6, signed=True))  # fmt: skip


def parse_header_only(data: bytes) -> Header:
    """Any response whose first field is the header (Compaction, LeaseRevoke...)."""
    return _header(_bytes(_parse(data), 1))


def parse_range(data: bytes) -> tuple[Header, list[KV], bool, int]:
    """RangeResponse: header, kvs, more, count."""
    f = _parse(data)
    return _header(_bytes(f, 1)), [_kv(m) for m in _messages(f, 2)], bool(_int(f, 3)), _int(f, 4, signed=True)


def parse_txn(data: bytes) -> tuple[Header, bool, list[list[KV]]]:
    """TxnResponse: header, succeeded, and the kvs of each range response (empty for puts/deletes).

    Read in one pass when written as etcd writes it (header, succeeded, responses, each
    under its one-byte tag); anything else goes to the general parser (same answer).
    """
    header = b""
    succeeded = 0
    ops: list[bytes] = []
    i, n = 0, len(data)
    try:
        while i < n:
            tag = data[i]
            value, i = _varint_at(data, i + 1)
            if tag == 0x10:
                succeeded = value
            elif (tag != 0x0A and tag != 0x1A) or i + value > n:
                return _parse_txn_general(data)
            else:
                if tag == 0x0A:
                    header = data[i : i + value]
                else:
                    ops.append(data[i : i + value])
                i += value
    except IndexError:
        return _parse_txn_general(data)
    return _header(header), bool(succeeded), [_range_kvs(op) for op in ops]


def _varint_at(data: bytes, i: int) -> tuple[int, int]:
    """The varint at ``data[i:]`` and where it ends (IndexError if cut short)."""
    b = data[i]
    if b < 0x80:
        return b, i + 1
    value = shift = 0
    while b >= 0x80:
        value |= (b & 0x7F) << shift
        shift += 7
        i += 1
        b = data[i]
    return value | (b << shift), i + 1


def _range_kvs(op: bytes) -> list[KV]:
    """The kvs of one ResponseOp of a transaction (empty unless it is a range's)."""
    if op[:1] != b"\x0a":  # not a response_range (field 1): a put's or delete's answer is not read
        return []
    inner = _bytes(_parse(op), 1)
    return [_kv(m) for m in _messages(_parse(inner), 2)]


def range_counts(data: bytes) -> list[int]:
    """The ``count`` of each range of a TxnResponse, nested transactions' too: the keys etcd walked to answer it
    (tests and benchmarks)."""
    counts: list[int] = []
    for op in _messages(_parse(data), 3):
        if op[:1] == b"\x0a":
            counts.append(_int(_parse(_bytes(_parse(op), 1)), 4, signed=True))
        elif op[:1] == b"\x22":  # a nested transaction's response (field 4)
            counts += range_counts(_bytes(_parse(op), 4))
    return counts


def _parse_txn_general(data: bytes) -> tuple[Header, bool, list[list[KV]]]:
    f = _parse(data)
    return _header(_bytes(f, 1)), bool(_int(f, 2)), [_range_kvs(op) for op in _messages(f, 3)]


def parse_nested_txns(data: bytes) -> tuple[Header, list[tuple[bool, list[list[KV]]]]]:
    """A TxnResponse whose responses are nested transactions': header, and each one's succeeded and ranges."""
    f = _parse(data)
    nested: list[tuple[bool, list[list[KV]]]] = []
    for op in _messages(f, 3):
        of = _parse(op)
        if 4 not in of:
            raise WireError("a nested transaction's response is not a transaction response")
        _, succeeded, ranges = parse_txn(_bytes(of, 4))
        nested.append((succeeded, ranges))
    return _header(_bytes(f, 1)), nested


def parse_lease(data: bytes) -> tuple[Header, int, int, str]:
    """LeaseGrantResponse / LeaseKeepAliveResponse: header, ID, TTL, error."""
    f = _parse(data)
    return _header(_bytes(f, 1)), _int(f, 2, signed=True), _int(f, 3, signed=True), _bytes(f, 4).decode()


def parse_authenticate(data: bytes) -> str:
    """AuthenticateResponse: the token."""
    return _bytes(_parse(data), 2).decode()


def parse_status(data: bytes) -> tuple[Header, str, int]:
    """StatusResponse: header, server version, leader member id."""
    f = _parse(data)
    return _header(_bytes(f, 1)), _bytes(f, 2).decode(), _int(f, 4)


@dataclass(frozen=True, slots=True)
class Event:
    """mvccpb.Event: ``deleted`` for DELETE; ``prev`` if prev_kv was asked for and still known."""

    deleted: bool
    kv: KV
    prev: KV | None


@dataclass(frozen=True, slots=True)
class WatchResponse:
    """WatchResponse."""

    header: Header
    watch_id: int
    created: bool
    canceled: bool
    compact_revision: int
    cancel_reason: str
    fragment: bool
    events: Sequence[Event] = field(default_factory=list)


def parse_watch(data: bytes) -> WatchResponse:
    """WatchResponse with its events."""
    f = _parse(data)
    events = []
    for m in _messages(f, 11):
        ef = _parse(m)
        prev = _bytes(ef, 3) if 3 in ef else None
        events.append(Event(_int(ef, 1) == 1, _kv(_bytes(ef, 2)), None if prev is None else _kv(prev)))
    return WatchResponse(
        _header(_bytes(f, 1)),
        _int(f, 2, signed=True),
        bool(_int(f, 3)),
        bool(_int(f, 4)),
        _int(f, 5, signed=True),
        _bytes(f, 6).decode(errors="replace"),
        bool(_int(f, 7)),
        events,
    )
