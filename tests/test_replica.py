"""The cache's index buckets (nbdb.replica): pure logic, no server."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from nbdb.replica import Indexes, bucket_objects, index, index_all, reindex, unindex


@dataclass(frozen=True)
class Obj:
    id: uuid.UUID
    name: str | None
    tags: list[str] = field(default_factory=list)


FIELDS = ("name", "tags")
NULLS = frozenset({"name"})

_IDS = st.integers(0, 5).map(lambda n: uuid.UUID(int=n))
_NAMES = st.one_of(st.none(), st.sampled_from(["a", "b", "c"]))
_TAGS = st.lists(st.sampled_from(["x", "y", "z"]), max_size=3, unique=True)
_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), _IDS, _NAMES, _TAGS),
        st.tuples(st.just("remove"), _IDS, st.none(), st.just([])),
    ),
    max_size=30,
)


def _expected(live: dict[uuid.UUID, Obj], name: str, value: Any) -> set[uuid.UUID]:
    if name == "tags":
        return {o.id for o in live.values() if value in o.tags}
    return {o.id for o in live.values() if o.name == value}


@given(steps=_STEPS)
def test_buckets_hold_exactly_the_objects_with_each_value(steps: list[tuple[str, uuid.UUID, Any, list[str]]]) -> None:
    # Ids equal in value but not the same UUID object are one object: every step spells the id
    # anew, the way a change read from the wire does.
    indexes: Indexes = {f: {} for f in FIELDS}
    live: dict[uuid.UUID, Obj] = {}
    for kind, id, name, tags in steps:
        id = uuid.UUID(int=id.int)
        old = live.get(id)
        if kind == "remove":
            if old is not None:
                unindex(indexes, old)
                del live[id]
            continue
        new = Obj(id, name, tags)
        if old is None:
            index(indexes, new, NULLS)
        else:
            reindex(indexes, old, new, NULLS)
        live[id] = new
    for f in FIELDS:
        values = {None, "a", "b", "c"} if f == "name" else {"x", "y", "z"}
        for value in values:
            bucket = indexes[f].get(value)
            held = [] if bucket is None else bucket_objects(bucket)
            assert {o.id for o in held} == _expected(live, f, value)
            assert all(live[o.id] is o for o in held)  # the latest copy, never a stale one


@dataclass(frozen=True)
class Port:
    id: uuid.UUID
    name: str | None
    tags: list[str]
    ref: uuid.UUID | None
    other: Any


PORT_FIELDS = ("name", "tags", "ref", "other")
_TARGETS = [uuid.UUID(int=1000 + n) for n in range(3)]
_REFS = st.one_of(
    st.none(),
    st.sampled_from(_TARGETS),  # one shared id per target, as a decode leaves them
    st.sampled_from(_TARGETS).map(lambda t: uuid.UUID(int=t.int)),  # an equal id, another object
)
_PORTS = st.lists(
    st.tuples(
        st.one_of(st.none(), st.sampled_from(["a", "b", "c"]), st.text(max_size=3)),
        _TAGS,
        _REFS,
        st.one_of(st.none(), st.integers(0, 2), st.booleans(), st.sampled_from(["a", "1"])),
    ),
    max_size=25,
)


def _shape(indexes: Indexes) -> dict[str, dict[Any, tuple[bool, frozenset[int]]]]:
    """Each bucket: whether it is a dict by id, and which objects (by identity) it holds."""
    return {
        f: {value: (type(b) is dict, frozenset(id(o) for o in bucket_objects(b))) for value, b in buckets.items()}
        for f, buckets in indexes.items()
    }


_COPY = uuid.UUID(int=_TARGETS[0].int)


@given(ports=_PORTS, nulls=st.sets(st.sampled_from(PORT_FIELDS)), before=st.integers(0, 3))
@example(  # two objects of each of two equal ids: two groups of one value to merge
    ports=[("a", [], _TARGETS[0], 1), ("b", [], _COPY, True), ("c", [], _TARGETS[0], 1), ("d", [], _COPY, 1)],
    nulls=set(),
    before=0,
)
def test_index_all_builds_the_buckets_index_builds_one_object_at_a_time(
    ports: list[tuple[Any, ...]], nulls: set[str], before: int
) -> None:
    # A cache's first load indexes field by field (index_all); a change indexes one object (index).
    # Buckets that already hold objects (``before`` of them indexed one at a time) are filled too.
    objs = [Port(uuid.UUID(int=n), *fields) for n, fields in enumerate(ports)]
    one_by_one: Indexes = {f: {} for f in PORT_FIELDS}
    for obj in objs:
        index(one_by_one, obj, nulls)
    at_once: Indexes = {f: {} for f in PORT_FIELDS}
    for obj in objs[:before]:
        index(at_once, obj, nulls)
    index_all(at_once, objs[before:], nulls)
    assert _shape(at_once) == _shape(one_by_one)
