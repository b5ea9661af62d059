"""Hazelcast baseline with hazelcast-python-client: one IMap per table, optimistic replace for CAS.

This is how the Hazelcast documentation has an application keep versioned
objects: the value carries its version, a write is ``replace(key, old, new)``
against the copy last read (one round trip; a fresh ``get`` only when this
client holds no copy of that version), a create is ``putIfAbsent``, an atomic
multi-object create is one TWO_PHASE transaction, a table is listed with one
``values()`` and changes are fanned out on an ITopic, as Redis's baseline does with PUBLISH.
"""

from __future__ import annotations

import queue
import struct
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from nbdb.bench.raw.base import Follower, RawClient, RawConflict

__all__ = ["Client"]

_VERSION = struct.Struct(">q")


class Client(RawClient):
    """One HazelcastClient; values are an 8-byte version followed by the object's bytes."""

    def __init__(self, url: str, namespace: str) -> None:
        super().__init__(url, namespace)
        from hazelcast.client import HazelcastClient

        parts = urlsplit(url)
        self._client: Any = HazelcastClient(
            cluster_name=parts.path.strip("/") or "dev",
            cluster_members=parts.netloc.split(","),
            statistics_enabled=False,
        )
        self._maps: dict[str, Any] = {}
        self._copies: dict[str, bytearray] = {}

    def _locate(self, key: str) -> tuple[Any, str]:
        table, _, field = key.rpartition("/")
        found = self._maps.get(table)
        if found is None:
            found = self._maps[table] = self._client.get_map(table).blocking()
        return found, field

    def create(self, key: str, value: bytes) -> int:
        imap, field = self._locate(key)
        stored = bytearray(_VERSION.pack(1) + value)
        if imap.put_if_absent(field, stored) is not None:
            raise RawConflict(key)
        self._copies[key] = stored
        return 1

    def get(self, key: str) -> tuple[bytes, int] | None:
        imap, field = self._locate(key)
        stored = imap.get(field)
        if stored is None:
            return None
        self._copies[key] = stored
        return bytes(stored[_VERSION.size :]), _VERSION.unpack_from(stored)[0]

    def _copy_at(self, key: str, version: int) -> bytearray:
        copy = self._copies.get(key)
        if copy is None or _VERSION.unpack_from(copy)[0] != version:
            imap, field = self._locate(key)
            copy = imap.get(field)
            if copy is None or _VERSION.unpack_from(copy)[0] != version:
                raise RawConflict(key)
        return copy

    def update(self, key: str, value: bytes, expect_version: int) -> int:
        imap, field = self._locate(key)
        stored = bytearray(_VERSION.pack(expect_version + 1) + value)
        if not imap.replace_if_same(field, self._copy_at(key, expect_version), stored):
            raise RawConflict(key)
        self._copies[key] = stored
        return expect_version + 1

    def delete(self, key: str, expect_version: int) -> None:
        imap, field = self._locate(key)
        if not imap.remove_if_same(field, self._copy_at(key, expect_version)):
            raise RawConflict(key)
        self._copies.pop(key, None)

    def create_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        from hazelcast.transaction import TWO_PHASE

        tx = self._client.new_transaction(type=TWO_PHASE)
        tx.begin()
        try:
            for key, value in items:
                table, _, field = key.rpartition("/")
                if tx.get_map(table).put_if_absent(field, bytearray(_VERSION.pack(1) + value)) is not None:
                    raise RawConflict(key)
        except BaseException:
            tx.rollback()
            raise
        tx.commit()

    def scan(self, prefix: str) -> list[bytes]:
        imap, _ = self._locate(prefix + "x")
        return [bytes(v[_VERSION.size :]) for v in imap.values()]

    def publish(self, key: str, value: bytes, expect_version: int) -> int:
        version = self.update(key, value, expect_version)
        self._topic().publish(bytearray(key.encode() + b"\n" + value))
        return version

    def follower(self) -> Follower:
        return _Follower(self._topic())

    def _topic(self) -> Any:
        return self._client.get_topic(f"{self.namespace}/changes").blocking()

    def cleanup(self) -> None:
        for imap in self._maps.values():
            imap.destroy()

    def close(self) -> None:
        self._client.shutdown()


class _Follower(Follower):
    """A topic listener (messages published while it is away are lost, as with Redis PUBLISH)."""

    def __init__(self, topic: Any) -> None:
        self._topic = topic
        self._events: queue.Queue[tuple[str, bytes | None]] = queue.Queue()
        self._registration = topic.add_listener(self._on_message)

    def _on_message(self, message: Any) -> None:
        field, _, value = bytes(message.message).partition(b"\n")
        self._events.put((field.decode(), value))

    def poll(self, timeout: float) -> list[tuple[str, bytes | None]]:
        out: list[tuple[str, bytes | None]] = []
        try:
            out.append(self._events.get(timeout=timeout))
            while True:
                out.append(self._events.get_nowait())
        except queue.Empty:
            return out

    def close(self) -> None:
        self._topic.remove_listener(self._registration)
