"""The retry policy and the exception map (no server)."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

import nbdb
from nbdb.retry import ErrorRule, ExceptionMap, RetryPolicy

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
