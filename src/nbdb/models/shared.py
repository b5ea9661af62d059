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

import collections
import copy
import dataclasses
import datetime
import enum
import ipaddress
import re
import threading
from collections.abc import Callable, Iterable, MutableMapping, MutableSequence, MutableSet
from decimal import Decimal
from fractions import Fraction
from pathlib import PurePath
from typing import Any, NoReturn, TypeVar
from uuid import UUID

import pydantic
import pydantic_core
from pydantic import BaseModel

from nbdb import errors

__all__ = [
    "EMPTY_DICT",
    "EMPTY_LIST",
    "IMMUTABLE",
    "FrozenDict",
    "FrozenList",
    "FrozenSet",
    "deep_frozen",
    "freeze_containers",
    "frozen_class",
    "immutable",
    "is_immutable_class",
    "slot_setter",
    "thawed",
    "thawed_class",
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


class _AttributeDict(FrozenDict):
    """A frozen copy's ``__dict__``: what it holds never changes, but an attribute it does not hold may be added
    (a ``functools.cached_property``'s value, made from the frozen ones: a ``computed_field`` over one made
    every ``model_dump`` of the stored copy, and every write, a ValidationError)."""

    __slots__ = ()

    def __setitem__(self, key: Any, value: Any) -> None:  # type: ignore[override]  # FrozenDict's refuses all
        if key in self:
            raise errors.ValidationError(
                f"attribute {key!r} is part of a stored object and cannot change: "
                "derive a changed copy of the object with .replace(...)"
            )
        dict.__setitem__(self, key, value)


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
        kind = type(value)  # (a call CPython specializes; ``.__class__`` is a descriptor's, read generically)
        if kind is list:
            target[name] = FrozenList(value) if value else EMPTY_LIST
        elif kind is dict:
            target[name] = FrozenDict(value) if value else EMPTY_DICT
        elif kind is set:
            target[name] = FrozenSet(value)


IMMUTABLE: tuple[type, ...] = (
    str,
    bytes,
    int,
    float,
    complex,
    Decimal,
    Fraction,
    UUID,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    datetime.tzinfo,
    enum.Enum,
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
    PurePath,
    type(None),
    range,
    re.Pattern,
    pydantic_core.Url,
    pydantic_core.MultiHostUrl,
    pydantic.AnyUrl,
    pydantic.PostgresDsn.__mro__[1],  # every multi-host URL type's base
    pydantic.SecretStr,
    pydantic.SecretBytes,
)
"""The classes whose instances never change (nor hold anything that does): kept as they are in a frozen copy.

A caller adds its own with :func:`immutable`; read it through :func:`is_immutable_class`, not a copy
taken at import (the tuple is replaced when a class is added)."""

T = TypeVar("T", bound=type)

_MUTABLE_BUILTINS = (list, dict, set, bytearray, collections.deque, MutableSequence, MutableMapping, MutableSet)
_DECLARING = threading.Lock()


def immutable(cls: T) -> T:
    """Declare that instances of ``cls`` (and of its subclasses) never change, nor hold anything that does.

    For a caller's own value class (a ULID type, say) held by a model's field that is no ``str`` or
    ``int`` subclass, dataclass or model: nbdb cannot freeze such a value, so a write of it is refused
    with :class:`nbdb.ValidationError` unless its class is declared here. A declared class's instances are
    kept as they are in the stored copy and shared by its readers: a change of one in place would change
    what every reader sees without a write, so declare only a class that allows none. Usable as a class
    decorator (``@nbdb.models.immutable``) or called (``immutable(ULID)``); returns ``cls``. Declare it
    before a model annotates a field with it, and the model's writes pay nothing for the field (afterwards,
    each write of such a model looks at the value). Its values must still be written and read back by the
    field's pydantic schema (``__get_pydantic_core_schema__``, or an ``Annotated`` validator and
    serializer). TypeError for what is no class, for ``object``, for the containers that change in place,
    and for a pydantic model or dataclass (nbdb freezes those itself: declared, their lists and maps were
    kept unfrozen, shared with the caller).
    """
    global IMMUTABLE
    if not isinstance(cls, type):
        raise TypeError(f"immutable() takes a class, not {cls!r}")
    if cls is object:
        raise TypeError("immutable(object) would declare every value immutable")
    if issubclass(cls, _MUTABLE_BUILTINS):
        raise TypeError(f"{cls.__qualname__} derives from a container that changes in place: it cannot be immutable")
    if issubclass(cls, BaseModel) or dataclasses.is_dataclass(cls):
        raise TypeError(
            f"{cls.__qualname__} is a pydantic model or dataclass: nbdb freezes its values itself, and declared "
            "immutable its lists, maps and sets would be kept as they are, changeable in place"
        )
    with _DECLARING:  # two threads declaring at once each kept the other's class out of IMMUTABLE
        if not issubclass(cls, IMMUTABLE):
            IMMUTABLE = (*IMMUTABLE, cls)
            DECLARED.append(cls)
    return cls


DECLARED: list[type] = []
"""The classes callers declared with :func:`immutable`."""


def is_immutable_class(cls: type) -> bool:
    """Whether instances of ``cls`` never change (see :data:`IMMUTABLE` and :func:`immutable`)."""
    return issubclass(cls, IMMUTABLE)


def deep_frozen(value: Any, *, known: bool = True) -> Any:
    """``value`` frozen through: its lists, maps and sets (and theirs, at every depth) frozen copies, its models too.

    For the fields of a model that may hold a list, map, set or model inside
    another (``dict[str, list[str]]``, ``list[list[int]]``, a nested model, a
    union's or ``Any``'s value, a newer model's fields): decided once per model
    class (see ``Model.nbdb_deep_fields``), so a model whose fields are atoms
    or flat containers of atoms never calls it. A nested pydantic model or
    dataclass becomes a copy of its class's frozen twin (see :func:`frozen_class`):
    an instance of a subclass of its class, equal to it, whose every
    assignment and ``del`` of an attribute raises :class:`nbdb.ValidationError`
    (``validate_assignment`` and a frozen class's own refusal included), its
    values frozen through. A class derived from another model or dataclass
    with fields is copied as itself instead (see :func:`_copy_class`: pydantic
    would serialise its twin in ``Base | Derived`` as a ``Base``): its values
    frozen through and, for a model, a plain assignment refused, but not
    ``validate_assignment``'s, a ``del``, nor a dataclass's assignment.
    A tuple (a named one too) and a frozenset are
    rebuilt of frozen items; an instance of :data:`IMMUTABLE` is kept as it is.
    Anything else (an arbitrary class's instance, a ``deque``, a ``bytearray``)
    could change under the store without a write: :class:`nbdb.ValidationError`,
    unless ``known`` is False (a decoded value, made by its field's own
    validation: kept as it is).
    """
    kind = value.__class__
    if kind is list or kind is FrozenList:
        return FrozenList([deep_frozen(v, known=known) for v in value]) if value else EMPTY_LIST
    if kind is dict or kind is FrozenDict:
        return FrozenDict({k: deep_frozen(v, known=known) for k, v in value.items()}) if value else EMPTY_DICT
    if kind is set or kind is FrozenSet:
        return FrozenSet(deep_frozen(v, known=known) for v in value)
    if kind is tuple:
        return tuple(deep_frozen(v, known=known) for v in value)
    if kind in _THAWED:
        return value  # a frozen twin's instance: frozen through when it was made, and it refuses every change
    if isinstance(value, IMMUTABLE):
        return value
    if isinstance(value, pydantic.Secret):  # Secret[T]: its value frozen through (a Secret[list[int]] too)
        inner = value.get_secret_value()
        frozen = deep_frozen(inner, known=known)
        if frozen is inner:
            return value
        return type(value)(frozen)  # its public constructor: a Secret[T] subclass takes its value
    if kind is frozenset:
        return frozenset(deep_frozen(v, known=known) for v in value)
    if isinstance(value, BaseModel):
        return _frozen_model(value, known)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _frozen_dataclass(value, known)
    if isinstance(value, tuple) and hasattr(value, "_make"):  # a named tuple
        return value._make(deep_frozen(v, known=known) for v in value)
    if kind in _MAPPINGS:
        return _frozen_mapping(value, known)
    if not known:
        return value
    raise errors.ValidationError(
        f"a {kind.__name__} ({kind.__module__}.{kind.__qualname__}) cannot be stored: nbdb cannot freeze it, so a "
        "change of it in place would change the stored copy without a write; hold its data in a list, map, set, "
        "tuple, pydantic model or dataclass"
    )


_TWINS: dict[type, type] = {}
"""Each class's frozen twin (see :func:`frozen_class`)."""
_THAWED: dict[type, type] = {}
"""Each frozen twin's class (the class it is a frozen copy of)."""


_MAPPINGS: dict[type, type] = {}
"""The frozen twin of each map class of :mod:`collections` a field may hold (see :func:`_frozen_mapping`)."""


def _mapping_twin(kind: type[dict[Any, Any]], changes: tuple[str, ...]) -> type:
    namespace: dict[str, Any] = {
        "__slots__": (),
        "__module__": kind.__module__,
        "__copy__": lambda self: _thawed_mapping(self),
        "__deepcopy__": lambda self, memo: copy.deepcopy(_thawed_mapping(self), memo),
        "__reduce_ex__": lambda self, protocol: (_itself, (_thawed_mapping(self),)),  # pickled as the caller's own
        **dict.fromkeys(changes, _refuse_change),
    }
    twin = type(kind.__name__, (kind,), namespace)
    _THAWED[twin] = kind
    return twin


def _refuse_change(self: object, *args: Any, **kwargs: Any) -> NoReturn:
    raise errors.ValidationError(
        f"this {type(self).__name__} is part of a stored object and cannot change: "
        "derive a changed copy of the object with .replace(...)"
    )


_DICT_CHANGES = ("__setitem__", "__delitem__", "__ior__", "clear", "pop", "popitem", "setdefault", "update")
_MAP_CHANGES: tuple[tuple[type[dict[Any, Any]], tuple[str, ...]], ...] = (
    (collections.OrderedDict, ("move_to_end",)),
    (collections.defaultdict, ()),  # its __missing__ sets the key: refused too
    (collections.Counter, ("subtract", "__iadd__", "__isub__", "__iand__")),
)
for _kind, _more in _MAP_CHANGES:
    _MAPPINGS[_kind] = _mapping_twin(_kind, _DICT_CHANGES + _more)


def _new_mapping(kind: type[Any], value: Any, items: Iterable[tuple[Any, Any]]) -> Any:
    new = dict.__new__(kind)
    base: Any = _THAWED.get(kind, kind)
    if base is collections.defaultdict:
        collections.defaultdict.__init__(new, value.default_factory)
    elif base is collections.OrderedDict:
        collections.OrderedDict.__init__(new)  # (Counter's __init__ calls its update: the twin's refusal)
    put = base.__setitem__  # the class's own, not the twin's refusal
    for key, item in items:
        put(new, key, item)
    return new


def _frozen_mapping(value: Any, known: bool) -> Any:
    """A frozen copy of an ``OrderedDict``, ``defaultdict`` or ``Counter``: an instance of its class's frozen twin."""
    return _new_mapping(_MAPPINGS[value.__class__], value, ((k, deep_frozen(v, known=known)) for k, v in value.items()))


def _thawed_mapping(value: Any) -> Any:
    return _new_mapping(_THAWED[value.__class__], value, value.items())


def thawed_class(kind: type) -> type:
    """The class a frozen twin is a frozen copy of (``kind`` itself if it is no twin)."""
    return _THAWED.get(kind, kind)


def frozen_class(kind: type) -> type:
    """The frozen twin of a pydantic model or dataclass ``kind``: its subclass whose instances refuse every change.

    Made once per class, without pydantic's metaclass (nothing is validated
    or registered again: it takes its fields, validators and serializers
    from ``kind``). An instance of it is what a stored copy holds for one of
    ``kind``: ``isinstance`` of ``kind``, serialised as one, equal to (and of
    the hash of) the ``kind`` instance of the same values, of ``kind``'s name
    and repr. An assignment or ``del`` of one of its attributes (but a
    pydantic model's private ones) raises :class:`nbdb.ValidationError`
    before ``kind``'s own ``__setattr__`` could replace its ``__dict__``
    (``validate_assignment``) or refuse with an error of its own (a frozen
    class). Building one (``type(copy.inner)(x=1)``), a copy (``copy.copy``,
    ``deepcopy``, pickle) or ``model_copy`` gives a ``kind`` instance, the
    caller's own, as copying a frozen list gives a plain one.
    """
    twin = _TWINS.get(kind)
    if twin is None:
        namespace = {
            "__slots__": (),
            "__module__": kind.__module__,
            "__qualname__": kind.__qualname__,
            "__doc__": kind.__doc__,
            "__new__": lambda cls, *args, **kwargs: kind(*args, **kwargs),
            "__setattr__": _refuse_attribute,
            "__delattr__": _refuse_attribute,
            "__eq__": lambda self, other: thawed(self) == (thawed(other) if other.__class__ in _THAWED else other),
            "__hash__": kind.__hash__,
            "__copy__": lambda self: thawed(self),
            "__deepcopy__": lambda self, memo: copy.deepcopy(thawed(self), memo),
            "__reduce_ex__": lambda self, protocol: (_itself, (thawed(self),)),  # pickled as the caller's own
        }
        if issubclass(kind, BaseModel):
            namespace["model_copy"] = _model_copy
        # type.__new__ alone, not the metaclass's: pydantic's would build (and nbdb's Model register) it anew;
        # _NoSubclassHook first, so that no __init_subclass__ of kind's runs for it (a user's registry of
        # subclasses got the twin in place of the class, one that takes arguments made the write a TypeError).
        twin = _TWINS[kind] = type.__new__(type(kind), kind.__name__, (_NoSubclassHook, kind), namespace)
        _THAWED[twin] = kind
    return twin


class _NoSubclassHook:
    """A frozen twin's first base: ``type.__new__`` calls its ``__init_subclass__``, not its class's own."""

    __slots__ = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        pass  # deliberately not super()'s: the twin is no subclass its class's hooks should see


def _itself(value: Any) -> Any:
    return value


def _refuse_attribute(self: object, name: str, *value: Any) -> None:
    if isinstance(self, BaseModel) and name in type(self).__private_attributes__:
        if value:
            BaseModel.__setattr__(self, name, value[0])
        else:
            BaseModel.__delattr__(self, name)
        return  # a private attribute: no stored value
    raise errors.ValidationError(
        f"this {type(self).__name__} is part of a stored object and cannot change: "
        "derive a changed copy of the object with .replace(...)"
    )


def _model_copy(self: BaseModel, *, update: Any = None, deep: bool = False) -> BaseModel:
    own: BaseModel = thawed(self)
    return own.model_copy(update=update, deep=deep)


def thawed(value: Any) -> Any:
    """A frozen twin's instance as an instance of its class, of the same (frozen) values: the caller's own."""
    kind = _THAWED[value.__class__]
    if kind in _MAPPINGS:  # an OrderedDict, defaultdict or Counter
        return _thawed_mapping(value)
    new: Any = object.__new__(kind)
    if isinstance(value, BaseModel):
        object.__setattr__(new, "__dict__", dict(value.__dict__))
        object.__setattr__(new, "__pydantic_fields_set__", set(value.__pydantic_fields_set__))
        extra = value.__pydantic_extra__
        object.__setattr__(new, "__pydantic_extra__", None if extra is None else dict(extra))
        private = value.__pydantic_private__
        object.__setattr__(new, "__pydantic_private__", None if private is None else dict(private))
        return new
    for name, item in _attributes(value):
        object.__setattr__(new, name, item)
    return new


def _attributes(value: Any) -> list[tuple[str, Any]]:
    """A dataclass instance's attributes: its fields, and what its ``__dict__`` holds besides."""
    own = getattr(value, "__dict__", None)
    pairs = list(own.items()) if own is not None else []
    pairs += [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value) if own is None or f.name not in own]
    return pairs


_COPY_CLASS: dict[type, type] = {}
"""The class of each class's frozen copy: its frozen twin, or the class itself (see :func:`_copy_class`)."""


def _copy_class(kind: type) -> type:
    """The class of a frozen copy of a ``kind`` instance: ``kind``'s frozen twin, or ``kind`` itself if it derives
    from another model or dataclass.

    pydantic's serializer of a union (``A | B``) takes a value for a member only if it is of exactly its class,
    and only if none is, for the first member it is an instance of: a twin of ``B(A)`` is of neither class, so
    ``A | B`` serialised it as an ``A`` (``B``'s own fields dropped from ``model_dump`` and JSON, and a write of
    the copy refused). A class none of whose ancestors is a model or dataclass with fields (but pydantic's own
    bases, nbdb's ``Model`` and the generic class it parametrizes: no union lists them) is the first member of
    a union its twin is an instance of only where it is the class itself; a derived one is copied as its class
    instead, less frozen (see :func:`deep_frozen`).
    """
    copy_class = _COPY_CLASS.get(kind)
    if copy_class is None:
        generic = getattr(kind, "__pydantic_generic_metadata__", None)
        origin = generic.get("origin") if generic else None
        derived = any(
            (dataclasses.fields(base) if dataclasses.is_dataclass(base) else getattr(base, "__pydantic_fields__", None))
            and base is not origin
            and not base.__module__.startswith("pydantic.")
            and base.__module__ != "nbdb.models.base"  # nbdb's Model
            for base in kind.__mro__[1:]
        )
        try:
            copy_class = kind if derived else frozen_class(kind)
        except TypeError:  # a class no subclass can be made of (an instance layout _NoSubclassHook conflicts with)
            copy_class = kind
        _COPY_CLASS[kind] = copy_class
    return copy_class


def _frozen_model(value: BaseModel, known: bool) -> BaseModel:
    new: BaseModel = object.__new__(_copy_class(value.__class__))
    object.__setattr__(new, "__dict__", _frozen_attributes(value.__dict__, value.__class__.__pydantic_fields__, known))
    object.__setattr__(new, "__pydantic_fields_set__", FrozenSet(value.__pydantic_fields_set__))
    extra = value.__pydantic_extra__
    object.__setattr__(
        new, "__pydantic_extra__", None if extra is None else FrozenDict(deep_frozen(extra, known=known))
    )
    private = value.__pydantic_private__
    object.__setattr__(new, "__pydantic_private__", None if private is None else dict(private))
    return new


def _frozen_attributes(own: dict[str, Any], fields: Iterable[str], known: bool) -> _AttributeDict:
    """A model's or dataclass's ``__dict__`` frozen through: a value nbdb cannot freeze is refused in a field only
    (an attribute of another kind, a ``cached_property``'s value or one its ``__post_init__`` set, is never
    stored: kept as it is)."""
    return _AttributeDict({k: deep_frozen(v, known=known and k in fields) for k, v in own.items()})


def _frozen_dataclass(value: Any, known: bool) -> Any:
    new: Any = object.__new__(_copy_class(value.__class__))
    own = getattr(value, "__dict__", None)
    if own is not None:
        object.__setattr__(new, "__dict__", _frozen_attributes(own, value.__dataclass_fields__, known))
    for field in dataclasses.fields(value):
        if own is None or field.name not in own:
            object.__setattr__(new, field.name, deep_frozen(getattr(value, field.name), known=known))  # a slot
    return new


def slot_setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    """A function setting slot ``name`` of an instance of ``cls``, bypassing ``cls.__setattr__``.

    The slot's member descriptor's own ``__set__`` (or the getset descriptor's of an instance's ``__dict__``;
    0.7k instructions against
    ``object.__setattr__``'s 1.1k, which looks the descriptor up first), or
    that general call where ``cls`` keeps ``name`` elsewhere (another layout
    of a dependency's class). For the hot paths that build immutable
    objects the way their class's ``__new__`` would (ids, stored copies).
    """
    descriptor = vars(cls).get(name)
    if descriptor is not None and type(descriptor).__name__ in ("member_descriptor", "getset_descriptor"):
        return descriptor.__set__  # type: ignore[no-any-return]
    return lambda obj, value: object.__setattr__(obj, name, value)
