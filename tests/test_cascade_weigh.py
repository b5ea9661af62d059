"""``nbdb.cascade.weigh_refusal``: the one rule by which a plain delete and a transaction weigh a store's refusal
that names every referrer of the target (read them after the refusal; stale twice running, the same ones, stands)."""

from __future__ import annotations

import uuid

import pytest

import nbdb
from nbdb.backends.memory import MemoryBackend
from nbdb.cascade import AFRESH, weigh_refusal
from nbdb.models import LogicalSwitch, LogicalSwitchPort, PortGroup

pytestmark = pytest.mark.timeout(30)


def _refusal(target: tuple[str, uuid.UUID], *referrers: tuple[str, uuid.UUID]) -> nbdb.ReferenceError:
    return nbdb.ReferenceError("refused", target=target, referrers=referrers)


def test_a_refusal_named_by_droppable_referrers_is_weighed_from_them_as_read_now() -> None:
    backend = MemoryBackend()
    with nbdb.Database(backend) as db:
        switch = db.create(LogicalSwitch(name="s"))
        port = db.create(LogicalSwitchPort(switch=switch, name="p"))
        group = db.create(PortGroup(name="g", ports=[port.id]))
        target, holder = (LogicalSwitchPort.nbdb_table, port.id), (PortGroup.nbdb_table, group.id)
        weighed = weigh_refusal(backend, _refusal(target, holder), None)
        assert weighed is not None
        known, stale_named = weighed
        assert stale_named is None and known is not AFRESH
        assert known[target][holder] == db.get(PortGroup, group.id)
        # A strong referrer (the port holds its switch) is one no plan drops: it stands, however named before.
        assert (
            weigh_refusal(
                backend, _refusal((LogicalSwitch.nbdb_table, switch.id), (LogicalSwitchPort.nbdb_table, port.id)), None
            )
            is None
        )


def test_a_stale_refusal_is_planned_afresh_once_and_stands_named_stale_again_by_the_same_referrers() -> None:
    backend = MemoryBackend()
    with nbdb.Database(backend) as db:
        port = db.create(LogicalSwitchPort(switch=db.create(LogicalSwitch(name="s")), name="p"))
        group = db.create(PortGroup(name="g"))  # holds the port no longer (or never): the refusal is stale
        gone = (PortGroup.nbdb_table, uuid.uuid4())
        target = (LogicalSwitchPort.nbdb_table, port.id)
        refusal = _refusal(target, (PortGroup.nbdb_table, group.id), gone)
        named = frozenset(refusal.referrers or ())
        assert weigh_refusal(backend, refusal, None) == (AFRESH, named)
        assert weigh_refusal(backend, refusal, frozenset({gone})) == (AFRESH, named)  # other names: afresh again
        assert weigh_refusal(backend, refusal, named) is None  # the same ones twice running: it stands
        unseen = nbdb.ReferenceError("refused", target=target, referrers=(gone,), unseen=(gone,))
        assert weigh_refusal(backend, unseen, None) is None  # one this Database cannot read: no plan drops it
