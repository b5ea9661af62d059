"""``allocate_id``: named counters, each a row advanced by compare-and-set.

Each attempt writes the caller's owner id with the new value, so a
compare-and-set whose reply was lost is settled by a serial read: the value
is ours exactly when the row holds our owner id.
"""

from __future__ import annotations

import uuid

from nbdb import errors
from nbdb.families.widecolumn import layout as L
from nbdb.families.widecolumn.options import tries
from nbdb.families.widecolumn.partitions import Partitions
from nbdb.families.widecolumn.primitives import OutcomeUnknown
from nbdb.retry import RetryPolicy

__all__ = ["allocate_id"]


def allocate_id(partitions: Partitions, name: str, contention: RetryPolicy) -> int:
    """The next value of counter ``name`` (1, 2, 3, ...), unique among all clients."""
    p = partitions
    key = f"n/{name}"
    owner = uuid.uuid4()
    current: int | None = None
    known = False
    for attempt in tries(contention):
        if not known:
            rows = p.read(L.Q_META, (p.ns, key), serial=attempt > 0)
            current = rows[0].value if rows else None
        candidate = (current or 0) + 1
        try:
            result = p.store.apply([(L.W_META, (p.ns, key, candidate, owner, current))])
        except OutcomeUnknown as lost:
            try:
                rows = p.read(L.Q_META, (p.ns, key), serial=True)
            except errors.BackendUnavailableError as exc:
                raise errors.CommitUnknownError(
                    f"counter {name!r} may or may not have handed out {candidate}: {exc}"
                ) from lost
            if rows and rows[0].value == candidate and rows[0].owner == owner:
                return candidate
            known = False
            continue
        if result.applied:
            return candidate
        # Lost a race: a failed compare-and-set reports the value it saw.
        known = result.reports("value")
        current = result.value("value")
    raise errors.BackendUnavailableError(f"could not allocate from counter {name!r}: too much contention")
