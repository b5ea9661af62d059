"""etcd single member and 3-member cluster: readiness, leader, kill/restart, pause."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nbdb.testing import EtcdServer, Member, Server, wait_until


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _call(member: Member, path: str, body: dict[str, Any], timeout: float = 3.0) -> Any:
    request = urllib.request.Request(f"http://{member.address}/v3/{path}", data=json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _put(member: Member, key: str, value: str) -> None:
    _call(member, "kv/put", {"key": _b64(key), "value": _b64(value)})


def _get(member: Member, key: str) -> str | None:
    reply = _call(member, "kv/range", {"key": _b64(key)})
    kvs = reply.get("kvs", [])
    return base64.b64decode(kvs[0]["value"]).decode() if kvs else None


@pytest.mark.timeout(60)
def test_single_member(etcd_server: EtcdServer) -> None:
    assert etcd_server.url == f"etcd://127.0.0.1:{etcd_server.port}"
    member = etcd_server.members[0]
    assert etcd_server.leader() is member
    _put(member, "a", "1")
    assert _get(member, "a") == "1"
    assert etcd_server.info()["endpoints"] == [f"http://127.0.0.1:{member.port}"]


@pytest.mark.timeout(60)
def test_cluster_url_leader_and_replication(etcd_cluster: EtcdServer) -> None:
    assert len(etcd_cluster.members) == 3
    assert etcd_cluster.url == "etcd://" + ",".join(f"127.0.0.1:{m.port}" for m in etcd_cluster.members)
    assert len({p for m in etcd_cluster.members for p in m.ports.values()}) == 6
    leader = etcd_cluster.leader()
    # Every member agrees on the leader.
    leader_id = etcd_cluster.status(leader)["header"]["member_id"]
    assert all(etcd_cluster.status(m)["leader"] == leader_id for m in etcd_cluster.members)
    _put(leader, "k", "v")
    follower = etcd_cluster.followers()[0]
    assert _get(follower, "k") == "v"


@pytest.mark.timeout(120)
def test_leader_kill_elects_new_leader_and_restart_rejoins(
    server_factory: Callable[..., Server],
) -> None:
    cluster = server_factory("etcd", members=3)
    old = cluster.leader()
    _put(old, "before", "1")
    old.kill()
    wait_until(lambda: cluster.leader() is not old, 20, "a new etcd leader", interval=0.1)
    new = cluster.leader()
    assert new is not old and new.is_running()
    _put(new, "during", "2")
    old.restart()  # same data dir and ports
    assert old.is_running()
    wait_until(lambda: _get(old, "during") == "2", 20, "the restarted member to catch up")
    assert _get(old, "before") == "1"


@pytest.mark.timeout(120)
def test_paused_leader_is_replaced_then_resumes_as_follower(
    server_factory: Callable[..., Server],
) -> None:
    cluster = server_factory("etcd", members=3)
    assert isinstance(cluster, EtcdServer)
    old = cluster.leader()
    old.pause()
    try:
        assert old.is_paused() and old.is_running()
        with pytest.raises(OSError):
            cluster.status(old, timeout=0.5)
        wait_until(lambda: cluster.leader() is not old, 20, "a new leader while paused")
    finally:
        old.resume()
    wait_until(lambda: cluster.member_ready(old), 20, "the resumed member to be healthy")
    assert cluster.leader() is not old


@pytest.mark.timeout(60)
def test_stop_leaves_nothing_behind(
    assert_cleaned_up: Callable[[Server, list[int], Path], None],
) -> None:
    with EtcdServer(members=3) as cluster:
        pids = [m.pid for m in cluster.members if m.pid]
        base_dir = Path(str(cluster.base_dir))
        assert (base_dir / "etcd1" / "data").is_dir()
    assert_cleaned_up(cluster, pids, base_dir)


@pytest.mark.timeout(60)
def test_quota_bytes_sets_the_backend_quota(server_factory: Callable[..., Server]) -> None:
    """``quota_bytes`` reaches etcd: a 1 MiB quota refuses writes that etcd's default 2 GiB would take."""
    server = server_factory("etcd", quota_bytes=1 << 20)
    assert isinstance(server, EtcdServer)
    assert server.options()["quota_bytes"] == 1 << 20
    member = server.members[0]
    value = "x" * (64 << 10)
    refused = ""
    for i in range(64):  # 4 MiB in all, twice the room a 1 MiB quota leaves
        try:
            _put(member, f"big{i}", value)
        except urllib.error.HTTPError as exc:
            refused = exc.read().decode()
            break
    assert "database space exceeded" in refused
