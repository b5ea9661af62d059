"""Values OVN's own tools write, read by nbdb exactly, and kept by nbdb's writes of other fields.

Each test has an ``OVN_Northbound`` server of its own (no ovn-northd: nothing else writes), writes
with ``ovn-nbctl`` as an operator would, reads with nbdb, writes another field with nbdb and reads
the column back with ``ovn-nbctl``.
"""

from __future__ import annotations

import cProfile
import pstats
import uuid
from collections.abc import Iterator

import pytest

import nbdb
from nbdb.models import AddressSet, LogicalRouter, LogicalRouterPort, LogicalRouterStaticRoute, LogicalSwitchPort
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


def _last_commit(nb: OvsdbServer) -> str:
    """What the database file records of the last transaction (the columns it wrote, each row's diff)."""
    log = run_tool([str(find_binary("ovsdb-tool")), "show-log", "-mm", nb.members[0].extra["db_file"]], timeout=20)
    return log.strip().rsplit("\nrecord ", 1)[-1]


def test_an_update_of_another_field_leaves_ovn_nbctl_s_spellings_as_they_are(nb: OvsdbServer) -> None:
    # The planner compared cells, not values as read: an update of external_ids wrote the addresses,
    # the MAC and the networks back in nbdb's spelling, columns the caller never changed.
    nbctl(nb, "ls-add", "ls")
    nbctl(nb, "lsp-add", "ls", "p")
    nbctl(nb, "lsp-set-addresses", "p", "0A:00:00:00:00:01 10.0.0.5 FD00::5", "router")
    nbctl(nb, "lr-add", "lr")
    nbctl(nb, "lrp-add", "lr", "lrp", "0A:00:00:00:00:02", "FD00:0::1/64", "10.0.0.1/24")
    nbctl(nb, "create", "Address_Set", "name=as", 'addresses="FD00:0::5","10.0.0.7"')
    with nbdb.connect(nb.url) as db:
        [port] = db.list(LogicalSwitchPort)
        assert sorted(port.addresses) == ["0a:00:00:00:00:01 10.0.0.5 fd00::5", "router"]
        updated = db.update(port.replace(external_ids={"neutron:port_name": "p"}))
        assert "addresses" not in _last_commit(nb)
        # What was written is what is stored: the copy returned is the one read, and writable.
        assert db.get(LogicalSwitchPort, port.id).version == updated.version
        db.update(updated.replace(external_ids={"neutron:port_name": "q"}))
        [rport] = db.list(LogicalRouterPort)
        db.update(rport.replace(external_ids={"k": "v"}))
        assert "mac" not in _last_commit(nb) and "networks" not in _last_commit(nb)
        [group] = db.list(AddressSet)
        assert sorted(group.addresses) == ["10.0.0.7", "fd00::5"]
        db.update(group.replace(external_ids={"k": "v"}))
        # A change of the value is still written, in nbdb's spelling.
        db.update(db.get(AddressSet, group.id).replace(addresses=["10.0.0.7", "fd00::6"]))
    assert nbctl(nb, "get", "Logical_Switch_Port", "p", "addresses") == '["0A:00:00:00:00:01 10.0.0.5 FD00::5", router]'
    assert nbctl(nb, "get", "Logical_Router_Port", "lrp", "mac") == '"0A:00:00:00:00:02"'
    assert nbctl(nb, "get", "Logical_Router_Port", "lrp", "networks") == '["10.0.0.1/24", "FD00:0::1/64"]'
    assert nbctl(nb, "get", "Address_Set", "as", "addresses") == '["10.0.0.7", "fd00::6"]'


def test_an_update_that_drops_a_second_spelling_of_a_value_is_written(nb: OvsdbServer) -> None:
    # The stored set was compared with the new one as sets of values: {"fd00::5", "FD00::5"} read as
    # {"fd00::5"}, so an update that dropped the twin was not written, and returned a copy without it
    # at the version of a row that still held it.
    nbctl(nb, "create", "Address_Set", "name=as", 'addresses="fd00::5","FD00::5","10.0.0.7"')
    nbctl(nb, "ls-add", "ls")
    nbctl(nb, "lsp-add", "ls", "p")
    nbctl(nb, "lsp-set-addresses", "p", "0a:00:00:00:00:01", "0A:00:00:00:00:01", "router")
    with nbdb.connect(nb.url) as db:
        [group] = db.list(AddressSet)
        assert sorted(group.addresses) == ["10.0.0.7", "fd00::5", "fd00::5"]
        updated = db.update(group.replace(addresses=["10.0.0.7", "fd00::5"]))
        assert db.get(AddressSet, group.id) == updated
        assert sorted(updated.addresses) == ["10.0.0.7", "fd00::5"]
        [port] = db.list(LogicalSwitchPort)
        updated_port = db.update(port.replace(addresses=["0a:00:00:00:00:01", "router"]))
        assert db.get(LogicalSwitchPort, port.id) == updated_port
        # A later update of another field goes through at the version the update returned.
        again = db.update(db.get(AddressSet, group.id).replace(external_ids={"k": "v"}))
        assert sorted(again.addresses) == ["10.0.0.7", "fd00::5"]
    assert nbctl(nb, "get", "Address_Set", "as", "addresses") == '["10.0.0.7", "fd00::5"]'
    assert nbctl(nb, "get", "Logical_Switch_Port", "p", "addresses") == '["0a:00:00:00:00:01", router]'
    with nbdb.connect(nb.url) as db:
        assert sorted(db.get(AddressSet, group.id).addresses) == ["10.0.0.7", "fd00::5"]


def test_removing_a_member_removes_every_spelling_of_it_ovn_nbctl_stored(nb: OvsdbServer) -> None:
    # A member stored as read was the only one removed: the same address in another spelling stayed,
    # and nbdb read it back after the mutation had reported it removed.
    nbctl(nb, "ls-add", "ls")
    nbctl(nb, "lsp-add", "ls", "p")
    nbctl(nb, "lsp-set-addresses", "p", "0a:00:00:00:00:01 10.0.0.5", "0A:00:00:00:00:01 10.0.0.5", "router")
    nbctl(nb, "create", "Address_Set", "name=as", 'addresses="fd00::5","FD00::5","FD00:0::5","10.0.0.7"')
    with nbdb.connect(nb.url) as db:
        [port] = db.list(LogicalSwitchPort)
        assert db.mutate(port, remove={"addresses": ["0A:00:00:00:00:01 10.0.0.5"]}).addresses == ["router"]
        [group] = db.list(AddressSet)
        assert db.mutate(group, remove={"addresses": ["FD00::5"]}).addresses == ["10.0.0.7"]
    assert nbctl(nb, "get", "Logical_Switch_Port", "p", "addresses") == "[router]"
    assert nbctl(nb, "get", "Address_Set", "as", "addresses") == '["10.0.0.7"]'


def _validations(profile: cProfile.Profile) -> int:
    """How many members the model validated (calls of ``field_value``) while ``profile`` ran."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    return sum(calls[1] for (path, _, name), calls in stats.items() if name == "field_value" and "nbdb" in path)


def test_a_removal_from_a_big_set_validates_the_members_it_removes_not_the_set(nb: OvsdbServer) -> None:
    # A removed member not stored as given made the planner validate every member of the set, one
    # pydantic call each, at every removal: 2,000 here, 10,000 for a big address set.
    members = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(2000)] + [f"FD00::{i}" for i in range(1, 5)]
    nbctl(nb, "create", "Address_Set", "name=big", "addresses=" + ",".join(f'"{m}"' for m in members))
    with nbdb.connect(nb.url) as db:
        [group] = db.list(AddressSet)
        group = db.mutate(group, remove={"addresses": ["fd00::1"]})  # the first looks at every member once
        for i in (2, 3, 4):
            profile = cProfile.Profile()
            profile.enable()
            group = db.mutate(group, remove={"addresses": [f"fd00::{i}"]})
            profile.disable()
            assert _validations(profile) <= 5
        assert len(group.addresses) == 2000 and not any(":" in a for a in group.addresses)


def test_an_update_that_adds_and_removes_members_leaves_the_others_as_ovn_nbctl_spelled_them(nb: OvsdbServer) -> None:
    # A changed set was written whole in nbdb's spelling: the members the caller kept, which
    # ovn-nbctl had stored as FD00::5 or 0A:00:..., were rewritten, and ovn-nbctl showed them changed.
    nbctl(nb, "create", "Address_Set", "name=as", 'addresses="FD00::5","FD00:0::6","10.0.0.7"')
    nbctl(nb, "create", "Address_Set", "name=small", 'addresses="FD00::5","10.0.0.7"')
    nbctl(nb, "ls-add", "ls")
    nbctl(nb, "lsp-add", "ls", "p")
    nbctl(nb, "lsp-set-addresses", "p", "0A:00:00:00:00:01 10.0.0.5", "0A:00:00:00:00:02 10.0.0.6", "router")
    with nbdb.connect(nb.url) as db:
        group, small = sorted(db.list(AddressSet), key=lambda s: s.name)
        assert sorted(group.addresses) == ["10.0.0.7", "fd00::5", "fd00::6"]
        # Sets of fewer than 100 members are written whole (cheaper than their difference), and big ones
        # as their difference (the next test): either way the kept members as stored.
        small = db.update(small.replace(addresses=["10.0.0.8", "fd00::5"]))
        assert db.get(AddressSet, small.id) == small
        updated = db.update(group.replace(addresses=["10.0.0.8", "fd00::5", "fd00::6"]))
        assert sorted(updated.addresses) == ["10.0.0.8", "fd00::5", "fd00::6"]
        # What was written is what is stored: the copy returned is the one read, and writable.
        assert db.get(AddressSet, group.id) == updated
        again = db.update(updated.replace(addresses=sorted([*updated.addresses, "10.0.0.9"])))
        assert db.get(AddressSet, group.id) == again
        again = db.update(again.replace(external_ids={"k": "v"}))
        [port] = db.list(LogicalSwitchPort)
        kept = [a for a in port.addresses if a != "0a:00:00:00:00:02 10.0.0.6"]
        updated_port = db.update(port.replace(addresses=sorted([*kept, "0a:00:00:00:00:03 10.0.0.8"])))
        assert db.get(LogicalSwitchPort, port.id) == updated_port
        db.update(updated_port.replace(external_ids={"k": "v"}))
    assert nbctl(nb, "get", "Address_Set", "as", "addresses") == '["10.0.0.8", "10.0.0.9", "FD00:0::6", "FD00::5"]'
    assert nbctl(nb, "get", "Address_Set", "small", "addresses") == '["10.0.0.8", "FD00::5"]'
    assert nbctl(nb, "get", "Logical_Switch_Port", "p", "addresses") == (
        '["0A:00:00:00:00:01 10.0.0.5", "0a:00:00:00:00:03 10.0.0.8", router]'
    )


def test_a_set_changed_by_another_writer_since_it_was_read_fails_the_update(nb: OvsdbServer) -> None:
    # An update writes a changed set as its difference from the set it read: another writer's
    # change in between must fail it (a compare-and-swap), not be merged into it nor lost.
    members = [f"10.0.0.{i}" for i in range(1, 151)]  # a set big enough to be written as its difference
    nbctl(nb, "create", "Address_Set", "name=as", "addresses=" + ",".join(f'"{m}"' for m in members))
    with nbdb.connect(nb.url) as db:
        [group] = db.list(AddressSet)
        nbctl(nb, "add", "Address_Set", "as", "addresses", '"10.0.9.99"')
        with pytest.raises(nbdb.ConflictError):
            db.update(group.replace(addresses=[*group.addresses, "10.0.1.50"]))
        with pytest.raises(nbdb.ConflictError):
            db.update(group.replace(addresses=group.addresses[1:]))
        current = db.get(AddressSet, group.id)
        assert "10.0.9.99" in current.addresses
        db.update(current.replace(addresses=[*current.addresses, "10.0.1.50"]))
    stored = nbctl(nb, "get", "Address_Set", "as", "addresses")
    assert '"10.0.9.99"' in stored and '"10.0.1.50"' in stored and '"10.0.0.1"' in stored


def test_an_update_of_a_big_set_of_other_spellings_keeps_them(nb: OvsdbServer) -> None:
    # More stored members than an update reads one by one: read through the row's memo of spellings.
    members = [f"FD00::{i:X}" for i in range(1, 201)]
    nbctl(nb, "create", "Address_Set", "name=big", "addresses=" + ",".join(f'"{m}"' for m in members))
    with nbdb.connect(nb.url) as db:
        [group] = db.list(AddressSet)
        updated = db.update(group.replace(addresses=sorted([*group.addresses[1:], "10.0.0.1"])))
        assert db.get(AddressSet, group.id) == updated
        again = db.update(updated.replace(addresses=sorted([*updated.addresses, "10.0.0.2"])))
        assert db.get(AddressSet, group.id) == again
    gone = group.addresses[0].upper()
    stored = nbctl(nb, "get", "Address_Set", "big", "addresses")
    assert stored == str(sorted([*(m for m in members if m != gone), "10.0.0.1", "10.0.0.2"])).replace("'", '"')


def test_dhcp_options_ovn_nbctl_made_for_a_host_address_are_read_and_kept(nb: OvsdbServer) -> None:
    # ovn-nbctl dhcp-options-create takes what OVN's ip_parse_cidr takes, host bits kept, and
    # ovn-northd serves such options to the ports of the network. nbdb read them as a corrupt
    # record, so db.list(DHCPOptions) raised for the whole table.
    from nbdb.models import DHCPOptions

    nbctl(nb, "dhcp-options-create", "10.0.0.5/24")
    nbctl(nb, "dhcp-options-create", "FD00::5/64")
    with nbdb.connect(nb.url) as db:
        options = {o.cidr: o for o in db.list(DHCPOptions)}
        assert sorted(options) == ["10.0.0.5/24", "fd00::5/64"]
        db.update(options["fd00::5/64"].replace(options={"server_id": "fe80::1"}))
        mine = db.create(DHCPOptions(cidr="10.1.0.7/24", options={"router": "10.1.0.1"}))
        assert db.get(DHCPOptions, mine.id).cidr == "10.1.0.7/24"
    cidrs = nbctl(nb, "--bare", "--columns=cidr", "list", "DHCP_Options").split()
    assert sorted(cidrs) == ["10.0.0.5/24", "10.1.0.7/24", "FD00::5/64"]


def test_the_built_in_models_integers_take_what_the_served_schema_takes(nb: OvsdbServer) -> None:
    # Logical_Switch_Port.tag is at least 1 in OVN_Northbound (tag_request, at least 0, asks
    # ovn-northd for one): the model took 0, which memory:// and Redis stored and ovsdb-server refused.
    import json
    import typing

    from pydantic import TypeAdapter

    import nbdb.models as models
    from nbdb.families.ovsdb.ovn import OVN_BINDINGS

    served = json.loads(run_tool([str(find_binary("ovsdb-client")), "get-schema", nb.remotes, "OVN_Northbound"]))
    checked = []
    for binding in OVN_BINDINGS:
        model = getattr(models, binding.model_table)
        columns = served["tables"][binding.db_table]["columns"]
        for name, info in model.model_fields.items():
            if name not in columns or not isinstance(columns[name]["type"], dict):
                continue
            kind = columns[name]["type"]
            adapter = TypeAdapter(
                typing.Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
            )
            for part in ("key", "value"):
                atom = kind.get(part)
                if not isinstance(atom, dict) or atom.get("type") != "integer":
                    continue
                low, high = atom.get("minInteger", -(2**63)), atom.get("maxInteger", 2**63 - 1)

                def wrap(value: int, kind: dict[str, typing.Any] = kind, part: str = part) -> typing.Any:
                    if "value" in kind:
                        return {"k": value} if part == "value" else {value: 1}
                    return [value] if kind.get("max", 1) != 1 else value

                def takes(value: int, adapter: TypeAdapter[typing.Any] = adapter, wrap: typing.Any = wrap) -> bool:
                    try:
                        adapter.validate_python(wrap(value))
                    except ValueError:
                        return False
                    return True

                bounds = (takes(low - 1), takes(low), takes(high), takes(high + 1))
                checked.append((binding.model_table, name, part, bounds))
    assert ("LogicalSwitchPort", "tag", "key", (False, True, True, False)) in checked
    assert [c for c in checked if c[3] != (False, True, True, False)] == []
    with pytest.raises(nbdb.ValidationError):
        LogicalSwitchPort(switch=uuid.uuid4(), name="p", tag=0)
    # ovn-nbctl's "lsp-add SWITCH PORT PARENT 0" (a tag_request of 0) still reads.
    nbctl(nb, "ls-add", "ls")
    nbctl(nb, "lsp-add", "ls", "c0", "parent", "0")
    with nbdb.connect(nb.url) as db:
        [port] = db.list(LogicalSwitchPort)
        assert (port.parent_name, port.tag_request, port.tag) == ("parent", 0, None)


def test_a_nat_rule_neutron_writes_with_a_logical_port_and_no_mac_is_read_and_kept(nb: OvsdbServer) -> None:
    # Neutron writes each floating IP as a dnat_and_snat rule naming its logical_port, with an
    # external_mac only once the port is up and floating IPs are distributed (not the default).
    # The model wanted both or neither: every such rule was a corrupt record, and
    # db.list(NAT) raised for the whole table.
    from nbdb.models import NAT, NATType

    nbctl(nb, "lr-add", "lr")
    nbctl(nb, "ls-add", "ls")
    nbctl(nb, "lsp-add", "ls", "vm")
    nbctl(
        nb,
        "--",
        "--id=@n",
        "create",
        "NAT",
        "type=dnat_and_snat",
        "external_ip=172.16.0.31",
        "logical_ip=10.0.0.31",
        "logical_port=vm",
        "--",
        "add",
        "Logical_Router",
        "lr",
        "nat",
        "@n",
    )
    with nbdb.connect(nb.url) as db:
        [rule] = db.list(NAT)
        assert (rule.type, rule.logical_port, rule.external_mac) == (NATType.DNAT_AND_SNAT, "vm", None)
        db.update(rule.replace(external_ids={"neutron:fip_id": "f"}))
        [router] = db.list(LogicalRouter)
        db.create(
            NAT(router=router.id, type=NATType.DNAT_AND_SNAT, external_ip="172.16.0.32", logical_ip="10.0.0.32",
                logical_port="vm")
        )  # fmt: skip
        with pytest.raises(nbdb.ValidationError, match="external_mac needs logical_port"):
            NAT(router=router.id, type=NATType.DNAT_AND_SNAT, external_ip="172.16.0.33", logical_ip="10.0.0.33",
                external_mac="0a:00:00:00:00:33")  # fmt: skip
    listed = nbctl(nb, "lr-nat-list", "lr")
    assert "172.16.0.31" in listed and "172.16.0.32" in listed
    assert nbctl(nb, "--bare", "--columns=logical_port", "find", "NAT", "external_ip=172.16.0.31") == "vm"
