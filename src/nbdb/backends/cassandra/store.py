"""The wide-column primitives over cassandra-driver: prepared CQL, batches, reads sent together.

Every family statement is compiled by the dialect and prepared once per
store. A write batch is one UNLOGGED batch (one partition: atomic and
isolated in Cassandra); a conditional one is a lightweight transaction.
Reads sent together go out at once (``execute_async``) and are awaited in
order. Every driver exception leaves through :func:`exceptions.translate`.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cassandra.query import BatchStatement, BatchType, named_tuple_factory

from nbdb import errors
from nbdb.backends.cassandra.dialect import Compiled, CqlDialect, uuid_order
from nbdb.backends.cassandra.exceptions import ERRORS, translate
from nbdb.backends.cassandra.sessions import SessionLease
from nbdb.families.widecolumn import (
    Applied,
    OutcomeUnknown,
    PendingApply,
    PendingReads,
    Row,
    Select,
    Table,
    WideColumnStore,
    Write,
)
from nbdb.retry import RetryPolicy

__all__ = ["CqlStore", "StoreSettings", "row_factory"]

log = logging.getLogger(__name__)

_DDL_TIMEOUT = 60.0
_SLOW = 1.0
"""Requests slower than this many seconds are logged (at DEBUG) with the node that coordinated them (each
try of a read on its own): where a stall comes from."""


def _note(started: float, what: Any, hosts: Any = None, answered: float | None = None) -> None:
    """Log a slow request; ``answered``: when its reply came, if it was read later (reads sent ahead)."""
    now = time.monotonic()
    elapsed = (answered or now) - started
    if now - started > _SLOW and log.isEnabledFor(logging.DEBUG):
        log.debug(
            "slow request (%.2fs, coordinator %s%s): %s",
            elapsed,
            hosts,
            "" if answered is None else f", read {now - started:.2f}s after it was sent",
            getattr(what, "query_string", what),
        )


@functools.lru_cache(maxsize=256)
def _row_type(columns: tuple[str, ...]) -> Any:
    """The driver's row type for ``columns`` (named as its default factory names them), made once."""
    return type(named_tuple_factory(list(columns), [(None,) * len(columns)])[0])


def row_factory(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[Any]:
    """The driver's default row factory (named tuples), with the row type made once per set of columns.

    The default makes a new ``namedtuple`` class for every result, LWT replies
    included: ≈ 40 µs each on the bench machine, three or four per commit
    (profiled under single updates). nbdb's statements select a few dozen
    sets of columns, each made once here.
    """
    make = _row_type(tuple(columns))._make
    return [make(row) for row in rows]


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """How a store talks to its keyspace."""

    keyspace: str
    consistency: int
    """Consistency level of reads and writes (a quorum level)."""
    serial_consistency: int
    """Consistency level of the Paxos phase of lightweight transactions and serial reads."""
    hint_consistency: int | None = None
    """Consistency level of reads whose answer is only a guess (``Select.hint``; None: ``consistency``)."""
    request_timeout: float = 15.0
    serial_profile: str | None = None
    """The session's execution profile for serial reads (None: the default profile)."""
    replication: str | None = None
    """CQL replication map to create the keyspace with if it is missing (None: never create it)."""
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(attempts=1))
    """Retries of reads and plain writes that failed for a passing reason (never of a compare-and-set)."""


@dataclass(frozen=True, slots=True)
class _Prepared:
    compiled: Compiled
    statement: Any


class _Pending(PendingReads):
    def __init__(self, store: CqlStore, reads: list[tuple[Any, Any]], started: float) -> None:
        self._store = store
        self._reads = reads
        self._started = started
        self._answered: list[float | None] = [None] * len(reads)
        """When each reply came, noted only while slow requests are logged: the reads are taken later (a
        commit takes its revision meanwhile), and a slow log must tell the read's wait from that."""
        if log.isEnabledFor(logging.DEBUG):
            for i, (_, future) in enumerate(reads):
                future.add_callbacks(self._answer, self._answer, callback_args=(i,), errback_args=(i,))

    def _answer(self, _result: Any, i: int) -> None:
        self._answered[i] = time.monotonic()

    def result(self) -> list[list[Row]]:
        out = []
        for i, (bound, future) in enumerate(self._reads):
            try:
                rows = list(future.result())  # later pages are fetched on iteration
            except Exception as exc:
                # A read that failed for a passing reason is sent again, under the retry policy.
                if not ERRORS.classify(exc).retryable or self._store.settings.retry.attempts < 2:
                    raise translate(exc) from exc
                rows = self._store.execute_read(bound)
            finally:
                _note(self._started, future.query, future.coordinator_host, self._answered[i])
            out.append(rows)
        return out


class _Landed(PendingApply):
    def result(self) -> Applied:
        return Applied(True)


class _PendingWrite(PendingApply):
    """A conditional write sent with ``execute_async``; :meth:`result` waits for the store's word."""

    def __init__(self, statement: Any, future: Any, started: float, tracked: bool) -> None:
        self._statement = statement
        self._future = future
        self._started = started
        self._answered: threading.Event | None = None
        if tracked:  # not for a write awaited at once (apply): an Event and two callbacks less per request
            self._answered = threading.Event()
            future.add_callbacks(self._answer, self._answer)

    def _answer(self, _result: Any) -> None:
        assert self._answered is not None
        self._answered.set()

    def done(self) -> bool:
        return self._answered is None or self._answered.is_set()

    def result(self) -> Applied:
        try:
            try:
                result = self._future.result()
            finally:
                _note(self._started, self._statement, self._future.coordinator_host)
        except Exception as exc:
            raise translate(exc, conditional=True) from exc
        # An LWT's reply: the first column of its first row is "[applied]" (what ResultSet.was_applied
        # reads; it accepts only the driver's own row factories, not nbdb's).
        rows = result.current_rows
        if not rows:
            raise OutcomeUnknown("the reply to a conditional write did not say whether it applied")
        if rows[0][0]:
            return Applied(True)
        current = tuple({k: v for k, v in row._asdict().items() if k != "applied"} for row in rows)
        return Applied(False, current)


class CqlStore(WideColumnStore):
    """A :class:`WideColumnStore` on one keyspace of a (shared) cassandra-driver session."""

    def __init__(self, lease: SessionLease, settings: StoreSettings, dialect: CqlDialect | None = None) -> None:
        self._lease: SessionLease | None = lease
        self._session = lease.value.session
        self.settings = settings
        self.dialect = dialect or CqlDialect(settings.keyspace)
        self._prepared: dict[Select | Write, _Prepared] = {}
        self._lock = threading.Lock()

    @property
    def session(self) -> Any:
        """The driver session (shared with other stores of the process)."""
        return self._session

    # ---------------------------------------------------------------- schema

    def create_tables(self, tables: Sequence[Table]) -> None:
        metadata = self._session.cluster.metadata
        ks = self.settings.keyspace
        keyspace = metadata.keyspaces.get(ks)
        if keyspace is None:
            if self.settings.replication is None:
                raise errors.ValidationError(
                    f"keyspace {ks!r} does not exist; create it, or pass rf=N to let nbdb create it"
                )
            self._ddl(self.dialect.create_keyspace(self.settings.replication))
            keyspace = metadata.keyspaces.get(ks)
        for table in tables:
            existing = None if keyspace is None else keyspace.tables.get(table.name)
            if existing is None:
                self._ddl(self.dialect.create_table(table))
            else:
                for column in table.columns:
                    found = existing.columns.get(column.name)
                    if found is None:
                        # Schema evolution: a newer nbdb adds columns, never changes keys or types.
                        self._ddl(self.dialect.add_column(table, column))
                    elif _normal(found.cql_type) != _normal(self.dialect.type_of(column)):
                        raise errors.ValidationError(
                            f"{ks}.{table.name}.{column.name} is {found.cql_type}, not "
                            f"{self.dialect.type_of(column)}: the keyspace holds data of an incompatible nbdb version"
                        )
            for indexed in table.indexed:
                if existing is None or self.dialect.index_name(table, indexed) not in existing.indexes:
                    self._ddl(self.dialect.create_index(table, indexed))

    def _ddl(self, cql: str) -> None:
        try:
            self._session.execute(cql, timeout=max(_DDL_TIMEOUT, self.settings.request_timeout))
        except Exception as exc:
            text = str(exc)
            if "already exist" in text or "conflicts with an existing column" in text:
                return  # a concurrent client created it first
            raise translate(exc) from exc

    # ---------------------------------------------------------------- statements

    def _prepare(self, statement: Select | Write) -> _Prepared:
        found = self._prepared.get(statement)
        if found is not None:
            return found
        with self._lock:
            found = self._prepared.get(statement)
            if found is None:
                compiled = (
                    self.dialect.select(statement) if isinstance(statement, Select) else self.dialect.write(statement)
                )
                try:
                    prepared = self._session.prepare(compiled.cql)
                except Exception as exc:
                    raise translate(exc) from exc
                found = self._prepared[statement] = _Prepared(compiled, prepared)
            return found

    def _bind(self, statement: Select | Write, params: Sequence[Any], serial: bool = False) -> Any:
        prepared = self._prepare(statement)
        bound = prepared.statement.bind(prepared.compiled.arrange(tuple(params)))
        if serial:
            bound.consistency_level = self.settings.serial_consistency
        elif isinstance(statement, Select) and statement.hint and self.settings.hint_consistency is not None:
            bound.consistency_level = self.settings.hint_consistency
        else:
            bound.consistency_level = self.settings.consistency
        bound.serial_consistency_level = self.settings.serial_consistency
        # Reads and plain writes are safe to re-send; a compare-and-set is not (see exceptions.py).
        bound.is_idempotent = not prepared.compiled.conditional
        return bound

    def _live(self) -> Any:
        if self._lease is None:
            raise errors.BackendUnavailableError("the backend is closed")
        return self._session

    def _send(self, session: Any, statement: Any) -> Any:
        """``execute_async`` of ``statement``, serial reads under their own execution profile."""
        profile = self.settings.serial_profile
        if profile is not None and statement.consistency_level == self.settings.serial_consistency:
            return session.execute_async(statement, timeout=self.settings.request_timeout, execution_profile=profile)
        return session.execute_async(statement, timeout=self.settings.request_timeout)

    def execute_read(self, bound: Any) -> list[Row]:
        """Run one bound read (or other idempotent statement) under the retry policy; its rows."""
        session = self._live()

        def once() -> list[Row]:
            started = time.monotonic()
            future = self._send(session, bound)
            try:
                return list(future.result())
            finally:
                _note(started, bound, future.coordinator_host)

        return self.settings.retry.call(once, ERRORS, context="read")

    # ---------------------------------------------------------------- WideColumnStore

    def select(self, query: Select, params: Sequence[Any], *, serial: bool = False) -> list[Row]:
        return self.execute_read(self._bind(query, params, serial))

    def start_reads(self, reads: Sequence[tuple[Select, Sequence[Any]]], *, serial: bool = False) -> PendingReads:
        session = self._live()
        started = time.monotonic()
        sent = []
        try:
            for query, params in reads:
                bound = self._bind(query, params, serial)
                sent.append((bound, self._send(session, bound)))
        except Exception as exc:
            for _, future in sent:  # wait for what was sent before failing
                try:
                    future.result()
                except Exception:
                    pass
            raise translate(exc) from exc
        return _Pending(self, sent, started)

    def apply(self, writes: Sequence[tuple[Write, Sequence[Any]]]) -> Applied:
        return self._start(writes, tracked=False).result()

    def start_apply(self, writes: Sequence[tuple[Write, Sequence[Any]]]) -> PendingApply:
        return self._start(writes, tracked=True)

    def _start(self, writes: Sequence[tuple[Write, Sequence[Any]]], tracked: bool) -> PendingApply:
        """Send ``writes``; ``tracked``: the reply may be asked whether it came (``done()``) before it is awaited."""
        session = self._live()
        conditional = False
        if len(writes) == 1:
            write, params = writes[0]
            statement = self._bind(write, params)
            conditional = not statement.is_idempotent
        else:
            statement = BatchStatement(
                batch_type=BatchType.UNLOGGED,
                consistency_level=self.settings.consistency,
                serial_consistency_level=self.settings.serial_consistency,
            )
            for write, params in writes:
                prepared = self._prepare(write)
                conditional = conditional or prepared.compiled.conditional
                statement.add(prepared.statement, prepared.compiled.arrange(tuple(params)))
            statement.is_idempotent = not conditional
        if not conditional:  # plain writes are idempotent: retried like reads (at once, here)
            self.execute_read(statement)
            return _Landed()
        started = time.monotonic()
        try:
            future = session.execute_async(statement, timeout=self.settings.request_timeout)
        except Exception as exc:
            raise translate(exc, conditional=True) from exc
        return _PendingWrite(statement, future, started, tracked)

    def id_order(self, value: uuid.UUID) -> Any:
        return uuid_order(value)

    def close(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()


def _normal(cql_type: str) -> str:
    return cql_type.replace(" ", "").lower()
