"""A/B of one OVSDB port update's client instructions per thread (callgrind), against a real server, cache open.

Wall clock on the shared 2-core machine swings by 2x between rounds; instruction counts do not.
One throwaway ovsdb-server holds a switch of ``--ports`` ports. For each side, two processes run
under ``valgrind --tool=callgrind --separate-threads=yes`` (``PYTHONHASHSEED=0``), each on a
switch of its own: both open a cache of the ports (as ``nbdb bench`` does, ``--no-cache``: none)
and create ``--count`` ports; the second then updates each port's addresses twice (CAS
updates). Printed per side: the instructions per update of each thread (the second run's minus
the first's, over the updates) and of the process::

    python benchmarks/ovn_update_cg.py --a /path/to/main/src --b src --ports 1000 --count 100

``--op delete``: the second run deletes each port it created instead (a plain CAS ``delete()``, as
``nbdb bench``'s ovn.delete), and the counts are per delete. ``--op create``: the first run creates
nothing (it connects and loads the cache alike), the second creates ``--count`` ports, and the counts
are per create.

Threads are numbered as they started: 1 the caller, 2 the connection's I/O thread, then the
hub's and the cache's (the largest after the I/O thread, with a cache open).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

WORKER = r"""
import os, sys
steps, url, ns, switch, count = sys.argv[1:6]
count = int(count)
def address(i):
    return [f"0a:20:00:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x} 10.30.{(i >> 8) & 255}.{i & 255}"]
import nbdb
from nbdb.models.ovn import LogicalSwitchPort
db = nbdb.connect(url, namespace=ns)
cache = None if os.environ.get("NO_CACHE") else db.cache(LogicalSwitchPort)
assert cache is None or cache.wait_synced(600)
made = []
for i in range(count if "c" in steps else 0):
    made.append(db.create(LogicalSwitchPort(switch=switch, name=f"{ns}-{i}", addresses=address(i))))
if "u" in steps:
    for r in (1, 2):
        for i in range(count):
            made[i] = db.update(made[i].replace(addresses=address(i + r * count)))
last = made[-1] if made else None
if "d" in steps:
    for p in made:
        last = db.delete(p)
assert cache is None or last is None or cache.wait_for(last, 60)
db.close()
"""


def _threads(src: str, steps: str, url: str, ns: str, switch: str, count: int, no_cache: bool) -> dict[str, int]:
    """Instructions of each thread of one run (by callgrind's output file suffix)."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={tmp}/cg.out"]
        argv += [sys.executable, "-c", WORKER, steps, url, ns, switch, str(count)]
        env = {**os.environ, "PYTHONPATH": str(Path(src).resolve()), "PYTHONHASHSEED": "0"}
        if no_cache:
            env["NO_CACHE"] = "1"
        subprocess.run(argv, env=env, check=True, capture_output=True, timeout=3600)
        out = {}
        for path in Path(tmp).iterdir():
            found = re.search(r"^(?:summary|totals): (\d+)", path.read_text(errors="replace"), re.M)
            out[path.name.rpartition("-")[2]] = int(found.group(1)) if found else 0
        return out


def main() -> None:
    """Run both sides and print their instructions per update (or delete)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, help="the first checkout's src/ (e.g. main's)")
    parser.add_argument("--b", required=True, help="the second checkout's src/")
    parser.add_argument("--ports", type=int, default=1000, help="ports already on each switch")
    parser.add_argument("--count", type=int, default=100, help="ports created, then updated twice each")
    parser.add_argument("--no-cache", action="store_true", help="open no cache")
    parser.add_argument("--op", choices=("update", "delete", "create"), default="update", help="what is measured")
    opts = parser.parse_args()
    base, measured, writes = {
        "update": ("c", "cu", 2 * opts.count),
        "delete": ("c", "cd", opts.count),
        "create": ("n", "c", opts.count),
    }[opts.op]

    from nbdb.bench.ovn.wire import RawNb
    from nbdb.testing.servers import start_server

    server = start_server("ovsdb")
    try:
        for side, src in (("a", opts.a), ("b", opts.b)):
            runs = {}
            for steps in (base, measured):
                ns = f"cg-{uuid.uuid4().hex[:8]}"
                wire = RawNb(server.url)
                switch = wire.add_switch(f"sw-{ns}", ns)
                wire.add_ports(switch, [f"{ns}-p{i}" for i in range(opts.ports)], ns)
                wire.close()
                runs[steps] = _threads(src, steps, server.url, ns, str(switch), opts.count, opts.no_cache)
            names = sorted(set(runs[base]) | set(runs[measured]))
            per = {n: (runs[measured].get(n, 0) - runs[base].get(n, 0)) / writes for n in names}
            threads = ", ".join(f"thread {n.lstrip('0') or n}: {v:,.0f}" for n, v in per.items() if abs(v) >= 1000)
            print(f"{side} ({src}): {sum(per.values()):,.0f} per {opts.op}; {threads}", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
