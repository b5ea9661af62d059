"""The one error hierarchy of nbdb.

Every failure a caller can meet is one of these classes; no exception of a
backend's client library (redis-py, grpc, the ovs IDL, cassandra-driver,
pydantic) reaches the caller untranslated.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthError",
    "BackendLoadError",
    "BackendUnavailableError",
    "CommitUnknownError",
    "ConflictError",
    "CorruptRecordError",
    "HistoryGoneError",
    "LockLostError",
    "LockTimeoutError",
    "NbdbError",
    "NotFoundError",
    "ReferenceError",
    "StoredFormatError",
    "UniqueViolationError",
    "UnsupportedError",
    "ValidationError",
]


class NbdbError(Exception):
    """Base class of every error raised by nbdb."""


class NotFoundError(NbdbError, LookupError):
    """The object (or the named thing) does not exist. ``key`` is its (table, id), when known."""

    def __init__(self, message: str, *, key: tuple[str, Any] | None = None) -> None:
        super().__init__(message)
        self.key = key


class ConflictError(NbdbError):
    """A compare-and-swap failed: the stored copy changed since it was read.

    Re-read the object, re-apply the change and try again. ``key`` is the
    (table, id) of the object that conflicted, when known.
    """

    def __init__(self, message: str, *, key: tuple[str, Any] | None = None) -> None:
        super().__init__(message)
        self.key = key


class UniqueViolationError(ConflictError):
    """An object would hold a value of a unique field that another object of its table holds.

    ``table``, ``field`` and ``value`` say which; ``existing`` is the id of
    the object that holds it (when the store could tell).
    """

    def __init__(self, message: str, *, table: str, field: str, value: Any, existing: Any = None) -> None:
        super().__init__(message)
        self.table = table
        self.field = field
        self.value = value
        self.existing = existing


class ReferenceError(NbdbError):
    """A reference points to a missing object, or a delete would leave one dangling.

    ``target`` and ``referrers``: the (table, id) whose delete was refused and every object the store
    found still pointing to it, when the store read them all (else None): a plain delete planned
    again after the refusal starts its walk from them instead of reading them a second time.
    ``unseen``: those of ``referrers`` this Database cannot read (OVSDB: a row of another namespace, or
    another client's, pointing to the target by a strong reference), sorted as ``referrers`` and named in the
    message; no plan of it can drop them or take them along, so the refusal stands. Empty on a store whose
    namespaces share no rows.
    ``undroppable``: those of ``referrers`` that no plan of this Database can drop, whether it reads them or
    not (OVSDB: a second parent holding the target in its set, which another client put it in beside its own
    parent's: a port in a second switch's ``ports``), sorted and named alike; the refusal stands too. Empty
    on every other store.
    """

    def __init__(
        self,
        message: str,
        *,
        target: tuple[str, Any] | None = None,
        referrers: tuple[tuple[str, Any], ...] | None = None,
        unseen: tuple[tuple[str, Any], ...] = (),
        undroppable: tuple[tuple[str, Any], ...] = (),
    ) -> None:
        super().__init__(message)
        self.target = target
        self.referrers = referrers
        self.unseen = unseen
        self.undroppable = undroppable


class ValidationError(NbdbError, ValueError):
    """Input that does not fit the model, the URL grammar or the API's rules.

    ``errors`` holds one dict per problem (``loc``, ``msg``, ``type``), in the
    shape pydantic uses, so that tools can point at the offending field.
    """

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors: list[dict[str, Any]] = errors or []


class UnsupportedError(NbdbError):
    """The backend does not offer this feature; its capabilities say so."""


class BackendLoadError(UnsupportedError):
    """The backend a URL's scheme names could not be loaded: its module (or a package it needs) failed to import.

    ``scheme`` names the backend; the import's own exception is ``__cause__``.
    """

    def __init__(self, message: str, scheme: str) -> None:
        super().__init__(message)
        self.scheme = scheme


class BackendUnavailableError(NbdbError, ConnectionError):
    """The server could not be reached (after the configured retries)."""


class CommitUnknownError(BackendUnavailableError):
    """A write may or may not have been applied: its outcome could not be settled.

    The request reached (or may have reached) the server, the reply was lost,
    and the retry policy ran out before the backend could tell whether the
    commit landed. It is never reported as a :class:`ConflictError`: re-read
    the objects to see which happened before acting again.
    """


class AuthError(NbdbError):
    """The server refused the credentials, or the caller lacks permission."""


class CorruptRecordError(NbdbError):
    """A stored record cannot be decoded into its model.

    Another writer stored bytes that are not a valid record. Readers report it
    and go on: a watcher or cache never dies of it.
    """

    def __init__(self, message: str, *, table: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.table = table
        self.key = key


class StoredFormatError(NbdbError):
    """The server holds data in a stored format this version of nbdb does not read.

    Raised at connect, before anything is read or written: reading another
    format would misread it silently. The message names the fix (the version
    that reads it, or how to move the data). ``found`` and ``expected`` name
    the formats.
    """

    def __init__(self, message: str, *, found: str = "", expected: str = "") -> None:
        super().__init__(message)
        self.found = found
        self.expected = expected


class HistoryGoneError(NbdbError):
    """The backend can no longer deliver changes from the requested revision.

    History was compacted or trimmed, or a standalone server restarted. A
    watcher gets this instead of a silent gap; a cache re-lists on it.
    """


class LockLostError(NbdbError):
    """A fenced write was refused: the lock it was fenced on is no longer held by its holder.

    Nothing was written. Stop acting as the lock's holder; take the lock again
    before writing.
    """


class LockTimeoutError(NbdbError, TimeoutError):
    """A lock could not be acquired within the given timeout."""
