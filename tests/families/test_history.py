"""nbdb.families.history: reading after a revision and trimming, for every history and bound."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbdb import errors
from nbdb.families.history import changes_after, trim_history

pytestmark = pytest.mark.timeout(60)


@dataclass(frozen=True)
class _Change:
    revision: int


def _history(steps: list[int]) -> list[_Change]:
    """Changes at non-decreasing revisions (a commit of several changes shares one)."""
    revision, out = 0, []
    for step in steps:
        revision += step
        out.append(_Change(revision))
    return out


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.integers(0, 3), max_size=40), since=st.integers(0, 130), compacted=st.integers(0, 130))
def test_changes_after_a_revision_are_all_later_ones_or_the_history_is_gone(
    steps: list[int], since: int, compacted: int
) -> None:
    history = _history(steps)
    if since < compacted:
        with pytest.raises(errors.HistoryGoneError, match=f"revision {since} is older"):
            changes_after(history, since, compacted)
    else:
        assert changes_after(history, since, compacted) == [c for c in history if c.revision > since]


@settings(max_examples=200, deadline=None)
@given(
    case=st.integers(1, 30).flatmap(
        lambda limit: st.integers(0, 2 * limit + 4).flatmap(
            lambda size: st.tuples(st.lists(st.integers(0, 3), min_size=size, max_size=size), st.just(limit))
        )
    )
)
def test_trimming_keeps_at_most_the_bound_and_cuts_a_quarter_at_a_time(case: tuple[list[int], int]) -> None:
    steps, limit = case
    history = _history(steps)
    before = list(history)
    compacted = trim_history(history, limit)
    if len(before) <= limit:
        assert compacted is None and history == before
        return
    cut = len(before) - len(history)
    assert history == before[cut:]
    assert len(history) <= limit
    assert cut >= min(max(limit // 4, 1), len(before))
    assert compacted == before[cut - 1].revision
