"""etcd backend: what the conformance kit cannot cover.

URL grammar, the wire codec, compaction during a watch, progress notifications,
a member restart, a 3-member cluster losing its leader during writes, locks on
leases, TLS and authentication — all against real etcd from nbdb.testing.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import nbdb
from nbdb import errors
from nbdb.conformance.kit import KitNote, KitParent, eventually, sink_deliveries
from nbdb.events import EventKind
from nbdb.testing import EtcdServer, Server
from nbdb.testing.fixtures import etcd_cluster, etcd_server, server_factory  # noqa: F401
from nbdb.testing.probes import http_json
from nbdb.testing.process import find_binary
from nbdb.testing.tls import TlsFiles, make_tls_files

pytest.importorskip("grpc")

from nbdb.backends.etcd import EtcdBackend, wire
from nbdb.backends.etcd import stream as etcd_stream
from nbdb.backends.etcd.backend import parse_url
from nbdb.backends.etcd.client import EtcdClient, safe_progress_requests
from nbdb.families.kvtypes import KeyValue
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.spi import UniqueKey


def _ns() -> str:
    return "t" + uuid.uuid4().hex[:10]


def _connect(url: str, **options: Any) -> nbdb.Database:
    options.setdefault("namespace", _ns())
    return nbdb.connect(url, **options)


# ---------------------------------------------------------------- no server


def test_url_grammar() -> None:
    settings, prefix, progress = parse_url("etcd://h1:1,h2,[::1]:3/app?timeout=2&retries=7", {"namespace": "x"})
    assert settings.endpoints == ("h1:1", "h2:2379", "[::1]:3")
    assert prefix == "app/x/"
    assert settings.timeout == 2.0 and settings.policy.attempts == 8 and not settings.tls
    assert progress == 5.0
    settings, prefix, _ = parse_url("etcd+https://bob:s%40cret@h:1", {})
    assert settings.tls and settings.user == "bob" and settings.password == "s@cret"
    assert prefix == "nbdb/"
    assert "s@cret" not in repr(settings) and "cret" not in repr(settings)
    settings, _, _ = parse_url("etcd://h?tls=1", {})
    assert settings.tls
    with pytest.raises(errors.ValidationError, match="unknown etcd:// option"):
        parse_url("etcd://h?bogus=1", {})
    with pytest.raises(errors.ValidationError, match="namespace"):  # it would nest under namespace "a"
        parse_url("etcd://h", {"namespace": "a/o"})
    with pytest.raises(errors.ValidationError):
        parse_url("etcd://h:99999", {})
    with pytest.raises(errors.ValidationError, match="cert and key"):
        parse_url("etcd://h?cert=/x", {})
    with pytest.raises(errors.ValidationError, match="cannot read"):
        parse_url("etcd://h?ca=/nonexistent/ca.pem", {})
    # Durations a wait can hold: gRPC took a timeout of 1e10 s as a deadline past, and a watch's poll(None)
    # waited progress_interval on a queue, which raises OverflowError past threading.TIMEOUT_MAX.
    for option in ("timeout", "progress_interval"):
        with pytest.raises(errors.ValidationError, match=f"{option} must be at most"):
            parse_url("etcd://h", {option: 1e12})


def test_wire_codec() -> None:
    assert wire.prefix_end(b"a/") == b"a0"
    assert wire.prefix_end(b"a\xff") == b"b"
    assert wire.prefix_end(b"") == b"\0"
    # A oneof member equal to zero must still be on the wire (VersionIs(key, 0)).
    assert wire.compare(b"k", wire.TARGET_VERSION, wire.CMP_EQUAL, 0).endswith(b"\x20\x00")
    header = b"\x18\x2a"  # revision 42
    kv = b"\x0a\x01k\x18\x07\x20\x02\x2a\x01v"
    event = b"\x08\x01\x12" + bytes([len(kv)]) + kv
    response = (
        b"\x0a"
        + bytes([len(header)])
        + header
        + b"\x10"
        + b"\xff" * 9
        + b"\x01"
        + b"\x5a"
        + bytes([len(event)])
        + event
    )
    parsed = wire.parse_watch(response)
    assert parsed.header.revision == 42 and parsed.watch_id == -1
    assert parsed.events[0].deleted and parsed.events[0].kv.key == b"k" and parsed.events[0].kv.mod_revision == 7
    with pytest.raises(wire.WireError):
        wire.parse_watch(b"\x0a\x05ab")


@given(
    st.binary(min_size=1, max_size=300),
    st.binary(max_size=300),
    st.integers(0, 2**62),
    st.sampled_from([wire.TARGET_VERSION, wire.TARGET_CREATE, wire.TARGET_MOD, wire.TARGET_LEASE]),
    st.integers(0, 3),
)
def test_commit_messages_decode_to_what_was_encoded(
    key: bytes, value: bytes, number: int, target: int, result: int
) -> None:
    """The concatenating encoders of a commit's messages give the protobuf fields they were given."""
    fields = wire._parse
    put = fields(fields(wire.request_put(key, value, number))[2][0])  # type: ignore[arg-type]
    assert put.get(1) == [key] and put.get(2, [b""]) == [value] and put.get(3, [0]) == [number]
    delete = fields(fields(wire.request_delete(key, value))[3][0])  # type: ignore[arg-type]
    assert delete.get(1) == [key] and delete.get(2, [b""]) == [value]
    cmp = fields(wire.compare(key, target, result, number, value))
    tag = {wire.TARGET_VERSION: 4, wire.TARGET_CREATE: 5, wire.TARGET_MOD: 6, wire.TARGET_LEASE: 8}[target]
    assert cmp.get(1, [0]) == [result] and cmp.get(2, [0]) == [target] and cmp[3] == [key]
    assert cmp[tag] == [number] and cmp.get(64, [b""]) == [value]
    by_value = fields(wire.compare(key, wire.TARGET_VALUE, result, value))
    assert by_value[2] == [wire.TARGET_VALUE] and by_value[7] == [value]
    txn = fields(wire.txn_request([key], [value, key], [wire.request_txn(key)]))
    assert txn.get(1) == [key] and txn.get(2) == [value, key] and fields(txn[3][0])[4] == [key]  # type: ignore[arg-type]


def test_progress_request_safety_by_version() -> None:
    # 3.4.24's watch code is 3.4.23's: the ordered answer to a progress request came in 3.4.25.
    assert not safe_progress_requests("3.4.23") and not safe_progress_requests("3.4.24")
    assert safe_progress_requests("3.4.25") and safe_progress_requests("3.5.8") and safe_progress_requests("3.6.0")
    assert not safe_progress_requests("3.5.7") and not safe_progress_requests("garbage")


@pytest.mark.timeout(30)
def test_unreachable_cluster_fails_fast() -> None:
    from nbdb.testing.ports import free_port

    began = time.monotonic()
    with pytest.raises(errors.BackendUnavailableError):
        nbdb.connect(f"etcd://127.0.0.1:{free_port()},127.0.0.1:{free_port()}?timeout=0.5")
    assert time.monotonic() - began < 20


# ---------------------------------------------------------------- single member


@pytest.mark.timeout(60)
def test_crud_watch_and_dead_first_endpoint(etcd_server: EtcdServer) -> None:  # noqa: F811
    from nbdb.testing.ports import free_port

    url = f"etcd://127.0.0.1:{free_port()},{etcd_server.members[0].address}"
    with _connect(url) as db:
        parent = db.create(KitParent(name="p"))
        assert db.get(KitParent, parent.id).name == "p"
        assert db.backend.client.current_endpoint() == etcd_server.members[0].address  # type: ignore[attr-defined]
        with db.watch(KitParent) as watch:
            db.update(parent.model_copy(update={"size": 3}))
            events = []
            assert eventually(lambda: bool(events.extend(watch.poll(0.2)) or events))
            assert events[0].kind == EventKind.UPDATED and events[0].new.size == 3


def _watch_once(backend: EtcdBackend, since: int) -> None:
    """Open a watch of KitParent from ``since`` and poll it once (bounded), then close it."""
    stream = backend.watch(["KitParent"], None, since)
    try:
        stream.poll(3)
    finally:
        stream.close()


@pytest.mark.timeout(60)
def test_a_watch_below_its_resume_point_is_not_resumed_unchecked_when_the_read_fails(
    etcd_server: EtcdServer,  # noqa: F811
) -> None:
    """A watch confirmed below its resume point asks a linearizable read whether the store lost data.

    The read failed (a fault injected on the read path alone: the member serving the watch answers), and
    the watch went on from its old point: had the store gone back, its first new commits were skipped for
    good. It fails the stream instead (its consumer opens it again), and the next open checks again.
    """
    with _connect(etcd_server.url) as db:
        backend = db.backend
        assert isinstance(backend, EtcdBackend)
        db.create(KitParent(name="a"))
        ahead = backend.current_revision() + 50  # a resume point this store never reached: it lost data
        reads = 0

        def unreachable() -> Any:
            nonlocal reads
            reads += 1
            raise errors.BackendUnavailableError("injected: the linearizable read reached no quorum")

        backend.header_now = unreachable  # type: ignore[method-assign]
        try:
            with pytest.raises(errors.BackendUnavailableError, match="opening it again"):
                _watch_once(backend, ahead)
        finally:
            del backend.header_now
        assert reads == 1
        with pytest.raises(errors.HistoryGoneError):  # the read answers again: the check decides
            _watch_once(backend, ahead)


@pytest.mark.timeout(60)
def test_watch_from_compacted_revision_is_history_gone(etcd_server: EtcdServer) -> None:  # noqa: F811
    with _connect(etcd_server.url) as db:
        backend = db.backend
        assert isinstance(backend, EtcdBackend)
        first = db.create(KitParent(name="a"))
        old = backend.current_revision()
        db.update(first.model_copy(update={"size": 1}))
        backend.compact_history()
        stream = backend.watch(["KitParent"], None, old - 1)
        try:
            with pytest.raises(errors.HistoryGoneError):
                stream.poll(5)
        finally:
            stream.close()
        # Compacting again at or below the compacted revision is harmless.
        backend.compact_keys(old)


@pytest.mark.timeout(60)
def test_gap_free_resume_from_revision(etcd_server: EtcdServer) -> None:  # noqa: F811
    with _connect(etcd_server.url) as db:
        watch = db.watch(KitParent)
        made = [db.create(KitParent(name=f"n{i}")) for i in range(20)]
        seen: list[Any] = []
        while len(seen) < 5:
            seen.append(next(watch))
        resume = watch.revision
        watch.close()
        with db.watch(KitParent, since=resume) as rest:
            while len(seen) < 20:
                seen.append(next(rest))
        assert [e.id for e in seen] == [m.id for m in made]


@pytest.mark.timeout(60)
def test_a_stream_given_a_sink_hands_every_change_over_on_its_reader_thread_at_its_revision(
    etcd_server: EtcdServer,  # noqa: F811
) -> None:
    """The shared watch's path, off the polling thread, each change at its commit's revision.

    Order, whole transactions and each change once: the kit's
    ``test_a_stream_given_a_sink_hands_over_every_change_once_in_order``.
    """
    with _connect(etcd_server.url) as db:
        backend = db.backend
        expected: list[tuple[uuid.UUID, int, bool]] = []  # one writer: its revision is the store's after it

        def write() -> None:
            made = []
            for i in range(2):
                made.append(db.create(KitParent(name=f"s{i}")))
                expected.append((made[-1].id, backend.current_revision(), False))
            with db.transaction() as txn:
                together = [txn.create(KitParent(name=f"t{i}")) for i in range(2)]
            expected.extend((t.id, backend.current_revision(), False) for t in together)
            db.delete(made[1])
            expected.append((made[1].id, backend.current_revision(), True))

        got = sink_deliveries(db, KitParent, write)
        assert got is not None
        given, polled = got
        assert polled == []
        assert sorted((c.id, c.revision, c.new is None) for _, changes, _ in given for c in changes) == sorted(expected)
        assert any(name == "nbdb-etcd-watch" for name, _, _ in given)


class _SinkBroke(Exception):
    pass


@pytest.mark.timeout(60)
def test_a_sink_that_fails_makes_poll_raise_and_the_change_waits_for_poll(
    etcd_server: EtcdServer,  # noqa: F811
) -> None:
    """A failing sink is reported where failures are (``poll``), not by a watch re-opened without end.

    The change it failed on is handed over again by ``poll``, and nothing after it
    reaches the sink from the reader thread first: it still gets every change once, in order.
    """
    with _connect(etcd_server.url) as db:
        backend = db.backend
        stream = backend.watch(["KitParent"], None, backend.current_revision())
        given: list[tuple[uuid.UUID, str]] = []
        fails = [True]

        def sink(changes: list[Any], revision: int) -> None:
            if fails[0]:
                fails[0] = False
                raise _SinkBroke("the sink's first call fails")
            given.extend((c.id, threading.current_thread().name) for c in changes)

        assert stream.deliver_to(sink)
        try:
            first = db.create(KitParent(name="first"))
            second = db.create(KitParent(name="second"))
            raised = []
            deadline = time.monotonic() + 20
            while len(given) < 2 and time.monotonic() < deadline:
                try:
                    assert stream.poll(0.2) == []  # everything is handed to the sink
                except _SinkBroke as exc:
                    raised.append(exc)
        finally:
            stream.close()
        assert len(raised) == 0  # the reader thread's failure was retried by poll, which succeeded
        assert [i for i, _ in given] == [first.id, second.id]
        assert all(name != "nbdb-etcd-watch" for _, name in given)  # both through poll, in order


@pytest.mark.timeout(60)
def test_a_sink_that_keeps_failing_is_raised_by_poll(etcd_server: EtcdServer) -> None:  # noqa: F811
    with _connect(etcd_server.url) as db:
        backend = db.backend
        stream = backend.watch(["KitParent"], None, backend.current_revision())

        def sink(changes: list[Any], revision: int) -> None:
            raise _SinkBroke("always")

        assert stream.deliver_to(sink)
        try:
            db.create(KitParent(name="one"))
            deadline = time.monotonic() + 20
            with pytest.raises(_SinkBroke):
                while time.monotonic() < deadline:
                    stream.poll(0.2)
        finally:
            stream.close()


@pytest.mark.timeout(60)
def test_a_long_range_is_read_in_doubling_pages_at_one_revision(
    etcd_server: EtcdServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pages grow from the first size to the cap; every key comes once, in order, at the first page's revision."""
    from nbdb.backends.etcd import backend as etcd_backend

    monkeypatch.setattr(etcd_backend, "_PAGE", 3)
    monkeypatch.setattr(etcd_backend, "_MAX_PAGE", 10)
    with _connect(etcd_server.url) as db:
        backend = db.backend
        assert isinstance(backend, EtcdBackend)
        with db.transaction() as txn:
            made = [txn.create(KitParent(name=f"n{i}")) for i in range(50)]
        client = backend.client
        limits: list[int] = []
        real_range = client.range

        def range_(start: bytes, end: bytes, *, limit: int, revision: int) -> Any:
            limits.append(limit)
            if len(limits) == 2:  # between pages: a later write must not show in this read
                db.create(KitParent(name="late"))
            return real_range(start, end, limit=limit, revision=revision)

        monkeypatch.setattr(client, "range", range_)
        kvs, revision = backend.range_keys(backend.layout.object_prefixes(["KitParent"], None))
        monkeypatch.undo()
        assert limits[0] == 3 and max(limits) <= 10  # 50 left after the first page: read as sub-ranges of ids
        keys = [kv.key for kv in kvs]
        assert keys == sorted(keys) and len(set(keys)) == 50
        assert {backend.layout.parse_object(k)[2] for k in keys} == {m.id for m in made}  # type: ignore[index]
        assert revision < backend.current_revision()


def _shared(a: str, b: str) -> int:
    """The length of the leading characters ``a`` and ``b`` share."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def _clustered_ids(counted: int) -> st.SearchStrategy[list[str]]:
    """Ids clustered on a few leading digits, some not hex at all, and ``counted`` hex-led ones (as a UUID is)."""
    return st.lists(
        st.tuples(
            st.sampled_from(["", "0", "00", "0000", "7fff", "a7", "a7a7", "f", "ff", "-", "g", "zz", "F"]),
            st.text("0123456789abcdef-", min_size=1, max_size=6),
        ),
        min_size=1,
        max_size=6,
    ).flatmap(
        lambda clusters: st.tuples(
            st.lists(st.sampled_from(clusters).map(lambda c: c[0] + c[1]), min_size=0, max_size=400),
            st.sampled_from(["", "0", "a7", "a7a7", "ff", "7fff"]),
        ).map(lambda drawn: sorted(set(drawn[0]) | {f"{drawn[1]}{i:04x}" for i in range(counted)}))
    )


_CLUSTERED_IDS = _clustered_ids(600)
_FIRST_STEP_DENSE = sorted(
    {f"0000{i:02x}" for i in range(40)} | {"7fff-a", "-x", "g1", "0001"} | {f"{i:04x}" for i in range(0, 65536, 97)}
)


def _count_walks(backend: EtcdBackend) -> list[list[int]]:
    """Each request's keys etcd walked from now on (each range's ``count``, ranges in a transaction too), through
    a wrapper of nbdb's own client's ``call``; ``del backend.client.call`` ends it."""
    walked: list[list[int]] = []
    real_call = backend.client.call

    def call(method: str, request: bytes | None, what: str, **kwargs: Any) -> tuple[bytes, bool]:
        reply, maybe = real_call(method, request, what, **kwargs)
        if what == "range":
            walked.append([wire.parse_range(reply)[3]])
        elif what == "transaction":
            walked.append(wire.range_counts(reply))
        return reply, maybe

    backend.client.call = call  # type: ignore[method-assign]
    return walked


def _table_of(backend: EtcdBackend, ids: list[str]) -> tuple[str, list[str]]:
    """A table prefix of keys named by ``ids`` (value b"v"), with neighbours' keys around it; it and all keys."""
    table = f"{_ns()}o/t/Tab/"
    neighbours = [table[:-1], table[:-1] + ".x", table[:-1] + "0", table[:-1] + "0/a", table[:-1] + "_/0a"]
    keys = sorted({table + i for i in ids} | set(neighbours))
    for at in range(0, len(keys), 100):
        assert backend.commit_keys([], {k: b"v" for k in keys[at : at + 100]}, []) is not None
    return table, keys


@pytest.mark.timeout(300)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=_CLUSTERED_IDS)
@example(ids=_FIRST_STEP_DENSE)  # a large table's first step (an id in 7fff…), itself more than a page
def test_a_range_read_in_sub_ranges_is_exact_and_each_page_counts_a_few_pages(
    etcd_server: EtcdServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    ids: list[str],
) -> None:
    """etcd 3.4 counts a page's keys to the range's end: a long range is read as sub-ranges of its ids' digits.

    The keys (ids clustered on a few leading digits, some not hex at all) come back exactly as one read of the
    whole range at the same revision gives them, the neighbours' keys outside it never; and the keys the server
    walks over all requests are a few times the range's (paging the whole range walks it once per page).
    """
    from nbdb.backends.etcd import backend as etcd_backend

    monkeypatch.setattr(etcd_backend, "_PAGE", 4)
    monkeypatch.setattr(etcd_backend, "_MAX_PAGE", 16)
    with _connect(etcd_server.url) as db:
        backend = db.backend
        assert isinstance(backend, EtcdBackend)
        table, keys = _table_of(backend, ids)
        walked: list[int] = []
        real_range = backend.client.range

        def range_(start: bytes, end: bytes, *, limit: int, revision: int) -> Any:
            header, kvs, more, count = real_range(start, end, limit=limit, revision=revision)
            walked.append(count)
            return header, kvs, more, count

        monkeypatch.setattr(backend.client, "range", range_)
        got, revision = backend.range_keys([table])
        monkeypatch.undo()
        _, whole, _, _ = backend.client.range(table.encode(), wire.prefix_end(table.encode()), revision=revision)
        assert [(kv.key, kv.value) for kv in got] == [(kv.key.decode(), kv.value) for kv in whole]
        assert [kv.key for kv in got] == sorted(k for k in keys if k.startswith(table))
        # Each level of sub-ranges walks the range about once, and ids split one level per digit that 16 of
        # them (the most plain pages read at _PAGE 4) share; paging the whole range walks it once a page
        # (about 20 times the range here, which holds 600 ids at least).
        ordered = sorted(ids)
        shared = max(_shared(a, b) for a, b in zip(ordered, ordered[16:], strict=False))
        assert sum(walked) <= (shared + 4) * len(got)


@pytest.mark.timeout(300)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=_clustered_ids(1500), limit=st.integers(2, 6))
@example(ids=_FIRST_STEP_DENSE, limit=3)
def test_pages_on_from_a_key_are_exact_and_walk_about_their_own_keys(
    etcd_server: EtcdServer,  # noqa: F811
    ids: list[str],
    limit: int,
) -> None:
    """etcd 3.4 counts a page's keys to the range's end: a page on from a key is read in steps of the ids' digits.

    Paging a range (ids clustered on a few leading digits, some not hex at all, neighbours' keys around its
    prefix) gives exactly the slices of one read of the whole range at the first page's revision, a write
    between pages unseen; and the keys the server walks over all pages are a few times the range's (each page
    counting the range's rest walks it about once per page: N / 2 / limit times, 125 at least here).
    """
    with _connect(etcd_server.url) as db:
        backend = db.backend
        assert isinstance(backend, EtcdBackend)
        table, keys = _table_of(backend, ids)
        client, walked = backend.client, _count_walks(backend)
        try:
            pages, revision, after = [], 0, None
            while True:
                page, revision = backend.range_page(table, after, limit, revision)
                pages.append([(kv.key, kv.value) for kv in page])
                if len(pages) == 2:  # a write between pages: later than the listing's revision, unseen
                    assert backend.commit_keys([], {table + "5late": b"v"}, []) is not None
                if len(page) < limit:
                    break
                after = page[-1].key
        finally:
            del client.call
        _, whole, _, _ = client.range(table.encode(), wire.prefix_end(table.encode()), revision=revision)
        expected = [(kv.key.decode(), kv.value) for kv in whole]
        assert [kv for page in pages for kv in page] == expected
        assert [len(page) for page in pages[:-1]] == [limit] * (len(pages) - 1)
        assert [k for k, _ in expected] == sorted(k for k in keys if k.startswith(table))
        # The first page counts the range (as a list's does) or its first step; each later one its steps, each at
        # most 16 times as wide as the last (the range's keys that are no hex ids, in a step or two, once).
        assert sum(map(sum, walked[1:])) <= 16 * (limit + 1) * len(pages) + 4 * len(expected)


@contextlib.contextmanager
def _pages_of_16(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[EtcdBackend]:
    """A backend at ``url`` that reads ranges in pages of 16 keys, up to 64: tables of some thousands are long."""
    from nbdb.backends.etcd import backend as etcd_backend

    monkeypatch.setattr(etcd_backend, "_PAGE", 16)
    monkeypatch.setattr(etcd_backend, "_MAX_PAGE", 64)
    with _connect(url) as db:
        backend = db.backend
        assert isinstance(backend, EtcdBackend)
        yield backend


@pytest.mark.timeout(120)
def test_a_large_table_s_first_page_counts_about_its_own_keys_and_a_short_one_s_is_one_request(
    etcd_server: EtcdServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """etcd 3.4 counts every key from a range's start to its end: a table's first page read as one range from its
    start counts the whole table (a million keys: past the 2 s request). A table whose ids spread as UUIDs' do
    (one starting with 7fff, the probe's digits) is listed, whole or page by page, without a request counting more
    than a sixteenth of it, exactly; a short table's only page is still one request.
    """
    spread = 2048
    with _pages_of_16(etcd_server.url, monkeypatch) as backend:
        table, keys = _table_of(backend, _spread_ids(spread))
        short, short_keys = _table_of(backend, ["a", "b7", "c8"])
        client = backend.client
        expected = [k for k in keys if k.startswith(table)]
        walked = _count_walks(backend)
        try:
            got, _ = backend.range_keys([table])
            assert [kv.key for kv in got] == expected
            listed = max(map(max, walked))
            walked.clear()
            pages, revision, after = [], 0, None
            while True:
                page, revision = backend.range_page(table, after, 100, revision)
                pages += [kv.key for kv in page]
                if len(page) < 100:
                    break
                after = page[-1].key
            assert pages == expected
            paged = max(map(max, walked))
            walked.clear()
            in_short = [k for k in short_keys if k.startswith(short)]
            assert [kv.key for kv in backend.range_keys([short])[0]] == in_short
            assert [kv.key for kv in backend.range_page(short, None, 100, 0)[0]] == in_short
            assert len(walked) == 2  # one request each
        finally:
            del client.call
        # Before: the first page of each counted the whole table (2,048 keys).
        assert listed <= spread // 16 + 16 and paged <= spread // 16 + 16, (listed, paged)


@pytest.mark.timeout(60)
def test_a_short_table_with_an_id_in_the_probe_s_digits_is_read_as_a_short_one(
    etcd_server: EtcdServer,  # noqa: F811
) -> None:
    """A table whose ids include one starting with 7fff (the digits the first page's probe looks at for a large
    table; one random id in 65,536) was read as a large one: its first step, then the rest in 16 sub-ranges one
    request after another (18 requests for a list of 3 keys). The probe's range (ids in 7f… and 80…, one
    random id in 128) says it is short: its list and its listing's first page are two requests each, exact, as
    are a table of 1,024 ids spread as UUIDs' (9 in 7f… and 80…)'s."""
    with _connect(etcd_server.url) as db:
        backend = db.backend
        assert isinstance(backend, EtcdBackend)
        tables = [_table_of(backend, ["7fff-a", "a7", "b"]), _table_of(backend, _spread_ids(1024))]
        walked = _count_walks(backend)
        try:
            for table, keys in tables:
                expected = [k for k in keys if k.startswith(table)]
                walked.clear()
                assert [kv.key for kv in backend.range_keys([table])[0]] == expected
                assert [kv.key for kv in backend.range_page(table, None, 100, 0)[0]] == expected[:100]
                assert len(walked) == 4, walked
        finally:
            del backend.client.call


@pytest.mark.timeout(60)
def test_a_short_table_of_time_ordered_uuid1_ids_across_7fff_is_read_as_a_short_one(
    etcd_server: EtcdServer,  # noqa: F811
) -> None:
    """UUIDv1 ids start with the low 32 bits of a 100 ns clock: ids made within ~1.7 s share their first two hex
    digits, and the clock passes 7fff… (6.5 ms) then 80… (1.7 s) every 429 s. A table of 100 such ids made in a
    burst across that moment holds one id in 7fff… and 99 in 80…: the probe range's count (100, read as 25,600
    spread ids) took it for a large one, its first step then the rest in 16 sub-ranges one request after another
    (18 requests for a list of 100 keys, as on main), where a short table's list is 2. Now the probe range starts
    at 7f…, and none of its first keys lies below 7fff… (random ids spread that many put some 50 there): it is
    read as a short one."""
    ids = [str(uuid.UUID(fields=(0x7FFFFF00, 0x1234, 0x11EF, 0x80, 0x11, 0x0242AC120002)))]
    ids += [
        str(uuid.UUID(fields=(0x80000000 + 160_000 * i, 0x1234, 0x11EF, 0x80, 0x11, 0x0242AC120002))) for i in range(99)
    ]
    with _connect(etcd_server.url) as db:
        backend = db.backend
        assert isinstance(backend, EtcdBackend)
        table, keys = _table_of(backend, ids)
        walked = _count_walks(backend)
        try:
            assert [kv.key for kv in backend.range_keys([table])[0]] == [k for k in keys if k.startswith(table)]
            assert len(walked) == 2, walked
        finally:
            del backend.client.call


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 2_000), seed=st.integers(0, 2**32), large=st.integers(100_000, 400_000))
def test_the_probe_range_tells_a_short_table_of_random_ids_from_a_large_one(n: int, seed: int, large: int) -> None:
    """A table of random UUIDs with one id in 7fff… is read as a large one only if the ids in its probe range
    (7f… and 80…) say it holds more than a few pages: never for 2,000 ids or fewer, always for 100,000 or more
    (which a plain first page, counting them all, would keep waiting hundreds of ms or past the timeout). Ids
    clustered from 7fff… on (UUIDv1s made in one burst across that moment) are read as a short table unless the
    range itself holds more than a few pages."""
    from nbdb.backends.etcd.backend import _BEFORE, _PAGE, _PROBE_END, _PROBE_FROM, _SPLIT_PAGES, _large

    base = b"p/o/t/Tab/"
    rng = random.Random(seed)

    def probed(ids: list[bytes]) -> tuple[list[wire.KV], int]:  # the probe range's first keys, and its count
        found = sorted(i for i in ids if _PROBE_FROM <= i < _PROBE_END)
        return [wire.KV(base + i, 1, 1, 1, b"", 0) for i in found[:_BEFORE]], len(found)

    for size in (n, large):
        ids = [b"7fff-%x" % rng.getrandbits(64)] + [b"%04x" % rng.getrandbits(16) for _ in range(size - 1)]
        assert _large(base, *probed(ids)) is (size == large), (size, probed(ids)[1])
    for size in (n, _SPLIT_PAGES * _PAGE + n):  # clustered: an id in 7fff…, the rest in 80…
        first, count = probed([b"7fff-0"] + [b"80%06x" % rng.getrandbits(24) for _ in range(size - 1)])
        assert _large(base, first, count) is (count > _SPLIT_PAGES * _PAGE), (size, count)


def _spread_ids(spread: int) -> list[str]:
    """``spread`` ids spread over their first four hex digits as UUIDs' are, one of them where the probe looks."""
    return [f"{i * 65536 // spread:04x}-{i}" for i in range(spread - 1)] + ["7fff-0"]


_CLUSTERED_SHAPES = {
    # A caller's counter as UUIDs (00000000-0000-0000-0000-000000000001…): every id shares 31 characters.
    "counter": lambda i: str(uuid.UUID(int=i + 1)),
    # Time-ordered (UUIDv7: 48 bits of milliseconds, then version 7 and random bits): a shared leading prefix.
    "uuid7": lambda i: str(uuid.UUID(int=((1_796_515_200_000 + 10 * i) << 80) | (7 << 76) | (i * 7919 % 4096) << 64)),
    # Names that are no hex ids past their first characters.
    "name": lambda i: f"port-{i}",
}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("shape", sorted(_CLUSTERED_SHAPES))
def test_a_table_of_ids_that_share_a_prefix_is_read_walking_a_few_times_its_keys(
    etcd_server: EtcdServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    shape: str,
) -> None:
    """etcd 3.4 counts every key from a range's start to its end. Ids that share leading characters (counters'
    UUIDs, time-ordered ones, names) sat in one sub-range of each digit, so splitting the rest of a long range
    one digit deeper at a time counted the whole table once a shared digit (a list of 100,000 counters' ids
    walked 13 times the table). The rest is now read upwards from the page, exactly; the keys etcd walks over
    the whole list are a few times the table's, and no request after the first page counts it whole.
    """
    total = 3000
    with _pages_of_16(etcd_server.url, monkeypatch) as backend:
        table, keys = _table_of(backend, [_CLUSTERED_SHAPES[shape](i) for i in range(total)])
        client = backend.client
        walked = _count_walks(backend)
        try:
            got, revision = backend.range_keys([table])
        finally:
            del client.call
        _, whole, _, _ = client.range(table.encode(), wire.prefix_end(table.encode()), revision=revision)
        assert [(kv.key, kv.value) for kv in got] == [(kv.key.decode(), kv.value) for kv in whole]
        assert [kv.key for kv in got] == sorted(k for k in keys if k.startswith(table))
        # The first page counts the table (no cheap read tells a large table of such ids from a short one: see
        # _first_pages); the rest about twice. Before: 9 to 32 times the table (a count of it a shared digit).
        later = [n for counts in walked[1:] for n in counts]
        assert sum(walked[0]) <= total and sum(later) <= 3 * total, (sum(later), len(walked))
        assert max(later) <= total // 2, max(later)


def _page_through(backend: EtcdBackend, table: str, limit: int) -> tuple[list[list[tuple[str, bytes]]], int]:
    """Every page of ``limit`` keys of ``table`` read on from the last page's key at one revision; them and it."""
    pages, revision, after = [], 0, None
    while True:
        page, revision = backend.range_page(table, after, limit, revision)
        pages.append([(kv.key, kv.value) for kv in page])
        if len(page) < limit:
            return pages, revision
        after = page[-1].key


@pytest.mark.timeout(180)
@pytest.mark.parametrize("shape", sorted(_CLUSTERED_SHAPES))
def test_pages_on_from_a_key_of_ids_that_share_a_prefix_walk_a_few_times_the_table(
    etcd_server: EtcdServer,  # noqa: F811
    shape: str,
) -> None:
    """etcd 3.4 counts every key from a range's start to its end. A page on from a key was read in steps of the
    ids' first 12 hex digits, which ids that share them (counters' UUIDs, time-ordered ones, names) do not spread:
    its first step held the rest of the table, counted for each page (3,000 ids in pages of 50: some 90,000
    keys walked). Pages are now read in steps over all the last page's key's hex digits: exact, at one revision,
    and the keys etcd walks over all pages after the first are a few times the table's.
    """
    total, limit = 3000, 50
    with _connect(etcd_server.url) as db:
        backend = db.backend
        assert isinstance(backend, EtcdBackend)
        table, keys = _table_of(backend, [_CLUSTERED_SHAPES[shape](i) for i in range(total)])
        client, walked = backend.client, _count_walks(backend)
        try:
            pages, revision = _page_through(backend, table, limit)
        finally:
            del client.call
        _, whole, _, _ = client.range(table.encode(), wire.prefix_end(table.encode()), revision=revision)
        assert [kv for page in pages for kv in page] == [(kv.key.decode(), kv.value) for kv in whole]
        assert [len(page) for page in pages] == [limit] * (total // limit) + [0]
        assert [k for page in pages for k, _ in page] == sorted(k for k in keys if k.startswith(table))
        # The first page counts the table, as a list's does (see _first_pages); the later ones 1 to 6 times it.
        later = sum(map(sum, walked[1:]))
        assert later <= 8 * total, later


_ID_SHAPES = {
    **_CLUSTERED_SHAPES,
    "uuid4": lambda i: str(uuid.UUID(int=random.Random(i).getrandbits(128), version=4)),
    "decimal": lambda i: str(i),
    "deep": lambda i: "a" * (i % 7) + f"-{i:x}",
}


@pytest.mark.timeout(300)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shapes=st.lists(st.sampled_from(sorted(_ID_SHAPES)), min_size=1, max_size=3, unique=True),
    offset=st.integers(0, 5000),
    count=st.integers(1, 300),
    limit=st.integers(2, 60),
)
def test_pages_on_from_a_key_of_any_ids_are_one_read_of_the_range(
    etcd_server: EtcdServer,  # noqa: F811
    shapes: list[str],
    offset: int,
    count: int,
    limit: int,
) -> None:
    """Pages on from a key (read upwards from it, or in steps of the ids' digits for random UUIDs), concatenated,
    are exactly one read of the table at the listing's revision, whatever the ids' shapes mixed in the table."""
    ids = [_ID_SHAPES[shape](offset + i) for shape in shapes for i in range(count)]
    with _connect(etcd_server.url) as db:
        backend = db.backend
        assert isinstance(backend, EtcdBackend)
        table, keys = _table_of(backend, ids)
        pages, revision = _page_through(backend, table, limit)
        _, whole, _, _ = backend.client.range(table.encode(), wire.prefix_end(table.encode()), revision=revision)
        assert [kv for page in pages for kv in page] == [(kv.key.decode(), kv.value) for kv in whole]
        assert [len(page) for page in pages[:-1]] == [limit] * (len(pages) - 1)
        assert [k for page in pages for k, _ in page] == sorted(k for k in keys if k.startswith(table))


@pytest.mark.timeout(120)
def test_the_first_pages_of_several_tables_count_no_large_table_whole(
    etcd_server: EtcdServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cache of several tables, or a table spread over topics, reads the first page of each range together: each
    read counted its whole table (1M ports beside: seconds of etcd, past the default 2 s request). Now no request
    counts more than a sixteenth of the large table, the keys are exact and in order, as are the first pages of a
    listing across them; and tables none of which is large still take one request.
    """
    spread = 2048
    with _pages_of_16(etcd_server.url, monkeypatch) as backend:
        large, large_keys = _table_of(backend, _spread_ids(spread))
        short, short_keys = _table_of(backend, ["a", "b7", "c8", "7ff", "8"])
        counters, counter_keys = _table_of(backend, [f"{i:08x}" for i in range(12)])
        tables = [short, large, counters]
        expected = [
            [k for k in keys if k.startswith(t)]
            for t, keys in zip(tables, (short_keys, large_keys, counter_keys), strict=True)
        ]
        client = backend.client
        walked = _count_walks(backend)
        try:
            got, _ = backend.range_keys(tables)
            assert [kv.key for kv in got] == [k for keys in expected for k in keys]
            listed = max(map(max, walked))
            walked.clear()
            pages, _ = backend.range_pages([(t, None) for t in tables], 10, 0)
            assert [[kv.key for kv in page] for page in pages] == [keys[:10] for keys in expected]
            paged = max(map(max, walked))
            walked.clear()
            assert [kv.key for kv in backend.range_keys([short, counters])[0]] == expected[0] + expected[2]
            assert len(walked) == 1  # one request
        finally:
            del client.call
        # Before: the first pages' transaction counted the whole large table (2,048 keys).
        assert listed <= spread // 16 + 16 and paged <= spread // 16 + 16, (listed, paged)


def _proposals(server: EtcdServer) -> float:
    """etcd's count of raft proposals committed (its /metrics): a write's, or a request etcd did not take as a read."""
    import re
    import urllib.request

    text = urllib.request.urlopen(server.members[0].extra["client_url"] + "/metrics", timeout=10).read().decode()
    found = re.search(r"^etcd_server_proposals_committed_total (\S+)", text, re.M)
    assert found is not None
    return float(found.group(1))


@pytest.mark.timeout(120)
def test_the_first_pages_of_several_tables_are_reads_to_etcd(
    etcd_server: EtcdServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Several tables' first pages, a large one among them or not, reach etcd as a read: not through raft (a
    transaction of nested ones is no read to etcd, whatever they hold: a proposal and a disk write per list)."""
    with _pages_of_16(etcd_server.url, monkeypatch) as backend:
        tables = [_table_of(backend, ids) for ids in (_spread_ids(2048), ["a", "b7", "c8"], ["d", "e"])]
        (large, large_keys), (short, short_keys), (other, other_keys) = (
            (table, [k for k in keys if k.startswith(table)]) for table, keys in tables
        )
        before = _proposals(etcd_server)
        for _ in range(5):
            assert [kv.key for kv in backend.range_keys([short, other])[0]] == short_keys + other_keys
            assert [kv.key for kv in backend.range_keys([short, large])[0]] == short_keys + large_keys
            pages, _ = backend.range_pages([(t, None) for t in (short, large, other)], 10, 0)
            assert [[kv.key for kv in page] for page in pages] == [short_keys[:10], large_keys[:10], other_keys[:10]]
        assert _proposals(etcd_server) == before


@pytest.mark.timeout(600)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tables=st.lists(st.one_of(_clustered_ids(40), st.just(_spread_ids(256))), min_size=2, max_size=4),
    ops=st.sampled_from([4, 6, 128]),
    limit=st.integers(1, 20),
)
@example(tables=[_spread_ids(256), ["a", "7fff"], [f"{i:08x}" for i in range(30)], []], ops=4, limit=3)
def test_several_tables_read_together_give_every_key_once_in_order(
    etcd_server: EtcdServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tables: list[list[str]],
    ops: int,
    limit: int,
) -> None:
    """Tables of ids of every shape (UUID-like, clustered, counters, not hex; large or short, read together in
    transactions of up to ``ops`` operations): a read of them all gives each table's keys exactly as one read of
    it at the same revision does, in the order the prefixes were asked; the first pages of a listing across them
    are each table's first ``limit`` keys, at one revision."""
    with _pages_of_16(f"{etcd_server.url}?max_txn_ops={ops}", monkeypatch) as backend:
        prefixes = [_table_of(backend, ids)[0] for ids in tables]

        def whole(revision: int) -> list[list[tuple[str, bytes]]]:
            out = []
            for t in prefixes:
                _, kvs, _, _ = backend.client.range(t.encode(), wire.prefix_end(t.encode()), revision=revision)
                out.append([(kv.key.decode(), kv.value) for kv in kvs])
            return out

        got, revision = backend.range_keys(prefixes)
        assert backend.commit_keys([], {prefixes[0] + "5late": b"v"}, []) is not None  # later: unseen below
        assert [(kv.key, kv.value) for kv in got] == [kv for keys in whole(revision) for kv in keys]
        pages, revision = backend.range_pages([(t, None) for t in prefixes], limit, revision)
        assert [[(kv.key, kv.value) for kv in page] for page in pages] == [keys[:limit] for keys in whole(revision)]


@pytest.mark.timeout(60)
def test_topic_watch_reads_its_ranges_only(etcd_server: EtcdServer) -> None:  # noqa: F811
    with _connect(etcd_server.url) as db:
        with db.watch(KitParent, topics=["a", "c"]) as watch:
            db.create(KitParent(name="x", topic="b"))
            wanted = [db.create(KitParent(name="y", topic="c")), db.create(KitParent(name="z", topic="a"))]
            db.create(KitParent(name="w", topic="d"))
            got: list[Any] = []
            assert eventually(lambda: bool(got.extend(watch.poll(0.2))) or len(got) >= 2)
            assert [e.id for e in got] == [w.id for w in wanted]


@pytest.mark.timeout(90)
def test_single_member_restart_keeps_data_and_watch(server_factory: Callable[..., Server]) -> None:  # noqa: F811
    server = server_factory("etcd")
    url = server.url + "?timeout=1"
    with _connect(url) as db, db.cache(KitParent) as cache:
        assert cache.wait_synced(10)
        before = db.create(KitParent(name="before"))
        assert eventually(lambda: cache.get(KitParent, before.id) is not None)
        server.members[0].restart()
        after = None
        deadline = time.monotonic() + 20
        while after is None and time.monotonic() < deadline:
            try:
                after = db.create(KitParent(name="after"))
            except errors.BackendUnavailableError:
                time.sleep(0.2)
        assert after is not None
        assert db.get(KitParent, before.id).name == "before"  # durable across the restart
        assert eventually(lambda: cache.get(KitParent, after.id) is not None, timeout=20)
        # etcd keeps its history across a restart: the watch resumed, no re-list.
        assert cache.relists == 0


class _EtcdWithFlags(EtcdServer):
    """etcd started with extra flags (and optionally TLS on the client port)."""

    def __init__(self, flags: list[str], tls: TlsFiles | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.flags = flags
        self.tls = tls

    def _process(self, argv: list[str], member_dir: Path, env: dict[str, str] | None = None) -> Any:
        argv = list(argv)
        if self.tls is not None:
            for i, arg in enumerate(argv):
                if i and argv[i - 1] in ("--listen-client-urls", "--advertise-client-urls"):
                    argv[i] = arg.replace("http://", "https://")
            argv += [
                "--cert-file", str(self.tls.server_cert), "--key-file", str(self.tls.server_key),
                "--client-cert-auth", "--trusted-ca-file", str(self.tls.ca_cert),
            ]  # fmt: skip
        return super()._process([*argv, *self.flags], member_dir, env)

    def member_ready(self, member: Any) -> bool:
        if self.tls is None:
            return super().member_ready(member)
        context = self.tls.client_context(with_client_cert=True)
        reply = http_json(f"https://{member.address}/health", ssl_context=context)
        return bool(reply.get("health") == "true")


@pytest.fixture
def custom_etcd(tmp_path: Path) -> Iterator[Callable[..., EtcdServer]]:
    from nbdb.testing.servers import require_server

    require_server("etcd")
    started: list[EtcdServer] = []

    def start(flags: list[str], tls: TlsFiles | None = None) -> EtcdServer:
        server = _EtcdWithFlags(flags, tls, base_dir=tmp_path / f"etcd{len(started)}")
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.mark.timeout(60)
def test_progress_notifications_move_an_idle_watch(custom_etcd: Callable[..., EtcdServer]) -> None:
    server = custom_etcd(["--experimental-watch-progress-notify-interval", "200ms"])
    with _connect(server.url) as quiet, _connect(server.url) as busy:
        backend = quiet.backend
        start = backend.current_revision()
        stream = backend.watch(["KitParent"], None, start)
        try:
            for i in range(3):
                busy.create(KitParent(name=f"elsewhere{i}"))
            target = busy.backend.current_revision()
            assert target > start

            def advanced() -> bool:
                assert stream.poll(0.2) == []
                return stream.revision >= target

            assert eventually(advanced, timeout=15)
        finally:
            stream.close()


@pytest.mark.timeout(60)
def test_lock_lost_when_its_lease_goes(etcd_server: EtcdServer) -> None:  # noqa: F811
    ns = _ns()
    with _connect(etcd_server.url, namespace=ns) as db, _connect(etcd_server.url, namespace=ns) as other:
        backend = db.backend
        assert isinstance(backend, EtcdBackend)
        with db.lock("l1", ttl=1) as handle:
            with pytest.raises(errors.LockTimeoutError):
                with other.lock("l1", ttl=1, timeout=0.3):
                    pass
            lease_id = next(iter(backend._leases.values()))
            assert backend.client.lease_revoke(lease_id)  # the server drops the lease
            assert eventually(lambda: handle.lost, timeout=10)
            with other.lock("l1", ttl=1, timeout=5) as theirs:
                assert not theirs.lost
        assert db.allocate_id("ids") == 1 and other.allocate_id("ids") == 2


@pytest.mark.timeout(60)
def test_a_lost_holder_s_release_leaves_its_successor_s_lock(etcd_server: EtcdServer) -> None:  # noqa: F811
    """Two holders of one lock name in one client (threads): the first's late release revoked the second's lease."""
    with _connect(etcd_server.url) as db:
        backend = db.backend
        assert isinstance(backend, EtcdBackend)
        assert backend.acquire_lease("l2", b"first", 1)
        assert eventually(lambda: backend.acquire_lease("l2", b"second", 30), timeout=15, interval=0.2)
        backend.release_lease("l2", b"first")  # the first holder's block ends before it saw its lease go
        assert not backend.acquire_lease("l2", b"third", 30), "the successor's lock was taken from it"
        backend.release_lease("l2", b"second")
        assert backend.acquire_lease("l2", b"third", 30)


# ---------------------------------------------------------------- 3-member cluster


def _wait_healthy(cluster: EtcdServer) -> None:
    for member in cluster.members:
        if not member.is_running():
            member.restart()
    cluster.wait_ready(30)


@pytest.mark.timeout(180)
def test_cluster_leader_killed_during_writes(etcd_cluster: EtcdServer) -> None:  # noqa: F811
    namespace = _ns()
    url = etcd_cluster.url + "?timeout=2"
    leader = etcd_cluster.leader()
    try:
        with (
            nbdb.connect(url, namespace=namespace) as writer_db,
            nbdb.connect(url, namespace=namespace) as reader_db,
            reader_db.cache(KitParent) as cache_all,
            reader_db.cache(KitParent, topics=["t1"]) as cache_t1,
        ):
            assert cache_all.wait_synced(15) and cache_t1.wait_synced(15)
            acknowledged: list[uuid.UUID] = []
            failures: list[str] = []
            stop = threading.Event()

            def write() -> None:
                i = 0
                while not stop.is_set():
                    topic = "t1" if i % 2 else "t2"
                    try:
                        acknowledged.append(writer_db.create(KitParent(name=f"w{i}", topic=topic)).id)
                    except (errors.BackendUnavailableError, errors.ConflictError) as exc:
                        failures.append(type(exc).__name__)
                    i += 1

            writer = threading.Thread(target=write)
            writer.start()
            try:
                assert eventually(lambda: len(acknowledged) >= 30, timeout=20)
                leader.kill()
                count_at_kill = len(acknowledged)
                assert eventually(lambda: len(acknowledged) >= count_at_kill + 50, timeout=60), failures
            finally:
                stop.set()
                writer.join(30)
            # The writer's client moved to a live member.
            assert writer_db.backend.client.current_endpoint() != leader.address  # type: ignore[attr-defined]
            stored = {p.id for p in reader_db.list(KitParent)}
            assert set(acknowledged) <= stored  # no acknowledged write lost
            t1 = {p.id for p in reader_db.list(KitParent) if p.topic == "t1"}
            assert eventually(lambda: {p.id for p in cache_all.list(KitParent)} == stored, timeout=30)
            assert eventually(lambda: {p.id for p in cache_t1.list(KitParent)} == t1, timeout=30)
    finally:
        _wait_healthy(etcd_cluster)


@pytest.mark.timeout(180)
def test_cluster_compaction_while_a_cache_is_cut_off(etcd_cluster: EtcdServer) -> None:  # noqa: F811
    """The cache's member freezes; the others write, delete and compact; it resumes elsewhere and re-lists."""
    _wait_healthy(etcd_cluster)
    namespace = _ns()
    follower = etcd_cluster.followers()[0]
    others = [m for m in etcd_cluster.members if m is not follower]
    cache_url = "etcd://" + ",".join(m.address for m in [follower, *others]) + "?timeout=2"
    writer_url = "etcd://" + ",".join(m.address for m in others) + "?timeout=2"
    events: list[Any] = []
    try:
        with (
            nbdb.connect(writer_url, namespace=namespace) as writer,
            nbdb.connect(cache_url, namespace=namespace) as reader,
        ):
            doomed = writer.create(KitParent(name="doomed"))
            kept = writer.create(KitParent(name="kept"))
            with reader.cache(KitParent, on_change=events.append) as cache:
                assert cache.wait_synced(15) and cache.get(KitParent, doomed.id) is not None
                follower.pause()
                writer.delete(doomed)
                writer.update(kept.model_copy(update={"size": 9}))
                fresh = writer.create(KitParent(name="fresh"))
                writer.backend.compact_history()
                follower.kill()  # the cache's stream breaks; it resumes on another member
                assert eventually(lambda: cache.relists >= 1, timeout=30)
                assert eventually(
                    lambda: {p.id: p.size for p in cache.list(KitParent)} == {kept.id: 9, fresh.id: 0}, timeout=30
                )

                # The cache applies the re-list, then calls on_change: the callback may trail
                # what cache.list() already shows.
                def tombstones() -> list[Any]:
                    return [e.id for e in list(events) if e.kind == EventKind.DELETED]

                assert eventually(lambda: tombstones() == [doomed.id], timeout=10), tombstones()
    finally:
        _wait_healthy(etcd_cluster)


# ---------------------------------------------------------------- TLS and auth


@pytest.mark.timeout(90)
def test_tls_with_client_certificate(custom_etcd: Callable[..., EtcdServer], tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    server = custom_etcd([], tls)
    address = server.members[0].address
    query = f"ca={tls.ca_cert}&cert={tls.client_cert}&key={tls.client_key}"
    with _connect(f"etcd+https://{address}?{query}") as db:
        parent = db.create(KitParent(name="secure"))
        with db.cache(KitParent) as cache:
            assert cache.wait_synced(10) and cache.get(KitParent, parent.id) is not None
    with _connect(f"etcd://{address}?tls=1&{query}") as db:
        with pytest.raises(errors.NotFoundError):  # another namespace on the same server
            db.get(KitParent, parent.id)
    # No client certificate: the server refuses the handshake.
    with pytest.raises(errors.BackendUnavailableError):
        nbdb.connect(f"etcd+https://{address}?ca={tls.ca_cert}&timeout=0.5&retries=2")
    # Plain text to a TLS port fails cleanly too.
    with pytest.raises(errors.BackendUnavailableError):
        nbdb.connect(f"etcd://{address}?timeout=0.5&retries=2")


_BAD_TLS_FILES = {
    "ca not PEM": ("ca", lambda tls, junk: {"ca": junk, "cert": tls.client_cert, "key": tls.client_key}),
    "key not PEM": ("key", lambda tls, junk: {"ca": tls.ca_cert, "cert": tls.client_cert, "key": junk}),
    "cert not PEM": ("cert", lambda tls, junk: {"ca": tls.ca_cert, "cert": junk, "key": tls.client_key}),
    "key of another cert": (
        "key",
        lambda tls, junk: {"ca": tls.ca_cert, "cert": tls.client_cert, "key": tls.server_key},
    ),
}


@pytest.mark.timeout(90)
def test_tls_files_that_are_not_pem_are_refused_at_connect_naming_the_option(
    custom_etcd: Callable[..., EtcdServer], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A ca (cert, key) file that is not PEM reached gRPC only at the first request: it logged its complaints on
    stderr ("Could not load any root certificate") and connect() said the cluster was unavailable. It is a
    ValidationError at connect naming the option now, with nothing on stderr; the right files still connect."""
    tls = make_tls_files(tmp_path / "tls")
    server = custom_etcd([], tls)
    address = server.members[0].address
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    for case, (option, files) in _BAD_TLS_FILES.items():
        query = "&".join(f"{name}={path}" for name, path in files(tls, junk).items())
        with pytest.raises(errors.ValidationError, match=rf"(option|with) {option}\b") as refused:
            nbdb.connect(f"etcd+https://{address}?{query}&timeout=0.5&retries=2")
        assert option in str(refused.value), case
    assert "certificate" not in capfd.readouterr().err
    query = f"ca={tls.ca_cert}&cert={tls.client_cert}&key={tls.client_key}"
    with _connect(f"etcd+https://{address}?{query}") as db:
        assert db.create(KitParent(name="secure")).name == "secure"


def _etcdctl(server: EtcdServer, *args: str, input_: bytes | None = None) -> None:
    binary = find_binary("etcdctl")
    if binary is None:
        pytest.fail("etcdctl is missing (Debian package etcd-client)")
    subprocess.run(
        [binary, "--endpoints", server.members[0].address, *args],
        check=True, capture_output=True, timeout=30, env={"ETCDCTL_API": "3"}, input=input_,
    )  # fmt: skip


@pytest.mark.timeout(90)
def test_auth_users_tokens_and_secrets(custom_etcd: Callable[..., EtcdServer]) -> None:
    server = custom_etcd(["--auth-token-ttl", "1"])
    _etcdctl(server, "user", "add", "root:rootpw")
    _etcdctl(server, "auth", "enable")
    address = server.members[0].address
    with _connect(f"etcd://root:rootpw@{address}") as db:
        parent = db.create(KitParent(name="authed"))
        with db.cache(KitParent) as cache:
            assert cache.wait_synced(10)
            time.sleep(2.5)  # the simple token (TTL 1s) expires; the client must re-authenticate
            second = db.create(KitParent(name="later"))
            assert db.get(KitParent, parent.id).name == "authed"
            assert eventually(lambda: cache.get(KitParent, second.id) is not None, timeout=15)
    with _connect(f"etcd://root:rootpw@{address}") as idle:
        created = idle.backend.current_revision()
        time.sleep(2.5)  # its token expires before its first watch is created (no other call renews it)
        with idle.watch(KitParent, since=created) as watch:
            watch_events: list[Any] = []
            with _connect(f"etcd://root:rootpw@{address}", namespace=idle.backend.key_prefix.split("/")[1]) as w:
                made = w.create(KitParent(name="seen"))
            assert eventually(lambda: bool(watch_events.extend(watch.poll(0.2)) or watch_events), timeout=15)
            assert watch_events[0].id == made.id and watch_events[0].revision > created
    with pytest.raises(errors.AuthError) as wrong:
        nbdb.connect(f"etcd://root:hunter2-wrong@{address}")
    assert "hunter2-wrong" not in str(wrong.value)
    with pytest.raises(errors.AuthError):
        _connect(f"etcd://{address}").create(KitParent(name="anonymous"))
    db = nbdb.connect(f"etcd://root:rootpw@{address}")
    try:
        assert "rootpw" not in repr(db) and "rootpw" not in repr(db.backend)
    finally:
        db.close()


@pytest.mark.timeout(180)
def test_read_your_writes_across_a_leader_change(etcd_cluster: EtcdServer) -> None:  # noqa: F811
    _wait_healthy(etcd_cluster)
    namespace = _ns()
    url = etcd_cluster.url + "?timeout=2"
    leader = etcd_cluster.leader()
    try:
        with (
            nbdb.connect(url, namespace=namespace) as db,
            nbdb.connect(url, namespace=namespace) as other,
            db.cache(KitParent) as mine,
            other.cache(KitParent) as theirs,
        ):
            assert mine.wait_synced(15) and theirs.wait_synced(15)
            before = db.create(KitParent(name="before"))
            assert mine.wait_for(before, 30) and mine.get(KitParent, before.id) == before
            leader.kill()
            written: list[KitParent] = []

            def write() -> bool:
                try:
                    written.append(db.create(KitParent(name="after")))
                except errors.BackendUnavailableError:
                    return False  # no leader yet: the client moves on to a live member
                return True

            assert eventually(write, timeout=60)
            after = written[0]
            # Right after the write that crossed the election, through both connections.
            assert mine.wait_for(after, 30) and mine.get(KitParent, after.id) == after
            assert theirs.wait_for(after.nbdb_revision, 30)  # type: ignore[arg-type]
            assert theirs.get(KitParent, after.id) == after
            updated = db.update(after.replace(size=1))
            assert mine.wait_for(updated, 30) and mine.get(KitParent, after.id) == updated
    finally:
        _wait_healthy(etcd_cluster)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("threads", [1, 8])
def test_commits_go_on_when_the_commit_tokens_lease_is_gone(etcd_server: EtcdServer, threads: int) -> None:  # noqa: F811
    """The tokens' lease is replaced every 5 minutes and never kept alive: revoked by another client (or run
    out while the host slept), every commit of the Database was a BackendUnavailableError "requested lease not
    found" until then. A commit refused so is sent again on a new lease; alone or grouped (8 threads)."""
    with _connect(etcd_server.url) as db:
        backend = db.backend
        assert isinstance(backend, EtcdBackend)
        db.create(KitParent(name="first"))
        # Another client revokes the lease every token of this client rides on (its keys go with it).
        tokens = backend.client.range(
            backend.layout.token("").encode(), wire.prefix_end(backend.layout.token("").encode())
        )
        leases = {kv.lease for kv in tokens[1]}
        assert len(leases) == 1 and all(backend.client.lease_revoke(lease) for lease in leases)
        made: list[KitParent] = []
        failed: list[BaseException] = []
        start = threading.Barrier(threads)

        def create(n: int) -> None:
            start.wait(10)
            try:
                made.append(db.create(KitParent(name=f"p{n}")))
            except BaseException as exc:  # reported below
                failed.append(exc)

        workers = [threading.Thread(target=create, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        assert not failed, failed
        assert {p.name for p in db.list(KitParent)} == {"first", *(f"p{n}" for n in range(threads))}


@pytest.mark.timeout(60)
def test_an_index_record_nested_past_the_recursion_limit_is_a_corrupt_record(
    etcd_server: EtcdServer,  # noqa: F811
) -> None:
    """Another writer's index record of JSON nested 100,000 deep: a delete of its object, or of the object it
    references, raised a bare RecursionError out of json.loads; it is a CorruptRecordError naming the key."""
    ns = _ns()
    with _connect(etcd_server.url, namespace=ns) as writer:
        switch = writer.create(LogicalSwitch(name="sw"))
        port = writer.create(LogicalSwitchPort(switch=switch.id, name="p"))
        backend = writer.backend
        assert isinstance(backend, EtcdBackend)
        index = backend.layout.index("LogicalSwitchPort", port.id)
    deep = b"[" * 100_000 + b"]" * 100_000
    for damage in (deep, b'{"t": ' + deep + b"}"):
        # A client that did not write the port reads its index (its writer remembers where the port lives).
        with _connect(etcd_server.url, namespace=ns) as db:
            backend = db.backend
            assert isinstance(backend, EtcdBackend)
            assert backend.commit_once([], {index: damage}, []) is not None
            with pytest.raises(errors.CorruptRecordError, match="index record"):
                db.delete(port)
            with pytest.raises(errors.CorruptRecordError, match="index record"):
                db.delete(switch)


@pytest.mark.timeout(60)
def test_a_unique_claim_another_writer_left_naming_no_object_is_a_corrupt_record(
    etcd_server: EtcdServer,  # noqa: F811
) -> None:
    """A name's claim key pointing at an object that does not exist made every create of the name a
    UniqueViolationError "taken by" an object get() could not find, and may_exist a ConflictError "try again",
    for ever: a CorruptRecordError naming the key now, and the name is free once the key is deleted."""
    with _connect(etcd_server.url) as db:
        switch = db.create(LogicalSwitch(name="sw"))
        backend = db.backend
        assert isinstance(backend, EtcdBackend)
        text = LogicalSwitchPort.unique_text(("name",), {"name": "vm1"})
        claim = backend.layout.unique("LogicalSwitchPort", UniqueKey("name", text))
        assert backend.commit_once([], {claim: str(uuid.uuid4()).encode()}, []) is not None  # another writer's
        port = LogicalSwitchPort(switch=switch.id, name="vm1")
        with pytest.raises(errors.CorruptRecordError, match="does not exist"):
            db.create(port)
        with pytest.raises(errors.CorruptRecordError, match="does not exist"):
            db.create(port, may_exist=True)
        assert db.get_by(LogicalSwitchPort, name="vm1") is None
        assert backend.commit_once([], {}, [claim]) is not None
        assert db.create(port).name == "vm1"
        # A claim of a live holder is still a UniqueViolationError naming it.
        with pytest.raises(errors.UniqueViolationError) as taken:
            db.create(LogicalSwitchPort(switch=switch.id, name="vm1"))
        assert taken.value.existing == port.id


@pytest.mark.timeout(60)
def test_a_unique_claim_another_writer_pointed_at_an_object_without_the_value_is_a_corrupt_record(
    etcd_server: EtcdServer,  # noqa: F811
) -> None:
    """A name's claim key naming an existing object that does not hold the name was trusted: a create of the
    name was a UniqueViolationError "taken by" it, ``may_exist`` returned that object (of another name) as
    the one asked for, and ``get_by`` of the name the object does hold found nothing: CorruptRecordError."""
    with _connect(etcd_server.url) as db:
        switch = db.create(LogicalSwitch(name="sw"))
        a = db.create(LogicalSwitchPort(switch=switch.id, name="a"))
        b = db.create(LogicalSwitchPort(switch=switch.id, name="b"))
        backend = db.backend
        assert isinstance(backend, EtcdBackend)

        def claim(name: str) -> str:
            text = LogicalSwitchPort.unique_text(("name",), {"name": name})
            return backend.layout.unique("LogicalSwitchPort", UniqueKey("name", text))

        # Another writer's: "vm1" is claimed for a (named "a"), and "a" for b.
        assert backend.commit_once([], {claim("vm1"): str(a.id).encode(), claim("a"): str(b.id).encode()}, [])
        vm1 = LogicalSwitchPort(switch=switch.id, name="vm1")
        for write in (
            lambda: db.create(vm1),
            lambda: db.create(vm1, may_exist=True),
            lambda: db.update(b.model_copy(update={"name": "vm1"})),
        ):
            with pytest.raises(errors.CorruptRecordError, match=f"names LogicalSwitchPort {a.id}, which does not"):
                write()
        with pytest.raises(errors.CorruptRecordError, match=f"names LogicalSwitchPort {b.id}, which does not"):
            db.get_by(LogicalSwitchPort, name="a")
        found_b = db.get_by(LogicalSwitchPort, name="b")  # the true claims stand
        assert found_b is not None and found_b.id == b.id
        assert backend.commit_once([], {}, [claim("vm1")]) is not None  # the key deleted, the name is free
        created = db.create(vm1)
        found = db.get_by(LogicalSwitchPort, name="vm1")
        assert found is not None and found.id == created.id
        with pytest.raises(errors.UniqueViolationError) as taken:  # a true claim is still "taken"
            db.create(LogicalSwitchPort(switch=switch.id, name="vm1"))
        assert taken.value.existing == created.id


@pytest.mark.timeout(60)
def test_a_timeout_past_what_grpc_can_wait_is_refused_not_a_live_cluster_unavailable(
    etcd_server: EtcdServer,  # noqa: F811
) -> None:
    """gRPC takes a deadline of 1e10 s as already past (its nanoseconds overflow): connect() to a live
    cluster raised BackendUnavailableError "Deadline Exceeded". The option is bounded, as retry_deadline."""
    with nbdb.connect(etcd_server.url, timeout=86_400) as db:
        db.create(KitParent(name="p"))
    with pytest.raises(errors.ValidationError, match="timeout must be at most"):
        nbdb.connect(etcd_server.url, timeout=1e10)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["path", "namespace"])
def test_a_prefix_that_is_not_unicode_is_refused_at_connect(etcd_server: EtcdServer, where: str) -> None:  # noqa: F811
    """A lone surrogate in the URL's path or the namespace connected, and the first request raised a bare
    ``UnicodeEncodeError`` (no key can hold it): a ValidationError at connect, as a lock's name gets."""
    url, options = (etcd_server.url + "/a\udcff", {}) if where == "path" else (etcd_server.url, {"namespace": "\udcff"})
    with pytest.raises(errors.ValidationError, match="Unicode"):
        with nbdb.connect(url, **options) as db:
            db.create(KitParent(name="p"))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("damage", ["bad json", "another id"])
def test_a_corrupt_record_another_writer_deletes_is_reported_to_on_error_and_the_watch_goes_on(
    etcd_server: EtcdServer,  # noqa: F811
    damage: str,
) -> None:
    """A delete's event is its old value; corrupt, the watch handed out a delete of no object (an event whose
    ``.id`` raised ``AssertionError``). It is a CorruptRecordError to ``on_error`` now, and a cache drops the
    object it held."""
    with _connect(etcd_server.url) as db:
        switch = db.create(KitParent(name="sw"))
        kept = db.create(KitParent(name="kept"))
        backend = db.backend
        assert isinstance(backend, EtcdBackend)
        key = backend.layout.object(None, "KitParent", switch.id)
        reported: list[errors.CorruptRecordError] = []
        with (
            db.watch(KitParent, since=db.list(KitParent).revision, on_error=reported.append) as watch,
            db.cache(KitParent, on_error=lambda exc: None) as cache,
        ):
            assert cache.wait_synced(10)
            bad = b"{not json" if damage == "bad json" else kept.model_dump_json().encode()
            assert backend.commit_once([], {key: bad}, []) is not None  # another writer's bytes
            assert backend.commit_once([], {}, [key]) is not None  # and its delete
            updated = db.update(kept.model_copy(update={"size": 3}))
            events = []
            for _ in range(20):
                got = watch.poll(0.3)
                events += [(e.kind, e.id) for e in got]
                if (EventKind.UPDATED, kept.id) in events:
                    break
            assert events == [(EventKind.UPDATED, kept.id)]
            assert any(str(switch.id) in str(exc) and "deleted" in str(exc) for exc in reported), reported
            assert cache.wait_for(updated, timeout=10)  # the cache went on past the delete
            assert cache.get(KitParent, switch.id) is None
            assert cache.get(KitParent, kept.id) == updated


@pytest.mark.timeout(60)
def test_an_id_counter_another_writer_made_negative_is_a_corrupt_record(etcd_server: EtcdServer) -> None:  # noqa: F811
    """A negative counter (another writer's: nbdb counts from 1) handed out ids below 1."""
    with _connect(etcd_server.url) as db:
        assert db.allocate_id("c") == 1
        backend = db.backend
        key = backend.layout.counter("c")  # type: ignore[attr-defined]
        assert backend.commit_once([], {key: b"-5"}, []) is not None  # type: ignore[attr-defined]
        with pytest.raises(nbdb.CorruptRecordError, match="counter 'c'"):
            db.allocate_id("c")
        assert db.allocate_id("other") == 1


@pytest.mark.timeout(60)
def test_an_id_counter_key_another_writer_deleted_counts_on_from_its_mark(etcd_server: EtcdServer) -> None:  # noqa: F811
    """A counter key another writer deleted started again at 1: ids 1, 2, 3 were handed out a second time."""
    block = 64  # nbdb.families.kv.MARK_BLOCK: how far a counter's mark runs ahead of it
    with _connect(etcd_server.url) as db:
        backend = db.backend
        assert isinstance(backend, EtcdBackend)
        given = [db.allocate_id("c") for _ in range(3)]
        assert given == [1, 2, 3]
        for deleted in ("counter", "counter_mark", "counter"):
            assert backend.commit_once([], {}, [getattr(backend.layout, deleted)("c")]) is not None  # another's
            given.append(db.allocate_id("c"))
            assert given[-1] > max(given[:-1]), given  # never one handed out before
        assert given[-1] <= 3 + 2 * block  # skipping at most a block each time the counter went
        assert backend.commit_once([], {backend.layout.counter_mark("c"): b"x"}, []) is not None
        with pytest.raises(nbdb.CorruptRecordError, match="counter 'c'"):  # a damaged mark is not skipped
            db.allocate_id("c")
        assert [db.allocate_id("other") for _ in range(block + 2)] == list(range(1, block + 3))


@pytest.mark.timeout(90)
def test_a_token_that_expires_after_the_password_changed_is_an_auth_error(
    custom_etcd: Callable[..., EtcdServer],
) -> None:
    """The renewal of an expired token is refused (the password was rotated): AuthError, not gRPC's exception."""
    server = custom_etcd(["--auth-token-ttl", "1"])
    _etcdctl(server, "user", "add", "root:rootpw")
    _etcdctl(server, "auth", "enable")
    address = server.members[0].address
    with _connect(f"etcd://root:rootpw@{address}") as db:
        db.create(KitParent(name="before"))
        _etcdctl(server, "--user", "root:rootpw", "user", "passwd", "root", "--interactive=false", input_=b"newpw\n")
        time.sleep(2.5)  # the simple token (TTL 1s) expires; its renewal with the old password is refused
        with pytest.raises(errors.AuthError):
            db.create(KitParent(name="after"))
        with pytest.raises(errors.AuthError):  # and again: the failed renewal left no half state
            db.get(KitParent, uuid.uuid4())


def _routers_in_topics(db: nbdb.Database, count: int, prefix: str = "t-") -> list[Any]:
    from nbdb.models.ovn import LogicalRouter

    made: list[Any] = []
    for first in range(0, count, 30):
        with db.transaction() as txn:
            made += [
                txn.create(LogicalRouter(name=f"lr-{i}", topic=f"{prefix}{i}"))
                for i in range(first, min(first + 30, count))
            ]
    return made


@pytest.mark.timeout(120)
def test_a_read_only_user_lists_emptied_topics_though_the_prune_is_denied(
    custom_etcd: Callable[..., EtcdServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A list that prunes the registry writes; a user with read rights only still lists (the prune is best effort).
    Its cache's wait for a revision outside the namespace cannot write the progress mark: it ends at its
    timeout, as before the mark, and the stream goes on."""
    from nbdb.models.ovn import LogicalRouter

    server = custom_etcd([])
    _etcdctl(server, "user", "add", "root:rootpw")
    _etcdctl(server, "user", "add", "reader:readerpw")
    _etcdctl(server, "role", "add", "ro")
    _etcdctl(server, "role", "grant-permission", "ro", "read", "--prefix=true", "nbdb/")
    _etcdctl(server, "user", "grant-role", "reader", "ro")
    _etcdctl(server, "auth", "enable")
    address = server.members[0].address
    namespace = _ns()
    with _connect(f"etcd://root:rootpw@{address}", namespace=namespace) as root:
        made = _routers_in_topics(root, 40)
        with root.transaction() as txn:
            for router in made[:36]:
                txn.delete(LogicalRouter, router.id)
    with _connect(f"etcd://reader:readerpw@{address}", namespace=namespace) as reader:
        for _ in range(2):
            assert sorted(r.name for r in reader.list(LogicalRouter)) == [f"lr-{i}" for i in range(36, 40)]
        page = reader.list(LogicalRouter, limit=3)
        rest = reader.list(LogicalRouter, limit=3, after=page.continue_token)
        assert len(page) + len(rest) == 4
        with (
            reader.cache(LogicalRouter, topics=["t-39"]) as cache,
            _connect(f"etcd://root:rootpw@{address}", namespace=namespace) as root,
            _connect(f"etcd://root:rootpw@{address}") as elsewhere,
        ):
            assert cache.wait_synced(10)
            outside = elsewhere.create(KitParent(name="x"))
            caplog.set_level(logging.INFO, logger=etcd_stream.__name__)
            assert not cache.wait_for(int(outside.nbdb_revision), 0.6)  # type: ignore[arg-type]
            assert any("could not write the progress mark" in r.getMessage() for r in caplog.records)
            made = root.create(LogicalRouter(name="lr-new", topic="t-39"))
            assert cache.wait_for(int(made.nbdb_revision), 5)  # type: ignore[arg-type]
            assert sorted(r.name for r in cache.list(LogicalRouter)) == ["lr-39", "lr-new"]


def _prune_all_but_four(db: nbdb.Database, made: list[Any], per: int) -> list[KeyValue]:
    """Deletes the routers of ``made`` (one a topic, from ``_routers_in_topics``) but the last 4, ``per`` a
    transaction; a list a minute on prunes their emptied topics: the registry keys left."""
    from nbdb.models.ovn import LogicalRouter

    kept = [f"lr-{i}" for i in range(len(made) - 4, len(made))]
    for first in range(0, len(made) - 4, per):
        with db.transaction() as txn:
            for router in made[first : first + per]:
                txn.delete(LogicalRouter, router.id)
    assert sorted(r.name for r in db.list(LogicalRouter)) == kept
    backend = db.backend
    for topic in backend._topics.checked:  # type: ignore[attr-defined]
        backend._topics.checked[topic] -= 60.0  # type: ignore[attr-defined]  # a minute on: the next list prunes
    assert sorted(r.name for r in db.list(LogicalRouter)) == kept
    left: list[KeyValue] = backend.range_keys([backend.layout.topic_marks])[0]  # type: ignore[attr-defined]
    return left


@pytest.mark.timeout(120)
@pytest.mark.parametrize("declared", [True, False])
def test_pages_lists_and_the_prune_on_a_server_with_a_smaller_max_txn_ops(
    custom_etcd: Callable[..., EtcdServer], declared: bool
) -> None:
    """A server started with --max-txn-ops 16: point reads of 40 keys, pages across 40 topics and a list that
    prunes 36 emptied ones."""
    from nbdb.models.ovn import LogicalRouter

    server = custom_etcd(["--max-txn-ops", "16"])
    url = server.url + ("?max_txn_ops=16" if declared else "")
    namespace = _ns()
    topics = [f"t-{i}" for i in range(40)]
    with _connect(url, namespace=namespace) as db:
        made = (
            _routers_in_topics(db, 40)
            if declared
            else [db.create(LogicalRouter(name=f"lr-{i}", topic=f"t-{i}")) for i in range(40)]
        )
        # Point reads of more keys than the server takes in one transaction: split as the scans' reads are.
        layout = db.backend.layout  # type: ignore[attr-defined]
        registry_keys = [layout.topic_mark(t) for t in topics]
        assert all(kv is not None for kv in db.backend.get_keys(registry_keys))  # type: ignore[attr-defined]
        seen: list[str] = []
        after = None
        for _ in range(20):
            snap = db.backend.scan_page(["LogicalRouter"], topics, 30, after)
            seen += [str(r.id) for r in snap.records]
            if (after := snap.after) is None:
                break
        assert sorted(seen) == sorted(str(r.id) for r in made)
        seen = []
        after = None
        for _ in range(20):
            got = db.list(LogicalRouter, limit=7, after=after)
            seen += [r.name for r in got]
            if (after := got.continue_token) is None:
                break
        assert sorted(seen) == sorted(f"lr-{i}" for i in range(40))
        left = _prune_all_but_four(db, made, 6)
        assert len(left) == 4, [kv.key for kv in left]


@pytest.mark.timeout(120)
def test_a_page_of_many_topics_at_a_compacted_revision_is_history_gone(etcd_server: EtcdServer) -> None:  # noqa: F811
    from nbdb.models.ovn import LogicalRouter

    with _connect(etcd_server.url) as db:
        _routers_in_topics(db, 20)
        first = db.list(LogicalRouter, limit=3)
        some = db.backend.scan_page(["LogicalRouter"], ["t-5", "t-6", "t-7"], 1, None)
        db.create(LogicalRouter(name="later", topic="t-0"))
        db.backend.compact_keys(db.backend.current_revision())  # type: ignore[attr-defined]
        with pytest.raises(errors.HistoryGoneError):
            db.list(LogicalRouter, limit=3, after=first.continue_token)
        with pytest.raises(errors.HistoryGoneError):
            db.backend.scan_page(["LogicalRouter"], ["t-5", "t-6", "t-7"], 1, some.after)


@pytest.mark.timeout(120)
def test_point_reads_and_range_reads_fit_the_urls_request_bytes_whatever_its_txn_ops(
    custom_etcd: Callable[..., EtcdServer],
) -> None:
    """A server of --max-txn-ops 4096 and --max-request-bytes 64 KiB, both said in the URL: get_keys of 2,000
    keys of 100 bytes and range_pages of as many prefixes (200 and 400 KB if sent in one transaction) go in
    transactions that fit the request limit (before: refused, ValidationError 'request is too large')."""
    server = custom_etcd(["--max-txn-ops", "4096", "--max-request-bytes", "65536"])
    with _connect(server.url + "?max_txn_ops=4096&max_request_bytes=65536") as db:
        backend = db.backend
        keys = [f"{backend.layout.objects}t/LogicalRouter/{'k' * 400}-{i:05d}" for i in range(2000)]  # type: ignore[attr-defined]
        backend.commit_keys([], {keys[7]: b"seven"}, [])  # type: ignore[attr-defined]
        got = backend.get_keys(keys)  # type: ignore[attr-defined]
        assert [i for i, kv in enumerate(got) if kv is not None] == [7] and got[7].value == b"seven"
        pages, _ = backend.range_pages([(key, None) for key in keys], 1, 0)  # type: ignore[attr-defined]
        assert [i for i, page in enumerate(pages) if page] == [7]


@pytest.mark.timeout(120)
def test_a_commit_of_long_keys_merges_its_absence_checks_to_fit_the_request_bytes(
    custom_etcd: Callable[..., EtcdServer],
) -> None:
    """A namespace of 400 bytes makes every key long, and a create's compares repeat the keys it puts: 20 port
    creates carry 48 KB of puts (under max_txn_bytes, 58,982) but 75 KB with a compare per key, which the server
    refused ('request is too large', after sending it). The absence checks merge into key ranges until the
    transaction fits (their reads cut to the bytes too); a commit that cannot fit even so is refused before it
    is sent. Commit_keys of 800 absence checks on keys of 850 bytes and one put: the reads of the merged keys
    (690 KB, more than gRPC lets in: the request limit and 512 KiB) take a dozen read-only transactions."""
    from nbdb.backends.etcd import txnshape
    from nbdb.families.kv import VersionIs
    from nbdb.models import LogicalSwitch, LogicalSwitchPort

    server = custom_etcd(["--max-txn-ops", "4096", "--max-request-bytes", "65536"])
    with _connect(server.url + "?max_txn_ops=4096&max_request_bytes=65536", namespace=_ns() + "n" * 400) as db:
        switch = db.create(LogicalSwitch(name="sw"))
        with db.transaction() as txn:
            made = [txn.create(LogicalSwitchPort(switch=switch.id, name=f"p{i}")) for i in range(20)]
        assert txn.revision is not None
        assert sorted(p.id for p in db.list(LogicalSwitchPort)) == sorted(p.id for p in made)
        assert {db.get(LogicalSwitchPort, p.id).version for p in made} == {1}
        # 24 creates: 58 KB of puts pass the family's check, and the merged compares still leave it too large.
        with pytest.raises(errors.ValidationError, match="max_txn_bytes") as refused:
            with db.transaction() as txn:
                for i in range(24):
                    txn.create(LogicalSwitchPort(switch=switch.id, name=f"q{i}"))
        assert "request is too large" not in str(refused.value)  # ours, before sending: not the server's
        assert len(db.list(LogicalSwitchPort)) == 20
        # The merged checks' reads: 800 long keys, which one read-only transaction of 4096 ranges does not hold.
        backend = db.backend
        keys = [f"{backend.layout.objects}t/LogicalRouter/{'k' * 400}-{i:05d}" for i in range(800)]  # type: ignore[attr-defined]
        absent = [VersionIs(k, 0) for k in keys]
        put = f"{backend.layout.objects}t/LogicalRouter/put"  # type: ignore[attr-defined]
        assert sum(len(k) + txnshape.FRAME for k in keys) > 65536 + 512 * 1024
        assert backend.commit_keys(absent, {put: b"v"}, []) is not None  # type: ignore[attr-defined]
        assert backend.get_key(put).value == b"v"  # type: ignore[attr-defined]
        backend.commit_keys([], {keys[750]: b"there"}, [])  # type: ignore[attr-defined]
        assert backend.commit_keys(absent, {put: b"w"}, []) is None  # type: ignore[attr-defined]
        assert backend.get_key(put).value == b"v"  # type: ignore[attr-defined]


class _CountingClient(EtcdClient):
    """nbdb's own client, against the real server, keeping how many ranges each read-only transaction held."""

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self.reads: list[int] = []

    def txn(self, request: bytes, *, write: bool = True) -> tuple[wire.Header, bool, list[list[wire.KV]], bool]:
        got = super().txn(request, write=write)
        if not write:
            self.reads.append(len(got[2]))
        return got


@pytest.mark.timeout(120)
def test_a_commit_merged_for_the_count_and_the_bytes_reads_its_keys_once(
    custom_etcd: Callable[..., EtcdServer],
) -> None:
    """300 absence checks of keys of 500 bytes on a server of the default --max-txn-ops (128) and 64 KiB of
    request bytes: merged to fit the count, the commit is still too large for the bytes, and merges again to
    fit them. It read the keys of the first merge (173 ranges), then those of the second (198): each key is
    read once now, only those of the second merge (each read counted by nbdb's client, on the real server)."""
    from nbdb.families.kv import VersionIs

    server = custom_etcd(["--max-request-bytes", "65536"])
    settings, prefix, progress = parse_url(server.url + "?max_request_bytes=65536", {"namespace": _ns()})
    client = _CountingClient(settings)
    backend = EtcdBackend(client, prefix, progress)
    try:
        client.ensure_token()
        keys = [f"{backend.layout.objects}t/LogicalRouter/{'k' * 500}-{i:05d}" for i in range(300)]
        absent = [VersionIs(k, 0) for k in keys]
        put = f"{backend.layout.objects}t/LogicalRouter/put"
        assert backend.commit_keys(absent, {put: b"v"}, []) is not None
        assert 0 < sum(client.reads) <= len(keys), client.reads
        got = backend.get_key(put)
        assert got is not None and got.value == b"v"
        backend.commit_keys([], {keys[150]: b"there"}, [])
        client.reads.clear()
        assert backend.commit_keys(absent, {put: b"w"}, []) is None
        assert sum(client.reads) <= len(keys), client.reads
        got = backend.get_key(put)
        assert got is not None and got.value == b"v"
    finally:
        client.close()


@pytest.mark.timeout(120)
def test_the_prune_of_long_registry_keys_fits_the_request_bytes(custom_etcd: Callable[..., EtcdServer]) -> None:
    """With a namespace of 400 bytes, the prune's transaction deleting 56 dead registry keys (each nested with
    two compares, 1.7 KB) takes 95 KB: it was refused by a server of --max-request-bytes 64 KiB, and the
    registry kept its dead keys forever (the prune is best effort). Cut to the URL's bytes, every one goes."""

    server = custom_etcd(["--max-request-bytes", "65536"])
    with _connect(server.url + "?max_request_bytes=65536", namespace=_ns() + "n" * 400) as db:
        made = _routers_in_topics(db, 60)
        left = _prune_all_but_four(db, made, 8)
        assert len(left) == 4, len(left)


@pytest.mark.timeout(120)
def test_a_list_registers_many_long_stray_topics_within_the_request_bytes(
    custom_etcd: Callable[..., EtcdServer],
) -> None:
    """30 topics another writer filled (no registry key), under a namespace of 2,300 bytes: the list that finds
    them registers them, 70 KB of registry puts, which one transaction put past a server of --max-request-bytes
    64 KiB (refused; the registration is best effort, so they stayed strays, probed on every list)."""
    server = custom_etcd(["--max-request-bytes", "65536"])
    with _connect(server.url + "?max_request_bytes=65536", namespace=_ns() + "n" * 2300) as db:
        from nbdb.models.ovn import LogicalRouter

        backend = db.backend
        objects = backend.layout.objects  # type: ignore[attr-defined]
        for i in range(30):
            router = LogicalRouter(name=f"lr-{i}", topic=f"s-{i}")
            body = router.model_dump_json().encode()
            backend.commit_keys([], {f"{objects}s-{i}/LogicalRouter/{router.id}": body}, [])  # type: ignore[attr-defined]
        marks = backend.layout.topic_marks  # type: ignore[attr-defined]
        assert backend.range_keys([marks])[0] == []  # type: ignore[attr-defined]
        assert sorted(r.name for r in db.list(LogicalRouter)) == sorted(f"lr-{i}" for i in range(30))
        left = backend.range_keys([marks])[0]  # type: ignore[attr-defined]
        assert sorted(kv.key[len(marks) :] for kv in left) == sorted(f"s-{i}" for i in range(30))


@pytest.mark.timeout(300)
def test_a_group_of_commits_of_long_keys_fits_the_request_bytes(custom_etcd: Callable[..., EtcdServer]) -> None:
    """A group of commits is one transaction, admitted by an estimate of each commit's bytes: it counted a
    delete's "no referrer" range compare once (its range end repeats the prefix), and neither a lock fence's key
    nor the commit token's key (compared, put, and read on failure). Under a namespace of 2,000 bytes, a group
    of 9 such deletes was admitted under max_txn_bytes (58,982) and took 138,660 bytes: the server refused the
    whole group ('request is too large'), every member a ValidationError for a commit that alone fits. For any
    namespace and mix of checks, an admitted group is within max_txn_bytes as sent, and the server applies it."""
    from nbdb.families.kvtypes import CommitToken, KeyCommit, LeaseHeld, PrefixUnchangedSince, VersionIs

    server = custom_etcd(["--max-request-bytes", "65536"])

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        namespace=st.integers(0, 3000),
        letter=st.sampled_from(["n", "\u00e9", "\u4e2d", "\U0001f600"]),  # 1 to 4 bytes in UTF-8
        shapes=st.lists(
            st.tuples(st.integers(0, 2), st.booleans(), st.integers(0, 1500), st.booleans()), min_size=2, max_size=16
        ),
    )
    @example(namespace=2000, letter="\U0001f600", shapes=[(2, True, 0, True)] * 9)  # counted as 500 bytes a key
    def group_fits(namespace: int, letter: str, shapes: list[tuple[int, bool, int, bool]]) -> None:
        # A namespace of characters past ASCII too: the estimate counted characters, not the UTF-8 bytes sent.
        # namespace: its bytes, as in the ASCII case (3,000 four-byte characters alone pass a commit's budget).
        ns = _ns() + letter * (namespace // len(letter.encode()))
        with _connect(server.url + "?max_request_bytes=65536", namespace=ns) as db:
            backend = db.backend
            layout = backend.layout  # type: ignore[attr-defined]
            keys = [layout.object("t", "LogicalRouter", uuid.uuid4()) for _ in shapes]
            revision = backend.commit_keys([], {k: b"x" for k in keys}, [])  # type: ignore[attr-defined]
            assert revision is not None
            with db.lock("held", ttl=30) as handle:
                held = LeaseHeld("held", handle.token.encode())
                commits = [
                    KeyCommit(
                        [VersionIs(k, 1), *[PrefixUnchangedSince(f"{k}/r{j}/", revision) for j in range(prefixes)]]
                        + ([held] if fenced else []),
                        {f"{k}/v": b"v" * value},
                        [k] if delete else [],
                        CommitToken(layout.token(backend.new_token()), 60.0),  # type: ignore[attr-defined]
                    )
                    for k, (prefixes, fenced, value, delete) in zip(keys, shapes, strict=True)
                ]
                group = backend.new_commit_group()  # type: ignore[attr-defined]
                admitted = [c for c in commits if group.admit(c)]
                sent = wire.txn_request(
                    [],
                    [wire.request_txn(wire.txn_request(*backend._txn_parts(c.with_token_key()))) for c in admitted],  # type: ignore[attr-defined]
                )
                assert len(sent) <= backend.capabilities.max_txn_bytes, (len(admitted), len(sent))
                outcomes = backend.commit_group(admitted)  # type: ignore[attr-defined]
                assert all(isinstance(o, int) for o in outcomes), outcomes
            for c in admitted:
                assert backend.get_key(next(iter(c.puts))) is not None  # type: ignore[attr-defined]

    group_fits()


@pytest.mark.timeout(120)
def test_first_pages_on_a_server_that_takes_one_operation_a_transaction(
    custom_etcd: Callable[..., EtcdServer],
) -> None:
    """A server at --max-txn-ops 1 takes no nested transaction: a table's first page is its own transaction
    (one compare, one read either way), and two tables' first pages go one table a request once refused."""
    from nbdb.backends.etcd import wire

    server = custom_etcd(["--max-txn-ops", "1"])
    with _connect(server.url, namespace=_ns()) as db:  # the URL says 128 (its least is 4): refusals halve it
        backend = db.backend
        prefixes = [f"{backend.layout.objects}one/", f"{backend.layout.objects}two/"]  # type: ignore[attr-defined]
        keys = [f"{p}{i:04x}" for p in prefixes for i in range(5)]
        for key in keys:
            request = wire.txn_request([], [wire.request_put(key.encode(), b"v")], [])
            backend.client.txn(request)  # type: ignore[attr-defined]
        assert [kv.key for kv in backend.range_keys(prefixes[:1])[0]] == keys[:5]  # type: ignore[attr-defined]
        assert [kv.key for kv in backend.range_keys(prefixes)[0]] == keys  # type: ignore[attr-defined]


@pytest.mark.timeout(60)
def test_a_lock_key_another_writer_left_on_no_lease_is_corrupt_record_at_acquire(
    etcd_server: EtcdServer,  # noqa: F811
) -> None:
    """A lock key written without a lease never expires: every take of the lock waited for it and ended in
    LockTimeoutError, for ever. It is damage (as a Redis lease key without an expiry): CorruptRecordError naming
    the key, at once; the lock is free once the key is deleted, and a live holder's key still makes a take wait."""
    with _connect(etcd_server.url) as db:
        backend = db.backend
        assert isinstance(backend, EtcdBackend)
        key = backend.layout.lock("leader")
        assert backend.commit_once([], {key: b"another writer"}, []) is not None  # no lease
        with pytest.raises(errors.CorruptRecordError) as damaged:
            with db.lock("leader", ttl=5, timeout=2):
                pass
        assert damaged.value.key == key and key in str(damaged.value)
        assert backend.commit_once([], {}, [key]) is not None
        with db.lock("leader", ttl=5, timeout=2) as held:
            assert not held.lost
            with pytest.raises(errors.LockTimeoutError):
                with backend.lock("leader", 5, 0.3):
                    pass


# ---------------------------------------------------------------- read-your-writes across what a cache follows


def _record_swaps(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The etcd streams' widenings (True) and narrowings (False) from now on, in order."""
    swaps: list[bool] = []
    swap = etcd_stream.EtcdKeyStream._swap

    def recording(self: Any, wide: bool) -> None:
        swaps.append(wide)
        swap(self, wide)

    monkeypatch.setattr(etcd_stream.EtcdKeyStream, "_swap", recording)
    return swaps


@pytest.mark.parametrize("shared", [True, False])
def test_a_wait_for_a_commit_the_cache_does_not_follow_ends_with_its_commit(
    etcd_server: EtcdServer,  # noqa: F811
    shared: bool,
) -> None:
    # The commit moves no watcher of the cache: before, the wait ended only at a progress notification
    # (10 minutes on Debian 12's 3.4.23, which takes no safe progress request), so wait_for said False.
    with _connect(etcd_server.url) as db, db.cache(KitParent, topics=["a"], shared=shared) as cache:
        assert cache.wait_synced(10)
        other_topic = db.create(KitParent(name="b1", topic="b"))
        assert cache.wait_for(other_topic.nbdb_revision, 3)
        note = db.create(KitNote(text="n1"))  # another model
        assert cache.wait_for(note.nbdb_revision, 3)
        mine = db.create(KitParent(name="a1", topic="a"))
        db.create(KitParent(name="b2", topic="b"))
        assert cache.wait_for(mine, 3) and cache.get(KitParent, mine.id) == mine
        assert [p.name for p in cache.list(KitParent)] == ["a1"]  # the namespace's other keys were dropped


def test_a_wait_for_a_commit_the_cache_follows_leaves_its_stream_alone(
    etcd_server: EtcdServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Acting at every wait for a revision made etcd's stream (3.4.23) swap its caught-up watcher for a
    # wide one fed every 100 ms, for the commonest wait of all: a commit the cache follows, whose change
    # was on its way (p90 21 ms against 0.6). The stream acts only once a wait outlasts a grace, here made
    # long so that no wait of a followed commit can outlast it on a loaded machine.
    monkeypatch.setattr(etcd_stream, "_WANT_GRACE", 10.0)
    swaps = _record_swaps(monkeypatch)
    with _connect(etcd_server.url) as db:
        assert isinstance(db.backend, EtcdBackend)
        db.backend.safe_progress = False  # the older servers' way (what widens), also on a newer server
        with db.cache(KitParent, topics=["a"]) as cache:
            assert cache.wait_synced(10)
            for i in range(10):
                written = db.create(KitParent(name=f"a{i}", topic="a"))
                assert cache.wait_for(int(written.nbdb_revision), 5)
        assert swaps == []


@pytest.mark.parametrize("past_the_store", [False, True])
@pytest.mark.parametrize("shared", [True, False])
def test_a_wait_for_a_commit_outside_the_namespace_ends_once_the_store_passed_it(
    etcd_server: EtcdServer,  # noqa: F811
    shared: bool,
    past_the_store: bool,
) -> None:
    # Another namespace's commit writes no key this namespace's widest watch sees: on servers without safe
    # progress requests (3.4.23) the wait ended only at the next commit of the namespace or the 10-minute
    # progress notification, so wait_for said False at its timeout. past_the_store: a wait before, for a
    # revision the store had not reached (a restore, another cluster's revision, a mistake), left the stream
    # wanting it for good: its progress mark, landed below it, counted as written for it, so no later wait
    # for a commit outside the namespace got a mark (False at its timeout again).
    with _connect(etcd_server.url) as db, _connect(etcd_server.url) as other:
        with db.cache(KitParent, topics=["a"], shared=shared) as cache:
            assert cache.wait_synced(10)
            if past_the_store:
                ahead = int(other.create(KitParent(name="probe", topic="a")).nbdb_revision)  # type: ignore[arg-type]
                assert not cache.wait_for(ahead + 1000, 0.5)  # its mark is written meanwhile, below it
            for i in range(2):
                elsewhere = other.create(KitParent(name=f"x{i}", topic="a"))
                started = time.monotonic()
                assert cache.wait_for(int(elsewhere.nbdb_revision), 3)  # type: ignore[arg-type]
                assert time.monotonic() - started < 1.5
            assert cache.list(KitParent) == []
            mine = db.create(KitParent(name="a1", topic="a"))  # the stream goes on, in order
            assert cache.wait_for(mine, 3) and [p.name for p in cache.list(KitParent)] == ["a1"]


@pytest.mark.timeout(60)
def test_a_wait_past_the_store_leaves_a_later_wait_its_grace(
    etcd_server: EtcdServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a wait past the store (its mark landed below it) a wait for a commit the stream follows is left to
    the watch for its grace again: before, the stream stayed behind the far revision and widened at once."""
    monkeypatch.setattr(etcd_stream, "_WANT_GRACE", 0.0)
    monkeypatch.setattr(etcd_stream, "_MARK_AFTER", 0.0)
    monkeypatch.setattr(etcd_stream, "_WIDE_FOR", 0.2)
    monkeypatch.setattr(etcd_stream, "_WIDE_LINGER", 0.0)
    swaps = _record_swaps(monkeypatch)
    with _connect(etcd_server.url) as db:
        backend = db.backend
        assert isinstance(backend, EtcdBackend)
        backend.safe_progress = False  # the older servers' way (what widens), also on a newer server
        stream = backend.watch(["KitParent"], ["a"], backend.current_revision())
        try:
            far = backend.current_revision() + 1000
            stream.reach(far)
            # It widens, marks (below the far revision), and narrows after _WIDE_FOR.
            assert eventually(lambda: stream.poll(0.05) == [] and swaps == [True, False], 5)
            monkeypatch.setattr(etcd_stream, "_WANT_GRACE", 10.0)  # no followed commit outlasts it
            written = int(db.create(KitParent(name="a1", topic="a")).nbdb_revision)  # type: ignore[arg-type]
            stream.reach(written)
            got: list[Any] = []
            assert eventually(lambda: bool(got.extend(stream.poll(0.05))) or stream.revision >= written, 5)
            assert [c.revision for c in got] == [written] and swaps == [True, False]
        finally:
            stream.close()


@pytest.mark.timeout(60)
def test_reach_returns_at_once_while_the_stream_reads_whether_the_store_went_back(
    etcd_server: EtcdServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A watcher confirmed below the stream's raft term makes it read the store's header; reach() (a cache's
    wait, which must return at once) waited for that network read, which the stream made under its lock."""
    monkeypatch.setattr(etcd_stream, "_WANT_GRACE", 0.0)
    with _connect(etcd_server.url) as db:
        backend = db.backend
        assert isinstance(backend, EtcdBackend)
        backend.safe_progress = False  # reach() widens: a new watcher, confirmed (also on a newer server)
        reading, release = threading.Event(), threading.Event()
        header_now = backend.header_now
        revision = backend.current_revision()  # a read of the header: before it is slowed

        def slow() -> wire.Header:
            reading.set()
            release.wait(5)
            return header_now()

        monkeypatch.setattr(backend, "header_now", slow)
        prefix = f"{backend.layout.objects}KitParent/"  # type: ignore[attr-defined]
        stream = backend.watch_keys([prefix], revision)
        assert isinstance(stream, etcd_stream.EtcdKeyStream)
        stream._term += 1_000_000  # the next confirmation is below it: checked
        failed: list[BaseException] = []

        def polling() -> None:
            try:
                for _ in range(100):
                    stream.poll(0.05)
            except BaseException as exc:  # the store's term is below: HistoryGoneError
                failed.append(exc)

        poller = threading.Thread(target=polling)
        try:
            stream.reach(revision + 1)
            poller.start()
            assert reading.wait(5)
            started = time.monotonic()
            stream.reach(revision + 2)
            assert time.monotonic() - started < 1.0
            release.set()
            poller.join(10)
            assert [type(e) for e in failed] == [errors.HistoryGoneError]
        finally:
            release.set()
            stream.close()
            poller.join(10)


def test_a_wait_for_a_commit_the_cache_does_not_follow_ends_on_a_cluster(etcd_cluster: EtcdServer) -> None:  # noqa: F811
    _wait_healthy(etcd_cluster)
    namespace = _ns()
    with (
        _connect(etcd_cluster.url, namespace=namespace) as db,
        _connect(etcd_cluster.url, namespace=namespace) as other,
    ):
        with db.cache(KitParent, topics=["a"]) as cache:
            assert cache.wait_synced(10)
            written = other.create(KitParent(name="b1", topic="b"))
            assert cache.wait_for(written.nbdb_revision, 3)


@pytest.mark.timeout(60)
def test_a_stream_sent_past_its_keys_delivers_each_of_its_changes_once_in_order_and_narrows_again(
    etcd_server: EtcdServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On servers without safe progress requests ``reach`` watches the whole namespace for a while:
    the stream's own changes keep their order (none twice, none lost) across the widening and the
    narrowing, and the other keys are dropped."""
    monkeypatch.setattr(etcd_stream, "_WIDE_LINGER", 0.0)  # narrow again as soon as the wait is served
    monkeypatch.setattr(etcd_stream, "_WANT_GRACE", 0.0)  # widen at once (the commit after is on its way)
    caplog.set_level(logging.DEBUG, logger=etcd_stream.__name__)
    with _connect(etcd_server.url) as db:
        backend = db.backend
        assert isinstance(backend, EtcdBackend)
        backend.safe_progress = False  # the older servers' way, also where the server takes progress requests
        stream = backend.watch(["KitParent"], ["a"], backend.current_revision())
        try:
            made: list[KitParent] = []
            got: list[Any] = []
            for round_ in range(3):
                made.append(db.create(KitParent(name=f"a{round_}", topic="a")))
                other = db.create(KitParent(name=f"b{round_}", topic="b")).nbdb_revision
                made.append(db.create(KitParent(name=f"c{round_}", topic="a")))
                stream.reach(int(other))  # type: ignore[arg-type]
                for _ in range(50):
                    got.extend(stream.poll(0.1))
                    if stream.revision >= int(other) and len(got) == len(made):  # type: ignore[arg-type]
                        break
            for _ in range(3):
                got.extend(stream.poll(0.05))  # served: narrows again
            # A revision no commit of the namespace passes (past the store's): wide for _WIDE_FOR only.
            monkeypatch.setattr(etcd_stream, "_WIDE_FOR", 0.2)
            stream.reach(backend.current_revision() + 1000)
            for _ in range(8):
                got.extend(stream.poll(0.05))
            made.append(db.create(KitParent(name="d", topic="a")))
            for _ in range(50):
                got.extend(stream.poll(0.1))
                if len(got) == len(made):
                    break
            assert [(c.id, c.topic) for c in got] == [(m.id, "a") for m in made]
            swaps = [r.getMessage().split()[2] for r in caplog.records if r.name == etcd_stream.__name__]
            assert swaps[0] == "widening" and swaps[-1] == "narrowing" and len(swaps) >= 4
            assert all(a != b for a, b in itertools.pairwise(swaps))
        finally:
            stream.close()
