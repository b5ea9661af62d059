"""A/B/C of a one-table list and a three-table cache load across many topics on etcd (small data), or ``--backend``.

Review of 086942d (issue 13): a list of a few tables with no topic filter reads each table under each
topic; on etcd it sent a probe per gap of the topic registry and a range per topic, one after another.
Each namespace ``m<T>`` holds T topics of 1 router, 1 switch and 3 ports::

    python benchmarks/manytopics_ab.py --sides pre=/tmp/pre/src,merge=/tmp/merge/src,fix=src --topics 10,200
    python benchmarks/manytopics_ab.py --sides a=/work/main/src,b=src --backend redis --topics 2000 --query batch=10

Per round (sides in a rotating order) one process per side times ``db.list(LogicalRouter)`` and a cold
``db.cache([LogicalRouter, LogicalSwitch, LogicalSwitchPort])`` load, best of 3; medians at the end.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from urllib.parse import parse_qsl

from abrun import env, loadavg, run_json

WORKER = r"""
import gc, json, sys
from time import perf_counter_ns as now
url, ns, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
import nbdb
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.models.ovn import LogicalRouter
best_list = best_load = float("inf")
for _ in range(repeat):
    gc.collect()
    with nbdb.connect(url, namespace=ns) as db:
        t0 = now(); got = db.list(LogicalRouter); t1 = now()
    with nbdb.connect(url, namespace=ns) as db:
        t2 = now()
        cache = db.cache([LogicalRouter, LogicalSwitch, LogicalSwitchPort]); assert cache.wait_synced(600)
        t3 = now(); n = len(cache); cache.close()
    best_list = min(best_list, (t1 - t0) / 1e6); best_load = min(best_load, (t3 - t2) / 1e6)
print(json.dumps({"list_ms": best_list, "load_ms": best_load, "n": n, "routers": len(got)}))
"""

FILL = r"""
import sys
url, ns, topics = sys.argv[1], sys.argv[2], int(sys.argv[3])
import nbdb
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.models.ovn import LogicalRouter
with nbdb.connect(url, namespace=ns) as db:
    for t in range(topics):
        with db.transaction() as txn:
            txn.create(LogicalRouter(name=f"lr-{t}", topic=f"t-{t}"))
            sw = txn.create(LogicalSwitch(name=f"ls-{t}", topic=f"t-{t}"))
            for p in range(3):
                txn.create(LogicalSwitchPort(name=f"p-{t}-{p}", switch=sw.id, topic=f"t-{t}"))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sides", required=True, help="name=src,... (the last one fills the store)")
    parser.add_argument("--topics", default="10,200")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", default="etcd", help="the server kind, options as a query (hazelcast?heap=1g)")
    parser.add_argument(
        "--query", default="", help="options the workers connect with (redis: batch=10 pages the names)"
    )
    args = parser.parse_args()
    sides = dict(item.split("=", 1) for item in args.sides.split(","))
    counts = [int(x) for x in args.topics.split(",")]
    from nbdb.testing.servers import start_server

    kind, _, query = args.backend.partition("?")
    server = start_server(kind, **dict(parse_qsl(query)))
    try:
        url = str(server.url)
        read_url = url + ("&" if "?" in url else "?") + args.query if args.query else url
        for t in counts:
            subprocess.run(
                [sys.executable, "-c", FILL, url, f"m{t}", str(t)], env=env(list(sides.values())[-1]), check=True
            )
        print(f"load average before: {loadavg().split()}", flush=True)
        results: dict[tuple[int, str], list[dict[str, float]]] = {}
        names = list(sides)
        for round_ in range(args.rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for t in counts:
                for side in order:
                    got = run_json(sides[side], WORKER, [read_url, f"m{t}", "3"])
                    results.setdefault((t, side), []).append(got)
                    print(f"round {round_} topics {t:4} {side:8} {got}", flush=True)
        print(f"load average after: {loadavg().split()}")
        for t in counts:
            for side in names:
                got = results[(t, side)]
                print(
                    f"topics {t:4} {side:8} list {statistics.median(g['list_ms'] for g in got):8.2f} ms  "
                    f"3-table load {statistics.median(g['load_ms'] for g in got):8.2f} ms"
                )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
