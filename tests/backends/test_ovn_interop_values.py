"""Values OVN's own tools write, read by nbdb exactly, and kept by nbdb's writes of other fields.

Each test has an ``OVN_Northbound`` server of its own (no ovn-northd: nothing else writes), writes
with ``ovn-nbctl`` as an operator would, reads with nbdb, writes another field with nbdb and reads
the column back with ``ovn-nbctl``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import nbdb
from nbdb.models import AddressSet, LogicalRouter, LogicalRouterStaticRoute, LogicalSwitchPort
from nbdb.testing.ovsdb import OvsdbServer
from nbdb.testing.probes import run_tool
from nbdb.testing.process import find_binary

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def nb() -> Iterator[OvsdbServer]:
    if find_binary("ovn-nbctl") is None:
        pytest.fail("ovn-nbctl is missing (Debian package ovn-central / ovn-common)")
    with OvsdbServer() as server:
        yield server


def nbctl(nb: OvsdbServer, *args: str) -> str:
    return run_tool([str(find_binary("ovn-nbctl")), f"--db={nb.remotes}", "--timeout=10", *args], timeout=20).strip()


def test_a_port_address_with_a_prefix_length_reads_and_stays_as_ovn_nbctl_wrote_it(nb: OvsdbServer) -> None:
    # OVN reads "MAC IP/PLEN" (the port's network). nbdb cut the prefix off when reading, and its
    # next write of the port, of any field, stored the entry without it.
    nbctl(nb, "ls-add", "ls")
    nbctl(nb, "lsp-add", "ls", "p")
    nbctl(nb, "lsp-set-addresses", "p", "0a:00:00:00:00:01 10.0.0.5/24 fd00::5/64", "router")
    with nbdb.connect(nb.url) as db:
        [port] = db.list(LogicalSwitchPort)
        assert sorted(port.addresses) == ["0a:00:00:00:00:01 10.0.0.5/24 fd00::5/64", "router"]
        db.update(port.replace(external_ids={"neutron:port_name": "p"}))
    assert nbctl(nb, "get", "Logical_Switch_Port", "p", "addresses") == (
        '["0a:00:00:00:00:01 10.0.0.5/24 fd00::5/64", router]'
    )


def test_a_discard_route_is_read_and_written(nb: OvsdbServer) -> None:
    # "discard" is OVN's next hop of a route that drops: nbdb read such a route as a corrupt record.
    nbctl(nb, "lr-add", "lr")
    nbctl(nb, "lr-route-add", "lr", "10.9.0.0/24", "discard")
    with nbdb.connect(nb.url) as db:
        [route] = db.list(LogicalRouterStaticRoute)
        assert (route.ip_prefix, route.nexthop) == ("10.9.0.0/24", "discard")
        [router] = db.list(LogicalRouter)
        db.create(LogicalRouterStaticRoute(router=router.id, ip_prefix="10.8.0.0/24", nexthop="discard"))
    routes = nbctl(nb, "lr-route-list", "lr")
    assert "10.8.0.0/24" in routes and routes.count("discard") == 2


def test_removing_a_member_as_read_removes_it_as_ovn_nbctl_spelled_it(nb: OvsdbServer) -> None:
    # A read normalises the spelling (upper-case MAC, IPv6 text) while the server's delete compares
    # text: the member removed as read stayed, and the mutation reported success.
    nbctl(nb, "ls-add", "ls")
    nbctl(nb, "lsp-add", "ls", "p")
    nbctl(nb, "lsp-set-addresses", "p", "0A:00:00:00:00:01 10.0.0.5", "0a:00:00:00:00:02 10.0.0.6")
    nbctl(nb, "create", "Address_Set", "name=as", 'addresses="FD00::5","10.0.0.7"')
    with nbdb.connect(nb.url) as db:
        [port] = db.list(LogicalSwitchPort)
        assert "0a:00:00:00:00:01 10.0.0.5" in port.addresses
        assert db.mutate(port, remove={"addresses": ["0a:00:00:00:00:01 10.0.0.5"]}).addresses == [
            "0a:00:00:00:00:02 10.0.0.6"
        ]
        [group] = db.list(AddressSet)
        assert db.mutate(group, remove={"addresses": ["fd00::5"]}).addresses == ["10.0.0.7"]
    assert nbctl(nb, "get", "Logical_Switch_Port", "p", "addresses") == '["0a:00:00:00:00:02 10.0.0.6"]'
    assert nbctl(nb, "get", "Address_Set", "as", "addresses") == '["10.0.0.7"]'


def test_an_address_set_of_ethernet_addresses_and_bitwise_masks_is_read_and_written(nb: OvsdbServer) -> None:
    # ovn-nb(5): "An address set may contain Ethernet, IPv4, or IPv6 addresses with optional bitwise
    # or CIDR masks". nbdb took IP addresses and networks only: such a set was a corrupt record.
    nbctl(
        nb, "create", "Address_Set", "name=macs", 'addresses="0a:00:00:00:00:01","0a:00:00:00:00:00/ff:ff:ff:00:00:00"'
    )
    nbctl(nb, "create", "Address_Set", "name=masked", 'addresses="10.0.0.0/255.0.255.0"')
    with nbdb.connect(nb.url) as db:
        got = {s.name: s.addresses for s in db.list(AddressSet)}
        assert got == {
            "macs": ["0a:00:00:00:00:00/ff:ff:ff:00:00:00", "0a:00:00:00:00:01"],
            "masked": ["10.0.0.0/255.0.255.0"],
        }
        db.create(AddressSet(name="more_macs", addresses=["0a:00:00:00:00:02"]))
    assert nbctl(nb, "get", "Address_Set", "more_macs", "addresses") == '["0a:00:00:00:00:02"]'
