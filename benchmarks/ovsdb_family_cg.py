"""A/B of the OVSDB family's client work per commit in instructions (callgrind), no server, no threads.

Wall clock and CPU time on the shared 2-core machine swing by 2x between runs; instruction counts
do not. Each side runs one process under ``valgrind --tool=callgrind`` per step: a replica of
the Northbound schema (the installed ``ovn-nb.ovsschema``) is fed by playing the server (each
plan's inserts, updates, set mutations and deletes applied as the update ovsdb-server would
send), and a step adds ``--count`` single creates of ports, then CAS updates of them, then
deletes, then ports in transactions of 100. Each commit is what ``Database.create`` and the
OVSDB backend do on the caller's side and on the I/O thread's (the model, ``put_of``,
``plan_commit``, ``expect``, the transact's JSON, parsing and applying the update), and the
cyclic collector's work as it falls; not the socket, the group commit or the thread hand-offs.
Instructions per op are the difference between consecutive steps::

    python benchmarks/ovsdb_family_cg.py --a /path/to/main/src --b src --count 300
"""

from __future__ import annotations

import argparse
from pathlib import Path

from abrun import callgrind_total

WORKER = r"""
import json, sys, time, uuid
import orjson
from nbdb.families.ovsdb import OVN_BINDINGS, DatabaseSchema, Replica, build_mapping
from nbdb.families.ovsdb.ovn import OVN_NB_DATABASE as NB
from nbdb.families.ovsdb.planner import plan_commit
from nbdb.families.ovsdb.rows import VersionBook
from nbdb.models.shape import model_shapes
from nbdb.testing.ovsdb import find_ovn_nb_schema
from nbdb.bench.data import make_port
from nbdb.models import LogicalSwitch
from nbdb.writes import put_of

steps, count = sys.argv[1], int(sys.argv[2])
# The server's side, played from this checkout's nbdb/testing/ovsdb_play.py for both sides alike
# (and for a side whose src predates it).
play = {}
exec(compile(open(sys.argv[3]).read(), sys.argv[3], "exec"), play)
server_update = play["server_update"]
schema = DatabaseSchema.parse(json.loads(find_ovn_nb_schema().read_text()))
mapping = build_mapping({NB: schema}, {NB: OVN_BINDINGS}, model_shapes())
replica = Replica(mapping, VersionBook(), "cg")
replica.resync(NB, {})

def commit(ops):
    with replica.cond:
        plan = plan_commit(mapping, replica, ops, "%016x" % len(replica.records), now=time.time())
        replica.expect(plan.written)
    orjson.dumps({"method": "transact", "params": [NB, *plan.ops], "id": 1})  # the request
    updates = server_update(replica, NB, plan.ops)
    # The update as the wire brings it: bytes parsed, then applied.
    replica.apply(NB, orjson.loads(orjson.dumps(updates)))
    return plan

switch = LogicalSwitch(name="cg-switch", topic="tenant-0")
commit([put_of(switch, 0)[0]])
stored = []
if "c" in steps:
    for i in range(count):
        put, copy = put_of(make_port(switch, i, "tenant-0"), 0)
        commit([put])
        stored.append(copy)
if "l" in steps:
    # A list of the ports from the replica, as Database.list reads it (the records, then the codec's
    # decode into models), five times: instructions per object listed.
    from nbdb.codec import decode_each
    from nbdb.models.ovn import LogicalSwitchPort
    for _ in range(5):
        with replica.cond:
            records = replica.select(["LogicalSwitchPort"], None)
        assert len(decode_each(LogicalSwitchPort, records)) == len(stored)
if "u" in steps:
    for n, port in enumerate(stored):
        put, copy = put_of(port.replace(up=True), port.version)
        commit([put])
        stored[n] = copy
if "d" in steps:
    from nbdb.spi import Delete
    for port in stored:
        commit([Delete(port.nbdb_table, port.id, port.topic, port.version)])
if "t" in steps:
    for b in range(count // 100):
        commit([put_of(make_port(switch, 10**6 + b * 100 + i, "tenant-0"), 0)[0] for i in range(100)])
"""

PLAY = Path(__file__).resolve().parents[1] / "src" / "nbdb" / "testing" / "ovsdb_play.py"

STEPS = [("", None), ("c", "create"), ("cu", "update"), ("cud", "delete"), ("cudt", "txn100"), ("cl", "list")]
"""Each step's work is its difference from the step before, but ``list``'s from ``c`` (five lists of the
``--count`` ports created, per object listed)."""
_LISTS = 5


def _instructions(src: str, steps: str, count: int) -> int:
    return callgrind_total(src, WORKER, [steps or "-", str(count), str(PLAY)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, help="the first checkout's src/ (e.g. main's)")
    parser.add_argument("--b", required=True, help="the second checkout's src/")
    parser.add_argument("--count", type=int, default=300, help="ports per step (transactions: count // 100 of 100)")
    opts = parser.parse_args()
    totals = {side: [_instructions(src, steps, opts.count) for steps, _ in STEPS] for side, src in
              (("a", opts.a), ("b", opts.b))}  # fmt: skip
    print(f"instructions per op (count {opts.count}):  a | b   b/a")
    for n, (_steps, name) in enumerate(STEPS):
        if name is None:
            continue
        base, ops = (1, opts.count * _LISTS) if name == "list" else (n - 1, opts.count)
        per = {side: (totals[side][n] - totals[side][base]) / ops for side in totals}
        print(f"  {name:8s} {per['a']:12,.0f} | {per['b']:12,.0f}   {per['b'] / per['a']:.3f}")


if __name__ == "__main__":
    main()
