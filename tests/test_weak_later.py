"""Which tables a weak reference points to is read once and again after each model class defined."""

from __future__ import annotations

from typing import Annotated, ClassVar
from uuid import UUID

from pydantic import Field

import nbdb
from nbdb.cascade import weakly_referenced
from nbdb.models import Model, Reference


def test_a_model_defined_after_a_delete_makes_its_weak_targets_lose_it() -> None:
    class LaterTarget(Model):
        nbdb_table: ClassVar[str] = "WeakLaterTarget"
        name: str = ""

    with nbdb.connect("memory://") as db:
        first = db.create(LaterTarget(name="a"))
        db.delete(first)  # read the weak targets now, before the holder below exists
        assert not weakly_referenced("WeakLaterTarget")

        class LaterHolder(Model):
            nbdb_table: ClassVar[str] = "WeakLaterHolder"
            members: list[Annotated[UUID, Reference("WeakLaterTarget", weak=True)]] = Field(default_factory=list)

        assert weakly_referenced("WeakLaterTarget")
        target = db.create(LaterTarget(name="b"))
        holder = db.create(LaterHolder(members=[target.id]))
        db.delete(target)  # a plain delete: the weak reference goes with it, in its commit
        assert db.get(LaterHolder, holder.id).members == []
