"""Following a CorruptRecordError's advice about a unique claim never makes two holders of one value."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import nbdb
from nbdb.api import Database
from nbdb.families.kv import KeyValueBackend
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.spi import UniqueKey
from nbdb.testing.fixtures import shared_server
from nbdb.testing.kvmemory import KVMemoryBackend


@pytest.fixture(scope="module", params=["kvmemory", "sqlite", "redis", "etcd", "hazelcast"])
def kind(request: pytest.FixtureRequest) -> Iterator[tuple[str, str | None]]:
    """The backend kind and, for a server's, its URL (one server for the module)."""
    if request.param in ("kvmemory", "sqlite"):
        yield request.param, None
    else:
        with shared_server(request.param) as server:
            yield request.param, server.url


@pytest.fixture
def db(kind: tuple[str, str | None], tmp_path: Path) -> Iterator[nbdb.Database]:
    name, url = kind
    if name == "kvmemory":
        with Database(KVMemoryBackend()) as database:
            yield database
    elif name == "sqlite":
        with nbdb.connect(f"sqlite:///{tmp_path / 'db.sqlite'}") as database:
            yield database
    else:
        assert url is not None
        with nbdb.connect(url, namespace=uuid.uuid4().hex) as database:
            yield database


def _repair(backend: KeyValueBackend, error: nbdb.CorruptRecordError) -> None:
    """Do what the error says: set the key to the id it names, or delete the key."""
    assert error.key is not None
    message = str(error)
    if named := re.search(r"LogicalSwitchPort ([0-9a-f-]{36}) holds the value: set the key to its id", message):
        assert backend.commit_once([], {error.key: named.group(1).encode()}, []) is not None
    else:
        assert "delete the key" in message, message
        assert backend.commit_once([], {}, [error.key]) is not None


def _repointed(db: nbdb.Database, pointed_at: str) -> tuple[KeyValueBackend, uuid.UUID, LogicalSwitchPort]:
    """Ports "x" (the holder, returned) and "y" on a switch, the claim of "x" pointed at ``pointed_at``
    by another tool: "no object", "an object without the value" (port "y") or "no id"."""
    switch = db.create(LogicalSwitch(name="sw"))
    holder = db.create(LogicalSwitchPort(switch=switch.id, name="x"))
    other = db.create(LogicalSwitchPort(switch=switch.id, name="y"))
    backend = db.backend
    assert isinstance(backend, KeyValueBackend)
    claim = backend.layout.unique(
        "LogicalSwitchPort", UniqueKey("name", LogicalSwitchPort.unique_text(("name",), {"name": "x"}))
    )
    wrong = {"no object": str(uuid.uuid4()), "an object without the value": str(other.id), "no id": "not an id"}
    assert backend.commit_once([], {claim: wrong[pointed_at].encode()}, []) is not None
    return backend, switch.id, holder


@pytest.mark.timeout(60)
@pytest.mark.parametrize("pointed_at", ["no object", "an object without the value"])
def test_following_the_advice_about_a_repointed_claim_keeps_one_holder(db: nbdb.Database, pointed_at: str) -> None:
    # Another tool pointed the claim of "x" away from its holder. The error said "delete the key to free
    # the value" whatever; done, a create of "x" succeeded beside the holder: two ports named "x".
    backend, switch, holder = _repointed(db, pointed_at)
    with pytest.raises(nbdb.CorruptRecordError) as corrupt:
        db.create(LogicalSwitchPort(switch=switch, name="x"))
    _repair(backend, corrupt.value)
    with pytest.raises(nbdb.UniqueViolationError) as taken:
        db.create(LogicalSwitchPort(switch=switch, name="x"))
    assert taken.value.existing == holder.id
    assert [p.id for p in db.list(LogicalSwitchPort) if p.name == "x"] == [holder.id]


@pytest.mark.timeout(60)
def test_a_claim_no_object_holds_is_still_freed_by_deleting_the_key(db: nbdb.Database) -> None:
    switch = db.create(LogicalSwitch(name="sw"))
    backend = db.backend
    assert isinstance(backend, KeyValueBackend)
    claim = backend.layout.unique(
        "LogicalSwitchPort", UniqueKey("name", LogicalSwitchPort.unique_text(("name",), {"name": "x"}))
    )
    assert backend.commit_once([], {claim: str(uuid.uuid4()).encode()}, []) is not None
    with pytest.raises(nbdb.CorruptRecordError, match="no LogicalSwitchPort holds the value") as corrupt:
        db.create(LogicalSwitchPort(switch=switch.id, name="x"))
    _repair(backend, corrupt.value)
    created = db.create(LogicalSwitchPort(switch=switch.id, name="x"))
    assert [p.id for p in db.list(LogicalSwitchPort) if p.name == "x"] == [created.id]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("pointed_at", ["no object", "an object without the value", "no id"])
@pytest.mark.parametrize("release", ["delete", "rename"])
def test_following_the_advice_about_a_repointed_claim_a_write_releases_lets_it_go(
    db: nbdb.Database, pointed_at: str, release: str
) -> None:
    # The release's refusal (kvplan.vet_released) worded the rule of a claim found wrong apart, with weaker
    # advice than a create's: "set the key to the id of the one that holds the value, the one written if no
    # other one holds it", the holder never named. It names it now, as a create's refusal does.
    backend, switch, holder = _repointed(db, pointed_at)
    write = (lambda: db.delete(holder)) if release == "delete" else (lambda: db.update(holder.replace(name="z")))
    with pytest.raises(nbdb.CorruptRecordError, match="which this write releases") as corrupt:
        write()
    assert f"LogicalSwitchPort {holder.id} holds the value: set the key to its id" in str(corrupt.value)
    _repair(backend, corrupt.value)
    write()
    created = db.create(LogicalSwitchPort(switch=switch, name="x"))  # freed by the write
    assert [p.id for p in db.list(LogicalSwitchPort) if p.name == "x"] == [created.id]
