"""The controller runtime on a real backend: read-your-writes, handlers that cannot hurt the cache, work queues."""

from __future__ import annotations

import threading
from collections.abc import Callable
from uuid import UUID

import pytest

import nbdb
from nbdb.capabilities import Atomicity
from nbdb.conformance.kit import KitChild, KitParent, eventually
from nbdb.events import ChangeEvent, EventKind, Key
from nbdb.models import Model

pytestmark = [pytest.mark.nbdb_kit, pytest.mark.timeout(120)]

# Generous: a loaded machine, and etcd's progress notifications for commits a cache does not follow.
_WAIT = 20.0


def test_writes_tell_the_revision_they_committed_at(db: nbdb.Database) -> None:
    created = db.create(KitParent(name="a"))
    updated = db.update(created.replace(size=1))
    assert isinstance(created.nbdb_revision, nbdb.Revision)
    assert created.nbdb_revision < updated.nbdb_revision  # type: ignore[operator]
    read_back = db.get(KitParent, created.id).nbdb_revision
    assert read_back is None or read_back == updated.nbdb_revision  # an in-process store may keep the copy
    assert created.replace(size=2).nbdb_revision is None  # derived, not stored
    assert db.get(KitParent, created.id) == updated  # the revision is not part of the value
    if db.capabilities.transactions is Atomicity.NONE:  # transaction() raises UnsupportedError (test_transactions)
        deleted_at = db.delete(updated)
        assert isinstance(deleted_at, nbdb.Revision) and deleted_at > updated.nbdb_revision  # type: ignore[operator]
        return
    with db.transaction() as txn:
        txn.create(KitParent(name="b"))
        txn.update(updated.replace(size=2))
    assert isinstance(txn.revision, nbdb.Revision) and txn.revision > updated.nbdb_revision  # type: ignore[operator]
    assert {r.nbdb_revision for r in txn.results if r is not None} == {txn.revision}
    deleted_at = db.delete(txn.results[1])  # type: ignore[arg-type]
    assert isinstance(deleted_at, nbdb.Revision) and deleted_at > txn.revision


def test_read_your_writes_through_the_writers_cache(db: nbdb.Database) -> None:
    with db.cache([KitParent, KitChild]) as cache:
        assert cache.wait_synced(_WAIT)
        for i in range(5):
            parent = db.create(KitParent(name=f"p{i}"))
            assert cache.wait_for(parent, _WAIT)
            assert cache.get(KitParent, parent.id) == parent  # right after the wait, no polling
            parent = db.update(parent.replace(size=i))
            assert cache.wait_for(parent, _WAIT)
            assert cache.get(KitParent, parent.id) == parent
            child = db.create(KitChild(parent=parent, name="c"))
            assert cache.wait_for(child.nbdb_revision, _WAIT)
            assert cache.find(KitChild, parent=parent.id) == [child]
            assert cache.wait_for(db.delete(child), _WAIT)
            assert cache.get(KitChild, child.id) is None
            assert cache.wait_for(child, _WAIT), "a deleted object's wait ends once the deletion is applied"


def test_read_your_writes_through_another_connection(db_factory: Callable[..., nbdb.Database]) -> None:
    writer, reader = db_factory(), db_factory()
    with reader.cache(KitParent) as cache:
        assert cache.wait_synced(_WAIT)
        obj = writer.create(KitParent(name="x"))
        assert cache.wait_for(obj, _WAIT)
        assert cache.get(KitParent, obj.id) == obj
        obj = writer.update(obj.replace(size=7))
        assert cache.wait_for(obj, _WAIT)
        assert cache.get(KitParent, obj.id) == obj
        revision = writer.delete(obj)
        if writer.backend.revision_scope == reader.backend.revision_scope:
            assert cache.wait_for(revision, _WAIT)
            assert cache.get(KitParent, obj.id) is None
        else:
            # Revisions of one connection mean nothing to another: refused, not guessed.
            with pytest.raises(nbdb.UnsupportedError):
                cache.wait_for(revision, 1)
            assert cache.wait_for(obj, _WAIT)  # the object form still works, by version and deletion
            assert eventually(lambda: cache.get(KitParent, obj.id) is None)


def test_wait_for_a_revision_the_cache_does_not_follow(db: nbdb.Database) -> None:
    with db.cache(KitChild) as cache:
        assert cache.wait_synced(_WAIT)
        other = db.create(KitParent(name="elsewhere"))  # a model this cache does not follow
        assert cache.wait_for(other.nbdb_revision, _WAIT)
        assert cache.revision >= other.nbdb_revision  # type: ignore[operator]


def test_wait_for_times_out_and_refuses_what_never_comes(db: nbdb.Database) -> None:
    with db.cache(KitParent, topics=["mine"]) as cache:
        assert cache.wait_synced(_WAIT)
        assert cache.wait_for(db.backend.current_revision() + 10**9, 0.2) is False
        with pytest.raises(nbdb.ValidationError):
            cache.wait_for(db.create(KitParent(name="theirs", topic="other")), 1)
        with pytest.raises(nbdb.ValidationError):
            cache.wait_for(KitParent(name="never stored", topic="mine"), 1)
        with pytest.raises(nbdb.ValidationError):
            cache.wait_for(KitChild(parent=UUID(int=1), name="not followed", version=1))
        with pytest.raises(nbdb.ValidationError):
            cache.wait_for(-1)


def test_wait_for_a_copy_read_back_after_its_deletion(db: nbdb.Database) -> None:
    if db.backend.revision_scope is not None or not db.capabilities.linearizable_reads:
        pytest.skip("needs shared revisions and linearizable reads to tell a deletion the cache never held")
    obj = db.create(KitParent(name="short-lived"))
    read_back = db.get(KitParent, obj.id)  # carries no revision
    db.delete(read_back)
    with db.cache(KitParent) as cache:
        # The cache never holds it and never sees it deleted: only the store's
        # current revision, read when the wait starts, can settle the wait.
        assert cache.wait_for(read_back, _WAIT)
        assert cache.get(KitParent, obj.id) is None


def test_a_blocked_handler_blocks_neither_readers_nor_other_handlers(db: nbdb.Database) -> None:
    gate = threading.Event()
    slow_seen: list[ChangeEvent[Model]] = []
    fast_seen: list[ChangeEvent[Model]] = []

    def blocked(event: ChangeEvent[Model]) -> None:
        gate.wait(60)
        slow_seen.append(event)

    with db.cache(KitParent) as cache:
        assert cache.wait_synced(_WAIT)
        slow = cache.subscribe(blocked)
        cache.subscribe(fast_seen.append)
        try:
            written = [db.create(KitParent(name=f"n{i}")) for i in range(10)]
            assert cache.wait_for(written[-1], _WAIT), "the cache applies while a handler is blocked"
            assert all(cache.get(KitParent, w.id) == w for w in written)
            assert eventually(lambda: len(fast_seen) == 10, timeout=_WAIT), "other handlers go on"
            assert slow.pending >= 9
        finally:
            gate.set()
        assert eventually(lambda: len(slow_seen) == 10, timeout=_WAIT)
    assert [e.id for e in slow_seen] == [w.id for w in written]  # in order, each once
    assert [e.id for e in fast_seen] == [w.id for w in written]


def test_subscription_filters_replays_and_stops(db: nbdb.Database) -> None:
    existing = db.create(KitParent(name="existing", size=5))
    with db.cache([KitParent, KitChild]) as cache:
        assert cache.wait_synced(_WAIT)
        big: list[ChangeEvent[Model]] = []
        children: list[ChangeEvent[Model]] = []
        sub = cache.subscribe(big.append, KitParent, predicate=lambda e: e.object.size >= 5, replay=True)  # type: ignore[attr-defined]
        kids = cache.subscribe(children.append, models=[KitChild])
        assert sub.wait_replayed(_WAIT) and kids.wait_replayed(_WAIT)
        assert [(e.kind, e.id, e.synthetic) for e in big] == [(EventKind.CREATED, existing.id, True)]
        small = db.create(KitParent(name="small", size=1))
        large = db.create(KitParent(name="large", size=9))
        child = db.create(KitChild(parent=small, name="c"))
        assert eventually(lambda: len(children) == 1, timeout=_WAIT)
        assert eventually(lambda: len(big) == 2, timeout=_WAIT)
        assert big[1].id == large.id and children[0].id == child.id
        cache.unsubscribe(sub)
        assert sub.closed
        last = db.create(KitParent(name="after", size=50))
        assert cache.wait_for(last, _WAIT)
        db.create(KitChild(parent=small, name="c2"))
        assert eventually(lambda: len(children) == 2, timeout=_WAIT)
        assert len(big) == 2, "no event after unsubscribe"


def test_controller_converges_on_the_store(db: nbdb.Database) -> None:
    writer = reader = db
    seeded = [writer.create(KitParent(name=f"s{i}")) for i in range(3)]
    lock = threading.Lock()
    state: dict[UUID, int] = {}  # what the controller derived: id -> size
    deleted: dict[UUID, str] = {}
    busy: set[Key] = set()
    overlaps: list[Key] = []

    with reader.cache(KitParent) as cache:
        assert cache.wait_synced(_WAIT)

        def reconcile(key: Key, obj: Model | None) -> None:
            with lock:
                if key in busy:
                    overlaps.append(key)
                busy.add(key)
            try:
                live = cache.get(*key)
                with lock:
                    if live is None:
                        state.pop(key[1], None)
                        if obj is not None:
                            deleted[key[1]] = obj.name  # type: ignore[attr-defined]
                    else:
                        state[key[1]] = live.size  # type: ignore[attr-defined]
            finally:
                with lock:
                    busy.discard(key)

        with nbdb.run_controller(cache, reconcile, KitParent, workers=3) as controller:
            objs = seeded + [writer.create(KitParent(name=f"n{i}")) for i in range(10)]
            for round_ in range(3):
                objs = [writer.update(o.replace(size=o.size + round_ + 1)) for o in objs]
            doomed = objs[:4]
            last = max(r for o in doomed if (r := writer.delete(o)) is not None)
            assert cache.wait_for(last, _WAIT)
            assert controller.wait_idle(_WAIT)
            assert state == {o.id: o.size for o in objs[4:]}
            assert deleted == {o.id: o.name for o in doomed}, "deletions reach the worker with the last object"
            assert overlaps == [], "a key is never processed by two workers at once"
