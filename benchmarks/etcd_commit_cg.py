"""A/B of an etcd commit's client instructions on the caller's thread (callgrind), nbdb at two checkouts.

One throwaway etcd. Per side and round, two processes under ``valgrind --tool=callgrind
--separate-threads=yes`` (``PYTHONHASHSEED=0``) each create ``N`` ports (real round trips) and then
update each once with the reply of one real update given back to every call (no gRPC: planning,
encoding, parsing); ``N`` is ``--counts`` low and high. Printed: the caller thread's instructions
per port (create and update), the high run's minus the low run's over the difference::

    python benchmarks/etcd_commit_cg.py --a /path/to/main/src --b src --rounds 2
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import uuid

from abrun import ETCD_REPLAYED

WORKER = (
    r"""
import sys
import nbdb
"""
    + ETCD_REPLAYED
    + r"""
url, ns, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
with nbdb.connect(url, namespace=ns) as db:
    ports, restore = replayed_ports(db, count)
    for p in ports:
        db.update(p.replace(up=True, external_ids={**p.external_ids, "neutron:revision_number": "2"}))
    restore()
"""
)


def _instructions(src: str, url: str, count: int, work: str) -> int:
    out = os.path.join(work, f"cg.{uuid.uuid4().hex[:8]}")
    env = {**os.environ, "PYTHONPATH": os.path.abspath(src), "PYTHONHASHSEED": "0"}
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--separate-threads=yes"]
    argv += [sys.executable, "-c", WORKER, url, "cg" + uuid.uuid4().hex[:8], str(count)]
    subprocess.run(argv, env=env, check=True, capture_output=True, timeout=1800)
    caller = f"{out}-01"  # thread 1: the caller
    with open(caller) as handle:
        found = re.search(r"^summary: (\d+)", handle.read(), re.M)
    assert found is not None
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True)
    parser.add_argument("--b", required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--counts", default="100,400")
    args = parser.parse_args()
    low, high = (int(c) for c in args.counts.split(","))
    from nbdb.testing.servers import start_server

    with start_server("etcd") as server, tempfile.TemporaryDirectory(prefix="nbdb-cg-") as work:
        for round_ in range(args.rounds):
            for side in ("a", "b") if round_ % 2 == 0 else ("b", "a"):
                src = getattr(args, side)
                first, second = (_instructions(src, server.url, n, work) for n in (low, high))
                print(f"round {round_} {side}: {(second - first) / (high - low):,.0f} instructions a port", flush=True)


if __name__ == "__main__":
    main()
