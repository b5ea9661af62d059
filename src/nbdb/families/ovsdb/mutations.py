"""Native mutations: a :class:`nbdb.spi.Mutate` as one OVSDB ``mutate`` of set and map columns.

Two controllers adding ports to one port group both succeed: the server adds
each member to whatever the set holds when the transaction runs, so nothing
compares versions. A mutation of a field OVSDB keeps as JSON text (lists in
the generated model database) cannot be done so; the planner rebases those
on the stored record instead (a compare-and-swap it plans again on conflict).

ovsdb-server checks a column's size bounds after each mutation (and each
operation), not once at the commit: ``delete`` then ``insert`` of a set of at
least one member that empties it in between is refused, so is ``insert`` then
``delete`` overfilling a set of at most N, and so is setting again the only
key of a map of at least one pair. Each change is planned in an order that
stays within the bounds whatever the column holds (insert-first for a set of
unlimited size, delete-first for one that may be empty); where none does (a
set of at least one and at most N members that gains and loses members, a
map of at least one pair whose keys are set) the column is written whole,
from the value the replica shows, behind a ``wait`` for that value (a
compare-and-swap of that column alone, planned again on conflict).

Exactly once: each mutation writes a *mark* (``external_ids:nbdb:m:<token>``,
see :mod:`.rows`) and waits, in the same transaction, for that mark to be
absent. A copy sent again after a lost reply therefore lands at most once,
and the replica tells whether the first did (its mark is there). A writer's
next write of the row drops the marks of its own acknowledged mutations
(:class:`MarkBook`), and any writer drops marks more than
:data:`.rows.LEDGER_SKEW` past their expiry (:func:`.rows.stale_marks`: a
writer that died or gave up), never one a writer may still need. A mark its
writer leaves behind (a restart, a commit that ended unknown) so stays on the
row about 70 minutes (docs/backends/ovsdb.md, native mutations).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, cast

from nbdb import errors
from nbdb.families.ovsdb import ops
from nbdb.families.ovsdb.datum import atom_from_wire, atom_to_wire, cell_to_wire, default_cell, wire_map
from nbdb.families.ovsdb.mapping import EXTERNAL_IDS, ColumnMap, TableMap
from nbdb.families.ovsdb.rows import EXT_MARK, EXT_PREFIX, LEDGER_SETTLE, stale_marks
from nbdb.families.ovsdb.spellings import stored_spellings
from nbdb.spi import FieldChange, Mutate, RefKey

__all__ = [
    "LedgerBook",
    "MarkBook",
    "MutationPlan",
    "Whole",
    "is_native",
    "mark_of",
    "plan_mutation",
    "set_mutations",
]

_BOOK_LIMIT = 100_000
"""Rows whose acknowledged marks a writer remembers (older ones are left to the lifetime rule)."""


class MarkBook:
    """A writer's marks that were acknowledged, by row: nobody waits for them, its next write drops them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: OrderedDict[RefKey, set[str]] = OrderedDict()

    def droppable(self, key: RefKey, ext: Mapping[str, str], now: float) -> list[str]:
        """The marks of row ``key`` (``ext``: its ``external_ids``) a write may drop: ours settled, and stale ones."""
        with self._lock:
            mine = self._done.get(key, set())
            own = [name for name in ext if name in mine]
        return sorted({*own, *stale_marks(ext, now)})

    def settled(self, written: Mapping[RefKey, tuple[str, str]], dropped: Mapping[RefKey, Iterable[str]]) -> None:
        """A commit was acknowledged: its marks (``written``) are settled; those it ``dropped`` are gone."""
        with self._lock:
            for key, names in dropped.items():
                mine = self._done.get(key)
                if mine is not None:
                    mine.difference_update(names)
                    if not mine:
                        del self._done[key]
            for key, (name, _stamp) in written.items():
                self._done.setdefault(key, set()).add(name)
                self._done.move_to_end(key)
            while len(self._done) > _BOOK_LIMIT:
                self._done.popitem(last=False)


class LedgerBook:
    """A writer's settled marks in the ledger row (``NB_Global.external_ids``, see :func:`.planner._plan_ledger`).

    Its next commit that marks the ledger drops them; its first settled one also has the row read once, to
    drop the same way the marks more than :data:`.rows.LEDGER_SKEW` past their expiry (writers that died, or
    lost their replies and gave up: :func:`.rows.stale_marks`), never one a writer may still need.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: set[str] = set()
        self._swept = False

    def droppable(self) -> list[str]:
        with self._lock:
            return sorted(self._done)

    def settled(self, mark: str, dropped: Iterable[str], read: Callable[[], Mapping[str, str]]) -> None:
        """A commit that marked the ledger was acknowledged; ``read`` gives the row's ``external_ids``."""
        with self._lock:
            self._done.difference_update(dropped)
            self._done.add(mark)
            sweep, self._swept = not self._swept, True
            if len(self._done) > _BOOK_LIMIT:
                self._done.clear()  # (left to the lifetime rule)
        if sweep:
            try:
                stale = stale_marks(read(), time.time())
            except errors.BackendUnavailableError:
                return
            with self._lock:
                self._done.update(stale)


@dataclass(slots=True)
class MutationPlan:
    """The operations of one native mutation and what it does to references."""

    head: list[tuple[dict[str, Any], tuple[str, Any]]] = field(default_factory=list)
    body: list[tuple[dict[str, Any], tuple[str, Any]]] = field(default_factory=list)
    added: set[RefKey] = field(default_factory=set)
    removed: set[RefKey] = field(default_factory=set)
    mark: tuple[str, str] = ("", "")
    """(key, value) of the mark the mutation writes in ``external_ids``."""
    compared: list[tuple[ColumnMap, Any]] = field(default_factory=list)
    """Each column written whole, with the value its ``wait`` compares (see :func:`_whole_column`)."""


def _column(tm: TableMap, name: str) -> ColumnMap | None:
    cm = tm.columns.get(name)
    if cm is None or cm.json or not (cm.type.is_set or cm.type.is_map):
        return None
    return cm


def is_native(tm: TableMap, op: Mutate) -> bool:
    """Whether OVSDB can apply every change of ``op`` itself (set and map columns, ``external_ids``)."""
    if tm.external_ids is None:
        return False
    return all(change.field == EXTERNAL_IDS or _column(tm, change.field) is not None for change in op.changes)


def mark_of(token: str, now: float) -> tuple[str, str]:
    """The mark commit ``token``, planned at wall-clock ``now``, writes (on a mutated row, or the ledger).

    It holds its expiry, ``now`` plus :data:`.rows.LEDGER_SETTLE` (the longest its writer relies on it),
    as a whole second: the number older nbdb writers parse (they drop it five minutes past that value).
    """
    return EXT_MARK + token, str(int(now + LEDGER_SETTLE))


class Whole(Exception):
    """No order of ``delete`` and ``insert`` keeps the column within its size bounds whatever it holds."""


def _set_mutations(cm: ColumnMap, change: FieldChange) -> list[list[Any]]:
    add = set(change.add)
    return set_mutations(cm, add, set(change.remove) - add)  # a member both added and removed is there afterwards


def set_mutations(cm: ColumnMap, add: set[Any], gone: set[Any]) -> list[list[Any]]:
    """The mutations of set column ``cm`` that insert ``add`` and delete ``gone`` (disjoint).

    Raises :class:`Whole` where no order keeps the column within its size bounds whatever it holds.
    """
    # ovsdb-server checks a column's size after each mutation, not at the commit: the order must keep
    # every intermediate value within [min, max] (see the module docstring).
    if add and gone:
        if cm.type.min == 0:  # what deleting leaves is at most what was there, so within max
            return [
                [cm.column, "delete", cell_to_wire(cm.type, gone)],
                [cm.column, "insert", cell_to_wire(cm.type, add)],
            ]
        if cm.type.max is None:  # what inserting leaves is at least what was there, so within min
            return [
                [cm.column, "insert", cell_to_wire(cm.type, add)],
                [cm.column, "delete", cell_to_wire(cm.type, gone)],
            ]
        raise Whole  # Port.interfaces-like, bounded: either order may leave the bounds for some values
    if gone:  # one mutation: what it leaves is the result, within the bounds if the result is
        return [[cm.column, "delete", cell_to_wire(cm.type, gone)]]
    return [[cm.column, "insert", cell_to_wire(cm.type, add)]] if add else []


def _pairs(change: FieldChange) -> dict[Any, Any]:
    """The key -> value pairs a map change sets (``add`` holds them as pairs)."""
    return dict(cast("Iterable[tuple[Any, Any]]", change.add))


def _map_mutations(cm: ColumnMap, change: FieldChange) -> list[list[Any]]:
    # A map "insert" leaves a key that is there alone: drop the keys to be set first. Between the two,
    # the map may hold fewer than its minimum (a key set anew in a map of at least one pair).
    pairs = _pairs(change)
    drop = {*change.remove, *pairs}
    if pairs and cm.type.min > 0:
        raise Whole
    out: list[list[Any]] = []
    if drop:
        kind = cm.type.key.kind
        out.append([cm.column, "delete", ["set", [atom_to_wire(kind, k) for k in sorted(drop, key=str)]]])
    if pairs:
        out.append([cm.column, "insert", cell_to_wire(cm.type, pairs)])
    return out


def _as_cell(kind: str, value: Any) -> Any:
    """``value`` (an atom of a change: a UUID for a reference) as the replica's cells hold it (a uuid's text)."""
    return atom_from_wire(kind, atom_to_wire(kind, value))


def _changed_cell(cm: ColumnMap, cell: Any, change: FieldChange) -> Any:
    """The cell ``cell`` of a set or map column with ``change`` applied.

    The change's atoms are taken to the replica's form first: a reference is a ``UUID`` in the change and
    its text in the cell, and a removal compared as it came removed nothing (a uuid-keyed map held the
    key twice, and rendering it raised TypeError).
    """
    key = cm.type.key.kind
    gone = {_as_cell(key, k) for k in change.remove}
    if cm.type.is_map:
        assert cm.type.value is not None
        value = cm.type.value.kind
        pairs = {_as_cell(key, k): _as_cell(value, v) for k, v in _pairs(change).items()}
        return {k: v for k, v in cell.items() if k not in gone} | pairs
    return (set(cell) - gone) | {_as_cell(key, a) for a in change.add}


def _whole_column(
    tm: TableMap, cm: ColumnMap, row: Mapping[str, Any], change: FieldChange, key: RefKey, plan: MutationPlan
) -> None:
    """``change`` as an ``update`` of the whole column, compared first with the value it was computed from.

    For a column whose size bounds no order of mutations respects whatever it holds: the update
    writes the changed copy of the value the replica shows, and the ``wait`` before it fails the
    commit (planned again from a current replica) if another writer changed the column meanwhile.
    """
    where = ops.where_uuid(key[1])
    cell = row.get(cm.column)
    before = default_cell(cm.type) if cell is None else cell
    plan.compared.append((cm, before))
    plan.head.append((ops.wait(tm.db_table, where, [{cm.column: cm.to_wire(before)}], [cm.column]), ("cas", key)))
    after = cell_to_wire(cm.type, _changed_cell(cm, before, change))
    plan.body.append(
        ({"op": "update", "table": tm.db_table, "where": where, "row": {cm.column: after}}, ("mutate", key))
    )


def _as_stored(
    tm: TableMap, cm: ColumnMap, row: Mapping[str, Any] | None, row_id: int, change: FieldChange
) -> FieldChange:
    """``change``, removing also each member of the row's text set that reads as a member it removes.

    A read normalises what another writer stored (``ovn-nbctl`` keeps ``0A:00:00:00:00:01 10.0.0.5``
    and ``FD00::5`` as typed; the model reads ``0a:...`` and ``fd00::5``), while the server's
    ``delete`` compares text: removing a member as it was read removed nothing, and the mutation
    reported success. Every stored member that reads as a removed one goes, as given (``FD00::5``)
    or as read (``fd00::5``), and however many spellings the set holds (see :mod:`.spellings`).
    """
    if not change.remove or row is None or cm.type.is_map or cm.one_of_set or cm.type.key.kind != "string":
        return change
    cell = row.get(cm.column)
    if not isinstance(cell, set):
        return change
    spelled = stored_spellings(tm, cm, row_id, cell, change.remove)
    return replace(change, remove=(*change.remove, *spelled)) if spelled else change


def _external_ids(change: FieldChange | None, drop_marks: Iterable[str], token: str, now: float) -> list[list[Any]]:
    """The mutations of ``external_ids``: the caller's keys, the new mark, and marks nobody needs."""
    pairs = {} if change is None else {str(k): str(v) for k, v in _pairs(change).items()}
    removed = set() if change is None else {str(k) for k in change.remove}
    reserved = sorted(k for k in {*pairs, *removed} if k.startswith(EXT_PREFIX))
    if reserved:
        raise errors.ValidationError(f"external_ids keys starting with {EXT_PREFIX!r} are reserved: {reserved}")
    mark, stamp = mark_of(token, now)
    drop = sorted({*removed, *pairs, *drop_marks})
    out: list[list[Any]] = []
    if drop:
        out.append([EXTERNAL_IDS, "delete", ["set", [atom_to_wire("string", k) for k in drop]]])
    out.append([EXTERNAL_IDS, "insert", wire_map([*pairs.items(), (mark, stamp)])])
    return out


def plan_mutation(
    tm: TableMap, op: Mutate, drop_marks: Iterable[str], token: str, now: float, row: Mapping[str, Any] | None = None
) -> MutationPlan:
    """The operations of a native mutation of an existing row, dropping the marks ``drop_marks``.

    ``row``: the row as the replica shows it, from which a column whose size bounds no order of
    mutations respects is written whole (see :func:`_whole_column`).
    """
    plan = MutationPlan(mark=mark_of(token, now))
    key = (op.table, op.id)
    where = ops.where_uuid(op.id)
    plan.head.append((ops.wait(tm.db_table, where, [{}]), ("exists", key)))
    marked = [*where, [EXTERNAL_IDS, "includes", wire_map([plan.mark])]]
    plan.head.append((ops.wait(tm.db_table, marked, []), ("marked", key)))
    mutations: list[list[Any]] = []
    ext_change: FieldChange | None = None
    for change in op.changes:
        if change.field == EXTERNAL_IDS:
            ext_change = change
            continue
        cm = _column(tm, change.field)
        if cm is None:
            raise errors.UnsupportedError(f"{tm.table}.{change.field} cannot be mutated natively")
        change = _as_stored(tm, cm, row, op.id.int, change)
        try:
            try:
                mutations += _map_mutations(cm, change) if cm.type.is_map else _set_mutations(cm, change)
            except Whole:
                _whole_column(tm, cm, row or {}, change, key, plan)
        except errors.ValidationError as exc:
            raise errors.ValidationError(f"{tm.table}.{change.field}: {exc}") from None
        target = tm.refs.get(change.field)
        if target is not None:
            plan.added.update((target[0], _id(m)) for m in change.add)
            plan.removed.update((target[0], _id(m)) for m in change.remove)
    mutations += _external_ids(ext_change, drop_marks, token, now)
    plan.body.append(({"op": "mutate", "table": tm.db_table, "where": where, "mutations": mutations}, ("mutate", key)))
    return plan


def _id(member: object) -> uuid.UUID:
    try:
        return member if isinstance(member, uuid.UUID) else uuid.UUID(str(member))
    except ValueError:
        raise errors.ValidationError(f"not an object id (UUID): {member!r}") from None
