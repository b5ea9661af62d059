"""ovsdb-server standalone and raft with the OVN NB schema, checked with the OVS tools."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from nbdb.testing import OvsdbServer, Server, find_ovn_nb_schema, wait_until
from nbdb.testing.process import find_binary


def _nbctl(server: OvsdbServer, *args: str, db: str | None = None) -> str:
    nbctl = find_binary("ovn-nbctl")
    assert nbctl is not None, "ovn-nbctl (ovn-central) is installed by install-servers.sh"
    result = subprocess.run(
        [nbctl, f"--db={db or server.remotes}", "--timeout=5", "--no-leader-only", *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return result.stdout


@pytest.mark.timeout(60)
def test_standalone_ovn_nb(ovsdb_server: OvsdbServer) -> None:
    assert ovsdb_server.url == f"ovsdb+tcp://127.0.0.1:{ovsdb_server.port}"
    assert ovsdb_server.database == "OVN_Northbound"
    assert ovsdb_server.schema == str(find_ovn_nb_schema())
    assert ovsdb_server.leader() is ovsdb_server.members[0]
    _nbctl(ovsdb_server, "ls-add", "sw-standalone")
    assert "sw-standalone" in _nbctl(ovsdb_server, "ls-list")


@pytest.mark.timeout(60)
def test_custom_schema(server_factory: Callable[..., Server], tmp_path: Path) -> None:
    schema = {
        "name": "Tiny",
        "version": "1.0.0",
        "tables": {"Item": {"columns": {"name": {"type": "string"}}}},
    }
    path = tmp_path / "tiny.ovsschema"
    path.write_text(json.dumps(schema))
    server = server_factory("ovsdb", schema=path)
    assert isinstance(server, OvsdbServer) and server.database == "Tiny"
    dbs = subprocess.run(
        [str(find_binary("ovsdb-client")), "list-dbs", f"tcp:{server.members[0].address}"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout.split()
    assert "Tiny" in dbs


@pytest.mark.timeout(60)
def test_cluster_leader_and_replication(ovsdb_cluster: OvsdbServer) -> None:
    members = ovsdb_cluster.members
    assert ovsdb_cluster.url == "ovsdb+tcp://" + ",".join(m.address for m in members)
    assert ovsdb_cluster.remotes == ",".join(f"tcp:{m.address}" for m in members)
    leader = ovsdb_cluster.leader()
    assert "Role: leader" in ovsdb_cluster.cluster_status(leader)
    for follower in ovsdb_cluster.followers():
        assert "Role: follower" in ovsdb_cluster.cluster_status(follower)
    _nbctl(ovsdb_cluster, "ls-add", "sw-cluster", db=f"tcp:{leader.address}")
    follower = ovsdb_cluster.followers()[0]
    wait_until(
        lambda: "sw-cluster" in _nbctl(ovsdb_cluster, "ls-list", db=f"tcp:{follower.address}"),
        10,
        "replication to a follower",
    )


@pytest.mark.timeout(120)
def test_leader_kill_restart_and_pause(server_factory: Callable[..., Server]) -> None:
    cluster = server_factory("ovsdb", members=3)
    assert isinstance(cluster, OvsdbServer)
    old = cluster.leader()
    _nbctl(cluster, "ls-add", "sw-before")
    old.kill()
    wait_until(lambda: cluster.leader() is not old, 20, "a new raft leader", interval=0.2)
    _nbctl(cluster, "ls-add", "sw-during")
    old.restart()
    assert "Status: cluster member" in cluster.cluster_status(old)
    wait_until(
        lambda: "sw-during" in _nbctl(cluster, "ls-list", db=f"tcp:{old.address}"),
        20,
        "the restarted member to catch up",
    )
    # Freeze the current leader: the others elect a new one.
    frozen = cluster.leader()
    frozen.pause()
    try:
        wait_until(lambda: cluster.leader() is not frozen, 20, "a leader while paused", interval=0.2)
    finally:
        frozen.resume()
    wait_until(lambda: cluster.member_ready(frozen), 20, "the resumed member to rejoin")


@pytest.mark.timeout(60)
def test_stop_leaves_nothing_behind(
    assert_cleaned_up: Callable[[Server, list[int], Path], None],
) -> None:
    cluster = OvsdbServer(members=3).start()
    pids = [m.pid for m in cluster.members if m.pid]
    base_dir = Path(str(cluster.base_dir))
    cluster.stop()
    assert_cleaned_up(cluster, pids, base_dir)
