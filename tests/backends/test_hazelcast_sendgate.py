"""Hazelcast's send gate (``_sendgate.SendGate``) under load and faults, against real members."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import pytest

import nbdb
from nbdb import errors
from nbdb.models.ovn import LogicalSwitch
from nbdb.testing import HazelcastServer, Server
from nbdb.testing.fixtures import hazelcast_server, server_factory  # noqa: F401

pytest.importorskip("hazelcast")

from nbdb.backends.hazelcast import HazelcastBackend

from .conftest import assert_reactor_wake_up_kept


def _ns() -> str:
    return "t" + uuid.uuid4().hex[:10]


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

        threads = [threading.Thread(target=work, args=(renew,), daemon=True) for renew in (True, False)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads)
    wrong = [s for s in seen if s[1] is not (s[0] == "renew") or s[2] > timeout / 2]
    assert any(s[0] == "renew" for s in seen) and any(s[0] == "acquire" for s in seen), seen[:10]
    assert not wrong, f"{len(seen)} calls, wrong: {wrong[:10]}"
