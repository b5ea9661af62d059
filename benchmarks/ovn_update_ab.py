"""A/B of single port updates: nbdb at two checkouts against ovsdbapp's ``lsp_set_addresses``, alternating.

The ratio of single updates is noisy on a shared machine (0.29-1.97 in one run), so
comparing two builds needs them measured side by side, several rounds, in turns::

    python benchmarks/ovn_update_ab.py --a /path/to/main/src --b src --ports 1000 --rounds 6

One throwaway ovsdb-server holds a switch of ``--ports`` ports. Each round runs, in a
rotating order, one process per side: nbdb from ``--a``'s sources, nbdb from ``--b``'s,
and ovsdbapp. Each process loads the switch (nbdb: a cache of its ports, as ``nbdb bench``
does; ovsdbapp: its IDL), creates ``--count`` ports untimed, times ``--count`` updates of
their addresses, and deletes them. Printed per round: updates/s, p50 and the process's
CPU per update; at the end the medians and the spread of each nbdb side / ovsdbapp.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

WORKER = r"""
import gc, json, sys, time
from time import perf_counter_ns as now
side, url, remote, ns, switch, count = sys.argv[1:7]
count = int(count)
def address(i):
    return [f"0a:20:00:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x} 10.30.{(i >> 8) & 255}.{i & 255}"]
lat = []
if side == "ovsdbapp":
    from nbdb.bench.ovn.ovsdbapp import OvsdbApp
    app = OvsdbApp(remote)
    names = [f"{ns}-ab{i}" for i in range(count)]
    for i, name in enumerate(names):
        app.lsp_add(switch, name, address(i))
    gc.collect()
    c0, t0 = time.process_time(), now()
    for i, name in enumerate(names):
        s = now(); app.lsp_set_addresses(name, address(i + count)); lat.append(now() - s)
    c1, t1 = time.process_time(), now()
    for name in names:
        app.lsp_del(name)
    app.close()
else:
    import nbdb
    from nbdb.models.ovn import LogicalSwitchPort
    db = nbdb.connect(url, namespace=ns)
    cache = db.cache(LogicalSwitchPort)
    assert cache.wait_synced(120)
    made = [
        db.create(LogicalSwitchPort(switch=switch, name=f"{ns}-{side}{i}", addresses=address(i)))
        for i in range(count)
    ]
    gc.collect()
    c0, t0 = time.process_time(), now()
    for i in range(count):
        s = now(); made[i] = db.update(made[i].replace(addresses=address(i + count))); lat.append(now() - s)
    c1, t1 = time.process_time(), now()
    for obj in made:
        db.delete(obj)
    db.close()
lat.sort()
print(json.dumps({"rate": count / ((t1 - t0) / 1e9), "p50_ms": lat[len(lat) // 2] / 1e6,
                  "cpu_ms": (c1 - c0) * 1e3 / count}))
"""


def _run(side: str, src: str | None, args: list[str]) -> dict[str, float]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(Path(src).resolve())
    out = subprocess.run(
        [sys.executable, "-c", WORKER, side, *args], env=env, capture_output=True, text=True, timeout=600
    )
    if out.returncode != 0:
        raise RuntimeError(f"{side} failed: {out.stderr[-2000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    """Run the rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", required=True, help="sources (a src/ directory) of nbdb side A")
    parser.add_argument("--b", required=True, help="sources of nbdb side B")
    parser.add_argument("--ports", type=int, default=1000)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=6)
    opts = parser.parse_args()

    from nbdb.bench.config import OVN_SCALE_PROBE_FROM_PORTS, OVN_SCALE_PROBE_MS
    from nbdb.bench.ovn.wire import RawNb, ovs_remote
    from nbdb.testing.servers import start_server

    # The probe `nbdb bench` gives a switch this size (ovsdbapp's IDL is dropped while it loads otherwise).
    probe = {"inactivity_probe_ms": OVN_SCALE_PROBE_MS} if opts.ports >= OVN_SCALE_PROBE_FROM_PORTS else {}
    server = start_server("ovsdb", **probe)
    try:
        url = server.url
        ns = f"ab-{os.getpid()}"
        wire = RawNb(url)
        switch = wire.add_switch(f"ab-{ns}", ns)
        wire.add_ports(switch, [f"{ns}-p{i}" for i in range(opts.ports)], ns)
        wire.close()
        common = [url, ovs_remote(url), ns, str(switch), str(opts.count)]
        sides = [("A", opts.a), ("B", opts.b), ("ovsdbapp", None)]
        got: dict[str, list[dict[str, float]]] = {s: [] for s, _ in sides}
        for r in range(opts.rounds):
            order = sides[r % 3 :] + sides[: r % 3]
            line = []
            for side, src in order:
                res = _run(side, src, common)
                got[side].append(res)
                line.append(f"{side} {res['rate']:.0f}/s p50 {res['p50_ms']:.2f} ms cpu {res['cpu_ms']:.2f} ms")
            load = os.getloadavg()[0]
            a, b, o = (got[s][-1]["rate"] for s in ("A", "B", "ovsdbapp"))
            print(f"round {r} (load {load:.1f}): " + "; ".join(line) + f" | A/app {a / o:.2f} B/app {b / o:.2f}")
            sys.stdout.flush()
        for side in ("A", "B"):
            ratios = [x["rate"] / y["rate"] for x, y in zip(got[side], got["ovsdbapp"], strict=True)]
            cpu = [x["cpu_ms"] for x in got[side]]
            print(
                f"{side}/ovsdbapp: median {statistics.median(ratios):.2f}, range {min(ratios):.2f}-{max(ratios):.2f}; "
                f"cpu/update median {statistics.median(cpu):.2f} ms"
            )
        cpu = [x["cpu_ms"] for x in got["ovsdbapp"]]
        print(
            f"ovsdbapp cpu/update median {statistics.median(cpu):.2f} ms; B/A per round: "
            + ", ".join(f"{x['rate'] / y['rate']:.2f}" for x, y in zip(got["B"], got["A"], strict=True))
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
