"""Locks: a lease row per lock, taken with a compare-and-set and renewed by one keep-alive thread.

The lease is ``INSERT ... IF NOT EXISTS USING TTL``, renewed with ``IF holder
= token``, deleted with the same condition. Store TTLs count whole seconds
from the second the write lands (a 1 s TTL may expire after a few ms), so
the lease is ``ceil(ttl) + 1`` seconds: at least ``ttl`` between renewals.
An outcome lost on the way is settled by a serial read of the holder.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from nbdb import errors
from nbdb.families.widecolumn import layout as L
from nbdb.families.widecolumn.partitions import Partitions
from nbdb.families.widecolumn.primitives import OutcomeUnknown
from nbdb.spi import LockHandle

__all__ = ["hold_lease", "lease_seconds"]

log = logging.getLogger(__name__)


def lease_seconds(ttl: float) -> int:
    """The TTL written for a lock of ``ttl`` seconds (whole seconds, one more than asked)."""
    return math.ceil(ttl) + 1


@contextmanager
def hold_lease(
    take: Callable[[], bool],
    renew: Callable[[], bool],
    drop: Callable[[], None],
    handle: LockHandle,
    ttl: float,
    timeout: float | None,
) -> Iterator[LockHandle]:
    """Take a lease (``take`` until True, within ``timeout``), renew it every ``ttl/3`` in a thread, drop it.

    ``renew`` returns False (or raises an nbdb error) once the lease is not
    ours: the handle is marked lost and renewals stop.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.01
    while not take():
        if deadline is not None and time.monotonic() >= deadline:
            raise errors.LockTimeoutError(f"lock {handle.name!r} is held by another owner; gave up after {timeout}s")
        time.sleep(delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic())))
        delay = min(delay * 2, 0.2)
    stop = threading.Event()

    def keep_alive() -> None:
        while not stop.wait(ttl / 3):
            try:
                alive = renew()
            except errors.NbdbError as exc:
                log.warning("lock %r: renewal failed: %s", handle.name, exc)
                alive = False
            if not alive:
                log.error("lock %r was lost (its lease expired or the server dropped it)", handle.name)
                handle.mark_lost()
                return

    keeper = threading.Thread(target=keep_alive, name=f"nbdb-lock-{handle.name}", daemon=True)
    keeper.start()
    try:
        yield handle
    finally:
        stop.set()
        keeper.join()
        if not handle.lost:
            try:
                drop()
            except errors.NbdbError as exc:
                log.warning("lock %r: release failed (it expires with its TTL): %s", handle.name, exc)


@contextmanager
def lock(partitions: Partitions, name: str, ttl: float, timeout: float | None) -> Iterator[LockHandle]:
    """The named lock of the namespace, as :meth:`nbdb.spi.Backend.lock` describes."""
    if ttl <= 0:
        raise errors.ValidationError("lock ttl must be positive")
    p = partitions
    handle = LockHandle(name, uuid.uuid4().hex)
    seconds = lease_seconds(ttl)

    def holder() -> str | None:
        rows = p.read(L.Q_LOCK, (p.ns, name), serial=True)
        return None if not rows else str(rows[0].holder)

    def take() -> bool:
        try:
            return p.store.apply([(L.W_LOCK, (p.ns, name, handle.token, seconds))]).applied
        except OutcomeUnknown as lost:
            try:
                return holder() == handle.token
            except errors.BackendUnavailableError as exc:
                raise errors.CommitUnknownError(
                    f"lock {name!r} may or may not have been taken (its lease expires in {seconds}s): {exc}"
                ) from lost

    def renew() -> bool:
        try:
            return p.store.apply([(L.W_LOCK_REFRESH, (p.ns, name, handle.token, handle.token, seconds))]).applied
        except OutcomeUnknown:
            return holder() == handle.token

    def drop() -> None:
        try:
            p.store.apply([(L.W_LOCK_DELETE, (p.ns, name, handle.token))])
        except OutcomeUnknown:
            pass  # if it did not apply, the lease expires with its TTL

    with hold_lease(take, renew, drop, handle, ttl, timeout) as held:
        yield held
