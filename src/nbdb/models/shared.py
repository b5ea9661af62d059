"""Values that many model instances share, made immutable so that sharing them is safe.

A decoded copy shares its empty lists and maps with every other decoded copy,
and stored copies of a model share one fields set (pydantic's
``model_fields_set``). Plain ``list``/``dict``/``set`` objects would let one
caller's ``port.options["k"] = "v"`` (or ``port.model_fields_set.add(...)``)
change every other object that holds the same value, the cache's included.
These subclasses behave as the builtin they extend for every read (equality,
iteration, JSON, ``isinstance``), refuse every in-place change with
:class:`nbdb.ValidationError`, and copy (``copy.copy``, ``deepcopy``, pickle,
``.copy()``) to a plain mutable builtin, which is what pydantic's
``model_copy`` needs of a fields set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from pydantic import BaseModel

from nbdb import errors

__all__ = [
    "EMPTY_DICT",
    "EMPTY_LIST",
    "FrozenDict",
    "FrozenList",
    "FrozenSet",
    "deep_frozen",
    "freeze_containers",
    "slot_setter",
]


def _refuse(self: object, *args: Any, **kwargs: Any) -> NoReturn:
    raise errors.ValidationError(
        f"this {type(self).__mro__[1].__name__} is shared by stored objects and cannot change: "
        "derive a changed copy of the object with .replace(...)"
    )


class FrozenList(list[Any]):
    """A ``list`` that refuses in-place changes (see the module)."""

    __slots__ = ()
    append = extend = insert = remove = pop = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        import copy

        return [copy.deepcopy(v, memo) for v in self]

    def __reduce__(self) -> tuple[type, tuple[list[Any]]]:
        return list, (list(self),)


class FrozenDict(dict[Any, Any]):
    """A ``dict`` that refuses in-place changes (see the module)."""

    __slots__ = ()
    pop = popitem = clear = update = setdefault = _refuse
    __setitem__ = __delitem__ = __ior__ = _refuse

    def __copy__(self) -> dict[Any, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[Any, Any]:
        import copy

        return {copy.deepcopy(k, memo): copy.deepcopy(v, memo) for k, v in self.items()}

    def __reduce__(self) -> tuple[type, tuple[dict[Any, Any]]]:
        return dict, (dict(self),)


class FrozenSet(set[Any]):
    """A ``set`` that refuses in-place changes (see the module); pydantic-core takes it as a fields set."""

    __slots__ = ()
    add = discard = remove = pop = clear = update = _refuse
    intersection_update = difference_update = symmetric_difference_update = _refuse
    __ior__ = __iand__ = __isub__ = __ixor__ = _refuse

    def __copy__(self) -> set[Any]:
        return set(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> set[Any]:
        return set(self)

    def __reduce__(self) -> tuple[type, tuple[list[Any]]]:
        return set, (list(self),)


EMPTY_LIST = FrozenList()
"""The empty list every decoded copy holds for an empty list field."""
EMPTY_DICT = FrozenDict()
"""The empty map every decoded copy holds for an empty map field."""


def freeze_containers(source: dict[str, Any], target: dict[str, Any], names: Iterable[str]) -> None:
    """Set ``target[name]`` to a frozen copy of every list, map and set ``source[name]`` of ``names``.

    Empty ones become the shared empty copies; frozen ones (and anything else) are left as they are.
    One call per object, the fields inline (hot: the write path's stored copy and every decoded copy).
    """
    for name in names:
        value = source[name]
        kind = value.__class__
        if kind is list:
            target[name] = FrozenList(value) if value else EMPTY_LIST
        elif kind is dict:
            target[name] = FrozenDict(value) if value else EMPTY_DICT
        elif kind is set:
            target[name] = FrozenSet(value)


def deep_frozen(value: Any) -> Any:
    """``value`` frozen through: its lists, maps and sets (and theirs, at every depth) frozen copies, its models too.

    For the fields of a model that may hold a list, map, set or model inside
    another (``dict[str, list[str]]``, ``list[list[int]]``, a nested model, a
    union's or ``Any``'s value, a newer model's fields): decided once per model
    class (see ``Model.nbdb_deep_fields``), so a model whose fields are atoms
    or flat containers of atoms never calls it. A nested pydantic model
    becomes a copy whose ``__dict__`` is a :class:`FrozenDict` of frozen
    values: pydantic sets a field through ``__dict__``, so ``inner.x = 1``
    raises :class:`nbdb.ValidationError` as a frozen list does (a frozen
    model class refuses it first, with pydantic's own error). A tuple is
    rebuilt of frozen items; any other value is kept as it is.
    """
    kind = value.__class__
    if kind is list or kind is FrozenList:
        return FrozenList([deep_frozen(v) for v in value]) if value else EMPTY_LIST
    if kind is dict or kind is FrozenDict:
        return FrozenDict({k: deep_frozen(v) for k, v in value.items()}) if value else EMPTY_DICT
    if kind is set or kind is FrozenSet:
        return FrozenSet(deep_frozen(v) for v in value)
    if kind is tuple:
        return tuple(deep_frozen(v) for v in value)
    if isinstance(value, BaseModel):
        return _frozen_model(value)
    return value


def _frozen_model(value: BaseModel) -> BaseModel:
    kind = value.__class__
    new = kind.__new__(kind)
    object.__setattr__(new, "__dict__", FrozenDict({k: deep_frozen(v) for k, v in value.__dict__.items()}))
    object.__setattr__(new, "__pydantic_fields_set__", FrozenSet(value.__pydantic_fields_set__))
    extra = value.__pydantic_extra__
    object.__setattr__(new, "__pydantic_extra__", None if extra is None else FrozenDict(deep_frozen(extra)))
    object.__setattr__(new, "__pydantic_private__", value.__pydantic_private__)
    return new


def slot_setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    """A function setting slot ``name`` of an instance of ``cls``, bypassing ``cls.__setattr__``.

    The slot's member descriptor's own ``__set__`` (0.7k instructions against
    ``object.__setattr__``'s 1.1k, which looks the descriptor up first), or
    that general call where ``cls`` keeps ``name`` elsewhere (another layout
    of a dependency's class). For the hot paths that build immutable
    objects the way their class's ``__new__`` would (ids, stored copies).
    """
    descriptor = vars(cls).get(name)
    if descriptor is not None and type(descriptor).__name__ == "member_descriptor":
        return descriptor.__set__  # type: ignore[no-any-return]
    return lambda obj, value: object.__setattr__(obj, name, value)
