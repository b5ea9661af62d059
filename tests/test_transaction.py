"""A transaction's results, whatever mix of writes it queues: the stored copies, in call order.

A plain create or update is queued as its Put (no step object of its own) and
anything else (``may_exist``, deletes, mutations) as a step: the results must
not depend on which, nor on how they are interleaved.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.models import AddressSet, LogicalSwitch, LogicalSwitchPort, PortGroup
from nbdb.writes import changes_in_turn, mutate, mutate_in_turn

pytestmark = pytest.mark.timeout(60)

_KINDS = ["create", "create_may_exist", "create_same_id", "update", "delete", "delete_if_exists", "mutate"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_KINDS), st.integers(0, 3)), min_size=1, max_size=12))
def test_results_are_the_stored_copies_in_call_order(steps: list[tuple[str, int]]) -> None:
    with nbdb.connect("memory://") as db:
        switch = db.create(LogicalSwitch(name="sw"))
        group = db.create(PortGroup(name="pg"))
        stored = {i: db.create(LogicalSwitchPort(switch=switch, name=f"old{i}")) for i in range(4)}
        touched: set[int | str] = set()
        expected: list[Any] = []  # per step: ("read", model, id) to compare with db.get, or None
        with db.transaction() as txn:
            for n, (kind, slot) in enumerate(steps):
                if (slot in touched and kind != "mutate") or (kind == "mutate" and "group" in touched):
                    kind = "create"  # each object is written once (a delete would free its name, too)
                touched.add("group" if kind == "mutate" else slot)
                if kind == "create":
                    planned = txn.create(LogicalSwitchPort(switch=switch, name=f"new{n}"))
                    expected.append(("read", LogicalSwitchPort, planned.id))
                elif kind == "create_may_exist":
                    # The name is taken (by a stored port): the result is that port, however it ends.
                    txn.create(LogicalSwitchPort(switch=switch, name=f"old{slot}"), may_exist=True)
                    expected.append(("taken", slot))
                elif kind == "create_same_id":
                    # Its id is a stored port's (a retried create): the result is that port, as stored.
                    again = LogicalSwitchPort(id=stored[slot].id, switch=switch, name=f"renamed{n}")
                    txn.create(again, may_exist=True)
                    expected.append(("taken", slot))
                elif kind == "mutate":
                    txn.mutate(group, add={"external_ids": {f"k{n}": "v"}})
                    expected.append(("read", PortGroup, group.id))
                elif kind == "update":
                    planned = txn.update(stored[slot].replace(tag=n + 1))
                    expected.append(("read", LogicalSwitchPort, planned.id))
                else:
                    if kind == "delete":
                        txn.delete(stored[slot])
                    else:
                        txn.delete(LogicalSwitchPort, stored[slot].id, if_exists=True)
                    expected.append(None)
        assert len(txn.results) == len(steps)
        assert txn.revision is not None
        for want, got in zip(expected, txn.results, strict=True):
            if want is None:
                assert got is None
            elif want[0] == "taken":
                assert got is not None and got.id == stored[want[1]].id
                assert got == db.get(LogicalSwitchPort, got.id)  # taken as stored, nothing written
            else:
                _, model, uid = want
                assert got == db.get(model, uid)  # the last write of the object is what is stored
        written = [r for (w, r) in zip(expected, txn.results, strict=True) if w is not None and w[0] == "read"]
        for result in written:
            if type(result) is LogicalSwitchPort:
                assert result.nbdb_revision == txn.revision


def test_a_failed_transaction_leaves_no_results_and_nothing_stored() -> None:
    with nbdb.connect("memory://") as db:
        switch = db.create(LogicalSwitch(name="sw"))
        taken = db.create(LogicalSwitchPort(switch=switch, name="taken"))
        with pytest.raises(nbdb.UniqueViolationError), db.transaction() as txn:
            txn.create(LogicalSwitchPort(switch=switch, name="fresh"))
            txn.update(taken.replace(tag=5))
            txn.create(LogicalSwitchPort(switch=switch, name="taken"))
        assert txn.results == []
        assert [p.name for p in db.list(LogicalSwitchPort)] == ["taken"]
        assert db.get(LogicalSwitchPort, taken.id).version == 1


def test_a_transaction_of_updates_is_one_change_for_watchers_and_caches() -> None:
    """A batch of updates keeping references and names (one pass in memory://) reaches a watch and a cache whole."""
    with nbdb.connect("memory://") as db:
        switch = db.create(LogicalSwitch(name="sw"))
        with db.transaction() as txn:
            for i in range(100):
                txn.create(LogicalSwitchPort(switch=switch, name=f"p{i}"))
        ports = [p for p in txn.results if isinstance(p, LogicalSwitchPort)]
        cache = db.cache(LogicalSwitchPort)
        assert cache.wait_synced(10)
        watch = db.watch(LogicalSwitchPort, since=db.list(LogicalSwitchPort).revision)
        with db.transaction() as txn:
            for port in ports:
                txn.update(port.replace(up=True))
        assert txn.revision is not None
        events: list[nbdb.ChangeEvent[nbdb.Model]] = []
        while len(events) < len(ports):
            got = watch.poll(10)
            assert got, "the watch stopped short of the transaction"
            events += got
        watch.close()
        assert [e.id for e in events] == [p.id for p in ports]  # each once, in the commit's order
        assert {e.revision for e in events} == {int(txn.revision)}
        assert all(
            e.old == p and e.new is not None and e.new.up and e.new.version == 2
            for e, p in zip(events, ports, strict=True)
        )
        assert cache.wait_for(int(txn.revision), 10)
        assert all(cache.get(LogicalSwitchPort, p.id) == r for p, r in zip(ports, txn.results, strict=True))
        cache.close()
        with pytest.raises(nbdb.ReferenceError):
            db.delete(switch)  # the ports still point to it: the reference index kept them
        with pytest.raises(nbdb.UniqueViolationError):
            db.create(LogicalSwitchPort(switch=switch, name="p0"))  # and the unique index their names


_PUTS = ["create", "create_taken_name", "update", "update_stale", "update_renamed"]


def _run_puts(steps: list[tuple[str, int]], general: bool) -> tuple[Any, ...]:
    """``steps`` as one transaction of plain creates and updates; ``general``: plus a no-op delete.

    The no-op (a delete ``if_exists`` of an object that does not exist) is a step of its own:
    the transaction then takes its general path, with the very same puts.
    """
    with nbdb.connect("memory://") as db:
        switch = db.create(LogicalSwitch(name="sw"))
        stored = [db.create(LogicalSwitchPort(switch=switch, name=f"old{i}")) for i in range(3)]
        db.update(stored[0].replace(tag=1))  # stored[0] is now stale
        updated: set[int] = set()
        outcome: Any = None
        try:
            with db.transaction() as txn:
                for n, (kind, slot) in enumerate(steps):
                    if kind.startswith("update") and slot not in updated:
                        updated.add(slot)
                        port = stored[slot] if kind == "update_stale" else db.get(LogicalSwitchPort, stored[slot].id)
                        renamed = {"name": f"renamed{n}"} if kind == "update_renamed" else {}
                        txn.update(port.replace(tag=n + 10, **renamed))
                    else:
                        name = f"old{slot}" if kind == "create_taken_name" else f"new{n}"
                        txn.create(LogicalSwitchPort(switch=switch, name=name, tag=n + 1))
                if general:
                    txn.delete(LogicalSwitchPort, LogicalSwitchPort(switch=switch, name="none").id, if_exists=True)
        except nbdb.NbdbError as exc:
            outcome = type(exc).__name__
        results = [(r.name, r.version, r.tag, r.nbdb_revision == txn.revision) for r in txn.results if r is not None]
        state = sorted((p.name, p.version, p.tag) for p in db.list(LogicalSwitchPort))
        return outcome, results, state, len(db.watch(LogicalSwitchPort, since=0).poll(1))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_PUTS), st.integers(0, 2)), min_size=1, max_size=10))
def test_a_transaction_of_plain_puts_matches_the_general_path(steps: list[tuple[str, int]]) -> None:
    """A transaction of plain creates and updates only (its own path) ends as the general path does.

    The same error if any (a stale version, a name taken), else the same results in call order,
    each stamped with the transaction's revision, and the same stored objects and changes.
    """
    fast, general = _run_puts(steps, False), _run_puts(steps, True)
    assert fast == general


_PORTS = st.sets(st.integers(0, 3))


@settings(max_examples=50, deadline=None)
@given(
    taken=st.booleans(),
    initial=_PORTS,
    mutations=st.lists(st.tuples(_PORTS, _PORTS), min_size=1, max_size=3),
    doomed=st.none() | st.integers(0, 3),
)
def test_mutates_after_a_create_apply_to_what_the_create_leaves(
    taken: bool, initial: set[int], mutations: list[tuple[set[int], set[int]]], doomed: int | None
) -> None:
    """create(may_exist=True) then mutates, in one transaction, store what the same writes one by one store.

    The new object gets the members (each mutate in turn: removals, then additions); a stored object the
    create takes gets them instead, each mutate in turn in one write; a weak member the transaction deletes
    is dropped either way. (The pair was refused with a ValidationError; two mutates or more of a stored
    object the create took were refused as that object appearing twice.)
    """
    with nbdb.connect("memory://") as db:
        switch = db.create(LogicalSwitch(name="sw"))
        ports = [db.create(LogicalSwitchPort(switch=switch, name=f"p{i}")) for i in range(4)]
        existing = db.create(PortGroup(name="pg", ports=[ports[0].id])) if taken else None
        with db.transaction() as txn:
            group = txn.create(PortGroup(name="pg", ports=[ports[i].id for i in sorted(initial)]), may_exist=True)
            for add, remove in mutations:
                txn.mutate(
                    group,
                    add={"ports": [ports[i] for i in sorted(add)]},
                    remove={"ports": [ports[i] for i in sorted(remove)]},
                )
            if doomed is not None:
                txn.delete(ports[doomed])
        expected = [ports[0].id] if existing is not None else [ports[i].id for i in sorted(initial)]
        for add, remove in mutations:
            gone = {ports[i].id for i in remove}
            expected = [m for m in expected if m not in gone]
            expected += [ports[i].id for i in sorted(add) if ports[i].id not in expected]
        if doomed is not None:
            expected = [m for m in expected if m != ports[doomed].id]
        stored = db.get(PortGroup, existing.id if existing is not None else group.id)
        assert list(stored.ports) == expected
        assert [p.name for p in db.list(PortGroup)] == ["pg"]
        assert txn.results[1 : 1 + len(mutations)] == [stored] * len(mutations)  # each mutate's: what was stored
        assert stored.version == (1 if existing is None or list(existing.ports) == expected else 2)


_MEMBERS = st.lists(st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.3"]), max_size=3)
_KEYS = st.sampled_from(["a", "b", "c"])


@settings(max_examples=200, deadline=None)
@given(
    initial=_MEMBERS,
    pairs=st.dictionaries(_KEYS, st.sampled_from(["1", "2"])),
    turns=st.lists(
        st.tuples(_MEMBERS, _MEMBERS, st.dictionaries(_KEYS, st.sampled_from(["1", "2"])), st.lists(_KEYS)),
        min_size=1,
        max_size=4,
    ),
)
def test_the_changes_of_mutations_in_turn_applied_at_once_leave_what_they_leave_one_by_one(
    initial: list[str], pairs: dict[str, str], turns: list[tuple[list[str], list[str], dict[str, str], list[str]]]
) -> None:
    """A native store (OVSDB) gets one transaction's mutates of one object as one change a field, which it
    applies at once (removals, then additions): that leaves what each mutation applied in turn leaves."""
    current = AddressSet(name="s", addresses=list(dict.fromkeys(initial)), external_ids=pairs)
    mutations = [
        ({"addresses": add, "external_ids": set_}, {"addresses": remove, "external_ids": unset})
        for add, remove, set_, unset in turns
    ]
    at_once = current
    for change in changes_in_turn(AddressSet, mutations):
        given = dict(change.add) if change.field == "external_ids" else list(change.add)
        at_once = mutate(at_once, {change.field: given}, {change.field: list(change.remove)})
    in_turn = mutate_in_turn(current, mutations)
    assert (at_once.addresses, at_once.external_ids) == (in_turn.addresses, in_turn.external_ids)
    if (in_turn.addresses, in_turn.external_ids) == (current.addresses, current.external_ids):
        assert in_turn is current  # nothing to write


@given(
    version=st.integers(1, 2**40),
    written=st.none() | st.integers(1, 2**62),
    topic=st.none() | st.text(max_size=4),
)
def test_an_update_turned_into_a_delete_keeps_its_compare_and_swap(
    version: int, written: int | None, topic: Any
) -> None:
    """A transaction's update of an object its owner's delete takes along becomes that object's delete: it still
    compares what the update compared, the version and the revision that wrote the copy (cas_across_recreate)."""
    import uuid

    from nbdb.spi import Put
    from nbdb.transaction import _delete_instead

    put = Put("T", uuid.uuid4(), topic, b"{}", version, old_refs=frozenset(), old_unique=(), expect_written=written)
    delete = _delete_instead(put)
    assert (delete.table, delete.id, delete.topic) == (put.table, put.id, put.topic)
    assert (delete.expect_version, delete.expect_written) == (version, written)
    assert (delete.old_refs, delete.old_unique) == (put.old_refs, put.old_unique)
