"""Cassandra 5.0 from the Maven jars: one shared start; extra starts are opt-in."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nbdb.testing import CassandraServer, Server
from nbdb.testing.probes import CqlError, cql_query_ok, cql_rows_count


def _rows(member_host: str, port: int, query: str) -> int:
    return cql_rows_count(member_host, port, query, timeout=15)


@pytest.mark.timeout(240)
def test_ready_url_and_keyspace(cassandra_server: CassandraServer) -> None:
    server = cassandra_server
    assert server.url == f"cassandra://127.0.0.1:{server.port}/nbdb"
    assert server.version.startswith("5.0.")
    assert server.leader() is server.members[0]
    host, port = server.host, server.port
    assert _rows(host, port, "SELECT release_version FROM system.local") == 1
    assert _rows(host, port, "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = 'nbdb'") == 1
    cql_query_ok(host, port, "CREATE TABLE IF NOT EXISTS nbdb.harness (k text PRIMARY KEY, v text)", timeout=30)
    cql_query_ok(host, port, "INSERT INTO nbdb.harness (k, v) VALUES ('a', 'b')", timeout=15)
    assert _rows(host, port, "SELECT k FROM nbdb.harness WHERE k = 'a'") == 1


@pytest.mark.timeout(240)
def test_pause_resume_kill_restart(cassandra_server: CassandraServer) -> None:
    member = cassandra_server.members[0]
    member.pause()
    try:
        with pytest.raises(OSError):
            cql_query_ok(member.host, member.port, timeout=1.0)
    finally:
        member.resume()
    assert cql_query_ok(member.host, member.port, timeout=15)
    old_pid = member.pid
    member.kill()
    assert not member.is_running()
    with pytest.raises(OSError):
        cql_query_ok(member.host, member.port, timeout=1.0)
    began = time.monotonic()
    member.restart()
    assert member.pid != old_pid
    assert cql_query_ok(member.host, member.port)
    assert time.monotonic() - began < 120


@pytest.mark.cassandra_extra
@pytest.mark.timeout(300)
def test_durable_write_survives_kill(
    assert_cleaned_up: Callable[[Server, list[int], Path], None],
) -> None:
    server = CassandraServer(durable=True).start()
    try:
        member = server.members[0]
        host, port = member.host, member.port
        cql_query_ok(host, port, "CREATE TABLE nbdb.t (k text PRIMARY KEY)", timeout=30)
        cql_query_ok(host, port, "INSERT INTO nbdb.t (k) VALUES ('a')", timeout=15)
        member.kill()
        member.restart()
        assert _rows(host, port, "SELECT k FROM nbdb.t") == 1
    finally:
        pids = [m.pid for m in server.members if m.pid]
        base_dir = Path(str(server.base_dir))
        server.stop()
    assert_cleaned_up(server, pids, base_dir)


@pytest.mark.cassandra_extra
@pytest.mark.timeout(300)
def test_password_authenticator() -> None:
    with CassandraServer(auth=True) as server:
        assert server.url == f"cassandra://cassandra:cassandra@127.0.0.1:{server.port}/nbdb"
        assert "cassandra:cassandra@" not in repr(server)
        with pytest.raises(CqlError, match="requires authentication"):
            cql_query_ok(server.host, server.port)
        with pytest.raises(CqlError, match="incorrect"):
            cql_query_ok(server.host, server.port, username="cassandra", password="wrong")
        assert cql_query_ok(server.host, server.port, username="cassandra", password="cassandra")
