"""The seam of the wide-column family: what a store supplies, in partitions, conditions and batches.

A wide-column store (Apache Cassandra, ScyllaDB, any store with the same
shape) offers four things the family is built on, and nothing else:

- **tables of partitions**: rows addressed by a partition key and ordered by
  clustering columns, with static (per-partition) columns and an optional
  secondary index (:class:`Table`);
- **range reads** of one partition: equality on the partition key and a
  clustering prefix, a range on the next clustering column, a limit
  (:class:`Select`), optionally *serial* (linearizable: it first completes any
  conditional write still in flight on that partition);
- **conditional writes and batches within one partition**: inserts, updates
  and deletes, each with an optional compare-and-set condition; a batch of
  them on one partition of one table applies atomically and in isolation, all
  or nothing (:class:`Insert`, :class:`Update`, :class:`Delete`);
- **TTLs** on written cells.

Statements are frozen descriptions, declared once by the family
(:mod:`nbdb.families.widecolumn.layout`); a store compiles each into its own
language once (Cassandra: a prepared CQL statement) and binds parameters in
the order documented on each class. A store implements
:class:`WideColumnStore` — four methods, a fifth to overlap reads — and translates every client error
into :mod:`nbdb.errors`; a conditional write whose outcome it cannot report
(a timeout, a lost connection after the request left) raises
:class:`OutcomeUnknown`, which the family settles.
"""

from __future__ import annotations

import enum
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nbdb import errors

__all__ = [
    "Applied",
    "Column",
    "ColumnType",
    "Compare",
    "Condition",
    "Delete",
    "EntryEquals",
    "ForwardingStore",
    "Insert",
    "OutcomeUnknown",
    "PendingApply",
    "PendingReads",
    "Row",
    "Select",
    "Table",
    "Update",
    "WideColumnStore",
    "Write",
]

Row = Any
"""One row a read returns: an object with one attribute per selected column (a named tuple)."""


class OutcomeUnknown(errors.CommitUnknownError):
    """A conditional write whose outcome the store could not report: it may or may not have applied.

    Raised by :meth:`WideColumnStore.apply` (a timed-out compare-and-set, a
    connection lost after the request left). The family settles it — it
    looks for the write's own mark, or makes the write impossible and then
    looks — and raises :class:`nbdb.errors.CommitUnknownError` to the caller
    only when it cannot. Being a ``CommitUnknownError`` itself, it means the
    right thing even if it ever escaped.
    """


class ColumnType(enum.Enum):
    """The column types the family stores."""

    TEXT = "text"
    INT8 = "int8"
    INT32 = "int32"
    INT64 = "int64"
    UUID = "uuid"
    BYTES = "bytes"
    BOOL = "bool"
    TIMESTAMP = "timestamp"
    """Milliseconds since the epoch."""
    TEXT_SET = "set<text>"
    FROZEN_TEXT_SET = "frozen<set<text>>"
    """A set written and read whole (it may be part of a value compared or indexed)."""
    TEXT_MAP = "map<text, text>"


@dataclass(frozen=True, slots=True)
class Column:
    """One column; ``static`` columns hold one value per partition."""

    name: str
    type: ColumnType
    static: bool = False


@dataclass(frozen=True, slots=True)
class Table:
    """A table: its partition key, clustering columns (in order), columns, and indexed columns."""

    name: str
    partition_key: tuple[str, ...]
    clustering: tuple[str, ...]
    columns: tuple[Column, ...]
    indexed: tuple[str, ...] = ()
    """Columns a :class:`Select` may restrict alone (a secondary index across partitions)."""

    def column(self, name: str) -> Column:
        """The column called ``name`` (KeyError if none)."""
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"{self.name} has no column {name!r}")


@dataclass(frozen=True, slots=True)
class Select:
    """A read of one partition (or of an indexed column).

    Parameters, in order: one per ``where`` column (equality: the partition
    key, then a prefix of the clustering columns — or one indexed column),
    then one per ``ranges`` entry, then the most rows to return if ``paged``.
    ``ranges`` are ``(column, op)`` with ``op`` one of ``<``, ``<=``, ``>``,
    ``>=`` on the clustering column after the prefix. Rows come in clustering
    order. Static columns may be selected with clustered ones: every row
    carries the partition's value.
    """

    table: str
    columns: tuple[str, ...]
    where: tuple[str, ...]
    ranges: tuple[tuple[str, str], ...] = ()
    limit: int | None = None
    paged: bool = False
    """The most rows to return is the last parameter (a page of a listing)."""
    hint: bool = False
    """Any one replica's answer will do: the value is a guess that a conditional write checks (the
    sequencer's head before its compare-and-set), never a fact a decision rests on. A quorum read waits
    for a replica that just died until the server gives up on it; one replica's read does not."""


@dataclass(frozen=True, slots=True)
class Compare:
    """Condition ``column <op> ?`` (one parameter); ``op`` is ``=``, ``<``, ``<=``, ``>``, ``>=``.

    A missing value (null) equals only a null parameter and is not ordered: ``<``
    and friends are false on it.
    """

    column: str
    op: str = "="


@dataclass(frozen=True, slots=True)
class EntryEquals:
    """Condition ``column[?] = ?`` on a map column (two parameters: the key, then the value)."""

    column: str


Condition = Compare | EntryEquals


@dataclass(frozen=True, slots=True)
class Insert:
    """Write a whole row. Parameters: one per column, then the TTL in seconds if ``ttl``.

    ``if_not_exists`` makes it conditional: it applies only if the row is absent.
    """

    table: str
    columns: tuple[str, ...]
    if_not_exists: bool = False
    ttl: bool = False


@dataclass(frozen=True, slots=True)
class Update:
    """Change some columns of a row (or the static columns of a partition).

    Parameters, in order: one per ``where`` column (the full key, or only the
    partition key to change static columns), one per ``set`` column, one per
    ``add`` column (entries added to a map or set), one per ``remove`` column
    (map keys or set elements removed), one (or two) per condition, then the
    TTL in seconds if ``ttl``. ``conditions`` or ``if_exists`` make it a
    compare-and-set.
    """

    table: str
    where: tuple[str, ...]
    set: tuple[str, ...] = ()
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    conditions: tuple[Condition, ...] = ()
    if_exists: bool = False
    ttl: bool = False


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete the rows a key prefix (and ranges) selects.

    Parameters: one per ``where`` column, one per ``ranges`` entry, then one
    (or two) per condition. ``conditions`` need the full key of one row.
    """

    table: str
    where: tuple[str, ...]
    ranges: tuple[tuple[str, str], ...] = ()
    conditions: tuple[Condition, ...] = ()


Write = Insert | Update | Delete


@dataclass(frozen=True, slots=True)
class Applied:
    """The outcome of :meth:`WideColumnStore.apply`.

    ``applied`` is False only when a condition did not hold; ``current`` then
    holds what the store reported of the rows it checked (column name ->
    value, possibly empty), which spares the family a read on retry.
    """

    applied: bool
    current: tuple[Mapping[str, Any], ...] = field(default=())

    def reports(self, column: str) -> bool:
        """Whether the store reported the current value of ``column`` (possibly null)."""
        return any(column in row for row in self.current)

    def value(self, column: str) -> Any:
        """The reported current value of ``column`` (the first row with a value), or None."""
        for row in self.current:
            found = row.get(column)
            if found is not None:
                return found
        return None


class PendingReads(ABC):
    """Reads sent together; :meth:`result` waits for all of them."""

    @abstractmethod
    def result(self) -> list[list[Row]]:
        """The rows of each read, in the order they were given (raises the first error)."""


class _Done(PendingReads):
    def __init__(self, rows: list[list[Row]]) -> None:
        self._rows = rows

    def result(self) -> list[list[Row]]:
        return self._rows


class PendingApply(ABC):
    """A write sent ahead; :meth:`result` waits for its outcome."""

    @abstractmethod
    def result(self) -> Applied:
        """What :meth:`WideColumnStore.apply` would have returned (or raises what it would have raised)."""

    def done(self) -> bool:
        """Whether the reply came (``result()`` then returns at once)."""
        return True


class _Applied(PendingApply):
    def __init__(self, outcome: Applied | None, error: BaseException | None = None) -> None:
        self._outcome = outcome
        self._error = error

    def result(self) -> Applied:
        if self._error is not None:
            raise self._error
        assert self._outcome is not None
        return self._outcome


class WideColumnStore(ABC):
    """What a wide-column backend supplies: one object per connection to the store.

    Every method raises :mod:`nbdb.errors` only (``BackendUnavailableError``
    for a request that certainly did not apply, :class:`OutcomeUnknown` for a
    conditional write that may have). Methods are called from many threads.
    """

    @abstractmethod
    def create_tables(self, tables: Sequence[Table]) -> None:
        """Create the tables and indexes that are missing, and add missing columns to existing tables.

        Raise :class:`nbdb.ValidationError` if an existing column has another type.
        """

    @abstractmethod
    def select(self, query: Select, params: Sequence[Any], *, serial: bool = False) -> list[Row]:
        """Every row ``query`` selects; ``serial``: linearizable (after any write in flight on the partition)."""

    def start_reads(self, reads: Sequence[tuple[Select, Sequence[Any]]], *, serial: bool = False) -> PendingReads:
        """Send several reads at once (stores override this to overlap their round trips)."""
        return _Done([self.select(query, params, serial=serial) for query, params in reads])

    def select_many(self, reads: Sequence[tuple[Select, Sequence[Any]]], *, serial: bool = False) -> list[list[Row]]:
        """The rows of several reads, sent at once."""
        if not reads:
            return []
        return self.start_reads(reads, serial=serial).result()

    @abstractmethod
    def apply(self, writes: Sequence[tuple[Write, Sequence[Any]]]) -> Applied:
        """Apply ``writes``, all on one partition of one table, atomically and in isolation.

        With conditions, the batch applies only if every condition holds.
        Raises :class:`OutcomeUnknown` when a conditional batch's outcome
        cannot be known.
        """

    def start_apply(self, writes: Sequence[tuple[Write, Sequence[Any]]]) -> PendingApply:
        """Send :meth:`apply`'s batch and return before its reply (stores override this to overlap it with
        other requests); the default applies it at once. What ``apply`` would raise is raised here or by
        ``result()``."""
        try:
            return _Applied(self.apply(writes))
        except errors.NbdbError as exc:
            return _Applied(None, exc)

    @abstractmethod
    def close(self) -> None:
        """Release the connection (the store may be shared: release this user's share)."""

    def id_order(self, value: uuid.UUID) -> Any:
        """A sort key that orders ids as this store orders a ``UUID`` clustering column.

        Paged listings need it to tell on which page an object that a later
        commit deleted belonged. The default is the order of the 128-bit
        value; a store that orders otherwise (Cassandra) overrides it.
        """
        return value.int


class ForwardingStore(WideColumnStore):
    """A store that hands every call to ``real``: subclass it to count, trace or inject faults at the
    family's seam (the conformance of a backend stays the real store's)."""

    def __init__(self, real: WideColumnStore) -> None:
        self.real = real

    def create_tables(self, tables: Sequence[Table]) -> None:
        self.real.create_tables(tables)

    def select(self, query: Select, params: Sequence[Any], *, serial: bool = False) -> list[Row]:
        return self.real.select(query, params, serial=serial)

    def start_reads(self, reads: Sequence[tuple[Select, Sequence[Any]]], *, serial: bool = False) -> PendingReads:
        return self.real.start_reads(reads, serial=serial)

    def apply(self, writes: Sequence[tuple[Write, Sequence[Any]]]) -> Applied:
        return self.real.apply(writes)

    def close(self) -> None:
        self.real.close()

    def id_order(self, value: uuid.UUID) -> Any:
        return self.real.id_order(value)
