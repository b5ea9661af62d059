"""Revisions: plain integers that carry the scope of their sequence."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nbdb.cache import _new_incarnation, _unchanged
from nbdb.models import LogicalSwitch
from nbdb.models.base import written_of
from nbdb.revision import GLOBAL_SCOPE, Revision
from nbdb.spi import Record
from nbdb.writes import delete_of, put_of

pytestmark = pytest.mark.timeout(60)


@given(st.integers(min_value=0, max_value=2**63))
def test_a_revision_is_its_integer(value: int) -> None:
    scope = object()
    for revision in (Revision(value), Revision(value, scope)):
        assert revision == value and hash(revision) == hash(value)
        assert str(revision) == str(value) and revision + 1 == value + 1


def test_scope_is_kept_and_a_global_revision_holds_no_instance_dict() -> None:
    scope = object()
    assert Revision(3, scope).scope is scope
    plain = Revision(3)
    assert plain.scope is GLOBAL_SCOPE
    # Every stored object keeps its commit's revision: the common one costs no dict.
    assert not vars(plain)


def test_unpickled_revision_keeps_only_the_global_scope() -> None:
    assert pickle.loads(pickle.dumps(Revision(7))).scope is GLOBAL_SCOPE
    scope = object()
    other = pickle.loads(pickle.dumps(Revision(7, scope)))
    assert other == 7 and other.scope is not scope and other.scope is not GLOBAL_SCOPE


# ---------------------------------------------------------------- the written stamp of a copy (written_of)

_TOKENS = st.integers(min_value=1, max_value=2**63 - 1)


def _result(version: int, revision: int) -> LogicalSwitch:
    """A write's result as the Database stamps it (see Model.stored_copy)."""
    return LogicalSwitch(name="s").stored_copy(version, revision=revision)


@given(st.integers(min_value=1, max_value=50), st.integers(min_value=1, max_value=2**40), _TOKENS)
def test_a_result_whose_revision_carries_its_commits_stamp_is_written_by_that_stamp(
    version: int, revision: int, token: int
) -> None:
    # OVSDB: the revision counts per connection, the token (what the rows carry) is the same on every client.
    result = _result(version, Revision(revision, object(), token))
    assert result.nbdb_revision == revision and result.nbdb_revision.written == token  # type: ignore[union-attr]
    assert written_of(result) == written_of(result, version) == token
    assert written_of(result, version + 1) is None  # stamped at another version: its version alone compares
    put, _ = put_of(result, version)
    assert put.expect_written == token and delete_of(result).expect_written == token
    derived = result.replace(name="t")  # a copy derived from it keeps the stamp, as a read copy's
    assert written_of(derived, version) == token and put_of(derived, version)[0].expect_written == token
    # The checks of a cache: the record its commit wrote is this copy; one at its version that another commit
    # wrote is another incarnation of the id.
    same = Record("Logical_Switch", result.id, None, version, b"", None, token)
    other = same._replace(written=token + 1)
    assert _unchanged(result, same) and not _new_incarnation(result, same)
    assert not _unchanged(result, other) and _new_incarnation(result, other)


@given(st.integers(min_value=1, max_value=50), st.integers(min_value=1, max_value=2**40))
def test_a_result_without_a_stamp_is_written_by_its_revision(version: int, revision: int) -> None:
    plain = _result(version, Revision(revision))  # one global sequence: the records carry the commit's revision
    assert written_of(plain, version) == revision and type(written_of(plain)) is int
    record = Record("Logical_Switch", plain.id, None, version, b"", None, revision)
    assert _unchanged(plain, record) and not _new_incarnation(plain, record._replace(written=revision))
    assert _new_incarnation(plain, record._replace(written=revision + 1))
    # One connection's revision without a stamp (a mutation's read-back): no record carries it, so a cache
    # tells nothing by it (the OVSDB planner compares it with its clock).
    scoped = _result(version, Revision(revision, object()))
    assert type(written_of(scoped)) is Revision and put_of(scoped, version)[0].expect_written is written_of(scoped)
    assert not _new_incarnation(scoped, record._replace(written=revision + 1))
    assert written_of(LogicalSwitch(name="s")) is None
    moved = plain.model_copy(update={"version": version + 1})  # moved after it was stamped: not that version's
    assert written_of(moved, moved.version) is None and put_of(moved, moved.version)[0].expect_written is None


def test_a_revisions_stamp_is_declared_and_costs_a_global_revision_no_dict() -> None:
    assert Revision(3).written is None and not vars(Revision(3))
    assert Revision(3, object(), 11).written == 11 and Revision(3, object()).written is None
