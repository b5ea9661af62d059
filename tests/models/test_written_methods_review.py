"""Review of the per-class ``ref_keys`` and ``unique_values``: where they answer otherwise than the rule."""

from __future__ import annotations

import uuid
from typing import Annotated, ClassVar

import pytest

import nbdb
from nbdb.models import LogicalSwitch, Model, Reference
from nbdb.models import base as model_base

pytestmark = pytest.mark.timeout(30)


class RvTarget(Model):
    name: str


class RvExtends(Model):
    """A model whose own ref_keys extends the rule's answer through super(), as an override that adds a key does."""

    target: Annotated[uuid.UUID, Reference("RvTarget")]
    note: str = ""

    def ref_keys(self) -> frozenset[tuple[str, uuid.UUID]]:
        return super().ref_keys()


def test_an_override_calling_super_keeps_the_models_references() -> None:
    """Model.ref_keys answered the rule (every reference of the object's class); on the branch it answers none,
    so an override written as ``super().ref_keys() | extra`` loses every reference the fields hold."""
    one = uuid.uuid4()
    assert RvExtends(target=one).ref_keys() == {("RvTarget", one)}


def test_a_target_referenced_through_such_an_override_is_not_deleted() -> None:
    """What losing them does: the target of a stored reference is deleted and the referrer points nowhere."""
    with nbdb.connect("memory://") as db:
        target = db.create(RvTarget(name="t"))
        db.create(RvExtends(target=target.id))
        with pytest.raises(nbdb.ReferenceError):
            db.delete(target)


class RvBase(Model):
    nbdb_unique: ClassVar[tuple[str | tuple[str, ...], ...]] = ("name",)
    name: str
    a: Annotated[uuid.UUID, Reference("RvTarget")]


class RvMore(RvBase):
    """A subclass adding a reference and a unique field, whose overrides defer to super()."""

    nbdb_unique: ClassVar[tuple[str | tuple[str, ...], ...]] = ("name", "alias")
    alias: str = "z"
    b: Annotated[uuid.UUID | None, Reference("RvTarget")] = None

    def ref_keys(self) -> frozenset[tuple[str, uuid.UUID]]:
        return super().ref_keys()

    def unique_values(self) -> tuple[tuple[str, str], ...]:
        return super().unique_values()


def test_an_override_calling_super_in_a_subclass_keeps_the_subclass_fields() -> None:
    """super() reaches the base's written method, which reads the base's fields and groups, not the object's:
    the subclass's reference ``b`` and unique ``alias`` were dropped."""
    one, two = uuid.uuid4(), uuid.uuid4()
    more = RvMore(name="n", a=one, b=two)
    assert more.ref_keys() == {("RvTarget", one), ("RvTarget", two)}
    assert more.unique_values() == (("name", '"n"'), ("alias", '"z"'))


def test_a_reference_naming_a_class_is_no_syntax_error() -> None:
    """``Reference(LogicalSwitch)`` (the class where its table's name belongs) was defined and refused at the
    first write with nbdb's ValidationError; on the branch its repr is written into the generated ref_keys and
    the class statement fails with a SyntaxError from ``<nbdb ref_keys of ...>``."""
    try:

        class RvByClass(Model):
            switch: Annotated[uuid.UUID, Reference(LogicalSwitch)]  # type: ignore[arg-type]

    except nbdb.NbdbError:
        pass  # a typed refusal at the class is as good as one at the write
    finally:
        model_base._REGISTRY.pop("RvByClass", None)  # no later test's every-model walk meets its class target
