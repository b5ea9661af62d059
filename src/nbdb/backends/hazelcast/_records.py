"""The bytes nbdb keeps in the Hazelcast maps: stored keys, the head, change-log entries."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from nbdb import errors
from nbdb.families.kv import KeyChange, KeyValue
from nbdb.families.pubsub import GENESIS, LogEntry, decode_changes, encode_changes

__all__ = [
    "FORMAT",
    "FORMAT_KEY",
    "HEAD",
    "KV_HEADER",
    "TOKEN_BYTES",
    "TRIM",
    "Redo",
    "decode_entry",
    "decode_head",
    "decode_kv",
    "decode_redo",
    "encode_entry",
    "encode_head",
    "encode_kv",
    "entry_token",
    "listed_rows",
]

HEAD, TRIM, FORMAT_KEY = "head", "trim", "format"
"""Keys of the ``meta`` map: the latest revision and its token; the newest trimmed revision; the stored format."""
FORMAT = "2"
"""The stored format: 2 since change-log entries carry the bytes their commit writes (the log decides a commit)."""
OBJECTS = "o/"
"""The prefix of object keys (the family's layout, without a prefix of its own here)."""
KV_HEADER = struct.Struct(">qq")
"""A stored key: version, revision of the last write, then the value."""
_REVISION = struct.Struct(">q")
_LEN = struct.Struct(">i")
TOKEN_BYTES = 24


class Redo(NamedTuple):
    """One stored key a commit changes: the bytes it held, the bytes it gets (None: absent), a TTL (0: none).

    A commit's change-log entry carries these, so that whoever finds the entry
    of a commit not yet applied can apply it (compare-and-set from ``old`` to
    ``new``: applying twice changes nothing).
    """

    key: str
    old: bytes | None
    new: bytes | None
    ttl: float


def _bytes(value: Any, key: object, minimum: int) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) < minimum:
        raise errors.CorruptRecordError(
            f"key {key!r} holds {type(value).__name__} data nbdb did not write", key=str(key)
        )
    return bytes(value)


def decode_kv(key: str, raw: Any, listed: bool = False) -> KeyValue | None:
    """A stored key as the family sees it; CorruptRecordError for data nbdb did not write.

    ``listed``: read in a range. An object's key there holding another writer's data is kept, at a
    version that is no number, which the decode reports as that one record's corruption: raised
    here, it failed every list of the table (``skip_corrupt`` or not) and every load of a cache.
    """
    if raw is None:
        return None
    if listed and key.startswith(OBJECTS) and not (isinstance(raw, bytes | bytearray) and len(raw) >= KV_HEADER.size):
        foreign: Any = f"{type(raw).__name__} data nbdb did not write"
        return KeyValue(key, b"", foreign, 0)
    data = _bytes(raw, key, KV_HEADER.size)
    version, mod_revision = KV_HEADER.unpack_from(data)
    return KeyValue(key, data[KV_HEADER.size :], version, mod_revision)


def listed_rows(items: Iterable[tuple[str, Any]], prefixes: Sequence[str]) -> list[Sequence[Any]]:
    """``(key, value, version, mod_revision)`` of what ``decode_kv(key, raw, True)`` makes of each of ``items``
    under ``prefixes``.

    A scan's rows (see ``KeyValueBackend.range_rows``), in the order of
    ``items``: the usual stored value (a byte array nbdb wrote) read inline, without
    a ``KeyValue`` and two calls per key; anything else through
    :func:`decode_kv`, whose answer (a key left out, a foreign record kept at
    a version that is no number, an error) is the rule.
    """
    starts = tuple(prefixes)
    size = KV_HEADER.size
    unpack = KV_HEADER.unpack_from
    rows: list[Sequence[Any]] = []
    append = rows.append
    for key, raw in items:
        if not key.startswith(starts):
            continue
        kind = raw.__class__
        if (kind is bytearray or kind is bytes) and len(raw) >= size:  # the client reads a byte array as a bytearray
            append((key, bytes(raw)[size:], *unpack(raw)))  # version, and the revision that wrote it
        else:
            kv = decode_kv(key, raw, True)
            if kv is not None:
                append(kv)
    return rows


def decode_head(raw: Any) -> tuple[int, str]:
    """The latest revision and its token ((0, GENESIS) before the first commit)."""
    if raw is None:
        return 0, GENESIS
    data = _bytes(raw, HEAD, _REVISION.size)
    return _REVISION.unpack_from(data)[0], data[_REVISION.size :].decode("ascii", "replace")


def _entry_parts(revision: int, raw: Any) -> tuple[str, bytes, bytes]:
    """The token, the object changes and the redo records of a change-log entry."""
    try:
        data = _bytes(raw, revision, TOKEN_BYTES + _LEN.size)
    except errors.CorruptRecordError as exc:
        raise errors.HistoryGoneError(f"the change log entry of revision {revision} is damaged ({exc})") from None
    (length,) = _LEN.unpack_from(data, TOKEN_BYTES)
    start = TOKEN_BYTES + _LEN.size
    if length < 0 or start + length > len(data):
        raise errors.HistoryGoneError(f"the change log entry of revision {revision} is damaged (bad length)")
    return data[:TOKEN_BYTES].decode("ascii", "replace"), data[start : start + length], data[start + length :]


def entry_token(revision: int, raw: Any) -> str | None:
    """The token (the writing call's anchor) of a change-log entry; None if it is damaged (not nbdb's, which
    writes an entry whole)."""
    try:
        return _entry_parts(revision, raw)[0]
    except errors.HistoryGoneError:
        return None


def decode_entry(revision: int, raw: Any) -> LogEntry:
    """A change-log entry; HistoryGoneError if it is damaged (it cannot be delivered)."""
    token, changes, _ = _entry_parts(revision, raw)
    return LogEntry(revision, token, decode_changes(changes, revision))


def decode_redo(revision: int, raw: Any) -> tuple[str, list[Redo]]:
    """The token of a change-log entry and the stored keys its commit changes."""
    token, _, blob = _entry_parts(revision, raw)
    out: list[Redo] = []
    # Four fields per key, in the object changes' framing: key, old, new, TTL in milliseconds.
    for change in decode_changes(blob, revision):
        out.append(Redo(change.key, change.value, change.prev_value, change.version / 1000))
    return token, out


def encode_kv(version: int, revision: int, value: bytes) -> bytearray:
    """A stored key (byte arrays reach the member as they are; ``bytes`` would be pickled)."""
    return bytearray(KV_HEADER.pack(version, revision) + value)


def encode_head(revision: int, token: str) -> bytearray:
    """The ``head`` record: the latest revision and its commit's token."""
    return bytearray(_REVISION.pack(revision) + token.encode())


def encode_entry(token: str, changes: Sequence[KeyChange], redo: Sequence[Redo]) -> bytearray:
    """The change-log entry of one commit: its token, its object changes, then every stored key it changes."""
    blob = encode_changes(changes)
    # The redo records reuse the changes' framing: value = old bytes, prev_value = new bytes, version = TTL in ms.
    frames = encode_changes([KeyChange(r.key, r.old, round(r.ttl * 1000), r.new, 0, 0) for r in redo])
    return bytearray(token.encode() + _LEN.pack(len(blob)) + blob + frames)
