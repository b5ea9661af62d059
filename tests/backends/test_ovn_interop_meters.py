"""OVN's ``Meter`` (with its ``Meter_Band`` rows), ``Static_MAC_Binding`` and ``Chassis_Template_Var``,
read and written both ways with ``ovn-nbctl`` (``meter-add``, ``static-mac-binding-add``, the generic
``create`` for template variables). nbdb read none of them: a copy of an OVN database holding any was
refused. One shared OVN_Northbound server; names are unique per test.
"""

from __future__ import annotations

import uuid

import pytest

import nbdb
from nbdb.models import ChassisTemplateVar, Meter, MeterBand, MeterUnit, Model, StaticMACBinding
from nbdb.testing.fixtures import (
    ovsdb_server,  # noqa: F401
    redis_server,  # noqa: F401
)
from nbdb.testing.ovsdb import OvsdbServer
from nbdb.testing.redis import RedisServer
from nbdb.tools import Copier, CopyOptions
from nbdb.tools.apply import Applier, WriteLimitReached
from nbdb.tools.order import key_of

from .test_ovn_interop_tables import db, nbctl  # noqa: F401  (db is a fixture)

pytestmark = pytest.mark.timeout(60)


def test_meters_mac_bindings_and_template_vars_ovn_nbctl_writes_are_read(
    ovsdb_server: OvsdbServer,  # noqa: F811
    db: nbdb.Database,  # noqa: F811
) -> None:
    s = uuid.uuid4().hex[:8]
    nbctl(ovsdb_server, "meter-add", f"m1-{s}", "drop", "10", "kbps")
    nbctl(ovsdb_server, "--fair", "meter-add", f"m2-{s}", "drop", "100", "pktps", "20")
    nbctl(ovsdb_server, "lr-add", f"lr-{s}")
    nbctl(ovsdb_server, "lrp-add", f"lr-{s}", f"lrp-{s}", "0a:00:00:00:00:fe", "10.0.0.1/24")
    nbctl(ovsdb_server, "static-mac-binding-add", f"lrp-{s}", "10.0.0.5", "0a:00:00:00:00:05")
    nbctl(ovsdb_server, "static-mac-binding-add", f"lrp-{s}", "fd00::5", "0A:00:00:00:00:06")
    nbctl(ovsdb_server, "create", "Chassis_Template_Var", f"chassis=hv-{s}", "variables:vip=10.0.0.1")
    one, two = db.get_by(Meter, name=f"m1-{s}"), db.get_by(Meter, name=f"m2-{s}")
    assert one is not None and two is not None
    assert (one.unit, one.fair, two.unit, two.fair) == (MeterUnit.KBPS, None, MeterUnit.PKTPS, True)
    bands = {b.meter: b for b in db.list(MeterBand) if b.meter in (one.id, two.id)}
    assert (bands[one.id].action, bands[one.id].rate, bands[one.id].burst_size) == ("drop", 10, 0)
    assert (bands[two.id].rate, bands[two.id].burst_size) == (100, 20)
    bindings = sorted((b.ip, b.mac) for b in db.list(StaticMACBinding) if b.logical_port == f"lrp-{s}")
    assert bindings == [("10.0.0.5", "0a:00:00:00:00:05"), ("fd00::5", "0a:00:00:00:00:06")]
    var = db.get_by(ChassisTemplateVar, chassis=f"hv-{s}")
    assert var is not None and var.variables == {"vip": "10.0.0.1"}
    cache = db.cache([Meter, MeterBand, StaticMACBinding, ChassisTemplateVar])
    assert cache.wait_synced(10)
    assert cache.get(MeterBand, bands[two.id].id) == bands[two.id] and cache.get(ChassisTemplateVar, var.id) == var
    assert not cache.corrupt
    # ovn-nbctl's meter-del takes the meter's bands (non-root rows) along.
    nbctl(ovsdb_server, "meter-del", f"m1-{s}")
    assert db.get_by(Meter, name=f"m1-{s}") is None
    assert [b for b in db.list(MeterBand) if b.meter == one.id] == []
    cache.close()


def test_meters_and_template_vars_nbdb_writes_are_what_ovn_nbctl_shows(
    ovsdb_server: OvsdbServer,  # noqa: F811
    db: nbdb.Database,  # noqa: F811
) -> None:
    s = uuid.uuid4().hex[:8]
    # OVN's Meter.bands holds at least one band: a meter and its first band are one transaction.
    with pytest.raises(nbdb.ValidationError, match="at least one"):
        db.create(Meter(name=f"alone-{s}", unit="kbps"))
    assert db.get_by(Meter, name=f"alone-{s}") is None
    with db.transaction() as txn:
        meter = txn.create(Meter(name=f"m-{s}", unit="pktps", fair=True))
        band = txn.create(MeterBand(meter=meter, rate=5, burst_size=7))
    shown = nbctl(ovsdb_server, "meter-list")
    assert f"m-{s}: (fair) bands:\n  drop: 5 pktps, 7 packet burst" in shown
    second = db.create(MeterBand(meter=meter, rate=50))
    assert sorted(nbctl(ovsdb_server, "get", "Meter", f"m-{s}", "bands").strip("[]").split(", ")) == sorted(
        [str(band.id), str(second.id)]
    )
    db.delete(second)
    assert nbctl(ovsdb_server, "get", "Meter", f"m-{s}", "bands") == f"[{band.id}]"
    with pytest.raises(nbdb.ValidationError, match="0 elements in set of 1 or more"):
        db.delete(band)  # the meter's last band: the server refuses an empty Meter.bands
    assert nbctl(ovsdb_server, "get", "Meter", f"m-{s}", "bands") == f"[{band.id}]"
    var = db.create(ChassisTemplateVar(chassis=f"hv-{s}", variables={"vip": "10.0.0.9"}))
    assert nbctl(ovsdb_server, "get", "Chassis_Template_Var", f"hv-{s}", "variables:vip") == '"10.0.0.9"'
    db.update(var.replace(variables={"vip": "10.0.0.10", "port": "80"}))
    assert nbctl(ovsdb_server, "get", "Chassis_Template_Var", f"hv-{s}", "variables:port") == '"80"'
    # OVN's Static_MAC_Binding has no external_ids (where nbdb keeps its bookkeeping): written all the
    # same (issue 14), its mapped columns alone; see test_static_mac_bindings_are_written_both_ways.
    # nbdb's delete of the meter takes its band along, as ovn-nbctl meter-del does.
    db.delete(db.get(Meter, meter.id))
    assert f"m-{s}:" not in nbctl(ovsdb_server, "meter-list")
    assert [b for b in db.list(MeterBand) if b.meter == meter.id] == []


def test_a_copy_of_meters_and_template_vars_out_of_ovn_and_back_is_what_ovn_nbctl_showed(
    ovsdb_server: OvsdbServer,  # noqa: F811
) -> None:
    # nbdb copy refused an OVN database holding any of these rows (no model mapped their tables).
    s = uuid.uuid4().hex[:8]
    models = [Meter, MeterBand, StaticMACBinding, ChassisTemplateVar]
    with OvsdbServer() as source_server:
        nbctl(source_server, "--fair", "meter-add", f"m-{s}", "drop", "100", "pktps", "20")
        nbctl(source_server, "lr-add", f"lr-{s}")
        nbctl(source_server, "lrp-add", f"lr-{s}", f"lrp-{s}", "0a:00:00:00:00:fe", "10.0.0.1/24")
        nbctl(source_server, "static-mac-binding-add", f"lrp-{s}", "10.0.0.5", "0a:00:00:00:00:05")
        nbctl(source_server, "create", "Chassis_Template_Var", f"chassis=hv-{s}", "variables:vip=10.0.0.1")
        shown = nbctl(source_server, "meter-list")
        with (
            nbdb.connect(source_server.url) as source,
            nbdb.connect(f"memory://meters-{s}") as middle,
            nbdb.connect(f"{ovsdb_server.url}?namespace=meters{s}") as back,
        ):
            Copier(source, middle).run()  # every model: nothing unmapped is left to refuse it
            assert [len(middle.list(m)) for m in models] == [1, 1, 1, 1]
            # OVN's Static_MAC_Binding has no external_ids: a copy holding one is refused before writing.
            with pytest.raises(nbdb.UnsupportedError, match=r"StaticMACBinding objects .*Static_MAC_Binding has no"):
                Copier(middle, back, CopyOptions(models=models)).run()
            assert back.list(Meter) == []
            middle.delete(middle.list(StaticMACBinding)[0])
            result = Copier(middle, back, CopyOptions(models=models)).run()
            assert result.differences == []
    assert f"m-{s}: (fair) bands:\n  drop: 100 pktps, 20 packet burst" in shown
    assert f"m-{s}: (fair) bands:\n  drop: 100 pktps, 20 packet burst" in nbctl(ovsdb_server, "meter-list")
    assert nbctl(ovsdb_server, "get", "Chassis_Template_Var", f"hv-{s}", "variables:vip") == '"10.0.0.1"'


def _added_meter(nb: OvsdbServer, reader: nbdb.Database, name: str) -> tuple[Meter, MeterBand]:
    """A meter ``ovn-nbctl meter-add`` made (one band: drop, 10 kbps), and its band, as nbdb reads them."""
    nbctl(nb, "meter-add", name, "drop", "10", "kbps")
    meter = reader.get_by(Meter, name=name)
    assert meter is not None
    (band,) = [b for b in reader.list(MeterBand) if b.meter == meter.id]
    return meter, band


@pytest.mark.parametrize("delete_first", [False, True])
def test_replacing_a_meter_s_only_band_in_one_transaction(
    ovsdb_server: OvsdbServer,  # noqa: F811
    db: nbdb.Database,  # noqa: F811
    delete_first: bool,
) -> None:
    # ovsdb-server accepts one transaction inserting a new band and deleting the old one, as long as
    # Meter.bands holds >= 1 after each mutate. The planner's order must not depend on the caller's.
    s = uuid.uuid4().hex[:8]
    meter, old = _added_meter(ovsdb_server, db, f"m-{s}")
    with db.transaction() as txn:
        if delete_first:
            txn.delete(old)
        new = txn.create(MeterBand(meter=meter, rate=99))
        if not delete_first:
            txn.delete(old)
    assert nbctl(ovsdb_server, "get", "Meter", f"m-{s}", "bands") == f"[{new.id}]"


def test_a_copy_with_a_meter_at_a_batch_boundary_is_written(ovsdb_server: OvsdbServer) -> None:  # noqa: F811
    # A valid source (a meter with its band, 199 objects ordered before it) copied with the default
    # --batch 200: the meter fell last in the first batch, its band first in the next, and the meter
    # alone was refused (its batch retried in halves, then one by one), stopping the copy.
    s = uuid.uuid4().hex[:8]
    with (
        nbdb.connect(f"memory://meters-{s}") as source,
        nbdb.connect(f"{ovsdb_server.url}?namespace=meters{s}") as dest,
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


def test_meters_applied_in_batches_are_written_and_deleted_with_their_bands(
    ovsdb_server: OvsdbServer,  # noqa: F811
) -> None:
    # Batches of 3 (every meter first, then every band, as tables order them) and a limit of one write:
    # neither may write a meter without its band, nor delete a meter's last band with the meter left.
    s = uuid.uuid4().hex[:8]
    meters = [Meter(name=f"m{i}-{s}", unit="kbps") for i in range(3)]
    bands = [MeterBand(meter=m.id, rate=10 + i) for i, m in enumerate(meters)]
    wanted: dict[tuple[str, uuid.UUID], Model | None] = {key_of(o): o for o in [*meters, *bands]}
    with nbdb.connect(f"{ovsdb_server.url}?namespace=meters{s}") as dest:
        limited = Applier(dest, limit=1)
        with pytest.raises(WriteLimitReached):
            limited.apply(wanted)
        assert limited.writes == 2 and len(dest.list(Meter)) == 1  # a meter and its band: one unit
        applier = Applier(dest, limited.state, batch=3)
        assert applier.apply(wanted) == 4
        assert sorted(b.rate for b in dest.list(MeterBand)) == [10, 11, 12]
        assert applier.apply(dict.fromkeys(wanted)) == 6
        assert dest.list(Meter) == [] and dest.list(MeterBand) == []


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


@pytest.mark.parametrize("kind", ["ovsdb", "redis", "memory"])
@pytest.mark.parametrize("how", ["plain", "cascade", "transaction"])
def test_a_meter_delete_takes_its_two_bands_along(
    kind: str,
    how: str,
    ovsdb_server: OvsdbServer,  # noqa: F811
    redis_server: RedisServer,  # noqa: F811
) -> None:
    # "transaction": docs/semantics.md, an update of an owned object in the transaction deleting its
    # owner is that object's delete, its results entry None, on every backend (conformance
    # test_references.py). On OVSDB the meter's delete waited for the replica's bands, so the server
    # took the band along unseen: the commit waited 20 s for the updated band to show, then returned it.
    s = uuid.uuid4().hex[:8]
    urls = {"ovsdb": ovsdb_server.url, "redis": f"{redis_server.url}?namespace=meters{s}"}
    with nbdb.connect(urls.get(kind, f"memory://meters-{s}")) as d:
        with d.transaction() as txn:
            meter = txn.create(Meter(name=f"m-{s}", unit="kbps"))
            band = txn.create(MeterBand(meter=meter, rate=10))
            txn.create(MeterBand(meter=meter, rate=20))
        d.update(d.get(Meter, meter.id).replace(name=f"n-{s}", unit="pktps", fair=True))
        assert len([b for b in d.list(MeterBand) if b.meter == meter.id]) == 2
        if how == "transaction":
            with d.transaction() as txn:
                txn.update(d.get(MeterBand, band.id).replace(rate=99))
                txn.delete(d.get(Meter, meter.id))
            assert txn.results[0] is None
        else:
            d.delete(d.get(Meter, meter.id), cascade=how == "cascade")
        assert [b for b in d.list(MeterBand) if b.meter == meter.id] == []


def test_a_meter_deleted_in_the_transaction_moving_its_only_band_to_another_meter(
    ovsdb_server: OvsdbServer,  # noqa: F811
    db: nbdb.Database,  # noqa: F811
) -> None:
    # docs/semantics.md: an owned object a transaction moves to an owner it does not delete stays. On
    # OVSDB the meter's delete waited for the bands the transaction deletes only: m1.bands still held the
    # moved band (its "delete" mutate is left to the meter's delete), so the commit raised ReferenceError.
    s = uuid.uuid4().hex[:8]
    m1, band = _added_meter(ovsdb_server, db, f"m1-{s}")
    m2, kept = _added_meter(ovsdb_server, db, f"m2-{s}")
    with db.transaction() as txn:
        txn.delete(m1)
        txn.update(band.replace(meter=m2.id, rate=11))
    assert txn.results[0] is None and txn.results[1] is not None and txn.results[1].meter == m2.id
    assert db.get_by(Meter, name=f"m1-{s}") is None
    assert db.get(MeterBand, band.id).meter == m2.id
    shown = nbctl(ovsdb_server, "get", "Meter", f"m2-{s}", "bands").strip("[]").split(", ")
    assert sorted(shown) == sorted([str(band.id), str(kept.id)])
    assert f"m1-{s}:" not in nbctl(ovsdb_server, "meter-list")


def test_creating_a_meter_under_a_name_taken_is_a_unique_violation(
    ovsdb_server: OvsdbServer,  # noqa: F811
    db: nbdb.Database,  # noqa: F811
) -> None:
    # The planner refused the band-less meter ("create the first object it holds in the same transaction")
    # before the server's index on Meter.name could answer: may_exist raised instead of returning it.
    s = uuid.uuid4().hex[:8]
    stored, _ = _added_meter(ovsdb_server, db, f"m-{s}")
    assert db.create(Meter(name=f"m-{s}", unit="kbps"), may_exist=True) == stored
    with pytest.raises(nbdb.UniqueViolationError) as caught:
        db.create(Meter(name=f"m-{s}", unit="pktps"))
    assert caught.value.existing == stored.id
    # A name nobody holds: the band-less meter is still refused before anything is sent.
    with pytest.raises(nbdb.ValidationError, match="at least one"):
        db.create(Meter(name=f"free-{s}", unit="kbps"), may_exist=True)


@pytest.mark.parametrize("batch", [200, 1])
@pytest.mark.parametrize("new_owner", [False, True])
def test_applying_a_meter_s_delete_whose_only_band_moved_to_another_meter(
    ovsdb_server: OvsdbServer,  # noqa: F811
    batch: int,
    new_owner: bool,
) -> None:
    # A source where m1 was deleted as its only band moved to m2 (stored already, or new): the band's
    # update was written before the deletes, alone, left m1 without a band, and OVSDB refused the copy.
    s = uuid.uuid4().hex[:8]
    m1, m2 = Meter(name=f"m1-{s}", unit="kbps"), Meter(name=f"m2-{s}", unit="kbps")
    b1, b2 = MeterBand(meter=m1.id, rate=1), MeterBand(meter=m2.id, rate=2)
    first = [m1, b1] if new_owner else [m1, m2, b1, b2]
    with nbdb.connect(f"{ovsdb_server.url}?namespace=meters{s}") as dest:
        applier = Applier(dest, batch=batch)
        applier.apply({key_of(o): o for o in first})
        moved = b1.replace(meter=m2.id)
        wanted: dict[tuple[str, uuid.UUID], Model | None] = {key_of(m1): None, key_of(b1): moved}
        if new_owner:
            wanted[key_of(m2)] = m2
        limited = Applier(dest, applier.state, batch=batch, limit=1)
        # The band's update and m1's delete (m2's create too): one unit, which a limit does not split.
        assert limited.apply(wanted) == (3 if new_owner else 2)
        assert [m.name for m in dest.list(Meter)] == [f"m2-{s}"]
        assert Applier(dest, limited.state, batch=batch).apply(wanted) == 0
        assert dest.get(MeterBand, b1.id).meter == m2.id
        assert nbctl(ovsdb_server, "get", "Meter", f"m2-{s}", "bands").count("-") == (4 if new_owner else 8)


def test_an_overwrite_copy_of_a_meter_deleted_as_its_only_band_moved(ovsdb_server: OvsdbServer) -> None:  # noqa: F811
    # The same through Copier: the source's transaction (m1 deleted, its band moved to m2) copied over
    # the destination's earlier copy was refused by OVSDB (m1 left without a band), stopping the copy.
    s = uuid.uuid4().hex[:8]
    models = [Meter, MeterBand]
    with (
        nbdb.connect(f"memory://meters-{s}") as source,
        nbdb.connect(f"{ovsdb_server.url}?namespace=meters{s}") as dest,
    ):
        with source.transaction() as txn:
            m1 = txn.create(Meter(name=f"m1-{s}", unit="kbps"))
            m2 = txn.create(Meter(name=f"m2-{s}", unit="kbps"))
            band = txn.create(MeterBand(meter=m1, rate=1))
            txn.create(MeterBand(meter=m2, rate=2))
        Copier(source, dest, CopyOptions(models=models)).run()
        with source.transaction() as txn:
            txn.delete(source.get(Meter, m1.id))
            txn.update(source.get(MeterBand, band.id).replace(meter=m2.id))
        assert Copier(source, dest, CopyOptions(models=models, overwrite=True)).run().differences == []
        assert [m.name for m in dest.list(Meter)] == [f"m2-{s}"]
        assert dest.get(MeterBand, band.id).meter == m2.id


def test_static_mac_bindings_are_written_both_ways(
    ovsdb_server: OvsdbServer,  # noqa: F811
    db: nbdb.Database,  # noqa: F811
) -> None:
    # Issue 14: Static_MAC_Binding has no external_ids, where nbdb keeps an object's version and commit
    # tokens: it was read only, while ovn-nbctl static-mac-binding-add and Neutron write it. Now written
    # with its columns alone: a compare-and-swap compares them, the version is counted by the connection.
    s = uuid.uuid4().hex[:8]
    nbctl(ovsdb_server, "lr-add", f"lr-{s}")
    nbctl(ovsdb_server, "lrp-add", f"lr-{s}", f"lrp-{s}", "0a:00:00:00:00:fe", "10.0.0.1/24")
    binding = db.create(StaticMACBinding(logical_port=f"lrp-{s}", ip="10.0.0.7", mac="0a:00:00:00:00:07"))
    assert binding.version == 1
    assert "10.0.0.7" in nbctl(ovsdb_server, "static-mac-binding-list")
    assert nbctl(ovsdb_server, "get", "Static_MAC_Binding", str(binding.id), "mac") == '"0a:00:00:00:00:07"'
    moved = db.update(binding.replace(mac="0a:00:00:00:00:08", override_dynamic_mac=True))
    assert moved.version == 2
    assert nbctl(ovsdb_server, "get", "Static_MAC_Binding", str(binding.id), "mac", "override_dynamic_mac").split() == [
        '"0a:00:00:00:00:08"',
        "true",
    ]
    with pytest.raises(nbdb.ConflictError):
        db.update(binding.replace(mac="0a:00:00:00:00:09"))  # a stale copy: refused, nothing written
    # ovn-nbctl's change is a new version; a copy from before it is refused, the current one goes through.
    nbctl(ovsdb_server, "set", "Static_MAC_Binding", str(binding.id), 'mac="0a:00:00:00:00:0a"')
    with pytest.raises(nbdb.ConflictError):
        db.update(moved.replace(mac="0a:00:00:00:00:0b"))
    current = db.get(StaticMACBinding, binding.id)
    assert current.mac == "0a:00:00:00:00:0a" and current.version == 3
    db.update(current.replace(mac="0a:00:00:00:00:0c"))
    assert nbctl(ovsdb_server, "get", "Static_MAC_Binding", str(binding.id), "mac") == '"0a:00:00:00:00:0c"'
    # What only external_ids could hold is refused before anything is sent.
    with pytest.raises(nbdb.UnsupportedError, match="Static_MAC_Binding has no external_ids"):
        db.create(StaticMACBinding(logical_port=f"lrp-{s}", ip="10.0.0.9", mac="0a:00:00:00:00:09", topic="t"))
    db.delete(db.get(StaticMACBinding, binding.id))
    assert "10.0.0.7" not in nbctl(ovsdb_server, "static-mac-binding-list")
    # OVN's index keeps one binding per (port, IP): a second one names the holder.
    nbctl(ovsdb_server, "static-mac-binding-add", f"lrp-{s}", "10.0.0.5", "0a:00:00:00:00:05")
    with pytest.raises(nbdb.UniqueViolationError):
        db.create(StaticMACBinding(logical_port=f"lrp-{s}", ip="10.0.0.5", mac="0a:00:00:00:00:06"))
