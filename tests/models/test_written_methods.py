"""A model's ``ref_keys`` and ``unique_values``, written per class from its fields: the same answers as the rule."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from nbdb.models import LogicalSwitchPort, Model, Reference
from nbdb.models.base import RefSpec, all_models
from nbdb.models.shared import slot_setter

pytestmark = pytest.mark.timeout(30)

set_dict = slot_setter(BaseModel, "__dict__")


def _rule_refs(obj: Model) -> frozenset[tuple[str, uuid.UUID]]:
    """Every (table, id) ``obj``'s reference fields hold, read field by field."""
    return frozenset((spec.target, id) for spec in obj.nbdb_references for id in RefSpec.ids(spec, obj))


ids = st.sampled_from([uuid.UUID(x * 32) for x in "123"])


@given(
    switch=ids,
    chassis=st.none() | ids,
    dhcp=st.none() | ids,
    mirrors=st.lists(ids, max_size=3),
    name=st.text(min_size=1, max_size=8).filter(lambda s: s.isprintable()),
)
def test_a_ports_written_methods_answer_as_the_rule(
    switch: uuid.UUID, chassis: uuid.UUID | None, dhcp: uuid.UUID | None, mirrors: list[uuid.UUID], name: str
) -> None:
    port = LogicalSwitchPort(switch=switch, chassis=chassis, dhcpv4_options=dhcp, mirror_rules=mirrors, name=name)
    assert port.ref_keys() == _rule_refs(port)
    assert port.ref_keys() is port.ref_keys()  # shared: one set per equal references, not one per call
    assert port.unique_values() == (("name", json.dumps(name)),)


@pytest.mark.parametrize("shape", ["none", "one each"])
def test_every_models_ref_keys_answer_as_the_rule(shape: str) -> None:
    target = uuid.uuid4()
    for model in all_models():
        held = {spec.field: ([target] if spec.many else target) for spec in model.nbdb_references}
        empty = {spec.field: ([] if spec.many else None) for spec in model.nbdb_references}
        obj = model.__new__(model)
        set_dict(obj, empty if shape == "none" else held)  # only the reference fields: all that ref_keys reads
        assert obj.ref_keys() == _rule_refs(obj), model


def test_a_subclass_gets_its_own_and_keeps_an_override() -> None:
    class TwTarget(Model):
        name: str

    class TwBase(Model):
        nbdb_unique: ClassVar[tuple[str | tuple[str, ...], ...]] = ("name",)
        name: str
        a: Annotated[uuid.UUID, Reference("TwTarget")]

    class TwMore(TwBase):
        nbdb_table = "TwMore"
        nbdb_unique: ClassVar[tuple[str | tuple[str, ...], ...]] = ("name", ("n", "m"))
        b: Annotated[uuid.UUID | None, Reference("TwTarget")] = None
        n: int | None = None
        m: str | None = None

    class TwOwn(TwBase):
        nbdb_table = "TwOwn"

        def ref_keys(self) -> frozenset[tuple[str, uuid.UUID]]:
            return frozenset({("Own", self.a)})

    class TwOwnChild(TwOwn):
        nbdb_table = "TwOwnChild"

    one, two = uuid.uuid4(), uuid.uuid4()
    base = TwBase(name="x", a=one)
    assert base.ref_keys() == {("TwTarget", one)} and base.unique_values() == (("name", '"x"'),)
    more = TwMore(name="x", a=one, b=two, n=3)
    assert more.ref_keys() == {("TwTarget", one), ("TwTarget", two)}
    assert more.unique_values() == (("name", '"x"'), ("n+m", more.unique_text(("n", "m"), {"n": 3, "m": None})))
    assert TwMore(name="y", a=one).unique_values() == (("name", '"y"'),)  # a group of no value holds none
    assert TwOwnChild(name="x", a=one).ref_keys() == {("Own", one)}  # the override, inherited, not rewritten


def test_a_bases_written_method_does_not_hide_a_siblings_own() -> None:
    """``C(A, B)``, B defining ref_keys by hand: the MRO (C, A, B, Model) found B's, as A defined none; a written
    one on A came first and C was given one of its own from its fields, so B's was never asked."""

    class TwA(Model):
        name: str

    class TwB(Model):
        def ref_keys(self) -> frozenset[tuple[str, uuid.UUID]]:
            return frozenset({("Tag", uuid.UUID(int=7))})

    class TwC(TwA, TwB):
        other: Annotated[uuid.UUID | None, Reference("TwA")] = None

    class TwD(TwC):
        pass

    assert TwC(name="c", other=uuid.uuid4()).ref_keys() == {("Tag", uuid.UUID(int=7))}
    assert TwD(name="d").ref_keys() == {("Tag", uuid.UUID(int=7))}


def test_the_rule_assigned_by_name_and_the_written_ones_installed() -> None:
    """``ref_keys = Model.ref_keys`` answers the rule; a model without its own gets one written for it."""

    class TwT(Model):
        name: str

    class TwRule(Model):
        t: Annotated[uuid.UUID, Reference("TwT")]
        ref_keys = Model.ref_keys

    one = uuid.uuid4()
    assert TwRule(t=one).ref_keys() == {("TwT", one)}
    for model in (LogicalSwitchPort, TwT):
        assert getattr(model.__dict__["ref_keys"], "__nbdb_written__", False), model
        assert getattr(model.__dict__["unique_values"], "__nbdb_written__", False) or not model.nbdb_unique_groups
