"""Validated scalar types: every accepted value normalises, every bad one is a typed error."""

from __future__ import annotations

import ipaddress
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

import nbdb
from nbdb.models import (
    ACL,
    NAT,
    ACLAction,
    AddressSet,
    DHCPOptions,
    Direction,
    LogicalRouterPort,
    LogicalRouterStaticRoute,
    LogicalSwitchPort,
    NATType,
    QoS,
    types,
)

pytestmark = pytest.mark.timeout(60)
SW = uuid.uuid4()


@given(st.binary(min_size=6, max_size=6), st.booleans())
def test_any_mac_normalises_to_lowercase_colons(raw: bytes, upper: bool) -> None:
    text = ":".join(f"{b:02x}" for b in raw)
    port = LogicalSwitchPort(switch=SW, name="p", addresses=[text.upper() if upper else text])
    assert port.addresses == [text]


@given(st.binary(min_size=6, max_size=6), st.lists(st.booleans(), min_size=6, max_size=6), st.sampled_from(":-"))
def test_any_mac_with_short_groups_normalises_to_six_pairs(raw: bytes, short: list[bool], sep: str) -> None:
    # OVN's eth_addr_from_string takes one or two hex digits a group ("a:0:0:0:0:1"): ovn-nbctl stores
    # such a MAC as typed, and it was a corrupt record.
    canonical = ":".join(f"{b:02x}" for b in raw)
    spelled = sep.join(f"{b:x}" if cut else f"{b:02X}" for b, cut in zip(raw, short, strict=True))
    assert types._mac(spelled) == canonical
    assert types._mac(canonical) == canonical  # a stored canonical value decodes unchanged
    port = LogicalRouterPort(router=SW, name="p", mac=spelled, networks=["10.0.0.1/24"])
    assert port.mac == canonical


@pytest.mark.parametrize("mac", ["0a:0:0:0:0", "0a:0:0:0:0:0:1", "abc:0:0:0:0:1", ":0:0:0:0:1", "g:0:0:0:0:1"])
def test_a_mac_without_six_groups_of_one_or_two_hex_digits_is_refused(mac: str) -> None:
    with pytest.raises(nbdb.ValidationError, match="not a MAC address"):
        LogicalRouterPort(router=SW, name="p", mac=mac, networks=["10.0.0.1/24"])


@given(st.ip_addresses())
def test_any_ip_is_accepted_in_canonical_form(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    route = LogicalRouterStaticRoute(router=SW, ip_prefix=str(ip), nexthop=ip.exploded)
    assert route.nexthop == str(ip)


@given(st.text(max_size=20))
def test_arbitrary_text_never_crashes_validation(text: str) -> None:
    try:
        AddressSet(name="as", addresses=[text])
    except nbdb.ValidationError as exc:
        assert exc.errors and exc.errors[0]["loc"][0] == "addresses"


@pytest.mark.parametrize(
    "address",
    [
        "router",
        "unknown",
        "dynamic",
        "0a:00:00:00:00:01",
        "0a:00:00:00:00:01 dynamic",
        "0a:00:00:00:00:01 10.0.0.1 fd00::1",
        "dynamic 10.0.0.9",
        # OVN reads an address's prefix length (the port's network): kept, not cut off.
        "0a:00:00:00:00:01 10.0.0.5/24 fd00::5/64 10.0.0.6",
    ],
)
def test_ovn_port_address_forms(address: str) -> None:
    assert LogicalSwitchPort(switch=SW, name="p", addresses=[address]).addresses == [address]


@given(
    st.binary(min_size=6, max_size=6),
    st.lists(st.ip_addresses(v=4), min_size=1, max_size=3),
    st.sampled_from([":", "-"]),
    st.booleans(),
    st.sampled_from([" ", "  ", "\t"]),
)
def test_mac_and_ipv4_entry_normalises_whatever_the_spelling(
    raw: bytes, ips: list[ipaddress.IPv4Address], sep: str, upper: bool, space: str
) -> None:
    # The canonical spelling takes a fast path and any other the full parse:
    # both must give the same entry.
    mac = ":".join(f"{b:02x}" for b in raw)
    spelled = sep.join(f"{b:02X}" if upper else f"{b:02x}" for b in raw)
    entry = space.join([spelled, *map(str, ips)])
    want = " ".join([mac, *map(str, ips)])
    assert LogicalSwitchPort(switch=SW, name="p", addresses=[entry]).addresses == [want]


_OCTETS = st.sampled_from(["0", "00", "01", "7", "10", "99", "100", "199", "200", "249", "250", "255", "256", "300"])
_SPELLED_IPV4 = st.one_of(st.lists(_OCTETS, min_size=4, max_size=4), st.lists(_OCTETS, min_size=3, max_size=5)).map(
    ".".join
)
_SPELLED_MAC = st.one_of(
    st.binary(min_size=6, max_size=6).map(lambda raw: ":".join(f"{b:02x}" for b in raw)),
    st.lists(st.sampled_from(["0a", "0A", "f", "ff", "00", "9b", "a0z"]), min_size=5, max_size=7).map(":".join),
)


@given(_SPELLED_MAC, st.lists(_SPELLED_IPV4, min_size=1, max_size=3), st.sampled_from([" ", "  "]))
def test_the_fast_path_takes_exactly_the_entries_the_full_parse_keeps(mac: str, ips: list[str], space: str) -> None:
    # A MAC and IPv4 entry skips the full parse when the pattern matches: it must match
    # the entries that parse returns unchanged, and only them.
    entry = space.join([mac, *ips])
    try:
        kept = types._lsp_address_parsed(entry) == entry
    except ValueError:
        kept = False
    assert bool(types._CANONICAL_ADDRESS.fullmatch(entry)) == kept


@pytest.mark.parametrize("address", ["", "0a:00:00:00:00", "0a:00:00:00:00:01 999.1.1.1", "routers"])
def test_bad_port_addresses(address: str) -> None:
    with pytest.raises(nbdb.ValidationError) as info:
        LogicalSwitchPort(switch=SW, name="p", addresses=[address])
    assert "addresses" in str(info.value)


def test_router_port_needs_interface_addresses() -> None:
    assert LogicalRouterPort(router=SW, name="rp", mac="0A:00:00:00:00:01", networks=["10.0.0.1/24"]).networks == [
        "10.0.0.1/24"
    ]
    with pytest.raises(nbdb.ValidationError):
        LogicalRouterPort(router=SW, name="rp", mac="0a:00:00:00:00:01", networks=["10.0.0.1"])
    with pytest.raises(nbdb.ValidationError):
        LogicalRouterPort(router=SW, name="rp", mac="0a:00:00:00:00:01", networks=[])


def test_cidr_rejects_host_bits() -> None:
    AddressSet(name="a", addresses=["10.0.0.0/8", "10.1.2.3"])
    with pytest.raises(nbdb.ValidationError):
        AddressSet(name="a", addresses=["10.0.0.1/8"])


def test_acl_belongs_to_exactly_one_owner() -> None:
    ACL(switch=SW, direction=Direction.FROM_LPORT, priority=1, match="ip4", action=ACLAction.DROP)
    with pytest.raises(nbdb.ValidationError):
        ACL(direction=Direction.FROM_LPORT, priority=1, match="ip4", action=ACLAction.DROP)
    with pytest.raises(nbdb.ValidationError):
        ACL(switch=SW, port_group=SW, direction=Direction.FROM_LPORT, priority=1, match="ip4", action="drop")
    with pytest.raises(nbdb.ValidationError):
        ACL(switch=SW, direction="sideways", priority=1, match="ip4", action="drop")
    with pytest.raises(nbdb.ValidationError):
        ACL(switch=SW, direction="to-lport", priority=40000, match="ip4", action="drop")


def test_nat_port_range_and_distributed_fields() -> None:
    nat = NAT(
        router=SW,
        type=NATType.DNAT_AND_SNAT,
        external_ip="203.0.113.1",
        logical_ip="10.0.0.5",
        external_port_range="1000-2000",
    )
    assert nat.external_port_range == "1000-2000"
    for bad in ("2000-1000", "0-10", "70000", "a-b"):
        with pytest.raises(nbdb.ValidationError):
            NAT(router=SW, type="snat", external_ip="203.0.113.1", logical_ip="10.0.0.0/24", external_port_range=bad)
    with pytest.raises(nbdb.ValidationError):
        NAT(
            router=SW,
            type="snat",
            external_ip="203.0.113.1",
            logical_ip="10.0.0.0/24",
            external_mac="0a:00:00:00:00:01",
        )


def test_qos_keys_are_checked() -> None:
    QoS(switch=SW, priority=10, direction="from-lport", match="ip4", action={"dscp": 10})
    with pytest.raises(nbdb.ValidationError):
        QoS(switch=SW, priority=10, direction="from-lport", match="ip4", action={"colour": 1})
    with pytest.raises(nbdb.ValidationError):
        QoS(switch=SW, priority=10, direction="from-lport", match="ip4")


def test_validation_error_lists_every_problem() -> None:
    with pytest.raises(nbdb.ValidationError) as info:
        LogicalSwitchPort(switch="nope", name="", tag=5000)
    locs = {e["loc"][0] for e in info.value.errors}
    assert locs == {"switch", "name", "tag"}


_IPV4_TEXT = st.from_regex(types._IPV4, fullmatch=True)
_SPOILERS = st.sampled_from(["\n", "\r", " ", "\u0660", "\u0661", "\u0669", "\uff11", "0", "9", "."])


@given(
    st.one_of(
        _IPV4_TEXT,
        st.tuples(_IPV4_TEXT, st.integers(0, 15), _SPOILERS).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :]),
        st.tuples(_IPV4_TEXT, st.integers(0, 15), _SPOILERS).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1 :]),
    )
)
def test_an_ip_is_taken_exactly_when_ipaddress_takes_it_and_as_it_spells_it(text: str) -> None:
    # A trailing newline ("10.0.0.1\n", read from a file) or a non-ASCII digit ("10.0.0.\u0661") is no address:
    # the canonical IPv4 shortcut must not let through what the parse refuses.
    try:
        expected: str | None = str(ipaddress.ip_address(text))
    except ValueError:
        expected = None
    try:
        got: str | None = LogicalRouterStaticRoute(router=SW, ip_prefix="10.0.0.0/8", nexthop=text).nexthop
    except nbdb.ValidationError:
        got = None
    assert got == expected


@pytest.mark.parametrize(
    "token", ["10.0.0.5/33", "10.0.0.5/", "10.0.0.5/x", "10.0.0.5/+3", "10.0.0.5/\u0663", "fd00::5/129"]
)
def test_a_port_address_with_a_bad_prefix_length_is_refused(token: str) -> None:
    with pytest.raises(nbdb.ValidationError):
        LogicalSwitchPort(switch=SW, name="p", addresses=[f"0a:00:00:00:00:01 {token}"])


@pytest.mark.parametrize(
    ("entry", "read"),
    [
        ("0A:00:00:00:00:01", "0a:00:00:00:00:01"),
        ("0a:00:00:00:00:00/FF:FF:FF:00:00:00", "0a:00:00:00:00:00/ff:ff:ff:00:00:00"),
        ("10.0.0.0/255.0.255.0", "10.0.0.0/255.0.255.0"),
        ("fd00::/ffff::", "fd00::/ffff::"),
        ("10.0.0.0/24", "10.0.0.0/24"),
        ("FD00::5", "fd00::5"),
    ],
)
def test_an_address_set_holds_what_ovn_takes(entry: str, read: str) -> None:
    # ovn-nb(5): Ethernet, IPv4 or IPv6 addresses with optional bitwise or CIDR masks.
    assert AddressSet(name="as", addresses=[entry]).addresses == [read]


@pytest.mark.parametrize(
    "entry",
    ["0a:00:00:00:00:01/ff:ff:ff:00:00:00", "10.0.0.1/255.255.255.0", "10.0.0.0/ffff::", "0a:00:00:00:00:01/24"],
)
def test_an_address_set_refuses_bits_outside_the_mask_and_mixed_families(entry: str) -> None:
    with pytest.raises(nbdb.ValidationError):
        AddressSet(name="as", addresses=[entry])


def test_a_static_route_may_discard() -> None:
    # ovn-nbctl lr-route-add ROUTER PREFIX discard: OVN's own next hop for a route that drops.
    assert LogicalRouterStaticRoute(router=SW, ip_prefix="10.9.0.0/24", nexthop="discard").nexthop == "discard"
    with pytest.raises(nbdb.ValidationError):
        LogicalRouterStaticRoute(router=SW, ip_prefix="10.9.0.0/24", nexthop="Discard")


@pytest.mark.parametrize("mac", ["0a:00:00:00:00:01\n", "0A:00:00:00:00:01\n"])
def test_a_mac_with_a_trailing_newline_is_refused(mac: str) -> None:
    with pytest.raises(nbdb.ValidationError):
        LogicalRouterPort(router=SW, name="rp", mac=mac, networks=["10.0.0.1/24"])


@given(
    st.one_of(
        st.tuples(st.ip_addresses(v=4), st.integers(0, 32)),
        st.tuples(st.ip_addresses(v=6), st.integers(0, 128)),
    ),
    st.booleans(),
)
def test_a_route_prefix_and_a_dhcp_cidr_keep_host_bits_as_ovn_reads_them(
    address_plen: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int], upper: bool
) -> None:
    """OVN's ``ip_parse_cidr`` keeps an address's host bits (``10.0.0.5/24``); the models refused them.
    Any address with any prefix length reads as that interface, and reads the same once more."""
    address, plen = address_plen
    text = f"{address}/{plen}"
    if upper:
        text = text.upper()
    want = str(ipaddress.ip_interface(f"{address}/{plen}"))
    route = LogicalRouterStaticRoute(router=SW, ip_prefix=text, nexthop="discard")
    options = DHCPOptions(cidr=text)
    assert route.ip_prefix == options.cidr == want
    assert LogicalRouterStaticRoute(router=SW, ip_prefix=want, nexthop="discard").ip_prefix == want
    assert DHCPOptions(cidr=want).cidr == want
