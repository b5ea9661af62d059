"""One walk of a pydantic core schema, for every question nbdb asks of one.

A core schema (``Model.__pydantic_core_schema__``) is a tree of dicts and
lists: a node is a dict with a ``type`` (``model``, ``list``, ``nullable``,
``default``, ``union``, ``dataclass-args``, ``function-after``...), and the
nodes it holds stand among its values, under keys that differ from kind to
kind (``schema``, ``items_schema``, ``choices``, ``fields``, ``definitions``,
``return_schema``...); a union's choice may be a pair of a node and its label
(``Annotated[X, Tag("x")]`` in a union without a discriminator). :func:`find`
descends every value of every node, and every item of a list or pair, so it
reaches all of them, for the kinds pydantic-core has now and for those it may
add, and it follows a ``definition-ref`` to its definition once (a recursive
model refers to itself). A caller says only what it looks for, as a rule of
one node.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, Final

__all__ = ["PRUNE", "definitions", "find", "model_node"]

PRUNE: Final = object()
"""What a rule answers of a node not to descend into (the walk goes on with the nodes beside it)."""


def find(
    schema: object,
    rule: Callable[[dict[str, Any]], object],
    *,
    refs: dict[str, Any] | None = None,
    skip: Collection[str] = (),
) -> Any:
    """The first answer of ``rule`` other than None and :data:`PRUNE`, over the nodes of ``schema``; None if none.

    Depth first, in the schema's order: ``rule`` is asked of a node, then of the nodes among its values (but
    those under the keys in ``skip``) and, in a list or tuple (a union's labelled choice), of each item.
    None: descend; :data:`PRUNE`: not into this node. With ``refs`` (see :func:`definitions`), a
    ``definition-ref`` is not asked about but followed to its definition, once per walk (again, or to a
    definition not in ``refs``: nothing found there); without, it is a node like any other.
    """
    return _walk(schema, rule, refs, skip, set())


def _walk(
    schema: object,
    rule: Callable[[dict[str, Any]], object],
    refs: dict[str, Any] | None,
    skip: Collection[str],
    seen: set[str],
) -> Any:
    if isinstance(schema, dict):
        if refs is not None and schema.get("type") == "definition-ref":
            ref = schema.get("schema_ref")
            if ref in seen or ref not in refs:
                return None
            seen.add(ref)
            return _walk(refs[ref], rule, refs, skip, seen)
        answer = rule(schema)
        if answer is PRUNE:
            return None
        if answer is not None:
            return answer
        values: Any = (value for key, value in schema.items() if key not in skip) if skip else schema.values()
    elif isinstance(schema, list | tuple):
        # A labelled choice of a union is a (node, label) pair: walking lists alone, a secret or a Json[...]
        # under Annotated[Any, Tag("a")] was never seen (the secret was stored as pydantic's mask).
        values = schema
    else:
        return None
    for value in values:
        found = _walk(value, rule, refs, skip, seen)
        if found is not None:
            return found
    return None


def definitions(schema: object) -> dict[str, Any]:
    """Every node of ``schema`` that names itself (its ``ref``), by that name: what a ``definition-ref`` refers to."""
    refs: dict[str, Any] = {}

    def note(node: dict[str, Any]) -> None:
        ref = node.get("ref")
        if type(ref) is str and node.get("type") != "definition-ref":
            refs[ref] = node

    find(schema, note)
    return refs


def model_node(schema: object, model: type) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``model``'s own node in a core schema (it may be wrapped, by validators or definitions), and its
    ``model-fields`` node; None if it has none (or its node holds no ``model-fields``)."""

    def own(node: dict[str, Any]) -> object:
        if node.get("type") == "model" and node.get("cls") is model:
            inner = node.get("schema")
            return (node, inner) if isinstance(inner, dict) and inner.get("type") == "model-fields" else PRUNE
        return None

    found: tuple[dict[str, Any], dict[str, Any]] | None = find(schema, own)
    return found
