"""Unique fields on OVSDB: what a commit writes and checks to keep them, and who holds a value.

A :class:`~nbdb.families.ovsdb.mapping.UniqueRule` says how the served
schema keeps a group (see :mod:`.mapping`). For a commit that means:

* a *key column* (nbdb's model database) holds ``[namespace, value]``, or
  for a group left unset ``[namespace, null, row id]``, a text no other row
  can hold — so the server's index on it never counts two unset rows as one
  value, and two namespaces never share a value;
* a group the server does not index gets a ``wait`` for "no other row holds
  this value", placed after the commit's writes (OVSDB runs transactions one
  at a time, so the check and the write are one atomic step);
* when the server refuses a commit (its index, or such a ``wait``), a
  ``select`` of the rows that hold the value says who holds it.

Values are compared as :meth:`nbdb.models.Model.unique_text` spells them: the
canonical JSON of the field (or of the list of the group's fields).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nbdb import errors
from nbdb.families import rules
from nbdb.families.ovsdb.datum import atom_to_wire, cell_to_wire
from nbdb.families.ovsdb.mapping import EXTERNAL_IDS, TableMap, UniqueRule
from nbdb.families.ovsdb.rows import field_cell, row_namespace
from nbdb.spi import RefKey, UniqueKey

__all__ = [
    "UniqueCheck",
    "diagnose",
    "doc_value",
    "holder_select",
    "holder_where",
    "key_cells",
    "owner",
    "selected_namespace",
    "stored_value",
    "unset_value",
]


@dataclass(frozen=True, slots=True)
class UniqueCheck:
    """A unique value one object of a commit holds afterwards (what to look for when the commit is refused)."""

    key: RefKey
    rule: UniqueRule
    value: str
    """The canonical JSON of the value."""


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _key_text(namespace: str, value: str) -> str:
    return _canonical([namespace, json.loads(value)])


def _unset_text(namespace: str, id: uuid.UUID) -> str:
    return _canonical([namespace, None, str(id)])


def key_cells(tm: TableMap, namespace: str, id: uuid.UUID, keys: Iterable[UniqueKey]) -> dict[str, Any]:
    """The wire values of ``tm``'s key columns for object ``id`` holding ``keys`` (and nothing else)."""
    held = {key.field: key.value for key in keys}
    out: dict[str, Any] = {}
    for rule in tm.unique:
        if rule.key_column is not None:
            value = held.get(rule.field)
            text = _unset_text(namespace, id) if value is None else _key_text(namespace, value)
            out[rule.key_column] = atom_to_wire("string", text)
    return out


def doc_value(rule: UniqueRule, doc: Mapping[str, Any]) -> str | None:
    """The canonical value a model document holds in ``rule``'s group (None: the group is unset)."""
    values = [doc.get(name) for name in rule.fields]
    if all(v is None for v in values):
        return None
    return _canonical(values if len(values) > 1 else values[0])


def unset_value(rule: UniqueRule) -> str:
    """The canonical value of ``rule``'s group left unset (each field None), as :func:`doc_value` would spell it."""
    return _canonical([None] * len(rule.fields) if len(rule.fields) > 1 else None)


def stored_value(tm: TableMap, rule: UniqueRule, value: str) -> str:
    """``value`` (canonical JSON) as the group's own columns keep it and the holder reads back.

    A list field in a set column is unordered on OVSDB: the server keeps ``["y", "x"]`` as the set
    ``{"x", "y"}``, compares sets in its index and in a ``where``, and the row reads back sorted and
    without duplicates (:func:`.rows.column_value`). Anything else, and a key column's value (the model
    database keeps lists as JSON, in order), is kept as given.
    """
    if rule.key_column is not None:
        return value
    decoded = json.loads(value)
    values = decoded if len(rule.fields) > 1 else [decoded]
    kept: list[Any] = []
    for name, field_value in zip(rule.fields, values, strict=True):
        cm = tm.columns.get(name)
        if (
            cm is not None
            and isinstance(field_value, list)
            and cm.type.is_set
            and not cm.json
            and not cm.one_of_set
            and all(isinstance(atom, str | int | float) for atom in field_value)
        ):
            try:
                field_value = sorted(set(field_value))
            except TypeError:  # atoms of mixed kinds: the column refuses them anyway
                pass
        kept.append(field_value)
    return _canonical(kept if len(rule.fields) > 1 else kept[0])


def holder_where(tm: TableMap, rule: UniqueRule, namespace: str, value: str) -> list[Any]:
    """A ``where`` that selects the rows holding ``value`` in ``rule``'s group.

    UnsupportedError for a group no ``where`` can find (a field kept as a
    parent's set membership, or in ``external_ids``).
    """
    if rule.key_column is not None:
        return [[rule.key_column, "==", atom_to_wire("string", _key_text(namespace, value))]]
    if not rule.where_ok:
        raise errors.UnsupportedError(
            f"{tm.table}.{rule.field} is declared unique, but OVSDB cannot select rows by "
            f"{'these fields' if len(rule.fields) > 1 else 'this field'} (held outside the row's columns)"
        )
    decoded = json.loads(value)
    values = decoded if len(rule.fields) > 1 else [decoded]
    where: list[Any] = []
    for name, field_value in zip(rule.fields, values, strict=True):
        cm = tm.columns.get(name)
        if cm is None:
            continue  # a column the served schema lacks: every row holds the field's default
        try:
            where.append([cm.column, "==", cell_to_wire(cm.type, field_cell(cm, field_value))])
        except errors.ValidationError as exc:
            raise errors.ValidationError(f"{tm.table}.{name}: {exc}") from None
    return where


def holder_select(tm: TableMap, where: list[Any]) -> dict[str, Any]:
    """The ``select`` of the rows that match ``where``: their ids and namespaces."""
    columns = ["_uuid"] + ([EXTERNAL_IDS] if tm.external_ids is not None else [])
    return {"op": "select", "table": tm.db_table, "where": where, "columns": columns}


def _visible(tm: TableMap, rule: UniqueRule, row: Mapping[str, Any], namespace: str) -> bool:
    """Whether a holder row is an object of ``namespace``."""
    if rule.key_column is not None:
        return True  # a key column holds the namespace: only rows of this one match
    return selected_namespace(row) == namespace


def selected_namespace(row: Mapping[str, Any]) -> str:
    """The namespace of a row as a ``select`` of its ``external_ids`` returned it (see :func:`.rows.row_namespace`)."""
    pairs = row.get(EXTERNAL_IDS)
    ext = dict(pairs[1]) if isinstance(pairs, list) and len(pairs) == 2 and pairs[0] == "map" else {}
    return row_namespace(ext)


def owner(
    tm: TableMap, rule: UniqueRule, namespace: str, rows: Sequence[Mapping[str, Any]], exclude: Iterable[uuid.UUID]
) -> tuple[bool, uuid.UUID | None]:
    """Whether a row of ``rows`` (a holder select's result) holds the value, and its id if it is visible.

    Rows in ``exclude`` (written by the commit itself) do not count. A holder
    in another namespace is there (True) but not named (None): its id would
    lead nowhere in this one.
    """
    skip = set(exclude)
    for row in rows:
        try:
            id = uuid.UUID(str(row["_uuid"][1]))
        except (KeyError, TypeError, IndexError, ValueError):
            continue
        if id in skip:
            continue
        return True, (id if _visible(tm, rule, row, namespace) else None)
    return False, None


def diagnose(
    checks: Sequence[UniqueCheck],
    found: Sequence[Sequence[Mapping[str, Any]]],
    tables: Mapping[str, TableMap],
    namespace: str,
    written: Iterable[uuid.UUID],
) -> errors.UniqueViolationError | None:
    """The violation that select results (``found[i]`` for ``checks[i]``) show, or None (no holder any more)."""
    exclude = set(written)
    for check, rows in zip(checks, found, strict=True):
        tm = tables[check.key[0]]
        there, holder = owner(tm, check.rule, namespace, rows, exclude)
        if there:
            where = "" if holder is not None else "by a row of another namespace"
            return rules.unique_taken(tm.table, check.rule.field, check.value, holder, where)
    return None
