"""cassandra-driver's exceptions as nbdb errors, in one table, and the driver's retry rules.

The one question for a conditional write (a lightweight transaction) is
whether it may have been applied. A timeout, a failed write, a connection
lost after the request left, protocol error ``CAS_WRITE_UNKNOWN``, or a server
error the driver has no class for all mean "maybe":
:class:`~nbdb.families.widecolumn.OutcomeUnknown`, which the family settles.
``Unavailable`` (the coordinator checks the live replicas before each Paxos
attempt, and an earlier attempt of the same request was refused by every
replica) and ``NoHostAvailable`` mean the request was never carried out
(``unsent``): :class:`nbdb.BackendUnavailableError`.

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
from cassandra.protocol import ErrorMessage

from nbdb import errors
from nbdb.families.widecolumn import OutcomeUnknown
from nbdb.retry import ErrorRule, ExceptionMap

__all__ = ["CAS_WRITE_UNKNOWN", "ERRORS", "NbdbRetryPolicy", "translate"]

CAS_WRITE_UNKNOWN = 0x1700
"""Protocol v5 error: a contended LWT's proposal reached some replicas but not a quorum. Its outcome is
decided later, by whichever Paxos round comes next. The driver has no class for it: it raises the
protocol's bare ``ErrorMessage`` (no ``DriverException``), so the rule matches the code on any class."""

_AUTH = ("authenticationfailed", "bad credentials", "unauthorized", "provided username", "password are incorrect")

ERRORS = ExceptionMap(
    "cassandra://",
    [
        ErrorRule((cassandra.AuthenticationFailed, cassandra.Unauthorized), errors.AuthError,
                  message="Cassandra refused the credentials or the permission"),
        # NoHostAvailable wraps each host's error: a refused login is not a passing failure.
        ErrorRule((NoHostAvailable,), errors.AuthError, contains=_AUTH,
                  message="Cassandra refused the credentials or the permission"),
        ErrorRule((cassandra.Unavailable, NoHostAvailable), errors.BackendUnavailableError, retryable=True,
                  unsent=True, message="Cassandra is unavailable"),
        ErrorRule((cassandra.InvalidRequest, cassandra.ConfigurationException), errors.NbdbError,
                  message="Cassandra rejected a request"),
        ErrorRule((Exception,), errors.BackendUnavailableError, codes=(CAS_WRITE_UNKNOWN,),
                  retryable=True, message="Cassandra could not settle a contended compare-and-set"),
        ErrorRule((cassandra.WriteTimeout, cassandra.ReadTimeout, cassandra.CoordinationFailure,
                   cassandra.OperationTimedOut, ConnectionException, OSError), errors.BackendUnavailableError,
                  retryable=True, message="Cassandra did not answer"),
        # Any other server error (ErrorMessage: also codes the driver has no class for) or driver failure.
        ErrorRule((cassandra.RequestExecutionException, cassandra.RequestValidationException,
                   cassandra.DriverException, ErrorMessage), errors.BackendUnavailableError, retryable=True,
                  message="Cassandra failed the request"),
    ],
    code=lambda exc: getattr(exc, "code", None),
)  # fmt: skip
"""How every driver exception leaves the backend (a conditional write's "maybe" aside, see :func:`translate`)."""


def translate(exc: BaseException, *, conditional: bool = False) -> errors.NbdbError:
    """The nbdb error for a driver exception; ``conditional``: it came from a lightweight transaction.

    A conditional write whose request may have reached the server (a
    retryable failure that is not ``unsent``) becomes OutcomeUnknown.
    """
    failure = ERRORS.classify(exc)
    if conditional and failure.retryable and not failure.unsent:
        return OutcomeUnknown(f"a conditional write may or may not have applied ({failure.error})")
    return failure.error


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
