"""Instructions per object of embedded writes and of a sqlite list, two checkouts in turns, under callgrind.

Each side of each round runs one worker process under callgrind with collection off; each phase
runs inside ``operator.call`` and callgrind collects only inside that C function
(``--toggle-collect``) and dumps after it (``--dump-after``), so a phase's dump holds exactly that
phase's instructions: on ``memory://``, single creates (the port built inside the phase, as the
bench does), CAS updates (``replace()`` and ``update()``), creates in transactions of 100 (built
inside too), gets and deletes of the updated ports; on a fresh ``sqlite://`` file, one ``list()``
of the table of ports; on a second fresh file (``?synchronous=normal``), single ``create`` of a
logical switch, ``allocate_id``, a CAS update (``update()``) and a delete of each switch made (``count // 10``
of each: they commit one by one); on a third
(``?synchronous=normal&history=20``), ``count // 10`` creates of a logical switch, a trim of the
namespace's history every few of them (the trim's own path: its reads of ``nbdb_trims``). Every phase
is warmed first, outside collection. Runs of one build agree to well under 1 % (hashing seeded),
which is why this counts instructions rather than timing a shared machine::

    python benchmarks/embedded_cg.py --a /work/main/src --b src --rounds 2
"""

from __future__ import annotations

import statistics
import tempfile

from abrun import ab_parser, callgrind_phases, in_turns, loadavg

WORKER = r"""
import operator, sys
import nbdb
from nbdb.bench.data import make_port
from nbdb.bench.workloads.common import populate
from nbdb.models import LogicalSwitch, LogicalSwitchPort

count, path = int(sys.argv[1]), sys.argv[2]
names = iter(range(10**9))

with nbdb.connect("memory://") as db:
    switch, _ = populate(db, 0)
    for p in [db.create(make_port(switch, next(names))) for _ in range(200)]:
        db.update(p.replace(up=True))
    with db.transaction() as t:
        for _ in range(100):
            t.create(make_port(switch, next(names)))
    made = operator.call(lambda: [db.create(make_port(switch, next(names))) for _ in range(count)])
    operator.call(lambda: [db.update(p.replace(up=not p.up)) for p in made])
    def txn():
        for _ in range(count // 100):
            with db.transaction() as t:
                for _ in range(100):
                    t.create(make_port(switch, next(names)))
    operator.call(txn)
    updated = [db.get(LogicalSwitchPort, p.id) for p in made]
    operator.call(lambda: [db.get(LogicalSwitchPort, p.id) for p in updated])
    operator.call(lambda: [db.delete(p) for p in updated])

with nbdb.connect("sqlite://" + path) as db:
    switch, _ = populate(db, 0)
    with db.transaction() as t:
        for _ in range(count):
            t.create(make_port(switch, next(names)))
    db.list(LogicalSwitchPort)
    operator.call(lambda: db.list(LogicalSwitchPort))

with nbdb.connect("sqlite://" + path + "-2?synchronous=normal") as db:
    for _ in range(20):
        db.create(LogicalSwitch(name=f"warm{next(names)}"))
        db.allocate_id("warm")
    made = operator.call(lambda: [db.create(LogicalSwitch(name=f"s{next(names)}")) for _ in range(count // 10)])
    operator.call(lambda: [db.allocate_id("bench") for _ in range(count // 10)])
    made = operator.call(lambda: [db.update(s.replace(other_config={"cas": "1"})) for s in made])
    operator.call(lambda: [db.delete(s) for s in made])

with nbdb.connect("sqlite://" + path + "-3?synchronous=normal&history=20") as db:
    for _ in range(20):
        db.create(LogicalSwitch(name=f"warm{next(names)}"))
    operator.call(lambda: [db.create(LogicalSwitch(name=f"t{next(names)}")) for _ in range(count // 10)])
"""

PHASES = (
    "memory create",
    "memory CAS update",
    "memory txn100 object",
    "memory get",
    "memory delete",
    "sqlite list object",
    "sqlite create switch",
    "sqlite allocate_id",
    "sqlite CAS update",
    "sqlite delete",
    "sqlite create trimming",
)


def main() -> None:
    args = ab_parser(__doc__, 2000).parse_args()
    sides = {"a": args.a, "b": args.b}
    results: dict[str, list[list[float]]] = {"a": [], "b": []}
    print(f"load average before: {loadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="nbdb-embedded-cg-") as work:
        for n, side in in_turns(args.rounds):
            totals = callgrind_phases(sides[side], WORKER, [str(args.count), f"{work}/{side}{n}.sqlite"])
            if len(totals) != len(PHASES):
                raise RuntimeError(f"{sides[side]}: {len(totals)} phases, expected {len(PHASES)}")
            per = [total / (args.count // 10 if k >= 6 else args.count) for k, total in enumerate(totals)]
            results[side].append(per)
            print(f"round {n} {side}: " + "  ".join(f"{t / 1000:6.1f}k" for t in per), flush=True)
    print(f"instructions per object, medians (k), of {', '.join(PHASES)}:")
    for k, phase in enumerate(PHASES):
        a, b = (statistics.median(r[k] for r in results[s]) / 1000 for s in ("a", "b"))
        print(f"  {phase:21} a {a:7.1f}  b {b:7.1f}  b-a {b - a:+6.1f}k  b/a {b / a:5.3f}")


if __name__ == "__main__":
    main()
