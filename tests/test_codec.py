"""The record codec's decode path: equal to the validating path for every model, and safe to share."""

from __future__ import annotations

import copy
import json
import pickle
import sys
import uuid
import weakref
from typing import Annotated, Any, ClassVar

import pydantic
import pytest
import typing_extensions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nbdb
from nbdb import codec
from nbdb.cache import Replica, SharedCache
from nbdb.codec import decode, decode_each, encode
from nbdb.models.base import DECODED, Model
from nbdb.models.ovn import Direction, LogicalSwitch, LogicalSwitchPort, QoS
from nbdb.models.shared import FrozenDict, FrozenList, FrozenSet
from nbdb.spi import Record, Snapshot
from nbdb.storable import check_storable
from nbdb.testing.strategies import ovn_objects


def _record(obj: Model, version: int = 3, data: bytes | None = None) -> Record:
    return Record(type(obj).nbdb_table, obj.id, obj.topic, version, encode(obj) if data is None else data, None)


def _validated(obj: Model, version: int) -> Model:
    """What the validating path (the model's own ``model_validate_json``) makes of ``obj``'s record."""
    return type(obj).model_validate_json(encode(obj)).model_copy(update={"version": version})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(ovn_objects(), st.integers(1, 2**40), st.booleans())
def test_decode_equals_the_validating_path_for_every_model(obj: Model, version: int, share: bool) -> None:
    decoded = decode(type(obj), _record(obj, version), share=share)
    expected = _validated(obj, version)
    assert type(decoded) is type(obj)
    assert decoded == expected
    assert decoded.model_dump() == expected.model_dump()
    assert encode(decoded) == encode(obj)  # the stored form survives the round trip, byte for byte
    assert decoded.version == version
    assert decoded.model_fields_set == set(type(obj).model_fields) - {"version"}
    assert decoded.__pydantic_private__ is DECODED
    assert decoded.stored_refs() == obj.ref_keys()
    for name in type(obj).model_fields:  # each value of the type the validating path gives
        assert isinstance(getattr(decoded, name), type(getattr(expected, name)))
    assert decoded.replace() == decoded  # a derived copy validates again


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ovn_objects())
def test_a_record_that_does_not_fit_is_corrupt_not_a_crash(obj: Model) -> None:
    table = type(obj).nbdb_table
    for data in (b"{", b"[]", b'{"id": 5}', encode(obj)[:-1], encode(obj).replace(b'"id"', b'"di"')):
        with pytest.raises(nbdb.CorruptRecordError):
            decode(type(obj), _record(obj, data=data), share=False)
    other = Record(table, uuid.uuid4(), obj.topic, 1, encode(obj), None)
    with pytest.raises(nbdb.CorruptRecordError, match="carries id"):
        decode(type(obj), other, share=False)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ovn_objects(),
    st.one_of(st.integers(max_value=-1), st.floats(), st.text(max_size=3), st.binary(max_size=3), st.none()),
)
def test_a_record_whose_version_is_no_version_is_corrupt(obj: Model, version: Any) -> None:
    # A version another writer stored (a sqlite column holds any type) reached callers as the object's version,
    # and the first comparison in a cache raised TypeError.
    record = Record(type(obj).nbdb_table, obj.id, obj.topic, version, encode(obj), None)
    for share in (True, False):
        with pytest.raises(nbdb.CorruptRecordError, match="has version"):
            decode(type(obj), record, share=share)
    (got,) = decode_each(type(obj), [record])
    assert isinstance(got, nbdb.CorruptRecordError)


def _port(**changes: Any) -> LogicalSwitchPort:
    return LogicalSwitchPort(switch=uuid.uuid4(), name=f"p-{uuid.uuid4()}", topic="t", **changes)


def test_shared_empty_values_and_fields_sets_refuse_changes() -> None:
    a, b = (decode(LogicalSwitchPort, _record(_port()), share=False) for _ in range(2))
    assert a.options is b.options and a.addresses is b.addresses  # shared...
    assert a.model_fields_set is b.model_fields_set
    for change in (
        lambda: a.options.__setitem__("k", "v"),
        lambda: a.options.update(k="v"),
        lambda: a.options.setdefault("k", "v"),
        lambda: a.addresses.append("unknown"),
        lambda: a.addresses.extend(["unknown"]),
        lambda: a.addresses.__iadd__(["unknown"]),
        lambda: a.model_fields_set.add("x"),
        lambda: a.model_fields_set.discard("name"),
        lambda: a.model_fields_set.__ior__({"x"}),
    ):
        with pytest.raises(nbdb.ValidationError, match="shared"):
            change()
    assert b.options == {} and b.addresses == [] and "x" not in b.model_fields_set  # ...so nothing leaked
    assert "name" in b.model_fields_set


def test_stored_copies_share_a_frozen_fields_set_not_the_callers() -> None:
    with nbdb.connect("memory://") as db:
        switch = db.create(LogicalSwitch(name="s"))
        built = LogicalSwitchPort(switch=switch, name="p", version=0)  # its fields set holds "version" already
        stored = db.create(built)
        assert type(stored.model_fields_set) is FrozenSet
        built.model_fields_set.add("options")  # the caller's own set, theirs to change
        assert "options" not in stored.model_fields_set


def test_frozen_values_copy_to_plain_builtins() -> None:
    port = decode(LogicalSwitchPort, _record(_port()), share=False)
    for value, plain in ((port.options, dict), (port.addresses, list), (port.model_fields_set, set)):
        assert isinstance(value, FrozenDict | FrozenList | FrozenSet)
        for copied in (copy.copy(value), copy.deepcopy(value), pickle.loads(pickle.dumps(value))):
            assert type(copied) is plain and copied == value
    changed = port.model_copy(update={"name": "renamed"})  # pydantic copies the fields set, then adds to it
    assert changed.name == "renamed" and "name" in changed.model_fields_set
    deep = port.model_copy(deep=True)
    deep.options["k"] = "v"  # a deep copy is the caller's own
    assert port.options == {}
    assert pickle.loads(pickle.dumps(port)) == port
    assert port.model_dump(exclude_unset=True)["options"] == {}
    assert json.loads(port.model_dump_json())["options"] == {}


def test_decoded_copies_share_referenced_ids() -> None:
    switch = uuid.uuid4()
    ports = [
        decode(LogicalSwitchPort, _record(_port().replace(switch=uuid.UUID(str(switch)))), share=False)
        for _ in range(3)
    ]
    assert ports[0].switch is ports[1].switch is ports[2].switch
    assert ports[0].switch == switch


class _Listed(list[Record]):
    """The records of one scan, in a list a test can hold a weak reference to."""


class _Spied:
    """A real backend whose scans are watched: the last listing is kept weakly."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.listed: weakref.ref[_Listed] | None = None

    def scan(self, tables: Any, topics: Any) -> Snapshot:
        snapshot = self._backend.scan(tables, topics)
        records = _Listed(snapshot.records)
        self.listed = weakref.ref(records)
        return Snapshot(records, snapshot.revision, snapshot.after)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


class _Probed(Replica):
    """A replica that looks, the moment it is synced, whether the listing it loaded is still held."""

    held_when_synced: list[bool]

    def _announce_synced(self) -> None:
        # The moment wait_synced() callers are woken (once the load is in and its stream open).
        spied = self._backend
        if not hasattr(self, "held_when_synced"):
            assert isinstance(spied, _Spied) and spied.listed is not None
            self.held_when_synced = [spied.listed() is not None]
        super()._announce_synced()


def test_a_loaded_cache_holds_no_listed_record() -> None:
    # The records of the load (keys and stored bytes) are let go before wait_synced() wakes anyone:
    # a caller measuring right after must find only the cached objects.
    with nbdb.connect("memory://") as db:
        switch = db.create(LogicalSwitch(name="s"))
        for i in range(50):
            db.create(LogicalSwitchPort(switch=switch, name=f"p{i}"))
        probe = _Probed(_Spied(db.backend), [LogicalSwitchPort])  # type: ignore[arg-type]
        with SharedCache(probe, probe.close) as cache:
            probe.start()
            assert cache.wait_synced(10)
            assert len(cache) == 50
            assert probe.held_when_synced == [False]


def _one_by_one(model: type[Model], record: Record) -> Model | nbdb.CorruptRecordError:
    try:
        return decode(model, record, share=False)
    except nbdb.CorruptRecordError as exc:
        return exc


_DAMAGE = (b"{", b"[]", b'{"id": 5}', b"", b"null")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(ovn_objects(), st.integers(1, 2**40), st.integers(0, 2 * len(_DAMAGE))), max_size=8))
def test_decoding_in_bulk_equals_decoding_one_by_one(items: list[tuple[Model, int, int]]) -> None:
    # A list and a cache's load decode a model's records in one call: each record gives what decode()
    # gives it alone, its copy or its CorruptRecordError, and a corrupt one spoils only its own entry.
    model = type(items[0][0]) if items else LogicalSwitchPort
    records = []
    for obj, version, damage in items:
        if type(obj) is not model:
            records.append(_record(obj, version, data=encode(obj)))  # another table's record: not a `model`...
        elif damage < len(_DAMAGE):
            records.append(_record(obj, version, data=_DAMAGE[damage]))
        elif damage == len(_DAMAGE):
            records.append(Record(model.nbdb_table, uuid.uuid4(), obj.topic, version, encode(obj), None))  # misplaced
        else:
            records.append(_record(obj, version))
    bulk = decode_each(model, records)
    assert len(bulk) == len(records)
    for record, got in zip(records, bulk, strict=True):
        alone = _one_by_one(model, record)
        assert type(got) is type(alone)
        if isinstance(alone, nbdb.CorruptRecordError):
            assert str(got) == str(alone) and got.table == alone.table  # type: ignore[union-attr]
            assert str(record.id) in str(got)  # it names the bad record
            continue
        assert isinstance(got, Model)
        assert got == alone and got.version == alone.version == record.version
        assert got.__pydantic_private__ is DECODED and got.model_fields_set is alone.model_fields_set
        for name in model.model_fields:  # the same shared values: empty lists and maps, referenced ids
            mine, theirs = getattr(got, name), getattr(alone, name)
            assert type(mine) is type(theirs)
            assert type(mine) not in (list, dict, set)  # frozen: decoded copies are shared by the readers
            if (isinstance(theirs, FrozenList | FrozenDict) and not theirs) or name in {
                r.field for r in model.nbdb_references
            }:
                assert mine is theirs


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ovn_objects(), st.integers(1, 2**40))
def test_a_decoded_copy_keeps_its_fields_in_its_models_shared_key_table(obj: Model, version: int) -> None:
    # A cache holds thousands of decoded copies: each one's dict shares its model's key table (CPython's
    # split dict), in the model's field order, rather than carrying a key table of its own (a dict copy's).
    for decoded in (decode(type(obj), _record(obj, version)), decode_each(type(obj), [_record(obj, version)])[0]):
        assert isinstance(decoded, Model)
        held = vars(decoded)
        assert list(held) == list(type(obj).model_fields)
        laid_out = vars(type(obj).__new__(type(obj)))  # a new instance's dict, filled a key at a time: split
        for name, value in held.items():
            laid_out[name] = value
        assert sys.getsizeof(held) == sys.getsizeof(laid_out)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ovn_objects())
def test_every_empty_list_or_map_of_a_decoded_copy_is_the_shared_frozen_one(obj: Model) -> None:
    # The fields a decoded copy looks at for empty values are picked once per model from its
    # annotations: none that can hold a list or a map may be missed.
    decoded = decode(type(obj), _record(obj), share=False)
    for name in type(obj).model_fields:
        value = getattr(decoded, name)
        assert type(value) not in (list, dict) or value, f"{type(obj).__name__}.{name} holds a plain empty {value!r}"


class _Loose(Model):
    """A model whose fields' annotations do not say what they hold: each is looked at copy by copy."""

    # Every model of the process gets a table in OVSDB's model database, whose names cannot start with "_".
    nbdb_table: ClassVar[str] = "CodecLoose"

    anything: Any = None
    listed: list[int] | None = None
    either: int | dict[str, int] = 0
    made: Annotated[str, pydantic.BeforeValidator(str)] = ""


def test_fields_that_may_hold_an_empty_list_or_map_are_found_by_their_annotation() -> None:
    for values in ({"anything": [], "listed": [], "either": {}}, {"anything": {}, "listed": None, "either": 0}):
        obj = _Loose(**values)
        decoded = decode(_Loose, _record(obj), share=False)
        assert decoded == obj.model_copy(update={"version": 3})
        for name in values:
            value = getattr(decoded, name)
            assert type(value) not in (list, dict) or value
    assert decode(_Loose, _record(_Loose(anything=[1])), share=False).anything == [1]


def test_a_reference_in_a_stored_record_is_a_uuid_or_corrupt() -> None:
    # References skip the Python step that takes a model (JSON never holds one): the UUID check stays.
    port = _port()
    data = encode(port).replace(str(port.switch).encode(), b"not-a-uuid")
    with pytest.raises(nbdb.CorruptRecordError, match="switch"):
        decode(LogicalSwitchPort, _record(port, data=data), share=False)
    assert LogicalSwitchPort(switch=LogicalSwitch(name="s"), name="p").switch is not None  # a model still works


def test_a_loaded_cache_keys_each_object_by_the_int_its_own_id_holds() -> None:
    # Not the listed record's: that would be a second 128-bit int (44 B) kept per cached object.
    with nbdb.connect("sqlite://") as db:
        switch = db.create(LogicalSwitch(name="s"))
        for i in range(20):
            db.create(LogicalSwitchPort(switch=switch, name=f"p{i}"))
        replica = Replica(db.backend, [LogicalSwitchPort])
        with SharedCache(replica, replica.close) as cache:
            replica.start()
            assert cache.wait_synced(10)
            held = replica._objects[LogicalSwitchPort]
            assert len(held) == 20
            assert all(key is obj.id.int for key, obj in held.items())


def test_a_load_with_no_record_of_a_model_pydantic_has_not_built_decodes_nothing_and_does_not_fail() -> None:
    """A model with a forward reference never resolved cannot validate; a cache of every model that holds none
    of its records must still load (decode_each looked the validator up before its first record)."""

    class _Unbuilt(Model):
        nbdb_table: ClassVar[str] = "CodecUnbuilt"
        later: NeverDefined | None = None  # type: ignore[name-defined]  # noqa: F821

    assert decode_each(_Unbuilt, []) == []


class _Shapes(Model):
    """A model with every shape the storable check is written for, and some it is not."""

    nbdb_table: ClassVar[str] = "TestShapes"
    text: str = ""
    maybe: str | None = None
    texts: list[str] = pydantic.Field(default_factory=list)
    members: set[str] = pydantic.Field(default_factory=set)
    pairs: dict[str, str] = pydantic.Field(default_factory=dict)
    counts: dict[str, int] = pydantic.Field(default_factory=dict)
    nested: list[list[str]] = pydantic.Field(default_factory=list)
    number: int = 0
    blob: bytes = b""


_ANY_TEXT = st.text(alphabet=st.characters(exclude_categories=()) | st.sampled_from("\ud800\udfffa\u00e9"), max_size=4)


@settings(max_examples=300, deadline=None)
@given(
    text=_ANY_TEXT,
    maybe=st.none() | _ANY_TEXT,
    texts=st.lists(_ANY_TEXT, max_size=3),
    members=st.sets(_ANY_TEXT, max_size=3),
    pairs=st.dictionaries(_ANY_TEXT, _ANY_TEXT, max_size=3),
    counts=st.dictionaries(_ANY_TEXT, st.integers(), max_size=3),
    nested=st.lists(st.lists(_ANY_TEXT, max_size=2), max_size=2),
    blob=st.binary(max_size=3) | _ANY_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")),
)
def test_a_model_is_storable_exactly_when_all_its_text_is_unicode(**fields: Any) -> None:
    # pydantic's serializer stored a map key with a lone surrogate as U+FFFD characters (another
    # key, silently), and memory:// took any such text: every write is now held to one rule.
    obj = _Shapes(**fields)
    strings = [
        fields["text"],
        fields["maybe"] or "",
        *fields["texts"],
        *fields["members"],
        *fields["pairs"],
        *fields["pairs"].values(),
        *fields["counts"],
        *(s for inner in fields["nested"] for s in inner),
    ]
    unicode = all(not any("\ud800" <= c <= "\udfff" for c in s) for s in strings)
    try:
        fields["blob"].decode()  # bytes are held in JSON as UTF-8 text
    except UnicodeDecodeError:
        unicode = False
    for candidate in (obj, obj.stored_copy(3)):  # fresh values, and a stored copy's frozen containers
        if unicode:
            assert decode(_Shapes, Record("TestShapes", obj.id, None, 3, encode(candidate))) == obj.stored_copy(3)
        else:
            with pytest.raises(nbdb.ValidationError, match="not Unicode"):
                check_storable(candidate)
            with pytest.raises(nbdb.ValidationError):
                encode(candidate)


class _Limits(typing_extensions.TypedDict):
    rate: int
    burst: int


class _Metered(Model):
    """A model with a TypedDict field, which refuses the subclass checks the codec's layout made."""

    nbdb_table: ClassVar[str] = "TestMetered"
    limits: _Limits = pydantic.Field(default_factory=lambda: _Limits(rate=1, burst=1))
    maybe: _Limits | None = None


@pytest.mark.parametrize("url", ["memory://", "sqlite://"])
@settings(max_examples=20, deadline=None)
@given(rate=st.integers(0, 2**31), burst=st.integers(0, 2**31), set_maybe=st.booleans())
def test_a_typed_dict_field_round_trips(url: str, rate: int, burst: int, set_maybe: bool) -> None:
    # Every read of such a model raised TypeError ("TypedDict does not support instance and class
    # checks") from the decoded copy's layout.
    limits = _Limits(rate=rate, burst=burst)
    with nbdb.connect(url) as db:
        stored = db.create(_Metered(limits=limits, maybe=limits if set_maybe else None))
        assert db.get(_Metered, stored.id) == stored
        assert db.list(_Metered) == [stored]


@pytest.mark.parametrize("url", ["memory://", "sqlite://"])
@pytest.mark.parametrize(
    "value",
    [object(), {"k": object()}, [1, {2, 3}, lambda: None]],
    ids=["object", "object-in-a-map", "function-in-a-list"],
)
def test_a_value_json_cannot_hold_is_refused_by_every_store(url: str, value: object) -> None:
    # memory:// keeps objects and never encodes them: it acknowledged an object() under an Any field,
    # which every store of bytes refuses, so a program tested on memory:// failed in production.
    with nbdb.connect(url) as db:
        with pytest.raises(nbdb.ValidationError, match="cannot be stored"):
            db.create(_Loose(anything=value))
        with pytest.raises(nbdb.ValidationError, match="cannot be stored"), db.transaction() as txn:
            txn.create(_Loose(anything=value))
        stored = db.create(_Loose(anything={"when": "now"}))
        with pytest.raises(nbdb.ValidationError, match="cannot be stored"):
            db.update(stored.replace(anything=[value]))
        assert db.list(_Loose) == [stored]


@pytest.mark.parametrize("url", ["memory://", "sqlite://"])
def test_values_pydantic_writes_as_json_are_taken_under_any(url: str) -> None:
    import datetime
    import decimal

    with nbdb.connect(url) as db:
        for value in (datetime.datetime(2026, 1, 1), decimal.Decimal("1.5"), uuid.uuid4(), (1, "a"), None, 7):
            db.create(_Loose(anything=value))
        assert len(db.list(_Loose)) == 6


_WRONG_VALUES = st.sampled_from([5, None, 1.5, b"x", ["a"], {"a": "b"}, uuid.UUID(int=1)])


@pytest.mark.parametrize("url", ["memory://", "sqlite://"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    where=st.sampled_from(["external_ids-value", "external_ids-key", "addresses", "qos-action"]),
    value=_WRONG_VALUES,
    unicode=st.booleans(),
    stored=st.booleans(),
)
def test_a_container_changed_in_place_to_hold_a_wrong_value_is_refused(
    url: str, where: str, value: object, unicode: bool, stored: bool
) -> None:
    # Models are frozen but their lists and maps are not: `port.external_ids["k"] = 5` was stored as it
    # was (memory:// kept it; the stores of bytes wrote it, and every later read of the object failed).
    # A text elsewhere that is not ASCII must not hide it (the check looked no further once it saw one).
    text = "caf\u00e9" if unicode else "cafe"
    with nbdb.connect(url) as db:
        switch = db.create(LogicalSwitch(name="s", external_ids={"note": text}))
        mark = {"note": text}
        port = LogicalSwitchPort(switch=switch, name="p", addresses=["0a:00:00:00:00:01"], external_ids=mark)
        qos = QoS(switch=switch.id, priority=1, direction=Direction.TO_LPORT, match="1", action={"dscp": 1})
        qos = qos.replace(external_ids=mark)
        target: Model = {"addresses": port, "qos-action": qos}.get(where, LogicalSwitch(name="t", external_ids=mark))
        if stored:  # a copy of a stored object (not the store's own: memory:// shares that one)
            target = db.create(target).replace(external_ids={"n": text})
        if where == "external_ids-value":
            target.external_ids["k"] = value  # type: ignore[assignment]
        elif where == "external_ids-key":
            target.external_ids[value if isinstance(value, int | float | bytes | uuid.UUID) else 7] = "v"  # type: ignore[index]
        elif where == "addresses":
            target.addresses.append(value)  # type: ignore[attr-defined]
        else:
            target.action["dscp"] = "five" if isinstance(value, int) else value  # type: ignore[attr-defined]
        with pytest.raises(nbdb.ValidationError, match="cannot be stored"):
            db.update(target) if stored else db.create(target)
        # Nothing was written: every read of the table still works.
        assert len(db.list(type(target))) == (1 if stored else 0) + (type(target) is LogicalSwitch)


class _Checked(Model):
    """A model whose own validator and post-init a decode must run: not its fields' schema alone."""

    nbdb_table: ClassVar[str] = "CodecTestChecked"
    low: int = 0
    high: int = 0

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> _Checked:
        if self.low > self.high:
            raise ValueError("low above high")
        return self


class _PostInit(Model):
    nbdb_table: ClassVar[str] = "CodecTestPostInit"
    n: int = 0
    seen: ClassVar[list[int]] = []

    def model_post_init(self, context: Any, /) -> None:
        _PostInit.seen.append(self.n)


def test_a_decode_runs_a_models_own_validator_and_post_init() -> None:
    # The decode checks a record through the model's fields schema only where nothing is around it.
    assert codec._layout_of(LogicalSwitchPort).bare is not None
    good = _Checked(low=1, high=2)
    data = encode(good)
    assert b'"low":1' in data
    bad = _record(good, data=data.replace(b'"low":1', b'"low":3'))
    for share in (True, False):
        with pytest.raises(nbdb.CorruptRecordError, match="low above high"):
            decode(_Checked, bad, share=share)
    (got,) = decode_each(_Checked, [bad])
    assert isinstance(got, nbdb.CorruptRecordError)
    built = _PostInit(n=7)
    _PostInit.seen.clear()
    assert decode(_PostInit, _record(built), share=False).n == 7
    assert _PostInit.seen == [7]


_RAISED: list[type[Exception]] = [RuntimeError]


class _RaisingValidator(Model):
    """A model whose validator raises, on the name "boom", whatever exception class the test chose."""

    nbdb_table: ClassVar[str] = "CodecRaisingValidator"

    name: str

    @pydantic.field_validator("name")
    @classmethod
    def _boom(cls, value: str) -> str:
        if value == "boom":
            raise _RAISED[0]("the validator does not take this name")
        return value


@settings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(
        [RuntimeError, KeyError, TypeError, AttributeError, IndexError, LookupError, ZeroDivisionError, OSError]
    ),
    batch=st.integers(min_value=0, max_value=3),
)
def test_any_exception_a_validator_raises_on_a_stored_record_makes_it_corrupt(
    kind: type[Exception], batch: int
) -> None:
    # pydantic turns a validator's ValueError or AssertionError into a ValidationError and lets every
    # other exception through as it is: on a record another writer stored, it escaped decode, a get,
    # a list, a watch's poll and a cache's apply, instead of a CorruptRecordError.
    _RAISED[0] = kind
    good = [_RaisingValidator(name=f"ok{i}") for i in range(batch)]
    bad = _RaisingValidator(name="fine")
    records = [Record(o.nbdb_table, o.id, None, 1, encode(o)) for o in good]
    broken = Record(bad.nbdb_table, bad.id, None, 1, encode(bad).replace(b'"fine"', b'"boom"'))
    with pytest.raises(nbdb.CorruptRecordError) as raised:
        decode(_RaisingValidator, broken)
    assert type(raised.value.__cause__) is kind
    got = decode_each(_RaisingValidator, [*records, broken, *records])
    assert isinstance(got[batch], nbdb.CorruptRecordError) and type(got[batch].__cause__) is kind
    assert [o.name for o in got if isinstance(o, Model)] == [o.name for o in good] * 2


class _Interrupting(Model):
    nbdb_table: ClassVar[str] = "TestInterrupting"
    name: str = ""
    interrupt: ClassVar[type[BaseException] | None] = None

    @pydantic.field_serializer("name")
    def _name(self, value: str) -> str:
        if _Interrupting.interrupt is not None:
            raise _Interrupting.interrupt()
        return value


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_a_ctrl_c_during_serialisation_is_an_interrupt_not_invalid_data(interrupt: type[BaseException]) -> None:
    # pydantic wraps an exception its serializer's Python code raises into a PydanticSerializationError
    # and drops it: a Ctrl-C in `nbdb copy` came out as "ValidationError: ... cannot be stored: Error
    # serializing to JSON: KeyboardInterrupt" and exit status 2, as if the data were wrong.
    # sqlite:// encodes every write (memory:// keeps objects and runs no serializer).
    with nbdb.connect("sqlite://") as db:
        stored = db.create(_Interrupting(name="a"))
        _Interrupting.interrupt = interrupt
        try:
            with pytest.raises(interrupt):
                encode(stored)
            with pytest.raises(interrupt):
                db.create(_Interrupting(name="b"))
            with pytest.raises(interrupt):
                db.update(stored.replace(name="c"))
        finally:
            _Interrupting.interrupt = None
        assert db.list(_Interrupting) == [stored]
        with pytest.raises(nbdb.ValidationError, match="cannot be stored"):
            db.create(_Loose(anything=object()))


@pytest.mark.parametrize(
    ("text", "raised"),
    [
        ("Error serializing to JSON: KeyboardInterrupt", KeyboardInterrupt),
        ("Error serializing to JSON: PydanticSerializationError: Error calling function `f`: SystemExit: ", SystemExit),
        ("Error serializing to JSON: ValueError: KeyboardInterrupt is in my data", None),
        (
            "Error serializing to JSON: PydanticSerializationError: "
            "Error calling function `f`: ValueError: kind: SystemExit",
            None,
        ),
        ("Error serializing to JSON: ValueError: unknown kind: KeyboardInterrupt", None),
        ("Error serializing to JSON: surrogates not allowed", None),
    ],
)
def test_only_an_interrupt_pydantic_names_as_the_error_is_raised_again(
    text: str, raised: type[BaseException] | None
) -> None:
    from pydantic_core import PydanticSerializationError

    from nbdb.models.base import raise_interrupt

    if raised is None:
        raise_interrupt(PydanticSerializationError(text))
    else:
        with pytest.raises(raised):
            raise_interrupt(PydanticSerializationError(text))


def _serialize_or_interrupt(value: str) -> str:
    if _Interrupting.interrupt is not None:
        raise _Interrupting.interrupt()
    return value


class _InterruptingType(Model):
    nbdb_table: ClassVar[str] = "TestInterruptingType"
    name: Annotated[str, pydantic.PlainSerializer(_serialize_or_interrupt)] = ""


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_a_ctrl_c_while_an_object_is_written_out_or_its_unique_text_made_is_an_interrupt(
    interrupt: type[BaseException],
) -> None:
    # `nbdb dump`, `copy` and `apply` write objects out with codec.plain(): the interrupt escaped as a
    # bare PydanticSerializationError there, neither a KeyboardInterrupt nor an nbdb error.
    obj = _Interrupting(name="a")
    _Interrupting.interrupt = interrupt
    try:
        with pytest.raises(interrupt):
            codec.plain(obj)
        with pytest.raises(interrupt):
            _InterruptingType.unique_text(("name",), {"name": "a"})
    finally:
        _Interrupting.interrupt = None
    assert codec.plain(obj)["name"] == "a"


def test_a_caller_serializer_that_fails_while_an_object_is_written_out_is_a_validation_error() -> None:
    obj = _Interrupting(name="a")
    _Interrupting.interrupt = RuntimeError
    try:
        with pytest.raises(nbdb.ValidationError, match="cannot be written out"):
            codec.plain(obj)
    finally:
        _Interrupting.interrupt = None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([301, 302, 70_001]), min_size=1, max_size=12))
def test_copies_decoded_together_share_the_private_dict_of_the_revision_that_wrote_them(writers: list[int]) -> None:
    """One dict per (revision, version) among copies decoded together (184 B per copy less), each still of its own.

    Each decoded copy held a dict of its own ({"_written": w, "_at": v}): +184 B per copy a list or a cache
    held (issue 13). A copy's compare-and-swap still sends the revision that wrote it, a stamp on one copy
    changes no other copy's, and a copy whose version was changed since sends none (it is compared by version).
    """
    from nbdb.writes import delete_of

    switches = [LogicalSwitch(name=f"s{i}") for i in range(len(writers))]
    records = [
        Record("LogicalSwitch", s.id, None, 1 + i % 3, encode(s), None, int(str(w)))  # an int object per record
        for i, (s, w) in enumerate(zip(switches, writers, strict=True))
    ]
    copies = decode_each(LogicalSwitch, records)
    first: dict[tuple[int, int], object] = {}
    for copy_, w in zip(copies, writers, strict=True):
        assert isinstance(copy_, LogicalSwitch)
        private = copy_.__pydantic_private__
        assert private is first.setdefault((w, copy_.version), private)  # the one dict of its revision and version
        assert private == {"_written": w, "_at": copy_.version}
        assert delete_of(copy_).expect_written == w
    assert len({id(c.__pydantic_private__) for c in copies}) == len(first)
    # A stamp (a write's result) on one copy changes none of the others that shared its dict.
    one, *others = copies
    one.committed_at(99_999)
    assert delete_of(one).expect_written == 99_999
    assert [delete_of(c).expect_written for c in others] == writers[1:]
    # A copy whose version was changed sends no revision; the copies it came with still send theirs.
    last = copies[-1]
    moved = last.model_copy(update={"version": last.version + 1})
    assert delete_of(moved).expect_written is None
    assert delete_of(last).expect_written == (99_999 if last is one else writers[-1])


def test_copies_a_list_decodes_of_objects_one_transaction_wrote_hold_one_private_dict(tmp_path: Any) -> None:
    """On a store of bytes (SQLite): the copies of one commit listed hold one dict, and each still refuses
    to overwrite the object deleted and created again since (see the kit's test_recreate)."""
    with nbdb.connect(f"sqlite:///{tmp_path}/x.db") as db:
        with db.transaction() as txn:
            for i in range(3):
                txn.create(LogicalSwitch(name=f"s{i}"))
        listed = db.list(LogicalSwitch)
        assert len(listed) == 3 and len({id(s.__pydantic_private__) for s in listed}) == 1
        stale = listed[0]
        db.delete(stale)
        db.create(LogicalSwitch(id=stale.id, name=stale.name))  # the same id again, at version 1
        with pytest.raises(nbdb.ConflictError):
            db.update(stale.replace(name="overwritten"))
        assert db.get(LogicalSwitch, stale.id).name == stale.name
        db.update(listed[1].replace(name="fine"))  # its neighbours' revision is still theirs


class _Noted(Model):
    """A user model with a declared private attribute (pydantic's ``PrivateAttr``)."""

    nbdb_table: ClassVar[str] = "CodecNoted"
    name: str = ""
    _note: str = pydantic.PrivateAttr(default="")


@pytest.mark.parametrize("written", [None, 7])
def test_a_private_attribute_set_or_deleted_on_one_decoded_copy_changes_no_other(written: int | None) -> None:
    """Copies decoded together share one private dict (their revision's, or the process-wide DECODED when the
    store tells none: OVSDB, Cassandra, Hazelcast); pydantic sets and deletes a declared private attribute in
    that dict in place, so ``a._note = x`` showed on every copy sharing it. Each write copies it first."""
    from nbdb.writes import delete_of

    objs = [_Noted(name="a"), _Noted(name="b")]
    records = [Record("CodecNoted", o.id, None, 1, encode(o), None, written) for o in objs]
    a, b = decode_each(_Noted, records)
    assert isinstance(a, _Noted) and isinstance(b, _Noted)
    shared = a.__pydantic_private__
    assert b.__pydantic_private__ is shared
    before = dict(shared)  # type: ignore[arg-type]
    a._note = "mine"
    assert a._note == "mine" and getattr(b, "_note", "") == ""
    assert shared == before and DECODED == {}
    assert delete_of(a).expect_written == delete_of(b).expect_written == written  # the stamp is kept
    # A dict shared holding the attribute: deleting it from one copy leaves the other's.
    held = {**before, "_note": "both"}
    for copy_ in (a, b):
        object.__setattr__(copy_, "__pydantic_private__", held)
    del a._note
    assert getattr(a, "_note", None) is None and b._note == "both" and held["_note"] == "both"


def test_a_copy_whose_version_was_moved_in_place_sends_no_revision() -> None:
    """A copy carries the version its revision wrote ("_at"): one whose version was moved past the frozen
    model (in place, or through ``__dict__``) is compared by version alone, as one moved by model_copy is;
    the (revision of version 1, version 2) pair was sent and refused as an object created again."""
    from nbdb.writes import delete_of, put_of

    switch = LogicalSwitch(name="s")
    decoded = decode_each(LogicalSwitch, [Record("LogicalSwitch", switch.id, None, 1, encode(switch), None, 7)])[0]
    stored = switch.stored_copy(1, revision=9)
    for copy_, revision in ((decoded, 7), (stored, 9)):
        assert isinstance(copy_, LogicalSwitch)
        assert delete_of(copy_).expect_written == put_of(copy_, 1)[0].expect_written == revision
        for move in (lambda c: object.__setattr__(c, "version", 2), lambda c: c.__dict__.__setitem__("version", 2)):
            moved = copy_.replace(name="t")
            move(moved)
            assert moved.version == 2
            assert delete_of(moved).expect_written is None and put_of(moved, 2)[0].expect_written is None
