"""A TCP fault proxy: sits between clients and server endpoints and breaks the traffic on demand.

One :class:`FaultProxy` listens on one loopback port per upstream endpoint and forwards
bytes both ways, without parsing any protocol. From the test's thread it switches, at
run time, between passing traffic and a fault:

- :meth:`FaultProxy.lose_next_reply` arms a one-shot trigger: the next client→server
  bytes (optionally: the ``nth`` read containing one of some byte patterns) start a
  window during which the client's bytes are still forwarded but nothing the server sends
  back is delivered; then both sides of that connection are cut. The request lands, the
  reply never arrives.
- :meth:`FaultProxy.cut` resets every current connection (both sides, with RST).
- :meth:`FaultProxy.delay` adds latency each way.
- :meth:`FaultProxy.blackhole` accepts connections and moves nothing either way; bytes
  wait and are delivered at :meth:`FaultProxy.heal`, as TCP delivers them once a
  partition heals (so a request of a client that gave up meanwhile still lands late).
- :meth:`FaultProxy.refuse` closes the listeners: new connections are refused, current
  ones go on.

The proxy runs an asyncio loop in a thread of its own; every fault method is called from
any other thread and returns once the fault is in place. :attr:`FaultProxy.stats` counts
what happened and :meth:`FaultProxy.wait` blocks (bounded) until a condition on them holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

from nbdb.testing.faults.parts import TAIL, Connection, Mode, ProxyStats, Trigger
from nbdb.testing.ports import PortAllocator

__all__ = ["FaultProxy", "Mode", "ProxyStats"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_CHUNK = 65536
_QUEUE = 64  # chunks buffered per direction before the proxy stops reading (backpressure)
_CONTROL_TIMEOUT = 10.0


class FaultProxy:
    """A loopback TCP proxy in front of one or more server endpoints, with switchable faults.

    ``upstreams``: ``(host, port)`` of each endpoint; the proxy listens on one port of
    ``host`` per endpoint, in the same order (:attr:`addresses`). Faults apply to every
    endpoint at once. Use it as a context manager, or :meth:`start` and :meth:`close`.
    """

    def __init__(self, upstreams: Sequence[tuple[str, int]], *, host: str = "127.0.0.1") -> None:
        if not upstreams:
            raise ValueError("a fault proxy needs at least one upstream endpoint")
        self.upstreams = [(str(h), int(p)) for h, p in upstreams]
        self.host = host
        self._ports = PortAllocator()
        self._listen_ports: list[int] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listeners: list[socket.socket | None] = []
        self._tasks: set[asyncio.Future[None]] = set()
        self._connections: set[Connection] = set()
        self._numbers = 0
        self._mode = Mode.PASS
        self._latency = 0.0
        self._flowing: asyncio.Event | None = None
        self._trigger: Trigger | None = None
        self._stats = ProxyStats()
        self._changed = threading.Condition()

    def __repr__(self) -> str:
        ends = ", ".join(f"{h}:{p}" for h, p in self.upstreams)
        return f"<FaultProxy {self._mode} -> {ends}>"

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        """Listen on a reserved loopback port per endpoint and start forwarding."""
        if self._thread is not None:
            raise RuntimeError("the proxy is already started")
        self._listen_ports = [self._ports.allocate(self.host) for _ in self.upstreams]
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="nbdb-fault-proxy", daemon=True)
        self._thread.start()
        try:
            self._call(self._open())
        except BaseException:
            self.close()
            raise
        log.info("fault proxy %s listening on %s", self, self.addresses)
        return self

    def close(self) -> None:
        """Cut every connection, stop listening and release the ports."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive():
            with contextlib.suppress(Exception):
                self._call(self._shutdown())
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_CONTROL_TIMEOUT)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = None
        self._ports.release()

    def __enter__(self) -> Self:
        return self if self._thread is not None else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` the proxy listens on, one per upstream endpoint, in order."""
        return [(self.host, port) for port in self._listen_ports]

    # ---------------------------------------------------------------- faults (any thread)

    @property
    def mode(self) -> Mode:
        """The current fault mode."""
        return self._mode

    @property
    def armed(self) -> bool:
        """True while a lost-reply trigger waits for its request."""
        return self._trigger is not None

    def heal(self) -> None:
        """Back to forwarding everything: no latency, listeners open, held bytes delivered, trigger disarmed."""
        self._call(self._set_mode(Mode.PASS, disarm=True))

    def delay(self, seconds: float) -> None:
        """Deliver every chunk ``seconds`` after it arrived, in each direction."""
        if seconds < 0:
            raise ValueError("latency must not be negative")
        self._call(self._set_mode(Mode.DELAY, latency=seconds))

    def blackhole(self) -> None:
        """Accept connections but move no byte either way until :meth:`heal`."""
        self._call(self._set_mode(Mode.BLACKHOLE))

    def refuse(self) -> None:
        """Refuse new connections until :meth:`heal`; open ones keep flowing."""
        self._call(self._set_mode(Mode.REFUSE))

    def cut(self) -> int:
        """Reset every current connection, both sides; returns how many were cut."""
        return self._call(self._cut_all())

    def lose_next_reply(
        self,
        match: bytes | Iterable[bytes] | None = None,
        *,
        nth: int = 1,
        window: float = 0.3,
        then: Mode = Mode.PASS,
    ) -> None:
        """Arm a one-shot lost-reply fault.

        The ``nth`` client→server read that contains one of the ``match`` patterns (any
        bytes when None) is forwarded, and so is everything the client sends on that
        connection for ``window`` seconds; nothing the server sends back on it is
        delivered. Then both sides of that connection are reset and the proxy switches to
        ``then`` (e.g. :attr:`Mode.BLACKHOLE` to hold the client's retry until
        :meth:`heal`). Other connections are not touched. :attr:`ProxyStats.fired` counts
        the triggers that fired.
        """
        if nth < 1:
            raise ValueError("nth counts from 1")
        if window < 0:
            raise ValueError("window must not be negative")
        patterns: tuple[bytes, ...]
        if match is None:
            patterns = ()
        elif isinstance(match, bytes):
            patterns = (match,)
        else:
            patterns = tuple(match)
        if any(not p or len(p) > TAIL + 1 for p in patterns):
            raise ValueError(f"match patterns must have 1 to {TAIL + 1} bytes")
        trigger = Trigger(patterns, nth, window, then)
        self._call(self._arm(trigger))

    def disarm(self) -> None:
        """Drop an armed lost-reply trigger that has not fired."""
        self._call(self._arm(None))

    # ---------------------------------------------------------------- counters

    @property
    def stats(self) -> ProxyStats:
        """A snapshot of the counters."""
        with self._changed:
            return self._stats

    def wait(self, condition: Callable[[ProxyStats], bool], timeout: float) -> bool:
        """Block until ``condition(stats)`` holds or ``timeout`` passes; returns whether it held."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition(self._stats):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def wait_fired(self, count: int = 1, timeout: float = 10.0) -> bool:
        """Block until ``count`` lost-reply triggers fired in total (bounded by ``timeout``)."""
        return self.wait(lambda s: s.fired >= count, timeout)

    def _count(self, **increments: int) -> None:
        with self._changed:
            values = {k: getattr(self._stats, k) + v for k, v in increments.items()}
            self._stats = dataclasses.replace(self._stats, **values)
            self._changed.notify_all()

    # ---------------------------------------------------------------- loop side

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the proxy is not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_CONTROL_TIMEOUT)

    async def _open(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._listeners = [None] * len(self.upstreams)
        for index in range(len(self.upstreams)):
            self._listen(index)

    def _listen(self, index: int) -> None:
        # The proxy runs its own accept loop (a reader callback on the listening socket)
        # rather than asyncio's server: closing it for a refusal must not lose a
        # connection that the kernel completed and asyncio had half taken in.
        assert self._loop is not None
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._listen_ports[index]))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._listeners[index] = sock
        self._loop.add_reader(sock.fileno(), self._accept, index)

    def _accept(self, index: int) -> None:
        listener = self._listeners[index]
        while listener is not None:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("fault proxy: accept failed: %s", exc)
                return
            self._count(accepted=1, open=1)
            self._spawn(self._adopt(index, sock))

    def _close_listeners(self) -> None:
        assert self._loop is not None
        for index, listener in enumerate(self._listeners):
            if listener is None:
                continue
            self._loop.remove_reader(listener.fileno())
            # Connections the kernel completed are established for their clients: take
            # them in rather than reset them.
            self._accept(index)
            listener.close()
            self._listeners[index] = None

    async def _shutdown(self) -> None:
        self._close_listeners()
        await self._cut_all(count=False)
        assert self._flowing is not None
        self._flowing.set()  # connections held by a blackhole see that they were cut, and end
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _set_mode(self, mode: Mode, *, latency: float = 0.0, disarm: bool = False) -> None:
        assert self._flowing is not None
        if disarm:
            self._trigger = None
        self._mode = mode
        self._latency = latency if mode is Mode.DELAY else 0.0
        if mode is Mode.BLACKHOLE:
            self._flowing.clear()
        else:
            self._flowing.set()
        if mode is Mode.REFUSE:
            self._close_listeners()
        else:
            for index, listener in enumerate(self._listeners):
                if listener is None:
                    self._listen(index)
        log.info("fault proxy %s", self)

    async def _arm(self, trigger: Trigger | None) -> None:
        self._trigger = trigger

    async def _cut_all(self, *, count: bool = True) -> int:
        victims = [c for c in self._connections if not c.closed]
        for conn in victims:
            conn.abort()
        if count and victims:
            self._count(cut=len(victims))
        return len(victims)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        # The loop keeps only weak references to tasks: hold them until they end.
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _adopt(self, index: int, sock: socket.socket) -> None:
        # The connection's top task: ending by cancellation (shutdown) is its normal end.
        with contextlib.suppress(asyncio.CancelledError):
            try:
                reader, writer = await asyncio.open_connection(sock=sock, limit=_CHUNK)
            except OSError:
                sock.close()
                self._count(open=-1)
                return
            await self._serve(index, reader, writer)

    async def _serve(self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        self._numbers += 1
        conn = Connection(self._numbers, index, writer)
        self._connections.add(conn)
        try:
            # A connection made during a blackhole reaches the server only once it heals.
            await self._flowing.wait()
            if conn.closed:
                return
            host, port = self.upstreams[index]
            try:
                up_reader, up_writer = await asyncio.open_connection(host, port, limit=_CHUNK)
            except OSError as exc:
                log.debug("fault proxy: upstream %s:%d unreachable: %s", host, port, exc)
                self._count(upstream_failures=1)
                conn.abort()
                return
            conn.server = up_writer
            if conn.closed:  # cut while connecting
                conn.abort()
                return
            up = asyncio.ensure_future(self._pipe(conn, reader, up_writer, upward=True))
            down = asyncio.ensure_future(self._pipe(conn, up_reader, writer, upward=False))
            conn.tasks = [up, down]
            await asyncio.gather(up, down, return_exceptions=True)
        finally:
            if not conn.closed:
                conn.close()
            self._connections.discard(conn)
            self._count(open=-1)

    async def _pipe(
        self, conn: Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upward: bool
    ) -> None:
        """Read one direction and hand chunks, stamped with their arrival, to a sender."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(_QUEUE)
        sender = asyncio.ensure_future(self._send(conn, queue, writer, upward=upward))
        try:
            while True:
                try:
                    data = await reader.read(_CHUNK)
                except (ConnectionError, OSError):
                    data = b""
                if not data:
                    await queue.put(None)
                    break
                self._count(**{"received_up" if upward else "received_down": len(data)})
                await queue.put((time.monotonic(), data))
            await sender
        except asyncio.CancelledError:
            sender.cancel()
            raise
        finally:
            if not sender.done():
                sender.cancel()

    async def _send(
        self,
        conn: Connection,
        queue: asyncio.Queue[tuple[float, bytes] | None],
        writer: asyncio.StreamWriter,
        *,
        upward: bool,
    ) -> None:
        assert self._flowing is not None
        ended = False
        while not ended:
            item = await queue.get()
            if item is None:
                break
            arrived, data = item
            if not self._flowing.is_set():
                await self._flowing.wait()
                # A healed partition: the receiver finds everything held meanwhile in its buffer at
                # once, as TCP delivers it (a server then handles it in one pass of its loop).
                data, ended = _held_behind(queue, data)
            if self._latency:
                await asyncio.sleep(max(0.0, arrived + self._latency - time.monotonic()))
                await self._flowing.wait()
            if conn.closed:
                return
            if upward:
                self._check_trigger(conn, data)
            elif conn.doomed:
                self._count(replies_lost=len(data))
                continue
            # Counted before the write: whoever reads the bytes must already see them counted.
            if upward:
                self._count(bytes_up=len(data), chunks_up=1)
            else:
                self._count(bytes_down=len(data))
            try:
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError, RuntimeError):
                conn.abort()
                return
        # The sender side closed: pass the half-close on (unless a fault cut it).
        if not conn.closed and writer.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):
                writer.write_eof()

    def _check_trigger(self, conn: Connection, data: bytes) -> None:
        trigger = self._trigger
        tail = conn.tail
        conn.tail = (tail + data)[-TAIL:]
        if trigger is None or conn.doomed or not trigger.hit(tail, data):
            return
        self._trigger = None
        conn.doomed = True
        self._count(fired=1)
        log.info(
            "fault proxy: losing the replies of connection %d for %.2fs, then cutting it", conn.number, trigger.window
        )
        assert self._loop is not None
        self._loop.call_later(trigger.window, lambda: self._spawn(self._end_window(conn, trigger.then)))

    async def _end_window(self, conn: Connection, then: Mode) -> None:
        # Switch first: the client's reconnection must already meet the next mode.
        if then is not Mode.PASS:
            await self._set_mode(then)
        if not conn.closed:
            conn.abort()
            self._count(cut=1)


def _held_behind(queue: asyncio.Queue[tuple[float, bytes] | None], data: bytes) -> tuple[bytes, bool]:
    """``data`` joined with every chunk queued behind it; and whether the sender side closed after them."""
    parts = [data]
    while True:
        try:
            item = queue.get_nowait()
        except asyncio.QueueEmpty:
            return b"".join(parts), False
        if item is None:
            return b"".join(parts), True
        parts.append(item[1])
