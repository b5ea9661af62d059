"""A stored copy is frozen through: a list, map or model inside another refuses an in-place change (issue #12).

Only a field's own list, map or set was frozen: a list inside a map, a list inside a list, a nested
model were the very objects the store held on memory:// (an in-place change in a returned copy, or
in the caller's written object, changed what every reader saw without a write), and on every store
the caller's later change of its written object changed the write's result.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import Field

import nbdb
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.models.base import Model

pytestmark = pytest.mark.timeout(180)


class DeepInner(pydantic.BaseModel):
    x: int = 0
    ys: list[int] = Field(default_factory=list)


class DeepBag(Model):
    """Fields that hold lists, maps and a model inside another."""

    name: str = ""
    data: dict[str, list[str]] = Field(default_factory=dict)
    rows: list[list[int]] = Field(default_factory=list)
    inner: DeepInner = Field(default_factory=DeepInner)
    either: int | list[int] = 0
    anything: Any = None


CHANGES: dict[str, Callable[[DeepBag], None]] = {
    "data": lambda obj: obj.data["k"].append("theirs"),
    "rows": lambda obj: obj.rows[0].append(99),
    "inner": lambda obj: setattr(obj.inner, "x", 42),
    "inner.ys": lambda obj: obj.inner.ys.append(42),
    "either": lambda obj: obj.either.append(7),  # type: ignore[union-attr]
    "anything": lambda obj: obj.anything["k"].append(7),
}


def _bag() -> DeepBag:
    return DeepBag(
        name="b", data={"k": ["1"]}, rows=[[1]], inner=DeepInner(x=1, ys=[1]), either=[1], anything={"k": [1]}
    )


def _content(obj: DeepBag) -> Any:
    return obj.model_dump(exclude={"version"})


@pytest.fixture(params=["memory", "sqlite"])
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """One store's URL, for two Databases on it."""
    yield f"memory://deep{uuid.uuid4().hex[:8]}" if request.param == "memory" else f"sqlite:///{tmp_path}/deep.db"


@pytest.mark.parametrize("name", sorted(CHANGES))
@pytest.mark.parametrize("how", ["create", "update", "get"])
def test_a_nested_value_of_a_returned_copy_refuses_an_in_place_change(urls: str, how: str, name: str) -> None:
    with nbdb.connect(urls) as db, nbdb.connect(urls) as other:
        made = db.create(_bag())
        expected = _content(made)
        copy = made
        if how == "update":
            copy = db.update(made.replace(name="u"))
            expected = _content(copy)
        elif how == "get":
            copy = db.get(DeepBag, made.id)
        cache = other.cache(DeepBag)
        assert cache.wait_synced(10)
        with pytest.raises(nbdb.ValidationError):
            CHANGES[name](copy)
        assert _content(copy) == expected
        for seen in (
            db.get(DeepBag, made.id),
            other.get(DeepBag, made.id),
            db.list(DeepBag)[0],
            cache.get(DeepBag, made.id),
        ):
            assert seen is not None and _content(seen) == expected


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_a_change_of_the_callers_written_object_changes_neither_the_store_nor_the_result(urls: str, name: str) -> None:
    with nbdb.connect(urls) as db, nbdb.connect(urls) as other:
        mine = _bag()
        expected = _content(mine)
        made = db.create(mine)
        CHANGES[name](mine)  # the caller's own object: its to change
        assert _content(made) == expected
        for seen in (db.get(DeepBag, made.id), other.get(DeepBag, made.id)):
            assert seen is not None and _content(seen) == expected


def test_a_flat_model_decides_once_to_freeze_at_the_top_only() -> None:
    # Zero cost for atoms and flat containers of atoms: no field of a built-in model is frozen through.
    assert LogicalSwitch.nbdb_deep_fields == () and LogicalSwitchPort.nbdb_deep_fields == ()
    # ``either`` (``int | list[int]``) is a flat list at most: frozen at the top, as ``list[int]`` is.
    assert set(DeepBag.nbdb_deep_fields) == {"data", "rows", "inner", "anything"}


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=10,
)


def _mutables(value: Any) -> Iterator[Any]:
    """Every list and dict inside ``value`` (itself included), at every depth."""
    if isinstance(value, list | dict):
        yield value
    for item in value.values() if isinstance(value, dict) else value if isinstance(value, list) else ():
        yield from _mutables(item)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(anything=_json, data=st.dictionaries(st.text(max_size=3), st.lists(st.text(max_size=3), max_size=3), max_size=3))
def test_every_nested_list_and_map_of_a_stored_copy_refuses_every_change(anything: Any, data: dict[str, Any]) -> None:
    for url in (f"memory://deep{uuid.uuid4().hex[:8]}", "sqlite://"):
        with nbdb.connect(url) as db:
            made = db.create(DeepBag(anything=anything, data=data))
            expected = _content(made)
            for copy in (made, db.get(DeepBag, made.id), db.list(DeepBag)[0]):
                for value in [*_mutables(copy.anything), *_mutables(copy.data)]:
                    with pytest.raises(nbdb.ValidationError):
                        if isinstance(value, list):
                            value.append(1)
                        else:
                            value["new"] = 1
                    with pytest.raises(nbdb.ValidationError):
                        value.clear()
                assert _content(db.get(DeepBag, made.id)) == expected


@pytest.mark.parametrize("url", ["memory://", "sqlite://"])
def test_a_newer_models_fields_of_a_copy_refuse_an_in_place_change(url: str) -> None:
    # Fields of a newer model a copy was read with (model_extra) are frozen through as its own are.
    with nbdb.connect(url) as db:
        stored = db.create(LogicalSwitch(name="newer"))
        document = {**json.loads(stored.model_dump_json(exclude={"version"})), "labels": {"a": [1]}}
        db.backend.write_raw(stored.nbdb_table, stored.id, stored.topic, json.dumps(document).encode())
        read = db.get(LogicalSwitch, stored.id)
        assert read is not None and read.model_extra == {"labels": {"a": [1]}}
        updated = db.update(read.replace(name="again"))
        for copy in (read, updated, db.get(LogicalSwitch, stored.id)):
            assert copy is not None and copy.model_extra is not None
            with pytest.raises(nbdb.ValidationError):
                copy.model_extra["labels"]["a"].append(2)
            with pytest.raises(nbdb.ValidationError):
                copy.model_extra["labels"]["b"] = [3]
        again = db.get(LogicalSwitch, stored.id)
        assert again is not None and again.model_extra == {"labels": {"a": [1]}}
