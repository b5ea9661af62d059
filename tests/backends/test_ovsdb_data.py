"""The data API on a real ovsdb-server, where the kit cannot look: OVN's own tools, other processes, lost replies.

Unique names are OVN_Northbound's own indexes, shared with ovn-nbctl;
mutations are OVSDB's ``mutate``, concurrent with ovn-nbctl's; a fenced commit
is refused by the server itself once its lock is gone; objects with a ttl are
reaped by whichever Database is connected.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nbdb
from nbdb.conformance.kit import eventually
from nbdb.events import EventKind
from nbdb.models import LogicalSwitch, LogicalSwitchPort, PortGroup
from nbdb.spi import Put
from nbdb.testing.faults import FaultProxy, Mode
from nbdb.testing.ovsdb import OvsdbServer, find_ovn_nb_schema
from nbdb.testing.probes import run_tool
from nbdb.testing.process import find_binary
from nbdb.writes import put_of

pytestmark = pytest.mark.timeout(120)

WORKER = Path(__file__).with_name("ovsdb_worker.py")


@pytest.fixture(scope="module")
def server() -> Iterator[OvsdbServer]:
    with OvsdbServer() as srv:
        yield srv


@pytest.fixture
def db(server: OvsdbServer) -> Iterator[nbdb.Database]:
    """A Database in the default namespace: the one ovn-nbctl's rows are in."""
    with nbdb.connect(server.url) as database:
        yield database


@pytest.fixture
def proxied(server: OvsdbServer) -> Iterator[tuple[FaultProxy, nbdb.Database]]:
    """A fault proxy in front of the server, and a Database whose every connection goes through it."""
    member = server.members[0]
    with FaultProxy([(member.host, member.port)]) as proxy:
        host, port = proxy.addresses[0]
        with nbdb.connect(f"ovsdb+tcp://{host}:{port}", timeout=15) as database:
            yield proxy, database


def _nbctl(server: OvsdbServer, *args: str) -> str:
    argv = [str(find_binary("ovn-nbctl")), f"--db={server.remotes}", "--timeout=10", *args]
    return run_tool(argv, timeout=20).strip()


def _client(server: OvsdbServer, *ops: Any) -> list[Any]:
    """Play another OVSDB client writing the database directly (no ovn-nbctl checks)."""
    argv = [str(find_binary("ovsdb-client")), "--timeout=10", "transact", f"tcp:{server.members[0].address}"]
    return list(json.loads(run_tool([*argv, json.dumps(["OVN_Northbound", *ops])], timeout=15)))


def _tag() -> str:
    return uuid.uuid4().hex[:8]


# ---------------------------------------------------------------- unique names


def test_port_names_are_one_index_for_nbdb_and_ovn_nbctl(server: OvsdbServer, db: nbdb.Database) -> None:
    tag = _tag()
    switch = db.create(LogicalSwitch(name=f"sw-{tag}"))
    mine = db.create(LogicalSwitchPort(switch=switch, name=f"mine-{tag}"))
    with pytest.raises(subprocess.CalledProcessError):
        _nbctl(server, "lsp-add", switch.name, mine.name)
    # Below ovn-nbctl's own check, the server's index refuses it too.
    insert = {"op": "insert", "table": "Logical_Switch_Port", "row": {"name": mine.name}, "uuid-name": "dup"}
    join = {
        "op": "mutate",
        "table": "Logical_Switch",
        "where": [["_uuid", "==", ["uuid", str(switch.id)]]],
        "mutations": [["ports", "insert", ["set", [["named-uuid", "dup"]]]]],
    }
    assert _client(server, insert, join)[-1]["error"] == "constraint violation"

    _nbctl(server, "lsp-add", switch.name, f"theirs-{tag}")
    theirs = uuid.UUID(_nbctl(server, "get", "Logical_Switch_Port", f"theirs-{tag}", "_uuid"))
    with pytest.raises(nbdb.UniqueViolationError) as caught:
        db.create(LogicalSwitchPort(switch=switch, name=f"theirs-{tag}"))
    error = caught.value
    assert (error.table, error.field, error.value, error.existing) == (
        "LogicalSwitchPort",
        "name",
        f"theirs-{tag}",
        theirs,
    )
    assert db.create(LogicalSwitchPort(switch=switch, name=f"theirs-{tag}"), may_exist=True).id == theirs
    found = db.get_by(LogicalSwitchPort, name=f"theirs-{tag}")
    assert found is not None and found.id == theirs


def test_a_name_held_in_another_namespace_is_taken_but_not_shown(server: OvsdbServer, db: nbdb.Database) -> None:
    tag = _tag()
    switch = db.create(LogicalSwitch(name=f"sw-{tag}"))
    held = db.create(LogicalSwitchPort(switch=switch, name=f"held-{tag}"))
    with nbdb.connect(server.url, namespace=f"other-{tag}") as other:
        theirs = other.create(LogicalSwitch(name=f"sw2-{tag}"))
        with pytest.raises(nbdb.UniqueViolationError) as caught:
            other.create(LogicalSwitchPort(switch=theirs, name=held.name))
        assert caught.value.existing is None and "another namespace" in str(caught.value)
        with pytest.raises(nbdb.UniqueViolationError):
            other.create(LogicalSwitchPort(switch=theirs, name=held.name), may_exist=True)
        assert other.get_by(LogicalSwitchPort, name=held.name) is None


def test_an_id_held_in_another_namespace_is_refused_at_once_and_not_shown(
    server: OvsdbServer, db: nbdb.Database
) -> None:
    # The server refuses the create (its wait "no row has this id"), and the row is never in this
    # namespace's replica: the refusal was retried as a race until "kept conflicting" (~5 s).
    tag = _tag()
    with nbdb.connect(server.url, namespace=f"other-{tag}") as other:
        for holder, creator in ((db, other), (other, db)):
            held = holder.create(LogicalSwitch(name=f"held-{tag}"))
            twin = LogicalSwitch(id=held.id, name=f"twin-{tag}")
            for may_exist in (False, True):  # may_exist takes no object of another namespace
                with pytest.raises(nbdb.ConflictError) as caught:
                    creator.create(twin, may_exist=may_exist)
                assert type(caught.value) is nbdb.ConflictError and caught.value.key is None
                assert "already exists" in str(caught.value) and "another namespace" in str(caught.value)
                with pytest.raises(nbdb.ConflictError) as caught, creator.transaction() as txn:
                    txn.create(LogicalSwitch(name=f"fresh-{tag}"))
                    txn.create(twin, may_exist=may_exist)
                assert "another namespace" in str(caught.value)
            with pytest.raises(nbdb.NotFoundError):
                creator.get(LogicalSwitch, held.id)
            # The transactions wrote nothing (their other create neither).
            assert all(s.name != f"fresh-{tag}" for s in creator.list(LogicalSwitch, skip_corrupt=True))
            assert holder.get(LogicalSwitch, held.id).name == f"held-{tag}"


def test_processes_racing_on_one_name_have_one_winner(server: OvsdbServer, db: nbdb.Database) -> None:
    switch = db.create(LogicalSwitch(name=f"race-{_tag()}"))
    name = f"contested-{_tag()}"
    start_at = f"{time.time() + 3:.3f}"
    argv = [sys.executable, str(WORKER), "race", server.url, str(switch.id), name, start_at]
    workers = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(4)]
    try:
        lines = [w.communicate(timeout=60)[0].split() for w in workers]
    finally:
        for worker in workers:
            worker.kill()
    winners = [line[1] for line in lines if line[0] == "won"]
    assert len(winners) == 1, lines
    assert sorted(line[0] for line in lines) == ["lost", "lost", "lost", "won"]
    assert all(line[1] == winners[0] for line in lines), "a loser did not name the winner"
    ports = [p for p in db.list(LogicalSwitchPort) if p.name == name]
    assert [str(p.id) for p in ports] == winners


def test_without_the_schemas_index_a_wait_keeps_the_name(tmp_path: Path) -> None:
    """An OVN_Northbound older than the model (no index on port names): nbdb's writers still race with one winner."""
    schema = json.loads(find_ovn_nb_schema().read_text())
    older = copy.deepcopy(schema)
    older["tables"]["Logical_Switch_Port"].pop("indexes", None)
    path = tmp_path / "no-index.ovsschema"
    path.write_text(json.dumps(older))
    with OvsdbServer(schema=path) as srv:
        # Each its own connection (options differ), as separate processes would have.
        dbs = [nbdb.connect(srv.url, timeout=10 + i) for i in range(4)]
        try:
            rule = dbs[0].backend.mapping.tables["LogicalSwitchPort"].unique_rule("name")  # type: ignore[attr-defined]
            assert rule is not None and not rule.indexed
            switch = dbs[0].create(LogicalSwitch(name="sw"))
            outcomes: list[str] = []
            barrier = threading.Barrier(len(dbs))

            def race(db: nbdb.Database) -> None:
                db.get(LogicalSwitch, switch.id)
                barrier.wait(10)
                try:
                    outcomes.append(str(db.create(LogicalSwitchPort(switch=switch, name="one")).id))
                except nbdb.UniqueViolationError as exc:
                    outcomes.append(f"lost to {exc.existing}")

            threads = [threading.Thread(target=race, args=(db,)) for db in dbs]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            ports = [p for p in dbs[0].list(LogicalSwitchPort) if p.name == "one"]
            assert len(ports) == 1
            assert sorted(outcomes) == sorted([str(ports[0].id)] + [f"lost to {ports[0].id}"] * 3)
            # A rename onto a taken name is refused the same way.
            other = dbs[1].create(LogicalSwitchPort(switch=switch, name="two"))
            with pytest.raises(nbdb.UniqueViolationError):
                dbs[1].update(other.replace(name="one"))
        finally:
            for db in dbs:
                db.close()


# ---------------------------------------------------------------- mutations


def test_nbdb_mutations_and_ovn_nbctl_fill_one_port_group_together(server: OvsdbServer, db: nbdb.Database) -> None:
    tag = _tag()
    switch = db.create(LogicalSwitch(name=f"sw-{tag}"))
    with db.transaction() as txn:
        ports = [txn.create(LogicalSwitchPort(switch=switch, name=f"pg-{tag}-{i}")) for i in range(30)]
    _nbctl(server, "pg-add", f"pg_{tag}")
    group = db.get_by(PortGroup, name=f"pg_{tag}")
    assert group is not None
    others = [nbdb.connect(server.url, timeout=19 + i) for i in range(2)]  # connections of their own
    errors: list[BaseException] = []

    def nbdb_adds(writer: nbdb.Database, mine: list[LogicalSwitchPort]) -> None:
        try:
            for port in mine:
                writer.mutate((PortGroup, group.id), add={"ports": [port]})
        except BaseException as exc:
            errors.append(exc)

    def nbctl_adds(theirs: list[LogicalSwitchPort]) -> None:
        try:
            for port in theirs:
                _nbctl(server, "add", "Port_Group", f"pg_{tag}", "ports", str(port.id))
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=nbdb_adds, args=(others[0], ports[0:10])),
        threading.Thread(target=nbdb_adds, args=(others[1], ports[10:20])),
        threading.Thread(target=nbctl_adds, args=(ports[20:30],)),
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
    finally:
        for other in others:
            other.close()
    assert not errors, errors
    stored = set(_nbctl(server, "get", "Port_Group", f"pg_{tag}", "ports").strip("[]").replace(",", "").split())
    assert stored == {str(p.id) for p in ports}
    assert set(db.get(PortGroup, group.id).ports) == {p.id for p in ports}
    # Removing some and adding others at once, against ovn-nbctl removing yet others.
    db.mutate(group, remove={"ports": ports[:5]}, add={"external_ids": {"owner": "nbdb"}})
    _nbctl(server, "remove", "Port_Group", f"pg_{tag}", "ports", str(ports[5].id))
    final = db.get(PortGroup, group.id)
    assert set(final.ports) == {p.id for p in ports[6:]} and final.external_ids == {"owner": "nbdb"}
    nbctl_ids = _nbctl(server, "get", "Port_Group", f"pg_{tag}", "external_ids")
    assert "owner=nbdb" in nbctl_ids


def test_mutates_after_a_may_exist_create_of_a_group_ovn_nbctl_made_apply_natively_in_turn(
    server: OvsdbServer, db: nbdb.Database
) -> None:
    # "Ensure the group, then add members": when the create took the group ovn-nbctl had made, each mutate
    # was a step of its own and the commit was refused (the group "appears twice"). One native mutate now
    # applies them in turn: c added then removed is gone, a removed then added is there, x's last value wins.
    tag = _tag()
    switch = db.create(LogicalSwitch(name=f"sw-{tag}"))
    a, b, c = (db.create(LogicalSwitchPort(switch=switch, name=f"t-{tag}-{i}")) for i in range(3))
    _nbctl(server, "pg-add", f"pg_{tag}", a.name)
    _nbctl(server, "set", "Port_Group", f"pg_{tag}", "external_ids:keep=1", "external_ids:drop=1")
    with db.transaction() as txn:
        group = txn.create(PortGroup(name=f"pg_{tag}"), may_exist=True)
        txn.mutate(group, add={"ports": [b, c], "external_ids": {"x": "1"}})
        txn.mutate(group, remove={"ports": [a, c], "external_ids": ["drop"]})
        txn.mutate(group, add={"ports": [a], "external_ids": {"x": "2"}})
    stored = db.get_by(PortGroup, name=f"pg_{tag}")
    assert stored is not None and stored.id != group.id  # the group ovn-nbctl made
    assert set(stored.ports) == {a.id, b.id} and stored.external_ids == {"keep": "1", "x": "2"}
    assert txn.results[1:] == [stored] * 3
    ports = _nbctl(server, "get", "Port_Group", f"pg_{tag}", "ports").strip("[]").replace(",", "").split()
    assert set(ports) == {str(a.id), str(b.id)}
    assert _nbctl(server, "get", "Port_Group", f"pg_{tag}", "external_ids:x") == '"2"'


@pytest.mark.parametrize(
    "add",
    [
        {"options": {"\ud800": "v"}},
        {"options": {"k": "\udc00"}},
        {"port_security": ["\udfff"]},
        {"options": {"k": 5}},
    ],
    ids=["surrogate-key", "surrogate-value", "surrogate-member", "not-a-string"],
)
def test_a_native_mutation_of_a_value_no_store_holds_is_refused_before_it_is_sent(
    server: OvsdbServer, db: nbdb.Database, add: dict[str, Any]
) -> None:
    # OVSDB applies mutations itself: a lone surrogate went on the wire, the server dropped the
    # connection over it, and the caller got CommitUnknownError for a commit that was never applied;
    # a map value of the wrong type went to the server unchecked.
    tag = _tag()
    switch = db.create(LogicalSwitch(name=f"sw-{tag}"))
    port = db.create(LogicalSwitchPort(switch=switch, name=f"m-{tag}", options={"a": "b"}))
    with pytest.raises(nbdb.ValidationError):
        db.mutate(port, add=add)
    assert db.get(LogicalSwitchPort, port.id) == port
    assert db.mutate(port, add={"options": {"k": "v"}}).options == {"a": "b", "k": "v"}  # the connection is fine


def test_a_mutation_whose_reply_was_lost_is_applied_once(
    proxied: tuple[FaultProxy, nbdb.Database], db: nbdb.Database
) -> None:
    proxy, mine = proxied
    tag = _tag()
    switch = mine.create(LogicalSwitch(name=f"sw-{tag}"))
    port = mine.create(LogicalSwitchPort(switch=switch, name=f"once-{tag}"))
    group = mine.create(PortGroup(name=f"once_{tag}"))
    proxy.lose_next_reply(str(port.id).encode(), then=Mode.BLACKHOLE)
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(mine.mutate(group, add={"ports": [port]})))
    thread.start()
    assert proxy.wait_fired(timeout=20), "the mutation's reply was not lost"
    assert proxy.wait(lambda stats: stats.cut >= 1, timeout=10)  # its connection is gone; no new one passes
    # It landed; before its client can tell, somebody else takes the port out again.
    assert eventually(lambda: port.id in db.get(PortGroup, group.id).ports, timeout=10)
    db.mutate((PortGroup, group.id), remove={"ports": [port]})
    proxy.heal()
    thread.join(60)
    assert result and port.id not in result[0].ports, "the mutation was applied a second time"
    assert port.id not in db.get(PortGroup, group.id).ports


# ---------------------------------------------------------------- fenced writes


def test_the_server_refuses_a_fenced_commit_once_the_lock_is_stolen(server: OvsdbServer, db: nbdb.Database) -> None:
    switch = db.create(LogicalSwitch(name=f"fenced-{_tag()}"))
    with db.lock(f"leader-{_tag()}", timeout=10) as handle:
        db.update(switch.replace(other_config={"by": "holder"}), fence=handle)
        ovsdb_lock = handle.ovsdb_name  # type: ignore[attr-defined]
        argv = [str(find_binary("ovsdb-client")), "steal", f"tcp:{server.members[0].address}", ovsdb_lock]
        thief = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        try:
            assert thief.stdout is not None and "locked" in thief.stdout.readline()
            # Whether or not the "stolen" notice reached the holder yet, the server checks the lock itself.
            stored = db.get(LogicalSwitch, switch.id)
            put: Put = put_of(stored.replace(other_config={"by": "late holder"}), stored.version)[0]
            with pytest.raises(nbdb.LockLostError):
                db.backend.commit_fenced([put], handle)
            assert eventually(lambda: handle.lost, timeout=10)
            with pytest.raises(nbdb.LockLostError):
                db.update(stored.replace(other_config={"by": "late holder"}), fence=handle)
        finally:
            thief.kill()
            thief.wait(10)
    assert db.get(LogicalSwitch, switch.id).other_config == {"by": "holder"}


def test_a_fenced_write_after_the_locks_connection_dropped(
    proxied: tuple[FaultProxy, nbdb.Database], db: nbdb.Database
) -> None:
    proxy, holder = proxied
    name = f"leader-{_tag()}"
    switch = holder.create(LogicalSwitch(name=f"fenced-{_tag()}"))
    with holder.lock(name, timeout=10) as handle:
        proxy.cut()  # every connection through the proxy, the lock's among them
        assert eventually(lambda: handle.lost, timeout=10)
        with db.lock(name, timeout=20):  # the server freed it: a rival holds it now
            with pytest.raises(nbdb.LockLostError):
                holder.update(holder.get(LogicalSwitch, switch.id).replace(name="late"), fence=handle)
    assert db.get(LogicalSwitch, switch.id).name == switch.name


def test_a_fenced_commit_whose_reply_was_lost_is_settled(
    proxied: tuple[FaultProxy, nbdb.Database], db: nbdb.Database
) -> None:
    proxy, holder = proxied
    switch = holder.create(LogicalSwitch(name=f"fenced-{_tag()}"))
    with holder.lock(f"leader-{_tag()}", timeout=10) as handle:
        marker = f"settled-{_tag()}"
        proxy.lose_next_reply(marker.encode())  # the request reaches the server; its reply and the lock's connection go
        updated = holder.update(switch.replace(name=marker), fence=handle)
        assert proxy.stats.fired == 1
        assert handle.lost  # the lock's connection was its lease
    # Settled from the main connection's replica: it landed, so it is reported applied (once).
    assert updated.version == 2 and db.get(LogicalSwitch, switch.id).name == marker
    with pytest.raises(nbdb.LockLostError):
        holder.update(updated.replace(name="after"), fence=handle)


# ---------------------------------------------------------------- liveness


def test_an_object_outlives_its_creator_only_until_a_connected_database_reaps_it(server: OvsdbServer) -> None:
    namespace = f"ttl-{_tag()}"
    with nbdb.connect(server.url, namespace=namespace) as survivor:
        kept = survivor.create(LogicalSwitch(name="kept"), ttl=2)
        watch = survivor.watch(LogicalSwitch)
        with nbdb.connect(server.url, namespace=namespace, timeout=11) as creator:  # a connection of its own
            mortal = creator.create(LogicalSwitch(name="mortal"), ttl=2)
        deleted: set[uuid.UUID] = set()

        def reaped() -> bool:
            survivor.refresh(kept, 2)
            deleted.update(e.id for e in watch.poll(0.2) if e.kind is EventKind.DELETED)
            return mortal.id in deleted

        assert eventually(reaped, timeout=30, interval=0.3)
        assert survivor.get(LogicalSwitch, kept.id).name == "kept"
        assert survivor.backend.ttls(["LogicalSwitch"]) == {("LogicalSwitch", kept.id): 2.0}
        watch.close()


def test_a_field_a_newer_nbdb_keeps_in_external_ids_survives_an_older_writer(
    server: OvsdbServer, db: nbdb.Database
) -> None:
    # A newer version of nbdb keeps a field without a column of its own as nbdb:field:NAME in
    # external_ids; this version reads around it, and its update rewrote external_ids without it.
    tag = _tag()
    switch = db.create(LogicalSwitch(name=f"sw-{tag}"))
    port = db.create(LogicalSwitchPort(switch=switch, name=f"new-{tag}", external_ids={"neutron:id": "n1"}))
    _nbctl(server, "set", "Logical_Switch_Port", f"new-{tag}", 'external_ids:"nbdb:field:future"="[1, 2]"')
    read = db.get(LogicalSwitchPort, port.id)
    assert read.external_ids == {"neutron:id": "n1"}
    db.update(read.replace(external_ids={"neutron:id": "n2"}, addresses=["router"]))
    stored = _nbctl(server, "get", "Logical_Switch_Port", f"new-{tag}", "external_ids")
    assert '"nbdb:field:future"="[1, 2]"' in stored and '"neutron:id"=n2' in stored
