"""The OVSDB family's data API without a server: unique rules and key columns, native mutations, marks, ttls, pages."""

from __future__ import annotations

import copy
import dataclasses
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.codec import encode
from nbdb.conformance.kit import KitChild, KitGroup, KitNamed, KitParent
from nbdb.families.ovsdb import DatabaseSchema, Mapping_, Replica, build_mapping
from nbdb.families.ovsdb.datum import cell_from_wire, cell_to_wire, default_cell
from nbdb.families.ovsdb.mutations import MarkBook
from nbdb.families.ovsdb.pages import Listings, state_at
from nbdb.families.ovsdb.planner import plan_commit
from nbdb.families.ovsdb.rows import EXT_EXPIRES, EXT_MARK, EXT_TTL, LEDGER_SKEW, VersionBook, carried
from nbdb.families.ovsdb.schemagen import generate_schema
from nbdb.families.ovsdb.settle import Outcome, reflects, settle
from nbdb.families.ovsdb.unique import holder_where, key_cells
from nbdb.models import LogicalSwitch, LogicalSwitchPort, PortGroup
from nbdb.models.shape import shape_of
from nbdb.spi import Mutate, Put, UniqueKey
from nbdb.writes import mutation_of, put_of

pytestmark = pytest.mark.timeout(60)

MakeMapping = Callable[[dict[str, Any] | None], Mapping_]

NB = "OVN_Northbound"
MODELS = "nbdb"
KIT = [KitParent, KitChild, KitGroup, KitNamed]


# ---------------------------------------------------------------- playing ovsdb-server's writes


def _where_id(op: dict[str, Any]) -> uuid.UUID:
    return uuid.UUID(op["where"][0][2][1])


def _mutated(ctype: Any, cell: Any, how: str, datum: Any) -> Any:
    if ctype.is_map:
        if how == "insert":
            return {**cell_from_wire(ctype, datum), **cell}  # an insert leaves a key that is there alone
        keys = {k for k in cell_from_wire(type(ctype)(ctype.key, None, 0, None), datum)}
        return {k: v for k, v in cell.items() if k not in keys}
    members = cell_from_wire(ctype, datum)
    return cell | members if how == "insert" else cell - members


def _diff(ctype: Any, old: Any, new: Any) -> Any:
    if ctype.is_map:
        pairs = {k: v for k, v in old.items() if k not in new}
        pairs.update({k: v for k, v in new.items() if old.get(k) != v})
        return cell_to_wire(ctype, pairs)
    if ctype.is_set:
        return cell_to_wire(ctype, old ^ new)
    return cell_to_wire(ctype, new)


def play(replica: Replica, db: str, ops: list[dict[str, Any]]) -> None:
    """Apply a plan's inserts, updates, mutates and deletes as ovsdb-server would send them (one update).

    Its waits and asserts are not evaluated: these tests look at what a plan
    sends and at what the replica makes of the server's answer.
    """
    view = replica.views[db]
    state: dict[tuple[str, uuid.UUID], dict[str, Any] | None] = {}
    for op in ops:
        table, kind = op.get("table"), op["op"]
        if kind not in ("insert", "update", "mutate", "delete"):
            continue
        types = view.types[table]
        if kind == "insert":
            key = (table, uuid.UUID(op["uuid"]))
            state[key] = {c: default_cell(t) for c, t in types.items()}
            state[key].update({c: cell_from_wire(types[c], d) for c, d in op["row"].items() if c in types})
            continue
        key = (table, _where_id(op))
        row = state[key] if key in state else copy.deepcopy(view.rows[table].get(key[1].int))
        assert row is not None, f"{kind} of a missing row {key}"
        if kind == "delete":
            state[key] = None
        elif kind == "update":
            row.update({c: cell_from_wire(types[c], d) for c, d in op["row"].items() if c in types})
            state[key] = row
        else:
            for column, how, datum in op["mutations"]:
                row[column] = _mutated(types[column], row[column], how, datum)
            state[key] = row
    updates: dict[str, dict[str, Any]] = {}
    for (table, id), new in state.items():
        old = view.rows[table].get(id.int)
        types = view.types[table]
        if new is None:
            change: dict[str, Any] = {"delete": None}
        elif old is None:
            change = {"insert": {c: cell_to_wire(types[c], v) for c, v in new.items()}}
        else:
            diff = {c: _diff(types[c], old.get(c), v) for c, v in new.items() if old.get(c) != v}
            change = {"modify": diff}
        updates.setdefault(table, {})[str(id)] = change
    replica.apply(db, updates)


# ---------------------------------------------------------------- fixtures


def _model_mapping(schema: dict[str, Any] | None = None) -> Mapping_:
    shapes = [shape_of(m) for m in KIT]
    parsed = DatabaseSchema.parse(schema or generate_schema(shapes, name=MODELS))
    return build_mapping({MODELS: parsed}, {}, shapes, MODELS)


def _replica(mapping: Mapping_, db: str, namespace: str = "") -> Replica:
    replica = Replica(mapping, VersionBook(), namespace)
    replica.resync(db, {})
    return replica


def _commit(mapping: Mapping_, replica: Replica, ops: list[Any], token: str = "t", **kw: Any) -> Any:
    with replica.cond:
        plan = plan_commit(mapping, replica, ops, token, **kw)
    play(replica, plan.db, plan.ops)
    return plan


def _create(mapping: Mapping_, replica: Replica, obj: Any, **kw: Any) -> Any:
    put, stored = put_of(obj, 0, kw.pop("ttl", None))
    _commit(mapping, replica, [put], uuid.uuid4().hex[:8], **kw)
    return stored


# ---------------------------------------------------------------- unique rules


def test_the_generated_schema_keeps_each_unique_group_in_an_indexed_key_column() -> None:
    schema = generate_schema([shape_of(KitNamed)], name=MODELS)
    table = schema["tables"]["KitNamed"]
    assert table["indexes"] == [["nbdb_unique_name"], ["nbdb_unique_zone_slot"]]
    assert table["columns"]["nbdb_unique_zone_slot"] == {"type": "string"}
    rules = {r.field: r for r in _model_mapping().tables["KitNamed"].unique}
    assert rules["name"].key_column == "nbdb_unique_name" and rules["name"].indexed
    assert rules["zone+slot"].fields == ("zone", "slot") and rules["zone+slot"].indexed


def test_a_model_database_without_the_index_or_the_column_falls_back_to_waits() -> None:
    schema = generate_schema([shape_of(m) for m in KIT], name=MODELS)
    schema["tables"]["KitNamed"]["indexes"] = [["nbdb_unique_name"]]
    del schema["tables"]["KitNamed"]["columns"]["nbdb_unique_zone_slot"]
    rules = {r.field: r for r in _model_mapping(schema).tables["KitNamed"].unique}
    assert rules["name"].indexed
    assert rules["zone+slot"].key_column is None and not rules["zone+slot"].indexed


def test_ovn_indexes_are_the_rules_of_the_ovn_tables(mapping_of: MakeMapping, nb_schema: dict[str, Any]) -> None:
    rules = mapping_of(None).tables["LogicalSwitchPort"].unique
    assert [(r.field, r.key_column, r.indexed, r.declared) for r in rules] == [("name", None, True, True)]
    older = copy.deepcopy(nb_schema)
    del older["tables"]["Logical_Switch_Port"]["indexes"]
    (rule,) = mapping_of(older).tables["LogicalSwitchPort"].unique
    assert not rule.indexed  # kept by a wait in each commit instead
    undeclared = copy.deepcopy(nb_schema)
    undeclared["tables"]["Logical_Switch"]["indexes"] = [["name"]]
    (rule,) = mapping_of(undeclared).tables["LogicalSwitch"].unique
    assert (rule.field, rule.indexed, rule.declared) == ("name", True, False)


def test_a_key_column_clash_is_a_validation_error() -> None:
    shape = shape_of(KitNamed)
    groups = (("zone", "slot"), ("zone_slot",))
    clashing = type(shape)(shape.table, shape.fields, shape.references, shape.indexes, groups)
    with pytest.raises(nbdb.ValidationError, match="clashes"):
        generate_schema([clashing], name=MODELS)


@pytest.mark.parametrize("table", ["_Loose", "9lives", "Über", "has-dash", ""])
def test_a_table_name_ovsdb_refuses_is_a_validation_error_naming_it(table: str) -> None:
    shape = shape_of(KitNamed)
    bad = type(shape)(table, shape.fields, shape.references, shape.indexes, shape.unique)
    with pytest.raises(nbdb.ValidationError, match="cannot be an OVSDB name") as raised:
        generate_schema([bad], name=MODELS)
    assert repr(table) in str(raised.value)


def test_a_column_name_ovsdb_refuses_is_a_validation_error_naming_it() -> None:
    shape = shape_of(KitNamed)
    field = dataclasses.replace(shape.fields[0], name="größe")
    bad = type(shape)(shape.table, (field, *shape.fields[1:]), shape.references, shape.indexes, shape.unique)
    with pytest.raises(nbdb.ValidationError, match="the column 'größe'"):
        generate_schema([bad], name=MODELS)


@settings(max_examples=200)
@given(st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,20}", fullmatch=True))
def test_every_name_ovsdb_accepts_makes_a_table(table: str) -> None:
    shape = shape_of(KitNamed)
    named = type(shape)(table, shape.fields, shape.references, shape.indexes, shape.unique)
    assert table in generate_schema([named], name=MODELS)["tables"]


@settings(max_examples=200)
@given(
    st.text(max_size=8),
    st.text(max_size=8),
    st.one_of(st.none(), st.text(max_size=6)),
    st.one_of(st.none(), st.text(max_size=6)),
)
def test_key_texts_differ_whenever_namespace_or_value_differ(
    ns1: str, ns2: str, v1: str | None, v2: str | None
) -> None:
    tm = _model_mapping().tables["KitNamed"]
    a, b = uuid.uuid4(), uuid.uuid4()
    keys1 = () if v1 is None else (UniqueKey("name", json.dumps(v1)),)
    keys2 = () if v2 is None else (UniqueKey("name", json.dumps(v2)),)
    t1 = key_cells(tm, ns1, a, keys1)["nbdb_unique_name"]
    t2 = key_cells(tm, ns2, b, keys2)["nbdb_unique_name"]
    # Same text only for the same value in the same namespace; unset values never meet anything.
    assert (t1 == t2) == (ns1 == ns2 and v1 is not None and v1 == v2)


def test_holder_where_selects_by_the_columns_or_the_key_column(mapping: Mapping_) -> None:
    lsp = mapping.tables["LogicalSwitchPort"]
    assert holder_where(lsp, lsp.unique[0], "ns", '"p1"') == [["name", "==", "p1"]]
    named = _model_mapping().tables["KitNamed"]
    where = holder_where(named, named.unique_rule("zone+slot"), "ns", '["z",3]')  # type: ignore[arg-type]
    assert where == [["nbdb_unique_zone_slot", "==", '["ns",["z",3]]']]


# ---------------------------------------------------------------- unique values in plans


def test_an_indexed_name_needs_no_wait_and_an_unindexed_one_gets_one_after_the_writes(
    mapping_of: MakeMapping, nb_schema: dict[str, Any]
) -> None:
    for schema, waits in ((nb_schema, 0), (_without_lsp_index(nb_schema), 1)):
        mapping = mapping_of(schema)
        replica = _replica(mapping, NB)
        switch = _create(mapping, replica, LogicalSwitch(name="sw"))
        port = LogicalSwitchPort(switch=switch, name="p1")
        with replica.cond:
            plan = plan_commit(mapping, replica, [put_of(port, 0)[0]], "t")
        unique = [op for op, reason in zip(plan.ops, plan.reasons, strict=True) if reason[0] == "unique"]
        assert len(unique) == waits
        if unique:
            assert unique[0]["where"] == [["name", "==", "p1"], ["_uuid", "!=", ["uuid", str(port.id)]]]
            assert plan.ops.index(unique[0]) > max(i for i, op in enumerate(plan.ops) if op["op"] == "insert")
        assert [(c.key, c.value) for c in plan.unique] == [(("LogicalSwitchPort", port.id), '"p1"')]


def _without_lsp_index(schema: dict[str, Any]) -> dict[str, Any]:
    older = copy.deepcopy(schema)
    del older["tables"]["Logical_Switch_Port"]["indexes"]
    return older


def test_a_kept_value_needs_no_new_wait_and_one_value_twice_in_a_transaction_is_refused(
    mapping_of: MakeMapping, nb_schema: dict[str, Any]
) -> None:
    mapping = mapping_of(_without_lsp_index(nb_schema))
    replica = _replica(mapping, NB)
    switch = _create(mapping, replica, LogicalSwitch(name="sw"))
    port = _create(mapping, replica, LogicalSwitchPort(switch=switch, name="p1"))
    with replica.cond:
        plan = plan_commit(mapping, replica, [put_of(port.replace(up=True), 1)[0]], "t")
    assert all(reason[0] != "unique" for reason in plan.reasons)
    twins = [LogicalSwitchPort(switch=switch, name="dup") for _ in range(2)]
    with replica.cond, pytest.raises(nbdb.UniqueViolationError) as caught:
        plan_commit(mapping, replica, [put_of(t, 0)[0] for t in twins], "t")
    assert (caught.value.field, caught.value.value, caught.value.existing) == ("name", "dup", twins[0].id)


def test_inserts_and_updates_write_the_key_columns() -> None:
    mapping = _model_mapping()
    replica = _replica(mapping, MODELS, "ns")
    with replica.cond:
        plan = plan_commit(mapping, replica, [put_of(KitNamed(name="a"), 0)[0]], "t")
    row = next(op for op in plan.ops if op["op"] == "insert")["row"]
    assert row["nbdb_unique_name"] == '["ns","a"]'
    assert json.loads(row["nbdb_unique_zone_slot"])[:2] == ["ns", None]  # unset: a text of this row alone
    assert all(reason[0] != "unique" for reason in plan.reasons)  # the server's index keeps them


# ---------------------------------------------------------------- native mutations


def test_a_port_group_mutation_is_one_mutate_guarded_by_its_mark_only(mapping: Mapping_) -> None:
    replica = _replica(mapping, NB)
    switch = _create(mapping, replica, LogicalSwitch(name="sw"))
    ports = [_create(mapping, replica, LogicalSwitchPort(switch=switch, name=f"p{i}")) for i in range(3)]
    group = _create(mapping, replica, PortGroup(name="pg", ports=[ports[0].id]))
    op = mutation_of(PortGroup, group.id, {"ports": [ports[1]], "external_ids": {"k": "v"}}, {"ports": [ports[0]]})
    plan = _commit(mapping, replica, [op], "mut1")
    kinds = [(o["op"], reason[0]) for o, reason in zip(plan.ops, plan.reasons, strict=True)]
    assert kinds == [("wait", "exists"), ("wait", "marked"), ("mutate", "mutate"), ("wait", "target")]
    mutations = plan.ops[2]["mutations"]
    assert mutations[:2] == [
        ["ports", "delete", ["set", [["uuid", str(ports[0].id)]]]],
        ["ports", "insert", ["set", [["uuid", str(ports[1].id)]]]],
    ]
    assert mutations[2] == ["external_ids", "delete", ["set", ["k"]]]  # then set: an insert keeps what is there
    mark = EXT_MARK + "mut1"
    assert mutations[3][:2] == ["external_ids", "insert"] and mark in json.dumps(mutations[3])
    record = replica.record("PortGroup", group.id)
    assert record is not None and record.version == 2
    assert json.loads(record.data)["ports"] == [str(ports[1].id)]
    with replica.cond:
        assert reflects(plan, replica) and settle(plan, replica) is Outcome.LANDED


def test_a_mutation_not_yet_landed_may_be_sent_again(mapping: Mapping_) -> None:
    replica = _replica(mapping, NB)
    group = _create(mapping, replica, PortGroup(name="pg"))
    with replica.cond:
        plan = plan_commit(mapping, replica, [mutation_of(PortGroup, group.id, {"external_ids": {"a": "1"}}, {})], "m")
        assert not reflects(plan, replica)
        assert settle(plan, replica) is Outcome.PENDING
    play(replica, NB, plan.ops)
    with replica.cond:
        assert settle(plan, replica) is Outcome.LANDED


def test_reserved_keys_and_json_columns(mapping: Mapping_) -> None:
    replica = _replica(mapping, NB)
    group = _create(mapping, replica, PortGroup(name="pg"))
    with replica.cond, pytest.raises(nbdb.ValidationError, match="reserved"):
        plan_commit(mapping, replica, [mutation_of(PortGroup, group.id, {"external_ids": {"nbdb:x": "1"}}, {})], "t")
    # KitGroup.members is JSON text in the model database: the change is rebased on the stored object instead.
    kit = _model_mapping()
    models = _replica(kit, MODELS)
    parent = _create(kit, models, KitParent(name="p"))
    child = _create(kit, models, KitChild(parent=parent, name="c"))
    kit_group = _create(kit, models, KitGroup())
    plan = _commit(kit, models, [mutation_of(KitGroup, kit_group.id, {"members": [child]}, {})], "r")
    assert [reason[0] for reason in plan.reasons][:2] == ["cas", "update"]
    assert json.loads(models.record("KitGroup", kit_group.id).data)["members"] == [str(child.id)]  # type: ignore[union-attr]


def test_the_writers_settled_marks_and_stale_ones_are_dropped_by_its_next_write(mapping: Mapping_) -> None:
    replica = _replica(mapping, NB)
    group = _create(mapping, replica, PortGroup(name="pg"))
    book = MarkBook()
    first = _commit(mapping, replica, [mutation_of(PortGroup, group.id, {"external_ids": {"a": "1"}}, {})], "m1",
                    book=book)  # fmt: skip
    book.settled(first.marks, first.dropped)
    second = _commit(mapping, replica, [mutation_of(PortGroup, group.id, {"external_ids": {"b": "2"}}, {})], "m2",
                     book=book)  # fmt: skip
    assert second.dropped[("PortGroup", group.id)] == [EXT_MARK + "m1"]
    ext = replica.row(mapping.tables["PortGroup"], group.id)["external_ids"]  # type: ignore[index]
    assert EXT_MARK + "m1" not in ext and EXT_MARK + "m2" in ext
    # Another writer's mark stays while it may still be settling, and goes once stale.
    assert book.droppable(("PortGroup", group.id), ext, 0.0) == []
    stale = book.droppable(("PortGroup", group.id), ext, float(ext[EXT_MARK + "m2"]) + LEDGER_SKEW + 1)
    assert stale == [EXT_MARK + "m2"]


def test_carried_bookkeeping() -> None:
    ext = {EXT_TTL: "5.0", EXT_EXPIRES: "100.0", EXT_MARK + "old": "1", EXT_MARK + "new": "1000", EXT_MARK + "x": "?",
           EXT_MARK + "mine": "1000", "user": "kept elsewhere"}  # fmt: skip
    kept = carried(ext, 1000.0 + LEDGER_SKEW, [EXT_MARK + "mine"])
    assert kept == {EXT_TTL: "5.0", EXT_EXPIRES: "100.0", EXT_MARK + "new": "1000"}


# ---------------------------------------------------------------- fences and ttls


def test_a_fenced_plan_asserts_its_lock_first(mapping: Mapping_) -> None:
    replica = _replica(mapping, NB)
    with replica.cond:
        plan = plan_commit(mapping, replica, [put_of(LogicalSwitch(name="sw"), 0)[0]], "t", fence="nbdb_lock")
    assert plan.ops[0] == {"op": "assert", "lock": "nbdb_lock"} and plan.reasons[0] == ("fence", "nbdb_lock")


def test_ttls_are_bookkeeping_kept_by_updates_and_expiring_objects_cannot_be_referenced() -> None:
    mapping = _model_mapping()
    replica = _replica(mapping, MODELS)
    mortal = _create(mapping, replica, KitParent(name="m"), ttl=5, now=1000.0)
    ext = replica.row(mapping.tables["KitParent"], mortal.id)["external_ids"]  # type: ignore[index]
    assert (ext[EXT_TTL], ext[EXT_EXPIRES]) == ("5.0", "1005.000")
    assert replica.expiring == {("KitParent", mortal.id): 1005.0}
    _commit(mapping, replica, [put_of(mortal.replace(size=1), 1)[0]], "u", now=1001.0)
    assert replica.expiring == {("KitParent", mortal.id): 1005.0}
    assert replica.record("KitParent", mortal.id).version == 2  # type: ignore[union-attr]
    with replica.cond, pytest.raises(nbdb.ReferenceError, match="ttl"):
        plan_commit(mapping, replica, [put_of(KitChild(parent=mortal, name="c"), 0)[0]], "t")
    with replica.cond, pytest.raises(nbdb.ValidationError, match="created"):
        plan_commit(mapping, replica, [put_of(mortal.replace(size=2), 2, ttl=3)[0]], "t")
    other = KitParent(name="o")
    with replica.cond, pytest.raises(nbdb.ReferenceError, match="ttl"):
        plan_commit(mapping, replica, [put_of(other, 0, 5)[0], put_of(KitChild(parent=other, name="c"), 0)[0]], "t")


# ---------------------------------------------------------------- pages


def _put(obj: Any, expect: int) -> Put:
    return Put(obj.nbdb_table, obj.id, obj.topic, encode(obj), expect)


_STEPS = st.sampled_from(["create", "create", "update", "delete"])


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(_STEPS, min_size=1, max_size=20), st.lists(_STEPS, min_size=1, max_size=12), st.integers(1, 6))
@example(before=["create"] * 5, after=["update", "delete", "create"], limit=2)
def test_pages_show_the_first_pages_revision_whatever_changes_meanwhile(
    before: list[str], after: list[str], limit: int
) -> None:
    mapping = _model_mapping()
    replica = _replica(mapping, MODELS)
    alive: dict[uuid.UUID, Any] = {}

    def step(kind: str, n: int) -> None:
        if kind == "create" or not alive:
            obj = KitParent(name=f"p{n}")
            _commit(mapping, replica, [_put(obj, 0)], f"c{n}")
            alive[obj.id] = (obj, 1)
            return
        obj, version = alive[sorted(alive)[n % len(alive)]]
        if kind == "update":
            _commit(mapping, replica, [_put(obj.replace(size=n), version)], f"u{n}")
            alive[obj.id] = (obj.replace(size=n), version + 1)
        else:
            _commit(mapping, replica, [nbdb.spi.Delete("KitParent", obj.id, None, version)], f"d{n}")
            del alive[obj.id]

    for n, kind in enumerate(before):
        step(kind, n)
    expected = sorted(replica.select(["KitParent"], None), key=lambda r: str(r.id))
    listings = Listings()
    page = listings.page(replica, ["KitParent"], None, limit, None)
    seen = list(page.records)
    for n, kind in enumerate(after):
        step(kind, 100 + n)
    fresh = Listings()  # a listing no longer kept: rebuilt from the history
    for lister in (listings, fresh):
        got, token = list(seen), page.after
        while token is not None:
            more = lister.page(replica, ["KitParent"], None, limit, token)
            assert more.revision == page.revision
            got += more.records
            token = more.after
        assert [(r.id, r.version, r.data) for r in got] == [(r.id, r.version, r.data) for r in expected]


def test_a_listing_older_than_the_history_is_gone() -> None:
    mapping = _model_mapping()
    replica = _replica(mapping, MODELS)
    for n in range(3):
        _commit(mapping, replica, [_put(KitParent(name=f"p{n}"), 0)], f"c{n}")
    page = Listings().page(replica, ["KitParent"], None, 1, None)
    _commit(mapping, replica, [_put(KitParent(name="late"), 0)], "late")
    replica.compact()
    with pytest.raises(nbdb.HistoryGoneError):
        Listings().page(replica, ["KitParent"], None, 1, page.after)
    with replica.cond, pytest.raises(nbdb.HistoryGoneError):
        state_at(replica, replica.revision + 10, ["KitParent"], None)
    with pytest.raises(nbdb.ValidationError):
        Listings().page(replica, ["KitChild"], None, 1, page.after)  # a token of another table's listing


def test_mutate_ops_are_refused_twice_in_one_transaction(mapping: Mapping_) -> None:
    replica = _replica(mapping, NB)
    group = _create(mapping, replica, PortGroup(name="pg"))
    op: Mutate = mutation_of(PortGroup, group.id, {"external_ids": {"a": "1"}}, {})
    with replica.cond, pytest.raises(nbdb.ValidationError, match="twice"):
        plan_commit(mapping, replica, [op, op], "t")


def test_a_commit_is_reflected_once_later_writes_pushed_its_token_out_of_the_window(mapping: Mapping_) -> None:
    """Read-your-writes after a merged update: the row shows a later version, not the commit's token."""
    server, client = _replica(mapping, NB), _replica(mapping, NB)  # the server's state; this client's copy
    put, current = put_of(LogicalSwitch(name="sw"), 0)
    created = _commit(mapping, server, [put], "create")
    play(client, NB, created.ops)
    plans = []
    for i in range(6):  # this client's commit, then more later writes than a row's window keeps
        put, current = put_of(current.replace(name=f"v{i}"), current.version)
        plans.append(_commit(mapping, server, [put], f"t{i}"))
    mine = plans[0]
    with client.cond:
        assert not reflects(mine, client)  # the client's copy has not seen it yet
    play(client, NB, [op for p in plans for op in p.ops if op["op"] != "wait"])  # one merged update
    with client.cond:
        assert reflects(mine, client)
        assert all(reflects(p, client) for p in plans)
