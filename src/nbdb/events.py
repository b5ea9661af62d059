"""Change events delivered by watches and caches."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar
from uuid import UUID

from nbdb.models.base import Model

__all__ = ["ChangeEvent", "EventKind", "Key"]

M = TypeVar("M", bound=Model)

Key = tuple[type[Model], UUID]
"""What a work queue holds for an object: its model class and its id."""


class EventKind(StrEnum):
    """What happened to an object."""

    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class ChangeEvent(Generic[M]):
    """One committed change of one object.

    ``old`` is the state before (None on create), ``new`` the state after
    (None on delete). ``revision`` is the resume token of the commit.
    ``synthetic`` is True for events a cache made up after a re-list, when the
    backend could not replay history: they carry the net difference.
    """

    kind: EventKind
    model: type[M]
    old: M | None
    new: M | None
    revision: int
    synthetic: bool = False

    @property
    def object(self) -> M:
        """The object after the change, or its last state if it was deleted."""
        obj = self.new if self.new is not None else self.old
        assert obj is not None
        return obj

    @property
    def id(self) -> UUID:
        """The id of the changed object."""
        return self.object.id

    @property
    def key(self) -> Key:
        """``(model, id)`` of the changed object, as work queues hold it."""
        return (self.model, self.object.id)
