"""Read-your-writes: :meth:`nbdb.Cache.wait_for`, the pending waits of one cache.

A write tells where it committed: the stored copies ``create``/``update``
return carry their commit's :class:`~nbdb.revision.Revision`
(``obj.nbdb_revision``), ``delete`` returns it, and so does
``Transaction.revision``. A wait is settled, checked after every batch the
cache applies, when

- *a revision*: the cache's revision reached it (and the first list is
  loaded): every change up to it is applied, whatever it touched;
- *an object*: the cache holds that version of it or a later one, or applied
  its deletion during the wait, or reached the object's revision (if it has
  one of the cache's sequence: then an absent object was deleted since; but a
  replica standing at that very revision without it proves the store went
  back in time, and lists again first; if the list still stands there
  without it, the write was lost: HistoryGoneError).

An object without a revision of this cache's sequence (read back, or written
through another connection of a backend with per-connection revisions) may
have been deleted before the call without the cache ever seeing it. Where
revisions are shared and reads linearizable, the wait also ends when the
cache reaches the store's current revision read at the start of the call; on
OVSDB (per-connection revisions) such a wait can only end by version or by a
deletion it sees, else at its timeout.

Waiting costs the apply loop one check of ``pending`` per batch and per
deletion while nobody waits.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING
from uuid import UUID

from nbdb import errors
from nbdb.models.base import Model
from nbdb.revision import Revision

if TYPE_CHECKING:
    from nbdb.cache import Replica

__all__ = ["Waits"]

log = logging.getLogger(__name__)


class _Waiter:
    """One wait_for call: what it waits for, and whether it happened."""

    __slots__ = ("deleted", "done", "id", "lost", "model", "own", "relisted", "revision", "version")

    def __init__(
        self, model: type[Model] | None, id: UUID | None, version: int, revision: int | None, own: bool = False
    ) -> None:
        self.model = model
        self.id = id
        self.version = version
        self.revision = revision
        self.own = own
        """``revision`` is the commit that wrote ``version`` of the object (its ``nbdb_revision``)."""
        self.deleted = False
        self.relisted = False
        """The replica was told to list again for this wait (once: see :meth:`Waits.wake`)."""
        self.lost = False
        """A list made after that request stands at or past ``revision`` without the version: it was lost."""
        self.done = threading.Event()


class Waits:
    """The pending :meth:`~nbdb.Cache.wait_for` calls of one replica (its helper: it reads the replica's
    state through its public accessors, under its lock)."""

    def __init__(self, cache: Replica) -> None:
        self._cache = cache
        self._waiters: list[_Waiter] = []

    @property
    def pending(self) -> bool:
        """Whether anybody waits (the apply loop's only cost otherwise)."""
        return bool(self._waiters)

    def wait(self, target: Model | int, timeout: float | None) -> bool:
        """See :meth:`nbdb.Cache.wait_for`."""
        cache = self._cache
        waiter = self._waiter_for(target)
        if waiter.model is not None and waiter.revision is None:
            with cache.lock:
                settled = self._reflected(waiter)
            if settled:
                return True
            waiter.revision = self._barrier()
        with cache.lock:
            contradicted = self._contradicted(waiter)
        if contradicted:
            waiter.relisted = True
            self._went_back(waiter)
        with cache.lock:
            if self._reflected(waiter):
                return True
            if cache.closed:
                return False
            if contradicted and self._contradicted(waiter):
                waiter.lost = True  # the list asked for above is loaded already, and stands without it
            else:
                self._waiters.append(waiter)
        try:
            if not waiter.lost:
                if waiter.revision is not None and not waiter.own:
                    # A revision, or the store's read at the call: it may be of a commit the cache does not
                    # follow, which no change of its stream carries (an object's own revision comes with its
                    # change). The stream is told; what it does about it, and how soon, is its own affair.
                    cache.want(waiter.revision)
                waiter.done.wait(timeout)
        finally:
            with cache.lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        with cache.lock:
            if self._reflected(waiter):
                return True
        if waiter.lost:
            raise errors.HistoryGoneError(
                f"{waiter.model.nbdb_table if waiter.model is not None else '?'} {waiter.id} version "
                f"{waiter.version} was written at revision {waiter.revision}, and the store listed again "
                "stands there without it: the store went back in time and lost that write"
            )
        return False

    def _waiter_for(self, target: Model | int) -> _Waiter:
        cache = self._cache
        if isinstance(target, Model):
            model = cache.followed(type(target))
            if cache.topics is not None and target.topic not in cache.topics:
                raise errors.ValidationError(f"this cache does not follow topic {target.topic!r}")
            if target.version < 1:
                raise errors.ValidationError(f"{target.nbdb_table} {target.id} was never stored (version 0)")
            revision = target.nbdb_revision
            if revision is not None and target.__pydantic_private__.get("_store") != cache.backend.store_token:  # type: ignore[union-attr]
                # A write result of another store (another memory://, another server): its revision was
                # compared with this store's, and a cache that had reached that number said True at once.
                raise errors.ValidationError(
                    f"{target.nbdb_table} {target.id} was written to another store than this cache follows: "
                    "it would never arrive (wait with a cache of the Database that wrote it)"
                )
            if isinstance(revision, Revision) and revision.scope != cache.revision_scope:
                revision = None  # another connection's sequence: wait by version
            return _Waiter(model, target.id, target.version, revision, own=revision is not None)
        if isinstance(target, bool) or not isinstance(target, int) or target < 0:
            raise errors.ValidationError(f"wait_for() takes a stored object or a revision, not {target!r}")
        if isinstance(target, Revision) and target.scope != cache.revision_scope:
            raise errors.UnsupportedError(
                f"revision {int(target)} comes from another connection, and {type(cache.backend).__name__} "
                "counts revisions per connection: wait for the written object instead, or use a cache of the "
                "Database that wrote"
            )
        return _Waiter(None, None, 0, int(target))

    def _barrier(self) -> int | None:
        cache = self._cache
        if cache.revision_scope is not None or not cache.backend.capabilities.linearizable_reads:
            return None
        watermark = cache.watermark
        before = 0 if watermark is None else watermark.seen
        try:
            now = cache.backend.current_revision()
        except errors.NbdbError as exc:
            log.info("cache: could not read the current revision (%s); waiting by version only", exc)
            return None
        if watermark is not None:
            # A store read below what was seen went back in time: the caches list again, and this wait
            # waits for it (it took the cache's old, higher revision for "deleted since": True at once).
            watermark.committed(before, now)
        return now

    def _contradicted(self, waiter: _Waiter) -> bool:
        """Whether the replica stands at the very commit that wrote the awaited version, without it (under the lock).

        A replica at revision r has applied commit r whole: a write result of revision r that it does not
        hold (nor a later version, nor its deletion, which would be a later commit) was committed to a store
        that went back in time to exactly the revision the replica stands at (it lost as many commits as it
        made since: no commit came back below a revision seen, so the Database could not tell). ``wait_for``
        said True at once, while ``get`` found nothing.
        """
        if not waiter.own or waiter.model is None or waiter.deleted or waiter.revision is None:
            return False
        cache = self._cache
        if cache.stale or not cache.reached_exactly(waiter.revision):
            return False
        held = cache.held(waiter.model, waiter.id)  # type: ignore[arg-type]
        return held is None or held.version < waiter.version

    def _went_back(self, waiter: _Waiter) -> None:
        """Tell the Database the store went back (every cache lists again), or this replica alone."""
        cache = self._cache
        log.warning(
            "cache: %s %s version %d was written at revision %d, where this cache stands without it: the store "
            "went back in time; listing again",
            waiter.model.nbdb_table if waiter.model is not None else "?",
            waiter.id,
            waiter.version,
            waiter.revision,
        )
        watermark = cache.watermark
        hook = None if watermark is None else watermark.went_back
        if hook is not None and watermark is not None:
            hook(watermark.seen, int(waiter.revision or 0))
        else:
            cache.store_went_back()

    def _reflected(self, waiter: _Waiter) -> bool:
        cache = self._cache
        if cache.stale:
            # The store went back in time and the replica has not listed since: it holds objects and a
            # revision of the lost history (a new write's lower revision compared below it: "reflected").
            return False
        if waiter.revision is not None and cache.reached(waiter.revision) and not self._contradicted(waiter):
            return True
        if waiter.model is None:
            return False
        held = cache.held(waiter.model, waiter.id)  # type: ignore[arg-type]
        return waiter.deleted or (held is not None and held.version >= waiter.version)

    # ---------------------------------------------------------------- the apply loop's side (under the lock)

    def wake(self) -> None:
        """Settle the waits the last batch satisfied."""
        for waiter in self._waiters:
            if self._reflected(waiter):
                waiter.done.set()
            elif self._contradicted(waiter):
                # The batch brought the replica to the awaited commit without it (see _contradicted).
                if waiter.relisted:
                    # A list made since this wait asked for one (a contradicted replica is not stale: it
                    # listed after every reset told) stands there without it too: the write was lost.
                    # Listing again would find the same (a whole re-list of the store per poll, forever).
                    waiter.lost = True
                    waiter.done.set()
                else:
                    # This replica lists again (its thread sees it after this batch); the wait waits for it.
                    waiter.relisted = True
                    self._cache.store_went_back()

    def deleted(self, model: type[Model], id: UUID) -> None:
        """The cache applied the deletion of ``model`` ``id``."""
        for waiter in self._waiters:
            if waiter.id == id and waiter.model is model:
                waiter.deleted = True

    def release_all(self) -> None:
        """The cache is closing: every wait returns (False unless already reflected)."""
        for waiter in self._waiters:
            waiter.done.set()
