"""A/B of ``nbdb copy``'s check that the destination can store every object (``unstorable``), two checkouts.

    python benchmarks/copy_preflight_ab.py --a /path/to/main/src --b src --count 20000 --rounds 4

Each process fills a ``memory://`` store with one switch and ``--count`` ports (each references its
switch), then times ``unstorable`` alone over those objects into a fresh ``sqlite://`` file (CPU
time of the thread, best of three), and the whole copy into it with ``Copier`` (no verification,
no checkpoint; CPU time of the process, and wall clock). Rounds alternate the sides; the medians
and b/a (< 1: b is cheaper) are printed at the end, with the load average.
"""

from __future__ import annotations

import tempfile

from abrun import ab_parser, ab_rounds, print_medians

WORKER = r"""
import json, os, sys, time
count, directory = int(sys.argv[1]), sys.argv[2]
import nbdb
from nbdb.bench.workloads.common import populate
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.tools.copy import Copier, CopyOptions, unstorable
from nbdb.tools.snapshot import take_snapshot

models = [LogicalSwitch, LogicalSwitchPort]
path = os.path.join(directory, f"dst-{os.getpid()}.db")
with nbdb.connect("memory://") as src, nbdb.connect(f"sqlite:///{path}") as dst:
    populate(src, count)
    objects = list(take_snapshot(src, models, None).objects.values())
    check = float("inf")
    for _ in range(3):
        c0 = time.thread_time()
        unstorable(dst, objects)
        check = min(check, time.thread_time() - c0)
    c0, t0 = time.process_time(), time.perf_counter()
    result = Copier(src, dst, CopyOptions(models=models, verify=False)).run()
    copy_cpu, copy_wall = time.process_time() - c0, time.perf_counter() - t0
    assert result.written == count + 1, result
print(json.dumps({"unstorable_ms": check * 1e3, "copy_cpu_s": copy_cpu, "copy_wall_s": copy_wall}))
"""


def main() -> None:
    args = ab_parser(__doc__, 20_000).parse_args()
    with tempfile.TemporaryDirectory() as directory:
        rows = ab_rounds({"a": args.a, "b": args.b}, args.rounds, WORKER, [str(args.count), directory])
    print_medians(rows)


if __name__ == "__main__":
    main()
