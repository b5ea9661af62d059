"""Create, get, update with compare-and-swap, delete, list; bad input gives typed errors."""

from __future__ import annotations

import uuid

import pytest

import nbdb
from nbdb.conformance.kit import KitChild, KitParent
from nbdb.models import LogicalSwitch, LogicalSwitchPort

pytestmark = [pytest.mark.nbdb_kit, pytest.mark.timeout(60)]


def test_create_returns_stored_copy_at_version_1(db: nbdb.Database) -> None:
    obj = KitParent(name="a")
    stored = db.create(obj)
    assert stored.version == 1
    assert stored.id == obj.id
    assert db.get(KitParent, obj.id) == stored


def test_get_by_string_id(db: nbdb.Database) -> None:
    stored = db.create(KitParent(name="a"))
    assert db.get(KitParent, str(stored.id)).name == "a"


def test_get_missing_raises_not_found(db: nbdb.Database) -> None:
    with pytest.raises(nbdb.NotFoundError):
        db.get(KitParent, uuid.uuid4())


def test_get_with_bad_id_raises_validation_error(db: nbdb.Database) -> None:
    with pytest.raises(nbdb.ValidationError):
        db.get(KitParent, "not-a-uuid")


def test_update_bumps_version_and_persists(db: nbdb.Database) -> None:
    v1 = db.create(KitParent(name="a"))
    v2 = db.update(v1.replace(size=5))
    assert v2.version == 2
    got = db.get(KitParent, v1.id)
    assert (got.version, got.size) == (2, 5)


def test_stale_update_raises_conflict_and_keeps_winner(db: nbdb.Database) -> None:
    v1 = db.create(KitParent(name="a"))
    db.update(v1.replace(size=1))
    with pytest.raises(nbdb.ConflictError):
        db.update(v1.replace(size=2))
    assert db.get(KitParent, v1.id).size == 1


def test_create_existing_id_raises_conflict(db: nbdb.Database) -> None:
    obj = KitParent(name="a")
    db.create(obj)
    with pytest.raises(nbdb.ConflictError):
        db.create(obj)


def test_create_of_stored_copy_is_rejected(db: nbdb.Database) -> None:
    stored = db.create(KitParent(name="a"))
    with pytest.raises(nbdb.ValidationError):
        db.create(stored)


def test_update_of_unsaved_object_is_rejected(db: nbdb.Database) -> None:
    with pytest.raises(nbdb.ValidationError):
        db.update(KitParent(name="a"))


def test_update_of_deleted_object_fails(db: nbdb.Database) -> None:
    v1 = db.create(KitParent(name="a"))
    db.delete(v1)
    with pytest.raises((nbdb.NotFoundError, nbdb.ConflictError)):
        db.update(v1.replace(size=3))
    with pytest.raises(nbdb.NotFoundError):
        db.get(KitParent, v1.id)


def test_delete_by_object_checks_version(db: nbdb.Database) -> None:
    v1 = db.create(KitParent(name="a"))
    db.update(v1.replace(size=1))
    with pytest.raises(nbdb.ConflictError):
        db.delete(v1)
    assert db.get(KitParent, v1.id).size == 1


def test_delete_by_model_and_id(db: nbdb.Database) -> None:
    v1 = db.create(KitParent(name="a"))
    db.update(v1.replace(size=1))
    db.delete(KitParent, v1.id)
    with pytest.raises(nbdb.NotFoundError):
        db.get(KitParent, v1.id)
    with pytest.raises(nbdb.NotFoundError):
        db.delete(KitParent, v1.id)


def test_recreate_after_delete_starts_at_version_1(db: nbdb.Database) -> None:
    obj = KitParent(name="a")
    db.create(obj)
    db.delete(KitParent, obj.id)
    assert db.create(obj).version == 1


def test_topic_is_kept_and_immutable(db: nbdb.Database) -> None:
    stored = db.create(KitParent(name="a", topic="tenant-1"))
    assert db.get(KitParent, stored.id).topic == "tenant-1"
    with pytest.raises(nbdb.ValidationError):
        db.update(stored.replace(topic="tenant-2"))
    assert db.get(KitParent, stored.id).topic == "tenant-1"


def test_list_returns_objects_and_revision(db: nbdb.Database) -> None:
    before = db.list(KitParent).revision
    made = {db.create(KitParent(name=f"p{i}")).id for i in range(5)}
    listed = db.list(KitParent)
    assert {p.id for p in listed} == made
    assert listed.revision > before
    assert all(p.version == 1 for p in listed)


def test_list_by_topic_reads_only_that_topic(db: nbdb.Database) -> None:
    a = {db.create(KitParent(name=f"a{i}", topic="ta")).id for i in range(3)}
    b = {db.create(KitParent(name=f"b{i}", topic="tb")).id for i in range(2)}
    g = db.create(KitParent(name="global")).id
    assert {p.id for p in db.list(KitParent, topic="ta")} == a
    assert {p.id for p in db.list(KitParent, topic="tb")} == b
    assert {p.id for p in db.list(KitParent)} == a | b | {g}


def test_list_revision_orders_commits(db: nbdb.Database) -> None:
    r1 = db.list(KitParent).revision
    db.create(KitParent(name="x"))
    r2 = db.list(KitParent).revision
    assert r2 > r1


def test_ovn_models_round_trip(db: nbdb.Database) -> None:
    ls = db.create(LogicalSwitch(name="sw0", other_config={"subnet": "10.0.0.0/24"}))
    port = db.create(
        LogicalSwitchPort(
            switch=ls,
            name="lsp0",
            addresses=["0A:00:00:00:00:01 10.0.0.5"],
            port_security=["0a:00:00:00:00:01 10.0.0.5"],
            tag_request=100,
        )
    )
    got = db.get(LogicalSwitchPort, port.id)
    assert got == port
    assert got.addresses == ["0a:00:00:00:00:01 10.0.0.5"]
    assert got.switch == ls.id


def test_user_model_with_reference_round_trips(db: nbdb.Database) -> None:
    parent = db.create(KitParent(name="p"))
    child = db.create(KitChild(parent=parent, name="c", value=7, external_ids={"owner": "kit"}))
    got = db.get(KitChild, child.id)
    assert (got.parent, got.value, got.external_ids) == (parent.id, 7, {"owner": "kit"})


def test_non_model_input_raises_validation_error(db: nbdb.Database) -> None:
    with pytest.raises(nbdb.ValidationError):
        db.create({"name": "x"})  # type: ignore[type-var]
    with pytest.raises(nbdb.ValidationError):
        db.get(dict, uuid.uuid4())  # type: ignore[type-var]


def test_bad_model_values_raise_validation_error() -> None:
    with pytest.raises(nbdb.ValidationError):
        LogicalSwitchPort(switch=uuid.uuid4(), name="p", addresses=["zz:zz"])
    with pytest.raises(nbdb.ValidationError):
        KitParent(name="x", topic="bad topic with spaces")
    with pytest.raises(nbdb.ValidationError):
        KitParent(name="x").replace(size="many")


def test_models_are_immutable() -> None:
    obj = KitParent(name="x")
    with pytest.raises(nbdb.ValidationError):
        obj.name = "y"  # type: ignore[misc]
