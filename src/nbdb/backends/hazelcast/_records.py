"""The bytes nbdb keeps in the Hazelcast maps: stored keys, the head, change-log entries."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from nbdb import errors
from nbdb.families.kv import KeyChange, KeyValue
from nbdb.families.pubsub import GENESIS, LogEntry, decode_changes, encode_changes

__all__ = [
    "HEAD",
    "KV_HEADER",
    "TOKEN_BYTES",
    "TRIM",
    "decode_entry",
    "decode_head",
    "decode_kv",
    "encode_entry",
    "encode_head",
    "encode_kv",
]

HEAD, TRIM = "head", "trim"
"""Keys of the ``meta`` map: the latest revision and its token; the newest trimmed revision."""
KV_HEADER = struct.Struct(">qq")
"""A stored key: version, revision of the last write, then the value."""
_REVISION = struct.Struct(">q")
TOKEN_BYTES = 24


def _bytes(value: Any, key: object, minimum: int) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) < minimum:
        raise errors.CorruptRecordError(
            f"key {key!r} holds {type(value).__name__} data nbdb did not write", key=str(key)
        )
    return bytes(value)


def decode_kv(key: str, raw: Any) -> KeyValue | None:
    """A stored key as the family sees it; CorruptRecordError for data nbdb did not write."""
    if raw is None:
        return None
    data = _bytes(raw, key, KV_HEADER.size)
    version, mod_revision = KV_HEADER.unpack_from(data)
    return KeyValue(key, data[KV_HEADER.size :], version, mod_revision)


def decode_head(raw: Any) -> tuple[int, str]:
    """The latest revision and its token ((0, GENESIS) before the first commit)."""
    if raw is None:
        return 0, GENESIS
    data = _bytes(raw, HEAD, _REVISION.size)
    return _REVISION.unpack_from(data)[0], data[_REVISION.size :].decode("ascii", "replace")


def decode_entry(revision: int, raw: Any) -> LogEntry:
    """A change-log entry; HistoryGoneError if it is damaged (it cannot be delivered)."""
    try:
        data = _bytes(raw, revision, TOKEN_BYTES)
    except errors.CorruptRecordError as exc:
        raise errors.HistoryGoneError(f"the change log entry of revision {revision} is damaged ({exc})") from None
    return LogEntry(
        revision, data[:TOKEN_BYTES].decode("ascii", "replace"), decode_changes(data[TOKEN_BYTES:], revision)
    )


def encode_kv(version: int, revision: int, value: bytes) -> bytearray:
    """A stored key (byte arrays reach the member as they are; ``bytes`` would be pickled)."""
    return bytearray(KV_HEADER.pack(version, revision) + value)


def encode_head(revision: int, token: str) -> bytearray:
    """The ``head`` record: the latest revision and its commit's token."""
    return bytearray(_REVISION.pack(revision) + token.encode())


def encode_entry(token: str, changes: Sequence[KeyChange]) -> bytearray:
    """The change-log entry of one commit."""
    return bytearray(token.encode() + encode_changes(changes))
