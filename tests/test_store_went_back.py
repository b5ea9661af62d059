"""Read-your-writes after the store went back in time (a server restarted without its data).

A cache at revision 3 of a store that restarted empty compared a new write's revision 1 with its own 3:
``wait_for`` said True at once while ``get`` found nothing; the cache re-listed only when its stream
noticed, about a second later on Redis and never on etcd until a write of its own Database.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.models import LogicalSwitch
from nbdb.revision import Watermark
from nbdb.spi import Backend, RecordChange, RecordStream
from nbdb.testing.fixtures import server_factory  # noqa: F401 - pytest fixture
from nbdb.testing.servers import Server

pytestmark = pytest.mark.timeout(120)


def _create_when_back(db: nbdb.Database, name: str) -> LogicalSwitch:
    """One create once the server answers again: a read first, so no write is tried on a dying connection.

    Retrying the create itself on any unavailability wrote it twice when a try's outcome was unknown
    (``CommitUnknownError`` is one; the CI saw the new switch at revision 2): a write is only sent again
    when it surely did not leave.
    """
    deadline = time.monotonic() + 30
    while True:
        try:
            db.list(LogicalSwitch)
            return db.create(LogicalSwitch(name=name))
        except nbdb.CommitUnknownError:
            raise
        except nbdb.BackendUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class _HeldStream(RecordStream):
    """A stream that, once ``held`` is set, brings nothing: its consumer cannot notice the loss on its own."""

    def __init__(self, inner: RecordStream, held: threading.Event) -> None:
        self._inner = inner
        self._held = held

    def poll(self, timeout: float | None) -> list[RecordChange]:
        if self._held.is_set():
            time.sleep(min(timeout if timeout is not None else 0.05, 0.05))
            return []
        return self._inner.poll(timeout)

    @property
    def revision(self) -> int:
        return self._inner.revision

    def close(self) -> None:
        self._inner.close()


@contextmanager
def _holdable_streams(backend: Backend) -> Iterator[threading.Event]:
    """Once the yielded event is set, the watch streams ``backend`` opened before bring nothing; later ones flow."""
    held = threading.Event()
    original = backend.watch

    def watch(tables: Sequence[str], topics: Collection[str | None] | None, since: int) -> RecordStream:
        return _HeldStream(original(tables, topics, since), held if not held.is_set() else threading.Event())

    backend.watch = watch  # type: ignore[method-assign]
    try:
        yield held
    finally:
        del backend.watch


def _lose_data(server: Server) -> None:
    member = server.members[0]
    if server.kind == "etcd":
        member.stop()
        shutil.rmtree(member.data_dir)  # etcd keeps its data over a restart: a member that lost its disk
    member.restart()  # Redis without appendonly (the harness' default) comes back empty


@pytest.mark.parametrize("kind", ["redis", "etcd"])
@pytest.mark.parametrize("shared", [True, False])
def test_wait_for_a_write_after_the_store_lost_its_data_waits_for_the_relist(
    server_factory: Callable[..., Server],  # noqa: F811
    kind: str,
    shared: bool,
) -> None:
    server = server_factory(kind)
    url = server.url + ("?timeout=1" if kind == "etcd" else "")  # etcd's client gives up on a dead member sooner
    with nbdb.connect(url, namespace="wb") as db, _holdable_streams(db.backend) as held:
        for i in range(3):
            db.create(LogicalSwitch(name=f"old{i}"))
        cache = db.cache([LogicalSwitch], shared=shared)
        assert cache.wait_synced(10)
        seen = cache.revision
        assert seen >= 3
        held.set()  # the cache's stream cannot notice the loss: only the Database's own requests below tell it
        _lose_data(server)
        new = _create_when_back(db, "new")
        assert new.nbdb_revision < seen  # the store's new history starts below the cache's
        assert cache.wait_for(new, 20)
        assert cache.get(LogicalSwitch, new.id) is not None  # it said True with nothing there
        assert [o.name for o in cache.list(LogicalSwitch)] == ["new"]  # the lost ones are gone from it
        again = db.create(LogicalSwitch(name="again"))
        assert cache.wait_for(again.nbdb_revision, 20)
        assert cache.get(LogicalSwitch, again.id) is not None
        assert cache.relists >= 1


def test_a_cache_that_only_read_the_old_history_still_tells_the_reset(
    server_factory: Callable[..., Server],  # noqa: F811
) -> None:
    """The revisions seen came from the cache alone (another client wrote them), not from commits of its Database."""
    server = server_factory("redis")
    with nbdb.connect(server.url, namespace="wb") as other:
        for i in range(3):
            other.create(LogicalSwitch(name=f"old{i}"))
    with nbdb.connect(server.url, namespace="wb") as db:
        cache = db.cache([LogicalSwitch])
        assert cache.wait_synced(10)
        assert len(cache) == 3
        _lose_data(server)
        new = _create_when_back(db, "new")
        assert cache.wait_for(new, 20)
        assert cache.get(LogicalSwitch, new.id) is not None


def test_commits_of_one_history_never_tell_a_reset_on_the_kit_stores(store_db: nbdb.Database) -> None:
    """No store that keeps its data makes a cache list again: creates, updates, a delete of nothing, a cascade."""
    with store_db.cache([LogicalSwitch]) as cache:
        assert cache.wait_synced(10)
        objs = [store_db.create(LogicalSwitch(name=f"s{i}")) for i in range(5)]
        assert cache.wait_for(objs[-1], 10)
        store_db.update(objs[0].model_copy(update={"name": "renamed"}))
        assert store_db.delete(LogicalSwitch, objs[1].id) is not None
        assert store_db.delete(LogicalSwitch, objs[1].id, if_exists=True) is None
        with store_db.transaction():
            pass
        last = store_db.create(LogicalSwitch(name="last"))
        assert cache.wait_for(last, 10)
        assert cache.relists == 0


@settings(max_examples=200)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 50)), max_size=30))
def test_a_watermark_tells_a_reset_only_for_a_commit_below_what_was_seen(steps: list[tuple[bool, int]]) -> None:
    """Commits and observations that never go below what was seen before them tell nothing; one below always does."""
    mark = Watermark()
    told: list[tuple[int, int]] = []
    mark.went_back = lambda seen, revision: told.append((seen, revision))
    high = 0
    for is_commit, revision in steps:
        if is_commit:
            before = mark.seen
            mark.committed(before, revision)
            if revision < before:
                assert told[-1] == (before, revision)
                high = revision
                assert mark.seen == revision  # the new history's mark: its next commits tell nothing
                continue
            high = max(high, revision)
        else:
            mark.observed(revision)
            high = max(high, revision)
        assert mark.seen == high


def test_wait_for_a_copy_read_back_after_the_store_lost_its_data(
    server_factory: Callable[..., Server],  # noqa: F811
) -> None:
    """A copy read back carries no revision: the wait reads the store's, which is below the cache's."""
    server = server_factory("redis")
    with nbdb.connect(server.url, namespace="wb") as db, nbdb.connect(server.url, namespace="wb") as other:
        for i in range(3):
            db.create(LogicalSwitch(name=f"old{i}"))
        cache = db.cache([LogicalSwitch])
        assert cache.wait_synced(10)
        _lose_data(server)
        written = _create_when_back(other, "new")  # through another Database: this one commits nothing
        read = db.get(LogicalSwitch, written.id)
        assert read.nbdb_revision is None
        assert cache.wait_for(read, 20)
        assert cache.get(LogicalSwitch, written.id) is not None


def _synced_over_three(db: nbdb.Database) -> nbdb.Cache:
    """A cache of ``db``'s switches, synced over three it created first."""
    for i in range(3):
        db.create(LogicalSwitch(name=f"old{i}"))
    cache = db.cache([LogicalSwitch])
    assert cache.wait_synced(10)
    return cache


def test_wait_for_a_write_at_the_very_revision_the_cache_stands_at_after_the_store_lost_its_data(
    server_factory: Callable[..., Server],  # noqa: F811
) -> None:
    """The store lost as many commits as were made since: the new write's revision equals the cache's.

    No commit came back below a revision seen, and etcd's watch waits for a revision past the cache's, so
    nothing told the reset: ``wait_for(new)`` said True at once while ``get`` found nothing (a controller
    then read its own write as missing). A cache standing at the very commit that wrote the awaited
    version, without it, proves the store went back.
    """
    server = server_factory("etcd")
    url = server.url + "?timeout=1"
    with nbdb.connect(url, namespace="wb") as db, nbdb.connect(url, namespace="wb") as other:
        cache = _synced_over_three(db)
        stands = cache.revision
        _lose_data(server)
        first = _create_when_back(other, "first")  # through another Database: its own mark sees nothing
        assert first.nbdb_revision is not None and first.nbdb_revision < stands
        for i in range(stands):  # bounded: one commit per revision on etcd
            if other.list(LogicalSwitch).revision >= stands - 1:
                break
            other.create(LogicalSwitch(name=f"fill{i}"))
        assert other.list(LogicalSwitch).revision == stands - 1
        new = db.create(LogicalSwitch(name="new"))
        # Nothing of this Database's told the cache (its own stream may have, if it reconnected while the
        # new store stood below its revision: see the next test; the wait must hold either way).
        assert new.nbdb_revision == stands
        assert cache.wait_for(new, 20)
        assert cache.get(LogicalSwitch, new.id) is not None  # it said True with nothing there
        assert "old0" not in {o.name for o in cache.list(LogicalSwitch)}


def test_an_etcd_cache_that_reconnects_below_its_revision_lists_again(
    server_factory: Callable[..., Server],  # noqa: F811
) -> None:
    """etcd served the reopened watch from a revision the new, emptied store had not reached: it waited,
    then delivered what came after, so a cache kept the lost objects and missed the first writes of the
    new history for good (nothing of its Database committed to tell it). The watcher's confirmation
    says where the member stands; below the resume point (a linearizable read confirms), the history is gone.
    """
    server = server_factory("etcd")
    url = server.url + "?timeout=1"
    with nbdb.connect(url, namespace="wb") as db, nbdb.connect(url, namespace="wb") as other:
        cache = _synced_over_three(db)
        _lose_data(server)
        deadline = time.monotonic() + 20  # a bound for the reconnect, not a speed assertion
        while cache.relists == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cache.relists >= 1, "the cache went on from a revision the store no longer had"
        new = _create_when_back(other, "new")  # through another Database: it tells this one nothing
        assert cache.wait_for(new, 20)
        assert [o.name for o in cache.list(LogicalSwitch)] == ["new"]


@pytest.mark.timeout(30)  # before the fix this wait never returned (timeout=None): the bound fails it
def test_a_write_the_store_lost_ends_the_wait_after_one_relist(
    server_factory: Callable[..., Server],  # noqa: F811
) -> None:
    """A cache stands at the very revision of a write, without it, and still does after listing again: lost.

    The wait asked its replica to list again at every poll (a whole re-list of the store each ~0.5 s) and,
    with ``timeout=None``, never returned. One list made after the request settles it: the write is gone.
    """
    server = server_factory("redis")
    with nbdb.connect(server.url, namespace="lost") as db:
        for i in range(3):
            db.create(LogicalSwitch(name=f"old{i}"))
        new = db.create(LogicalSwitch(name="new"))
        _lose_data(server)
        with nbdb.connect(server.url, namespace="lost") as other:
            _create_when_back(other, "fill0")
            while other.list(LogicalSwitch).revision < int(new.nbdb_revision or 0):  # bounded by that revision
                other.create(LogicalSwitch(name="fill"))
            assert other.list(LogicalSwitch).revision == new.nbdb_revision
        cache = db.cache([LogicalSwitch])
        assert cache.wait_synced(10)
        assert cache.revision == new.nbdb_revision and cache.relists == 0
        with pytest.raises(nbdb.HistoryGoneError, match="lost that write"):
            cache.wait_for(new, None)
        assert cache.relists == 1
        assert cache.get(LogicalSwitch, new.id) is None


def test_an_etcd_watch_that_reconnects_after_the_new_store_passed_its_revision_tells_the_loss(
    server_factory: Callable[..., Server],  # noqa: F811
) -> None:
    """A watch nobody polled while the store lost its data and the new history passed its resume point:
    the watcher's confirmation stands at or past that point, so the revision check had nothing to see, and
    the stream went on with the new history's later commits, its first ones lost without a word. A cluster
    never lowers its raft term, and a new one starts low: a term below the highest the stream saw
    (confirmed by a linearizable read) proves another store."""
    from nbdb.backends.etcd import EtcdBackend

    server = server_factory("etcd")
    url = server.url + "?timeout=1"
    server.members[0].stop()
    server.members[0].restart()  # a restart with its disk: a new election, a higher term than a new store's
    with nbdb.connect(url, namespace="wb") as db, nbdb.connect(url, namespace="wb") as other:
        backend = db.backend
        assert isinstance(backend, EtcdBackend)
        _create_when_back(db, "old0")
        for i in range(1, 3):
            db.create(LogicalSwitch(name=f"old{i}"))
        stream = backend.watch(["LogicalSwitch"], None, backend.current_revision())
        try:
            assert stream.poll(0.2) == []
            resume = stream.revision
            _lose_data(server)
            lost = [_create_when_back(other, "lost0")]  # at or below the resume point: never delivered
            while other.list(LogicalSwitch).revision <= resume + 1:  # bounded: one commit per revision
                lost.append(other.create(LogicalSwitch(name=f"lost{len(lost)}")))
            assert lost[0].nbdb_revision is not None and lost[0].nbdb_revision <= resume
            deadline = time.monotonic() + 10  # a bound for the reconnect, not a speed assertion
            with pytest.raises(nbdb.HistoryGoneError):
                while time.monotonic() < deadline:
                    stream.poll(0.2)
        finally:
            stream.close()
