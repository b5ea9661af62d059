"""The monitored copy of the mapped tables, their records, and a bounded change history.

A backend's monitor feeds it one server transaction at a time
(:meth:`Replica.apply`, the ``table-updates2`` of one ``update2``/``update3``
notification), or a catch-up after a reconnect: the changes since the last
transaction id merged by the server (:meth:`Replica.apply` with
``synthetic=True``) or, when the server kept no history, the whole state
(:meth:`Replica.resync`). A catch-up becomes one *synthetic* batch of changes:
the exact difference, delivered flagged, since it is several commits merged.

Rows are kept as cells (:mod:`.datum`), updated in place by the diffs, and the
child -> parent index is updated from the elements a parent's set column
toggled, so a change costs what it touches, never the size of a sibling set.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol

from nbdb.families.ovsdb.datum import ColumnType, apply_diff, cell_from_wire
from nbdb.families.ovsdb.mapping import EXTERNAL_IDS, Mapping_, TableMap
from nbdb.families.ovsdb.ops import parse_uuid, uuid_text
from nbdb.families.ovsdb.rows import (
    EXT_EXPIRES,
    EXT_PARENT,
    EXT_TXN,
    Doc,
    KeptMap,
    Row,
    Shared,
    VersionBook,
    Written,
    apart,
    content_stamp,
    kept_wire,
    parse_window,
    plain_state,
    render,
    same_content,
    stored_columns,
    written_token,
    written_version,
)
from nbdb.spi import Record, RecordChange, RefKey

_new_tuple = tuple.__new__

IdKey = tuple[str, int]
"""A table and an object's id as its int: how the replica keys what it holds by id.

A ``uuid.UUID`` hashes and compares in Python (``UUID.__hash__``, ``__eq__``: about 30 calls of
each per update when rows, records and the rows a commit wrote were keyed by it); its ``int`` does
both in C. The public reads (:meth:`Replica.record`, :meth:`Replica.row`, ...) take the id as a
``uuid.UUID`` still and hand back the same records."""

__all__ = ["Replica", "RevisionClock"]

log = logging.getLogger(__name__)

_NO_PARENTS: Mapping[str, uuid.UUID] = {}
"""The parents of a row that has none (shared, never changed)."""


_NO_REFERRERS: Mapping[IdKey, uuid.UUID] = {}
"""The referrers of an object nothing references (shared, never changed)."""

HISTORY = 10_000
"""Changes kept for watches resuming from an older revision."""

_WRITTEN_LIMIT = 4096
"""Rows rendered by plans and not yet seen again that :meth:`Replica.expect` keeps at most (the oldest go
first; one commit's rows are all kept, however many)."""


class Sink(Protocol):
    """A stream that takes its changes on the applying thread (see :meth:`Replica.add_sink`)."""

    @property
    def closed(self) -> bool: ...

    def hand_over(self) -> None: ...


class RevisionClock:
    """Revisions of one connection: ordered, shared by every replica the connection feeds.

    OVSDB's resume tokens are transaction-id UUIDs, not ordered numbers, so
    revisions are counted here, from the connection's start time in
    microseconds (so two connections rarely hand out the same numbers).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = time.time_ns() // 1000

    def tick(self) -> int:
        """A new revision, larger than every one before."""
        with self._lock:
            self._last += 1
            return self._last

    def now(self) -> int:
        """The last revision handed out."""
        return self._last


class _View:
    """The rows of one database and the child -> parent index built from the parents' set columns."""

    def __init__(self, mapping: Mapping_, db: str, filtered: bool = False) -> None:
        self.db = db
        self.filtered = filtered
        """Parent rows of other topics than the replica's are not sent to it."""
        schema = mapping.schemas[db]
        self.types: dict[str, dict[str, ColumnType]] = {
            table: {c: schema.tables[table].columns[c].type for c in columns if c in schema.tables[table].columns}
            for table, columns in mapping.monitor_columns(db).items()
        }
        self.maps = {table: maps for (mdb, table), maps in mapping.by_db_table.items() if mdb == db}
        self.own_parents: dict[str, frozenset[str]] = {}
        """Model table -> its parent fields, for a model whose table another model maps with other parent
        fields (nbdb's Logical_Switch_Port names its switch ``switch``, one generated from the schema
        ``logical_switch``): a child's map in :attr:`parents` holds its parents under every model's
        names, and each model reads its own alone (see Replica._render)."""
        for maps in self.maps.values():
            every = {name for tm in maps for name in tm.parents}
            for tm in maps:
                if tm.parents.keys() != every:
                    self.own_parents[tm.table] = frozenset(tm.parents)
        # The columns a table's records are rendered from: a change of only others (a parent's
        # set of children) leaves the parent's record as it is.
        self.rendered = {table: {c for tm in maps for c in tm.monitored_columns()} for table, maps in self.maps.items()}
        self.links = {ptable: links for (pdb, ptable), links in mapping.links.items() if pdb == db}
        # Keyed by the id's int (see IdKey).
        self.rows: dict[str, dict[int, Row]] = {table: {} for table in self.types}
        self.parents: dict[IdKey, Mapping[str, uuid.UUID]] = {}
        """(child table, child) -> its parents by field. Never changed in place (replaced, see :meth:`_held`):
        a child with one parent shares its map with its siblings (:attr:`_one_parent`)."""
        self._one_parent: Shared[tuple[str, int], Mapping[str, uuid.UUID]] = Shared()
        """(field, parent id's int) -> ``{field: parent}``, the one map of every child whose only parent that is:
        one dict per child was one more object per port the cyclic collector walked (a port has its
        switch alone)."""
        # (child table, child, field) -> every parent row whose set holds the child, kept only while
        # more than one does (another writer added the child to a second parent's set; nbdb never does).
        self.shared: dict[tuple[str, int, str], set[uuid.UUID]] = {}

    def decode(self, table: str, wire: Mapping[str, Any]) -> Row:
        types = self.types[table]
        row: Row = {}
        for column, datum in wire.items():
            ctype = types.get(column)
            if ctype is not None:
                try:
                    row[column] = cell_from_wire(ctype, datum)
                except (ValueError, TypeError) as exc:
                    log.warning("ovsdb: %s.%s holds a value of the wrong type (%s); ignored", table, column, exc)
        return row

    def _link(
        self,
        table: str,
        parent: uuid.UUID,
        column: str,
        added: Iterable[Any],
        removed: Iterable[Any],
        touched: dict[IdKey, uuid.UUID],
    ) -> None:
        for link in self.links.get(table, ()):
            if link.column != column:
                continue
            child_table = link.child.db_table
            for member in removed:
                cid = _uuid(member)
                if cid is None:
                    continue
                n = cid.int
                held = self.parents.get((child_table, n))
                others = self.shared.get((child_table, n, link.field))
                if others is not None:
                    others.discard(parent)
                # The same id object as a rule (both parsed once, see ops.parse_uuid): ``is`` first, as a
                # dict's comparison does, before UUID.__eq__ (Python code).
                if held is not None and ((now := held.get(link.field)) is parent or now == parent):
                    if others:
                        # Still in another parent's set: that one holds it now (it was dropped, and
                        # the child vanished although a parent still held it).
                        self._held(child_table, n, held, link.field, min(others))
                    elif len(held) == 1:
                        del self.parents[(child_table, n)]  # its only parent (the common case)
                    else:
                        self._held(child_table, n, held, link.field, None)
                if others is not None and len(others) < 2:
                    del self.shared[(child_table, n, link.field)]
                touched[(link.child.table, n)] = cid
            for member in added:
                cid = _uuid(member)
                if cid is None:
                    continue
                n = cid.int
                held = self.parents.get((child_table, n), _NO_PARENTS)
                before = held.get(link.field)
                if before is not None and before is not parent and before != parent:
                    # Another writer put the child in a second parent's set: the model has one parent.
                    self.shared.setdefault((child_table, n, link.field), {before}).add(parent)
                elif before is not parent:
                    self._held(child_table, n, held, link.field, parent)
                touched[(link.child.table, n)] = cid

    def _held(
        self, child_table: str, n: int, held: Mapping[str, uuid.UUID], field: str, parent: uuid.UUID | None
    ) -> None:
        """The child ``(child_table, n)`` held in ``field`` by ``parent`` now (None: by none), its map
        ``held`` before: a new map replaces it, never changed in place (siblings may share it)."""
        key = (child_table, n)
        if not held or (len(held) == 1 and field in held):
            # The common case, a child's only parent field: no map built to find the shared one.
            if parent is None:
                self.parents.pop(key, None)
            else:
                self.parents[key] = self._one(field, parent)
            return
        now = {name: p for name, p in held.items() if name != field}
        if parent is not None:
            now[field] = parent
        if not now:
            self.parents.pop(key, None)
        elif len(now) == 1:
            ((name, p),) = now.items()
            self.parents[key] = self._one(name, p)
        else:
            self.parents[key] = now

    def _one(self, field: str, parent: uuid.UUID) -> Mapping[str, uuid.UUID]:
        """``{field: parent}``, the map every child held by ``parent`` alone shares (see :attr:`_one_parent`)."""
        key = (field, parent.int)
        return self._one_parent.get(key) or self._one_parent.keep(key, {field: parent})

    def put(self, table: str, id: uuid.UUID, row: Row | None, touched: dict[IdKey, uuid.UUID]) -> None:
        """Store (or with None remove) a whole row."""
        rows = self.rows.setdefault(table, {})
        old = rows.pop(id.int, None)
        if row is not None:
            rows[id.int] = row
        for column in {link.column for link in self.links.get(table, ())}:
            before = _members(old, column)
            after = _members(row, column)
            self._link(table, id, column, after - before, before - after, touched)

    def modify(
        self, table: str, id: uuid.UUID, diff: Mapping[str, Any], touched: dict[IdKey, uuid.UUID]
    ) -> bool | None:
        """Apply an update2 ``modify``: None if the row is unknown, else whether its record may change."""
        row = self.rows.get(table, {}).get(id.int)
        if row is None:
            return None
        types = self.types[table]
        for column, datum in diff.items():
            ctype = types.get(column)
            if ctype is None:
                continue
            try:
                cell, toggled = apply_diff(ctype, row.get(column), datum)
            except (ValueError, TypeError) as exc:
                log.warning("ovsdb: %s.%s: a diff does not fit the column (%s); ignored", table, column, exc)
                continue
            row[column] = cell
            if toggled is not None and table in self.links:
                self._link(table, id, column, toggled.added, toggled.removed, touched)
        rendered = self.rendered.get(table)
        return rendered is not None and not rendered.isdisjoint(diff)


def _hinted_parents(view: _View, tm: TableMap, row: Row) -> tuple[dict[str, uuid.UUID], dict[str, uuid.UUID]]:
    """The parents nbdb wrote in a child whose parent rows this replica does not follow, and the
    hints it does follow whose rows no longer hold the child.

    A topic-filtered replica follows the parent rows of its topics only: a child of a parent of
    another topic is placed by its hint; a parent row it does follow that does not hold the child
    wins over the hint (another writer moved the child away).
    """
    ext = row.get(EXTERNAL_IDS) or {}
    out: dict[str, uuid.UUID] = {}
    gone: dict[str, uuid.UUID] = {}
    for name, (ptable, _column) in tm.parents.items():
        parent = _uuid(ext.get(EXT_PARENT + name, ""))
        if parent is None:
            continue
        if parent.int not in view.rows.get(ptable, {}):
            out[name] = parent
        elif view.filtered:
            gone[name] = parent
    return out, gone


def _commits_since(before: tuple[str, int, str] | None, row: Row | None) -> int:
    """How many nbdb commits a row's token window shows after the state ``before`` (None: ever).

    ``before``: a :class:`.rows.RowState` as ``Replica.states`` keeps it (a plain tuple).

    Every nbdb write pushes its token and version to ``nbdb:txn``, so two
    entries newer than the version seen before mean a commit was skipped.
    Writers that keep no tokens (ovn-nbctl) leave no trace to count.
    """
    if row is None:
        return 0
    window = parse_window((row.get(EXTERNAL_IDS) or {}).get(EXT_TXN))
    # nbdb's writes push versions that only grow (from 1): only the window's leading run of falling
    # versions is theirs. Another writer's entries further back of higher versions ("x@1 y@60"), or
    # repeated ones in a row it inserted ("a@0 a@0"), counted as commits: a merged catch-up, which
    # ended every plain watch.
    seen = 0 if before is None else before[1]  # RowState.stored_version
    count, last = 0, _NO_VERSION
    for _token, version in window:
        if version <= seen or version >= last:
            break
        count, last = count + 1, version
    return count


_NO_VERSION = 2**63
"""Above every version :func:`parse_window` reads."""


_uuid = parse_uuid
"""A set member's, an update's row's or a hint's id, parsed (None: not a uuid), once for all readers."""


def _members(row: Row | None, column: str) -> set[Any]:
    if row is None:
        return set()
    cell = row.get(column)
    if isinstance(cell, set):
        return cell
    return set() if cell is None else {cell}


class Replica:
    """The records of the mapped tables as the monitor last saw them, and their recent changes.

    The backend's monitor calls :meth:`apply` and :meth:`resync`; every other
    thread only reads, under ``cond``.
    """

    def __init__(
        self,
        mapping: Mapping_,
        versions: VersionBook,
        namespace: str,
        clock: RevisionClock | None = None,
        history: int = HISTORY,
        filtered: bool = False,
        topics: Collection[str | None] | None = None,
    ) -> None:
        """``filtered``: the server sends the rows of some topics only, parents included, so a child
        may be held by a parent row this replica never sees (see :func:`_hinted_parents`). ``topics``:
        the topics it follows (None: all)."""
        self.mapping = mapping
        self.topics = None if topics is None else frozenset(topics)
        self.versions = versions
        self.namespace = namespace
        self.clock = clock or RevisionClock()
        self.cond = threading.Condition(threading.RLock())
        self.views = {db: _View(mapping, db, filtered) for db in mapping.databases()}
        # Keyed by the id's int (see IdKey); the records hold the ids as uuid.UUID.
        self.records: dict[IdKey, Record] = {}
        self.states: KeptMap[IdKey, tuple[str, int, str]] = KeptMap()
        """Key -> its row's :class:`.rows.RowState` as a plain tuple (one the collector untracks; the
        map itself it keeps tracked, see :class:`.rows.KeptMap`)."""
        self.refs: dict[IdKey, frozenset[RefKey]] = {}
        """(table, id.int) of an object -> the objects it references (one frozenset shared by all
        holding the same set: see :meth:`_index_refs`)."""
        self._refsets: dict[frozenset[RefKey], frozenset[RefKey]] = {}
        """Each distinct set of references :attr:`refs` holds -> the one object standing for it."""
        self._refset_uses: dict[frozenset[RefKey], int] = {}
        """Each of :attr:`_refsets` -> how many objects hold it (dropped at none)."""
        self.referrers: dict[IdKey, dict[IdKey, uuid.UUID]] = {}
        """(table, id.int) of a referenced object -> those of the objects referencing it, each with its id
        (its RefKey is ``(key[0], id)``: see :meth:`referrers_view`). The id alone, not the RefKey tuple,
        so the collector tracks no object per reference (the id is the record's own)."""
        self.changed_at: KeptMap[IdKey, int] = KeptMap()
        """Key of a present object -> the revision of its last change (see :meth:`changed`)."""
        self._gone_at: OrderedDict[IdKey, int] = OrderedDict()
        """Key of a deleted object -> the revision of its deletion, oldest first, kept while the history
        holds that revision: one entry per object ever deleted, kept for good, grew without bound."""
        self.expiring: dict[RefKey, float] = {}
        """Objects created with a ttl -> the wall-clock time after which they may be reaped."""
        self.created_after = self.clock.now()
        """The connection's revision when this replica was made: a stream from a revision between it
        and :attr:`start` starts at the replica's first state (nothing was seen in between)."""
        self.revision = self.clock.tick()
        self.start = self.revision
        self.oldest = self.revision
        self.history: deque[RecordChange] = deque()
        self.history_limit = history
        self.synced: set[str] = set()
        self.last_txn: dict[str, str] = {}
        self._written: OrderedDict[IdKey, Written] = OrderedDict()
        """Key -> a row as a commit of this client wrote it, its parents, document and wire form (see
        :meth:`expect`), oldest first."""
        self._value: object = None
        """The stored copy the row :meth:`_render` last rendered was written as (see ``Written.value``), or None."""
        self._carrying = False
        """The changes just applied carry stored copies, until the sinks were handed them (see :meth:`_drop_values`)."""
        self._sinks: list[Sink] = []
        """Streams handed their changes by the thread that applies each transaction (see :meth:`add_sink`)."""
        self._wires: OrderedDict[IdKey, bytes] = OrderedDict()
        """Key -> the wire form of a row that reads as a commit of this client wrote it (see
        :meth:`stored_wire`), as :func:`.rows.to_keep` keeps it: kept from that commit's plan until
        the row changes again, at most :data:`_WRITTEN_LIMIT` of them (the most recently confirmed)."""

    # ---------------------------------------------------------------- reads

    def record(self, table: str, id: uuid.UUID) -> Record | None:
        """The record of ``table/id`` (call under ``cond``)."""
        return self.records.get((table, id.int))

    def rows_of(self, db: str, db_table: str) -> Mapping[int, Row]:
        """Every row of ``db_table`` the replica was sent, by id's int, to read and not keep (under ``cond``)."""
        return self.views[db].rows.get(db_table, {})

    def row(self, tm: TableMap, id: uuid.UUID) -> Row | None:
        """The row holding ``tm``'s object ``id`` (call under ``cond``)."""
        return self.views[tm.db].rows.get(tm.db_table, {}).get(id.int)

    def changed(self, table: str, id: uuid.UUID) -> int:
        """The revision of the last change of ``table/id`` (its deletion included) the replica shows, or 0 if it
        does not (a deletion older than the kept history is forgotten; call under ``cond``)."""
        key = (table, id.int)
        revision = self.changed_at.get(key)
        return self._gone_at.get(key, 0) if revision is None else revision

    def parents_of(self, tm: TableMap, id: uuid.UUID) -> dict[str, uuid.UUID]:
        """The parents of a child row, by reference field (call under ``cond``)."""
        return dict(self.views[tm.db].parents.get((tm.db_table, id.int), {}))

    def parents_view(self, tm: TableMap, id: uuid.UUID) -> Mapping[str, uuid.UUID]:
        """:meth:`parents_of` without the copy: the replica's own map, read-only. A later change of the
        child's parents replaces the map (it is never changed in place), so a caller may keep it as
        the parents of that moment."""
        return self.views[tm.db].parents.get((tm.db_table, id.int), _NO_PARENTS)

    def referrers_view(self, table: str, id: uuid.UUID) -> Mapping[IdKey, uuid.UUID]:
        """The objects referencing ``(table, id)``: each one's key -> its id (its RefKey is ``(key[0], id)``).

        The replica's own map, to read under :attr:`cond` and not keep: a delete's reference check
        reads it for every object deleted, and a copy of it (a RefKey built per referrer) cost a
        delete about 4 % of its instructions while most deleted objects have no referrer at all."""
        return self.referrers.get((table, id.int), _NO_REFERRERS)

    def referrer_keys(self, table: str, id: uuid.UUID) -> list[RefKey]:
        """The RefKeys of the objects referencing ``(table, id)``, unordered (under :attr:`cond`)."""
        return [(key[0], source) for key, source in self.referrers_view(table, id).items()]

    def names_every_referrer(self, table: str, id: uuid.UUID, named: Collection[RefKey]) -> bool:
        """Whether ``named`` (:meth:`referrer_keys` of ``table/id``) is every row of the replica's databases
        holding the object, as the rows it follows show them (call under ``cond``, once synced).

        Each row holding it, a child in the object's own set columns or a row whose column of the served
        schema points to it, must be one of them: a row this replica shows as no object of its namespace
        (another client's, another namespace's) is a holder nbdb cannot name, and so may be one in a column
        it does not follow (a newer schema's) or a map's. A replica of a namespace (or of some topics) is
        sent only that namespace's rows of a table with external_ids, so any such table's column pointing
        to the target may hold it unseen: False then, whatever its rows show (the object's own child
        columns are read from its own row). A reference kept as JSON text or in another database is not
        checked against rows here: False, and for no name at all (the server refused the delete for some
        holder). Its parents' sets (a port's switch) are the planner's, not referrers.
        """
        tm = self.mapping.tables.get(table)
        if tm is None or not named:
            return False
        for source in self.mapping.tables.values():
            for to, storage in source.refs.values():
                if to == table and storage != "parent" and (storage != "column" or source.db != tm.db):
                    return False
        view = self.views[tm.db]
        row = view.rows.get(tm.db_table, {}).get(id.int)
        if row is None:
            return False  # gone since: the delete planned again says so
        ids = {key[1].int for key in named}
        for link in view.links.get(tm.db_table, ()):
            for member in _members(row, link.column):
                child = _uuid(member)
                if child is None or child.int not in ids:
                    return False
        # The server filters the rows of a table with external_ids by namespace (and topic): another
        # namespace's or client's row holding the target there never reaches this replica.
        filtered = bool(self.namespace) or view.filtered
        text = uuid_text(id)  # a cell holds uuids as the server's (canonical) text
        parents = {(p, c) for p, c in tm.parents.values()}
        for db_table, schema in self.mapping.schemas[tm.db].tables.items():
            followed = view.types.get(db_table, {})
            for column, spec in schema.columns.items():
                kinds = (spec.type.key, spec.type.value)
                if (
                    not any(k is not None and k.ref_table == tm.db_table for k in kinds)
                    or (db_table, column) in parents
                ):
                    continue
                if column not in followed or spec.type.is_map or (filtered and EXTERNAL_IDS in schema.columns):
                    return False
                for rid, held in view.rows.get(db_table, {}).items():
                    cell = held.get(column)
                    if rid not in ids and (cell == text or (isinstance(cell, set) and text in cell)):
                        return False
        return True

    def select(self, tables: Collection[str], topics: Collection[str | None] | None) -> list[Record]:
        """Every record of ``tables`` (in ``topics``)."""
        wanted = set(tables)
        with self.cond:
            return [
                rec
                for (table, _), rec in self.records.items()
                if table in wanted and (topics is None or rec.topic in topics)
            ]

    def stored_wire(self, tm: TableMap, id: uuid.UUID, row: Row) -> dict[str, Any]:
        """:func:`stored_columns` of ``row``, the row of ``tm``'s object ``id`` here (call under ``cond``).

        A row that reads as this client's last commit wrote it has the wire
        form that commit's plan made: a compare-and-swap of it (the next
        update of an object, typically) need not encode every column again.
        """
        wire = self._wires.get((tm.table, id.int))
        return stored_columns(tm, row) if wire is None else kept_wire(wire)

    def expect(self, written: Mapping[IdKey, Written]) -> None:
        """Rows a commit is about to write, rendered by its plan (call under ``cond``, before sending it).

        When the update showing one of them arrives, its document is taken from
        here if the row and its parents are as written (checked column by
        column, far cheaper than rendering): the monitor's thread, which the
        committing caller waits for, renders nothing it rendered already. An
        entry is dropped at the next update of its row, used or not (a commit
        that failed leaves a few until then). Past :data:`_WRITTEN_LIMIT` the
        oldest entries go, never this commit's: the rows of commits still in
        flight keep theirs (emptying the whole map made every commit in flight
        render its rows again on the monitor's thread).
        """
        kept = self._written
        for key, entry in written.items():
            kept.pop(key, None)  # written again: as new as this commit
            kept[key] = entry
        for _ in range(len(kept) - max(_WRITTEN_LIMIT, len(written))):
            kept.popitem(last=False)

    def add_sink(self, stream: Sink) -> None:
        """Hand ``stream`` its changes from the thread that applies each transaction, once applied.

        That thread calls ``stream.hand_over()`` after each :meth:`apply` and
        :meth:`resync`, outside ``cond`` (a closed stream is dropped).
        """
        with self.cond:
            self._sinks = [s for s in self._sinks if not s.closed] + [stream]

    def _hand_over(self) -> None:
        """Give each sink stream the changes just applied (the applying thread, not under ``cond``)."""
        sinks = self._sinks
        if not sinks:
            return
        for stream in sinks:
            stream.hand_over()
        if any(s.closed for s in sinks):
            with self.cond:
                self._sinks = [s for s in self._sinks if not s.closed]

    def _drop_values(self) -> None:
        """The history's newest changes without the stored copies they carried for the sinks (handed over now).

        Kept there, each copy would live as long as its change in the history (10,000 of them)
        after the caches moved on to newer ones: about a kilobyte of objects per port that the
        cyclic collector would go over too. A watch reading the history later decodes the bytes,
        as it did before.
        """
        self._carrying = False
        with self.cond:
            history, records = self.history, self.records
            for i in range(len(history) - 1, -1, -1):
                change = history[i]
                if change.revision != self.revision:
                    break
                new = change.new
                if new is not None and new.value is not None:
                    plain = records.get((change.table, change.id.int)) or _new_tuple(Record, (*new[:5], None, None))
                    history[i] = _new_tuple(RecordChange, (*change[:4], plain, *change[5:]))

    # ---------------------------------------------------------------- the monitor's side

    def apply(self, db: str, updates: Mapping[str, Any], *, synthetic: bool = False, txn: str | None = None) -> None:
        """One server transaction (or, ``synthetic``, a merged catch-up) in ``table-updates2`` form."""
        with self.cond:
            view = self.views.get(db)
            if view is None:
                return
            touched: dict[IdKey, uuid.UUID] = {}
            for table, rows in updates.items():
                if table not in view.types or not isinstance(rows, dict):
                    continue
                maps = view.maps.get(table, ())
                for id_text, change in rows.items():
                    id = _uuid(id_text)
                    if id is None or not isinstance(change, dict):
                        continue
                    if "modify" in change:
                        changed = view.modify(table, id, change["modify"] or {}, touched)
                        if changed is None:
                            log.warning("ovsdb: a change of unknown row %s %s; ignored", table, id)
                            continue
                        if not changed:
                            continue
                    elif "delete" in change:
                        view.put(table, id, None, touched)
                    else:
                        wire = change.get("insert", change.get("initial"))
                        view.put(table, id, view.decode(table, wire or {}), touched)
                    n = id.int
                    for tm in maps:
                        touched[(tm.table, n)] = id
            self._settle(db, touched, synthetic)
            if txn is not None:
                self.last_txn[db] = txn
        self._hand_over()
        if self._carrying:
            self._drop_values()

    def merged_away(self, rows: Sequence[tuple[Record | None, Record | None]]) -> int:
        """Record, at a new revision, that a commit this replica never showed came and went (call under ``cond``).

        ``rows``: each row of the commit as it wrote it (None: deleted), and as the replica shows it
        now (None: gone). A relay (or a busy connection) merged the commit with another writer's
        change that undid it into one update, or none: no revision here shows the commit, and nothing
        would ever tell a watch or cache from the commit's result that its rows are not as written
        (gone, or back). Recorded as a merged catch-up (``synthetic``, what it is): a watch from
        before it stops with HistoryGoneError and lists again (it learns the object is gone, or
        there), a cache applies it as the events of a re-list (a deletion of an object it never
        held is nothing), and both stand past the revision before it, which the caller stamps the
        commit's result with. A row without ``external_ids`` shown at a version not past the commit's
        (its count saw no change) is counted past it (:meth:`.VersionBook.past`): its next version is
        never the one the commit's result gave its content.
        Returns the new revision; the changes are handed to the sinks by :meth:`hand_over_now`.
        """
        revision = self.clock.tick()
        out = []
        for written, now in rows:
            row = now if written is None else written
            if row is None:
                continue
            key = (row.table, row.id.int)
            if written is not None and now is not None and now.version <= written.version:
                tm = self.mapping.tables.get(row.table)
                state = self.states.get(key)
                if tm is not None and tm.external_ids is None and state is not None:
                    # A row without external_ids is at the version this connection counts, which saw no
                    # change here: the commit's result holds ``written.version`` for its content, and the
                    # content shown is a change after it (else the row's next write gave that version
                    # again, to other content).
                    now = now._replace(version=self.versions.past(row.table, key[1], state, written.version))
                    self.records[key] = now
            if now is None:
                gone = self._gone_at
                gone.pop(key, None)
                gone[key] = revision
            else:
                self.changed_at[key] = revision
            out.append(RecordChange(row.table, row.id, row.topic, written, now, revision, True))
        self.revision = revision
        self.history.extend(out)
        while len(self.history) > self.history_limit:
            self.oldest = self.history.popleft().revision
        self.cond.notify_all()
        return revision

    def hand_over_now(self) -> None:
        """Give the sinks what :meth:`merged_away` recorded (not under ``cond``: see :meth:`add_sink`)."""
        self._hand_over()

    def resync(self, db: str, updates: Mapping[str, Any], txn: str | None = None) -> None:
        """The whole state of ``db`` (after the monitor could not resume): applied as the exact difference."""
        with self.cond:
            view = self.views.get(db)
            if view is None:
                return
            touched: dict[IdKey, uuid.UUID] = {}
            for table in view.types:
                rows = updates.get(table) or {}
                fresh: dict[int, tuple[uuid.UUID, Row]] = {}
                for id_text, change in rows.items():
                    id = _uuid(id_text)
                    if id is not None and isinstance(change, dict):
                        row = view.decode(table, change.get("initial", change.get("insert")) or {})
                        fresh[id.int] = (id, row)
                current = view.rows.get(table, {})
                maps = view.maps.get(table, ())
                for n in [i for i in current if i not in fresh]:
                    gone = uuid.UUID(int=n)
                    view.put(table, gone, None, touched)
                    for tm in maps:
                        touched[(tm.table, n)] = gone
                for n, (id, row) in fresh.items():
                    if current.get(n) != row:
                        view.put(table, id, row, touched)
                        for tm in maps:
                            touched[(tm.table, n)] = id
            self._settle(db, touched, db in self.synced)
            if txn is not None:
                self.last_txn[db] = txn
        self._hand_over()
        if self._carrying:
            self._drop_values()

    def behind(self, db: str, updates: Mapping[str, Any]) -> str | None:
        """Why a whole state of ``db`` (``initial`` rows) is older than this replica (None: not as far as it shows).

        Rows both hold are compared by the version nbdb last wrote to them: a
        lower one there means the state predates changes this replica already
        showed, unless their windows tell a row created again since (:func:`.rows.apart`). Creates, deletes
        and other writers' changes leave no such mark.
        """
        with self.cond:
            view = self.views.get(db)
            if view is None or db not in self.synced:
                return None
            for table, rows in updates.items():
                current = view.rows.get(table)
                if not current or not isinstance(rows, dict) or EXTERNAL_IDS not in view.types.get(table, {}):
                    continue
                for id_text, change in rows.items():
                    id = _uuid(id_text)
                    row = None if id is None else current.get(id.int)
                    if row is None or not isinstance(change, dict):
                        continue
                    wire = (change.get("initial") or change.get("insert") or {}).get(EXTERNAL_IDS)
                    there = view.decode(table, {EXTERNAL_IDS: wire}) if wire is not None else {}
                    theirs = written_version(there.get(EXTERNAL_IDS) or {})
                    ours = written_version(row.get(EXTERNAL_IDS) or {})
                    if theirs < ours and not apart(row.get(EXTERNAL_IDS) or {}, there.get(EXTERNAL_IDS) or {}):
                        # (A row created again since, by an nbdb writer, starts a window of its own: no older copy.)
                        return f"{table} {id} is at nbdb version {theirs} there, already seen at {ours}"
        return None

    def _render(self, tm: TableMap, id: uuid.UUID, row: Row | None) -> Doc | None:
        """The document of ``tm``'s row ``id`` (``row`` here, None: no such object) as it is now; called for
        every row an update touched, so the wire form kept for it goes unless the row reads as written again."""
        n = id.int
        key = (tm.table, n)
        self._wires.pop(key, None)
        if row is None:
            return None
        view = self.views[tm.db]
        parents = view.parents.get((tm.db_table, n), {})
        if parents and view.own_parents and (own := view.own_parents.get(tm.table)) is not None:
            # Another model's parent fields too: compared whole with the parents this model's commit
            # wrote, the row never read back as written (every cache and watch validated it again).
            parents = {name: parent for name, parent in parents.items() if name in own}
        elsewhere: dict[str, uuid.UUID] = {}
        if tm.parents and not parents:
            parents, elsewhere = _hinted_parents(view, tm, row)
            if not parents and not elsewhere:
                # A child whose parent does not hold it (about to be collected by the server).
                return None
        written = self._written.pop(key, None)
        shared = (
            [(name, sorted(held)) for name in tm.parents if (held := view.shared.get((tm.db_table, n, name)))]
            if view.shared
            else []
        )
        if elsewhere:
            # Its parent's set no longer holds it, yet the server keeps it (a child no set holds is
            # collected in the same transaction): another writer moved it to a parent row this
            # replica does not follow (a scope of named topics). Its parent is not known here: a
            # corrupt record saying so (cache.corrupt), not the old parent nor a vanished object.
            doc = render(tm, id, row, parents, elsewhere=elsewhere)
            written = None
        elif shared:
            # A child in several parents' sets (another writer's): no parent the model can name, so a
            # corrupt record (get, list, cache.corrupt), not the last parent seen. It references each
            # of them (a delete of one names it); its siblings' writes go on.
            doc = render(tm, id, row, parents, several=dict(shared))
            written = None
        elif written is not None and written.parents == parents and same_content(tm, written.row, row):
            doc = written.doc
            self._value = written.value
        else:
            doc = render(tm, id, row, parents)
            written = None
        if doc.namespace != self.namespace:
            return None
        if written is not None and written.wire is not None:
            wires = self._wires
            wires[key] = written.wire
            if len(wires) > _WRITTEN_LIMIT:
                wires.popitem(last=False)
        return doc

    def _settle(self, db: str, touched: dict[IdKey, uuid.UUID], synthetic: bool) -> None:
        """Turn the touched rows into record changes of one new revision.

        An update is one server transaction only as long as the server flushed
        it alone: ovsdb-server sends a client everything committed since its
        last update as one update, and a relay applies each update of its
        source as a transaction of its own and then flushes several at once.
        An update in which some object shows two nbdb commits or more is such a
        merge, and becomes a synthetic batch (exact as a difference, not one
        commit), like a catch-up after a reconnect.
        """
        initial = db not in self.synced
        revision = self.clock.tick()
        out: list[RecordChange] = []
        merged: RefKey | None = None
        views = self.views
        for key, id in touched.items():
            table = key[0]
            tm = self.mapping.tables.get(table)
            if tm is None:
                continue
            old = self.records.get(key)
            self._value = None
            row = views[tm.db].rows.get(tm.db_table, {}).get(key[1])
            doc = self._render(tm, id, row)
            ref = (table, id)
            self._index_expiry(ref, None if doc is None else row)
            if doc is None:
                if old is None:
                    continue
                del self.records[key]
                del self.states[key]
                self._index_refs(key, ref, frozenset())
                self.versions.forget(table, key[1])
                self.changed_at.pop(key, None)
                gone = self._gone_at
                gone.pop(key, None)  # deleted again: as new as this deletion
                gone[key] = revision
                out.append(RecordChange(table, old.id, old.topic, old, None, revision, synthetic))
                continue
            before = self.states.get(key) if old is not None else None
            if old is not None and before == doc.state:
                written = None if row is None or old.written is None else written_token(row.get(EXTERNAL_IDS) or {})
                if written is not None and written != old.written:
                    # The same content and version, written by another nbdb commit: the row was deleted and
                    # created again as it was, in changes this replica sees merged (a catch-up, or one update
                    # of several transactions). Not a change of its content, but of its incarnation: reads
                    # hand out copies of the new one, and the copies of the old one are stale (see
                    # rows.written_token). Told as an update to the new incarnation's copy, at this revision, and
                    # flagged merged (a delete and a create were folded into it): the caches and watches that keep
                    # copies took the old one, whose every write is refused, for good without it.
                    new = old._replace(written=written)
                    self.records[key] = new
                    self.changed_at[key] = revision
                    if merged is None and not (synthetic or initial):
                        merged = ref
                    out.append(RecordChange(table, id, new.topic, old, new, revision, synthetic))
                continue
            if merged is None and not (synthetic or initial) and _commits_since(before, row) > 1:
                merged = ref
            version = self.versions.version(table, key[1], doc.state)
            if row is None:
                written = None
            elif tm.external_ids is None:
                written = content_stamp(doc.state.digest)  # no token to keep: its content is its stamp
            else:
                written = written_token(row.get(EXTERNAL_IDS) or {})
            new = _new_tuple(Record, (table, id, doc.topic, version, doc.data, None, written))
            self.records[key] = new
            self.states[key] = plain_state(doc.state)
            self._index_refs(key, ref, doc.refs)
            self.changed_at[key] = revision
            if old is None and self._gone_at:
                self._gone_at.pop(key, None)  # made again
            value: Any = self._value
            if (
                value is not None
                and self._sinks
                and value.version == version
                and value.id.int == key[1]
                and value.topic == doc.topic
            ):
                # The row reads back as this client's commit wrote it, and its document is the stored
                # copy's (see Written.value): the change handed to the sinks carries that copy, which
                # readers decoding into its model share (nbdb.codec.decode) rather than validate it
                # again. Only that hand-over (see _drop_values): the records (a list, a cache's load)
                # and the kept history (a watch's poll) hold the bytes alone.
                shared = _new_tuple(Record, (table, id, doc.topic, version, doc.data, value, written))
                out.append(_new_tuple(RecordChange, (table, id, new.topic, old, shared, revision, synthetic)))
                self._carrying = True
            else:
                out.append(RecordChange(table, id, new.topic, old, new, revision, synthetic))
        if initial:
            # The first state of a database is where history starts, not a change.
            self.synced.add(db)
            self.revision = self.oldest = self.start = revision
        elif out:
            if merged is not None:
                log.info("ovsdb: %s %s shows several commits in one update: delivered as a merged catch-up", *merged)
                out = [c._replace(synthetic=True) for c in out]
            if len(out) > 1:
                out.sort(key=lambda c: (c.table, uuid_text(c.id)))
            self.revision = revision
            self.history.extend(out)
            while len(self.history) > self.history_limit:
                self.oldest = self.history.popleft().revision
            gone = self._gone_at
            while gone and next(iter(gone.values())) < self.oldest:
                gone.popitem(last=False)
        else:
            # Nothing nbdb renders changed (a refresh's deadline, a row no model maps): the clock ticked all
            # the same, so the replica reflects that revision too. It stayed behind, and a watch "from now"
            # (the clock's revision: Database.watch()) or from a no-op commit's revision raised
            # HistoryGoneError, and a cache's wait_for that revision waited for the next real change.
            self.revision = revision
        self.cond.notify_all()

    def _index_expiry(self, key: RefKey, row: Row | None) -> None:
        """Follow the deadline of an expiring object, ``row`` (None: gone); a refresh moves only that."""
        text = None if row is None else (row.get(EXTERNAL_IDS) or {}).get(EXT_EXPIRES)
        if text is None:
            if self.expiring:
                self.expiring.pop(key, None)
            return
        try:
            self.expiring[key] = float(text)
        except ValueError:
            # Damaged by another writer: no deadline to keep, and never a reason to delete data.
            log.warning("ovsdb: %s %s has an unreadable deadline %r; it does not expire", *key, text)
            self.expiring.pop(key, None)

    def _index_refs(self, key: IdKey, ref: RefKey, refs: frozenset[RefKey]) -> None:
        """``refs``: the references of the object ``ref`` (``key``: its table and id.int) now."""
        old = self.refs.get(key, frozenset())
        if old == refs:
            return
        referrers = self.referrers
        for table, id in old - refs:
            target = (table, id.int)
            sources = referrers.get(target)
            if sources is not None:
                sources.pop(key, None)
                if not sources:
                    del referrers[target]
        for table, id in refs - old:
            target = (table, id.int)
            sources = referrers.get(target)
            if sources is None:
                referrers[target] = {key: ref[1]}
            else:
                sources[key] = ref[1]
        shared, uses = self._refsets, self._refset_uses
        if old:
            left = uses[old] - 1
            if left:
                uses[old] = left
            else:
                del uses[old], shared[old]
        if refs:
            # One frozenset per distinct set of references, shared by every object holding it (the
            # ports of one switch): the collector tracks a frozenset and each (table, UUID) tuple in
            # it for good, so a set per object was two objects per port every full collection walked.
            kept = shared.get(refs)
            if kept is None:
                shared[refs] = kept = refs
                uses[refs] = 1
            else:
                uses[kept] += 1
            self.refs[key] = kept
        else:
            self.refs.pop(key, None)

    def compact(self) -> None:
        """Forget the history (test hook)."""
        with self.cond:
            self.history.clear()
            self.oldest = self.revision
            self.cond.notify_all()

    def wake(self) -> None:
        """Wake every thread waiting on the replica (the connection closed)."""
        with self.cond:
            self.cond.notify_all()
