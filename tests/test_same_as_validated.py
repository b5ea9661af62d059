"""``nbdb.storable.same_as_validated`` and the write check it serves, for values at any depth (Hypothesis).

Any value validation builds is the same as what validation makes of it (nbdb's frozen copies included), so
it is written; a container of another class than validation gives (a tuple for a list, a frozenset for a set),
at any depth, is refused, or written as it reads back from every store.
"""

from __future__ import annotations

import dataclasses
import enum
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import Field, model_validator

import nbdb
from nbdb.models.shared import FrozenDict, FrozenList, FrozenSet
from nbdb.storable import same_as_validated

pytestmark = pytest.mark.timeout(300)

_TEXT = st.sampled_from(["a", "b", "c"])


class Plain7(nbdb.Model):
    """Containers inside containers, no validator of its own (the fast check's path)."""

    lists: dict[str, list[str]] = Field(default_factory=dict)
    sets: dict[str, set[str]] = Field(default_factory=dict)
    rows: list[list[str]] = Field(default_factory=list)
    groups: list[set[str]] = Field(default_factory=list)
    ints: list[int] = Field(default_factory=list)
    numbers: set[int] = Field(default_factory=set)


class Nested7(Plain7):
    """The same fields (a table of its own), and a validator of the model's own (every write validated again)."""

    @model_validator(mode="after")
    def _own(self) -> Nested7:
        return self


_RAW = st.fixed_dictionaries(
    {
        "lists": st.dictionaries(_TEXT, st.lists(_TEXT, max_size=2), max_size=2),
        "sets": st.dictionaries(_TEXT, st.sets(_TEXT, max_size=2), max_size=2),
        "rows": st.lists(st.lists(_TEXT, max_size=2), max_size=2),
        "groups": st.lists(st.sets(_TEXT, max_size=2), max_size=2),
        "ints": st.lists(st.integers(0, 3), max_size=2),
        "numbers": st.sets(st.integers(0, 3), max_size=2),
    }
)
_FROZEN = {list: FrozenList, dict: FrozenDict, set: FrozenSet}
_OTHER: dict[type, type] = {list: tuple, set: frozenset}


def _frozen(value: Any) -> Any:
    """``value`` with every list, map and set nbdb's frozen copy (as a stored or decoded copy may hold them)."""
    if isinstance(value, dict):
        return FrozenDict({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return FrozenList(_frozen(v) for v in value)
    if isinstance(value, set):
        return FrozenSet(value)
    return value


@settings(max_examples=150, deadline=None)
@given(raw=_RAW, model=st.sampled_from([Nested7, Plain7]))
def test_a_value_validation_built_is_the_same_as_validated(raw: dict[str, Any], model: type[nbdb.Model]) -> None:
    built = model(**raw)
    for name in raw:
        value = getattr(built, name)
        again = model.__pydantic_validator__.validate_python(built.__dict__).__dict__[name]
        assert same_as_validated(again, value)
        assert same_as_validated(again, _frozen(value))


@st.composite
def _swapped(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """Validated fields with one list or set, at some depth, made a tuple or a frozenset; the field's name."""
    raw = draw(_RAW)
    candidates: list[tuple[str, tuple[Any, ...]]] = []
    for name, value in raw.items():
        if isinstance(value, dict):
            candidates += [(name, (k,)) for k in value]
        elif name in ("ints", "numbers"):
            candidates.append((name, ()))
        else:
            candidates += [(name, ())] + [(name, (i,)) for i in range(len(value))]
    if not candidates:
        raw["rows"] = [["a"]]
        candidates = [("rows", (0,))]
    name, path = draw(st.sampled_from(candidates))
    if not path:
        raw[name] = _OTHER[type(raw[name])](raw[name])
    else:
        inner = raw[name][path[0]]
        raw[name][path[0]] = _OTHER[type(inner)](inner)
    return raw, name


@pytest.mark.parametrize("url", ["memory://", "sqlite://"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(swapped=_swapped(), model=st.sampled_from([Nested7, Plain7]))
def test_a_container_of_another_class_at_any_depth_is_refused_or_written_as_it_reads_back(
    url: str, swapped: tuple[dict[str, Any], str], model: type[nbdb.Model]
) -> None:
    fields, name = swapped
    with nbdb.connect(url) as db:
        obj = model()
        obj.__dict__.update(fields)  # changed in place, or built without validation
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # pydantic's serializer warning: written as it was, not as it reads
            try:
                written = db.create(obj)
            except nbdb.ValidationError as exc:
                assert "cannot be stored" in str(exc)
                assert db.list(model) == []
                return
        got = db.get(model, obj.id)
        assert got is not None and got == written
        valid = pydantic.TypeAdapter(model.model_fields[name].annotation).validate_python(fields[name])
        assert same_as_validated(valid, getattr(got, name)), (name, fields[name], getattr(got, name))


class Color7(enum.StrEnum):
    RED = "red"
    BLUE = "blue"


class Inner7(pydantic.BaseModel):
    tags: set[str] = Field(default_factory=set)
    names: list[str] = Field(default_factory=list)


@dataclasses.dataclass
class Pair7:
    tags: set[str]
    rows: dict[str, list[str]]


class Mixed7(nbdb.Model):
    """Fields whose validation keeps the value's class (an enum, a tuple, a nested model) or makes it (a list)."""

    colors: list[Color7] = Field(default_factory=list)
    maybe: list[str] | None = None
    either: list[str] | tuple[str, ...] = Field(default_factory=list)
    mapping: Mapping[str, str] = Field(default_factory=dict)
    sequence: Sequence[str] = Field(default_factory=list)
    frozen: frozenset[str] = frozenset()
    fixed: tuple[str, ...] = ()
    inners: list[Inner7] = Field(default_factory=list)
    pair: Pair7 | None = None
    keyed: dict[Color7, list[int]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _own(self) -> Mixed7:
        return self


_TEXTS = st.lists(_TEXT, max_size=2)
_MIXED = st.fixed_dictionaries(
    {},
    optional={
        "colors": st.lists(st.sampled_from([Color7.RED, "blue"]), max_size=2),
        "maybe": st.none() | _TEXTS,
        "either": _TEXTS | _TEXTS.map(tuple),
        "mapping": st.dictionaries(_TEXT, _TEXT, max_size=2),
        "sequence": _TEXTS | _TEXTS.map(tuple),
        "frozen": st.frozensets(_TEXT, max_size=2) | st.sets(_TEXT, max_size=2),
        "fixed": _TEXTS,
        "inners": st.lists(st.builds(Inner7, tags=st.sets(_TEXT, max_size=2), names=_TEXTS), max_size=2),
        "pair": st.none() | st.builds(Pair7, tags=st.sets(_TEXT, max_size=2), rows=st.dictionaries(_TEXT, _TEXTS)),
        "keyed": st.dictionaries(st.sampled_from(list(Color7)), st.lists(st.integers(0, 3), max_size=2), max_size=2),
    },
)


@pytest.mark.parametrize("url", ["memory://", "sqlite://"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=_MIXED)
def test_an_object_its_constructor_built_is_written_read_and_written_again(url: str, raw: dict[str, Any]) -> None:
    """No false refusal: what validation built (enums, unions, tuples kept, nested models and dataclasses)."""
    with nbdb.connect(url) as db, warnings.catch_warnings():
        warnings.simplefilter("error")
        written = db.create(Mixed7(**raw))
        got = db.get(Mixed7, written.id)
        assert got is not None
        assert db.update(got.replace(maybe=["again"])).version == 2
