"""A group commit's pipeline: a retryable refusal of one script after another applied (no server needed).

Redis answers a script it refused as READONLY, BUSY or LOADING without running it, so such a reply
alone is "unsent". In a pipeline of commit scripts, another script may have applied before it:
the pipeline is tried again (every script carries its token), and if the tries run out the group's
outcome is unknown, never "not applied" (a caller writing again would apply those commits twice).
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.exceptions as rexc
from hypothesis import given
from hypothesis import strategies as st

from nbdb import errors
from nbdb.backends.redis.backend import retry_for
from nbdb.backends.redis.connection import ERRORS, PartlyApplied
from nbdb.retry import RetryPolicy

FAST = RetryPolicy(attempts=3, backoff=0.0, deadline=None)

REFUSALS = [
    rexc.ReadOnlyError("You can't write against a read only replica."),
    rexc.BusyLoadingError("Redis is loading the dataset in memory"),
    rexc.ResponseError("BUSY Redis is busy running a script."),
]


def _group(replies: list[Any]) -> Any:
    def call() -> list[Any]:
        retry_for(replies)
        return replies

    return FAST.call(call, ERRORS, context="commit", write=True)


@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda e: type(e).__name__)
def test_a_refusal_after_another_script_applied_is_an_unknown_outcome(refusal: Exception) -> None:
    with pytest.raises(errors.CommitUnknownError):
        _group([7, refusal])


@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda e: type(e).__name__)
def test_a_refusal_of_every_script_is_not_applied(refusal: Exception) -> None:
    with pytest.raises(errors.BackendUnavailableError) as caught:
        _group([refusal, refusal])
    assert not isinstance(caught.value, errors.CommitUnknownError)


def test_a_pipeline_that_applied_whole_is_returned() -> None:
    replies: list[Any] = [3, 4]
    assert _group(replies) is replies


@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda e: type(e).__name__)
def test_a_refusal_alone_never_ran(refusal: Exception) -> None:
    """READONLY, LOADING (redis-py's BusyLoadingError is a ConnectionError) and BUSY: the script never ran."""
    failure = ERRORS.classify(refusal)
    assert failure.retryable and failure.unsent


def test_partly_applied_is_retryable_and_may_have_landed() -> None:
    failure = ERRORS.classify(PartlyApplied("x"))
    assert failure.retryable and not failure.unsent
    assert isinstance(failure.error, errors.BackendUnavailableError)


_reply = st.one_of(
    st.integers(min_value=1, max_value=10**6),
    st.sampled_from(REFUSALS),
    st.just(rexc.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")),
)


@given(st.lists(_reply, min_size=1, max_size=8))
def test_the_group_is_never_not_applied_when_a_script_applied(replies: list[Any]) -> None:
    """For any pipeline's replies: once a script applied, the group is returned or its outcome unknown."""
    retryable = [r for r in replies if isinstance(r, Exception) and ERRORS.classify(r).retryable]
    applied = any(not isinstance(r, Exception) for r in replies)
    if not retryable:
        assert _group(replies) is replies
    elif applied:
        with pytest.raises(errors.CommitUnknownError):
            _group(replies)
    elif ERRORS.classify(retryable[0]).unsent:  # the first one is raised
        with pytest.raises(errors.BackendUnavailableError) as caught:
            _group(replies)
        assert not isinstance(caught.value, errors.CommitUnknownError)
    else:
        raise AssertionError(f"a refusal taken as maybe sent: {retryable[0]!r}")
