"""A transaction's deletes drop weak references exactly as the same deletes made one by one do."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.models import LogicalSwitch, LogicalSwitchPort, PortGroup

pytestmark = pytest.mark.timeout(60)

_PORTS = 5


def _state(db: nbdb.Database) -> tuple[list[list[str]], list[str]]:
    names = {p.id: p.name for p in db.list(LogicalSwitchPort)}
    groups = sorted(db.list(PortGroup), key=lambda g: g.name)
    return [[names[i] for i in g.ports] for g in groups], sorted(names.values())


@settings(max_examples=40, deadline=None)
@given(
    groups=st.lists(st.lists(st.integers(0, _PORTS - 1), unique=True), min_size=1, max_size=3),
    deleted=st.sets(st.integers(0, _PORTS - 1)),
    update=st.booleans(),
)
def test_a_transaction_s_deletes_drop_weak_references_as_plain_deletes_do(
    groups: list[list[int]], deleted: set[int], update: bool
) -> None:
    """Whatever ports a transaction deletes and whichever groups hold them, the outcome is the plain deletes'.

    With ``update``, the transaction also rewrites the first group keeping all its ports (a description
    change): it is kept, without the ports deleted alongside it.
    """
    outcomes = []
    for in_transaction in (False, True):
        with nbdb.connect("memory://") as db:
            sw = db.create(LogicalSwitch(name="sw"))
            ports = [db.create(LogicalSwitchPort(switch=sw, name=f"p{i}")) for i in range(_PORTS)]
            made = [
                db.create(PortGroup(name=f"g{n}", ports=[ports[i].id for i in members]))
                for n, members in enumerate(groups)
            ]
            if in_transaction:
                with db.transaction() as txn:
                    for i in sorted(deleted):
                        txn.delete(ports[i])
                    if update:
                        txn.update(made[0].replace(external_ids={"touched": "yes"}))
                if update:
                    assert db.get(PortGroup, made[0].id).external_ids == {"touched": "yes"}
            else:
                for i in sorted(deleted):
                    db.delete(ports[i])
            outcomes.append(_state(db))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("url", ["memory://", "sqlite://"])
def test_a_transaction_refused_for_a_dangling_reference_commits_at_most_twice(url: str) -> None:
    """A delete with a weak referrer beside a create pointing at nothing: the store refuses the dangling one.

    The first refusal planned no drops (a plan of none), the second planned them, the third found the
    same plan refused again: three commits and two reads of the referrers before the error. Planning at
    the first refusal tries the drops once; refused again with the same plan, it raises.
    """
    with nbdb.connect(url) as db:
        sw = db.create(LogicalSwitch(name="sw"))
        p1 = db.create(LogicalSwitchPort(switch=sw, name="p1"))
        group = db.create(PortGroup(name="g", ports=[p1.id]))
        backend = db.backend
        commits = 0
        commit = backend.commit

        def counted(*args: object, **kwargs: object) -> object:
            nonlocal commits
            commits += 1
            return commit(*args, **kwargs)  # type: ignore[arg-type]

        backend.commit = counted  # type: ignore[method-assign]  # a count of the real backend's commits
        try:
            with pytest.raises(nbdb.ReferenceError), db.transaction() as txn:
                txn.delete(p1)  # weakly referenced by the group
                txn.create(LogicalSwitchPort(switch=LogicalSwitch(name="nope").id, name="dangling"))
        finally:
            del backend.commit
        assert commits <= 2
        assert db.get(PortGroup, group.id).ports == [p1.id]  # nothing of it was written
        assert db.get(LogicalSwitchPort, p1.id) == p1


def _referrers_asked(db: nbdb.Database) -> list[tuple[tuple[str, object], ...]]:
    """The targets of each ``referrers_of`` read of ``db``'s backend from now on (a count of real reads)."""
    backend = db.backend
    asked: list[tuple[tuple[str, object], ...]] = []
    real = backend.referrers_of

    def referrers_of(keys):  # type: ignore[no-untyped-def]
        asked.append(tuple(sorted(keys)))
        return real(keys)

    backend.referrers_of = referrers_of  # type: ignore[method-assign]
    return asked


def test_a_transaction_refused_for_an_owners_delete_reads_its_referrers_once() -> None:
    # The walk that found the objects a deleted router port owns (its gateway chassis) read the port's
    # referrers; the plan of the weak drops (a NAT rule's gateway_port) then read them all again.
    from nbdb.models import NAT, GatewayChassis, LogicalRouter, LogicalRouterPort

    with nbdb.connect("memory://") as db:
        router = db.create(LogicalRouter(name="r"))
        port = db.create(LogicalRouterPort(router=router, name="p", mac="0a:00:00:00:00:01", networks=["10.0.0.1/24"]))
        gws = [db.create(GatewayChassis(port=port, name=f"gw{i}", chassis_name=f"ch{i}")) for i in range(2)]
        nat = db.create(
            NAT(router=router, type="snat", external_ip="172.16.0.1", logical_ip="10.0.0.0/24", gateway_port=port.id)
        )
        asked = _referrers_asked(db)
        with db.transaction() as txn:
            txn.delete(port)
        assert db.list(GatewayChassis) == [] and db.get(NAT, nat.id).gateway_port is None
        assert len(gws) == 2 and len(asked) == len(set(asked)) == 2, asked  # the port's, then its chassis'


@pytest.mark.parametrize("url", ["memory://", "sqlite://"])
def test_an_owners_plain_delete_walks_from_the_referrers_its_refusal_named(url: str) -> None:
    # A switch owns its forwarding groups: a plain delete of one the store refused (for a port, or for a
    # group it takes along) read the switch's referrers again to plan; the store's refusal named them all.
    from nbdb.models.ovn import ForwardingGroup

    with nbdb.connect(url) as db:
        sw = db.create(LogicalSwitch(name="sw"))
        port = db.create(LogicalSwitchPort(switch=sw, name="p"))
        asked = _referrers_asked(db)
        with pytest.raises(nbdb.ReferenceError, match=str(port.id)):
            db.delete(sw)
        assert asked == [] and db.get(LogicalSwitchPort, port.id) == port  # refused, nothing read again
        db.delete(port)
        fg = ForwardingGroup(switch=sw, name="fg", vip="10.0.0.9", vmac="0a:00:00:00:00:09", child_port=["p"])
        group = db.create(fg)
        db.delete(sw)
        assert db.list(LogicalSwitch) == [] and db.list(ForwardingGroup) == []
        assert asked == [(("ForwardingGroup", group.id),)]  # the group's referrers only: the switch's were named
