"""The rows of the server that hold an object a refused delete targets, selected on the refusal only.

A namespaced replica (or one of some topics) is sent only its own rows of every table with
``external_ids``: another namespace's or another client's row pointing to the target never reaches it,
and a column it does not follow, or a map's, it cannot search. Once the server refused a delete for the
target's holders (a failed reference or child wait), one transaction of one ``select`` per column of the
served schema that can hold the target (and one of the target's own child columns) names them all, as
the other stores name every referrer: an extra round trip on the refusal path only, none on a delete
that commits.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nbdb.families.ovsdb.conditions import in_namespace
from nbdb.families.ovsdb.mapping import EXTERNAL_IDS, Link, Mapping_
from nbdb.families.ovsdb.ops import uuid_text, where_uuid
from nbdb.families.ovsdb.rows import row_namespace
from nbdb.families.ovsdb.unique import selected_namespace
from nbdb.spi import RefKey

__all__ = [
    "HolderQuery",
    "Holders",
    "WeakExpected",
    "WeakWait",
    "holder_queries",
    "holders_found",
    "released_by",
    "weak_holders",
    "weak_holders_elsewhere",
    "weak_targets",
]


@dataclass(frozen=True, slots=True)
class HolderQuery:
    """One ``select`` of the rows that may hold the target, and how to read its reply."""

    op: dict[str, Any]
    db_table: str
    """The table of the holders it finds (a child table for the target's own child columns)."""
    column: str
    own: bool = False
    """The target's own row, whose set ``column`` holds its children (the holders are the members)."""
    map_key: bool = False
    map_value: bool = False
    """A map column holding the target as a key, a value (the rows selected are those with any entry)."""
    parent: bool = False
    """A parent's set column holding the target as its child: a row still holding it after the commit is a second
    parent (another client put the child in its set too), which no plan of this Database can drop."""
    skip: frozenset[str] = frozenset()
    """The rows (their uuid's text) whose set the refused commit itself takes the target out of, or which it
    deletes: no holders."""
    model: str | None = None
    """The table of the model its rows are objects of, when the target's own model says (its parent field's),
    or when exactly one model of ``db_table`` maps ``column`` as a reference to the target's model (its child's
    parent field, for ``own``): another model sharing the table (a user's generated ``OVN_Northbound.*``
    models beside the built-in ones) maps it to another model, or not at all, and is not the holder."""


Released = frozenset[tuple[str, str | None, str]]
"""(table, set column, row's uuid text) of each parent row whose set a commit takes a target out of, and
(table, None, row's uuid text) of each row it deletes (:func:`released_by`)."""


def released_by(ops: Sequence[Mapping[str, Any]], id: uuid.UUID) -> Released:
    """The parent rows whose set column the operations ``ops`` of a commit take ``id`` out of (a ``mutate`` that
    deletes it from the set), and the rows it deletes: the child's own parent, which a refusal of its delete
    must not name."""
    text = uuid_text(id)
    found: set[tuple[str, str | None, str]] = set()
    for op in ops:
        where = op.get("where")
        if op.get("op") not in ("mutate", "delete") or not where or len(where) != 1 or where[0][:2] != ["_uuid", "=="]:
            continue
        row = _atom(where[0][2])
        if op["op"] == "delete":
            if row is not None:
                found.add((op["table"], None, row))
            continue
        for column, how, value in op.get("mutations", ()):
            if row is not None and how == "delete" and text in _atoms(value):
                found.add((op["table"], column, row))
    return frozenset(found)


def holder_queries(
    mapping: Mapping_, table: str, id: uuid.UUID, namespace: str = "", released: Released | None = None
) -> tuple[str, list[HolderQuery]] | None:
    """The database and the selects that find every row holding ``table/id``; None when rows cannot tell
    (a reference to its table kept as JSON text or in another database: no column to select).

    ``released``: the parent rows whose set the refused commit takes the target out of, or deletes
    (:func:`released_by`); its parents' set columns are asked too then, those rows no holders (see
    :func:`holders_found` for the others). None: its parents' sets are not asked (the commit was refused
    before it reached them, by a wait).

    A weak column's holders are those of ``namespace`` only, as the commit waits for them (see
    ``planner._check_unreferenced``): the server drops another namespace's or client's weak reference
    itself, so that row refuses nothing and is no holder to name."""
    tm = mapping.tables.get(table)
    schema = None if tm is None else mapping.schemas.get(tm.db)
    if tm is None or schema is None:
        return None
    for source in mapping.tables.values():
        for to, storage in source.refs.values():
            if to == table and storage != "parent" and (storage != "column" or source.db != tm.db):
                return None
    text = uuid_text(id)
    queries: list[HolderQuery] = []
    own: dict[str, list[Link]] = {}
    for link in mapping.links.get((tm.db, tm.db_table), ()):
        own.setdefault(link.column, []).append(link)
    for column, links in own.items():
        op = {"op": "select", "table": tm.db_table, "where": where_uuid(id), "columns": [column]}
        children = [link.child.table for link in links if link.child.refs.get(link.field, ("",))[0] == table]
        model = children[0] if len(children) == 1 else None
        queries.append(HolderQuery(op, links[-1].child.db_table, column, own=True, model=model))
    parents = {(p, c) for p, c in tm.parents.values()}  # its parents' sets hold it as a child
    if released is not None:
        for name, (ptable, pcolumn) in sorted(tm.parents.items(), key=lambda item: item[1]):
            skip = frozenset(row for t, c, row in released if t == ptable and c in (pcolumn, None))
            held = [[pcolumn, "includes", ["uuid", text]]]
            op = {"op": "select", "table": ptable, "where": held, "columns": ["_uuid"]}
            model = tm.refs[name][0] if name in tm.refs else None  # (its parent field's: a table others may share)
            queries.append(HolderQuery(op, ptable, pcolumn, parent=True, skip=skip, model=model))
    for db_table, table_schema in schema.tables.items():
        for column, spec in table_schema.columns.items():
            key, value = spec.type.key, spec.type.value
            on_key = key is not None and key.ref_table == tm.db_table
            on_value = value is not None and value.ref_table == tm.db_table
            if not (on_key or on_value) or (db_table, column) in parents:
                continue
            base = key if on_key else value
            weak = base is not None and base.ref_type == "weak"
            if weak and not _waited(mapping, tm.db, db_table, column, table):
                continue  # the server drops it with the row, and nbdb's plan does not wait for it: no holder
            scope = [in_namespace(namespace)] if weak and namespace else []
            # A Database without a namespace: no clause leaves out the rows of other namespaces on the server,
            # so their external_ids are selected and holders_found drops them.
            ext = [EXTERNAL_IDS] if weak and not namespace else []
            model = _referring(mapping, tm.db, db_table, column, table)
            if spec.type.is_map:
                where: list[Any] = [[column, "!=", ["map", []]], *scope]
                op = {"op": "select", "table": db_table, "where": where, "columns": ["_uuid", column, *ext]}
                queries.append(HolderQuery(op, db_table, column, map_key=on_key, map_value=on_value, model=model))
            else:
                where = [[column, "includes", ["uuid", text]], *scope]
                op = {"op": "select", "table": db_table, "where": where, "columns": ["_uuid", *ext]}
                queries.append(HolderQuery(op, db_table, column, model=model))
    return tm.db, queries


WeakWait = tuple[tuple[str, int], str, str]
"""A deleted target's key (its table, its id's int), and a weak column (table, column) the commit waits on."""


def weak_holders_elsewhere(
    mapping: Mapping_,
    rows: Callable[[str, str], Mapping[int, Mapping[str, Any]]],
    namespace: str,
    targets: Sequence[RefKey],
) -> dict[WeakWait, list[str]]:
    """The rows of another namespace than ``namespace`` holding one of ``targets`` in a weak column the commit
    deleting them waits on, as ``rows`` (db, db_table -> the replica's rows by id) shows them: a Database
    without a namespace, whose replica is sent every row, cannot select its own on the server (no clause
    selects rows without an ``nbdb:ns``), so after a refusal its wait expects exactly these (the server
    drops their weak reference as the target goes). Read on a refusal only."""
    return weak_holders(mapping, rows, namespace, targets, mine=False)


def weak_holders(
    mapping: Mapping_,
    rows: Callable[[str, str], Mapping[int, Mapping[str, Any]]],
    namespace: str,
    targets: Sequence[RefKey],
    *,
    mine: bool,
) -> dict[WeakWait, list[str]]:
    """:func:`weak_holders_elsewhere`'s rows, or (``mine``) those of ``namespace`` itself it leaves out: the wait
    fails for each of those, unless the commit writes it. Read on a refusal only."""
    found: dict[WeakWait, list[str]] = {}
    for table, id in targets:
        tm = mapping.tables.get(table)
        if tm is None:
            continue
        text = uuid_text(id)
        for stm in mapping.tables.values():
            if stm.external_ids is None or stm.db != tm.db:
                continue
            for name, (to, storage) in stm.refs.items():
                cm = stm.columns.get(name)
                if to != table or storage != "column" or cm is None or cm.type.key.ref_type != "weak":
                    continue
                held = [
                    uuid_text(uuid.UUID(int=rid))
                    for rid, row in rows(tm.db, stm.db_table).items()
                    if _holds(row.get(cm.column), text)
                    and (row_namespace(row.get(EXTERNAL_IDS) or {}) != namespace) != mine
                ]
                if held:
                    found[((table, id.int), stm.db_table, cm.column)] = sorted(held)
    return found


class WeakExpected:
    """The other namespaces' weak holders of deleted targets that a Database without a namespace found on a
    refusal (:func:`weak_holders_elsewhere`), kept for every commit of it that deletes those targets again: the
    delete planned again after the refusal (its walk's drops, a transaction's next try) expects them from its
    first copy, not only the commit that found them. Wrong since (one added or dropped meanwhile), the wait
    fails and the commit reads them again (bounded, as before). Forgotten once a commit deleting the target
    lands. At most :attr:`MOST` targets kept, counted by target (each target's waits, one per weak column that
    holds it, kept whole): a refusal that finds more keeps :attr:`MOST` of them (the others are read again on
    their next refusal), and one whose targets would take the total past it replaces what was kept of the
    others (a delete refused for good and never sent again leaves its own).

    Each snapshot it hands out is never changed in place (replaced whole): commits on other threads read it;
    :meth:`learn` and :meth:`forget` replace it under a lock (no thread's update lost to another's)."""

    MOST = 256
    __slots__ = ("_lock", "_seen")

    def __init__(self) -> None:
        self._seen: dict[WeakWait, list[str]] = {}
        self._lock = threading.Lock()

    def expected(self) -> dict[WeakWait, list[str]] | None:
        """Every target's kept holders (None: none kept), as the planner's ``elsewhere``."""
        return self._seen or None

    def learn(self, targets: Collection[tuple[str, int]], found: Mapping[WeakWait, list[str]]) -> None:
        """``found`` for ``targets`` (each one's holders as found now, replacing what was kept of it)."""
        fresh = {wait[0] for wait in found}
        if len(fresh) > self.MOST:
            fresh = set(sorted(fresh)[: self.MOST])
            found = {wait: rows for wait, rows in found.items() if wait[0] in fresh}
        with self._lock:
            kept = {key: rows for key, rows in self._seen.items() if key[0] not in targets and key[0] not in fresh}
            if len({key[0] for key in kept}) + len(fresh) > self.MOST:
                kept = {}
            self._seen = {**kept, **found}

    def forget(self, targets: Collection[tuple[str, int]]) -> None:
        """Drop what was kept of ``targets`` (deleted: a row created again under an id is held anew)."""
        with self._lock:
            if any(key[0] in targets for key in self._seen):
                self._seen = {key: rows for key, rows in self._seen.items() if key[0] not in targets}


def weak_targets(reasons: Sequence[tuple[str, Any]]) -> frozenset[tuple[str, int]]:
    """The (table, id.int) of each target a plan's weak waits are for (its ``weakly_referenced`` reasons)."""
    return frozenset((why[1][0], why[1][1].int) for why in reasons if why[0] == "weakly_referenced")


def _holds(cell: Any, text: str) -> bool:
    """Whether a replica's cell (a uuid's text, or a set of them) holds ``text``."""
    return cell == text or (isinstance(cell, (set, frozenset)) and text in cell)


def _referring(mapping: Mapping_, db: str, db_table: str, column: str, table: str) -> str | None:
    """The table of the one model of ``db_table`` that maps ``column`` as a reference to ``table``'s model; None
    if none or several do (its holder is then named by :func:`_named`, from the models of ``db_table``)."""
    found = {
        stm.table
        for stm in mapping.by_db_table.get((db, db_table), ())
        for name, (to, _storage) in stm.refs.items()
        if to == table and name in stm.columns and stm.columns[name].column == column
    }
    return found.pop() if len(found) == 1 else None


def _waited(mapping: Mapping_, db: str, db_table: str, column: str, table: str) -> bool:
    """Whether a commit deleting a row of ``table`` waits for ``db_table.column`` to hold it no more (a weak
    reference a model maps, in a table with external_ids: see ``planner._check_unreferenced``)."""
    for stm in mapping.by_db_table.get((db, db_table), ()):
        if stm.external_ids is None:
            continue
        for name, (to, storage) in stm.refs.items():
            if to == table and storage == "column" and stm.columns[name].column == column:
                return True
    return False


@dataclass(frozen=True, slots=True)
class Holders:
    """What :func:`holders_found` finds holding a target on the server."""

    found: list[RefKey]
    """Every object holding it (but the rows the refused commit lets go of it, and the ``stale`` parents)."""
    unseen: list[RefKey]
    """Those of ``found`` this Database cannot read (its replica does not show them: another namespace's or
    client's rows): no plan of it can drop them or take them along."""
    second: list[RefKey]
    """Those of ``found`` holding it in a parent's set the commit does not take it out of (unless ``stale``): a
    second parent another client put it in beside its own (a row the commit releases, which still holds it),
    or a parent this Database cannot read; no plan of it takes the target out of them, whether it reads them
    or not (a readable one is not in ``unseen``)."""
    stale: bool = False
    """The parents' sets hold it only in rows the commit does not release, none it releases holds it any more,
    and this Database reads them all: another writer moved it to them after the commit was planned, from a
    replica behind the server. They are its own parent, no holders (left out of ``found``): the delete planned
    again from the synced replica takes it out of them."""


def holders_found(
    mapping: Mapping_,
    db: str,
    id: uuid.UUID,
    queries: Sequence[HolderQuery],
    replies: Sequence[Any],
    shown: Callable[[str, uuid.UUID], bool],
) -> Holders | None:
    """The objects holding ``id`` as the replies of :func:`holder_queries` show them (see :class:`Holders`);
    None if a holder is a row no single model can name (a table no model maps, or several models share and the
    replica does not show which), or the target's row is gone. ``shown``: whether the replica holds an object."""
    text = uuid_text(id)
    found: dict[RefKey, None] = {}
    parents: dict[RefKey, None] = {}  # in a parent's set, not one the commit lets go of
    released_holds = False  # a parent's row the commit lets go of still holds it (the plan saw its parent)
    for query, reply in zip(queries, replies, strict=True):
        rows = reply.get("rows", []) if isinstance(reply, dict) else []
        if EXTERNAL_IDS in query.op.get("columns", ()):
            rows = [row for row in rows if not selected_namespace(row)]  # (see holder_queries)
        if query.own:
            if not rows:
                return None  # deleted since: the delete planned again says so
            held = _atoms(rows[0].get(query.column))
        elif query.map_key or query.map_value:
            held = [_atom(row.get("_uuid")) for row in rows if _map_holds(row.get(query.column), text, query)]
        else:
            held = [_atom(row.get("_uuid")) for row in rows]
        for member in held:
            if member is None:
                return None
            if member in query.skip:
                released_holds = True
                continue
            key = (
                (query.model, uuid.UUID(member))
                if query.model is not None
                else _named(mapping, db, query.db_table, uuid.UUID(member), shown)
            )
            if key is None:
                return None
            if query.parent:
                parents[key] = None
            else:
                found[key] = None
    stale = bool(parents) and not released_holds and all(shown(*key) for key in parents)
    second = [] if stale else list(parents)
    found.update(dict.fromkeys(second))
    return Holders(list(found), [key for key in found if not shown(*key)], second, stale)


def _named(
    mapping: Mapping_, db: str, db_table: str, id: uuid.UUID, shown: Callable[[str, uuid.UUID], bool]
) -> RefKey | None:
    maps = mapping.by_db_table.get((db, db_table), ())
    for tm in maps:
        if shown(tm.table, id):
            return (tm.table, id)
    return (maps[0].table, id) if len(maps) == 1 else None


def _atom(cell: Any) -> str | None:
    """The uuid text of a ``["uuid", text]`` cell, else None."""
    if isinstance(cell, list) and len(cell) == 2 and cell[0] == "uuid" and isinstance(cell[1], str):
        return cell[1]
    return None


def _atoms(cell: Any) -> list[str | None]:
    """The uuid texts of a set cell (``["set", [...]]`` or one atom)."""
    if isinstance(cell, list) and len(cell) == 2 and cell[0] == "set" and isinstance(cell[1], list):
        return [_atom(member) for member in cell[1]]
    return [] if cell is None else [_atom(cell)]


def _map_holds(cell: Any, text: str, query: HolderQuery) -> bool:
    """Whether a map cell (``["map", [[k, v], ...]]``) holds the target where ``query`` looks."""
    if not (isinstance(cell, list) and len(cell) == 2 and cell[0] == "map" and isinstance(cell[1], list)):
        return False
    for pair in cell[1]:
        if not (isinstance(pair, list) and len(pair) == 2):
            continue
        if (query.map_key and _atom(pair[0]) == text) or (query.map_value and _atom(pair[1]) == text):
            return True
    return False
