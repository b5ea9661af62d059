"""What the walks of a model's core schema decide, pinned on a broad set of annotations.

Four questions are asked of a model's pydantic core schema, once per model: whether a field holds values
no store of bytes reads back (a ``Json[...]``, a dataclass with a field of ``init=False``: refused at the
first write), whether it may hold a value of any class (its secrets then looked for at each write), whether
the codec's own serializer of the fields may stand for the model's (no serializer of the caller's inside),
and whether a string check has a canonical pattern a decode tries first. All four are one walk
(:func:`nbdb.coreschema.find`) with a rule each; the table below was written from the walks as they were
before (one each), and the property checks every annotation of a small grammar against what it holds.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Json
from typing_extensions import TypedDict

from nbdb import codec, errors, storable
from nbdb.models import Model
from nbdb.models import base as model_base
from nbdb.models.types import LSPAddress

pytestmark = pytest.mark.timeout(300)


@dataclasses.dataclass
class InitFalse:
    a: int
    b: int = dataclasses.field(init=False, default=0)


@dataclasses.dataclass
class PlainData:
    a: int
    b: str = ""


class Inner(pydantic.BaseModel):
    n: int = 0


class InnerAny(pydantic.BaseModel):
    x: Any = None


class Tree(pydantic.BaseModel):
    """Recursive (a definition-ref to itself), holding Any."""

    children: list[Tree] = []
    data: Any = None


class TypedTree(pydantic.BaseModel):
    """Recursive, typed."""

    children: list[TypedTree] = []
    label: str = ""


class JsonTree(pydantic.BaseModel):
    """Recursive, with a Json field below the cycle."""

    children: list[JsonTree] = []
    raw: Json[int] | None = None


class Loose(TypedDict):
    x: Any


class Typed(TypedDict):
    x: int


def _same(value: Any) -> Any:
    return value


def _lower_word(value: str) -> str:
    return value.lower()


_lower_word.__nbdb_canonical__ = re.compile("[a-z]+")  # type: ignore[attr-defined]


LEAVES: dict[str, Any] = {
    "int": int,
    "str": str,
    "bytes": bytes,
    "float": float,
    "bool": bool,
    "UUID": uuid.UUID,
    "Any": Any,
    "object": object,
    "list": list,
    "dict": dict,
    "set": set,
    "frozenset": frozenset,
    "Json[int]": Json[int],
    "Json[list[Any]]": Json[list[Any]],
    "InitFalse": InitFalse,
    "PlainData": PlainData,
    "Inner": Inner,
    "InnerAny": InnerAny,
    "Tree": Tree,
    "TypedTree": TypedTree,
    "JsonTree": JsonTree,
    "Loose": Loose,
    "Typed": Typed,
    "After[int]": Annotated[int, pydantic.AfterValidator(_same)],
    "Before[Any]": Annotated[Any, pydantic.BeforeValidator(_same)],
    "Ser[int->Any]": Annotated[int, pydantic.PlainSerializer(_same, return_type=Any)],
    "Ser[Any->int]": Annotated[Any, pydantic.PlainSerializer(_same, return_type=int)],
    "Ser[int->Json]": Annotated[int, pydantic.PlainSerializer(_same, return_type=Json[int])],
    "Canonical": Annotated[str, pydantic.AfterValidator(_lower_word)],
    "LSPAddress": LSPAddress,
}

WRAPPERS: dict[str, Any] = {
    "{}": lambda a: a,
    "list[{}]": lambda a: list[a],  # type: ignore[valid-type]
    "dict[str, {}]": lambda a: dict[str, a],  # type: ignore[valid-type]
    "tuple[{}, ...]": lambda a: tuple[a, ...],  # type: ignore[valid-type]
    "tuple[int, {}]": lambda a: tuple[int, a],  # type: ignore[valid-type]
    "{} | None": lambda a: a | None,
    "{} | int": lambda a: a | int,
    "Optional[list[{}]]": lambda a: list[a] | None,  # type: ignore[valid-type]
}


_COUNT = iter(range(1_000_000))


def _model(annotation: Any, default: bool = False) -> type[Model]:
    """A model of one field of ``annotation`` (a default: the field wrapped in a ``default`` node), not registered."""
    name = f"Walked{next(_COUNT)}"
    namespace: dict[str, Any] = {"__annotations__": {"f": annotation}, "nbdb_table": name}
    namespace["__annotations__"]["nbdb_table"] = ClassVar[str]
    if default:
        namespace["f"] = None
    model = type(name, (Model,), namespace)
    model_base._REGISTRY.pop(name, None)  # no store of these tests' sees it (OVSDB builds a table of each)
    return model


def _verdicts(model: type[Model]) -> tuple[str | None, bool, bool, object]:
    """(why a write of ``model`` is refused, whether field ``f`` may hold any class, whether the codec serializes
    its fields by its own form, how its decode validates: None, model's; False, fields'; True, with patterns)."""
    problem = None
    try:
        storable._check_field_types(model)
    except errors.ValidationError as exc:
        problem = str(exc).removeprefix(f"{model.__name__} cannot be stored: ")
    untyped = "f" in storable._UNTYPED.get(model, ())
    own_form = codec._stored_form(model) is not None
    fast = codec._fields_validator(model, fast=True)
    return problem, untyped, own_form, None if fast is None else fast[1]


def _cases() -> Iterator[tuple[str, Any, bool]]:
    for wrapper, wrap in WRAPPERS.items():
        for leaf, annotation in LEAVES.items():
            try:
                wrapped = wrap(annotation)
            except TypeError:
                continue
            yield wrapper.format(leaf), wrapped, False
    for leaf, annotation in LEAVES.items():
        yield f"{leaf} = None", annotation | None, True


_J = "is Json[...]: pydantic takes its value only as JSON text, so no write of it is valid and no read of a stored one; declare the inner type instead (nbdb stores every field as JSON already)"  # noqa: E501
_I = "holds dataclass InitFalse whose field 'b' has init=False: pydantic writes it and refuses it on every read (or reads without it); make it an init field, or no field (a property)"  # noqa: E501

# Written from the walks before they were one (PYTHONPATH of the commit before), and unchanged since.
# label: (problem, may hold any class, codec's own form, decode's validator)
EXPECTED: dict[str, tuple[str | None, bool, bool, object]] = {
    "int": (None, False, True, False),
    "str": (None, False, True, False),
    "bytes": (None, False, True, False),
    "float": (None, False, True, False),
    "bool": (None, False, True, False),
    "UUID": (None, False, True, False),
    "Any": (None, True, True, False),
    "object": (None, True, True, False),
    "list": (None, True, True, False),
    "dict": (None, True, True, False),
    "set": (None, True, True, False),
    "frozenset": (None, True, True, False),
    "Json[int]": (_J, False, True, False),
    "Json[list[Any]]": (_J, False, True, False),
    "InitFalse": (_I, False, True, False),
    "PlainData": (None, False, True, False),
    "Inner": (None, False, True, False),
    "InnerAny": (None, True, True, False),
    "Tree": (None, True, True, None),
    "TypedTree": (None, False, True, None),
    "JsonTree": (_J, False, True, None),
    "Loose": (None, True, True, False),
    "Typed": (None, False, True, False),
    "After[int]": (None, False, True, False),
    "Before[Any]": (None, True, True, False),
    "Ser[int->Any]": (None, False, False, False),
    "Ser[Any->int]": (None, True, False, False),
    "Ser[int->Json]": (_J, False, False, False),
    "Canonical": (None, False, True, True),
    "LSPAddress": (None, False, True, True),
    "list[int]": (None, False, True, False),
    "list[str]": (None, False, True, False),
    "list[bytes]": (None, False, True, False),
    "list[float]": (None, False, True, False),
    "list[bool]": (None, False, True, False),
    "list[UUID]": (None, False, True, False),
    "list[Any]": (None, True, True, False),
    "list[object]": (None, True, True, False),
    "list[list]": (None, True, True, False),
    "list[dict]": (None, True, True, False),
    "list[set]": (None, True, True, False),
    "list[frozenset]": (None, True, True, False),
    "list[Json[int]]": (_J, False, True, False),
    "list[Json[list[Any]]]": (_J, False, True, False),
    "list[InitFalse]": (_I, False, True, False),
    "list[PlainData]": (None, False, True, False),
    "list[Inner]": (None, False, True, False),
    "list[InnerAny]": (None, True, True, False),
    "list[Tree]": (None, True, True, None),
    "list[TypedTree]": (None, False, True, None),
    "list[JsonTree]": (_J, False, True, None),
    "list[Loose]": (None, True, True, False),
    "list[Typed]": (None, False, True, False),
    "list[After[int]]": (None, False, True, False),
    "list[Before[Any]]": (None, True, True, False),
    "list[Ser[int->Any]]": (None, False, False, False),
    "list[Ser[Any->int]]": (None, True, False, False),
    "list[Ser[int->Json]]": (_J, False, False, False),
    "list[Canonical]": (None, False, True, True),
    "list[LSPAddress]": (None, False, True, True),
    "dict[str, int]": (None, False, True, False),
    "dict[str, str]": (None, False, True, False),
    "dict[str, bytes]": (None, False, True, False),
    "dict[str, float]": (None, False, True, False),
    "dict[str, bool]": (None, False, True, False),
    "dict[str, UUID]": (None, False, True, False),
    "dict[str, Any]": (None, True, True, False),
    "dict[str, object]": (None, True, True, False),
    "dict[str, list]": (None, True, True, False),
    "dict[str, dict]": (None, True, True, False),
    "dict[str, set]": (None, True, True, False),
    "dict[str, frozenset]": (None, True, True, False),
    "dict[str, Json[int]]": (_J, False, True, False),
    "dict[str, Json[list[Any]]]": (_J, False, True, False),
    "dict[str, InitFalse]": (_I, False, True, False),
    "dict[str, PlainData]": (None, False, True, False),
    "dict[str, Inner]": (None, False, True, False),
    "dict[str, InnerAny]": (None, True, True, False),
    "dict[str, Tree]": (None, True, True, None),
    "dict[str, TypedTree]": (None, False, True, None),
    "dict[str, JsonTree]": (_J, False, True, None),
    "dict[str, Loose]": (None, True, True, False),
    "dict[str, Typed]": (None, False, True, False),
    "dict[str, After[int]]": (None, False, True, False),
    "dict[str, Before[Any]]": (None, True, True, False),
    "dict[str, Ser[int->Any]]": (None, False, False, False),
    "dict[str, Ser[Any->int]]": (None, True, False, False),
    "dict[str, Ser[int->Json]]": (_J, False, False, False),
    "dict[str, Canonical]": (None, False, True, True),
    "dict[str, LSPAddress]": (None, False, True, True),
    "tuple[int, ...]": (None, False, True, False),
    "tuple[str, ...]": (None, False, True, False),
    "tuple[bytes, ...]": (None, False, True, False),
    "tuple[float, ...]": (None, False, True, False),
    "tuple[bool, ...]": (None, False, True, False),
    "tuple[UUID, ...]": (None, False, True, False),
    "tuple[Any, ...]": (None, True, True, False),
    "tuple[object, ...]": (None, True, True, False),
    "tuple[list, ...]": (None, True, True, False),
    "tuple[dict, ...]": (None, True, True, False),
    "tuple[set, ...]": (None, True, True, False),
    "tuple[frozenset, ...]": (None, True, True, False),
    "tuple[Json[int], ...]": (_J, False, True, False),
    "tuple[Json[list[Any]], ...]": (_J, False, True, False),
    "tuple[InitFalse, ...]": (_I, False, True, False),
    "tuple[PlainData, ...]": (None, False, True, False),
    "tuple[Inner, ...]": (None, False, True, False),
    "tuple[InnerAny, ...]": (None, True, True, False),
    "tuple[Tree, ...]": (None, True, True, None),
    "tuple[TypedTree, ...]": (None, False, True, None),
    "tuple[JsonTree, ...]": (_J, False, True, None),
    "tuple[Loose, ...]": (None, True, True, False),
    "tuple[Typed, ...]": (None, False, True, False),
    "tuple[After[int], ...]": (None, False, True, False),
    "tuple[Before[Any], ...]": (None, True, True, False),
    "tuple[Ser[int->Any], ...]": (None, False, False, False),
    "tuple[Ser[Any->int], ...]": (None, True, False, False),
    "tuple[Ser[int->Json], ...]": (_J, False, False, False),
    "tuple[Canonical, ...]": (None, False, True, True),
    "tuple[LSPAddress, ...]": (None, False, True, True),
    "tuple[int, int]": (None, False, True, False),
    "tuple[int, str]": (None, False, True, False),
    "tuple[int, bytes]": (None, False, True, False),
    "tuple[int, float]": (None, False, True, False),
    "tuple[int, bool]": (None, False, True, False),
    "tuple[int, UUID]": (None, False, True, False),
    "tuple[int, Any]": (None, True, True, False),
    "tuple[int, object]": (None, True, True, False),
    "tuple[int, list]": (None, True, True, False),
    "tuple[int, dict]": (None, True, True, False),
    "tuple[int, set]": (None, True, True, False),
    "tuple[int, frozenset]": (None, True, True, False),
    "tuple[int, Json[int]]": (_J, False, True, False),
    "tuple[int, Json[list[Any]]]": (_J, False, True, False),
    "tuple[int, InitFalse]": (_I, False, True, False),
    "tuple[int, PlainData]": (None, False, True, False),
    "tuple[int, Inner]": (None, False, True, False),
    "tuple[int, InnerAny]": (None, True, True, False),
    "tuple[int, Tree]": (None, True, True, None),
    "tuple[int, TypedTree]": (None, False, True, None),
    "tuple[int, JsonTree]": (_J, False, True, None),
    "tuple[int, Loose]": (None, True, True, False),
    "tuple[int, Typed]": (None, False, True, False),
    "tuple[int, After[int]]": (None, False, True, False),
    "tuple[int, Before[Any]]": (None, True, True, False),
    "tuple[int, Ser[int->Any]]": (None, False, False, False),
    "tuple[int, Ser[Any->int]]": (None, True, False, False),
    "tuple[int, Ser[int->Json]]": (_J, False, False, False),
    "tuple[int, Canonical]": (None, False, True, True),
    "tuple[int, LSPAddress]": (None, False, True, True),
    "int | None": (None, False, True, False),
    "str | None": (None, False, True, False),
    "bytes | None": (None, False, True, False),
    "float | None": (None, False, True, False),
    "bool | None": (None, False, True, False),
    "UUID | None": (None, False, True, False),
    "Any | None": (None, True, True, False),
    "object | None": (None, True, True, False),
    "list | None": (None, True, True, False),
    "dict | None": (None, True, True, False),
    "set | None": (None, True, True, False),
    "frozenset | None": (None, True, True, False),
    "Json[int] | None": (_J, False, True, False),
    "Json[list[Any]] | None": (_J, False, True, False),
    "InitFalse | None": (_I, False, True, False),
    "PlainData | None": (None, False, True, False),
    "Inner | None": (None, False, True, False),
    "InnerAny | None": (None, True, True, False),
    "Tree | None": (None, True, True, None),
    "TypedTree | None": (None, False, True, None),
    "JsonTree | None": (_J, False, True, None),
    "Loose | None": (None, True, True, False),
    "Typed | None": (None, False, True, False),
    "After[int] | None": (None, False, True, False),
    "Before[Any] | None": (None, True, True, False),
    "Ser[int->Any] | None": (None, False, False, False),
    "Ser[Any->int] | None": (None, True, False, False),
    "Ser[int->Json] | None": (_J, False, False, False),
    "Canonical | None": (None, False, True, True),
    "LSPAddress | None": (None, False, True, True),
    "int | int": (None, False, True, False),
    "str | int": (None, False, True, False),
    "bytes | int": (None, False, True, False),
    "float | int": (None, False, True, False),
    "bool | int": (None, False, True, False),
    "UUID | int": (None, False, True, False),
    "Any | int": (None, True, True, False),
    "object | int": (None, True, True, False),
    "list | int": (None, True, True, False),
    "dict | int": (None, True, True, False),
    "set | int": (None, True, True, False),
    "frozenset | int": (None, True, True, False),
    "Json[int] | int": (_J, False, True, False),
    "Json[list[Any]] | int": (_J, False, True, False),
    "InitFalse | int": (_I, False, True, False),
    "PlainData | int": (None, False, True, False),
    "Inner | int": (None, False, True, False),
    "InnerAny | int": (None, True, True, False),
    "Tree | int": (None, True, True, None),
    "TypedTree | int": (None, False, True, None),
    "JsonTree | int": (_J, False, True, None),
    "Loose | int": (None, True, True, False),
    "Typed | int": (None, False, True, False),
    "After[int] | int": (None, False, True, False),
    "Before[Any] | int": (None, True, True, False),
    "Ser[int->Any] | int": (None, False, False, False),
    "Ser[Any->int] | int": (None, True, False, False),
    "Ser[int->Json] | int": (_J, False, False, False),
    "Canonical | int": (None, False, True, True),
    "LSPAddress | int": (None, False, True, True),
    "Optional[list[int]]": (None, False, True, False),
    "Optional[list[str]]": (None, False, True, False),
    "Optional[list[bytes]]": (None, False, True, False),
    "Optional[list[float]]": (None, False, True, False),
    "Optional[list[bool]]": (None, False, True, False),
    "Optional[list[UUID]]": (None, False, True, False),
    "Optional[list[Any]]": (None, True, True, False),
    "Optional[list[object]]": (None, True, True, False),
    "Optional[list[list]]": (None, True, True, False),
    "Optional[list[dict]]": (None, True, True, False),
    "Optional[list[set]]": (None, True, True, False),
    "Optional[list[frozenset]]": (None, True, True, False),
    "Optional[list[Json[int]]]": (_J, False, True, False),
    "Optional[list[Json[list[Any]]]]": (_J, False, True, False),
    "Optional[list[InitFalse]]": (_I, False, True, False),
    "Optional[list[PlainData]]": (None, False, True, False),
    "Optional[list[Inner]]": (None, False, True, False),
    "Optional[list[InnerAny]]": (None, True, True, False),
    "Optional[list[Tree]]": (None, True, True, None),
    "Optional[list[TypedTree]]": (None, False, True, None),
    "Optional[list[JsonTree]]": (_J, False, True, None),
    "Optional[list[Loose]]": (None, True, True, False),
    "Optional[list[Typed]]": (None, False, True, False),
    "Optional[list[After[int]]]": (None, False, True, False),
    "Optional[list[Before[Any]]]": (None, True, True, False),
    "Optional[list[Ser[int->Any]]]": (None, False, False, False),
    "Optional[list[Ser[Any->int]]]": (None, True, False, False),
    "Optional[list[Ser[int->Json]]]": (_J, False, False, False),
    "Optional[list[Canonical]]": (None, False, True, True),
    "Optional[list[LSPAddress]]": (None, False, True, True),
    "int = None": (None, False, True, False),
    "str = None": (None, False, True, False),
    "bytes = None": (None, False, True, False),
    "float = None": (None, False, True, False),
    "bool = None": (None, False, True, False),
    "UUID = None": (None, False, True, False),
    "Any = None": (None, True, True, False),
    "object = None": (None, True, True, False),
    "list = None": (None, True, True, False),
    "dict = None": (None, True, True, False),
    "set = None": (None, True, True, False),
    "frozenset = None": (None, True, True, False),
    "Json[int] = None": (_J, False, True, False),
    "Json[list[Any]] = None": (_J, False, True, False),
    "InitFalse = None": (_I, False, True, False),
    "PlainData = None": (None, False, True, False),
    "Inner = None": (None, False, True, False),
    "InnerAny = None": (None, True, True, False),
    "Tree = None": (None, True, True, None),
    "TypedTree = None": (None, False, True, None),
    "JsonTree = None": (_J, False, True, None),
    "Loose = None": (None, True, True, False),
    "Typed = None": (None, False, True, False),
    "After[int] = None": (None, False, True, False),
    "Before[Any] = None": (None, True, True, False),
    "Ser[int->Any] = None": (None, False, False, False),
    "Ser[Any->int] = None": (None, True, False, False),
    "Ser[int->Json] = None": (_J, False, False, False),
    "Canonical = None": (None, False, True, True),
    "LSPAddress = None": (None, False, True, True),
}


def test_the_table_covers_every_case() -> None:
    assert set(EXPECTED) == {label for label, _, _ in _cases()}


@pytest.mark.parametrize(("label", "annotation", "default"), list(_cases()), ids=[c[0] for c in _cases()])
def test_each_walk_decides_as_before(label: str, annotation: Any, default: bool) -> None:
    problem, untyped, own_form, fast = _verdicts(_model(annotation, default))
    expected = EXPECTED[label]
    assert (f"field 'f' {expected[0]}" if expected[0] else None, *expected[1:]) == (problem, untyped, own_form, fast)


# The property: any nesting of the plain leaves, decided from the annotation itself.
_UNSTORABLE = {"Json[int]": "Json[...]", "Json[list[Any]]": "Json[...]", "InitFalse": "init=False"}
_ANY_CLASS = {"Any", "object", "list", "dict", "set", "frozenset", "InnerAny", "Tree", "Loose", "Before[Any]"}
_PLAIN = [
    leaf for leaf in LEAVES if not leaf.startswith("Ser[") and leaf not in ("Canonical", "LSPAddress", "JsonTree")
]

_annotations = st.recursive(
    st.sampled_from(_PLAIN).map(lambda leaf: (leaf, LEAVES[leaf], {leaf})),
    lambda inner: st.one_of(
        inner.map(lambda t: (f"list[{t[0]}]", list[t[1]], t[2])),  # type: ignore[name-defined]
        inner.map(lambda t: (f"dict[str, {t[0]}]", dict[str, t[1]], t[2])),  # type: ignore[name-defined]
        inner.map(lambda t: (f"tuple[{t[0]}, ...]", tuple[t[1], ...], t[2])),  # type: ignore[name-defined]
        inner.map(lambda t: (f"{t[0]} | None", t[1] | None, t[2])),
        st.tuples(inner, inner).map(
            lambda p: (f"{p[0][0]} | {p[1][0]}", p[0][1] | p[1][1], p[0][2] | p[1][2]) if p[0][1] != p[1][1] else p[0]
        ),
        st.tuples(inner, inner).map(
            lambda p: (f"tuple[{p[0][0]}, {p[1][0]}]", tuple[p[0][1], p[1][1]], p[0][2] | p[1][2])  # type: ignore[name-defined]
        ),
        # A union of labelled choices and no discriminator: its choices are (node, label) pairs in the core schema.
        st.tuples(inner, inner).map(
            lambda p: (
                f"Tagged[{p[0][0]}] | Tagged[{p[1][0]}]",
                Annotated[p[0][1], pydantic.Tag("a")] | Annotated[p[1][1], pydantic.Tag("b")],
                p[0][2] | p[1][2],
            )
        ),
    ),
    max_leaves=4,
)


@settings(max_examples=120, deadline=None)
@given(_annotations)
def test_a_field_is_refused_exactly_where_it_holds_json_or_init_false_and_untyped_where_it_may_hold_any(
    case: tuple[str, Any, set[str]],
) -> None:
    label, annotation, leaves = case
    problem, untyped, own_form, _ = _verdicts(_model(annotation))
    kinds = {_UNSTORABLE[leaf] for leaf in leaves if leaf in _UNSTORABLE}
    if kinds:
        assert problem is not None and any(kind in problem for kind in kinds), label
    else:
        assert problem is None, label
        assert untyped == bool(leaves & _ANY_CLASS), label
        assert own_form, label


class _Wrapped(Model):
    """The model's node inside a validator's: the codec keeps the model's validator."""

    nbdb_table: ClassVar[str] = "WalkedWrapped"
    f: list[Any] = []

    @pydantic.model_validator(mode="wrap")
    @classmethod
    def _around(cls, data: Any, handler: Any) -> Any:
        return handler(data)


class _Recursive(Model):
    """The model refers to itself: its schema is definitions, its node one of them, its field a definition-ref."""

    nbdb_table: ClassVar[str] = "WalkedRecursive"
    f: list[_Recursive] = []
    g: Json[int] | None = None


class _RecursiveTyped(Model):
    nbdb_table: ClassVar[str] = "WalkedRecursiveTyped"
    f: list[_RecursiveTyped] = []
    g: Annotated[str, pydantic.AfterValidator(_lower_word)] = "a"


class _OwnSerializer(Model):
    nbdb_table: ClassVar[str] = "WalkedOwnSerializer"
    f: int = 0

    @pydantic.field_serializer("f")
    def _dump(self, value: int) -> int:
        return value


for _walked in (_Wrapped, _Recursive, _RecursiveTyped, _OwnSerializer):
    model_base._REGISTRY.pop(_walked.nbdb_table, None)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (_Wrapped, (None, True, True, None)),
        # Field f is refused first: its definition-ref is followed into the model, to g's Json.
        (_Recursive, ("field 'f' " + _J, False, False, None)),
        (_RecursiveTyped, (None, False, False, None)),
        (_OwnSerializer, (None, False, False, False)),
    ],
    ids=["wrapped", "recursive", "recursive-typed", "own-serializer"],
)
def test_a_models_own_node_is_found_wrapped_or_among_definitions(model: type[Model], expected: tuple[Any, ...]) -> None:
    problem, _, own_form, fast = _verdicts(model)
    untyped = bool(storable._UNTYPED.get(model))
    assert (problem, untyped, own_form, fast) == expected
