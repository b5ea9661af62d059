"""A/B: ``delete(switch, cascade=True)`` of a switch whose N ports one transaction created, on Redis.

Each size runs on a fresh redis-server (loopback, no persistence): a switch, N ports created in
ONE transaction (so the last entry of ``log`` holds N changes), then the cascade delete is timed
(wall clock, and the server's script calls from INFO commandstats). Sides alternate per round.

    benchmarks/redis_cascade_ab.py --a /work/main/src --b src --sizes 500,2000,8000 --rounds 2
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from abrun import ab_parser, in_turns, loadavg, run_json, start_redis

WORKER = r"""
import json, sys, time
import redis
import nbdb
from nbdb.bench.data import make_port, make_switch
from nbdb.models import LogicalSwitch
url, n = sys.argv[1], int(sys.argv[2])
db = nbdb.connect(url)
switch = db.create(make_switch(0))
with db.transaction() as txn:
    for i in range(n):
        txn.create(make_port(switch, i))
r = redis.Redis.from_url(url)
r.config_resetstat()
t0 = time.perf_counter()
db.delete(switch, cascade=True)
took = time.perf_counter() - t0
stats = r.info("commandstats")
calls = sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_fcall"))
left = len(list(db.list(type(make_port(switch, 0)))))
db.close()
print(json.dumps({"seconds": took, "scripts": calls, "left": left}))
"""


def main() -> None:
    parser = ab_parser(__doc__, 0)
    parser.add_argument("--sizes", default="500,2000,8000")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: dict[tuple[str, int], list[dict[str, float]]] = {}
    print(f"load average before: {loadavg()}", flush=True)
    for n in sizes:
        for _round, side in in_turns(args.rounds):
            src = args.a if side == "a" else args.b
            with tempfile.TemporaryDirectory() as work:
                server, url = start_redis(Path(work))
                try:
                    got = run_json(src, WORKER, [url, str(n)], timeout=args.timeout)
                except Exception as exc:  # a timeout is a result here (main did not finish 40,000)
                    got = {"seconds": float("inf"), "scripts": -1, "left": -1, "error": str(exc)[:200]}
                finally:
                    server.terminate()
                    server.wait()
            rows.setdefault((side, n), []).append(got)
            print(side, n, json.dumps(got), flush=True)
    print(f"load average after: {loadavg()}")
    for n in sizes:
        for side in ("a", "b"):
            got = rows[(side, n)]
            med = statistics.median(g["seconds"] for g in got)
            print(
                f"{side} N={n:>6}: median {med:8.3f} s, script calls {got[0]['scripts']}, ports left {got[0]['left']}"
            )


if __name__ == "__main__":
    main()
