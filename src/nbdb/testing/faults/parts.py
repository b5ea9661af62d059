"""The fault proxy's vocabulary: its modes, its counters, an armed trigger and one proxied connection."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["TAIL", "Connection", "Mode", "ProxyStats", "Trigger"]

TAIL = 255  # bytes kept per connection so that a pattern of up to TAIL + 1 bytes is found across reads


class Mode(StrEnum):
    """What the proxy does with traffic."""

    PASS = "pass"
    """Forward everything as it comes."""
    DELAY = "delay"
    """Forward everything after a latency, each way."""
    BLACKHOLE = "blackhole"
    """Accept connections, forward nothing either way; bytes wait for :meth:`FaultProxy.heal`."""
    REFUSE = "refuse"
    """Refuse new connections (the listeners are closed); current connections go on."""


@dataclass(frozen=True)
class ProxyStats:
    """Counters of one proxy since it started (a snapshot)."""

    accepted: int = 0
    """Client connections accepted."""
    open: int = 0
    """Connections open now."""
    cut: int = 0
    """Connections the proxy cut (:meth:`FaultProxy.cut` or a lost reply)."""
    upstream_failures: int = 0
    """Accepted connections whose upstream endpoint could not be reached (the client was reset)."""
    received_up: int = 0
    """Client→server bytes read from clients (forwarded, held or dropped)."""
    received_down: int = 0
    """Server→client bytes read from servers (forwarded, held or dropped)."""
    bytes_up: int = 0
    """Client→server bytes forwarded."""
    bytes_down: int = 0
    """Server→client bytes forwarded."""
    chunks_up: int = 0
    """Client→server writes forwarded: about one per request on a request/response protocol
    (what a blackhole held is delivered at :meth:`~FaultProxy.heal` as one)."""
    replies_lost: int = 0
    """Server→client bytes dropped because a lost-reply fault was in its window."""
    fired: int = 0
    """Lost-reply triggers that fired."""


@dataclass
class Trigger:
    """An armed lost-reply fault."""

    patterns: tuple[bytes, ...]
    nth: int
    window: float
    then: Mode
    seen: int = 0

    def hit(self, tail: bytes, data: bytes) -> bool:
        """Count ``data`` if it holds a pattern (``tail``: the bytes before it on its connection)."""
        if not self.patterns:
            found = True
        else:
            window = tail + data
            # A pattern that ended inside ``tail`` was counted with the previous read.
            found = any(window.find(p, max(0, len(tail) - len(p) + 1)) >= 0 for p in self.patterns)
        if found:
            self.seen += 1
        return found and self.seen == self.nth


class Connection:
    """One client connection and its upstream connection."""

    def __init__(self, number: int, endpoint: int, client: asyncio.StreamWriter) -> None:
        self.number = number
        self.endpoint = endpoint
        self.client = client
        self.server: asyncio.StreamWriter | None = None
        self.doomed = False  # in a lost-reply window: nothing goes back to the client
        self.tail = b""  # last client→server bytes, to find patterns across reads
        self.tasks: list[asyncio.Task[None]] = []
        self.closed = False

    def close(self) -> None:
        """Close both sides normally (both directions ended)."""
        self.closed = True
        for writer in (self.client, self.server):
            if writer is not None:
                writer.close()

    def abort(self) -> None:
        """Reset both sides at once (RST, no flush)."""
        self.closed = True
        for writer in (self.client, self.server):
            if writer is None:
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        for task in self.tasks:
            task.cancel()
