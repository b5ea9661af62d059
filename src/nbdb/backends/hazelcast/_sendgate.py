"""One wake-up of the hazelcast client's reactor in flight at a time (its 5.7 lost wake-up, see :class:`SendGate`)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from hazelcast import errors as hzerrors
from hazelcast.future import Future

__all__ = ["SendGate"]


class SendGate:
    """Sends caller threads' requests so that at most one of them wakes the client's reactor at a time.

    hazelcast-python-client 5.7's reactor waker clears its "awake" flag, then drains its pipe: a
    wake-up written in between (another thread sending a request) is drained unseen, the flag
    stays set, and no request wakes the reactor again; each then waits its 10 ms poll tick, for
    the client's life. One thread of requests cannot hit that window (it waits for a reply, which
    the reactor reads after it drained the pipe); two or more can. So a request leaves from the
    caller's thread (waking the reactor) only when none the gate sent is awaiting its reply; else
    it is queued, and the next reply's callback (the reactor's own thread, which wakes nothing)
    sends every queued request at once. The caller gets a future either way.

    :meth:`send_here` is for requests that must leave from the caller's thread (a lock belongs to
    the thread that asked): it waits until nothing the gate sent is awaiting a reply, and while it
    waits, what is sent queues behind it (else steady reads kept the gate busy for good).
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._idle = threading.Condition(self._guard)
        """Notified when no request of the gate awaits its reply (for :meth:`send_here`'s waiters)."""
        self._waiting = 0
        self._out = 0
        """Requests the gate sent whose reply callback has not run yet."""
        self._queued: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self.queued = 0
        """How many requests went out from a reply callback (queued) rather than from their caller's thread."""
        self._sender = 0
        self._sent_at = 0.0
        self._other_at = 0.0
        """The thread that sent through the gate last, when, and when another thread last did before it."""

    def send(self, start: Callable[[], Any], follow: Callable[[Any], Any] | None = None) -> Any:
        """``start()`` (which sends one request and returns its future) now or from the next reply: a future.

        ``follow``: a continuation attached to that future before the gate's own callback (which may
        send queued requests), so that requests it sends from the reply's callback go first; what it
        returns is returned.
        """
        return self._send(start, follow)[0]

    def _send(self, start: Callable[[], Any], follow: Callable[[Any], Any] | None) -> tuple[Any, bool]:
        """:meth:`send`'s future, and whether the request was queued (else it left from this thread)."""
        with self._guard:
            self._saw_sender()
            if self._out or self._waiting:
                later: Future[Any] = Future()  # type: ignore[no-untyped-call]
                self._queued.append((start, later))
                self.queued += 1
                return (later if follow is None else follow(later)), True
            self._out = 1
        return self._sent(start, None, follow), False

    def send_here(self, start: Callable[[], Any], timeout: float, follow: Callable[[Any], Any] | None = None) -> Any:
        """``start()`` from this thread once no request of the gate awaits its reply (at most ``timeout`` s).

        For requests that must leave from the caller's thread (a lock, its unlock, a write under it: Hazelcast
        ties a lock to the thread that asked). The request then holds the gate until its reply, as one sent
        by :meth:`send` does: its reply means the reactor took this thread's wake-up, and nothing else wakes
        it meanwhile. So the request must be answered soon: a lock is asked with ``tryLock``, first without
        waiting, then waiting in the member's queue 100 ms at most (see ``HazelcastBackend._key_lock``),
        never with a ``lock`` the member may hold for long.
        ``follow`` as in :meth:`send`.
        """
        with self._guard:
            if self._out:
                self._waiting += 1
                try:
                    self._idle.wait_for(lambda: not self._out, timeout)
                finally:
                    self._waiting -= 1
            self._saw_sender()
            self._out += 1
        return self._sent(start, None, follow)

    def ask(self, start: Callable[[], Any], timeout: float, follow: Callable[[Any], Any] | None = None) -> Any:
        """:meth:`send` then :meth:`result`: the reply (with ``follow``, the chain's last) waited for at most
        ``timeout`` from now, then OperationTimeoutError.

        A request that left from this thread was waited for as the client's own, taken to fail
        ``timeout`` after its send (the client's invocation timeout). It does not, on a member that
        froze: the client fails a request sent on a live connection only once its heartbeat finds the
        connection dead (``heartbeat_timeout`` of silence), then retries it, and a range sent from a
        reply's callback just before the freeze failed 4.5 s after it with ``timeout`` 2 s (one run in
        three of ``test_ranges_and_log_reads_of_a_frozen_member_fail_within_the_timeout`` at load
        8-11). Every reply is now waited for at most ``timeout``, queued or not.
        """
        future, _queued = self._send(start, follow)
        return self.result(future, timeout)

    def alone(self, window: float = 0.05) -> bool:
        """Whether no other thread sent through the gate in the last ``window`` s and nothing of it is out.

        A request sent then from this thread outside the gate (a commit task) cannot be followed by
        another thread's wake-up while the reactor takes its own, short of a thread that starts sending
        after ``window`` of silence just then.
        """
        me, now = threading.get_ident(), time.monotonic()
        with self._guard:
            if self._out or self._queued or self._waiting:
                return False
            other = self._other_at if self._sender in (0, me) else self._sent_at
            self._saw_sender()
            return now - other > window

    def _saw_sender(self) -> None:
        """Note (under the guard) that this thread sends now."""
        me, now = threading.get_ident(), time.monotonic()
        if self._sender != me:
            self._other_at = self._sent_at
            self._sender = me
        self._sent_at = now

    @staticmethod
    def result(future: Any, timeout: float) -> Any:
        """``future``'s result, waited for at most ``timeout`` s: then OperationTimeoutError.

        For a read sent through :meth:`send`: queued behind a request whose reply is late (a frozen or
        stopped member), it leaves only when that request fails, ``timeout`` after it was sent, and then
        waits a ``timeout`` of its own (the client's invocation timeout starts at the send): callers of
        a frozen member failed after 2 x ``timeout``. A read given up on may still be sent later; its
        reply is dropped.
        """
        if not future.done():
            done = threading.Lock()  # cheaper than an Event: released by the reply's callback
            done.acquire()
            future.add_done_callback(lambda _: done.release())
            if not done.acquire(timeout=timeout):
                raise hzerrors.OperationTimeoutError(
                    f"no reply within {timeout} s (the client was sent a request that has not been answered)"
                )
        return future.result()

    def _sent(
        self, start: Callable[[], Any], later: Future[Any] | None, follow: Callable[[Any], Any] | None = None
    ) -> Any:
        try:
            future = start()
        except BaseException as exc:
            self._answered(None, here=True)
            if later is None or not isinstance(exc, Exception):
                raise
            later.set_exception(exc)
            return later
        if later is not None:
            future.add_done_callback(lambda done: _copy(done, later))
            self._free_on_reply(future)
            return later
        try:
            out = future if follow is None else follow(future)
        finally:
            # Even if ``follow`` raised: the request is out, and its reply must free the gate (else it stayed busy
            # for good, every later request queued behind a reply that had already come).
            self._free_on_reply(future)
        return out

    def _free_on_reply(self, future: Any) -> None:
        """Free the gate (:meth:`_answered`) from ``future``'s reply callback, noting whether it ran on this thread.

        A callback attached once the reply is in runs at once on the attaching thread (a caller's, on a busy
        machine), not on the reactor's: what queued meanwhile then left from that thread in a burst, a wake-up
        per request, and two in a row lose the reactor's (8 threads of gets and lease renewals: 5-14 requests
        of 260 sent while another from a caller's thread awaited its reply).
        """
        attacher, attaching = threading.get_ident(), [True]
        future.add_done_callback(lambda done: self._answered(done, attaching[0] and threading.get_ident() == attacher))
        attaching[0] = False  # a callback run later runs on the reactor's thread (the attacher's, when it sent this)

    def _answered(self, _: Any, here: bool = False) -> None:
        """A request of the gate is answered: send what queued, all at once from the reactor's thread; ``here``
        (a caller's thread): the first only, as a caller's send through an idle gate (its reply sends the rest)."""
        with self._guard:
            self._out -= 1
            if self._waiting:
                # A send_here waits for the gate to be idle: what queues meanwhile waits for it (under a steady
                # load of reads, sending it here kept the gate busy for good and every commit waited ``timeout``).
                if not self._out:
                    self._idle.notify_all()
                return
            if not self._queued:
                return
            if here:
                batch = [self._queued.popleft()]
            else:
                batch = list(self._queued)
                self._queued.clear()
            self._out += len(batch)
        for start, later in batch:
            self._sent(start, later)


def _copy(done: Any, later: Future[Any]) -> None:
    failed = done.exception()
    if failed is None:
        later.set_result(done.result())
    else:
        later.set_exception(failed, done.traceback())
