"""Lock leases as rows of ``nbdb_locks``: the three primitives :func:`nbdb.families.lease.hold_lease` needs.

A lease is ``INSERT ... IF NOT EXISTS USING TTL``, renewed with ``IF holder =
token``, deleted with the same condition. Store TTLs count whole seconds from
the second the write lands (a 1 s TTL may expire after a few ms), so the row
lives ``ceil(ttl) + 1`` seconds: at least ``ttl`` between renewals. A
compare-and-set whose reply was lost is settled by a serial read of the
holder; CommitUnknownError if even that read cannot be made.

A new holder seals out the fenced commits of earlier holders before its
lease counts as taken (:mod:`~nbdb.families.widecolumn.fences`).
"""

from __future__ import annotations

import math

from nbdb import errors
from nbdb.families.widecolumn import layout as L
from nbdb.families.widecolumn.fences import Fences
from nbdb.families.widecolumn.partitions import Partitions
from nbdb.families.widecolumn.primitives import OutcomeUnknown

__all__ = ["LeaseRows", "lease_seconds"]


def lease_seconds(ttl: float) -> int:
    """The TTL written for a lock of ``ttl`` seconds (whole seconds, one more than asked)."""
    return math.ceil(ttl) + 1


class LeaseRows:
    """The lease primitives (:class:`nbdb.families.lease.LeaseStore`) on the namespace's lock rows."""

    def __init__(self, partitions: Partitions, fences: Fences) -> None:
        self._p = partitions
        self._fences = fences

    def acquire_lease(self, name: str, token: bytes, ttl: float) -> bool:
        """Take the lock if free; True if ``token`` holds it now (also after a lost reply of its own take).

        Before answering True, the fenced commits of earlier holders are sealed out.
        """
        holder = token.decode()
        try:
            result = self._p.store.apply([(L.W_LOCK, (self._p.ns, name, holder, lease_seconds(ttl)))])
            taken = result.applied or (result.reports("holder") and result.value("holder") == holder)
        except OutcomeUnknown as lost:
            taken = self._holder(name, lost) == holder
        if taken:
            try:
                self._fences.seal_earlier(name)
            except BaseException:
                # Not held until the earlier holders are fenced out: give it back (or let it expire).
                try:
                    self.release_lease(name, token)
                except errors.NbdbError:
                    pass
                raise
        return taken

    def renew_lease(self, name: str, token: bytes, ttl: float) -> bool:
        """Extend the lease if ``token`` still holds it."""
        holder = token.decode()
        try:
            statement = (L.W_LOCK_REFRESH, (self._p.ns, name, holder, holder, lease_seconds(ttl)))
            return self._p.store.apply([statement]).applied
        except OutcomeUnknown as lost:
            return self._holder(name, lost) == holder

    def release_lease(self, name: str, token: bytes) -> None:
        """Drop the lease if ``token`` still holds it (if that is not known, it expires with its TTL)."""
        try:
            self._p.store.apply([(L.W_LOCK_DELETE, (self._p.ns, name, token.decode()))])
        except OutcomeUnknown:
            pass

    def _holder(self, name: str, lost: OutcomeUnknown) -> str | None:
        try:
            rows = self._p.read(L.Q_LOCK, (self._p.ns, name), serial=True)
        except errors.BackendUnavailableError as exc:
            raise errors.CommitUnknownError(
                f"lock {name!r} may or may not have been taken or renewed (its lease expires by itself): {exc}"
            ) from lost
        return None if not rows else str(rows[0].holder)
