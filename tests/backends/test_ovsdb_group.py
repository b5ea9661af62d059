"""Group commit on OVSDB: concurrent commits share a transaction, and each keeps its own outcome."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import nbdb
from nbdb.backends.ovsdb import OvsdbBackend
from nbdb.families.ovsdb.family import TransactLost, TransactNotSent
from nbdb.families.ovsdb.group import GroupTransact, _Entry, split_results
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.testing import start_server

pytestmark = pytest.mark.timeout(120)


@given(st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=8))
def test_results_split_by_each_commits_operations(sizes: list[int]) -> None:
    result = [{"n": i} for i in range(sum(sizes))]
    parts = split_results(result, sizes)
    assert parts is not None
    assert [len(p) for p in parts] == sizes
    assert [x for p in parts for x in p] == result


@given(st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=8), st.data())
def test_a_failed_or_short_reply_is_not_split(sizes: list[int], data: st.DataObject) -> None:
    total = sum(sizes)
    failed = data.draw(st.integers(min_value=0, max_value=total - 1))
    result: list[Any] = [{} for _ in range(failed)] + [{"error": "timed out", "details": "wait"}]
    assert split_results(result, sizes) is None
    assert split_results([{} for _ in range(total - 1)], sizes) is None


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    with start_server("ovsdb") as srv:
        yield srv


@pytest.fixture
def db(server: Any) -> Iterator[nbdb.Database]:
    with nbdb.connect(server.url, namespace=f"g{uuid.uuid4().hex[:10]}") as database:
        yield database


def _insert(name: str) -> list[dict[str, Any]]:
    return [{"op": "insert", "table": "Logical_Switch", "uuid": str(uuid.uuid4()), "row": {"name": name}}]


def _names(backend: OvsdbBackend) -> set[str]:
    select = {"op": "select", "table": "Logical_Switch", "where": [], "columns": ["name"]}
    return {row["name"] for row in backend._transact("OVN_Northbound", [select])[0]["rows"]}


def test_a_failing_commit_in_a_combined_transaction_fails_only_itself(db: nbdb.Database) -> None:
    backend = db.backend
    assert isinstance(backend, OvsdbBackend)
    tag = uuid.uuid4().hex[:8]
    missing = str(uuid.uuid4())
    failing = [
        {"op": "wait", "table": "Logical_Switch", "timeout": 0, "where": [["_uuid", "==", ["uuid", missing]]]}
        | {"columns": [], "until": "==", "rows": [{}]},
        *_insert(f"{tag}-never"),
    ]
    group = GroupTransact(backend._transact, TransactLost, TransactNotSent)
    batch = [_Entry("OVN_Northbound", _insert(f"{tag}-a")), _Entry("OVN_Northbound", failing)]
    batch.append(_Entry("OVN_Northbound", _insert(f"{tag}-c")))
    group._send(batch)
    assert (group.combined, group.resent) == (3, 3)  # the combined transaction aborted: each was sent again alone
    assert batch[0].result is not None and "error" not in batch[0].result[0]
    assert batch[2].result is not None and "error" not in batch[2].result[0]
    assert batch[1].result is not None and batch[1].result[0].get("error") == "timed out"
    names = _names(backend)
    assert {f"{tag}-a", f"{tag}-c"} <= names
    assert f"{tag}-never" not in names


def test_concurrent_commits_share_transactions_and_keep_their_own_outcomes(db: nbdb.Database) -> None:
    switch = db.create(LogicalSwitch(name="sw", topic="t"))
    backend = db.backend
    assert isinstance(backend, OvsdbBackend)
    ids = [uuid.uuid4() for _ in range(40)]
    gate = threading.Barrier(8)

    def worker(n: int) -> list[tuple[str, uuid.UUID]]:
        gate.wait()
        outcomes = []
        # Threads n and n+4 create the same ids: exactly one create of each lands.
        for i, id in enumerate(ids[(n % 4) * 10 : (n % 4 + 1) * 10]):
            port = LogicalSwitchPort(id=id, switch=switch, name=f"p{n % 4}-{i}", topic="t")
            try:
                db.create(port)
                outcomes.append(("created", id))
            except nbdb.ConflictError:
                outcomes.append(("conflict", id))
        return outcomes

    with ThreadPoolExecutor(8) as pool:
        outcomes = [o for part in pool.map(worker, range(8), timeout=60) for o in part]
    created = [id for kind, id in outcomes if kind == "created"]
    conflicts = [id for kind, id in outcomes if kind == "conflict"]
    assert sorted(created) == sorted(ids)
    assert sorted(conflicts) == sorted(ids)
    # Pairs of threads create the same ids in step: their combined transactions fail and are sent again alone.
    assert backend._grouped.combined > 0
    assert backend._grouped.resent > 0
    assert {p.id for p in db.list(LogicalSwitchPort)} == set(ids)
