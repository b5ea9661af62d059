"""A/B of what the Hazelcast backend's outage check costs per request, in instructions (callgrind), no server.

Every request of the backend passes one check before it is sent (``HazelcastBackend._admit``:
closed, or offline for ``timeout``, see :class:`nbdb.retry.Outage`): in ``call()``, and before
a commit task is sent to the member. This counts the instructions of ``--count`` calls of
``call()`` around a function that does nothing, and of ``_send_commit_task`` with an executor
that answers at once (a completed future: no request, no reactor, only the client-side code
around the send), each side in its own process under ``valgrind --tool=callgrind``; per op is the
difference from a run with no calls, divided by the count::

    python benchmarks/hazelcast_gate_cg.py --a /path/to/main/src --b src --count 20000

The backend is built without a client (``object.__new__``) with only the attributes these two
paths read; both sides' attributes are set (the send gate where there is one, and ``_send_commit_task``
called with its topics and sends where it takes them), so the script runs against either checkout.
"""

from __future__ import annotations

import argparse

from abrun import callgrind_total

WORKER = r"""
import sys, threading
from hazelcast.future import ImmediateFuture
from nbdb.backends.hazelcast import HazelcastBackend, parse_url
piece, count = sys.argv[1], int(sys.argv[2])
backend = object.__new__(HazelcastBackend)
backend.config = parse_url("hazelcast://h/c", {})
backend._closed = False
backend._offline_since = None  # before nbdb.retry.Outage
try:
    from nbdb.retry import Outage
    backend._outage = Outage(backend.config.timeout)
except ImportError:
    pass
backend._local_commit = threading.Lock()
try:
    from nbdb.backends.hazelcast._sendgate import SendGate
    backend.gate = SendGate()  # one thread: every task is sent alone, from this thread
except ImportError:
    pass
class Executor:
    def execute_on_key_owner(self, key, task):
        return ImmediateFuture([1, 2, 1])
backend._executor = Executor()
nothing = lambda: None
if piece == "call":
    for _ in range(count):
        backend.call(nothing)
else:
    import inspect
    try:
        from nbdb.backends.hazelcast._backend import _Sends  # a commit's sends, passed since 2026-12-07
        every = (None, set(), _Sends(""))
    except ImportError:
        every = (None, set())
    args = every[: len(inspect.signature(backend._send_commit_task).parameters)]  # (task[, topics[, sends]])
    for _ in range(count):
        backend._send_commit_task(*args)
"""

PIECES = [("call", "call()"), ("task", "commit task send")]


def _instructions(src: str, piece: str, count: int) -> int:
    return callgrind_total(src, WORKER, [piece, str(count)], timeout=1800)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, help="the first checkout's src/ (e.g. main's)")
    parser.add_argument("--b", required=True, help="the second checkout's src/")
    parser.add_argument("--count", type=int, default=20000, help="calls per piece")
    opts = parser.parse_args()
    print(f"instructions per op (count {opts.count}):  a | b   b - a")
    for piece, name in PIECES:
        per = {
            side: (_instructions(src, piece, opts.count) - _instructions(src, piece, 0)) / opts.count
            for side, src in (("a", opts.a), ("b", opts.b))
        }
        print(f"  {name:18s} {per['a']:8,.0f} | {per['b']:8,.0f}   {per['b'] - per['a']:+,.0f}")


if __name__ == "__main__":
    main()
