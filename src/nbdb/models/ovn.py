"""The logical schema, modelled on the OVN Northbound database.

Field names are the snake_case forms of the ``OVN_Northbound`` column names so
the OVSDB backend maps them one to one. Where OVN keeps a set of children in the
parent (``Logical_Switch.ports``), nbdb has the child name its parent
(``LogicalSwitchPort.switch``): adding a port never rewrites a hot switch.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar
from uuid import UUID

from pydantic import Field, model_validator

from nbdb.models.base import Model, Reference
from nbdb.models.types import (
    AddressSetEntry,
    AllocatedVlanTag,
    CIDRAddress,
    IPAddress,
    IPInterface,
    IPOrCIDR,
    IPOrCIDRAddress,
    LSPAddress,
    MACAddress,
    PortRange,
    Priority,
    RouteNexthop,
    VlanTag,
)

__all__ = [
    "ACL",
    "BFD",
    "DNS",
    "NAT",
    "ACLAction",
    "AddressSet",
    "BFDStatus",
    "Chassis",
    "ChassisTemplateVar",
    "Copp",
    "DHCPOptions",
    "Direction",
    "EncapType",
    "ForwardingGroup",
    "GatewayChassis",
    "HAChassis",
    "HAChassisGroup",
    "LoadBalancer",
    "LoadBalancerField",
    "LoadBalancerGroup",
    "LoadBalancerHealthCheck",
    "LoadBalancerProtocol",
    "LogicalRouter",
    "LogicalRouterPolicy",
    "LogicalRouterPort",
    "LogicalRouterStaticRoute",
    "LogicalSwitch",
    "LogicalSwitchPort",
    "Meter",
    "MeterBand",
    "MeterBandAction",
    "MeterUnit",
    "Mirror",
    "MirrorType",
    "NATType",
    "PortGroup",
    "PortType",
    "QoS",
    "RoutePolicy",
    "RouterPolicyAction",
    "Severity",
    "StaticMACBinding",
]


class PortType(StrEnum):
    """``Logical_Switch_Port.type``."""

    NORMAL = ""
    ROUTER = "router"
    LOCALNET = "localnet"
    LOCALPORT = "localport"
    L2GATEWAY = "l2gateway"
    VTEP = "vtep"
    EXTERNAL = "external"
    VIRTUAL = "virtual"
    REMOTE = "remote"


class Direction(StrEnum):
    """Direction of an ACL or QoS rule."""

    FROM_LPORT = "from-lport"
    TO_LPORT = "to-lport"


class ACLAction(StrEnum):
    """``ACL.action``."""

    ALLOW = "allow"
    ALLOW_RELATED = "allow-related"
    ALLOW_STATELESS = "allow-stateless"
    DROP = "drop"
    REJECT = "reject"
    PASS = "pass"


class Severity(StrEnum):
    """``ACL.severity``."""

    ALERT = "alert"
    WARNING = "warning"
    NOTICE = "notice"
    INFO = "info"
    DEBUG = "debug"


class NATType(StrEnum):
    """``NAT.type``."""

    DNAT = "dnat"
    SNAT = "snat"
    DNAT_AND_SNAT = "dnat_and_snat"


class RoutePolicy(StrEnum):
    """``Logical_Router_Static_Route.policy``."""

    SRC_IP = "src-ip"
    DST_IP = "dst-ip"


class RouterPolicyAction(StrEnum):
    """``Logical_Router_Policy.action``."""

    ALLOW = "allow"
    DROP = "drop"
    REROUTE = "reroute"


class LoadBalancerProtocol(StrEnum):
    """``Load_Balancer.protocol``."""

    TCP = "tcp"
    UDP = "udp"
    SCTP = "sctp"


class LoadBalancerField(StrEnum):
    """``Load_Balancer.selection_fields``: what the backend choice hashes (ovn-nbctl lb-add --selection-fields)."""

    ETH_SRC = "eth_src"
    ETH_DST = "eth_dst"
    IP_SRC = "ip_src"
    IP_DST = "ip_dst"
    TP_SRC = "tp_src"
    TP_DST = "tp_dst"


class MirrorType(StrEnum):
    """``Mirror.type``: the tunnel mirrored packets travel in."""

    GRE = "gre"
    ERSPAN = "erspan"


class BFDStatus(StrEnum):
    """``BFD.status``: the session's state, which ovn-northd writes back from the Southbound database."""

    DOWN = "down"
    INIT = "init"
    UP = "up"
    ADMIN_DOWN = "admin_down"


class MeterUnit(StrEnum):
    """``Meter.unit``: what a meter's band rates count."""

    KBPS = "kbps"
    PKTPS = "pktps"


class MeterBandAction(StrEnum):
    """``Meter_Band.action``: what a band does to the packets above its rate (OVN knows one)."""

    DROP = "drop"


class EncapType(StrEnum):
    """Tunnel encapsulation a chassis offers."""

    GENEVE = "geneve"
    VXLAN = "vxlan"
    STT = "stt"


Name = Annotated[str, Field(min_length=1, max_length=255)]


class Chassis(Model):
    """A hypervisor or gateway running a local controller; controllers register themselves."""

    nbdb_indexes: ClassVar[tuple[str, ...]] = ("name",)
    nbdb_unique: ClassVar[tuple[str | tuple[str, ...], ...]] = ("name",)

    name: Name
    hostname: str = ""
    encap_type: EncapType = EncapType.GENEVE
    encap_ip: IPAddress | None = None
    other_config: dict[str, str] = Field(default_factory=dict)


class LoadBalancer(Model):
    """``Load_Balancer``: virtual IPs mapped to backends."""

    nbdb_indexes: ClassVar[tuple[str, ...]] = ("name",)

    name: str = ""
    vips: dict[str, str] = Field(default_factory=dict, description='"VIP[:port]" -> "IP[:port],IP[:port]"')
    protocol: LoadBalancerProtocol | None = None
    options: dict[str, str] = Field(default_factory=dict)
    # "backend IP" -> "port name:source IP" for health checks (ovn-nbctl set ... ip_port_mappings:...).
    ip_port_mappings: dict[str, str] = Field(default_factory=dict)
    selection_fields: list[LoadBalancerField] = Field(default_factory=list)


class LoadBalancerHealthCheck(Model):
    """``Load_Balancer_Health_Check``: how ovn-controller probes the backends of one VIP of a load balancer.

    OVN keeps them in ``Load_Balancer.health_check``; here each names its load balancer. A non-root
    row only its load balancer holds: deleting the load balancer deletes them in the same commit, as
    ovsdb-server collects them after ``ovn-nbctl lb-del``.
    """

    nbdb_owned_by: ClassVar[tuple[str, ...]] = ("load_balancer",)

    load_balancer: Annotated[UUID, Reference("LoadBalancer")]
    # The column's default is "": a generic `ovn-nbctl create` setting only options writes it so.
    vip: str = Field(default="", description='the "VIP[:port]" of the load balancer\'s vips it probes')
    options: dict[str, str] = Field(default_factory=dict)  # interval, timeout, success_count, failure_count


class LoadBalancerGroup(Model):
    """``Load_Balancer_Group``: load balancers applied together to the switches and routers naming the group."""

    nbdb_indexes: ClassVar[tuple[str, ...]] = ("name",)
    nbdb_unique: ClassVar[tuple[str | tuple[str, ...], ...]] = ("name",)

    name: Name
    load_balancer: list[Annotated[UUID, Reference("LoadBalancer", weak=True)]] = Field(default_factory=list)


class DNS(Model):
    """``DNS``: host names and the addresses ovn-controller answers for them, on the switches naming it."""

    records: dict[str, str] = Field(default_factory=dict, description='"host name" -> "IP IP..."')


class Copp(Model):
    """``Copp``: control plane protection, a meter (by name) per protocol punted to ovn-controller.

    ``ovn-nbctl copp-add NAME PROTO METER`` writes one; a switch or router names it in ``copp``.
    """

    nbdb_indexes: ClassVar[tuple[str, ...]] = ("name",)
    nbdb_unique: ClassVar[tuple[str | tuple[str, ...], ...]] = ("name",)

    name: Name
    meters: dict[str, str] = Field(default_factory=dict, description='protocol ("arp", "bfd"...) -> Meter name')


class Meter(Model):
    """``Meter``: a rate limit by name, which ACL logging (``ACL.meter``), QoS and control plane
    protection (``Copp.meters``) name.

    OVN keeps its bands in ``Meter.bands`` (at least one); here each band names its meter
    (:class:`MeterBand`). ``ovn-nbctl meter-add NAME ACTION RATE UNIT [BURST]`` writes a meter and
    its band in one transaction; through nbdb, create the meter and its first band in one
    transaction too on OVSDB, whose schema refuses a meter without bands.
    """

    nbdb_indexes: ClassVar[tuple[str, ...]] = ("name",)
    nbdb_unique: ClassVar[tuple[str | tuple[str, ...], ...]] = ("name",)

    name: Name
    unit: MeterUnit
    fair: bool | None = None


class MeterBand(Model):
    """``Meter_Band``: one rate of a meter and what happens to the packets above it.

    A non-root row only its meter holds: deleting the meter deletes its bands in the same commit,
    as ovsdb-server collects them after ``ovn-nbctl meter-del``.
    """

    nbdb_owned_by: ClassVar[tuple[str, ...]] = ("meter",)

    meter: Annotated[UUID, Reference("Meter")]
    action: MeterBandAction = MeterBandAction.DROP
    rate: int = Field(ge=1, le=2**32 - 1)
    burst_size: int = Field(default=0, ge=0, le=2**32 - 1)


class StaticMACBinding(Model):
    """``Static_MAC_Binding``: the MAC a router port resolves an IP to without asking (ARP or ND).

    ``ovn-nbctl static-mac-binding-add PORT IP MAC``. OVN's index keeps one per (port, IP). The table
    has no ``external_ids``: on OVSDB its objects hold no topic, ttl or namespace (docs/backends/ovsdb.md).
    """

    nbdb_indexes: ClassVar[tuple[str, ...]] = ("logical_port",)
    nbdb_unique: ClassVar[tuple[str | tuple[str, ...], ...]] = (("logical_port", "ip"),)

    logical_port: Name
    ip: IPAddress
    mac: MACAddress
    override_dynamic_mac: bool = False


class ChassisTemplateVar(Model):
    """``Chassis_Template_Var``: the values a chassis gives the template variables (``^NAME``) that
    load balancers and ACLs use, one row per chassis (by name)."""

    nbdb_indexes: ClassVar[tuple[str, ...]] = ("chassis",)
    nbdb_unique: ClassVar[tuple[str | tuple[str, ...], ...]] = ("chassis",)

    chassis: Name
    variables: dict[str, str] = Field(default_factory=dict, description="template variable name -> value")


class Mirror(Model):
    """``Mirror``: a port mirror; the switch ports naming it (``mirror_rules``) are mirrored to its sink."""

    nbdb_indexes: ClassVar[tuple[str, ...]] = ("name",)
    nbdb_unique: ClassVar[tuple[str | tuple[str, ...], ...]] = ("name",)

    name: Name
    filter: Direction
    sink: str = Field(min_length=1, description="the remote IP the tunnel ends at")
    type: MirrorType
    # Any integer, as the column is (ovn-nbctl mirror-add writes -1 and 2**32): the int64 range.
    index: int = Field(ge=-(2**63), le=2**63 - 1, description="the tunnel key (GRE) or session id (ERSPAN)")


class BFD(Model):
    """``BFD``: a bidirectional forwarding detection session of a router port with a peer address.

    A static route names the session that says whether its next hop is alive (``bfd``).
    """

    nbdb_unique: ClassVar[tuple[str | tuple[str, ...], ...]] = (("logical_port", "dst_ip"),)

    logical_port: Name
    dst_ip: IPAddress
    min_tx: int | None = Field(default=None, ge=1, le=2**63 - 1)
    min_rx: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    detect_mult: int | None = Field(default=None, ge=1, le=2**63 - 1)
    status: BFDStatus | None = None
    options: dict[str, str] = Field(default_factory=dict)


class LogicalSwitch(Model):
    """``Logical_Switch``: an L2 network. Its ports, ACLs, QoS rules and forwarding groups point to it."""

    nbdb_indexes: ClassVar[tuple[str, ...]] = ("name",)

    name: str = ""
    other_config: dict[str, str] = Field(default_factory=dict)
    load_balancer: list[Annotated[UUID, Reference("LoadBalancer", weak=True)]] = Field(default_factory=list)
    load_balancer_group: list[Annotated[UUID, Reference("LoadBalancerGroup")]] = Field(default_factory=list)
    dns_records: list[Annotated[UUID, Reference("DNS", weak=True)]] = Field(default_factory=list)
    copp: Annotated[UUID | None, Reference("Copp", weak=True)] = None


class ForwardingGroup(Model):
    """``Forwarding_Group``: a virtual IP and MAC a switch answers for, forwarding to the live ones of its ports.

    OVN keeps them in ``Logical_Switch.forwarding_groups``; here each names its switch
    (``ovn-nbctl fwd-group-add``). A non-root row only its switch holds: deleting the switch deletes
    them in the same commit, as ovsdb-server collects them.
    """

    nbdb_owned_by: ClassVar[tuple[str, ...]] = ("switch",)

    switch: Annotated[UUID, Reference("LogicalSwitch")]
    name: Name
    vip: IPAddress
    vmac: MACAddress
    liveness: bool = False
    child_port: list[Name] = Field(min_length=1, description="the names of the switch's ports it forwards to")


class DHCPOptions(Model):
    """``DHCP_Options``: options served to ports of one subnet."""

    nbdb_indexes: ClassVar[tuple[str, ...]] = ("cidr",)

    cidr: CIDRAddress  # OVN keeps host bits (ovn-nbctl dhcp-options-create 10.0.0.5/24)
    options: dict[str, str] = Field(default_factory=dict)


class HAChassisGroup(Model):
    """``HA_Chassis_Group``: chassis that may host a port (an external port, a gateway), by priority.

    Its chassis point to it (``HAChassis.group``); ports name it in ``ha_chassis_group``.
    """

    nbdb_indexes: ClassVar[tuple[str, ...]] = ("name",)
    nbdb_unique: ClassVar[tuple[str | tuple[str, ...], ...]] = ("name",)

    name: Name


class HAChassis(Model):
    """``HA_Chassis``: one chassis of an HA chassis group (``HA_Chassis_Group.ha_chassis`` in OVN).

    A non-root row only its group holds: deleting the group deletes them in the same commit, as
    ``ovn-nbctl ha-chassis-group-del`` does.
    """

    nbdb_owned_by: ClassVar[tuple[str, ...]] = ("group",)

    group: Annotated[UUID, Reference("HAChassisGroup")]
    chassis_name: Name
    priority: Priority = 0


class LogicalSwitchPort(Model):
    """``Logical_Switch_Port``: a port of a logical switch, bound to a chassis when up."""

    nbdb_indexes: ClassVar[tuple[str, ...]] = ("name",)
    nbdb_unique: ClassVar[tuple[str | tuple[str, ...], ...]] = ("name",)

    switch: Annotated[UUID, Reference("LogicalSwitch")]
    name: Name
    type: PortType = PortType.NORMAL
    addresses: list[LSPAddress] = Field(default_factory=list)
    port_security: list[str] = Field(default_factory=list)
    options: dict[str, str] = Field(default_factory=dict)
    parent_name: str | None = None
    tag_request: VlanTag | None = None
    # The column's range (minInteger 1): memory:// and Redis stored the 0 ovsdb-server refuses.
    tag: AllocatedVlanTag | None = None
    up: bool | None = None
    enabled: bool | None = None
    dhcpv4_options: Annotated[UUID | None, Reference("DHCPOptions", weak=True)] = None
    dhcpv6_options: Annotated[UUID | None, Reference("DHCPOptions", weak=True)] = None
    chassis: Annotated[UUID | None, Reference("Chassis")] = None
    ha_chassis_group: Annotated[UUID | None, Reference("HAChassisGroup")] = None
    mirror_rules: list[Annotated[UUID, Reference("Mirror", weak=True)]] = Field(default_factory=list)


class LogicalRouter(Model):
    """``Logical_Router``: its ports, routes and NAT rules point to it."""

    nbdb_indexes: ClassVar[tuple[str, ...]] = ("name",)

    name: str = ""
    enabled: bool | None = None
    options: dict[str, str] = Field(default_factory=dict)
    load_balancer: list[Annotated[UUID, Reference("LoadBalancer", weak=True)]] = Field(default_factory=list)
    load_balancer_group: list[Annotated[UUID, Reference("LoadBalancerGroup")]] = Field(default_factory=list)
    copp: Annotated[UUID | None, Reference("Copp", weak=True)] = None


class LogicalRouterPort(Model):
    """``Logical_Router_Port``."""

    nbdb_indexes: ClassVar[tuple[str, ...]] = ("name",)
    nbdb_unique: ClassVar[tuple[str | tuple[str, ...], ...]] = ("name",)

    router: Annotated[UUID, Reference("LogicalRouter")]
    name: Name
    mac: MACAddress
    networks: list[IPInterface] = Field(min_length=1)
    peer: str | None = None
    enabled: bool | None = None
    options: dict[str, str] = Field(default_factory=dict)
    # nbdb's own wish of gateways, kept in external_ids: ovn-northd does not see it. OVN's
    # Logical_Router_Port.gateway_chassis column is the set of the port's GatewayChassis objects.
    gateway_chassis: list[Annotated[UUID, Reference("Chassis")]] = Field(default_factory=list)
    ha_chassis_group: Annotated[UUID | None, Reference("HAChassisGroup")] = None
    # IPv6 router advertisement (address_mode, send_periodic, mtu...) and the prefixes ovn-controller
    # delegated to the port (prefix delegation): a copy of a router with IPv6 tenants keeps them.
    ipv6_ra_configs: dict[str, str] = Field(default_factory=dict)
    ipv6_prefix: list[str] = Field(default_factory=list)


class GatewayChassis(Model):
    """``Gateway_Chassis``: a chassis, by name, that may host a router port's gateway, by priority.

    OVN keeps them in ``Logical_Router_Port.gateway_chassis``; here each names its port
    (``ovn-nbctl lrp-set-gateway-chassis`` makes one named ``<port>-<chassis>``). A non-root row
    only its port holds: deleting the port deletes them in the same commit, as ``lrp-del`` does.
    """

    nbdb_indexes: ClassVar[tuple[str, ...]] = ("name",)
    nbdb_unique: ClassVar[tuple[str | tuple[str, ...], ...]] = ("name",)
    nbdb_owned_by: ClassVar[tuple[str, ...]] = ("port",)

    port: Annotated[UUID, Reference("LogicalRouterPort")]
    name: Name
    chassis_name: Name
    priority: Priority = 0
    options: dict[str, str] = Field(default_factory=dict)


class LogicalRouterStaticRoute(Model):
    """``Logical_Router_Static_Route``."""

    router: Annotated[UUID, Reference("LogicalRouter")]
    ip_prefix: IPOrCIDRAddress  # ovn-northd masks it: ovsdbapp stores 10.0.0.5/24 as given
    nexthop: RouteNexthop
    output_port: str | None = None
    policy: RoutePolicy | None = None
    route_table: str = ""
    options: dict[str, str] = Field(default_factory=dict)
    bfd: Annotated[UUID | None, Reference("BFD", weak=True)] = None


class LogicalRouterPolicy(Model):
    """``Logical_Router_Policy``: a policy-based routing rule of a logical router."""

    router: Annotated[UUID, Reference("LogicalRouter")]
    priority: Priority
    match: str = Field(min_length=1)
    action: RouterPolicyAction
    nexthop: str | None = None
    nexthops: list[str] = Field(default_factory=list)
    options: dict[str, str] = Field(default_factory=dict)


class PortGroup(Model):
    """``Port_Group``: a named set of switch ports, usable in ACL matches."""

    nbdb_indexes: ClassVar[tuple[str, ...]] = ("name",)
    nbdb_unique: ClassVar[tuple[str | tuple[str, ...], ...]] = ("name",)

    name: Name
    ports: list[Annotated[UUID, Reference("LogicalSwitchPort", weak=True)]] = Field(default_factory=list)


class ACL(Model):
    """``ACL``: applied to exactly one switch or one port group."""

    switch: Annotated[UUID | None, Reference("LogicalSwitch")] = None
    port_group: Annotated[UUID | None, Reference("PortGroup")] = None
    direction: Direction
    priority: Priority
    match: str = Field(min_length=1)
    action: ACLAction
    log: bool = False
    name: str | None = Field(default=None, max_length=63)
    severity: Severity | None = None
    meter: str | None = None  # a Meter's name (ovn-nbctl acl-add --meter): no reference in the schema
    label: int = Field(default=0, ge=0, le=2**32 - 1)  # ovn-nbctl acl-add --label, stored in conntrack
    options: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_owner(self) -> ACL:
        if (self.switch is None) == (self.port_group is None):
            raise ValueError("an ACL belongs to exactly one of switch or port_group")
        return self


class AddressSet(Model):
    """``Address_Set``: a named set of addresses, usable in ACL matches."""

    nbdb_indexes: ClassVar[tuple[str, ...]] = ("name",)
    nbdb_unique: ClassVar[tuple[str | tuple[str, ...], ...]] = ("name",)

    name: Name
    addresses: list[AddressSetEntry] = Field(default_factory=list)


class NAT(Model):
    """``NAT`` rule of a logical router."""

    router: Annotated[UUID, Reference("LogicalRouter")]
    type: NATType
    external_ip: IPAddress
    logical_ip: IPOrCIDR
    external_mac: MACAddress | None = None
    logical_port: str | None = None
    external_port_range: PortRange | None = None
    options: dict[str, str] = Field(default_factory=dict)
    # The router port a NAT of a router with several gateway ports applies on (weak, as in the schema),
    # and the address sets of external IPs it applies to (allowed) or skips (exempted).
    gateway_port: Annotated[UUID | None, Reference("LogicalRouterPort", weak=True)] = None
    allowed_ext_ips: Annotated[UUID | None, Reference("AddressSet")] = None
    exempted_ext_ips: Annotated[UUID | None, Reference("AddressSet")] = None

    @model_validator(mode="after")
    def _mac_needs_port(self) -> NAT:
        # A logical port alone is a centralized rule: Neutron writes every floating IP so until its
        # port is up (and for good without distributed floating IPs, its default); ovn-northd
        # takes it. An external MAC names the port's MAC for distributed NAT and needs the port.
        if self.external_mac is not None and self.logical_port is None:
            raise ValueError("external_mac needs logical_port (distributed NAT)")
        return self


class QoS(Model):
    """``QoS`` rule of a logical switch: DSCP marking and/or rate limiting."""

    switch: Annotated[UUID, Reference("LogicalSwitch")]
    priority: Priority
    direction: Direction
    match: str = Field(min_length=1)
    action: dict[str, Annotated[int, Field(ge=0, le=63)]] = Field(default_factory=dict)
    # The column's range (maxInteger 2**32 - 1): memory:// and Redis stored what ovsdb-server refuses.
    bandwidth: dict[str, Annotated[int, Field(ge=1, le=2**32 - 1)]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _keys(self) -> QoS:
        if set(self.action) - {"dscp", "mark"}:
            raise ValueError("QoS.action keys are dscp and mark")
        if set(self.bandwidth) - {"rate", "burst"}:
            raise ValueError("QoS.bandwidth keys are rate and burst")
        if not self.action and not self.bandwidth:
            raise ValueError("a QoS rule needs an action or a bandwidth")
        return self
