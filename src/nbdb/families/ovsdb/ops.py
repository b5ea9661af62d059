"""OVSDB transaction operations (RFC 7047 section 5.2) as the JSON the planners send."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

__all__ = ["assert_lock", "mutate_members", "parse_uuid", "uuid_text", "wait", "where_uuid"]

_KNOWN_LIMIT = 16384
"""How many ids each of the two memos below holds before it starts over (a few MB at most)."""
_TEXTS: dict[int, str] = {}
"""id.int -> ``str(id)``: the text of an id this process wrote or read lately."""
_PARSED: dict[str, uuid.UUID] = {}
"""text -> ``uuid.UUID(text)``: the ids the server's updates name, parsed once."""


def uuid_text(id: uuid.UUID) -> str:
    """``str(id)``, remembered: a commit names its row's id in several operations, and the server's update
    names it again (which :func:`parse_uuid` then finds parsed). ``uuid.UUID.__str__`` is Python code
    (a format and five slices); a look-up by the id's int is one C hash of an int."""
    if id.__class__ is not uuid.UUID:
        return str(id)  # a subclass's text (and the object a parse would give) may be its own
    n = id.int
    text = _TEXTS.get(n)
    if text is None:
        text = str(id)
        if len(_TEXTS) >= _KNOWN_LIMIT:
            _TEXTS.clear()  # bounded: a workload moving over many ids starts over
        _TEXTS[n] = text
        if len(_PARSED) >= _KNOWN_LIMIT:
            _PARSED.clear()
        _PARSED[text] = id
    return text


def parse_uuid(text: Any) -> uuid.UUID | None:
    """``uuid.UUID(str(text))``, None if that is not a uuid; a text seen lately is found parsed already.

    ``uuid.UUID(text)`` is Python code (replaces, a hex parse, range checks), once per row an
    update names and per member of a parent's set it changes; the ids are immutable, so one
    parsed copy serves every reader.
    """
    if text.__class__ is str:
        found = _PARSED.get(text)
        if found is not None:
            return found
    try:
        id = uuid.UUID(str(text))
    except ValueError:
        return None
    if text.__class__ is str:
        if len(_PARSED) >= _KNOWN_LIMIT:
            _PARSED.clear()
        _PARSED[text] = id
    return id


def where_uuid(id: uuid.UUID) -> list[Any]:
    """The ``where`` of the one row ``id``."""
    return [["_uuid", "==", ["uuid", uuid_text(id)]]]


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
        "mutations": [[column, how, ["set", [["uuid", uuid_text(member)] for member in members]]]],
    }


def assert_lock(lock: str) -> dict[str, Any]:
    """``assert``: the transaction fails with "not owner" unless this session holds OVSDB lock ``lock``."""
    return {"op": "assert", "lock": lock}
