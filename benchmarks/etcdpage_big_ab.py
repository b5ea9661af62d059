"""A/B of a list in pages through a few large topics on etcd (a page's batch of prefixes, issue 13).

etcd answers a range by walking every key of it (it counts them), whatever its limit: a page that reads
its next prefixes together walks each of them whole, though the first one fills the page. A namespace of
``--topics`` topics of ``--routers`` routers each; ``db.list(LogicalRouter, limit=500)`` page after page
to the end, best of 3, each side in its own process, alternating (abrun.in_turns)::

    python benchmarks/etcdpage_big_ab.py --a /work/main/src --b src --rounds 3
"""

from __future__ import annotations

import statistics
import subprocess
import sys

from abrun import ETCD_CALLS, ab_parser, ab_rounds, env

PAGES = (
    ETCD_CALLS
    + r"""
import gc, json, sys
from time import perf_counter_ns as now
import nbdb
from nbdb.models.ovn import LogicalRouter
url, ns, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
with nbdb.connect(url, namespace=ns) as db:
    calls = counted(db)
    best = float("inf")
    for _ in range(3):
        gc.collect(); calls.clear()
        seen, after, pages = 0, None, 0
        t0 = now()
        while True:
            got = db.list(LogicalRouter, limit=500, after=after)
            seen += len(got); pages += 1
            if (after := got.continue_token) is None:
                break
        best = min(best, (now() - t0) / 1e6)
        assert seen == total, seen
print(json.dumps({"ms": best, "pages": pages, "requests": len(calls)}))
"""
)

FILL = r"""
import sys
import nbdb
from nbdb.models.ovn import LogicalRouter
url, ns, topics, routers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with nbdb.connect(url, namespace=ns) as db:
    for t in range(topics):
        for first in range(0, routers, 100):
            with db.transaction() as txn:
                for r in range(first, min(first + 100, routers)):
                    txn.create(LogicalRouter(name=f"lr-{t}-{r}", topic=f"t-{t}"))
"""


def main() -> None:
    parser = ab_parser(__doc__, 0)
    parser.add_argument("--topics", type=int, default=16)
    parser.add_argument("--routers", type=int, default=2000)
    args = parser.parse_args()
    sides = {"a": args.a, "b": args.b}
    from nbdb.testing.servers import start_server

    server = start_server("etcd")
    try:
        url = str(server.url)
        total = args.topics * args.routers
        fill = [url, "big", str(args.topics), str(args.routers)]
        subprocess.run([sys.executable, "-c", FILL, *fill], env=env(args.a), check=True)
        results = ab_rounds(sides, args.rounds, PAGES, [url, "big", str(total)])
        for side in ("a", "b"):
            got = results[side]
            print(
                f"{side}: {statistics.median(g['ms'] for g in got):8.1f} ms for {got[0]['pages']} pages "
                f"(median of best-of-3), {statistics.median(g['requests'] for g in got):.0f} requests"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
