"""The OVSDB backend: the OVN Northbound database itself, through nbdb's typed models."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import weakref
from collections.abc import Collection, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, ClassVar

from nbdb import errors
from nbdb.backends.ovsdb.cluster import NO_LOCKS_ON_RELAYS
from nbdb.backends.ovsdb.locks import OvsdbLockHandle, hold_lock, lock_name
from nbdb.backends.ovsdb.session import Session
from nbdb.backends.ovsdb.url import DEFAULT_NB, Target, parse_url
from nbdb.capabilities import Atomicity, Capabilities, Durability, Expiry
from nbdb.families.ovsdb import schemagen
from nbdb.families.ovsdb.conditions import Scope
from nbdb.families.ovsdb.family import OvsdbFamilyBackend, Transact
from nbdb.families.ovsdb.mapping import build_mapping
from nbdb.families.ovsdb.ovn import OVN_BINDINGS, OVN_NB_DATABASE
from nbdb.families.ovsdb.replica import Replica, RevisionClock
from nbdb.families.ovsdb.rows import VersionBook
from nbdb.models.base import Model
from nbdb.models.shape import model_shapes, shape_of
from nbdb.pool import Lease, SharedResources
from nbdb.spi import LockHandle

__all__ = ["OvsdbBackend", "generate_schema"]

log = logging.getLogger(__name__)


def generate_schema(
    models: Iterable[type[Model]] | None = None, name: str = "nbdb", version: str = "1.0.0"
) -> dict[str, Any]:
    """An ``.ovsschema`` for the models no ``OVN_Northbound`` table holds (see :mod:`nbdb.families.ovsdb`).

    ``models`` defaults to every model defined in this process.
    """
    shapes = model_shapes() if models is None else tuple(shape_of(m) for m in models)
    return schemagen.generate_schema(shapes, name, version, exclude={b.model_table for b in OVN_BINDINGS})


class _Driver:
    """One session, the mapping and the replicas it feeds: shared by the backends opened on one target.

    Replicas are made on first use: the main one (every mapped table of the
    namespace) for commits and unfiltered reads, and one per (tables, topics)
    that topic-filtered caches and watches follow, filtered on the server.
    """

    def __init__(self, target: Target) -> None:
        self.target = target
        primary = Session(target, target.database)
        served, schema = primary.open()
        self.sessions = {target.database: primary}
        try:
            schemas = {target.database: schema}
            if target.model_db in served and target.model_db != target.database:
                model = Session(target, target.model_db)
                self.sessions[target.model_db] = model
                schemas[target.model_db] = model.open()[1]
            self.nb_db = target.database
            self.model_db = target.model_db if target.model_db in schemas else None
            # nbdb's logical schema lives in OVN_Northbound; any other database holds generated models only.
            bindings = {OVN_NB_DATABASE: OVN_BINDINGS} if target.database == OVN_NB_DATABASE else {}
            self.mapping = build_mapping(schemas, bindings, model_shapes(), self.model_db)
            self.versions = VersionBook()
            self.clock = RevisionClock()
            for session in self.sessions.values():
                session.start(self.mapping)
        except BaseException:
            self.close()
            raise
        self._lock = threading.Lock()
        self._replicas: dict[Scope, Replica] = {}
        self._loading: dict[Scope, threading.Event] = {}

    @property
    def session(self) -> Session:
        """The connection to the main database."""
        return self.sessions[self.target.database]

    @property
    def relay(self) -> bool:
        """Whether the remotes are relays (each keeps a copy of its own; locks are per server)."""
        return self.session.relay

    def replica(self, scope: Scope) -> Replica:
        """The replica of ``scope``, made and loaded on first use."""
        while True:
            with self._lock:
                replica = self._replicas.get(scope)
                if replica is not None:
                    return replica
                loading = self._loading.get(scope)
                if loading is None:
                    self._loading[scope] = threading.Event()
                    break
            loading.wait(self.target.timeout)
        topics = scope.topics
        filtered = topics is not None and None not in topics
        replica = Replica(
            self.mapping, self.versions, self.target.namespace, self.clock, filtered=filtered, topics=topics
        )
        try:
            for db in self.mapping.databases():
                self.sessions[db].follow(replica, scope)
            with self._lock:
                self._replicas[scope] = replica
        finally:
            with self._lock:
                self._loading.pop(scope).set()
        return replica

    def loaded(self, scope: Scope) -> Replica | None:
        """The replica of ``scope`` if it was made already (never makes one)."""
        with self._lock:
            return self._replicas.get(scope)

    def replicas(self) -> list[Replica]:
        """Every replica made so far."""
        with self._lock:
            return list(self._replicas.values())

    def close(self) -> None:
        for session in self.sessions.values():
            session.close()


_DRIVERS: SharedResources[Target, _Driver] = SharedResources("ovsdb connections", _Driver.close)
"""Backends opened in one process on the same target share its connection (and revisions)."""


class OvsdbBackend(OvsdbFamilyBackend):
    """The OVN Northbound database (and optionally a model database) on ovsdb-server.

    URLs::

        ovsdb+tcp://HOST:PORT[,HOST:PORT...][/DATABASE][?options]
        ovsdb+ssl://HOST:PORT[,...][/DATABASE]?private_key=K&certificate=C&ca_cert=CA
        ovsdb+unix:///PATH/TO/SOCKET[?options]

    Several remotes are the members of a raft cluster (the backend keeps to
    the leader) or relays in front of one. See ``docs/backends/ovsdb.md``.
    """

    capabilities: ClassVar[Capabilities] = Capabilities(
        transactions=Atomicity.ATOMIC,
        linearizable_reads=True,
        cas_across_recreate=True,
        server_side_topic_filter=True,
        durability=Durability.DURABLE,
        history="the last 10,000 changes seen by this connection; a revision of another connection or process "
        "is gone; after a reconnect the changes missed arrive merged: a watch ends with HistoryGoneError there, "
        "a cache applies them as the exact difference",
        cross_process=True,
        unique=True,
        fencing=True,
        expiry=Expiry.REAPER,
        pages=True,
        notes="Objects are rows of the real OVN_Northbound tables (interoperable with ovn-nbctl, ovn-northd and "
        "ovsdbapp). List fields come back in OVSDB set order (sorted, without duplicates). Locks are "
        "OVSDB's native locks, held as long as the lock's connection lives (ttl is not used); a fenced "
        "commit is sent on the lock's own connection behind an OVSDB assert. Unique fields are the schema's"
        " indexes (OVN_Northbound's are shared by every namespace and by ovn-nbctl) or, in the generated "
        "model database, indexed key columns per namespace; where the served schema has no index, a wait in"
        " each commit keeps them among nbdb's writers. Under a schema's own index on optional columns, "
        "OVSDB counts two unset values as one: a second object leaving the group unset is a "
        "UniqueViolationError (value None), where other stores let any number of objects leave it unset. "
        "mutate() is OVSDB's native mutate on set and map columns. Expiry: deadlines in external_ids, "
        "reaped by connected Databases (wall clock). A transaction must stay within one OVSDB database. "
        "Tables without external_ids (OVN's Load_Balancer_Group, Static_MAC_Binding, Encap) are written with "
        "their columns alone: compare-and-swap compares the copy's content, versions count the changes each "
        "connection sees, and such an object holds no topic, ttl or namespace; a lost reply is settled by the "
        "commit's mark in NB_Global/SB_Global external_ids (each such commit changes them), CommitUnknownError "
        "in a database without such a table. "
        "Through relays, reads are as fresh as the relay and locks (so fenced writes) are refused: such a "
        "Database declares linearizable_reads, locks and fencing False.",
    )

    def __init__(self, lease: Lease[Target, _Driver]) -> None:
        self._lease = lease
        driver = lease.value
        self._driver = driver
        self.mapping = driver.mapping
        self.clock = driver.clock
        self.namespace = driver.target.namespace
        self.nb_db = driver.nb_db
        self.commit_timeout = driver.target.timeout
        if driver.relay:
            # A relay answers reads from its own copy, and OVSDB locks live in one server process,
            # which a relay does not forward: clients of two relays could hold one lock.
            vars(self)["capabilities"] = dataclasses.replace(
                type(self).capabilities, linearizable_reads=False, locks=False, fencing=False
            )
        self._closed = False
        self._main: Replica | None = None
        """The main replica once loaded (a driver keeps each scope's replica for good)."""
        self._locks_lock = threading.Lock()
        self._local_locks: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> OvsdbBackend:
        """Open ``ovsdb+tcp://``, ``ovsdb+ssl://`` or ``ovsdb+unix://`` (see the class docstring)."""
        target = parse_url(url, options)
        return cls(_DRIVERS.acquire(target, lambda: _Driver(target)))

    def __repr__(self) -> str:
        return f"<OvsdbBackend {self._driver.target.describe()} db={self.nb_db}>"

    def _transact(self, db: str, ops: list[dict[str, Any]], deadline: float | None = None) -> list[Any]:
        if self._closed:
            raise errors.BackendUnavailableError("this OVSDB backend is closed")
        return self._driver.sessions[db].transact(db, ops, deadline)

    def _replica_for(self, tables: Collection[str] | None, topics: Collection[str | None] | None) -> Replica:
        if self._closed:
            raise errors.BackendUnavailableError("this OVSDB backend is closed")
        if tables is None and topics is None:
            # Every commit asks for the main replica, several times: skip the scope and the driver's lock.
            if self._main is None:
                self._main = self._driver.replica(Scope(self.namespace))
            return self._main
        scope = Scope(
            self.namespace,
            None if tables is None else frozenset(tables),
            None if topics is None else frozenset(topics),
        )
        return self._driver.replica(scope)

    def _replicas(self) -> list[Replica]:
        return self._driver.replicas()

    def _loaded_replica(self) -> Replica | None:
        return None if self._closed else self._driver.loaded(Scope(self.namespace))

    def _sync(self, db: str, deadline: float | None = None) -> None:
        if self._closed:
            raise errors.BackendUnavailableError("this OVSDB backend is closed")
        self._driver.sessions[db].sync(db, deadline)

    def _fenced(self, fence: LockHandle) -> tuple[str, Transact]:
        if not isinstance(fence, OvsdbLockHandle):
            raise errors.ValidationError(f"fence= takes a lock of an OVSDB database, not {fence!r}")
        mine, theirs = self._driver.target, fence.target
        if (mine.scheme, mine.remotes) != (theirs.scheme, theirs.remotes):
            raise errors.ValidationError(f"fence= takes a lock of this OVSDB server; {fence!r} is of another one")
        return fence.ovsdb_name, fence.transact

    @property
    def request_timeout(self) -> float:
        return self._driver.target.timeout

    @contextmanager
    def lock(
        self, name: str, ttl: float, timeout: float | None, closed: threading.Event | None = None
    ) -> Iterator[LockHandle]:
        """OVSDB's native lock ``nbdb_<sha256(namespace/name)>``, on a connection of its own to the leader."""
        if ttl <= 0:
            raise errors.ValidationError("lock ttl must be positive")
        if self._driver.relay:
            raise errors.UnsupportedError(NO_LOCKS_ON_RELAYS)
        key = lock_name(self.namespace, name)
        with self._locks_lock:
            local = self._local_locks.get(key)
            if local is None:
                local = threading.Lock()
                self._local_locks[key] = local
        # One OVSDB session may ask for a lock once: threads of this backend queue here first.
        started = time.monotonic()
        if not local.acquire(timeout=-1 if timeout is None else timeout):
            raise errors.LockTimeoutError(f"lock {name!r} is held by another owner; gave up after {timeout}s")
        try:
            target = self._driver.target
            context = self._driver.session.ssl_context
            # The lock's connection is its lease: if it dies before the lock is granted (or with the
            # reply granting it), the server frees the lock, and asking again on a new one is safe.
            give_up = time.monotonic() + target.timeout
            while True:
                remaining = None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
                with ExitStack() as stack:
                    try:
                        handle = stack.enter_context(
                            hold_lock(target, self.nb_db or DEFAULT_NB, context, name, remaining, closed)
                        )
                    except errors.AuthError:
                        raise
                    except errors.LockTimeoutError:
                        # Said as the caller asked: the wait left for the session ("gave up after 0.4999958339976729s").
                        raise errors.LockTimeoutError(
                            f"lock {name!r} is held by another owner; gave up after {timeout}s"
                        ) from None
                    except errors.BackendUnavailableError as exc:
                        if time.monotonic() > give_up or (closed is not None and closed.is_set()):
                            raise
                        log.info("ovsdb: lock %r: %s; asking again", name, exc)
                        time.sleep(0.1)
                        continue
                    yield handle
                    return
        finally:
            local.release()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._lease.release()
