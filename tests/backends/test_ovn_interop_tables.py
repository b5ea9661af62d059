"""OVN tables the first built-in models left out, read and written both ways with ``ovn-nbctl``.

``Gateway_Chassis`` (``lrp-set-gateway-chassis``), ``HA_Chassis_Group`` and ``HA_Chassis``
(``ha-chassis-group-add``...), ``Logical_Router_Policy`` (``lr-policy-add``): nbdb read none of
them, so a gateway set by an operator was invisible to a controller, and one a controller set
through nbdb was invisible to ovn-northd. One shared OVN_Northbound server; names are unique per test.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import nbdb
from nbdb.cli import main
from nbdb.models import (
    NAT,
    Chassis,
    GatewayChassis,
    HAChassis,
    HAChassisGroup,
    LogicalRouter,
    LogicalRouterPolicy,
    LogicalRouterPort,
    LogicalSwitch,
    LogicalSwitchPort,
    RouterPolicyAction,
    all_models,
)
from nbdb.models.base import Model
from nbdb.testing.fixtures import ovsdb_server  # noqa: F401
from nbdb.testing.ovsdb import OvsdbServer, find_ovn_nb_schema
from nbdb.testing.probes import run_tool
from nbdb.testing.process import find_binary, wait_until
from nbdb.tools import Copier, CopyOptions

from .conftest import ovsdb_transact

pytestmark = pytest.mark.timeout(60)


def nbctl(nb: OvsdbServer, *args: str) -> str:
    if find_binary("ovn-nbctl") is None:
        pytest.fail("ovn-nbctl is missing (Debian package ovn-central / ovn-common)")
    return run_tool([str(find_binary("ovn-nbctl")), f"--db={nb.remotes}", "--timeout=10", *args], timeout=20).strip()


@pytest.fixture
def db(ovsdb_server: OvsdbServer) -> Iterator[nbdb.Database]:  # noqa: F811
    with nbdb.connect(ovsdb_server.url) as database:
        yield database


def _router_port(nb: OvsdbServer, s: str) -> str:
    nbctl(nb, "lr-add", f"lr-{s}")
    nbctl(nb, "lrp-add", f"lr-{s}", f"lrp-{s}", "0a:00:00:00:00:fe", "10.0.0.1/24")
    return f"lrp-{s}"


def _read_router_port(nb: OvsdbServer, db: nbdb.Database) -> tuple[str, LogicalRouterPort]:
    """A unique suffix, and a router port ovn-nbctl made, as nbdb reads it."""
    s = uuid.uuid4().hex[:8]
    lrp = db.get_by(LogicalRouterPort, name=_router_port(nb, s))
    assert lrp is not None
    return s, lrp


def test_a_gateway_chassis_ovn_nbctl_sets_is_read_by_get_cache_and_watch(
    ovsdb_server: OvsdbServer,  # noqa: F811
    db: nbdb.Database,
) -> None:
    s, lrp = _read_router_port(ovsdb_server, db)
    lrp_name = lrp.name
    watch = db.watch(GatewayChassis)
    cache = db.cache([LogicalRouterPort, GatewayChassis])
    assert cache.wait_synced(10)
    nbctl(ovsdb_server, "lrp-set-gateway-chassis", lrp_name, f"ch1-{s}", "20")
    gid = uuid.UUID(
        nbctl(ovsdb_server, "--bare", "--columns=_uuid", "find", "Gateway_Chassis", f"chassis_name=ch1-{s}")
    )

    seen: list[GatewayChassis] = []

    def created() -> bool:
        seen.extend(e.new for e in watch.poll(0.1) if e.new is not None and e.new.id == gid)
        return bool(seen)

    wait_until(created, 10, "the watch to deliver the gateway chassis", interval=0.05)
    wait_until(lambda: cache.get(GatewayChassis, gid) is not None, 10, "the cache to list it", interval=0.05)
    got = db.get(GatewayChassis, gid)
    for gw in (got, seen[0], cache.get(GatewayChassis, gid)):
        assert gw is not None
        assert (gw.port, gw.name, gw.chassis_name, gw.priority) == (lrp.id, f"{lrp_name}-ch1-{s}", f"ch1-{s}", 20)
    assert [g.id for g in cache.find(GatewayChassis, port=lrp.id)] == [gid]
    assert not cache.corrupt
    watch.close()
    cache.close()


def test_a_gateway_chassis_nbdb_writes_is_what_ovn_nbctl_shows(
    ovsdb_server: OvsdbServer,  # noqa: F811
    db: nbdb.Database,
) -> None:
    s, lrp = _read_router_port(ovsdb_server, db)
    nbctl(ovsdb_server, "lrp-set-gateway-chassis", lrp_name := lrp.name, f"ch1-{s}", "20")
    mine = db.create(GatewayChassis(port=lrp.id, name=f"{lrp_name}-ch2-{s}", chassis_name=f"ch2-{s}", priority=10))
    shown = nbctl(ovsdb_server, "lrp-get-gateway-chassis", lrp_name).splitlines()
    assert [line.split() for line in shown] == [[f"{lrp_name}-ch1-{s}", "20"], [f"{lrp_name}-ch2-{s}", "10"]]
    mine = db.update(mine.replace(priority=30))
    shown = nbctl(ovsdb_server, "lrp-get-gateway-chassis", lrp_name).splitlines()
    assert shown[0].split() == [f"{lrp_name}-ch2-{s}", "30"]
    db.delete(mine)
    shown = nbctl(ovsdb_server, "lrp-get-gateway-chassis", lrp_name).splitlines()
    assert [line.split() for line in shown] == [[f"{lrp_name}-ch1-{s}", "20"]]
    # ovn-nbctl removes its own; nbdb sees it gone.
    nbctl(ovsdb_server, "lrp-del-gateway-chassis", lrp_name, f"ch1-{s}")
    assert [g for g in db.list(GatewayChassis) if g.port == lrp.id] == []


def test_ha_chassis_groups_and_router_policies_ovn_nbctl_makes_are_read_and_written(
    ovsdb_server: OvsdbServer,  # noqa: F811
    db: nbdb.Database,
) -> None:
    s = uuid.uuid4().hex[:8]
    lrp_name = _router_port(ovsdb_server, s)
    nbctl(ovsdb_server, "ha-chassis-group-add", f"hag-{s}")
    nbctl(ovsdb_server, "ha-chassis-group-add-chassis", f"hag-{s}", f"ch1-{s}", "5")
    nbctl(ovsdb_server, "lr-policy-add", f"lr-{s}", "100", "ip4.src == 10.0.0.0/24", "reroute", "10.0.0.254")
    group = db.get_by(HAChassisGroup, name=f"hag-{s}")
    assert group is not None
    members = [c for c in db.list(HAChassis) if c.group == group.id]
    assert [(c.chassis_name, c.priority) for c in members] == [(f"ch1-{s}", 5)]
    (router,) = [r for r in db.list(LogicalRouter) if r.name == f"lr-{s}"]
    policies = [p for p in db.list(LogicalRouterPolicy) if p.router == router.id]
    assert [(p.priority, p.match, p.action, p.nexthops) for p in policies] == [
        (100, "ip4.src == 10.0.0.0/24", RouterPolicyAction.REROUTE, ["10.0.0.254"])
    ]
    # nbdb's writes, as ovn-nbctl shows them.
    ch2 = db.create(HAChassis(group=group.id, chassis_name=f"ch2-{s}", priority=7))
    lrp = db.get_by(LogicalRouterPort, name=lrp_name)
    assert lrp is not None
    db.update(lrp.replace(ha_chassis_group=group.id))
    db.create(LogicalRouterPolicy(router=router.id, priority=50, match="ip4.dst == 8.8.8.8", action="drop"))
    held = nbctl(ovsdb_server, "--bare", "--columns=ha_chassis", "list", "HA_Chassis_Group", f"hag-{s}").split()
    assert sorted(held) == sorted([str(members[0].id), str(ch2.id)])
    assert f"({ch2.chassis_name})\n    priority 7" in nbctl(ovsdb_server, "ha-chassis-group-list")
    assert nbctl(ovsdb_server, "get", "Logical_Router_Port", lrp_name, "ha_chassis_group") == str(group.id)
    shown = nbctl(ovsdb_server, "lr-policy-list", f"lr-{s}")
    assert "ip4.dst == 8.8.8.8" in shown and "drop" in shown and "reroute" in shown
    # A switch port's group reads back too.
    nbctl(ovsdb_server, "ls-add", f"ls-{s}")
    nbctl(ovsdb_server, "lsp-add", f"ls-{s}", f"lsp-{s}")
    nbctl(ovsdb_server, "set", "Logical_Switch_Port", f"lsp-{s}", f"ha_chassis_group={group.id}")
    port = db.get_by(LogicalSwitchPort, name=f"lsp-{s}")
    assert port is not None and port.ha_chassis_group == group.id


def _copy_out_and_back(source_server: OvsdbServer, back_url: str) -> dict[type[Model], list[Model]]:
    """Copy every built-in model out of ``source_server`` into memory://, and from there to ``back_url``
    (no differences); what memory:// held, by model."""
    # The built-in models (a module of this process may have generated models of the same tables).
    models = [m for m in all_models() if m.__module__ == "nbdb.models.ovn" and m is not Chassis]
    with (
        nbdb.connect(source_server.url) as source,
        nbdb.connect(f"memory://copy-{uuid.uuid4().hex[:8]}") as middle,
        nbdb.connect(back_url) as back,
    ):
        Copier(source, middle, CopyOptions(models=models)).run()
        result = Copier(middle, back, CopyOptions(models=models, ignore_list_order=True)).run()
        assert result.differences == []
        return {m: list(middle.list(m)) for m in models}


def test_a_copy_out_of_ovn_and_back_keeps_gateways_ha_groups_and_policies(
    ovsdb_server: OvsdbServer,  # noqa: F811
) -> None:
    # `nbdb copy` copied the models it had: router policies, HA chassis groups and gateway chassis
    # were left behind, and the copy back into OVN_Northbound lost the gateways ovn-northd needs.
    s = uuid.uuid4().hex[:8]
    with OvsdbServer() as source_server:
        lrp_name = _router_port(source_server, s)
        nbctl(source_server, "lrp-set-gateway-chassis", lrp_name, f"ch1-{s}", "20")
        nbctl(source_server, "lrp-set-gateway-chassis", lrp_name, f"ch2-{s}", "10")
        nbctl(source_server, "lr-policy-add", f"lr-{s}", "100", "ip4.src == 10.0.0.0/24", "reroute", "10.0.0.254")
        nbctl(source_server, "lr-policy-add", f"lr-{s}", "50", "ip4.dst == 8.8.8.8", "drop")
        nbctl(source_server, "ha-chassis-group-add", f"hag-{s}")
        nbctl(source_server, "ha-chassis-group-add-chassis", f"hag-{s}", f"ch1-{s}", "5")
        nbctl(source_server, "ha-chassis-group-add-chassis", f"hag-{s}", f"ch2-{s}", "3")
        group = nbctl(source_server, "--bare", "--columns=_uuid", "find", "HA_Chassis_Group", f"name=hag-{s}")
        nbctl(source_server, "set", "Logical_Router_Port", lrp_name, f"ha_chassis_group={group}")
        middle = _copy_out_and_back(source_server, f"{ovsdb_server.url}?namespace=copy{s}")
        assert len(middle[GatewayChassis]) == 2
        assert len(middle[HAChassis]) == 2
        assert len(middle[LogicalRouterPolicy]) == 2
    # What ovn-nbctl shows of the copy is what it showed of the source.
    shown = nbctl(ovsdb_server, "lrp-get-gateway-chassis", lrp_name).splitlines()
    assert [line.split() for line in shown] == [[f"{lrp_name}-ch1-{s}", "20"], [f"{lrp_name}-ch2-{s}", "10"]]
    policies = nbctl(ovsdb_server, "lr-policy-list", f"lr-{s}")
    assert "ip4.src == 10.0.0.0/24" in policies and "reroute" in policies and "10.0.0.254" in policies
    assert "ip4.dst == 8.8.8.8" in policies and "drop" in policies
    assert nbctl(ovsdb_server, "get", "Logical_Router_Port", lrp_name, "ha_chassis_group") == group
    held = nbctl(ovsdb_server, "--bare", "--columns=ha_chassis", "list", "HA_Chassis_Group", group).split()
    priorities = {
        nbctl(ovsdb_server, "get", "HA_Chassis", member, "chassis_name").strip('"'): nbctl(
            ovsdb_server, "get", "HA_Chassis", member, "priority"
        )
        for member in held
    }
    assert priorities == {f"ch1-{s}": "5", f"ch2-{s}": "3"}


def test_a_copy_of_a_source_with_rows_no_model_maps_is_refused_naming_their_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Rows of a table no model maps (OVN's Meter, BFD, DNS...; here a table of the deployment's own,
    # which no model generated in this process can map either) were left behind by a copy of every
    # model, without a word. It is refused before anything is written; --models copies knowingly.
    s = uuid.uuid4().hex[:8]
    schema = json.loads(find_ovn_nb_schema().read_text())
    schema["tables"]["Site_Note"] = {"columns": {"text": {"type": "string"}}, "isRoot": True}
    path = tmp_path / "nb-with-notes.ovsschema"
    path.write_text(json.dumps(schema))
    with OvsdbServer(schema=path) as source_server:
        nbctl(source_server, "ls-add", f"ls-{s}")
        ovsdb_transact(source_server.members[0].address, [{"op": "insert", "table": "Site_Note", "row": {"text": s}}])
        with nbdb.connect(source_server.url) as source, nbdb.connect(f"memory://unmodelled-{s}") as destination:
            with pytest.raises(nbdb.UnsupportedError) as refused:
                Copier(source, destination).run()
            assert "OVN_Northbound.Site_Note (1 rows)" in str(refused.value)
            assert destination.list(LogicalSwitch) == []
            # `nbdb dump` of every model likewise.
            assert main(["dump", source_server.url, "-o", str(tmp_path / "d.jsonl")]) != 0
            assert "OVN_Northbound.Site_Note (1 rows)" in capsys.readouterr().err
            assert not (tmp_path / "d.jsonl").exists()
            Copier(source, destination, CopyOptions(models=[LogicalSwitch])).run()
            assert [ls.name for ls in destination.list(LogicalSwitch)] == [f"ls-{s}"]


def test_a_port_another_writer_moves_between_switches_reads_under_its_new_switch_in_a_topic_cache(
    ovsdb_server: OvsdbServer,  # noqa: F811
    db: nbdb.Database,
) -> None:
    # ovn-nbctl moves a port in one transaction (remove from one switch's ports, add to another's):
    # the port's row is unchanged, and a cache of named topics, which followed the ports alone,
    # placed it by the nbdb:parent hint nbdb wrote: under its OLD switch, for good.
    s = uuid.uuid4().hex[:8]
    topic, other = f"t-{s}", f"u-{s}"
    a = db.create(LogicalSwitch(name=f"a-{s}", topic=topic))
    b = db.create(LogicalSwitch(name=f"b-{s}", topic=topic))
    c = db.create(LogicalSwitch(name=f"c-{s}", topic=other))
    stays = db.create(LogicalSwitchPort(switch=a, name=f"p1-{s}", topic=topic))
    leaves = db.create(LogicalSwitchPort(switch=a, name=f"p2-{s}", topic=topic))
    cache = db.cache([LogicalSwitchPort], topics={topic})
    assert cache.wait_synced(10)

    def move(port: LogicalSwitchPort, to: LogicalSwitch) -> None:
        nbctl(ovsdb_server, "remove", "Logical_Switch", str(a.id), "ports", str(port.id), "--",
              "add", "Logical_Switch", str(to.id), "ports", str(port.id))  # fmt: skip

    move(stays, b)
    wait_until(lambda: cache.get(LogicalSwitchPort, stays.id).switch == b.id, 10, "the new switch", interval=0.05)  # type: ignore[union-attr]
    assert db.get(LogicalSwitchPort, stays.id).switch == b.id
    # Moved to a switch of another topic, which the cache does not follow: its switch is not known
    # there. Reported (cache.corrupt), not read under the old switch nor dropped as if deleted.
    move(leaves, c)
    wait_until(lambda: ("LogicalSwitchPort", leaves.id) in cache.corrupt, 10, "a corrupt report", interval=0.05)
    assert "moved by another writer" in str(cache.corrupt[("LogicalSwitchPort", leaves.id)])
    assert db.get(LogicalSwitchPort, leaves.id).switch == c.id
    assert cache.get(LogicalSwitchPort, stays.id).switch == b.id  # type: ignore[union-attr]
    cache.close()


def test_a_watch_of_some_topics_from_now_opens_after_a_write_of_another_topic(db: nbdb.Database) -> None:
    # "From now" is the connection's last revision; the replica of the watch's topics had seen none of
    # the later ones (a write of another topic), and the watch raised HistoryGoneError at once.
    s = uuid.uuid4().hex[:8]
    mine, other = f"w-{s}", f"x-{s}"
    switch = db.create(LogicalSwitch(name=f"w-{s}", topic=mine))
    cache = db.cache([LogicalSwitchPort], topics={mine})
    assert cache.wait_synced(10)
    db.create(LogicalSwitch(name=f"x-{s}", topic=other))
    watch = db.watch(LogicalSwitchPort, topics={mine})
    port = db.create(LogicalSwitchPort(switch=switch, name=f"wp-{s}", topic=mine))
    seen: list[uuid.UUID] = []

    def delivered() -> bool:
        seen.extend(e.new.id for e in watch.poll(0.1) if e.new is not None)
        return port.id in seen

    wait_until(delivered, 10, "the watch to deliver the port", interval=0.05)
    assert seen == [port.id]
    watch.close()
    cache.close()


@pytest.mark.parametrize("kind", ["memory", "ovsdb"])
def test_a_plain_delete_of_an_owner_takes_its_gateway_and_ha_chassis_along(
    kind: str,
    ovsdb_server: OvsdbServer,  # noqa: F811
) -> None:
    # Gateway_Chassis and HA_Chassis are non-root rows only their port or group holds: ovsdb-server
    # collects them with it (ovn-nbctl lrp-del, ha-chassis-group-del). nbdb refused a plain delete
    # of the port or group (ReferenceError: pass cascade=True) on every backend.
    s = uuid.uuid4().hex[:8]
    url = f"memory://owned-{s}" if kind == "memory" else f"{ovsdb_server.url}?namespace=o{s}"
    with nbdb.connect(url) as db:
        router = db.create(LogicalRouter(name=f"lr-{s}"))
        group = db.create(HAChassisGroup(name=f"hag-{s}"))
        port = db.create(
            LogicalRouterPort(router=router, name=f"lrp-{s}", mac="0a:00:00:00:00:01", networks=["10.0.0.1/24"])
        )
        other = db.create(
            LogicalRouterPort(router=router, name=f"lrp2-{s}", mac="0a:00:00:00:00:02", networks=["10.0.1.1/24"])
        )
        gws = [db.create(GatewayChassis(port=port, name=f"gw{i}-{s}", chassis_name=f"ch{i}-{s}")) for i in (1, 2)]
        kept = db.create(GatewayChassis(port=other, name=f"gw3-{s}", chassis_name=f"ch3-{s}"))
        members = [db.create(HAChassis(group=group, chassis_name=f"ch{i}-{s}", priority=i)) for i in (1, 2)]
        watch = db.watch(GatewayChassis)
        revision = db.delete(port)
        assert [g.id for g in db.list(GatewayChassis)] == [kept.id]
        # One commit: the port and its gateway chassis went together.
        gone: list[nbdb.ChangeEvent[GatewayChassis]] = []
        wait_until(lambda: bool(gone.extend(watch.poll(0.1))) or len(gone) >= 2, 10, "the deletes", interval=0.05)
        assert sorted((e.old.id, e.new, int(e.revision)) for e in gone if e.old) == sorted(
            (g.id, None, int(revision)) for g in gws
        )
        watch.close()
        assert sorted(m.id for m in db.list(HAChassis)) == sorted(m.id for m in members)
        db.delete(group)
        assert db.list(HAChassis) == []
        # A strong referrer that is no child still refuses: the router keeps its other port.
        with pytest.raises(nbdb.ReferenceError):
            db.delete(router)
        assert [p.id for p in db.list(LogicalRouterPort)] == [other.id]
        # A transaction's delete takes them along in its commit too.
        with db.transaction() as tx:
            tx.delete(other)
        assert db.list(GatewayChassis) == []


def test_an_update_of_a_gateway_chassis_in_the_transaction_deleting_its_port_commits_as_on_ovsdb_server(
    ovsdb_server: OvsdbServer,  # noqa: F811
    db: nbdb.Database,
) -> None:
    # ovsdb-server takes an update of a Gateway_Chassis and the delete of its port in one transaction: the
    # row goes with its last holder whatever the transaction wrote to it. nbdb refused it (ReferenceError).
    def port(s: str) -> tuple[LogicalRouterPort, GatewayChassis]:
        router = db.create(LogicalRouter(name=f"lr-{s}"))
        lrp = db.create(
            LogicalRouterPort(router=router, name=f"lrp-{s}", mac="0a:00:00:00:00:01", networks=["10.0.0.1/24"])
        )
        return lrp, db.create(GatewayChassis(port=lrp, name=f"gw-{s}", chassis_name=f"ch-{s}", priority=1))

    s = uuid.uuid4().hex[:8]
    lrp, gw = port(s)
    where = [["name", "==", f"gw-{s}"]]
    out = ovsdb_transact(
        ovsdb_server.members[0].address,
        [
            {"op": "update", "table": "Gateway_Chassis", "where": where, "row": {"priority": 5}},
            {"op": "mutate", "table": "Logical_Router", "where": [["name", "==", f"lr-{s}"]],
             "mutations": [["ports", "delete", ["uuid", str(lrp.id)]]]},
            {"op": "delete", "table": "Logical_Router_Port", "where": [["name", "==", f"lrp-{s}"]]},
        ],
    )  # fmt: skip
    assert [o.get("error") for o in out] == [None, None, None]
    assert nbctl(ovsdb_server, "--bare", "--columns=_uuid", "find", "Gateway_Chassis", f"name=gw-{s}") == ""
    s = uuid.uuid4().hex[:8]
    lrp, gw = port(s)
    with db.transaction() as tx:
        tx.update(gw.replace(priority=5))
        tx.delete(lrp)
    assert tx.results[0] is None
    assert nbctl(ovsdb_server, "--bare", "--columns=_uuid", "find", "Gateway_Chassis", f"name=gw-{s}") == ""
    assert nbctl(ovsdb_server, "lrp-list", f"lr-{s}") == ""


def test_a_router_port_and_ha_group_ovn_nbctl_made_are_deleted_plainly_leaving_no_chassis_row(
    ovsdb_server: OvsdbServer,  # noqa: F811
    db: nbdb.Database,
) -> None:
    s, lrp = _read_router_port(ovsdb_server, db)
    nbctl(ovsdb_server, "lrp-set-gateway-chassis", lrp.name, f"ch1-{s}", "20")
    nbctl(ovsdb_server, "ha-chassis-group-add", f"hag-{s}")
    nbctl(ovsdb_server, "ha-chassis-group-add-chassis", f"hag-{s}", f"ch1-{s}", "5")
    group = db.get_by(HAChassisGroup, name=f"hag-{s}")
    assert group is not None
    db.delete(db.get(LogicalRouterPort, lrp.id))
    db.delete(group)
    assert nbctl(ovsdb_server, "lrp-list", f"lr-{s}") == ""
    assert nbctl(ovsdb_server, "--bare", "--columns=_uuid", "find", "Gateway_Chassis", f"chassis_name=ch1-{s}") == ""
    assert nbctl(ovsdb_server, "--bare", "--columns=_uuid", "find", "HA_Chassis", f"chassis_name=ch1-{s}") == ""
    assert f"hag-{s}" not in nbctl(ovsdb_server, "ha-chassis-group-list")


def test_a_copy_out_of_ovn_and_back_keeps_ipv6_ra_acl_label_and_meter_lb_selection_and_nat_gateway_port(
    ovsdb_server: OvsdbServer,  # noqa: F811
) -> None:
    # Columns of mapped tables no field mapped: updates kept them, a copy of the models lost them.
    s = uuid.uuid4().hex[:8]
    with OvsdbServer() as source_server:
        lrp_name = _router_port(source_server, s)
        nbctl(source_server, "set", "Logical_Router_Port", lrp_name,
              "ipv6_ra_configs:address_mode=slaac", "ipv6_ra_configs:send_periodic=true",
              "ipv6_prefix=\"2001:db8::/64\"")  # fmt: skip
        nbctl(source_server, "ls-add", f"ls-{s}")
        nbctl(source_server, "acl-add", f"ls-{s}", "to-lport", "100", "ip4", "drop")
        acl = nbctl(source_server, "--bare", "--columns=_uuid", "find", "ACL", "match=ip4")
        nbctl(source_server, "set", "ACL", acl, "label=1234", "meter=acl-meter")
        nbctl(source_server, "lb-add", f"lb-{s}", "10.1.0.1:80", "10.0.0.2:80")
        nbctl(source_server, "set", "Load_Balancer", f"lb-{s}", "selection_fields=ip_src,ip_dst",
              "ip_port_mappings:10.0.0.2=lsp1:10.0.0.9")  # fmt: skip
        nbctl(source_server, "lr-nat-add", f"lr-{s}", "snat", "172.16.0.1", "10.0.0.0/24")
        nat = nbctl(source_server, "--bare", "--columns=_uuid", "find", "NAT", "external_ip=172.16.0.1")
        lrp_id = nbctl(source_server, "--bare", "--columns=_uuid", "find", "Logical_Router_Port", f"name={lrp_name}")
        nbctl(source_server, "set", "NAT", nat, f"gateway_port={lrp_id}")
        middle = _copy_out_and_back(source_server, f"{ovsdb_server.url}?namespace=f{s}")
        (port,) = middle[LogicalRouterPort]
        assert isinstance(port, LogicalRouterPort)
        assert (port.ipv6_ra_configs, port.ipv6_prefix) == (
            {"address_mode": "slaac", "send_periodic": "true"},
            ["2001:db8::/64"],
        )
        (nat_rule,) = middle[NAT]
        assert isinstance(nat_rule, NAT) and nat_rule.gateway_port == port.id
    assert nbctl(ovsdb_server, "get", "Logical_Router_Port", lrp_name, "ipv6_ra_configs:address_mode") == "slaac"
    assert nbctl(ovsdb_server, "get", "Logical_Router_Port", lrp_name, "ipv6_prefix") == '["2001:db8::/64"]'
    acls = nbctl(ovsdb_server, "--bare", "--columns=label,meter", "find", "ACL", "label=1234").split()
    assert acls == ["1234", "acl-meter"]
    assert nbctl(ovsdb_server, "get", "Load_Balancer", f"lb-{s}", "selection_fields") == "[ip_dst, ip_src]"
    assert nbctl(ovsdb_server, "get", "Load_Balancer", f"lb-{s}", "ip_port_mappings:10.0.0.2") == '"lsp1:10.0.0.9"'
    lrp_back = nbctl(ovsdb_server, "--bare", "--columns=_uuid", "find", "Logical_Router_Port", f"name={lrp_name}")
    nat_back = nbctl(ovsdb_server, "--bare", "--columns=gateway_port", "find", "NAT", "external_ip=172.16.0.1")
    assert nat_back == lrp_back != ""


def test_a_copy_of_a_source_holding_values_in_columns_no_field_maps_is_refused_naming_the_columns(
    tmp_path: Path,
) -> None:
    # A column of a mapped table that no model field maps (OVN's Logical_Switch.dns_records, a newer
    # schema's column): a copy lost the values without a word. Rows holding the default are no loss.
    s = uuid.uuid4().hex[:8]
    schema = json.loads(find_ovn_nb_schema().read_text())
    schema["tables"]["Logical_Switch"]["columns"]["site_note"] = {"type": "string"}
    path = tmp_path / "nb-with-site-note.ovsschema"
    path.write_text(json.dumps(schema))
    with OvsdbServer(schema=path) as source_server:
        nbctl(source_server, "ls-add", f"ls1-{s}")
        nbctl(source_server, "ls-add", f"ls2-{s}")
        with nbdb.connect(source_server.url) as source, nbdb.connect(f"memory://cols-{s}") as destination:
            Copier(source, destination).run()  # no switch holds a note: nothing is lost
            assert len(destination.list(LogicalSwitch)) == 2
        ovsdb_transact(
            source_server.members[0].address,
            [
                {
                    "op": "update",
                    "table": "Logical_Switch",
                    "where": [["name", "==", f"ls1-{s}"]],
                    "row": {"site_note": "rack-7"},
                }
            ],
        )
        with nbdb.connect(source_server.url) as source, nbdb.connect(f"memory://cols2-{s}") as destination:
            with pytest.raises(nbdb.UnsupportedError) as refused:
                Copier(source, destination).run()
            assert "OVN_Northbound.Logical_Switch.site_note (1 rows)" in str(refused.value)
            assert destination.list(LogicalSwitch) == []


def test_a_copy_of_named_topics_is_not_refused_for_rows_of_unmapped_tables(tmp_path: Path) -> None:
    # Rows of a table no model maps carry no topic: a copy of tenant-a would never take them, yet it was
    # refused (naming the table) until every model was named with --models.
    s = uuid.uuid4().hex[:8]
    schema = json.loads(find_ovn_nb_schema().read_text())
    schema["tables"]["Site_Note"] = {"columns": {"text": {"type": "string"}}, "isRoot": True}
    path = tmp_path / "nb.ovsschema"
    path.write_text(json.dumps(schema))
    with OvsdbServer(schema=path) as server:
        ovsdb_transact(server.members[0].address, [{"op": "insert", "table": "Site_Note", "row": {"text": s}}])
        with nbdb.connect(server.url) as source, nbdb.connect(f"memory://t-{s}") as destination:
            source.create(LogicalSwitch(name=f"ls-{s}", topic="tenant-a"))
            Copier(source, destination, CopyOptions(topics=["tenant-a"])).run()
            assert [ls.name for ls in destination.list(LogicalSwitch)] == [f"ls-{s}"]
            # A copy that takes objects without a topic would leave the note behind: still refused.
            with pytest.raises(nbdb.errors.UnsupportedError, match="Site_Note"):
                Copier(source, destination, CopyOptions(topics=["tenant-a", None])).run()
