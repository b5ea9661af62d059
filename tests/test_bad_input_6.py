"""A new user's first afternoon, on the embedded backends: each mistake is a typed error, never a crash.

A transaction's mutation given a string, a number or a list of pairs where it takes a mapping (as
``Database.mutate`` refuses them); a key of a controller's queue that is no ``(Model, id)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import nbdb
from nbdb.models import LogicalSwitch

pytestmark = pytest.mark.timeout(120)

EMBEDDED = ["memory://", "sqlite://"]


@pytest.fixture(params=EMBEDDED)
def db(request: pytest.FixtureRequest) -> Iterator[nbdb.Database]:
    with nbdb.connect(request.param) as database:
        yield database


@pytest.mark.parametrize("given", ["ab", 5, [("external_ids", {"k": "v"})]], ids=["text", "number", "pairs"])
@pytest.mark.parametrize("side", ["add", "remove"])
def test_a_transactions_mutation_takes_a_mapping_as_the_databases_does(
    db: nbdb.Database, side: str, given: Any
) -> None:
    # txn.mutate ran dict(add): ValueError for text, TypeError for a number, and a list of pairs went
    # through where db.mutate refused it.
    switch = db.create(LogicalSwitch(name="s", external_ids={"k": "v"}))
    with pytest.raises(nbdb.ValidationError, match="takes a mapping"):
        db.mutate(switch, **{side: given})
    with db.transaction() as txn:
        with pytest.raises(nbdb.ValidationError, match="takes a mapping"):
            txn.mutate(switch, **{side: given})
        txn.mutate(switch, **{side: {"external_ids": {"k2": "v"} if side == "add" else ["k"]}})
    assert db.get(LogicalSwitch, switch.id).external_ids == ({"k": "v", "k2": "v"} if side == "add" else {})


@pytest.mark.parametrize("key", ["resync", ("LogicalSwitch", "x"), (LogicalSwitch,), (LogicalSwitch, "not-an-id")])
def test_a_controllers_queue_refuses_a_key_its_workers_could_not_read(db: nbdb.Database, key: Any) -> None:
    # queue.add("resync") was taken; the worker's queue.object(key) then raised TypeError outside the
    # reconcile's try: the worker thread ended, nothing was reconciled again, wait_idle() never True.
    seen: list[str] = []
    with db.cache(LogicalSwitch) as cache:
        assert cache.wait_synced(10)
        with nbdb.run_controller(cache, lambda k, obj: seen.append(obj.name), LogicalSwitch) as controller:
            for add in (controller.queue.add, lambda k: controller.queue.add_after(k, 0.0)):
                with pytest.raises(nbdb.ValidationError):
                    add(key)
            switch = db.create(LogicalSwitch(name="after"))
            assert cache.wait_for(switch, timeout=10)
            assert controller.wait_idle(timeout=10)
    assert seen == ["after"]
