"""Prometheus metrics of nbdb: commits, watches and caches, handlers, work queues.

Optional: ``pip install 'nbdb[metrics]'`` installs ``prometheus_client``. When
it is importable, nbdb records its metrics in the default registry from the
first object that asks (a :class:`nbdb.Database`, a cache, a queue); serve
them the usual way (``prometheus_client.start_http_server``). When it is not
installed nothing is imported and every hot path pays one ``is None`` check:
each object binds its metric handles once, when it is made. :func:`enable`
moves them to another registry, :func:`disable` turns them off (for objects
made afterwards).

What is recorded (all names start with ``nbdb_``):

==============================  =========  ============================================================
``commits_total``               counter    commits by ``backend`` and ``outcome`` (ok, conflict,
                                           reference, not_found, unknown, unavailable, error)
``commit_seconds``              histogram  commit latency, by ``backend``
``retries_total``               counter    calls (commits, reads, watches) tried again after a transient
                                           failure under a :class:`nbdb.retry.RetryPolicy`
``watch_lag_seconds``           histogram  commit to applied in a cache, for commits made through the
                                           cache's own Database (the only ones whose start it knows)
``events_applied_total``        counter    changes applied by caches
``relists_total``               counter    re-lists after lost history
``corrupt_records_total``       counter    records a cache could not decode
``cache_objects``               gauge      objects held by live caches, by ``backend`` and ``model``
``handler_pending``             gauge      events waiting for a subscriber, by ``backend``
``queue_depth``                 gauge      keys ready in a work queue, by ``queue``
``queue_adds_total``            counter    keys added (coalesced adds included), by ``queue``
``queue_retries_total``         counter    keys retried after a failure, by ``queue``
``work_seconds``                histogram  time a worker spent on one key, by ``queue``
==============================  =========  ============================================================
"""

from __future__ import annotations

import bisect
import collections
import importlib.util
import itertools
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from nbdb import errors

if TYPE_CHECKING:
    from nbdb.spi import CommitResult, RecordChange

__all__ = [
    "BackendMetrics",
    "CommitTimes",
    "Metrics",
    "QueueMetrics",
    "active",
    "count_retry",
    "disable",
    "enable",
    "installed",
]

CommitTimes = OrderedDict[int, float]
"""Start times (``perf_counter``) of a Database's recent commits, by revision."""

_COMMIT_TIMES_KEPT = 4096
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_OUTCOMES: tuple[tuple[type[BaseException], str], ...] = (
    (errors.ConflictError, "conflict"),
    (errors.ReferenceError, "reference"),
    (errors.NotFoundError, "not_found"),
    (errors.CommitUnknownError, "unknown"),
    (errors.BackendUnavailableError, "unavailable"),
)

_lock = threading.Lock()
_active: Metrics | None = None
_resolved = False


class Sized(Protocol):
    """What the scrape-time gauges read from a live object."""

    def metric_samples(self) -> Iterator[tuple[str, tuple[str, ...], float]]:
        """``(gauge name, label values, value)`` for each gauge this object feeds."""


def installed() -> bool:
    """Whether ``prometheus_client`` can be imported."""
    try:
        return importlib.util.find_spec("prometheus_client") is not None
    except (ImportError, ValueError):  # blocked (sys.modules entry None) or broken
        return False


def active() -> Metrics | None:
    """The metrics in use, or None (not installed, or disabled).

    Resolved on the first call: if ``prometheus_client`` is installed, metrics
    go to its default registry.
    """
    global _active, _resolved
    if not _resolved:
        with _lock:
            if not _resolved:
                _active = Metrics() if installed() else None
                _resolved = True
    return _active


def enable(registry: Any = None) -> Metrics:
    """Record metrics in ``registry`` (default: prometheus_client's) from now on.

    Raises :class:`nbdb.UnsupportedError` if ``prometheus_client`` is not
    installed. Objects made before keep the handles they bound.
    """
    global _active, _resolved
    if not installed():
        raise errors.UnsupportedError("metrics need prometheus_client: pip install 'nbdb[metrics]'")
    with _lock:
        _active = Metrics(registry)
        _resolved = True
        return _active


def disable() -> None:
    """Record no metrics in objects made from now on."""
    global _active, _resolved
    with _lock:
        _active = None
        _resolved = True


def count_retry() -> None:
    """Count a call tried again after a transient failure (called by :mod:`nbdb.retry`)."""
    metrics = active()
    if metrics is not None:
        metrics.retries.inc()


def backend_label(backend: object) -> str:
    """The ``backend`` label of a backend object: its class's ``metrics_label``, or ``RedisBackend`` -> ``redis``.

    The label names the URL scheme, not the class: ``sqlite://``'s in-process ``SqliteMemoryBackend`` was
    ``sqlitememory``, so one scheme's commits were counted under two labels.
    """
    cls = type(backend)
    label = getattr(cls, "metrics_label", None)
    if isinstance(label, str) and label:
        return label
    return cls.__name__.removesuffix("Backend").lower() or "unknown"


class Metrics:
    """nbdb's metric families in one registry."""

    def __init__(self, registry: Any = None) -> None:
        import prometheus_client as prom

        if registry is None:
            registry = prom.REGISTRY
        self.registry = registry
        kw: dict[str, Any] = {"namespace": "nbdb", "registry": registry}
        # Commits are counted without a lock per commit and reported at scrape time (_CommitCollector).
        self._commits: dict[str, CommitStats] = {}
        self._commits_lock = threading.Lock()
        registry.register(_CommitCollector(self._commits, self._commits_lock))
        self.retries = prom.Counter("retries", "Calls tried again after a transient failure", **kw)
        self.watch_lag = prom.Histogram(
            "watch_lag_seconds", "Commit to applied in a cache", ["backend"], buckets=_LATENCY_BUCKETS, **kw
        )
        self.applied = prom.Counter("events_applied", "Changes applied by caches", ["backend"], **kw)
        self.relists = prom.Counter("relists", "Cache re-lists after lost history", ["backend"], **kw)
        self.corrupt = prom.Counter("corrupt_records", "Records a cache could not decode", ["backend"], **kw)
        self.queue_adds = prom.Counter("queue_adds", "Keys added to a work queue", ["queue"], **kw)
        self.queue_retries = prom.Counter("queue_retries", "Keys retried after a failure", ["queue"], **kw)
        self.work_seconds = prom.Histogram(
            "work_seconds", "Time a worker spent on one key", ["queue"], buckets=_LATENCY_BUCKETS, **kw
        )
        self._live: weakref.WeakSet[Sized] = weakref.WeakSet()
        registry.register(_LiveCollector(self._live))

    def backend(self, backend: object) -> BackendMetrics:
        """Handles bound to one backend's label."""
        return BackendMetrics(self, backend_label(backend))

    def commit_stats(self, label: str) -> CommitStats:
        """The commit counts of one backend label (shared by every Database with that label)."""
        with self._commits_lock:
            stats = self._commits.get(label)
            if stats is None:
                stats = self._commits[label] = CommitStats()
            return stats

    def queue(self, name: str) -> QueueMetrics:
        """Handles bound to one work queue's label."""
        return QueueMetrics(self, name)

    def track(self, obj: Sized) -> None:
        """Read ``obj``'s gauges at every scrape while it lives."""
        self._live.add(obj)


class BackendMetrics:
    """The commit and cache metrics of one backend label."""

    def __init__(self, metrics: Metrics, label: str) -> None:
        self.label = label
        self._metrics = metrics
        self._commits = metrics.commit_stats(label)
        self._durations = self._commits.pending
        self._lag = metrics.watch_lag.labels(label)
        self._applied = metrics.applied.labels(label)
        self._relists = metrics.relists.labels(label)
        self._corrupt = metrics.corrupt.labels(label)

    def track(self, obj: Sized) -> None:
        """See :meth:`Metrics.track`."""
        self._metrics.track(obj)

    def commit(self, commit: Callable[[Any], CommitResult], ops: Any, times: CommitTimes | None = None) -> CommitResult:
        """Run ``commit(ops)``, counting its outcome and latency; note its start in ``times``."""
        start = time.perf_counter()
        try:
            result = commit(ops)
        except BaseException as exc:
            self._commits.failed(next((name for kind, name in _OUTCOMES if isinstance(exc, kind)), "error"))
            raise
        durations = self._durations
        durations.append(time.perf_counter() - start)  # atomic: no lock per commit
        if len(durations) >= _FOLD_AT:
            self._commits.fold()
        if times is not None:
            times[result.revision] = start
            if len(times) > _COMMIT_TIMES_KEPT:
                times.popitem(last=False)
        return result

    def applied(self, changes: Sequence[RecordChange], times: CommitTimes | None) -> None:
        """Count changes a cache applied; observe the lag of those committed through ``times``' Database."""
        self._applied.inc(len(changes))
        if not times:
            return
        now = time.perf_counter()
        last = None
        for change in changes:
            if change.revision != last:
                last = change.revision
                start = times.get(last)
                if start is not None:
                    self._lag.observe(now - start)

    def relisted(self) -> None:
        """Count a re-list."""
        self._relists.inc()

    def corrupt(self) -> None:
        """Count a record that did not decode."""
        self._corrupt.inc()


class QueueMetrics:
    """The metrics of one work queue."""

    def __init__(self, metrics: Metrics, name: str) -> None:
        self.name = name
        self._metrics = metrics
        self.adds = metrics.queue_adds.labels(name)
        self.retries = metrics.queue_retries.labels(name)
        self.work_seconds = metrics.work_seconds.labels(name)

    def track(self, obj: Sized) -> None:
        """See :meth:`Metrics.track`."""
        self._metrics.track(obj)


_FOLD_AT = 1024
"""Commit durations kept before they are folded into the counts (a scrape folds them too)."""


class CommitStats:
    """The commits of one backend label: outcomes, and the latency histogram of the successful ones.

    A successful commit only appends its duration to ``pending`` (a deque's
    append is atomic, so concurrent committers need no lock); :meth:`fold`
    turns them into counts under the lock, every :data:`_FOLD_AT` commits and
    at every scrape. Three locked increments per commit (prometheus_client's
    counter and histogram) were ~1 µs of an embedded create's ~20.
    """

    def __init__(self) -> None:
        self.pending: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self.outcomes: dict[str, int] = {"ok": 0}
        self.buckets = [0] * (len(_LATENCY_BUCKETS) + 1)
        """Successful commits per latency bucket (not cumulative; the last one is +Inf)."""
        self.seconds = 0.0

    def failed(self, outcome: str) -> None:
        """Count a commit that raised (``outcome``: what it raised)."""
        with self._lock:
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def fold(self) -> None:
        """Count the pending durations."""
        pending, buckets, bounds = self.pending, self.buckets, _LATENCY_BUCKETS
        with self._lock:
            done = 0
            total = 0.0
            while True:
                try:
                    duration = pending.popleft()  # atomic: an append racing with this waits for the next fold
                except IndexError:
                    break
                done += 1
                total += duration
                buckets[bisect.bisect_left(bounds, duration)] += 1
            self.outcomes["ok"] += done
            self.seconds += total

    def snapshot(self) -> tuple[dict[str, int], list[int], float]:
        """(outcome counts, per-bucket counts, total seconds), pending durations included."""
        self.fold()
        with self._lock:
            return dict(self.outcomes), list(self.buckets), self.seconds


class _CommitCollector:
    """``commits_total`` and ``commit_seconds`` at scrape time, from every label's :class:`CommitStats`."""

    def __init__(self, stats: dict[str, CommitStats], lock: threading.Lock) -> None:
        self._stats = stats
        self._lock = lock

    def describe(self) -> list[Any]:
        return []  # scrape-time values: nothing to check at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        commits = CounterMetricFamily("nbdb_commits", "Commits by outcome", labels=["backend", "outcome"])
        seconds = HistogramMetricFamily("nbdb_commit_seconds", "Commit latency", labels=["backend"])
        with self._lock:
            stats = sorted(self._stats.items())
        for label, one in stats:
            outcomes, buckets, total = one.snapshot()
            for outcome, count in sorted(outcomes.items()):
                commits.add_metric([label, outcome], count)
            cumulative = list(itertools.accumulate(buckets))
            bounds = [repr(b) for b in _LATENCY_BUCKETS] + ["+Inf"]  # as prometheus_client spells them
            seconds.add_metric([label], list(zip(bounds, cumulative, strict=True)), total)
        yield commits
        yield seconds


class _LiveCollector:
    """Gauges read at scrape time from live objects, so that keeping them costs nothing."""

    _HELP = {
        "cache_objects": ("Objects held by live caches", ("backend", "model")),
        "handler_pending": ("Events waiting for a subscriber", ("backend",)),
        "queue_depth": ("Keys ready in a work queue", ("queue",)),
    }

    def __init__(self, live: weakref.WeakSet[Sized]) -> None:
        self._live = live

    def describe(self) -> list[Any]:
        return []  # scrape-time values: nothing to check at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        totals: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in self._HELP}
        for obj in list(self._live):
            for name, labels, value in obj.metric_samples():
                per = totals[name]
                per[labels] = per.get(labels, 0.0) + value
        for name, (text, labelnames) in self._HELP.items():
            family = GaugeMetricFamily(f"nbdb_{name}", text, labels=list(labelnames))
            for labels, value in sorted(totals[name].items()):
                family.add_metric(list(labels), value)
            yield family
