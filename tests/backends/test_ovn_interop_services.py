"""OVN's service tables, modelled since the first built-in models: read and written both ways with ``ovn-nbctl``.

``Mirror`` (``mirror-add``, ``lsp-attach-mirror``), ``Forwarding_Group`` (``fwd-group-add``), ``Copp``
(``copp-add``, ``ls-copp-add``, ``lr-copp-add``), ``BFD`` (``lr-route-add --bfd``), ``DNS``,
``Load_Balancer_Group`` and ``Load_Balancer_Health_Check`` (no ovn-nbctl command: its generic
``create``/``add``), and the columns of the mapped tables that reference them. nbdb read none of
them: a copy of an OVN database holding any was refused, and a controller could not set them.
One shared OVN_Northbound server; names are unique per test.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import nbdb
from nbdb.families.ovsdb import rows
from nbdb.models import (
    BFD,
    DNS,
    Chassis,
    Copp,
    Direction,
    ForwardingGroup,
    LoadBalancer,
    LoadBalancerGroup,
    LoadBalancerHealthCheck,
    LogicalRouter,
    LogicalRouterPort,
    LogicalRouterStaticRoute,
    LogicalSwitch,
    LogicalSwitchPort,
    Meter,
    MeterBand,
    Mirror,
    MirrorType,
    StaticMACBinding,
    all_models,
)
from nbdb.models.base import Model
from nbdb.testing.fixtures import ovsdb_server  # noqa: F401
from nbdb.testing.ovsdb import OvsdbServer
from nbdb.tools import Copier, CopyOptions
from nbdb.tools.dump import dump, load

from .test_ovn_interop_tables import nbctl

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def db(ovsdb_server: OvsdbServer) -> Iterator[nbdb.Database]:  # noqa: F811
    with nbdb.connect(ovsdb_server.url) as database:
        yield database


def _uuid(nb: OvsdbServer, table: str, condition: str) -> str:
    return str(nbctl(nb, "--bare", "--columns=_uuid", "find", table, condition))


def _services(nb: OvsdbServer, s: str) -> None:
    """One of each service table, as an operator makes them with ovn-nbctl, on switch ls-S and router lr-S."""
    nbctl(nb, "ls-add", f"ls-{s}")
    nbctl(nb, "lsp-add", f"ls-{s}", f"p1-{s}")
    nbctl(nb, "lsp-add", f"ls-{s}", f"p2-{s}")
    nbctl(nb, "mirror-add", f"mir-{s}", "gre", "42", "to-lport", "192.168.1.1")
    nbctl(nb, "lsp-attach-mirror", f"p1-{s}", f"mir-{s}")
    nbctl(nb, "--liveness", "fwd-group-add", f"fg-{s}", f"ls-{s}", "10.0.0.100", "0a:00:00:00:00:99",
          f"p1-{s}", f"p2-{s}")  # fmt: skip
    nbctl(nb, "copp-add", f"copp-{s}", "arp", "meter1")
    nbctl(nb, "ls-copp-add", f"copp-{s}", f"ls-{s}")
    nbctl(nb, "lr-add", f"lr-{s}")
    nbctl(nb, "lrp-add", f"lr-{s}", f"lrp-{s}", "0a:00:00:00:00:fe", "10.0.0.1/24")
    nbctl(nb, "lr-copp-add", f"copp-{s}", f"lr-{s}")
    nbctl(nb, "--bfd", "lr-route-add", f"lr-{s}", "192.168.0.0/24", "10.0.0.2", f"lrp-{s}")
    nbctl(nb, "lb-add", f"lb-{s}", "10.1.0.1:80", "10.0.0.2:80")
    nbctl(nb, "--id=@hc", "create", "Load_Balancer_Health_Check", 'vip="10.1.0.1:80"', "options:interval=5",
          "--", "add", "Load_Balancer", f"lb-{s}", "health_check", "@hc")  # fmt: skip
    lb = _uuid(nb, "Load_Balancer", f"name=lb-{s}")
    nbctl(nb, "--id=@g", "create", "Load_Balancer_Group", f"name=lbg-{s}", f"load_balancer={lb}",
          "--", "add", "Logical_Switch", f"ls-{s}", "load_balancer_group", "@g",
          "--", "add", "Logical_Router", f"lr-{s}", "load_balancer_group", "@g")  # fmt: skip
    nbctl(nb, "--id=@d", "create", "DNS", 'records:vm1="10.0.0.5"',
          "--", "add", "Logical_Switch", f"ls-{s}", "dns_records", "@d")  # fmt: skip


def test_the_service_tables_ovn_nbctl_writes_are_read_with_their_references(
    ovsdb_server: OvsdbServer,  # noqa: F811
    db: nbdb.Database,
) -> None:
    s = uuid.uuid4().hex[:8]
    _services(ovsdb_server, s)
    (switch,) = [x for x in db.list(LogicalSwitch) if x.name == f"ls-{s}"]
    (router,) = [x for x in db.list(LogicalRouter) if x.name == f"lr-{s}"]
    port = db.get_by(LogicalSwitchPort, name=f"p1-{s}")
    mirror = db.get_by(Mirror, name=f"mir-{s}")
    copp = db.get_by(Copp, name=f"copp-{s}")
    group = db.get_by(LoadBalancerGroup, name=f"lbg-{s}")
    assert port is not None and mirror is not None and copp is not None and group is not None
    assert (mirror.type, mirror.index, mirror.filter, mirror.sink) == (MirrorType.GRE, 42, Direction.TO_LPORT,
                                                                      "192.168.1.1")  # fmt: skip
    assert port.mirror_rules == [mirror.id]
    (fwd,) = [f for f in db.list(ForwardingGroup) if f.switch == switch.id]
    assert (fwd.name, fwd.vip, fwd.vmac, fwd.liveness, sorted(fwd.child_port)) == (
        f"fg-{s}",
        "10.0.0.100",
        "0a:00:00:00:00:99",
        True,
        [f"p1-{s}", f"p2-{s}"],
    )
    assert copp.meters == {"arp": "meter1"}
    assert switch.copp == router.copp == copp.id
    (route,) = [r for r in db.list(LogicalRouterStaticRoute) if r.router == router.id]
    bfd = db.get(BFD, route.bfd)  # type: ignore[arg-type]
    assert (bfd.logical_port, bfd.dst_ip) == (f"lrp-{s}", "10.0.0.2")
    (lb,) = [x for x in db.list(LoadBalancer) if x.name == f"lb-{s}"]
    (check,) = [c for c in db.list(LoadBalancerHealthCheck) if c.load_balancer == lb.id]
    assert (check.vip, check.options) == ("10.1.0.1:80", {"interval": "5"})
    assert group.load_balancer == [lb.id]
    assert switch.load_balancer_group == router.load_balancer_group == [group.id]
    (dns,) = [db.get(DNS, d) for d in switch.dns_records]
    assert dns.records == {"vm1": "10.0.0.5"}
    cache = db.cache([Mirror, ForwardingGroup, Copp, BFD, DNS, LoadBalancerGroup, LoadBalancerHealthCheck])
    assert cache.wait_synced(10)
    assert cache.get(ForwardingGroup, fwd.id) == fwd and cache.get(BFD, bfd.id) == bfd
    assert not cache.corrupt
    cache.close()


def test_the_service_objects_nbdb_writes_are_what_ovn_nbctl_shows(
    ovsdb_server: OvsdbServer,  # noqa: F811
    db: nbdb.Database,
) -> None:
    s = uuid.uuid4().hex[:8]
    switch = db.create(LogicalSwitch(name=f"ls-{s}"))
    port = db.create(LogicalSwitchPort(switch=switch, name=f"p1-{s}"))
    mirror = db.create(Mirror(name=f"mir-{s}", filter="from-lport", sink="192.168.1.2", type="erspan", index=7))
    db.update(port.replace(mirror_rules=[mirror.id]))
    mirrors = nbctl(ovsdb_server, "mirror-list")
    assert f"{mirror.name}:" in mirrors and "erspan" in mirrors and "192.168.1.2" in mirrors
    assert nbctl(ovsdb_server, "get", "Logical_Switch_Port", f"p1-{s}", "mirror_rules") == f"[{mirror.id}]"
    db.create(ForwardingGroup(switch=switch, name=f"fg-{s}", vip="10.0.0.100", vmac="0a:00:00:00:00:99",
                              child_port=[f"p1-{s}"]))  # fmt: skip
    shown = nbctl(ovsdb_server, "fwd-group-list", f"ls-{s}")
    assert f"fg-{s}" in shown and "10.0.0.100" in shown and f"p1-{s}" in shown
    copp = db.create(Copp(name=f"copp-{s}", meters={"arp": "m1", "bfd": "m2"}))
    switch = db.update(db.get(LogicalSwitch, switch.id).replace(copp=copp.id))
    assert nbctl(ovsdb_server, "copp-list", f"copp-{s}").split() == ["arp:", "m1", "bfd:", "m2"]
    assert nbctl(ovsdb_server, "get", "Logical_Switch", f"ls-{s}", "copp") == str(copp.id)
    # A weak reference: ovsdb-server clears the switch's copp when the Copp goes (ovn-nbctl copp-del).
    nbctl(ovsdb_server, "copp-del", f"copp-{s}")
    assert db.get(LogicalSwitch, switch.id).copp is None
    lb = db.create(LoadBalancer(name=f"lb-{s}", vips={"10.1.0.1:80": "10.0.0.2:80"}))
    check = db.create(LoadBalancerHealthCheck(load_balancer=lb, vip="10.1.0.1:80", options={"timeout": "3"}))
    assert nbctl(ovsdb_server, "get", "Load_Balancer", f"lb-{s}", "health_check") == f"[{check.id}]"
    # OVN's Load_Balancer_Group has no external_ids: ovn-nbctl's group is read (nbdb's own writes of
    # one: test_load_balancer_groups_are_written_both_ways).
    nbctl(ovsdb_server, "create", "Load_Balancer_Group", f"name=lbg-{s}", f"load_balancer={lb.id}")
    group = db.get_by(LoadBalancerGroup, name=f"lbg-{s}")
    assert group is not None and group.load_balancer == [lb.id]
    db.update(db.get(LogicalSwitch, switch.id).replace(load_balancer_group=[group.id]))
    assert nbctl(ovsdb_server, "get", "Logical_Switch", f"ls-{s}", "load_balancer_group") == f"[{group.id}]"
    router = db.create(LogicalRouter(name=f"lr-{s}"))
    bfd = db.create(BFD(logical_port=f"lrp-{s}", dst_ip="10.0.0.2", min_tx=100, detect_mult=3))
    db.create(LogicalRouterStaticRoute(router=router, ip_prefix="192.168.0.0/24", nexthop="10.0.0.2", bfd=bfd.id))
    assert nbctl(ovsdb_server, "--bare", "--columns=bfd", "find", "Logical_Router_Static_Route",
                 "nexthop=10.0.0.2", f"bfd={bfd.id}") == str(bfd.id)  # fmt: skip
    assert nbctl(ovsdb_server, "get", "BFD", str(bfd.id), "min_tx", "detect_mult").split() == ["100", "3"]
    dns = db.create(DNS(records={"vm1": "10.0.0.5 aef0::5"}))
    db.update(db.get(LogicalSwitch, switch.id).replace(dns_records=[dns.id]))
    assert nbctl(ovsdb_server, "get", "DNS", str(dns.id), "records:vm1") == '"10.0.0.5 aef0::5"'
    # ovn-nbctl's own delete of the switch takes its forwarding groups (non-root rows) along.
    nbctl(ovsdb_server, "ls-del", f"ls-{s}")
    assert [f for f in db.list(ForwardingGroup) if f.switch == switch.id] == []


@pytest.mark.parametrize("kind", ["memory", "sqlite", "ovsdb"])
def test_a_plain_delete_of_a_switch_load_balancer_or_meter_takes_its_owned_children_along(
    kind: str,
    ovsdb_server: OvsdbServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    # Forwarding_Group, Load_Balancer_Health_Check and Meter_Band are non-root rows only their switch,
    # load balancer or meter holds: ovsdb-server collects them with it (ovn-nbctl ls-del, lb-del,
    # meter-del).
    s = uuid.uuid4().hex[:8]
    url = {
        "memory": f"memory://svc-{s}",
        "sqlite": f"sqlite:///{tmp_path}/svc.db",
        "ovsdb": f"{ovsdb_server.url}?namespace=svc{s}",
    }[kind]
    with nbdb.connect(url) as db:
        switch = db.create(LogicalSwitch(name=f"ls-{s}"))
        fwd = db.create(
            ForwardingGroup(switch=switch, name=f"fg-{s}", vip="10.0.0.1", vmac="0a:00:00:00:00:01", child_port=["p"])
        )
        lb = db.create(LoadBalancer(name=f"lb-{s}", vips={"10.1.0.1:80": "10.0.0.2:80"}))
        kept_lb = db.create(LoadBalancer(name=f"lb2-{s}"))
        db.create(LoadBalancerHealthCheck(load_balancer=lb, vip="10.1.0.1:80"))
        kept = db.create(LoadBalancerHealthCheck(load_balancer=kept_lb, vip="10.1.0.2:80"))
        db.delete(switch)
        assert [f.id for f in db.list(ForwardingGroup)] == []
        assert fwd.switch == switch.id
        db.delete(lb)
        assert [c.id for c in db.list(LoadBalancerHealthCheck)] == [kept.id]
        assert [x.id for x in db.list(LoadBalancer)] == [kept_lb.id]
        with db.transaction() as txn:  # OVN's Meter.bands holds at least one band: one transaction
            meter = txn.create(Meter(name=f"m-{s}", unit="kbps"))
            txn.create(MeterBand(meter=meter, rate=10))
            txn.create(MeterBand(meter=meter, rate=20, burst_size=3))
            kept_meter = txn.create(Meter(name=f"k-{s}", unit="kbps"))
            kept_band = txn.create(MeterBand(meter=kept_meter, rate=30))
        db.delete(db.get(Meter, meter.id))
        assert [b.id for b in db.list(MeterBand)] == [kept_band.id]
        assert [m.id for m in db.list(Meter)] == [kept_meter.id]


def test_a_copy_out_of_ovn_through_memory_and_sqlite_and_back_keeps_every_service_object(
    ovsdb_server: OvsdbServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    # nbdb copy refused an OVN database holding any of these rows (no model mapped their tables), and
    # the references to them (a switch's dns_records, copp, load_balancer_group...) were lost.
    s = uuid.uuid4().hex[:8]
    models = [m for m in all_models() if m.__module__ == "nbdb.models.ovn" and m is not Chassis]
    held: dict[type[Model], list[Model]] = {}
    with OvsdbServer() as source_server:
        _services(source_server, s)
        with (
            nbdb.connect(source_server.url) as source,
            nbdb.connect(f"memory://svc-{s}") as middle,
            nbdb.connect(f"sqlite:///{tmp_path}/svc.db") as lite,
            nbdb.connect(f"{ovsdb_server.url}?namespace=svc{s}") as back,
        ):
            Copier(source, middle).run()  # every model: nothing unmapped is left to refuse it
            result = Copier(middle, lite, CopyOptions(models=models)).run()
            assert result.differences == []
            held = {m: sorted(lite.list(m), key=lambda o: o.id) for m in models}
            assert held == {m: sorted(middle.list(m), key=lambda o: o.id) for m in models}
            for m in (Mirror, ForwardingGroup, Copp, BFD, DNS, LoadBalancerGroup, LoadBalancerHealthCheck):
                assert len(held[m]) == 1, m
            # OVN's Load_Balancer_Group has no external_ids, where nbdb keeps a namespace: written
            # outside one only. A copy holding one into a namespace is refused before anything is
            # written (it stopped part way).
            with pytest.raises(nbdb.UnsupportedError, match=r"LoadBalancerGroup objects .*Load_Balancer_Group has no"):
                Copier(lite, back, CopyOptions(models=models)).run()
            assert back.list(LogicalSwitch) == []
            for holder in (*lite.list(LogicalSwitch), *lite.list(LogicalRouter)):
                lite.update(holder.replace(load_balancer_group=[]))
            lite.delete(held[LoadBalancerGroup][0])
            result = Copier(lite, back, CopyOptions(models=models, ignore_list_order=True)).run()
            assert result.differences == []
    # What ovn-nbctl shows of the copy is what it showed of the source.
    assert "10.0.0.100" in nbctl(ovsdb_server, "fwd-group-list", f"ls-{s}")
    assert nbctl(ovsdb_server, "copp-list", f"copp-{s}").split() == ["arp:", "meter1"]
    assert "192.168.1.1" in nbctl(ovsdb_server, "mirror-list")
    port = _uuid(ovsdb_server, "Logical_Switch_Port", f"name=p1-{s}")
    assert nbctl(ovsdb_server, "get", "Logical_Switch_Port", port, "mirror_rules") == f"[{held[Mirror][0].id}]"
    switch = _uuid(ovsdb_server, "Logical_Switch", f"name=ls-{s}")
    assert nbctl(ovsdb_server, "get", "Logical_Switch", switch, "dns_records") == f"[{held[DNS][0].id}]"
    assert nbctl(ovsdb_server, "get", "Logical_Switch", switch, "copp") == str(held[Copp][0].id)
    routes = nbctl(
        ovsdb_server, "--bare", "--columns=bfd", "find", "Logical_Router_Static_Route", "ip_prefix=192.168.0.0/24"
    )
    assert str(held[BFD][0].id) in routes.split()
    lb = _uuid(ovsdb_server, "Load_Balancer", f"name=lb-{s}")
    assert nbctl(ovsdb_server, "get", "Load_Balancer", lb, "health_check") == f"[{held[LoadBalancerHealthCheck][0].id}]"


@pytest.mark.parametrize("how", ["plain", "transaction", "cascade"])
def test_deleting_a_load_balancer_a_load_balancer_group_holds_drops_it_from_the_group(
    ovsdb_server: OvsdbServer,  # noqa: F811
    db: nbdb.Database,
    how: str,
) -> None:
    # Load_Balancer_Group.load_balancer is a weak reference: ovsdb-server drops it when the load
    # balancer goes (ovn-nbctl lb-del). Before the merge nbdb's delete did the same; since the group
    # is modelled, the delete plans a weak drop that rewrites the group, which the store refuses:
    # a load balancer in any group (ovn-kubernetes puts every one in one) can no longer be deleted.
    s = uuid.uuid4().hex[:8]
    nbctl(ovsdb_server, "lb-add", f"lb-{s}", "10.1.0.1:80", "10.0.0.2:80")
    (lb,) = [x for x in db.list(LoadBalancer) if x.name == f"lb-{s}"]
    nbctl(ovsdb_server, "create", "Load_Balancer_Group", f"name=lbg-{s}", f"load_balancer={lb.id}")
    if how == "transaction":
        with db.transaction() as tx:
            tx.delete(lb)
    elif how == "cascade":
        db.delete(lb, cascade=True)
    else:
        db.delete(lb)
    group = db.get_by(LoadBalancerGroup, name=f"lbg-{s}")
    assert group is not None and group.load_balancer == []
    with pytest.raises(nbdb.NotFoundError):
        db.get(LoadBalancer, lb.id)


@pytest.mark.parametrize("index", [-1, 2**32])
def test_a_mirror_ovn_nbctl_writes_with_any_integer_index_is_read(
    ovsdb_server: OvsdbServer,  # noqa: F811
    db: nbdb.Database,
    index: int,
) -> None:
    # OVN's Mirror.index is a plain integer (no minInteger/maxInteger) and ovn-nbctl mirror-add parses
    # it with str_to_long: "-1" and "4294967296" are written. The model's 0..2**32-1 made the row a
    # CorruptRecordError for list/get and a corrupt record in every cache.
    s = uuid.uuid4().hex[:8]
    nbctl(ovsdb_server, "mirror-add", f"mir-{s}", "gre", str(index), "to-lport", "192.168.1.1")
    mirror = db.get_by(Mirror, name=f"mir-{s}")
    assert mirror is not None and mirror.index == index


def test_a_forwarding_group_and_a_router_port_ovn_nbctl_writes_with_a_short_form_mac_are_read(
    ovsdb_server: OvsdbServer,  # noqa: F811
    db: nbdb.Database,
) -> None:
    # ovn-nbctl fwd-group-add and lrp-add check the MAC with eth_addr_from_string, which takes
    # "a:0:0:0:0:1", and store it as typed; MACAddress wanted six hex pairs, so the group and the
    # port were corrupt records. They read in canonical form.
    s = uuid.uuid4().hex[:8]
    nbctl(ovsdb_server, "ls-add", f"ls-{s}")
    nbctl(ovsdb_server, "lsp-add", f"ls-{s}", f"p-{s}")
    nbctl(ovsdb_server, "fwd-group-add", f"fg-{s}", f"ls-{s}", "10.0.0.1", "a:0:0:0:0:1", f"p-{s}")
    nbctl(ovsdb_server, "lr-add", f"lr-{s}")
    nbctl(ovsdb_server, "lrp-add", f"lr-{s}", f"lrp-{s}", "A:b:0:0:0:2", "10.9.0.1/24")
    (fwd,) = [f for f in db.list(ForwardingGroup) if f.name == f"fg-{s}"]
    assert fwd.vmac == "0a:00:00:00:00:01"
    port = db.get_by(LogicalRouterPort, name=f"lrp-{s}")
    assert port is not None and port.mac == "0a:0b:00:00:00:02"


def test_a_health_check_ovn_nbctl_creates_without_a_vip_is_read(
    ovsdb_server: OvsdbServer,  # noqa: F811
    db: nbdb.Database,
) -> None:
    # Load_Balancer_Health_Check.vip is a plain string whose default is "": a generic `ovn-nbctl create`
    # that sets only options writes it so; the model's min_length=1 makes it a corrupt record.
    s = uuid.uuid4().hex[:8]
    nbctl(ovsdb_server, "lb-add", f"lb-{s}", "10.1.0.1:80", "10.0.0.2:80")
    nbctl(ovsdb_server, "--id=@hc", "create", "Load_Balancer_Health_Check", "options:interval=5",
          "--", "add", "Load_Balancer", f"lb-{s}", "health_check", "@hc")  # fmt: skip
    (lb,) = [x for x in db.list(LoadBalancer) if x.name == f"lb-{s}"]
    (check,) = [c for c in db.list(LoadBalancerHealthCheck) if c.load_balancer == lb.id]
    assert check.vip == "" and check.options == {"interval": "5"}


def test_a_may_exist_create_of_a_load_balancer_group_that_exists_returns_it(
    ovsdb_server: OvsdbServer,  # noqa: F811
    db: nbdb.Database,
) -> None:
    # may_exist returns the stored object and writes nothing (ovsdbapp's may_exist); the group is
    # unique by name.
    s = uuid.uuid4().hex[:8]
    nbctl(ovsdb_server, "create", "Load_Balancer_Group", f"name=lbg-{s}")
    stored = db.get_by(LoadBalancerGroup, name=f"lbg-{s}")
    assert stored is not None
    got = db.create(LoadBalancerGroup(name=f"lbg-{s}"), may_exist=True)
    assert got == stored
    assert db.create(LoadBalancerGroup(id=stored.id, name=f"lbg-{s}"), may_exist=True) == stored
    # One that is not stored is created (issue 14: the table was read only).
    made = db.create(LoadBalancerGroup(name=f"other-{s}"), may_exist=True)
    assert db.get_by(LoadBalancerGroup, name=f"other-{s}") == made


def test_load_balancer_groups_are_written_both_ways(ovsdb_server: OvsdbServer, db: nbdb.Database) -> None:  # noqa: F811
    # Issue 14: Load_Balancer_Group has no external_ids, where nbdb keeps an object's version and commit
    # tokens: it was read only, while ovn-nbctl and Neutron write it. Now written with its columns alone.
    s = uuid.uuid4().hex[:8]
    assert db.backend.unwritable(LoadBalancerGroup.nbdb_table) is None
    one = db.create(LoadBalancer(name=f"lb1-{s}", vips={"10.2.0.1:80": "10.0.0.2:80"}))
    two = db.create(LoadBalancer(name=f"lb2-{s}"))
    group = db.create(LoadBalancerGroup(name=f"lbg-{s}", load_balancer=[one.id]))
    assert group.version == 1
    assert nbctl(ovsdb_server, "get", "Load_Balancer_Group", f"lbg-{s}", "load_balancer") == f"[{one.id}]"
    grown = db.update(group.replace(load_balancer=[one.id, two.id]))
    assert grown.version == 2
    shown = nbctl(ovsdb_server, "get", "Load_Balancer_Group", f"lbg-{s}", "load_balancer")
    assert sorted(shown.strip("[]").split(", ")) == sorted([str(one.id), str(two.id)])
    # An update that changes nothing writes nothing and keeps the version (the server shows no change).
    assert db.update(grown).version == 2
    with pytest.raises(nbdb.ConflictError):
        db.update(group.replace(name=f"stale-{s}"))  # a stale copy: refused, nothing written
    assert db.get_by(LoadBalancerGroup, name=f"stale-{s}") is None
    # ovn-nbctl's change is a new version: the copy from before it is refused.
    nbctl(ovsdb_server, "remove", "Load_Balancer_Group", f"lbg-{s}", "load_balancer", str(two.id))
    with pytest.raises(nbdb.ConflictError):
        db.update(grown.replace(name=f"mine-{s}"))
    current = db.get(LoadBalancerGroup, group.id)
    assert current.load_balancer == [one.id] and current.version == 3
    renamed = db.update(current.replace(name=f"mine-{s}"))
    assert nbctl(ovsdb_server, "get", "Load_Balancer_Group", str(group.id), "name") == f"mine-{s}"
    # A switch holds it (a strong reference); deleting a load balancer it holds drops it from the group.
    switch = db.create(LogicalSwitch(name=f"ls-{s}", load_balancer_group=[group.id]))
    db.delete(db.get(LoadBalancer, two.id))
    db.delete(db.get(LoadBalancer, one.id))
    assert db.get(LoadBalancerGroup, group.id).load_balancer == []
    assert nbctl(ovsdb_server, "get", "Load_Balancer_Group", str(group.id), "load_balancer") == "[]"
    # What only external_ids could hold is refused before anything is sent.
    with pytest.raises(nbdb.UnsupportedError, match="Load_Balancer_Group has no external_ids"):
        db.create(LoadBalancerGroup(name=f"t-{s}", topic="tenant"))
    with pytest.raises(nbdb.UnsupportedError, match="Load_Balancer_Group has no external_ids"):
        db.create(LoadBalancerGroup(name=f"e-{s}", external_ids={"neutron:id": "x"}))
    db.delete(db.get(LogicalSwitch, switch.id))
    db.delete(db.get(LoadBalancerGroup, renamed.id))
    assert nbctl(ovsdb_server, "--bare", "--columns=name", "find", "Load_Balancer_Group", f"name=mine-{s}") == ""


def test_the_store_says_why_it_cannot_write_a_table_without_external_ids_in_a_namespace(
    ovsdb_server: OvsdbServer,  # noqa: F811
) -> None:
    # One answer (Backend.unwritable) for the delete's walk, may_exist and a copy; a write raises it. A
    # row without external_ids cannot hold the namespace: outside one it is written (issue 14).
    with nbdb.connect(f"{ovsdb_server.url}?namespace=nx{uuid.uuid4().hex[:6]}") as db:
        why = db.backend.unwritable(LoadBalancerGroup.nbdb_table)
        assert why is not None and "Load_Balancer_Group has no external_ids" in why and "namespace" in why
        assert db.backend.unwritable(LoadBalancer.nbdb_table) is None
        with pytest.raises(nbdb.UnsupportedError, match="Load_Balancer_Group has no external_ids"):
            db.create(LoadBalancerGroup(name=f"unwritable-{uuid.uuid4().hex[:8]}"))


@pytest.mark.parametrize("resume", [False, True])
def test_a_load_of_a_dump_holding_a_load_balancer_group_into_ovn_writes_nothing(
    ovsdb_server: OvsdbServer,  # noqa: F811
    resume: bool,
) -> None:
    # A copy checks Backend.unwritable before writing (tools/copy.py unstorable); `nbdb load --resume`
    # does not: it upserts the load balancer, then the group's batch raises UnsupportedError, and no
    # later run can finish. It should be refused before anything is written, as a copy is.
    s = uuid.uuid4().hex[:8]
    buf = io.BytesIO()
    with nbdb.connect(f"memory://review-{s}") as source:
        lb = source.create(LoadBalancer(name=f"lb-{s}"))
        source.create(LoadBalancerGroup(name=f"lbg-{s}", load_balancer=[lb.id]))
        dump(source, buf)
    with nbdb.connect(f"{ovsdb_server.url}?namespace=rv{s}") as dest:
        with pytest.raises(nbdb.UnsupportedError, match="Load_Balancer_Group"):
            load(dest, buf.getvalue().splitlines(keepends=True), resume=resume, batch=1)
        assert dest.list(LoadBalancer) == []


def test_a_read_copy_of_a_deleted_load_balancer_group_does_not_overwrite_one_created_again_under_its_id(
    db: nbdb.Database,
) -> None:
    # Review of issue 14 (semantics.md, compare-and-swap, cas_across_recreate): a copy read before a
    # delete raises ConflictError once the id is created again, even at the same version. A row without
    # external_ids keeps no nbdb:txn token, so a read copy carries none and was compared by version alone.
    s = uuid.uuid4().hex[:8]
    group = db.create(LoadBalancerGroup(name=f"a-{s}"))
    old = db.get(LoadBalancerGroup, group.id)
    db.delete(old)
    again = db.create(LoadBalancerGroup(id=group.id, name=f"b-{s}"))
    assert again.version == old.version == 1
    with pytest.raises(nbdb.ConflictError):
        db.update(old.replace(name=f"c-{s}"))
    assert db.get(LoadBalancerGroup, group.id).name == f"b-{s}", "a copy of the deleted group overwrote the new one"


@pytest.mark.parametrize("source", ["read", "transaction"])
def test_a_stale_copy_of_a_load_balancer_group_from_another_connection_is_never_a_lost_update(
    ovsdb_server: OvsdbServer,  # noqa: F811
    source: str,
) -> None:
    # Review of issue 14: versions of rows without external_ids are each connection's count, so a copy
    # read on one connection (version 1, before its own update) matches another connection's count of
    # the row it first saw after that update: the update went through and silently overwrote a change
    # the copy never saw (semantics.md: a stale copy is a ConflictError, never a lost update). Review 15:
    # the same of a result of a transaction that put a group and another row, whose stamp is the commit's
    # token (one per commit), which the group's row does not keep: it was compared by its version alone.
    s = uuid.uuid4().hex[:8]
    with nbdb.connect(ovsdb_server.url) as one, nbdb.connect(ovsdb_server.url, timeout=19) as two:
        if source == "read":
            group = one.create(LoadBalancerGroup(name=f"a-{s}"))
            stale = one.get(LoadBalancerGroup, group.id)
            one.update(stale.replace(name=f"b-{s}"))
        else:
            with one.transaction() as txn:
                lb = txn.create(LoadBalancer(name=f"lb-{s}", vips={"10.0.0.8:80": "10.1.0.1:80"}))
                txn.create(LoadBalancerGroup(name=f"g-{s}", load_balancer=[lb.id]))
            stale = txn.results[1]
            assert isinstance(stale, LoadBalancerGroup)
            two.update(two.get(LoadBalancerGroup, stale.id).replace(name=f"b-{s}"))
        with nbdb.connect(ovsdb_server.url, timeout=18) as three:
            assert three.get(LoadBalancerGroup, stale.id).name == f"b-{s}"
            with pytest.raises(nbdb.ConflictError):
                three.update(stale.replace(name=f"c-{s}"))
            assert three.get(LoadBalancerGroup, stale.id).name == f"b-{s}", "b was lost"


def test_a_copy_of_an_unchanged_group_is_written_on_a_connection_started_after_its_last_change(
    ovsdb_server: OvsdbServer,  # noqa: F811
) -> None:
    # A row without external_ids is compared by its content (rows.content_stamp); its version is each
    # connection's count of the contents it saw. A connection started after the group's update counts its
    # content as version 1, the copy's is 2: refused as stale though nothing changed since it was written.
    s = uuid.uuid4().hex[:8]
    with nbdb.connect(ovsdb_server.url) as one:
        group = one.create(LoadBalancerGroup(name=f"g-{s}"))
        group = one.update(group.replace(name=f"h-{s}"))
        with nbdb.connect(ovsdb_server.url, timeout=18) as three:
            three.update(group.replace(name=f"i-{s}"))
            assert three.get(LoadBalancerGroup, group.id).name == f"i-{s}"
        with pytest.raises(nbdb.ConflictError):  # now stale: the content compare still refuses it
            one.update(group.replace(name=f"j-{s}"))


def test_each_result_of_a_transaction_of_rows_without_external_ids_compares_by_the_content_it_was_written_with(
    ovsdb_server: OvsdbServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A transaction's results carry its commit's token; each row without external_ids is compared by the
    # content it was written with (rows.result_stamp), which must be the server's row as every replica reads
    # it: a set the server keeps in another order, a MAC given in upper case. Unchanged: written from any
    # connection; changed since: refused; a token this process does not know: refused, never a lost update.
    s = uuid.uuid4().hex[:8]
    with nbdb.connect(ovsdb_server.url) as one:
        with one.transaction() as txn:
            lbs = [
                txn.create(LoadBalancer(name=f"lb{n}-{s}", vips={f"10.0.0.{n}:80": "10.1.0.1:80"})) for n in range(4)
            ]
            txn.create(LoadBalancerGroup(name=f"g-{s}", load_balancer=[lb.id for lb in reversed(lbs)]))
            txn.create(StaticMACBinding(logical_port=f"lrp-{s}", ip="10.0.0.9", mac="0A:00:00:00:00:9F"))
        group, binding = txn.results[4], txn.results[5]
        assert isinstance(group, LoadBalancerGroup) and isinstance(binding, StaticMACBinding)
        with nbdb.connect(ovsdb_server.url, timeout=18) as three:
            three.update(group.replace(name=f"h-{s}"))
            three.update(binding.replace(mac="0a:00:00:00:00:a0"))
        for stale in (group.replace(name=f"i-{s}"), binding.replace(mac="0a:00:00:00:00:a1")):
            with pytest.raises(nbdb.ConflictError):
                one.update(stale)
        assert one.get(LoadBalancerGroup, group.id).name == f"h-{s}"
        assert one.get(StaticMACBinding, binding.id).mac == "0a:00:00:00:00:a0"
        with one.transaction() as txn:
            txn.create(LoadBalancer(name=f"lb9-{s}"))
            txn.update(one.get(LoadBalancerGroup, group.id).replace(name=f"j-{s}"))
        unknown = txn.results[1]
        monkeypatch.setattr(rows, "_result_stamps", {})  # as an unpickled result in another process
        with pytest.raises(nbdb.ConflictError):
            one.update(unknown.replace(name=f"k-{s}"))
        assert one.get(LoadBalancerGroup, group.id).name == f"j-{s}"


def test_a_commit_of_rows_with_external_ids_only_asks_no_ledger_marks_and_keeps_no_result_stamps(
    db: nbdb.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Review 16: every commit sorted the writer's settled ledger marks under a lock and built the content
    # stamps of its rows without external_ids (none), +3.9 % of the caller thread's instructions per port
    # update. Only a commit that puts such a row asks for them; an ordinary one (every row holds its token)
    # does neither, alone or in a transaction.
    from nbdb.families.ovsdb import family

    backend = db.backend
    asked: list[str] = []
    kept: list[int] = []
    droppable = backend._ledger.droppable  # type: ignore[attr-defined]
    monkeypatch.setattr(backend._ledger, "droppable", lambda: asked.append("ledger") or droppable())  # type: ignore[attr-defined]
    keep = family.keep_result_stamps
    monkeypatch.setattr(
        family, "keep_result_stamps", lambda token, stamps: kept.append(len(stamps)) or keep(token, stamps)
    )
    s = uuid.uuid4().hex[:8]
    switch = db.create(LogicalSwitch(name=f"sw-{s}"))
    port = db.create(LogicalSwitchPort(switch=switch, name=f"p-{s}"))
    db.update(port.replace(addresses=["0a:00:00:00:00:01"]))
    with db.transaction() as txn:
        txn.create(LogicalSwitchPort(switch=switch, name=f"q-{s}"))
        txn.create(LoadBalancer(name=f"lb-{s}"))
    assert asked == [] and kept == []
    group = db.create(LoadBalancerGroup(name=f"g-{s}"))  # a row without external_ids: marks the ledger
    assert asked  # (twice when the server had no NB_Global row to mark yet: made, then planned again)
    with db.transaction() as txn:
        txn.create(LoadBalancer(name=f"lb2-{s}"))
        txn.update(group.replace(name=f"h-{s}"))
    assert kept == [1]  # the group's content, by the commit's token
