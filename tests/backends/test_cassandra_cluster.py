"""A 3-node Cassandra cluster losing a node under writes, with a watch and a cache following.

The node is lost two ways: killed (``kill -9``: its connections reset, the driver marks it down at
once) and paused (SIGSTOP, as a hung host or a silent link: its connections stay open, and only the
driver's heartbeat tells it is gone).

Slow (three JVMs start one after the other): runs with ``NBDB_TEST_CASSANDRA_EXTRA=1``. Both faults, and
the harness's own check of three nodes, run on one cluster for the module (``cassandra_cluster``): a start
of three nodes costs a minute or more on the 2-core CI machine, a restart of the killed one a fraction of
that. The pause runs first, on the cluster as it started; each test leaves all three nodes up, and the
cluster stops with the module (no idle JVMs for the rest of the session).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import nbdb
from nbdb.events import ChangeEvent, EventKind
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.testing import CassandraServer, HarnessError
from nbdb.testing.fixtures import shared_server
from nbdb.testing.probes import cql_query_ok, cql_rows_count

pytest.importorskip("cassandra")


@pytest.fixture(scope="module")
def cassandra_cluster() -> Iterator[CassandraServer]:
    """Three nodes on 127.0.0.1-3 for the module's tests."""
    with shared_server("cassandra", members=3) as server:
        assert isinstance(server, CassandraServer)
        yield server


pytestmark = pytest.mark.skipif(
    os.environ.get("NBDB_TEST_CASSANDRA_EXTRA") != "1", reason="opt-in: set NBDB_TEST_CASSANDRA_EXTRA=1"
)

_BEFORE_KILL = 8.0
_AFTER_KILL = 30.0
_RECOVERY = 8.0
"""Seconds within which writers and watchers must work again after the node is killed, and the longest
they may stall after it (or 1.5 times their longest pause before it, on a machine too loaded for that).

The goal (issue 12) is 5 s. Until the failure detector convicts the dead node (about 12 s), a
lightweight transaction whose proposal the live replicas refused waits for the dead one up to the
server's write timeout; with Paxos v1 the writers' compare-and-sets on the sequencer row kept
making each other's proposals refused, and writers here stalled 3.2-9.3 s. With Paxos v2, which
the harness runs (docs/backends/cassandra.md, "Server settings for a node loss"), no transaction
waits for the dead node; what remained was an SAI lookup of a create's id that picked it (up to the
2 s range timeout): 1.9-4.3 s in three runs on the 2-core machine at load 13-22 (v1, in two runs
between them: 2.7-7.9 s). A create of an id nbdb made no longer looks it up, and a lost race for a
revision is retried without a growing pause: 0.9-2.4 s in five runs at load 3-11 (2.7-4.5 s for
the code before, nine runs alternating; docs/benchmarks.md, "Cassandra after a node kill").
The bound (was 15 s) leaves the CI machine, where stalls ran up to twice as long as here, room
above the 5 s goal, and fails stalls of the old kind (10-20 s); a return to v1's waits shows
better in ``nbdb soak cassandra``, whose writers compete harder (docs/faults.md)."""


@dataclass
class Writer:
    """One client writing its own objects: what was acknowledged, what is of unknown outcome."""

    db: nbdb.Database
    topic: str
    acked: dict[uuid.UUID, int] = field(default_factory=dict)
    """id -> last acknowledged version."""
    unknown: set[uuid.UUID] = field(default_factory=set)
    pairs: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)
    """Objects created together in one transaction."""
    successes: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def run(self, stop: threading.Event) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                if i % 3 == 0:
                    with self.db.transaction() as txn:
                        sw = txn.create(LogicalSwitch(name=f"{self.topic}-sw{i}", topic=self.topic))
                        port = txn.create(LogicalSwitchPort(switch=sw.id, name=f"{self.topic}-p{i}", topic=self.topic))
                    self.pairs.append((sw.id, port.id))
                    self.acked[sw.id] = self.acked[port.id] = 1
                else:
                    sw = self.db.create(LogicalSwitch(name=f"{self.topic}-{i}", topic=self.topic))
                    self.acked[sw.id] = 1
                    renamed = self.db.update(sw.replace(name=f"{self.topic}-{i}-renamed"))
                    self.acked[sw.id] = renamed.version
                self.successes.append(time.monotonic())
            except nbdb.CommitUnknownError as exc:
                self.errors.append(f"unknown: {exc}")
            except nbdb.BackendUnavailableError as exc:
                self.errors.append(f"unavailable: {exc}")
                time.sleep(0.05)


def _longest_gap(times: list[float], start: float, end: float) -> float:
    points = [start, *sorted(t for t in times if start <= t <= end), end]
    return max(b - a for a, b in itertools.pairwise(points))


@pytest.mark.timeout(900)
@pytest.mark.parametrize("fault", ["pause", "kill"])
def test_a_node_lost_under_writes_loses_skips_and_repeats_nothing(
    cassandra_cluster: CassandraServer, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="nbdb.backends.cassandra.store")  # slow requests, if it fails
    server = cassandra_cluster
    # The client's request timeout is the default (15 s), as users have it: what bounds a stall is the server's.
    url = f"{server.url}?settle=1"
    namespace = f"kill-{uuid.uuid4().hex[:8]}"
    # Each client its own session and commit queue (sessions are shared by equal settings; a different
    # connect_timeout makes another), as clients in separate processes have: their commits compete for
    # the namespace's sequencer row, the contention that makes a transaction wait for the dead node.
    dbs = [nbdb.connect(f"{url}&connect_timeout={5 + i / 10}", namespace=namespace) for i in range(4)]
    watcher_db, writer_dbs = dbs[0], dbs[1:]
    lost = server.members[1]
    try:
        start = watcher_db.backend.current_revision()
        watch = watcher_db.watch([LogicalSwitch, LogicalSwitchPort], since=start)
        watched: list[tuple[float, ChangeEvent[Any]]] = []
        cached: list[ChangeEvent[Any]] = []
        cache = watcher_db.cache([LogicalSwitch, LogicalSwitchPort], on_change=cached.append)
        assert cache.wait_synced(60)
        stop = threading.Event()
        written = threading.Event()  # every writer has stopped: no commit is in flight any more
        watch_errors: list[str] = []

        def follow() -> None:
            # Until the writers are done (a writer finishes the step it is in after ``stop``), then to the end.
            while not written.is_set() or watch.revision < watcher_db.backend.current_revision():
                try:
                    for event in watch.poll(0.2):
                        watched.append((time.monotonic(), event))
                except nbdb.BackendUnavailableError as exc:  # a watch says so; its revision stays exact
                    watch_errors.append(str(exc))
                    time.sleep(0.05)

        writers = [Writer(db, f"tenant-{i}") for i, db in enumerate(writer_dbs)]
        threads = [threading.Thread(target=w.run, args=(stop,)) for w in writers]
        follower = threading.Thread(target=follow)
        for t in [*threads, follower]:
            t.start()
        time.sleep(_BEFORE_KILL)
        killed_at = time.monotonic()
        if fault == "kill":
            lost.kill()
        else:
            # Compare-and-sets are never sent twice and serial reads are not speculated: until the driver
            # marks the node down, the ones it coordinates wait for it. With the driver's heartbeat at 5 s
            # (interval and timeout) they waited 10-11 s; at 1 s, 2-3 s.
            lost.pause()
        time.sleep(_AFTER_KILL)
        ended_at = time.monotonic()
        stop.set()
        for t in threads:
            t.join(60)
        if fault == "pause":
            lost.resume()  # after the writers: the stalls measured are those of a node gone for good
        written.set()
        follower.join(120)
        assert not follower.is_alive(), "the watch did not catch up"

        # Writers and watchers worked again within seconds of the kill, and kept working about as
        # well as before it (on a loaded machine, a write can take a second or two even then);
        # measured here, asserted after the exactness checks.
        slow = [r.getMessage()[:160] for r in caplog.records if r.name.endswith("store")][-10:]
        stalls = {}
        for name, times in [*((w.topic, w.successes) for w in writers), ("the watch", [t for t, _ in watched])]:
            before = [t for t in times if t <= killed_at]
            usual = _longest_gap(before, before[0], before[-1]) if len(before) > 1 else 0.0
            stalls[name] = (_longest_gap(times, killed_at, ended_at), usual)
        summary = ", ".join(f"{name} {gap:.1f}s ({usual:.1f}s before)" for name, (gap, usual) in stalls.items())
        logging.getLogger(__name__).warning("longest stall after the %s: %s", fault, summary)

        # Nothing acknowledged is lost.
        final = {o.id: o for o in watcher_db.list(LogicalSwitch)}
        final.update({o.id: o for o in watcher_db.list(LogicalSwitchPort)})
        for w in writers:
            for id, version in w.acked.items():
                assert id in final, f"acknowledged {id} is gone"
                assert final[id].version >= version, f"{id}: acknowledged v{version}, stored v{final[id].version}"

        # The watch: every change once, in order, transactions whole.
        events = [e for _, e in watched]
        keys = [(e.revision, e.id) for e in events]
        assert len(keys) == len(set(keys)), "a change was delivered twice"
        assert [e.revision for e in events] == sorted(e.revision for e in events)
        state: dict[uuid.UUID, Any] = {}
        for event in events:
            previous = state.get(event.id)
            if event.kind is EventKind.DELETED:
                state.pop(event.id)
                continue
            assert event.new is not None
            expected = 1 if previous is None else previous.version + 1
            assert event.new.version == expected, f"{event.id}: skipped to v{event.new.version} from v{expected - 1}"
            state[event.id] = event.new
        assert state == final, "replaying the watch does not give the stored state"
        position = {(e.id): i for i, e in enumerate(events) if e.kind is EventKind.CREATED}
        for w in writers:
            for sw, port in w.pairs:
                a, b = events[position[sw]], events[position[port]]
                assert a.revision == b.revision and abs(position[sw] - position[port]) == 1, "a torn transaction"

        # The cache converged, with no change applied twice.
        deadline = time.monotonic() + 60
        while {o.id: o for o in [*cache.list(LogicalSwitch), *cache.list(LogicalSwitchPort)]} != final:
            assert time.monotonic() < deadline, "the cache did not converge"
            time.sleep(0.2)
        live = [(e.revision, e.id) for e in cached if not e.synthetic]
        assert len(live) == len(set(live)), "the cache applied a change twice"

        # Exactness first (above), then liveness: a stall is reported only when nothing was lost or repeated.
        for name, (gap, usual) in stalls.items():
            assert gap <= max(_RECOVERY, 1.5 * usual), f"{name} stalled {gap:.1f}s after the {fault}; {summary}; {slow}"
        cache.close()
        watch.close()
    finally:
        if lost.is_paused():
            lost.resume()
        for db in dbs:
            db.close()
        if not lost.is_running():
            lost.restart()  # the session's cluster whole again, for its next test


@pytest.mark.timeout(600)
def test_three_nodes(cassandra_cluster: CassandraServer) -> None:
    """The harness's cluster of three (run last here: it kills a node and restarts it)."""
    server = cassandra_cluster
    hosts = [m.host for m in server.members]
    assert hosts == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert server.url.startswith("cassandra://127.0.0.1:") and server.url.endswith("/nbdb")
    for member in server.members:
        assert cql_rows_count(member.host, member.port, "SELECT peer FROM system.peers_v2", timeout=15) == 2
    with pytest.raises(HarnessError, match="leaderless"):
        server.leader()
    victim = server.members[2]
    victim.kill()
    assert cql_rows_count(hosts[0], server.port, "SELECT release_version FROM system.local", timeout=15) == 1
    victim.restart()
    assert cql_query_ok(victim.host, victim.port)
