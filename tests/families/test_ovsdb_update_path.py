"""The shortcuts of a planned update (issue 14): each gives what the general step it stands for gives.

A compare-and-swap's columns sorted once per table, a parent's id parsed once per text, an
update's bookkeeping without the mark book when its row holds no mark, the collector paused by a
plain context manager, a lone commit sent without the batch's lists: all of them for less CPU
per commit, none with a different result.
"""

from __future__ import annotations

import gc
import json
import threading
import time
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbdb import errors
from nbdb.codec import bulk, encode
from nbdb.families.ovsdb import ops
from nbdb.families.ovsdb.group import GroupTransact
from nbdb.families.ovsdb.mutations import MarkBook, mark_of
from nbdb.families.ovsdb.planner import _bookkeeping, _compared
from nbdb.families.ovsdb.rows import (
    EXT_EXPIRES,
    EXT_MARK,
    EXT_PARENT,
    EXT_TTL,
    EXT_VERSION,
    LEDGER_SETTLE,
    LEDGER_SKEW,
    carried,
    new_row,
    stale_marks,
    stored_columns,
)
from nbdb.models import LogicalSwitch, LogicalSwitchPort

from .conftest import make_mapping

pytestmark = pytest.mark.timeout(120)


def test_a_compare_and_swap_waits_on_its_columns_sorted_once_per_table() -> None:
    mapping = make_mapping()
    for tm in mapping.tables.values():
        stored = stored_columns(tm, {})
        columns = _compared(tm, stored)
        assert columns == sorted(stored)
        assert _compared(tm, dict(stored)) is columns  # sorted once, then shared
        other = {"b": 1, "a": 2}
        assert _compared(tm, other) == ["a", "b"]  # columns of another row: sorted as they are
        fewer = dict(stored)
        fewer.pop(next(iter(fewer)))
        assert _compared(tm, fewer) == sorted(fewer)


def _port(switch: str) -> dict[str, Any]:
    """A port's document (as a put carries it) with ``switch`` as its parent's text."""
    doc: dict[str, Any] = json.loads(encode(LogicalSwitchPort(switch=uuid.uuid4(), name="p")))
    doc["switch"] = switch
    return doc


_TEXTS = st.uuids().flatmap(
    lambda u: st.sampled_from([str(u), str(u).upper(), u.hex, "{" + str(u) + "}", u.urn, u.hex.upper()])
)


@settings(max_examples=200, deadline=None)
@given(_TEXTS)
def test_a_parents_text_gives_its_id_and_canonical_text_every_time(text: str) -> None:
    tm = make_mapping().get(LogicalSwitchPort.nbdb_table)
    doc = _port(text)
    for _ in range(2):  # parsed, then found
        made = new_row(tm, doc)
        assert made.parents == {"switch": uuid.UUID(text)}
        assert made.ext[EXT_PARENT + "switch"] == str(uuid.UUID(text))


@settings(max_examples=200, deadline=None)
@given(st.one_of(_TEXTS, st.text(max_size=40), st.integers(), st.none()))
def test_a_known_id_reads_as_a_fresh_parse_would_every_time(text: Any) -> None:
    """The memos of ids (ops.parse_uuid, ops.uuid_text) answer what uuid.UUID does, seen before or not."""
    try:
        expected: uuid.UUID | None = uuid.UUID(str(text))
    except ValueError:
        expected = None
    for _ in range(2):  # parsed, then found
        got = ops.parse_uuid(text)
        assert got == expected
        if got is not None:
            assert ops.uuid_text(got) == str(expected)
            assert ops.parse_uuid(ops.uuid_text(got)) == expected


def test_a_parent_that_is_no_id_is_refused_every_time_and_the_known_ids_stay_bounded() -> None:
    tm = make_mapping().get(LogicalSwitchPort.nbdb_table)
    for _ in range(2):
        with pytest.raises(errors.ValidationError, match="not an id"):
            new_row(tm, _port("no-id"))
    for _ in range(ops._KNOWN_LIMIT + 10):
        new_row(tm, _port(str(uuid.uuid4())))
        assert len(ops._PARSED) <= ops._KNOWN_LIMIT and len(ops._TEXTS) <= ops._KNOWN_LIMIT
    switch = LogicalSwitch(name="sw")
    made = new_row(tm, _port(str(switch.id)))
    assert made.parents == {"switch": switch.id}


_NOW = 1_000_000.0
_MARKS = st.sampled_from(["a", "b", "c", "d"]).map(lambda t: EXT_MARK + t)
_MARK_VALUES = st.sampled_from([str(int(_NOW)), str(int(_NOW - 2 * LEDGER_SKEW)), "junk", ""])
_EXT = st.dictionaries(
    st.one_of(_MARKS, st.sampled_from([EXT_TTL, EXT_EXPIRES, EXT_VERSION, "user", "nbdb:field:x"])),
    _MARK_VALUES,
    max_size=6,
)


@settings(max_examples=400, deadline=None)
@given(_EXT, st.lists(_MARKS, max_size=3), st.lists(_MARKS, max_size=2))
def test_an_updates_bookkeeping_is_what_carried_and_the_mark_book_make(
    ext: dict[str, str], settled: list[str], elsewhere: list[str]
) -> None:
    key = ("Logical_Switch_Port", uuid.UUID(int=1))
    book = MarkBook()
    for name in settled:  # this writer's settled marks of the row
        book.settled({key: (name, "1")}, {})
    for name in elsewhere:  # another row's settled marks drop nothing here
        book.settled({("Logical_Switch_Port", uuid.UUID(int=2)): (name, "1")}, {})
    dropped = book.droppable(key, ext, _NOW)
    assert _bookkeeping(book, key, ext, _NOW) == (carried(ext, _NOW, dropped), dropped)


def test_bulk_pauses_the_collector_and_leaves_a_paused_one_paused() -> None:
    was = gc.isenabled()
    try:
        gc.enable()
        with bulk():
            assert not gc.isenabled()
            with bulk():
                assert not gc.isenabled()
            assert not gc.isenabled()  # the inner block found it paused: left so
        assert gc.isenabled()
        with pytest.raises(KeyError), bulk():
            raise KeyError("x")
        assert gc.isenabled()  # enabled again after an error too
        gc.disable()
        with bulk():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()


class _Lost(Exception):
    pass


class _NotSent(Exception):
    pass


def test_a_lone_commit_is_sent_as_it_is_refused_when_its_time_ran_out_and_gets_its_own_error() -> None:
    sent: list[tuple[str, list[dict[str, Any]], float | None]] = []

    def transact(db: str, ops: list[dict[str, Any]], deadline: float | None = None) -> list[Any]:
        sent.append((db, ops, deadline))
        if ops and ops[0].get("fail"):
            raise ValueError("refused")
        return [{"count": 1}]

    group = GroupTransact(transact, _Lost, _NotSent)
    ops: list[dict[str, Any]] = [{"op": "wait"}]
    deadline = time.monotonic() + 60
    assert group("db", ops, deadline) == [{"count": 1}]
    assert sent == [("db", ops, deadline)]  # the very list, not a combined copy
    with pytest.raises(_NotSent, match="time ran out"):
        group("db", [{"op": "wait"}], time.monotonic() - 1)
    assert len(sent) == 1  # nothing sent
    with pytest.raises(ValueError, match="refused"):
        group("db", [{"fail": True}], None)
    assert group.combined == 0 and group.resent == 0
    assert group("db", ops) == [{"count": 1}]  # the lead was handed back each time


def test_a_commits_keys_hash_no_uuid_in_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planning, expecting, applying and confirming a commit hashes no ``uuid.UUID`` but its row's references.

    ``UUID.__hash__`` runs in Python (``hash(self.int)``): the plan's and the replica's maps and sets
    of objects are keyed by (table, id.int), hashed in C. What is left is the one frozenset of the
    references of the row as it will read back (a port: its switch), made once per switch: the next
    ports' find it by the switch's id.int. Before, a create hashed 17 ids and an update 12 on this
    path, a transaction of two creates 38, a delete 12; then 1, 1, 4 and 0.
    """
    from nbdb.families.ovsdb import Replica
    from nbdb.families.ovsdb.planner import plan_commit
    from nbdb.families.ovsdb.rows import VersionBook
    from nbdb.families.ovsdb.settle import reflects
    from nbdb.spi import Delete
    from nbdb.testing.ovsdb_play import server_update
    from nbdb.writes import put_of

    mapping = make_mapping()
    replica = Replica(mapping, VersionBook(), "ns")
    db = mapping.get(LogicalSwitchPort.nbdb_table).db
    replica.resync(db, {})

    def commit(ops: list[Any]) -> None:
        with replica.cond:
            plan = plan_commit(mapping, replica, ops, uuid.uuid4().hex[:16], now=time.time())
            replica.expect(plan.written)
        replica.apply(db, json.loads(json.dumps(server_update(replica, db, plan.ops))))
        with replica.cond:
            assert reflects(plan, replica)

    switch = LogicalSwitch(name="sw", topic="t")
    commit([put_of(switch, 0)[0]])
    hashed = [0]
    real = uuid.UUID.__hash__

    me = threading.get_ident()

    def counted(self: uuid.UUID) -> int:
        if threading.get_ident() == me:  # a background thread another test left running hashes on its own
            hashed[0] += 1
        return real(self)

    def hashes(ops: list[Any]) -> int:
        hashed[0] = 0
        monkeypatch.setattr(uuid.UUID, "__hash__", counted)
        try:
            commit(ops)
        finally:
            monkeypatch.setattr(uuid.UUID, "__hash__", real)
        return hashed[0]

    ports = [LogicalSwitchPort(switch=switch.id, name=f"p{i}", addresses=[f"0a:00:00:00:00:0{i}"]) for i in range(3)]
    put, stored = put_of(ports[0], 0)
    assert hashes([put]) == 1  # created: the first port of its switch
    put, stored = put_of(stored.replace(addresses=["0a:00:00:00:00:09"]), stored.version)
    assert hashes([put]) == 0  # updated
    # Two created in one transaction: the set of objects created the shared rules.shape_of hands
    # every backend (its own check of an object named twice keys by id.int).
    assert hashes([put_of(port, 0)[0] for port in ports[1:]]) == 2
    assert hashes([Delete(stored.nbdb_table, stored.id, stored.topic, stored.version)]) == 0
    with replica.cond:
        assert replica.record(LogicalSwitchPort.nbdb_table, stored.id) is None
        assert replica.referrers[(LogicalSwitch.nbdb_table, switch.id.int)].keys() == {
            (LogicalSwitchPort.nbdb_table, p.id.int) for p in ports[1:]
        }


def test_a_commit_parses_and_formats_each_id_once_and_compares_none_in_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planning a commit and applying its update parse no id the client knows, format each id once.

    ``uuid.UUID(text)``, ``str(id)`` and ``==`` of two ids run in Python. The ids of a commit's rows
    and of the parents are kept parsed and their text made (``ops.parse_uuid``, ``ops.uuid_text``):
    the update the server echoes names them in the text the commit sent. Before, a create parsed 4
    ids, formatted 6 and compared its parent with ``__eq__``; an update parsed 1 and formatted 2, a
    delete parsed 3, formatted 5 and compared 1 (the server's side, played here, not counted).
    """
    from nbdb.families.ovsdb import Replica
    from nbdb.families.ovsdb.planner import plan_commit
    from nbdb.families.ovsdb.rows import VersionBook
    from nbdb.spi import Delete
    from nbdb.testing.ovsdb_play import server_update
    from nbdb.writes import put_of

    mapping = make_mapping()
    replica = Replica(mapping, VersionBook(), "ns")
    db = mapping.get(LogicalSwitchPort.nbdb_table).db
    replica.resync(db, {})
    me = threading.get_ident()
    calls = {"__init__": 0, "__str__": 0, "__eq__": 0}
    real = {name: getattr(uuid.UUID, name) for name in calls}

    def counting(name: str) -> Any:
        def counted(self: uuid.UUID, *args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() == me:
                calls[name] += 1
            return real[name](self, *args, **kwargs)

        return counted

    def counted_commit(ops: list[Any]) -> dict[str, int]:
        token = uuid.uuid4().hex[:16]
        for name in calls:
            calls[name] = 0
            monkeypatch.setattr(uuid.UUID, name, counting(name))
        try:
            with replica.cond:
                plan = plan_commit(mapping, replica, ops, token, now=time.time())
                replica.expect(plan.written)
            for name in calls:  # the server's side
                monkeypatch.setattr(uuid.UUID, name, real[name])
            update = json.loads(json.dumps(server_update(replica, db, plan.ops)))
            for name in calls:
                monkeypatch.setattr(uuid.UUID, name, counting(name))
            replica.apply(db, update)
        finally:
            for name in calls:
                monkeypatch.setattr(uuid.UUID, name, real[name])
        return dict(calls)

    switch = LogicalSwitch(name="sw", topic="t")
    counted_commit([put_of(switch, 0)[0]])
    port = LogicalSwitchPort(switch=switch.id, name="p", addresses=["0a:00:00:00:00:01"])
    put, stored = put_of(port, 0)
    assert counted_commit([put]) == {"__init__": 0, "__str__": 1, "__eq__": 0}  # the new id's text, made once
    put, stored = put_of(stored.replace(addresses=["0a:00:00:00:00:09"]), stored.version)
    assert counted_commit([put]) == {"__init__": 0, "__str__": 0, "__eq__": 0}
    assert counted_commit([Delete(stored.nbdb_table, stored.id, stored.topic, stored.version)]) == {
        "__init__": 0,
        "__str__": 0,
        "__eq__": 0,
    }
    with replica.cond:
        assert replica.record(LogicalSwitchPort.nbdb_table, stored.id) is None
        assert (LogicalSwitch.nbdb_table, switch.id.int) not in replica.referrers


def test_the_default_cells_an_update_compares_with_are_made_once_per_table_as_the_server_leaves_them() -> None:
    from nbdb.families.ovsdb.datum import default_cell
    from nbdb.families.ovsdb.planner import _defaults

    mapping = make_mapping()
    for tm in mapping.tables.values():
        made = _defaults(tm)
        assert made == tuple((cm.column, default_cell(cm.type), cm) for cm in tm.columns.values())
        assert _defaults(tm) is made


@given(
    st.floats(min_value=-LEDGER_SETTLE - LEDGER_SKEW, max_value=LEDGER_SKEW, allow_nan=False),
    st.floats(min_value=0, max_value=LEDGER_SETTLE),
)
def test_a_mark_is_never_dropped_while_its_writer_may_still_rely_on_it(skew: float, elapsed: float) -> None:
    """Review of issue 14 (ledger marks), issue 12 (a native mutation's marks): a mark holds its writer's expiry
    (its start + LEDGER_SETTLE, on its clock), and its writer relies on it only within LEDGER_SETTLE of its start
    (monotonic). Another writer whose clock is off by less than LEDGER_SKEW, at any moment of that, never drops
    it: not from the ledger (stale_marks), nor from a mutated row (MarkBook.droppable, carried by an update).
    The old sweep (marks stamped more than five minutes ago, by the sweeper's clock) did, and the lost reply
    it settled was applied twice."""
    writer_start = _NOW
    mark, expiry = mark_of("ab" * 8, writer_start)
    sweeper_now = writer_start + elapsed + skew
    ext = {mark: expiry}
    assert stale_marks(ext, sweeper_now) == []
    assert MarkBook().droppable(("Port_Group", uuid.UUID(int=1)), ext, sweeper_now) == []
    assert carried(ext, sweeper_now) == ext


@given(st.floats(min_value=-300, max_value=300, exclude_max=True), st.floats(min_value=0, max_value=LEDGER_SETTLE))
def test_an_older_nbdb_parses_a_mark_and_never_drops_one_its_writer_relies_on(skew: float, elapsed: float) -> None:
    """Issue 12: older nbdb writers share the database. They read a mark's value as a number (float) and drop it
    five minutes past that value on their clock; a mark holding its expiry rather than its start is still a
    number, and lives ten minutes longer there: such a writer within five minutes of the marking one's clock
    never drops it while it is relied on."""
    _mark, expiry = mark_of("cd" * 8, _NOW)
    older_sweeper_now = _NOW + elapsed + skew
    assert not float(expiry) < older_sweeper_now - 300.0  # the older nbdb's rule (its MARK_LIFETIME)


def test_a_mark_past_its_expiry_by_the_skew_margin_is_dropped() -> None:
    key = "nbdb:m:" + "cd" * 8
    expiry = str(int(_NOW))
    assert stale_marks({key: expiry, "other": "1"}, _NOW + LEDGER_SKEW + 1) == [key]
    assert stale_marks({key: "junk"}, _NOW) == [key]
    assert MarkBook().droppable(("Port_Group", uuid.UUID(int=1)), {key: expiry}, _NOW + LEDGER_SKEW + 1) == [key]
    assert carried({key: expiry}, _NOW + LEDGER_SKEW + 1) == {}


_WINDOW_WORDS = st.one_of(
    st.from_regex(r"[0-9a-f]{16}@(0|[1-9][0-9]{0,18})", fullmatch=True),  # as nbdb writes them (some past 2**63)
    st.text(alphabet="0a@ \t²9", max_size=24),  # another writer's garbage
)


@settings(max_examples=500, deadline=None)
@given(st.lists(_WINDOW_WORDS, max_size=6), st.sampled_from([" ", "  ", "\t"]), st.integers(1, 2**63 - 1))
def test_a_windows_first_entry_read_alone_says_what_the_whole_parse_says(
    words: list[str], sep: str, version: int
) -> None:
    """``settle._newest_is`` (read-your-writes' look at the row's window) is True only where ``parse_window``
    holds the pair, and True for every window this commit's write leaves (its entry first, whatever came
    before); ``push_window`` writes what the whole parse gives."""
    from nbdb.families.ovsdb.rows import WINDOW, parse_window, push_window
    from nbdb.families.ovsdb.settle import _newest_is

    token = "0123456789abcdef"
    text = sep.join(words)
    # push_window reads no further than it keeps, and writes what the whole parse gave.
    pairs = [(token, version), *parse_window(text)][:WINDOW]
    assert push_window(text, token, version) == " ".join(f"{t}@{v}" for t, v in pairs)
    for candidate in (text, f"{token}@{version}{sep}{text}", f"{token}@{version}", f"{token}@{version}0"):
        if _newest_is(candidate, token, version):
            assert (token, version) in parse_window(candidate)
    assert _newest_is(push_window(text, token, version), token, version)
    assert not _newest_is(push_window(text, token, version + 1), token, version)
    assert not _newest_is(text, "", version)


def test_an_ordinary_commit_asks_nothing_of_the_rows_without_external_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit of rows with ``external_ids`` (a port's) makes no content stamp, asks no ledger marks, and
    read-your-writes finds its entry first in the row's window without parsing the window (``parse_window``).

    Decided by the table (its map's ``external_ids``), not by work done per commit. Before, read-your-writes
    parsed each put row's whole window on every commit (``settle.parse_window``, once per update here)."""
    from nbdb.families.ovsdb import Replica, planner, rows, settle
    from nbdb.families.ovsdb.planner import plan_commit
    from nbdb.families.ovsdb.rows import VersionBook
    from nbdb.spi import Delete
    from nbdb.testing.ovsdb_play import server_update
    from nbdb.writes import put_of

    mapping = make_mapping()
    replica = Replica(mapping, VersionBook(), "ns")
    db = mapping.get(LogicalSwitchPort.nbdb_table).db
    replica.resync(db, {})
    asked: list[str] = []

    def counted(name: str, real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            asked.append(name)
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(settle, "parse_window", counted("settle.parse_window", rows.parse_window))
    monkeypatch.setattr(planner, "content_stamp", counted("content_stamp", rows.content_stamp))
    monkeypatch.setattr(planner, "result_stamp", counted("result_stamp", rows.result_stamp))

    def commit(ops: list[Any]) -> None:
        with replica.cond:
            plan = plan_commit(mapping, replica, ops, uuid.uuid4().hex[:16], now=time.time(), ledger_drop=ledger)
            replica.expect(plan.written)
        replica.apply(db, json.loads(json.dumps(server_update(replica, db, plan.ops))))
        with replica.cond:
            assert reflects(plan, replica)
        assert plan.bare == 0 and plan.ledger is None

    def ledger() -> list[str]:
        asked.append("ledger_drop")
        return []

    reflects = settle.reflects
    switch = LogicalSwitch(name="sw", topic="t")
    commit([put_of(switch, 0)[0]])
    put, stored = put_of(LogicalSwitchPort(switch=switch.id, name="p", addresses=["0a:00:00:00:00:01"]), 0)
    commit([put])
    for n in range(3):
        put, stored = put_of(stored.replace(addresses=[f"0a:00:00:00:00:1{n}"]), stored.version)
        commit([put])
    commit([Delete(stored.nbdb_table, stored.id, stored.topic, stored.version)])
    assert asked == []
