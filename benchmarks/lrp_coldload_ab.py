"""A/B of a cache's cold load of router ports: nbdb at two checkouts, alternating, on the same rows.

    python benchmarks/lrp_coldload_ab.py --a /tmp/pre/src --b src --ports 5000 --rounds 4

One OVN_Northbound ovsdb-server (loopback) is filled once with a router and ``--ports`` router
ports; each round runs one process per side, in turns, that opens a cache of the ports and times
its load three times (a fresh ``Database`` each time). Printed per round: each side's best of
three (ms); at the end the median of each side. ``memory://`` is filled per process, untimed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

WORKER = r"""
import json, sys, time
import nbdb
from nbdb.models.ovn import LogicalRouter, LogicalRouterPort
url, ports = sys.argv[1], int(sys.argv[2])
keep = None
if url.startswith("memory://"):
    keep = nbdb.connect(url)
    r = keep.create(LogicalRouter(name="r"))
    with keep.transaction() as tx:
        for i in range(ports):
            tx.create(LogicalRouterPort(router=r, name=f"p{i}", mac="0a:00:00:00:00:01", networks=["10.0.0.1/24"]))
best = float("inf")
for _ in range(3):
    with nbdb.connect(url) as db:
        t = time.perf_counter()
        cache = db.cache([LogicalRouterPort])
        assert cache.wait_synced(120)
        assert len(cache.list(LogicalRouterPort)) == ports
        best = min(best, time.perf_counter() - t)
        cache.close()
print(json.dumps({"ms": best * 1000}))
"""


def run(src: str, url: str, ports: int) -> float:
    env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run([sys.executable, "-c", WORKER, url, str(ports)], env=env, check=True, capture_output=True)
    return float(json.loads(out.stdout.decode().strip().splitlines()[-1])["ms"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--a", required=True)
    parser.add_argument("--b", required=True)
    parser.add_argument("--ports", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    sys.path.insert(0, args.b)
    import nbdb
    from nbdb.models.ovn import LogicalRouter, LogicalRouterPort
    from nbdb.testing.ovsdb import OvsdbServer

    with OvsdbServer() as server:
        with nbdb.connect(server.url) as db:
            router = db.create(LogicalRouter(name="r"))
            with db.transaction() as tx:
                for i in range(args.ports):
                    mac, net = "0a:00:00:00:00:01", ["10.0.0.1/24"]
                    tx.create(LogicalRouterPort(router=router, name=f"p{i}", mac=mac, networks=net))
        for url in ("memory://lrp", server.url):
            sides: dict[str, list[float]] = {"a": [], "b": []}
            for n in range(args.rounds):
                order = ("a", "b") if n % 2 == 0 else ("b", "a")
                for side in order:
                    sides[side].append(run(getattr(args, side), url, args.ports))
                print(url.split(":")[0], n, {s: round(v[-1], 1) for s, v in sides.items()}, flush=True)
            print(url.split(":")[0], "median ms", {s: round(statistics.median(v), 1) for s, v in sides.items()})


if __name__ == "__main__":
    main()
