"""Caches of one Database with the same models and topics share one replica, each handle its own subscribers."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.cache import SharedCache
from nbdb.conformance.kit import eventually
from nbdb.events import ChangeEvent, EventKind
from nbdb.models import LogicalSwitch, LogicalSwitchPort

pytestmark = pytest.mark.timeout(60)


class Seen:
    """A subscriber that records its events."""

    def __init__(self) -> None:
        self.events: list[ChangeEvent[Any]] = []
        self.lock = threading.Lock()

    def __call__(self, event: ChangeEvent[Any]) -> None:
        with self.lock:
            self.events.append(event)

    def names(self, kind: EventKind | None = None) -> list[str]:
        with self.lock:
            return [e.new.name for e in self.events if e.new is not None and (kind is None or e.kind is kind)]


def test_caches_of_the_same_models_and_topics_hold_one_copy_of_each_object() -> None:
    with nbdb.connect() as db:
        a = db.cache(LogicalSwitch, topics=["t"])
        b = db.cache(LogicalSwitch, topics=["t"])
        other_topic = db.cache(LogicalSwitch, topics=["u"])
        own = db.cache(LogicalSwitch, topics=["t"], shared=False)
        for cache in (a, b, other_topic, own):
            assert cache.wait_synced(10)
        sw = db.create(LogicalSwitch(name="s", topic="t"))
        for cache in (a, b, own):
            assert cache.wait_for(sw, 10)
        assert isinstance(a, SharedCache) and isinstance(b, SharedCache)
        assert a.get(LogicalSwitch, sw.id) is b.get(LogicalSwitch, sw.id)  # one replica
        assert a.get(LogicalSwitch, sw.id) == own.get(LogicalSwitch, sw.id)
        assert not isinstance(own, SharedCache)
        assert other_topic.get(LogicalSwitch, sw.id) is None


def test_a_handle_opened_later_gets_what_is_cached_then_every_change_once() -> None:
    with nbdb.connect() as db:
        first = db.cache(LogicalSwitch)
        assert first.wait_synced(10)
        early = db.create(LogicalSwitch(name="early"))
        assert first.wait_for(early, 10)
        seen = Seen()
        later = db.cache(LogicalSwitch, on_change=seen)
        assert later.wait_synced(10)
        late = db.create(LogicalSwitch(name="late"))
        assert later.wait_for(late, 10)
        assert eventually(lambda: seen.names() == ["early", "late"], 10), "the later handle saw both, once each"
        assert [e.synthetic for e in seen.events] == [True, False]


def test_closing_one_handle_ends_its_subscribers_and_not_the_others() -> None:
    with nbdb.connect() as db:
        seen_a, seen_b = Seen(), Seen()
        a = db.cache(LogicalSwitch, on_change=seen_a)
        b = db.cache(LogicalSwitch, on_change=seen_b)
        assert a.wait_synced(10) and b.wait_synced(10)
        queue = a.queue()
        a.close()
        assert queue.closed
        with pytest.raises(nbdb.ValidationError):
            a.subscribe(seen_a)
        sw = db.create(LogicalSwitch(name="after"))
        assert b.wait_for(sw, 10)
        assert eventually(lambda: seen_b.names() == ["after"], 10), "b goes on"
        assert seen_a.names() == []
        assert b._replica._thread.is_alive()
        b.close()
        assert not b._replica._thread.is_alive()  # the replica closed with its last handle
        # A new handle of the same models starts a new replica.
        c = db.cache(LogicalSwitch)
        assert c.wait_synced(10) and [s.name for s in c.list(LogicalSwitch)] == ["after"]


def test_the_handles_of_a_replica_share_one_delivery_thread_and_a_blocked_one_is_handed_off() -> None:
    with nbdb.connect() as db:
        before = threading.active_count()
        seen = [Seen() for _ in range(30)]
        handles = [db.cache(LogicalSwitch, on_change=s) for s in seen]
        assert all(h.wait_synced(10) for h in handles)
        # The hub, the replica's apply thread and its delivery thread: not one per handle.
        assert threading.active_count() - before <= 3
        gate = threading.Event()
        stuck: list[str] = []
        handles[0].subscribe(lambda e: (gate.wait(30), stuck.append(e.new.name)))
        try:
            made = [db.create(LogicalSwitch(name=f"s{i}")) for i in range(5)]
            want = [m.name for m in made]
            assert eventually(lambda: all(s.names() == want for s in seen), 10), "the others go on"
            assert stuck == []
        finally:
            gate.set()
        assert eventually(lambda: stuck == want, 10), "in order, each once, on its own thread now"


def test_unsubscribe_finds_only_this_handles_callbacks() -> None:
    with nbdb.connect() as db:
        seen = Seen()
        a = db.cache(LogicalSwitch, on_change=seen)
        b = db.cache(LogicalSwitch)
        assert a.wait_synced(10)
        with pytest.raises(nbdb.NotFoundError):
            b.unsubscribe(seen)
        a.unsubscribe(seen)
        with pytest.raises(nbdb.NotFoundError):
            a.unsubscribe(seen)


def test_projected_caches_keep_replicas_of_their_own() -> None:
    with nbdb.connect() as db:
        full = db.cache(LogicalSwitchPort)
        names = db.cache(LogicalSwitchPort, fields=["name"])
        assert full.wait_synced(10) and names.wait_synced(10)
        assert not isinstance(names, SharedCache)
        sw = db.create(LogicalSwitch(name="s"))
        port = db.create(LogicalSwitchPort(switch=sw, name="p"))
        assert full.wait_for(port, 10) and names.wait_for(port, 10)
        view = names.get(LogicalSwitchPort, port.id)
        assert view is not None and view.name == "p"
        assert full.get(LogicalSwitchPort, port.id) == port


@settings(max_examples=25)
@given(st.lists(st.sampled_from(["open", "close", "write"]), min_size=1, max_size=12))
def test_every_open_handle_reflects_the_store(steps: list[str]) -> None:
    """Whatever the order of opening, closing and writing: each open handle holds what the store holds."""
    with nbdb.connect() as db:
        handles: list[nbdb.Cache] = []
        closed: list[nbdb.Cache] = []
        for n, step in enumerate(steps):
            if step == "open":
                handles.append(db.cache(LogicalSwitch))
            elif step == "close" and handles:
                gone = handles.pop(0)
                gone.close()
                closed.append(gone)
            else:
                db.create(LogicalSwitch(name=f"s{n}"))
        stored = db.list(LogicalSwitch)
        for cache in handles:
            assert cache.wait_synced(10) and cache.wait_for(stored.revision, 10)
            assert sorted(s.name for s in cache.list(LogicalSwitch)) == sorted(s.name for s in stored)
        if not handles:
            for cache in closed:
                assert not cache._replica._thread.is_alive()


def test_a_first_load_of_one_id_listed_twice_holds_and_indexes_the_last_copy_only() -> None:
    # A first load puts every object, then indexes them field by field; two records of one id
    # (copies in two topics, which another writer could leave) go one after the other, as a change
    # does: the later copy is held, and the earlier one's values are in no index.
    with nbdb.connect("sqlite://") as db:
        switch = db.create(LogicalSwitch(name="s", topic="a"))
        first = db.create(LogicalSwitchPort(switch=switch.id, name="x", topic="a"))
        db.create(LogicalSwitchPort(switch=switch.id, name="other", topic="a"))
        copy = first.model_copy(update={"name": "y", "topic": "b"})
        backend: Any = db.backend
        data = copy.model_dump_json(exclude={"version"}).encode()
        assert backend.commit_keys([], {backend.layout.object("b", LogicalSwitchPort.nbdb_table, first.id): data}, [])
        events: list[ChangeEvent[Any]] = []
        with db.cache(LogicalSwitchPort, on_change=events.append) as cache:
            assert cache.wait_synced(10)
            held = cache.get(LogicalSwitchPort, first.id)
            assert held is not None and (held.name, held.topic) == ("y", "b")
            assert cache.find(LogicalSwitchPort, name="x") == []
            assert cache.find(LogicalSwitchPort, name="y") == [held]
            assert {p.name for p in cache.find(LogicalSwitchPort, switch=switch.id)} == {"y", "other"}
            assert len(cache) == 2
            eventually(lambda: [e.kind for e in events].count(EventKind.UPDATED) == 1)


@pytest.mark.parametrize("store_db", ["memory", "sqlite", "redis", "etcd"], indirect=True)
def test_a_relist_replaces_an_object_deleted_and_created_again_at_the_version_held(store_db: nbdb.Database) -> None:
    """A re-list kept a held copy whenever its version was the listed one's: an object deleted and created
    again (to the same version) between two lists stayed cached with the old content, and no event said
    otherwise. Where the store tells the revision that wrote a record, that is compared too."""
    from nbdb.cache import Replica

    db = store_db
    if not db.capabilities.cas_across_recreate:
        pytest.skip("the store tells no revision per record")
    kept = db.create(LogicalSwitch(name="kept"))
    first = db.create(LogicalSwitch(name="first"))
    replica = Replica(db.backend, [LogicalSwitch])  # not started: its lists are made here, one by one
    seen = Seen()
    with SharedCache(replica, replica.close) as cache:
        cache.subscribe(seen)
        replica._relist()
        held = replica._objects[LogicalSwitch]
        before = held[kept.id.int]
        db.delete(first)
        again = db.create(LogicalSwitch(id=first.id, name="again"))
        assert again.version == first.version  # the version does not tell them apart
        replica._relist()
        assert held[first.id.int].name == "again"
        assert held[kept.id.int] is before  # what did not change is kept as it is, no event
        replica._after_batch()
        assert eventually(
            lambda: (
                [(e.kind, e.new.name) for e in seen.events if e.new is not None][-1:] == [(EventKind.UPDATED, "again")]
            )
        )
        assert all(e.new is None or e.new.name != "kept" or e.kind is EventKind.CREATED for e in seen.events)
