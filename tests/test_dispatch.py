"""The shared delivery thread of a replica's subscribers (nbdb.dispatch), without a server.

The cache's apply loop is played by the test: it offers events, wakes the
dispatcher and calls its watchdog, as ``Cache._run`` does between polls.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbdb.conformance.kit import eventually
from nbdb.dispatch import Dispatcher, Subscription, raise_if_stop

_WAIT = 10.0


def _feed(subs: list[Subscription], dispatcher: Dispatcher, items: list[Any]) -> None:
    for item in items:
        for sub in subs:
            sub._items.append(item)  # what Subscription.offer does for an event of a followed model
    dispatcher.wake()


def test_many_subscriptions_share_one_thread() -> None:
    dispatcher = Dispatcher("t")
    before = threading.active_count()
    seen: list[list[int]] = [[] for _ in range(50)]
    subs = [Subscription(s.append, dispatcher=dispatcher) for s in seen]
    try:
        assert threading.active_count() - before == 1
        _feed(subs, dispatcher, list(range(20)))
        assert eventually(lambda: all(len(s) == 20 for s in seen), timeout=_WAIT)
        assert all(s == list(range(20)) for s in seen)
        assert all(sub.pending == 0 for sub in subs)
    finally:
        for sub in subs:
            assert sub.close(_WAIT)
        assert dispatcher.close(_WAIT)


def test_a_blocked_callback_is_handed_a_thread_and_the_others_go_on() -> None:
    dispatcher = Dispatcher("t", handoff=0.05)
    gate = threading.Event()
    slow_seen: list[int] = []
    fast_seen: list[int] = []

    def slow(item: int) -> None:
        gate.wait(_WAIT)
        slow_seen.append(item)

    blocked = Subscription(slow, dispatcher=dispatcher)
    fast = Subscription(fast_seen.append, dispatcher=dispatcher)
    try:
        _feed([blocked, fast], dispatcher, [0, 1, 2])
        assert eventually(lambda: blocked.pending == 3 and dispatcher._current is blocked, timeout=_WAIT)
        assert fast_seen == [], "one thread: the fast one waits its turn until the hand-off"
        time.sleep(0.06)
        dispatcher.watchdog(0.5)  # the apply loop looks
        assert eventually(lambda: fast_seen == [0, 1, 2], timeout=_WAIT), "the others go on"
        _feed([blocked, fast], dispatcher, [3])
        assert eventually(lambda: fast_seen == [0, 1, 2, 3], timeout=_WAIT)
        assert blocked.pending == 4 and slow_seen == []
        gate.set()
        assert eventually(lambda: slow_seen == [0, 1, 2, 3], timeout=_WAIT), "in order, each once"
        blocked.put(4)  # its own thread now: woken directly
        assert eventually(lambda: slow_seen == [0, 1, 2, 3, 4], timeout=_WAIT)
    finally:
        gate.set()
        assert blocked.close(_WAIT) and fast.close(_WAIT)
        assert dispatcher.close(_WAIT)
    assert not blocked._thread or not blocked._thread.is_alive(), "closing the handed-off one ends its thread"


def test_the_watchdog_leaves_a_callback_alone_until_its_time_and_says_when_to_look() -> None:
    dispatcher = Dispatcher("t", handoff=5.0)
    gate = threading.Event()
    sub = Subscription(lambda _: gate.wait(_WAIT), dispatcher=dispatcher)
    try:
        assert dispatcher.watchdog(0.5) == 0.5, "idle: the caller's own poll interval"
        sub.put(1)
        assert eventually(lambda: dispatcher._current is sub, timeout=_WAIT)
        assert dispatcher.watchdog(0.5) == 0.5 and dispatcher._current is sub
        assert 0 < dispatcher.watchdog(10.0) <= 5.001, "a running callback: look again when it is due"
    finally:
        gate.set()
        assert sub.close(_WAIT)
        assert dispatcher.close(_WAIT)


def test_close_waits_for_a_running_callback_and_none_starts_after() -> None:
    dispatcher = Dispatcher("t", handoff=60.0)
    running = threading.Event()
    gate = threading.Event()
    calls: list[int] = []
    after_close: list[int] = []
    closed = threading.Event()

    def callback(item: int) -> None:
        running.set()
        gate.wait(_WAIT)
        calls.append(item)
        if closed.is_set():
            after_close.append(item)

    sub = Subscription(callback, dispatcher=dispatcher)
    sub.put(1)
    sub.put(2)
    assert running.wait(_WAIT)
    assert not sub.close(0.05), "still running after the timeout: close says so"
    threading.Timer(0.1, gate.set).start()
    assert sub.close(_WAIT)
    closed.set()
    time.sleep(0.05)
    assert calls == [1], "the buffered item was dropped"
    assert after_close == []
    assert dispatcher.close(_WAIT)


def test_a_callback_may_close_its_own_subscription_and_others() -> None:
    dispatcher = Dispatcher("t")
    seen: list[tuple[str, int]] = []
    other: list[Subscription] = []

    def closer(item: int) -> None:
        seen.append(("closer", item))
        me.close()
        other[0].close()

    me = Subscription(closer, dispatcher=dispatcher)
    other.append(Subscription(lambda i: seen.append(("other", i)), dispatcher=dispatcher))
    _feed([me, other[0]], dispatcher, [1, 2])
    assert eventually(lambda: me.closed and other[0].closed, timeout=_WAIT)
    time.sleep(0.05)
    assert seen == [("closer", 1)], "closed from the shared thread without waiting for itself"
    assert dispatcher.close(_WAIT)


def test_a_callback_that_closes_its_whole_cache_does_not_wait_for_itself() -> None:
    # A subscriber that closes its Database: the replica's close stops the dispatcher first, then the
    # handle's close closes the subscription again, from the callback. That second close waited for the
    # callback (itself) its whole timeout and said it was still running (5 s, a warning, per close).
    dispatcher = Dispatcher("t")
    closed: list[bool] = []

    def closer(item: int) -> None:
        me.close(_WAIT)  # the replica closes its subscriptions ...
        dispatcher.close(_WAIT)  # ... and its dispatcher ...
        closed.append(me.close(_WAIT))  # ... then the handle closes its own subscriptions

    me = Subscription(closer, dispatcher=dispatcher)
    _feed([me], dispatcher, [1])
    assert eventually(lambda: closed, timeout=3 * _WAIT)
    assert closed == [True], "the callback waited for itself"


@pytest.mark.parametrize("where", ["callback", "predicate"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared-thread", "own-thread"])
def test_a_callback_cancelled_by_its_event_loop_loses_no_later_event(where: str, shared: bool) -> None:
    # asyncio.CancelledError is a BaseException: raised by a callback or a predicate (one that ran an
    # event loop), it ended the delivery thread, and the subscription got nothing more, silently.
    dispatcher = Dispatcher("t") if shared else None
    seen: list[int] = []

    def cancel_first(item: int) -> bool:
        if item == 1:
            raise asyncio.CancelledError()
        return True

    def callback(item: int) -> None:
        seen.append(item)
        if where == "callback":
            cancel_first(item)

    sub = Subscription(callback, predicate=cancel_first if where == "predicate" else None, dispatcher=dispatcher)
    try:
        for item in (1, 2, 3):
            sub.put(item)
        assert eventually(lambda: len(seen) == 3, timeout=_WAIT), seen
        assert seen == [1, 2, 3]  # a raising predicate lets the event through
    finally:
        assert sub.close(_WAIT)
        if dispatcher is not None:
            assert dispatcher.close(_WAIT)


def test_a_periodic_task_cancelled_by_its_event_loop_stops_no_delivery() -> None:
    # A queue's resync (the tick) runs the caller's predicate: asyncio.CancelledError from it ended the
    # subscription's thread, and the queue got no change from then on, silently.
    ticks: list[int] = []
    seen: list[int] = []

    def tick() -> None:
        ticks.append(1)
        if len(ticks) == 1:
            raise asyncio.CancelledError()

    sub = Subscription(seen.append, tick=(0.01, tick))
    try:
        assert eventually(lambda: len(ticks) >= 2, timeout=_WAIT)
        sub.put(1)
        assert eventually(lambda: seen == [1], timeout=_WAIT)
    finally:
        assert sub.close(_WAIT)


def test_replay_marker_and_failing_callbacks() -> None:
    dispatcher = Dispatcher("t")
    seen: list[int] = []

    def fails_on_odd(item: int) -> None:
        if item % 2:
            raise RuntimeError("boom")
        seen.append(item)

    sub = Subscription(fails_on_odd, dispatcher=dispatcher)
    try:
        for i in range(5):
            sub._items.append(i)
        sub.mark_replayed()
        assert sub.wait_replayed(_WAIT)
        assert seen == [0, 2, 4], "a raising callback is logged and the next item delivered"
    finally:
        assert sub.close(_WAIT)
        assert dispatcher.close(_WAIT)


@settings(max_examples=25, deadline=None)
@given(
    batches=st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=8),
    slow_at=st.integers(min_value=0, max_value=40),
)
def test_every_subscriber_gets_every_item_once_in_order_across_hand_offs(batches: list[int], slow_at: int) -> None:
    dispatcher = Dispatcher("t", handoff=0.01)
    seen: list[list[int]] = [[] for _ in range(3)]

    def recorder(out: list[int], slow: bool) -> Any:
        def callback(item: int) -> None:
            if slow and item == slow_at:
                time.sleep(0.03)
            out.append(item)

        return callback

    subs = [Subscription(recorder(s, i == 0), dispatcher=dispatcher) for i, s in enumerate(seen)]
    stop = threading.Event()

    def apply_loop() -> None:  # as Cache._run: the watchdog between polls
        while not stop.is_set():
            stop.wait(dispatcher.watchdog(0.005))

    looker = threading.Thread(target=apply_loop, daemon=True)
    looker.start()
    try:
        items = 0
        for size in batches:
            _feed(subs, dispatcher, list(range(items, items + size)))
            items += size
        assert eventually(lambda: all(len(s) >= items for s in seen), timeout=_WAIT)
        assert all(s == list(range(items)) for s in seen)
    finally:
        stop.set()
        looker.join(_WAIT)
        for sub in subs:
            assert sub.close(_WAIT)
        assert dispatcher.close(_WAIT)


@pytest.mark.parametrize(
    ("exc", "stops"),
    [
        (KeyboardInterrupt(), True),
        (SystemExit(3), True),
        (asyncio.CancelledError(), False),
        (ValueError("x"), False),
        (GeneratorExit(), False),
    ],
)
def test_raise_if_stop_lets_only_a_request_to_stop_go_on_up(exc: BaseException, stops: bool) -> None:
    if stops:
        with pytest.raises(type(exc)) as raised:
            raise_if_stop(exc)
        assert raised.value is exc
    else:
        assert raise_if_stop(exc) is None


@pytest.mark.parametrize("exc", [SystemExit(1), KeyboardInterrupt()], ids=["SystemExit", "KeyboardInterrupt"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared-thread", "own-thread"])
def test_a_callback_asking_to_stop_stops_its_subscription_only_and_says_so(
    exc: BaseException, shared: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # Raised on a delivery thread, SystemExit ended that thread silently (Python ends only the thread): a
    # shared thread's every other subscription got nothing more, and this one's pending stayed above 0.
    dispatcher = Dispatcher("t") if shared else None
    other_seen: list[int] = []

    def stop(item: int) -> None:
        raise exc

    sub = Subscription(stop, dispatcher=dispatcher, name="stopper")
    other = Subscription(other_seen.append, dispatcher=dispatcher)
    try:
        sub.put(1)
        assert eventually(lambda: sub.closed, timeout=_WAIT)
        assert sub.pending == 0
        for item in (2, 3):
            other.put(item)
        assert eventually(lambda: other_seen == [2, 3], timeout=_WAIT), other_seen
        assert any("stopper" in r.getMessage() and type(exc).__name__ in r.getMessage() for r in caplog.records)
    finally:
        assert other.close(_WAIT)
        sub.close(_WAIT)
        if dispatcher is not None:
            assert dispatcher.close(_WAIT)
