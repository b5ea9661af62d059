"""What a run measured: one :class:`Measurement` per (workload, backend, nbdb|raw, parameters).

:class:`BenchResult` holds them with the run's metadata, works out the
nbdb / raw ratios and checks the targets of issue 13, and round-trips through
JSON (``bench.json``), which is the source of the table, the plots and
``docs/benchmarks.md``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbdb.bench.stats import LatencySummary, rate, ratio

__all__ = ["BenchResult", "Measurement", "PartialRun", "Ratio", "TargetCheck", "is_baseline"]

NBDB = "nbdb"
RAW = "raw"


def is_baseline(impl: str) -> bool:
    """Whether ``impl`` is a raw baseline: ``raw``, or an extra one (``raw+<name>``)."""
    return impl == RAW or impl.startswith(RAW + "+")


@dataclass(slots=True)
class Measurement:
    """One timed run of one workload through nbdb or through the raw client."""

    workload: str
    backend: str
    impl: str
    """``nbdb``, ``raw`` (the backend's own client, or a plain dict for a cache), or ``raw+<name>``
    (the raw client doing the extra server work nbdb's contract needs, see :mod:`nbdb.bench.raw`)."""
    count: int
    """Operations, objects or events counted."""
    elapsed_ns: int
    unit: str = "ops"
    latency: LatencySummary | None = None
    params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)
    """Other figures, e.g. ``bytes_per_object`` or ``target_rate``."""

    @property
    def rate(self) -> float:
        """``count`` per second."""
        return rate(self.count, self.elapsed_ns)

    @property
    def key(self) -> tuple[str, str, tuple[tuple[str, Any], ...]]:
        """(workload, backend, params): what pairs an nbdb figure with its raw baseline."""
        return self.workload, self.backend, tuple(sorted(self.params.items()))

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able form."""
        return {
            "workload": self.workload,
            "backend": self.backend,
            "impl": self.impl,
            "count": self.count,
            "elapsed_s": self.elapsed_ns / 1e9,
            "unit": self.unit,
            "rate_per_s": _finite(self.rate),
            "latency_us": None if self.latency is None else {k: _finite(v) for k, v in self.latency.as_dict().items()},
            "params": self.params,
            "extra": {k: _finite(v) for k, v in self.extra.items()},
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Measurement:
        """The inverse of :meth:`as_dict`."""
        lat = doc.get("latency_us")
        latency = None
        if lat is not None:
            figures = {
                k: (math.nan if lat.get(k) is None else float(lat[k])) for k in ("p50", "p90", "p99", "max", "mean")
            }
            latency = LatencySummary(count=int(lat.get("count") or 0), **figures)
        return cls(
            workload=doc["workload"],
            backend=doc["backend"],
            impl=doc["impl"],
            count=int(doc["count"]),
            elapsed_ns=round(doc["elapsed_s"] * 1e9),
            unit=doc.get("unit", "ops"),
            latency=latency,
            params=dict(doc.get("params", {})),
            extra={k: (math.nan if v is None else v) for k, v in doc.get("extra", {}).items()},
        )


class PartialRun(Exception):
    """A workload group that failed part-way: what it measured before, and why it stopped.

    The runner keeps the figures and records the failure, so a late step (a baseline
    that cannot cope with the size, a teardown the server drops) does not discard the
    rest of a long run.
    """

    def __init__(self, measured: list[Measurement], cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.measured = measured
        self.cause = cause


def _finite(value: float) -> float | None:
    return None if isinstance(value, float) and (math.isnan(value) or math.isinf(value)) else value


@dataclass(frozen=True, slots=True)
class Ratio:
    """nbdb's rate over the raw client's, for one workload on one backend."""

    workload: str
    backend: str
    params: dict[str, Any]
    nbdb_rate: float
    raw_rate: float
    baseline: str = RAW
    """Which raw baseline: ``raw`` or ``raw+<name>``."""

    @property
    def value(self) -> float:
        """nbdb / raw (NaN if a side is missing)."""
        return ratio(self.nbdb_rate, self.raw_rate)


@dataclass(frozen=True, slots=True)
class TargetCheck:
    """One target of issue 13 against what this run measured."""

    name: str
    backend: str
    measured: float
    target: float
    higher_is_better: bool
    unit: str

    @property
    def met(self) -> bool | None:
        """True / False, or None when the figure was not measured."""
        if math.isnan(self.measured):
            return None
        return self.measured >= self.target if self.higher_is_better else self.measured <= self.target


# Ratios the issue sets a target on: single writes, batched writes and reads.
RATIO_TARGET = 0.9
RATIO_WORKLOADS = ("write.create", "write.update", "write.delete", "write.txn", "read.get", "read.list")
# Concurrency beyond the raw client: eight threads through one Database against eight raw clients.
CONCURRENCY_TARGET = 1.0
CONCURRENCY_WORKLOADS = ("write.create.threads",)
# The embedded default's absolute targets (one thread, model building and validation included).
EMBEDDED = ("memory", "sqlite")
EMBEDDED_TARGETS = (
    ("write.create", "creates, one thread", 50_000),
    ("read.get", "gets, one thread", 300_000),
    ("write.update", "CAS updates, one thread", 50_000),
    ("write.delete", "deletes, one thread", 100_000),
    ("write.txn", "objects in transactions of 100", 100_000),
)


@dataclass(slots=True)
class BenchResult:
    """Every measurement of one run, the backends it covered and why some were skipped."""

    meta: dict[str, Any] = field(default_factory=dict)
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Backend name -> {"status": "ok"|"skipped"|"failed", "url"|"reason": ...}."""
    measurements: list[Measurement] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    """Workloads that failed on a backend: {"backend", "workload", "error"}."""

    def add(self, items: Iterable[Measurement]) -> None:
        """Record measurements, keeping the best round of each (workload, backend, impl, params)."""
        for m in items:
            for i, old in enumerate(self.measurements):
                if old.key == m.key and old.impl == m.impl:
                    if _better(m, old):
                        self.measurements[i] = m
                    break
            else:
                self.measurements.append(m)

    def find(self, workload: str, backend: str, impl: str, **params: Any) -> list[Measurement]:
        """Measurements matching ``workload`` (exact, or a ``prefix.`` family), backend, impl, params."""
        out = []
        for m in self.measurements:
            if m.backend != backend or m.impl != impl:
                continue
            if m.workload != workload and not m.workload.startswith(workload + "."):
                continue
            if any(m.params.get(k) != v for k, v in params.items()):
                continue
            out.append(m)
        return out

    def baselines(self, m: Measurement) -> list[Measurement]:
        """The raw baselines of nbdb measurement ``m`` in this run: ``raw`` first, then the extra ones."""
        found = [b for b in self.measurements if b.key == m.key and is_baseline(b.impl)]
        return sorted(found, key=lambda b: (b.impl != RAW, b.impl))

    def ratios(self) -> list[Ratio]:
        """nbdb / raw for every measurement that has a raw baseline in this run (one per baseline)."""
        out = []
        for m in self.measurements:
            if m.impl != NBDB:
                continue
            for base in self.baselines(m):
                out.append(Ratio(m.workload, m.backend, m.params, m.rate, base.rate, base.impl))
        return out

    def targets(self) -> list[TargetCheck]:
        """The targets of issue 13, checked against this run (per backend where they apply)."""
        checks: list[TargetCheck] = []
        for r in self.ratios():
            label = r.workload + "".join(f" {k}={v}" for k, v in sorted(r.params.items()))
            name = f"nbdb/{r.baseline} {label}"
            if r.workload in CONCURRENCY_WORKLOADS:
                checks.append(TargetCheck(name, r.backend, r.value, CONCURRENCY_TARGET, True, "ratio"))
            elif r.workload in RATIO_WORKLOADS and r.backend not in EMBEDDED:
                checks.append(TargetCheck(name, r.backend, r.value, RATIO_TARGET, True, "ratio"))
        for backend in self.backends:
            if backend == "memory":
                for workload, name, target in EMBEDDED_TARGETS:
                    found = self.find(workload, backend, NBDB)
                    best = max(found, key=lambda m: m.params.get("size", 0), default=None)
                    if best is not None and best.workload == workload:
                        checks.append(TargetCheck(name, backend, best.rate, target, True, "ops/s"))
            for objects in (10_000, 100_000):
                gets = self.find("cache.get", backend, NBDB, objects=objects)
                if gets:
                    checks.append(TargetCheck(f"cache get, one thread ({objects:,})", backend, gets[0].rate,
                                              5_000_000, True, "ops/s"))  # fmt: skip
                finds = self.find("cache.find", backend, NBDB, objects=objects)
                if finds:
                    checks.append(TargetCheck(f"cache find by index, one thread ({objects:,})", backend,
                                              finds[0].rate, 1_000_000, True, "ops/s"))  # fmt: skip
            loads = self.find("cache.cold_load", backend, NBDB)
            big = [m for m in loads if m.params.get("objects", 0) >= 100_000]
            load = self._largest(big or loads, "objects")
            if load is not None:
                n = load.params.get("objects", 0)
                goal = 100_000 if backend in EMBEDDED else 50_000
                checks.append(TargetCheck(f"cold load of {n:,} ports", backend, load.rate, goal, True, "objects/s"))
                per = load.extra.get("bytes_per_object", math.nan)
                checks.append(TargetCheck(f"memory per cached port ({n:,})", backend, per, 1024, False, "bytes"))
            fan = self._largest(self.find("watch.fanout", backend, NBDB), "caches")
            if fan is not None and fan.latency is not None and backend in ("memory", "redis", "etcd"):
                caches = fan.params.get("caches", 0)
                checks.append(
                    TargetCheck(
                        f"commit-to-applied p99, {caches} caches", backend, fan.latency.p99 / 1e3, 10.0, False, "ms"
                    )
                )
            spread = self._largest(self.find("watch.spread", backend, NBDB), "caches")
            if spread is not None and spread.latency is not None and backend in ("redis", "etcd"):
                caches, processes = spread.params.get("caches", 0), spread.params.get("processes", 0)
                name = f"commit-to-applied p99, {caches} caches over {processes} processes"
                checks.append(TargetCheck(name, backend, spread.latency.p99 / 1e3, 100.0, False, "ms"))
        return checks

    @staticmethod
    def _largest(items: list[Measurement], param: str) -> Measurement | None:
        if not items:
            return None
        return max(items, key=lambda m: m.params.get(param, 0))

    # ---------------------------------------------------------------- JSON

    def as_dict(self) -> dict[str, Any]:
        """Every figure of the run, JSON-able."""
        return {
            "meta": self.meta,
            "backends": self.backends,
            "measurements": [m.as_dict() for m in self.measurements],
            "ratios": [
                {
                    "workload": r.workload,
                    "backend": r.backend,
                    "params": r.params,
                    "nbdb_rate_per_s": _finite(r.nbdb_rate),
                    "raw_rate_per_s": _finite(r.raw_rate),
                    "baseline": r.baseline,
                    "ratio": _finite(r.value),
                }
                for r in self.ratios()
            ],
            "targets": [
                {
                    "name": t.name,
                    "backend": t.backend,
                    "measured": _finite(t.measured),
                    "target": t.target,
                    "unit": t.unit,
                    "higher_is_better": t.higher_is_better,
                    "met": t.met,
                }
                for t in self.targets()
            ],
            "errors": self.errors,
        }

    def write_json(self, path: Path) -> None:
        """Write :meth:`as_dict` to ``path``."""
        path.write_text(json.dumps(self.as_dict(), indent=1, sort_keys=False) + "\n")

    @classmethod
    def read_json(cls, path: Path) -> BenchResult:
        """Load a run written by :meth:`write_json` (ratios and targets are recomputed)."""
        doc = json.loads(path.read_text())
        return cls(
            meta=doc.get("meta", {}),
            backends=doc.get("backends", {}),
            measurements=[Measurement.from_dict(m) for m in doc.get("measurements", [])],
            errors=doc.get("errors", []),
        )


def _better(new: Measurement, old: Measurement) -> bool:
    """The better of two rounds: lower p99 for latency workloads, higher rate otherwise."""
    if new.latency is not None and old.latency is not None and new.unit == "events":
        return new.latency.p99 < old.latency.p99
    return new.rate > old.rate
