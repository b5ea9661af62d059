"""A/B: ``delete(switch, cascade=True)`` of a switch whose N ports one transaction created, on Redis.

Each size runs on a fresh redis-server (loopback, no persistence): a switch, N ports created in
ONE transaction (so the last entry of ``log`` holds N changes), then the cascade delete is timed
(wall clock, and the server's script calls from INFO commandstats). Sides alternate per round.

    benchmarks/redis_cascade_ab.py --a /work/main/src --b src --sizes 500,2000,8000 --rounds 2
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from abrun import ab_sizes_parser, sizes_on_fresh_redis

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
    args = ab_sizes_parser(__doc__, 0, "500,2000,8000").parse_args()

    def failed(exc: Exception) -> dict[str, Any]:  # a timeout is a result here (main did not finish 40,000)
        return {"seconds": float("inf"), "scripts": -1, "left": -1, "error": str(exc)[:200]}

    rows = sizes_on_fresh_redis(args, WORKER, [], failed)
    for n in sorted({n for _side, n in rows}):
        for side in ("a", "b"):
            got = rows[(side, n)]
            med = statistics.median(g["seconds"] for g in got)
            print(
                f"{side} N={n:>6}: median {med:8.3f} s, script calls {got[0]['scripts']}, ports left {got[0]['left']}"
            )


if __name__ == "__main__":
    main()
