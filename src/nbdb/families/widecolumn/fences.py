"""Fenced commits: a commit lands only while its lock's holder still holds the lock.

The lock row (``nbdb_locks``) and the commit's batch (its topic's partition of
``nbdb_data``) are two partitions, so the lock cannot be a condition of the
batch. The guarantee is built from the partition seal instead, with no clock:

1. The fenced commit takes its revision G, then *registers* it: a row
   "a commit of this lock at G may be in flight in partition P"
   (``nbdb_fences``), then checks with a serial read that its token still
   holds the lock — :class:`nbdb.LockLostError` if not — and only then sends
   its batch (``IF last_rev < G``).
2. A new holder, once its lease is taken and before ``lock()`` returns,
   reads the lock's registered commits and seals each partition at its
   revision: a commit of an earlier holder that has not landed by then never
   will (its batch fails, and on the next attempt its check fails).

Registration comes before the check and the check before any new holder's
lease, so a new holder always sees the registrations of commits that passed
the check: **no fenced commit of a holder lands after another holder's**
``lock()`` **returned**. A commit may still land after its holder's lease ran
out while nobody else has taken the lock; no other holder can observe that.
A holder drops its rows once its commits are over; rows left by a crash are
dropped by the next holder.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from nbdb import errors
from nbdb.families.widecolumn import layout as L
from nbdb.families.widecolumn.partitions import Partitions
from nbdb.spi import LockHandle

__all__ = ["Fences"]

log = logging.getLogger(__name__)


class Fences:
    """The registered fenced commits of a namespace's locks."""

    def __init__(self, partitions: Partitions) -> None:
        self._p = partitions

    def guard(self, fence: LockHandle, part: str, revision: int) -> None:
        """Register a commit at ``revision`` in ``part`` under ``fence``, then check the lock is held.

        Raises :class:`nbdb.LockLostError` if ``fence`` no longer holds it.
        """
        p = self._p
        p.store.apply([(L.W_FENCE, (p.ns, fence.name, part, revision, fence.token))])
        rows = p.read(L.Q_LOCK, (p.ns, fence.name), serial=True)
        if not rows or rows[0].holder != fence.token:
            fence.mark_lost()
            raise errors.LockLostError(f"lock {fence.name!r} is no longer held by this holder: nothing was written")

    def forget(self, fence: LockHandle, part: str, revisions: Sequence[int]) -> None:
        """Drop the registrations of commits that are over (landed, or certainly never will)."""
        if not revisions:
            return
        p = self._p
        try:
            p.store.apply([(L.W_FENCE_DROP, (p.ns, fence.name, part, revision)) for revision in revisions])
        except errors.NbdbError as exc:  # the next holder drops them
            log.debug("could not drop the fences of lock %r: %s", fence.name, exc)

    def seal_earlier(self, name: str) -> None:
        """For a new holder of ``name``: make sure no commit an earlier holder registered can land any more."""
        p = self._p
        rows = p.read(L.Q_FENCES, (p.ns, name))
        if not rows:
            return
        highest: dict[str, int] = {}
        for row in rows:
            highest[row.part] = max(highest.get(row.part, 0), int(row.rev))
        for part, revision in sorted(highest.items()):
            p.seal_through(part, revision)
        try:
            p.store.apply([(L.W_FENCE_DROP, (p.ns, name, row.part, row.rev)) for row in rows])
        except errors.NbdbError as exc:  # sealed already: the rows only cost a read to the next holder
            log.debug("could not drop the fences of lock %r: %s", name, exc)
