"""Redis backend against another writer's keys in nbdb's namespace: the keys a commit writes without
reading them first (directory sets, ``dmr``, the change-log streams), and a change log that another
writer emptied.

Each test spawns a real ``redis-server`` (the harness's fixture) and damages the namespace with a
plain redis-py client, as another program sharing the database would.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.backends.redis import RedisBackend
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.testing.fixtures import redis_server  # noqa: F401 - pytest fixture
from nbdb.testing.redis import RedisServer

from .conftest import versions_until_quiet

redis = pytest.importorskip("redis")


@pytest.fixture
def db(redis_server: RedisServer) -> Iterator[nbdb.Database]:  # noqa: F811 - the fixture
    import uuid

    with nbdb.connect(redis_server.url, namespace=f"h-{uuid.uuid4().hex[:10]}", history=10) as database:
        yield database


@contextlib.contextmanager
def _raw_client(db: nbdb.Database) -> Iterator[Any]:
    """A plain redis client on ``db``'s server and database (another writer's view), closed after."""
    backend = db.backend
    assert isinstance(backend, RedisBackend)
    _host, port = backend.config.hosts[0]
    raw = redis.Redis(host="127.0.0.1", port=port, db=backend.config.db)
    try:
        yield raw
    finally:
        raw.close()


@pytest.fixture
def client(db: nbdb.Database) -> Iterator[Any]:
    with _raw_client(db) as raw:
        yield raw


def root_of(db: nbdb.Database) -> str:
    backend = db.backend
    assert isinstance(backend, RedisBackend)
    return backend.root


def stored(client: Any, root: str) -> dict[bytes, Any]:
    """Every key of the namespace with its type and whole content (a stream with its last id)."""
    out: dict[bytes, Any] = {}
    for key in sorted(client.scan_iter(match=root.replace("{", "\\{").replace("}", "\\}") + "*", count=1000)):
        kind = client.type(key)
        if kind == b"string":
            value: Any = client.get(key)
        elif kind == b"hash":
            value = client.hgetall(key)
        elif kind == b"set":
            value = sorted(client.smembers(key))
        elif kind == b"stream":
            info = client.xinfo_stream(key)
            value = (client.xrange(key), info["last-generated-id"], info["entries-added"], info["max-deleted-entry-id"])
        else:
            value = None
        out[key] = (kind, value)
    return out


# ------------------------------------------------------------- keys a commit writes unread


def _write(db: nbdb.Database, op: str, old: LogicalSwitch, topic: str) -> list[tuple[str, int]]:
    """The commit ``op``; returns the (name, version) of every object it wrote or deleted."""
    if op == "create":
        return [(db.create(LogicalSwitch(name="made", topic=topic)).name, 1)]
    if op == "update":
        return [("moved", db.update(old.replace(name="moved")).version)]
    if op == "delete":
        db.delete(old)
        return [(old.name, 0)]
    if op == "txn-creates":  # the transaction-of-creates path
        with db.transaction() as txn:
            made = [txn.create(LogicalSwitch(name=f"made{i}", topic=topic)) for i in range(2)]
        return [(m.name, 1) for m in made]
    # The general path: a name added to one directory and one removed from another.
    with db.transaction() as txn:
        txn.create(LogicalSwitch(name="made", topic=topic))
        txn.delete(old)
    return [("made", 1), (old.name, 0)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("foreign", "op"),
    [
        ("dmr", "create"),
        ("dmr", "update"),
        ("dmr", "delete"),
        ("dmr", "txn-creates"),
        ("dmr", "txn"),
        ("topics-set", "create"),
        ("topics-set", "delete"),
        ("topics-set", "txn-creates"),
        ("topics-set", "txn"),
    ],
)
def test_a_key_of_another_type_where_a_commit_writes_unread_fails_it_with_nothing_written(
    db: nbdb.Database, client: Any, foreign: str, op: str
) -> None:
    """The directory sets and ``dmr`` are the keys a commit writes without reading them first. A
    string another writer put at one of them stopped the commit at that write: the sets it had
    already written stayed (a name for an object that was never created, a topic's directory
    emptied of an object that still exists) and the revision counter had moved. Now every such write
    is checked as it is made and undone on failure: the commit raises CorruptRecordError with
    nothing of it in the namespace, and once the key is put back the same commit applies, at the
    next revision."""
    root = root_of(db)
    # A topic of its own for the object deleted (its delete empties the topic: the walk up to the
    # topics' set 'd:o/'), and a new topic for the objects created (their create makes it).
    old = db.create(LogicalSwitch(name="old", topic="tenant-old"))
    db.create(LogicalSwitch(name="stays", topic="tenant-stays"))
    key = root + ("dmr" if foreign == "dmr" else "d:o/")
    kept = client.dump(key)
    client.delete(key)
    client.set(key, b"foreign")
    before = stored(client, root)
    head = db.backend.current_revision()  # (a list walks 'd:o/': it fails while that key is foreign)
    with db.watch(LogicalSwitch, since=head) as watch:
        with pytest.raises(nbdb.CorruptRecordError, match=re.escape(key)):
            _write(db, op, old, "tenant-new")
        assert stored(client, root) == before
        assert db.get(LogicalSwitch, old.id) == old
        assert watch.poll(0.3) == []
        if foreign != "dmr":
            # Commits that write no such key go on: an update, a create in a directory that exists.
            stays = db.create(LogicalSwitch(name="stays2", topic="tenant-stays"))
            db.delete(stays)
            head += 2
        client.delete(key)
        client.restore(key, 0, kept)
        wrote = _write(db, op, old, "tenant-new")
        assert db.backend.current_revision() == head + 1
        seen: list[tuple[str, int]] = []
        for _ in range(20):
            got = watch.poll(0.2)
            seen += [(e.object.name, 0 if e.new is None else e.object.version) for e in got]
            if seen and not got:
                break
    assert [s for s in seen if not s[0].startswith("stays")] == wrote
    expected = {
        "create": ["made", "old", "stays"],
        "update": ["moved", "stays"],
        "delete": ["stays"],
        "txn-creates": ["made0", "made1", "old", "stays"],
        "txn": ["made", "stays"],
    }[op]
    assert sorted(o.name for o in db.list(LogicalSwitch)) == expected
    # The directory sets hold exactly what exists: a list of each topic finds it.
    by_topic = {t: sorted(o.name for o in db.list(LogicalSwitch, t)) for t in ("tenant-new", "tenant-old")}
    assert by_topic == {
        "tenant-new": [n for n in expected if n.startswith("made")],
        "tenant-old": [n for n in expected if n in ("old", "moved")],
    }


_TOPICS = ("t0", "t1", "t2")


@pytest.mark.timeout(300)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_commit_meeting_a_foreign_unread_key_applies_whole_or_not_at_all(
    redis_server: RedisServer,  # noqa: F811 - the fixture
    data: st.DataObject,
) -> None:
    """Property: whatever objects exist, whatever a commit creates and deletes (one create, one delete,
    or a transaction of both, over topics) and whichever key it writes unread is another writer's
    string ('dmr', 'd:', 'd:o/', a topic's or a table's directory set, 'log' or a topic's stream,
    whose types are checked before the first write, or 'logs', checked then by a commit that may make
    a topic's stream), the commit either applies or
    fails as CorruptRecordError with every key of the namespace as it was; once the key is back, it
    applies. Revisions stay dense (a failed commit gives its revision back), the directory sets
    name exactly the objects that exist and 'logs' exactly the topics that have a stream."""
    import uuid

    with nbdb.connect(redis_server.url, namespace=f"p-{uuid.uuid4().hex[:10]}") as db:
        root = root_of(db)
        backend = db.backend
        assert isinstance(backend, RedisBackend)
        with _raw_client(db) as client:
            live = {}
            for topic in data.draw(st.lists(st.sampled_from(_TOPICS), max_size=4), label="existing"):
                made = db.create(LogicalSwitch(name=f"s-{uuid.uuid4().hex[:8]}", topic=topic))
                live[made.id] = made
            commits = len(live)
            creates = data.draw(st.lists(st.sampled_from(_TOPICS), max_size=3), label="creates")
            pool = sorted(live)
            doomed = data.draw(st.sets(st.sampled_from(pool), max_size=len(pool)) if pool else st.just(set()))
            if not creates and not doomed:
                creates = ["t0"]
            foreign = data.draw(
                st.sampled_from(
                    ["dmr", "d:", "d:o/", "log", "logs"]
                    + [f"d:o/{t}/" for t in _TOPICS]
                    + [f"d:o/{t}/LogicalSwitch/" for t in _TOPICS]
                    + [f"log:{t}" for t in _TOPICS]
                ),
                label="foreign",
            )
            key = root + foreign
            kept = client.dump(key)
            client.delete(key)
            client.set(key, b"foreign")
            before = stored(client, root)

            def commit() -> list[LogicalSwitch]:
                if len(creates) == 1 and not doomed:
                    return [db.create(LogicalSwitch(name=f"s-{uuid.uuid4().hex[:8]}", topic=creates[0]))]
                if len(doomed) == 1 and not creates:
                    db.delete(live[next(iter(doomed))])
                    return []
                with db.transaction() as txn:
                    made = [txn.create(LogicalSwitch(name=f"s-{uuid.uuid4().hex[:8]}", topic=t)) for t in creates]
                    for gone in doomed:
                        txn.delete(live[gone])
                return made

            try:
                made = commit()
                failed = False
            except nbdb.CorruptRecordError:
                failed = True
                assert stored(client, root) == before
            client.delete(key)
            if kept is not None:
                client.restore(key, 0, kept)
            if failed:
                made = commit()
            commits += 1
            for gone in doomed:
                del live[gone]
            live.update({o.id: o for o in made})
            assert backend.current_revision() == commits
            pattern = root.replace("{", "\\{").replace("}", "\\}")
            expected: dict[str, set[str]] = {}
            for o in live.values():
                expected.setdefault("o/", set()).add(f"{o.topic}/")
                expected.setdefault(f"o/{o.topic}/", set()).add("LogicalSwitch/")
                expected.setdefault(f"o/{o.topic}/LogicalSwitch/", set()).add(str(o.id))
            sets = {
                k.decode()[len(root) + 2 :]: {m.decode() for m in client.smembers(k)}
                for k in client.scan_iter(match=pattern + "d:o/*")
            }
            assert sets == expected
            assert ("o/" in {m.decode() for m in client.smembers(root + "d:")}) == bool(live)
            # Every topic's stream is in 'logs' (the commit that made it added it).
            streams = {k.decode()[len(root) + 4 :] for k in client.scan_iter(match=pattern + "log:*")}
            assert {m.decode() for m in client.smembers(root + "logs")} == streams
            for topic in _TOPICS:
                assert {o.id for o in db.list(LogicalSwitch, topic)} == {i for i, o in live.items() if o.topic == topic}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("stream", ["log", "log:tenant"])
@pytest.mark.parametrize("op", ["create", "update", "delete", "txn"])
def test_a_change_log_stream_of_another_type_fails_a_commit_with_every_key_as_it_was(
    db: nbdb.Database, client: Any, stream: str, op: str
) -> None:
    """The streams are written after the directory sets and dmr, and a failed XADD cannot be undone
    exactly: a string another writer put at 'log' or at a topic's stream failed the commit with its
    objects and directory sets unwritten, but with the revision counter, dmr and 'log0' moved (and
    'log''s last id and entry count, when the topic's stream refused after 'log' took the entry).
    Now the streams' types are known before the commit's first write: it fails as
    CorruptRecordError naming the key with every key of the namespace as it was, and applies, at
    the next revision, once the key is back."""
    root = root_of(db)
    old = db.create(LogicalSwitch(name="old", topic="tenant"))
    db.create(LogicalSwitch(name="other", topic="tenant"))
    head = db.backend.current_revision()  # (it reads 'log': it fails while that key is foreign)
    key = root + stream
    kept = client.dump(key)
    client.delete(key)
    client.set(key, b"foreign")
    before = stored(client, root)
    with pytest.raises(nbdb.CorruptRecordError, match=re.escape(key)):
        _write(db, op, old, "tenant")
    assert stored(client, root) == before
    client.delete(key)
    client.restore(key, 0, kept)
    _write(db, op, old, "tenant")
    assert db.backend.current_revision() == head + 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("op", ["create", "txn-creates", "txn"])
def test_a_registry_of_streams_of_another_type_fails_a_commit_making_a_topic_with_every_key_as_it_was(
    db: nbdb.Database, client: Any, op: str
) -> None:
    """'logs' (the topics that have a stream) is written only by the commit that makes a topic's
    stream, after 'log' took its entry. A string another writer put there failed that SADD: the
    entries were undone and added again a revision later (a revision skipped, 'log0' made), and the
    topic never joined 'logs'. Now a commit that may make a stream finds 'logs''s type before its
    first write: it fails as CorruptRecordError naming 'logs' with every key as it was, and, once
    the key is back, applies at the next revision with its topic in 'logs'."""
    root = root_of(db)
    old = db.create(LogicalSwitch(name="old", topic="tenant-old"))
    head = db.backend.current_revision()
    key = root + "logs"
    kept = client.dump(key)
    client.delete(key)
    client.set(key, b"foreign")
    before = stored(client, root)
    with pytest.raises(nbdb.CorruptRecordError, match=re.escape(key)):
        _write(db, op, old, "tenant-new")
    assert stored(client, root) == before
    # A commit that makes no stream goes on.
    db.update(old.replace(name="renamed"))
    client.delete(key)
    client.restore(key, 0, kept)
    old = db.get(LogicalSwitch, old.id)
    _write(db, op, old, "tenant-new")
    assert db.backend.current_revision() == head + 2
    assert client.smembers(key) == {b"tenant-old", b"tenant-new"}
    assert client.exists(root + "log0") == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("op", ["update", "delete", "create"])
def test_a_stream_made_again_that_the_registry_refuses_fails_the_commit_whole(
    db: nbdb.Database, client: Any, op: str
) -> None:
    """A double fault: another writer deleted a topic's stream (an update or a delete makes it
    again, and so does a create in its table, whose directory set it finds) and put a string at
    'logs'. The SADD failed, the commit was added again a revision
    later and applied without its topic in 'logs'; then it failed as CorruptRecordError naming 'logs'
    with the counter, dmr and 'log''s last id and counts moved (its entry taken, then undone). Now
    the stream is counted before the first write, and the commit fails with every key as it was."""
    root = root_of(db)
    old = db.create(LogicalSwitch(name="old", topic="tenant"))
    client.delete(root + "log:tenant")
    client.delete(root + "logs")
    client.set(root + "logs", b"foreign")
    before = stored(client, root)
    with pytest.raises(nbdb.CorruptRecordError, match=re.escape(root + "logs")):
        _write(db, op, old, "tenant")
    assert stored(client, root) == before
    assert db.get(LogicalSwitch, old.id) == old
    assert db.list(LogicalSwitch) == [old]
    assert client.exists(root + "log:tenant") == 0
    assert [e[1][b"t"] for e in client.xrange(root + "log")] == [client.xrange(root + "log")[0][1][b"t"]]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("past", [5, 2**53 + 1])
def test_a_first_commit_past_another_writers_entry_with_log0_of_another_type_is_not_torn(
    db: nbdb.Database, client: Any, past: int
) -> None:
    """The namespace's first commit, its 'log' entry refused by another writer's entry (retried past
    it, or not past 2^53), writes 'log0' after its entries. A string there failed that write with a
    script error: the retried entries stayed with the data unwritten (a change no one made), or the
    directory sets named an object that was not there. Then 'log0''s type was asked first and the
    commit refused whole (after its first writes). Now 'log0' is left as it is: the commit past the
    entry applies, and one that cannot go past it (2^53) fails with nothing of it written."""
    root = root_of(db)
    client.xadd(root + "log", {"x": "foreign"}, id=f"{past}-0")
    client.set(root + "log0", b"foreign")
    if past >= 2**53:
        with pytest.raises(nbdb.CorruptRecordError):
            db.create(LogicalSwitch(name="made", topic="tenant"))
        assert [e[1] for e in client.xrange(root + "log")] == [{b"x": b"foreign"}]
        assert client.exists(root + "log:tenant") == 0
        assert [k for k in client.scan_iter(match=root.replace("{", "\\{").replace("}", "\\}") + "d:*")] == []
    else:
        made = db.create(LogicalSwitch(name="made", topic="tenant"))
        assert db.list(LogicalSwitch) == [made]
        assert [e[1].get(b"x") for e in client.xrange(root + "log")] == [b"foreign", None]
        # 'log0' vouches for nothing: a watch from 0 raises, it does not skip.
        with pytest.raises(nbdb.HistoryGoneError), db.watch(LogicalSwitch, since=0) as watch:
            watch.poll(0.05)
    assert client.get(root + "log0") == b"foreign"


_S1, _S2, _P1, _P2, _S3, _P9 = (uuid.UUID(int=i) for i in range(1, 7))


def _every_key_setup(db: nbdb.Database) -> tuple[LogicalSwitch, LogicalSwitchPort, LogicalSwitch]:
    s1 = db.create(LogicalSwitch(id=_S1, name="s1", topic="A"))
    p1 = db.create(LogicalSwitchPort(id=_P1, switch=_S1, name="p1", topic="A"))
    return s1, p1, db.create(LogicalSwitch(id=_S2, name="s2", topic="B"))


def _every_key_commit(db: nbdb.Database, op: str, p1: LogicalSwitchPort, s2: LogicalSwitch) -> None:
    if op == "create-port":  # a unique claim, a reference, an existing topic
        db.create(LogicalSwitchPort(id=_P2, switch=_S1, name="p2", topic="A"))
    elif op == "create-topic":  # a new topic: its directory sets and stream made
        db.create(LogicalSwitch(id=_S3, name="s3", topic="C"))
    elif op == "update":  # a unique value changed
        db.update(p1.replace(name="p1b"))
    elif op == "delete-port":  # a claim and a reverse reference released unread
        db.delete(p1)
    elif op == "delete-switch":  # a topic emptied
        db.delete(s2)
    else:  # the general path: every kind of change, three topics
        with db.transaction() as txn:
            txn.create(LogicalSwitchPort(id=_P2, switch=_S1, name="p2", topic="A"))
            txn.create(LogicalSwitch(id=_S3, name="s3", topic="C"))
            txn.delete(s2)
            txn.update(p1.replace(name="p1b"))


def _every_key_names(redis_server: RedisServer, op: str) -> list[bytes]:  # noqa: F811 - the fixture
    """Every key of the namespace before or after ``op``'s commit but the tokens, root cut off."""
    with nbdb.connect(redis_server.url, namespace=f"e-{uuid.uuid4().hex[:10]}") as db, _raw_client(db) as client:
        root = root_of(db).encode()
        _s1, p1, s2 = _every_key_setup(db)
        seen = set(stored(client, root.decode()))
        _every_key_commit(db, op, p1, s2)
        seen |= set(stored(client, root.decode()))
    keys = sorted(k[len(root) :] for k in seen if not k[len(root) :].startswith(b"ct:"))
    assert b"log" in keys and b"rev" in keys and b"dmr" in keys
    return keys


def _foreign(client: Any, key: bytes) -> None:
    """Another writer's key of another type at ``key`` (a string, or a hash where a string was)."""
    kind = client.type(key)
    client.delete(key)
    if kind == b"string":
        client.hset(key, "f", "foreign")
    else:
        client.set(key, b"foreign")


def _put_back(client: Any, key: bytes, kept: bytes | None) -> None:
    client.delete(key)
    if kept is not None:
        client.restore(key, 0, kept)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("damage", ["replaced", "deleted, 'logs' replaced"])
@pytest.mark.parametrize("op", ["create-port", "create-topic", "update", "delete-port", "delete-switch", "txn"])
def test_every_key_a_commit_touches_of_another_type_fails_it_with_every_key_as_it_was(
    redis_server: RedisServer,  # noqa: F811 - the fixture
    op: str,
    damage: str,
) -> None:
    """Each key the commit reads or writes (every key of the namespace before or after it but the
    tokens), in turn another writer's key of another type (a string, or a hash where a string was),
    or deleted with a string at 'logs': the commit applies, or fails with a typed error and every
    key of the namespace as it was (the counter, dmr, 'log0', 'logs', every stream's entries, last id
    and count), and once the key is back it applies at the next revision, which a watch from before
    delivers, once. A stream ('log', a topic's) of another type failed it with the counter, dmr and
    'log0' moved; a topic's stream deleted (so made again, which 'logs' refused) with the counter,
    dmr and 'log''s last id and count moved (its commit's entry undone)."""
    for name in _every_key_names(redis_server, op):
        # 'logs' deleted and replaced: the "replaced" case. ('rev' deleted: the commit applies past
        # 'log''s last entry, at the next revision, and writes no 'log0'.)
        if damage != "replaced" and name == b"logs":
            continue
        with nbdb.connect(redis_server.url, namespace=f"e-{uuid.uuid4().hex[:10]}") as db, _raw_client(db) as client:
            _s1, p1, s2 = _every_key_setup(db)
            head = db.backend.current_revision()
            with contextlib.ExitStack() as stack:
                watches = [stack.enter_context(db.watch(m, since=head)) for m in (LogicalSwitch, LogicalSwitchPort)]
                root = root_of(db).encode()
                key, logs = root + name, root + b"logs"
                kept, kept_logs = client.dump(key), client.dump(logs)
                if damage == "replaced":
                    _foreign(client, key)
                else:
                    client.delete(key)
                    _foreign(client, logs)
                before = stored(client, root_of(db))
                try:
                    _every_key_commit(db, op, p1, s2)
                except nbdb.NbdbError:
                    assert stored(client, root_of(db)) == before, name
                    _put_back(client, key, kept)
                    _put_back(client, logs, kept_logs)
                    _every_key_commit(db, op, p1, s2)
                assert db.backend.current_revision() == head + 1, name
                _assert_fully_visible(client, root_of(db), head, watches, op, name)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("stream", ["log", "log:A"])
@pytest.mark.parametrize("op", ["create-port", "update", "txn"])
def test_a_commit_past_another_writers_entry_with_log0_of_another_type_applies_once(
    db: nbdb.Database, client: Any, op: str, stream: str
) -> None:
    """Another writer's entry at the commit's revision in a stream it appends to sends it past that
    entry, which writes 'log0' (the entries it undid). A string there refused the commit, known only
    after its first writes (the revision counter, dmr's revisions of its directories and, when a
    topic's stream refused the entry after 'log' took it, 'log''s last id and counts moved: two
    writers' damage at once). Now 'log0' is left as it is and the commit applies past the entry, at
    once, and a watch from before delivers it once."""
    root = root_of(db)
    _s1, p1, s2 = _every_key_setup(db)
    head = db.backend.current_revision()
    with contextlib.ExitStack() as stack:
        watches = [stack.enter_context(db.watch(m, since=head)) for m in (LogicalSwitch, LogicalSwitchPort)]
        # With a token field: in 'log', an entry without one is lost history to a watch.
        client.xadd(root + stream, {"t": "foreign"}, id=f"{head + 1}-5")
        client.set(root + "log0", b"foreign")
        _every_key_commit(db, op, p1, s2)
        assert client.get(root + "log0") == b"foreign"
        rev = db.backend.current_revision()
        assert rev > head + 1
        seen: list[int] = []
        want = sum(_EVERY_KEY_CHANGES[op].values())
        deadline = time.monotonic() + 5
        while len(seen) < want and time.monotonic() < deadline:
            for watch in watches:
                seen += [e.revision for e in watch.poll(0.05)]
        assert seen == [rev] * want


_EVERY_KEY_CHANGES = {  # the objects each commit changes, by topic
    "create-port": {"A": 1},
    "create-topic": {"C": 1},
    "update": {"A": 1},
    "delete-port": {"A": 1},
    "delete-switch": {"B": 1},
    "txn": {"A": 2, "B": 1, "C": 1},
}


def _assert_fully_visible(client: Any, root: str, head: int, watches: list[Any], op: str, name: bytes) -> None:
    """A commit that applied is the next revision, in 'log' and in each of its topics' streams at that
    revision, every such topic in 'logs' (when 'logs' is a set), and a watch from before sees it."""
    changes = _EVERY_KEY_CHANGES[op]
    rev = head + 1
    assert [e[0] for e in client.xrange(root + "log", f"{head}-1", "+")] == [f"{rev}-0".encode()], name
    for topic in changes:
        got = client.xrange(root + f"log:{topic}", f"{head}-1", "+")
        assert [e[0] for e in got] == [f"{rev}-0".encode()], (name, topic)
    if client.type(root + "logs") == b"set":
        assert {m.decode() for m in client.smembers(root + "logs")} >= set(changes), name
    else:  # 'logs' another writer's: the commit made no topic's stream
        assert "C" not in changes, name
    assert client.hgetall(root + "log0") == {}, name
    seen: list[int] = []
    deadline = time.monotonic() + 5
    while len(seen) < sum(changes.values()) and time.monotonic() < deadline:
        for watch in watches:
            seen += [e.revision for e in watch.poll(0.05)]
    assert seen == [rev] * sum(changes.values()), name


# ------------------------------------------------------------- a change log another writer emptied


def _empty_log(client: Any, root: str, how: str) -> None:
    if how == "trimmed":
        client.xtrim(root + "log", maxlen=0, approximate=False)
    else:
        client.delete(root + "log")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["trimmed", "deleted"])
@pytest.mark.parametrize("since", ["now", "head"])
def test_a_new_watch_from_the_head_of_an_emptied_log_misses_nothing_and_does_not_raise(
    db: nbdb.Database, client: Any, how: str, since: str
) -> None:
    """With 'log' empty the head is the revision counter's, a revision 'log' does not hold: a watch
    from it (from now, or from the head a list returned) raised HistoryGoneError at its first poll,
    and a cache re-listed at every poll, though nothing after that revision was lost. Now it is
    served: every later commit is delivered, once."""
    root = root_of(db)
    a = db.update(db.create(LogicalSwitch(name="a")))
    _empty_log(client, root, how)
    head = db.list(LogicalSwitch).revision
    assert head == 2
    with db.watch(LogicalSwitch, since=None if since == "now" else head) as watch:
        assert watch.poll(0.3) == []
        assert watch.poll(0.3) == []
        b = db.create(LogicalSwitch(name="b"))
        db.update(a)
        assert versions_until_quiet(watch) == [("b", 1), ("a", 3)]
        db.update(b)
        assert versions_until_quiet(watch) == [("b", 2)]
    with db.cache(LogicalSwitch) as cache:
        assert cache.wait_synced(10)
        assert cache.wait_for(db.create(LogicalSwitch(name="c")), 10)
        assert sorted(o.name for o in cache.list(LogicalSwitch)) == ["a", "b", "c"]
        assert cache.relists == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["trimmed", "deleted"])
def test_a_watch_that_reached_the_head_of_an_emptied_log_goes_on_past_it(
    db: nbdb.Database, client: Any, how: str
) -> None:
    """A watch from 0 moves to the head once it has delivered 'log': with 'log' empty (here the
    namespace's first commit failed at its log entries, so 'log' never held an entry for good, and
    the counter is past 0), that
    head is the counter's, and its next poll raised HistoryGoneError. Now it goes on."""
    root = root_of(db)
    # Another writer's entry in the topic's stream at an id past what the script's numbers hold
    # exactly (2^53): the commit's XADD there fails, is not tried again past it, and is undone
    # (foreign data, nothing of the commit applied: CorruptRecordError, not an unavailability).
    client.xadd(root + "log:tenant-a", {"x": "y"}, id="9007199254740993-0")
    with pytest.raises(nbdb.CorruptRecordError):
        db.create(LogicalSwitch(name="lost", topic="tenant-a"))
    client.delete(root + "log:tenant-a")
    if how == "deleted":
        client.delete(root + "log")
    assert client.xlen(root + "log") == 0
    assert db.list(LogicalSwitch).revision > 0
    with db.watch(LogicalSwitch, since=0) as watch:
        assert watch.poll(0.3) == []
        assert watch.poll(0.3) == []
        db.create(LogicalSwitch(name="a", topic="tenant-a"))
        assert versions_until_quiet(watch) == [("a", 1)]


def _watch_from_head(db: nbdb.Database) -> Any:
    watch = db.watch(LogicalSwitch)
    assert watch.poll(0.2) == []
    return watch


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loss", ["emptied-again", "deleted-again", "entry-deleted", "trimmed", "older-revision"])
def test_a_watch_whose_history_after_its_revision_went_still_raises(db: nbdb.Database, client: Any, loss: str) -> None:
    """The converse: a watch from a revision 'log' does not hold is served only while 'log' holds
    every commit after it. A watch from the head of an emptied 'log' whose later commits went (the
    log emptied or deleted again, one of them deleted, trimmed by ``history``), or a resume from a
    revision older than the emptied log's head, raises HistoryGoneError, never skips them."""
    root = root_of(db)
    a = db.update(db.create(LogicalSwitch(name="a")))
    older = db.list(LogicalSwitch).revision
    a = db.update(a)
    _empty_log(client, root, "trimmed")
    if loss == "older-revision":
        watch = db.watch(LogicalSwitch, since=older)
    else:
        watch = _watch_from_head(db)
    with watch:
        for _ in range(30 if loss == "trimmed" else 3):
            a = db.update(a)
        if loss == "emptied-again":
            _empty_log(client, root, "trimmed")
        elif loss == "deleted-again":
            _empty_log(client, root, "deleted")
        elif loss == "entry-deleted":
            client.xdel(root + "log", client.xrange(root + "log", count=2)[1][0])
        db.update(a)
        with pytest.raises(nbdb.HistoryGoneError):
            versions_until_quiet(watch)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("before", ["nothing", "log deleted"])
@pytest.mark.parametrize("op", ["update", "create", "txn"])
def test_a_deleted_revision_counter_reuses_no_revision_and_marks_no_first_commit(
    db: nbdb.Database, client: Any, before: str, op: str
) -> None:
    """Another writer deletes 'rev': INCR gives 1 again, whose XADD fails ('log''s last id is past
    it), so the commit lands past 'log''s last entry, once, and a watch from before sees it. It also
    marked itself the namespace's first commit in 'log0' (b): a watch from 0 trusts a 'log' that
    starts at or before b and lost nothing but undone entries, so after a 'log' another writer had
    deleted (made again by the next commit, revisions 1-4 gone) that watch delivered revisions 5
    and 6 as the whole history, skipping the creates before. Now b is not written when 'log' holds a
    commit of this namespace: a watch from 0 gets every change, or HistoryGoneError."""
    root = root_of(db)
    a = db.create(LogicalSwitch(name="a"))
    for i in range(3):
        a = db.update(a.replace(name=f"a{i}"))
    if before == "log deleted":
        client.delete(root + "log")
        a = db.update(a.replace(name="a3"))
    head = db.backend.current_revision()
    with db.watch(LogicalSwitch, since=head) as watch:
        client.delete(root + "rev")
        if op == "update":
            a = db.update(a.replace(name="a4"))
        elif op == "create":
            db.create(LogicalSwitch(name="b"))
        else:
            with db.transaction() as txn:
                txn.update(a.replace(name="a4"))
                txn.create(LogicalSwitch(name="b"))
        assert db.backend.current_revision() == head + 1
        seen: list[int] = []
        for _ in range(25):  # bounded: until the commit's changes arrive, then one quiet poll
            got = [e.revision for e in watch.poll(0.2)]
            seen += got
            if len(seen) >= (2 if op == "txn" else 1) and not got:
                break
        assert seen == [head + 1] * (2 if op == "txn" else 1)
    assert client.hgetall(root + "log0") == {}
    with db.watch(LogicalSwitch, since=0) as watch0:
        if before == "log deleted":
            with pytest.raises(nbdb.HistoryGoneError):
                versions_until_quiet(watch0)
        else:
            names = [name for name, _version in versions_until_quiet(watch0)]
            assert names[:4] == ["a", "a0", "a1", "a2"]
            # The commit's own changes (a transaction's two at one revision: creates first, by the
            # reference order of events within a revision).
            assert names[4:] == {"update": ["a4"], "create": ["b"], "txn": ["b", "a4"]}[op]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("topic", ["busy", "loading", "readonly", "tryagain"])
def test_a_refusal_naming_a_key_with_a_retry_word_is_still_corrupt_record(
    db: nbdb.Database, client: Any, topic: str
) -> None:
    """The refusal names its key, and the key holds the topic: a topic (or table, or namespace) with
    a word of a retryable reply in it ('busy', 'loading', 'readonly', ...) made the refusal a
    BackendUnavailableError, retried as unsent until the attempts ran out. It is CorruptRecordError,
    at once, and nothing was written."""
    root = root_of(db)
    db.create(LogicalSwitch(name="there", topic=topic))
    key = root + f"d:o/{topic}/LogicalSwitch/"
    client.delete(key)
    client.set(key, b"foreign")
    before = stored(client, root)
    with pytest.raises(nbdb.CorruptRecordError, match=re.escape(key)):
        db.create(LogicalSwitch(name="made", topic=topic))
    assert stored(client, root) == before


@pytest.mark.timeout(60)
def test_a_refusal_with_a_retry_word_in_a_group_fails_only_its_own_commit(db: nbdb.Database, client: Any) -> None:
    """In a group (one pipeline of commit scripts) a reply classified as retryable sends the whole
    pipeline again, and once the attempts run out that error was every commit's outcome: a refusal
    naming a key with 'busy' in it made the group's other commits, applied, fail as unavailable. Now
    the refused commit alone fails (CorruptRecordError) and the others are reported applied."""
    from nbdb.families.kvtypes import KeyCommit, VersionIs

    backend = db.backend
    assert isinstance(backend, RedisBackend)
    root = root_of(db)
    client.set(root + "d:o/busy/T/", b"foreign")
    refused = KeyCommit([VersionIs("o/busy/T/1", 0)], {"o/busy/T/1": b"x"}, [])
    fine = KeyCommit([VersionIs("o/calm/T/2", 0)], {"o/calm/T/2": b"y"}, [])
    outcomes = backend.commit_group([refused, fine])
    assert isinstance(outcomes[0], nbdb.CorruptRecordError)
    assert outcomes[1] == backend.current_revision()
    assert backend.get_key("o/calm/T/2") is not None


# ------------------------------------------------------------- ranges through a foreign directory set


def _replace(client: Any, key: str, kind: str) -> bytes | None:
    """Put another writer's ``kind`` at ``key``; returns the key's DUMP (None: it was absent), to put it back."""
    kept = client.dump(key)
    client.delete(key)
    if kind == "string":
        client.set(key, b"foreign")
    elif kind == "hash":
        client.hset(key, "f", "v")
    elif kind == "set":
        client.sadd(key, b"foreign")
    else:
        client.rpush(key, b"foreign")
    return cast("bytes | None", kept)


def _restore(client: Any, key: str, kept: bytes | None) -> None:
    client.delete(key)
    if kept is not None:
        client.restore(key, 0, kept)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["string", "hash", "list"])
@pytest.mark.parametrize("where", ["d:o/", "d:o/t1/", "d:o/t1/LogicalSwitch/", "referrers"])
def test_a_range_through_a_directory_of_another_type_is_corrupt_record_naming_the_key(
    db: nbdb.Database, client: Any, where: str, kind: str
) -> None:
    """A directory set (the topics' 'd:o/', a topic's tables, a table's ids) or a target's
    reverse-reference hash that another writer replaced failed every range through it with the
    server's WRONGTYPE, which names no key (a CorruptRecordError with key None, as if one record were
    damaged, and the same for 'skip_corrupt'). Now the range fails whole with CorruptRecordError whose
    key and message name that key: never a list that leaves the directory's objects out. Lists and
    gets that do not go through it are served, and once the key is back every range is exact."""
    from nbdb.models import LogicalSwitchPort

    root = root_of(db)
    backend = db.backend
    assert isinstance(backend, RedisBackend)
    a = db.create(LogicalSwitch(name="a", topic="t1"))
    db.create(LogicalSwitch(name="b", topic="t2"))
    port = db.create(LogicalSwitchPort(name="p", switch=a.id, topic="t1"))
    key = root + (f"k:r/LogicalSwitch/{a.id}/" if where == "referrers" else where)
    if where == "referrers" and kind == "hash":
        kind = "set"  # the reverse references' own type is a hash
    kept = _replace(client, key, kind)
    if where == "referrers":
        # The delete is refused, then its referrers are read; a cascade reads them with HKEYS (no script).
        failing: list[Any] = [lambda: db.delete(a), lambda: db.delete(a, cascade=True)]
    elif where == "d:o/t1/":
        failing = [lambda: backend.range_keys(["o/t1/"]), lambda: backend.range_keys(["o/"])]
    else:
        failing = [
            lambda: db.list(LogicalSwitch),
            lambda: db.list(LogicalSwitch, skip_corrupt=True),
            lambda: list(db.iter(LogicalSwitch)),
            lambda: db.list(LogicalSwitch, "t1"),
        ]
        if where == "d:o/":
            failing = [*failing[:3], lambda: db.list(LogicalSwitchPort)]
    for call in failing:
        with pytest.raises(nbdb.CorruptRecordError, match=re.escape(key)) as caught:
            call()
        assert caught.value.key == key
    assert db.get(LogicalSwitch, a.id) == a
    assert [o.name for o in db.list(LogicalSwitch, "t2")] == ["b"]
    if where != "d:o/":
        assert [o.name for o in db.list(LogicalSwitchPort)] == ["p"]
    assert client.type(key).decode() == kind  # left as it is
    _restore(client, key, kept)
    assert sorted(o.name for o in db.list(LogicalSwitch)) == ["a", "b"]
    assert {kv.key.rsplit("/", 1)[1] for kv in backend.range_keys(["o/t1/"])[0]} == {str(a.id), str(port.id)}
    with pytest.raises(nbdb.ReferenceError):
        db.delete(a)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("where", ["d:o/", "d:o/t1/LogicalSwitch/"])
def test_a_cache_whose_list_meets_a_directory_of_another_type_keeps_serving_and_reports_it(
    db: nbdb.Database, client: Any, where: str
) -> None:
    """A cache's load or re-list through a directory set that another writer replaced failed at every
    try, logged only: its on_error heard nothing, a new cache stayed unsynced with no word why. Now each
    failed try reaches on_error as CorruptRecordError naming the key; a running cache keeps serving what
    it holds, a watch goes on, and once the key is back both caches converge."""
    root = root_of(db)
    a = db.create(LogicalSwitch(name="a", topic="t1"))
    b = db.create(LogicalSwitch(name="b", topic="t2"))
    old_errors: list[nbdb.CorruptRecordError] = []
    new_errors: list[nbdb.CorruptRecordError] = []
    with (
        db.cache(LogicalSwitch, on_error=old_errors.append, shared=False) as cache,
        db.watch(LogicalSwitch, {"t2"}) as watch,
    ):
        assert cache.wait_synced(10)
        key = root + where
        kept = _replace(client, key, "string")
        # Another writer's entry in 'log' that nbdb cannot deliver: the cache must re-list.
        head = db.backend.current_revision()
        client.xadd(root + "log", {"x": "y"}, id=f"{head + 1}-0")
        with db.cache(LogicalSwitch, on_error=new_errors.append, shared=False) as fresh:
            assert not fresh.wait_synced(1.0)
            for _ in range(100):
                if old_errors and new_errors:
                    break
                time.sleep(0.1)
            for got in (old_errors, new_errors):
                assert got and all(isinstance(e, nbdb.CorruptRecordError) and e.key == key for e in got)
            assert sorted(o.name for o in cache.list(LogicalSwitch)) == ["a", "b"]
            assert cache.get(LogicalSwitch, a.id) == a
            b = db.update(b)  # an update writes no directory set: applied, and watched
            assert [(e.object.name, e.object.version) for e in watch.poll(2.0)][-1:] == [("b", 2)]
            _restore(client, key, kept)
            c = db.create(LogicalSwitch(name="c", topic="t1"))
            assert fresh.wait_synced(15)
            for replica in (cache, fresh):
                assert replica.wait_for(c, 15)
                assert sorted((o.name, o.version) for o in replica.list(LogicalSwitch)) == [
                    ("a", 1),
                    ("b", 2),
                    ("c", 1),
                ]
            assert cache.relists >= 1


@pytest.mark.timeout(60)
def test_a_batched_or_paged_range_through_a_key_of_another_type_names_it(redis_server: RedisServer) -> None:  # noqa: F811
    """Past ``batch`` keys a list checks 'dmr' after its batched reads, and past ``100 * batch`` names
    it pages the directory sets with SSCAN: another writer's key of another type at either failed the
    list with WRONGTYPE and no key. Now CorruptRecordError names it (left as it is)."""
    import uuid

    with nbdb.connect(redis_server.url, namespace=f"b-{uuid.uuid4().hex[:10]}", batch=1) as db:
        backend = db.backend
        assert isinstance(backend, RedisBackend)
        root = backend.root
        with _raw_client(db) as client:
            for name in ("a", "b"):
                db.create(LogicalSwitch(name=name, topic="t1"))
            for where, call in [
                ("dmr", lambda: db.list(LogicalSwitch, "t1")),
                ("d:o/t1/LogicalSwitch/", lambda: backend._names_paged(["o/t1/LogicalSwitch/"])),
            ]:
                key = root + where
                kept = _replace(client, key, "string")
                with pytest.raises(nbdb.CorruptRecordError, match=re.escape(key)) as caught:
                    call()
                assert caught.value.key == key
                assert client.type(key) == b"string"
                _restore(client, key, kept)
            assert sorted(o.name for o in db.list(LogicalSwitch, "t1")) == ["a", "b"]


@pytest.mark.timeout(300)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_list_is_exact_or_names_the_foreign_directory_on_its_path(
    redis_server: RedisServer,  # noqa: F811 - the fixture
    data: st.DataObject,
) -> None:
    """Property: whatever objects exist over topics, and whichever directory set ('d:o/', a topic's,
    a table's, of a topic with objects or not) holds another writer's string, hash or list, a list
    of the table and each topic's list either is exact or, exactly when its walk goes through that
    key, raises CorruptRecordError naming it; once the key is back every list is exact."""
    import uuid

    with nbdb.connect(redis_server.url, namespace=f"q-{uuid.uuid4().hex[:10]}") as db:
        root = root_of(db)
        with _raw_client(db) as client:
            names: dict[str, set[str]] = {t: set() for t in _TOPICS}
            for topic in data.draw(st.lists(st.sampled_from(_TOPICS), min_size=1, max_size=5), label="objects"):
                names[topic].add(db.create(LogicalSwitch(name=f"s-{uuid.uuid4().hex[:8]}", topic=topic)).name)
            foreign = data.draw(
                st.sampled_from(
                    ["d:o/"] + [f"d:o/{t}/" for t in _TOPICS] + [f"d:o/{t}/LogicalSwitch/" for t in _TOPICS]
                ),
                label="foreign",
            )
            kind = data.draw(st.sampled_from(["string", "hash", "list"]), label="kind")
            key = root + foreign
            kept = _replace(client, key, kind)

            def through(topic: str | None) -> bool:
                if topic is not None:
                    return foreign == f"d:o/{topic}/LogicalSwitch/"
                return foreign == "d:o/" or any(foreign == f"d:o/{t}/LogicalSwitch/" and names[t] for t in _TOPICS)

            for topic in [None, *_TOPICS]:
                want = set().union(*names.values()) if topic is None else names[topic]
                if through(topic):
                    with pytest.raises(nbdb.CorruptRecordError, match=re.escape(key)) as caught:
                        db.list(LogicalSwitch, topic)
                    assert caught.value.key == key
                else:
                    assert {o.name for o in db.list(LogicalSwitch, topic)} == want
            _restore(client, key, kept)
            for topic in [None, *_TOPICS]:
                want = set().union(*names.values()) if topic is None else names[topic]
                assert {o.name for o in db.list(LogicalSwitch, topic)} == want


@pytest.mark.timeout(60)
@pytest.mark.parametrize("batch", [1000, 2, 1], ids=["one-script", "batched", "paged"])
@pytest.mark.parametrize("where", ["d:o/ta/LogicalSwitch/", "d:o/ta/", "d:o/"], ids=["table", "topic", "objects"])
def test_a_directory_member_that_is_not_utf8_is_no_object(redis_server: RedisServer, batch: int, where: str) -> None:  # noqa: F811
    """nbdb spells every name in ASCII; another writer's member that is not UTF-8 in a directory set
    raised a bare UnicodeDecodeError out of every list of the table (whole or by topic), and a cache
    of it re-listed forever. Like a member whose key is gone, it names no object and is left out."""
    import uuid

    with nbdb.connect(redis_server.url, namespace=f"u-{uuid.uuid4().hex[:10]}", batch=batch) as db:
        made = {db.create(LogicalSwitch(name=f"s{i}", topic="ta")).id for i in range(4)}
        raw = redis.Redis.from_url(redis_server.url)
        try:
            raw.sadd(root_of(db) + where, b"\xff\xfe" + (b"/" if where == "d:o/" else b""))
            assert {s.id for s in db.list(LogicalSwitch)} == made
            assert {s.id for s in db.list(LogicalSwitch, topic="ta")} == made
            with db.cache(LogicalSwitch) as cache:
                assert cache.wait_synced(10)
                assert {s.id for s in cache.list(LogicalSwitch)} == made
        finally:
            raw.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("op", "kind"),
    [
        ("first", "list"),
        ("create", "hash"),
        ("update", "list"),
        ("delete", "hash"),
        ("txn-creates", "list"),
        ("txn", "hash"),
    ],
)
def test_a_head_key_of_another_type_fails_a_commit_naming_it_with_every_key_as_it_was(
    db: nbdb.Database, client: Any, op: str, kind: str
) -> None:
    """'last' (the head the reads take) is a string every commit SETs. Another writer's hash or list
    there reads as nothing (MGET), and the commit's SET overwrote it: that writer's data gone, the
    commit applied. Now the commit fails as CorruptRecordError naming the key, with every key of the
    namespace as it was, and applies at the next revision once the key is back."""
    root = root_of(db)
    key = root + "last"
    old = None if op == "first" else db.create(LogicalSwitch(name="old", topic="tenant"))
    head = db.backend.current_revision()
    kept = client.dump(key)
    client.delete(key)
    if kind == "hash":
        client.hset(key, "f", "foreign")
    else:
        client.rpush(key, b"foreign")
    before = stored(client, root)
    with pytest.raises(nbdb.CorruptRecordError, match=re.escape(key)):
        if old is None:
            db.create(LogicalSwitch(name="made", topic="tenant"))
        else:
            _write(db, op, old, "tenant")
    assert stored(client, root) == before
    _put_back(client, key.encode(), kept)
    if old is None:
        db.create(LogicalSwitch(name="made", topic="tenant"))
    else:
        _write(db, op, old, "tenant")
    assert db.backend.current_revision() == head + 1
    assert client.type(key) == b"string"
