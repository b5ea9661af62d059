"""Real servers on demand for tests, benchmarks and demos.

One call starts a redis, etcd, ovsdb-server, Cassandra or Hazelcast server (or a cluster) on free
loopback ports, waits until it really serves, and gives its nbdb URL; the same object kills,
restarts, pauses and resumes members for fault tests, and :meth:`Server.stop` removes every
process and file::

    from nbdb.testing import start_server

    with start_server("etcd", members=3) as etcd:
        leader = etcd.leader()
        leader.kill()
        ...
        leader.restart()

Servers are installed on a fresh machine by ``bash .ci/install-servers.sh``. See
``docs/harness.md`` for every kind, option and the ``nbdb servers`` command.
"""

from __future__ import annotations

from nbdb.testing.base import Member, Server
from nbdb.testing.cassandra import CassandraServer
from nbdb.testing.errors import (
    HarnessError,
    ServerNotInstalledError,
    ServerStartError,
    ServerTimeoutError,
)
from nbdb.testing.etcd import EtcdServer
from nbdb.testing.hazelcast import HazelcastServer
from nbdb.testing.ovsdb import OvsdbServer, find_ovn_nb_schema, find_ovn_schema
from nbdb.testing.ports import free_port
from nbdb.testing.process import wait_until
from nbdb.testing.redis import RedisSentinel, RedisServer
from nbdb.testing.servers import (
    SERVER_KINDS,
    in_ci,
    is_installed,
    missing_reason,
    require_server,
    server_class,
    start_server,
)
from nbdb.testing.tls import TlsFiles

__all__ = [
    "SERVER_KINDS",
    "CassandraServer",
    "EtcdServer",
    "HarnessError",
    "HazelcastServer",
    "Member",
    "OvsdbServer",
    "RedisSentinel",
    "RedisServer",
    "Server",
    "ServerNotInstalledError",
    "ServerStartError",
    "ServerTimeoutError",
    "TlsFiles",
    "find_ovn_nb_schema",
    "find_ovn_schema",
    "free_port",
    "in_ci",
    "is_installed",
    "missing_reason",
    "require_server",
    "server_class",
    "start_server",
    "wait_until",
]
