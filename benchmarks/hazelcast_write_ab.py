"""A/B of Hazelcast single writes: client and member CPU per commit and rates, nbdb at two checkouts in turns.

The quick bench's nbdb/raw of single writes on a shared 2-core machine moves by ±20 % between
runs; this measures, beside the rates, what each side costs per operation: the client
process's CPU (``time.process_time``, the reactor thread included), the member's CPU (the
JVM's utime + stime from ``/proc``), the member's context switches (every JVM thread's, from
``/proc``: each map operation a commit task runs is a hand-off between the task's thread and a
partition thread, so this count follows the member's work and, unlike the CPU times, barely
moves with the load) and the client's invocations per commit::

    python benchmarks/hazelcast_write_ab.py --a /path/to/main/src --b src --rounds 6 --count 500

Each round runs, in a rotating order, one process per side against a throwaway member with
nbdb's member-side jar, as the harness deploys it: ``--count`` single creates of ports through
nbdb, as many CAS updates and deletes, then the same through the bench's raw Hazelcast client.
Both sides share one member unless ``--a-home``/``--b-home`` give a side its own
``NBDB_HAZELCAST_HOME`` (to compare member jars: a directory holding ``VERSION`` and ``lib/``
of the installed home and ``nbdb/nbdb-hazelcast-member.jar`` built from that side's
``java/hazelcast-member`` with ``mvn package``). Printed per round: µs per operation (client
CPU, member CPU, wall) and the load average; at the end the medians of each side, with
nbdb/raw of each side's rates.
"""

from __future__ import annotations

import os
import statistics
import uuid
from contextlib import ExitStack

from abrun import ab_parser, in_turns, loadavg, run_json

HOME = "NBDB_HAZELCAST_HOME"

WORKER = r"""
import json, os, sys, time
import nbdb
from nbdb.bench.data import make_port, port_doc
from nbdb.bench.raw.hazelcast import Client
from nbdb.bench.workloads.common import PORT, populate, populate_raw
url, ns, count, pid = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
out = {}
def member_cpu():
    fields = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) * 1e6 / 100  # utime + stime, in µs (USER_HZ 100)
def member_switches():
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            for line in open(f"/proc/{pid}/task/{task}/status"):
                field, _, value = line.partition(":")
                if field.endswith("ctxt_switches"):  # voluntary and nonvoluntary
                    total += int(value)
        except OSError:  # a thread that ended
            pass
    return total
def phase(name, body, n, invocations=None):
    s, m, c, w = member_switches(), member_cpu(), time.process_time_ns(), time.perf_counter_ns()
    before = invocations() if invocations else 0
    body()
    out[name + " client"] = (time.process_time_ns() - c) / n / 1e3
    out[name + " member"] = (member_cpu() - m) / n
    out[name + " switches"] = (member_switches() - s) / n
    out[name + " wall"] = (time.perf_counter_ns() - w) / n / 1e3
    if invocations:
        out[name + " calls"] = (invocations() - before) / n
with nbdb.connect(url, namespace=ns) as db:
    # Instrumentation only: every request the client sends passes here (the client has no public counter).
    service = db.backend._client._invocation_service
    sent = [0]
    invoke = service.invoke
    def counted(invocation):
        sent[0] += 1
        return invoke(invocation)
    service.invoke = counted
    switch = populate(db, 0)[0]
    [db.create(make_port(switch, 10_000 + i)) for i in range(50)]  # warm-up
    ports = []
    calls = lambda: sent[0]
    phase("nbdb create", lambda: ports.extend(db.create(make_port(switch, i)) for i in range(count)), count, calls)
    def update():
        for i, p in enumerate(ports):
            ports[i] = db.update(p.replace(up=True, external_ids={**p.external_ids, "neutron:revision_number": "2"}))
    phase("nbdb update", update, count, calls)
    phase("nbdb delete", lambda: [db.delete(p) for p in ports], count, calls)
client = Client(url, f"{ns}-raw")
sid, _ = populate_raw(client, 0)
for i in range(50):
    doc = port_doc(sid, 10_000 + i)
    client.create(client.key(PORT, doc["id"]), json.dumps(doc).encode())
docs, versions = [], []
def create():
    for i in range(count):
        doc = port_doc(sid, i)
        versions.append(client.create(client.key(PORT, doc["id"]), json.dumps(doc).encode()))
        docs.append(doc)
phase("raw create", create, count)
def update():
    for i, doc in enumerate(docs):
        new = {**doc, "up": True, "external_ids": {**doc["external_ids"], "neutron:revision_number": "2"}}
        versions[i] = client.update(client.key(PORT, doc["id"]), json.dumps(new).encode(), versions[i])
        docs[i] = new
phase("raw update", update, count)
phase("raw delete", lambda: [client.delete(client.key(PORT, d["id"]), versions[i]) for i, d in enumerate(docs)], count)
client.cleanup()
client.close()
print(json.dumps(out))
"""


def main() -> None:
    parser = ab_parser(__doc__, 500)
    parser.add_argument(
        "--a-home", help="NBDB_HAZELCAST_HOME of side a's member (its nbdb jar); default: the installed"
    )
    parser.add_argument("--b-home", help="the same for side b (e.g. one with the jar built from b's java/)")
    opts = parser.parse_args()
    from nbdb.testing.servers import start_server

    sides = {"a": opts.a, "b": opts.b}
    homes = {"a": opts.a_home, "b": opts.b_home}
    rows: dict[str, list[dict[str, float]]] = {"a": [], "b": []}
    with ExitStack() as stack:
        servers = {}
        for side in "ab":
            # Each side's own member when the jars differ; one member for both when they are the same.
            if side == "b" and homes["b"] == homes["a"]:
                servers["b"] = servers["a"]
                continue
            saved = os.environ.get(HOME)
            if homes[side]:
                os.environ[HOME] = homes[side]
            try:
                servers[side] = stack.enter_context(start_server("hazelcast"))
            finally:
                os.environ.pop(HOME, None)
                if saved is not None:
                    os.environ[HOME] = saved
        for n, side in in_turns(opts.rounds):
            server = servers[side]
            ns = f"ab-{uuid.uuid4().hex[:8]}"
            got = run_json(sides[side], WORKER, [server.url, ns, str(opts.count), str(server.members[0].pid)])
            rows[side].append(got)
            shown = " ".join(
                f"{k.replace(' ', '_')}={v:.0f}" for k, v in got.items() if k.endswith(("client", "member", "wall"))
            )
            print(f"round {n} {side} load {loadavg()}: {shown}", flush=True)
    print("medians, µs per operation (calls: the client's invocations per commit; switches: the member's")
    print("context switches per operation): a | b   (nbdb/raw rate: a | b)")
    for key in rows["a"][0]:
        a, b = (statistics.median(r[key] for r in rows[side]) for side in "ab")
        line = f"  {key:20s} {a:8.2f} | {b:8.2f}   b/a {b / a if a else float('nan'):.3f}"
        if key.startswith("nbdb") and key.endswith("wall"):
            raw = key.replace("nbdb", "raw")
            ratios = (statistics.median(r[raw] / r[key] for r in rows[side]) for side in "ab")
            line += "   ({:.2f} | {:.2f})".format(*ratios)
        print(line)


if __name__ == "__main__":
    main()
