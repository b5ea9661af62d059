"""Errors raised by the test-server harness."""

from __future__ import annotations

__all__ = [
    "HarnessError",
    "ServerNotInstalledError",
    "ServerStartError",
    "ServerTimeoutError",
]

INSTALL_HINT = "run `bash .ci/install-servers.sh` from the nbdb repository"


class HarnessError(RuntimeError):
    """Base class of every error the harness raises."""


class ServerNotInstalledError(HarnessError):
    """A server binary, schema or the Cassandra jars are missing on this machine."""


class ServerStartError(HarnessError):
    """A server process exited or failed while starting; the message has its log tail."""


class ServerTimeoutError(HarnessError):
    """A bounded wait (readiness, leader election, shutdown) ran out of time."""
