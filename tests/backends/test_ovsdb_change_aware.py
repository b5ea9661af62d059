"""OVSDB database change awareness (ovsdb-server(7), 4.1.18): clients stay connected when a database changes.

ovsdb-server drops every client that did not send ``set_db_change_aware`` when a database
changes under it: a schema conversion (``ovsdb-client convert``), a relay reconnecting to
its source ("disconnecting (database OVN_Northbound connected to storage)"). nbdb's
connections are change-aware: a conversion cancels their monitors (``monitor_canceled``)
and they monitor again from the last transaction id, without reconnecting; a relay's
reconnect to its source leaves them alone. Each test first shows the premise with a raw
client that is not change-aware (the server drops it), then that nbdb's connection stays
(one connection accepted by a fault proxy in front of the server) and that a cache and a
watch miss no change and see none twice.
"""

from __future__ import annotations

import contextlib
import copy
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nbdb
from nbdb.backends.ovsdb.session import canceled
from nbdb.conformance.kit import eventually
from nbdb.models import LogicalSwitch
from nbdb.testing.base import Member
from nbdb.testing.faults import FaultProxy
from nbdb.testing.ovsdb import OvsdbServer, find_ovn_nb_schema
from nbdb.testing.probes import run_tool
from nbdb.testing.process import find_binary

pytestmark = pytest.mark.timeout(120)

STEPS = 5
"""Updates made before and again after each database change."""


def _url(address: str, namespace: str) -> str:
    return f"ovsdb+tcp://{address}?namespace={namespace}&timeout=20"


def _address(proxy: FaultProxy) -> str:
    host, port = proxy.addresses[0]
    return f"{host}:{port}"


@contextlib.contextmanager
def _clients(writes: str, reads: Member) -> Iterator[tuple[FaultProxy, nbdb.Database, nbdb.Database, str]]:
    """A writer (on ``writes``) and a client of ``reads`` through a proxy counting its connections, in a fresh
    namespace."""
    namespace = f"c{uuid.uuid4().hex[:8]}"
    with (
        FaultProxy([(reads.host, reads.port)]) as front,
        nbdb.connect(_url(writes, namespace)) as writer,
        nbdb.connect(_url(_address(front), namespace)) as client,
    ):
        yield front, writer, client, namespace


def _unaware_monitor(host: str, port: int) -> socket.socket:
    """A raw client with a monitor that never sent ``set_db_change_aware``."""
    sock = socket.create_connection((host, port), timeout=10)
    request = ["OVN_Northbound", "raw", {"NB_Global": [{"columns": ["name"]}]}]
    sock.sendall(json.dumps({"id": 1, "method": "monitor_cond", "params": request}).encode())
    assert sock.recv(65536), "no monitor reply"
    return sock


def _dropped(sock: socket.socket, timeout: float = 20) -> bool:
    """Whether the server closes ``sock`` within ``timeout`` (its echo requests answered meanwhile, so its
    inactivity probe is not what drops it)."""
    sock.settimeout(0.5)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return True
            if not data:
                return True
            if b'"method":"echo"' in data:
                sock.sendall(b'{"id":"echo","result":[],"error":null}')
        return False
    finally:
        sock.close()


def _holds(reader: nbdb.Database, switch: LogicalSwitch) -> bool:
    """Whether ``reader`` (through a relay, which may still lag its source) sees ``switch``."""
    try:
        reader.get(LogicalSwitch, switch.id)
    except nbdb.NotFoundError:
        return False
    return True


class _Observed:
    """A cache and a watch of one switch, through one connection."""

    def __init__(self, client: nbdb.Database, switch: LogicalSwitch) -> None:
        self.switch = switch
        self.cache = client.cache(LogicalSwitch)
        assert self.cache.wait_synced(30)
        self.watch = client.watch(LogicalSwitch)
        self.versions: list[int] = []

    def shows(self, version: int, timeout: float = 20) -> None:
        """Wait until the watch delivered ``version`` and the cache holds it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (self.versions and self.versions[-1] >= version):
            for event in self.watch.poll(0.5):
                if event.new is not None and event.new.id == self.switch.id:
                    assert event.old is not None and event.new.version == event.old.version + 1, (
                        f"the watch skipped from v{event.old.version if event.old else None} to v{event.new.version}"
                    )
                    self.versions.append(event.new.version)
        assert self.versions and self.versions[-1] == version, f"the watch stopped at {self.versions}"

        def cached() -> bool:
            held = self.cache.get(LogicalSwitch, self.switch.id)
            return held is not None and held.version == version

        assert eventually(cached, timeout), "the cache missed a change"


def _steps(writer: nbdb.Database, switch: LogicalSwitch, observed: _Observed, label: str) -> LogicalSwitch:
    for step in range(STEPS):
        switch = writer.update(switch.replace(external_ids={label: str(step)}))
        observed.shows(switch.version)
    return switch


# ---------------------------------------------------------------- schema conversion


def _schema() -> dict[str, Any]:
    return dict(json.loads(find_ovn_nb_schema().read_text()))


def _convert(address: str, schema: dict[str, Any], tmp_path: Path) -> None:
    """``ovsdb-client convert`` the database at ``address`` to ``schema``."""
    path = tmp_path / f"convert-{uuid.uuid4().hex[:6]}.ovsschema"
    path.write_text(json.dumps(schema))
    client = str(find_binary("ovsdb-client"))
    run_tool([client, "--timeout=20", "convert", f"tcp:{address}", str(path)], timeout=30)


@pytest.fixture
def standalone() -> Iterator[OvsdbServer]:
    with OvsdbServer() as server:
        yield server


def _newer_schema() -> dict[str, Any]:
    schema = copy.deepcopy(_schema())
    schema["version"] = "99.0.0"
    schema["tables"]["Logical_Switch"]["columns"]["future_option"] = {"type": "string"}
    schema["tables"]["Future_Table"] = {"columns": {"name": {"type": "string"}}, "isRoot": True}
    return schema


@pytest.mark.parametrize("target", ["same", "newer"])
def test_a_schema_conversion_is_followed_by_a_monitor_again_not_a_reconnect(
    standalone: OvsdbServer, tmp_path: Path, target: str
) -> None:
    member = standalone.members[0]
    with _clients(member.address, member) as (front, writer, client, namespace):
        switch = writer.create(LogicalSwitch(name=f"{namespace}-sw"))
        observed = _Observed(client, switch)
        switch = _steps(writer, switch, observed, "before")
        unaware = _unaware_monitor(member.host, member.port)
        _convert(member.address, _schema() if target == "same" else _newer_schema(), tmp_path)
        assert _dropped(unaware), "the premise: a client that is not change-aware is dropped by a conversion"
        # A read waits for the monitor asked for again (its catch-up may hold commits that preceded the read), so
        # the writes below reach the client as updates of their own, and the watch goes on.
        assert client.get(LogicalSwitch, switch.id).version == switch.version
        switch = _steps(writer, switch, observed, "after")
        assert observed.versions == list(range(2, switch.version + 1)), "a change seen twice or not at all"
        assert front.stats.accepted == 1, "the client reconnected instead of monitoring again"
        # Its own writes still read back (read-your-writes through the new monitor).
        mine = client.update(switch.replace(external_ids={"by": "client"}))
        observed.shows(mine.version)
        assert front.stats.accepted == 1


def test_a_change_made_while_the_monitor_is_cancelled_is_delivered_once(
    standalone: OvsdbServer, tmp_path: Path
) -> None:
    """Commits racing the conversion (some before the cancellation reaches the client, some between it and the new
    monitor's reply) all reach the cache exactly once: the re-monitor resumes from the last transaction id (or, where
    the conversion left no history, the whole state is applied as the exact difference)."""
    member = standalone.members[0]
    with _clients(member.address, member) as (front, writer, client, namespace):
        switches = [writer.create(LogicalSwitch(name=f"{namespace}-{i}")) for i in range(20)]
        cache = client.cache(LogicalSwitch)
        assert cache.wait_synced(30)
        done = threading.Event()
        written: list[LogicalSwitch] = []

        def write() -> None:
            for i, sw in enumerate(switches):
                written.append(writer.update(sw.replace(external_ids={"n": str(i)})))
            done.set()

        thread = threading.Thread(target=write)
        thread.start()
        _convert(member.address, _schema(), tmp_path)
        thread.join(60)
        assert done.is_set() and len(written) == len(switches)
        # A read shows every commit acknowledged before it, also those a cancelled monitor had not sent.
        assert [client.get(LogicalSwitch, sw.id).version for sw in written] == [2] * len(written)

        def current() -> bool:
            held = [cache.get(LogicalSwitch, sw.id) for sw in written]
            return all(h is not None and h.version == sw.version for h, sw in zip(held, written, strict=True))

        assert eventually(current, 20), "the cache missed a change made around the conversion"
        assert len([s for s in cache.list(LogicalSwitch) if s.name.startswith(namespace)]) == len(switches)
        assert front.stats.accepted == 1, "the client reconnected instead of monitoring again"


# ---------------------------------------------------------------- relays


@pytest.fixture(scope="module")
def cluster() -> Iterator[OvsdbServer]:
    with OvsdbServer(members=3) as server:
        yield server


@pytest.fixture(scope="module")
def relayed(cluster: OvsdbServer) -> Iterator[tuple[Member, FaultProxy]]:
    """A relay of the cluster, following it through a fault proxy."""
    with FaultProxy([(m.host, m.port) for m in cluster.members]) as source:
        relay = cluster.add_relay([f"{host}:{port}" for host, port in source.addresses])
        yield relay, source


def _bumped() -> dict[str, Any]:
    """The schema at a new version (the same tables): a relay drops its unaware clients only on a new version."""
    schema = _schema()
    major, minor, _patch = schema["version"].split(".")
    schema["version"] = f"{major}.{minor}.{100 + uuid.uuid4().int % 900}"
    return schema


def test_a_conversion_on_a_raft_cluster_keeps_the_leaders_clients(cluster: OvsdbServer, tmp_path: Path) -> None:
    members = ",".join(m.address for m in cluster.members)
    namespace = f"c{uuid.uuid4().hex[:8]}"
    with (
        FaultProxy([(m.host, m.port) for m in cluster.members]) as front,
        nbdb.connect(_url(members, namespace)) as writer,
        nbdb.connect(_url(",".join(f"{h}:{p}" for h, p in front.addresses), namespace)) as client,
    ):
        switch = writer.create(LogicalSwitch(name=f"{namespace}-sw"))
        observed = _Observed(client, switch)
        switch = _steps(writer, switch, observed, "before")
        accepted = front.stats.accepted  # the client also tried the followers on its way to the leader
        unaware = _unaware_monitor(cluster.leader().host, cluster.leader().port)
        _convert(cluster.leader().address, _bumped(), tmp_path)
        assert _dropped(unaware), "the premise: the leader drops a client that is not change-aware"
        assert client.get(LogicalSwitch, switch.id).version == switch.version
        switch = _steps(writer, switch, observed, "converted")
        assert observed.versions == list(range(2, switch.version + 1)), "a change seen twice or not at all"
        assert front.stats.accepted == accepted, "the client reconnected instead of monitoring again"


def test_a_cache_reading_through_a_relay_keeps_its_connection_across_source_reconnects_and_conversions(
    cluster: OvsdbServer, relayed: tuple[Member, FaultProxy], tmp_path: Path
) -> None:
    """A cache and a watch read through a relay whose link to its source is cut and healed, and then whose cluster
    converts the database to a new schema version. OVS 3.1's relay keeps its clients over the reconnect (its schema
    did not change), and drops every client that is not change-aware when the schema changes ("disconnecting
    (database OVN_Northbound schema changed)"), cancelling the monitors of those that are: nbdb's connection stays,
    monitors again, and the cache and watch miss no change and see none twice."""
    lagging, source = relayed
    with _clients(",".join(m.address for m in cluster.members), lagging) as (front, writer, client, namespace):
        switch = writer.create(LogicalSwitch(name=f"{namespace}-sw"))
        with nbdb.connect(_url(lagging.address, namespace)) as reader:
            assert eventually(lambda: _holds(reader, switch), 20)
        observed = _Observed(client, switch)
        switch = _steps(writer, switch, observed, "before")
        sources = source.stats.accepted
        source.cut()  # the relay reconnects to the members at once
        assert source.wait(lambda stats: stats.accepted > sources, 20), "the relay did not reconnect"
        switch = _steps(writer, switch, observed, "reconnected")
        # A new schema version, converted on the leader, reaches the relay.
        unaware = _unaware_monitor(lagging.host, lagging.port)
        _convert(cluster.leader().address, _bumped(), tmp_path)
        assert _dropped(unaware), "the premise: the relay drops a client that is not change-aware"
        # A read waits for the monitor asked for again, so the writes below come as updates of their own.
        assert client.get(LogicalSwitch, switch.id).version == switch.version
        switch = _steps(writer, switch, observed, "converted")
        assert observed.versions == list(range(2, switch.version + 1)), "a change seen twice or not at all"
        assert front.stats.accepted == 1, "the relay dropped the client and it had to come back"


# ---------------------------------------------------------------- pure logic


def test_the_forms_of_canceled() -> None:
    # "canceled" (3.x: a string; older releases: an error object) means the transaction may have committed
    # (TransactLost, settled by the family); any other error is the server refusing it.
    assert canceled("canceled")
    assert canceled({"error": "canceled", "details": "database schema is changing"})
    assert not canceled({"error": "constraint violation"})
    assert not canceled("not owner")
