"""OVSDB relays under faults: each way a relay broke the contract, reproduced with real relays.

A 3-member raft cluster with two relays: ``direct`` follows the members, ``lagging``
follows them through a fault proxy (``relays.source``), so a test can make that relay
fall behind (blackhole), catch up at once (heal) or lose its source (cut, lost reply)
while clients keep talking to it. Clients reach ``direct`` through a proxy of their own
(``front``), so a test can drop their connection and make them move to ``lagging``.

What a relay does that a raft leader does not (ovsdb-server 3.1, ``ovsdb/relay.c``,
``transaction-forward.c``, ``jsonrpc-server.c``):

* it applies each update of its source as a transaction of its own and then sends its
  clients everything new as one update: commits arrive merged;
* it answers read-only transactions (nbdb's sync, a counter's read) from its own copy,
  which lags the leader;
* another relay's copy lags differently, and a relay that cannot resume a client's
  monitor sends its whole copy, however old;
* when it loses its source it cancels the transactions it forwarded ("canceled"),
  although the source may have committed them;
* locks are per server process: a relay does not forward them.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import nbdb
from nbdb.backends.ovsdb.rpc import RpcConnection
from nbdb.conformance.faultkit import id_patterns
from nbdb.conformance.kit import eventually
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.testing import ServerTimeoutError
from nbdb.testing.base import Member
from nbdb.testing.faults import FaultProxy, Mode
from nbdb.testing.fixtures import shared_server
from nbdb.testing.ovsdb import OvsdbServer

pytestmark = pytest.mark.timeout(120)

HEAL_AFTER = 1.5
"""Seconds a relay stays cut off from its source (well under its 5 s probe interval)."""


@dataclass
class Relays:
    """The cluster's relays: one following the members, one through a fault proxy."""

    direct: Member
    lagging: Member
    source: FaultProxy
    """Between ``lagging`` and the members."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[OvsdbServer]:
    with OvsdbServer(members=3, relays=1) as server:
        yield server


@pytest.fixture(scope="module")
def relays(cluster: OvsdbServer) -> Iterator[Relays]:
    with FaultProxy([(m.host, m.port) for m in cluster.members]) as source:
        lagging = cluster.add_relay([f"{host}:{port}" for host, port in source.addresses])
        yield Relays(cluster.relays[0], lagging, source)


@pytest.fixture
def front(relays: Relays) -> Iterator[FaultProxy]:
    """A proxy in front of the direct relay; the lagging relay is heard from again after each test."""
    with FaultProxy([(relays.direct.host, relays.direct.port)]) as proxy:
        try:
            yield proxy
        finally:
            relays.source.heal()


@pytest.fixture
def namespace() -> str:
    return f"r{uuid.uuid4().hex[:8]}"


def _url(*addresses: str, namespace: str, timeout: float = 20) -> str:
    return f"ovsdb+tcp://{','.join(addresses)}?namespace={namespace}&timeout={timeout}"


def _address(proxy: FaultProxy) -> str:
    host, port = proxy.addresses[0]
    return f"{host}:{port}"


def _shows(relay: Member, namespace: str, obj: LogicalSwitch, timeout: float = 20) -> None:
    """Wait until ``relay`` serves ``obj`` at its version."""
    with nbdb.connect(_url(relay.address, namespace=namespace)) as reader:

        def current() -> bool:
            try:
                return reader.get(LogicalSwitch, obj.id).version == obj.version
            except nbdb.NotFoundError:
                return False

        assert eventually(current, timeout), f"{relay.name} never showed {obj.name} v{obj.version}"


@contextlib.contextmanager
def _switch_and_client(
    cluster: OvsdbServer, relays: Relays, front: FaultProxy, namespace: str
) -> Iterator[tuple[nbdb.Database, LogicalSwitch, nbdb.Database]]:
    """A writer on the members, a switch both relays show, and a client of the direct relay (through ``front``)
    that moves to the lagging one when ``front`` refuses it."""
    with nbdb.connect(_url(*(m.address for m in cluster.members), namespace=namespace)) as writer:
        switch = writer.create(LogicalSwitch(name=f"{namespace}-sw"))
        _shows(relays.lagging, namespace, switch)
        with contextlib.ExitStack() as stack:
            # The client must start on the direct relay. On a loaded machine that relay can
            # turn a client away (it says it is without its source while it reconnects to
            # the members, or it answers the client's first question late); the client then
            # starts on the lagging one, where the fault set up on ``front`` never fires
            # (seen in CI: one 146-byte exchange through ``front``, then nothing).
            deadline = time.monotonic() + 30
            while True:
                client = stack.enter_context(
                    nbdb.connect(_url(_address(front), relays.lagging.address, namespace=namespace))
                )
                if front.stats.open >= 1:
                    break
                assert time.monotonic() < deadline, "the direct relay refused clients for 30 s"
                stack.close()
                time.sleep(0.5)
            yield writer, switch, client


def _heal_later(proxy: FaultProxy, seconds: float = HEAL_AFTER) -> threading.Timer:
    timer = threading.Timer(seconds, proxy.heal)
    timer.start()
    return timer


def test_commits_a_relay_merges_into_one_update_end_a_watch_instead_of_being_skipped(
    cluster: OvsdbServer, relays: Relays, front: FaultProxy, namespace: str
) -> None:
    # Cause: a relay flushes several commits of its source to a client as one update, and
    # the replica delivered it as one commit: the watch skipped versions without a word.
    with (
        nbdb.connect(_url(*(m.address for m in cluster.members), namespace=namespace)) as writer,
        nbdb.connect(_url(relays.lagging.address, namespace=namespace)) as watcher,
    ):
        switch = writer.create(LogicalSwitch(name=f"{namespace}-sw"))
        _shows(relays.lagging, namespace, switch)
        watch = watcher.watch(LogicalSwitch)
        cache = watcher.cache(LogicalSwitch)
        assert cache.wait_synced(30)
        relays.source.blackhole()
        for step in range(5):
            switch = writer.update(switch.replace(external_ids={"step": str(step)}))
        relays.source.heal()  # the relay gets five commits at once and passes them on as one update
        delivered: list[nbdb.ChangeEvent[nbdb.Model]] = []
        gone = False
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline and not (delivered and delivered[-1].object.version == switch.version):
                delivered += watch.poll(0.5)
        except nbdb.HistoryGoneError:
            gone = True
        for event in delivered:
            assert event.old is not None and event.new is not None
            assert event.new.version == event.old.version + 1, f"the watch skipped from v{event.old.version}"
        assert gone, f"the five commits came one by one ({[e.new.version for e in delivered if e.new]}): not merged"
        # A cache applies the merged update as the exact difference.
        assert eventually(lambda: (cache.get(LogicalSwitch, switch.id) or switch).version == switch.version, 30)
        cached = cache.get(LogicalSwitch, switch.id)
        assert cached is not None and cached.external_ids == {"step": "4"}


def test_a_lost_reply_resent_through_a_lagging_relay_is_settled_not_planned_again(
    cluster: OvsdbServer, relays: Relays, front: FaultProxy, namespace: str
) -> None:
    # Cause: after a lost reply, a replica fed by a lagging relay still shows the rows as
    # planned ("not yet"), so the same plan is sent again; the leader refuses that copy
    # (the first one landed) and the commit was planned anew from the replica, which by
    # then showed the landed copy: ConflictError for a commit that was applied.
    with _switch_and_client(cluster, relays, front, namespace) as (writer, switch, client):
        mine = client.get(LogicalSwitch, switch.id)
        assert mine is not None
        relays.source.blackhole()
        # The update lands through the direct relay, its reply is lost, and that relay
        # refuses the client from then on: it reconnects to the lagging one.
        front.lose_next_reply(id_patterns(switch.id), then=Mode.REFUSE)
        healer = _heal_later(relays.source)
        try:
            updated = client.update(mine.replace(external_ids={"by": "client"}))
        finally:
            healer.cancel()
            relays.source.heal()
        assert front.stats.fired == 1, "the reply was not lost"
        stored = writer.get(LogicalSwitch, switch.id)
        assert stored is not None
        assert (updated.version, stored.version, stored.external_ids) == (2, 2, {"by": "client"}), "applied twice"


def test_a_transaction_a_relay_canceled_when_its_source_dropped_is_settled(
    cluster: OvsdbServer, relays: Relays, front: FaultProxy, namespace: str
) -> None:
    # Cause: a relay whose connection to its source drops answers the transactions it
    # forwarded with the JSON-RPC error "canceled", although the source may have committed
    # them; it was reported as ValidationError (not applied).
    with nbdb.connect(_url(*(m.address for m in cluster.members), namespace=namespace)) as writer:
        first = writer.create(LogicalSwitch(name=f"{namespace}-a"))
        second = writer.create(LogicalSwitch(name=f"{namespace}-b"))
        _shows(relays.lagging, namespace, second)
        with nbdb.connect(_url(relays.lagging.address, namespace=namespace)) as client:
            a, b = client.get(LogicalSwitch, first.id), client.get(LogicalSwitch, second.id)
            assert a is not None and b is not None
            # The relay forwards the transaction, the cluster commits it, the reply and the
            # update never reach the relay and its connection to the members is reset.
            relays.source.lose_next_reply(id_patterns(first.id), window=0.2)
            with client.transaction() as txn:
                txn.update(a.replace(external_ids={"moved": "-1"}))
                txn.update(b.replace(external_ids={"moved": "+1"}))
            assert relays.source.stats.fired == 1, "the relay's source connection was not cut"
        stored = [writer.get(LogicalSwitch, i) for i in (first.id, second.id)]
        assert [(s.version, s.external_ids) for s in stored if s] == [(2, {"moved": "-1"}), (2, {"moved": "+1"})]


def test_moving_to_a_lagging_relay_never_takes_the_replica_back(
    cluster: OvsdbServer, relays: Relays, front: FaultProxy, namespace: str
) -> None:
    # Cause: a client that lost its relay moved to the next one; a relay that cannot resume
    # the monitor sends its whole copy, and a lagging copy took back changes the client had
    # already read (versions going back, commits planned from old rows).
    with _switch_and_client(cluster, relays, front, namespace) as (writer, switch, client):
        cache = client.cache(LogicalSwitch)
        assert cache.wait_synced(30)
        relays.source.blackhole()
        for step in range(2):
            switch = writer.update(switch.replace(external_ids={"step": str(step)}))
        assert eventually(lambda: (client.get(LogicalSwitch, switch.id) or switch).version == switch.version, 20)
        front.refuse()
        front.cut()  # the client must move to the lagging relay, two versions behind
        read: list[int] = []
        cached: list[int] = []
        healer = _heal_later(relays.source, 2.0)
        until = time.monotonic() + 4.0
        while time.monotonic() < until:
            try:
                found = client.get(LogicalSwitch, switch.id)
            except nbdb.BackendUnavailableError:
                found = None
            if found is not None:
                read.append(found.version)
            held = cache.get(LogicalSwitch, switch.id)
            if held is not None:
                cached.append(held.version)
            time.sleep(0.05)
        healer.join()
        assert read and min(read) == switch.version, f"reads went back: {sorted(set(read))}"
        assert cached and min(cached) == switch.version, f"the cache went back: {sorted(set(cached))}"
        # Writes go on from what the client read.
        moved = client.update(client.get(LogicalSwitch, switch.id).replace(external_ids={"step": "mine"}))  # type: ignore[union-attr]
        assert moved.version == switch.version + 1


def test_a_counter_increment_whose_reply_was_lost_is_not_made_twice_through_a_lagging_relay(
    cluster: OvsdbServer, relays: Relays, front: FaultProxy, namespace: str
) -> None:
    # Cause: a counter is read with a select, which a relay answers from its copy; after a
    # lost reply, "the value is not reached" was taken for "not applied", and once the copy
    # caught up the loop incremented again: one call moved the counter twice.
    with nbdb.connect(_url(*(m.address for m in cluster.members), namespace=namespace)) as writer:
        assert writer.allocate_id("ids") == 1
        marker = writer.create(LogicalSwitch(name=f"{namespace}-marker"))
        _shows(relays.lagging, namespace, marker)  # the lagging relay has seen the counter at 1
        with nbdb.connect(_url(_address(front), relays.lagging.address, namespace=namespace)) as client:
            relays.source.blackhole()
            front.lose_next_reply(f"{namespace}/ids".encode(), then=Mode.REFUSE)
            healer = _heal_later(relays.source)
            try:
                value = client.allocate_id("ids")
            finally:
                healer.cancel()
                relays.source.heal()
            assert front.stats.fired == 1, "the reply was not lost"
        assert value == 2
        assert writer.allocate_id("ids") == 3, "the counter moved twice for one call"


def test_locks_are_refused_through_relays(relays: Relays, namespace: str) -> None:
    # OVSDB locks live in one server process and a relay does not forward them: clients of
    # two relays would both get the same lock.
    with nbdb.connect(_url(relays.direct.address, namespace=namespace)) as db:
        assert not db.capabilities.locks
        assert not db.capabilities.linearizable_reads
        with pytest.raises(nbdb.UnsupportedError, match="relay"):
            with db.lock("guard", timeout=5):
                pass


def test_a_lock_whose_connection_lands_on_a_relay_is_refused(
    cluster: OvsdbServer, relays: Relays, front: FaultProxy, namespace: str
) -> None:
    # Remotes that mix a relay and the members: the main connection reached the leader (the
    # relay was refused then), the lock's own connection reaches the relay, where a lock would
    # exclude only that relay's clients.
    front.refuse()
    members = (m.address for m in cluster.members)
    with nbdb.connect(_url(_address(front), *members, namespace=namespace)) as db:
        assert db.capabilities.locks
        front.heal()
        with pytest.raises(nbdb.UnsupportedError, match="relay"):
            with db.lock("guard", timeout=5):
                pass


RELAY_PROBE_MS = 2_000
"""The relay's inactivity probe: an echo to a client silent for 2 s, which it drops unless it hears from it
within 2 s more."""

SLOW_LINK_S = 1.5
"""One-way latency to the relay: a round trip takes 3 s, so the relay's echo is answered 1 s too late."""

CLIENT_PROBE_S = 2.5
"""The client's probe: an echo of its own every 1.25 s while it awaits a reply (2.75 s inside the relay's
4 s), and no drop of a relay silent for less than 5 s (its first reply comes after 3 s)."""


@pytest.mark.timeout(180)
def test_a_client_waiting_on_a_slow_relay_longer_than_its_probe_keeps_its_connection() -> None:
    """Through a relay that drops clients silent for 4 s, behind a link taking 3 s per round trip (so the relay's
    echo cannot be answered in time), a cache loads on one connection: the client echoes while it waits for each
    reply and takes in the state.

    The margins are seconds, not fractions of one: this test and its fault proxy share a process (and the GIL)
    with the client, which parses and applies the 2,000-row state meanwhile; on a loaded 2-core machine its
    sends were seen 2.7 s apart. With a 1 s relay probe behind a 2.4 s link (1 s of margin) the relay reset the
    client in CI; the client's keep-alive could then also be silent for a whole interval (fixed in
    ``RpcConnection._keep_alive``)."""
    with OvsdbServer(relays=1, inactivity_probe_ms=RELAY_PROBE_MS) as server:
        _load_through_a_slow_link(server)


def _load_through_a_slow_link(server: OvsdbServer) -> None:
    with nbdb.connect(_url(*(m.address for m in server.members), namespace="slow")) as writer:
        switch = writer.create(LogicalSwitch(name="slow-sw"))
        with writer.transaction() as txn:
            for i in range(2_000):
                txn.create(LogicalSwitchPort(switch=switch, name=f"slow-p{i}"))
    relay = server.relays[0]
    # On reaching its source a relay drops every client not told of database changes ("disconnecting (database
    # OVN_Northbound connected to storage)"): that was the silent client below once, before the harness waited for
    # it. The relay also holds the switch before the clocks below start.
    _shows(relay, "slow", switch)
    with FaultProxy([(relay.host, relay.port)]) as link:
        link.delay(SLOW_LINK_S)
        # The premise: the relay drops a client that stays silent that long.
        silent = socket.create_connection(link.addresses[0], timeout=10)
        try:
            assert silent.recv(4096), "the relay probes first"
            started = time.monotonic()
            silent.settimeout(15)
            while silent.recv(4096):
                pass
            assert time.monotonic() - started < 2 * RELAY_PROBE_MS / 1000 + 2 * SLOW_LINK_S + 3
        finally:
            silent.close()
        accepted = link.stats.accepted
        with nbdb.connect(_url(_address(link), namespace="slow", timeout=60) + f"&probe={CLIENT_PROBE_S}") as reader:
            cache = reader.cache(LogicalSwitchPort)
            assert cache.wait_synced(90) and len(cache) == 2_000
        assert link.stats.accepted == accepted + 1, "the relay dropped the client and it had to come back"
        assert link.stats.cut == 0


@pytest.mark.timeout(120)
def test_a_relay_is_ready_only_once_it_has_its_sources_schema(cluster: OvsdbServer) -> None:
    """A relay lists its database before its source sent the schema, then drops every client when it arrives:
    the harness hands a relay out only once ``_Server`` says the database is connected."""
    with FaultProxy([(m.host, m.port) for m in cluster.members]) as source:
        source.refuse()
        with pytest.raises(ServerTimeoutError):
            cluster.add_relay([f"{host}:{port}" for host, port in source.addresses], timeout=3)
        relay = cluster.relays[-1]
        try:
            assert relay.is_running(), "the relay waits for its source; it did not exit"
            source.heal()
            relay.wait_ready(30)
            # Ready now means connected: a client that arrives now is served, not dropped by a late schema.
            namespace = f"r{uuid.uuid4().hex[:8]}"
            with nbdb.connect(_url(*(m.address for m in cluster.members), namespace=namespace)) as writer:
                created = writer.create(LogicalSwitch(name="late-schema"))
            _shows(relay, namespace, created)
        finally:  # the module's other tests read through cluster.url, which names every relay
            cluster.relays.remove(relay)
            relay.process.kill()


RELAY_TIMEOUT = 3.0
"""The ``timeout`` of the client below: what its commit may take when the relays' source is down."""


@pytest.mark.timeout(180)
def test_a_commit_through_relays_whose_source_is_down_ends_within_its_timeout() -> None:
    """With the raft members stopped and the relays up, a relay holds a transaction it forwards and never answers.

    Cause: each level took a ``timeout`` of its own (the reply's wait, the settle's sync, the send again) and
    nothing checked the commit's deadline while the settle said "not landed yet" (the relay answers the sync
    from its copy): the same plan went out again and again, a whole ``timeout`` each, until the relay said it
    had lost its source (33 s at timeout=3; 50 s at 20 s). One deadline, the commit's, bounds them all now:
    it says "unknown" (or "not sent") within about ``timeout``.
    """
    namespace = f"r{uuid.uuid4().hex[:8]}"
    with OvsdbServer(members=3, relays=2) as server:
        with nbdb.connect(_url(*(m.address for m in server.members), namespace=namespace)) as writer:
            switch = writer.create(LogicalSwitch(name=f"{namespace}-sw"))
        for relay in server.relays:
            _shows(relay, namespace, switch)
        relayed = _url(*(r.address for r in server.relays), namespace=namespace, timeout=RELAY_TIMEOUT)
        with nbdb.connect(relayed) as client:
            mine = client.get(LogicalSwitch, switch.id)
            assert mine is not None
            for member in server.members:
                member.stop()
            assert all(r.is_running() for r in server.relays)
            started = time.monotonic()
            with pytest.raises((nbdb.CommitUnknownError, nbdb.BackendUnavailableError)) as failed:
                client.update(mine.replace(external_ids={"by": "client"}))
            took = time.monotonic() - started
        assert not isinstance(failed.value, nbdb.ConflictError)
        assert took <= 2 * RELAY_TIMEOUT, f"the commit took {took:.1f}s with timeout={RELAY_TIMEOUT:g}"
        server.restart_all()
        with nbdb.connect(_url(*(m.address for m in server.members), namespace=namespace)) as writer:
            stored = writer.get(LogicalSwitch, switch.id)
        assert stored is not None
        assert (stored.version, stored.external_ids) in ((1, {}), (2, {"by": "client"})), "applied twice"


@pytest.fixture(scope="module")
def relayed_standalone() -> Iterator[OvsdbServer]:
    """A standalone server and one relay of it (shared with any other holder of these options)."""
    with shared_server("ovsdb", relays=1) as server:
        yield server  # type: ignore[misc]


@contextlib.contextmanager
def _other_writer_waiting(server: OvsdbServer, ops: list[Any]) -> Iterator[Any]:
    """Another writer on the source sending ``ops`` (led by an OVSDB ``wait``, as a controller reacting to a
    change): applied in the source's next step once the wait holds. Yields the future of its reply."""
    sock = socket.create_connection((server.leader().host, server.leader().port), timeout=5)
    sock.setblocking(False)
    other = RpcConnection(sock, "other writer", lambda method, params: None, 5.0)
    try:
        done = other.request("transact", ["OVN_Northbound", *ops])
        other.call("echo", [], 5)  # answered after the transaction before it: its wait is in place
        yield done
    finally:
        other.close()


@contextlib.contextmanager
def _deleted_once_created(server: OvsdbServer, name: str) -> Iterator[Any]:
    """Another writer on the source, waiting for a switch named ``name`` (an OVSDB ``wait``, as a controller
    reacting to it) to delete it in the source's next step: yields the future of its reply."""
    where = [["name", "==", name]]
    waits_then_deletes = [
        {"op": "wait", "table": "Logical_Switch", "where": where, "columns": ["name"], "until": "!=", "rows": []},
        {"op": "delete", "table": "Logical_Switch", "where": where},
    ]
    with _other_writer_waiting(server, waits_then_deletes) as deleted:
        yield deleted


def test_a_commit_another_writer_undid_before_the_relay_passed_it_on_returns_at_once(
    relayed_standalone: OvsdbServer, namespace: str
) -> None:
    # Cause (issues 12, 14): a commit waited after its reply until the replica showed its rows. Another
    # writer waiting for the new row deletes it in the source's next step; the relay applies the insert,
    # the reply and the delete, then flushes its client's monitor once: insert and delete merged into no
    # update at all. The rows never showed the commit, and the writer waited its whole timeout (4 s here;
    # 20 s by default), every time.
    name = f"{namespace}-undone"
    with nbdb.connect(_url(relayed_standalone.relays[0].address, namespace=namespace, timeout=4)) as client:
        assert client.backend._driver.relay  # type: ignore[attr-defined]
        with _deleted_once_created(relayed_standalone, name) as deleted:
            started = time.monotonic()
            created = client.create(LogicalSwitch(name=name))
            took = time.monotonic() - started
            assert deleted.wait(5)[-1] == {"count": 1}, "the other writer did not delete the new row"
        assert took < 2, f"the commit waited {took:.1f}s for a row another writer had deleted already"
        with pytest.raises(nbdb.NotFoundError):
            client.get(LogicalSwitch, created.id)


def test_a_cache_waiting_for_a_commit_another_writer_undid_through_a_relay_does_not_call_it_lost(
    relayed_standalone: OvsdbServer, namespace: str
) -> None:
    # The commit above returned at once, stamped with the replica's revision after the barrier (its rows
    # never showed: the relay merged the insert and the other writer's delete into no update). A cache of
    # the same Database stood at exactly that revision without the object, which wait_for took as proof
    # the store went back in time and lost the write: it listed again and raised HistoryGoneError.
    # Nothing was lost: another writer deleted the row.
    name = f"{namespace}-undone-cache"
    with nbdb.connect(_url(relayed_standalone.relays[0].address, namespace=namespace, timeout=4)) as client:
        cache = client.cache(LogicalSwitch)
        with _deleted_once_created(relayed_standalone, name) as deleted:
            created = client.create(LogicalSwitch(name=name))
            assert deleted.wait(5)[-1] == {"count": 1}, "the other writer did not delete the new row"
        with pytest.raises(nbdb.NotFoundError):
            client.get(LogicalSwitch, created.id)
        # The cache is past the write (the row is gone): True, or at worst False at the timeout;
        # never "the store went back in time and lost that write".
        try:
            cache.wait_for(created, timeout=2)
        except nbdb.errors.HistoryGoneError as exc:
            pytest.fail(f"a write another writer deleted was reported lost: {exc}")


def test_a_watch_from_a_commit_another_writer_undid_through_a_relay_learns_it_is_gone(
    relayed_standalone: OvsdbServer, namespace: str
) -> None:
    # The relay merged the commit's insert and the other writer's delete into no update: nothing about
    # the row ever reaches this client. A watch from the commit's revision, as a controller resumes from
    # its own write, must learn the object is gone (its deletion, or HistoryGoneError: list again),
    # never go on as if it were there.
    name = f"{namespace}-undone-watch"
    with nbdb.connect(_url(relayed_standalone.relays[0].address, namespace=namespace, timeout=4)) as client:
        with _deleted_once_created(relayed_standalone, name) as deleted:
            created = client.create(LogicalSwitch(name=name))
            assert deleted.wait(5)[-1] == {"count": 1}, "the other writer did not delete the new row"
        assert created.nbdb_revision is not None
        assert not _watch_misses_the_gone_row(client, created.nbdb_revision, created.id, name), (
            "a watch from the commit's revision went on without telling its object was gone"
        )


def test_a_topic_watch_from_a_commit_another_writer_undid_through_a_relay_learns_it_is_gone(
    relayed_standalone: OvsdbServer, namespace: str
) -> None:
    # As above, for a watch of one topic: it reads a replica of its own, which the relay's merged update
    # never showed the commit either. Only the main replica recorded that the commit's rows came and went,
    # so a watch of the commit's topic from its revision went on without ever telling its object was gone.
    name, topic = f"{namespace}-undone-topic", f"{namespace}-t"
    with nbdb.connect(_url(relayed_standalone.relays[0].address, namespace=namespace, timeout=4)) as client:
        cache = client.cache(LogicalSwitch, topics=[topic])  # the topic's replica, followed before the commit
        assert cache.wait_synced(5)
        with _deleted_once_created(relayed_standalone, name) as deleted:
            created = client.create(LogicalSwitch(name=name, topic=topic))
            assert deleted.wait(5)[-1] == {"count": 1}, "the other writer did not delete the new row"
        assert created.nbdb_revision is not None
        assert not _watch_misses_the_gone_row(client, created.nbdb_revision, created.id, name, topic), (
            "a watch of the commit's topic from its revision went on without telling its object was gone"
        )


def _watch_misses_the_gone_row(
    client: nbdb.Database, since: Any, gone: Any, name: str, topic: str | None = None
) -> bool:
    """True when a watch from ``since`` went past a later change of this client without telling ``gone`` was gone
    (or, of an object created again, that it is back).

    Told is a change of it (its deletion; its creation or update), or HistoryGoneError (list again, and
    the object is as the list shows it). ``topic``: a watch of that topic alone (its own replica).
    """
    watch = client.watch(LogicalSwitch, since=since, topics=None if topic is None else [topic])
    try:
        marker = client.create(LogicalSwitch(name=f"{name}-marker", topic=topic))
        seen: list[Any] = []
        deadline = time.monotonic() + 5
        try:
            while time.monotonic() < deadline and not any(e.id == marker.id for e in seen):
                seen += watch.poll(0.5)
        except nbdb.errors.HistoryGoneError:
            return False
        assert any(e.id == marker.id for e in seen), "the watch did not deliver a later change"
        return not any(e.id == gone for e in seen)
    finally:
        watch.close()


def _partly_undone_watch_misses_the_deleted_row(server: OvsdbServer, client: nbdb.Database, name: str) -> bool:
    """One try: True when a watch from the commit's revision went past it without telling the row was gone."""
    with _deleted_once_created(server, name) as deleted:
        doomed, kept = LogicalSwitch(name=name), LogicalSwitch(name=f"{name}-kept")
        with client.transaction() as txn:
            txn.create(doomed)
            txn.create(kept)
        assert deleted.wait(5)[-1] == {"count": 1}, "the other writer did not delete the new row"
    assert txn.revision is not None
    # Where the commit showed at its reply, the delete comes in an update of its own, which may follow the
    # other writer's reply (seen once in about 85 runs): the client's copy shows it a moment later.
    assert eventually(lambda: _gone(client, doomed.id), 5), "the client never showed the other writer's delete"
    return _watch_misses_the_gone_row(client, txn.revision, doomed.id, name)


def _gone(client: nbdb.Database, id: Any) -> bool:
    try:
        client.get(LogicalSwitch, id)
    except nbdb.NotFoundError:
        return True
    return False


def test_a_watch_from_a_commit_partly_undone_through_a_relay_learns_the_undone_row_is_gone(
    relayed_standalone: OvsdbServer, namespace: str
) -> None:
    # A commit of two switches; another writer deletes one of them in the source's next step. When the relay
    # merges the commit's update and the delete (about every other try), the replica shows the kept switch
    # at revision R (with the commit's token) and never the deleted one: shown_at finds R, the result is
    # stamped there and no merged catch-up is recorded, so a watch from R never hears of the deleted switch
    # whose write the result reports. Several tries, so that the merge happens in at least one.
    with nbdb.connect(_url(relayed_standalone.relays[0].address, namespace=namespace, timeout=4)) as client:
        for attempt in range(8):
            missed = _partly_undone_watch_misses_the_deleted_row(
                relayed_standalone, client, f"{namespace}-half{attempt}"
            )
            assert not missed, (
                f"try {attempt}: a watch from the commit's revision went on without telling one of its objects was gone"
            )


def test_a_cache_waiting_for_a_row_of_a_commit_partly_undone_through_a_relay_does_not_call_it_lost(
    relayed_standalone: OvsdbServer, namespace: str
) -> None:
    # As above: the relay merged the commit and the other writer's delete of one of its two switches, and the
    # result is stamped at the revision that showed only the kept one. A cache standing there without the
    # deleted switch takes its write for lost (the store "went back in time": HistoryGoneError), although
    # another writer deleted it. Several tries, so that the merge happens in at least one.
    with nbdb.connect(_url(relayed_standalone.relays[0].address, namespace=namespace, timeout=4)) as client:
        cache = client.cache(LogicalSwitch)
        for attempt in range(8):
            name = f"{namespace}-halfc{attempt}"
            with _deleted_once_created(relayed_standalone, name) as deleted:
                with client.transaction() as txn:
                    txn.create(LogicalSwitch(name=name))
                    txn.create(LogicalSwitch(name=f"{name}-kept"))
                assert deleted.wait(5)[-1] == {"count": 1}, "the other writer did not delete the new row"
            doomed = txn.results[0]
            assert doomed is not None
            try:
                cache.wait_for(doomed, timeout=2)
            except nbdb.errors.HistoryGoneError as exc:
                pytest.fail(f"try {attempt}: a write another writer deleted was reported lost: {exc}")


def _recreated_watch_misses_it(
    server: OvsdbServer, client: nbdb.Database, cache: nbdb.Cache, name: str, renamed: bool = False
) -> bool:
    """One try: True when a watch from a delete's revision went past it without telling its row was created again
    (as it was, or ``renamed``). A cache waiting for that revision must stand past it holding the row, never
    call the write lost."""
    switch = client.create(LogicalSwitch(name=name))
    where = [["_uuid", "==", ["uuid", str(switch.id)]]]
    with _other_writer_waiting(server, [{"op": "select", "table": "Logical_Switch", "where": where}]) as selected:
        (found,) = selected.wait(5)[0]["rows"]
    # The row as it was, under its own _uuid (OVSDB lets an insert name it), once the delete is in.
    row = {column: value for column, value in found.items() if not column.startswith("_")}
    again = f"{name}-again" if renamed else name
    waits_then_creates = [
        {"op": "wait", "table": "Logical_Switch", "where": where, "columns": ["name"], "until": "==", "rows": []},
        {"op": "insert", "table": "Logical_Switch", "uuid": str(switch.id), "row": {**row, "name": again}},
    ]
    with _other_writer_waiting(server, waits_then_creates) as created:
        revision = client.delete(switch)
        assert created.wait(5)[-1] == {"uuid": ["uuid", str(switch.id)]}, "the other writer did not create it again"
    assert revision is not None
    # (Where the delete showed at its reply, the creation comes in an update of its own, maybe a moment later.)
    assert eventually(lambda: not _gone(client, switch.id) and client.get(LogicalSwitch, switch.id).name == again, 5)
    try:
        assert cache.wait_for(revision, timeout=2), "a cache never reached the delete's revision"
    except nbdb.errors.HistoryGoneError as exc:
        pytest.fail(f"a delete another writer undid was reported lost: {exc}")

    def held() -> bool:
        copy = cache.get(LogicalSwitch, switch.id)
        return copy is not None and copy.name == again

    assert eventually(held, 5), "a cache past the delete does not hold the row created again"
    return _watch_misses_the_gone_row(client, revision, switch.id, name)


@pytest.mark.parametrize("renamed", [False, True], ids=["as-it-was", "renamed"])
def test_a_watch_from_a_delete_another_writer_undid_through_a_relay_learns_the_row_is_back(
    relayed_standalone: OvsdbServer, namespace: str, renamed: bool
) -> None:
    # A commit that only deletes a switch; another writer waiting for it to go creates it again under the same
    # _uuid (OVSDB lets an insert name it), as it was or renamed, in the source's next step. The relay merges
    # the delete and the creation into no update (or a change of name): the replica never shows the commit, and
    # no deletion in its history does. Its result carried the replica's revision after the barrier, so a watch
    # from it (a controller resuming from its own delete, which takes the switch for gone) never heard that the
    # switch is back. The relay merged them in every try seen (12 of 12); three, should one flush between.
    with nbdb.connect(_url(relayed_standalone.relays[0].address, namespace=namespace, timeout=4)) as client:
        cache = client.cache(LogicalSwitch)
        for attempt in range(3):
            name = f"{namespace}-again{attempt}"
            missed = _recreated_watch_misses_it(relayed_standalone, client, cache, name, renamed)
            assert not missed, f"try {attempt}: a watch from the delete's revision never told its row was back"
