"""What the registry's dead keys cost an etcd list, against what checking a candidate topic costs (_PRUNE_FROM).

A list of one table checks the registered topics it found none of the table's keys under only
from 32 of them on (``backend._PRUNE_FROM``), so up to 31 dead ``p/<topic>`` keys stay. This
measures, on one spawned etcd on loopback, in one process (``--src``: the checkout to import):

* ``list``: ``db.list(LogicalRouter)`` by one long-running client (median of ``--lists``), in a
  namespace of one topic of 10 routers, and in one where 31 more topics each got a router that was
  deleted again (31 dead registry keys, never pruned: below the threshold). Alternating, per round.
* ``check``: the read a prune check sends per candidate (one key of ``o/<topic>/``, keys only,
  at a revision), for an empty topic and for one of ``--ports`` ports (etcd walks every key of the
  range to answer it). Median of 30 per round.

    python benchmarks/etcd_prune_from.py --src src --rounds 3
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", default="src")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lists", type=int, default=300)
    parser.add_argument("--ports", type=int, default=10_000)
    args = parser.parse_args()
    sys.path.insert(0, os.path.abspath(args.src))

    import nbdb
    from nbdb.backends.etcd import wire
    from nbdb.bench.workloads.common import populate
    from nbdb.models.ovn import LogicalRouter
    from nbdb.testing.servers import start_server

    print("load average before:", os.getloadavg()[0])
    server = start_server("etcd")
    try:
        url = server.url
        for ns, dead in (("dead0", 0), ("dead31", 31)):
            with nbdb.connect(url, namespace=ns) as db:
                with db.transaction() as txn:
                    for i in range(10):
                        txn.create(LogicalRouter(name=f"lr-{i}", topic="live"))
                    gone = [txn.create(LogicalRouter(name=f"x-{i}", topic=f"gone-{i}")) for i in range(dead)]
                with db.transaction() as txn:
                    for router in gone:
                        txn.delete(LogicalRouter, router.id)
        with nbdb.connect(url, namespace="walk") as db:
            populate(db, args.ports, topic="big")
        results: dict[str, list[float]] = {}
        clients = {ns: nbdb.connect(url, namespace=ns) for ns in ("dead0", "dead31", "walk")}
        try:
            for db in clients.values():
                for _ in range(20):
                    db.list(LogicalRouter)  # warm
            marks = clients["dead31"].backend.layout.topic_marks  # type: ignore[attr-defined]
            assert len(clients["dead31"].backend.range_keys([marks])[0]) == 32  # type: ignore[attr-defined]
            for round_ in range(args.rounds):
                order = ["dead0", "dead31"] if round_ % 2 == 0 else ["dead31", "dead0"]
                for ns in order:
                    db = clients[ns]
                    times = []
                    for _ in range(args.lists):
                        t0 = time.perf_counter_ns()
                        assert len(db.list(LogicalRouter)) == 10
                        times.append((time.perf_counter_ns() - t0) / 1e6)
                    results.setdefault(f"list, {ns}", []).append(statistics.median(times))
                    gc.collect()
                backend = clients["walk"].backend
                objects = backend.layout.objects  # type: ignore[attr-defined]
                revision = backend.revision_now()  # type: ignore[attr-defined]
                for topic, label in (("empty", "check, empty topic"), ("big", f"check, topic of {args.ports} ports")):
                    start = f"{objects}{topic}/".encode()
                    read = wire.request_range(start, wire.prefix_end(start), limit=1, revision=revision, keys_only=True)
                    request = wire.txn_request([], [read])
                    times = []
                    for _ in range(30):
                        t0 = time.perf_counter_ns()
                        backend.client.txn(request, write=False)  # type: ignore[attr-defined]
                        times.append((time.perf_counter_ns() - t0) / 1e6)
                    results.setdefault(label, []).append(statistics.median(times))
                print(f"round {round_ + 1}:", {k: round(v[-1], 3) for k, v in results.items()}, flush=True)
        finally:
            for db in clients.values():
                db.close()
        print("medians of the rounds (ms):")
        for label, values in results.items():
            print(f"  {label}: {statistics.median(values):.3f}")
    finally:
        server.stop()
        print("load average after:", os.getloadavg()[0])


if __name__ == "__main__":
    main()
