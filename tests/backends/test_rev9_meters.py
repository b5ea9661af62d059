"""Reviewer repros (rev9) for wip/ovnmore's meters: each test states what OVSDB itself accepts."""

from __future__ import annotations

import uuid

import pytest

import nbdb
from nbdb.models import ChassisTemplateVar, Meter, MeterBand
from nbdb.testing.fixtures import (
    ovsdb_server,  # noqa: F401
    redis_server,  # noqa: F401
)
from nbdb.testing.ovsdb import OvsdbServer
from nbdb.testing.redis import RedisServer
from nbdb.tools import Copier, CopyOptions

from .test_ovn_interop_tables import db, nbctl  # noqa: F401

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("delete_first", [False, True])
def test_replacing_a_meter_s_only_band_in_one_transaction(
    ovsdb_server: OvsdbServer,  # noqa: F811
    db: nbdb.Database,  # noqa: F811
    delete_first: bool,
) -> None:
    # ovsdb-server accepts one transaction inserting a new band and deleting the old one, as long as
    # Meter.bands holds >= 1 after each mutate. The planner's order must not depend on the caller's.
    s = uuid.uuid4().hex[:8]
    nbctl(ovsdb_server, "meter-add", f"m-{s}", "drop", "10", "kbps")
    meter = db.get_by(Meter, name=f"m-{s}")
    assert meter is not None
    (old,) = [b for b in db.list(MeterBand) if b.meter == meter.id]
    with db.transaction() as txn:
        if delete_first:
            txn.delete(old)
        new = txn.create(MeterBand(meter=meter, rate=99))
        if not delete_first:
            txn.delete(old)
    assert nbctl(ovsdb_server, "get", "Meter", f"m-{s}", "bands") == f"[{new.id}]"


def test_a_copy_with_a_meter_at_a_batch_boundary_is_written(ovsdb_server: OvsdbServer) -> None:  # noqa: F811
    # A valid source (a meter with its band, 199 objects ordered before it) copied with the default
    # --batch 200: the meter falls last in the first batch, its band first in the next.
    s = uuid.uuid4().hex[:8]
    with (
        nbdb.connect(f"memory://rev9-{s}") as source,
        nbdb.connect(f"{ovsdb_server.url}?namespace=rev9{s}") as dest,
    ):
        with source.transaction() as txn:
            for i in range(199):
                txn.create(ChassisTemplateVar(chassis=f"hv{i}-{s}"))
            meter = txn.create(Meter(name=f"m-{s}", unit="kbps"))
            txn.create(MeterBand(meter=meter, rate=10))
        models = [ChassisTemplateVar, Meter, MeterBand]
        Copier(source, dest, CopyOptions(models=models)).run()
        assert [m.name for m in dest.list(Meter)] == [f"m-{s}"]
        assert len(dest.list(MeterBand)) == 1


def test_a_meter_delete_racing_another_writer_s_band_takes_it_along(
    ovsdb_server: OvsdbServer,  # noqa: F811
    db: nbdb.Database,  # noqa: F811
) -> None:
    s = uuid.uuid4().hex[:8]
    with nbdb.connect(ovsdb_server.url) as other:
        for i in range(20):
            with db.transaction() as txn:
                meter = txn.create(Meter(name=f"m{i}-{s}", unit="kbps"))
                txn.create(MeterBand(meter=meter, rate=10))
            other.create(MeterBand(meter=meter, rate=20))  # db's replica may not show it yet
            db.delete(db.get(Meter, meter.id))
            assert [b for b in db.list(MeterBand) if b.meter == meter.id] == []


@pytest.mark.parametrize("kind", ["ovsdb", "redis"])
@pytest.mark.parametrize("cascade", [False, True])
def test_a_meter_delete_takes_its_two_bands(
    kind: str,
    cascade: bool,
    ovsdb_server: OvsdbServer,  # noqa: F811
    redis_server: RedisServer,  # noqa: F811
) -> None:
    s = uuid.uuid4().hex[:8]
    url = ovsdb_server.url if kind == "ovsdb" else f"{redis_server.url}?namespace=rev9{s}"
    with nbdb.connect(url) as d:
        with d.transaction() as txn:
            meter = txn.create(Meter(name=f"m-{s}", unit="kbps"))
            txn.create(MeterBand(meter=meter, rate=10))
            txn.create(MeterBand(meter=meter, rate=20))
        d.update(d.get(Meter, meter.id).replace(name=f"n-{s}", unit="pktps", fair=True))
        assert len([b for b in d.list(MeterBand) if b.meter == meter.id]) == 2
        d.delete(d.get(Meter, meter.id), cascade=cascade)
        assert [b for b in d.list(MeterBand) if b.meter == meter.id] == []


def test_a_transaction_deleting_a_meter_and_moving_one_of_its_bands_is_alike_on_ovsdb_and_memory(
    ovsdb_server: OvsdbServer,  # noqa: F811
) -> None:
    # The planner's new meter path (no refusal, so no owned walk) keeps the moved band on OVSDB;
    # memory (and OVSDB for every other owned child, HA_Chassis: test_rev9_owned_move.py) drops it.
    s = uuid.uuid4().hex[:8]
    outcome = {}
    for kind, url in (("ovsdb", ovsdb_server.url), ("memory", f"memory://rev9-{s}")):
        with nbdb.connect(url) as d:
            with d.transaction() as txn:
                meter = txn.create(Meter(name=f"m-{s}", unit="kbps"))
                moved = txn.create(MeterBand(meter=meter, rate=10))
                txn.create(MeterBand(meter=meter, rate=20))
                other = txn.create(Meter(name=f"o-{s}", unit="kbps"))
                txn.create(MeterBand(meter=other, rate=30))
            with d.transaction() as txn:
                txn.delete(d.get(Meter, meter.id))
                txn.update(d.get(MeterBand, moved.id).replace(meter=other.id))
            outcome[kind] = sorted(b.rate for b in d.list(MeterBand) if b.meter in (meter.id, other.id))
    assert outcome["ovsdb"] == outcome["memory"]


@pytest.mark.parametrize("kind", ["ovsdb", "memory"])
def test_a_transaction_s_update_of_a_band_its_meter_delete_takes_along_is_its_delete(
    kind: str,
    ovsdb_server: OvsdbServer,  # noqa: F811
) -> None:
    # docs/semantics.md: an update of an owned object in the transaction deleting its owner is that
    # object's delete, its results entry None, on every backend (conformance test_references.py:389).
    s = uuid.uuid4().hex[:8]
    url = ovsdb_server.url if kind == "ovsdb" else f"memory://rev9-{s}"
    with nbdb.connect(url) as d:
        with d.transaction() as txn:
            meter = txn.create(Meter(name=f"m-{s}", unit="kbps"))
            band = txn.create(MeterBand(meter=meter, rate=10))
        with d.transaction() as txn:
            txn.update(d.get(MeterBand, band.id).replace(rate=99))
            txn.delete(d.get(Meter, meter.id))
        assert txn.results[0] is None
        assert [b for b in d.list(MeterBand) if b.meter == meter.id] == []
