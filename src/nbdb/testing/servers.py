"""Server kinds by name, and the one-call entry points built on them."""

from __future__ import annotations

import os
from typing import Any

from nbdb.testing.base import Server
from nbdb.testing.cassandra import CassandraServer
from nbdb.testing.errors import HarnessError, ServerNotInstalledError
from nbdb.testing.etcd import EtcdServer
from nbdb.testing.hazelcast import HazelcastServer
from nbdb.testing.ovsdb import OvsdbServer, find_ovn_nb_schema
from nbdb.testing.redis import RedisSentinel, RedisServer

__all__ = [
    "SERVER_KINDS",
    "in_ci",
    "is_installed",
    "missing_reason",
    "require_server",
    "server_class",
    "start_server",
]

#: Every kind of server the harness runs, by the name used in code and on the CLI.
SERVER_KINDS: dict[str, type[Server]] = {
    "redis": RedisServer,
    "redis-sentinel": RedisSentinel,
    "etcd": EtcdServer,
    "ovsdb": OvsdbServer,
    "cassandra": CassandraServer,
    "hazelcast": HazelcastServer,
}


def server_class(kind: str) -> type[Server]:
    """The :class:`Server` subclass for ``kind`` (see :data:`SERVER_KINDS`)."""
    try:
        return SERVER_KINDS[kind]
    except KeyError:
        raise HarnessError(f"unknown server kind {kind!r}; known: {', '.join(SERVER_KINDS)}") from None


def start_server(kind: str, **options: Any) -> Server:
    """Start a server of ``kind`` and return it once it is ready.

    ``options`` go to the kind's class: ``members`` (cluster size), ``base_dir``,
    ``timeout`` and the kind's own (``password``, ``tls``, ``schema``...). The caller stops
    it with :meth:`Server.stop` or uses it as a context manager.
    """
    return server_class(kind)(**options).start()


def missing_reason(kind: str) -> str | None:
    """Why ``kind`` cannot start on this machine (what to install), or None."""
    cls = server_class(kind)
    try:
        cls.check_installed()
        if cls is OvsdbServer:
            find_ovn_nb_schema()
    except ServerNotInstalledError as exc:
        return str(exc)
    return None


def is_installed(kind: str) -> bool:
    """Tell whether everything ``kind`` needs is installed."""
    return missing_reason(kind) is None


def in_ci() -> bool:
    """True when running in CI (``CI`` set to a true value), where nothing may be skipped."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def require_server(kind: str) -> None:
    """Make a test fail in CI, or skip locally, when ``kind`` is not installed.

    Call it at the top of a test or fixture. In CI (``CI=true``) a missing server raises
    :class:`ServerNotInstalledError`; on a developer machine the test is skipped with the
    reason, which names the install command.
    """
    reason = missing_reason(kind)
    if reason is None:
        return
    if in_ci():
        raise ServerNotInstalledError(f"{kind} is required in CI: {reason}")
    import pytest  # only needed, and only importable, when testing

    pytest.skip(f"{kind} not installed: {reason}")
