"""Cassandra under injected faults: lost replies on every commit kind, a failing watcher step, group commit.

A fault is injected at the family's seam, between the family and the real
store on a real server: a request dropped before it is sent, a reply dropped
after the server applied the write (the write really happens), or a read that
fails. Nothing of the server is faked. One Cassandra node is shared by the
module (``NBDB_CASSANDRA_URL`` runs the tests against another cluster).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

import nbdb
from nbdb.events import EventKind
from nbdb.models import Chassis, LogicalSwitch, LogicalSwitchPort
from nbdb.spi import RecordChange, RecordStream, UniqueKey
from nbdb.testing import fixtures
from nbdb.testing.databases import databases

pytest.importorskip("cassandra")

from nbdb.backends.cassandra import CassandraBackend
from nbdb.families.widecolumn import (
    Applied,
    ForwardingStore,
    OutcomeUnknown,
    PendingApply,
    PendingReads,
    Row,
    Select,
    WideColumnBackend,
    WideColumnStore,
    Write,
    layout,
)
from nbdb.families.widecolumn.sequencer import CommitQueue, RevisionSequencer

cassandra_server = fixtures.cassandra_server
cassandra_url = fixtures.cassandra_url


# ---------------------------------------------------------------------------- the fault injector


@dataclass
class Fault:
    """What to do to the next ``times`` calls that ``matches``."""

    matches: Callable[[Sequence[Any]], bool]
    action: str
    """``request``: drop it unsent; ``reply``: send it, drop the answer; ``fail``: unavailable, unsent."""
    times: int = 1
    before_raise: Callable[[], None] | None = None
    """Runs after a reply was dropped and before the error is raised (another client's write, say)."""
    hits: int = 0
    dropped: Applied | None = None
    """The reply the server gave to the write whose reply was dropped."""


class FaultyStore(ForwardingStore):
    """The real store, with faults injected at the seam of the family."""

    def __init__(self, real: WideColumnStore) -> None:
        super().__init__(real)
        self.faults: list[Fault] = []
        self.applied: list[Sequence[Write]] = []
        self._lock = threading.Lock()

    def inject(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def _fault(self, statements: Sequence[Any]) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.hits < fault.times and fault.matches(statements):
                    fault.hits += 1
                    return fault
        return None

    def select(self, query: Select, params: Sequence[Any], *, serial: bool = False) -> list[Row]:
        fault = self._fault([query])
        if fault is not None:
            raise nbdb.BackendUnavailableError(f"injected: {fault.action} on a read")
        return self.real.select(query, params, serial=serial)

    def start_reads(self, reads: Sequence[tuple[Select, Sequence[Any]]], *, serial: bool = False) -> PendingReads:
        fault = self._fault([query for query, _ in reads])
        if fault is not None:
            raise nbdb.BackendUnavailableError(f"injected: {fault.action} on reads")
        return self.real.start_reads(reads, serial=serial)

    def start_apply(self, writes: Sequence[tuple[Write, Sequence[Any]]]) -> PendingApply:
        # Unfaulted, the write is really in flight when this returns (the server's own asynchrony); a faulted
        # one is decided at once, and its error raised by result().
        fault = self._fault([write for write, _ in writes])
        if fault is None:
            pending = self.real.start_apply(writes)
            with self._lock:
                self.applied.append([write for write, _ in writes])
            return pending
        try:
            return _Decided(self._faulted(fault, writes), None)
        except nbdb.NbdbError as exc:
            return _Decided(None, exc)

    def apply(self, writes: Sequence[tuple[Write, Sequence[Any]]]) -> Applied:
        return self._faulted(self._fault([write for write, _ in writes]), writes)

    def _faulted(self, fault: Fault | None, writes: Sequence[tuple[Write, Sequence[Any]]]) -> Applied:
        statements = [write for write, _ in writes]
        if fault is None or fault.action == "fail":
            if fault is not None:
                raise nbdb.BackendUnavailableError("injected: unavailable")
            result = self.real.apply(writes)
            with self._lock:
                self.applied.append(statements)
            return result
        if fault.action == "reply":
            fault.dropped = self.real.apply(writes)
            if fault.before_raise is not None:
                fault.before_raise()
        raise OutcomeUnknown(f"injected: the {fault.action} of a conditional write was lost")


class _Decided(PendingApply):
    def __init__(self, outcome: Applied | None, error: BaseException | None) -> None:
        self._outcome, self._error = outcome, error

    def result(self) -> Applied:
        if self._error is not None:
            raise self._error
        assert self._outcome is not None
        return self._outcome


class _FaultyCassandra(WideColumnBackend):
    capabilities: ClassVar = CassandraBackend.capabilities


def writes_of(*statements: Select | Write) -> Callable[[Sequence[Any]], bool]:
    """A matcher: the call includes one of ``statements``."""
    return lambda called: any(s in statements for s in called)


COMMIT_BATCH = writes_of(layout.W_LAST_ABOVE, layout.W_LAST_FIRST)
CLAIMS = writes_of(layout.W_CLAIM, layout.W_CLAIM_MARKED)
"""A claim's IF NOT EXISTS: plain, or an early one of an id the caller gave (marked)."""


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture
def url(cassandra_url: str) -> str:
    """The shared test node, or the cluster named by ``$NBDB_CASSANDRA_URL`` (e.g. a 3-node one)."""
    return cassandra_url


@pytest.fixture
def namespace() -> str:
    return f"f-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def open_db(url: str, namespace: str) -> Iterator[Callable[..., nbdb.Database]]:
    """Plain databases on the test's namespace."""
    with databases(url, namespace) as factory:
        yield factory


@pytest.fixture
def faulty(url: str, namespace: str) -> Iterator[Callable[..., tuple[nbdb.Database, FaultyStore]]]:
    """Databases whose backend talks to the real store through a FaultyStore."""
    opened: list[nbdb.Database] = []

    def factory(**options: Any) -> tuple[nbdb.Database, FaultyStore]:
        real = CassandraBackend.from_url(url, namespace=namespace, **options)
        store = FaultyStore(real.store)
        db = nbdb.Database(_FaultyCassandra(store, real.options))
        opened.append(db)
        return db, store

    yield factory
    for db in opened:
        db.close()


def changes_until(stream: RecordStream, revision: int, timeout: float = 30.0) -> list[RecordChange]:
    out: list[RecordChange] = []
    deadline = time.monotonic() + timeout
    while stream.revision < revision:
        assert time.monotonic() < deadline, f"stream stuck at {stream.revision} < {revision}"
        out += stream.poll(0.5)
    return out


# ---------------------------------------------------------------------------- issue 12: the stream's cursor


@pytest.mark.timeout(120)
def test_a_failed_resolve_never_moves_the_cursor_past_undelivered_changes(
    faulty: Callable[..., tuple[nbdb.Database, FaultyStore]], open_db: Callable[..., nbdb.Database]
) -> None:
    db, store = faulty(settle=30)
    writer, stalled_writer = open_db(), open_db()
    start = writer.backend.current_revision()
    stream = db.backend.watch(["LogicalSwitch"], None, start)
    first = writer.create(LogicalSwitch(name="delivered-first", topic="t1"))
    entered, release = threading.Event(), threading.Event()

    def stall(revision: int) -> None:
        entered.set()
        release.wait(30)

    stalled_writer.backend.before_commit = stall  # type: ignore[attr-defined]
    late: list[Any] = []
    thread = threading.Thread(target=lambda: late.append(stalled_writer.create(LogicalSwitch(name="late"))))
    thread.start()
    try:
        assert entered.wait(30)
        after = writer.create(LogicalSwitch(name="after", topic="t1"))
        # One step reads the first commit's changes, then finds the stalled one and
        # tries to resolve it: that read fails.
        store.inject(Fault(writes_of(layout.Q_LAST), "fail"))
        with pytest.raises(nbdb.BackendUnavailableError):
            for _ in range(20):
                stream.poll(0.5)
        assert stream.revision == start, "the cursor moved although the step's changes were never returned"
        delivered = stream.poll(5)
        assert [c.id for c in delivered] == [first.id]
        assert stream.revision == delivered[0].revision, "the stalled commit holds back the later one"
    finally:
        release.set()
        thread.join(30)
    rest = changes_until(stream, writer.backend.current_revision())
    stream.close()
    assert [c.id for c in rest] == [late[0].id, after.id]


@pytest.mark.timeout(180)
def test_a_cache_over_a_flaky_store_misses_and_repeats_nothing(
    faulty: Callable[..., tuple[nbdb.Database, FaultyStore]], open_db: Callable[..., nbdb.Database]
) -> None:
    db, store = faulty(settle=0.5)
    writers = [open_db() for _ in range(3)]
    events: list[nbdb.ChangeEvent[Any]] = []
    cache = db.cache(LogicalSwitch, on_change=events.append)
    assert cache.wait_synced(30)
    # Every fourth read of the watcher fails, wherever it falls in a step.
    flaky = store.inject(_every(4))
    failures: list[BaseException] = []

    def write(db: nbdb.Database, index: int) -> None:
        try:
            for i in range(10):
                sw = db.create(LogicalSwitch(name=f"w{index}-{i}", topic=f"t{i % 3}"))
                db.update(sw.replace(name=f"w{index}-{i}-renamed"))
                if i % 3 == 0:
                    db.delete(db.get(LogicalSwitch, sw.id))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(w, i)) for i, w in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    assert failures == []
    # The store stays flaky while the cache catches up, for a few more failures: each costs the
    # watch its backoff, and a machine loaded enough to batch more changes into a step makes a
    # step of four reads or more, which failing every fourth read forever would never let finish.
    flaky.times = flaky.hits + 3
    expected = {o.id: o for o in writers[0].list(LogicalSwitch)}
    deadline = time.monotonic() + 60
    while {o.id: o for o in cache.list(LogicalSwitch)} != expected:
        assert time.monotonic() < deadline, "the cache did not converge"
        time.sleep(0.1)
    cache.close()
    live = [(e.revision, e.id) for e in events if not e.synthetic]
    assert len(live) == len(set(live)), "a change was delivered twice"
    assert cache.relists == 0, "a transient failure must not cost a re-list"
    versions: dict[uuid.UUID, int] = {}
    for event in events:
        if event.synthetic:
            continue
        if event.kind is EventKind.DELETED:
            versions.pop(event.id)
            continue
        assert event.new is not None
        assert event.new.version == versions.get(event.id, 0) + 1, "a change was skipped"
        versions[event.id] = event.new.version


def _every(n: int) -> Fault:
    count = iter(range(1, 10**9))
    return Fault(lambda called: next(count) % n == 0, "fail", times=10**9)


# ---------------------------------------------------------------------------- lost replies, every commit kind


@pytest.mark.timeout(120)
@pytest.mark.parametrize("lost", ["request", "reply"])
@pytest.mark.parametrize("kind", ["create", "update", "delete", "transaction", "lock", "allocate_id"])
def test_a_lost_reply_is_settled_exactly_once(
    kind: str,
    lost: str,
    faulty: Callable[..., tuple[nbdb.Database, FaultyStore]],
    open_db: Callable[..., nbdb.Database],
) -> None:
    db, store = faulty()
    other = open_db()
    start = other.backend.current_revision()
    if kind == "lock":
        fault = store.inject(Fault(writes_of(layout.W_LOCK), lost))
        with db.lock("leader", ttl=5) as held:
            assert not held.lost
            with pytest.raises(nbdb.LockTimeoutError):
                with other.lock("leader", ttl=5, timeout=0.5):
                    pass
        with other.lock("leader", ttl=5, timeout=10):
            pass
        assert fault.hits == 1
        return
    if kind == "allocate_id":
        fault = store.inject(Fault(writes_of(layout.W_META), lost))
        assert [db.allocate_id("vni"), db.allocate_id("vni"), other.allocate_id("vni")] == [1, 2, 3]
        assert fault.hits == 1
        return
    # Also gives the partition a last_rev, so that the first batch sent is the one whose reply is lost.
    existing = other.create(LogicalSwitch(name="existing", topic="t"))
    fault = store.inject(Fault(COMMIT_BATCH, lost))
    kept = [existing]
    if kind == "create":
        made = [db.create(LogicalSwitch(name="once", topic="t"))]
    elif kind == "update":
        made, kept = [db.update(existing.replace(name="renamed"))], []
        assert made[0].version == 2
    elif kind == "delete":
        db.delete(existing)
        made, kept = [], []
    else:
        with db.transaction() as txn:
            for i in range(3):
                txn.create(LogicalSwitch(name=f"txn{i}", topic="t"))
        made = [o for o in txn.results if o is not None]
    assert fault.hits == 1
    if lost == "reply":
        assert fault.dropped is not None and fault.dropped.applied, "the write whose reply was lost had landed"
    listed = other.list(LogicalSwitch)
    assert sorted(o.id for o in listed) == sorted(o.id for o in made + kept)
    for obj in made:
        assert other.get(LogicalSwitch, obj.id) == obj
    with other.watch(LogicalSwitch, since=start) as watch:
        events = []
        deadline = time.monotonic() + 30
        while watch.revision < other.backend.current_revision():
            assert time.monotonic() < deadline
            events += watch.poll(0.5)
    mine = events[1:]  # after the creation of ``existing``
    assert len(mine) == max(1, len(made)), f"applied more than once: {mine}"
    assert len({e.revision for e in mine}) == 1, "a transaction's changes share one revision"


@pytest.mark.timeout(120)
def test_a_lost_reply_then_a_foreign_write_is_no_conflict(
    faulty: Callable[..., tuple[nbdb.Database, FaultyStore]], open_db: Callable[..., nbdb.Database]
) -> None:
    db, store = faulty()
    other = open_db()
    obj = other.create(LogicalSwitch(name="v1", topic="t"))
    foreign: list[Any] = []

    def foreign_write() -> None:  # between our landed write and our look at it
        current = other.get(LogicalSwitch, obj.id)
        foreign.append(other.update(current.replace(name="foreign")))

    store.inject(Fault(COMMIT_BATCH, "reply", before_raise=foreign_write))
    mine = db.update(obj.replace(name="mine"))  # landed: not a ConflictError, not applied twice
    assert mine.version == 2 and foreign[0].version == 3
    final = other.get(LogicalSwitch, obj.id)
    assert final.name == "foreign" and final.version == 3


@pytest.mark.timeout(120)
def test_a_commit_that_cannot_be_settled_is_commit_unknown_never_conflict(
    faulty: Callable[..., tuple[nbdb.Database, FaultyStore]], open_db: Callable[..., nbdb.Database]
) -> None:
    db, store = faulty()
    other = open_db()
    other.create(LogicalSwitch(name="first", topic="t"))

    def unreachable() -> None:  # from now on, for everything the settling needs
        store.inject(Fault(lambda called: True, "fail", times=10**6))

    store.inject(Fault(COMMIT_BATCH, "reply", before_raise=unreachable))
    with pytest.raises(nbdb.CommitUnknownError):
        db.create(LogicalSwitch(name="maybe", topic="t"))
    assert sorted(o.name for o in other.list(LogicalSwitch)) == ["first", "maybe"], "it had landed, once"


# ---------------------------------------------------------------------------- group commit


@pytest.mark.timeout(180)
def test_concurrent_commits_share_sequencer_round_trips_and_stay_dense(
    faulty: Callable[..., tuple[nbdb.Database, FaultyStore]],
) -> None:
    db, store = faulty()
    start = db.backend.current_revision()
    writers, each = 16, 8
    revisions: list[int] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        try:
            for i in range(each):
                with db.transaction() as txn:
                    txn.create(LogicalSwitch(name=f"w{index}-{i}", topic=f"topic-{index}"))
                with lock:
                    revisions.append(txn.revision or 0)
        except BaseException as exc:
            failures.append(exc)

    stream = db.backend.watch(["LogicalSwitch"], None, start)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    assert failures == []
    commits = writers * each
    assert sorted(revisions) == list(range(start + 1, start + commits + 1)), "dense, unique revisions"
    head_writes = sum(1 for statements in store.applied if layout.W_HEAD in statements)
    assert head_writes < commits, "commits in flight took their revisions together"
    changes = changes_until(stream, start + commits)
    stream.close()
    assert sorted(c.revision for c in changes) == sorted(revisions)


class _LostRace:
    """A process (``db`` through ``store``) warmed by one commit, and another process on the same namespace's
    row: a sequencer of its own (its own queue). :meth:`race`, called right before this one's take, makes the
    take lose the race and ``more`` commits of this process queue behind it; :meth:`run` makes the first
    commit and waits for all of them."""

    def __init__(self, db: nbdb.Database, store: FaultyStore, more: int = 4) -> None:
        backend = db.backend
        assert isinstance(backend, WideColumnBackend)
        self.db, self.backend, self.more = db, backend, more
        db.create(LogicalSwitch(name="warm", topic="t0"))
        self.start = backend.current_revision()
        self.other = RevisionSequencer(store.real, backend.partitions, backend.options, CommitQueue())
        self.made: list[LogicalSwitch] = []
        self.failures: list[BaseException] = []

    def create(self, name: str) -> None:
        try:
            self.made.append(self.db.create(LogicalSwitch(name=name, topic=f"t-{name}")))
        except BaseException as exc:
            self.failures.append(exc)

    def race(self, queued: Callable[[], bool]) -> None:
        """The other process takes a number, and ``more`` commits start; returns once ``queued`` holds."""
        self.other.void(self.other.allocate("t-other", frozenset({"LogicalSwitch"})))  # the race the take loses
        for i in range(self.more):
            threading.Thread(target=self.create, args=(f"queued-{i}",), daemon=True).start()
        deadline = time.monotonic() + 20
        while not queued():
            assert time.monotonic() < deadline, "the commits did not queue"
            time.sleep(0.01)

    def run(self) -> list[LogicalSwitch]:
        """The first commit, and every one queued behind it done: what they made (none failed)."""
        self.create("first")
        deadline = time.monotonic() + 60
        while len(self.made) + len(self.failures) < 1 + self.more:
            assert time.monotonic() < deadline, "the queued commits did not finish"
            time.sleep(0.05)
        assert self.failures == []
        return self.made


@pytest.mark.timeout(120)
def test_a_take_that_lost_a_race_takes_the_commits_queued_behind_it(
    faulty: Callable[..., tuple[nbdb.Database, FaultyStore]],
) -> None:
    """Another process takes a number while this one's take is on its way (the take loses the race), and
    four more commits of this process queue behind it meanwhile: the take's next try is one compare-and-set
    for all five, not one for it and one more (racing the other processes again) for them. Revisions stay
    dense and a watcher sees every commit once."""
    db, store = faulty()
    lost = _LostRace(db, store)
    backend, start, more = lost.backend, lost.start, lost.more
    queued = threading.Event()
    arrived: list[int] = []
    allocate = backend.sequencer.allocate

    def counted(*args: Any) -> int:
        arrived.append(1)
        return allocate(*args)

    backend.sequencer.allocate = counted  # type: ignore[method-assign]
    apply = store.apply
    armed = [True]

    def racing(writes: Sequence[tuple[Write, Sequence[Any]]]) -> Applied:
        if armed[0] and any(w is layout.W_HEAD for w, _ in writes):
            armed[0] = False
            lost.race(lambda: len(arrived) >= 1 + more and len(backend.sequencer._q.waiting) >= more)
            queued.set()
            store.applied.clear()
        return apply(writes)

    store.apply = racing  # type: ignore[method-assign]
    made = lost.run()
    assert queued.is_set()
    heads = _sent(store, layout.W_HEAD)
    assert heads == 2, f"{heads} compare-and-sets on the head after the lost race (2: the lost one, one for all)"
    assert sorted(m.nbdb_revision for m in made) == list(range(start + 2, start + 3 + more)), "not dense"
    events = _dense_and_once(watcher=db, start=start, within=20, model=LogicalSwitch)
    assert sorted(str(e.id) for e in events) == sorted(str(m.id) for m in made)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("lost", ["request", "reply"])
def test_a_grown_take_whose_outcome_is_unknown_settles_every_commit_it_took_for(
    lost: str, faulty: Callable[..., tuple[nbdb.Database, FaultyStore]]
) -> None:
    """A take that lost a race grows by the four commits queued meanwhile, and the compare-and-set of that
    bigger take is lost (unsent, or sent and its reply dropped): the settling read finds whether it took its
    numbers, and each of the five commits lands once on a number of its own, dense, each seen once."""
    db, store = faulty()
    race = _LostRace(db, store)
    backend, start, more = race.backend, race.start, race.more
    state = {"race": True}
    apply = store.apply
    heads: list[int] = []

    def racing(writes: Sequence[tuple[Write, Sequence[Any]]]) -> Applied:
        if any(w is layout.W_HEAD for w, _ in writes):
            heads.append(sum(1 for w, _ in writes if w is layout.W_INTENT))
            if state["race"]:
                state["race"] = False
                race.race(lambda: len(backend.sequencer._q.waiting) >= more)
                store.inject(Fault(writes_of(layout.W_HEAD), lost))  # the next try: the grown take
        return apply(writes)

    store.apply = racing  # type: ignore[method-assign]
    made = race.run()
    assert heads[:2] == [1, 1 + more], f"the take did not grow: {heads}"
    revisions = sorted(m.nbdb_revision for m in made)
    assert revisions == list(range(start + 2, start + 3 + more)), f"not dense: {revisions}"
    events = _dense_and_once(watcher=db, start=start, within=20, model=LogicalSwitch)
    assert sorted((e.revision, str(e.id)) for e in events) == sorted((m.nbdb_revision, str(m.id)) for m in made)


# ---------------------------------------------------------------------------- issue 17: the data API


@pytest.mark.timeout(120)
@pytest.mark.parametrize("action", ["request", "reply"])
def test_a_lost_claim_is_settled_and_never_taken_for_a_rival(
    action: str, faulty: Callable[..., tuple[nbdb.Database, FaultyStore]], open_db: Callable[..., nbdb.Database]
) -> None:
    db, store = faulty()
    fault = store.inject(Fault(writes_of(layout.W_CLAIM), action))
    made = db.create(Chassis(name="lost-claim", topic="t1"))
    assert fault.hits == 1
    rival = open_db()
    with pytest.raises(nbdb.UniqueViolationError) as info:
        rival.create(Chassis(name="lost-claim", topic="t2"))
    assert info.value.existing == made.id
    assert [c.id for c in rival.list(Chassis)] == [made.id]


@pytest.mark.timeout(120)
def test_a_commit_whose_reply_was_lost_keeps_its_claims(
    faulty: Callable[..., tuple[nbdb.Database, FaultyStore]], open_db: Callable[..., nbdb.Database]
) -> None:
    db, store = faulty()
    fault = store.inject(Fault(COMMIT_BATCH, "reply"))
    made = db.create(Chassis(name="lost-batch", topic="t1"))  # settled: it landed, once
    assert fault.hits == 1 and fault.dropped is not None and fault.dropped.applied
    with pytest.raises(nbdb.UniqueViolationError) as info:
        open_db().create(Chassis(name="lost-batch", topic="t2"))
    assert info.value.existing == made.id


@pytest.mark.timeout(120)
def test_a_refresh_whose_reply_was_lost_is_settled(faulty: Callable[..., tuple[nbdb.Database, FaultyStore]]) -> None:
    db, store = faulty()
    obj = db.create(LogicalSwitch(name="mortal", topic="t"), ttl=30)
    fault = store.inject(Fault(writes_of(layout.W_REFRESH), "reply"))
    before = time.time()
    db.refresh(obj, 120)
    assert fault.hits == 1
    assert isinstance(db.backend, WideColumnBackend)
    row = db.backend.partitions.object_row("t", "LogicalSwitch", obj.id)
    assert row is not None and row.deadline is not None and row.deadline >= (before + 119) * 1000


# ---------------------------------------------------------------------------- claims sent early (a warm process)


class _Warm:
    """A process that committed once, so that it guesses revisions and sends its creates' claims early."""

    def __init__(self, db: nbdb.Database) -> None:
        backend = db.backend
        assert isinstance(backend, WideColumnBackend)
        self.backend = backend
        db.create(LogicalSwitch(name="warm", topic="t0"))
        guess = backend.sequencer.predict()
        assert guess is not None, "the process guesses no revision"
        backend.sequencer.unguess(guess)
        self.early: list[int] = []
        """How many claims each commit sent early."""
        start_early = backend.claims.start_early

        def counted(*args: Any) -> Any:
            sent = start_early(*args)
            self.early.append(len(sent))
            return sent

        backend.claims.start_early = counted  # type: ignore[method-assign]


def _warm_and_watched(
    faulty: Callable[..., tuple[nbdb.Database, FaultyStore]],
) -> tuple[nbdb.Database, FaultyStore, nbdb.Database, _Warm, int]:
    """A faulty process warmed to send claims early (db, its store, its _Warm), a watcher of another process
    that settles for 30 s, and the head before the test's commits."""
    db, store = faulty()
    watcher, _ = faulty(settle=30)
    warm = _Warm(db)
    return db, store, watcher, warm, watcher.backend.current_revision()


def _held_and_landed_once(
    open_db: Callable[..., nbdb.Database], watcher: nbdb.Database, start: int, made: Chassis
) -> list[nbdb.ChangeEvent[Any]]:
    """Another process's create of ``made``'s name in t2 is refused, naming ``made``; the events after ``start``
    (dense, each once: see _dense_and_once)."""
    with pytest.raises(nbdb.UniqueViolationError) as info:
        open_db().create(Chassis(name=made.name, topic="t2"))
    assert info.value.existing == made.id
    return _dense_and_once(watcher, start, within=20)


def _dense_and_once(
    watcher: nbdb.Database, start: int, within: float, model: type[Any] = Chassis
) -> list[nbdb.ChangeEvent[Any]]:
    """Every event after ``start``, read by a watcher of another process, which must reach the head ``within``
    seconds: a revision its commit gave up must be void in the store, not left for the watcher to seal."""
    events: list[nbdb.ChangeEvent[Any]] = []
    deadline = time.monotonic() + within
    with watcher.watch(model, since=start) as watch:
        while watch.revision < watcher.backend.current_revision():
            assert time.monotonic() < deadline, f"the watch stalled at {watch.revision}"
            events += watch.poll(0.5)
    live = [(e.revision, e.id) for e in events]
    assert len(live) == len(set(live)), "a change was delivered twice"
    return events


@pytest.mark.timeout(120)
@pytest.mark.parametrize("lost", ["request", "reply", "reply-unread"])
def test_an_early_claim_whose_reply_was_lost_is_settled_exactly_once(
    lost: str, faulty: Callable[..., tuple[nbdb.Database, FaultyStore]], open_db: Callable[..., nbdb.Database]
) -> None:
    db, store, watcher, warm, start = _warm_and_watched(faulty)
    fault = store.inject(Fault(writes_of(layout.W_CLAIM), "request" if lost == "request" else "reply"))
    if lost == "reply-unread":  # and the serial read of the claim that would settle it fails too (every try)
        unread = store.inject(Fault(writes_of(layout.Q_CLAIM), "fail", times=10**9))
    made = db.create(Chassis(name="early", topic="t1"))
    if lost == "reply-unread":
        unread.times = 0
        assert unread.hits > 1
    assert fault.hits == 1 and warm.early[0] == 1, "the claim whose reply was lost was not sent early"
    events = _held_and_landed_once(open_db, watcher, start, made)
    assert [e.id for e in events] == [made.id]


@pytest.mark.timeout(120)
def test_an_early_claim_of_unknown_outcome_found_by_the_next_claim_is_its_own(
    faulty: Callable[..., tuple[nbdb.Database, FaultyStore]], open_db: Callable[..., nbdb.Database]
) -> None:
    """An early claim whose reply was lost and whose settling read failed too: the claim after the take finds
    (its object, its topic, its guess), which is its own (a fresh id), and re-ties it instead of sealing its
    own topic at the guess (its revision: the batch then failed, and the commit took a second revision)."""
    db, store, watcher, warm, start = _warm_and_watched(faulty)
    fault = store.inject(Fault(writes_of(layout.W_CLAIM), "reply"))
    # Every try of the serial read that would settle it fails (a serial read is tried several times).
    unread = store.inject(Fault(writes_of(layout.Q_CLAIM), "fail", times=10**9))
    store.applied.clear()
    made = db.create(Chassis(name="unsettled", topic="t1"))
    unread.times = 0
    assert fault.hits == 1 and fault.dropped is not None and fault.dropped.applied and warm.early[0] == 1
    assert unread.hits > 1, "the claim was not left unsettled"
    assert _sent(store, layout.W_CHANGE) == 1, "the batch was sent more than once"
    assert db.backend.current_revision() == start + 1, "a revision was taken and lost"
    (pair,) = made.unique_values()
    claim = warm.backend.claims.read(made.nbdb_table, layout.unique_text(UniqueKey(*pair)), serial=True)
    assert claim is not None and (claim.owner, claim.part, claim.rev) == (made.id, "t1", start + 1)
    events = _held_and_landed_once(open_db, watcher, start, made)
    assert [(e.id, e.revision) for e in events] == [(made.id, start + 1)]


@pytest.mark.timeout(120)
def test_an_early_claim_of_unknown_outcome_is_not_taken_for_another_creates_of_its_id(
    faulty: Callable[..., tuple[nbdb.Database, FaultyStore]], open_db: Callable[..., nbdb.Database]
) -> None:
    """An id the caller gave may be created by another process too, which may guess the same revision: a claim
    naming (the id, the guess) found after a lost early claim is not this commit's own unless it names its
    topic (and the id is fresh). Taken for its own, it stayed tied to the other topic, where the id never
    landed: a third object took the value over while this one held it."""
    db, store = faulty()
    warm = _Warm(db)
    sequencer = warm.backend.sequencer
    guess = sequencer.predict()
    assert guess is not None
    sequencer.unguess(guess)  # the next create is guessed that number again
    obj = Chassis(id=uuid.uuid4(), name="same-id", topic="t1")
    text = layout.unique_text(UniqueKey(*obj.unique_values()[0]))
    p = warm.backend.partitions
    # The other process's early claim for its create of the same id in t2 (which never lands).
    p.store.apply([(layout.W_CLAIM, (p.ns, obj.nbdb_table, text, obj.id, "t2", guess))])
    fault = store.inject(Fault(CLAIMS, "request"))  # this one's claim (marked: the id is given): lost unsent
    made = db.create(obj)
    assert fault.hits == 1 and warm.early[-1] == 1
    other = open_db()
    with pytest.raises(nbdb.UniqueViolationError) as info:
        other.create(Chassis(name="same-id", topic="t3"))
    assert info.value.existing == made.id
    assert [c.id for c in other.list(Chassis) if c.name == "same-id"] == [made.id]
    claim = warm.backend.claims.read(obj.nbdb_table, text, serial=True)
    assert claim is not None and (claim.owner, claim.part) == (made.id, "t1"), claim


@pytest.mark.timeout(120)
@pytest.mark.parametrize("lost", ["reply", "reply-unread"])
def test_an_early_claim_of_unknown_outcome_for_a_given_id_costs_no_revision(
    lost: str, faulty: Callable[..., tuple[nbdb.Database, FaultyStore]], open_db: Callable[..., nbdb.Database]
) -> None:
    """A create of an id the caller gave (not fresh: another process may create it too, and guess the same
    number) whose early claim's reply was lost: the claim found (its object, its topic, its guess) is known for
    its own by the mark it was sent with, so it is kept (or re-tied), not resolved. Resolved, it sealed the
    commit's own topic at its guess, its revision: the batch failed, and that revision was voided (a second
    one taken, the batch sent twice)."""
    db, store, watcher, warm, start = _warm_and_watched(faulty)
    fault = store.inject(Fault(CLAIMS, "reply"))
    if lost == "reply-unread":  # and every try of the serial read that would settle it fails too
        unread = store.inject(Fault(writes_of(layout.Q_CLAIM), "fail", times=10**9))
    store.applied.clear()
    obj = Chassis(id=uuid.uuid4(), name="given-id", topic="t1")
    made = db.create(obj)
    if lost == "reply-unread":
        unread.times = 0
        assert unread.hits > 1, "the claim was not left unsettled"
    assert made.id == obj.id
    assert fault.hits == 1 and fault.dropped is not None and fault.dropped.applied and warm.early[0] == 1
    assert _sent(store, layout.W_CHANGE) == 1, "the batch was sent more than once"
    assert db.backend.current_revision() == start + 1, "a revision was taken and lost"
    text = layout.unique_text(UniqueKey(*made.unique_values()[0]))
    claim = warm.backend.claims.read(made.nbdb_table, text, serial=True)
    assert claim is not None and (claim.owner, claim.part, claim.rev) == (made.id, "t1", start + 1)
    events = _held_and_landed_once(open_db, watcher, start, made)
    assert [(e.id, e.revision) for e in events] == [(made.id, start + 1)]


@pytest.mark.timeout(120)
def test_another_creates_early_claim_of_a_given_id_in_the_same_topic_is_not_taken_for_its_own(
    faulty: Callable[..., tuple[nbdb.Database, FaultyStore]], open_db: Callable[..., nbdb.Database]
) -> None:
    """Another process's early claim of the same given id, in the same topic, under the same guess (its mark
    is not this commit's): this create's own claim lost unsent, the claim found is resolved, not taken for its
    own; the create lands once, holds the value, and the claim names it at its revision."""
    db, store = faulty()
    warm = _Warm(db)
    sequencer = warm.backend.sequencer
    guess = sequencer.predict()
    assert guess is not None
    sequencer.unguess(guess)
    obj = Chassis(id=uuid.uuid4(), name="same-id-same-topic", topic="t1")
    text = layout.unique_text(UniqueKey(*obj.unique_values()[0]))
    p = warm.backend.partitions
    p.store.apply([(layout.W_CLAIM_MARKED, (p.ns, obj.nbdb_table, text, obj.id, uuid.uuid4(), "t1", guess))])
    fault = store.inject(Fault(CLAIMS, "request"))
    made = db.create(obj)
    assert fault.hits == 1 and warm.early[-1] == 1
    other = open_db()
    with pytest.raises(nbdb.UniqueViolationError) as info:
        other.create(Chassis(name="same-id-same-topic", topic="t3"))
    assert info.value.existing == made.id
    claim = warm.backend.claims.read(obj.nbdb_table, text, serial=True)
    assert claim is not None and (claim.owner, claim.part) == (made.id, "t1"), claim


@pytest.mark.timeout(120)
@pytest.mark.parametrize("guess", ["below", "above"])
def test_an_early_claim_of_a_given_id_whose_retie_was_lost_unsent_is_still_its_own(
    guess: str, faulty: Callable[..., tuple[nbdb.Database, FaultyStore]], open_db: Callable[..., nbdb.Database]
) -> None:
    """A create of an id the caller gave whose early claim was taken under a guess that is not its revision
    (another process took a number first, or the commit guessed past its own); the compare-and-set re-tying it
    is lost unsent. The claim found next (its object, its guess, its mark as prev) is its own: re-tied, not
    resolved. Resolved (a prev that is no object taken for a previous holder), it sealed the commit's own topic
    at the guess: above the revision, the batch failed on that seal and its revision was voided."""
    db, store, watcher, warm, start = _warm_and_watched(faulty)
    sequencer = warm.backend.sequencer
    held: int | None = None
    if guess == "below":  # another process takes the guessed number: the take gets the next
        other = RevisionSequencer(store.real, warm.backend.partitions, warm.backend.options, CommitQueue())
        other.void(other.allocate("t-other", frozenset({"Chassis"})))
    else:  # a commit in flight holds the next guess; this create is guessed the one after but takes the next
        held = sequencer.predict()
        assert held is not None
    retie = store.inject(Fault(writes_of(layout.W_CLAIM_SET), "request"))
    store.applied.clear()
    obj = Chassis(id=uuid.uuid4(), name=f"retie-{guess}", topic="t1")
    try:
        made = db.create(obj)
    finally:
        if held is not None:
            sequencer.unguess(held)
    assert warm.early[-1] == 1 and retie.hits == 1, "the early claim's re-tie was not lost"
    seals = sum(1 for called in store.applied if layout.W_LAST_ABOVE in called and layout.W_CHANGE not in called)
    assert seals == 0, "the commit sealed its own topic (its own claim resolved as another's)"
    assert _sent(store, layout.W_CHANGE) == 1, "the batch was sent more than once"
    text = layout.unique_text(UniqueKey(*made.unique_values()[0]))
    claim = warm.backend.claims.read(made.nbdb_table, text, serial=True)
    assert claim is not None and (claim.owner, claim.part, claim.rev) == (made.id, "t1", made.nbdb_revision)
    events = _held_and_landed_once(open_db, watcher, start, made)
    assert [(e.id, e.revision) for e in events] == [(made.id, made.nbdb_revision)]


def _sent(store: FaultyStore, *statements: Write) -> int:
    """How many requests that include one of ``statements`` reached the server."""
    return sum(1 for called in store.applied if any(s in called for s in statements))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("held_by", ["rival", "own-claim-landed", "own-claim-unlanded"])
def test_an_early_claim_refused_is_resolved_from_its_reply_not_sent_again(
    held_by: str, faulty: Callable[..., tuple[nbdb.Database, FaultyStore]], open_db: Callable[..., nbdb.Database]
) -> None:
    """A refused ``IF NOT EXISTS`` carries the claim in the way: the claimer resolves that one, with the same
    outcome as when it asked again (one claim LWT per create, not two)."""
    db, store = faulty()
    warm = _Warm(db)
    other = open_db()
    if held_by == "rival":
        holder = other.create(Chassis(name="taken", topic="t2"))
        store.applied.clear()
        with pytest.raises(nbdb.UniqueViolationError) as info:
            db.create(Chassis(name="taken", topic="t1"))
        assert info.value.existing == holder.id
        assert [c.id for c in other.list(Chassis)] == [holder.id]
    elif held_by == "own-claim-landed":  # the same create sent again (a retry after an unknown outcome)
        obj = Chassis(name="again", topic="t1")
        made = other.create(obj)
        store.applied.clear()
        with pytest.raises(nbdb.ConflictError):
            db.create(obj)
        assert [(c.id, c.version) for c in other.list(Chassis)] == [(made.id, 1)]
    else:  # its claim left behind by a commit of unknown outcome that never landed: taken over
        obj = Chassis(name="left", topic="t1")
        p = warm.backend.partitions
        text = layout.unique_text(UniqueKey(*obj.unique_values()[0]))
        part = "t1"  # the topic's partition
        never = other.backend.current_revision()  # another commit's: this object's row never lands there
        p.store.apply([(layout.W_CLAIM, (p.ns, obj.nbdb_table, text, obj.id, part, never))])
        store.applied.clear()
        made = db.create(obj)
        assert [c.id for c in other.list(Chassis)] == [made.id]
        with pytest.raises(nbdb.UniqueViolationError) as taken:
            other.create(Chassis(name="left", topic="t2"))
        assert taken.value.existing == made.id
    assert warm.early[-1] == 1, "the claim was not sent early"
    assert _sent(store, layout.W_CLAIM, layout.W_CLAIM_MARKED) == 1, "the claim in the way was asked for again"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("refusal", ["taken", "same-transaction"])
def test_a_create_refused_after_its_early_take_voids_its_revision(
    refusal: str, faulty: Callable[..., tuple[nbdb.Database, FaultyStore]], open_db: Callable[..., nbdb.Database]
) -> None:
    db, _ = faulty()
    watcher, _ = faulty(settle=30)
    warm = _Warm(db)
    holder = open_db().create(Chassis(name="held", topic="t2"))
    start = watcher.backend.current_revision()
    with pytest.raises(nbdb.UniqueViolationError):
        if refusal == "taken":
            db.create(Chassis(name="held", topic="t1"))
        else:
            with db.transaction() as txn:
                txn.create(Chassis(name="twice", topic="t1"))
                txn.create(Chassis(name="twice", topic="t1"))
    assert warm.early[0] >= 1 and warm.backend.current_revision() > start, "no revision taken while claims flew"
    later = db.create(Chassis(name="twice", topic="t1"))  # the claim a refused commit took early was dropped
    events = _dense_and_once(watcher, start, within=20)
    assert [e.id for e in events] == [later.id]
    assert {c.id for c in watcher.list(Chassis)} == {holder.id, later.id}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("where", ["same-topic", "other-topic"])
def test_a_create_whose_cached_target_is_gone_voids_its_early_revision_and_drops_its_claim(
    where: str, faulty: Callable[..., tuple[nbdb.Database, FaultyStore]], open_db: Callable[..., nbdb.Database]
) -> None:
    db, _ = faulty()
    watcher, _ = faulty(settle=30)
    warm = _Warm(db)
    # Its home is cached: a create that points to it reads nothing.
    switch = db.create(LogicalSwitch(name="sw", topic="t1"))
    open_db().delete(switch)  # by another process: the cache does not know
    start = watcher.backend.current_revision()
    topic = "t1" if where == "same-topic" else "t2"
    with pytest.raises(nbdb.NbdbError) as info:
        db.create(LogicalSwitchPort(switch=switch.id, name="p", topic=topic))
    assert warm.early[-1] == 1, "the create read before it claimed"
    assert not isinstance(info.value, nbdb.CommitUnknownError), info.value
    other = open_db().create(LogicalSwitch(name="sw2", topic="t1"))
    later = db.create(LogicalSwitchPort(switch=other.id, name="p", topic=topic))  # the early claim was dropped
    events = _dense_and_once(watcher, start, within=20, model=LogicalSwitchPort)
    assert [e.id for e in events] == [later.id]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("lost", ["request", "reply"])
def test_a_batch_after_early_claims_whose_reply_was_lost_lands_once_and_keeps_its_claim(
    lost: str, faulty: Callable[..., tuple[nbdb.Database, FaultyStore]], open_db: Callable[..., nbdb.Database]
) -> None:
    db, store, watcher, warm, start = _warm_and_watched(faulty)
    fault = store.inject(Fault(COMMIT_BATCH, lost))
    made = db.create(Chassis(name="early-batch", topic="t0"))
    assert fault.hits == 1 and warm.early[0] == 1
    events = _held_and_landed_once(open_db, watcher, start, made)
    assert [e.id for e in events] == [made.id]


@pytest.mark.timeout(120)
def test_a_fenced_create_past_the_loss_of_its_lock_voids_its_early_revision_and_drops_its_claim(
    faulty: Callable[..., tuple[nbdb.Database, FaultyStore]], open_db: Callable[..., nbdb.Database]
) -> None:
    db, _, watcher, warm, start = _warm_and_watched(faulty)
    with db.lock("leader", ttl=30) as held:
        p = warm.backend.partitions
        p.store.apply([(layout.W_LOCK_DELETE, (p.ns, "leader", held.token))])  # the lease vanished
        with pytest.raises(nbdb.LockLostError):
            db.create(Chassis(name="fenced", topic="t1"), fence=held)
    assert warm.early[0] == 1
    later = open_db().create(Chassis(name="fenced", topic="t2"))  # its claim was dropped
    events = _dense_and_once(watcher, start, within=20)
    assert [e.id for e in events] == [later.id]


@pytest.mark.timeout(180)
def test_concurrent_creates_whose_early_claims_lose_replies_land_once_each_tied_to_its_revision(
    faulty: Callable[..., tuple[nbdb.Database, FaultyStore]],
) -> None:
    db, store, watcher, warm, start = _warm_and_watched(faulty)
    count = iter(range(1, 10**9))
    # Every third claim's reply is lost (the claim applied), and every fifth serial read of a claim fails.
    store.inject(Fault(lambda called: CLAIMS(called) and next(count) % 3 == 0, "reply", times=10**9))
    reads = iter(range(1, 10**9))
    store.inject(Fault(lambda called: layout.Q_CLAIM in called and next(reads) % 5 == 0, "fail", times=10**9))
    made: list[Chassis] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        try:
            for i in range(6):
                # Every other one with an id of the caller's (its early claim marked, not fresh).
                given = {"id": uuid.uuid4()} if i % 2 else {}
                obj = db.create(Chassis(name=f"c{index}-{i}", topic=f"t{index % 3}", **given))
                with lock:
                    made.append(obj)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    assert failures == []
    assert sum(1 for n in warm.early if n) >= len(made) // 2, "few claims were sent early"
    events = _dense_and_once(watcher, start, within=60)
    assert sorted(str(e.id) for e in events) == sorted(str(m.id) for m in made)
    landed = {e.id: e.revision for e in events}
    for obj in made:
        (pair,) = obj.unique_values()
        claim = warm.backend.claims.read(obj.nbdb_table, layout.unique_text(UniqueKey(*pair)), serial=True)
        assert claim is not None and claim.owner == obj.id and claim.rev == landed[obj.id], (obj.name, claim)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("early", [False, True], ids=["cold", "claims-sent-early"])
@pytest.mark.parametrize("watching", ["another-process", "this-process"])
def test_a_batch_the_store_refused_unsent_voids_its_revision(
    early: bool,
    watching: str,
    faulty: Callable[..., tuple[nbdb.Database, FaultyStore]],
    open_db: Callable[..., nbdb.Database],
) -> None:
    db, store = faulty(settle=30)
    watcher = faulty(settle=30)[0] if watching == "another-process" else db
    if early:
        _Warm(db)
    else:
        open_db().create(LogicalSwitch(name="first", topic="t1"))  # the batch below is not a partition's first
    start = watcher.backend.current_revision()
    fault = store.inject(Fault(COMMIT_BATCH, "fail"))
    with pytest.raises(nbdb.BackendUnavailableError):
        db.create(Chassis(name="unsent", topic="t1"))
    assert fault.hits == 1
    assert watcher.backend.current_revision() == start + 1, "the failed commit took a revision"
    # The store's word: the batch was not applied. Its revision is void, so a watcher (of any process)
    # passes it at once instead of waiting ``settle`` (30 s here) and sealing the topic (nothing else
    # commits there that would show the revision passed).
    later = db.create(Chassis(name="unsent", topic="t2"))  # and its claim was dropped
    events = _dense_and_once(watcher, start, within=15)
    assert [e.id for e in events] == [later.id]


@pytest.mark.timeout(120)
def test_a_watcher_waits_settle_once_for_the_revisions_a_crashed_process_left_unfilled(
    faulty: Callable[..., tuple[nbdb.Database, FaultyStore]], open_db: Callable[..., nbdb.Database]
) -> None:
    crashed, _ = faulty()
    watcher, _ = faulty(settle=3)
    start = watcher.backend.current_revision()
    # A process took the revisions of its commits in flight (one group take) and died before any batch.
    backend = crashed.backend
    assert isinstance(backend, WideColumnBackend)
    orphans = 6
    for i in range(orphans):
        backend.sequencer.allocate(f"t{i}", frozenset({"Chassis"}))
    later = open_db().create(Chassis(name="after-the-crash", topic="t9"))
    began = time.monotonic()
    events = _dense_and_once(watcher, start, within=60)
    took = time.monotonic() - began
    assert [e.id for e in events] == [later.id]
    # Each was first seen by the same step: each is overdue ``settle`` after that, not ``settle`` after the
    # one before it was resolved (six settles, 18 s, for what one settle decides).
    assert took < 2 * 3 + 6, f"the watch waited {took:.1f}s: a settle per unfilled revision"
