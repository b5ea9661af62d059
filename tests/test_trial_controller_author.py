"""What a controller author new to nbdb got wrong in a trial, and the answer nbdb gave.

An object passed where its class was meant (``db.cache(port)`` for ``db.cache(LogicalSwitchPort)``)
was iterated as pydantic iterates a model, field by field, and refused naming its first pair,
``got ('id', UUID(...))``, or "got a tuple object": nothing in it said what was wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import nbdb
from nbdb.models import LogicalSwitch


@pytest.fixture
def db() -> Iterator[nbdb.Database]:
    with nbdb.connect("memory://") as db:
        yield db


def _calls(db: nbdb.Database, obj: Any) -> list[Callable[[], object]]:
    cache = db.cache([LogicalSwitch])
    return [
        lambda: db.cache(obj),
        lambda: db.cache([obj]),
        lambda: db.watch(obj),
        lambda: db.list(obj),
        lambda: db.get(obj, obj.id),
        lambda: cache.subscribe(lambda event: None, models=obj),
        lambda: cache.queue(models=obj),
        lambda: nbdb.run_controller(cache, lambda key, current: None, obj),
    ]


def test_an_object_given_for_its_class_is_refused_naming_its_class(db: nbdb.Database) -> None:
    switch = db.create(LogicalSwitch(name="net1"))
    for call in _calls(db, switch):
        with pytest.raises(nbdb.ValidationError) as caught:
            call()
        assert "LogicalSwitch object" in str(caught.value), str(caught.value)
        assert "('id'" not in str(caught.value) and "tuple" not in str(caught.value)
