"""Transactions of N objects: a tenant's ports created all or nothing."""

from __future__ import annotations

import json
from time import perf_counter_ns as now

from nbdb.bench.config import Sizes
from nbdb.bench.data import make_port, port_doc
from nbdb.bench.results import Measurement
from nbdb.bench.stats import summarize
from nbdb.bench.target import Target
from nbdb.bench.workloads.common import PORT, populate, populate_raw

__all__ = ["run_nbdb", "run_raw"]


def run_nbdb(target: Target, sizes: Sizes, *, size: int) -> list[Measurement]:
    """``sizes.txn_objects`` ports in transactions of ``size``; objects/s and latency per transaction."""
    batches = max(1, sizes.txn_objects // size)
    with target.open(target.namespace()) as db:
        switch, _ = populate(db, 0)
        lat = []
        start = now()
        for b in range(batches):
            t0 = now()
            with db.transaction() as txn:
                for i in range(b * size, (b + 1) * size):
                    txn.create(make_port(switch, i))
            lat.append(now() - t0)
        elapsed = now() - start
    return [
        Measurement(
            "write.txn", target.name, "nbdb", batches * size, elapsed, "objects", summarize(lat), {"size": size}
        )
    ]


def run_raw(target: Target, sizes: Sizes, *, size: int) -> list[Measurement]:
    """The same transactions with the backend's own client."""
    batches = max(1, sizes.txn_objects // size)
    client = target.raw(target.namespace())
    try:
        switch_id, _ = populate_raw(client, 0)
        lat = []
        start = now()
        for b in range(batches):
            t0 = now()
            items = []
            for i in range(b * size, (b + 1) * size):
                doc = port_doc(switch_id, i)
                items.append((client.key(PORT, doc["id"]), json.dumps(doc).encode()))
            client.create_many(items)
            lat.append(now() - t0)
        elapsed = now() - start
    finally:
        client.cleanup()
        client.close()
    return [
        Measurement("write.txn", target.name, "raw", batches * size, elapsed, "objects", summarize(lat), {"size": size})
    ]
