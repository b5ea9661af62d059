"""A cold load's listing on Cassandra: a big table's ids read in ranges together, after a first read.

``scan`` (what a cache loads from) reads the first ``FIRST_READ`` objects of
each table in a partition, then the rest in ``SPLITS`` ranges of ids sent
together, then the partition's ``last_rev`` again (see
:mod:`nbdb.families.widecolumn.snapshot`). The tests shrink both so that a few
dozen objects take that path, and hold the scan between its rounds to let a
rival write.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.events import EventKind
from nbdb.models import LogicalRouter, LogicalSwitch
from nbdb.testing import fixtures
from nbdb.testing.cassandra import CassandraServer
from nbdb.testing.databases import databases

pytest.importorskip("cassandra")

from nbdb.backends.cassandra.dialect import uuid_order
from nbdb.families.widecolumn import ForwardingStore, PendingReads, Select, WideColumnBackend, layout, snapshot

pytestmark = pytest.mark.timeout(120)

cassandra_server = fixtures.cassandra_server


@pytest.fixture
def open_db(cassandra_server: CassandraServer) -> Iterator[Callable[[], nbdb.Database]]:
    with databases(cassandra_server.url, f"s-{uuid.uuid4().hex[:10]}") as factory:
        yield factory


@pytest.fixture
def small_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first read of 3 objects, the rest in 4 ranges: the split path for a few dozen objects."""
    monkeypatch.setattr(snapshot, "FIRST_READ", 3)
    monkeypatch.setattr(snapshot, "SPLITS", 4)


class BetweenRounds(ForwardingStore):
    """Calls ``hook`` once, right after the listing's first read (``Q_PAGE``) came back."""

    def __init__(self, real: Any, hook: Callable[[], None]) -> None:
        super().__init__(real)
        self.hook: Callable[[], None] | None = hook
        self.reads: list[Select] = []

    def start_reads(self, reads: Sequence[tuple[Select, Sequence[Any]]], *, serial: bool = False) -> PendingReads:
        self.reads += [query for query, _ in reads]
        pending = self.real.start_reads(reads, serial=serial)
        if self.hook is not None and any(query == layout.Q_PAGE for query, _ in reads):
            pending.result()
            hook, self.hook = self.hook, None
            hook()
        return pending


def family(db: nbdb.Database) -> WideColumnBackend:
    assert isinstance(db.backend, WideColumnBackend)
    return db.backend


def test_a_split_listing_holds_every_object_once(open_db: Callable[[], nbdb.Database], small_reads: None) -> None:
    db = open_db()
    made = {db.create(LogicalSwitch(name=f"s{i}", topic="t")).id for i in range(40)}
    fam = family(db)
    store = fam.partitions.store = BetweenRounds(fam.partitions.store, lambda: None)
    records = fam.scan([LogicalSwitch.nbdb_table], None).records
    assert sorted(r.id for r in records) == sorted(made)
    assert layout.Q_LIST_BETWEEN in store.reads and layout.Q_LIST_AFTER in store.reads, "the split path was taken"


def test_objects_deleted_between_the_rounds_are_listed_as_they_were(
    open_db: Callable[[], nbdb.Database], small_reads: None
) -> None:
    # Every object after the first read is deleted before the ranges are read: they all come back empty,
    # carrying no last_rev, and the rows of the first read carry the one from before the deletes. Only the
    # partition's last_rev read after the ranges tells the scan that commits landed (undone from their
    # change rows); without it the deleted objects were missing from a listing at a revision that held them.
    db, rival = open_db(), open_db()
    made = {db.create(LogicalSwitch(name=f"s{i}", topic="t")).id for i in range(30)}
    revision = db.list(LogicalSwitch).revision
    fam = family(db)
    first_three = sorted(made, key=uuid_order)[:3]

    def delete_the_rest() -> None:
        for id in made - set(first_three):
            rival.delete(rival.get(LogicalSwitch, id))  # type: ignore[arg-type]

    fam.partitions.store = BetweenRounds(fam.partitions.store, delete_the_rest)
    snap = fam.scan([LogicalSwitch.nbdb_table], None)
    assert snap.revision == revision
    assert sorted(r.id for r in snap.records) == sorted(made)
    with rival.watch(LogicalSwitch, since=snap.revision) as watch:  # continued from there with no gap
        events = []
        while len(events) < 27:
            got = watch.poll(10)
            assert got, f"the watch stopped after {len(events)} events"
            events += got
    assert {e.kind for e in events} == {EventKind.DELETED} and {e.old.id for e in events} == made - set(first_three)


def test_a_corrupt_record_in_a_split_listing_is_that_object_only(
    open_db: Callable[[], nbdb.Database], small_reads: None
) -> None:
    db = open_db()
    made = [db.create(LogicalSwitch(name=f"s{i}", topic="t")) for i in range(40)]
    bad = sorted(made, key=lambda s: uuid_order(s.id))[-2]  # in the last range
    family(db).write_raw(bad.nbdb_table, bad.id, bad.topic, b"not a record")
    reported: list[nbdb.CorruptRecordError] = []
    with open_db().cache(LogicalSwitch, on_error=reported.append) as cache:
        assert cache.wait_synced(60)
        assert {s.id for s in cache.list(LogicalSwitch)} == {s.id for s in made} - {bad.id}
    assert len(reported) == 1 and str(bad.id) in str(reported[0])


@settings(max_examples=300, deadline=None)
@given(after=st.uuids(version=4), splits=st.integers(1, 12), ids=st.lists(st.uuids(), max_size=30))
def test_split_points_cover_the_ids_after_once_in_the_servers_order(
    after: uuid.UUID, splits: int, ids: list[uuid.UUID]
) -> None:
    # Ranges (after, b1], (b1, b2], ..., (bk, end): increasing bounds, so every id above ``after`` is in one.
    bounds = snapshot.split_after(uuid_order, after, splits)
    assert len(bounds) < splits
    keys = [uuid_order(b) for b in [after, *bounds]]
    assert keys == sorted(set(keys))
    for id in ids:
        inside = [lo < uuid_order(id) <= hi for lo, hi in zip(keys, [*keys[1:], (99,)], strict=True)]
        assert sum(inside) == (uuid_order(id) > keys[0])


def test_random_ids_are_split_about_evenly() -> None:
    ids = sorted((uuid.uuid4() for _ in range(8000)), key=uuid_order)
    bounds = [uuid_order(b) for b in snapshot.split_after(uuid_order, ids[999], 4)]
    sizes = [
        sum(lo < uuid_order(i) <= hi for i in ids)
        for lo, hi in zip([uuid_order(ids[999]), *bounds], [*bounds, (99,)], strict=True)
    ]
    assert len(sizes) == 4 and all(1400 < size < 2100 for size in sizes), sizes


class OneAtATime(ForwardingStore):
    """Runs the listing's first round (``Q_PAGE`` reads) one read after another, calling ``hook`` once
    after the first of them: the order in which a server may answer reads sent together."""

    def __init__(self, real: Any, hook: Callable[[], None]) -> None:
        super().__init__(real)
        self.hook: Callable[[], None] | None = hook

    def start_reads(self, reads: Sequence[tuple[Select, Sequence[Any]]], *, serial: bool = False) -> PendingReads:
        if self.hook is None or not any(query == layout.Q_PAGE for query, _ in reads):
            return self.real.start_reads(reads, serial=serial)
        rows: list[list[Any]] = []
        for read in reads:
            rows += self.real.start_reads([read], serial=serial).result()
            if self.hook is not None:
                hook, self.hook = self.hook, None
                hook()
        return _Read(rows)


class _Read(PendingReads):
    def __init__(self, rows: list[list[Any]]) -> None:
        self.rows = rows

    def result(self) -> list[list[Any]]:
        return self.rows


def test_a_table_emptied_while_another_was_read_is_listed_as_it_was(open_db: Callable[[], nbdb.Database]) -> None:
    # Two tables of one partition are read together; the server answers the switches' read, then a rival
    # deletes the partition's only router, then the routers' read comes back empty: it carries no last_rev,
    # and the switches' rows carry the one from before the delete. The router existed at the scan's
    # revision: it must be listed (and the watch from that revision then tells its delete).
    db, rival = open_db(), open_db()
    switch = db.create(LogicalSwitch(name="s", topic="t"))
    router = db.create(LogicalRouter(name="r", topic="t"))
    revision = db.list(LogicalSwitch).revision
    fam = family(db)
    fam.partitions.store = OneAtATime(fam.partitions.store, lambda: rival.delete(router))
    snap = fam.scan([LogicalSwitch.nbdb_table, LogicalRouter.nbdb_table], None)
    assert snap.revision == revision
    assert sorted(r.id for r in snap.records) == sorted([switch.id, router.id])
    with rival.watch(LogicalRouter, since=snap.revision) as watch:
        events = watch.poll(10)
    assert [(e.kind, e.old.id) for e in events] == [(EventKind.DELETED, router.id)]  # type: ignore[union-attr]


def odd_ids() -> list[uuid.UUID]:
    """Ids another writer may have stored: every version nibble, other variants, the edges of the order."""
    rnd = uuid.uuid4().int
    ids = [uuid.uuid1(), uuid.uuid1(), uuid.uuid3(uuid.NAMESPACE_DNS, "a"), uuid.uuid5(uuid.NAMESPACE_DNS, "b")]
    for version in range(16):
        for variant in (0, 0b10, 0b110, 0b111):
            value = rnd ^ (version * 7919 + variant)  # different bits per id
            value = value & ~(0xF << 76) | version << 76
            value = value & ~(0b111 << 61) | (variant << 61 if variant > 0b10 else variant << 62)
            ids.append(uuid.UUID(int=value))
    top = (0xFFFF_FFFF_FFFF_4FFF << 64) | _RANDOM_VARIANT
    ids += [uuid.UUID(int=top), uuid.UUID(int=top - 1), uuid.UUID(int=(1 << 128) - 1), uuid.UUID(int=0)]
    ids += [uuid.uuid4() for _ in range(30)]
    return list(dict.fromkeys(ids))


_RANDOM_VARIANT = 0x8000_0000_0000_0000


def test_a_listing_holds_odd_ids_once_wherever_the_first_read_ends(
    open_db: Callable[[], nbdb.Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = open_db()
    made = set()
    for id in odd_ids():
        made.add(db.create(LogicalSwitch(id=id, name="s", topic="t")).id)
    fam = family(db)
    table = LogicalSwitch.nbdb_table

    @settings(max_examples=60, deadline=None)
    @given(first=st.integers(1, len(made) + 2), splits=st.integers(1, 6))
    def listing(first: int, splits: int) -> None:
        monkeypatch.setattr(snapshot, "FIRST_READ", first)
        monkeypatch.setattr(snapshot, "SPLITS", splits)
        ids = [r.id for r in fam.scan([table], None).records]
        assert len(ids) == len(set(ids)) and set(ids) == made

    listing()


_OPS = st.lists(st.tuples(st.sampled_from(["create", "update", "delete"]), st.integers(0, 10_000)), max_size=12)


def test_a_listing_is_the_state_at_its_revision_whatever_a_rival_commits_between_its_reads(
    open_db: Callable[[], nbdb.Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, rival = open_db(), open_db()
    for i in range(12):
        db.create(LogicalSwitch(name=f"s{i}", topic="t"))
    db.create(LogicalRouter(name="r", topic="t"))
    fam = family(db)
    real = fam.partitions.store
    tables = [LogicalSwitch.nbdb_table, LogicalRouter.nbdb_table]

    @settings(max_examples=25, deadline=None)
    @given(first=st.integers(1, 14), splits=st.integers(1, 5), one_by_one=st.booleans(), ops=_OPS)
    def listing(first: int, splits: int, one_by_one: bool, ops: list[tuple[str, int]]) -> None:
        monkeypatch.setattr(snapshot, "FIRST_READ", first)
        monkeypatch.setattr(snapshot, "SPLITS", splits)
        fam.partitions.store = real
        before = fam.scan(tables, None)  # no rival yet: the state at its revision
        expected = sorted((r.table, r.id, r.version, r.data) for r in before.records)

        def rival_commits() -> None:
            for op, n in ops:
                objs = sorted([*rival.list(LogicalSwitch), *rival.list(LogicalRouter)], key=lambda o: o.id)
                if op == "create" or not objs:
                    model = LogicalRouter if n % 3 == 0 else LogicalSwitch
                    rival.create(model(name=f"n{n}", topic="t"))
                elif op == "update":
                    obj = objs[n % len(objs)]
                    rival.update(obj.model_copy(update={"name": f"u{n}"}))
                else:
                    rival.delete(objs[n % len(objs)])

        wrapper = OneAtATime if one_by_one else BetweenRounds
        fam.partitions.store = wrapper(real, rival_commits)
        snap = fam.scan(tables, None)
        fam.partitions.store = real
        assert snap.revision == before.revision
        assert sorted((r.table, r.id, r.version, r.data) for r in snap.records) == expected

    listing()


def test_a_page_the_driver_fetches_in_parts_is_at_the_listings_revision(
    open_db: Callable[[], nbdb.Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A page of more objects than the driver fetches at once (5,000 by default: db.list(limit=10_000)) is one
    # read answered in several driver pages. A rival deletes every object after the first driver page before
    # the next one is fetched: that one comes back empty, carrying no last_rev, and the first carries the one
    # from before the deletes. The page must still hold every object of the listing's revision.
    from cassandra.cluster import ResultSet

    db, rival = open_db(), open_db()
    made = [db.create(LogicalSwitch(name=f"s{i}", topic="t")).id for i in range(12)]
    kept = sorted(made, key=uuid_order)[:2]
    session = family(db).partitions.store.session  # type: ignore[attr-defined]
    fetch = ResultSet.fetch_next_page
    hook: list[Callable[[], None]] = [
        lambda: [rival.delete(rival.get(LogicalSwitch, id)) for id in made if id not in kept]
    ]

    def fetch_next_page(self: Any) -> Any:
        if hook:
            hook.pop()()
        return fetch(self)

    monkeypatch.setattr(snapshot, "FIRST_READ", 1)  # below the driver's fetch size, as 2,000 is below 5,000
    monkeypatch.setattr(session, "default_fetch_size", 2)
    monkeypatch.setattr(ResultSet, "fetch_next_page", fetch_next_page)
    page = db.list(LogicalSwitch, limit=20)
    monkeypatch.undo()
    assert not hook, "the read was fetched in driver pages"
    assert sorted(s.id for s in page) == sorted(made) and page.continue_token is None
