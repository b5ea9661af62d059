"""A/B of the fan-out path on etcd, in turns: etcd's part and nbdb's part of commit-to-callback.

The ``fanout`` workload's shape (one writer paced at 200 updates/s, N caches of one reading
``Database``), with one more time stamp: when the watch response reaches the client (the
gRPC reader thread starting to parse it, ``wire.parse_watch``). So each event's latency splits
into "start -> client" (the commit, etcd's raft apply and fsync, gRPC) and "client -> callback"
(nbdb's own: the hand-over to the shared watch, the replica's apply, the delivery thread)::

    python benchmarks/etcd_fanout_hops_ab.py --a /path/to/main/src --b src --caches 1,10,50 --rounds 4
    python benchmarks/etcd_fanout_hops_ab.py --a ... --b ... --url etcd://127.0.0.1:23791  # an etcd on tmpfs

Without ``--url`` an etcd is spawned (data on the disk). Each round runs one fresh process per
side and cache count, in an order that flips every round; the load average is printed with
every line, and at the end the median over rounds of each side's p50 and p99.
"""

from __future__ import annotations

import argparse
import statistics

from abrun import loadavg, run_json

WORKER = r"""
import json, sys, time
from time import perf_counter_ns as now
import nbdb
from nbdb.backends.etcd import client as etcd_client, wire
from nbdb.bench.workloads import fanout
from nbdb.bench.workloads.common import populate
from nbdb.models.ovn import LogicalSwitchPort
url, caches, writes, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
arrived = {}
parse = wire.parse_watch
def stamped(raw):
    t = now()
    response = parse(raw)
    if response.events:
        arrived[response.events[-1].kv.mod_revision] = t
    return response
etcd_client.wire.parse_watch = stamped  # the reader thread's call, on both sides
stamps = [[] for _ in range(caches)]
def stamping(record):
    def on_change(ev):
        new = ev.new
        if new is not None and "seq" in new.external_ids:
            record((new.external_ids["seq"], ev.revision, now()))
    return on_change
namespace = f"hops{time.time_ns()}"
with nbdb.connect(url, namespace=namespace) as db:
    _, ports = populate(db, 100)
    reader = nbdb.connect(url, namespace=namespace)
    followers = [reader.cache(LogicalSwitchPort, on_change=stamping(s.append)) for s in stamps]
    for cache in followers:
        cache.wait_synced(60)
    sent, _ = fanout._write_paced(db, ports, writes, rate, now)  # the workload's own writer
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(len(s) < writes for s in stamps):
        time.sleep(0.005)
    reader.close()
total, own, arrive = [], [], []
for per in stamps:
    for seq, revision, t in per:
        total.append(t - sent[seq])
        if revision in arrived:
            own.append(t - arrived[revision])
            arrive.append(arrived[revision] - sent[seq])
def q(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p * len(v)))] / 1e6
print(json.dumps({"p50": q(total, .5), "p99": q(total, .99), "arr50": q(arrive, .5), "arr99": q(arrive, .99),
                  "own50": q(own, .5), "own99": q(own, .99), "missing": writes * caches - len(total)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", required=True, help="src/ of the base checkout (main)")
    parser.add_argument("--b", required=True, help="src/ of the checkout under test")
    parser.add_argument("--url", help="an etcd to use (default: spawn one)")
    parser.add_argument("--caches", default="1,10,50")
    parser.add_argument("--writes", type=int, default=1_000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    server = None
    url = args.url
    if url is None:
        from nbdb.testing.servers import start_server

        server = start_server("etcd")
        url = server.url
    try:
        print(f"load average before: {loadavg()}", flush=True)
        sides = {"a": args.a, "b": args.b}
        counts = [int(c) for c in args.caches.split(",")]
        results: dict[tuple[int, str], list[dict[str, float]]] = {}
        for round_ in range(args.rounds):
            order = "ab" if round_ % 2 == 0 else "ba"
            for caches in counts:
                for side in order:
                    g = run_json(sides[side], WORKER, [url, str(caches), str(args.writes), str(args.rate)])
                    results.setdefault((caches, side), []).append(g)
                    print(
                        f"round {round_} caches {caches:3} {side}: total p50 {g['p50']:6.2f} p99 {g['p99']:7.2f}"
                        f" | start->client p50 {g['arr50']:6.2f} p99 {g['arr99']:7.2f}"
                        f" | client->callback p50 {g['own50']:6.3f} p99 {g['own99']:6.2f}"
                        f" | missing {g['missing']:.0f}  load {loadavg()}",
                        flush=True,
                    )
        print(f"load average after: {loadavg()}")
        for caches in counts:
            line = [f"caches {caches:3} median over rounds:"]
            for side in "ab":
                runs = results[(caches, side)]

                def med(key: str, runs: list[dict[str, float]] = runs) -> float:
                    return statistics.median(r[key] for r in runs)

                line.append(
                    f"{side} total {med('p50'):.2f}/{med('p99'):.2f}  start->client {med('arr50'):.2f}/"
                    f"{med('arr99'):.2f}  client->callback {med('own50'):.3f}/{med('own99'):.2f} ms"
                )
            print("  ".join(line))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
