"""A transaction's deletes drop weak references exactly as the same deletes made one by one do."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nbdb
from nbdb import errors
from nbdb.models import LogicalSwitch, LogicalSwitchPort, PortGroup
from nbdb.writes import put_of

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


@pytest.mark.parametrize("url", ["memory://", "sqlite://"])
def test_an_owners_plain_delete_lists_its_referrers_once_and_reads_them_again_after_a_refusal(url: str) -> None:
    # A switch owns its forwarding groups: a plain delete of one plans before the store sees it (one
    # listing of the switch's referrers), and a refusal (for a port) weighs the port as read after it
    # (the walk's copy, from before the commit, may be stale), without listing it again. The groups it
    # takes along are not listed: no model holds one weakly or owns one, so their referrers are the store's
    # to refuse.
    from nbdb.models.ovn import ForwardingGroup

    with nbdb.connect(url) as db:
        sw = db.create(LogicalSwitch(name="sw"))
        port = db.create(LogicalSwitchPort(switch=sw, name="p"))
        asked, reads = _referrers_asked(db), _reads(db)
        with pytest.raises(nbdb.ReferenceError, match=str(port.id)):
            db.delete(sw)
        switch = (LogicalSwitch.nbdb_table, sw.id)
        assert asked == [(switch,)] and reads[(LogicalSwitchPort.nbdb_table, port.id)] == 2, (asked, reads)
        assert db.get(LogicalSwitchPort, port.id) == port  # refused
        db.delete(port)
        fg = ForwardingGroup(switch=sw, name="fg", vip="10.0.0.9", vmac="0a:00:00:00:00:09", child_port=["p"])
        db.create(fg)
        asked.clear()
        db.delete(sw)
        assert db.list(LogicalSwitch) == [] and db.list(ForwardingGroup) == []
        assert asked == [(switch,)]  # the switch's referrers only


def _reads(db: nbdb.Database) -> Counter[tuple[str, object]]:
    """The objects read through ``db``'s backend from now on (``read`` and ``read_many``), each with its count."""
    backend = db.backend
    reads: Counter[tuple[str, object]] = Counter()
    real_many, real_read = backend.read_many, backend.read
    inside = [0]  # read_many calls read on memory:// (the SPI's default): counted once

    def read_many(keys):  # type: ignore[no-untyped-def]
        reads.update(keys)
        inside[0] += 1
        try:
            return real_many(keys)
        finally:
            inside[0] -= 1

    def read(table, id):  # type: ignore[no-untyped-def]
        if not inside[0]:
            reads[(table, id)] += 1
        return real_read(table, id)

    backend.read_many = read_many  # type: ignore[method-assign]
    backend.read = read  # type: ignore[method-assign]
    return reads


@pytest.mark.parametrize("in_transaction", [False, True])
@pytest.mark.parametrize("url", ["memory://", "sqlite://"])
def test_an_owners_refused_delete_lists_and_reads_each_referrer_once(url: str, in_transaction: bool) -> None:
    # A router port owns its gateway chassis, and a NAT rule names it weakly: a plain delete lists the
    # port's referrers and reads the three before it commits once, and so does a transaction's delete now
    # (it was sent alone, refused naming all three, and planned from them as read there: no listing, but
    # two commits). A transaction's walk for the owned objects once listed the port's referrers again (and
    # the plan of the weak drops once more); weighing the refusal read the three, and the walk planning
    # the delete read them again (twice each). Neither lists the chassis' referrers: no model holds one
    # weakly or owns one.
    from nbdb.models import NAT, GatewayChassis, LogicalRouter, LogicalRouterPort

    with nbdb.connect(url) as db:
        router = db.create(LogicalRouter(name="r"))
        port = db.create(LogicalRouterPort(router=router, name="p", mac="0a:00:00:00:00:01", networks=["10.0.0.1/24"]))
        gws = [db.create(GatewayChassis(port=port, name=f"gw{i}", chassis_name=f"ch{i}")) for i in range(2)]
        nat = db.create(
            NAT(router=router, type="snat", external_ip="172.16.0.1", logical_ip="10.0.0.0/24", gateway_port=port.id)
        )
        asked, reads = _referrers_asked(db), _reads(db)
        if in_transaction:
            with db.transaction() as txn:
                txn.delete(port)
        else:
            db.delete(port)
        named = [(NAT.nbdb_table, nat.id), *((GatewayChassis.nbdb_table, gw.id) for gw in gws)]
        assert {key: reads[key] for key in named} == dict.fromkeys(named, 1), reads
        assert asked == [((LogicalRouterPort.nbdb_table, port.id),)], asked
        assert db.list(GatewayChassis) == [] and db.list(LogicalRouterPort) == []
        assert db.get(NAT, nat.id).gateway_port is None


@pytest.mark.parametrize("url", ["memory://", "sqlite://"])
def test_a_transaction_deleting_a_switch_keeps_a_group_it_moves_to_another(url: str) -> None:
    # The store refused the switch's delete for the group the transaction leaves on it, naming only the
    # groups still its own once the transaction's writes are applied. The walk, which lists the switch's
    # groups as stored, took the group the transaction moves to another switch along with the switch
    # (its result None), where without the other group the commit kept it, moved: the outcome hung on an
    # unrelated sibling. Ownership is planned from the transaction's written copies, as ovsdb-server keeps
    # a row another row references after the commit: the group moved stays, the one left goes.
    from nbdb.models.ovn import ForwardingGroup

    with nbdb.connect(url) as db:
        sw, other = db.create(LogicalSwitch(name="sw")), db.create(LogicalSwitch(name="other"))
        moved, _left = (
            db.create(ForwardingGroup(switch=sw, name=n, vip="10.0.0.9", vmac="0a:00:00:00:00:09", child_port=["p"]))
            for n in ("moved", "left")
        )
        with db.transaction() as txn:
            txn.delete(sw)
            txn.update(moved.replace(switch=other.id))
        assert txn.results[1] == db.get(ForwardingGroup, moved.id) and txn.results[1].switch == other.id
        assert [g.name for g in db.list(ForwardingGroup)] == ["moved"]
        assert [s.name for s in db.list(LogicalSwitch)] == ["other"]


@pytest.mark.parametrize("url", ["memory://", "sqlite://"])
def test_a_transaction_whose_planned_drops_were_refused_walks_the_stored_referrers_again(url: str) -> None:
    # The store refused the port's delete for a group (g1): its drop was planned; another writer put the
    # port in a second group (g2) before that commit, which the store refused naming g2 alone (g1's drop
    # was in the commit). A plan from the named referrers only drops g2's, and the next commit is refused
    # for g1 again (nothing was applied): the plans alternate until the transaction gives up.
    with nbdb.connect(url) as db:
        sw = db.create(LogicalSwitch(name="sw"))
        port = db.create(LogicalSwitchPort(switch=sw, name="p"))
        g1 = db.create(PortGroup(name="g1", ports=[port.id]))
        g2 = db.create(PortGroup(name="g2"))
        backend = db.backend
        real = backend.commit
        calls = [0]

        def commit(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls[0] += 1
            if calls[0] == 2:  # the transaction's second try, which drops g1's reference: g2 gains the port
                real([put_of(g2.replace(ports=[port.id]), g2.version)[0]])
            return real(*args, **kwargs)

        backend.commit = commit  # type: ignore[method-assign]
        try:
            with db.transaction() as txn:
                txn.delete(port)
        finally:
            del backend.commit
        assert db.list(LogicalSwitchPort) == []
        assert db.get(PortGroup, g1.id).ports == [] and db.get(PortGroup, g2.id).ports == []


def _delete_port(db: nbdb.Database, port: LogicalSwitchPort, in_transaction: bool) -> None:
    if in_transaction:
        with db.transaction() as txn:
            txn.delete(port)
    else:
        db.delete(port)


def _delete_while_another_writer_moves_it(
    db: nbdb.Database, port: LogicalSwitchPort, in_transaction: bool, *groups: PortGroup
) -> None:
    """Delete ``port`` while another writer stores ``groups`` (as given) before the first read after the
    store's refusal: the refusal's read of the referrers it named."""
    backend = db.backend
    real = backend.read_many
    moved = [False]

    def read_many(keys):  # type: ignore[no-untyped-def]
        if not moved[0]:  # the refusal's read: the other writer moved the port first
            moved[0] = True
            backend.commit([put_of(group, db.get(PortGroup, group.id).version)[0] for group in groups])
        return real(keys)

    backend.read_many = read_many  # type: ignore[method-assign]
    try:
        _delete_port(db, port, in_transaction)
    finally:
        del backend.read_many
    assert moved[0]


@pytest.mark.parametrize("elsewhere", [True, False])
@pytest.mark.parametrize("in_transaction", [False, True])
@pytest.mark.parametrize("url", ["memory://", "sqlite://"])
def test_a_delete_whose_named_referrer_let_go_meanwhile_drops_the_new_one(
    url: str, in_transaction: bool, elsewhere: bool
) -> None:
    # The store refused the port's delete naming g1; before the refusal was weighed, another writer moved
    # the port from g1 to g2. The plan from the named referrers (g1, which no longer holds it) is the
    # delete alone, which the store refuses again, naming g2, a weak referrer the delete can drop.
    # Not ``elsewhere``: the other writer took the port out of g1 alone; a walk afresh finds no referrer,
    # and the delete alone, the very plan refused, is what the store now takes (a transaction weighed it
    # against the refused plan, and the stale refusal raised).
    with nbdb.connect(url) as db:
        sw = db.create(LogicalSwitch(name="sw"))
        port = db.create(LogicalSwitchPort(switch=sw, name="p"))
        g1 = db.create(PortGroup(name="g1", ports=[port.id]))
        g2 = db.create(PortGroup(name="g2"))
        moved = [g1.replace(ports=[]), g2.replace(ports=[port.id])] if elsewhere else [g1.replace(ports=[])]
        _delete_while_another_writer_moves_it(db, port, in_transaction, *moved)
        assert db.list(LogicalSwitchPort) == []
        assert db.get(PortGroup, g1.id).ports == [] and db.get(PortGroup, g2.id).ports == []


@pytest.mark.parametrize("in_transaction", [False, True])
@pytest.mark.parametrize("url", ["memory://", "sqlite://"])
def test_a_store_naming_a_referrer_that_does_not_hold_the_target_ends_in_a_typed_error(
    url: str, in_transaction: bool
) -> None:
    # A stale refusal is walked afresh without weighing the plan against the refused one; a store that
    # names, every time, a group that does not hold the port (a damaged referrer index, injected here)
    # ends at the second such refusal in its own ReferenceError (it ended in a ConflictError, "try again",
    # after 50 rounds of listing and reading), with nothing deleted.
    with nbdb.connect(url) as db:
        sw = db.create(LogicalSwitch(name="sw"))
        port = db.create(LogicalSwitchPort(switch=sw, name="p"))
        group = db.create(PortGroup(name="g"))
        backend = db.backend
        real = backend.commit
        target = (LogicalSwitchPort.nbdb_table, port.id)
        calls = [0]

        def commit(ops, *args, **kwargs):  # type: ignore[no-untyped-def]
            if any((op.table, op.id) == target for op in ops):
                calls[0] += 1
                raise errors.ReferenceError("refused", target=target, referrers=((PortGroup.nbdb_table, group.id),))
            return real(ops, *args, **kwargs)

        backend.commit = commit  # type: ignore[method-assign]
        try:
            with pytest.raises(errors.ReferenceError) as refused:
                _delete_port(db, port, in_transaction)
        finally:
            del backend.commit
        assert refused.value.referrers == ((PortGroup.nbdb_table, group.id),)
        assert calls[0] == 2  # the stale refusal walked afresh once, then the same one again: it stands
        assert [p.name for p in db.list(LogicalSwitchPort)] == ["p"]
