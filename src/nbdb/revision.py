"""Revisions that remember which sequence they belong to.

A revision is an ordered resume token. On most backends every connection to a
store shares one sequence (etcd's revision, the Redis and Cassandra commit
counters), so a revision obtained through one connection means the same to
every other. On some (OVSDB today) revisions count per connection: a number
from one connection says nothing to another. :class:`Revision` is an ``int``
that carries the ``scope`` of its sequence, so that code comparing revisions
(:meth:`nbdb.Cache.wait_for`) can refuse a foreign one instead of guessing.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GLOBAL_SCOPE", "Revision"]

GLOBAL_SCOPE: Any = None
"""The scope of backends whose revisions mean the same through every connection."""


class Revision(int):
    """An ``int`` revision, tagged with the scope (sequence) it belongs to.

    It compares, hashes and computes like the plain integer; arithmetic gives
    plain integers. Two revisions can be compared meaningfully only when their
    ``scope`` is equal (``GLOBAL_SCOPE`` on backends with shared revisions).
    """

    scope: Any = GLOBAL_SCOPE
    """The sequence this revision belongs to (read from the class unless set)."""

    def __new__(cls, value: int, scope: Any = GLOBAL_SCOPE) -> Revision:
        """The revision ``value`` of the sequence ``scope``."""
        self = super().__new__(cls, value)
        if scope is not GLOBAL_SCOPE:
            # Only then does the instance get a __dict__: every stored object
            # keeps the revision of its commit, and a dict per revision was
            # one more container for the cyclic collector to scan.
            self.scope = scope
        return self

    def __repr__(self) -> str:
        return f"Revision({int(self)})"

    def __str__(self) -> str:
        return int.__repr__(self)

    def __reduce__(self) -> tuple[Any, ...]:
        # A scope is a live token of this process: another process must not
        # mistake an unpickled revision for one of its own sequences.
        return (Revision, (int(self), GLOBAL_SCOPE if self.scope is GLOBAL_SCOPE else object()))
