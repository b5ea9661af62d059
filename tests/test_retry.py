"""The retry policy, the exception map and the outage rule (no server)."""

from __future__ import annotations

import math
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

import nbdb
from nbdb.retry import ErrorRule, ExceptionMap, Outage, RetryPolicy

pytestmark = pytest.mark.timeout(30)


class Refused(Exception):
    """Stands for a client library's 'could not connect'."""


class Dropped(Exception):
    """Stands for a client library's 'connection lost mid-request'."""


class Denied(Exception):
    """Stands for a client library's authentication failure."""


ERRORS = ExceptionMap(
    "store",
    [
        ErrorRule((Denied,), nbdb.AuthError, message="refused the credentials"),
        ErrorRule((Refused,), nbdb.BackendUnavailableError, retryable=True, unsent=True),
        ErrorRule((Dropped,), nbdb.BackendUnavailableError, retryable=True),
        ErrorRule((ValueError,), nbdb.CorruptRecordError, contains=("wrongtype",)),
    ],
)


def failing(*failures: BaseException, result: str = "done") -> tuple[list[int], object]:
    calls = [0]

    def call() -> str:
        calls[0] += 1
        if calls[0] <= len(failures):
            raise failures[calls[0] - 1]
        return result

    return calls, call


FAST = RetryPolicy(attempts=4, backoff=0.0, deadline=None)


def test_translation_keeps_nbdb_errors_and_names_the_store() -> None:
    original = nbdb.NotFoundError("x")
    assert ERRORS.translate(original) is original
    error = ERRORS.translate(Denied("bad password for user"), "at h:1")
    assert isinstance(error, nbdb.AuthError) and str(error).startswith("store at h:1: refused the credentials")
    assert isinstance(ERRORS.translate(ValueError("WRONGTYPE op")), nbdb.CorruptRecordError)
    assert type(ERRORS.translate(ValueError("other"))) is nbdb.BackendUnavailableError  # the default


def test_reads_are_retried_until_they_succeed() -> None:
    calls, call = failing(Dropped(), Refused())
    assert FAST.call(call, ERRORS) == "done"  # type: ignore[arg-type]
    assert calls[0] == 3


def test_unretryable_failures_leave_at_once() -> None:
    calls, call = failing(Denied("no"))
    with pytest.raises(nbdb.AuthError):
        FAST.call(call, ERRORS)  # type: ignore[arg-type]
    assert calls[0] == 1


def test_a_write_that_may_have_landed_is_unknown_not_unavailable() -> None:
    calls, call = failing(*[Dropped()] * 10)
    with pytest.raises(nbdb.CommitUnknownError):
        FAST.call(call, ERRORS, write=True)  # type: ignore[arg-type]
    assert calls[0] == 4
    # A write that certainly never reached the server is merely unavailable.
    calls, call = failing(*[Refused()] * 10)
    with pytest.raises(nbdb.BackendUnavailableError) as caught:
        FAST.call(call, ERRORS, write=True)  # type: ignore[arg-type]
    assert not isinstance(caught.value, nbdb.CommitUnknownError)


def test_a_non_idempotent_write_is_not_sent_twice() -> None:
    calls, call = failing(Dropped(), Dropped())
    with pytest.raises(nbdb.CommitUnknownError):
        FAST.call(call, ERRORS, write=True, idempotent=False)  # type: ignore[arg-type]
    assert calls[0] == 1
    calls, call = failing(Refused())
    assert FAST.call(call, ERRORS, write=True, idempotent=False) == "done"  # type: ignore[arg-type]


def test_an_unknown_outcome_is_not_hidden_by_a_later_different_failure() -> None:
    _, call = failing(Dropped(), Denied("token expired"))
    with pytest.raises(nbdb.CommitUnknownError):
        FAST.call(call, ERRORS, write=True)  # type: ignore[arg-type]


def test_the_deadline_bounds_all_tries() -> None:
    policy = RetryPolicy(attempts=1000, backoff=0.05, max_backoff=0.05, deadline=0.3, jitter=0)
    _, call = failing(*[Refused()] * 1000)
    started = time.monotonic()
    with pytest.raises(nbdb.BackendUnavailableError):
        policy.call(call, ERRORS)  # type: ignore[arg-type]
    assert time.monotonic() - started < 2.0


def test_a_stop_event_ends_the_retries() -> None:
    stop = threading.Event()
    stop.set()
    calls, call = failing(*[Refused()] * 10)
    with pytest.raises(nbdb.BackendUnavailableError):
        RetryPolicy(attempts=10, backoff=1.0).call(call, ERRORS, stop=stop)  # type: ignore[arg-type]
    assert calls[0] == 1


class RecordingStop(threading.Event):
    """A stop event that records the pauses asked of it instead of sleeping."""

    def __init__(self) -> None:
        super().__init__()
        self.pauses: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.pauses.append(0.0 if timeout is None else timeout)
        return False


@given(
    attempts=st.integers(1, 20),
    backoff=st.floats(0, 1),
    max_backoff=st.floats(0, 2),
    jitter=st.floats(0, 1),
)
def test_pauses_grow_but_never_exceed_the_cap(attempts: int, backoff: float, max_backoff: float, jitter: float) -> None:
    policy = RetryPolicy(attempts=attempts, backoff=backoff, max_backoff=max_backoff, deadline=None, jitter=jitter)
    stop = RecordingStop()
    tries = policy.begin(stop)
    while tries.wait():
        pass
    assert tries.number == attempts and len(stop.pauses) == attempts - 1
    assert all(0 <= pause <= max_backoff for pause in stop.pauses)
    if jitter == 0:
        assert stop.pauses == sorted(stop.pauses)


def test_bad_policies_are_refused() -> None:
    for kwargs in ({"attempts": 0}, {"backoff": -1.0}, {"jitter": 2.0}, {"deadline": 0.0}):
        with pytest.raises(nbdb.ValidationError):
            RetryPolicy(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the outage rule


class Clock:
    """A clock the test moves."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.integers(0, 50)),
        st.tuples(st.just("down"), st.just(0)),
        st.tuples(st.just("up"), st.just(0)),
    ),
    max_size=40,
)


@given(timeout=st.integers(0, 30), start=st.integers(0, 10**6), steps=_STEPS, deadlines=st.lists(st.integers(-60, 60)))
def test_an_outage_refuses_once_timeout_old_and_no_call_waits_past_it(
    timeout: int, start: int, steps: list[tuple[str, int]], deadlines: list[int]
) -> None:
    """refuse_now iff down for >= timeout; limit(d) is d while up, min(d, down_since + timeout) while down.

    Whole seconds keep the arithmetic exact; the float test below holds the same without them.
    """
    clock = Clock(start)
    outage = Outage(timeout, clock)
    since: int | None = None  # the model: when the outage began
    for op, amount in steps:
        if op == "advance":
            clock.now += amount
        elif op == "down":
            since = clock.now if since is None else since  # a second loss keeps the outage's start
            outage.mark_down()
        else:
            since = None
            outage.mark_up()
        now = clock.now
        assert outage.down_since == since
        assert outage.refuse_now() == (since is not None and now - since >= timeout)
        for offset in deadlines:
            deadline = now + offset
            limit = outage.limit(deadline)
            assert limit <= deadline  # never past the caller's deadline
            if since is None:
                assert limit == deadline  # up: the whole deadline
            else:
                assert limit <= since + timeout  # never past the outage's timeout
                assert limit == min(deadline, since + timeout)  # and not cut shorter
            # A call may still wait (limit ahead) exactly when it is not refused, if its deadline is ahead.
            if deadline > now:
                assert (limit <= now) == outage.refuse_now()


@given(
    timeout=st.floats(0, 1e6),
    since=st.floats(0, 1e9),
    elapsed=st.floats(0, 1e7),
    deadline=st.floats(-1e9, 2e9),
)
def test_the_limit_and_the_refusal_agree_on_floats(
    timeout: float, since: float, elapsed: float, deadline: float
) -> None:
    clock = Clock(since)
    outage = Outage(timeout, clock)
    outage.mark_down()
    clock.now = since + elapsed
    limit = outage.limit(deadline)
    assert limit <= deadline and limit <= since + timeout
    assert outage.refuse_now() == (outage.limit(math.inf) <= clock.now)


def test_an_outage_needs_a_timeout_of_zero_or_more() -> None:
    for bad in (-1.0, math.nan):
        with pytest.raises(nbdb.ValidationError):
            Outage(bad)
    outage = Outage(0)  # zero: refused as soon as it is down
    assert not outage.refuse_now()
    outage.mark_down()
    assert outage.refuse_now()


def test_a_late_mark_down_never_overwrites_a_newer_mark_up() -> None:
    """The connection's loss and return come from different threads: the one seen last wins."""
    reading = threading.Event()
    release = threading.Event()

    def slow_clock() -> float:
        reading.set()
        release.wait(5)
        return 1.0

    outage = Outage(10, slow_clock)
    down = threading.Thread(target=outage.mark_down)
    down.start()
    assert reading.wait(5)  # mark_down has seen "up" and reads the clock...
    up = threading.Thread(target=outage.mark_up)
    up.start()  # ...while the connection comes back
    up.join(0.2)
    release.set()
    down.join(5)
    up.join(5)
    assert outage.down_since is None


@pytest.mark.timeout(30)
def test_wait_up_returns_on_the_reconnect_or_at_the_limit_never_later() -> None:
    """wait_up: True at once while up, True when the server comes back, False at limit(deadline) or on stop."""
    outage = Outage(0.4)
    assert outage.wait_up(time.monotonic() - 1)  # up: no wait, whatever the deadline
    outage.mark_down()
    began = time.monotonic()
    assert not outage.wait_up(began + 10)  # the outage's timeout comes first
    assert 0.35 <= time.monotonic() - began < 0.4 + 0.3
    assert not outage.wait_up(time.monotonic() + 10)  # past it: at once
    outage = Outage(10)
    outage.mark_down()
    began = time.monotonic()
    assert not outage.wait_up(began + 0.2)  # the caller's deadline comes first
    assert 0.15 <= time.monotonic() - began < 0.5
    assert not outage.wait_up(began + 10, stop=lambda: True)
    threading.Timer(0.2, outage.mark_up).start()
    began = time.monotonic()
    assert outage.wait_up(began + 10)  # the reconnect ends the wait
    assert time.monotonic() - began < 1.0


def test_a_mark_up_given_an_older_count_of_downs_does_nothing() -> None:
    """A probe's reply marks the client up only if no loss was reported after the probe was sent."""
    outage = Outage(10)
    outage.mark_down()
    seen = outage.downs
    outage.mark_down()  # reported after the probe left: the probe's reply is older news
    outage.mark_up(seen)
    assert outage.down_since is not None
    outage.mark_up(outage.downs)
    assert outage.down_since is None
    outage.mark_down()
    outage.mark_up()  # the client's own CONNECTED: always
    assert outage.down_since is None
