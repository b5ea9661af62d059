"""The reference checks of an OVSDB commit plan, whose sets and maps are keyed by (table, id.int).

A check that looks a ``(table, UUID)`` up in a map keyed by ``(table, id.int)`` misses silently:
these name each outcome of those lookups (a target deleted, created or already checked in the
same commit), with ids that are other ``uuid.UUID`` objects than the ones the keys were made from.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from nbdb import errors
from nbdb.families.ovsdb import Replica
from nbdb.families.ovsdb.planner import Plan, plan_commit
from nbdb.families.ovsdb.rows import VersionBook
from nbdb.families.ovsdb.settle import reflects
from nbdb.models import LogicalSwitch, LogicalSwitchPort, PortGroup
from nbdb.spi import ANY_VERSION, Delete
from nbdb.testing.ovsdb_play import server_update
from nbdb.writes import put_of

from .conftest import make_mapping

pytestmark = pytest.mark.timeout(60)


def _twin(id: uuid.UUID) -> uuid.UUID:
    """An equal id, another object (as a caller's copy or a parsed reply holds)."""
    return uuid.UUID(str(id))


@pytest.fixture
def world() -> tuple[Any, Replica, Any]:
    mapping = make_mapping()
    replica = Replica(mapping, VersionBook(), "ns")
    replica.resync(mapping.get(LogicalSwitchPort.nbdb_table).db, {})
    return mapping, replica, mapping.get(LogicalSwitchPort.nbdb_table).db


def _plan(world: tuple[Any, Replica, Any], ops: list[Any]) -> Plan:
    mapping, replica, _db = world
    with replica.cond:
        return plan_commit(mapping, replica, ops, uuid.uuid4().hex[:16], now=time.time())


def _commit(world: tuple[Any, Replica, Any], ops: list[Any]) -> None:
    _mapping, replica, db = world
    plan = _plan(world, ops)
    replica.apply(db, json.loads(json.dumps(server_update(replica, db, plan.ops))))
    with replica.cond:
        assert reflects(plan, replica)


def _targets(plan: Plan) -> list[tuple[str, uuid.UUID]]:
    return [why[1][1] for why in plan.reasons if why[0] == "target"]


def test_a_reference_check_finds_the_targets_its_commit_deletes_creates_or_checked_already(
    world: tuple[Any, Replica, Any],
) -> None:
    switch = LogicalSwitch(name="sw", topic="t")
    _commit(world, [put_of(switch, 0)[0]])
    port = LogicalSwitchPort(switch=switch.id, name="p", topic="t")
    _commit(world, [put_of(port, 0)[0]])
    lsp = LogicalSwitchPort.nbdb_table

    # A new reference to an object the same commit deletes: refused while planning, no round trip.
    group = PortGroup(name="g", ports=[port.id], topic="t")
    with pytest.raises(errors.ReferenceError, match="deleted in the same transaction"):
        _plan(world, [Delete(lsp, _twin(port.id), "t", 1), put_of(group, 0)[0]])
    with pytest.raises(errors.ReferenceError, match="deleted in the same transaction"):
        _plan(world, [put_of(group, 0)[0], Delete(lsp, _twin(port.id), "t", 1)])

    # A target the commit creates needs no wait; one already waited for, no second (each source's
    # targets are checked in the order of the commit's objects).
    fresh = LogicalSwitchPort(switch=switch.id, name="q", topic="t")
    groups = [PortGroup(name=f"g{i}", ports=[_twin(port.id), _twin(fresh.id)], topic="t") for i in range(2)]
    plan = _plan(world, [put_of(fresh, 0)[0], *(put_of(g, 0)[0] for g in groups)])
    assert _targets(plan) == [(LogicalSwitch.nbdb_table, switch.id), (lsp, port.id)]


def test_a_delete_of_an_object_already_gone_plans_no_check_of_its_referrers(world: tuple[Any, Replica, Any]) -> None:
    switch = LogicalSwitch(name="sw", topic="t")
    _commit(world, [put_of(switch, 0)[0]])
    port = LogicalSwitchPort(switch=switch.id, name="p", topic="t")
    _commit(world, [put_of(port, 0)[0]])
    lsp = LogicalSwitchPort.nbdb_table
    _commit(world, [Delete(lsp, port.id, "t", 1)])
    plan = _plan(world, [Delete(lsp, _twin(port.id), "t", ANY_VERSION, if_exists=True)])
    assert plan.skipped == {0} and plan.ops == []
    # Deleted (if it exists) and referenced in one commit: the reference names an object that does not exist.
    group = PortGroup(name="g", ports=[port.id], topic="t")
    plan = _plan(world, [Delete(lsp, _twin(port.id), "t", ANY_VERSION, if_exists=True), put_of(group, 0)[0]])
    assert _targets(plan) == [(lsp, port.id)]
    assert not [why for why in plan.reasons if why[0] in ("referenced", "weakly_referenced")]
