"""Delivery of a cache's events to one subscriber, on a thread of its own.

The rules (client-go's shared-informer listeners, for the same reasons):

- A cache only appends events to each subscription's buffer while it applies
  them; the callback runs on the subscription's own thread, outside the
  cache's lock. A slow or blocked callback delays nobody but itself: readers,
  the cache's apply loop and other subscribers go on.
- Events reach a callback in the order the cache applied them (so in order
  per object), each once.
- ``models`` is checked by the cache before buffering; ``predicate(event)``
  runs on the subscription's thread before the callback (a predicate is user
  code too, and must not slow the cache). A predicate that raises is logged
  and the event is delivered: filtering must never lose a change.
- A callback that raises is logged (with the object and revision) and the
  next event is delivered.
- The buffer is unbounded, as client-go's is: a subscriber that never returns
  grows it (see ``pending`` and the ``nbdb_handler_pending`` gauge).
- :meth:`Subscription.wait_replayed` returns once the subscriber has been
  given the cache's content as of the subscription (``replay=True``) and the
  cache's first list is loaded; :meth:`Subscription.close` stops delivery.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from types import TracebackType
from typing import Any

from nbdb.events import ChangeEvent
from nbdb.models.base import Model

__all__ = ["Predicate", "Subscriber", "Subscription"]

log = logging.getLogger(__name__)

Subscriber = Callable[[ChangeEvent[Model]], None]
Predicate = Callable[[ChangeEvent[Model]], bool]

_REPLAYED = object()
_STOP = object()


def describe(event: ChangeEvent[Any]) -> str:
    """``created LogicalSwitch <id> at revision N``: how log messages name an event."""
    return f"{event.kind} {event.model.nbdb_table} {event.id} at revision {event.revision}"


class Subscription:
    """A subscriber's registration with a cache: its buffer, its thread, its replay status.

    Returned by :meth:`nbdb.Cache.subscribe`; use it as a context manager or
    call :meth:`close` (or ``cache.unsubscribe``) to stop.
    """

    def __init__(
        self,
        callback: Callable[[Any], None],
        models: Collection[type[Model]] | None = None,
        predicate: Predicate | None = None,
        *,
        name: str = "",
        detach: Callable[[Subscription], None] | None = None,
        tick: tuple[float, Callable[[], None]] | None = None,
    ) -> None:
        self.callback = callback
        self.models = None if models is None else frozenset(models)
        self.name = name or getattr(callback, "__qualname__", repr(callback))
        self._predicate = predicate
        self._detach = detach
        self._tick = tick
        self._items: deque[Any] = deque()
        self._ready = threading.Event()
        self._replayed = threading.Event()
        self._closed = False
        self._busy = False  # an item is between the buffer and the end of its delivery
        self._thread = threading.Thread(target=self._run, name=f"nbdb-handler-{self.name}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"<nbdb.Subscription {self.name} pending={self.pending}>"

    # ---------------------------------------------------------------- the cache's side

    def offer(self, event: ChangeEvent[Model]) -> bool:
        """Buffer ``event`` if it is of a followed model; True if it was (call :meth:`wake` after a batch)."""
        models = self.models
        if models is not None and event.model not in models:
            return False
        self._items.append(event)
        return True

    def put(self, item: Any) -> None:
        """Buffer any item for the callback and wake the thread."""
        self._items.append(item)
        self._ready.set()

    def wake(self) -> None:
        """Let the thread deliver what was offered."""
        self._ready.set()

    def mark_replayed(self) -> None:
        """Everything buffered so far is the replay: :meth:`wait_replayed` returns after it."""
        self.put(_REPLAYED)

    # ---------------------------------------------------------------- the subscriber's side

    @property
    def pending(self) -> int:
        """Events buffered or being delivered."""
        return len(self._items) + self._busy

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (or the cache closed)."""
        return self._closed

    def wait_replayed(self, timeout: float | None = None) -> bool:
        """Block until the replay (and the cache's first list) was delivered; False on timeout."""
        return self._replayed.wait(timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Stop delivering; events not delivered yet are dropped.

        Waits up to ``timeout`` seconds for a callback that is running to
        return (not when called from the callback itself); False if it is
        still running then. No callback starts after ``close`` returns.
        """
        if not self._closed:
            self._closed = True
            if self._detach is not None:
                self._detach(self)
            self._items.appendleft(_STOP)
            self._ready.set()
        if threading.current_thread() is self._thread:
            return True
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("subscriber %s is still running %.1fs after close()", self.name, timeout or 0.0)
            return False
        return True

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---------------------------------------------------------------- the thread

    def _run(self) -> None:
        interval, on_tick = self._tick if self._tick is not None else (None, None)
        next_tick = None if interval is None else time.monotonic() + interval
        items = self._items
        while True:
            timeout = None if next_tick is None else max(0.0, next_tick - time.monotonic())
            self._ready.wait(timeout)
            # Clear before draining: an item appended after the last check sets it again.
            self._ready.clear()
            while items:
                self._busy = True  # before popping: `pending` never reads 0 while an item is in flight
                item = items.popleft()
                if item is _STOP or self._closed:
                    return
                if item is _REPLAYED:
                    self._replayed.set()
                else:
                    self._deliver(item)
                self._busy = False
            if next_tick is not None and on_tick is not None and time.monotonic() >= next_tick:
                next_tick = time.monotonic() + (interval or 0.0)
                try:
                    on_tick()
                except Exception:
                    log.exception("subscriber %s: periodic task failed", self.name)

    def _deliver(self, item: Any) -> None:
        if self._predicate is not None:
            try:
                if not self._predicate(item):
                    return
            except Exception:
                log.exception("subscriber %s: predicate failed on %s; delivering the event", self.name, describe(item))
        try:
            self.callback(item)
        except Exception:
            what = describe(item) if isinstance(item, ChangeEvent) else repr(item)
            log.exception("subscriber %s failed on %s", self.name, what)
