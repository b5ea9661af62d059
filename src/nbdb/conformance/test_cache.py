"""The local cache: list then watch, indexes, subscribers, re-list on lost history."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial

import pytest

import nbdb
from nbdb.conformance.kit import (
    KitChild,
    KitCounter,
    KitGroup,
    KitParent,
    eventually,
    held_watches,
    paused_watches,
)
from nbdb.events import ChangeEvent, EventKind
from nbdb.models import Model

pytestmark = [pytest.mark.nbdb_kit, pytest.mark.timeout(90)]


def _state(db: nbdb.Database, model: type[Model]) -> dict[object, int]:
    return {o.id: o.version for o in db.list(model)}


def _cache_state(cache: nbdb.Cache, model: type[Model]) -> dict[object, int]:
    return {o.id: o.version for o in cache.list(model)}


def test_cache_loads_then_follows(db_factory: Callable[..., nbdb.Database]) -> None:
    writer, reader = db_factory(), db_factory()
    parents = [writer.create(KitParent(name=f"p{i}")) for i in range(5)]
    with reader.cache([KitParent, KitChild]) as cache:
        assert cache.wait_synced(15)
        assert _cache_state(cache, KitParent) == {p.id: 1 for p in parents}
        child = writer.create(KitChild(parent=parents[0], name="c"))
        updated = writer.update(parents[1].replace(size=3))
        writer.delete(parents[4])
        assert eventually(lambda: cache.get(KitChild, child.id) is not None)
        assert eventually(lambda: cache.get(KitParent, parents[4].id) is None)
        assert eventually(lambda: cache.get(KitParent, updated.id) == updated)
        assert _cache_state(cache, KitParent) == _state(writer, KitParent)
        # By any spelling of the id: another UUID object of the same value, its text.
        assert cache.get(KitParent, uuid.UUID(int=parents[0].id.int)) == parents[0]
        assert cache.get(KitParent, str(parents[0].id)) == parents[0]
        assert cache.get(KitParent, uuid.UUID(int=parents[4].id.int)) is None


def _holds(cache: nbdb.Cache, truth: dict[object, int]) -> bool:
    return _cache_state(cache, KitCounter) == truth


def test_caches_loaded_while_another_client_creates_miss_no_object(db_factory: Callable[..., nbdb.Database]) -> None:
    """A cache lists, then watches from the list's revision: a revision read apart from the rows (after them,
    in another read) skipped every commit between the two, and the caches that loaded meanwhile never held
    those objects. Each object here is created once and never written again, so nothing later brings it."""
    writer, reader = db_factory(), db_factory()
    stop, made = threading.Event(), [0]

    def create() -> None:
        while not stop.is_set() and made[0] < 3000:
            writer.create(KitCounter(count=made[0]))
            made[0] += 1

    thread = threading.Thread(target=create, daemon=True)
    with ExitStack() as caches:
        loaded = []
        thread.start()
        try:
            for _ in range(6):
                cache = caches.enter_context(reader.cache(KitCounter, shared=False))
                assert cache.wait_synced(15)
                loaded.append(cache)
        finally:
            stop.set()
            thread.join(30)
        assert not thread.is_alive(), "the writer did not stop"
        truth = _state(writer, KitCounter)
        for number, cache in enumerate(loaded):
            assert eventually(partial(_holds, cache, truth), timeout=20), (
                f"cache {number} (loaded while {made[0]} objects were being created) misses "
                f"{len(set(truth) - set(_cache_state(cache, KitCounter)))} of them for good: a scan's revision "
                "must be the one its rows were read at"
            )


def test_a_cache_that_reached_a_transactions_revision_holds_all_of_it(db: nbdb.Database) -> None:
    """Once a cache says it reflects a commit's revision (``wait_for``), it holds every change of that commit.

    A stream that handed a commit over two polls, its revision already past the commit after the first,
    passed every cache test (they write one object at a time): the Database's shared watch took the
    first part as the whole commit and dropped the rest as already delivered, for good.
    """
    if db.capabilities.transactions is nbdb.Atomicity.NONE:
        pytest.skip("backend declares transactions=none")
    kept = db.create(KitParent(name="kept"))
    # The cache's stream waits after each poll that brought changes: what its first poll left out stays out.
    with paused_watches(db.backend) as flowing, db.cache(KitParent) as cache:
        assert cache.wait_synced(15)
        with db.transaction() as txn:
            made = [txn.create(KitParent(name=f"whole{i}")) for i in range(3)]
            txn.update(kept.replace(size=5))
        assert txn.revision is not None
        assert cache.wait_for(txn.revision, 15), "the cache never reached the transaction's revision"
        held = {p.id: p.size for p in cache.list(KitParent)}
        missing = [p.name for p in made if p.id not in held] + ["the update of kept"] * (held.get(kept.id) != 5)
        assert not missing, (
            f"torn: the cache reached the transaction's revision {cache.revision} without {missing} of it"
        )
        flowing.set()
        later = db.create(KitParent(name="later"))
        assert eventually(lambda: cache.get(KitParent, later.id) is not None)
        assert _cache_state(cache, KitParent) == _state(db, KitParent)


_LOAD_SEAMS = ("scan", "range_rows", "range_keys", "revision_now", "current_revision", "watch")
"""The public methods a cache's load goes through (those a backend has): a write lands before each call."""


class _Interleaved:
    """Writes of another client, one before each call a load makes to the reader's backend (``calls``).

    Each write touches an object no other write touches (a create, an update, a delete, in turn), so a
    write the cache missed stays missed: nothing later brings the object to its version.
    """

    def __init__(self, writer: nbdb.Database, seeded: list[KitCounter], limit: int) -> None:
        self.writer = writer
        self.untouched = list(seeded)
        self.limit = limit
        self.done: list[str] = []
        self.on = False
        self.lock = threading.Lock()

    def write(self) -> None:
        with self.lock:
            if not self.on or len(self.done) >= self.limit:
                return
            kind = ("create", "update", "delete")[len(self.done) % 3]
            if kind != "create" and not self.untouched:
                kind = "create"
            if kind == "create":
                made = self.writer.create(KitCounter(count=-1))
                self.done.append(f"create {made.id}")
            elif kind == "update":
                obj = self.untouched.pop()
                self.writer.update(obj.replace(count=obj.count + 1))
                self.done.append(f"update {obj.id}")
            else:
                obj = self.untouched.pop()
                self.writer.delete(obj)
                self.done.append(f"delete {obj.id}")

    def wrap(self, backend: object) -> list[str]:
        """Interleave with every load seam ``backend`` has (as instance attributes); the names wrapped."""
        wrapped = []
        for name in _LOAD_SEAMS:
            method = getattr(backend, name, None)
            if not callable(method):
                continue

            def seam(*args: object, __method: Callable[..., object] = method, __name: str = name) -> object:
                self.write()
                out = __method(*args)
                if __name in ("scan", "watch"):
                    self.write()  # between the scan and the watch; after the watch opened
                return out

            setattr(backend, name, seam)
            wrapped.append(name)
        return wrapped


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "own-stream"])
def test_a_cache_loaded_between_writes_ends_equal_to_the_store(
    db_factory: Callable[..., nbdb.Database], shared: bool
) -> None:
    """A write before each step of a cache's load (its scan, the reads it is made of, its watch's open) and
    between them: the cache ends equal to the store, and no change reaches its subscribers twice.

    The same rule as the test above, without relying on timing: on a store as fast as memory:// or a local
    SQLite file, another client's writes (in a thread) seldom land between a scan's rows and a revision read
    apart from them (that test caught such a backend in 2 runs of 5 on SQLite), and a cache that lost every
    such write passed.
    """
    writer, reader = db_factory(), db_factory()
    seeded = [writer.create(KitCounter(count=i)) for i in range(12)]
    writes = _Interleaved(writer, seeded, limit=24)
    wrapped = writes.wrap(reader.backend)
    events: list[ChangeEvent[Model]] = []
    try:
        writes.on = True
        with reader.cache(KitCounter, on_change=events.append, shared=shared) as cache:
            assert cache.wait_synced(30)
            writes.on = False
            assert writes.done, f"no write landed during the load (wrapped: {wrapped})"
            last = writer.create(KitCounter(count=-2))
            assert eventually(lambda: cache.get(KitCounter, last.id) is not None, timeout=20)
            truth = _state(writer, KitCounter)
            held = _cache_state(cache, KitCounter)
            wrong = [w for w in writes.done if held.get(uuid.UUID(w.split()[1])) != truth.get(uuid.UUID(w.split()[1]))]
            assert not wrong, (
                f"the cache loaded while {len(writes.done)} writes landed around its steps ({', '.join(wrapped)}) "
                f"missed {len(wrong)} of them for good, first: {wrong[:3]}: a scan's revision must be the one "
                "its rows were read at, and a watch must start from it"
            )
            assert held == truth
    finally:
        writes.on = False
        for name in wrapped:
            delattr(reader.backend, name)
    versions: dict[object, list[float]] = {}
    for event in events:  # a deletion counts as the last version there is
        versions.setdefault(event.id, []).append(float("inf") if event.new is None else event.object.version)
    again = {k: v for k, v in versions.items() if v != sorted(set(v))}
    assert not again, f"changes reached the cache's subscribers twice or out of order: {again}"


def test_cache_find_uses_indexes(db: nbdb.Database) -> None:
    p1, p2 = db.create(KitParent(name="one")), db.create(KitParent(name="two"))
    c1 = db.create(KitChild(parent=p1, name="a", value=1))
    c2 = db.create(KitChild(parent=p1, name="b", value=2))
    c3 = db.create(KitChild(parent=p2, name="a", value=1))
    group = db.create(KitGroup(members=[c1.id, c3.id]))
    with db.cache([KitParent, KitChild, KitGroup]) as cache:
        assert cache.wait_synced(15)
        assert {c.id for c in cache.find(KitChild, parent=p1.id)} == {c1.id, c2.id}
        assert {c.id for c in cache.find(KitChild, parent=p1)} == {c1.id, c2.id}
        assert {c.id for c in cache.find(KitChild, name="a")} == {c1.id, c3.id}
        assert {c.id for c in cache.find(KitChild, name="a", parent=p2.id)} == {c3.id}
        assert {c.id for c in cache.find(KitChild, value=2)} == {c2.id}
        assert [g.id for g in cache.find(KitGroup, members=c3.id)] == [group.id]
        assert cache.find(KitParent, name="nobody") == []
        moved = db.update(c2.replace(parent=p2.id))
        assert eventually(lambda: {c.id for c in cache.find(KitChild, parent=p2.id)} == {c3.id, moved.id})
        assert {c.id for c in cache.find(KitChild, parent=p1.id)} == {c1.id}
        with pytest.raises(nbdb.ValidationError):
            cache.find(KitChild, colour="red")


def test_subscribers_get_old_and_new_after_apply(db: nbdb.Database) -> None:
    events: list[ChangeEvent[Model]] = []
    with db.cache(KitParent) as cache:
        assert cache.wait_synced(15)

        def record(event: ChangeEvent[Model]) -> None:
            # The event is delivered after the cache applied it (the cache may have moved on since).
            assert cache.revision >= event.revision
            events.append(event)

        cache.subscribe(record)
        v1 = db.create(KitParent(name="a"))
        v2 = db.update(v1.replace(size=1))
        db.delete(v2)
        assert eventually(lambda: len(events) == 3)
    assert [(e.kind, e.old, e.new) for e in events] == [
        (EventKind.CREATED, None, v1),
        (EventKind.UPDATED, v1, v2),
        (EventKind.DELETED, v2, None),
    ]


def test_subscribe_with_replay_sees_existing_objects_once(db: nbdb.Database) -> None:
    existing = {db.create(KitParent(name=f"p{i}")).id for i in range(3)}
    seen: list[object] = []
    with db.cache(KitParent) as cache:
        assert cache.wait_synced(15)
        cache.subscribe(lambda e: seen.append(e.id), replay=True)
        extra = db.create(KitParent(name="later"))
        assert eventually(lambda: len(seen) == 4)
    assert sorted(map(str, seen)) == sorted(map(str, existing | {extra.id}))


def test_failing_subscriber_does_not_stop_the_cache(db: nbdb.Database) -> None:
    def broken(event: ChangeEvent[Model]) -> None:
        raise RuntimeError("subscriber bug")

    with db.cache(KitParent) as cache:
        assert cache.wait_synced(15)
        cache.subscribe(broken)
        a = db.create(KitParent(name="a"))
        b = db.create(KitParent(name="b"))
        assert eventually(lambda: cache.get(KitParent, b.id) is not None)
        assert cache.get(KitParent, a.id) is not None


def test_topic_filtered_cache_holds_only_its_topics(db: nbdb.Database) -> None:
    db.create(KitParent(name="t2", topic="t2"))
    mine = db.create(KitParent(name="t1", topic="t1"))
    with db.cache(KitParent, topics=["t1"]) as cache:
        assert cache.wait_synced(15)
        assert [p.id for p in cache.list(KitParent)] == [mine.id]
        db.create(KitParent(name="t2b", topic="t2"))
        later = db.create(KitParent(name="t1b", topic="t1"))
        assert eventually(lambda: cache.get(KitParent, later.id) is not None)
        assert {p.topic for p in cache.list(KitParent)} == {"t1"}


def test_lost_history_relists_and_emits_exactly_the_difference(db: nbdb.Database) -> None:
    keep = [db.create(KitParent(name=f"keep{i}")) for i in range(5)]
    doomed = db.create(KitParent(name="doomed"))
    changed = db.create(KitParent(name="changed"))
    events: list[ChangeEvent[Model]] = []
    with held_watches(db.backend) as flowing, db.cache(KitParent) as cache:
        # The cache loads, then its watch is held back while the store moves on
        # and forgets its history: it must re-list and emit only the difference.
        assert cache.wait_synced(15)
        cache.subscribe(events.append)
        born = db.create(KitParent(name="born"))
        db.delete(doomed)
        current = changed
        for i in range(3):
            current = db.update(current.replace(size=i + 1))
        try:
            db.backend.compact_history()
        except nbdb.UnsupportedError as exc:
            pytest.skip(str(exc))
        flowing.set()
        assert eventually(lambda: _cache_state(cache, KitParent) == _state(db, KitParent), timeout=20)
        assert eventually(lambda: len({e.id for e in events}) >= 3)
    touched = {born.id, doomed.id, changed.id}
    assert {e.id for e in events} <= touched, "no event for objects that did not change"
    assert not any(e.id in {k.id for k in keep} for e in events)
    tombstones = [e for e in events if e.kind is EventKind.DELETED]
    assert [e.id for e in tombstones] == [doomed.id]
    assert tombstones[0].old is not None and tombstones[0].old.model_dump()["name"] == "doomed"
    assert cache.relists >= 1
    synthetic = [e for e in events if e.synthetic]
    assert sorted(str(e.id) for e in synthetic) == sorted(str(i) for i in (born.id, doomed.id, changed.id))
    assert next(e for e in synthetic if e.id == changed.id).new == current


def test_wait_synced_times_out_only_when_not_synced(db: nbdb.Database) -> None:
    with db.cache(KitParent) as cache:
        assert cache.wait_synced(15) is True
        assert cache.revision >= 0


def test_cache_of_every_model(db: nbdb.Database) -> None:
    parent = db.create(KitParent(name="p"))
    child = db.create(KitChild(parent=parent, name="c"))
    with db.cache() as cache:
        assert cache.wait_synced(15)
        assert cache.get(KitParent, parent.id) == parent
        assert cache.get(KitChild, child.id) == child
