"""Within one revision, subscribers and watches never see a reference to an object that is gone (or not there yet).

A ``cascade=True`` delete of a switch delivered the switch's deletion before its ports' and before the port
group's update that cleared them; the order changed from one store to the other.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.events import ChangeEvent, EventKind, in_commit_order
from nbdb.models import LogicalSwitch, LogicalSwitchPort, PortGroup

pytestmark = pytest.mark.timeout(60)

_MODELS = [LogicalSwitch, LogicalSwitchPort, PortGroup]
_Key = tuple[str, uuid.UUID]


def _replay_never_dangles(start: Iterable[Any], events: Iterable[ChangeEvent[Any]]) -> dict[_Key, Any]:
    """Apply ``events`` to ``start`` one by one; fail at the first that leaves a reference to a missing object."""
    state = {(o.nbdb_table, o.id): o for o in start}
    for n, event in enumerate(events):
        key = (event.model.nbdb_table, event.id)
        if event.kind is EventKind.DELETED:
            state.pop(key, None)
        else:
            state[key] = event.new
        for obj in state.values():
            missing = [ref for ref in obj.ref_keys() if ref not in state]
            assert not missing, (
                f"after event {n} ({event.kind} {key[0]}), {obj.nbdb_table} {obj.name} points to {missing}"
            )
    return state


def _deliveries(
    db: nbdb.Database, act: Callable[[], int]
) -> tuple[list[Any], list[ChangeEvent[Any]], list[ChangeEvent[Any]]]:
    """What the cache held before ``act``, and the events of its revision a subscriber and a watch got."""
    with db.cache(_MODELS) as cache:
        assert cache.wait_synced(10)
        before, _ = cache.snapshot()
        got: list[ChangeEvent[Any]] = []
        cache.subscribe(got.append)
        with db.watch(_MODELS) as watch:
            revision = act()
            assert cache.wait_for(revision, 10)
            watched: list[ChangeEvent[Any]] = []
            deadline = time.monotonic() + 10
            while not any(e.revision == revision for e in watched) and time.monotonic() < deadline:
                watched += watch.poll(0.2)
        deadline = time.monotonic() + 10
        while sum(e.revision == revision for e in got) < sum(e.revision == revision for e in watched):
            assert time.monotonic() < deadline, "the subscriber did not get the commit"
            time.sleep(0.01)
    return before, [e for e in got if e.revision == revision], [e for e in watched if e.revision == revision]


def test_a_cascading_delete_clears_and_deletes_referrers_before_what_they_point_to(store_db: nbdb.Database) -> None:
    db = store_db
    sw = db.create(LogicalSwitch(name="sw"))
    ports = [db.create(LogicalSwitchPort(switch=sw, name=f"p{i}")) for i in range(3)]
    db.create(PortGroup(name="pg", ports=[p.id for p in ports]))
    before, got, watched = _deliveries(db, lambda: db.delete(sw, cascade=True))
    assert len(got) == len(watched) == 5
    for events in (got, watched):
        state = _replay_never_dangles(before, events)
        assert {k[0] for k in state} == {"PortGroup"}
        assert [e.kind for e in events] == [EventKind.UPDATED] + [EventKind.DELETED] * 4


def test_one_transaction_creates_what_is_referenced_first(store_db: nbdb.Database) -> None:
    db = store_db
    sw = LogicalSwitch(name="sw")
    ports = [LogicalSwitchPort(switch=sw, name=f"p{i}") for i in range(3)]
    group = PortGroup(name="pg", ports=[p.id for p in ports])

    def act() -> int:
        with db.transaction() as tx:
            for obj in [group, *reversed(ports), sw]:  # the referrers first, as a caller may write them
                tx.create(obj)
        assert tx.revision is not None
        return tx.revision

    before, got, watched = _deliveries(db, act)
    for events in (got, watched):
        assert len(events) == 5
        _replay_never_dangles(before, events)


_SWITCHES, _PORTS, _GROUPS = 3, 5, 2


@st.composite
def _two_states(draw: st.DrawFn) -> tuple[list[Any], list[ChangeEvent[Any]], dict[_Key, Any]]:
    """A consistent state before and after one commit, the commit's events in any order."""
    ids = [uuid.uuid4() for _ in range(_SWITCHES + _PORTS + _GROUPS)]
    switch_of = [draw(st.integers(0, _SWITCHES - 1)) for _ in range(_PORTS)]

    def state(tag: str) -> dict[_Key, Any]:
        switches = {i for i in range(_SWITCHES) if draw(st.booleans())}
        out: dict[_Key, Any] = {}
        for i in switches:
            out[("LogicalSwitch", ids[i])] = LogicalSwitch(id=ids[i], name=f"s{i}{tag}")
        ports = [i for i in range(_PORTS) if switch_of[i] in switches and draw(st.booleans())]
        for i in ports:
            pid = ids[_SWITCHES + i]
            out[("LogicalSwitchPort", pid)] = LogicalSwitchPort(id=pid, switch=ids[switch_of[i]], name=f"p{i}")
        for g in range(_GROUPS):
            if draw(st.booleans()):
                gid = ids[_SWITCHES + _PORTS + g]
                members = [ids[_SWITCHES + i] for i in ports if draw(st.booleans())]
                out[("PortGroup", gid)] = PortGroup(id=gid, name=f"g{g}{tag}", ports=members)
        return out

    before, after = state("a"), state("b")
    model = {"LogicalSwitch": LogicalSwitch, "LogicalSwitchPort": LogicalSwitchPort, "PortGroup": PortGroup}
    events = []
    for key in before.keys() | after.keys():
        old, new = before.get(key), after.get(key)
        kind = EventKind.CREATED if old is None else EventKind.DELETED if new is None else EventKind.UPDATED
        events.append(ChangeEvent(kind, model[key[0]], old, new, 7))
    return list(before.values()), draw(st.permutations(events)), after


@settings(max_examples=300)
@given(_two_states())
def test_any_commit_in_commit_order_never_shows_a_dangling_reference(
    drawn: tuple[list[Any], list[ChangeEvent[Any]], dict[_Key, Any]],
) -> None:
    before, events, after = drawn
    ordered = in_commit_order(events)
    assert sorted(map(id, ordered)) == sorted(map(id, events))  # each event once
    assert _replay_never_dangles(before, ordered) == after
