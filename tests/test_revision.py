"""Revisions: plain integers that carry the scope of their sequence."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nbdb.revision import GLOBAL_SCOPE, Revision

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
