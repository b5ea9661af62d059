"""OVN interop of ``may_exist``: a port name held on another switch is refused, as ovn-nbctl refuses it."""

from __future__ import annotations

import pytest

import nbdb
from nbdb.models import LogicalSwitch, LogicalSwitchPort

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("in_transaction", [False, True])
def test_lsp_add_may_exist_refuses_a_port_of_another_switch(in_transaction: bool) -> None:
    # ovn-nbctl lsp-add sw2 p1 --may-exist: "lsp p1 already exists on another switch" (ovsdbapp's
    # lsp_add(may_exist=True) raises too); nbdb returned sw1's port as if it were sw2's.
    with nbdb.connect("memory://") as db:
        sw1, sw2 = db.create(LogicalSwitch(name="sw1")), db.create(LogicalSwitch(name="sw2"))
        p1 = db.create(LogicalSwitchPort(switch=sw1, name="p1"))
        assert db.create(LogicalSwitchPort(switch=sw1, name="p1"), may_exist=True) == p1
        with pytest.raises(nbdb.UniqueViolationError) as caught:
            if in_transaction:
                with db.transaction() as txn:
                    txn.create(LogicalSwitchPort(switch=sw2, name="p1"), may_exist=True)
            else:
                db.create(LogicalSwitchPort(switch=sw2, name="p1"), may_exist=True)
        error = caught.value
        assert (error.field, error.value, error.existing) == ("name", "p1", p1.id)
        assert str(sw1.id) in str(error) and str(sw2.id) in str(error)
        assert [(p.name, p.switch) for p in db.list(LogicalSwitchPort)] == [("p1", sw1.id)]
