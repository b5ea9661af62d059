"""The OVN scale sweep (OVSDB only) at a tiny size: every figure measured on both sides, nothing left behind."""

from __future__ import annotations

import pytest

from nbdb.bench.config import SIZES
from nbdb.bench.ovn.wire import RawNb
from nbdb.bench.target import Target
from nbdb.bench.workloads import GROUPS, ovn
from nbdb.testing import Server
from nbdb.testing.fixtures import ovsdb_server  # noqa: F401 - pytest fixture

pytestmark = pytest.mark.timeout(300)

PORT_TABLE = "Logical_Switch_Port"
NAMES = {"ovn.cold_load", "ovn.create", "ovn.update", "ovn.delete", "ovn.txn100", "ovn.follow"}


def test_the_ovn_group_runs_on_ovsdb_only() -> None:
    [group] = [g for g in GROUPS if g.name == "ovn"]
    assert group.backends == ("ovsdb",)
    assert [p["ports"] for p in group.params(SIZES["quick"])] == [1_000, 10_000]
    assert [p["ports"] for p in group.params(SIZES["full"])] == [1_000, 10_000, 100_000]


def test_the_sweep_measures_nbdb_the_ovs_idl_and_ovsdbapp(ovsdb_server: Server) -> None:  # noqa: F811
    target = Target("ovsdb", ovsdb_server.url)
    sizes = SIZES["tiny"]
    raw = ovn.run_raw(target, sizes, ports=100)
    mine = ovn.run_nbdb(target, sizes, ports=100)
    for measured in (raw, mine):
        assert {m.workload for m in measured} == NAMES
        assert all(m.count > 0 and m.elapsed_ns > 0 and m.params == {"ports": 100} for m in measured)
    # Each side removed its switch and ports.
    wire = RawNb(ovsdb_server.url)
    try:
        for table, prefix in (
            ("Logical_Switch", f"scale-bench-{target.run_id}"),
            (PORT_TABLE, f"bench-{target.run_id}"),
        ):
            rows = wire.transact([{"op": "select", "table": table, "where": [], "columns": ["name"]}])
            left = [r["name"] for r in rows[0]["rows"] if r["name"].startswith(prefix)]
            assert left == [], f"{table} rows left behind: {left[:3]}"
    finally:
        wire.close()
