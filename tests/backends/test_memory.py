"""The memory backend: URL options, named stores, bounded history and the re-list path."""

from __future__ import annotations

import time

import pytest

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
