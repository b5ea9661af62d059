"""The key-value family's logic, with races made deterministic on the memory backend."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

import nbdb
from nbdb.api import Database
from nbdb.backends.memory import MemoryBackend, MemoryStore
from nbdb.families.kv import CommitToken, Condition, Exists, PrefixUnchangedSince, VersionIs
from nbdb.models import LogicalSwitch, LogicalSwitchPort

pytestmark = pytest.mark.timeout(30)


class InterleavingBackend(MemoryBackend):
    """Runs ``before_commit`` once, between planning a commit and committing it."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store)
        self.before_commit: Any = None
        self.conditions: list[Condition] = []

    def commit_keys(
        self,
        conditions: Sequence[Condition],
        puts: Mapping[str, bytes],
        deletes: Sequence[str],
        token: CommitToken | None = None,
    ) -> int | None:
        self.conditions = list(conditions)
        hook, self.before_commit = self.before_commit, None
        if hook is not None:
            hook()
        return super().commit_keys(conditions, puts, deletes, token)


@pytest.fixture
def pair() -> tuple[Database, Database, InterleavingBackend]:
    store = MemoryStore()
    racer = InterleavingBackend(store)
    return Database(racer), Database(MemoryBackend(store)), racer


def test_child_created_between_plan_and_commit_blocks_the_delete(pair: Any) -> None:
    racer_db, other, racer = pair
    ls = racer_db.create(LogicalSwitch(name="sw"))
    racer.before_commit = lambda: other.create(LogicalSwitchPort(switch=ls, name="late"))
    with pytest.raises(nbdb.ReferenceError):
        racer_db.delete(ls)
    assert any(isinstance(c, PrefixUnchangedSince) for c in racer.conditions)
    assert racer_db.get(LogicalSwitch, ls.id)
    assert [p.name for p in other.list(LogicalSwitchPort)] == ["late"]


def test_parent_deleted_between_plan_and_commit_blocks_the_create(pair: Any) -> None:
    racer_db, other, racer = pair
    ls = other.create(LogicalSwitch(name="sw"))
    racer.before_commit = lambda: other.delete(LogicalSwitch, ls.id)
    with pytest.raises(nbdb.ReferenceError):
        racer_db.create(LogicalSwitchPort(switch=ls, name="p"))
    assert any(isinstance(c, Exists) for c in racer.conditions)
    assert list(other.list(LogicalSwitchPort)) == []


def test_concurrent_update_between_plan_and_commit_is_a_conflict(pair: Any) -> None:
    racer_db, other, racer = pair
    ls = racer_db.create(LogicalSwitch(name="sw"))
    racer.before_commit = lambda: other.update(other.get(LogicalSwitch, ls.id).replace(name="theirs"))
    with pytest.raises(nbdb.ConflictError):
        racer_db.update(ls.replace(name="mine"))
    assert other.get(LogicalSwitch, ls.id).name == "theirs"
    assert any(isinstance(c, VersionIs) and c.version == 1 for c in racer.conditions)


def test_benign_race_is_retried(pair: Any) -> None:
    """A referrer that comes and goes between plan and commit makes the family re-plan, not fail."""
    racer_db, other, racer = pair
    ls = racer_db.create(LogicalSwitch(name="sw"))

    def come_and_go() -> None:
        port = other.create(LogicalSwitchPort(switch=ls, name="transient"))
        other.delete(port)

    racer.before_commit = come_and_go
    racer_db.delete(ls)
    with pytest.raises(nbdb.NotFoundError):
        other.get(LogicalSwitch, ls.id)


def test_stale_topic_cache_falls_back_to_the_index(pair: Any) -> None:
    racer_db, other, _ = pair
    ls = racer_db.create(LogicalSwitch(name="sw", topic="t1"))
    assert racer_db.get(LogicalSwitch, ls.id).topic == "t1"
    other.delete(LogicalSwitch, ls.id)
    again = other.create(LogicalSwitch(id=ls.id, name="sw2", topic="t2"))
    got = racer_db.get(LogicalSwitch, ls.id)
    assert (got.topic, got.name) == ("t2", "sw2")
    assert racer_db.update(got.replace(name="sw3")).version == again.version + 1


def test_update_without_known_refs_reads_them(pair: Any) -> None:
    racer_db, other, _ = pair
    a = racer_db.create(LogicalSwitch(name="a"))
    b = racer_db.create(LogicalSwitch(name="b"))
    port = racer_db.create(LogicalSwitchPort(switch=a, name="p"))
    # A copy built by hand carries no knowledge of the stored references.
    by_hand = LogicalSwitchPort(id=port.id, version=port.version, switch=b.id, name="p")
    racer_db.update(by_hand)
    other.delete(a)
    with pytest.raises(nbdb.ReferenceError):
        other.delete(b)


def test_index_record_corruption_is_reported(pair: Any) -> None:
    racer_db, _, racer = pair
    ls = racer_db.create(LogicalSwitch(name="sw"))
    racer._topic_cache.clear()
    racer.store.data[racer.layout.index("LogicalSwitch", ls.id)].value = b"garbage"
    with pytest.raises(nbdb.CorruptRecordError):
        racer_db.get(LogicalSwitch, ls.id)


def test_corrupt_counter_is_reported() -> None:
    db = nbdb.connect("memory://")
    db.allocate_id("c")
    backend = db.backend
    assert isinstance(backend, MemoryBackend)
    backend.store.data["n/c"].value = b"seven"
    with pytest.raises(nbdb.CorruptRecordError):
        db.allocate_id("c")


def test_ids_of_unknown_objects_in_topic_filter_keys() -> None:
    layout = MemoryBackend().layout
    assert layout.object_prefixes(["A"], None) == ["o/"]
    assert layout.object_prefixes(["A", "B"], ["t1", None]) == ["o/t1/A/", "o/t1/B/", "o/~/A/", "o/~/B/"]
    assert layout.object_prefixes([f"T{i}" for i in range(20)], ["t1"]) == ["o/t1/"]
    assert layout.parse_object("o/~/A/" + str(uuid.UUID(int=1))) == (None, "A", uuid.UUID(int=1))
    assert layout.parse_object("i/A/x") is None
