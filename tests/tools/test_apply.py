"""The applier's accounting and ordering, on backends of atomic transactions (memory, sqlite).

- A group holding an object that moved topic was left early inside its transaction, which then committed the
  writes staged before it: unrecorded, they were settled again one by one (conflict, re-read) and not counted,
  so ``writes`` and ``on_write`` came out low.
- A port deleted and re-created with its name, a port group moved from the old port to the new: the group's
  stored copy still referenced the old port, which then could not be deleted first, and the apply stopped
  with UniqueViolationError.
- An object the destination refuses: the error did not say which.
- A limit on writes (``nbdb copy --limit N``) was exceeded by an object that moved topic (a delete and a
  create, two writes): by one for each such object in the last group.
"""

from __future__ import annotations

import uuid

import pytest

import nbdb
from nbdb.models import LogicalSwitch, LogicalSwitchPort, Model, PortGroup
from nbdb.tools.apply import Applier, WriteLimitReached
from nbdb.tools.order import key_of

pytestmark = pytest.mark.timeout(60)

URLS = ["memory://", "sqlite://"]


def _revision(db: nbdb.Database) -> int:
    with db.watch([LogicalSwitch, LogicalSwitchPort, PortGroup]) as watch:
        return watch.revision


@pytest.mark.parametrize("url", URLS)
def test_a_group_with_an_object_that_moved_topic_commits_nothing_and_every_write_is_counted(url: str) -> None:
    with nbdb.connect(url) as db:
        # the moved object sorts last in its table: the group stages the six creates before it
        moved = db.create(LogicalSwitch(id=uuid.UUID(int=2**128 - 1), name="a", topic="t1"))
        news = [LogicalSwitch(id=uuid.UUID(int=i + 1), name=f"n{i}", topic="t1") for i in range(6)]
        wanted = {key_of(o): o for o in news} | {key_of(moved): moved.replace(topic="t2")}
        counted: list[int] = []
        applier = Applier(db, {key_of(moved): moved}, on_write=counted.append)
        before = _revision(db)
        assert applier.apply(wanted) == 8  # six creates, and a delete and a create for the id that moved topic
        assert applier.writes == sum(counted) == 8
        assert _revision(db) - before == 8  # one commit per object: the failed group committed nothing
        assert {(s.name, s.topic) for s in db.list(LogicalSwitch)} == {(f"n{i}", "t1") for i in range(6)} | {
            ("a", "t2")
        }


@pytest.mark.parametrize("url", URLS)
def test_a_port_re_created_with_its_name_and_a_group_moved_onto_it_is_applied(url: str) -> None:
    with nbdb.connect(url) as db:
        sw = db.create(LogicalSwitch(name="sw"))
        old = db.create(LogicalSwitchPort(switch=sw, name="p"))
        pg = db.create(PortGroup(name="pg", ports=[old.id]))
        new = LogicalSwitchPort(switch=sw, name="p")
        applier = Applier(db, {key_of(o): o for o in (sw, old, pg)})
        applier.apply({key_of(old): None, key_of(new): new, key_of(pg): pg.replace(ports=[new.id])})
        assert [p.id for p in db.list(LogicalSwitchPort)] == [new.id]
        assert db.get(PortGroup, pg.id).ports == [new.id]
        assert {key: obj.ref_keys() for key, obj in applier.state.items()} == {
            key_of(o): o.ref_keys() for o in db.list(LogicalSwitch) + db.list(LogicalSwitchPort) + db.list(PortGroup)
        }


@pytest.mark.parametrize("url", URLS)
def test_a_name_held_by_an_object_that_stays_is_refused_with_nothing_freed(url: str) -> None:
    # The port group would be written without the old port, and the old port deleted, to no avail: the name
    # the new port takes belongs to a port that stays.
    with nbdb.connect(url) as db:
        sw = db.create(LogicalSwitch(name="sw"))
        old = db.create(LogicalSwitchPort(switch=sw, name="p"))
        db.create(LogicalSwitchPort(switch=sw, name="q"))
        pg = db.create(PortGroup(name="pg", ports=[old.id]))
        new = LogicalSwitchPort(switch=sw, name="q")
        applier = Applier(db, {key_of(o): o for o in db.list(LogicalSwitch) + db.list(LogicalSwitchPort) + [pg]})
        with pytest.raises(nbdb.UniqueViolationError):
            applier.apply({key_of(old): None, key_of(new): new, key_of(pg): pg.replace(ports=[new.id])})
        assert applier.writes == 0
        assert db.get(PortGroup, pg.id).ports == [old.id]
        assert sorted(p.name for p in db.list(LogicalSwitchPort)) == ["p", "q"]


@pytest.mark.parametrize("url", URLS)
def test_an_object_the_destination_refuses_is_named(url: str) -> None:
    # The destination's message ("ttl must be a positive ...") did not say which of the copy's objects it was.
    ok, bad = LogicalSwitch(name="ok"), LogicalSwitch(name="bad")
    with nbdb.connect(url) as db:
        applier = Applier(db, ttls={key_of(bad): -1.0})
        with pytest.raises(nbdb.ValidationError, match=f"LogicalSwitch {bad.id}: ttl must be"):
            applier.apply({key_of(ok): ok, key_of(bad): bad})


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("limit", [1, 7])
def test_a_limit_is_never_exceeded_by_an_object_that_moved_topic(url: str, limit: int) -> None:
    # limit 7: six creates, then the move's delete; limit 1: the move comes first (its id sorts first).
    with nbdb.connect(url) as db:
        moved = db.create(LogicalSwitch(id=uuid.UUID(int=2**128 - 1 if limit == 7 else 0), name="a", topic="t1"))
        news = [LogicalSwitch(id=uuid.UUID(int=i + 1), name=f"n{i}", topic="t1") for i in range(6)]
        wanted = {key_of(o): o for o in news} | {key_of(moved): moved.replace(topic="t2")}
        before = _revision(db)
        applier = Applier(db, {key_of(moved): moved}, limit=limit)
        with pytest.raises(WriteLimitReached):
            applier.apply(wanted)
        assert applier.writes == limit
        assert _revision(db) - before == limit
        runs = 1
        while True:  # run again until done, as a copy stopped by --limit is resumed: every run makes progress
            state = {key_of(o): o for o in db.list(LogicalSwitch)}
            applier = Applier(db, state, limit=limit)
            runs += 1
            try:
                applier.apply(wanted)
                break
            except WriteLimitReached:
                assert applier.writes == limit
            assert runs <= 8
        assert _revision(db) - before == 8
        assert {(s.name, s.topic) for s in db.list(LogicalSwitch)} == {(f"n{i}", "t1") for i in range(6)} | {
            ("a", "t2")
        }


@pytest.mark.parametrize("url", URLS)
def test_the_update_moving_a_doomed_owner_s_last_owned_object_away_is_one_unit_with_its_delete(url: str) -> None:
    # The puts go before the deletes: the band's update alone left its meter without a band (OVSDB refuses
    # it, tests/backends/test_ovn_interop_meters.py). Its meter's delete (and the meter's other doomed band)
    # now follows it in one unit.
    from nbdb.models import Meter, MeterBand

    with nbdb.connect(url) as db:
        m1, m2 = Meter(name="m1", unit="kbps"), Meter(name="m2", unit="kbps")
        b1, b2, b3 = (MeterBand(meter=m.id, rate=r) for m, r in ((m1, 1), (m2, 2), (m1, 3)))
        applier = Applier(db)
        applier.apply({key_of(o): o for o in [m1, m2, b1, b2, b3]})
        moved = b1.replace(meter=m2.id)
        wanted: dict[tuple[str, uuid.UUID], Model | None] = {key_of(m1): None, key_of(b3): None, key_of(b1): moved}
        ops = applier._owners_left([(key_of(b1), moved)], [applier.state[key_of(m1)], applier.state[key_of(b3)]])
        assert ops == [(key_of(b1), moved), (key_of(b3), None), (key_of(m1), None)]
        assert applier._units(ops) == [ops]
        assert Applier(db, applier.state, limit=1).apply(wanted) == 3
        assert [m.name for m in db.list(Meter)] == ["m2"] and {b.id for b in db.list(MeterBand)} == {b1.id, b2.id}


@pytest.mark.parametrize("url", URLS)
def test_a_doomed_owner_another_object_references_is_left_to_the_deletes(url: str) -> None:
    # A health check moves from lb1 (deleted) to lb2, and a switch still references lb1 in the destination:
    # lb1's delete does not join the check's update (a unit before the switch's own update let go of it),
    # it waits for the deletes, which go after every put, its referrer's update among them.
    from nbdb.models import LoadBalancer, LoadBalancerHealthCheck

    with nbdb.connect(url) as db:
        lb1 = LoadBalancer(name="lb1", vips={"10.0.0.1:80": "10.0.1.1:80"})
        lb2 = LoadBalancer(name="lb2", vips={"10.0.0.2:80": "10.0.1.2:80"})
        check = LoadBalancerHealthCheck(load_balancer=lb1.id, vip="10.0.0.1:80")
        sw = LogicalSwitch(name="sw", load_balancer=[lb1.id])
        applier = Applier(db)
        applier.apply({key_of(o): o for o in [lb1, lb2, check, sw]})
        moved = check.replace(load_balancer=lb2.id, vip="10.0.0.2:80")
        let_go = sw.replace(load_balancer=[lb2.id])
        puts = [(key_of(check), moved), (key_of(sw), let_go)]
        assert applier._owners_left(puts, [applier.state[key_of(lb1)]]) == puts  # no delete joins the puts
        wanted: dict[tuple[str, uuid.UUID], Model | None] = {key_of(lb1): None, **dict(puts)}
        assert Applier(db, applier.state).apply(wanted) == 3
        assert [lb.name for lb in db.list(LoadBalancer)] == ["lb2"]
        assert db.get(LoadBalancerHealthCheck, check.id).load_balancer == lb2.id
        assert db.get(LogicalSwitch, sw.id).load_balancer == [lb2.id]
