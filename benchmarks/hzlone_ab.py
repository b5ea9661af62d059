"""What a lone commit's send schedule costs the commit and the client's other threads, source trees in turns.

A Hazelcast backend sends its member-side commit task from the committing thread outside the send gate
when no other thread sent through it in the last 50 ms (``SendGate.alone``); other schedules hold the
gate until the task's reply, or send every task from a read's reply callback (one round trip more). Each
tree runs, in a rotating order, in its own process against one shared member: thread 0 creates a router
every 60 ms, thread 1 gets a key after pauses of 40-100 ms (a commit is sent alone when the get before
it was 50 ms ago or more; some gets begin while such a task is out; with gets every 0-20 ms no commit
was alone). With ``--contend`` a second client of the same process holds the commit lock
20 ms of every 100 ms (as another client's long commit or list would: a lone task then waits for it in
the member; the lock is taken through the backend's private proxy, for the measurement only). Printed
per tree and round: create wall median, get wall p50 / p99 / max and how many gets took over 2 ms, the
median and max of the gets begun while thread 0 was creating (what a held gate makes them wait), and
whether the reactor's waker was left "awake" while idle (the lost wake-up; read for the diagnosis only,
private); at the end the medians over rounds::

    python benchmarks/hzlone_ab.py --tree main=/work/main/src --tree hold=/tmp/hold/src --rounds 4 --secs 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from nbdb.testing.servers import start_server

WORKER = r"""
import json, random, statistics, sys, threading, time, uuid
import nbdb
from nbdb.models.ovn import LogicalRouter
url, secs, contend = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1"
ns = f"lone-{uuid.uuid4().hex[:8]}"
creates, gets, spans, during = [], [], [], []
with nbdb.connect(url, namespace=ns) as db, nbdb.connect(url, namespace=ns) as rival:
    backend = db.backend
    db.create(LogicalRouter(name="seed"))
    end = time.monotonic() + secs
    def committer():
        n = 0
        while time.monotonic() < end:
            time.sleep(0.06)
            began = time.perf_counter()
            db.create(LogicalRouter(name=f"c{n}"))
            creates.append(time.perf_counter() - began)
            spans.append((began, time.perf_counter()))
            n += 1
    def reader():
        while time.monotonic() < end:
            time.sleep(0.04 + random.random() * 0.06)
            began = time.perf_counter()
            backend.get_key("x/none")
            gets.append(time.perf_counter() - began)
            during.append((began, gets[-1]))
    def other():  # another client holds the commit lock 20 ms of every 100 (as a long commit or a list would)
        from nbdb.backends.hazelcast._backend import _COMMIT_LOCK
        meta = rival.backend.meta_async
        while time.monotonic() < end:
            meta.lock(_COMMIT_LOCK, lease_time=5).result()
            time.sleep(0.02)
            meta.unlock(_COMMIT_LOCK).result()
            time.sleep(0.08)
    threads = [threading.Thread(target=f, daemon=True) for f in (committer, reader) + ((other,) if contend else ())]
    for t in threads:
        t.start()
    for t in threads:
        t.join(secs + 60)
    time.sleep(0.05)
    stuck = bool(backend._client._reactor._loop.waker.awake)
gets.sort()
# gets that started while a commit of thread 0 was under way (a lone task out, or about to be)
inside = sorted(took for began, took in during if any(s <= began < e for s, e in spans)) or [0.0]
print(json.dumps({
    "create": statistics.median(creates) * 1e3, "get50": gets[len(gets) // 2] * 1e3,
    "get99": gets[int(len(gets) * 0.99)] * 1e3, "getmax": gets[-1] * 1e3,
    "slow": sum(g > 0.002 for g in gets), "gets": len(gets), "commits": len(creates), "stuck": stuck,
    "in50": inside[len(inside) // 2] * 1e3, "inmax": inside[-1] * 1e3, "ins": len(inside),
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", required=True, help="NAME=path/to/src (two or more)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--secs", type=float, default=8.0)
    parser.add_argument("--contend", action="store_true", help="a second client holds the commit lock 20 ms in 100")
    opts = parser.parse_args()
    trees = [tuple(t.split("=", 1)) for t in opts.tree]
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
    server = start_server("hazelcast")
    try:
        for round_ in range(opts.rounds):
            order = trees[round_ % len(trees) :] + trees[: round_ % len(trees)]
            for name, src in order:
                env = dict(os.environ, PYTHONPATH=src)
                out = subprocess.run(
                    [sys.executable, "-c", WORKER, server.url, str(opts.secs), "1" if opts.contend else "0"],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=opts.secs + 180,
                    check=True,
                ).stdout
                got = json.loads(out.strip().splitlines()[-1])
                results[name].append(got)
                load = os.getloadavg()[0]
                print(
                    f"round {round_} {name:8s} create {got['create']:6.2f} ms  get p50 {got['get50']:5.2f} "
                    f"p99 {got['get99']:6.2f} max {got['getmax']:7.2f} ms  >2ms {got['slow']}/{got['gets']}  "
                    f"commits {got['commits']}  lost {got['stuck']}  load {load:.1f}  | gets begun during a create: "
                    f"{got['ins']}, median {got['in50']:.2f} max {got['inmax']:.2f} ms",
                    flush=True,
                )
    finally:
        server.stop()
    print("medians over rounds:")
    for name, rows in results.items():
        keys = ("create", "get50", "get99", "getmax", "slow", "in50", "inmax")
        med = {k: statistics.median(r[k] for r in rows) for k in keys}
        lost = sum(bool(r["stuck"]) for r in rows)
        print(
            f"  {name:8s} create {med['create']:6.2f} ms  get p50 {med['get50']:5.2f} p99 {med['get99']:6.2f} "
            f"max {med['getmax']:7.2f} ms  >2ms {med['slow']:.0f}  lost {lost}/{len(rows)}  | during a create: "
            f"median {med['in50']:.2f} max {med['inmax']:.2f} ms"
        )


if __name__ == "__main__":
    main()
