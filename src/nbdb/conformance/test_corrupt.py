"""A record that another writer corrupted is reported, and kills neither a watch nor a cache."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from hypothesis import HealthCheck, given, settings

import nbdb
from nbdb.conformance.kit import RAISING_NAME, KitParent, eventually, watched_and_cached
from nbdb.testing.strategies import newer_fields

pytestmark = [pytest.mark.nbdb_kit, pytest.mark.timeout(60)]

GARBAGE = [b"\x00\xff not json", b'{"name": 12}', b"[]", b""]


def _corrupt(db: nbdb.Database, obj: KitParent, data: bytes) -> None:
    try:
        db.backend.write_raw(obj.nbdb_table, obj.id, obj.topic, data)
    except nbdb.UnsupportedError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("garbage", GARBAGE, ids=["binary", "wrong-type", "not-object", "empty"])
def test_get_and_list_report_corrupt_records(db: nbdb.Database, garbage: bytes) -> None:
    good = db.create(KitParent(name="good"))
    bad = db.create(KitParent(name="bad"))
    _corrupt(db, bad, garbage)
    with pytest.raises(nbdb.CorruptRecordError):
        db.get(KitParent, bad.id)
    with pytest.raises(nbdb.CorruptRecordError):
        db.list(KitParent)
    assert [p.id for p in db.list(KitParent, skip_corrupt=True)] == [good.id]
    assert db.get(KitParent, good.id) == good


def test_record_with_someone_elses_id_is_corrupt(db: nbdb.Database) -> None:
    a = db.create(KitParent(name="a"))
    b = db.create(KitParent(name="b"))
    _corrupt(db, a, KitParent(id=b.id, name="impostor").model_dump_json().encode())
    with pytest.raises(nbdb.CorruptRecordError):
        db.get(KitParent, a.id)


def test_watch_reports_and_goes_on(db: nbdb.Database) -> None:
    victim = db.create(KitParent(name="victim"))
    reports: list[nbdb.CorruptRecordError] = []
    with db.watch(KitParent, on_error=reports.append) as watch:
        _corrupt(db, victim, b"\x00garbage")
        after = db.create(KitParent(name="after"))
        events: list[nbdb.ChangeEvent[nbdb.Model]] = []
        deadline = time.monotonic() + 10
        while not events and time.monotonic() < deadline:
            events += watch.poll(0.2)
    assert [e.new.id for e in events if e.new] == [after.id]
    assert len(reports) == 1


def test_a_watch_whose_on_error_is_cancelled_loses_no_change(db: nbdb.Database) -> None:
    # on_error raising asyncio's CancelledError (a BaseException: the caller's task was cancelled) went
    # out of poll() with the rest of the batch dropped: the stream was past it and `revision` said it
    # was delivered, so neither the next poll nor a watch resumed from it saw those changes.
    victim = db.create(KitParent(name="victim"))
    reports: list[nbdb.CorruptRecordError] = []

    def on_error(exc: nbdb.CorruptRecordError) -> None:
        reports.append(exc)
        if len(reports) == 1:
            raise asyncio.CancelledError()

    with db.watch(KitParent, on_error=on_error) as watch:
        _corrupt(db, victim, b"\x00garbage")
        after = db.create(KitParent(name="after"))
        names: list[str] = []
        cancelled = 0
        deadline = time.monotonic() + 10
        while "after" not in names and time.monotonic() < deadline:
            try:
                names += [e.new.name for e in watch.poll(0.2) if isinstance(e.new, KitParent)]
            except asyncio.CancelledError:
                cancelled += 1
        assert cancelled == 1 and len(reports) == 1
        assert names == [after.name]


def test_cache_keeps_last_good_copy_and_goes_on(db: nbdb.Database) -> None:
    victim = db.create(KitParent(name="victim"))
    reports: list[nbdb.CorruptRecordError] = []
    with db.cache(KitParent, on_error=reports.append) as cache:
        assert cache.wait_synced(15)
        _corrupt(db, victim, b"\x00garbage")
        after = db.create(KitParent(name="after"))
        assert eventually(lambda: cache.get(KitParent, after.id) is not None)
        assert cache.get(KitParent, victim.id) == victim
        assert (KitParent.nbdb_table, victim.id) in cache.corrupt
        # on_error runs on the cache's delivery thread, not its apply loop: it may come a moment later.
        assert eventually(lambda: len(reports) == 1)


def test_cache_loads_around_corrupt_records(db: nbdb.Database) -> None:
    good = db.create(KitParent(name="good"))
    bad = db.create(KitParent(name="bad"))
    _corrupt(db, bad, b"{{{")
    with db.cache(KitParent) as cache:
        assert cache.wait_synced(15)
        assert cache.get(KitParent, good.id) == good
        assert cache.get(KitParent, bad.id) is None
        assert (KitParent.nbdb_table, bad.id) in cache.corrupt


def test_a_validator_that_raises_is_a_corrupt_record_and_kills_no_watch_nor_cache(db: nbdb.Database) -> None:
    # Another writer (an older or newer controller) stored a value this model's validator does not take,
    # and it raised RuntimeError rather than ValueError: the record is corrupt to this reader, like any
    # other. It killed the shared watch of every cache of the Database (and a watch's poll) for good.
    victim = db.create(KitParent(name="victim"))
    with watched_and_cached(db, KitParent) as watched:
        watch, cache = watched.watch, watched.cache
        raising = json.loads(KitParent.model_dump_json(victim, exclude={"version"})) | {"name": RAISING_NAME}
        _corrupt(db, victim, json.dumps(raising).encode())
        after = [db.create(KitParent(name=f"after-{i}")) for i in range(3)]
        events: list[nbdb.ChangeEvent[nbdb.Model]] = []
        deadline = time.monotonic() + 15
        while len(events) < len(after) and time.monotonic() < deadline:
            events += watch.poll(0.2)
        assert [e.new.id for e in events if e.new] == [p.id for p in after]
        assert eventually(lambda: all(cache.get(KitParent, p.id) is not None for p in after))
        assert cache.get(KitParent, victim.id) == victim
        assert (KitParent.nbdb_table, victim.id) in cache.corrupt
        assert cache.relists == 0  # reported and skipped, not a re-list that meets it again and again
        assert eventually(lambda: len(watched.cache_reports) == 1)
        assert len(watched.watch_reports) == 1 and isinstance(watched.watch_reports[0].__cause__, RuntimeError)
        later = db.create(KitParent(name="later"))
        assert eventually(lambda: cache.get(KitParent, later.id) is not None)
    with pytest.raises(nbdb.CorruptRecordError) as raised:
        db.get(KitParent, victim.id)
    assert isinstance(raised.value.__cause__, RuntimeError)
    with pytest.raises(nbdb.CorruptRecordError):
        db.list(KitParent)
    assert victim.id not in {p.id for p in db.list(KitParent, skip_corrupt=True)}


_NEWER = newer_fields(KitParent)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(newer=_NEWER)
def test_a_record_a_newer_model_wrote_is_read_and_written_back_whole(
    db: nbdb.Database, newer: dict[str, object]
) -> None:
    # A rolling upgrade: the next version of a controller added a field to a model, and writes it.
    # Its records were corrupt to this version (every read failed, a cache kept stale copies); read
    # without the field and written back without it, the newer version's data would be lost.
    if db.backend.maps_columns:
        pytest.skip("the store keeps its schema's columns: a newer model's fields are a newer schema's (schema skew)")
    stored = db.create(KitParent(name="written by a newer model"))
    document = {**json.loads(KitParent.model_dump_json(stored, exclude={"version"})), **newer}
    _corrupt(db, stored, json.dumps(document).encode())
    got = db.get(KitParent, stored.id)
    assert (got.name, got.size) == (stored.name, stored.size)
    assert stored.id in {p.id for p in db.list(KitParent)}
    with db.cache(KitParent) as cache:
        assert cache.wait_synced(15)
        cached = cache.get(KitParent, stored.id)
        assert cached == got and (KitParent.nbdb_table, stored.id) not in cache.corrupt
        assert cached is not None
        updated = db.update(cached.replace(size=7))
    again = db.update(updated.replace(name="renamed"))  # from the write's own copy too
    written = db.backend.read(KitParent.nbdb_table, stored.id)
    assert written is not None
    kept = json.loads(written.data)
    assert {name: kept.get(name) for name in newer} == newer
    assert (kept["name"], kept["size"]) == ("renamed", 7) and db.get(KitParent, stored.id) == again
    # Only fields it does not know: a field it knows, of the wrong type, is still corruption.
    _corrupt(db, stored, json.dumps({**document, "size": "seven"}).encode())
    with pytest.raises(nbdb.CorruptRecordError):
        db.get(KitParent, stored.id)
    _corrupt(db, stored, json.dumps(document).encode())  # whole again, for the next example's lists
