"""OVSDB: a write's returned copy is shared with the writing Database's caches only if nothing in it can change.

A row read back exactly as this client wrote it hands the cache the stored copy the write
validated (and returned) instead of a second decode. The copy's lists, maps and sets are frozen,
but only at the top: a nested list or map (``dict[str, list[str]]``, ``list[list[int]]``), a
nested model or a union's container is the caller's to change in place. Shared, such a change
would change the cache's copy, which would then hold what the server does not.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import ipaddress
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import pydantic
import pytest
from pydantic import Field

import nbdb
from nbdb.conformance.kit import eventually
from nbdb.models.base import Model
from nbdb.testing.ovsdb import OvsdbServer

pytestmark = pytest.mark.timeout(120)


class SharedInner(pydantic.BaseModel):
    x: int = 0


class SharedNested(Model):
    """Fields whose values hold lists, maps or a model inside: none of them is frozen through."""

    nbdb_table: ClassVar[str] = "SharedNested"

    name: str = ""
    tags: list[str] = Field(default_factory=list)
    data: dict[str, list[str]] = Field(default_factory=dict)
    rows: list[list[int]] = Field(default_factory=list)
    inner: SharedInner = Field(default_factory=SharedInner)
    either: int | list[int] = 0


class SharedAny(Model):
    """Fields that may hold a value of any class: what their JSON decodes to is JSON's own types."""

    nbdb_table: ClassVar[str] = "SharedAny"

    anything: Any = None
    by_name: dict[str, Any] = Field(default_factory=dict)
    typed: dict[str, list[uuid.UUID]] = Field(default_factory=dict)
    either: str | bytes = ""
    dated: dict[str, list[str | datetime.date]] = Field(default_factory=dict)


class _Level(enum.IntEnum):
    LOW = 1


@pytest.fixture(scope="module")
def db() -> Iterator[nbdb.Database]:
    with (
        OvsdbServer(model_schema=True) as server,
        nbdb.connect(server.url, namespace=f"t{uuid.uuid4().hex[:10]}") as database,
    ):
        yield database


def _change(obj: SharedNested, name: str) -> None:
    """An in-place change of ``obj``'s ``name``, inside what the stored copy froze."""
    if name == "data":
        obj.data["k"].append("theirs")
    elif name == "rows":
        obj.rows[0].append(99)
    elif name == "inner":
        obj.inner.x = 42
    else:
        assert isinstance(obj.either, list)
        obj.either.append(7)


@pytest.mark.parametrize("name", ["data", "rows", "inner", "either"])
@pytest.mark.parametrize("write", ["create", "update"])
@pytest.mark.parametrize("whose", ["returned", "given"])
def test_a_cache_never_holds_what_the_caller_changed_in_place_in_a_written_copy(
    db: nbdb.Database, write: str, name: str, whose: str
) -> None:
    # "returned": the copy the write returned; "given": the caller's own object it wrote (its stored
    # copy froze the top of each field only: a list inside a map is the caller's very list).
    cache = db.cache(SharedNested)
    assert cache.wait_synced(10)
    given = SharedNested(name=write, data={"k": ["1"]}, rows=[[1]], inner=SharedInner(x=1), either=[1])
    made = db.create(given)
    if write == "update":
        given = made.model_copy(update={"tags": ["t"]}, deep=True)  # plain lists and maps, the caller's own
    obj = made if write == "create" else db.update(given)
    assert eventually(
        lambda: (c := cache.get(SharedNested, obj.id)) is not None and c.version == obj.version, timeout=10
    )
    try:
        _change(obj if whose == "returned" else given, name)
    except nbdb.ValidationError:
        pass  # refused in place: nothing changed
    stored = db.get(SharedNested, obj.id)
    cached = cache.get(SharedNested, obj.id)
    assert stored is not None and cached is not None
    assert stored.data == {"k": ["1"]} and stored.rows == [[1]] and stored.inner.x == 1 and stored.either == [1]
    assert cached == stored, f"an in-place change of the {whose} object's {name} reached the cache"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("anything", b"x"),
        ("anything", ipaddress.IPv4Address("10.0.0.1")),
        ("anything", [b"y", decimal.Decimal("1.5")]),
        ("anything", uuid.UUID(int=1)),
        ("anything", datetime.date(2020, 1, 2)),
        ("anything", _Level.LOW),
        ("anything", (1, 2)),
        ("anything", {1: "a"}),
        ("by_name", {"k": [ipaddress.IPv6Network("::/64")]}),
        ("anything", {"k": [1, "a", None, 1.5, True]}),
        ("typed", {"k": [uuid.UUID(int=2)]}),
        ("either", b"x"),  # a union: its JSON text is taken by the first choice, str
        ("either", "x"),
        ("dated", {"k": [datetime.date(2020, 1, 2), "a"]}),
    ],
)
def test_a_cache_holds_what_a_read_of_the_row_decodes_for_a_field_of_any_class_or_a_union(
    db: nbdb.Database, field: str, value: Any
) -> None:
    """A field that may hold any class (``Any``) reads back from its JSON as JSON's types: text for bytes, an
    address, a UUID or a date, a list for a tuple, text keys. The writer's cache shared the written
    copy, holding the caller's classes, where every read of the row (and every other client's cache) had
    JSON's: two values of one row at one version, unequal, in one process. A union's JSON text is taken
    by its first choice that takes it: ``b"x"`` in ``str | bytes`` reads back as ``"x"``."""
    cache = db.cache(SharedAny)
    assert cache.wait_synced(10)
    made = db.create(SharedAny(**{field: value}))
    assert eventually(lambda: cache.get(SharedAny, made.id) is not None, timeout=10)
    cached = cache.get(SharedAny, made.id)
    stored = db.get(SharedAny, made.id)
    assert cached is not None and stored is not None
    assert cached == stored and repr(cached) == repr(stored), f"the cache holds {cached!r}, a read {stored!r}"
