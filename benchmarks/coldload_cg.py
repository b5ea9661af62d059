"""Instructions per object of a cache's cold load, two checkouts in turns, under callgrind.

The wall clock of a cold load moves with the load of a shared machine (see ``coldload_ab.py``);
instruction counts do not. Each backend (spawned servers on loopback: their work is outside the
count; ``sqlite`` a file; ``memory`` filled by each worker) is filled once with a switch and
``--ports`` ports. Per round and side, the client runs under callgrind twice: once with one load
and once with ``1 + --loads`` loads (a fresh ``Database`` and cache each, ``gc.collect()`` between
them); the difference divided by ``--loads`` and the ports is one load's instructions per object,
everything the client process does for it (the cache's thread, the connects, the collector),
import and start-up cancelled out. Hashing is seeded, so runs of one build agree closely::

    python benchmarks/coldload_cg.py --a /path/to/main/src --b src --backends sqlite,redis --ports 10000
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys

from abrun import callgrind_total, in_turns, loadavg
from coldload_ab import NAMESPACE, filled_stores

WORKER = r"""
import contextlib, gc, sys
url, ns, ports, loads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
import nbdb
from nbdb.models.ovn import LogicalSwitchPort
filled = None
if url.startswith("memory://"):
    from nbdb.bench.workloads.common import populate
    filled = nbdb.connect(url, namespace=ns)
    populate(filled, ports)
for _ in range(loads):
    gc.collect()
    with contextlib.nullcontext(filled) if filled is not None else nbdb.connect(url, namespace=ns) as db:
        cache = db.cache(LogicalSwitchPort)
        assert cache.wait_synced(3600)
        assert len(cache) == ports, (len(cache), ports)
        cache.close()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, help="src/ of the base checkout (main)")
    parser.add_argument("--b", required=True, help="src/ of the checkout under test")
    parser.add_argument("--backends", default="sqlite")
    parser.add_argument("--ports", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--loads", type=int, default=2, help="loads counted (one more run holds one load)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed")

    with filled_stores(args.backends, args.ports, args.b) as urls:
        ns = NAMESPACE
        print(f"load average before: {loadavg()}", flush=True)
        sides = {"a": args.a, "b": args.b}
        results: dict[tuple[str, str], list[float]] = {}
        for n, side in in_turns(args.rounds):
            for backend, url in urls.items():
                one = callgrind_total(sides[side], WORKER, [url, ns, str(args.ports), "1"])
                more = callgrind_total(sides[side], WORKER, [url, ns, str(args.ports), str(1 + args.loads)])
                per = (more - one) / args.loads / args.ports
                results.setdefault((backend, side), []).append(per)
                print(f"round {n} {backend:9} {side}: {per / 1000:7.1f}k instructions/object", flush=True)
        print(f"load average after: {loadavg()}")
        for backend in urls:
            a = statistics.median(results[(backend, "a")])
            b = statistics.median(results[(backend, "b")])
            print(
                f"{backend:9} median a {a / 1000:7.1f}k  b {b / 1000:7.1f}k  "
                f"b-a {(b - a) / 1000:+6.1f}k  b/a {b / a:5.3f}"
            )


if __name__ == "__main__":
    main()
