"""A/B of one long range on etcd: ``range_keys`` of one table of N keys (issue 13, etcd 3.4's counting pages).

One etcd server, filled once with N keys under one table prefix (UUID ids, 300-byte values, raw
``commit_keys`` of 100); then each side in its own process, alternating (abrun.in_turns), reads the
table once with ``range_keys``: wall ms, the requests it sent, the keys etcd walked to answer them
(the sum of the replies' ``count``), the most one request walked, the slowest request's wall ms, and the
CPU etcd spent meanwhile (its /proc utime + stime)::

    python benchmarks/etcd_bigrange_ab.py --a /work/main/src --b src --rounds 2 --keys 100000

``--limit N`` reads the table page by page instead: ``scan_page`` (the SPI under ``db.list(limit=, after=)``)
of N keys each, each page on from the last one's continue token, until the last.

``--small N`` also fills a second table of N keys and reads both with one ``range_keys`` (the small one first),
as a cache of [LogicalSwitch, LogicalSwitchPort] loads (or a table spread over topics is listed: a prefix per
topic); with ``--limit``, ``range_pages`` of their first pages (a listing's first page across them)::

    python benchmarks/etcd_bigrange_ab.py --a /work/main/src --b src --rounds 3 --keys 300000 --small 100
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from collections.abc import Callable

from abrun import ETCD_CALLS, ab_parser, ab_rounds, env

READ = (
    r"""
import json, sys
from time import perf_counter_ns as now
import nbdb
url, prefix, total, limit, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
small_prefix, small = sys.argv[6], int(sys.argv[7])
"""
    + ETCD_CALLS
    + r"""
with nbdb.connect(url, namespace="bench", timeout=timeout) as db:
    calls = counted(db)
    walked = []  # each reply's count (each range's, in a transaction): the keys etcd 3.4 walked to answer it
    from nbdb.backends.etcd import wire
    client, real_call = db.backend.client, db.backend.client.call
    slowest = [0.0]
    def call(method, request, what, **kwargs):
        t = now()
        reply, maybe = real_call(method, request, what, **kwargs)
        slowest[0] = max(slowest[0], (now() - t) / 1e6)
        if what == "range":
            walked.append(wire.parse_range(reply)[3])
        elif what == "transaction":  # wire.range_counts, spelled out: side a may predate it (nested ones too)
            walked.append(sum(counts(reply)))
        return reply, maybe
    def counts(reply):
        out = []
        for op in wire._messages(wire._parse(reply), 3):
            if op[:1] == b"\x0a":
                out.append(wire._int(wire._parse(wire._bytes(wire._parse(op), 1)), 4, signed=True))
            elif op[:1] == b"\x22":
                out += counts(wire._bytes(wire._parse(op), 4))
        return out
    client.call = call
    t0 = now()
    if small and limit:  # a listing's first pages across both tables
        pages, _ = db.backend.range_pages([(small_prefix, None), (prefix, None)], limit, 0)
        got, total = sum(map(len, pages)), min(small, limit) + limit
    elif small:
        got, total = len(db.backend.range_keys([small_prefix, prefix])[0]), total + small
    elif limit:
        table, after, got = prefix.rstrip("/").rsplit("/", 1)[1], None, 0
        while True:
            page = db.backend.scan_page([table], ["t"], limit, after)
            got += len(page.records)
            if page.after is None:
                break
            after = page.after
    else:
        got = len(db.backend.range_keys([prefix])[0])
    ms = (now() - t0) / 1e6
    assert got == total, got
print(json.dumps({"ms": ms, "requests": len(calls), "walked": sum(walked), "largest": max(walked),
                  "slowest_ms": slowest[0]}))
"""
)

FILL = r"""
import random, sys, uuid
import nbdb
url, prefix, total, ids = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
random.seed(7)
def new_id(i):
    if ids == "counter":  # a caller's counter as a UUID: 00000000-0000-0000-0000-000000000001...
        return str(uuid.UUID(int=i + 1))
    if ids == "uuid7":  # time-ordered: 48 bits of ms (100 ids a second from 2026-12-06), version 7, random
        ms = 1_796_515_200_000 + i * 10
        bits = (7 << 76) | (random.getrandbits(12) << 64) | (2 << 62) | random.getrandbits(62)
        return str(uuid.UUID(int=(ms << 80) | bits))
    if ids == "name":  # no hex id at all
        return f"port-{i}"
    return str(uuid.uuid4())
with nbdb.connect(url, namespace="bench") as db:
    for first in range(0, total, 100):
        puts = {prefix + new_id(first + i): b"x" * 300 for i in range(min(100, total - first))}
        assert db.backend.commit_keys([], puts, []) is not None
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = ab_parser(__doc__, 0)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--limit", type=int, default=0, help="page by scan_page of this many keys (0: one range_keys)")
    parser.add_argument("--small", type=int, default=0, help="keys of a second table read with the first (0: none)")
    parser.add_argument(
        "--ids",
        choices=["uuid4", "uuid7", "counter", "name"],
        default="uuid4",
        help="the large table's ids: random UUIDs, time-ordered ones, a counter's, or names that are no hex",
    )
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per etcd request (nbdb's default: 2)")
    args = parser.parse_args()
    sides = {"a": args.a, "b": args.b}
    from nbdb.testing.servers import start_server

    server = start_server("etcd")
    try:
        url, prefix = str(server.url), "nbdb/bench/o/t/Logical_Switch_Port/"  # namespace bench's key for topic t
        pid = server.members[0].pid
        assert pid is not None
        subprocess.run([sys.executable, "-c", FILL, url, prefix, str(args.keys), args.ids], env=env(args.a), check=True)
        small_prefix = "nbdb/bench/o/t/Logical_Switch/"
        if args.small:
            subprocess.run(
                [sys.executable, "-c", FILL, url, small_prefix, str(args.small), "uuid4"], env=env(args.a), check=True
            )

        def etcd_cpu() -> Callable[[], dict[str, float]]:
            before = cpu_seconds(pid)
            return lambda: {"etcd_cpu_s": cpu_seconds(pid) - before}

        results = ab_rounds(
            sides,
            args.rounds,
            READ,
            [url, prefix, str(args.keys), str(args.limit), str(args.timeout), small_prefix, str(args.small)],
            etcd_cpu,
        )
        for side in ("a", "b"):
            got = results[side]
            print(
                f"{side}: {statistics.median(g['ms'] for g in got):8.1f} ms, etcd CPU "
                f"{statistics.median(g['etcd_cpu_s'] for g in got):.2f} s, "
                f"{statistics.median(g['requests'] for g in got):.0f} requests, "
                f"{statistics.median(g['walked'] for g in got):,.0f} keys walked, "
                f"{statistics.median(g['largest'] for g in got):,.0f} by the largest request, "
                f"{statistics.median(g['slowest_ms'] for g in got):,.1f} ms the slowest (medians)"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
