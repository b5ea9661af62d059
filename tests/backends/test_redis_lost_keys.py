"""Redis backend: keys or stream entries another writer deleted under nbdb are reported, not skipped.

Each test spawns a real ``redis-server`` (the harness's fixture) and deletes one thing with a plain
redis-py client, as another program sharing the database would (issue 12).
"""

from __future__ import annotations

import re
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nbdb
from nbdb import errors
from nbdb.models import LogicalSwitch
from nbdb.testing.fixtures import redis_server  # noqa: F401 - pytest fixture
from nbdb.testing.redis import RedisServer

from .test_redis_hostile import _raw_client, root_of, stored
from .test_redis_trial import Store, store  # noqa: F401 - the fixture

redis = pytest.importorskip("redis")


def _drain(watch, polls: int = 10) -> list[str]:  # type: ignore[no-untyped-def]
    names: list[str] = []
    for _ in range(polls):
        got = watch.poll(0.2)
        names += [e.object.name for e in got]
        if names and not got:
            break
    return names


@pytest.mark.timeout(60)
@pytest.mark.parametrize("deleted", ["middle", "last", "head"])
@pytest.mark.parametrize("topics", [None, ["tenant-a"]], ids=["log", "topic-log"])
def test_an_entry_another_writer_deleted_from_log_is_history_gone_not_a_skip(
    store: Store,  # noqa: F811 - the fixture
    deleted: str,
    topics: list[str] | None,
) -> None:
    """An XDEL of one commit's entry of 'log' made an unfiltered watch skip that change with no word:
    each poll checked only the entry at its own revision. The revisions in 'log' are dense (one
    INCR per commit), and nbdb's own jumps (past another writer's entry) say where they start, so a
    hole is lost history: HistoryGoneError, and a cache re-lists."""
    db, client, root = store
    db.create(LogicalSwitch(name="a", topic="tenant-a"))
    head = db.backend.current_revision()
    with db.watch(LogicalSwitch, topics=topics, since=head) as watch:
        db.create(LogicalSwitch(name="b", topic="tenant-a"))
        db.create(LogicalSwitch(name="c", topic="tenant-a"))
        # head: the last entry, with no commit after it (the head, 'last', still names it).
        gone = head + (1 if deleted == "middle" else 2)
        assert client.xdel(f"{root}log", f"{gone}-0") == 1
        if deleted == "last":
            db.create(LogicalSwitch(name="d", topic="tenant-a"))
        if topics:
            # A topic's watch reads its own stream, which kept the entry: it misses nothing.
            assert _drain(watch) == ["b", "c"] + (["d"] if deleted == "last" else [])
            return
        with pytest.raises(errors.HistoryGoneError, match=f"revision {gone}"):
            _drain(watch)


@pytest.mark.timeout(120)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    commits=st.integers(1, 5),
    back=st.integers(0, 2),
    deleted=st.sets(st.integers(-2, 5), max_size=2),
    jump=st.sampled_from([None, "topic", "log"]),
)
def test_a_watch_of_log_delivers_every_change_after_its_revision_or_raises(
    redis_server: RedisServer,  # noqa: F811 - the fixture
    commits: int,
    back: int,
    deleted: set[int],
    jump: str | None,
) -> None:
    """For any commits (one of them past another writer's entry, in a topic's stream or in 'log' at
    the next revision) and any entries another writer deleted from 'log', a watch of 'log' from any
    revision delivers every change after it, once and in order, or raises HistoryGoneError: never a
    silent skip. It raises whenever an entry after its revision was deleted (the last one: once the
    next commit follows it), and delivers when none was deleted at all."""
    with (
        nbdb.connect(redis_server.url, namespace=f"t-{uuid.uuid4().hex[:10]}", retries=1) as db,
        _raw_client(db) as client,
    ):
        root = root_of(db)
        for i in range(3):
            db.create(LogicalSwitch(name=f"pre{i}", topic="tenant-a"))
        start = db.backend.current_revision()
        since = start - back
        names: dict[int, str] = {}
        with db.watch(LogicalSwitch, since=since) as watch:
            for i in range(commits):
                if jump and i == commits // 2:
                    top = db.backend.current_revision()
                    stream = "log:tenant-a" if jump == "topic" else "log"
                    client.xadd(f"{root}{stream}", {"t": "foreign"}, id=f"{top + 1}-0")
                db.create(LogicalSwitch(name=f"s{i}", topic="tenant-a"))
                names[db.backend.current_revision()] = f"s{i}"
            gone = {start + d for d in deleted if d <= 0} | {rev for rev in names if rev - start in deleted}
            for rev in gone:
                client.xdel(f"{root}log", f"{rev}-0")
            # A deleted last entry leaves 'log' looking whole until the next commit's entry follows the hole.
            db.create(LogicalSwitch(name="tail", topic="tenant-a"))
            want = [f"pre{3 - back + i}" for i in range(back)] + [name for _, name in sorted(names.items())] + ["tail"]
            if any(rev > since for rev in gone):
                with pytest.raises(errors.HistoryGoneError):
                    _drain(watch)
            elif gone:  # only entries at or before the watch's revision: served, or (its own) gone
                try:
                    assert _drain(watch) == want
                except errors.HistoryGoneError:
                    assert since in gone
            else:
                assert _drain(watch) == want


@pytest.mark.timeout(60)
def test_a_watch_from_before_a_jump_past_another_writers_entry_is_served(
    store: Store,  # noqa: F811 - the fixture
) -> None:
    """A commit that jumped past another writer's entry in a topic's stream leaves revisions no commit
    took in 'log': its entry says where they start, so an unfiltered watch does not take them for
    a hole (and delivers every change once)."""
    db, client, root = store
    db.create(LogicalSwitch(name="a", topic="tenant-a"))
    head = db.backend.current_revision()
    with db.watch(LogicalSwitch, since=head) as watch:
        client.xadd(f"{root}log:tenant-a", {"t": "foreign"}, id=f"{head + 5}-0")
        db.create(LogicalSwitch(name="b", topic="tenant-a"))
        db.create(LogicalSwitch(name="c", topic="tenant-a"))
        assert db.backend.current_revision() == head + 7
        assert _drain(watch) == ["b", "c"]


def _deleted_sets(root: str, which: str) -> list[str]:
    """The directory sets a test deletes, the one a range or commit names first."""
    return {
        "table": [f"{root}d:o/tenant-a/LogicalSwitch/"],
        "topic and table": [f"{root}d:o/tenant-a/", f"{root}d:o/tenant-a/LogicalSwitch/"],
        "topics": [f"{root}d:o/"],
    }[which]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("which", ["table", "topic and table", "topics"])
def test_a_directory_set_another_writer_deleted_fails_the_list_naming_it(
    store: Store,  # noqa: F811 - the fixture
    which: str,
) -> None:
    """A directory set another writer deleted made a list (and a new cache) silently return nothing
    under it while a get still found the objects. Its parent still names it (nbdb removes a
    directory's name as the directory empties, in the same script), so its absence is damage:
    CorruptRecordError naming the key, as for a set of another type."""
    db, client, root = store
    a = db.create(LogicalSwitch(name="a", topic="tenant-a"))
    db.create(LogicalSwitch(name="b", topic="tenant-b"))
    keys = _deleted_sets(root, which)
    named = keys[0]
    assert client.delete(*keys) == len(keys)
    assert db.get(LogicalSwitch, a.id) == a
    with pytest.raises(errors.CorruptRecordError, match=re.escape(named)) as caught:
        db.list(LogicalSwitch)
    assert caught.value.key == named
    if which == "topics":
        # A list of one topic goes to its table's set without 'd:o/': read whole.
        assert db.list(LogicalSwitch, "tenant-a") == [a]
    else:
        with pytest.raises(errors.CorruptRecordError, match=re.escape(named)):
            db.list(LogicalSwitch, "tenant-a")
        # A topic whose sets are whole is listed.
        assert [s.name for s in db.list(LogicalSwitch, "tenant-b")] == ["b"]
    reported: list[errors.CorruptRecordError] = []
    with db.cache(LogicalSwitch, shared=False, on_error=reported.append) as cache:
        assert not cache.wait_synced(2)
    assert reported and reported[0].key == named


@pytest.mark.timeout(60)
def test_an_empty_table_or_topic_is_still_listed_empty(store: Store) -> None:  # noqa: F811 - the fixture
    """No false alarm: a table no object was ever in, or one whose objects were all deleted (its set
    and its name in the topic's set removed by the same commit), lists as empty."""
    db, _client, _root = store
    assert db.list(LogicalSwitch) == []
    a = db.create(LogicalSwitch(name="a", topic="tenant-a"))
    assert db.list(LogicalSwitch, "tenant-b") == []
    db.delete(a)
    assert db.list(LogicalSwitch) == []
    assert db.list(LogicalSwitch, "tenant-a") == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("deleted", ["table", "topic and table", "topics"])
@pytest.mark.parametrize("op", ["create", "txn-creates", "txn-two-tables", "txn"])
def test_a_commit_that_would_make_a_deleted_directory_set_again_is_refused_with_nothing_written(
    store: Store,  # noqa: F811 - the fixture
    op: str,
    deleted: str,
) -> None:
    """A create under a table whose set another writer deleted made the set again with the new ids
    alone: its parent's set still named it, so no list noticed, and every object it had held was in
    no list (a get still found them). The commit is refused as CorruptRecordError naming the set,
    with every key of the namespace as it was (the revision given back), so the damage stays
    visible to lists; once the set is restored, the same commit applies."""
    db, client, root = store
    old = db.create(LogicalSwitch(name="old", topic="tenant-a"))
    other = db.create(LogicalSwitch(name="other", topic="tenant-b"))
    keys = _deleted_sets(root, deleted)
    key = keys[0]
    # With 'd:o/' gone, a create under a table whose set is whole writes no directory name: the
    # commit that makes a set again is one in a topic new to the namespace.
    topic = "tenant-new" if deleted == "topics" else "tenant-a"
    kept = {k: client.dump(k) for k in keys}
    assert client.delete(*keys) == len(keys)
    before = stored(client, root)

    def commit() -> None:
        if op == "create":
            db.create(LogicalSwitch(name="new", topic=topic))
        else:
            with db.transaction() as txn:
                txn.create(LogicalSwitch(name="new", topic=topic))
                if op == "txn-creates":
                    txn.create(LogicalSwitch(name="new2", topic=topic))
                elif op == "txn-two-tables":
                    txn.create(LogicalSwitch(name="new2", topic="tenant-b"))
                else:
                    txn.update(other.replace(external_ids={"k": "v"}))

    with pytest.raises(errors.CorruptRecordError, match=re.escape(key)):
        commit()
    assert stored(client, root) == before
    with pytest.raises(errors.CorruptRecordError, match=re.escape(key)):
        db.list(LogicalSwitch)
    for k, dump in kept.items():
        client.restore(k, 0, dump)
    commit()
    names = sorted(s.name for s in db.list(LogicalSwitch))
    assert "old" in names and "new" in names
    assert db.get(LogicalSwitch, old.id) == old


@pytest.mark.timeout(120)
def test_a_directory_set_another_writer_deleted_fails_a_paged_list_naming_it(
    redis_server: RedisServer,  # noqa: F811 - the fixture
) -> None:
    """Past ``names_in_script`` names the range script stops walking and the client pages the sets
    with SSCAN, which reads a deleted set as an empty one: the same check (its parent still names
    it) runs on every set a paged walk found empty. 201 topics: 'd:o/' alone passes the script's
    200 names, so every set below it is paged."""
    with (
        nbdb.connect(redis_server.url, namespace=f"t-{uuid.uuid4().hex[:10]}", retries=1, batch=2) as db,
        _raw_client(db) as client,
    ):
        root = root_of(db)
        assert db.backend.names_in_script == 200
        with db.transaction() as txn:
            for i in range(201):
                txn.create(LogicalSwitch(name=f"s{i:03}", topic=f"tenant-{i:03}"))
        assert len(db.backend.range_keys(["o/"])[0]) == 201
        key = f"{root}d:o/tenant-007/LogicalSwitch/"
        assert client.delete(key) == 1
        with pytest.raises(errors.CorruptRecordError, match=re.escape(key)) as caught:
            db.backend.range_keys(["o/"])
        assert caught.value.key == key
        with pytest.raises(errors.CorruptRecordError, match=re.escape(key)):
            db.list(LogicalSwitch)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("batch", [1000, 1], ids=["one-script", "batched"])
@pytest.mark.parametrize("damage", ["another type", "version text", "another topic"])
def test_a_damaged_object_in_a_list_is_reported_naming_its_key_and_what_is_wrong(
    redis_server: RedisServer,  # noqa: F811 - the fixture
    damage: str,
    batch: int,
) -> None:
    """A listed object whose hash another writer damaged was reported as "stored LogicalSwitch <id> has
    version b'WRONGTYPE'" (or b'MISPLACED'): the range's marker, naming neither the Redis key nor
    what was wrong. The error names the key and the damage; skip_corrupt still skips it."""
    with (
        nbdb.connect(redis_server.url, namespace=f"t-{uuid.uuid4().hex[:10]}", retries=1, batch=batch) as db,
        _raw_client(db) as client,
    ):
        root = root_of(db)
        a = db.create(LogicalSwitch(name="a", topic="tenant-a"))
        db.create(LogicalSwitch(name="b", topic="tenant-a"))
        key = f"{root}k:i/LogicalSwitch/{a.id}"
        if damage == "another type":
            client.delete(key)
            client.set(key, b"foreign")
        elif damage == "version text":
            client.hset(key, "on", b"abc")
        else:
            client.hset(key, "ot", b"elsewhere")
        with pytest.raises(errors.CorruptRecordError) as caught:
            db.list(LogicalSwitch)
        text = str(caught.value)
        assert key in text
        assert "b'WRONGTYPE'" not in text and "b'MISPLACED'" not in text
        assert {"another type": "another type", "version text": "'abc'", "another topic": "another topic"}[
            damage
        ] in text
        assert [s.name for s in db.list(LogicalSwitch, skip_corrupt=True)] == ["b"]
