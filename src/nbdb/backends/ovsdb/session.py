"""The backend's connection, kept up: monitors that feed the replica, and every transaction.

One connection carries the monitors (``monitor_cond_since``, one per database,
with the namespace as a server-side condition), a monitor of ``_Server`` that
says whether the server may still be written (a raft member that loses the
leadership, or its cluster, is left at once), and the transactions. On
reconnect the monitors resume from the last transaction id each database
delivered: the server sends what changed since (or, if it kept no history,
everything), which the replica applies as one synthetic catch-up.

Relays (``_Server`` model ``relay``) each keep their own copy of the data,
some milliseconds apart, and answer reads from it. A session that lost its
relay's connection goes back to the same relay first; and a relay that
cannot resume the monitor and sends a whole state older than the replica
(the nbdb versions of its rows went back) is refused for up to ``timeout``
seconds, so the replica never moves back in time.

Every connection asks to be told of database changes (``set_db_change_aware``,
OVS 2.9; an older server's error is tolerated). ovsdb-server otherwise drops
each client when a database changes under it: a relay that reconnects to its
source ("connected to storage"), a schema conversion. A change-aware client
stays connected; a conversion cancels its monitors (``monitor_canceled``), and
each cancelled monitor is asked for again from the last transaction id its
replica applied, so the replica gets exactly what it has not seen (or, where
the server kept no history, the whole state, applied as the exact difference).
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from typing import Any

from nbdb import errors
from nbdb.backends.ovsdb.cluster import SERVER_COLUMNS, ServerRole, connect_to_server, relayed, usable
from nbdb.backends.ovsdb.rpc import Call, RpcClosed, RpcConnection, RpcError
from nbdb.backends.ovsdb.transport import ssl_context
from nbdb.backends.ovsdb.url import Target
from nbdb.families.ovsdb.conditions import Scope, monitor_requests
from nbdb.families.ovsdb.family import TransactLost, TransactNotSent
from nbdb.families.ovsdb.mapping import Mapping_
from nbdb.families.ovsdb.replica import Replica
from nbdb.families.ovsdb.schema import DatabaseSchema
from nbdb.retry import Outage

__all__ = ["Session", "canceled", "transact_on"]

log = logging.getLogger(__name__)

NO_TXN = "00000000-0000-0000-0000-000000000000"
_SERVER_MONITOR = "nbdb:_Server"
_SERVER_REQUEST = {"Database": [{"columns": SERVER_COLUMNS}]}
_MONITOR_PREFIX = "nbdb:"
_INITIAL_LOAD_SECONDS = 600.0
"""How much longer than ``timeout`` a monitor's first state may take to arrive (a big database)."""


class StaleServer(errors.BackendUnavailableError):
    """The server's state of a database is older than what the replica already shows."""


def canceled(error: Any) -> bool:
    """Whether a transaction's JSON-RPC error is ovsdb-server's "canceled" (its outcome unknown).

    ovsdb-server 3.x answers the bare string; older releases an error object
    (``{"error": "canceled", ...}``) for a transaction cancelled by a database
    replacement.
    """
    return error == "canceled" or (isinstance(error, dict) and error.get("error") == "canceled")


def transact_on(rpc: RpcConnection, db: str, ops: list[dict[str, Any]], timeout: float) -> list[Any]:
    """One transaction on ``rpc``, its reply awaited ``timeout`` seconds: its results; TransactNotSent (also when
    no time is left) or TransactLost when the connection failed it or the reply did not come in time."""
    if timeout <= 0:
        raise TransactNotSent(f"no time left to send the transaction to {rpc.remote}")
    call = rpc.request("transact", [db, *ops])
    try:
        result = call.wait(timeout)
    except RpcClosed as exc:
        if exc.sent:
            raise TransactLost(str(exc)) from None
        raise TransactNotSent(str(exc)) from None
    except RpcError as exc:
        if canceled(exc.error):
            # A relay that lost its source cancels what it forwarded and got no reply for, and a
            # server whose database is replaced (a schema conversion) what was still waiting there
            # (a raft commit in progress): either may have committed it.
            raise TransactLost(f"{rpc.remote} canceled the transaction") from None
        raise errors.ValidationError(f"OVSDB rejected a transaction: {exc.error}") from None
    except errors.BackendUnavailableError as exc:
        raise TransactLost(str(exc)) from None
    if not isinstance(result, list):
        raise TransactLost(f"unexpected OVSDB reply: {result!r}")
    return result


class Session:
    """A connection to a usable server of ``target``, reconnected (and resynced) for as long as it lives."""

    def __init__(self, target: Target, database: str) -> None:
        self.target = target
        self.database = database
        """The one database this connection serves: raft elects a leader per database, so a
        client of two clustered databases keeps one connection to each one's leader."""
        self.ssl_context: ssl.SSLContext | None = ssl_context(target) if target.scheme == "ssl" else None
        self._rpc: RpcConnection | None = None
        self._remote_index = 0
        self._cond = threading.Condition()
        self._ready = False
        self._stop = threading.Event()
        self._scopes: list[tuple[Replica, Scope]] = []
        self._mapping: Mapping_ | None = None
        self._databases: list[str] = []
        self._roles: dict[str, dict[str, Any]] = {}
        self._supervisor: threading.Thread | None = None
        self._move_on = False
        """Reconnect to the next remote first (the last one stopped leading, or was behind)."""
        self._stale_since: float | None = None
        self._outage = Outage(target.timeout)
        """Since when the session has been without a connection: callers wait for a reconnect until
        it has been down for ``target.timeout``, and fail at once after that (see ``_connection``)."""
        self.relay = False
        """Whether the server is a relay (set once the ``_Server`` monitor answered)."""
        self.reconnects = 0
        self.remonitors = 0
        """Monitors asked for again on the same connection after the server cancelled them."""
        self.change_aware = False
        """Whether the current connection's server keeps it across database changes (``set_db_change_aware``)."""
        self._resuming: list[Call] = []
        """Re-monitors in flight (``sync`` waits for them: what they bring was committed before its reply)."""

    # ---------------------------------------------------------------- start

    def open(self) -> tuple[list[str], DatabaseSchema]:
        """Connect for the first time; the databases the server serves, and this one's schema."""
        deadline = time.monotonic() + self.target.timeout
        rpc, self._remote_index = connect_to_server(
            self.target, [self.database], self._notify, self.ssl_context, deadline
        )
        self._ask_change_aware(rpc)
        try:
            served = list(rpc.call("list_dbs", [], self.target.timeout))
            schema = DatabaseSchema.parse(rpc.call("get_schema", [self.database], self.target.timeout))
        except BaseException:
            rpc.close()
            raise
        self._rpc = rpc
        return served, schema

    def start(self, mapping: Mapping_) -> None:
        """Follow the server's role and keep the connection up from now on (no data monitored yet)."""
        self._mapping = mapping
        self._databases = [self.database]
        rpc = self._rpc
        assert rpc is not None
        try:
            self._monitor(rpc, time.monotonic() + self.target.timeout)
        except BaseException:
            rpc.close()
            raise
        with self._cond:
            self._ready = True
            self._cond.notify_all()
        self._supervisor = threading.Thread(target=self._supervise, name="nbdb-ovsdb-session", daemon=True)
        self._supervisor.start()

    def follow(self, replica: Replica, scope: Scope) -> None:
        """Monitor ``scope`` into ``replica`` (now and after every reconnect); return once it is loaded."""
        with self._cond:
            index = len(self._scopes)
            self._scopes.append((replica, scope))
        deadline = time.monotonic() + self.target.timeout
        try:
            rpc = self._connection(deadline)
        except TransactNotSent as exc:
            raise errors.BackendUnavailableError(str(exc)) from None
        try:
            self._wait_loaded(rpc, self._monitor_scope(rpc, index, replica, scope), deadline)
        except errors.BackendUnavailableError as exc:
            # The connection dropped (the reconnect monitors it) or raced a reconnect that did.
            log.debug("ovsdb: monitoring %s: %s; waiting for the reconnect's", scope, exc)
        with replica.cond:
            # Monitored by a reconnect meanwhile (the calls above then failed): wait for that one.
            while self.database not in replica.synced:
                if time.monotonic() > deadline + _INITIAL_LOAD_SECONDS:
                    raise errors.BackendUnavailableError(f"the monitor of {scope} did not load in time")
                replica.cond.wait(0.5)

    def _monitor(self, rpc: RpcConnection, deadline: float) -> None:
        """Start every monitor on a fresh connection and wait for their first state."""
        calls = [rpc.request("monitor_cond", ["_Server", _SERVER_MONITOR, _SERVER_REQUEST], self._server_state)]
        with self._cond:
            scopes = list(self._scopes)
        for index, (replica, scope) in enumerate(scopes):
            calls += self._monitor_scope(rpc, index, replica, scope)
        self._wait_loaded(rpc, calls, deadline)

    def _ask_change_aware(self, rpc: RpcConnection) -> None:
        """Ask ``rpc``'s server to keep this connection when a database changes (not awaited).

        ovsdb-server answers before any later request (so before the monitors);
        a server older than OVS 2.9 answers an error, and then drops this client
        on such a change as before, which the reconnect resumes from.
        """
        self.change_aware = False

        def on_reply(_result: Any) -> None:
            if rpc is self._rpc or self._rpc is None:
                self.change_aware = True

        rpc.request("set_db_change_aware", [True], on_reply)

    def _monitor_scope(
        self, rpc: RpcConnection, index: int, replica: Replica, scope: Scope, dbs: list[str] | None = None
    ) -> list[Call]:
        """Ask for the monitors of one scope (one per database, or those of ``dbs``), resuming where its replica
        stands."""
        assert self._mapping is not None
        calls = []
        for db in self._databases if dbs is None else dbs:
            since = replica.last_txn.get(db, NO_TXN) if db in replica.synced else NO_TXN

            def on_reply(result: Any, db: str = db) -> None:
                found, txn, updates = result
                if db in replica.synced and not found:
                    self._refuse_if_behind(rpc, replica, db, updates or {})
                if db not in replica.synced or not found:
                    replica.resync(db, updates or {}, txn)
                elif updates:
                    replica.apply(db, updates, synthetic=True, txn=txn)
                else:
                    replica.last_txn[db] = txn

            requests = monitor_requests(self._mapping, db, scope)
            monitor = f"{_MONITOR_PREFIX}{index}:{db}"
            # The server composes the whole state in one turn, answering nothing meanwhile: patient for
            # ``timeout`` (the probe alone dropped a server busy with 100,000 ports on a loaded machine).
            calls.append(
                rpc.request("monitor_cond_since", [db, monitor, requests, since], on_reply, patient=self.target.timeout)
            )
        return calls

    def _refuse_if_behind(self, rpc: RpcConnection, replica: Replica, db: str, updates: Any) -> None:
        """Raise StaleServer (and drop the connection) if ``updates``, a whole state, is older than the replica.

        A relay that cannot resume from the replica's last transaction id sends
        its whole copy, which may lag the relay the replica followed before;
        applied, it would take back changes already delivered. Such a server is
        refused until it caught up, for up to ``timeout`` seconds: a state that
        stays older than the replica for that long is the server's real state
        (a database restored from a backup), and is applied.
        """
        behind = replica.behind(db, updates)
        if behind is None:
            self._stale_since = None
            return
        now = time.monotonic()
        if self._stale_since is None:
            self._stale_since = now
        if now - self._stale_since > self.target.timeout:
            waited = self.target.timeout
            log.warning(
                "ovsdb: %s stayed behind this client (%s) for %ss; taking its state", rpc.remote, behind, waited
            )
            self._stale_since = None
            return
        # Close first: no update of this monitor may reach the replica after its refused state.
        self._move_on = True
        rpc.close()
        raise StaleServer(f"{rpc.remote} is behind what this client already saw of {db}: {behind}")

    @staticmethod
    def _wait_loaded(rpc: RpcConnection, calls: list[Call], deadline: float) -> None:
        for call in calls:
            # A big database takes a while to arrive: wait as long as the connection lives
            # (its probe drops a dead server) and the initial state keeps coming, up to a bound.
            while not call.done.wait(0.5):
                if rpc.closed.is_set() or time.monotonic() > deadline + _INITIAL_LOAD_SECONDS:
                    break
            call.wait(0)

    # ---------------------------------------------------------------- the I/O thread's side

    def _notify(self, method: str, params: list[Any]) -> None:
        if method == "update3" and len(params) == 3:
            monitor, txn, updates = params
            target = self._scope_of(monitor)
            if target is not None:
                target[0].apply(target[1], updates, txn=txn)
        elif method == "update2" and len(params) == 2 and params[0] == _SERVER_MONITOR:
            self._server_state(params[1])
        elif method == "monitor_canceled" and len(params) == 1:
            self._monitor_canceled(params[0])

    def _monitor_canceled(self, monitor: Any) -> None:
        """Ask again for a monitor the server cancelled (a schema conversion), on the same connection.

        Runs in the I/O thread, in arrival order: every update the monitor sent
        before its cancellation is applied, and the server sends none for it
        until the new request's reply, whose ``monitor_cond_since`` resumes from
        the last transaction id applied. Nothing is skipped and nothing applied
        twice. A re-monitor the server refuses (the database went away, or no
        longer has a monitored column) drops the connection: the reconnect
        then finds a usable server, or reports none.
        """
        rpc = self._rpc
        if rpc is None or rpc.closed.is_set():
            return
        if monitor == _SERVER_MONITOR:

            def fresh(updates: Any) -> None:
                self._roles = {}
                self._server_state(updates)

            calls = [rpc.request("monitor_cond", ["_Server", _SERVER_MONITOR, _SERVER_REQUEST], fresh)]
        else:
            found = self._scope_of(monitor)
            if found is None:
                return
            index = int(monitor[len(_MONITOR_PREFIX) :].partition(":")[0])
            with self._cond:
                replica, scope = self._scopes[index]
            calls = self._monitor_scope(rpc, index, replica, scope, [found[1]])
        log.info("ovsdb: %s cancelled monitor %s; monitoring it again", rpc.remote, monitor)
        self.remonitors += 1
        with self._cond:
            self._resuming = [c for c in self._resuming if not c.done.is_set()] + calls
        threading.Thread(
            target=self._check_remonitor, args=(rpc, calls), name="nbdb-ovsdb-remonitor", daemon=True
        ).start()

    def _check_remonitor(self, rpc: RpcConnection, calls: list[Call]) -> None:
        """Drop the connection if a re-monitor failed (the reconnect then takes over)."""
        for call in calls:
            while not call.done.wait(0.5):
                if rpc.closed.is_set() or self._stop.is_set():
                    return
            if call.error is not None and not rpc.closed.is_set():
                log.warning("ovsdb: %s refused to monitor again (%s); reconnecting", rpc.remote, call.error)
                rpc.close()
                return

    def _scope_of(self, monitor: Any) -> tuple[Replica, str] | None:
        """The replica and database a monitor id names."""
        if not isinstance(monitor, str) or not monitor.startswith(_MONITOR_PREFIX):
            return None
        index, _, db = monitor[len(_MONITOR_PREFIX) :].partition(":")
        with self._cond:
            if not index.isdigit() or int(index) >= len(self._scopes):
                return None
            return self._scopes[int(index)][0], db

    def _server_state(self, updates: Any) -> None:
        """Follow ``_Server.Database``; leave a server that can no longer write our databases."""
        for id, change in (updates.get("Database") or {}).items():
            if "delete" in change:
                self._roles.pop(id, None)
                continue
            row = self._roles.setdefault(id, {})
            row.update(change.get("initial") or change.get("insert") or change.get("modify") or {})
        roles = [ServerRole.from_row(row) for row in self._roles.values()]
        served = [db for db in self._databases if any(r.name == db for r in roles)]
        self.relay = relayed(roles, self.database)
        problem = usable(roles, served or self._databases[:1])
        rpc = self._rpc
        if problem is not None and rpc is not None and self._ready:
            log.info("ovsdb: %s %s now; reconnecting", rpc.remote, problem)
            self._move_on = True
            rpc.close()

    # ---------------------------------------------------------------- reconnecting

    def _supervise(self) -> None:
        while not self._stop.is_set():
            rpc = self._rpc
            if rpc is not None:
                rpc.closed.wait()
            if self._stop.is_set():
                return
            with self._cond:
                self._ready = False
                self._outage.mark_down()
            log.info("ovsdb: connection to %s lost; reconnecting", rpc.remote if rpc else self.target.describe())
            self._reconnect()

    def _reconnect(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            deadline = time.monotonic() + self.target.timeout
            # A raft member that dropped us has usually lost its leadership: try the next one
            # first. A relay has not: going back to it keeps the replica on the copy it followed.
            stay = self.relay and not self._move_on
            self._move_on = False
            try:
                rpc, self._remote_index = connect_to_server(
                    self.target,
                    self._databases,
                    self._notify,
                    self.ssl_context,
                    deadline,
                    start=(self._remote_index + (0 if stay else 1)) % len(self.target.remotes),
                    stop=self._stop.is_set,
                )
                self._roles = {}
                self._rpc = rpc
                self._ask_change_aware(rpc)
                self._monitor(rpc, deadline)
            except errors.NbdbError as exc:
                log.info("ovsdb: reconnecting to %s failed: %s", self.target.describe(), exc)
                if self._rpc is not None:
                    self._rpc.close()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            self.reconnects += 1
            self._stale_since = None
            with self._cond:
                self._ready = True
                self._outage.mark_up()
                self._cond.notify_all()
            return

    def _connection(self, deadline: float) -> RpcConnection:
        """The connection, once monitored; TransactNotSent if none comes up before ``deadline``.

        Nor after the session has been without a connection for ``target.timeout``: during a
        long outage every caller failed only after waiting a whole timeout, one after the other
        where they queue (concurrent commits go out one transaction at a time), so a writer
        behind three others waited 80 s. Past that, a call fails at once until the reconnect
        (which goes on trying) succeeds.
        """
        with self._cond:
            while not self._ready or self._rpc is None or self._rpc.closed.is_set():
                if self._stop.is_set():
                    raise errors.BackendUnavailableError("the OVSDB backend is closed")
                remaining = self._outage.limit(deadline) - time.monotonic()
                if remaining <= 0:
                    raise TransactNotSent(f"no OVSDB server of {self.target.describe()} for {self.target.timeout}s")
                self._cond.wait(min(remaining, 0.1))
            return self._rpc

    # ---------------------------------------------------------------- the family's primitives

    def transact(self, db: str, ops: list[dict[str, Any]], deadline: float | None = None) -> list[Any]:
        """One transaction (see :meth:`nbdb.families.ovsdb.OvsdbFamilyBackend._transact`), its reply awaited
        until ``deadline`` (the commit's; None: ``timeout`` from now)."""
        deadline = time.monotonic() + self.target.timeout if deadline is None else deadline
        rpc = self._connection(deadline)
        return transact_on(rpc, db, ops, deadline - time.monotonic())

    def sync(self, db: str, deadline: float | None = None) -> None:
        """Return once the replica shows every commit acknowledged before the call (an empty transaction), or
        fail once ``deadline`` (the commit's; None: ``timeout`` from now) has passed."""
        deadline = time.monotonic() + self.target.timeout if deadline is None else deadline
        while True:
            rpc = self._connection(deadline)
            try:
                rpc.call("transact", [db], max(0.5, deadline - time.monotonic()))
                self._wait_resumed(rpc, deadline)
                return
            except RpcClosed:
                if time.monotonic() > deadline:
                    raise errors.BackendUnavailableError(
                        f"OVSDB at {self.target.describe()} unreachable for {self.target.timeout}s"
                    ) from None
            except RpcError as exc:
                raise errors.BackendUnavailableError(f"OVSDB refused to read {db}: {exc.error}") from None

    def _wait_resumed(self, rpc: RpcConnection, deadline: float) -> None:
        """Wait for the re-monitors asked for before now (a cancelled monitor's catch-up holds commits that
        preceded the caller's reply); a connection lost meanwhile is resumed by the reconnect, which ``sync``
        does not wait for (as before)."""
        with self._cond:
            calls = [c for c in self._resuming if not c.done.is_set()]
        for call in calls:
            while not call.done.wait(0.1):
                if rpc.closed.is_set():
                    return
                if time.monotonic() > deadline:
                    raise errors.BackendUnavailableError(
                        f"OVSDB at {self.target.describe()} did not resume a monitor in {self.target.timeout}s"
                    )

    def close(self) -> None:
        """Stop reconnecting and close the connection."""
        self._stop.set()
        rpc = self._rpc
        if rpc is not None:
            rpc.close()
        if self._supervisor is not None and threading.current_thread() is not self._supervisor:
            self._supervisor.join(10)
        with self._cond:
            self._cond.notify_all()
        for replica, _scope in self._scopes:
            replica.wake()
