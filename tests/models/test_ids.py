"""Object ids: the fast version-4 UUID is the one ``uuid`` would make from the same bytes."""

from __future__ import annotations

import copy
import pickle
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nbdb.models import LogicalSwitch
from nbdb.models.ids import new_id, v4_from_bytes

pytestmark = pytest.mark.timeout(60)


@given(st.binary(min_size=16, max_size=16))
def test_an_id_is_uuid4_of_the_same_bytes(raw: bytes) -> None:
    made, expected = v4_from_bytes(raw), uuid.UUID(bytes=raw, version=4)
    assert type(made) is uuid.UUID
    assert made == expected and hash(made) == hash(expected) and str(made) == str(expected)
    assert made.int == expected.int and made.is_safe is expected.is_safe
    assert made.version == 4 and made.variant == uuid.RFC_4122


def test_new_ids_are_version_4_and_distinct() -> None:
    ids = [new_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    for value in ids:
        assert value.version == 4 and value.variant == uuid.RFC_4122
        assert uuid.UUID(str(value)) == value
        assert pickle.loads(pickle.dumps(value)) == value and copy.deepcopy(value) == value


def test_a_model_built_without_an_id_gets_a_new_one() -> None:
    a, b = LogicalSwitch(name="a"), LogicalSwitch(name="b")
    assert type(a.id) is uuid.UUID and a.id.version == 4 and a.id != b.id
    with pytest.raises(TypeError):
        a.id.int = 1  # type: ignore[misc]  # still an immutable UUID


def test_the_public_fallback_makes_the_same_ids() -> None:
    # What the module uses if a Python release changes UUID's layout (checked at import).
    from nbdb.models import ids

    assert ids._same_as_public(bytes(range(16)))
    raw = bytes(range(16, 32))
    assert ids._public_v4_from_bytes(raw) == v4_from_bytes(raw)
    made = ids._public_new_id()
    assert made.version == 4 and made.variant == uuid.RFC_4122 and made != ids._public_new_id()
