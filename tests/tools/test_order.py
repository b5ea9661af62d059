"""Dependency order: tables and objects parents first; self-references and cycles."""

from __future__ import annotations

import uuid
from typing import Annotated
from uuid import UUID

import pytest

import nbdb
from nbdb.models import LogicalSwitch
from nbdb.tools import Copier, CopyOptions, object_order, table_order

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
