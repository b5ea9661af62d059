"""A/B of the cyclic collector's share of embedded transactions: two nbdb checkouts in turns.

CPython's full (generation 2) collection walks every tracked object alive, and runs once the
objects promoted to the oldest generation since the last one pass a quarter of those it kept: so
its cost per created object is about four times the objects each create leaves promoted (kept,
or alive long enough), whatever the store's size. This script measures that share::

    python benchmarks/collector_ab.py --a /path/to/main/src --b src --rounds 6

Per side and round, one process each:

- ``grow``: a ``memory://`` store of 2,000 ports grows by 40,000 in transactions of 100 (the
  store sizes at which full collections take tens of milliseconds each);
- ``fresh``: ten fresh stores of 1,000 ports each in transactions of 100 (the sizes of
  ``nbdb bench --quick``'s ``txn`` workload);
- ``tracked``: objects the collector tracks per stored port (after a full collection).

Rates are objects per second of the process's CPU time (``time.process_time``), and the time
of the collections (by generation, from ``gc.callbacks``) is CPU time too, per 10,000 objects
created. Printed per round with the load average; at the end each side's medians and b/a.
"""

from __future__ import annotations

import argparse
import statistics

from abrun import loadavg, run_json

WORKER = r"""
import collections, gc, json, statistics, sys, time
import nbdb
from nbdb.bench.data import make_port
from nbdb.bench.workloads.common import populate

spent = collections.Counter()
started = [0]

def timed(phase, info):
    if phase == "start":
        started[0] = time.process_time_ns()
    else:
        spent[info["generation"]] += time.process_time_ns() - started[0]

def create(db, switch, first, count):
    for t in range(count // 100):
        with db.transaction() as txn:
            for i in range(100):
                txn.create(make_port(switch, first + t * 100 + i, "tenant-0"))

mode = sys.argv[1]
out = {}
if mode == "tracked":
    db = nbdb.connect("memory://")
    switch = populate(db, 0, "tenant-0")[0]
    create(db, switch, 10**6, 500)
    gc.collect()
    before = len(gc.get_objects())
    create(db, switch, 0, 1000)
    gc.collect()
    out["tracked_per_port"] = (len(gc.get_objects()) - before) / 1000
else:
    gc.callbacks.append(timed)
    if mode == "grow":
        db = nbdb.connect("memory://")
        switch = populate(db, 0, "tenant-0")[0]
        create(db, switch, 10**6, 2000)
        spent.clear()
        count = 40000
        start = time.process_time()
        create(db, switch, 0, count)
        cpu = time.process_time() - start
        out["obj_s"] = count / cpu
    else:
        count, rates = 0, []
        spent.clear()
        for _ in range(10):
            with nbdb.connect("memory://") as db:
                switch = populate(db, 0, "tenant-0")[0]
                start = time.process_time()
                create(db, switch, 0, 1000)
                rates.append(1000 / (time.process_time() - start))
                count += 1000
        out["obj_s"] = statistics.median(rates)
    out["gen2_ms_per_10k"] = spent[2] / 1e6 * 10000 / count
    out["gen01_ms_per_10k"] = (spent[0] + spent[1]) / 1e6 * 10000 / count
print(json.dumps(out))
"""


def main() -> None:
    """Run the modes on both checkouts, alternating which goes first, and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, help="src/ of the first checkout (the base)")
    parser.add_argument("--b", required=True, help="src/ of the second checkout")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--modes", default="grow,fresh,tracked")
    args = parser.parse_args()
    modes = args.modes.split(",")
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for r in range(args.rounds):
        sides = [("a", args.a), ("b", args.b)]
        for mode in modes:
            for side, src in sides if r % 2 == 0 else sides[::-1]:
                got = run_json(src, WORKER, [mode])
                results.setdefault((mode, side), []).append(got)
                shown = ", ".join(f"{k} {v:.1f}" for k, v in got.items())
                print(f"round {r} {mode:7} {side}: {shown}  (load {loadavg()})", flush=True)
    for mode in modes:
        a, b = results[(mode, "a")], results[(mode, "b")]
        for key in a[0]:
            ma, mb = statistics.median(x[key] for x in a), statistics.median(x[key] for x in b)
            print(f"{mode:7} {key:17} a {ma:10.2f}  b {mb:10.2f}  b/a {mb / ma:.2f}")


if __name__ == "__main__":
    main()
