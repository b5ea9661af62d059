"""cassandra-driver's exceptions as nbdb errors, in one table, and the driver's retry rules.

The one question for a conditional write (a lightweight transaction) is
whether it may have been applied. A timeout, a failed write, a connection
lost after the request left, or protocol error ``CAS_WRITE_UNKNOWN`` all mean
"maybe": :class:`~nbdb.families.widecolumn.OutcomeUnknown`, which the family
settles. ``Unavailable`` and ``NoHostAvailable`` mean the request was never
carried out: :class:`nbdb.BackendUnavailableError`.

The driver must not answer that question wrongly by itself: its default
policy re-sends a request to the next host after a connection error, and a
re-sent compare-and-set that had landed fails its own condition and reads as
a conflict. :class:`NbdbRetryPolicy` re-sends only idempotent statements.
"""

from __future__ import annotations

from typing import Any

import cassandra
from cassandra.cluster import NoHostAvailable
from cassandra.connection import ConnectionException
from cassandra.policies import RetryPolicy

from nbdb import errors
from nbdb.families.widecolumn import OutcomeUnknown

__all__ = ["CAS_WRITE_UNKNOWN", "NbdbRetryPolicy", "is_auth_failure", "translate"]

CAS_WRITE_UNKNOWN = 0x1700
"""Protocol v5 error: a contended LWT's proposal reached some replicas but not a quorum (the driver has no
class for it). Its outcome is decided later, by whichever Paxos round comes next."""

_MAYBE_APPLIED: tuple[type[BaseException], ...] = (
    cassandra.WriteTimeout,
    cassandra.ReadTimeout,
    cassandra.WriteFailure,
    cassandra.ReadFailure,
    cassandra.OperationTimedOut,
    cassandra.CoordinationFailure,
    ConnectionException,
    OSError,
)
"""For a conditional write: the request may have been carried out."""


def is_auth_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or every host's error behind NoHostAvailable) is a refused login or permission."""
    if isinstance(exc, cassandra.AuthenticationFailed | cassandra.Unauthorized):
        return True
    if isinstance(exc, NoHostAvailable):
        return any(is_auth_failure(e) for e in (exc.errors or {}).values() if isinstance(e, BaseException))
    return "AuthenticationFailed" in type(exc).__name__ or "Bad credentials" in str(exc)


def translate(exc: BaseException, *, conditional: bool = False) -> errors.NbdbError:
    """The nbdb error for a driver exception; ``conditional``: it came from a lightweight transaction."""
    if isinstance(exc, errors.NbdbError):
        return exc
    if is_auth_failure(exc):
        return errors.AuthError(f"Cassandra refused the credentials or the permission: {exc}")
    if conditional and (isinstance(exc, _MAYBE_APPLIED) or getattr(exc, "code", None) == CAS_WRITE_UNKNOWN):
        return OutcomeUnknown(f"Cassandra did not say whether a conditional write applied: {exc}")
    if isinstance(exc, cassandra.InvalidRequest | cassandra.ConfigurationException):
        return errors.NbdbError(f"Cassandra rejected a request: {exc}")
    if isinstance(exc, cassandra.Unavailable | NoHostAvailable):
        return errors.BackendUnavailableError(f"Cassandra is unavailable: {exc}")
    if isinstance(exc, cassandra.DriverException | cassandra.OperationTimedOut | ConnectionException | OSError):
        return errors.BackendUnavailableError(f"Cassandra is unavailable: {exc}")
    if isinstance(exc, cassandra.RequestExecutionException | cassandra.RequestValidationException):
        return errors.BackendUnavailableError(f"Cassandra failed the request: {exc}")
    return errors.BackendUnavailableError(f"Cassandra client error ({type(exc).__name__}): {exc}")


class NbdbRetryPolicy(RetryPolicy):  # type: ignore[misc]  # the driver ships no types
    """The driver's default retries, except that a non-idempotent statement is never sent twice."""

    def on_request_error(self, query: Any, consistency: Any, error: Any, retry_num: int) -> tuple[int, Any]:
        """Re-send a read or an idempotent write to the next host once; rethrow anything else."""
        if retry_num == 0 and query is not None and getattr(query, "is_idempotent", False):
            return self.RETRY_NEXT_HOST, None
        return self.RETHROW, None

    def on_write_timeout(self, *args: Any, **kwargs: Any) -> tuple[int, Any]:
        """Rethrow: the family settles a timed-out conditional write, and plain writes are retried by it."""
        return self.RETHROW, None
