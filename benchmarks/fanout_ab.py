"""A/B of watch fan-out latency: nbdb at two checkouts, alternating, over the same spawned servers.

Commit-to-applied latency of ``nbdb bench``'s fanout workload (one paced writer, N caches
of one reading Database sharing one change stream; latency from the start of ``update()``
to each cache's subscriber callback) swings with the load of a shared machine, so two
builds are run side by side, in turns::

    python benchmarks/fanout_ab.py --a /path/to/main/src --b src --backends memory,redis,etcd \
        --caches 1,10,50 --rounds 4

Each round runs, per backend and cache count and in an order that flips every round, one
process per side that runs the workload once (``--writes`` updates at ``--rate``/s) and
prints p50/p99/max and the events that never arrived. The load average is printed with
every line; at the end, the median over rounds of each side's p50 and p99.
"""

from __future__ import annotations

import argparse
import statistics

from abrun import loadavg, run_json, stores

WORKER = r"""
import json, sys, dataclasses
url, backend, caches, writes, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
from nbdb.bench.config import SIZES
from nbdb.bench.target import Target
from nbdb.bench.workloads import fanout
sizes = dataclasses.replace(SIZES["quick"], fanout_writes=writes, fanout_rate=rate)
(m,) = fanout.run_nbdb(Target(backend, url), sizes, caches=caches)
s = m.latency
print(json.dumps({"p50": s.p50 / 1e3, "p99": s.p99 / 1e3, "max": s.max / 1e3, "missing": m.extra["missing_events"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", required=True, help="src/ of the base checkout (main)")
    parser.add_argument("--b", required=True, help="src/ of the checkout under test")
    parser.add_argument("--backends", default="memory,redis,etcd")
    parser.add_argument("--caches", default="1,10,50")
    parser.add_argument("--writes", type=int, default=1_000, help="updates per run (the full bench's)")
    parser.add_argument("--rate", type=float, default=200.0, help="updates per second")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    with stores(args.backends, "nbdb-fanout-") as urls:
        print(f"load average before: {loadavg()}", flush=True)
        sides = {"a": args.a, "b": args.b}
        counts = [int(c) for c in args.caches.split(",")]
        results: dict[tuple[str, int, str], list[dict[str, float]]] = {}
        for round_ in range(args.rounds):
            order = ["a", "b"] if round_ % 2 == 0 else ["b", "a"]
            for backend, url in urls.items():
                for caches in counts:
                    for side in order:
                        got = run_json(
                            sides[side], WORKER, [url, backend, str(caches), str(args.writes), str(args.rate)]
                        )
                        results.setdefault((backend, caches, side), []).append(got)
                        print(
                            f"round {round_} {backend:6} caches {caches:3} {side}: p50 {got['p50']:6.2f} ms  "
                            f"p99 {got['p99']:6.2f} ms  max {got['max']:7.2f} ms  missing {got['missing']:.0f}  "
                            f"load {loadavg()}",
                            flush=True,
                        )
        print(f"load average after: {loadavg()}")
        for backend in urls:
            for caches in counts:
                line = [f"{backend:6} caches {caches:3} median over rounds:"]
                for side in "ab":
                    runs = results[(backend, caches, side)]
                    p50 = statistics.median(r["p50"] for r in runs)
                    p99 = statistics.median(r["p99"] for r in runs)
                    line.append(f"{side} p50 {p50:6.2f} p99 {p99:6.2f} ms")
                print("  ".join(line))


if __name__ == "__main__":
    main()
