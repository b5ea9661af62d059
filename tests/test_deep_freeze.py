"""A stored copy is frozen through: a list, map or model inside another refuses an in-place change (issue #12).

Only a field's own list, map or set was frozen: a list inside a map, a list inside a list, a nested
model were the very objects the store held on memory:// (an in-place change in a returned copy, or
in the caller's written object, changed what every reader saw without a write), and on every store
the caller's later change of its written object changed the write's result.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import functools
import ipaddress
import json
import pickle
import uuid
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import Field

import nbdb
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.models.base import Model
from nbdb.models.shared import deep_frozen

pytestmark = pytest.mark.timeout(180)


class DeepInner(pydantic.BaseModel):
    x: int = 0
    ys: list[int] = Field(default_factory=list)


class CheckedInner(pydantic.BaseModel):
    """Assignment validated: pydantic's validate_assignment replaces the whole ``__dict__`` (the frozen one too)."""

    model_config = pydantic.ConfigDict(validate_assignment=True)
    x: int = 0


class FrozenInner(pydantic.BaseModel):
    """A frozen class: pydantic refuses an assignment with its own error, not nbdb's."""

    model_config = pydantic.ConfigDict(frozen=True)
    x: int = 0
    ys: list[int] = Field(default_factory=list)


@dataclasses.dataclass
class PairInner:
    """A plain dataclass: pydantic keeps the instance it is given, and never freezes it."""

    x: int
    ys: list[int]


class DeepBag(Model):
    """Fields that hold lists, maps and a model inside another."""

    name: str = ""
    data: dict[str, list[str]] = Field(default_factory=dict)
    rows: list[list[int]] = Field(default_factory=list)
    inner: DeepInner = Field(default_factory=DeepInner)
    either: int | list[int] = 0
    anything: Any = None
    checked: CheckedInner = Field(default_factory=CheckedInner)
    frozen: FrozenInner = Field(default_factory=FrozenInner)
    pair: PairInner | None = None


CHANGES: dict[str, Callable[[DeepBag], None]] = {
    "data": lambda obj: obj.data["k"].append("theirs"),
    "rows": lambda obj: obj.rows[0].append(99),
    "inner": lambda obj: setattr(obj.inner, "x", 42),
    "inner.ys": lambda obj: obj.inner.ys.append(42),
    "either": lambda obj: obj.either.append(7),  # type: ignore[union-attr]
    "anything": lambda obj: obj.anything["k"].append(7),
    # A nested model whose class validates assignment (it replaced the frozen __dict__ whole), a field of a
    # nested model deleted, a frozen class (pydantic's own error, not nbdb's), a dataclass and its list:
    # each changed what the store held (or raised an error of another type) on /work/main.
    "checked": lambda obj: setattr(obj.checked, "x", 42),
    "del inner.x": lambda obj: delattr(obj.inner, "x"),
    "del checked.x": lambda obj: delattr(obj.checked, "x"),
    "frozen": lambda obj: setattr(obj.frozen, "x", 42),
    "frozen.ys": lambda obj: obj.frozen.ys.append(42),
    "pair": lambda obj: setattr(obj.pair, "x", 42),
    "pair.ys": lambda obj: obj.pair.ys.append(42),  # type: ignore[union-attr]
    "del pair.x": lambda obj: delattr(obj.pair, "x"),
}
REFUSED_BY_ITS_CLASS = {"frozen"}
"""The changes a caller's own object refuses too (a frozen class's, with pydantic's error)."""


def _bag() -> DeepBag:
    return DeepBag(
        name="b",
        data={"k": ["1"]},
        rows=[[1]],
        inner=DeepInner(x=1, ys=[1]),
        either=[1],
        anything={"k": [1]},
        checked=CheckedInner(x=1),
        frozen=FrozenInner(x=1, ys=[1]),
        pair=PairInner(x=1, ys=[1]),
    )


def _content(obj: DeepBag) -> Any:
    return obj.model_dump(exclude={"version"})


@pytest.fixture(params=["memory://", "sqlite://"])
def db(request: pytest.FixtureRequest) -> Iterator[nbdb.Database]:
    """A Database on a store of objects, then on one of bytes (a fresh one each)."""
    with nbdb.connect(request.param) as connected:
        yield connected


M = TypeVar("M", bound=Model)


def _written_and_read(db: nbdb.Database, obj: M) -> tuple[M, M]:
    """The copy a create of ``obj`` returns, and the one a get then reads."""
    made = db.create(obj)
    got = db.get(type(obj), made.id)
    assert got is not None
    return made, got


@pytest.fixture(params=["memory", "sqlite"])
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """One store's URL, for two Databases on it."""
    yield f"memory://deep{uuid.uuid4().hex[:8]}" if request.param == "memory" else f"sqlite:///{tmp_path}/deep.db"


@pytest.mark.parametrize("name", sorted(CHANGES))
@pytest.mark.parametrize("how", ["create", "update", "get"])
def test_a_nested_value_of_a_returned_copy_refuses_an_in_place_change(urls: str, how: str, name: str) -> None:
    with nbdb.connect(urls) as db, nbdb.connect(urls) as other:
        made = db.create(_bag())
        expected = _content(made)
        copy = made
        if how == "update":
            copy = db.update(made.replace(name="u"))
            expected = _content(copy)
        elif how == "get":
            copy = db.get(DeepBag, made.id)
        cache = other.cache(DeepBag)
        assert cache.wait_synced(10)
        with pytest.raises(nbdb.ValidationError):
            CHANGES[name](copy)
        assert _content(copy) == expected
        for seen in (
            db.get(DeepBag, made.id),
            other.get(DeepBag, made.id),
            db.list(DeepBag)[0],
            cache.get(DeepBag, made.id),
        ):
            assert seen is not None and _content(seen) == expected


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_a_change_of_the_callers_written_object_changes_neither_the_store_nor_the_result(urls: str, name: str) -> None:
    with nbdb.connect(urls) as db, nbdb.connect(urls) as other:
        mine = _bag()
        expected = _content(mine)
        made = db.create(mine)
        if name in REFUSED_BY_ITS_CLASS:
            with pytest.raises(pydantic.ValidationError):
                CHANGES[name](mine)
        else:
            CHANGES[name](mine)  # the caller's own object: its to change
        assert _content(made) == expected
        for seen in (db.get(DeepBag, made.id), other.get(DeepBag, made.id)):
            assert seen is not None and _content(seen) == expected


def test_a_flat_model_decides_once_to_freeze_at_the_top_only() -> None:
    # Zero cost for atoms and flat containers of atoms: no field of a built-in model is frozen through.
    assert LogicalSwitch.nbdb_deep_fields == () and LogicalSwitchPort.nbdb_deep_fields == ()
    # ``either`` (``int | list[int]``) is a flat list at most: frozen at the top, as ``list[int]`` is.
    assert set(DeepBag.nbdb_deep_fields) == {"data", "rows", "inner", "anything", "checked", "frozen", "pair"}


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=10,
)


def _mutables(value: Any) -> Iterator[Any]:
    """Every list and dict inside ``value`` (itself included), at every depth."""
    if isinstance(value, list | dict):
        yield value
    for item in value.values() if isinstance(value, dict) else value if isinstance(value, list) else ():
        yield from _mutables(item)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(anything=_json, data=st.dictionaries(st.text(max_size=3), st.lists(st.text(max_size=3), max_size=3), max_size=3))
def test_every_nested_list_and_map_of_a_stored_copy_refuses_every_change(anything: Any, data: dict[str, Any]) -> None:
    for url in (f"memory://deep{uuid.uuid4().hex[:8]}", "sqlite://"):
        with nbdb.connect(url) as db:
            made = db.create(DeepBag(anything=anything, data=data))
            expected = _content(made)
            for copy in (made, db.get(DeepBag, made.id), db.list(DeepBag)[0]):
                for value in [*_mutables(copy.anything), *_mutables(copy.data)]:
                    with pytest.raises(nbdb.ValidationError):
                        if isinstance(value, list):
                            value.append(1)
                        else:
                            value["new"] = 1
                    with pytest.raises(nbdb.ValidationError):
                        value.clear()
                assert _content(db.get(DeepBag, made.id)) == expected


def test_a_newer_models_fields_of_a_copy_refuse_an_in_place_change(db: nbdb.Database) -> None:
    # Fields of a newer model a copy was read with (model_extra) are frozen through as its own are.
    stored = db.create(LogicalSwitch(name="newer"))
    document = {**json.loads(stored.model_dump_json(exclude={"version"})), "labels": {"a": [1]}}
    db.backend.write_raw(stored.nbdb_table, stored.id, stored.topic, json.dumps(document).encode())
    read = db.get(LogicalSwitch, stored.id)
    assert read is not None and read.model_extra == {"labels": {"a": [1]}}
    updated = db.update(read.replace(name="again"))
    for copy_ in (read, updated, db.get(LogicalSwitch, stored.id)):
        assert copy_ is not None and copy_.model_extra is not None
        with pytest.raises(nbdb.ValidationError):
            copy_.model_extra["labels"]["a"].append(2)
        with pytest.raises(nbdb.ValidationError):
            copy_.model_extra["labels"]["b"] = [3]
    again = db.get(LogicalSwitch, stored.id)
    assert again is not None and again.model_extra == {"labels": {"a": [1]}}


def test_a_frozen_nested_value_is_its_class_to_every_reader_and_copies_to_the_callers_own() -> None:
    # The frozen copy of a nested model or dataclass is an instance of a subclass of its class (the only way to
    # refuse validate_assignment, del and a frozen class's own error with nbdb's): to a reader it is its class.
    with nbdb.connect("memory://") as db, warnings.catch_warnings():
        warnings.simplefilter("error")  # no serializer warning for the subclass
        made = db.create(_bag())
        plain = _bag()
        for name in ("inner", "checked", "frozen", "pair"):
            value, mine = getattr(made, name), getattr(plain, name)
            assert isinstance(value, type(mine)) and type(value).__name__ == type(mine).__name__
            assert value == mine and mine == value and repr(value) == repr(mine)
            for thawed in (copy.copy(value), copy.deepcopy(value), pickle.loads(pickle.dumps(value))):
                assert type(thawed) is type(mine) and thawed == mine
            if name != "checked":
                assert type(copy.deepcopy(value).ys) is list  # type: ignore[union-attr]
        point = FrozenInner(x=3)
        point.__dict__["ys"] = ()  # hashable: a frozen model of atoms is of the hash of its plain copy
        assert hash(deep_frozen(point)) == hash(point) and {deep_frozen(point), point} == {point}
        same = {"id", "version"}
        assert made.model_dump(exclude=same) == plain.model_dump(exclude=same)
        assert made.model_dump_json(exclude=same) == plain.model_dump_json(exclude=same)
        changed = made.checked.model_copy(update={"x": 5})
        assert type(changed) is CheckedInner and changed.x == 5 and made.checked.x == 1
        changed.x = 6  # the caller's own
        built = type(made.checked)(x=3)
        assert type(built) is CheckedInner
        assert made.pair is not None
        moved = dataclasses.replace(made.pair, x=7)
        assert type(moved) is PairInner and moved.x == 7 and made.pair.x == 1
        assert db.update(made.replace(pair=moved, checked=changed)).pair == PairInner(x=7, ys=[1])


class Opaque:
    """An arbitrary class: nbdb can neither copy nor freeze an instance of it."""

    def __init__(self) -> None:
        self.ys = [1]


class Arbitrary(Model):
    model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)

    name: str = ""
    opaque: Opaque | None = None
    anything: Any = None


@pytest.mark.parametrize(
    "fields",
    [
        {"opaque": Opaque()},
        {"anything": Opaque()},
        {"anything": {"k": [Opaque()]}},
        {"anything": deque([1])},
        {"anything": bytearray(b"x")},
    ],
    ids=["field", "any", "nested", "deque", "bytearray"],
)
def test_a_value_nbdb_cannot_freeze_is_refused_and_nothing_is_written(
    db: nbdb.Database, fields: dict[str, Any]
) -> None:
    # A value of a class nbdb cannot freeze would be the very object the store holds (memory://: a change in
    # place of it, by the caller or any reader, changed what every reader saw without a write): refused, with
    # nbdb's typed error, before anything is written.
    made = db.create(Arbitrary(name="kept"))
    with pytest.raises(nbdb.ValidationError, match="cannot freeze"):
        db.create(Arbitrary(name="new", **fields))
    with pytest.raises(nbdb.ValidationError, match="cannot freeze"):
        db.update(made.replace(**fields))
    with pytest.raises(nbdb.ValidationError, match="cannot freeze"), db.transaction() as tx:
        tx.create(Arbitrary(name="in a transaction", **fields))
    assert [(o.name, o.version) for o in db.list(Arbitrary)] == [("kept", 1)]
    assert db.create(Arbitrary(name="atoms", anything=[1, "a", None, 1.5, uuid.uuid4()])).version == 1


class Node(pydantic.BaseModel):
    """A model that holds anything, a model or dataclass too: nested values at any depth."""

    model_config = pydantic.ConfigDict(validate_assignment=True)
    label: int = 0
    child: Any = None


@dataclasses.dataclass
class Leaf:
    label: int
    child: Any = None


_nested = st.recursive(
    st.integers(-3, 3) | st.text(max_size=2),
    lambda inner: (
        st.lists(inner, max_size=2)
        | st.dictionaries(st.text(max_size=2), inner, max_size=2)
        | st.builds(Node, label=st.integers(0, 3), child=inner)
        | st.builds(Leaf, label=st.integers(0, 3), child=inner)
    ),
    max_leaves=8,
)


def _nodes(value: Any) -> Iterator[Any]:
    """Every model and dataclass instance inside ``value``, at every depth."""
    if isinstance(value, Node | Leaf):
        yield value
        yield from _nodes(value.child)
    for item in value.values() if isinstance(value, dict) else value if isinstance(value, list) else ():
        yield from _nodes(item)


@settings(max_examples=40, deadline=None)
@given(anything=_nested)
def test_every_model_and_dataclass_inside_a_stored_copy_refuses_every_assignment_and_del(anything: Any) -> None:
    with nbdb.connect(f"memory://deep{uuid.uuid4().hex[:8]}") as db:
        made = db.create(DeepBag(anything=anything))
        expected = _content(made)
        for copy_ in (made, db.get(DeepBag, made.id), db.list(DeepBag)[0]):
            assert copy_ is not None
            for node in _nodes(copy_.anything):
                with pytest.raises(nbdb.ValidationError):
                    node.label = 9
                with pytest.raises(nbdb.ValidationError):
                    del node.child
            assert _content(db.get(DeepBag, made.id)) == expected
        mine = list(_nodes(anything))
        for node in mine:  # the caller's own objects: its to change, and nothing stored changes
            node.label = 9
        assert _content(db.get(DeepBag, made.id)) == expected


class Base(pydantic.BaseModel):
    x: int = 0


class Derived(Base):
    y: list[int] = Field(default_factory=list)


@dataclasses.dataclass
class BasePair:
    x: int = 0


@dataclasses.dataclass
class DerivedPair(BasePair):
    y: list[int] = dataclasses.field(default_factory=list)


class Unions(Model):
    """A union that lists a class before one derived from it: pydantic serialises a value of neither class
    exactly (a frozen twin of ``Derived``) as the first member it is an instance of."""

    one: Base | Derived = Field(default_factory=Base)
    many: list[BasePair | DerivedPair] = Field(default_factory=list)


def test_a_derived_class_in_a_union_after_its_base_is_stored_and_serialised_as_itself(db: nbdb.Database) -> None:
    # On b472a6e a stored copy held Derived's frozen twin: model_dump and JSON dropped ``y`` (the copy serialised
    # as a Base), and every write of a copy read back was refused ("changed in place").
    expected = {"one": {"x": 1, "y": [2]}, "many": [{"x": 3, "y": [4]}, {"x": 5}]}
    made, got = _written_and_read(db, Unions(one=Derived(x=1, y=[2]), many=[DerivedPair(3, [4]), BasePair(5)]))
    updated = db.update(got)
    for copy_ in (made, got, updated, db.update(updated.replace(many=list(updated.many))), db.get(Unions, made.id)):
        assert copy_ is not None
        assert copy_.model_dump(include={"one", "many"}) == expected
        assert json.loads(copy_.model_dump_json(include={"one", "many"})) == expected
        assert type(copy_.one) is Derived and type(copy_.many[0]) is DerivedPair  # a derived class: itself
        assert isinstance(copy_.many[1], BasePair) and not isinstance(copy_.many[1], DerivedPair)
        with pytest.raises(nbdb.ValidationError):
            copy_.one.y.append(9)  # type: ignore[union-attr]
        with pytest.raises(nbdb.ValidationError):
            copy_.one.x = 9
        with pytest.raises(nbdb.ValidationError):
            copy_.many[0].y.append(9)  # type: ignore[union-attr]
    assert db.get(Unions, made.id).model_dump(include={"one", "many"}) == expected  # type: ignore[union-attr]


PLUGINS: dict[str, type] = {}


class Plugin(pydantic.BaseModel):
    """A registry of subclasses, by name, and a hook that takes an argument: a plugin pattern of user code."""

    def __init_subclass__(cls, *, kind: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        PLUGINS[kind] = cls


class Mirror(Plugin, kind="mirror"):
    port: int = 0
    tags: list[str] = Field(default_factory=list)


class Mirrored(Model):
    mirror: Mirror | None = None


def test_a_frozen_twin_runs_no_subclass_hook_of_its_class(db: nbdb.Database) -> None:
    # On b472a6e the twin was made by type.__new__, which ran Plugin.__init_subclass__ for it: without its
    # argument, a TypeError at the write (no nbdb error); with none, the user's registry got the twin.
    _, got = _written_and_read(db, Mirrored(mirror=Mirror(port=3, tags=["a"])))
    assert got.mirror == Mirror(port=3, tags=["a"])
    assert PLUGINS == {"mirror": Mirror}
    with pytest.raises(nbdb.ValidationError):
        got.mirror.port = 4


@dataclasses.dataclass(slots=True)
class SlottedPair:
    """A dataclass of ``__slots__``: no ``__dict__``."""

    x: int = 0
    ys: list[int] = dataclasses.field(default_factory=list)


class Slotted(Model):
    pair: SlottedPair | None = None


def test_a_dataclass_of_slots_is_stored_and_frozen(db: nbdb.Database) -> None:
    # The write's check read a dataclass's fields with vars(): a TypeError (no nbdb error) for one of slots,
    # so no model holding one could be written (b472a6e and before).
    made, got = _written_and_read(db, Slotted(pair=SlottedPair(1, [2])))
    assert got.pair == SlottedPair(1, [2])
    for change in (lambda p: setattr(p, "x", 5), lambda p: p.ys.append(3), lambda p: delattr(p, "x")):
        with pytest.raises(nbdb.ValidationError):
            change(got.pair)
    assert type(copy.copy(got.pair)) is SlottedPair and pickle.loads(pickle.dumps(got.pair)) == got.pair
    assert db.update(got.replace(pair=SlottedPair(3))).pair == SlottedPair(3)
    assert db.get(Slotted, made.id).pair == SlottedPair(3)  # type: ignore[union-attr]


@dataclasses.dataclass
class Subnet:
    cidr: str = "10.0.0.0/24"

    @functools.cached_property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.cidr)


class Pool(pydantic.BaseModel):
    cidr: str = "10.1.0.0/16"

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @functools.cached_property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.cidr)


class Addressing(Model):
    subnet: Subnet = Field(default_factory=Subnet)
    pool: Pool = Field(default_factory=Pool)


def test_a_cached_property_of_a_nested_value_is_computed_on_a_stored_copy(db: nbdb.Database) -> None:
    # A cached_property stores its value in the instance's __dict__, which a frozen copy's refused: a
    # dataclass's raised ValidationError since b472a6e (its copy a twin), and a computed_field over one made
    # every model_dump of a stored copy, and the write itself, a ValidationError.
    mine = Addressing(pool=Pool(cidr="10.2.0.0/16"))
    assert mine.pool.network.prefixlen == 16 and mine.subnet.network.prefixlen == 24  # cached in the caller's
    made, got = _written_and_read(db, mine)
    for copy_ in (made, got):
        assert copy_.subnet.network == ipaddress.IPv4Network("10.0.0.0/24")
        assert copy_.model_dump()["pool"] == {
            "cidr": "10.2.0.0/16",
            "network": ipaddress.IPv4Network("10.2.0.0/16"),
        }
        with pytest.raises(nbdb.ValidationError):
            copy_.pool.cidr = "10.3.0.0/16"
        with pytest.raises(nbdb.ValidationError):
            copy_.subnet.__dict__["cidr"] = "10.3.0.0/16"
    assert db.update(got.replace(pool=got.pool)).version == 2


class Pair(pydantic.BaseModel):
    x: int = 0


class Maps(Model):
    """Fields pydantic validates to a map class of collections: refused at every write since b472a6e ("nbdb
    cannot freeze it"), though pydantic takes them and every store held them before."""

    ordered: collections.OrderedDict[str, list[int]] = Field(default_factory=collections.OrderedDict)
    counts: collections.Counter[str] = Field(default_factory=collections.Counter)
    defaults: collections.defaultdict[str, int] = Field(default_factory=lambda: collections.defaultdict(int))
    pair: Pair = Field(default_factory=Pair)


def test_a_map_of_collections_is_stored_frozen_as_its_own_class(db: nbdb.Database) -> None:
    ordered = collections.OrderedDict([("b", [1]), ("a", [2])])
    made, got = _written_and_read(db, Maps(ordered=ordered, counts={"x": 2}, defaults={"y": 1}))
    for copy_ in (made, got):
        assert isinstance(copy_.ordered, collections.OrderedDict) and list(copy_.ordered) == ["b", "a"]
        assert copy_.ordered == ordered and copy_.counts["x"] == 2 and copy_.counts["absent"] == 0
        assert isinstance(copy_.defaults, collections.defaultdict) and copy_.defaults["y"] == 1
        for change in (
            lambda c: c.ordered.move_to_end("b"),
            lambda c: c.ordered["b"].append(3),
            lambda c: c.ordered.update(c=[]),
            lambda c: c.counts.update("x"),
            lambda c: c.counts.subtract("x"),
            lambda c: c.defaults["absent"],  # a defaultdict's miss sets the key
            lambda c: c.defaults.pop("y"),
        ):
            with pytest.raises(nbdb.ValidationError):
                change(copy_)
        mine = copy.copy(copy_.ordered)
        mine.move_to_end("b")  # a copy is the caller's own
        assert type(mine) is collections.OrderedDict and list(mine) == ["a", "b"]
        assert type(pickle.loads(pickle.dumps(copy_.defaults))) is collections.defaultdict
        assert copy_.pair != copy_.ordered and copy_.ordered != copy_.pair  # a twin compared to a twin
    assert db.update(got.replace(ordered=got.ordered)).version == 2
    again = db.get(Maps, made.id)
    assert again is not None and list(again.ordered) == ["b", "a"] and again.counts == {"x": 2}


class Addresses(Model):
    """pydantic's annotations whose values never change: IP addresses and networks of either version, dates."""

    router: pydantic.IPvAnyAddress | None = None
    gateway: pydantic.IPvAnyInterface | None = None
    prefix: pydantic.IPvAnyNetwork | None = None
    seen: pydantic.AwareDatetime | None = None
    routers: list[pydantic.IPvAnyAddress] = Field(default_factory=list)


def test_a_field_of_pydantics_ip_or_date_annotations_is_an_atom() -> None:
    # Not a class of IMMUTABLE (their values are): since b472a6e each was frozen through, and a model holding
    # one lost the flat path (every write and every decode walked its values).
    assert Addresses.nbdb_deep_fields == ()


class Helped(pydantic.BaseModel):
    """A model whose model_post_init sets an attribute that is no field (never stored)."""

    x: int = 0

    def model_post_init(self, context: Any) -> None:
        object.__setattr__(self, "helper", Opaque())


@dataclasses.dataclass
class Locked:
    """A dataclass whose __post_init__ sets an attribute that is no field (never stored)."""

    x: int = 0

    def __post_init__(self) -> None:
        self.helper = Opaque()


class WithHelpers(Model):
    helped: Helped = Field(default_factory=Helped)
    locked: Locked = Field(default_factory=Locked)


def test_an_attribute_of_a_nested_value_that_is_no_field_is_kept_and_never_checked(db: nbdb.Database) -> None:
    # Only fields are stored: the write's check refused a nested value for an attribute of another kind in its
    # __dict__ ("a value JSON cannot hold", and since b472a6e "cannot freeze"), so no such model was writable.
    made, got = _written_and_read(db, WithHelpers(helped=Helped(x=1), locked=Locked(2)))
    assert got.helped.x == 1 and got.locked.x == 2
    for copy_ in (made, got):
        assert isinstance(copy_.helped.helper, Opaque) and isinstance(copy_.locked.helper, Opaque)  # type: ignore[attr-defined]
        with pytest.raises(nbdb.ValidationError):
            copy_.locked.x = 3
    assert db.update(got.replace(helped=Helped(x=5))).helped.x == 5


class WithCached(Model):
    """A model with a ``functools.cached_property``: it caches its value in the instance's ``__dict__``."""

    nbdb_table = "df_with_cached"
    name: str = ""

    @functools.cached_property
    def parts(self) -> list[str]:
        return self.name.split("-")


def test_a_cached_property_read_before_a_write_is_neither_in_the_stored_copy_nor_kept_by_replace(
    db: nbdb.Database,
) -> None:
    """The value a ``cached_property`` cached in the caller's object was copied into the stored copy (the
    caller's very list: its later change was the store's, on ``memory://``), made the write's result unequal
    to a read of it, and every ``replace()`` of an object whose property was read raised "parts: Extra inputs
    are not permitted"."""
    given = WithCached(name="a-b")
    given.parts.append("mine")
    made = db.create(given)
    got = db.get(WithCached, made.id)
    assert made == got and "parts" not in made.__dict__
    given.parts.append("later")
    assert db.get(WithCached, made.id).parts == ["a", "b"]
    assert got.parts == ["a", "b"]
    changed = got.replace(name="c-d")
    assert changed.parts == ["c", "d"]
    assert db.update(changed).parts == ["c", "d"]
    assert db.get(WithCached, made.id).name == "c-d"
