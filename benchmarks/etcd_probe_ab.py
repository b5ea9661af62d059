"""A/B of a one-table list across 40 topics on etcd when a router's id starts with ``7fff`` (the first pages' probe).

``EtcdBackend._first_pages`` reads a table as a large one (its first step, then its rest in 16 sub-ranges one
request after another) when one of its ids starts with ``7fff``; a random id does once in 65,536, so a list of
40 one-router topics met one about once in 1,600 (a CI run's ``assert 20 <= 4``). Each side in its own process,
in turns: one namespace of 40 topics (a router and a switch each; ``--probed``: the first router's id in
``7fff…``, else none), then ``db.list(LogicalRouter)`` ``--count`` times: the median ms and the requests a list
sent (the list's own thread's)::

    python benchmarks/etcd_probe_ab.py --a /tmp/pre/src --b src --rounds 6 --probed
"""

from __future__ import annotations

import argparse
import statistics

from abrun import ab_parser, ab_rounds

WORKER = r"""
import json, statistics, sys, threading, time, uuid
import nbdb
from nbdb.models import LogicalSwitch
from nbdb.models.ovn import LogicalRouter
url, count, probed = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
with nbdb.connect(url, namespace=f"probe-{uuid.uuid4().hex[:10]}") as db:
    with db.transaction() as txn:
        for i in range(40):
            while (id := uuid.uuid4()).hex.startswith("7fff"):
                pass
            if probed and i == 0:
                id = uuid.UUID("7fff" + id.hex[4:])
            txn.create(LogicalRouter(id=id, name=f"lr-{i}", topic=f"t-{i}"))
            txn.create(LogicalSwitch(name=f"ls-{i}", topic=f"t-{i}"))
    client, real, mine, calls = db.backend.client, db.backend.client.call, threading.current_thread(), []
    def call(method, request, what, **kwargs):
        if threading.current_thread() is mine:  # not the reaper's passes
            calls.append(what)
        return real(method, request, what, **kwargs)
    client.call = call
    took = []
    for _ in range(count):
        calls.clear()
        began = time.perf_counter()
        assert len(db.list(LogicalRouter)) == 40
        took.append((time.perf_counter() - began) * 1e3)
    print(json.dumps({"ms": statistics.median(took), "requests": len(calls)}))
"""


def main() -> None:
    parser = ab_parser(__doc__, 40)
    parser.add_argument("--probed", action="store_true", help="the first router's id starts with 7fff")
    parser.add_argument("--url", help="an etcd URL (default: a server started for the run)")
    args = parser.parse_args()
    if args.url:
        run(args, args.url)
        return
    from nbdb.testing.fixtures import shared_server

    with shared_server("etcd") as server:
        run(args, server.url)


def run(args: argparse.Namespace, url: str) -> None:
    sides = {"a": args.a, "b": args.b}
    rows = ab_rounds(sides, args.rounds, WORKER, [url, str(args.count), "1" if args.probed else "0"])
    for side, got in sorted(rows.items()):
        ms = statistics.median(r["ms"] for r in got)
        requests = sorted({r["requests"] for r in got})
        print(f"{side}: {ms:.2f} ms a list (the median of the rounds' medians), requests a list {requests}")


if __name__ == "__main__":
    main()
