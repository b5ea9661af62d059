"""Deleting with ``cascade=True``: the dependents found through references, in one commit.

Dependents whose reference is required are deleted too (recursively); an
optional or list reference is cleared instead — unless clearing it breaks
the dependent's own rules, in which case it goes as well.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from nbdb import errors
from nbdb.models.base import Model, model_for_table
from nbdb.spi import Backend, Delete, RefKey, WriteOp
from nbdb.writes import delete_of, put_of

__all__ = ["cascade_ops"]


def cascade_ops(backend: Backend, get: Callable[[type[Model], UUID], Model], root: Delete) -> list[WriteOp]:
    """The deletes and updates that make deleting ``root`` leave no reference dangling."""
    deletes: dict[RefKey, WriteOp] = {(root.table, root.id): root}
    updates: dict[RefKey, Model] = {}
    level = [(root.table, root.id)]
    while level:
        # The referrers of a whole level in batched reads (Backend.referrers_of), not a read per
        # dependent: a switch's 40,000 ports were 40,000 reads, each on Redis copying the last
        # commit's log entry (quadratic when one transaction made the ports).
        found = backend.referrers_of(level)
        level = []
        for target, sources in found.items():
            _plan_target(target, sources, get, deletes, updates, level)
    ops: list[WriteOp] = list(deletes.values())
    ops += [put_of(obj, obj.version)[0] for obj in updates.values()]
    return ops


def _plan_target(
    target: RefKey,
    sources: list[RefKey],
    get: Callable[[type[Model], UUID], Model],
    deletes: dict[RefKey, WriteOp],
    updates: dict[RefKey, Model],
    doomed_next: list[RefKey],
) -> None:
    """Delete or clear each referrer of ``target``; the referrers deleted join ``doomed_next``."""
    for source in sources:
        if source in deletes:
            continue
        obj = updates.get(source)
        if obj is None:
            try:
                obj = get(model_for_table(source[0]), source[1])
            except errors.NotFoundError:
                # Deleted since it was listed, or a referrer entry another writer left that names
                # no object: nothing to delete or clear (the target's own delete checks its entries).
                continue
        changes: dict[str, Any] = {}
        doomed = False
        for spec in obj.nbdb_references:
            if spec.target != target[0] or target[1] not in spec.ids(obj):
                continue
            if spec.many:
                changes[spec.field] = [i for i in getattr(obj, spec.field) if i != target[1]]
            elif spec.optional:
                changes[spec.field] = None
            else:
                doomed = True
        if not doomed and changes:
            try:
                updates[source] = obj.replace(**changes)
            except errors.ValidationError:
                # Clearing the reference breaks the model's own rules (an
                # ACL must belong to a switch or a port group): it goes too.
                doomed = True
        if doomed:
            updates.pop(source, None)
            deletes[source] = delete_of(obj)
            doomed_next.append(source)
