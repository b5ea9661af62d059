"""User field types every store writes and reads back exactly, or refuses at the write (issue #12).

A ``SecretStr`` (``SecretBytes``, ``Secret[T]``) field was stored as pydantic's mask, ``"**********"``,
by every store of bytes (the secret lost; ``memory://`` kept it): it is now refused at the model's first
write on every store, unless the caller writes it with a serializer of its own; a nested dataclass with a field of
``init=False`` was written, and every read of the record was then a ``CorruptRecordError``; a
``Json[...]`` field refused every write with a misleading error; a caller's own immutable value class
had no way to be stored.
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid
import zoneinfo
from collections.abc import Callable, Iterator, MutableSequence
from pathlib import Path
from typing import Annotated, Any, Generic, NewType, TypeVar

import pydantic
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import Json, Secret, SecretBytes, SecretStr
from pydantic_core import core_schema
from typing_extensions import TypeAliasType

import nbdb
from nbdb.models import Model
from nbdb.testing.servers import start_server

pytestmark = pytest.mark.timeout(300)

STORES = ["memory", "sqlite", "redis"]


class Plain(Model):
    nbdb_table = "ft_plain_secret"
    password: SecretStr


class Optional_(Model):
    nbdb_table = "ft_optional_secret"
    maybe: SecretStr | None = None


class Listed(Model):
    nbdb_table = "ft_listed_secret"
    many: list[SecretBytes] = pydantic.Field(default_factory=list)


class Mapped(Model):
    nbdb_table = "ft_mapped_secret"
    by_name: dict[str, Secret[int]] = pydantic.Field(default_factory=dict)


class SecretInside(pydantic.BaseModel):
    token: SecretStr


class NestedVault(Model):
    nbdb_table = "ft_nested_vault"
    inner: SecretInside | None = None


@dataclasses.dataclass
class SecretData:
    key: SecretBytes


class InDataclass(Model):
    nbdb_table = "ft_dataclass_secret"
    held: list[SecretData] = pydantic.Field(default_factory=list)


class InUnion(Model):
    nbdb_table = "ft_union_secret"
    either: int | tuple[str, SecretStr] = 0


SecretBound = TypeVar("SecretBound", bound=SecretStr)
IntOrSecret = TypeVar("IntOrSecret", int, SecretBytes)
Token = NewType("Token", SecretStr)
SecretList = TypeAliasType("SecretList", list[SecretStr])


class BoundBox(pydantic.BaseModel, Generic[SecretBound]):
    value: SecretBound


class ConstrainedBox(pydantic.BaseModel, Generic[IntOrSecret]):
    value: IntOrSecret


class InGeneric(Model):
    """Generic models held unparametrized: pydantic validates and writes a TypeVar as its bound or constraints."""

    nbdb_table = "ft_generic_secret"
    bound: BoundBox | None = None  # type: ignore[type-arg]


class InConstrainedGeneric(Model):
    nbdb_table = "ft_constrained_secret"
    constrained: ConstrainedBox | None = None  # type: ignore[type-arg]


class Aliased(Model):
    nbdb_table = "ft_aliased_secret"
    token: Token | None = None


class AliasedList(Model):
    nbdb_table = "ft_aliased_list_secret"
    listed: SecretList | None = None


class WrapSerialized(Model):
    """A wrap serializer that hands the secret on to pydantic's own, which writes the mask."""

    nbdb_table = "ft_wrap_serialized"
    password: SecretStr
    token: Annotated[SecretStr, pydantic.WrapSerializer(lambda v, handler: handler(v))] = SecretStr("")

    @pydantic.field_serializer("password", mode="wrap", when_used="json")
    def _password(self, value: SecretStr, handler: Any) -> Any:
        return handler(value)


class OtherFieldSerialized(Model):
    """A serializer of another field accepts no secret."""

    nbdb_table = "ft_other_serialized"
    password: SecretStr
    name: str = ""

    @pydantic.field_serializer("name")
    def _name(self, value: str) -> str:
        return value


class SerializedInside(pydantic.BaseModel):
    token: SecretStr

    @pydantic.field_serializer("token", when_used="json")
    def _token(self, value: SecretStr) -> str:
        return value.get_secret_value()


class LooseVault(Model):
    nbdb_table = "ft_loose_vault"
    anything: Any = None


class LooseInside(pydantic.BaseModel):
    anything: Any = None


class LabelledVault(Model):
    """Unions of labelled choices and no discriminator (``Annotated[X, Tag("x")]``): in the core schema each
    choice is a (node, label) pair, which the walk of the schema did not look into."""

    nbdb_table = "ft_labelled_vault"
    either: Annotated[Any, pydantic.Tag("any")] | Annotated[int, pydantic.Tag("int")] = 0
    inside: Annotated[LooseInside, pydantic.Tag("model")] | Annotated[str, pydantic.Tag("str")] = ""


@dataclasses.dataclass
class Derived:
    base: int
    cached: int = dataclasses.field(init=False, default=0)


class WithDerived(Model):
    nbdb_table = "ft_with_derived"
    inner: Derived


@pydantic.dataclasses.dataclass
class PydanticDerived:
    base: int
    cached: int = dataclasses.field(init=False, default=0)


class WithPydanticDerived(Model):
    nbdb_table = "ft_with_pydantic_derived"
    inners: list[PydanticDerived] = pydantic.Field(default_factory=list)


class WithJson(Model):
    nbdb_table = "ft_with_json"
    blob: Json[dict[str, int]]


class Ulid:
    """A caller's own value class: no str subclass, dataclass nor model; its instances never change."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        object.__setattr__(self, "text", text)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ulid) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            lambda v: v if isinstance(v, Ulid) else Ulid(v),
            core_schema.union_schema([core_schema.is_instance_schema(Ulid), core_schema.str_schema()]),
            serialization=core_schema.plain_serializer_function_ser_schema(lambda u: u.text),
        )


class Tagged(Model):
    nbdb_table = "ft_tagged"
    tag: Ulid
    tags: list[Ulid] = pydantic.Field(default_factory=list)
    by_name: dict[str, Ulid | None] = pydantic.Field(default_factory=dict)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with start_server("redis") as redis:
        yield redis.url


@pytest.fixture
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], Callable[[], nbdb.Database]]:
    """For a store kind: a function that connects a new Database to one and the same store.

    ``memory://`` is one store per Database: its function gives the same Database each time
    (it keeps objects, never bytes). A store of bytes is read back by another Database, so that
    what is read was decoded from the bytes, not shared from the write.
    """
    opened: list[nbdb.Database] = []

    def of(kind: str) -> Callable[[], nbdb.Database]:
        if kind == "memory":
            db = nbdb.connect("memory://")
            opened.append(db)
            return lambda: db
        if kind == "sqlite":
            url = f"sqlite:///{tmp_path}/{uuid.uuid4().hex[:8]}.db"
        else:
            url = f"{request.getfixturevalue('redis_url')}?namespace=ft{uuid.uuid4().hex[:8]}"

        def connect() -> nbdb.Database:
            db = nbdb.connect(url)
            opened.append(db)
            return db

        return connect

    yield of  # type: ignore[misc]
    for db in opened:
        db.close()


_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)

REFUSED: list[tuple[Callable[[], Model], str]] = [
    (lambda: Plain(password=SecretStr("s3cret"), topic="t"), "'password'"),
    (lambda: Optional_(maybe=SecretStr("s3cret"), topic="t"), "'maybe'"),
    (lambda: Optional_(topic="t"), "'maybe'"),  # refused by its type, whatever it holds
    (lambda: Listed(many=[SecretBytes(b"s3cret")], topic="t"), "'many'"),
    (lambda: Mapped(by_name={"k": Secret[int](7)}, topic="t"), "'by_name'"),
    (lambda: NestedVault(inner=SecretInside(token=SecretStr("s3cret")), topic="t"), "'inner.token'"),
    (lambda: InDataclass(held=[SecretData(SecretBytes(b"s3cret"))], topic="t"), "'held.key'"),
    (lambda: InUnion(either=("k", SecretStr("s3cret")), topic="t"), "'either'"),
    (lambda: OtherFieldSerialized(password=SecretStr("s3cret"), topic="t"), "'password'"),
    (lambda: WrapSerialized(password=SecretStr("s3cret"), topic="t"), "'password'"),
    (lambda: InGeneric(bound=BoundBox(value=SecretStr("s3cret")), topic="t"), "'bound.value'"),
    (lambda: InConstrainedGeneric(constrained=ConstrainedBox(value=7), topic="t"), "'constrained.value'"),
    (lambda: Aliased(token=Token(SecretStr("s3cret")), topic="t"), "'token'"),
    (lambda: AliasedList(listed=[SecretStr("s3cret")], topic="t"), "'listed'"),
]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize(("make", "field"), REFUSED)
def test_a_secret_no_serializer_of_the_callers_writes_is_refused_at_the_write_naming_it(
    reopen: Callable[[str], Callable[[], nbdb.Database]], kind: str, make: Callable[[], Model], field: str
) -> None:
    db = reopen(kind)()
    obj = make()
    for _ in range(2):  # refused again at the next write: nothing was cached as checked
        with pytest.raises(nbdb.ValidationError) as refused:
            db.create(obj)
        message = str(refused.value)
        assert field in message and "mask" in message and "field_serializer" in message
        assert "get_secret_value()" in message and "s3cret" not in message
        with pytest.raises(nbdb.NotFoundError):
            db.get(type(obj), obj.id)
    assert db.list(type(obj)) == []


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_secret_held_where_no_secret_is_declared_is_refused_by_the_write(
    reopen: Callable[[str], Callable[[], nbdb.Database]], kind: str
) -> None:
    db = reopen(kind)()
    obj = LooseVault(anything={"k": [SecretStr("s3cret")]}, topic="t")
    with pytest.raises(nbdb.ValidationError):
        db.create(obj)
    with pytest.raises(nbdb.NotFoundError):
        db.get(LooseVault, obj.id)
    assert db.create(LooseVault(anything={"k": ["plain"]}, topic="t")).anything == {"k": ["plain"]}


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: LabelledVault(either=SecretStr("s3cret"), topic="t"), "'either'"),
        (lambda: LabelledVault(either={"k": [SecretBytes(b"s3cret")]}, topic="t"), "'either'"),
        (lambda: LabelledVault(inside=LooseInside(anything=SecretStr("s3cret")), topic="t"), "'inside'"),
    ],
)
def test_a_secret_under_any_in_a_labelled_union_choice_is_refused_by_the_write(
    reopen: Callable[[str], Callable[[], nbdb.Database]], kind: str, make: Callable[[], Model], field: str
) -> None:
    # Was written: a store of bytes kept pydantic's mask, "**********", and the secret was lost.
    connect = reopen(kind)
    obj = make()
    with pytest.raises(nbdb.ValidationError, match="holds a pydantic secret") as refused:
        connect().create(obj)
    assert field in str(refused.value) and "s3cret" not in str(refused.value)
    with pytest.raises(nbdb.NotFoundError):
        connect().get(LabelledVault, obj.id)
    plain = LabelledVault(either={"k": ["plain"]}, inside=LooseInside(anything=[1]), topic="t")
    connect().create(plain)
    back = connect().get(LabelledVault, plain.id)
    assert back.either == {"k": ["plain"]} and back.inside == LooseInside(anything=[1])


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_dataclass_field_of_init_false_is_refused_at_the_write_naming_it(
    reopen: Callable[[str], Callable[[], nbdb.Database]], kind: str
) -> None:
    db = reopen(kind)()
    derived = Derived(1)
    derived.cached = 5
    for obj in (WithDerived(inner=derived, topic="t"), WithPydanticDerived(inners=[PydanticDerived(2)], topic="t")):
        with pytest.raises(nbdb.ValidationError, match="init=False") as raised:
            db.create(obj)
        assert "'cached'" in str(raised.value)
        with pytest.raises(nbdb.NotFoundError):
            db.get(type(obj), obj.id)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_json_field_is_refused_at_the_write_naming_it(
    reopen: Callable[[str], Callable[[], nbdb.Database]], kind: str
) -> None:
    db = reopen(kind)()
    obj = WithJson(blob='{"a": 1}', topic="t")
    assert obj.blob == {"a": 1}
    with pytest.raises(nbdb.ValidationError, match=r"field 'blob' is Json\[\.\.\.\]"):
        db.create(obj)
    with pytest.raises(nbdb.NotFoundError):
        db.get(WithJson, obj.id)


def test_an_undeclared_value_class_is_refused_and_a_declared_one_reads_back(tmp_path: Path) -> None:
    from nbdb.models import immutable  # (no such function before)

    class Undeclared:
        def __init__(self, text: str) -> None:
            self.text = text

        @classmethod
        def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
            return core_schema.no_info_plain_validator_function(
                lambda v: v if isinstance(v, Undeclared) else Undeclared(v),
                serialization=core_schema.plain_serializer_function_ser_schema(lambda u: u.text),
            )

    class Loose(Model):
        nbdb_table = "ft_loose_class"
        value: Undeclared

    with nbdb.connect("memory://") as db:
        with pytest.raises(nbdb.ValidationError, match="cannot freeze"):
            db.create(Loose(value=Undeclared("x"), topic="t"))
    assert immutable(Ulid) is Ulid
    with pytest.raises(TypeError):
        immutable(type("Listy", (list,), {}))
    with pytest.raises(TypeError):
        immutable(Ulid("x"))  # type: ignore[type-var]


@pytest.mark.parametrize("kind", STORES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tag=_TEXT, tags=st.lists(_TEXT, max_size=3), by_name=st.dictionaries(_TEXT, st.none() | _TEXT, max_size=3))
def test_a_declared_immutable_class_reads_back_as_written_on_every_store(
    reopen: Callable[[str], Callable[[], nbdb.Database]],
    kind: str,
    tag: str,
    tags: list[str],
    by_name: dict[str, str | None],
) -> None:
    from nbdb.models import immutable  # (no such function before)

    immutable(Ulid)  # declared after Tagged: each write looks at the value
    connect = reopen(kind)
    obj = Tagged(
        tag=Ulid(tag),
        tags=[Ulid(t) for t in tags],
        by_name={k: None if v is None else Ulid(v) for k, v in by_name.items()},
        topic="t",
    )
    written = connect().create(obj)
    assert written.tag is obj.tag  # kept as it is: it never changes
    read = connect().get(Tagged, obj.id)
    assert (read.tag, read.tags, read.by_name) == (obj.tag, obj.tags, obj.by_name)


def test_a_declared_class_that_writes_text_no_store_holds_is_refused_on_every_store(tmp_path: Path) -> None:
    from nbdb.models import immutable  # (no such function before)

    immutable(Ulid)
    for url in ("memory://", f"sqlite:///{tmp_path}/x.db"):
        with nbdb.connect(url) as db:
            with pytest.raises(nbdb.ValidationError):
                db.create(Tagged(tag=Ulid("\udc80"), topic="t"))


def test_a_serialized_secrets_default_in_a_models_shape_is_its_value() -> None:
    """A store that maps fields to columns (OVSDB) leaves a field at its default out of the row and reads the
    default's JSON back in its place: pydantic's mask there was a secret lost."""
    from nbdb.models.shape import shape_of

    class Defaulted(Model):
        nbdb_table = "ft_defaulted"
        token: SecretStr = SecretStr("default-token")
        pins: list[Secret[int]] = pydantic.Field(default_factory=lambda: [Secret[int](7)])

        @pydantic.field_serializer("*", when_used="json")
        def _dump(self, value: Any) -> Any:
            return value

    shape = shape_of(Defaulted)
    assert (shape.field("token").default, shape.field("pins").default) == ("default-token", [7])


class RevealedByItsSerializer(Model):
    """pydantic's documented way to write a secret's value: a serializer of the caller's own."""

    nbdb_table = "ft_revealed_by_serializer"
    password: SecretStr
    maybe: SecretStr | None = None
    key: Annotated[SecretBytes, pydantic.PlainSerializer(lambda v: v.get_secret_value(), when_used="json")]
    inner: SerializedInside | None = None

    @pydantic.field_serializer("password", "maybe", when_used="json")
    def _password(self, value: SecretStr | None) -> str | None:
        return None if value is None else value.get_secret_value()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(password=_TEXT, maybe=st.none() | _TEXT, key=_TEXT.map(str.encode), token=st.none() | _TEXT)
def test_a_secret_the_callers_own_serializer_writes_reads_back(
    reopen: Callable[[str], Callable[[], nbdb.Database]],
    kind: str,
    password: str,
    maybe: str | None,
    key: bytes,
    token: str | None,
) -> None:
    connect = reopen(kind)
    obj = connect().create(
        RevealedByItsSerializer(
            password=SecretStr(password),
            maybe=None if maybe is None else SecretStr(maybe),
            key=SecretBytes(key),
            inner=None if token is None else SerializedInside(token=SecretStr(token)),
            topic="t",
        )
    )
    for read in (obj, connect().get(RevealedByItsSerializer, obj.id)):
        assert read.password.get_secret_value() == password
        assert (None if read.maybe is None else read.maybe.get_secret_value()) == maybe
        assert read.key.get_secret_value() == key
        assert (None if read.inner is None else read.inner.token.get_secret_value()) == token
    if password:  # nbdb's copies still mask it
        assert "password=SecretStr('**********')" in repr(obj)


class WrittenByItsModelSerializer(pydantic.BaseModel):
    """A nested model whose own (plain) model serializer writes its secret."""

    token: SecretStr

    @pydantic.model_serializer(mode="plain")
    def _dump(self) -> dict[str, str]:
        return {"token": self.token.get_secret_value()}


class HoldsModelSerialized(Model):
    nbdb_table = "ft_model_serialized"
    inner: WrittenByItsModelSerializer


class EncodedByItsConfig(Model):
    """pydantic's ``json_encoders`` (deprecated, still honoured) write the secret, in containers too."""

    model_config = pydantic.ConfigDict(json_encoders={SecretStr: lambda v: v.get_secret_value()})
    nbdb_table = "ft_json_encoders"
    password: SecretStr
    many: list[SecretStr] = pydantic.Field(default_factory=list)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_secret_a_model_serializer_or_json_encoders_write_reads_back(
    reopen: Callable[[str], Callable[[], nbdb.Database]], kind: str
) -> None:
    """Both wrote the secret on main and were refused as if pydantic's mask were written."""
    connect = reopen(kind)
    held = connect().create(HoldsModelSerialized(inner=WrittenByItsModelSerializer(token=SecretStr("s3")), topic="t"))
    assert connect().get(HoldsModelSerialized, held.id).inner.token.get_secret_value() == "s3"
    encoded = connect().create(EncodedByItsConfig(password=SecretStr("p"), many=[SecretStr("q")], topic="t"))
    read = connect().get(EncodedByItsConfig, encoded.id)
    assert read.password.get_secret_value() == "p"
    assert [s.get_secret_value() for s in read.many] == ["q"]


class ListsInside(pydantic.BaseModel):
    items: list[int]


@dataclasses.dataclass
class ListsInData:
    items: list[int]


class HoldsListsInside(Model):
    nbdb_table = "ft_lists_inside"
    inner: ListsInside


@pytest.mark.parametrize("cls", [object, ListsInside, ListsInData, type("Seq", (MutableSequence,), {})])
def test_immutable_refuses_object_models_dataclasses_and_mutable_collections(cls: type) -> None:
    """Declared, a model or dataclass was kept unfrozen (its lists shared with the caller, changed in
    place without a write); ``object`` declared every value immutable."""
    from nbdb.models import immutable
    from nbdb.models.shared import is_immutable_class

    with pytest.raises(TypeError):
        immutable(cls)

    assert not is_immutable_class(cls)
    with nbdb.connect("memory://") as db:
        obj = HoldsListsInside(inner=ListsInside(items=[1]), topic="t")
        stored = db.create(obj)
        obj.inner.items.append(2)  # the caller's copy, changed in place: not the stored one
        assert db.get(HoldsListsInside, stored.id).inner.items == [1]


# A validator that returns what its field's annotation does not allow: memory:// stored (and shared) the
# caller's value, sqlite:// and every store of bytes stored it and every later read was a CorruptRecordError.


def _bad(value: object) -> bool:
    """The values the validators below turn into something their annotation refuses."""
    return isinstance(value, str) and value.startswith("!")


def _listed(value: Any) -> Any:
    return [value] if _bad(value) else value


def _floated(value: Any) -> Any:
    """Not a list: a model validator's list was refused already (it looked again at any list, map or set)."""
    return 7.5 if _bad(value) else value


class FieldAfter(Model):
    nbdb_table = "ft_field_after"
    x: int | str = 0

    @pydantic.field_validator("x", mode="after")
    @classmethod
    def _x(cls, value: Any) -> Any:
        return _listed(value)


class FieldWrap(Model):
    nbdb_table = "ft_field_wrap"
    x: int | str = 0

    @pydantic.field_validator("x", mode="wrap")
    @classmethod
    def _x(cls, value: Any, handler: Any) -> Any:
        return _listed(handler(value))


class AnnotatedAfter(Model):
    nbdb_table = "ft_annotated_after"
    x: Annotated[int | str, pydantic.AfterValidator(_listed)] = 0


class AnnotatedPlain(Model):
    nbdb_table = "ft_annotated_plain"
    x: Annotated[int | str, pydantic.PlainValidator(_listed)] = 0


class AnnotatedInside(Model):
    nbdb_table = "ft_annotated_inside"
    x: list[Annotated[int | str, pydantic.AfterValidator(_floated)]] = pydantic.Field(default_factory=list)


class ModelAfter(Model):
    nbdb_table = "ft_model_after"
    x: int | str = 0

    @pydantic.model_validator(mode="after")
    def _x(self) -> ModelAfter:
        object.__setattr__(self, "x", _floated(self.x))
        return self


class ModelWrap(Model):
    nbdb_table = "ft_model_wrap"
    x: int | str = 0

    @pydantic.model_validator(mode="wrap")
    @classmethod
    def _x(cls, data: Any, handler: Any) -> Any:
        built = handler(data)
        object.__setattr__(built, "x", _floated(built.x))
        return built


class FloatAfter(Model):
    """No list: a number neither of the union's choices takes."""

    nbdb_table = "ft_float_after"
    x: Annotated[int | str, pydantic.AfterValidator(_floated)] = 0


RETURNS_ANOTHER_TYPE = [FieldAfter, FieldWrap, AnnotatedAfter, ModelAfter, ModelWrap, FloatAfter]


def _made(model: type[Model], value: int | str) -> Model:
    return model(x=[value] if model is AnnotatedInside else value, topic="t")


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("model", [*RETURNS_ANOTHER_TYPE, AnnotatedInside])
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.integers(-(2**40), 2**40) | _TEXT.map(lambda t: "!" + t) | _TEXT)
def test_a_validators_return_value_its_field_refuses_is_refused_by_the_write_on_every_store(
    reopen: Callable[[str], Callable[[], nbdb.Database]], kind: str, model: type[Model], value: int | str
) -> None:
    """Created, updated or in a transaction: refused with ValidationError naming the field, nothing written;
    a value the validator leaves as its annotation allows reads back as written."""
    connect = reopen(kind)
    db = connect()
    good = db.create(_made(model, 1))
    obj = _made(model, value)
    if not _bad(value):
        written = db.create(obj)
        assert connect().get(model, obj.id) == written
        assert connect().get(model, db.update(good.replace(x=obj.x)).id).x == obj.x  # type: ignore[attr-defined]
        return
    with pytest.raises(nbdb.ValidationError, match=r"\bx\b"):
        db.create(obj)
    with pytest.raises(nbdb.ValidationError, match=r"\bx\b"):
        db.update(good.replace(x=obj.x))  # type: ignore[attr-defined]
    with pytest.raises(nbdb.ValidationError, match=r"\bx\b"), db.transaction() as t:
        t.create(_made(model, 2))
        t.create(obj)
    reader = connect()
    with pytest.raises(nbdb.NotFoundError):
        reader.get(model, obj.id)
    assert reader.list(model) == [good]  # every record reads back, the first as it was


@pytest.mark.parametrize("kind", STORES)
def test_a_plain_validators_value_reads_back_whatever_its_annotation(
    reopen: Callable[[str], Callable[[], nbdb.Database]], kind: str
) -> None:
    """A plain validator replaces its field's validation: what it returns, it takes again at the read."""
    connect = reopen(kind)
    written = connect().create(AnnotatedPlain(x="!", topic="t"))
    assert connect().get(AnnotatedPlain, written.id).x == ["!"]


class ClassAfter(Model):
    """A class as the validator: its instance need not be the annotation's."""

    nbdb_table = "ft_class_after"
    x: Annotated[str, pydantic.AfterValidator(list)] = ""


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_class_as_validator_that_returns_what_its_field_refuses_is_refused(
    reopen: Callable[[str], Callable[[], nbdb.Database]], kind: str
) -> None:
    connect = reopen(kind)
    with pytest.raises(nbdb.ValidationError, match=r"\bx\b"):
        connect().create(ClassAfter(x="ab", topic="t"))
    assert connect().list(ClassAfter) == []


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_validator_whose_value_validates_to_another_is_refused_on_every_store(
    reopen: Callable[[str], Callable[[], nbdb.Database]], kind: str
) -> None:
    """A validator that does not return what it takes again (``v + 1``): a store of bytes validates the stored
    value again at every read, and read back another value than the one it acknowledged (``memory://`` the one)."""

    class Counter(Model):
        nbdb_table = "ft_counter"
        n: Annotated[int, pydantic.AfterValidator(lambda v: v + 1)] = 0

    connect = reopen(kind)
    obj = Counter(n=1, topic="t")
    with pytest.raises(nbdb.ValidationError, match=r"\bn\b"):
        connect().create(obj)
    assert connect().list(Counter) == []


class Stamped(Model):
    nbdb_table = "ft_stamped"
    at: datetime.datetime


@pytest.mark.parametrize("kind", STORES)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(at=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))
@example(at=datetime.datetime(2026, 11, 1, 1, 30, tzinfo=zoneinfo.ZoneInfo("America/New_York")))  # a fold
@example(at=datetime.datetime(2026, 11, 1, 1, 30, tzinfo=zoneinfo.ZoneInfo("America/New_York"), fold=1))
@example(at=datetime.datetime(2026, 3, 8, 2, 30, tzinfo=zoneinfo.ZoneInfo("America/New_York")))  # a gap
@example(at=datetime.datetime(2026, 7, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")))
@example(at=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(seconds=30))))
@example(at=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=-5, minutes=-30))))
@given(
    at=st.datetimes(
        min_value=datetime.datetime(1, 1, 2), max_value=datetime.datetime(9999, 12, 30), timezones=st.timezones()
    )
)
def test_an_aware_datetime_reads_back_equal_with_its_offset_or_is_refused_on_every_store(
    reopen: Callable[[str], Callable[[], nbdb.Database]], kind: str, at: datetime.datetime
) -> None:
    """JSON keeps an offset, not a zone: a store of bytes reads back pydantic's own fixed-offset ``tzinfo``
    (``TzInfo(0)`` for ``timezone.utc``), equal as a datetime and of the same offset, of another repr. It
    writes the offset to the minute: one of seconds (a zone's local mean time before 1900 or so, ``-00:16:08``)
    read back as another instant; and a zone's time in its repeated or skipped hour read back as the same
    instant at a fixed offset, which Python never finds equal to it: both are refused on every store, naming
    the field."""
    connect = reopen(kind)
    offset = at.utcoffset()
    exceptional = offset is not None and at != at.replace(tzinfo=datetime.timezone(offset))  # a DST fold or gap
    if offset is not None and (offset % datetime.timedelta(minutes=1) or exceptional):
        with pytest.raises(nbdb.ValidationError, match=r"\bat\b.*whole minutes.*repeated or skipped hour"):
            connect().create(Stamped(at=at, topic="t"))
        assert connect().list(Stamped) == []
        return
    written = connect().create(Stamped(at=at, topic="t"))
    read = connect().get(Stamped, written.id)
    assert read == written and read.at == at and read.at.utcoffset() == at.utcoffset()
    if kind == "memory":
        assert read.at.tzinfo is at.tzinfo
