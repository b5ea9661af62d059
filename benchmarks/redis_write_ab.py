"""Redis single writes and transactions of creates, two checkouts in turns: the server's instructions per write.

Single creates, CAS updates and deletes, and creates in transactions of 10 and of 100
(counted per object).

Each side of each round gets a fresh ``redis-server`` under callgrind (``--hz 1``, no
persistence); its worker creates a switch, warms up, then makes ``--count`` creates of
ports referencing it, updates them, deletes them, then creates ``--count`` more in
transactions of 10 and ``--count`` more in transactions of 100, through nbdb and then through
``raw+contract`` (the contract's server work by hand, see ``nbdb.bench.raw.redis``),
and asks callgrind for a dump after each phase. The figures are instructions the
server executed per operation (everything: the script, the calls inside it, reading
the request and writing the reply), medians over the rounds; runs of one build agree
to about 1 %, which is why this counts instructions rather than timing a shared machine.
See "Redis single writes: one object's commit without the general tables" in
docs/benchmarks.md.
"""

from __future__ import annotations

import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from abrun import ab_parser, in_turns, loadavg, run_json, start_redis

WORKER = r"""
import json, subprocess, sys
import nbdb
from nbdb.bench.data import make_port, make_switch, port_doc
from nbdb.bench.raw.redis import ContractClient
from nbdb.bench.workloads.common import PORT, populate_raw

url, pid, count = sys.argv[1], sys.argv[2], int(sys.argv[3])

def dump(name):
    subprocess.run(["callgrind_control", "-d", name, pid], check=True, capture_output=True)

with nbdb.connect(url + "?namespace=ab") as db:
    switch = db.create(make_switch(0))
    warm = [db.create(make_port(switch, 100_000 + i)) for i in range(30)]
    warm = [db.update(p.replace(up=True)) for p in warm]
    for p in warm:
        db.delete(p)
    dump("warm")
    ports = [db.create(make_port(switch, i)) for i in range(count)]
    dump("nbdb-create")
    extra = {"neutron:revision_number": "2"}
    ports = [db.update(p.replace(up=True, external_ids={**p.external_ids, **extra})) for p in ports]
    dump("nbdb-update")
    for p in ports:
        db.delete(p)
    dump("nbdb-delete")
    for size in (10, 100):
        for start in range(0, count, size):
            with db.transaction() as txn:
                for i in range(start, start + size):
                    txn.create(make_port(switch, size * 1_000_000 + i))
        dump(f"nbdb-txn{size}")

raw = ContractClient(url, "abraw")
switch_id, _ = populate_raw(raw, 0)
for phase in ("warm", "raw-"):
    n = 30 if phase == "warm" else count
    docs = [port_doc(switch_id, i) for i in range(n)]
    for d in docs:
        raw.create(raw.key(PORT, d["id"]), json.dumps(d).encode())
    if phase != "warm":
        dump("raw-create")
    for d in docs:
        raw.update(raw.key(PORT, d["id"]), json.dumps({**d, "up": True}).encode(), 1)
    if phase != "warm":
        dump("raw-update")
    for d in docs:
        raw.delete(raw.key(PORT, d["id"]), 2)
    dump("warm" if phase == "warm" else "raw-delete")
for size in (10, 100):
    docs = [port_doc(switch_id, size * 1_000_000 + i) for i in range(count)]
    for start in range(0, count, size):
        raw.create_many([(raw.key(PORT, d["id"]), json.dumps(d).encode()) for d in docs[start : start + size]])
    dump(f"raw-txn{size}")
raw.close()
print(json.dumps({}))
"""

OPS = ("create", "update", "delete", "txn10", "txn100")
PHASES = tuple(f"{side}-{op}" for side in ("nbdb", "raw") for op in OPS)


def _side(src: str, count: int, scripts_only: bool = False) -> dict[str, float]:
    """One fresh server under callgrind, one worker on ``src``: instructions per operation of each phase.

    ``scripts_only``: count only inside the script calls (EVALSHA: the script and the calls it
    makes), not the request's parsing, the reply, nor the server's cron, whose share per operation
    grows with the wall time of a phase under callgrind and so with the machine's load."""
    work = Path(tempfile.mkdtemp(prefix="nbdb-redis-ab-"))
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/cg.out"]
    if scripts_only:
        argv += ["--collect-atstart=no", "--toggle-collect=evalShaCommand"]
    server, url = start_redis(work, argv, timeout=60)
    try:
        run_json(src, WORKER, [url, str(server.pid), str(count)])
        out: dict[str, float] = {}
        for dump in work.glob("cg.out.*"):
            text = dump.read_text(errors="replace")
            trigger = re.search(r"^desc: Trigger: (?:Client Request: |dump )(\S+)", text, re.M)
            totals = re.search(r"^(?:totals|summary): (\d+)", text, re.M)
            if trigger and totals and trigger.group(1) in PHASES:
                out[trigger.group(1)] = int(totals.group(1)) / count
        return out
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = ab_parser(__doc__, 300)
    parser.add_argument(
        "--scripts-only",
        action="store_true",
        help="count only inside EVALSHA (no request parsing, reply or cron: steady under load)",
    )
    args = parser.parse_args()
    sides = {"a": args.a, "b": args.b}
    results: dict[str, list[dict[str, float]]] = {"a": [], "b": []}
    print(f"load average before: {loadavg()}", flush=True)
    for n, side in in_turns(args.rounds):
        got = _side(sides[side], args.count, args.scripts_only)
        results[side].append(got)
        figures = "  ".join(f"{p} {got.get(p, 0) / 1000:6.1f}k" for p in PHASES)
        print(f"round {n} {side}: {figures}  load {loadavg()}", flush=True)
    print(f"load average after: {loadavg()}")
    print("instructions per operation, medians (k):")
    for phase in PHASES:
        a = statistics.median(r[phase] for r in results["a"]) / 1000
        b = statistics.median(r[phase] for r in results["b"]) / 1000
        print(f"  {phase:12} a {a:7.1f}  b {b:7.1f}  b/a {b / a:5.3f}")
    for op in OPS:
        for side in ("a", "b"):
            mine = statistics.median(r[f"nbdb-{op}"] for r in results[side])
            theirs = statistics.median(r[f"raw-{op}"] for r in results[side])
            print(f"  {op:7} {side}: nbdb / raw+contract {mine / theirs:5.2f}")


if __name__ == "__main__":
    sys.exit(main())
