"""Issue 13 on Redis: a one-table scan (``o/*/<table>/``) past ``batch`` keys reads that table's keys only.

Up to ``batch`` keys the range script reads the table under each topic; past it the values are
read in batches after the script. On the code before this change that path read ``o/`` whole, every
object of every table, and dropped the other tables on the client. Now it reads the table under
the topics the script found, checks those directories and, when something changed, replays the
change log over the batches, matching the wildcard: a topic another writer creates during the
read is in the result (or after the result's revision), never lost.

The keys read are counted where the batches are read (``_get_batched``), below the filter that
dropped the other tables, so the counts tell the two paths apart.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.backends.redis import RedisBackend
from nbdb.families.kv import KeyValue
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.models.ovn import LogicalRouter
from nbdb.testing.fixtures import redis_server  # noqa: F401 - pytest fixture

ROUTER_TOPICS = [None, "t-a", "t-b", "t-a", None, "t-c"]


def _ns() -> str:
    return f"big-{uuid.uuid4().hex[:10]}"


def _backend(db: nbdb.Database) -> RedisBackend:
    backend = db.backend
    assert isinstance(backend, RedisBackend)
    return backend


def _fill(db: nbdb.Database, routers: Sequence[str | None], ports: int) -> None:
    with db.transaction() as txn:
        for i, topic in enumerate(routers):
            txn.create(LogicalRouter(name=f"lr-{i}", topic=topic))
    switch = db.create(LogicalSwitch(name="ls", topic="t-p"))
    with db.transaction() as txn:
        for i in range(ports):
            txn.create(LogicalSwitchPort(name=f"p-{i}", switch=switch.id, topic="t-p"))


class Batches:
    """The object keys a backend reads in batches, by table, and whether it paged the names (SSCAN)."""

    def __init__(self, backend: RedisBackend, before: Callable[[], None] | None = None) -> None:
        self.tables: dict[str, int] = {}
        self.paged = 0
        self._before = before
        real_get, real_paged = backend._get_batched, backend._names_paged
        objects = backend.layout.objects

        def get_batched(keys: Sequence[str]) -> list[KeyValue | None]:
            if self._before is not None:
                hook, self._before = self._before, None
                hook()
            for key in keys:
                table = key[len(objects) :].split("/")[1]
                self.tables[table] = self.tables.get(table, 0) + 1
            return real_get(keys)

        def names_paged(prefixes: Sequence[str]) -> list[str]:
            self.paged += 1
            return real_paged(prefixes)

        backend._get_batched = get_batched  # type: ignore[method-assign]
        backend._names_paged = names_paged  # type: ignore[method-assign]

    @property
    def others(self) -> int:
        return sum(n for table, n in self.tables.items() if table != "LogicalRouter")


@pytest.mark.parametrize(("batch", "copies", "paged"), [(2, 1, False), (1, 20, True)])
def test_a_table_past_batch_reads_only_its_keys(redis_server: Any, batch: int, copies: int, paged: bool) -> None:  # noqa: F811
    """6 routers under 4 topics beside 30 ports, in batches of 2; 120 routers in batches of 1 (past
    100 x batch: the names are paged). On the code before, the batches read the switch and ports too."""
    routers = ROUTER_TOPICS * copies
    with nbdb.connect(f"{redis_server.url}?batch={batch}", namespace=_ns()) as db:
        _fill(db, routers, 30)
        batches = Batches(_backend(db))
        listed = db.list(LogicalRouter)
        assert sorted(r.name for r in listed) == sorted(f"lr-{i}" for i in range(len(routers)))
        assert (batches.tables.get("LogicalRouter", 0), batches.others) == (len(routers), 0)
        assert batches.paged == (1 if paged else 0)
        with db.cache(LogicalRouter) as cache:  # a cold load takes the same path
            assert cache.wait_synced(30)
            assert len(cache) == len(routers)
        assert (batches.tables["LogicalRouter"], batches.others) == (2 * len(routers), 0)
        assert len(db.list(LogicalSwitchPort)) == 30


def _state(db: nbdb.Database) -> tuple[int, dict[str, int]]:
    listed = db.list(LogicalRouter)
    return listed.revision, {r.name: r.version for r in listed}


WRITES: dict[str, Callable[[nbdb.Database], None]] = {}


def _writes(name: str) -> Callable[[Callable[[nbdb.Database], None]], Callable[[nbdb.Database], None]]:
    def register(fn: Callable[[nbdb.Database], None]) -> Callable[[nbdb.Database], None]:
        WRITES[name] = fn
        return fn

    return register


@_writes("a new topic")
def _new_topic(other: nbdb.Database) -> None:
    other.create(LogicalRouter(name="new", topic="t-new"))


@_writes("a new topic and an update")
def _new_topic_and_update(other: nbdb.Database) -> None:
    # The update changes a directory the batches were checked by: the change log is replayed.
    first = next(r for r in other.list(LogicalRouter, topic="t-a") if r.name == "lr-1")
    other.update(first.model_copy(update={"options": {"x": "1"}}))
    other.create(LogicalRouter(name="new", topic="t-new"))


@_writes("a new topic and a port")
def _new_topic_and_port(other: nbdb.Database) -> None:
    other.create(LogicalRouter(name="new", topic="t-new"))
    switch = other.list(LogicalSwitch)[0]
    other.create(LogicalSwitchPort(name="p-new", switch=switch.id, topic="t-p"))


@_writes("a topic emptied")
def _topic_emptied(other: nbdb.Database) -> None:
    gone = next(r for r in other.list(LogicalRouter, topic="t-b"))
    other.delete(LogicalRouter, gone.id)


@_writes("a topic emptied, another made")
def _topic_emptied_another_made(other: nbdb.Database) -> None:
    gone = next(r for r in other.list(LogicalRouter, topic="t-c"))
    other.delete(LogicalRouter, gone.id)
    other.create(LogicalRouter(name="new", topic="t-new"))
    other.create(LogicalRouter(name="new2", topic="t-a"))


@pytest.mark.parametrize("writes", sorted(WRITES))
def test_another_writer_during_the_batches_is_neither_lost_nor_half_seen(redis_server: Any, writes: str) -> None:  # noqa: F811
    """Another Database on the same namespace writes between the script (R0) and the batches.

    The list must be the state at its revision: the state before the writes (at R0, checked by
    the directories) or the one after them (the log replayed), never one without a router in a
    topic created meanwhile. A patch matching the topics' names instead of the wildcard left the
    new topic's router out of the state after the writes, at a revision past its create: a cache
    loaded from it never got it from its watch either."""
    url = f"{redis_server.url}?batch=2"
    namespace = _ns()
    with nbdb.connect(url, namespace=namespace) as db, nbdb.connect(url, namespace=namespace) as other:
        _fill(db, ROUTER_TOPICS, 10)
        before = _state(db)
        batches = Batches(_backend(db), lambda: WRITES[writes](other))
        listed = db.list(LogicalRouter)
        got = (listed.revision, {r.name: r.version for r in listed})
        assert batches.others == 0
        after = _state(db)
        assert after != before
        assert got in (before, after), (got, before, after)
        # Only a new topic: the directories checked did not change, the batches are the state at R0
        # (the new router comes after it). Any write to them: the log is replayed up to the last write.
        assert got == (before if writes == "a new topic" else after)
        # A cache loaded while the other writer writes holds the state after every write.
        Batches(_backend(db), lambda: other.create(LogicalRouter(name="late", topic="t-late")))
        with db.cache(LogicalRouter) as cache:
            assert cache.wait_synced(30)
            assert _until(lambda: len(cache) == len(after[1]) + 1), (len(cache), after)
            assert {r.name: r.version for r in cache.list(LogicalRouter)} == {**after[1], "late": 1}


def _until(predicate: Callable[[], bool], rounds: int = 200) -> bool:
    import time

    for _ in range(rounds):
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


TOPICS = st.sampled_from([None, "t-a", "t-b", "t-c", "t-new", "t-newer"])
WRITE = st.one_of(
    st.tuples(st.just("create"), TOPICS),
    st.tuples(st.just("update"), st.integers(0, 5)),
    st.tuples(st.just("delete"), st.integers(0, 5)),
    st.tuples(st.just("port"), TOPICS),
)


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(routers=st.lists(TOPICS, min_size=3, max_size=6), writes=st.lists(WRITE, min_size=1, max_size=4))
def test_any_writes_during_the_batches_leave_the_state_before_or_after_them(
    redis_server: Any,  # noqa: F811
    routers: list[str | None],
    writes: list[tuple[str, Any]],
) -> None:
    """Hypothesis: routers under any topics, any creates (new topics too), updates, deletes and ports
    committed by another Database between the script and the batches: the list is one of the two states."""
    url = f"{redis_server.url}?batch=2"
    namespace = _ns()
    with nbdb.connect(url, namespace=namespace) as db, nbdb.connect(url, namespace=namespace) as other:
        _fill(db, routers, 3)

        def write() -> None:
            present = sorted(other.list(LogicalRouter), key=lambda r: r.name)
            for n, (kind, arg) in enumerate(writes):
                if kind == "create":
                    other.create(LogicalRouter(name=f"w-{n}", topic=arg))
                elif kind == "port":
                    switch = other.list(LogicalSwitch)[0]
                    other.create(LogicalSwitchPort(name=f"wp-{n}", switch=switch.id, topic=arg))
                elif present:
                    target = present[arg % len(present)]
                    if kind == "update":
                        current = other.get(LogicalRouter, target.id)
                        if current is not None:
                            other.update(current.model_copy(update={"options": {"n": str(n)}}))
                    elif other.delete(LogicalRouter, target.id, if_exists=True) is not None:
                        present.remove(target)

        before = _state(db)
        batches = Batches(_backend(db), write)
        listed = db.list(LogicalRouter)
        got = (listed.revision, {r.name: r.version for r in listed})
        assert batches.others == 0
        after = _state(db)
        assert got in (before, after), (got, before, after)


DMR_FIELDS = ["o/t-a/LogicalRouter/", "o/t-p/LogicalRouter/", "o/t-p/", "o/t-a/", "o/", ""]


@pytest.mark.timeout(120)
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    field=st.sampled_from(DMR_FIELDS),
    text=st.binary(max_size=6).filter(lambda b: not b.isdigit()),
    topic=st.sampled_from([None, "t-a"]),
)
def test_another_writers_text_in_dmr_leaves_a_batched_list_exact(
    redis_server: Any,  # noqa: F811
    field: str,
    text: bytes,
    topic: str | None,
) -> None:
    """Past ``batch`` keys a list checks 'dmr' fields after its batches: since the one-table scan
    reads them per topic, a list of the table with no topic filter reads ``o/<topic>/<table>/`` too
    (a topic of ports only has none: ``o/<topic>/`` speaks for it). Another writer's text in one,
    not a whole number, raised ValueError (untranslated) out of the list, and out of a cache's load.
    Now it counts as a change and the change log decides: the list is exact, the text left as it is."""
    import redis

    with nbdb.connect(f"{redis_server.url}?batch=1", namespace=_ns()) as db:  # t-a's 2 routers: batched too
        _fill(db, ROUTER_TOPICS, 3)
        expected = sorted(r.name for r in db.list(LogicalRouter, topic=topic))
        backend = _backend(db)
        _host, port = backend.config.hosts[0]
        client = redis.Redis(host="127.0.0.1", port=port, db=backend.config.db)
        try:
            client.hset(backend.root + "dmr", field, text)
            assert sorted(r.name for r in db.list(LogicalRouter, topic=topic)) == expected
            with db.cache(LogicalRouter) as cache:
                assert cache.wait_synced(10)  # before: its load failed, reported to on_error, again and again
                assert len(cache) == len(ROUTER_TOPICS)
            assert client.hget(backend.root + "dmr", field) == text
        finally:
            client.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "writes", ["a new topic", "a topic emptied", "a new topic and a topic emptied", "a port topic's first"]
)
def test_another_writer_before_the_names_are_paged_is_neither_lost_nor_half_seen(
    redis_server: Any,  # noqa: F811
    writes: str,
) -> None:
    """Past ``100 x batch`` names the script returns only R0 and the topics, and the names are paged
    (SSCAN) under those topics after it: another writer's commits between the script and the pages
    (a router in a new topic, a topic emptied, a first router in a topic of ports) leave the list
    the state at R0 or after every write. Coverage of the paged path (held on main too)."""
    url = f"{redis_server.url}?batch=1"
    namespace = _ns()
    with nbdb.connect(url, namespace=namespace) as db, nbdb.connect(url, namespace=namespace) as other:
        _fill(db, ROUTER_TOPICS * 20, 5)  # 120 routers: past 100 x batch
        backend = _backend(db)
        real_paged, armed, paged = backend._names_paged, [False], []

        def names_paged(prefixes: Sequence[str]) -> list[str]:
            if armed[0] and not paged:
                paged.append(True)
                if "new topic" in writes:
                    other.create(LogicalRouter(name="new", topic="t-new"))
                if "emptied" in writes:
                    for gone in other.list(LogicalRouter, topic="t-c"):
                        other.delete(LogicalRouter, gone.id)
                if "port topic" in writes:
                    other.create(LogicalRouter(name="new", topic="t-p"))
            return real_paged(prefixes)

        backend._names_paged = names_paged  # type: ignore[method-assign]
        before = _state(db)
        armed[0] = True
        listed = db.list(LogicalRouter)
        got = (listed.revision, {r.name: r.version for r in listed})
        assert paged
        after = _state(db)
        assert after != before
        assert got == (before if writes == "a new topic" else after), (got[0], before[0], after[0])


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("batch", "copies"), [(2, 1), (1, 20)])
def test_a_name_in_the_topic_set_that_is_not_utf8_is_not_a_topic(redis_server: Any, batch: int, copies: int) -> None:  # noqa: F811
    """Another writer's name in ``d:o/`` that is not UTF-8 (``\\xff/``): no nbdb object can be under it.
    A list of a table up to ``batch`` keys serves the objects, and so did one past it with the names
    from the script before the one-table batched read (``o/`` read whole; paged, it failed too).
    That read decoded the topics the script returned and raised a bare UnicodeDecodeError, names
    from the script or paged, for a list and a cache's load. Now both are exact; the name is left."""

    import redis

    routers = ROUTER_TOPICS * copies
    with nbdb.connect(f"{redis_server.url}?batch={batch}", namespace=_ns()) as db:
        _fill(db, routers, 3)
        backend = _backend(db)
        _host, port = backend.config.hosts[0]
        client = redis.Redis(host="127.0.0.1", port=port, db=backend.config.db)
        try:
            client.sadd(backend.root + "d:o/", b"\xff/")
            batches = Batches(backend)
            assert sorted(r.name for r in db.list(LogicalRouter)) == sorted(f"lr-{i}" for i in range(len(routers)))
            assert batches.paged == (1 if copies > 1 else 0)
            with db.cache(LogicalRouter) as cache:
                assert cache.wait_synced(10)
                assert len(cache) == len(routers)
            assert client.sismember(backend.root + "d:o/", b"\xff/")
        finally:
            client.close()
