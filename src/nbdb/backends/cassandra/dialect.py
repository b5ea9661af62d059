"""CQL for the wide-column family's statements: the dialect of Cassandra (and of ScyllaDB).

Each family statement (:mod:`nbdb.families.widecolumn.primitives`) compiles
once into a CQL string plus the order in which the family's parameters bind
to its markers (CQL puts ``USING TTL ?`` first in an UPDATE and the key after
the values; the family lists the key first). Nothing here talks to a server.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from nbdb.families.widecolumn.primitives import (
    Column,
    ColumnType,
    Compare,
    Condition,
    Delete,
    EntryEquals,
    Insert,
    Select,
    Table,
    Update,
    Write,
)

__all__ = ["CQL_TYPES", "Compiled", "CqlDialect", "uuid_order"]

CQL_TYPES: dict[ColumnType, str] = {
    ColumnType.TEXT: "text",
    ColumnType.INT8: "tinyint",
    ColumnType.INT32: "int",
    ColumnType.INT64: "bigint",
    ColumnType.UUID: "uuid",
    ColumnType.BYTES: "blob",
    ColumnType.BOOL: "boolean",
    ColumnType.TIMESTAMP: "timestamp",
    ColumnType.TEXT_SET: "set<text>",
    ColumnType.FROZEN_TEXT_SET: "frozen<set<text>>",
    ColumnType.TEXT_MAP: "map<text, text>",
}
_OPS = frozenset({"=", "<", "<=", ">", ">="})


@dataclass(frozen=True, slots=True)
class Compiled:
    """A statement in CQL: the text, how to order its parameters, and how it may be retried."""

    cql: str
    order: tuple[int, ...] | None
    """CQL marker i binds the family's parameter ``order[i]`` (None: the same order)."""
    conditional: bool
    """A lightweight transaction (compare-and-set): never re-sent by the driver."""

    def arrange(self, params: tuple[object, ...] | list[object]) -> tuple[object, ...]:
        """The family's parameters in marker order."""
        if self.order is None:
            return tuple(params)
        return tuple(params[i] for i in self.order)


class CqlDialect:
    """Compiles the family's statements and schema into CQL for one keyspace."""

    table_options: str = "speculative_retry = 'MIN(99p,50ms)'"
    """Options of the tables nbdb creates. A quorum read that waits for a replica that died (and that the
    cluster has not noticed yet) asks another one after 50 ms instead of waiting for its timeout, so reads
    keep working through a node loss; the default (99p) can wait for seconds on a busy cluster."""

    def __init__(self, keyspace: str) -> None:
        self.keyspace = keyspace

    # ---------------------------------------------------------------- schema

    def type_of(self, column: Column) -> str:
        """The CQL type of a column (without ``static``)."""
        return CQL_TYPES[column.type]

    def create_keyspace(self, replication: str) -> str:
        """CREATE KEYSPACE with a replication map (CQL map literal)."""
        return f"CREATE KEYSPACE IF NOT EXISTS {self.keyspace} WITH replication = {replication}"

    def create_table(self, table: Table) -> str:
        """CREATE TABLE for ``table``."""
        columns = ", ".join(f"{c.name} {self.type_of(c)}{' static' if c.static else ''}" for c in table.columns)
        partition = ", ".join(table.partition_key)
        key = ", ".join([f"({partition})", *table.clustering])
        options = f" WITH {self.table_options}" if self.table_options else ""
        return f"CREATE TABLE IF NOT EXISTS {self.keyspace}.{table.name} ({columns}, PRIMARY KEY ({key})){options}"

    def add_column(self, table: Table, column: Column) -> str:
        """ALTER TABLE ... ADD for a column a newer layout added."""
        static = " static" if column.static else ""
        return f"ALTER TABLE {self.keyspace}.{table.name} ADD {column.name} {self.type_of(column)}{static}"

    def index_name(self, table: Table, column: str) -> str:
        """The name of the index on ``column``."""
        return f"{table.name}_{column}"

    def create_index(self, table: Table, column: str) -> str:
        """The index that lets a select restrict ``column`` alone (Cassandra 5: a storage-attached index).

        A ScyllaDB dialect returns a plain secondary index here.
        """
        return (
            f"CREATE CUSTOM INDEX IF NOT EXISTS {self.index_name(table, column)} "
            f"ON {self.keyspace}.{table.name} ({column}) USING 'StorageAttachedIndex'"
        )

    # ---------------------------------------------------------------- statements

    def select(self, query: Select) -> Compiled:
        """SELECT ... WHERE k = ? AND ... [AND c op ?] [LIMIT n | LIMIT ?]."""
        where = [f"{c} = ?" for c in query.where] + [f"{c} {_op(op)} ?" for c, op in query.ranges]
        cql = f"SELECT {', '.join(query.columns)} FROM {self._t(query.table)} WHERE {' AND '.join(where)}"
        if query.paged:
            cql += " LIMIT ?"
        elif query.limit is not None:
            cql += f" LIMIT {int(query.limit)}"
        return Compiled(cql, None, False)

    def write(self, write: Write) -> Compiled:
        """INSERT, UPDATE or DELETE, with its condition."""
        if isinstance(write, Insert):
            return self._insert(write)
        if isinstance(write, Update):
            return self._update(write)
        return self._delete(write)

    def _insert(self, w: Insert) -> Compiled:
        marks = ", ".join("?" for _ in w.columns)
        cql = f"INSERT INTO {self._t(w.table)} ({', '.join(w.columns)}) VALUES ({marks})"
        if w.if_not_exists:
            cql += " IF NOT EXISTS"
        if w.ttl:
            cql += " USING TTL ?"
        return Compiled(cql, None, w.if_not_exists)

    def _update(self, w: Update) -> Compiled:
        assignments = (
            [f"{c} = ?" for c in w.set] + [f"{c} = {c} + ?" for c in w.add] + [f"{c} = {c} - ?" for c in w.remove]
        )
        cql = f"UPDATE {self._t(w.table)}"
        if w.ttl:
            cql += " USING TTL ?"
        cql += f" SET {', '.join(assignments)} WHERE {' AND '.join(f'{c} = ?' for c in w.where)}"
        cql += self._conditions(w.conditions, w.if_exists)
        # Family order: where, set, add, remove, conditions, ttl. CQL: ttl, set, add, remove, where, conditions.
        n_where, n_assign = len(w.where), len(assignments)
        n_cond = sum(_arity(c) for c in w.conditions)
        order = list(range(n_where, n_where + n_assign)) + list(range(n_where))
        order += list(range(n_where + n_assign, n_where + n_assign + n_cond))
        if w.ttl:
            order.insert(0, n_where + n_assign + n_cond)
        return Compiled(cql, tuple(order), bool(w.conditions) or w.if_exists)

    def _delete(self, w: Delete) -> Compiled:
        where = [f"{c} = ?" for c in w.where] + [f"{c} {_op(op)} ?" for c, op in w.ranges]
        cql = f"DELETE FROM {self._t(w.table)} WHERE {' AND '.join(where)}" + self._conditions(w.conditions, False)
        return Compiled(cql, None, bool(w.conditions))

    def _conditions(self, conditions: tuple[Condition, ...], if_exists: bool) -> str:
        if if_exists:
            return " IF EXISTS"
        if not conditions:
            return ""
        parts = []
        for condition in conditions:
            if isinstance(condition, EntryEquals):
                parts.append(f"{condition.column}[?] = ?")
            else:
                parts.append(f"{condition.column} {_op(condition.op)} ?")
        return " IF " + " AND ".join(parts)

    def _t(self, table: str) -> str:
        return f"{self.keyspace}.{table}"


def uuid_order(value: uuid.UUID) -> tuple[int, int, int]:
    """The sort key of Cassandra's ``uuid`` type (``UUIDType``), which does not order by the 128-bit value.

    It compares the version first; time-based (version 1) ids by their
    timestamp, others by their high 64 bits, unsigned; then the low 64 bits,
    unsigned. Checked against a server by the Cassandra tests.
    """
    msb, lsb = value.int >> 64, value.int & 0xFFFF_FFFF_FFFF_FFFF
    version = (msb >> 12) & 0xF
    if version == 1:
        # time_low (32) | time_mid (16) | version (4) | time_hi (12)  ->  time_hi | time_mid | time_low
        msb = ((msb & 0xFFF) << 48) | (((msb >> 16) & 0xFFFF) << 32) | (msb >> 32)
    return version, msb, lsb


def _op(op: str) -> str:
    if op not in _OPS:
        raise ValueError(f"not a comparison the family uses: {op!r}")
    return op


def _arity(condition: Condition) -> int:
    return 2 if isinstance(condition, EntryEquals) else 1 if isinstance(condition, Compare) else 0
