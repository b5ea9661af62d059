"""A newer schema's value in a field of an ``IntEnum``, a ``float`` ``Enum`` or a plain ``Enum`` (nbdb.models.enums).

The rule of ``StrEnum`` fields (tests/models/test_newer_enum_values.py) for the other enum classes: what
``nbdb models generate`` writes for an integer or a real column's enum, and a user's own. No server: the
codec given the bytes an OVSDB replica hands out (:class:`nbdb.spi.CheckedData`) and the plain bytes of
a store of records; the real server's side is in tests/backends/test_ovsdb_generated.py.
"""

from __future__ import annotations

import copy
import enum
import json
import pickle
import uuid
from typing import ClassVar, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Field

import nbdb
from nbdb import codec
from nbdb.commit_context import refuse_newer_values
from nbdb.models import Model
from nbdb.models.enums import enum_fields, is_newer, newer_held, newer_value
from nbdb.spi import CheckedData, Record
from nbdb.writes import put_of


class Tier(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Gain(float, enum.Enum):
    HALF = 0.5
    ONE = 1.0


class Color(enum.Enum):
    RED = "red"


class Perm(enum.Flag):
    R = 1
    W = 2


class Gear(Model):
    nbdb_table: ClassVar[str] = "NewerEnumKindsGear"

    tier: Tier = Tier.LOW
    gain: Gain | None = None
    tiers: list[Tier] = Field(default_factory=list)
    color: Color = Color.RED
    level: Literal[1, 2] = 1
    perm: Perm = Perm.R


_INTS = st.integers(-(2**63), 2**63 - 1).filter(lambda n: n not in (1, 2))
_REALS = st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x not in (0.5, 1.0))


def _bytes(**fields: object) -> tuple[uuid.UUID, bytes]:
    obj = Gear()
    document = json.loads(codec.encode(obj))
    document.update(fields)
    return obj.id, json.dumps(document, sort_keys=True).encode()


def _record(id: uuid.UUID, data: bytes) -> Record:
    return Record("NewerEnumKindsGear", id, None, 3, data, None)


@settings(max_examples=60, deadline=None)
@given(number=_INTS, real=_REALS)
def test_integer_and_real_values_outside_the_enum_read_only_where_the_store_admits_them(
    number: int, real: float
) -> None:
    id, data = _bytes(tier=number, gain=real, tiers=[2, number])
    # A store of records (memory, Redis...): another writer's value outside the enum is a corrupt record.
    with pytest.raises(nbdb.CorruptRecordError):
        codec.decode(Gear, _record(id, data), share=False)
    admitted = {"tier": frozenset({str(number)}), "gain": frozenset({str(real)}), "tiers": frozenset({str(number)})}
    gear = codec.decode(Gear, _record(id, CheckedData(data, admitted)), share=False)
    # Equal to the number, an instance of the field's enum, hashed as the number: what a plain int would be.
    assert (
        gear.tier == number and isinstance(gear.tier, Tier) and is_newer(gear.tier) and hash(gear.tier) == hash(number)
    )
    assert gear.tier.value == number and gear.tier.name == str(number)
    assert gear.gain == real and isinstance(gear.gain, Gain) and is_newer(gear.gain)
    assert gear.tiers == [Tier.HIGH, number] and not is_newer(gear.tiers[0]) and is_newer(gear.tiers[1])
    # Kept through a validation, and written out as the number it was (encode, dump, plain).
    moved = gear.replace(color=Color.RED)
    assert moved.tier is gear.tier and moved.gain is gear.gain
    for out in (json.loads(codec.encode(moved)), moved.model_dump(mode="json"), codec.plain(moved)):
        assert (out["tier"], out["gain"], out["tiers"]) == (number, real, [2, number])
    assert newer_held(moved) == {"tier": [number], "gain": [real], "tiers": [number]}
    for again in (pickle.loads(pickle.dumps(moved)), copy.deepcopy(moved)):
        assert again == moved and again.tier is moved.tier
    # Plain input stays checked: the caller's number outside the enum is refused.
    with pytest.raises(nbdb.ValidationError):
        gear.replace(tier=number)
    # A store of records checks no enum: the write is refused before it is sent, naming the numbers.
    with pytest.raises(nbdb.ValidationError, match=rf"tier = {number}(,|;|\))"):
        refuse_newer_values([put_of(moved, 1)[0]])
    # Admitted for another value only: still corrupt.
    with pytest.raises(nbdb.CorruptRecordError):
        codec.decode(
            Gear, _record(id, CheckedData(data, {**admitted, "tier": frozenset({str(number + 1)})})), share=False
        )


@settings(max_examples=30, deadline=None)
@given(number=_INTS)
def test_a_literal_field_cannot_hold_a_newer_value_and_its_record_stays_corrupt(number: int) -> None:
    """Nothing but a ``Literal``'s own values validates as one: why ``nbdb models generate`` writes enum classes."""
    id, data = _bytes(level=number)
    with pytest.raises(nbdb.CorruptRecordError):
        codec.decode(Gear, _record(id, CheckedData(data, {"level": frozenset({str(number)})})), share=False)


def test_a_plain_enums_newer_value_and_the_fields_that_can_hold_one() -> None:
    admitted = {"color": frozenset({"blue"}), "tier": frozenset({"3"})}
    id, data = _bytes(color="blue", tier="3")
    # Text is no integer of an IntEnum's, even where the integer's text is admitted.
    with pytest.raises(nbdb.CorruptRecordError):
        codec.decode(Gear, _record(id, CheckedData(data, admitted)), share=False)
    id, data = _bytes(color="blue")
    gear = codec.decode(Gear, _record(id, CheckedData(data, admitted)), share=False)
    # As its members, a plain Enum's newer member equals itself only; its value is the text.
    assert gear.color.value == "blue" and gear.color != "blue" and is_newer(gear.color)
    assert gear.color is newer_value(Color, "blue") and codec.plain(gear)["color"] == "blue"
    # A Flag's combination is Python's own pseudo-member, no newer schema's; a Literal holds no enum.
    both = Gear(perm=Perm.R | Perm.W)
    assert not is_newer(both.perm) and newer_held(both) == {}
    assert set(enum_fields(Gear)) == {"tier", "gain", "tiers", "color"}
    assert not is_newer(Tier.LOW) and newer_value(Tier, 2) is Tier.HIGH
