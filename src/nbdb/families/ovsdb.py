"""The OVSDB-transactional family: nbdb models as rows of real OVSDB tables.

A backend of this family supplies two primitives — ``_transact(db, ops)``
(one OVSDB transaction, answered by the server) and a :class:`Replica` kept
current by a monitor (``monitor_cond_since``) — and everything else is built
here: the model <-> table mapping, compare-and-swap, references, revisions,
watches and id allocation.

Mapping (see ``docs/backends/ovsdb.md``):

* A model maps to the OVSDB table of the same meaning (``LogicalSwitchPort``
  -> ``Logical_Switch_Port``, :data:`OVN_TABLES`), or, for a model without an
  OVN table, to a table of the same name in the *model database* whose schema
  :func:`generate_schema` writes. A model field maps to the column of the same
  name; a field without a column is kept as JSON in ``external_ids``
  (``nbdb:field:<name>``).
* nbdb's id *is* the row's ``_uuid``: inserts name the row uuid explicitly, and
  rows made by other clients (``ovn-nbctl``) show up with their own ``_uuid``.
* A child's reference to its parent is membership in the parent's set column
  (:data:`OVN_PARENTS`): ``LogicalSwitchPort.switch`` is ``Logical_Switch.ports``.
  Adding a child mutates the parent's set (``insert``), so concurrent adds do
  not conflict.
* ``topic``, the namespace and the bookkeeping live in ``external_ids``:
  ``nbdb:topic``, ``nbdb:ns``, ``nbdb:version`` and ``nbdb:digest``.

Versions. OVSDB's ``_version`` is a UUID and other writers (``ovn-nbctl``,
``ovn-northd``) never bump an integer, so the version of a row is derived:
every nbdb write stores the new version ``N`` and a digest of the content it
wrote. A row whose content still has that digest is at version ``N`` for every
client; a row changed by another writer since (digest mismatch) is at ``N+1``,
and each further foreign change seen by this connection bumps it again, so
versions only grow. Compare-and-swap does not trust the integer alone: an
update carries an OVSDB ``wait`` on the exact content the version was computed
from, so *any* intervening change — by nbdb or by ``ovn-nbctl`` — fails it.

Revisions. ``monitor_cond_since`` resumes from transaction-id UUIDs, not
integers, so revisions are a per-connection counter, bumped once per server
transaction the monitor delivers, starting from the connection's start time in
microseconds. A revision of another connection (another process) or one older
than the kept history raises HistoryGoneError and a cache re-lists; a monitor
that cannot resume (standalone server restarted, history trimmed) resets the
replica and ends every open stream the same way.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
import types
import typing
import uuid
from abc import abstractmethod
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, get_args, get_origin

from nbdb import errors
from nbdb.models.base import Model, all_models
from nbdb.spi import (
    ANY_VERSION,
    Backend,
    CommitResult,
    Delete,
    Put,
    Record,
    RecordChange,
    RecordStream,
    RefKey,
    Snapshot,
    WriteOp,
)

__all__ = [
    "EXT_DIGEST",
    "EXT_NAMESPACE",
    "EXT_TOPIC",
    "EXT_VERSION",
    "OVN_PARENTS",
    "OVN_TABLES",
    "ColumnType",
    "Mapping_",
    "OvsdbFamilyBackend",
    "Replica",
    "TableMap",
    "TransactError",
    "TransactUnknownOutcome",
    "build_mapping",
    "generate_schema",
]

log = logging.getLogger(__name__)

EXT_PREFIX = "nbdb:"
EXT_VERSION = "nbdb:version"
EXT_DIGEST = "nbdb:digest"
EXT_TOPIC = "nbdb:topic"
EXT_NAMESPACE = "nbdb:ns"
EXT_RAW = "nbdb:raw"
EXT_FIELD = "nbdb:field:"
EXT_COUNTER = "nbdb:id:"

OVN_TABLES: dict[str, str] = {
    "LogicalSwitch": "Logical_Switch",
    "LogicalSwitchPort": "Logical_Switch_Port",
    "LogicalRouter": "Logical_Router",
    "LogicalRouterPort": "Logical_Router_Port",
    "LogicalRouterStaticRoute": "Logical_Router_Static_Route",
    "ACL": "ACL",
    "NAT": "NAT",
    "QoS": "QoS",
    "AddressSet": "Address_Set",
    "PortGroup": "Port_Group",
    "LoadBalancer": "Load_Balancer",
    "DHCPOptions": "DHCP_Options",
}
"""nbdb table (model) -> ``OVN_Northbound`` table."""

OVN_PARENTS: dict[str, dict[str, tuple[str, str]]] = {
    "LogicalSwitchPort": {"switch": ("Logical_Switch", "ports")},
    "LogicalRouterPort": {"router": ("Logical_Router", "ports")},
    "LogicalRouterStaticRoute": {"router": ("Logical_Router", "static_routes")},
    "NAT": {"router": ("Logical_Router", "nat")},
    "ACL": {"switch": ("Logical_Switch", "acls"), "port_group": ("Port_Group", "acls")},
    "QoS": {"switch": ("Logical_Switch", "qos_rules")},
}
"""nbdb table -> {reference field: (parent OVSDB table, parent's set column)}."""

_COMMIT_ATTEMPTS = 8
_HISTORY = 10_000
_SYNC_SECONDS = 10.0

Row = dict[str, Any]
"""One OVSDB row as JSON datums by column name."""


class TransactError(errors.NbdbError):
    """The transport failed before the server answered (raised by ``_transact`` implementations)."""


class TransactUnknownOutcome(TransactError):
    """The connection dropped after the transaction was sent: it may or may not have committed."""


# ---------------------------------------------------------------------------- column types


@dataclass(frozen=True, slots=True)
class ColumnType:
    """The shape of one OVSDB column: key (and value) atomic types and cardinality."""

    key: str
    value: str | None
    min: int
    max: int | None  # None: unlimited

    @classmethod
    def parse(cls, spec: Any) -> ColumnType:
        """From the ``type`` member of a column in an ``.ovsschema``."""
        if isinstance(spec, str):
            return cls(spec, None, 1, 1)
        key = spec["key"]
        value = spec.get("value")
        kmax = spec.get("max", 1)
        return cls(
            key if isinstance(key, str) else key["type"],
            None if value is None else (value if isinstance(value, str) else value["type"]),
            int(spec.get("min", 1)),
            None if kmax == "unlimited" else int(kmax),
        )

    @property
    def is_map(self) -> bool:
        return self.value is not None

    @property
    def is_scalar(self) -> bool:
        return self.value is None and self.min == 1 and self.max == 1

    @property
    def is_optional(self) -> bool:
        return self.value is None and self.min == 0 and self.max == 1

    @property
    def is_set(self) -> bool:
        return self.value is None and not self.is_scalar and not self.is_optional


_DEFAULT_ATOM: dict[str, Any] = {"string": "", "integer": 0, "real": 0.0, "boolean": False}


_ESCAPE = "\ufffe"


def _esc(text: str) -> str:
    """OVSDB strings cannot hold NUL: such strings (and any starting with the marker) are stored JSON-quoted."""
    if "\x00" in text or text.startswith(_ESCAPE):
        return _ESCAPE + json.dumps(text)
    return text


def _unesc(text: Any) -> Any:
    if isinstance(text, str) and text.startswith(_ESCAPE):
        try:
            return str(json.loads(text[len(_ESCAPE) :]))
        except ValueError:
            return text
    return text


def _atom_to_json(kind: str, value: Any) -> Any:
    if kind == "uuid":
        return ["uuid", str(value)]
    if kind == "real":
        return float(value)
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise errors.ValidationError(f"expected an integer, got {value!r}")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise errors.ValidationError(f"expected a boolean, got {value!r}")
        return value
    if not isinstance(value, str):
        raise errors.ValidationError(f"expected a string, got {value!r}")
    return _esc(value)


def _atom_from_json(kind: str, datum: Any) -> Any:
    if kind == "uuid":
        if isinstance(datum, list) and len(datum) == 2 and datum[0] in ("uuid", "named-uuid"):
            return str(datum[1])
        raise ValueError(f"not a uuid atom: {datum!r}")
    if kind == "real" and isinstance(datum, int | float) and not isinstance(datum, bool):
        return float(datum)
    if kind == "string":
        return _unesc(datum)
    return datum


def _elements(datum: Any) -> list[Any]:
    """The atoms of a set datum (a bare atom is a one-element set)."""
    if isinstance(datum, list) and len(datum) == 2 and datum[0] == "set":
        return list(datum[1])
    return [datum]


def _pairs(datum: Any) -> list[tuple[Any, Any]]:
    if isinstance(datum, list) and len(datum) == 2 and datum[0] == "map":
        return [(k, v) for k, v in datum[1]]
    raise ValueError(f"not a map datum: {datum!r}")


def _sort_key(atom: Any) -> str:
    return json.dumps(atom, sort_keys=True)


def datum_to_python(ctype: ColumnType, datum: Any) -> Any:
    """A JSON datum as plain Python: scalar, None/scalar, sorted list, or dict."""
    if ctype.is_map:
        assert ctype.value is not None
        return {
            _atom_from_json(ctype.key, k): _atom_from_json(ctype.value, v)
            for k, v in sorted(_pairs(datum), key=lambda kv: _sort_key(kv[0]))
        }
    if ctype.is_scalar:
        return _atom_from_json(ctype.key, datum)
    atoms = [_atom_from_json(ctype.key, a) for a in _elements(datum)]
    if ctype.is_optional:
        return atoms[0] if atoms else None
    return sorted(set(atoms) if all(isinstance(a, str | int | float | bool) for a in atoms) else atoms, key=_sort_key)


def python_to_datum(ctype: ColumnType, value: Any) -> Any:
    """Plain Python (as :func:`datum_to_python` returns) as a JSON datum."""
    if ctype.is_map:
        assert ctype.value is not None
        if not isinstance(value, dict):
            raise errors.ValidationError(f"expected a mapping, got {value!r}")
        return ["map", [[_atom_to_json(ctype.key, k), _atom_to_json(ctype.value, v)] for k, v in sorted(value.items())]]
    if ctype.is_scalar:
        if value is None:
            return _DEFAULT_ATOM.get(ctype.key, "")
        return _atom_to_json(ctype.key, value)
    if ctype.is_optional:
        return ["set", []] if value is None else _atom_to_json(ctype.key, value)
    if not isinstance(value, list | tuple | set | frozenset):
        raise errors.ValidationError(f"expected a list, got {value!r}")
    return ["set", [_atom_to_json(ctype.key, v) for v in value]]


# ---------------------------------------------------------------------------- the mapping


@dataclass(slots=True)
class TableMap:
    """How one model maps onto one OVSDB table."""

    model: type[Model]
    db: str
    ovs_table: str
    columns: dict[str, tuple[str, ColumnType, str]]
    """field -> (column, column type, encoding: "plain" | "json" | "none")"""
    ext_fields: list[str]
    """fields kept as JSON in external_ids (no column for them)."""
    parents: dict[str, tuple[str, str]]
    """field -> (parent table, parent set column)."""
    refs: dict[str, tuple[str, str]]
    """reference field -> (target nbdb table, storage: "parent" | "column" | "ext")."""
    is_root: bool

    @property
    def table(self) -> str:
        return self.model.nbdb_table

    def monitored_columns(self) -> list[str]:
        return sorted({c for c, _, _ in self.columns.values()} | {"external_ids"})


@dataclass(slots=True)
class Mapping_:
    """The whole mapping: nbdb tables <-> OVSDB tables, and the parent links."""

    tables: dict[str, TableMap]
    by_ovs: dict[tuple[str, str], TableMap]
    links: dict[tuple[str, str], list[tuple[TableMap, str, str]]]
    """(db, parent table) -> [(child map, child field, parent set column)]."""
    schemas: dict[str, dict[str, Any]]

    def get(self, table: str) -> TableMap:
        try:
            return self.tables[table]
        except KeyError:
            raise errors.UnsupportedError(
                f"table {table!r} has no OVSDB table: neither an OVN_Northbound table nor one of the model "
                "database (serve the schema from `nbdb schema ovsdb` as a second database)"
            ) from None

    def monitor_columns(self, db: str) -> dict[str, list[str]]:
        """OVSDB table -> columns the replica of ``db`` follows."""
        out: dict[str, set[str]] = {}
        for tm in self.tables.values():
            if tm.db == db:
                out.setdefault(tm.ovs_table, set()).update(tm.monitored_columns())
        for (pdb, ptable), links in self.links.items():
            if pdb == db:
                out.setdefault(ptable, {"external_ids"}).update(col for _, _, col in links)
        return {t: sorted(c) for t, c in out.items()}


def _field_is_textual(annotation: Any) -> bool:
    """A str, enum or UUID field (stored as an OVSDB string without JSON quoting)."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _field_is_textual(get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return len(args) == 1 and _field_is_textual(args[0])
    return isinstance(annotation, type) and (issubclass(annotation, str | uuid.UUID))


def _allows_none(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _allows_none(get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return type(None) in get_args(annotation)
    return annotation is type(None) or annotation is Any


def _encoding(model: type[Model], name: str, ctype: ColumnType) -> str:
    """How a field's value is stored in a column of type ``ctype``."""
    annotation = model.model_fields[name].annotation
    if ctype.is_scalar and ctype.key == "string" and not _field_is_textual(annotation):
        # A complex value in a string column (generated schemas): JSON text.
        if not (isinstance(annotation, type) and issubclass(annotation, Enum)):
            return "json"
    return "plain"


def build_mapping(
    schemas: Mapping[str, dict[str, Any]],
    nb_db: str | None,
    model_db: str | None,
    models: Iterable[type[Model]] | None = None,
) -> Mapping_:
    """Map every model onto the served schemas (``db name -> schema JSON``)."""
    tables: dict[str, TableMap] = {}
    for model in models if models is not None else all_models():
        name = model.nbdb_table
        if nb_db is not None and name in OVN_TABLES and OVN_TABLES[name] in schemas[nb_db]["tables"]:
            db, ovs_table = nb_db, OVN_TABLES[name]
            parents = dict(OVN_PARENTS.get(name, {}))
        elif model_db is not None and name in schemas[model_db]["tables"]:
            db, ovs_table, parents = model_db, name, {}
        else:
            continue
        tschema = schemas[db]["tables"][ovs_table]
        columns: dict[str, tuple[str, ColumnType, str]] = {}
        ext_fields: list[str] = []
        for fname in model.model_fields:
            if fname in ("id", "version", "topic", "external_ids") or fname in parents:
                continue
            col = tschema["columns"].get(fname)
            if col is None:
                ext_fields.append(fname)
                continue
            ctype = ColumnType.parse(col["type"])
            columns[fname] = (fname, ctype, _encoding(model, fname, ctype))
        refs: dict[str, tuple[str, str]] = {}
        for spec in model.nbdb_references:
            if spec.field in parents:
                storage = "parent"
            elif spec.field in columns and columns[spec.field][2] == "plain" and columns[spec.field][1].key == "uuid":
                storage = "column"
            else:
                storage = "ext"  # JSON text or external_ids: checked by a scan, not atomically
            refs[spec.field] = (spec.target, storage)
        tables[name] = TableMap(
            model, db, ovs_table, columns, ext_fields, parents, refs, bool(tschema.get("isRoot", False))
        )
    by_ovs = {(tm.db, tm.ovs_table): tm for tm in tables.values()}
    links: dict[tuple[str, str], list[tuple[TableMap, str, str]]] = {}
    for tm in tables.values():
        for fname, (ptable, pcol) in tm.parents.items():
            links.setdefault((tm.db, ptable), []).append((tm, fname, pcol))
    return Mapping_(tables, by_ovs, links, dict(schemas))


# ---------------------------------------------------------------------------- rows <-> records


def _ext(row: Row) -> dict[str, str]:
    datum = row.get("external_ids")
    if datum is None:
        return {}
    try:
        return {str(_unesc(k)): str(_unesc(v)) for k, v in _pairs(datum)}
    except ValueError:
        return {}


def _unraw(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return text.encode()


def _digest(doc: Any) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class RowState:
    """What a row's version is derived from: content digest and the stored bookkeeping."""

    digest: str
    stored_version: int
    stored_digest: str


class VersionBook:
    """Derives monotonic per-object versions from row states (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, uuid.UUID], tuple[int, RowState]] = {}

    def version(self, table: str, id: uuid.UUID, state: RowState) -> int:
        """The version of ``table/id`` in ``state`` (remembered, so it only grows)."""
        with self._lock:
            prev = self._seen.get((table, id))
            if prev is not None and prev[1] == state:
                return prev[0]
            if state.digest == state.stored_digest:
                # Last written by nbdb: the stored version is the same for every client.
                version = max(state.stored_version, 1)
            else:
                # Changed by another writer since: this connection numbers the changes it sees.
                version = state.stored_version + 1 if prev is None else max(state.stored_version + 1, prev[0] + 1)
            self._seen[(table, id)] = (version, state)
            return version

    def forget(self, table: str, id: uuid.UUID) -> None:
        """The object was deleted: a re-created one starts again at version 1."""
        with self._lock:
            self._seen.pop((table, id), None)


class RowView:
    """Rows of some OVSDB tables plus the child -> parent index built from parents' set columns."""

    def __init__(self, mapping: Mapping_, db: str) -> None:
        self.mapping = mapping
        self.db = db
        self.rows: dict[str, dict[uuid.UUID, Row]] = {}
        self.parents: dict[tuple[str, uuid.UUID], dict[str, uuid.UUID]] = {}

    def put(self, table: str, id: uuid.UUID, row: Row | None) -> set[tuple[str, uuid.UUID]]:
        """Store (or with None remove) a row; return the (child table, id) whose parent link changed."""
        rows = self.rows.setdefault(table, {})
        old = rows.get(id)
        if row is None:
            rows.pop(id, None)
        else:
            rows[id] = row
        touched: set[tuple[str, uuid.UUID]] = set()
        for child, fname, col in self.mapping.links.get((self.db, table), ()):
            before = _uuid_members(old, col)
            after = _uuid_members(row, col)
            for cid in before - after:
                links = self.parents.get((child.ovs_table, cid))
                if links is not None and links.get(fname) == id:
                    del links[fname]
                touched.add((child.table, cid))
            for cid in after - before:
                self.parents.setdefault((child.ovs_table, cid), {})[fname] = id
                touched.add((child.table, cid))
        return touched

    def clear(self) -> None:
        self.rows.clear()
        self.parents.clear()


def _uuid_members(row: Row | None, column: str) -> set[uuid.UUID]:
    if row is None or column not in row:
        return set()
    out = set()
    for atom in _elements(row[column]):
        try:
            out.add(uuid.UUID(_atom_from_json("uuid", atom)))
        except (ValueError, TypeError):
            continue
    return out


@dataclass(frozen=True, slots=True)
class Doc:
    """A row rendered as a model document, before a version is assigned."""

    table: str
    id: uuid.UUID
    topic: str | None
    namespace: str | None
    state: RowState
    data: bytes


def render(tm: TableMap, id: uuid.UUID, row: Row, parents: Mapping[str, uuid.UUID]) -> Doc:
    """The model document of a row (bytes the codec decodes; garbage in, CorruptRecordError out)."""
    ext = _ext(row)
    topic = ext.get(EXT_TOPIC)
    doc: dict[str, Any] = {"id": str(id), "topic": topic}
    raw = ext.get(EXT_RAW)
    for fname, (col, ctype, enc) in tm.columns.items():
        # The IDL leaves out empty sets and maps: absent means the column's default.
        datum = row.get(col, _DEFAULT_ATOM.get(ctype.key, "") if ctype.is_scalar else ["set", []])
        if ctype.is_map and col not in row:
            datum = ["map", []]
        try:
            value = datum_to_python(ctype, datum)
        except (ValueError, TypeError, AttributeError):
            value = datum
        if enc == "json" and isinstance(value, str):
            try:
                value = json.loads(value) if value else None
            except ValueError:
                pass
        elif ctype.is_scalar and value == _DEFAULT_ATOM.get(ctype.key) and ctype.key == "string":
            info = tm.model.model_fields[fname]
            if info.default is None and _allows_none(info.annotation):
                value = None
        doc[fname] = value
    for fname in tm.ext_fields:
        text = ext.get(EXT_FIELD + fname)
        if text is not None:
            try:
                doc[fname] = json.loads(text)
            except ValueError:
                doc[fname] = text
    for fname in tm.parents:
        parent = parents.get(fname)
        doc[fname] = None if parent is None else str(parent)
    doc["external_ids"] = {k: v for k, v in ext.items() if not k.startswith(EXT_PREFIX)}
    try:
        stored_version = int(ext.get(EXT_VERSION, "0"))
    except ValueError:
        stored_version = 0
    content = {k: v for k, v in doc.items() if k != "id"}
    data = _unraw(raw) if raw is not None else json.dumps(doc, sort_keys=True).encode()
    digest = _digest(content) if raw is None else _digest(["raw", raw])
    return Doc(
        tm.table, id, topic, ext.get(EXT_NAMESPACE), RowState(digest, stored_version, ext.get(EXT_DIGEST, "")), data
    )


def _content_digest(tm: TableMap, id: uuid.UUID, row: Row, parents: Mapping[str, uuid.UUID]) -> str:
    return render(tm, id, row, parents).state.digest


def _row_for(tm: TableMap, doc: Mapping[str, Any]) -> tuple[Row, dict[str, str], dict[str, uuid.UUID | None]]:
    """Columns, external_ids (user and field keys) and parents of a model document."""
    row: Row = {}
    for fname, (col, ctype, enc) in tm.columns.items():
        value = doc.get(fname)
        if enc == "json":
            value = json.dumps(value, sort_keys=True)
        try:
            row[col] = python_to_datum(ctype, value)
        except errors.ValidationError as exc:
            raise errors.ValidationError(f"{tm.table}.{fname}: {exc}") from None
    ext = {str(k): str(v) for k, v in (doc.get("external_ids") or {}).items()}
    bad = [k for k in ext if k.startswith(EXT_PREFIX)]
    if bad:
        raise errors.ValidationError(f"external_ids keys starting with {EXT_PREFIX!r} are reserved: {bad}")
    for fname in tm.ext_fields:
        value = doc.get(fname)
        if value is not None and value != [] and value != {}:
            ext[EXT_FIELD + fname] = json.dumps(value, sort_keys=True)
    parents: dict[str, uuid.UUID | None] = {}
    for fname in tm.parents:
        value = doc.get(fname)
        parents[fname] = None if value is None else uuid.UUID(str(value))
    return row, ext, parents


# ---------------------------------------------------------------------------- the replica


@dataclass(slots=True)
class _Waiter:
    predicate: Callable[[], bool]
    done: threading.Event = field(default_factory=threading.Event)
    revision: int = 0


class Replica:
    """The monitored copy of the mapped tables, its records, and a bounded change history.

    The backend's monitor thread calls :meth:`apply` once per server
    transaction (and :meth:`reset` when the monitor could not resume); every
    other thread only reads, under ``cond``.
    """

    def __init__(self, mapping: Mapping_, versions: VersionBook, namespace: str, history: int = _HISTORY) -> None:
        self.mapping = mapping
        self.versions = versions
        self.namespace = namespace
        self.cond = threading.Condition(threading.RLock())
        self.views = {db: RowView(mapping, db) for db in {tm.db for tm in mapping.tables.values()}}
        self.records: dict[tuple[str, uuid.UUID], Record] = {}
        self.states: dict[tuple[str, uuid.UUID], RowState] = {}
        self.revision = time.time_ns() // 1000
        self.scope = object()  # the identity of this revision sequence (see Backend.revision_scope)
        self.start = self.revision
        self.oldest = self.revision
        self.history: deque[RecordChange] = deque()
        self.history_limit = history
        self.resets = 0
        self.synced: set[str] = set()
        self._waiters: list[_Waiter] = []

    def visible(self, doc: Doc) -> bool:
        """Whether the row belongs to this connection's namespace."""
        return (doc.namespace or "") == self.namespace

    def _record(self, tm: TableMap, id: uuid.UUID) -> tuple[Record, RowState] | None:
        view = self.views[tm.db]
        row = view.rows.get(tm.ovs_table, {}).get(id)
        if row is None:
            return None
        doc = render(tm, id, row, view.parents.get((tm.ovs_table, id), {}))
        if not self.visible(doc):
            return None
        if tm.parents and not any(view.parents.get((tm.ovs_table, id), {}).values()):
            # A child between its insert and its parent's update (or an orphan about to be collected).
            return None
        version = self.versions.version(tm.table, id, doc.state)
        return Record(tm.table, id, doc.topic, version, doc.data), doc.state

    def apply(self, db: str, changes: Sequence[tuple[str, uuid.UUID, Row | None]]) -> None:
        """One server transaction: ``(OVSDB table, row uuid, new row or None)`` per changed row."""
        with self.cond:
            view = self.views.get(db)
            if view is None:
                return
            affected: set[tuple[str, uuid.UUID]] = set()
            for table, id, row in changes:
                tm = self.mapping.by_ovs.get((db, table))
                if tm is not None:
                    affected.add((tm.table, id))
                affected |= view.put(table, id, row)
            out: list[RecordChange] = []
            revision = self.revision + 1
            for table, id in sorted(affected, key=lambda k: (k[0], str(k[1]))):
                tm = self.mapping.tables[table]
                key = (table, id)
                old = self.records.get(key)
                found = self._record(tm, id)
                if found is None:
                    if old is None:
                        continue
                    del self.records[key]
                    del self.states[key]
                    self.versions.forget(table, id)
                    out.append(RecordChange(table, id, old.topic, old, None, revision))
                    continue
                new, state = found
                if old is not None and self.states.get(key) == state:
                    continue
                self.records[key] = new
                self.states[key] = state
                out.append(RecordChange(table, id, new.topic, old, new, revision))
            if db not in self.synced:
                # The initial dump is state, not history.
                self.synced.add(db)
                self.revision = revision
                self.oldest = revision
            elif out:
                self.revision = revision
                self.history.extend(out)
                while len(self.history) > self.history_limit:
                    self.oldest = self.history.popleft().revision
            self._check_waiters()
            self.cond.notify_all()

    def reset(self, db: str) -> None:
        """The monitor of ``db`` could not resume: its rows are reloaded and history is gone."""
        with self.cond:
            view = self.views.get(db)
            if view is None:
                return
            view.clear()
            for key in [k for k in self.records if self.mapping.tables[k[0]].db == db]:
                del self.records[key]
                self.states.pop(key, None)
            self.synced.discard(db)
            self.resets += 1
            self.history.clear()
            self.revision += 1
            self.oldest = self.revision
            log.info("ovsdb: monitor of %s could not resume; history before revision %d is gone", db, self.revision)
            self.cond.notify_all()

    def compact(self) -> None:
        """Forget the history (test hook)."""
        with self.cond:
            self.history.clear()
            self.oldest = self.revision
            self.cond.notify_all()

    def fingerprint(self, tables: Collection[str], topics: Collection[str | None] | None) -> dict[RefKey, RowState]:
        """(table, id) -> row state of every record of ``tables`` (in ``topics``)."""
        with self.cond:
            return {
                key: self.states[key]
                for key, rec in self.records.items()
                if key[0] in tables and (topics is None or rec.topic in topics)
            }

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> int | None:
        """The first revision at which ``predicate`` (called under the lock after each change) holds."""
        waiter = _Waiter(predicate)
        with self.cond:
            if predicate():
                return self.revision
            self._waiters.append(waiter)
        try:
            if waiter.done.wait(timeout):
                return waiter.revision
            return None
        finally:
            with self.cond:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _check_waiters(self) -> None:
        for waiter in list(self._waiters):
            try:
                ok = waiter.predicate()
            except Exception:
                log.exception("ovsdb: replica waiter failed")
                ok = True
            if ok:
                waiter.revision = self.revision
                waiter.done.set()
                self._waiters.remove(waiter)


class _ReplicaStream(RecordStream):
    """Changes of some tables (and topics) from the replica's history, after a revision."""

    def __init__(
        self, replica: Replica, tables: Collection[str], topics: Collection[str | None] | None, since: int
    ) -> None:
        self._replica = replica
        self._tables = frozenset(tables)
        self._topics = None if topics is None else frozenset(topics)
        self._revision = since
        self._resets = replica.resets
        self._closed = False
        with replica.cond:
            if since < replica.start or since > replica.revision:
                raise errors.HistoryGoneError(
                    f"revision {since} is not one of this connection's (they run from {replica.start} to "
                    f"{replica.revision}); revisions of OVSDB backends are per connection"
                )

    def poll(self, timeout: float | None) -> list[RecordChange]:
        replica = self._replica
        deadline = None if timeout is None else time.monotonic() + timeout
        with replica.cond:
            while True:
                if self._closed:
                    return []
                if replica.resets != self._resets or self._revision < replica.oldest:
                    raise errors.HistoryGoneError(
                        f"revision {self._revision} is older than the kept history (from {replica.oldest}): "
                        "the monitor could not resume or the history was trimmed"
                    )
                if replica.revision > self._revision:
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return []
                replica.cond.wait(remaining)
            out = [
                c
                for c in replica.history
                if c.revision > self._revision
                and c.table in self._tables
                and (self._topics is None or c.topic in self._topics)
            ]
            self._revision = replica.revision
            return out

    @property
    def revision(self) -> int:
        return self._revision

    def close(self) -> None:
        with self._replica.cond:
            self._closed = True
            self._replica.cond.notify_all()


# ---------------------------------------------------------------------------- the family


def _where_uuid(id: uuid.UUID) -> list[Any]:
    return [["_uuid", "==", ["uuid", str(id)]]]


def _wait(table: str, where: list[Any], rows: list[Row], columns: list[str] | None = None) -> dict[str, Any]:
    return {
        "op": "wait",
        "table": table,
        "timeout": 0,
        "where": where,
        "columns": columns or [],
        "until": "==",
        "rows": rows,
    }


@dataclass(slots=True)
class _Current:
    """The stored state of one object as the planner fetched it."""

    tm: TableMap
    row: Row
    parents: dict[str, uuid.UUID]
    record: Record
    refs: frozenset[RefKey]


@dataclass(slots=True)
class _Plan:
    ops: list[dict[str, Any]]
    reasons: list[tuple[str, Any]]
    versions: list[int]
    expected: list[tuple[str, uuid.UUID, str | None]]
    """(table, id, digest or None for a delete) the replica must show after the commit."""


class OvsdbFamilyBackend(Backend):
    """Base of OVSDB backends: subclass it and supply ``_transact`` and a live :class:`Replica`.

    ``mapping``, ``replica``, ``versions`` and ``namespace`` must be set by the
    subclass before use.
    """

    mapping: Mapping_
    replica: Replica
    versions: VersionBook
    namespace: str = ""
    nb_db: str | None = None

    @abstractmethod
    def _transact(
        self, db: str, ops: list[dict[str, Any]], on_reply: Callable[[list[Any]], None] | None = None
    ) -> list[Any]:
        """Run one OVSDB transaction on ``db`` and return its result array.

        ``on_reply`` runs in the monitor thread as the reply is processed
        (before any later update), to pin a replica revision to the reply.
        Raises TransactError (retryable) or TransactUnknownOutcome, or
        BackendUnavailableError when the server stays unreachable.
        """

    # ---------------------------------------------------------------- reading from the server

    def _ns_where(self) -> list[Any]:
        if self.namespace:
            return [["external_ids", "includes", ["map", [[EXT_NAMESPACE, self.namespace]]]]]
        return []

    def _select_ops(self, tm: TableMap, where: list[Any]) -> list[dict[str, Any]]:
        ops = [{"op": "select", "table": tm.ovs_table, "where": where, "columns": ["_uuid", *tm.monitored_columns()]}]
        return ops

    def _parent_ops(self, tm: TableMap, child: uuid.UUID | None) -> list[tuple[str, str, dict[str, Any]]]:
        out = []
        for fname, (ptable, pcol) in tm.parents.items():
            where = [] if child is None else [[pcol, "includes", ["set", [["uuid", str(child)]]]]]
            out.append((fname, pcol, {"op": "select", "table": ptable, "where": where, "columns": ["_uuid", pcol]}))
        return out

    def _fetch(self, keys: Sequence[RefKey]) -> dict[RefKey, _Current | None]:
        """The current stored state of some objects, read from the server in one transaction."""
        by_db: dict[str, list[RefKey]] = {}
        for key in keys:
            by_db.setdefault(self.mapping.get(key[0]).db, []).append(key)
        out: dict[RefKey, _Current | None] = {}
        for db, dkeys in by_db.items():
            ops: list[dict[str, Any]] = []
            layout: list[tuple[RefKey, int, list[tuple[str, str, int]]]] = []
            for key in dkeys:
                tm = self.mapping.get(key[0])
                index = len(ops)
                ops += self._select_ops(tm, _where_uuid(key[1]))
                plinks = []
                for fname, pcol, op in self._parent_ops(tm, key[1]):
                    plinks.append((fname, pcol, len(ops)))
                    ops.append(op)
                layout.append((key, index, plinks))
            result = self._checked(db, ops)
            for key, index, plinks in layout:
                tm = self.mapping.get(key[0])
                rows = result[index].get("rows", [])
                if not rows:
                    out[key] = None
                    continue
                row = rows[0]
                parents: dict[str, uuid.UUID] = {}
                for fname, _pcol, pindex in plinks:
                    prow = sorted(str(r["_uuid"][1]) for r in result[pindex].get("rows", []))
                    if prow:
                        parents[fname] = uuid.UUID(prow[0])
                doc = render(tm, key[1], row, parents)
                if (doc.namespace or "") != self.namespace:
                    out[key] = None
                    continue
                version = self.versions.version(tm.table, key[1], doc.state)
                record = Record(tm.table, key[1], doc.topic, version, doc.data)
                out[key] = _Current(tm, row, parents, record, self._refs_of(tm, doc.data))
        return out

    def _refs_of(self, tm: TableMap, data: bytes) -> frozenset[RefKey]:
        try:
            doc = json.loads(data)
        except ValueError:
            return frozenset()
        out = set()
        for spec in tm.model.nbdb_references:
            value = doc.get(spec.field)
            values = value if isinstance(value, list) else [value]
            for item in values:
                if item is None:
                    continue
                try:
                    out.add((spec.target, uuid.UUID(str(item))))
                except ValueError:
                    continue
        return frozenset(out)

    def _checked(
        self, db: str, ops: list[dict[str, Any]], on_reply: Callable[[list[Any]], None] | None = None
    ) -> list[Any]:
        """A read-only transaction, retried across reconnects."""
        for attempt in range(_COMMIT_ATTEMPTS):
            try:
                result = self._transact(db, ops, on_reply)
            except TransactError as exc:
                log.debug("ovsdb: read retried after %s", exc)
                time.sleep(min(0.05 * 2**attempt, 1.0))
                continue
            for item in result:
                if isinstance(item, dict) and "error" in item:
                    raise errors.BackendUnavailableError(
                        f"OVSDB refused a read: {item.get('error')}: {item.get('details', '')}"
                    )
            return result
        raise errors.BackendUnavailableError("OVSDB reads kept failing across reconnects")

    def read(self, table: str, id: uuid.UUID) -> Record | None:
        current = self._fetch([(table, id)])[(table, id)]
        return None if current is None else current.record

    def scan(self, tables: Sequence[str], topics: Collection[str | None] | None) -> Snapshot:
        # A model with no OVSDB table has no objects here (a write of one says why: UnsupportedError).
        maps = [self.mapping.tables[t] for t in tables if t in self.mapping.tables]
        wanted_topics = None if topics is None else frozenset(topics)
        records: list[Record] = []
        revision = self.replica.revision
        for db in sorted({tm.db for tm in maps}):
            dmaps = [tm for tm in maps if tm.db == db]
            ops: list[dict[str, Any]] = []
            layout = []
            for tm in dmaps:
                index = len(ops)
                ops += self._select_ops(tm, self._ns_where())
                plinks = []
                for fname, pcol, op in self._parent_ops(tm, None):
                    plinks.append((fname, pcol, len(ops)))
                    ops.append(op)
                layout.append((tm, index, plinks))
            pinned: dict[str, Any] = {}

            def on_reply(result: list[Any], layout: Any = layout, pinned: dict[str, Any] = pinned) -> None:
                # Runs in the monitor thread: the replica is at or behind this snapshot here.
                pinned["revision"] = self.replica.revision
                pinned["docs"] = self._snapshot_docs(layout, result)

            self._checked(db, ops, on_reply)
            docs: list[Doc] = pinned["docs"]
            fingerprint = {(d.table, d.id): d.state for d in docs}
            tnames = [tm.table for tm in dmaps]
            # Pin the snapshot to the replica revision whose content equals it, so
            # watch(since=revision) continues exactly after the snapshot.
            matched = self.replica.wait_for(_same(self.replica, tnames, fingerprint), _SYNC_SECONDS)
            if matched is None:
                log.warning(
                    "ovsdb: the monitor did not catch up with a list within %ss; "
                    "a watch from its revision may repeat changes",
                    _SYNC_SECONDS,
                )
                matched = pinned["revision"]
            revision = matched if db == sorted({tm.db for tm in maps})[0] else min(revision, matched)
            for doc in docs:
                if wanted_topics is not None and doc.topic not in wanted_topics:
                    continue
                version = self.versions.version(doc.table, doc.id, doc.state)
                records.append(Record(doc.table, doc.id, doc.topic, version, doc.data))
        return Snapshot(records, revision)

    def _snapshot_docs(self, layout: Any, result: list[Any]) -> list[Doc]:
        docs = []
        for tm, index, plinks in layout:
            parents: dict[uuid.UUID, dict[str, uuid.UUID]] = {}
            for fname, pcol, pindex in plinks:
                for prow in sorted(result[pindex].get("rows", []), key=lambda r: str(r["_uuid"][1])):
                    for cid in _uuid_members(prow, pcol):
                        parents.setdefault(cid, {}).setdefault(fname, uuid.UUID(str(prow["_uuid"][1])))
            for row in result[index].get("rows", []):
                id = uuid.UUID(str(row["_uuid"][1]))
                if tm.parents and id not in parents:
                    continue
                doc = render(tm, id, row, parents.get(id, {}))
                if (doc.namespace or "") == self.namespace:
                    docs.append(doc)
        return docs

    def referrers(self, table: str, id: uuid.UUID) -> list[RefKey]:
        out: set[RefKey] = set()
        for tm, fname, storage in self._ref_sources(table):
            if storage == "parent":
                current = self._fetch([(table, id)]).get((table, id))
                if current is None:
                    continue
                _ptable, pcol = tm.parents[fname]
                for cid in _uuid_members(current.row, pcol) if pcol in current.row else self._children(table, id, pcol):
                    out.add((tm.table, cid))
                continue
            ops = [
                {
                    "op": "select",
                    "table": tm.ovs_table,
                    "where": self._ns_where(),
                    "columns": ["_uuid", *tm.monitored_columns()],
                }
            ]
            for row in self._checked(tm.db, ops)[0].get("rows", []):
                rid = uuid.UUID(str(row["_uuid"][1]))
                doc = render(tm, rid, row, {})
                if (table, id) in self._refs_of(tm, doc.data):
                    out.add((tm.table, rid))
        return sorted(out, key=lambda k: (k[0], str(k[1])))

    def _children(self, table: str, id: uuid.UUID, column: str) -> set[uuid.UUID]:
        tm = self.mapping.get(table)
        result = self._checked(
            tm.db, [{"op": "select", "table": tm.ovs_table, "where": _where_uuid(id), "columns": [column]}]
        )
        rows = result[0].get("rows", [])
        return _uuid_members(rows[0], column) if rows else set()

    def _ref_sources(self, table: str) -> list[tuple[TableMap, str, str]]:
        """(source map, field, storage) of every reference field that can point to ``table``."""
        out = []
        for tm in self.mapping.tables.values():
            for fname, (target, storage) in tm.refs.items():
                if target == table:
                    out.append((tm, fname, storage))
        return out

    def watch(self, tables: Sequence[str], topics: Collection[str | None] | None, since: int) -> RecordStream:
        for table in tables:
            if table not in self.mapping.tables:
                log.debug("ovsdb: watch of unmapped table %s delivers nothing", table)
        return _ReplicaStream(self.replica, tables, topics, since)

    def current_revision(self) -> int:
        return self.replica.revision

    @property
    def revision_scope(self) -> object:
        # Revisions count per replica; backends of one process sharing an IDL share it.
        return self.replica.scope

    def compact_history(self) -> None:
        self.replica.compact()

    # ---------------------------------------------------------------- writing

    def commit(self, ops: Sequence[WriteOp]) -> CommitResult:
        if not ops:
            return CommitResult(self.replica.revision, [])
        seen: set[RefKey] = set()
        for op in ops:
            if (op.table, op.id) in seen:
                raise errors.ValidationError(f"{op.table} {op.id} appears twice in one transaction")
            seen.add((op.table, op.id))
        dbs = {self.mapping.get(op.table).db for op in ops}
        if len(dbs) > 1:
            raise errors.UnsupportedError(
                f"a transaction spans the OVSDB databases {sorted(dbs)}; OVSDB commits one database at a time"
            )
        db = dbs.pop()
        unknown_outcome = False
        last_plan: _Plan | None = None
        for attempt in range(_COMMIT_ATTEMPTS):
            current = self._fetch(
                [(op.table, op.id) for op in ops if not (isinstance(op, Put) and op.expect_version == 0)]
                + [(op.table, op.id) for op in ops if isinstance(op, Put) and op.expect_version == 0]
            )
            if unknown_outcome and last_plan is not None and self._landed(last_plan, current):
                log.info("ovsdb: a commit interrupted by a reconnect had landed")
                return self._finish(last_plan, current)
            plan = self._plan(ops, current)
            last_plan = plan
            try:
                result = self._transact(db, plan.ops)
            except TransactUnknownOutcome as exc:
                log.info("ovsdb: connection lost during a commit (%s); checking whether it landed", exc)
                unknown_outcome = True
                time.sleep(min(0.05 * 2**attempt, 1.0))
                continue
            except TransactError as exc:
                log.info("ovsdb: commit not sent (%s); retrying", exc)
                time.sleep(min(0.05 * 2**attempt, 1.0))
                continue
            unknown_outcome = False
            failure = self._failure(plan, result)
            if failure is None:
                return self._finish(plan, current)
            kind, detail = failure
            if kind == "retry":
                time.sleep(min(0.005 * 2**attempt, 0.2))
                continue
            raise self._diagnose(ops, kind, detail)
        raise errors.ConflictError("the commit kept conflicting with concurrent writers; try again")

    @staticmethod
    def _landed(plan: _Plan, current: Mapping[RefKey, _Current | None]) -> bool:
        for table, id, digest in plan.expected:
            cur = current.get((table, id))
            if digest is None:
                if cur is not None:
                    return False
            elif cur is None or _state_of(cur) != digest:
                return False
        return True

    def _finish(self, plan: _Plan, current: Mapping[RefKey, _Current | None]) -> CommitResult:
        expected = plan.expected

        def reflected() -> bool:
            for table, id, digest in expected:
                state = self.replica.states.get((table, id))
                if digest is None:
                    if state is not None:
                        return False
                elif state is None or state.stored_digest != digest or state.digest != digest:
                    return False
            return True

        revision = self.replica.wait_for(reflected, _SYNC_SECONDS)
        if revision is None:
            # Another writer may have moved the objects on already; the monitor is slow or gone.
            revision = self.replica.revision
        return CommitResult(revision, plan.versions)

    def _plan(self, ops: Sequence[WriteOp], current: Mapping[RefKey, _Current | None]) -> _Plan:
        plan = _Plan([], [], [], [])
        head: list[tuple[dict[str, Any], tuple[str, Any]]] = []
        body: list[tuple[dict[str, Any], tuple[str, Any]]] = []
        checks: list[tuple[dict[str, Any], tuple[str, Any]]] = []
        tail: list[tuple[dict[str, Any], tuple[str, Any]]] = []
        deleted = {(op.table, op.id) for op in ops if isinstance(op, Delete)}
        created = {(op.table, op.id) for op in ops if isinstance(op, Put) and op.expect_version == 0}
        new_refs: dict[RefKey, frozenset[RefKey]] = {}
        for op in ops:
            tm = self.mapping.get(op.table)
            key = (op.table, op.id)
            cur = current.get(key)
            if isinstance(op, Put) and op.expect_version == 0:
                if cur is not None:
                    raise errors.ConflictError(f"{op.table} {op.id} already exists")
                head.append((_wait(tm.ovs_table, _where_uuid(op.id), []), ("absent", key)))
                version = 1
            else:
                if cur is None:
                    raise errors.NotFoundError(f"{op.table} {op.id} does not exist")
                if op.expect_version not in (ANY_VERSION, cur.record.version):
                    raise errors.ConflictError(
                        f"{op.table} {op.id} is at version {cur.record.version}, not {op.expect_version}: "
                        "re-read it and retry"
                    )
                if cur.record.topic != op.topic:
                    raise errors.ValidationError(
                        f"{op.table} {op.id} lives in topic {cur.record.topic!r}; topic cannot change to {op.topic!r}"
                    )
                head.append((self._cas_wait(tm, op.id, cur), ("cas", key)))
                version = cur.record.version + 1
            if isinstance(op, Put):
                try:
                    doc = json.loads(op.data)
                except ValueError:
                    raise errors.ValidationError(f"{op.table} {op.id}: record is not JSON") from None
                row, ext, parents = _row_for(tm, doc)
                for fname in tm.parents:
                    if fname not in doc:
                        parents[fname] = None
                ext[EXT_VERSION] = str(version)
                if op.topic is not None:
                    ext[EXT_TOPIC] = op.topic
                if self.namespace:
                    ext[EXT_NAMESPACE] = self.namespace
                pmap = {f: p for f, p in parents.items() if p is not None}
                digest = _content_digest(tm, op.id, {**row, "external_ids": _map(ext)}, pmap)
                ext[EXT_DIGEST] = digest
                row["external_ids"] = _map(ext)
                if cur is None:
                    body.append(
                        ({"op": "insert", "table": tm.ovs_table, "uuid": str(op.id), "row": row}, ("insert", key))
                    )
                else:
                    body.append(
                        (
                            {"op": "update", "table": tm.ovs_table, "where": _where_uuid(op.id), "row": row},
                            ("update", key),
                        )
                    )
                old_parents = {} if cur is None else cur.parents
                for fname, (ptable, pcol) in tm.parents.items():
                    before, after = old_parents.get(fname), parents.get(fname)
                    if before == after:
                        continue
                    if before is not None:
                        body.append((_mutate(ptable, before, pcol, "delete", op.id), ("mutate", key)))
                    if after is not None:
                        body.append((_mutate(ptable, after, pcol, "insert", op.id), ("mutate", key)))
                new_refs[key] = self._refs_of(tm, op.data)
                old_refs = frozenset() if cur is None else cur.refs
                for target in new_refs[key] - old_refs:
                    if target in deleted:
                        raise errors.ReferenceError(
                            f"{op.table} {op.id} references {target[0]} {target[1]}, deleted in the same transaction"
                        )
                    if target in created:
                        continue
                    ttm = self.mapping.get(target[0])
                    if ttm.db != tm.db:
                        if self._fetch([target]).get(target) is None:
                            raise errors.ReferenceError(
                                f"{op.table} {op.id} references {target[0]} {target[1]}, which does not exist"
                            )
                        continue
                    tail.append((_wait(ttm.ovs_table, _where_uuid(target[1]), [{}]), ("target", (key, target))))
                plan.expected.append((op.table, op.id, digest))
                plan.versions.append(version)
            else:
                assert cur is not None
                for fname, (ptable, pcol) in tm.parents.items():
                    parent = cur.parents.get(fname)
                    if parent is not None:
                        body.append((_mutate(ptable, parent, pcol, "delete", op.id), ("mutate", key)))
                new_refs[key] = frozenset()
                # Children held in this row's set columns must be gone (or going) first.
                child_cols = sorted({pcol for child, _f, pcol in self.mapping.links.get((tm.db, tm.ovs_table), ())})
                if child_cols:
                    checks.append(
                        (
                            _wait(tm.ovs_table, _where_uuid(op.id), [{c: ["set", []] for c in child_cols}], child_cols),
                            ("children", key),
                        )
                    )
                tail.append(({"op": "delete", "table": tm.ovs_table, "where": _where_uuid(op.id)}, ("delete", key)))
                plan.expected.append((op.table, op.id, None))
                plan.versions.append(0)
        # Nobody may reference a deleted object once this commit is applied.
        for target in deleted:
            ttm = self.mapping.get(target[0])
            for src, fname, storage in self._ref_sources(target[0]):
                if storage == "parent":
                    continue
                if storage == "column" and src.db == ttm.db:
                    col, ctype, _enc = src.columns[fname]
                    cond = "includes" if not ctype.is_scalar else "=="
                    value: Any = ["set", [["uuid", str(target[1])]]] if cond == "includes" else ["uuid", str(target[1])]
                    tail.append((_wait(src.ovs_table, [[col, cond, value]], []), ("referenced", target)))
                else:
                    for ref in self.referrers(*target):
                        if (
                            ref[0] == src.table
                            and ref not in deleted
                            and target in new_refs.get(ref, frozenset([target]))
                        ):
                            raise self._still_referenced(target, [ref])
        for stage in (head, body, checks, tail):
            for op_json, reason in stage:
                plan.ops.append(op_json)
                plan.reasons.append(reason)
        # Tail deletes must precede the waits that check their effect.
        order = sorted(range(len(plan.ops)), key=lambda i: (plan.reasons[i][0] in ("target", "referenced"), i))
        plan.ops = [plan.ops[i] for i in order]
        plan.reasons = [plan.reasons[i] for i in order]
        return plan

    def _cas_wait(self, tm: TableMap, id: uuid.UUID, cur: _Current) -> dict[str, Any]:
        columns = tm.monitored_columns()
        return _wait(
            tm.ovs_table,
            _where_uuid(id),
            [{c: cur.row[c] for c in columns if c in cur.row}],
            [c for c in columns if c in cur.row],
        )

    def _failure(self, plan: _Plan, result: list[Any]) -> tuple[str, Any] | None:
        """None if the transaction committed, else (reason kind, detail)."""
        for index, item in enumerate(result):
            if isinstance(item, dict) and "error" in item:
                error = str(item.get("error"))
                details = str(item.get("details", ""))
                reason = plan.reasons[index] if index < len(plan.reasons) else ("commit", None)
                if error == "timed out":
                    return reason
                if error == "duplicate uuid":
                    return ("absent", reason[1])
                if error == "referential integrity violation":
                    return ("integrity", details)
                if error == "constraint violation" and "index" in details:
                    return ("index", details)
                if error == "constraint violation":
                    return ("constraint", details)
                if error == "not owner" or error == "not leader" or "cluster" in error:
                    return ("retry", details)
                return ("error", f"{error}: {details}")
        return None

    def _diagnose(self, ops: Sequence[WriteOp], kind: str, detail: Any) -> errors.NbdbError:
        if kind == "absent":
            table, id = detail
            return errors.ConflictError(f"{table} {id} already exists")
        if kind == "cas":
            table, id = detail
            cur = self._fetch([detail])[detail]
            if cur is None:
                return errors.NotFoundError(f"{table} {id} does not exist (deleted concurrently?)")
            return errors.ConflictError(
                f"{table} {id} changed concurrently (now version {cur.record.version}): re-read it and retry"
            )
        if kind == "target":
            (table, id), target = detail
            return errors.ReferenceError(f"{table} {id} references {target[0]} {target[1]}, which does not exist")
        if kind == "mutate":
            return errors.ReferenceError(f"{detail[0]} {detail[1]}: its parent does not exist")
        if kind in ("children", "referenced"):
            target = detail
            refs = [r for r in self.referrers(*target)]
            return self._still_referenced(target, refs)
        if kind == "integrity":
            return errors.ReferenceError(f"OVSDB referential integrity: {detail}")
        if kind == "index":
            return errors.ConflictError(f"an object with the same unique key exists: {detail}")
        if kind == "constraint":
            return errors.ValidationError(f"OVSDB refused a value: {detail}")
        return errors.ValidationError(f"OVSDB refused the commit: {detail}")

    @staticmethod
    def _still_referenced(target: RefKey, refs: list[RefKey]) -> errors.ReferenceError:
        names = ", ".join(f"{t} {i}" for t, i in refs[:5]) or "another object"
        return errors.ReferenceError(
            f"{target[0]} {target[1]} is still referenced by {names}"
            + (f" and {len(refs) - 5} more" if len(refs) > 5 else "")
            + "; delete those first or pass cascade=True"
        )

    # ---------------------------------------------------------------- ids and raw writes

    def allocate_id(self, name: str) -> int:
        if self.nb_db is None:
            raise errors.UnsupportedError("allocate_id needs the OVN_Northbound database (NB_Global)")
        key = f"{EXT_COUNTER}{self.namespace}/{name}"
        for attempt in range(64):
            result = self._checked(
                self.nb_db,
                [{"op": "select", "table": "NB_Global", "where": [], "columns": ["_uuid", "_version", "external_ids"]}],
            )
            rows = sorted(result[0].get("rows", []), key=lambda r: str(r["_uuid"][1]))
            if not rows:
                ops: list[dict[str, Any]] = [
                    _wait("NB_Global", [], []),
                    {"op": "insert", "table": "NB_Global", "row": {"external_ids": _map({key: "1"})}},
                ]
                value = 1
            else:
                row = rows[0]
                try:
                    value = int(_ext(row).get(key, "0")) + 1
                except ValueError:
                    raise errors.CorruptRecordError(
                        f"id counter {name!r} in NB_Global is not an integer", key=key
                    ) from None
                ops = [
                    _wait("NB_Global", [["_uuid", "==", row["_uuid"]], ["_version", "==", row["_version"]]], [{}]),
                    {
                        "op": "mutate",
                        "table": "NB_Global",
                        "where": [["_uuid", "==", row["_uuid"]]],
                        "mutations": [
                            ["external_ids", "delete", ["set", [key]]],
                            ["external_ids", "insert", _map({key: str(value)})],
                        ],
                    },
                ]
            try:
                result = self._transact(self.nb_db, ops)
            except TransactError:
                time.sleep(min(0.01 * 2**attempt, 0.5))
                continue
            if not any(isinstance(r, dict) and "error" in r for r in result):
                return value
            time.sleep(min(0.001 * 2 ** min(attempt, 8), 0.05))
        raise errors.ConflictError(f"id counter {name!r}: too much contention; try again")

    def write_raw(self, table: str, id: uuid.UUID, topic: str | None, data: bytes) -> None:
        """Store ``data`` as the record's content (kept verbatim in ``external_ids:nbdb:raw``)."""
        tm = self.mapping.get(table)
        ext = {EXT_RAW: base64.b64encode(data).decode()}
        if topic is not None:
            ext[EXT_TOPIC] = topic
        if self.namespace:
            ext[EXT_NAMESPACE] = self.namespace
        cur = self._fetch([(table, id)]).get((table, id))
        if cur is None:
            if not tm.is_root:
                raise errors.UnsupportedError(f"{tm.ovs_table} rows live only inside a parent; cannot write one raw")
            op = {"op": "insert", "table": tm.ovs_table, "uuid": str(id), "row": {"external_ids": _map(ext)}}
        else:
            old = _ext(cur.row)
            old.update(ext)
            op = {"op": "update", "table": tm.ovs_table, "where": _where_uuid(id), "row": {"external_ids": _map(old)}}
        result = self._checked(tm.db, [op])
        del result


def _same(replica: Replica, tables: list[str], fingerprint: dict[RefKey, RowState]) -> Callable[[], bool]:
    return lambda: replica.fingerprint(tables, None) == fingerprint


def _state_of(cur: _Current) -> str:
    return _ext(cur.row).get(EXT_DIGEST, "")


def _map(values: Mapping[str, str]) -> list[Any]:
    return ["map", [[_esc(k), _esc(v)] for k, v in sorted(values.items())]]


def _mutate(table: str, row: uuid.UUID, column: str, how: str, member: uuid.UUID) -> dict[str, Any]:
    return {
        "op": "mutate",
        "table": table,
        "where": _where_uuid(row),
        "mutations": [[column, how, ["set", [["uuid", str(member)]]]]],
    }


# ---------------------------------------------------------------------------- schema generation


def _column_type(model: type[Model], name: str) -> dict[str, Any] | str:
    annotation = model.model_fields[name].annotation
    ref = next((spec for spec in model.nbdb_references if spec.field == name), None)

    def atom(tp: Any) -> str | None:
        if get_origin(tp) is typing.Annotated:
            return atom(get_args(tp)[0])
        if tp is bool:
            return "boolean"
        if isinstance(tp, type) and issubclass(tp, Enum):
            return "string"
        if tp is int:
            return "integer"
        if tp is float:
            return "real"
        if tp is uuid.UUID:
            return "uuid"
        if tp is str:
            return "string"
        return None

    tp = annotation
    optional = False
    if get_origin(tp) is typing.Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        optional = len(args) != len(get_args(tp))
        tp = args[0] if len(args) == 1 else Any
    kind = atom(tp)
    if kind is not None:
        if optional:
            return {"key": kind, "min": 0, "max": 1}
        return kind
    if get_origin(tp) is dict:
        kt, vt = get_args(tp)
        if atom(kt) == "string" and atom(vt) in ("string", "integer", "real", "boolean"):
            return {"key": "string", "value": atom(vt), "min": 0, "max": "unlimited"}
    if ref is not None and ref.many and get_origin(tp) in (set, frozenset):
        return {"key": "uuid", "min": 0, "max": "unlimited"}
    # Lists keep their order and duplicates only as JSON text.
    return "string"


def generate_schema(
    models: Iterable[type[Model]] | None = None, name: str = "nbdb", version: str = "1.0.0"
) -> dict[str, Any]:
    """An OVSDB schema (``.ovsschema`` JSON) with one table per model that has no OVN table.

    Serve it as a second database next to ``OVN_Northbound`` (``ovsdb-tool
    create nbdb.db nbdb.ovsschema``; ``ovsdb-server nb.db nbdb.db``) and name
    it in the URL (``?model_db=nbdb``, the default). Columns are typed where
    OVSDB has a type (strings, integers, booleans, reals, uuids, optionals,
    string maps); other fields (lists, nested models) are JSON text.
    ``models`` defaults to every model defined in this process.
    """
    tables: dict[str, Any] = {}
    for model in models if models is not None else all_models():
        if model.nbdb_table in OVN_TABLES:
            continue
        columns: dict[str, Any] = {
            "external_ids": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}}
        }
        for fname in model.model_fields:
            if fname in ("id", "version", "topic", "external_ids"):
                continue
            columns[fname] = {"type": _column_type(model, fname)}
        tables[model.nbdb_table] = {"columns": columns, "isRoot": True}
    return {"name": name, "version": version, "tables": tables}
