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
0``), the exact referrers of a deleted object (``IF referrers = {...}``) and
the order of commits in the partition (``IF last_rev < G``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nbdb import errors
from nbdb.families import rules
from nbdb.families.widecolumn import layout as L
from nbdb.families.widecolumn.primitives import Write
from nbdb.spi import Delete, Put, RefKey, WriteOp

__all__ = ["Change", "Plan", "StoredObject", "check_shape", "plan"]

Statement = tuple[Write, tuple[Any, ...]]


@dataclass(slots=True)
class StoredObject:
    """One object row as a plan sees it."""

    version: int
    refs: frozenset[RefKey]
    referrers: dict[str, str]
    """Source ref -> ``""`` (written in the source's own commit) or ``"<reservation>:<source partition>"``."""
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """The change one commit makes to one object (version 0: absent)."""

    table: str
    id: uuid.UUID
    data: bytes | None
    version: int
    old_data: bytes | None
    old_version: int


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

    def batch(self, namespace: str, revision: int, history: int, first: bool = False) -> list[Statement]:
        """The partition's conditional batch at ``revision``: objects, ``last_rev`` and change rows.

        ``first``: the partition has no ``last_rev`` yet (a null is not below anything).
        """
        out = list(self.statements)
        if first:
            out.append((L.W_LAST_FIRST, (namespace, self.partition, revision, None)))
        else:
            out.append((L.W_LAST_ABOVE, (namespace, self.partition, revision, revision)))
        # Change rows outlive the index rows that point to them, so a watcher never
        # finds an index entry whose change rows expired first.
        ttl = history + 3600
        for c in self.changes:
            out.append(
                (L.W_CHANGE, (namespace, self.partition, L.CHANGE, revision, c.table, c.id, c.data, c.version,
                              c.old_data, c.old_version, ttl))
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
) -> Plan:
    """The plan of ``ops`` in partition ``part``.

    ``rows``: the stored row in ``part`` of every op that is not a create (None:
    absent), and of creates if they were read. ``located``: where an object
    lives when that matters — for a create, any partition holding its id; for
    an op whose row is absent, its partition elsewhere; for every reference
    target outside ``ops``, its partition (None: it does not exist).
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
        expect[me] = rules.expected_version(op, row.version)
        old_refs[me] = row.refs
        out.versions.append(0 if isinstance(op, Delete) else row.version + 1)
    changes = rules.ref_changes(ops, old_refs, shape)

    # Referrer entries to add to and drop from each target (a target in this partition: in the batch).
    for target, sources in changes.added.items():
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
            out.statements.append((L.W_REF_ADD_EXISTING, (namespace, part, L.OBJECT, 0, *target, entries, 0)))
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
            if me in shape.created:
                initial = {L.ref_text(*source): "" for source in changes.added.get(me, ())} or None
                out.statements.append(
                    (L.W_CREATE, (namespace, part, L.OBJECT, 0, op.table, op.id, op.id, op.data, 1, ref_texts, initial))
                )
                out.changes.append(Change(op.table, op.id, op.data, 1, None, 0))
            else:
                assert row is not None
                version = expect[me]
                out.statements.append(
                    (L.W_UPDATE, (namespace, part, L.OBJECT, 0, *me, op.data, version + 1, ref_texts, version))
                )
                out.changes.append(Change(op.table, op.id, op.data, version + 1, row.data, version))
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
        out.statements.append((L.W_DELETE, (namespace, part, L.OBJECT, 0, *me, expect[me], row.referrers or None)))
        out.changes.append(Change(op.table, op.id, None, 0, row.data, expect[me]))
    return out
