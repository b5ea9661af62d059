"""Database.close() gives back the locks still held through it, whichever thread holds them, once.

The conformance kit holds every backend to it from one thread
(``test_closing_a_database_gives_its_locks_back``); these are the races with other threads: a close while
a block runs, a close at the very moment a block ends, a close while a lock is being taken.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

import pytest

import nbdb
from nbdb.backends.memory import MemoryBackend
from nbdb.backends.memory.store import MemoryStore
from nbdb.models import LogicalSwitch
from nbdb.spi import LockHandle

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return f"memory://lockclose-{uuid.uuid4().hex[:8]}"
    return f"sqlite:///{tmp_path}/nb.db"


@pytest.fixture
def connect(url: str) -> Iterator[Callable[[], nbdb.Database]]:
    opened: list[nbdb.Database] = []

    def open_one() -> nbdb.Database:
        opened.append(nbdb.connect(url))
        return opened[-1]

    yield open_one
    for db in opened:
        db.close()


def _in_thread(target: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    failures: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # reported by the test
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, failures


def _held_by(db: nbdb.Database, name: str) -> bool:
    """Whether somebody else holds ``name`` (``db`` cannot take it at once)."""
    try:
        with db.lock(name, ttl=30, timeout=0.2):
            return False
    except nbdb.LockTimeoutError:
        return True


def test_close_from_another_thread_while_the_block_runs(connect: Callable[[], nbdb.Database]) -> None:
    holder, successor, third = connect(), connect(), connect()
    switch = successor.create(LogicalSwitch(name="sw"))
    entered, closed = threading.Event(), threading.Event()
    handles: list[LockHandle] = []

    def hold() -> None:
        with holder.lock("leader", ttl=30) as handle:
            handles.append(handle)
            entered.set()
            assert closed.wait(30)
            # The controller's thread goes on after the shutdown: its fenced write is refused.
            with pytest.raises(nbdb.LockLostError):
                successor.update(switch.replace(external_ids={"by": "old leader"}), fence=handle)
        # Leaving the block raised nothing, and released nothing: the successor still holds the lock.

    thread, failures = _in_thread(hold)
    assert entered.wait(30)
    holder.close()
    assert handles[0].lost and handles[0].released
    with successor.lock("leader", ttl=30, timeout=5) as taken:
        closed.set()
        thread.join(30)
        assert not thread.is_alive() and failures == []
        assert not taken.lost
        assert _held_by(third, "leader")
    assert successor.get(LogicalSwitch, switch.id).external_ids == {}


def test_close_racing_the_end_of_the_block(connect: Callable[[], nbdb.Database]) -> None:
    """close() and the block's end at once, many times: neither raises, the lock is given back once."""
    successor, third = connect(), connect()
    for attempt in range(30):
        holder = connect()
        both = threading.Barrier(2, timeout=30)
        handles: list[LockHandle] = []

        def hold(
            holder: nbdb.Database = holder, both: threading.Barrier = both, handles: list[LockHandle] = handles
        ) -> None:
            with holder.lock("raced", ttl=30) as handle:
                handles.append(handle)
                both.wait()

        thread, failures = _in_thread(hold)
        both.wait()
        holder.close()
        thread.join(30)
        assert not thread.is_alive() and failures == [], f"round {attempt}"
        assert handles[0].lost and handles[0].released
        with successor.lock("raced", ttl=30, timeout=5):
            assert _held_by(third, "raced"), f"round {attempt}: released twice"


def test_close_while_the_lock_is_being_taken(connect: Callable[[], nbdb.Database]) -> None:
    """A take that succeeds after its Database closed gives the lock back and raises: nothing would release it."""
    holder, waiter, third = connect(), connect(), connect()
    with holder.lock("queued", ttl=30):
        waiting = waiter.lock("queued", ttl=30, timeout=30)
        started = threading.Event()

        def take() -> None:
            started.set()
            with waiting:
                pass

        thread, failures = _in_thread(take)
        assert started.wait(30)
        assert _held_by(third, "queued")
        waiter.close()
    thread.join(30)
    assert not thread.is_alive()
    assert len(failures) == 1 and isinstance(failures[0], nbdb.BackendUnavailableError), failures
    assert not _held_by(third, "queued")


class _ThirdParty(MemoryBackend):
    """A backend of another package on the embedded store, as written without ``request_timeout`` (None).

    Its server answers a lock's release only once ``answer`` is set (a server that stopped answering, a
    client without a timeout); ``releasing`` tells the release was sent. ``fail`` makes the release raise
    its client's own error; ``on_acquire`` runs as the lock is granted.
    """

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store)
        self.releasing, self.answer = threading.Event(), threading.Event()
        self.fail: BaseException | None = None
        self.on_acquire: Callable[[], None] | None = None

    def acquire_lease(self, name: str, token: bytes, ttl: float) -> bool:
        taken = super().acquire_lease(name, token, ttl)
        if taken and self.on_acquire is not None:
            self.on_acquire()
        return taken

    def release_lease(self, name: str, token: bytes) -> None:
        self.releasing.set()
        if self.fail is not None:
            raise self.fail
        self.answer.wait(120)
        super().release_lease(name, token)


def test_close_waits_a_fixed_bound_for_a_backend_that_declares_no_request_timeout() -> None:
    # request_timeout None (the default a third-party backend inherits) was "wait without bound": a release
    # its server never answered hung close() for ever. It now waits nbdb.api.GIVE_BACK_SECONDS (10 s).
    backend = _ThirdParty(MemoryStore())
    assert backend.request_timeout is None
    holder = nbdb.Database(backend)
    try:
        with ExitStack() as block:
            handle = block.enter_context(holder.lock("unanswered", ttl=30))
            closing = threading.Thread(target=holder.close, daemon=True)
            closing.start()
            closing.join(60)
            assert not closing.is_alive(), "close() waited without bound for a release nobody answers"
            assert handle.lost and not handle.released
    finally:
        backend.answer.set()


def test_close_fences_a_held_lock_before_its_release_is_answered() -> None:
    # The handle turned lost only once the server answered the release: meanwhile a write fenced on the
    # handle landed, the lock still held on the server, racing the release. The handle says giving_back
    # before the release is sent, and a fenced write fails; lost stays False until the release ended (a
    # backend releases on the server unless lost), and the release still reaches the server.
    store = MemoryStore()
    backend = _ThirdParty(store)
    holder, other = nbdb.Database(backend), nbdb.Database(MemoryBackend(store))
    switch = other.create(LogicalSwitch(name="sw"))
    closing = threading.Thread(target=holder.close, daemon=True)
    try:
        with ExitStack() as block:
            handle = block.enter_context(holder.lock("fenced", ttl=30))
            closing.start()
            assert backend.releasing.wait(30)
            assert handle.giving_back, "the release is on its way: the block must see it now"
            assert not handle.lost and not handle.released
            with pytest.raises(nbdb.LockLostError):
                other.update(switch.replace(external_ids={"by": "the closed holder"}), fence=handle)
            backend.answer.set()
            closing.join(30)
            assert not closing.is_alive() and handle.released and handle.lost
        assert other.get(LogicalSwitch, switch.id).external_ids == {}
        with other.lock("fenced", ttl=30, timeout=0.5) as taken:  # released on the server: free at once
            assert not taken.lost
    finally:
        backend.answer.set()
        other.close()


def test_a_lock_granted_after_close_whose_release_fails_raises_backend_unavailable() -> None:
    # The Database closed while the lock was being taken: the take gives the lock back and raises
    # BackendUnavailableError. A release that failed (a third-party client's own error) reached the caller
    # instead, as that error; it is logged, and is the BackendUnavailableError's cause.
    backend = _ThirdParty(MemoryStore())
    holder = nbdb.Database(backend)
    backend.fail = ConnectionResetError("the server went away")
    backend.on_acquire = holder.close  # closed (as from another thread) the moment the lock is granted
    with pytest.raises(nbdb.BackendUnavailableError) as raised:
        with holder.lock("granted late", ttl=30):
            pytest.fail("the block ran on a closed Database")
    assert raised.value.__cause__ is backend.fail
    assert backend.releasing.is_set()


class _OldRule(MemoryBackend):
    """A third-party backend's lock, written to the rule of the SPI: release on the server unless ``handle.lost``.

    (No renewal: its test holds a lock far shorter than its ttl.)
    """

    @contextmanager
    def _hold(self, name: str, ttl: float, timeout: float | None) -> Iterator[LockHandle]:
        handle = LockHandle(name, uuid.uuid4().hex)
        token = handle.token.encode()
        deadline = time.monotonic() + (30.0 if timeout is None else timeout)
        while not self.acquire_lease(name, token, ttl):
            if time.monotonic() >= deadline:
                raise nbdb.LockTimeoutError(f"lock {name!r} is held by another owner")
            time.sleep(0.01)
        try:
            yield handle
        finally:
            if not handle.lost:
                self.release_lease(name, token)

    def lock(
        self, name: str, ttl: float, timeout: float | None, closed: threading.Event | None = None
    ) -> AbstractContextManager[LockHandle]:
        return self._hold(name, ttl, timeout)


def test_a_backend_that_releases_unless_lost_releases_at_the_end_of_a_block() -> None:
    # The handle said lost once nbdb began to give the lock back, before the backend's release ran: a
    # backend written to the rule "release unless lost" never released a lock at the end of its block, and
    # the next holder waited out the whole ttl (30 s; LockTimeoutError after 2 s).
    store = MemoryStore()
    holder, other = nbdb.Database(_OldRule(store)), nbdb.Database(_OldRule(store))
    try:
        with holder.lock("old rule", ttl=30) as held:
            assert not held.lost
        assert held.lost and held.released
        with other.lock("old rule", ttl=30, timeout=2) as taken:
            assert not taken.lost
        # And at close(), while the block runs: given back, and a write fenced on it refused.
        switch = other.create(LogicalSwitch(name="sw"))
        with ExitStack() as block:
            handle = block.enter_context(holder.lock("old rule", ttl=30))
            holder.close()
            assert handle.lost and handle.released
            with pytest.raises(nbdb.LockLostError):
                other.update(switch.replace(external_ids={"by": "the closed holder"}), fence=handle)
            with other.lock("old rule", ttl=30, timeout=2) as taken:
                assert not taken.lost
        assert other.get(LogicalSwitch, switch.id).external_ids == {}
    finally:
        holder.close()
        other.close()


class _ThreeArgumentLock(MemoryBackend):
    """A backend written before the SPI's ``lock`` took the Database's ``closed`` event."""

    def lock(self, name: str, ttl: float, timeout: float | None) -> AbstractContextManager[LockHandle]:  # type: ignore[override]
        return super().lock(name, ttl, timeout)


def test_a_backend_whose_lock_takes_three_arguments_still_locks() -> None:
    # Database.lock passed the event to every backend: one written to the earlier SPI raised TypeError.
    store = MemoryStore()
    holder, other = nbdb.Database(_ThreeArgumentLock(store)), nbdb.Database(_ThreeArgumentLock(store))
    try:
        with holder.lock("l", ttl=5) as handle:
            assert not handle.lost
            with pytest.raises(nbdb.errors.LockTimeoutError):
                with other.lock("l", ttl=5, timeout=0.2):
                    pass
        with other.lock("l", ttl=5, timeout=2) as handle:
            assert not handle.lost
    finally:
        holder.close()
        other.close()


class _KeywordClosedLock(MemoryBackend):
    """A backend taking the event by keyword only, beside an optional argument of its own."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store)
        self.given: list[object] = []

    def lock(  # type: ignore[override]
        self,
        name: str,
        ttl: float,
        timeout: float | None,
        hint: object = None,
        *,
        closed: threading.Event | None = None,
    ) -> AbstractContextManager[LockHandle]:
        self.given.append((hint, closed))
        return super().lock(name, ttl, timeout, closed=closed)


def test_the_closed_event_goes_to_the_argument_named_closed() -> None:
    # The event was passed fourth: a keyword-only ``closed`` never got it (its waits outlived the close)
    # and an unrelated fourth argument got it instead.
    backend = _KeywordClosedLock(MemoryStore())
    db = nbdb.Database(backend)
    try:
        with db.lock("l", ttl=5):
            pass
        [(hint, closed)] = backend.given
        assert hint is None
        assert isinstance(closed, threading.Event) and not closed.is_set()
    finally:
        db.close()
    assert closed.is_set()
