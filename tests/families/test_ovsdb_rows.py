"""Rows <-> model documents, the mapping of fields to columns, versions and commit tokens (no server)."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import nbdb
from nbdb.codec import decode, encode
from nbdb.families.ovsdb import Mapping_, rows
from nbdb.families.ovsdb.rows import (
    RowState,
    Shared,
    VersionBook,
    content_digest,
    new_row,
    parse_window,
    push_window,
    render,
)
from nbdb.models import LogicalSwitchPort
from nbdb.spi import Record

from .conftest import NB_SCHEMA, make_mapping

pytestmark = pytest.mark.timeout(60)

SWITCH = uuid.UUID("11111111-1111-4111-8111-111111111111")


def _round_trip(mapping: Mapping_, port: LogicalSwitchPort) -> LogicalSwitchPort:
    tm = mapping.get("LogicalSwitchPort")
    cells, _wire, ext, parents, _values = new_row(tm, json.loads(encode(port)))
    doc = render(tm, port.id, {**cells, "external_ids": ext}, parents)
    return decode(LogicalSwitchPort, Record("LogicalSwitchPort", port.id, port.topic, port.version, doc.data))


names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=20)


@given(
    name=names,
    options=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
    external_ids=st.dictionaries(st.text(max_size=8).filter(lambda k: not k.startswith("nbdb:")), st.text(max_size=8),
                                 max_size=3),
    up=st.none() | st.booleans(),
    tag=st.none() | st.integers(1, 4095),
)  # fmt: skip
def test_a_port_survives_the_trip_through_a_row(
    name: str, options: dict[str, str], external_ids: dict[str, str], up: bool | None, tag: int | None
) -> None:
    mapping = make_mapping()
    port = LogicalSwitchPort(
        switch=SWITCH, name=name, options=options, external_ids=external_ids, up=up, tag_request=tag,
        addresses=["0a:00:00:00:00:01 10.0.0.1"], chassis=uuid.uuid4(),
    )  # fmt: skip
    assert _round_trip(mapping, port).model_dump() == port.model_dump()


@given(
    name=names,
    external_ids=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4),
    up=st.none() | st.booleans(),
    parent=st.booleans(),
    raw=st.none() | st.binary(max_size=16).map(lambda b: base64.b64encode(b).decode()) | st.text(max_size=8),
)
def test_the_planners_digest_is_the_digest_of_the_rendered_row(
    name: str, external_ids: dict[str, str], up: bool | None, parent: bool, raw: str | None
) -> None:
    # The planner stores this digest in the row; a replica that renders the row must find the same.
    tm = make_mapping().get("LogicalSwitchPort")
    port = LogicalSwitchPort(switch=SWITCH, name=name, up=up, addresses=["0a:00:00:00:00:01 10.0.0.1"])
    cells, _wire, ext, parents, _values = new_row(tm, json.loads(encode(port)))
    ext.update(external_ids)
    if raw is not None:
        ext["nbdb:raw"] = raw
    row = {**cells, "external_ids": ext}
    parents = parents if parent else {}
    assert content_digest(tm, port.id, row, parents) == render(tm, port.id, row, parents).state.digest


def test_reserved_external_ids_keys_are_refused(mapping: Mapping_) -> None:
    port = LogicalSwitchPort(switch=SWITCH, name="p", external_ids={"nbdb:version": "9"})
    with pytest.raises(nbdb.ValidationError, match="reserved"):
        new_row(mapping.get("LogicalSwitchPort"), json.loads(encode(port)))


def test_a_column_missing_from_an_older_schema_keeps_the_default_and_refuses_other_values() -> None:
    older: dict[str, Any] = copy.deepcopy(NB_SCHEMA)
    del older["tables"]["Logical_Switch_Port"]["columns"]["up"]
    mapping = make_mapping(older)
    tm = mapping.get("LogicalSwitchPort")
    assert "up" in tm.missing
    plain = LogicalSwitchPort(switch=SWITCH, name="p")
    assert _round_trip(mapping, plain).model_dump() == plain.model_dump()
    with pytest.raises(nbdb.UnsupportedError, match="up"):
        new_row(tm, json.loads(encode(plain.replace(up=True))))


def test_a_missing_bound_table_is_a_clear_error() -> None:
    older: dict[str, Any] = copy.deepcopy(NB_SCHEMA)
    del older["tables"]["Logical_Switch_Port"]
    with pytest.raises(nbdb.UnsupportedError, match="no table Logical_Switch_Port"):
        make_mapping(older)


def test_columns_of_a_newer_schema_are_not_followed() -> None:
    newer: dict[str, Any] = copy.deepcopy(NB_SCHEMA)
    newer["tables"]["Logical_Switch_Port"]["columns"]["a_newer_column"] = {"type": "string"}
    tm = make_mapping(newer).get("LogicalSwitchPort")
    assert "a_newer_column" not in tm.monitored_columns()


@given(st.lists(st.tuples(st.text("abcdef0123456789", min_size=1, max_size=16), st.integers(1, 10**6)),
                max_size=8))  # fmt: skip
def test_the_token_window_keeps_the_newest_writes_first(writes: list[tuple[str, int]]) -> None:
    text = None
    for token, version in writes:
        text = push_window(text, token, version)
    assert parse_window(text) == list(reversed(writes))[:4]


def test_versions_come_from_nbdb_bookkeeping_and_grow_with_foreign_changes() -> None:
    book = VersionBook()
    id = uuid.uuid4()
    assert book.version("T", id, RowState("a", 3, "a")) == 3  # as nbdb wrote it
    assert book.version("T", id, RowState("b", 3, "a")) == 4  # changed by another writer
    assert book.version("T", id, RowState("c", 3, "a")) == 5  # and again
    assert book.version("T", id, RowState("c", 3, "a")) == 5  # the same state: the same version
    book.forget("T", id)
    assert book.version("T", id, RowState("d", 0, "")) == 1


def test_a_version_never_goes_back_when_a_row_returns_to_what_nbdb_wrote() -> None:
    """Another writer's change undone (or another client's write at a version this connection
    has passed): the digest matches nbdb's again, and the version went back to the stored one,
    which a cache holding the newer version took for a change it had applied (stale for good)."""
    book = VersionBook()
    id = uuid.uuid4()
    assert book.version("T", id, RowState("a", 1, "a")) == 1
    assert book.version("T", id, RowState("b", 1, "a")) == 2  # another writer's change
    assert book.version("T", id, RowState("a", 1, "a")) == 3  # undone: not 1 again
    assert book.version("T", id, RowState("e", 3, "e")) == 4  # another client's write at 3
    assert book.version("T", id, RowState("f", 7, "f")) == 7  # ahead: as written


@given(
    seen=st.lists(st.sampled_from("abcd"), min_size=1, max_size=6),
    given_away=st.integers(min_value=0, max_value=20),
    after=st.sampled_from("abcde"),
)
def test_a_content_counted_past_a_version_given_to_another_never_shares_it(
    seen: list[str], given_away: int, after: str
) -> None:
    """A row without external_ids (no stored version: each connection counts its changes): a commit's
    result gave ``given_away`` to a content this connection never saw (merged with another writer's
    undo). The content shown is counted past it, and so is every later one: no version names two."""
    book = VersionBook()
    key = uuid.uuid4().int
    for digest in seen:
        book.version("T", key, RowState(digest, 0, ""))
    shown = (seen[-1], 0, "")
    counted = book.past("T", key, shown, given_away)
    assert counted > given_away
    assert book.version("T", key, RowState(*shown)) == counted  # read again: the same version
    assert book.past("T", key, shown, given_away) == counted  # another replica of the connection: the same
    if after != seen[-1]:
        assert book.version("T", key, RowState(after, 0, "")) == counted + 1


def test_commit_tokens_do_not_follow_the_applications_random_seed() -> None:
    # Processes that seed ``random`` alike (simulations, tests) must still make distinct tokens.
    import random

    from nbdb.families.ovsdb.rows import new_token

    random.seed(42)
    first = [new_token() for _ in range(3)]
    random.seed(42)
    again = [new_token() for _ in range(3)]
    assert not set(first) & set(again)
    assert all(len(t) == 16 and int(t, 16) >= 0 for t in first + again)


def test_a_forked_child_makes_other_tokens_than_its_parent() -> None:
    import os

    from nbdb.families.ovsdb.rows import new_token

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, new_token().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    os.close(read)
    assert len(child) == 16 and child != new_token()


@given(st.text(max_size=8), st.text(max_size=8))
def test_a_token_window_another_writer_garbled_never_raises(token: str, version: str) -> None:
    """``str.isdigit`` holds for digits ``int`` refuses (``'²'``): parsing such a window raised
    ValueError out of the connection's I/O thread, on every update of the row (with a damaged
    ``nbdb:version``, whose fallback is the window). Garbage in the window is skipped."""
    from nbdb.families.ovsdb.rows import EXT_TXN, EXT_VERSION, parse_window, written_version

    for text in (f"{token}@{version}", f"{token}@{version} good@7", "t@\u00b2 good@7"):
        assert all(v >= 0 for _t, v in parse_window(text))
        assert written_version({EXT_VERSION: "garbage", EXT_TXN: text}) >= 0
    assert written_version({EXT_VERSION: "garbage", EXT_TXN: "t@\u00b2 good@7"}) == 7


_MARK_TEXT = st.one_of(
    st.text(max_size=24),
    st.lists(
        st.tuples(st.sampled_from(["a", "", "@", "x y"]), st.integers(min_value=0, max_value=2**64)), max_size=4
    ).map(lambda pairs: " ".join(f"{t}@{v}" for t, v in pairs)),
    st.sampled_from(["", "0", "-1", " ", "junk a@9 b@8", " a@9", "a@9\tb@8", "@ a@9", "a@\u00b2 b@9", "9" * 5000]),
)


@given(_MARK_TEXT, _MARK_TEXT, st.booleans(), st.sampled_from(["", " ", "\t", "junk ", "@5 ", "x@\u00b2 "]))
def test_the_version_read_is_never_below_the_newest_entry_of_the_token_window(
    version: str, txn: str, with_version: bool, lead: str
) -> None:
    """Another writer's text in ``nbdb:version`` and ``nbdb:txn``: the version read is an int (no
    exception), never negative, and never below the newest entry the window reads as
    (:func:`parse_window`'s first). Read from the window's first word only, ``"junk a@9 b@8"``
    (or ``" a@9"``) with ``nbdb:version`` at ``0`` read as 0: the row's next nbdb write (``n@10 a@9
    b@8``) showed three commits since, a merged catch-up that ended every plain watch."""
    from nbdb.families.ovsdb.rows import EXT_TXN, EXT_VERSION, parse_window, written_version

    text = lead + txn
    ext = {EXT_VERSION: version, EXT_TXN: text} if with_version else {EXT_TXN: text}
    read = written_version(ext)
    assert isinstance(read, int) and read >= 0
    window = parse_window(text)
    assert not window or read >= window[0][1]
    assert written_version({EXT_VERSION: version}) >= 0


def test_a_version_of_more_digits_than_int_reads_or_writes_back_is_garbage() -> None:
    """ASCII digits past ``sys.get_int_max_str_digits()`` (4300): in ``nbdb:txn``, ``int()`` raised
    ValueError out of the connection's I/O thread on every update of the row, as for ``'\u00b2'``;
    in ``nbdb:version``, 4300 digits read, and the next write's ``str()`` of one more raised
    ValueError: no update of the row ever went. Both are garbage (versions are below 2**63)."""
    from nbdb.families.ovsdb.rows import EXT_TXN, EXT_VERSION, parse_window, push_window, written_version

    huge = "t@" + "9" * 5000 + " good@7"
    assert parse_window(huge) == [("good", 7)]
    assert written_version({EXT_VERSION: "garbage", EXT_TXN: huge}) == 7
    assert written_version({EXT_VERSION: "9" * 5000, EXT_TXN: huge}) == 7
    assert parse_window(push_window(huge, "mine", 8))[0] == ("mine", 8)
    # As many digits as int() reads: one more is a number str() refuses to write back.
    assert written_version({EXT_VERSION: "9" * 4300, EXT_TXN: "good@7"}) == 7
    assert written_version({EXT_VERSION: str(2**63), EXT_TXN: f"t@{2**63} good@7"}) == 7
    assert written_version({EXT_VERSION: str(2**63 - 1)}) == 2**63 - 1


def _widened() -> Mapping_:
    """NB_SCHEMA with two optional columns of one atom widened to sets (a newer schema could)."""
    newer: dict[str, Any] = copy.deepcopy(NB_SCHEMA)
    columns = newer["tables"]["Logical_Switch_Port"]["columns"]
    columns["parent_name"] = {"type": {"key": "string", "min": 0, "max": "unlimited"}}
    columns["tag_request"] = {
        "type": {"key": {"type": "integer", "minInteger": 0, "maxInteger": 4095}, "min": 0, "max": 2}
    }
    return make_mapping(newer)


@given(parent_name=st.none() | st.text(max_size=8), tag_request=st.none() | st.integers(0, 4095))
def test_a_field_of_one_value_in_a_column_a_newer_schema_widened_to_a_set_round_trips(
    parent_name: str | None, tag_request: int | None
) -> None:
    """Every row was a corrupt record (a set, even of one atom or none, rendered as a list the model
    refuses) and every write a ValidationError ("expected a list"). A set of one reads as its atom,
    an empty one as None, and a write stores a set of one."""
    port = LogicalSwitchPort(switch=SWITCH, name="p", parent_name=parent_name, tag_request=tag_request)
    assert _round_trip(_widened(), port).model_dump() == port.model_dump()


def test_a_widened_column_holding_several_atoms_is_a_corrupt_record() -> None:
    tm = _widened().get("LogicalSwitchPort")
    port = LogicalSwitchPort(switch=SWITCH, name="p")
    cells, _wire, ext, parents, _values = new_row(tm, json.loads(encode(port)))
    for column, several in (("parent_name", {"a", "b"}), ("tag_request", {1, 2})):
        doc = render(tm, port.id, {**cells, column: several, "external_ids": ext}, parents)
        with pytest.raises(nbdb.CorruptRecordError, match=column):
            decode(LogicalSwitchPort, Record("LogicalSwitchPort", port.id, None, 1, doc.data))


@given(keys=st.lists(st.integers(0, 40), max_size=200), limit=st.integers(1, 16))
def test_a_shared_table_hands_out_the_value_kept_for_a_key_and_stays_bounded(keys: list[int], limit: int) -> None:
    table: Shared[int, list[int]] = Shared(limit)
    handed: dict[int, list[int]] = {}
    made = 0
    for key in keys:
        value = table.get(key)
        if value is None:
            made += 1
            value = table.keep(key, [key])
        else:
            assert value is handed[key]  # shared while kept
        assert value == [key]
        handed[key] = value
        assert len(table) <= limit
    if len(set(keys)) <= limit:
        assert made == len(set(keys))  # never cleared: each key's value made once


def test_the_content_stamps_of_a_commits_results_are_kept_by_its_token_up_to_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # rows.result_stamp turns a transaction result's token back into the content each row without
    # external_ids was written with; what it does not know (another row, an unknown or dropped token) is
    # None, which the planner refuses. The oldest commit is dropped first, and memory stays bounded.
    monkeypatch.setattr(rows, "_result_stamps", {})
    monkeypatch.setattr(rows, "RESULT_STAMPS_KEPT", 3)
    rows.keep_result_stamps(7, {})
    assert rows.result_stamp(7, ("Load_Balancer_Group", 1)) is None
    for token in range(1, 5):
        rows.keep_result_stamps(token, {("Load_Balancer_Group", token): rows.content_stamp(f"{token:x}")})
    assert rows.result_stamp(1, ("Load_Balancer_Group", 1)) is None  # dropped: the oldest of four
    assert rows.result_stamp(4, ("Load_Balancer_Group", 4)) == rows.CONTENT_STAMP + 4
    assert rows.result_stamp(4, ("Load_Balancer_Group", 3)) is None
    assert len(rows._result_stamps) == 3


@given(sizes=st.lists(st.integers(1, 8), min_size=1, max_size=40))
def test_the_kept_content_stamps_are_bounded_by_rows_not_commits(sizes: list[int]) -> None:
    # Review 16: rows.keep_result_stamps drops the oldest commit once RESULT_STAMPS_KEPT commits are kept,
    # whatever each holds: a process whose transactions put many rows without external_ids keeps that many
    # times more (65,536 commits of 50 Static_MAC_Bindings held ~650 MB). What is kept is bounded by rows
    # (a dropped one is only refused, never compared by its version alone), and the newest commit is known.
    kept: dict[int, dict[tuple[str, int], int]] = {}
    bound = 8
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rows, "_result_stamps", kept)
        patch.setattr(rows, "RESULT_STAMPS_KEPT", bound)
        row = 0
        for token, size in enumerate(sizes, 1):
            stamps = {}
            for _ in range(size):
                row += 1
                stamps[("Static_MAC_Binding", row)] = rows.content_stamp(f"{row:x}")
            rows.keep_result_stamps(token, stamps)
            assert sum(len(s) for s in kept.values()) <= bound, "row stamps kept beyond the bound"
            assert rows.result_stamp(token, ("Static_MAC_Binding", row)) == rows.CONTENT_STAMP + row


# ------------------------------------------------------------- review (wip/rev26): a row created again, no older copy


def _history(tokens: list[str]) -> dict[str, str]:
    """external_ids of a row nbdb wrote once per token, in order (version i+1 by tokens[i])."""
    window: str | None = None
    for version, token in enumerate(tokens, 1):
        window = rows.push_window(window, token, version)
    return {rows.EXT_TXN: window or "", rows.EXT_VERSION: str(len(tokens))}


@given(st.lists(st.uuids().map(str), min_size=1, max_size=12, unique=True), st.data())
def test_an_older_copy_of_a_row_is_never_apart_from_it(tokens: list[str], data: st.DataObject) -> None:
    # A lagging copy holds a prefix of the same writes (however far it lags): never told apart.
    lag = data.draw(st.integers(min_value=0, max_value=len(tokens)))
    assert not rows.apart(_history(tokens), _history(tokens[:lag]))
    assert not rows.apart(_history(tokens[:lag]), _history(tokens))


@given(st.lists(st.uuids().map(str), min_size=1, max_size=rows.WINDOW, unique=True), st.uuids().map(str))
def test_a_row_created_again_is_apart_while_the_window_read_holds_its_first_write(tokens: list[str], new: str) -> None:
    # Created again by another commit: version 1 by another token, which the window read (still holding
    # version 1) says is another write: no older copy of it.
    assume(new not in tokens)
    assert rows.apart(_history(tokens), _history([new]))
    assert not rows.apart(_history(tokens), {})  # no window there: nothing to tell by
