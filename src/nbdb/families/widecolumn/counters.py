"""``allocate_id``: named counters, each a row advanced by compare-and-set.

Each attempt writes the caller's owner id with the new value, so a
compare-and-set whose reply was lost is settled by a serial read: the value
is ours exactly when the row holds our owner id.
"""

from __future__ import annotations

import uuid

from nbdb import errors
from nbdb.families.rules import counter_value
from nbdb.families.widecolumn import layout as L
from nbdb.families.widecolumn.options import tries
from nbdb.families.widecolumn.partitions import Partitions
from nbdb.families.widecolumn.primitives import OutcomeUnknown
from nbdb.retry import RetryPolicy

__all__ = ["allocate_id"]


_LAST = 2**63 - 1
"""The largest value a counter's column (bigint) holds: the counter cannot move past it."""


def allocate_id(partitions: Partitions, name: str, contention: RetryPolicy) -> int:
    """The next value of counter ``name`` (1, 2, 3, ...), unique among all clients.

    A counter another writer damaged is CorruptRecordError: a null value was read as 0 (the ids
    began again at 1, each handed out twice), a negative one handed out ids below 1, and the
    largest bigint was a raw TypeError of the driver.
    """
    p = partitions
    key = f"n/{name}"
    owner = uuid.uuid4()
    current: int | None = None
    known = False
    for attempt in tries(contention):
        if not known:
            rows = p.read(L.Q_META, (p.ns, key), serial=attempt > 0)
            current = counter_value(rows[0].value, name, key, _LAST) if rows else None  # a null one too
        else:
            current = counter_value(current, name, key, _LAST)  # as a failed compare-and-set reported it
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
        # Lost a race: a failed compare-and-set reports the value it saw. A null it reports is no
        # counter of nbdb's (another writer's, or its row gone): read again, where a null is refused;
        # taken as "none yet", the next try set it to 1 and handed out 1 a second time.
        current = result.value("value")
        known = result.reports("value") and current is not None
    raise errors.BackendUnavailableError(f"could not allocate from counter {name!r}: too much contention")
