"""A/B of a page across many small topics and of a scan after many topics were emptied, on etcd (issue 13).

Two cases, each side in its own process, alternating (abrun.in_turns), on one etcd server::

    python benchmarks/etcdpage_ab.py --a /work/main/src --b src --rounds 4

* ``page``: a namespace of 200 topics of 2 routers; ``db.list(LogicalRouter, limit=500)``, best of 5,
  and the requests that page sent (the client's ``call``s).
* ``dead``: a fresh namespace per side and round: 1,000 topics each given a router and emptied again,
  then 10 topics of 1 router; a first ``db.list(LogicalRouter)`` (side b: it prunes the registry), then
  the best of 5 lists after it and the requests one of them sent, and the registry keys left.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from typing import Any

from abrun import ETCD_CALLS, ab_parser, env, in_turns, loadavg, run_json

COMMON = (
    r"""
import gc, json, sys
from time import perf_counter_ns as now
import nbdb
from nbdb.models.ovn import LogicalRouter

def best_of_5(calls, listing):
    best = float("inf")
    for _ in range(5):
        gc.collect(); calls.clear()
        t0 = now(); got = listing(); t1 = now()
        best = min(best, (t1 - t0) / 1e6)
    return best, got
"""
    + ETCD_CALLS
)

PAGE = (
    COMMON
    + r"""
url, ns = sys.argv[1], sys.argv[2]
with nbdb.connect(url, namespace=ns) as db:
    calls = counted(db)
    best, got = best_of_5(calls, lambda: db.list(LogicalRouter, limit=500))
    assert len(got) == 400 and got.continue_token is None
print(json.dumps({"ms": best, "requests": len(calls)}))
"""
)

DEAD = (
    COMMON
    + r"""
url, ns = sys.argv[1], sys.argv[2]
with nbdb.connect(url, namespace=ns) as db:
    calls = counted(db)
    t0 = now(); assert len(db.list(LogicalRouter)) == 10; first = (now() - t0) / 1e6
    best, got = best_of_5(calls, lambda: db.list(LogicalRouter))
    assert len(got) == 10
    requests = len(calls)
    marks = db.backend.layout.topic_marks
    left = len(db.backend.range_keys([marks])[0])
print(json.dumps({"first_ms": first, "ms": best, "requests": requests, "registry": left}))
"""
)

FILL_PAGE = r"""
import sys
import nbdb
from nbdb.models.ovn import LogicalRouter
url, ns = sys.argv[1], sys.argv[2]
with nbdb.connect(url, namespace=ns) as db:
    for first in range(0, 200, 25):
        with db.transaction() as txn:
            for t in range(first, first + 25):
                for r in range(2):
                    txn.create(LogicalRouter(name=f"lr-{t}-{r}", topic=f"t-{t}"))
"""

FILL_DEAD = r"""
import sys
import nbdb
from nbdb.models.ovn import LogicalRouter
url, ns = sys.argv[1], sys.argv[2]
with nbdb.connect(url, namespace=ns) as db:
    for first in range(0, 1000, 50):
        with db.transaction() as txn:
            made = [txn.create(LogicalRouter(name=f"d-{t}", topic=f"d-{t}")) for t in range(first, first + 50)]
        with db.transaction() as txn:
            for router in made:
                txn.delete(LogicalRouter, router.id)
    with db.transaction() as txn:
        for t in range(10):
            txn.create(LogicalRouter(name=f"lr-{t}", topic=f"live-{t}"))
"""


def main() -> None:
    args = ab_parser(__doc__, 0).parse_args()
    sides = {"a": args.a, "b": args.b}
    from nbdb.testing.servers import start_server

    server = start_server("etcd")
    try:
        url = str(server.url)
        subprocess.run([sys.executable, "-c", FILL_PAGE, url, "page"], env=env(args.a), check=True)
        print(f"load average before: {loadavg().split()}", flush=True)
        results: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for n, side in in_turns(args.rounds):
            got = run_json(sides[side], PAGE, [url, "page"])
            results.setdefault(("page", side), []).append(got)
            print(f"round {n} page {side} {got}", flush=True)
            ns = f"dead-{side}-{n}"
            subprocess.run([sys.executable, "-c", FILL_DEAD, url, ns], env=env(args.a), check=True)
            got = run_json(sides[side], DEAD, [url, ns])
            results.setdefault(("dead", side), []).append(got)
            print(f"round {n} dead {side} {got}", flush=True)
        print(f"load average after: {loadavg().split()}")
        for case in ("page", "dead"):
            for side in ("a", "b"):
                got = results[(case, side)]
                keys = [k for k in got[0] if k != "ms"]
                extra = "  ".join(f"{k} {statistics.median(g[k] for g in got):.1f}" for k in keys)
                print(
                    f"{case} {side}: {statistics.median(g['ms'] for g in got):8.2f} ms (median of best-of-5)  {extra}"
                )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
