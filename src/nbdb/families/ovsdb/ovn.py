"""How nbdb's logical schema sits in the real ``OVN_Northbound`` database.

This is the only module that knows OVN's table names: the generic mapping
(:mod:`.mapping`) takes these bindings as data, so another OVSDB schema
(Open_vSwitch, a user's own) is bound the same way, by writing bindings.
"""

from __future__ import annotations

from nbdb.families.ovsdb.mapping import TableBinding

__all__ = ["DERIVED_COLUMNS", "OVN_BINDINGS", "OVN_NB_DATABASE", "SERVER_TABLES"]

OVN_NB_DATABASE = "OVN_Northbound"

OVN_BINDINGS: tuple[TableBinding, ...] = (
    TableBinding("LogicalSwitch", "Logical_Switch"),
    TableBinding(
        "LogicalSwitchPort",
        "Logical_Switch_Port",
        parents={"switch": ("Logical_Switch", "ports")},
        # OVN binds ports to chassis in the Southbound database; nbdb's model keeps the wish here.
        ext_fields=frozenset({"chassis"}),
    ),
    TableBinding("LogicalRouter", "Logical_Router"),
    TableBinding(
        "LogicalRouterPort",
        "Logical_Router_Port",
        parents={"router": ("Logical_Router", "ports")},
        # OVN's column of that name is the set of the port's Gateway_Chassis rows (GatewayChassis.port
        # below); nbdb's list of Chassis references has no place in the schema.
        ext_fields=frozenset({"gateway_chassis"}),
    ),
    # Models added after the first ones: a schema of an OVN older than these tables still connects
    # (these models then have no table there, as Chassis has none).
    TableBinding(
        "GatewayChassis",
        "Gateway_Chassis",
        parents={"port": ("Logical_Router_Port", "gateway_chassis")},
        required=False,
    ),
    TableBinding(
        "LogicalRouterPolicy",
        "Logical_Router_Policy",
        parents={"router": ("Logical_Router", "policies")},
        required=False,
    ),
    TableBinding("HAChassisGroup", "HA_Chassis_Group", required=False),
    TableBinding("HAChassis", "HA_Chassis", parents={"group": ("HA_Chassis_Group", "ha_chassis")}, required=False),
    TableBinding("DNS", "DNS", required=False),
    TableBinding("Copp", "Copp", required=False),
    TableBinding("BFD", "BFD", required=False),
    TableBinding("Mirror", "Mirror", required=False),
    TableBinding("LoadBalancerGroup", "Load_Balancer_Group", required=False),
    TableBinding(
        "ForwardingGroup",
        "Forwarding_Group",
        parents={"switch": ("Logical_Switch", "forwarding_groups")},
        required=False,
    ),
    TableBinding(
        "LoadBalancerHealthCheck",
        "Load_Balancer_Health_Check",
        parents={"load_balancer": ("Load_Balancer", "health_check")},
        required=False,
    ),
    TableBinding("Meter", "Meter", required=False),
    TableBinding("MeterBand", "Meter_Band", parents={"meter": ("Meter", "bands")}, required=False),
    TableBinding("StaticMACBinding", "Static_MAC_Binding", required=False),
    TableBinding("ChassisTemplateVar", "Chassis_Template_Var", required=False),
    TableBinding(
        "LogicalRouterStaticRoute",
        "Logical_Router_Static_Route",
        parents={"router": ("Logical_Router", "static_routes")},
    ),
    TableBinding(
        "ACL",
        "ACL",
        parents={"switch": ("Logical_Switch", "acls"), "port_group": ("Port_Group", "acls")},
    ),
    TableBinding("NAT", "NAT", parents={"router": ("Logical_Router", "nat")}),
    TableBinding("QoS", "QoS", parents={"switch": ("Logical_Switch", "qos_rules")}),
    TableBinding("AddressSet", "Address_Set"),
    TableBinding("PortGroup", "Port_Group"),
    TableBinding("LoadBalancer", "Load_Balancer"),
    TableBinding("DHCPOptions", "DHCP_Options"),
)
"""nbdb model table -> ``OVN_Northbound`` table, with the children's parent set columns."""

LEDGER_TABLES: dict[str, str] = {OVN_NB_DATABASE: "NB_Global", "OVN_Southbound": "SB_Global"}
"""Database -> its one-row configuration table, whose ``external_ids`` holds the commit marks of commits that
write only rows without ``external_ids`` (OVN's ``Load_Balancer_Group``): see :mod:`.planner`, *ledger*."""

SERVER_TABLES: dict[str, frozenset[str]] = {OVN_NB_DATABASE: frozenset({"NB_Global", "Connection", "SSL"})}
"""Tables of a database that configure its server and its readers, no logical network: no model maps
them, and a copy of the network leaves them where they are (see ``unmodelled``)."""

DERIVED_COLUMNS: dict[str, dict[str, frozenset[str]]] = {
    OVN_NB_DATABASE: {"Logical_Switch_Port": frozenset({"dynamic_addresses"})}
}
"""Columns of mapped tables no model field maps that another client derives from the others (ovn-northd
writes a port's ``dynamic_addresses`` from its ``addresses`` "dynamic"): a copy leaves them for that
client to derive again in the destination, without counting them lost (see ``unmodelled``)."""
