"""Redis: the head (the last commit's revision and token) read from 'last', not from the last entry of 'log'.

Every read script (a range, the head, a watcher's poll) needs the head. It copied the last entry of
'log' to learn it, the whole change record with it: after one transaction of 10,000 objects each
read moved 5.6 MB inside the server. A commit now writes the head to 'last' beside that entry, and
the reads take it there while it is current; a store another (older) nbdb commits to without
writing 'last' is read from 'log' as before (see "Stored format" in docs/backends/redis.md).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.backends.redis import RedisBackend
from nbdb.backends.redis.lua import COMMIT_LUA
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.testing.fixtures import redis_server, server_factory  # noqa: F401 - pytest fixtures
from nbdb.testing.redis import RedisServer

from .test_redis import backend_of, backend_url, ns

redis = pytest.importorskip("redis")

_HEAD_WRITE = "redis.call('SET', P .. 'last', revs .. ' ' .. token)"
"""The commit script's write of the head: without it, the script is an older nbdb's commit."""


@contextlib.contextmanager
def _opened(url: str) -> Iterator[tuple[nbdb.Database, RedisBackend, Any]]:
    """A database on a namespace of its own, its backend, and a plain client of its server."""
    with nbdb.connect(url, namespace=ns()) as db:
        backend = backend_of(db)
        client = redis.Redis.from_url(backend_url(backend))
        try:
            yield db, backend, client
        finally:
            client.close()


def _log_head(client: Any, root: str) -> tuple[int, str]:
    """The revision and token of the last entry of 'log' (the head as the reads took it before 'last')."""
    (entry_id, fields), *_ = client.xrevrange(root + "log", count=1)
    return int(entry_id.split(b"-")[0]), fields[b"t"].decode()


@pytest.mark.timeout(60)
def test_reads_after_a_large_commit_take_the_head_from_last_and_copy_no_log_entry(
    server_factory: Callable[..., Any],  # noqa: F811 - the fixture
) -> None:
    """After a transaction of 300 ports, the head, a range, a referrers read and a watcher's poll copy
    no entry of 'log': no XRANGE, XREVRANGE or XINFO inside their scripts (each copied the last entry,
    the transaction's change record of every port, before), and every one reads the commit's revision."""
    url = server_factory("redis").url  # a server of its own: its command counts are this test's
    client = redis.Redis.from_url(url)
    try:
        with nbdb.connect(url, namespace=ns()) as db:
            backend = backend_of(db)
            switch = db.create(LogicalSwitch(name="sw", topic="tenant-a"))
            with db.transaction() as txn:
                ports = [
                    txn.create(LogicalSwitchPort(switch=switch, name=f"p{i}", topic="tenant-a")) for i in range(300)
                ]
            revision, token = _log_head(client, backend.root)
            watch = db.watch(LogicalSwitch)
            client.config_resetstat()
            assert backend.current_revision() == revision
            assert backend.referrers(LogicalSwitchPort.nbdb_table, ports[0].id) == []
            listed = db.list(LogicalSwitch)
            assert listed.revision == revision and [s.name for s in listed] == ["sw"]
            assert watch.poll(0) == []
            stats = client.info("commandstats")
            assert int(stats.get("cmdstat_evalsha", {}).get("calls", 0)) >= 4  # the reads ran their scripts
            copies = {
                k: v["calls"] for k, v in stats.items() if k in ("cmdstat_xrange", "cmdstat_xrevrange", "cmdstat_xinfo")
            }
            assert copies == {}
            assert backend.token_of(revision) == token
            # The commit wrote its head to 'last', the token the same as its entry's.
            assert client.get(backend.root + "last") == f"{revision} {token}".encode()
            # The watcher at that head still gets the next commit, and the head moves with it.
            db.update(switch.replace(name="sw2"))
            assert [e.object.name for e in watch.poll(5)] == ["sw2"]
            assert backend.current_revision() == revision + 1
            watch.close()
    finally:
        client.close()


def _old_commit(client: Any, backend: RedisBackend, switch: LogicalSwitch) -> None:
    """An update of ``switch`` (its stored bytes again, the version bumped) committed as an nbdb before
    'last' commits: the same script without the head's write."""
    old_script = COMMIT_LUA.replace(_HEAD_WRITE, "")
    key = backend.layout.object(switch.topic, LogicalSwitch.nbdb_table, switch.id)
    value, version = client.hmget(f"{backend.root}k:i/{LogicalSwitch.nbdb_table}/{switch.id}", "ov", "on")
    token = uuid.uuid4().hex
    args = [backend.root, "o/", token, backend.config.history, "v", key, version, "P", key, value, "0"]
    assert client.eval(old_script, 0, *args)[0] == 1


@pytest.mark.timeout(240)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.sampled_from(["new", "old", "txn", "lost", "moved"]), min_size=1, max_size=8))
def test_any_mix_of_commits_with_and_without_last_reads_the_head_of_log_and_watches_miss_nothing(
    redis_server: RedisServer,  # noqa: F811 - the fixture
    steps: list[str],
) -> None:
    """Property: whatever mix of this nbdb's commits and an older one's (which write no 'last'), with
    'last' deleted or the counter moved past it (a refused commit moves it), every read takes the head
    'log' holds — never a stale one from 'last' — and a watch from before them sees every change once.

    "new": a db.update; "txn": a transaction of updates of both switches; "old": an update committed
    by the commit script without the head's write; "lost": 'last' deleted; "moved": the counter moved
    by one with nothing committed (as a refused commit leaves it)."""
    assert _HEAD_WRITE in COMMIT_LUA
    with _opened(redis_server.url) as (db, backend, client):
        switches = [db.create(LogicalSwitch(name=f"s{i}", topic="tenant-a")) for i in range(2)]
        watch = db.watch(LogicalSwitch, since=db.list(LogicalSwitch).revision)
        for n, step in enumerate(steps):
            if step == "new":
                switches[0] = db.update(db.get(LogicalSwitch, switches[0].id).replace(name=f"n{n}"))
            elif step == "txn":
                with db.transaction() as txn:
                    for s in switches:
                        txn.update(db.get(LogicalSwitch, s.id).replace(name=f"t{n}"))
            elif step == "old":
                _old_commit(client, backend, switches[1])
            elif step == "lost":
                client.delete(backend.root + "last")
            else:
                client.incr(backend.root + "rev")
            revision, token = _log_head(client, backend.root)
            assert backend.current_revision() == revision
            assert backend.token_of(revision) == token
            assert db.list(LogicalSwitch).revision == revision
        seen: dict[uuid.UUID, list[int]] = {s.id: [] for s in switches}
        head = _log_head(client, backend.root)[0]
        while watch.revision < head:
            events = watch.poll(5)
            assert events, f"the watch stopped at {watch.revision}, the head is {head}"
            for e in events:
                seen[e.object.id].append(e.object.version)
        for s in switches:
            version = db.get(LogicalSwitch, s.id).version
            assert seen[s.id] == list(range(2, version + 1))  # every update once, in order
        watch.close()
        with db.watch(LogicalSwitch, since=head) as later:
            db.update(db.get(LogicalSwitch, switches[0].id).replace(name="last"))
            assert [e.object.name for e in later.poll(5)] == ["last"]


@pytest.mark.timeout(30)
def test_an_entry_past_last_in_log_is_the_head(redis_server: RedisServer) -> None:  # noqa: F811 - the fixture
    """Another writer's entry past the head in 'log', the counter not moved: the head is that entry, as
    it was before 'last' (the reads check that 'log' holds nothing past it), and the next commit lands
    past it."""
    with _opened(redis_server.url) as (db, backend, client):
        switch = db.create(LogicalSwitch(name="sw", topic="tenant-a"))
        revision, _token = _log_head(client, backend.root)
        client.xadd(backend.root + "log", {"t": "theirs"}, id=f"{revision + 1}-0")
        assert client.get(backend.root + "rev") == str(revision).encode()
        assert backend.current_revision() == revision + 1
        assert backend.token_of(revision + 1) == "theirs"
        assert db.list(LogicalSwitch).revision == revision + 1
        db.update(switch.replace(name="sw2"))
        assert backend.current_revision() == revision + 2 == _log_head(client, backend.root)[0]


@pytest.mark.timeout(30)
def test_a_counter_past_last_is_the_head_when_log_no_longer_holds_it(redis_server: RedisServer) -> None:  # noqa: F811
    """An older nbdb's commit (no 'last'), then 'log' deleted by another writer: 'log' no longer tells
    that 'last' is behind, the counter does. The head is the counter's (with no token), as it was
    before 'last' — not the older revision 'last' still names: a head behind the store's."""
    with _opened(redis_server.url) as (db, backend, client):
        switch = db.create(LogicalSwitch(name="sw", topic="tenant-a"))
        revision, token = _log_head(client, backend.root)
        assert client.get(backend.root + "last") == f"{revision} {token}".encode()
        _old_commit(client, backend, switch)
        client.delete(backend.root + "log")
        assert backend.current_revision() == revision + 1
        assert db.list(LogicalSwitch).revision == revision + 1
