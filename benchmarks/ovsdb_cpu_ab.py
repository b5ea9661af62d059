"""A/B of OVSDB commits' client CPU: nbdb at two checkouts, alternating, in one run.

Wall-clock ratios on a shared 2-core machine swing by 2x between runs of one build, so this
measures what is steadier, the client process's CPU per commit, beside the rates::

    python benchmarks/ovsdb_cpu_ab.py --a /path/to/main/src --b src --rounds 6 --count 1500

Each round runs, in a rotating order, one process per side against one throwaway
ovsdb-server: ``--count`` single creates of ports, ``--count`` CAS updates of them
(``replace(up=True)``), ``--count`` deletes of them, ``--count`` ports created in
transactions of 10 and of 100, and ``--count`` creates from 8 threads through one Database.
Printed per side: process CPU per commit (per object in transactions; all threads), the
callers' own CPU (the writing threads'; the rest is the connection's I/O thread and the
like), the CPU the cyclic garbage collector took (``gc_us``, in whichever thread it ran)
and the rate.
With ``--bench``, each side also runs ``nbdb bench --backends ovsdb --spawn --quick
--workloads threads``, and the nbdb/raw ratios of its two thread workloads are printed.
Medians at the end; the load average per round.
"""

from __future__ import annotations

import argparse
import contextlib
import uuid

from abrun import loadavg, nbdb_bench, print_medians, run_json

WORKER = r"""
import gc, json, sys, threading, time
import nbdb
from nbdb.bench.data import make_port
from nbdb.bench.workloads.common import populate
url, ns, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = {}
collecting = [0, 0]  # thread CPU spent in the cyclic collector, and when the current collection started
def _collector(stage, info):
    if stage == "start":
        collecting[1] = time.thread_time_ns()
    else:
        collecting[0] += time.thread_time_ns() - collecting[1]
gc.callbacks.append(_collector)
def phase(name, body, n):
    g = collecting[0]
    c, t, w = time.process_time_ns(), time.thread_time_ns(), time.perf_counter_ns()
    body()
    c, t, w = time.process_time_ns() - c, time.thread_time_ns() - t, time.perf_counter_ns() - w
    out[name] = {"cpu_us": c / n / 1e3, "caller_us": t / n / 1e3, "rate": n / (w / 1e9),
                 "gc_us": (collecting[0] - g) / n / 1e3}
with nbdb.connect(url, namespace=ns) as db:
    switch = populate(db, 0, "tenant-0")[0]
    for i in range(50):
        db.create(make_port(switch, 10**6 + i, "tenant-0"))
    ports = []
    phase("create", lambda: ports.extend(db.create(make_port(switch, i, "tenant-0")) for i in range(count)), count)
    phase("update", lambda: ports.__setitem__(slice(None), [db.update(p.replace(up=True)) for p in ports]), count)
    phase("delete", lambda: [db.delete(p) for p in ports], count)
    for size in (10, 100):
        batches = max(1, count // size)
        def txn(size=size, batches=batches):
            for b in range(batches):
                with db.transaction() as t:
                    for i in range(b * size, (b + 1) * size):
                        t.create(make_port(switch, size * 10**4 + i, "tenant-0"))
        phase(f"txn{size}", txn, batches * size)
    per = count // 8
    spent = []
    def work(n):
        t = time.thread_time_ns()
        for i in range(n * per, (n + 1) * per):
            db.create(make_port(switch, 10**5 + i, "tenant-0"))
        spent.append(time.thread_time_ns() - t)
    def threads():
        ts = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in ts: t.start()
        for t in ts: t.join()
    phase("threads8", threads, per * 8)
    out["threads8"]["caller_us"] = sum(spent) / (per * 8) / 1e3  # the 8 writers' own CPU
print(json.dumps(out))
"""


def _bench(src: str) -> dict[str, float]:
    args = ["--backends", "ovsdb", "--spawn", "--quick", "--workloads", "threads", "--no-plots"]
    figures = nbdb_bench(src, args)
    ratios = {}
    for r in figures["ratios"]:
        ratios["t16" if r["params"] else "t8"] = r["ratio"]
        ratios[("t16" if r["params"] else "t8") + "_rate"] = r["nbdb_rate_per_s"]
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, help="the first checkout's src/ (e.g. main's)")
    parser.add_argument("--b", required=True, help="the second checkout's src/")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--count", type=int, default=1500)
    parser.add_argument("--bench", action="store_true", help="also run the quick threads bench per side")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="a new ovsdb-server for every run (else one for all: its database, and each client's replica, grow)",
    )
    opts = parser.parse_args()
    from nbdb.testing.servers import start_server

    sides = {"a": opts.a, "b": opts.b}
    rows: dict[str, list[dict[str, float]]] = {"a": [], "b": []}
    with start_server("ovsdb") as shared:
        for n in range(opts.rounds):
            order = ["a", "b"] if n % 2 == 0 else ["b", "a"]
            for side in order:
                row: dict[str, float] = {}
                with contextlib.ExitStack() as stack:
                    server = stack.enter_context(start_server("ovsdb")) if opts.fresh else shared
                    ns = f"ab-{uuid.uuid4().hex[:8]}"
                    got = run_json(sides[side], WORKER, [server.url, ns, str(opts.count)])
                for name, fig in got.items():
                    row.update({f"{name}_{k}": v for k, v in fig.items()})
                if opts.bench:
                    row.update(_bench(sides[side]))
                rows[side].append(row)
                shown = " ".join(f"{k}={v:.3g}" for k, v in row.items())
                print(f"round {n} {side} load {loadavg()}: {shown}", flush=True)
    print_medians(rows, 22, 10)


if __name__ == "__main__":
    main()
