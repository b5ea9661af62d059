"""A plain delete of an owner (``nbdb_owned_by``) takes what it owns along in one commit, on every kind of store.

Sent alone first, the delete was refused for the objects it owns (a meter's bands always hold it), and the
walk that planned them committed a second time: two commits, one of them refused, for every meter deleted.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.models.ovn import ForwardingGroup, LoadBalancer, LoadBalancerHealthCheck, Meter, MeterBand, MeterUnit
from nbdb.testing.fixtures import shared_store

pytestmark = pytest.mark.timeout(120)

KINDS = ["memory", "sqlite", "redis", "ovsdb"]


@pytest.fixture(params=KINDS)
def db(request: pytest.FixtureRequest) -> Iterator[nbdb.Database]:
    """A Database on a fresh store (a new namespace on the session's shared server for a networked kind)."""
    with shared_store(request.param) as database:
        yield database


def _counted(db: nbdb.Database) -> Callable[[], list[list[tuple[str, object]]]]:
    """The ops of each commit of ``db``'s backend from now on (a count of the real store's commits)."""
    backend = db.backend
    commits: list[list[tuple[str, object]]] = []
    real = backend.commit

    def commit(ops, *args, **kwargs):  # type: ignore[no-untyped-def]
        commits.append([(type(op).__name__, op.table) for op in ops])
        return real(ops, *args, **kwargs)

    backend.commit = commit  # type: ignore[method-assign]
    return lambda: commits


def _calls(db: nbdb.Database, name: str) -> list[object]:
    """The arguments of each call of ``db``'s backend method ``name`` from now on."""
    backend = db.backend
    calls: list[object] = []
    real = getattr(backend, name)

    def counted(arg, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(arg)
        return real(arg, *args, **kwargs)

    setattr(backend, name, counted)
    return calls


def _gone(db: nbdb.Database, model: type[nbdb.Model], id: uuid.UUID) -> bool:
    try:
        db.get(model, id)
    except nbdb.NotFoundError:
        return True
    return False


def _meter(db: nbdb.Database, bands: int) -> tuple[Meter, list[MeterBand]]:
    with db.transaction() as txn:  # OVSDB's schema refuses a meter without bands
        meter = Meter(name=f"m-{uuid.uuid4().hex[:8]}", unit=MeterUnit.KBPS)
        txn.create(meter)
        for i in range(bands):
            txn.create(MeterBand(meter=meter.id, rate=100 + i))
    made = txn.results
    return made[0], made[1:]  # type: ignore[return-value]


def test_a_meters_plain_delete_takes_its_bands_in_one_commit(db: nbdb.Database) -> None:
    meter, bands = _meter(db, 2)
    other, kept = _meter(db, 1)
    commits = _counted(db)
    revision = db.delete(meter)
    assert commits() == [[("Delete", "Meter"), ("Delete", "MeterBand"), ("Delete", "MeterBand")]], commits()
    assert revision is not None
    assert _gone(db, Meter, meter.id) and all(_gone(db, MeterBand, b.id) for b in bands)
    assert db.get(Meter, other.id) == other and db.get(MeterBand, kept[0].id) == kept[0]


def test_a_load_balancers_plain_delete_takes_its_health_checks_in_one_commit(db: nbdb.Database) -> None:
    lb = db.create(LoadBalancer(name=f"lb-{uuid.uuid4().hex[:8]}", vips={"10.0.0.1:80": "10.0.1.1:80"}))
    check = db.create(LoadBalancerHealthCheck(load_balancer=lb, vip="10.0.0.1:80"))
    commits = _counted(db)
    db.delete(lb)
    assert len(commits()) == 1, commits()
    assert _gone(db, LoadBalancerHealthCheck, check.id) and _gone(db, LoadBalancer, lb.id)


def test_an_owners_delete_refused_for_a_referrer_it_cannot_take_deletes_nothing(db: nbdb.Database) -> None:
    # A switch owns its forwarding groups, and a port holds it: the store refuses the planned delete,
    # naming every referrer it found (on OVSDB, the replica synced after the refusal, whose rows show no
    # holder it cannot name), and the refusal stands at once: one commit. OVSDB's named none before, and
    # the plan made again came out the same, refused a second time.
    sw = db.create(LogicalSwitch(name=f"sw-{uuid.uuid4().hex[:8]}"))
    port = db.create(LogicalSwitchPort(switch=sw, name=f"p-{uuid.uuid4().hex[:8]}"))
    commits = _counted(db)
    with pytest.raises(nbdb.ReferenceError, match=str(port.id)) as refused:
        db.delete(sw)
    assert len(commits()) == 1, commits()
    assert refused.value.target == (LogicalSwitch.nbdb_table, sw.id)
    assert refused.value.referrers == ((LogicalSwitchPort.nbdb_table, port.id),)
    assert db.get(LogicalSwitch, sw.id) == sw and db.get(LogicalSwitchPort, port.id) == port


def test_a_plain_delete_of_a_non_owner_lists_no_referrers(db: nbdb.Database) -> None:
    # A port is no owner: its delete stays one request, no referrers listed first.
    sw = db.create(LogicalSwitch(name=f"sw-{uuid.uuid4().hex[:8]}"))
    port = db.create(LogicalSwitchPort(switch=sw, name=f"p-{uuid.uuid4().hex[:8]}"))
    listed = _calls(db, "referrers_of")
    commits = _counted(db)
    db.delete(port)
    assert listed == [] and commits() == [[("Delete", "LogicalSwitchPort")]], (listed, commits())


def test_every_meter_delete_is_one_commit(db: nbdb.Database) -> None:
    # A meter's bands always hold it: its delete walks first from the first on, and goes on doing so.
    for _ in range(3):
        meter, bands = _meter(db, 1)
        commits = _counted(db)
        db.delete(meter)
        assert len(commits()) == 1, commits()
        assert _gone(db, Meter, meter.id) and _gone(db, MeterBand, bands[0].id)


def test_a_bare_switchs_delete_lists_no_referrers_once_one_found_none(db: nbdb.Database) -> None:
    # A switch owns its forwarding groups, but most own none (Neutron deletes a network's ports first):
    # once one switch's delete found nothing to take along, the next go alone, one request, as they did
    # before owners walked first (the walk listed the referrers of every bare switch deleted).
    switches = [db.create(LogicalSwitch(name=f"sw-{uuid.uuid4().hex[:8]}")) for _ in range(4)]
    listed, read = _calls(db, "referrers_of"), _calls(db, "read_many")
    commits = _counted(db)
    db.delete(switches[0])
    assert len(commits()) == 1, commits()
    del listed[:], read[:], commits()[:]
    for sw in switches[1:]:
        db.delete(sw)
    assert listed == [] and read == [], (listed, read)
    assert commits() == [[("Delete", "LogicalSwitch")]] * 3, commits()
    assert all(_gone(db, LogicalSwitch, sw.id) for sw in switches)


def _switch(db: nbdb.Database, kind: str) -> tuple[LogicalSwitch, list[nbdb.Model]]:
    """A switch owning nothing ("bare"), a forwarding group ("owner") or held by a port ("held")."""
    sw = db.create(LogicalSwitch(name=f"sw-{uuid.uuid4().hex[:8]}"))
    if kind == "owner":
        group = ForwardingGroup(
            switch=sw.id, name=f"fg-{uuid.uuid4().hex[:8]}", vip="10.0.0.1", vmac="00:00:00:00:00:01", child_port=["p"]
        )
        return sw, [db.create(group)]
    if kind == "held":
        return sw, [db.create(LogicalSwitchPort(switch=sw, name=f"p-{uuid.uuid4().hex[:8]}"))]
    return sw, []


def _delete_switch(db: nbdb.Database, kind: str) -> int:
    """Delete a new switch of ``kind`` (see :func:`_switch`), check the outcome, return its commits."""
    sw, children = _switch(db, kind)
    commits = _counted(db)
    if kind == "held":
        with pytest.raises(nbdb.ReferenceError):
            db.delete(sw)
        assert db.get(LogicalSwitch, sw.id) == sw and db.get(LogicalSwitchPort, children[0].id) == children[0]
        db.delete(children[0])
        db.delete(sw)  # gone with its port: bare
    else:
        db.delete(sw)
        assert all(_gone(db, type(c), c.id) for c in children)
    assert _gone(db, LogicalSwitch, sw.id)
    return len(commits())


def test_alternating_switch_deletes_each_end_as_alone_and_commit_at_most_twice(db: nbdb.Database) -> None:
    # The order of work follows the table's last delete; the outcome never does. A switch owning a group
    # after a bare one is refused alone, then planned (two commits, as before owners walked first); the
    # next such is one commit; a bare one after it walks, finds nothing, and commits once.
    owner = _delete_switch(db, "owner")
    assert owner == 1
    assert _delete_switch(db, "bare") == 1
    assert _delete_switch(db, "owner") == 2
    assert _delete_switch(db, "owner") == 1
    assert _delete_switch(db, "bare") == 1
    assert _delete_switch(db, "bare") == 1
    _delete_switch(db, "held")
    assert _delete_switch(db, "owner") == 2
    # Meters keep their own order: a bare switch's does not make a meter's delete go alone.
    meter, _ = _meter(db, 1)
    commits = _counted(db)
    db.delete(meter)
    assert len(commits()) == 1, commits()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.sampled_from(["bare", "owner", "held"]), min_size=1, max_size=6))
def test_any_order_of_switch_deletes_ends_as_each_alone(kinds: list[str]) -> None:
    with nbdb.connect("memory://") as db:
        for kind in kinds:
            assert 1 <= _delete_switch(db, kind) <= (3 if kind == "held" else 2)


# ---------------------------------------------------------------- deletes queued in a transaction


def test_a_transactions_delete_of_a_meter_takes_its_bands_in_one_commit(db: nbdb.Database) -> None:
    # Queued in a transaction, the meter's delete was sent alone, refused for its bands, and committed again
    # once the walk had planned them: two commits. It walks first, as the plain delete does.
    meter, bands = _meter(db, 2)
    other, kept = _meter(db, 1)
    commits = _counted(db)
    with db.transaction() as txn:
        txn.delete(meter)
    assert commits() == [[("Delete", "Meter"), ("Delete", "MeterBand"), ("Delete", "MeterBand")]], commits()
    assert txn.results == [None] and txn.revision is not None
    assert _gone(db, Meter, meter.id) and all(_gone(db, MeterBand, b.id) for b in bands)
    assert db.get(Meter, other.id) == other and db.get(MeterBand, kept[0].id) == kept[0]


def test_a_transactions_update_of_a_band_its_meter_delete_takes_is_its_delete_in_one_commit(
    db: nbdb.Database,
) -> None:
    # The walk before the first commit makes the transaction's own write of an owned object its delete, as
    # the walk after a refusal did; the update beside it commits with them.
    meter, bands = _meter(db, 2)
    sw = db.create(LogicalSwitch(name=f"sw-{uuid.uuid4().hex[:8]}"))
    commits = _counted(db)
    with db.transaction() as txn:
        txn.update(bands[0].replace(rate=999))
        txn.delete(meter)
        txn.update(sw.replace(other_config={"k": "v"}))
    assert len(commits()) == 1, commits()
    assert txn.results[:2] == [None, None] and txn.results[2] is not None
    assert _gone(db, Meter, meter.id) and all(_gone(db, MeterBand, b.id) for b in bands)
    assert db.get(LogicalSwitch, sw.id).other_config == {"k": "v"}


def test_a_transactions_owner_deletes_follow_the_plain_deletes_hint(db: nbdb.Database) -> None:
    # One hint per table for both kinds of delete: a bare switch deleted in a transaction after a bare one
    # deleted plainly goes alone (no listing); one owning a group is then refused alone and planned (two
    # commits, as any delete after a bare one), which turns the hint for the next plain delete.
    _delete_switch(db, "bare")
    sw = db.create(LogicalSwitch(name=f"sw-{uuid.uuid4().hex[:8]}"))
    listed, commits = _calls(db, "referrers_of"), _counted(db)
    with db.transaction() as txn:
        txn.delete(sw)
    assert listed == [] and commits() == [[("Delete", "LogicalSwitch")]], (listed, commits())
    owner, (group,) = _switch(db, "owner")
    del commits()[:]
    with db.transaction() as txn:
        txn.delete(owner)
    assert len(commits()) == 2 and _gone(db, LogicalSwitch, owner.id) and _gone(db, ForwardingGroup, group.id)
    assert _delete_switch(db, "owner") == 1


def test_a_port_in_a_port_group_drops_it_in_one_commit_once_the_last_port_delete_had_to(db: nbdb.Database) -> None:
    # A non-owner with weak referrers follows the same rule: a port's delete goes alone first (most are in no
    # group), but once its table's last delete had to drop a weak reference, the next walks first and drops
    # it in one commit, plain or in a transaction; a port in no group then walks, finds nothing, and turns
    # the hint back (the next goes alone, no listing).
    from nbdb.models import PortGroup

    sw = db.create(LogicalSwitch(name=f"sw-{uuid.uuid4().hex[:8]}"))
    ports = [db.create(LogicalSwitchPort(switch=sw, name=f"p{i}-{uuid.uuid4().hex[:8]}")) for i in range(5)]
    group = db.create(PortGroup(name=f"pg_{uuid.uuid4().hex[:8]}", ports=[p.id for p in ports[:3]]))
    commits = _counted(db)
    db.delete(ports[0])
    assert len(commits()) == 2, commits()  # alone, refused for the group; then with the group's drop
    del commits()[:]
    db.delete(ports[1])
    assert len(commits()) == 1, commits()
    del commits()[:]
    with db.transaction() as txn:
        txn.delete(ports[2])
    assert len(commits()) == 1, commits()
    assert db.get(PortGroup, group.id).ports == []
    db.delete(ports[3])  # in no group
    listed = _calls(db, "referrers_of")
    del commits()[:]
    with db.transaction() as txn:
        txn.delete(ports[4])
    assert listed == [] and commits() == [[("Delete", "LogicalSwitchPort")]], (listed, commits())
    assert all(_gone(db, LogicalSwitchPort, p.id) for p in ports)


def _delete_switch_in_transaction(db: nbdb.Database, kind: str) -> int:
    """:func:`_delete_switch` queued in a transaction (a "held" switch's delete is refused, then the port's
    and the switch's go in one)."""
    sw, children = _switch(db, kind)
    commits = _counted(db)
    if kind == "held":
        with pytest.raises(nbdb.ReferenceError), db.transaction() as txn:
            txn.delete(sw)
        assert db.get(LogicalSwitch, sw.id) == sw and db.get(LogicalSwitchPort, children[0].id) == children[0]
        with db.transaction() as txn:
            txn.delete(children[0])
            txn.delete(sw)
    else:
        with db.transaction() as txn:
            txn.delete(sw)
        assert all(_gone(db, type(c), c.id) for c in children)
    assert _gone(db, LogicalSwitch, sw.id)
    return len(commits())


@settings(max_examples=25, deadline=None)
@given(deletes=st.lists(st.tuples(st.sampled_from(["bare", "owner", "held"]), st.booleans()), min_size=1, max_size=6))
def test_any_order_of_plain_and_transaction_switch_deletes_ends_as_each_alone(deletes: list[tuple[str, bool]]) -> None:
    # Whichever kind of delete came last and whatever it took, each ends as alone, in at most two commits.
    with nbdb.connect("memory://") as db:
        for kind, queued in deletes:
            commits = (_delete_switch_in_transaction if queued else _delete_switch)(db, kind)
            assert 1 <= commits <= (3 if kind == "held" else 2)


def test_a_transaction_deleting_a_switch_with_its_port_took_nothing_along(db: nbdb.Database) -> None:
    # The switch's first delete walks and finds its port, which the transaction deletes itself: nothing was
    # taken along or dropped, so the next bare switch's delete goes alone (no listing).
    sw = db.create(LogicalSwitch(name=f"sw-{uuid.uuid4().hex[:8]}"))
    port = db.create(LogicalSwitchPort(switch=sw, name=f"p-{uuid.uuid4().hex[:8]}"))
    commits = _counted(db)
    with db.transaction() as txn:
        txn.delete(port)
        txn.delete(sw)
    assert len(commits()) == 1 and _gone(db, LogicalSwitch, sw.id) and _gone(db, LogicalSwitchPort, port.id)
    bare = db.create(LogicalSwitch(name=f"sw-{uuid.uuid4().hex[:8]}"))
    listed = _calls(db, "referrers_of")
    db.delete(bare)
    assert listed == [] and _gone(db, LogicalSwitch, bare.id), listed


# ---------------------------------------------------------------- review (wip/rev24): the hint orders the work only


def _lrp(db: nbdb.Database, router: object) -> object:
    from nbdb.models import LogicalRouterPort

    return db.create(
        LogicalRouterPort(
            router=router, name=f"lrp-{uuid.uuid4().hex[:8]}", mac="00:00:00:00:00:02", networks=["10.0.0.1/24"]
        )
    )


def _move_gateway_by_name(db: nbdb.Database, may_exist: bool) -> str:
    """A transaction deleting a router port (which owns its gateway chassis) and creating a chassis of the
    same (unique) name on another port: what it ends in, and what is stored after."""
    from nbdb.models import GatewayChassis, LogicalRouter

    router = db.create(LogicalRouter(name=f"r-{uuid.uuid4().hex[:8]}"))
    port, other = _lrp(db, router), _lrp(db, router)
    old = db.create(GatewayChassis(port=port, name=f"gw-{uuid.uuid4().hex[:8]}", chassis_name="c1"))
    try:
        with db.transaction() as txn:
            txn.create(GatewayChassis(port=other, name=old.name, chassis_name="c2"), may_exist=may_exist)
            txn.delete(port)
    except nbdb.NbdbError as exc:
        outcome = type(exc).__name__
    else:
        outcome = "committed"
    stored = sorted((gw.chassis_name, gw.port == other.id) for gw in db.list(GatewayChassis) if gw.name == old.name)
    return f"{outcome} {stored}"


@pytest.mark.parametrize("may_exist", [False, True])
def test_a_transactions_outcome_does_not_depend_on_its_tables_last_delete(db: nbdb.Database, may_exist: bool) -> None:
    # The per-table hint may change the number of commits only. A router port's first delete walks first (no
    # hint yet: its table is an owner's); after a bare port's plain delete it goes alone first. The walk
    # deletes the owned chassis in the first commit, freeing its unique name for the create beside it; sent
    # alone, the store may refuse the create for the name the chassis still holds, before any walk.
    from nbdb.models import LogicalRouter

    first = _move_gateway_by_name(db, may_exist)  # walks first
    router = db.create(LogicalRouter(name=f"r-{uuid.uuid4().hex[:8]}"))
    db.delete(_lrp(db, router))  # a bare port: its walk finds nothing, the next port delete goes alone first
    second = _move_gateway_by_name(db, may_exist)
    assert first == second, (first, second)


@pytest.mark.parametrize("bare_first", [False, True], ids=["no-hint", "after-a-bare-switch"])
@pytest.mark.parametrize("url", ["memory://", "sqlite://"])
def test_a_transactions_owner_delete_refused_for_a_corrupt_referrer_is_the_reference_error(
    url: str, bare_first: bool
) -> None:
    # As the plain delete (tests/test_bad_input_3.py): a switch whose port another writer corrupted is refused
    # by the store for that port, ReferenceError, whether its delete walks first or goes alone first. The walk
    # before the first commit read the corrupt port and raised its CorruptRecordError (the plain delete's walk
    # first lets the store's verdict decide), and only when the hint said walk first.
    with nbdb.connect(url) as db:
        if bare_first:
            db.delete(db.create(LogicalSwitch(name="bare")))  # the next switch delete goes alone first
        switch = db.create(LogicalSwitch(name="sw"))
        port = db.create(LogicalSwitchPort(switch=switch, name="p"))
        db.backend.write_raw(port.nbdb_table, port.id, port.topic, b"not a record")  # type: ignore[attr-defined]
        with pytest.raises(nbdb.ReferenceError, match=str(port.id)), db.transaction() as txn:
            txn.delete(switch)
        assert db.get(LogicalSwitch, switch.id).name == "sw"


# ---------------------------------------------------------------- review (wip/rev26): a named referrer it deletes


@pytest.mark.parametrize("bare_first", [False, True], ids=["no-hint", "after-a-bare-switch"])
def test_a_transaction_deleting_a_switch_its_port_and_taking_its_forwarding_group_commits(
    db: nbdb.Database, bare_first: bool
) -> None:
    # The transaction deletes the port itself; the forwarding group goes with its switch. OVSDB's refusal
    # (sent alone first, after a bare switch's delete) names the port too, read from the replica before the
    # commit: weighed as a referrer the delete can neither drop nor take along, the refusal stood.
    if bare_first:
        db.delete(db.create(LogicalSwitch(name=f"sw-{uuid.uuid4().hex[:8]}")))  # the next switch goes alone first
    sw, (group,) = _switch(db, "owner")
    port = db.create(LogicalSwitchPort(switch=sw, name=f"p-{uuid.uuid4().hex[:8]}"))
    with db.transaction() as txn:
        txn.delete(port)
        txn.delete(sw)
    assert _gone(db, LogicalSwitch, sw.id) and _gone(db, LogicalSwitchPort, port.id)
    assert _gone(db, ForwardingGroup, group.id)


# ---------------------------------------------------------------- review: a refused transaction reads a referrer once


def _read_counts(db: nbdb.Database) -> Callable[[], dict[tuple[str, uuid.UUID], int]]:
    """How often each object is read through ``db``'s backend (``read_many``) from now on."""
    batches = _calls(db, "read_many")

    def counts() -> dict[tuple[str, uuid.UUID], int]:
        found: dict[tuple[str, uuid.UUID], int] = {}
        for batch in batches:
            for key in batch:  # type: ignore[attr-defined]
                found[key] = found.get(key, 0) + 1
        return found

    return counts


def test_a_transactions_owner_delete_refused_for_ports_its_walk_read_reads_them_again_after_the_refusal(
    db: nbdb.Database,
) -> None:
    # A switch's delete walks first (its table is an owner's): the walk lists its referrers and reads its
    # ports, and the store refuses the delete for them. The refusal is weighed from the ports read after it
    # (a copy from before the commit may hold the switch where the store no longer does: see
    # tests/test_txn_refusal_races.py), and it stands without a second listing or commit: two reads a port.
    sw = db.create(LogicalSwitch(name=f"sw-{uuid.uuid4().hex[:8]}"))
    with db.transaction() as txn:
        for i in range(3):
            txn.create(LogicalSwitchPort(switch=sw, name=f"p{i}-{uuid.uuid4().hex[:8]}"))
    ports = txn.results
    listed, reads, commits = _calls(db, "referrers_of"), _read_counts(db), _counted(db)
    with pytest.raises(nbdb.ReferenceError), db.transaction() as refused:
        refused.delete(sw)
    keys = [(LogicalSwitchPort.nbdb_table, p.id) for p in ports]  # type: ignore[union-attr]
    assert {key: reads().get(key) for key in keys} == dict.fromkeys(keys, 2), reads()
    assert len(listed) == 1 and len(commits()) == 1, (listed, commits())
    assert db.get(LogicalSwitch, sw.id) == sw and all(db.get(LogicalSwitchPort, p.id) == p for p in ports)  # type: ignore[union-attr]


def test_a_transactions_owner_delete_sent_alone_beside_an_update_reads_what_it_owns_once(db: nbdb.Database) -> None:
    # After a bare switch's delete, the next goes alone first; this one owns a forwarding group, and the store
    # refuses it naming the group. Weighing the refusal reads the group; the walk that then plans the delete
    # (it lists the switch's referrers again: the transaction updates another object, so the store named
    # those left once its writes are applied) read the group a second time.
    _delete_switch(db, "bare")
    sw, (group,) = _switch(db, "owner")
    other = db.create(LogicalSwitch(name=f"sw-{uuid.uuid4().hex[:8]}"))
    reads, commits = _read_counts(db), _counted(db)
    with db.transaction() as txn:
        txn.delete(sw)
        txn.update(other.replace(other_config={"k": "v"}))
    key = (ForwardingGroup.nbdb_table, group.id)
    assert reads().get(key) == 1 and len(commits()) == 2, (reads(), commits())
    assert _gone(db, LogicalSwitch, sw.id) and _gone(db, ForwardingGroup, group.id)
    assert db.get(LogicalSwitch, other.id).other_config == {"k": "v"}


def test_a_transactions_weakly_held_owner_delete_lists_and_reads_its_referrers_once_after_a_refusal(
    db: nbdb.Database,
) -> None:
    # A load balancer owns its health checks and a switch holds it weakly. After a bare one's delete the next
    # goes alone first, refused for the switch; the walk for the objects it owns (none) listed its referrers
    # and read the switch, then the walk planning the weak drop listed and read them again (the switch three
    # times, the listing twice). Now: the switch is read once, to weigh the refusal, and listed once.
    db.delete(db.create(LoadBalancer(name=f"lb-{uuid.uuid4().hex[:8]}", vips={"10.0.0.1:80": "10.0.1.1:80"})))
    lb = db.create(LoadBalancer(name=f"lb-{uuid.uuid4().hex[:8]}", vips={"10.0.0.1:80": "10.0.1.1:80"}))
    holder = db.create(LogicalSwitch(name=f"sw-{uuid.uuid4().hex[:8]}", load_balancer=[lb.id]))
    other = db.create(LogicalSwitch(name=f"sw-{uuid.uuid4().hex[:8]}"))
    listed, reads, commits = _calls(db, "referrers_of"), _read_counts(db), _counted(db)
    with db.transaction() as txn:
        txn.delete(lb)
        txn.update(other.replace(other_config={"k": "v"}))
    key = (LogicalSwitch.nbdb_table, holder.id)
    assert reads().get(key) == 1 and len(listed) == 1 and len(commits()) == 2, (reads(), listed, commits())
    assert _gone(db, LoadBalancer, lb.id) and db.get(LogicalSwitch, holder.id).load_balancer == []
