"""The watch checker: a faithful delivery passes; each kind of breach is named."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbdb.testing.history import Observed, Reset, WatchChecker

pytestmark = pytest.mark.timeout(60)


@st.composite
def _commits(draw: st.DrawFn) -> list[list[Observed]]:
    """Commits over a few objects, each a list of changes sharing one revision, in revision order."""
    versions: dict[str, int | None] = {}
    commits: list[list[Observed]] = []
    revision = draw(st.integers(min_value=0, max_value=50))
    for _ in range(draw(st.integers(min_value=1, max_value=12))):
        revision += draw(st.integers(min_value=1, max_value=3))
        touched = draw(st.sets(st.sampled_from("abcdef"), min_size=1, max_size=3))
        changes = []
        for name in sorted(touched):
            old = versions.get(name)
            if old is None:
                new: int | None = 1
            elif draw(st.booleans()) or old > 5:
                new = old + 1
            else:
                new = None
            versions[name] = new
            changes.append(Observed(0, "T", name, old, new, revision))
        commits.append(changes)
    return commits


def _deliver(commits: list[list[Observed]], split: list[bool]) -> list[Observed]:
    """Deliveries: each commit in one poll; consecutive commits share a poll where ``split`` says no."""
    out, batch = [], 0
    for index, commit in enumerate(commits):
        if index and (index - 1 >= len(split) or split[index - 1]):
            batch += 1
        out += [replace(c, batch=batch) for c in commit]
    return out


@settings(deadline=None)  # a loaded machine must not turn slowness into failures
@given(commits=_commits(), split=st.lists(st.booleans()))
def test_a_faithful_delivery_passes(commits: list[list[Observed]], split: list[bool]) -> None:
    checker = WatchChecker().feed_all(_deliver(commits, split))
    assert checker.violations == []
    assert checker.delivered == sum(map(len, commits))


@settings(deadline=None)  # a loaded machine must not turn slowness into failures
@given(commits=_commits(), data=st.data())
def test_a_dropped_update_is_a_skip(commits: list[list[Observed]], data: st.DataObject) -> None:
    events = _deliver(commits, [])
    updates = [i for i, e in enumerate(events) if e.old_version is not None and e.new_version is not None]
    # Only an update with a later change of the same object shows as a gap.
    later = [i for i in updates if any(e.id == events[i].id for e in events[i + 1 :])]
    if not later:
        return
    victim = data.draw(st.sampled_from(later))
    checker = WatchChecker().feed_all(events[:victim] + events[victim + 1 :])
    assert checker.count("skipped") == 1


@settings(deadline=None)  # a loaded machine must not turn slowness into failures
@given(commits=_commits(), data=st.data())
def test_a_repeated_change_is_a_duplicate(commits: list[list[Observed]], data: st.DataObject) -> None:
    events = _deliver(commits, [])
    index = data.draw(st.integers(min_value=0, max_value=len(events) - 1))
    again = replace(events[index], batch=events[-1].batch + 1)
    checker = WatchChecker().feed_all([*events, again])
    assert checker.count("duplicate") == 1


def test_one_commit_in_two_polls_is_torn() -> None:
    events = [
        Observed(0, "T", "a", None, 1, 10),
        Observed(1, "T", "b", None, 1, 10),
    ]
    assert WatchChecker().feed_all(events).count("torn") == 1


def test_one_commit_around_another_is_torn() -> None:
    events = [
        Observed(0, "T", "a", None, 1, 10),
        Observed(0, "T", "c", None, 1, 11),
        Observed(0, "T", "b", None, 1, 10),
    ]
    assert WatchChecker().feed_all(events).count("torn") == 1


def test_a_revision_going_back_is_out_of_order() -> None:
    events = [Observed(0, "T", "a", None, 1, 10), Observed(0, "T", "b", None, 1, 9)]
    assert WatchChecker().feed_all(events).count("out-of-order") == 1


def test_version_jumps_inside_a_change_are_bad_versions() -> None:
    events = [Observed(0, "T", "a", None, 2, 10), Observed(0, "T", "a", 2, 4, 11)]
    assert WatchChecker().feed_all(events).count("bad-version") == 2


def test_merged_versions_as_after_a_raft_leader_change_are_skips() -> None:
    # The OVSDB symptom of issue 12: v253 -> v255 with no v254.
    events = [Observed(0, "T", "a", 252, 253, 10), Observed(1, "T", "a", 254, 255, 12)]
    checker = WatchChecker().feed_all(events)
    assert checker.count("skipped") == 1
    assert "253..254" not in str(checker.violations[0]) and "254..254" in str(checker.violations[0])


def test_a_reset_forgives_the_gap_it_announces() -> None:
    events = [
        Observed(0, "T", "a", None, 1, 10),
        Reset(20),
        Observed(1, "T", "a", 4, 5, 21),
        Observed(1, "T", "a", 5, 6, 22),
    ]
    checker = WatchChecker().feed_all(events)
    assert checker.violations == [] and not checker.complete
    assert [c.new_version for c in checker.histories[("T", "a")]] == [1, 5, 6]


def test_change_after_delivered_deletion_is_a_skip() -> None:
    events = [Observed(0, "T", "a", 3, None, 10), Observed(1, "T", "a", 4, 5, 12)]
    assert WatchChecker().feed_all(events).count("skipped") == 1


def test_records_round_trip_as_dicts() -> None:
    seen = Observed(3, "T", "a", 1, 2, 10, 1.5, {"name": "x", "balance": 3})
    assert Observed.from_dict(seen.to_dict()) == seen
    assert Reset(4, 2.0).to_dict() == {"reset": 4, "at": 2.0}


def test_a_relist_after_a_reset_is_a_new_start_and_covers_what_it_included() -> None:
    events = [
        Observed(0, "T", "a", None, 1, 10),
        Reset(20),
        Observed(1, "T", "a", None, 5, 22, listed=True),
        Observed(2, "T", "a", 3, 4, 21),  # the watch from the reset goes over what the list included
        Observed(2, "T", "a", 4, 5, 22),
        Observed(3, "T", "a", 5, 6, 23),
        Observed(4, "T", "a", 7, 8, 25),  # v7 never came
    ]
    checker = WatchChecker().feed_all(events)
    assert [v.kind for v in checker.violations] == ["skipped"]
    assert checker.delivered == 5
