"""Fixtures for the OVSDB family's unit tests: a small Northbound schema, its mapping and a replica."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from nbdb.families.ovsdb import OVN_BINDINGS, DatabaseSchema, Mapping_, Replica, build_mapping
from nbdb.families.ovsdb.rows import VersionBook
from nbdb.models import LogicalSwitch, LogicalSwitchPort, PortGroup
from nbdb.models.shape import shape_of

_STRINGS = {"key": "string", "value": "string", "min": 0, "max": "unlimited"}


def _refs(table: str, ref_type: str = "strong") -> dict[str, Any]:
    return {"key": {"type": "uuid", "refTable": table, "refType": ref_type}, "min": 0, "max": "unlimited"}


NB_SCHEMA: dict[str, Any] = {
    "name": "OVN_Northbound",
    "version": "7.0.0",
    "tables": {
        "Logical_Switch": {
            "isRoot": True,
            "columns": {
                "name": {"type": "string"},
                "ports": {"type": _refs("Logical_Switch_Port")},
                "acls": {"type": _refs("ACL")},
                "qos_rules": {"type": _refs("QoS")},
                "load_balancer": {"type": _refs("Load_Balancer", "weak")},
                "other_config": {"type": _STRINGS},
                "external_ids": {"type": _STRINGS},
            },
        },
        "Logical_Switch_Port": {
            "isRoot": False,
            "indexes": [["name"]],
            "columns": {
                "name": {"type": "string"},
                "type": {"type": "string"},
                "addresses": {"type": {"key": "string", "min": 0, "max": "unlimited"}},
                "port_security": {"type": {"key": "string", "min": 0, "max": "unlimited"}},
                "options": {"type": _STRINGS},
                "parent_name": {"type": {"key": "string", "min": 0, "max": 1}},
                "tag_request": {"type": {"key": {"type": "integer", "minInteger": 0, "maxInteger": 4095}, "min": 0,
                                         "max": 1}},
                "tag": {"type": {"key": {"type": "integer", "minInteger": 1, "maxInteger": 4095}, "min": 0, "max": 1}},
                "up": {"type": {"key": "boolean", "min": 0, "max": 1}},
                "enabled": {"type": {"key": "boolean", "min": 0, "max": 1}},
                "dhcpv4_options": {"type": {"key": {"type": "uuid", "refTable": "DHCP_Options", "refType": "weak"},
                                            "min": 0, "max": 1}},
                "dhcpv6_options": {"type": {"key": {"type": "uuid", "refTable": "DHCP_Options", "refType": "weak"},
                                            "min": 0, "max": 1}},
                "dynamic_addresses": {"type": {"key": "string", "min": 0, "max": 1}},
                "external_ids": {"type": _STRINGS},
            },
        },
        "Port_Group": {
            "isRoot": True,
            "indexes": [["name"]],
            "columns": {
                "name": {"type": "string"},
                "ports": {"type": _refs("Logical_Switch_Port", "weak")},
                "acls": {"type": _refs("ACL")},
                "external_ids": {"type": _STRINGS},
            },
        },
    },
}  # fmt: skip


def make_mapping(schema: dict[str, Any] | None = None) -> Mapping_:
    """The mapping of LogicalSwitch, LogicalSwitchPort and PortGroup onto ``schema`` (default: NB_SCHEMA)."""
    parsed = DatabaseSchema.parse(schema or NB_SCHEMA)
    shapes = [shape_of(LogicalSwitch), shape_of(LogicalSwitchPort), shape_of(PortGroup)]
    return build_mapping({parsed.name: parsed}, {parsed.name: OVN_BINDINGS}, shapes)


@pytest.fixture
def nb_schema() -> dict[str, Any]:
    """A copy of NB_SCHEMA to change (an older or newer schema)."""
    return copy.deepcopy(NB_SCHEMA)


@pytest.fixture
def mapping_of() -> Callable[[dict[str, Any] | None], Mapping_]:
    """:func:`make_mapping`, for tests that map several schemas."""
    return make_mapping


@pytest.fixture
def mapping() -> Mapping_:
    return make_mapping()


@pytest.fixture
def replica(mapping: Mapping_) -> Replica:
    """A replica of the default namespace that has seen an empty database."""
    replica = Replica(mapping, VersionBook(), "")
    replica.resync("OVN_Northbound", {})
    return replica
