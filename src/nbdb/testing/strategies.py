"""Hypothesis strategies of nbdb's OVN models, for property tests of codecs, mappings and backends.

Needs the ``test`` extra (hypothesis). Most models build from their annotations; the
fields listed in :data:`OVERRIDES` need values of a shape hypothesis cannot guess.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from nbdb.models import ovn
from nbdb.models.base import Model
from nbdb.models.ovn import (
    ACL,
    BFD,
    NAT,
    DHCPOptions,
    ForwardingGroup,
    LogicalRouterPort,
    LogicalRouterStaticRoute,
    QoS,
    StaticMACBinding,
)

__all__ = ["OVERRIDES", "OVN_MODELS", "json_values", "newer_fields", "ovn_objects"]

_IPS = st.sampled_from(["10.0.0.1", "192.168.7.0", "fd00::1", "2001:db8::5"])
_MACS = st.sampled_from(["0a:00:00:00:00:01", "de:ad:be:ef:00:02"])

OVERRIDES: dict[type[Model], dict[str, st.SearchStrategy[Any]]] = {
    DHCPOptions: {"cidr": st.sampled_from(["10.0.0.0/24", "fd00::/64"])},
    LogicalRouterPort: {"mac": _MACS, "networks": st.lists(st.sampled_from(["10.0.0.1/24", "fd00::1/64"]), min_size=1)},
    LogicalRouterStaticRoute: {"ip_prefix": _IPS, "nexthop": _IPS},
    ACL: {"switch": st.uuids(), "port_group": st.none()},
    NAT: {"external_ip": _IPS, "logical_ip": _IPS},
    QoS: {"action": st.dictionaries(st.sampled_from(["dscp", "mark"]), st.integers(0, 63), min_size=1)},
    BFD: {"dst_ip": _IPS},
    StaticMACBinding: {"ip": _IPS, "mac": _MACS},
    ForwardingGroup: {
        "vip": _IPS,
        "vmac": _MACS,
        "child_port": st.lists(st.sampled_from(["lsp1", "lsp-2", "p3"]), min_size=1, max_size=3),
    },
}
"""Per model, the fields whose valid values hypothesis cannot derive from the annotations."""

OVN_MODELS: tuple[type[Model], ...] = tuple(
    sorted(
        (m for m in vars(ovn).values() if isinstance(m, type) and issubclass(m, Model) and m is not Model),
        key=lambda m: m.__name__,
    )
)
"""Every model of :mod:`nbdb.models.ovn`, by name."""


def ovn_objects(models: tuple[type[Model], ...] = OVN_MODELS) -> st.SearchStrategy[Model]:
    """Valid objects of any of ``models`` (default: every OVN model)."""

    def build(model: type[Model]) -> st.SearchStrategy[Model]:
        return st.builds(model, **OVERRIDES.get(model, {}))

    return st.sampled_from(models).flatmap(build)


def json_values(max_text: int = 8, max_leaves: int = 6) -> st.SearchStrategy[Any]:
    """Any value JSON holds (integers within a double's exact range), nested a little."""
    return st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=max_text),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
        max_leaves=max_leaves,
    )


def newer_fields(model: type[Model], max_text: int = 8, max_leaves: int = 6) -> st.SearchStrategy[dict[str, Any]]:
    """Top-level fields a newer version of ``model`` could have written: 1-3 names it lacks, with JSON values."""
    return st.dictionaries(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8).filter(
            lambda name: name not in model.model_fields
        ),
        json_values(max_text, max_leaves),
        min_size=1,
        max_size=3,
    )
