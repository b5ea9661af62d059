"""A wake-up call from the commits of this process to its watchers of the same namespace.

A wide-column store has no push: watchers poll the commit index. A commit
made in this process need not wait for the next poll, so the committer rings
this signal and every stream of the namespace reads the index at once.
Commits of other processes are still found by polling.
"""

from __future__ import annotations

import threading

__all__ = ["ChangeSignal"]


class ChangeSignal:
    """A set of events, all set by :meth:`notify`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[threading.Event] = set()

    def subscribe(self) -> threading.Event:
        """A new event that every :meth:`notify` sets (the subscriber clears it)."""
        event = threading.Event()
        with self._lock:
            self._waiters.add(event)
        return event

    def unsubscribe(self, event: threading.Event) -> None:
        """Stop setting ``event``."""
        with self._lock:
            self._waiters.discard(event)

    def notify(self) -> None:
        """Wake every subscriber."""
        with self._lock:
            waiters = list(self._waiters)
        for event in waiters:
            event.set()
