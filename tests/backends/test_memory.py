"""The memory backend: URL options, named stores, bounded history and the re-list path."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.conformance.kit import eventually, held_watches
from nbdb.events import EventKind
from nbdb.models import LogicalSwitch

pytestmark = pytest.mark.timeout(30)


def test_anonymous_stores_are_private() -> None:
    with nbdb.connect("memory://") as a, nbdb.connect() as b:
        a.create(LogicalSwitch(name="x"))
        assert list(b.list(LogicalSwitch)) == []


def test_named_stores_are_shared_in_process() -> None:
    with nbdb.connect("memory://shared-test") as a, nbdb.connect("memory://shared-test") as b:
        ls = a.create(LogicalSwitch(name="x"))
        assert b.get(LogicalSwitch, ls.id) == ls


@pytest.mark.parametrize("url", ["memory://?history=0", "memory://?history=many", "memory://?colour=red"])
def test_bad_options_are_validation_errors(url: str) -> None:
    with pytest.raises(nbdb.ValidationError):
        nbdb.connect(url)


def test_history_bound_makes_old_revisions_gone() -> None:
    with nbdb.connect("memory://?history=10") as db:
        start = db.list(LogicalSwitch).revision
        for i in range(30):
            db.create(LogicalSwitch(name=f"s{i}"))
        watch = db.watch(LogicalSwitch, since=start)
        with pytest.raises(nbdb.HistoryGoneError):
            watch.poll(1)
        recent = db.list(LogicalSwitch).revision - 3
        assert len(db.watch(LogicalSwitch, since=recent).poll(1)) == 3


def test_lagging_cache_relists_with_synthetic_difference() -> None:
    with nbdb.connect("memory://?history=5") as db:
        keep = db.create(LogicalSwitch(name="keep"))
        gone = db.create(LogicalSwitch(name="gone"))
        events: list[nbdb.ChangeEvent[nbdb.Model]] = []
        with held_watches(db.backend) as flowing:
            cache = db.cache(LogicalSwitch)
            assert cache.wait_synced(5)
            cache.subscribe(events.append)
            db.create(LogicalSwitch(name="blocker"))
            db.delete(gone)
            for i in range(20):
                db.create(LogicalSwitch(name=f"n{i}"))  # far beyond the 5 changes of history kept
            flowing.set()
        deadline = time.monotonic() + 10
        while len(cache.list(LogicalSwitch)) != 22 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cache.relists == 1
        assert {s.name for s in cache.list(LogicalSwitch)} == {"keep", "blocker"} | {f"n{i}" for i in range(20)}
        assert eventually(lambda: len(events) == 22)
        synthetic = [e for e in events if e.synthetic]
        assert [e.old.name for e in synthetic if e.kind is EventKind.DELETED and e.old] == ["gone"]
        assert sum(1 for e in synthetic if e.kind is EventKind.CREATED) == 21  # blocker and n0..n19
        assert all(e.id != keep.id for e in events)
        cache.close()


def test_records_carry_the_bytes_of_what_was_written_though_none_were_sent() -> None:
    """memory:// ``keeps_values``: puts carry no bytes; a record's bytes are its value's encoding, made when read."""
    from nbdb.codec import decode, encode
    from nbdb.models import LogicalSwitchPort
    from nbdb.spi import Deferred, Record

    with nbdb.connect("memory://") as db:
        assert db.backend.keeps_values
        switch = db.create(LogicalSwitch(name="sw", topic="t"))
        with db.transaction() as txn:
            ports = [txn.create(LogicalSwitchPort(switch=switch, name=f"p{i}", topic="t")) for i in range(3)]
        updated = db.update(ports[0].replace(up=True))
        for obj in (switch, ports[1], updated):
            record = db.backend.read(obj.nbdb_table, obj.id)
            assert record is not None and type(record[4]) is Deferred  # nothing was encoded on write
            assert record.data == encode(obj) and record.version == obj.version
            # Decoded from the bytes alone (another model class would have to), it is the same object.
            assert decode(type(obj), Record(record.table, record.id, record.topic, record.version, record.data)) == obj
        db.backend.write_raw(switch.nbdb_table, switch.id, "t", b"not json")  # bytes given: kept as given
        raw = db.backend.read(switch.nbdb_table, switch.id)
        assert raw is not None and raw.data == b"not json"


def test_stored_values_keep_no_tracked_lineage_and_their_references_follow_updates() -> None:
    """The values memory:// keeps (and its caches share) hold their revision in a dict CPython does not track.

    Their stored references are derived from their fields: after an update
    that moves a port to another switch, the old switch has no referrer left
    and the new one refuses to go.
    """
    import gc

    from nbdb.models import LogicalSwitchPort

    with nbdb.connect("memory://") as db:
        a, b = db.create(LogicalSwitch(name="a")), db.create(LogicalSwitch(name="b"))
        with db.transaction() as txn:
            ports = [txn.create(LogicalSwitchPort(switch=a, name=f"p{i}")) for i in range(3)]
        moved = db.update(db.get(LogicalSwitchPort, ports[0].id).replace(switch=b))
        renamed = db.update(ports[1].replace(name="q1", up=True))
        for obj in (*ports, moved, renamed, db.get(LogicalSwitchPort, ports[2].id)):
            assert not gc.is_tracked(obj.__pydantic_private__)
        stored = db.get(LogicalSwitchPort, moved.id)
        assert stored is moved and stored.stored_refs() == {("LogicalSwitch", b.id)}
        assert db.get(LogicalSwitchPort, renamed.id).stored_unique() == (("name", '"q1"'),)
        assert db.get_by(LogicalSwitchPort, name="p1") is None
        with pytest.raises(nbdb.ReferenceError):
            db.delete(b)
        with pytest.raises(nbdb.ReferenceError):
            db.delete(a)  # p1 and p2 still point to it
        db.delete(renamed)
        db.delete(db.get(LogicalSwitchPort, ports[2].id))
        db.delete(a)
        db.delete(moved)
        db.delete(b)


def test_deletes_carry_no_lineage_yet_release_what_the_object_held() -> None:
    """memory:// keeps each object's references and unique claims: a delete sends none, and still frees them."""
    from nbdb.commit_context import CommitContext
    from nbdb.models import LogicalSwitchPort

    with nbdb.connect("memory://") as db:
        switch = db.create(LogicalSwitch(name="s"))
        port = db.create(LogicalSwitchPort(switch=switch, name="p"))
        op = CommitContext(db.backend).delete_op(port, None, False)
        assert op is not None and op.old_refs is None and op.old_unique is None
        with pytest.raises(nbdb.ReferenceError):
            db.delete(switch)
        db.delete(port)
        assert db.get_by(LogicalSwitchPort, name="p") is None
        again = db.create(LogicalSwitchPort(switch=switch, name="p"))  # the name is free again
        db.delete(again)
        db.delete(switch)  # and the switch has no referrer left


@settings(max_examples=50, deadline=None)
@given(damaged=st.integers(max_value=-1) | st.floats(allow_nan=False, allow_infinity=False))
def test_no_id_below_1_nor_one_not_a_whole_number_is_ever_handed_out(damaged: float) -> None:
    # The one check where Database.allocate_id takes the backend's value, whichever backend counted it:
    # memory://'s counter, damaged in place, gave -4 or 1.5 as an id.
    with nbdb.connect("memory://") as db:
        assert db.allocate_id("c") == 1
        db.backend.store.counters["c"] = damaged  # type: ignore[attr-defined]
        try:
            got = db.allocate_id("c")
        except nbdb.CorruptRecordError as exc:
            assert "counter 'c'" in str(exc)
        else:
            assert type(got) is int and got >= 1
