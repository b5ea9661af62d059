"""Compare-and-swap across a delete and a re-create of one id (the ABA problem).

An id deleted and created again (an id a controller derives from its sources, ``may_exist``, ``nbdb copy``)
starts at version 1 again. A copy of the deleted object is stale all the same: on a store that declares
``cas_across_recreate`` its ``update`` and ``delete`` raise ConflictError, even once the new object has
reached the copy's version, and the new object is left as it is.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.conformance.kit import KitChild, KitParent, KitWeakGroup, eventually

pytestmark = [pytest.mark.nbdb_kit, pytest.mark.timeout(90)]


@pytest.fixture
def recreating(db: nbdb.Database) -> nbdb.Database:
    if not db.capabilities.cas_across_recreate:
        pytest.skip(f"{type(db.backend).__name__} declares cas_across_recreate=False (version-only compare)")
    return db


def _need_transactions(db: nbdb.Database) -> None:
    if db.capabilities.transactions is nbdb.Atomicity.NONE:
        pytest.skip("backend declares transactions=none")


def _recreated(db: nbdb.Database) -> tuple[KitParent, KitParent, KitParent]:
    """(a write's copy of the first object, a read copy of it, the object created again under its id)."""
    first = db.create(KitParent(name="first"))
    read = db.get(KitParent, first.id)
    db.delete(read)
    again = db.create(KitParent(id=first.id, name="again"))
    assert (first.version, read.version, again.version) == (1, 1, 1)  # versions do not tell them apart
    return first, read, again


def _untouched(db: nbdb.Database, again: KitParent) -> None:
    assert db.get(KitParent, again.id) == again


def test_stale_copy_of_deleted_object_cannot_update_or_delete_the_new_one(recreating: nbdb.Database) -> None:
    db = recreating
    first, read, again = _recreated(db)
    for stale in (first, read):
        with pytest.raises(nbdb.ConflictError):
            db.update(stale.replace(size=7))
        _untouched(db, again)
        with pytest.raises(nbdb.ConflictError):
            db.delete(stale)
        _untouched(db, again)
    # The new object's own copies still write, and a copy built by hand compares its version only.
    moved = db.update(db.get(KitParent, again.id).replace(size=1))
    assert moved.version == 2
    assert db.update(KitParent(id=again.id, name="by hand", version=2)).version == 3


def test_stale_copy_at_the_new_objects_later_version_is_refused(recreating: nbdb.Database) -> None:
    db = recreating
    first = db.create(KitParent(name="first"))
    second = db.update(first.replace(size=1))  # version 2 of the first object
    db.delete(second)
    again = db.update(db.create(KitParent(id=first.id, name="again")).replace(size=2))  # version 2 again
    with pytest.raises(nbdb.ConflictError):
        db.update(second.replace(size=9))
    with pytest.raises(nbdb.ConflictError):
        db.delete(second)
    _untouched(db, again)


def test_stale_copy_of_deleted_object_is_refused_in_a_transaction(recreating: nbdb.Database) -> None:
    _need_transactions(recreating)
    db = recreating
    first, read, again = _recreated(db)
    other = db.create(KitParent(name="other"))
    for stale in (first, read):
        with pytest.raises(nbdb.ConflictError):
            with db.transaction() as txn:
                txn.update(other.replace(size=1))
                txn.update(stale.replace(size=7))
        with pytest.raises(nbdb.ConflictError):
            with db.transaction() as txn:
                txn.update(other.replace(size=1))
                txn.delete(stale)
        _untouched(db, again)
        assert db.get(KitParent, other.id) == other  # all or nothing
    # A transaction's results are copies that write, as a write's are.
    with db.transaction() as txn:
        txn.update(db.get(KitParent, again.id).replace(size=3))
    (result,) = txn.results
    assert result is not None
    assert db.update(result.replace(size=4)).version == 3


def _weak_group(db: nbdb.Database) -> tuple[KitChild, KitWeakGroup]:
    """A child (of a new parent) and a group holding it as a weak member."""
    parent = db.create(KitParent(name="p"))
    child = db.create(KitChild(parent=parent.id, name="member"))
    return child, db.create(KitWeakGroup(members=[child.id]))


def test_stale_weak_referrer_is_refused_when_its_transaction_drops_a_member(recreating: nbdb.Database) -> None:
    # The transaction deletes a member of the stale copy: its update is planned again without that
    # member, and that plan still names the write the caller's copy came from.
    db = recreating
    _need_transactions(db)
    gone, first = _weak_group(db)
    db.delete(first)
    again = db.create(KitWeakGroup(id=first.id, members=[gone.id]))
    with pytest.raises(nbdb.ConflictError):
        with db.transaction() as txn:
            txn.delete(gone)
            txn.update(first.replace(pinned=gone.id))
    assert db.get(KitWeakGroup, first.id) == again
    assert db.get(KitChild, gone.id) == gone


def test_copy_the_store_rewrote_itself_is_stale_once_its_object_is_created_again(recreating: nbdb.Database) -> None:
    # Deleting a member makes the store drop it from a weak referrer: a copy of the referrer read then
    # was written by no caller of this process's Database, and still names that write.
    db = recreating
    member, group = _weak_group(db)
    db.delete(member)
    stale = db.get(KitWeakGroup, group.id)
    assert (stale.version, stale.members) == (2, [])
    db.delete(stale)
    again = db.create(KitWeakGroup(id=group.id, members=[]))
    again = db.update(again.replace(pinned=None))
    assert again.version == stale.version  # the versions do not tell them apart
    for write in (lambda: db.update(stale.replace(members=[])), lambda: db.delete(stale)):
        with pytest.raises(nbdb.ConflictError):
            write()
    assert db.get(KitWeakGroup, group.id) == again


def test_cached_copy_of_deleted_object_cannot_write_the_new_one(recreating: nbdb.Database) -> None:
    db = recreating
    with db.cache(KitParent) as cache:
        assert cache.wait_synced(15)
        first = db.create(KitParent(name="first"))
        assert eventually(lambda: cache.get(KitParent, first.id) is not None)
        cached = cache.get(KitParent, first.id)
        assert cached is not None
        db.delete(db.get(KitParent, first.id))
        again = db.create(KitParent(id=first.id, name="again"))
        assert eventually(lambda: (got := cache.get(KitParent, first.id)) is not None and got.name == "again")
        with pytest.raises(nbdb.ConflictError):
            db.update(cached.replace(size=7))
        with pytest.raises(nbdb.ConflictError):
            db.delete(cached)
        _untouched(db, again)
        # The cache's copy of the new object writes (a controller updates the copy its cache handed it).
        fresh = cache.get(KitParent, first.id)
        assert fresh is not None
        assert db.update(fresh.replace(size=1)).version == 2


def test_listed_and_watched_copies_of_deleted_object_are_stale(recreating: nbdb.Database) -> None:
    db = recreating
    start = db.list(KitParent).revision
    first = db.create(KitParent(name="first"))
    listed = next(o for o in db.list(KitParent) if o.id == first.id)
    events: list[Any] = []

    def polled() -> bool:
        events.extend(watch.poll(0.2))
        return any(e.id == first.id for e in events)

    with db.watch(KitParent, since=start) as watch:
        assert eventually(polled)
    watched = next(e.new for e in events if e.new is not None and e.id == first.id)
    db.delete(listed)
    again = db.create(KitParent(id=first.id, name="again"))
    for stale in (listed, watched):
        with pytest.raises(nbdb.ConflictError):
            db.update(stale.replace(size=7))
        with pytest.raises(nbdb.ConflictError):
            db.delete(stale)
    _untouched(db, again)


def _update(db: nbdb.Database, obj: KitParent) -> KitParent:
    return db.update(obj.replace(size=obj.size + 1))


# Two holders create, delete, re-read and update one id in any order: a write of a copy
# succeeds exactly when it is of the object stored now, at its version (a model of the
# store says which), and a copy of an earlier creation never writes.
_STEPS = st.lists(
    st.tuples(st.sampled_from(["create", "delete", "update", "read"]), st.sampled_from([0, 1])), min_size=1, max_size=14
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=_STEPS)
@example(steps=[("create", 0), ("read", 1), ("delete", 0), ("create", 0), ("update", 1), ("delete", 1)])
def test_no_copy_of_an_earlier_creation_ever_writes(recreating: nbdb.Database, steps: list[tuple[str, int]]) -> None:
    db = recreating
    uid = uuid.uuid4()
    # The model: which creation of the id is stored (None: absent) and at which version; each holder's
    # copy as (its creation, its version, the copy itself).
    stored: list[int | None] = [None, 0]
    creations = 0
    held: list[tuple[int, int, KitParent] | None] = [None, None]

    def expect(write: Callable[[], object], holder: int, after: int | None) -> None:
        copy = held[holder]
        assert copy is not None
        current = stored[0] is not None and (copy[0], copy[1]) == (stored[0], stored[1])
        if current:
            got = write()
            if after is None:
                stored[0:2], held[holder] = [None, 0], None
            else:
                assert isinstance(got, KitParent) and got.version == after
                stored[1] = after
                held[holder] = (copy[0], after, got)
            return
        with pytest.raises((nbdb.ConflictError, nbdb.NotFoundError)):
            write()

    for action, holder in steps:
        copy = held[holder]
        if action == "create" and stored[0] is None:
            creations += 1
            made = db.create(KitParent(id=uid, name=f"c{creations}"))
            stored[0:2] = [creations, 1]
            held[holder] = (creations, 1, made)
        elif action == "read" and stored[0] is not None:
            got = db.get(KitParent, uid)
            assert got.name == f"c{stored[0]}" and got.version == stored[1]
            held[holder] = (stored[0], got.version, got)
        elif action == "update" and copy is not None:
            obj = copy[2]
            expect(partial(_update, db, obj), holder, copy[1] + 1)
        elif action == "delete" and copy is not None:
            obj = copy[2]
            expect(partial(db.delete, obj), holder, None)
        if stored[0] is None:
            with pytest.raises(nbdb.NotFoundError):
                db.get(KitParent, uid)
        else:
            got = db.get(KitParent, uid)
            assert (got.name, got.version) == (f"c{stored[0]}", stored[1])
    if stored[0] is not None:
        db.delete(KitParent, uid)


def _txn_update(db: nbdb.Database, obj: KitParent) -> None:
    with db.transaction() as txn:
        txn.update(obj)


def _txn_delete(db: nbdb.Database, obj: KitParent) -> None:
    with db.transaction() as txn:
        txn.delete(obj)


_WRITES: dict[str, Callable[[nbdb.Database, KitParent], Any]] = {
    "update": lambda db, obj: db.update(obj),
    "delete": lambda db, obj: db.delete(obj),
    "txn update": _txn_update,
    "txn delete": _txn_delete,
}


@pytest.mark.parametrize("write", sorted(_WRITES))
def test_copy_whose_version_was_changed_by_model_copy_is_compared_by_version(db: nbdb.Database, write: str) -> None:
    """A copy carries the revision that wrote it, stamped with the version it wrote: a copy whose version was
    changed since (pydantic's ``model_copy(update={"version": ...})``) is refused unless the version is the
    stored one, on every store (the revision compared in place of the version would let it through)."""
    if write.startswith("txn"):
        _need_transactions(db)
    obj = db.create(KitParent(name="versioned"))
    obj = db.update(obj.replace(size=1))  # version 2, committed at a revision of its own
    sources = {
        "written": obj,
        "read": db.get(KitParent, obj.id),
        "listed": next(o for o in db.list(KitParent) if o.id == obj.id),
    }
    for source, copy in sources.items():
        for version in (1, 3, 7):
            wrong = copy.model_copy(update={"version": version, "size": 5})
            with pytest.raises(nbdb.ConflictError):
                _WRITES[write](db, wrong)
            stored = db.get(KitParent, obj.id)
            assert (stored.version, stored.size) == (2, 1), (source, version)
    # The stored version again (a copy at it): compared, it writes, and says the version it stored.
    right = sources["read"].model_copy(update={"version": 1}).model_copy(update={"version": 2, "size": 9})
    if write.endswith("delete"):
        _WRITES[write](db, right)
        with pytest.raises(nbdb.NotFoundError):
            db.get(KitParent, obj.id)
    elif write == "update":
        assert db.update(right).version == db.get(KitParent, obj.id).version == 3
    else:
        with db.transaction() as txn:
            txn.update(right)
        assert [r.version for r in txn.results if r is not None] == [db.get(KitParent, obj.id).version] == [3]


@pytest.mark.parametrize("write", sorted(_WRITES))
def test_copy_whose_version_was_moved_in_place_is_compared_by_version(db: nbdb.Database, write: str) -> None:
    """A copy whose version was moved past the frozen model (in place, not with model_copy) carries the
    revision of the version it had: it is compared by version alone, so at the stored version it writes (the
    pair (revision of version 1, version 2) was refused as an object deleted and created again)."""
    if write.startswith("txn"):
        _need_transactions(db)
    for source in ("written", "read", "listed"):
        obj = db.create(KitParent(name=f"moved-{source}"))
        if source == "read":
            copy = db.get(KitParent, obj.id)
        elif source == "listed":
            copy = next(o for o in db.list(KitParent) if o.id == obj.id)
        else:
            copy = obj
        db.update(db.get(KitParent, obj.id).replace(size=1))  # version 2, another commit
        moved = copy.replace(size=5)
        object.__setattr__(moved, "version", 2)  # the caller says: against version 2
        _WRITES[write](db, moved)
        if write.endswith("delete"):
            with pytest.raises(nbdb.NotFoundError):
                db.get(KitParent, obj.id)
        else:
            stored = db.get(KitParent, obj.id)
            assert (stored.version, stored.size) == (3, 5), source


def test_stale_copy_whose_model_copy_sets_a_reference_is_refused(recreating: nbdb.Database) -> None:
    """``model_copy(update=)`` of a reference (a lineage field) keeps the revision the copy carries, as
    ``replace()`` does: a copy of a child deleted and created again since is refused, whatever its source."""
    db = recreating
    parents = [db.create(KitParent(name=f"p{i}")) for i in range(2)]
    first = db.create(KitChild(parent=parents[0].id, name="c"))
    copies = {
        "written": first,
        "read": db.get(KitChild, first.id),
        "listed": next(o for o in db.list(KitChild) if o.id == first.id),
    }
    db.delete(copies["read"])
    again = db.create(KitChild(id=first.id, parent=parents[0].id, name="again"))
    for source, stale in copies.items():
        changed = stale.model_copy(update={"parent": parents[1].id})
        with pytest.raises(nbdb.ConflictError):
            db.update(changed)
        with pytest.raises(nbdb.ConflictError):
            db.delete(changed)
        assert db.get(KitChild, first.id) == again, source
