"""Commit metrics: counted without a lock per commit, exact at every scrape, from any number of threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

import nbdb
from nbdb import metrics
from nbdb.models import LogicalSwitch

pytestmark = pytest.mark.timeout(60)

prom = pytest.importorskip("prometheus_client")


@pytest.fixture
def registry() -> Iterator[object]:
    reg = prom.CollectorRegistry()
    metrics.enable(reg)
    try:
        yield reg
    finally:
        metrics.disable()


def _value(registry: object, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)  # type: ignore[attr-defined]
    return 0.0 if value is None else float(value)


def test_concurrent_commits_are_all_counted(registry: object) -> None:
    threads, each = 4, 700  # more than one fold's worth (1,024) in all, and a remainder still pending
    with nbdb.connect("memory://") as db:
        first = db.create(LogicalSwitch(name="first"))

        def write(t: int) -> None:
            for i in range(each):
                db.create(LogicalSwitch(name=f"s{t}-{i}"))

        workers = [threading.Thread(target=write, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        with pytest.raises(nbdb.ConflictError):
            db.create(LogicalSwitch(id=first.id, name="again"))  # its id is taken
        ok = threads * each + 1
        assert _value(registry, "nbdb_commits_total", backend="memory", outcome="ok") == ok
        assert _value(registry, "nbdb_commits_total", backend="memory", outcome="conflict") == 1
        assert _value(registry, "nbdb_commit_seconds_count", backend="memory") == ok
        assert _value(registry, "nbdb_commit_seconds_bucket", backend="memory", le="+Inf") == ok
        assert 0 < _value(registry, "nbdb_commit_seconds_sum", backend="memory") < 60
        buckets = [_value(registry, "nbdb_commit_seconds_bucket", backend="memory", le=repr(b))
                   for b in metrics._LATENCY_BUCKETS]  # fmt: skip
        assert buckets == sorted(buckets)  # cumulative
        db.create(LogicalSwitch(name="one more"))
        assert _value(registry, "nbdb_commits_total", backend="memory", outcome="ok") == ok + 1


def test_failed_commits_are_counted_by_outcome(registry: object) -> None:
    with nbdb.connect("memory://") as db:
        stored = db.create(LogicalSwitch(name="a"))
        db.update(stored.replace(name="b"))
        with pytest.raises(nbdb.ConflictError):
            db.update(stored.replace(name="c"))  # stale
        with pytest.raises(nbdb.NotFoundError):
            db.delete(LogicalSwitch, LogicalSwitch(name="gone").id)
        assert _value(registry, "nbdb_commits_total", backend="memory", outcome="ok") == 2
        assert _value(registry, "nbdb_commits_total", backend="memory", outcome="conflict") == 1
        assert _value(registry, "nbdb_commit_seconds_count", backend="memory") == 2
