"""Apache Cassandra 5.0+ (SAI): the wide-column family over ``cassandra-driver``.

The family (:mod:`nbdb.families.widecolumn`) holds every rule; this package
supplies its primitives in CQL:

===============  =================================================================
``url``          the ``cassandra://`` URL and its options (the grammar is there)
``sessions``     sessions shared, reference-counted, by the backends of a process
``dialect``      the family's statements and tables in CQL
``store``        the primitives over cassandra-driver (prepared statements, batches)
``exceptions``   driver exceptions -> nbdb errors; the driver's retry rules
===============  =================================================================

A ScyllaDB backend would reuse all of it, overriding the dialect's index
(Scylla has no SAI; a global secondary index on ``oid`` works) and
``protocol_version = 4``.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from nbdb.capabilities import Atomicity, Capabilities, Durability, Expiry
from nbdb.families.widecolumn import WideColumnBackend

try:
    from cassandra import ConsistencyLevel
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.connection import DefaultEndPoint
    from cassandra.policies import (
        ConstantSpeculativeExecutionPolicy,
        DCAwareRoundRobinPolicy,
        ExponentialReconnectionPolicy,
        RoundRobinPolicy,
        TokenAwarePolicy,
    )
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(f"the cassandra backend needs cassandra-driver: pip install 'nbdb[cassandra]' ({exc})") from exc

from nbdb.backends.cassandra.dialect import CqlDialect
from nbdb.backends.cassandra.exceptions import NbdbRetryPolicy, translate
from nbdb.backends.cassandra.sessions import SESSIONS, SessionLease, SharedSession
from nbdb.backends.cassandra.store import CqlStore, StoreSettings, row_factory
from nbdb.backends.cassandra.url import CassandraUrl, parse_url

__all__ = ["CassandraBackend", "CqlStore"]

log = logging.getLogger(__name__)

SPECULATE_AFTER = 0.25
"""Seconds after which a read (or another idempotent request) still unanswered is also sent to the next
coordinator; the first answer wins. A healthy cluster answers in milliseconds and never sees the second
request; one that has just lost a node answers it from another coordinator, whose choice of replicas
does not wait for the dead one, instead of after the request timeout. Conditional writes are never
sent twice (see exceptions.py)."""

SERIAL_PROFILE = "nbdb-serial"
"""The execution profile of serial reads: the default one without speculative execution. A serial read is a
Paxos round on its partition; sent to a second coordinator it competes with the rounds of the first (and
with every compare-and-set on the partition, which the token-aware policy sends to one coordinator). After
a node loss, until the failure detector convicts the dead node, a proposal that a competing round made the
live replicas refuse waits for the dead replica up to the server's write timeout: a speculative serial read
sent 250 ms into a slow one would start such waits instead of ending one."""


class CassandraBackend(WideColumnBackend):
    """Backend for ``cassandra://`` URLs (see :mod:`nbdb.backends.cassandra.url` for the grammar)."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        transactions=Atomicity.SINGLE_PARTITION,
        linearizable_reads=True,
        server_side_topic_filter=True,
        durability=Durability.CONFIGURABLE,
        history="`history` seconds of changes (default 86400; cassandra://...?history=S), "
        "or since the last compact_history()",
        cross_process=True,
        unique=True,
        fencing=True,
        expiry=Expiry.REAPER,
        cas_across_recreate=True,
        pages=True,
        notes="A topic is a partition: a transaction commits atomically (one conditional batch) when all its "
        "objects share one topic, and raises UnsupportedError otherwise; single-object writes always work. "
        "Every commit costs one lightweight transaction on the topic's partition, plus a share of one on the "
        "namespace's revision sequencer: the commits in flight in a process take their revisions together "
        "(group commit), so the commit rate grows with concurrent writers and topics. "
        "References within a topic are checked atomically; a reference to another topic is first reserved on "
        "the target (an LWT), and a delete of the target stops an in-flight reserving commit by sealing the "
        "source's partition, so no reference dangles (docs/backends/cassandra.md). "
        "A commit whose reply is lost is settled (seal, then look) and never reported as a conflict; "
        "CommitUnknownError when it cannot be. "
        "Durability: a write is acknowledged at the consistency level (LOCAL_QUORUM); it survives a crash "
        "of all replicas only with commitlog_sync: batch (the default periodic sync may lose ~10 s). "
        "Reads are linearizable at the quorum levels nbdb accepts (ONE is refused). "
        "Watchers and list() write a little (sealing a partition with an LWT), so they need write access. "
        "Unique values are claim rows taken with an LWT before the commit (one more LWT per new value); a fenced "
        "commit registers itself and checks the lock with a serial read, and a new holder seals out the commits "
        "its predecessors registered, so none lands after it took the lock. Expiry: deadlines in the object rows, "
        "reaped by connected Databases (wall clock). Pages: each page reads the change rows of its partition "
        "since the first page's revision (HistoryGoneError once they expired).",
    )

    protocol_version: ClassVar[int] = 5
    """CQL native protocol spoken (Cassandra 4.0+: v5; a ScyllaDB subclass would say 4)."""

    def __init__(self, lease: SessionLease, url: CassandraUrl) -> None:
        self._url = url
        settings = StoreSettings(
            keyspace=url.keyspace,
            consistency=getattr(ConsistencyLevel, url.consistency),
            serial_consistency=getattr(ConsistencyLevel, url.serial_consistency),
            # The local datacenter's one replica for a local quorum, any one replica otherwise.
            hint_consistency=ConsistencyLevel.LOCAL_ONE if url.consistency == "LOCAL_QUORUM" else ConsistencyLevel.ONE,
            request_timeout=url.request_timeout,
            serial_profile=SERIAL_PROFILE,
            replication=url.replication,
            retry=url.retry,
        )
        store = CqlStore(lease, settings, self.dialect(url.keyspace))
        try:
            super().__init__(store, url.family, lease.value.namespace((settings, url.family.namespace)))
        except BaseException:
            store.close()
            raise

    @property
    def request_timeout(self) -> float:
        return self._url.request_timeout

    @classmethod
    def dialect(cls, keyspace: str) -> CqlDialect:
        """The CQL dialect of this server (a ScyllaDB subclass returns its own)."""
        return CqlDialect(keyspace)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> CassandraBackend:
        """Open ``cassandra://[user:pass@]host[:port][,host...]/keyspace[?options]``."""
        parsed = parse_url(url, options)
        ssl_context = parsed.ssl_context()
        lease = SESSIONS.acquire(parsed.session_key, lambda: cls._connect(parsed, ssl_context))
        return cls(lease, parsed)

    @classmethod
    def _connect(cls, url: CassandraUrl, ssl_context: Any) -> SharedSession:
        child = DCAwareRoundRobinPolicy(local_dc=url.local_dc) if url.local_dc else RoundRobinPolicy()
        # Replicas in ring order, not shuffled: every client sends its transactions on a partition to the same
        # (first live) replica, where Paxos v2 runs them one at a time instead of letting them refuse each
        # other's proposals (docs/backends/cassandra.md, "Server settings for a node loss").
        balancing = TokenAwarePolicy(child, shuffle_replicas=False)
        profile = ExecutionProfile(
            load_balancing_policy=balancing,
            retry_policy=NbdbRetryPolicy(),
            speculative_execution_policy=ConstantSpeculativeExecutionPolicy(SPECULATE_AFTER, 2),
            request_timeout=url.request_timeout,
            row_factory=row_factory,
        )
        serial = ExecutionProfile(
            load_balancing_policy=balancing,
            retry_policy=NbdbRetryPolicy(),
            request_timeout=url.request_timeout,
            row_factory=row_factory,
        )
        cluster = Cluster(
            contact_points=[DefaultEndPoint(host, port) for host, port in url.endpoints],
            auth_provider=None if url.username is None else PlainTextAuthProvider(url.username, url.password or ""),
            ssl_context=ssl_context,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile, SERIAL_PROFILE: serial},
            reconnection_policy=ExponentialReconnectionPolicy(0.2, 2.0),
            connect_timeout=url.connect_timeout,
            control_connection_timeout=url.connect_timeout,
            protocol_version=cls.protocol_version,
            # A node that hangs (SIGSTOP, a stalled host, a link that goes silent) keeps its connections open:
            # the driver sends it requests until a heartbeat on a connection that received nothing for an
            # interval goes unanswered for the timeout. With 5 s and 5 s, compare-and-sets (never sent twice)
            # and serial reads (not speculated) waited 10-13 s for a paused node; with 1 s and 1 s, about
            # 2-3 s (docs/backends/cassandra.md, "A node that hangs"). Busy connections are never probed.
            idle_heartbeat_interval=url.heartbeat,
            idle_heartbeat_timeout=url.heartbeat,
        )
        try:
            return SharedSession(cluster, cluster.connect())
        except Exception as exc:
            cluster.shutdown()
            raise translate(exc) from exc

    def __repr__(self) -> str:
        return f"<CassandraBackend keyspace={self._url.keyspace!r} namespace={self._url.family.namespace!r}>"
