#!/usr/bin/env python3
"""Measure etcd client candidates on one workload (the figures in docs/backends/etcd.md).

Workload, per candidate, on fresh keys: N sequential transactions "create key if
absent" (compare version == 0, then put), N single-key gets, then a watch from
before the first put that must deliver the N put events (with prev_kv).

Run it with a Python that has every candidate installed -- a scratch venv, never
the project's, because ``etcd3`` only imports with pure-Python protobuf::

    python -m venv /tmp/etcdeval
    /tmp/etcdeval/bin/pip install grpcio etcd3 aetcd etcd3gw -e .
    /tmp/etcdeval/bin/python benchmarks/etcd_clients.py --endpoint 127.0.0.1:2379 [-n 2000]

Each candidate runs in its own subprocess (``etcd3`` needs
PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python, which must not leak into the others).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

CANDIDATES = ["nbdb-grpc", "grpc-generated-stubs", "aetcd", "etcd3gw", "etcd3-pure-python-protobuf"]


def _result(puts: float, gets: float, watch: float, n: int) -> dict[str, Any]:
    return {"txn_puts_s": puts, "gets_s": gets, "watch_s": watch, "n": n}


def bench_nbdb(host: str, port: int, n: int, prefix: str) -> dict[str, Any]:
    from nbdb.backends.etcd import EtcdBackend
    from nbdb.families.kv import VersionIs

    backend = EtcdBackend.from_url(f"etcd://{host}:{port}/{prefix.strip('/')}")
    keys = [f"{prefix}k{i:06d}" for i in range(n)]
    start = backend.revision_now()
    t0 = time.perf_counter()
    for key in keys:
        assert backend.commit_keys([VersionIs(key, 0)], {key: b"v" * 100}, []) is not None
    t1 = time.perf_counter()
    for key in keys:
        assert backend.get_key(key) is not None
    t2 = time.perf_counter()
    stream = backend.watch_keys([prefix], start)
    got = 0
    while got < n:
        got += len(stream.poll(5))
    t3 = time.perf_counter()
    stream.close()
    backend.close()
    return _result(t1 - t0, t2 - t1, t3 - t2, n)


def bench_generated(host: str, port: int, n: int, prefix: str) -> dict[str, Any]:
    # protoc-generated stubs (here: the ones aetcd ships, protobuf 5+ gencode) on a sync grpc channel.
    import grpc
    from aetcd.rpc import rpc_pb2, rpc_pb2_grpc

    channel = grpc.insecure_channel(f"{host}:{port}")
    kv = rpc_pb2_grpc.KVStub(channel)
    keys = [f"{prefix}k{i:06d}".encode() for i in range(n)]
    start = kv.Range(rpc_pb2.RangeRequest(key=b"x", count_only=True)).header.revision
    t0 = time.perf_counter()
    for key in keys:
        compare = rpc_pb2.Compare(key=key, result=rpc_pb2.Compare.EQUAL, target=rpc_pb2.Compare.VERSION, version=0)
        put = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=b"v" * 100))
        assert kv.Txn(rpc_pb2.TxnRequest(compare=[compare], success=[put])).succeeded
    t1 = time.perf_counter()
    for key in keys:
        assert kv.Range(rpc_pb2.RangeRequest(key=key)).kvs
    t2 = time.perf_counter()
    done = threading.Event()

    def requests() -> Any:
        end = bytearray(prefix.encode())
        end[-1] += 1
        create = rpc_pb2.WatchCreateRequest(key=prefix.encode(), range_end=bytes(end), start_revision=start + 1,
                                            prev_kv=True)  # fmt: skip
        yield rpc_pb2.WatchRequest(create_request=create)
        done.wait()

    got = 0
    responses = rpc_pb2_grpc.WatchStub(channel).Watch(requests())
    for response in responses:
        got += len(response.events)
        if got >= n:
            break
    t3 = time.perf_counter()
    done.set()
    responses.cancel()
    channel.close()
    return _result(t1 - t0, t2 - t1, t3 - t2, n)


def bench_aetcd(host: str, port: int, n: int, prefix: str) -> dict[str, Any]:
    import aetcd

    async def run() -> dict[str, Any]:
        async with aetcd.Client(host, port) as client:
            keys = [f"{prefix}k{i:06d}".encode() for i in range(n)]
            start = (await client.put(f"{prefix}marker".encode() + b"!", b"")).header.revision
            t0 = time.perf_counter()
            for key in keys:
                compare = [client.transactions.version(key) == 0]
                ok, _ = await client.transaction(compare, [client.transactions.put(key, b"v" * 100)], [])
                assert ok
            t1 = time.perf_counter()
            for key in keys:
                assert await client.get(key) is not None
            t2 = time.perf_counter()
            got = 0
            watch = await client.watch_prefix(prefix.encode(), start_revision=start + 1, prev_kv=True)
            async for _ in watch:
                got += 1
                if got >= n:
                    break
            t3 = time.perf_counter()
            await watch.cancel()
            return _result(t1 - t0, t2 - t1, t3 - t2, n)

    return asyncio.run(run())


def bench_etcd3gw(host: str, port: int, n: int, prefix: str) -> dict[str, Any]:
    import etcd3gw

    client = etcd3gw.client(host=host, port=port)
    keys = [f"{prefix}k{i:06d}".encode() for i in range(n)]

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    start = int(client.status()["header"]["revision"])
    t0 = time.perf_counter()
    for key in keys:
        txn = {
            "compare": [{"key": b64(key), "result": "EQUAL", "target": "VERSION", "version": 0}],
            "success": [{"request_put": {"key": b64(key), "value": b64(b"v" * 100)}}],
            "failure": [],
        }
        assert client.transaction(txn).get("succeeded")
    t1 = time.perf_counter()
    for key in keys:
        assert client.get(key)
    t2 = time.perf_counter()
    events, cancel = client.watch_prefix(prefix, start_revision=start + 1, prev_kv=True)
    got = 0
    for _ in events:
        got += 1
        if got >= n:
            break
    t3 = time.perf_counter()
    cancel()
    return _result(t1 - t0, t2 - t1, t3 - t2, n)


def bench_etcd3(host: str, port: int, n: int, prefix: str) -> dict[str, Any]:
    import etcd3  # only imports with pure-Python protobuf on protobuf >= 4

    client = etcd3.client(host=host, port=port)
    keys = [f"{prefix}k{i:06d}" for i in range(n)]
    start = client.get_response(keys[0]).header.revision
    t0 = time.perf_counter()
    for key in keys:
        compare = [client.transactions.version(key) == 0]
        ok, _ = client.transaction(compare=compare, success=[client.transactions.put(key, b"v" * 100)], failure=[])
        assert ok
    t1 = time.perf_counter()
    for key in keys:
        assert client.get(key)[0] is not None
    t2 = time.perf_counter()
    events, cancel = client.watch_prefix(prefix, start_revision=start + 1, prev_kv=True)
    got = 0
    for _ in events:
        got += 1
        if got >= n:
            break
    t3 = time.perf_counter()
    cancel()
    client.close()
    return _result(t1 - t0, t2 - t1, t3 - t2, n)


RUNNERS = {
    "nbdb-grpc": bench_nbdb,
    "grpc-generated-stubs": bench_generated,
    "aetcd": bench_aetcd,
    "etcd3gw": bench_etcd3gw,
    "etcd3-pure-python-protobuf": bench_etcd3,
}


def run_one(name: str, endpoint: str, n: int) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", None)
    if name == "etcd3-pure-python-protobuf":
        env["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"
    argv = [sys.executable, __file__, "--endpoint", endpoint, "-n", str(n), "--candidate", name]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint", default="127.0.0.1:2379")
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--candidate", choices=CANDIDATES)
    args = parser.parse_args()
    host, _, port = args.endpoint.rpartition(":")
    if args.candidate:
        prefix = f"bench/{uuid.uuid4().hex[:8]}/"
        print(json.dumps(RUNNERS[args.candidate](host, int(port), args.n, prefix)))
        return
    results = {name: run_one(name, args.endpoint, args.n) for name in CANDIDATES}
    base = results["nbdb-grpc"]
    print(f"n = {args.n}; seconds (ratio to nbdb-grpc)")
    print("| candidate | txn puts | gets | watch events |")
    print("|---|---|---|---|")
    for name, r in results.items():
        if "error" in r:
            print(f"| {name} | failed: {r['error']} | | |")
            continue
        cells = [f"{r[k]:.2f} s ({r[k] / base[k]:.1f}x)" for k in ("txn_puts_s", "gets_s", "watch_s")]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
