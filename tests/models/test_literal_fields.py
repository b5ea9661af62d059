"""Fields of ``Literal`` values in lists and sets (``list[Literal["a", "b"]]``, ``frozenset[Literal[...]]``).

A ``Literal`` is one JSON atom (kind ``json``: its values may be of several types). Its list or set was
taken for one JSON value too, a ``scalar``: a store that types its columns, OVSDB serving a generated
model's set of a boolean or uuid enum (``list[Literal[True, False]]``), put the whole list in a set of
one, and every write was a raw ``TypeError`` (unhashable list). Now the field is a ``list`` or ``set`` of
``json`` items. Where nbdb chooses the column (the OVSDB model database) it is still JSON text, as before.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.families.ovsdb.schemagen import column_type
from nbdb.models import Model
from nbdb.models.shape import shape_of

_VALUES = st.one_of(
    st.sets(st.booleans(), min_size=1),
    st.sets(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=6),
    st.sets(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8), min_size=1, max_size=6),
    st.tuples(
        st.sets(st.text(max_size=4), min_size=1, max_size=3), st.sets(st.integers(2, 50), min_size=1, max_size=3)
    ).map(lambda both: both[0] | both[1]),
).map(lambda values: tuple(sorted(values, key=repr)))
"""The values of a ``Literal``: booleans, integers, texts, or texts and integers (not integers and
booleans: ``1 == True``, a set holds one of them)."""


def _model(values: tuple[Any, ...]) -> type[Model]:
    lit: Any = Literal[values]  # Literal[("a", 1)] is Literal["a", 1]

    class LiteralProbe(Model):  # one class name and table: each example's class replaces the previous one
        nbdb_table = "literal_probe"
        one: lit = values[0]  # type: ignore[valid-type]
        maybe: lit | None = None  # type: ignore[valid-type]
        listed: list[lit] = []  # type: ignore[valid-type]
        kept: frozenset[lit] = frozenset()  # type: ignore[valid-type]
        held: set[lit] | None = None  # type: ignore[valid-type]
        fixed: tuple[lit, ...] = ()  # type: ignore[valid-type]
        by_name: dict[str, lit] = {}  # type: ignore[valid-type]

    return LiteralProbe


_SHAPES = {
    "one": "scalar",
    "maybe": "scalar",
    "listed": "list",
    "kept": "set",
    "held": "set",
    "fixed": "list",
    "by_name": "map",
}


@settings(max_examples=60, deadline=None)
@given(_VALUES)
def test_a_list_or_set_of_literal_values_is_a_list_or_set_of_json_atoms_kept_as_json_text_by_the_model_database(
    values: tuple[Any, ...],
) -> None:
    shape = shape_of(_model(values))
    assert {f.name: (f.kind, f.container) for f in shape.fields} == {
        name: ("json", container) for name, container in _SHAPES.items()
    }
    # nbdb's own OVSDB schema (the model database) holds each as JSON text in a string column, as before.
    assert {f.name: column_type(f) for f in shape.fields} == dict.fromkeys(_SHAPES, "string")


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[nbdb.Database]]:
    path: Path = tmp_path_factory.mktemp("literal") / "literal.db"
    opened = [nbdb.connect("memory://"), nbdb.connect(f"sqlite:///{path}")]
    yield opened
    for db in opened:
        db.close()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=_VALUES, data=st.data())
def test_literal_fields_read_back_as_written_on_memory_and_sqlite(
    stores: list[nbdb.Database], values: tuple[Any, ...], data: st.DataObject
) -> None:
    model = _model(values)
    some = st.lists(st.sampled_from(values), max_size=4)
    written = model(
        topic=uuid.uuid4().hex,  # each example's objects apart: the table's model changes between examples
        one=data.draw(st.sampled_from(values)),
        maybe=data.draw(st.none() | st.sampled_from(values)),
        listed=data.draw(some),
        kept=frozenset(data.draw(some)),
        held=data.draw(st.none() | some.map(set)),
        fixed=tuple(data.draw(some)),
        by_name=data.draw(st.dictionaries(st.text(max_size=3), st.sampled_from(values), max_size=3)),
    )
    for db in stores:
        with db.watch(model, topics=[written.topic]) as watch:
            created = db.create(written)
            assert created == written.model_copy(update={"version": 1})
            assert db.get(model, written.id) == created and db.list(model, written.topic) == [created]
            assert [e.new for e in watch.poll(5)] == [created]
        updated = db.update(created.replace(listed=list(reversed(created.listed)), kept=frozenset()))
        assert db.get(model, written.id) == updated and updated.kept == frozenset()


class Tagged(Model):
    nbdb_table = "literal_tagged"
    nbdb_indexes = ("one",)
    one: Literal["p", "q"] = "p"
    tags: list[Literal["a", "b"]] = []
    kinds: frozenset[Literal[1, 2, "x"]] = frozenset()


def test_a_cache_holds_and_finds_objects_of_literal_fields_on_memory_and_sqlite(stores: list[nbdb.Database]) -> None:
    for db in stores:
        cache = db.cache(Tagged)
        try:
            assert cache.wait_synced(10)
            first = db.create(Tagged(one="q", tags=["b", "a", "b"], kinds={1, "x"}))
            second = db.create(Tagged(tags=["a"]))
            assert cache.wait_for(db.list(Tagged).revision, 10) and not cache.corrupt
            assert cache.get(Tagged, first.id) == first and cache.find(Tagged, one="q") == [first]
            assert cache.find(Tagged, one="p") == [second] and cache.find(Tagged, tags=["a"]) == [second]
        finally:
            cache.close()
