"""A/B of :meth:`Replica.apply` alone in instructions (callgrind): the monitor thread's work per update.

``ovsdb_family_cg.py`` measures a whole commit (plan, request, update), in which a change of a few
hundred instructions per update is lost in run-to-run noise of about 2 % (hash seeds, ids, the
collector's timing). Here the updates ovsdb-server would send for ``--count`` port creates, then CAS
updates of them, are made once (by the ``--a`` side, as JSON) and each side only parses and applies
them, with ``PYTHONHASHSEED=0``; instructions per update are the difference between steps::

    python benchmarks/ovsdb_apply_cg.py --a /path/to/main/src --b src --count 1000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from abrun import callgrind_total, env

SETUP = r"""
import json, sys
from nbdb.families.ovsdb import OVN_BINDINGS, DatabaseSchema, Replica, build_mapping
from nbdb.families.ovsdb.ovn import OVN_NB_DATABASE as NB
from nbdb.families.ovsdb.rows import VersionBook
from nbdb.models.shape import model_shapes
from nbdb.testing.ovsdb import find_ovn_nb_schema
schema = DatabaseSchema.parse(json.loads(find_ovn_nb_schema().read_text()))
mapping = build_mapping({NB: schema}, {NB: OVN_BINDINGS}, model_shapes())
replica = Replica(mapping, VersionBook(), "cg")
replica.resync(NB, {})
"""

MAKE = (
    SETUP
    + r"""
import time
from nbdb.families.ovsdb.planner import plan_commit
from nbdb.bench.data import make_port
from nbdb.models import LogicalSwitch
from nbdb.writes import put_of
play = {}
exec(compile(open(sys.argv[2]).read(), sys.argv[2], "exec"), play)
out = {"switch": None, "creates": [], "updates": []}
def commit(ops):
    with replica.cond:
        plan = plan_commit(mapping, replica, ops, "%016x" % len(replica.records), now=time.time())
        replica.expect(plan.written)
    updates = json.loads(json.dumps(play["server_update"](replica, NB, plan.ops)))
    replica.apply(NB, updates)
    return updates
switch = LogicalSwitch(name="cg-switch", topic="tenant-0")
out["switch"] = commit([put_of(switch, 0)[0]])
stored = []
for i in range(int(sys.argv[1])):
    put, copy = put_of(make_port(switch, i, "tenant-0"), 0)
    out["creates"].append(commit([put]))
    stored.append(copy)
for port in stored:
    out["updates"].append(commit([put_of(port.replace(up=True), port.version)[0]]))
json.dump(out, open(sys.argv[3], "w"))
"""
)

WORKER = (
    SETUP
    + r"""
steps = sys.argv[1]
data = json.load(open(sys.argv[2]))
replica.apply(NB, data["switch"])
for name, step in (("creates", "c"), ("updates", "u")):
    if step in steps:
        for update in data[name]:
            replica.apply(NB, update)
"""
)

PLAY = Path(__file__).resolve().parents[1] / "src" / "nbdb" / "testing" / "ovsdb_play.py"
STEPS = ["-", "c", "cu"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, help="the first checkout's src/ (e.g. main's)")
    parser.add_argument("--b", required=True, help="the second checkout's src/")
    parser.add_argument("--count", type=int, default=1000, help="ports created, then updated")
    opts = parser.parse_args()
    os.environ["PYTHONHASHSEED"] = "0"
    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "updates.json")
        argv = [sys.executable, "-c", MAKE, str(opts.count), str(PLAY), data]
        subprocess.run(argv, env=env(opts.a), check=True, timeout=900)
        totals = {side: [callgrind_total(src, WORKER, [steps, data]) for steps in STEPS] for side, src in
                  (("a", opts.a), ("b", opts.b))}  # fmt: skip
    print(f"instructions per update applied (count {opts.count}):  a | b   b/a")
    for n, name in ((1, "create"), (2, "update")):
        per = {side: (totals[side][n] - totals[side][n - 1]) / opts.count for side in totals}
        print(f"  {name:8s} {per['a']:12,.0f} | {per['b']:12,.0f}   {per['b'] / per['a']:.4f}")


if __name__ == "__main__":
    main()
