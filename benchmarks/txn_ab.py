"""A/B of embedded writes: transactions of N objects and single CRUD, two nbdb checkouts in turns.

A quick ``nbdb bench`` times 10 transactions of 100 objects, which a shared machine moves by
2-3x, so two builds are compared side by side, alternating, one process per side and round::

    python benchmarks/txn_ab.py --a /path/to/main/src --b src --urls memory://,sqlite --rounds 6

Each process opens a fresh ``Database`` (``sqlite`` is a new file in a temporary directory) and
times, in one thread, batches of: transactions of ``--size`` creates (``make_port`` inside the
loop, as the bench does), transactions of ``--size`` updates of those ports, and single
create / get / CAS update / delete. Per operation it keeps the best batch of ``--repeat``, in CPU
time of the thread (``time.thread_time``, less disturbed by other jobs) and in wall-clock time.
Printed per round; at the end the median of each side, and b/a (> 1: b is faster). The load
average is printed with every round.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

from abrun import loadavg, run_json

WORKER = r"""
import json, sys, time
from time import perf_counter_ns as now
url, size, repeat, batches = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
import nbdb
from nbdb.bench.data import make_port
from nbdb.bench.workloads.common import populate

out = {}
def best(name, objects, fn):
    cpu, wall = float("inf"), float("inf")
    for _ in range(repeat):
        c0, t0 = time.thread_time(), now()
        fn()
        t1, c1 = now(), time.thread_time()
        cpu, wall = min(cpu, (c1 - c0) / objects * 1e6), min(wall, (t1 - t0) / objects / 1e3)
    out[name] = {"cpu_us": cpu, "wall_us": wall}

with nbdb.connect(url) as db:
    switch, _ = populate(db, 0)
    counter = iter(range(10**9))
    kept = []
    def txn_create():
        kept.clear()
        for _ in range(batches):
            with db.transaction() as txn:
                for _ in range(size):
                    txn.create(make_port(switch, next(counter)))
            kept.append(txn.results)
    def txn_update():
        for k, ports in enumerate(kept):
            with db.transaction() as txn:
                for p in ports:
                    txn.update(p.replace(up=not p.up))
            kept[k] = txn.results
    best(f"txn{size} create", batches * size, txn_create)
    best(f"txn{size} update", batches * size, txn_update)
    n = batches * size
    singles = []
    def create():
        singles.clear()
        for _ in range(n):
            singles.append(db.create(make_port(switch, next(counter))))
    def get():
        for p in singles:
            db.get(type(p), p.id)
    def update():
        for k, p in enumerate(singles):
            singles[k] = db.update(p.replace(up=not p.up))
    def delete():
        for p in singles:
            db.delete(p)
    # create and delete consume what they act on: each timed batch creates n ports, then deletes them.
    times = {"create": [], "delete": []}
    for _ in range(repeat):
        for name, fn in (("create", create), ("delete", delete)):
            c0, t0 = time.thread_time(), now()
            fn()
            t1, c1 = now(), time.thread_time()
            times[name].append(((c1 - c0) / n * 1e6, (t1 - t0) / n / 1e3))
    for name, got in times.items():
        out[name] = {"cpu_us": min(c for c, _ in got), "wall_us": min(w for _, w in got)}
    create()
    best("get", n, get)
    best("update", n, update)
print(json.dumps(out))
"""


def _run(src: str, url: str, size: int, repeat: int, batches: int) -> dict[str, dict[str, float]]:
    return run_json(src, WORKER, [url, str(size), str(repeat), str(batches)])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", required=True, help="src/ of the base checkout (main)")
    parser.add_argument("--b", required=True, help="src/ of the checkout under test")
    parser.add_argument("--urls", default="memory://", help="comma-separated: memory://, sqlite (a fresh file)")
    parser.add_argument("--size", type=int, default=100, help="objects per transaction")
    parser.add_argument("--batches", type=int, default=20, help="transactions per timed batch")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=5, help="timed batches per process (the best is kept)")
    args = parser.parse_args()

    sides = {"a": args.a, "b": args.b}
    results: dict[tuple[str, str], list[dict[str, dict[str, float]]]] = {}
    urls = args.urls.split(",")
    with tempfile.TemporaryDirectory(prefix="nbdb-txn-ab-") as tmp:
        for round_ in range(args.rounds):
            order = ["a", "b"] if round_ % 2 == 0 else ["b", "a"]
            for url in urls:
                for side in order:
                    target = f"sqlite://{tmp}/{side}{round_}.db" if url == "sqlite" else url
                    got = _run(sides[side], target, args.size, args.repeat, args.batches)
                    results.setdefault((url, side), []).append(got)
                    shown = "  ".join(f"{op} {v['cpu_us']:.2f}" for op, v in got.items())
                    print(f"round {round_} {url:9} {side}: CPU us/object {shown}  load {loadavg()}", flush=True)
    print()
    for url in urls:
        ops = list(results[(url, "a")][0])
        print(f"{url}: median per object (CPU µs | wall µs), and b/a in objects/s")
        for op in ops:
            row = []
            for key in ("cpu_us", "wall_us"):
                a = statistics.median(r[op][key] for r in results[(url, "a")])
                b = statistics.median(r[op][key] for r in results[(url, "b")])
                row.append(f"{key[:-3]} a {a:7.2f} b {b:7.2f} b/a {a / b:5.2f} ({1e6 / a:9,.0f} -> {1e6 / b:9,.0f}/s)")
            print(f"  {op:14} " + "   ".join(row))


if __name__ == "__main__":
    main()
