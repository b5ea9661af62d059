"""Cost per object of ``Database.list``, a cache's cold load, ``cache.list`` and ``cache.find`` at several sizes.

``nbdb bench`` measures these at one size per run (its full run sweeps the cache's sizes, but
takes hours at 1M over a server); this asks whether the cost per object stays flat as the
table grows::

    python benchmarks/scale_sweep.py --backends redis,etcd,memory --sizes 10000,50000,100000

Each backend (redis, etcd and hazelcast spawned on loopback; memory in the process) is filled
with a switch and N ports per size, in a namespace of its own, and the fill's rate is printed
(wall clock, one writer, ports in transactions of 20 as ``nbdb bench`` fills them). etcd is
spawned with a backend quota of ``--etcd-quota`` (8 GiB by default: a million ports, four keys
each, pass etcd's default 2 GiB) and Hazelcast with a member heap of ``--hazelcast-heap``.
Per size, in one process: the client
CPU (``time.process_time``) per object of ``db.list`` and of a cache's cold load, then per
call of ``cache.list`` (per object) and ``cache.find(name=...)`` (per call, up to 20,000 names
spread over the table); the best of three each; and the memory a synced cache holds per object
(``tracemalloc``, after a collection, in a pass of its own). The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import nbdb
from nbdb.bench.workloads.common import populate
from nbdb.models.ovn import LogicalSwitchPort


def _best(fn: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def _fill(db: nbdb.Database, n: int) -> str:
    start = time.perf_counter()
    populate(db, n)
    elapsed = time.perf_counter() - start
    return f"fill {n / elapsed:8,.0f} ports/s ({elapsed:6.1f} s)"


def _measure(db: nbdb.Database, n: int) -> str:
    listed = _best(lambda: db.list(LogicalSwitchPort))

    def load() -> None:
        with db.cache(LogicalSwitchPort) as cache:
            assert cache.wait_synced(600) and len(cache) == n

    loaded = _best(load)
    gc.collect()
    tracemalloc.start()
    with db.cache(LogicalSwitchPort) as cache:  # a pass of its own: tracing slows the load
        assert cache.wait_synced(600)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] / n
    tracemalloc.stop()
    with db.cache(LogicalSwitchPort) as cache:
        assert cache.wait_synced(600)
        ports = cache.list(LogicalSwitchPort)
        names = [p.name for p in ports[:: max(1, n // 20_000)]][:20_000]
        copied = _best(lambda: cache.list(LogicalSwitchPort))

        def find() -> None:
            for name in names:
                assert cache.find(LogicalSwitchPort, name=name)

        found = _best(find)
    return (
        f"db.list {listed * 1e6 / n:6.2f} us/object  cold load {loaded * 1e6 / n:6.2f} us/object  "
        f"cache.list {copied * 1e6 / n:6.3f} us/object  cache.find(name) {found * 1e6 / len(names):5.2f} us/call  "
        f"cache {held:5.0f} B/object"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="redis,etcd,memory")
    parser.add_argument("--sizes", default="10000,50000,100000")
    parser.add_argument("--etcd-quota", type=int, default=8 << 30, help="etcd's --quota-backend-bytes")
    parser.add_argument("--hazelcast-heap", default="8g", help="the Hazelcast member's -Xmx")
    parser.add_argument("--keep-files", action="store_true", help="keep the servers' directories (logs) after the run")
    parser.add_argument("--etcd-timeout", type=float, help="seconds per etcd request (nbdb: 2)")
    args = parser.parse_args()
    options: dict[str, dict[str, object]] = {
        "etcd": {"quota_bytes": args.etcd_quota},
        "hazelcast": {"heap": args.hazelcast_heap},
    }
    sizes = [int(s) for s in args.sizes.split(",")]

    from nbdb.testing.servers import start_server

    print(f"load average before: {Path('/proc/loadavg').read_text().split()[:3]}", flush=True)
    for backend in args.backends.split(","):
        options[backend] = {**options.get(backend, {}), "keep_files": args.keep_files}
        server = None if backend == "memory" else start_server(backend, **options[backend])
        try:
            for n in sizes:
                url = "memory://" if server is None else server.url
                if backend == "etcd" and args.etcd_timeout is not None:
                    url += f"?timeout={args.etcd_timeout:g}"
                with nbdb.connect(url, namespace=f"sweep{n}") as db:
                    print(f"{backend:9} {n:>9,}: {_fill(db, n)}", flush=True)
                    print(f"{backend:9} {n:>9,}: {_measure(db, n)}", flush=True)
        finally:
            if server is not None:
                server.stop()
    print(f"load average after: {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main()
