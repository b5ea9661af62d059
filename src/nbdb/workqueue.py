"""A keyed, coalescing, rate-limited work queue (client-go's ``workqueue``, in Python).

The rules, which the controller runtime (:mod:`nbdb.controller`) builds on:

1. **Coalescing.** A key added while it waits in the queue is not added
   again: however many times it was added, it is handed out once.
2. **One worker per key.** A key handed out by :meth:`WorkQueue.get` is
   *processing* until :meth:`done` or :meth:`retry`. Adding it meanwhile marks
   it dirty; it is queued again when its worker releases it, never handed to
   a second worker while the first has it.
3. **Level-triggered.** The queue holds keys, not events: the worker reads
   the current state for the key when it gets it, so coalesced adds lose
   nothing.
4. **Retries back off.** :meth:`retry` releases the key and adds it again
   after the rate limiter's delay: per key, exponential in its consecutive
   failures (``base * 2**failures``, at most ``max_delay``), and overall a
   token bucket (``rate`` retries per second, bursts of ``burst``); the larger
   delay wins. :meth:`done` (success) forgets the key's failures, and a retry
   of it still waiting (an attempt on new information settled it). A key that
   was added again while it was processing is queued at once by either: new
   information is worth a try now.
5. **Delays.** :meth:`add_after` adds a key once a delay has passed; a key
   waiting for two delays keeps the earlier one. Due keys move to the queue
   when a worker looks (in :meth:`get`), so no timer thread is needed.
6. **Shutdown.** After :meth:`close`, adds are ignored and :meth:`get`
   returns None to every worker once nothing is ready; keys being processed
   can still be released.

Keys are any hashable values; FIFO order among ready keys.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

from nbdb import errors, metrics
from nbdb.timeouts import check_seconds, timeout_of

__all__ = ["RateLimiter", "WorkQueue"]

K = TypeVar("K", bound=Hashable)

Clock = Callable[[], float]


def _check_key(key: object) -> None:
    """Refuse a key the queue cannot hold: it keeps keys in sets and dicts (a list key raised TypeError)."""
    try:
        hash(key)
    except TypeError:
        raise errors.ValidationError(f"a work queue's keys must be hashable, not {key!r}") from None


def _as_float(n: object) -> float | None:
    """``n`` as a float; None if it is no number (True is none) or a whole number past a float's range."""
    if isinstance(n, bool) or not isinstance(n, int | float):
        return None
    try:
        return float(n)
    except OverflowError:
        return None


class RateLimiter(Generic[K]):
    """How long a failed key waits before its next try.

    The larger of a per-key exponential backoff (``base * 2**failures``,
    capped at ``max_delay``) and an overall token bucket that lets ``rate``
    retries per second through, in bursts of up to ``burst``. The defaults are
    client-go's, with a shorter cap suited to network agents.
    """

    def __init__(
        self,
        base: float = 0.005,
        max_delay: float = 60.0,
        rate: float = 10.0,
        burst: int = 100,
        clock: Clock = time.monotonic,
    ) -> None:
        # Numbers, and finite delays: a NaN max_delay or an infinite base made a failed key's delay NaN or
        # infinite, and retry() silently dropped the key (never tried again, the queue reported idle).
        # (An infinite rate is fine: no overall limit.)
        # As floats: a whole number past a float's range (10**400) raised OverflowError here, or at the first
        # retry for a rate (the bucket's arithmetic), instead of the ValidationError below.
        fbase, fmax, frate = (_as_float(n) for n in (base, max_delay, rate))
        if (
            fbase is None
            or fmax is None
            or frate is None
            or math.isnan(fbase)
            or math.isnan(fmax)
            or math.isnan(frate)
            or math.isinf(fbase)
            or fmax > threading.TIMEOUT_MAX  # infinite, or past what a worker's wait can take
            or isinstance(burst, bool)
            or not isinstance(burst, int)
            or _as_float(burst) is None
            or fbase <= 0
            or fmax < fbase
            or frate <= 0
            or burst < 1
        ):
            raise errors.ValidationError(
                f"rate limiter needs numbers 0 < base <= max_delay <= {threading.TIMEOUT_MAX:g} and rate > 0, "
                "and a whole burst >= 1 "
                f"(got base={base!r}, max_delay={max_delay!r}, rate={rate!r}, burst={burst!r})"
            )
        self.base, self.max_delay, self.rate = fbase, fmax, frate
        self.burst = burst
        self._clock = clock
        self._failures: dict[K, int] = {}
        self._tokens = float(burst)
        self._last = clock()
        # Its own lock: one limiter may serve several queues (two controllers), each calling it under
        # its own lock; their updates of the bucket and the counts were lost (half of 160,000 retries'
        # tokens, measured with 8 threads), so the overall rate let more through than it said.
        self._lock = threading.Lock()

    def when(self, key: K) -> float:
        """Record a failure of ``key``; the seconds it must wait before its next try."""
        with self._lock:
            failures = self._failures.get(key, 0)
            self._failures[key] = failures + 1
            reserved = self._reserve()
        # Past 2**64 the float is capped anyway; avoid computing huge powers.
        backoff = self.max_delay if failures >= 64 else min(self.max_delay, self.base * 2.0**failures)
        # At most what a thread can wait: a key due later than that (a tiny rate's reservation) was dropped.
        return min(max(backoff, reserved), threading.TIMEOUT_MAX)

    def _reserve(self) -> float:
        # A token bucket with reservations: a retry takes a token now or owes
        # one, and waits until the bucket would have refilled to pay for it.
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def forget(self, key: K) -> None:
        """``key`` succeeded: its next failure starts from ``base`` again."""
        with self._lock:
            self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        """Consecutive failures of ``key`` so far."""
        with self._lock:
            return self._failures.get(key, 0)


def check_queue_name(name: object) -> str:
    """``name`` if it is text; ValidationError otherwise.

    It labels the queue's metrics: ``name=5`` was taken, and every scrape of the registry then raised
    TypeError (its labels sorted beside the others' text), so no metric of the process could be read.
    """
    if not isinstance(name, str):
        raise errors.ValidationError(f"a queue's or controller's name is text, not {name!r}")
    return name


class WorkQueue(Generic[K]):
    """Keys waiting for a worker; see the module docstring for the rules.

    ``name`` labels its metrics and logs. ``clock`` (monotonic seconds) is
    for tests; the limiter must use the same clock.
    """

    def __init__(
        self,
        name: str = "",
        rate_limiter: RateLimiter[K] | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.name = check_queue_name(name) or "queue"
        if rate_limiter is not None and not isinstance(rate_limiter, RateLimiter):
            # Taken, it raised AttributeError at the first retry, in the worker that had failed: the thread died.
            raise errors.ValidationError(f"rate_limiter takes a nbdb.RateLimiter, not {rate_limiter!r}")
        self.rate_limiter: RateLimiter[K] = rate_limiter if rate_limiter is not None else RateLimiter(clock=clock)
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._ready: deque[K] = deque()
        self._dirty: set[K] = set()  # added and not handed out since (queued, or waiting for its worker)
        self._processing: set[K] = set()
        self._delayed: list[tuple[float, int, K]] = []  # heap; entries superseded in _due are skipped
        self._due: dict[K, float] = {}
        self._retries: dict[K, float] = {}  # keys whose delay in _due is a failure's backoff, and its due time
        self._seq = itertools.count()
        self._closed = False
        handles = metrics.active()
        self._metrics = None if handles is None else handles.queue(self.name)
        if self._metrics is not None:
            self._metrics.track(self)

    @property
    def metrics(self) -> metrics.QueueMetrics | None:
        """The queue's metric handles (None when metrics are off)."""
        return self._metrics

    def __repr__(self) -> str:
        return f"<nbdb.WorkQueue {self.name} ready={len(self._ready)} processing={len(self._processing)}>"

    # ---------------------------------------------------------------- producers

    def add(self, key: K) -> None:
        """Queue ``key`` unless it is already waiting (rules 1 and 2)."""
        _check_key(key)
        with self._cond:
            self._add(key)

    def _add(self, key: K) -> None:
        if self._closed:
            return
        if self._metrics is not None:
            self._metrics.adds.inc()
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._ready.append(key)
            self._cond.notify()

    def add_after(self, key: K, delay: float) -> None:
        """Add ``key`` once ``delay`` seconds have passed (at once if ``delay <= 0``; never if it is infinite)."""
        _check_key(key)
        if delay is None:
            raise errors.ValidationError("delay must be a number of seconds, not None")
        if timeout_of(delay, "delay") is None:
            return  # longer than anybody waits
        with self._cond:
            self._add_after(key, delay)

    def _add_after(self, key: K, delay: float) -> float | None:
        """:meth:`add_after` under the lock; the time ``key`` is due at if this call set it."""
        if self._closed:
            return None
        if delay <= 0:
            self._add(key)
            return None
        due = self._clock() + delay
        if self._due.get(key, due + 1) <= due:
            return None  # already waiting for an earlier time
        self._due[key] = due
        heapq.heappush(self._delayed, (due, next(self._seq), key))
        self._cond.notify()  # a sleeping worker may need to wake earlier
        return due

    # ---------------------------------------------------------------- workers

    def get(self, timeout: float | None = None) -> K | None:
        """The next ready key, now processing; None after ``timeout`` or once closed and drained."""
        timeout = timeout_of(timeout)
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                self._move_due()
                if self._ready:
                    key = self._ready.popleft()
                    self._dirty.discard(key)
                    self._processing.add(key)
                    return key
                if self._closed:
                    return None
                wait = None if deadline is None else deadline - self._clock()
                if wait is not None and wait <= 0:
                    return None
                if self._delayed:
                    until_due = self._delayed[0][0] - self._clock()
                    wait = until_due if wait is None else min(wait, until_due)
                self._cond.wait(None if wait is None else max(wait, 0.0))

    def _move_due(self) -> None:
        now = self._clock()
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            due, _, key = heapq.heappop(delayed)
            if self._due.get(key) == due:
                del self._due[key]
                self._retries.pop(key, None)
                self._add(key)

    def done(self, key: K) -> None:
        """``key`` was processed successfully: release it and forget its failures (rules 2, 4).

        A retry still waiting for its backoff (the key failed, was added again and handed out at once, and
        this attempt succeeded) is dropped: it was settled. (It kept :meth:`wait_idle` False and the key
        pending until the backoff ran out, up to ``max_delay``, then processed the key once more.) A delay
        of :meth:`add_after` stays.
        """
        with self._cond:
            self.rate_limiter.forget(key)
            self._release(key)
            due = self._retries.pop(key, None)
            if due is not None and self._due.get(key) == due:
                del self._due[key]  # its heap entry is skipped by _move_due

    def retry(self, key: K) -> float:
        """``key`` failed: release it and add it again after its backoff; returns the delay (rule 4)."""
        with self._cond:
            if key not in self._processing:  # before the limiter: a refused call counted a failure and took a token
                raise errors.ValidationError(f"{self.name}: {key!r} is not being processed (released twice?)")
            delay = self.rate_limiter.when(key)
            if self._metrics is not None:
                self._metrics.retries.inc()
            if not self._release(key):
                due = self._clock() + delay
                if self._due.get(key, due + 1) > due and not self._closed:
                    self._due[key] = due
                    self._retries[key] = due
                    heapq.heappush(self._delayed, (due, next(self._seq), key))
                    self._cond.notify()
            return delay

    def _release(self, key: K) -> bool:
        """Stop processing ``key``; True if it was added meanwhile and is queued again."""
        if key not in self._processing:
            raise errors.ValidationError(f"{self.name}: {key!r} is not being processed (released twice?)")
        self._processing.discard(key)
        if key in self._dirty and not self._closed:
            self._ready.append(key)
            self._cond.notify()
            return True
        return False

    def __iter__(self) -> Iterator[K]:
        """Keys as :meth:`get` hands them out, until the queue is closed."""
        while True:
            key = self.get()
            if key is None:
                return
            yield key

    # ---------------------------------------------------------------- state

    def __len__(self) -> int:
        """Keys ready now (delays that have passed included)."""
        with self._cond:
            self._move_due()
            return len(self._ready)

    @property
    def processing(self) -> int:
        """Keys handed out and not released yet."""
        return len(self._processing)

    @property
    def waiting(self) -> int:
        """Keys waiting for a delay (a retry's backoff, :meth:`add_after`)."""
        return len(self._due)

    def is_pending(self, key: K) -> bool:
        """Whether ``key`` is queued, processing or waiting for a delay."""
        with self._cond:
            return key in self._dirty or key in self._processing or key in self._due

    def failures(self, key: K) -> int:
        """Consecutive failures of ``key`` (see :meth:`retry`)."""
        with self._cond:
            return self.rate_limiter.failures(key)

    def wait_idle(self, timeout: float | None = None, interval: float = 0.005) -> bool:
        """Block until nothing is ready, processing or waiting for a delay; False on timeout."""
        timeout = timeout_of(timeout)
        check_seconds("interval", interval)  # NaN or -1: a ValueError out of time.sleep(); inf: never rechecked
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cond:
                self._move_due()
                if not self._busy():
                    return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(interval)

    def _busy(self) -> bool:
        """Whether a key is ready, processing or waiting for a delay (under the lock)."""
        return bool(self._ready or self._processing or self._due)

    def metric_samples(self) -> Iterator[tuple[str, tuple[str, ...], float]]:
        """The ``queue_depth`` gauge (see :mod:`nbdb.metrics`)."""
        yield "queue_depth", (self.name,), float(len(self._ready))

    # ---------------------------------------------------------------- lifecycle

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Shut down: ignore adds, drop delayed keys, and let every :meth:`get` return None once drained.

        Keys already ready are still handed out, so workers may finish them;
        call :meth:`drop` too to stop without draining.
        """
        with self._cond:
            self._closed = True
            self._delayed.clear()
            self._due.clear()
            self._retries.clear()
            self._cond.notify_all()

    def drop(self) -> None:
        """Forget every ready key (after :meth:`close`, to stop without draining)."""
        with self._cond:
            for key in self._ready:
                self._dirty.discard(key)
            self._ready.clear()
            self._cond.notify_all()
