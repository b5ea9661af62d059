"""A/B of a cache's cold load of router or switch ports: nbdb at two checkouts, alternating, on the same rows.

    python benchmarks/lrp_coldload_ab.py --a /tmp/pre/src --b src --ports 5000 --rounds 4 [--switch]

One OVN_Northbound ovsdb-server (loopback) is filled once with a router and ``--ports`` router
ports (``--switch``: a switch and switch ports); each round runs one process per side, in turns,
that opens a cache of the ports and times its load three times (a fresh ``Database`` each time).
Printed per round: each side's best of three (ms); at the end the median of each side.
``memory://`` is filled per process, untimed.
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
sys.path.insert(0, sys.argv[4])
from lrp_coldload_ab import fill
url, ports, switch = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "switch"
keep = None
if url.startswith("memory://"):
    keep = nbdb.connect(url)
    fill(keep, ports, switch)
model = fill.__globals__["port_model"](switch)
best = float("inf")
for _ in range(3):
    with nbdb.connect(url) as db:
        t = time.perf_counter()
        cache = db.cache([model])
        assert cache.wait_synced(120)
        assert len(cache.list(model)) == ports
        best = min(best, time.perf_counter() - t)
        cache.close()
print(json.dumps({"ms": best * 1000}))
"""


def port_model(switch: bool) -> type:
    from nbdb.models.ovn import LogicalRouterPort, LogicalSwitchPort

    return LogicalSwitchPort if switch else LogicalRouterPort


def fill(db: object, ports: int, switch: bool) -> None:
    """A router and ``ports`` router ports, or a switch and ``ports`` switch ports, in one transaction."""
    from nbdb.models.ovn import LogicalRouter, LogicalRouterPort, LogicalSwitch, LogicalSwitchPort

    parent = db.create(LogicalSwitch(name="s") if switch else LogicalRouter(name="r"))  # type: ignore[attr-defined]
    with db.transaction() as tx:  # type: ignore[attr-defined]
        for i in range(ports):
            if switch:
                tx.create(LogicalSwitchPort(switch=parent, name=f"p{i}", addresses=["0a:00:00:00:00:01 10.0.0.5"]))
            else:
                tx.create(
                    LogicalRouterPort(router=parent, name=f"p{i}", mac="0a:00:00:00:00:01", networks=["10.0.0.1/24"])
                )


def run(src: str, url: str, ports: int, switch: bool) -> float:
    env = {**os.environ, "PYTHONPATH": src}
    here = os.path.dirname(os.path.abspath(__file__))
    kind = "switch" if switch else "router"
    out = subprocess.run(
        [sys.executable, "-c", WORKER, url, str(ports), kind, here], env=env, check=True, capture_output=True
    )
    return float(json.loads(out.stdout.decode().strip().splitlines()[-1])["ms"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--a", required=True)
    parser.add_argument("--b", required=True)
    parser.add_argument("--ports", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--switch", action="store_true", help="switch ports instead of router ports")
    args = parser.parse_args()
    sys.path.insert(0, args.b)
    import nbdb
    from nbdb.testing.ovsdb import OvsdbServer

    with OvsdbServer() as server:
        with nbdb.connect(server.url) as db:
            fill(db, args.ports, args.switch)
        for url in ("memory://lrp", server.url):
            sides: dict[str, list[float]] = {"a": [], "b": []}
            for n in range(args.rounds):
                order = ("a", "b") if n % 2 == 0 else ("b", "a")
                for side in order:
                    sides[side].append(run(getattr(args, side), url, args.ports, args.switch))
                print(url.split(":")[0], n, {s: round(v[-1], 1) for s, v in sides.items()}, flush=True)
            print(url.split(":")[0], "median ms", {s: round(statistics.median(v), 1) for s, v in sides.items()})


if __name__ == "__main__":
    main()
