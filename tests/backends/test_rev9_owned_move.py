"""Reviewer repro (rev9): pre-existing on main, for comparison with the meter case in test_rev9_meters.py."""

from __future__ import annotations

import uuid

import pytest

import nbdb
from nbdb.testing.fixtures import ovsdb_server  # noqa: F401
from nbdb.testing.ovsdb import OvsdbServer

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("kind", ["ovsdb", "memory"])
def test_a_transaction_deleting_a_group_and_moving_one_of_its_ha_chassis_to_another(
    kind: str,
    ovsdb_server: OvsdbServer,  # noqa: F811
) -> None:
    # Pre-existing on main (not the branch's): the same divergence with HA_Chassis.
    from nbdb.models import HAChassis, HAChassisGroup

    s = uuid.uuid4().hex[:8]
    url = ovsdb_server.url if kind == "ovsdb" else f"memory://rev9-{s}"
    with nbdb.connect(url) as d:
        group = d.create(HAChassisGroup(name=f"g-{s}"))
        other = d.create(HAChassisGroup(name=f"o-{s}"))
        moved = d.create(HAChassis(group=group, chassis_name=f"hv-{s}"))
        d.create(HAChassis(group=group, chassis_name=f"hv2-{s}"))  # a second child: the delete is refused first
        with d.transaction() as txn:
            txn.delete(d.get(HAChassisGroup, group.id))
            txn.update(d.get(HAChassis, moved.id).replace(group=other.id))
        assert [c.group for c in d.list(HAChassis) if c.id == moved.id] == [other.id]
