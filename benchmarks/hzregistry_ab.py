"""A/B of a Hazelcast one-table list beside a large topic registry: nbdb at two checkouts, same server.

The registry (``p/<topic>`` keys of ``kv``) only grows. A client reads it before a scan: waited
for by its first scan, and again each second it scans. Each ``--topics`` count gets a namespace of
100 routers (no topic) and that many registry keys; per round and side, one process times a
fresh client's first list (median of 5 clients) and the client's CPU per second while it lists
every 50 ms for 3 s::

    python benchmarks/hzregistry_ab.py --a /path/to/main/src --b src --topics 300,10000,50000 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

WORKER = r"""
import json, statistics, sys, time
import nbdb
from nbdb.models.ovn import LogicalRouter
url, ns = sys.argv[1], sys.argv[2]
first = []
for _ in range(5):
    with nbdb.connect(url, namespace=ns) as db:
        t = time.perf_counter(); n = len(db.list(LogicalRouter)); first.append((time.perf_counter() - t) * 1000)
with nbdb.connect(url, namespace=ns) as db:
    db.list(LogicalRouter)
    c = time.process_time(); t = time.perf_counter(); lists = 0
    while time.perf_counter() - t < 3.0:
        db.list(LogicalRouter); lists += 1; time.sleep(0.05)
    cpu = (time.process_time() - c) / (time.perf_counter() - t) * 1000
print(json.dumps({"routers": n, "first_ms": statistics.median(first), "cpu_ms_per_s": cpu, "lists": lists}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--a", required=True)
    parser.add_argument("--b", required=True)
    parser.add_argument("--topics", default="300,10000,50000")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import nbdb
    from nbdb.backends.hazelcast import HazelcastBackend
    from nbdb.backends.hazelcast._records import encode_kv
    from nbdb.models.ovn import LogicalRouter
    from nbdb.testing.servers import start_server

    print("load", os.getloadavg())
    server = start_server("hazelcast")
    try:
        for topics in (int(t) for t in args.topics.split(",")):
            namespace = f"hzregistry-{topics}"
            with nbdb.connect(server.url, namespace=namespace) as db:
                with db.transaction() as txn:
                    for i in range(100):
                        txn.create(LogicalRouter(name=f"lr-{i}"))
                backend = db.backend
                assert isinstance(backend, HazelcastBackend)
                backend._kv.put_all({backend.layout.topic_mark(f"t-{i}"): encode_kv(1, 0, b"") for i in range(topics)})
            for round in range(args.rounds):
                for side, src in (("a", args.a), ("b", args.b)):
                    out = subprocess.run(
                        [sys.executable, "-c", WORKER, server.url, namespace],
                        env={**os.environ, "PYTHONPATH": src},
                        capture_output=True,
                        text=True,
                        timeout=300,
                        check=True,
                    )
                    print(topics, round, side, json.loads(out.stdout), flush=True)
    finally:
        server.stop()
    print("load", os.getloadavg())


if __name__ == "__main__":
    main()
