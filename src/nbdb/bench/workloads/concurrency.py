"""Concurrent writers: N threads through one Database, each creating networks in a tenant (topic) of its own.

nbdb may batch what is in flight (group commit, pipelining); the raw side is
N threads sharing the backend's own client, each doing single operations in a
key range (partition) of its own. Measured: commits per second in all, and the
latency of each.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from time import perf_counter_ns as now

from nbdb.bench.config import Sizes
from nbdb.bench.data import make_switch, switch_doc
from nbdb.bench.results import Measurement
from nbdb.bench.stats import summarize
from nbdb.bench.target import Target
from nbdb.bench.workloads.common import SWITCH

__all__ = ["run_nbdb", "run_raw"]


def _run(writers: int, per: int, write: Callable[[int, int], object]) -> tuple[list[int], int]:
    """Start ``writers`` threads at once, each calling ``write(writer, i)`` ``per`` times; latencies, elapsed."""
    lat: list[list[int]] = [[] for _ in range(writers)]
    errors: list[BaseException] = []
    ready = threading.Barrier(writers + 1)

    def work(w: int) -> None:
        ready.wait()
        try:
            for i in range(per):
                t0 = now()
                write(w, i)
                lat[w].append(now() - t0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,), daemon=True) for w in range(writers)]
    for t in threads:
        t.start()
    ready.wait()
    start = now()
    for t in threads:
        t.join()
    elapsed = now() - start
    if errors:
        raise errors[0]
    return [x for per_writer in lat for x in per_writer], elapsed


def run_nbdb(target: Target, sizes: Sizes, *, writers: int) -> list[Measurement]:
    """``sizes.concurrency_ops`` creates by ``writers`` threads of one Database, each in its own topic."""
    per = max(1, sizes.concurrency_ops // writers)
    with target.open(target.namespace()) as db:
        lat, elapsed = _run(writers, per, lambda w, i: db.create(make_switch(i, f"tenant-{w}")))
    return [
        Measurement(
            "write.concurrent", target.name, "nbdb", len(lat), elapsed, "ops", summarize(lat), {"writers": writers}
        )
    ]


def run_raw(target: Target, sizes: Sizes, *, writers: int) -> list[Measurement]:
    """The same creates by ``writers`` threads sharing the raw client, each under its own table prefix."""
    per = max(1, sizes.concurrency_ops // writers)
    client = target.raw(target.namespace())
    try:
        if not client.thread_safe:
            raise NotImplementedError("the raw client is not safe to share between threads")

        def write(w: int, i: int) -> None:
            doc = switch_doc(i)
            client.create(client.key(f"{SWITCH}-{w}", str(uuid.uuid4())), json.dumps(doc).encode())

        lat, elapsed = _run(writers, per, write)
    finally:
        client.cleanup()
        client.close()
    return [
        Measurement(
            "write.concurrent", target.name, "raw", len(lat), elapsed, "ops", summarize(lat), {"writers": writers}
        )
    ]
