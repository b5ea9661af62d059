"""A/B of Cassandra's commit rate with many writers over many topics, and where a commit's time goes.

``nbdb bench``'s ``write.create.threads threads=16 topics=16`` (16 threads sharing one Database, each
creating ports in a topic of its own), run by one process per side in turns against one throwaway
node (``--procs``: that many processes at once in one namespace, rates summed), with measuring hooks
(not part of nbdb) around the sequencer's takes, the partitions' batches and the requests sent::

    python benchmarks/cassandra_seq_ab.py --a /path/to/main/src --b src --rounds 4 --count 2000

Printed per round and as medians: commits/s, the sequencer's compare-and-sets per take and per
commit, revisions per take (group size), the take's and the batch's mean wall time, the take's
and a commit's wait for its revision (from asking to having it) p50/p99/max (of several processes:
the mean of their p50 and p99, the largest max), how many
partition batches were in flight at once (mean, sampled at each send), and client and node CPU
per commit (µs). ``--taken``: every name is held already by a port of another topic, so that each
create is refused (``UniqueViolationError``): what a unique-name conflict costs, per create, by kind.
"""

from __future__ import annotations

import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

from abrun import ab_parser, in_turns, loadavg, run_json

WORKER = r"""
import json, sys, threading, time
import nbdb
from nbdb.bench.data import make_port
from nbdb.bench.workloads.common import populate
from nbdb.families.widecolumn import sequencer as S, commit as C
url, ns = sys.argv[1], sys.argv[2]
count, pid, threads, topics = (int(a) for a in sys.argv[3:7])
start_at = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0
taken = len(sys.argv) > 8 and sys.argv[8] == "taken"
def node_cpu():
    fields = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) * 1e6 / 100
stat = {"takes": 0, "numbers": 0, "cas": 0, "take_s": 0.0, "sends": 0, "send_s": 0.0, "inflight": 0}
takes_s = []
lock = threading.Lock()
inflight = [0]
take = S.RevisionSequencer._take
def timed_take(self, group):
    t = time.perf_counter()
    got = take(self, group)
    with lock:
        stat["takes"] += 1; stat["numbers"] += len(got); stat["take_s"] += time.perf_counter() - t
        takes_s.append(time.perf_counter() - t)
    return got
S.RevisionSequencer._take = timed_take
allocs_s = []
allocate = S.RevisionSequencer.allocate
def timed_allocate(self, *args):
    t = time.perf_counter()
    got = allocate(self, *args)
    with lock:
        allocs_s.append(time.perf_counter() - t)
    return got
S.RevisionSequencer.allocate = timed_allocate
from nbdb.backends.cassandra.store import CqlStore
sent = {}
def tally(key, n=1):
    with lock:
        sent[key] = sent.get(key, 0) + n
select, start_reads, start = CqlStore.select, CqlStore.start_reads, CqlStore._start
def c_select(self, query, params, *, serial=False):
    tally(f"read {query.table}{' serial' if serial else ''}")
    return select(self, query, params, serial=serial)
def c_reads(self, reads, *, serial=False):
    for q, _ in reads:
        tally(f"read {q.table}{' serial' if serial else ''}")
    return start_reads(self, reads, serial=serial)
def c_start(self, writes, tracked):
    cond = any(getattr(w, "conditions", None) or getattr(w, "if_not_exists", False) for w, _ in writes)
    tally(f"write {writes[0][0].table}{' lwt' if cond else ''}")
    return start(self, writes, tracked)
CqlStore.select, CqlStore.start_reads, CqlStore._start = c_select, c_reads, c_start
send = C.Committer.send
def timed_send(self, part, revision, plan):
    with lock:
        inflight[0] += 1; stat["inflight"] += inflight[0]
    t = time.perf_counter()
    try:
        return send(self, part, revision, plan)
    finally:
        with lock:
            inflight[0] -= 1; stat["sends"] += 1; stat["send_s"] += time.perf_counter() - t
C.Committer.send = timed_send
with nbdb.connect(url, namespace=ns) as db:
    store = db.backend._store if hasattr(db.backend, "_store") else None
    switches = [populate(db, 0, f"tenant-{t}")[0] for t in range(topics)]
    for t in range(topics):
        for i in range(5):
            db.create(make_port(switches[t], 900_000 + t * 10 + i, f"tenant-{t}"))
    per = count // threads
    held = {}
    if taken:  # every name the writers create is held already, by a port in another topic
        for n in range(threads):
            for i in range(n * per, (n + 1) * per):
                held[i] = db.create(make_port(switches[(n + 1) % topics], i, f"tenant-{(n + 1) % topics}")).name
    def port(n, i):
        made = make_port(switches[n % topics], i, f"tenant-{n % topics}")
        if not taken:
            return made
        fields = made.model_dump(exclude={"id", "version"})
        fields["name"] = held[i]
        return type(made)(**fields)  # an id of its own, made here (fresh), and a name held already
    apply_calls = [0]
    for k in stat: stat[k] = 0 if isinstance(stat[k], int) else 0.0
    sent.clear(); takes_s.clear(); allocs_s.clear()
    per = count // threads
    gate = threading.Barrier(threads + 1)
    errs = []
    def body(n):
        gate.wait()
        try:
            for i in range(n * per, (n + 1) * per):
                try:
                    db.create(port(n, i))
                except nbdb.UniqueViolationError:
                    if not taken:
                        raise
                else:
                    assert not taken, "a create of a name held already was not refused"
        except BaseException as exc:
            errs.append(exc)
    ts = [threading.Thread(target=body, args=(n,), daemon=True) for n in range(threads)]
    for t in ts: t.start()
    time.sleep(max(0.0, start_at - time.time()))  # processes of one round start together
    m, c = node_cpu(), time.process_time()
    gate.wait()
    w = time.perf_counter()
    for t in ts: t.join()
    wall = time.perf_counter() - w
    if errs: raise errs[0]
    n = per * threads
    out = {"rate": n / wall, "takes/commit": stat["takes"] / n, "group": stat["numbers"] / max(1, stat["takes"]),
           "take ms": 1e3 * stat["take_s"] / max(1, stat["takes"]),
           "send ms": 1e3 * stat["send_s"] / max(1, stat["sends"]),
           "inflight": stat["inflight"] / max(1, stat["sends"]), "numbers/commit": stat["numbers"] / n,
           "client us": (time.process_time() - c) / n * 1e6, "node us": (node_cpu() - m) / n}
    for name, times in (("take", takes_s), ("wait", allocs_s)):  # wait: a commit's, from asking to its revision
        ordered = sorted(times) or [0.0]
        out.update({f"{name} p50 ms": 1e3 * ordered[len(ordered) // 2],
                    f"{name} p99 ms": 1e3 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
                    f"{name} max ms": 1e3 * ordered[-1]})
    out["seq lwt/take"] = sent.get("write nbdb_seq lwt", 0) / max(1, stat["takes"])
    out.update({k: v / n for k, v in sorted(sent.items())})
print(json.dumps(out))
"""


def main() -> None:
    parser = ab_parser(__doc__, 2000)
    parser.add_argument("--url", help="a running node's URL (default: start one)")
    parser.add_argument("--pid", type=int, help="its process id (node CPU)")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--topics", type=int, default=16)
    parser.add_argument("--only", choices=("a", "b"), help="run only this side")
    parser.add_argument("--procs", type=int, default=1, help="writing processes per round, in one namespace")
    parser.add_argument("--warm", type=int, default=1, help="unrecorded rounds first (the node's JIT warms up)")
    parser.add_argument(
        "--taken", action="store_true", help="every name is held already (each create is refused: unique conflicts)"
    )
    opts = parser.parse_args()
    from nbdb.testing.servers import start_server

    sides = {"a": opts.a, "b": opts.b}
    rows: dict[str, list[dict[str, float]]] = {"a": [], "b": []}
    with ExitStack() as stack:
        if opts.url:
            url, pid = opts.url, opts.pid
        else:
            server = stack.enter_context(start_server("cassandra"))
            url, pid = server.url, server.members[0].pid
        turns = [(-1, side) for _ in range(opts.warm) for side in "ab"] + list(in_turns(opts.rounds))
        for n, side in turns:
            if opts.only and side != opts.only:
                continue
            ns = f"ab{uuid.uuid4().hex[:8]}"
            args = [url, ns, str(opts.count), str(pid), str(opts.threads), str(opts.topics)]
            if opts.procs == 1:
                got = run_json(sides[side], WORKER, [*args, "0", "taken" if opts.taken else ""])
            else:  # several processes at once: rates summed, the rest averaged
                argv = [*args, str(time.time() + 20), "taken" if opts.taken else ""]
                with ThreadPoolExecutor(opts.procs) as pool:
                    runs = [pool.submit(run_json, sides[side], WORKER, argv) for _ in range(opts.procs)]
                    each = [run.result() for run in runs]
                got = {k: statistics.mean(e.get(k, 0.0) for e in each) for k in each[0]}
                got["rate"] = sum(e["rate"] for e in each)
                got["node us"] /= opts.procs  # each measured the node's CPU for every process's commits
                got["take max ms"] = max(e["take max ms"] for e in each)
                got["wait max ms"] = max(e["wait max ms"] for e in each)
            if n < 0:
                print(f"warm-up {side} load {loadavg()}: rate={got['rate']:.2f}", flush=True)
                continue
            rows[side].append(got)
            shown = " ".join(f"{k.replace(' ', '_')}={v:.2f}" for k, v in got.items())
            print(f"round {n} {side} load {loadavg()}: {shown}", flush=True)
    print("medians: a | b")
    keys = sorted(
        {k for side in rows.values() for r in side for k in r}, key=lambda k: (k.startswith(("read", "write")), k)
    )
    for key in keys:
        got = [statistics.median(r.get(key, 0.0) for r in rows[s]) if rows[s] else float("nan") for s in "ab"]
        print(f"  {key:16s} {got[0]:9.2f} | {got[1]:9.2f}")


if __name__ == "__main__":
    main()
