"""Issue 13 on Hazelcast: a one-table scan with no topic filter hands the member's query that table's keys only.

The member answers a scan's queries from its sorted index of ``__key``: it reads the keys in
each query's spans (and matches a regular expression against each, if the query has one).
The tests count, on the real store, the keys in the spans the scan asked for: before the
topic registry, a list of 3 routers beside 40 ports read (and regex-matched) all 43 object
keys on the member, which dropped the ports.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hazelcast.predicate import between
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.backends.hazelcast import HazelcastBackend
from nbdb.backends.hazelcast import _backend as hzbackend
from nbdb.backends.hazelcast._records import encode_kv
from nbdb.families import rules
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.models.ovn import LogicalRouter
from nbdb.testing.faults import ProxiedServer
from nbdb.testing.fixtures import hazelcast_cluster, hazelcast_server  # noqa: F401 - pytest fixtures

from .conftest import fill_topics

pytestmark = pytest.mark.timeout(120)

WILDCARD = "o/*/LogicalRouter/"


def _ns() -> str:
    return f"hzscan-{uuid.uuid4().hex[:10]}"


class Spans:
    """The spans (and regular expressions) of the scans a backend sends, and the keys they cover on the store."""

    def __init__(self, backend: HazelcastBackend) -> None:
        self.backend = backend
        self.sent: list[tuple[list[tuple[str, str]], str | None]] = []
        real = getattr(backend, "scan_spans", None)
        if real is None:  # the code before the registry: a scan's one query, o/ whole with the regular expression
            self.sent.append(([("o/", "o/\uffff")], "o/[^/]*/LogicalRouter/.*"))
            return

        def scan_spans(prefix: str, topics: Any) -> Any:
            got = real(prefix, topics)
            if prefix == WILDCARD:
                self.sent += got
            return got

        backend.scan_spans = scan_spans  # type: ignore[method-assign]

    def keys(self, regex: bool) -> list[str]:
        """The keys now in the spans of the queries sent (with a regular expression or without)."""
        kv = self.backend._kv
        return sorted(
            str(key)
            for spans, match in self.sent
            if (match is not None) == regex
            for low, high in spans
            for key in kv.key_set(between("__key", low, high))
        )

    def tables(self) -> dict[str, int]:
        """The object keys the member's index handed the scans, by table."""
        out: dict[str, int] = {}
        for key in self.keys(False) + self.keys(True):
            table = key.split("/")[2]
            out[table] = out.get(table, 0) + 1
        return out


@contextlib.contextmanager
def _keys_per_topic(keys: int) -> Iterator[None]:
    """Scans name the topics one by one from ``keys`` keys of ``kv`` per topic (see ``_KEYS_PER_TOPIC``)."""
    was = hzbackend._KEYS_PER_TOPIC
    hzbackend._KEYS_PER_TOPIC = keys
    try:
        yield
    finally:
        hzbackend._KEYS_PER_TOPIC = was


def _backend(db: nbdb.Database) -> HazelcastBackend:
    assert isinstance(db.backend, HazelcastBackend)
    return db.backend


def _foreign_router(backend: HazelcastBackend, topic: str | None, name: str) -> None:
    """A router's key written as another writer would: straight into the map, no commit, no registry."""
    made = LogicalRouter(name=name, topic=topic)
    key = backend.layout.object(topic, "LogicalRouter", made.id)
    backend._kv.put(key, encode_kv(1, 1, made.model_dump_json().encode()))


def test_a_one_table_scan_hands_the_member_that_tables_keys_only(hazelcast_server: Any) -> None:  # noqa: F811
    with nbdb.connect(hazelcast_server.url, namespace=_ns()) as db:
        fill_topics(db, [None, "t-a", "t-b"], [None] * 20 + ["t-a"] * 20)
        spans = Spans(_backend(db))
        assert sorted(r.name for r in db.list(LogicalRouter)) == ["lr-0", "lr-1", "lr-2"]
        assert spans.tables() == {"LogicalRouter": 3}  # the code before: 3 routers, 2 switches, 40 ports
        assert spans.keys(regex=True) == []  # every topic registered: the regular expression matched no key
        with db.cache(LogicalRouter) as cache:
            assert cache.wait_synced(30)
            assert len(cache) == 3
        assert spans.tables() == {"LogicalRouter": 6}


def test_a_topic_another_writer_adds_is_listed_and_registered(hazelcast_server: Any) -> None:  # noqa: F811
    namespace = _ns()
    with nbdb.connect(hazelcast_server.url, namespace=namespace) as db:
        fill_topics(db, [None], [None] * 20)
        backend = _backend(db)
        _foreign_router(backend, "t-hand", "by-hand")
        spans = Spans(backend)
        assert sorted(r.name for r in db.list(LogicalRouter)) == ["by-hand", "lr-0"]
        assert spans.tables() == {"LogicalRouter": 2}
        assert backend.gap_keys == 1  # found by the regular expression over the gaps, and registered
        assert _until(lambda: not backend._topics.in_flight)  # fire and forget
        assert backend._kv.get(backend.layout.topic_mark("t-hand")) is not None
    with nbdb.connect(hazelcast_server.url, namespace=namespace) as other:
        spans = Spans(_backend(other))
        assert len(other.list(LogicalRouter)) == 2
        assert spans.keys(regex=True) == [] and _backend(other).gap_keys == 0


def test_data_without_a_registry_lists_exactly_and_is_registered(hazelcast_server: Any) -> None:  # noqa: F811
    """A namespace written before the registry (or its keys deleted by hand): exact at once, cheap once scanned."""
    namespace = _ns()
    with nbdb.connect(hazelcast_server.url, namespace=namespace) as db:
        fill_topics(db, [None, "t-a"], [None] * 40 + ["t-b"] * 40)
        kv = _backend(db)._kv
        kv.remove_all(between("__key", "p/", "p/\uffff"))
        assert kv.key_set(between("__key", "p/", "p/\uffff")) == []
    with nbdb.connect(hazelcast_server.url, namespace=namespace) as db:
        backend = _backend(db)
        spans = Spans(backend)
        assert sorted(r.name for r in db.list(LogicalRouter)) == ["lr-0", "lr-1"]
        assert backend.gap_keys == 2  # the routers, regex-matched over all of o/ as before
        assert len(spans.keys(regex=True)) == 2 + 2 + 80  # every object key: that one scan costs what it did
        assert len(db.list(LogicalSwitchPort)) == 80  # registers t-b, the ports' topic
        assert _until(lambda: not backend._topics.in_flight)
        spans.sent.clear()
        assert len(db.list(LogicalRouter)) == 2
        assert spans.tables() == {"LogicalRouter": 2} and spans.keys(regex=True) == []


def test_past_the_topic_cap_a_scan_reads_o_whole_and_stays_exact(hazelcast_server: Any) -> None:  # noqa: F811
    with nbdb.connect(hazelcast_server.url, namespace=_ns()) as db, _keys_per_topic(0):
        with db.transaction() as txn:
            for i in range(260):
                txn.create(LogicalRouter(name=f"lr-{i}", topic=f"t-{i}"))
        fill_topics(db, [], ["t-0"] * 3)
        spans = Spans(_backend(db))
        assert len(db.list(LogicalRouter)) == 260
        assert len(spans.keys(regex=True)) == 260 + 1 + 3  # o/ whole, as before the registry
        assert len(db.list(LogicalSwitchPort)) == 3


def test_a_registry_past_the_topic_cap_hands_the_client_a_page_of_it(hazelcast_server: Any) -> None:  # noqa: F811
    """The registry only grows (a topic emptied stays registered): past 256 topics a scan reads ``o/`` whole, and
    the client's registry read, once a second it scans, must not carry every registry key (10,000 topics: 67 ms a
    read and 42 ms of the client's CPU, 50,000: 504 ms, for a plan already known after 257 of them)."""
    with nbdb.connect(hazelcast_server.url, namespace=_ns()) as db, _keys_per_topic(0):
        backend = _backend(db)
        backend._kv.put_all({backend.layout.topic_mark(f"t-{i}"): encode_kv(1, 0, b"") for i in range(1000)})
        fill_topics(db, [None, "t-1"], ["t-2"] * 3)
        _foreign_router(backend, "t-hand", "by-hand")
        received: list[int] = []
        proxy = backend._kv_async
        real = proxy.key_set

        def key_set(*args: Any) -> Any:
            return real(*args).continue_with(lambda got: (received.append(len(got.result())), got.result())[1])

        proxy.key_set = key_set
        spans = Spans(backend)
        assert sorted(r.name for r in db.list(LogicalRouter)) == ["by-hand", "lr-0", "lr-1"]
        assert len(spans.keys(regex=True)) == 2 + 1 + 1 + 3  # o/ whole, as before the registry
        assert received and max(received) <= 257  # the code before: 1,001, every registry key
        assert len(db.list(LogicalSwitchPort)) == 3


def test_few_keys_a_topic_a_scan_reads_o_whole_and_stays_exact(hazelcast_server: Any) -> None:  # noqa: F811
    """40 topics of a router and a switch: fewer than 32 keys of kv a topic, so o/ whole (cheaper there), exactly."""
    with nbdb.connect(hazelcast_server.url, namespace=_ns()) as db:
        with db.transaction() as txn:
            for i in range(40):
                txn.create(LogicalRouter(name=f"lr-{i}", topic=f"t-{i}"))
                txn.create(LogicalSwitch(name=f"ls-{i}", topic=f"t-{i}"))
        spans = Spans(_backend(db))
        assert len(db.list(LogicalRouter)) == 40
        assert len(spans.keys(regex=True)) == 80 and spans.keys(regex=False) == []


TOPIC_NAMES = st.sampled_from([None, "a", "a.b", "a-b", "a.", "ab", "a..b", "t-hand", "z@.-:", "A", "0"])


@settings(max_examples=16, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    ranged=st.booleans(),
    routers=st.lists(TOPIC_NAMES, max_size=4),
    foreign=st.lists(TOPIC_NAMES, max_size=3),
    ports=st.lists(TOPIC_NAMES, max_size=4),
    dropped=st.lists(TOPIC_NAMES, max_size=3),
)
def test_any_registry_a_one_table_list_is_exact(
    hazelcast_server: Any,  # noqa: F811
    ranged: bool,
    routers: list[str | None],
    foreign: list[str | None],
    ports: list[str | None],
    dropped: list[str | None],
) -> None:
    """Routers of nbdb's commits and of another writer, ports beside them, registry keys deleted by hand:
    the list holds every router once, and a second list regex-matches no router (their topics registered).
    ``ranged``: whether scans name the topics one by one whatever the map's size (else o/ whole: few keys)."""
    with nbdb.connect(hazelcast_server.url, namespace=_ns()) as db, _keys_per_topic(0 if ranged else 10**9):
        fill_topics(db, routers, ports)
        backend = _backend(db)
        assert _until(lambda: not backend._topics.in_flight)  # the commits' registrations (fire and forget) answered
        for i, topic in enumerate(foreign):
            _foreign_router(backend, topic, f"hand-{i}")
        for topic in dropped:
            backend._kv.remove(backend.layout.topic_mark(rules.topic_part(topic)))
        want = sorted([f"lr-{i}" for i in range(len(routers))] + [f"hand-{i}" for i in range(len(foreign))])
        assert sorted(r.name for r in db.list(LogicalRouter)) == want
        assert _until(lambda: not backend._topics.in_flight)
        spans = Spans(backend)
        assert sorted(r.name for r in db.list(LogicalRouter)) == want
        # The first list registered every topic holding a router; a dropped topic of ports alone stays in a gap.
        with_routers = {rules.topic_part(t) for t in routers + foreign}
        unregistered = {rules.topic_part(t) for t in dropped} - with_routers
        matched = spans.keys(regex=True)
        if not ranged:
            assert len([key for key in matched if key.split("/")[2] == "LogicalRouter"]) == len(want)
            return
        assert {key.split("/")[1] for key in matched} <= unregistered
        assert [key for key in matched if key.split("/")[2] == "LogicalRouter"] == []
        assert spans.tables().get("LogicalRouter", 0) == len(want)


def test_a_topic_another_client_registers_while_this_one_holds_the_registry_is_listed(
    hazelcast_server: Any,  # noqa: F811
) -> None:
    """A client scans with the registry it read up to a second before: a topic registered since is in a gap."""
    namespace = _ns()
    with (
        nbdb.connect(hazelcast_server.url, namespace=namespace) as a,
        nbdb.connect(hazelcast_server.url, namespace=namespace) as b,
    ):
        fill_topics(a, [None], [None] * 40)
        assert len(a.list(LogicalRouter)) == 1  # a holds the registry now
        b.create(LogicalRouter(name="from-b", topic="t-b"))
        assert _until(lambda: b.backend._kv.get("p/t-b") is not None)  # type: ignore[attr-defined]
        assert sorted(r.name for r in a.list(LogicalRouter)) == ["from-b", "lr-0"]
        assert sorted(r.name for r in a.list(LogicalRouter)) == ["from-b", "lr-0"]


def _until(predicate: Any, rounds: int = 100) -> bool:
    import time

    for _ in range(rounds):
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


@pytest.mark.timeout(240)
def test_on_three_members_the_members_answer_the_ranges_and_gaps_exactly(hazelcast_cluster: Any) -> None:  # noqa: F811
    """The spans (an OR of BETWEENs, and with the regular expression) on a partitioned index: each member its share."""
    hazelcast_cluster.wait_ready(60)
    with nbdb.connect(hazelcast_cluster.url, namespace=_ns()) as db, _keys_per_topic(0):
        fill_topics(db, [None, "a", "a-b", "a.", "b"], ["a"] * 30 + ["b"] * 30 + [None] * 30)
        backend = _backend(db)
        _foreign_router(backend, "a:z", "by-hand")
        _foreign_router(backend, "a", "by-hand-2")
        spans = Spans(backend)
        want = sorted([f"lr-{i}" for i in range(5)] + ["by-hand", "by-hand-2"])
        assert sorted(r.name for r in db.list(LogicalRouter)) == want
        assert backend.gap_keys == 1 and len(spans.keys(regex=True)) == 1  # "a:z", found in a gap on its member
        assert _until(lambda: not backend._topics.in_flight)  # its registration, fire and forget, answered
        spans.sent.clear()
        with db.cache(LogicalRouter) as cache:
            assert cache.wait_synced(30)
            assert sorted(r.name for r in cache.list(LogicalRouter)) == want
        assert spans.tables() == {"LogicalRouter": 7} and spans.keys(regex=True) == []
        # Past 256 registry keys the members answer the registry read with one page of 257 of them.
        backend._kv.put_all({backend.layout.topic_mark(f"t-{i}"): encode_kv(1, 0, b"") for i in range(300)})
        backend._topics.read = None
        spans.sent.clear()
        assert sorted(r.name for r in db.list(LogicalRouter)) == want
        assert backend._topics.read is not None and backend._topics.read[1] == (None, False)
        assert spans.keys(regex=False) == []
        assert len(spans.keys(regex=True)) == 7 + 3 + 90  # o/ whole: routers, switches, ports


@pytest.mark.parametrize("ranged", [True, False])
def test_lists_and_cold_loads_beside_creates_in_new_topics_miss_nothing_acknowledged(
    hazelcast_server: Any,  # noqa: F811
    ranged: bool,
) -> None:
    """Another client creates each router in a topic of its own (registered as it commits, not under the
    lock): every list, and every cache loaded and then fed by its watch, holds each router acknowledged
    before it began, whichever registry read (fresh, reused, or missing the topic) the scan used."""
    namespace = _ns()
    with (
        nbdb.connect(hazelcast_server.url, namespace=namespace) as reader,
        nbdb.connect(hazelcast_server.url, namespace=namespace) as writer,
        _keys_per_topic(0 if ranged else 10**9),
    ):
        reader.create(LogicalRouter(name="seed"))
        acked: list[str] = ["seed"]
        stop = threading.Event()

        def write() -> None:
            for i in range(300):
                if stop.is_set():
                    return
                writer.create(LogicalRouter(name=f"r-{i}", topic=f"t-{i}"))
                acked.append(f"r-{i}")

        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        missed: list[Any] = []
        try:
            end = time.monotonic() + 5
            loads = 0
            while time.monotonic() < end and thread.is_alive():
                before = set(acked)
                if missing := before - {r.name for r in reader.list(LogicalRouter)}:
                    missed.append(("list", sorted(missing)))
                if loads < 4:
                    loads += 1
                    opened = set(acked)
                    with reader.cache(LogicalRouter) as cache:
                        assert cache.wait_synced(30)
                        if missing := opened - {r.name for r in cache.list(LogicalRouter)}:
                            missed.append(("cache load", sorted(missing)))
                        fed = set(acked)  # from here on the watch's to add
                        assert _until(lambda c=cache, w=fed: w <= {r.name for r in c.list(LogicalRouter)}), "watch"
        finally:
            stop.set()
            thread.join(30)
        assert missed == []
        assert sorted(r.name for r in reader.list(LogicalRouter)) == sorted(acked)


def test_a_list_that_has_its_result_does_not_wait_for_registering_a_topic_it_found(
    hazelcast_server: Any,  # noqa: F811
) -> None:
    """A scan finds another writer's topic in a gap and registers it: best effort, never waited for. The
    reply to that registration is held back (the proxy, for 15 s): the list, whose result
    was in, returned at once (the code before waited for the put until ``timeout``, 10 s)."""
    namespace = _ns()
    with (
        ProxiedServer(hazelcast_server) as proxied,
        nbdb.connect(hazelcast_server.url, namespace=namespace) as direct,
    ):
        fill_topics(direct, [None], [])
        _foreign_router(_backend(direct), "t-hand", "by-hand")
        db = nbdb.connect(proxied.url, namespace=namespace)
        try:
            backend = _backend(db)
            proxied.proxy.lose_next_reply(backend.layout.topic_mark("t-hand").encode(), window=15)
            began = time.monotonic()
            assert sorted(r.name for r in db.list(LogicalRouter)) == ["by-hand", "lr-0"]
            took = time.monotonic() - began
            assert proxied.proxy.wait_fired(1, 5), "the registration was not sent"
            assert took < 3, f"the list waited {took:.1f}s for a best-effort registration"
            assert backend.gap_keys == 1
        finally:
            proxied.proxy.heal()
            db.close()


def test_concurrent_scans_that_find_a_topic_in_a_gap_register_it_once(
    hazelcast_server: Any,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Threads list while another writer's topic sits in a gap: each scan that began with a registry read
    before the registration was answered finds it there, and none registers (and logs) it again (the code
    before logged and put it once per such scan, each put waited for)."""
    namespace = _ns()
    with nbdb.connect(hazelcast_server.url, namespace=namespace) as db:
        fill_topics(db, [None], [])
        backend = _backend(db)
        assert len(db.list(LogicalRouter)) == 1
        for round_ in range(3):
            _foreign_router(backend, f"t-hand-{round_}", f"by-hand-{round_}")
            caplog.clear()
            with caplog.at_level("INFO", logger=hzbackend.__name__):
                threads = [
                    threading.Thread(target=lambda: [db.list(LogicalRouter) for _ in range(10)], daemon=True)
                    for _ in range(4)
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(60)
            logged = [r for r in caplog.records if f"t-hand-{round_}" in r.getMessage()]
            assert len(logged) == 1, [r.getMessage() for r in logged]
        assert len(db.list(LogicalRouter)) == 4


def test_eight_threads_listing_and_creating_in_new_topics_all_finish(hazelcast_server: Any) -> None:  # noqa: F811
    """Four threads list, four create each object in a topic of its own (a registration each, a registry
    read after each), for four seconds: every call returns (none hangs on the client's reactor) and every
    list holds the routers acknowledged before it began."""
    with nbdb.connect(hazelcast_server.url, namespace=_ns()) as db:
        db.create(LogicalRouter(name="seed"))
        acked: set[str] = {"seed"}
        end = time.monotonic() + 4
        failures: list[Any] = []

        def run(n: int) -> None:
            i = 0
            try:
                while time.monotonic() < end:
                    i += 1
                    if n % 2:
                        before = set(acked)
                        if missing := before - {r.name for r in db.list(LogicalRouter)}:
                            failures.append(("missed", sorted(missing)))
                    else:
                        db.create(LogicalRouter(name=f"r-{n}-{i}", topic=f"t-{n}-{i}"))
                        acked.add(f"r-{n}-{i}")
            except Exception as exc:  # reported below
                failures.append(exc)

        threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads), "a call hung"
        assert failures == []
        assert sorted(r.name for r in db.list(LogicalRouter)) == sorted(acked)


def test_a_list_that_gave_up_on_the_commit_lock_leaves_no_topic_in_flight(
    hazelcast_server: Any,  # noqa: F811
) -> None:
    """Another client holds the commit lock past this one's ``timeout``: the list fails, leaves nothing in flight,
    and the next list (the lock free) finds and registers another writer's topic in a gap.

    When the lock was a blocking ``lock``, its request was granted later anyway and the scan sent from that
    grant reserved the topic for the unlock's callback, which a list that gave up never reaches: it stayed in
    flight for good, never registered, and each such list took room for good from the 1,024 registrations in
    flight that stop all registration once full. A ``tryLock`` (since 2026-12-05, see the backend's docs,
    "Threads") is refused and asked again until ``timeout``: no grant comes after that. An attempt sent with no
    time left was abandoned at once, and granted as the holder unlocked: 3 runs of 10 failed so (``gap_keys``
    2); none starts in the last 20 ms now, nor waits in the member's queue in the last 4 waits' worth."""
    namespace = _ns()
    with (
        nbdb.connect(hazelcast_server.url, namespace=namespace) as holder,
        nbdb.connect(f"{hazelcast_server.url}?timeout=2", namespace=namespace) as db,
    ):
        fill_topics(holder, [None], [])
        backend = _backend(db)
        assert len(db.list(LogicalRouter)) == 1  # the registry read, before the topic exists
        _foreign_router(backend, "t-late", "late")
        held = _backend(holder).meta_async
        held.lock(hzbackend._COMMIT_LOCK, lease_time=30).result()
        try:
            with pytest.raises(nbdb.errors.BackendUnavailableError):
                db.list(LogicalRouter)
            assert _until(lambda: not backend._topics.in_flight), f"left in flight: {backend._topics.in_flight}"
            assert backend.gap_keys == 0  # nothing was scanned without the lock
        finally:
            held.unlock(hzbackend._COMMIT_LOCK).result()
        assert sorted(r.name for r in db.list(LogicalRouter)) == ["late", "lr-0"]
        assert backend.gap_keys == 1
        assert _until(lambda: not backend._topics.in_flight), f"left in flight: {backend._topics.in_flight}"
        assert _until(lambda: backend._kv.get(backend.layout.topic_mark("t-late")) is not None)
