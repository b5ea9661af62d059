"""Instructions per operation on a ``sqlite://`` file, two checkouts in turns, under callgrind.

Written for the writer connection of its own (its wait for SQLite's write lock in slices):
a commit must cost what it did, and a read too. One process, one thread, ``synchronous=normal``,
a fresh file per run; each phase (creates, updates, gets, lists) runs inside ``operator.call``
and callgrind counts only there (see ``abrun.callgrind_phases``), SQLite's own work included.
Instructions, not time: the machine is shared and CPU times moved by ±50 % between rounds::

    python benchmarks/sqlite_conn_ab.py --a /work/main/src --b src --rounds 2
"""

from __future__ import annotations

import statistics

from abrun import ab_parser, callgrind_phases, in_turns, loadavg

WORKER = r"""
import operator, sys, tempfile
import nbdb
from nbdb.models import LogicalSwitch

count = int(sys.argv[1])
with tempfile.TemporaryDirectory() as d, nbdb.connect(f"sqlite:///{d}/nb.db?synchronous=normal") as db:
    warm = [db.create(LogicalSwitch(name=f"warm{i}")) for i in range(50)]
    [db.update(s.replace(other_config={"a": "0"})) for s in warm]
    [db.get(LogicalSwitch, s.id) for s in warm]
    db.list(LogicalSwitch)
    made = operator.call(lambda: [db.create(LogicalSwitch(name=f"s{i}")) for i in range(count)])
    operator.call(lambda: [db.update(s.replace(other_config={"a": "1"})) for s in made])
    operator.call(lambda: [db.get(LogicalSwitch, s.id) for s in made])
    operator.call(lambda: [db.list(LogicalSwitch) for _ in range(5)])
"""
PHASES = ("create", "update", "get", "list (per object)")


def main() -> None:
    args = ab_parser(__doc__, 300).parse_args()
    per = {"create": args.count, "update": args.count, "get": args.count, "list (per object)": 5 * (args.count + 50)}
    print(f"load average before: {loadavg().split()}", flush=True)
    rows: dict[str, list[list[float]]] = {"a": [], "b": []}
    for n, side in in_turns(args.rounds):
        totals = callgrind_phases({"a": args.a, "b": args.b}[side], WORKER, [str(args.count)])
        rows[side].append([t / per[p] for t, p in zip(totals, PHASES, strict=True)])
        print(f"round {n} {side} " + " ".join(f"{p}={v:,.0f}" for p, v in zip(PHASES, rows[side][-1], strict=True)))
    print(f"load average after: {loadavg().split()}")
    print("instructions per operation, medians (a | b):")
    for i, phase in enumerate(PHASES):
        a, b = (statistics.median(r[i] for r in rows[side]) for side in ("a", "b"))
        print(f"  {phase:18s} {a:12,.0f} | {b:12,.0f}   b/a {b / a:.3f}")


if __name__ == "__main__":
    main()
