"""Connections to Redis: clients (standalone or through Sentinel), the exception map, retries."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import redis
import redis.exceptions as rexc
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

from nbdb import errors
from nbdb.backends.redis.config import RedisConfig
from nbdb.retry import ErrorRule, ExceptionMap

__all__ = ["ERRORS", "Connector", "text"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_RETRYABLE_REPLIES = ("loading", "busy", "masterdown", "tryagain", "readonly", "noreplicas", "clusterdown")


_AUTH = (rexc.AuthenticationError, rexc.AuthorizationError, rexc.AuthenticationWrongNumberOfArgsError,
         rexc.NoPermissionError)  # fmt: skip
ERRORS = ExceptionMap(
    "redis",
    [
        ErrorRule(_AUTH, errors.AuthError, message="redis refused the credentials or the command"),
        # A connection that could not be opened carried no request.
        ErrorRule((rexc.ConnectionError,), errors.BackendUnavailableError, retryable=True, unsent=True,
                  contains=("connecting to", "connection refused", "error 111", "no master", "not the master",
                            "timeout connecting")),
        ErrorRule((MasterNotFoundError,), errors.BackendUnavailableError, retryable=True, unsent=True),
        ErrorRule((rexc.ReadOnlyError,), errors.BackendUnavailableError, retryable=True, unsent=True),
        ErrorRule((rexc.ConnectionError, rexc.TimeoutError), errors.BackendUnavailableError, retryable=True),
        ErrorRule((rexc.ResponseError,), errors.BackendUnavailableError, contains=_RETRYABLE_REPLIES, retryable=True,
                  unsent=True),
        ErrorRule((rexc.ResponseError,), errors.CorruptRecordError, contains=("wrongtype",),
                  message="a key of the nbdb namespace holds foreign data"),
    ],
)  # fmt: skip
"""How redis-py's exceptions become nbdb errors, and which may be retried."""


def _check_master(connection: Any, address: Any) -> None:
    connection.send_command("ROLE")
    role = connection.read_response()
    name = role[0].decode() if isinstance(role[0], bytes) else str(role[0])
    if name != "master":
        connection.disconnect()
        raise rexc.ConnectionError(f"{address[0]}:{address[1]} is a {name}, not the master (failover under way)")


class _MasterConnection(SentinelManagedConnection):
    """A Sentinel-managed connection that refuses a node that is not (any longer) the master.

    Reads on a demoted master would succeed and return stale data, unlike
    writes, which fail with READONLY.
    """

    def connect_to(self, address: Any) -> None:
        super().connect_to(address)  # type: ignore[no-untyped-call]
        _check_master(self, address)


class _MasterSSLConnection(SentinelManagedSSLConnection):
    """The TLS variant of :class:`_MasterConnection`."""

    def connect_to(self, address: Any) -> None:
        super().connect_to(address)  # type: ignore[no-untyped-call]
        _check_master(self, address)


class _QuorumSentinel(Sentinel):
    """Sentinel discovery that takes the master a majority of the sentinels agree on.

    redis-py takes the first sentinel's answer; right after a failover a
    lagging sentinel still names the old master, which may be back (empty,
    or about to be demoted) — writes acknowledged there would be lost.
    """

    def discover_master(self, service_name: str) -> tuple[str, int]:
        votes: dict[tuple[str, int], int] = {}
        problems: list[str] = []
        for sentinel in self.sentinels:
            try:
                masters: Any = sentinel.sentinel_masters()
                state = masters.get(service_name)
            except (rexc.ConnectionError, rexc.TimeoutError) as exc:
                problems.append(repr(exc))
                continue
            if state and self.check_master_state(state, service_name):  # type: ignore[no-untyped-call]
                address = (state["ip"], int(state["port"]))
                votes[address] = votes.get(address, 0) + 1
        majority = len(self.sentinels) // 2 + 1
        for address, count in votes.items():
            if count >= majority:
                return address
        raise MasterNotFoundError(
            f"no master of {service_name!r} named by a majority of the sentinels (votes {votes}; {problems})"
        )


class Connector:
    """Builds redis-py clients (standalone or through Sentinel) and runs calls with bounded retries."""

    def __init__(self, config: RedisConfig) -> None:
        self.config = config
        self.where = ",".join(f"{h}:{p}" for h, p in config.hosts)
        self._sentinel: Any = None
        if config.scheme == "redis+sentinel":
            sentinel_kwargs: dict[str, Any] = {
                "socket_timeout": config.socket_timeout,
                "socket_connect_timeout": config.connect_timeout,
                "retry": Retry(NoBackoff(), 0),
            }
            if config.sentinel_password is not None:
                sentinel_kwargs["password"] = config.sentinel_password
                sentinel_kwargs["username"] = config.sentinel_username
            if config.ssl:
                sentinel_kwargs.update(ssl=True, **config.ssl_options)
            self._sentinel = _QuorumSentinel(list(config.hosts), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
            self.where = f"{self.where}/{config.service}"

    def _kwargs(self, socket_timeout: float) -> dict[str, Any]:
        cfg = self.config
        kwargs: dict[str, Any] = {
            "db": cfg.db,
            "username": cfg.username,
            "password": cfg.password,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": cfg.connect_timeout,
            "retry": Retry(NoBackoff(), 0),
            "client_name": cfg.client_name,
        }
        if cfg.ssl:
            kwargs.update(ssl=True, **cfg.ssl_options)
        return kwargs

    def client(self, socket_timeout: float | None = None) -> Any:
        """A new client with a pool of its own."""
        timeout = self.config.socket_timeout if socket_timeout is None else socket_timeout
        kwargs = self._kwargs(timeout)
        if self._sentinel is not None:
            kwargs["connection_class"] = _MasterSSLConnection if self.config.ssl else _MasterConnection
            return self._sentinel.master_for(self.config.service, **kwargs)
        host, port = self.config.hosts[0]
        return redis.Redis(host=host, port=port, **kwargs)

    def run(self, call: Callable[[], T], *, write: bool = False, stop: threading.Event | None = None) -> T:
        """``call()`` under the retry policy; nbdb errors only.

        Every write nbdb sends is safe to send again (commits, lock and id
        scripts carry a token), so a write is retried like a read; if its
        tries run out after one may have landed, CommitUnknownError.
        """
        return self.config.retry.call(call, ERRORS, context=f"at {self.where}", write=write, stop=stop)

    def close(self) -> None:
        if self._sentinel is not None:
            for s in self._sentinel.sentinels:
                s.close()


def text(value: Any) -> str:
    """A reply as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
