"""Locks on leases: acquire with a deadline, keep alive from one thread, release, report loss.

Every store that has no lock of its own builds :meth:`nbdb.Database.lock` the
same way: write a lease (a key or row with a TTL holding the holder's random
token) if nobody holds one, renew it every third of its TTL while the block
runs, and delete it — only if it still holds the token — when the block ends.
If a renewal fails, the holder can no longer assume exclusivity:
``handle.lost`` turns True at once, and the lock is not released (somebody
else may hold it by then). A store supplies three primitives through a
:class:`LeaseStore`; this module holds the loop once.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from nbdb import errors
from nbdb.spi import LockHandle

__all__ = ["LeaseStore", "LeaseTable", "hold_lease"]

log = logging.getLogger(__name__)

_FIRST_PAUSE = 0.005
_LONGEST_PAUSE = 0.2


class LeaseStore(Protocol):
    """The three lease primitives of a store (names are lock names; values the holder's token)."""

    def acquire_lease(self, name: str, token: bytes, ttl: float) -> bool:
        """Take the lease if nobody holds it (or ``token`` already does); True if ``token`` holds it now.

        Must be idempotent for one token: retried after a lost reply, it
        answers True if the first try took the lease.
        """

    def renew_lease(self, name: str, token: bytes, ttl: float) -> bool:
        """Extend the lease if ``token`` still holds it; False if it does not (expired, taken)."""

    def release_lease(self, name: str, token: bytes) -> None:
        """Drop the lease if ``token`` still holds it; nothing if it does not."""


class LeaseTable:
    """Leases kept in this process (a :class:`LeaseStore` for in-process stores), on the monotonic clock.

    Not thread-safe by itself: the store calls it under its own lock.
    """

    def __init__(self) -> None:
        self._held: dict[str, tuple[bytes, float]] = {}

    def acquire(self, name: str, token: bytes, ttl: float) -> bool:
        """Take ``name`` for ``token`` unless another live holder has it."""
        now = time.monotonic()
        held = self._held.get(name)
        if held is not None and held[1] > now and held[0] != token:
            return False
        self._held[name] = (token, now + ttl)
        return True

    def renew(self, name: str, token: bytes, ttl: float) -> bool:
        """Extend the lease if ``token`` still holds it."""
        if not self.holds(name, token):
            return False
        self._held[name] = (token, time.monotonic() + ttl)
        return True

    def release(self, name: str, token: bytes) -> None:
        """Drop the lease if ``token`` still holds it."""
        held = self._held.get(name)
        if held is not None and held[0] == token:
            del self._held[name]

    def holds(self, name: str, token: bytes) -> bool:
        """Whether ``token`` holds the unexpired lease ``name``."""
        held = self._held.get(name)
        return held is not None and held[0] == token and held[1] > time.monotonic()


@contextmanager
def hold_lease(
    store: LeaseStore, name: str, ttl: float, timeout: float | None, closed: threading.Event | None = None
) -> Iterator[LockHandle]:
    """Hold the lease ``name`` for the ``with`` block (see the module docstring).

    Raises :class:`nbdb.LockTimeoutError` if it is still held by another
    owner after ``timeout`` seconds (None: wait as long as it takes), and
    :class:`nbdb.BackendUnavailableError` as soon as ``closed`` is set while
    it waits (the Database asking closed: see :meth:`nbdb.spi.Backend.lock`).
    Every lease store gets it here: an in-process store (``memory://``, the
    Databases of one ``sqlite://`` namespace sharing one connection) still
    answers once its backend closed, so the wait went on for as long as the
    other holder kept the lock.
    """
    if not ttl > 0:
        raise errors.ValidationError("lock ttl must be positive")
    handle = LockHandle(name, uuid.uuid4().hex, store)
    token = handle.token.encode()
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = _FIRST_PAUSE
    ended = closed if closed is not None else threading.Event()
    while not store.acquire_lease(name, token, ttl):
        if deadline is not None and time.monotonic() >= deadline:
            raise errors.LockTimeoutError(f"lock {name!r} is held by another owner; gave up after {timeout}s")
        if ended.wait(pause if deadline is None else max(0.0, min(pause, deadline - time.monotonic()))):
            raise errors.BackendUnavailableError(f"lock {name!r}: its Database closed while waiting for it")
        pause = min(pause * 2, _LONGEST_PAUSE)
    stop = threading.Event()
    keeper = threading.Thread(
        target=_keep_alive, args=(store, handle, token, ttl, stop), name=f"nbdb-lock-{name}", daemon=True
    )
    keeper.start()
    try:
        yield handle
    finally:
        stop.set()
        keeper.join()
        if not handle.lost:
            try:
                store.release_lease(name, token)
            except errors.NbdbError as exc:
                log.warning("lock %r: release failed (the lease expires with its TTL): %s", name, exc)


def _keep_alive(store: LeaseStore, handle: LockHandle, token: bytes, ttl: float, stop: threading.Event) -> None:
    # A renewal that fails for a passing reason (a leader election, a dropped
    # connection) is tried again until the lease may have expired; only then,
    # or when the store says the token no longer holds it, is the lock lost.
    # The lease certainly holds until ``safe_until``: the last successful
    # renewal was *sent* after that point minus ttl.
    safe_until = time.monotonic() + ttl
    pause = ttl / 3
    while not stop.wait(pause):
        sent = time.monotonic()
        try:
            alive = store.renew_lease(handle.name, token, ttl)
        except errors.NbdbError as exc:
            margin = safe_until - time.monotonic()
            if margin > ttl / 10:
                log.warning("lock %r: renewal failed, retrying (%.1fs of lease left): %s", handle.name, margin, exc)
                pause = min(ttl / 10, margin / 2)
                continue
            log.warning("lock %r: renewal failed: %s", handle.name, exc)
            alive = False
        if not alive:
            log.error("lock %r was lost (its lease expired or the server dropped it)", handle.name)
            handle.mark_lost()
            return
        safe_until = sent + ttl
        pause = ttl / 3
