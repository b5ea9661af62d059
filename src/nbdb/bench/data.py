"""The objects the workloads write: ports of a cloud's tenants, as nbdb models and as raw JSON.

A port looks like one Neutron would create through networking-ovn: a name, a
MAC and an IP, port security, a few external ids. The raw form is the same
fields as a plain dict, so both sides store (and parse) comparable bytes.
"""

from __future__ import annotations

import itertools
import json
import uuid
from typing import Any

from nbdb.models.ovn import Chassis, LogicalSwitch, LogicalSwitchPort

__all__ = ["make_port", "make_switch", "port_doc", "raw_port", "switch_doc"]


# Names are unique in the process: OVN's schema indexes some names across the
# whole database, whatever namespace a run writes in.
_NAMES = itertools.count()
_RUN = uuid.uuid4().hex[:6]


def _name(kind: str, i: int) -> str:
    return f"{kind}-{i}-{_RUN}{next(_NAMES)}"


def _mac(i: int) -> str:
    # One %-format, not a join over a generator: the generator cost ~1 µs of a port's ~5 µs build, an
    # f-string with five format specs ~0.7, this ~0.4.
    return "0a:%02x:%02x:%02x:%02x:%02x" % ((i >> 32) & 255, (i >> 24) & 255, (i >> 16) & 255, (i >> 8) & 255, i & 255)  # noqa: UP031


def _ip(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def make_switch(i: int, topic: str | None = "tenant-0") -> LogicalSwitch:
    """A tenant network."""
    return LogicalSwitch(name=_name("net", i), topic=topic, other_config={"subnet": f"10.{i & 255}.0.0/16"})


def make_chassis(i: int) -> Chassis:
    """A hypervisor."""
    return Chassis(name=_name("chassis", i), hostname=f"compute-{i}", encap_ip=f"192.0.2.{i % 250 + 1}")


def make_port(switch: LogicalSwitch | uuid.UUID, i: int, topic: str | None = "tenant-0") -> LogicalSwitchPort:
    """A VM's port on ``switch``."""
    mac, ip = _mac(i), _ip(i)
    return LogicalSwitchPort(
        switch=switch,
        name=_name("port", i),
        topic=topic,
        addresses=[f"{mac} {ip}"],
        port_security=[f"{mac} {ip}"],
        external_ids={"neutron:device_owner": "compute:nova", "neutron:revision_number": "1"},
    )


def port_doc(switch_id: str, i: int, topic: str | None = "tenant-0", id: str | None = None) -> dict[str, Any]:
    """The raw form of :func:`make_port`: the same fields, as a dict."""
    mac, ip = _mac(i), _ip(i)
    return {
        "id": id or str(uuid.uuid4()),
        "topic": topic,
        "switch": switch_id,
        "name": _name("port", i),
        "type": "",
        "addresses": [f"{mac} {ip}"],
        "port_security": [f"{mac} {ip}"],
        "options": {},
        "up": None,
        "chassis": None,
        "external_ids": {"neutron:device_owner": "compute:nova", "neutron:revision_number": "1"},
    }


def switch_doc(i: int, topic: str | None = "tenant-0") -> dict[str, Any]:
    """The raw form of :func:`make_switch`."""
    return {"id": str(uuid.uuid4()), "topic": topic, "name": _name("net", i), "other_config": {}}


def raw_port(switch_id: str, i: int, topic: str | None = "tenant-0") -> tuple[str, bytes]:
    """A raw port's id and JSON bytes."""
    doc = port_doc(switch_id, i, topic)
    return doc["id"], json.dumps(doc).encode()
