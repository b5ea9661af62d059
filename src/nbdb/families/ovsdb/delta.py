"""An update of a big set column as ``mutate`` operations: only what changes is written.

Writing a changed set whole wrote every member in nbdb's spelling, the members another writer
(``ovn-nbctl``) stored as ``FD00::5`` or ``0A:00:…`` among them, which the caller did not touch:
``ovn-nbctl`` then showed them changed. And it sent the whole set, ten thousand addresses to
add one. An update now keeps each stored member whose value as read it keeps, as stored
(:func:`.spellings.kept_members`), and writes a set of at least :data:`MUTATE_FROM` members as
a ``mutate``: ``delete`` of the stored members whose value is gone, ``insert`` of the new ones.
A smaller set, or a map, is written whole (it costs the client less), its kept members as stored.

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

from typing import Any

from nbdb.families.ovsdb.mapping import ColumnMap, TableMap
from nbdb.families.ovsdb.mutations import Whole, set_mutations
from nbdb.families.ovsdb.rows import NewRow, column_value
from nbdb.families.ovsdb.spellings import kept_members

__all__ = ["column_delta"]

MUTATE_FROM = 100
"""The members a set holds after an update from which its difference is written (measured, callgrind and
ovsdb-server's CPU, docs/benchmarks.md "Updates of big sets as their difference"): from 100, the server's
CPU per update falls by a third (half at 10,000) for 1% more of the client's instructions; at 10, the
client pays 2% more and the server's saving is within one clock tick of 300 updates."""


def column_delta(
    tm: TableMap,
    cm: ColumnMap,
    stored: Any,
    row: NewRow,
    row_id: int,
    known: dict[str, Any] | None = None,
) -> list[list[Any]] | None:
    """The mutations that take ``stored`` (the row's cell of ``cm``, which differs from the update's) to the
    update's cell; None: the column is written whole (``row.wire``). A stored member the update keeps is taken
    back into the row's ``cells``, ``wire`` and ``values`` as stored: the row as written is what the server holds.
    ``known``: the reads of the column's stored atoms already made (see :func:`.spellings.keep_spelling`)."""
    cells, wire, values = row.cells, row.wire, row.values
    new = cells[cm.column]
    if cm.json or not cm.type.is_set or not isinstance(stored, set) or not isinstance(new, set):
        return None  # a map too: its difference cost the client more than the server saved (18% at 100 keys)
    add = new - stored
    # What the update drops: nothing if every stored member is among the kept ones (one pass less).
    gone = stored - new if len(new) - len(add) < len(stored) else set()
    spelled = kept_members(tm, cm, row_id, stored, gone, new, known) if gone and cm.type.key.kind == "string" else {}
    kept = new
    if spelled:  # some stored spellings stay: the row as written holds them
        kept = (new - spelled.keys()) | set(spelled.values())
        cells[cm.column] = kept
        wire[cm.column] = cm.to_wire(kept)
        value = values.get(cm.field)
        # In the order the row's document had in nbdb's text (sorted): it decodes as the update's did.
        values[cm.field] = [spelled.get(a, a) for a in value] if isinstance(value, list) else column_value(cm, kept)
        gone, add = gone - kept, add - spelled.keys()
    if not _pays(len(add) + len(gone), len(kept)):
        return None
    try:
        return set_mutations(cm, add, gone)
    except Whole:  # no order of mutations stays within the column's size bounds whatever it holds
        return None


def _pays(changed: int, size: int) -> bool:
    """Whether mutations of ``changed`` members cost less than writing the ``size`` members the column
    holds afterwards whole: a set of at least :data:`MUTATE_FROM`, changed in fewer members than it holds."""
    return size >= MUTATE_FROM and changed < size
