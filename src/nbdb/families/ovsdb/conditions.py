"""What a replica monitors: tables, columns and server-side conditions (``monitor_cond``).

A :class:`Scope` is the part of the data one replica follows: every mapped
table of the namespace (the backend's main replica), or some tables in some
topics (a topic-filtered cache or watch). The server evaluates the conditions:
rows of other namespaces and topics never leave it.

Clauses of one table's monitor condition are OR-ed by ovsdb-server, and one
``includes`` of a map with two pairs requires both, so "namespace N and topic
T" is one clause per topic. A topic of None (objects without a topic) has no
clause that selects it on the server: a scope that wants it is filtered on the
client for that table.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from nbdb.families.ovsdb.mapping import EXTERNAL_IDS, Mapping_
from nbdb.families.ovsdb.rows import EXT_NAMESPACE, EXT_TOPIC

__all__ = ["Scope", "in_namespace", "monitor_requests"]


@dataclass(frozen=True, slots=True)
class Scope:
    """Some tables (None: every mapped one) in some topics (None: all) of one namespace."""

    namespace: str
    tables: frozenset[str] | None = None
    topics: frozenset[str | None] | None = None

    @property
    def filtered(self) -> bool:
        """Follows a subset of the namespace."""
        return self.tables is not None or self.topics is not None


def in_namespace(namespace: str) -> list[Any]:
    """The clause of a ``where`` that selects the rows of ``namespace`` (not the default one: its rows have
    no ``nbdb:ns``, which no clause selects) in a table with ``external_ids``."""
    return [EXTERNAL_IDS, "includes", ["map", [[EXT_NAMESPACE, namespace]]]]


def _clauses(namespace: str, topics: Collection[str | None] | None) -> list[Any] | None:
    """The condition of one table (None: every row)."""
    base = [[EXT_NAMESPACE, namespace]] if namespace else []
    if topics is None or None in topics:
        return [[EXTERNAL_IDS, "includes", ["map", base]]] if base else None
    return [[EXTERNAL_IDS, "includes", ["map", sorted([*base, [EXT_TOPIC, topic]])]] for topic in sorted(topics)]  # type: ignore[type-var]


def monitor_requests(mapping: Mapping_, db: str, scope: Scope) -> dict[str, list[dict[str, Any]]]:
    """The ``monitor_cond`` requests of ``scope`` in database ``db`` (table -> [request])."""
    columns = mapping.monitor_columns(db)
    wanted: dict[str, set[str]] = {}
    for tm in mapping.tables.values():
        if tm.db != db or (scope.tables is not None and tm.table not in scope.tables):
            continue
        wanted.setdefault(tm.db_table, set()).update(tm.monitored_columns())
    # A followed child's parent link comes from its parent's set column where the scope follows
    # the parent too, else from the hint nbdb writes in the child (rows.EXT_PARENT).
    if scope.tables is None:
        wanted = {table: set(cols) for table, cols in columns.items()}
    else:
        for (pdb, ptable), links in mapping.links.items():
            if pdb == db and ptable in wanted:
                wanted[ptable].update(link.column for link in links if link.child.table in scope.tables)
    condition = _clauses(scope.namespace, scope.topics)
    schema = mapping.schemas[db]
    requests: dict[str, list[dict[str, Any]]] = {}
    for table, cols in sorted(wanted.items()):
        request: dict[str, Any] = {"columns": sorted(cols)}
        # A table without external_ids cannot be filtered on the server: its rows are filtered here.
        if condition is not None and EXTERNAL_IDS in schema.tables[table].columns:
            request["where"] = condition
        requests[table] = [request]
    return requests
