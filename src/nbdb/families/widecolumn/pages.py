"""``list(limit=N)``: a listing in pages, every page exactly at the revision of the first.

The first page does what :func:`~nbdb.families.widecolumn.snapshot.scan`
does: R is the last revision handed out, and every listed partition is sealed
at R (no commit at or below R lands there afterwards). A page then reads the
next objects of a table in a partition, in the store's order of ids, and takes
them back to R with the change rows above R (each holds the old value), like
``scan`` does for a whole partition:

- an object the read shows is undone to what it was at R (dropped if it was
  created after R);
- an object the read does not show but that existed at R (deleted after R)
  belongs to the page whose range of ids holds it: a page covers the ids
  after the previous page's last one, up to its own last one (or to the end
  of the table in that partition), so every object of R is on exactly one
  page, whatever was written between pages.

So a page has about ``limit`` objects, not exactly. Later pages need the
change rows above R: once the history no longer holds them (the commit index
right after R expired, or was compacted), the listing raises
HistoryGoneError. Each page reads every change row of its partition above R
(they are not indexed by id): a listing that lasts while a partition churns
costs more per page.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Sequence
from typing import Any

from nbdb import errors, page_token
from nbdb.families import rules
from nbdb.families.widecolumn import layout as L
from nbdb.families.widecolumn import snapshot
from nbdb.families.widecolumn.partitions import Partitions
from nbdb.families.widecolumn.primitives import Row
from nbdb.families.widecolumn.sequencer import RevisionSequencer
from nbdb.families.widecolumn.snapshot import State, undo
from nbdb.spi import Record, Snapshot

__all__ = ["Position", "in_range", "scan_page"]

_NO_END = 2**63 - 1

Position = tuple[str, str, uuid.UUID | None]
"""Where a page starts: (partition, table, the last id of the previous page in that table or None)."""


def in_range(
    order: Callable[[uuid.UUID], Any], after: uuid.UUID | None, end: uuid.UUID | None
) -> Callable[[uuid.UUID], bool]:
    """Whether an id is on a page: after ``after`` (None: from the start), up to ``end`` (None: to the end)."""
    low = None if after is None else order(after)
    high = None if end is None else order(end)

    def inside(id: uuid.UUID) -> bool:
        key = order(id)
        return (low is None or key > low) and (high is None or key <= high)

    return inside


def _position(last: tuple[str, ...] | None, tables: Sequence[str]) -> Position | None:
    if last is None:
        return None
    try:
        part, table, id = last
        after = uuid.UUID(id) if id else None
    except ValueError:
        raise errors.ValidationError("not a continue token of this listing (it names no position)") from None
    if table not in tables:
        raise errors.ValidationError(f"not a continue token of this listing (it lists {table!r})")
    return part, table, after


def _check_history(partitions: Partitions, sequencer: RevisionSequencer, revision: int) -> None:
    """HistoryGoneError unless every change row above ``revision`` is still kept."""
    if sequencer.floor() > revision:
        raise errors.HistoryGoneError(f"the listing at revision {revision} is older than the kept history (compacted)")
    if sequencer.current() > revision:
        # Change rows outlive the index rows of their revisions; the index row right
        # after ``revision`` was written before any change row above it.
        following = revision + 1
        bucket = L.bucket_of(following, sequencer.bucket_size)
        if not partitions.read(L.Q_INTENT, (partitions.ns, bucket, following)):
            raise errors.HistoryGoneError(f"the listing at revision {revision} is older than the kept history")


def scan_page(
    partitions: Partitions,
    sequencer: RevisionSequencer,
    tables: Sequence[str],
    topics: Collection[str | None] | None,
    limit: int,
    after: str | None,
) -> Snapshot:
    """One page of the objects of ``tables`` (in ``topics``) at the revision of the listing's first page."""
    p = partitions
    revision, last = page_token.decode(after)
    start = _position(last, tables)
    first = revision is None
    if revision is None:
        # Taken before the topics are read, as scan() does: a commit registers its partition before
        # it takes its revision, so every partition holding a commit at or below R is listed.
        revision = sequencer.current()
    else:
        _check_history(p, sequencer, revision)
    if topics is None:
        parts = sorted({row.topic for row in p.store.select(L.Q_TOPICS, (p.ns,))})
    else:
        parts = sorted({rules.topic_part(t) for t in topics})
    if first:
        lasts = p.store.select_many([(L.Q_LAST, (p.ns, part)) for part in parts])
        for part, rows in zip(parts, lasts, strict=True):
            if not rows or rows[0].last_rev is None or rows[0].last_rev < revision:
                p.seal(part, revision)
    records: list[Record] = []
    for part in parts:
        if start is not None and part < start[0]:
            continue
        if start is not None:
            p.seal_through(part, revision)  # a partition that appeared after the first page
        changes: list[Row] | None = None
        for table in tables:
            resume = None
            if start is not None and part == start[0]:
                if tables.index(table) < tables.index(start[1]):
                    continue
                if table == start[1]:
                    resume = start[2]
            need = limit - len(records)
            if need <= 0:  # the page filled up with objects deleted after R: this table starts the next one
                return Snapshot(records, revision, page_token.encode(revision, (part, table, "")))
            if resume is None:
                rows = p.store.select(L.Q_PAGE, (p.ns, part, L.OBJECT, 0, table, need))
            else:
                rows = p.store.select(L.Q_PAGE_AFTER, (p.ns, part, L.OBJECT, 0, table, resume, need))
            full = len(rows) >= need
            end = rows[-1].id if full else None
            state: State = {
                (table, row.id): (row.version, row.data or b"", row.wrev) for row in rows if row.version is not None
            }
            newest = max((row.last_rev for row in rows if row.last_rev is not None), default=None)
            if newest is None or need > snapshot.FIRST_READ:
                # An empty read carries no last_rev. A read of more than FIRST_READ objects may come in
                # several driver pages (5,000 rows each by default), each read when the previous one is
                # consumed: commits between them show in no row when the later pages come back empty.
                # So the partition's last_rev is read again, after the objects.
                again = p.last_rev(part)
                newest = max((rev for rev in (newest, again) if rev is not None), default=None)
            if newest is not None and newest > revision:
                if changes is None:
                    # Serial: a commit the read of the objects showed is certainly among them.
                    changes = p.changes(part, revision + 1, _NO_END, serial=True)
                undo(state, changes, (table,))
                inside = in_range(p.store.id_order, resume, end)
                state = {key: value for key, value in state.items() if inside(key[1])}
            topic = rules.topic_of_part(part)
            for (tbl, id), (version, data, written) in sorted(
                state.items(), key=lambda item: p.store.id_order(item[0][1])
            ):
                records.append(Record(tbl, id, topic, version, data, None, written))
            if full:
                assert end is not None
                return Snapshot(records, revision, page_token.encode(revision, (part, table, str(end))))
    return Snapshot(records, revision)
