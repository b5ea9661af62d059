"""Delivery of a cache's events to its subscribers, off the cache's thread.

The rules (client-go's shared-informer listeners, for the same reasons):

- A cache only appends events to each subscription's buffer while it applies
  them; callbacks run on a delivery thread, outside the cache's lock. Readers
  and the cache's apply loop never wait for a callback.
- The subscriptions of one replica share one delivery thread (a
  :class:`Dispatcher`), which calls each subscriber in turn with what its
  buffer holds: one thread wake per batch of changes for all the caches of a
  replica, not one per cache (500 caches over 10 processes were 100,000
  wakes a second with a thread each). A callback that runs longer than
  :data:`HANDOFF_SECONDS` is handed off: the thread it runs on becomes that
  subscription's own from then on, and a fresh thread serves the others. A
  slow or blocked callback thus delays the other subscribers of its replica
  once, by about that long (at most until the cache's apply loop next looks,
  every :data:`HANDOFF_SECONDS` while a callback runs), and nobody after.
  Subscriptions made with a periodic task (work queues) and ``on_error``
  handlers keep a thread of their own from the start.
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

import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from types import TracebackType
from typing import Any

from nbdb import errors
from nbdb.events import ChangeEvent
from nbdb.models.base import Model
from nbdb.timeouts import timeout_of

__all__ = ["HANDOFF_SECONDS", "Dispatcher", "Predicate", "Subscriber", "Subscription"]

log = logging.getLogger(__name__)

Subscriber = Callable[[ChangeEvent[Model]], None]
Predicate = Callable[[ChangeEvent[Model]], bool]

_REPLAYED = object()
_STOP = object()

HANDOFF_SECONDS = 0.05
"""How long a callback may run on a shared delivery thread before it is given a thread of its own."""


def describe(event: ChangeEvent[Any]) -> str:
    """``created LogicalSwitch <id> at revision N``: how log messages name an event."""
    return f"{event.kind} {event.model.nbdb_table} {event.id} at revision {event.revision}"


_CLOSING = threading.Lock()
"""Held while a subscription is marked closed, so that its close hooks run once."""


class Subscription:
    """A subscriber's registration with a cache: its buffer, its delivery, its replay status.

    Returned by :meth:`nbdb.Cache.subscribe`; use it as a context manager or
    call :meth:`close` (or ``cache.unsubscribe``) to stop. Delivered by its
    cache's :class:`Dispatcher` (given as ``dispatcher``), or by a thread of
    its own (without one, or once a callback outlasted :data:`HANDOFF_SECONDS`).
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
        dispatcher: Dispatcher | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.callback = callback
        self.models = None if models is None else frozenset(models)
        self.name = name or getattr(callback, "__qualname__", repr(callback))
        self._predicate = predicate
        self._detach = detach
        self._tick = tick
        self._on_close = on_close
        """Called once when the subscription closes, however it closes (a work queue stops with its feed)."""
        self._items: deque[Any] = deque()
        self._ready = threading.Event()
        self._replayed = threading.Event()
        self._replay_over = threading.Event()
        """Set once the replay was delivered or the subscription closed: what :meth:`wait_replayed` waits for."""
        self._closed = False
        self._busy = False  # an item is between the buffer and the end of its delivery
        self._dispatcher = None if tick is not None else dispatcher
        """The shared delivery thread's owner while this subscription is delivered by it; None once on its own."""
        self._thread: threading.Thread | None = None
        if self._dispatcher is None:
            self._thread = threading.Thread(target=self._run, name=f"nbdb-handler-{self.name}", daemon=True)
            self._thread.start()
        else:
            self._dispatcher.add(self)

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
        """Buffer any item for the callback and wake its delivery."""
        self._items.append(item)
        self.wake()

    def wake(self) -> None:
        """Let the delivery thread deliver what was offered."""
        dispatcher = self._dispatcher
        if dispatcher is not None:
            dispatcher.wake()
        else:
            self._ready.set()

    def mark_replayed(self) -> None:
        """Everything buffered so far is the replay: :meth:`wait_replayed` returns after it."""
        self.put(_REPLAYED)

    # ---------------------------------------------------------------- the subscriber's side

    @property
    def pending(self) -> int:
        """Events buffered or being delivered; 0 once closed (what was buffered is dropped).

        (A closed subscription counted its stop marker, or the events it dropped, for ever: a controller's
        ``wait_idle()`` on a closed cache waited for them without end.)
        """
        if self._closed:
            return 0
        return len(self._items) + self._busy

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (or the cache closed)."""
        return self._closed

    def wait_replayed(self, timeout: float | None = None) -> bool:
        """Block until the replay (and the cache's first list) was delivered; False on timeout.

        False too once the subscription (or its cache) closed before the replay was delivered: it never
        will be (without a timeout the wait did not end).

        From the subscription's own callback or predicate while the replay is being delivered it would wait
        for itself (the replay is delivered once that call returns: for ever without a timeout): a
        ValidationError.
        """
        timeout = timeout_of(timeout)
        if not self._replay_over.is_set() and self._delivering_here():
            raise errors.ValidationError(
                f"subscriber {self.name}: wait_replayed() from its own callback would wait for itself "
                "(the replay is delivered once the callback returns)"
            )
        self._replay_over.wait(timeout)
        return self._replayed.is_set()

    def _delivering_here(self) -> bool:
        """Whether the calling thread is delivering to this subscription (inside its callback or predicate)."""
        me = threading.current_thread()
        if self._thread is me:
            return True
        dispatcher = self._dispatcher
        return dispatcher is not None and dispatcher._current is self and dispatcher._runner is me

    def close(self, timeout: float | None = 10.0) -> bool:
        """Stop delivering; events not delivered yet are dropped.

        Waits up to ``timeout`` seconds for a callback that is running to
        return (not when called from the callback itself); False if it is
        still running then. No callback starts after ``close`` returns.
        """
        timeout = timeout_of(timeout)
        with _CLOSING:  # two closes at once (a feed's stop beside the user's): one runs the hooks below
            first, self._closed = not self._closed, True
        if first:
            if self._detach is not None:
                self._detach(self)
            self._items.appendleft(_STOP)
            self._ready.set()
            self._replay_over.set()
            if self._on_close is not None:
                self._on_close()
        dispatcher = self._dispatcher
        if dispatcher is not None:
            released = dispatcher.release(self, timeout)
            if released is not None:
                if not released:
                    log.warning("subscriber %s is still running %.1fs after close()", self.name, timeout or 0.0)
                return released
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        if thread.is_alive():
            log.warning("subscriber %s is still running %.1fs after close()", self.name, timeout or 0.0)
            return False
        return True

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---------------------------------------------------------------- its own thread

    def _run(self) -> None:
        interval, on_tick = self._tick if self._tick is not None else (None, None)
        next_tick = None if interval is None else time.monotonic() + interval
        items = self._items
        while True:
            # Clear before draining: an item appended after the last check sets it again.
            self._ready.clear()
            while items:
                self._busy = True  # before popping: `pending` never reads 0 while an item is in flight
                item = items.popleft()
                if item is _STOP or self._closed:
                    return
                self._handle(item)
                self._busy = False
            if next_tick is not None and on_tick is not None and time.monotonic() >= next_tick:
                next_tick = time.monotonic() + (interval or 0.0)
                try:
                    on_tick()
                except BaseException as exc:  # as a callback's (see _deliver): CancelledError ended this thread
                    if is_stop(exc):
                        self._stop_on(exc, "periodic task")
                        continue
                    log.exception("subscriber %s: periodic task failed", self.name)
            timeout = None if next_tick is None else max(0.0, next_tick - time.monotonic())
            self._ready.wait(timeout)

    def _handle(self, item: Any) -> None:
        if item is _REPLAYED:
            self._replayed.set()
            self._replay_over.set()
        else:
            self._deliver(item)

    def _deliver(self, item: Any) -> None:
        # BaseException, not only Exception (as a controller's reconcile): asyncio's CancelledError from
        # a callback or predicate that ran an event loop ended the delivery thread, and the subscription
        # silently got nothing more. Only a request to stop (KeyboardInterrupt, SystemExit) ends it.
        if self._predicate is not None:
            try:
                if not self._predicate(item):
                    return
            except BaseException as exc:
                if is_stop(exc):
                    self._stop_on(exc, "predicate")
                    return
                log.exception("subscriber %s: predicate failed on %s; delivering the event", self.name, _what(item))
        try:
            self.callback(item)
        except BaseException as exc:
            if is_stop(exc):
                self._stop_on(exc, "callback")
                return
            log.exception("subscriber %s failed on %s", self.name, _what(item))

    def _stop_on(self, exc: BaseException, what: str) -> None:
        """A callback, predicate or periodic task raised SystemExit or KeyboardInterrupt: this subscription stops.

        On the main thread (a caller delivering by hand) it goes on up. On a delivery thread it cannot end the
        program: raised on, it ended the thread silently -- a shared one's every other subscription with it,
        and this one's ``pending`` stayed above 0 for ever. Only this subscription stops, logged.
        """
        if threading.current_thread() is threading.main_thread():
            raise exc
        log.error(
            "subscriber %s: its %s raised %s on a delivery thread, which cannot end the program: "
            "this subscription stops",
            self.name,
            what,
            type(exc).__name__,
        )
        self.close(0)


def check_not_async(what: str, function: object) -> None:
    """ValidationError if ``function`` is an ``async def`` (or an object whose ``__call__`` is one).

    Handlers run on threads that have no event loop: called, an ``async def`` returns a coroutine that nobody
    awaits, so its body never ran -- a reconcile was counted reconciled, a subscriber got nothing (a
    RuntimeWarning at most), a predicate let every event through (a coroutine is truthy).
    """
    if inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(type(function).__call__):
        raise errors.ValidationError(
            f"{what} must be a plain function: {function!r} is an async def, which nbdb's threads would call "
            "without ever running it (wrap it: lambda *args: asyncio.run_coroutine_threadsafe(f(*args), loop))"
        )


def is_stop(exc: BaseException) -> bool:
    """Whether ``exc`` asks the program to stop (KeyboardInterrupt, SystemExit).

    Code that runs a user's callback, predicate or handler catches BaseException, not only
    Exception: asyncio's CancelledError (of an event loop the callback ran) once ended a delivery
    thread or a worker and the subscription silently got nothing more. Anything else is the
    caller's to log and survive. A request to stop raised on a thread of nbdb's cannot end the
    program (Python ends only that thread, silently): it stops what the thread served, logged.
    """
    return isinstance(exc, KeyboardInterrupt | SystemExit)


def raise_if_stop(exc: BaseException) -> None:
    """Raise ``exc`` again if it asks the program to stop (see :func:`is_stop`)."""
    if is_stop(exc):
        raise exc


def _what(item: Any) -> str:
    """An event as the logs name it (table, id, revision); any other item as its repr."""
    return describe(item) if isinstance(item, ChangeEvent) else repr(item)


class Dispatcher:
    """One delivery thread for the subscriptions of a replica (see the module docstring).

    The cache wakes it once after each batch it applies; it then gives each
    subscription, in turn, what its buffer held when the turn came. The
    cache's apply loop calls :meth:`watchdog` between polls: a callback that
    has run longer than :data:`HANDOFF_SECONDS` keeps the thread it runs on
    as its own, and a new thread takes over the others.
    """

    def __init__(self, name: str = "cache", handoff: float = HANDOFF_SECONDS) -> None:
        self._name = name
        self._handoff = handoff
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        """Notified when a callback returns or is handed off (``release`` waits on it)."""
        self._subs: tuple[Subscription, ...] = ()
        self._ready = threading.Event()
        self._worker: threading.Thread | None = None
        """The thread that serves the shared subscriptions (one that was handed off serves only its own)."""
        self._current: Subscription | None = None
        """The subscription whose item the worker is delivering."""
        self._runner: threading.Thread | None = None
        """The thread delivering ``_current``'s item (still that thread once :meth:`close` let go of it)."""
        self._started = 0.0
        self._closed = False

    def __repr__(self) -> str:
        return f"<nbdb.Dispatcher {self._name} subscriptions={len(self._subs)}>"

    def add(self, sub: Subscription) -> None:
        """Deliver ``sub``'s items from now on (the thread starts with the first subscription)."""
        with self._lock:
            self._subs = (*self._subs, sub)
            if self._worker is None and not self._closed:
                self._spawn()

    def wake(self) -> None:
        """Deliver what the subscriptions' buffers hold (one wake for all of them)."""
        if not self._ready.is_set():
            self._ready.set()

    def watchdog(self, default: float) -> float:
        """Hand off a callback that has run too long; how long the caller may sleep before looking again."""
        sub = self._current
        if sub is None:
            return default
        left = self._handoff - (time.monotonic() - self._started)
        if left > 0:
            return min(default, left + 0.001)
        with self._lock:
            # Again under the lock: the worker may have moved on to another item meanwhile.
            if self._current is not sub or self._closed or time.monotonic() - self._started < self._handoff:
                return default
            sub._dispatcher = None
            sub._thread = self._worker
            self._subs = tuple(s for s in self._subs if s is not sub)
            self._current = None
            self._spawn()
            self._idle.notify_all()
        log.info("subscriber %s ran longer than %.0f ms: it gets a thread of its own", sub.name, self._handoff * 1e3)
        self.wake()
        return default

    def release(self, sub: Subscription, timeout: float | None) -> bool | None:
        """Stop delivering to ``sub`` (closed) and wait up to ``timeout`` for its running callback.

        True once none runs (or when called from the callback), False if one
        still runs then, None if ``sub`` has a thread of its own (handed off).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._subs = tuple(s for s in self._subs if s is not sub)
            while sub._dispatcher is self:
                if self._current is not sub or self._runner is threading.current_thread():
                    # Idle, or closed from its own callback: by the thread running it, which close() no longer
                    # names its worker when the callback closed the whole cache or Database (the replica's
                    # close first) -- the callback then waited for itself, 5 s, and was logged as hung.
                    return True
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(left)
        return None

    def close(self, timeout: float | None = None) -> bool:
        """Stop the delivery thread (once its subscriptions are closed); False if a callback still runs."""
        with self._lock:
            self._closed = True
            worker, self._worker = self._worker, None
        self._ready.set()
        if worker is None or worker is threading.current_thread():
            return True
        worker.join(timeout)
        return not worker.is_alive()

    def _spawn(self) -> None:
        """Start a thread to serve the shared subscriptions (under the lock)."""
        worker = threading.Thread(target=self._serve, name=f"nbdb-handlers-{self._name}", daemon=True)
        self._worker = worker
        worker.start()

    def _serve(self) -> None:
        me = threading.current_thread()
        lock, ready = self._lock, self._ready
        while True:
            ready.wait()
            ready.clear()  # before the pass: an item buffered during it wakes the next one
            for sub in self._subs:
                items = sub._items
                for _ in range(len(items)):  # what it held: a busy subscriber does not starve the others
                    with lock:
                        if self._worker is not me:
                            return
                        if sub._closed or sub._dispatcher is not self or not items:
                            break
                        sub._busy = True
                        item = items.popleft()
                        self._started = time.monotonic()  # before _current: the watchdog reads them unlocked
                        self._current = sub
                        self._runner = me
                    sub._handle(item)
                    with lock:
                        if self._worker is not me:
                            handed = True  # the watchdog gave this thread to `sub`
                        else:
                            handed = False
                            self._current = None
                            sub._busy = False
                            if sub._closed:
                                self._idle.notify_all()
                    if handed:
                        sub._busy = False
                        sub._run()
                        return
            with lock:
                if self._worker is not me:
                    return
