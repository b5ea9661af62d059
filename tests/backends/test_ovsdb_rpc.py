"""The OVSDB JSON-RPC connection's own logic: framing, keep-alive while waiting, big messages.

No server is needed: the tests play the peer of :class:`RpcConnection` over a
socket pair and check what the client sends and when (the behaviour against a
real ovsdb-server is covered by ``test_ovsdb*.py`` and the OVN scale sweep).
"""

from __future__ import annotations

import gc
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbdb.backends.ovsdb.rpc import RpcClosed, RpcConnection
from nbdb.backends.ovsdb.transport import JsonFramer, dumps

pytestmark = pytest.mark.timeout(60)

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)  # RFC 7047's integers: 64 bits, which the server checks
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from('ab{}[]"\\ \n:,é€😀')),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.dictionaries(st.text(max_size=5), _JSON, max_size=4), min_size=1, max_size=5),
    st.lists(st.integers(min_value=1, max_value=40), max_size=12),
    st.sampled_from(["", " ", "\n", " \r\n\t"]),
    st.booleans(),
)
def test_messages_come_out_whole_and_in_order_however_the_stream_is_cut(
    messages: list[Any], cuts: list[int], between: str, ascii: bool
) -> None:
    stream = b"".join(json.dumps(m, ensure_ascii=ascii).encode() + between.encode() for m in messages)
    framer = JsonFramer()
    out: list[Any] = []
    start = 0
    for size in [*cuts, len(stream)]:
        chunk = stream[start : start + size]
        start += len(chunk)
        if chunk:
            out += framer.feed(chunk)
    out += framer.idle(force=True)
    assert out == messages
    assert framer.buffered <= len(between)  # at most the blanks after the last message
    assert framer.feed(b"{}") == [{}]  # nothing left over that would corrupt the next message


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=5), _JSON | st.tuples(_JSON, _JSON), max_size=4))
def test_a_message_is_written_as_json_reads_it(message: dict[str, Any]) -> None:
    assert json.loads(dumps(message)) == json.loads(json.dumps(message))


@pytest.mark.parametrize(
    "stream",
    [b'{"a":"x}{y"}{"b":1}', b'{"a":"}{"}{"b":"}{"}{"c":{}}', b'{"a":{}}{"b":[{}]}', b'{"a":"}{"} {"b":"}{"}'],
)
def test_a_read_is_split_between_its_messages_not_where_a_string_holds_a_brace_pair(stream: bytes) -> None:
    expected = []
    decoder = json.JSONDecoder()
    text, index = stream.decode(), 0
    while index < len(text):
        message, index = decoder.raw_decode(text, index)
        expected.append(message)
        index += len(text[index:]) - len(text[index:].lstrip())
    framer = JsonFramer()
    assert framer.feed(stream) == expected
    assert framer.buffered == 0


def test_what_json_accepts_and_orjson_refuses_is_still_read() -> None:
    framer = JsonFramer()
    out = framer.feed(b'{"a": NaN}{"b": Infinity} {"c": [1, 2]}')
    assert out[1:] == [{"b": float("inf")}, {"c": [1, 2]}]
    assert out[0]["a"] != out[0]["a"]  # NaN
    assert framer.buffered == 0


def _peer(probe: float) -> Iterator[tuple[RpcConnection, socket.socket, list[tuple[str, Any, bool]]]]:
    client, server = socket.socketpair()
    client.setblocking(False)
    got: list[tuple[str, Any, bool]] = []
    rpc = RpcConnection(client, "peer", lambda method, params: got.append((method, params, gc.isenabled())), probe)
    try:
        yield rpc, server, got
    finally:
        rpc.close()
        server.close()


@pytest.fixture
def peer() -> Iterator[tuple[RpcConnection, socket.socket, list[tuple[str, Any, bool]]]]:
    """A client connection (1 s probe), the socket of its peer (the test), and the notifications it got."""
    yield from _peer(1.0)


def _read(sock: socket.socket, seconds: float) -> list[Any]:
    """What the client sent within ``seconds``."""
    framer = JsonFramer()
    out: list[Any] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        out += framer.feed(data)
    return out + framer.idle(force=True)


def test_a_client_awaiting_a_long_reply_tells_the_server_it_lives(peer: Any) -> None:
    # ovsdb-server drops a client silent for two of its probe intervals, and may itself take
    # seconds to build a big monitor reply: the client must speak up while it waits.
    rpc, server, _ = peer
    call = rpc.request("monitor_cond_since", ["OVN_Northbound", "m", {}, "0"])
    sent = _read(server, 1.6)  # the client's own probe (1 s) would drop a peer silent for 2 s
    assert sent[0]["method"] == "monitor_cond_since"
    echoes = [m for m in sent[1:] if m["method"] == "echo"]
    assert len(echoes) >= 2, f"expected an echo every half probe interval, got {sent[1:]}"
    server.sendall(json.dumps({"id": sent[0]["id"], "result": [False, "t", {}], "error": None}).encode())
    assert call.wait(10) == [False, "t", {}]


def test_a_waiting_client_is_never_silent_for_much_more_than_half_its_probe() -> None:
    # Cause: the keep-alive woke on a fixed beat and skipped a beat that found the last send
    # a moment too recent, so a request sent just after a beat was followed by a whole probe
    # interval of silence: a relay probing every second (it drops a client silent for 2 s)
    # behind a 2.4 s link reset a client whose probe is 2 s.
    client, server = socket.socketpair()
    client.setblocking(False)
    rpc = RpcConnection(client, "peer", lambda method, params: None, 4.0)  # an echo every 2 s while waiting
    try:
        began = time.monotonic()
        time.sleep(0.3)  # the request goes out between two beats of a fixed 2 s beat
        rpc.request("monitor_cond_since", ["OVN_Northbound", "m", {}, "0"])
        arrivals: list[tuple[float, Any]] = []
        framer = JsonFramer()
        while (left := began + 5.0 - time.monotonic()) > 0:
            server.settimeout(left)
            try:
                data = server.recv(65536)
            except TimeoutError:
                break
            arrivals += [(time.monotonic() - began, m) for m in framer.feed(data)]
        echoes = [at for at, m in arrivals if m["method"] == "echo"]
        assert len(echoes) >= 2, f"expected an echo every 2 s: {arrivals}"
        sends = [at for at, _ in arrivals]
        gaps = [b - a for a, b in itertools.pairwise(sends)]
        assert max(gaps) < 3.0, f"silent for {max(gaps):.2f}s with a reply awaited: {arrivals}"
    finally:
        rpc.close()
        server.close()


def test_an_idle_client_with_nothing_awaited_sends_nothing_before_its_probe(peer: Any) -> None:
    _, server, _ = peer
    assert _read(server, 0.8) == []


@pytest.fixture
def patient_peer() -> Iterator[tuple[RpcConnection, socket.socket, list[tuple[str, Any, bool]]]]:
    """:func:`peer` with a 30 s probe: a test that keeps the peer busy must not see it dropped as silent."""
    yield from _peer(30.0)


def test_a_big_message_is_parsed_and_handled_with_the_collector_paused(patient_peer: Any) -> None:
    # The 1 s probe of `peer` dropped the connection in about 2 runs in 10 on a loaded machine: the
    # test's thread, busy sending 3 MB, answers no echo. The probe is not what this test is about.
    rpc, server, got = patient_peer
    rows = {f"{i:08d}": {"insert": {"name": f"p{i}", "external_ids": ["map", [["k", "v"]]]}} for i in range(30_000)}
    big = {"id": None, "method": "update3", "params": ["m", "t1", {"Logical_Switch_Port": rows}]}
    small = {"id": None, "method": "update3", "params": ["m", "t2", {}]}
    payload = json.dumps(big).encode()
    assert len(payload) > 2 << 20

    threading.Thread(target=server.sendall, args=(payload,), daemon=True).start()
    deadline = time.monotonic() + 30
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    server.sendall(json.dumps(small).encode())  # after the big one was handled: a read of its own
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [(params[1], enabled) for _method, params, enabled in got] == [("t1", False), ("t2", True)]
    assert len(got[0][1][2]["Logical_Switch_Port"]) == 30_000
    assert gc.isenabled()
    assert not rpc.closed.is_set()


def _answer(server: socket.socket, framer: JsonFramer, *before: Any) -> tuple[Any, ...]:
    """Read one request from the client; send ``before`` (notifications) then its reply, in one write."""
    deadline = time.monotonic() + 10
    request = None
    while request is None:
        server.settimeout(max(0.01, deadline - time.monotonic()))
        got = framer.feed(server.recv(65536)) + framer.idle(force=True)
        request = next((m for m in got if m.get("method") != "echo"), None)
    reply = {"id": request["id"], "result": ["ok", request["params"]], "error": None}
    server.sendall(b"".join(json.dumps(m).encode() for m in (*before, reply)))
    return request, reply


def _update(txn: str) -> dict[str, Any]:
    return {"id": None, "method": "update3", "params": ["m", txn, {}]}


def test_every_update_sent_before_a_reply_is_handled_before_its_caller_returns(peer: Any) -> None:
    # ovsdb-server sends a transaction's update before its reply: read-your-writes rests on
    # the client handling them in that order, and on nothing after the reply being lost.
    rpc, server, _ = peer
    handled: list[str] = []
    rpc._notify = lambda method, params: handled.append(params[1])
    framer = JsonFramer()
    for i in range(5):
        call = rpc.request("transact", ["db", i])
        answering = threading.Thread(target=_answer, args=(server, framer, _update(f"u{i}"), _update(f"v{i}")))
        answering.start()
        assert call.wait(10) == ["ok", ["db", i]]
        answering.join()
        assert f"u{i}" in handled
    deadline = time.monotonic() + 5
    while len(handled) < 10 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert handled == [t for j in range(5) for t in (f"u{j}", f"v{j}")]


def test_a_client_awaiting_a_reply_answers_the_servers_echo(peer: Any) -> None:
    rpc, server, _ = peer
    call = rpc.request("transact", ["db", 1])
    server.sendall(json.dumps({"id": "probe", "method": "echo", "params": ["x"]}).encode())
    answers = [m for m in _read(server, 0.5) if m.get("id") == "probe"]
    assert answers == [{"id": "probe", "result": ["x"], "error": None}]
    server.sendall(json.dumps({"id": next(iter(rpc._pending)), "result": [{}], "error": None}).encode())
    assert call.wait(10) == [{}]


def test_a_call_in_flight_when_the_server_goes_away_fails_as_sent(peer: Any) -> None:
    rpc, server, _ = peer
    call = rpc.request("transact", ["db", 1])
    threading.Timer(0.1, server.shutdown, args=(socket.SHUT_RDWR,)).start()
    with pytest.raises(RpcClosed) as raised:
        call.wait(10)
    assert raised.value.sent
    assert rpc.closed.wait(5)


def test_close_fails_a_call_in_flight_promptly(peer: Any) -> None:
    rpc, _, _ = peer
    call = rpc.request("transact", ["db", 1])
    threading.Timer(0.1, rpc.close).start()
    started = time.monotonic()
    with pytest.raises(RpcClosed):
        call.wait(30)
    assert time.monotonic() - started < 5  # failed by the close, not by the 30 s timeout


def test_a_reply_hook_closing_the_connection_does_not_hang(peer: Any) -> None:
    rpc, server, _ = peer
    framer = JsonFramer()
    call = rpc.request("transact", ["db", 1], on_reply=lambda _r: rpc.close())
    _answer(server, framer)
    started = time.monotonic()
    assert call.wait(10) == ["ok", ["db", 1]]
    assert rpc.closed.is_set()
    assert time.monotonic() - started < 5  # the hook's close did not wait on itself


def test_bytes_that_are_not_utf8_fail_the_call_instead_of_stalling_the_connection(peer: Any) -> None:
    rpc, server, _ = peer
    call = rpc.request("transact", ["OVN_Northbound"])
    [request] = _read(server, 0.3)
    server.sendall(b'{"id": ' + json.dumps(request["id"]).encode() + b', "result": ["\xff\xfe"], "error": null}')
    with pytest.raises(RpcClosed, match="UTF-8"):
        call.wait(5)
    assert rpc.closed.is_set()


def test_the_framer_refuses_bytes_that_are_not_utf8() -> None:
    framer = JsonFramer()
    assert framer.feed(b'{"a": "') == []
    with pytest.raises(ValueError, match="not UTF-8"):
        framer.feed(b'\xc3\x28"}')


def test_a_client_that_stalled_itself_is_not_dropped_when_the_servers_answer_waits_unread() -> None:
    # Cause: the I/O thread measured the server's silence by the clock alone. At 100,000 ports
    # on a loaded machine another thread held the GIL for 3.5-8.8 s (a collection over the
    # replica, the cache's copies); when the I/O thread ran again it found "no answer for 6 s"
    # though the server's answer sat in the socket, dropped the connection and reloaded the
    # whole replica. Here the I/O thread is held up between its wait and its check by the
    # handler of a message it takes in once the stream went quiet (its brace count is thrown
    # off by braces in strings); the peer's next message arrives during the stall, as a live
    # server's answer to an echo does.
    client, server = socket.socketpair()
    client.setblocking(False)
    got: list[str] = []

    def handle(method: str, params: Any) -> None:
        got.append(method)
        if method == "stall":
            server.sendall(json.dumps({"id": None, "method": "after", "params": []}).encode())
            time.sleep(2.0)  # the I/O thread held up for 4 probe intervals (0.5 s each)

    rpc = RpcConnection(client, "peer", handle, 0.5)
    try:
        server.sendall(b'{"id": null, "method": "stall", "params": [{"a": "{{"}')
        time.sleep(0.1)  # read alone: it ends in "}" but is not whole
        server.sendall(b"]}")
        deadline = time.monotonic() + 10
        while "after" not in got and not rpc.closed.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got == ["stall", "after"], f"dropped as silent ({rpc.closed.is_set()}) with an answer unread: {got}"
    finally:
        rpc.close()
        server.close()


def test_a_client_that_stalled_itself_probes_before_it_drops_a_quiet_server() -> None:
    # Cause: the drop went by the clock alone. A client whose I/O thread had not run for longer
    # than two probe intervals (a collection of 7.8 s on another thread, at load ≈ 11) had sent
    # no echo meanwhile, so the server, asked nothing, had said nothing, and was dropped on the
    # I/O thread's first turn: the client's stall read as the server's silence. Here the peer
    # sends nothing unasked and answers every request; the I/O thread is held up as above.
    client, server = socket.socketpair()
    client.setblocking(False)
    got: list[str] = []
    done = threading.Event()

    def answer() -> None:
        framer = JsonFramer()
        server.settimeout(0.1)
        while not done.is_set():
            try:
                data = server.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            for m in framer.feed(data) + framer.idle(force=True):
                # Not the echo the client sent before its stall (from its keep-alive, while the
                # message was half read): answered, it would be the unread answer of the test above.
                if m.get("id") is not None and m.get("method") and m.get("params") != ["nbdb-busy"]:
                    server.sendall(json.dumps({"id": m["id"], "result": m["params"], "error": None}).encode())

    def handle(method: str, params: Any) -> None:
        got.append(method)
        time.sleep(2.0)  # the I/O thread held up for 4 probe intervals (0.5 s each)

    rpc = RpcConnection(client, "peer", handle, 0.5)
    peer = threading.Thread(target=answer)
    try:
        server.sendall(b'{"id": null, "method": "stall", "params": [{"a": "{{"}')
        time.sleep(0.1)  # read alone: it ends in "}" but is not whole
        server.sendall(b"]}")
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        peer.start()
        time.sleep(2.5)  # the stall, and the turn of the I/O thread after it
        assert rpc.request("echo", ["still here"]).wait(10) == ["still here"], "dropped a server it never asked"
    finally:
        done.set()
        rpc.close()
        server.close()
        peer.join(5)


def test_a_server_silent_while_it_composes_a_patient_request_is_not_dropped(peer: Any) -> None:
    # Cause: ovsdb-server answers nothing, echoes included, while it composes a reply; a monitor's
    # first state of 100,000 ports took it 11.7 s of one turn on a loaded machine. The client dropped
    # it after two probe intervals and asked again on a new connection, for the same wait (a cold
    # load of 67 s). A monitor's first state is asked patiently: silence is the server's work on it.
    rpc, server, _ = peer  # probe 1 s: dropped after about 2 s of silence
    call = rpc.request("monitor_cond_since", ["OVN_Northbound", "m", {}, "0"], patient=10.0)
    asked = _read(server, 3.5)  # the server says nothing for 3.5 s, echoes unanswered
    assert not rpc.closed.is_set(), "a server busy with a patient request was dropped as dead"
    server.sendall(json.dumps({"id": asked[0]["id"], "result": [False, "t", {}], "error": None}).encode())
    assert call.wait(10) == [False, "t", {}]


def test_patience_is_bounded_a_silent_server_is_still_dropped() -> None:
    # The allowance ends: a server that never answers (frozen, or gone without a reset) is dropped
    # once the patient request's allowance and the probe's own intervals have passed.
    rpc, _server, _ = next(gen := _peer(0.5))  # the peer answers nothing
    try:
        call = rpc.request("monitor_cond_since", ["OVN_Northbound", "m", {}, "0"], patient=1.0)
        started = time.monotonic()
        assert rpc.closed.wait(8), "a server silent past the patient request's allowance was never dropped"
        assert time.monotonic() - started >= 1.0
        with pytest.raises(RpcClosed):
            call.wait(1)
    finally:
        gen.close()
