"""The workloads: each group runs through nbdb (``nbdb``) and through the raw client (``raw``).

A group is one function per side taking ``(target, sizes, **params)`` and
returning :class:`nbdb.bench.results.Measurement` objects; one call may yield
several workloads (the CRUD group measures create, get, update and delete of
the same ports). :data:`GROUPS` lists them in run order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nbdb.bench.config import Sizes
from nbdb.bench.results import Measurement
from nbdb.bench.workloads import cache, churn, concurrent, crud, fanout, listing, ovn, txn

__all__ = ["GROUPS", "WORKLOAD_TITLES", "Group"]

Runner = Callable[..., list[Measurement]]


@dataclass(frozen=True, slots=True)
class Group:
    """A set of workloads measured together, with its parameter sweep."""

    name: str
    nbdb: Runner
    raw: Runner | None
    """None: nbdb only (nothing raw does the same work)."""
    params: Callable[[Sizes], list[dict[str, Any]]]
    backends: tuple[str, ...] = ()
    """Only these backends (empty: every one)."""
    writes: bool = False
    """It measures writes (or reads of what they wrote): the backend's extra raw baselines, which do
    the contract's server work by hand, are measured on it too."""


def _once(_: Sizes) -> list[dict[str, Any]]:
    return [{}]


GROUPS: tuple[Group, ...] = (
    Group("crud", crud.run_nbdb, crud.run_raw, _once, writes=True),
    Group(
        "threads",
        concurrent.run_nbdb,
        concurrent.run_raw,
        lambda s: [{}, *({"threads": n, "topics": n} for n in s.spread_threads)],
        writes=True,
    ),
    Group("txn", txn.run_nbdb, txn.run_raw, lambda s: [{"size": n} for n in s.txn_sizes], writes=True),
    Group("list", listing.run_nbdb, listing.run_raw, _once, writes=True),
    Group("cache", cache.run_nbdb, cache.run_raw, lambda s: [{"objects": n} for n in s.load_objects]),
    Group("fanout", fanout.run_nbdb, fanout.run_raw, lambda s: [{"caches": n} for n in s.fanout_caches]),
    Group(
        "spread",
        fanout.run_spread,
        None,
        lambda s: [{"processes": p, "caches": c} for p, c in s.fanout_spread],
        fanout.SPREAD_BACKENDS,
    ),
    Group("churn", churn.run_nbdb, None, lambda s: [{}, {"controller": True}]),
    Group("ovn", ovn.run_nbdb, ovn.run_raw, lambda s: [{"ports": n} for n in s.ovn_ports], ("ovsdb",)),
)

#: What each workload measures, for the table and the docs.
WORKLOAD_TITLES: dict[str, str] = {
    "write.create": "create one port",
    "read.get": "get one port by id",
    "write.update": "update one port (compare-and-swap)",
    "write.delete": "delete one port (compare-and-swap)",
    "write.create.threads": f"create one port, {concurrent.THREADS} threads at once (total ops/s; "
    "threads=N topics=N: N threads, each in a topic of its own)",
    "write.txn": "create N ports in one transaction (objects/s)",
    "read.list": "list every port (objects/s)",
    "cache.cold_load": "cache cold load (objects/s)",
    "cache.get": "cache get by id, one thread",
    "cache.find": "cache find by indexed name, one thread",
    "watch.fanout": "one writer, N caches: commit to applied",
    "watch.spread": "one writer, N caches spread over P processes (a Database each): commit to applied",
    "churn": "tenants, networks, ports bound to chassis, deletes; topic-filtered caches",
    "churn.controller": "the same churn into controllers: write to the reconcile that reflects it",
    "ovn.cold_load": "OVN: connect and load a switch's N ports (raw: the ovs IDL)",
    "ovn.create": "OVN: create a port on a switch of N ports (raw: ovsdbapp lsp_add + addresses)",
    "ovn.update": "OVN: set a port's addresses (raw: ovsdbapp lsp_set_addresses)",
    "ovn.delete": "OVN: delete a port (raw: ovsdbapp lsp_del)",
    "ovn.txn100": "OVN: create 100 ports in one transaction (objects/s; raw: one ovs IDL transaction)",
    "ovn.follow": "OVN: another client adds ports one by one; rate the follower has them (raw: the ovs IDL)",
}
