"""A commit as the change stream sees it: its index entry and its change rows."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

__all__ = ["ChangeRow", "Intent"]


@dataclass(frozen=True, slots=True)
class Intent:
    """One entry of the commit index: revision g is for this partition and these tables (or void)."""

    revision: int
    partition: str
    tables: frozenset[str]
    void: bool = False


@dataclass(frozen=True, slots=True)
class ChangeRow:
    """One change row, as the store returns it (``Q_CHANGES``) or as its commit wrote it (version 0: absent)."""

    rev: int
    tbl: str
    id: uuid.UUID
    data: bytes | None
    version: int
    old_data: bytes | None
    old_version: int
    wrev: int | None = None
    """The revision that wrote the new value (its commit's; None: absent, or a row that does not say)."""
    old_wrev: int | None = None
    """The revision that wrote the old value (None: absent, or not known)."""
