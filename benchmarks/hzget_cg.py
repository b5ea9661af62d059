"""A/B of one thread's Hazelcast get, in instructions (callgrind) against a throwaway member.

Each side runs in its own process under ``valgrind --tool=callgrind``, collecting only inside
``operator.call``: ``--count`` ``get_key`` calls and as many ranges outside ``o/`` (under ``a/``),
each from one thread (the gate's fast path: the request leaves from the caller's thread). Printed:
instructions per operation, per side (all threads' instructions while collecting, the reactor's too)::

    python benchmarks/hzget_cg.py --a /path/to/main/src --b src --count 300
"""

from __future__ import annotations

import argparse
import uuid

from abrun import callgrind_phases

WORKER = r"""
import operator, sys
import nbdb
url, ns, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
with nbdb.connect(url, namespace=ns) as db:
    backend = db.backend
    for _ in range(50):  # warm-up
        backend.get_key("x/none")
        backend.range_keys([backend.layout.prefix + "a/"])
    def gets():
        for _ in range(count):
            backend.get_key("x/none")
    def ranges():
        for _ in range(count):
            backend.range_keys([backend.layout.prefix + "a/"])
    operator.call(gets)
    operator.call(ranges)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, help="the first checkout's src/ (e.g. main's)")
    parser.add_argument("--b", required=True, help="the second checkout's src/")
    parser.add_argument("--count", type=int, default=300)
    opts = parser.parse_args()
    from nbdb.testing.servers import start_server

    with start_server("hazelcast") as server:
        for side, src in (("a", opts.a), ("b", opts.b)):
            phases = callgrind_phases(src, WORKER, [server.url, f"cg-{uuid.uuid4().hex[:8]}", str(opts.count)])
            per = [round(p / opts.count) for p in phases]
            print(f"{side} ({src}): instructions per get {per[0]:,}, per range outside o/ {per[1]:,}", flush=True)


if __name__ == "__main__":
    main()
