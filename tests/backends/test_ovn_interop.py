"""Interop with the real OVN tools, both ways: ovn-nbctl -> nbdb cache, nbdb -> ovn-nbctl and ovn-northd."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import nbdb
from nbdb.models import (
    ACL,
    NAT,
    ACLAction,
    AddressSet,
    DHCPOptions,
    Direction,
    LoadBalancer,
    LogicalRouter,
    LogicalRouterPort,
    LogicalRouterStaticRoute,
    LogicalSwitch,
    LogicalSwitchPort,
    NATType,
    PortGroup,
    PortType,
)
from nbdb.testing.ovsdb import OvsdbServer
from nbdb.testing.process import find_binary

pytestmark = pytest.mark.timeout(120)

SB_SCHEMA = Path("/usr/share/ovn/ovn-sb.ovsschema")


def _eventually(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.fixture(scope="module")
def ovn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """NB and SB ovsdb-servers plus an ovn-northd between them."""
    for tool in ("ovn-nbctl", "ovn-sbctl", "ovn-northd"):
        if find_binary(tool) is None:
            pytest.fail(f"{tool} is missing (Debian package ovn-central / ovn-common)")
    with OvsdbServer() as nb, OvsdbServer(schema=SB_SCHEMA) as sb:
        run_dir = tmp_path_factory.mktemp("northd")
        log = open(run_dir / "northd.log", "w")
        northd = subprocess.Popen(
            [
                str(find_binary("ovn-northd")),
                f"--ovnnb-db={nb.remotes}",
                f"--ovnsb-db={sb.remotes}",
                f"--unixctl={run_dir / 'northd.ctl'}",
                "-vconsole:info",
                "-vsyslog:off",
                "--no-chdir",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield {"nb": nb, "sb": sb, "northd": northd}
        finally:
            northd.terminate()
            try:
                northd.wait(10)
            except subprocess.TimeoutExpired:
                northd.kill()
                northd.wait(5)
            log.close()


def nbctl(ovn: dict[str, Any], *args: str) -> str:
    out = subprocess.run(
        [str(find_binary("ovn-nbctl")), f"--db={ovn['nb'].remotes}", "--timeout=10", *args],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    return out.stdout.strip()


def sbctl(ovn: dict[str, Any], *args: str) -> str:
    out = subprocess.run(
        [str(find_binary("ovn-sbctl")), f"--db={ovn['sb'].remotes}", "--timeout=10", *args],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    return out.stdout.strip()


@pytest.fixture
def db(ovn: dict[str, Any]) -> Iterator[nbdb.Database]:
    with nbdb.connect(ovn["nb"].url) as database:
        yield database


def _uuid(text: str) -> uuid.UUID:
    return uuid.UUID(text.strip())


def test_objects_made_by_ovn_nbctl_appear_typed_in_the_cache(ovn: dict[str, Any], db: nbdb.Database) -> None:
    s = uuid.uuid4().hex[:6]
    cache = db.cache()
    assert cache.wait_synced(10)
    nbctl(ovn, "ls-add", f"ls-{s}")
    nbctl(ovn, "lsp-add", f"ls-{s}", f"lsp-{s}")
    nbctl(ovn, "lsp-set-addresses", f"lsp-{s}", "0a:00:00:00:00:01 10.0.0.5")
    nbctl(ovn, "lsp-set-port-security", f"lsp-{s}", "0a:00:00:00:00:01 10.0.0.5")
    nbctl(ovn, "lr-add", f"lr-{s}")
    nbctl(ovn, "lrp-add", f"lr-{s}", f"lrp-{s}", "0a:00:00:00:00:fe", "10.0.0.1/24")
    nbctl(ovn, "acl-add", f"ls-{s}", "to-lport", "1000", "ip4.src == 10.0.0.0/24", "allow-related")
    nbctl(ovn, "lr-nat-add", f"lr-{s}", "snat", "172.16.0.10", "10.0.0.0/24")
    nbctl(ovn, "lb-add", f"lb-{s}", "172.16.0.100:80", "10.0.0.5:8080", "tcp")
    nbctl(ovn, "pg-add", f"pg-{s}", f"lsp-{s}")
    dhcp = _uuid(nbctl(ovn, "create", "DHCP_Options", "cidr=10.0.0.0/24"))
    nbctl(
        ovn,
        "dhcp-options-set-options",
        str(dhcp),
        "lease_time=3600",
        "router=10.0.0.1",
        "server_id=10.0.0.1",
        "server_mac=0a:00:00:00:00:fe",
    )
    nbctl(ovn, "lsp-set-dhcpv4-options", f"lsp-{s}", str(dhcp))
    nbctl(ovn, "create", "Address_Set", f"name=as_{s}", 'addresses="10.0.0.5","10.0.0.6"')

    def one(model: type[Any], **equals: Any) -> Any:
        found = cache.find(model, **equals)
        return found[0] if len(found) == 1 else None

    assert _eventually(
        lambda: (
            one(AddressSet, name=f"as_{s}") is not None
            and one(LogicalSwitchPort, name=f"lsp-{s}") is not None
            and one(LogicalSwitchPort, name=f"lsp-{s}").dhcpv4_options is not None
        )
    )
    ls = one(LogicalSwitch, name=f"ls-{s}")
    port = one(LogicalSwitchPort, name=f"lsp-{s}")
    assert ls.id == _uuid(nbctl(ovn, "get", "Logical_Switch", f"ls-{s}", "_uuid"))
    assert port.switch == ls.id
    assert port.addresses == ["0a:00:00:00:00:01 10.0.0.5"]
    assert port.port_security == ["0a:00:00:00:00:01 10.0.0.5"]
    assert port.dhcpv4_options == dhcp
    assert cache.get(DHCPOptions, dhcp).options["lease_time"] == "3600"  # type: ignore[union-attr]
    lr = one(LogicalRouter, name=f"lr-{s}")
    lrp = one(LogicalRouterPort, name=f"lrp-{s}")
    assert (lrp.router, lrp.mac, lrp.networks) == (lr.id, "0a:00:00:00:00:fe", ["10.0.0.1/24"])
    acl = [a for a in cache.find(ACL, switch=ls.id)]
    assert [(a.direction, a.priority, a.action) for a in acl] == [(Direction.TO_LPORT, 1000, ACLAction.ALLOW_RELATED)]
    nat = cache.find(NAT, router=lr.id)
    assert [(n.type, n.external_ip, n.logical_ip) for n in nat] == [(NATType.SNAT, "172.16.0.10", "10.0.0.0/24")]
    lb = one(LoadBalancer, name=f"lb-{s}")
    assert lb.vips == {"172.16.0.100:80": "10.0.0.5:8080"}
    assert one(PortGroup, name=f"pg-{s}").ports == [port.id]
    assert one(AddressSet, name=f"as_{s}").addresses == ["10.0.0.5", "10.0.0.6"]
    assert not cache.corrupt
    cache.close()


def test_objects_made_by_nbdb_show_in_nbctl_and_northd_makes_flows(ovn: dict[str, Any], db: nbdb.Database) -> None:
    s = uuid.uuid4().hex[:6]
    with db.transaction() as txn:
        ls = txn.create(LogicalSwitch(name=f"nbdb-ls-{s}"))
        txn.create(
            LogicalSwitchPort(
                switch=ls,
                name=f"nbdb-vm-{s}",
                addresses=["0a:00:00:00:01:01 10.1.0.5"],
                port_security=["0a:00:00:00:01:01 10.1.0.5"],
            )
        )
        lr = txn.create(LogicalRouter(name=f"nbdb-lr-{s}"))
        txn.create(
            LogicalRouterPort(router=lr, name=f"nbdb-lrp-{s}", mac="0a:00:00:00:01:fe", networks=["10.1.0.1/24"])
        )
        txn.create(
            LogicalSwitchPort(
                switch=ls,
                name=f"nbdb-rp-{s}",
                type=PortType.ROUTER,
                addresses=["router"],
                options={"router-port": f"nbdb-lrp-{s}"},
            )
        )
        txn.create(
            ACL(switch=ls, direction=Direction.FROM_LPORT, priority=1001, match="ip4", action=ACLAction.ALLOW_RELATED)
        )
        txn.create(NAT(router=lr, type=NATType.SNAT, external_ip="172.16.1.10", logical_ip="10.1.0.0/24"))
    show = nbctl(ovn, "show", f"nbdb-ls-{s}")
    assert f"nbdb-vm-{s}" in show and "0a:00:00:00:01:01 10.1.0.5" in show
    assert "10.1.0.1/24" in nbctl(ovn, "show", f"nbdb-lr-{s}")
    assert "ip4" in nbctl(ovn, "acl-list", f"nbdb-ls-{s}")
    assert "172.16.1.10" in nbctl(ovn, "lr-nat-list", f"nbdb-lr-{s}")
    assert nbctl(ovn, "get", "Logical_Switch", f"nbdb-ls-{s}", "_uuid") == str(ls.id)
    # ovn-northd accepts them: datapaths and logical flows appear in the Southbound database.
    assert _eventually(lambda: f"nbdb-ls-{s}" in sbctl(ovn, "--columns=external_ids", "list", "Datapath_Binding"), 30)
    assert _eventually(lambda: "10.1.0.5" in sbctl(ovn, "lflow-list", f"nbdb-ls-{s}"), 30)
    assert _eventually(lambda: "172.16.1.10" in sbctl(ovn, "lflow-list", f"nbdb-lr-{s}"), 30)


def test_northd_writes_do_not_break_cas_or_the_cache(ovn: dict[str, Any], db: nbdb.Database) -> None:
    s = uuid.uuid4().hex[:6]
    ls = db.create(LogicalSwitch(name=f"cas-{s}"))
    port = db.create(LogicalSwitchPort(switch=ls, name=f"cas-p-{s}", addresses=["0a:00:00:00:02:01 10.2.0.5"]))
    nbctl(ovn, "set", "Logical_Switch_Port", f"cas-p-{s}", "enabled=false")  # a foreign write
    with pytest.raises(nbdb.ConflictError):
        db.update(port.replace(addresses=["0a:00:00:00:02:02 10.2.0.6"]))
    # ovn-northd itself writes LSP.up, which is a foreign write too: re-read and retry like any client.
    for _ in range(20):
        fresh = db.get(LogicalSwitchPort, port.id)
        assert fresh.enabled is False
        try:
            updated = db.update(fresh.replace(addresses=["0a:00:00:00:02:02 10.2.0.6"]))
            break
        except nbdb.ConflictError:
            time.sleep(0.1)
    else:
        pytest.fail("update kept conflicting")
    assert nbctl(ovn, "lsp-get-addresses", f"cas-p-{s}") == "0a:00:00:00:02:02 10.2.0.6"
    got = db.get(LogicalSwitchPort, port.id)
    assert got.addresses == updated.addresses and got.version >= updated.version


def test_a_plan_from_a_replica_that_missed_a_foreign_write_fails_on_the_server(
    ovn: dict[str, Any], db: nbdb.Database
) -> None:
    """The compare-and-swap covers every mapped column, those at their default too.

    The server sends rows without their default cells; a ``wait`` that only
    compared the cells the replica held let an update planned before
    ovn-nbctl set ``enabled`` (default: empty) land over that change. Planned
    first and sent after the foreign write, the plan's ``wait`` must fail.
    """
    from nbdb.codec import encode
    from nbdb.families.ovsdb import results
    from nbdb.families.ovsdb.planner import plan_commit
    from nbdb.spi import Put

    s = uuid.uuid4().hex[:6]
    # ovn-northd writes a new port's ``up`` within moments of its creation: a foreign write that
    # would fail the plan's ``wait`` for the wrong reason, or (seen in CI) land between the create
    # and the plan. It is paused (SIGSTOP) from before the create until the plan was sent.
    northd = ovn["northd"]
    northd.send_signal(signal.SIGSTOP)
    try:
        ls = db.create(LogicalSwitch(name=f"lag-{s}"))
        port = db.create(LogicalSwitchPort(switch=ls, name=f"lag-p-{s}"))
        backend: Any = db.backend
        new = port.replace(addresses=["0a:00:00:00:03:01 10.3.0.5"])
        with backend.replica.cond:
            row = backend.replica.row(backend.mapping.get("LogicalSwitchPort"), port.id)
            assert "enabled" not in row  # as the server sent it: the default cell left out
            plan = plan_commit(
                backend.mapping,
                backend.replica,
                [Put(new.nbdb_table, new.id, new.topic, encode(new), port.version)],
                "t",
            )
        nbctl(ovn, "set", "Logical_Switch_Port", f"lag-p-{s}", "enabled=false")  # after the plan, before it is sent
        failure = results.check(backend._transact(plan.db, plan.ops))
    finally:
        northd.send_signal(signal.SIGCONT)
    assert isinstance(failure, results.TimedOut) and plan.reason(failure.index)[0] == "cas"
    assert nbctl(ovn, "lsp-get-addresses", f"lag-p-{s}") == ""


def test_unmappable_rows_are_corrupt_reports_not_a_dead_cache(ovn: dict[str, Any], db: nbdb.Database) -> None:
    s = uuid.uuid4().hex[:6]
    cache = db.cache(LogicalSwitchPort)
    assert cache.wait_synced(10)
    nbctl(ovn, "ls-add", f"bad-{s}")
    nbctl(ovn, "lsp-add", f"bad-{s}", f"bad-p-{s}")
    bad = _uuid(nbctl(ovn, "get", "Logical_Switch_Port", f"bad-p-{s}", "_uuid"))
    nbctl(ovn, "set", "Logical_Switch_Port", f"bad-p-{s}", "addresses=not-a-mac")
    assert _eventually(lambda: ("LogicalSwitchPort", bad) in cache.corrupt)
    nbctl(ovn, "lsp-add", f"bad-{s}", f"good-p-{s}")
    assert _eventually(lambda: len(cache.find(LogicalSwitchPort, name=f"good-p-{s}")) == 1)
    cache.close()


def _app_ports(app: Any, switch: str) -> set[str]:
    """The names of the ports ovsdbapp's IDL shows on ``switch`` (none while it has not seen the switch:
    its lsp_list raised "Cannot find Logical_Switch" when nbdb's create had not reached it yet)."""
    from ovsdbapp.backend.ovs_idl.idlutils import RowNotFound

    try:
        return {p.name for p in app.api.lsp_list(switch).execute(check_error=True)}
    except RowNotFound:
        return set()


def test_ovsdbapp_and_nbdb_write_and_read_the_same_database(ovn: dict[str, Any], db: nbdb.Database) -> None:
    """Neutron's client library (ovsdbapp, the ovs IDL underneath) and nbdb on one Northbound database."""
    from nbdb.bench.ovn.ovsdbapp import OvsdbApp

    app = OvsdbApp(ovn["nb"].remotes, timeout=30)
    try:
        cache = db.cache([LogicalSwitch, LogicalSwitchPort])
        assert cache.wait_synced(15)
        ls = db.create(LogicalSwitch(name=f"app-{uuid.uuid4().hex[:6]}"))
        mine = db.create(LogicalSwitchPort(switch=ls, name=f"by-nbdb-{uuid.uuid4().hex[:6]}"))
        # ovsdbapp sees nbdb's switch and port, adds a port of its own and changes nbdb's.
        assert _eventually(lambda: mine.name in _app_ports(app, str(ls.id)))
        theirs = f"by-ovsdbapp-{uuid.uuid4().hex[:6]}"
        app.lsp_add(str(ls.id), theirs, ["0a:00:00:00:00:42 10.0.0.42"])
        app.lsp_set_addresses(mine.name, ["0a:00:00:00:00:43 10.0.0.43"])
        # nbdb's cache follows both, typed; the port ovsdbapp changed is at a new version.
        assert _eventually(lambda: bool(cache.find(LogicalSwitchPort, name=theirs)), 30)
        [added] = cache.find(LogicalSwitchPort, name=theirs)
        assert added.switch == ls.id and added.addresses == ["0a:00:00:00:00:42 10.0.0.42"]
        assert _eventually(lambda: cache.get(LogicalSwitchPort, mine.id).version > mine.version, 30)  # type: ignore[union-attr]
        with pytest.raises(nbdb.ConflictError):
            db.update(mine.replace(up=True))  # stale: ovsdbapp changed it
        # ovn-northd writes ports too (their up and dynamic_addresses columns): a fresh read can
        # still lose the race to it, and a controller reads again, as here (bounded).
        for _ in range(10):
            try:
                fresh = db.update(db.get(LogicalSwitchPort, mine.id).replace(up=True))
                break
            except nbdb.ConflictError:
                continue
        else:
            pytest.fail("ten fresh reads in a row lost their update to another writer")
        assert fresh.addresses == ["0a:00:00:00:00:43 10.0.0.43"]
        # And ovsdbapp deletes what nbdb made, which nbdb sees go.
        app.lsp_del(mine.name)
        assert _eventually(lambda: cache.get(LogicalSwitchPort, mine.id) is None, 30)
        with pytest.raises(nbdb.NotFoundError):
            db.get(LogicalSwitchPort, mine.id)
    finally:
        app.close()


@pytest.mark.parametrize("garbage", ["abc", "-5"], ids=["text", "negative"])
def test_a_version_marker_another_writer_damaged_neither_turns_the_version_back_nor_ends_watches(garbage: str) -> None:
    """``nbdb:version`` set to garbage by ovn-nbctl was read as 0: a client that had not seen the row
    read it back at version 1, and nbdb's next write of it looked like several commits in one update
    (a merged catch-up), which ended every plain watch of the database with HistoryGoneError.
    (A server of its own: ovn-northd writes ports too, which would race the versions.)"""
    with OvsdbServer() as nb, nbdb.connect(nb.url) as db:
        switch = db.create(LogicalSwitch(name="vm"))
        port = db.create(LogicalSwitchPort(switch=switch, name="vm-p"))
        port = db.update(port.replace(up=True))
        port = db.update(port.replace(up=False))
        assert port.version == 3
        with db.watch(LogicalSwitchPort) as watch:
            nbctl({"nb": nb}, "set", "Logical_Switch_Port", str(port.id), f'external_ids:"nbdb:version"="{garbage}"')
            with nbdb.connect(nb.url) as fresh:
                assert fresh.get(LogicalSwitchPort, port.id).version == 3
            moved = db.update(port.replace(up=True))
            assert moved.version == 4
            seen: list[Any] = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any(e.new is not None and e.new.version == 4 for e in seen):
                seen += watch.poll(0.25)
            watch.poll(0.5)  # a merged catch-up raises after the changes it stopped at
            assert [e.new.version for e in seen if e.new is not None and e.new.id == port.id] == [4]


@pytest.mark.timeout(60)
def test_a_namespace_marker_no_namespace_can_have_is_a_corrupt_record_not_a_vanished_object() -> None:
    """``nbdb:ns`` set by ovn-nbctl to a value with a '/' (no namespace can have one) hid the row from
    every namespace: the default one, which follows every row, dropped it as another namespace's, and
    no server-side condition of a namespace matches it. The default namespace now reports it as a
    corrupt record (get, list, cache.corrupt), as it reports any row it cannot map."""
    with OvsdbServer() as nb, nbdb.connect(nb.url) as db:
        kept = db.create(LogicalSwitch(name="kept"))
        bad = db.create(LogicalSwitch(name="bad"))
        with db.cache(LogicalSwitch, shared=False) as cache:
            assert cache.wait_synced(15)
            nbctl({"nb": nb}, "set", "Logical_Switch", str(bad.id), 'external_ids:"nbdb:ns"="ten/ant"')
            assert _eventually(lambda: (LogicalSwitch.nbdb_table, bad.id) in cache.corrupt)
            with pytest.raises(nbdb.CorruptRecordError, match="nbdb:ns"):
                db.get(LogicalSwitch, bad.id)
            with pytest.raises(nbdb.CorruptRecordError):
                db.list(LogicalSwitch)
            assert db.list(LogicalSwitch, skip_corrupt=True) == [kept]
            later = db.create(LogicalSwitch(name="later"))
            assert _eventually(lambda: cache.get(LogicalSwitch, later.id) == later)
            assert cache.get(LogicalSwitch, kept.id) == kept


def test_northd_serves_dhcp_options_nbdb_wrote_for_a_host_address(ovn: dict[str, Any], db: nbdb.Database) -> None:
    """``DHCP_Options.cidr`` keeps host bits as OVN reads it (``ovn-nbctl dhcp-options-create 10.7.0.5/24``):
    ovn-northd offers the options to the ports of the network, so nbdb's model takes the value too."""
    s = uuid.uuid4().hex[:6]
    with db.transaction() as txn:
        options = txn.create(
            DHCPOptions(
                cidr="10.7.0.5/24",
                options={
                    "lease_time": "3600",
                    "router": "10.7.0.1",
                    "server_id": "10.7.0.1",
                    "server_mac": "0a:00:00:00:07:fe",
                },
            )
        )
        ls = txn.create(LogicalSwitch(name=f"dhcp-ls-{s}"))
        txn.create(
            LogicalSwitchPort(
                switch=ls, name=f"dhcp-vm-{s}", addresses=["0a:00:00:00:07:06 10.7.0.6"], dhcpv4_options=options.id
            )
        )
    assert _eventually(lambda: "offerip = 10.7.0.6" in sbctl(ovn, "lflow-list", f"dhcp-ls-{s}"), 30)


def test_northd_takes_a_centralized_nat_rule_naming_a_logical_port_without_a_mac(
    ovn: dict[str, Any], db: nbdb.Database
) -> None:
    """Neutron's floating IP before its port is up (or without distributed floating IPs): a
    ``dnat_and_snat`` rule with a ``logical_port`` and no ``external_mac``. ovn-northd translates it;
    nbdb's model refused it (a corrupt record when read, a ValidationError when written)."""
    s = uuid.uuid4().hex[:6]
    with db.transaction() as txn:
        lr = txn.create(LogicalRouter(name=f"fip-lr-{s}", options={"chassis": f"gw-{s}"}))
        txn.create(LogicalRouterPort(router=lr, name=f"fip-lrp-{s}", mac="0a:00:00:00:08:fe", networks=["10.8.0.1/24"]))
        txn.create(
            NAT(
                router=lr,
                type=NATType.DNAT_AND_SNAT,
                external_ip="172.16.8.31",
                logical_ip="10.8.0.31",
                logical_port=f"fip-vm-{s}",
            )
        )
    assert _eventually(lambda: "172.16.8.31" in sbctl(ovn, "lflow-list", f"fip-lr-{s}"), 30)
    assert "172.16.8.31" in nbctl(ovn, "lr-nat-list", f"fip-lr-{s}")


def test_northd_routes_a_prefix_with_host_bits_which_nbdb_reads_and_writes(
    ovn: dict[str, Any], db: nbdb.Database
) -> None:
    """ovsdbapp's ``lr_route_add`` stores a route's prefix as given (``10.9.0.5/16``; only
    ``ovn-nbctl lr-route-add`` writes the network) and ovn-northd masks it into the flow's match.
    nbdb read such a route as a corrupt record and refused to write one."""
    s = uuid.uuid4().hex[:6]
    nbctl(ovn, "lr-add", f"rt-lr-{s}")
    nbctl(ovn, "lrp-add", f"rt-lr-{s}", f"rt-lrp-{s}", "0a:00:00:00:09:fe", "10.0.9.1/24")
    nbctl(
        ovn,
        "--",
        "--id=@r",
        "create",
        "Logical_Router_Static_Route",
        "ip_prefix=10.19.0.5/16",
        "nexthop=10.0.9.2",
        "--",
        "add",
        "Logical_Router",
        f"rt-lr-{s}",
        "static_routes",
        "@r",
    )
    [router] = [r for r in db.list(LogicalRouter) if r.name == f"rt-lr-{s}"]
    [read] = [r for r in db.list(LogicalRouterStaticRoute) if r.router == router.id]
    assert (read.ip_prefix, read.nexthop) == ("10.19.0.5/16", "10.0.9.2")
    db.create(LogicalRouterStaticRoute(router=router.id, ip_prefix="10.29.0.5/16", nexthop="10.0.9.3"))
    flows = lambda: sbctl(ovn, "lflow-list", f"rt-lr-{s}")  # noqa: E731
    assert _eventually(lambda: "ip4.dst == 10.19.0.0/16" in flows() and "ip4.dst == 10.29.0.0/16" in flows(), 30)


def test_an_address_set_a_nat_rule_limits_to_is_refused_naming_the_rule_and_cleared_by_a_cascade(
    ovn: dict[str, Any], db: nbdb.Database
) -> None:
    # ovn-nbctl limits a NAT rule to an address set (NAT.allowed_ext_ips, a strong reference). When
    # nbdb mapped no field to it, the server alone refused the delete, with or without cascade; the
    # field (NAT.allowed_ext_ips) makes it nbdb's own reference: a plain delete names the rule, a
    # cascade clears the rule's column in the same commit.
    s = uuid.uuid4().hex[:6]
    nbctl(ovn, "lr-add", f"lr-{s}")
    nat = _uuid(
        nbctl(
            ovn,
            "--id=@n",
            "create",
            "NAT",
            "type=snat",
            "external_ip=172.16.9.10",
            "logical_ip=10.9.0.0/24",
            "--",
            "add",
            "Logical_Router",
            f"lr-{s}",
            "nat",
            "@n",
        )
    )
    address_set = _uuid(nbctl(ovn, "create", "Address_Set", f"name=as_{s}", 'addresses="1.1.1.1"'))
    nbctl(ovn, "set", "NAT", str(nat), f"allowed_ext_ips={address_set}")
    stored = db.get(AddressSet, address_set)
    with pytest.raises(nbdb.errors.ReferenceError) as refused:
        db.delete(stored)
    assert str(nat) in str(refused.value)
    assert nbctl(ovn, "get", "Address_Set", f"as_{s}", "name") == f"as_{s}"
    db.delete(stored, cascade=True)
    assert nbctl(ovn, "get", "NAT", str(nat), "allowed_ext_ips") == "[]"
    assert nbctl(ovn, "--bare", "--columns=_uuid", "find", "Address_Set", f"name=as_{s}") == ""


def test_a_watch_and_a_cache_of_ports_without_a_topic_see_the_ports_ovn_nbctl_makes(
    ovn: dict[str, Any], db: nbdb.Database
) -> None:
    # topics={None} (objects without a topic: every row ovn-nbctl writes) of a child model alone read
    # from a replica that did not follow the parent table. A child is placed by its parent's set column
    # there, else by the nbdb:parent hint nbdb writes, which ovn-nbctl's ports lack: they were dropped,
    # the cache never listed them and the watch lost their events (while list() found them).
    s = uuid.uuid4().hex[:6]
    nbctl(ovn, "ls-add", f"tn-ls-{s}")
    nbctl(ovn, "lsp-add", f"tn-ls-{s}", f"tn-before-{s}")
    watch = db.watch(LogicalSwitchPort, topics={None})
    cache = db.cache([LogicalSwitchPort], topics={None})
    assert cache.wait_synced(10)
    assert f"tn-before-{s}" in {p.name for p in cache.list(LogicalSwitchPort)}
    nbctl(ovn, "lsp-add", f"tn-ls-{s}", f"tn-after-{s}")
    created: list[str] = []

    def seen() -> bool:
        created.extend(e.new.name for e in watch.poll(0.2) if e.new is not None)
        return f"tn-after-{s}" in created

    assert _eventually(seen)
    assert _eventually(lambda: f"tn-after-{s}" in {p.name for p in cache.list(LogicalSwitchPort)})
    switch = _uuid(nbctl(ovn, "--bare", "--columns=_uuid", "find", "Logical_Switch", f"name=tn-ls-{s}"))
    assert {p.switch for p in cache.list(LogicalSwitchPort) if p.name.endswith(s)} == {switch}
