"""Instructions per transaction of puts and deletes on ``memory://``, two checkouts in turns, under callgrind.

A transaction that deletes objects of a weakly referenced table (ports: ``PortGroup.ports``) makes a
pass over its own writes to drop the targets from the weak references they hold. Phases: transactions
of 50 CAS updates and 50 deletes of ports that no port group holds (the pass finds nothing), and
transactions of 100 creates (the all-puts path, which has no such pass)::

    python benchmarks/txn_deletes_cg.py --a /work/main/src --b src --rounds 2
"""

from __future__ import annotations

import statistics

from abrun import ab_parser, callgrind_phases, in_turns, loadavg

WORKER = r"""
import operator, sys
import nbdb
from nbdb.bench.data import make_port
from nbdb.bench.workloads.common import populate

count = int(sys.argv[1])
names = iter(range(10**9))
with nbdb.connect("memory://") as db:
    switch, _ = populate(db, 0)

    def fill():
        with db.transaction() as t:
            for _ in range(100):
                t.create(make_port(switch, next(names)))
        return t.results

    def mixed(stored):
        with db.transaction() as t:
            for p in stored[:50]:
                t.update(p.replace(up=True))
            for p in stored[50:]:
                t.delete(p)

    for _ in range(3):
        mixed(fill())
    batches = [fill() for _ in range(count)]
    operator.call(lambda: [mixed(b) for b in batches])
    operator.call(lambda: [fill() for _ in range(count)])
"""

PHASES = ("50 updates + 50 deletes", "100 creates")


def main() -> None:
    args = ab_parser(__doc__, 10).parse_args()
    sides = {"a": args.a, "b": args.b}
    results: dict[str, list[list[float]]] = {"a": [], "b": []}
    print(f"load average before: {loadavg()}", flush=True)
    for n, side in in_turns(args.rounds):
        totals = callgrind_phases(sides[side], WORKER, [str(args.count)])
        results[side].append([total / args.count for total in totals])
        print(f"round {n} {side}: " + "  ".join(f"{t / args.count / 1000:8.1f}k" for t in totals), flush=True)
    print("instructions per transaction, medians (k):")
    for k, phase in enumerate(PHASES):
        a, b = (statistics.median(r[k] for r in results[s]) / 1000 for s in ("a", "b"))
        print(f"  {phase:24} a {a:9.1f}  b {b:9.1f}  b-a {b - a:+7.1f}k  b/a {b / a:5.3f}")


if __name__ == "__main__":
    main()
