"""A/B of a cache's cold load: nbdb at two checkouts, alternating, on the same stored ports.

The cold-load rate of a quick ``nbdb bench`` run moves by 2-3x with the load of a shared
machine, so two builds are compared side by side, in turns, on the same data::

    python benchmarks/coldload_ab.py --a /path/to/main/src --b src --backends redis,etcd,sqlite \
        --ports 10000 --rounds 4

Each backend (spawned: redis and etcd on loopback; sqlite a file) is filled once with a
switch and ``--ports`` ports; ``memory`` (a store per process) is filled by each worker
before its loads, untimed. Each round runs, per backend and in a rotating order, one
process per side that opens a cache of the ports and times its load three times (a fresh
``Database`` each time): wall-clock objects/s (as ``nbdb bench`` measures it) and the CPU
of the whole process per object (``time.process_time``; the cache thread's and the
server's client work). Printed per round: the best of three of each; at the end the median
of each side and branch/main. The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
from collections.abc import Iterator

from abrun import env, loadavg, run_json, stores

WORKER = r"""
import contextlib, gc, json, sys, time
from time import perf_counter_ns as now
url, ns, ports, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
import nbdb
from nbdb.models.ovn import LogicalSwitchPort
best_rate, best_cpu = 0.0, float("inf")
filled = None
if url.startswith("memory://"):  # a store of this process: filled once, untimed, and loaded from each time
    from nbdb.bench.workloads.common import populate
    filled = nbdb.connect(url, namespace=ns)
    populate(filled, ports)
for _ in range(repeat):
    gc.collect()
    with contextlib.nullcontext(filled) if filled is not None else nbdb.connect(url, namespace=ns) as db:
        c0, t0 = time.process_time(), now()
        cache = db.cache(LogicalSwitchPort)
        assert cache.wait_synced(600)
        t1, c1 = now(), time.process_time()
        assert len(cache) == ports, (len(cache), ports)
        cache.close()
    best_rate = max(best_rate, ports / ((t1 - t0) / 1e9))
    best_cpu = min(best_cpu, (c1 - c0) * 1e6 / ports)
print(json.dumps({"rate": best_rate, "cpu_us": best_cpu}))
"""

FILL = r"""
import sys
url, ns, ports = sys.argv[1], sys.argv[2], int(sys.argv[3])
import nbdb
from nbdb.bench.workloads.common import populate
with nbdb.connect(url, namespace=ns) as db:
    populate(db, ports)
"""


NAMESPACE = "coldload"


@contextlib.contextmanager
def filled_stores(backends: str, ports: int, src: str) -> Iterator[dict[str, str]]:
    """A store per backend of ``backends`` (comma-separated), each URL holding ``ports`` ports in
    :data:`NAMESPACE`, written by ``src``'s nbdb: servers started on loopback, sqlite in a temporary
    directory (``memory://`` is filled by each worker). Stopped and removed on leaving."""
    with stores(backends, "nbdb-coldload-") as urls:
        for url in urls.values():
            if url != "memory://":
                subprocess.run(
                    [sys.executable, "-c", FILL, url, NAMESPACE, str(ports)], env=env(src), check=True, timeout=900
                )
        yield urls


def _run(src: str, url: str, ns: str, ports: int, repeat: int) -> dict[str, float]:
    return run_json(src, WORKER, [url, ns, str(ports), str(repeat)])  # type: ignore[no-any-return]


def _loadavg() -> str:
    return str(loadavg().split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", required=True, help="src/ of the base checkout (main)")
    parser.add_argument("--b", required=True, help="src/ of the checkout under test")
    parser.add_argument("--backends", default="redis,etcd,sqlite")
    parser.add_argument("--ports", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="loads per process (the best is kept)")
    args = parser.parse_args()

    with filled_stores(args.backends, args.ports, args.b) as urls:
        ns = NAMESPACE
        print(f"load average before: {_loadavg()}", flush=True)
        sides = {"a": args.a, "b": args.b}
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for round_ in range(args.rounds):
            order = ["a", "b"] if round_ % 2 == 0 else ["b", "a"]
            for backend, url in urls.items():
                for side in order:
                    got = _run(sides[side], url, ns, args.ports, args.repeat)
                    results.setdefault((backend, side), []).append(got)
                    print(
                        f"round {round_} {backend:7} {side}: {got['rate']:9,.0f} objects/s  "
                        f"{got['cpu_us']:6.1f} us CPU/object  load {_loadavg()}",
                        flush=True,
                    )
        print(f"load average after: {_loadavg()}")
        for backend in urls:
            a = statistics.median(r["rate"] for r in results[(backend, "a")])
            b = statistics.median(r["rate"] for r in results[(backend, "b")])
            ca = statistics.median(r["cpu_us"] for r in results[(backend, "a")])
            cb = statistics.median(r["cpu_us"] for r in results[(backend, "b")])
            print(
                f"{backend:7} median a {a:9,.0f}/s  b {b:9,.0f}/s  b/a {b / a:5.2f}   "
                f"CPU a {ca:5.1f} us  b {cb:5.1f} us"
            )


if __name__ == "__main__":
    main()
