"""The controller runtime on the embedded backend: resync, predicates, retries, deletions, stop; views; metrics."""

from __future__ import annotations

import itertools
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest

import nbdb
from nbdb import metrics
from nbdb.conformance.kit import eventually
from nbdb.controller import MIN_DELAY
from nbdb.events import Key
from nbdb.models import Chassis, LogicalSwitch, LogicalSwitchPort, Model
from nbdb.retry import RetryPolicy
from nbdb.workqueue import RateLimiter

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def db() -> Iterator[nbdb.Database]:
    with nbdb.connect("memory://") as database:
        yield database


def _port(sw: LogicalSwitch, name: str, **kw: object) -> LogicalSwitchPort:
    return LogicalSwitchPort(switch=sw, name=name, **kw)  # type: ignore[arg-type]


def test_resync_requeues_every_cached_key_that_passes_the_predicate(db: nbdb.Database) -> None:
    sw = db.create(LogicalSwitch(name="sw"))
    ports = [db.create(_port(sw, f"p{i}", up=i % 2 == 0)) for i in range(4)]
    seen: list[UUID] = []
    with db.cache([LogicalSwitch, LogicalSwitchPort]) as cache:
        assert cache.wait_synced(10)
        up = lambda e: bool(e.object.up)  # noqa: E731
        with nbdb.run_controller(
            cache, lambda key, obj: seen.append(key[1]), LogicalSwitchPort, predicate=up, resync=0.2
        ) as controller:
            assert controller.wait_idle(10)
            first = sorted(map(str, seen))
            assert first == sorted(str(p.id) for p in ports if p.up)
            assert eventually(lambda: len(seen) >= 3 * len(first)), "resync queues them again"
    assert set(seen) == {p.id for p in ports if p.up}, "resync also goes through the predicate"


def test_failures_retry_with_backoff_until_success(db: nbdb.Database, caplog: pytest.LogCaptureFixture) -> None:
    sw = db.create(LogicalSwitch(name="flaky"))
    attempts: list[float] = []

    def reconcile(key: Key, obj: Model | None) -> None:
        attempts.append(time.monotonic())
        if len(attempts) < 4:
            raise RuntimeError("agent not ready")

    limiter: RateLimiter[Key] = RateLimiter(base=0.05, max_delay=1.0)
    with db.cache(LogicalSwitch) as cache, caplog.at_level(logging.WARNING, logger="nbdb.controller"):
        with nbdb.run_controller(cache, reconcile, rate_limiter=limiter, name="flaky") as controller:
            assert eventually(lambda: len(attempts) == 4)
            assert controller.wait_idle(10)
            assert controller.failed == 3 and controller.reconciled == 1
            assert controller.queue.failures((LogicalSwitch, sw.id)) == 0, "success forgets the failures"
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.045 and gaps[1] >= 0.095 and gaps[2] >= 0.195, f"exponential backoff: {gaps}"
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 3
    assert all(str(sw.id) in r.getMessage() and "revision" in r.getMessage() for r in failures)


def test_deletions_reach_the_worker_with_the_last_object(db: nbdb.Database) -> None:
    sw = db.create(LogicalSwitch(name="sw"))
    port = db.create(_port(sw, "doomed", up=True))
    calls: list[tuple[str, bool]] = []
    with db.cache([LogicalSwitch, LogicalSwitchPort]) as cache:
        assert cache.wait_synced(10)

        def reconcile(key: Key, obj: Model | None) -> None:
            assert obj is not None
            calls.append((obj.name, cache.get(*key) is None))  # type: ignore[attr-defined]

        with nbdb.run_controller(cache, reconcile, LogicalSwitchPort) as controller:
            assert controller.wait_idle(10)
            cache.wait_for(db.delete(port), 10)
            assert controller.wait_idle(10)
            assert calls == [("doomed", False), ("doomed", True)]
            assert controller.queue.object((LogicalSwitchPort, port.id)) is None, "the tombstone is dropped once done"


def test_reconcile_may_ask_to_be_called_again(db: nbdb.Database) -> None:
    db.create(LogicalSwitch(name="sw"))
    calls: list[float] = []
    with db.cache(LogicalSwitch) as cache:
        with nbdb.run_controller(cache, lambda key, obj: calls.append(time.monotonic()) or 0.05):
            assert eventually(lambda: len(calls) >= 3)
    assert calls[1] - calls[0] >= 0.045


def test_close_stops_workers_cleanly_and_no_reconcile_starts_after(db: nbdb.Database) -> None:
    sw = db.create(LogicalSwitch(name="sw"))
    started = threading.Event()
    release = threading.Event()
    calls: list[UUID] = []

    def reconcile(key: Key, obj: Model | None) -> None:
        calls.append(key[1])
        started.set()
        release.wait(10)

    with db.cache([LogicalSwitch, LogicalSwitchPort]) as cache:
        controller = nbdb.run_controller(cache, reconcile, LogicalSwitch, workers=2)
        assert started.wait(10)
        for i in range(5):
            db.update(db.get(LogicalSwitch, sw.id).replace(external_ids={"n": str(i)}))
        db.create(LogicalSwitch(name="another"))
        threading.Timer(0.2, release.set).start()
        assert controller.close(10), "close waits for the running reconcile and joins the workers"
        done = len(calls)
        db.create(LogicalSwitch(name="after close"))
        time.sleep(0.2)
        assert len(calls) == done
        assert controller.queue.closed and controller.queue.subscription.closed


def test_closing_the_cache_stops_its_controllers(db: nbdb.Database) -> None:
    cache = db.cache(LogicalSwitch)
    controller = nbdb.run_controller(cache, lambda key, obj: None, workers=3)
    cache.close()
    assert controller.close(5)


def test_bad_arguments_are_validation_errors(db: nbdb.Database) -> None:
    with db.cache(LogicalSwitch) as cache:
        with pytest.raises(nbdb.ValidationError):
            nbdb.run_controller(cache, lambda k, o: None, workers=0)
        before = threading.active_count()
        with pytest.raises(nbdb.ValidationError, match="1 to 1024 workers"):
            nbdb.run_controller(cache, lambda k, o: None, workers=10**6)  # started threads for minutes
        assert threading.active_count() == before
        with pytest.raises(nbdb.ValidationError):
            cache.queue(LogicalSwitchPort)  # not followed
        with pytest.raises(nbdb.ValidationError):
            cache.queue(resync=0)
        with pytest.raises(nbdb.ValidationError):
            RateLimiter(base=0)


@pytest.mark.parametrize(
    "call",
    [
        lambda db, cache: nbdb.run_controller(cache, lambda k, o: None, workers="2"),
        lambda db, cache: nbdb.run_controller(cache, lambda k, o: None, workers=True),
        lambda db, cache: nbdb.run_controller(cache, 5),  # was taken, and failed every key forever
        lambda db, cache: nbdb.run_controller(db, lambda k, o: None),
        lambda db, cache: nbdb.run_controller(cache, lambda k, o: None, resync=float("nan")),
        lambda db, cache: cache.queue(5),
        lambda db, cache: cache.queue(resync="1"),
        lambda db, cache: cache.subscribe(5),  # was taken, and failed every delivery
        lambda db, cache: cache.subscribe(lambda event: None, predicate="up"),
    ],
    ids=[
        "workers-text",
        "workers-bool",
        "reconcile-no-callable",
        "no-cache",
        "resync-nan",
        "queue-models",
        "queue-resync-text",
        "subscriber",
        "predicate",
    ],
)
def test_arguments_of_the_wrong_kind_are_validation_errors(db: nbdb.Database, call: Any) -> None:
    # Each raised TypeError or AttributeError, or was taken and failed later on a thread.
    with db.cache(LogicalSwitch) as cache, pytest.raises(nbdb.ValidationError):
        call(db, cache)


# ---------------------------------------------------------------- projections


def test_a_projected_cache_keeps_partial_read_only_views(db: nbdb.Database) -> None:
    sw = db.create(LogicalSwitch(name="sw"))
    chassis = db.create(Chassis(name="hv0", hostname="hv0", encap_ip="192.0.2.1")).id
    port = db.create(_port(sw, "vm1", addresses=["0a:00:00:00:00:01 10.0.0.5"], options={"big": "x" * 100}))
    fields = {LogicalSwitchPort: ["name", "chassis", "switch"]}
    with db.cache([LogicalSwitchPort], fields=fields) as cache:
        assert cache.wait_synced(10)
        view = cache.get(LogicalSwitchPort, port.id)
        assert isinstance(view, nbdb.PartialView) and not isinstance(view, Model)
        assert (view.id, view.version, view.name, view.switch) == (port.id, 1, "vm1", sw.id)
        assert not hasattr(view, "options"), "dropped fields are not kept"
        assert view.model is LogicalSwitchPort
        with pytest.raises(nbdb.ValidationError):
            db.update(view)  # type: ignore[arg-type]  # a partial copy is never written back
        with pytest.raises(nbdb.ValidationError):
            view.name = "other"
        with pytest.raises(nbdb.ValidationError):
            cache.find(LogicalSwitchPort, addresses="x")  # not kept
        bound = db.update(db.get(LogicalSwitchPort, port.id).replace(chassis=chassis))
        assert cache.wait_for(bound, 10)
        assert [p.id for p in cache.find(LogicalSwitchPort, chassis=chassis)] == [port.id]
        assert [p.id for p in cache.find(LogicalSwitchPort, switch=sw)] == [port.id]  # index on a kept reference
        assert [p.id for p in cache.find(LogicalSwitchPort, name="vm1")] == [port.id]
        assert cache.get(LogicalSwitchPort, port.id) == cache.list(LogicalSwitchPort)[0]


def test_projection_arguments_are_checked(db: nbdb.Database) -> None:
    with pytest.raises(nbdb.ValidationError):
        db.cache(LogicalSwitchPort, fields=["colour"])
    with pytest.raises(nbdb.ValidationError):
        db.cache([LogicalSwitch, LogicalSwitchPort], fields=["name"])  # several models need a mapping
    with pytest.raises(nbdb.ValidationError):
        db.cache(LogicalSwitch, fields={LogicalSwitchPort: ["name"]})
    with db.cache(LogicalSwitch, fields=["name"]) as cache:
        assert cache.wait_synced(10)


# ---------------------------------------------------------------- metrics


@pytest.fixture
def registry() -> Iterator[object]:
    prometheus_client = pytest.importorskip("prometheus_client")
    reg = prometheus_client.CollectorRegistry()
    metrics.enable(reg)
    try:
        yield reg
    finally:
        metrics.disable()


def _value(registry: object, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)  # type: ignore[attr-defined]
    return 0.0 if value is None else float(value)


def _subclasses(cls: type) -> list[type]:
    return [cls] + [c for sub in cls.__subclasses__() for c in _subclasses(sub)]


def test_every_registered_backends_metrics_label_is_its_url_scheme() -> None:
    """``sqlite://`` (no path: SqliteMemoryBackend) was counted as ``sqlitememory``, ``sqlite:///PATH`` as
    ``sqlite``: the label came from the class's name, and a variant class of one scheme got a label of its own."""
    from nbdb.loader import BUILTIN_BACKENDS, backend_class

    schemes: dict[type, set[str]] = {}
    for scheme in BUILTIN_BACKENDS:
        schemes.setdefault(backend_class(scheme), set()).add(scheme.split("+")[0])  # ovsdb+tcp: ovsdb
    for registered, names in schemes.items():
        for cls in _subclasses(registered):  # the classes its from_url may return (sqlite://: an in-memory one)
            if not cls.__module__.startswith("nbdb."):
                continue  # a subclass another test defined (a mutant, an observed backend) is not registered
            bare = cls.__new__(cls)  # the label is the class's: no server needed to name it
            assert metrics.backend_label(bare) in names, (cls, names)


def test_sqlite_without_a_path_counts_its_commits_under_sqlite(registry: object) -> None:
    with nbdb.connect("sqlite://") as db:
        db.create(LogicalSwitch(name="sw0"))
    assert _value(registry, "nbdb_commits_total", backend="sqlite", outcome="ok") == 1
    assert _value(registry, "nbdb_commits_total", backend="sqlitememory", outcome="ok") == 0


def test_metrics_count_commits_lag_caches_and_queues(registry: object) -> None:
    with nbdb.connect("memory://") as db, db.cache([LogicalSwitch]) as cache:
        assert cache.wait_synced(10)
        sw = db.create(LogicalSwitch(name="m"))
        with pytest.raises(nbdb.ConflictError):
            db.update(sw.replace(name="stale").model_copy(update={"version": 5}))
        assert cache.wait_for(db.update(sw.replace(name="m2")), 10)
        with nbdb.run_controller(cache, lambda k, o: None, name="q1") as controller:
            assert controller.wait_idle(10)
        assert _value(registry, "nbdb_commits_total", backend="memory", outcome="ok") == 2
        assert _value(registry, "nbdb_commits_total", backend="memory", outcome="conflict") == 1
        assert _value(registry, "nbdb_commit_seconds_count", backend="memory") == 2
        assert _value(registry, "nbdb_events_applied_total", backend="memory") >= 2
        assert _value(registry, "nbdb_watch_lag_seconds_count", backend="memory") >= 2
        assert _value(registry, "nbdb_cache_objects", backend="memory", model="LogicalSwitch") == 1
        assert _value(registry, "nbdb_queue_adds_total", queue="q1") >= 1
        assert _value(registry, "nbdb_work_seconds_count", queue="q1") >= 1
        assert _value(registry, "nbdb_queue_depth", queue="q1") == 0
    # The counter is process-wide: a background thread left by an earlier test may retry too.
    before = _value(registry, "nbdb_retries_total")
    attempts = RetryPolicy(attempts=3, backoff=0.0, jitter=0.0).begin()
    assert attempts.wait() and attempts.wait() and not attempts.wait()
    assert _value(registry, "nbdb_retries_total") - before >= 2


def test_without_prometheus_client_nothing_is_imported_or_recorded() -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "import nbdb, nbdb.metrics\n"
        "from nbdb.models import LogicalSwitch\n"
        "with nbdb.connect() as db, db.cache(LogicalSwitch) as c:\n"
        "    assert c.wait_for(db.create(LogicalSwitch(name='x')), 10)\n"
        "    assert nbdb.metrics.active() is None and c._replica._metrics is None\n"
        "    assert db._context.commit_times is None\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_the_controllers_page_example_runs() -> None:
    import pathlib
    import re

    page = pathlib.Path(__file__).resolve().parents[1] / "docs" / "controllers.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, str(page), "exec"), {"__name__": "controllers_example"})


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


@pytest.mark.parametrize(
    "returned", [(None, None), "ok", {"requeue": True}, b"1"], ids=["tuple", "text", "dict", "bytes"]
)
def test_a_reconcile_returning_no_number_is_logged_and_its_worker_goes_on(
    db: nbdb.Database, returned: object, caplog: pytest.LogCaptureFixture
) -> None:
    # Such a value raised TypeError outside the worker's try: the worker thread died, its controller never
    # reconciled again and wait_idle() never returned.
    seen: list[Key] = []

    def reconcile(key: Key, obj: object) -> object:
        seen.append(key)
        return returned

    with db.cache(LogicalSwitch) as cache, nbdb.run_controller(cache, reconcile, LogicalSwitch) as controller:
        for name in ("a", "b", "c"):
            db.create(LogicalSwitch(name=name))
        assert cache.wait_for(db.create(LogicalSwitch(name="d")), 10)
        assert controller.wait_idle(10)
        assert len({key for key in seen}) == 4 and controller.reconciled == len(seen)
    assert "not a number of seconds" in caplog.text


def _bounded(call: Any, seconds: float = 10.0) -> list[object]:
    """Run ``call`` on a daemon thread; what it returned, or [] if it still runs after ``seconds`` (a hang)."""
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    return out


def test_wait_idle_of_a_controller_whose_cache_closed_is_false_not_a_hang(db: nbdb.Database) -> None:
    # "closing the cache (or its Database) stops its controllers": what was not reconciled then never will be.
    # wait_idle() without a timeout waited for ever: the closed feed counted its stop marker as pending.
    sw = db.create(LogicalSwitch(name="sw"))
    cache = db.cache([LogicalSwitch, LogicalSwitchPort])
    controller = nbdb.run_controller(cache, lambda key, obj: None, LogicalSwitchPort, workers=3)
    port = db.create(_port(sw, "p1"))
    assert cache.wait_for(port, 10) and controller.wait_idle(10)
    cache.close()
    assert controller.queue.subscription.pending == 0, "a closed subscription delivers nothing more"
    assert _bounded(lambda: controller.wait_idle(None)) == [False]
    assert controller.close(10)
    assert _bounded(lambda: controller.wait_idle()) == [False]


def test_wait_replayed_of_a_subscription_closed_before_its_replay_is_false_not_a_hang(db: nbdb.Database) -> None:
    db.create(LogicalSwitch(name="sw"))
    entered, release = threading.Event(), threading.Event()

    def blocked(event: object) -> None:
        entered.set()
        release.wait(10)

    with db.cache(LogicalSwitch) as cache:
        sub = cache.subscribe(blocked, replay=True)
        assert entered.wait(10)  # inside the replay's first event
        sub.close(timeout=0)
        assert sub.pending == 0
        assert _bounded(lambda: sub.wait_replayed(None)) == [False]
        release.set()


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_closing_the_cache_starts_no_reconcile_after(db: nbdb.Database) -> None:
    # "Closing the cache (or its Database) stops its controllers": its queue was closed but not emptied, so
    # the workers went on taking every key already queued, each reconcile started after the shutdown (on a
    # server, hundreds, each logged as a failure: the closed cache's reads raise) — one that acts before it
    # reads (programs a flow, writes the database) acted after its controller was stopped.
    sw = db.create(LogicalSwitch(name="sw"))
    entered, release = threading.Event(), threading.Event()
    calls: list[Key] = []

    def reconcile(key: Key, obj: Model | None) -> None:
        calls.append(key)
        entered.set()
        release.wait(10)

    cache = db.cache(LogicalSwitchPort)
    controller = nbdb.run_controller(cache, reconcile, workers=1)
    ports = [db.create(_port(sw, f"p{i}")) for i in range(5)]
    assert cache.wait_for(ports[-1], 10) and entered.wait(10)
    cache.close()
    release.set()
    # The running reconcile finishes and its worker waits for keys that never come (it died on the next
    # one: queue.object() read the closed cache outside the reconcile's try, and its key stayed processing).
    assert eventually(lambda: controller.queue.processing == 0 and len(controller.queue) == 0, timeout=10)
    assert controller.close(10)
    assert len(calls) == 1, "no reconcile starts once the cache is closed"


def test_closing_the_database_starts_no_reconcile_that_finds_it_closed() -> None:
    # Database.close() marked itself closed before it closed its caches: a busy controller's workers went on
    # taking keys in between, and each reconcile failed with "the Database is closed" (logged and retried;
    # about 300 per shutdown on Redis). Its queues now stop first. Only reconciles already past the queue
    # when close() began may still find it closed: at most one per worker (130 in 10 rounds before).
    workers, found_closed = 4, 0
    for _ in range(10):
        db = nbdb.connect("memory://")
        for i in range(50):
            db.create(LogicalSwitch(name=f"s{i}"))
        cache = db.cache(LogicalSwitch)
        assert cache.wait_synced(10)
        seen: list[Exception] = []

        def reconcile(key: Key, obj: Model | None, db: nbdb.Database = db, seen: list[Exception] = seen) -> float:
            try:
                db.get(LogicalSwitch, key[1])
            except nbdb.BackendUnavailableError as exc:
                seen.append(exc)
                raise
            return 1e-6  # checked again at once: the workers never run out of keys

        controller = nbdb.run_controller(cache, reconcile, workers=workers)
        assert eventually(lambda c=controller: c.reconciled > 200)
        with db.lock("leader", ttl=5):  # held: close() gives it back (on a thread), the window before was wider
            db.close()
        assert controller.close(5)
        found_closed += len(seen)
    assert found_closed <= workers


def test_a_reconcile_asking_to_stop_stops_the_controller_and_says_so(
    db: nbdb.Database, caplog: pytest.LogCaptureFixture
) -> None:
    # SystemExit raised by a reconcile ended its worker thread silently (a thread cannot end the program): with
    # one worker nothing was reconciled again, and the controller still looked alive.
    db.create(LogicalSwitch(name="a"))
    cache = db.cache(LogicalSwitch)
    calls: list[Key] = []

    def reconcile(key: Key, obj: Model | None) -> None:
        calls.append(key)
        raise SystemExit(2)

    controller = nbdb.run_controller(cache, reconcile, workers=2, name="stopper")
    assert eventually(lambda: controller.queue.closed)
    assert controller.wait_idle() is False  # closed: False at once, not a wait for keys no worker takes
    assert controller.close(5)
    assert len(calls) == 1
    assert any("stopper" in r.getMessage() and "SystemExit" in r.getMessage() for r in caplog.records)


def test_a_second_close_returns_at_once_while_the_first_stops_the_queues() -> None:
    # Database.close() stops its caches' queues before it marks itself closed; a queue's feed waits (up to
    # 10 s) for a running callback. A second close() meanwhile (atexit beside a controller's thread) ran the
    # whole shutdown again, the backend's close beside the first: it waited for the same callback.
    db = nbdb.connect("memory://")
    db.create(LogicalSwitch(name="a"))
    cache = db.cache(LogicalSwitch)
    assert cache.wait_synced(10)
    in_predicate, release = threading.Event(), threading.Event()

    def predicate(event: Any) -> bool:
        in_predicate.set()
        release.wait(10)
        return True

    controller = nbdb.run_controller(cache, lambda key, obj: None, predicate=predicate)
    db.create(LogicalSwitch(name="b"))
    assert in_predicate.wait(10)
    first = threading.Thread(target=db.close)
    first.start()
    try:
        first.join(0.2)  # into stop_queues: the queue's feed waits for the predicate
        assert first.is_alive()
        second = threading.Thread(target=db.close)
        second.start()
        second.join(5)
        assert not second.is_alive(), "the second close() waited for the first one's callback"
        assert not release.is_set()
    finally:
        release.set()
        first.join(15)
        controller.close(5)
    assert not first.is_alive()


@pytest.mark.parametrize("where", ["change", "resync"])
def test_a_predicate_asking_to_stop_stops_the_controller_which_is_not_idle(
    db: nbdb.Database, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    # SystemExit from a controller's predicate (on its feed's thread, which cannot end the program) closed the
    # feed alone: the queue took no change any more, its workers waited on, and wait_idle() said True as if
    # every change had been reconciled. The controller stops, as when a reconcile asks to stop.
    from nbdb.events import EventKind

    db.create(LogicalSwitch(name="a"))
    cache = db.cache(LogicalSwitch)
    calls: list[Key] = []

    def predicate(event: Any) -> bool:
        if where == "change" and not event.synthetic:
            raise SystemExit(3)
        if where == "resync" and event.kind is EventKind.UPDATED and event.synthetic:
            raise SystemExit(3)
        return True

    resync = 0.05 if where == "resync" else None
    controller = nbdb.run_controller(cache, lambda key, obj: calls.append(key), predicate=predicate, resync=resync)
    assert cache.wait_synced(10)
    if where == "change":
        assert controller.wait_idle(10) and calls
        db.create(LogicalSwitch(name="b"))
    assert eventually(lambda: controller.queue.subscription.closed, timeout=10)
    assert controller.wait_idle(10) is False, "stopped, not idle: the change was never reconciled"
    assert controller.stopped and controller.queue.closed
    assert controller.close(5)
    assert any("feed stopped" in r.getMessage() for r in caplog.records)


def test_a_stopped_controller_is_told_from_an_idle_one(db: nbdb.Database) -> None:
    cache = db.cache(LogicalSwitch)
    controller = nbdb.run_controller(cache, lambda key, obj: None)
    assert controller.wait_idle(10)
    controller.queue.subscription.close()  # its feed closed by hand: the queue stops with it
    assert controller.wait_idle(10) is False, "its feed closed: nothing more is reconciled"
    assert controller.stopped
    assert controller.close(5)


@pytest.mark.parametrize("seconds", [1e-9, 0.001, 0, -1])
def test_a_resync_or_recheck_shorter_than_the_minimum_is_refused(db: nbdb.Database, seconds: float) -> None:
    # A resync of 1e-9 s re-queued every cached key without pause on the feed's thread; a re-check that
    # soon reconciled the key in a busy loop.
    sw = db.create(LogicalSwitch(name="sw"))
    cache = db.cache(LogicalSwitch)
    with pytest.raises(nbdb.ValidationError, match="at least"):
        cache.queue(resync=seconds)
    with pytest.raises(nbdb.ValidationError, match="at least"):
        nbdb.run_controller(cache, lambda k, o: None, resync=seconds)
    queue = cache.queue(resync=MIN_DELAY)
    with pytest.raises(nbdb.ValidationError, match="at least"):
        queue.recheck((LogicalSwitch, sw.id), seconds)
    queue.recheck((LogicalSwitch, sw.id), MIN_DELAY)
    queue.shutdown()


def test_a_reconcile_asking_for_a_tiny_recheck_waits_the_minimum(db: nbdb.Database) -> None:
    # A re-check of 1e-9 s reconciled the key again at once, in a loop that kept a core busy: each
    # re-check comes MIN_DELAY after the reconcile that asked for it at the soonest (the gaps between
    # reconciles of the key, not a count in a measured time, so a loaded machine cannot fail it).
    db.create(LogicalSwitch(name="sw"))
    cache = db.cache(LogicalSwitch)
    calls: list[float] = []
    enough = threading.Event()

    def reconcile(key: object, obj: object) -> float | None:
        calls.append(time.monotonic())
        if len(calls) < 6:
            return 1e-9
        enough.set()
        return None

    with nbdb.run_controller(cache, reconcile):
        assert enough.wait(10)
    gaps = [later - earlier for earlier, later in itertools.pairwise(calls[:6])]
    assert min(gaps) >= MIN_DELAY - 0.001, f"re-checked {min(gaps) * 1e3:.3f} ms after the reconcile that asked"
