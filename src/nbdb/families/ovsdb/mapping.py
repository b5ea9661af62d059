"""Models onto OVSDB tables: which table and column holds each field, for any schema.

A :class:`TableBinding` says which OVSDB table holds a model and which of the
model's references are membership in a parent's set column (OVN keeps
``Logical_Switch.ports``; nbdb's port names its switch). :func:`build_mapping`
checks the bindings against the schemas the server serves and works out, per
field, the column that holds it:

* a column of the same name holds the field (JSON text when the column is a
  plain string and the field is not text, as in generated schemas);
* a field the binding lists in ``ext_fields`` lives as JSON in
  ``external_ids:nbdb:field:<name>`` (the schema has no place for it by design);
* any other field whose column the served schema lacks is *missing* (an older
  schema): reads give the model's default, writes of anything else raise
  :class:`nbdb.UnsupportedError`.

Columns the mapping does not know (a newer schema) are neither read nor
written, so updates keep what other clients stored there.

Each unique group of fields a model declares (``nbdb_unique``) gets a
:class:`UniqueRule` saying how the served schema lets nbdb keep it: nbdb's
own key column (the generated model database), an index of the schema on the
fields' columns (``OVN_Northbound``'s ``Logical_Switch_Port.name``...), or
neither (an older schema), when a ``wait`` in each commit keeps it. The
schema's indexes that no model declares get a rule too, so that their
violations can be explained.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nbdb import errors
from nbdb.families.ovsdb.datum import ColumnType, cell_encoder
from nbdb.families.ovsdb.schema import DatabaseSchema, TableSchema
from nbdb.families.ovsdb.schemagen import unique_column
from nbdb.models.shape import FieldShape, ModelShape

__all__ = ["ColumnMap", "Link", "Mapping_", "TableBinding", "TableMap", "UniqueRule", "build_mapping"]

EXTERNAL_IDS = "external_ids"


@dataclass(frozen=True, slots=True)
class TableBinding:
    """Where one model lives in one OVSDB database."""

    model_table: str
    db_table: str
    parents: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """Reference field -> (parent table, the parent's set column holding the children)."""
    ext_fields: frozenset[str] = frozenset()
    """Fields kept in ``external_ids`` because the schema has no column for them by design."""
    required: bool = True
    """The served schema must have the table (else connecting fails)."""


@dataclass(frozen=True, slots=True)
class ColumnMap:
    """One field held by one column."""

    field: str
    column: str
    type: ColumnType
    json: bool
    """The column is a string holding the field's JSON text."""
    shape: FieldShape
    to_wire: Callable[[Any], Any] = dataclasses.field(init=False, repr=False, compare=False)
    """``cell_to_wire`` of the column's type, compiled once (see :func:`~.datum.cell_encoder`)."""
    plain: str = dataclasses.field(init=False, repr=False, compare=False)
    """Which shape of plain field value :func:`~.rows.new_row` turns into the column's cell, datum
    and rendered value in one step: ``"optional"`` (None, or a ``plain_type`` atom), ``"string"``,
    ``"strings"`` (a list of ``str``), ``"string_map"`` (a dict of ``str`` to ``str``); ``""``:
    none (a JSON column, another type). Any other value takes the general path."""
    plain_type: builtins.type | None = dataclasses.field(init=False, repr=False, compare=False)
    """The atom type of an optional column's plain value (``str``, ``bool``, ``int``; None: only None is)."""
    empty_is_none: bool = dataclasses.field(init=False, repr=False, compare=False)
    """A required string column read into an optional field: its ``""`` renders as None."""
    one_of_set: bool = dataclasses.field(init=False, repr=False, compare=False)
    """A set column that may hold more than one atom (a newer schema widened it) holding a field of
    one value: none reads as None, one as that atom, more as the list, which the model refuses (a
    corrupt record); a write stores the value as a set of one (None: the empty set)."""
    newer: frozenset[str] = dataclasses.field(init=False, repr=False, compare=False)
    """The values the served schema's enum of the column admits that the field's enum lacks (a newer
    schema's, ``Logical_Router_Policy.action = jump``): the server checks them, so a row holding one
    reads (see :class:`nbdb.spi.CheckedData`). An integer or real column's values as their text
    (``str(7)``, ``str(2.5)``: as :class:`~nbdb.models.shape.FieldShape` spells an enum's values). Empty
    for a column without an enum (a JSON column, the model database's plain strings): the server checks
    nothing there."""

    def __post_init__(self) -> None:
        ctype = self.type
        object.__setattr__(self, "to_wire", cell_encoder(ctype))
        plain, plain_type = "", None
        one_of_set = not self.json and ctype.is_set and self.shape.container == "scalar"
        if self.json or one_of_set:
            pass
        elif ctype.is_optional:
            plain, plain_type = "optional", _PLAIN_ATOMS.get(ctype.key.kind)
        elif ctype.key.kind == "string" and ctype.value is None:
            plain = "string" if ctype.is_scalar else "strings"
        elif ctype.key.kind == "string" and ctype.value is not None and ctype.value.kind == "string":
            plain = "string_map"
        object.__setattr__(self, "plain", plain)
        object.__setattr__(self, "plain_type", plain_type)
        object.__setattr__(
            self, "empty_is_none", ctype.is_scalar and self.shape.optional and self.shape.default is None
        )
        object.__setattr__(self, "one_of_set", one_of_set)
        object.__setattr__(self, "newer", _newer_values(self))


_PLAIN_ATOMS: dict[str, type] = {"string": str, "boolean": bool, "integer": int}


def _enum_checked(cm: ColumnMap) -> bool:
    """Whether the server checks the field's values against the served schema's enum of its column."""
    base = cm.type.value if cm.shape.container == "map" else cm.type.key
    return not cm.json and base is not None and base.kind in _ENUM_TEXT and bool(base.enum)


_ENUM_TEXT: dict[str, Callable[[Any], str]] = {
    "string": str,
    "integer": lambda v: str(int(v)),
    "real": lambda v: str(float(v)),  # a schema's enum may spell a real 2 as an integer
}
"""The atom kinds whose enum a field's enum class may hold (``StrEnum``, ``IntEnum``, a ``float`` ``Enum``), and
each value's text as :attr:`ColumnMap.newer` holds it."""


def _newer_values(cm: ColumnMap) -> frozenset[str]:
    """:attr:`ColumnMap.newer`: what the column's served enum admits beyond the field's."""
    shape = cm.shape
    if shape.kind != "enum" or not shape.enum or not _enum_checked(cm):
        return frozenset()
    base = cm.type.value if shape.container == "map" else cm.type.key
    text = _ENUM_TEXT[base.kind]  # type: ignore[union-attr]
    return frozenset(text(v) for v in base.enum) - frozenset(shape.enum)  # type: ignore[union-attr]


@dataclass(frozen=True, slots=True)
class UniqueRule:
    """How one unique group of fields of a model is kept in the served schema.

    ``key_column`` set: the row holds the namespace and the group's value in
    that column of nbdb's model database (``indexed``: the server's index on
    it refuses a second holder; else a ``wait`` does). Otherwise the fields'
    own columns hold the value: ``indexed`` when an index of the schema is on
    exactly those columns (held across namespaces, as ``ovn-nbctl`` sees
    them), else a ``wait`` on them keeps it. ``where_ok`` is False when a
    field lives as membership in a parent's set column or as JSON in
    ``external_ids``, where no ``where`` can compare it: such a group can
    only be kept with a key column (writes of it raise UnsupportedError
    otherwise).
    """

    field: str
    """The group's name as :class:`nbdb.spi.UniqueKey` spells it: the fields joined by ``+``."""
    fields: tuple[str, ...]
    key_column: str | None
    indexed: bool
    declared: bool = True
    """The model declares it (False: an index of the schema only, kept by the server)."""
    where_ok: bool = True


@dataclass(frozen=True, slots=True)
class Link:
    """A child table's reference field held as membership in a parent's set column."""

    child: TableMap
    field: str
    parent_table: str
    column: str


@dataclass(slots=True)
class TableMap:
    """How one model maps onto one OVSDB table."""

    shape: ModelShape
    db: str
    db_table: str
    columns: dict[str, ColumnMap]
    ext_fields: tuple[str, ...]
    missing: dict[str, FieldShape]
    parents: dict[str, tuple[str, str]]
    refs: dict[str, tuple[str, str]]
    """Reference field -> (target nbdb table, where it is kept: "parent", "column" or "ext")."""
    is_root: bool
    external_ids: ColumnType | None
    """None: the table has no ``external_ids`` (nbdb can read it, not write it)."""
    unique: tuple[UniqueRule, ...] = ()
    """The model's unique groups, then the schema's other indexes on mapped fields."""
    held_at_least_one: tuple[str, ...] = ()
    """The set columns of this table that hold a child table's rows (a :class:`Link`) and must hold at
    least one (OVN's ``Meter.bands``): the server's default for such a column is a set of one
    all-zero uuid, so an insert writes it empty, and the children a commit adds fill it."""
    compared: tuple[frozenset[str], list[str]] | None = field(default=None, init=False, repr=False, compare=False)
    """The planner's cache of the columns a compare-and-swap compares, and them sorted (made on first
    use): kept here, so it lives as long as the map (a module-level cache kept every map of every
    Database a process ever opened)."""
    defaults: tuple[tuple[str, Any, ColumnMap], ...] | None = field(default=None, init=False, repr=False, compare=False)
    """The planner's cache of each mapped column and the cell the server leaves out for it
    (:func:`.datum.default_cell`), made on first use: compared with, never changed or handed out."""
    spellings: Any = field(default=None, init=False, repr=False, compare=False)
    """The members of some rows' text sets that read as another text (:mod:`.spellings`), made on
    first use: kept here, to go with the map."""
    newer: dict[str, frozenset[str]] = field(default_factory=dict, init=False, repr=False, compare=False)
    """Field -> the newer schema's values of its enum the served schema admits (:attr:`ColumnMap.newer`);
    empty (the common case) when the served schema's enums are the models'."""

    enum_checked: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)
    """The enumerated fields whose column the server checks against an enum: only these may be written
    a newer schema's value read from another row (see :func:`nbdb.models.enums.newer_held`)."""

    def __post_init__(self) -> None:
        self.newer = {name: cm.newer for name, cm in self.columns.items() if cm.newer}
        self.enum_checked = frozenset(name for name, cm in self.columns.items() if _enum_checked(cm))

    def unique_rule(self, field: str) -> UniqueRule | None:
        """The rule of the unique group named ``field`` (fields joined by ``+``), if any."""
        return next((rule for rule in self.unique if rule.field == field), None)

    @property
    def table(self) -> str:
        """The nbdb table (model) name."""
        return self.shape.table

    @property
    def known(self) -> frozenset[str]:
        """Every field of the model this map serves (a row's ``nbdb:field:`` key naming another is a newer model's)."""
        return frozenset({*self.columns, *self.ext_fields, *self.missing, *self.parents, *self.refs})

    def monitored_columns(self) -> list[str]:
        """The columns a replica of this table follows."""
        columns = {c.column for c in self.columns.values()}
        if self.external_ids is not None:
            columns.add(EXTERNAL_IDS)
        return sorted(columns)


@dataclass(slots=True)
class Mapping_:
    """The whole mapping: nbdb tables <-> OVSDB tables, and the parent links."""

    tables: dict[str, TableMap]
    by_db_table: dict[tuple[str, str], list[TableMap]]
    """(db, table) -> the maps of every model held in that table (several models may share one)."""
    links: dict[tuple[str, str], list[Link]]
    """(db, parent table) -> the links its set columns hold."""
    schemas: dict[str, DatabaseSchema]
    unserved: dict[str, str] = field(default_factory=dict)
    """nbdb table -> why the served schema cannot hold it (an owned model of another schema: :func:`_owner_link`)."""

    def get(self, table: str) -> TableMap:
        """The map of nbdb table ``table``; UnsupportedError if no served table holds it."""
        try:
            return self.tables[table]
        except KeyError:
            self.check_served(table)
            raise errors.UnsupportedError(
                f"table {table!r} has no OVSDB table: neither a bound table of the served databases nor one of "
                "the model database (serve the schema from `nbdb schema ovsdb` as a second database)"
            ) from None

    def check_served(self, table: str) -> None:
        """UnsupportedError if ``table`` is ``"<database>.<table>"`` of a served database whose schema lacks it.

        A generated model of an older or newer schema than the served one: reads of it were empty, as
        if the table held no rows. A model of a database not served (``Chassis`` without the model
        database, a model of another database) is not checked: reads of it find nothing.
        """
        if table in self.tables:
            return
        if table in self.unserved:
            raise errors.UnsupportedError(self.unserved[table])
        db, dot, name = table.partition(".")
        schema = self.schemas.get(db) if dot else None
        if schema is not None and name not in schema.tables:
            raise errors.UnsupportedError(
                f"the served {db} schema (version {schema.version}) has no table {name}, which holds {table}: "
                "serve a schema with it, or use models generated from the served one"
            )

    def monitor_columns(self, db: str) -> dict[str, list[str]]:
        """OVSDB table -> columns a replica of ``db`` follows (mapped columns and parents' set columns).

        Not ``_version``: a relay numbers its copies of the rows itself, so a
        ``_version`` seen through a relay never matches the leader's.
        """
        out: dict[str, set[str]] = {}
        for tm in self.tables.values():
            if tm.db == db:
                out.setdefault(tm.db_table, set()).update(tm.monitored_columns())
        for (pdb, ptable), links in self.links.items():
            if pdb == db:
                out.setdefault(ptable, set()).update(link.column for link in links)
        return {t: sorted(c) for t, c in out.items()}

    def databases(self) -> list[str]:
        """The databases holding at least one mapped table."""
        return sorted({tm.db for tm in self.tables.values()})


def _json_encoded(shape: FieldShape, ctype: ColumnType) -> bool:
    """A complex value in a plain string column (generated schemas) is kept as JSON text."""
    return ctype.is_scalar and ctype.key.kind == "string" and not shape.textual


def _table_map(shape: ModelShape, db: str, schema: DatabaseSchema, binding: TableBinding) -> TableMap:
    tschema = schema.tables[binding.db_table]
    columns: dict[str, ColumnMap] = {}
    ext_fields: list[str] = []
    missing: dict[str, FieldShape] = {}
    for fshape in shape.fields:
        name = fshape.name
        if name in binding.parents:
            continue
        if name in binding.ext_fields:
            ext_fields.append(name)
            continue
        column = tschema.columns.get(fshape.column or name)
        if column is None:
            missing[name] = fshape
            continue
        columns[name] = ColumnMap(name, column.name, column.type, _json_encoded(fshape, column.type), fshape)
    refs: dict[str, tuple[str, str]] = {}
    for spec in shape.references:
        if spec.field in binding.parents:
            storage = "parent"
        elif spec.field in columns and not columns[spec.field].json and columns[spec.field].type.key.kind == "uuid":
            storage = "column"
        else:
            storage = "ext"  # JSON text or external_ids: checked by a read, not atomically
        refs[spec.field] = (spec.target, storage)
    ext = tschema.columns.get(EXTERNAL_IDS)
    ext_type = ext.type if ext is not None and ext.type.is_map and ext.type.key.kind == "string" else None
    return TableMap(
        shape,
        db,
        binding.db_table,
        columns,
        tuple(ext_fields),
        missing,
        dict(binding.parents),
        refs,
        tschema.is_root,
        ext_type,
        _unique_rules(shape, tschema, columns, binding),
    )


def _unique_rules(
    shape: ModelShape, tschema: TableSchema, columns: Mapping[str, ColumnMap], binding: TableBinding
) -> tuple[UniqueRule, ...]:
    indexes = {frozenset(index) for index in tschema.indexes}
    rules: list[UniqueRule] = []
    for group in shape.unique:
        key = tschema.columns.get(unique_column(group))
        if key is not None and key.type.is_scalar and key.type.key.kind == "string":
            rules.append(UniqueRule("+".join(group), group, key.name, frozenset([key.name]) in indexes))
            continue
        held = {columns[f].column for f in group if f in columns}
        in_columns = len(held) == len(group)
        where_ok = not any(f in binding.parents for f in group)
        rules.append(
            UniqueRule("+".join(group), group, None, in_columns and frozenset(held) in indexes, True, where_ok)
        )
    by_column = {cm.column: name for name, cm in columns.items()}
    covered = {frozenset(columns[f].column for f in r.fields) for r in rules if all(f in columns for f in r.fields)}
    for index in tschema.indexes:
        if frozenset(index) in covered or not all(c in by_column for c in index):
            continue
        group = tuple(by_column[c] for c in index)
        rules.append(UniqueRule("+".join(group), group, None, True, declared=False))
    return tuple(rules)


def _owner_link(
    shape: ModelShape, schema: DatabaseSchema, table: str, db: str
) -> tuple[dict[str, tuple[str, str]], str]:
    """The parent link of a model bound by its name, or why the served schema has none for it.

    Its ``nbdb_owned_by`` field that no column of ``table`` holds (``nbdb models generate`` writes one for
    the rows of a non-root table that one set column owns, ``HA_Chassis.ha_chassis_group``, as the
    built-in models' bindings name theirs) is kept as membership in the one set column holding the
    table (:meth:`DatabaseSchema.holder`). Where the served schema has no such column for it (the table
    became a root, a second column holds it: another schema than the models'), the reason, and the
    model is served by no table: without the link its every row read as corrupt, and a write failed.
    """
    columns = schema.tables[table].columns
    fields = [
        spec
        for spec in shape.references
        if spec.field in shape.owned_by and (shape.field(spec.field).column or spec.field) not in columns
    ]
    if not fields:
        return {}, ""
    holder, why = schema.holder(table)
    if holder is not None and len(fields) == 1 and fields[0].target == (f"{db}.{holder[0]}" if db else holder[0]):
        return {fields[0].field: holder}, ""
    named = ", ".join(f"{shape.table}.{spec.field} (an owning {spec.target})" for spec in fields)
    if holder is not None:
        why = f"{holder[0]}.{holder[1]} holds its rows"
    return {}, (
        f"the served {schema.name} schema (version {schema.version}) has no one set column holding the rows of "
        f"{table} for {named}: {why or 'it is a root table'}; use models generated from the served schema"
    )


def build_mapping(
    schemas: Mapping[str, DatabaseSchema],
    bindings: Mapping[str, Sequence[TableBinding]],
    shapes: Iterable[ModelShape],
    model_db: str | None = None,
) -> Mapping_:
    """Map every model onto the served schemas.

    ``bindings`` gives, per database, where models live; in ``model_db``
    (the schema :func:`generate_schema` wrote) a model lives in the table of
    its own name, and a model named ``"<database>.<table>"`` (as ``nbdb models
    generate`` writes them) in that table. A bound table the served schema lacks raises
    :class:`nbdb.UnsupportedError` naming it (unless the binding is optional).
    """
    by_model = {shape.table: shape for shape in shapes}
    tables: dict[str, TableMap] = {}
    unserved: dict[str, str] = {}
    for db, db_bindings in bindings.items():
        schema = schemas.get(db)
        if schema is None:
            continue
        for binding in db_bindings:
            shape = by_model.get(binding.model_table)
            if shape is None:
                continue
            if binding.db_table not in schema.tables:
                if not binding.required:
                    continue
                raise errors.UnsupportedError(
                    f"the served {db} schema (version {schema.version}) has no table {binding.db_table}, which "
                    f"holds {binding.model_table}: nbdb needs a schema with it"
                )
            for ptable, pcolumn in binding.parents.values():
                if ptable not in schema.tables:
                    raise errors.UnsupportedError(
                        f"the served {db} schema (version {schema.version}) has no table {ptable}, the parent "
                        f"of {binding.model_table}"
                    )
                if pcolumn not in schema.tables[ptable].columns:
                    # Monitored all the same, the server refused the monitor and every read and write
                    # waited for it to load, for minutes.
                    raise errors.UnsupportedError(
                        f"the served {db} schema (version {schema.version}) has no column {ptable}.{pcolumn}, "
                        f"which holds the {binding.model_table} rows of each {ptable}: nbdb needs a schema with it"
                    )
            tables[shape.table] = _table_map(shape, db, schema, binding)
    for shape in by_model.values():
        if shape.table in tables:
            continue
        # "<database>.<table>" (generated models), or a table of the model database of the same name.
        db, dot, name = shape.table.partition(".")
        if not dot:
            db, name = model_db or "", shape.table
        schema = schemas.get(db)
        if schema is not None and name in schema.tables:
            parents, why = _owner_link(shape, schema, name, db if dot else "")
            if why:
                unserved[shape.table] = why
                continue
            tables[shape.table] = _table_map(shape, db, schema, TableBinding(shape.table, name, parents=parents))
    by_db_table: dict[tuple[str, str], list[TableMap]] = {}
    for tm in tables.values():
        by_db_table.setdefault((tm.db, tm.db_table), []).append(tm)
    links: dict[tuple[str, str], list[Link]] = {}
    for tm in tables.values():
        for fname, (ptable, pcol) in tm.parents.items():
            links.setdefault((tm.db, ptable), []).append(Link(tm, fname, ptable, pcol))
    for (db, ptable), held in links.items():
        columns = schemas[db].tables[ptable].columns
        needed = tuple(sorted({link.column for link in held if columns[link.column].type.min > 0}))
        for parent in by_db_table.get((db, ptable), ()):
            parent.held_at_least_one = needed
    return Mapping_(tables, by_db_table, links, dict(schemas), unserved)
