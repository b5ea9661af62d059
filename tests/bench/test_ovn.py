"""The OVN scale sweep (OVSDB only) at a tiny size: every figure measured on both sides, nothing left behind."""

from __future__ import annotations

import io
from contextlib import ExitStack
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nbdb.bench.config import OVN_SCALE_PROBE_FROM_PORTS, OVN_SCALE_PROBE_MS, SIZES, spawn_options
from nbdb.bench.ovn.wire import RawNb
from nbdb.bench.report import markdown, print_report
from nbdb.bench.results import BenchResult
from nbdb.bench.runner import resolve_targets
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


@given(
    backend=st.sampled_from(["ovsdb", "redis", "memory"]),
    ports=st.lists(st.integers(min_value=1, max_value=1_000_000), min_size=1, max_size=4).map(tuple),
    with_ovn=st.booleans(),
)
def test_only_an_ovn_sweep_at_scale_raises_the_spawned_servers_probe(
    backend: str, ports: tuple[int, ...], with_ovn: bool
) -> None:
    sizes = replace(SIZES["quick"], ovn_ports=ports)
    groups = ("crud", "ovn") if with_ovn else ("crud", "cache")
    options = spawn_options(backend, sizes, groups)
    if backend == "ovsdb" and with_ovn and max(ports) >= OVN_SCALE_PROBE_FROM_PORTS:
        assert options == {"inactivity_probe_ms": OVN_SCALE_PROBE_MS}
    else:
        assert options == {}


def test_the_quick_and_full_sweeps_probe_as_their_sizes_need() -> None:
    # Both reach 10,000 ports, which a busy host's IDL does not load within the default probe
    # (ovsdbapp then had no 10,000-port baseline); a sweep of 1,000 ports keeps the default.
    assert spawn_options("ovsdb", SIZES["quick"], ("ovn",)) == {"inactivity_probe_ms": OVN_SCALE_PROBE_MS}
    assert spawn_options("ovsdb", SIZES["full"], ("ovn",)) == {"inactivity_probe_ms": OVN_SCALE_PROBE_MS}
    assert spawn_options("ovsdb", replace(SIZES["quick"], ovn_ports=(1_000,)), ("ovn",)) == {}


def test_a_spawned_server_gets_its_options_and_the_report_says_so() -> None:
    result = BenchResult(meta={})
    with ExitStack() as stack:
        [target] = resolve_targets(
            ["ovsdb"], {}, True, stack, result, server_options=lambda backend: {"inactivity_probe_ms": 45_000}
        )
        assert result.backends["ovsdb"]["server_options"] == {"inactivity_probe_ms": 45_000}
        wire = RawNb(target.url)
        try:
            [reply] = wire.transact(
                [{"op": "select", "table": "Connection", "where": [], "columns": ["inactivity_probe"]}]
            )
        finally:
            wire.close()
        assert [row["inactivity_probe"] for row in reply["rows"]] == [45_000]
    out = io.StringIO()
    print_report(result, out)
    assert "ovsdb: the spawned server ran with inactivity_probe_ms=45000, for nbdb and the raw clients alike" in (
        out.getvalue()
    )
    assert "### Server settings" in markdown(result, {})
