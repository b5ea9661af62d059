"""The cache's replica: objects by id and the index buckets on their fields, kept by the apply thread.

A projected cache's partial views are kept and indexed the same way. An
index bucket is the one id that holds a value, or a set once several
objects share it (a set per near-unique value, a name, would cost ~200 bytes
an object). Only the cache's apply thread changes them; readers read without
a lock (see :meth:`nbdb.Cache.find`).
"""

from __future__ import annotations

from typing import Any, cast
from uuid import UUID

from nbdb.models.base import Model
from nbdb.projection import PartialView

__all__ = ["Buckets", "index", "matches", "unindex"]

Buckets = dict[Any, UUID | set[UUID]]
"""One field's index: value -> the id (or ids) of the objects that hold it."""


def index(indexes: dict[str, Buckets], obj: Model) -> None:
    """Add ``obj`` to each of its model's indexes."""
    for field, buckets in indexes.items():
        for value in obj.index_values(field):
            bucket = buckets.get(value)
            if bucket is None:
                buckets[value] = obj.id
            elif type(bucket) is UUID:
                if bucket != obj.id:
                    buckets[value] = {bucket, obj.id}
            else:
                cast(set[UUID], bucket).add(obj.id)


def unindex(indexes: dict[str, Buckets], obj: Model) -> None:
    """Remove ``obj`` from each of its model's indexes."""
    for field, buckets in indexes.items():
        for value in obj.index_values(field):
            bucket = buckets.get(value)
            if bucket is None:
                continue
            if type(bucket) is UUID:
                if bucket == obj.id:
                    del buckets[value]
                continue
            ids = cast(set[UUID], bucket)
            ids.discard(obj.id)
            if len(ids) == 1:
                buckets[value] = next(iter(ids))
            elif not ids:
                del buckets[value]


def matches(obj: Model | PartialView, field: str, value: Any) -> bool:
    """Whether ``obj``'s field equals ``value`` (a list field: contains it)."""
    attr = getattr(obj, field)
    if isinstance(attr, list) and not isinstance(value, list):
        return value in attr
    return bool(attr == value)
