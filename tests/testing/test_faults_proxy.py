"""The fault proxy against a small line server on loopback (no database)."""

from __future__ import annotations

import itertools
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbdb.testing.faults import FaultProxy, Mode
from nbdb.testing.faults.parts import Trigger
from nbdb.testing.ports import _reservation_dir

pytestmark = pytest.mark.timeout(30)


class LineServer(socketserver.ThreadingTCPServer):
    """Records every line it receives and answers ``ok:<line>``; on EOF, says ``bye`` and closes."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _LineHandler)
        self.received: list[bytes] = []
        self.arrived = threading.Condition()

    def record(self, line: bytes) -> None:
        with self.arrived:
            self.received.append(line)
            self.arrived.notify_all()

    def wait_received(self, count: int, timeout: float = 5.0) -> bool:
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.received) >= count, timeout)


class _LineHandler(socketserver.StreamRequestHandler):
    server: LineServer

    def handle(self) -> None:
        try:
            for line in self.rfile:
                self.server.record(line.rstrip(b"\n"))
                self.wfile.write(b"ok:" + line)
            self.wfile.write(b"bye\n")
        except ConnectionError:
            pass  # the tests reset connections on purpose (a fault the proxy plays)


@pytest.fixture
def line_server() -> Iterator[LineServer]:
    server = LineServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(line_server: LineServer) -> Iterator[FaultProxy]:
    with FaultProxy([line_server.server_address[:2]]) as proxy:
        yield proxy


def _connect(proxy: FaultProxy, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(proxy.addresses[0], timeout=timeout)


def _ask(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line + b"\n")
    return _read_line(sock)


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _reset_or_eof(sock: socket.socket) -> bool:
    """True if the connection ends (EOF or reset) without delivering any byte."""
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def test_passes_traffic_and_counts_it(proxy: FaultProxy, line_server: LineServer) -> None:
    with _connect(proxy) as sock:
        assert _ask(sock, b"hello") == b"ok:hello\n"
        assert _ask(sock, b"again") == b"ok:again\n"
        # Read while the connection is open: on close the server says "bye", counted if it arrives in time.
        stats = proxy.stats
    assert stats.accepted == 1 and stats.chunks_up == 2
    assert stats.bytes_up == len(b"hello\nagain\n") and stats.bytes_down == len(b"ok:hello\nok:again\n")
    assert proxy.wait(lambda s: s.open == 0, 5)
    assert line_server.received == [b"hello", b"again"]


def test_lost_reply_lands_the_request_and_cuts_the_connection(proxy: FaultProxy, line_server: LineServer) -> None:
    with _connect(proxy) as sock:
        assert _ask(sock, b"warm") == b"ok:warm\n"
        proxy.lose_next_reply(window=0.2)
        assert proxy.armed
        sock.sendall(b"commit\n")
        assert _reset_or_eof(sock), "no byte of the reply may reach the client"
    assert line_server.wait_received(2)
    assert line_server.received == [b"warm", b"commit"]
    stats = proxy.stats
    assert stats.fired == 1 and stats.cut == 1 and stats.replies_lost >= len(b"ok:commit\n")
    assert not proxy.armed and proxy.mode is Mode.PASS
    with _connect(proxy) as sock:  # one shot: the next connection passes
        assert _ask(sock, b"after") == b"ok:after\n"


def test_lost_reply_forwards_the_clients_bytes_during_the_window(proxy: FaultProxy, line_server: LineServer) -> None:
    with _connect(proxy) as sock:
        proxy.lose_next_reply(window=1.0)
        sock.sendall(b"first\n")
        assert line_server.wait_received(1)
        sock.sendall(b"second\n")
        assert line_server.wait_received(2)
        assert _reset_or_eof(sock)
    assert line_server.received == [b"first", b"second"]


def test_lost_reply_waits_for_the_nth_matching_read(proxy: FaultProxy, line_server: LineServer) -> None:
    proxy.lose_next_reply(match=[b"key-7", b"other"], nth=2, window=0.1)
    with _connect(proxy) as sock:
        assert _ask(sock, b"unrelated") == b"ok:unrelated\n"
        assert _ask(sock, b"get key-7") == b"ok:get key-7\n"
        assert proxy.armed
        sock.sendall(b"put key-7\n")
        assert _reset_or_eof(sock)
    assert proxy.stats.fired == 1
    assert line_server.wait_received(3)
    assert line_server.received[-1] == b"put key-7"


def test_lost_reply_then_blackhole_holds_the_retry_until_heal(proxy: FaultProxy, line_server: LineServer) -> None:
    proxy.lose_next_reply(window=0.1, then=Mode.BLACKHOLE)
    with _connect(proxy) as sock:
        sock.sendall(b"commit\n")
        assert _reset_or_eof(sock)
    assert proxy.mode is Mode.BLACKHOLE
    with _connect(proxy) as retry:
        retry.sendall(b"retry\n")
        assert not line_server.wait_received(2, timeout=0.5), "a blackhole forwards nothing"
        proxy.heal()
        assert _read_line(retry) == b"ok:retry\n"
    assert line_server.received == [b"commit", b"retry"]


def test_cut_resets_every_connection(proxy: FaultProxy) -> None:
    first, second = _connect(proxy), _connect(proxy)
    try:
        assert _ask(first, b"a") == b"ok:a\n" and _ask(second, b"b") == b"ok:b\n"
        assert proxy.cut() == 2
        assert _reset_or_eof(first) and _reset_or_eof(second)
        assert proxy.stats.cut == 2
        assert proxy.wait(lambda s: s.open == 0, 5)
    finally:
        first.close()
        second.close()
    with _connect(proxy) as sock:
        assert _ask(sock, b"c") == b"ok:c\n"


def test_delay_adds_latency_each_way(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        proxy.delay(0.2)
        started = time.monotonic()
        assert _ask(sock, b"slow") == b"ok:slow\n"
        assert time.monotonic() - started >= 0.4
        proxy.heal()
        assert _ask(sock, b"fast") == b"ok:fast\n"
    assert proxy.mode is Mode.PASS


def test_blackhole_moves_nothing_and_heal_delivers_what_waited(proxy: FaultProxy, line_server: LineServer) -> None:
    with _connect(proxy) as sock:
        assert _ask(sock, b"before") == b"ok:before\n"
        proxy.blackhole()
        sock.sendall(b"held\n")
        with _connect(proxy) as late:  # accepted, but not connected upstream yet
            late.sendall(b"late\n")
            assert not line_server.wait_received(2, timeout=0.5)
            proxy.heal()
            assert _read_line(sock) == b"ok:held\n"
            assert _read_line(late) == b"ok:late\n"
    assert sorted(line_server.received) == [b"before", b"held", b"late"]


def test_heal_delivers_what_a_blackhole_held_at_once(proxy: FaultProxy, line_server: LineServer) -> None:
    # As TCP after a partition: the receiver finds every held byte in its buffer together, so a
    # server handles them in one pass (an OVSDB relay then merges its source's updates).
    with _connect(proxy) as sock:
        assert _ask(sock, b"before") == b"ok:before\n"
        proxy.blackhole()
        held = 0
        for line in (b"one\n", b"two\n", b"three\n"):
            sock.sendall(line)
            held += len(line)
            assert proxy.wait(lambda s, held=held: s.received_up == len(b"before\n") + held, 5)
        chunks = proxy.stats.chunks_up
        proxy.heal()
        answers = b""
        while answers.count(b"\n") < 3:
            answers += _read_line(sock)
        assert answers == b"ok:one\nok:two\nok:three\n"
        assert proxy.stats.chunks_up == chunks + 1


def test_refuse_closes_the_door_but_keeps_open_connections(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        proxy.refuse()
        with pytest.raises(ConnectionRefusedError):
            _connect(proxy)
        assert _ask(sock, b"still") == b"ok:still\n"
        proxy.heal()
        with _connect(proxy) as again:  # same port as before
            assert _ask(again, b"back") == b"ok:back\n"


def test_half_close_is_passed_on(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        sock.sendall(b"last\n")
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data == b"ok:last\nbye\n"


def test_unreachable_upstream_resets_the_client() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        dead = placeholder.getsockname()[:2]
    with FaultProxy([dead]) as proxy:
        try:
            sock = _connect(proxy)
        except ConnectionResetError:
            # The reset can beat connect()'s own completion check (a timeout makes the
            # connect non-blocking): the client sees it on connect instead of on recv.
            pass
        else:
            with sock:
                assert _reset_or_eof(sock)
        assert proxy.wait(lambda s: s.upstream_failures == 1, 5)


def test_one_listener_per_endpoint_in_order(line_server: LineServer) -> None:
    other = LineServer()
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    try:
        ends = [line_server.server_address[:2], other.server_address[:2]]
        with FaultProxy(ends) as proxy:
            for address, server in zip(proxy.addresses, (line_server, other), strict=True):
                with socket.create_connection(address, timeout=5) as sock:
                    assert _ask(sock, b"x") == b"ok:x\n"
                assert server.received == [b"x"]
    finally:
        other.shutdown()
        other.server_close()


def test_close_releases_ports_and_thread(line_server: LineServer) -> None:
    proxy = FaultProxy([line_server.server_address[:2]]).start()
    port = proxy.addresses[0][1]
    sock = _connect(proxy)
    proxy.close()
    assert _reset_or_eof(sock)
    sock.close()
    assert not (_reservation_dir() / str(port)).exists()
    assert not any(t.name == "nbdb-fault-proxy" and t.is_alive() for t in threading.enumerate())
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_bad_arguments_are_refused(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError):
        FaultProxy([])
    with pytest.raises(ValueError):
        proxy.lose_next_reply(nth=0)
    with pytest.raises(ValueError):
        proxy.lose_next_reply(match=b"")
    with pytest.raises(ValueError):
        proxy.delay(-1)


@settings(deadline=None)  # a loaded machine must not turn slowness into failures
@given(
    data=st.binary(min_size=0, max_size=60),
    pattern=st.binary(min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=8),
)
def test_a_read_counts_when_a_pattern_ends_inside_it(data: bytes, pattern: bytes, cuts: list[int]) -> None:
    points = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    chunks = [data[a:b] for a, b in itertools.pairwise(points) if b > a]
    ends = {i + len(pattern) for i in range(len(data)) if data.startswith(pattern, i)}
    expected = 0
    offset = 0
    for chunk in chunks:
        if any(offset < end <= offset + len(chunk) for end in ends):
            expected += 1
        offset += len(chunk)
    trigger = Trigger((pattern,), nth=10**6, window=0, then=Mode.PASS)
    tail = b""
    for chunk in chunks:
        trigger.hit(tail[-255:], chunk)
        tail += chunk
    assert trigger.seen == expected
