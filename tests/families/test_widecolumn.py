"""The wide-column family's pure rules, without a server: stream advance, sequencer arithmetic, planner, undo."""

from __future__ import annotations

import threading
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nbdb import errors
from nbdb.families.rules import NO_TOPIC
from nbdb.families.widecolumn import layout as L
from nbdb.families.widecolumn.changes import ChangeRow
from nbdb.families.widecolumn.options import WideColumnOptions, tries
from nbdb.families.widecolumn.planner import Plan, StoredObject, check_shape, plan
from nbdb.families.widecolumn.sequencer import (
    GUESS_AFTER,
    REGRESSION_GAP,
    CommitQueue,
    RevisionSequencer,
    _Request,
    assign,
    numbers_in_bucket,
    resume_head,
)
from nbdb.families.widecolumn.sharing import ChangeSignal, RecentCommits
from nbdb.families.widecolumn.snapshot import undo
from nbdb.families.widecolumn.stream import Intent, advance, dense_run
from nbdb.retry import RetryPolicy
from nbdb.spi import ANY_VERSION, Delete, Put

pytestmark = pytest.mark.timeout(60)

NS = "ns"
SW = ("LogicalSwitch", uuid.UUID(int=1))
PORT = ("LogicalSwitchPort", uuid.UUID(int=2))
OTHER = ("LogicalSwitchPort", uuid.UUID(int=3))


def change_row(revision: int, key: tuple[str, uuid.UUID], version: int, old_version: int) -> SimpleNamespace:
    return SimpleNamespace(
        rev=revision, tbl=key[0], id=key[1], data=b"new", version=version, old_data=b"old", old_version=old_version,
        wrev=revision if version else None, old_wrev=None,
    )  # fmt: skip


# ---------------------------------------------------------------------------- the stream


def test_dense_run_starts_right_after_the_cursor_and_stops_at_a_hole() -> None:
    entries = [Intent(g, "p", frozenset({"T"})) for g in (6, 7, 9)]
    assert [e.revision for e in dense_run(5, entries)] == [6, 7]
    assert dense_run(5, []) == []
    with pytest.raises(errors.HistoryGoneError):
        dense_run(4, entries)  # revision 5 is gone: resuming from 4 would skip it


@st.composite
def walks(draw: Any) -> tuple[int, list[Intent], dict[int, list[Any]]]:
    cursor = draw(st.integers(0, 1000))
    kinds = draw(st.lists(st.sampled_from(["wanted", "other-table", "other-topic", "void"]), max_size=30))
    entries = []
    rows: dict[int, list[Any]] = {}
    for offset, kind in enumerate(kinds):
        g = cursor + 1 + offset
        table = "Other" if kind == "other-table" else "T"
        entries.append(Intent(g, "elsewhere" if kind == "other-topic" else "p", frozenset({table}), kind == "void"))
        if draw(st.booleans()):  # its change rows are known
            rows[g] = [change_row(g, (table, uuid.UUID(int=g)), 1, 0)] if draw(st.booleans()) else []
    return cursor, entries, rows


def _wants(entry: Intent) -> bool:
    return not entry.void and entry.partition == "p" and "T" in entry.tables


@given(walks())
def test_advance_never_passes_a_wanted_revision_whose_changes_are_unknown(walk: Any) -> None:
    cursor, entries, rows = walk
    got = advance(cursor, entries, rows, _wants, frozenset({"T"}))
    passed = [e for e in entries if e.revision <= got.cursor]
    assert all(not _wants(e) or e.revision in rows for e in passed)
    if got.blocked is None:
        assert got.cursor == (entries[-1].revision if entries else cursor)
    else:
        assert got.blocked.revision == got.cursor + 1 and _wants(got.blocked) and got.blocked.revision not in rows
    delivered = [c.revision for c in got.changes]
    assert delivered == sorted(delivered) and all(r <= got.cursor for r in delivered)
    assert delivered == [g for g in sorted(rows) if g <= got.cursor and rows[g] and _wants(entries[g - cursor - 1])]


@given(walks())
def test_advance_resumed_after_a_block_delivers_the_rest_once(walk: Any) -> None:
    cursor, entries, rows = walk
    first = advance(cursor, entries, rows, _wants, frozenset({"T"}))
    settled = {**{e.revision: [] for e in entries}, **rows}
    rest = advance(first.cursor, [e for e in entries if e.revision > first.cursor], settled, _wants, frozenset({"T"}))
    whole = advance(cursor, entries, settled, _wants, frozenset({"T"}))
    assert [c.revision for c in first.changes + rest.changes] == [c.revision for c in whole.changes]


def test_advance_keeps_only_the_watched_tables_of_a_commit() -> None:
    entry = Intent(3, "p", frozenset({"T", "U"}))
    rows = {3: [change_row(3, ("T", uuid.UUID(int=1)), 2, 1), change_row(3, ("U", uuid.UUID(int=2)), 1, 0)]}
    got = advance(2, [entry], rows, lambda e: True, frozenset({"T"}))
    assert [(c.table, c.revision, c.old is not None) for c in got.changes] == [("T", 3, True)]


# ---------------------------------------------------------------------------- the sequencer's arithmetic


@given(st.integers(0, 50), st.integers(1, 1000), st.integers(1, 100), st.data())
def test_numbers_in_bucket_stay_in_the_bucket(bucket: int, size: int, wanted: int, data: Any) -> None:
    start, end = bucket * size + 1, (bucket + 1) * size
    head = data.draw(st.none() | st.integers(start, end))
    first, count = numbers_in_bucket(head, bucket, wanted, size)
    assert first == (start if head is None else head + 1)
    assert 0 <= count <= wanted
    if count:
        assert start <= first and first + count - 1 <= end
        assert all(L.bucket_of(g, size) == bucket for g in range(first, first + count))
    else:
        assert head == end


@given(st.integers(1, 10_000), st.lists(st.none() | st.integers(0, 80), min_size=1, max_size=64))
def test_a_group_gives_each_commit_its_guess_when_the_take_has_it(first: int, guesses: list[int | None]) -> None:
    group = [_Request("p", frozenset(), None if g is None else first - 8 + g) for g in guesses]
    numbers = assign(group, first)
    # Every number of the take once, whatever the guesses (one index row each, no gap).
    assert sorted(numbers) == list(range(first, first + len(group)))
    seen: set[int] = set()
    for request, number in zip(group, numbers, strict=True):
        guess = request.guess
        if guess is not None and first <= guess < first + len(group) and guess not in seen:
            assert number == guess  # the first commit holding a guess in the take gets it
            seen.add(guess)
    # Without guesses, the group's order.
    assert assign([_Request("p", frozenset()) for _ in guesses], first) == numbers_in_order(first, len(guesses))


def numbers_in_order(first: int, count: int) -> list[int]:
    return list(range(first, first + count))


def guessing_sequencer(head: int) -> RevisionSequencer:
    """A sequencer whose process took revisions up to ``head`` in bucket 0, on a store that refuses every write."""

    def down(writes: Any) -> Any:
        raise errors.BackendUnavailableError("the store is down")

    queue = CommitQueue()
    queue.bucket, queue.known = 0, (0, head)
    queue.own, queue.alone = (0, head), GUESS_AFTER  # and no other process took any since GUESS_AFTER takes
    store = SimpleNamespace(apply=down)
    return RevisionSequencer(store, SimpleNamespace(ns=NS), WideColumnOptions(), queue)  # type: ignore[arg-type]


@given(st.integers(0, 10_000), st.integers(1, 8))
def test_guesses_of_a_failed_take_are_handed_out_again(head: int, writers: int) -> None:
    # Commits guessed a revision each, asked for it, and their take failed (the store was unreachable).
    sequencer = guessing_sequencer(head)
    for guess in [sequencer.predict() for _ in range(writers)]:
        with pytest.raises(errors.BackendUnavailableError):
            sequencer.allocate("p", frozenset(), guess)
    assert sequencer.predict() == head + 1, "the guesses of a failed take left the next one past the head"


@given(st.integers(0, 10_000), st.lists(st.integers(0, 15), min_size=1, max_size=60))
def test_guesses_given_back_are_handed_out_again(head: int, steps: list[int]) -> None:
    # Commits guessed a revision and then failed before asking for it (a read failed, the plan refused
    # them): each step gives back one of the guesses held (some value k >= held: asks for a new one).
    sequencer, held = guessing_sequencer(head), []
    for k in steps:
        if k < len(held):
            sequencer.unguess(held.pop(k))
            continue
        guess = sequencer.predict()
        assert guess is not None
        # Never a guess another commit in flight holds, never above the head + the guesses held + 1:
        # the commits guessed take the numbers right after the head when they ask for theirs.
        assert guess not in held
        assert head < guess <= head + 1 + len(held)
        held.append(guess)
    for guess in held:
        sequencer.unguess(guess)
    assert sequencer.predict() == head + 1, "guesses given back left the next one past the head"


@given(st.integers(0, 50), st.integers(100, 10_000), st.integers(1, 64), st.data())
def test_numbering_resumes_past_commits_the_store_lost(bucket: int, size: int, wanted: int, data: Any) -> None:
    start, end = bucket * size, (bucket + 1) * size
    highest = data.draw(st.integers(start + 1, end - wanted))
    head = data.draw(st.none() | st.integers(start + 1, end))
    resumed = resume_head(head, highest, bucket, wanted, size)
    if head is not None and head >= highest:
        assert resumed == head, "no loss: number from the head"
        return
    assert resumed is not None and highest <= resumed <= min(highest + REGRESSION_GAP, end - wanted)
    first, count = numbers_in_bucket(resumed, bucket, wanted, size)
    assert first > highest and count == wanted, "never a revision handed out before, and room for the group"
    assert resume_head(head, highest, bucket + 1, wanted, size) == head, "another bucket: nothing to resume past"


@given(st.integers(1, 10**9), st.integers(1, 10**6))
def test_bucket_of_holds_its_revision(revision: int, size: int) -> None:
    bucket = L.bucket_of(revision, size)
    assert bucket * size < revision <= (bucket + 1) * size


# ---------------------------------------------------------------------------- the planner


def put(key: tuple[str, uuid.UUID], version: int, refs: frozenset[Any] = frozenset(), topic: str = "t") -> Put:
    return Put(key[0], key[1], topic, b"data", version, refs=refs)


def test_a_transaction_is_one_partition_without_repeats() -> None:
    assert check_shape([put(SW, 0), put(PORT, 0)]) == "t"
    assert check_shape([put(SW, 0, topic=None)]) == NO_TOPIC  # type: ignore[arg-type]
    with pytest.raises(errors.ValidationError, match="twice"):
        check_shape([put(SW, 0), Delete(*SW, "t")])
    with pytest.raises(errors.UnsupportedError, match="one topic"):
        check_shape([put(SW, 0), put(PORT, 0, topic="u")])


def test_a_create_with_a_reference_in_its_partition() -> None:
    got = plan(NS, "t", [put(PORT, 0, frozenset({SW}))], {}, {PORT: None, SW: "t"})
    statements = [s for s, _ in got.statements]
    assert statements == [L.W_REF_ADD_EXISTING, L.W_CREATE]
    assert got.statements[0][1][-3:] == ({L.ref_text(*PORT): ""}, 0, None), "the target must exist and not expire"
    assert got.versions == [1] and got.reserve == [] and len(got.changes) == 1


def test_a_create_referring_to_another_partition_reserves_first() -> None:
    got = plan(NS, "t", [put(PORT, 0, frozenset({SW}))], {}, {PORT: None, SW: "infra"})
    assert got.reserve == [("infra", SW, L.ref_text(*PORT))]
    assert [s for s, _ in got.statements] == [L.W_CREATE]


def test_creates_and_their_references_inside_one_transaction() -> None:
    got = plan(NS, "t", [put(SW, 0), put(PORT, 0, frozenset({SW}))], {}, {SW: None, PORT: None})
    create_switch = got.statements[0][1]
    assert create_switch[-2] == {L.ref_text(*PORT): ""}, "the switch's INSERT carries its referrer"


@pytest.mark.parametrize(
    ("located", "error", "text"),
    [("t", errors.ConflictError, "already exists"), ("u", errors.ConflictError, "another topic")],
)
def test_a_create_of_an_id_that_exists(located: str, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        plan(NS, "t", [put(SW, 0)], {}, {SW: located})


def test_updates_of_missing_stale_or_moved_objects() -> None:
    stored = StoredObject(3, frozenset(), {}, b"old")
    with pytest.raises(errors.ConflictError, match="version 3, not 2"):
        plan(NS, "t", [put(SW, 2)], {SW: stored}, {})
    with pytest.raises(errors.NotFoundError):
        plan(NS, "t", [put(SW, 2)], {SW: None}, {SW: None})
    with pytest.raises(errors.ValidationError, match="topic cannot change"):
        plan(NS, "t", [put(SW, 2)], {SW: None}, {SW: "u"})
    got = plan(NS, "t", [put(SW, 3)], {SW: stored}, {})
    assert got.versions == [4] and got.changes[0].old_data == b"old" and got.changes[0].old_version == 3


def test_references_to_missing_or_deleted_objects() -> None:
    with pytest.raises(errors.ReferenceError, match="does not exist"):
        plan(NS, "t", [put(PORT, 0, frozenset({SW}))], {}, {PORT: None, SW: None})
    stored = StoredObject(1, frozenset(), {}, b"")
    with pytest.raises(errors.ReferenceError, match="deleted in the same transaction"):
        plan(NS, "t", [Delete(*SW, "t"), put(PORT, 0, frozenset({SW}))], {SW: stored}, {PORT: None})


def test_an_update_that_drops_references() -> None:
    stored = StoredObject(1, frozenset({SW, OTHER}), {}, b"")
    got = plan(NS, "t", [put(PORT, 1)], {PORT: stored}, {SW: "t", OTHER: "infra"})
    assert [s for s, _ in got.statements] == [L.W_REF_DROP, L.W_UPDATE]
    assert got.release == [("infra", OTHER, L.ref_text(*PORT))]


def test_a_delete_knows_its_live_and_unverified_referrers() -> None:
    referrers = {L.ref_text(*PORT): "", L.ref_text(*OTHER): "abc:tenant"}
    stored = StoredObject(2, frozenset(), referrers, b"")
    got = plan(NS, "t", [Delete(*SW, "t", ANY_VERSION)], {SW: stored}, {})
    assert got.live == {SW: [L.ref_text(*PORT)]}
    assert got.verify == {SW: [(L.ref_text(*OTHER), "abc:tenant")]}
    delete = got.statements[-1]
    assert delete[0] is L.W_DELETE and delete[1][-2:] == (2, referrers)
    # A referrer that the same transaction stops pointing here does not count.
    port_row = StoredObject(1, frozenset({SW}), {}, b"")
    got = plan(NS, "t", [Delete(*SW, "t"), Delete(*PORT, "t")], {SW: stored, PORT: port_row}, {})
    assert got.live == {}


def test_a_copy_that_knows_its_write_is_compared_by_it_and_every_write_stores_its_revision() -> None:
    # ABA: an id deleted and created again starts at version 1 again; the row's wrev (the revision that wrote
    # it) tells a copy of the first object from one of the second.
    row = StoredObject(1, frozenset(), {}, b"old", written=7)
    update = plan(NS, "t", [put(SW, 1)._replace(expect_written=7)], {SW: row}, {})
    (write, params) = update.statements[0]
    assert write is L.W_UPDATE_WRITTEN and params[-2:] == (1, 7)  # IF version = 1 AND wrev = 7
    batch = update.batch(NS, 42, history=100)
    assert batch[0][1][-3:] == (42, 1, 7)  # SET ... wrev = 42 (the commit's revision)
    change = batch[-1][1]
    assert batch[-1][0] is L.W_CHANGE and change[-3:-1] == (42, 7)  # the change row: wrev 42, old_wrev 7
    for stale in (put(SW, 1)._replace(expect_written=3), Delete(*SW, "t", 1, expect_written=3)):
        with pytest.raises(errors.ConflictError, match="deleted and created again"):
            plan(NS, "t", [stale], {SW: row}, {})
    # A row an older nbdb wrote names no revision: a copy that names one is not of it.
    with pytest.raises(errors.ConflictError):
        plan(NS, "t", [put(SW, 1)._replace(expect_written=7)], {SW: StoredObject(1, frozenset(), {}, b"")}, {})
    # A copy built by hand names none: its version alone, on any row.
    assert plan(NS, "t", [put(SW, 1)], {SW: row}, {}).statements[0][0] is L.W_UPDATE
    delete = plan(NS, "t", [Delete(*SW, "t", 1, expect_written=7)], {SW: row}, {}).statements[-1]
    assert delete[0] is L.W_DELETE_WRITTEN and delete[1][-1] == 7
    created = plan(NS, "t", [put(SW, 0)], {}, {SW: None}).batch(NS, 43, history=100)
    assert created[0][0] is L.W_CREATE and created[0][1][-1] == 43


def test_the_batch_orders_commits_in_the_partition() -> None:
    got = Plan("t")
    got.changes.append(plan(NS, "t", [put(SW, 0)], {}, {SW: None}).changes[0])
    batch = got.batch(NS, 42, history=100)
    assert batch[0] == (L.W_LAST_ABOVE, (NS, "t", 42, 42))
    assert batch[1][0] is L.W_CHANGE and batch[1][1][3] == 42 and batch[1][1][-1] == 3700
    assert got.batch(NS, 42, 100, first=True)[0] == (L.W_LAST_FIRST, (NS, "t", 42, None))


# ---------------------------------------------------------------------------- list's undo


def test_undo_takes_a_state_back_to_the_snapshot_revision() -> None:
    state: dict[Any, tuple[int, bytes, int | None]] = {SW: (3, b"v3", 12), PORT: (1, b"p1", 13)}
    changes = [
        SimpleNamespace(rev=11, tbl=SW[0], id=SW[1], version=2, old_version=1, old_data=b"v1", old_wrev=5),
        SimpleNamespace(rev=12, tbl=SW[0], id=SW[1], version=3, old_version=2, old_data=b"v2", old_wrev=11),
        SimpleNamespace(rev=13, tbl=PORT[0], id=PORT[1], version=1, old_version=0, old_data=None, old_wrev=None),
        SimpleNamespace(rev=14, tbl=OTHER[0], id=OTHER[1], version=0, old_version=4, old_data=b"o4", old_wrev=None),
        SimpleNamespace(rev=15, tbl="Unlisted", id=OTHER[1], version=1, old_version=0, old_data=None, old_wrev=None),
    ]
    undo(state, changes, {SW[0], PORT[0]})
    # Each object as it was, with the revision that wrote that value (None: a change row that does not say).
    assert state == {SW: (1, b"v1", 5), OTHER: (4, b"o4", None)}
    unseen: dict[Any, tuple[int, bytes, int | None]] = {SW: (1, b"v1", 5)}
    undo(unseen, changes[1:2], {SW[0]})  # the read did not catch revision 12: nothing to undo
    assert unseen == {SW: (1, b"v1", 5)}


# ---------------------------------------------------------------------------- small parts


def test_tries_count_the_attempts_of_a_policy() -> None:
    assert list(tries(RetryPolicy(attempts=4, backoff=0.0001, deadline=None))) == [0, 1, 2, 3]
    assert list(tries(RetryPolicy(attempts=1))) == [0]


def test_a_change_signal_wakes_every_subscriber_until_it_leaves() -> None:
    signal = ChangeSignal()
    a, b = signal.subscribe(), signal.subscribe()
    signal.unsubscribe(b)
    woken = threading.Thread(target=signal.notify)
    woken.start()
    assert a.wait(5) and not b.is_set()
    woken.join()


# ---------------------------------------------------------------------------- a process's recent commits


def _row(g: int) -> ChangeRow:
    return ChangeRow(g, "T", uuid.UUID(int=g), b"d", 1, None, 0)


def test_recent_commits_serve_a_contiguous_run_only() -> None:
    recent = RecentCommits(capacity=3)
    for g in (5, 6, 8):
        recent.add(Intent(g, "p", frozenset({"T"})), [_row(g)])
    assert [i.revision for i, _ in recent.run_after(4, max_age=60)] == [5, 6], "7 is not held: stop before it"
    assert recent.run_after(6, max_age=60) == [] and recent.holds_after(6)
    assert not recent.holds_after(7)
    recent.add(Intent(9, "p", frozenset({"T"}), void=True), [])
    assert recent.run_after(4, max_age=60) == [], "capacity 3: 5 was dropped first"
    recent.forget_through(8)
    assert [i.revision for i, _ in recent.run_after(8, max_age=60)] == [9]
    assert recent.run_after(8, max_age=0) == [], "nothing older than the store's history is served"


def test_recent_commits_know_the_revisions_their_process_has_in_flight() -> None:
    recent = RecentCommits()
    recent.begin(3)
    recent.begin(4)
    assert recent.in_flight(3) and recent.in_flight(4) and not recent.in_flight(5)
    recent.add(Intent(3, "p", frozenset({"T"})), [_row(3)])  # landed
    recent.end(4)  # failed, whatever it became
    assert not recent.in_flight(3) and not recent.in_flight(4)
