"""Do caller-thread reads (outside the commit turn) lose hazelcast-python-client 5.7's reactor wake-up?

For each ``THREADS:MODE`` (MODE: get, getall, range, id, lease, arange, mixed, renew, headlock: ``get_key``,
``get_keys`` of 5, a range under ``r/``, ``allocate_id``, a lease renewed (or acquired) per thread, a range
outside ``o/``, none of which takes the local commit turn; mixed: one thread of gets, the others of
creates; renew: even threads get, odd threads renew their own lease (lock, read, write, unlock: the lock
and unlock leave from the lock's owner thread); headlock: even threads get, odd threads take the commit
lock (``put_back_head`` of an intact head: lock, read, unlock)),
RUNS fresh clients each run THREADS threads of it for SECS seconds; printed: a single get's median
latency before and after, and whether the client's reactor waker is left "awake" while idle (the lost
wake-up: every request then waits the reactor's 10 ms poll, for the client's life). The waker is read
for the diagnosis only (private).

    PYTHONPATH=src .venv/bin/python benchmarks/hzwakeup_stress.py 3 5 1:get 2:get 8:get 8:getall 8:range
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
import uuid
from typing import Any

import nbdb
from nbdb.models.ovn import LogicalRouter
from nbdb.testing.servers import start_server


def _median_get_ms(backend: Any, n: int = 200) -> float:
    took = []
    for _ in range(n):
        began = time.perf_counter()
        backend.get_key("x/none")
        took.append(time.perf_counter() - began)
    return statistics.median(took) * 1e3


def _stuck(backend: Any) -> bool:
    time.sleep(0.05)  # idle: a waker still "awake" now has lost its wake-up for good
    return bool(backend._client._reactor._loop.waker.awake)


def _run(url: str, threads: int, mode: str, secs: float) -> str:
    with nbdb.connect(url, namespace=f"wake-{uuid.uuid4().hex[:8]}") as db:
        backend: Any = db.backend
        db.create(LogicalRouter(name="seed"))
        before = _median_get_ms(backend)
        end = time.monotonic() + secs
        calls = [0] * threads

        def work(n: int) -> None:
            while time.monotonic() < end:
                if mode == "get":
                    backend.get_key(f"x/{n}")
                elif mode == "getall":
                    backend.get_keys([f"x/{n}-{i}" for i in range(5)])
                elif mode == "range":
                    backend.range_keys([backend.layout.prefix + "r/"])
                elif mode == "id":
                    backend.allocate_id("stress")
                elif mode == "lease":
                    backend.renew_lease(f"l{n}", b"t", 5.0) or backend.acquire_lease(f"l{n}", b"t", 5.0)
                elif mode == "mixed":  # thread 0 reads, the others create (the commit turn, locks, tasks)
                    if n == 0:
                        backend.get_key("x/0")
                    else:
                        db.create(LogicalRouter(name=f"w{n}-{calls[n]}"))
                elif mode == "renew":
                    if n % 2 == 0:
                        backend.get_key(f"x/{n}")
                    elif not backend.renew_lease(f"l{n}", b"t", 5.0):
                        backend.acquire_lease(f"l{n}", b"t", 5.0)
                elif mode == "headlock":
                    if n % 2 == 0:
                        backend.get_key(f"x/{n}")
                    else:
                        backend.put_back_head()
                else:
                    backend.range_keys([backend.layout.prefix + "a/"])  # outside o/: head, then the range
                calls[n] += 1

        workers = [threading.Thread(target=work, args=(n,), daemon=True) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        after = _median_get_ms(backend)
        return f"get median {before:.2f} -> {after:.2f} ms, {sum(calls)} calls, wake-up lost: {_stuck(backend)}"


def main() -> None:
    runs, secs = int(sys.argv[1]), float(sys.argv[2])
    server = start_server("hazelcast")
    try:
        for config in sys.argv[3:]:
            threads, mode = int(config.split(":")[0]), config.split(":")[1]
            for run in range(runs):
                print(f"{threads} threads {mode} run {run}: {_run(server.url, threads, mode, secs)}", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
