"""Concurrency: eight threads creating ports at once, through one Database or eight raw clients.

A controller's workers write in parallel. Through nbdb they share one
Database (its connections and any batching of what is in flight); the raw
baseline gives each thread a client of its own doing single operations.
The figure is the total throughput, and each operation's latency.
"""

from __future__ import annotations

import json
import threading
from time import perf_counter_ns as now
from typing import Any

from nbdb.bench.config import Sizes
from nbdb.bench.data import make_port, port_doc
from nbdb.bench.results import Measurement
from nbdb.bench.stats import summarize
from nbdb.bench.target import Target
from nbdb.bench.workloads.common import PORT, populate, populate_raw

__all__ = ["THREADS", "run_nbdb", "run_raw"]

THREADS = 8


def _run_threads(work: list[Any]) -> tuple[list[int], int]:
    """Start every thread of ``work`` at once; their latencies and the wall time of the whole."""
    lats: list[list[int]] = [[] for _ in work]
    errors: list[BaseException] = []
    gate = threading.Barrier(len(work) + 1)

    def body(i: int) -> None:
        gate.wait()
        try:
            work[i](lats[i])
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(len(work))]
    for thread in threads:
        thread.start()
    gate.wait()
    start = now()
    for thread in threads:
        thread.join()
    elapsed = now() - start
    if errors:
        raise errors[0]
    return [x for lat in lats for x in lat], elapsed


def run_nbdb(target: Target, sizes: Sizes, **_: Any) -> list[Measurement]:
    """``sizes.crud_ops`` creates from :data:`THREADS` threads sharing one Database."""
    per = max(1, sizes.crud_ops // THREADS)
    with target.open(target.namespace()) as db:
        switch, _ports = populate(db, 0)

        def worker(n: int) -> Any:
            def run(lat: list[int]) -> None:
                for i in range(n * per, (n + 1) * per):
                    t0 = now()
                    db.create(make_port(switch, i))
                    lat.append(now() - t0)

            return run

        lat, elapsed = _run_threads([worker(n) for n in range(THREADS)])
    return [Measurement("write.create.threads", target.name, "nbdb", len(lat), elapsed, "ops", summarize(lat))]


def run_raw(target: Target, sizes: Sizes, **_: Any) -> list[Measurement]:
    """The same creates from :data:`THREADS` threads, each with a raw client of its own."""
    per = max(1, sizes.crud_ops // THREADS)
    namespace = target.namespace()
    clients = [target.raw(namespace) for _ in range(THREADS)]
    try:
        switch_id, _docs = populate_raw(clients[0], 0)

        def worker(n: int) -> Any:
            client = clients[n]

            def run(lat: list[int]) -> None:
                for i in range(n * per, (n + 1) * per):
                    t0 = now()
                    port = port_doc(switch_id, i)
                    client.create(client.key(PORT, str(port["id"])), json.dumps(port).encode())
                    lat.append(now() - t0)

            return run

        lat, elapsed = _run_threads([worker(n) for n in range(THREADS)])
        return [Measurement("write.create.threads", target.name, "raw", len(lat), elapsed, "ops", summarize(lat))]
    finally:
        clients[0].cleanup()
        for client in clients:
            client.close()
