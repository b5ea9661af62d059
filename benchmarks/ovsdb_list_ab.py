"""A/B of ``db.list`` of 2,000 ports on OVSDB: nbdb at two checkouts, alternating, in one run.

Where a list's time goes, per side and round: the read's sync (an empty transaction: the
replica then shows every commit acknowledged before the list, the caller's own included),
the replica's ``select`` of the records, the codec's decode of them into models, and the
whole ``db.list`` (its wall clock and its CPU); medians of ``--lists`` lists each::

    python benchmarks/ovsdb_list_ab.py --a /path/to/main/src --b src --rounds 4

Each side runs in a process of its own against one throwaway ovsdb-server, with a
namespace of its own holding ``--objects`` ports on one switch. With ``--bench``, each side
also runs ``nbdb bench --backends ovsdb --spawn --quick --workloads list`` and its nbdb/raw
ratio is printed (the raw client selects the rows from the server at every list).
"""

from __future__ import annotations

import argparse
import uuid

from abrun import loadavg, nbdb_bench, print_medians, run_json

WORKER = r"""
import json, statistics, sys, time
import nbdb
from nbdb.bench.workloads.common import populate
from nbdb.codec import decode_each
from nbdb.models.ovn import LogicalSwitchPort
url, ns, objects, lists = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
out = {"sync_ms": [], "select_ms": [], "decode_ms": [], "list_ms": [], "list_cpu_ms": []}
with nbdb.connect(url, namespace=ns) as db:
    populate(db, objects)
    backend = db._backend  # the parts of a list, timed one by one (a benchmark's look inside)
    db.list(LogicalSwitchPort)
    for _ in range(lists):
        t0 = time.perf_counter()
        backend._sync("OVN_Northbound")
        t1 = time.perf_counter()
        replica = backend.replica
        with replica.cond:
            records = replica.select(["LogicalSwitchPort"], None)
        t2 = time.perf_counter()
        decode_each(LogicalSwitchPort, records)
        t3 = time.perf_counter()
        c = time.process_time()
        assert len(db.list(LogicalSwitchPort)) == objects
        out["list_cpu_ms"].append((time.process_time() - c) * 1e3)
        out["list_ms"].append((time.perf_counter() - t3) * 1e3)
        out["sync_ms"].append((t1 - t0) * 1e3)
        out["select_ms"].append((t2 - t1) * 1e3)
        out["decode_ms"].append((t3 - t2) * 1e3)
print(json.dumps({k: statistics.median(v) for k, v in out.items()}))
"""


def _bench(src: str) -> float:
    args = ["--backends", "ovsdb", "--spawn", "--quick", "--workloads", "list", "--no-plots"]
    figures = nbdb_bench(src, args)
    return float(figures["ratios"][0]["ratio"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, help="the first checkout's src/ (e.g. main's)")
    parser.add_argument("--b", required=True, help="the second checkout's src/")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--lists", type=int, default=20, help="lists per side and round (medians)")
    parser.add_argument("--bench", action="store_true", help="also run the quick list bench per side")
    opts = parser.parse_args()
    from nbdb.testing.servers import start_server

    sides = {"a": opts.a, "b": opts.b}
    rows: dict[str, list[dict[str, float]]] = {"a": [], "b": []}
    with start_server("ovsdb") as server:
        for n in range(opts.rounds):
            for side in ["a", "b"] if n % 2 == 0 else ["b", "a"]:
                ns = f"ab-{uuid.uuid4().hex[:8]}"
                row = run_json(sides[side], WORKER, [server.url, ns, str(opts.objects), str(opts.lists)])
                if opts.bench:
                    row["bench_ratio"] = _bench(sides[side])
                rows[side].append(row)
                shown = " ".join(f"{k}={v:.3g}" for k, v in row.items())
                print(f"round {n} {side} load {loadavg()}: {shown}", flush=True)
    print_medians(rows, 14)


if __name__ == "__main__":
    main()
