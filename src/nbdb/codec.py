"""Encoding models to the bytes a backend stores, and back.

The stored form is the model's JSON without ``version`` (the backend keeps the
version as metadata of the record, so a compare-and-swap never has to parse the
value). Decoding checks that the record is what its key says it is; anything
else is a :class:`nbdb.CorruptRecordError`.
"""

from __future__ import annotations

import copy
import functools
import gc
import json
import logging
import re
import types
import typing
from collections.abc import Iterable
from enum import Enum
from typing import Any, NamedTuple, TypeVar, cast
from uuid import UUID

import pydantic
import pydantic.fields
import pydantic_core
from pydantic_core import PydanticSerializationError, SchemaSerializer, SchemaValidator

from nbdb import coreschema, errors
from nbdb.models.base import (
    DECODED,
    Model,
    Reference,
    raise_interrupt,
    set_extra,
    set_fields_set,
    set_private,
    validation_error_of,
)
from nbdb.models.enums import data_type, enum_fields, newer_value
from nbdb.models.shared import EMPTY_DICT, EMPTY_LIST, FrozenDict, FrozenList, FrozenSet, deep_frozen, freeze_containers
from nbdb.spi import CheckedData, Record
from nbdb.storable import FIELD_VALIDATORS, check_storable, storable

__all__ = ["bulk", "decode", "decode_each", "encode", "from_plain", "plain"]

M = TypeVar("M", bound=Model)

log = logging.getLogger(__name__)

_EXCLUDE = frozenset({"version"})


class _Bulk:
    """:func:`bulk`'s block (a class: a generator's context manager cost ≈ 1.5 µs per commit planned)."""

    __slots__ = ("_paused",)

    def __enter__(self) -> None:
        self._paused = gc.isenabled()
        if self._paused:
            gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self._paused:
            gc.enable()


def bulk() -> _Bulk:
    """Pause the cyclic garbage collector while many decoded objects are kept (``with bulk(): ...``).

    A cold load keeps every object it decodes, and each one allocates several
    tracked containers, so CPython's collector re-scans the growing heap over
    and over: measured here it doubled the cost of loading 20,000 ports.
    Reference counting still frees garbage; the collector runs again (and
    catches up) as soon as the block ends. A caller that disabled the
    collector itself is left as it was.
    """
    return _Bulk()


def encode(obj: Model) -> bytes:
    """The bytes stored for ``obj``; ValidationError if it holds text no store can hold (:func:`check_storable`)."""
    check_storable(obj)
    form = _FORMS.get(type(obj), _UNKNOWN)
    if form is _UNKNOWN:
        form = _FORMS[type(obj)] = _stored_form(type(obj))
    try:
        if form is None:
            data = obj.__pydantic_serializer__.to_json(obj, exclude=_EXCLUDE)  # type: ignore[arg-type]
        else:
            data = cast(SchemaSerializer, form).to_json(obj.__dict__)
    except PydanticSerializationError as exc:  # text that is no Unicode (a lone surrogate), say
        raise_interrupt(exc)
        raise errors.ValidationError(f"{obj.nbdb_table} {obj.id} cannot be stored: {exc}") from None
    unknown = obj.__pydantic_extra__
    return data if not unknown else _with_unknown(data, unknown)


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
    found = coreschema.model_node(schema, model)
    if found is None:
        return None
    node, fields = found
    if "serialization" in node or fields.get("computed_fields") or coreschema.find(fields, _serialized):
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


def _serialized(node: dict[str, Any]) -> bool | None:
    """True of a core schema node with a serializer of its own (a rule of :func:`nbdb.coreschema.find`)."""
    return True if "serialization" in node else None


_KEPT = ("schema", "serialization_alias", "serialization_exclude", "serialization_exclude_if", "metadata")
_UNKNOWN = object()
_FORMS: dict[type[Model], object] = {}


def decode(model: type[M], record: Record, *, share: bool = True) -> M:
    """The model stored in ``record``; CorruptRecordError if the bytes are not one.

    Decoding is a pure function of the record and models are immutable, so
    recent results are shared: when many caches and watches in one process
    receive the same change, only the first pays for validation. Bulk reads
    (a list, a cache's load) use :func:`decode_each`, which decodes each
    record once: the memo would only churn.
    """
    value = record.value
    if value is not None and type(value) is model:
        # Validated by the Database that wrote it, and immutable: share it.
        return value
    decoder = _decode_shared if share else _decode
    return cast(M, decoder(model, record.table, record.id, record.topic, record.version, record.data, record.written))


def decode_each(model: type[M], records: Iterable[Record]) -> list[M | errors.CorruptRecordError]:
    """``decode(model, record, share=False)`` of each of ``records``, in order, for a list or a cache's load.

    A record that is not a ``model`` gives the CorruptRecordError its decode
    raises, in its place (returned, not raised): it spoils its own entry
    only, and the caller decides (a list raises the first, a cache keeps the
    last good copy). The same checks and the same copies as one by one,
    with the model's validator and layout looked up once for the batch
    rather than through three calls per record.
    """
    out: list[M | errors.CorruptRecordError] = []
    append = out.append
    validate: Any = None
    new, ids = model.__new__, _IDS
    # The private dict of each (revision, version) among these records (see below): by revision, its first
    # version's; the others by the pair.
    stamps: dict[int, dict[str, Any]] = {}
    pairs: dict[tuple[int, int], dict[str, Any]] = {}
    for record in records:
        # A record's items unpacked at once (table, id, topic, version, data, value): a named
        # tuple's attributes are a descriptor call each.
        table, listed, topic, version, data, value, written = record
        if value is not None and type(value) is model:
            append(value)
            continue
        if validate is None:
            # Looked up at the first record to decode, not before: a model pydantic has not fully
            # built (a forward reference never resolved) must not fail a load that holds none of it.
            refs, lists, maps, loose, deep, fields_set, bare, exact = _layout_of(model)
            validate = bare or model.__pydantic_validator__.validate_json
            first = next(iter(model.model_fields))  # "id": the first key of every validated dict of fields
        if (version.__class__ is not int and not isinstance(version, int)) or version < 0:
            # Another writer's: it would reach a caller, a watch or a cache as the object's version.
            append(_unversioned(table, listed, version))
            continue
        unknown = None
        try:
            parsed = validate(data)
        except pydantic.ValidationError as exc:
            try:
                known = _checked_again(model, validate, exact, data, exc)
            except Exception as raised:
                append(_raised(model, table, listed, raised))
                continue
            if isinstance(known, pydantic.ValidationError):
                append(_invalid(model, table, listed, known))
                continue
            parsed, unknown = known
        except Exception as raised:
            # A user's validator raised what pydantic lets through as it is (RuntimeError, KeyError,
            # TypeError...) on a value another writer stored: the record is not one this model reads,
            # as any other it refuses. Raised, it killed the watch or the cache that met it.
            append(_raised(model, table, listed, raised))
            continue
        fields = parsed[0] if bare else parsed.__dict__
        if fields["id"].int != listed.int or fields["topic"] != topic:
            append(_misplaced(table, listed, topic, fields))
            continue
        # The decoded copy, laid out to be kept: built the way pydantic's model_construct builds
        # an instance, from values validated already. Its attributes are filled in the model's
        # field order, so CPython keeps them in a split-table dict sharing one key table per
        # model (a decoded port 887 B instead of 1,111 B); what many copies hold alike is one
        # shared, immutable value: the ids they reference (a cache holds thousands of ports of
        # one switch), empty lists and maps (frozen, see nbdb.models.shared), the fields set.
        # Inline, not a function per record: 4k instructions of a 60k decode (callgrind).
        obj = new(model)
        slots = obj.__dict__
        # Into the shared key table, one key at a time: update() of an *empty* dict from a dict
        # copies the source's own key table (a combined dict, ~250 B more per port), so the first
        # field goes in alone; from then on update() inserts the others one by one, in C, with
        # the hashes the source holds (0.14 us a port less than from its items() pairs, which
        # took an iterator step, a pair and a hash per field). Same order, same values.
        slots[first] = fields[first]
        slots.update(fields)
        slots["version"] = version
        for name in refs:
            value = fields[name]
            if value is not None:
                shared = ids.get(value.int)
                if shared is None:
                    if len(ids) >= _IDS_LIMIT:
                        ids.clear()  # bounded: a workload that moves between parents starts over
                    shared = ids[value.int] = value
                slots[name] = shared
        # Every list, map and set frozen (the empty ones shared): a decoded copy is shared by the
        # readers of the process (a get's memo, the caches and watches fed by one change), so one
        # reader's change in place must not reach the others; and its references and unique values
        # are derived from its fields, which must not change under it. Inline, by the kind the
        # annotation guarantees (a frozen copy each, 0.1 us; the function's loop and type tests
        # were 0.2-0.3 us a port more), and the fields that may hold anything the general way.
        for name in lists:
            value = fields[name]
            slots[name] = FrozenList(value) if value else EMPTY_LIST
        for name in maps:
            value = fields[name]
            slots[name] = FrozenDict(value) if value else EMPTY_DICT
        if loose:
            freeze_containers(fields, slots, loose)
        if (
            deep
        ):  # and through, where one may hold a list, map, set or model inside another (see Model.nbdb_deep_fields)
            for name in deep:
                slots[name] = deep_frozen(slots[name], known=False)
        set_fields_set(obj, fields_set)
        # fields of a newer model: written back as they are
        set_extra(obj, deep_frozen(unknown, known=False) if unknown else unknown)
        # The revision that wrote it, where the store says (its compare-and-swap checks it, see
        # nbdb.spi.Put.expect_written), and the version it wrote ("_at": a copy whose version was moved
        # since, by model_copy or in place, is compared by version alone): a dict of ints, which the
        # collector never tracks, one shared by the copies of that (revision, version) decoded here (a
        # bulk load's commits wrote many: 184 B per copy less; never changed in place, see
        # Model.committed_at and Model.__setattr__); else DECODED, shared too.
        if written is None:
            set_private(obj, DECODED)
        else:
            stamp = stamps.get(written)
            if stamp is None:  # a revision's first copy here (no pair built: one commit each is common)
                stamp = stamps[written] = {"_written": written, "_at": version}
            elif stamp["_at"] != version:  # one commit wrote objects at different versions
                stamp = pairs.get((written, version))
                if stamp is None:
                    stamp = pairs[written, version] = {"_written": written, "_at": version}
            set_private(obj, stamp)
        append(obj)
    return out


def _checked_again(
    model: type[M], validate: Any, exact: Any, data: bytes, exc: pydantic.ValidationError
) -> tuple[Any, dict[str, Any] | None] | pydantic.ValidationError:
    """What a record ``validate`` refused is: its fields (and a newer model's, see :func:`_known_fields`), or the error.

    Decided by the model's own checks (``exact``) where ``validate`` has fast
    ones (see :func:`_with_canonical_patterns`): the same values, but an error
    worded otherwise; and were they ever stricter, the record is still read.
    """
    if exact is not None:
        try:
            return exact(data), None
        except pydantic.ValidationError as again:
            exc = again
    known = _known_fields(model, exact or validate, data, exc)
    return exc if known is None else known


def _known_fields(
    model: type[M], validate: Any, data: bytes, exc: pydantic.ValidationError
) -> tuple[Any, dict[str, Any]] | None:
    """The record validated without the fields ``model`` does not have, and those fields; None if not only they fail.

    A rolling upgrade runs two versions of a model at once: a record a newer
    version wrote, with a field this one lacks, is read with the fields it
    knows, and the others go back into the record on every write of the copy
    (see :func:`encode`), so an older writer neither fails on it nor erases
    what it does not know. Only top-level unknown fields are taken so; any
    other error still makes the record corrupt.
    """
    found = _unknown_and_newer(model, exc, data)
    if found is None:
        return None
    names, newer = found
    try:
        document = json.loads(data)
    except ValueError:
        return None
    if type(document) is not dict:
        return None
    unknown: dict[str, Any] = {name: document.pop(name) for name in names if name in document}
    # The fields holding newer values as stored, each newer value its member: validated as they are (below).
    holding = {loc[0]: copy.deepcopy(document[loc[0]]) for loc, _, _ in newer}
    for loc, enum, text in newer:
        _at(holding, loc, newer_value(enum, text))
        _at(document, loc, next(iter(enum)).value)  # a member in its place, for the other fields' checks
    try:
        parsed = validate(json.dumps(document, separators=(",", ":")))
    except pydantic.ValidationError:
        return None
    if newer:
        parsed = _with_newer(model, parsed, newer, holding)
        if parsed is None:
            return None
    _note_unknown(model, unknown)
    return parsed, unknown


def _unknown_and_newer(
    model: type[Model], exc: pydantic.ValidationError, data: bytes
) -> tuple[list[str], list[tuple[tuple[Any, ...], type[Enum], Any]]] | None:
    """The top-level fields ``exc`` found the model does not have, and the newer schema's enum values it found
    (where, the field's enum, the text); None if anything else failed too.

    A value outside its field's enum is a newer schema's only where the store says its schema checked it
    (:class:`nbdb.spi.CheckedData`): in a field of an enum (a ``StrEnum``, an ``IntEnum``...), itself or
    an item of a list or a map's value, of the enum's data type (text, an integer, a number), and among
    the values the record's ``admitted`` names for that field (as text).
    """
    admitted = data.admitted if type(data) is CheckedData else None
    names: list[str] = []
    newer: list[tuple[tuple[Any, ...], type[Enum], Any]] = []
    for problem in exc.errors(include_url=False):
        loc, kind = problem["loc"], problem["type"]
        if kind == "extra_forbidden" and len(loc) == 1:
            names.append(str(loc[0]))
            continue
        values = None if admitted is None or kind != "enum" or not loc else admitted.get(str(loc[0]))
        enum = None if values is None else _enum_of(model, str(loc[0]))
        value = None if enum is None else _as_data(enum, problem.get("input"))
        if enum is None or values is None or value is None or str(value) not in values or len(loc) > 2:
            return None
        newer.append((loc, enum, value))
    return names, newer


def _enum_of(model: type[Model], name: str) -> type[Enum] | None:
    """The enum of field ``name`` of ``model`` (of its items or values), or None."""
    return enum_fields(model).get(name)


def _as_data(enum: type[Enum], value: Any) -> Any:
    """A record's ``value`` as a value of ``enum``'s data type (text, an integer, a real), or None if it is none.

    A JSON number is a real's value whatever its spelling (``2`` is ``2.0``); a boolean is no integer.
    """
    kind, given = data_type(enum), type(value)
    if kind is str:
        return value if given is str else None
    if kind is object:  # a plain Enum: its values are what its members hold
        return value if given is str or given is int or given is float else None
    if kind is int:
        return value if given is int else None
    return float(value) if given is int or given is float else None


def _at(document: dict[str, Any], loc: tuple[Any, ...], value: Any) -> None:
    """Put ``value`` where ``loc`` (a field, or a field and an index or key in it) points in ``document``."""
    if len(loc) == 1:
        document[loc[0]] = value
    else:
        document[loc[0]][loc[1]] = value


def _with_newer(
    model: type[M], parsed: Any, newer: list[tuple[tuple[Any, ...], type[Enum], Any]], holding: dict[str, Any]
) -> Any:
    """``parsed`` (as ``validate`` returned it) with the fields ``holding`` newer values validated again as stored.

    The fields holding newer values are validated from the record's values with each newer member in
    its place (pydantic takes an instance of the enum as any member): the model's own validation (its
    validators too, one that sorts or dedupes a list among them) sees the real values, as a
    ``replace()`` of the copy will, never a stand-in whose place they moved. None if it refuses them.
    """
    fields = dict(parsed[0] if type(parsed) is tuple else parsed.__dict__)
    fields.update(holding)
    try:
        obj = model.__pydantic_validator__.validate_python(fields)
    except pydantic.ValidationError:
        return None
    for loc, _, text in newer:
        _note_newer(model, str(loc[0]), text)
    return (obj.__dict__, None, None) if type(parsed) is tuple else obj


_NEWER_SEEN: set[tuple[type[Model], str, str]] = set()


def _note_newer(model: type[Model], name: str, text: str) -> None:
    if (model, name, text) not in _NEWER_SEEN and len(_NEWER_SEEN) < 1024:
        _NEWER_SEEN.add((model, name, text))
        log.warning(
            "stored %s records hold %s = %r, which %s's enum does not know and the store's schema admits "
            "(a newer schema's): read as that text, and kept as it is on write",
            model.nbdb_table,
            name,
            text,
            model.__name__,
        )


def _unknown_names(exc: pydantic.ValidationError) -> list[str] | None:
    """The top-level fields ``exc`` found the model does not have; None if anything else failed too."""
    problems = exc.errors(include_url=False, include_input=False)
    if any(p["type"] != "extra_forbidden" or len(p["loc"]) != 1 for p in problems):
        return None
    return [str(p["loc"][0]) for p in problems]


def _note_unknown(model: type[Model], unknown: dict[str, Any]) -> None:
    for name in unknown:
        if (model, name) not in _UNKNOWN_SEEN and len(_UNKNOWN_SEEN) < 1024:
            _UNKNOWN_SEEN.add((model, name))
            log.warning(
                "stored %s records hold a field %r that %s does not have (written by a newer version of the model?): "
                "read without it, and kept as it is on write",
                model.nbdb_table,
                name,
                model.__name__,
            )


def plain(obj: Model) -> dict[str, Any]:
    """``obj``'s content as JSON values, every field but ``version``, with a newer model's fields it was read with.

    What ``nbdb dump`` writes and ``nbdb copy`` and ``verify`` compare: a
    backup or a migration run by an older version must not erase what a
    newer one stored (see :func:`from_plain`).
    """
    try:
        data = obj.model_dump(mode="json", exclude=_VERSION)
    except PydanticSerializationError as exc:  # a field serializer of the caller's that failed
        raise_interrupt(exc)
        raise errors.ValidationError(f"{obj.nbdb_table} {obj.id} cannot be written out: {exc}") from None
    unknown = obj.__pydantic_extra__
    if unknown:
        for name, value in unknown.items():
            data.setdefault(name, value)
    return data


def from_plain(model: type[M], data: dict[str, Any]) -> M:
    """A ``model`` from :func:`plain` content, keeping top-level fields it does not have as a read keeps them.

    ValidationError if anything else is wrong with ``data``.
    """
    try:
        return model.__pydantic_validator__.validate_python(data)  # type: ignore[no-any-return]
    except pydantic.ValidationError as exc:
        names = _unknown_names(exc)
        if names is None:
            raise validation_error_of(exc, model.__name__) from None
        unknown = {name: data[name] for name in names if name in data}
        try:
            obj = model.__pydantic_validator__.validate_python({k: v for k, v in data.items() if k not in unknown})
        except pydantic.ValidationError as again:
            raise validation_error_of(again, model.__name__) from None
    if not storable(unknown):
        raise errors.ValidationError(
            f"{model.__name__} {obj.id}: a field it does not have holds a value no store can hold"
        )
    _note_unknown(model, unknown)
    object.__setattr__(obj, "__pydantic_extra__", unknown)
    return obj  # type: ignore[no-any-return]


_VERSION = {"version"}


_UNKNOWN_SEEN: set[tuple[type[Model], str]] = set()


def _with_unknown(data: bytes, unknown: dict[str, Any]) -> bytes:
    """``data`` (a record's JSON) with the fields of a newer model that its copy was read with."""
    document = json.loads(data)
    for name, value in unknown.items():
        document.setdefault(name, value)
    return json.dumps(document, separators=(",", ":")).encode()


def _decode(
    model: type[M], table: str, id: UUID, topic: str | None, version: int, data: bytes, written: int | None = None
) -> M:
    # One record through decode_each: the checks and the copy are written once, for both.
    (got,) = decode_each(model, (_new_tuple(Record, (table, id, topic, version, data, None, written)),))
    if type(got) is errors.CorruptRecordError:
        raise got
    return cast(M, got)


_SHOWN_TEXT = 300
"""At most this many characters of a stored reference's text are shown in a corrupt record's message."""


def _invalid(model: type[Model], table: str, id: UUID, exc: pydantic.ValidationError) -> errors.CorruptRecordError:
    return errors.CorruptRecordError(
        f"stored {table} {id} is not a valid {model.__name__}: {validation_error_of(exc, model.__name__)}"
        f"{_stored_references(model, exc)}",
        table=table,
    )


def _stored_references(model: type[Model], exc: pydantic.ValidationError) -> str:
    """What a record held instead of an id in its reference fields (empty if nothing).

    A store that maps another writer's rows may find no one id to give a reference (OVSDB: a port
    in two switches' ``ports`` sets) and write there what it found ("held by 2 parents: <ids>");
    the message said only "switch: Input should be a valid UUID, invalid length: found 93", not
    which parents. A reference's text holds ids, nothing secret, so it is shown (cut short).
    """
    fields = {ref.field for ref in model.nbdb_references}
    shown = []
    for error in exc.errors(include_url=False):
        loc, value = error["loc"], error.get("input")
        if loc and loc[0] in fields and type(value) is str:
            text = value if len(value) <= _SHOWN_TEXT else value[:_SHOWN_TEXT] + "..."
            shown.append(f"{'.'.join(str(p) for p in loc)} holds {text!r}")
    return f" ({'; '.join(shown)})" if shown else ""


def _raised(model: type[Model], table: str, id: UUID, exc: Exception) -> errors.CorruptRecordError:
    corrupt = errors.CorruptRecordError(
        f"stored {table} {id} is not a valid {model.__name__}: its validation raised {type(exc).__name__}: {exc}",
        table=table,
    )
    corrupt.__cause__ = exc
    return corrupt


class Damage(str):
    """What a backend read in place of a record's version, in words: the record is damaged (another writer's).

    A backend lists such a record with this as its version (so that a list can skip it and a cache
    load around it), and the decode reports it as that record's corruption with these words. A raw
    marker there (Redis's ``WRONGTYPE``) made the message "has version b'WRONGTYPE'", which named
    neither the key nor what was wrong with it.
    """

    __slots__ = ()


def _unversioned(table: str, id: UUID, version: object) -> errors.CorruptRecordError:
    if isinstance(version, Damage):
        return errors.CorruptRecordError(f"stored {table} {id} is damaged: {version}", table=table)
    return errors.CorruptRecordError(
        f"stored {table} {id} has version {version!r}, not a whole number >= 0", table=table
    )


def _misplaced(table: str, id: UUID, topic: str | None, fields: dict[str, Any]) -> errors.CorruptRecordError:
    return errors.CorruptRecordError(
        f"stored {table} {id} carries id {fields['id']} / topic {fields['topic']!r}, but is stored as topic {topic!r}",
        table=table,
    )


class _Layout(NamedTuple):
    """What a decoded copy of one model shares, found once per model (see :func:`_layout_of`)."""

    refs: tuple[str, ...]
    """The fields that reference one object: their ids are shared between copies."""
    lists: tuple[str, ...]
    """The fields that always hold a list once validated (see :func:`_container_kind`): frozen in a copy."""
    maps: tuple[str, ...]
    """The fields that always hold a dict once validated: frozen in a copy."""
    loose: tuple[str, ...]
    """The other fields that may hold a list, map or set (any but a plain scalar one): looked at copy by copy."""
    deep: tuple[str, ...]
    """The fields frozen through (``Model.nbdb_deep_fields``, but the version): empty for a model of flat fields."""
    fields_set: set[str]
    bare: Any
    """``validate_json`` of the model's fields alone, or None (see :func:`_fields_validator`)."""
    exact: Any
    """The same without the fast checks, for the error a record that fails them gets; None if ``bare`` has none."""


_LAYOUTS: dict[type[Model], _Layout] = {}


def _layout_of(model: type[Model]) -> _Layout:
    layout = _LAYOUTS.get(model)
    if layout is None:
        refs = tuple(spec.field for spec in model.nbdb_references if not spec.many)
        kept = (name for name in model.model_fields if name not in refs and name not in _EXCLUDE)
        containers = [name for name in kept if not _scalar(model, name)]
        kinds = {name: _container_kind(model, name) for name in containers}
        lists = tuple(name for name in containers if kinds[name] is list)
        maps = tuple(name for name in containers if kinds[name] is dict)
        loose = tuple(name for name in containers if kinds[name] is None)
        # Every field is in the stored JSON but the version; frozen, as every copy shares it.
        fields_set = FrozenSet(set(model.model_fields) - _EXCLUDE)
        fast = _fields_validator(model, fast=True)
        exact = _fields_validator(model) if fast is not None and fast[1] else None
        layout = _LAYOUTS[model] = _Layout(
            refs,
            lists,
            maps,
            loose,
            tuple(name for name in model.nbdb_deep_fields if name not in _EXCLUDE),
            fields_set,
            None if fast is None else fast[0],
            None if exact is None else exact[0],
        )
    return layout


def _container_kind(model: type[Model], name: str) -> type | None:
    """``list`` or ``dict`` if field ``name`` of ``model`` holds exactly one once validated from JSON; None if unsure.

    Decided as :func:`_scalar` decides, from the annotation alone: ``list[...]``
    or ``dict[...]`` (not optional, no other member of a union), constrained
    only by plain metadata, no validator of the model or the field, and a
    default that is one too (or none).
    """
    if not _unvalidated(model, name):
        return None
    field = model.model_fields[name]
    annotation = field.annotation
    while typing.get_origin(annotation) is typing.Annotated:
        annotation, *metadata = typing.get_args(annotation)
        if not all(_harmless(item) for item in metadata):
            return None
    kind = typing.get_origin(annotation) or annotation
    if kind not in (list, dict) or not all(_harmless(item) for item in field.metadata):
        return None
    if field.default_factory is not None and field.default_factory is not kind:
        return None
    if field.default is not pydantic_core.PydanticUndefined and type(field.default) is not kind:
        return None
    return kind


def _fields_validator(model: type[Model], fast: bool = False) -> tuple[Any, bool] | None:
    """``validate_json`` of ``model``'s fields without the instance pydantic builds around them; None if not the same.

    A decode lays its own copy out (see :func:`decode_each`): the instance the
    model's validator builds, its dict and its fields set were made to be
    dropped. The model's ``model-fields`` schema, with the model's config,
    checks the same fields the same way and returns ``(fields, extra, fields
    set)``. Only a model whose schema is that node and nothing around it (no
    model validator, custom ``__init__``, ``model_post_init``, root model)
    takes it; any other keeps the model's validator. With ``fast``, strings
    with a canonical pattern are checked by it first (see
    :func:`_with_canonical_patterns`); the second item says whether any was.
    """
    schema = copy.deepcopy(model.__pydantic_core_schema__)
    found = coreschema.model_node(schema, model)
    if found is None or found[0] is not schema:
        return None
    node, fields = found
    if node.get("custom_init") or node.get("root_model") or node.get("post_init") or fields.get("computed_fields"):
        return None
    config = node.get("config")
    settings = config or {}
    # pydantic-core changes a string (to upper or lower case, stripped) after its pattern matched it, and
    # before the function sees it: the pattern's answer could then differ from the function's.
    if (
        fast
        and settings.get("regex_engine", "rust-regex") == "rust-regex"
        and not any(settings.get(name) for name in _STR_CHANGES)
    ):
        plain = copy.deepcopy(fields)
        if _with_canonical_patterns(fields):
            try:
                return SchemaValidator(fields, config).validate_json, True
            except Exception:  # a pattern the Rust engine will not take: the checks as the model has them
                log.debug("codec: %s decodes without its canonical patterns", model.__name__, exc_info=True)
                fields = plain
    try:
        return SchemaValidator(fields, config).validate_json, False
    except Exception:  # a schema pydantic-core will not take apart (a definition it refers to): the model's
        log.debug("codec: %s decodes through its model validator", model.__name__, exc_info=True)
        return None


_STR_CHANGES = ("str_to_upper", "str_to_lower", "str_strip_whitespace")
"""Config settings under which pydantic-core hands a validator function another string than a pattern checked."""


def _with_canonical_patterns(schema: object) -> bool:
    """Give each check of a string by a function with a canonical pattern a first try by that pattern, in Rust.

    A validator function may say, as its ``__nbdb_canonical__`` (a compiled
    pattern), which strings it returns unchanged: those it matches whole (a
    port's usual ``MAC IP`` address, say). Such a check (the function after a
    plain ``str``) becomes a union tried left to right: the string if the
    pattern matches it whole, else the function as before. The same values
    for every input; only the wording of an error may differ, which is why a
    record that fails is checked again by the model's own schema for its
    error (see :func:`decode_each`). In place; whether anything changed.
    """
    changed = []

    def rewrite(node: dict[str, Any]) -> object:
        function = node.get("function")
        canonical = getattr(function.get("function"), "__nbdb_canonical__", None) if type(function) is dict else None
        if (
            node.get("type") == "function-after"
            and function.get("type") == "no-info"  # type: ignore[union-attr]
            and isinstance(canonical, re.Pattern)
            and type(canonical.pattern) is str
            and canonical.flags == re.UNICODE
            and set(node) <= {"type", "function", "schema", "metadata"}
            and node.get("schema") == {"type": "str"}
        ):
            checked = dict(node)
            node.clear()
            node.update(
                pydantic_core.core_schema.union_schema(
                    [pydantic_core.core_schema.str_schema(pattern=f"^(?:{canonical.pattern})$"), checked],
                    mode="left_to_right",
                )
            )
            changed.append(node)
            return coreschema.PRUNE
        return None

    coreschema.find(schema, rewrite)
    return bool(changed)


def _unvalidated(model: type[Model], name: str) -> bool:
    """Whether no validator of ``model`` (of the model, or of field ``name``) may change what the field holds."""
    decorators = model.__pydantic_decorators__
    if decorators.model_validators or decorators.root_validators or decorators.validators:
        return False
    return not any(name in info.info.fields or "*" in info.info.fields for info in decorators.field_validators.values())


def _scalar(model: type[Model], name: str) -> bool:
    """Whether field ``name`` of ``model`` never holds a list or a dict once validated.

    Decided from its annotation alone, conservatively: classes other than
    ``list``, ``dict`` and their bases, optionally None, constrained only by
    plain metadata (bounds, lengths, patterns), and no validator of the model
    or the field that could return something else. Anything else is looked
    at copy by copy, as every field once was.
    """
    if not _unvalidated(model, name):
        return False
    field = model.model_fields[name]
    return _plain(field.annotation) and all(_harmless(item) for item in field.metadata)


def _plain(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        inner, *metadata = typing.get_args(annotation)
        return _plain(inner) and all(_harmless(item) for item in metadata)
    if origin in (typing.Union, types.UnionType):
        return all(_plain(arg) for arg in typing.get_args(annotation))
    try:
        return (
            isinstance(annotation, type)
            and origin is None
            and annotation is not typing.Any  # a class since Python 3.11
            and not issubclass(list, annotation)
            and not issubclass(dict, annotation)
            and not issubclass(annotation, (list, dict))
        )
    except TypeError:  # a class that refuses subclass checks (a TypedDict): not known to be plain
        return False


def _harmless(item: Any) -> bool:
    """Metadata that constrains a value without replacing it (no validator function of its own)."""
    if isinstance(item, pydantic.fields.FieldInfo):
        return all(_harmless(inner) for inner in item.metadata)
    if isinstance(item, Reference):
        return True  # JSON goes straight to the UUID validator (see Reference)
    return not isinstance(item, FIELD_VALIDATORS) and not hasattr(item, "__get_pydantic_core_schema__")


_new_tuple = tuple.__new__
"""A Record built without its Python ``__new__``."""

_IDS_LIMIT = 65536
_IDS: dict[int, UUID] = {}
"""Referenced ids, shared by the decoded copies that point to the same object (bounded; UUIDs are immutable)."""


_decode_shared = functools.lru_cache(maxsize=4096)(_decode)  # bounded: at most a few MiB of recent objects
