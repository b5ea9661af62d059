"""The harness's server-side inactivity probe (``OvsdbServer(inactivity_probe_ms=...)``), on a real ovsdb-server.

A client that sends nothing is what a client busy parsing a 40 MB initial monitor reply looks
like to the server: these tests hold plain sockets silent and watch what the server does.
"""

from __future__ import annotations

import json
import selectors
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

import nbdb
from nbdb.models import LogicalSwitch
from nbdb.testing import HarnessError, OvsdbServer, Server, find_ovn_nb_schema
from nbdb.testing.base import Member
from nbdb.testing.ovsdb import LISTENER_DB, _connection_table, listener_schema
from nbdb.testing.process import find_binary

#: ovsdb-server's own default: an echo after 5 s of silence, the drop 5 s after that.
DEFAULT_PROBE_S = 5.0


@dataclass
class SilentClient:
    """A TCP client of one server that never sends a byte; it notes the echo requests it gets and when it is dropped."""

    sock: socket.socket
    opened: float = field(default_factory=time.monotonic)
    echoes: list[float] = field(default_factory=list)
    dropped_after: float | None = None
    buffer: bytes = b""

    @classmethod
    def connect(cls, server: OvsdbServer | Member) -> SilentClient:
        """A silent client of ``server``'s first member, or of one member or relay."""
        member = server.members[0] if isinstance(server, OvsdbServer) else server
        sock = socket.create_connection((member.host, member.ports["client"]), timeout=10)
        sock.setblocking(False)
        return cls(sock)

    def on_readable(self) -> None:
        data = self.sock.recv(65536)
        now = time.monotonic() - self.opened
        if not data:
            self.dropped_after = now
            return
        self.buffer += data
        # Each server message is one JSON object; an echo request names its method.
        self.echoes += [now] * self.buffer.count(b'"method":"echo"')
        self.buffer = self.buffer[self.buffer.rfind(b"}") + 1 :]


def _watch(clients: list[SilentClient], until: Callable[[], bool], deadline_s: float) -> None:
    """Read from ``clients`` (never writing) until ``until()`` or ``deadline_s`` seconds have passed."""
    with selectors.DefaultSelector() as selector:
        for client in clients:
            selector.register(client.sock, selectors.EVENT_READ, client)
        end = time.monotonic() + deadline_s
        while not until() and time.monotonic() < end:
            for key, _ in selector.select(timeout=0.2):
                client = key.data
                client.on_readable()
                if client.dropped_after is not None:
                    selector.unregister(client.sock)
    for client in clients:
        client.sock.close()


@pytest.mark.timeout(90)
def test_raised_probe_keeps_a_silent_client_the_default_drops(server_factory: Callable[..., Server]) -> None:
    default = server_factory("ovsdb")
    raised = server_factory("ovsdb", inactivity_probe_ms=120_000)
    assert isinstance(default, OvsdbServer) and isinstance(raised, OvsdbServer)
    quiet_default, quiet_raised = SilentClient.connect(default), SilentClient.connect(raised)
    # Both silent side by side: the default server probes at 5 s and drops at about 10 s.
    _watch([quiet_default, quiet_raised], lambda: quiet_default.dropped_after is not None, deadline_s=45)
    assert quiet_default.dropped_after is not None, "the default 5 s probe should drop a silent client"
    assert quiet_default.dropped_after >= 2 * DEFAULT_PROBE_S - 1
    assert quiet_default.echoes and quiet_default.echoes[0] >= DEFAULT_PROBE_S - 1
    # Silent as long, and longer than two default probe intervals: neither probed nor dropped.
    assert quiet_raised.dropped_after is None
    assert quiet_raised.echoes == []


@pytest.mark.timeout(60)
def test_short_probe_drops_a_silent_client_sooner(server_factory: Callable[..., Server]) -> None:
    # 1 s is ovsdb-server's smallest probe: echo at about 1 s, drop at about 2 s, where the
    # default would not even have probed yet; that the client is dropped at all shows the row is read.
    server = server_factory("ovsdb", inactivity_probe_ms=1_000)
    assert isinstance(server, OvsdbServer)
    quiet = SilentClient.connect(server)
    _watch([quiet], lambda: quiet.dropped_after is not None, deadline_s=30)
    assert quiet.dropped_after is not None
    assert quiet.echoes, "the server probes before it drops"
    assert quiet.dropped_after < 2 * DEFAULT_PROBE_S - 2


@pytest.mark.timeout(60)
def test_probe_is_set_the_ovn_way(server_factory: Callable[..., Server]) -> None:
    server = server_factory("ovsdb", inactivity_probe_ms=60_000)
    assert isinstance(server, OvsdbServer)
    nbctl = find_binary("ovn-nbctl")
    assert nbctl is not None, "ovn-nbctl (ovn-central) is installed by install-servers.sh"
    listed = subprocess.run(
        [nbctl, f"--db={server.remotes}", "--timeout=5", "--columns=target,inactivity_probe", "list", "Connection"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    assert f'"ptcp:{server.port}:127.0.0.1"' in listed and "60000" in listed
    assert server.options()["inactivity_probe_ms"] == 60_000


@pytest.mark.timeout(10)
def test_connection_table_of_ovn_schemas() -> None:
    nb = json.loads(find_ovn_nb_schema().read_text())
    assert _connection_table(nb) == ("NB_Global", "Connection")
    sb_path = find_ovn_nb_schema().with_name("ovn-sb.ovsschema")
    if sb_path.is_file():
        assert _connection_table(json.loads(sb_path.read_text())) == ("SB_Global", "Connection")


@pytest.mark.timeout(10)
def test_connection_table_missing_is_a_clear_error() -> None:
    tiny = {"name": "Tiny", "version": "1.0.0", "tables": {"Item": {"columns": {"name": {"type": "string"}}}}}
    with pytest.raises(HarnessError, match="inactivity_probe_ms needs"):
        _connection_table(tiny)
    # A root "connections" column whose rows cannot carry a probe does not count either.
    tiny["tables"]["Root"] = {
        "isRoot": True,
        "columns": {"connections": {"type": {"key": {"type": "uuid", "refTable": "Item"}}}},
    }
    with pytest.raises(HarnessError):
        _connection_table(tiny)


@pytest.mark.timeout(30)
def test_probe_option_rejects_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        OvsdbServer(inactivity_probe_ms=-1)


@pytest.mark.timeout(120)
def test_every_member_and_relay_probes_on_a_listener_of_its_own(server_factory: Callable[..., Server]) -> None:
    """A raft cluster's members and its relays each read their listener and its probe from a database of their own."""
    server = server_factory("ovsdb", members=3, relays=1, inactivity_probe_ms=1_000)
    assert isinstance(server, OvsdbServer)
    quiet = [SilentClient.connect(m) for m in (*server.members, *server.relays)]
    _watch(quiet, lambda: all(q.dropped_after is not None for q in quiet), deadline_s=30)
    for member, client in zip((*server.members, *server.relays), quiet, strict=True):
        assert client.dropped_after is not None, f"{member.name} did not drop a silent client"
        assert client.echoes, f"{member.name} drops only after it probed"
        assert client.dropped_after < 2 * DEFAULT_PROBE_S - 2, f"{member.name} kept the default probe"
    # Each member's row names its own port; clients still see the database they came for, and use it.
    for member in server.members:
        listed = _ovsdb_client("transact", f"tcp:{member.address}", json.dumps([LISTENER_DB, _SELECT_CONNECTIONS]))
        [rows] = [result["rows"] for result in json.loads(listed)]
        assert [(r["target"], r["inactivity_probe"]) for r in rows] == [(f"ptcp:{member.port}:127.0.0.1", 1_000)]
    with nbdb.connect(server.url, namespace="probe") as db:  # through the relay, writes reach the leader
        created = db.create(LogicalSwitch(name="sw"))
        assert db.get(LogicalSwitch, created.id) == created


@pytest.mark.timeout(30)
def test_listener_schema_keeps_the_column_types_ovsdb_server_reads() -> None:
    nb = json.loads(find_ovn_nb_schema().read_text())
    own = listener_schema(nb)
    assert own["name"] == LISTENER_DB
    assert own["tables"]["Connection"] == nb["tables"]["Connection"]
    assert own["tables"]["NB_Global"]["columns"] == {"connections": nb["tables"]["NB_Global"]["columns"]["connections"]}
    assert _connection_table(own) == ("NB_Global", "Connection")


_SELECT_CONNECTIONS = {"op": "select", "table": "Connection", "where": [], "columns": ["target", "inactivity_probe"]}


def _ovsdb_client(*args: str) -> str:
    """Stdout of ``ovsdb-client --timeout=5 ARGS``."""
    client = find_binary("ovsdb-client")
    assert client is not None
    return subprocess.run([client, "--timeout=5", *args], capture_output=True, text=True, timeout=10, check=True).stdout


@pytest.mark.timeout(90)
@pytest.mark.parametrize("listener", ["tls", "unix"])
def test_probe_with_ssl_and_unix_listeners(server_factory: Callable[..., Server], listener: str) -> None:
    # Readiness (ovsdb-client list-dbs on the TCP or SSL listener, with the client certificate
    # for SSL) already proves that the listener the connection row names is up.
    server = server_factory("ovsdb", inactivity_probe_ms=30_000, **{listener: True})
    assert isinstance(server, OvsdbServer)
    files = server.tls_files
    ssl = [] if files is None else [f"-p{files.client_key}", f"-c{files.client_cert}", f"-C{files.ca_cert}"]
    select = ["OVN_Northbound", {"op": "select", "table": "Connection", "where": []}]
    reply = _ovsdb_client(*ssl, "transact", server.remotes.split(",")[0], json.dumps(select))
    [rows] = [result["rows"] for result in json.loads(reply)]
    scheme = "pssl" if listener == "tls" else "ptcp"
    assert [(r["target"], r["inactivity_probe"]) for r in rows] == [(f"{scheme}:{server.port}:127.0.0.1", 30_000)]
    if listener == "unix":
        # The unix socket stays a command-line remote next to the row's listener.
        dbs = _ovsdb_client("list-dbs", f"unix:{server.members[0].extra['unix']}").split()
        assert "OVN_Northbound" in dbs
