"""One retry policy and one exception map, shared by every backend.

Backends used to carry their own retry loops (about twenty, with nine backoff
formulas) and their own exception translators of four shapes. This module
holds the vocabulary once, as redis-py's ``Retry`` and httpx's exception
mapping do:

* :class:`ExceptionMap` turns a client library's exception into an
  :mod:`nbdb.errors` class, and classifies it: is it worth trying again
  (``retryable``), and did the request certainly not reach the server
  (``unsent``) — which decides whether a *write* may be sent again blindly.
* :class:`RetryPolicy` says how often and how long to try (attempts, backoff
  with jitter, an overall deadline); :meth:`RetryPolicy.call` runs one call
  under it. A write whose request may have been sent is never retried blindly:
  unless the caller declares the write idempotent (a commit token makes it
  so), the failure becomes :class:`nbdb.CommitUnknownError` and the family
  settles the outcome.
* :class:`Outage` holds the rule for calls made while a client has lost its
  server: wait for the reconnect up to the call's deadline while the outage is
  younger than ``timeout``, and fail at once, unsent, once it is that old.

Backends read their policy from URL options (``retries``, ``retry_backoff``,
``retry_deadline``) with :meth:`nbdb.options.Options.retry_policy`.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from nbdb import errors, metrics

__all__ = ["Attempts", "ErrorRule", "ExceptionMap", "Failure", "Outage", "RetryPolicy"]

log = logging.getLogger(__name__)

# Jitter needs no global seed: a private generator leaves the caller's random state alone.
_JITTER = random.Random()

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ErrorRule:
    """One row of an :class:`ExceptionMap`.

    It matches an exception that is an instance of ``types`` and, if
    ``contains`` is given, whose message contains one of those (lowercase)
    fragments, or whose ``code`` (for libraries with numeric or enum codes)
    is one of ``codes``.
    """

    types: tuple[type[BaseException], ...]
    error: type[errors.NbdbError]
    contains: tuple[str, ...] = ()
    codes: tuple[object, ...] = ()
    retryable: bool = False
    """Trying the same call again (maybe on another endpoint) may succeed."""
    unsent: bool = False
    """The request certainly did not reach a server that could apply it."""
    message: str = ""
    """Text that replaces the library's message (the library's follows in parentheses)."""

    def matches(self, exc: BaseException, code: object, text: str) -> bool:
        """Whether this rule describes ``exc`` (with its ``code``, if it has one, and message ``text``)."""
        if not isinstance(exc, self.types):
            return False
        if self.codes and code not in self.codes:
            return False
        if self.contains:
            low = text.lower()
            return any(fragment in low for fragment in self.contains)
        return True


@dataclass(frozen=True, slots=True)
class Failure:
    """A classified failure: the nbdb error to raise, and what a retry may do."""

    error: errors.NbdbError
    retryable: bool
    unsent: bool


class ExceptionMap:
    """One table from a client library's exceptions to nbdb's, applied in one place.

    Rules are tried in order; the first that matches decides. An exception no
    rule matches becomes ``default`` (not retryable). nbdb's own errors pass
    through unchanged. Messages name the backend (``label``) and never carry
    credentials (the libraries' messages do not; URLs are redacted upstream).
    ``code`` and ``text`` read a library's error code and meaningful message
    (gRPC: ``exc.code()`` and ``exc.details()``); by default there is no code
    and the text is ``str(exc)``.
    """

    def __init__(
        self,
        label: str,
        rules: Sequence[ErrorRule],
        *,
        default: type[errors.NbdbError] = errors.BackendUnavailableError,
        code: Callable[[BaseException], object] | None = None,
        text: Callable[[BaseException], str] | None = None,
    ) -> None:
        self.label = label
        self.rules = tuple(rules)
        self.default = default
        self._code = code
        self._text = text

    def classify(self, exc: BaseException, context: str = "") -> Failure:
        """The nbdb error for ``exc`` and whether a retry may help."""
        if isinstance(exc, errors.NbdbError):
            return Failure(exc, False, False)
        code: object = None
        text = ""
        try:  # an accessor must never hide the real failure
            code = None if self._code is None else self._code(exc)
            text = str(exc) if self._text is None else str(self._text(exc) or "")
        except Exception:
            text = text or str(exc)
        text = text or type(exc).__name__
        where = f"{self.label} {context}".strip()
        for rule in self.rules:
            if rule.matches(exc, code, text):
                message = f"{rule.message} ({text})" if rule.message else text
                return Failure(rule.error(f"{where}: {message}"), rule.retryable, rule.unsent)
        name = getattr(code, "name", code)
        return Failure(self.default(f"{where}: {name or type(exc).__name__}: {text}"), False, False)

    def translate(self, exc: BaseException, context: str = "") -> errors.NbdbError:
        """Just the nbdb error for ``exc``."""
        return self.classify(exc, context).error


class Attempts:
    """The retries left of one call under a :class:`RetryPolicy` (not thread-safe; one per call)."""

    def __init__(self, policy: RetryPolicy, stop: threading.Event | None = None, started: float | None = None) -> None:
        self.policy = policy
        self.number = 1
        self._stop = stop
        if policy.deadline is None:
            self._deadline = None
        else:
            self._deadline = (time.monotonic() if started is None else started) + policy.deadline
        self._delay = min(policy.backoff, policy.max_backoff)

    @property
    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def wait(self) -> bool:
        """Sleep before the next attempt and return True; False if attempts or time ran out."""
        if self.number >= self.policy.attempts:
            return False
        delay = self._delay
        if self.policy.jitter:
            delay *= 1.0 - self.policy.jitter * _JITTER.random()
        remaining = self.remaining
        if remaining is not None and remaining <= delay:
            return False
        if self._stop is not None:
            if self._stop.wait(delay):
                return False
        elif delay > 0:
            time.sleep(delay)
        self.number += 1
        self._delay = min(max(self._delay * 2, 0.001), self.policy.max_backoff)
        metrics.count_retry()
        return True


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to try a call that failed for a passing reason.

    ``attempts`` counts every try (1: no retry); the pause before try *n*
    is ``backoff * 2**(n-2)`` capped at ``max_backoff``, shortened by up to
    ``jitter`` (a fraction) so that clients that failed together do not
    retry together; ``deadline`` bounds all tries together (None: no bound).
    """

    attempts: int = 4
    backoff: float = 0.05
    max_backoff: float = 1.0
    deadline: float | None = 15.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise errors.ValidationError("a retry policy needs at least one attempt")
        if self.backoff < 0 or self.max_backoff < 0 or not 0 <= self.jitter <= 1:
            raise errors.ValidationError("retry backoff must be >= 0 and jitter within [0, 1]")
        if self.deadline is not None and self.deadline <= 0:
            raise errors.ValidationError("a retry deadline must be positive (None: no deadline)")

    def replace(self, **changes: object) -> RetryPolicy:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def begin(self, stop: threading.Event | None = None) -> Attempts:
        """Start counting the attempts of one call (``stop`` set: give up at the next pause)."""
        return Attempts(self, stop)

    def call(
        self,
        fn: Callable[[], T],
        errors_map: ExceptionMap,
        *,
        context: str = "",
        write: bool = False,
        idempotent: bool = True,
        stop: threading.Event | None = None,
        on_retry: Callable[[Failure], None] | None = None,
    ) -> T:
        """``fn()`` under this policy; failures leave as nbdb errors.

        A retryable failure is tried again while attempts and time last. For
        a ``write`` that is not ``idempotent``, a failure that may have
        reached the server is not retried: it raises
        :class:`nbdb.CommitUnknownError` at once, for the caller to settle.
        When retries run out after a write may have been applied, the error
        is :class:`nbdb.CommitUnknownError` too, never a plain failure.
        """
        # The attempts are counted from the first failure on (most calls never fail), and the
        # deadline from the call's start, as if counted from there.
        started = time.monotonic() if self.deadline is not None else None
        attempts: Attempts | None = None
        maybe_applied = False
        while True:
            try:
                return fn()
            except Exception as exc:
                failure = errors_map.classify(exc, context)
            if attempts is None:
                attempts = Attempts(self, stop, started)
            if write and not failure.unsent and failure.retryable:
                maybe_applied = True
                if not idempotent:
                    raise _unknown(failure, context) from None
            if not failure.retryable or not attempts.wait():
                if maybe_applied:
                    # An earlier try may have landed: whatever failed last, its outcome is not known.
                    raise _unknown(failure, context) from None
                raise failure.error from None
            log.debug("%s: retry %d/%d after %s", context or errors_map.label, attempts.number,
                      self.attempts, failure.error)  # fmt: skip
            if on_retry is not None:
                on_retry(failure)


class Outage:
    """Since when a client has been without its server, and what that means for a call.

    The rule: while the client has been down for less than ``timeout``, a call waits for the
    reconnect, up to its own deadline (:meth:`limit`); once it has been down for ``timeout``,
    calls fail at once, never sent (:meth:`refuse_now`), until it is back. Without it, in a long
    outage every call waited a whole ``timeout`` of its own, and so did each one queued behind
    another (OVSDB: a writer behind three others waited 80 s).

    The thread that sees the connection go and come back calls :meth:`mark_down` and
    :meth:`mark_up`, in the order the connection went and came back (under a lock: a second
    ``mark_down`` never moves the outage's start; the lock does not order them: a ``mark_down``
    that arrives after a newer ``mark_up`` marks the client down while it is connected: a reply to a
    request sent while down, :attr:`downs` noted at its send, is ``mark_up(downs)``); callers
    read without a lock: one attribute read, and no clock read while up. ``clock``
    gives the time the deadlines are on (``time.monotonic``; tests pass their own).
    """

    __slots__ = ("_clock", "_downs", "_lock", "_since", "timeout")

    def __init__(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not timeout >= 0:  # also refuses NaN
            raise errors.ValidationError(f"an outage timeout must be >= 0 seconds, not {timeout!r}")
        self.timeout = float(timeout)
        self._clock = clock
        self._lock = threading.Condition()
        self._since: float | None = None
        self._downs = 0

    @property
    def downs(self) -> int:
        """How many times :meth:`mark_down` was called: a :meth:`mark_up` given an older count does nothing."""
        return self._downs

    @property
    def down_since(self) -> float | None:
        """When the client lost its server (on ``clock``); None while it has one."""
        return self._since

    def mark_down(self) -> None:
        """The client lost its server (again, while down: the outage keeps its start)."""
        with self._lock:
            self._downs += 1
            if self._since is None:
                self._since = self._clock()

    def mark_up(self, downs: int | None = None) -> None:
        """The client has its server again; given ``downs`` (:attr:`downs` when the caller found it up), only if no
        :meth:`mark_down` came since (a probe's reply is older news than a loss reported after it was sent)."""
        with self._lock:
            if downs is not None and downs != self._downs:
                return
            self._since = None
            self._lock.notify_all()

    def refuse_now(self) -> bool:
        """Whether a call must fail at once, unsent: the client has been down for ``timeout`` or more."""
        since = self._since
        # Compared with the sum, as limit() computes it: a call refused is one whose limit has passed.
        return since is not None and self._clock() >= since + self.timeout

    def limit(self, deadline: float) -> float:
        """How long a call with ``deadline`` may wait for the reconnect: its deadline, and while down no later
        than ``timeout`` after the outage began (a time on ``clock``; past it, :meth:`refuse_now` holds)."""
        since = self._since
        return deadline if since is None else min(deadline, since + self.timeout)

    def wait_up(self, deadline: float, stop: Callable[[], bool] | None = None) -> bool:
        """Wait for the server while the client is down: True once it is up (at once while up); False once
        :meth:`limit` of ``deadline`` has passed (then the call must fail, never sent), or ``stop()`` holds.

        For a client whose library would otherwise take a call offline and retry it on its own clock
        (Hazelcast's, until its invocation timeout from the call's start): held here, the call gives up
        ``timeout`` after the outage began, as OVSDB's calls do, and is known never to have been sent.
        """
        if self._since is None:
            return True
        with self._lock:
            while self._since is not None:
                if stop is not None and stop():
                    return False
                remaining = self.limit(deadline) - self._clock()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 0.1))
            return True


def _unknown(failure: Failure, context: str) -> errors.CommitUnknownError:
    if isinstance(failure.error, errors.CommitUnknownError):
        return failure.error
    return errors.CommitUnknownError(
        f"{context + ': ' if context else ''}the write may or may not have been applied ({failure.error})"
    )
