"""Encoding models to the bytes a backend stores, and back.

The stored form is the model's JSON without ``version`` (the backend keeps the
version as metadata of the record, so a compare-and-swap never has to parse the
value). Decoding checks that the record is what its key says it is; anything
else is a :class:`nbdb.CorruptRecordError`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gc
import logging
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar, cast
from uuid import UUID

import pydantic
from pydantic_core import SchemaSerializer

from nbdb import errors
from nbdb.models.base import DECODED, Model, freeze_lineage, validation_error_of
from nbdb.models.shared import EMPTY_DICT, EMPTY_LIST, FrozenSet
from nbdb.spi import Record

__all__ = ["bulk", "decode", "encode"]

M = TypeVar("M", bound=Model)

log = logging.getLogger(__name__)

_EXCLUDE = frozenset({"version"})


@contextlib.contextmanager
def bulk() -> Iterator[None]:
    """Pause the cyclic garbage collector while many decoded objects are kept.

    A cold load keeps every object it decodes, and each one allocates several
    tracked containers, so CPython's collector re-scans the growing heap over
    and over: measured here it doubled the cost of loading 20,000 ports.
    Reference counting still frees garbage; the collector runs again (and
    catches up) as soon as the block ends. A caller that disabled the
    collector itself is left as it was.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def encode(obj: Model) -> bytes:
    """The bytes stored for ``obj``."""
    form = _FORMS.get(type(obj), _UNKNOWN)
    if form is _UNKNOWN:
        form = _FORMS[type(obj)] = _stored_form(type(obj))
    if form is None:
        return obj.__pydantic_serializer__.to_json(obj, exclude=_EXCLUDE)  # type: ignore[arg-type]
    return cast(SchemaSerializer, form).to_json(obj.__dict__)


def _stored_form(model: type[Model]) -> SchemaSerializer | None:
    """A serializer of a ``model`` instance's fields (its ``__dict__``) that leaves ``version`` out.

    The same bytes as the model's serializer told to exclude ``version``, at
    half the cost: the field schemas are the model's own, but no exclude set
    is matched against every field of every write. None (the model's own
    serializer, with the exclude) for a model whose stored form depends on
    more than its fields' values: custom serializers, computed or extra
    fields, a schema of an unexpected shape.
    """
    schema = copy.deepcopy(model.__pydantic_core_schema__)
    found = _model_node(schema, model)
    if found is None:
        return None
    node, fields = found
    if "serialization" in node or fields.get("computed_fields") or _has_key(fields, "serialization"):
        return None
    config = node.get("config")
    if config is not None and config.get("extra_fields_behavior") == "allow":
        return None
    typed = {
        name: {"type": "typed-dict-field", "required": True}
        | {key: field[key] for key in _KEPT if key in field}
        | ({"serialization_exclude": True} if name in _EXCLUDE else {})
        for name, field in fields["fields"].items()
    }
    node.clear()
    node.update({"type": "typed-dict", "fields": typed})
    try:
        return SchemaSerializer(schema, config)
    except Exception:  # a schema pydantic-core will not take apart: the general path is right anyway
        log.debug("codec: %s keeps the model serializer", model.__name__, exc_info=True)
        return None


_KEPT = ("schema", "serialization_alias", "serialization_exclude", "serialization_exclude_if", "metadata")
_UNKNOWN = object()
_FORMS: dict[type[Model], object] = {}


def _model_node(schema: object, model: type[Model]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``model``'s own node in a core schema (it may be wrapped, by validators or definitions), and its fields."""
    if isinstance(schema, dict):
        if schema.get("type") == "model" and schema.get("cls") is model:
            inner = schema.get("schema")
            if isinstance(inner, dict) and inner.get("type") == "model-fields":
                return schema, inner
            return None
        values: Iterable[object] = schema.values()
    elif isinstance(schema, list):
        values = schema
    else:
        return None
    for value in values:
        found = _model_node(value, model)
        if found is not None:
            return found
    return None


def _has_key(schema: object, key: str) -> bool:
    if isinstance(schema, dict):
        return key in schema or any(_has_key(v, key) for v in schema.values())
    if isinstance(schema, list):
        return any(_has_key(v, key) for v in schema)
    return False


def decode(model: type[M], record: Record, *, share: bool = True) -> M:
    """The model stored in ``record``; CorruptRecordError if the bytes are not one.

    Decoding is a pure function of the record and models are immutable, so
    recent results are shared: when many caches and watches in one process
    receive the same change, only the first pays for validation. Bulk reads
    (a list, a cache's load) pass ``share=False``: each record is decoded
    once, and the memo would only churn.
    """
    value = record.value
    if value is not None and type(value) is model:
        # Validated by the Database that wrote it, and immutable: share it.
        return value
    decoder = _decode_shared if share else _decode
    return cast(M, decoder(model, record.table, record.id, record.topic, record.version, record.data))


def _decode(model: type[M], table: str, id: UUID, topic: str | None, version: int, data: bytes) -> M:
    try:
        # The model's validator itself: model_validate_json adds two Python frames
        # and keyword handling around the same call (about a third of a port's decode).
        parsed = model.__pydantic_validator__.validate_json(data)
    except pydantic.ValidationError as exc:
        raise errors.CorruptRecordError(
            f"stored {table} {id} is not a valid {model.__name__}: {validation_error_of(exc, model.__name__)}",
            table=table,
        ) from None
    fields = parsed.__dict__
    if fields["id"].int != id.int or fields["topic"] != topic:  # ints: UUID's __ne__ is Python
        raise errors.CorruptRecordError(
            f"stored {table} {id} carries id {fields['id']} / topic {fields['topic']!r}, "
            f"but is stored as topic {topic!r}",
            table=table,
        )
    return _laid_out(cast(M, parsed), version)


def _laid_out(parsed: M, version: int) -> M:
    """The validated ``parsed`` as a decoded copy at ``version``, laid out to be kept.

    Built the way pydantic's ``model_construct`` builds an instance, from
    values validated already. Its attributes are filled in the model's field
    order, so CPython keeps them in a split-table dict sharing one key table
    per model (measured: a decoded port 887 B instead of 1,111 B); what many
    copies hold alike is one shared, immutable value: the ids they reference
    (a cache holds thousands of ports of one switch), empty lists and maps
    (frozen, see :mod:`nbdb.models.shared`), the fields set and the lineage.
    """
    model = type(parsed)
    obj = model.__new__(model)
    slots = obj.__dict__
    refs = _single_refs(model)
    for name, value in parsed.__dict__.items():
        if name == "version":
            slots[name] = version
        elif value is None:
            slots[name] = None
        elif name in refs:
            shared = _IDS.get(value.int)
            if shared is None:
                if len(_IDS) >= _IDS_LIMIT:
                    _IDS.clear()  # bounded: a workload that moves between parents starts over
                shared = _IDS[value.int] = value
            slots[name] = shared
        elif not value and type(value) in _EMPTY:
            slots[name] = _EMPTY[type(value)]
        else:
            slots[name] = value
    if model.nbdb_lineage_containers:
        freeze_lineage(obj)  # its references are derived from these: they must not change in place
    _set = object.__setattr__
    _set(obj, "__pydantic_fields_set__", _fields_set(model))
    _set(obj, "__pydantic_extra__", parsed.__pydantic_extra__)
    _set(obj, "__pydantic_private__", DECODED)
    return obj


@functools.cache
def _single_refs(model: type[Model]) -> frozenset[str]:
    """The fields of ``model`` that reference one object (ids that many copies share)."""
    return frozenset(spec.field for spec in model.nbdb_references if not spec.many)


@functools.cache
def _fields_set(model: type[Model]) -> set[str]:
    # Every field is in the stored JSON but the version; frozen, as every copy shares it.
    return FrozenSet(set(model.model_fields) - _EXCLUDE)


_IDS_LIMIT = 65536
_IDS: dict[int, UUID] = {}
"""Referenced ids, shared by the decoded copies that point to the same object (bounded; UUIDs are immutable)."""
_EMPTY: dict[type, object] = {list: EMPTY_LIST, dict: EMPTY_DICT}
"""The empty value every decoded copy holds for an empty list or map: one, frozen (see :mod:`nbdb.models.shared`)."""


_decode_shared = functools.lru_cache(maxsize=4096)(_decode)  # bounded: at most a few MiB of recent objects
