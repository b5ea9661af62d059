"""The shared watch of a Database: one backend stream for many caches, with the contract kept."""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Sequence
from contextlib import ExitStack

import pytest

import nbdb
from nbdb.api import Database
from nbdb.backends.memory import MemoryBackend
from nbdb.conformance.kit import eventually
from nbdb.hub import WatchHub
from nbdb.models import LogicalRouter, LogicalSwitch, LogicalSwitchPort
from nbdb.spi import RecordChange, RecordStream
from nbdb.testing.servers import start_server

pytestmark = pytest.mark.timeout(60)


class CountingBackend(MemoryBackend):
    """The memory store, counting the change streams opened on it."""

    def __init__(self) -> None:
        super().__init__()
        self.watches: list[tuple[tuple[str, ...], object]] = []

    def watch(self, tables: Sequence[str], topics: Collection[str | None] | None, since: int) -> RecordStream:
        self.watches.append((tuple(tables), None if topics is None else frozenset(topics)))
        return super().watch(tables, topics, since)


def test_many_caches_share_one_stream_and_each_sees_its_own() -> None:
    backend = CountingBackend()
    with Database(backend) as db:
        caches = [db.cache(LogicalSwitch, topics=[f"t{i % 3}"]) for i in range(12)]
        for cache in caches:
            assert cache.wait_synced(10)
        made = [db.create(LogicalSwitch(name=f"s{i}", topic=f"t{i % 3}")) for i in range(9)]
        revision = db.list(LogicalSwitch).revision
        for i, cache in enumerate(caches):
            assert cache.wait_for(revision, 10)
            assert {s.id for s in cache.list(LogicalSwitch)} == {s.id for s in made if s.topic == f"t{i % 3}"}
        assert len(backend.watches) <= 4  # one, re-opened at most once per new topic


def test_a_cache_of_other_tables_widens_the_stream_without_a_gap() -> None:
    backend = CountingBackend()
    with Database(backend) as db:
        switches = db.cache(LogicalSwitch)
        assert switches.wait_synced(10)
        sw = db.create(LogicalSwitch(name="a"))
        ports = db.cache(LogicalSwitchPort)
        assert ports.wait_synced(10)
        port = db.create(LogicalSwitchPort(switch=sw, name="p"))
        router = db.create(LogicalRouter(name="r"))
        assert ports.wait_for(port, 10) and ports.get(LogicalSwitchPort, port.id) == port
        assert switches.wait_for(router.nbdb_revision, 10)
        assert switches.get(LogicalSwitch, sw.id) == sw
        # A cache that joins after the hub read past its list re-lists once (the writes
        # above may all land before it asks); the hub widens its stream at its next poll.
        assert ports.relists <= 1
        assert eventually(lambda: any("LogicalSwitchPort" in tables for tables, _ in backend.watches))
        relists = ports.relists
        later = db.create(LogicalSwitchPort(switch=sw, name="q"))
        assert ports.wait_for(later, 10) and ports.get(LogicalSwitchPort, later.id) == later
        assert ports.relists == relists  # from the widened stream, not a list


def test_a_stream_behind_what_the_hub_holds_is_told_to_relist() -> None:
    backend = MemoryBackend()
    hub = WatchHub(backend, buffer=10)
    db = Database(backend)
    try:
        start = db.list(LogicalSwitch).revision
        follower = hub.stream(["LogicalSwitch"], None, start)
        seen = []
        for i in range(40):  # a follower that keeps up with a 10-change buffer loses nothing
            made = db.create(LogicalSwitch(name=f"s{i}"))
            while not any(c.new is not None and c.new.id == made.id for c in seen):
                seen += follower.poll(5)
        late = db.list(LogicalSwitch).revision
        assert len(seen) == 40 and [c.revision for c in seen] == sorted(c.revision for c in seen)
        assert follower.revision == late
        behind = hub.stream(["LogicalSwitch"], None, start)
        with pytest.raises(nbdb.HistoryGoneError):
            behind.poll(1)
        current = hub.stream(["LogicalSwitch"], None, late)
        db.create(LogicalSwitch(name="next"))
        assert [c.new.id for c in current.poll(5) if c.new] != []
    finally:
        hub.close()
        db.close()


class ForgetfulBackend(MemoryBackend):
    """The memory store, whose change stream says its history is gone once, after ``forget`` is set.

    The poll that returns after ``forget`` drops what it read and raises instead, so the
    changes made after ``forget`` reach a cache only through a re-list.
    """

    def __init__(self) -> None:
        super().__init__()
        self.forget = threading.Event()
        self.forgot = False

    def watch(self, tables: Sequence[str], topics: Collection[str | None] | None, since: int) -> RecordStream:
        stream = super().watch(tables, topics, since)
        original = stream.poll

        def poll(timeout: float | None) -> list[object]:
            changes = original(timeout)
            if self.forget.is_set() and not self.forgot:
                self.forgot = True
                raise nbdb.HistoryGoneError("injected: the server forgot")
            return changes  # type: ignore[return-value]

        stream.poll = poll  # type: ignore[method-assign]
        return stream


def test_when_the_backend_loses_history_every_cache_relists_and_converges() -> None:
    backend = ForgetfulBackend()
    with Database(backend) as db:
        caches = [db.cache(LogicalSwitch) for _ in range(3)]
        for cache in caches:
            assert cache.wait_synced(10)
        # Each cache follows the shared stream (it got a change after its list), so each
        # one is there when the stream loses its history.
        made = [db.create(LogicalSwitch(name="warm"))]
        for cache in caches:
            assert cache.wait_for(made[0], 10)
        backend.forget.set()
        made += [db.create(LogicalSwitch(name=f"s{i}")) for i in range(5)]
        revision = db.list(LogicalSwitch).revision
        for cache in caches:
            assert cache.wait_for(revision, 10)
            assert {s.id for s in cache.list(LogicalSwitch)} == {s.id for s in made}
        assert backend.forgot
        assert [cache.relists for cache in caches] == [1, 1, 1]


class GatedBackend(MemoryBackend):
    """The memory store, whose change streams open only once ``gate`` is set (or fail while ``fail`` is)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.fail = False

    def watch(self, tables: Sequence[str], topics: Collection[str | None] | None, since: int) -> RecordStream:
        if self.fail:
            raise nbdb.BackendUnavailableError("refused by the test")
        self.gate.wait(30)
        return super().watch(tables, topics, since)


def test_a_stream_is_handed_out_once_the_backend_stream_covering_it_is_open() -> None:
    # A cache says it is synced after opening its stream: a commit made then must
    # not reach the server before the watch does (etcd delays such a watch by up to 100 ms).
    backend = GatedBackend()
    hub = WatchHub(backend)
    got: list[object] = []
    opener = threading.Thread(target=lambda: got.append(hub.stream(["LogicalSwitch"], None, 0)), daemon=True)
    opener.start()
    try:
        opener.join(0.3)
        assert opener.is_alive() and not got  # still waiting for the backend's watch
        backend.gate.set()
        opener.join(10)
        assert len(got) == 1
    finally:
        backend.gate.set()
        hub.close()


def test_a_failing_open_does_not_hold_the_stream_back() -> None:
    backend = GatedBackend()
    backend.fail = True
    backend.gate.set()
    hub = WatchHub(backend)
    db = Database(backend)
    try:
        done = threading.Event()
        threading.Thread(target=lambda: (hub.stream(["LogicalSwitch"], None, 0), done.set()), daemon=True).start()
        assert done.wait(4)  # the failure ends the wait, well before the 5 s bound
        sw = db.create(LogicalSwitch(name="a"))
        backend.fail = False  # the pump retries, and the stream delivers from its revision on
        stream = hub.stream(["LogicalSwitch"], None, 0)
        assert eventually(lambda: any(c.id == sw.id for c in stream.poll(0.5)), 10)
    finally:
        hub.close()
        db.close()


class StuckBackend(GatedBackend):
    """A GatedBackend that says its requests take at most 0.2 s (its watch waits on ``gate`` regardless)."""

    @property
    def request_timeout(self) -> float:
        return 0.2


def test_close_does_not_wait_for_good_for_a_stream_open_stuck_in_the_backend(caplog: pytest.LogCaptureFixture) -> None:
    """The hub's thread is stuck opening the backend's stream (Hazelcast's listener registration once waited for
    a reply its client's reactor could not read): ``Database.close()`` returns, saying so, and the thread ends
    once the backend lets it go. The code before joined the thread without a bound: close hung as long."""
    backend = StuckBackend()
    db = Database(backend)
    closed = threading.Event()
    try:
        db.cache(LogicalSwitch)
        assert db._hub is not None
        pump = db._hub._thread
        assert pump is not None
        closer = threading.Thread(target=lambda: (db.close(), closed.set()), daemon=True)
        closer.start()
        closer.join(20)  # the bound: the backend's request timeout + 5 s
        assert closed.is_set(), "Database.close() waited for the stuck stream open"
        assert "did not stop within" in caplog.text
    finally:
        backend.gate.set()
        db.close()
    pump.join(10)
    assert not pump.is_alive()


def test_a_cache_is_synced_only_once_its_stream_is_open() -> None:
    backend = GatedBackend()
    with Database(backend) as db:
        sw = db.create(LogicalSwitch(name="a"))
        cache = db.cache(LogicalSwitch)
        try:
            assert not cache.wait_synced(0.3)  # the stream is not open yet
            backend.gate.set()
            assert cache.wait_synced(10)
            assert cache.get(LogicalSwitch, sw.id) == sw
            port = db.create(LogicalSwitch(name="b"))
            assert cache.wait_for(port, 10)
        finally:
            backend.gate.set()


class _Breaking(RecordStream):
    """A real store's stream whose hand-over raises a bug's exception (not an nbdb error) until re-opened.

    On a stream that hands changes to a sink from its reader (etcd's), the sink raises there, and again when
    poll hands the queued changes over; on the others, poll raises once it has read changes.
    """

    def __init__(self, inner: RecordStream, armed: list[bool]) -> None:
        self._inner = inner
        self._armed = armed

    @property
    def revision(self) -> int:
        return self._inner.revision

    def poll(self, timeout: float | None) -> list[RecordChange]:
        changes = self._inner.poll(timeout)
        if changes and self._armed[0]:
            raise KeyError("a bug in the stream's hand-over")
        return changes

    def deliver_to(self, sink: Callable[[list[RecordChange], int], None]) -> bool:
        def breaking(changes: list[RecordChange], revision: int) -> None:
            if changes and self._armed[0]:
                raise KeyError("a bug in the sink, on the reader thread")
            sink(changes, revision)

        return self._inner.deliver_to(breaking)

    def close(self) -> None:
        self._inner.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite", "etcd", "ovsdb"])
def test_an_unexpected_error_in_the_shared_stream_does_not_stop_the_caches(
    kind: str, url_of: Callable[[str], str]
) -> None:
    # The shared watch's thread caught nbdb errors only: anything else a stream or its reader raised
    # ended it, and every cache of the Database stopped receiving changes, without an error or a re-list.
    with ExitStack() as stack:
        url = stack.enter_context(start_server("ovsdb")).url if kind == "ovsdb" else url_of(kind)
        db = stack.enter_context(nbdb.connect(url))
        real_watch = db.backend.watch
        armed = [False]

        def watch(tables: Sequence[str], topics: Collection[str | None] | None, since: int) -> RecordStream:
            stream = _Breaking(real_watch(tables, topics, since), list(armed))
            armed[0] = False  # the first stream opened after the fault is armed breaks; the next one works
            return stream

        db.backend.watch = watch  # type: ignore[method-assign]
        armed[0] = True
        caches = [db.cache(LogicalSwitch), db.cache(LogicalSwitch, topics=["t"])]
        for cache in caches:
            assert cache.wait_synced(10)
        made = [db.create(LogicalSwitch(name=f"s{i}", topic="t")) for i in range(5)]
        for cache in caches:
            assert eventually(lambda c=cache: all(c.get(LogicalSwitch, s.id) is not None for s in made), timeout=15)
        later = db.create(LogicalSwitch(name="later", topic="t"))
        for cache in caches:
            assert eventually(lambda c=cache: c.get(LogicalSwitch, later.id) is not None, timeout=15)
