"""What a create reads on Cassandra: the index over every partition only for an id that may be stored already.

An id nbdb made in this process that no create carried before (``Put.fresh_id``)
cannot be held by any topic, so its create reads nothing (its batch's ``IF NOT
EXISTS`` refuses it if the same create was sent before, and the retry reads its
row); any
other create (an id given by the caller, a second create of the same object or
of a copy of it) still looks the id up in every partition and is refused when
another topic holds it. The reads are counted at the family's seam, between the
family and the real store on a real server (one node shared by the module).
"""

from __future__ import annotations

import pickle
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import pytest

import nbdb
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.testing import fixtures
from nbdb.writes import put_of

pytest.importorskip("cassandra")

from nbdb.backends.cassandra import CassandraBackend
from nbdb.families.widecolumn import (
    ForwardingStore,
    PendingReads,
    Row,
    Select,
    WideColumnBackend,
    WideColumnStore,
)
from nbdb.families.widecolumn import layout as L

cassandra_server = fixtures.cassandra_server
cassandra_url = fixtures.cassandra_url

pytestmark = pytest.mark.timeout(120)


class CountingStore(ForwardingStore):
    """The real store, counting the queries the family sends through it."""

    def __init__(self, real: WideColumnStore) -> None:
        super().__init__(real)
        self.queries: list[Select] = []
        self._lock = threading.Lock()

    def count(self, query: Select) -> int:
        with self._lock:
            return sum(1 for q in self.queries if q is query)

    def select(self, query: Select, params: Sequence[Any], *, serial: bool = False) -> list[Row]:
        with self._lock:
            self.queries.append(query)
        return self.real.select(query, params, serial=serial)

    def start_reads(self, reads: Sequence[tuple[Select, Sequence[Any]]], *, serial: bool = False) -> PendingReads:
        with self._lock:
            self.queries += [query for query, _ in reads]
        return self.real.start_reads(reads, serial=serial)


class _CountedCassandra(WideColumnBackend):
    capabilities: ClassVar = CassandraBackend.capabilities


@pytest.fixture
def counted(cassandra_url: str) -> Iterator[tuple[nbdb.Database, CountingStore]]:
    real = CassandraBackend.from_url(cassandra_url, namespace=f"c-{uuid.uuid4().hex[:10]}")
    store = CountingStore(real.store)
    db = nbdb.Database(_CountedCassandra(store, real.options))
    yield db, store
    db.close()


def test_a_create_of_a_made_id_reads_nothing(
    counted: tuple[nbdb.Database, CountingStore],
) -> None:
    db, store = counted
    sw = db.create(LogicalSwitch(name="sw", topic="a"))
    port = db.create(LogicalSwitchPort(switch=sw.id, name="p", topic="a"))
    with db.transaction() as txn:
        for i in range(3):
            txn.create(LogicalSwitch(name=f"in-txn-{i}", topic="a"))
    assert store.count(L.Q_LOCATE) == 0
    assert store.count(L.Q_ROW) == 0  # no row can hold the id: each batch's IF NOT EXISTS checks it
    assert db.get(LogicalSwitchPort, port.id).switch == sw.id


def test_a_create_of_a_given_id_still_looks_in_every_topic(counted: tuple[nbdb.Database, CountingStore]) -> None:
    db, store = counted
    elsewhere = db.create(LogicalSwitch(name="elsewhere", topic="a"))
    db.create(LogicalSwitch(id=uuid.uuid4(), name="given", topic="a"))
    assert store.count(L.Q_LOCATE) == 1
    with pytest.raises(nbdb.ConflictError, match="in another topic"):
        db.create(LogicalSwitch(id=elsewhere.id, name="reused", topic="b"))
    assert store.count(L.Q_LOCATE) == 2


@pytest.mark.parametrize(
    "again",
    [
        pytest.param(lambda made, early: made.replace(topic="b"), id="the same object in another topic"),
        pytest.param(lambda made, early: early, id="a copy made before the first create"),
        pytest.param(lambda made, early: made.model_copy(update={"topic": "b"}), id="model_copy"),
        pytest.param(lambda made, early: pickle.loads(pickle.dumps(early)), id="pickled"),
        pytest.param(
            lambda made, early: LogicalSwitch.model_validate_json(early.model_dump_json()), id="dumped and validated"
        ),
    ],
)
@pytest.mark.parametrize("first", ["create", "transaction"])
def test_a_made_id_created_again_in_another_topic_is_still_refused(
    counted: tuple[nbdb.Database, CountingStore], again: Callable[[Any, Any], LogicalSwitch], first: str
) -> None:
    db, store = counted
    made = LogicalSwitch(name="sw", topic="a")
    early = made.replace(topic="b")
    if first == "create":
        db.create(made)
    else:
        with db.transaction() as txn:
            txn.create(made)
    assert store.count(L.Q_LOCATE) == 0
    with pytest.raises(nbdb.ConflictError, match="in another topic"):
        db.create(again(made, early))
    with pytest.raises(nbdb.ConflictError, match="in another topic"), db.transaction() as txn:
        txn.create(again(made, early))
    with pytest.raises(nbdb.ConflictError, match="already exists"):
        db.create(made)  # again in its own topic
    assert store.count(L.Q_LOCATE) == 3
    assert [o.id for o in db.list(LogicalSwitch, topic="b")] == []


def test_a_fresh_create_sent_twice_is_refused_by_its_own_row(counted: tuple[nbdb.Database, CountingStore]) -> None:
    # The same Put, marked fresh, committed twice (as a retry would): the second finds the row of the first.
    db, store = counted
    put, _ = put_of(LogicalSwitch(name="sw", topic="a"), 0)
    assert put.fresh_id
    db.backend.commit([put])
    with pytest.raises(nbdb.ConflictError, match="already exists"):
        db.backend.commit([put])
    assert store.count(L.Q_LOCATE) == 0
