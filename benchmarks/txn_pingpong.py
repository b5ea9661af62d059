"""A/B of embedded writes in tight turns: two worker processes, one per checkout, run a batch each in turn.

``txn_ab.py`` starts a process per side and round, seconds apart; on a shared machine whose load
moves by the second, a 5 % change drowns in that. Here both sides stay up and take turns batch by
batch (the order flips every round), so each pair of samples sees nearly the same load::

    python benchmarks/txn_pingpong.py --a /path/to/main/src --b src --rounds 60 [--no-gc]

A round runs, on a ``memory://`` store that keeps growing: 10 transactions of 100 creates (the
port built inside the loop, as the bench does), the same 10 of updates, then 500 single creates,
CAS updates, gets and deletes. Printed: CPU time of the thread per object, median / lower
quartile / best of each side, and a/b (> 1: b is faster). ``--no-gc`` turns the cyclic collector
off in the workers, to compare the code paths alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from abrun import env, loadavg

WORKER = r"""
import gc, json, sys, time
if sys.argv[1] == "1":
    gc.disable()
import nbdb
from nbdb.bench.data import make_port
from nbdb.bench.workloads.common import populate
db = nbdb.connect("memory://")
switch, _ = populate(db, 0)
counter = iter(range(10**9))
kept, singles = [], []
def txn_create():
    kept.clear()
    for _ in range(10):
        with db.transaction() as txn:
            for _ in range(100):
                txn.create(make_port(switch, next(counter)))
        kept.append(txn.results)
    return 1000
def txn_update():
    for k, ports in enumerate(kept):
        with db.transaction() as txn:
            for p in ports:
                txn.update(p.replace(up=not p.up))
        kept[k] = txn.results
    return 1000
def create():
    singles.clear()
    for _ in range(500):
        singles.append(db.create(make_port(switch, next(counter))))
    return 500
def update():
    for k, p in enumerate(singles):
        singles[k] = db.update(p.replace(up=not p.up))
    return 500
def get():
    for p in singles:
        db.get(type(p), p.id)
    return 500
def delete():
    for p in singles:
        db.delete(p)
    return 500
ops = {"txn100 create": txn_create, "txn100 update": txn_update, "create": create, "update": update,
       "get": get, "delete": delete}
for _ in sys.stdin:
    out = {}
    for name, fn in ops.items():
        c0 = time.thread_time()
        n = fn()
        out[name] = (time.thread_time() - c0) / n * 1e6
    print(json.dumps(out), flush=True)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", required=True, help="src/ of the base checkout (main)")
    parser.add_argument("--b", required=True, help="src/ of the checkout under test")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--no-gc", action="store_true", help="the cyclic collector off in the workers")
    args = parser.parse_args()

    gc_off = "1" if args.no_gc else "0"
    workers = {
        side: subprocess.Popen(
            [sys.executable, "-c", WORKER, gc_off],
            env=env(src),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for side, src in (("a", args.a), ("b", args.b))
    }
    samples: dict[str, list[dict[str, float]]] = {"a": [], "b": []}
    loads = []
    try:
        for round_ in range(args.rounds):
            for side in ("a", "b") if round_ % 2 == 0 else ("b", "a"):
                worker = workers[side]
                assert worker.stdin is not None and worker.stdout is not None
                worker.stdin.write("go\n")
                worker.stdin.flush()
                samples[side].append(json.loads(worker.stdout.readline()))
            if round_ % 10 == 0:
                loads.append(loadavg().split()[0])
    finally:
        for worker in workers.values():
            if worker.stdin is not None:
                worker.stdin.close()
            worker.wait(timeout=60)
    print(f"load (1 min) every 10 rounds: {' '.join(loads)}; now {loadavg()}")
    print("CPU µs/object: a median / quartile / best | b median / quartile / best | a/b median / quartile")
    for op in samples["a"][0]:
        a = [s[op] for s in samples["a"]]
        b = [s[op] for s in samples["b"]]
        qa, qb = statistics.quantiles(a, n=4)[0], statistics.quantiles(b, n=4)[0]
        ma, mb = statistics.median(a), statistics.median(b)
        print(
            f"  {op:14} {ma:7.2f} / {qa:7.2f} / {min(a):7.2f} | {mb:7.2f} / {qb:7.2f} / {min(b):7.2f}"
            f" | {ma / mb:5.2f} / {qa / qb:5.2f}"
        )


if __name__ == "__main__":
    main()
