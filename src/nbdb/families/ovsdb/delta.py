"""An update of a set or map column as ``mutate`` operations: only what changes is written.

Writing a changed set whole wrote every member in nbdb's spelling, the members another writer
(``ovn-nbctl``) stored as ``FD00::5`` or ``0A:00:…`` among them, which the caller did not touch:
``ovn-nbctl`` then showed them changed. And it sent the whole set, ten thousand addresses to
add one. An update now deletes the stored members (map: keys) whose value as read is gone and
inserts the new ones; the others stay as stored (:func:`.spellings.kept_members`).

A mutation applies to whatever the column holds when the transaction runs, so it is exact only
if the row is what the update was planned from: it is, every update waiting first, in the same
transaction, for every mapped column of the row as the replica shows it (the compare-and-swap
:func:`.planner.plan_commit` plans for each update, whether or not the caller gave a version; no
other operation of a transaction writes a row's mapped columns: an object appears once in it).

ovsdb-server checks a column's size bounds after each mutation: where no order of ``delete`` and
``insert`` stays within them whatever the column holds, the column is written whole (behind the
same ``wait``), with the kept members still as stored (:func:`.mutations.set_mutations`).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from nbdb.families.ovsdb.mapping import ColumnMap, TableMap
from nbdb.families.ovsdb.mutations import Whole, map_mutations, set_mutations
from nbdb.families.ovsdb.rows import column_value
from nbdb.families.ovsdb.spellings import kept_members

__all__ = ["column_delta"]

MUTATE_FACTOR = 1


def column_delta(
    tm: TableMap,
    cm: ColumnMap,
    stored: Any,
    cells: dict[str, Any],
    wire: dict[str, Any],
    values: dict[str, Any],
    row_id: int,
) -> list[list[Any]] | None:
    """The mutations that take ``stored`` (the row's cell of ``cm``, which differs from the update's) to the
    update's cell; None: the column is written whole (``wire``). A stored member the update keeps is taken
    back into ``cells``, ``wire`` and ``values`` as stored: the row as written is what the server holds."""
    new = cells[cm.column]
    if cm.json:
        return None
    if cm.type.is_map:
        if not isinstance(stored, dict) or not isinstance(new, dict):
            return None
        drop = {k for k, v in stored.items() if k not in new or new[k] != v}
        pairs = {k: v for k, v in new.items() if k not in stored or stored[k] != v}
        changed, size, make = len(drop) + len(pairs), len(new), partial(map_mutations, cm, pairs, drop)
    else:
        if not cm.type.is_set or not isinstance(stored, set) or not isinstance(new, set):
            return None
        gone, add = stored - new, new - stored
        spelled = kept_members(tm, cm, row_id, stored, gone, new) if gone and cm.type.key.kind == "string" else {}
        kept = new
        if spelled:  # some stored spellings stay: the row as written holds them
            kept = (new - spelled.keys()) | set(spelled.values())
            cells[cm.column] = kept
            wire[cm.column] = cm.to_wire(kept)
            value = values.get(cm.field)
            # In the order the row's document had in nbdb's text (sorted): it decodes as the update's did.
            values[cm.field] = [spelled.get(a, a) for a in value] if isinstance(value, list) else column_value(cm, kept)
            gone, add = gone - kept, add - spelled.keys()
        changed, size, make = len(add) + len(gone), len(kept), partial(set_mutations, cm, add, gone)
    if not _pays(changed, size):
        return None
    try:
        return make()
    except Whole:  # no order of mutations stays within the column's size bounds whatever it holds
        return None


def _pays(changed: int, size: int) -> bool:
    """Whether mutations of ``changed`` members (or keys) cost less than writing the ``size`` the column
    holds afterwards whole."""
    return changed * MUTATE_FACTOR < size
