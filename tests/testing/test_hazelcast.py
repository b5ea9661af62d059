"""Hazelcast members from the Maven jar: readiness, fault helpers, a 3-member cluster, cleanup."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from nbdb.testing import HarnessError, HazelcastServer, Server, wait_until
from nbdb.testing.hazelcast import member_health


@pytest.mark.timeout(120)
def test_ready_url_and_fault_helpers(hazelcast_server: HazelcastServer) -> None:
    server = hazelcast_server
    member = server.members[0]
    assert server.url == f"hazelcast://127.0.0.1:{member.port}/nbdb"
    assert server.version.startswith("5.")
    assert server.leader() is member
    health = member_health(member.host, member.port)
    assert health is not None and health["nodeState"] == "ACTIVE" and health["clusterSize"] == 1
    member.pause()
    try:
        assert member_health(member.host, member.port, timeout=0.5) is None
    finally:
        member.resume()
    wait_until(server.ready, 30, "the member to answer again")
    old_pid = member.pid
    member.kill()
    assert not member.is_running()
    assert member_health(member.host, member.port, timeout=0.5) is None
    member.restart()
    assert member.pid != old_pid
    assert server.ready()


@pytest.mark.timeout(180)
def test_three_members_lose_and_regain_one(
    assert_cleaned_up: Callable[[Server, list[int], Path], None],
) -> None:
    server = HazelcastServer(members=3, cluster_name="three").start()
    try:
        assert server.url.endswith("/three") and server.url.count(",") == 2
        with pytest.raises(HarnessError):
            server.leader()  # partitioned data has no single leader
        for member in server.members:
            health = member_health(member.host, member.port)
            assert health is not None and health["clusterSize"] == 3
        victim = server.members[1]
        victim.kill()
        survivor = server.members[0]
        wait_until(
            lambda: (member_health(survivor.host, survivor.port) or {}).get("clusterSize") == 2,
            30,
            "the survivors to drop the dead member",
        )
        victim.restart()
        server.wait_ready(60)
        assert all((member_health(m.host, m.port) or {}).get("clusterSize") == 3 for m in server.members)
    finally:
        pids = [m.pid for m in server.members if m.pid]
        base_dir = Path(str(server.base_dir))
        server.stop()
    assert_cleaned_up(server, pids, base_dir)
