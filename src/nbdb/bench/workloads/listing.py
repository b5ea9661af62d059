"""``list`` of every port: what a controller does at start-up or on resync, without a cache."""

from __future__ import annotations

import json
from time import perf_counter_ns as now
from typing import Any

from nbdb.bench.config import Sizes
from nbdb.bench.results import Measurement
from nbdb.bench.stats import summarize
from nbdb.bench.target import Target
from nbdb.bench.workloads.common import PORT, populate, populate_raw
from nbdb.models.ovn import LogicalSwitchPort

__all__ = ["run_nbdb", "run_raw"]

_REPEAT = 3


def run_nbdb(target: Target, sizes: Sizes, **_: Any) -> list[Measurement]:
    """``db.list(LogicalSwitchPort)`` of ``sizes.list_objects`` ports, a few times; objects/s."""
    n = sizes.list_objects
    with target.open(target.namespace()) as db:
        populate(db, n)
        lat = []
        start = now()
        for _i in range(_REPEAT):
            t0 = now()
            got = db.list(LogicalSwitchPort)
            lat.append(now() - t0)
            assert len(got) == n, (len(got), n)
        elapsed = now() - start
    return [
        Measurement("read.list", target.name, "nbdb", n * _REPEAT, elapsed, "objects", summarize(lat), {"objects": n})
    ]


def run_raw(target: Target, sizes: Sizes, **_: Any) -> list[Measurement]:
    """A raw scan of the same ports, each parsed with ``json.loads``."""
    n = sizes.list_objects
    client = target.raw(target.namespace())
    try:
        populate_raw(client, n)
        lat = []
        start = now()
        for _i in range(_REPEAT):
            t0 = now()
            got = [json.loads(v) for v in client.scan(client.prefix(PORT))]
            lat.append(now() - t0)
            assert len(got) == n, (len(got), n)
        elapsed = now() - start
    finally:
        client.cleanup()
        client.close()
    return [
        Measurement("read.list", target.name, "raw", n * _REPEAT, elapsed, "objects", summarize(lat), {"objects": n})
    ]
