"""Does a key lock's schedule of waits in the member's queue starve when the queue takes long to drain?

RIVALS threads of another client take a lease entry's lock in turn with a blocking ``lock``, each holding it
HOLD ms (the member hands it from one queued waiter to the next: the lock is never free, and the queue takes
about RIVALS x HOLD to drain); meanwhile this client renews its lease (the entry's lock: polled, then waiting
in the queue, see ``HazelcastBackend._key_lock``) COUNT times with a ``timeout`` of TIMEOUT s, and a second
thread gets a key every 0-10 ms (its wait: what the held send gate costs the client's other threads).
Printed: renewals granted and failed (BackendUnavailableError: starved), their median and max, the gets'
median, p99 and max, the load average. Run it with each tree's src on PYTHONPATH::

    PYTHONPATH=src python benchmarks/hzlock_queue.py 6 5 20 2
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import threading
import time
import uuid

import nbdb
from nbdb.errors import BackendUnavailableError
from nbdb.testing.servers import start_server


def main() -> None:
    rivals, hold, count, timeout = int(sys.argv[1]), float(sys.argv[2]) / 1e3, int(sys.argv[3]), sys.argv[4]
    with start_server("hazelcast") as server:
        namespace = "q" + uuid.uuid4().hex[:8]
        with (
            nbdb.connect(f"{server.url}?timeout={timeout}", namespace=namespace) as db,
            nbdb.connect(server.url, namespace=namespace) as other,
        ):
            backend = db.backend
            assert backend.acquire_lease("l", b"a", 60.0)
            entry = other.backend._lease_async.blocking()  # private: the entry's lock, as the backend takes it
            stop = threading.Event()

            def take_turns() -> None:
                while not stop.is_set():
                    entry.lock("l", lease_time=10)
                    try:
                        time.sleep(hold)
                    finally:
                        entry.unlock("l")

            gets: list[float] = []

            def get() -> None:
                while not stop.is_set():
                    time.sleep(random.random() * 0.01)
                    began = time.perf_counter()
                    backend.get_key("x/none")
                    gets.append(time.perf_counter() - began)

            threads = [threading.Thread(target=take_turns, daemon=True) for _ in range(rivals)]
            threads.append(threading.Thread(target=get, daemon=True))
            for thread in threads:
                thread.start()
            time.sleep(0.5)
            took, failed = [], 0
            for _ in range(count):
                began = time.perf_counter()
                try:
                    assert backend.renew_lease("l", b"a", 60.0)
                    took.append(time.perf_counter() - began)
                except BackendUnavailableError:
                    failed += 1
            stop.set()
            for thread in threads:
                thread.join(30)
    gets.sort()
    print(
        f"rivals {rivals} x {hold * 1e3:.0f} ms: renewals ok {len(took)} failed {failed} "
        f"(median {statistics.median(took) * 1e3 if took else 0:.0f} max {max(took, default=0) * 1e3:.0f} ms) | "
        f"gets {len(gets)} median {gets[len(gets) // 2] * 1e3:.2f} p99 {gets[int(len(gets) * 0.99)] * 1e3:.1f} "
        f"max {gets[-1] * 1e3:.1f} ms | load {os.getloadavg()[0]:.1f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
