"""What a planned put keeps of the row it writes stands for what reading the row back would give.

The OVSDB planner returns ``render_written(...).refs`` (the document as it
will be read back) instead of computing ``refs_of`` of the caller's document a
second time; the two must be the same set for every model and every value,
or a commit would check the wrong targets for existence and the replica's
reverse references would drift. And the wire form it sends is kept for the
next compare-and-swap of the row (``Replica.stored_wire``): it must be what
``stored_columns`` makes of the row as written.
"""

from __future__ import annotations

import dataclasses
import decimal
import ipaddress
import json
import pathlib
import uuid
from typing import Any, ClassVar

import pydantic
import pydantic_core
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.codec import encode
from nbdb.families.ovsdb import OVN_BINDINGS, DatabaseSchema, Mapping_, build_mapping
from nbdb.families.ovsdb.datum import wire_map
from nbdb.families.ovsdb.ovn import OVN_NB_DATABASE
from nbdb.families.ovsdb.rows import (
    EXTERNAL_IDS,
    kept_wire,
    new_row,
    refs_of,
    render,
    render_written,
    stored_columns,
    to_keep,
)
from nbdb.models import base as model_base
from nbdb.models.base import Model
from nbdb.models.shape import model_shapes
from nbdb.testing.errors import ServerNotInstalledError
from nbdb.testing.ovsdb import find_ovn_nb_schema
from nbdb.testing.strategies import OVN_MODELS, ovn_objects


def _mapping() -> Mapping_ | None:
    try:
        path = find_ovn_nb_schema()
    except ServerNotInstalledError:
        return None
    schema = DatabaseSchema.parse(json.loads(path.read_text()))
    return build_mapping({OVN_NB_DATABASE: schema}, {OVN_NB_DATABASE: OVN_BINDINGS}, model_shapes())


_NB = _mapping()
# The models the Northbound schema holds (Chassis and other Southbound-side models are not in it).
_MAPPED = tuple(m for m in OVN_MODELS if _NB is not None and m.nbdb_table in _NB.tables)
# Of those, the ones nbdb writes (a table without external_ids, such as Load_Balancer_Group, is read-only).
_WRITABLE = tuple(m for m in _MAPPED if _NB is not None and _NB.tables[m.nbdb_table].external_ids is not None)


@pytest.mark.skipif(_NB is None, reason="the OVN Northbound schema is not installed (Debian package ovn-common)")
def test_the_built_in_models_weak_references_are_the_northbound_schemas() -> None:
    """A reference kept in a column is weak exactly where the served schema says ``"refType": "weak"``.

    Marked strong where OVN has it weak (a port group's ports), deleting a port in a group raised
    ReferenceError on every backend, where ovsdb-server drops the port from the group.
    """
    assert _NB is not None
    checked = {}
    for model in _MAPPED:
        tm = _NB.tables[model.nbdb_table]
        for spec in model.nbdb_references:
            if tm.refs.get(spec.field, ("", ""))[1] == "column":
                checked[f"{model.__name__}.{spec.field}"] = spec.weak
                assert spec.weak == (tm.columns[spec.field].type.key.ref_type == "weak"), spec
    assert checked["PortGroup.ports"] and checked["LogicalSwitchPort.dhcpv4_options"]


@pytest.mark.skipif(_NB is None, reason="the OVN Northbound schema is not installed (Debian package ovn-common)")
def test_most_models_map_onto_the_northbound_schema() -> None:
    assert _NB is not None
    assert {"LogicalSwitch", "LogicalSwitchPort", "LogicalRouter", "LogicalRouterPort", "ACL", "NAT"} <= {
        m.__name__ for m in _MAPPED
    }


@pytest.mark.skipif(_NB is None, reason="the OVN Northbound schema is not installed (Debian package ovn-common)")
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ovn_objects(_WRITABLE or OVN_MODELS))
def test_the_rendered_rows_bytes_and_references_are_the_documents_and_its_wire_form_the_rows(obj: Model) -> None:
    assert _NB is not None
    tm = _NB.get(type(obj).nbdb_table)
    doc = json.loads(encode(obj))
    cells, wire, ext, parents, values = new_row(tm, doc)
    written = {**cells, EXTERNAL_IDS: ext}
    rendered = render_written(tm, obj.id, written, parents, values)
    # Made from the values new_row made with the cells: byte for byte what rendering the row makes.
    again = render(tm, obj.id, written, parents)
    assert (rendered.data, rendered.state.digest, rendered.refs) == (again.data, again.state.digest, again.refs)
    wire[EXTERNAL_IDS] = wire_map(ext.items())
    assert stored_columns(tm, written) == wire
    # As the replica keeps it for the row's next compare-and-swap: the same datums back.
    kept = to_keep(wire)
    assert kept is not None and kept_wire(kept) == wire
    assert rendered.refs == refs_of(tm, doc)
    # And both are what the model itself says it references.
    assert rendered.refs == frozenset((table, uuid.UUID(str(id))) for table, id in obj.ref_keys())


def _general(tm: Any) -> Any:
    """``tm`` with every column on new_row's general path (field_cell, to_wire, _doc_value per column)."""
    columns = {}
    for name, cm in tm.columns.items():
        general = dataclasses.replace(cm)
        object.__setattr__(general, "plain", "")
        columns[name] = general
    return dataclasses.replace(tm, columns=columns)


def _made(tm: Any, doc: dict[str, Any]) -> Any:
    try:
        return new_row(tm, doc)
    except (nbdb.ValidationError, nbdb.UnsupportedError, TypeError) as exc:
        return (type(exc), str(exc))


_TEXT = st.text(max_size=6) | st.sampled_from(["", "\ufffex", "a\x00b"])  # the last two are stored escaped
_VALUES = st.one_of(
    st.none(),
    _TEXT,
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=False, width=16),
    st.lists(_TEXT, max_size=4),
    st.lists(_TEXT | st.integers(0, 3) | st.none(), max_size=3),
    st.tuples(_TEXT),
    st.dictionaries(_TEXT, _TEXT, max_size=4),
    st.dictionaries(_TEXT, _TEXT | st.integers(0, 3) | st.none(), max_size=3),
)


@pytest.mark.skipif(_NB is None, reason="the OVN Northbound schema is not installed (Debian package ovn-common)")
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ovn_objects(_MAPPED or OVN_MODELS), st.data())
def test_a_new_rows_plain_columns_are_what_the_general_path_makes_of_them(obj: Model, data: st.DataObject) -> None:
    """The one-step path of OVN's column shapes gives the cells, datums and values (or error) the general one does.

    For a model's own document, and for that document with any of its mapped fields set to a
    value of another shape (which takes the general path, and its errors).
    """
    assert _NB is not None
    tm = _NB.get(type(obj).nbdb_table)
    doc = json.loads(encode(obj))
    assert _made(tm, doc) == _made(_general(tm), doc)
    changed = dict(doc)
    for name in data.draw(st.lists(st.sampled_from(sorted(tm.columns)), max_size=3, unique=True)):
        changed[name] = data.draw(_VALUES)
    assert _made(tm, changed) == _made(_general(tm), changed)


# ---------------------------------------------------------------- the stored copy a row read back as written carries


class _Sink:
    """A stream the replica hands each transaction's changes to (as the Database's shared watch is): what it got."""

    closed = False

    def __init__(self, replica: Any) -> None:
        self.replica = replica
        self.got: list[Any] = []

    def hand_over(self) -> None:
        with self.replica.cond:
            self.got += [c for c in self.replica.history if c.revision == self.replica.revision]


def _replica_of(mapping: Mapping_) -> Any:
    from nbdb.families.ovsdb import Replica
    from nbdb.families.ovsdb.rows import VersionBook

    replica = Replica(mapping, VersionBook(), "")
    replica.resync(OVN_NB_DATABASE, {})
    replica.sink = _Sink(replica)
    replica.add_sink(replica.sink)
    return replica


def _no_copy_kept(replica: Any) -> None:
    """The replica's records (a list, a cache's load) and its kept history (a later poll) hold bytes alone."""
    assert all(record.value is None for record in replica.records.values())
    assert all(c.new is None or c.new.value is None for c in replica.history)


def _plan(mapping: Mapping_, replica: Any, ops: list[Any]) -> Any:
    import time

    from nbdb.families.ovsdb.planner import plan_commit

    with replica.cond:
        plan = plan_commit(mapping, replica, ops, uuid.uuid4().hex[:16], now=time.time())
        replica.expect(plan.written)
    return plan


def _decoded_alike(model: type[Model], record: Any, value: Model) -> None:
    """The slow path's copy of ``record`` (its bytes validated) holds what ``value`` holds, field by field."""
    from nbdb.codec import decode

    slow = decode(model, record._replace(value=None), share=False)
    assert slow.__dict__ == value.__dict__ and slow.__pydantic_extra__ == value.__pydantic_extra__
    assert {k: type(v) for k, v in slow.__dict__.items()} == {k: type(v) for k, v in value.__dict__.items()}
    assert encode(slow) == encode(value)


@pytest.mark.skipif(_NB is None, reason="the OVN Northbound schema is not installed (Debian package ovn-common)")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ovn_objects(tuple(m for m in _WRITABLE if not m.nbdb_references) or OVN_MODELS), st.data())
def test_a_row_read_back_as_written_carries_only_a_copy_its_bytes_decode_to(obj: Model, data: st.DataObject) -> None:
    """The shared copy (no validation) is exactly what decoding the change's bytes gives, for every object.

    For each object a root model holds, and a port of a switch (any values of its fields), a
    create's and an update's change carry the copy the Database stored, or none (then readers
    decode); when they carry one, the slow path's decode of the same record holds the same
    values of the same types. A table whose rows hold at least one child (OVN's Meter.bands) is
    created with its first child, as it must be.
    """
    from nbdb.models import LogicalSwitch, LogicalSwitchPort, MeterBand
    from nbdb.testing.ovsdb_play import server_update
    from nbdb.writes import put_of

    assert _NB is not None
    replica = _replica_of(_NB)
    switch = put_of(LogicalSwitch(name="sw"), 0)[0]
    replica.apply(OVN_NB_DATABASE, server_update(replica, OVN_NB_DATABASE, _plan(_NB, replica, [switch]).ops))
    port = data.draw(ovn_objects((LogicalSwitchPort,))).replace(switch=switch.id, chassis=None)
    again = data.draw(ovn_objects((LogicalSwitchPort,)))
    carried = 0
    for one in (obj, port):
        put, copy = put_of(one, 0)
        for step in range(2):
            held = step == 0 and _NB.get(one.nbdb_table).held_at_least_one
            band = [put_of(MeterBand(meter=one.id, rate=1), 0)[0]] if held else []
            plan = _plan(_NB, replica, [put, *band])
            update = server_update(replica, OVN_NB_DATABASE, plan.ops)
            replica.apply(OVN_NB_DATABASE, json.loads(json.dumps(update)))  # as the wire brings it
            (change,) = [c for c in replica.sink.got if c.id == one.id and c.revision == replica.revision]
            _no_copy_kept(replica)
            if change.new.value is not None:
                assert change.new.value is copy and change.new.version == copy.version
                _decoded_alike(type(one), change.new, copy)
                carried += 1
            if step == 0 and one is port:  # an update of the port: other values of every field but its place
                fields = {k: getattr(again, k) for k in type(again).model_fields if k not in ("id", "topic", "version")}
                put, copy = put_of(copy.replace(**{**fields, "switch": switch.id, "chassis": None}), copy.version)
            elif step == 0:
                put, copy = put_of(copy, copy.version)
    assert carried >= 2  # the port's create and update at least


@pytest.mark.skipif(_NB is None, reason="the OVN Northbound schema is not installed (Debian package ovn-common)")
def test_a_row_another_writer_changed_in_the_same_update_carries_no_copy() -> None:
    """Read back otherwise than written (another writer's change merged into the update): decoded, not shared."""
    from nbdb.testing.ovsdb_play import server_update
    from nbdb.writes import put_of

    assert _NB is not None
    replica = _replica_of(_NB)
    switch = nbdb.models.LogicalSwitch(name="sw")
    put, copy = put_of(switch, 0)
    plan = _plan(_NB, replica, [put])
    replica.apply(OVN_NB_DATABASE, server_update(replica, OVN_NB_DATABASE, plan.ops))
    assert replica.sink.got[-1].new.value is copy  # as written: the stored copy, handed to the sink
    _no_copy_kept(replica)
    put, copy = put_of(copy.replace(name="mine"), copy.version)
    plan = _plan(_NB, replica, [put])
    update = server_update(replica, OVN_NB_DATABASE, plan.ops)
    update["Logical_Switch"][str(switch.id)]["modify"]["name"] = "theirs"  # ovn-nbctl's, in the same update
    replica.apply(OVN_NB_DATABASE, update)
    change = replica.sink.got[-1]
    assert change.id == switch.id and change.new.value is None and b'"theirs"' in change.new.data
    _no_copy_kept(replica)


_SCALARS = st.none() | st.booleans() | st.integers(-2, 2) | st.floats(-2, 2) | st.text("x\u00e9", max_size=2)
_DOCS = st.dictionaries(st.sampled_from("abcd"), _SCALARS | st.lists(st.text("xy", max_size=1), max_size=2), max_size=4)


@settings(max_examples=500, deadline=None)
@given(_DOCS, _DOCS, st.dictionaries(st.sampled_from("abcd"), st.none() | st.integers(0, 1), max_size=2))
def test_reads_back_as_says_yes_only_for_the_same_json_values_of_the_same_types(
    doc: dict[str, Any], other: dict[str, Any], optional: dict[str, Any]
) -> None:
    """In a loose field (``Any``, a union) ``1``, ``1.0`` and ``true`` are different documents (Python's ==
    says they are equal), and a key the rendered document lacks is only its default."""
    from nbdb.families.ovsdb.rows import reads_back_as

    filled = {**{k: v for k, v in optional.items() if k in doc and k not in other}, **other}
    same = json.dumps(doc, sort_keys=True) == json.dumps(filled, sort_keys=True)
    assert reads_back_as(doc, dict(other), optional, "abcd") is same
    assert reads_back_as(doc, dict(doc), {}, ()) is True
    assert reads_back_as({"n": 1}, {"n": True}, {}, ("n",)) is False
    assert reads_back_as({"n": [1.0]}, {"n": [1]}, {}, ("n",)) is False
    # A field of one atomic kind decodes 1 and true alike (its type decides): not loose, equal enough.
    assert reads_back_as({"n": 1}, {"n": True}, {}, ()) is True


_ATOMS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=3) | st.uuids()


def _nested(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    from nbdb.models.shared import FrozenDict, FrozenList

    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.lists(inner, max_size=3).map(FrozenList)
            | st.lists(inner, max_size=3).map(tuple)
            | st.dictionaries(st.text(max_size=2), inner, max_size=3)
            | st.dictionaries(st.text(max_size=2), inner, max_size=3).map(FrozenDict)
        ),
        max_leaves=8,
    )


def _changeable(value: Any) -> bool:
    """Whether some list, map, set or model in ``value`` can be changed in place."""
    from nbdb.models.shared import FrozenDict, FrozenList, FrozenSet

    if isinstance(value, pydantic.BaseModel):
        return True
    if isinstance(value, dict):
        return type(value) is not FrozenDict or any(_changeable(v) for v in value.values())
    if isinstance(value, list | set):
        return type(value) not in (FrozenList, FrozenSet) or any(_changeable(v) for v in value)
    if isinstance(value, tuple | frozenset):
        return any(_changeable(v) for v in value)
    return False


def _reads_back_as_itself(value: Any) -> bool:
    """Whether ``value``, under ``Any``, is what its JSON decodes to there (JSON's own types, frozen through):
    a UUID reads back as text, a tuple as a list."""
    from nbdb.models.shared import deep_frozen

    return repr(deep_frozen(json.loads(pydantic_core.to_json(value)), known=False)) == repr(value)


class _Loose(pydantic.BaseModel):
    """As a stored copy looks to :func:`rows.sealed`: its fields' values, and the fields of a newer model."""

    model_config = pydantic.ConfigDict(extra="allow", arbitrary_types_allowed=True)
    nbdb_deep_fields: ClassVar[tuple[str, ...]] = ("anything",)  # as Model derives it: a field of Any may nest

    anything: Any = None


@settings(max_examples=500, deadline=None)
@given(_nested(_ATOMS), st.dictionaries(st.sampled_from("xy"), _ATOMS, max_size=1))
def test_only_a_copy_frozen_through_is_sealed(value: Any, extra: dict[str, Any]) -> None:
    """A copy whose loose field holds a list, map or model anywhere inside, or that holds fields
    of a newer model (a plain dict), is not shared: its holder could change the cache's copy."""
    from nbdb.families.ovsdb.rows import sealed

    copy = _Loose.model_construct(anything=value, **extra)
    assert sealed(copy, ("anything",)) is (not _changeable(value) and _reads_back_as_itself(value) and not extra)
    assert sealed(_Loose.model_construct(anything=_Loose()), ("anything",)) is False


class _Sealable(Model):
    nbdb_table: ClassVar[str] = "OvsdbSealable"

    raw: bytes | int = 0
    """A loose field (``json``) of atoms only: it never nests, but it is a union, so its value is looked at."""
    anything: Any = None
    """A loose field that may nest (``nbdb_deep_fields``): frozen through, and looked at."""
    typed: dict[str, list[tuple[bytes, ipaddress.IPv6Network, pathlib.PurePath, decimal.Decimal]]] = {}
    """A loose field that may nest, of no value of any class: its atoms read back as their classes."""


model_base._REGISTRY.pop(_Sealable.nbdb_table)  # no Database of these tests maps it


@pytest.mark.parametrize(
    ("raw", "anything", "shared"),
    [
        (b"\x00", None, False),  # a union's: JSON's types only (b"x" in str | bytes reads back as "x")
        (7, [1, {"k": "a"}], True),
        (7, ipaddress.IPv4Address("10.0.0.1"), False),  # reads back as text under Any
        (0, (b"x", pathlib.PurePath("a"), decimal.Decimal("1.5")), False),  # a list of text
        (b"x", [b"y", {"k": ipaddress.IPv6Network("::/64")}], False),
        (0, _Loose(), False),
        (0, [_Loose()], False),
    ],
)
def test_a_stored_copy_is_sealed_by_its_deep_fields_values_and_what_a_frozen_copy_keeps(
    raw: Any, anything: Any, shared: bool
) -> None:
    """Which loose fields are looked at is what the model's deep freeze decided (``nbdb_deep_fields``), and
    an atom is what a frozen copy keeps as it is (``IMMUTABLE``): bytes, an IP address or network, a path
    (in a loose field, or frozen through inside one) were held changeable, and such a copy never shared."""
    from nbdb.families.ovsdb.rows import _PLAIN_ATOMS, sealed
    from nbdb.models.shared import is_immutable_class

    assert all(is_immutable_class(kind) for kind in _PLAIN_ATOMS)  # a quicker look, never another rule
    assert _Sealable.nbdb_deep_fields == ("anything", "typed")
    copy = _Sealable(id=uuid.uuid4(), topic="t", raw=raw, anything=anything).stored_copy(1)
    assert sealed(copy, ("raw", "anything", "typed")) is shared
    # A typed field that may nest reads its atoms back as their classes: frozen through, they are shared.
    typed = {"k": [(b"y", ipaddress.IPv6Network("::/64"), pathlib.PurePath("a"), decimal.Decimal("1.5"))]}
    assert sealed(_Sealable(typed=typed).stored_copy(1), ("raw", "anything", "typed")) is True


@pytest.mark.skipif(_NB is None, reason="the OVN Northbound schema is not installed (Debian package ovn-common)")
def test_a_meter_is_inserted_holding_its_bands_and_deleted_holding_them() -> None:
    """OVN's ``Meter.bands`` holds at least one band: ovsdb-server parses an empty set there as a syntax
    error, its default is a set of one zero uuid (a reference to no row), and a ``mutate`` that empties
    it is refused. So a new meter's insert names its bands, and a meter's delete leaves them in place
    for the row's delete to drop, waiting for exactly the bands the commit deletes itself: a band it
    keeps or updates refuses the delete (nbdb then walks the meter's bands and plans again)."""
    from nbdb.models import Meter, MeterBand
    from nbdb.spi import Delete
    from nbdb.testing.ovsdb_play import server_update
    from nbdb.writes import put_of

    assert _NB is not None
    replica = _replica_of(_NB)
    meter = Meter(name="m", unit="kbps")
    bands = [MeterBand(meter=meter.id, rate=10), MeterBand(meter=meter.id, rate=20)]
    # Refused before anything is sent; the family first asks whether another meter holds its name.
    alone = _plan(_NB, replica, [put_of(meter, 0)[0]])
    assert alone.ops == [] and alone.refused is not None and "at least one" in str(alone.refused)
    assert [(check.key, check.rule.field) for check in alone.unique] == [(("Meter", meter.id), "name")]
    plan = _plan(_NB, replica, [put_of(meter, 0)[0], *(put_of(b, 0)[0] for b in bands)])
    assert plan.refused is None
    (insert,) = [op for op in plan.ops if op["op"] == "insert" and op["table"] == "Meter"]
    assert sorted(insert["row"]["bands"][1]) == sorted(["uuid", str(b.id)] for b in bands)
    assert [op for op in plan.ops if op["op"] == "mutate" and op["table"] == "Meter"] == []
    replica.apply(OVN_NB_DATABASE, json.loads(json.dumps(server_update(replica, OVN_NB_DATABASE, plan.ops))))
    deletes = [Delete("Meter", meter.id, None), *(Delete("MeterBand", b.id, None) for b in bands)]
    plan = _plan(_NB, replica, deletes)
    assert [op for op in plan.ops if op["op"] == "mutate" and op["table"] == "Meter"] == []
    (held,) = [op for op in plan.ops if op["op"] == "wait" and op.get("columns") == ["bands"]]
    assert sorted(held["rows"][0]["bands"][1]) == sorted(["uuid", str(b.id)] for b in bands)
    # One band deleted with the meter, the other left (or updated): the wait names the one alone, and
    # none deleted: no row may match (the server refuses, as the meter holds a band).
    for others in ([Delete("MeterBand", bands[0].id, None)], []):
        plan = _plan(_NB, replica, [Delete("Meter", meter.id, None), *others])
        (held,) = [op for op in plan.ops if op["op"] == "wait" and op.get("columns") == ["bands"]]
        assert held["rows"] == ([{"bands": ["set", [["uuid", str(bands[0].id)]]]}] if others else [])
    # A band moved to another meter (here a new one, which it fills) is still in the set at the wait, as
    # its "delete" mutate is left to the meter's delete: the wait names it too (it refused every such move).
    other = Meter(name="n", unit="kbps")
    moved = [put_of(other, 0)[0], put_of(bands[1].replace(meter=other.id), 1)[0]]
    for others in ([Delete("MeterBand", bands[0].id, None)], []):
        plan = _plan(_NB, replica, [Delete("Meter", meter.id, None), *others, *moved])
        assert [op for op in plan.ops if op["op"] == "mutate" and op["table"] == "Meter"] == []
        (held,) = [op for op in plan.ops if op["op"] == "wait" and op.get("columns") == ["bands"]]
        expected = [bands[1], *(bands[:1] if others else [])]
        assert sorted(held["rows"][0]["bands"][1]) == sorted(["uuid", str(b.id)] for b in expected)
        (insert,) = [op for op in plan.ops if op["op"] == "insert" and op["table"] == "Meter"]
        assert insert["row"]["bands"] == ["set", [["uuid", str(bands[1].id)]]]


@pytest.mark.skipif(_NB is None, reason="the OVN Northbound schema is not installed (Debian package ovn-common)")
@pytest.mark.parametrize("delete_first", [False, True])
def test_a_set_gains_its_new_members_before_it_loses_its_old_ones(delete_first: bool) -> None:
    """A meter's only band replaced in one commit: the new band joins ``Meter.bands`` before the old one
    leaves, whatever the caller's order (emptied first, the server refuses the set of none)."""
    from nbdb.models import Meter, MeterBand
    from nbdb.spi import Delete
    from nbdb.testing.ovsdb_play import server_update
    from nbdb.writes import put_of

    assert _NB is not None
    replica = _replica_of(_NB)
    meter = Meter(name="m", unit="kbps")
    old, new = MeterBand(meter=meter.id, rate=10), MeterBand(meter=meter.id, rate=20)
    plan = _plan(_NB, replica, [put_of(meter, 0)[0], put_of(old, 0)[0]])
    replica.apply(OVN_NB_DATABASE, json.loads(json.dumps(server_update(replica, OVN_NB_DATABASE, plan.ops))))
    ops = [Delete("MeterBand", old.id, None), put_of(new, 0)[0]]
    plan = _plan(_NB, replica, ops if delete_first else ops[::-1])
    mutates = [op["mutations"][0][1] for op in plan.ops if op["op"] == "mutate" and op["table"] == "Meter"]
    assert mutates == ["insert", "delete"]
