"""OVSDB's native locks (RFC 7047 section 4.1.8), each on a connection of its own to a writable server.

A lock belongs to the session that asked for it: the connection is the
lease. ``handle.lost`` turns True when the server says the lock was
``stolen``, when the connection closes, and when the server stops being the
raft leader — OVSDB does not replicate locks, so a lock held on a deposed
leader no longer excludes clients of the new one.

A fenced commit is sent on that same session (:meth:`OvsdbLockHandle.transact`)
and starts with an ``assert`` of the lock: the server runs it only while this
session holds the lock. On any other connection the ``assert`` would check
that connection's locks, which hold none.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from nbdb import errors
from nbdb.backends.ovsdb.cluster import (
    NO_LOCKS_ON_RELAYS,
    SERVER_COLUMNS,
    ServerRole,
    connect_to_server,
    relayed,
    usable,
)
from nbdb.backends.ovsdb.rpc import RpcConnection
from nbdb.backends.ovsdb.session import transact_on
from nbdb.backends.ovsdb.url import Target
from nbdb.spi import LockHandle

__all__ = ["OvsdbLockHandle", "hold_lock", "lock_name"]

log = logging.getLogger(__name__)


def lock_name(namespace: str, name: str) -> str:
    """The OVSDB lock name of an nbdb lock (an OVSDB ``<id>``: ``[A-Za-z_][A-Za-z0-9_]*``)."""
    return "nbdb_" + hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:40]


class OvsdbLockHandle(LockHandle):
    """A held OVSDB lock: its OVSDB name, and transactions on the session that holds it."""

    def __init__(self, name: str, token: str, session: _LockSession, target: Target) -> None:
        super().__init__(name, token)
        self._session = session
        self.target = target
        self.ovsdb_name = session.name

    def transact(self, db: str, ops: list[dict[str, Any]], deadline: float | None = None) -> list[Any]:
        """One transaction on the lock's session (TransactNotSent / TransactLost as the family expects), its reply
        awaited until ``deadline`` (None: ``timeout`` from now)."""
        timeout = self.target.timeout if deadline is None else deadline - time.monotonic()
        return transact_on(self._session.rpc, db, ops, timeout)


class _LockSession:
    """The connection holding one lock, and what the server says about it."""

    def __init__(self, target: Target, database: str, context: ssl.SSLContext | None, deadline: float) -> None:
        self.name = ""
        self.database = database
        self.locked = threading.Event()
        self.lost = threading.Event()
        self.handle: LockHandle | None = None
        self._roles: dict[str, dict[str, Any]] = {}
        self.rpc: RpcConnection
        self.rpc, _ = connect_to_server(target, [database], self._notify, context, deadline)
        self.rpc.on_close = self._closed
        if self.rpc.closed.is_set():
            self._closed()
        request = {"Database": [{"columns": SERVER_COLUMNS}]}
        # The reply holds the initial state: applied in the I/O thread, before any later update.
        self.rpc.request("monitor_cond", ["_Server", "server", request], self._server_state).wait(target.timeout)
        if relayed([ServerRole.from_row(r) for r in list(self._roles.values())], database):
            # Remotes that mix relays and members can land here on a relay: a lock there excludes nobody.
            self.rpc.on_close = None
            self.rpc.close()
            raise errors.UnsupportedError(NO_LOCKS_ON_RELAYS)

    def _notify(self, method: str, params: list[Any]) -> None:
        if method == "locked" and params == [self.name]:
            self.locked.set()
        elif method == "stolen" and params == [self.name]:
            self._lose("it was stolen")
        elif method == "update2" and len(params) == 2 and params[0] == "server":
            self._server_state(params[1])

    def _server_state(self, updates: Any) -> None:
        for id, change in (updates.get("Database") or {}).items():
            row = self._roles.setdefault(id, {})
            row.update(change.get("initial") or change.get("insert") or change.get("modify") or {})
        problem = usable([ServerRole.from_row(r) for r in self._roles.values()], [self.database])
        if problem is not None:
            self._lose(f"its server {problem}")
            self.rpc.close()

    def _closed(self) -> None:
        self._lose("its OVSDB connection closed")

    def _lose(self, why: str) -> None:
        if self.lost.is_set():
            return
        self.lost.set()
        if self.handle is not None and self.locked.is_set():
            log.error("lock %r was lost: %s", self.handle.name, why)
            self.handle.mark_lost()


@contextmanager
def hold_lock(
    target: Target,
    database: str,
    context: ssl.SSLContext | None,
    name: str,
    timeout: float | None,
    closed: threading.Event | None = None,
) -> Iterator[LockHandle]:
    """Hold the OVSDB lock of ``name`` (see :func:`lock_name`) for the ``with`` block.

    ``closed`` is set once the Database asking closed (see :meth:`nbdb.spi.Backend.lock`): a wait for
    another holder then ends with BackendUnavailableError (the lock's connection is its own, so closing
    the backend did not end it).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    connect_deadline = time.monotonic() + target.timeout
    if deadline is not None:
        connect_deadline = min(connect_deadline, deadline)
    session = _LockSession(target, database, context, connect_deadline)
    try:
        session.name = lock_name(target.namespace, name)
        handle = OvsdbLockHandle(name, uuid.uuid4().hex, session, target)
        session.handle = handle
        result = session.rpc.call("lock", [session.name], target.timeout, label=f"lock {name}")
        if isinstance(result, dict) and result.get("locked"):
            session.locked.set()
        while not session.locked.is_set():
            if session.lost.is_set():
                raise errors.BackendUnavailableError(f"lock {name!r}: the connection closed while waiting")
            if closed is not None and closed.is_set():
                raise errors.BackendUnavailableError(f"lock {name!r}: the Database closed while waiting for it")
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise errors.LockTimeoutError(f"lock {name!r} is held by another owner; gave up after {timeout}s")
            session.locked.wait(0.2 if remaining is None else min(0.2, remaining))
        if session.lost.is_set():
            handle.mark_lost()
        yield handle
        if not handle.lost:
            try:
                session.rpc.call("unlock", [session.name], 5.0)
            except errors.NbdbError:
                pass
    finally:
        session.rpc.on_close = None
        session.rpc.close()
