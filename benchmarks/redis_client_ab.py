"""The client's instructions per object of Redis writes, two checkouts in turns (the server runs outside callgrind).

One plain ``redis-server`` (no persistence) serves every run. Each side of each round runs one
worker process under callgrind with collection off; each phase runs inside ``operator.call`` and
callgrind collects only inside that C function (``--toggle-collect``) and dumps after it
(``--dump-after``), so a phase's dump holds the client's instructions for exactly that phase:
creates in transactions of 10 and of 100, then single creates, CAS updates and deletes, all of
ports of one switch, through nbdb and then through ``raw+contract`` (the contract's server work by
hand, see ``nbdb.bench.raw.redis``). The ports (nbdb's models, raw's dicts) are built before each
phase: what is counted is the client's planning, encoding and sending, and reading the reply. Runs
of one build agree to about 1 % (ids are random, hashing seeded), which is why this counts
instructions rather than timing a shared machine. See "Redis and etcd writes: the kv
family's planning per object" in docs/benchmarks.md::

    python benchmarks/redis_client_ab.py --a /work/main/src --b src --rounds 2
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from pathlib import Path

from abrun import ab_parser, callgrind_phases, in_turns, loadavg, start_redis

WORKER = r"""
import json, operator, sys, uuid
import nbdb
from nbdb.bench.data import make_port, port_doc
from nbdb.bench.raw.redis import ContractClient
from nbdb.bench.workloads.common import PORT, populate, populate_raw

url, count = sys.argv[1], int(sys.argv[2])
names = iter(range(10**9))

def phases(db, switch):
    def txn(size, n):
        for _ in range(n // size):
            ports = [make_port(switch, next(names)) for _ in range(size)]
            def run(ports=ports):
                with db.transaction() as t:
                    for p in ports:
                        t.create(p)
            yield run
    for size in (10, 100):
        for run in txn(size, 2 * size):  # warm-up, not counted
            run()
        runs = list(txn(size, count))
        operator.call(lambda: [run() for run in runs])  # dumped: nbdb-txn10, nbdb-txn100
    warm = [db.create(make_port(switch, next(names))) for _ in range(20)]
    for p in [db.update(p.replace(up=True)) for p in warm]:
        db.delete(p)
    new = [make_port(switch, next(names)) for _ in range(count)]
    made = operator.call(lambda: [db.create(p) for p in new])
    changed = [p.replace(up=not p.up) for p in made]
    done = operator.call(lambda: [db.update(p) for p in changed])
    operator.call(lambda: [db.delete(p) for p in done])

with nbdb.connect(url + "?namespace=c" + uuid.uuid4().hex[:8]) as db:
    switch, _ = populate(db, 0)
    phases(db, switch)

raw = ContractClient(url, "r" + uuid.uuid4().hex[:8])
switch_id, _ = populate_raw(raw, 0)
def raw_txn(docs):  # what the bench's raw transaction does per batch (nbdb.bench.workloads.txn)
    raw.create_many([(raw.key(PORT, d["id"]), json.dumps(d).encode()) for d in docs])

for size in (10, 100):
    batches = []
    for n in (2 * size, count):
        batches = [[port_doc(switch_id, next(names)) for _ in range(size)] for _ in range(n // size)]
        if n == count:
            break
        for docs in batches:
            raw_txn(docs)
    operator.call(lambda: [raw_txn(docs) for docs in batches])
docs = [port_doc(switch_id, next(names)) for _ in range(count)]
operator.call(lambda: [raw.create(raw.key(PORT, d["id"]), json.dumps(d).encode()) for d in docs])
operator.call(lambda: [raw.update(raw.key(PORT, d["id"]), json.dumps({**d, "up": True}).encode(), 1) for d in docs])
operator.call(lambda: [raw.delete(raw.key(PORT, d["id"]), 2) for d in docs])
raw.cleanup()
raw.close()
"""

PHASES = ("txn10", "txn100", "create", "update", "delete")
COLUMNS = [f"{who}-{p}" for who in ("nbdb", "raw") for p in PHASES]


def _side(src: str, url: str, count: int) -> dict[str, float]:
    """One worker on ``src`` under callgrind: the client's instructions per object of each phase."""
    totals = callgrind_phases(src, WORKER, [url, str(count)])
    if len(totals) != len(COLUMNS):
        raise RuntimeError(f"{src}: {len(totals)} dumps, expected {len(COLUMNS)}")
    return {c: t / count for c, t in zip(COLUMNS, totals, strict=True)}


def main() -> None:
    args = ab_parser(__doc__, 300).parse_args()
    sides = {"a": args.a, "b": args.b}
    results: dict[str, list[dict[str, float]]] = {"a": [], "b": []}
    work = Path(tempfile.mkdtemp(prefix="nbdb-redis-client-srv-"))
    server, url = start_redis(work)
    try:
        print(f"load average before: {loadavg()}", flush=True)
        for n, side in in_turns(args.rounds):
            got = _side(sides[side], url, args.count)
            results[side].append(got)
            figures = "  ".join(f"{c} {got[c] / 1000:6.1f}k" for c in COLUMNS)
            print(f"round {n} {side}: {figures}  load {loadavg()}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average after: {loadavg()}")
    print("client instructions per object, medians (k):")
    for phase in PHASES:
        a, b = (statistics.median(r[f"nbdb-{phase}"] for r in results[s]) / 1000 for s in ("a", "b"))
        raw = statistics.median(r[f"raw-{phase}"] for r in results["a"] + results["b"]) / 1000
        print(f"  {phase:7} a {a:7.1f}  b {b:7.1f}  b/a {b / a:5.3f}  raw+contract {raw:6.1f}  b/raw {b / raw:5.2f}")


if __name__ == "__main__":
    main()
