"""Transactions: all or nothing, as the backend's capability declares."""

from __future__ import annotations

import pytest

import nbdb
from nbdb.capabilities import Atomicity
from nbdb.conformance.kit import KitChild, KitGroup, KitNote, KitParent

pytestmark = [pytest.mark.nbdb_kit, pytest.mark.timeout(60)]


def _needs(capabilities: nbdb.Capabilities, *levels: Atomicity) -> None:
    if capabilities.transactions not in levels:
        pytest.skip(f"backend declares transactions={capabilities.transactions}")


def test_transaction_commits_everything(db: nbdb.Database, capabilities: nbdb.Capabilities) -> None:
    _needs(capabilities, Atomicity.ATOMIC, Atomicity.SINGLE_PARTITION)
    existing = db.create(KitParent(name="old", topic="t1"))
    with db.transaction() as txn:
        a = txn.create(KitParent(name="a", topic="t1"))
        txn.update(existing.replace(size=9))
    assert txn.revision is not None
    assert [r.version if r else None for r in txn.results] == [1, 2]
    assert db.get(KitParent, a.id).name == "a"
    assert db.get(KitParent, existing.id).size == 9


def test_failed_transaction_writes_nothing(db: nbdb.Database, capabilities: nbdb.Capabilities) -> None:
    _needs(capabilities, Atomicity.ATOMIC, Atomicity.SINGLE_PARTITION)
    stale = db.create(KitParent(name="x", topic="t1"))
    db.update(stale.replace(size=1))
    fresh = KitParent(name="fresh", topic="t1")
    with pytest.raises(nbdb.ConflictError):
        with db.transaction() as txn:
            txn.create(fresh)
            txn.update(stale.replace(size=2))
    with pytest.raises(nbdb.NotFoundError):
        db.get(KitParent, fresh.id)
    assert db.get(KitParent, stale.id).size == 1


def test_exception_in_block_discards_the_transaction(db: nbdb.Database, capabilities: nbdb.Capabilities) -> None:
    _needs(capabilities, Atomicity.ATOMIC, Atomicity.SINGLE_PARTITION)
    obj = KitParent(name="never", topic="t1")
    with pytest.raises(RuntimeError):
        with db.transaction() as txn:
            txn.create(obj)
            raise RuntimeError("caller changed its mind")
    with pytest.raises(nbdb.NotFoundError):
        db.get(KitParent, obj.id)


def test_transaction_across_partitions(db: nbdb.Database, capabilities: nbdb.Capabilities) -> None:
    a, b = KitParent(name="a", topic="ta"), KitParent(name="b", topic="tb")
    if capabilities.transactions is Atomicity.NONE:
        with pytest.raises(nbdb.UnsupportedError):
            db.transaction()
        return
    if capabilities.transactions is Atomicity.SINGLE_PARTITION:
        with pytest.raises(nbdb.UnsupportedError):
            with db.transaction() as txn:
                txn.create(a)
                txn.create(b)
        assert list(db.list(KitParent)) == []
        return
    with db.transaction() as txn:
        txn.create(a)
        txn.create(b)
    assert {p.name for p in db.list(KitParent)} == {"a", "b"}


def test_same_object_twice_is_rejected(db: nbdb.Database, capabilities: nbdb.Capabilities) -> None:
    _needs(capabilities, Atomicity.ATOMIC, Atomicity.SINGLE_PARTITION)
    obj = db.create(KitParent(name="x"))
    with pytest.raises(nbdb.ValidationError):
        with db.transaction() as txn:
            txn.update(obj.replace(size=1))
            txn.delete(obj)
    assert db.get(KitParent, obj.id).version == 1


def test_a_mutate_applies_to_the_object_created_before_it_in_the_same_transaction(
    db: nbdb.Database, capabilities: nbdb.Capabilities
) -> None:
    """A create then a mutate of it: the object is stored with the members (the mutate's rebase read the store,
    where the object was not yet, and the pair was refused as one object appearing twice)."""
    _needs(capabilities, Atomicity.ATOMIC, Atomicity.SINGLE_PARTITION)
    parent = db.create(KitParent(name="p"))
    a, b = db.create(KitChild(parent=parent, name="a")), db.create(KitChild(parent=parent, name="b"))
    for may_exist in (False, True):
        with db.transaction() as txn:
            group = txn.create(KitGroup(members=[a.id]), may_exist=may_exist)
            txn.mutate(group, add={"members": [b]})
            txn.mutate((KitGroup, group.id), remove={"members": [a]})
        stored = db.get(KitGroup, group.id)
        assert stored.members == [b.id] and stored.version == 1
        assert txn.results == [stored, stored, stored]
    with pytest.raises(nbdb.ValidationError, match="before this transaction creates it"):
        with db.transaction() as txn:
            later = KitGroup()
            txn.mutate(later, add={"members": [a]})
            txn.create(later)
    assert len(list(db.list(KitGroup))) == 2


def test_a_mutate_after_a_may_exist_create_applies_to_the_object_it_takes(
    db: nbdb.Database, capabilities: nbdb.Capabilities
) -> None:
    """``create(obj, may_exist=True)`` of a stored object, then ``mutate``: the stored object gets the members.

    Several mutates apply in turn, in one write (each was a step of its own, and the commit was refused as
    the object appearing twice: an "ensure it, then add members" passed once, when the object was new).
    """
    _needs(capabilities, Atomicity.ATOMIC, Atomicity.SINGLE_PARTITION)
    parent = db.create(KitParent(name="p"))
    a, b, c = (db.create(KitChild(parent=parent, name=name)) for name in "abc")
    existing = db.create(KitGroup(members=[a.id]))
    with db.transaction() as txn:
        group = txn.create(KitGroup(id=existing.id), may_exist=True)
        txn.mutate(group, add={"members": [b]})
        note = txn.create(KitNote(about=parent.id))
    stored = db.get(KitGroup, existing.id)
    assert stored.members == [a.id, b.id] and stored.version == 2
    assert txn.results[0] == existing and txn.results[1] == stored
    assert db.get(KitNote, note.id) == txn.results[2]
    with db.transaction() as txn:
        group = txn.create(KitGroup(id=existing.id), may_exist=True)
        txn.mutate(group, add={"members": [c]})
        txn.mutate((KitGroup, group.id), remove={"members": [a, c]})  # c, added before, goes
        txn.create(KitNote(about=parent.id))
        txn.mutate(group, add={"members": [a]})  # a, removed before, comes back (last)
    again = db.get(KitGroup, existing.id)
    assert again.members == [b.id, a.id] and again.version == 3
    assert txn.results[0] == stored and txn.results[1:3] == [again, again] and txn.results[4] == again


def test_empty_transaction_is_a_no_op(db: nbdb.Database, capabilities: nbdb.Capabilities) -> None:
    _needs(capabilities, Atomicity.ATOMIC, Atomicity.SINGLE_PARTITION)
    with db.transaction() as txn:
        pass
    assert txn.results == []
    assert list(db.list(KitParent)) == []
