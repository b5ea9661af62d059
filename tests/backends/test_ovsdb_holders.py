"""A refused delete weighed by the rows that really hold its target on a real ovsdb-server.

Another client (ovn-nbctl, a raw transaction) can put a port in a second switch's ``ports`` (a strong
reference the model cannot express: a port has one switch), and another namespace's port group can hold a
port of the default namespace weakly. Each delete here counts the commits it sends to the server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import nbdb
from nbdb.conformance.kit import eventually
from nbdb.models import LogicalSwitch, LogicalSwitchPort, PortGroup
from nbdb.testing.ovsdb import OvsdbServer

from .conftest import ovsdb_transact
from .test_ovsdb import _sent_deletes

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server() -> Iterator[OvsdbServer]:
    with OvsdbServer() as srv:
        yield srv


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def _foreign_switch_holding(server: OvsdbServer, port: LogicalSwitchPort) -> uuid.UUID:
    """A switch another client (no nbdb namespace: ovn-nbctl's) inserts with ``port`` in its ``ports``."""
    row = {"name": _name("raw-"), "ports": ["set", [["uuid", str(port.id)]]]}
    inserted = ovsdb_transact(server.leader().address, [{"op": "insert", "table": "Logical_Switch", "row": row}])
    return uuid.UUID(inserted[0]["uuid"][1])


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("in_transaction", [False, True])
def test_a_port_another_clients_switch_also_holds_is_refused_naming_that_switch_after_one_commit(
    server: OvsdbServer, grouped: bool, in_transaction: bool
) -> None:
    # The server refused the delete with its own referential-integrity error (``cannot delete
    # Logical_Switch_Port row``): nbdb's error carried no referrers, so the delete (or the transaction)
    # planned again and was refused again: 2 commits, 3 with a port group holding the port weakly. Its
    # message named every switch whose set held the port, the port's own (which the refused commit itself
    # takes it out of) first. The other switch is a holder no plan of this Database can drop: it stands.
    with nbdb.connect(server.url, namespace=_name("t")) as db:
        own = db.create(LogicalSwitch(name=_name("sw-")))
        port = db.create(LogicalSwitchPort(switch=own.id, name=_name("p-")))
        group = db.create(PortGroup(name=_name("pg"), ports=[port.id])) if grouped else None
        other = _foreign_switch_holding(server, port)
        sent = _sent_deletes(db)
        with pytest.raises(nbdb.ReferenceError) as refused:
            if in_transaction:
                with db.transaction() as txn:
                    txn.delete(port)
            else:
                db.delete(port)
        assert len(sent) == 1, sent
        held = (LogicalSwitch.nbdb_table, other)
        assert refused.value.target == (LogicalSwitchPort.nbdb_table, port.id)
        # Every holder (its own group too, which the walk would drop), the other switch as one it cannot drop.
        named = {held} if group is None else {held, (PortGroup.nbdb_table, group.id)}
        assert set(refused.value.referrers or ()) == named and refused.value.unseen == (held,)
        assert refused.value.undroppable == (held,)  # (and a second parent's set: no plan drops it)
        assert str(other) in str(refused.value) and str(own.id) not in str(refused.value), refused.value
        assert db.get(LogicalSwitchPort, port.id) == port and db.get(LogicalSwitch, own.id) == own
        if group is not None:
            assert db.get(PortGroup, group.id) == group


def test_a_default_namespaces_port_held_by_its_group_and_another_namespaces_commits_twice(
    server: OvsdbServer,
) -> None:
    # A Database without a namespace expects the other namespaces' weak holders its replica shows only once a
    # commit was refused for them, and that expectation lasted one family commit: the delete sent alone was
    # refused for theirs, then (expecting theirs) for its own group; the walk's plan dropping its own group
    # started without the expectation, refused for theirs again, then committed: 4 commits. The expectation
    # survives into the walk's commit, and a refusal for its own group too is not sent again first: 2.
    with nbdb.connect(server.url) as db, nbdb.connect(server.url, namespace=_name("t")) as other:
        sw = db.create(LogicalSwitch(name=_name("sw-")))
        for in_transaction in (False, True):
            port = db.create(LogicalSwitchPort(switch=sw, name=_name("p-")))
            mine = db.create(PortGroup(name=_name("pm"), ports=[port.id]))
            theirs = other.create(PortGroup(name=_name("po"), ports=[port.id]))
            rows = db.backend.replica.rows_of  # type: ignore[attr-defined]
            assert eventually(lambda t=theirs, r=rows: t.id.int in r("OVN_Northbound", "Port_Group"), timeout=10)
            db._context.delete_order.clear()  # (each goes alone first, as a Database's first delete of a port)
            sent = _sent_deletes(db)
            if in_transaction:
                with db.transaction() as txn:
                    txn.delete(port)
            else:
                db.delete(port)
            assert len(sent) == 2, (in_transaction, sent)
            with pytest.raises(nbdb.NotFoundError):
                db.get(LogicalSwitchPort, port.id)
            assert db.get(PortGroup, mine.id).ports == []
            assert eventually(lambda t=theirs: other.get(PortGroup, t.id).ports == [], timeout=10)


def test_a_default_transactions_delete_refused_by_a_group_added_and_dropped_before_the_sync_commits(
    server: OvsdbServer,
) -> None:
    # Another namespace's group holding the port, added after the rows expected were read and dropped again
    # before the refusal read them: the wait failed for it, the rows read after the refusal (synced too) were
    # those expected, and the diagnosis named nobody: the transaction's ReferenceError stood, the port kept.
    # Unexplained by the synced replica (no holder of its own, the others as expected), the commit is planned
    # again (bounded, as a change of the others' rows).
    # The refusal is read once db's replica shows the group gone: read while it still showed it (its update
    # behind other's delete, as on a loaded machine), the group explained the refusal, and the delete planned
    # again expecting it was refused once more, for its absence: a third commit, rightly (a change meanwhile).
    with nbdb.connect(server.url) as db, nbdb.connect(server.url, namespace=_name("t")) as other:
        sw = db.create(LogicalSwitch(name=_name("sw-")))
        port = db.create(LogicalSwitchPort(switch=sw, name=_name("p-")))
        passing: list[PortGroup] = []
        backend: Any = db.backend
        real = backend._grouped

        def shown(group: PortGroup) -> bool:
            return group.id.int in backend.replica.rows_of("OVN_Northbound", "Port_Group")

        def grouped(database: str, ops: list[Any], *args: Any) -> Any:
            deletes = any(op.get("op") == "delete" for op in ops)
            if deletes and not passing:
                passing.append(other.create(PortGroup(name=_name("pp"), ports=[port.id])))
            result = real(database, ops, *args)
            if deletes and len(passing) == 1:
                group = passing[0]
                assert eventually(lambda: shown(group), timeout=10)  # (its insert before its delete, in order)
                other.delete(group)  # (the reply came: dropped before the refusal is read)
                assert eventually(lambda: not shown(group), timeout=10)
                passing.append(group)
            return result

        backend.__dict__["_grouped"] = grouped
        sent = _sent_deletes(db)
        with db.transaction() as txn:
            txn.delete(port)
        assert len(passing) == 2 and len(sent) == 2, sent  # refused for the passing group; committed
        with pytest.raises(nbdb.NotFoundError):
            db.get(LogicalSwitchPort, port.id)


def test_another_namespaces_group_changing_its_other_ports_meanwhile_costs_no_commit(server: OvsdbServer) -> None:
    # The wait expecting the other namespaces' holders compares their rows' ids only, not the column: another
    # port added to their group between the read and the commit leaves the holders the same (the server drops
    # only the deleted port from it), and the commit planned expecting them lands: 2 commits, not a third.
    from .test_ovsdb import _made_after_each_read

    with nbdb.connect(server.url) as db, nbdb.connect(server.url, namespace=_name("t")) as other:
        sw = db.create(LogicalSwitch(name=_name("sw-")))
        port, kept = (db.create(LogicalSwitchPort(switch=sw, name=_name("p-"))) for _ in range(2))
        theirs = other.create(PortGroup(name=_name("po"), ports=[port.id]))
        rows = db.backend.replica.rows_of  # type: ignore[attr-defined]
        assert eventually(lambda: theirs.id.int in rows("OVN_Northbound", "Port_Group"), timeout=10)
        sent = _sent_deletes(db)

        def grow() -> PortGroup:
            return other.update(other.get(PortGroup, theirs.id).replace(ports=[port.id, kept.id]))

        with _made_after_each_read(grow, 1) as made:
            db.delete(port)
        assert len(made) == 1 and len(sent) == 2, sent  # alone, refused for theirs; expecting theirs: committed
        assert eventually(lambda: other.get(PortGroup, theirs.id).ports == [kept.id], timeout=10)


@pytest.mark.parametrize("namespace", ["", "t"])
@pytest.mark.parametrize("in_transaction", [False, True])
def test_a_port_moved_to_another_switch_before_its_delete_lands_is_deleted_not_refused(
    server: OvsdbServer, in_transaction: bool, namespace: str
) -> None:
    # Another client (a raw transaction, as ovn-nbctl's: the port's own row unchanged, so the delete's wait on
    # it passes) moves the port from switch A to switch C after the delete was planned from a replica that
    # still showed A: the plan takes it out of A (a no-op on the server) and the server refuses the delete for
    # C. C is the port's only switch by then, its own parent, not a second one (no switch the plan releases
    # holds the port still): planned again from the synced replica (which shows C) the delete commits, as
    # semantics.md says of a referrer another writer moved the target to. (Weighed with what the stale plan
    # released, C was named a second parent and the refusal stood; a transaction's was refused before that.)
    ns = _name(namespace) if namespace else None
    with nbdb.connect(server.url, namespace=ns) as db:
        own = db.create(LogicalSwitch(name=_name("sw-")))
        moved_to = db.create(LogicalSwitch(name=_name("sw-")))
        port = db.create(LogicalSwitchPort(switch=own.id, name=_name("p-")))
        backend: Any = db.backend
        real = backend._grouped
        moves: list[Any] = []
        member = ["set", [["uuid", str(port.id)]]]
        move = [
            {"op": "mutate", "table": "Logical_Switch", "where": [["_uuid", "==", ["uuid", str(sw)]]],
             "mutations": [["ports", how, member]]}
            for sw, how in ((own.id, "delete"), (moved_to.id, "insert"))
        ]  # fmt: skip

        def grouped(database: str, ops: list[Any], *args: Any) -> Any:
            if any(op.get("op") == "delete" for op in ops) and not moves:
                moves.append(ovsdb_transact(server.leader().address, move))  # (after the plan, before it lands)
            return real(database, ops, *args)

        backend.__dict__["_grouped"] = grouped
        if in_transaction:
            with db.transaction() as txn:
                txn.delete((LogicalSwitchPort, port.id))
        else:
            db.delete(LogicalSwitchPort, port.id)
        assert moves
        with pytest.raises(nbdb.NotFoundError):
            db.get(LogicalSwitchPort, port.id)


def test_a_second_parent_the_database_reads_is_not_named_as_one_it_cannot_read(
    server: OvsdbServer,
) -> None:
    # A second parent the Database reads (its own switch, made by it, which a raw client put the port in too)
    # is named as one no plan can drop (``undroppable``), not as one it cannot read (``unseen``, which said
    # "this Database cannot read: another namespace's or client's" of it); the refusal stands all the same.
    with nbdb.connect(server.url, namespace=_name("t")) as db:
        own = db.create(LogicalSwitch(name=_name("sw-")))
        second = db.create(LogicalSwitch(name=_name("sw-")))
        port = db.create(LogicalSwitchPort(switch=own.id, name=_name("p-")))
        where = [["_uuid", "==", ["uuid", str(second.id)]]]
        mutations = [["ports", "insert", ["set", [["uuid", str(port.id)]]]]]
        ovsdb_transact(
            server.leader().address,
            [{"op": "mutate", "table": "Logical_Switch", "where": where, "mutations": mutations}],
        )
        assert eventually(lambda: db.backend.replica.record(LogicalSwitch.nbdb_table, second.id) is not None)  # type: ignore[attr-defined]
        with pytest.raises(nbdb.ReferenceError) as refused:
            db.delete(LogicalSwitchPort, port.id)
        assert db.get(LogicalSwitch, second.id).id == second.id  # it reads it
        assert str(second.id) in str(refused.value)
        assert "cannot read" not in str(refused.value), refused.value
        assert "cannot be dropped by any plan" in str(refused.value), refused.value
        assert refused.value.unseen == () and refused.value.undroppable == ((LogicalSwitch.nbdb_table, second.id),)
