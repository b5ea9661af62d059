"""What a controller author meets in the runtime and the data API, on every kind of store: typed errors, no silent loss.

A cache or watch of no topic (an agent that serves no tenant yet), a cache dropped without
closing it, a continue token of another listing, a rate limiter whose delays are no numbers, a
reconcile that returns True or asks to be re-checked, and the command line's output paths.
"""

from __future__ import annotations

import gc
import math
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.models import Chassis, LogicalSwitch

pytestmark = pytest.mark.timeout(180)

STORES = ["memory", "sqlite", "redis", "etcd"]  # as tests/conftest.py's store_db


@pytest.fixture
def db(store_db: nbdb.Database) -> nbdb.Database:
    """A Database on each of the stores (tests/conftest.py)."""
    return store_db


# ---------------------------------------------------------------- watches and caches of no topic


@pytest.mark.parametrize("shared", [True, False])
def test_a_watch_and_a_cache_of_no_topic_follow_nothing_on_every_store(db: nbdb.Database, shared: bool) -> None:
    # topics=[] (a chassis agent that serves no tenant yet): SQLite ran "... AND ()" and Redis a script with
    # no prefix, both failing as BackendUnavailableError; a cache of it retried for ever and never moved on.
    db.create(LogicalSwitch(name="before", topic="tenant-a"))
    with db.watch(LogicalSwitch, topics=[], since=0) as watch:
        assert watch.poll(0.2) == []
    with db.cache(LogicalSwitch, topics=set(), shared=shared) as cache, db.watch(LogicalSwitch, topics=()) as now:
        assert cache.wait_synced(30)
        made = db.create(LogicalSwitch(name="after", topic="tenant-a"))
        assert now.poll(0.2) == []
        assert cache.wait_for(made.nbdb_revision or db.list(LogicalSwitch).revision, 30)  # its revision moves
        assert cache.list(LogicalSwitch) == []
        with pytest.raises(nbdb.ValidationError):
            cache.wait_for(made, 1)  # a topic it does not follow: it would never arrive


# ---------------------------------------------------------------- a cache dropped without close()


def _cache_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "nbdb-cache" and t.is_alive()}


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize("options", [{"shared": False}, {"fields": ["name"]}])
def test_closing_a_database_stops_the_caches_dropped_without_close(kind: str, options: dict[str, Any]) -> None:
    # A cache of its own (shared=False, or fields=) that the caller dropped was forgotten by the Database,
    # but not stopped: after close() its thread retried against the closed backend for ever, logging.
    before = _cache_threads()
    db = nbdb.connect(f"{kind}://")
    cache = db.cache(LogicalSwitch, **options)
    assert cache.wait_synced(30)
    del cache
    gc.collect()
    db.close()
    deadline = time.monotonic() + 10
    while _cache_threads() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _cache_threads() - before


# ---------------------------------------------------------------- continue tokens


@pytest.mark.parametrize("kind", ["memory", "sqlite", "etcd"])
def test_a_continue_token_is_good_only_for_its_own_listing(kind: str, url_of: Callable[[str], str]) -> None:
    # A token of the switches' listing, passed to the chassis' (or of one topic's to every topic's), was taken
    # as a position there: the pages silently left objects out (the three chassis, or two of five switches).
    with nbdb.connect(url_of(kind)) as db:
        for i in range(5):
            db.create(LogicalSwitch(name=f"s{i}", topic=["a", "b", None][i % 3]))
        for i in range(3):
            db.create(Chassis(name=f"c{i}"))
        switches = db.list(LogicalSwitch, limit=2)
        in_a = db.list(LogicalSwitch, "a", limit=1)
        assert switches.continue_token is not None and in_a.continue_token is not None
        for model, topic, token in [
            (Chassis, None, switches.continue_token),
            (LogicalSwitch, None, in_a.continue_token),
            (LogicalSwitch, "b", in_a.continue_token),
            (LogicalSwitch, "a", switches.continue_token),
        ]:
            with pytest.raises(nbdb.ValidationError, match="listing"):
                db.list(model, topic, limit=2, after=token)
        names = [s.name for s in switches]
        token: str | None = switches.continue_token
        while token is not None:
            page = db.list(LogicalSwitch, limit=2, after=token)
            names += [s.name for s in page]
            token = page.continue_token
        assert sorted(names) == [f"s{i}" for i in range(5)]
        rest = db.list(LogicalSwitch, "a", limit=1, after=in_a.continue_token)
        assert sorted(s.name for s in [*in_a, *rest]) == ["s0", "s3"]


# ---------------------------------------------------------------- rate limiters


NOT_DELAYS = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 1e300, True, "1", None, [1]]),
    st.floats(max_value=0),
)


@settings(max_examples=30)
@given(field=st.sampled_from(["base", "max_delay", "rate", "burst"]), value=NOT_DELAYS)
def test_a_rate_limiter_of_delays_no_worker_can_wait_is_refused(field: str, value: Any) -> None:
    # max_delay=nan, or base=inf, made the delay of a failed key NaN or infinite: retry() dropped the key
    # without a word (never tried again, the queue idle); base="1" was a TypeError.
    if field == "rate" and value in (math.inf, 1e300):
        return  # no overall limit, or a very high one: fine
    if field == "base" and value == 1e300:
        return  # valid alone only with max_delay >= base, which is refused past TIMEOUT_MAX (checked below)
    with pytest.raises(nbdb.ValidationError):
        nbdb.RateLimiter(**{field: value})


def test_a_failed_key_is_never_dropped_however_long_it_must_wait() -> None:
    with pytest.raises(nbdb.ValidationError):
        nbdb.RateLimiter(base=1e299, max_delay=1e300)  # its key was due at a time + 1 == itself: dropped
    queue: nbdb.WorkQueue[str] = nbdb.WorkQueue(rate_limiter=nbdb.RateLimiter(rate=1e-300, burst=1))
    for key in ("a", "b"):
        queue.add(key)
        assert queue.get(0) == key
        assert queue.retry(key) <= threading.TIMEOUT_MAX
    assert queue.get(5) == "a"  # the burst's token: due after its backoff
    assert queue.is_pending("b") and queue.waiting == 1  # owes a token for a very long time, not dropped
    with pytest.raises(nbdb.ValidationError):
        nbdb.WorkQueue(rate_limiter=5)  # type: ignore[arg-type]  # an AttributeError in the failed worker


# ---------------------------------------------------------------- what a reconcile returns


@pytest.mark.parametrize("returned", [True, math.nan, 10**400, -1, math.inf], ids=["true", "nan", "huge", "-1", "inf"])
def test_a_reconcile_returning_no_delay_is_reconciled_once_and_its_worker_lives(returned: Any) -> None:
    # True (a status) re-checked the key every second for ever and wait_idle() never returned True; 10**400
    # raised OverflowError in float() and ended the worker thread; NaN was ignored without a word.
    calls: list[str] = []

    def reconcile(key: Any, obj: Any) -> Any:
        calls.append(obj.name)
        return returned if obj.name == "first" else None

    with nbdb.connect("memory://") as db, db.cache(LogicalSwitch) as cache:
        db.create(LogicalSwitch(name="first"))
        with nbdb.run_controller(cache, reconcile, LogicalSwitch) as controller:
            assert controller.wait_idle(30)
            time.sleep(1.3)
            later = db.create(LogicalSwitch(name="later"))
            assert cache.wait_for(later, 30) and controller.wait_idle(30)
    assert calls == ["first", "later"]


def test_a_controller_whose_reconciles_ask_for_a_recheck_becomes_idle_and_rechecks() -> None:
    # controller.wait_idle() waited for the re-checks its reconciles asked for: a controller that re-checks
    # every key periodically was never idle, though every change was reconciled.
    calls: list[tuple[str, float]] = []
    with nbdb.connect("memory://") as db, db.cache(LogicalSwitch) as cache:
        db.create(LogicalSwitch(name="slow"))
        db.create(LogicalSwitch(name="soon"))

        def reconcile(key: Any, obj: Any) -> float:
            calls.append((obj.name, time.monotonic()))
            return 3600.0 if obj.name == "slow" else 0.3

        with nbdb.run_controller(cache, reconcile, LogicalSwitch) as controller:
            started = time.monotonic()
            assert controller.wait_idle(10)
            assert time.monotonic() - started < 5
            deadline = time.monotonic() + 30
            while sum(name == "soon" for name, _ in calls) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sum(name == "soon" for name, _ in calls) >= 3  # the re-checks still happen
            assert [name for name, _ in calls].count("slow") == 1
            slow = next(s.id for s in db.list(LogicalSwitch) if s.name == "slow")
            assert controller.queue.is_pending((LogicalSwitch, slow))  # its re-check is still due
            fail = {"yes": True}

            def failing(key: Any, obj: Any) -> None:
                if fail["yes"]:
                    raise RuntimeError("not yet")

            with nbdb.run_controller(cache, failing, LogicalSwitch, name="failing") as retrying:
                assert not retrying.wait_idle(1)  # a key waiting for a retry is not reconciled: not idle
                fail["yes"] = False
                assert retrying.wait_idle(60)


# ---------------------------------------------------------------- the command line


def test_the_command_line_says_what_is_wrong_with_its_paths_and_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import nbdb.bench.runner
    from nbdb.cli import main

    def must_not_run(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the bench ran before its output paths were checked")

    monkeypatch.setattr(nbdb.bench.runner, "run_bench", must_not_run)
    monkeypatch.setenv("NBDB_SERVERS_DIR", str(tmp_path / "servers"))  # a server started by mistake is ours
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    schema = tmp_path / "tiny.ovsschema"
    schema.write_text('{"name": "Tiny", "version": "1.0.0", "tables": {"T": {"columns": {"a": {"type": "string"}}}}}')
    for argv in [
        # A traceback after the whole run (an hour for a full one), its figures lost.
        ["bench", "--backends", "memory", "--sizes", "tiny", "--no-plots", "--out", str(blocker / "out")],
        ["bench", "--backends", "memory", "--sizes", "tiny", "--no-plots", "--out", str(tmp_path / "out"),
         "--doc", str(tmp_path / "missing" / "bench.md")],
        # Tracebacks: FileNotFoundError, ModuleNotFoundError, StopIteration (0 ports), an invalid address (300).
        ["models", "generate", str(schema), "-o", str(blocker / "models.py")],
        ["schema", "ovsdb", "--models", "no_such_module_of_nbdb"],
        ["demo", "--ports", "0"],
        ["demo", "--ports", "300"],
        # Started servers without a word: one member for 0, no readiness bound for -5.
        ["servers", "up", "redis", "--cluster", "0"],
        ["servers", "up", "redis", "--timeout", "-5"],
        ["servers", "up", "redis", "--timeout", "nan"],
        # NaN passed every "<= 0" test: a soak bounded by nothing (and so did inf).
        ["soak", "redis", "--seconds", "nan"],
        ["soak", "redis", "--minutes", "inf"],
        ["soak", "etcd", "--kill-every", "nan", "--seconds", "1"],
        ["soak", "etcd", "--down", "-1", "--seconds", "1"],
        ["soak", "etcd", "--max-stall", "nan", "--seconds", "1"],
    ]:  # fmt: skip
        assert main(argv) == 2, argv
        assert "Traceback" not in capsys.readouterr().err


# ---------------------------------------------------------------- connect(require=...)


@pytest.mark.parametrize("require", ["transactions", b"unique", 5, [["transactions"]], {5: True}, 1.5])
def test_a_requirement_that_is_no_collection_of_names_is_refused(require: Any) -> None:
    # "transactions" (a string) was read as its letters ("unknown capability 't'"); 5 and [[...]] were TypeErrors.
    with pytest.raises(nbdb.ValidationError, match="require=") as raised:
        nbdb.connect("memory://", require=require)
    assert not re.search(r"capability b?'.'", str(raised.value))  # not one letter taken as a name
    nbdb.connect("memory://", require=["transactions"]).close()


@pytest.mark.parametrize("fields", [5, b"name", {LogicalSwitch: 5}, {LogicalSwitch: b"name"}])
def test_fields_that_are_no_list_of_names_are_refused(fields: Any) -> None:
    # fields=5 was a TypeError out of the projection; b"name" was read as the field names 110, 97, ...
    with nbdb.connect("memory://") as db:
        with pytest.raises(nbdb.ValidationError, match="list of field names"):
            db.cache(LogicalSwitch, fields=fields)


# ---------------------------------------------------------------- a watch's on_error


def test_a_failing_on_error_loses_no_other_change_of_the_watch(db: nbdb.Database) -> None:
    # on_error raising (a bug of the caller's) came out of poll() and every other change of that batch was
    # lost: the stream was past them (memory, SQLite, Redis lost all four; etcd, in smaller batches, none).
    good = db.create(LogicalSwitch(name="good"))
    since = db.list(LogicalSwitch).revision
    reported: list[nbdb.CorruptRecordError] = []

    def buggy(exc: nbdb.CorruptRecordError) -> None:
        reported.append(exc)
        raise RuntimeError("a bug in on_error")

    with db.watch(LogicalSwitch, since=since, on_error=buggy) as watch:
        bad = db.create(LogicalSwitch(name="bad"))
        with db.transaction() as txn:
            txn.update(good.replace(name="good2"))
            txn.create(LogicalSwitch(name="third"))
        db.backend.write_raw(bad.nbdb_table, bad.id, bad.topic, b"not a record")  # type: ignore[attr-defined]
        db.create(LogicalSwitch(name="fourth"))
        seen: list[str] = []
        deadline = time.monotonic() + 30
        while len(seen) < 4 and time.monotonic() < deadline:
            seen += [(event.new or event.old).name for event in watch.poll(0.5)]  # type: ignore[union-attr]
    assert sorted(seen) == ["bad", "fourth", "good2", "third"] and len(reported) == 1
    for call in (lambda: db.watch(LogicalSwitch, on_error=5), lambda: db.cache(LogicalSwitch, on_error="x")):
        with pytest.raises(nbdb.ValidationError, match="on_error"):
            call()


# ---------------------------------------------------------------- connect() keywords


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("namespace", [b"tenant", ["tenant"], object(), True, {"tenant": 1}])
def test_a_namespace_keyword_that_is_not_text_is_refused(kind: str, namespace: Any, servers: dict[str, str]) -> None:
    # namespace=b"tenant" was the namespace "b'tenant'" and namespace=object() one named by its repr, which
    # changes with every run: a controller restarted into an empty namespace, without a word.
    base = servers.get(kind, f"{kind}://")
    with pytest.raises(nbdb.ValidationError, match="namespace must be text"):
        nbdb.connect(base, namespace=namespace)
    nbdb.connect(base, namespace="tenant").close()


# ---------------------------------------------------------------- topics no object can have


@pytest.mark.parametrize("topic", ["~", "tenant a", "a/", "", "*", "x" * 129])
def test_a_topic_no_object_can_have_is_refused_by_lists_watches_and_caches(db: nbdb.Database, topic: str) -> None:
    # "~" is the key part of the objects without a topic on key-value stores: list(topic="~"), a watch and a
    # cache of it returned those objects on SQLite, Redis and etcd, and nothing on memory://. Any other such
    # topic (a typo) silently found nothing.
    db.create(LogicalSwitch(name="no topic"))
    db.create(LogicalSwitch(name="in a", topic="tenant-a"))
    for call in [
        lambda: db.list(LogicalSwitch, topic),
        lambda: db.watch(LogicalSwitch, topics=[topic], since=0),
        lambda: db.cache(LogicalSwitch, topics=["tenant-a", topic]),
    ]:
        with pytest.raises(nbdb.ValidationError, match="topic"):
            call()
    assert [s.name for s in db.list(LogicalSwitch, "tenant-a")] == ["in a"]


# ---------------------------------------------------------------- table names


@pytest.mark.parametrize("table", ["tenants/v2", "a/b/c", "line\nbreak", "nul\x00"])
def test_a_table_name_no_store_can_key_is_refused_when_the_model_is_defined(table: str) -> None:
    # nbdb_table = "tenants/v2": SQLite, Redis and etcd stored each object under a key of one part more than
    # an object's key has, which no list, watch or cache read back; memory:// listed it. Silently lost.
    with pytest.raises(TypeError, match="nbdb_table"):
        type("SlashTable", (nbdb.Model,), {"__annotations__": {"name": str}, "nbdb_table": table})


def test_an_object_and_an_id_given_to_delete_are_refused(db: nbdb.Database) -> None:
    # delete(port, switch.id) deleted the port and ignored the id.
    switch = db.create(LogicalSwitch(name="s"))
    other = db.create(LogicalSwitch(name="other"))
    with pytest.raises(nbdb.ValidationError, match="delete"):
        db.delete(switch, other.id)  # type: ignore[call-overload]
    txn = db.transaction()
    with pytest.raises(nbdb.ValidationError, match="delete"):
        txn.delete(switch, other.id)
    assert sorted(s.name for s in db.list(LogicalSwitch)) == ["other", "s"]


@pytest.mark.parametrize("wrap", [lambda i: [i], lambda i: {i}, lambda i: {"id": i}], ids=["list", "set", "dict"])
def test_a_collection_given_for_a_reference_to_one_object_is_refused_by_find(wrap: Any) -> None:
    # cache.find(LogicalSwitchPort, switch=[id]) silently found nothing: a reference holds one id.
    from nbdb.models import LogicalSwitchPort

    with nbdb.connect("memory://") as db:
        switch = db.create(LogicalSwitch(name="s"))
        port = db.create(LogicalSwitchPort(switch=switch, name="p"))
        with db.cache([LogicalSwitch, LogicalSwitchPort]) as cache:
            assert cache.wait_synced(10)
            with pytest.raises(nbdb.ValidationError, match="references one object"):
                cache.find(LogicalSwitchPort, switch=wrap(switch.id))
            with pytest.raises(nbdb.ValidationError, match="references one object"):
                cache.find(LogicalSwitchPort, switch=wrap(switch.id), name="p")
            assert cache.find(LogicalSwitchPort, switch=switch.id) == [port]
            assert cache.find(LogicalSwitch, external_ids={}) == [switch]  # a map field: compared whole


@pytest.mark.parametrize("url", ["memory://", "sqlite://"])
def test_a_plain_delete_refused_for_a_corrupt_referrer_is_the_reference_error(url: str) -> None:
    """A switch (an owner: its forwarding groups go with it) whose port another writer corrupted: the
    store refuses its plain delete for that port, which no plan can drop or take along, so the delete
    raises the store's ReferenceError naming it, and nothing is deleted (it raised the port's
    CorruptRecordError, from reading it to plan the delete again)."""
    from nbdb.models import LogicalSwitchPort

    with nbdb.connect(url) as db:
        switch = db.create(LogicalSwitch(name="sw"))
        port = db.create(LogicalSwitchPort(switch=switch, name="p"))
        db.backend.write_raw(port.nbdb_table, port.id, port.topic, b"not a record")  # type: ignore[attr-defined]
        with pytest.raises(nbdb.ReferenceError, match=str(port.id)):
            db.delete(switch)
        assert db.get(LogicalSwitch, switch.id).name == "sw"
        with pytest.raises(nbdb.CorruptRecordError, match=str(port.id)):
            db.delete(switch, cascade=True)
