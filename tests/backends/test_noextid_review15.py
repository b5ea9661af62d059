"""Review 15 of wip/noextid: compare-and-swap of rows without external_ids (rows.content_stamp)."""

from __future__ import annotations

import uuid

import pytest

import nbdb
from nbdb.models import LoadBalancer, LoadBalancerGroup
from nbdb.testing.fixtures import ovsdb_server  # noqa: F401
from nbdb.testing.ovsdb import OvsdbServer

pytestmark = pytest.mark.timeout(60)


def test_a_stale_transaction_result_of_a_group_used_on_another_connection_is_never_a_lost_update(
    ovsdb_server: OvsdbServer,  # noqa: F811
) -> None:
    # A transaction that puts a group and another row gives its results the commit's token as their stamp
    # (family._written_stamp), which the group's row does not keep: the copy is compared by its version
    # alone, each connection's count. A connection started after another writer changed the group counts
    # that content as version 1, the result's version: the stale result overwrites the change it never saw
    # (semantics.md: a stale copy is a ConflictError, never a lost update).
    s = uuid.uuid4().hex[:8]
    with nbdb.connect(ovsdb_server.url) as one, nbdb.connect(ovsdb_server.url, timeout=19) as two:
        with one.transaction() as txn:
            lb = txn.create(LoadBalancer(name=f"lb-{s}", vips={"10.0.0.8:80": "10.1.0.1:80"}))
            txn.create(LoadBalancerGroup(name=f"g-{s}", load_balancer=[lb.id]))
        stored = txn.results[1]
        assert isinstance(stored, LoadBalancerGroup)
        two.update(two.get(LoadBalancerGroup, stored.id).replace(name=f"b-{s}"))
        with nbdb.connect(ovsdb_server.url, timeout=18) as three:
            assert three.get(LoadBalancerGroup, stored.id).name == f"b-{s}"
            with pytest.raises(nbdb.ConflictError):
                three.update(stored.replace(name=f"c-{s}"))
            assert three.get(LoadBalancerGroup, stored.id).name == f"b-{s}", "b was lost"
