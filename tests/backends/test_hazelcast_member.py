"""Hazelcast commits run in the members (java/hazelcast-member): used, byte-identical, and the fallback.

The harness deploys nbdb's member-side jar (built by .ci/install-servers.sh) unless told
``member_code=False``. A client commits through the member-side task when the connect-time
probe finds it, and with its own six-round-trip protocol otherwise (or with
``member_commit=0``); both write the same bytes, so old and new clients share a namespace.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nbdb
from nbdb import errors
from nbdb.conformance.kit import KitParent, check_stale_copies_refused
from nbdb.families.kv import (
    CommitToken,
    Exists,
    KeyCommit,
    LeaseHeld,
    PrefixUnchangedSince,
    ValueIs,
    VersionIs,
    WrittenAt,
)
from nbdb.testing import HazelcastServer
from nbdb.testing.fixtures import hazelcast_server, shared_server  # noqa: F401
from nbdb.testing.hazelcast import member_jar

pytest.importorskip("hazelcast")

from nbdb.backends.hazelcast import HazelcastBackend
from nbdb.backends.hazelcast._member import ProbeTask
from nbdb.backends.hazelcast._records import HEAD, TOKEN_BYTES, decode_head

from .conftest import CANNOT_READ, another_protocol


def _ns() -> str:
    return "m" + uuid.uuid4().hex[:10]


def _backend(url: str, **options: Any) -> HazelcastBackend:
    backend = HazelcastBackend.from_url(url, **options)
    return backend


@pytest.fixture(scope="module")
def stock_server() -> Iterator[HazelcastServer]:
    """A member without nbdb's jar (a stock cluster), shared by this module's tests, each in its own namespace."""
    with shared_server("hazelcast", member_code=False) as server:
        yield server  # type: ignore[misc]


def _tasks_run(backend: HazelcastBackend) -> int:
    """How many commit tasks the member owning the commit lock ran (the member's own counter)."""
    reply = backend._executor.execute_on_key_owner("commit", ProbeTask()).result()
    return int(reply[1])


def test_the_harness_deploys_the_member_jar() -> None:
    assert member_jar().is_file(), f"{member_jar()} is missing: run bash .ci/install-servers.sh"


@pytest.mark.timeout(90)
def test_commits_run_in_the_member_in_one_request(hazelcast_server: HazelcastServer) -> None:  # noqa: F811
    """Creates, updates, deletes, transactions and groups are decided in the member; the client takes no lock."""
    with nbdb.connect(hazelcast_server.url, namespace=_ns()) as db:
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        assert backend.member_commit
        before = _tasks_run(backend)
        parent = db.create(KitParent(name="p"))
        parent = db.update(parent.model_copy(update={"size": 3}))
        with db.transaction() as txn:
            for i in range(5):
                txn.create(KitParent(name=f"t{i}"))
        threads = [threading.Thread(target=db.create, args=(KitParent(name=f"g{i}"),)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        db.delete(parent)
        assert backend.member_fallbacks == 0
        assert 4 < backend.member_commits <= 10  # the six threads' creates may share a group
        assert _tasks_run(backend) - before == backend.member_commits
        assert backend.commit_lock_requests_peak == 0  # never the client's six-round-trip protocol
        assert len(db.list(KitParent)) == 11


_KEYS = st.sampled_from(["o/a", "o/b", "o/c/1", "o/c/2", "x/side"])
_VALUES = st.sampled_from([b"", b"v"])
"""Values a ValueIs names, which puts write too (random bytes would only ever fail it)."""
_COMMIT = st.tuples(
    st.dictionaries(_KEYS, st.one_of(_VALUES, st.binary(max_size=12)), max_size=3),
    st.lists(_KEYS, max_size=2, unique=True),
    st.lists(st.one_of(st.tuples(st.just("version"), _KEYS, st.integers(0, 3)), st.tuples(st.just("exists"), _KEYS),
                       st.tuples(st.just("lease"), st.sampled_from([b"holder", b"someone else"])),
                       st.tuples(st.just("written"), _KEYS, st.integers(0, 8)),
                       st.tuples(st.just("value"), _KEYS, _VALUES)),
             max_size=2),
    st.booleans(),
)  # fmt: skip


@pytest.mark.timeout(240)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_COMMIT, min_size=1, max_size=8))
def test_member_and_client_commits_write_the_same_bytes(
    hazelcast_server: HazelcastServer,  # noqa: F811
    commits: list[tuple[dict[str, bytes], list[str], list[tuple[Any, ...]], bool]],
) -> None:
    """Every stored key, log entry (past its random anchor) and outcome is the same on both paths.

    Conditions of every kind: key versions, existence, a lease held (or not) by the token,
    an unchanged prefix, the revision that last wrote a key, a key's value (a released claim's); commit tokens
    with their TTL.
    """
    namespace = _ns()
    member = _backend(hazelcast_server.url, namespace=namespace + "m")
    client = _backend(hazelcast_server.url + "?member_commit=0", namespace=namespace + "c")
    try:
        assert member.member_commit and not client.member_commit
        for backend in (member, client):
            assert backend.acquire_lease("fence", b"holder", 60.0)
        for index, (puts, deletes, checks, with_token) in enumerate(commits):
            deletes = [k for k in deletes if k not in puts]
            conditions: list[Any] = [_condition(c) for c in checks]
            conditions.append(PrefixUnchangedSince("o/c/", index))
            token = CommitToken(f"t/{index:024d}", 30.0) if with_token else None
            one = KeyCommit(conditions, puts, deletes, token).with_token_key()
            outcomes = [b.commit_group([one]) for b in (member, client)]
            assert outcomes[0] == outcomes[1]
        assert member.member_fallbacks == 0
        assert decode_head(member._meta.get(HEAD))[0] == decode_head(client._meta.get(HEAD))[0]
        assert _stored(member._kv) == _stored(client._kv)
        logs = [{k: bytes(v)[TOKEN_BYTES:] for k, v in _stored(b._log).items()} for b in (member, client)]
        assert logs[0] == logs[1]
    finally:
        member.close()
        client.close()


def _condition(check: tuple[Any, ...]) -> Any:
    if check[0] == "version":
        return VersionIs(check[1], check[2])
    if check[0] == "lease":
        return LeaseHeld("fence", check[1])
    if check[0] == "written":
        return WrittenAt(check[1], check[2])
    if check[0] == "value":
        return ValueIs(check[1], check[2])
    return Exists(check[1])


def _stored(imap: Any) -> dict[Any, bytes]:
    return {k: bytes(v) for k, v in imap.entry_set()}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("member_commit", ["1", "0"])
def test_a_stale_copy_of_a_deleted_object_is_refused_on_both_paths(
    hazelcast_server: HazelcastServer,  # noqa: F811
    member_commit: str,
) -> None:
    """The member's task and the client's protocol both compare the revision that wrote a copy (ABA).

    An id deleted and created again starts at version 1 again: a copy of the deleted object at the
    same version neither updates nor deletes the new one (before, the version alone was compared).
    """
    with nbdb.connect(f"{hazelcast_server.url}?member_commit={member_commit}", namespace=_ns()) as db:
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        assert backend.member_commit == (member_commit == "1")
        again = check_stale_copies_refused(db)
        assert backend.member_fallbacks == 0
        assert db.update(db.get(KitParent, again.id).replace(size=1)).version == 2


@pytest.mark.timeout(120)
def test_old_and_new_clients_share_a_namespace(hazelcast_server: HazelcastServer) -> None:  # noqa: F811
    """Clients of both protocols committing at once: one dense stream, every commit once."""
    namespace = _ns()
    with nbdb.connect(hazelcast_server.url, namespace=namespace) as db:
        start = db.backend.current_revision()
        created: list[uuid.UUID] = []
        lock = threading.Lock()

        def write(url: str, worker: int) -> None:
            with nbdb.connect(url, namespace=namespace) as mine:
                assert isinstance(mine.backend, HazelcastBackend)
                assert mine.backend.member_commit == ("member_commit=0" not in url)
                for i in range(25):
                    obj = mine.create(KitParent(name=f"{worker}-{i}"))
                    with lock:
                        created.append(obj.id)

        urls = [hazelcast_server.url, hazelcast_server.url + "?member_commit=0"] * 2
        threads = [threading.Thread(target=write, args=(url, w)) for w, url in enumerate(urls)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        assert len(created) == 100
        assert db.backend.current_revision() == start + 100
        stream = db.backend.watch(["KitParent"], None, start)
        seen: list[int] = []
        try:
            while len(seen) < 100:
                polled = stream.poll(5.0)
                assert polled, "the stream stalled"
                seen += [change.revision for change in polled]
        finally:
            stream.close()
        assert seen == list(range(start + 1, start + 101))


@pytest.mark.timeout(60)
def test_foreign_data_hands_the_commit_back_to_the_client(hazelcast_server: HazelcastServer) -> None:  # noqa: F811
    backend = _backend(hazelcast_server.url, namespace=_ns())
    try:
        backend._kv.put("o/foreign", "a string some other program wrote")
        with pytest.raises(errors.CorruptRecordError):
            backend.commit_keys([], {"o/foreign": b"mine"}, [])
        assert backend.member_fallbacks == 1
    finally:
        backend.close()


@pytest.mark.timeout(120)
def test_stock_members_fall_back_to_the_client_protocol(
    stock_server: HazelcastServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Members without the jar: said once, and commits keep working with the client's own protocol."""
    from nbdb.backends.hazelcast import _backend

    monkeypatch.setattr(_backend, "_WARNED", set())  # as in a fresh process (the server is shared)
    stock = stock_server
    with caplog.at_level(logging.WARNING, logger="nbdb.backends.hazelcast._backend"):
        with nbdb.connect(stock.url, namespace=_ns()) as db:
            backend = db.backend
            assert isinstance(backend, HazelcastBackend)
            assert not backend.member_commit
            parent = db.create(KitParent(name="p"))
            db.update(parent.model_copy(update={"size": 2}))
            assert db.get(KitParent, parent.id).size == 2
            assert backend.member_commits == 0
            assert backend.commit_lock_requests_peak == 1
        with nbdb.connect(stock.url, namespace=_ns()):
            pass
    said = [r for r in caplog.records if "member-side jar" in r.getMessage()]
    assert len(said) == 1, said  # once a cluster, not once a connection
    # As if the lock's owner were replaced by a member without the jar after the probe (a rolling
    # deploy): the task is refused unread, the client commits on its own and stops sending tasks.
    with nbdb.connect(stock.url, namespace=_ns()) as db:
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        backend.member_commit = True
        parent = db.create(KitParent(name="p"))
        assert db.get(KitParent, parent.id) == parent
        assert not backend.member_commit
        assert (backend.member_commits, backend.member_fallbacks) == (0, 1)


@pytest.mark.timeout(60)
def test_member_commit_can_be_turned_off(hazelcast_server: HazelcastServer) -> None:  # noqa: F811
    with nbdb.connect(hazelcast_server.url + "?member_commit=0", namespace=_ns()) as db:
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        assert not backend.member_commit
        db.create(KitParent(name="p"))
        assert backend.member_commits == 0 and backend.commit_lock_requests_peak == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("refusal", ["runs it without a condition kind", CANNOT_READ])
def test_a_member_of_another_protocol_after_the_probe_stops_the_tasks(
    hazelcast_server: HazelcastServer,  # noqa: F811
    refusal: str,
) -> None:
    """As if the lock's owner were replaced after the probe by a member whose jar speaks another protocol
    (a rolling deploy, see :func:`another_protocol`): the first refused task probes again, compares the
    protocol, and the client commits on its own (until a re-probe past the back-off finds this protocol
    again, see the next test), one task round trip lost in all.

    The re-probe asked only whether the jar was there: every update sent a task to hand back (a round trip
    more each), and an unreadable task was CommitUnknownError.
    """
    with another_protocol(hazelcast_server.url, refusal) as (db, backend, parent, _):
        for size in range(1, 4):
            parent = db.update(parent.replace(size=size))
        assert db.get(KitParent, parent.id) == parent
        assert not backend.member_commit
        assert backend.member_fallbacks == 1


@pytest.mark.timeout(60)
def test_member_commits_come_back_once_the_lock_owner_speaks_this_protocol_again(
    hazelcast_server: HazelcastServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rolling upgrade: the lock's owner spoke another protocol for a while (member commits off), then one of
    this client's protocol owns the lock again; a commit past the back-off asks it, without waiting for the
    answer, and the commits after it run as tasks again, each exactly once.

    Before, member commits stayed off until the client restarted: every long-running client of a cluster
    upgraded member by member kept paying six round trips a commit. The mismatch is the client's protocol
    patched for a while (as in the test above); the back-off is shortened, not the path.
    """
    from nbdb.backends.hazelcast import _backend

    monkeypatch.setattr(_backend, "_REPROBE_FIRST", 0.05, raising=False)
    with another_protocol(hazelcast_server.url) as (db, backend, parent, fixed):
        parent = db.update(parent.replace(size=1))
        off_at = time.monotonic()
        assert not backend.member_commit and backend.member_fallbacks == 1
        # Off the hot path: a re-probe once per back-off at most (0.05 s, doubling), not one per commit.
        for size in range(2, 22):
            parent = db.update(parent.replace(size=size))
        waited = time.monotonic() - off_at
        reprobes = getattr(backend, "member_reprobes", 0)
        assert reprobes <= 1 + math.log2(waited / 0.05 + 1), (reprobes, waited)
        assert not backend.member_commit
        fixed.undo()  # the cluster fixed: the lock's owner speaks this client's protocol again
        deadline = time.monotonic() + 10
        while not backend.member_commit and time.monotonic() < deadline:
            size += 1
            parent = db.update(parent.replace(size=size))  # on the client's path, exactly once each
            time.sleep(0.01)
        assert backend.member_commit, "member commits stayed off after the lock's owner spoke the protocol again"
        assert backend.member_reprobes - reprobes <= 2
        tasks, commits = _tasks_run(backend), backend.member_commits
        for _ in range(3):
            size += 1
            parent = db.update(parent.replace(size=size))
        assert (backend.member_commits - commits, _tasks_run(backend) - tasks) == (3, 3)
        assert backend.member_fallbacks == 1
        assert db.get(KitParent, parent.id) == parent
        assert [p.size for p in db.list(KitParent)] == [size]


@pytest.mark.timeout(60)
def test_a_commit_checking_the_reprobe_while_another_thread_answers_it_still_commits(
    hazelcast_server: HazelcastServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two threads at the re-probe's due time: one reads ``_reprobe_at`` (not None), the other's re-probe takes it
    (None) and is answered with this protocol (member commits on, ``_reprobe_at`` left None); the first then
    compared the clock with None: ``TypeError`` out of an update that had sent nothing (neither committed nor a
    typed error). Made certain here by holding the first thread inside its clock read (nbdb's own reference
    to ``time``, patched), the second's re-probe run meanwhile."""
    from nbdb.backends.hazelcast import _backend

    monkeypatch.setattr(_backend, "_REPROBE_FIRST", 0.0, raising=False)
    with another_protocol(hazelcast_server.url) as (db, backend, parent, fixed):
        parent = db.update(parent.replace(size=1))
        assert not backend.member_commit  # off, the re-probe due at once (back-off 0)
        held, resume = threading.Event(), threading.Event()
        committer: list[int] = []

        class Clock:
            """``time`` for _backend, its ``monotonic`` held once on the committing thread's re-probe check."""

            def __getattr__(self, name: str) -> Any:
                return getattr(time, name)

            @staticmethod
            def monotonic() -> float:
                now = time.monotonic()
                if (
                    threading.get_ident() in committer
                    and sys._getframe(1).f_code.co_name == "_commit_retrying"
                    and not held.is_set()
                ):
                    held.set()
                    resume.wait(10)
                return now

        monkeypatch.setattr(_backend, "time", Clock())
        outcome: list[Any] = []

        def commit() -> None:
            committer.append(threading.get_ident())
            try:
                outcome.append(db.update(parent.replace(size=2)))
            except BaseException as exc:  # reported below
                outcome.append(exc)

        thread = threading.Thread(target=commit, daemon=True)
        thread.start()
        try:
            assert held.wait(10), "the commit never checked the re-probe's due time"
            fixed.undo()  # the lock's owner speaks this client's protocol: the other re-probe turns member commits on
            backend._reprobe_member_code()
            deadline = time.monotonic() + 10
            while not backend.member_commit and time.monotonic() < deadline:
                time.sleep(0.005)
            assert backend.member_commit
        finally:
            resume.set()
            thread.join(20)
        assert not thread.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], KitParent), outcome
        assert db.get(KitParent, parent.id) == outcome[0]


def _refusals_logged(server: HazelcastServer) -> int:
    """SEVERE lines (each with its stack trace) the members logged for tasks they could not read."""
    return sum(
        line.startswith("SEVERE") and "No DataSerializerFactory registered" in line
        for m in server.members
        for line in (m.data_dir / "server.log").read_text(errors="replace").splitlines()
    )


def _refusals_after(server: HazelcastServer, before: int, expected: int) -> int:
    """The SEVERE lines logged since ``before``, once ``expected`` were (the member writes them as it refuses the
    task: waited for, within 5 s), and 0.2 s more for any beyond them."""
    deadline = time.monotonic() + 5
    while _refusals_logged(server) - before < expected and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    return _refusals_logged(server) - before


def _commit_for(db: nbdb.Database, parent: KitParent, seconds: float) -> KitParent:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        parent = db.update(parent.replace(size=parent.size + 1))
    return parent


@pytest.mark.timeout(60)
@pytest.mark.parametrize("probes", [0, 1, None], ids=["none", "one", "default"])
def test_a_connect_opens_the_probe_window_a_membership_change_does_unless_member_probes_is_0(
    stock_server: HazelcastServer,
    monkeypatch: pytest.MonkeyPatch,
    probes: int | None,
) -> None:
    """Every probe a stock member gets is a SEVERE with a stack trace in its log (its executor cannot read the
    task). A connect whose probe finds no code asks again on the back-off (here shortened to 0.01 → 0.04 s, its
    six steps within 0.2 s), a bounded window as after a membership change: the partitions may still migrate
    after a change the client never saw (a join before its listener, or one already in its first member list),
    and the commit lock's owner change with them. By default seven probes in all (the connect's, then six), as
    on main; member_probes=0 (a stock cluster that should log one SEVERE per connect): the connect's probe only.
    wip/smalls sent no re-probe after a connect whatever the option (none in the default case)."""
    from nbdb.backends.hazelcast import _backend

    monkeypatch.setattr(_backend, "_REPROBE_FIRST", 0.01, raising=False)
    monkeypatch.setattr(_backend, "_REPROBE_MAX", 0.04, raising=False)
    options: dict[str, Any] = {} if probes is None else {"member_probes": probes}
    expected = 6 if probes is None else max(probes - 1, 0)  # 1: the connect's probe is the whole window, as 0
    before = _refusals_logged(stock_server)
    with nbdb.connect(stock_server.url, namespace=_ns(), **options) as db:
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        assert not backend.member_commit
        assert (backend._members_listener is None) == (probes == 0)
        parent = _commit_for(db, db.create(KitParent(name="p")), 0.6)
        assert backend.member_reprobes == expected
        assert not backend.member_commit and backend._reprobe_at is None  # the window closed
        assert db.get(KitParent, parent.id) == parent
    assert _refusals_after(stock_server, before, 1 + expected) == 1 + expected


@pytest.mark.timeout(60)
@pytest.mark.parametrize("probes", [0, 1, 2, None], ids=["none", "one", "two", "default"])
def test_member_probes_bounds_the_probes_after_a_membership_change(
    stock_server: HazelcastServer,
    monkeypatch: pytest.MonkeyPatch,
    probes: int | None,
) -> None:
    """``member_probes=N``: a membership change (the client's listener called, as a member joining or leaving
    calls it) brings N probes at most, the first at the next commit, then on the back-off (shortened here);
    0: none, and no listener; 1: one (where 0 and 1 both send the connect's probe only at connect). The connect's
    window (its probe and N - 1 after it) is let run out first.
    The option did not exist before (ValidationError: unknown option)."""
    from nbdb.backends.hazelcast import _backend

    monkeypatch.setattr(_backend, "_REPROBE_FIRST", 0.01, raising=False)
    monkeypatch.setattr(_backend, "_REPROBE_MAX", 0.04, raising=False)
    options: dict[str, Any] = {} if probes is None else {"member_probes": probes}
    expected = 7 if probes is None else probes
    before = _refusals_logged(stock_server)
    with nbdb.connect(stock_server.url, namespace=_ns(), **options) as db:
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        assert (backend._members_listener is None) == (expected == 0)
        parent = _commit_for(db, db.create(KitParent(name="p")), 0.6)  # the connect's window runs out
        connects = max(expected - 1, 0)
        assert backend.member_reprobes == connects and backend._reprobe_at is None
        for _ in range(2):  # a second change resets the window
            reprobes = backend.member_reprobes
            backend._on_members(None)
            parent = _commit_for(db, parent, 0.6)  # the whole back-off (7 steps: 0.19 s) within it
            assert backend.member_reprobes - reprobes == expected
            assert not backend.member_commit and backend._reprobe_at is None
        assert db.get(KitParent, parent.id) == parent
    assert _refusals_after(stock_server, before, 1 + connects + 2 * expected) == 1 + connects + 2 * expected


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("probes", "said"),
    [
        (0, "not asked again: member_probes=0"),
        (
            1,
            "not asked again until a member joins or leaves: the window of probes the connect or the last "
            "membership change opened (member_probes=1) is used up",
        ),
        (None, "asked again at the first commit 1s from now"),
    ],
    ids=["none", "used-up", "default"],
)
def test_the_log_of_member_commits_turned_off_says_when_they_are_asked_for_again(
    stock_server: HazelcastServer,
    caplog: pytest.LogCaptureFixture,
    probes: int | None,
    said: str,
) -> None:
    """A task refused or handed back turns member commits off and logs when they are asked for again. It said
    "asked again within N s" even when no probe was left in the window (or member_probes=0): none would come
    until a member joined or left (or ever). A stock member: the probe that tells why finds no code."""
    options: dict[str, Any] = {} if probes is None else {"member_probes": probes}
    with nbdb.connect(stock_server.url, namespace=_ns(), **options) as db:
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        backend._reprobe_delay = 1.0  # as after a connect, whatever ran before
        with caplog.at_level(logging.WARNING, logger="nbdb.backends.hazelcast._backend"):
            assert not backend._member_code_present()
        logged = [r.getMessage() for r in caplog.records]
        assert [m.partition("go back to six round trips (")[2][:-1] for m in logged if "go back to" in m] == [said]
        assert (backend._reprobe_at is None) == (probes is not None)


@pytest.mark.timeout(60)
def test_a_reprobe_found_due_before_another_was_answered_sends_nothing(
    hazelcast_server: HazelcastServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two commits find the re-probe due; the first's probe is answered before the second takes the re-probe's
    lock: member commits are on again, or the next probe is due only after the back-off. The second then sent
    a probe of its own right behind the first (a SEVERE more in a stock member's log, a round trip more);
    now it checks again under the lock and sends nothing. The second commit is this direct call, made once
    each state holds."""
    from nbdb.backends.hazelcast import _backend

    monkeypatch.setattr(_backend, "_REPROBE_FIRST", 600.0, raising=False)
    with another_protocol(hazelcast_server.url) as (db, backend, parent, fixed):
        assert backend.member_commit and backend._reprobe_at is None
        backend._reprobe_member_code()  # member commits on: nothing to ask
        assert backend.member_reprobes == 0
        parent = db.update(parent.replace(size=1))
        assert not backend.member_commit
        due = backend._reprobe_at
        assert due is not None and due > time.monotonic() + 500
        backend._reprobe_member_code()  # the next re-probe not due yet
        assert (backend.member_reprobes, backend._reprobe_at) == (0, due)
        fixed.undo()
        assert db.update(parent.replace(size=2)).size == 2


@pytest.mark.timeout(60)
def test_tasks_handed_back_while_on_leave_a_later_refusal_its_reprobes(
    hazelcast_server: HazelcastServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a membership change, tasks handed back (foreign data) each probe, and the code is there: member commits
    stay on. Those probes must not use up the window the membership change opened: when the lock's owner then
    refuses a task (the partition migrated to a member of another protocol, see another_protocol) and later runs
    this protocol again, a re-probe on the back-off finds it (main did; wip/smalls counts the hand-backs' probes
    and schedules none)."""
    from nbdb.backends.hazelcast import _backend, _member

    monkeypatch.setattr(_backend, "_REPROBE_FIRST", 0.01, raising=False)
    monkeypatch.setattr(_backend, "_REPROBE_MAX", 0.04, raising=False)
    with nbdb.connect(hazelcast_server.url, namespace=_ns()) as db:
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        assert backend.member_commit
        parent = db.create(KitParent(name="p"))
        backend._on_members(None)  # a member joined (as the listener is called)
        backend._kv.put("o/foreign", "a string some other program wrote")
        for _ in range(8):
            with pytest.raises(errors.CorruptRecordError):
                backend.commit_keys([], {"o/foreign": b"mine"}, [])
        assert backend.member_commit
        with pytest.MonkeyPatch.context() as fixed:
            fixed.setattr(_backend, "PROTOCOL", _member.PROTOCOL + 1)
            fixed.setattr(_member.CommitTask, "CLASS_ID", 99)
            parent = db.update(parent.replace(size=1))  # refused unread: member commits off
            assert not backend.member_commit
        size, deadline = 1, time.monotonic() + 5
        while not backend.member_commit and time.monotonic() < deadline:
            size += 1
            parent = db.update(parent.replace(size=size))
            time.sleep(0.01)
        assert backend.member_commit, f"no re-probe after the refusal (member_reprobes={backend.member_reprobes})"
        assert db.get(KitParent, parent.id) == parent
