"""OVSDB transaction operations (RFC 7047 section 5.2) as the JSON the planners send."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

__all__ = ["assert_lock", "mutate_members", "wait", "where_uuid"]


def where_uuid(id: uuid.UUID) -> list[Any]:
    """The ``where`` of the one row ``id``."""
    return [["_uuid", "==", ["uuid", str(id)]]]


def wait(table: str, where: list[Any], rows: list[dict[str, Any]], columns: list[str] | None = None) -> dict[str, Any]:
    """A ``wait`` with timeout 0: the transaction fails at once unless the rows ``where`` selects are ``rows``.

    ``rows=[]``: no row matches; ``rows=[{}]`` (no ``columns``): exactly one does.
    """
    return {
        "op": "wait",
        "table": table,
        "timeout": 0,
        "where": where,
        "columns": columns or [],
        "until": "==",
        "rows": rows,
    }


def mutate_members(table: str, row: uuid.UUID, column: str, how: str, members: Sequence[uuid.UUID]) -> dict[str, Any]:
    """Insert (``how="insert"``) or delete some uuids of a row's set column, in one operation."""
    return {
        "op": "mutate",
        "table": table,
        "where": where_uuid(row),
        "mutations": [[column, how, ["set", [["uuid", str(member)] for member in members]]]],
    }


def assert_lock(lock: str) -> dict[str, Any]:
    """``assert``: the transaction fails with "not owner" unless this session holds OVSDB lock ``lock``."""
    return {"op": "assert", "lock": lock}
