"""Transactions: all or nothing, as the backend's capability declares."""

from __future__ import annotations

import pytest

import nbdb
from nbdb.capabilities import Atomicity
from nbdb.conformance.kit import KitChild, KitGroup, KitParent

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


def test_mutating_an_object_created_in_the_same_transaction_is_rejected(
    db: nbdb.Database, capabilities: nbdb.Capabilities
) -> None:
    """One step per object: a create and a mutate of it are a ValidationError, not "does not exist"."""
    _needs(capabilities, Atomicity.ATOMIC, Atomicity.SINGLE_PARTITION)
    child = db.create(KitChild(parent=db.create(KitParent(name="p")), name="c"))
    with pytest.raises(nbdb.ValidationError, match="appears twice"):
        with db.transaction() as txn:
            group = txn.create(KitGroup())
            txn.mutate(group, add={"members": [child]})
    assert list(db.list(KitGroup)) == []


def test_empty_transaction_is_a_no_op(db: nbdb.Database, capabilities: nbdb.Capabilities) -> None:
    _needs(capabilities, Atomicity.ATOMIC, Atomicity.SINGLE_PARTITION)
    with db.transaction() as txn:
        pass
    assert txn.results == []
    assert list(db.list(KitParent)) == []
