"""pytest fixtures giving real servers; import the ones a test module needs.

    from nbdb.testing.fixtures import etcd_cluster, redis_server  # noqa: F401

Session-scoped servers are shared by every test of a worker, whichever module imported the
fixture: pytest makes a fixture imported into several modules (or conftests) one fixture per
module, so each would start a server of its own and keep it until the session ends (eight
Cassandra JVMs in nbdb's own suite); one server per kind and options is started instead, and
stopped when the last of those fixtures is torn down. A test that kills, pauses or
reconfigures a member must put it back (``member.restart()``, ``member.resume()``) or use
the function-scoped ``server_factory`` to get a server of its own. A missing server fails
in CI (``CI=true``) and skips elsewhere, see :func:`nbdb.testing.require_server`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from nbdb.testing.base import Server
from nbdb.testing.cassandra import CassandraServer
from nbdb.testing.etcd import EtcdServer
from nbdb.testing.hazelcast import HazelcastServer
from nbdb.testing.ovsdb import OvsdbServer
from nbdb.testing.redis import RedisSentinel, RedisServer
from nbdb.testing.servers import require_server, start_server

__all__ = [
    "cassandra_server",
    "cassandra_url",
    "etcd_cluster",
    "etcd_server",
    "hazelcast_cluster",
    "hazelcast_server",
    "ovsdb_cluster",
    "ovsdb_server",
    "redis_sentinel",
    "redis_server",
    "server_factory",
    "shared_server",
    "shared_store",
]


_SHARED: dict[tuple[str, tuple[tuple[str, Any], ...]], tuple[Server, int]] = {}
"""The session servers running, by kind and options: the server and how many holders it has."""


@contextmanager
def shared_server(kind: str, **options: Any) -> Iterator[Server]:
    """A server of ``kind`` with ``options`` shared by every holder in the process; stopped when the last lets go.

    The session fixtures here and the conformance kit's ``--nbdb-url=spawn:KIND`` hold their servers
    through it, so a suite that runs both starts one server of each kind and options, not one per
    module that imports a fixture and one more for the kit.
    """
    require_server(kind)
    key = (kind, tuple(sorted(options.items())))
    if key in _SHARED:
        server, users = _SHARED[key]
    else:
        server, users = start_server(kind, **options), 0
    _SHARED[key] = (server, users + 1)
    try:
        yield server
    finally:
        server, users = _SHARED.pop(key)
        if users > 1:
            _SHARED[key] = (server, users - 1)
        else:
            server.stop()


@contextmanager
def shared_store(kind: str) -> Iterator[Any]:
    """A Database on a fresh store of ``kind``: ``memory://`` or ``sqlite://`` as they come, else a new namespace
    on the process's :func:`shared_server` of that kind."""
    import uuid

    import nbdb

    if kind in ("memory", "sqlite"):
        with nbdb.connect(f"{kind}://") as database:
            yield database
        return
    with shared_server(kind) as server, nbdb.connect(server.url, namespace=f"t{uuid.uuid4().hex[:8]}") as database:
        yield database


def _serve(kind: str, **options: Any) -> Iterator[Any]:
    with shared_server(kind, **options) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A standalone Redis (no password, no TLS, not durable)."""
    yield from _serve("redis")


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinel]:
    """Redis master + replica watched by 3 sentinels, service name ``nbdb``."""
    yield from _serve("redis-sentinel")


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    """A single-member etcd."""
    yield from _serve("etcd")


@pytest.fixture(scope="session")
def etcd_cluster() -> Iterator[EtcdServer]:
    """A 3-member etcd cluster."""
    yield from _serve("etcd", members=3)


@pytest.fixture(scope="session")
def ovsdb_server() -> Iterator[OvsdbServer]:
    """A standalone ovsdb-server with the OVN Northbound database."""
    yield from _serve("ovsdb")


@pytest.fixture(scope="session")
def ovsdb_cluster() -> Iterator[OvsdbServer]:
    """A 3-member ovsdb-server raft cluster with the OVN Northbound database."""
    yield from _serve("ovsdb", members=3)


@pytest.fixture(scope="session")
def cassandra_server() -> Iterator[CassandraServer]:
    """A one-node Cassandra 5.0 with the keyspace ``nbdb`` (slow: ~10 s to start)."""
    yield from _serve("cassandra")


@pytest.fixture
def cassandra_url(request: pytest.FixtureRequest) -> str:
    """The URL of the cluster named by ``$NBDB_CASSANDRA_URL``, else of :func:`cassandra_server` (started then)."""
    external = os.environ.get("NBDB_CASSANDRA_URL")
    if external:
        return external
    server: CassandraServer = request.getfixturevalue("cassandra_server")
    return server.url


@pytest.fixture(scope="session")
def hazelcast_server() -> Iterator[HazelcastServer]:
    """A one-member Hazelcast, cluster name ``nbdb``."""
    yield from _serve("hazelcast")


@pytest.fixture(scope="session")
def hazelcast_cluster() -> Iterator[HazelcastServer]:
    """Three Hazelcast members, one synchronous backup per partition."""
    yield from _serve("hazelcast", members=3)


@pytest.fixture
def server_factory() -> Iterator[Callable[..., Server]]:
    """Start private servers for one test: ``server_factory("etcd", members=3)``.

    Every server it started is stopped (processes and files) when the test ends.
    """
    started: list[Server] = []

    def factory(kind: str, **options: Any) -> Server:
        require_server(kind)
        server = start_server(kind, **options)
        started.append(server)
        return server

    yield factory
    for server in reversed(started):
        server.stop()
