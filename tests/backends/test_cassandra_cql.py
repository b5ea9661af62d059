"""The Cassandra backend's pure parts, without a server: the CQL dialect, the URL, the exception map."""

from __future__ import annotations

import io
import struct
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import nbdb
from nbdb.families.widecolumn import Compare, Delete, EntryEquals, Insert, OutcomeUnknown, Select, Update, layout

pytest.importorskip("cassandra")

import cassandra
from cassandra.cluster import NoHostAvailable
from cassandra.connection import ConnectionShutdown
from cassandra.protocol import ErrorMessage

from nbdb.backends.cassandra.dialect import CqlDialect, uuid_order
from nbdb.backends.cassandra.exceptions import CAS_WRITE_UNKNOWN, NbdbRetryPolicy, translate
from nbdb.backends.cassandra.store import row_factory
from nbdb.backends.cassandra.url import parse_url

pytestmark = pytest.mark.timeout(60)

DIALECT = CqlDialect("ks")


# ---------------------------------------------------------------------------- the dialect


def test_an_update_binds_the_family_order_to_cql_markers() -> None:
    stmt = Update(
        "t", ("k1", "k2"), set=("a",), add=("m",), remove=("s",), conditions=(Compare("v", "<"), EntryEquals("m")),
        ttl=True,
    )  # fmt: skip
    compiled = DIALECT.write(stmt)
    assert compiled.cql == (
        "UPDATE ks.t USING TTL ? SET a = ?, m = m + ?, s = s - ? WHERE k1 = ? AND k2 = ? IF v < ? AND m[?] = ?"
    )
    family = ("K1", "K2", "A", "M", "S", "V", "MK", "MV", "TTL")
    assert compiled.arrange(family) == ("TTL", "A", "M", "S", "K1", "K2", "V", "MK", "MV")
    assert compiled.conditional


@st.composite
def updates(draw: Any) -> Update:
    names = iter(f"c{i}" for i in range(100))

    def some(low: int = 0) -> tuple[str, ...]:
        return tuple(next(names) for _ in range(draw(st.integers(low, 3))))

    where, set_, add, remove = some(1), some(), some(), some()
    if not set_ + add + remove:
        set_ = (next(names),)
    conditions = tuple(
        EntryEquals(next(names)) if draw(st.booleans()) else Compare(next(names), draw(st.sampled_from("=<>")))
        for _ in range(draw(st.integers(0, 2)))
    )
    return Update("t", where, set=set_, add=add, remove=remove, conditions=conditions, ttl=draw(st.booleans()))


@given(updates())
def test_every_cql_marker_gets_the_family_parameter_of_its_column(stmt: Update) -> None:
    # The family's parameters, each labelled with what it is for, in the family's order.
    labels: list[str] = [f"<{c}>" for c in [*stmt.where, *stmt.set, *stmt.add, *stmt.remove]]
    for c in stmt.conditions:
        labels += [f"<{c.column}.key>", f"<{c.column}.value>"] if isinstance(c, EntryEquals) else [f"<{c.column}>"]
    labels += ["<ttl>"] if stmt.ttl else []
    compiled = DIALECT.write(stmt)
    filled = compiled.cql
    for label in compiled.arrange(labels):
        filled = filled.replace("?", str(label), 1)
    assert "?" not in filled
    expected = [f"{c} = <{c}>" for c in [*stmt.where, *stmt.set]]
    expected += [f"{c} = {c} + <{c}>" for c in stmt.add] + [f"{c} = {c} - <{c}>" for c in stmt.remove]
    for c in stmt.conditions:
        if isinstance(c, EntryEquals):
            expected.append(f"{c.column}[<{c.column}.key>] = <{c.column}.value>")
        else:
            expected.append(f"{c.column} {c.op} <{c.column}>")
    expected += ["USING TTL <ttl>"] if stmt.ttl else []
    for fragment in expected:
        assert fragment in filled, (fragment, filled)


def test_inserts_deletes_and_selects() -> None:
    assert DIALECT.write(layout.W_LOCK).cql == (
        "INSERT INTO ks.nbdb_locks (ns, name, holder) VALUES (?, ?, ?) IF NOT EXISTS USING TTL ?"
    )
    assert DIALECT.write(layout.W_DROP_INTENTS).cql == "DELETE FROM ks.nbdb_seq WHERE ns = ? AND bucket = ? AND g <= ?"
    assert DIALECT.write(Delete("t", ("k",), conditions=(Compare("v"),))).conditional
    assert not DIALECT.write(Insert("t", ("k",))).conditional
    assert DIALECT.select(layout.Q_INTENTS).cql == (
        "SELECT g, topic, tables, void FROM ks.nbdb_seq WHERE ns = ? AND bucket = ? AND g > ? LIMIT 1000"
    )
    with pytest.raises(ValueError):
        DIALECT.select(Select("t", ("a",), ("k",), (("r", "!="),)))


def test_tables_are_created_with_keys_statics_and_options() -> None:
    data = next(t for t in layout.TABLES if t.name == "nbdb_data")
    cql = DIALECT.create_table(data)
    assert "last_rev bigint static" in cql and "refs set<text>" in cql and "referrers map<text, text>" in cql
    assert "PRIMARY KEY ((ns, topic), kind, rev, tbl, id))" in cql and "speculative_retry" in cql
    assert DIALECT.create_index(data, "oid") == (
        "CREATE CUSTOM INDEX IF NOT EXISTS nbdb_data_oid ON ks.nbdb_data (oid) USING 'StorageAttachedIndex'"
    )


# ---------------------------------------------------------------------------- the URL


def test_a_url_with_every_option() -> None:
    url = parse_url(
        "cassandra://me:s%40cret@10.0.0.1:9043,[::1]:9044,db3/ks1?replication=dc1:3,dc2:2&consistency=quorum"
        "&serial_consistency=SERIAL&history=60&settle=0.5&timeout=3&connect_timeout=2&local_dc=dc1&heartbeat=0.5",
        {"namespace": "app"},
    )
    assert url.endpoints == (("10.0.0.1", 9043), ("::1", 9044), ("db3", 9042))
    assert (url.username, url.password, url.keyspace) == ("me", "s@cret", "ks1")
    assert url.replication == "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2}"
    assert (url.consistency, url.serial_consistency, url.local_dc) == ("QUORUM", "SERIAL", "dc1")
    assert (url.family.namespace, url.family.history, url.family.settle) == ("app", 60, 0.5)
    assert (url.request_timeout, url.connect_timeout, url.heartbeat) == (3.0, 2.0, 0.5)
    assert "s@cret" not in repr(url)
    assert parse_url("cassandra://h/ks", {}).session_key != url.session_key
    # The driver's heartbeat is a setting of the session: URLs that differ in it do not share one.
    assert parse_url("cassandra://h/ks", {}).heartbeat == 1.0
    assert parse_url("cassandra://h/ks?heartbeat=2", {}).session_key != parse_url("cassandra://h/ks", {}).session_key


@pytest.mark.parametrize(
    "url",
    [
        "redis://h/ks",
        "cassandra:///ks",
        "cassandra://h:70000/ks",
        "cassandra://h/ks?replication=dc'1:3",
        "cassandra://h/ks?namespace=a/b",
        "cassandra://h/ks?check_hostname=2",
        "cassandra://h/ks?heartbeat=0",
        "cassandra://h/ks?tls=1&cert=/nonexistent.pem",
    ],
)
def test_bad_urls_are_validation_errors(url: str) -> None:
    with pytest.raises(nbdb.ValidationError):
        parse_url(url, {}).ssl_context()


def test_clock_must_be_callable() -> None:
    with pytest.raises(nbdb.ValidationError, match="clock"):
        parse_url("cassandra://h/ks", {"clock": 5})
    assert parse_url("cassandra://h/ks", {"clock": lambda: 1.0}).family.clock() == 1.0


# ---------------------------------------------------------------------------- the exception map


def _timeout() -> Exception:
    return cassandra.WriteTimeout("timed out", consistency=6, required_responses=2, received_responses=1, write_type=5)


@pytest.mark.parametrize(
    ("exc", "conditional", "expected"),
    [
        (_timeout(), True, OutcomeUnknown),
        (_timeout(), False, nbdb.BackendUnavailableError),
        (cassandra.OperationTimedOut("client timeout"), True, OutcomeUnknown),
        (ConnectionShutdown("connection lost after sending"), True, OutcomeUnknown),
        (ConnectionShutdown("connection lost"), False, nbdb.BackendUnavailableError),
        (cassandra.Unavailable("not enough replicas"), True, nbdb.BackendUnavailableError),
        (NoHostAvailable("no host", {}), True, nbdb.BackendUnavailableError),
        (cassandra.InvalidRequest("bad cql"), False, nbdb.NbdbError),
        (cassandra.AuthenticationFailed("Bad credentials"), False, nbdb.AuthError),
        (NoHostAvailable("no host", {"h": cassandra.AuthenticationFailed("x")}), False, nbdb.AuthError),
        (RuntimeError("something else"), False, nbdb.BackendUnavailableError),
    ],
)
def test_driver_exceptions_become_nbdb_errors(exc: Exception, conditional: bool, expected: type[Exception]) -> None:
    got = translate(exc, conditional=conditional)
    assert type(got) is expected
    assert isinstance(got, nbdb.NbdbError), "nothing but nbdb errors leaves the backend"


def _server_error(code: int, message: str) -> Exception:
    """The exception the driver raises for a server error frame with ``code``, decoded as it decodes one."""
    body = struct.pack(">iH", code, len(message)) + message.encode()
    error = ErrorMessage.recv_body(io.BytesIO(body), 5).to_exception()
    assert isinstance(error, Exception)
    return error


def test_cas_write_unknown_is_an_unknown_outcome() -> None:
    # As the driver decodes it: a bare protocol ErrorMessage, no DriverException. Classified as a failure
    # that certainly did not apply, such a commit was retried as new and landed twice under node kills.
    exc = _server_error(CAS_WRITE_UNKNOWN, "CAS operation result is unknown - proposal accepted by 1 but not a quorum.")
    assert not isinstance(exc, cassandra.DriverException)
    assert isinstance(translate(exc, conditional=True), OutcomeUnknown)
    assert type(translate(exc)) is nbdb.BackendUnavailableError
    assert isinstance(OutcomeUnknown("x"), nbdb.CommitUnknownError)


def test_a_server_error_the_driver_has_no_class_for_leaves_a_compare_and_set_unknown() -> None:
    assert isinstance(translate(_server_error(0x7777, "something new"), conditional=True), OutcomeUnknown)
    assert type(translate(_server_error(0x2200, "bad cql"), conditional=True)) is nbdb.NbdbError  # InvalidRequest


def test_the_driver_never_resends_a_compare_and_set() -> None:
    policy = NbdbRetryPolicy()
    read, cas = cassandra.query.SimpleStatement("SELECT"), cassandra.query.SimpleStatement("UPDATE .. IF")
    read.is_idempotent, cas.is_idempotent = True, False
    assert policy.on_request_error(read, None, None, 0)[0] == policy.RETRY_NEXT_HOST
    assert policy.on_request_error(read, None, None, 1)[0] == policy.RETHROW
    assert policy.on_request_error(cas, None, None, 0)[0] == policy.RETHROW
    assert policy.on_write_timeout(cas, None, "CAS", 2, 1, 0)[0] == policy.RETHROW


# ---------------------------------------------------------------------------- the uuid order (pages need it)


def test_time_based_ids_sort_by_their_timestamp_and_before_random_ones() -> None:
    ids = [uuid.uuid1(node=1, clock_seq=n) for n in range(50)]
    assert sorted(reversed(ids), key=uuid_order) == sorted(ids, key=lambda u: (u.time, u.int))
    assert uuid_order(uuid.UUID(int=(1 << 128) - 1, version=1)) < uuid_order(uuid.UUID(int=0, version=4))


@given(st.uuids(version=4), st.uuids(version=4))
def test_random_ids_sort_by_their_halves_unsigned(a: uuid.UUID, b: uuid.UUID) -> None:
    assert (uuid_order(a) < uuid_order(b)) == (a.int < b.int)  # one version: high then low half, unsigned


@given(
    st.lists(st.sampled_from(["head", "[applied]", "last_rev", "owner", "rev", "data", "version"]), unique=True),
    st.lists(st.integers(), max_size=3),
)
def test_rows_are_the_drivers_named_tuples_with_their_type_made_once(columns: list[str], values: list[int]) -> None:
    from cassandra.query import named_tuple_factory

    rows = [tuple(v + i for i in range(len(columns))) for v in values]
    ours, theirs = row_factory(columns, rows), named_tuple_factory(columns, rows)
    assert [r._asdict() for r in ours] == [r._asdict() for r in theirs]  # "[applied]" named "applied" as before
    assert [tuple(r) for r in ours] == rows
    again = row_factory(list(columns), rows[:1] or [tuple(range(len(columns)))])
    assert not ours or type(again[0]) is type(ours[0])
