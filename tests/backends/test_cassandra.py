"""Cassandra backend: what the conformance kit cannot check — URLs, auth, restarts, contention,
skewed writer clocks, stalled and crashed commits, history expiry, cross-topic references.

The kit itself runs with ``pytest src/nbdb/conformance --nbdb-url=spawn:cassandra``.
One Cassandra node is shared by the module (``cassandra_server``); the restart, auth and TLS
tests start private ones. ``NBDB_CASSANDRA_URL=cassandra://...`` runs the shared-server tests
against an existing cluster instead (for instance ``nbdb servers`` with ``members=3``).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

import nbdb
from nbdb.conformance.kit import KitParent, check_stale_copies_refused
from nbdb.events import ChangeEvent, EventKind
from nbdb.families import rules
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.testing import fixtures, require_server
from nbdb.testing.cassandra import CassandraServer
from nbdb.testing.databases import databases
from nbdb.testing.ports import free_port
from nbdb.testing.tls import TlsFiles, make_tls_files

pytest.importorskip("cassandra")

from cassandra.cluster import EXEC_PROFILE_DEFAULT
from cassandra.policies import NoSpeculativeExecutionPolicy

from nbdb.backends.cassandra import CassandraBackend, CqlStore
from nbdb.families.widecolumn import WideColumnBackend, layout
from nbdb.families.widecolumn.primitives import Applied, ForwardingStore, OutcomeUnknown, Write
from nbdb.families.widecolumn.sequencer import CommitQueue, RevisionSequencer

cassandra_server = fixtures.cassandra_server  # one node shared by the module's tests
cassandra_url = fixtures.cassandra_url
server_factory = fixtures.server_factory


def eventually(predicate: Callable[[], bool], timeout: float = 20.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def ns() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def url(cassandra_url: str) -> str:
    """The shared test node, or the cluster named by ``$NBDB_CASSANDRA_URL`` (e.g. a 3-node one)."""
    return cassandra_url


@pytest.fixture
def open_db(url: str) -> Iterator[Callable[..., nbdb.Database]]:
    """Databases on the shared server, in one namespace private to the test (unless given)."""
    with databases(url, ns()) as factory:
        yield factory


def backend(db: nbdb.Database) -> WideColumnBackend:
    assert isinstance(db.backend, WideColumnBackend)
    return db.backend


def session(db: nbdb.Database) -> Any:
    """The cassandra-driver session under a database (for schema changes a test plays)."""
    store = backend(db).store
    assert isinstance(store, CqlStore)
    return store.session


def drain(watch: nbdb.Watch, until: int, timeout: float = 30.0) -> list[ChangeEvent[Any]]:
    """Every event until the watch's resume point reaches ``until``."""
    out: list[ChangeEvent[Any]] = []
    deadline = time.monotonic() + timeout
    while watch.revision < until:
        assert time.monotonic() < deadline, f"watch stuck at {watch.revision} < {until}"
        out += watch.poll(0.5)
    return out


def replay(events: list[ChangeEvent[Any]]) -> dict[uuid.UUID, Any]:
    """Apply events to an empty state, checking each object's versions arrive in order, once."""
    state: dict[uuid.UUID, Any] = {}
    for event in events:
        previous = state.get(event.id)
        if event.kind is EventKind.DELETED:
            assert previous is not None and event.old == previous, f"bad delete of {event.id}"
            del state[event.id]
            continue
        assert event.new is not None
        if previous is None:
            assert event.kind is EventKind.CREATED and event.new.version == 1, f"{event.id} starts mid-way"
        else:
            assert event.new.version == previous.version + 1, f"{event.id}: {previous.version} -> {event.new.version}"
            assert event.old == previous
        state[event.id] = event.new
    return state


# ---------------------------------------------------------------------------- URL grammar (no server)


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "query",
    [
        "bogus=1",
        "consistency=ONE",
        "serial_consistency=QUORUM",
        "rf=3&replication=dc1:3",
        "replication=dc1",
        "rf=0",
        "history=x",
        "ca=/tmp/ca.pem",
        "tls=maybe",
    ],
)
def test_bad_url_options_are_validation_errors(query: str) -> None:
    with pytest.raises(nbdb.ValidationError):
        CassandraBackend.from_url(f"cassandra://127.0.0.1:{free_port()}/nbdb?{query}")


@pytest.mark.timeout(10)
def test_bad_keyspace_name_is_a_validation_error() -> None:
    with pytest.raises(nbdb.ValidationError):
        CassandraBackend.from_url(f"cassandra://127.0.0.1:{free_port()}/no-dashes")


@pytest.mark.timeout(30)
def test_unreachable_server_fails_fast_with_backend_unavailable() -> None:
    began = time.monotonic()
    with pytest.raises(nbdb.BackendUnavailableError):
        nbdb.connect(f"cassandra://127.0.0.1:{free_port()}/nbdb?connect_timeout=2")
    assert time.monotonic() - began < 20


def test_serial_reads_are_never_sent_to_a_second_coordinator(open_db: Callable[..., nbdb.Database]) -> None:
    # A serial read is a Paxos round: sent again to another coordinator it would compete with the first one
    # and with the partition's compare-and-sets (docs/backends/cassandra.md, "Server settings for a node loss").
    db = open_db()
    store = backend(db).store
    assert isinstance(store, CqlStore) and store.settings.serial_profile is not None
    profiles = store.session.cluster.profile_manager.profiles
    serial, default = profiles[store.settings.serial_profile], profiles[EXEC_PROFILE_DEFAULT]
    assert isinstance(serial.speculative_execution_policy, NoSpeculativeExecutionPolicy)
    assert not isinstance(default.speculative_execution_policy, NoSpeculativeExecutionPolicy)
    assert serial.load_balancing_policy is default.load_balancing_policy  # the same coordinator as the writes
    db.create(LogicalSwitch(name="serial", topic="t"))
    rows = store.select(layout.Q_LAST, (backend(db).partitions.ns, "t"), serial=True)
    assert rows and rows[0].last_rev >= 1


# ---------------------------------------------------------------------------- partitions and references


@pytest.mark.timeout(60)
def test_transaction_in_one_topic_is_atomic_and_wider_is_refused(open_db: Callable[..., nbdb.Database]) -> None:
    db = open_db()
    assert db.capabilities.transactions is nbdb.Atomicity.SINGLE_PARTITION
    switch = LogicalSwitch(name="sw", topic="tenant-a")
    with db.transaction() as txn:
        txn.create(switch)
        for i in range(3):
            txn.create(LogicalSwitchPort(switch=switch.id, name=f"p{i}", topic="tenant-a"))
    assert len(db.list(LogicalSwitchPort, topic="tenant-a")) == 3
    with db.watch(LogicalSwitchPort, since=0) as watch:
        events = drain(watch, txn.revision or 0)
    assert {e.revision for e in events} == {txn.revision}, "one commit, one revision"

    stored = db.get(LogicalSwitch, switch.id)
    with pytest.raises(nbdb.UnsupportedError):
        with db.transaction() as wide:
            wide.update(stored.replace(name="renamed"))
            wide.create(LogicalSwitch(name="elsewhere", topic="tenant-b"))
    assert db.get(LogicalSwitch, switch.id).name == "sw"
    assert db.list(LogicalSwitch, topic="tenant-b") == []
    # A cascade inside one topic is one partition: it works.
    db.delete(stored, cascade=True)
    assert db.list(LogicalSwitchPort, topic="tenant-a") == []


@pytest.mark.timeout(60)
def test_namespaces_are_isolated(open_db: Callable[..., nbdb.Database]) -> None:
    a, b = open_db(namespace=ns()), open_db(namespace=ns())
    shared_id = uuid.uuid4()
    a.create(LogicalSwitch(id=shared_id, name="in-a"))
    b.create(LogicalSwitch(id=shared_id, name="in-b"))
    assert a.get(LogicalSwitch, shared_id).name == "in-a"
    assert b.get(LogicalSwitch, shared_id).name == "in-b"
    assert [s.name for s in a.list(LogicalSwitch)] == ["in-a"]
    assert a.allocate_id("vni") == 1 and b.allocate_id("vni") == 1


@pytest.mark.timeout(60)
def test_same_id_in_another_topic_is_a_conflict(open_db: Callable[..., nbdb.Database]) -> None:
    db = open_db()
    first = db.create(LogicalSwitch(name="a", topic="t1"))
    with pytest.raises(nbdb.ConflictError):
        db.create(LogicalSwitch(id=first.id, name="b", topic="t2"))
    with pytest.raises(nbdb.ValidationError):
        db.update(first.replace(topic="t2"))


@pytest.mark.timeout(60)
def test_cross_topic_reference_protects_its_target(open_db: Callable[..., nbdb.Database]) -> None:
    db = open_db()
    switch = db.create(LogicalSwitch(name="sw", topic="infra"))
    port = db.create(LogicalSwitchPort(switch=switch.id, name="p", topic="tenant"))
    assert db.backend.referrers("LogicalSwitch", switch.id) == [("LogicalSwitchPort", port.id)]
    with pytest.raises(nbdb.ReferenceError):
        db.delete(switch)
    with pytest.raises(nbdb.UnsupportedError):
        db.delete(switch, cascade=True)  # the cascade would span two partitions
    moved = db.update(port.replace(switch=db.create(LogicalSwitch(name="sw2", topic="infra")).id))
    assert db.backend.referrers("LogicalSwitch", switch.id) == []
    db.delete(switch)  # the update released the old reference
    db.delete(moved)
    with pytest.raises(nbdb.ReferenceError):
        db.create(LogicalSwitchPort(switch=switch.id, name="dangling", topic="tenant"))


@pytest.mark.timeout(60)
def test_abandoned_reference_reservation_is_cleared_by_a_delete(open_db: Callable[..., nbdb.Database]) -> None:
    db = open_db()
    wc = backend(db)
    switch = db.create(LogicalSwitch(name="sw", topic="infra"))
    ghost = f"LogicalSwitchPort/{uuid.uuid4()}"
    # A writer reserved a reference from topic "tenant" and died before committing its object:
    reservation = f"{uuid.uuid4().hex}:tenant"
    key = (wc.partitions.ns, "infra", layout.OBJECT, 0, "LogicalSwitch", switch.id)
    assert wc.store.apply([(layout.W_REF_RESERVE, (*key, {ghost: reservation}, 0, None))]).applied
    assert db.backend.referrers("LogicalSwitch", switch.id) == []  # unverified: not a referrer
    db.delete(switch)  # seals "tenant", sees the source never committed, clears the entry
    with pytest.raises(nbdb.NotFoundError):
        db.get(LogicalSwitch, switch.id)


@pytest.mark.timeout(60)
def test_delete_racing_an_in_flight_cross_topic_reference_never_dangles(
    open_db: Callable[..., nbdb.Database],
) -> None:
    writer_db, deleter_db = open_db(), open_db()
    switch = deleter_db.create(LogicalSwitch(name="sw", topic="infra"))
    entered, release = threading.Event(), threading.Event()

    def stall(revision: int) -> None:
        if not entered.is_set():
            entered.set()
            release.wait(10)  # reserved on the switch, revision taken, batch not sent yet

    backend(writer_db).before_commit = stall
    outcome: list[Any] = []

    def create_port() -> None:
        try:
            outcome.append(writer_db.create(LogicalSwitchPort(switch=switch.id, name="p", topic="tenant")))
        except nbdb.NbdbError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=create_port)
    thread.start()
    assert entered.wait(10)
    deleter_db.delete(switch)  # the port's commit is in flight: the delete stops it and wins
    release.set()
    thread.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], nbdb.ReferenceError), outcome
    assert deleter_db.list(LogicalSwitchPort, topic="tenant") == []


# ---------------------------------------------------------------------------- contention


@pytest.mark.timeout(120)
def test_concurrent_writers_on_one_object_lose_no_update(open_db: Callable[..., nbdb.Database]) -> None:
    writers, increments = 4, 8
    dbs = [open_db() for _ in range(writers)]
    counter = dbs[0].create(LogicalSwitch(name="counter", external_ids={"n": "0"}))
    watch = dbs[0].watch(LogicalSwitch, since=0)
    failures: list[BaseException] = []

    def work(db: nbdb.Database) -> None:
        try:
            for _ in range(increments):
                while True:
                    current = db.get(LogicalSwitch, counter.id)
                    n = int(current.external_ids["n"]) + 1
                    try:
                        db.update(current.replace(external_ids={"n": str(n)}))
                        break
                    except nbdb.ConflictError:
                        continue
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(db,)) for db in dbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(100)
    assert failures == []
    final = dbs[0].get(LogicalSwitch, counter.id)
    assert final.external_ids["n"] == str(writers * increments)
    assert final.version == writers * increments + 1
    events = drain(watch, dbs[0].backend.current_revision())
    watch.close()
    assert [e.new.version for e in events if e.new] == list(range(1, final.version + 1))
    assert replay(events) == {final.id: final}


# ---------------------------------------------------------------------------- the change feed


@pytest.mark.timeout(180)
def test_writers_with_skewed_clocks_feed_one_watcher_without_loss(open_db: Callable[..., nbdb.Database]) -> None:
    """Writers whose clocks are an hour apart; one watcher of everything and one that resumes."""
    offsets = [-3600.0, 0.0, 3600.0]
    writers = [open_db(clock=lambda o=o: time.time() + o) for o in offsets]
    watcher_db = open_db(clock=lambda: time.time() - 7200.0)
    start = watcher_db.list(LogicalSwitch).revision
    watch = watcher_db.watch([LogicalSwitch, LogicalSwitchPort], since=start)
    topics = [None, "t1", "t2"]
    failures: list[BaseException] = []
    collected: list[ChangeEvent[Any]] = []
    resumed_from: list[int] = []

    def write(db: nbdb.Database, index: int) -> None:
        try:
            for i in range(12):
                topic = topics[(index + i) % 3]
                sw = db.create(LogicalSwitch(name=f"w{index}-{i}", topic=topic))
                port = db.create(LogicalSwitchPort(switch=sw.id, name=f"p{index}-{i}", topic=topic))
                sw = db.update(sw.replace(name=f"w{index}-{i}-renamed"))
                if i % 3 == 0:
                    db.delete(port)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(db, i)) for i, db in enumerate(writers)]
    for t in threads:
        t.start()
    # Stop half-way and resume from the watch's revision with a new watch.
    while len(collected) < 40 and any(t.is_alive() for t in threads):
        collected += watch.poll(0.5)
    resumed_from.append(watch.revision)
    watch.close()
    watch = watcher_db.watch([LogicalSwitch, LogicalSwitchPort], since=resumed_from[0])
    for t in threads:
        t.join(150)
    assert failures == []
    end = watcher_db.backend.current_revision()
    collected += drain(watch, end)
    watch.close()

    revisions = [e.revision for e in collected]
    keys = [(e.revision, e.id) for e in collected]
    assert len(keys) == len(set(keys)), "a change was delivered twice"
    assert revisions == sorted(revisions), "the feed is in revision order"
    final = {o.id: o for o in watcher_db.list(LogicalSwitch)}
    final.update({o.id: o for o in watcher_db.list(LogicalSwitchPort)})
    assert replay(collected) == final
    assert len(final) == 3 * 12 + 3 * 12 - 3 * 4


@pytest.mark.timeout(120)
def test_a_stalled_commit_is_waited_for_then_sealed_never_skipped(open_db: Callable[..., nbdb.Database]) -> None:
    """A commit that lands late (behind revisions already read) is still delivered, once."""
    settle = 0.8
    slow_db, fast_db, watcher_db = open_db(settle=settle), open_db(settle=settle), open_db(settle=settle)
    watch = watcher_db.watch(LogicalSwitch)
    calls: list[int] = []
    release = threading.Event()

    def stall(revision: int) -> None:
        calls.append(revision)
        if len(calls) == 1:
            release.wait(10)  # hold the first attempt past the settle window

    backend(slow_db).before_commit = stall
    result: list[Any] = []
    slow = threading.Thread(target=lambda: result.append(slow_db.create(LogicalSwitch(name="slow", topic="t"))))
    slow.start()
    assert eventually(lambda: len(calls) == 1)
    fast = [fast_db.create(LogicalSwitch(name=f"fast{i}", topic="u")) for i in range(3)]
    # Nothing is delivered past a commit in flight, so the resume point stays exact...
    assert watch.poll(settle / 3) == []
    resume_point = watch.revision
    assert resume_point < calls[0]
    # ...until the settle window passes: the watcher seals the stalled commit's partition.
    events: list[ChangeEvent[Any]] = []
    deadline = time.monotonic() + 15
    while len(events) < 3 and time.monotonic() < deadline:
        events += watch.poll(0.2)
    assert [e.id for e in events] == [f.id for f in fast]
    assert watch.revision > calls[0]
    release.set()
    slow.join(30)
    assert result, "the stalled writer retried with a new revision and succeeded"
    assert len(calls) == 2 and calls[1] > calls[0]
    end = watcher_db.backend.current_revision()
    events += drain(watch, end)
    watch.close()
    assert [e.id for e in events] == [f.id for f in fast] + [result[0].id]
    assert [e.revision for e in events] == sorted(e.revision for e in events)
    with watcher_db.watch(LogicalSwitch, since=resume_point) as again:
        assert [e.id for e in drain(again, end)] == [e.id for e in events]


@pytest.mark.timeout(120)
def test_a_late_commit_inside_the_settle_window_keeps_its_revision(open_db: Callable[..., nbdb.Database]) -> None:
    slow_db, fast_db, watcher_db = open_db(settle=5), open_db(settle=5), open_db(settle=5)
    watch = watcher_db.watch(LogicalSwitch)
    calls: list[int] = []
    release = threading.Event()

    def stall(revision: int) -> None:
        calls.append(revision)
        release.wait(10)

    backend(slow_db).before_commit = stall
    result: list[Any] = []
    slow = threading.Thread(target=lambda: result.append(slow_db.create(LogicalSwitch(name="late", topic="t"))))
    slow.start()
    assert eventually(lambda: len(calls) == 1)
    fast = fast_db.create(LogicalSwitch(name="early", topic="t2"))
    assert watch.poll(1.0) == [], "a later revision is not delivered before an earlier one in flight"
    release.set()  # lands now, late, with the lower revision it took first
    slow.join(30)
    assert len(calls) == 1 and result
    events = drain(watch, watcher_db.backend.current_revision())
    watch.close()
    assert [e.id for e in events] == [result[0].id, fast.id]
    assert events[0].revision == calls[0] < events[1].revision


@pytest.mark.timeout(120)
def test_a_writer_that_dies_mid_commit_does_not_stall_watchers(open_db: Callable[..., nbdb.Database]) -> None:
    doomed_db, db = open_db(settle=0.5), open_db(settle=0.5)

    def crash(revision: int) -> None:
        raise RuntimeError("process died between taking a revision and committing")

    backend(doomed_db).before_commit = crash
    watch = db.watch(LogicalSwitch)
    with pytest.raises(RuntimeError):
        doomed_db.create(LogicalSwitch(name="never", topic="t"))
    after = db.create(LogicalSwitch(name="after", topic="t"))
    events = drain(watch, db.backend.current_revision(), timeout=15)
    watch.close()
    assert [e.id for e in events] == [after.id]


@pytest.mark.timeout(120)
def test_list_revision_is_an_exact_cut_under_concurrent_writes(open_db: Callable[..., nbdb.Database]) -> None:
    writer, reader = open_db(), open_db()
    objs = [writer.create(LogicalSwitch(name=f"s{i}", topic="hot")) for i in range(5)]
    stop = threading.Event()
    failures: list[BaseException] = []

    def churn() -> None:
        i = 0
        try:
            while not stop.is_set():
                k = i % len(objs)
                objs[k] = writer.update(objs[k].replace(name=f"s{k}-{i}"))
                i += 1
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        for _ in range(4):
            listed = reader.list(LogicalSwitch, topic="hot")
            state = {o.id: o for o in listed}
            time.sleep(0.2)
            end = reader.backend.current_revision()
            with reader.watch(LogicalSwitch, topics=["hot"], since=listed.revision) as watch:
                events = drain(watch, end)
            for event in events:
                assert event.new is not None and event.old == state[event.id], "gap or overlap at the cut"
                state[event.id] = event.new
    finally:
        stop.set()
        thread.join(30)
    assert failures == []


@pytest.mark.timeout(120)
def test_revisions_cross_sequencer_buckets(open_db: Callable[..., nbdb.Database], monkeypatch: Any) -> None:
    monkeypatch.setattr(RevisionSequencer, "bucket_size", 4)
    db, other = open_db(), open_db()
    watch = db.watch(LogicalSwitch, since=0)
    created = [(db if i % 2 else other).create(LogicalSwitch(name=f"s{i}", topic=f"t{i % 3}")) for i in range(11)]
    assert db.backend.current_revision() == other.backend.current_revision() == 11
    events = drain(watch, 11)
    watch.close()
    assert [e.id for e in events] == [c.id for c in created]
    assert [e.revision for e in events] == list(range(1, 12))
    fresh = open_db()  # starts from the bucket hint, not from bucket 0
    assert fresh.backend.current_revision() == 11 and backend(fresh).sequencer.bucket_hint() == 2
    with fresh.cache(LogicalSwitch) as cache:
        assert cache.wait_synced(15) and len(cache) == 11


class _HeadRounds(ForwardingStore):
    """Counts the compare-and-sets on the sequencer's head (each a Paxos round at the row's coordinator)."""

    def __init__(self, real: Any) -> None:
        super().__init__(real)
        self.rounds = 0

    def apply(self, writes: Sequence[tuple[Write, Sequence[Any]]]) -> Applied:
        self.rounds += any(write is layout.W_HEAD for write, _ in writes)
        return self.real.apply(writes)


@pytest.mark.timeout(60)
def test_a_process_that_lost_a_race_for_revisions_does_not_send_a_stale_head(
    open_db: Callable[..., nbdb.Database],
) -> None:
    """Two processes taking revisions in turns (each its own commit queue): once one has lost a race, the head
    it took last is stale whenever the other took since, and a compare-and-set on it is a round lost for sure."""
    shared = backend(open_db())
    stores = [_HeadRounds(shared.store) for _ in range(2)]
    one, two = (RevisionSequencer(store, shared.partitions, shared.options, CommitQueue()) for store in stores)
    taken = []
    for turn in range(6):
        sequencer, store = (one, stores[0]) if turn % 2 == 0 else (two, stores[1])
        before = store.rounds
        taken.append(sequencer.allocate("p", frozenset({"t"})))
        if turn >= 4:  # each has lost a race to the other by now (turns 2 and 3)
            assert store.rounds - before == 1, f"turn {turn}: {store.rounds - before} rounds for one revision"
    assert taken == list(range(1, 7))


@pytest.mark.timeout(60)
def test_expired_history_means_history_gone_and_the_cache_relists(open_db: Callable[..., nbdb.Database]) -> None:
    db = open_db(history=1)
    start = db.list(LogicalSwitch).revision
    first = db.create(LogicalSwitch(name="a"))
    time.sleep(2.5)  # TTLs count whole seconds
    db.create(LogicalSwitch(name="b"))
    with db.watch(LogicalSwitch, since=start) as watch:
        with pytest.raises(nbdb.HistoryGoneError):
            for _ in range(20):
                watch.poll(0.5)
    with db.cache(LogicalSwitch) as cache:
        assert cache.wait_synced(15)
        assert cache.get(LogicalSwitch, first.id) is not None and len(cache) == 2


# ---------------------------------------------------------------------------- servers of their own


@pytest.mark.timeout(300)
def test_node_restart_under_a_running_cache(server_factory: Callable[..., Any]) -> None:
    server = server_factory("cassandra", durable=True)
    url = f"{server.url}?timeout=5&connect_timeout=3"
    namespace = ns()
    with nbdb.connect(url, namespace=namespace) as db, nbdb.connect(url, namespace=namespace) as writer:
        before = [writer.create(LogicalSwitch(name=f"s{i}")) for i in range(5)]
        events: list[ChangeEvent[Any]] = []
        cache = db.cache(LogicalSwitch, on_change=events.append)
        assert cache.wait_synced(30)
        server.members[0].stop()
        began = time.monotonic()
        with pytest.raises(nbdb.BackendUnavailableError):
            writer.create(LogicalSwitch(name="while-down"))
        assert time.monotonic() - began < 30, "a write to a dead server must fail, not hang"
        server.members[0].restart()
        assert eventually(lambda: _writes(writer), timeout=90), "the client did not reconnect"
        after = writer.update(before[0].replace(name="renamed"))
        born = writer.create(LogicalSwitch(name="born"))
        writer.delete(before[1])
        expected = {o.id: o for o in writer.list(LogicalSwitch)}
        assert eventually(lambda: {o.id: o for o in cache.list(LogicalSwitch)} == expected, timeout=60)
        assert cache.get(LogicalSwitch, after.id) == after and cache.get(LogicalSwitch, born.id) == born
        live = [(e.revision, e.id) for e in events if not e.synthetic]
        assert len(live) == len(set(live)), "no change delivered twice"
        cache.close()


def _writes(db: nbdb.Database) -> bool:
    try:
        db.create(LogicalSwitch(name="probe"))
        return True
    except nbdb.BackendUnavailableError:
        return False


@pytest.mark.timeout(300)
def test_password_authentication(server_factory: Callable[..., Any]) -> None:
    server = server_factory("cassandra", auth=True)
    with nbdb.connect(server.url, namespace=ns()) as db:
        assert db.create(LogicalSwitch(name="authed")).version == 1
    bad = server.url.replace("cassandra:cassandra@", "cassandra:wrong@")
    with pytest.raises(nbdb.AuthError) as caught:
        nbdb.connect(bad)
    assert "wrong" not in str(caught.value)
    anonymous = server.url.replace("cassandra:cassandra@", "")
    with pytest.raises(nbdb.AuthError):
        nbdb.connect(anonymous)


@pytest.mark.timeout(120)
def test_keyspace_is_created_and_its_tables_evolved(cassandra_server: CassandraServer) -> None:
    keyspace = f"ks_{uuid.uuid4().hex[:8]}"
    url = cassandra_server.url.rsplit("/", 1)[0] + f"/{keyspace}?rf=1"
    with nbdb.connect(url, namespace="a") as db:
        assert db.allocate_id("n") == 1
        made = db.create(LogicalSwitch(name="before"))
        driver = session(db)
        driver.execute(f"ALTER TABLE {keyspace}.nbdb_meta DROP owner", timeout=60)
        driver.execute(f"ALTER TABLE {keyspace}.nbdb_data DROP (wrev, old_wrev)", timeout=60)
    try:
        with nbdb.connect(url, namespace="a") as db:  # an older schema: nbdb adds the columns back
            assert db.allocate_id("n") == 2
            # A row written without the revision column: read, compared by its version, stamped once written.
            old = db.get(LogicalSwitch, made.id)
            assert old == made
            updated = db.update(old.replace(name="after"))
            assert updated.version == 2
            assert db.update(db.get(LogicalSwitch, made.id).replace(name="again")).version == 3
    finally:
        with nbdb.connect(cassandra_server.url, namespace="x") as db:
            session(db).execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)


@pytest.mark.timeout(60)
def test_a_stale_copy_of_a_deleted_object_is_refused_and_an_older_nbdbs_row_compares_its_version(
    open_db: Callable[..., nbdb.Database],
) -> None:
    """ABA: an id deleted and created again starts at version 1 again; the row's ``wrev`` (the revision
    that wrote it) tells the copies apart, in the commit's LWT. A row an older nbdb wrote has none."""
    db = open_db()
    again = check_stale_copies_refused(db)
    # As an older nbdb leaves a row: no wrev. Read, it names no revision and writes by its version alone;
    # a copy that names one is not of it (another writer created the id again since).
    store = backend(db).store
    assert isinstance(store, CqlStore)
    session(db).execute(
        f"UPDATE {store.settings.keyspace}.nbdb_data SET wrev = null "
        "WHERE ns = %s AND topic = %s AND kind = 0 AND rev = 0 AND tbl = %s AND id = %s",
        (backend(db).partitions.ns, rules.topic_part(again.topic), KitParent.nbdb_table, again.id),
        timeout=30,
    )
    old = db.get(KitParent, again.id)
    with pytest.raises(nbdb.ConflictError):
        db.update(again.replace(name="named"))
    moved = db.update(old.replace(name="old row"))
    assert moved.version == 2
    assert db.update(db.get(KitParent, again.id).replace(name="stamped again")).version == 3
    with pytest.raises(nbdb.ConflictError):
        db.delete(moved)  # version 2, stale
    db.delete(db.get(KitParent, again.id))


@pytest.mark.timeout(60)
def test_a_raw_write_names_the_revision_that_wrote_it(open_db: Callable[..., nbdb.Database]) -> None:
    """``write_raw`` plays another writer's write: a commit at a revision of its own, and the row names it
    (``wrev``) as every write's row does. It left the row's ``wrev`` as it was: a get named the create's
    revision and the raw write's watch event none, two copies of one write telling different revisions."""
    db = open_db()
    fam = backend(db)
    made = db.create(KitParent(name="p"))
    created = fam.read(KitParent.nbdb_table, made.id)
    assert created is not None and created.written is not None
    document = {**json.loads(created.data), "name": "raw"}
    fam.write_raw(KitParent.nbdb_table, made.id, made.topic, json.dumps(document).encode())
    stream = fam.watch([KitParent.nbdb_table], None, created.written)
    try:
        changes: list[Any] = []
        deadline = time.monotonic() + 20
        while not changes and time.monotonic() < deadline:
            changes += stream.poll(1.0)
    finally:
        stream.close()
    (change,) = changes
    read = fam.read(KitParent.nbdb_table, made.id)
    assert read is not None and change.new is not None and change.old is not None
    assert read.version == change.new.version == 2
    assert read.written == change.new.written == change.revision > created.written
    assert change.old.written == created.written
    with pytest.raises(nbdb.ConflictError):
        db.update(made.replace(size=1))  # the create's copy
    raw = db.get(KitParent, made.id)
    assert raw.name == "raw"
    assert db.update(raw.replace(size=2)).version == 3


class _TlsCassandraServer(CassandraServer):
    """The harness's Cassandra with client encryption on (PEM files; plaintext still allowed
    so that the harness's readiness probe, which speaks plaintext, keeps working)."""

    def __init__(self, tls_files: TlsFiles, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tls_files = tls_files

    def _prepare(self) -> None:
        super()._prepare()
        assert self.base_dir is not None
        pem = self.base_dir / "server.pem"
        pem.write_text(self.tls_files.server_key.read_text() + self.tls_files.server_cert.read_text())
        for member in self.members:
            with open(member.extra["config"], "a") as config:
                config.write(
                    "\nclient_encryption_options:\n"
                    "  enabled: true\n"
                    "  optional: true\n"
                    "  ssl_context_factory:\n"
                    "    class_name: org.apache.cassandra.security.PEMBasedSslContextFactory\n"
                    f"  keystore: {pem}\n"
                    f"  truststore: {self.tls_files.ca_cert}\n"
                    "  require_client_auth: false\n"
                )


@pytest.mark.timeout(300)
def test_tls_connection_verifies_the_server(tmp_path: Any) -> None:
    require_server("cassandra")
    good, other = make_tls_files(tmp_path / "good"), make_tls_files(tmp_path / "other")
    server = _TlsCassandraServer(good, base_dir=tmp_path / "server").start()
    try:
        base = f"cassandra://127.0.0.1:{server.port}/nbdb?connect_timeout=5&tls=1"
        with nbdb.connect(f"{base}&ca={good.ca_cert}", namespace=ns()) as db:
            assert db.create(LogicalSwitch(name="over-tls")).version == 1
            assert db.list(LogicalSwitch)[0].name == "over-tls"
        with pytest.raises(nbdb.BackendUnavailableError):
            nbdb.connect(f"{base}&ca={other.ca_cert}")  # a server the client's CA did not sign
    finally:
        server.stop()


@pytest.mark.timeout(60)
def test_a_commit_that_lost_its_objects_race_takes_no_second_revision(
    open_db: Callable[..., nbdb.Database],
) -> None:
    """After a batch failed on an object's version, the re-read shows the conflict before a revision is taken.

    Half the sequencer's rounds in a soak of competing transfers (four writing processes, one topic) were
    taken by commits that ended in ConflictError, most of them a second revision taken while re-reading
    after the failed batch, then voided: each a Paxos round on the namespace's sequencer row that every
    writer waits behind, longest after a node loss (docs/benchmarks.md, "Cassandra: a conflict takes
    one revision, not two").
    """
    loser_db, winner_db = open_db(), open_db()
    switch = loser_db.create(LogicalSwitch(name="sw", topic="bank"))
    taken: list[int] = []

    def overtaken(revision: int) -> None:
        taken.append(revision)
        if len(taken) == 1:  # revision taken, batch not sent: another client updates the switch first
            winner_db.update(switch.replace(name="theirs"))

    backend(loser_db).before_commit = overtaken
    with pytest.raises(nbdb.ConflictError):
        loser_db.update(switch.replace(name="mine"))
    assert len(taken) == 1
    # Handed out since the loser's revision: the winner's only. A second take by the loser would show here.
    assert loser_db.backend.current_revision() == taken[0] + 1
    assert loser_db.get(LogicalSwitch, switch.id).name == "theirs"


class _LostHeadReply(ForwardingStore):
    """Loses the reply to the first compare-and-set on the sequencer's head, after another process took the
    number it asked for (the request never applied, as when the row's coordinator dies with it in flight);
    counts the compare-and-sets on the head and the plain reads of it from then on."""

    def __init__(self, real: Any, rival: Callable[[], int]) -> None:
        super().__init__(real)
        self.rival = rival
        self.lost = False
        self.rounds = 0
        self.head_reads = 0

    def apply(self, writes: Sequence[tuple[Write, Sequence[Any]]]) -> Applied:
        if any(write is layout.W_HEAD for write, _ in writes):
            self.rounds += 1
            if not self.lost:
                self.lost = True
                self.rival()
                raise OutcomeUnknown("the reply was lost (test)")
        return self.real.apply(writes)

    def select(self, query: Any, params: Sequence[Any], *, serial: bool = False) -> list[Any]:
        self.head_reads += self.lost and query.table == layout.SEQ and query.columns == ("head",) and not serial
        return self.real.select(query, params, serial=serial)


@pytest.mark.timeout(60)
def test_a_lost_reply_for_revisions_is_settled_and_retried_on_the_head_the_settling_read_saw(
    open_db: Callable[..., nbdb.Database],
) -> None:
    """After the sequencer row's coordinator was killed, a plain read of the head waited ~1 s for it in the
    soaks while the serial read settling the lost compare-and-set took milliseconds: that read's head is used."""
    shared = backend(open_db())
    rival = RevisionSequencer(shared.store, shared.partitions, shared.options, CommitQueue())
    first = rival.allocate("p", frozenset({"t"}))
    store = _LostHeadReply(shared.store, lambda: rival.allocate("p", frozenset({"t"})))
    mine = RevisionSequencer(store, shared.partitions, shared.options, CommitQueue())
    assert mine.allocate("p", frozenset({"t"})) == first + 2  # the rival took first + 1 meanwhile
    assert store.rounds == 2, "one lost round, then one won on the head the settling read reported"
    assert store.head_reads == 0


# ---------------------------------------------------------------- another writer's data


@pytest.mark.timeout(90)
@pytest.mark.parametrize("column", ["refs", "referrers"])
@pytest.mark.parametrize("entry", ["nonsense", "LogicalSwitch/not-a-uuid"], ids=["no-table", "no-uuid"])
def test_a_reference_entry_another_writer_damaged_is_a_corrupt_record(
    open_db: Callable[..., nbdb.Database], column: str, entry: str
) -> None:
    """An entry of an object's ``refs`` or ``referrers`` that is no ``<table>/<id>`` was a raw
    ValueError out of every update and delete of the object (and of ``referrers()``)."""
    db = open_db()
    switch = db.create(LogicalSwitch(name="sw"))
    port = db.create(LogicalSwitchPort(switch=switch, name="p"))
    target = port if column == "refs" else switch
    family = backend(db)
    value = f"{{'{entry}'}}" if column == "refs" else f"{{'{entry}': ''}}"
    session(db).execute(
        f"UPDATE {family.store.settings.keyspace}.nbdb_data SET {column} = {column} + {value} "  # type: ignore[attr-defined]
        "WHERE ns = %s AND topic = '~' AND kind = 0 AND rev = 0 AND tbl = %s AND id = %s",
        (family.partitions.ns, target.nbdb_table, target.id),
        timeout=60,
    )
    if column == "refs":
        with pytest.raises(nbdb.CorruptRecordError):
            db.update(port.model_copy(update={"name": "q"}))
    with pytest.raises(nbdb.CorruptRecordError):
        db.delete(target)
    assert db.get(LogicalSwitchPort, port.id) == port and db.get(LogicalSwitch, switch.id) == switch
    assert db.create(LogicalSwitch(name="later")).name == "later"  # the namespace still works around it


@pytest.mark.timeout(120)
@pytest.mark.parametrize("ahead", [50, 9_000_000_000], ids=["in-the-bucket", "past-the-bucket"])
def test_a_last_rev_another_writer_moved_past_the_sequencer_is_no_endless_conflict(
    open_db: Callable[..., nbdb.Database], ahead: int
) -> None:
    """A partition's ``last_rev`` set past every revision handed out failed every batch there on its
    ``last_rev < G`` condition: each commit raised ConflictError ("kept conflicting with concurrent
    writers"), a guessed conflict no retry could end. In the sequencer's bucket numbering now resumes
    past it; past the bucket the commit says what is damaged (CorruptRecordError)."""
    db = open_db()
    first = db.create(LogicalSwitch(name="first"))
    family = backend(db)
    last = family.current_revision() + ahead
    session(db).execute(
        f"UPDATE {family.store.settings.keyspace}.nbdb_data SET last_rev = %s WHERE ns = %s AND topic = '~'",  # type: ignore[attr-defined]
        (last, family.partitions.ns),
        timeout=60,
    )
    if ahead > layout.BUCKET_SIZE:
        with pytest.raises(nbdb.CorruptRecordError, match="last_rev"):
            db.create(LogicalSwitch(name="later"))
        return
    later = db.create(LogicalSwitch(name="later"))
    moved = db.update(first.model_copy(update={"name": "moved"}))
    assert moved.version == 2 and family.current_revision() > last
    assert sorted(s.name for s in db.list(LogicalSwitch)) == ["later", "moved"] and later.version == 1


@pytest.mark.timeout(120)
def test_a_commit_refused_for_a_last_rev_past_the_bucket_voids_its_revision(
    open_db: Callable[..., nbdb.Database],
) -> None:
    """The commit that found a ``last_rev`` past the sequencer's bucket raised CorruptRecordError
    without marking the revision it took void, as every other failed commit does: each watcher of
    another process had to resolve that revision itself (a serial read of the partition; here
    the damaged ``last_rev`` spares it the ``settle`` wait and the seal). It is voided now, and
    watchers see the next commit at once."""
    db = open_db(settle=20)
    db.create(LogicalSwitch(name="first", topic="tenant-a"))
    family = backend(db)
    session(db).execute(
        f"UPDATE {family.store.settings.keyspace}.nbdb_data SET last_rev = %s WHERE ns = %s AND topic = 'tenant-a'",  # type: ignore[attr-defined]
        (family.current_revision() + 9_000_000_000, family.partitions.ns),
        timeout=60,
    )
    # A watcher in another process (another connection): this one's knows what it holds.
    with open_db(settle=20).watch(LogicalSwitch) as watch:
        with pytest.raises(nbdb.CorruptRecordError, match="last_rev"):
            db.create(LogicalSwitch(name="refused", topic="tenant-a"))
        taken = family.current_revision()
        bucket = layout.bucket_of(taken, family.sequencer.bucket_size)
        index = family.store.select(layout.Q_INTENT, (family.partitions.ns, bucket, taken), serial=True)
        assert index and index[0].void, index
        later = db.create(LogicalSwitch(name="later", topic="tenant-b"))
        start = time.monotonic()
        seen: list[str] = []
        while not seen and time.monotonic() - start < 8:
            seen += [e.object.name for e in watch.poll(0.5)]
        assert seen == [later.name], f"after {time.monotonic() - start:.1f}s (settle is 20s)"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("cascade", [False, True], ids=["plain", "cascade"])
def test_a_referrer_entry_another_writer_added_for_no_object_does_not_refuse_every_delete(
    open_db: Callable[..., nbdb.Database], cascade: bool
) -> None:
    """A referrer entry valued '' (what a source's own commit writes) naming no object refused every
    delete of the target for good: ReferenceError naming an object that does not exist, and with
    cascade=True a NotFoundError on it."""
    db = open_db()
    switch = db.create(LogicalSwitch(name="sw"))
    port = db.create(LogicalSwitchPort(switch=switch, name="p"))
    family = backend(db)
    ghost = f"LogicalSwitchPort/{uuid.uuid4()}"
    session(db).execute(
        f"UPDATE {family.store.settings.keyspace}.nbdb_data SET referrers = referrers + {{'{ghost}': ''}} "  # type: ignore[attr-defined]
        "WHERE ns = %s AND topic = '~' AND kind = 0 AND rev = 0 AND tbl = %s AND id = %s",
        (family.partitions.ns, switch.nbdb_table, switch.id),
        timeout=60,
    )
    if not cascade:
        with pytest.raises(nbdb.ReferenceError) as refused:  # the real referrer still refuses it
            db.delete(switch)
        assert str(port.id) in str(refused.value) and ghost.split("/")[1] not in str(refused.value)
        db.delete(port)
    db.delete(switch, cascade=cascade)
    with pytest.raises(nbdb.NotFoundError):
        db.get(LogicalSwitch, switch.id)
    with pytest.raises(nbdb.NotFoundError):
        db.get(LogicalSwitchPort, port.id)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("value", [None, -5, 2**63 - 1], ids=["null", "negative", "last-bigint"])
def test_an_id_counter_another_writer_damaged_is_a_corrupt_record(
    open_db: Callable[..., nbdb.Database], value: int | None
) -> None:
    """A null counter was read as 0 (ids began again at 1: each handed out twice), a negative one
    handed out ids below 1, and the largest bigint was a raw TypeError of the driver."""
    db = open_db()
    assert db.allocate_id("c") == 1
    family = backend(db)
    session(db).execute(
        f"UPDATE {family.store.settings.keyspace}.nbdb_meta SET value = %s WHERE ns = %s AND name = 'n/c'",  # type: ignore[attr-defined]
        (value, family.partitions.ns),
        timeout=60,
    )
    with pytest.raises(nbdb.CorruptRecordError, match="counter 'c'"):
        db.allocate_id("c")
    assert db.allocate_id("other") == 1


class _DropAndAddBack(ForwardingStore):
    """Another client deletes ``port`` just before the first read of its row, and creates it again (same
    id, same switch) just before the first drop of a referrer entry."""

    def __init__(self, real: Any, other: nbdb.Database, port: LogicalSwitchPort) -> None:
        super().__init__(real)
        self.other, self.port = other, port
        self.deleted = self.created = False

    def select(self, query: Any, params: Sequence[Any], *, serial: bool = False) -> list[Any]:
        if not self.deleted and query is layout.Q_ROW and tuple(params[4:6]) == (self.port.nbdb_table, self.port.id):
            self.deleted = True
            self.other.delete(LogicalSwitchPort, self.port.id)  # drops the entry, in the port's own batch
        return self.real.select(query, params, serial=serial)

    def apply(self, writes: Sequence[tuple[Write, Sequence[Any]]]) -> Applied:
        if self.deleted and not self.created and any(write is layout.W_REF_RELEASE for write, _ in writes):
            self.created = True
            self.other.create(self.port.model_copy(update={"version": 0}))  # its entry is written again: ''
        return self.real.apply(writes)


@pytest.mark.timeout(90)
def test_a_referrer_dropped_and_added_back_while_a_delete_checks_its_entries_still_refuses_the_delete(
    open_db: Callable[..., nbdb.Database], monkeypatch: Any
) -> None:
    """A delete refused by an entry '' read the entry's source, then dropped the entry if the source
    held no reference, on the condition that the entry was still ''. The source could drop the
    reference and take it again (here: deleted and created again by another client) between that read
    and the drop: the entry its commit wrote again is '' too, so the drop took it, the delete went
    ahead, and the port pointed to a switch that no longer existed (a dangling reference)."""
    db, other = open_db(), open_db()
    switch = db.create(LogicalSwitch(name="sw"))
    port = db.create(LogicalSwitchPort(switch=switch, name="p"))
    family = backend(db)
    store = _DropAndAddBack(family.partitions.store, other, port)
    monkeypatch.setattr(family.partitions, "store", store)
    with pytest.raises(nbdb.ReferenceError):
        db.delete(switch)
    assert store.deleted and store.created
    assert db.get(LogicalSwitch, switch.id).name == "sw"
    assert db.get(LogicalSwitchPort, port.id).switch == switch.id


class _NullsTheCounter(ForwardingStore):
    """Another writer nulls counter ``n/c`` just before the first compare-and-set on it."""

    def __init__(self, real: Any, db: nbdb.Database) -> None:
        super().__init__(real)
        self.db = db
        self.nulled = False

    def apply(self, writes: Sequence[tuple[Write, Sequence[Any]]]) -> Applied:
        if not self.nulled and any(write is layout.W_META and params[1] == "n/c" for write, params in writes):
            self.nulled = True
            family = backend(self.db)
            session(self.db).execute(
                f"UPDATE {family.store.settings.keyspace}.nbdb_meta SET value = null WHERE ns = %s AND name = 'n/c'",  # type: ignore[attr-defined]
                (family.partitions.ns,),
                timeout=60,
            )
        return self.real.apply(writes)


@pytest.mark.timeout(90)
def test_an_id_counter_another_writer_nulls_during_an_allocation_is_a_corrupt_record(
    open_db: Callable[..., nbdb.Database], monkeypatch: Any
) -> None:
    """A null counter is checked where it is read, but a compare-and-set that lost reports the value
    it found, and a null reported there was taken as "no counter yet": the next try set it to 1 (on
    ``IF value = null``), handing out 1 a second time."""
    db = open_db()
    assert [db.allocate_id("c") for _ in range(3)] == [1, 2, 3]
    family = backend(db)
    store = _NullsTheCounter(family.partitions.store, db)
    monkeypatch.setattr(family.partitions, "store", store)
    with pytest.raises(nbdb.CorruptRecordError, match="counter 'c'"):
        db.allocate_id("c")
    assert store.nulled


@pytest.mark.parametrize("topic", [None, "elsewhere"])
def test_a_refused_switch_delete_names_every_referrer_and_stands_after_one_commit(
    open_db: Callable[..., nbdb.Database], topic: str | None
) -> None:
    # The delete weighs every entry of the switch's referrers (a port in another partition's by its
    # reservation, the source asked): the error names them all, and the plain delete, refused for a port
    # it can neither drop nor take along, stands at once. It named none, and the same plan was committed
    # and refused a second time.
    db = open_db()
    sw = db.create(LogicalSwitch(name=f"sw-{uuid.uuid4().hex[:8]}"))
    port = db.create(LogicalSwitchPort(switch=sw, name=f"p-{uuid.uuid4().hex[:8]}", topic=topic))
    commits: list[int] = []
    real = db.backend.commit

    def commit(ops, *args, **kwargs):  # type: ignore[no-untyped-def]
        commits.append(len(ops))
        return real(ops, *args, **kwargs)

    db.backend.commit = commit  # type: ignore[method-assign]
    with pytest.raises(nbdb.ReferenceError, match=str(port.id)) as refused:
        db.delete(sw)
    assert refused.value.target == (LogicalSwitch.nbdb_table, sw.id)
    assert refused.value.referrers == ((LogicalSwitchPort.nbdb_table, port.id),)
    assert len(commits) == 1, commits
    assert db.get(LogicalSwitch, sw.id) == sw and db.get(LogicalSwitchPort, port.id) == port
