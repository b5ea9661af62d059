"""Hazelcast's change-log listener: registering it while commits move ``head``, against a real member.

The member sends a listener's events and the reply to its registration on different threads: a
commit that moves ``head`` while the listener is being added may send its event ahead of the reply
(2 registrations in 300 beside three committing clients). The client reads both on its reactor
thread, and runs the listener's callback there. :class:`_HeldRegistrations` makes that order certain: a
proxy in front of the member that holds the registration's reply back until the listener's first
event has gone by (or, for a registration answered late, until the test lets it go).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import nbdb
from nbdb import errors
from nbdb.backends.hazelcast import HazelcastBackend
from nbdb.models.ovn import LogicalRouter
from nbdb.testing import HazelcastServer
from nbdb.testing.fixtures import hazelcast_server  # noqa: F401

pytest.importorskip("hazelcast")

from hazelcast.protocol.codec import map_add_entry_listener_to_key_codec

pytestmark = pytest.mark.timeout(120)

_HEADER = 6
"""A frame's length (int32, the header's included) and flags (int16), little-endian."""
_FINAL = 1 << 13
_EVENT = 1 << 9
_REGISTER = map_add_entry_listener_to_key_codec._REQUEST_MESSAGE_TYPE  # the codec's message type (a public value)
_HOLD = 20.0
"""The longest a registration's reply is held back, if no event comes."""


def _messages(sock: socket.socket, skip: int = 0) -> Iterator[tuple[bytes, int, int, int]]:
    """The client-protocol messages read from ``sock``: ``(bytes, type, correlation id, first frame's flags)``.

    ``skip``: bytes passed as they are first (the client's protocol header, ``CP2``), as a message of type -1.
    """
    buf = bytearray()
    while len(buf) < skip:
        chunk = sock.recv(65536)
        if not chunk:
            return
        buf += chunk
    if skip:
        yield bytes(buf[:skip]), -1, -1, 0
        del buf[:skip]
    while True:
        at, first_flags, final = 0, None, False
        while not final:
            while len(buf) < at + _HEADER:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buf += chunk
            length, flags = struct.unpack_from("<iH", buf, at)
            first_flags = flags if first_flags is None else first_flags
            final = bool(flags & _FINAL)
            while len(buf) < at + length:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buf += chunk
            at += length
        kind, correlation = struct.unpack_from("<iq", buf, _HEADER)
        yield bytes(buf[:at]), kind, correlation, first_flags or 0
        del buf[:at]


class _HeldRegistrations:
    """A proxy in front of one member that holds back the replies to entry listeners' registrations.

    The reply to a ``map.add_entry_listener(key=...)`` request is held back until (``event_first``) an event of
    that registration (same correlation id) has been delivered, or else until :attr:`release` is set; at most
    :data:`_HOLD` s either way. Everything else passes in order.
    """

    def __init__(self, server: HazelcastServer, *, event_first: bool) -> None:
        member = server.members[0]
        self._upstream = (member.host, member.port)
        self._event_first = event_first
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"hazelcast://127.0.0.1:{self._listener.getsockname()[1]}/{server.cluster_name}"
        self._registering: set[int] = set()
        self._guard = threading.Lock()
        self.registrations = 0
        """Registrations the client sent."""
        self.delivered = 0
        """Registration replies delivered (after an event of theirs, when ``event_first``)."""
        self.release = threading.Event()
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> _HeldRegistrations:
        return self

    def __exit__(self, *_: object) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                member = socket.create_connection(self._upstream)
                self._sockets += [client, member]
                threading.Thread(target=self._to_member, args=(client, member), daemon=True).start()
                threading.Thread(target=self._to_client, args=(member, client), daemon=True).start()

    def _to_member(self, client: socket.socket, member: socket.socket) -> None:
        with contextlib.suppress(OSError):
            for data, kind, correlation, _ in _messages(client, skip=3):
                if kind == _REGISTER:
                    with self._guard:  # before it is sent: its reply cannot come first
                        self._registering.add(correlation)
                        self.registrations += 1
                member.sendall(data)

    def _to_client(self, member: socket.socket, client: socket.socket) -> None:
        held: dict[int, tuple[bytes, float]] = {}
        with contextlib.suppress(OSError):
            for data, _kind, correlation, flags in _messages(member):
                with self._guard:
                    registering = correlation in self._registering
                if registering and not flags & _EVENT:
                    held[correlation] = (data, time.monotonic())
                    continue
                client.sendall(data)
                for waiting, (reply, since) in list(held.items()):
                    if (
                        (self._event_first and waiting == correlation)
                        or self.release.is_set()
                        or time.monotonic() - since > _HOLD
                    ):
                        client.sendall(reply)
                        del held[waiting]
                        with self._guard:
                            self._registering.discard(waiting)
                            self.delivered += 1


def _until(predicate: Any, wait: float) -> bool:
    end = time.monotonic() + wait
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def test_a_head_event_ahead_of_the_listeners_registration_reply_leaves_the_client_running(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """A cache opens its watch while another client commits: the ``head`` listener's first event comes ahead
    of its registration's reply. The cache is fed, and the Database closes.

    The code before registered the listener under the lock its callback takes, and waited for the reply
    there: the callback, run on the client's reactor thread, blocked on that lock, so the reactor never read
    the reply; the watch never delivered and ``Database.close()`` hung joining the watch's thread (CI: the
    ``test_lists_and_cold_loads_beside_creates_in_new_topics_miss_nothing_acknowledged`` flake; 1 open in
    58 beside three committing clients, at load 9)."""
    namespace = f"hzlisten-{uuid.uuid4().hex[:10]}"
    with (
        _HeldRegistrations(hazelcast_server, event_first=True) as proxy,
        nbdb.connect(hazelcast_server.url, namespace=namespace) as writer,
    ):
        writer.create(LogicalRouter(name="seed"))
        stop = threading.Event()

        def write() -> None:
            i = 0
            while not stop.is_set() and i < 2000:
                writer.create(LogicalRouter(name=f"r-{i}"))
                i += 1

        thread = threading.Thread(target=write, daemon=True)
        reader = nbdb.connect(proxy.url, namespace=namespace)
        closed = threading.Event()
        try:
            thread.start()
            with reader.cache(LogicalRouter) as cache:
                assert cache.wait_synced(30)
                assert _until(lambda: proxy.delivered >= 1, 30), "no registration reply came after an event"
                stop.set()
                thread.join(30)
                last = writer.create(LogicalRouter(name="last"))
                assert cache.wait_for(last, 20), "the watch delivered nothing after its listener's registration"
        finally:
            stop.set()
            # Closed on a thread of its own: on the code before it hung for good.
            closer = threading.Thread(target=lambda: (reader.close(), closed.set()), daemon=True)
            closer.start()
            closer.join(40)
        assert closed.is_set(), "Database.close() hung"


def test_a_registration_answered_after_the_timeout_is_unavailable_and_then_kept(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """The reply to the ``head`` listener's registration is held back past the backend's ``timeout``: opening
    a log reader is BackendUnavailableError (which the watch hub retries), not a wait as long as the reply's;
    a second open waits for the registration in flight rather than add another listener; once the reply is
    in, that registration is the backend's (no listener left behind) and wakes readers.

    The code before waited for the reply, however late (until the client's heartbeat gave the connection
    up, or for good when its own reactor could not read it)."""
    namespace = f"hzlisten-{uuid.uuid4().hex[:10]}"
    with (
        _HeldRegistrations(hazelcast_server, event_first=False) as proxy,
        # ``timeout`` 4: the client's heartbeat (a ping after 1 s without a write) keeps the connection, whose
        # replies but one pass; at 2 it could find no read within ``timeout`` and drop it first.
        nbdb.connect(f"{proxy.url}?timeout=4", namespace=namespace) as db,
    ):
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        with pytest.raises(errors.BackendUnavailableError):
            backend.open_log_reader()
        with pytest.raises(errors.BackendUnavailableError):
            backend.open_log_reader()
        assert proxy.registrations == 1
        proxy.release.set()
        assert _until(lambda: proxy.delivered == 1, 30), "the held reply was not delivered"
        backend.open_log_reader()
        assert proxy.registrations == 1
        revision = db.create(LogicalRouter(name="r")).nbdb_revision
        # Only the listener's events move the revision readers wait on (``wait_for_log``).
        assert _until(lambda: backend._log_latest >= revision, 30), "the registration kept delivers no event"
