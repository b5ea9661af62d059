"""The controller runtime: a cache's changes into a keyed work queue, and workers that reconcile.

Modelled on controller-runtime's reconcile loop over client-go's workqueue.
The rules, on top of the queue's (:mod:`nbdb.workqueue`):

- **Keys, not events.** A change of an object queues its key
  ``(Model, id)``; a key changed many times while waiting is reconciled once,
  never by two workers at once. ``reconcile(key, obj)`` reads the current
  state (``obj`` and the cache), acts, and returns; it is level-triggered, so
  it converges whatever changes it did not see one by one.
- **What ``obj`` is.** The object the cache holds when the worker takes the
  key, or, if the cache no longer holds it, the last copy the queue saw before
  its deletion (so a deletion reaches the worker with what was deleted), or
  None if there is neither (the deletion has not reached the queue yet: its own
  pass follows). ``cache.get(*key) is None`` tells a deletion.
- **Failures retry.** ``reconcile`` raising any exception logs it (with the
  key, version and revision) and retries the key with per-key exponential
  backoff under an overall rate limit; success forgets its failures.
  Returning a number of seconds re-checks the key after that long (a success).
- **Start.** Every key the cache holds is queued once the cache is loaded,
  then every changed key (``predicate(event)`` first, on the queue's own
  thread). ``resync`` seconds re-queues every cached key that passes the
  predicate (as an ``updated`` event with ``old is new``, ``synthetic``).
- **Stop.** :meth:`Controller.close` stops the feed and the queue, lets
  running reconciles finish, drops what was not started, and joins the
  workers. Closing the cache closes its queues, which stops their workers.
  A reconcile, predicate or periodic resync raising ``SystemExit`` or
  ``KeyboardInterrupt`` (which a worker or delivery thread cannot turn into
  the program's end) stops the controller the same way, logged; so does its
  feed closing by any other path. :attr:`Controller.stopped` then says so,
  and ``wait_idle()`` is False: stopped is not idle.
- **Signals and exit.** A controller started on the main thread while ``SIGTERM`` takes its default
  action (ends the process, no exit hook run) turns ``SIGTERM`` into an exit (``SystemExit(0)`` raised in
  the main thread, as Ctrl-C's ``KeyboardInterrupt`` is; likewise ``SIGINT`` where it was left to its
  default action rather than Python's handler) until the last such controller is closed, which puts the
  previous action back once its workers are joined (a controller closing counts as running until then:
  a signal during its close is an exit too, which waits for its reconciles); a second signal meanwhile
  takes that action. At interpreter exit every
  controller still running is closed (running reconciles finish, within :data:`STOP_AT_EXIT_SECONDS` in
  all) before the Databases close and give their locks back. A handler the program set is left alone.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, TypedDict, Unpack
from uuid import UUID

from nbdb import errors
from nbdb.dispatch import Predicate, check_not_async, is_stop, raise_if_stop
from nbdb.events import ChangeEvent, EventKind, Key
from nbdb.models.base import Model
from nbdb.timeouts import check_seconds, timeout_of
from nbdb.workqueue import RateLimiter, WorkQueue, check_queue_name
from nbdb.writes import check_uuid

if TYPE_CHECKING:
    from nbdb.cache import Cache

__all__ = ["MIN_DELAY", "CacheQueue", "Controller", "ControllerOptions", "Key", "Reconciler", "run_controller"]

log = logging.getLogger(__name__)

MIN_DELAY = 0.01
"""The shortest ``resync`` and re-check delay, in seconds: a resync of 1e-9 s re-queued every cached key
without pause on the feed's thread, and a re-check that soon reconciled the key in a busy loop. Given
to ``resync`` or :meth:`CacheQueue.recheck`, a shorter one is a ValidationError; returned by a
reconcile (which has no caller to raise to), it is taken as this."""

Reconciler = Callable[[Key, Model | None], float | None]
"""``reconcile(key, obj)``: act on the current state; raise to retry; return seconds to re-check later."""


def _check_delay(what: str, seconds: object) -> None:
    """ValidationError unless ``seconds`` is a number of seconds of at least :data:`MIN_DELAY` (any larger)."""
    if timeout_of(seconds, what) is None:  # no number, NaN (or past what a thread can wait: checked on)
        check_seconds(what, seconds)
    elif not seconds >= MIN_DELAY:  # type: ignore[operator]  # a number: timeout_of checked it
        raise errors.ValidationError(
            f"{what} must be at least {MIN_DELAY} seconds, not {seconds!r}: a shorter one loops without pause"
        )


def _describe(key: Key) -> str:
    return f"{key[0].nbdb_table} {key[1]}"


class CacheQueue(WorkQueue[Key]):
    """A :class:`~nbdb.workqueue.WorkQueue` of ``(Model, id)`` keys fed by a cache.

    Made by :meth:`nbdb.Cache.queue`. Iterate it (or call :meth:`get`) from
    worker threads, look at :meth:`object`, then :meth:`done` or :meth:`retry`.
    """

    def __init__(
        self,
        cache: Cache,
        models: type[Model] | Sequence[type[Model]] | None = None,
        predicate: Predicate | None = None,
        resync: float | None = None,
        *,
        name: str = "",
        rate_limiter: RateLimiter[Key] | None = None,
    ) -> None:
        if resync is not None:
            _check_delay("resync", resync)
        super().__init__(check_queue_name(name) or "controller", rate_limiter)
        self.cache = cache
        self.models = cache.models_of(models)
        self._predicate = predicate
        self._last: dict[Key, Model] = {}  # last copies of deleted keys not yet processed
        self._rechecks: dict[Key, float] = {}
        """Keys waiting for the re-check their reconcile asked for, and when they are due (see :meth:`recheck`)."""
        tick = None if resync is None else (resync, self.resync)
        self.subscription = cache.feed(
            self._on_event,
            self.models,
            predicate,
            True,
            name=f"{self.name}-feed",
            tick=tick,
            on_close=self._feed_closed,
        )

    def _feed_closed(self) -> None:
        """The feed closed: the queue stops (a closed queue closed it first, and is left to drain as it was).

        A predicate raising SystemExit on the feed's thread closed only the feed (see :mod:`nbdb.dispatch`):
        the queue took no change any more, its workers went on, and ``wait_idle()`` said True, as if every
        change was processed.
        """
        if self._closed:
            return
        log.error("%s: its feed stopped: the queue stops (nothing more is handed out)", self.name)
        super().close()  # not self.close(): the feed is closing already (its close waits for a running callback)
        super().drop()

    def _on_event(self, event: ChangeEvent[Model]) -> None:
        key = event.key
        with self._cond:
            if event.kind is EventKind.DELETED and event.old is not None:
                self._last[key] = event.old
            else:
                self._last.pop(key, None)
            self._add(key)

    def resync(self) -> None:
        """Queue every cached key of the queue's models that passes the predicate."""
        revision = self.cache.revision
        for model in self.models:
            for obj in self.cache.list(model):
                if self._predicate is not None:
                    event = ChangeEvent(EventKind.UPDATED, model, obj, obj, revision, True)
                    try:
                        if not self._predicate(event):
                            continue
                    except BaseException as exc:  # CancelledError too: it ended the queue's feed (see dispatch)
                        raise_if_stop(exc)
                        log.exception("%s: predicate failed on resync of %s %s", self.name, model.nbdb_table, obj.id)
                self.add((model, obj.id))

    def _check(self, key: object) -> Key:
        """``key`` as the queue holds it: ``(Model, UUID)``.

        Refuse a key that is no ``(Model, id)`` of the queue's models: a worker's ``object(key)`` raised
        TypeError on it, outside the reconcile's ``try``, and the worker thread ended for good (the key stuck
        processing, nothing reconciled again, ``wait_idle()`` never True). An id given as text is the
        object's key: kept as text, it was another key than the cache's, and the object was handed to two
        workers at once (and a reconcile's ``key[1]`` was not the object's id)."""
        if not (isinstance(key, tuple) and len(key) == 2 and any(key[0] is m for m in self.models)):
            names = ", ".join(m.__name__ for m in self.models)
            raise errors.ValidationError(f"{self.name}: a cache's queue holds (Model, id) keys of {names}, not {key!r}")
        if type(key[1]) is UUID:
            return key
        return (key[0], check_uuid(key[1]))

    def add(self, key: Key) -> None:
        """Queue ``key``, a ``(Model, id)`` of the queue's models (ValidationError otherwise)."""
        super().add(self._check(key))

    def add_after(self, key: Key, delay: float) -> None:
        """:meth:`add` ``key`` once ``delay`` seconds have passed (see :meth:`WorkQueue.add_after`)."""
        super().add_after(self._check(key), delay)

    def object(self, key: Key) -> Model | None:
        """The cached object of ``key``, else the last copy seen before its deletion, else None.

        ``key`` is checked as the other calls check it (ValidationError for another key; an id given as text
        is the object's key): "junk" raised TypeError out of the cache, and a deleted object's key with its id
        as text found no last copy (None, as if its deletion had not reached the queue).
        """
        key = self._check(key)
        obj = self.cache.get(*key)
        if obj is not None:
            return obj
        with self._cond:
            return self._last.get(key)

    def done(self, key: Key) -> None:
        """``key`` was processed: release it, forget its failures, and drop its tombstone if it is settled."""
        key = self._check(key)
        super().done(key)
        with self._cond:
            if key not in self._dirty and key not in self._processing and key not in self._due:
                self._last.pop(key, None)

    # The other calls that name a key take an id given as text as the object's key too (see _check):
    # is_pending() said False of a queued object, retry() refused it as not being processed.
    def retry(self, key: Key) -> float:
        """:meth:`WorkQueue.retry` of ``key`` (its id may be given as text)."""
        return super().retry(self._check(key))

    def is_pending(self, key: Key) -> bool:
        """:meth:`WorkQueue.is_pending` of ``key`` (its id may be given as text)."""
        return super().is_pending(self._check(key))

    def failures(self, key: Key) -> int:
        """:meth:`WorkQueue.failures` of ``key`` (its id may be given as text)."""
        return super().failures(self._check(key))

    def recheck(self, key: Key, seconds: float) -> None:
        """Add ``key`` again after ``seconds``, as a processed key's re-check: :meth:`wait_idle` does not wait for it.

        ``seconds`` below :data:`MIN_DELAY` (zero or less included) is a ValidationError.

        (A controller whose reconcile returned a delay never became idle: every key was always waiting.)
        """
        key = self._check(key)
        if timeout_of(seconds, "re-check delay") is None:
            return  # longer than anybody waits
        _check_delay("re-check delay", seconds)
        with self._cond:
            due = self._add_after(key, seconds)
            if due is not None:
                self._rechecks[key] = due

    def _busy(self) -> bool:
        if self._ready or self._processing:
            return True
        rechecks = self._rechecks
        if rechecks:  # only those still waiting, for that time (a retry or an earlier add replaced the others)
            self._rechecks = rechecks = {k: due for k, due in rechecks.items() if self._due.get(k) == due}
        return len(self._due) > len(rechecks)

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Block until every key of the cache's first list was queued; False on timeout."""
        return self.subscription.wait_replayed(timeout)

    def wait_idle(self, timeout: float | None = None, interval: float = 0.005) -> bool:
        """Block until every change the cache applied so far was processed; False on timeout.

        Idle: the feed has no event left to queue, and no key is ready,
        processing or waiting for a retry (a key waiting only for its :meth:`recheck` was processed).
        False at once when the queue is closed (by :meth:`Controller.close`, or its cache closing): what
        was not processed then never will be. (It waited for ever without a timeout.)
        """
        timeout = timeout_of(timeout)
        check_seconds("interval", interval)
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self.wait_synced(timeout):
            return False
        while True:
            if self._closed or self.subscription.closed:  # stopped, not idle (its feed closes the queue next)
                return False
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if self.subscription.pending == 0 and super().wait_idle(0) and self.subscription.pending == 0:
                return True
            if remaining is not None and remaining <= 0:
                return False
            time.sleep(interval)

    def close(self) -> None:
        """Stop the feed and shut the queue down (see :meth:`WorkQueue.close`): ready keys are still handed out."""
        super().close()
        self.subscription.close()

    def shutdown(self) -> None:
        """Stop at once: :meth:`close`, and :meth:`drop` what is ready (a controller's stop, its cache's close)."""
        self.close()
        self.drop()


STOP_AT_EXIT_SECONDS = 10.0
"""How long the interpreter's exit waits, in all, for the reconciles still running (see :func:`stop_at_exit`)."""


class _Registry:
    """The controllers not closed yet (held weakly): closed at exit, and the ones the signal handlers stand for.

    A controller leaves once its :meth:`Controller.close` waited for its workers (not when the close starts:
    a signal meanwhile, raised inside that wait, left the exit nothing to wait for, and the reconcile in
    flight was cut off). Read without a lock: the members are a frozenset that each change replaces whole
    (copy on write), so that a reader on any thread iterates it as it stands, and the signal handler, which
    runs on the main thread between any two of its steps (inside a change of this registry too), never
    waits for a lock that thread holds. (Iterating a ``WeakSet`` while another thread added to it raised
    "Set changed size during iteration" out of ``close()``, or out of the handler in place of its exit.)
    Changes take a lock, so that two at once do not lose one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refs: frozenset[weakref.ref[Controller]] = frozenset()
        self._pruned = 0
        """How many members there were after the last pass that dropped the dead ones."""

    def add(self, controller: Controller) -> None:
        ref = weakref.ref(controller)  # hashed while alive: its hash stays once the controller is gone
        with self._lock:
            refs = self._refs | {ref}
            if len(refs) > 2 * self._pruned + 16:  # one never closed and collected (its cache closed): dropped
                refs = frozenset(r for r in refs if r() is not None)
                self._pruned = len(refs)
            self._refs = refs

    def discard(self, controller: Controller) -> None:
        ref = weakref.ref(controller)  # equal to the one add() made (the controller lives: it is closing)
        if ref not in self._refs:  # closed already
            return
        with self._lock:
            self._refs = self._refs - {ref}

    def snapshot(self) -> list[Controller]:
        """The controllers registered now (one read of the set: safe beside changes on other threads)."""
        return [c for c in (r() for r in self._refs) if c is not None]

    @staticmethod
    def _active(controller: Controller | None) -> bool:
        """Whether ``controller`` has work to wait for: running, or closing (its workers not waited for yet).

        Not one stopped otherwise (its cache or Database closed): a reconcile it still runs works on a
        closed Database, and is no work to wait for (a test's that never returns held every exit 10 s).
        """
        return controller is not None and (controller._closing or not controller.stopped)

    def active(self) -> list[Controller]:
        """The controllers with work to wait for (see :meth:`_active`)."""
        return [c for c in self.snapshot() if self._active(c)]

    def any_active(self) -> bool:
        """Whether a controller has work to wait for (see :meth:`_active`)."""
        return any(self._active(r()) for r in self._refs)

    def forget(self) -> None:
        """Forget every controller (a forked child), with a new lock: another thread of the parent may have held it."""
        self._lock = threading.Lock()
        self._refs = frozenset()
        self._pruned = 0


_RUNNING = _Registry()
"""Controllers not closed yet (see :class:`_Registry`)."""
_PREVIOUS: dict[int, signal.Handlers] = {}
"""The default action of each signal whose handler :func:`_stop_on_signals` installed, while it is installed.

Read and written on the main thread only (the only one that may set a handler), so without a lock: the
handler runs there too, between any two steps of the main thread, and waiting for a lock the main thread
held would never end."""
_EXITS: dict[int, Callable[[], BaseException]] = {
    signal.SIGTERM: lambda: SystemExit(0),
    signal.SIGINT: KeyboardInterrupt,
}
"""What each handled signal raises in the main thread: SIGTERM an exit, SIGINT what Python's own handler raises."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """A handled signal while a controller runs: raised in the main thread as an exit, which unwinds.

    Its ``with`` blocks close (a controller's lets its running reconciles finish, a lock's gives it back),
    then the exit hooks stop the controllers still running and close the Databases (:func:`stop_at_exit`).
    (Python's default action for SIGTERM ended the process without any of it: the successor waited a
    lock's ttl, and the reconciles running were cut off.) The previous action is put back first, so that
    a second signal takes it (ends the process at once); with no controller running any more it is taken
    for this one too.
    """
    running = _RUNNING.any_active()  # a controller closing still runs its reconciles in flight
    previous = _PREVIOUS.get(signum, signal.SIG_DFL)
    _restore_signals()
    if not running:
        signal.signal(signum, previous)  # restored already (unless the table was lost): never this handler again
        signal.raise_signal(signum)  # the previous (default) action, as if the handler had never been set
        return
    log.warning("signal %d: stopping the controllers and closing the Databases (exit)", signum)
    raise _EXITS[signum]()


def _stop_on_signals() -> None:
    """Install :func:`_on_signal` for each signal left to its default action, from the main thread only.

    A handler the program set (Python's own for SIGINT included) is left alone, and so is every signal
    when called from another thread (where Python cannot set one).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in _EXITS:
        if signum in _PREVIOUS:
            continue
        try:
            if signal.getsignal(signum) is not signal.SIG_DFL:
                continue
            signal.signal(signum, _on_signal)
        except (ValueError, OSError):  # not the main interpreter, or a signal this platform cannot catch
            continue
        _PREVIOUS[signum] = signal.SIG_DFL


def _restore_signals() -> None:
    """Put back the previous action of each signal :func:`_stop_on_signals` handles (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum, previous in list(_PREVIOUS.items()):
        try:
            if signal.getsignal(signum) is _on_signal:  # unless the program set another since
                signal.signal(signum, previous)
        except (ValueError, OSError):
            continue
        _PREVIOUS.pop(signum, None)


def stop_at_exit() -> None:
    """Close every controller still running (called by the exit hook before the Databases close).

    Each stops as :meth:`Controller.close` stops it: no new reconcile, the running ones finish (not one
    stopped already, by its cache's or Database's close). The
    wait is bounded, :data:`STOP_AT_EXIT_SECONDS` in all: a reconcile still running then is left to its
    daemon thread, which ends with the interpreter. (At exit, the Databases closed under running
    reconciles, which failed on the closed Database: the work in flight was cut off.)
    """
    deadline = time.monotonic() + STOP_AT_EXIT_SECONDS
    # Running ones, and those whose close() did not join their workers yet (a signal's exit raised in it).
    running = _RUNNING.active()
    for controller in running:  # all first: none starts a reconcile while the exit waits for another's
        try:
            controller.queue.shutdown()
        except Exception:
            log.warning("stopping %r at exit failed", controller, exc_info=True)
    for controller in running:
        try:
            if not controller.close(max(0.0, deadline - time.monotonic())):
                log.warning("%s: a reconcile still ran at exit: left to end with the interpreter", controller.name)
        except Exception:
            log.warning("stopping %r at exit failed", controller, exc_info=True)


def _forget_in_child() -> None:
    """A forked child has none of its parent's worker threads: its exit must not wait for them."""
    _RUNNING.forget()  # (the handlers stay, with what they restore: with nothing running, a signal takes that)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


MAX_WORKERS = 1024
"""Worker threads a controller may start: ``workers=10**6`` started threads until the process could start
no more (minutes, then a RuntimeError out of the constructor with the threads left running)."""


class Controller:
    """Workers reconciling the keys of a :class:`CacheQueue`; see the module docstring.

    Made (and started) by :func:`run_controller`; stop it with :meth:`close`
    or a ``with`` block.
    """

    def __init__(
        self,
        cache: Cache,
        reconcile: Reconciler,
        models: type[Model] | Sequence[type[Model]] | None = None,
        *,
        workers: int = 1,
        predicate: Predicate | None = None,
        resync: float | None = None,
        rate_limiter: RateLimiter[Key] | None = None,
        name: str = "controller",
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
            raise errors.ValidationError(f"a controller takes 1 to {MAX_WORKERS} workers (threads), not {workers!r}")
        if not callable(reconcile):
            raise errors.ValidationError(f"reconcile must be a callable (key, obj), not {reconcile!r}")
        check_not_async("reconcile", reconcile)
        from nbdb.cache import Cache  # at run time: the cache module imports this one

        if not isinstance(cache, Cache):
            raise errors.ValidationError(f"a controller runs on a cache (db.cache(...)), not {cache!r}")
        self.reconcile = reconcile
        self.queue = cache.queue(models, predicate, resync, name=name, rate_limiter=rate_limiter)
        self.name = self.queue.name
        self.reconciled = 0
        """Reconciles that returned (successes)."""
        self.failed = 0
        """Reconciles that raised (each was retried)."""
        self._stats_lock = threading.Lock()
        self._closing = False
        """:meth:`close` began: its reconciles in flight still run until it joined the workers."""
        self._ended = [threading.Event() for _ in range(workers)]
        """Set as each worker ends: what :meth:`close` waits for (see :meth:`_worker`)."""
        self._threads = [
            threading.Thread(target=self._worker, args=(ended,), name=f"nbdb-{name}-{i}", daemon=True)
            for i, ended in enumerate(self._ended)
        ]
        for thread in self._threads:
            thread.start()
        _RUNNING.add(self)
        _stop_on_signals()

    def __repr__(self) -> str:
        return f"<nbdb.Controller {self.name} workers={len(self._threads)} reconciled={self.reconciled}>"

    def _worker(self, ended: threading.Event) -> None:
        """A worker thread: :meth:`_work`, then ``ended`` set.

        :meth:`close` waits for the events, not with ``Thread.join``: a signal's exception raised inside
        a join (Python 3.11's) marked the thread as ended while it still ran (the join took the thread's
        own lock for its end), so the exit's close found no worker to wait for and cut the reconcile off.
        """
        try:
            self._work()
        finally:
            ended.set()

    def _work(self) -> None:
        queue = self.queue
        handles = queue.metrics
        for key in queue:
            if queue.closed:
                # Stopped (close(), or the cache closed) after the key was handed out: no reconcile starts
                # after the stop. (A closed cache's queue handed out every key still ready, and the worker
                # read the closed cache outside the try below: the thread died, its key stuck processing.)
                queue.done(key)
                continue
            obj: Model | None = None
            start = time.perf_counter()
            try:
                obj = queue.object(key)
                again = self.reconcile(key, obj)
            except BaseException as exc:
                # Not only Exception: asyncio's CancelledError (of an event loop the reconcile ran) or a
                # test framework's failure ended the worker, its key stuck processing, wait_idle() never True.
                delay = queue.retry(key)
                if is_stop(exc):
                    # Asked to stop, on a worker thread (which cannot end the program: raised on, it ended this
                    # worker alone, silently). The controller stops, as close() would stop it.
                    log.error(
                        "%s: reconcile of %s raised %s on a worker thread, which cannot end the program: "
                        "the controller stops",
                        self.name,
                        _describe(key),
                        type(exc).__name__,
                    )
                    queue.shutdown()
                    return
                with self._stats_lock:
                    self.failed += 1
                log.warning(
                    "%s: reconcile of %s (version %s, cache at revision %d) failed (%d in a row), retry in %.3fs: %r",
                    self.name,
                    _describe(key),
                    getattr(obj, "version", None),
                    queue.cache.revision,
                    queue.failures(key),
                    delay,
                    exc,
                    exc_info=log.isEnabledFor(logging.DEBUG),  # the traceback of every retry only when asked
                )
            else:
                queue.done(key)
                with self._stats_lock:
                    self.reconciled += 1
                if again is not None:
                    self._recheck(key, again)
            finally:
                if handles is not None:
                    handles.work_seconds.observe(time.perf_counter() - start)

    def _recheck(self, key: Key, again: object) -> None:
        """Re-check ``key`` after the seconds its reconcile returned; anything else is logged and ignored."""
        if isinstance(again, bool) or not isinstance(again, int | float) or again != again:
            # A reconcile returning a tuple or a status string once raised TypeError here and ended the
            # worker thread: its keys were never reconciled again and wait_idle() never returned. True (a
            # status, not seconds) re-checked the key every second for ever; NaN was ignored without a word.
            log.error(
                "%s: reconcile of %s returned %r, not a number of seconds to re-check after: ignored",
                self.name,
                _describe(key),
                again,
            )
            return
        if again > 0:
            # No sooner than MIN_DELAY: 1e-6 reconciled the key again in a loop that kept a core busy.
            self.queue.recheck(
                key, max(again, MIN_DELAY)
            )  # (float() of a whole number past 1e308 raised, and the worker died)

    @property
    def stopped(self) -> bool:
        """True once the controller stopped: :meth:`close`, its cache closing, or a reconcile, predicate or
        resync asking the program to stop (``SystemExit``, ``KeyboardInterrupt``); nothing is reconciled again."""
        return self.queue.closed

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every change the cache applied so far was reconciled; False on timeout or once stopped.

        :attr:`stopped` tells the two apart. Called from one of its own reconciles it would wait for itself
        (the key being reconciled is not idle until that reconcile returns: for ever without a timeout):
        a ValidationError.
        """
        if threading.current_thread() in self._threads:
            raise errors.ValidationError(
                f"{self.name}: wait_idle() from one of its own reconciles would wait for itself "
                "(the key being reconciled is not idle until it returns)"
            )
        return self.queue.wait_idle(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Stop: no new keys, running reconciles finish, the rest is dropped; False if a worker is still busy.

        The last running controller's close (on the main thread) puts back the signals' previous actions
        (see the module docstring), once it joined its workers: until then the controller counts as
        running. A signal meanwhile is an exit, raised inside this wait, and the exit waits for the
        reconciles in flight (:func:`stop_at_exit`). (The default action put back before the wait ended
        the process at one SIGTERM, the reconcile cut off and the lock kept until its ttl; a close that
        left the running controllers before its wait let the exit close the Databases under its reconcile.)
        """
        timeout = timeout_of(timeout)
        self._closing = True  # before the queue stops: never a moment when it looks stopped with nothing to wait for
        self.queue.shutdown()
        deadline = None if timeout is None else time.monotonic() + timeout
        me = threading.current_thread()
        others = [(t, ended) for t, ended in zip(self._threads, self._ended, strict=True) if t is not me]
        for thread, ended in others:
            # The event first (see _worker); then the thread, which has nothing left to do but end.
            if ended.wait(None if deadline is None else max(0.0, deadline - time.monotonic())):
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        # Only now (not if a signal's exit was raised in the wait above: the exit closes it again, and waits).
        _RUNNING.discard(self)
        if not _RUNNING.any_active():
            _restore_signals()
        return all(ended.is_set() for _, ended in others)

    def __enter__(self) -> Controller:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class ControllerOptions(TypedDict, total=False):
    """The keyword options of :func:`run_controller` (those of :class:`Controller`)."""

    workers: int
    predicate: Predicate | None
    resync: float | None
    rate_limiter: RateLimiter[Key] | None
    name: str


def run_controller(
    cache: Cache,
    reconcile: Reconciler,
    models: type[Model] | Sequence[type[Model]] | None = None,
    **options: Unpack[ControllerOptions],
) -> Controller:
    """Start ``workers`` threads reconciling the keys of ``models`` (default: every model the cache follows).

    ``reconcile(key, obj)`` is called with each changed key and its object
    (see the module docstring for what ``obj`` is); it raises to be retried
    with backoff, and may return seconds after which to re-check the key.
    Options: ``workers`` (1), ``predicate``, ``resync`` (seconds),
    ``rate_limiter``, ``name``. Returns the running :class:`Controller`;
    ``close()`` stops it.
    """
    return Controller(cache, reconcile, models, **options)
