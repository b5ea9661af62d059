"""Cassandra sessions shared by the backends of a process that connect with the same settings.

A ``Cluster``/``Session`` pair is expensive (a control connection, pools to
every node, schema metadata) and thread-safe, so backends opened with the
same hosts, credentials and TLS settings share one, reference-counted through
:class:`nbdb.pool.SharedResources`: the last backend to close shuts it down.
The shared session also carries the state of each namespace: a commit made
through one backend wakes the watchers of every other backend of the process
on that namespace, and their commits take revisions together.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable
from typing import Any

from nbdb.families.widecolumn import NamespaceState
from nbdb.pool import Lease, SharedResources

__all__ = ["SESSIONS", "SessionLease", "SharedSession"]

log = logging.getLogger(__name__)


class SharedSession:
    """One ``Cluster`` and its ``Session``, and the namespaces their backends share."""

    def __init__(self, cluster: Any, session: Any) -> None:
        self.cluster = cluster
        self.session = session
        self._namespaces: dict[Hashable, NamespaceState] = {}
        self._lock = threading.Lock()

    def namespace(self, key: Hashable) -> NamespaceState:
        """What the backends on this session share for one namespace (``key``: keyspace, namespace, settings)."""
        with self._lock:
            found = self._namespaces.get(key)
            if found is None:
                found = self._namespaces[key] = NamespaceState()
            return found

    def shutdown(self) -> None:
        """Close the cluster's connections (the last user is gone)."""
        self.cluster.shutdown()


SessionLease = Lease[Hashable, SharedSession]

SESSIONS: SharedResources[Hashable, SharedSession] = SharedResources("cassandra sessions", SharedSession.shutdown)
"""The process's sessions, shared by URL settings as a connection pool is."""
