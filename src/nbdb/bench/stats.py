"""The arithmetic of a benchmark: percentiles, rates and nbdb / raw ratios.

Kept apart from the workloads so it can be tested on its own (property-based,
see ``tests/bench/test_bench.py``): a benchmark whose arithmetic is wrong is
worse than none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["LatencySummary", "percentile", "rate", "ratio", "summarize"]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted values, by the nearest-rank method.

    Nearest rank (the smallest value with at least q% of the values at or below
    it) always returns a measured value, never an interpolation; it is what
    latency reports (HdrHistogram, wrk) use. An empty sequence gives NaN.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, not {q}")
    n = len(sorted_values)
    if n == 0:
        return math.nan
    rank = max(1, math.ceil(q / 100 * n))
    return float(sorted_values[rank - 1])


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Latency percentiles, in microseconds."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float

    def as_dict(self) -> dict[str, float]:
        """A JSON-able form (NaN, for an empty sample, becomes None in JSON via the report)."""
        return {
            "count": self.count,
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
            "max": self.max,
            "mean": self.mean,
        }


def summarize(latencies_ns: Sequence[int | float]) -> LatencySummary:
    """Percentiles of latencies measured in nanoseconds, reported in microseconds."""
    values = sorted(latencies_ns)
    n = len(values)
    if n == 0:
        return LatencySummary(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    return LatencySummary(
        count=n,
        p50=percentile(values, 50) / 1e3,
        p90=percentile(values, 90) / 1e3,
        p99=percentile(values, 99) / 1e3,
        max=float(values[-1]) / 1e3,
        mean=math.fsum(values) / n / 1e3,
    )


def rate(count: int, elapsed_ns: int) -> float:
    """Operations (or objects) per second; NaN if nothing was timed."""
    if elapsed_ns <= 0 or count <= 0:
        return math.nan
    return count * 1e9 / elapsed_ns


def ratio(nbdb_rate: float, raw_rate: float) -> float:
    """nbdb's throughput as a fraction of the raw client's (1.0: as fast; 0.5: half as fast).

    NaN when either side is missing or zero, so a missing baseline never reads
    as a good (or bad) figure.
    """
    if not (nbdb_rate > 0 and raw_rate > 0) or math.isinf(nbdb_rate) or math.isinf(raw_rate):
        return math.nan
    return nbdb_rate / raw_rate
