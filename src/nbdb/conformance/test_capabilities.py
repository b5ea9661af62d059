"""The backend's declaration is complete, and the claims that can be probed hold."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

import nbdb
from nbdb.capabilities import Atomicity, Durability
from nbdb.conformance.kit import KitNote, KitParent, check_namespaces_isolate_locks, eventually
from nbdb.families.kv import KeyValueBackend

pytestmark = [pytest.mark.nbdb_kit, pytest.mark.timeout(60)]


def test_capabilities_are_declared(capabilities: nbdb.Capabilities) -> None:
    assert isinstance(capabilities.transactions, Atomicity)
    assert isinstance(capabilities.durability, Durability)
    assert capabilities.history, "say how far back watch(since=...) can resume"
    assert set(capabilities.as_dict()) >= {"transactions", "durability", "history", "linearizable_reads"}


def test_linearizable_reads_when_claimed(db_factory: Callable[..., nbdb.Database]) -> None:
    writer, reader = db_factory(), db_factory()
    obj = writer.create(KitParent(name="a"))
    for i in range(20):
        obj = writer.update(obj.replace(size=i))
        if writer.capabilities.linearizable_reads:
            assert reader.get(KitParent, obj.id).version == obj.version
    assert eventually(lambda: reader.get(KitParent, obj.id).version == obj.version)


def test_cross_process_clients_share_data(db_factory: Callable[..., nbdb.Database]) -> None:
    a, b = db_factory(), db_factory()
    obj = a.create(KitParent(name="shared"))
    assert eventually(lambda: any(p.id == obj.id for p in b.list(KitParent)))


def test_namespaces_isolate(nbdb_url: str) -> None:
    with nbdb.connect(nbdb_url, namespace="kit-iso-a") as a, nbdb.connect(nbdb_url, namespace="kit-iso-b") as b:
        obj = a.create(KitParent(name="only-in-a"))
        leak = (
            "an object created in namespace kit-iso-a is {} namespace kit-iso-b: from_url must honour namespace= "
            "(a key-value backend passes key_prefix=f'{{namespace}}/' to KeyValueBackend.__init__)"
        )
        assert all(p.id != obj.id for p in b.list(KitParent)), leak.format("listed in")
        with pytest.raises(nbdb.NotFoundError):
            b.get(KitParent, obj.id)
            pytest.fail(leak.format("read from"))
        a.delete(obj)


def test_a_lock_name_is_one_lock_per_namespace(nbdb_url: str) -> None:
    """A lock name means one lock per namespace: a backend that keeps leases outside its key prefix shares them."""
    run = uuid.uuid4().hex[:8]
    with (
        nbdb.connect(nbdb_url, namespace=f"kit-iso-a-{run}") as a,
        nbdb.connect(nbdb_url, namespace=f"kit-iso-b-{run}") as b,
    ):
        if not a.capabilities.locks:
            pytest.skip("backend declares no locks")
        check_namespaces_isolate_locks(a, b)


def test_topic_wildcard_is_declared_truly(db: nbdb.Database) -> None:
    """A key-value backend declaring ``topic_wildcard`` reads ``o/*/<table>/`` as that table under every topic.

    One that reads the prefix as it is finds no key there (``*`` is no topic's spelling): every list of a
    table with no topic filter is then empty, which the tests of lists report far from the declaration.
    """
    backend = db.backend
    if not isinstance(backend, KeyValueBackend) or not backend.topic_wildcard:
        return  # nothing declared: such scans read o/ whole
    made = {db.create(KitParent(name=f"wild-{topic}", topic=topic)).id for topic in (None, "kit-wa", "kit-wb")}
    db.create(KitNote(text="another table", topic="kit-wa"))
    prefixes = backend.layout.object_prefixes([KitParent.nbdb_table], None, any_topic=True)
    for read in (backend.range_keys, backend.range_rows):
        rows = read(prefixes)[0]
        found = [parsed for row in rows if (parsed := backend.layout.parse_object(row[0])) is not None]
        ids = {id for _, table, id in found if table == KitParent.nbdb_table}
        assert ids == made and all(table == KitParent.nbdb_table for _, table, _ in found), (
            f"{type(backend).__name__} declares topic_wildcard = True, but {read.__name__}({prefixes!r}) returned "
            f"{len(ids & made)} of the {len(made)} {KitParent.nbdb_table} objects (one without a topic, two in topics)"
            f"{' and keys of other tables' if any(t != KitParent.nbdb_table for _, t, _ in found) else ''}: "
            "spell each o/*/<table>/ prefix out as o/<topic>/<table>/ for every topic present (see "
            "nbdb.families.kvplan.ANY_TOPIC), or declare topic_wildcard = False"
        )
