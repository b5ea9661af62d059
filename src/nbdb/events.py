"""Change events delivered by watches and caches."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from operator import attrgetter
from typing import Any, Generic, TypeVar
from uuid import UUID

from nbdb.models.base import Model

__all__ = ["ChangeEvent", "EventKind", "Key", "in_commit_order"]

M = TypeVar("M", bound=Model)

Key = tuple[type[Model], UUID]
"""What a work queue holds for an object: its model class and its id."""


class EventKind(StrEnum):
    """What happened to an object."""

    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class ChangeEvent(Generic[M]):
    """One committed change of one object.

    ``old`` is the state before (None on create), ``new`` the state after
    (None on delete). ``revision`` is the resume token of the commit.
    ``synthetic`` is True for events a cache made up after a re-list, when the
    backend could not replay history: they carry the net difference.
    """

    kind: EventKind
    model: type[M]
    old: M | None
    new: M | None
    revision: int
    synthetic: bool = False

    @property
    def object(self) -> M:
        """The object after the change, or its last state if it was deleted."""
        obj = self.new if self.new is not None else self.old
        assert obj is not None
        return obj

    @property
    def id(self) -> UUID:
        """The id of the changed object."""
        return self.object.id

    @property
    def key(self) -> Key:
        """``(model, id)`` of the changed object, as work queues hold it."""
        return (self.model, self.object.id)


_RefKey = tuple[str, UUID]


def in_commit_order(events: Sequence[ChangeEvent[Any]]) -> list[ChangeEvent[Any]]:
    """``events`` with those of each revision in an order that never shows a reference to a missing object.

    A commit's changes reach its subscribers one at a time. Within each run of
    one revision: creates first, the referenced before their referrers (a new
    switch before its new ports); then updates (one that points to a new object
    after it, one that drops a reference to a deleted object before it); then
    deletes, referrers before the referenced (a switch's ports before the switch).
    A ``cascade=True`` delete delivered the switch's deletion first, then its
    ports' and the port group's update that cleared them, and the order changed
    from one store to the other (each kept its own: the ops', its keys'); a
    subscriber that looked an event's references up saw them dangle. Events of
    different revisions, and of one object, keep their order. Watches and
    caches both deliver through this one rule.
    """
    count = len(events)
    if count < 2 or len(set(map(_REVISION, events))) == count:
        return list(events)  # one event per commit (the common batch): told in C
    out: list[ChangeEvent[Any]] = []
    start = 0
    while start < count:
        revision = events[start].revision
        end = start + 1
        while end < count and events[end].revision == revision:
            end += 1
        if end - start == 1:
            out.append(events[start])
        else:
            out += _one_commit(events[start:end])
        start = end
    return out


def _one_commit(events: Sequence[ChangeEvent[Any]]) -> list[ChangeEvent[Any]]:
    created: list[ChangeEvent[Any]] = []
    updated: list[ChangeEvent[Any]] = []
    deleted: list[ChangeEvent[Any]] = []
    by_kind = {EventKind.CREATED: created.append, EventKind.UPDATED: updated.append, EventKind.DELETED: deleted.append}
    for event in events:
        by_kind[event.kind](event)
    if len(created) > 1:
        created = _referenced_first(created)
    if len(deleted) > 1:
        deleted = _referenced_first(deleted, referrers_first=True)
    return created + updated + deleted


def _referenced_first(events: list[ChangeEvent[Any]], *, referrers_first: bool = False) -> list[ChangeEvent[Any]]:
    """``events`` (one kind, one revision) with each referenced object before its referrers (or after them).

    By their models first: the tables of the commit ranked by how many of them each one reaches
    through its models' references (a switch before its ports, its ports before their port
    group), the events of each model kept in their order: a commit of 10,000 ports pays no
    lookup of their references. Objects of tables that reach themselves (a model that
    references its own table, models that reference each other) are ordered one by one,
    through their references, among their own group. A cycle of objects (which no store lets a
    commit make whole) is cut where the walk meets it.
    """
    buckets: dict[type[Model], list[ChangeEvent[Any]]] = {}
    for event in events:
        bucket = buckets.get(event.model)
        if bucket is None:
            buckets[event.model] = [event]
        else:
            bucket.append(event)
    models = {model.nbdb_table: model for model in buckets}
    reach = _reaches(models)
    if len(models) == 1:
        (table,) = models
        return _by_objects(events, referrers_first) if table in reach[table] else events
    group = {t: min(u for u in reach[t] if t in reach[u]) if t in reach[t] else t for t in models}
    rank = {t: (len({u for u in reach[t] if group[u] != group[t]}), group[t]) for t in models}
    out: list[ChangeEvent[Any]] = []
    tables = sorted(models, key=rank.__getitem__, reverse=referrers_first)
    start = 0
    while start < len(tables):  # the tables of one rank and group: one cyclic group, or one table
        end = start + 1
        while end < len(tables) and rank[tables[end]] == rank[tables[start]]:
            end += 1
        run = [event for table in tables[start:end] for event in buckets[models[table]]]
        out += _by_objects(run, referrers_first) if tables[start] in reach[tables[start]] else run
        start = end
    return out


def _reaches(models: dict[str, type[Model]]) -> dict[str, set[str]]:
    """The tables (of ``models``) each one reaches through one or more references of its model."""
    direct = {t: {spec.target for spec in m.nbdb_references if spec.target in models} for t, m in models.items()}
    reach: dict[str, set[str]] = {}
    for table in models:
        seen: set[str] = set()
        todo = list(direct[table])
        while todo:
            nxt = todo.pop()
            if nxt not in seen:
                seen.add(nxt)
                todo += direct[nxt]
        reach[table] = seen
    return reach


_REVISION = attrgetter("revision")


def _key(event: ChangeEvent[Any]) -> _RefKey:
    return (event.model.nbdb_table, event.object.id)


def _refs(event: ChangeEvent[Any]) -> Iterable[_RefKey]:
    """The (table, id) the event's object points to (a projected cache's view: through the fields it kept)."""
    obj = event.object
    if isinstance(obj, Model):
        return obj.ref_keys()
    keys: list[_RefKey] = []
    for spec in event.model.nbdb_references:
        value = getattr(obj, spec.field, None)
        if value is None:
            continue
        if spec.many:
            keys += [(spec.target, member) for member in value]
        else:
            keys.append((spec.target, value))
    return keys


def _by_objects(events: list[ChangeEvent[Any]], referrers_first: bool) -> list[ChangeEvent[Any]]:
    """``events`` ordered through their objects' own references (see :func:`_referenced_first`)."""
    at = {_key(event): i for i, event in enumerate(events)}
    edges: list[list[int]] = [[] for _ in events]
    for i, event in enumerate(events):
        for ref in _refs(event):
            j = at.get(ref)
            if j is not None and j != i:
                if referrers_first:
                    edges[j].append(i)  # j must wait for its referrer i
                else:
                    edges[i].append(j)  # i must wait for what it references, j
    done = [False] * len(events)
    order: list[ChangeEvent[Any]] = []
    for root in range(len(events)):
        if done[root]:
            continue
        done[root] = True
        stack = [(root, iter(edges[root]))]
        while stack:  # depth first, post-order, without recursion (a chain may be long)
            node, pending = stack[-1]
            for nxt in pending:
                if not done[nxt]:
                    done[nxt] = True
                    stack.append((nxt, iter(edges[nxt])))
                    break
            else:
                stack.pop()
                order.append(events[node])
    return order
