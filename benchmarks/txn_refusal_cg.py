"""Instructions per refused owner delete in a ``transaction()``, two checkouts in turns, under callgrind.

What a transaction reads after the store refuses its deletes: ``held switch txn``, a switch held by three
ports (its delete walks first, its table being an owner's; the store refuses it for the ports, the same
switch each time: nothing changes, so every delete walks first); ``owner alone+update``, a bare switch's
plain delete (so the next goes alone first) then a transaction deleting a switch that owns a forwarding
group beside an update of another switch (refused for the group, then planned: two commits);
``weak lb alone+update``, the same with a load balancer (an owner) that a switch holds weakly. On
``memory://`` and a fresh ``sqlite://`` file (``?synchronous=normal``); the objects are made outside
collection, and a full collection runs before each phase::

    python benchmarks/txn_refusal_cg.py --a /work/main/src --b src --rounds 2
"""

from __future__ import annotations

from abrun import ab_parser, callgrind_ab

WORKER = r"""
import gc, operator, sys
import nbdb
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.models.ovn import ForwardingGroup, LoadBalancer

count, path = int(sys.argv[1]), sys.argv[2]
names = iter(range(10**9))

def switch(**kw):
    return LogicalSwitch(name=f"s{next(names)}", **kw)

for url in ("memory://", "sqlite://" + path + "?synchronous=normal"):
    with nbdb.connect(url) as db:
        held = db.create(switch())
        for _ in range(3):
            db.create(LogicalSwitchPort(switch=held, name=f"p{next(names)}"))
        def refused():
            try:
                with db.transaction() as t:
                    t.delete(held)
            except nbdb.ReferenceError:
                pass
        refused()
        gc.collect()
        operator.call(lambda: [refused() for _ in range(count)])
        other = db.create(switch())
        def alone_then(owner, bare):
            db.delete(bare)  # the next delete of its table goes alone first
            with db.transaction() as t:
                t.delete(owner)
                t.update(db.get(LogicalSwitch, other.id).replace(other_config={"n": str(next(names))}))
        def phase(make):
            for owner, bare in [make() for _ in range(3)]:
                alone_then(owner, bare)
            made = [make() for _ in range(count)]
            gc.collect()
            operator.call(lambda: [alone_then(owner, bare) for owner, bare in made])
        def owner_switch():
            sw = db.create(switch())
            db.create(ForwardingGroup(switch=sw.id, name=f"fg{next(names)}", vip="10.0.0.1",
                                      vmac="00:00:00:00:00:01", child_port=["p"]))
            return sw, db.create(switch())
        def weak_lb():
            lb = db.create(LoadBalancer(name=f"lb{next(names)}", vips={}))
            db.create(switch(load_balancer=[lb.id]))
            return lb, db.create(LoadBalancer(name=f"lb{next(names)}", vips={}))
        phase(owner_switch)
        phase(weak_lb)
"""

PHASES = tuple(
    f"{store} {what}"
    for store in ("memory", "sqlite")
    for what in ("held switch txn", "owner alone+update", "weak lb alone+update")
)


def main() -> None:
    args = ab_parser(__doc__, 100).parse_args()
    callgrind_ab(args, WORKER, PHASES, lambda tag: [str(args.count), f"{tag}.sqlite"], "refused delete")


if __name__ == "__main__":
    main()
