"""OVSDB schema skew: nbdb against an older and a newer OVN_Northbound schema than the one it knows.

The older and newer schemas are made from the installed (Debian) one by
removing and adding columns and a table, as releases of OVN do.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nbdb
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.testing.ovsdb import OvsdbServer, find_ovn_nb_schema

from .conftest import ovsdb_transact

pytestmark = pytest.mark.timeout(120)


def _schema() -> dict[str, Any]:
    return dict(json.loads(find_ovn_nb_schema().read_text()))


def _drop_table(schema: dict[str, Any], name: str) -> None:
    """Remove a table and every column that references it (as a schema without it would be)."""
    del schema["tables"][name]
    for table in schema["tables"].values():
        for column in list(table["columns"]):
            ctype = table["columns"][column]["type"]
            refs = [ctype.get(part) for part in ("key", "value")] if isinstance(ctype, dict) else []
            if any(isinstance(r, dict) and r.get("refTable") == name for r in refs):
                del table["columns"][column]
        table["indexes"] = [i for i in table.get("indexes", []) if all(c in table["columns"] for c in i)]


def _serve(tmp_path: Path, schema: dict[str, Any], name: str) -> OvsdbServer:
    path = tmp_path / f"{name}.ovsschema"
    path.write_text(json.dumps(schema))
    return OvsdbServer(schema=path)


def _transact(server: OvsdbServer, *ops: Any) -> Any:
    result = ovsdb_transact(server.members[0].address, ops)
    assert not any(isinstance(r, dict) and "error" in r for r in result), result
    return result


@pytest.fixture(scope="module")
def older(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OvsdbServer]:
    schema = copy.deepcopy(_schema())
    schema["version"] = "6.0.0"
    del schema["tables"]["Logical_Switch_Port"]["columns"]["up"]
    del schema["tables"]["Logical_Switch_Port"]["columns"]["tag_request"]
    _drop_table(schema, "Mirror")  # a table nbdb binds optionally, and the port column referencing it
    with _serve(tmp_path_factory.mktemp("older"), schema, "older") as server:
        yield server


@pytest.fixture(scope="module")
def newer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OvsdbServer]:
    schema = copy.deepcopy(_schema())
    schema["version"] = "99.0.0"
    schema["tables"]["Logical_Switch_Port"]["columns"]["future_option"] = {"type": "string"}
    schema["tables"]["Future_Table"] = {"columns": {"name": {"type": "string"}}, "isRoot": True}
    with _serve(tmp_path_factory.mktemp("newer"), schema, "newer") as server:
        yield server


def test_an_older_schema_serves_the_model_defaults_and_refuses_what_it_cannot_store(older: OvsdbServer) -> None:
    with nbdb.connect(older.url, namespace=f"o{uuid.uuid4().hex[:6]}") as db:
        ls = db.create(LogicalSwitch(name="old"))
        port = db.create(LogicalSwitchPort(switch=ls, name=f"old-{uuid.uuid4().hex[:6]}", type="router"))
        stored = db.get(LogicalSwitchPort, port.id)
        assert stored.up is None and stored.tag_request is None and stored.type == "router"
        with pytest.raises(nbdb.UnsupportedError, match="up"):
            db.update(stored.replace(up=True))
        assert db.update(stored.replace(addresses=["router"])).version == 2
        with pytest.raises(nbdb.UnsupportedError, match="tag_request"):
            db.create(LogicalSwitchPort(switch=ls, name=f"tagged-{uuid.uuid4().hex[:6]}", tag_request=7))


def test_a_newer_schema_keeps_columns_nbdb_does_not_know(newer: OvsdbServer) -> None:
    with nbdb.connect(newer.url, namespace=f"n{uuid.uuid4().hex[:6]}") as db:
        ls = db.create(LogicalSwitch(name="new"))
        port = db.create(LogicalSwitchPort(switch=ls, name=f"new-{uuid.uuid4().hex[:6]}"))
        where = [["_uuid", "==", ["uuid", str(port.id)]]]
        _transact(
            newer, {"op": "update", "table": "Logical_Switch_Port", "where": where, "row": {"future_option": "kept"}}
        )
        _transact(newer, {"op": "insert", "table": "Future_Table", "row": {"name": "x"}})
        # A change of an unknown column is no change of the object.
        assert db.get(LogicalSwitchPort, port.id).version == 1
        updated = db.update(port.replace(up=True))
        assert updated.version == 2
        row = _transact(
            newer, {"op": "select", "table": "Logical_Switch_Port", "where": where, "columns": ["future_option", "up"]}
        )[0]["rows"][0]
        assert row == {"future_option": "kept", "up": True}


def test_a_schema_without_a_table_nbdb_needs_is_a_clear_error_at_connect(tmp_path: Path) -> None:
    schema = copy.deepcopy(_schema())
    schema["version"] = "1.0.0"
    _drop_table(schema, "Logical_Switch_Port")
    with _serve(tmp_path, schema, "broken") as server:
        with pytest.raises(nbdb.UnsupportedError, match="no table Logical_Switch_Port"):
            nbdb.connect(server.url)


def test_a_schema_older_than_the_later_built_in_models_tables_connects_and_names_them_on_write(
    tmp_path: Path,
) -> None:
    # Gateway_Chassis, HA_Chassis_Group, HA_Chassis and Logical_Router_Policy came with later OVN
    # releases than the first models' tables: such a server served nbdb before those models existed.
    from nbdb.models import GatewayChassis, HAChassisGroup, LogicalRouterPolicy

    schema = copy.deepcopy(_schema())
    schema["version"] = "5.10.0"
    for table in ("Gateway_Chassis", "HA_Chassis_Group", "HA_Chassis", "Logical_Router_Policy"):
        _drop_table(schema, table)
    with _serve(tmp_path, schema, "before-gateways") as server, nbdb.connect(server.url) as db:
        switch = db.create(LogicalSwitch(name=f"s-{uuid.uuid4().hex[:6]}"))
        assert db.get(LogicalSwitch, switch.id) == switch
        assert db.list(GatewayChassis) == [] and db.list(LogicalRouterPolicy) == []
        with pytest.raises(nbdb.UnsupportedError, match="'HAChassisGroup' has no OVSDB table"):
            db.create(HAChassisGroup(name="g"))


def test_a_schema_older_than_the_service_tables_connects_and_refuses_a_write_of_their_references(
    tmp_path: Path,
) -> None:
    # DNS, Copp, BFD, Mirror, Load_Balancer_Group, Forwarding_Group and Load_Balancer_Health_Check came
    # with OVN releases after the first models' tables, as did the columns referencing them.
    from nbdb.models import BFD, DNS, Copp, ForwardingGroup, LoadBalancerHealthCheck, Mirror

    schema = copy.deepcopy(_schema())
    schema["version"] = "5.0.0"
    services = ("DNS", "Copp", "BFD", "Mirror", "Load_Balancer_Group", "Forwarding_Group", "Load_Balancer_Health_Check")
    for table in services:
        _drop_table(schema, table)
    with _serve(tmp_path, schema, "before-services") as server, nbdb.connect(server.url) as db:
        switch = db.create(LogicalSwitch(name=f"s-{uuid.uuid4().hex[:6]}"))
        stored = db.get(LogicalSwitch, switch.id)
        assert (stored.dns_records, stored.copp, stored.load_balancer_group) == ([], None, [])
        for model in (DNS, Copp, BFD, Mirror, ForwardingGroup, LoadBalancerHealthCheck):
            assert db.list(model) == []
        with pytest.raises(nbdb.UnsupportedError, match="'DNS' has no OVSDB table"):
            db.create(DNS(records={"vm": "10.0.0.5"}))
        with pytest.raises(nbdb.UnsupportedError, match="dns_records"):
            db.update(stored.replace(dns_records=[uuid.uuid4()]))


@pytest.fixture(scope="module")
def jump(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OvsdbServer]:
    """A server of OVN 24.03's ``Logical_Router_Policy.action``: it admits "jump", which the model's enum lacks."""
    schema = copy.deepcopy(_schema())
    schema["version"] = "99.1.0"
    action = schema["tables"]["Logical_Router_Policy"]["columns"]["action"]["type"]["key"]
    action["enum"] = ["set", [*action["enum"][1], "jump"]]
    with _serve(tmp_path_factory.mktemp("jump"), schema, "jump") as server:
        yield server


def _insert_jump(server: OvsdbServer, router: str, priority: int = 2) -> uuid.UUID:
    """Another writer's (ovn-nbctl lr-policy-add ... jump) policy of ``router``."""
    row = {"priority": priority, "match": "ip6", "action": "jump", "options": ["map", [["chain", "c1"]]]}
    (inserted, _) = _transact(
        server,
        {"op": "insert", "table": "Logical_Router_Policy", "row": row, "uuid-name": "p"},
        {"op": "mutate", "table": "Logical_Router", "where": [["name", "==", router]],
         "mutations": [["policies", "insert", ["set", [["named-uuid", "p"]]]]]},
    )  # fmt: skip
    return uuid.UUID(inserted["uuid"][1])


def _raw_policy(server: OvsdbServer, id: uuid.UUID) -> list[tuple[str, int]]:
    where = [["_uuid", "==", ["uuid", str(id)]]]
    (found,) = _transact(server, {"op": "select", "table": "Logical_Router_Policy", "where": where})
    return [(r["action"], r["priority"]) for r in found["rows"]]


def test_a_newer_schemas_enum_value_reads_as_its_text_and_an_update_of_another_field_keeps_it(
    jump: OvsdbServer,
) -> None:
    # OVN 24.03 added Logical_Router_Policy.action "jump" (a rolling upgrade: the server before the
    # controller). The server checks the column's enum, so such a row reads, its value as text, and every
    # write of the copy keeps it; it was a corrupt record (unseen by caches and watches).
    from nbdb.models import LogicalRouter, LogicalRouterPolicy, RouterPolicyAction

    name = f"r-{uuid.uuid4().hex[:6]}"
    with nbdb.connect(jump.url) as db:
        router = db.create(LogicalRouter(name=name))
        kept = db.create(LogicalRouterPolicy(router=router, priority=1, match="ip4", action="allow"))
        cache = db.cache([LogicalRouterPolicy])
        assert cache.wait_synced(10)
        with db.watch(LogicalRouterPolicy) as watch:
            id = _insert_jump(jump, name)
            (event,) = watch.poll(10)
            assert event.new is not None and event.new.id == id
            assert event.new.action == "jump" and event.new.action not in list(RouterPolicyAction)
        policy = db.get(LogicalRouterPolicy, id)
        assert (policy.action, policy.action.value, policy.priority, policy.options) == (
            "jump",
            "jump",
            2,
            {"chain": "c1"},
        )
        assert {p.id: p.action for p in db.list(LogicalRouterPolicy) if p.router == router.id} == {
            kept.id: "allow",
            id: "jump",
        }
        assert cache.wait_for(event.revision, 10)
        assert cache.get(LogicalRouterPolicy, id).action == "jump" and not cache.corrupt
        cache.close()
        updated = db.update(policy.replace(priority=3))
        assert (updated.action, updated.version) == ("jump", policy.version + 1)
        assert _raw_policy(jump, id) == [("jump", 3)]  # written back as read, never "corrected"
        assert db.get(LogicalRouterPolicy, id) == updated
        # The input check stays: text outside the model's enum is refused before anything is sent,
        # "jump" typed by the caller too (only a read carries a newer schema's value).
        for typo in ("alow", "jump"):
            with pytest.raises(nbdb.ValidationError, match="Input should be 'allow', 'drop' or 'reroute'"):
                updated.replace(action=typo)
            with pytest.raises(nbdb.ValidationError, match="Input should be"):
                db.create(LogicalRouterPolicy(router=router, priority=9, match="ip4", action=typo))
        assert db.update(updated.replace(action="drop")).action == "drop"
        assert _raw_policy(jump, id) == [("drop", 3)]
        db.update(db.get(LogicalRouterPolicy, id).replace(priority=4))  # an ordinary row again
        _insert_jump(jump, name, priority=5)
        # A cascade reads what it deletes: the router goes with every policy, the newer one's too.
        db.delete(router, cascade=True)
        assert _raw_policy(jump, id) == []


def test_a_newer_schemas_enum_value_is_not_written_to_a_store_that_cannot_check_it(jump: OvsdbServer) -> None:
    """A store of records checks no enum: its reads would report the value as corrupt (another writer's
    text outside the enum is, there), so nbdb refuses to write it rather than leave a record nobody reads."""
    from nbdb.models import LogicalRouter, LogicalRouterPolicy

    name = f"r-{uuid.uuid4().hex[:6]}"
    with nbdb.connect(jump.url) as db, nbdb.connect("memory://") as memory:
        router = db.create(LogicalRouter(name=name))
        policy = db.get(LogicalRouterPolicy, _insert_jump(jump, name))
        memory.create(router.model_copy(update={"version": 0}))
        with pytest.raises(nbdb.ValidationError, match=r"action = 'jump'"):
            memory.create(policy.model_copy(update={"version": 0}))
        assert memory.list(LogicalRouterPolicy) == []
        db.delete(router, cascade=True)


def test_nbdb_copy_carries_a_newer_schemas_enum_value_to_a_server_that_admits_it(
    jump: OvsdbServer, tmp_path: Path
) -> None:
    from nbdb.models import LogicalRouter, LogicalRouterPolicy
    from nbdb.tools.copy import Copier, CopyOptions

    name = f"r-{uuid.uuid4().hex[:6]}"
    options = CopyOptions(models=[LogicalRouter, LogicalRouterPolicy])
    schema = json.loads(Path(str(jump.schema)).read_text())
    with (
        _serve(tmp_path, schema, "jump-copy") as target,
        nbdb.connect(jump.url) as source,
        nbdb.connect(target.url) as destination,
        nbdb.connect("memory://") as memory,
    ):
        router = source.create(LogicalRouter(name=name))
        id = _insert_jump(jump, name)
        # A store of records cannot hold it: refused before anything is written, naming the field.
        with pytest.raises(nbdb.UnsupportedError, match=r"LogicalRouterPolicy\.action holds a newer schema's"):
            Copier(source, memory, options).run()
        assert memory.list(LogicalRouter) == []
        Copier(source, destination, options).run()
        assert destination.get(LogicalRouterPolicy, id).action == "jump"
        assert _raw_policy(target, id) == [("jump", 2)]
        source.delete(router, cascade=True)


def test_a_schema_without_a_parents_set_column_nbdb_needs_is_a_clear_error_at_connect(tmp_path: Path) -> None:
    """``Logical_Switch.acls`` holds which switch an ACL belongs to: without it the connect succeeded,
    the server refused the monitor of ``Logical_Switch`` and the first read or write waited ten minutes."""
    schema = copy.deepcopy(_schema())
    schema["version"] = "1.0.0"
    del schema["tables"]["Logical_Switch"]["columns"]["acls"]
    with _serve(tmp_path, schema, "noacls") as server:
        with pytest.raises(nbdb.UnsupportedError, match=r"no column Logical_Switch\.acls, which holds the ACL"):
            nbdb.connect(server.url)


def test_a_model_no_served_table_holds_is_named_before_any_write(newer: OvsdbServer) -> None:
    from nbdb.models import Chassis

    with nbdb.connect(newer.url, namespace=f"c{uuid.uuid4().hex[:6]}") as db:
        db.check_model(LogicalSwitch)  # a table of OVN_Northbound: accepted
        with pytest.raises(nbdb.UnsupportedError, match="'Chassis' has no OVSDB table"):
            db.check_model(Chassis)
        assert db.list(Chassis) == []  # reads find nothing
        with pytest.raises(nbdb.UnsupportedError, match="'Chassis' has no OVSDB table"):
            db.create(Chassis(name="hv1"))
