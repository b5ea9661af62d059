"""A/B of etcd single writes and lists: the client's CPU per operation, nbdb at two checkouts in turns.

The quick bench's ratios on a shared 2-core machine move by ±20 % between runs, so this
measures what is steadier, the client process's CPU (``time.process_time``: every thread,
gRPC's own included) per operation, beside the rates::

    python benchmarks/etcd_cpu_ab.py --a /path/to/main/src --b src --rounds 6 --count 1000

Each round runs, in a rotating order, one process per side against one throwaway etcd:
``--count`` single creates of ports through nbdb, as many CAS updates and deletes, and
three lists of ``--list`` ports; then the same through the bench's ``raw+contract`` client
(the same server work by hand, with that checkout's wire codec), and through the plain raw
client. Printed per round: CPU µs per operation (per object for lists) and the load
average; at the end the medians of each side, and nbdb's CPU over raw+contract's.

At a load of 10 the process CPU of one side moves by ±30 % between rounds, more than a
cut of 10 µs per commit. With ``--replayed N`` each round also measures nbdb's own Python
per update and delete without the server's turn: the client's call gives back the reply
etcd sent to one real update (a successful transaction), so what is timed (the calling
thread's CPU) is planning, encoding, parsing and the stored copies, without gRPC.
"""

from __future__ import annotations

import statistics
import uuid

from abrun import ETCD_REPLAYED, ab_parser, in_turns, loadavg, run_json

WORKER = r"""
import json, sys, time
import nbdb
from nbdb.bench.data import make_port, port_doc
from nbdb.bench.raw.etcd import Client, ContractClient
from nbdb.bench.workloads.common import PORT, populate, populate_raw
from nbdb.models.ovn import LogicalSwitchPort
url, ns, count, listed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
out = {}
def phase(name, body, n):
    c = time.process_time_ns()
    body()
    out[name] = (time.process_time_ns() - c) / n / 1e3
with nbdb.connect(url, namespace=ns) as db:
    switch = populate(db, listed)[0]
    ports = []
    phase("nbdb create", lambda: ports.extend(db.create(make_port(switch, listed + i)) for i in range(count)), count)
    def update():
        for i, p in enumerate(ports):
            ports[i] = db.update(p.replace(up=True, external_ids={**p.external_ids, "neutron:revision_number": "2"}))
    phase("nbdb update", update, count)
    phase("nbdb delete", lambda: [db.delete(p) for p in ports], count)
    phase("nbdb list", lambda: [db.list(LogicalSwitchPort) for _ in range(3)], 3 * listed)
for cls, label in ((ContractClient, "contract"), (Client, "raw")):
    client = cls(url, f"{ns}-{label}")
    sid, _ = populate_raw(client, listed)
    docs, versions = [], []
    def create():
        for i in range(count):
            doc = port_doc(sid, listed + i)
            versions.append(client.create(client.key(PORT, doc["id"]), json.dumps(doc).encode()))
            docs.append(doc)
    phase(f"{label} create", create, count)
    def update():
        for i, doc in enumerate(docs):
            new = {**doc, "up": True, "external_ids": {**doc["external_ids"], "neutron:revision_number": "2"}}
            versions[i] = client.update(client.key(PORT, doc["id"]), json.dumps(new).encode(), versions[i])
            docs[i] = new
    phase(f"{label} update", update, count)
    def delete():
        for i, doc in enumerate(docs):
            client.delete(client.key(PORT, doc["id"]), versions[i])
    phase(f"{label} delete", delete, count)
    def scan():
        for _ in range(3):
            [json.loads(v) for v in client.scan(client.prefix(PORT))]
    phase(f"{label} list", scan, 3 * listed)
    client.cleanup()
    client.close()
print(json.dumps(out))
"""

REPLAYED = (
    r"""
import json, sys, time
import nbdb
"""
    + ETCD_REPLAYED
    + r"""
url, ns, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = {}
def phase(name, body):
    c = time.thread_time_ns()
    body()
    out[name] = (time.thread_time_ns() - c) / count / 1e3
with nbdb.connect(url, namespace=ns) as db:
    ports, restore = replayed_ports(db, count)
    new = [p.replace(up=True, external_ids={**p.external_ids, "neutron:revision_number": "2"}) for p in ports]
    phase("update python", lambda: [db.update(p) for p in new])
    phase("delete python", lambda: [db.delete(p) for p in ports])
    restore()
print(json.dumps(out))
"""
)


def main() -> None:
    parser = ab_parser(__doc__, 1000)
    parser.add_argument("--list", type=int, default=2000, help="ports listed (the quick bench's list size)")
    parser.add_argument("--replayed", type=int, default=0, help="also this many updates and deletes, replayed")
    opts = parser.parse_args()
    from nbdb.testing.servers import start_server

    sides = {"a": opts.a, "b": opts.b}
    rows: dict[str, list[dict[str, float]]] = {"a": [], "b": []}
    with start_server("etcd") as server:
        for n, side in in_turns(opts.rounds):
            ns = f"ab-{uuid.uuid4().hex[:8]}"
            got = run_json(sides[side], WORKER, [server.url, ns, str(opts.count), str(opts.list)])
            if opts.replayed:
                got.update(run_json(sides[side], REPLAYED, [server.url, f"{ns}-r", str(opts.replayed)]))
            rows[side].append(got)
            shown = " ".join(f"{k.replace(' ', '_')}={v:.1f}" for k, v in got.items())
            print(f"round {n} {side} load {loadavg()}: {shown}", flush=True)
    print("medians, CPU µs per operation (per object for list): a | b   (nbdb / raw+contract: a | b)")
    for key in rows["a"][0]:
        a, b = (statistics.median(r[key] for r in rows[side]) for side in "ab")
        line = f"  {key:16s} {a:8.1f} | {b:8.1f}   b/a {b / a:.3f}"
        if key.startswith("nbdb"):
            contract = f"contract {key.split()[1]}"
            ratios = (statistics.median(r[key] / r[contract] for r in rows[side]) for side in "ab")
            line += "   ({:.2f} | {:.2f})".format(*ratios)
        print(line)


if __name__ == "__main__":
    main()
