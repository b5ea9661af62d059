"""A one-shot completion flag for a commit's hand-offs between threads, cheaper than ``threading.Event``.

Every commit creates two (its group-commit entry and its request's call),
sets them from another thread and waits on them. ``threading.Event`` is a
``Condition`` over a lock, all in Python: creating one costs ≈ 2.4 µs, and
each ``wait``/``set`` pair allocates a waiter lock and runs the condition's
bookkeeping. A lock held from creation and released by :meth:`Done.set` does
the same job in C (≈ 0.25 µs for create, set and wait; see
docs/benchmarks.md, "OVSDB single writes: the client's share of a commit").
"""

from __future__ import annotations

import threading

__all__ = ["Done"]


class Done:
    """Set once (later calls of :meth:`set` do nothing); :meth:`wait` returns once it is set, or at a timeout."""

    __slots__ = ("_flag", "_lock")

    def __init__(self) -> None:
        self._flag = False
        self._lock = threading.Lock()
        self._lock.acquire()

    def is_set(self) -> bool:
        """Whether :meth:`set` was called."""
        return self._flag

    def set(self) -> None:
        """Mark it done and wake every waiter."""
        if self._flag:
            return
        self._flag = True
        self._release()

    def wait(self, timeout: float | None = None) -> bool:
        """Whether it is set, waiting at most ``timeout`` seconds (None: for as long as it takes)."""
        if self._flag:
            return True
        if self._lock.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
            # Passed on: the next waiter (if any) goes through the same way.
            self._release()
            return True
        return self._flag

    def _release(self) -> None:
        try:
            self._lock.release()
        except RuntimeError:
            # Two threads setting it at once, or a waiter passing it on meanwhile: it is open either way.
            pass
