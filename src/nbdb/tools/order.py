"""Dependency order: parents before children, from the models' declared references.

A model depends on every table its reference fields name (``LogicalSwitchPort``
on ``LogicalSwitch``, ``DHCPOptions`` and ``Chassis``). :func:`table_order`
sorts tables so that each comes after the tables it references;
:func:`object_order` sorts objects the same way and also handles what a table
order cannot: a table that references itself and reference cycles between
tables. Objects on a cycle of *objects* are sorted by their required
references; an optional reference of the cycle then points forward, and the
writer creates that object without it and sets it once the target exists (see
:class:`nbdb.tools.apply.Applier`). A cycle made only of required references
cannot be created at all and is refused with :class:`nbdb.ReferenceError`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from nbdb.models.base import Model

__all__ = ["ObjectKey", "TableOrder", "key_of", "object_order", "owned_after", "owner_of", "table_order"]

ObjectKey = tuple[str, uuid.UUID]
"""An object's address: (table, id)."""


def key_of(obj: Model) -> ObjectKey:
    """The (table, id) of ``obj``."""
    return (obj.nbdb_table, obj.id)


def owner_of(obj: Model) -> ObjectKey | None:
    """The (table, id) of the object that owns ``obj`` (its ``nbdb_owned_by`` field's target), or None."""
    owned_by = type(obj).nbdb_owned_by
    if owned_by:
        for spec in obj.nbdb_references:
            if spec.field in owned_by:
                ids = spec.ids(obj)
                return (spec.target, ids[0]) if ids else None
    return None


def owned_after(objects: Sequence[Model]) -> list[Model]:
    """``objects`` (each after the objects of the list it references, as :func:`object_order` gives them)
    with each owned object moved right after its owner, where that keeps the order.

    :func:`object_order` takes table by table: every meter, then every band. A writer that cuts the
    list into transactions then split an owner from its children, and some store refuses one without
    the other (OVN's ``Meter.bands`` holds at least one band: a meter alone is refused). An owned object
    moves only if every other object of the list it references comes before its owner, and only next
    to an owner that does not move itself, so each object still comes after the objects it references.
    """
    where = {key_of(obj): i for i, obj in enumerate(objects)}
    children: dict[ObjectKey, list[Model]] = {}
    moved: set[ObjectKey] = set()
    for i, obj in enumerate(objects):
        owner = owner_of(obj)
        if owner is None or owner in moved:
            continue
        at = where.get(owner)
        if at is None or at >= i or any(where.get(t, -1) > at for t in obj.ref_keys()):
            continue
        children.setdefault(owner, []).append(obj)
        moved.add(key_of(obj))
    if not moved:
        return list(objects)
    out: list[Model] = []
    for obj in objects:
        key = key_of(obj)
        if key not in moved:
            out.append(obj)
            out += children.get(key, ())
    return out


@dataclass(frozen=True, slots=True)
class TableOrder:
    """Tables sorted parents first, and the groups of tables that reference each other."""

    models: tuple[type[Model], ...]
    """Every model, each after the models it references (cycles: alphabetical within the cycle)."""
    cycles: tuple[tuple[str, ...], ...]
    """Tables on a reference cycle (a self-referencing table is a cycle of one)."""

    @property
    def tables(self) -> tuple[str, ...]:
        """The table names, in order."""
        return tuple(m.nbdb_table for m in self.models)

    def rank(self) -> dict[str, int]:
        """Table name -> position in the order."""
        return {m.nbdb_table: i for i, m in enumerate(self.models)}


K = TypeVar("K", bound=Hashable)


def _components(graph: Mapping[K, Sequence[K]], roots: Iterable[K]) -> list[list[K]]:
    """Strongly connected components (Tarjan, iterative), each emitted after every one it reaches."""
    index: dict[K, int] = {}
    low: dict[K, int] = {}
    on_stack: set[K] = set()
    stack: list[K] = []
    out: list[list[K]] = []
    counter = 0
    for root in roots:
        if root in index:
            continue
        work: list[tuple[K, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            edges = graph[node]
            if i < len(edges):
                work.append((node, i + 1))
                nxt = edges[i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                component.reverse()
                out.append(component)
    return out


def table_order(models: Iterable[type[Model]]) -> TableOrder:
    """Sort ``models`` so that each comes after every model it references.

    References to tables outside ``models`` are ignored (those objects must
    already exist where the copy goes). Ties are broken by table name, so the
    order is stable from run to run.
    """
    by_table = {m.nbdb_table: m for m in models}
    graph = {t: sorted({r.target for r in m.nbdb_references if r.target in by_table}) for t, m in by_table.items()}
    components = [sorted(c) for c in _components(graph, sorted(graph))]
    cycles = tuple(tuple(c) for c in components if len(c) > 1 or c[0] in graph[c[0]])
    component_of = {t: i for i, c in enumerate(components) for t in c}
    # Kahn over the condensation with a name-ordered ready set, for a stable order.
    deps = {i: {component_of[d] for t in c for d in graph[t]} - {i} for i, c in enumerate(components)}
    ordered: list[str] = []
    done: set[int] = set()
    while len(done) < len(components):
        ready = sorted((c for c in deps if c not in done and deps[c] <= done), key=lambda c: components[c][0])
        first = ready[0]
        done.add(first)
        ordered += components[first]
    return TableOrder(tuple(by_table[t] for t in ordered), cycles)


def object_order(objects: Iterable[Model], tables: TableOrder | None = None) -> list[Model]:
    """``objects`` sorted so that each comes after the objects (of this set) it references.

    Objects are taken table by table in :func:`table_order` (so that one
    table's objects stay together), each after its targets. Objects on a cycle
    are sorted by their required references only: the optional references
    that then point forward are the ones a writer defers. A cycle of required
    references is left as it is (it cannot be created one object at a time).
    """
    objs = list(objects)
    if tables is None:
        tables = table_order({type(o) for o in objs})
    rank = tables.rank()
    by_key = {key_of(o): o for o in objs}

    def sort_key(key: ObjectKey) -> tuple[int, str, str]:
        return (rank.get(key[0], len(rank)), key[0], str(key[1]))

    graph = {key: sorted((t for t in obj.ref_keys() if t in by_key), key=sort_key) for key, obj in by_key.items()}
    out: list[Model] = []
    for component in _components(graph, sorted(by_key, key=sort_key)):
        if len(component) == 1:
            out.append(by_key[component[0]])
        else:
            out += [by_key[k] for k in _required_first(component, by_key, sort_key)]
    return out


def _required_first(
    members: list[ObjectKey], by_key: Mapping[ObjectKey, Model], sort_key: Callable[[ObjectKey], Any]
) -> list[ObjectKey]:
    """Members of a cycle, each after the members its required references name (Kahn; stable)."""
    inside = set(members)
    needs = {
        k: {
            (spec.target, i)
            for spec in by_key[k].nbdb_references
            if not spec.optional and not spec.many
            for i in spec.ids(by_key[k])
            if (spec.target, i) in inside and (spec.target, i) != k
        }
        for k in members
    }
    out: list[ObjectKey] = []
    placed: set[ObjectKey] = set()
    remaining = sorted(members, key=sort_key)
    while remaining:
        ready = [k for k in remaining if needs[k] <= placed] or remaining[:1]  # a required cycle: give up on it
        out.append(ready[0])
        placed.add(ready[0])
        remaining.remove(ready[0])
    return out
