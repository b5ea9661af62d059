"""etcd baseline: nbdb's own etcd v3 gRPC client (``grpcio`` and a small codec), used directly.

It is the etcd client nbdb chose (docs/backends/etcd.md), so the baseline is
that client doing the natural etcd thing, without the key-value family on
top: one key per object (``<namespace>/<table>/<id>``), the etcd key version
as the object version, compare-and-swap as one ``Txn`` comparing that
version, a table read with one ``Range`` over its prefix, and changes
followed with one ``Watch`` on the namespace. No index keys, no references,
no topics, no revisions kept: nbdb's bookkeeping is what the ratio measures.

:class:`ContractClient` (``raw+contract`` in the report) is the second
baseline: the server work nbdb's contract needs on etcd, written by hand with
the same client, one ``Txn`` per commit. A create also checks that its index
key and its unique name's key are absent and that the port's switch exists, and
writes the index key, the reverse reference and the unique claim; every commit
writes a commit token on a lease (its exactly-once check) and reads it back
when its compares fail. A delete checks that nothing references the object
and deletes those keys; an update compares the version and writes the object
and the token. A transaction whose absence checks do not fit etcd's
``--max-txn-ops`` reads them at one revision first and merges them into key
ranges, and nests its writes, as the rules in ``nbdb.backends.etcd.txnshape``
say (no client can send 200 compares in one default transaction).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import queue
import secrets
import time
from collections.abc import Iterator, Sequence

from nbdb.backends.etcd import txnshape, wire
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

    def _raise(self, item: wire.WatchResponse | BaseException | object) -> None:
        self._session.close()
        if isinstance(item, Exception):
            raise item
        raise ConnectionError(f"the etcd watch ended: {item}")

    def _changes(self, item: wire.WatchResponse | BaseException | object) -> list[tuple[str, bytes | None]]:
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


_REFERENCES = {"switch": "LogicalSwitch"}
"""The fields of a raw document that reference another object, and the table it is in."""
_TOKEN_TTL = 1200


def _exists(key: bytes) -> bytes:
    return wire.compare(key, wire.TARGET_VERSION, wire.CMP_GREATER, 0)


def _nested(items: Sequence[bytes | txnshape.Nested[bytes]]) -> list[bytes]:
    """Success ops, each nested transaction (no compares: it always applies) encoded as one op."""
    return [i if isinstance(i, bytes) else wire.request_txn(wire.txn_request([], _nested(i.items))) for i in items]


class ContractClient(Client):
    """The server work of nbdb's contract on etcd by hand: index, references, unique names, tokens (module doc)."""

    def __init__(self, url: str, namespace: str) -> None:
        super().__init__(url, namespace)
        self._lease, _ = self._client.lease_grant(_TOKEN_TTL)
        self._tokens = (f"{secrets.token_hex(8)}{n:x}" for n in itertools.count())
        self._extra: dict[str, list[bytes]] = {}
        """Per object key, the other keys its create wrote (a caller keeps what it wrote of its objects)."""
        self._base = f"{self.namespace}/#"

    def _keys(self, key: str, value: bytes) -> tuple[list[bytes], list[bytes], list[bytes]]:
        """A create's keys that must be absent, its other compares, and its writes beside the object's own put."""
        table, _, id = key.rpartition("/")
        table = table.rpartition("/")[2]
        doc = json.loads(value)
        index = f"{self._base}i/{table}/{id}".encode()
        absent, exists, writes, refs = [index], [], {}, []
        for field, target in _REFERENCES.items():
            if doc.get(field):
                refs.append([target, doc[field]])
                exists.append(_exists(self.key(target, doc[field]).encode()))
                writes[f"{self._base}r/{target}/{doc[field]}/{table}/{id}".encode()] = b""
        name = doc.get("name")
        if name:
            unique = f"{self._base}u/{table}/name/{hashlib.sha256(name.encode()).hexdigest()[:40]}".encode()
            absent.append(unique)
            writes[unique] = id.encode()
        writes[index] = json.dumps({"t": doc.get("topic"), "r": refs, "u": [["name", name]]}).encode()
        self._extra[key] = list(writes)
        return absent, exists, [wire.request_put(k, v) for k, v in writes.items()]

    def _run(self, compares: list[bytes], writes: list[bytes], key: str) -> None:
        token = f"{self._base}t/{next(self._tokens)}".encode()
        compares = [*compares, _absent(token)]
        writes = [*writes, wire.request_put(token, b"1", self._lease)]
        shape = txnshape.shape_writes(len(compares), len(writes), 1, _MAX_TXN_OPS)
        request = wire.txn_request(compares, _nested(txnshape.nest(writes, shape)), [wire.request_range(token)])
        _, succeeded, _, _ = self._client.txn(request)
        if not succeeded:
            raise RawConflict(key)

    def create(self, key: str, value: bytes) -> int:
        absent, exists, puts = self._keys(key, value)
        self._run([*(_absent(k) for k in absent), *exists], [wire.request_put(key.encode(), value), *puts], key)
        return 1

    def update(self, key: str, value: bytes, expect_version: int) -> int:
        # The index, references and name are unchanged by the workloads' updates: nbdb writes only the object.
        self._run([_at(key.encode(), expect_version)], [wire.request_put(key.encode(), value)], key)
        return expect_version + 1

    def delete(self, key: str, expect_version: int) -> None:
        table, _, id = key.rpartition("/")
        referrers = f"{self._base}r/{table.rpartition('/')[2]}/{id}/".encode()
        unreferenced = wire.compare(referrers, wire.TARGET_MOD, wire.CMP_LESS, 1, range_end=wire.prefix_end(referrers))
        deletes = [wire.request_delete(k) for k in [key.encode(), *self._extra.pop(key, [])]]
        self._run([_at(key.encode(), expect_version), unreferenced], deletes, key)

    def create_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        absent: list[bytes] = []
        exists: dict[bytes, None] = {}
        writes: list[bytes] = []
        for key, value in items:
            a, e, puts = self._keys(key, value)
            absent += a
            exists.update(dict.fromkeys(e))
            writes += [wire.request_put(key.encode(), value), *puts]
        compares = [*(_absent(k) for k in absent), *exists]
        room = len(compares) + 1  # the most compares (the token's too) that fit beside the nested writes
        while room > 1 and txnshape.shape_writes(room, len(writes) + 1, 1, _MAX_TXN_OPS).count > _MAX_TXN_OPS:
            room -= 1
        if len(compares) + 1 > room:
            compares = [*self._merged(absent, room - 1 - len(exists), items[0][0]), *exists]
        self._run(compares, writes, items[0][0])

    def _merged(self, keys: list[bytes], runs: int, first: str) -> list[bytes]:
        """The absence checks as range compares: the keys read absent at one revision R, no key created after R."""
        merged = txnshape.merge_runs([k.decode() for k in keys], runs)
        read = [k.encode() for run in merged if len(run) > 1 for k in run]
        revision = 0
        for chunk in chunked(read, _MAX_TXN_OPS):
            reads = [wire.request_range(k, revision=revision, keys_only=True) for k in chunk]
            header, _, ranges, _ = self._client.txn(wire.txn_request([], reads), write=False)
            revision = revision or header.revision
            if any(ranges):
                raise RawConflict(first)
        out = []
        for run in merged:
            start = run[0].encode()
            if len(run) == 1:
                out.append(_absent(start))
            else:
                end = run[-1].encode() + b"\0"
                out.append(wire.compare(start, wire.TARGET_CREATE, wire.CMP_LESS, revision + 1, range_end=end))
        return out

    def follower(self) -> Follower:
        return _ObjectFollower(self._client, f"{self.namespace}/".encode(), self._base)

    def close(self) -> None:
        try:
            self._client.lease_revoke(self._lease)
        finally:
            super().close()


class _ObjectFollower(_Follower):
    """The namespace's watch, passing on only the objects' keys (not the contract's own)."""

    def __init__(self, client: EtcdClient, prefix: bytes, skip: str) -> None:
        super().__init__(client, prefix)
        self._skip = skip

    def poll(self, timeout: float) -> list[tuple[str, bytes | None]]:
        return [change for change in super().poll(timeout) if not change[0].startswith(self._skip)]


BASELINES: dict[str, type[RawClient]] = {"contract": ContractClient}
"""Baselines beside :class:`Client`, by name: ``raw+contract`` in the report."""
