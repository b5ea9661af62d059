"""A pytest plugin that reports a client's I/O thread parked in nbdb code for a second or more.

Audit aid for the rule in docs/architecture.md ("A client's I/O thread never waits"): a sampler
thread looks at the stacks of the drivers' I/O threads (Hazelcast's reactor, OVSDB's connection
I/O thread, etcd's watch reader, Cassandra's event loop) every 50 ms, through
``sys._current_frames()``, and writes a stack to ``$IOWATCH_OUT`` (default
``/tmp/iowatch.log``) whenever one of them stays on the same line of nbdb's code, or in a wait
(threading, queue) that nbdb's code called, for a second. The driver's own idle waits, and
OVSDB's ``select``, are not reported. Nothing is patched.

    PYTHONPATH=src:scripts python -m pytest -p iowatch -p nbdb.conformance --pyargs nbdb.conformance \
        --nbdb-url=spawn:hazelcast

On the code before "Merge wip/hzhang", tests/backends/test_hazelcast_listener.py makes it report
the reactor parked in ``_on_head`` on ``_log_cond``; on the code after, the ovsdb, etcd,
hazelcast and cassandra kits make it report nothing.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from types import FrameType
from typing import Any

IO_THREADS = ("nbdb-ovsdb-io", "nbdb-etcd-watch", "hazelcast-reactor", "event_loop", "asyncore_cassandra")
"""Names (prefixes) of the threads that read a client's replies."""
IDLE = (("rpc.py", "select.select"),)
"""Lines of nbdb where an I/O thread waits for the network: not a block."""
PARKED = 1.0
WAITS = ("threading.py", "queue.py")


def _ours(frame: FrameType | None) -> FrameType | None:
    """The innermost frame if it is nbdb's, or a wait that nbdb's code called; else None (the driver's)."""
    if frame is None:
        return None
    if "/nbdb/" in frame.f_code.co_filename:
        return frame
    if frame.f_code.co_filename.endswith(WAITS):
        caller = frame.f_back
        while caller is not None and caller.f_code.co_filename.endswith(WAITS):
            caller = caller.f_back
        if caller is not None and "/nbdb/" in caller.f_code.co_filename:
            return frame
    return None


def _sample(out: str) -> None:
    since: dict[int, tuple[tuple[int, int], float, bool]] = {}
    while True:
        time.sleep(0.05)
        now = time.monotonic()
        names = {t.ident: t.name for t in threading.enumerate()}
        for ident, frame in sys._current_frames().items():
            name = names.get(ident, "")
            top = _ours(frame) if name.startswith(IO_THREADS) else None
            if top is None:
                since.pop(ident, None)
                continue
            line = traceback.extract_stack(top, limit=1)[-1]
            if any(line.filename.endswith(f) and text in (line.line or "") for f, text in IDLE):
                since.pop(ident, None)
                continue
            key = (id(top), top.f_lineno)
            seen = since.get(ident)
            if seen is None or seen[0] != key:
                since[ident] = (key, now, False)
            elif now - seen[1] >= PARKED and not seen[2]:
                since[ident] = (key, seen[1], True)
                with open(out, "a") as log:
                    log.write(f"=== {name} parked >= {PARKED}s at {line.filename}:{line.lineno}\n")
                    log.write("".join(traceback.format_stack(frame)))


def pytest_configure(config: Any) -> None:
    out = os.environ.get("IOWATCH_OUT", "/tmp/iowatch.log")
    threading.Thread(target=_sample, args=(out,), name="iowatch", daemon=True).start()
