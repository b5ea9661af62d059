"""The data API on Cassandra, where the kit cannot look: commits stalled between their checks and their batch.

Unique values, fences, expiry and pages are each built around the partition
seal (see :mod:`nbdb.families.widecolumn`); these tests hold a commit right
before its batch (the committer's test hook) while a rival acts, and check
that the stalled commit can no longer land. The pages tests check the
server's order of ids against the one the family computes. All share the
session's Cassandra node.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import nbdb
from nbdb.conformance.kit import check_lease_primitives, eventually
from nbdb.events import EventKind
from nbdb.families import rules
from nbdb.models import Chassis, LogicalSwitch
from nbdb.testing import fixtures
from nbdb.testing.cassandra import CassandraServer
from nbdb.testing.databases import databases

pytest.importorskip("cassandra")

from nbdb.backends.cassandra.dialect import uuid_order
from nbdb.families.widecolumn import Delete, WideColumnBackend, layout
from nbdb.families.widecolumn.primitives import PendingApply
from nbdb.families.widecolumn.sequencer import GUESS_AFTER, CommitQueue, RevisionSequencer
from nbdb.spi import UniqueKey

pytestmark = pytest.mark.timeout(120)

cassandra_server = fixtures.cassandra_server


@pytest.fixture
def open_db(cassandra_server: CassandraServer) -> Iterator[Callable[[], nbdb.Database]]:
    """Databases on the shared node, in one namespace private to the test."""
    with databases(cassandra_server.url, f"d-{uuid.uuid4().hex[:10]}") as factory:
        yield factory


def family(db: nbdb.Database) -> WideColumnBackend:
    assert isinstance(db.backend, WideColumnBackend)
    return db.backend


class Stall:
    """A ``before_commit`` hook that holds the first commit right before its batch until released."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.reached = threading.Event()
        self.release = threading.Event()

    def __call__(self, revision: int) -> None:
        self.calls.append(revision)
        if len(self.calls) == 1:
            self.reached.set()
            assert self.release.wait(60), "the test never released the stalled commit"


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run ``call`` in a thread; the list gets its result or the exception it raised."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:  # handed to the test, which asserts on it
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


# ---------------------------------------------------------------- fences


def test_a_fenced_commit_stalled_past_the_loss_of_its_lock_never_lands(open_db: Callable[[], nbdb.Database]) -> None:
    db, rival = open_db(), open_db()
    obj = db.create(LogicalSwitch(name="fenced", topic="t"))
    stall = Stall()
    with db.lock("leader", ttl=30) as held:
        family(db).before_commit = stall
        thread, outcome = in_thread(lambda: db.update(obj.replace(name="late"), fence=held))
        assert stall.reached.wait(30), "the fenced commit passed its check"
        # The lease vanishes (as if it had expired) and a rival takes the lock: lock() returns only
        # once the stalled commit, registered under the lock, can no longer land.
        p = family(db).partitions
        p.store.apply([(layout.W_LOCK_DELETE, (p.ns, "leader", held.token))])
        with rival.lock("leader", ttl=10, timeout=20):
            stall.release.set()
            thread.join(60)
            assert isinstance(outcome[0], nbdb.LockLostError), outcome
            assert rival.get(LogicalSwitch, obj.id).name == "fenced"
            assert rival.get(LogicalSwitch, obj.id).version == obj.version
    assert len(stall.calls) == 1, "the retry found the lock lost before its batch"


def test_the_leases_lock_holds_are_public_primitives_the_kit_takes_away(open_db: Callable[[], nbdb.Database]) -> None:
    """The kit's lease tests skipped Cassandra (no public primitives): its fenced commits' store check went
    untested by the kit. The primitives keep one holder, and a lease taken away behind a holder's handle
    makes the store refuse the holder's next fenced commit (its handle then says lost)."""
    db = open_db()
    check_lease_primitives(family(db), f"kit-lease-{uuid.uuid4().hex[:8]}")
    obj = db.create(LogicalSwitch(name="fenced", topic="t"))
    with db.lock("leader", ttl=30) as held:
        family(db).release_lease("leader", held.token.encode())
        assert family(db).acquire_lease("leader", b"kit-rival", 30)
        try:
            with pytest.raises(nbdb.LockLostError):
                db.update(obj.replace(name="late"), fence=held)
            assert held.lost
        finally:
            family(db).release_lease("leader", b"kit-rival")
    assert db.get(LogicalSwitch, obj.id).name == "fenced"


# ---------------------------------------------------------------- unique values


@pytest.mark.parametrize("early", [False, True], ids=["claimed-after-the-revision", "claimed-early"])
def test_a_stalled_claim_loses_the_value_to_a_rival_in_another_topic(
    open_db: Callable[[], nbdb.Database], early: bool
) -> None:
    slow, fast = open_db(), open_db()
    if early:  # once the process has taken a revision, a create sends its claim with it, under a guess
        slow.create(LogicalSwitch(name="warm", topic="t1"))
        guess = family(slow).sequencer.predict()
        assert guess is not None
        family(slow).sequencer.unguess(guess)  # a guess asked for and not used: the create's own is the same
    stall = Stall()
    family(slow).before_commit = stall
    thread, outcome = in_thread(lambda: slow.create(Chassis(name="ch1", topic="t1")))
    assert stall.reached.wait(30), "the slow create holds its claim"
    # The rival seals the slow create's partition at its revision, finds the value held by nobody, takes it.
    winner = fast.create(Chassis(name="ch1", topic="t2"))
    stall.release.set()
    thread.join(60)
    assert isinstance(outcome[0], nbdb.UniqueViolationError), outcome
    assert outcome[0].existing == winner.id
    assert [c.id for c in fast.list(Chassis) if c.name == "ch1"] == [winner.id]
    assert slow.get_by(Chassis, name="ch1") == winner


def test_a_landed_claim_is_kept_against_a_rival_in_another_topic(open_db: Callable[[], nbdb.Database]) -> None:
    first, second = open_db(), open_db()
    held = first.create(Chassis(name="ch2", topic="t1"))
    with pytest.raises(nbdb.UniqueViolationError) as info:
        second.create(Chassis(name="ch2", topic="t2"))
    assert info.value.existing == held.id
    first.delete(held)
    # Given up by the delete: the value is free again, in any topic.
    again = second.create(Chassis(name="ch2", topic="t2"))
    assert first.get_by(Chassis, name="ch2") == again


def claim_of(db: nbdb.Database, obj: Chassis) -> Any:
    """The claim row of ``obj``'s name, read serially."""
    (pair,) = obj.unique_values()
    return family(db).claims.read(obj.nbdb_table, layout.unique_text(UniqueKey(*pair)), serial=True)


@pytest.mark.parametrize("miss", [-1, 3], ids=["guess-below", "guess-above"])
def test_a_claim_sent_early_under_a_wrong_guess_is_tied_to_the_commit(
    open_db: Callable[[], nbdb.Database], monkeypatch: pytest.MonkeyPatch, miss: int
) -> None:
    db, rival = open_db(), open_db()
    sequencer = family(db).sequencer
    db.create(LogicalSwitch(name="warm", topic="t1"))
    # The guess is wrong (another client took revisions, or this process misjudged the head): the claim
    # sent early names a revision that is not the commit's, and is re-tied to it before the batch.
    monkeypatch.setattr(sequencer, "predict", lambda: sequencer.current() + 1 + miss)
    made = db.create(Chassis(name="guessed", topic="t1"))
    claim = claim_of(db, made)
    assert (claim.owner, claim.rev) == (made.id, sequencer.current())
    assert rival.get_by(Chassis, name="guessed") == made
    with pytest.raises(nbdb.UniqueViolationError) as info:
        rival.create(Chassis(name="guessed", topic="t2"))
    assert info.value.existing == made.id
    # A create refused after its early claim was taken drops that claim (the value stays its holder's).
    with pytest.raises(nbdb.UniqueViolationError):
        db.create(Chassis(name="guessed", topic="t3"))
    assert claim_of(db, made).owner == made.id


def _reties(store: Any, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every compare-and-set ``store.apply`` sends from now on that re-ties a claim sent early under a wrong
    guess (a Paxos round per create), in the list returned."""
    apply = store.apply
    reties: list[Any] = []

    def counted(writes: Any) -> Any:
        reties.extend(w for w, _ in writes if w is layout.W_CLAIM_SET)
        return apply(writes)

    monkeypatch.setattr(store, "apply", counted)
    return reties


def test_concurrent_creates_of_one_process_are_each_guessed_their_revision(
    open_db: Callable[[], nbdb.Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = open_db()
    backend = family(db)
    sequencer, queue = backend.sequencer, backend.sequencer._q
    db.create(LogicalSwitch(name="warm", topic="t0"))
    writers = 6
    # The first create to ask for its revision waits, before its group is formed, until all have queued:
    # they are taken as one group. (Waiting inside the take instead left the first alone in its group,
    # given the head's next number whatever its guess: which commit asks first is a race, so the test
    # failed about one run in three.)
    serve, held = sequencer._serve, threading.Event()

    def first_serve_waits() -> None:
        if not held.is_set():
            held.set()
            pause = threading.Event()
            for _ in range(600):
                with queue.cond:
                    if len(queue.waiting) >= writers:
                        break
                pause.wait(0.05)
        serve()

    monkeypatch.setattr(sequencer, "_serve", first_serve_waits)
    reties = _reties(backend.partitions.store, monkeypatch)
    start = backend.current_revision()
    with db.watch(Chassis, since=start) as watch:
        gate = threading.Barrier(writers)
        threads = [in_thread(lambda i=i: (gate.wait(30), db.create(Chassis(name=f"g{i}", topic=f"t{i}")))[1])
                   for i in range(writers)]  # fmt: skip
        for thread, _ in threads:
            thread.join(60)
        made = [outcome[0] for _, outcome in threads]
        assert all(isinstance(m, Chassis) for m in made), made
        # Each commit's claim is tied to its own revision, and the group's revisions are dense.
        revisions = sorted(claim_of(db, m).rev for m in made)
        assert revisions == list(range(start + 1, start + 1 + writers))
        assert reties == [], "a create of the group was guessed a revision it did not take"
        seen = [next(watch) for _ in range(writers)]
    assert sorted(e.revision for e in seen) == revisions
    assert {e.object.id for e in seen} == {m.id for m in made}


def test_a_create_asks_for_its_revision_while_its_early_claim_is_in_flight(
    open_db: Callable[[], nbdb.Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = open_db()
    backend = family(db)
    sequencer, store = backend.sequencer, backend.partitions.store
    db.create(LogicalSwitch(name="warm", topic="t0"))
    slow, quick = Chassis(name="slow", topic="t1"), Chassis(name="quick", topic="t2")
    # The reply to the slow create's early claim is held back; every re-tie of a claim is counted.
    sent, release, taken = threading.Event(), threading.Event(), threading.Event()
    start_apply, allocate = store.start_apply, sequencer.allocate

    class HeldReply(PendingApply):
        def __init__(self, inner: PendingApply) -> None:
            self.inner = inner

        def result(self) -> Any:
            release.wait(30)
            return self.inner.result()

        def done(self) -> bool:
            return release.is_set() and self.inner.done()

    def holding(writes: Any) -> PendingApply:
        pending = start_apply(writes)
        if any(w is layout.W_CLAIM and params[3] == slow.id for w, params in writes):
            sent.set()
            return HeldReply(pending)
        return pending

    def noted(*args: Any) -> int:
        revision = allocate(*args)
        taken.set()
        return revision

    monkeypatch.setattr(store, "start_apply", holding)
    reties = _reties(store, monkeypatch)
    monkeypatch.setattr(sequencer, "allocate", noted)
    start = backend.current_revision()
    thread, outcome = in_thread(lambda: db.create(slow))
    try:
        assert sent.wait(30), "the slow create sent no claim early"
        # It has nothing to read: it asks for its revision (the one it was guessed) while its claim is in
        # flight. Waiting for the claim's reply first let the quick create, guessed the next number, take
        # the slow one's: both guesses were wrong, two more compare-and-sets re-tying the claims.
        assert taken.wait(30), "the slow create did not ask for its revision while its claim was in flight"
        made = db.create(quick)
    finally:
        release.set()
        thread.join(60)
    assert outcome and isinstance(outcome[0], Chassis), outcome
    assert reties == [], "a create was guessed a revision it did not take"
    assert (claim_of(db, outcome[0]).rev, claim_of(db, made).rev) == (start + 1, start + 2)


def test_a_rival_sealing_a_guess_handed_back_leaves_no_hole_in_the_revisions(
    open_db: Callable[[], nbdb.Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, rival = open_db(), open_db()
    sequencer = family(db).sequencer
    db.create(LogicalSwitch(name="warm", topic="t1"))
    start = family(db).current_revision()
    # Four creates were guessed revisions and failed before asking for them (their reads failed, say).
    for guess in [sequencer.predict() for _ in range(4)]:
        assert guess is not None
        sequencer.unguess(guess)
    # The next create sends its claim early under its guess, and asks for its revision after the rival.
    allocate, rival_done = sequencer.allocate, threading.Event()

    def after_the_rival(*args: Any) -> int:
        assert rival_done.wait(60), "the rival never finished"
        return allocate(*args)

    monkeypatch.setattr(sequencer, "allocate", after_the_rival)
    slow = Chassis(name="contested", topic="t1")
    thread, outcome = in_thread(lambda: db.create(slow))
    for _ in range(600):
        if (claim := claim_of(db, slow)) is not None and claim.owner == slow.id:
            break
        threading.Event().wait(0.05)
    # The rival seals the slow create's partition at the revision its claim names, finds the value held
    # by nobody and takes it. The seal must not reach past the revisions handed out and in flight.
    winner = rival.create(Chassis(name="contested", topic="t2"))
    rival_done.set()
    thread.join(60)
    assert isinstance(outcome[0], nbdb.UniqueViolationError), outcome
    assert outcome[0].existing == winner.id
    # The next commit to the topic lands right after, not past a hole of unused revisions that watchers
    # from before it take for commits the store lost (HistoryGoneError).
    with db.watch(LogicalSwitch, since=start) as watch:
        late = db.create(LogicalSwitch(name="late", topic="t1"))
        event = next(watch)
    assert event.object.id == late.id
    assert event.revision <= start + 4, "the sequencer skipped revisions"


def test_a_process_guesses_no_revision_after_a_take_that_found_another_process_numbers(
    open_db: Callable[[], nbdb.Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, rival = open_db(), open_db()
    family(rival).sequencer._q = CommitQueue()  # the rival stands in for another process: it takes on its own
    sequencer, store = family(db).sequencer, family(db).partitions.store
    guesses: list[int | None] = []
    predict = sequencer.predict

    def guessed() -> int | None:
        guesses.append(predict())
        return guesses[-1]

    monkeypatch.setattr(sequencer, "predict", guessed)
    reties = _reties(store, monkeypatch)
    start = family(db).current_revision()
    made: list[Chassis] = []
    with db.watch(Chassis, since=start) as watch:
        made.append(db.create(Chassis(name="warm", topic="t2")))
        # The two processes take in turns. db's second take loses a race to the rival's (its guess was wrong:
        # one re-tie); from then on each of its takes wins its first try on a head it read, past the rival's
        # number taken since its own last take: a guess would be spoiled by the rival's next take.
        for i in range(4):
            made.append(rival.create(Chassis(name=f"r{i}", topic="t1")))
            made.append(db.create(Chassis(name=f"d{i}", topic="t2")))
            if i == 0:
                guesses.clear()
                reties.clear()
        assert guesses == [None, None, None], "a guess after a take that found another process's number"
        assert reties == [], "a claim sent early under a guess the other process's take spoiled"
        # Alone again: once GUESS_AFTER takes in a row found only db's own numbers since the one before, it
        # guesses again, and right.
        guesses.clear()
        for i in range(GUESS_AFTER):
            made.append(db.create(Chassis(name=f"alone{i}", topic="t2")))
        assert guesses == [None] * GUESS_AFTER
        made.append(db.create(Chassis(name="guessed", topic="t2")))
        assert guesses[-1] == family(db).current_revision(), "no guess once the other process stopped taking"
        assert reties == []
        # Each claim is tied to its commit's revision, the revisions are dense, and a watch gets every one.
        revisions = sorted(claim_of(db, m).rev for m in made)
        assert revisions == list(range(start + 1, start + 1 + len(made)))
        seen = [next(watch) for _ in made]
    assert sorted(e.revision for e in seen) == revisions
    assert {e.object.id for e in seen} == {m.id for m in made}


@pytest.mark.parametrize("at_the_end", [False, True], ids=["in-the-bucket", "across-the-bucket-end"])
def test_a_rival_sealing_a_guess_held_in_flight_leaves_no_hole_in_the_revisions(
    open_db: Callable[[], nbdb.Database], monkeypatch: pytest.MonkeyPatch, at_the_end: bool
) -> None:
    if at_the_end:
        monkeypatch.setattr(RevisionSequencer, "bucket_size", 8)
    db, other = open_db(), open_db()
    sequencer = family(db).sequencer
    db.create(LogicalSwitch(name="warm", topic="t1"))
    while at_the_end and family(db).current_revision() % 8 != 7:  # the seal lands in the next bucket
        db.create(LogicalSwitch(name="fill", topic="t0"))
    start = family(db).current_revision()
    with db.watch(LogicalSwitch, since=start) as watch:
        # Three creates in flight, each guessed its own revision (the third: start + 3); the third's claim
        # was sent early, and a rival settling it sealed its topic at the guess, above the head.
        guesses = [sequencer.predict() for _ in range(3)]
        assert guesses == [start + 1, start + 2, start + 3], guesses
        family(other).partitions.seal_through(rules.topic_part("t1"), start + 3)
        try:
            # Another handle commits to the sealed topic below the seal: refused on last_rev, then again.
            made = [other.create(LogicalSwitch(name=f"after{i}", topic="t1")) for i in range(2)]
        finally:
            for guess in guesses:
                assert guess is not None
                sequencer.unguess(guess)
        # The sequencer took the numbers up to the seal and voided them: no hole, no HistoryGoneError.
        seen = [next(watch) for _ in made]
    assert [e.object.id for e in seen] == [m.id for m in made]
    assert [e.revision for e in seen] == [start + 4, start + 5], "the sequencer skipped revisions"
    assert family(other).current_revision() == start + 5


def test_a_failed_create_drops_the_claim_it_sent_early(open_db: Callable[[], nbdb.Database]) -> None:
    db = open_db()
    db.create(LogicalSwitch(name="warm", topic="t1"))
    first = db.create(Chassis(name="once", topic="t1"))
    # The same id created again: refused by its partition's row, after its new value's claim was sent early.
    twice = Chassis(id=first.id, name="twice", topic="t1")
    with pytest.raises(nbdb.ConflictError):
        db.create(twice)
    assert claim_of(db, twice) is None
    assert db.create(Chassis(name="twice", topic="t2")).name == "twice"


def test_a_delete_gives_its_value_up(open_db: Callable[[], nbdb.Database]) -> None:
    db, rival = open_db(), open_db()
    held = db.create(Chassis(name="given", topic="t1"))
    db.delete(held)
    # The drop is sent after the commit landed, without waiting for its reply.
    assert eventually(lambda: claim_of(db, held) is None), "the delete dropped the claim of the value it gave up"
    again = rival.create(Chassis(name="given", topic="t2"))
    assert claim_of(db, again).owner == again.id
    # A rename gives the old value up the same way.
    moved = rival.update(again.replace(name="other"))
    assert eventually(lambda: claim_of(db, again) is None)
    assert claim_of(db, moved).owner == moved.id


def test_a_value_given_up_is_taken_again_at_once(open_db: Callable[[], nbdb.Database]) -> None:
    db = open_db()
    for i in range(5):  # the same name, deleted and created again by one Database, in two topics
        made = db.create(Chassis(name="again", topic=f"t{i % 2}"))
        assert claim_of(db, made).owner == made.id
        db.delete(made)
    assert db.get_by(Chassis, name="again") is None
    assert eventually(lambda: claim_of(db, made) is None)


# ---------------------------------------------------------------- expiry


def test_the_reaper_forgets_a_create_that_never_landed(open_db: Callable[[], nbdb.Database]) -> None:
    db = open_db()

    def fail(revision: int) -> None:
        raise nbdb.BackendUnavailableError("the writer died before its batch")

    family(db).before_commit = fail
    with pytest.raises(nbdb.BackendUnavailableError):
        db.create(LogicalSwitch(name="never", topic="t"), ttl=0.5)
    family(db).before_commit = None
    p = family(db).partitions

    def index() -> list[Any]:
        return p.store.select(layout.Q_EXPIRIES, (p.ns,))

    assert index(), "the deadline is written before the batch"
    assert eventually(lambda: not index(), timeout=30, interval=0.3)
    assert len(db.list(LogicalSwitch)) == 0


def test_an_id_created_again_expires_again(open_db: Callable[[], nbdb.Database]) -> None:
    db = open_db()
    id = uuid.uuid4()
    with db.watch(LogicalSwitch) as watch:
        for _ in range(2):
            db.create(LogicalSwitch(id=id, name="twice", topic="t"), ttl=0.5)
            deleted: list[uuid.UUID] = []

            def gone(into: list[uuid.UUID] = deleted) -> bool:
                into += [e.id for e in watch.poll(0.2) if e.kind is EventKind.DELETED]
                return id in into

            assert eventually(gone, timeout=30, interval=0.1)
    with pytest.raises(nbdb.NotFoundError):
        db.get(LogicalSwitch, id)


# ---------------------------------------------------------------- pages


def awkward_ids() -> list[uuid.UUID]:
    """Ids where the server's order and the 128-bit order disagree: time-based ones, high bits set."""
    ids = [uuid.uuid1() for _ in range(4)] + [uuid.uuid4() for _ in range(6)]
    for msb_high, lsb_high in ((True, False), (False, True), (True, True), (False, False)):
        value = uuid.uuid4().int
        value = value | 1 << 127 if msb_high else value & ~(1 << 127)
        value = value | 1 << 63 if lsb_high else value & ~(1 << 63)
        ids.append(uuid.UUID(int=value))
    return ids


def test_the_server_orders_ids_as_the_family_computes(open_db: Callable[[], nbdb.Database]) -> None:
    db = open_db()
    ids = awkward_ids()
    for id in ids:
        db.create(LogicalSwitch(id=id, name=f"s{id.hex[:6]}", topic="t"))
    p = family(db).partitions
    rows = p.store.select(layout.Q_LIST, (p.ns, rules.topic_part("t"), layout.OBJECT, 0, LogicalSwitch.nbdb_table))
    assert [row.id for row in rows] == sorted(ids, key=uuid_order)


def test_pages_stay_at_one_revision_while_objects_come_and_go(open_db: Callable[[], nbdb.Database]) -> None:
    db = open_db()
    ids = awkward_ids() + awkward_ids()
    made = {db.create(LogicalSwitch(id=id, name="p", topic="ab"[i % 2])).id for i, id in enumerate(ids)}
    first = db.list(LogicalSwitch, limit=3)
    seen = [s.id for s in first]
    token = first.continue_token
    doomed = sorted(made, key=uuid_order)
    while token is not None:
        # Between pages: delete objects of pages to come and of pages past, create new ones.
        for id in (doomed.pop(), doomed.pop(0)) if len(doomed) > 1 else ():
            db.delete(db.get(LogicalSwitch, id))
        db.create(LogicalSwitch(name="new", topic="a"))
        page = db.list(LogicalSwitch, limit=3, after=token)
        assert page.revision == first.revision
        seen += [s.id for s in page]
        token = page.continue_token
    assert sorted(seen, key=str) == sorted(made, key=str), "every object of the first page's revision, once"


# ---------------------------------------------------------------- a crash that lost a batch but kept the head


def test_a_watch_notices_the_store_lost_a_commit_it_saw_land(open_db: Callable[[], nbdb.Database]) -> None:
    db = open_db()
    with db.watch(LogicalSwitch) as watch:
        made = db.create(LogicalSwitch(name="lost", topic="t"))
        assert [e.id for e in watch.poll(5)] == [made.id]
        # What a node that crashed without a durable commit log can come back with: the revision's
        # head and index row (written first) kept, the batch lost; a list then seals the topic past it.
        p, part, revision = family(db).partitions, rules.topic_part("t"), made.nbdb_revision
        lose = Delete(layout.DATA, layout.OBJECT_KEY)
        p.store.apply([(lose, (p.ns, part, layout.CHANGE, revision, LogicalSwitch.nbdb_table, made.id))])
        p.store.apply([(lose, (p.ns, part, layout.OBJECT, 0, LogicalSwitch.nbdb_table, made.id))])
        assert len(db.list(LogicalSwitch)) == 0
        with pytest.raises(nbdb.HistoryGoneError, match="lost"):
            for _ in range(50):
                watch.poll(0.2)
