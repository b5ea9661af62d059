"""etcd baseline: nbdb's own etcd v3 gRPC client (``grpcio`` and a small codec), used directly.

It is the etcd client nbdb chose (docs/backends/etcd.md), so the baseline is
that client doing the natural etcd thing, without the key-value family on
top: one key per object (``<namespace>/<table>/<id>``), the etcd key version
as the object version, compare-and-swap as one ``Txn`` comparing that
version, a table read with one ``Range`` over its prefix, and changes
followed with one ``Watch`` on the namespace. No index keys, no references,
no topics, no revisions kept: nbdb's bookkeeping is what the ratio measures.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator, Sequence

from nbdb.backends.etcd import wire
from nbdb.backends.etcd.backend import parse_url
from nbdb.backends.etcd.client import EtcdClient, WatchSession, chunked
from nbdb.bench.raw.base import Follower, RawClient, RawConflict

__all__ = ["Client"]

# etcd's default --max-txn-ops: a bigger create_many is split (and is then atomic per slice only).
_MAX_TXN_OPS = 128
_WATCH_READY_TIMEOUT = 10.0


def _absent(key: bytes) -> bytes:
    return wire.compare(key, wire.TARGET_VERSION, wire.CMP_EQUAL, 0)


def _at(key: bytes, version: int) -> bytes:
    return wire.compare(key, wire.TARGET_VERSION, wire.CMP_EQUAL, version)


class Client(RawClient):
    """One :class:`EtcdClient` (one gRPC channel per endpoint), keys straight under the namespace."""

    def __init__(self, url: str, namespace: str) -> None:
        super().__init__(url, namespace)
        settings, _prefix, _progress = parse_url(url, {})
        self._client = EtcdClient(settings)
        self._client.ensure_token()
        self._client.status()  # fail here, not in the middle of a workload, if the cluster is unreachable

    def _cas(self, compares: list[bytes], success: list[bytes], key: str) -> None:
        _, succeeded, _, _ = self._client.txn(wire.txn_request(compares, success))
        if not succeeded:
            raise RawConflict(key)

    def create(self, key: str, value: bytes) -> int:
        k = key.encode()
        self._cas([_absent(k)], [wire.request_put(k, value)], key)
        return 1

    def get(self, key: str) -> tuple[bytes, int] | None:
        _, kvs, _, _ = self._client.range(key.encode())
        return (kvs[0].value, kvs[0].version) if kvs else None

    def update(self, key: str, value: bytes, expect_version: int) -> int:
        k = key.encode()
        self._cas([_at(k, expect_version)], [wire.request_put(k, value)], key)
        return expect_version + 1

    def delete(self, key: str, expect_version: int) -> None:
        k = key.encode()
        self._cas([_at(k, expect_version)], [wire.request_delete(k)], key)

    def create_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        for chunk in chunked(items, _MAX_TXN_OPS):
            keys = [(key.encode(), value) for key, value in chunk]
            self._cas([_absent(k) for k, _ in keys], [wire.request_put(k, v) for k, v in keys], chunk[0][0])

    def scan(self, prefix: str) -> list[bytes]:
        p = prefix.encode()
        _, kvs, _, _ = self._client.range(p, wire.prefix_end(p))
        return [kv.value for kv in kvs]

    def publish(self, key: str, value: bytes, expect_version: int) -> int:
        return self.update(key, value, expect_version)  # every etcd write is seen by the watchers

    def follower(self) -> Follower:
        return _Follower(self._client, f"{self.namespace}/".encode())

    def cleanup(self) -> None:
        p = f"{self.namespace}/".encode()
        self._client.txn(wire.txn_request([], [wire.request_delete(p, wire.prefix_end(p))]))

    def close(self) -> None:
        self._client.close()


class _RawWatch(WatchSession):
    """The client's watch stream, created without ``prev_kv`` and progress notifications.

    A replica that keeps the latest value needs neither (nbdb asks for both to
    report old values and to move its resume point); asking would make etcd
    do work the baseline does not need.
    """

    def __init__(self, client: EtcdClient, key: bytes, range_end: bytes) -> None:
        self._raw_create = wire.watch_create_request(key, range_end, 0, prev_kv=False, progress_notify=False)
        super().__init__(client, client.current_endpoint(), key, range_end, 0)

    def _outgoing(self) -> Iterator[bytes]:
        requests = super()._outgoing()
        next(requests, None)  # the session's own create request, replaced by the raw one
        yield self._raw_create
        yield from requests


class _Follower(Follower):
    def __init__(self, client: EtcdClient, prefix: bytes) -> None:
        self._session = _RawWatch(client, prefix, wire.prefix_end(prefix))
        # Wait for etcd to confirm the watcher, so no write made after this returns is missed.
        deadline = time.monotonic() + _WATCH_READY_TIMEOUT
        while True:
            item = self._session.responses.get(timeout=max(0.0, deadline - time.monotonic()))
            if isinstance(item, wire.WatchResponse) and item.created:
                break
            self._raise(item)

    def _raise(self, item: wire.WatchResponse | BaseException | None) -> None:
        self._session.close()
        if isinstance(item, Exception):
            raise item
        raise ConnectionError(f"the etcd watch ended: {item}")

    def _changes(self, item: wire.WatchResponse | BaseException | None) -> list[tuple[str, bytes | None]]:
        if not isinstance(item, wire.WatchResponse) or item.canceled:
            self._raise(item)
        assert isinstance(item, wire.WatchResponse)
        return [(e.kv.key.decode(), None if e.deleted else e.kv.value) for e in item.events]

    def poll(self, timeout: float) -> list[tuple[str, bytes | None]]:
        try:
            out = self._changes(self._session.responses.get(timeout=timeout))
        except queue.Empty:
            return []
        while True:
            try:
                out += self._changes(self._session.responses.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        self._session.close()
