"""Cassandra sessions shared by the backends of a process that connect with the same settings.

A ``Cluster``/``Session`` pair is expensive (a control connection, pools to
every node, schema metadata) and thread-safe, so backends opened with the
same hosts, credentials and TLS settings share one, reference-counted: the
last backend to close shuts it down. The shared session also carries the
state of each namespace: a commit made through one backend wakes the watchers
of every other backend of the process on that namespace, and their commits
take revisions together.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from typing import Any

from nbdb.families.widecolumn import NamespaceState

__all__ = ["SESSIONS", "SessionPool", "SharedSession"]

log = logging.getLogger(__name__)


class SharedSession:
    """One ``Cluster`` and its ``Session``, and who uses them."""

    def __init__(self, key: Hashable, cluster: Any, session: Any) -> None:
        self.key = key
        self.cluster = cluster
        self.session = session
        self.users = 0
        self._namespaces: dict[Hashable, NamespaceState] = {}
        self._lock = threading.Lock()

    def namespace(self, key: Hashable) -> NamespaceState:
        """What the backends on this session share for one namespace (``key``: keyspace, namespace, settings)."""
        with self._lock:
            found = self._namespaces.get(key)
            if found is None:
                found = self._namespaces[key] = NamespaceState()
            return found


class SessionPool:
    """Reference-counted shared sessions by key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[Hashable, SharedSession] = {}

    def acquire(self, key: Hashable, connect: Callable[[], tuple[Any, Any]]) -> SharedSession:
        """The session for ``key``, connecting with ``connect() -> (cluster, session)`` if there is none."""
        with self._lock:
            shared = self._open.get(key)
            if shared is None:
                # Connecting under the lock: two backends opened at once must not both connect.
                cluster, session = connect()
                shared = self._open[key] = SharedSession(key, cluster, session)
            shared.users += 1
            return shared

    def release(self, shared: SharedSession) -> None:
        """One user is done; the last one shuts the cluster down."""
        with self._lock:
            shared.users -= 1
            if shared.users > 0:
                return
            if self._open.get(shared.key) is shared:
                del self._open[shared.key]
        try:
            shared.cluster.shutdown()
        except Exception as exc:  # shutting down must not fail the caller
            log.debug("cassandra cluster shutdown: %s", exc)


SESSIONS = SessionPool()
"""The process's pool: sessions are shared by URL settings, as a connection pool is."""
