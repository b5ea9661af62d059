"""Play ovsdb-server for a replica, without a server: the update a transaction's operations make.

Pure logic shared by the OVSDB family's unit tests and ``benchmarks/ovsdb_family_cg.py``
(which counts the client's instructions per commit with no socket): given the operations of a
plan (inserts, full-column updates, set mutations, deletes), :func:`server_update` builds the
``update`` notification ovsdb-server would send to a monitor of every column, in RFC 7047's
``modify`` form (a map's changed pairs, a set's toggled members).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from nbdb.families.ovsdb import Replica
from nbdb.families.ovsdb.datum import cell_from_wire, cell_to_wire

__all__ = ["modify_diff", "server_update"]


def modify_diff(replica: Replica, database: str, table: str, row_id: str, new: dict[str, Any]) -> dict[str, Any]:
    """The ``modify`` of a full-column update of ``row_id`` (maps and sets as the server toggles them)."""
    view = replica.views[database]
    rows: Any = view.rows[table]
    # Keyed by the id's int since the replica hashes ids in C; by the uuid.UUID in older checkouts.
    id = uuid.UUID(row_id)
    old = rows[id.int] if id.int in rows else rows[id]
    out = {}
    for column, datum in new.items():
        ctype = view.types[table][column]
        value = cell_from_wire(ctype, datum)
        before = old.get(column)
        if ctype.is_map:
            before = before or {}
            pairs = {k: v for k, v in before.items() if k not in value}
            pairs.update({k: v for k, v in value.items() if before.get(k) != v})
            out[column] = cell_to_wire(ctype, pairs)
        elif ctype.is_set:
            out[column] = cell_to_wire(ctype, (before or set()) ^ value)
        else:
            out[column] = datum
    return out


def server_update(replica: Replica, database: str, ops: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The update ovsdb-server sends for ``ops`` applied in one transaction (rows by table and id)."""
    updates: dict[str, dict[str, Any]] = {}
    for op in ops:
        table = updates.setdefault(op["table"], {})
        if op["op"] == "insert":
            table[op["uuid"]] = {"insert": op["row"]}
        elif op["op"] == "update":
            row_id = op["where"][0][2][1]
            table[row_id] = {"modify": modify_diff(replica, database, op["table"], row_id, op["row"])}
        elif op["op"] == "mutate":
            # The server sends a set's change as the members it toggled, merged per row.
            ((column, _how, members),) = op["mutations"]
            diff = table.setdefault(op["where"][0][2][1], {"modify": {}})["modify"]
            diff.setdefault(column, ["set", []])[1].extend(members[1])
        elif op["op"] == "delete":
            table[op["where"][0][2][1]] = {"delete": None}
    return updates
