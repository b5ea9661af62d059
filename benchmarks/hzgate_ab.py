"""A/B of one thread's Hazelcast reads (the send gate's cost): client CPU and wall µs per get, getAll, range.

Each round runs, in a rotating order, one process per side against one throwaway member:
``--count`` single ``get_key`` calls, as many ``get_keys`` of 5 keys and ranges under ``r/`` (a
few routers), each from one thread (no other request in flight: every one leaves from the caller's
thread, the gate's fast path). Printed per round, then the medians of each side::

    python benchmarks/hzgate_ab.py --a /path/to/main/src --b src --rounds 6 --count 2000
"""

from __future__ import annotations

import statistics
import uuid

from abrun import ab_parser, in_turns, loadavg, run_json

WORKER = r"""
import json, sys, time
import nbdb
from nbdb.models.ovn import LogicalRouter
url, ns, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = {}
def phase(name, body):
    c, w = time.process_time_ns(), time.perf_counter_ns()
    for _ in range(count):
        body()
    out[name + " client"] = (time.process_time_ns() - c) / count / 1e3
    out[name + " wall"] = (time.perf_counter_ns() - w) / count / 1e3
with nbdb.connect(url, namespace=ns) as db:
    backend = db.backend
    for i in range(5):
        db.create(LogicalRouter(name=f"r{i}"))
    for _ in range(200):  # warm-up
        backend.get_key("x/none")
    keys = [f"x/{i}" for i in range(5)]
    ranged = [backend.layout.prefix + "r/"]
    phase("get", lambda: backend.get_key("x/none"))
    phase("getall", lambda: backend.get_keys(keys))
    phase("range", lambda: backend.range_keys(ranged))
print(json.dumps(out))
"""


def main() -> None:
    opts = ab_parser(__doc__, 2000).parse_args()
    from nbdb.testing.servers import start_server

    rows: dict[str, list[dict[str, float]]] = {"a": [], "b": []}
    with start_server("hazelcast") as server:
        for n, side in in_turns(opts.rounds):
            src = opts.a if side == "a" else opts.b
            got = run_json(src, WORKER, [server.url, f"ab-{uuid.uuid4().hex[:8]}", str(opts.count)])
            rows[side].append(got)
            shown = " ".join(f"{k.replace(' ', '_')}={v:.0f}" for k, v in got.items())
            print(f"round {n} {side} load {loadavg()}: {shown}", flush=True)
    print("medians, µs per operation: a | b")
    for key in rows["a"][0]:
        a, b = (statistics.median(r[key] for r in rows[side]) for side in "ab")
        print(f"  {key:14s} {a:8.2f} | {b:8.2f}   b/a {b / a:.3f}")


if __name__ == "__main__":
    main()
