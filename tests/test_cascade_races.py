"""A cascading delete of ``Model, id`` never fails because a dependent it cleared changed meanwhile."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Annotated, ClassVar
from uuid import UUID

import pytest
from pydantic import Field, model_validator

import nbdb

pytestmark = pytest.mark.timeout(120)

_BEFORE_COMMIT: dict[UUID, Callable[[], None]] = {}
"""One-shot calls made while a copy of the group with that id is decoded (on a thread of their own, joined)."""


def _run_meanwhile(id: UUID) -> None:
    """Make the one-shot call registered for ``id`` (see _BEFORE_COMMIT), if any."""
    call = _BEFORE_COMMIT.pop(id, None)
    if call is not None:
        thread = threading.Thread(target=call)
        thread.start()
        thread.join(30)


class CascadeMember(nbdb.Model):
    name: str


class CascadeGroup(nbdb.Model):
    """A port group: a hot object whose member list other writers change all the time."""

    nbdb_indexes: ClassVar[tuple[str, ...]] = ("name",)
    name: str
    members: list[Annotated[UUID, nbdb.Reference("CascadeMember")]] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _meanwhile(self) -> CascadeGroup:
        _run_meanwhile(self.id)
        return self


@pytest.mark.parametrize("kind", ["sqlite", "redis", "etcd"])
def test_a_cascading_delete_by_id_goes_on_when_a_dependent_changes_meanwhile(
    kind: str, url_of: Callable[[str], str], tmp_path: object
) -> None:
    # A controller deletes a port (whatever its version) while another one adds members to the port group
    # that holds it: the cascade read the group, the group changed, and the delete raised ConflictError
    # "CascadeGroup ... is at version 2, not 1: re-read it and retry" about an object the caller never read.
    url = f"sqlite:///{tmp_path}/nb.db" if kind == "sqlite" else url_of(kind)
    with nbdb.connect(url) as db, nbdb.connect(url) as other:
        doomed, kept = db.create(CascadeMember(name="doomed")), db.create(CascadeMember(name="kept"))
        group = db.create(CascadeGroup(name="g", members=[doomed.id, kept.id]))
        _BEFORE_COMMIT[group.id] = lambda: other.mutate(group, add={"labels": {"by": "other"}}) and None
        try:
            revision = db.delete(CascadeMember, doomed.id, cascade=True)
        finally:
            _BEFORE_COMMIT.clear()
        assert revision is not None
        after = db.get(CascadeGroup, group.id)
        assert after.members == [kept.id] and after.labels == {"by": "other"}, "both writes landed"
        with pytest.raises(nbdb.NotFoundError):
            db.get(CascadeMember, doomed.id)


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_a_cascading_delete_goes_on_when_an_object_starts_referring_meanwhile(
    kind: str, url_of: Callable[[str], str], tmp_path: object
) -> None:
    # A controller deletes a port with cascade=True while another one adds it to a second port group:
    # the cascade had read the referrers before the group held it, and the commit raised ReferenceError
    # "... still referenced by CascadeGroup ...; delete those first or pass cascade=True" to a caller who had.
    url = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/nb.db"}.get(kind) or url_of(kind)
    with nbdb.connect(url) as db, nbdb.connect(url) as second:
        other = db if kind == "memory" else second  # each memory:// connection is a store of its own
        doomed = db.create(CascadeMember(name="doomed"))
        holder = db.create(CascadeGroup(name="holder", members=[doomed.id]))
        late = db.create(CascadeGroup(name="late"))
        joined: list[CascadeGroup] = []
        _BEFORE_COMMIT[holder.id] = lambda: joined.append(other.mutate(late, add={"members": [doomed]}))
        try:
            revision = db.delete(doomed, cascade=True)
        finally:
            _BEFORE_COMMIT.clear()
        assert [g.members for g in joined] == [[doomed.id]], "the other controller's write landed first"
        assert revision is not None
        assert db.get(CascadeGroup, late.id).members == [] and db.get(CascadeGroup, holder.id).members == []
        with pytest.raises(nbdb.NotFoundError):
            db.get(CascadeMember, doomed.id)


class WeakGroup(nbdb.Model):
    """A port group as OVN has it: its members are weak references (a port's plain delete drops it)."""

    name: str
    members: list[Annotated[UUID, nbdb.Reference("CascadeMember", weak=True)]] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _meanwhile(self) -> WeakGroup:
        _run_meanwhile(self.id)
        return self


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis", "etcd"])
def test_a_plain_delete_drops_weak_references_that_change_or_appear_meanwhile(
    kind: str, url_of: Callable[[str], str], tmp_path: object
) -> None:
    # The drop of a weak reference is planned from nbdb's own read: a group another controller changes
    # before the commit (ConflictError about an object the caller never read) or starts holding the
    # target (ReferenceError for a reference that is weak) is read again and the drop planned again.
    url = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/nb.db"}.get(kind) or url_of(kind)
    with nbdb.connect(url) as db, nbdb.connect(url) as second:
        other = db if kind == "memory" else second
        doomed, kept = db.create(CascadeMember(name="doomed")), db.create(CascadeMember(name="kept"))
        holder = db.create(WeakGroup(name="holder", members=[doomed.id, kept.id]))
        late = db.create(WeakGroup(name="late", members=[kept.id]))

        def meanwhile() -> None:
            other.mutate(holder, add={"labels": {"by": "other"}})
            other.mutate(late, add={"members": [doomed]})

        _BEFORE_COMMIT[holder.id] = meanwhile
        try:
            revision = db.delete(CascadeMember, doomed.id)
        finally:
            _BEFORE_COMMIT.clear()
        assert revision is not None
        after = db.get(WeakGroup, holder.id)
        assert after.members == [kept.id] and after.labels == {"by": "other"}, "both writes landed"
        assert db.get(WeakGroup, late.id).members == [kept.id]
        with pytest.raises(nbdb.NotFoundError):
            db.get(CascadeMember, doomed.id)
