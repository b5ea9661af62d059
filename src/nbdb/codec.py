"""Encoding models to the bytes a backend stores, and back.

The stored form is the model's JSON without ``version`` (the backend keeps the
version as metadata of the record, so a compare-and-swap never has to parse the
value). Decoding checks that the record is what its key says it is; anything
else is a :class:`nbdb.CorruptRecordError`.
"""

from __future__ import annotations

from typing import TypeVar

from nbdb import errors
from nbdb.models.base import Model
from nbdb.spi import Record

__all__ = ["decode", "encode"]

M = TypeVar("M", bound=Model)

_EXCLUDE = frozenset({"version"})


def encode(obj: Model) -> bytes:
    """The bytes stored for ``obj``."""
    return obj.__pydantic_serializer__.to_json(obj, exclude=_EXCLUDE)  # type: ignore[arg-type]


def decode(model: type[M], record: Record) -> M:
    """The model stored in ``record``; CorruptRecordError if the bytes are not one."""
    try:
        obj = model.model_validate_json(record.data)
    except errors.ValidationError as exc:
        raise errors.CorruptRecordError(
            f"stored {record.table} {record.id} is not a valid {model.__name__}: {exc}", table=record.table
        ) from None
    if obj.id != record.id or obj.topic != record.topic:
        raise errors.CorruptRecordError(
            f"stored {record.table} {record.id} carries id {obj.id} / topic {obj.topic!r}, "
            f"but is stored as topic {record.topic!r}",
            table=record.table,
        )
    # Models are frozen; the version comes from the record's metadata, set
    # the way pydantic's own model_construct() fills fields.
    obj.__dict__["version"] = record.version
    obj._stored_refs = obj.ref_keys()
    return obj
