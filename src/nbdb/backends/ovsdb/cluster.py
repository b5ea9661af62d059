"""Choosing a server among the remotes: a raft leader, a standalone server or a relay.

Each server describes the databases it serves in its ``_Server`` database:
``model`` (``standalone``, ``clustered`` or ``relay``), and for a clustered one
whether this member is the ``leader`` and ``connected`` to the cluster. Writes
must reach a leader; a relay forwards them to its source itself, so a relay
connected to its source is a usable server too (its reads are its own copy,
which may lag the leader: see ``docs/backends/ovsdb.md``).
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nbdb import errors
from nbdb.backends.ovsdb.rpc import Notify, RpcConnection
from nbdb.backends.ovsdb.transport import open_socket
from nbdb.backends.ovsdb.url import Target

__all__ = ["ServerRole", "connect_to_server", "usable"]

log = logging.getLogger(__name__)

SERVER_COLUMNS = ["name", "model", "leader", "connected"]


@dataclass(frozen=True, slots=True)
class ServerRole:
    """What one server is for one database (a row of ``_Server.Database``)."""

    name: str
    model: str
    leader: bool
    connected: bool

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ServerRole:
        """From a selected or monitored ``_Server.Database`` row."""
        return cls(
            str(row.get("name", "")), str(row.get("model", "")), row.get("leader") is True, row.get("connected") is True
        )


NO_LOCKS_ON_RELAYS = (
    "OVSDB locks are held by one ovsdb-server process and a relay does not forward them, so clients of two "
    "relays could hold the same lock (and a fenced write, forwarded on the relay's own session, would assert "
    "a lock nobody holds there): take locks and fence writes through the raft members (or the standalone "
    "server), with a URL that names them"
)
"""Why locks and fenced writes are refused through a relay: one rule, said once."""


def relayed(roles: Sequence[ServerRole], database: str) -> bool:
    """Whether the server with these roles serves ``database`` as a relay of another server."""
    return any(role.name == database and role.model == "relay" for role in roles)


def usable(roles: Sequence[ServerRole], databases: Sequence[str]) -> str | None:
    """Why a server with these roles cannot serve ``databases`` (None: it can)."""
    by_name = {role.name: role for role in roles}
    for db in databases:
        role = by_name.get(db)
        if role is None:
            return f"does not serve {db}"
        if role.model == "clustered" and not (role.leader and role.connected):
            return f"is not the raft leader of {db}"
        if role.model == "relay" and not role.connected:
            # A relay says so once it has been without its source for a while (30 s in OVS 3.1).
            return f"is a relay of {db} cut off from its source"
    return None


def connect_to_server(
    target: Target,
    databases: Sequence[str],
    notify: Notify,
    context: ssl.SSLContext | None,
    deadline: float,
    start: int = 0,
    stop: Callable[[], bool] | None = None,
) -> tuple[RpcConnection, int]:
    """A connection to a server able to serve ``databases`` and write them, and the remote's index.

    Remotes are tried in turn from ``start``, until ``deadline``; AuthError
    (TLS refused) is raised at once. ``databases[0]`` must be served; the
    others only where served.
    """
    problems: list[str] = []
    count = len(target.remotes)
    index = start
    while True:
        for step in range(count):
            if stop is not None and stop():
                raise errors.BackendUnavailableError("the OVSDB backend was closed")
            i = (index + step) % count
            remote = target.remotes[i]
            try:
                sock = open_socket(target, remote, max(0.5, min(5.0, deadline - time.monotonic())), context)
            except errors.AuthError:
                raise
            except errors.BackendUnavailableError as exc:
                problems.append(str(exc))
                continue
            rpc = RpcConnection(sock, remote, notify, target.probe)
            try:
                select = {"op": "select", "table": "Database", "where": [], "columns": SERVER_COLUMNS}
                result = rpc.call("transact", ["_Server", select], 5.0)
                roles = [ServerRole.from_row(row) for row in result[0].get("rows", [])]
                served = [db for db in databases if any(r.name == db for r in roles)]
                problem = usable(roles, [databases[0], *served[1:]] if databases[0] in served else databases[:1])
                if problem is None:
                    return rpc, i
                problems.append(f"{remote} {problem}")
                log.info("ovsdb: %s %s; trying the next server", remote, problem)
            except errors.AuthError:
                rpc.close()
                raise
            except errors.NbdbError as exc:
                if rpc.close_reason is not None:
                    rpc.close()
                    raise rpc.close_reason from None
                problems.append(f"{remote}: {exc}")
            except (KeyError, TypeError, IndexError, AttributeError) as exc:
                problems.append(f"{remote} answered oddly: {exc!r}")
            rpc.close()
        if time.monotonic() >= deadline:
            raise errors.BackendUnavailableError(
                f"no usable OVSDB server for {databases[0]} at {target.describe()}: {'; '.join(problems[-3:])}"
            )
        index = (index + 1) % count
        time.sleep(0.1)
