"""References between two clients on a real ovsdb-server, with the plan and replica keyed by the id's int.

The OVSDB family keys its commit plan, its replica's ``refs``/``referrers`` and ``settle`` by
``(table, id.int)`` (a ``uuid.UUID`` hashes in Python): a lookup left keyed by the UUID would
miss silently (a reference check skipped, a delete allowed while referenced, a stale referrer).
Two Databases, each with its own replica, write the same objects here, so every lookup meets ids
that are other ``uuid.UUID`` objects than those its keys were made from.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import nbdb
from nbdb.conformance.kit import eventually
from nbdb.families.ovsdb.datum import default_cell
from nbdb.families.ovsdb.planner import _defaults
from nbdb.models import LogicalSwitch, LogicalSwitchPort, PortGroup
from nbdb.testing.ovsdb import OvsdbServer
from nbdb.testing.probes import run_tool
from nbdb.testing.process import find_binary

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server() -> Iterator[OvsdbServer]:
    with OvsdbServer() as srv:
        yield srv


@pytest.fixture
def pair(server: OvsdbServer) -> Iterator[tuple[nbdb.Database, nbdb.Database]]:
    namespace = f"t{uuid.uuid4().hex[:10]}"
    with nbdb.connect(server.url, namespace=namespace) as a, nbdb.connect(server.url, namespace=namespace) as b:
        yield a, b


def _referrers(db: nbdb.Database, table: str, id: uuid.UUID) -> list[tuple[str, uuid.UUID]]:
    return list(db.backend.referrers(table, uuid.UUID(str(id))))  # another UUID object than any key's


def test_references_hold_across_two_clients_moves_deletes_and_a_re_create(
    pair: tuple[nbdb.Database, nbdb.Database],
) -> None:
    a, b = pair
    lsp, ls, pg = LogicalSwitchPort.nbdb_table, LogicalSwitch.nbdb_table, PortGroup.nbdb_table
    s1, s2 = a.create(LogicalSwitch(name="s1")), a.create(LogicalSwitch(name="s2"))
    port = a.create(LogicalSwitchPort(switch=s1.id, name=f"p-{s1.id}"))
    extra = a.create(LogicalSwitchPort(switch=s1.id, name=f"x-{s1.id}"))
    group = a.create(PortGroup(name=f"g-{s1.id}", ports=[port.id, extra.id]))
    assert eventually(lambda: _referrers(b, lsp, port.id) == [(pg, group.id)], timeout=10)
    assert eventually(lambda: _referrers(b, lsp, extra.id) == [(pg, group.id)], timeout=10)

    # The other client deletes a port a port group holds (a weak reference): the group drops it.
    b.delete(b.get(LogicalSwitchPort, extra.id))
    for db in (a, b):
        assert eventually(lambda db=db: db.get(PortGroup, group.id).ports == [port.id], timeout=10)
        assert _referrers(db, lsp, extra.id) == []
    with pytest.raises(nbdb.ReferenceError, match=str(port.id)):
        b.delete(b.get(LogicalSwitch, s1.id))  # its port (a child) is still there

    # An update keeping its parent (the planner reuses the replica's parent id), then the other
    # client moves the port: each replica follows the move, no stale referrer is left behind.
    port = a.update(port.replace(addresses=["0a:00:00:00:00:01"]))
    assert eventually(lambda: b.get(LogicalSwitchPort, port.id) == port, timeout=10)
    moved = b.update(b.get(LogicalSwitchPort, port.id).replace(switch=s2.id))
    for db in (a, b):
        assert eventually(lambda db=db: db.get(LogicalSwitchPort, port.id) == moved, timeout=10)
        assert eventually(lambda db=db: _referrers(db, ls, s1.id) == [], timeout=10)
        assert _referrers(db, ls, s2.id) == [(lsp, port.id)]
    kept = a.update(moved.replace(addresses=[]))  # back to the column's default: the shared default cell
    assert eventually(lambda: b.get(LogicalSwitchPort, port.id) == kept, timeout=10)
    assert a.get(LogicalSwitchPort, port.id).switch == s2.id
    b.delete(b.get(LogicalSwitch, s1.id))  # nothing in it any more

    # The holder goes (other client); the port can go now, and the group comes back with the same id.
    b.delete(b.get(PortGroup, group.id))
    assert eventually(lambda: _referrers(a, lsp, port.id) == [], timeout=10)
    other = a.create(LogicalSwitchPort(switch=s2.id, name=f"q-{s1.id}"))
    a.delete(a.get(LogicalSwitchPort, port.id))
    again = b.create(PortGroup(id=group.id, name=f"g-{s1.id}", ports=[other.id]))
    for db in (a, b):
        assert eventually(lambda db=db: _referrers(db, lsp, other.id) == [(pg, again.id)], timeout=10)
        assert _referrers(db, lsp, port.id) == []
        assert _referrers(db, ls, s2.id) == [(lsp, other.id)]
    with pytest.raises(nbdb.ReferenceError, match="does not exist"):
        a.update(a.get(PortGroup, group.id).replace(ports=[other.id, port.id]))  # the deleted port

    # The default cells every update compared with are as made: nobody changed them.
    for tm in a.backend.mapping.tables.values():  # type: ignore[attr-defined]
        assert _defaults(tm) == tuple((cm.column, default_cell(cm.type), cm) for cm in tm.columns.values())


def test_the_servers_own_drop_of_a_weak_reference_reaches_nbdb_at_the_deletes_revision(
    server: OvsdbServer, pair: tuple[nbdb.Database, nbdb.Database]
) -> None:
    """Another client (ovn-nbctl) deletes a port a group holds: ovsdb-server drops it from the group.

    nbdb plans the same drop for its own deletes; here the server did it, and nbdb's replica and
    watch follow it: the group's update and the port's delete at one revision, no referrer left.
    """
    a, b = pair
    switch = a.create(LogicalSwitch(name=f"s-{uuid.uuid4().hex[:8]}"))
    port, kept = (a.create(LogicalSwitchPort(switch=switch.id, name=f"{n}-{switch.id}")) for n in ("p", "k"))
    group = a.create(PortGroup(name=f"g-{switch.id}", ports=[port.id, kept.id]))
    with b.watch([PortGroup, LogicalSwitchPort]) as watch:
        assert eventually(lambda: sorted(b.get(PortGroup, group.id).ports) == sorted([port.id, kept.id]), timeout=10)
        watch.poll(0.2)
        argv = [str(find_binary("ovn-nbctl")), f"--db={server.remotes}", "--timeout=10", "lsp-del", port.name]
        run_tool(argv, timeout=20)
        events: list[nbdb.ChangeEvent[Any]] = []
        deadline = time.monotonic() + 15
        while len(events) < 2 and time.monotonic() < deadline:
            events += watch.poll(0.2)
    assert {(e.kind, e.model, e.id) for e in events} == {
        (nbdb.EventKind.UPDATED, PortGroup, group.id),
        (nbdb.EventKind.DELETED, LogicalSwitchPort, port.id),
    }, events
    assert len({e.revision for e in events}) == 1, events
    for db in (a, b):
        assert eventually(lambda db=db: db.get(PortGroup, group.id).ports == [kept.id], timeout=10)
        assert _referrers(db, LogicalSwitchPort.nbdb_table, port.id) == []
    b.delete(b.get(LogicalSwitchPort, kept.id))  # nbdb's own plan: the same drop, in one commit with the server
    assert a.get(PortGroup, group.id).ports == [] or eventually(lambda: a.get(PortGroup, group.id).ports == [])


@pytest.fixture(scope="module")
def models_server() -> Iterator[OvsdbServer]:
    import nbdb.conformance.kit  # noqa: F401  (the kit's models belong in the model schema)

    with OvsdbServer(model_schema=True) as srv:
        yield srv


def test_a_delete_alongside_a_native_mutation_of_a_referrer_is_refused(models_server: OvsdbServer) -> None:
    """A referrer kept as JSON text (KitGroup.members) is checked against the replica: a commit that
    deletes its target and mutates it natively (external_ids) must still count the references it
    keeps, looked up by the referrer's (table, id.int) in the replica's ``refs``."""
    from nbdb.conformance.kit import KitChild, KitGroup, KitParent

    with nbdb.connect(models_server.url, namespace=f"t{uuid.uuid4().hex[:10]}") as db:
        parent = db.create(KitParent(name="p"))
        child = db.create(KitChild(parent=parent.id, name="c"))
        group = db.create(KitGroup(members=[child.id]))
        with pytest.raises(nbdb.ReferenceError, match=str(group.id)):
            with db.transaction() as tx:
                tx.mutate(group, add={"external_ids": {"k": "v"}})
                tx.delete(child)
        assert db.get(KitChild, child.id) == child
        assert db.get(KitGroup, group.id).members == [child.id]


def test_a_table_referring_by_a_column_and_by_json_text_has_both_checked_at_a_delete(
    models_server: OvsdbServer,
) -> None:
    """KitWeakGroup points to KitChild twice: ``pinned`` is a uuid column (checked by a wait), ``members``
    JSON text (checked against the replica). The wait marked the whole table checked, so a child held
    only in ``members`` was deleted under it: the store's own delete left the group's reference dangling."""
    from nbdb.conformance.kit import KitChild, KitParent, KitWeakGroup
    from nbdb.writes import delete_of

    with nbdb.connect(models_server.url, namespace=f"t{uuid.uuid4().hex[:10]}") as db:
        parent = db.create(KitParent(name="p"))
        child = db.create(KitChild(parent=parent.id, name="c"))
        group = db.create(KitWeakGroup(members=[child.id]))
        assert dict(db.backend.mapping.get("KitWeakGroup").refs) == {
            "members": ("KitChild", "ext"),
            "pinned": ("KitChild", "column"),
        }
        with pytest.raises(nbdb.ReferenceError, match=str(group.id)):
            db.backend.commit([delete_of(child)])
        assert db.get(KitChild, child.id) == child
        # Through the API the weak reference is dropped in the delete's commit instead.
        db.delete(child)
        assert db.get(KitWeakGroup, group.id).members == []
