"""Redis and Redis Sentinel started by the harness, checked with redis-py."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from nbdb.testing import RedisSentinel, RedisServer, Server, wait_until
from nbdb.testing.probes import RespError, resp_command
from nbdb.testing.redis import last_try_since_switch, replica_refusal, sentinel_record


def _client(server: RedisServer, **kwargs: object) -> redis.Redis:
    return redis.Redis.from_url(server.url, socket_timeout=2, **kwargs)  # type: ignore[arg-type]


@pytest.mark.timeout(60)
def test_redis_server_url_and_ping(redis_server: RedisServer) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = _client(redis_server)
    assert client.ping()
    client.set("k", "v")
    assert client.get("k") == b"v"
    info = redis_server.info()
    assert info["members"][0]["pid"] == redis_server.members[0].pid
    assert info["host"] == "127.0.0.1"


@pytest.mark.timeout(60)
def test_pause_and_resume(redis_server: RedisServer) -> None:
    member = redis_server.members[0]
    member.pause()
    try:
        assert member.is_paused()
        with pytest.raises(TimeoutError):
            resp_command(member.host, member.port, "PING", timeout=0.5)
    finally:
        member.resume()
    assert not member.is_paused()
    assert _client(redis_server).ping()


@pytest.mark.timeout(60)
def test_kill_restart_same_port_not_durable(server_factory: Callable[..., Server]) -> None:
    server = server_factory("redis")
    member = server.members[0]
    _client(server).set("k", "v")
    old_pid = member.pid
    member.kill()
    assert not member.is_running()
    with pytest.raises(redis.ConnectionError):
        _client(server).ping()
    member.restart()
    assert member.pid != old_pid and member.is_running()
    assert _client(server).get("k") is None  # no AOF, no RDB: a restart starts empty


@pytest.mark.timeout(60)
def test_appendonly_survives_kill(server_factory: Callable[..., Server]) -> None:
    server = server_factory("redis", appendonly=True)
    client = _client(server)
    client.set("k", "v")
    client.execute_command("BGREWRITEAOF")
    time.sleep(1.2)  # appendfsync everysec
    server.members[0].kill()
    server.members[0].restart()
    assert _client(server).get("k") == b"v"


@pytest.mark.timeout(60)
def test_password_acl_user_and_tls(server_factory: Callable[..., Server]) -> None:
    server = server_factory("redis", username="alice", password="p@ss:word", tls=True)
    assert isinstance(server, RedisServer)
    assert server.url.startswith("rediss://alice:p%40ss%3Aword@127.0.0.1:")
    assert "p@ss" not in repr(server) and "***" in repr(server)
    client = redis.Redis(
        host="127.0.0.1",
        port=server.port,
        username="alice",
        password="p@ss:word",
        ssl=True,
        ssl_ca_certs=str(server.tls_files.ca_cert),
        socket_timeout=2,  # type: ignore[union-attr]
    )
    assert client.ping()
    assert redis.Redis.from_url(server.url, socket_timeout=2).ping()
    # (The harness's probe client: redis-py retries a failed AUTH for seconds.)
    with pytest.raises(RespError, match="WRONGPASS"):
        resp_command(
            "127.0.0.1", server.port, "PING", username="alice", password="nope", ssl_context=server.ssl_context()
        )
    # Plain TCP is not served on a TLS-only server.
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
        sock.sendall(b"PING\r\n")
        try:
            reply = sock.recv(100)
        except ConnectionResetError:
            reply = b""
        assert b"PONG" not in reply


@pytest.mark.timeout(60)
def test_requirepass(server_factory: Callable[..., Server]) -> None:
    server = server_factory("redis", password="secret")
    with pytest.raises(RespError, match="NOAUTH"):
        resp_command("127.0.0.1", server.port, "PING")
    assert redis.Redis.from_url(server.url).ping()


@pytest.mark.timeout(60)
def test_sentinel_url_and_master(redis_sentinel: RedisSentinel) -> None:
    ports = ",".join(f"127.0.0.1:{m.port}" for m in redis_sentinel.sentinel_members)
    assert redis_sentinel.url == f"redis+sentinel://{ports}/nbdb"
    sentinel = redis.Sentinel([(m.host, m.port) for m in redis_sentinel.sentinel_members], socket_timeout=2)
    _host, port = sentinel.discover_master("nbdb")
    assert redis_sentinel.leader().port == port
    master = sentinel.master_for("nbdb", socket_timeout=2)
    master.set("k", "v")
    replica = redis.Redis(host="127.0.0.1", port=redis_sentinel.data_members[1].port)
    wait_until(lambda: replica.get("k") == b"v", 10, "replication to the replica")


@pytest.mark.timeout(120)
def test_sentinel_failover_after_master_kill(server_factory: Callable[..., Server]) -> None:
    server = server_factory("redis-sentinel")
    assert isinstance(server, RedisSentinel)
    old = server.leader()
    assert old.name == "master"
    old.kill()
    wait_until(lambda: server.leader() is not old, 30, "sentinel failover", interval=0.2)
    new = server.leader()
    assert new.name == "replica1"
    assert redis.Redis(host=new.host, port=new.port).info("replication")["role"] == "master"
    # The old master comes back as a replica of the new one.
    old.restart()
    wait_until(
        lambda: redis.Redis(host=old.host, port=old.port).info("replication")["role"] == "slave",
        30,
        "old master to be reconfigured as replica",
        interval=0.2,
    )
    assert server.leader() is new


_IN_SYNC = {"name": "127.0.0.1:7001", "flags": "slave", "master-link-status": "ok", "slave-priority": "100",
            "last-ok-ping-reply": "120", "info-refresh": "800"}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({}, None),
        ({"flags": "s_down,slave"}, "127.0.0.1:7001 flagged s_down,slave"),
        ({"flags": "slave,disconnected"}, "127.0.0.1:7001 flagged slave,disconnected"),
        ({"master-link-status": "err"}, "127.0.0.1:7001 link to its master err"),
        ({"slave-priority": "0"}, "127.0.0.1:7001 replica-priority 0 (as of its last INFO)"),
        ({"info-refresh": "9000"}, "127.0.0.1:7001 info-refresh 9000 ms"),
        ({"last-ok-ping-reply": "6000"}, "127.0.0.1:7001 last-ok-ping-reply 6000 ms"),
    ],
)
def test_replica_refusal_follows_sentinels_view(change: dict[str, str], why: str | None) -> None:
    """Why Sentinel would pass over a replica, read from its SENTINEL REPLICAS entry."""
    reply = [item for pair in {**_IN_SYNC, **change}.items() for item in pair]
    assert sentinel_record(reply) == {**_IN_SYNC, **change}
    assert replica_refusal(sentinel_record(reply)) == why


def test_a_failover_tried_since_the_last_switch_is_read_from_the_log() -> None:
    """A try or a vote after the last switch bars a failover of the new master (twice the failover-timeout)."""
    log = [
        "17614:X 06 Dec 2026 10:36:57.638 # +vote-for-leader 855047fbca97ce1cc8b91f3a833fcac9e4606120 2",
        "17614:X 06 Dec 2026 10:36:58.703 # +switch-master nbdb 127.0.0.1 27412 127.0.0.1 29898",
        "17614:X 06 Dec 2026 10:36:59.733 # +sdown master nbdb 127.0.0.1 29898",
        "17614:X 06 Dec 2026 10:36:59.733 # +try-failover master nbdb 127.0.0.1 29898",
        "17614:X 06 Dec 2026 10:36:59.871 # -failover-abort-no-good-slave master nbdb 127.0.0.1 29898",
        "17614:X 06 Dec 2026 10:36:59.871 # -sdown slave 127.0.0.1:27412 127.0.0.1 27412 @ nbdb 127.0.0.1 29898",
    ]
    tried = last_try_since_switch(log)
    assert tried is not None
    assert time.strftime("%d %b %Y %H:%M:%S", time.localtime(tried)) == "06 Dec 2026 10:36:59"
    assert round(tried % 1, 3) == 0.733
    assert last_try_since_switch(log[:2]) is None  # the switch cleared the vote before it
    assert last_try_since_switch(["a line cut short", *log[:1]]) is not None


@pytest.mark.timeout(120)
def test_sentinels_see_a_replica_made_promotable_again(server_factory: Callable[..., Server]) -> None:
    """``failover_blockers`` is Sentinel's view: a replica at priority 0 is refused until its next INFO."""
    server = server_factory("redis-sentinel")
    assert isinstance(server, RedisSentinel)
    master, replica = server.leader(), server.data_members[1]
    for sentinel in server.sentinel_members:
        debug = server.command(sentinel, "SENTINEL", "DEBUG")
        assert dict(zip(debug[::2], debug[1::2], strict=True))["INFO-PERIOD"] == "1000"
    wait_until(lambda: server.failover_blockers(master) == [], 30, "a whole cluster", interval=0.2)
    server.command(replica, "CONFIG", "SET", "replica-priority", 0)
    wait_until(lambda: len(server.failover_blockers(master)) == 3, 30, "every sentinel to refuse it", interval=0.2)
    assert all("replica-priority 0" in why for why in server.failover_blockers(master))
    server.command(replica, "CONFIG", "SET", "replica-priority", 100)
    wait_until(lambda: server.failover_blockers(master) == [], 30, "the sentinels to accept it again", interval=0.2)
    assert server.failover_blockers(replica) != []  # it is no master
    assert all(
        f"sentinel{n}: master nbdb at {master.address} master;" in server.describe_sentinels() for n in (1, 2, 3)
    )


@pytest.mark.timeout(60)
def test_stop_leaves_nothing_behind(
    assert_cleaned_up: Callable[[Server, list[int], Path], None],
) -> None:
    server = RedisSentinel().start()
    pids = [m.pid for m in server.members if m.pid]
    base_dir = Path(str(server.base_dir))
    assert len(pids) == 5 and base_dir.is_dir()
    server.stop()
    assert_cleaned_up(server, pids, base_dir)


@pytest.mark.timeout(60)
def test_tls_client_auth(server_factory: Callable[..., Server]) -> None:
    server = server_factory("redis", tls_client_auth=True)
    assert isinstance(server, RedisServer) and server.tls_files is not None
    files = server.tls_files
    assert "ssl_certfile=" in server.url
    with pytest.raises(OSError):
        resp_command("127.0.0.1", server.port, "PING", ssl_context=files.client_context())
    assert (
        resp_command("127.0.0.1", server.port, "PING", ssl_context=files.client_context(with_client_cert=True))
        == "PONG"
    )
