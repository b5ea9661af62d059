"""A/B of building models whose reference fields are given objects: two nbdb checkouts in turns.

Process CPU time per construction of ``LogicalSwitchPort(switch=sw)`` (one object for one reference),
``PortGroup(ports=[50 ports])`` (50 objects for a list of references) and ``LogicalSwitchPort(switch=sw.id)``
(an id: the common case, which the object check must not touch). One process per side and round,
sides alternating; medians printed::

    python benchmarks/reference_build_ab.py --a /work/main/src --b src --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

N = 100_000


def measure() -> list[float]:
    from nbdb.models import LogicalSwitch, LogicalSwitchPort, PortGroup

    switch = LogicalSwitch(name="s")
    ports = [LogicalSwitchPort(switch=switch, name=f"p{i}") for i in range(50)]
    for _ in range(2000):
        LogicalSwitchPort(switch=switch, name="warm")
    out = []
    for make, count in (
        (lambda: LogicalSwitchPort(switch=switch, name="p"), N),
        (lambda: PortGroup(name="g", ports=ports), N // 50),
        (lambda: LogicalSwitchPort(switch=switch.id, name="p"), N),
    ):
        start = time.process_time()
        for _ in range(count):
            make()
        out.append((time.process_time() - start) / count * 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--a", required=True)
    parser.add_argument("--b", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, args.child)
        print(" ".join(f"{v:.3f}" for v in measure()))
        return
    runs: dict[str, list[list[float]]] = {"a": [], "b": []}
    for _ in range(args.rounds):
        for side in ("a", "b"):
            cmd = [sys.executable, __file__, "--a", args.a, "--b", args.b, "--child", getattr(args, side)]
            runs[side].append([float(v) for v in subprocess.check_output(cmd, text=True).split()])
    for side, rows in runs.items():
        medians = [statistics.median(column) for column in zip(*rows, strict=True)]
        obj, many, by_id = medians
        print(f"{side} µs: switch=obj {obj:.3f}  ports=[50 objs] {many:.3f}  switch=id {by_id:.3f}")


if __name__ == "__main__":
    main()
