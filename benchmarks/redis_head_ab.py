"""A/B: single reads on Redis after ONE large transaction (its ``log`` entry lists every object).

Each size runs on a fresh redis-server (loopback, no persistence): a switch, then N ports created in
ONE transaction, so the last entry of ``log`` is that commit's change record of N objects. Then each
read is repeated ``--count`` times and timed per call (median, wall clock), with the server's time
per script call (INFO commandstats, ``usec_per_call`` of EVALSHA; 0 where the read runs no script):

- ``revision``: ``backend.current_revision()`` (the head script);
- ``referrers``: ``backend.referrers(port)`` (a range script over a port's referrers' hash: none);
- ``list``: ``db.list(LogicalSwitch)`` (a range script over a table of one object);
- ``poll``: a watch opened at the head, ``poll(0)`` (the watchers' read script, nothing new);
- ``get``: ``db.get(port)`` (``HMGET``, no script: the control).

Sides alternate per round (abrun.in_turns).

    benchmarks/redis_head_ab.py --a /tmp/pre/src --b src --sizes 1000,10000 --rounds 2 --count 50
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from abrun import ab_sizes_parser, sizes_on_fresh_redis

WORKER = r"""
import json, statistics, sys, time
import redis
import nbdb
from nbdb.bench.data import make_port, make_switch
from nbdb.models import LogicalSwitch, LogicalSwitchPort
url, n, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
db = nbdb.connect(url)
switch = db.create(make_switch(0))
with db.transaction() as txn:
    for i in range(n):
        port = txn.create(make_port(switch, i))
backend = db.backend
r = redis.Redis.from_url(url)
entry = r.xrevrange("nbdb:{}:log", count=1)[0]
watch = db.watch(LogicalSwitchPort)
reads = {
    "revision": lambda: backend.current_revision(),
    "referrers": lambda: backend.referrers(LogicalSwitchPort.nbdb_table, port.id),
    "list": lambda: db.list(LogicalSwitch),
    "poll": lambda: watch.poll(0),
    "get": lambda: db.get(LogicalSwitchPort, port.id),
}
out = {"entry_bytes": sum(len(v) for v in entry[1].values())}
for name, read in reads.items():
    read()  # warm (scripts loaded)
    r.config_resetstat()
    took = []
    for _ in range(count):
        t0 = time.perf_counter()
        read()
        took.append(time.perf_counter() - t0)
    stats = r.info("commandstats").get("cmdstat_evalsha", {})
    out[name] = {"ms": statistics.median(took) * 1e3, "server_us": stats.get("usec_per_call", 0.0)}
watch.close()
db.close()
print(json.dumps(out))
"""


def main() -> None:
    args = ab_sizes_parser(__doc__, 50, "1000,10000").parse_args()
    rows = sizes_on_fresh_redis(args, WORKER, [str(args.count)])
    for n in sorted({n for _side, n in rows}):
        for side in ("a", "b"):
            got = rows[(side, n)]
            cells = []
            for name in ("revision", "referrers", "list", "poll", "get"):
                ms = statistics.median(g[name]["ms"] for g in got)
                us = statistics.median(g[name]["server_us"] for g in got)
                cells.append(f"{name} {ms:7.3f} ms ({us:7.1f} us server)")
            print(f"{side} N={n:>6} (entry {got[0]['entry_bytes']:,} B): " + "; ".join(cells))


if __name__ == "__main__":
    main()
