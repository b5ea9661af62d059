"""A change history kept in a list in this process: the rules of reading and trimming it.

The ``memory://`` store and the key-value family's in-process store
(:mod:`nbdb.testing.kvmemory`) each keep their committed changes in a list
ordered by revision, bounded in length. A reader behind what was trimmed gets
:class:`nbdb.HistoryGoneError` (never a silent gap), and the list is trimmed a
quarter of its bound at a time, so that trimming costs amortised O(1) a change.
"""

from __future__ import annotations

import bisect
from typing import Protocol, TypeVar

from nbdb import errors

__all__ = ["changes_after", "trim_history"]


class _Change(Protocol):
    @property
    def revision(self) -> int: ...


C = TypeVar("C", bound=_Change)


def changes_after(history: list[C], revision: int, compacted: int) -> list[C]:
    """The changes of ``history`` after ``revision``; HistoryGoneError if the kept history starts after it."""
    if revision < compacted:
        raise errors.HistoryGoneError(f"revision {revision} is older than the kept history (from {compacted})")
    return history[bisect.bisect_right(history, revision, key=lambda c: c.revision) :]


def trim_history(history: list[C], limit: int) -> int | None:
    """Drop the oldest changes beyond ``limit``, at least a quarter of it at a time.

    Returns the revision of the last change dropped (the history's new start), or None if nothing was.
    """
    excess = len(history) - limit
    if excess <= 0:
        return None
    cut = min(max(excess, limit // 4), len(history))
    compacted = history[cut - 1].revision
    del history[:cut]
    return compacted
