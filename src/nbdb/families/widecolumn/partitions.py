"""Typed access to the object partitions of one namespace: rows, ``last_rev``, seals, change rows, ids.

Every object lives in the partition of its topic; an object's topic never
changes, so where an id lives is cached (bounded) and a miss falls back to the
store's index on ``oid``. Whether an object expires never changes either, and
is cached with it.
"""

from __future__ import annotations

import logging
import operator
import uuid
from collections.abc import Sequence
from itertools import repeat
from typing import Any

from nbdb import errors
from nbdb.families import rules
from nbdb.families.widecolumn import layout as L
from nbdb.families.widecolumn.options import WideColumnOptions, tries
from nbdb.families.widecolumn.planner import StoredObject
from nbdb.families.widecolumn.primitives import OutcomeUnknown, Row, Select, WideColumnStore
from nbdb.spi import Record, RefKey

__all__ = ["Partitions"]

log = logging.getLogger(__name__)

_TOPIC_CACHE_SIZE = 200_000
_INT = operator.attrgetter("int")


class Partitions:
    """Reads and the few writes of ``nbdb_data`` that more than one part of the family needs."""

    def __init__(self, store: WideColumnStore, namespace: str, options: WideColumnOptions) -> None:
        self.store = store
        self.ns = namespace
        self._o = options
        self._where: dict[str, dict[int, tuple[str, bool]]] = {}
        """Per table, by the id's integer: (partition, mortal), one shared tuple per pair. A listing
        remembers every object it reads, so an entry is kept small: an int key in a table's dict
        (≈ 85 B) instead of a ``(table, UUID)`` tuple and a tuple per object (≈ 240 B)."""
        self._where_size = 0
        self._places: dict[tuple[str, bool], tuple[str, bool]] = {}

    # ---------------------------------------------------------------- where ids live

    def cached_partition(self, key: RefKey) -> str | None:
        """The partition ``key`` was last seen in, if known."""
        found = self._where_of(key)
        return None if found is None else found[0]

    def cached_mortal(self, key: RefKey) -> bool:
        """Whether ``key`` was last seen with a ttl (False if not known)."""
        found = self._where_of(key)
        return found is not None and found[1]

    def _where_of(self, key: RefKey) -> tuple[str, bool] | None:
        table = self._where.get(key[0])
        return None if table is None else table.get(key[1].int)

    def remember(self, key: RefKey, part: str, mortal: bool | None = None) -> None:
        """Note that ``key`` lives in ``part`` (``mortal``: it was created with a ttl; None: as known before)."""
        if mortal is None:
            known = self._where_of(key)
            mortal = known is not None and known[0] == part and known[1]
        if self._where_size >= _TOPIC_CACHE_SIZE:
            self._where.clear()  # rare, and cheaper than an LRU on every hit
            self._where_size = 0
        place = self._places.get((part, mortal))
        if place is None:
            if len(self._places) >= _TOPIC_CACHE_SIZE:
                self._places.clear()
            place = self._places[(part, mortal)] = (part, mortal)
        table = self._where.get(key[0])
        if table is None:
            table = self._where[key[0]] = {}
        size = len(table)
        table[key[1].int] = place
        self._where_size += len(table) - size

    def remember_all(self, table: str, ids: Sequence[uuid.UUID], part: str) -> None:
        """:meth:`remember` of ``(table, id)`` in ``part`` for each of ``ids`` (whether mortal: as known before).

        A listing's objects, told in a few C steps instead of a call per object (a cold load of
        10,000 ports on Cassandra spent ≈ 1 µs a port in ``remember``)."""
        if self._where_size + len(ids) >= _TOPIC_CACHE_SIZE:
            for id in ids:  # the cache fills up on the way: one by one, as remember() clears it
                self.remember((table, id), part)
            return
        known = self._where.get(table)
        if known is None:
            known = self._where[table] = {}
        size = len(known)
        immortal = self._place(part, False)
        keys = map(_INT, ids)
        if not known:  # nothing known of this table: every id is as new
            known.update(zip(keys, repeat(immortal)))
        else:
            mortal = self._place(part, True)
            get = known.get
            known.update({key: mortal if get(key) == mortal else immortal for key in keys})
        self._where_size += len(known) - size

    def _place(self, part: str, mortal: bool) -> tuple[str, bool]:
        """The one shared ``(part, mortal)`` tuple."""
        place = self._places.get((part, mortal))
        if place is None:
            if len(self._places) >= _TOPIC_CACHE_SIZE:
                self._places.clear()
            place = self._places[(part, mortal)] = (part, mortal)
        return place

    def forget(self, key: RefKey) -> None:
        """Drop what is known of ``key``'s partition (it was deleted, or a plan found it elsewhere)."""
        table = self._where.get(key[0])
        if table is not None and table.pop(key[1].int, None) is not None:
            self._where_size -= 1

    # ---------------------------------------------------------------- reads

    def read(self, query: Select, params: Sequence[Any], *, serial: bool = False) -> list[Row]:
        """``store.select``, repeating a serial read that lost a Paxos race."""
        if not serial:
            return self.store.select(query, params)
        error: errors.NbdbError | None = None
        for _ in tries(self._o.serial_reads):
            try:
                return self.store.select(query, params, serial=True)
            except errors.BackendUnavailableError as exc:
                error = exc
        assert error is not None
        raise errors.BackendUnavailableError(f"a serial read kept failing: {error}") from error

    def row_query(self, part: str, table: str, id: uuid.UUID) -> tuple[Select, tuple[Any, ...]]:
        """The read of one object row (for :meth:`WideColumnStore.select_many`)."""
        return L.Q_ROW, (self.ns, part, L.OBJECT, 0, table, id)

    def locate_query(self, id: uuid.UUID) -> tuple[Select, tuple[Any, ...]]:
        """The index read that finds an id in any partition."""
        return L.Q_LOCATE, (id,)

    @staticmethod
    def stored_object(rows: list[Row]) -> StoredObject | None:
        """The result of :meth:`row_query`."""
        row = rows[0] if rows else None
        if row is None or row.version is None:
            return None
        refs = frozenset(L.parse_ref(r) for r in (row.refs or ()))
        unique = frozenset(row.uniq or ())
        return StoredObject(
            row.version, refs, dict(row.referrers or {}), row.data, unique, row.ttl_ms, row.deadline, row.wrev
        )

    def located(self, table: str, id: uuid.UUID, rows: list[Row]) -> tuple[str, Record] | None:
        """The result of :meth:`locate_query` for ``(table, id)``: its partition and record, or None."""
        for row in rows:
            if row.ns == self.ns and row.tbl == table and row.version is not None:
                self.remember((table, id), row.topic, row.ttl_ms is not None)
                topic = rules.topic_of_part(row.topic)
                return row.topic, Record(table, id, topic, row.version, row.data or b"", None, row.wrev)
        self.forget((table, id))
        return None

    def object_row(self, part: str, table: str, id: uuid.UUID) -> StoredObject | None:
        """The stored row of one object in ``part``, or None."""
        return self.stored_object(self.store.select(*self.row_query(part, table, id)))

    def record(self, part: str, table: str, id: uuid.UUID) -> Record | None:
        """The record of one object in ``part``, or None."""
        rows = self.store.select(L.Q_RECORD, (self.ns, part, L.OBJECT, 0, table, id))
        row = rows[0] if rows else None
        if row is None or row.version is None:
            return None
        return Record(table, id, rules.topic_of_part(part), row.version, row.data or b"", None, row.wrev)

    def locate(self, table: str, id: uuid.UUID) -> tuple[str, Record] | None:
        """Find an object by id alone (through the index on ``oid``): its partition and record."""
        return self.located(table, id, self.store.select(*self.locate_query(id)))

    def find(self, key: RefKey) -> tuple[str, StoredObject] | None:
        """An object's partition and row, wherever it lives."""
        part = self.cached_partition(key)
        row = None if part is None else self.object_row(part, *key)
        if row is None or part is None:
            found = self.locate(*key)
            if found is None:
                return None
            part = found[0]
            row = self.object_row(part, *key)
            if row is None:
                return None
        return part, row

    def last_rev(self, part: str, *, serial: bool = False) -> int | None:
        """The partition's ``last_rev`` (None: no commit ever landed or sealed it)."""
        rows = self.read(L.Q_LAST, (self.ns, part), serial=serial)
        return None if not rows else rows[0].last_rev

    def changes(self, part: str, low: int, high: int, *, serial: bool = False) -> list[Row]:
        """The change rows of revisions ``low`` .. ``high`` in ``part``."""
        return self.read(L.Q_CHANGES, (self.ns, part, L.CHANGE, low, high), serial=serial)

    # ---------------------------------------------------------------- writes

    def seal_through(self, part: str, revision: int) -> None:
        """:meth:`seal` ``part`` at ``revision``, unless a read shows it is there already (the usual case)."""
        if revision <= 0:
            return
        last = self.last_rev(part)
        if last is None or last < revision:
            self.seal(part, revision)

    def seal(self, part: str, revision: int) -> None:
        """Make sure no commit at or below ``revision`` can land in ``part`` from now on.

        Raises ``last_rev`` to ``revision`` unless it is already there; a commit
        conditions on ``last_rev < G``, so a commit at ``G <= revision`` still in
        flight fails. Safe to repeat, so an unknown outcome is simply retried.
        """
        if revision <= 0:
            return
        for _ in tries(self._o.contention):
            try:
                result = self.store.apply([(L.W_LAST_ABOVE, (self.ns, part, revision, revision))])
                if result.applied:
                    return
                if result.reports("last_rev"):
                    current = result.value("last_rev")
                else:
                    current = self.last_rev(part, serial=True)
                if current is not None and current >= revision:
                    return
                # A null last_rev (nothing ever landed) is not "below" anything.
                if current is None and self.store.apply([(L.W_LAST_FIRST, (self.ns, part, revision, None))]).applied:
                    return
            except OutcomeUnknown:
                continue  # raising last_rev is idempotent: the next try settles it
        raise errors.BackendUnavailableError(f"could not seal partition {part!r}: too much contention")
