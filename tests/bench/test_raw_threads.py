"""The concurrency workload's raw side against real servers: many threads, one topic or a topic each.

Each thread has a raw client of its own, as ``nbdb bench``'s ``threads`` group
runs them; every create must land (a baseline that fails under concurrency
leaves its row of the table empty). No timed assertions.
"""

from __future__ import annotations

import dataclasses
import json
import uuid

import pytest

from nbdb.bench.config import SIZES
from nbdb.bench.data import port_doc
from nbdb.bench.raw import RawConflict, open_raw
from nbdb.bench.target import Target
from nbdb.bench.workloads import concurrent
from nbdb.bench.workloads.common import PORT, populate_raw
from nbdb.testing import Server
from nbdb.testing.fixtures import cassandra_server, ovsdb_server  # noqa: F401 - pytest fixtures

# Enough creates per thread that writers of one partition overlap.
SIZES_THREADS = dataclasses.replace(SIZES["tiny"], crud_ops=96)
CASES = [(8, 1), (4, 4)]
"""(threads, topics): all threads in one topic, and a topic each."""


@pytest.fixture(
    params=[("ovsdb", None), ("cassandra", None), ("cassandra", "seq")], ids=lambda p: "+".join(filter(None, p))
)
def target(request: pytest.FixtureRequest) -> Target:
    """The bench target of a harness server, opening the raw client or one of its extra baselines."""
    kind, baseline = request.param
    pytest.importorskip(f"nbdb.backends.{kind}")
    server: Server = request.getfixturevalue(f"{kind}_server")
    target = Target(kind, server.url)
    return target if baseline is None else target.with_baseline(baseline)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("threads", "topics"), CASES)
def test_every_raw_create_of_every_thread_lands(target: Target, threads: int, topics: int) -> None:
    [measured] = concurrent.run_raw(target, SIZES_THREADS, threads=threads, topics=topics)
    assert measured.workload == "write.create.threads"
    assert measured.count == threads * (SIZES_THREADS.crud_ops // threads)
    assert measured.elapsed_ns > 0


@pytest.mark.timeout(120)
def test_raw_topics_are_partitions_where_the_store_has_them(target: Target) -> None:
    client = target.raw(target.namespace())
    try:
        table = client.topic_table(PORT, 3)
        # OVSDB keeps every port in its one table; the key-range stores give a topic a range of its own.
        assert (table == PORT) == (target.name == "ovsdb")
        switch_id, _ = populate_raw(client, 0, "tenant-3", switch=3)
        doc = port_doc(switch_id, 0, "tenant-3")
        key = client.key(table, str(doc["id"]))
        assert client.create(key, json.dumps(doc).encode()) == 1
        got = client.get(key)
        assert got is not None and json.loads(got[0])["switch"] == switch_id
    finally:
        client.cleanup()
        client.close()


@pytest.mark.timeout(120)
def test_sequenced_write_overtaken_by_another_process_is_retried_not_a_conflict(
    cassandra_server: Server,  # noqa: F811
) -> None:
    """A writer elsewhere landing a later revision first fails the ordering condition only: no conflict."""
    pytest.importorskip("nbdb.backends.cassandra")
    namespace = f"raw-overtaken-{uuid.uuid4().hex[:8]}"
    client = open_raw("cassandra", cassandra_server.url, namespace, "seq")
    other = open_raw("cassandra", cassandra_server.url, namespace)  # plain client: a session to write with
    try:
        switch_id, docs = populate_raw(client, 1)
        # Another process's commit (or a watcher's seal) raised the partition past the revisions to come.
        session = other._session  # the test writes to the store as that other process would
        head = (
            session.execute(
                f"SELECT head FROM {cassandra_server.keyspace}.nbdb_raw_seq WHERE ns = %s LIMIT 1", (namespace,)
            )
            .one()
            .head
        )
        session.execute(
            f"UPDATE {cassandra_server.keyspace}.nbdb_raw_log SET last_rev = %s WHERE ns = %s AND tbl = %s",
            (head + 3, namespace, PORT),
        )
        doc = port_doc(switch_id, 1)
        key = client.key(PORT, str(doc["id"]))
        assert client.create(key, json.dumps(doc).encode()) == 1
        assert client.update(key, json.dumps({**doc, "up": True}).encode(), 1) == 2
        # A real conflict is still one.
        with pytest.raises(RawConflict):
            client.create(client.key(PORT, str(docs[0]["id"])), json.dumps(docs[0]).encode())
    finally:
        client.cleanup()
        client.close()
        other.close()
