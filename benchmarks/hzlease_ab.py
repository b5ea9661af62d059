"""A/B of a Hazelcast list that ends within its lease (the common case): nbdb at two checkouts, same server.

Issue 12: a list that outlasts ``commit_lease`` is checked (``head`` and the next log entry) and read
again or refused, never returned torn; one that ends in time must pay nothing for it (its unlock,
sent before as now, is what tells). One namespace of ``--count`` ports on one switch; per round and
side (alternating), one process times ``db.list(LogicalSwitchPort)`` (median of ``--lists``) and the
client's CPU per list::

    python benchmarks/hzlease_ab.py --a /path/to/main/src --b src --count 2000 --rounds 6
"""

from __future__ import annotations

from abrun import ab_parser, ab_rounds, print_medians

WORKER = r"""
import json, statistics, sys, time
import nbdb
from nbdb.models import LogicalSwitchPort
url, ns, lists = sys.argv[1], sys.argv[2], int(sys.argv[3])
with nbdb.connect(url, namespace=ns) as db:
    db.list(LogicalSwitchPort)
    took, cpu = [], time.process_time()
    for _ in range(lists):
        t = time.perf_counter(); n = len(db.list(LogicalSwitchPort)); took.append((time.perf_counter() - t) * 1000)
    cpu = (time.process_time() - cpu) / lists * 1000
print(json.dumps({"ports": n, "list_ms": statistics.median(took), "cpu_ms": cpu}))
"""


def main() -> None:
    parser = ab_parser(__doc__, 2000)
    parser.add_argument("--lists", type=int, default=30)
    args = parser.parse_args()

    import nbdb
    from nbdb.models import LogicalSwitch, LogicalSwitchPort
    from nbdb.testing.servers import start_server

    server = start_server("hazelcast")
    try:
        namespace = "hzlease-ab"
        with nbdb.connect(server.url, namespace=namespace) as db:
            switch = db.create(LogicalSwitch(name="ls"))
            for start in range(0, args.count, 500):
                with db.transaction() as txn:
                    for i in range(start, min(args.count, start + 500)):
                        txn.create(LogicalSwitchPort(name=f"p{i}", switch=switch.id))
        rows = ab_rounds({"a": args.a, "b": args.b}, args.rounds, WORKER, [server.url, namespace, str(args.lists)])
        print_medians(rows)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
