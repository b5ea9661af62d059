"""Comparing two databases object by object.

Two snapshots (each read at one revision) are compared by (table, id) and
content; the per-backend ``version`` is not compared, since every backend
counts the writes of its own copy.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from nbdb.api import Database
from nbdb.models.base import Model
from nbdb.tools.apply import content
from nbdb.tools.snapshot import Snapshot, take_snapshot

__all__ = ["Difference", "compare", "format_differences", "verify"]


@dataclass(frozen=True, slots=True)
class Difference:
    """One object that is not the same on both sides.

    ``kind``: ``missing`` (only in the source), ``extra`` (only in the
    destination) or ``different``; ``fields`` maps each differing field to its
    (source, destination) values.
    """

    kind: str
    table: str
    id: str
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.kind != "different":
            where = "source" if self.kind == "missing" else "destination"
            return f"{self.kind}: {self.table} {self.id} (only in the {where})"
        parts = [f"{name}: {_short(a)} != {_short(b)}" for name, (a, b) in sorted(self.fields.items())]
        return f"different: {self.table} {self.id}: " + "; ".join(parts)


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_set(value: Any) -> Any:
    if isinstance(value, list):
        return sorted({json.dumps(v, sort_keys=True) for v in value})
    return value


def compare(source: Snapshot, destination: Snapshot, *, ignore_list_order: bool = False) -> list[Difference]:
    """Every object missing, extra or different in ``destination``, sorted by table and id.

    ``ignore_list_order``: compare list fields as sets (for a backend that
    stores them as sets, like OVSDB: sorted, without duplicates).
    """
    out: list[Difference] = []
    for key in sorted(source.objects.keys() | destination.objects.keys(), key=lambda k: (k[0], str(k[1]))):
        a = source.objects.get(key)
        b = destination.objects.get(key)
        if b is None:
            out.append(Difference("missing", key[0], str(key[1])))
        elif a is None:
            out.append(Difference("extra", key[0], str(key[1])))
        else:
            ca, cb = content(a), content(b)
            if ignore_list_order:
                ca = {k: _as_set(v) for k, v in ca.items()}
                cb = {k: _as_set(v) for k, v in cb.items()}
            if ca != cb:
                fields = {k: (ca.get(k), cb.get(k)) for k in ca.keys() | cb.keys() if ca.get(k) != cb.get(k)}
                out.append(Difference("different", key[0], str(key[1]), fields))
    return out


def verify(
    source: Database,
    destination: Database,
    models: Sequence[type[Model]],
    topics: Collection[str | None] | None = None,
    *,
    timeout: float = 300.0,
    ignore_list_order: bool = False,
) -> list[Difference]:
    """Snapshot both databases and compare them (at the moment: a live source may differ)."""
    a = take_snapshot(source, models, topics, timeout=timeout)
    b = take_snapshot(destination, models, topics, timeout=timeout)
    return compare(a, b, ignore_list_order=ignore_list_order)


def format_differences(differences: Sequence[Difference], limit: int = 50) -> Iterator[str]:
    """Lines describing ``differences`` (at most ``limit``, then a count of the rest)."""
    for diff in differences[:limit]:
        yield str(diff)
    if len(differences) > limit:
        yield f"... and {len(differences) - limit} more differences"
