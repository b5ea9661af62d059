"""``nbdb bench``: every backend measured through nbdb and through its raw client, in one run.

The workloads (:mod:`nbdb.bench.workloads`) model a cloud's control plane:
create / get / update (compare-and-swap) / delete of ports, transactions,
``list`` and the cold load of a cache, cache ``get`` / ``find``, the fan-out
of one writer's changes to N caches, a churn of tenants and chassis with
topic-filtered caches, and a scale sweep. Each runs through nbdb and, where
the same server work can be done without nbdb, through the backend's raw
client (:mod:`nbdb.bench.raw`) in the same run, so the report states nbdb's
cost as a ratio. See ``docs/benchmarks.md``.

    nbdb bench --backends memory,redis --spawn --out bench-out
"""

from __future__ import annotations

from nbdb.bench.config import SIZES, Sizes
from nbdb.bench.results import BenchResult, Measurement
from nbdb.bench.runner import run_bench

__all__ = ["SIZES", "BenchResult", "Measurement", "Sizes", "run_bench"]
