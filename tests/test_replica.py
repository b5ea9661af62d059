"""The cache's index buckets (nbdb.replica): pure logic, no server."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from nbdb.replica import Indexes, bucket_objects, index, reindex, unindex


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
