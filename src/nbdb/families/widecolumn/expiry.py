"""Objects that expire: deadlines, refreshes, and the reaper's pass (``capabilities.expiry = reaper``).

The store's own TTL would delete a row without a change row, so watchers
would never hear of it; and it cannot be moved by a refresh atomically with
a check that the object still exists. So an object created with a ttl carries
its ``ttl_ms`` and its ``deadline`` (wall-clock milliseconds) in its row, and
the Databases connected to the namespace reap it (:class:`nbdb.reaper.Reaper`):

- **Finding them** without a scan: every expiring object has a row in the
  namespace's ``nbdb_expiry`` partition (its partition, the revision of the
  commit that created it, a copy of its deadline), written *before* the
  create's batch, so an object that expires is never missed even if its
  creator dies right after the commit.
- **Refreshing** is a compare-and-set on the object row (``IF version > 0``:
  it must still exist) that moves ``deadline``. The index row keeps the
  deadline it had; a reaper that finds the object refreshed copies the new
  one into it, so a refreshed object costs the reaper one read per ttl.
- **Reaping** is an ordinary delete commit (watchers see it) conditioned on
  the version and the deadline the reaper read: a refresh or an update that
  lands first wins, and two reapers delete an object once.
- An ``nbdb_expiry`` row whose object is gone (deleted, or its create never
  landed: the partition is sealed at the create's revision to know) is
  dropped once its deadline passed. Index rows are keyed by the create's
  revision too, so dropping the row of one create never drops the row of a
  later create of the same id, and every write to them is a plain one.

Deadlines are wall-clock times: a reaper whose clock runs ahead reaps early.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from nbdb import errors
from nbdb.families import rules
from nbdb.families.widecolumn import layout as L
from nbdb.families.widecolumn.options import WideColumnOptions, tries
from nbdb.families.widecolumn.partitions import Partitions
from nbdb.families.widecolumn.planner import Expiring, StoredObject
from nbdb.families.widecolumn.primitives import OutcomeUnknown, Row
from nbdb.spi import CommitResult, Delete, RefKey, WriteOp

__all__ = ["Expiry", "due", "register_deadlines"]

log = logging.getLogger(__name__)

Commit = Callable[[Sequence[WriteOp], dict[RefKey, int | None]], CommitResult]
"""Commits ops with deadline guards (the committer)."""


def register_deadlines(partitions: Partitions, expiring: Sequence[Expiring], part: str, revision: int) -> None:
    """Write the ``nbdb_expiry`` rows of the objects a commit at ``revision`` creates (before its batch)."""
    if expiring:
        ns = partitions.ns
        partitions.store.apply([(L.W_EXPIRY, (ns, e.table, e.id, part, revision, e.deadline)) for e in expiring])


def due(rows: Sequence[Row], now_ms: int) -> list[Row]:
    """The ``nbdb_expiry`` rows whose copy of the deadline passed (or is missing), oldest first."""
    late = [row for row in rows if row.deadline is None or row.deadline <= now_ms]
    return sorted(late, key=lambda row: row.deadline or 0)


class Expiry:
    """Deadlines of the objects of one namespace that expire."""

    def __init__(self, partitions: Partitions, options: WideColumnOptions, commit: Commit) -> None:
        self._p = partitions
        self._o = options
        self._commit = commit

    def now_ms(self) -> int:
        """The wall clock, in milliseconds since the epoch."""
        return int(self._o.clock() * 1000)

    # ---------------------------------------------------------------- refreshing

    def refresh(self, table: str, id: uuid.UUID, ttl: float) -> None:
        """Move the deadline of an object that expires to ``ttl`` seconds from now."""
        p = self._p
        found = p.find((table, id))
        if found is None:
            raise rules.not_found((table, id), "expired or deleted")
        part, row = found
        if row.ttl_ms is None:
            raise errors.ValidationError(f"{table} {id} was created without a ttl: there is nothing to refresh")
        deadline = self.now_ms() + max(1, round(ttl * 1000))
        for _ in tries(self._o.settling):
            try:
                applied = p.store.apply([(L.W_REFRESH, (p.ns, part, L.OBJECT, 0, table, id, deadline, 0))]).applied
            except OutcomeUnknown:
                continue  # setting the same deadline again is harmless
            if not applied:
                p.forget((table, id))
                raise rules.not_found((table, id), "expired or deleted")
            return
        raise errors.CommitUnknownError(f"the refresh of {table} {id} may or may not have been applied")

    def _copy_deadline(self, entry: Row, deadline: int) -> None:
        params = (self._p.ns, entry.tbl, entry.id, entry.rev, entry.part, deadline)
        try:
            self._p.store.apply([(L.W_EXPIRY_DEADLINE, params)])
        except errors.NbdbError as exc:  # a stale copy only makes the reaper read the row early
            log.debug("could not copy the deadline of %s %s: %s", entry.tbl, entry.id, exc)

    # ---------------------------------------------------------------- reading

    def _entries(self, tables: Sequence[str] | None = None) -> list[Row]:
        rows = self._p.store.select(L.Q_EXPIRIES, (self._p.ns,))
        # Every writer sets the partition; a row without one is damaged and names nothing to reap.
        kept = [row for row in rows if row.part is not None and row.rev is not None]
        return kept if tables is None else [row for row in kept if row.tbl in tables]

    def _objects(self, entries: Sequence[Row]) -> list[StoredObject | None]:
        p = self._p
        reads = [p.row_query(entry.part, entry.tbl, entry.id) for entry in entries]
        return [Partitions.stored_object(rows) for rows in p.store.select_many(reads)]

    def ttls(self, tables: Sequence[str]) -> dict[RefKey, float]:
        """The ttl of every existing object of ``tables`` that expires."""
        entries = self._entries(tables)
        out: dict[RefKey, float] = {}
        for entry, row in zip(entries, self._objects(entries), strict=True):
            if row is not None and row.ttl_ms is not None:
                out[(entry.tbl, entry.id)] = row.ttl_ms / 1000
        return out

    # ---------------------------------------------------------------- reaping

    def reap(self, limit: int) -> int:
        """Delete objects whose deadline passed (at most ``limit``); how many this pass deleted."""
        now = self.now_ms()
        entries = due(self._entries(), now)[: limit * 2]
        if not entries:
            return 0
        reaped = 0
        for entry, row in zip(entries, self._objects(entries), strict=True):
            key = (entry.tbl, entry.id)
            try:
                if row is None or row.ttl_ms is None:
                    self._drop_stale(entry, row)
                elif row.deadline is not None and row.deadline > now:
                    self._copy_deadline(entry, row.deadline)  # refreshed
                else:
                    op = Delete(entry.tbl, entry.id, rules.topic_of_part(entry.part), row.version)
                    self._commit([op], {key: row.deadline})
                    reaped += 1
                    self._drop_entry(entry)
            except errors.NbdbError as exc:
                # Refreshed, updated or referenced meanwhile, or the store is busy: the next pass looks again.
                log.debug("reaper: %s %s not deleted this pass: %s", entry.tbl, entry.id, exc)
            if reaped >= limit:
                break
        return reaped

    def _drop_stale(self, entry: Row, row: StoredObject | None) -> None:
        """Drop the entry of an object that is gone (or no longer expires), unless its create may still land."""
        if row is None:
            self._p.seal_through(entry.part, entry.rev)
            query, params = self._p.row_query(entry.part, entry.tbl, entry.id)
            if Partitions.stored_object(self._p.read(query, params, serial=True)) is not None:
                return  # it landed just now: the next pass sees it
        self._drop_entry(entry)

    def _drop_entry(self, entry: Row) -> None:
        params: tuple[Any, ...] = (self._p.ns, entry.tbl, entry.id, entry.rev)
        try:
            self._p.store.apply([(L.W_EXPIRY_DROP, params)])
        except errors.NbdbError as exc:  # the next pass drops it
            log.debug("reaper: could not drop the deadline of %s %s: %s", entry.tbl, entry.id, exc)
