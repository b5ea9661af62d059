"""etcd's --max-txn-ops on a server with its defaults: large commits nest and merge, and stay one commit.

What the conformance kit checks generically (a commit over ``max_txn_ops`` is
refused before the server) is not repeated here; these tests pin down the etcd
specifics: a 100-port create is one transaction and one revision, a watcher
gets it whole, the merged absence checks are as strict as one per key, and the
declared limit is the one the server enforces.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nbdb
from nbdb import errors
from nbdb.conformance.kit import KitNamed, KitNote
from nbdb.events import ChangeEvent, EventKind
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.testing import EtcdServer
from nbdb.testing.fixtures import etcd_server  # noqa: F401

pytest.importorskip("grpc")

from nbdb.backends.etcd import EtcdBackend, wire
from nbdb.families.kv import KeyCommit, VersionIs

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def db(etcd_server: EtcdServer) -> Iterator[nbdb.Database]:  # noqa: F811
    with nbdb.connect(etcd_server.url, namespace="t" + uuid.uuid4().hex[:10]) as db:
        # The harness starts etcd with its defaults: the limit is etcd's own 128.
        assert db.capabilities.max_txn_ops == 128
        yield db


def _backend(db: nbdb.Database) -> EtcdBackend:
    backend = db.backend
    assert isinstance(backend, EtcdBackend)
    return backend


def _ports(switch: LogicalSwitch, prefix: str, count: int, **fields: Any) -> list[LogicalSwitchPort]:
    return [LogicalSwitchPort(switch=switch.id, name=f"{prefix}{i}", **fields) for i in range(count)]


def test_hundred_ports_commit_as_one_transaction_and_one_watch_event_batch(db: nbdb.Database) -> None:
    switch = db.create(LogicalSwitch(name="sw"))
    with db.watch(LogicalSwitchPort) as watch:
        with db.transaction() as txn:
            for port in _ports(switch, "p", 100):
                txn.create(port)
        assert txn.revision is not None
        ports = db.list(LogicalSwitchPort)
        assert sorted(p.name for p in ports) == sorted(f"p{i}" for i in range(100))
        # A transaction is one change in the stream: the first poll that brings any of it brings all of it.
        events: list[ChangeEvent[Any]] = []
        for _ in range(100):
            events = watch.poll(0.5)
            if events:
                break
        assert len(events) == 100
        assert {e.kind for e in events} == {EventKind.CREATED}
        assert {e.revision for e in events} == {txn.revision}
        assert {e.id for e in events} == {p.id for p in ports}
        assert watch.poll(0.3) == []
    # The referencing side too: the switch cannot go while its 100 ports point to it.
    with pytest.raises(nbdb.ReferenceError):
        db.delete(switch)


def test_a_taken_name_fails_the_whole_hundred_port_transaction(db: nbdb.Database) -> None:
    switch = db.create(LogicalSwitch(name="sw"))
    taken = db.create(LogicalSwitchPort(switch=switch.id, name="q57"))
    before = db.backend.current_revision()
    with pytest.raises(errors.UniqueViolationError) as caught:
        with db.transaction() as txn:
            for port in _ports(switch, "q", 100):
                txn.create(port)
    assert caught.value.value == "q57" and caught.value.existing == taken.id
    assert [p.name for p in db.list(LogicalSwitchPort)] == ["q57"]
    assert db.backend.current_revision() == before  # nothing was written


def test_hundred_updates_fit_and_the_limit_is_refused_before_the_server(db: nbdb.Database) -> None:
    switch = db.create(LogicalSwitch(name="sw"))
    made: list[LogicalSwitchPort] = []
    for start in (0, 100):
        with db.transaction() as txn:
            for port in _ports(switch, f"u{start}-", 100):
                txn.create(port)
        made += [step for step in txn.results if isinstance(step, LogicalSwitchPort)]
    with db.transaction() as txn:
        for port in made[:100]:
            txn.update(port.replace(addresses=["router"]))
    assert sum(p.addresses == ["router"] for p in db.list(LogicalSwitchPort)) == 100
    # Each update checks its own version (no merging can hold that): 130 are more than etcd takes.
    before = db.backend.current_revision()
    with pytest.raises(nbdb.ValidationError, match="max_txn_ops"):
        with db.transaction() as txn:
            for port in db.list(LogicalSwitchPort)[:130]:
                txn.update(port.replace(addresses=["unknown"]))
    assert db.backend.current_revision() == before


@pytest.mark.parametrize(("unique_values", "most"), [(0, 63), (1, 42), (2, 31)])
def test_deletes_in_one_transaction_as_docs_say(db: nbdb.Database, unique_values: int, most: int) -> None:
    """docs/backends/etcd.md's numbers: each released unique claim is one compare (its ValueIs) per object."""

    def make(i: int) -> Any:
        if unique_values == 0:
            return KitNote(text=f"n{i}")
        return KitNamed(name=f"n{i}", **({"zone": "z", "slot": i} if unique_values == 2 else {}))

    made = [db.create(make(i)) for i in range(most + 1)]
    before = db.backend.current_revision()
    with pytest.raises(nbdb.ValidationError, match="max_txn_ops"):
        with db.transaction() as txn:
            for obj in made:
                txn.delete(obj)
    assert db.backend.current_revision() == before
    with db.transaction() as txn:
        for obj in made[:most]:
            txn.delete(type(obj), obj.id)  # by id: the same count
    assert len(db.list(type(made[0]))) == 1


def test_merged_absence_checks_fail_on_a_key_created_after_the_read(db: nbdb.Database) -> None:
    backend = _backend(db)
    base = f"{backend.key_prefix}i/Probe/"
    keys = [f"{base}{i:04}" for i in range(0, 400, 2)]  # 200 absent keys of one directory
    commit = KeyCommit([VersionIs(k, 0) for k in keys], {k: b"x" for k in keys}, [])

    def send(compares: list[bytes]) -> bool:
        _, succeeded, _, _ = backend.client.txn(wire.txn_request(*backend._txn_parts(commit, compares)))
        return succeeded

    # An unrelated key already there, updated after the read: creations alone break a merged check.
    backend.commit_keys([], {f"{base}0001": b"old"}, [])
    compares = backend._fitted_compares(commit)
    assert compares is not None and len(compares) < len(keys)
    backend.commit_keys([], {f"{base}0001": b"new"}, [])
    assert send(compares)
    backend.commit_keys([], {}, keys)

    # One of ours created by another writer after the read: the merged check fails, nothing applies.
    compares = backend._fitted_compares(commit)
    assert compares is not None
    backend.commit_keys([], {keys[37]: b"theirs"}, [])
    assert not send(compares)
    stored = backend.get_keys(keys)
    assert [kv.key for kv in stored if kv is not None] == [keys[37]]
    # And the read itself sees a present key: the commit is not sent at all.
    assert backend._fitted_compares(commit) is None
    assert backend.commit_keys(commit.conditions, commit.puts, commit.deletes) is None


def test_the_declared_limit_is_the_servers(db: nbdb.Database) -> None:
    # Past the declared limit the server itself refuses: 129 compares, one level.
    backend = _backend(db)
    compares = [wire.compare(f"{backend.key_prefix}z/{i}".encode(), wire.TARGET_VERSION, wire.CMP_EQUAL, 0)
                for i in range(129)]  # fmt: skip
    with pytest.raises(nbdb.ValidationError):
        backend.client.txn(wire.txn_request(compares, []))

    # A nested transaction counts what its parent leaves: 100 compares and a nested 29 writes are too many.
    def nested(writes: int) -> bytes:
        puts = [wire.request_put(f"{backend.key_prefix}w/{i}".encode(), b"") for i in range(writes)]
        return wire.request_txn(wire.txn_request([], puts))

    with pytest.raises(nbdb.ValidationError):
        backend.client.txn(wire.txn_request(compares[:100], [nested(29)]))
    _, succeeded, _, _ = backend.client.txn(wire.txn_request(compares[:100], [nested(28)]))
    assert succeeded


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(present=st.sets(st.integers(0, 299), max_size=3), deleted=st.sets(st.integers(0, 299), max_size=3))
def test_absence_reads_of_many_chunks_are_as_strict_as_one_check_per_key(
    db: nbdb.Database, present: set[int], deleted: set[int]
) -> None:
    # 300 keys: three read transactions of at most 128 reads, the later ones at the first one's revision.
    backend = _backend(db)
    base = f"{backend.key_prefix}i/Chunks{uuid.uuid4().hex[:8]}/"
    keys = [f"{base}{i:04}" for i in range(300)]
    # Keys created and deleted before the read are absent: only what is there now counts.
    backend.commit_keys([], {keys[i]: b"gone" for i in deleted}, [])
    backend.commit_keys([], {}, [keys[i] for i in deleted])
    backend.commit_keys([], {keys[i]: b"theirs" for i in present}, [])
    before = backend.revision_now()
    revision = backend._absent_at(keys)
    if present:
        assert revision is None
        return
    assert revision is not None and before <= revision <= backend.revision_now()
    # The merged check at that revision holds now, and fails once any of the keys is created.
    commit = KeyCommit([VersionIs(k, 0) for k in keys], {k: b"x" for k in keys}, [])
    compares = backend._fitted_compares(commit)
    assert compares is not None and len(compares) < len(keys)
    backend.commit_keys([], {keys[len(keys) // 2]: b"theirs"}, [])
    _, succeeded, _, _ = backend.client.txn(wire.txn_request(*backend._txn_parts(commit, compares)))
    assert not succeeded
    assert backend._fitted_compares(commit) is None
