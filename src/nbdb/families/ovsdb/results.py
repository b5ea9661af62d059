"""The outcome of an OVSDB transaction (RFC 7047 section 4.1.3), as typed per-operation errors.

ovsdb-server answers a ``transact`` with one result per operation; when the
transaction is aborted, the failing operation's result (or an extra one after
the last, for a commit-time failure) carries an ``error`` string. Each string
becomes one class here, with the index of the operation it belongs to, so a
planner can say *which* of its checks failed and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "ConstraintViolation",
    "DuplicateUuid",
    "OperationError",
    "ReferentialIntegrityViolation",
    "TimedOut",
    "check",
    "operation_error",
]


@dataclass(frozen=True, slots=True)
class OperationError:
    """One operation of a transaction failed (the whole transaction was aborted).

    ``index`` is the operation's position (``len(ops)`` for a failure at
    commit, such as a referential integrity violation).
    """

    index: int
    error: str
    details: str

    name: ClassVar[str] = ""

    def __str__(self) -> str:
        return f"operation {self.index}: {self.error}" + (f": {self.details}" if self.details else "")


class TimedOut(OperationError):
    """A ``wait`` found the rows other than expected (with timeout 0: at once)."""

    name = "timed out"


class DuplicateUuid(OperationError):
    """An ``insert`` named a row uuid that exists."""

    name = "duplicate uuid"


class ConstraintViolation(OperationError):
    """A value breaks a column's constraints, or a unique index (``details`` says which)."""

    name = "constraint violation"

    @property
    def unique_index(self) -> bool:
        """The violation is of a table's unique index (another row has the same key)."""
        return "index" in self.details


class ReferentialIntegrityViolation(OperationError):
    """A strong reference would point to a missing row."""

    name = "referential integrity violation"


class NotOwner(OperationError):
    """An ``assert`` named a lock this session does not hold."""

    name = "not owner"


class ResourcesExhausted(OperationError):
    """The server ran out of memory or another resource."""

    name = "resources exhausted"


class IoError(OperationError):
    """The server could not write the transaction to storage."""

    name = "I/O error"


class NotLeader(OperationError):
    """A clustered server cannot commit now (not the leader, or not connected to the cluster)."""

    name = "not leader"


_BY_NAME: dict[str, type[OperationError]] = {
    cls.name: cls
    for cls in (
        TimedOut,
        DuplicateUuid,
        ConstraintViolation,
        ReferentialIntegrityViolation,
        NotOwner,
        ResourcesExhausted,
        IoError,
        NotLeader,
    )
}


def operation_error(index: int, result: dict[str, Any]) -> OperationError:
    """The typed error of one operation's ``{"error": ..., "details": ...}`` result."""
    error = str(result.get("error"))
    details = str(result.get("details", ""))
    cls = _BY_NAME.get(error)
    if cls is None and ("cluster" in error or "leader" in error):
        cls = NotLeader
    return (cls or OperationError)(index, error, details)


def check(result: Sequence[Any]) -> OperationError | None:
    """The first error of a ``transact`` result, or None if the transaction committed."""
    for index, item in enumerate(result):
        if isinstance(item, dict) and "error" in item:
            return operation_error(index, item)
    return None
