"""The wide-column family: objects, revisions, references, locks and ids on a CQL store.

A wide-column store (Apache Cassandra, ScyllaDB) has no multi-partition
transaction. What it has is a compare-and-set on one partition (a lightweight
transaction, LWT: Paxos), and batches that apply atomically and in isolation
within one partition. This module builds the :class:`nbdb.spi.Backend` on
those two primitives, once, with CQL through ``cassandra-driver`` (which
ScyllaDB's driver is a drop-in for). A backend subclass supplies the session,
the error translation and the id index.

Tables (in the keyspace; every partition key starts with the namespace)::

    nbdb_data   ((ns, topic), kind, rev, tbl, id)
                kind 0, rev 0:  one object (data, version, refs, referrers, oid)
                kind 1, rev G:  the change commit G made to (tbl, id): new and old value
                static last_rev: the revision of the partition's latest commit
    nbdb_seq    ((ns, bucket), g)    the revision sequencer and its index of commits:
                static head: the last revision handed out in the bucket;
                row g: which topic (partition) and tables commit g was for, or void
    nbdb_topics (ns, topic)          the topics that ever held data (for unfiltered lists)
    nbdb_meta   ((ns, name))         counters of allocate_id, the history floor, the bucket hint
    nbdb_locks  ((ns, name))         lock leases (TTL'd rows)

A topic is a partition: listing one topic reads one partition, a transaction
whose objects share a topic commits as one conditional batch (atomic), and a
wider one raises UnsupportedError. Objects are found by id through an index on
``oid`` (Cassandra: SAI), cached since an object never changes topic.

Revisions. Every commit first takes the next number G of a dense sequence
(one LWT on the current ``nbdb_seq`` bucket, which also writes the index row
"G is for topic T"), then commits its conditional batch in the topic's
partition with the condition ``last_rev = L`` (the value it read) and sets
``last_rev = G`` and writes its change rows at G, atomically with the objects.
So within a partition, commits land in increasing G, and once ``last_rev >= G``
a commit at G that is not there never will be. A watcher reads the dense index
from its cursor and, for each G of its topics, the change rows of that
partition. An index entry whose change rows are missing is resolved, never
skipped: void (the writer failed and said so, or ``last_rev`` passed it) or
in flight; one in flight longer than the settle window is *sealed* (an LWT
raising the partition's ``last_rev`` past it, so that the stalled commit fails
and its writer retries with a new number). No wall clock takes part in any of
this: skewed clocks between writers cannot reorder or hide a change, and a
late commit cannot land behind a cursor.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
import uuid
from abc import abstractmethod
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from cassandra import ConsistencyLevel
from cassandra.query import BatchStatement, BatchType

from nbdb import errors
from nbdb.spi import (
    ANY_VERSION,
    Backend,
    CommitResult,
    Delete,
    LockHandle,
    Put,
    Record,
    RecordChange,
    RecordStream,
    RefKey,
    Snapshot,
    WriteOp,
)

__all__ = [
    "BUCKET_SIZE",
    "NO_TOPIC",
    "OutcomeUnknownError",
    "WideColumnBackend",
    "WideColumnOptions",
]

log = logging.getLogger(__name__)

NO_TOPIC = "~"
"""Partition-key value of objects without a topic (``~`` is not a legal topic character)."""

BUCKET_SIZE = 100_000
"""Revisions per ``nbdb_seq`` partition: bounds the partition size of the commit index."""

_OBJECT = 0
_CHANGE = 1
_COMMIT_ATTEMPTS = 25
_ALLOCATE_ATTEMPTS = 200
_INTENT_PAGE = 1000
_SERIAL_READ_ATTEMPTS = 5

Clock = Callable[[], float]
"""Wall-clock seconds (``time.time`` by default; injectable for tests)."""


class _Retry(Exception):
    """Internal: the plan repaired a stale reservation; plan again."""


class OutcomeUnknownError(Exception):
    """A lightweight transaction timed out: it may or may not have been applied.

    Backends raise it from :meth:`WideColumnBackend.translate` for a CAS write
    timeout; the family resolves the outcome (never surfaces it).
    """


@dataclass(frozen=True, slots=True)
class WideColumnOptions:
    """Settings of a wide-column backend (from the URL)."""

    keyspace: str
    namespace: str = ""
    consistency: int = ConsistencyLevel.LOCAL_QUORUM
    serial_consistency: int = ConsistencyLevel.LOCAL_SERIAL
    history: int = 86_400
    """Seconds of change history kept (TTL of the change rows and the commit index)."""
    settle: float = 2.0
    """Seconds a watcher waits for an in-flight commit before sealing its partition."""
    poll_interval: float = 0.05
    """Shortest pause between two reads of the commit index by an idle watcher."""
    request_timeout: float = 15.0
    replication: str | None = None
    """CQL replication map used to create the keyspace if it is missing (None: never create)."""
    clock: Clock = time.time


def _normal_type(cql_type: str) -> str:
    return cql_type.replace(" ", "").lower()


def _ref(table: str, id: uuid.UUID) -> str:
    return f"{table}/{id}"


def _parse_ref(text: str) -> RefKey:
    table, _, id = text.rpartition("/")
    return table, uuid.UUID(id)


def _part(topic: str | None) -> str:
    return NO_TOPIC if topic is None else topic


def _topic(part: str) -> str | None:
    return None if part == NO_TOPIC else part


@dataclass(slots=True)
class _Row:
    """The stored state of one object row as a commit plan sees it."""

    version: int
    refs: frozenset[RefKey]
    referrers: dict[str, str]
    """Source ref -> "" (written in the source's own commit) or "<reservation id>:<source partition>"."""
    data: bytes | None = None


@dataclass(slots=True)
class _Plan:
    """One attempt at a commit: statements of the partition's batch and the side effects."""

    part: str
    last_rev: int | None
    statements: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    changes: list[tuple[str, uuid.UUID, bytes | None, int, bytes | None, int]] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    reserve: list[tuple[str, RefKey, str]] = field(default_factory=list)
    """Cross-partition references to reserve before the commit: (target partition, target, source ref)."""
    release: list[tuple[str, RefKey, str]] = field(default_factory=list)
    """Cross-partition references to drop after the commit."""


class WideColumnBackend(Backend):
    """Base of CQL wide-column backends; subclasses supply the session and error translation."""

    def __init__(self, session: Any, options: WideColumnOptions) -> None:
        self._session = session
        self._o = options
        self._ns = options.namespace or NO_TOPIC
        self._ks = options.keyspace
        self._prepared: dict[str, Any] = {}
        self._prepared_lock = threading.Lock()
        self._topic_cache: dict[RefKey, str] = {}
        self._registered: set[str] = set()
        self._bucket = -1
        self._closed = False
        self.before_commit: Callable[[int], None] | None = None
        """Test hook: called with the revision between its allocation and the commit."""
        self.ensure_schema()

    # ---------------------------------------------------------------- store-specific hooks

    @abstractmethod
    def translate(self, exc: BaseException, cas: bool = False) -> Exception:
        """The nbdb error for a driver exception.

        ``cas``: the statement was a lightweight transaction; a timeout then
        means "maybe applied" and must become :class:`OutcomeUnknownError`.
        """

    def id_index_cql(self, table: str) -> str:
        """CQL creating the index on ``oid`` that get-by-id uses (Cassandra 5: SAI)."""
        return f"CREATE CUSTOM INDEX IF NOT EXISTS nbdb_data_oid ON {table} (oid) USING 'StorageAttachedIndex'"

    def close_session(self) -> None:
        """Release the session (subclasses share or shut down their cluster)."""

    # ---------------------------------------------------------------- schema

    def _tables(self) -> dict[str, tuple[str, dict[str, str]]]:
        """Table name -> (CQL body after the columns, columns)."""
        return {
            "nbdb_data": (
                "PRIMARY KEY ((ns, topic), kind, rev, tbl, id)",
                {
                    "ns": "text", "topic": "text", "kind": "tinyint", "rev": "bigint", "tbl": "text",
                    "id": "uuid", "oid": "uuid", "data": "blob", "version": "int", "old_data": "blob",
                    "old_version": "int", "refs": "set<text>", "referrers": "map<text, text>",
                    "last_rev": "bigint static",
                },
            ),
            "nbdb_seq": (
                "PRIMARY KEY ((ns, bucket), g)",
                {
                    "ns": "text", "bucket": "bigint", "g": "bigint", "topic": "text",
                    "tables": "frozen<set<text>>", "cid": "uuid", "at": "timestamp", "void": "boolean",
                    "head": "bigint static",
                },
            ),
            "nbdb_topics": ("PRIMARY KEY (ns, topic)", {"ns": "text", "topic": "text"}),
            "nbdb_meta": (
                "PRIMARY KEY ((ns, name))",
                {"ns": "text", "name": "text", "value": "bigint", "owner": "uuid"},
            ),
            "nbdb_locks": ("PRIMARY KEY ((ns, name))", {"ns": "text", "name": "text", "holder": "text"}),
        }  # fmt: skip

    def ensure_schema(self) -> None:
        """Create the keyspace (if asked to), the tables and the index, and add missing columns."""
        metadata = getattr(getattr(self._session, "cluster", None), "metadata", None)
        keyspace = None if metadata is None else metadata.keyspaces.get(self._ks)
        if keyspace is None:
            if self._o.replication is None:
                raise errors.ValidationError(
                    f"keyspace {self._ks!r} does not exist; create it, or pass rf=N to let nbdb create it"
                )
            self._ddl(f"CREATE KEYSPACE IF NOT EXISTS {self._ks} WITH replication = {self._o.replication}")
            keyspace = None if metadata is None else metadata.keyspaces.get(self._ks)
        for name, (key, columns) in self._tables().items():
            existing = None if keyspace is None else keyspace.tables.get(name)
            if existing is None:
                body = ", ".join(f"{c} {t}" for c, t in columns.items())
                self._ddl(f"CREATE TABLE IF NOT EXISTS {self._ks}.{name} ({body}, {key})")
                continue
            for column, cql_type in columns.items():
                found = existing.columns.get(column)
                if found is None:
                    # Schema evolution: a newer nbdb adds columns, never changes keys or types.
                    self._ddl(f"ALTER TABLE {self._ks}.{name} ADD {column} {cql_type}")
                elif _normal_type(found.cql_type) != _normal_type(cql_type.removesuffix(" static")):
                    raise errors.ValidationError(
                        f"{self._ks}.{name}.{column} is {found.cql_type}, not {cql_type}: the keyspace holds "
                        "data of an incompatible nbdb version"
                    )
        existing = None if keyspace is None else keyspace.tables.get("nbdb_data")
        if existing is None or "nbdb_data_oid" not in existing.indexes:
            self._ddl(self.id_index_cql(f"{self._ks}.nbdb_data"))

    def _ddl(self, cql: str) -> None:
        try:
            self._session.execute(cql, timeout=max(60.0, self._o.request_timeout))
        except Exception as exc:
            text = str(exc)
            if "already exist" in text or "conflicts with an existing column" in text:
                return  # a concurrent client created it first
            raise self.translate(exc) from exc

    # ---------------------------------------------------------------- execution

    def _prep(self, cql: str) -> Any:
        stmt = self._prepared.get(cql)
        if stmt is not None:
            return stmt
        with self._prepared_lock:
            stmt = self._prepared.get(cql)
            if stmt is None:
                try:
                    stmt = self._session.prepare(cql.replace("{ks}", self._ks))
                except Exception as exc:
                    raise self.translate(exc) from exc
                self._prepared[cql] = stmt
            return stmt

    def _bind(self, cql: str, params: Sequence[Any], serial_read: bool = False) -> Any:
        bound = self._prep(cql).bind(tuple(params))
        bound.consistency_level = self._o.serial_consistency if serial_read else self._o.consistency
        bound.serial_consistency_level = self._o.serial_consistency
        return bound

    def _execute(self, statement: Any, cas: bool = False) -> Any:
        if self._closed:
            raise errors.BackendUnavailableError("the backend is closed")
        try:
            return self._session.execute(statement, timeout=self._o.request_timeout)
        except Exception as exc:
            raise self.translate(exc, cas) from exc

    def _rows(self, cql: str, *params: Any, serial: bool = False) -> list[Any]:
        attempts = _SERIAL_READ_ATTEMPTS if serial else 1
        for attempt in range(attempts):
            try:
                # A serial read runs a Paxos round (it completes one in flight);
                # under contention it can fail like an LWT. It writes nothing of
                # its own, so it is safe to repeat.
                result = self._execute(self._bind(cql, params, serial), cas=serial)
                return list(result)
            except OutcomeUnknownError as exc:
                if attempt + 1 == attempts:
                    raise errors.BackendUnavailableError(f"serial read kept contending: {exc}") from exc
            except errors.NbdbError:
                if attempt + 1 == attempts:
                    raise
            except Exception as exc:  # a later page failed
                raise self.translate(exc) from exc
            time.sleep(random.uniform(0.005, 0.02 * (attempt + 1)))
        raise AssertionError("unreachable")

    def _one(self, cql: str, *params: Any, serial: bool = False) -> Any:
        rows = self._rows(cql, *params, serial=serial)
        return rows[0] if rows else None

    def _write(self, cql: str, *params: Any) -> None:
        self._execute(self._bind(cql, params))

    def _cas(self, cql: str, *params: Any) -> bool:
        """Run one conditional statement; True if applied (OutcomeUnknownError if unknown)."""
        return bool(self._execute(self._bind(cql, params), cas=True).was_applied)

    def _cas_batch(self, statements: Sequence[tuple[str, tuple[Any, ...]]]) -> bool:
        batch = BatchStatement(
            batch_type=BatchType.UNLOGGED,
            consistency_level=self._o.consistency,
            serial_consistency_level=self._o.serial_consistency,
        )
        for cql, params in statements:
            batch.add(self._prep(cql), params)
        return bool(self._execute(batch, cas=True).was_applied)

    # ---------------------------------------------------------------- statements

    _OBJ_KEY = "ns=? AND topic=? AND kind=0 AND rev=0 AND tbl=? AND id=?"
    Q_ROW = "SELECT data, version, refs, referrers FROM {ks}.nbdb_data WHERE " + _OBJ_KEY
    Q_RECORD = "SELECT data, version FROM {ks}.nbdb_data WHERE " + _OBJ_KEY
    Q_LOCATE = "SELECT ns, topic, tbl, data, version FROM {ks}.nbdb_data WHERE oid=?"
    Q_LAST = "SELECT last_rev FROM {ks}.nbdb_data WHERE ns=? AND topic=? LIMIT 1"
    Q_LIST = "SELECT id, data, version FROM {ks}.nbdb_data WHERE ns=? AND topic=? AND kind=0 AND rev=0 AND tbl=?"
    Q_CHANGES = (
        "SELECT rev, tbl, id, data, version, old_data, old_version FROM {ks}.nbdb_data "
        "WHERE ns=? AND topic=? AND kind=1 AND rev>=? AND rev<=?"
    )
    W_CREATE = (
        "INSERT INTO {ks}.nbdb_data (ns, topic, kind, rev, tbl, id, oid, data, version, refs, referrers) "
        "VALUES (?, ?, 0, 0, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
    )
    W_UPDATE = "UPDATE {ks}.nbdb_data SET data=?, version=?, refs=? WHERE " + _OBJ_KEY + " IF version=?"
    W_RAW = "UPDATE {ks}.nbdb_data SET data=?, version=?, oid=? WHERE " + _OBJ_KEY
    W_DELETE = "DELETE FROM {ks}.nbdb_data WHERE " + _OBJ_KEY + " IF version=? AND referrers=?"
    W_REF_ADD_CHECKED = "UPDATE {ks}.nbdb_data SET referrers = referrers + ? WHERE " + _OBJ_KEY + " IF version=?"
    W_REF_ADD = "UPDATE {ks}.nbdb_data SET referrers = referrers + ? WHERE " + _OBJ_KEY
    W_REF_DROP = "UPDATE {ks}.nbdb_data SET referrers = referrers - ? WHERE " + _OBJ_KEY
    W_REF_RESERVE = "UPDATE {ks}.nbdb_data SET referrers = referrers + ? WHERE " + _OBJ_KEY + " IF EXISTS"
    W_REF_RELEASE = "UPDATE {ks}.nbdb_data SET referrers = referrers - ? WHERE " + _OBJ_KEY + " IF referrers[?]=?"
    W_LAST = "UPDATE {ks}.nbdb_data SET last_rev=? WHERE ns=? AND topic=? IF last_rev=?"
    W_CHANGE = (
        "INSERT INTO {ks}.nbdb_data (ns, topic, kind, rev, tbl, id, data, version, old_data, old_version) "
        "VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?, ?) USING TTL ?"
    )
    Q_HEAD = "SELECT head FROM {ks}.nbdb_seq WHERE ns=? AND bucket=? LIMIT 1"
    Q_INTENTS = "SELECT g, topic, tables, void FROM {ks}.nbdb_seq WHERE ns=? AND bucket=? AND g>? LIMIT ?"
    Q_INTENT = "SELECT cid, void FROM {ks}.nbdb_seq WHERE ns=? AND bucket=? AND g=?"
    W_HEAD = "UPDATE {ks}.nbdb_seq SET head=? WHERE ns=? AND bucket=? IF head=?"
    W_INTENT = (
        "INSERT INTO {ks}.nbdb_seq (ns, bucket, g, topic, tables, cid, at) VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ?"
    )
    W_VOID = "UPDATE {ks}.nbdb_seq USING TTL ? SET void=true WHERE ns=? AND bucket=? AND g=?"
    W_DROP_INTENTS = "DELETE FROM {ks}.nbdb_seq WHERE ns=? AND bucket=? AND g<=?"
    W_TOPIC = "INSERT INTO {ks}.nbdb_topics (ns, topic) VALUES (?, ?)"
    Q_TOPICS = "SELECT topic FROM {ks}.nbdb_topics WHERE ns=?"
    Q_META = "SELECT value, owner FROM {ks}.nbdb_meta WHERE ns=? AND name=?"
    W_META = "UPDATE {ks}.nbdb_meta SET value=?, owner=? WHERE ns=? AND name=? IF value=?"
    W_LOCK = "INSERT INTO {ks}.nbdb_locks (ns, name, holder) VALUES (?, ?, ?) IF NOT EXISTS USING TTL ?"
    Q_LOCK = "SELECT holder FROM {ks}.nbdb_locks WHERE ns=? AND name=?"
    W_LOCK_REFRESH = "UPDATE {ks}.nbdb_locks USING TTL ? SET holder=? WHERE ns=? AND name=? IF holder=?"
    W_LOCK_DELETE = "DELETE FROM {ks}.nbdb_locks WHERE ns=? AND name=? IF holder=?"

    # ---------------------------------------------------------------- locating objects

    def _remember(self, key: RefKey, part: str) -> None:
        if len(self._topic_cache) > 200_000:
            self._topic_cache.clear()
        self._topic_cache[key] = part

    def _locate(self, table: str, id: uuid.UUID) -> tuple[str, Record] | None:
        """Find an object by id alone (through the oid index): its partition and record."""
        for row in self._rows(self.Q_LOCATE, id):
            if row.ns == self._ns and row.tbl == table and row.version is not None:
                self._remember((table, id), row.topic)
                return row.topic, Record(table, id, _topic(row.topic), row.version, row.data or b"")
        self._topic_cache.pop((table, id), None)
        return None

    def _read_row(self, part: str, table: str, id: uuid.UUID) -> _Row | None:
        row = self._one(self.Q_ROW, self._ns, part, table, id)
        if row is None or row.version is None:
            return None
        refs = frozenset(_parse_ref(r) for r in (row.refs or ()))
        return _Row(row.version, refs, dict(row.referrers or {}), row.data)

    # ---------------------------------------------------------------- Backend: reads

    def read(self, table: str, id: uuid.UUID) -> Record | None:
        part = self._topic_cache.get((table, id))
        if part is not None:
            row = self._one(self.Q_RECORD, self._ns, part, table, id)
            if row is not None and row.version is not None:
                return Record(table, id, _topic(part), row.version, row.data or b"")
        found = self._locate(table, id)
        return None if found is None else found[1]

    def referrers(self, table: str, id: uuid.UUID) -> list[RefKey]:
        part = self._topic_cache.get((table, id))
        row = None if part is None else self._read_row(part, table, id)
        if row is None:
            found = self._locate(table, id)
            if found is None:
                return []
            part = found[0]
            row = self._read_row(part, table, id)
            if row is None:
                return []
        out = []
        for text, reservation in sorted(row.referrers.items()):
            source = _parse_ref(text)
            if not reservation or self._holds_reference(source, (table, id)):
                out.append(source)
        return out

    def _holds_reference(self, source: RefKey, target: RefKey) -> bool:
        """Whether ``source`` exists and references ``target`` (verifies a reservation)."""
        part = self._topic_cache.get(source)
        row = None if part is None else self._read_row(part, *source)
        if row is None:
            found = self._locate(*source)
            row = None if found is None else self._read_row(found[0], *source)
        return row is not None and target in row.refs

    def scan(self, tables: Sequence[str], topics: Collection[str | None] | None) -> Snapshot:
        # The snapshot is made exact at R, the revision handed out last when
        # the scan starts: each partition is sealed at R (no commit at or
        # below R can land there afterwards), read, and commits above R that
        # the read may have caught are undone from the change rows.
        revision = self.current_revision()
        if topics is None:
            parts = sorted({row.topic for row in self._rows(self.Q_TOPICS, self._ns)})
        else:
            parts = sorted({_part(t) for t in topics})
        records: list[Record] = []
        for part in parts:
            self._seal(part, revision)
            state: dict[RefKey, tuple[int, bytes]] = {}
            for table in tables:
                for row in self._rows(self.Q_LIST, self._ns, part, table):
                    if row.version is not None:
                        state[(table, row.id)] = (row.version, row.data or b"")
            last = self._last_rev(part)
            if last is not None and last > revision:
                undo = self._rows(self.Q_CHANGES, self._ns, part, revision + 1, last)
                for change in sorted(undo, key=lambda c: c.rev, reverse=True):
                    key = (change.tbl, change.id)
                    if change.tbl not in tables:
                        continue
                    current = state.get(key, (0, b""))[0]
                    if current != (change.version or 0):
                        continue  # the read did not see this commit
                    if change.old_version:
                        state[key] = (change.old_version, change.old_data or b"")
                    else:
                        state.pop(key, None)
            for (table, id), (version, data) in state.items():
                self._remember((table, id), part)
                records.append(Record(table, id, _topic(part), version, data))
        return Snapshot(records, revision)

    # ---------------------------------------------------------------- revisions

    def _last_rev(self, part: str, serial: bool = False) -> int | None:
        row = self._one(self.Q_LAST, self._ns, part, serial=serial)
        return None if row is None else row.last_rev

    def _seal(self, part: str, revision: int) -> None:
        """Make sure no commit at or below ``revision`` can land in ``part`` from now on."""
        if revision <= 0:
            return
        for _ in range(_ALLOCATE_ATTEMPTS):
            last = self._last_rev(part, serial=True)
            if last is not None and last >= revision:
                return
            try:
                if self._cas(self.W_LAST, revision, self._ns, part, last):
                    return
            except OutcomeUnknownError:
                continue  # the next serial read settles it
            time.sleep(random.uniform(0.001, 0.01))
        raise errors.BackendUnavailableError(f"could not seal partition {part!r}: too much contention")

    def _bucket_hint(self) -> int:
        if self._bucket < 0:
            row = self._one(self.Q_META, self._ns, "bucket")
            self._bucket = 0 if row is None or row.value is None else int(row.value)
        return self._bucket

    def _advance_bucket(self, bucket: int) -> None:
        self._bucket = bucket + 1
        try:  # best effort: a stale hint only costs a few reads
            row = self._one(self.Q_META, self._ns, "bucket")
            self._cas(self.W_META, bucket + 1, None, self._ns, "bucket", None if row is None else row.value)
        except (errors.NbdbError, OutcomeUnknownError):
            pass

    def current_revision(self) -> int:
        bucket = self._bucket_hint()
        while True:
            row = self._one(self.Q_HEAD, self._ns, bucket)
            head = None if row is None else row.head
            if head is None:
                return bucket * BUCKET_SIZE
            if head >= (bucket + 1) * BUCKET_SIZE:
                self._advance_bucket(bucket)
                bucket += 1
                continue
            return int(head)

    def _allocate(self, part: str, tables: frozenset[str]) -> int:
        """Take the next revision for a commit to ``part`` (one LWT; writes its index row)."""
        cid = uuid.uuid4()
        bucket = self._bucket_hint()
        head: int | None = -1
        for attempt in range(_ALLOCATE_ATTEMPTS):
            if head == -1:
                row = self._one(self.Q_HEAD, self._ns, bucket, serial=attempt > 0)
                head = None if row is None else row.head
            if head is not None and head >= (bucket + 1) * BUCKET_SIZE:
                self._advance_bucket(bucket)
                bucket += 1
                head = -1
                continue
            g = bucket * BUCKET_SIZE + 1 if head is None else head + 1
            at = int(self._o.clock() * 1000)
            statements = [
                (self.W_HEAD, (g, self._ns, bucket, head)),
                (self.W_INTENT, (self._ns, bucket, g, part, set(tables), cid, at, self._o.history)),
            ]
            try:
                if self._cas_batch(statements):
                    return g
            except OutcomeUnknownError:
                row = self._one(self.Q_INTENT, self._ns, bucket, g, serial=True)
                if row is not None and row.cid == cid:
                    return g
            head = -1
            time.sleep(random.uniform(0, min(0.05, 0.002 * (attempt + 1))))
        raise errors.BackendUnavailableError("could not allocate a revision: too much contention")

    def _void(self, g: int) -> None:
        """Mark revision ``g`` as never committed (its writer gave up on it)."""
        try:
            self._write(self.W_VOID, self._o.history, self._ns, (g - 1) // BUCKET_SIZE, g)
        except errors.NbdbError as exc:  # watchers resolve it by sealing instead
            log.debug("could not mark revision %d void: %s", g, exc)

    def watch(self, tables: Sequence[str], topics: Collection[str | None] | None, since: int) -> RecordStream:
        parts = None if topics is None else frozenset(_part(t) for t in topics)
        return _ChangeStream(self, frozenset(tables), parts, since)

    def compact_history(self) -> None:
        revision = self.current_revision()
        for _ in range(_ALLOCATE_ATTEMPTS):
            row = self._one(self.Q_META, self._ns, "floor", serial=True)
            current = None if row is None else row.value
            if current is not None and current >= revision:
                break
            try:
                if self._cas(self.W_META, revision, None, self._ns, "floor", current):
                    break
            except OutcomeUnknownError:
                continue
        self._write(self.W_DROP_INTENTS, self._ns, (revision - 1) // BUCKET_SIZE if revision else 0, revision)

    def _floor(self) -> int:
        row = self._one(self.Q_META, self._ns, "floor")
        return 0 if row is None or row.value is None else int(row.value)

    # ---------------------------------------------------------------- Backend: commit

    def _register(self, part: str) -> None:
        if part not in self._registered:
            self._write(self.W_TOPIC, self._ns, part)
            self._registered.add(part)

    def commit(self, ops: Sequence[WriteOp]) -> CommitResult:
        if not ops:
            return CommitResult(self.current_revision(), [])
        seen: set[RefKey] = set()
        for op in ops:
            if (op.table, op.id) in seen:
                raise errors.ValidationError(f"{op.table} {op.id} appears twice in one transaction")
            seen.add((op.table, op.id))
        parts = {_part(op.topic) for op in ops}
        if len(parts) > 1:
            raise errors.UnsupportedError(
                f"{type(self).__name__} commits atomically within one topic (one partition) only; "
                f"this transaction spans topics {sorted(_topic(p) or '<none>' for p in parts)}"
            )
        part = parts.pop()
        self._register(part)
        tables = frozenset(op.table for op in ops)
        reserved: dict[tuple[str, RefKey, str], str] = {}
        done = False
        try:
            for attempt in range(_COMMIT_ATTEMPTS):
                try:
                    plan = self._plan(part, ops)
                    self._reserve(plan, reserved)
                except _Retry:
                    continue
                g = self._allocate(part, tables)
                if self.before_commit is not None:
                    self.before_commit(g)
                statements = list(plan.statements)
                statements.append((self.W_LAST, (g, self._ns, part, plan.last_rev)))
                for table, id, data, version, old_data, old_version in plan.changes:
                    statements.append(
                        (self.W_CHANGE, (self._ns, part, g, table, id, data, version, old_data, old_version,
                                         self._o.history + 3600))
                    )  # fmt: skip
                if self._commit_batch(part, g, statements):
                    done = True
                    for op in ops:
                        if isinstance(op, Delete):
                            self._topic_cache.pop((op.table, op.id), None)
                        else:
                            self._remember((op.table, op.id), part)
                    for key in plan.release:
                        self._release(*key)
                    kept = set(plan.reserve)
                    for key, reservation in reserved.items():
                        if key not in kept:  # reserved by an earlier attempt only
                            self._release(*key, reservation=reservation)
                    reserved.clear()
                    return CommitResult(g, plan.versions)
                self._void(g)
                time.sleep(random.uniform(0, min(0.1, 0.005 * (attempt + 1))))
            raise errors.ConflictError("the commit kept conflicting with concurrent writers; try again")
        finally:
            if not done:
                for key, reservation in reserved.items():
                    self._release(*key, reservation=reservation)

    def _reserve(self, plan: _Plan, reserved: dict[tuple[str, RefKey, str], str]) -> None:
        """Reserve the plan's cross-partition references on their targets (one LWT each).

        The entry names the source's partition, so that a delete of the target
        can stop the source's commit if it is still in flight (see _check_unreferenced).
        """
        for target_part, target, source in plan.reserve:
            reservation = f"{uuid.uuid4().hex}:{plan.part}"
            reserved[(target_part, target, source)] = reservation
            try:
                applied = self._cas(self.W_REF_RESERVE, {source: reservation}, self._ns, target_part, *target)
            except OutcomeUnknownError:
                if self._read_row(target_part, *target) is not None:
                    raise _Retry() from None  # plan again: a reservation is idempotent
                applied = False
            if not applied:
                raise errors.ReferenceError(
                    f"{source.replace('/', ' ')} references {target[0]} {target[1]}, which does not exist"
                )

    def _commit_batch(self, part: str, g: int, statements: list[tuple[str, tuple[Any, ...]]]) -> bool:
        try:
            return self._cas_batch(statements)
        except OutcomeUnknownError:
            # Settle the outcome: after sealing at g, a commit at g is either
            # in the partition or can never land there.
            self._seal(part, g)
            return bool(self._rows(self.Q_CHANGES, self._ns, part, g, g, serial=True))

    def _release(self, part: str, target: RefKey, source: str, reservation: str | None = None) -> None:
        """Drop the entry ``source`` from ``target``'s referrers (only ``reservation``, if given)."""
        try:
            if reservation is None:
                row = self._read_row(part, *target)
                if row is None or source not in row.referrers:
                    return
                reservation = row.referrers[source]
            self._cas(self.W_REF_RELEASE, {source}, self._ns, part, *target, source, reservation)
        except (errors.NbdbError, OutcomeUnknownError) as exc:
            # A leftover reservation is repaired by the next delete of the target.
            log.warning("could not drop the reference %s -> %s: %s", source, _ref(*target), exc)

    def _plan(self, part: str, ops: Sequence[WriteOp]) -> _Plan:
        last_rev = self._last_rev(part)
        plan = _Plan(part, last_rev)
        rows: dict[RefKey, _Row | None] = {}
        for op in ops:
            rows[(op.table, op.id)] = self._read_row(part, op.table, op.id)
        created = {(op.table, op.id) for op in ops if isinstance(op, Put) and op.expect_version == 0}
        deleted = {(op.table, op.id) for op in ops if isinstance(op, Delete)}
        new_refs: dict[RefKey, frozenset[RefKey]] = {}
        old_refs: dict[RefKey, frozenset[RefKey]] = {}
        expect: dict[RefKey, int] = {}
        for op in ops:
            me = (op.table, op.id)
            row = rows[me]
            if isinstance(op, Put) and op.expect_version == 0:
                if row is not None:
                    raise errors.ConflictError(f"{op.table} {op.id} already exists")
                elsewhere = self._locate(op.table, op.id)
                if elsewhere is not None and elsewhere[0] != part:
                    raise errors.ConflictError(f"{op.table} {op.id} already exists (in another topic)")
                old_refs[me] = frozenset()
                plan.versions.append(1)
                continue
            if row is None:
                elsewhere = self._locate(op.table, op.id)
                if elsewhere is not None and elsewhere[0] != part:
                    raise errors.ValidationError(
                        f"{op.table} {op.id} lives in topic {_topic(elsewhere[0])!r}; "
                        f"topic cannot change to {op.topic!r}"
                    )
                raise errors.NotFoundError(f"{op.table} {op.id} does not exist")
            if op.expect_version not in (ANY_VERSION, row.version):
                raise errors.ConflictError(
                    f"{op.table} {op.id} is at version {row.version}, not {op.expect_version}: re-read it and retry"
                )
            expect[me] = row.version
            old_refs[me] = row.refs
            plan.versions.append(0 if isinstance(op, Delete) else row.version + 1)
        for op in ops:
            me = (op.table, op.id)
            new_refs[me] = op.refs if isinstance(op, Put) else frozenset()

        # Reference changes, per target: additions and removals of referrer entries.
        adds: dict[RefKey, dict[str, str]] = {}
        drops: dict[RefKey, set[str]] = {}
        for me, refs in new_refs.items():
            old = old_refs[me]
            source = _ref(*me)
            for target in refs - old:
                if target in deleted:
                    raise errors.ReferenceError(
                        f"{me[0]} {me[1]} references {target[0]} {target[1]}, deleted in the same transaction"
                    )
                adds.setdefault(target, {})[source] = ""
            for target in old - refs:
                drops.setdefault(target, set()).add(source)

        target_rows: dict[RefKey, _Row | None] = {}
        for target in list(adds) + list(drops):
            if target in rows or target in target_rows:
                continue
            target_rows[target] = self._read_row(part, *target)
        for target, entries in adds.items():
            if target in created:
                continue  # its INSERT carries the entries
            if target in rows:
                plan.statements.append((self.W_REF_ADD, (entries, self._ns, part, *target)))
                continue
            row = target_rows[target]
            if row is not None:
                plan.statements.append((self.W_REF_ADD_CHECKED, (entries, self._ns, part, *target, row.version)))
                continue
            found = self._locate(*target)
            if found is None:
                source = next(iter(entries))
                raise errors.ReferenceError(
                    f"{source.replace('/', ' ')} references {target[0]} {target[1]}, which does not exist"
                )
            for source in entries:
                plan.reserve.append((found[0], target, source))
        for target, sources in drops.items():
            if target in deleted:
                continue
            if target in rows or target_rows.get(target) is not None:
                plan.statements.append((self.W_REF_DROP, (sources, self._ns, part, *target)))
                continue
            found = self._locate(*target)
            if found is not None:
                for source in sources:
                    plan.release.append((found[0], target, source))

        for op in ops:
            me = (op.table, op.id)
            row = rows[me]
            if isinstance(op, Put):
                ref_texts = {_ref(*t) for t in op.refs} or None
                if op.expect_version == 0:
                    initial = adds.get(me) or None
                    plan.statements.append(
                        (self.W_CREATE, (self._ns, part, op.table, op.id, op.id, op.data, 1, ref_texts, initial))
                    )
                    plan.changes.append((op.table, op.id, op.data, 1, None, 0))
                else:
                    assert row is not None
                    version = expect[me]
                    plan.statements.append(
                        (self.W_UPDATE, (op.data, version + 1, ref_texts, self._ns, part, op.table, op.id, version))
                    )
                    plan.changes.append((op.table, op.id, op.data, version + 1, row.data, version))
                continue
            assert row is not None
            remaining = {
                src: reservation
                for src, reservation in row.referrers.items()
                if _parse_ref(src) not in new_refs or me in new_refs[_parse_ref(src)]
            }
            self._check_unreferenced(part, me, remaining)
            plan.statements.append((self.W_DELETE, (self._ns, part, *me, expect[me], row.referrers or None)))
            plan.changes.append((op.table, op.id, None, 0, row.data, expect[me]))
        return plan

    def _check_unreferenced(self, part: str, target: RefKey, remaining: Mapping[str, str]) -> None:
        """Raise ReferenceError if a referrer of ``target`` is live; clear abandoned reservations.

        An entry written by its source's own commit (same partition) is live.
        A reservation (cross-partition) is live if its source holds the
        reference. If it does not, its writer either gave up (crashed) or is
        still committing: sealing the source's partition at a new revision
        makes such an in-flight commit fail (its writer re-plans and reserves
        again), so the reservation can then be dropped safely. No clock is
        involved.
        """
        live: list[str] = []
        for source, reservation in sorted(remaining.items()):
            key = _parse_ref(source)
            if not reservation or self._holds_reference(key, target):
                live.append(source)
                continue
            source_part = reservation.partition(":")[2]
            self._seal(source_part, self._allocate(source_part, frozenset()))
            if self._holds_reference(key, target):
                live.append(source)  # its commit landed before the seal
                continue
            try:
                self._cas(self.W_REF_RELEASE, {source}, self._ns, part, *target, source, reservation)
            except OutcomeUnknownError:
                pass
            raise _Retry()
        if live:
            names = ", ".join(s.replace("/", " ") for s in live[:5])
            raise errors.ReferenceError(
                f"{target[0]} {target[1]} is still referenced by {names}"
                + (f" and {len(live) - 5} more" if len(live) > 5 else "")
                + "; delete those first or pass cascade=True"
            )

    # ---------------------------------------------------------------- locks and ids

    @contextmanager
    def lock(self, name: str, ttl: float, timeout: float | None) -> Iterator[LockHandle]:
        if ttl <= 0:
            raise errors.ValidationError("lock ttl must be positive")
        handle = LockHandle(name, uuid.uuid4().hex)
        # Cassandra TTLs count whole seconds from the second the write lands: a
        # 1 s TTL may expire after a few ms. One extra second keeps the lease
        # at least ``ttl`` long between two renewals.
        seconds = math.ceil(ttl) + 1
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.01
        while not self._take_lock(name, handle.token, seconds):
            if deadline is not None and time.monotonic() >= deadline:
                raise errors.LockTimeoutError(f"lock {name!r} is held by another owner; gave up after {timeout}s")
            time.sleep(delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic())))
            delay = min(delay * 2, 0.2)
        stop = threading.Event()

        def keep_alive() -> None:
            while not stop.wait(ttl / 3):
                try:
                    alive = self._cas(self.W_LOCK_REFRESH, seconds, handle.token, self._ns, name, handle.token)
                except (errors.NbdbError, OutcomeUnknownError) as exc:
                    log.warning("lock %r: renewal failed: %s", name, exc)
                    alive = self._lock_token(name) == handle.token
                if not alive:
                    log.error("lock %r was lost (its lease expired or the server dropped it)", name)
                    handle.mark_lost()
                    return

        keeper = threading.Thread(target=keep_alive, name=f"nbdb-lock-{name}", daemon=True)
        keeper.start()
        try:
            yield handle
        finally:
            stop.set()
            keeper.join()
            if not handle.lost:
                try:
                    self._cas(self.W_LOCK_DELETE, self._ns, name, handle.token)
                except (errors.NbdbError, OutcomeUnknownError) as exc:
                    log.warning("lock %r: release failed (it expires with its TTL): %s", name, exc)

    def _lock_token(self, name: str) -> str | None:
        try:
            row = self._one(self.Q_LOCK, self._ns, name, serial=True)
        except errors.NbdbError:
            return None
        return None if row is None else str(row.holder)

    def _take_lock(self, name: str, token: str, seconds: int) -> bool:
        try:
            return self._cas(self.W_LOCK, self._ns, name, token, seconds)
        except OutcomeUnknownError:
            return self._lock_token(name) == token

    def allocate_id(self, name: str) -> int:
        key = f"n/{name}"
        owner = uuid.uuid4()
        for attempt in range(_ALLOCATE_ATTEMPTS):
            row = self._one(self.Q_META, self._ns, key, serial=attempt > 0)
            current = None if row is None else row.value
            nxt = (current or 0) + 1
            try:
                if self._cas(self.W_META, nxt, owner, self._ns, key, current):
                    return nxt
            except OutcomeUnknownError:
                row = self._one(self.Q_META, self._ns, key, serial=True)
                if row is not None and row.value == nxt and row.owner == owner:
                    return nxt
            time.sleep(random.uniform(0, min(0.05, 0.002 * (attempt + 1))))
        raise errors.BackendUnavailableError(f"could not allocate from counter {name!r}: too much contention")

    # ---------------------------------------------------------------- test hooks and lifecycle

    def write_raw(self, table: str, id: uuid.UUID, topic: str | None, data: bytes) -> None:
        part = _part(topic)
        self._register(part)
        for _ in range(_COMMIT_ATTEMPTS):
            last = self._last_rev(part)
            row = self._one(self.Q_RECORD, self._ns, part, table, id)
            old_version = 0 if row is None or row.version is None else row.version
            old = None if row is None else row.data
            g = self._allocate(part, frozenset([table]))
            statements: list[tuple[str, tuple[Any, ...]]] = [
                (self.W_RAW, (data, old_version + 1, id, self._ns, part, table, id)),
                (self.W_LAST, (g, self._ns, part, last)),
                (self.W_CHANGE, (self._ns, part, g, table, id, data, old_version + 1, old, old_version,
                                 self._o.history + 3600)),
            ]  # fmt: skip
            if self._commit_batch(part, g, statements):
                self._remember((table, id), part)
                return
            self._void(g)
        raise errors.ConflictError("raw write kept conflicting")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.close_session()


@dataclass(slots=True)
class _Intent:
    g: int
    part: str
    tables: frozenset[str]
    void: bool


class _ChangeStream(RecordStream):
    """Changes after a revision, read from the commit index and the partitions' change rows."""

    def __init__(
        self, backend: WideColumnBackend, tables: frozenset[str], parts: frozenset[str] | None, since: int
    ) -> None:
        self._b = backend
        self._tables = tables
        self._parts = parts
        self._cursor = since
        self._pending_since: dict[int, float] = {}
        self._closed = threading.Event()
        self._floor_checked = 0.0
        self._idle = backend._o.poll_interval

    @property
    def revision(self) -> int:
        return self._cursor

    def close(self) -> None:
        self._closed.set()

    def poll(self, timeout: float | None) -> list[RecordChange]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed.is_set():
            out = self._step()
            if out:
                self._idle = self._b._o.poll_interval
                return out
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return []
            pause = self._idle if remaining is None else min(self._idle, remaining)
            self._idle = min(self._idle * 1.5, 0.25)
            if self._closed.wait(pause):
                break
        return []

    def _intents(self) -> list[_Intent]:
        b = self._b
        cursor = self._cursor
        bucket = cursor // BUCKET_SIZE
        rows = b._rows(b.Q_INTENTS, b._ns, bucket, cursor, _INTENT_PAGE)
        if not rows:
            head = b._one(b.Q_HEAD, b._ns, bucket)
            if head is None or head.head is None or head.head <= cursor:
                return []
            # The head moved past the cursor: its index rows were written with
            # it (one batch), so they are readable now unless they expired.
            rows = b._rows(b.Q_INTENTS, b._ns, bucket, cursor, _INTENT_PAGE)
            if not rows:
                raise errors.HistoryGoneError(
                    f"revision {cursor} is older than the kept change history (the index rows expired)"
                )
        if rows[0].g != cursor + 1:
            raise errors.HistoryGoneError(
                f"revision {cursor} is older than the kept change history (it starts at {rows[0].g})"
            )
        out: list[_Intent] = []
        for row in rows:
            if out and row.g != out[-1].g + 1:
                break  # never skip past a hole
            out.append(_Intent(row.g, row.topic, frozenset(row.tables or ()), bool(row.void)))
        return out

    def _step(self) -> list[RecordChange]:
        b = self._b
        now = time.monotonic()
        if now - self._floor_checked > 1.0:
            self._floor_checked = now
            floor = b._floor()
            if self._cursor < floor:
                raise errors.HistoryGoneError(f"revision {self._cursor} was compacted (history starts at {floor})")
        intents = self._intents()
        if not intents:
            return []
        wanted = [
            i for i in intents
            if not i.void and (self._parts is None or i.part in self._parts) and i.tables & self._tables
        ]  # fmt: skip
        wanted_gs = {i.g for i in wanted}
        found: dict[int, list[Any]] = {}
        by_part: dict[str, list[int]] = {}
        for intent in wanted:
            by_part.setdefault(intent.part, []).append(intent.g)
        for part, gs in by_part.items():
            for row in b._rows(b.Q_CHANGES, b._ns, part, min(gs), max(gs)):
                found.setdefault(row.rev, []).append(row)
        out: list[RecordChange] = []
        for intent in intents:
            g = intent.g
            if g in wanted_gs:
                rows = found.get(g)
                if rows is None:
                    rows = self._resolve(intent)
                    if rows is None:
                        # In flight: deliver nothing past it, so that the
                        # resume point (the cursor) stays exact.
                        break
                out += self._changes(intent, rows)
            self._pending_since.pop(g, None)
            self._cursor = g
        return out

    def _changes(self, intent: _Intent, rows: list[Any]) -> list[RecordChange]:
        topic = _topic(intent.part)
        out = []
        for row in rows:
            if row.tbl not in self._tables:
                continue
            old = None if not row.old_version else Record(row.tbl, row.id, topic, row.old_version, row.old_data or b"")
            new = None if not row.version else Record(row.tbl, row.id, topic, row.version, row.data or b"")
            if old is not None or new is not None:
                out.append(RecordChange(row.tbl, row.id, topic, old, new, intent.g))
        return out

    def _resolve(self, intent: _Intent) -> list[Any] | None:
        """An index entry without change rows: its rows ([] if void), or None while in flight."""
        b = self._b
        g = intent.g
        last = b._last_rev(intent.part, serial=True)
        if last is None or last < g:
            first = self._pending_since.setdefault(g, time.monotonic())
            if time.monotonic() - first < b._o.settle:
                row = b._one(b.Q_INTENT, b._ns, (g - 1) // BUCKET_SIZE, g)
                if row is not None and row.void:
                    return []
                return None
            log.info("revision %d in %r is still not committed after %.1fs: sealing", g, intent.part, b._o.settle)
            b._seal(intent.part, g)
        # last_rev >= g: the commit at g is in the partition now, or never will be.
        return b._rows(b.Q_CHANGES, b._ns, intent.part, g, g)
