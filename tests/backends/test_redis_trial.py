"""Redis backend as a controller author meets it: records another writer damaged under nbdb.

Each test spawns a real ``redis-server`` (the harness's fixture) and damages one record with a plain
redis-py client, as another program sharing the database would.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

import nbdb
from nbdb import errors
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.testing.fixtures import redis_server  # noqa: F401 - pytest fixture
from nbdb.testing.redis import RedisServer

from .test_redis_hostile import _raw_client, root_of

redis = pytest.importorskip("redis")


class Store(NamedTuple):
    db: nbdb.Database
    client: Any  # a plain redis-py client on the same database: another writer
    root: str


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[Store]:  # noqa: F811 - the fixture
    with (
        nbdb.connect(redis_server.url, namespace=f"t-{uuid.uuid4().hex[:10]}", retries=1) as db,
        _raw_client(db) as raw,
    ):
        yield Store(db, raw, root_of(db))


_DAMAGE = {
    "topic of another": lambda raw, key: raw.hset(key, "ot", b"elsewhere"),
    "topic deleted": lambda raw, key: raw.hdel(key, "ot"),
    "object version deleted": lambda raw, key: raw.hdel(key, "on"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("damage", sorted(_DAMAGE))
@pytest.mark.parametrize("op", ["update", "delete", "txn update"])
def test_a_write_of_an_object_whose_hash_another_writer_damaged_is_corrupt_record_not_not_found(
    store: Store,
    damage: str,
    op: str,
) -> None:
    """An object whose hash no longer answers for the place its index names is reported as a get
    reports it, CorruptRecordError; a write of it said NotFoundError ("deleted concurrently?"), so a
    controller took the object for gone while its index, unique names and references stayed."""
    db, client, root = store
    switch = db.create(LogicalSwitch(name="sw"))
    port = db.create(LogicalSwitchPort(name="p", switch=switch.id))
    _DAMAGE[damage](client, f"{root}k:i/LogicalSwitchPort/{port.id}")
    with pytest.raises(errors.CorruptRecordError):
        db.get(LogicalSwitchPort, port.id)
    with pytest.raises(errors.CorruptRecordError):
        if op == "update":
            db.update(port.replace(addresses=["dynamic"]))
        elif op == "delete":
            db.delete(port)
        else:
            with db.transaction() as txn:
                txn.update(port.replace(addresses=["dynamic"]))
    other = db.create(LogicalSwitchPort(name="q", switch=switch.id))  # the rest of the store writes on
    assert db.update(other.replace(addresses=["dynamic"])).version == 2


@pytest.mark.timeout(60)
@pytest.mark.parametrize("version", [2**53, 2**53 + 1, 2**63 - 1])
def test_an_object_version_another_writer_set_past_what_lua_holds_exactly_is_corrupt_record(
    store: Store,
    version: int,
) -> None:
    """The commit script compares and bumps versions as Lua numbers (doubles): from 2^53 an update
    passed its check and stored the same version again (returning the next one to the caller), so a
    second writer of the same copy overwrote the first without a ConflictError. Such a version is
    refused as damaged, on a get and on a write, and the rest of the store is served."""
    db, client, root = store
    switch = db.create(LogicalSwitch(name="sw"))
    client.hset(f"{root}k:i/LogicalSwitch/{switch.id}", "on", str(version))
    with pytest.raises(errors.CorruptRecordError):
        db.get(LogicalSwitch, switch.id)
    with pytest.raises(errors.CorruptRecordError):
        db.update(switch.replace(version=version, external_ids={"by": "a"}))
    with pytest.raises(errors.CorruptRecordError):
        db.update(switch.replace(version=version, external_ids={"by": "b"}))
    with pytest.raises(errors.CorruptRecordError), db.transaction() as txn:
        txn.update(switch.replace(version=version, external_ids={"by": "c"}))
    with pytest.raises(errors.CorruptRecordError):
        db.delete(switch.replace(version=version))
    other = db.create(LogicalSwitch(name="sw2"))
    assert db.update(other.replace(external_ids={"k": "v"})).version == 2


@pytest.mark.timeout(60)
def test_the_last_exact_version_is_bumped_and_then_refused(store: Store) -> None:
    """2^53 - 1 is still a version: its update stores 2^53, which no later write can bump."""
    db, client, root = store
    switch = db.create(LogicalSwitch(name="sw"))
    client.hset(f"{root}k:i/LogicalSwitch/{switch.id}", "on", str(2**53 - 1))
    read = db.get(LogicalSwitch, switch.id)
    assert read.version == 2**53 - 1
    assert db.update(read.replace(external_ids={"k": "v"})).version == 2**53
    with pytest.raises(errors.CorruptRecordError):
        db.get(LogicalSwitch, switch.id)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("counter", ["abc", "3.5", str(2**63 - 1), str(2**53 - 1), str(2**53 + 1), str(2**62)])
@pytest.mark.parametrize("op", ["create", "update", "delete", "txn"])
def test_a_revision_counter_another_writer_damaged_fails_commits_as_corrupt_record_with_nothing_written(
    store: Store,
    counter: str,
    op: str,
) -> None:
    """``INCR rev`` refused (text, a fraction, 2^63 - 1): the commit's first write, so nothing was written.
    It was BackendUnavailableError, which a controller retries for ever as an outage; it is
    CorruptRecordError, and the commit applies once the counter is repaired. A counter that reaches
    2^53 or more was rounded by the script's Lua numbers (doubles): commits applied at a revision
    not their own; it is refused the same way (the counter given back)."""
    db, client, root = store
    switch = db.create(LogicalSwitch(name="sw"))
    rev_key = f"{root}rev"
    good = client.get(rev_key)
    client.set(rev_key, counter)
    before = db.list(LogicalSwitch)

    def commit() -> None:
        if op == "create":
            db.create(LogicalSwitch(name="new"))
        elif op == "update":
            db.update(switch.replace(external_ids={"k": "v"}))
        elif op == "delete":
            db.delete(switch)
        else:
            with db.transaction() as txn:
                txn.create(LogicalSwitch(name="new"))
                txn.update(switch.replace(external_ids={"k": "v"}))

    with pytest.raises(errors.CorruptRecordError):
        commit()
    assert db.list(LogicalSwitch) == before
    assert client.get(rev_key) == counter.encode()
    client.set(rev_key, good)
    commit()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("damage", ["no expiry", "wrong type"])
def test_a_lock_key_another_writer_left_that_never_expires_is_corrupt_record_at_acquire(
    store: Store, damage: str
) -> None:
    """A lease key another writer set without an expiry blocked the lock for ever: every take waited for it
    and ended in LockTimeoutError. It is damage, as a lease key of the wrong type is: CorruptRecordError naming
    the key, at once; the lock is free once the key is deleted, and a live holder's key still makes a take wait."""
    db, client, _ = store
    backend = db.backend
    key = backend._lease_key("leader")  # type: ignore[attr-defined]  # nbdb's own layout, as another writer would find it
    if damage == "no expiry":
        client.set(key, b"another writer")
    else:
        client.hset(key, "holder", b"another writer")
    with pytest.raises(errors.CorruptRecordError) as damaged:
        with db.lock("leader", ttl=5, timeout=2):
            pass
    assert key in str(damaged.value)
    client.delete(key)
    with db.lock("leader", ttl=5, timeout=2) as held:
        assert not held.lost
        with pytest.raises(errors.LockTimeoutError):
            with db.backend.lock("leader", 5, 0.3):
                pass


def test_a_fence_on_a_lock_of_another_namespace_is_refused_without_losing_that_lock(
    redis_server: RedisServer,  # noqa: F811 - the fixture
) -> None:
    """The store of the write holds no such lease, so it refuses the fenced write (LockLostError); the handle
    was marked lost for it, though its own store still held it: its keeper renewed a lock that said lost, and
    the with block's end skipped the release, so the next taker waited out the whole ttl."""
    with (
        nbdb.connect(redis_server.url, namespace=f"w-{uuid.uuid4().hex[:10]}") as writes,
        nbdb.connect(redis_server.url, namespace=f"c-{uuid.uuid4().hex[:10]}") as locks,
    ):
        switch = writes.create(LogicalSwitch(name="s"))
        with locks.lock("leader", ttl=30) as held:
            with pytest.raises(errors.LockLostError):
                writes.update(switch.replace(name="t"), fence=held)
            assert not held.lost
        with locks.lock("leader", ttl=30, timeout=5):  # given back at the block's end: taken at once
            pass
        assert writes.get(LogicalSwitch, switch.id) == switch
