"""A fourth round of what a controller author gets wrong, on every kind of store: typed errors, truthful state.

A reference to a table no model has, a lock handle kept after its block, a cache asked to wait for
an object another store wrote, ...
"""

from __future__ import annotations

import math
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import pytest

import nbdb
from nbdb.models import LogicalRouter, LogicalRouterPort, LogicalSwitch, LogicalSwitchPort
from nbdb.models.base import Reference
from nbdb.testing.servers import start_server
from nbdb.tools.copy import CopyOptions
from nbdb.tools.snapshot import take_snapshot

pytestmark = pytest.mark.timeout(180)

STORES = ["memory", "sqlite", "redis", "etcd"]  # as tests/conftest.py's store_db


@pytest.fixture
def db(store_db: nbdb.Database) -> nbdb.Database:
    """A Database on each of the stores (tests/conftest.py)."""
    return store_db


# ---------------------------------------------------------------- references to no model


class DanglingRef(nbdb.Model):
    name: str
    peer: Annotated[uuid.UUID | None, Reference("NoSuchModelB4")] = None


class ForwardRef(nbdb.Model):
    name: str
    later: Annotated[uuid.UUID | None, Reference("DefinedLaterB4")] = None


class ByClassName(nbdb.Model):
    nbdb_table = "by_class_name_targets_b4"
    name: str


class NamesTheClass(nbdb.Model):
    name: str
    target: Annotated[uuid.UUID | None, Reference("ByClassName")] = None


def test_a_reference_to_a_table_no_model_has_is_refused_at_the_first_write(db: nbdb.Database) -> None:
    # Reference("NoSuchModel") (a typo, or the class name of a model whose table is named otherwise) was
    # taken: a write setting it failed with "... references NoSuchModel <id>, which does not exist", and one
    # leaving it None was stored pointing at no table.
    with pytest.raises(nbdb.ValidationError, match="NoSuchModelB4"):
        db.create(DanglingRef(name="unset"))
    with pytest.raises(nbdb.ValidationError, match="NoSuchModelB4"):
        db.create(DanglingRef(name="set", peer=uuid.uuid4()))
    with pytest.raises(nbdb.ValidationError, match="by_class_name_targets_b4"):  # says which table to name
        db.create(NamesTheClass(name="n"))
    with pytest.raises(nbdb.ValidationError, match="NoSuchModelB4"), db.transaction() as txn:
        txn.create(DanglingRef(name="in a transaction"))
    assert db.list(DanglingRef) == [] and db.list(NamesTheClass) == []


def test_a_forward_reference_resolves_once_its_model_is_defined() -> None:
    with nbdb.connect("memory://") as db:
        with pytest.raises(nbdb.ValidationError, match="DefinedLaterB4"):
            db.create(ForwardRef(name="too early"))

        class DefinedLaterB4(nbdb.Model):
            name: str

        target = db.create(DefinedLaterB4(name="t"))
        made = db.create(ForwardRef(name="now", later=target.id))
        assert db.get(ForwardRef, made.id).later == target.id
        with pytest.raises(nbdb.ReferenceError):
            db.create(ForwardRef(name="dangling", later=uuid.uuid4()))


# ---------------------------------------------------------------- a lock handle after its block


def test_a_lock_handle_says_it_is_no_longer_held_once_its_block_ends(db: nbdb.Database) -> None:
    # handle.lost stayed False after the block: a worker that kept the handle believed it still held the lock
    # (a fenced write on it did raise LockLostError, saying it "was lost").
    lock = db.lock("leader", ttl=5, timeout=10)
    with lock as handle:
        assert not handle.lost and not handle.released
    assert handle.lost and handle.released
    assert "released" in repr(handle)
    if db.capabilities.fencing:
        with pytest.raises(nbdb.LockLostError, match="released"):
            db.create(LogicalSwitch(name="fenced"), fence=handle)
    with pytest.raises(RuntimeError), lock as failed:
        raise RuntimeError("the block failed")
    assert failed.lost and failed.released
    with db.lock("leader", ttl=5, timeout=10) as again:  # released indeed: anyone may take it
        assert not again.lost
    assert db.list(LogicalSwitch) == []


# ---------------------------------------------------------------- wait_for an object of another store


def test_a_cache_refuses_to_wait_for_an_object_another_store_wrote() -> None:
    # A cache of one memory:// store took a write result of another as reflected at once: the other store's
    # revision (1) was one this cache had reached, though the object would never arrive.
    with nbdb.connect("memory://") as mine, nbdb.connect("memory://") as theirs:
        with mine.cache(LogicalSwitch) as cache:
            assert cache.wait_synced(10)
            for i in range(3):
                mine.create(LogicalSwitch(name=f"mine{i}"))
            foreign = theirs.create(LogicalSwitch(name="theirs"))
            with theirs.transaction() as txn:
                txn.create(LogicalSwitch(name="theirs too"))
            started = time.monotonic()
            for obj in (foreign, txn.results[0], theirs.update(foreign.replace(name="renamed"))):
                with pytest.raises(nbdb.ValidationError, match="another store"):
                    cache.wait_for(obj, 5)
            assert time.monotonic() - started < 5
            own = mine.create(LogicalSwitch(name="own"))
            assert cache.wait_for(own, 10) and cache.get(LogicalSwitch, own.id) == own
            with nbdb.connect("sqlite://") as other_kind:
                with pytest.raises(nbdb.ValidationError, match="another store"):
                    cache.wait_for(other_kind.create(LogicalSwitch(name="sqlite")), 5)
    # Two connections to one named store share it: a write of either is waited for.
    name = f"memory://shared-{uuid.uuid4().hex[:8]}"
    with nbdb.connect(name) as writer, nbdb.connect(name) as reader, reader.cache(LogicalSwitch) as cache:
        assert cache.wait_for(writer.create(LogicalSwitch(name="shared")), 10)


# ---------------------------------------------------------------- the copy, dump and verify tools


@pytest.mark.parametrize(
    "options",
    [
        {"follow": True, "duration": math.nan},  # followed for ever: NaN is no deadline
        {"follow": True, "duration": -1},
        {"follow": True, "duration": math.inf},
        {"follow": True, "until_revision": -5},
        {"follow": True, "until_revision": 1.5},
        {"duration": 5},  # ignored without follow
        {"until_revision": 5},
        {"follow": "yes"},
        {"limit": -1},  # stopped at once, "incomplete", exit 3
        {"limit": 2.5},
        {"batch": 0},
        {"read_timeout": -1},
        {"read_timeout": math.nan},
        {"poll_interval": 0},
        {"verify_rounds": 0},
    ],
    ids=repr,
)
def test_copy_options_no_copy_can_follow_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(nbdb.ValidationError):
        CopyOptions(**options)


def test_the_tools_refuse_a_read_timeout_and_an_empty_topic_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nbdb.cli import main

    url = f"sqlite:///{tmp_path / 'src.sqlite'}"
    with nbdb.connect(url) as db:
        db.create(LogicalSwitch(name="s", topic="a"))
    for argv in [
        # "could not read the database within -1s": a BackendUnavailableError blaming the store.
        ["dump", url, "-o", str(tmp_path / "d.json"), "--timeout", "-1"],
        ["verify", url, url, "--timeout", "0"],
        # --topics "" (an unset variable): dumped, copied and verified nothing, with exit 0.
        ["dump", url, "-o", str(tmp_path / "d.json"), "--topics", ""],
        ["verify", url, "memory://", "--topics", ","],
        ["copy", url, "memory://", "--topics", "", "--state", str(tmp_path / "state.json")],
        # Followed for ever; or ignored without --follow.
        ["copy", url, "memory://", "--follow", "--duration", "nan", "--state", str(tmp_path / "state.json")],
        ["copy", url, "memory://", "--until-revision", "5", "--state", str(tmp_path / "state.json")],
        ["copy", url, "memory://", "--limit", "-1", "--state", str(tmp_path / "state.json")],
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "ValidationError" in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "d.json").exists()
    with pytest.raises(nbdb.ValidationError), nbdb.connect(url) as db:
        take_snapshot(db, [LogicalSwitch], timeout=math.nan)


def test_a_negative_until_revision_is_refused_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was refused as "since= takes a revision", an option `nbdb copy` has not."""
    from nbdb.cli import main

    argv = ["copy", "memory://", "memory://x", "--follow", "--until-revision", "-1"]
    assert main([*argv, "--state", str(tmp_path / "state.json")]) == 2
    err = capsys.readouterr().err
    assert "ValidationError: until_revision (--until-revision) takes a revision" in err, err
    assert "since=" not in err


# ---------------------------------------------------------------- work queues and controllers


@pytest.mark.parametrize("interval", [math.nan, -1, math.inf, 0, "0.1", True])
def test_a_wait_idle_interval_no_sleep_can_take_is_refused(interval: Any) -> None:
    # NaN and -1 were a ValueError out of time.sleep() (after the first look), inf slept for ever.
    queue: nbdb.WorkQueue[str] = nbdb.WorkQueue()
    queue.add("busy")
    with pytest.raises(nbdb.ValidationError, match="interval"):
        queue.wait_idle(0.2, interval=interval)
    with nbdb.connect("memory://") as db, db.cache(LogicalSwitch) as cache:
        db.create(LogicalSwitch(name="s"))
        with nbdb.run_controller(cache, lambda key, obj: None) as controller:
            with pytest.raises(nbdb.ValidationError, match="interval"):
                controller.queue.wait_idle(0.2, interval=interval)
            assert controller.wait_idle(30)


def test_a_predicate_that_is_not_callable_is_named_as_the_predicate() -> None:
    # The error named the controller's own work-queue callback ("not <bound method CacheQueue._on_event>, 5").
    with nbdb.connect("memory://") as db, db.cache(LogicalSwitch) as cache:
        with pytest.raises(nbdb.ValidationError, match=r"^predicate= takes a callable"):
            nbdb.run_controller(cache, lambda key, obj: None, predicate=5)  # type: ignore[typeddict-item]
        with pytest.raises(nbdb.ValidationError, match=r"^predicate= takes a callable"):
            cache.subscribe(lambda event: None, predicate=5)  # type: ignore[arg-type]
        with pytest.raises(nbdb.ValidationError, match="subscriber is a callable"):
            cache.subscribe(5)  # type: ignore[arg-type]


# ---------------------------------------------------------------- a model's unique and indexed fields


@pytest.mark.parametrize(
    ("attr", "value"),
    [("nbdb_unique", "ab"), ("nbdb_indexes", "ab"), ("nbdb_unique", ((),)), ("nbdb_unique", (("a", "a"),))],
    ids=repr,
)
def test_unique_and_index_declarations_that_name_no_fields_are_refused(attr: str, value: object) -> None:
    # nbdb_unique = "ab" (one field meant) on a model of fields a and b made each of a and b unique on its
    # own; nbdb_unique = ((),) declared a group no object ever held a value of: nothing was unique.
    with pytest.raises(TypeError, match=attr):
        type("Declared" + uuid.uuid4().hex[:6], (nbdb.Model,), {"__annotations__": {"a": str, "b": str}, attr: value})


# ---------------------------------------------------------------- what mutate() returns


@pytest.mark.parametrize("kind", [*STORES, "ovsdb"])
def test_a_mutation_returns_a_copy_carrying_its_commits_revision_on_every_store(
    kind: str, url_of: Callable[[str], str]
) -> None:
    # On a store that applies mutations itself (OVSDB), mutate() and a transaction's mutate returned the
    # copy read back with nbdb_revision None, where create() and update() carry their commit's revision:
    # cache.wait_for(result.nbdb_revision) returned True at once, before the cache had the change.
    if kind == "ovsdb":
        with start_server("ovsdb") as server, nbdb.connect(server.url) as db:
            _check_mutation_revisions(db)
    else:
        with nbdb.connect(url_of(kind)) as db:
            _check_mutation_revisions(db)


def _check_mutation_revisions(db: nbdb.Database) -> None:
    made = db.update(db.create(LogicalSwitch(name="s")).replace(name="t"))
    assert made.nbdb_revision is not None
    mutated = db.mutate(made, add={"external_ids": {"k": "v"}})
    assert mutated.nbdb_revision is not None and mutated.nbdb_revision > made.nbdb_revision
    assert type(mutated.nbdb_revision) is type(made.nbdb_revision)
    with db.transaction() as txn:
        txn.mutate(mutated, add={"external_ids": {"k2": "v"}})
    (result,) = txn.results
    assert result is not None and result.nbdb_revision == txn.revision and result.version == mutated.version + 1
    with db.cache(LogicalSwitch) as cache:
        assert cache.wait_for(result.nbdb_revision, 30)
        assert cache.get(LogicalSwitch, made.id) == db.get(LogicalSwitch, made.id)


# ---------------------------------------------------------------- a container emptied in place


def test_a_list_emptied_in_place_below_its_least_length_is_refused_at_write(db: nbdb.Database) -> None:
    # lrp.networks.clear() (networks holds at least one) was stored: on a store of bytes every later
    # list() of the table failed on that record (CorruptRecordError), memory:// held an invalid object.
    router = db.create(LogicalRouter(name="r"))
    port = LogicalRouterPort(router=router, name="p", mac="0a:00:00:00:00:01", networks=["10.0.0.1/24"])
    port.networks.clear()
    with pytest.raises(nbdb.ValidationError, match="networks"):
        db.create(port)
    stored = db.create(port.replace(networks=["10.0.0.1/24"]))
    read = db.get(LogicalRouterPort, stored.id).replace()  # a copy of its own (memory:// shares what it reads)
    read.networks.clear()
    with pytest.raises(nbdb.ValidationError, match="networks"):
        db.update(read)
    assert [p.networks for p in db.list(LogicalRouterPort)] == [["10.0.0.1/24"]]


# ---------------------------------------------------------------- find() by values no field holds


def test_a_cache_find_by_a_value_its_field_cannot_hold_is_refused_and_by_an_id_as_text_finds_it() -> None:
    # find(name=5) and find(tag="x") silently found nothing; find(id=str(port.id)) found nothing either
    # (the id as text compared with the UUID), where a reference's id given as text is found.
    with nbdb.connect("memory://") as db:
        switch = db.create(LogicalSwitch(name="s"))
        port = db.create(LogicalSwitchPort(switch=switch, name="p", tag=5))
        with db.cache([LogicalSwitch, LogicalSwitchPort]) as cache:
            assert cache.wait_synced(10)
            assert cache.find(LogicalSwitchPort, id=str(port.id)) == [port]
            assert cache.find(LogicalSwitchPort, id=str(port.id), name="p") == [port]
            for equals in [{"name": 5}, {"tag": "x"}, {"name": 5, "tag": 5}, {"type": "no such type"}]:
                with pytest.raises(nbdb.ValidationError):
                    cache.find(LogicalSwitchPort, **equals)
            assert cache.find(LogicalSwitchPort, name="absent") == []
            assert cache.find(LogicalSwitchPort, tag=6) == [] and cache.find(LogicalSwitchPort, tag=5) == [port]
            assert cache.find(LogicalSwitch, name="s") == [switch]


@pytest.mark.parametrize(("resume", "batch"), [("no", 200), (1, 200), (False, 0), (False, "200"), (True, -1)], ids=repr)
def test_load_refuses_a_resume_flag_and_a_batch_that_are_not_one(resume: Any, batch: Any, tmp_path: Path) -> None:
    # resume="no" (from a configuration file) upserted into a database that already held the dump's objects;
    # batch=0 was taken when not resuming.
    from nbdb.tools.dump import dump, load

    with nbdb.connect("memory://") as source:
        source.create(LogicalSwitch(name="s"))
        with open(tmp_path / "d.jsonl", "wb") as out:
            dump(source, out, models=[LogicalSwitch])
    with nbdb.connect("memory://") as db:
        db.create(LogicalSwitch(name="other"))
        with open(tmp_path / "d.jsonl", "rb") as stream, pytest.raises(nbdb.ValidationError):
            load(db, stream, resume=resume, batch=batch)
        assert [s.name for s in db.list(LogicalSwitch)] == ["other"]


def test_a_lock_taken_again_inside_its_own_block_is_refused_not_waited_for(db: nbdb.Database) -> None:
    # A helper taking the lock its caller holds waited for itself: for ever without a timeout (the
    # renewal keeps the first hold alive), or a LockTimeoutError blaming "another owner".
    with db.lock("leader", ttl=5) as outer:
        with pytest.raises(nbdb.ValidationError, match="not reentrant"), db.lock("leader", ttl=5, timeout=2):
            pass
        with pytest.raises(nbdb.ValidationError, match="not reentrant"), db.lock("leader", ttl=5):  # no timeout
            pass
        assert not outer.lost
        with db.lock("another", ttl=5, timeout=5) as inner:  # another name is fine
            assert not inner.lost
    with db.lock("leader", ttl=5, timeout=5) as again:  # released: taken again
        assert not again.lost


def test_a_lock_lost_inside_its_block_may_be_taken_again_there() -> None:
    # The reentrancy refusal looked at the name only: a worker whose hold was lost (its lease lapsed,
    # taken by nobody) and that took the lock again to go on was refused with "would wait for
    # itself", though its lost hold waits for nothing and nobody else held the lock.
    with nbdb.connect("memory://relock_b4") as db, nbdb.connect("memory://relock_b4") as other:
        with db.lock("leader", ttl=0.6) as first:
            other.backend.release_lease("leader", first.token.encode())  # the lease lapses, as on a pause
            deadline = time.monotonic() + 10
            while not first.lost and time.monotonic() < deadline:
                time.sleep(0.05)
            assert first.lost and not first.released
            with db.lock("leader", ttl=5, timeout=5) as again:  # taken back: nobody holds it
                assert not again.lost
                with pytest.raises(nbdb.ValidationError, match="not reentrant"), db.lock("leader", timeout=2):
                    pass  # held again: refused again
            assert again.released
        with other.lock("leader", ttl=5, timeout=5) as theirs:  # both holds given up
            assert not theirs.lost


def test_a_subscriber_may_wait_for_the_copy_an_in_process_store_hands_it_while_it_is_stamped() -> None:
    # memory:// hands its cache the very copy a write returns; the write stamped it with its revision,
    # then with its store's token: a subscriber that called wait_for(event.new) in between was told the
    # object was written to another store. Bounded: 10,000 writes, switching threads as often as possible.
    bad: list[Exception] = []
    seen: list[int] = []
    interval = sys.getswitchinterval()
    with nbdb.connect("memory://stamped_b4") as db, db.cache([LogicalSwitch]) as cache:
        assert cache.wait_synced(10)

        def waits(event: nbdb.ChangeEvent) -> None:
            if event.new is not None:
                seen.append(1)
                try:
                    cache.wait_for(event.new, 0)
                except nbdb.ValidationError as exc:
                    bad.append(exc)

        cache.subscribe(waits)
        sys.setswitchinterval(1e-6)
        try:
            for i in range(5000):
                last = db.create(LogicalSwitch(name=f"s{i}"))
                with db.transaction() as txn:
                    txn.create(LogicalSwitch(name=f"t{i}"))
        finally:
            sys.setswitchinterval(interval)
        assert cache.wait_for(txn.results[0], 30) and cache.wait_for(last, 30)
        deadline = time.monotonic() + 30
        while len(seen) < 10000 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert len(seen) == 10000
    assert bad == []
