"""Another writer's garbage in the columns nbdb maps and in its own ``external_ids`` marks, on OVSDB.

Issue 12: a record another writer corrupted must not kill a watcher or a cache. Each example writes
one garbled value into one port row nbdb wrote (as ``ovn-nbctl`` or a raw ``transact`` can), then
checks that ``get``, ``list``, a watch and a cache each deliver the row (if the model takes it) or
report it as a ``CorruptRecordError`` (that row only), that they all go on with other rows' changes,
and that nbdb's compare-and-swap update of the row either writes it (repairing it) or raises a typed
error: never another exception, a dead thread, a hang or a silent drop.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.conformance.kit import eventually
from nbdb.families.ovsdb.rows import parse_window
from nbdb.models import ACL, Chassis, LogicalSwitch, LogicalSwitchPort, Model, PortGroup, QoS
from nbdb.testing.ovsdb import OvsdbServer

from .conftest import ovsdb_transact

pytestmark = pytest.mark.timeout(300)

LSP = "Logical_Switch_Port"


@pytest.fixture(scope="module")
def server() -> Iterator[OvsdbServer]:
    # A server of its own: rows another writer makes carry no nbdb:ns and belong to the default
    # namespace, which this module's client uses. The model database holds Chassis.
    with OvsdbServer(model_schema=True) as srv:
        yield srv


def _transact(server: OvsdbServer, ops: list[Any]) -> list[Any]:
    """Play another OVSDB client (ovn-nbctl, ovn-northd) writing the database directly."""
    return ovsdb_transact(server.leader().address, ops)


def _refused(result: list[Any]) -> bool:
    return any(isinstance(r, dict) and "error" in r for r in result)


def _where(id: uuid.UUID) -> list[Any]:
    return [["_uuid", "==", ["uuid", str(id)]]]


def _set_mark(id: uuid.UUID, key: str, value: str, table: str = LSP) -> list[Any]:
    return [
        {
            "op": "mutate",
            "table": table,
            "where": _where(id),
            "mutations": [
                ["external_ids", "delete", ["set", [key]]],
                ["external_ids", "insert", ["map", [[key, value]]]],
            ],
        }
    ]


def _update(id: uuid.UUID, column: str, value: Any, table: str = LSP) -> list[Any]:
    return [{"op": "update", "table": table, "where": _where(id), "row": {column: value}}]


# Text OVSDB takes (valid UTF-8 without NUL), short.
_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
_GARBAGE = st.one_of(
    _TEXT,
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.uuids().map(str),
    # Ids of rows that are there (of this table, of another one) or were deleted: resolved by _ops.
    st.sampled_from(["@switch", "@group", "@sibling", "@deleted", "@self", "@chassis", "@gone-chassis"]),
    st.sampled_from(["", "-1", "0", "9" * 25, "null", "[]", "{}", '"x"', "1e400", "NaN", "t@1 u@x @ @5", "\ufffe"]),
    st.recursive(
        st.none() | st.booleans() | st.integers() | _TEXT, lambda c: st.lists(c, max_size=3), max_leaves=4
    ).map(json.dumps),
)
_WINDOWS = st.lists(
    st.tuples(st.sampled_from(["a", "b", "0123456789abcdef", ""]), st.integers(min_value=0, max_value=2**64)),
    max_size=4,
).map(lambda pairs: " ".join(f"{t}@{v}" for t, v in pairs))
"""``nbdb:txn``-shaped values: tokens and versions in any order (nbdb's own are newest first)."""
_MARKS = st.sampled_from(
    [
        "nbdb:version",
        "nbdb:digest",
        "nbdb:txn",
        "nbdb:topic",
        "nbdb:parent:switch",
        "nbdb:field:chassis",
        "nbdb:ttl",
        "nbdb:expires",
        "nbdb:m:0123456789abcdef",
        "nbdb:raw",
        "nbdb:ns",
    ]
)


@st.composite
def _damage(draw: st.DrawFn) -> tuple[str, Any]:
    """(what, how): one garbled value for one column or mark of a port row."""
    kind = draw(
        st.sampled_from(
            [
                "mark",
                "no-marks",
                "type",
                "name",
                "addresses",
                "port_security",
                "options",
                "tag_request",
                "tag",
                "up",
                "enabled",
                "parent_name",
                "dhcpv4_options",
                "chassis",
            ]
        )
    )
    if kind == "chassis":
        # nbdb:field:chassis (JSON: OVN has no such column) naming a live chassis, a deleted one,
        # a row of another table, or the port itself.
        return "mark", (
            "nbdb:field:chassis",
            json.dumps(draw(st.sampled_from(["@chassis", "@gone-chassis", "@switch", "@self"]))),
        )
    if kind == "mark":
        mark = draw(_MARKS)
        return kind, (mark, draw(_WINDOWS | _GARBAGE if mark in ("nbdb:txn", "nbdb:version") else _GARBAGE))
    if kind == "no-marks":
        return kind, None
    if kind in ("type", "parent_name"):
        return kind, draw(_TEXT | st.sampled_from(["router", "localnet", "bogus"]))
    if kind == "name":
        return kind, "n-" + draw(_TEXT) + uuid.uuid4().hex[:6]
    if kind in ("addresses", "port_security"):
        items = draw(st.lists(_TEXT | st.sampled_from(["router", "dynamic", "0a:00:00:00:00:01 10.0.0.1"]), max_size=4))
        return kind, ["set", items]
    if kind == "options":
        pairs = draw(st.dictionaries(_TEXT, _TEXT | st.integers().map(str), max_size=3))
        return kind, ["map", [[k, v] for k, v in pairs.items()]]
    if kind in ("tag_request", "tag"):
        return kind, ["set", [draw(st.integers(min_value=0, max_value=4095))]]
    if kind in ("up", "enabled"):
        return kind, ["set", draw(st.lists(st.booleans(), max_size=1))]
    return kind, draw(st.sampled_from(["another-writers-row", "none"]))


@st.composite
def _rule_damage(draw: st.DrawFn) -> tuple[str, Any]:
    """(what, how): one value for one column or mark of an ACL or QoS row that the schema takes."""
    kind = draw(st.sampled_from(["mark", "no-marks", "match", "priority", "second-owner", "qos-empty", "log"]))
    if kind == "mark":
        return kind, (
            draw(st.sampled_from(["nbdb:version", "nbdb:digest", "nbdb:parent:switch", "nbdb:topic"])),
            draw(_GARBAGE),
        )
    if kind == "match":
        return kind, draw(_TEXT)
    if kind == "priority":
        return kind, draw(st.integers(min_value=0, max_value=32767))
    if kind == "log":
        return kind, draw(st.booleans())
    return kind, None


_IDS: dict[str, str] = {}
"""What the ``@name`` garbage stands for: ids of rows the test made (``@deleted``: one it deleted)."""


_FOREIGN_ROW = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["", "x" * 300]) | _TEXT,
        "type": _TEXT | st.sampled_from(["", "router", "localnet"]),
        "addresses": st.lists(_TEXT | st.just("0a:00:00:00:00:01 10.0.0.1"), max_size=3, unique=True).map(
            lambda items: ["set", items]
        ),
        "tag_request": st.integers(min_value=0, max_value=4095),
        "options": st.dictionaries(_TEXT, _TEXT, max_size=2).map(lambda d: ["map", [[k, v] for k, v in d.items()]]),
        "up": st.booleans(),
        "external_ids": st.dictionaries(
            st.sampled_from(
                [
                    "nbdb:version",
                    "nbdb:txn",
                    "nbdb:digest",
                    "nbdb:topic",
                    "nbdb:parent:switch",
                    "nbdb:field:chassis",
                    "k",
                ]
            ),
            _WINDOWS | _GARBAGE,
            max_size=3,
        ).map(lambda d: ["map", [[k, v] for k, v in d.items()]]),
    },
)
"""The columns of a port row another writer inserts (the server's schema refuses some: assumed away)."""


def _history_shaped(window: str | None) -> bool:
    """Whether an ``nbdb:txn`` value starts with two entries of falling versions above 0."""
    pairs = parse_window(window)
    return len(pairs) >= 2 and pairs[0][1] > pairs[1][1] > 0


def _ops(
    server: OvsdbServer, id: uuid.UUID, damage: tuple[str, Any], table: str = LSP, group: uuid.UUID | None = None
) -> list[Any]:
    kind, how = damage
    if kind == "mark":
        for name in [*sorted(_IDS, key=len, reverse=True), "@self"]:
            if name in how[1]:
                how = (how[0], how[1].replace(name, str(id) if name == "@self" else _IDS[name]))
                break
    if table != LSP:
        if kind == "mark":
            return _set_mark(id, how[0], how[1], table)
        if kind == "second-owner":
            # An ACL (the model: of one switch or one port group) in a port group's set too (a QoS
            # rule has no second owner: a key of the model's own external_ids instead).
            if table != "ACL":
                return _set_mark(id, "other", "x", table)
            return [
                {
                    "op": "mutate",
                    "table": "Port_Group",
                    "where": _where(group or id),
                    "mutations": [["acls", "insert", ["set", [["uuid", str(id)]]]]],
                }
            ]
        if kind == "qos-empty":
            if table != "QoS":
                return _update(id, "log", False, table)
            return [
                {
                    "op": "update",
                    "table": table,
                    "where": _where(id),
                    "row": {"bandwidth": ["map", []], "action": ["map", []]},
                }
            ]
        if kind == "no-marks":
            row = _transact(
                server, [{"op": "select", "table": table, "where": _where(id), "columns": ["external_ids"]}]
            )
            keys = [k for k, _v in row[0]["rows"][0]["external_ids"][1] if k.startswith("nbdb:")]
            return [
                {
                    "op": "mutate",
                    "table": table,
                    "where": _where(id),
                    "mutations": [["external_ids", "delete", ["set", keys]]],
                }
            ]
        if kind == "log" and table != "ACL":
            return _update(id, "priority", 5, table)
        return _update(id, kind, how, table)
    if kind == "mark":
        key, value = how
        return _set_mark(id, key, value)
    if kind == "no-marks":
        # As if ovn-nbctl had made it: every nbdb: key gone (the parent's set still holds it).
        row = _transact(server, [{"op": "select", "table": LSP, "where": _where(id), "columns": ["external_ids"]}])
        keys = [k for k, _v in row[0]["rows"][0]["external_ids"][1] if k.startswith("nbdb:")]
        return [
            {
                "op": "mutate",
                "table": LSP,
                "where": _where(id),
                "mutations": [["external_ids", "delete", ["set", keys]]],
            }
        ]
    if kind == "dhcpv4_options":
        if how == "none":
            return _update(id, kind, ["set", []])
        # A row of another writer's, with none of nbdb's marks, then referenced.
        made = _transact(server, [{"op": "insert", "table": "DHCP_Options", "row": {"cidr": "10.9.0.0/24"}}])
        return _update(id, kind, ["uuid", made[0]["uuid"][1]])
    return _update(id, kind, how)


def _check_damaged(
    server: OvsdbServer,
    db: nbdb.Database,
    cache: nbdb.Cache,
    watch: Any,
    events: list[Any],
    reports: list[Any],
    model: type[Model],
    victim: Any,
    ops: list[Any],
    others: set[uuid.UUID],
    sync: Any,
    flip: Any,
    repairable: bool = False,
) -> Any:
    """Write ``ops`` (damaging ``victim``) as another writer and check every reader; the victim as it ends."""
    key = (model.nbdb_table, victim.id)
    sync()
    events.clear()
    reports.clear()
    result = _transact(server, ops)
    assume(not _refused(result))  # the server's schema refused it: nothing written
    sync()

    # get: the row, or a corrupt record; nothing else (or no row: another valid nbdb:ns moved it
    # to that namespace, which this one sees as a deletion).
    got: Any
    try:
        got = db.get(model, victim.id)
    except nbdb.CorruptRecordError as e:
        assert str(victim.id) in str(e)
        got = None
    except nbdb.NotFoundError:
        assert any("nbdb:ns" in json.dumps(op) for op in ops), ops
        assert victim.id not in {o.id for o in db.list(model, skip_corrupt=True)}
        assert eventually(lambda: cache.get(model, victim.id) is None and key not in cache.corrupt, timeout=10)
        assert any(e.new is None and e.old is not None and e.old.id == victim.id for e in events), events
        sync()
        return None
    # list: the same; skip_corrupt keeps the others.
    if got is None:
        with pytest.raises(nbdb.CorruptRecordError):
            db.list(model)
        assert {o.id for o in db.list(model, skip_corrupt=True)} == others
    else:
        assert {o.id: o for o in db.list(model)}[victim.id] == got
    # The cache: the row, or a record of its corruption (the last good copy kept).
    assert eventually(
        lambda: (key in cache.corrupt) == (got is None) and (got is None or cache.get(model, victim.id) == got),
        timeout=10,
    ), (ops, got, cache.corrupt)
    # The watch: the change as the row reads, or a report of it.
    mine = [e for e in events if (e.new or e.old) and (e.new or e.old).id == victim.id]
    if got is None:
        assert any(str(victim.id) in str(r) for r in reports), (ops, reports)
        # A new connection's cold load records it too, and loads the others.
        with nbdb.connect(f"{server.url}?timeout=5") as fresh:
            cold = fresh.cache(model, shared=False)
            assert cold.wait_synced(10)
            assert key in cold.corrupt and {o.id for o in cold.list(model)} == others
            cold.close()
        # The stale copy: a typed refusal, in time.
        started = time.monotonic()
        try:
            db.update(flip(victim))
            # Only a copy nbdb never handed out can match (a row another writer made, at version 1):
            # then it is written over, the row repaired.
            assert repairable, victim
            assert eventually(lambda: key not in cache.corrupt, timeout=10)
        except (nbdb.ConflictError, nbdb.CorruptRecordError):
            pass
        except nbdb.ValidationError as e:
            # A copy of the version stored (only a row another writer made has one) whose topic is
            # not the row's garbled nbdb:topic: the topic cannot change.
            assert "topic" in str(e) and any("nbdb:topic" in json.dumps(op) for op in ops), e
        assert time.monotonic() - started < 5
    else:
        assert not reports, reports
        if mine:
            assert mine[-1].new == got
        # A compare-and-swap of the copy read writes it (and repairs what the model reads); a
        # reference another writer left naming no row is refused, and the copy without it written.
        try:
            moved = db.update(flip(got))
        except nbdb.ReferenceError:
            assert isinstance(got, LogicalSwitchPort) and got.chassis is not None, got
            moved = db.update(flip(got).replace(chassis=None))
        assert db.get(model, victim.id) == moved
        assert eventually(lambda: cache.get(model, victim.id) == moved, timeout=10)
        victim = moved
    sync()
    return victim


def _drop_child(
    server: OvsdbServer, column: str, parent: uuid.UUID, child: uuid.UUID, table: str = "Logical_Switch"
) -> None:
    """Gone, as another writer removes it (from its parent's set: the server collects the row)."""
    _transact(
        server,
        [
            {
                "op": "mutate",
                "table": table,
                "where": _where(parent),
                "mutations": [[column, "delete", ["set", [["uuid", str(child)]]]]],
            }
        ],
    )


def test_another_writers_garbage_in_a_mapped_column_is_a_row_or_a_corrupt_record_and_nothing_stops(
    server: OvsdbServer,
) -> None:
    with nbdb.connect(f"{server.url}?timeout=5") as db:
        switch = db.create(LogicalSwitch(name="sw-garbage"))
        group = db.create(PortGroup(name="pg-garbage"))
        sibling = db.create(LogicalSwitchPort(switch=switch.id, name="sibling"))
        rule = db.create(ACL(switch=switch.id, direction="to-lport", priority=1, match="1", action="allow"))
        qos = db.create(QoS(switch=switch.id, direction="to-lport", priority=1, match="1", bandwidth={"rate": 5}))
        gone = db.create(LogicalSwitch(name="sw-gone"))
        db.delete(gone)
        chassis = db.create(Chassis(name="ch-live"))
        gone_chassis = db.create(Chassis(name="ch-gone"))
        db.delete(gone_chassis)
        _IDS.update(
            {
                "@switch": str(switch.id),
                "@group": str(group.id),
                "@sibling": str(sibling.id),
                "@deleted": str(gone.id),
                "@chassis": str(chassis.id),
                "@gone-chassis": str(gone_chassis.id),
            }
        )
        models: list[type[Model]] = [LogicalSwitchPort, ACL, QoS]
        cache = db.cache(models, shared=False)
        assert cache.wait_synced(10)
        reports: list[nbdb.CorruptRecordError] = []
        watch = db.watch(models, on_error=reports.append)
        events: list[Any] = []
        state = {"sibling": sibling, "n": 0}

        def sync() -> None:
            """A later valid change of another row: the watch and the cache deliver it, and by then
            they have applied everything before it."""
            moved = db.update(state["sibling"].replace(up=not state["sibling"].up))
            state["sibling"] = moved
            assert eventually(
                lambda: events.extend(watch.poll(0.1)) or any(e.new == moved for e in events if e.new), timeout=10
            )
            assert eventually(lambda: cache.get(LogicalSwitchPort, moved.id) == moved, timeout=10)

        def flip(obj: Any) -> Any:
            if isinstance(obj, LogicalSwitchPort):
                return obj.replace(up=not obj.up, external_ids={"fixed": "1"})
            return obj.replace(priority=(obj.priority + 1) % 100, external_ids={"fixed": "1"})

        examples = int(os.environ.get("NBDB_CORRUPT_EXAMPLES", "30"))
        common = settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )

        @common
        @given(damages=st.lists(_damage(), min_size=1, max_size=3))
        def ports(damages: list[tuple[str, Any]]) -> None:
            state["n"] += 1
            victim = db.create(
                LogicalSwitchPort(
                    switch=switch.id,
                    name=f"victim-{state['n']}",
                    addresses=["0a:00:00:00:00:02 10.0.0.2"],
                    tag_request=7,
                    chassis=chassis.id,
                )
            )
            try:
                # One to three garbled values, in one transaction of the other writer's.
                ops = [op for damage in damages for op in _ops(server, victim.id, damage)]
                _check_damaged(
                    server, db, cache, watch, events, reports, LogicalSwitchPort, victim, ops, {sibling.id}, sync, flip
                )
            finally:
                _drop_child(server, "ports", switch.id, victim.id)
                key = (LogicalSwitchPort.nbdb_table, victim.id)
                assert eventually(
                    lambda: key not in cache.corrupt and cache.get(LogicalSwitchPort, victim.id) is None, timeout=10
                )

        @common
        @given(model=st.sampled_from([ACL, QoS]), damage=_rule_damage())
        def rules(model: type[Model], damage: tuple[str, Any]) -> None:
            if model is ACL:
                victim: Any = db.create(
                    ACL(switch=switch.id, direction="from-lport", priority=2, match="2", action="drop")
                )
                column, other = "acls", rule.id
            else:
                victim = db.create(
                    QoS(switch=switch.id, direction="from-lport", priority=2, match="2", action={"dscp": 3})
                )
                column, other = "qos_rules", qos.id
            try:
                ops = _ops(server, victim.id, damage, model.nbdb_table if model is ACL else "QoS", group.id)
                _check_damaged(server, db, cache, watch, events, reports, model, victim, ops, {other}, sync, flip)
            finally:
                _drop_child(server, column, switch.id, victim.id)
                _drop_child(server, "acls", group.id, victim.id, "Port_Group")
                key = (model.nbdb_table, victim.id)
                assert eventually(lambda: key not in cache.corrupt and cache.get(model, victim.id) is None, timeout=10)

        @common
        @given(columns=_FOREIGN_ROW)
        def foreign(columns: dict[str, Any]) -> None:
            # A row another writer made (ovn-nbctl lsp-add, or a raw insert): none of nbdb's marks
            # but those drawn, any columns the schema takes.
            ext = dict(columns.get("external_ids", ["map", []])[1])
            # A window of falling versions, as nbdb leaves in a row it wrote several times, reads as
            # a create merged with its updates and ends plain watches: a limit, documented.
            assume(not _history_shaped(ext.get("nbdb:txn")))
            state["n"] += 1
            id = uuid.uuid4()
            row = {"name": f"f-{state['n']}", **columns}
            if "name" in columns:
                row["name"] = columns["name"] + f"-{state['n']}"
            ops = [
                {"op": "insert", "table": LSP, "uuid": str(id), "row": row},
                {
                    "op": "mutate",
                    "table": "Logical_Switch",
                    "where": _where(switch.id),
                    "mutations": [["ports", "insert", ["set", [["uuid", str(id)]]]]],
                },
            ]
            stub = LogicalSwitchPort(id=id, version=1, switch=switch.id, name="stub")
            try:
                _check_damaged(
                    server,
                    db,
                    cache,
                    watch,
                    events,
                    reports,
                    LogicalSwitchPort,
                    stub,
                    ops,
                    {sibling.id},
                    sync,
                    flip,
                    repairable=True,
                )
            finally:
                _drop_child(server, "ports", switch.id, id)
                key = (LogicalSwitchPort.nbdb_table, id)
                assert eventually(
                    lambda: key not in cache.corrupt and cache.get(LogicalSwitchPort, id) is None, timeout=10
                )

        try:
            ports()
            rules()
            foreign()
        finally:
            watch.close()
            cache.close()


@pytest.mark.parametrize(
    "mark, value",
    [("nbdb:version", "0"), ("nbdb:version", "1"), ("nbdb:txn", "x@1 y@60"), ("nbdb:txn", "x@50 y@60")],
)
def test_marks_another_writer_moved_do_not_make_the_rows_next_write_a_merged_catch_up(
    server: OvsdbServer, mark: str, value: str
) -> None:
    """Found by the property test above. ``nbdb:version`` set below the newest entry of the row's
    ``nbdb:txn``, or ``nbdb:txn`` holding an entry of a higher version behind its newest: the row's
    next nbdb write showed two commits since the version read, a merged catch-up, which ended every
    plain watch with HistoryGoneError, again at every later write of the row. The version read is
    never below the window's newest entry, and only the window's leading run of falling versions
    counts as commits: the writes are delivered one by one."""
    with nbdb.connect(f"{server.url}?timeout=5") as db:
        switch = db.create(LogicalSwitch(name="sw-moved-down"))
        port = db.create(LogicalSwitchPort(switch=switch.id, name=f"p-{switch.id}"))
        port = db.update(port.replace(up=True))
        with db.watch(LogicalSwitchPort) as watch:
            assert not _refused(_transact(server, _set_mark(port.id, mark, value)))
            for _round in range(2):
                port = db.update(db.get(LogicalSwitchPort, port.id).replace(up=not port.up))
                seen: list[Any] = []
                assert eventually(
                    lambda s=seen, p=port: s.extend(watch.poll(0.1)) or any(e.new == p for e in s), timeout=10
                )
        _drop_child(server, "ports", switch.id, port.id)


@pytest.mark.parametrize("lead", ["junk ", " ", "@5 ", "x@\u00b2 "])
def test_a_token_window_another_writer_put_garbage_before_does_not_make_the_next_write_a_merged_catch_up(
    server: OvsdbServer, lead: str
) -> None:
    """``nbdb:version`` set to ``0`` and garbage in front of the newest entry of ``nbdb:txn``
    (``"junk x@2 y@1"``): the version was read as 0 (only the window's first word was looked at),
    and the row's next nbdb write (``n@4 x@2 y@1``) showed three commits since it, a merged
    catch-up, which ended every plain watch with HistoryGoneError. The version read is the newest
    entry the window reads as."""
    with nbdb.connect(f"{server.url}?timeout=5") as db:
        switch = db.create(LogicalSwitch(name="sw-lead"))
        port = db.create(LogicalSwitchPort(switch=switch.id, name=f"l-{switch.id}"))
        port = db.update(port.replace(up=True))
        with db.watch(LogicalSwitchPort) as watch:
            ops = _set_mark(port.id, "nbdb:version", "0") + _set_mark(port.id, "nbdb:txn", f"{lead}x@2 y@1")
            assert not _refused(_transact(server, ops))
            port = db.update(db.get(LogicalSwitchPort, port.id).replace(up=False))
            seen: list[Any] = []
            assert eventually(lambda: seen.extend(watch.poll(0.1)) or any(e.new == port for e in seen), timeout=10)
        _drop_child(server, "ports", switch.id, port.id)


@pytest.mark.parametrize("window", ["a@0 a@0", "a@404 a@404", "a@3 b@7"])
def test_a_row_another_writer_inserts_with_a_garbled_token_window_does_not_end_a_watch(
    server: OvsdbServer, window: str
) -> None:
    """Found by the property test above: a port row another writer inserted whose ``nbdb:txn`` held
    two entries of no falling versions showed two commits in its first update, a merged catch-up,
    which ended every plain watch of the database with HistoryGoneError."""
    with nbdb.connect(f"{server.url}?timeout=5") as db:
        switch = db.create(LogicalSwitch(name="sw-inserted"))
        sibling = db.create(LogicalSwitchPort(switch=switch.id, name=f"s-{switch.id}"))
        id = uuid.uuid4()
        with db.watch(LogicalSwitchPort) as watch:
            row = {"name": f"i-{switch.id}", "external_ids": ["map", [["nbdb:txn", window]]]}
            ops = [
                {"op": "insert", "table": LSP, "uuid": str(id), "row": row},
                {
                    "op": "mutate",
                    "table": "Logical_Switch",
                    "where": _where(switch.id),
                    "mutations": [["ports", "insert", ["set", [["uuid", str(id)]]]]],
                },
            ]
            assert not _refused(_transact(server, ops))
            sibling = db.update(sibling.replace(up=True))
            seen: list[Any] = []
            assert eventually(lambda: seen.extend(watch.poll(0.1)) or any(e.new == sibling for e in seen), timeout=10)
            assert any(e.new is not None and e.new.id == id for e in seen)
        _drop_child(server, "ports", switch.id, id)


@pytest.mark.parametrize(
    "mark, version, foreign",
    [
        ("nbdb:version", 2**63 - 1, False),
        ("nbdb:version", 2**63 - 2, False),
        ("nbdb:txn", 2**63 - 1, False),
        ("nbdb:version", 2**63 - 1, True),
    ],
)
def test_a_version_another_writer_set_near_the_limit_is_never_written_past(
    server: OvsdbServer, mark: str, version: int, foreign: bool
) -> None:
    """``nbdb:version`` (or the newest entry of ``nbdb:txn``) set just below 2**63, which no read
    goes past: nbdb's next writes stored 2**63 and up, read back as an older entry of the window and,
    once they filled it, as version 0, so two merged commits of the row were no longer seen as
    merged. An update that would write 2**63 raises CorruptRecordError before anything is sent (the
    row is left as it was, at the version read, whether or not another writer also changed its
    content), every version written before reads back, a plain watch and a cache go on, and the row
    can be mutated natively (a mark, no version) and deleted (a delete writes no version)."""
    with nbdb.connect(f"{server.url}?timeout=5") as db:
        switch = db.create(LogicalSwitch(name=f"sw-limit-{uuid.uuid4()}"))
        port = db.create(LogicalSwitchPort(switch=switch.id, name=f"v-{switch.id}"))
        sibling = db.create(LogicalSwitchPort(switch=switch.id, name=f"w-{switch.id}"))
        cache = db.cache(LogicalSwitchPort, shared=False)
        assert cache.wait_synced(10)
        seen: list[Any] = []
        with cache, db.watch(LogicalSwitchPort) as watch:

            def delivered(obj: Any) -> None:
                assert eventually(lambda: seen.extend(watch.poll(0.1)) or any(e.new == obj for e in seen), timeout=10)
                assert eventually(lambda: cache.get(LogicalSwitchPort, obj.id) == obj, timeout=10)

            ops = _set_mark(port.id, mark, str(version) if mark == "nbdb:version" else f"x@{version}")
            if foreign:
                ops += _update(port.id, "up", True)
            assert not _refused(_transact(server, ops))
            expected = version + 1 if foreign else version  # another writer's content change: one more
            assert eventually(lambda: db.get(LogicalSwitchPort, port.id).version == expected, timeout=10)
            port = db.get(LogicalSwitchPort, port.id)
            delivered(port)
            while port.version < 2**63 - 1:
                port = db.update(port.replace(up=not port.up))
                assert db.get(LogicalSwitchPort, port.id) == port  # read back at the version written
                delivered(port)
            with pytest.raises(nbdb.CorruptRecordError, match="near the limit by another writer") as raised:
                db.update(port.replace(up=not port.up))
            assert raised.value.table == "LogicalSwitchPort" and raised.value.key == str(port.id)
            assert str(port.id) in str(raised.value)
            assert db.get(LogicalSwitchPort, port.id) == port  # nothing sent
            sibling = db.update(sibling.replace(up=True))
            delivered(sibling)
            assert cache.get(LogicalSwitchPort, port.id) == port
            # A native mutation writes a mark, no version: it lands, read one version on (a change).
            before = port.version
            port = db.mutate(port, add={"addresses": ["unknown"]})
            assert port.addresses == ["unknown"] and port.version == before + 1
            assert db.get(LogicalSwitchPort, port.id) == port
            delivered(port)
            with pytest.raises(nbdb.CorruptRecordError, match="near the limit by another writer"):
                db.update(port.replace(up=not port.up))
            db.delete(port)
            with pytest.raises(nbdb.NotFoundError):
                db.get(LogicalSwitchPort, port.id)
            assert eventually(
                lambda: seen.extend(watch.poll(0.1)) or any(e.old == port and e.new is None for e in seen), timeout=10
            )
            assert eventually(lambda: cache.get(LogicalSwitchPort, port.id) is None, timeout=10)
            sibling = db.update(sibling.replace(up=False))
            delivered(sibling)
