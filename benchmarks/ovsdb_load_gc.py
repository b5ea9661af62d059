"""nbdb's OVN sweep steps on one large OVSDB switch, with every collection and every dropped connection counted.

``nbdb bench``'s OVN sweep prints rates; at 100,000 ports under load what moves them is what
happens around the writes (a collection over the replica holding the GIL, a connection dropped
and the replica loaded again: see "OVSDB at 100,000 ports under load" in docs/benchmarks.md).
This runs the sweep's nbdb steps with counters around them::

    python benchmarks/ovsdb_load_gc.py --src src --ports 100000 --rounds 3 --busy 8

One throwaway ovsdb-server (the bench's 60 s probe from 10,000 ports) holds a switch of
``--ports`` ports. Per round, one process: connect, a cache of the ports, ``wait_synced`` (the
cold load), one full ``gc.collect()`` (the bench's ``_settle_heap``, timed here), then
``--count`` single creates, as many CAS updates of their addresses, as many deletes, and
``--txns`` transactions of 100 creates. ``gc.callbacks`` times every collection (wall clock,
by generation and phase); a handler on the OVSDB backend's log counts connections lost and
re-established (each one a reload of the replica). With ``--busy N``, N bounded busy loops
(``while 1: pass``, killed after the round) run beside the round: the load issue 14 asks about.
Printed per round: the load average, per phase the rate, p50 and maximum, the full collections
(count, longest, total) and the young ones' total, and the drops; at the end the medians.
With ``--idl``, each round also times the raw ``ovs`` IDL's cold load of the same switch in a
process of its own beside the same busy loops (as ``nbdb bench``'s ``ovn.cold_load`` baseline),
before or after nbdb's in turns.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

WORKER = r"""
import collections, gc, json, logging, os, sys, threading, time
from time import perf_counter_ns as now
url, ns, switch, count, txns = sys.argv[1:6]
count, txns = int(count), int(txns)
import nbdb
from nbdb.models.ovn import LogicalSwitchPort

events = []
class Counter(logging.Handler):
    def emit(self, record):
        msg = record.getMessage()
        if "lost" in msg or "reconnect" in msg or "no answer" in msg:
            events.append([round(time.monotonic() - t_start, 2), phase[0], msg[:160]])
h = Counter(logging.INFO)
for name in ("nbdb.backends.ovsdb.session", "nbdb.backends.ovsdb.rpc"):
    lg = logging.getLogger(name); lg.setLevel(logging.INFO); lg.addHandler(h)

phase = ["load"]
gcs = collections.defaultdict(list)   # (phase, generation) -> wall ms of each collection
started = {}
def timed(kind, info):
    t = threading.get_ident()
    if kind == "start":
        started[t] = now()
    elif t in started:
        gcs[(phase[0], info["generation"])].append((now() - started.pop(t)) / 1e6)
gc.callbacks.append(timed)

def address(i):
    return [f"0a:10:00:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x} 10.20.{(i >> 8) & 255}.{i & 255}"]

out = {"phases": {}}
def run(name, n, op):
    phase[0] = name
    load = os.getloadavg()[0]
    lat = []
    t0 = now()
    for i in range(n):
        s = now(); op(i); lat.append(now() - s)
    el = now() - t0
    lat.sort()
    out["phases"][name] = {"rate": n / (el / 1e9), "p50_ms": lat[len(lat) // 2] / 1e6,
                           "max_ms": lat[-1] / 1e6, "load": load}

t_start = time.monotonic()
t0 = now()
db = nbdb.connect(url, namespace=ns)
cache = db.cache(LogicalSwitchPort)
assert cache.wait_synced(900)
out["load_s"] = (now() - t0) / 1e9
out["ports"] = len(cache)
phase[0] = "settle"
s = now(); gc.collect(); out["settle_ms"] = (now() - s) / 1e6
out["tracked"] = len(gc.get_objects())
made = []
run("create", count, lambda i: made.append(db.create(
    LogicalSwitchPort(switch=switch, name=f"{ns}-{os.getpid()}w{i}", addresses=address(i)))))
def upd(i):
    made[i] = db.update(made[i].replace(addresses=address(i + count)))
run("update", count, upd)
run("delete", count, lambda i: db.delete(made[i]))
def txn(b):
    with db.transaction() as t:
        for i in range(100):
            n = b * 100 + i
            t.create(LogicalSwitchPort(switch=switch, name=f"{ns}-{os.getpid()}t{n}", addresses=address(n)))
run("txn100", txns, txn)
phase[0] = "close"
db.close()
out["gc"] = {f"{p}/{g}": [len(v), round(max(v), 1), round(sum(v), 1)] for (p, g), v in gcs.items()}
out["events"] = events
print(json.dumps(out))
"""

PHASES = ("create", "update", "delete", "txn100")

IDL_WORKER = r"""
import json, sys
from time import perf_counter_ns as now
from nbdb.bench.ovn.idl import RawIdl
from nbdb.bench.ovn.wire import ovs_remote
url, ports = sys.argv[1], int(sys.argv[2])
t0 = now()
idl = RawIdl(url, ovs_remote(url))
idl.run_until(lambda: idl.ports() >= ports, 900)
print(json.dumps({"load_s": (now() - t0) / 1e9, "ports": idl.ports()}))
idl.close()
"""


def _busy(n: int, seconds: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen(["timeout", str(seconds), sys.executable, "-c", "while 1: pass"]) for _ in range(n)]


def _idl(url: str, ports: int, env: dict[str, str], timeout: int) -> float | None:
    """The raw IDL's cold load of ``ports`` ports in a process of its own, in seconds (None: it failed)."""
    res = subprocess.run(
        [sys.executable, "-c", IDL_WORKER, url, str(ports)], env=env, capture_output=True, text=True, timeout=timeout
    )
    if res.returncode != 0:
        print(f"  raw IDL cold load failed: {res.stderr[-500:]}")
        return None
    return float(json.loads(res.stdout.strip().splitlines()[-1])["load_s"])


def main() -> None:
    """Run the rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", default="src", help="nbdb sources (a src/ directory)")
    parser.add_argument("--ports", type=int, default=100_000)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--txns", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--busy", type=int, default=0, help="bounded busy loops beside each round")
    parser.add_argument("--round-timeout", type=int, default=900)
    parser.add_argument("--idl", action="store_true", help="also time the raw IDL's cold load each round")
    opts = parser.parse_args()
    from nbdb.bench.config import OVN_SCALE_PROBE_FROM_PORTS, OVN_SCALE_PROBE_MS
    from nbdb.bench.ovn.wire import RawNb
    from nbdb.testing.servers import start_server

    probe = {"inactivity_probe_ms": OVN_SCALE_PROBE_MS} if opts.ports >= OVN_SCALE_PROBE_FROM_PORTS else {}
    server = start_server("ovsdb", **probe)
    env = dict(os.environ, PYTHONPATH=str(Path(opts.src).resolve()))
    got = []
    try:
        ns = f"gc-{os.getpid()}"
        wire = RawNb(server.url)
        switch = wire.add_switch(f"gc-{ns}", ns)
        wire.add_ports(switch, [f"{ns}-p{i}" for i in range(opts.ports)], ns)
        wire.close()
        for r in range(opts.rounds):
            busy = _busy(opts.busy, opts.round_timeout)
            try:
                load = os.getloadavg()[0]
                idl = None
                if opts.idl and r % 2 == 1:
                    idl = _idl(server.url, opts.ports, env, opts.round_timeout)
                res = subprocess.run(
                    [sys.executable, "-c", WORKER, server.url, ns, str(switch), str(opts.count), str(opts.txns)],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=opts.round_timeout,
                )
                if opts.idl and r % 2 == 0:
                    idl = _idl(server.url, opts.ports, env, opts.round_timeout)
            finally:
                for p in busy:
                    p.terminate()
                for p in busy:
                    p.wait()
            if res.returncode != 0:
                print(f"round {r} (load {load:.1f}) failed: {res.stderr[-1500:]}")
                continue
            out = json.loads(res.stdout.strip().splitlines()[-1])
            got.append(out)
            full = {k: v for k, v in out["gc"].items() if k.endswith("/2")}
            young = {k: v for k, v in out["gc"].items() if not k.endswith("/2")}
            print(
                f"round {r} (load {load:.1f}): load {out['load_s']:.1f} s, settle {out['settle_ms']:.0f} ms, "
                f"tracked {out['tracked'] / out['ports']:.2f}/port, drops {len(out['events'])}"
            )
            if idl is not None:
                out["idl_load_s"] = idl
                print(f"  raw IDL cold load {idl:.1f} s: nbdb/IDL {idl / out['load_s']:.2f}")
            for p in PHASES:
                f = out["phases"][p]
                print(f"  {p}: {f['rate']:.1f}/s p50 {f['p50_ms']:.2f} max {f['max_ms']:.1f} ms (load {f['load']:.1f})")
            print(f"  collections [count, max ms, total ms] by phase/generation: full {full}; young {young}")
            for e in out["events"]:
                print(f"  event {e}")
            sys.stdout.flush()
        if got:
            for p in PHASES:
                rates = [g["phases"][p]["rate"] for g in got]
                print(f"{p}: median {statistics.median(rates):.1f}/s ({min(rates):.1f}-{max(rates):.1f})")
            loads = [g["load_s"] for g in got]
            print(f"cold load: median {statistics.median(loads):.1f} s ({min(loads):.1f}-{max(loads):.1f})")
            idls = [g["idl_load_s"] for g in got if "idl_load_s" in g]
            if idls:
                ratios = [g["idl_load_s"] / g["load_s"] for g in got if "idl_load_s" in g]
                print(
                    f"raw IDL cold load: median {statistics.median(idls):.1f} s ({min(idls):.1f}-{max(idls):.1f}); "
                    f"nbdb/IDL median {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
                )
            print(f"drops in all rounds: {sum(len(g['events']) for g in got)}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
