"""The cache's replica: objects by id and the index buckets on their fields, kept by the apply thread.

A projected cache's partial views are kept and indexed the same way. An
index bucket holds the object itself when one object holds its value (a
name), or a dict from id to object once several share it (the ports of a
switch): a lookup returns the objects without a second lookup by id, and a
bucket costs no more than the ids it replaces. A None value is indexed only
in the fields a ``find()`` asked None of (:func:`index_nulls`). Only the
cache's apply thread changes them (and ``index_nulls``, under the same lock);
readers read without a lock (see :meth:`nbdb.Cache.find`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from itertools import repeat
from operator import attrgetter, is_
from typing import Any
from uuid import UUID

from nbdb.models.base import Model
from nbdb.projection import PartialView

__all__ = [
    "Bucket",
    "Buckets",
    "Indexes",
    "bucket_objects",
    "index",
    "index_all",
    "index_nulls",
    "matches",
    "reindex",
    "unindex",
]

Item = Model | PartialView
"""What a cache holds for an object: the model, or a partial view of it."""

Bucket = Item | dict[int, Item]
"""The objects that hold one value of one field: one object, or several by id (its ``int``, hashed in C)."""

Buckets = dict[Any, Bucket]
"""One field's index: value -> its bucket."""

Indexes = dict[str, Buckets]
"""A model's indexes, by field."""

_COLLECTIONS = (list, tuple, set, frozenset)
_NULL = (None,)
"""What :func:`_values` gives for a None value."""


def _values(obj: Item, field: str) -> Collection[Any]:
    """The values under which ``obj`` is indexed for ``field`` (a collection field: each member)."""
    value = getattr(obj, field)
    return value if isinstance(value, _COLLECTIONS) else (value,)


def _add(buckets: Buckets, values: Collection[Any], obj: Item) -> None:
    key = obj.id.int  # type: ignore[union-attr]  # a partial view has the id too
    for value in values:
        _add_one(buckets, value, key, obj)


def _add_one(buckets: Buckets, value: Any, key: int, obj: Item) -> None:
    """Index ``obj``, whose id's integer is ``key``, under ``value``.

    Ids are compared and hashed as their integers: UUID's ``__eq__`` and
    ``__hash__`` are Python, and a cold load indexes every field of every object.
    """
    bucket = buckets.get(value)
    if bucket is None:
        buckets[value] = obj
    elif type(bucket) is dict:
        bucket[key] = obj
    elif bucket.id.int == key:  # type: ignore[union-attr]
        buckets[value] = obj  # a newer copy of the same object
    else:
        buckets[value] = {bucket.id.int: bucket, key: obj}  # type: ignore[union-attr, dict-item]


def _drop(buckets: Buckets, values: Collection[Any], key: int) -> None:
    for value in values:
        bucket = buckets.get(value)
        if bucket is None:
            continue
        if type(bucket) is not dict:
            if bucket.id.int == key:  # type: ignore[union-attr]
                del buckets[value]
            continue
        bucket.pop(key, None)
        if len(bucket) == 1:
            buckets[value] = next(iter(bucket.values()))
        elif not bucket:
            del buckets[value]


def index(indexes: Indexes, obj: Item, nulls: Collection[str] = ()) -> None:
    """Add ``obj`` to each of its model's indexes (a None value only in the fields of ``nulls``)."""
    key = obj.id.int  # type: ignore[union-attr]  # a partial view has the id too
    for field, buckets in indexes.items():
        value = getattr(obj, field)
        if value is None:
            if field in nulls:
                _add_one(buckets, None, key, obj)
        elif isinstance(value, _COLLECTIONS):
            _add(buckets, value, obj)
        else:  # a plain field's one value, without a tuple for it: a cold load indexes every field of every object
            bucket = buckets.get(value)
            if bucket is None:  # the common cases inline (a name; a switch's ports): a call less per field
                buckets[value] = obj
            elif type(bucket) is dict:
                bucket[key] = obj
            else:
                _add_one(buckets, value, key, obj)


_ID_INT = attrgetter("id.int")
_NONE = type(None)
_PLAIN = frozenset({str, int, UUID, _NONE})
"""Value types :func:`index_all` groups as they are (anything else is indexed one object at a time)."""
_ID_KINDS = frozenset({UUID, _NONE})
_INT = attrgetter("int")


def index_all(
    indexes: Indexes, objs: Sequence[Item], nulls: Collection[str] = (), keys: Sequence[int] | None = None
) -> None:
    """:func:`index` of each of ``objs`` in turn, field by field: a cache's first load.

    The same buckets (a test holds them equal), with fewer Python steps per
    object, which a cold load pays for every indexed field of every object:
    a field whose values are all None (and not indexed as None) is passed
    over in one C call; a field whose values are all different (a name)
    fills its buckets in one call; a field whose values many objects share
    (a port's switch) groups them first, ids by their integer and other
    values by the value *object* (both hashed in C, a UUID's own
    ``__hash__`` is Python), then looks each value up once. Collections, other types and buckets that already hold
    something take :func:`index`'s way. ``objs`` holds each id once; ``keys``, if
    given, are their ids' integers, in order (a load that read them already).
    """
    if not objs:
        return
    count = len(objs)
    if keys is None:
        keys = list(map(_ID_INT, objs))
    for field, buckets in indexes.items():
        values = list(map(attrgetter(field), objs))
        keep_none = field in nulls
        kinds = set(map(type, values))
        # Counted by identity: list.count(None) calls UUID's __eq__ (Python) on every id.
        nones = sum(map(is_, values, repeat(None))) if _NONE in kinds else 0
        if nones == count and not keep_none:
            continue
        if buckets or not _PLAIN.issuperset(kinds):
            for value, key, obj in zip(values, keys, objs, strict=True):
                if value is None:
                    if keep_none:
                        _add_one(buckets, None, key, obj)
                elif isinstance(value, _COLLECTIONS):
                    for member in value:
                        _add_one(buckets, member, key, obj)
                else:
                    _add_one(buckets, value, key, obj)
            continue
        # Ids are grouped by their integers, the rest by the identity of the value object: a UUID's
        # __hash__ is Python, an int's and an identity's are C (equal ids held as distinct objects,
        # as stored copies of the memory backend hold them, make one group; one per target).
        if kinds <= _ID_KINDS:
            idents: list[Any] = list(map(_INT, values)) if not nones else [v if v is None else v.int for v in values]
            distinct = len(set(idents)) == count
        else:
            idents, distinct = list(map(id, values)), True
        if (keep_none or not nones) and distinct:
            unique = dict(zip(values, objs, strict=True))
            if len(unique) == count:  # every value held by one object
                buckets.update(unique)
                continue
        groups: dict[Any, dict[int, Item]] = {}  # the value's group key -> the objects holding that value
        for ident, key, obj in zip(idents, keys, objs, strict=True):
            group = groups.get(ident)
            if group is None:
                groups[ident] = {key: obj}
            else:
                group[key] = obj
        held = dict(zip(idents, values, strict=True))  # a value object of each group
        for ident, group in groups.items():
            value = held[ident]
            if value is None and not keep_none:
                continue
            if len(group) > 1 and value not in buckets:
                buckets[value] = group
            else:  # one object, or a value equal to one seen already under another object
                for key, obj in group.items():
                    _add_one(buckets, value, key, obj)


def unindex(indexes: Indexes, obj: Item) -> None:
    """Remove ``obj`` from each of its model's indexes."""
    for field, buckets in indexes.items():
        _drop(buckets, _values(obj, field), obj.id.int)  # type: ignore[union-attr]


def reindex(indexes: Indexes, old: Item, new: Item, nulls: Collection[str] = ()) -> None:
    """Replace ``old`` by ``new``, a later copy of the same object, in each index.

    Where the field kept its values (most fields of most updates) the buckets
    only swap the object they hold. A None value is indexed only in the fields
    of ``nulls`` (dropping one that is not there is a no-op).
    """
    for field, buckets in indexes.items():
        before, after = _values(old, field), _values(new, field)
        if before != after:
            _drop(buckets, before, old.id.int)  # type: ignore[union-attr]
        if after != _NULL or field in nulls:
            _add(buckets, after, new)


def index_nulls(buckets: Buckets, objects: Iterable[Item], field: str) -> None:
    """Add the objects whose ``field`` is None to that field's index (see :func:`index`'s ``nulls``).

    A cache indexes a field's None values from the first ``find()`` that asks
    for them: most optional references (a port's chassis, its DHCP options) are
    None in most objects, and one bucket holding every such object cost each
    cached port three dictionary entries and ≈ 1.2 µs of its cold load, for a
    lookup few callers make.
    """
    for obj in objects:
        if getattr(obj, field) is None:
            _add_one(buckets, None, obj.id.int, obj)  # type: ignore[union-attr]


def bucket_objects(bucket: Bucket) -> list[Any]:
    """The objects of a bucket, as a new list (one step under the GIL: a consistent read)."""
    return list(bucket.values()) if type(bucket) is dict else [bucket]


def matches(obj: Item, field: str, value: Any) -> bool:
    """Whether ``obj``'s field equals ``value`` (a list field: contains it)."""
    attr = getattr(obj, field)
    if isinstance(attr, list) and not isinstance(value, list):
        return value in attr
    return bool(attr == value)
