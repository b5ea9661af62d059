"""Static declarations of what a backend guarantees, and checks of what an application requires.

A backend declares one :class:`Capabilities` object. The conformance kit turns
each field into an expectation (a feature declared absent must raise
UnsupportedError; one declared present must work), ``docs/capabilities.md``
is generated from these declarations (``nbdb backends --markdown``), never
kept by hand, and :func:`nbdb.connect` checks an application's ``require=``
against them (:meth:`Capabilities.check`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from nbdb import errors

__all__ = ["Atomicity", "Capabilities", "Durability", "Expiry"]


class Atomicity(StrEnum):
    """How much of a transaction commits as one step."""

    ATOMIC = "atomic"
    """Every transaction commits all or nothing."""
    SINGLE_PARTITION = "single-partition"
    """Atomic when every object of the transaction has the same topic (one
    partition); a wider transaction raises UnsupportedError, never a partial write."""
    NONE = "none"
    """No multi-object transactions: transaction() raises UnsupportedError."""


class Durability(StrEnum):
    """Whether an acknowledged write survives a server restart."""

    DURABLE = "durable"
    """Always, on the server's defaults."""
    CONFIGURABLE = "configurable"
    """Only when the server is configured for it (say which setting in ``notes``)."""
    VOLATILE = "volatile"
    """Never: the data lives in memory only."""


class Expiry(StrEnum):
    """How objects created with a ``ttl`` disappear when nobody refreshes them."""

    NATIVE = "native"
    """The store expires them itself (etcd leases, ...), and watchers see the deletion."""
    REAPER = "reaper"
    """Connected clients delete expired objects (a documented reaper); watchers see the deletion."""
    NONE = "none"
    """No expiry: ``create(..., ttl=...)`` raises UnsupportedError."""


# Levels from best to worst, for require={"name": "level"}.
_ORDERS: dict[type[StrEnum], tuple[StrEnum, ...]] = {
    Atomicity: (Atomicity.ATOMIC, Atomicity.SINGLE_PARTITION, Atomicity.NONE),
    Durability: (Durability.DURABLE, Durability.CONFIGURABLE, Durability.VOLATILE),
    Expiry: (Expiry.NATIVE, Expiry.REAPER, Expiry.NONE),
}


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend guarantees. Every field is checked by the conformance kit."""

    transactions: Atomicity
    """Atomicity of ``Database.transaction()``."""
    linearizable_reads: bool
    """A read returns the latest committed write, from any client."""
    server_side_topic_filter: bool
    """A topic-filtered watch or list reads only that topic's data from the server."""
    durability: Durability
    """Whether acknowledged writes survive a server restart."""
    history: str
    """How far back ``watch(since=...)`` can resume; older revisions raise HistoryGoneError."""
    cross_process: bool
    """Several processes share the data, locks and id counters."""
    locks: bool = True
    """``Database.lock()`` gives mutual exclusion among the clients that share the data."""
    allocate_id: bool = True
    """``Database.allocate_id()`` hands out unique increasing integers."""
    unique: bool = False
    """Unique fields (``Model.nbdb_unique``) are enforced atomically by the store."""
    fencing: bool = False
    """Writes can be fenced on a held lock (``fence=``): they commit only while it is held."""
    expiry: Expiry = Expiry.NONE
    """Objects created with a ``ttl`` vanish when not refreshed."""
    pages: bool = False
    """``list(..., limit=N)`` returns consistent pages at one revision (``after=`` continues)."""
    max_txn_ops: int | None = None
    """The most store operations one commit may take, counted as the store counts them (None: no limit).

    An update or delete takes at least one per object (its version check, which
    nothing can merge); what a create takes depends on the store (etcd nests
    writes and merges absence checks: see the backend's page). A commit over the
    limit is refused with ValidationError before it reaches the server."""
    max_txn_bytes: int | None = None
    """The most bytes of records one commit may carry (None: no limit)."""
    cas_across_recreate: bool = False
    """A copy of an object that was deleted since, its id created again, is stale: ``update`` and ``delete``
    of it raise ConflictError even when the new object has reached its version (each creation of an id is an
    incarnation the compare-and-swap checks with the version). False: an id created again starts at version 1
    and only the version is compared (a copy of the deleted object may overwrite the new one)."""
    notes: str = ""
    """Anything a user must know that the fields above do not say."""

    def as_dict(self) -> dict[str, object]:
        """The declaration as plain values (for the capability matrix and ``nbdb backends``)."""
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}

    def check(self, require: Collection[str] | Mapping[str, Any]) -> None:
        """Raise UnsupportedError naming every required capability this backend lacks.

        ``require`` is a set of names ("supported at all") or a mapping of
        name to the level needed (``{"transactions": "atomic", "durability":
        "durable", "max_txn_ops": 200}``). An unknown name or level is a
        ValidationError.
        """
        if isinstance(require, str | bytes) or not isinstance(require, Collection | Mapping):
            # A string was a collection of its letters ("unknown capability 't'"), a number a TypeError.
            raise errors.ValidationError(
                f"require= takes a collection of capability names or a mapping of name to level, not {require!r}"
            )
        known = {f.name for f in fields(self)} - {"notes", "history"}
        names = list(require)
        for name in names:
            if not isinstance(name, str) or name not in known:
                raise errors.ValidationError(
                    f"unknown capability {name!r} in require= (known: {', '.join(sorted(known))})"
                )
        wanted: Mapping[str, Any] = require if isinstance(require, Mapping) else dict.fromkeys(names)
        missing: list[str] = []
        for name, level in wanted.items():
            have = getattr(self, name)
            if not _satisfies(name, have, level):
                missing.append(f"{name}={have} (needed: {'supported' if level is None else level})")
        if missing:
            raise errors.UnsupportedError("the backend lacks required capabilities: " + "; ".join(missing))


def _satisfies(name: str, have: Any, level: Any) -> bool:
    if isinstance(have, StrEnum):
        order = _ORDERS[type(have)]
        if level is None:
            return bool(have is not order[-1])
        try:
            needed = type(have)(str(level))
        except ValueError:
            raise errors.ValidationError(
                f"require={{{name!r}: {level!r}}}: the levels are {', '.join(str(o) for o in order)}"
            ) from None
        return order.index(have) <= order.index(needed)
    if name.startswith("max_"):
        if level is None:
            return True
        if not isinstance(level, int) or isinstance(level, bool) or level < 1:
            raise errors.ValidationError(f"require={{{name!r}: ...}} takes a positive whole number, not {level!r}")
        return have is None or have >= level
    if level not in (None, True, False):
        raise errors.ValidationError(f"require={{{name!r}: ...}} takes true or false, not {level!r}")
    return bool(have) or level is False
