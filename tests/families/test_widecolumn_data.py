"""The wide-column family's data API rules, without a server: unique claims in plans, claim steps, page ranges,
deadlines, and what a stream checks to notice that the store lost a commit of this process."""

from __future__ import annotations

import itertools
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nbdb import errors
from nbdb.families.widecolumn import layout as L
from nbdb.families.widecolumn.changes import ChangeRow, Intent
from nbdb.families.widecolumn.expiry import due
from nbdb.families.widecolumn.pages import in_range
from nbdb.families.widecolumn.planner import ClaimWanted, StoredObject, plan
from nbdb.families.widecolumn.sharing import RecentCommits
from nbdb.families.widecolumn.unique import Claim, HeldClaim, after_resolution, resolve_step
from nbdb.spi import Delete, Put, UniqueKey

pytestmark = pytest.mark.timeout(60)

NS = "ns"
A = ("Chassis", uuid.UUID(int=1))
B = ("Chassis", uuid.UUID(int=2))
NAME = UniqueKey("name", '"ch1"')
OTHER_NAME = UniqueKey("name", '"ch2"')


def put(key: tuple[str, uuid.UUID], version: int, *unique: UniqueKey, ttl: float | None = None) -> Put:
    return Put(key[0], key[1], "t", b"{}", version, unique=unique, ttl=ttl)


def stored(*unique: UniqueKey, version: int = 1) -> StoredObject:
    return StoredObject(version, frozenset(), {}, b"{}", frozenset(L.unique_text(u) for u in unique))


# ---------------------------------------------------------------------------- unique values in plans


def test_a_create_claims_its_values_and_lists_them_in_its_row() -> None:
    got = plan(NS, "t", [put(A, 0, NAME)], {}, {A: None})
    assert got.claims == [ClaimWanted("Chassis", A[1], NAME, L.unique_text(NAME), frozenset())]
    assert got.unclaims == []
    statement, values = got.statements[0]
    assert statement is L.W_CREATE_MARKED and values[-4] == frozenset({L.unique_text(NAME)})


def test_an_update_keeping_its_values_claims_nothing() -> None:
    got = plan(NS, "t", [put(A, 1, NAME)], {A: stored(NAME)}, {})
    assert got.claims == [] and got.unclaims == []
    assert got.statements[0][0] is L.W_UPDATE


def test_a_rename_claims_the_new_value_and_gives_up_the_old() -> None:
    got = plan(NS, "t", [put(A, 1, OTHER_NAME)], {A: stored(NAME)}, {})
    assert [c.key for c in got.claims] == [OTHER_NAME]
    assert [(u.owner, u.text) for u in got.unclaims] == [(A[1], L.unique_text(NAME))]
    assert got.statements[0][0] is L.W_UPDATE_UNIQUE


def test_a_delete_gives_up_its_values() -> None:
    got = plan(NS, "t", [Delete(A[0], A[1], "t", 1)], {A: stored(NAME)}, {})
    assert got.claims == [] and [u.text for u in got.unclaims] == [L.unique_text(NAME)]


def test_two_objects_of_one_transaction_cannot_take_one_value() -> None:
    with pytest.raises(errors.UniqueViolationError) as info:
        plan(NS, "t", [put(A, 0, NAME), put(B, 0, NAME)], {}, {A: None, B: None})
    assert info.value.field == "name" and info.value.existing == A[1]


def test_a_value_moves_between_two_objects_of_one_transaction() -> None:
    got = plan(NS, "t", [put(A, 1, OTHER_NAME), put(B, 1, NAME)], {A: stored(NAME), B: stored(OTHER_NAME)}, {})
    # A swap: each claim may move from the object that gives the value up; nothing is dropped.
    assert {(c.owner, c.key, c.releasing) for c in got.claims} == {
        (A[1], OTHER_NAME, frozenset({B[1]})),
        (B[1], NAME, frozenset({A[1]})),
    }
    assert got.unclaims == []


def test_a_ttl_is_given_at_creation_only() -> None:
    got = plan(NS, "t", [put(A, 0, ttl=2.5)], {}, {A: None}, now_ms=1_000)
    assert [(e.id, e.deadline) for e in got.expiring] == [(A[1], 3_500)]
    with pytest.raises(errors.ValidationError):
        plan(NS, "t", [put(A, 1, ttl=2.5)], {A: stored()}, {})


# ---------------------------------------------------------------------------- claim steps

WANTED = ClaimWanted("Chassis", A[1], NAME, L.unique_text(NAME), frozenset({B[1]}))


def test_a_claim_of_an_earlier_attempt_is_retied_only_if_it_is_that_attempt() -> None:
    mine = HeldClaim(A[1], 7, None)
    assert resolve_step(Claim(A[1], None, "t", 7), WANTED, mine) == "retie"
    assert resolve_step(Claim(A[1], None, "t", 7), WANTED, None) == "resolve"  # another commit of A's
    assert resolve_step(Claim(A[1], None, "t", 8), WANTED, mine) == "resolve"
    assert resolve_step(Claim(A[1], B[1], "t", 7), WANTED, mine) == "retie"  # B still gives it up
    foreign = uuid.UUID(int=9)
    assert resolve_step(Claim(A[1], foreign, "t", 7), WANTED, mine) == "resolve"
    # The mark of its early claim (a prev that names no object) is its own, not a previous holder; another's is not.
    mark = uuid.uuid4()
    assert resolve_step(Claim(A[1], mark, "t", 7), WANTED, HeldClaim(A[1], 7, None, mark)) == "retie"
    assert resolve_step(Claim(A[1], mark, "t", 7), WANTED, HeldClaim(A[1], 7, None, uuid.uuid4())) == "resolve"


def test_what_a_claimer_does_once_it_knows_the_holder() -> None:
    assert after_resolution(None, WANTED) == ("take", None)
    assert after_resolution(A[1], WANTED) == ("replan", None)
    assert after_resolution(B[1], WANTED) == ("move", B[1])
    assert after_resolution(uuid.UUID(int=9), WANTED) == ("taken", uuid.UUID(int=9))


# ---------------------------------------------------------------------------- pages and deadlines


@given(st.lists(st.uuids(), min_size=1, max_size=30, unique=True), st.data())
def test_consecutive_page_ranges_hold_every_id_once(ids: list[uuid.UUID], data: Any) -> None:
    order = sorted(ids, key=lambda u: u.int)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(order) - 1), max_size=5))))
    bounds = [None, *(order[c] for c in cuts), None]
    ranges = [in_range(lambda u: u.int, low, high) for low, high in itertools.pairwise(bounds)]
    for id in ids:
        assert sum(inside(id) for inside in ranges) == 1


def test_due_deadlines_come_oldest_first() -> None:
    rows: list[Any] = [SimpleNamespace(deadline=d) for d in (30, None, 10, 50)]
    assert [r.deadline for r in due(rows, 30)] == [None, 10, 30]


def test_the_latest_landed_commit_of_this_process_skips_voids_empty_and_later_ones() -> None:
    recent = RecentCommits()
    assert recent.latest_landed(10, 60) is None
    row = ChangeRow(3, "T", uuid.UUID(int=1), b"{}", 1, None, 0)
    recent.add(Intent(3, "a", frozenset({"T"})), [row])
    recent.add(Intent(5, "b", frozenset({"T"}), void=True), ())
    recent.add(Intent(6, "b", frozenset({"T"})), ())  # nothing written (deletes of objects already gone)
    recent.add(Intent(8, "c", frozenset({"T"})), [ChangeRow(8, "T", uuid.UUID(int=1), b"{}", 2, b"{}", 1)])
    assert recent.latest_landed(7, 60) == Intent(3, "a", frozenset({"T"}))
    assert recent.latest_landed(8, 60) == Intent(8, "c", frozenset({"T"}))
    assert recent.latest_landed(8, 0) is None  # older than the history: its change rows may have expired
    recent.clear()
    assert recent.latest_landed(8, 60) is None
