"""Concurrency: threads creating ports at once, through one Database or a raw client each.

A controller's workers write in parallel. Through nbdb they share one
Database (its connections and any batching of what is in flight); the raw
baseline gives each thread a client of its own doing single operations.
The figure is the total throughput, and each operation's latency.

By default eight threads write ports of one switch in one topic. With
``threads=N, topics=N`` each thread writes in a topic of its own (its own
switch; raw: its own key range), which is what lets a store that partitions
by topic (Cassandra) commit in parallel.
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


def run_nbdb(target: Target, sizes: Sizes, *, threads: int = THREADS, topics: int = 1) -> list[Measurement]:
    """``sizes.crud_ops`` creates from ``threads`` threads sharing one Database, over ``topics`` topics."""
    per = max(1, sizes.crud_ops // threads)
    with target.open(target.namespace()) as db:
        switches = [populate(db, 0, _topic(t, topics))[0] for t in range(topics)]

        def worker(n: int) -> Any:
            switch, topic = switches[n % topics], _topic(n % topics, topics)

            def run(lat: list[int]) -> None:
                for i in range(n * per, (n + 1) * per):
                    t0 = now()
                    db.create(make_port(switch, i, topic))
                    lat.append(now() - t0)

            return run

        lat, elapsed = _run_threads([worker(n) for n in range(threads)])
    return [_measure(target, "nbdb", lat, elapsed, threads, topics)]


def run_raw(target: Target, sizes: Sizes, *, threads: int = THREADS, topics: int = 1) -> list[Measurement]:
    """The same creates from ``threads`` threads, each with a raw client of its own."""
    per = max(1, sizes.crud_ops // threads)
    namespace = target.namespace()
    clients = [target.raw(namespace) for _ in range(threads)]
    try:
        # A switch per topic, as on the nbdb side: where a switch is a row of its own
        # (OVSDB), each create adds its port to its topic's switch, not to one shared by all.
        switches = [populate_raw(clients[0], 0, _topic(t, topics), switch=t)[0] for t in range(topics)]

        def worker(n: int) -> Any:
            client, switch_id, topic = clients[n], switches[n % topics], _topic(n % topics, topics)
            # Where the store has partitions, one per topic, as nbdb keeps one partition per topic.
            table = PORT if topics == 1 else client.topic_table(PORT, n % topics)

            def run(lat: list[int]) -> None:
                for i in range(n * per, (n + 1) * per):
                    t0 = now()
                    port = port_doc(switch_id, i, topic)
                    client.create(client.key(table, str(port["id"])), json.dumps(port).encode())
                    lat.append(now() - t0)

            return run

        lat, elapsed = _run_threads([worker(n) for n in range(threads)])
        return [_measure(target, "raw", lat, elapsed, threads, topics)]
    finally:
        for client in clients[: 1 if topics == 1 else threads]:  # with topics, each wrote a key range of its own
            client.cleanup()
        for client in clients:
            client.close()


def _topic(index: int, topics: int) -> str:
    return "tenant-0" if topics == 1 else f"tenant-{index}"


def _measure(target: Target, impl: str, lat: list[int], elapsed: int, threads: int, topics: int) -> Measurement:
    params = {} if (threads, topics) == (THREADS, 1) else {"threads": threads, "topics": topics}
    return Measurement("write.create.threads", target.name, impl, len(lat), elapsed, "ops", summarize(lat), params)
