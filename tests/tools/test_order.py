"""Dependency order: tables and objects parents first; self-references and cycles."""

from __future__ import annotations

import uuid
from typing import Annotated, ClassVar
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.models import LogicalSwitch
from nbdb.tools import Copier, CopyOptions, object_order, table_order
from nbdb.tools.apply import Applier
from nbdb.tools.order import key_of, owned_after, owner_of

from .conftest import OVN_MODELS, build_network

pytestmark = pytest.mark.timeout(60)


class ToolsNode(nbdb.Model):
    """A tree: a node names its parent (a self-reference)."""

    name: str
    parent: Annotated[UUID | None, nbdb.Reference("ToolsNode")] = None


class ToolsHead(nbdb.Model):
    """One side of a cycle between two tables: an optional reference to its tail."""

    tail: Annotated[UUID | None, nbdb.Reference("ToolsTail")] = None


class ToolsTail(nbdb.Model):
    """The other side: a required reference to its head."""

    head: Annotated[UUID, nbdb.Reference("ToolsHead")]


class ToolsRing(nbdb.Model):
    """Required references only: a ring of these can never be created one by one."""

    next: Annotated[UUID, nbdb.Reference("ToolsRing")]


class ToolsCrate(nbdb.Model):
    """An owner (as OVN's Meter owns its bands)."""

    name: str = ""


class ToolsLabel(nbdb.Model):
    """A table an owned object may also reference, ordered after its owner's table."""

    crate: Annotated[UUID | None, nbdb.Reference("ToolsCrate")] = None


class ToolsItem(nbdb.Model):
    """Owned by its crate; it may name a label too."""

    nbdb_owned_by: ClassVar[tuple[str, ...]] = ("crate",)

    crate: Annotated[UUID, nbdb.Reference("ToolsCrate")]
    label: Annotated[UUID | None, nbdb.Reference("ToolsLabel")] = None


CYCLE_MODELS = [ToolsNode, ToolsHead, ToolsTail]


def test_the_ovn_schema_sorts_parents_first() -> None:
    order = table_order(OVN_MODELS)
    rank = order.rank()
    assert order.cycles == ()
    for model in OVN_MODELS:
        for ref in model.nbdb_references:
            assert rank[ref.target] < rank[model.nbdb_table], f"{model.nbdb_table} before {ref.target}"
    # The pairs the issue names explicitly.
    assert rank["LogicalSwitch"] < rank["LogicalSwitchPort"]
    assert rank["LoadBalancer"] < rank["LogicalSwitch"]
    assert rank["DHCPOptions"] < rank["LogicalSwitchPort"]
    assert rank["LogicalSwitchPort"] < rank["PortGroup"] < rank["ACL"]
    assert rank["LogicalRouter"] < rank["LogicalRouterPort"]
    assert rank["LogicalRouter"] < rank["NAT"]


def test_table_order_is_stable() -> None:
    assert table_order(OVN_MODELS).tables == table_order(reversed(OVN_MODELS)).tables


def test_cycles_are_reported() -> None:
    order = table_order([ToolsNode, ToolsHead, ToolsTail, LogicalSwitch])
    assert set(order.cycles) == {("ToolsHead", "ToolsTail"), ("ToolsNode",)}


def test_objects_come_after_what_they_reference() -> None:
    with nbdb.connect() as db:
        build_network(db)
        objects = [o for m in OVN_MODELS for o in db.list(m)]
    ordered = object_order(reversed(objects))
    seen: set[tuple[str, UUID]] = set()
    for obj in ordered:
        assert obj.ref_keys() <= seen, f"{obj.nbdb_table} comes before one of its targets"
        seen.add((obj.nbdb_table, obj.id))
    assert len(ordered) == len(objects)


def test_a_deep_self_referencing_chain_is_ordered_without_recursion() -> None:
    nodes: list[ToolsNode] = [ToolsNode(name="root")]
    for i in range(5000):
        nodes.append(ToolsNode(name=f"n{i}", parent=nodes[-1].id))
    ordered = object_order(reversed(nodes))
    assert [n.name for n in ordered] == [n.name for n in nodes]


def test_self_references_and_table_cycles_are_copied() -> None:
    with nbdb.connect() as src, nbdb.connect() as dst:
        root = src.create(ToolsNode(name="root"))
        child = src.create(ToolsNode(name="child", parent=root))
        src.create(ToolsNode(name="grandchild", parent=child))
        head = src.create(ToolsHead())
        tail = src.create(ToolsTail(head=head))
        src.update(head.replace(tail=tail.id))  # head -> tail -> head
        result = Copier(src, dst, CopyOptions(models=CYCLE_MODELS)).run()
        assert result.differences == []
        assert dst.get(ToolsHead, head.id).tail == tail.id
        assert dst.get(ToolsTail, tail.id).head == head.id
        assert {n.name for n in dst.list(ToolsNode)} == {"root", "child", "grandchild"}


def test_a_cycle_of_required_references_is_refused_cleanly() -> None:
    with nbdb.connect() as src, nbdb.connect() as dst:
        a, b = uuid.uuid4(), uuid.uuid4()
        with src.transaction() as txn:  # only one transaction can create a ring
            txn.create(ToolsRing(id=a, next=b))
            txn.create(ToolsRing(id=b, next=a))
        with pytest.raises(nbdb.ReferenceError, match="cycle of required references"):
            Copier(src, dst, CopyOptions(models=[ToolsRing])).run()
        assert dst.list(ToolsRing) == []


@st.composite
def _crates(draw: st.DrawFn) -> list[nbdb.Model]:
    """Crates, labels (some naming a crate) and items of crates in the list or not, some naming a label."""
    crates = [ToolsCrate(name=str(i)) for i in range(draw(st.integers(0, 4)))]
    crate_ids = st.sampled_from([c.id for c in crates] or [uuid.uuid4()]) | st.builds(uuid.uuid4)
    labels = [ToolsLabel(crate=c) for c in draw(st.lists(st.none() | crate_ids, max_size=3))]
    label_ids = st.none() | st.sampled_from([lb.id for lb in labels] or [None]) | st.builds(uuid.uuid4)
    items = [ToolsItem(crate=c, label=lb) for c, lb in draw(st.lists(st.tuples(crate_ids, label_ids), max_size=8))]
    return draw(st.permutations([*crates, *labels, *items]))


@settings(max_examples=300, deadline=None)
@given(_crates())
def test_owned_objects_follow_their_owners_where_the_order_allows(objects: list[nbdb.Model]) -> None:
    """Each owned object sits in the run right after its owner when every other object of the list it
    references comes before the owner; and each object still comes after every object it references."""
    ordered = object_order(objects)
    moved = owned_after(ordered)
    assert sorted(map(key_of, moved), key=str) == sorted(map(key_of, objects), key=str)
    where = {key_of(o): i for i, o in enumerate(moved)}
    was = {key_of(o): i for i, o in enumerate(ordered)}
    for i, obj in enumerate(moved):
        assert all(where.get(t, -1) < i for t in obj.ref_keys()), f"{obj} before a target"
        owner = owner_of(obj)
        if owner in where and all(was.get(t, -1) <= was[owner] for t in obj.ref_keys()):
            between = moved[where[owner] + 1 : i]
            assert all(owner_of(o) == owner for o in between), "an object between an owner and its child"


def test_an_applier_never_splits_an_owner_from_its_children(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cut into transactions of 3 (OVSDB refuses a meter without its bands, and a meter's last band
    deleted alone): each crate is written and deleted in the transaction of its items."""
    groups: list[list[tuple[str, UUID]]] = []
    commit = Applier._commit

    def recorded(self: Applier, units: list[list[tuple[tuple[str, UUID], nbdb.Model | None]]]) -> bool:
        groups.append([key for unit in units for key, _ in unit])
        return commit(self, units)

    monkeypatch.setattr(Applier, "_commit", recorded)
    crates = [ToolsCrate(name=str(i)) for i in range(4)]
    items = [ToolsItem(crate=c.id) for c in crates for _ in range(2)]
    with nbdb.connect() as db:
        applier = Applier(db, batch=3)
        applier.apply({key_of(o): o for o in [*crates, *items]})
        assert len(db.list(ToolsItem)) == 8
        applier.apply({key_of(o): None for o in [*crates, *items]})
        assert db.list(ToolsCrate) == []
    assert len(groups) == 8  # a crate and its two items each time, written then deleted
    for group in groups:
        owners = {owner_of(o) for o in items if key_of(o) in group}
        assert len(owners) == 1 and owners <= set(group)
