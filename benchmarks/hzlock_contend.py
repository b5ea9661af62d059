"""Do a client's key locks starve beside other clients' steady commits?

WRITERS processes of THREADS threads each create routers for SECS seconds (member-side commits: their
tasks wait for the commit lock in the member, one queued behind another); meanwhile this process lists
routers (each list takes the commit lock) in one thread, renews a lease (its entry's lock) in
another and gets a key every 0-10 ms in a third (its wait: what a key lock's wait in the member's queue,
holding the send gate, costs the client's other threads), with a ``timeout`` of TIMEOUT s. Printed: the
writers' commits and errors, the lists', renewals' and gets' successes, ``BackendUnavailableError``
failures and latencies, the load average.

    PYTHONPATH=src .venv/bin/python benchmarks/hzlock_contend.py 3 4 4 8 1
"""

from __future__ import annotations

import multiprocessing
import os
import random
import statistics
import sys
import threading
import time
import uuid
from typing import Any

import nbdb
from nbdb.models.ovn import LogicalRouter
from nbdb.testing.servers import start_server


def _writer(url: str, namespace: str, threads: int, secs: float, out: Any) -> None:
    with nbdb.connect(url, namespace=namespace) as db:
        end = time.monotonic() + secs
        done = [0, 0]

        def work(n: int) -> None:
            i = 0
            while time.monotonic() < end:
                try:
                    db.create(LogicalRouter(name=f"w{os.getpid()}-{n}-{i}"))
                    done[0] += 1
                except nbdb.errors.NbdbError:
                    done[1] += 1
                i += 1

        _in_threads(work, range(threads), secs + 60)
        out.put(tuple(done))


def _in_threads(work: Any, args: Any, wait: float) -> None:
    threads = [threading.Thread(target=work, args=(arg,), daemon=True) for arg in args]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(wait)


def _stats(took: list[float]) -> str:
    if not took:
        return "-"
    p99 = sorted(took)[int(len(took) * 0.99)]
    return f"median {statistics.median(took) * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, max {max(took) * 1e3:.0f} ms"


def _run(url: str, writers: int, threads: int, secs: float, timeout: str) -> str:
    namespace = "c" + uuid.uuid4().hex[:8]
    with nbdb.connect(url, namespace=namespace) as seed:
        seed.create(LogicalRouter(name="seed"))
    out: Any = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(target=_writer, args=(url, namespace, threads, secs + 1, out)) for _ in range(writers)
    ]
    for proc in procs:
        proc.start()
    time.sleep(1.0)
    seen: dict[str, tuple[list[float], list[int]]] = {"list": ([], [0]), "renew": ([], [0]), "get": ([], [0])}
    with nbdb.connect(f"{url}?timeout={timeout}", namespace=namespace) as db:
        backend: Any = db.backend
        assert backend.acquire_lease("L", b"me", 30.0)
        end = time.monotonic() + secs

        def work(kind: str) -> None:
            while time.monotonic() < end:
                began = time.monotonic()
                try:
                    if kind == "list":
                        db.list(LogicalRouter)
                    elif kind == "get":
                        time.sleep(random.random() * 0.01)
                        began = time.monotonic()
                        backend.get_key("x/none")
                    else:
                        assert backend.renew_lease("L", b"me", 30.0)
                    seen[kind][0].append(time.monotonic() - began)
                except nbdb.errors.BackendUnavailableError:
                    seen[kind][1][0] += 1

        _in_threads(work, ("list", "renew", "get"), secs + 60)
    wrote = [out.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(30)
    return (
        f"writers {writers}x{threads}: commits {sum(w[0] for w in wrote)}, errors {sum(w[1] for w in wrote)} | "
        + " | ".join(f"{k} ok {len(v[0])} failed {v[1][0]} ({_stats(v[0])})" for k, v in seen.items())
        + f" | load {os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    runs, writers, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    with start_server("hazelcast") as server:
        lines = (_run(server.url, writers, threads, float(sys.argv[4]), sys.argv[5]) for _ in range(runs))
        for run, line in enumerate(lines):
            print(f"run {run}: {line}", flush=True)


if __name__ == "__main__":
    main()
