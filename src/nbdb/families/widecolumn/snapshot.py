"""``list()``: the objects of some partitions exactly as they were at one revision.

The snapshot revision R is the last revision handed out when the scan starts.
For each partition, in as few rounds as possible (every partition at once):

1. ``last_rev`` is read; a partition below R is *sealed* at R, so no commit at
   or below R can land there afterwards (a partition at or above R already is);
2. its objects are read, each row carrying the partition's ``last_rev`` L;
3. if L > R, the commits above R that the read caught are undone from their
   change rows (each holds the old value).

So the snapshot is the state at R, and ``watch(since=R)`` continues it with no
gap and no overlap.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from nbdb.families import rules
from nbdb.families.widecolumn import layout as L
from nbdb.families.widecolumn.partitions import Partitions
from nbdb.families.widecolumn.primitives import Row, Select
from nbdb.families.widecolumn.sequencer import RevisionSequencer
from nbdb.spi import Record, RefKey, Snapshot

__all__ = ["scan", "undo"]

State = dict[RefKey, tuple[int, bytes]]
"""(table, id) -> (version, data)."""


def undo(state: State, changes: Sequence[Row], tables: Collection[str]) -> None:
    """Take ``state`` back before ``changes`` (the change rows of commits it may include), newest first.

    A change the state does not show (its object is not at the change's new
    version) was not caught by the read and is left alone.
    """
    for change in sorted(changes, key=lambda c: c.rev, reverse=True):
        if change.tbl not in tables:
            continue
        key = (change.tbl, change.id)
        if state.get(key, (0, b""))[0] != (change.version or 0):
            continue
        if change.old_version:
            state[key] = (change.old_version, change.old_data or b"")
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
        (L.Q_LIST, (p.ns, part, L.OBJECT, 0, table)) for part in parts for table in tables
    ]
    listed = iter(p.store.select_many(reads))
    states: dict[str, State] = {}
    seen_last: dict[str, int | None] = {}
    for part in parts:
        state: State = {}
        last: int | None = None
        for table in tables:
            for row in next(listed):
                if row.last_rev is not None and (last is None or row.last_rev > last):
                    last = row.last_rev
                if row.version is not None:
                    state[(table, row.id)] = (row.version, row.data or b"")
        states[part] = state
        seen_last[part] = last
    # A partition whose read returned no row carried no last_rev: read it now (after the listing).
    empty = [part for part, last in seen_last.items() if last is None]
    for part, rows in zip(empty, p.store.select_many([(L.Q_LAST, (p.ns, part)) for part in empty]), strict=True):
        seen_last[part] = rows[0].last_rev if rows else None

    caught = [part for part, last in seen_last.items() if last is not None and last > revision]
    changes = p.store.select_many(
        [(L.Q_CHANGES, (p.ns, part, L.CHANGE, revision + 1, seen_last[part])) for part in caught]
    )
    for part, rows in zip(caught, changes, strict=True):
        undo(states[part], rows, tables)

    records: list[Record] = []
    for part, state in states.items():
        topic = rules.topic_of_part(part)
        for (table, id), (version, data) in state.items():
            p.remember((table, id), part)
            records.append(Record(table, id, topic, version, data))
    return Snapshot(records, revision)
