"""A decode's own validator (``codec._fields_validator``) against the model's: the same copies, the same errors.

A decode may check a stored record faster than the model's validator does
(a port's canonical addresses by pattern, without a Python call each), but
only where the answer is the same: a record another writer damaged yields
the very ``CorruptRecordError`` the model's validator makes of it, in a
cache's load (the record skipped and reported, the others loaded) as in a
``list()``.
"""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from pathlib import Path
from typing import Annotated, Any, ClassVar

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nbdb
from nbdb import codec
from nbdb.models.base import Model, validation_error_of
from nbdb.models.ovn import LogicalSwitch, LogicalSwitchPort
from nbdb.models.types import _CANONICAL_ADDRESS, LSPAddress
from nbdb.spi import Record

_PORT_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
_SWITCH_ID = uuid.UUID("00000000-0000-4000-8000-000000000002")


def _data(addresses: list[Any]) -> bytes:
    port = LogicalSwitchPort(id=_PORT_ID, switch=_SWITCH_ID, name="p", topic="t")
    document = json.loads(codec.encode(port))
    document["addresses"] = addresses
    return json.dumps(document).encode()


def _model_answer(data: bytes) -> LogicalSwitchPort | str:
    """What the model's own validator makes of ``data``: the port, or the message of a decode's CorruptRecordError."""
    try:
        return LogicalSwitchPort.__pydantic_validator__.validate_json(data)  # type: ignore[no-any-return]
    except pydantic.ValidationError as exc:
        error = validation_error_of(exc, LogicalSwitchPort.__name__)
        return f"stored LogicalSwitchPort {_PORT_ID} is not a valid LogicalSwitchPort: {error}"


def _check(addresses: list[Any]) -> None:
    data = _data(addresses)
    record = Record("LogicalSwitchPort", _PORT_ID, "t", 4, data, None)
    expected = _model_answer(data)
    for got in (*codec.decode_each(LogicalSwitchPort, [record]), _decoded(record)):
        if isinstance(expected, str):
            assert isinstance(got, nbdb.CorruptRecordError), (addresses, got)
            assert str(got) == expected
        else:
            assert isinstance(got, LogicalSwitchPort), (addresses, got)
            assert got.addresses == expected.addresses
            assert got == expected.model_copy(update={"version": 4})


def _decoded(record: Record) -> LogicalSwitchPort | nbdb.CorruptRecordError:
    try:
        return codec.decode(LogicalSwitchPort, record, share=False)
    except nbdb.CorruptRecordError as exc:
        return exc


_ENTRIES = [
    "0a:00:00:00:00:01 10.0.0.1",  # canonical
    "0a:00:00:00:00:01 10.0.0.1 10.0.0.2",
    "0A:00:00:00:00:01 10.0.0.1",  # upper case: valid, spelled again in lower case
    "0a:00:00:00:00:01 10.0.0.1\n",  # a trailing newline: valid, returned without it
    "0a:00:00:00:00:01  10.0.0.1",  # two spaces
    "0a:00:00:00:00:01 10.0.0.01",  # a leading zero
    "0a:00:00:00:00:01 10.0.0.256",  # not an address
    "0a:00:00:00:00:01 10.0.0.1/24",
    "0a:00:00:00:00:01 ::1",
    "0a:00:00:00:00:01",
    "0a:00:00:00:00:01 dynamic",
    "dynamic 10.0.0.1",
    "router",
    "",
    "zz:00:00:00:00:01 10.0.0.1",
    " 0a:00:00:00:00:01 10.0.0.1",
]


@pytest.mark.parametrize("entry", _ENTRIES)
def test_each_address_decodes_as_the_models_validator_takes_it(entry: str) -> None:
    _check([entry])
    _check(["0a:00:00:00:00:09 10.0.0.9", entry])


@pytest.mark.parametrize("value", [5, None, ["0a:00:00:00:00:01 10.0.0.1"], {"a": 1}])
def test_an_address_of_another_type_is_corrupt_as_before(value: Any) -> None:
    _check([value])


_near = st.from_regex(_CANONICAL_ADDRESS, fullmatch=True).flatmap(
    lambda text: st.tuples(st.integers(0, len(text)), st.sampled_from(["", "0", "A", " ", "\n", ":", ".", "9"])).map(
        lambda cut: text[: cut[0]] + cut[1] + text[cut[0] + 1 :]
    )
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.from_regex(_CANONICAL_ADDRESS, fullmatch=True), _near, st.text(max_size=40)), max_size=3))
def test_any_addresses_decode_as_the_models_validator_takes_them(addresses: list[str]) -> None:
    _check(addresses)


def test_a_cache_skips_and_reports_a_port_another_writer_damaged(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nb.db'}"
    with nbdb.connect(url) as db:
        switch = db.create(LogicalSwitch(name="s"))
        ports = [
            db.create(LogicalSwitchPort(switch=switch, name=f"p{i}", addresses=[f"0a:00:00:00:00:{i:02x} 10.0.0.{i}"]))
            for i in range(1, 6)
        ]
    damaged, spelled = ports[1], ports[2]
    with sqlite3.connect(tmp_path / "nb.db") as raw:
        for port, entry in ((damaged, "0a:00:00:00:00:02 10.0.0.256"), (spelled, "0A:00:00:00:00:03 10.0.0.3")):
            ((key, value),) = [  # the object's record (its index record ends in the same table and id)
                row
                for row in raw.execute("SELECT key, value FROM nbdb_keys WHERE key LIKE ?", (f"%/{port.id}",))
                if row[1].startswith(f'{{"id":"{port.id}"'.encode())
            ]
            document = json.loads(value)
            document["addresses"] = [entry]
            raw.execute("UPDATE nbdb_keys SET value = ? WHERE key = ?", (json.dumps(document).encode(), key))
    expected = _model_answer(_data(["0a:00:00:00:00:02 10.0.0.256"])).replace(str(_PORT_ID), str(damaged.id))
    with nbdb.connect(url) as db:
        cache = db.cache(LogicalSwitchPort)
        try:
            assert cache.wait_synced(10)
            assert {p.id for p in cache.list(LogicalSwitchPort)} == {p.id for p in ports} - {damaged.id}
            assert str(cache.corrupt[("LogicalSwitchPort", damaged.id)]) == expected
            assert cache.get(LogicalSwitchPort, spelled.id).addresses == ["0a:00:00:00:00:03 10.0.0.3"]
        finally:
            cache.close()
        with pytest.raises(nbdb.CorruptRecordError) as raised:
            db.list(LogicalSwitchPort)
        assert str(raised.value) == expected
        listed = db.list(LogicalSwitchPort, skip_corrupt=True)
        assert {p.id for p in listed} == {p.id for p in ports} - {damaged.id}


def _lower_word(value: str) -> str:
    if not value.isalpha():
        raise ValueError(f"not a word: {value!r}")
    return value.lower()


_lower_word.__nbdb_canonical__ = re.compile("[a-z]+")  # type: ignore[attr-defined]


def _looked_ahead(value: str) -> str:
    return _lower_word(value)


_looked_ahead.__nbdb_canonical__ = re.compile("(?=[a-z])[a-z]+")  # type: ignore[attr-defined]  # no look-ahead in Rust


class _Words(Model):
    # Every model of the process gets a table in OVSDB's model database, whose names cannot start with "_".
    nbdb_table: ClassVar[str] = "DecodeWords"

    word: Annotated[str, pydantic.AfterValidator(_lower_word)] = "a"
    words: list[Annotated[str, pydantic.AfterValidator(_looked_ahead)]] = pydantic.Field(default_factory=list)


class _Word(Model):
    nbdb_table: ClassVar[str] = "DecodeWord"

    word: Annotated[str, pydantic.AfterValidator(_lower_word)] = "a"
    words: list[Annotated[str, pydantic.AfterValidator(_lower_word)]] = pydantic.Field(default_factory=list)


@pytest.mark.parametrize("model", [_Word, _Words])
@pytest.mark.parametrize("word", ["abc", "ABC", "a1", "", "abc\n"])
def test_a_canonical_pattern_decodes_as_the_models_check_or_is_left_out(model: type[Model], word: str) -> None:
    # _Words's look-ahead is refused by Rust's engine: that model decodes through its plain fields schema.
    assert (codec._layout_of(model).exact is not None) is (model is _Word)
    obj = model(word="w", words=["w"])
    document = json.loads(codec.encode(obj))
    document["word"] = document["words"][0] = word
    data = json.dumps(document).encode()
    record = Record(model.nbdb_table, obj.id, obj.topic, 2, data, None)
    try:
        expected: Any = model.__pydantic_validator__.validate_json(data)
    except pydantic.ValidationError as exc:
        expected = f"stored {model.nbdb_table} {obj.id} is not a valid {model.__name__}: "
        expected += str(validation_error_of(exc, model.__name__))
    (got,) = codec.decode_each(model, [record])
    if isinstance(expected, str):
        assert str(got) == expected
    else:
        assert got == expected.model_copy(update={"version": 2})


class _UpperNic(Model):
    """A model whose config upper-cases every string before its checks (pydantic's ``str_to_upper``)."""

    nbdb_table: ClassVar[str] = "DecodeUpperNic"
    model_config = pydantic.ConfigDict(str_to_upper=True)

    addresses: list[LSPAddress] = pydantic.Field(default_factory=list)
    word: Annotated[str, pydantic.AfterValidator(_lower_word)] = "a"


@pytest.mark.parametrize("entry", ["0a:00:00:00:00:01 10.0.0.1", "0A:00:00:00:00:01 10.0.0.1"])
def test_a_config_that_changes_strings_before_the_check_decodes_as_the_models_validator_does(entry: str) -> None:
    # pydantic-core upper-cases a string after its pattern matched it: the canonical pattern's answer would be
    # the upper-cased text, where the model's check (given the upper-cased text) returns it in lower case.
    obj = _UpperNic(addresses=[entry], word="w")
    assert obj.addresses == ["0a:00:00:00:00:01 10.0.0.1"]
    document = json.loads(codec.encode(obj))
    document["word"] = "abc"
    data = json.dumps(document).encode()
    record = Record(_UpperNic.nbdb_table, obj.id, obj.topic, 2, data, None)
    expected = _UpperNic.__pydantic_validator__.validate_json(data)
    (got,) = codec.decode_each(_UpperNic, [record])
    assert got == expected.model_copy(update={"version": 2})
    assert codec.decode(_UpperNic, record, share=False) == got
