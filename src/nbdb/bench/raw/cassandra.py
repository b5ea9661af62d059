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

:class:`ContractClient` (``raw+seq`` in the report) is the second baseline: the
server work nbdb's contract needs, done by hand with the same client — every
write takes the next number of a dense revision sequence (one LWT on the
namespace's sequence row, with its index row) and lands in one conditional
batch with its change row and the partition's ordering condition
(``last_rev < g``), so that a watcher could resume from any revision. It does
nothing else: no reads, no references, no group commit of concurrent writers.

Concurrent writers of one partition would fail each other's ordering
condition (a revision taken first can land second), so it does what nbdb does:
the writers of one process take turns per partition (nbdb's committer holds a
lock per partition from taking the revision to the batch's reply), and a batch
that fails marks its revision void (one write, so a watcher need not wait for
it) and, if what failed is only the ordering (a writer elsewhere landed a later
revision first), is sent again under a new revision.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from nbdb.bench.raw.base import Follower, RawClient, RawConflict

__all__ = ["BASELINES", "Client", "ContractClient"]

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
            self._stmts: dict[str, Any] = {}
            self._prepare(_INSERT, _UPDATE, _DELETE, _GET, _SCAN, _DROP)
        except BaseException:
            self._cluster.shutdown()
            raise
        self._tables: set[str] = set()

    def _batch(self) -> Any:
        """An UNLOGGED batch at nbdb's consistency levels (one partition: atomic and isolated)."""
        from cassandra.query import BatchStatement, BatchType

        return BatchStatement(
            batch_type=BatchType.UNLOGGED, consistency_level=self._consistency, serial_consistency_level=self._serial
        )

    def _prepare(self, *statements: str) -> None:
        for cql in statements:
            self._stmts[cql] = self._session.prepare(cql.format(ks=self._ks))

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
        # One conditional batch: atomic and isolated because all rows share the partition.
        batch = self._batch()
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


_SEQ_DDL = (
    "CREATE TABLE IF NOT EXISTS {ks}.nbdb_raw_seq (ns text, g bigint, tbl text, key text, head bigint static, "
    "PRIMARY KEY (ns, g))"
)
_LOG_DDL = (
    "CREATE TABLE IF NOT EXISTS {ks}.nbdb_raw_log (ns text, tbl text, kind tinyint, rev bigint, key text, value blob, "
    "version int, last_rev bigint static, PRIMARY KEY ((ns, tbl), kind, rev, key))"
)
_HEAD = "SELECT head FROM {ks}.nbdb_raw_seq WHERE ns = ? LIMIT 1"
_TAKE = "UPDATE {ks}.nbdb_raw_seq SET head = ? WHERE ns = ? IF head = ?"
_INDEX = "INSERT INTO {ks}.nbdb_raw_seq (ns, g, tbl, key) VALUES (?, ?, ?, ?)"
_L_GET = "SELECT value, version FROM {ks}.nbdb_raw_log WHERE ns = ? AND tbl = ? AND kind = 0 AND rev = 0 AND key = ?"
_L_SCAN = "SELECT value FROM {ks}.nbdb_raw_log WHERE ns = ? AND tbl = ? AND kind = 0 AND rev = 0"
_L_INSERT = (
    "INSERT INTO {ks}.nbdb_raw_log (ns, tbl, kind, rev, key, value, version) VALUES (?, ?, 0, 0, ?, ?, 1) IF NOT EXISTS"
)
_L_UPDATE = (
    "UPDATE {ks}.nbdb_raw_log SET value = ?, version = ? WHERE ns = ? AND tbl = ? AND kind = 0 AND rev = 0 "
    "AND key = ? IF version = ?"
)
_L_DELETE = "DELETE FROM {ks}.nbdb_raw_log WHERE ns = ? AND tbl = ? AND kind = 0 AND rev = 0 AND key = ? IF version = ?"
_L_ORDER = "UPDATE {ks}.nbdb_raw_log SET last_rev = ? WHERE ns = ? AND tbl = ? IF last_rev < ?"
_L_FIRST = "UPDATE {ks}.nbdb_raw_log SET last_rev = 0 WHERE ns = ? AND tbl = ? IF last_rev = null"
_L_CHANGE = (
    "INSERT INTO {ks}.nbdb_raw_log (ns, tbl, kind, rev, key, value, version) VALUES (?, ?, 1, ?, ?, ?, ?) "
    "USING TTL 86400"
)
_L_DROP = "DELETE FROM {ks}.nbdb_raw_log WHERE ns = ? AND tbl = ?"
_VOID = "UPDATE {ks}.nbdb_raw_seq SET key = null WHERE ns = ? AND g = ?"
"""An index row that names no key: nothing was committed at that revision."""
_ORDER_TRIES = 10
"""Sends of one write whose batch failed only its ordering condition (nbdb's committer: its commit tries)."""

_turns: dict[tuple[str, str, str, str], threading.Lock] = {}
_turns_guard = threading.Lock()


def _turn(url: str, keyspace: str, namespace: str, table: str) -> threading.Lock:
    """The lock the writers of this process hold in turn on one partition."""
    with _turns_guard:
        return _turns.setdefault((url, keyspace, namespace, table), threading.Lock())


def _overtaken(result: Any, g: int) -> bool:
    """Whether a failed batch at ``g`` found the partition already past ``g`` (its ordering condition failed)."""
    return any((getattr(row, "last_rev", None) or 0) >= g for row in result.current_rows)


_Write = tuple[str, tuple[Any, ...]]
"""A prepared statement (its CQL) and its parameters."""


class ContractClient(Client):
    """The server work of nbdb's contract on Cassandra, by hand: a dense revision and a change row per write."""

    def __init__(self, url: str, namespace: str) -> None:
        super().__init__(url, namespace)
        try:
            keyspace = self._cluster.metadata.keyspaces.get(self._ks)
            for table, ddl in (("nbdb_raw_seq", _SEQ_DDL), ("nbdb_raw_log", _LOG_DDL)):
                if keyspace is None or table not in keyspace.tables:
                    self._session.execute(ddl.format(ks=self._ks), timeout=60.0)
            self._prepare(_HEAD, _TAKE, _INDEX, _L_GET, _L_SCAN, _L_INSERT, _L_UPDATE, _L_DELETE, _L_ORDER, _L_FIRST)
            self._prepare(_L_CHANGE, _L_DROP, _VOID)
        except BaseException:
            self._cluster.shutdown()
            raise
        self._head: int | None = None
        self._head_known = False
        self._lock = threading.Lock()
        self._ordered: set[str] = set()

    def _revision(self, table: str, key: str) -> int:
        """The next revision: one compare-and-set on the sequence head, with its index row."""
        while True:
            with self._lock:
                known, head = self._head_known, self._head
            if not known:
                row = self._run(_HEAD, self.namespace).one()
                head = None if row is None else row.head
            g = (head or 0) + 1
            batch = self._batch()
            batch.add(self._stmts[_TAKE], (g, self.namespace, head))
            batch.add(self._stmts[_INDEX], (self.namespace, g, table, key))
            result = self._session.execute(batch, timeout=_TIMEOUT)
            with self._lock:
                if result.was_applied:
                    self._head, self._head_known = g, True
                    return g
                self._head_known = False

    def _commit(self, key: str, table: str, index_key: str, writes: Callable[[int], list[_Write]]) -> None:
        """Take a revision and send ``writes(g)`` in one batch with the ordering condition (RawConflict if refused)."""
        with _turn(self.url, self._ks, self.namespace, table):
            if table not in self._ordered:  # once per partition: give it a last_rev to compare with
                self._run(_L_FIRST, self.namespace, table)
                self._ordered.add(table)
            for _ in range(_ORDER_TRIES):
                g = self._revision(table, index_key)
                batch = self._batch()
                for cql, params in [*writes(g), (_L_ORDER, (g, self.namespace, table, g))]:
                    batch.add(self._stmts[cql], params)
                result = self._session.execute(batch, timeout=_TIMEOUT)
                if result.was_applied:
                    return
                self._run(_VOID, self.namespace, g)
                if not _overtaken(result, g):
                    break  # an object's condition failed: a real conflict
        raise RawConflict(key)

    def create(self, key: str, value: bytes) -> int:
        table, id = self._split(key)

        def writes(g: int) -> list[_Write]:
            return [
                (_L_INSERT, (self.namespace, table, id, value)),
                (_L_CHANGE, (self.namespace, table, g, id, value, 1)),
            ]

        self._commit(key, table, id, writes)
        return 1

    def get(self, key: str) -> tuple[bytes, int] | None:
        table, id = self._split(key)
        row = self._run(_L_GET, self.namespace, table, id).one()
        return None if row is None else (row.value, row.version)

    def update(self, key: str, value: bytes, expect_version: int) -> int:
        table, id = self._split(key)
        version = expect_version + 1

        def writes(g: int) -> list[_Write]:
            return [
                (_L_UPDATE, (value, version, self.namespace, table, id, expect_version)),
                (_L_CHANGE, (self.namespace, table, g, id, value, version)),
            ]

        self._commit(key, table, id, writes)
        return version

    def delete(self, key: str, expect_version: int) -> None:
        table, id = self._split(key)

        def writes(g: int) -> list[_Write]:
            return [
                (_L_DELETE, (self.namespace, table, id, expect_version)),
                (_L_CHANGE, (self.namespace, table, g, id, None, 0)),
            ]

        self._commit(key, table, id, writes)

    def create_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        table, _ = self._split(items[0][0])
        rows = [(self._split(key)[1], value) for key, value in items]

        def writes(g: int) -> list[_Write]:
            out: list[_Write] = []
            for id, value in rows:
                out += [
                    (_L_INSERT, (self.namespace, table, id, value)),
                    (_L_CHANGE, (self.namespace, table, g, id, value, 1)),
                ]
            return out

        self._commit(items[0][0], table, "*", writes)

    def scan(self, prefix: str) -> list[bytes]:
        table = prefix.rstrip("/").rpartition("/")[2]
        return [row.value for row in self._run(_L_SCAN, self.namespace, table)]

    def cleanup(self) -> None:
        for table in self._tables:
            self._run(_L_DROP, self.namespace, table)


BASELINES: dict[str, type[RawClient]] = {"seq": ContractClient}
"""Baselines beside :class:`Client`, by name: ``raw+seq`` in the report."""

_NO_FEED = "Cassandra has no change feed a client can subscribe to (CDC is commit-log files on the servers)"
