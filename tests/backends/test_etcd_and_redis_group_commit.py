"""Group commit on real servers: a lost reply in the middle of a group, and watchers of grouped commits.

Threads writing through one Database share requests (a Redis pipeline of
commit scripts, an etcd transaction of nested ones). A fault proxy slows the
first commit so that the others queue behind it and leave as one group, then
loses the reply of the request that carries the group: every commit of it is
still applied exactly once and acknowledged (or reported as of unknown
outcome), never failed. A watcher and a cache see every grouped change, once.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import nbdb
from nbdb.conformance.faultkit import id_patterns
from nbdb.families.kv import KeyValueBackend
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.testing import Server, start_server
from nbdb.testing.faults import proxy_url
from nbdb.testing.servers import require_server

pytestmark = pytest.mark.timeout(180)

KINDS = ["redis", "etcd"]


@pytest.fixture(scope="module", params=KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    require_server(request.param)
    with start_server(request.param) as started:
        yield started


def _committer(db: nbdb.Database) -> Any:
    backend = db.backend
    assert isinstance(backend, KeyValueBackend) and backend.group_commit > 1
    return backend._committer


def _create_all(db: nbdb.Database, ports: list[LogicalSwitchPort]) -> list[Any]:
    """Create ``ports`` from one thread each, at once; each thread's result or exception."""
    results: list[Any] = [None] * len(ports)
    start = threading.Barrier(len(ports))

    def body(i: int) -> None:
        start.wait(10)
        try:
            results[i] = db.create(ports[i])
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=body, args=(i,)) for i in range(len(ports))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_a_lost_reply_in_the_middle_of_a_group_is_applied_once_and_acknowledged(server: Server) -> None:
    namespace = f"g-{uuid.uuid4().hex[:10]}"
    with proxy_url(server.url) as proxied, nbdb.connect(server.url, namespace=namespace) as direct:
        switch = direct.create(LogicalSwitch(name="sw"))
        # Retries long enough to outlast the reconnection through the proxy: then nothing stays unknown.
        with nbdb.connect(proxied.url, namespace=namespace, retries=40, retry_backoff=0.1) as db:
            committer = _committer(db)
            db.get(LogicalSwitch, switch.id)  # connected before the fault
            first = LogicalSwitchPort(switch=switch, name="first")
            ports = [LogicalSwitchPort(switch=switch, name=f"p{i}") for i in range(7)]
            # The first commit crawls through the proxy while the seven others queue behind it.
            proxied.proxy.delay(0.3)
            lone = threading.Thread(target=db.create, args=(first,))
            lone.start()
            deadline = time.monotonic() + 10
            while not committer._sending and time.monotonic() < deadline:
                time.sleep(0.001)
            # The request that carries the middle port loses its reply: that is the group's.
            proxied.proxy.lose_next_reply(id_patterns(ports[3].id), window=0.2)
            grouped_before = committer.grouped
            results = _create_all(db, ports)
            lone.join(30)
            proxied.proxy.heal()
            assert proxied.proxy.stats.fired == 1, "the lost reply did not happen"
            assert committer.grouped - grouped_before == len(ports), "the seven did not leave as one group"
        # The store stayed reachable: the retry settles every member of the group as applied.
        assert all(isinstance(r, LogicalSwitchPort) and r.version == 1 for r in results), results
        stored = {p.name: p for p in direct.list(LogicalSwitchPort)}
        assert set(stored) == {"first", *(p.name for p in ports)}
        for port in ports:
            assert stored[port.name].id == port.id and stored[port.name].version == 1


def test_grouped_commits_reach_watchers_whole_and_caches_read_them(server: Server) -> None:
    namespace = f"g-{uuid.uuid4().hex[:10]}"
    with nbdb.connect(server.url, namespace=namespace) as db, nbdb.connect(server.url, namespace=namespace) as other:
        switch = db.create(LogicalSwitch(name="sw"))
        watch = other.watch([LogicalSwitchPort], since=other.list(LogicalSwitchPort).revision)
        with db.cache([LogicalSwitch, LogicalSwitchPort]) as cache:
            assert cache.wait_synced(30)
            committer = _committer(db)
            ports = [LogicalSwitchPort(switch=switch, name=f"p{i}") for i in range(40)]
            results: list[Any] = []
            for start in range(0, len(ports), 8):
                results += _create_all(db, ports[start : start + 8])
            assert all(isinstance(r, LogicalSwitchPort) for r in results), results
            assert committer.grouped > 0, "no group was formed"
            for created in results:
                assert cache.wait_for(created, 30)  # read your writes, grouped or not
                assert cache.get(LogicalSwitchPort, created.id) is not None
        seen: dict[uuid.UUID, int] = {}
        deadline = time.monotonic() + 30
        while len(seen) < len(ports) and time.monotonic() < deadline:
            for event in watch.poll(1.0):
                assert event.new is not None and event.new.id not in seen, "a change came twice"
                seen[event.new.id] = event.revision
        watch.close()
        assert set(seen) == {p.id for p in ports}
        # A watch delivers revisions in order and never past one it has not delivered whole.
        revisions = [r.nbdb_revision for r in results]
        assert sorted(seen.values()) == sorted(revisions)
