"""An OVSDB schema for the models that no bound table holds (the *model database*).

A model's unique fields (``nbdb_unique``) become a *key column* per group
(:func:`unique_column`) with an index on it: nbdb writes there the
namespace and the group's value (or, for a group left unset, a text only
that row can hold), so ovsdb-server itself refuses a second holder of a value
within a namespace, atomically and whoever writes. An index on the fields'
own columns could do neither: it would span namespaces, and it counts two
unset (empty) values as equal.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from nbdb import errors
from nbdb.families.ovsdb.schema import is_ovsdb_id, is_schema_version
from nbdb.models.shape import FieldShape, ModelShape, model_shapes

__all__ = ["UNIQUE_COLUMN_PREFIX", "column_type", "generate_schema", "unique_column"]

_ATOMS = {
    "string": "string",
    "enum": "string",
    "integer": "integer",
    "real": "real",
    "boolean": "boolean",
    "uuid": "uuid",
}
_STRING_MAP = {"key": "string", "value": "string", "min": 0, "max": "unlimited"}

UNIQUE_COLUMN_PREFIX = "nbdb_unique_"


def _check_id(what: str, name: object, remedy: str = "give the model another nbdb_table or field name") -> None:
    if not is_ovsdb_id(name):
        raise errors.ValidationError(
            f"{what} {name!r} cannot be an OVSDB name: it must be ASCII letters, digits and '_', beginning with a "
            f"letter (RFC 7047 reserves names beginning with '_'); {remedy}"
        )


def unique_column(group: tuple[str, ...]) -> str:
    """The name of the key column of a unique group of fields (``nbdb_unique_zone_slot``)."""
    return UNIQUE_COLUMN_PREFIX + "_".join(group)


def column_type(field: FieldShape) -> dict[str, Any] | str:
    """The OVSDB type of a column holding ``field``.

    Typed where OVSDB has a type: atoms and their optionals, maps of atoms,
    sets of references; other values (lists, which keep order and duplicates,
    and nested values) are JSON text in a string column.
    """
    atom = _ATOMS.get(field.kind)
    if field.container == "scalar" and atom is not None:
        return {"key": atom, "min": 0, "max": 1} if field.optional else atom
    if field.container == "map" and atom is not None and field.key_kind in ("string", "integer", "uuid"):
        return {"key": _ATOMS[field.key_kind], "value": atom, "min": 0, "max": "unlimited"}
    if field.container == "set" and atom is not None:
        return {"key": atom, "min": 0, "max": "unlimited"}
    return "string"


def generate_schema(
    shapes: Iterable[ModelShape] | None = None,
    name: str = "nbdb",
    version: str = "1.0.0",
    exclude: Iterable[str] = (),
) -> dict[str, Any]:
    """An OVSDB schema (``.ovsschema`` JSON) with one table per model not in ``exclude``.

    Models generated from a schema (named ``"<database>.<table>"``) are left
    out: their tables exist in their own database.

    Serve it as a second database next to ``OVN_Northbound`` (``ovsdb-tool
    create nbdb.db nbdb.ovsschema``; ``ovsdb-server nb.db nbdb.db``) and name
    it in the URL (``?model_db=nbdb``, the default). ``shapes`` defaults to
    every model defined in this process.
    """
    # A name or version ovsdb-server cannot parse was written out as a schema that ovsdb-tool then refused
    # ("Type mismatch for member 'name'"): `nbdb schema ovsdb --name ""` printed it and exited 0.
    _check_id("the database name", name, "give the schema another name (nbdb schema ovsdb --name)")
    if not is_schema_version(version):
        raise errors.ValidationError(f"the schema version {version!r} is not <x>.<y>.<z> (RFC 7047), e.g. '1.0.0'")
    skip = set(exclude)
    tables: dict[str, Any] = {}
    for shape in shapes if shapes is not None else model_shapes():
        if shape.table in skip or "." in shape.table:
            continue  # "<database>.<table>": a generated model of a table that exists already
        _check_id("the table", shape.table)
        columns: dict[str, Any] = {"external_ids": {"type": dict(_STRING_MAP)}}
        for field in shape.fields:
            _check_id(f"{shape.table}: the column", field.column or field.name)
            columns[field.column or field.name] = {"type": column_type(field)}
        table: dict[str, Any] = {"columns": columns, "isRoot": True}
        keys = [unique_column(group) for group in shape.unique]
        for key in keys:
            if key in columns:
                raise errors.ValidationError(
                    f"{shape.table}: the key column {key!r} of a unique group clashes with another column"
                )
            columns[key] = {"type": "string"}
        if keys:
            table["indexes"] = [[key] for key in keys]
        tables[shape.table] = table
    return {"name": name, "version": version, "tables": tables}
