"""The raw baselines of etcd, OVSDB and Cassandra against real servers from the harness, and of sqlite on a file.

Each raw client keeps the contract of :class:`nbdb.bench.raw.RawClient`
(compare-and-swap on versions, atomic multi-creates, scans, a change feed
where the backend has one), and ``nbdb bench`` pairs its figures with nbdb's.
No timed assertions: figures must exist and be positive, not be fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nbdb.bench.config import SIZES
from nbdb.bench.raw import RawClient, RawConflict, extra_baselines, open_raw
from nbdb.bench.results import Measurement
from nbdb.bench.runner import run_bench
from nbdb.bench.workloads import GROUPS, Group
from nbdb.bench.workloads.common import PORT, SWITCH, populate_raw
from nbdb.cli import main
from nbdb.testing import Server
from nbdb.testing.fixtures import (  # noqa: F401 - pytest fixtures
    cassandra_server,
    etcd_server,
    hazelcast_server,
    ovsdb_server,
    redis_server,
)

KINDS = ["etcd", "ovsdb", "cassandra", "sqlite", "hazelcast"]
CRUD = {"write.create", "read.get", "write.update", "write.delete"}


@pytest.fixture(params=KINDS)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(backend name, the URL of its harness server, or of a file for sqlite)."""
    if request.param == "sqlite":
        return "sqlite", f"sqlite:///{tmp_path / 'raw.db'}"
    pytest.importorskip(f"nbdb.backends.{request.param}")
    server: Server = request.getfixturevalue(f"{request.param}_server")
    return request.param, server.url


def _raw(kind: str, url: str, namespace: str) -> RawClient:
    return open_raw(kind, url, namespace)


@pytest.mark.timeout(120)
def test_raw_client_keeps_the_contract(server: tuple[str, str]) -> None:
    kind, url = server
    _keeps_the_contract(_raw(kind, url, f"raw-contract-{kind}"))


@pytest.mark.timeout(120)
def test_cassandra_contract_baseline_keeps_the_contract(cassandra_server: Server) -> None:  # noqa: F811
    pytest.importorskip("nbdb.backends.cassandra")
    assert extra_baselines("cassandra") == ["seq"]
    _keeps_the_contract(open_raw("cassandra", cassandra_server.url, "raw-seq-contract", "seq"))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["redis", "etcd"])
def test_contract_baseline_keeps_the_contract_and_its_rules(kind: str, request: pytest.FixtureRequest) -> None:
    """raw+contract does the contract's server work: references, unique names, all or nothing."""
    pytest.importorskip("redis" if kind == "redis" else "grpc")
    url = request.getfixturevalue(f"{kind}_server").url
    assert extra_baselines(kind) == ["contract"]
    _keeps_the_contract(open_raw(kind, url, f"raw-contract-{kind}", "contract"))
    client = open_raw(kind, url, f"raw-contract-rules-{kind}", "contract")
    try:
        # 150 ports in one transaction: on etcd, more absence checks than one Txn holds (merged ranges).
        switch_id, docs = populate_raw(client, 150)
        assert len(client.scan(client.prefix(PORT))) == 150
        for doc in docs[2:]:
            client.delete(client.key(PORT, doc["id"]), 1)
        docs = docs[:2]
        taken = {**docs[0], "id": "22222222-2222-4222-8222-222222222222"}
        dangling = {**docs[0], "id": "33333333-3333-4333-8333-333333333333", "name": "new", "switch": taken["id"]}
        for doc in (taken, dangling):  # a unique name held by another port; a switch that does not exist
            with pytest.raises(RawConflict):
                client.create(client.key(PORT, doc["id"]), json.dumps(doc).encode())
        with pytest.raises(RawConflict):  # the switch is still referenced by its ports
            client.delete(client.key(SWITCH, switch_id), 1)
        # A failed multi-create claims no name: the same name is free for the next create.
        fresh = {**docs[0], "id": "44444444-4444-4444-8444-444444444444", "name": "fresh"}
        with pytest.raises(RawConflict):
            client.create_many([(client.key(PORT, d["id"]), json.dumps(d).encode()) for d in (fresh, docs[1])])
        assert client.create(client.key(PORT, fresh["id"]), json.dumps(fresh).encode()) == 1
        for doc in (*docs, fresh):
            client.delete(client.key(PORT, doc["id"]), 1)
        client.delete(client.key(SWITCH, switch_id), 1)
        assert client.get(client.key(SWITCH, switch_id)) is None
    finally:
        client.cleanup()
        client.close()


def _keeps_the_contract(client: RawClient) -> None:
    try:
        docs: list[dict[str, Any]] = populate_raw(client, 5)[1]
        assert sorted(json.loads(v)["id"] for v in client.scan(client.prefix(PORT))) == sorted(d["id"] for d in docs)
        doc = docs[0]
        key = client.key(PORT, str(doc["id"]))
        got = client.get(key)
        assert got is not None and got[1] == 1 and json.loads(got[0])["name"] == doc["name"]
        with pytest.raises(RawConflict):
            client.create(key, json.dumps(doc).encode())
        new = {**doc, "up": True}
        assert client.update(key, json.dumps(new).encode(), 1) == 2
        with pytest.raises(RawConflict):
            client.update(key, json.dumps(doc).encode(), 1)
        got = client.get(key)
        assert got is not None and got[1] == 2 and json.loads(got[0])["up"] is True
        with pytest.raises(RawConflict):
            client.delete(key, 1)
        client.delete(key, 2)
        assert client.get(key) is None
        assert len(client.scan(client.prefix(PORT))) == 4
        # An atomic multi-create with one existing key writes nothing.
        fresh = {**docs[1], "id": "11111111-1111-4111-8111-111111111111", "name": f"{doc['name']}-x"}
        with pytest.raises(RawConflict):
            client.create_many(
                [
                    (client.key(PORT, fresh["id"]), json.dumps(fresh).encode()),
                    (client.key(PORT, str(docs[1]["id"])), json.dumps(docs[1]).encode()),
                ]
            )
        assert client.get(client.key(PORT, fresh["id"])) is None
    finally:
        client.cleanup()
        assert client.scan(client.prefix(PORT)) == []
        client.close()


@pytest.mark.timeout(120)
def test_raw_follower_sees_published_changes(server: tuple[str, str]) -> None:
    kind, url = server
    client = _raw(kind, url, f"raw-follow-{kind}")
    try:
        docs: list[dict[str, Any]] = populate_raw(client, 2)[1]
        doc = docs[0]
        key = client.key(PORT, str(doc["id"]))
        new = {**doc, "external_ids": {**doc["external_ids"], "seq": "7"}}
        if kind == "cassandra":
            with pytest.raises(NotImplementedError):
                client.follower()
            return
        feed = client.follower()
        try:
            assert client.publish(key, json.dumps(new).encode(), 1) == 2
            seen: list[tuple[str, bytes | None]] = []
            for _ in range(20):
                seen += feed.poll(0.5)
                if seen:
                    break
            assert [k for k, _ in seen] == [key]
            value = seen[0][1]
            assert value is not None and json.loads(value)["external_ids"]["seq"] == "7"
            assert feed.poll(0.05) == []
        finally:
            feed.close()
    finally:
        client.cleanup()
        client.close()


@pytest.mark.timeout(240)
def test_bench_reports_ratios_against_the_raw_client(server: tuple[str, str], tmp_path: Path) -> None:
    kind, url = server
    code = main(
        [
            "bench",
            "--sizes",
            "tiny",
            "--backends",
            kind,
            "--urls",
            f"{kind}={url}",
            "--workloads",
            "crud,fanout",
            "--no-plots",
            "--out",
            str(tmp_path),
        ]
    )
    data = json.loads((tmp_path / "bench.json").read_text())
    assert code == 0, data["errors"]
    assert data["backends"][kind]["raw_baseline"] == "yes"
    ratios = {r["workload"]: r["ratio"] for r in data["ratios"]}
    assert CRUD <= set(ratios) and all(ratios[w] > 0 for w in CRUD), ratios
    for m in data["measurements"]:
        assert m["count"] > 0 and m["rate_per_s"] > 0, m
    if kind == "cassandra":
        assert "watch.fanout" not in ratios
        assert "fanout" in data["backends"][kind]["raw_unsupported"]
    else:
        assert ratios["watch.fanout"] > 0
        assert "raw_unsupported" not in data["backends"][kind]


@pytest.mark.timeout(60)
def test_a_group_a_raw_client_cannot_do_is_no_baseline_not_an_error() -> None:
    def nbdb_side(target: Any, sizes: Any, **_: Any) -> list[Measurement]:
        return [Measurement("read.get", target.name, "nbdb", 1, 1000)]

    def raw_side(target: Any, sizes: Any, **_: Any) -> list[Measurement]:
        raise NotImplementedError("nothing raw does this")

    group = Group("probe", nbdb_side, raw_side, lambda _: [{}])
    result = run_bench(["memory"], SIZES["tiny"], groups=[group])
    assert result.errors == []
    assert result.backends["memory"]["raw_unsupported"] == {"probe": "nothing raw does this"}
    assert [m.impl for m in result.measurements] == ["nbdb"]


@pytest.mark.timeout(120)
def test_sqlite_needs_no_url_and_leaves_no_file_behind() -> None:
    crud = [group for group in GROUPS if group.name == "crud"]
    result = run_bench(["sqlite"], SIZES["tiny"], groups=crud)
    assert result.errors == []
    info = result.backends["sqlite"]
    assert info["status"] == "ok" and info["raw_baseline"] == "yes"
    assert {m.impl for m in result.measurements} == {"nbdb", "raw"}
    assert not Path(info["url"].removeprefix("sqlite://")).parent.exists(), "the temporary file is removed"
