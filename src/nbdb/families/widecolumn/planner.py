"""The commit planner: from a transaction and what was read, the one conditional batch of its partition.

Pure logic, no I/O: :func:`plan` takes the operations and the facts the
committer read (the stored rows, where referenced objects live) and returns
the partition's statements, the change rows, and the cross-partition
reference work to do around the batch — or raises the typed error the
transaction deserves (:class:`nbdb.ConflictError`, :class:`nbdb.NotFoundError`,
:class:`nbdb.ReferenceError`, :class:`nbdb.ValidationError`).

Every fact a plan relies on is re-checked by a condition of the batch, so a
plan made from stale reads fails as a whole instead of writing something
wrong: object versions (``IF version = v``), absence (``IF NOT EXISTS``),
the existence of a referenced object in the same partition (``IF version >
0``, and ``ttl_ms = null``: objects that expire cannot be referenced), the
exact referrers of a deleted object (``IF referrers = {...}``) and the order
of commits in the partition (``IF last_rev < G``).

What cannot be checked in the batch is listed for the committer to do around
it: cross-partition references to reserve and release, unique values to
claim before the batch and to give up after it (:mod:`~nbdb.families.widecolumn.unique`),
and the deadline rows of objects that expire (:mod:`~nbdb.families.widecolumn.expiry`).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nbdb import errors
from nbdb.families import rules
from nbdb.families.widecolumn import layout as L
from nbdb.families.widecolumn.primitives import Write
from nbdb.spi import Delete, Put, RefKey, UniqueKey, WriteOp

__all__ = ["Change", "ClaimDropped", "ClaimWanted", "Expiring", "Plan", "StoredObject", "check_shape", "plan"]

Statement = tuple[Write, tuple[Any, ...]]

WRITTEN: Any = object()
"""A statement's placeholder for its commit's revision, which the plan learns later (:meth:`Plan.batch` puts it
in): the ``wrev`` an object's write stores, compared with the version by the next write of a copy that knows it
(``Compare("wrev")``): a copy of an object deleted and created again since names an earlier one (ABA)."""


@dataclass(slots=True)
class StoredObject:
    """One object row as a plan sees it."""

    version: int
    refs: frozenset[RefKey]
    referrers: dict[str, str]
    """Source ref -> ``""`` (written in the source's own commit) or ``"<reservation>:<source partition>"``."""
    data: bytes | None = None
    unique: frozenset[str] = frozenset()
    """The unique values it holds (:func:`~nbdb.families.widecolumn.layout.unique_text`)."""
    ttl_ms: int | None = None
    """The ttl it was created with (None: it does not expire)."""
    deadline: int | None = None
    """When it may be reaped (ms since the epoch), if it expires."""
    written: int | None = None
    """The revision of the commit that wrote it (``wrev``; None: a row an older nbdb wrote)."""


@dataclass(frozen=True, slots=True)
class ClaimWanted:
    """A unique value an object of the commit starts to hold: its claim must be held before the batch."""

    table: str
    owner: uuid.UUID
    key: UniqueKey
    text: str
    releasing: frozenset[uuid.UUID]
    """Objects of the same commit that give the value up in it: the claim may move from them."""


@dataclass(frozen=True, slots=True)
class ClaimDropped:
    """A unique value an object gives up (and nobody in the commit takes): its claim is dropped after the batch."""

    table: str
    owner: uuid.UUID
    text: str


@dataclass(frozen=True, slots=True)
class Expiring:
    """An object created with a ttl: its deadline row is written before the batch."""

    table: str
    id: uuid.UUID
    deadline: int
    """Milliseconds since the epoch."""


@dataclass(frozen=True, slots=True)
class Change:
    """The change one commit makes to one object (version 0: absent)."""

    table: str
    id: uuid.UUID
    data: bytes | None
    version: int
    old_data: bytes | None
    old_version: int
    old_written: int | None = None
    """The revision that wrote the old value (None: unknown, or absent)."""


@dataclass(slots=True)
class Plan:
    """One attempt at a commit in one partition."""

    partition: str
    statements: list[Statement] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    reserve: list[tuple[str, RefKey, str]] = field(default_factory=list)
    """Cross-partition references to reserve before the batch: (target partition, target, source ref)."""
    release: list[tuple[str, RefKey, str]] = field(default_factory=list)
    """Cross-partition references to drop after the batch."""
    verify: dict[RefKey, list[tuple[str, str]]] = field(default_factory=dict)
    """Per deleted object, its referrers known only by a reservation: (source ref, reservation).

    The committer checks whether each source really holds the reference; a live
    one makes the delete a ReferenceError, an abandoned one is cleared first."""
    live: dict[RefKey, list[str]] = field(default_factory=dict)
    """Per deleted object, its referrers written by their own commits (always live)."""
    claims: list[ClaimWanted] = field(default_factory=list)
    unclaims: list[ClaimDropped] = field(default_factory=list)
    expiring: list[Expiring] = field(default_factory=list)
    stamped: list[tuple[int, int]] = field(default_factory=list)
    """(statement, parameter) of each :data:`WRITTEN` among ``statements``: the commit's revision goes there."""

    def stamp(self, write: Write, params: tuple[Any, ...]) -> None:
        """Add a statement whose parameters hold :data:`WRITTEN` (once), which :meth:`batch` makes the revision."""
        self.stamped.append((len(self.statements), params.index(WRITTEN)))
        self.statements.append((write, params))

    def batch(self, namespace: str, revision: int, history: int, first: bool = False) -> list[Statement]:
        """The partition's conditional batch at ``revision``: objects, ``last_rev`` and change rows.

        ``first``: the partition has no ``last_rev`` yet (a null is not below anything).
        """
        out = list(self.statements)
        for at, position in self.stamped:
            write, params = out[at]
            out[at] = (write, (*params[:position], revision, *params[position + 1 :]))
        if first:
            out.append((L.W_LAST_FIRST, (namespace, self.partition, revision, None)))
        else:
            out.append((L.W_LAST_ABOVE, (namespace, self.partition, revision, revision)))
        # Change rows outlive the index rows that point to them, so a watcher never
        # finds an index entry whose change rows expired first.
        ttl = history + 3600
        for c in self.changes:
            written = revision if c.version else None  # the new value's, as its row holds it
            out.append(
                (L.W_CHANGE, (namespace, self.partition, L.CHANGE, revision, c.table, c.id, c.data, c.version,
                              c.old_data, c.old_version, written, c.old_written, ttl))
            )  # fmt: skip
        return out


def check_shape(ops: Sequence[WriteOp]) -> str:
    """The one partition ``ops`` commit to; ValidationError/UnsupportedError for a transaction of another shape."""
    rules.shape_of(ops)
    parts = {rules.topic_part(op.topic) for op in ops}
    if len(parts) > 1:
        raise errors.UnsupportedError(
            "the wide-column family commits atomically within one topic (one partition) only; "
            f"this transaction spans topics {sorted(rules.topic_of_part(p) or '<none>' for p in parts)}"
        )
    return parts.pop()


def plan(
    namespace: str,
    part: str,
    ops: Sequence[WriteOp],
    rows: Mapping[RefKey, StoredObject | None],
    located: Mapping[RefKey, str | None],
    *,
    mortal: Collection[RefKey] = frozenset(),
    now_ms: int = 0,
    guards: Mapping[RefKey, int | None] | None = None,
) -> Plan:
    """The plan of ``ops`` in partition ``part``.

    ``rows``: the stored row in ``part`` of every op that is not a create (None:
    absent), and of creates if they were read. ``located``: where an object
    lives when that matters — for a create, any partition holding its id; for
    an op whose row is absent, its partition elsewhere; for every reference
    target outside ``ops``, its partition (None: it does not exist).
    ``mortal``: targets known to expire. ``now_ms``: the wall clock, for the
    deadlines of objects created with a ttl. ``guards``: the deadline each
    deleted object must still have (the reaper's deletes).
    """
    out = Plan(part)
    shape = rules.shape_of(ops)
    old_refs: dict[RefKey, frozenset[RefKey]] = {}
    expect: dict[RefKey, int] = {}
    for op in ops:
        me = (op.table, op.id)
        row = rows.get(me)
        if me in shape.created:
            where = located.get(me)
            if row is not None or where == part:
                raise rules.already_exists(me)
            if where is not None:
                raise rules.already_exists(me, "in another topic")
            out.versions.append(1)
            continue
        if row is None:
            where = located.get(me)
            if where is not None and where != part:
                raise rules.topic_changed(me, rules.topic_of_part(where), op.topic)
            raise rules.not_found(me)
        if isinstance(op, Put) and op.ttl is not None:
            raise errors.ValidationError(f"{op.table} {op.id}: a ttl is given when an object is created")
        expect[me] = rules.expected_version(op, row.version)
        if op.expect_written is not None and op.expect_written != row.written:
            # A copy of an earlier creation of the id (or of a row an older nbdb wrote since, which names none).
            raise rules.recreated(me, row.version)
        old_refs[me] = row.refs
        out.versions.append(0 if isinstance(op, Delete) else row.version + 1)
    changes = rules.ref_changes(ops, old_refs, shape)
    expires = _expiring(ops, rows, mortal)
    held = _plan_unique(ops, rows, shape, out)

    # Referrer entries to add to and drop from each target (a target in this partition: in the batch).
    for target, sources in changes.added.items():
        if target in expires:
            raise rules.ttl_referenced(sources[0], target)
        if target in shape.created:
            continue  # its INSERT carries the entries
        entries = {L.ref_text(*source): "" for source in sources}
        if target in old_refs:  # updated in this same batch
            out.statements.append((L.W_REF_ADD, (namespace, part, L.OBJECT, 0, *target, entries)))
            continue
        where = located.get(target)
        if where is None:
            raise rules.dangling(sources[0], target)
        if where == part:
            out.statements.append((L.W_REF_ADD_EXISTING, (namespace, part, L.OBJECT, 0, *target, entries, 0, None)))
            continue
        for source in sources:
            out.reserve.append((where, target, L.ref_text(*source)))
    for target, sources in changes.dropped.items():
        if target in shape.deleted:
            continue
        where = part if target in old_refs else located.get(target)
        texts = {L.ref_text(*source) for source in sources}
        if where == part:
            out.statements.append((L.W_REF_DROP, (namespace, part, L.OBJECT, 0, *target, texts)))
        elif where is not None:
            for text in sorted(texts):
                out.release.append((where, target, text))

    for op in ops:
        me = (op.table, op.id)
        row = rows.get(me)
        if isinstance(op, Put):
            ref_texts = {L.ref_text(*t) for t in op.refs} or None
            uniq = held.get(me, frozenset())
            if me in shape.created:
                initial = {L.ref_text(*source): "" for source in changes.added.get(me, ())} or None
                row_values = (namespace, part, L.OBJECT, 0, op.table, op.id, op.id, op.data, 1, ref_texts, initial)
                if uniq or op.ttl is not None:
                    ttl_ms, deadline = _deadline(op.ttl, now_ms)
                    out.stamp(L.W_CREATE_MARKED, (*row_values, uniq or None, ttl_ms, deadline, WRITTEN))
                    if deadline is not None:
                        out.expiring.append(Expiring(op.table, op.id, deadline))
                else:
                    out.stamp(L.W_CREATE, (*row_values, WRITTEN))
                out.changes.append(Change(op.table, op.id, op.data, 1, None, 0))
            else:
                assert row is not None
                version = expect[me]
                values: tuple[Any, ...] = (namespace, part, L.OBJECT, 0, *me, op.data, version + 1, ref_texts)
                # The copy's write too, where it names one (ABA: see WRITTEN); else its version alone.
                written = op.expect_written
                if uniq != row.unique:
                    write = L.W_UPDATE_UNIQUE if written is None else L.W_UPDATE_UNIQUE_WRITTEN
                    values = (*values, uniq or None)
                else:
                    write = L.W_UPDATE if written is None else L.W_UPDATE_WRITTEN
                compared = (version,) if written is None else (version, written)
                out.stamp(write, (*values, WRITTEN, *compared))
                out.changes.append(Change(op.table, op.id, op.data, version + 1, row.data, version, row.written))
            continue
        assert row is not None
        # Entries of sources that this same transaction stops pointing here do not count.
        live: list[str] = []
        unverified: list[tuple[str, str]] = []
        for text, reservation in sorted(row.referrers.items()):
            if not changes.still_points(L.parse_ref(text), me):
                continue
            if reservation:
                unverified.append((text, reservation))
            else:
                live.append(text)
        if live:
            out.live[me] = live
        if unverified:
            out.verify[me] = unverified
        delete = (namespace, part, L.OBJECT, 0, *me, expect[me], row.referrers or None)
        if guards is None or me not in guards:
            if op.expect_written is None:
                out.statements.append((L.W_DELETE, delete))
            else:
                out.statements.append((L.W_DELETE_WRITTEN, (*delete, op.expect_written)))
        elif row.deadline != guards[me]:
            raise errors.ConflictError(f"{me[0]} {me[1]} was refreshed: it does not expire yet", key=me)
        else:
            out.statements.append((L.W_DELETE_EXPIRED, (*delete, guards[me])))
        out.changes.append(Change(op.table, op.id, None, 0, row.data, expect[me], row.written))
    return out


def _deadline(ttl: float | None, now_ms: int) -> tuple[int | None, int | None]:
    """(ttl in ms, deadline in ms since the epoch) of an object created with ``ttl`` (None: it does not expire)."""
    if ttl is None:
        return None, None
    ttl_ms = max(1, round(ttl * 1000))
    return ttl_ms, now_ms + ttl_ms


def _expiring(
    ops: Sequence[WriteOp], rows: Mapping[RefKey, StoredObject | None], mortal: Collection[RefKey]
) -> frozenset[RefKey]:
    """Every object the plan knows to expire: created with a ttl here, stored with one, or known so."""
    out = set(mortal)
    out.update((op.table, op.id) for op in ops if isinstance(op, Put) and op.ttl is not None)
    out.update(key for key, row in rows.items() if row is not None and row.ttl_ms is not None)
    return frozenset(out)


def _plan_unique(
    ops: Sequence[WriteOp], rows: Mapping[RefKey, StoredObject | None], shape: rules.TransactionShape, out: Plan
) -> dict[RefKey, frozenset[str]]:
    """The unique values each written object holds after the commit; fills the plan's claims and unclaims.

    A value two objects of the commit would hold is a UniqueViolationError. A
    value one object gives up and another takes in the same commit moves
    between them (the claim names the one giving it up as ``releasing``).
    """
    wanted: dict[RefKey, dict[str, UniqueKey]] = {}
    before: dict[RefKey, frozenset[str]] = {}
    holder: dict[tuple[str, str], RefKey] = {}
    for op in ops:
        me = (op.table, op.id)
        row = rows.get(me)
        before[me] = frozenset() if me in shape.created or row is None else row.unique
        wanted[me] = {L.unique_text(key): key for key in op.unique} if isinstance(op, Put) else {}
        for text, key in wanted[me].items():
            other = holder.setdefault((op.table, text), me)
            if other != me:
                raise rules.unique_taken(op.table, key.field, key.value, other[1], "in the same transaction")
    for op in ops:
        me = (op.table, op.id)
        for text, key in wanted[me].items():
            if text in before[me]:
                continue  # already its own
            releasing = frozenset(
                other[1] for other in shape.keys
                if other[0] == op.table and text in before[other] and text not in wanted[other]
            )  # fmt: skip
            out.claims.append(ClaimWanted(op.table, op.id, key, text, releasing))
        for text in sorted(before[me] - wanted[me].keys()):
            if (op.table, text) not in holder:
                out.unclaims.append(ClaimDropped(op.table, op.id, text))
    return {me: frozenset(texts) for me, texts in wanted.items()}
