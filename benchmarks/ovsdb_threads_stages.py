"""Where an OVSDB create's client CPU goes when N threads write through one ``Database``.

The bench's ``threads`` workload (8 threads creating ports on one switch) is CPU-bound in the
client's one interpreter on a quiet machine, so its ratio against the raw clients is the
client's CPU per create. This splits it, per round, in one process against a throwaway
ovsdb-server (``--count`` creates after 200 warm-up ones)::

    python benchmarks/ovsdb_threads_stages.py --src src --threads 1,8 --rounds 3

Printed per round: the process's CPU per create (user, system), the connection's I/O thread's
(reading replies and updates, applying each update to the replica), the cyclic collector's
(``gc.callbacks``, whichever thread it ran in), voluntary context switches per create of the
writers and of the I/O thread (``/proc/self/task``), and the writers' thread CPU per create in
each stage, each stage's function wrapped with ``time.thread_time_ns`` (nbdb's own functions,
looked up at call time; the wrapper's cost, ≈ 1 µs a call, is inside the figures): building the
port (the bench's part, the raw clients build theirs too), ``db.create`` in all, of it
``put_of``, the commit (``_commit``), of that planning (``plan_commit``, under the replica's
lock), the group commit (``GroupTransact.__call__``: queueing, the leader's send and wait for
the reply, the hand-offs) and of it the leader's ``_send``, and read-your-writes (``_result``).
"""

from __future__ import annotations

import argparse
import statistics

from abrun import loadavg, run_json

WORKER = r"""
import collections, gc, json, os, sys, threading, time
import nbdb
import nbdb.api as api
import nbdb.families.ovsdb.family as fam
import nbdb.families.ovsdb.group as grp
from nbdb.bench.data import make_port
from nbdb.bench.workloads.common import populate
from nbdb.testing.servers import start_server
count, nth = int(sys.argv[1]), int(sys.argv[2])
stage = collections.defaultdict(int)
on = [False]
def wrap(owner, name, key):
    f = getattr(owner, name)
    def timed(*a, **k):
        t = time.thread_time_ns()
        try:
            return f(*a, **k)
        finally:
            if on[0]:
                stage[key] += time.thread_time_ns() - t
    setattr(owner, name, timed)
wrap(api, "put_of", "put_of")
wrap(fam, "plan_commit", "plan")
wrap(grp.GroupTransact, "__call__", "group")
wrap(grp.GroupTransact, "_send", "leader_send")
wrap(fam.OvsdbFamilyBackend, "_result", "ryw")
wrap(fam.OvsdbFamilyBackend, "_commit", "commit")
collecting = [0, 0]
def _collector(phase, info):
    if phase == "start":
        collecting[1] = time.thread_time_ns()
    else:
        collecting[0] += time.thread_time_ns() - collecting[1]
gc.callbacks.append(_collector)
def task(tid):
    # (CPU seconds, voluntary context switches) of one thread of this process
    stat = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
    status = open(f"/proc/self/task/{tid}/status").read()
    vol = int(status.split("\nvoluntary_ctxt_switches:")[1].split()[0])
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK"), vol
switches = [0]
with start_server("ovsdb") as server, nbdb.connect(server.url, namespace="stages") as db:
    switch = populate(db, 0, "tenant-0")[0]
    for i in range(200):
        db.create(make_port(switch, 10**6 + i, "tenant-0"))
    per = count // nth
    def work(n):
        vol = task(threading.get_native_id())[1]
        for i in range(n * per, (n + 1) * per):
            t = time.thread_time_ns()
            port = make_port(switch, 10**5 + i, "tenant-0")
            u = time.thread_time_ns()
            db.create(port)
            stage["model"] += u - t
            stage["create"] += time.thread_time_ns() - u
        switches[0] += task(threading.get_native_id())[1] - vol
    threads = [threading.Thread(target=work, args=(n,), name=f"writer-{n}") for n in range(nth)]
    io = [t.native_id for t in threading.enumerate() if t.name.startswith("nbdb-ovsdb-io")]
    before, cpu, gc_before = [task(t) for t in io], os.times(), collecting[0]
    on[0] = True
    wall = time.perf_counter()
    for t in threads: t.start()
    for t in threads: t.join()
    wall = time.perf_counter() - wall
    on[0] = False
    after, cpu2 = [task(t) for t in io], os.times()
    n = per * nth
    io_cpu = sum(a[0] - b[0] for a, b in zip(after, before))
    io_vol = sum(a[1] - b[1] for a, b in zip(after, before))
    writers_vol = switches[0]
    out = {"rate": n / wall, "cpu_us": (cpu2.user + cpu2.system - cpu.user - cpu.system) / n * 1e6,
           "sys_us": (cpu2.system - cpu.system) / n * 1e6, "io_us": io_cpu / n * 1e6,
           "gc_us": (collecting[0] - gc_before) / n / 1e3, "writer_vcs": writers_vol / n, "io_vcs": io_vol / n}
    out.update({f"{k}_us": v / n / 1e3 for k, v in stage.items()})
print(json.dumps(out))
"""

ORDER = [
    "rate",
    "cpu_us",
    "sys_us",
    "io_us",
    "gc_us",
    "writer_vcs",
    "io_vcs",
    "model_us",
    "create_us",
    "put_of_us",
    "commit_us",
    "plan_us",
    "group_us",
    "leader_send_us",
    "ryw_us",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="the checkout's src/")
    parser.add_argument("--threads", default="1,8", help="thread counts, comma-separated, run in turns")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=8000)
    opts = parser.parse_args()
    counts = [int(c) for c in opts.threads.split(",")]
    rows: dict[int, list[dict[str, float]]] = {c: [] for c in counts}
    for n in range(opts.rounds):
        for threads in counts if n % 2 == 0 else counts[::-1]:
            got = run_json(opts.src, WORKER, [str(opts.count), str(threads)])
            rows[threads].append(got)
            shown = " ".join(f"{k}={got[k]:.3g}" for k in ORDER if k in got)
            print(f"round {n} threads {threads} load {loadavg()}: {shown}", flush=True)
    print("medians:")
    for threads, got in rows.items():
        shown = " ".join(f"{k}={statistics.median(r[k] for r in got):.3g}" for k in ORDER if k in got[0])
        print(f"  threads {threads}: {shown}")


if __name__ == "__main__":
    main()
