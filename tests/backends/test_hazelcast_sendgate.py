"""Hazelcast's send gate (``_sendgate.SendGate``) under load and faults, against real members."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nbdb
from nbdb import errors
from nbdb.models.ovn import LogicalSwitch
from nbdb.testing import HazelcastServer, Server
from nbdb.testing.fixtures import hazelcast_server, server_factory  # noqa: F401

pytest.importorskip("hazelcast")

from hazelcast.future import Future

from nbdb.backends.hazelcast import HazelcastBackend
from nbdb.backends.hazelcast._sendgate import SendGate

from .conftest import assert_reactor_wake_up_kept


def _ns() -> str:
    return "t" + uuid.uuid4().hex[:10]


def _in_threads(work: Callable[[Any], None], args: Iterable[Any], wait: float) -> None:
    """``work(arg)`` in a thread of its own for each of ``args``; each must end within ``wait`` s."""
    threads = [threading.Thread(target=work, args=(arg,), daemon=True) for arg in args]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(wait)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("member_commit", [True, False])
def test_a_writer_commits_while_eight_threads_read(
    hazelcast_server: HazelcastServer,  # noqa: F811
    member_commit: bool,
) -> None:
    """Eight threads of gets and one of creates for 3 s: the creates keep going (200+ in 3 s before the send gate).

    A lock request, an unlock and the commit task wait for the gate to be idle; each reply used to send what
    queued meanwhile, so with eight readers the gate was never idle and every commit waited out ``timeout``
    (1 commit in 3 s, taking 3 s: it went once the readers stopped)."""
    url = hazelcast_server.url + ("" if member_commit else "?member_commit=0")
    with nbdb.connect(url, namespace=_ns()) as db:
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        db.create(LogicalSwitch(name="seed"))
        stop = threading.Event()
        reads = [0] * 8
        commits: list[float] = []

        def read(n: int) -> None:
            while not stop.is_set():
                backend.get_key(f"x/{n}")
                reads[n] += 1

        def write() -> None:
            i = 0
            while not stop.is_set():
                began = time.monotonic()
                db.create(LogicalSwitch(name=f"w{i}"))
                commits.append(time.monotonic() - began)
                i += 1

        threads = [threading.Thread(target=read, args=(n,), daemon=True) for n in range(8)]
        threads.append(threading.Thread(target=write, daemon=True))
        for thread in threads:
            thread.start()
        time.sleep(3)
        stop.set()
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads)
        assert len(commits) >= 10, f"{len(commits)} commits in 3 s beside {sum(reads)} reads: {commits}"
        assert max(commits) < 1.0


def _readers_during(
    db: nbdb.Database,
    fault: Callable[[], None],
    n: int = 6,
    op: Callable[[HazelcastBackend, int], object] | None = None,
) -> list[tuple[str, float]]:
    """``n`` threads each calling ``op`` (get_key) in a loop; ``fault()``; each thread's first call that fails after
    it: (the error's name, seconds from the fault to that call's end)."""
    backend = db.backend
    assert isinstance(backend, HazelcastBackend)
    call = op or (lambda b, i: b.get_key(f"x/{i}"))
    faulted = threading.Event()
    since = [0.0]
    seen: list[tuple[str, float]] = []
    lock = threading.Lock()

    def read(i: int) -> None:
        while True:
            try:
                call(backend, i)
            except errors.NbdbError as exc:
                if faulted.is_set():
                    with lock:
                        seen.append((type(exc).__name__, round(time.monotonic() - since[0], 2)))
                    return
            except Exception as exc:  # an untyped error is a finding too
                with lock:
                    seen.append((type(exc).__name__, round(time.monotonic() - since[0], 2)))
                return

    threads = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    since[0] = time.monotonic()
    faulted.set()
    fault()
    for thread in threads:
        thread.join(40)
    assert not any(thread.is_alive() for thread in threads), f"readers still waiting 40 s after the fault: {seen}"
    return seen


@pytest.mark.timeout(120)
def test_readers_of_a_frozen_member_fail_within_the_timeout(hazelcast_server: HazelcastServer) -> None:  # noqa: F811
    """Six threads of gets, the member frozen: each fails with BackendUnavailableError within ``timeout`` (+1 s).

    Before, the gets queued behind the one sent left only when it failed (``timeout`` after its send) and then
    waited a ``timeout`` of their own: 4.3 s at timeout=2 (2.5 s before the send gate)."""
    timeout = 2.0
    member = hazelcast_server.members[0]
    with nbdb.connect(f"{hazelcast_server.url}?timeout={timeout}", namespace=_ns()) as db:
        try:
            seen = _readers_during(db, member.pause)
        finally:
            member.resume()
    wrong = [s for s in seen if s[0] != "BackendUnavailableError" or s[1] > timeout + 1.0]
    assert not wrong, f"readers of a frozen member (timeout={timeout}): {seen}"


@pytest.mark.timeout(120)
def test_readers_of_a_stopped_member_fail_within_the_timeout(server_factory: Callable[..., Server]) -> None:  # noqa: F811
    """As above with the member stopped (its connection closed): 4.1 s at timeout=2 before."""
    timeout = 2.0
    server = server_factory("hazelcast")
    with nbdb.connect(f"{server.url}?timeout={timeout}&connect_timeout=1", namespace=_ns()) as db:
        seen = _readers_during(db, server.members[0].stop)
    wrong = [s for s in seen if s[0] != "BackendUnavailableError" or s[1] > timeout + 1.0]
    assert not wrong, f"readers of a stopped member (timeout={timeout}): {seen}"


@pytest.mark.timeout(120)
def test_readers_return_when_the_database_is_closed(hazelcast_server: HazelcastServer) -> None:  # noqa: F811
    """Closing the Database under six threads of gets (some queued in the gate): each returns, typed, at once."""
    db = nbdb.connect(hazelcast_server.url, namespace=_ns())
    seen = _readers_during(db, db.close)
    wrong = [s for s in seen if s[0] != "BackendUnavailableError" or s[1] > 2.0]
    assert not wrong, f"readers of a closed database: {seen}"


@pytest.mark.timeout(120)
def test_ranges_and_log_reads_of_a_frozen_member_fail_within_the_timeout(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """Threads of ranges outside ``o/`` (head, then the range) and of change-log reads (a watch's poll), the
    member frozen: each fails with BackendUnavailableError within ``timeout`` (+1 s).

    Before, they waited for their reply without a limit: queued in the gate behind a request to the frozen
    member, they left only when it failed and then waited a ``timeout`` of their own (up to 2 x ``timeout``)."""
    timeout = 2.0
    member = hazelcast_server.members[0]
    with nbdb.connect(f"{hazelcast_server.url}?timeout={timeout}", namespace=_ns()) as db:
        db.create(LogicalSwitch(name="seed"))
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        reader = backend.open_log_reader()
        logs = backend.logs_for([backend.layout.objects])

        def op(b: HazelcastBackend, i: int) -> object:
            if i % 2:
                return reader.read(logs, 0, 10)
            return b.range_keys([b.layout.prefix + "r/"])

        try:
            seen = _readers_during(db, member.pause, op=op)
        finally:
            member.resume()
    wrong = [s for s in seen if s[0] != "BackendUnavailableError" or s[1] > timeout + 1.0]
    assert not wrong, f"ranges and log reads of a frozen member (timeout={timeout}): {seen}"


@pytest.mark.timeout(90)
def test_threads_of_ids_leases_and_revisions_keep_the_clients_reactor_wake_up(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """Four threads of ``allocate_id``, lease acquire/release and the current revision for 3 s (none takes the
    commit turn): a single get afterwards still takes well under the reactor's 10 ms poll tick.

    They were sent each from its caller's thread, outside the send gate: four threads of ``allocate_id`` lost
    hazelcast-python-client 5.7's reactor wake-up in 3 runs of 3 (a get's median 10.5 ms after, for the
    client's life; ``benchmarks/hzwakeup_stress.py 3 3 4:id``)."""
    with nbdb.connect(hazelcast_server.url, namespace=_ns()) as db:
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        db.create(LogicalSwitch(name="seed"))

        def lease(_: int) -> None:
            assert backend.acquire_lease("l", b"me", 5.0)
            backend.release_lease("l", b"me")

        assert_reactor_wake_up_kept(
            backend,
            [
                lambda _: backend.allocate_id("stress"),
                lambda _: backend.allocate_id("stress"),
                lease,
                lambda _: backend.revision_now(),
            ],
        )


@pytest.mark.timeout(90)
def test_eight_writers_and_a_reader_keep_the_clients_reactor_wake_up(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """Eight threads of creates and one of gets for 3 s: a single get afterwards still takes well under the
    reactor's 10 ms poll tick.

    The commit task left from its caller's thread without holding the gate: the next thread's gated get woke
    the reactor again while it was taking the task's wake-up, and the wake-up was lost for the client's life
    (3 of 3 runs of ``benchmarks/hzwakeup_stress.py 3 3 9:mixed`` on main; 2 of 3 with a marker read sent
    right after the task from the same thread). While other threads send through the gate, it now leaves
    from a gated read's reply callback."""
    with nbdb.connect(hazelcast_server.url, namespace=_ns()) as db:
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        db.create(LogicalSwitch(name="seed"))

        def create(n: int) -> Callable[[int], object]:
            return lambda i: db.create(LogicalSwitch(name=f"w{n}-{i}"))

        assert_reactor_wake_up_kept(backend, [lambda _: backend.get_key("x/0"), *[create(n) for n in range(1, 9)]])


@pytest.mark.timeout(60)
def test_a_lease_is_renewed_while_another_thread_of_the_client_tries_to_take_it(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """One thread renews a lease it holds for 3 s while another tries to take it: each call takes well under
    ``timeout``, the renewals succeed and the other thread never gets the lease.

    The renewal holds the lease entry's lock; the member holds the other thread's ``put_if_absent`` on that
    entry until the unlock. Sent through the gate as other writes, it held the gate that long, the renewal's
    read queued behind it: the renewal failed with BackendUnavailableError after 2 x ``timeout`` (4.1 s)."""
    timeout = 2.0
    with nbdb.connect(f"{hazelcast_server.url}?timeout={timeout}", namespace=_ns()) as db:
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        assert backend.acquire_lease("l", b"a", 10.0)
        end = time.monotonic() + 3
        seen: list[tuple[str, object, float]] = []

        def work(renew: bool) -> None:
            while time.monotonic() < end:
                began = time.monotonic()
                try:
                    if renew:
                        got: object = backend.renew_lease("l", b"a", 10.0)
                    else:
                        got = backend.acquire_lease("l", b"b", 10.0)
                except errors.NbdbError as exc:
                    got = type(exc).__name__
                seen.append(("renew" if renew else "acquire", got, time.monotonic() - began))

        _in_threads(work, (True, False), 30)
    wrong = [s for s in seen if s[1] is not (s[0] == "renew") or s[2] > timeout / 2]
    assert any(s[0] == "renew" for s in seen) and any(s[0] == "acquire" for s in seen), seen[:10]
    assert not wrong, f"{len(seen)} calls, wrong: {wrong[:10]}"


class _WakeLog:
    """Requests sent through recorded proxies from threads other than the client's reactor, and every such request
    sent while another of them was still awaiting its reply (a second wake-up while the reactor may be taking the
    first: how hazelcast-python-client 5.7's is lost)."""

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.out: list[str] = []
        self.sent: list[str] = []
        self.overlaps: list[tuple[str, tuple[str, ...]]] = []

    def wrap(self, proxy: object) -> object:
        log = self

        class Recorded:
            def __getattr__(self, name: str) -> object:
                attr = getattr(proxy, name)
                if not callable(attr):
                    return attr

                def call(*args: object, **kwargs: object) -> object:
                    if threading.current_thread().name == "hazelcast-reactor":
                        return attr(*args, **kwargs)  # wakes nothing
                    with log.guard:
                        if log.out:
                            log.overlaps.append((name, tuple(log.out)))
                        log.out.append(name)
                        log.sent.append(name)
                    future = attr(*args, **kwargs)
                    future.add_done_callback(lambda _: log.answered(name))  # type: ignore[attr-defined]
                    return future

                return call

        return Recorded()

    def answered(self, name: str) -> None:
        with self.guard:
            self.out.remove(name)


@pytest.mark.timeout(90)
def test_lock_requests_of_renewals_never_wake_the_reactor_while_another_wake_up_is_unanswered(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """Two threads of gets and two of lease renewals (lock, read, write, unlock), 40 rounds each: no request leaves
    from a caller's thread while another sent from one awaits its reply.

    The lock request left from its owner's thread without holding the send gate (a blocking ``lock`` may be
    answered late), and a marker read followed it from the same thread to hold the gate: two wake-ups in a row,
    on every renewal. Under eight threads (four renewing) hazelcast-python-client 5.7's reactor lost its wake-up
    in 4 runs of 4 (``benchmarks/hzwakeup_stress.py 4 3 8:renew``). The lock is now a ``tryLock`` that does not
    wait, answered at once, holding the gate until its reply like any request sent through it."""
    with nbdb.connect(hazelcast_server.url, namespace=_ns()) as db:
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        for n in (2, 3):
            assert backend.acquire_lease(f"l{n}", b"t", 30.0)
        log = _WakeLog()
        backend._kv_async = log.wrap(backend._kv_async)
        backend._lease_async = log.wrap(backend._lease_async)
        backend.meta_async = log.wrap(backend.meta_async)
        failed: list[BaseException] = []

        def work(n: int) -> None:
            try:
                for _ in range(40):
                    if n < 2:
                        backend.get_key(f"x/{n}")
                    else:
                        assert backend.renew_lease(f"l{n}", b"t", 30.0)
            except BaseException as exc:  # reported below
                failed.append(exc)

        _in_threads(work, range(4), 60)
        assert not failed, failed
    locks = [name for name in log.sent if name in ("lock", "try_lock")]
    assert len(locks) >= 80, log.sent[:20]
    assert not log.overlaps, f"{len(log.overlaps)} of {len(log.sent)} sends overlapped: {log.overlaps[:5]}"


@contextlib.contextmanager
def _lease_and_rival(server: HazelcastServer, timeout: float) -> Iterator[tuple[HazelcastBackend, HazelcastBackend]]:
    """A backend (``timeout`` s) holding lease ``l`` (token ``a``), and another client's backend, one namespace."""
    namespace = _ns()
    with (
        nbdb.connect(server.url, namespace=namespace) as other,
        nbdb.connect(f"{server.url}?timeout={timeout}", namespace=namespace) as db,
    ):
        backend, rival = db.backend, other.backend
        assert isinstance(backend, HazelcastBackend) and isinstance(rival, HazelcastBackend)
        assert backend.acquire_lease("l", b"a", 30.0)
        yield backend, rival


@pytest.mark.timeout(60)
def test_a_renewal_waits_for_a_lease_entry_lock_another_client_holds_and_takes_it_once_freed(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """Another client holds the lease entry's lock: a renewal asks again (``tryLock`` refused) until it is freed,
    then renews; held past ``timeout``, the renewal fails with BackendUnavailableError and holds nothing after."""
    with _lease_and_rival(hazelcast_server, 2) as (backend, rival):
        rival._lease_async.lock("l", lease_time=30).result()
        with pytest.raises(errors.BackendUnavailableError, match="not granted"):
            backend.renew_lease("l", b"a", 30.0)
        renewed: list[object] = []
        worker = threading.Thread(target=lambda: renewed.append(backend.renew_lease("l", b"a", 30.0)), daemon=True)
        worker.start()
        worker.join(0.3)  # asking again meanwhile (or not started yet): either way it waits for the unlock
        rival._lease_async.unlock("l").result()
        worker.join(30)
        assert renewed == [True]
        assert not backend._lease_async.is_locked("l").result()  # the renewal's unlock left nothing held


@pytest.mark.timeout(90)
def test_a_renewal_gets_a_lease_entry_lock_that_other_clients_waiters_pass_from_hand_to_hand(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """Two threads of another client take the lease entry's lock in turn with a blocking ``lock`` (as member-side
    commit tasks take the commit lock, one queued behind the other): the lock is never free, the member hands it
    from one waiter to the next. A renewal still gets its turn within ``timeout``.

    A ``tryLock`` without waiting, asked again every 1-20 ms, is refused every time (the member grants the lock
    to a queued waiter as its holder unlocks, never to a later ``tryLock``): the renewal failed with
    BackendUnavailableError, where the blocking ``lock`` before it queued and was granted in turn. Lists and
    commits of a client beside other clients' steady commits starved so (4 clients of 4 writing threads, a
    ``timeout`` of 1 s: 12 of 51 lists failed; 0 of 156 waiting in the queue, ``benchmarks/hzlock_contend.py``)."""
    with _lease_and_rival(hazelcast_server, 3) as (backend, rival):
        entry = rival._lease_async.blocking()
        stop = threading.Event()
        rounds = [0, 0]

        def take_turns(n: int) -> None:
            while not stop.is_set() and rounds[n] < 2000:
                entry.lock("l", lease_time=10)
                try:
                    time.sleep(0.002)
                finally:
                    entry.unlock("l")
                rounds[n] += 1

        rivals = [threading.Thread(target=take_turns, args=(n,), daemon=True) for n in range(2)]
        for thread in rivals:
            thread.start()
        try:
            while min(rounds) < 5:  # both rival threads take turns by now (bounded: each thread stops at 2,000)
                time.sleep(0.01)
                assert all(thread.is_alive() for thread in rivals), rounds
            assert backend.renew_lease("l", b"a", 30.0)
        finally:
            stop.set()
            for thread in rivals:
                thread.join(30)
        assert not any(thread.is_alive() for thread in rivals)
        assert not backend._lease_async.is_locked("l").result()


_SEND = st.tuples(
    st.sampled_from(["send", "send_here"]),
    st.sampled_from(["raises", "answered", "failed", "out"]),  # start() raises, its reply is in (or failed) already
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_SEND, st.tuples(st.just("reply"), st.integers(0, 50), st.booleans())), max_size=40))
def test_the_gate_sends_every_request_and_is_idle_once_every_reply_is_in(ops: list[tuple[Any, ...]]) -> None:
    """Whatever the order of sends, failed sends, replies in before the gate attached its callback (which send one
    queued request from the caller's thread, its reply the rest) and failed replies: every request is sent, every
    future a caller got is done, and nothing of the gate is out or queued once every reply is in (a request
    stranded in the queue, or a gate left busy, would hold every later request of the client)."""
    gate = SendGate()
    out: list[Future[Any]] = []
    got: list[Any] = []
    for op in ops:
        if op[0] == "reply":
            if out:
                reply = out.pop(op[1] % len(out))
                reply.set_result(True) if op[2] else reply.set_exception(RuntimeError("refused"))
            continue
        how = op[1]

        def start(how: str = how) -> Future[Any]:
            if how == "raises":
                raise RuntimeError("not sent")
            sent: Future[Any] = Future()  # type: ignore[no-untyped-call]
            if how == "answered":
                sent.set_result(True)
            elif how == "failed":
                sent.set_exception(RuntimeError("failed"))
            else:
                out.append(sent)
            return sent

        with contextlib.suppress(RuntimeError):
            got.append(gate.send(start) if op[0] == "send" else gate.send_here(start, 0.0))
    while out:
        out.pop().set_result(True)
    assert all(future.done() for future in got)
    assert gate._out == 0 and not gate._queued
