"""The selects that name every row holding a refused delete's target (``nbdb.families.ovsdb.holders``).

Pure logic over the served schema and the server's replies: which columns are asked, and which objects
the replies name (and which of them the Database cannot read).
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nbdb.families.ovsdb import OVN_BINDINGS, DatabaseSchema, build_mapping
from nbdb.families.ovsdb.holders import (
    HolderQuery,
    Holders,
    WeakExpected,
    holder_queries,
    holders_found,
    released_by,
)
from nbdb.families.ovsdb.ops import mutate_members, where_uuid
from nbdb.models import LogicalSwitch, LogicalSwitchPort, PortGroup
from nbdb.models.shape import ModelShape, shape_of

from .conftest import NB_SCHEMA, make_mapping

pytestmark = pytest.mark.timeout(60)

MAPPING = make_mapping()


def _rows(*ids: uuid.UUID) -> dict[str, Any]:
    return {"rows": [{"_uuid": ["uuid", str(i)]} for i in ids]}


def _switch_holding(queries: list[HolderQuery], port: uuid.UUID) -> list[dict[str, Any]]:
    """The replies of a switch's holder queries when its row holds ``port`` in its ports and nothing else holds it."""
    return [
        {"rows": [{q.column: ["set", [["uuid", str(port)]]] if q.column == "ports" else ["set", []]}]}
        if q.own
        else {"rows": []}
        for q in queries
    ]


def _pair(found: Holders | None) -> tuple[list[Any], list[Any]] | None:
    """The holders found and those of them unseen."""
    return None if found is None else (found.found, found.unseen)


def test_a_ports_holders_are_asked_in_the_weak_column_a_plan_waits_for_not_in_its_switchs_set() -> None:
    # A port group's ports (weak, a model's field in a table with external_ids: the plan waits for it to
    # let go); the switch's ports column holds the port as its child: the delete takes it out, no holder.
    _db, queries = holder_queries(MAPPING, LogicalSwitchPort.nbdb_table, uuid.uuid4()) or ("", [])
    assert [(q.op["table"], q.column, q.own) for q in queries] == [("Port_Group", "ports", False)]


def test_a_namespaces_weak_holders_are_asked_in_its_rows_only_and_strong_ones_in_every_row(
    nb_schema: dict[str, Any],
) -> None:
    # The server drops another namespace's or client's weak reference itself (the plan waits only for the
    # namespace's): such a row refuses no delete, so it is no holder to name. A strong one refuses it anywhere.
    ns = ["external_ids", "includes", ["map", [["nbdb:ns", "t1"]]]]
    _db, weak = holder_queries(MAPPING, LogicalSwitchPort.nbdb_table, uuid.uuid4(), "t1") or ("", [])
    assert [q.op["where"][1:] for q in weak] == [[ns]]
    _db, default = holder_queries(MAPPING, LogicalSwitchPort.nbdb_table, uuid.uuid4()) or ("", [])
    assert [q.op["where"][1:] for q in default] == [[]]
    nb_schema["tables"]["Port_Group"]["columns"]["ports"]["type"]["key"]["refType"] = "strong"
    _db, strong = holder_queries(make_mapping(nb_schema), LogicalSwitchPort.nbdb_table, uuid.uuid4(), "t1") or ("", [])
    assert [(q.op["table"], q.op["where"][1:]) for q in strong] == [("Port_Group", [])]


@given(st.lists(st.uuids(), max_size=4, unique=True), st.lists(st.booleans(), min_size=4, max_size=4))
def test_every_row_selected_is_named_and_those_the_replica_lacks_are_unseen(
    ids: list[uuid.UUID], shown: list[bool]
) -> None:
    target = uuid.uuid4()
    db, queries = holder_queries(MAPPING, LogicalSwitchPort.nbdb_table, target) or ("", [])
    visible = {i for i, s in zip(ids, shown, strict=False) if s}
    found = holders_found(MAPPING, db, target, queries, [_rows(*ids)], lambda t, i: i in visible)
    assert found is not None and not found.second and not found.stale
    named, unseen = found.found, found.unseen
    assert named == [(PortGroup.nbdb_table, i) for i in ids]
    assert unseen == [(PortGroup.nbdb_table, i) for i in ids if i not in visible]


def test_a_switchs_children_are_named_from_its_own_row_and_a_gone_row_names_none() -> None:
    target, port = uuid.uuid4(), uuid.uuid4()
    db, queries = holder_queries(MAPPING, LogicalSwitch.nbdb_table, target) or ("", [])
    replies = _switch_holding(queries, port)
    found = holders_found(MAPPING, db, target, queries, replies, lambda t, i: False)
    assert _pair(found) == ([(LogicalSwitchPort.nbdb_table, port)], [(LogicalSwitchPort.nbdb_table, port)])
    gone = [{"rows": []} for _ in queries]
    assert holders_found(MAPPING, db, target, queries, gone, lambda t, i: False) is None


def test_a_map_column_holds_the_target_by_key_or_value_only_where_its_type_points() -> None:
    target, other, row = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    by_value = HolderQuery({"op": "select", "table": "Logical_Switch_Port"}, "Logical_Switch_Port", "m", map_value=True)
    cell = ["map", [["k", ["uuid", str(target)]], [["uuid", str(target)], ["uuid", str(other)]]]]
    reply = {"rows": [{"_uuid": ["uuid", str(row)], "m": cell}]}
    named = holders_found(MAPPING, "OVN_Northbound", target, [by_value], [reply], lambda t, i: True)
    assert _pair(named) == ([(LogicalSwitchPort.nbdb_table, row)], [])
    elsewhere = {"rows": [{"_uuid": ["uuid", str(row)], "m": ["map", [["k", ["uuid", str(other)]]]]}]}
    assert _pair(holders_found(MAPPING, "OVN_Northbound", target, [by_value], [elsewhere], lambda t, i: True)) == (
        [],
        [],
    )


def test_a_default_namespaces_weak_holders_of_another_namespace_are_no_holders() -> None:
    # Without a namespace no clause selects its own rows: the select returns external_ids, and another
    # namespace's row (whose weak reference the server drops) is left out.
    target, mine, theirs = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    db, queries = holder_queries(MAPPING, LogicalSwitchPort.nbdb_table, target) or ("", [])
    reply = {
        "rows": [
            {"_uuid": ["uuid", str(mine)], "external_ids": ["map", []]},
            {"_uuid": ["uuid", str(theirs)], "external_ids": ["map", [["nbdb:ns", "t1"]]]},
        ]
    }
    found = holders_found(MAPPING, db, target, queries, [reply], lambda t, i: i == mine)
    assert _pair(found) == ([(PortGroup.nbdb_table, mine)], [])


@given(
    st.lists(st.uuids(), max_size=4, unique=True),
    st.lists(st.booleans(), min_size=4, max_size=4),
    st.booleans(),
    st.booleans(),
)
def test_a_parents_set_holding_a_port_names_every_switch_but_those_the_commit_takes_it_out_of(
    switches: list[uuid.UUID], released: list[bool], shown: bool, held_by_released: bool
) -> None:
    # The server refused a port's delete itself (a second switch another client put it in): its switches' sets
    # were never asked, so the refusal named nobody (and its text the port's own switch, which the refused commit
    # empties). Asked with what the commit releases, the others are named, as holders no plan can drop (in
    # ``second``; in ``unseen`` only when the replica does not show them) — when a switch the commit releases
    # still holds the port. When none does, another writer moved the port to the others after the plan (the
    # plan released its old switch: nothing) and the Database reads them: stale, no holders (planned again).
    port = uuid.uuid4()
    let_go = [s for s, r in zip(switches, released, strict=False) if r]
    ops = [mutate_members("Logical_Switch", s, "ports", "delete", [uuid.uuid4(), port]) for s in let_go]
    ops.append(mutate_members("Logical_Switch", uuid.uuid4(), "ports", "insert", [port]))  # (not a release)
    freed = released_by(ops, port)
    assert freed == {("Logical_Switch", "ports", str(s)) for s in let_go}
    db, queries = holder_queries(MAPPING, LogicalSwitchPort.nbdb_table, port, released=freed) or ("", [])
    assert [(q.op["table"], q.column, q.parent) for q in queries] == [
        ("Logical_Switch", "ports", True),
        ("Port_Group", "ports", False),
    ]
    holding = [s for s in switches if held_by_released or s not in let_go]
    replies = [_rows(*holding), {"rows": []}]
    found = holders_found(MAPPING, db, port, queries, replies, lambda t, i: shown)
    assert found is not None
    kept = [(LogicalSwitch.nbdb_table, s) for s in switches if s not in let_go]
    stale = bool(kept) and shown and not (held_by_released and let_go)
    assert found.stale == stale
    assert (found.found, found.second) == (([], []) if stale else (kept, kept))
    assert found.unseen == ([] if shown else kept)


def test_a_row_the_commit_deletes_is_no_holder_and_counts_as_its_own_parent() -> None:
    # A transaction deleting the switch with its port: the switch's row is let go of (deleted), not mutated. It
    # still holds the port on the server (the commit was refused): another switch holding it is a second parent.
    port, own, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    ops = [{"op": "delete", "table": "Logical_Switch", "where": where_uuid(own)}]
    freed = released_by(ops, port)
    assert freed == {("Logical_Switch", None, str(own))}
    db, queries = holder_queries(MAPPING, LogicalSwitchPort.nbdb_table, port, released=freed) or ("", [])
    found = holders_found(MAPPING, db, port, queries, [_rows(own, other), {"rows": []}], lambda t, i: True)
    assert found == Holders([(LogicalSwitch.nbdb_table, other)], [], [(LogicalSwitch.nbdb_table, other)])


def test_other_namespaces_weak_holders_are_kept_per_target_until_its_delete_lands() -> None:
    expected = WeakExpected()
    one, two = ("Logical_Switch_Port", 1), ("Logical_Switch_Port", 2)
    assert expected.expected() is None
    expected.learn({one}, {(one, "Port_Group", "ports"): ["a"]})
    expected.learn({two}, {(two, "Port_Group", "ports"): ["b"]})
    before = expected.expected()
    expected.learn({one}, {})  # found none of one's now: none kept for it, two's as they were
    assert expected.expected() == {(two, "Port_Group", "ports"): ["b"]}
    assert before == {(one, "Port_Group", "ports"): ["a"], (two, "Port_Group", "ports"): ["b"]}  # (never changed)
    expected.forget({two})
    assert expected.expected() is None
    for i in range(WeakExpected.MOST + 1):
        expected.learn({("T", i)}, {(("T", i), "Port_Group", "ports"): ["c"]})
    kept = expected.expected() or {}
    assert 0 < len(kept) <= WeakExpected.MOST and (("T", WeakExpected.MOST), "Port_Group", "ports") in kept


def test_weak_expected_keeps_at_most_most_targets_when_one_refusal_finds_more() -> None:
    # "at most 256 targets' kept" (docs/backends/ovsdb.md, WeakExpected's docstring): learn() empties what was
    # kept when the sum overflows, but stores ``found`` whole, so one transaction's refusal deleting more ports
    # than MOST, each held by another namespace's group, keeps them all (until a commit deleting them lands:
    # never, when the transaction is refused for good).
    expected = WeakExpected()
    many = [("Logical_Switch_Port", i) for i in range(WeakExpected.MOST * 4)]
    expected.learn(set(many), {(t, "Port_Group", "ports"): ["g"] for t in many})
    assert len(expected.expected() or {}) <= WeakExpected.MOST


def test_weak_expected_counts_targets_not_their_weak_columns() -> None:
    # MOST bounds the targets kept: a target held in two weak columns is one target (both its waits kept).
    expected = WeakExpected()
    many = [("Logical_Switch_Port", i) for i in range(WeakExpected.MOST)]
    found = {(t, table, "ports"): ["g"] for t in many for table in ("Port_Group", "Other")}
    expected.learn(set(many), found)
    assert expected.expected() == found
    expected.learn({("T", 0)}, {(("T", 0), "Port_Group", "ports"): ["g"]})  # one more: past MOST, the rest go
    assert expected.expected() == {(("T", 0), "Port_Group", "ports"): ["g"]}


def _generated(model: type[Any], owned_by: tuple[str, ...] = ()) -> ModelShape:
    """The shape of ``model`` as ``nbdb models generate`` names it for OVN_Northbound (its references to the
    generated models too), which a user's process may define beside the built-in models: never registered."""
    names = {LogicalSwitch: "Logical_Switch", LogicalSwitchPort: "Logical_Switch_Port", PortGroup: "Port_Group"}
    by_table = {m.nbdb_table: f"OVN_Northbound.{n}" for m, n in names.items()}
    shape = shape_of(model)
    refs = tuple(
        replace(spec, target=by_table.get(spec.target, f"OVN_Northbound.{spec.target}")) for spec in shape.references
    )
    return replace(shape, table=by_table[model.nbdb_table], references=refs, owned_by=owned_by)


def test_a_holder_is_named_by_the_one_model_of_its_table_that_maps_its_column_to_the_targets() -> None:
    # A user's process that imports models generated for OVN_Northbound maps Port_Group and
    # Logical_Switch_Port twice; only the built-in PortGroup maps Port_Group.ports to LogicalSwitchPort, and
    # only the built-in LogicalSwitchPort is a child of LogicalSwitch: a holder the replica does not show
    # (another namespace's) was named by neither, and the refusal named no referrer.
    parsed = DatabaseSchema.parse(NB_SCHEMA)
    shapes = [shape_of(m) for m in (LogicalSwitch, LogicalSwitchPort, PortGroup)]
    shapes += [_generated(PortGroup), _generated(LogicalSwitchPort, owned_by=("switch",))]
    mapping = build_mapping({parsed.name: parsed}, {parsed.name: OVN_BINDINGS}, shapes)
    assert len(mapping.by_db_table[(parsed.name, "Port_Group")]) == 2
    assert len(mapping.links[(parsed.name, "Logical_Switch")]) == 2
    port, group = uuid.uuid4(), uuid.uuid4()
    db, queries = holder_queries(mapping, LogicalSwitchPort.nbdb_table, port) or ("", [])
    found = holders_found(mapping, db, port, queries, [_rows(group) for _ in queries], lambda t, i: False)
    assert _pair(found) == ([(PortGroup.nbdb_table, group)], [(PortGroup.nbdb_table, group)])
    switch, child = uuid.uuid4(), uuid.uuid4()
    db, queries = holder_queries(mapping, LogicalSwitch.nbdb_table, switch) or ("", [])
    found = holders_found(mapping, db, switch, queries, _switch_holding(queries, child), lambda t, i: False)
    assert _pair(found) == ([(LogicalSwitchPort.nbdb_table, child)], [(LogicalSwitchPort.nbdb_table, child)])
