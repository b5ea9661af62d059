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
from collections.abc import Callable, Iterator, Mapping, Sequence

import pytest

import nbdb
from nbdb.api import Database
from nbdb.conformance.kit import KitCounter, KitNamed
from nbdb.families import kvexpiry
from nbdb.families.kv import Condition, KeyValue, KeyValueBackend
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


def _count_commits(backend: KeyValueBackend, of: str, before: Callable[[], None], every: bool = False) -> list[int]:
    """Count the commits whose conditions name the key ``of``; ``before`` runs before the first is sent
    (``every``: before each); undone by ``del backend.commit_once``."""
    real = backend.commit_once
    sent: list[int] = []
    busy: list[bool] = []

    def commit_once(conditions: Sequence[Condition], puts: Mapping[str, bytes], deletes: Sequence[str]) -> int | None:
        if not busy and any(getattr(c, "key", None) == of for c in conditions):
            if every or not sent:
                busy.append(True)
                try:
                    before()
                finally:
                    busy.clear()
            sent.append(len(sent))
        return real(conditions, puts, deletes)

    backend.commit_once = commit_once  # type: ignore[method-assign]
    return sent


@pytest.mark.parametrize("model", [KitNamed, KitCounter], ids=["unique value", "no unique value"])
def test_a_reaper_pass_a_refresh_beat_commits_once(db: Database, model: type[KitNamed] | type[KitCounter]) -> None:
    # The reaper's delete is conditional on the deadline it read (VersionIs of the expiry key). A refresh
    # landing before it fails that condition, and no retry of the pass can succeed: it read the deadline
    # once. It committed a second time all the same (a round trip, and a plan's reads, for nothing).
    backend = db.backend
    assert isinstance(backend, KeyValueBackend)
    obj = db.create(KitNamed(name="a") if model is KitNamed else KitCounter(), ttl=0.001)
    time.sleep(0.01)
    expiry = backend.layout.expiry(model.nbdb_table, obj.id)
    reaper_commits = _count_commits(backend, expiry, lambda: db.refresh(obj, 60))
    try:
        assert backend.reap() == 0
    finally:
        del backend.commit_once
    assert reaper_commits == [0], "the reaper committed again after its deadline moved"
    assert db.get(model, obj.id) == obj
    assert backend.reap() == 0  # refreshed: not reaped later either


def test_a_delete_that_keeps_conflicting_reads_no_claim_after_its_last_attempt(db: Database) -> None:
    # After each failed attempt the family reads the claims the commit released (vet_released), for the next
    # plan. After the last one there is no next plan: that read (a round trip) changed nothing.
    backend = db.backend
    assert isinstance(backend, KeyValueBackend)
    obj = db.create(KitNamed(name="a"))
    claim = backend.layout.unique("KitNamed", UniqueKey("name", KitNamed.unique_text(("name",), {"name": "a"})))
    real_get_keys = backend.get_keys
    seen: list[str] = []

    def get_keys(keys: Sequence[str]) -> list[KeyValue | None]:
        if claim in keys:
            seen.append("claim read")
        return real_get_keys(keys)

    def move() -> None:  # before each commit of the delete, another write of the object fails it
        db.update(db.get(KitNamed, obj.id).replace(tags=[str(len(seen))]))
        seen.append("commit")

    deletes = _count_commits(backend, claim, move, every=True)
    backend.get_keys = get_keys  # type: ignore[method-assign]
    try:
        with pytest.raises(nbdb.ConflictError):
            db.delete(KitNamed, obj.id)
    finally:
        del backend.commit_once, backend.get_keys
    assert len(deletes) > 1
    assert seen == ["commit", "claim read"] * (len(deletes) - 1) + ["commit"], seen
    assert db.get(KitNamed, obj.id).name == "a"
