"""``list()``: the objects of some partitions exactly as they were at one revision.

The snapshot revision R is the last revision handed out when the scan starts.
For each partition, in as few rounds as possible (every partition at once):

1. ``last_rev`` is read; a partition below R is *sealed* at R, so no commit at
   or below R can land there afterwards (a partition at or above R already is);
2. its objects are read, each row carrying the partition's ``last_rev`` L (a
   partition whose reads were several rounds, or with a table read empty, has
   its ``last_rev`` read again after them: an empty read carries none);
3. if L > R, the commits above R that the read caught are undone from their
   change rows (each holds the old value).

So the snapshot is the state at R, and ``watch(since=R)`` continues it with no
gap and no overlap.
"""

from __future__ import annotations

import operator
import uuid
from collections.abc import Callable, Collection, Sequence
from itertools import pairwise
from typing import Any

from nbdb.families import rules
from nbdb.families.widecolumn import layout as L
from nbdb.families.widecolumn.partitions import Partitions
from nbdb.families.widecolumn.primitives import Row, Select
from nbdb.families.widecolumn.sequencer import RevisionSequencer
from nbdb.spi import Record, RefKey, Snapshot

__all__ = ["scan", "undo"]

_LAST_REV = operator.attrgetter("last_rev")
_ID = operator.attrgetter("id")
_new = tuple.__new__

State = dict[RefKey, tuple[int, bytes, int | None]]
"""(table, id) -> (version, data, the revision that wrote it: None where not known)."""


FIRST_READ = 2000
"""Objects of a table in a partition read in the first round; a table with more has the rest of its ids
split into :data:`SPLITS` ranges, read together: the server reads them on several cores (a cold load of
10,000 ports in one Cassandra partition: one driver-paged read of 100-160 ms).

It stays below the driver's fetch size (5,000 rows): a read of at most FIRST_READ rows is one response,
all its rows carrying the same last_rev. A larger read may come in several driver pages, each read when
the previous one is consumed; ``scan_page`` reads the partition's last_rev again after such a read."""
SPLITS = 4


def split_after(order: Callable[[uuid.UUID], Any], after: uuid.UUID, splits: int) -> list[uuid.UUID]:
    """Up to ``splits - 1`` ids above ``after`` in ``order``, increasing, that split random ids evenly.

    nbdb's ids are random (version 4): their high 64 bits are spread evenly, and every store orders such
    ids by them. Ids of other versions are not split (an empty list: the rest is one read), nor are a
    few ids near the top; any ids are covered all the same, whatever their order.
    """
    if after.version != 4:
        return []
    high = after.int >> 64
    span = (1 << 64) - high
    bounds: list[uuid.UUID] = []
    for i in range(1, splits):
        msb = (high + span * i // splits) & ~0xF000 | 0x4000
        bound = uuid.UUID(int=(msb << 64) | _RANDOM_VARIANT)
        if order(bound) > order(bounds[-1] if bounds else after):
            bounds.append(bound)
    return bounds


_RANDOM_VARIANT = 0x8000_0000_0000_0000
"""The low 64 bits of a split point: the RFC 4122 variant, nothing else (the least such id)."""


def undo(state: State, changes: Sequence[Row], tables: Collection[str]) -> None:
    """Take ``state`` back before ``changes`` (the change rows of commits it may include), newest first.

    A change the state does not show (its object is not at the change's new
    version) was not caught by the read and is left alone.
    """
    for change in sorted(changes, key=lambda c: c.rev, reverse=True):
        if change.tbl not in tables:
            continue
        key = (change.tbl, change.id)
        if state.get(key, (0, b"", None))[0] != (change.version or 0):
            continue
        if change.old_version:
            state[key] = (change.old_version, change.old_data or b"", change.old_wrev)
        else:
            state.pop(key, None)


def scan(
    partitions: Partitions,
    sequencer: RevisionSequencer,
    tables: Sequence[str],
    topics: Collection[str | None] | None,
) -> Snapshot:
    """Every object of ``tables`` in ``topics`` (all if None), exactly at one revision."""
    p = partitions
    revision = sequencer.current()
    if topics is None:
        parts = sorted({row.topic for row in p.store.select(L.Q_TOPICS, (p.ns,))})
    else:
        parts = sorted({rules.topic_part(t) for t in topics})
    if not parts:
        return Snapshot([], revision)
    lasts = p.store.select_many([(L.Q_LAST, (p.ns, part)) for part in parts])
    for part, rows in zip(parts, lasts, strict=True):
        before = rows[0].last_rev if rows else None
        if before is None or before < revision:
            p.seal(part, revision)

    reads: list[tuple[Select, tuple[Any, ...]]] = [
        (L.Q_PAGE, (p.ns, part, L.OBJECT, 0, table, FIRST_READ)) for part in parts for table in tables
    ]
    listed = iter(p.store.select_many(reads))
    rows_of: dict[str, list[list[Row]]] = {part: [next(listed) for _ in tables] for part in parts}
    # The rest of each table the first read did not finish: its ids split in ranges read together, and
    # the partition's last_rev read after them all (a range that came back empty carried none).
    rest: list[tuple[str, int]] = []
    reads = []
    for part in parts:
        for i, (table, rows) in enumerate(zip(tables, rows_of[part], strict=True)):
            if len(rows) >= FIRST_READ:
                lows = [rows[-1].id, *split_after(p.store.id_order, rows[-1].id, SPLITS)]
                for low, high in pairwise(lows):
                    reads.append((L.Q_LIST_BETWEEN, (p.ns, part, L.OBJECT, 0, table, low, high)))
                    rest.append((part, i))
                reads.append((L.Q_LIST_AFTER, (p.ns, part, L.OBJECT, 0, table, lows[-1])))
                rest.append((part, i))
    if reads:
        for (part, i), rows in zip(rest, p.store.select_many(reads), strict=True):
            rows_of[part][i] = rows_of[part][i] + rows
    # A read that returned no row carried no last_rev, and the reads of a partition are answered in any
    # order: a commit that emptied a table after another table was read shows in none of the rows. So a
    # partition read in ranges, or with a table that came back empty, has its last_rev read again now,
    # after its whole listing, all in one round.
    again = sorted({part for part, _ in rest} | {part for part in parts if not all(rows_of[part])})
    seen_last: dict[str, int | None] = {}
    for part, rows in zip(again, p.store.select_many([(L.Q_LAST, (p.ns, part)) for part in again]), strict=True):
        seen_last[part] = rows[0].last_rev if rows else None
    for part in parts:
        part_rows = rows_of[part]
        # last_rev is a static column: every row carries the partition's, as it was when its page was read.
        revs = {rev for rows in part_rows for rev in map(_LAST_REV, rows)}
        revs.add(seen_last.get(part))
        revs.discard(None)
        seen_last[part] = max(revs, default=None)

    caught = [part for part, last in seen_last.items() if last is not None and last > revision]
    changes = p.store.select_many(
        [(L.Q_CHANGES, (p.ns, part, L.CHANGE, revision + 1, seen_last[part])) for part in caught]
    )
    undone: dict[str, State] = {}
    for part, rows in zip(caught, changes, strict=True):
        state: State = {}
        for table, listed_rows in zip(tables, rows_of[part], strict=True):
            for row in listed_rows:
                if row.version is not None:
                    state[(table, row.id)] = (row.version, row.data or b"", row.wrev)
        undo(state, rows, tables)
        undone[part] = state

    records: list[Record] = []
    for part, part_rows in rows_of.items():
        topic = rules.topic_of_part(part)
        as_was = undone.get(part)
        if as_was is not None:  # commits above the revision were caught: their objects as they were
            for (table, id), (version, data, written) in as_was.items():
                p.remember((table, id), part)
                records.append(Record(table, id, topic, version, data, None, written))
            continue
        # Nothing to undo (the usual case): the rows as read, straight into records.
        for table, rows in zip(tables, part_rows, strict=True):
            live = [row for row in rows if row.version is not None]  # not a partition's static row alone
            records.extend(
                [_new(Record, (table, row.id, topic, row.version, row.data or b"", None, row.wrev)) for row in live]
            )
            p.remember_all(table, list(map(_ID, live)), part)
    return Snapshot(records, revision)
