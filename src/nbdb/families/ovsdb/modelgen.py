"""Typed nbdb models generated from any OVSDB schema (``nbdb models generate SCHEMA.ovsschema``).

One model per table, named in CamelCase, whose ``nbdb_table`` is
``"<database>.<table>"``: the OVSDB backend binds such a model to that table
of that database (no hand-written mapping), and the name never collides with
nbdb's own logical schema. Per column:

* atoms become ``str``, ``int`` (with its bounds, never wider than OVSDB's 64 bits), ``float``, ``bool``, or a
  reference (``Annotated[UUID, Reference("<database>.<table>")]``) for a
  ``uuid`` with a ``refTable``; a string with an ``enum`` becomes a ``StrEnum``, an integer's an
  ``IntEnum`` and a real's a ``float`` ``Enum`` (a boolean's or a uuid's stays a ``Literal``): an enum
  class, not a ``Literal``, so that a value a newer schema added reads (see :mod:`nbdb.models.enums`);
* an optional column (at most one element) becomes ``T | None = None``, a set
  a ``list[T]``, a map a ``dict[K, V]``;
* a table's unique indexes become ``nbdb_unique`` groups (enforced by every
  backend; on OVSDB by the index itself) and ``nbdb_indexes`` (the cache
  indexes their columns);
* the rows of a non-root table that exactly one set column of the schema holds
  strongly, a mutable one with no size limit (``"min": 0``, ``"max":
  "unlimited"``), are owned by that column's row, as ovsdb-server collects
  them: the model names its owner (a required reference with ``nbdb_owned_by``,
  as the built-in ``MeterBand.meter``) and the owner's model has no field for
  the column (the OVSDB backend keeps the reference as membership in it). Where
  the owner is not one row (several columns, a map, a column of at most one),
  or the column's size or immutability would be lost with its field (it stays
  a field, with its sizes), a comment says why none is named.

``external_ids`` is the base models' own field; a column whose name a field
cannot have (``id``, ``version``, ``topic``, Python keywords, the model's own
attributes such as ``replace`` or ``copy``, names the class body uses such as
``list`` or ``Field``) becomes a field with ``_`` appended that names its
column (``from_: Annotated[str, Column("from")]``); names starting with
``nbdb_`` or ``model_`` are left out, with a comment saying so. Class names are
unique in the module (a clash gets ``Table`` or ``Enum`` appended).
"""

from __future__ import annotations

import json
import keyword
import re
import textwrap
from typing import Any

from nbdb import errors
from nbdb.families.ovsdb.datum import INT_MAX, INT_MIN, BaseType, ColumnType
from nbdb.families.ovsdb.schema import (
    SERVER_DATABASE,
    ColumnSchema,
    DatabaseSchema,
    TableSchema,
    is_ovsdb_id,
    is_schema_version,
)
from nbdb.models import Model

__all__ = ["class_name", "generate_models"]

_RESERVED = frozenset({"id", "version", "topic", "external_ids", "model_config", "model_fields"})
_IMPORTED = frozenset(
    {
        "Annotated",
        "ClassVar",
        "Column",
        "Enum",
        "Field",
        "IntEnum",
        "Literal",
        "Model",
        "Reference",
        "ReprEnum",
        "StrEnum",
        "UUID",
    }
)
"""Names the generated module imports, which no class of it may take."""
_BUILTINS = frozenset({"str", "int", "float", "bool", "list", "dict"})
"""Built-in names the classes' bodies use: a field of that name hid them from the fields after it (a
column ``list`` made ``default_factory=list`` a field's default, and the module failed to import)."""
_I64_LOW, _I64_HIGH = "-(2**63)", "2**63 - 1"
"""OVSDB's integer range (``datum.INT_MIN``, ``INT_MAX``) as the generated source writes it."""
_PYTHON = {"string": "str", "integer": "int", "real": "float", "boolean": "bool", "uuid": "UUID"}


def _group(columns: tuple[str, ...]) -> str:
    """A unique group as Python source: ``"name"``, or ``("logical_port", "dst_ip")``."""
    if len(columns) == 1:
        return f'"{columns[0]}"'
    return "(" + ", ".join(f'"{c}"' for c in columns) + ")"


def class_name(table: str) -> str:
    """``Logical_Switch_Port`` -> ``LogicalSwitchPort`` (acronyms kept: ``ACL`` -> ``ACL``)."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^0-9A-Za-z]+", table) if part) or "Table"


def _member(value: Any) -> str:
    if type(value) is int or type(value) is float:
        # A number's name: its digits, its sign and point spelled out (-1 and 1 stay apart: V_MINUS_1, V_1).
        text = repr(value).replace("-", "MINUS_").replace(".", "_").replace("+", "")
        return "V_" + text.upper()
    name = re.sub(r"[^0-9A-Za-z]+", "_", str(value)).strip("_").upper() or "EMPTY"
    return f"V_{name}" if name[0].isdigit() else name


class _Module:
    """The generated source, built up table by table."""

    def __init__(self, schema: DatabaseSchema) -> None:
        self.schema = schema
        self.enums: dict[str, list[Any]] = {}
        """Enum -> its values (text, integers or reals: a ``StrEnum``, an ``IntEnum`` or a ``float`` ``Enum``)."""
        self.members: dict[str, list[str]] = {}
        """Enum -> its members' names, in the order of its values (distinct: ``a-b`` and ``a_b`` differ)."""
        self.classes: list[str] = []
        self.needs: set[str] = set()
        # Each name of the module once: a table's class, then each enum, never an imported name
        # (a table "Port_Type" and the enum of "Port.type" were both PortType: the later one won).
        # A table "None", "True" or "False" made a class of that name, which is no valid Python.
        self.taken: set[str] = set(_IMPORTED) | {"None", "True", "False"}
        self.names = {name: self.unique(class_name(name), "Table") for name in sorted(schema.tables)}
        self.owners = {name: schema.owner(name) for name in schema.tables}
        """Table -> its owner (parent table, set column) or None, and why none (:meth:`DatabaseSchema.owner`)."""
        self.held = {owner: child for child, (owner, _) in self.owners.items() if owner is not None}
        """(parent table, set column) -> the table whose rows it owns: the column is no field of the parent."""

    def unique(self, name: str, suffix: str) -> str:
        """``name``, or ``name`` + ``suffix`` (then a number) if the module has it already; taken."""
        candidate, n = name, 2
        if candidate in self.taken:
            candidate = name + suffix
        while candidate in self.taken:
            candidate, n = f"{name}{suffix}{n}", n + 1
        self.taken.add(candidate)
        return candidate

    def atom(self, table: str, column: str, base: BaseType) -> str:
        """The Python type of one atom of a column, with the schema's constraints on it."""
        if base.kind == "uuid" and base.ref_table:
            if base.ref_table not in self.schema.tables:
                # ovsdb-server refuses such a schema; the module was written, and failed at its first write.
                raise errors.ValidationError(
                    f"OVSDB schema column {table}.{column}: refTable {base.ref_table!r} is no table of the schema"
                )
            self.needs.update({"UUID", "Annotated", "Reference"})
            # A weak reference (ovsdb-server drops it when its target goes) is one to nbdb too.
            weak = ", weak=True" if base.ref_type == "weak" else ""
            return f'Annotated[UUID, Reference("{self.schema.name}.{base.ref_table}"{weak})]'
        if base.kind in _ENUM_BASES and base.enum:
            name = self.unique(class_name(table) + class_name(column), "Enum")
            self.enums[name] = [_ENUM_VALUE[base.kind](v) for v in base.enum]
            members: list[str] = []
            for value in self.enums[name]:
                member, n = _member(value), 2
                while member in members:
                    member, n = f"{_member(value)}_{n}", n + 1
                members.append(member)
            self.members[name] = members
            return name
        if base.enum:
            # An enum of booleans (no class can derive from bool) or uuids: the values themselves.
            self.needs.add("Literal")
            return f"Literal[{', '.join(_literal(base.kind, v) for v in base.enum)}]"
        if base.kind == "uuid":
            self.needs.add("UUID")
        bounds = []
        if base.kind == "integer":
            # The schema's range within OVSDB's own (64-bit, signed): a model refuses on every backend
            # what ovsdb-server refuses (memory:// and Redis stored 2**64, which OVSDB cannot hold).
            low = _I64_LOW if base.min_integer is None or base.min_integer <= INT_MIN else str(base.min_integer)
            high = _I64_HIGH if base.max_integer is None or base.max_integer >= INT_MAX else str(base.max_integer)
            bounds = [f"ge={low}", f"le={high}"]
        elif base.kind == "real":
            bounds = [f"{op}={v!r}" for op, v in (("ge", base.min_real), ("le", base.max_real)) if v is not None]
        elif base.kind == "string":
            # OVSDB counts characters (code points), as len() does.
            bounds = [f"{op}={v}" for op, v in (("min_length", base.min_length), ("max_length", base.max_length)) if v]
        if bounds:
            self.needs.update({"Annotated", "Field"})
            return f"Annotated[{_PYTHON[base.kind]}, Field({', '.join(bounds)})]"
        return _PYTHON[base.kind]

    def default(self, base: BaseType, key: str) -> str:
        """The default of a field of one atom: OVSDB's, moved within the atom's constraints."""
        if base.enum:
            if base.kind in _ENUM_BASES:
                return f"{key}.{self.members[key][0]}"
            return _literal(base.kind, base.enum[0])
        if base.kind == "integer" or base.kind == "real":
            low = base.min_integer if base.kind == "integer" else base.min_real
            high = base.max_integer if base.kind == "integer" else base.max_real
            value: float = 0
            if low is not None and value < low:
                value = low
            elif high is not None and value > high:
                value = high
            return repr(int(value)) if base.kind == "integer" else repr(float(value))
        if base.kind == "string":
            return '""'
        return "False"

    def field(self, table: str, column: ColumnSchema) -> str:
        """One field line (without indentation)."""
        ctype: ColumnType = column.type
        key = self.atom(table, column.name, ctype.key)
        # How many elements a set or map holds (a set of at least one, or of at most N, says so).
        # A set or map of at least one element has no default (OVSDB's, the empty one, is refused).
        sizes = [f"{op}={v}" for op, v in (("min_length", ctype.min), ("max_length", ctype.max)) if v]
        if ctype.value is not None:
            value = self.atom(table, column.name, ctype.value)
            self.needs.add("Field")
            args = ", ".join(([] if ctype.min else ["default_factory=dict"]) + sizes)
            return f"{column.name}: dict[{key}, {value}] = Field({args})"
        if ctype.is_optional:
            return f"{column.name}: {key} | None = None"
        if not ctype.is_scalar:
            self.needs.add("Field")
            args = ", ".join(([] if ctype.min else ["default_factory=list"]) + sizes)
            return f"{column.name}: list[{key}] = Field({args})"
        if ctype.key.kind == "uuid" or (ctype.key.kind == "string" and ctype.key.min_length and not ctype.key.enum):
            # A required reference, or a string that cannot be empty: no default.
            return f"{column.name}: {key}"
        return f"{column.name}: {key} = {self.default(ctype.key, key)}"

    def table(self, table: TableSchema) -> None:
        """The model class of one table."""
        lines = [f"class {self.names[table.name]}(Model):"]
        root = "" if table.is_root else " Rows live only while a row of another table references them."
        lines.append(f'    """``{self.schema.name}.{table.name}``.{root}"""')
        lines.append("")
        lines.append(f'    nbdb_table: ClassVar[str] = "{self.schema.name}.{table.name}"')
        columns = sorted(
            (n, c)
            for n, c in table.columns.items()
            if n != "external_ids" and n.isidentifier() and (table.name, n) not in self.held
        )
        fields = {name: self.field(table.name, column) for name, column in columns}
        names = self.field_names(table, [name for name, _ in columns])
        owner, why = self.owners[table.name]
        owner_field = self.owner_field(table, owner[0], names) if owner is not None else None
        if owner_field is not None:
            lines.append(f'    nbdb_owned_by: ClassVar[tuple[str, ...]] = ("{owner_field}",)')
        elif why:
            lines += _comment(f"no nbdb_owned_by: {why}")
        groups = [tuple(names[c] for c in i) for i in table.indexes if i and all(c in names for c in i)]
        if groups:
            indexed = list(dict.fromkeys(c for group in groups for c in group))
            listed = ", ".join(f'"{c}"' for c in indexed) + ("," if len(indexed) == 1 else "")
            lines.append(f"    nbdb_indexes: ClassVar[tuple[str, ...]] = ({listed})")
            unique = ", ".join(_group(group) for group in groups) + ("," if len(groups) == 1 else "")
            lines.append(f"    nbdb_unique: ClassVar[tuple[str | tuple[str, ...], ...]] = ({unique})")
        lines.append("")
        if owner is not None and owner_field is not None:
            # The owner's set column holds the row (OVSDB's direction); the model names its owner instead,
            # as the built-in MeterBand names its meter, and the OVSDB backend keeps it as that membership.
            self.needs.update({"UUID", "Annotated", "Reference"})
            target = f"{self.schema.name}.{owner[0]}"
            lines.append(f"    # kept in {owner[0]}.{owner[1]} on OVSDB")
            lines.append(f'    {owner_field}: Annotated[UUID, Reference("{target}")]')
        for name in sorted(n for n in table.columns if n != "external_ids"):
            child = self.held.get((table.name, name))
            if child is not None:
                lines += _comment(
                    f"column {name!r} holds {child} rows: each names this row and goes with it (nbdb_owned_by)"
                )
                continue
            if name not in names:
                lines.append(f"    # column {name!r} is left out: a model cannot have a field of that name")
                continue
            body = fields[name].removeprefix(name)
            if names[name] != name:
                # ": TYPE = DEFAULT" -> ": Annotated[TYPE, Column("name")] = DEFAULT" (no type holds " = ").
                annotation, eq, default = body.removeprefix(": ").partition(" = ")
                self.needs.update({"Annotated", "Column"})
                body = f": Annotated[{annotation}, Column({json.dumps(name)})]{eq}{default}"
            line = f"    {names[name]}{body}"
            if len(line) > 120 and " = Field(" in line:
                head, _, args = line.rpartition(" = Field(")
                line = f"{head} = Field(\n        {args.removesuffix(')')}\n    )"
            lines.append(line)
        self.classes.append("\n".join(lines))

    def owner_field(self, table: TableSchema, owner: str, names: dict[str, str]) -> str:
        """The name of the field naming the owner: the owner table's, lower case, else ``owner_`` and it,
        ``_`` appended while taken.

        Never a column of the table: the OVSDB backend keeps a reference field without a column of its
        own as membership in the owner's set column. A name starting with ``model``, ``nbdb`` or ``_``
        gets the ``owner_`` prefix before any ``_`` is appended (``model_box`` can never be a field, and
        ``model`` + ``_`` is no field either: appending alone spun for ever); then only finitely many
        names (keywords, the model's attributes, the module's, the table's) can be in the way.
        """

        def free(name: str) -> bool:
            taken = name in self.taken or name in table.columns or name in names.values()
            return _usable(name) and name not in _BUILTINS and not taken

        candidate = owner.lower()
        if not free(candidate) and candidate.startswith(("model", "nbdb", "_")):
            candidate = f"owner_{candidate}"
        while not free(candidate):
            candidate += "_"
        return candidate

    def field_names(self, table: TableSchema, columns: list[str]) -> dict[str, str]:
        """Column -> the name of its field: its own, or with ``_`` appended where a field cannot have it.

        A column named as a Python keyword (``from``), as one of the model's own attributes (``id``,
        ``copy``) or as a name the class body uses (pydantic's ``Field``, ``str``, an enum of the module,
        which it would hide from the lines after it) gets ``Column("<name>")``, so it is neither lost
        nor left at its default by every insert (the model of Open_vSwitch's ``Flow_Sample_Collector_Set``
        had no ``id``, part of its unique index).
        """

        def free(name: str) -> bool:
            return _usable(name) and name not in self.taken and name not in _BUILTINS

        names = {name: name for name in columns if free(name)}
        for name in columns:
            if name in names:
                continue
            candidate = name + "_"
            while candidate in table.columns or candidate in names.values():
                candidate += "_"
            if free(candidate):
                names[name] = candidate
        return names

    def source(self) -> str:
        """The whole module."""
        typing_names = sorted({"ClassVar"} | (self.needs & {"Annotated", "Literal"}))
        head = [
            f'"""nbdb models of the OVSDB database {self.schema.name} (schema version {self.schema.version}).',
            "",
            "Generated by ``nbdb models generate``; regenerate rather than edit.",
            '"""',
            "",
            "from __future__ import annotations",
            "",
        ]
        if self.enums:
            bases = {_base_of(values) for values in self.enums.values()}
            head.append(f"from enum import {', '.join(sorted(_ENUM_IMPORTS[b] for b in bases))}")
        head.append(f"from typing import {', '.join(typing_names)}")
        if "UUID" in self.needs:
            head.append("from uuid import UUID")
        head.append("")
        if "Field" in self.needs:
            head += ["from pydantic import Field", ""]
        imported = ", ".join(sorted({"Model"} | (self.needs & {"Column", "Reference"})))
        head.append(f"from nbdb.models import {imported}")
        names = sorted(self.enums) + [block.split("(")[0].removeprefix("class ") for block in self.classes]
        # Sorted as ruff sorts __all__ (isort style: constants, classes, then the rest).
        ordered = sorted(names, key=lambda n: (not n.isupper(), n))
        head += ["", "__all__ = [", *(f'    "{n}",' for n in ordered), "]", ""]
        body = []
        for name, values in sorted(self.enums.items()):
            # Values as Python literals: a quote or a backslash in one stays inside its string.
            members = "\n".join(f"    {m} = {_source(v)}" for m, v in zip(self.members[name], values, strict=True))
            body.append(f'class {name}({_base_of(values)}):\n    """Values of the column."""\n\n{members}')
        body += self.classes
        return "\n".join(head) + "\n\n" + "\n\n\n".join(body) + "\n"


_ENUM_BASES = {"string": "StrEnum", "integer": "IntEnum", "real": "float, ReprEnum"}
"""The class an enumerated column's atoms become: one of the enum, so that a newer schema's value reads."""
_ENUM_VALUE: dict[str, Any] = {"string": str, "integer": int, "real": float}
_ENUM_IMPORTS = {"StrEnum": "StrEnum", "IntEnum": "IntEnum", "float, ReprEnum": "ReprEnum"}


def _base_of(values: list[Any]) -> str:
    """The bases of the enum class of ``values`` (all of one type, see :attr:`_Module.enums`)."""
    return _ENUM_BASES[{str: "string", int: "integer", float: "real"}[type(values[0])]]


def _source(value: Any) -> str:
    """An enum member's value as Python source (a quote or a backslash in text stays inside its string)."""
    return json.dumps(value) if type(value) is str else repr(value)


def _comment(text: str) -> list[str]:
    """A comment line of a class body, wrapped within 120 characters."""
    return [f"    # {line}" for line in textwrap.wrap(text, 114)]


def _literal(kind: str, value: Any) -> str:
    """One enum value of a non-string atom as Python source."""
    if kind == "boolean":
        return "True" if value else "False"
    if kind == "uuid":
        return json.dumps(str(value[1] if isinstance(value, list) else value))
    return repr(int(value)) if kind == "integer" else repr(float(value))


def _usable(name: str) -> bool:
    return (
        name.isidentifier()
        and not keyword.iskeyword(name)
        and name not in _RESERVED
        and not name.startswith(("_", "model_", "nbdb_"))
        # A field named as one of the model's own attributes hides it (a column "replace" made
        # obj.replace a string, and every update through the model failed).
        and not hasattr(Model, name)
    )


def _check_names(schema: DatabaseSchema) -> None:
    """ValidationError for a database or table name, or a version, that ovsdb-server refuses.

    They are written into the module's strings and docstrings as they are: a version
    ``1\"\"\"`` followed by a line of code ran that code when the module was imported.
    """
    # The same rules as the schemas nbdb writes (schemagen), but for the server's own database, which a
    # model module may be made for (`nbdb models generate` of its get_schema reply).
    if not (is_ovsdb_id(schema.name) or schema.name == SERVER_DATABASE):
        raise errors.ValidationError(f"OVSDB schema name {schema.name!r} is not an OVSDB identifier")
    if schema.version and not is_schema_version(schema.version):
        raise errors.ValidationError(f"OVSDB schema version {schema.version!r} is not of the form x.y.z")
    for name in schema.tables:
        if not is_ovsdb_id(name):
            raise errors.ValidationError(f"OVSDB schema table name {name!r} is not an OVSDB identifier")


def generate_models(schema: DatabaseSchema) -> str:
    """The Python source of a module with one nbdb model per table of ``schema``."""
    _check_names(schema)
    module = _Module(schema)
    for name in sorted(schema.tables):
        module.table(schema.tables[name])
    return module.source()
