"""A/B of the check a batched Redis one-table range makes after its reads (``_unchanged_since``).

A scan of T tables spelled out under N topics checks the ``dmr`` marks of 4 directories per prefix
(the table's, the topic's, ``o/`` and the root). One Redis is spawned and its ``dmr`` hash filled
with a mark for every one of those directories; per round (sides alternating) one process per side
times the check of the T*N prefixes, best of ``--repeat``::

    python benchmarks/redisdmr_ab.py --a /path/to/main/src --b src --topics 10000 --tables 16

It calls the backend's private method: the range around it (batched reads, sorting) is the same
on both sides and its time would hide the difference.
"""

from __future__ import annotations

import argparse
import statistics

from abrun import loadavg, run_json

WORKER = r"""
import gc, json, sys
from time import perf_counter_ns as now
url, topics, tables, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
import nbdb
prefixes = [f"o/t-{t}/Table{k}/" for t in range(topics) for k in range(tables)]
best = float("inf")
import redis
raw = redis.Redis.from_url(url)
raw.config_resetstat()
with nbdb.connect(url, namespace="dmr") as db:
    for _ in range(repeat):
        gc.collect()
        t0 = now()
        assert db.backend._unchanged_since(prefixes, 10**9)
        best = min(best, (now() - t0) / 1e6)
stats = raw.info("commandstats")["cmdstat_hmget"]
print(json.dumps({"ms": best, "server_ms": stats["usec_per_call"] / 1000}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", required=True, help="src/ of the base checkout (main)")
    parser.add_argument("--b", required=True, help="src/ of the checkout under test")
    parser.add_argument("--topics", type=int, default=10000)
    parser.add_argument("--tables", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import redis

    import nbdb
    from nbdb.testing.servers import start_server

    spawned = start_server("redis")
    try:
        url = str(spawned.url)
        raw = redis.Redis.from_url(url)
        marks = {"": 1, "o/": 1}
        for t in range(args.topics):
            marks[f"o/t-{t}/"] = 1
            marks.update({f"o/t-{t}/Table{k}/": 1 for k in range(args.tables)})
        with nbdb.connect(url, namespace="dmr") as db:
            root = db.backend.root  # type: ignore[attr-defined]
        items = list(marks.items())
        for i in range(0, len(items), 10000):
            raw.hset(root + "dmr", mapping=dict(items[i : i + 10000]))
        raw.close()
        print(f"load average before: {loadavg().split()}", flush=True)
        sides = {"a": args.a, "b": args.b}
        results: dict[str, list[float]] = {"a": [], "b": []}
        server: dict[str, list[float]] = {"a": [], "b": []}
        worker_args = [url, str(args.topics), str(args.tables), str(args.repeat)]
        for round_ in range(args.rounds):
            for side in ["a", "b"] if round_ % 2 == 0 else ["b", "a"]:
                got = run_json(sides[side], WORKER, worker_args)
                results[side].append(got["ms"])
                server[side].append(got["server_ms"])
                print(
                    f"round {round_} {side}: {got['ms']:8.2f} ms (HMGET in the server {got['server_ms']:7.2f} ms)",
                    flush=True,
                )
        print(f"load average after: {loadavg().split()}")
        a, b = statistics.median(results["a"]), statistics.median(results["b"])
        print(f"{args.tables} tables x {args.topics:,} topics: a {a:8.2f} ms  b {b:8.2f} ms  b/a {b / a:5.2f}")
        a, b = statistics.median(server["a"]), statistics.median(server["b"])
        print(f"  HMGET in the server: a {a:8.2f} ms  b {b:8.2f} ms  b/a {b / a:5.2f}")
    finally:
        spawned.stop()


if __name__ == "__main__":
    main()
