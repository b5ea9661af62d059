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

from collections.abc import Callable
from typing import Any

__all__ = ["GLOBAL_SCOPE", "Revision", "Watermark"]

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

    written: int | None = None
    """The stamp of the commit, where its revision counts per connection: what the records it put carry as
    :attr:`nbdb.spi.Record.written` (OVSDB: the commit's token, the same on every client), so that its results
    compare with a record as a read copy does (see :func:`nbdb.models.base.written_of`); None (read from the
    class unless set): the revision itself is that stamp, or none is known."""

    def __new__(cls, value: int, scope: Any = GLOBAL_SCOPE, written: int | None = None) -> Revision:
        """The revision ``value`` of the sequence ``scope``, of a commit stamped ``written`` (see :attr:`written`)."""
        self = super().__new__(cls, value)
        if scope is not GLOBAL_SCOPE:
            # Only then does the instance get a __dict__: every stored object
            # keeps the revision of its commit, and a dict per revision was
            # one more container for the cyclic collector to scan.
            self.scope = scope
        if written is not None:
            self.written = written
        return self

    def __repr__(self) -> str:
        return f"Revision({int(self)})"

    def __str__(self) -> str:
        return int.__repr__(self)

    def __reduce__(self) -> tuple[Any, ...]:
        # A scope is a live token of this process: another process must not
        # mistake an unpickled revision for one of its own sequences. The commit's
        # token (``written``) is the same on every client: it is kept, so that a
        # deep copy or an unpickled result of a row deleted and created again is
        # still refused (without it the version alone was compared: a lost update).
        scope = GLOBAL_SCOPE if self.scope is GLOBAL_SCOPE else object()
        if self.written is None:
            return (Revision, (int(self), scope))
        return (Revision, (int(self), scope, self.written))


class Watermark:
    """The highest revision one Database has seen of its store (by its commits and its caches), to tell a reset.

    On a store of one global sequence a commit's revision is above every
    revision observed before the commit began: each was committed before it.
    A commit that comes back *below* the mark found a store that went back in
    time (a server that restarted without its data, a failover to a replica
    that lacked the last writes). Its caches then hold objects and a revision
    of a history that is gone: :meth:`nbdb.Cache.wait_for` compared the new,
    lower revision with the cache's old one and said "reflected" at once,
    before the cache had noticed and listed again. ``went_back(seen, revision)``
    (the Database's) tells them. An equal revision is no proof (a commit that
    changed nothing, on etcd, keeps the store's revision), so only a lower one
    counts. The marks are written without a lock: a lost raise of the mark only
    misses a detection, it never invents one (every value written was observed).
    """

    __slots__ = ("seen", "went_back")

    def __init__(self) -> None:
        self.seen = 0
        """The highest revision observed (lowered to the new sequence's once it went back)."""
        self.went_back: Callable[[int, int], None] | None = None
        """Called (``seen``, ``revision``) when a commit comes back below ``seen``."""

    def committed(self, before: int, revision: int) -> None:
        """A commit that began when the mark was ``before`` came back at ``revision`` (or a linearizable read
        of the store's current revision, begun then, read it: the same proof)."""
        if revision >= before:
            if revision > self.seen:
                self.seen = revision
            return
        self.seen = revision
        hook = self.went_back
        if hook is not None:
            hook(before, revision)

    def observed(self, revision: int) -> None:
        """A cache reached ``revision`` of the store."""
        if revision > self.seen:
            self.seen = revision
