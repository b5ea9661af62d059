"""One nbdb commit as one OVSDB transaction, planned from the replica.

The plan is built from the replica's current rows (no read from the server)
and guarded by ``wait`` operations, so it is correct whatever the replica
missed: a stale row fails its wait and the commit is planned again.

Order of the operations (a ``wait`` sees the effect of the operations before it):

1. a fenced commit's ``assert`` of its lock; compare-and-swap: a ``wait`` on
   the exact stored content of each updated or deleted row, a ``wait`` for
   "no such row" before each insert; for each native mutation, "the row
   exists" and "its mark is absent" (:mod:`.mutations`);
2. inserts (row uuid given), updates, native mutations, and ``mutate``s of
   the parents' set columns (a child joins or leaves its parent's set:
   concurrent adds of children never conflict), one per parent row, column and
   direction, whatever the number of its children the commit moves;
3. checks that a deleted parent holds no more children;
4. deletes;
5. checks that every referenced target exists (one per target, however many
   rows of the commit reference it), nothing references a deleted row, and no
   other row holds a unique value the server does not index (:mod:`.unique`).

The server's work per commit so follows the rows the commit writes, not the
number of its children: ovsdb-server copies a parent's whole set column for
each ``mutate`` of it, so a hundred ports joining a switch of 10,000 in a
hundred ``mutate``s cost it a hundred copies of the set.

Every put row records the commit's token in ``external_ids:nbdb:txn`` (see
:mod:`.rows`), which :func:`.settle.settle` reads back when a reply was lost;
every native mutation leaves its mark.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from nbdb import errors
from nbdb.families import rules
from nbdb.families.ovsdb.conditions import in_namespace
from nbdb.families.ovsdb.datum import default_cell, wire_map
from nbdb.families.ovsdb.delta import column_delta
from nbdb.families.ovsdb.holders import WeakWait
from nbdb.families.ovsdb.mapping import EXTERNAL_IDS, ColumnMap, Mapping_, TableMap
from nbdb.families.ovsdb.mutations import MarkBook, is_native, mark_of, plan_mutation
from nbdb.families.ovsdb.ops import assert_lock, mutate_members, uuid_text, wait, where_uuid
from nbdb.families.ovsdb.ovn import LEDGER_TABLES
from nbdb.families.ovsdb.replica import IdKey, Replica
from nbdb.families.ovsdb.rows import (
    CONTENT_STAMP,
    EXT_EXPIRES,
    EXT_FIELD,
    EXT_MARK,
    EXT_NAMESPACE,
    EXT_TOPIC,
    EXT_TTL,
    EXT_TXN,
    EXT_VERSION,
    Row,
    Written,
    carried,
    content_stamp,
    new_row,
    next_version,
    no_external_ids,
    push_window,
    render_written_as,
    result_stamp,
    sealed,
    to_keep,
)
from nbdb.families.ovsdb.spellings import keep_spelling, source_as_written
from nbdb.families.ovsdb.unique import UniqueCheck, doc_value, holder_where, key_cells, unset_value
from nbdb.models import enums
from nbdb.models.shape import ModelShape
from nbdb.revision import Revision
from nbdb.spi import Delete, Mutate, Put, Record, RefKey, WriteOp

__all__ = ["Plan", "plan_commit"]


@dataclass(slots=True)
class Plan:
    """The OVSDB operations of one commit, why each is there, and what the commit writes."""

    db: str
    token: str
    namespace: str
    ops: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[tuple[str, Any]] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    puts: dict[IdKey, int] = field(default_factory=dict)
    """(table, id.int) of every put -> the version it writes."""
    expected: dict[IdKey, dict[str, Any] | None] = field(default_factory=dict)
    """(table, id.int) -> the stored columns each compare-and-swap waits for (None: the row must not exist).

    These maps are keyed by the id's int (:data:`.replica.IdKey`), as the replica is: a ``uuid.UUID``
    in a key hashes in Python at every insert and lookup; the keys never leave this family."""
    keys: list[RefKey] = field(default_factory=list)
    skipped: set[int] = field(default_factory=set)
    """Positions of the ops that do nothing (deletes if_exists of records that are gone)."""
    marks: dict[RefKey, tuple[str, str]] = field(default_factory=dict)
    """Key -> the mark each native mutation writes (see :mod:`.mutations`)."""
    compared: dict[RefKey, list[tuple[ColumnMap, Any]]] = field(default_factory=dict)
    """Key -> the columns a native mutation writes whole, each with the value its ``wait`` compares."""
    dropped: dict[RefKey, list[str]] = field(default_factory=dict)
    """Key -> the marks the commit drops from the row (only rows that have some)."""
    mutated: list[tuple[int, RefKey]] = field(default_factory=list)
    """(position, key) of the native mutations: their versions are read from the replica afterwards."""
    unique: list[UniqueCheck] = field(default_factory=list)
    """The unique values the commit's rows hold afterwards (to name the holder when it is refused)."""
    written: dict[IdKey, Written] = field(default_factory=dict)
    """(table, id.int) -> each put row as written, its parents, its document and wire form (:meth:`.Replica.expect`)."""
    unchanged: frozenset[IdKey] = frozenset()
    """(table, id.int) of each put to a row without ``external_ids`` that changes none of its columns:
    nothing is written, and the object keeps the version it has (the replica sees no change to count)."""
    ledger: tuple[str, str, str] | None = None
    """(table, mark, stamp) of the commit's mark in the database's one-row configuration table
    (``NB_Global.external_ids``), when no row it writes can hold its token (see :func:`_plan_ledger`)."""
    base: int = 0
    """The replica's revision when the commit was planned: no change at or before it shows the commit."""
    settled: bool = False
    """Its reply was lost and it was settled as landed, from a replica synced after it (:func:`.settle.reflects`)."""
    ledger_dropped: Sequence[str] = ()
    """The writer's settled marks that the commit drops from that row."""
    bare: int = 0
    """How many puts are to rows without ``external_ids``: 0 (every ordinary commit) asks no ledger or stamp work."""
    refused: errors.ValidationError | None = None
    """Why the commit cannot be sent (no operations then), unless another row holds one of its
    :attr:`unique` values: the caller names that holder first (:meth:`.data.OvsdbDataApi._unique_holder`)."""

    def reason(self, index: int) -> tuple[str, Any]:
        """Why operation ``index`` is in the plan (``("commit", None)`` past the end)."""
        return self.reasons[index] if index < len(self.reasons) else ("commit", None)

    def stamp_of(self, key: IdKey) -> int:
        """The ``written`` stamp of row ``key`` as this commit put it (a key of :attr:`written`).

        The commit's token, which the row keeps; a row without ``external_ids`` keeps none, and its
        stamp is its content's (:func:`.rows.content_stamp`), as the replica stamps it when it shows it.
        """
        written = self.written[key]
        if EXTERNAL_IDS in written.row:
            return int(self.token, 16)
        return content_stamp(written.doc.state.digest)


_NO_PARENTS: Mapping[str, uuid.UUID] = {}


def _compared(tm: TableMap, stored: Mapping[str, Any]) -> list[str]:
    """``sorted(stored)``: the columns of a compare-and-swap ``wait`` on ``stored`` (a row's
    :func:`.rows.stored_columns`), sorted once per table instead of once per commit.

    The list is shared by the plans (nothing changes an operation once planned); a ``stored``
    of other columns than every mapped one and ``external_ids`` is sorted as it is. Kept on the
    map itself (``tm.compared``): it goes with the map when its Database is closed.
    """
    known = tm.compared
    if known is None:
        columns = [cm.column for cm in tm.columns.values()]
        if tm.external_ids is not None:
            columns.append(EXTERNAL_IDS)
        known = tm.compared = (frozenset(columns), sorted(columns))
    if len(stored) != len(known[1]) or not known[0].issuperset(stored):
        return sorted(stored)
    return known[1]


def _defaults(tm: TableMap) -> tuple[tuple[str, Any, ColumnMap], ...]:
    """Each mapped column of ``tm``, its :func:`.datum.default_cell` and map, made once per table (``tm.defaults``).

    An update compares its cells with the stored row's, and a stored row lacks the columns the
    server left at their defaults (a port: about ten): one default cell made per column and
    commit before. The cells are shared, so only compared with, never changed or handed out.
    """
    known = tm.defaults
    if known is None:
        known = tm.defaults = tuple((cm.column, default_cell(cm.type), cm) for cm in tm.columns.values())
    return known


@dataclass(slots=True)
class _Dropping:
    """The children ``wait`` of a row deleted whose set columns must hold a child (OVN's ``Meter.bands``).

    Those sets keep their members to the end (the row's delete drops them with it): the wait holds
    each to exactly the members the commit takes out of it, those it deletes and those it moves to
    another row, which the set still holds then. Any other (one the commit updates in place or leaves,
    one another writer added meanwhile) refuses the delete: nbdb then walks the row's children and
    plans again, instead of ovsdb-server collecting one unseen. A set the commit takes nothing out of
    waits for no row at all, so the delete is refused (the row is there: its "cas" wait).
    """

    children: list[str]
    """Every set column of the row holding children (empty at the wait: their children are gone)."""
    held: dict[str, set[str]]
    """Each column that must hold a child -> the members (uuid text) it holds at the wait."""
    rows: list[dict[str, Any]]
    """The wait's ``rows`` (its own list), filled by :meth:`fill` once every member is known."""

    def fill(self) -> None:
        if not all(self.held.values()):
            self.rows[:] = []
            return
        row: dict[str, Any] = {c: ["set", []] for c in self.children}
        for c, members in self.held.items():
            row[c] = ["set", [["uuid", m] for m in sorted(members)]]
        self.rows[:] = [row]


_Member = tuple[str, uuid.UUID, str, str]
"""(parent table, parent row, set column, "insert" or "delete") of a parent's set mutation."""

_MemberKey = tuple[str, int, str, str]
"""A :data:`_Member` with the parent row's id as its int (hashed in C, see :data:`.replica.IdKey`)."""


@dataclass(slots=True)
class _Stages:
    head: list[tuple[dict[str, Any], tuple[str, Any]]] = field(default_factory=list)
    body: list[tuple[dict[str, Any], tuple[str, Any]]] = field(default_factory=list)
    members: dict[_MemberKey, tuple[uuid.UUID, list[tuple[uuid.UUID, RefKey]]]] = field(default_factory=dict)
    """The children each parent's set gains or loses (with the parent row's id): one ``mutate`` each, after the body."""
    checks: list[tuple[dict[str, Any], tuple[str, Any]]] = field(default_factory=list)
    deletes: list[tuple[dict[str, Any], tuple[str, Any]]] = field(default_factory=list)
    tail: list[tuple[dict[str, Any], tuple[str, Any]]] = field(default_factory=list)
    weak: list[tuple[dict[str, Any], tuple[str, Any]]] = field(default_factory=list)
    """The waits on weak columns (``weakly_referenced``), after every other: the server stops at the first wait
    that fails, so a refusal that stands (a strong holder, a missing target) is the one it reports, never
    one another namespace's weak holders changing makes the commit plan again for (OvsdbFamily._commit)."""
    targets: set[IdKey] = field(default_factory=set)
    """The reference targets already checked (one ``wait`` each), as (table, id.int)."""
    unfilled: dict[tuple[str, int], tuple[dict[str, Any], tuple[str, ...], RefKey]] = field(default_factory=dict)
    """(OVSDB table, row id.int) of each row inserted whose set columns must hold a child (OVN's
    ``Meter.bands``: :attr:`.TableMap.held_at_least_one`) -> its insert's row, those columns, its key."""
    dropping: dict[tuple[str, int], _Dropping] = field(default_factory=dict)
    """(OVSDB table, row id.int) of each row deleted whose set columns must hold a child -> what its
    children wait holds: its children leave those columns with the row, not by a ``mutate`` (which
    the server refuses once the set is empty)."""

    def move_member(self, parent: _Member, child: uuid.UUID, key: RefKey) -> None:
        """``child`` (the object ``key``) joins or leaves a parent's set column."""
        ptable, row, column, how = parent
        found = self.members.get((ptable, row.int, column, how))
        if found is None:
            self.members[(ptable, row.int, column, how)] = (row, [(child, key)])
        else:
            found[1].append((child, key))

    def ops(self) -> list[tuple[dict[str, Any], tuple[str, Any]]]:
        """Every operation in commit order, with the reason for each."""
        mutates = []
        members: Iterable[tuple[_MemberKey, tuple[uuid.UUID, list[tuple[uuid.UUID, RefKey]]]]] = self.members.items()
        if len(self.members) > 1:
            # Every set gains its members before any loses one: a set that must never be empty (OVN's
            # Meter.bands) whose only member is replaced in one commit is refused if emptied first,
            # whatever the caller's order. It matters nowhere else: a set's two mutates move distinct members.
            members = sorted(members, key=_gains_first)
        for (ptable, row, column, how), (parent, moved) in members:
            filling = self.unfilled.get((ptable, row)) if how == "insert" and self.unfilled else None
            if filling is not None and column in filling[1]:
                # A set that must never be empty is written whole by its row's insert: the server
                # parses an empty one as a syntax error, and its default (one all-zero uuid) stays
                # beside the members a mutate adds. The children's inserts give their uuids.
                filling[0][column] = ["set", [["uuid", uuid_text(child)] for child, _ in moved]]
                continue
            dropping = self.dropping.get((ptable, row)) if how == "delete" and self.dropping else None
            if dropping is not None and column in dropping.held:
                # Left to the row's delete: its children wait finds these members still in the set (a
                # child this commit moves to another row, as well as one it deletes).
                dropping.held[column].update(uuid_text(child) for child, _ in moved)
                continue
            mutates.append(
                (mutate_members(ptable, parent, column, how, [child for child, _ in moved]), ("mutate", moved[0][1]))
            )
        for dropping in self.dropping.values():
            dropping.fill()
        for row_cells, columns, key in self.unfilled.values():
            for column in columns:
                if column not in row_cells:
                    raise errors.ValidationError(
                        f"{key[0]} {key[1]}: its table's {column} holds at least one row in OVSDB; create the "
                        "first object it holds in the same transaction"
                    )
        return [*self.head, *self.body, *mutates, *self.checks, *self.deletes, *self.tail, *self.weak]


def _gains_first(item: tuple[_MemberKey, Any]) -> bool:
    """The sort key of :meth:`_Stages.ops`'s set mutations: a set's "insert" before its "delete"."""
    return item[0][3] != "insert"


def _current(replica: Replica, op: WriteOp, bare: bool) -> Record | None:
    """The stored record ``op`` applies to, checked against what ``op`` expects (the shared rules).

    ``bare``: its table has no ``external_ids`` (its rows' stamps are their contents'), told by the table's
    map: a row of any other table holds a commit token or none (below :data:`.rows.CONTENT_STAMP`).
    """
    key = (op.table, op.id)
    record = replica.record(op.table, op.id)
    if isinstance(op, Put) and op.expect_version == 0:
        if record is not None:
            raise rules.already_exists(key)
        return None
    if record is None:
        if isinstance(op, Delete) and op.if_exists:
            return None
        raise rules.not_found(key)
    written = op.expect_written
    if (
        bare
        and written is not None
        and type(written) is not Revision
        and record.written is not None
        and record.written >= CONTENT_STAMP
    ):
        # A row without external_ids: its stamp is its content (rows.content_stamp), and the copy's is the
        # content it was read or written with. Another is a change the copy never saw, on any connection,
        # or a re-creation of other content: the plan's ``wait`` on the replica's row (the copy's content,
        # then) makes this compare the server's. It is the whole check: the version (each connection's count
        # of the contents it saw) is not compared, which refused an unchanged row's copy on a connection
        # started after it changed. A commit token (a result of a transaction that put other rows too) is
        # turned into the content that commit wrote the row with (rows.result_stamp); one not known here (an
        # unpickled result, another process's) is refused, never compared by its version alone.
        if written < CONTENT_STAMP:
            written = result_stamp(written, (op.table, op.id.int))
        if written != record.written:
            raise rules.changed_since_read(key, record.version)
    else:
        rules.expected_version(op, record.version)
        if written is not None:
            # Is the copy of an earlier creation of the id? The plan's ``wait`` on the row's exact stored
            # content (its ``nbdb:txn`` window included) makes what the replica shows the server's row at
            # commit, so this compare is atomic with the commit. A copy decoded from a record carries the
            # token of the nbdb commit that wrote it (rows.written_token, the same on every replica and
            # client): stale when the row's is another. A write's result carries its commit's revision, which
            # carries the commit's token (family._result, on every connection: another Database's result
            # too): the put carries that token (nbdb.models.base.written_of), compared as a read copy's. What
            # is left a Revision carries none (a mutation's read-back, whose row keeps the token of the commit
            # that put it; an unpickled or deep-copied result keeps its token,
            # nbdb.revision.Revision.__reduce__): compared with the clock: stale when it is of this
            # connection's and the replica saw the row change after it (at one version: deleted and created
            # again); another clock's says nothing here, compared by its version alone, as a copy built by
            # hand.
            if type(written) is Revision:
                stale = written.scope is replica.clock and written < replica.changed_at.get((op.table, op.id.int), 0)
            else:
                stale = rules.written_differs(written, record.written)
            if stale:
                raise rules.recreated(key, record.version)
    if record.topic != op.topic:
        raise rules.topic_changed(key, record.topic, op.topic)
    return record


def plan_commit(
    mapping: Mapping_,
    replica: Replica,
    ops: Sequence[WriteOp | Mutate],
    token: str,
    *,
    now: float | None = None,
    fence: str | None = None,
    book: MarkBook | None = None,
    ledger_drop: Callable[[], Sequence[str]] | None = None,
    elsewhere: Mapping[WeakWait, Sequence[str]] | None = None,
) -> Plan:
    """The OVSDB transaction of ``ops`` (call under ``replica.cond``).

    ``now`` is the wall-clock time the commit started (ttl deadlines and
    mutation marks are stamped with it); ``fence`` the OVSDB lock the
    commit asserts; ``book`` the writer's settled mutation marks (dropped
    from the rows it writes); ``ledger_drop`` gives its settled ledger marks (dropped
    by a commit that writes one, see :func:`_plan_ledger`; asked only then); ``elsewhere`` the rows of
    other namespaces a Database without one saw holding a deleted target weakly (see
    :func:`.holders.weak_holders_elsewhere`), which the commit's wait then expects. Raises the nbdb
    error the replica already shows
    (ConflictError, NotFoundError, ReferenceError, ValidationError,
    UnsupportedError; CorruptRecordError for an update of a row another writer
    set at a version nbdb cannot write past); the caller confirms it against a
    current replica before reporting it.
    """
    # Keyed by (table, id.int) (see :data:`.replica.IdKey`): a RefKey hashes its uuid.UUID in Python.
    deleted: dict[IdKey, RefKey]
    created: set[IdKey]
    mortal: set[IdKey]
    if len(ops) == 1:
        # One operation (every single write): what the general path below makes of it, for less.
        only = ops[0]
        db = mapping.get(only.table).db
        deleted = {(only.table, only.id.int): (only.table, only.id)} if isinstance(only, Delete) else {}
        created = {(only.table, only.id.int)} if isinstance(only, Put) and only.expect_version == 0 else set()
        mortal = {(only.table, only.id.int)} if isinstance(only, Put) and only.ttl is not None else set()
    else:
        dbs = {mapping.get(op.table).db for op in ops}
        if len(dbs) > 1:
            raise errors.UnsupportedError(
                f"a transaction spans the OVSDB databases {sorted(dbs)}; OVSDB commits one database at a time"
            )
        db = dbs.pop()
        shape = rules.shape_of(ops)
        deleted = {(t, i.int): (t, i) for t, i in shape.deleted}
        created = {(t, i.int) for t, i in shape.created}
        mortal = {(op.table, op.id.int) for op in ops if isinstance(op, Put) and op.ttl is not None}
    plan = Plan(db, token, replica.namespace, base=replica.revision)
    now = time.time() if now is None else now
    book = MarkBook() if book is None else book
    stages = _Stages()
    if fence is not None:
        stages.head.append((assert_lock(fence), ("fence", fence)))
    held: dict[tuple[str, str, str], RefKey] = {}
    new_refs: dict[IdKey, tuple[RefKey, frozenset[RefKey]]] = {}
    """(table, id.int) of each object the commit writes -> its key, and the references it holds afterwards."""
    for index, op in enumerate(ops):
        tm = mapping.get(op.table)
        key = (op.table, op.id)
        ikey = (op.table, op.id.int)
        if isinstance(op, Mutate):
            record = replica.record(op.table, op.id)
            if record is None:
                raise rules.not_found(key)
            if is_native(tm, op):
                new_refs[ikey] = (key, _plan_native(plan, stages, replica, tm, op, index, now, book))
                continue
            op = op.rebase(record)  # a compare-and-swap of the change applied to the stored object
        if isinstance(op, Put) and op.ttl is not None and op.expect_version != 0:
            raise errors.ValidationError(f"{op.table} {op.id}: a ttl is given when an object is created")
        bare = tm.external_ids is None
        record = _current(replica, op, bare)
        if record is None and isinstance(op, Delete):
            plan.skipped.add(index)  # delete if_exists of a record that is gone: nothing to do
            plan.versions.append(0)
            deleted.pop(ikey, None)
            continue
        plan.keys.append(key)
        row = None if record is None else replica.row(tm, op.id)
        # Read, not kept or changed: the replica's own map (a copy per commit cost more than the reads).
        old_parents = _NO_PARENTS if record is None else replica.parents_view(tm, op.id)
        where = where_uuid(op.id)
        if row is None:
            stages.head.append((wait(tm.db_table, where, []), ("absent", key)))
            plan.expected[ikey] = None
        else:
            stored = replica.stored_wire(tm, op.id, row)
            plan.expected[ikey] = stored
            stages.head.append((wait(tm.db_table, where, [stored], _compared(tm, stored)), ("cas", key)))
        if isinstance(op, Put):
            # Never 2**63 or more, which no read takes back (CorruptRecordError: see next_version).
            version = 1 if record is None else next_version(op.table, op.id, record.version)
            refs = _plan_put(plan, stages, tm, op, row, old_parents, version, now, book, where[0][2][1], bare)
            if bare:
                plan.bare += 1
                if record is not None and ikey in plan.unchanged:
                    version = record.version
            new_refs[ikey] = (key, refs)
            _plan_unique(plan, stages, tm, op, held)
            plan.puts[ikey] = version
            plan.versions.append(version)
        else:
            _plan_delete(plan, stages, mapping, tm, op, old_parents, row, deleted)
            new_refs[ikey] = (key, frozenset())
            plan.versions.append(0)
    # The empty sets and the one-element sorts are skipped, not asked: a RefKey hashes its uuid.UUID in
    # Python, and str() of one renders it (a single create's target made four such calls for nothing).
    for ikey, (key, refs) in new_refs.items():
        old = replica.refs.get(ikey, frozenset()) if not (created and ikey in created) else frozenset()
        added = refs - old
        for target in sorted(added, key=str) if len(added) > 1 else added:
            _check_target(plan, stages, mapping, replica, key, target, deleted, created, mortal)
    _check_held(mapping, created, new_refs)
    gone = deleted.values()
    for target in sorted(gone, key=str) if len(gone) > 1 else gone:
        _check_unreferenced(stages, mapping, replica, target, deleted, new_refs, elsewhere)
    puts_bare = plan.bare  # (0 for every commit of rows with external_ids: nothing below is asked then)
    if puts_bare and not plan.marks and puts_bare == len(plan.puts) and len(plan.unchanged) < puts_bare:
        # (Unless every put changes nothing: a no-op writes nothing, not even a mark.)
        _plan_ledger(plan, stages, mapping, db, now, ledger_drop)
    try:
        staged = stages.ops()
    except errors.ValidationError as exc:
        if not plan.unique:
            raise
        # A new row whose set must hold a child, created without one: refused before anything is sent.
        # Unless another row holds one of its unique values (a meter's name): that is the error the
        # server's index gives, which create(may_exist=True) takes the holder from. The caller asks.
        plan.refused = exc
        return plan
    for op_json, reason in staged:
        plan.ops.append(op_json)
        plan.reasons.append(reason)
    return plan


def _check_held(
    mapping: Mapping_, created: set[IdKey], new_refs: Mapping[IdKey, tuple[RefKey, frozenset[RefKey]]]
) -> None:
    """Refuse a new row of a non-root table that no row of the commit references.

    ovsdb-server deletes such a row as its transaction commits (a generated model's table
    with ``"isRoot": false``, whose parents hold the references): the create returned an
    object that was never there, after waiting its whole timeout for the monitor to show it.
    Tables whose rows nbdb puts in their parents itself (a parent field) are held by that.
    """
    orphans = [k for k in created if not (tm := mapping.get(k[0])).is_root and not tm.parents]
    if not orphans:
        return
    held = {(t, i.int) for _, refs in new_refs.values() for t, i in refs}
    for table, idint in orphans:
        if (table, idint) not in held:
            raise errors.UnsupportedError(
                f"{table} {uuid.UUID(int=idint)}: rows of {mapping.get(table).db_table} live only while another "
                "row references them, and none of this commit does (OVSDB would delete it as it commits): "
                "create it in the transaction that writes its referrer"
            )


def _plan_native(
    plan: Plan, stages: _Stages, replica: Replica, tm: TableMap, op: Mutate, index: int, now: float, book: MarkBook
) -> frozenset[RefKey]:
    """A native mutation of a stored row; the references the row holds afterwards."""
    key = (op.table, op.id)
    row = replica.row(tm, op.id) or {}
    plan.dropped[key] = book.droppable(key, row.get(EXTERNAL_IDS) or {}, now)
    mutation = plan_mutation(tm, op, plan.dropped[key], plan.token, now, row)
    stages.head += mutation.head
    stages.body += mutation.body
    plan.keys.append(key)
    plan.marks[key] = mutation.mark
    if mutation.compared:
        plan.compared[key] = mutation.compared
    plan.mutated.append((index, key))
    plan.versions.append(0)  # read from the replica once it shows the commit
    return frozenset((replica.refs.get((op.table, op.id.int), frozenset()) - mutation.removed) | mutation.added)


def _refuse_unchecked(tm: TableMap, op: Put) -> None:
    """ValidationError if ``op`` writes a newer schema's enum value where the server checks no enum.

    Such a value was read from a column whose enum admits it (:attr:`.mapping.TableMap.newer`); a
    column without an enum (the model database's text, JSON, ``external_ids``) would take it, and
    the row would then read as corrupt. A column with an enum is left to the server: it refuses
    what its own enum lacks (an older schema's), which the commit reports as a ValidationError.
    """
    held = {name: texts for name, texts in enums.newer_held(op.value).items() if name not in tm.enum_checked}
    if held:
        shown = enums.shown_held(held)
        raise errors.ValidationError(
            f"{op.table} {op.id} holds values a newer schema added to its enums ({shown}), which "
            f"{tm.db}.{tm.db_table} keeps where the server checks no enum: it could not read them back"
        )


def _plan_put(
    plan: Plan,
    stages: _Stages,
    tm: TableMap,
    op: Put,
    row: Mapping[str, Any] | None,
    old_parents: Mapping[str, uuid.UUID],
    version: int,
    now: float,
    book: MarkBook,
    id_text: str,
    bare: bool,
) -> frozenset[RefKey]:
    """The operations of a put; the references of its row as written. ``id_text``: ``str(op.id)``, made already;
    ``bare``: ``tm`` has no ``external_ids`` (told once by the caller, from the table's map)."""
    try:
        doc = _loads(op.data)
    except ValueError:
        raise errors.ValidationError(f"{op.table} {op.id}: record is not JSON") from None
    if not isinstance(doc, dict):
        raise errors.ValidationError(f"{op.table} {op.id}: record is not a JSON object")
    if enums.MADE and op.value is not None:
        _refuse_unchecked(tm, op)
    new = new_row(tm, doc)
    cells, wire, ext, parents, values = new
    if bare:
        _check_bare(tm, op, plan.namespace)
    if op.topic is not None:
        ext[EXT_TOPIC] = op.topic
    if plan.namespace:
        ext[EXT_NAMESPACE] = plan.namespace
    ext[EXT_VERSION] = str(version)
    stored_ext: Mapping[str, str] = {} if row is None else (row.get(EXTERNAL_IDS) or {})
    ext[EXT_TXN] = push_window(stored_ext.get(EXT_TXN), plan.token, version)
    key = (op.table, op.id)
    if row is not None:
        kept, dropped = _bookkeeping(book, key, stored_ext, now)
        if dropped:
            plan.dropped[key] = dropped  # none (nearly always): no entry, nothing for the book to settle
        ext.update(kept)
    for name, text in stored_ext.items():
        # A field a newer version of nbdb keeps in external_ids, which this one does not know (it reads
        # around it): written back as it was, or this update would erase it.
        if name.startswith(EXT_FIELD) and name not in ext and name[len(EXT_FIELD) :] not in tm.known:
            ext[name] = text
    if op.ttl is not None:
        ext[EXT_TTL] = repr(float(op.ttl))
        ext[EXT_EXPIRES] = f"{now + op.ttl:.3f}"
    changed: dict[str, Any] = {}
    mutations: list[list[Any]] = []
    respelled: list[ColumnMap] = []  # columns kept in another writer's spelling (see .spellings)
    if row is not None:
        # Only what changes: less to encode, and the server rewrites less. A cell that differs as text
        # but reads as the new one (another writer's spelling, "0A:00:00:00:00:01") is not changed:
        # it is kept as stored, and written so (see .spellings). A set or map that changes is written
        # as its difference, behind the compare-and-swap's wait (see .delta).
        for c, default, cm in _defaults(tm):
            stored = row.get(c, default)  # a column the stored row lacks holds its default
            if cells[c] == stored:
                continue
            known: dict[str, Any] = {}  # the stored atoms read once, for both (see .spellings._reads)
            if keep_spelling(tm, cm, stored, new, doc.get(cm.field), known):
                respelled.append(cm)
                continue
            before = values.get(cm.field)
            delta = column_delta(tm, cm, stored, new, op.id.int, known)
            if values.get(cm.field) is not before:
                respelled.append(cm)
            if delta is None:
                changed[c] = wire[c]
            else:
                mutations += delta
    if bare:
        # No external_ids to write nbdb's bookkeeping in: the row is its mapped columns alone. An
        # update that changes none of them is no write at all (the server would show no change):
        # the object keeps its version (see Plan.unchanged).
        ext = {}
        if row is not None and not changed and not mutations:
            plan.unchanged |= {(op.table, op.id.int)}  # (rare: no set made for every plan)
    written: Row = dict(cells) if bare else {**cells, EXTERNAL_IDS: ext}
    # Rendered once here (its digest is stored in the row), and kept: the replica takes this
    # document when the update shows the row as written, instead of rendering it again.
    optional, loose = _read_back(tm)
    source = source_as_written(tm, respelled, values, doc) if respelled else doc
    rendered, same = render_written_as(tm, op.id, written, parents, values, source, optional, loose, id_text)
    if not bare:
        wire[EXTERNAL_IDS] = wire_map(ext.items())
    # The stored copy the Database validated, for the readers of the row read back as written: only
    # if the row's document is the copy's exactly (a mapping that reads a field back otherwise,
    # another's value: they decode it), and if nothing in the copy can change in place (a list
    # inside a map, a nested model: the caller of the write holds this very copy).
    value = op.value if same and op.value is not None and sealed(op.value, loose) else None
    plan.written[(op.table, op.id.int)] = Written(written, parents, rendered, to_keep(wire), value)
    keys = key_cells(tm, plan.namespace, op.id, op.unique)
    if row is None:
        inserted: dict[str, Any] = {**wire, **keys}
        insert = {"op": "insert", "table": tm.db_table, "uuid": id_text, "row": inserted}
        if tm.held_at_least_one:
            stages.unfilled[(tm.db_table, op.id.int)] = (inserted, tm.held_at_least_one, key)
        stages.body.append((insert, ("insert", key)))
    else:
        if not bare:
            changed[EXTERNAL_IDS] = wire[EXTERNAL_IDS]
        changed.update(keys)
        where = [["_uuid", "==", ["uuid", id_text]]]
        if changed:
            update = {"op": "update", "table": tm.db_table, "where": where, "row": changed}
            stages.body.append((update, ("update", key)))
        if mutations:
            mutate = {"op": "mutate", "table": tm.db_table, "where": where, "mutations": mutations}
            stages.body.append((mutate, ("update", key)))
    for name, (ptable, pcol) in tm.parents.items():
        before, after = old_parents.get(name), parents.get(name)
        if (None if before is None else before.int) == (None if after is None else after.int):  # compared in C
            if before is not None:
                # The replica's own id object (the written row's parents are its map's): the monitor
                # compares the two maps when the update arrives, by identity then, not UUID.__eq__.
                parents[name] = before
            continue
        if before is not None:
            stages.move_member((ptable, before, pcol, "delete"), op.id, key)
        if after is not None:
            stages.move_member((ptable, after, pcol, "insert"), op.id, key)
    for rule in tm.unique:
        # The schema's own indexes that no model declares: the server keeps them, the plan names them.
        value = None if rule.declared else doc_value(rule, doc)
        if value is None and rule.indexed and rule.key_column is None and all(doc.get(f) is None for f in rule.fields):
            # Left unset under an index of the schema on its own columns: ovsdb-server counts two empty
            # values as equal (memory and SQL stores do not) and refuses a second such row; the plan
            # names the unset value too, so that the refusal names its holder as any other does.
            value = unset_value(rule)
        if value is not None:
            plan.unique.append(UniqueCheck(key, rule, value))
    # The references of the document as it will be read back: the written row's, rendered above
    # (refs_of(tm, doc) gives the same set: each reference field renders from its own cell).
    return rendered.refs


def _plan_ledger(
    plan: Plan, stages: _Stages, mapping: Mapping_, db: str, now: float, ledger_drop: Callable[[], Sequence[str]] | None
) -> None:
    """The commit's mark in the *ledger*, when every row it puts lacks ``external_ids`` (OVN's ``Load_Balancer_Group``).

    Such a row keeps no commit token, and its content says nothing after a lost reply (it may have
    met the commit and been put back by another writer since). The commit then marks the database's
    one-row configuration table instead (``NB_Global.external_ids:nbdb:m:<token>``, holding its expiry:
    :data:`.rows.LEDGER_SETTLE`), and waits first for that mark to be absent and for the row to exist (without it the
    mark would land nowhere): whether the mark is there tells whether it landed, a copy sent again lands
    at most once, and a copy refused by the mark says the first landed. The writer drops its settled marks
    at its next such commit; a database without such a table (a generated schema) has none, and a lost
    reply there is CommitUnknownError unless another row of the commit tells.
    """
    table = LEDGER_TABLES.get(db)
    schema = mapping.schemas.get(db)
    if table is None or schema is None or (tschema := schema.table(table)) is None:
        return
    if EXTERNAL_IDS not in tschema.columns:
        return
    drop = () if ledger_drop is None else ledger_drop()
    mark, stamp = mark_of(plan.token, now)  # (holding its expiry: see rows.LEDGER_SETTLE)
    marked = wire_map([(mark, stamp)])
    present: dict[str, Any] = {
        "op": "wait",
        "table": table,
        "timeout": 0,
        "where": [],
        "columns": [],
        "until": "!=",
        "rows": [],
    }
    absent = wait(table, [[EXTERNAL_IDS, "includes", marked]], [])
    mutations: list[list[Any]] = [[EXTERNAL_IDS, "insert", marked]]
    if drop:
        mutations.insert(0, [EXTERNAL_IDS, "delete", ["set", sorted(drop)]])
    at = 1 if stages.head and stages.head[0][0]["op"] == "assert" else 0
    stages.head[at:at] = [(absent, ("marked", None)), (present, ("ledger", table))]
    mutate = {"op": "mutate", "table": table, "where": [], "mutations": mutations}
    stages.body.append((mutate, ("ledger", table)))
    plan.ledger = (table, mark, stamp)
    plan.ledger_dropped = sorted(drop)


def _check_bare(tm: TableMap, op: Put, namespace: str) -> None:
    """Refuse a put to a table without ``external_ids`` of what only ``external_ids`` could hold."""
    for what, given in (("a topic", op.topic is not None), ("a ttl", op.ttl is not None), ("a namespace", namespace)):
        if given:
            raise errors.UnsupportedError(f"{op.table} {op.id}: {no_external_ids(tm, what)}")


def _bookkeeping(book: MarkBook, key: RefKey, ext: Mapping[str, str], now: float) -> tuple[dict[str, str], list[str]]:
    """What an update keeps of its stored row's bookkeeping (``ext``: its ``external_ids``), and the marks it drops:
    ``carried(ext, now, dropped)`` and ``dropped = book.droppable(key, ext, now)``.

    A row without a mark (nearly every one) has none to drop: every mark a writer settled or finds
    stale is one of the row's keys. Then only its expiry is carried, without asking the book.
    """
    for name in ext:
        if name.startswith(EXT_MARK):
            dropped = book.droppable(key, ext, now)
            return carried(ext, now, dropped), dropped
    return {name: ext[name] for name in _EXPIRY if name in ext}, []


_EXPIRY = (EXT_TTL, EXT_EXPIRES)


_DIGITS = bytes.maketrans(b"012345678", b"999999999")
_LONG_NUMBER = b"9" * 19  # 2**63 has 19 digits: every integer orjson does not hold in 64 bits has as many


_READ_BACK: dict[int, tuple[ModelShape, dict[str, Any], tuple[str, ...]]] = {}
"""id of a model's shape -> the shape (kept, so the id is not reused) and :func:`_read_back` of it."""


def _read_back(tm: TableMap) -> tuple[dict[str, Any], tuple[str, ...]]:
    """What :func:`.rows.reads_back_as` needs of ``tm``'s model: the fields a rendered document may
    leave out (those kept in ``external_ids`` that are not required) with their defaults' JSON, and
    the fields of no one atomic kind (``json``), whose values keep their JSON types when decoded."""
    known = _READ_BACK.get(id(tm.shape))
    if known is None or known[0] is not tm.shape:
        fields = {f.name: f for f in tm.shape.fields}
        optional = {
            name: fields[name].default for name in tm.ext_fields if name in fields and not fields[name].required
        }
        loose = tuple(f.name for f in tm.shape.fields if f.kind == "json")
        known = _READ_BACK[id(tm.shape)] = (tm.shape, optional, loose)
    return known[1], known[2]


def _loads(data: bytes) -> Any:
    """``json.loads(data)``, parsed by orjson where it can (≈ 4x less CPU per port document).

    What orjson refuses and ``json`` reads (an escaped lone surrogate, NaN, UTF-16) goes to
    ``json``, so the result, and the error of bytes that are no JSON, are ``json``'s. An integer
    beyond 64 bits orjson reads as a float, without an error: bytes holding a run of 19 digits
    anywhere (in a string too: no matter, it is only slower) go to ``json`` first.
    """
    if _LONG_NUMBER in data.translate(_DIGITS):
        return json.loads(data)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def _plan_unique(plan: Plan, stages: _Stages, tm: TableMap, op: Put, held: dict[tuple[str, str, str], RefKey]) -> None:
    """The unique values a put holds: one holder per value in the commit, and a ``wait`` where no index keeps it."""
    key = (op.table, op.id)
    kept = set(op.old_unique or ()) if op.expect_version else set()
    for value in op.unique:
        other = held.setdefault((op.table, value.field, value.value), key)
        if other != key:
            raise rules.unique_taken(op.table, value.field, value.value, other[1])
        rule = tm.unique_rule(value.field)
        if rule is None:
            continue
        plan.unique.append(UniqueCheck(key, rule, value.value))
        if rule.indexed or value in kept:
            continue  # the server's index refuses a second holder; a value kept needs no new check
        where = [*holder_where(tm, rule, plan.namespace, value.value), ["_uuid", "!=", ["uuid", uuid_text(op.id)]]]
        stages.tail.append((wait(tm.db_table, where, []), ("unique", len(plan.unique) - 1)))


def _plan_delete(
    plan: Plan,
    stages: _Stages,
    mapping: Mapping_,
    tm: TableMap,
    op: Delete,
    old_parents: Mapping[str, uuid.UUID],
    row: Row | None,
    deleted: Mapping[IdKey, RefKey],
) -> None:
    key = (op.table, op.id)
    for name, (ptable, pcol) in tm.parents.items():
        parent = old_parents.get(name)
        if parent is not None:
            stages.move_member((ptable, parent, pcol, "delete"), op.id, key)
    # Children held in this row's set columns must be gone (or going) first.
    child_columns = sorted({link.column for link in mapping.links.get((tm.db, tm.db_table), ())})
    if child_columns:
        rows: list[dict[str, Any]] = [{c: ["set", []] for c in child_columns}]
        if tm.held_at_least_one:
            # A set that must never be empty (OVN's Meter.bands): see _Dropping, which fills ``rows``.
            going = {c: set(_going(mapping, tm, c, row, deleted)) for c in tm.held_at_least_one}
            stages.dropping[(tm.db_table, op.id.int)] = _Dropping(child_columns, going, rows)
        stages.checks.append((wait(tm.db_table, where_uuid(op.id), rows, child_columns), ("children", key)))
    stages.deletes.append(({"op": "delete", "table": tm.db_table, "where": where_uuid(op.id)}, ("delete", key)))


def _going(mapping: Mapping_, tm: TableMap, column: str, row: Row | None, deleted: Mapping[IdKey, RefKey]) -> list[str]:
    """The members (uuid text, as a row holds them) of a stored row's set ``column`` that the commit deletes, sorted."""
    cell = None if row is None else row.get(column)
    held = list(cell) if isinstance(cell, (set, frozenset, list, tuple)) else [] if cell is None else [cell]
    children = [link.child.table for link in mapping.links.get((tm.db, tm.db_table), ()) if link.column == column]
    return sorted(m for m in held if any((t, uuid.UUID(str(m)).int) in deleted for t in children))


def _check_target(
    plan: Plan,
    stages: _Stages,
    mapping: Mapping_,
    replica: Replica,
    key: RefKey,
    target: RefKey,
    deleted: Mapping[IdKey, RefKey],
    created: set[IdKey],
    mortal: set[IdKey],
) -> None:
    tkey = (target[0], target[1].int)
    if deleted and tkey in deleted:
        raise rules.deleted_alongside(key, target)
    if mortal and tkey in mortal:
        raise rules.ttl_referenced(key, target)
    if (created and tkey in created) or (stages.targets and tkey in stages.targets):
        return
    if replica.expiring and target in replica.expiring:
        # A ttl is given at creation and kept for life: what the replica shows of it is exact.
        raise rules.ttl_referenced(key, target)
    ttm = mapping.get(target[0])
    if ttm.db != plan.db:
        # Another database: no atomic check is possible; the replica must show it.
        if replica.record(*target) is None:
            raise errors.ReferenceError(f"{key[0]} {key[1]} references {target[0]} {target[1]}, which does not exist")
        return
    stages.targets.add(tkey)
    stages.tail.append((wait(ttm.db_table, where_uuid(target[1]), [{}]), ("target", (key, target))))


def _check_unreferenced(
    stages: _Stages,
    mapping: Mapping_,
    replica: Replica,
    target: RefKey,
    deleted: Mapping[IdKey, RefKey],
    new_refs: Mapping[IdKey, tuple[RefKey, frozenset[RefKey]]],
    elsewhere: Mapping[WeakWait, Sequence[str]] | None = None,
) -> None:
    ttm = mapping.get(target[0])
    checked: set[str] = set()
    for stm in mapping.tables.values():
        waited = everywhere = False
        for name, (to, storage) in stm.refs.items():
            if to != target[0]:
                continue
            if storage != "column" or stm.db != ttm.db:
                everywhere = True  # a field of it kept as JSON text, or across databases: the replica's check
                continue
            waited = True
            cm = stm.columns[name]
            weak = cm.type.key.ref_type == "weak"
            if stm.external_ids is None and weak:
                # A table without external_ids: a plain delete does not rewrite its row (nbdb.cascade plans no drop
                # it need not); ovsdb-server drops the weak reference in the same commit, as the row goes.
                continue
            if cm.type.is_set:
                where = [[cm.column, "includes", ["set", [["uuid", uuid_text(target[1])]]]]]
            else:
                where = [[cm.column, "==", ["uuid", uuid_text(target[1])]]]
            if weak and replica.namespace:
                # A weak holder is waited for only as one this Database's plan must rewrite (nbdb.cascade drops
                # the reference from each it reads): one of its namespace the replica did not show yet fails
                # the wait, and the delete is planned again. Another namespace's or client's row (ovn-nbctl's)
                # it can neither read nor rewrite: ovsdb-server drops that reference as the target goes, as
                # after `ovn-nbctl lsp-del`, and a weak reference refuses no plain delete.
                where.append(in_namespace(replica.namespace))
            others = elsewhere.get(((target[0], target[1].int), stm.db_table, cm.column), ()) if elsewhere else ()
            if weak and others:
                # A Database without a namespace (no clause selects the rows without an nbdb:ns): the rows of
                # other namespaces it saw holding the target are expected, and any other one fails the wait.
                rows = [{"_uuid": ["uuid", other]} for other in others]
                stages.weak.append((wait(stm.db_table, where, rows, ["_uuid"]), ("weakly_referenced", target)))
                continue
            if weak:
                # Its own reason: only its refusal can be another namespace's holders changing (see
                # OvsdbFamily._commit); a strong column's is a holder that refuses the delete, diagnosed at once.
                stages.weak.append((wait(stm.db_table, where, []), ("weakly_referenced", target)))
                continue
            stages.tail.append((wait(stm.db_table, where, []), ("referenced", target)))
        if waited and not everywhere:
            # Every field of this table that can point to the target is a column the waits cover. A table
            # with another field kept as JSON text (a column and a JSON list of one target) is checked
            # against the replica too: skipped here, its JSON field's references were never checked.
            checked.add(stm.table)
    # References kept as JSON text or across databases: checked against the replica (not atomic).
    holders: list[RefKey] = []
    # The replica's own map read, a RefKey built only for a holder: most objects deleted have no referrer.
    for skey, sid in replica.referrers_view(*target).items():
        if skey in deleted or skey[0] in checked:
            continue
        now = new_refs.get(skey)
        if now is not None and target not in now[1]:
            continue  # this commit drops the reference
        src = (skey[0], sid)
        source = mapping.tables.get(src[0])
        if source is not None and any(
            to == target[0] and (storage == "ext" or source.db != ttm.db) for to, storage in source.refs.values()
        ):
            holders.append(src)
    if holders:
        raise rules.still_referenced(target, sorted(holders, key=str))
