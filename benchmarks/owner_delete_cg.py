"""Instructions per delete of an owner and of a non-owner, plain and queued, two checkouts in turns, under callgrind.

An owner (a table some model is owned by, ``nbdb_owned_by``): a meter with two bands, which a plain
delete takes along; and a switch that owns nothing (a switch owns its forwarding groups: its delete walks
them, and finds none). A non-owner: a port in no port group (its delete plans nothing). Then the same
meter's delete queued alone in a ``transaction()``, and a port in a port group of its own (a weak
referrer the delete drops from the group). On ``memory://`` and a fresh ``sqlite://`` file
(``?synchronous=normal``); the objects are made outside collection, and a full collection runs before
each phase (one phase's garbage is not collected in the next one's count), and five of each kind are
deleted before (a Database orders a delete that plans by what its last delete of that table took along:
the phases count the deletes that follow)::

    python benchmarks/owner_delete_cg.py --a /work/main/src --b src --rounds 2
"""

from __future__ import annotations

from abrun import ab_parser, callgrind_ab

WORKER = r"""
import gc, operator, sys
import nbdb
from nbdb.bench.data import make_port
from nbdb.bench.workloads.common import populate
from nbdb.models import LogicalSwitch
from nbdb.models.ovn import Meter, MeterBand, MeterUnit, PortGroup

count, path = int(sys.argv[1]), sys.argv[2]
names = iter(range(10**9))

def meters(db, n):
    made = []
    for _ in range(n):
        with db.transaction() as t:
            m = Meter(name=f"m{next(names)}", unit=MeterUnit.KBPS)
            t.create(m)
            t.create(MeterBand(meter=m.id, rate=100))
            t.create(MeterBand(meter=m.id, rate=200))
        made.append(t.results[0])
    return made

for url in ("memory://", "sqlite://" + path + "?synchronous=normal"):
    with nbdb.connect(url) as db:
        switch, _ = populate(db, 0)
        for m in meters(db, 5):
            db.delete(m)
        for p in [db.create(make_port(switch, next(names))) for _ in range(5)]:
            db.delete(p)
        for s in [db.create(LogicalSwitch(name=f"s{next(names)}")) for _ in range(5)]:
            db.delete(s)
        owners = meters(db, count)
        gc.collect()
        operator.call(lambda: [db.delete(m) for m in owners])
        ports = [db.create(make_port(switch, next(names))) for _ in range(count)]
        gc.collect()
        operator.call(lambda: [db.delete(p) for p in ports])
        bare = [db.create(LogicalSwitch(name=f"s{next(names)}")) for _ in range(count)]
        gc.collect()
        operator.call(lambda: [db.delete(s) for s in bare])
        def delete_queued(obj):
            with db.transaction() as t:
                t.delete(obj)
        for m in meters(db, 5):
            delete_queued(m)
        owners = meters(db, count)
        gc.collect()
        operator.call(lambda: [delete_queued(m) for m in owners])
        def grouped(n):
            made = [db.create(make_port(switch, next(names))) for _ in range(n)]
            for p in made:
                db.create(PortGroup(name=f"pg{next(names)}", ports=[p.id]))
            return made
        for p in grouped(5):
            db.delete(p)
        ports = grouped(count)
        gc.collect()
        operator.call(lambda: [db.delete(p) for p in ports])
"""

PHASES = tuple(
    f"{store} {what} delete"
    for store in ("memory", "sqlite")
    for what in ("meter", "port", "bare switch", "meter txn", "grouped port")
)


def main() -> None:
    args = ab_parser(__doc__, 200).parse_args()
    callgrind_ab(args, WORKER, PHASES, lambda tag: [str(args.count), f"{tag}.sqlite"], "delete")


if __name__ == "__main__":
    main()
