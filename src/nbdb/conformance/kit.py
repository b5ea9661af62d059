"""Models and helpers shared by the kit's tests.

The kit defines its own small models (a user's models must work on every
backend) and also uses the OVN-style schema.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, ClassVar
from uuid import UUID

from pydantic import Field, field_validator

from nbdb.models.base import Model, Reference
from nbdb.spi import Backend, RecordChange, RecordStream

__all__ = [
    "RAISING_NAME",
    "KitChild",
    "KitCounter",
    "KitGroup",
    "KitNamed",
    "KitNote",
    "KitParent",
    "eventually",
    "held_watches",
]


class KitParent(Model):
    """A parent that children point to."""

    nbdb_table: ClassVar[str] = "KitParent"
    nbdb_indexes: ClassVar[tuple[str, ...]] = ("name",)

    name: str
    size: int = 0

    @field_validator("name")
    @classmethod
    def _raises_on_a_name(cls, value: str) -> str:
        # A user's validator may raise what pydantic lets through as it is (not a ValueError): a record
        # another writer stored with such a value must be corrupt to a reader, not kill its watch or cache.
        if value == RAISING_NAME:
            raise RuntimeError(f"a KitParent named {RAISING_NAME!r} makes its validator raise")
        return value


RAISING_NAME = "kit: the validator raises on this name"
"""A name :class:`KitParent`'s validator raises RuntimeError on (see test_corrupt)."""


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


class _HeldStream(RecordStream):
    """A watch not opened on the server until ``gate`` is set: a consumer cut off from it."""

    def __init__(self, open_stream: Callable[[], RecordStream], since: int, gate: threading.Event) -> None:
        self._open = open_stream
        self._since = since
        self._gate = gate
        self._inner: RecordStream | None = None
        self._closed = False

    def poll(self, timeout: float | None) -> list[RecordChange]:
        if self._inner is None:
            if not self._gate.wait(timeout) or self._closed:
                return []
            self._inner = self._open()
        return self._inner.poll(timeout)

    @property
    def revision(self) -> int:
        return self._since if self._inner is None else self._inner.revision

    def close(self) -> None:
        self._closed = True
        if self._inner is not None:
            self._inner.close()


@contextmanager
def held_watches(backend: Backend) -> Iterator[threading.Event]:
    """Hold back every watch ``backend`` opens in the block until the yielded event is set.

    Plays a consumer cut off from the server (a slow network, a paused
    process) without faking the server: each stream is the backend's own,
    opened from the same revision once the event is set.
    """
    gate = threading.Event()
    original = backend.watch

    def watch(tables: Sequence[str], topics: Collection[str | None] | None, since: int) -> RecordStream:
        return _HeldStream(lambda: original(tables, topics, since), since, gate)

    backend.watch = watch  # type: ignore[method-assign]
    try:
        yield gate
    finally:
        gate.set()
        del backend.watch  # back to the class's method
