"""The change stream: every commit after a revision, read from the commit index and the partitions.

A watcher reads the dense commit index (``nbdb_seq``) from its cursor and,
for each revision of its topics and tables, that commit's change rows in its
partition. It delivers strictly in revision order and moves its cursor past
a revision only once it is **resolved**: delivered, ``void``, not wanted by
this stream, or passed (``last_rev >= g`` with no change rows: the commit
failed or was sealed out). A revision still in flight blocks the stream; after
``settle`` seconds the watcher seals its partition (see
:mod:`nbdb.families.widecolumn.sequencer`) and moves on.

The cursor moves only when a whole step succeeded, after its changes are
collected for delivery: a read that fails half-way through a step leaves the
cursor where it was, and the next poll starts that step again. So
``revision`` never points past a change the caller has not been given.
:func:`advance` is that rule, with no I/O.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nbdb import errors
from nbdb.families import rules
from nbdb.families.widecolumn import layout as L
from nbdb.families.widecolumn.changes import Intent
from nbdb.families.widecolumn.options import WideColumnOptions
from nbdb.families.widecolumn.partitions import Partitions
from nbdb.families.widecolumn.primitives import Row, Select
from nbdb.families.widecolumn.sequencer import RevisionSequencer
from nbdb.families.widecolumn.sharing import NamespaceState
from nbdb.spi import Record, RecordChange, RecordStream

__all__ = ["Advance", "ChangeStream", "Intent", "advance", "dense_run", "to_changes"]

log = logging.getLogger(__name__)

_FLOOR_CHECK = 1.0
"""Seconds between two reads of the history floor."""
_BLOCKED_PAUSE = 0.002
"""First pause of a stream waiting for a commit in flight (it doubles up to the poll interval)."""
_MAX_IDLE = 0.25
_RESOLVES_PER_STEP = 16


@dataclass(frozen=True, slots=True)
class Advance:
    """What a step may deliver: the changes, the cursor after them, and the entry that stopped it."""

    changes: list[RecordChange]
    cursor: int
    blocked: Intent | None
    """The first wanted entry whose change rows are not known yet (None: the step reached the end)."""


def dense_run(cursor: int, entries: Sequence[Intent]) -> list[Intent]:
    """The entries right after ``cursor``, up to the first hole.

    Raises HistoryGoneError if the entry of ``cursor + 1`` is not the first one
    (it expired or was compacted: resuming from ``cursor`` would skip it).
    """
    if not entries:
        return []
    if entries[0].revision != cursor + 1:
        raise errors.HistoryGoneError(
            f"revision {cursor} is older than the kept change history (it starts at {entries[0].revision})"
        )
    out = [entries[0]]
    for entry in entries[1:]:
        if entry.revision != out[-1].revision + 1:
            break  # never skip past a hole
        out.append(entry)
    return out


def to_changes(intent: Intent, rows: Sequence[Row], tables: frozenset[str]) -> list[RecordChange]:
    """The record changes of one commit's change rows, for ``tables``."""
    topic = rules.topic_of_part(intent.partition)
    out = []
    for row in rows:
        if row.tbl not in tables:
            continue
        # Each with the revision that wrote it, as the change row says (see planner.WRITTEN).
        old = (
            None
            if not row.old_version
            else Record(row.tbl, row.id, topic, row.old_version, row.old_data or b"", None, row.old_wrev)
        )
        new = None if not row.version else Record(row.tbl, row.id, topic, row.version, row.data or b"", None, row.wrev)
        if old is not None or new is not None:
            out.append(RecordChange(row.tbl, row.id, topic, old, new, intent.revision))
    return out


def advance(
    cursor: int,
    entries: Sequence[Intent],
    rows: Mapping[int, Sequence[Row]],
    wants: Callable[[Intent], bool],
    tables: frozenset[str],
) -> Advance:
    """Walk ``entries`` (a dense run after ``cursor``) as far as they are resolved.

    ``rows`` maps a revision to its change rows once known (an empty list: the
    commit is known never to land). A wanted entry without rows stops the walk:
    the cursor stays before it, so nothing after it is delivered before it.
    """
    out: list[RecordChange] = []
    for entry in entries:
        if wants(entry):
            found = rows.get(entry.revision)
            if found is None:
                return Advance(out, cursor, entry)
            out += to_changes(entry, found, tables)
        cursor = entry.revision
    return Advance(out, cursor, None)


class ChangeStream(RecordStream):
    """Changes of some tables (and topics) after a revision.

    Commits of this process come from memory (:class:`~nbdb.families.widecolumn.sharing.RecentCommits`)
    as soon as they land; the store is read for the others, every ``poll_interval`` (growing to 0.25 s
    while the store shows nothing new), and at once when a revision this process does not hold stands
    before ones it does.
    """

    def __init__(
        self,
        partitions: Partitions,
        sequencer: RevisionSequencer,
        options: WideColumnOptions,
        shared: NamespaceState,
        tables: frozenset[str],
        parts: frozenset[str] | None,
        since: int,
    ) -> None:
        self._p = partitions
        self._sequencer = sequencer
        self._o = options
        self._shared = shared
        self._tables = tables
        self._parts = parts
        self._cursor = since
        self._pending_since: dict[int, float] = {}
        self._wake = shared.signal.subscribe()
        self._closed = False
        self._floor_checked = -_FLOOR_CHECK
        self._idle = options.poll_interval
        self._blocked_pause = _BLOCKED_PAUSE
        self._more = False
        """The last read of the store stopped at the end of a full page of the index."""
        self._next_read = 0.0
        """When the store is read next (monotonic seconds)."""

    @property
    def revision(self) -> int:
        return self._cursor

    def close(self) -> None:
        self._closed = True
        self._shared.signal.unsubscribe(self._wake)
        self._wake.set()

    def poll(self, timeout: float | None) -> list[RecordChange]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed:
            self._wake.clear()  # before looking: a commit that lands meanwhile wakes the next wait
            out = self._step_local()
            if not out and self._read_due():
                out = self._step()
            if out:
                return out
            now = time.monotonic()
            remaining = None if deadline is None else deadline - now
            if remaining is not None and remaining <= 0:
                return []
            pause = max(0.0, self._next_read - now)
            self._wake.wait(pause if remaining is None else min(pause, remaining))
        return []

    def _read_due(self) -> bool:
        # A revision this process does not hold stands before ones it does: read it now (unless a
        # commit of this process is on its way with it: that commit will say when it lands).
        if time.monotonic() >= self._next_read:
            return True
        recent = self._shared.recent
        return recent.holds_after(self._cursor) and not recent.in_flight(self._cursor + 1)

    def _step_local(self) -> list[RecordChange]:
        """Deliver this process's own commits right after the cursor, from memory."""
        run = self._shared.recent.run_after(self._cursor, self._o.history)
        if not run:
            return []
        entries = [intent for intent, _ in run]
        progress = advance(self._cursor, entries, {i.revision: rows for i, rows in run}, self._wants, self._tables)
        self._cursor = progress.cursor
        # Past a commit of this process the stream may have been waiting for: what follows it in the
        # store (other processes' commits) is looked for within the usual interval, not at the seal.
        self._next_read = min(self._next_read, time.monotonic() + self._idle)
        return progress.changes

    def _wants(self, entry: Intent) -> bool:
        return (
            not entry.void
            and (self._parts is None or entry.partition in self._parts)
            and not entry.tables.isdisjoint(self._tables)
        )

    # ---------------------------------------------------------------- one step

    def _step(self) -> list[RecordChange]:
        """Read the store: deliverable changes after the cursor; moves the cursor last, then plans the next read."""
        out, blocked = self._read_step()
        if blocked is not None and self._shared.recent.in_flight(blocked.revision):
            # A commit of this process: it wakes the stream when it lands; read again only to seal it.
            started = self._pending_since.get(blocked.revision, time.monotonic())
            self._next_read = started + self._o.settle
        elif blocked is not None:  # another process's commit in flight: it lands within milliseconds, usually
            self._blocked_pause = min(self._blocked_pause * 2, self._o.poll_interval) if not out else _BLOCKED_PAUSE
            self._next_read = time.monotonic() + self._blocked_pause
        elif out:  # someone else is writing: look again soon (at once if a page was full)
            self._blocked_pause, self._idle = _BLOCKED_PAUSE, self._o.poll_interval
            self._next_read = time.monotonic() + (0.0 if self._more else self._o.poll_interval)
        else:
            self._next_read = time.monotonic() + self._idle
            self._idle = min(self._idle * 1.5, _MAX_IDLE)
        return out

    def _read_step(self) -> tuple[list[RecordChange], Intent | None]:
        """Deliverable changes and the entry of a commit in flight that stopped the step; moves the cursor last."""
        now = time.monotonic()
        if now - self._floor_checked > _FLOOR_CHECK:
            floor = self._sequencer.floor()
            self._floor_checked = now
            if self._cursor < floor:
                raise errors.HistoryGoneError(f"revision {self._cursor} was compacted (history starts at {floor})")
            self._check_own_commits_kept()
        entries = self._entries()
        if not entries:
            return [], None
        full_page = len(entries) >= L.INTENT_PAGE
        local = self._local_in_flight(entries, now)
        if local is not None:
            entries = [e for e in entries if e.revision < local.revision]
            if not entries:
                return [], local
        wanted = [e for e in entries if self._wants(e)]
        rows = self._change_rows(wanted)
        for entry in wanted:
            if entry.revision not in rows:
                # In flight, or stalled: its ``settle`` runs from now, when it is first seen, not from when
                # the stalled ones before it are resolved (a crashed process's group of k revisions cost
                # every watcher k settles, one after the other).
                self._pending_since.setdefault(entry.revision, now)
        progress = advance(self._cursor, entries, rows, self._wants, self._tables)
        for _ in range(_RESOLVES_PER_STEP):
            if progress.blocked is None:
                break
            resolved = self._resolve(progress.blocked)
            if resolved is None:
                break  # in flight: deliver what comes before it, nothing after
            rows[progress.blocked.revision] = resolved
            progress = advance(self._cursor, entries, rows, self._wants, self._tables)
        # Only now, with every read of the step done, does the cursor move.
        self._cursor = progress.cursor
        for revision in [r for r in self._pending_since if r <= progress.cursor]:
            del self._pending_since[revision]
        self._more = full_page and local is None and progress.blocked is None
        return progress.changes, progress.blocked or local

    def _check_own_commits_kept(self) -> None:
        """HistoryGoneError if the store lost a commit this process saw land, at or below the cursor.

        A commit writes the sequencer's head first and its batch after; a
        node that crashed without a durable commit log can come back with the
        head and without the batch, and the check on the head alone misses
        that. The batch's change rows stay for the whole history (a seal by a
        later list would hide a lost ``last_rev``, not them), so their absence
        for the newest commit this process saw land means the store lost it.
        The process then forgets its recent commits, as the sequencer does when
        it meets a loss, so a watch from the re-list goes on.
        """
        own = self._shared.recent.latest_landed(self._cursor, self._o.history)
        if own is None:
            return
        if not self._p.changes(own.partition, own.revision, own.revision):
            self._shared.recent.clear()
            raise errors.HistoryGoneError(
                f"the store lost the commit at revision {own.revision} this process saw land: it lost recent "
                "commits (a crash without a durable commit log)"
            )

    def _local_in_flight(self, entries: Sequence[Intent], now: float) -> Intent | None:
        """The first entry of a commit of this process still on its way, unless it is overdue.

        Such a commit is delivered from memory as soon as it lands (it wakes the
        stream); reading it from the store meanwhile would only cost reads. One
        stalled past ``settle`` is resolved like any other (sealed).
        """
        recent = self._shared.recent
        for entry in entries:
            if recent.in_flight(entry.revision):
                first = self._pending_since.setdefault(entry.revision, now)
                if now - first < self._o.settle:
                    return entry
        return None

    def _entries(self) -> list[Intent]:
        """The dense run of index entries after the cursor (HistoryGoneError if they expired)."""
        ns, cursor = self._p.ns, self._cursor
        bucket = L.bucket_of(cursor + 1, self._sequencer.bucket_size)
        rows = self._p.read(L.Q_INTENTS, (ns, bucket, cursor))
        if not rows:
            head_rows = self._p.read(L.Q_HEAD, (ns, bucket))
            head = head_rows[0].head if head_rows else None
            if cursor % self._sequencer.bucket_size and (head is None or head < cursor):
                # The cursor came from this store (a head read or an index entry): the store lost it.
                raise errors.HistoryGoneError(
                    f"the store is at revision {head} although this watch was at {cursor}: it lost recent "
                    "commits (a crash without a durable commit log)"
                )
            if head is None or head <= cursor:
                return []
            # The head moved past the cursor: its index rows were written with
            # it (one batch), so they are readable now unless they expired.
            rows = self._p.read(L.Q_INTENTS, (ns, bucket, cursor))
            if not rows:
                raise errors.HistoryGoneError(
                    f"revision {cursor} is older than the kept change history (the index rows expired)"
                )
        return dense_run(cursor, [Intent(r.g, r.topic, frozenset(r.tables or ()), bool(r.void)) for r in rows])

    def _change_rows(self, wanted: Sequence[Intent]) -> dict[int, list[Row]]:
        """The change rows of the wanted entries, one range read per partition, all sent at once."""
        spans: dict[str, tuple[int, int]] = {}
        for entry in wanted:
            low, high = spans.get(entry.partition, (entry.revision, entry.revision))
            spans[entry.partition] = (min(low, entry.revision), max(high, entry.revision))
        reads: list[tuple[Select, tuple[Any, ...]]] = [
            (L.Q_CHANGES, (self._p.ns, part, L.CHANGE, low, high)) for part, (low, high) in spans.items()
        ]
        found: dict[int, list[Row]] = {}
        for result in self._p.store.select_many(reads):
            for row in result:
                found.setdefault(row.rev, []).append(row)
        return found

    def _resolve(self, entry: Intent) -> list[Row] | None:
        """The change rows of an entry that had none ([] if it never lands), or None while it is in flight."""
        g, part, ns = entry.revision, entry.partition, self._p.ns
        first = self._pending_since.setdefault(g, time.monotonic())
        changes, index, last = self._p.store.select_many(
            [
                (L.Q_CHANGES, (ns, part, L.CHANGE, g, g)),
                (L.Q_INTENT, (ns, L.bucket_of(g, self._sequencer.bucket_size), g)),
                (L.Q_LAST, (ns, part)),
            ]
        )
        if changes:
            return changes
        if index and index[0].void:
            return []
        last_rev = last[0].last_rev if last else None
        if last_rev is None or last_rev < g:
            if time.monotonic() - first < self._o.settle:
                return None
            log.info("revision %d in %r is still not committed after %.1fs: sealing", g, part, self._o.settle)
            self._p.seal(part, g)
        # last_rev >= g: the commit at g is in the partition now, or never will be. A serial
        # read finishes a commit whose reply a quorum read could still miss.
        return self._p.changes(part, g, g, serial=True)
