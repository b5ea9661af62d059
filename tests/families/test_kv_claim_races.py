"""A release of unique claims that races a rename, and the reaper's word on a claim it cannot release.

A delete of any version (a delete by id, the reaper's) reads the object's index (the unique values it
releases) and its version in two reads. A rename landing between them fails the first attempt (the
released claim's ``ValueIs``), but the attempt's diagnosis (``vet_released``) notes the old value's claim
as gone, and the next plan took that note for any index it read: a second such rename went through, the
object deleted with the new value's claim left behind, naming it, and a create of that value was
``CorruptRecordError`` for ever. The renames are made from inside the planner's own reads (nbdb's backend
object patched, whichever order it reads in), so the race is deterministic.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

import nbdb
from nbdb.api import Database
from nbdb.conformance.kit import KitNamed
from nbdb.families import kvexpiry
from nbdb.families.kv import KeyValue, KeyValueBackend
from nbdb.families.kvplan import Index
from nbdb.loader import load_backend
from nbdb.spi import UniqueKey
from nbdb.testing.fixtures import shared_server


@pytest.fixture(params=["sqlite", "redis", "etcd", "hazelcast"])
def db(request: pytest.FixtureRequest, url_of: Callable[[str], str]) -> Iterator[Database]:
    """A Database on a fresh key-value store, without its reaper thread (the tests reap themselves)."""
    with contextlib.ExitStack() as stack:
        if request.param == "hazelcast":  # its commits land key by key: a read may see half of one
            server = stack.enter_context(shared_server("hazelcast"))
            url = f"{server.url}?namespace=t{uuid.uuid4().hex[:8]}"
        else:
            url = url_of(request.param)
        database = stack.enter_context(Database(load_backend(url), reap=False))
        assert isinstance(database.backend, KeyValueBackend)
        yield database


def _race_renames(db: Database, obj: KitNamed) -> Callable[[], None]:
    """Make the planner's reads of ``obj`` race renames; returns the undo.

    Of the planner's two reads of ``obj`` (its index and its object key), a rename to "b" lands before
    the second, in the first plan and in the second; before the second plan's first read, one back to "a".
    """
    backend = db.backend
    assert isinstance(backend, KeyValueBackend)
    found = backend.index_record("KitNamed", obj.id)
    assert found is not None
    okey = backend.layout.object(found.topic, "KitNamed", str(obj.id))
    real_get_key, real_index = backend.get_key, backend.index_record
    state = {"reads": 0, "busy": False}

    def rename(to: str) -> None:
        state["busy"] = True
        try:
            db.update(db.get(KitNamed, obj.id).replace(name=to))
        finally:
            state["busy"] = False

    def planned_read() -> None:
        if state["busy"] or sys._getframe(2).f_code.co_name != "plan_commit":
            return
        state["reads"] += 1
        if state["reads"] in (2, 4):
            rename("b")  # between the plan's two reads
        elif state["reads"] == 3:
            rename("a")  # before the second plan's reads

    def index_record(table: str, id: uuid.UUID) -> Index | None:
        if id == obj.id:
            planned_read()
        return real_index(table, id)

    def get_key(key: str) -> KeyValue | None:
        if key == okey:
            planned_read()
        return real_get_key(key)

    backend.index_record = index_record  # type: ignore[method-assign]
    backend.get_key = get_key  # type: ignore[method-assign]

    def undo() -> None:
        del backend.index_record, backend.get_key
        assert state["reads"] >= 4, "the planner's reads were not raced"

    return undo


def _names_are_free(db: Database) -> None:
    """Every KitNamed gone, "a" and "b" can be created (a claim left behind is CorruptRecordError here)."""
    for o in db.list(KitNamed):
        db.delete(KitNamed, o.id)
    for name in "ab":
        db.create(KitNamed(name=name))


def test_a_delete_by_id_racing_renames_leaves_no_claim_behind(db: Database) -> None:
    y = db.create(KitNamed(name="a"))
    undo = _race_renames(db, y)
    try:
        db.delete(KitNamed, y.id)
    except nbdb.ConflictError:
        pass  # refused while it kept changing is fine; a claim left behind is not
    finally:
        undo()
    _names_are_free(db)


def test_the_reaper_racing_renames_leaves_no_claim_behind(db: Database) -> None:
    backend = db.backend
    assert isinstance(backend, KeyValueBackend)
    y = db.create(KitNamed(name="a"), ttl=0.001)
    time.sleep(0.01)
    undo = _race_renames(db, y)
    try:
        backend.reap()
    finally:
        undo()
    backend.reap()  # a pass that lost the race deletes it on the next one
    with pytest.raises(nbdb.NotFoundError):
        db.get(KitNamed, y.id)
    _names_are_free(db)


def test_the_reaper_warns_once_of_an_expired_object_whose_claim_was_damaged(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """An expired object whose released claim lies (names no id) is not reaped: said at warning, once a while."""
    backend = db.backend
    assert isinstance(backend, KeyValueBackend)
    y = db.create(KitNamed(name="a"), ttl=0.001)
    claim = backend.layout.unique("KitNamed", UniqueKey("name", KitNamed.unique_text(("name",), {"name": "a"})))
    assert backend.commit_once([], {claim: b"not an id"}, []) is not None
    time.sleep(0.01)
    with caplog.at_level(logging.DEBUG, logger=kvexpiry.__name__):
        assert backend.reap() == 0
        assert backend.reap() == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, caplog.text
    assert claim in warnings[0].getMessage() and "e/KitNamed/" in warnings[0].getMessage()
    assert db.get(KitNamed, y.id).name == "a"
    assert backend.commit_once([], {claim: str(y.id).encode()}, []) is not None  # repaired
    assert backend.reap() == 1
