"""An OVSDB database schema (RFC 7047 section 3.2) as typed data."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nbdb import errors
from nbdb.families.ovsdb.datum import ColumnType

__all__ = ["SERVER_DATABASE", "ColumnSchema", "DatabaseSchema", "TableSchema", "is_ovsdb_id", "is_schema_version"]

SERVER_DATABASE = "_Server"
"""The database every ovsdb-server serves about itself: the one database name beginning with ``_`` in use."""

_ID = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_VERSION = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")


def is_ovsdb_id(name: object) -> bool:
    """Whether ``name`` is an identifier OVSDB accepts for a database, table or column of a schema of ours.

    RFC 7047, 3.1: ``<id>``, ASCII letters, digits and ``_``; names beginning with ``_`` are reserved to the
    server (its ``_uuid`` column, its ``_Server`` database), and non-ASCII letters, which Python allows in
    names, are not allowed. A caller that reads the server's own ``_Server`` says so itself.
    """
    return isinstance(name, str) and _ID.fullmatch(name) is not None


def is_schema_version(version: object) -> bool:
    """Whether ``version`` is a schema version as OVSDB reads it (RFC 7047, 3.2: ``<x>.<y>.<z>``)."""
    return isinstance(version, str) and _VERSION.fullmatch(version) is not None


@dataclass(frozen=True, slots=True)
class ColumnSchema:
    """One column: its type and whether the server may change it on its own."""

    name: str
    type: ColumnType
    ephemeral: bool = False
    mutable: bool = True


@dataclass(frozen=True, slots=True)
class TableSchema:
    """One table: its columns, whether rows live without references, and its unique indexes."""

    name: str
    columns: Mapping[str, ColumnSchema]
    is_root: bool
    indexes: tuple[tuple[str, ...], ...] = ()
    max_rows: int | None = None


@dataclass(frozen=True, slots=True)
class DatabaseSchema:
    """A whole ``.ovsschema``: name, version and tables (the JSON kept in ``raw``)."""

    name: str
    version: str
    tables: Mapping[str, TableSchema]
    raw: Mapping[str, Any]

    @classmethod
    def parse(cls, doc: Any) -> DatabaseSchema:
        """From the schema's JSON (``get_schema``'s reply or an ``.ovsschema`` file)."""
        if not isinstance(doc, dict) or not isinstance(doc.get("tables"), dict) or "name" not in doc:
            raise errors.ValidationError("not an OVSDB schema: want an object with name and tables")
        tables: dict[str, TableSchema] = {}
        # A schema in which no table is a root has every table a root (RFC 7047's garbage collection came
        # later; ovsdb-server keeps that compatibility), and get_schema leaves "isRoot" out when all are.
        every_root = not any(isinstance(t, dict) and t.get("isRoot") for t in doc["tables"].values())
        for tname, tdoc in doc["tables"].items():
            if not isinstance(tdoc, dict) or not isinstance(tdoc.get("columns"), dict):
                raise errors.ValidationError(f"OVSDB schema table {tname!r} has no columns object")
            columns: dict[str, ColumnSchema] = {}
            for cname, cdoc in tdoc["columns"].items():
                try:
                    ctype = ColumnType.parse(cdoc["type"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise errors.ValidationError(f"OVSDB schema column {tname}.{cname}: bad type ({exc})") from None
                columns[cname] = ColumnSchema(
                    cname, ctype, bool(cdoc.get("ephemeral", False)), bool(cdoc.get("mutable", True))
                )
            indexes = tuple(tuple(index) for index in tdoc.get("indexes", []))
            max_rows = tdoc.get("maxRows")
            tables[tname] = TableSchema(
                tname,
                columns,
                every_root or bool(tdoc.get("isRoot", False)),
                indexes,
                None if max_rows is None else int(max_rows),
            )
        return cls(str(doc["name"]), str(doc.get("version", "")), tables, doc)

    def table(self, name: str) -> TableSchema | None:
        """The table called ``name``, or None."""
        return self.tables.get(name)

    def holder(self, table: str) -> tuple[tuple[str, str] | None, str]:
        """The (parent table, set column) whose row alone holds each row of non-root ``table``, or why none does.

        ovsdb-server deletes a non-root row when its last strong reference goes: a row held by the one
        set column of the schema that references the table strongly goes with the parent row holding
        it. None for a root table (reason ``""``), and where the row's holder is not one parent: several
        columns (``ACL``: ``Logical_Switch.acls`` and ``Port_Group.acls``), a column of the table itself,
        a map, a column of at most one reference (a second child would be refused there, kept
        elsewhere), or none. The OVSDB backend binds a model's ``nbdb_owned_by`` field to it.
        """
        tschema = self.tables.get(table)
        if tschema is None or tschema.is_root:
            return None, ""
        holders = [
            (parent.name, column)
            for parent in self.tables.values()
            for column in parent.columns.values()
            for base in (column.type.key, column.type.value)
            if base is not None and base.ref_table == table and base.ref_type == "strong"
        ]
        if not holders:
            return None, "no column of the schema references it strongly"
        if len(holders) > 1:
            named = ", ".join(f"{p}.{c.name}" for p, c in holders)
            return None, f"several columns reference it strongly ({named}): a row may be held by any of them"
        parent, column = holders[0]
        where = f"{parent}.{column.name}"
        if parent == table:
            return None, f"only its own column {where} references it"
        if column.type.value is not None:
            return None, f"the map {where} references it: a map is no set of children"
        if column.type.max == 1:
            return None, f"{where} holds at most one: two rows naming one owner would be refused there only"
        return (parent, column.name), ""

    def owner(self, table: str) -> tuple[tuple[str, str] | None, str]:
        """The holder (:meth:`holder`) that ``nbdb models generate`` makes the owner of ``table``'s rows
        (``nbdb_owned_by``, as ``HA_Chassis_Group.ha_chassis`` owns ``HA_Chassis``), or why none.

        The owner's column is then no field of the owner's model, so it is a holder only where that loses
        nothing: not a column with a size limit (``"min"`` of at least one, as ``Meter.bands``, or a
        finite ``"max"``: the owner's field keeps it on every backend, ovsdb-server alone would), nor an
        immutable column (``"mutable": false``: the server takes its rows only in the owner's insert, not
        in the ``mutate`` adding an owned child).
        """
        holder, why = self.holder(table)
        if holder is None:
            return None, why
        parent, name = holder
        column = self.tables[parent].columns[name]
        where = f"{parent}.{name}"
        if column.type.min > 0 or column.type.max is not None:
            size = f"at least {column.type.min}" if column.type.min > 0 else f"at most {column.type.max}"
            return None, f"{where} holds {size}: its field on {parent} keeps that size, on every backend"
        if not column.mutable:
            return None, f"{where} is immutable: ovsdb-server takes its rows only in the owner's insert"
        return holder, ""
