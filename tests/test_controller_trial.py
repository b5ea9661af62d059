"""What a trial of the controller runtime found: a Database closed under Ctrl-C, async handlers, stale retries."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nbdb
from nbdb import metrics
from nbdb.conformance.kit import eventually
from nbdb.events import ChangeEvent, Key
from nbdb.models import LogicalSwitch, Model
from nbdb.workqueue import RateLimiter, WorkQueue

pytestmark = pytest.mark.timeout(60)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@pytest.fixture
def alarm() -> Iterator[None]:
    """SIGALRM raises KeyboardInterrupt in the main thread, as Ctrl-C would."""
    previous = signal.signal(signal.SIGALRM, _interrupt)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.usefixtures("alarm")
def test_close_interrupted_by_ctrl_c_still_closes_the_rest_of_the_database() -> None:
    """Ctrl-C while close() waited for a running callback left the Database half closed: its watches, other
    caches and backend stayed open, and a second close() returned at once (it was "closing" already)."""
    db = nbdb.connect("memory://")
    running, release = threading.Event(), threading.Event()
    try:
        cache = db.cache([LogicalSwitch])
        assert cache.wait_synced(10)

        def stuck(event: ChangeEvent[Model]) -> None:
            running.set()
            release.wait(30)

        cache.subscribe(stuck)
        watch = db.watch(LogicalSwitch)
        db.create(LogicalSwitch(name="sw"))
        assert running.wait(10)
        signal.setitimer(signal.ITIMER_REAL, 0.3)  # lands while close() waits (5 s) for the stuck callback
        with pytest.raises(KeyboardInterrupt):
            db.close()
        signal.setitimer(signal.ITIMER_REAL, 0)
        db.close()  # a second close (the with block's, atexit's) may not leave it half closed either
        ended = threading.Event()

        def drain() -> None:
            list(watch)  # a closed watch's iteration ends; an open one waits for the next change
            ended.set()

        threading.Thread(target=drain, daemon=True).start()
        assert ended.wait(10), "the Database's watch was left open"
    finally:
        release.set()
        db.close()


async def _async_reconcile(key: object, obj: object) -> None:
    """Never awaited: a worker thread has no event loop to run it on."""


async def _async_callback(event: object) -> bool:
    return False


class _AsyncCall:
    async def __call__(self, event: object) -> None:
        pass


@pytest.mark.parametrize(
    "register",
    [
        pytest.param(lambda db, cache: nbdb.run_controller(cache, _async_reconcile), id="reconcile"),
        pytest.param(lambda db, cache: cache.subscribe(_async_callback), id="subscriber"),
        pytest.param(lambda db, cache: cache.subscribe(_AsyncCall()), id="async-__call__"),
        pytest.param(lambda db, cache: cache.subscribe(print, predicate=_async_callback), id="predicate"),
        pytest.param(lambda db, cache: cache.queue(predicate=_async_callback), id="queue-predicate"),
        pytest.param(lambda db, cache: db.cache([LogicalSwitch], on_change=_async_callback), id="on_change"),
        pytest.param(lambda db, cache: db.cache([LogicalSwitch], on_error=_async_callback), id="on_error"),
    ],
)
def test_an_async_def_handler_is_refused_rather_than_never_run(register: object) -> None:
    """An ``async def`` reconcile was counted reconciled without running (its coroutine logged as a bad return
    value, wait_idle() True); an async subscriber never ran (a RuntimeWarning); an async predicate let every
    event through (a coroutine is truthy)."""
    with nbdb.connect("memory://") as db:
        cache = db.cache([LogicalSwitch])
        with pytest.raises(nbdb.ValidationError, match="async"):
            register(db, cache)  # type: ignore[operator]


def test_done_drops_a_retry_the_next_attempt_settled() -> None:
    """A key that failed, was added again (tried at once) and then succeeded stayed "waiting for a retry" until
    its backoff ran out: wait_idle() False and is_pending() True for up to max_delay, then one more pass."""
    queue: WorkQueue[str] = WorkQueue(rate_limiter=RateLimiter(base=30.0, max_delay=60.0))
    queue.add("k")
    assert queue.get(0) == "k"
    assert queue.retry("k") == 30.0
    queue.add("k")  # new information: tried at once
    assert queue.get(0) == "k"
    queue.done("k")
    assert not queue.is_pending("k")
    assert queue.waiting == 0
    assert queue.wait_idle(0)


def test_done_keeps_a_delay_of_add_after() -> None:
    queue: WorkQueue[str] = WorkQueue(rate_limiter=RateLimiter(base=30.0, max_delay=60.0))
    queue.add("k")
    assert queue.get(0) == "k"
    queue.retry("k")
    queue.add_after("k", 20.0)  # earlier than the retry: it replaces it, and is no retry
    queue.add("k")
    assert queue.get(0) == "k"
    queue.done("k")
    assert queue.is_pending("k")
    assert queue.waiting == 1


def test_controller_is_idle_once_a_failed_key_was_reconciled_by_its_next_change() -> None:
    with nbdb.connect("memory://") as db:
        cache = db.cache([LogicalSwitch])
        sw = db.create(LogicalSwitch(name="sw"))
        failed_once = threading.Event()

        def reconcile(key: Key, obj: Model | None) -> None:
            if not failed_once.is_set():
                failed_once.set()
                raise RuntimeError("datapath not ready")

        limiter: RateLimiter[Key] = RateLimiter(base=30.0, max_delay=60.0)
        with nbdb.run_controller(cache, reconcile, rate_limiter=limiter) as controller:
            assert failed_once.wait(10)
            assert eventually(lambda: controller.failed == 1)
            sw = db.update(sw.replace(other_config={"a": "b"}))  # reconciled at once, and succeeds
            assert cache.wait_for(sw, timeout=10)
            assert controller.wait_idle(10)  # not 30 s later (the stale retry's backoff)
            assert controller.reconciled == 1


_numbers = st.one_of(
    st.integers(min_value=-(10**400), max_value=10**400), st.floats(allow_nan=True, allow_infinity=True)
)


@settings(max_examples=300, deadline=None)
@given(base=_numbers, max_delay=_numbers, rate=_numbers, burst=st.integers(min_value=-(10**400), max_value=10**400))
def test_a_rate_limiter_of_any_numbers_is_made_or_refused_with_validation_error(
    base: float, max_delay: float, rate: float, burst: int
) -> None:
    """A whole number past a float's range (``RateLimiter(base=10**400, max_delay=10**400)``) raised
    OverflowError out of the argument check instead of the ValidationError every other bad number gets."""
    try:
        limiter: RateLimiter[str] = RateLimiter(base=base, max_delay=max_delay, rate=rate, burst=burst)
    except nbdb.ValidationError:
        return
    assert 0 <= limiter.when("k") <= threading.TIMEOUT_MAX


@pytest.mark.parametrize(
    "use",
    [
        pytest.param(lambda db, sw, seconds: db.lock("l", ttl=seconds), id="lock-ttl"),
        pytest.param(lambda db, sw, seconds: db.create(LogicalSwitch(name="t"), ttl=seconds), id="create-ttl"),
        pytest.param(lambda db, sw, seconds: db.refresh(sw, seconds), id="refresh"),
        pytest.param(lambda db, sw, seconds: db.cache([LogicalSwitch]).queue(resync=seconds), id="resync"),
    ],
)
@pytest.mark.parametrize("seconds", [10**400, -(10**400)])
def test_seconds_past_a_floats_range_are_a_validation_error(use: object, seconds: int) -> None:
    """A ttl of 10**400 raised OverflowError (math.isfinite of the whole number) instead of ValidationError."""
    with nbdb.connect("memory://") as db:
        sw = db.create(LogicalSwitch(name="sw"), ttl=30)
        with pytest.raises(nbdb.ValidationError, match="seconds"):
            use(db, sw, seconds)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("wait", "expected"),
    [
        pytest.param(lambda db, cache, t: WorkQueue[str]().get(t), None, id="queue.get"),
        pytest.param(lambda db, cache, t: WorkQueue[str]().wait_idle(t), True, id="queue.wait_idle"),
        pytest.param(lambda db, cache, t: cache.wait_for(10**6, timeout=t), False, id="cache.wait_for"),
        pytest.param(lambda db, cache, t: db.lock("l", timeout=t).__enter__().name, "l", id="lock"),
        pytest.param(lambda db, cache, t: db.watch(LogicalSwitch).poll(t), [], id="watch.poll"),
    ],
)
def test_a_timeout_below_a_floats_range_does_not_wait(wait: object, expected: object) -> None:
    """ "Zero or less does not wait": -10**400 raised OverflowError (math.isnan of the whole number)."""
    with nbdb.connect("memory://") as db:
        cache = db.cache([LogicalSwitch])
        assert cache.wait_synced(10)
        assert wait(db, cache, -(10**400)) == expected  # type: ignore[operator]


def test_delete_takes_a_controllers_key_as_mutate_and_refresh_do() -> None:
    """A reconcile has ``key = (Model, id)``: ``db.mutate(key, ...)`` and ``db.refresh(key, ttl)`` took it,
    ``db.delete(key)`` raised "expected a Model subclass, got (<class ...>, UUID(...))"."""
    with nbdb.connect("memory://") as db:
        a, b, c = (db.create(LogicalSwitch(name=n)) for n in "abc")
        assert db.delete((LogicalSwitch, a.id)) is not None
        assert db.delete((LogicalSwitch, str(a.id)), if_exists=True) is None
        with db.transaction() as txn:
            txn.delete((LogicalSwitch, b.id))
        assert db.delete((LogicalSwitch, c.id), cascade=True) is not None
        assert db.list(LogicalSwitch) == []
        with pytest.raises(nbdb.NotFoundError):
            db.delete((LogicalSwitch, a.id))
        with pytest.raises(nbdb.ValidationError):
            db.delete((LogicalSwitch, a.id), a.id)  # a key and an id
        with pytest.raises(nbdb.ValidationError):
            db.delete((LogicalSwitch, "not-an-id"))


def test_queue_object_checks_its_key_as_the_other_calls_do() -> None:
    """``queue.object("junk")`` raised TypeError out of the cache; a deleted object's key with its id as text
    found no last copy (None), while every other call takes an id as text as the object's own key."""
    with nbdb.connect("memory://") as db:
        cache = db.cache([LogicalSwitch])
        queue = cache.queue(LogicalSwitch)
        sw = db.create(LogicalSwitch(name="sw"))
        assert cache.wait_for(sw, timeout=10)
        assert queue.wait_synced(10)
        assert queue.get(10) == (LogicalSwitch, sw.id)
        queue.done((LogicalSwitch, sw.id))
        assert cache.wait_for(db.delete(sw), timeout=10)
        assert eventually(lambda: queue.is_pending((LogicalSwitch, sw.id)))
        assert queue.object((LogicalSwitch, str(sw.id))) == sw  # the last copy, its id given as text
        with pytest.raises(nbdb.ValidationError):
            queue.object("junk")  # type: ignore[arg-type]
        with pytest.raises(nbdb.ValidationError):
            queue.object((LogicalSwitch, "not-an-id"))


@pytest.mark.parametrize("name", [5, None, ("a",), b"agent"])
def test_a_controllers_name_that_is_no_text_is_refused_before_it_breaks_every_metrics_scrape(name: object) -> None:
    """``run_controller(..., name=5)`` was taken; with metrics on, every scrape of the registry then raised
    TypeError (the queue's label sorted beside the others' text): no metric of the process could be read."""
    prometheus_client = pytest.importorskip("prometheus_client")
    registry = prometheus_client.CollectorRegistry()
    metrics.enable(registry)
    try:
        with nbdb.connect("memory://") as db:
            cache = db.cache([LogicalSwitch])
            with nbdb.run_controller(cache, lambda key, obj: None, name="agent"):
                with pytest.raises(nbdb.ValidationError, match="name"):
                    nbdb.run_controller(cache, lambda key, obj: None, name=name)  # type: ignore[arg-type]
                with pytest.raises(nbdb.ValidationError, match="name"):
                    WorkQueue(name=name)  # type: ignore[arg-type]
                assert 'nbdb_queue_depth{queue="agent"}' in prometheus_client.generate_latest(registry).decode()
    finally:
        metrics.disable()


def test_wait_idle_from_its_own_reconcile_is_refused_rather_than_waiting_for_itself() -> None:
    """A reconcile calling its controller's ``wait_idle()`` waited for its own key to finish: for ever."""
    with nbdb.connect("memory://") as db:
        cache = db.cache([LogicalSwitch])
        outcome: list[object] = []
        holder: list[nbdb.Controller] = []
        ready = threading.Event()

        def reconcile(key: Key, obj: Model | None) -> None:
            ready.wait(10)
            try:
                outcome.append(holder[0].wait_idle(2))
            except nbdb.ValidationError as exc:
                outcome.append(exc)

        with nbdb.run_controller(cache, reconcile) as controller:
            holder.append(controller)
            ready.set()
            db.create(LogicalSwitch(name="sw"))
            assert eventually(lambda: bool(outcome))
            assert isinstance(outcome[0], nbdb.ValidationError)


@pytest.mark.parametrize("own_thread", [False, True], ids=["shared-thread", "handed-off"])
def test_wait_replayed_from_its_own_replay_is_refused_rather_than_waiting_for_itself(own_thread: bool) -> None:
    """A callback calling its subscription's ``wait_replayed()`` during the replay waited for its own return."""
    with nbdb.connect("memory://") as db:
        db.create(LogicalSwitch(name="sw"))
        cache = db.cache([LogicalSwitch])
        assert cache.wait_synced(10)
        outcome: list[object] = []
        holder: list[nbdb.Subscription] = []
        registered = threading.Event()

        def callback(event: ChangeEvent[Model]) -> None:
            registered.wait(10)
            if own_thread:
                time.sleep(0.2)  # past dispatch.HANDOFF_SECONDS: the callback gets a thread of its own
            try:
                outcome.append(holder[0].wait_replayed(2))
            except nbdb.ValidationError as exc:
                outcome.append(exc)

        holder.append(cache.subscribe(callback, replay=True))
        registered.set()
        assert eventually(lambda: bool(outcome))
        assert isinstance(outcome[0], nbdb.ValidationError)
        assert holder[0].wait_replayed(10)  # from another thread, once the replay was delivered


def test_a_cache_says_whether_it_is_closed() -> None:
    """Subscriptions, queues and controllers say ``closed``/``stopped``; the cache raised AttributeError."""
    db = nbdb.connect("memory://")
    mine, shared = db.cache([LogicalSwitch]), db.cache([LogicalSwitch])
    assert not mine.closed and not shared.closed
    mine.close()
    assert mine.closed and not shared.closed
    with pytest.raises(nbdb.BackendUnavailableError):
        mine.list(LogicalSwitch)
    db.close()
    assert shared.closed


def test_a_refused_retry_records_no_failure_and_takes_no_token() -> None:
    """``retry(key)`` of a key not being processed raised ValidationError only after the rate limiter had
    counted a failure of it and taken a token of the overall bucket: its next real retry waited longer."""
    limiter: RateLimiter[str] = RateLimiter(base=1.0, max_delay=60.0, rate=1.0, burst=1)
    queue: WorkQueue[str] = WorkQueue(rate_limiter=limiter)
    with pytest.raises(nbdb.ValidationError, match="not being processed"):
        queue.retry("k")
    assert queue.failures("k") == 0
    queue.add("k")
    assert queue.get(0) == "k"
    assert queue.retry("k") == 1.0  # its first failure, and the bucket's one token still there
