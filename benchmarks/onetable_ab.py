"""A/B of listing one small table beside a large one: nbdb at two checkouts, alternating, on the same data.

Issue 13: a scan of one table with no topic filter ranged every object key of every table
(``o/``) and dropped the others, so listing 100 routers cost as much as listing 100,000
ports beside them. Each backend (spawned: redis and etcd on loopback; sqlite a file) gets one
namespace per ``--others`` count, each holding ``--routers`` routers (no topic) and that many
ports of one switch (topic ``tenant-0``)::

    python benchmarks/onetable_ab.py --a /path/to/main/src --b src --backends redis,etcd \
        --others 0,10000,100000 --rounds 3

Each round runs, per (backend, namespace) and in a rotating order, one process per side that
times ``db.list(LogicalRouter)`` and a cold ``db.cache(LogicalRouter)`` load (best of
``--repeat`` each, a fresh ``Database`` for each load). Printed per round: ms per list and per
load; at the end the medians and b/a. The load average is printed before and after.
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
import gc, json, sys
from time import perf_counter_ns as now
url, ns, routers, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
import nbdb
from nbdb.models.ovn import LogicalRouter
best_list = best_load = float("inf")
for _ in range(repeat):
    gc.collect()
    with nbdb.connect(url, namespace=ns) as db:
        t0 = now()
        got = db.list(LogicalRouter)
        t1 = now()
        assert len(got) == routers, (len(got), routers)
    with nbdb.connect(url, namespace=ns) as db:
        t2 = now()
        cache = db.cache(LogicalRouter)
        assert cache.wait_synced(600)
        t3 = now()
        assert len(cache) == routers, (len(cache), routers)
        cache.close()
    best_list = min(best_list, (t1 - t0) / 1e6)
    best_load = min(best_load, (t3 - t2) / 1e6)
print(json.dumps({"list_ms": best_list, "load_ms": best_load}))
"""

FILL = r"""
import sys
url, ns, routers, others = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
import nbdb
from nbdb.bench.workloads.common import populate
from nbdb.models.ovn import LogicalRouter
with nbdb.connect(url, namespace=ns) as db:
    with db.transaction() as txn:
        for i in range(routers):
            txn.create(LogicalRouter(name=f"lr-{i}"))
    if others:
        populate(db, others)
"""


@contextlib.contextmanager
def filled_stores(backends: str, routers: int, others: list[int], src: str) -> Iterator[dict[str, str]]:
    """A store per backend, with a namespace ``ot<n>`` per count of ``others`` (see the module's docstring)."""
    with stores(backends, "nbdb-onetable-") as urls:
        for url in urls.values():
            for n in others:
                subprocess.run(
                    [sys.executable, "-c", FILL, url, f"ot{n}", str(routers), str(n)],
                    env=env(src),
                    check=True,
                    timeout=1800,
                )
        yield urls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", required=True, help="src/ of the base checkout (main)")
    parser.add_argument("--b", required=True, help="src/ of the checkout under test")
    parser.add_argument("--backends", default="redis,etcd")
    parser.add_argument("--routers", type=int, default=100)
    parser.add_argument("--others", default="0,10000,100000", help="ports beside the routers, per namespace")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3, help="lists and loads per process (the best is kept)")
    args = parser.parse_args()
    others = [int(n) for n in args.others.split(",")]

    with filled_stores(args.backends, args.routers, others, args.b) as urls:
        print(f"load average before: {loadavg().split()}", flush=True)
        sides = {"a": args.a, "b": args.b}
        results: dict[tuple[str, int, str], list[dict[str, float]]] = {}
        for round_ in range(args.rounds):
            order = ["a", "b"] if round_ % 2 == 0 else ["b", "a"]
            for backend, url in urls.items():
                for n in others:
                    for side in order:
                        got = run_json(sides[side], WORKER, [url, f"ot{n}", str(args.routers), str(args.repeat)])
                        results.setdefault((backend, n, side), []).append(got)
                        print(
                            f"round {round_} {backend:6} others {n:7,} {side}: list {got['list_ms']:8.2f} ms  "
                            f"cold load {got['load_ms']:8.2f} ms",
                            flush=True,
                        )
        print(f"load average after: {loadavg().split()}")
        for backend in urls:
            for n in others:
                line = f"{backend:6} others {n:7,}"
                for what in ("list_ms", "load_ms"):
                    a = statistics.median(r[what] for r in results[(backend, n, "a")])
                    b = statistics.median(r[what] for r in results[(backend, n, "b")])
                    line += f"  {what[:4]} a {a:8.2f} ms b {b:8.2f} ms b/a {b / a:5.2f}"
                print(line)


if __name__ == "__main__":
    main()
