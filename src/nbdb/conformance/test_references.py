"""Referential integrity: no dangling references, cascades, and races between them."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import nbdb
from nbdb.capabilities import Atomicity
from nbdb.conformance.kit import KitChild, KitGroup, KitNote, KitOwned, KitOwnedSet, KitParent, KitWeakGroup

pytestmark = [pytest.mark.nbdb_kit, pytest.mark.timeout(90)]


def test_create_with_missing_reference_raises(db: nbdb.Database) -> None:
    with pytest.raises(nbdb.ReferenceError):
        db.create(KitChild(parent=uuid.uuid4(), name="orphan"))
    assert list(db.list(KitChild)) == []


def test_delete_referenced_object_raises(db: nbdb.Database) -> None:
    parent = db.create(KitParent(name="p"))
    db.create(KitChild(parent=parent, name="c"))
    with pytest.raises(nbdb.ReferenceError):
        db.delete(parent)
    assert db.get(KitParent, parent.id)


def test_delete_after_children_are_gone(db: nbdb.Database) -> None:
    parent = db.create(KitParent(name="p"))
    child = db.create(KitChild(parent=parent, name="c"))
    db.delete(child)
    db.delete(parent)
    with pytest.raises(nbdb.NotFoundError):
        db.get(KitParent, parent.id)


def test_moving_a_reference_releases_the_old_target(db: nbdb.Database) -> None:
    p1 = db.create(KitParent(name="p1"))
    p2 = db.create(KitParent(name="p2"))
    child = db.create(KitChild(parent=p1, name="c"))
    db.update(child.replace(parent=p2.id))
    db.delete(p1)
    with pytest.raises(nbdb.ReferenceError):
        db.delete(p2)


def test_moving_a_reference_of_a_freshly_read_copy(db: nbdb.Database) -> None:
    p1 = db.create(KitParent(name="p1"))
    p2 = db.create(KitParent(name="p2"))
    child = db.create(KitChild(parent=p1, name="c"))
    fresh = db.get(KitChild, child.id)
    db.update(fresh.replace(parent=p2.id))
    db.delete(p1)
    with pytest.raises(nbdb.ReferenceError):
        db.delete(p2)


def test_moving_a_reference_with_model_copy_and_a_chain_of_replace(db: nbdb.Database) -> None:
    """Copies derived without replace() (pydantic's model_copy) or through several replace() still move it."""
    p1, p2, p3 = (db.create(KitParent(name=f"p{i}")) for i in (1, 2, 3))
    child = db.create(KitChild(parent=p1, name="c"))
    moved = db.update(child.model_copy(update={"parent": p2.id}))
    db.delete(p1)
    again = db.update(moved.replace(parent=p3.id).replace(name="c2").replace(parent=p3.id))
    db.delete(p2)
    with pytest.raises(nbdb.ReferenceError):
        db.delete(p3)
    db.delete(again)
    db.delete(p3)


def test_update_to_missing_reference_raises(db: nbdb.Database) -> None:
    parent = db.create(KitParent(name="p"))
    child = db.create(KitChild(parent=parent, name="c"))
    with pytest.raises(nbdb.ReferenceError):
        db.update(child.replace(parent=uuid.uuid4()))
    assert db.get(KitChild, child.id).parent == parent.id


def test_list_references_are_checked(db: nbdb.Database) -> None:
    parent = db.create(KitParent(name="p"))
    c1 = db.create(KitChild(parent=parent, name="c1"))
    with pytest.raises(nbdb.ReferenceError):
        db.create(KitGroup(members=[c1.id, uuid.uuid4()]))
    group = db.create(KitGroup(members=[c1.id]))
    with pytest.raises(nbdb.ReferenceError):
        db.delete(c1)
    assert db.get(KitGroup, group.id).members == [c1.id]


def test_a_copy_s_list_of_references_cannot_change_in_place(db: nbdb.Database) -> None:
    """A copy from a write, a read, a list, replace() or model_copy() refuses an in-place change of its references.

    Its stored references are derived from that list: appended to in place and
    then written, the new target would never be recorded as referenced, and a
    delete of it would leave a dangling reference. The change is refused with
    ValidationError; a changed copy made with replace() records it.
    """
    parent = db.create(KitParent(name="p"))
    c1, c2 = (db.create(KitChild(parent=parent, name=f"c{i}")) for i in (1, 2))
    group = db.create(KitGroup(members=[c1.id]))
    copies = {
        "create": group,
        "get": db.get(KitGroup, group.id),
        "list": next(g for g in db.list(KitGroup) if g.id == group.id),
        "replace": group.replace(),
        "model_copy": group.model_copy(),
        "model_copy(deep=True)": group.model_copy(deep=True),
    }
    for how, copy in copies.items():
        with pytest.raises(nbdb.ValidationError):
            copy.members.append(c2.id)
        with pytest.raises(nbdb.ValidationError):
            copy.members[0] = c2.id
        assert copy.members == [c1.id], how
    moved = db.update(group.replace(members=[c1.id, c2.id]))
    with pytest.raises(nbdb.ReferenceError):
        db.delete(c2)
    db.update(moved.replace(members=[c1.id]))
    db.delete(c2)


def test_cascade_deletes_required_and_clears_optional_and_list_refs(db: nbdb.Database) -> None:
    parent = db.create(KitParent(name="p"))
    c1 = db.create(KitChild(parent=parent, name="c1"))
    c2 = db.create(KitChild(parent=parent, name="c2"))
    other = db.create(KitChild(parent=db.create(KitParent(name="q")), name="other"))
    group = db.create(KitGroup(members=[c1.id, other.id]))
    note = db.create(KitNote(about=parent, text="hello"))
    db.delete(parent, cascade=True)
    for obj in (parent, c1, c2):
        with pytest.raises(nbdb.NotFoundError):
            db.get(type(obj), obj.id)
    assert db.get(KitGroup, group.id).members == [other.id]
    assert db.get(KitNote, note.id).about is None
    assert db.get(KitChild, other.id).name == "other"


def test_references_within_one_transaction(db: nbdb.Database, capabilities: nbdb.Capabilities) -> None:
    if capabilities.transactions is not Atomicity.ATOMIC:
        pytest.skip("backend declares no multi-partition transactions")
    parent = KitParent(name="p")
    child = KitChild(parent=parent, name="c")
    with db.transaction() as txn:
        txn.create(parent)
        txn.create(child)
    assert db.get(KitChild, child.id).parent == parent.id
    stored_parent = db.get(KitParent, parent.id)
    stored_child = db.get(KitChild, child.id)
    with db.transaction() as txn:
        txn.delete(stored_child)
        txn.delete(stored_parent)
    with pytest.raises(nbdb.NotFoundError):
        db.get(KitParent, parent.id)


def test_reference_to_object_deleted_in_same_transaction_is_refused(
    db: nbdb.Database, capabilities: nbdb.Capabilities
) -> None:
    if capabilities.transactions is not Atomicity.ATOMIC:
        pytest.skip("backend declares no multi-partition transactions")
    parent = db.create(KitParent(name="p"))
    with pytest.raises(nbdb.ReferenceError):
        with db.transaction() as txn:
            txn.delete(parent)
            txn.create(KitChild(parent=parent, name="c"))
    assert db.get(KitParent, parent.id)


def test_racing_parent_delete_and_child_create_never_dangle(db_factory: Callable[..., nbdb.Database]) -> None:
    """Delete a parent while another client adds a child: one of them must lose."""
    writer, deleter = db_factory(), db_factory()
    for round_ in range(15):
        parent = writer.create(KitParent(name=f"p{round_}"))
        barrier = threading.Barrier(2)
        outcome: dict[str, object] = {}

        def add_child(
            parent: KitParent = parent, barrier: threading.Barrier = barrier, outcome: dict[str, object] = outcome
        ) -> None:
            barrier.wait()
            try:
                writer.create(KitChild(parent=parent, name="c"))
                outcome["child"] = None
            except nbdb.NbdbError as exc:
                outcome["child"] = exc

        def remove_parent(
            parent: KitParent = parent, barrier: threading.Barrier = barrier, outcome: dict[str, object] = outcome
        ) -> None:
            barrier.wait()
            try:
                deleter.delete(parent)
                outcome["delete"] = None
            except nbdb.NbdbError as exc:
                outcome["delete"] = exc

        threads = [threading.Thread(target=add_child), threading.Thread(target=remove_parent)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        children = [c for c in writer.list(KitChild) if c.parent == parent.id]
        parent_exists = any(p.id == parent.id for p in writer.list(KitParent))
        # Never a child without its parent, and never both operations lost.
        assert not (children and not parent_exists), f"dangling child in round {round_}: {outcome}"
        assert outcome["child"] is None or outcome["delete"] is None, outcome
        for child in children:
            writer.delete(child)
        if parent_exists:
            writer.delete(KitParent, parent.id)


def _multi_op_commits(db: nbdb.Database) -> None:
    if db.capabilities.transactions is Atomicity.NONE:
        pytest.skip("backend declares transactions=none: a weak reference is dropped in the delete's own commit")


def _delete_watched(
    db: nbdb.Database, models: list[type[Any]], obj: Any, count: int
) -> tuple[nbdb.Revision | None, list[nbdb.ChangeEvent[Any]]]:
    """Delete ``obj`` under a watch of ``models``: the delete's revision and the first ``count`` events (15 s)."""
    with db.watch(models) as watch:
        revision = db.delete(obj)
        events: list[nbdb.ChangeEvent[Any]] = []
        deadline = time.monotonic() + 15
        while len(events) < count and time.monotonic() < deadline:
            events += watch.poll(0.2)
    return revision, events


def test_a_plain_delete_drops_its_target_from_weak_references(db: nbdb.Database) -> None:
    """Weak references (``Reference(..., weak=True)``, refType weak) lose a deleted target, as ovsdb-server has it.

    The referrer keeps its other members; a strong reference to the same target still refuses.
    """
    _multi_op_commits(db)
    parent = db.create(KitParent(name="p"))
    gone, kept = db.create(KitChild(parent=parent, name="gone")), db.create(KitChild(parent=parent, name="kept"))
    group = db.create(KitWeakGroup(members=[gone.id, kept.id], pinned=gone.id))
    db.delete(gone)
    with pytest.raises(nbdb.NotFoundError):
        db.get(KitChild, gone.id)
    after = db.get(KitWeakGroup, group.id)
    assert (after.members, after.pinned) == ([kept.id], None)
    strong = db.create(KitGroup(members=[kept.id]))
    with pytest.raises(nbdb.ReferenceError):
        db.delete(kept)
    assert db.get(KitWeakGroup, group.id).members == [kept.id], "a refused delete dropped a weak reference"
    assert db.get(KitGroup, strong.id).members == [kept.id]


def test_a_weak_reference_is_dropped_in_the_delete_s_commit(db: nbdb.Database) -> None:
    """A watch sees the referrer's update and the target's delete at one revision: no reader holds a dangling id."""
    _multi_op_commits(db)
    parent = db.create(KitParent(name="p"))
    child = db.create(KitChild(parent=parent, name="c"))
    group = db.create(KitWeakGroup(members=[child.id]))
    revision, events = _delete_watched(db, [KitWeakGroup, KitChild], child, 2)
    got = {(e.kind, e.model, e.id) for e in events}
    assert got == {(nbdb.EventKind.UPDATED, KitWeakGroup, group.id), (nbdb.EventKind.DELETED, KitChild, child.id)}, got
    assert len({e.revision for e in events}) == 1, f"torn: the weak drop and the delete came at {events}"
    assert revision is not None and events[0].revision == revision
    update = next(e for e in events if e.kind is nbdb.EventKind.UPDATED)
    assert update.new is not None and update.new.members == []


def test_a_transaction_s_delete_drops_its_target_from_weak_references(db: nbdb.Database) -> None:
    """``txn.delete`` of a weakly referenced target does what a plain delete does: the stored referrers lose it.

    Two targets of one referrer go in one commit (one update of the referrer, not two that conflict);
    a strong reference to a target still refuses the whole transaction, weak drops included.
    """
    _multi_op_commits(db)
    parent = db.create(KitParent(name="p"))
    a, b, kept = (db.create(KitChild(parent=parent, name=n)) for n in ("a", "b", "kept"))
    group = db.create(KitWeakGroup(members=[a.id, b.id, kept.id], pinned=a.id))
    other = db.create(KitWeakGroup(members=[b.id]))
    with db.transaction() as txn:
        txn.delete(a)
        txn.delete(KitChild, b.id)
    for gone in (a, b):
        with pytest.raises(nbdb.NotFoundError):
            db.get(KitChild, gone.id)
    after = db.get(KitWeakGroup, group.id)
    assert (after.members, after.pinned, after.version) == ([kept.id], None, group.version + 1)
    assert db.get(KitWeakGroup, other.id).members == []
    strong = db.create(KitGroup(members=[kept.id]))
    with pytest.raises(nbdb.ReferenceError):
        with db.transaction() as txn:
            txn.delete(kept)
    assert db.get(KitWeakGroup, group.id).members == [kept.id], "a refused transaction dropped a weak reference"
    assert db.get(KitGroup, strong.id).members == [kept.id]


def test_a_transaction_deleting_a_target_keeps_its_own_write_of_the_referrer(db: nbdb.Database) -> None:
    """The same transaction's update of a weak referrer is kept (its compare-and-swap too), without the target."""
    _multi_op_commits(db)
    parent = db.create(KitParent(name="p"))
    gone, kept = db.create(KitChild(parent=parent, name="gone")), db.create(KitChild(parent=parent, name="kept"))
    group = db.create(KitWeakGroup(members=[gone.id]))
    with db.transaction() as txn:
        txn.delete(gone)
        txn.update(group.replace(members=[gone.id, kept.id], pinned=kept.id))
    stored = db.get(KitWeakGroup, group.id)
    assert (stored.members, stored.pinned, stored.version) == ([kept.id], kept.id, group.version + 1)
    assert txn.results[1] == stored, "the transaction's result is not what it stored"
    # Its compare-and-swap still holds: a stale copy of the referrer fails the whole transaction.
    other = db.create(KitChild(parent=parent, name="other"))
    with pytest.raises(nbdb.ConflictError):
        with db.transaction() as txn:
            txn.delete(kept)
            txn.update(group.replace(members=[kept.id, other.id]))  # group is at version 1; 2 is stored
    assert db.get(KitChild, kept.id) and db.get(KitWeakGroup, group.id).members == [kept.id]


def test_a_new_weak_reference_to_a_target_the_transaction_deletes_is_dropped(db: nbdb.Database) -> None:
    """As ovsdb-server has it: a referrer created or mutated to point at a row the commit deletes is stored without it.

    (A reference to a row that does not exist before the commit is still refused: nbdb checks that
    references name stored rows, which OVSDB does not for weak ones.)
    """
    _multi_op_commits(db)
    parent = db.create(KitParent(name="p"))
    gone, kept = db.create(KitChild(parent=parent, name="gone")), db.create(KitChild(parent=parent, name="kept"))
    old = db.create(KitWeakGroup(members=[kept.id]))
    with db.transaction() as txn:
        txn.delete(gone)
        txn.create(KitWeakGroup(members=[gone.id, kept.id], pinned=gone.id))
        txn.mutate(old, add={"members": [gone.id]})
    new = txn.results[1]
    assert isinstance(new, KitWeakGroup) and (new.members, new.pinned) == ([kept.id], None)
    assert db.get(KitWeakGroup, new.id) == new
    assert db.get(KitWeakGroup, old.id).members == [kept.id]
    with pytest.raises(nbdb.NotFoundError):
        db.get(KitChild, gone.id)
    with pytest.raises(nbdb.ReferenceError):
        db.create(KitWeakGroup(members=[gone.id]))


def test_a_plain_delete_takes_the_objects_its_target_owns_in_its_commit(db: nbdb.Database) -> None:
    """An owned object (``nbdb_owned_by``: OVSDB's non-root row only its parent holds) goes with its owner,
    in the delete's commit, as ovsdb-server collects it; any other referrer still refuses."""
    _multi_op_commits(db)
    parent = db.create(KitParent(name="p"))
    child, other = db.create(KitChild(parent=parent, name="c")), db.create(KitChild(parent=parent, name="o"))
    owned = [db.create(KitOwned(owner=child, label=str(i))) for i in range(2)]
    kept = db.create(KitOwned(owner=other))
    revision, events = _delete_watched(db, [KitOwned, KitChild], child, 3)
    got = {(e.kind, e.model, e.id, e.revision) for e in events}
    assert got == {
        (nbdb.EventKind.DELETED, m, i, revision) for m, i in [(KitChild, child.id)] + [(KitOwned, o.id) for o in owned]
    }
    assert [o.id for o in db.list(KitOwned)] == [kept.id]
    with pytest.raises(nbdb.ReferenceError):
        db.delete(parent)  # its other child is no owned object
    with db.transaction() as tx:
        tx.delete(other)
    assert db.list(KitOwned) == []


def test_a_transaction_deleting_an_owner_drops_its_owned_objects_from_its_own_writes(db: nbdb.Database) -> None:
    """A transaction's own write of a weak referrer of an object its delete takes along (``nbdb_owned_by``)
    loses that reference in its commit, as a plain delete of the owner drops it from the stored referrer."""
    _multi_op_commits(db)
    parent = db.create(KitParent(name="p"))
    child, other = db.create(KitChild(parent=parent, name="c")), db.create(KitChild(parent=parent, name="o"))
    owned, kept = db.create(KitOwned(owner=child)), db.create(KitOwned(owner=other))
    held, mutated = db.create(KitOwnedSet(owned=[owned.id, kept.id])), db.create(KitOwnedSet())
    with db.transaction() as tx:
        tx.update(held.replace(note="x"))
        tx.create(KitOwnedSet(owned=[owned.id], note="new"))
        tx.mutate(mutated, add={"owned": [owned.id, kept.id]})
        tx.delete(child)
    updated, made = tx.results[0], tx.results[1]
    assert isinstance(updated, KitOwnedSet) and (updated.owned, updated.note) == ([kept.id], "x")
    assert isinstance(made, KitOwnedSet) and made.owned == []
    assert db.get(KitOwnedSet, held.id) == updated and db.get(KitOwnedSet, made.id) == made
    assert db.get(KitOwnedSet, mutated.id).owned == [kept.id]
    assert [o.id for o in db.list(KitOwned)] == [kept.id]


def test_a_transaction_s_update_of_an_object_its_delete_takes_along_is_its_delete(db: nbdb.Database) -> None:
    """An update or mutate of an owned object in the transaction that deletes its owner goes with the owner,
    as ovsdb-server collects the row whatever the transaction wrote to it; the update keeps its
    compare-and-swap, and a new object for that owner is still refused."""
    _multi_op_commits(db)
    parent = db.create(KitParent(name="p"))
    child = db.create(KitChild(parent=parent, name="c"))
    updated, mutated = db.create(KitOwned(owner=child)), db.create(KitOwned(owner=child))
    with pytest.raises(nbdb.ReferenceError), db.transaction() as tx:
        tx.create(KitOwned(owner=child))
        tx.delete(child)
    assert {o.id for o in db.list(KitOwned)} == {updated.id, mutated.id}
    stale = db.update(updated.replace(label="meanwhile"))
    with pytest.raises(nbdb.ConflictError), db.transaction() as tx:
        tx.update(updated.replace(label="x"))
        tx.delete(child)
    assert db.get(KitChild, child.id) == child
    with db.transaction() as tx:
        tx.update(stale.replace(label="x"))
        tx.mutate(mutated, add={"external_ids": {"k": "v"}})
        tx.delete(child)
    assert tx.results[:2] == [None, None]
    assert db.list(KitOwned) == []
    with pytest.raises(nbdb.NotFoundError):
        db.get(KitChild, child.id)


@pytest.mark.parametrize("sibling", [False, True])
def test_a_transaction_s_update_moving_an_object_its_delete_would_take_to_another_owner_keeps_it(
    db: nbdb.Database, sibling: bool
) -> None:
    """An owned object the transaction's own write moves to an owner it does not delete stays, moved,
    whether or not the deleted owner holds another (which goes with it): ownership is planned from the
    transaction's written copies, as ovsdb-server keeps a row another row references after the commit.
    Its weak referrers keep it too (the deleted owner's weak referrer, which refuses the first try, loses
    the owner)."""
    _multi_op_commits(db)
    parent = db.create(KitParent(name="p"))
    gone, other = db.create(KitChild(parent=parent, name="gone")), db.create(KitChild(parent=parent, name="other"))
    moved = db.create(KitOwned(owner=gone, label="moved"))
    if sibling:
        db.create(KitOwned(owner=gone, label="left"))
    group = db.create(KitWeakGroup(members=[gone.id, other.id]))
    holder = db.create(KitOwnedSet(owned=[moved.id]))
    with db.transaction() as tx:
        tx.delete(gone)
        tx.update(moved.replace(owner=other.id))
    kept = tx.results[1]
    assert isinstance(kept, KitOwned) and kept.owner == other.id and kept == db.get(KitOwned, moved.id)
    assert [(o.id, o.owner, o.label) for o in db.list(KitOwned)] == [(moved.id, other.id, "moved")]
    assert [c.name for c in db.list(KitChild)] == ["other"]
    assert db.get(KitWeakGroup, group.id).members == [other.id]
    assert db.get(KitOwnedSet, holder.id).owned == [moved.id]
