"""Models and helpers shared by the kit's tests.

The kit defines its own small models (a user's models must work on every
backend) and also uses the OVN-style schema.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, ClassVar
from uuid import UUID

from pydantic import Field

from nbdb.models.base import Model, Reference

__all__ = ["KitChild", "KitCounter", "KitGroup", "KitNamed", "KitNote", "KitParent", "eventually"]


class KitParent(Model):
    """A parent that children point to."""

    nbdb_table: ClassVar[str] = "KitParent"
    nbdb_indexes: ClassVar[tuple[str, ...]] = ("name",)

    name: str
    size: int = 0


class KitChild(Model):
    """A child with a required reference to its parent."""

    nbdb_table: ClassVar[str] = "KitChild"
    nbdb_indexes: ClassVar[tuple[str, ...]] = ("name",)

    parent: Annotated[UUID, Reference("KitParent")]
    name: str
    value: int = 0


class KitNote(Model):
    """An object with an optional reference."""

    nbdb_table: ClassVar[str] = "KitNote"

    about: Annotated[UUID | None, Reference("KitParent")] = None
    text: str = ""


class KitGroup(Model):
    """An object with a list of references."""

    nbdb_table: ClassVar[str] = "KitGroup"

    members: list[Annotated[UUID, Reference("KitChild")]] = Field(default_factory=list)


class KitCounter(Model):
    """A counter for read-modify-write races."""

    nbdb_table: ClassVar[str] = "KitCounter"

    count: int = 0


class KitNamed(Model):
    """An object with a unique name, and an optional unique pair (zone, slot)."""

    nbdb_table: ClassVar[str] = "KitNamed"
    nbdb_unique: ClassVar[tuple[str | tuple[str, ...], ...]] = ("name", ("zone", "slot"))

    name: str
    zone: str | None = None
    slot: int | None = None
    tags: list[str] = Field(default_factory=list)


def eventually(check: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``check`` until it is true or ``timeout`` passes; returns its last result."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
