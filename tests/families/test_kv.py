"""The key-value family's logic, with races made deterministic on the memory backend."""

from __future__ import annotations

import dataclasses
import gc
import json
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import nbdb
from nbdb.api import Database
from nbdb.families import kvplan
from nbdb.families.kv import (
    CommitToken,
    Condition,
    Exists,
    KeyChange,
    KeyValue,
    KeyValueBackend,
    LeaseHeld,
    PrefixUnchangedSince,
    ValueIs,
    VersionIs,
)
from nbdb.families.kvplan import Index, KeyLayout
from nbdb.families.kvstore import ChangeSignal, PolledKeyStream, condition_holds, key_changes
from nbdb.families.rules import NO_TOPIC, shape_of, topic_part
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.spi import Delete, Record, UniqueKey
from nbdb.testing.kvmemory import KVMemoryBackend as MemoryBackend
from nbdb.testing.kvmemory import MemoryStore

pytestmark = pytest.mark.timeout(30)


class InterleavingBackend(MemoryBackend):
    """Runs ``before_commit`` once, between planning a commit and committing it; records what it is sent."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store)
        self.before_commit: Any = None
        self.conditions: list[Condition] = []
        self.commits: list[list[Condition]] = []
        """The conditions of every commit, in order."""
        self.ranges: list[list[str]] = []
        """The prefixes of every range read, in order."""

    def range_keys(self, prefixes: Sequence[str]) -> tuple[list[KeyValue], int]:
        self.ranges.append(list(prefixes))
        return super().range_keys(prefixes)

    def commit_keys(
        self,
        conditions: Sequence[Condition],
        puts: Mapping[str, bytes],
        deletes: Sequence[str],
        token: CommitToken | None = None,
    ) -> int | None:
        self.conditions = list(conditions)
        self.commits.append(self.conditions)
        hook, self.before_commit = self.before_commit, None
        if hook is not None:
            hook()
        return super().commit_keys(conditions, puts, deletes, token)


@pytest.fixture
def pair() -> Iterator[tuple[Database, Database, InterleavingBackend]]:
    store = MemoryStore()
    racer = InterleavingBackend(store)
    with Database(racer) as racer_db, Database(MemoryBackend(store)) as other:
        yield racer_db, other, racer


def test_child_created_between_plan_and_commit_blocks_the_delete(pair: Any) -> None:
    racer_db, other, racer = pair
    ls = racer_db.create(LogicalSwitch(name="sw"))
    racer.before_commit = lambda: other.create(LogicalSwitchPort(switch=ls, name="late"))
    with pytest.raises(nbdb.ReferenceError):
        racer_db.delete(ls)
    assert any(isinstance(c, PrefixUnchangedSince) for c in racer.conditions)
    assert racer_db.get(LogicalSwitch, ls.id)
    assert [p.name for p in other.list(LogicalSwitchPort)] == ["late"]


def test_parent_deleted_between_plan_and_commit_blocks_the_create(pair: Any) -> None:
    racer_db, other, racer = pair
    ls = other.create(LogicalSwitch(name="sw"))
    racer.before_commit = lambda: other.delete(LogicalSwitch, ls.id)
    with pytest.raises(nbdb.ReferenceError):
        racer_db.create(LogicalSwitchPort(switch=ls, name="p"))
    assert any(isinstance(c, Exists) for c in racer.conditions)
    assert list(other.list(LogicalSwitchPort)) == []


def test_concurrent_update_between_plan_and_commit_is_a_conflict(pair: Any) -> None:
    racer_db, other, racer = pair
    ls = racer_db.create(LogicalSwitch(name="sw"))
    racer.before_commit = lambda: other.update(other.get(LogicalSwitch, ls.id).replace(name="theirs"))
    with pytest.raises(nbdb.ConflictError):
        racer_db.update(ls.replace(name="mine"))
    assert other.get(LogicalSwitch, ls.id).name == "theirs"
    assert any(isinstance(c, VersionIs) and c.version == 1 for c in racer.conditions)


def test_benign_race_is_retried(pair: Any) -> None:
    """A referrer that comes and goes between plan and commit makes the family re-plan, not fail."""
    racer_db, other, racer = pair
    ls = racer_db.create(LogicalSwitch(name="sw"))

    def come_and_go() -> None:
        port = other.create(LogicalSwitchPort(switch=ls, name="transient"))
        other.delete(port)

    racer.before_commit = come_and_go
    racer_db.delete(ls)
    with pytest.raises(nbdb.NotFoundError):
        other.get(LogicalSwitch, ls.id)


def test_stale_topic_cache_falls_back_to_the_index(pair: Any) -> None:
    racer_db, other, _ = pair
    ls = racer_db.create(LogicalSwitch(name="sw", topic="t1"))
    assert racer_db.get(LogicalSwitch, ls.id).topic == "t1"
    other.delete(LogicalSwitch, ls.id)
    again = other.create(LogicalSwitch(id=ls.id, name="sw2", topic="t2"))
    got = racer_db.get(LogicalSwitch, ls.id)
    assert (got.topic, got.name) == ("t2", "sw2")
    assert racer_db.update(got.replace(name="sw3")).version == again.version + 1


def test_update_without_known_refs_reads_them(pair: Any) -> None:
    racer_db, other, _ = pair
    a = racer_db.create(LogicalSwitch(name="a"))
    b = racer_db.create(LogicalSwitch(name="b"))
    port = racer_db.create(LogicalSwitchPort(switch=a, name="p"))
    # A copy built by hand carries no knowledge of the stored references.
    by_hand = LogicalSwitchPort(id=port.id, version=port.version, switch=b.id, name="p")
    racer_db.update(by_hand)
    other.delete(a)
    with pytest.raises(nbdb.ReferenceError):
        other.delete(b)


def test_index_record_corruption_is_reported(pair: Any) -> None:
    racer_db, _, racer = pair
    ls = racer_db.create(LogicalSwitch(name="sw"))
    racer._topic_cache.clear()
    key = racer.layout.index("LogicalSwitch", ls.id)
    racer.store.data[key] = racer.store.data[key]._replace(value=b"garbage")
    with pytest.raises(nbdb.CorruptRecordError):
        racer_db.get(LogicalSwitch, ls.id)


def test_corrupt_counter_is_reported() -> None:
    backend = MemoryBackend()
    db = Database(backend)
    db.allocate_id("c")
    backend.store.data["n/c"] = backend.store.data["n/c"]._replace(value=b"seven")
    with pytest.raises(nbdb.CorruptRecordError):
        db.allocate_id("c")


def test_ids_of_unknown_objects_in_topic_filter_keys() -> None:
    layout = MemoryBackend().layout
    assert layout.object_prefixes(["A"], None) == ["o/"]
    assert layout.object_prefixes(["A", "B"], ["t1", None]) == ["o/t1/A/", "o/t1/B/", "o/~/A/", "o/~/B/"]
    assert layout.object_prefixes([f"T{i}" for i in range(20)], ["t1"]) == ["o/t1/"]
    assert layout.parse_object("o/~/A/" + str(uuid.UUID(int=1))) == (None, "A", uuid.UUID(int=1))
    assert layout.parse_object("i/A/x") is None


_ID_TEXTS = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: u.hex),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: "{" + str(u) + "}"),
    st.uuids().map(lambda u: str(u)[:-1]),  # one digit short
    st.uuids().map(lambda u: str(u).replace("-", "", 1) + "-"),  # a dash out of place
    st.text(alphabet="0123456789abcdefg-{}:urn", max_size=40),
)
_OBJECT_KEYS = st.one_of(
    st.tuples(
        st.sampled_from(["p/o/", "p/i/", "q/o/", "p/"]), st.sampled_from(["~", "t1"]), st.sampled_from("AB"), _ID_TEXTS
    ).map(lambda parts: f"{parts[0]}{parts[1]}/{parts[2]}/{parts[3]}"),
    st.tuples(_ID_TEXTS, st.sampled_from(["", "/", "/x"])).map(lambda parts: f"p/o/t/A/{parts[0]}{parts[1]}"),
)


@given(keys=st.lists(_OBJECT_KEYS, max_size=12), tables=st.sampled_from([{"A"}, {"B"}, {"A", "B"}, set()]))
def test_keys_parsed_in_bulk_as_one_by_one(keys: list[str], tables: set[str]) -> None:
    # A scan parses its ids in one call; every key (an odd id, another key, a key of another
    # prefix or table among them) gets what parsing it alone gives, its row's value and version kept.
    layout = KeyLayout("p/")
    rows = [(key, b"value %d" % n, n + 1) for n, key in enumerate(keys)]
    alone = [(row, layout.parse_object(row[0])) for row in rows]
    expected = [Record(p[1], p[2], p[0], row[2], row[1]) for row, p in alone if p is not None and p[1] in tables]
    got = layout.records(rows, tables)
    assert got == expected
    assert [type(record) for record in got] == [Record] * len(expected)


# ---------------------------------------------------------------- helpers for stores that apply commits themselves

_KEYS = st.sampled_from(["a", "b", "c", "d"])


@given(
    stored=st.dictionaries(_KEYS, st.tuples(st.binary(max_size=3), st.integers(1, 5))),
    puts=st.dictionaries(_KEYS, st.binary(max_size=3)),
    deletes=st.lists(_KEYS, unique=True),
)
def test_key_changes_follow_the_version_rules(
    stored: dict[str, tuple[bytes, int]], puts: dict[str, bytes], deletes: list[str]
) -> None:
    current = {k: KeyValue(k, v, ver, 1) for k, (v, ver) in stored.items()}
    changes = key_changes(current, puts, deletes, revision=7)
    assert len({c.key for c in changes}) == len(changes), "one change per key"
    after = {k: (kv.value, kv.version) for k, kv in current.items()}
    for change in changes:
        assert change.revision == 7
        old = current.get(change.key)
        assert (change.prev_value, change.prev_version) == ((None, 0) if old is None else (old.value, old.version))
        if change.value is None:
            del after[change.key]
        else:
            after[change.key] = (change.value, change.version)
    expected = dict(stored)
    expected.update({k: (v, (stored[k][1] + 1) if k in stored else 1) for k, v in puts.items()})
    for key in deletes:
        expected.pop(key, None)
    assert after == expected


@given(
    prefix=st.sampled_from(["", "ns/"]),
    table=st.text(st.characters(blacklist_characters="/", blacklist_categories=("Cs",)), min_size=1, max_size=8),
    value=st.text(max_size=8),
)
def test_a_unique_key_s_table_is_read_back_and_no_other_key_has_one(prefix: str, table: str, value: str) -> None:
    layout = KeyLayout(prefix)
    assert layout.unique_table(layout.unique(table, UniqueKey("name", value))) == table
    others = [layout.index(table, "x"), layout.object(None, table, "x"), layout.lock("u/x"), layout.counter("u")]
    assert [layout.unique_table(key) for key in [*others, f"{prefix}u/", f"{prefix}u//x"]] == [None] * 6


_X, _Y = "00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000b"


@given(
    owner=st.sampled_from([_X.encode(), _Y.encode(), _X.upper().encode(), b"x", b"\xff", b"", None]),
    beside=st.booleans(),
    holds=st.sampled_from(["the value", "another value", "nothing", "a damaged index"]),
)
def test_a_released_claim_must_name_an_object_the_commit_writes_or_one_that_holds_it(
    owner: bytes | None, beside: bool, holds: str
) -> None:
    # The commit released the claim of "a" as _X's (its ValueIs failed). It names the object releasing it, or
    # another the commit writes (``beside``): deleted as planned, under a condition on what it holds. Gone:
    # left gone (its absence the condition). Naming another object that holds the value (its index lists it):
    # true, and the released object's index is another writer's damage: it stays, the commit goes ahead. Any
    # other is another writer's: CorruptRecordError, and the key is left as it was.
    backend = MemoryBackend()
    layout = backend.layout
    value = UniqueKey("name", '"a"')
    claim = layout.unique("T", value)
    records = {
        "the value": layout.encode_index(Index(None, frozenset(), (UniqueKey("other", "1"), value))),
        "another value": layout.encode_index(Index(None, frozenset(), (UniqueKey("name", '"b"'),))),
        "a damaged index": b'{"t": "~", "r": [], "u": 7}',
    }
    text = "" if owner is None else owner.decode(errors="replace")
    puts = {} if owner is None else {claim: owner}
    if holds in records:
        puts[layout.index("T", text)] = records[holds]
    assert backend.commit_once([], puts, []) is not None
    ops = [Delete("T", uuid.UUID(_X), None), *([Delete("T", uuid.UUID(_Y), None)] if beside else ())]
    plan = kvplan.Plan(released={claim: _X.encode()})
    claims: kvplan.Claims = {}
    if owner is None:
        kvplan.vet_released(backend, ops, plan, claims)
        assert claims == {claim: (None, False)}
    elif owner == _X.encode() or (beside and owner == _Y.encode()):
        kvplan.vet_released(backend, ops, plan, claims)
        assert claims == {claim: (owner, False)}
    elif owner == _Y.encode() and holds == "the value":
        kvplan.vet_released(backend, ops, plan, claims)
        assert claims == {claim: (owner, True)}
    else:
        with pytest.raises(nbdb.CorruptRecordError, match="which this write releases") as refused:
            kvplan.vet_released(backend, ops, plan, claims)
        assert refused.value.key == claim and refused.value.table == "T"
        found = backend.get_key(claim)
        assert found is not None and found.value == owner
        assert claims == {}


def test_a_plan_releases_a_claim_as_a_failed_attempt_found_it() -> None:
    # As planned: ValueIs(claim, the releasing id) and its delete; found gone: absent, not deleted; found with
    # its true holder: ValueIs(claim, that holder), not deleted (the commit goes on without it).
    backend = MemoryBackend()
    with Database(backend) as db:
        switch = db.create(LogicalSwitch(name="sw"))
        port = db.create(LogicalSwitchPort(switch=switch.id, name="p"))
        other = uuid.uuid4()
        ops = [Delete("LogicalSwitchPort", port.id, None)]
        shape = shape_of(ops)
        plan = kvplan.plan_commit(backend, ops, shape, time.time())
        (claim,) = plan.released
        assert plan.released[claim] == str(port.id).encode()
        assert ValueIs(claim, str(port.id).encode()) in plan.conditions and claim in plan.deletes
        for found, condition, deleted in [
            ((None, False), VersionIs(claim, 0), False),
            ((str(other).encode(), True), ValueIs(claim, str(other).encode()), False),
            ((str(port.id).encode(), False), ValueIs(claim, str(port.id).encode()), True),
        ]:
            again = kvplan.plan_commit(backend, ops, shape, time.time(), claims={claim: found})
            (found_condition,) = [c for c in again.conditions if getattr(c, "key", None) == claim]
            assert found_condition == condition and type(found_condition) is type(condition)
            assert (claim in again.deletes) is deleted


def test_conditions_are_checked_against_stored_values() -> None:
    stored = {"k": KeyValue("k", b"v", 3, 10)}
    never_changed = lambda prefix, revision: False  # noqa: E731
    leases = {"lock": b"me"}

    def holds(name: str, token: bytes) -> bool:
        return leases.get(name) == token

    assert condition_holds(VersionIs("k", 3), stored, never_changed, holds)
    assert not condition_holds(VersionIs("k", 2), stored, never_changed, holds)
    assert condition_holds(VersionIs("absent", 0), stored, never_changed, holds)
    assert condition_holds(Exists("k"), stored, never_changed, holds)
    assert not condition_holds(Exists("absent"), stored, never_changed, holds)
    seen: list[tuple[str, int]] = []

    def changed(prefix: str, revision: int) -> bool:
        seen.append((prefix, revision))
        return True

    assert not condition_holds(PrefixUnchangedSince("r/", 9), stored, changed, holds)
    assert seen == [("r/", 9)]
    assert condition_holds(LeaseHeld("lock", b"me"), stored, never_changed, holds)
    assert not condition_holds(LeaseHeld("lock", b"you"), stored, never_changed, holds)
    assert not condition_holds(LeaseHeld("other", b"me"), stored, never_changed, holds)
    assert condition_holds(ValueIs("k", b"v"), stored, never_changed, holds)
    assert not condition_holds(ValueIs("k", b"w"), stored, never_changed, holds)
    assert not condition_holds(ValueIs("absent", b""), stored, never_changed, holds)


class ScriptedLog:
    """A change log in a list, read the way PolledKeyStream reads a store's log."""

    def __init__(self) -> None:
        self.changes: list[KeyChange] = []
        self.revision = 0
        self.compacted = 0
        self.reads = 0

    def append(self, key: str) -> None:
        self.revision += 1
        self.changes.append(KeyChange(key, b"x", 1, None, 0, self.revision))

    def read(self, since: int) -> tuple[list[KeyChange], int]:
        self.reads += 1
        if since < self.compacted:
            raise nbdb.HistoryGoneError(f"{since} is gone")
        return [c for c in self.changes if c.revision > since and c.key.startswith("o/")], self.revision


def test_polled_stream_reads_after_its_revision_and_advances_past_unwanted_changes() -> None:
    log, signal = ScriptedLog(), ChangeSignal()
    stream = PolledKeyStream(log.read, 0, signal, interval=0.01)
    log.append("o/1")
    log.append("x/unwanted")
    assert [c.key for c in stream.poll(1)] == ["o/1"]
    assert stream.revision == 2
    log.append("x/unwanted")
    assert stream.poll(0.05) == []
    assert stream.revision == 3, "a resume point moves past changes the stream does not want"
    log.compacted = 5
    log.revision = 6
    with pytest.raises(nbdb.HistoryGoneError):
        stream.poll(1)


def test_polled_stream_wakes_on_a_local_commit_and_polls_for_others() -> None:
    log, signal = ScriptedLog(), ChangeSignal()
    stream = PolledKeyStream(log.read, 0, signal, interval=30.0)  # polling alone would take 30 s

    def commit() -> None:
        log.append("o/1")
        signal.notify()

    threading.Timer(0.1, commit).start()
    started = time.monotonic()
    assert [c.key for c in stream.poll(10)] == ["o/1"]
    assert time.monotonic() - started < 5
    polling = PolledKeyStream(log.read, 1, ChangeSignal(), interval=0.01)  # another process's commit: no signal
    threading.Timer(0.1, log.append, ["o/2"]).start()
    assert [c.key for c in polling.poll(10)] == ["o/2"]


def test_closing_a_polled_stream_releases_a_blocked_poll_and_its_resources() -> None:
    log, signal, closed = ScriptedLog(), ChangeSignal(), threading.Event()
    stream = PolledKeyStream(log.read, 0, signal, interval=30.0, on_close=closed.set)
    threading.Timer(0.1, stream.close).start()
    started = time.monotonic()
    assert stream.poll(None) == []
    assert time.monotonic() - started < 5
    assert closed.is_set()
    assert stream.poll(1) == []


def test_a_unique_value_taken_between_plan_and_commit_is_a_violation(pair: Any) -> None:
    from nbdb.conformance.kit import KitNamed

    racer_db, other, racer = pair
    racer.before_commit = lambda: other.create(KitNamed(name="raced"))
    with pytest.raises(nbdb.UniqueViolationError) as caught:
        racer_db.create(KitNamed(name="raced"))
    assert caught.value.existing == other.get_by(KitNamed, name="raced").id  # type: ignore[union-attr]
    assert len(other.list(KitNamed)) == 1


def test_the_reaper_deletes_expired_objects_but_not_refreshed_ones() -> None:
    backend = MemoryBackend()
    db = Database(backend, reap=False)
    watch = db.watch(LogicalSwitch)
    doomed = db.create(LogicalSwitch(name="doomed"), ttl=0.05)
    saved = db.create(LogicalSwitch(name="saved"), ttl=0.05)
    time.sleep(0.1)
    db.refresh(saved, 60)  # a refresh that lands before the reaper wins
    assert backend.reap() == 1
    assert backend.reap() == 0
    with pytest.raises(nbdb.NotFoundError):
        db.get(LogicalSwitch, doomed.id)
    assert db.get(LogicalSwitch, saved.id).name == "saved"
    kinds = [(e.kind, e.id) for e in watch.poll(1)]
    assert (nbdb.EventKind.DELETED, doomed.id) in kinds
    assert not any(key.startswith("e/") and doomed.id.hex in key.replace("-", "") for key in backend.store.data)


@given(
    st.one_of(st.none(), st.text(max_size=12).filter(lambda t: t != NO_TOPIC)),
    st.frozensets(st.tuples(st.text(max_size=12), st.uuids()), max_size=4),
    st.lists(st.tuples(st.text(max_size=8), st.text(max_size=20)), max_size=3),
    st.one_of(st.none(), st.floats(min_value=0.001, max_value=1e9)),
)
def test_index_records_are_the_json_of_their_fields(
    topic: str | None, refs: frozenset[tuple[str, uuid.UUID]], unique: list[tuple[str, str]], ttl: float | None
) -> None:
    """The spelled-out encoder writes what json.dumps writes, and it reads back to the same index."""
    index = Index(topic, refs, tuple(UniqueKey(f, v) for f, v in unique), ttl)
    doc: dict[str, object] = {"t": topic_part(topic), "r": sorted([t, str(i)] for t, i in refs)}
    if unique:
        doc["u"] = [[f, v] for f, v in unique]
    if ttl is not None:
        doc["x"] = ttl
    encoded = KeyLayout.encode_index(index)
    assert encoded == json.dumps(doc).encode()
    decoded = KeyLayout.decode_index(KeyValue("i/T/x", encoded, 3, 1))
    assert (decoded.topic, decoded.refs, decoded.unique, decoded.ttl) == (topic, refs, index.unique, ttl)


@pytest.mark.parametrize("owner", [False, True])
def test_an_unreferenced_delete_is_one_commit_that_finds_its_referrers_prefix_empty(owner: bool) -> None:
    # A router owns nothing: its delete is sent as it is, no referrers read first. A switch owns its
    # forwarding groups: its delete walks them first (one read of its referrers, none found), and the
    # commit checks that none appeared since that read.
    from nbdb.models import LogicalRouter

    model: type[LogicalSwitch | LogicalRouter] = LogicalSwitch if owner else LogicalRouter
    backend = InterleavingBackend(MemoryStore())
    with Database(backend) as db:
        obj = db.create(model(name="x"))
        backend.ranges.clear()
        backend.commits.clear()
        db.delete(obj)
        prefix = backend.layout.referrers((model.nbdb_table, obj.id))
        assert backend.ranges == ([[prefix]] if owner else [])
        [conditions] = backend.commits
        checks = [c for c in conditions if isinstance(c, PrefixUnchangedSince) and c.prefix == prefix]
        assert len(checks) == 1 and (owner or checks[0].revision == 0), conditions
        with pytest.raises(nbdb.NotFoundError):
            db.get(model, obj.id)


@pytest.fixture
def referenced() -> Iterator[tuple[InterleavingBackend, Database, LogicalSwitch, LogicalSwitchPort]]:
    """A switch and a port that references it, on a recording backend."""
    backend = InterleavingBackend(MemoryStore())
    with Database(backend) as db:
        ls = db.create(LogicalSwitch(name="sw"))
        yield backend, db, ls, db.create(LogicalSwitchPort(switch=ls, name="p"))


def test_a_referenced_delete_reads_its_referrers_and_is_refused(referenced: Any) -> None:
    backend, db, ls, port = referenced
    backend.ranges.clear()
    backend.commits.clear()
    with pytest.raises(nbdb.ReferenceError, match=str(port.id)):
        db.delete(ls)
    # The switch owns forwarding groups: its walk read the referrers (the port), and the refused commit
    # named them (it was sent alone, refused, and the refusal's read).
    assert len(backend.ranges) == 2 and len(backend.commits) == 1
    assert db.get(LogicalSwitch, ls.id).version == ls.version
    assert db.get(LogicalSwitchPort, port.id).name == "p"


def _switch_ranges(backend: InterleavingBackend, ls: LogicalSwitch) -> int:
    return sum(prefixes == [f"r/LogicalSwitch/{ls.id}/"] for prefixes in backend.ranges)


def _group(ls: LogicalSwitch) -> Any:
    from nbdb.models.ovn import ForwardingGroup

    return ForwardingGroup(switch=ls, name="fg", vip="10.0.0.9", vmac="0a:00:00:00:00:09", child_port=["p"])


def test_an_owners_delete_plans_its_owned_objects_before_its_one_commit(referenced: Any) -> None:
    # A switch holding a forwarding group: its delete lists the switch's referrers and commits the switch
    # and its group at once (it was sent alone, refused, and committed again: two commits, and three
    # reads of the switch's referrers with the refusal's and the last commit's check).
    from nbdb.models.ovn import ForwardingGroup

    backend, db, ls, port = referenced
    db.delete(port)
    group = db.create(_group(ls))
    backend.ranges.clear()
    backend.commits.clear()
    db.delete(ls)
    assert db.list(LogicalSwitch) == [] and db.list(ForwardingGroup) == []
    assert len(backend.commits) == 1  # the switch and its group in one commit
    # The walk's read, and the commit's check that its deletes leave no referrer.
    assert _switch_ranges(backend, ls) == 2
    # No model holds a group weakly or owns one: its referrers are the commit's to check, not walked.
    assert [f"r/ForwardingGroup/{group.id}/"] not in backend.ranges


def test_an_owners_delete_refused_for_a_referrer_it_does_not_own_reads_its_referrers_once(referenced: Any) -> None:
    # The walk read the port beside the group, and the store's refusal named it: no plan can take the port,
    # so the delete is refused there, weighed from the walk's reads (it planned the group's delete,
    # committed it to be refused, and planned it again: four reads of the switch's referrers and three
    # commits; then the lone delete refused, and the refusal's read: one read and one commit). The
    # commit's planner reads the referrers too, to check that its deletes leave none: it finds the port
    # and refuses the commit before sending it.
    from nbdb.models.ovn import ForwardingGroup

    backend, db, ls, port = referenced
    group = db.create(_group(ls))
    backend.ranges.clear()
    backend.commits.clear()
    with pytest.raises(nbdb.ReferenceError, match=str(port.id)):
        db.delete(ls)
    assert _switch_ranges(backend, ls) == 2 and backend.commits == []  # the walk's and the planner's
    assert db.get(ForwardingGroup, group.id) == group and db.get(LogicalSwitchPort, port.id) == port


def test_a_transaction_refused_for_a_referrer_no_plan_takes_reads_its_referrers_once(referenced: Any) -> None:
    # As a plain delete: the switch's group would go along, its port never. The transaction's delete walks
    # first as the plain one does (it was sent alone, and the store's refusal named both: one read of the
    # switch's referrers and one commit, then the plan), and the planner refuses it before sending it.
    backend, db, ls, port = referenced
    group = db.create(_group(ls))
    backend.ranges.clear()
    backend.commits.clear()
    with pytest.raises(nbdb.ReferenceError, match=str(port.id)), db.transaction() as txn:
        txn.delete(ls)
    assert _switch_ranges(backend, ls) == 2 and backend.commits == []  # the walk's and the planner's
    assert db.get(type(group), group.id) == group and db.get(LogicalSwitchPort, port.id) == port


def test_a_delete_that_drops_its_referrers_in_the_same_transaction_reads_them_first(referenced: Any) -> None:
    backend, db, ls, port = referenced
    backend.commits.clear()
    with db.transaction() as txn:
        txn.delete(port)
        txn.delete(ls)
    assert len(backend.commits) == 1  # planned right the first time: no failed optimistic commit
    assert db.list(LogicalSwitch) == [] and db.list(LogicalSwitchPort) == []


def test_the_planners_memos_keep_nothing_the_garbage_collector_tracks() -> None:
    """What the planner remembers of each object it writes (its id as text, its index record's parts, its
    unique keys) is kept as text and integers: a UUID or a UniqueKey kept per created object is one more
    object that every full collection walks, and brings the next one sooner."""
    backend = MemoryBackend(MemoryStore())
    with Database(backend) as db:
        switch = db.create(LogicalSwitch(name="sw", topic="t1"))
        with db.transaction() as txn:
            for i in range(20):
                txn.create(LogicalSwitchPort(switch=switch, name=f"p{i}", topic="t1"))
        ports = [db.update(p.replace(up=True)) for p in txn.results]
        for port in ports[:10]:
            db.delete(port)
        assert len(db.list(LogicalSwitchPort)) == 10
    gc.collect()  # plain tuples of text are untracked here
    memos = [getattr(kvplan, name, {}) for name in ("_TEXTS", "_REFS_JSON", "_TOPICS_JSON")]
    memos.append(backend.layout._unique)
    assert len(backend.layout._unique) >= 20 and memos[0]  # unique keys and ids were remembered
    tracked = [type(part).__name__ for memo in memos for item in memo.items() for part in item if gc.is_tracked(part)]
    assert tracked == []


class _RevivingLeases(MemoryBackend):
    """Renews a lease for whoever asks: a holder whose lease ran out takes it back from its successor."""

    def renew_lease(self, name: str, token: bytes, ttl: float) -> bool:
        with self.store.cond:
            self.store.leases.release(name, self.store.leases._held.get(name, (b"", 0.0))[0])
            return self.store.leases.acquire(name, token, ttl)


def test_the_kit_checks_lease_primitives_and_catches_a_renewal_that_revives_a_lost_lease() -> None:
    from nbdb.conformance.kit import check_lease_primitives

    check_lease_primitives(MemoryBackend(), "sound", ttl=0.2)
    with pytest.raises(AssertionError, match="renew_lease"):
        check_lease_primitives(_RevivingLeases(), "revived", ttl=0.2)


class _PrefixedMemory(MemoryBackend):
    """The in-process store under a key prefix (a namespace): its leases stay in the store's one lease table."""

    def __init__(self, store: MemoryStore, key_prefix: str) -> None:
        super().__init__(store)
        self.key_prefix = key_prefix
        self.layout = kvplan.KeyLayout(key_prefix)


def test_the_kit_catches_locks_shared_across_namespaces() -> None:
    from nbdb.conformance.kit import check_namespaces_isolate_locks

    with nbdb.connect("memory://", namespace="a") as a, nbdb.connect("memory://", namespace="b") as b:
        check_namespaces_isolate_locks(a, b, timeout=0.5)
    store = MemoryStore()
    with Database(_PrefixedMemory(store, "a/")) as a, Database(_PrefixedMemory(store, "b/")) as b:
        with pytest.raises(pytest.fail.Exception, match="keep leases per namespace"):
            check_namespaces_isolate_locks(a, b, timeout=0.5)


class _ClaimsPages(MemoryBackend):
    """Declares pages (a copied declaration) and has no range_page."""

    capabilities = dataclasses.replace(MemoryBackend.capabilities, pages=True)


def test_a_backend_claiming_pages_without_range_page_is_told_which_method_and_capability() -> None:
    with Database(_ClaimsPages()) as db:
        db.create(LogicalSwitch(name="s"))
        with pytest.raises(nbdb.UnsupportedError, match=r"range_page.*capabilities\.pages"):
            db.list(LogicalSwitch, limit=1)


class _LeasesApartFromKeys(MemoryBackend):
    """Keeps its leases apart from its keys yet uses the family's lease_held, which reads the lock's key."""

    lease_held = KeyValueBackend.lease_held


def test_the_kit_tells_a_conflict_under_a_held_lock_from_a_lost_lock() -> None:
    from nbdb.conformance.test_data_api import test_fenced_writes_commit_only_under_the_lock as kit_test

    for backend, fails in ((MemoryBackend, False), (_LeasesApartFromKeys, True)):
        store = MemoryStore()
        opened: list[Database] = []
        factory = partial(_open_on, opened, backend, store)
        try:
            if fails:
                with pytest.raises(nbdb.LockLostError):
                    kit_test(factory)
            else:
                kit_test(factory)
        finally:
            for db in opened:
                db.close()


def _open_on(opened: list[Database], backend: type[MemoryBackend], store: MemoryStore) -> Database:
    opened.append(Database(backend(store)))
    return opened[-1]
