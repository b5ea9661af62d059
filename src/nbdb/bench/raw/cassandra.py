"""Cassandra baseline with cassandra-driver: one table, prepared statements, lightweight transactions.

The natural versioned store on Cassandra: rows ``((ns, tbl), key) -> (value,
version)`` in a table ``nbdb_raw`` of the URL's keyspace, so one raw table of
one namespace is one partition (as a topic is one partition for nbdb).
A create is ``INSERT ... IF NOT EXISTS``, an update ``UPDATE ... IF version =
?``, a delete ``DELETE ... IF version = ?`` (one Paxos round each), a
multi-object create one conditional batch on the partition, a get a
``SELECT`` of the row and a list a ``SELECT`` of the partition, at nbdb's
default consistency (LOCAL_QUORUM, LOCAL_SERIAL for the Paxos phase). nbdb
pays a second lightweight transaction per commit (its revision sequencer) and
seals partitions before lists: that is what the ratio shows.

There is no raw change feed: Cassandra has none a client can subscribe to
(CDC is commit-log files on the servers), so the fan-out workload has no
baseline here rather than a made-up one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from nbdb.bench.raw.base import Follower, RawClient, RawConflict

__all__ = ["Client"]

_TABLE = "nbdb_raw"
_DDL = (
    "CREATE TABLE IF NOT EXISTS {ks}.nbdb_raw (ns text, tbl text, key text, value blob, version int, "
    "PRIMARY KEY ((ns, tbl), key))"
)
_INSERT = "INSERT INTO {ks}.nbdb_raw (ns, tbl, key, value, version) VALUES (?, ?, ?, ?, 1) IF NOT EXISTS"
_UPDATE = "UPDATE {ks}.nbdb_raw SET value = ?, version = ? WHERE ns = ? AND tbl = ? AND key = ? IF version = ?"
_DELETE = "DELETE FROM {ks}.nbdb_raw WHERE ns = ? AND tbl = ? AND key = ? IF version = ?"
_GET = "SELECT value, version FROM {ks}.nbdb_raw WHERE ns = ? AND tbl = ? AND key = ?"
_SCAN = "SELECT value FROM {ks}.nbdb_raw WHERE ns = ? AND tbl = ?"
_DROP = "DELETE FROM {ks}.nbdb_raw WHERE ns = ? AND tbl = ?"
_DEFAULT_PORT = 9042
_TIMEOUT = 15.0


class Client(RawClient):
    """A cassandra-driver Cluster and Session of its own, speaking protocol v5 as nbdb does."""

    def __init__(self, url: str, namespace: str) -> None:
        super().__init__(url, namespace)
        from cassandra import ConsistencyLevel
        from cassandra.auth import PlainTextAuthProvider
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.connection import DefaultEndPoint
        from cassandra.policies import RoundRobinPolicy, TokenAwarePolicy

        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        user, _, hosts = parts.netloc.rpartition("@")
        endpoints = []
        for item in filter(None, hosts.split(",")):
            if item.startswith("["):  # [v6]:port
                host, _, port = item[1:].partition("]")
                port = port.lstrip(":")
            else:
                host, _, port = item.partition(":")
            endpoints.append(DefaultEndPoint(host, int(port) if port else _DEFAULT_PORT))
        name, _, secret = user.partition(":")
        self._ks = parts.path.strip("/") or "nbdb"
        self._consistency = getattr(ConsistencyLevel, query.get("consistency", "LOCAL_QUORUM").upper())
        self._serial = getattr(ConsistencyLevel, query.get("serial_consistency", "LOCAL_SERIAL").upper())
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(RoundRobinPolicy()),
            request_timeout=_TIMEOUT,
            consistency_level=self._consistency,
            serial_consistency_level=self._serial,
        )
        self._cluster: Any = Cluster(
            contact_points=endpoints,
            auth_provider=PlainTextAuthProvider(unquote(name), unquote(secret)) if user else None,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            protocol_version=5,
        )
        try:
            self._session: Any = self._cluster.connect()
            keyspace = self._cluster.metadata.keyspaces.get(self._ks)
            if keyspace is None or _TABLE not in keyspace.tables:
                self._session.execute(_DDL.format(ks=self._ks), timeout=60.0)
            self._stmts: dict[str, Any] = {
                cql: self._session.prepare(cql.format(ks=self._ks))
                for cql in (_INSERT, _UPDATE, _DELETE, _GET, _SCAN, _DROP)
            }
        except BaseException:
            self._cluster.shutdown()
            raise
        self._tables: set[str] = set()

    def _split(self, key: str) -> tuple[str, str]:
        table, _, id = key.rpartition("/")
        table = table.rpartition("/")[2]
        self._tables.add(table)
        return table, id

    def _run(self, cql: str, *params: Any) -> Any:
        return self._session.execute(self._stmts[cql], params, timeout=_TIMEOUT)

    def create(self, key: str, value: bytes) -> int:
        table, id = self._split(key)
        if not self._run(_INSERT, self.namespace, table, id, value).was_applied:
            raise RawConflict(key)
        return 1

    def get(self, key: str) -> tuple[bytes, int] | None:
        table, id = self._split(key)
        row = self._run(_GET, self.namespace, table, id).one()
        return None if row is None else (row.value, row.version)

    def update(self, key: str, value: bytes, expect_version: int) -> int:
        table, id = self._split(key)
        if not self._run(_UPDATE, value, expect_version + 1, self.namespace, table, id, expect_version).was_applied:
            raise RawConflict(key)
        return expect_version + 1

    def delete(self, key: str, expect_version: int) -> None:
        table, id = self._split(key)
        if not self._run(_DELETE, self.namespace, table, id, expect_version).was_applied:
            raise RawConflict(key)

    def create_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        from cassandra.query import BatchStatement, BatchType

        # One conditional batch: atomic and isolated because all rows share the partition.
        batch = BatchStatement(
            batch_type=BatchType.UNLOGGED, consistency_level=self._consistency, serial_consistency_level=self._serial
        )
        for key, value in items:
            table, id = self._split(key)
            batch.add(self._stmts[_INSERT], (self.namespace, table, id, value))
        if not self._session.execute(batch, timeout=_TIMEOUT).was_applied:
            raise RawConflict(items[0][0])

    def scan(self, prefix: str) -> list[bytes]:
        table = prefix.rstrip("/").rpartition("/")[2]
        return [row.value for row in self._run(_SCAN, self.namespace, table)]

    def publish(self, key: str, value: bytes, expect_version: int) -> int:
        raise NotImplementedError(_NO_FEED)

    def follower(self) -> Follower:
        raise NotImplementedError(_NO_FEED)

    def cleanup(self) -> None:
        for table in self._tables:
            self._run(_DROP, self.namespace, table)

    def close(self) -> None:
        self._cluster.shutdown()


_NO_FEED = "Cassandra has no change feed a client can subscribe to (CDC is commit-log files on the servers)"
