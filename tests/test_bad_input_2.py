"""More of what a controller author gets wrong, on the embedded backends: each is a typed error, never a silent loss.

A write queued on a transaction that was committed already, a watch resumed from a revision the
store never had, a lock kept and entered twice, a work-queue key that is a list, a model built
with ``model_construct`` that skips pydantic's checks, a transaction's mutation given no mapping,
a key of a controller's queue that is no ``(Model, id)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.models import LogicalSwitch, LogicalSwitchPort, PortGroup
from nbdb.testing.servers import start_server

pytestmark = pytest.mark.timeout(120)

EMBEDDED = ["memory://", "sqlite://"]
PER_EXAMPLE = settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(params=EMBEDDED)
def db(request: pytest.FixtureRequest) -> Iterator[nbdb.Database]:
    with nbdb.connect(request.param) as database:
        yield database


def _names(db: nbdb.Database) -> list[str]:
    return sorted(s.name for s in db.list(LogicalSwitch))


def _writes(db: nbdb.Database, txn: nbdb.Transaction) -> list[Callable[[], Any]]:
    stored = db.create(LogicalSwitch(name="stored"))
    group = db.create(PortGroup(name="group"))
    return [
        lambda: txn.create(LogicalSwitch(name="late")),
        lambda: txn.update(stored.replace(name="late")),
        lambda: txn.delete(stored),
        lambda: txn.delete(LogicalSwitch, stored.id),
        lambda: txn.mutate(group, add={"external_ids": {"late": "yes"}}),
        lambda: txn.commit(),
    ]


def test_a_committed_transaction_takes_no_more_writes(db: nbdb.Database) -> None:
    # A create queued after the with block returned its planned copy (version 1, as if stored) and was
    # never committed; a second commit() emptied results.
    with db.transaction() as txn:
        first = txn.create(LogicalSwitch(name="first"))
    for write in _writes(db, txn):
        with pytest.raises(nbdb.ValidationError, match="committed"):
            write()
    assert txn.results == [first]
    assert _names(db) == ["first", "stored"]
    assert db.get(PortGroup, db.list(PortGroup)[0].id).external_ids == {}


def test_an_explicit_commit_in_the_block_commits_once_and_keeps_its_results(db: nbdb.Database) -> None:
    with db.transaction() as txn:
        made = txn.create(LogicalSwitch(name="once"))
        txn.commit()
    assert txn.results == [made]  # the block's exit committed nothing more, and did not empty results
    assert _names(db) == ["once"]


def test_a_transaction_whose_block_raised_commits_nothing_later(db: nbdb.Database) -> None:
    txn = db.transaction()
    with pytest.raises(RuntimeError), txn:
        txn.create(LogicalSwitch(name="abandoned"))
        raise RuntimeError("the caller's own failure")
    for write in _writes(db, txn):
        with pytest.raises(nbdb.ValidationError, match="abandoned"):
            write()
    assert _names(db) == ["stored"]


def test_a_transaction_that_failed_to_commit_may_be_committed_again(db: nbdb.Database) -> None:
    taken = db.create(LogicalSwitch(name="taken"))
    port = db.create(LogicalSwitchPort(switch=taken, name="p"))
    txn = db.transaction()
    txn.delete(taken)
    with pytest.raises(nbdb.ReferenceError):
        txn.commit()
    db.delete(port)
    txn.commit()  # nothing was committed: the same writes may go once what blocked them is gone
    assert _names(db) == []


@PER_EXAMPLE
@given(ahead=st.integers(min_value=1, max_value=10**12))
def test_a_watch_from_a_revision_the_store_never_had_is_history_gone(db: nbdb.Database, ahead: int) -> None:
    # memory:// waited for its revision to reach ``since`` and skipped every change up to it.
    now = db.list(LogicalSwitch).revision
    watch = db.watch(LogicalSwitch, since=int(now) + ahead)
    db.create(LogicalSwitch(name=f"missed-{ahead}"))
    with pytest.raises(nbdb.HistoryGoneError):
        watch.poll(5)
    watch.close()


@pytest.mark.parametrize("kind", ["redis", "etcd"])
def test_a_watch_from_a_revision_no_server_had_is_history_gone(kind: str) -> None:
    # etcd waited for its revision to reach ``since`` and skipped every change up to it; Redis did for
    # the next revision (a ``since`` one ahead of the server's).
    with start_server(kind) as server, nbdb.connect(server.url) as db:
        now = int(db.list(LogicalSwitch).revision)
        for ahead in (1, 1000):
            watch = db.watch(LogicalSwitch, since=now + ahead)
            db.create(LogicalSwitch(name=f"missed-{ahead}"))
            with pytest.raises(nbdb.HistoryGoneError):
                watch.poll(5)
            watch.close()
            now = int(db.list(LogicalSwitch).revision)


def test_a_lock_kept_and_entered_again_takes_the_lock_again(db: nbdb.Database) -> None:
    # The second ``with`` on the object db.lock() returned raised AttributeError (a one-shot generator).
    lock = db.lock("reused", ttl=5, timeout=5)
    for _ in range(3):
        with lock as handle:
            assert not handle.lost
            # Held: taking it again in its own block is refused (it waited for itself until its timeout,
            # a LockTimeoutError, before locks were known not to be reentrant: see test_bad_input_4.py).
            with pytest.raises(nbdb.ValidationError, match="not reentrant"):
                with db.lock("reused", ttl=5, timeout=0.1):
                    pass
    with db.lock("reused", ttl=5, timeout=5) as handle:  # released by each block: free now
        assert not handle.lost


def test_a_lock_entered_after_its_database_closed_is_refused() -> None:
    db = nbdb.connect("memory://")
    lock = db.lock("late", ttl=5, timeout=1)
    db.close()
    with pytest.raises(nbdb.BackendUnavailableError):
        with lock:
            pass


UNHASHABLE = st.one_of(
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.sets(st.integers(), max_size=2),
    st.tuples(st.lists(st.integers(), max_size=1)),
)


@given(key=UNHASHABLE)
@settings(max_examples=25)
def test_a_work_queue_key_that_cannot_be_hashed_is_refused(key: Any) -> None:
    queue: nbdb.WorkQueue[Any] = nbdb.WorkQueue()
    with pytest.raises(nbdb.ValidationError):
        queue.add(key)
    with pytest.raises(nbdb.ValidationError):
        queue.add_after(key, 0)
    with pytest.raises(nbdb.ValidationError):
        queue.add_after(key, 1)
    queue.add("fine")
    assert queue.get(0) == "fine"


NOT_TEXT = st.one_of(
    st.integers(),
    st.lists(st.text(max_size=2), max_size=2),
    st.floats(),
    st.dictionaries(st.text(max_size=2), st.text(max_size=2), max_size=2),
)


@PER_EXAMPLE
@given(name=NOT_TEXT, topic=st.one_of(st.none(), st.integers(), st.just("bad topic")))
def test_a_model_built_without_validation_is_validated_before_it_is_stored(
    db: nbdb.Database, name: Any, topic: Any
) -> None:
    # model_construct(name=5) was stored: sqlite then failed every list() of the table on the record,
    # memory:// handed the int to every cache; an id given as text raised AttributeError.
    with pytest.raises(nbdb.ValidationError):
        db.create(LogicalSwitch.model_construct(name=name, topic=topic))
    with pytest.raises(nbdb.ValidationError):
        db.create(LogicalSwitch.model_construct(id="not an id", name="x"))
    with pytest.raises(nbdb.ValidationError):
        db.create(LogicalSwitchPort.model_construct(name="no switch"))
    stored = db.create(LogicalSwitch(name="valid"))
    with pytest.raises(nbdb.ValidationError):
        db.update(stored.model_copy(update={"name": name}))
    assert [s.name for s in db.list(LogicalSwitch)] == ["valid"]
    db.delete(stored)


def test_model_construct_of_valid_values_is_the_constructors_object() -> None:
    built = LogicalSwitch.model_construct(name="a", external_ids={"k": "v"})
    assert built == LogicalSwitch(id=built.id, name="a", external_ids={"k": "v"})


def test_one_object_given_where_mutate_takes_a_collection_is_named(db: nbdb.Database) -> None:
    # add={"ports": port} iterated the model as pydantic's (field, value) pairs and refused the first
    # pair as "not a valid member"; it names what was wrong now.
    switch = db.create(LogicalSwitch(name="s"))
    port = db.create(LogicalSwitchPort(switch=switch, name="p"))
    group = db.create(PortGroup(name="g"))
    for change in ({"add": {"ports": port}}, {"remove": {"ports": port}}):
        with pytest.raises(nbdb.ValidationError, match="put it in a list"):
            db.mutate(group, **change)  # type: ignore[arg-type]
    assert db.mutate(group, add={"ports": [port]}).ports == [port.id]


def test_a_reconcile_that_raises_a_base_exception_is_retried_and_the_worker_lives(db: nbdb.Database) -> None:
    # asyncio.CancelledError (a BaseException) from a reconcile ended the worker thread: its key stayed
    # processing, nothing was reconciled again and wait_idle() never returned True.
    import asyncio

    calls: list[str] = []

    def reconcile(key: Any, obj: Any) -> None:
        calls.append(obj.name)
        if len(calls) == 1:
            raise asyncio.CancelledError()

    db.create(LogicalSwitch(name="first"))
    with db.cache(LogicalSwitch) as cache:
        controller = nbdb.run_controller(cache, reconcile, LogicalSwitch)
        assert controller.wait_idle(30)
        later = db.create(LogicalSwitch(name="later"))
        assert cache.wait_for(later, 30) and controller.wait_idle(30)
        assert controller.close(30)
    assert calls.count("first") == 2 and calls.count("later") == 1


@PER_EXAMPLE
@given(copies=st.integers(min_value=2, max_value=4), plain=st.integers(min_value=0, max_value=1))
def test_one_unique_value_created_twice_in_one_transaction_is_a_unique_violation(
    db: nbdb.Database, copies: int, plain: int
) -> None:
    # With may_exist=True the second create "took" the first, which no store held: settled again and
    # again, the transaction ended in a ConflictError blaming concurrent writers that did not exist.
    switch = db.create(LogicalSwitch(name="s"))
    txn = db.transaction()
    for i in range(copies):
        txn.create(LogicalSwitchPort(switch=switch, name="twice"), may_exist=i >= plain)
    with pytest.raises(nbdb.UniqueViolationError) as raised:
        txn.commit()
    assert raised.value.field == "name" and raised.value.value == "twice"
    assert db.list(LogicalSwitchPort) == []
    db.delete(switch)


NOT_FLAGS = st.one_of(
    st.sampled_from(["false", "no", "0", "", "yes", None, 0, 1, [], [False]]), st.text(max_size=3), st.integers()
)


@PER_EXAMPLE
@given(flag=NOT_FLAGS)
def test_a_flag_that_is_not_true_or_false_is_refused_before_anything_is_written(db: nbdb.Database, flag: Any) -> None:
    # cascade="false" (a flag read from configuration as text) deleted the switch's ports with it.
    switch = db.create(LogicalSwitch(name="s"))
    port = db.create(LogicalSwitchPort(switch=switch, name="p"))
    for call in [
        lambda: db.delete(switch, cascade=flag),
        lambda: db.delete(LogicalSwitch, switch.id, if_exists=flag),
        lambda: db.create(LogicalSwitchPort(switch=switch, name="p"), may_exist=flag),
        lambda: db.list(LogicalSwitch, skip_corrupt=flag),
        lambda: db.cache(LogicalSwitch, shared=flag),
    ]:
        with pytest.raises(nbdb.ValidationError, match="True or False"):
            call()
    txn = db.transaction()
    with pytest.raises(nbdb.ValidationError, match="True or False"):
        txn.create(LogicalSwitch(name="t"), may_exist=flag)
    with pytest.raises(nbdb.ValidationError, match="True or False"):
        txn.delete(switch, if_exists=flag)
    with db.cache(LogicalSwitch) as cache, pytest.raises(nbdb.ValidationError, match="True or False"):
        cache.subscribe(lambda event: None, replay=flag)
    assert db.list(LogicalSwitchPort) == [port] and db.list(LogicalSwitch) == [switch]
    db.delete(switch, cascade=True)


@PER_EXAMPLE
@given(upper=st.booleans(), more=st.booleans())
def test_a_cache_finds_by_a_references_id_given_as_text(db: nbdb.Database, upper: bool, more: bool) -> None:
    # find(LogicalSwitchPort, switch=str(switch.id)) found nothing: the text never equals the UUID kept.
    switch = db.create(LogicalSwitch(name="s"))
    port = db.create(LogicalSwitchPort(switch=switch, name="p"))
    group = db.create(PortGroup(name="g", ports=[port]))
    text = str(switch.id).upper() if upper else str(switch.id)
    extra = {"name": "p"} if more else {}
    try:
        with db.cache([LogicalSwitch, LogicalSwitchPort, PortGroup]) as cache:
            assert cache.wait_synced(30)
            assert cache.find(LogicalSwitchPort, switch=text, **extra) == [port]
            assert cache.find(PortGroup, ports=str(port.id)) == [group]
            with pytest.raises(nbdb.ValidationError):
                cache.find(LogicalSwitchPort, switch="not an id", **extra)
            assert cache.find(LogicalSwitchPort, name="absent") == []
    finally:
        db.delete(group)
        db.delete(switch, cascade=True)


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


@pytest.mark.parametrize("kind", ["shared", "own", "projected"])
def test_a_cache_read_given_an_object_for_its_class_is_refused(db: nbdb.Database, kind: str) -> None:
    # cache.get(port, id) or cache.find(port, name=...) hashed the object: pydantic's hash of a frozen
    # copy raised TypeError "unhashable type: 'FrozenDict'" (a list: "unhashable type: 'list'").
    switch = db.create(LogicalSwitch(name="s"))
    port = db.create(LogicalSwitchPort(switch=switch, name="p"))
    options: dict[str, Any] = {"shared": False} if kind == "own" else {}
    if kind == "projected":
        options["fields"] = {LogicalSwitchPort: ["name"]}
    with db.cache([LogicalSwitch, LogicalSwitchPort], **options) as cache:
        assert cache.wait_synced(10)
        for wrong in (port, [LogicalSwitchPort]):
            reads: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = [
                (cache.get, (wrong, port.id), {}),
                (cache.get, (wrong, str(port.id)), {}),
                (cache.list, (wrong,), {}),
                (cache.find, (wrong,), {"name": "p"}),
                (cache.find, (wrong,), {"name": "p", "switch": switch.id}),
            ]
            for read, args, kwargs in reads:
                with pytest.raises(nbdb.ValidationError, match="expected a Model class"):
                    read(*args, **kwargs)
        assert [p.name for p in cache.find(LogicalSwitchPort, name="p")] == ["p"]
