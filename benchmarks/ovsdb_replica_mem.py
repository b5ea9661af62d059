"""A/B of what an OVSDB replica keeps per port: tracked objects, bytes, and a full collection over it.

No server, no cache: a replica of the Northbound schema is fed ``--ports`` ports in switches of
``--per-switch`` (updates of 1,000 ports and their switch's ``ports`` mutation, as ovsdb-server
sends them), its history emptied, then per side and round, one process each:

- ``tracked/port``: ``len(gc.get_objects())`` after against before, after ``gc.collect()``;
- ``bytes/port``: ``tracemalloc``'s traced memory after against before (the load runs traced);
- ``full gc ms``: the median CPU time of five more full ``gc.collect()`` (tracing stopped).

::

    python benchmarks/ovsdb_replica_mem.py --a /path/to/main/src --b src --ports 100000 --per-switch 1000
"""

from __future__ import annotations

import argparse

from abrun import in_turns, loadavg, print_medians, run_json

WORKER = r"""
import gc, json, statistics, sys, time, tracemalloc, uuid
from nbdb.families.ovsdb import OVN_BINDINGS, DatabaseSchema, Replica, build_mapping
from nbdb.families.ovsdb.ovn import OVN_NB_DATABASE as NB
from nbdb.families.ovsdb.rows import VersionBook
from nbdb.models.shape import model_shapes
from nbdb.testing.ovsdb import find_ovn_nb_schema

ports, per_switch = int(sys.argv[1]), int(sys.argv[2])
schema = DatabaseSchema.parse(json.loads(find_ovn_nb_schema().read_text()))
mapping = build_mapping({NB: schema}, {NB: OVN_BINDINGS}, model_shapes())
replica = Replica(mapping, VersionBook(), "")
replica.resync(NB, {})

def held():
    gc.collect()
    return len(gc.get_objects()), tracemalloc.get_traced_memory()[0]

tracemalloc.start()
objects0, bytes0 = held()
done = 0
while done < ports:
    sw = uuid.uuid4()
    wire = {"name": f"sw{done}", "ports": ["set", []], "external_ids": ["map", []]}
    replica.apply(NB, {"Logical_Switch": {str(sw): {"insert": wire}}})
    for first in range(0, per_switch, 1000):
        batch = [uuid.uuid4() for _ in range(min(1000, per_switch - first))]
        row = {"addresses": "0a:00:00:00:00:01 10.0.0.1", "external_ids": ["map", []]}
        inserts = {str(p): {"insert": {**row, "name": f"p{done + first + i}"}} for i, p in enumerate(batch)}
        replica.apply(NB, {
            "Logical_Switch_Port": inserts,
            "Logical_Switch": {str(sw): {"modify": {"ports": ["set", [["uuid", str(p)] for p in batch]]}}},
        })
    done += per_switch
replica.history.clear()
objects1, bytes1 = held()
tracemalloc.stop()
spent = []
for _ in range(5):
    start = time.process_time()
    gc.collect()
    spent.append(time.process_time() - start)
print(json.dumps({
    "tracked/port": (objects1 - objects0) / ports,
    "bytes/port": (bytes1 - bytes0) / ports,
    "full gc ms": statistics.median(spent) * 1000,
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, help in (("--a", "src/ of the first checkout (the base)"), ("--b", "src/ of the second checkout")):
        parser.add_argument(flag, required=True, help=help)
    for flag, default in (("--ports", 100_000), ("--per-switch", 1_000), ("--rounds", 2)):
        parser.add_argument(flag, type=int, default=default)
    opts = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {"a": [], "b": []}
    for r, side in in_turns(opts.rounds):
        got = run_json(opts.a if side == "a" else opts.b, WORKER, [str(opts.ports), str(opts.per_switch)])
        rows[side].append(got)
        shown = "  ".join(f"{k} {v:.2f}" for k, v in got.items())
        print(f"round {r} {side}: {shown}  (load {loadavg()})", flush=True)
    print_medians(rows)


if __name__ == "__main__":
    main()
