"""What controllers write: unique names, idempotent writes, mutations, fenced writes, liveness by TTL.

Each rule holds where the backend declares the capability; where it does
not, the feature must answer UnsupportedError — never a silent no-op.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import pytest

import nbdb
from nbdb.capabilities import Atomicity, Expiry
from nbdb.conformance.kit import KitChild, KitGroup, KitNamed, KitParent, eventually
from nbdb.events import EventKind
from nbdb.families.kv import KeyValueBackend
from nbdb.spi import UniqueKey

pytestmark = [pytest.mark.nbdb_kit, pytest.mark.timeout(90)]


def _unique(db: nbdb.Database) -> None:
    if not db.capabilities.unique:
        with pytest.raises(nbdb.UnsupportedError):
            db.create(KitNamed(name="probe"), may_exist=True)
        pytest.skip("backend declares unique=False (checked: may_exist raises UnsupportedError)")


def _transactions(db: nbdb.Database) -> None:
    if db.capabilities.transactions is Atomicity.NONE:
        pytest.skip("backend declares no transactions")


# ---------------------------------------------------------------- unique fields


def test_a_unique_value_is_held_by_one_object(db: nbdb.Database) -> None:
    _unique(db)
    first = db.create(KitNamed(name="vm1"))
    with pytest.raises(nbdb.UniqueViolationError) as caught:
        db.create(KitNamed(name="vm1"))
    error = caught.value
    assert isinstance(error, nbdb.ConflictError)
    assert (error.table, error.field, error.value, error.existing) == ("KitNamed", "name", "vm1", first.id)
    assert [n.id for n in db.list(KitNamed)] == [first.id]


def _claim_of(db: nbdb.Database, obj: KitNamed) -> tuple[KeyValueBackend, str, UniqueKey]:
    """The key-value backend, the claim of ``obj``'s name and its index's unique entry for it (skip elsewhere)."""
    backend = db.backend
    if not isinstance(backend, KeyValueBackend):
        pytest.skip(f"{type(backend).__name__} is not of the key-value family (no claim keys to point elsewhere)")
    index = backend.get_key(backend.layout.index("KitNamed", obj.id))
    assert index is not None
    entry = next(u for u in backend.layout.decode_index(index).unique if u[0] == "name")
    return backend, backend.layout.unique("KitNamed", entry), entry


@pytest.mark.parametrize("release", ["delete", "rename"])
def test_a_released_claim_another_tool_gave_to_a_true_holder_stays_with_it(db: nbdb.Database, release: str) -> None:
    """A release of a unique value leaves the claim to another object that holds it, and frees nothing.

    Another tool made ``other``'s index hold "x" too and pointed the claim at it. The release of "x" by
    ``first`` (a delete, a rename) deleted the claim unread: "x" was freed under ``other``, whose index
    holds it, and a create of "x" then succeeded beside it (two holders). The claim is checked as it is
    released (the family's condition on each released claim), stays with ``other``, and the write goes on.
    """
    _unique(db)
    first, other = db.create(KitNamed(name="x")), db.create(KitNamed(name="y"))
    backend, claim, entry = _claim_of(db, first)
    index_key = backend.layout.index("KitNamed", other.id)
    stored = backend.get_key(index_key)
    assert stored is not None
    index = backend.layout.decode_index(stored)
    doubled = index._replace(unique=(*index.unique, entry))
    assert backend.commit_once([], {index_key: backend.layout.encode_index(doubled), claim: str(other.id).encode()}, [])
    if release == "delete":
        db.delete(first)
    else:
        db.update(first.replace(name="renamed"))
    held = backend.get_key(claim)
    assert held is not None and held.value == str(other.id).encode(), "the release freed the claim of its true holder"
    with pytest.raises(nbdb.UniqueViolationError) as taken:
        db.create(KitNamed(name="x"))
    assert taken.value.existing == other.id


@pytest.mark.parametrize("release", ["delete", "rename"])
def test_a_released_claim_another_tool_pointed_at_a_non_holder_is_a_corrupt_record(
    db: nbdb.Database, release: str
) -> None:
    """A release of a claim that names another object, which does not hold the value, is refused, the key kept.

    Deleted unread, the evidence went with it. ``CorruptRecordError`` names the key; set to the holder's id
    (the repair it advises), the write goes through.
    """
    _unique(db)
    first, other = db.create(KitNamed(name="x")), db.create(KitNamed(name="y"))
    backend, claim, _ = _claim_of(db, first)
    assert backend.commit_once([], {claim: str(other.id).encode()}, [])
    write = (lambda: db.delete(first)) if release == "delete" else (lambda: db.update(first.replace(name="renamed")))
    with pytest.raises(nbdb.CorruptRecordError, match="which this write releases") as refused:
        write()
    assert refused.value.key == claim
    held = backend.get_key(claim)
    assert held is not None and held.value == str(other.id).encode(), "the refused release changed the claim"
    assert db.get(KitNamed, first.id).name == "x"
    assert backend.commit_once([], {claim: str(first.id).encode()}, [])
    write()
    assert backend.get_key(claim) is None
    db.create(KitNamed(name="x"))  # freed with its holder


def test_unique_groups_and_unset_values(db: nbdb.Database) -> None:
    _unique(db)
    db.create(KitNamed(name="a", zone="z1", slot=1))
    db.create(KitNamed(name="b", zone="z1", slot=2))
    db.create(KitNamed(name="c"))  # an unset group holds nothing...
    db.create(KitNamed(name="d"))  # ...so two objects may leave it unset
    with pytest.raises(nbdb.UniqueViolationError) as caught:
        db.create(KitNamed(name="e", zone="z1", slot=1))
    assert caught.value.field == "zone+slot"


def test_renames_and_deletes_free_a_value(db: nbdb.Database) -> None:
    _unique(db)
    a = db.create(KitNamed(name="x"))
    b = db.create(KitNamed(name="y"))
    with pytest.raises(nbdb.UniqueViolationError):
        db.update(b.replace(name="x"))
    a = db.update(a.replace(name="x2", tags=["still mine"]))
    b = db.update(b.replace(name="x"))
    db.delete(b)
    assert db.create(KitNamed(name="x")).name == "x"
    assert db.update(a.replace(tags=[])).name == "x2"  # keeping its own value is no violation


def test_racing_creates_of_one_name_have_one_winner(db_factory: Callable[..., nbdb.Database]) -> None:
    dbs = [db_factory() for _ in range(4)]
    _unique(dbs[0])
    outcomes: list[str] = []
    barrier = threading.Barrier(len(dbs))

    def race(db: nbdb.Database) -> None:
        barrier.wait(10)
        try:
            db.create(KitNamed(name="contested"))
            outcomes.append("won")
        except nbdb.UniqueViolationError:
            outcomes.append("lost")

    threads = [threading.Thread(target=race, args=(db,)) for db in dbs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes) == ["lost", "lost", "lost", "won"]
    assert len(dbs[0].list(KitNamed)) == 1


def test_a_transaction_can_move_a_value(db: nbdb.Database) -> None:
    _unique(db)
    _transactions(db)
    old = db.create(KitNamed(name="moving"))
    with db.transaction() as txn:
        txn.delete(old)
        new = txn.create(KitNamed(name="moving"))
    assert db.get(KitNamed, new.id).name == "moving"
    with pytest.raises(nbdb.UniqueViolationError):
        with db.transaction() as txn:
            txn.create(KitNamed(name="twice"))
            txn.create(KitNamed(name="twice"))
    assert db.get_by(KitNamed, name="twice") is None


def test_get_by_a_unique_value(db: nbdb.Database) -> None:
    _unique(db)
    obj = db.create(KitNamed(name="findme", zone="z", slot=7))
    assert db.get_by(KitNamed, name="findme") == obj
    assert db.get_by(KitNamed, zone="z", slot=7) == obj
    assert db.get_by(KitNamed, name="nobody") is None
    with pytest.raises(nbdb.ValidationError):
        db.get_by(KitNamed, tags=["x"])


# ---------------------------------------------------------------- idempotent writes


def test_may_exist_returns_the_object_that_holds_the_value(db: nbdb.Database) -> None:
    _unique(db)
    first = db.create(KitNamed(name="port-1", tags=["first"]))
    again = db.create(KitNamed(name="port-1", tags=["second"]), may_exist=True)
    assert again == first
    fresh = db.create(KitNamed(name="port-2"), may_exist=True)
    assert fresh.version == 1 and db.get(KitNamed, fresh.id) == fresh
    # No unique fields: found by its id alone, so a new id creates (see the test after the next).
    plain = db.create(KitParent(name="no unique fields"), may_exist=True)
    assert plain.version == 1 and db.get(KitParent, plain.id) == plain


def test_may_exist_never_returns_an_object_of_another_topic(db: nbdb.Database) -> None:
    # A unique value is held table-wide: the object holding it in another topic (another tenant's) was
    # returned by create(..., may_exist=True) as if it were the one asked for.
    _unique(db)
    theirs = db.create(KitNamed(name="tenant-name", topic="tenant-a"))
    with pytest.raises(nbdb.UniqueViolationError) as caught:
        db.create(KitNamed(name="tenant-name", topic="tenant-b"), may_exist=True)
    assert (caught.value.field, caught.value.value) == ("name", "tenant-name")
    with pytest.raises(nbdb.UniqueViolationError):
        db.create(KitNamed(name="tenant-name"), may_exist=True)  # nor of no topic
    assert db.create(KitNamed(name="tenant-name", topic="tenant-a"), may_exist=True) == theirs
    if db.capabilities.transactions is not Atomicity.NONE:
        other = KitParent(name="alongside", topic="tenant-b")
        with pytest.raises(nbdb.UniqueViolationError), db.transaction() as txn:
            txn.create(KitNamed(name="tenant-name", topic="tenant-b"), may_exist=True)
            txn.create(other)
        with pytest.raises(nbdb.NotFoundError):
            db.get(KitParent, other.id)  # nothing of it was written
    assert [(n.id, n.topic) for n in db.list(KitNamed)] == [(theirs.id, "tenant-a")]


def test_may_exist_never_returns_an_object_of_another_owner(db: nbdb.Database) -> None:
    """A stored object whose required references differ (a port of another switch) is not the one asked for.

    ``ovn-nbctl lsp-add sw2 p1 --may-exist`` refuses a p1 on sw1; create(..., may_exist=True) of a
    child under another parent, under the stored child's id, returned the stored child.
    """
    first, second = db.create(KitParent(name="one")), db.create(KitParent(name="two"))
    stored = db.create(KitChild(parent=first, name="c"))
    assert db.create(KitChild(id=stored.id, parent=first, name="c"), may_exist=True) == stored
    with pytest.raises(nbdb.ConflictError) as caught:
        db.create(KitChild(id=stored.id, parent=second, name="c"), may_exist=True)
    assert caught.value.key == ("KitChild", stored.id) and str(second.id) in str(caught.value)
    if db.capabilities.transactions is not Atomicity.NONE:
        other = KitParent(name="alongside")
        with pytest.raises(nbdb.ConflictError), db.transaction() as txn:
            txn.create(KitChild(id=stored.id, parent=second, name="c"), may_exist=True)
            txn.create(other)
        with pytest.raises(nbdb.NotFoundError):
            db.get(KitParent, other.id)  # nothing of it was written
    assert db.get(KitChild, stored.id) == stored


def test_may_exist_in_a_transaction(db: nbdb.Database) -> None:
    _unique(db)
    _transactions(db)
    first = db.create(KitNamed(name="shared"))
    parent = KitParent(name="alongside")
    with db.transaction() as txn:
        txn.create(KitNamed(name="shared"), may_exist=True)
        txn.create(parent)
    assert txn.results[0] == first
    assert db.get(KitParent, parent.id).name == "alongside"


def test_may_exist_returns_the_object_stored_under_its_own_id(db: nbdb.Database) -> None:
    # A create retried with its own id (after a CommitUnknownError, or by a controller deriving ids from its
    # sources) raised ConflictError "already exists" with may_exist=True: it was not idempotent.
    _unique(db)
    mine = db.create(KitNamed(name="fixed", topic="tenant-a"))
    assert db.create(KitNamed(id=mine.id, name="fixed", topic="tenant-a"), may_exist=True) == mine
    # Its unique value changed meanwhile: the object stored under its id is still the one asked for (unchanged).
    assert db.create(KitNamed(id=mine.id, name="renamed", topic="tenant-a"), may_exist=True) == mine
    # The same id in another topic (another tenant's object) is not the one asked for: the error stands.
    for topic in ("tenant-b", None):
        with pytest.raises(nbdb.ConflictError) as caught:
            db.create(KitNamed(id=mine.id, name="elsewhere", topic=topic), may_exist=True)
        assert not isinstance(caught.value, nbdb.UniqueViolationError)
    if db.capabilities.transactions is not Atomicity.NONE:
        parent = KitParent(name="alongside", topic="tenant-a")
        with db.transaction() as txn:
            txn.create(KitNamed(id=mine.id, name="renamed", topic="tenant-a"), may_exist=True)
            txn.create(parent)
        assert txn.results[0] == mine and db.get(KitParent, parent.id).name == "alongside"
        other = KitParent(name="not written", topic="tenant-b")
        with pytest.raises(nbdb.ConflictError) as caught, db.transaction() as txn:
            txn.create(KitNamed(id=mine.id, name="elsewhere", topic="tenant-b"), may_exist=True)
            txn.create(other)
        assert not isinstance(caught.value, nbdb.UniqueViolationError)
        with pytest.raises(nbdb.NotFoundError):
            db.get(KitParent, other.id)  # nothing of it was written
    assert db.list(KitNamed) == [mine]


def test_may_exist_of_a_model_without_unique_fields_finds_the_object_by_its_id(db: nbdb.Database) -> None:
    # may_exist was refused (ValidationError) for a model declaring no unique fields, so a create retried
    # after CommitUnknownError had no idempotent form there: the id alone finds the object asked for.
    first = db.create(KitParent(name="derived", topic="tenant-a"), may_exist=True)
    again = db.create(KitParent(id=first.id, name="derived", topic="tenant-a"), may_exist=True)
    assert again == first and db.list(KitParent) == [first]
    with pytest.raises(nbdb.ConflictError):
        db.create(KitParent(id=first.id, name="derived", topic="tenant-b"), may_exist=True)
    if db.capabilities.transactions is not Atomicity.NONE:
        with db.transaction() as txn:
            txn.create(KitParent(id=first.id, name="derived", topic="tenant-a"), may_exist=True)
        assert txn.results[0] == first
    assert db.list(KitParent) == [first]


def test_if_exists_deletes_of_what_is_gone_do_nothing(db: nbdb.Database) -> None:
    obj = db.create(KitParent(name="brief"))
    db.delete(obj)
    assert db.delete(obj, if_exists=True) is None
    assert db.delete(KitParent, obj.id, if_exists=True) is None
    with pytest.raises(nbdb.NotFoundError):
        db.delete(KitParent, obj.id)
    if db.capabilities.transactions is Atomicity.NONE:
        return
    other = KitParent(name="kept")
    with db.transaction() as txn:
        txn.delete(obj, if_exists=True)
        txn.create(other)
    assert db.get(KitParent, other.id).name == "kept"


def test_delete_returns_its_revision(db: nbdb.Database) -> None:
    obj = db.create(KitParent(name="counted"))
    revision = db.delete(obj)
    assert isinstance(revision, int) and revision >= db.list(KitParent).revision - 1


# ---------------------------------------------------------------- mutations


def test_mutations_of_lists_and_maps(db: nbdb.Database) -> None:
    parent = db.create(KitParent(name="p"))
    kids = [db.create(KitChild(parent=parent, name=f"c{i}")) for i in range(3)]
    group = db.create(KitGroup(members=[kids[0].id]))
    group = db.mutate(group, add={"members": [kids[1], kids[2].id, kids[0]]})
    assert group.members == [kids[0].id, kids[1].id, kids[2].id]  # order kept, no duplicates
    group = db.mutate((KitGroup, group.id), remove={"members": [kids[0]]}, add={"external_ids": {"owner": "a"}})
    assert group.members == [kids[1].id, kids[2].id] and group.external_ids == {"owner": "a"}
    group = db.mutate(group, remove={"external_ids": ["owner"]})
    assert group.external_ids == {}
    assert db.mutate(group, remove={"members": [kids[0]]}) == db.get(KitGroup, group.id)  # no change, no write
    with pytest.raises(nbdb.ReferenceError):
        db.mutate(group, add={"members": [KitChild(parent=parent, name="never stored").id]})
    with pytest.raises(nbdb.ValidationError):
        db.mutate(group, add={"nosuchfield": [1]})
    with pytest.raises(nbdb.ValidationError):
        db.mutate(parent, add={"name": ["x"]})  # not a collection


def test_concurrent_mutations_all_land(db_factory: Callable[..., nbdb.Database]) -> None:
    writers = [db_factory() for _ in range(4)]
    group = writers[0].create(KitNamed(name="tagged")) if writers[0].capabilities.unique else None
    target = group or writers[0].create(KitGroup())
    field = "tags" if group is not None else "external_ids"

    def add(db: nbdb.Database, who: int) -> None:
        for i in range(5):
            change = [f"w{who}-{i}"] if field == "tags" else {f"w{who}-{i}": "x"}
            db.mutate((type(target), target.id), add={field: change})

    threads = [threading.Thread(target=add, args=(db, n)) for n, db in enumerate(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(80)
    final = writers[0].get(type(target), target.id)
    assert len(getattr(final, field)) == 20
    assert final.version == 21


def test_mutation_in_a_transaction(db: nbdb.Database) -> None:
    _transactions(db)
    group = db.create(KitGroup(external_ids={"a": "1"}))
    other = db.create(KitParent(name="o"))
    db.mutate(group, add={"external_ids": {"b": "2"}})  # the transaction's copy of group is now stale
    with db.transaction() as txn:
        txn.mutate(group, add={"external_ids": {"c": "3"}})
        txn.update(other.replace(size=1))
    assert txn.results[0] is not None and txn.results[0].external_ids == {"a": "1", "b": "2", "c": "3"}
    assert db.get(KitParent, other.id).size == 1


# ---------------------------------------------------------------- fenced writes


def test_fenced_writes_commit_only_under_the_lock(db_factory: Callable[..., nbdb.Database]) -> None:
    db, rival = db_factory(), db_factory()
    obj = db.create(KitParent(name="fenced"))
    if not db.capabilities.locks:
        assert not db.capabilities.fencing, "a backend without locks declares fencing"
        pytest.skip("backend declares no locks, so nothing to fence writes on")
    if not db.capabilities.fencing:
        with db.lock("leader", ttl=5) as held, pytest.raises(nbdb.UnsupportedError):
            db.update(obj.replace(size=1), fence=held)
        pytest.skip("backend declares fencing=False (checked: fence= raises UnsupportedError)")
    with db.lock("leader", ttl=5) as held:
        stale = obj
        obj = db.update(obj.replace(size=1), fence=held)
        # A stale copy under a held lock is a conflict, not a lost lock (a backend that keeps leases apart
        # from its keys and not overriding lease_held told them apart wrongly).
        with pytest.raises(nbdb.ConflictError):
            db.update(stale.replace(size=7), fence=held)
        assert not held.lost
        if db.capabilities.transactions is not Atomicity.NONE:
            with db.transaction(fence=held) as txn:
                txn.update(obj.replace(size=2))
    # The block ended: the lock is released and a rival takes it; the old handle fences nothing now.
    with rival.lock("leader", ttl=5, timeout=10):
        with pytest.raises(nbdb.LockLostError):
            db.update(db.get(KitParent, obj.id).replace(size=99), fence=held)
        with pytest.raises(nbdb.LockLostError):
            db.create(KitParent(name="late"), fence=held)
    assert db.get(KitParent, obj.id).size in (1, 2)
    assert all(p.name != "late" for p in db.list(KitParent))


def test_a_fenced_write_with_nothing_to_write_is_refused_once_the_lock_is_gone(
    db_factory: Callable[..., nbdb.Database],
) -> None:
    """A mutate that changes nothing, a delete(if_exists) of an object already gone, an empty transaction:
    fenced on a released lock they raised nothing, so a replica that had stopped leading took the answer
    for a leader's ("the member is there", "it is gone") and went on acting as the leader."""
    db = db_factory()
    if not db.capabilities.fencing:
        pytest.skip("backend declares fencing=False")
    group = db.create(KitGroup(external_ids={"a": "1"}))
    with db.lock("leader", ttl=5) as held:
        # Under the lock they answer as before: nothing written, no error.
        assert db.mutate(group, add={"external_ids": {"a": "1"}}, fence=held).version == group.version
        assert db.delete((KitGroup, uuid.uuid4()), if_exists=True, fence=held) is None
    for nothing in (
        lambda: db.mutate(group, add={"external_ids": {"a": "1"}}, fence=held),
        lambda: db.mutate(group, remove={"external_ids": ["absent"]}, fence=held),
        lambda: db.delete((KitGroup, uuid.uuid4()), if_exists=True, fence=held),
    ):
        with pytest.raises(nbdb.LockLostError):
            nothing()
    if db.capabilities.transactions is not Atomicity.NONE:
        with pytest.raises(nbdb.LockLostError), db.transaction(fence=held) as txn:
            txn.mutate(group, add={"external_ids": {"a": "1"}})
    with pytest.raises(nbdb.ValidationError):
        db.mutate(group, add={"external_ids": {"a": "1"}}, fence="leader")  # type: ignore[arg-type]
    assert db.get(KitGroup, group.id).version == group.version


# ---------------------------------------------------------------- liveness by TTL


def test_objects_with_a_ttl_vanish_unless_refreshed(db: nbdb.Database) -> None:
    if db.capabilities.expiry is Expiry.NONE:
        with pytest.raises(nbdb.UnsupportedError):
            db.create(KitParent(name="mortal"), ttl=2)
        pytest.skip("backend declares expiry=none (checked: ttl= raises UnsupportedError)")
    watch = db.watch(KitParent)
    mortal = db.create(KitParent(name="mortal"), ttl=2)
    kept = db.create(KitParent(name="kept alive"), ttl=2)
    forever = db.create(KitParent(name="forever"))
    with pytest.raises(nbdb.ReferenceError):
        db.create(KitChild(parent=mortal, name="orphan to be"))
    with pytest.raises(nbdb.ValidationError):
        db.refresh(forever, 2)
    deleted: set[object] = set()

    def gone() -> bool:
        db.refresh(kept, 2)
        deleted.update(e.id for e in watch.poll(0.2) if e.kind is EventKind.DELETED)
        return mortal.id in deleted

    assert eventually(gone, timeout=20, interval=0.3)
    with pytest.raises(nbdb.NotFoundError):
        db.get(KitParent, mortal.id)
    with pytest.raises(nbdb.NotFoundError):
        db.refresh(mortal, 2)
    assert db.get(KitParent, kept.id).name == "kept alive"
    assert db.get(KitParent, forever.id).name == "forever"
    watch.close()


def test_a_watch_from_now_after_a_refresh_is_a_watch(db: nbdb.Database) -> None:
    # OVSDB: a refresh changes only the row's deadline, which no record renders; the connection's
    # revision moved on and its replica's did not, so every watch "from now" (and one from a no-op
    # commit's revision) raised HistoryGoneError until the next real change.
    if db.capabilities.expiry is Expiry.NONE:
        pytest.skip("backend declares expiry=none")
    kept = db.create(KitParent(name="kept"), ttl=30)
    db.refresh(kept, 30)
    for _ in range(20):  # the refresh reaches the replica some time after it returns: look while it does
        with db.watch(KitParent) as watch:
            assert watch.poll(0) == []
        time.sleep(0.05)
    with db.watch(KitParent) as watch:
        after = db.create(KitParent(name="after"))
        names: list[str] = []
        for _ in range(50):
            names += [e.new.name for e in watch.poll(0.2) if isinstance(e.new, KitParent)]
            if names:
                break
    assert names == [after.name]
    if db.capabilities.transactions is Atomicity.NONE:
        return
    with db.transaction() as txn:
        pass  # a commit of nothing: its revision is the store's current one
    if txn.revision is not None:
        with db.watch(KitParent, since=txn.revision) as watch:
            assert watch.poll(0) == []


def test_required_capabilities_are_checked_at_connect(nbdb_url: str, capabilities: nbdb.Capabilities) -> None:
    with nbdb.connect(nbdb_url, namespace="kit-require", require={"locks"} if capabilities.locks else set()):
        pass
    lacking = "unique" if not capabilities.unique else "fencing" if not capabilities.fencing else None
    if lacking is not None:
        with pytest.raises(nbdb.UnsupportedError, match=lacking):
            nbdb.connect(nbdb_url, namespace="kit-require", require={lacking})
    with pytest.raises(nbdb.ValidationError):
        nbdb.connect(nbdb_url, namespace="kit-require", require={"no-such-capability"})


# ---------------------------------------------------------------- pages


def test_pages_list_everything_once_at_one_revision(db: nbdb.Database) -> None:
    if not db.capabilities.pages:
        with pytest.raises(nbdb.UnsupportedError):
            db.list(KitParent, limit=10)
        assert list(db.iter(KitParent)) == []  # iter still works, in one list
        pytest.skip("backend declares pages=False (checked: limit= raises UnsupportedError)")
    made = {db.create(KitParent(name=f"p{i:02}", topic="paged")).id for i in range(25)}
    first = db.list(KitParent, "paged", limit=10)
    assert len(first) == 10 and first.continue_token is not None
    # Changes after the first page must not show on the later ones: they reflect its revision.
    late = db.create(KitParent(name="late", topic="paged"))
    gone = db.get(KitParent, sorted(made)[-1])
    db.delete(gone)
    seen = [p.id for p in first]
    token: str | None = first.continue_token
    while token is not None:
        page = db.list(KitParent, "paged", limit=10, after=token)
        assert page.revision == first.revision
        seen += [p.id for p in page]
        token = page.continue_token
    assert len(seen) == len(set(seen)) == 25 and set(seen) == made
    assert late.id not in seen
    walked = {p.id for p in db.iter(KitParent, "paged", page_size=7)}
    assert walked == (made - {gone.id}) | {late.id}
    with pytest.raises(nbdb.ValidationError):
        db.list(KitParent, limit=0)
    with pytest.raises(nbdb.ValidationError):
        db.list(KitParent, limit=5, after="not a token")


@pytest.mark.parametrize("size", [0, -1, 1.5, "7", None, True])
def test_a_page_size_no_page_can_have_is_refused_on_every_store(db: nbdb.Database, size: object) -> None:
    # A store without pages read iter() in one list and never looked at page_size: 0, -1 or "7" were
    # taken silently there (Redis), where every store with pages refused them.
    db.create(KitParent(name="one", topic="sized"))
    with pytest.raises(nbdb.ValidationError):
        db.iter(KitParent, "sized", page_size=size)  # type: ignore[arg-type]
    assert [p.name for p in db.iter(KitParent, "sized", page_size=1)] == ["one"]


# ---------------------------------------------------------------- limits


def test_limits_are_checked_before_the_server(db: nbdb.Database) -> None:
    limit = db.capabilities.max_txn_ops
    if limit is None or db.capabilities.transactions is Atomicity.NONE:
        pytest.skip("backend declares no max_txn_ops")
    # Under the limit: an update checks at least its own version, so a quarter of the limit fits anywhere.
    made: list[KitParent] = []
    under = max(1, limit // 4)
    while len(made) <= limit:
        with db.transaction() as txn:
            for i in range(len(made), min(limit + 1, len(made) + under)):
                txn.create(KitParent(name=f"u{i}", topic="limits"))
        made += [obj for obj in txn.results if isinstance(obj, KitParent)]
    with db.transaction() as txn:
        for obj in made[:under]:
            txn.update(obj.replace(size=1))
    assert sum(p.size == 1 for p in db.list(KitParent, "limits")) == under
    # Over it: more updates than the limit, each checking a version that no store can merge with another.
    with pytest.raises(nbdb.ValidationError, match="max_txn_ops"):
        with db.transaction() as txn:
            for obj in made:
                txn.update(obj.replace(size=2))
    assert sum(p.size == 2 for p in db.list(KitParent, "limits")) == 0
