"""Projections: a cache that keeps only some fields of a model.

An agent that follows many objects but reads few of their fields (a chassis
agent needs a port's chassis, addresses and name, not its options or DHCP
settings) keeps a :class:`PartialView` per object instead of the model: a
slotted, immutable object holding ``id``, ``version``, ``topic`` and the kept
fields, sharing their values with the decoded record.

A view is deliberately *not* a :class:`nbdb.Model`: it cannot be passed to
``create``, ``update`` or ``delete`` (that raises ValidationError), so a
partial copy is never written back by mistake over the fields it lacks. To
change the object, read it whole (``db.get(view.model, view.id)``) and write
that. Records are still validated as the full model before projection, so a
corrupt record is reported as in any cache.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from nbdb import errors
from nbdb.models.base import Model

__all__ = ["PartialView", "view_class"]

_ALWAYS = ("id", "version", "topic")


class PartialView:
    """Some fields of a stored object: read-only, typed by ``model``, never writable back.

    Subclasses are made per (model, fields) by :func:`view_class`. Equal when
    the model and every kept value are equal.
    """

    __slots__ = ()
    model: ClassVar[type[Model]]
    """The full model this is a view of."""
    nbdb_fields: ClassVar[tuple[str, ...]]
    """Every attribute a view holds: ``id``, ``version``, ``topic`` and the kept fields."""
    nbdb_table: ClassVar[str]
    nbdb_index_fields: ClassVar[tuple[str, ...]]
    """The model's indexed fields that the view keeps (a cache indexes them)."""

    @classmethod
    def of(cls, obj: Model) -> PartialView:
        """The view of a full model instance."""
        view = object.__new__(cls)
        for name in cls.nbdb_fields:
            object.__setattr__(view, name, getattr(obj, name))
        return view

    def __setattr__(self, name: str, value: Any) -> None:
        raise errors.ValidationError(f"{type(self).__name__} is a read-only partial view")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PartialView):
            return NotImplemented
        return type(self) is type(other) and all(getattr(self, f) == getattr(other, f) for f in self.nbdb_fields)

    __hash__ = None  # type: ignore[assignment]  # values may be lists and dicts

    def __repr__(self) -> str:
        values = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.nbdb_fields)
        return f"{type(self).__name__}({values})"

    # One rule for what a cache indexes, whether it holds models or views.
    index_values = Model.index_values

    def model_dump(self) -> dict[str, Any]:
        """The kept values by field name."""
        return {f: getattr(self, f) for f in self.nbdb_fields}


@functools.cache
def view_class(model: type[Model], fields: tuple[str, ...]) -> type[PartialView]:
    """The view class of ``model`` keeping ``fields`` (plus id, version and topic); one per combination."""
    unknown = [f for f in fields if f not in model.model_fields]
    if unknown:
        raise errors.ValidationError(f"{model.__name__} has no field {', '.join(map(repr, unknown))}")
    kept = _ALWAYS + tuple(f for f in dict.fromkeys(fields) if f not in _ALWAYS)
    namespace: dict[str, Any] = {
        "__slots__": kept,
        "__module__": __name__,
        "__doc__": f"A partial view of {model.__name__}: {', '.join(kept)}.",
        "model": model,
        "nbdb_fields": kept,
        "nbdb_table": model.nbdb_table,
        "nbdb_index_fields": tuple(f for f in model.nbdb_index_fields if f in kept),
    }
    return type(f"{model.__name__}View", (PartialView,), namespace)


def projections(
    models: Iterable[type[Model]], fields: Mapping[type[Any], Iterable[str]] | Iterable[str] | None
) -> dict[type[Model], type[PartialView]]:
    """The view class of each projected model, from a cache's ``fields=`` argument.

    ``fields`` is a mapping from model to kept fields, or, for a cache of one
    model, the kept fields themselves.
    """
    if fields is None:
        return {}
    followed = list(models)
    if isinstance(fields, Mapping):
        mapping = fields
    elif isinstance(fields, str):
        raise errors.ValidationError("fields= takes a list of field names, not one string")
    elif len(followed) == 1:
        mapping = {followed[0]: fields}
    else:
        raise errors.ValidationError("fields= of a cache of several models maps each model to its fields")
    out = {}
    for model, names in mapping.items():
        if model not in followed:
            raise errors.ValidationError(
                f"fields= names {getattr(model, '__name__', model)}, which the cache does not follow"
            )
        if isinstance(names, str | bytes) or not isinstance(names, Iterable):  # fields=5 was a TypeError
            raise errors.ValidationError(f"fields= of {model.__name__} takes a list of field names, not {names!r}")
        out[model] = view_class(model, tuple(names))
    return out
