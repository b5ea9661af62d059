"""Validated scalar types used by the logical schema.

Values are kept as normalised strings (``"0a:00:00:00:00:01"``,
``"10.0.0.0/24"``), the way OVN stores them, so they map one to one onto OVSDB
columns and compare equal whatever spelling the caller used.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

__all__ = [
    "CIDR",
    "AddressSetEntry",
    "AllocatedVlanTag",
    "CIDRAddress",
    "IPAddress",
    "IPInterface",
    "IPOrCIDR",
    "IPOrCIDRAddress",
    "IPv4Address",
    "IPv6Address",
    "LSPAddress",
    "MACAddress",
    "PortNumber",
    "PortRange",
    "Priority",
    "RouteNexthop",
    "Topic",
    "VlanTag",
]

# Matched whole (fullmatch): ``$`` after ``match`` also matches before a trailing newline. One or two
# hex digits a group, as OVN's eth_addr_from_string reads them (ovn-nbctl stores "a:0:0:0:0:1" as typed).
_MAC_RE = re.compile(r"[0-9a-fA-F]{1,2}([:-][0-9a-fA-F]{1,2}){5}")
_MAC_GROUP_SEP = re.compile("[:-]")


def _mac(value: str) -> str:
    """A MAC address in canonical form: six lower-case hex pairs, colon-separated.

    A short group (``a:0:0:0:0:1``, which ovn-nbctl takes for forwarding groups and router ports) is
    padded: such a row was a corrupt record. A stored canonical value comes back unchanged.
    """
    if not _MAC_RE.fullmatch(value):
        raise ValueError(
            f"not a MAC address: {value!r} (want six groups of one or two hex digits, like 0a:00:00:00:00:01)"
        )
    if len(value) == 17:  # six pairs: only the case and the separator can differ
        return value.lower().replace("-", ":")
    return ":".join(group.lower().zfill(2) for group in _MAC_GROUP_SEP.split(value))


# ASCII digits only (``\d`` takes any Unicode digit, which ipaddress refuses), matched whole (see _MAC_RE).
_IPV4_RE = re.compile(
    r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}"
)


def _ip(value: str) -> str:
    if _IPV4_RE.fullmatch(value):
        return value  # already canonical dotted quad: skip ipaddress (hot on every decode)
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"not an IPv4 or IPv6 address: {value!r}") from None


def _ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(f"not an IPv4 address: {value!r}") from None


def _ipv6(value: str) -> str:
    try:
        return str(ipaddress.IPv6Address(value))
    except ValueError:
        raise ValueError(f"not an IPv6 address: {value!r}") from None


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError:
        raise ValueError(f"not a network in CIDR form (host bits must be zero): {value!r}") from None


def _cidr_address(value: str) -> str:
    """A network, or an address in it with the network's prefix length (``10.0.0.5/24``).

    OVN parses ``DHCP_Options.cidr`` with ``ip_parse_cidr``, which keeps host bits: ``ovn-nbctl
    dhcp-options-create 10.0.0.5/24`` stores that, and ovn-northd serves the options to the ports
    of 10.0.0.0/24. A strict network refused it: such options read as a corrupt record.
    """
    try:
        return str(ipaddress.ip_interface(value))
    except ValueError:
        raise ValueError(f"not a network or an address with its prefix length, like 10.0.0.0/24: {value!r}") from None


def _interface(value: str) -> str:
    if "/" not in value:
        raise ValueError(f"not an address with prefix length, like 10.0.0.1/24: {value!r}")
    try:
        return str(ipaddress.ip_interface(value))
    except ValueError:
        raise ValueError(f"not an address with prefix length, like 10.0.0.1/24: {value!r}") from None


def _ip_or_cidr(value: str) -> str:
    if "/" in value:
        return _cidr(value)
    return _ip(value)


def _ip_or_cidr_address(value: str) -> str:
    """An address, or a network or an address in it with the prefix length (host bits kept).

    ``Logical_Router_Static_Route.ip_prefix`` as ovn-northd reads it (``ip46_parse_cidr``, the
    prefix masked when it builds the flow): ovsdbapp's ``lr_route_add`` stores ``10.0.0.5/24`` as
    given (only ``ovn-nbctl lr-route-add`` writes the network), and such a route read as a corrupt
    record.
    """
    return _cidr_address(value) if "/" in value else _ip(value)


def _address_set_entry(value: str) -> str:
    """One member of ``Address_Set.addresses``: an Ethernet, IPv4 or IPv6 address, with an optional mask.

    OVN's own words (ovn-nb(5)): "An address set may contain Ethernet, IPv4, or IPv6 addresses with
    optional bitwise or CIDR masks" (``eth.src == $set`` for Ethernet ones). Only IP addresses and
    networks were taken: a set ``ovn-nbctl`` filled with MAC addresses was a corrupt record.
    """
    address, sep, mask = value.partition("/")
    if _MAC_RE.fullmatch(address):
        if not sep:
            return _mac(address)
        address, mask = _mac(address), _mac(mask)
        host = int(address.replace(":", ""), 16) & ~int(mask.replace(":", ""), 16)
    elif sep and ("." in mask or ":" in mask):  # a bitwise mask, contiguous or not
        ip, bits = ipaddress.ip_address(_ip(address)), ipaddress.ip_address(_ip(mask))
        if ip.version != bits.version:
            raise ValueError(f"an address and a mask of different families: {value!r}")
        address, mask, host = str(ip), str(bits), int(ip) & ~int(bits)
    else:
        return _ip_or_cidr(value)
    if host:  # as a network's host bits: OVN refuses such a value ("unmasked 1-bits")
        raise ValueError(f"an address with bits outside its mask: {value!r}")
    return f"{address}/{mask}"


def _port_range(value: str) -> str:
    low, sep, high = value.partition("-")
    try:
        lo = int(low)
        hi = int(high) if sep else lo
    except ValueError:
        raise ValueError(f"not a port or port range like 1000-2000: {value!r}") from None
    if not (0 < lo <= 65535 and 0 < hi <= 65535 and lo <= hi):
        raise ValueError(f"port range out of 1-65535 or reversed: {value!r}")
    return f"{lo}-{hi}" if sep else str(lo)


_ADDRESS_KEYWORDS = frozenset({"router", "unknown", "dynamic"})
_OCTET = r"(?:1[0-9][0-9]|2[0-4][0-9]|25[0-5]|[1-9][0-9]|[0-9])"  # 0-255, no leading zero
_HEX = "[0-9a-f][0-9a-f]"
_IPV4 = rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}"
# Spelled out, not as (?:..){5} and (?:..){3}: sre runs a counted group through its repeat
# machinery, and this match is on every port built or decoded (0.71 -> 0.45 µs an entry).
_CANONICAL_ADDRESS = re.compile(rf"{_HEX}:{_HEX}:{_HEX}:{_HEX}:{_HEX}:{_HEX}(?: {_IPV4})+")
"""The common entry, already canonical: a lower-case MAC and dotted-quad IPv4 addresses, one space apart."""


def _lsp_address(value: str) -> str:
    """Validate one entry of ``Logical_Switch_Port.addresses``.

    OVN accepts ``router``, ``unknown``, ``dynamic``, ``MAC``, ``MAC dynamic``,
    ``MAC IP [IP...]``, and ``dynamic IP``.
    """
    if _CANONICAL_ADDRESS.fullmatch(value):
        return value  # what _lsp_address_parsed would return (hot: every port built or decoded)
    return _lsp_address_parsed(value)


# A decode checks the entries this pattern matches in pydantic-core, without a call of this function (see
# nbdb.codec._fields_validator): every string it matches whole, the function returns unchanged.
_lsp_address.__nbdb_canonical__ = _CANONICAL_ADDRESS  # type: ignore[attr-defined]


def _lsp_address_parsed(value: str) -> str:
    """:func:`_lsp_address`'s answer, by parsing every form."""
    tokens = value.split()
    if not tokens:
        raise ValueError("empty port address")
    if len(tokens) == 1 and tokens[0] in _ADDRESS_KEYWORDS:
        return tokens[0]
    head, rest = tokens[0], tokens[1:]
    if head == "dynamic":
        return " ".join(["dynamic", *(_ip(t) for t in rest)])
    mac = _mac(head)
    if rest == ["dynamic"]:
        return f"{mac} dynamic"
    return " ".join([mac, *(_lsp_ip(t) for t in rest)])


def _lsp_ip(token: str) -> str:
    """One address of a port's ``MAC IP [IP...]`` entry: ``IP`` or ``IP/PLEN``, the prefix length kept.

    OVN reads each as an address with an optional prefix length (``ip_parse_cidr_len``: the port's
    network, 32 or 128 when left out). It was cut off here: an entry ``ovn-nbctl`` stored as
    ``MAC 10.0.0.5/24`` read as ``MAC 10.0.0.5``, and nbdb's next write of the port, of any field,
    stored it so.
    """
    address, sep, plen = token.partition("/")
    ip = _ip(address)
    if not sep:
        return ip
    if not (plen.isascii() and plen.isdigit()):
        raise ValueError(f"not an address with an optional prefix length, like 10.0.0.5/24: {token!r}")
    try:
        return str(ipaddress.ip_interface(f"{ip}/{int(plen)}"))
    except ValueError:
        raise ValueError(f"prefix length out of range: {token!r}") from None


def _nexthop(value: str) -> str:
    """``Logical_Router_Static_Route.nexthop``: an address, or ``discard`` (drop what the route matches)."""
    return value if value == "discard" else _ip(value)


MACAddress = Annotated[str, AfterValidator(_mac)]
IPAddress = Annotated[str, AfterValidator(_ip)]
RouteNexthop = Annotated[str, AfterValidator(_nexthop)]
"""A static route's next hop: an IP address or ``discard`` (``ovn-nbctl lr-route-add ROUTER PREFIX discard``)."""
IPv4Address = Annotated[str, AfterValidator(_ipv4)]
IPv6Address = Annotated[str, AfterValidator(_ipv6)]
CIDR = Annotated[str, AfterValidator(_cidr)]
CIDRAddress = Annotated[str, AfterValidator(_cidr_address)]
"""A network or an address of it with the prefix length, host bits kept (as OVN's ``ip_parse_cidr`` reads it)."""
IPInterface = Annotated[str, AfterValidator(_interface)]
IPOrCIDR = Annotated[str, AfterValidator(_ip_or_cidr)]
IPOrCIDRAddress = Annotated[str, AfterValidator(_ip_or_cidr_address)]
"""An address, or a network or an address of it with the prefix length, host bits kept (a route's prefix)."""
AddressSetEntry = Annotated[str, AfterValidator(_address_set_entry)]
"""A member of an OVN address set: an Ethernet, IPv4 or IPv6 address, with an optional CIDR or bitwise mask."""
PortRange = Annotated[str, AfterValidator(_port_range)]
LSPAddress = Annotated[str, AfterValidator(_lsp_address)]
PortNumber = Annotated[int, Field(ge=1, le=65535)]
VlanTag = Annotated[int, Field(ge=0, le=4095)]
"""A requested VLAN tag (``tag_request``): 0 asks ovn-northd to allocate one."""
AllocatedVlanTag = Annotated[int, Field(ge=1, le=4095)]
"""The tag in use (``Logical_Switch_Port.tag``, minInteger 1 in OVN_Northbound)."""
Priority = Annotated[int, Field(ge=0, le=32767)]
Topic = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$"),
]
"""A tenant or partition name. Restricted to a charset every store can use in keys."""
