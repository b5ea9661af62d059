"""Watches: every change after a revision, once, in order per object, resumable."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

import nbdb
from nbdb.conformance.kit import KitChild, KitParent, sink_deliveries
from nbdb.events import ChangeEvent, EventKind
from nbdb.models import Model

pytestmark = [pytest.mark.nbdb_kit, pytest.mark.timeout(60)]


def _collect(watch: nbdb.Watch, count: int, timeout: float = 15.0) -> list[ChangeEvent[Model]]:
    events: list[ChangeEvent[Model]] = []
    deadline = time.monotonic() + timeout
    while len(events) < count and time.monotonic() < deadline:
        events += watch.poll(0.2)
    return events


def test_watch_delivers_create_update_delete_with_old_and_new(db: nbdb.Database) -> None:
    with db.watch(KitParent) as watch:
        v1 = db.create(KitParent(name="a"))
        v2 = db.update(v1.replace(size=2))
        db.delete(v2)
        events = _collect(watch, 3)
    assert [e.kind for e in events] == [EventKind.CREATED, EventKind.UPDATED, EventKind.DELETED]
    created, updated, deleted = events
    assert created.old is None and created.new == v1
    assert updated.old == v1 and updated.new == v2
    assert deleted.old == v2 and deleted.new is None
    assert created.revision < updated.revision < deleted.revision
    assert all(e.model is KitParent and not e.synthetic for e in events)


def test_watch_since_replays_history_without_gap_or_duplicate(db: nbdb.Database) -> None:
    start = db.list(KitParent).revision
    made = [db.create(KitParent(name=f"p{i}")) for i in range(10)]
    with db.watch(KitParent, since=start) as watch:
        events = _collect(watch, 10)
        assert [e.new.id for e in events if e.new] == [p.id for p in made]
        assert _collect(watch, 1, timeout=0.5) == []


def test_a_watch_from_a_writes_revision_delivers_what_came_after(db: nbdb.Database) -> None:
    # A write's revision is an nbdb.Revision (an int subclass): redis-py sent it as its repr,
    # "Revision(7)", and every watch from it failed (BackendUnavailableError from the log script).
    first = db.create(KitParent(name="first"))
    revisions = [first.nbdb_revision, db.delete(db.create(KitParent(name="gone")))]
    later = db.create(KitParent(name="later"))
    for since in revisions:
        assert since is not None
        with db.watch(KitParent, since=since) as watch:
            names = [e.object.model_dump()["name"] for e in _collect(watch, 3 if since == revisions[0] else 1)]
        assert names[-1] == later.name and "first" not in names


def test_watch_resumes_from_its_revision(db_factory: Callable[..., nbdb.Database]) -> None:
    writer, reader = db_factory(), db_factory()
    first = reader.watch(KitParent)
    seen: list[str] = []
    for i in range(5):
        writer.create(KitParent(name=f"a{i}"))
    seen += [e.object.model_dump()["name"] for e in _collect(first, 5)]
    resume = first.revision
    first.close()
    for i in range(5):
        writer.create(KitParent(name=f"b{i}"))
    with reader.watch(KitParent, since=resume) as second:
        seen += [e.object.model_dump()["name"] for e in _collect(second, 5)]
        assert _collect(second, 1, timeout=0.5) == []
    assert seen == [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(5)]


def test_a_resume_token_taken_before_a_poll_loses_no_change(db_factory: Callable[..., nbdb.Database]) -> None:
    """``revision`` says what was delivered, not what the store has: a token taken while changes wait.

    A stream whose revision ran ahead to the store's passed every test that took the token after
    polling everything (a watch resumed from it skipped the changes it never delivered).
    """
    writer, reader = db_factory(), db_factory()
    with reader.watch(KitParent) as first:
        writer.create(KitParent(name="a"))
        seen = [e.object.model_dump()["name"] for e in _collect(first, 1)]
        for i in range(3):
            writer.create(KitParent(name=f"b{i}"))
        resume = first.revision  # without polling: b0..b2 are committed, none delivered by this watch
    with reader.watch(KitParent, since=resume) as second:
        seen += [e.object.model_dump()["name"] for e in _collect(second, 3)]
    assert seen == ["a", "b0", "b1", "b2"], f"resumed from the revision {resume} a watch gave before a poll"


def test_iterating_a_watch_in_order_per_object(db: nbdb.Database) -> None:
    obj = db.create(KitParent(name="x"))
    watch = db.watch(KitParent)
    current = obj
    for i in range(20):
        current = db.update(current.replace(size=i))
    versions = []
    for event in watch:
        versions.append(event.object.version)
        if len(versions) == 20:
            break
    watch.close()
    assert versions == list(range(2, 22))


def test_watch_filters_by_model(db: nbdb.Database) -> None:
    with db.watch(KitChild) as watch:
        parent = db.create(KitParent(name="p"))
        child = db.create(KitChild(parent=parent, name="c"))
        events = _collect(watch, 1)
        assert _collect(watch, 1, timeout=0.5) == []
    assert [e.new.id for e in events if e.new] == [child.id]


def test_watch_filters_by_topic(db: nbdb.Database) -> None:
    with db.watch(KitParent, topics=["t1"]) as watch:
        db.create(KitParent(name="other", topic="t2"))
        db.create(KitParent(name="global"))
        mine = db.create(KitParent(name="mine", topic="t1"))
        events = _collect(watch, 1)
        assert _collect(watch, 1, timeout=0.5) == []
    assert [e.new.id for e in events if e.new] == [mine.id]


def test_watch_of_topic_none_sees_global_objects(db: nbdb.Database) -> None:
    with db.watch(KitParent, topics=[None]) as watch:
        db.create(KitParent(name="tenant", topic="t1"))
        glob = db.create(KitParent(name="global"))
        events = _collect(watch, 1)
        assert _collect(watch, 1, timeout=0.5) == []
    assert [e.new.id for e in events if e.new] == [glob.id]


def _first_poll(watch: nbdb.Watch, timeout: float = 15.0) -> list[ChangeEvent[Model]]:
    """The first poll of ``watch`` that returns anything ([] after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = watch.poll(0.2)
        if events:
            return events
    return []


def _create_three(db: nbdb.Database, prefix: str) -> None:
    """Create ``prefix`` 0, 1 and 2 in one transaction (skip where the backend declares none)."""
    if db.capabilities.transactions is nbdb.Atomicity.NONE:
        pytest.skip("backend declares transactions=none")
    with db.transaction() as txn:
        for i in range(3):
            txn.create(KitParent(name=f"{prefix}{i}"))


def test_transaction_changes_arrive_together(db: nbdb.Database) -> None:
    """A commit's changes share one revision and come in one poll: a reader never holds half of it.

    Collected over several polls, a commit whose last change a stream held back to its next poll (a
    reader that stops at a page size, not at a revision) passed: every change came, at one revision.
    """
    with db.watch(KitParent) as watch:
        _create_three(db, "t")
        first = _first_poll(watch)
        events = first if len(first) >= 3 else first + _collect(watch, 3 - len(first), timeout=2)
    assert len({e.revision for e in events}) == 1
    assert sorted(e.object.model_dump()["name"] for e in events) == ["t0", "t1", "t2"]
    assert len(first) == 3, (
        f"torn: a transaction of 3 creates came over several polls ({len(first)} in the first): "
        "a poll hands a commit's changes all at once"
    )


def test_a_watch_resumed_after_one_poll_of_a_transaction_misses_none_of_it(
    db_factory: Callable[..., nbdb.Database],
) -> None:
    """Stopped after the poll that brought a transaction, a watch's ``revision`` resumes without a gap.

    The token has commit granularity: it may say the commit again, never that a change of it was
    delivered while the stream still held it back (a resumed watch started past it, and never had it).
    """
    writer, reader = db_factory(), db_factory()
    with reader.watch(KitParent) as first:
        _create_three(writer, "r")
        seen = [e.object.model_dump()["name"] for e in _first_poll(first)]
        resume = first.revision
    assert seen, "the watch delivered nothing of the transaction"
    writer.create(KitParent(name="after"))
    with reader.watch(KitParent, since=resume) as second:
        deadline = time.monotonic() + 15
        while "after" not in seen and time.monotonic() < deadline:
            seen += [e.object.model_dump()["name"] for e in second.poll(0.2)]
    missed = {"r0", "r1", "r2", "after"} - set(seen)
    assert not missed, (
        f"resumed from the revision {resume} the watch gave after one poll, {sorted(missed)} never came: "
        "a stream's revision must not pass a commit it has not delivered whole"
    )


def test_watch_from_forgotten_history_raises_history_gone(db: nbdb.Database) -> None:
    start = db.list(KitParent).revision
    for i in range(3):
        db.create(KitParent(name=f"p{i}"))
    try:
        db.backend.compact_history()
    except nbdb.UnsupportedError as exc:
        pytest.skip(str(exc))
    for i in range(2):
        db.create(KitParent(name=f"q{i}"))
    watch = db.watch(KitParent, since=start)
    with pytest.raises(nbdb.HistoryGoneError):
        _collect(watch, 5, timeout=5)
    watch.close()


def test_a_stream_given_a_sink_hands_over_every_change_once_in_order(db: nbdb.Database) -> None:
    """The optional :meth:`nbdb.spi.RecordStream.deliver_to` (what the Database's shared watch uses).

    A stream that accepts a sink gives it whole revisions in order, every change once, a
    transaction's changes in one call; ``poll`` beside it returns [] (it may hand queued changes
    to the sink itself) and ``revision`` reaches the last commit. A stream that declines is skipped.
    """
    expected: list[tuple[object, bool]] = []
    made: list[KitParent] = []
    together: list[KitParent] = []

    def write() -> None:
        made.extend(db.create(KitParent(name=f"sink{i}")) for i in range(5))
        expected.extend((p.id, False) for p in made)
        for p in made[:2]:
            expected.append((db.update(p.replace(size=7)).id, False))
        with db.transaction() as txn:
            together.extend(txn.create(KitParent(name=f"sink-t{i}")) for i in range(3))
        db.delete(made[4])

    got = sink_deliveries(db, KitParent, write)
    if got is None:
        pytest.skip("this backend's stream does not hand changes to a sink (deliver_to is optional)")
    handed, polled = got
    given = [([(c.id, c.new is None) for c in changes], revision, [c.revision for c in changes])
             for _, changes, revision in handed]  # fmt: skip
    assert polled == []  # every change went to the sink
    seen = [change for changes, _, _ in given for change in changes]
    ids_together = {t.id for t in together}
    # The transaction's three creates come together, in any order among themselves.
    at = next(i for i, (cid, _) in enumerate(seen) if cid in ids_together)
    assert {cid for cid, _ in seen[at : at + 3]} == ids_together
    assert seen[:at] == expected and seen[at + 3 :] == [(made[4].id, True)]
    assert any({cid for cid, _ in changes} == ids_together for changes, _, _ in given)
    revisions = [r for _, _, rs in given for r in rs]
    assert revisions == sorted(revisions)
    assert all(r <= revision for _, revision, rs in given for r in rs)
    calls = [revision for _, revision, _ in given]
    assert calls == sorted(calls)
