"""Group commit in the key-value family: concurrent commits share a request, each keeps its own outcome.

The store is the in-process key-value store with groups checked like nested
etcd transactions (every member's conditions against one snapshot, the
members that hold applied at one revision). The properties: whatever the
interleaving, each commit's outcome and the final store equal running the
commits one by one in the order the groups were sent; a lost reply in the
middle of a group is settled per commit, never reported as a conflict.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nbdb
from nbdb import errors
from nbdb.api import Database
from nbdb.families.kv import (
    APPLIED,
    CommitToken,
    Condition,
    Exists,
    KeyCommit,
    LeaseHeld,
    PrefixUnchangedSince,
    VersionIs,
)
from nbdb.families.kvgroup import GroupCommitter, GroupInterrupted, Outcome, PipelinedGroup, SnapshotGroup, footprint
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.retry import RetryPolicy
from nbdb.testing.kvmemory import KVMemoryBackend, MemoryStore

pytestmark = pytest.mark.timeout(120)


# ---------------------------------------------------------------- the committer alone


class _Gate:
    """A ``together`` that holds the first group until enough commits queue behind it."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.release = threading.Event()

    def alone(self, commit: int) -> int | None:
        self.groups.append([commit])
        self.release.wait(10)
        return None if commit < 0 else commit * 10

    def together(self, commits: Sequence[int]) -> list[Outcome]:
        self.groups.append(list(commits))
        out: list[Outcome] = []
        for c in commits:
            out.append(errors.ConflictError("odd") if c % 2 else c * 10)
        return out


def _recorder(committer: GroupCommitter[int], results: dict[int, Outcome]) -> Any:
    """A thread body that commits ``c`` and records its outcome (what it returned or raised) in ``results``."""

    def body(c: int) -> None:
        try:
            results[c] = committer.commit(c)
        except BaseException as exc:
            results[c] = exc

    return body


def _run(committer: GroupCommitter[int], commits: Sequence[int]) -> dict[int, Outcome]:
    results: dict[int, Outcome] = {}
    body = _recorder(committer, results)
    threads = [threading.Thread(target=body, args=(c,)) for c in commits]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_a_lone_commit_is_sent_alone() -> None:
    gate = _Gate()
    gate.release.set()
    committer = GroupCommitter(gate.alone, gate.together, lambda: PipelinedGroup[int](8))
    assert committer.commit(4) == 40
    assert committer.commit(-1) is None
    assert gate.groups == [[4], [-1]]


def _until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.001)


def _behind_one_in_flight(
    commits: Sequence[int], max_commits: int, together: Any = None
) -> tuple[_Gate, dict[int, Outcome], GroupCommitter[int]]:
    """Hold commit 100 in flight until ``commits`` all queue behind it, then let everything go."""
    gate = _Gate()
    committer = GroupCommitter(gate.alone, together or gate.together, lambda: PipelinedGroup[int](max_commits))
    first = threading.Thread(target=committer.commit, args=(100,))
    first.start()
    _until(lambda: bool(gate.groups))
    results: dict[int, Outcome] = {}
    waiting = threading.Thread(target=lambda: results.update(_run(committer, commits)))
    waiting.start()
    _until(lambda: len(committer._queue) == len(commits))
    gate.release.set()
    waiting.join(30)
    first.join(30)
    return gate, results, committer


def test_commits_that_wait_behind_one_in_flight_go_together_each_with_its_outcome() -> None:
    gate, results, _ = _behind_one_in_flight(range(1, 8), 3)
    assert gate.groups[0] == [100]
    assert sorted(len(g) for g in gate.groups[1:]) == [1, 3, 3]  # at most three a group, none lost
    assert sorted(c for g in gate.groups[1:] for c in g) == list(range(1, 8))
    grouped = {c for g in gate.groups[1:] if len(g) > 1 for c in g}
    for c in range(1, 8):
        outcome = results[c]
        if c % 2 and c in grouped:  # together() says odd commits conflict; alone() applies them
            assert isinstance(outcome, errors.ConflictError)
        else:
            assert outcome == c * 10


def test_a_failed_request_is_every_member_s_outcome() -> None:
    def together(commits: Sequence[int]) -> list[Outcome]:
        raise errors.CommitUnknownError("reply lost")

    _, results, _ = _behind_one_in_flight(range(1, 4), 8, together)
    assert all(isinstance(results[c], errors.CommitUnknownError) for c in range(1, 4))


def test_a_bug_in_the_leader_leaves_the_others_unknown_not_hanging() -> None:
    def together(commits: Sequence[int]) -> list[Outcome]:
        raise RuntimeError("bug")

    _, results, committer = _behind_one_in_flight(range(1, 4), 8, together)
    outcomes = [results[c] for c in range(1, 4)]
    assert sum(isinstance(o, RuntimeError) for o in outcomes) == 1  # the leader's
    assert sum(isinstance(o, errors.CommitUnknownError) for o in outcomes) == 2
    assert not committer._queue and committer._sending == 0


@pytest.mark.parametrize("applied", [False, True], ids=["rolled-back", "committed"])
def test_an_interrupted_leader_leaves_the_others_their_true_outcome_when_the_store_knows_it(applied: bool) -> None:
    # Ctrl-C in the leader's thread made every other member's commit a CommitUnknownError, though the store
    # (SQLite) knew that the group was rolled back, or committed.
    sent: list[list[int]] = []

    def together(commits: Sequence[int]) -> list[Outcome]:
        sent.append(list(commits))
        if len(sent) == 1:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt as exc:
                raise GroupInterrupted([c * 10 for c in commits] if applied else None) from exc
        return [c * 10 for c in commits]

    _, results, committer = _behind_one_in_flight(range(1, 4), 8, together)
    outcomes = [results[c] for c in range(1, 4)]
    assert sum(isinstance(o, KeyboardInterrupt) for o in outcomes) == 1  # the leader's
    assert sorted(o for o in outcomes if isinstance(o, int)) == [c * 10 for c in range(1, 4) if c != sent[0][0]]
    # Rolled back: the others were sent again, once, by the next leader.
    assert sorted(c for g in sent for c in g) == sorted([*range(1, 4), *([] if applied else sent[0][1:])])
    assert not committer._queue and committer._sending == 0


@pytest.mark.parametrize("applied", [False, True], ids=["rolled-back", "committed"])
def test_a_second_interrupt_of_the_leader_leaves_no_other_member_waiting(applied: bool) -> None:
    # The leader is interrupted in the store (Ctrl-C), then once more while it settles the group: right after
    # it queued the others again (rolled back), or right after it woke the next leader (committed). Each
    # other member must still wake, to lead or with its outcome: before, they waited for ever.
    sent: list[list[int]] = []
    leader: list[int] = []
    interrupted: list[str] = []
    settling = GroupCommitter._done.__code__

    def together(commits: Sequence[int]) -> list[Outcome]:
        sent.append(list(commits))
        if len(sent) == 1:
            leader.append(threading.get_ident())
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt as exc:
                raise GroupInterrupted([c * 10 for c in commits] if applied else None) from exc
        return [c * 10 for c in commits]

    def second_interrupt(frame: Any, event: str, arg: Any) -> None:
        if interrupted or not leader or threading.get_ident() != leader[0]:
            return
        requeued = event == "c_return" and getattr(arg, "__name__", "") == "extendleft"
        woke_next = event == "return" and frame.f_code is settling
        if requeued if not applied else woke_next:
            interrupted.append(event)
            raise KeyboardInterrupt("the second one")

    gate = _Gate()
    committer = GroupCommitter(gate.alone, together, lambda: PipelinedGroup[int](8))
    results: dict[int, Outcome] = {}
    body = _recorder(committer, results)
    first = threading.Thread(target=body, args=(100,), daemon=True)
    first.start()
    _until(lambda: bool(gate.groups))
    threading.setprofile(second_interrupt)  # the threads started from here on
    try:
        threads = [threading.Thread(target=body, args=(c,), daemon=True) for c in range(1, 4)]
        for t in threads:
            t.start()
        _until(lambda: len(committer._queue) == 3)
        gate.release.set()
        deadline = time.monotonic() + 10
        for t in [first, *threads]:
            t.join(max(0.0, deadline - time.monotonic()))
    finally:
        threading.setprofile(None)  # type: ignore[arg-type]
    assert interrupted, "the second interrupt was not injected"
    assert sorted(results) == [1, 2, 3, 100], f"members still waiting: {sorted({1, 2, 3} - set(results))}"
    outcomes = [results[c] for c in range(1, 4)]
    assert sum(isinstance(o, KeyboardInterrupt) for o in outcomes) == 1  # the leader's
    assert sorted(o for o in outcomes if isinstance(o, int)) == [c * 10 for c in range(1, 4) if c != sent[0][0]]
    assert sorted(c for g in sent for c in g) == sorted([*range(1, 4), *([] if applied else sent[0][1:])])
    assert not committer._queue and committer._sending == 0


class _Signalled(BaseException):
    """What the test's signal handler raises in the main thread (as Ctrl-C raises KeyboardInterrupt)."""


def test_a_waiting_commit_interrupted_leaves_the_queue_and_the_others_go_on() -> None:
    # The main thread waits in the queue (its commit not sent yet) when a signal interrupts it; once it
    # headed the queue it was woken to lead a request nobody sent, and every commit behind it waited
    # for ever. Its commit must leave the queue unsent, and the next one lead.
    gate = _Gate()
    committer = GroupCommitter(gate.alone, gate.together, lambda: PipelinedGroup[int](8))
    results: dict[int, Outcome] = {}
    body = _recorder(committer, results)
    first = threading.Thread(target=body, args=(100,), daemon=True)
    behind = threading.Thread(target=body, args=(2,), daemon=True)
    main = threading.get_ident()

    def interrupt_main_once_both_wait() -> None:
        _until(lambda: len(committer._queue) == 1)  # the main thread's commit
        behind.start()
        _until(lambda: len(committer._queue) == 2)
        signal.pthread_kill(main, signal.SIGUSR1)

    def raise_signalled(signum: int, frame: Any) -> None:
        raise _Signalled

    previous = signal.signal(signal.SIGUSR1, raise_signalled)
    try:
        first.start()
        _until(lambda: bool(gate.groups))
        threading.Thread(target=interrupt_main_once_both_wait, daemon=True).start()
        with pytest.raises(_Signalled):
            committer.commit(1)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    gate.release.set()
    first.join(10)
    behind.join(10)
    assert results == {100: 1000, 2: 20}, f"still waiting: {sorted({100, 2} - set(results))}"
    assert [c for g in gate.groups for c in g] == [100, 2]  # the interrupted commit was never sent
    assert not committer._queue and committer._sending == 0


# ---------------------------------------------------------------- which commits may share a snapshot


def _commit(conditions: Sequence[Condition] = (), puts: Sequence[str] = (), deletes: Sequence[str] = ()) -> KeyCommit:
    return KeyCommit(list(conditions), dict.fromkeys(puts, b"x"), list(deletes))


def _group(*commits: KeyCommit, max_ops: int | None = None) -> list[bool]:
    group = SnapshotGroup(16, lambda name: f"l/{name}", lambda c: (len(c.puts), 10), max_ops, None)
    return [group.admit(c) for c in commits]


def test_snapshot_group_admits_disjoint_commits_and_shared_reads() -> None:
    a = _commit([Exists("o/sw"), VersionIs("i/p1", 0)], ["o/p1", "i/p1", "r/sw/p1"])
    b = _commit([Exists("o/sw"), VersionIs("i/p2", 0)], ["o/p2", "i/p2", "r/sw/p2"])
    assert _group(a, b) == [True, True]


@pytest.mark.parametrize(
    ("second", "why"),
    [
        (_commit([], ["o/p1"]), "writes a key the first writes"),
        (_commit([], ["o/sw"]), "writes a key the first reads"),
        (_commit([VersionIs("o/p1", 1)], ["o/q"]), "reads a key the first writes"),
        (_commit([PrefixUnchangedSince("r/sw/", 3)], ["o/q"]), "ranges over a key the first writes"),
        (_commit([], ["r/x/1"]), "writes under a prefix the first ranges over"),
        (_commit([], ["l/lock"]), "writes the lock the first is fenced by"),
    ],
)
def test_snapshot_group_refuses_overlapping_commits(second: KeyCommit, why: str) -> None:
    first = _commit([Exists("o/sw"), PrefixUnchangedSince("r/x/", 3), LeaseHeld("lock", b"t")], ["o/p1", "r/sw/p1"])
    assert _group(first, second) == [True, False], why


def test_snapshot_group_keeps_within_the_operation_limit() -> None:
    commits = [_commit([], [f"k{i}/{j}" for j in range(5)]) for i in range(30)]
    # etcd's rule for nested transactions: the members, plus the widest member's 5 operations, within 20.
    assert _group(*commits, max_ops=20) == [True] * 15 + [False] * 15


def test_footprint_names_the_token_key_as_written() -> None:
    commit = KeyCommit([VersionIs("a", 1)], {"b": b""}, ["c"], CommitToken("t/x", 1.0))
    mark = footprint(commit, lambda n: n)
    assert mark.writes == {"b", "c", "t/x"} and mark.reads == {"a"}


# ---------------------------------------------------------------- against the store: same as serial


class _RecordingBackend(KVMemoryBackend):
    """Records the order in which commits were decided (groups as one step), slowly enough to form groups."""

    def __init__(self, store: MemoryStore, group_commit: int) -> None:
        super().__init__(store, group_commit)
        self.steps: list[list[tuple[int, int | None]]] = []

    def commit_keys(
        self,
        conditions: Sequence[Condition],
        puts: Mapping[str, bytes],
        deletes: Sequence[str],
        token: CommitToken | None = None,
    ) -> int | None:
        time.sleep(0.002)
        revision = super().commit_keys(conditions, puts, deletes, token)
        self.steps.append([(id(puts), revision)])
        return revision

    def commit_group(self, commits: Sequence[KeyCommit]) -> list[Outcome]:
        time.sleep(0.002)
        outcomes = super().commit_group(commits)
        self.steps.append([(id(c.puts), o) for c, o in zip(commits, outcomes, strict=True)])  # type: ignore[misc]
        return outcomes


_KEYS = ["a/1", "a/2", "b/1", "b/2"]
_condition = st.one_of(
    st.builds(VersionIs, st.sampled_from(_KEYS), st.integers(0, 2)),
    st.builds(Exists, st.sampled_from(_KEYS)),
    st.builds(PrefixUnchangedSince, st.sampled_from(["a/", "b/"]), st.integers(0, 4)),
)


@st.composite
def _commits(draw: Any) -> tuple[list[Condition], dict[str, bytes], list[str]]:
    conditions = draw(st.lists(_condition, max_size=2))
    written = draw(st.lists(st.sampled_from(_KEYS), min_size=1, max_size=3, unique=True))
    cut = draw(st.integers(0, len(written)))
    value = draw(st.binary(min_size=1, max_size=3))
    return conditions, dict.fromkeys(written[:cut], value), written[cut:]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_commits(), min_size=2, max_size=12), st.integers(2, 6))
def test_any_interleaving_gives_each_commit_its_serial_outcome(
    commits: list[tuple[list[Condition], dict[str, bytes], list[str]]], group_commit: int
) -> None:
    backend = _RecordingBackend(MemoryStore(), group_commit)
    outcomes: dict[int, int | None] = {}
    start = threading.Barrier(len(commits))

    def body(conditions: list[Condition], puts: dict[str, bytes], deletes: list[str]) -> None:
        start.wait(10)
        outcomes[id(puts)] = backend.commit_once(conditions, puts, deletes)

    threads = [threading.Thread(target=body, args=c) for c in commits]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(outcomes) == len(commits)
    decided = [entry for step in backend.steps for entry in step]
    assert sorted(k for k, _ in decided) == sorted(id(c[1]) for c in commits)  # each sent exactly once
    # Replaying the steps one commit at a time gives every commit the same fate and the same store.
    # A group takes one revision where the replay takes one per commit: revisions are translated.
    serial = KVMemoryBackend(MemoryStore())
    by_id = {id(c[1]): c for c in commits}
    last = 0
    translated = {0: 0}

    def translate(condition: Condition) -> Condition:
        if not isinstance(condition, PrefixUnchangedSince):
            return condition
        revision = translated.get(condition.revision, serial.revision_now())  # past the head: holds trivially
        return PrefixUnchangedSince(condition.prefix, revision)

    for step in backend.steps:
        revisions = {o for _, o in step if o is not None}
        assert len(revisions) <= 1, "a group's applied commits share one revision"
        for key, outcome in step:
            assert outcomes[key] == outcome
            conditions, puts, deletes = by_id[key]
            alone = serial.commit_once([translate(c) for c in conditions], puts, deletes)
            assert (alone is None) == (outcome is None), (step, by_id[key])
        if revisions:
            assert min(revisions) == last + 1
            last = max(revisions)
            translated[last] = serial.revision_now()
    with backend.store.cond, serial.store.cond:
        mine = {k: (kv.value, kv.version) for k, kv in backend.store.data.items()}
        theirs = {k: (kv.value, kv.version) for k, kv in serial.store.data.items()}
    assert mine == theirs


def test_concurrent_commits_do_form_groups() -> None:
    backend = _RecordingBackend(MemoryStore(), 8)
    start = threading.Barrier(16)

    def body(i: int) -> None:
        start.wait(10)
        backend.commit_once([VersionIs(f"k/{i}", 0)], {f"k/{i}": b"v"}, [])

    threads = [threading.Thread(target=body, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert max(len(step) for step in backend.steps) > 1
    assert len(backend.steps) < 16


# ---------------------------------------------------------------- through a Database


def test_eight_threads_through_one_database_keep_every_rule() -> None:
    store = MemoryStore()
    with Database(KVMemoryBackend(store, 8), reap=False) as db:
        switch = db.create(LogicalSwitch(name="sw"))
        errors_seen: list[BaseException] = []
        created: list[LogicalSwitchPort] = []
        start = threading.Barrier(8)

        def body(n: int) -> None:
            start.wait(10)
            for i in range(20):
                # Threads 0 and 1 race for the same names: one of each pair wins.
                name = f"p{i}" if n < 2 else f"p{n}-{i}"
                try:
                    created.append(db.create(LogicalSwitchPort(switch=switch, name=name)))
                except nbdb.UniqueViolationError as exc:
                    errors_seen.append(exc)

        threads = [threading.Thread(target=body, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(created) == 20 + 6 * 20 and len(errors_seen) == 20
        stored = db.list(LogicalSwitchPort)
        assert sorted(p.name for p in stored) == sorted(p.name for p in created)
        assert all(p.version == 1 for p in stored)
        with pytest.raises(nbdb.ReferenceError):
            db.delete(switch)


def _race_children_and_parent() -> None:
    store = MemoryStore()
    with Database(KVMemoryBackend(store, 8), reap=False) as db:
        switch = db.create(LogicalSwitch(name="sw"))
        start = threading.Barrier(5)
        made: list[LogicalSwitchPort] = []
        deleted: list[bool] = []

        def child(i: int) -> None:
            start.wait(10)
            try:
                made.append(db.create(LogicalSwitchPort(switch=switch, name=f"p{i}")))
            except nbdb.ReferenceError:
                pass

        def parent() -> None:
            start.wait(10)
            try:
                db.delete(switch)
                deleted.append(True)
            except nbdb.ReferenceError:
                pass

        threads = [threading.Thread(target=child, args=(i,)) for i in range(4)]
        threads.append(threading.Thread(target=parent))
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        ports = db.list(LogicalSwitchPort)
        assert not (deleted and ports), "a port points to a deleted switch"
        assert len(ports) == len(made)


def test_racing_child_creates_and_parent_delete_never_dangle() -> None:
    for _round in range(5):
        _race_children_and_parent()


# ---------------------------------------------------------------- lost replies inside a group


class _LossyGroupBackend(KVMemoryBackend):
    """Groups whose reply can be lost as a whole (``whole``) or for one member (``member``), after applying."""

    commit_tokens = True

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store, 8)
        self.retry = RetryPolicy(attempts=3, backoff=0.0, deadline=None)
        self.lose: str | None = None
        self.groups: list[int] = []
        self.hold = threading.Event()
        self.hold.set()

    def commit_keys(
        self,
        conditions: Sequence[Condition],
        puts: Mapping[str, bytes],
        deletes: Sequence[str],
        token: CommitToken | None = None,
    ) -> int | None:
        self.hold.wait(10)
        return super().commit_keys(conditions, puts, deletes, token)

    def commit_group(self, commits: Sequence[KeyCommit]) -> list[Outcome]:
        outcomes = super().commit_group(commits)
        self.groups.append(len(commits))
        lose, self.lose = self.lose, None
        if lose == "whole":
            raise errors.CommitUnknownError("injected: the group's reply was lost")
        if lose == "member":
            middle = len(commits) // 2
            outcomes[middle] = errors.CommitUnknownError("injected: this member's reply was lost")
        if lose == "request":
            raise errors.CommitUnknownError("injected: the group's request was lost")
        return outcomes


def _grouped_creates(backend: _LossyGroupBackend, lose: str) -> tuple[Database, list[Any]]:
    db = Database(backend, reap=False)
    switch = db.create(LogicalSwitch(name="sw"))
    backend.hold.clear()
    first = threading.Thread(target=db.create, args=(LogicalSwitch(name="first"),))
    first.start()
    _until(lambda: backend._committer._sending > 0)
    results: list[Any] = []

    def body(i: int) -> None:
        try:
            results.append(db.create(LogicalSwitchPort(switch=switch, name=f"p{i}")))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    _until(lambda: len(backend._committer._queue) == 5)
    backend.lose = lose
    backend.hold.set()
    for t in [first, *threads]:
        t.join(30)
    return db, results


@pytest.mark.parametrize("lose", ["whole", "member"])
def test_a_lost_reply_in_the_middle_of_a_group_is_settled_per_commit(lose: str) -> None:
    store = MemoryStore()
    backend = _LossyGroupBackend(store)
    db, results = _grouped_creates(backend, lose)
    try:
        assert backend.groups and backend.groups[0] == 5
        assert all(isinstance(r, LogicalSwitchPort) and r.version == 1 for r in results), results
        assert sorted(p.name for p in db.list(LogicalSwitchPort)) == [f"p{i}" for i in range(5)]
        with store.cond:
            applied = [kv for k, kv in store.data.items() if k.startswith("t/") and kv.value == APPLIED]
        assert len(applied) == 2 + 5  # the two switches, and each port once
    finally:
        db.close()


def test_a_lost_request_of_a_group_is_voided_and_each_commit_retried_once() -> None:
    store = MemoryStore()
    backend = _LossyGroupBackend(store)

    original = backend.commit_group

    def lost_before_applying(commits: Sequence[KeyCommit]) -> list[Outcome]:
        if backend.lose == "request":
            backend.lose = None
            backend.groups.append(len(commits))
            raise errors.CommitUnknownError("injected: the group's request was lost")
        return original(commits)

    backend.commit_group = lost_before_applying  # type: ignore[method-assign]
    db, results = _grouped_creates(backend, "request")
    try:
        assert all(isinstance(r, LogicalSwitchPort) for r in results), results
        assert sorted(p.name for p in db.list(LogicalSwitchPort)) == [f"p{i}" for i in range(5)]
        assert all(p.version == 1 for p in db.list(LogicalSwitchPort))
    finally:
        db.close()
