"""Static declarations of what a backend guarantees.

A backend declares one :class:`Capabilities` object. The conformance kit turns
each field into an expectation, and ``docs/capabilities.md`` is generated from
these declarations (``nbdb backends --markdown``), never kept by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum

__all__ = ["Atomicity", "Capabilities", "Durability"]


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
    notes: str = ""
    """Anything a user must know that the fields above do not say."""

    def as_dict(self) -> dict[str, object]:
        """The declaration as plain values (for the capability matrix and ``nbdb backends``)."""
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}
