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

from collections.abc import Collection, Iterable
from typing import Any

from nbdb.models.base import Model
from nbdb.projection import PartialView

__all__ = ["Bucket", "Buckets", "Indexes", "bucket_objects", "index", "index_nulls", "matches", "reindex", "unindex"]

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
