"""A JSON-RPC 1.0 connection to ovsdb-server (RFC 7047 section 4), with one I/O thread.

The I/O thread owns the reading side: it parses messages, answers the
server's ``echo`` probes, runs notification handlers (monitor updates) and
reply hooks *in arrival order*, and completes calls. Because ovsdb-server
sends a transaction's monitor update before its reply on the same
connection, a caller woken by its reply finds every earlier update applied.

Writes are made by the calling thread under a lock (and finished by the I/O
thread when the socket is full); TLS sockets are only ever touched under that
lock, since an OpenSSL connection is not safe for concurrent use.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from nbdb import errors
from nbdb.backends.ovsdb.transport import JsonFramer, dumps, tls_refused
from nbdb.codec import bulk
from nbdb.families.ovsdb.done import Done

__all__ = ["Call", "RpcClosed", "RpcConnection", "RpcError"]

log = logging.getLogger(__name__)

_BULK_BYTES = 1 << 20
"""A message this big is parsed and applied with the cyclic collector paused (see ``_read_available``)."""
_READ_BYTES = 1 << 20
"""The most one read takes: a big message (a monitor's initial state) comes in reads this large."""

Notify = Callable[[str, list[Any]], None]
"""Called (in the I/O thread) with the method and params of each notification."""


class RpcClosed(errors.BackendUnavailableError):
    """The connection closed before the reply; ``sent`` tells whether the request left this process."""

    def __init__(self, message: str, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class RpcError(errors.BackendUnavailableError):
    """The server answered a request with a JSON-RPC error."""

    def __init__(self, method: str, error: Any) -> None:
        super().__init__(f"OVSDB {method} failed: {error}")
        self.error = error


class Call:
    """One request in flight."""

    __slots__ = ("done", "error", "method", "on_reply", "patient_until", "result", "sent")

    def __init__(self, method: str, on_reply: Callable[[Any], None] | None, patient_until: float = 0.0) -> None:
        self.method = method
        self.on_reply = on_reply
        self.done = Done()
        self.sent = False
        self.result: Any = None
        self.error: errors.NbdbError | None = None
        self.patient_until = patient_until
        """Until when (monotonic) the server's silence is its work on this request, not its death (see
        :meth:`RpcConnection.request`'s ``patient``); 0: never."""

    def wait(self, timeout: float) -> Any:
        """The result; RpcClosed / RpcError / BackendUnavailableError (timeout) otherwise."""
        if not self.done.wait(timeout):
            raise errors.BackendUnavailableError(f"OVSDB did not answer {self.method} within {timeout:.3g}s")
        if self.error is not None:
            raise self.error
        return self.result


class RpcConnection:
    """One JSON-RPC session over a connected non-blocking socket."""

    _ids = itertools.count(1)

    def __init__(self, sock: socket.socket, remote: str, notify: Notify, probe: float) -> None:
        self.remote = remote
        self._sock = sock
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._notify = notify
        self._probe = probe
        self._framer = JsonFramer()
        # Reads land here and only the bytes read are copied out: ``recv(1 MiB)`` allocates (and the
        # allocator maps and unmaps) a megabyte per read, ≈ 13 µs of a typical 1-3 KB read, with the
        # interpreter lock held, on every commit's path.
        self._inbox = bytearray(_READ_BYTES)
        self._inview = memoryview(self._inbox)
        self._lock = threading.Lock()
        self._out: deque[tuple[memoryview, Call | None]] = deque()
        self._pending: dict[int | str, Call] = {}
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._last_heard = time.monotonic()
        self._last_sent = time.monotonic()
        self._probed = False
        self._probed_at = 0.0
        self.closed = threading.Event()
        self.close_reason: errors.NbdbError | None = None
        self.on_close: Callable[[], None] | None = None
        """Called once, from the thread that noticed, when the connection closes."""
        self._busy_since: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"nbdb-ovsdb-io-{remote}", daemon=True)
        self._thread.start()
        self._keepalive = threading.Thread(target=self._keep_alive, name=f"nbdb-ovsdb-keepalive-{remote}", daemon=True)
        self._keepalive.start()

    # ---------------------------------------------------------------- callers' side

    def request(
        self,
        method: str,
        params: list[Any],
        on_reply: Callable[[Any], None] | None = None,
        label: str | None = None,
        patient: float = 0.0,
    ) -> Call:
        """Send a request; its :class:`Call` completes when the reply arrives.

        ``on_reply`` runs in the I/O thread on the result, before any later
        message is handled (a monitor's initial state, before its updates).
        ``label`` goes into the request's id (which the server echoes), saying
        what the request is about in logs and on the wire (a lock's nbdb name,
        which its OVSDB name hides); a NUL in it is sent as ``\\0``.
        ``patient``: seconds the server may stay silent while this request is
        unanswered before it is dropped as dead (its probe's two intervals
        otherwise). ovsdb-server answers nothing, echoes included, while it
        composes a reply: a monitor's first state of 100,000 ports took it
        11.7 s of one turn on a loaded machine, and a client that dropped it
        after 6 s asked again on a new connection, for the same wait.
        """
        call = Call(method, on_reply, time.monotonic() + patient if patient > 0 else 0.0)
        number = next(self._ids)
        if label is not None and "\x00" in label:
            # ovsdb-server's JSON parser refuses a NUL in any string and closes the connection: a lock
            # named "a\x00" was asked again and again, each time on a connection the server then dropped.
            label = label.replace("\x00", "\\0")
        mid: int | str = number if label is None else f"{number} {label}"
        data = dumps({"id": mid, "method": method, "params": params})
        with self._lock:
            if self.closed.is_set():
                call.error = RpcClosed(f"the OVSDB connection to {self.remote} is closed", sent=False)
                call.done.set()
                return call
            self._pending[mid] = call
            self._write(memoryview(data), call)
        return call

    def call(self, method: str, params: list[Any], timeout: float, label: str | None = None) -> Any:
        """Send a request and wait for its result."""
        return self.request(method, params, label=label).wait(timeout)

    def _write(self, data: memoryview, call: Call | None) -> None:
        """Send now if nothing is queued, else queue (under ``_lock``)."""
        if not self._out:
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                sent = 0
            except OSError as exc:
                self._fail(exc)
                return
            if sent:
                self._sent(call)
            if sent == len(data):
                return
            if not self._tls:
                data = data[sent:]
        self._out.append((data, call))
        os.write(self._wake_w, b"w")

    def _sent(self, call: Call | None) -> None:
        """Bytes of ``call``'s message left: the idle probe counts from now, and the call counts as sent."""
        self._last_sent = time.monotonic()
        if call is not None:
            call.sent = True

    def _flush(self) -> None:
        """Send what is queued, as far as the socket takes it (I/O thread, under ``_lock``)."""
        while self._out:
            data, call = self._out[0]
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return
            if sent:
                self._sent(call)
            if sent < len(data):
                if not self._tls:
                    # TLS retries a write with the same buffer; plain sockets go on from where they stopped.
                    self._out[0] = (data[sent:], call)
                return
            self._out.popleft()

    def close(self) -> None:
        """Close the connection; calls in flight fail with RpcClosed."""
        with self._lock:
            self._fail(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(5)

    # ---------------------------------------------------------------- the I/O thread

    def _fail(self, exc: BaseException | None) -> None:
        """Mark the connection closed and fail every call in flight (under ``_lock``)."""
        if self.closed.is_set():
            return
        if exc is not None and self._tls and isinstance(exc, ssl.SSLError):
            if not isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
                self.close_reason = tls_refused(self.remote, exc)
        self.closed.set()
        reason = f"the OVSDB connection to {self.remote} closed" + (f" ({exc})" if exc else "")
        for call in self._pending.values():
            call.error = self.close_reason or RpcClosed(reason, call.sent)
            call.done.set()
        self._pending.clear()
        self._out.clear()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        if self.on_close is not None:
            try:
                self.on_close()
            except Exception:
                log.exception("ovsdb: a close handler failed")

    def _recv(self) -> bytes | None:
        """One read (None: nothing more now); raises OSError when the connection is gone."""
        with self._lock:
            try:
                size = self._sock.recv_into(self._inbox)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return None
        if not size:
            raise ConnectionResetError("closed by the server")
        return self._inview[:size].tobytes()

    def _run(self) -> None:
        try:
            while not self.closed.is_set():
                with self._lock:
                    want_write = bool(self._out)
                    pending = self._tls and self._sock.pending() > 0  # type: ignore[attr-defined]
                if not pending:
                    timeout = self._probe / 2
                    readers: list[Any] = [self._sock, self._wake_r]
                    writers: list[Any] = [self._sock] if want_write else []
                    readable, writable, _ = select.select(readers, writers, [], timeout)
                    if self._wake_r in readable:
                        try:
                            while os.read(self._wake_r, 4096):
                                pass
                        except BlockingIOError:
                            pass
                    if writable:
                        with self._lock:
                            self._flush()
                    if self._sock not in readable:
                        if not readable:
                            for message in self._framer.idle(force=True):
                                self._dispatch(message)
                        self._check_alive()
                        continue
                self._read_available()
        except (OSError, ValueError) as exc:
            with self._lock:
                self._fail(exc)
        except Exception as exc:  # a handler bug must not leave callers waiting forever
            log.exception("ovsdb: the I/O thread of %s failed", self.remote)
            with self._lock:
                self._fail(exc)
        finally:
            self._sock.close()
            for fd in (self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _read_available(self) -> None:
        while True:
            data = self._recv()
            if data is None:
                break
            self._last_heard = time.monotonic()
            self._probed = False
            # A big message (a monitor's initial state: 40 MB for 100,000 ports) allocates millions
            # of containers while parsed and applied, and the cyclic collector re-scanning the
            # growing heap meanwhile made parsing it three to six times slower, all of it holding
            # the GIL (so no echo could be answered): paused for such messages.
            with bulk() if self._framer.buffered >= _BULK_BYTES else contextlib.nullcontext():
                messages = self._framer.feed(data)
                if messages:
                    self._busy_since = time.monotonic()
                    try:
                        for message in messages:
                            if self.closed.is_set():
                                # Closed by a handler (a state it refused): nothing after it is applied.
                                return
                            self._dispatch(message)
                    finally:
                        self._busy_since = None
                        # Time spent applying a big update is not the server's silence.
                        self._last_heard = time.monotonic()
            if len(data) < _READ_BYTES and not (self._tls and self._sock.pending()):  # type: ignore[attr-defined]
                break
        with bulk() if self._framer.buffered >= _BULK_BYTES else contextlib.nullcontext():
            for message in self._framer.idle():
                self._dispatch(message)

    def _waiting(self) -> bool:
        """Whether this client owes the server an answer or is taking one in (a reply, a message, its handling)."""
        return self._busy_since is not None or bool(self._pending) or self._framer.buffered > 0

    def _keep_alive(self) -> None:
        """While the I/O thread applies a big update, tell the server this client lives.

        ovsdb-server drops a client it has not heard from for two probe
        intervals (5 s each by default), and the I/O thread, busy loading a
        large database, cannot answer its echo requests meanwhile: an echo of
        our own every half interval keeps the connection. It is sent from the
        moment a reply is awaited, not only once one is being applied: the
        server may take seconds to build a 100,000-row reply, and the client
        as long to take it in, and the two add up.

        It wakes when half an interval has passed since the last send, not on a
        fixed beat: a beat that finds the last send a moment too recent skips
        to the next one, so the client could stay silent for a whole interval
        (seen with a relay probing every second behind a 2.4 s link: silent for
        2 s while awaiting its first reply, and dropped).
        """
        interval = self._probe / 2
        delay = interval
        while not self.closed.wait(delay):
            quiet = time.monotonic() - self._last_sent
            if quiet < interval:
                delay = interval - quiet
                continue
            delay = interval
            if self._waiting():
                self.request("echo", ["nbdb-busy"])

    def _check_alive(self) -> None:
        """Probe a server silent for ``probe`` seconds; drop it if the probe goes unanswered as long.

        The drop needs both: the silence and a probe of ours left a whole interval
        unanswered. By the clock alone, a client that had itself not run (see
        :meth:`_answer_waiting`) dropped a server it had never asked anything.
        """
        now = time.monotonic()
        silent = now - self._last_heard
        if silent > self._probe and not self._probed:
            self._probed = True
            self._probed_at = now
            self.request("echo", ["nbdb"])
        elif (
            silent > 2 * self._probe
            and self._probed
            and now - self._probed_at > self._probe
            and not self._answer_waiting()
            and not self._patient(now)
        ):
            raise TimeoutError(f"no answer from {self.remote} for {silent:.1f}s")

    def _patient(self, now: float) -> bool:
        """Whether a request whose answer may take the server long (a monitor's first state) is still
        unanswered within its allowance: the server's silence is then its work on it (see :meth:`request`)."""
        with self._lock:
            return any(call.patient_until > now for call in self._pending.values())

    def _answer_waiting(self) -> bool:
        """Whether bytes from the server wait in the socket: it was not silent, this process was.

        The I/O thread measures the server's silence by the clock, but it may not
        have run for seconds: another thread held the GIL (a collection over a
        100,000-row replica and its cache: 3.5-8.8 s measured at load ≈ 12 on 2
        cores), or the machine gave it no CPU. The server's answer to the echo sent meanwhile then sits unread, and
        the connection was dropped as silent, which cost a reload of the whole
        replica (47 s at that load), then commits timing out behind it. A server
        whose bytes are waiting was heard: they are read on the next turn.
        """
        with self._lock:
            if self._tls and self._sock.pending() > 0:  # type: ignore[attr-defined]
                return True
        readable, _, _ = select.select([self._sock], [], [], 0)
        return bool(readable)

    def _dispatch(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        method = message.get("method")
        if method is None:
            with self._lock:
                call = self._pending.pop(message.get("id"), None)  # type: ignore[arg-type]
            if call is None:
                return
            if message.get("error") is not None:
                call.error = RpcError(call.method, message["error"])
            else:
                call.result = message.get("result")
                if call.on_reply is not None:
                    try:
                        call.on_reply(call.result)
                    except errors.NbdbError as exc:
                        call.error = exc
            call.done.set()
        elif method == "echo" and message.get("id") is not None:
            reply = {"id": message["id"], "result": message.get("params", []), "error": None}
            with self._lock:
                self._write(memoryview(dumps(reply)), None)
        elif message.get("id") is None:
            self._notify(method, message.get("params") or [])
