"""The one applicative API: :class:`Database`.

The Database validates, works out references, encodes, and calls the backend's
small SPI (:mod:`nbdb.spi`). It holds no per-backend logic: where a store
lacks a feature, its capabilities say so and the Database refuses with
UnsupportedError, or does the generic thing every store can (mutations are
re-read and re-applied on a conflict; ``may_exist`` and ``if_exists`` are
settled from the error that names the object).
"""

from __future__ import annotations

import atexit
import functools
import inspect
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, TypeVar, cast, overload
from uuid import UUID

from nbdb import errors, page_token
from nbdb.cache import EXITING, Cache, Replica, SharedCache, Subscriber
from nbdb.capabilities import Atomicity, Capabilities, Expiry
from nbdb.cascade import (
    AFRESH,
    Known,
    cascade_ops,
    drops_of,
    learn_order,
    plain_delete_plans,
    store_decides,
    walk_deletes,
    weigh_refusal,
)
from nbdb.codec import bulk, decode, decode_each
from nbdb.commit_context import (
    CommitContext,
    check_flag,
    check_model_class,
    check_name,
    check_page_size,
    check_since,
    check_topic,
    check_topics,
)
from nbdb.dispatch import check_not_async
from nbdb.hub import WatchHub, open_stream
from nbdb.models.base import Model, all_models
from nbdb.reaper import Reaper
from nbdb.revision import Revision
from nbdb.spi import Backend, LockHandle, Put, RecordChange, RecordStream, RefKey, UniqueKey, WriteOp
from nbdb.timeouts import check_seconds, timeout_of
from nbdb.transaction import Transaction
from nbdb.watch import ErrorHandler, Watch
from nbdb.writes import (
    FieldMutation,
    as_stored,
    check_uuid,
    may_take,
    mutate,
    mutation_args,
    mutation_of,
    put_of,
)

__all__ = ["Database", "ListResult", "Transaction"]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Model)
_List = list  # Database.list() shadows the builtin inside the class body

_MUTATION_ATTEMPTS = 50
_MAY_EXIST_ATTEMPTS = 10
_MAX_PAGE = 2**62

GIVE_BACK_SECONDS = 10.0
"""How long :meth:`Database.close` waits for the locks it gives back when the backend declares no
``request_timeout`` (a third-party backend that does not say how long its server may take): close waited
for them without bound, and a server that never answered hung it."""


class ListResult(list[M]):
    """The objects of a :meth:`Database.list`, with the ``revision`` they reflect.

    A page of a paged listing (``limit=``) also carries ``continue_token``:
    pass it as ``after=`` for the next page; None on the last page.
    """

    revision: int
    continue_token: str | None

    def __init__(self, items: Iterator[M] | list[M], revision: int, continue_token: str | None = None) -> None:
        super().__init__(items)
        self.revision = revision
        self.continue_token = continue_token


class _Ahead(RecordStream):
    """The stream of a watch from a revision the store has not reached: HistoryGoneError when polled."""

    def __init__(self, since: int, now: int) -> None:
        self._since, self._now = since, now

    def poll(self, timeout: float | None) -> list[RecordChange]:
        raise errors.HistoryGoneError(
            f"revision {self._since} is ahead of the store (at {self._now} when the watch began): it is none of "
            "its revisions (another store's or namespace's, or the store was replaced or lost data); list again"
        )

    @property
    def revision(self) -> int:
        return self._since

    def close(self) -> None:
        pass


def _check_on_error(on_error: object) -> None:
    """ValidationError unless ``on_error`` is None or a callable (5 was taken, and raised at a corrupt record)."""
    if on_error is not None and not callable(on_error):
        raise errors.ValidationError(f"on_error takes a callable (error) or None, not {on_error!r}")
    check_not_async("on_error", on_error)


class _Hold:
    """One lock held through a Database: given back once, when its ``with`` block ends or the Database closes.

    The two may race (a controller closed from another thread while a block runs, an ``atexit`` close): the
    first gives the lock back, the second does nothing (a backend's lock is a generator, which two threads must
    not resume at once, and a second release could drop a successor's lock); a close that comes second waits
    for the block's release, as the backend closes after it.
    """

    __slots__ = ("_done", "_once", "handle", "manager")

    def __init__(self, manager: AbstractContextManager[LockHandle], handle: LockHandle) -> None:
        self.manager = manager
        self.handle = handle
        self._once = threading.Lock()
        self._done = False

    def release(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
        *,
        wait: bool = True,
    ) -> bool | None:
        """Leave the backend's lock (the first call; later ones return None), then mark the handle released.

        The handle says ``giving_back`` from the start: a write fenced on it (by another thread still in the
        lock's block, when the Database closes) fails at once rather than racing the release on the server.
        ``lost`` turns True only once the release ended: the backend releases on the server unless ``lost``.
        ``wait=False``: return at once if another call is releasing it (a block's end after a close).
        """
        if self._done and not wait:
            return None
        with self._once:
            if self._done:
                return None
            self._done = True
            self.handle.mark_giving_back()
            try:
                return self.manager.__exit__(exc_type, exc, tb)
            finally:
                # Released (or its release failed and the lease runs out): a handle kept past the block said
                # lost=False for ever, though anyone may hold the lock now.
                self.handle.mark_released()


class _Holds:
    """Every lock held through one Database, in any thread: what :meth:`Database.close` gives back.

    ``bound``: how long a give-back waits for the server (the backend's ``request_timeout``; None:
    :data:`GIVE_BACK_SECONDS`).
    """

    def __init__(self, bound: float | None) -> None:
        self._lock = threading.Lock()
        self._held: dict[_Hold, None] = {}
        self._closed = False
        self.bound = GIVE_BACK_SECONDS if bound is None else bound

    def add(self, hold: _Hold) -> bool:
        """Record ``hold``; False once the Database closed (the caller gives the lock back itself)."""
        with self._lock:
            if self._closed:
                return False
            self._held[hold] = None
            return True

    def discard(self, hold: _Hold) -> None:
        with self._lock:
            self._held.pop(hold, None)

    def close(self) -> list[_Hold]:
        """Every hold still recorded, in the order taken; nothing is recorded from now on."""
        with self._lock:
            self._closed = True
            held, self._held = list(self._held), {}
        return held

    def give_back(self, holds: _List[_Hold]) -> list[Exception]:
        """Release ``holds`` at once, each on a thread of its own; wait at most :attr:`bound`; the errors raised.

        Each handle says ``giving_back`` before its release starts (see :meth:`_Hold.release`). A release that
        fails is logged; one the server does not answer in time is left to finish (or fail) on its own: its
        handle is marked lost now, and its lease runs out with its ttl.
        """
        failures: list[Exception] = []

        def release(hold: _Hold) -> None:
            try:
                hold.release()
            except Exception as exc:  # best effort: close() goes on to free everything else
                log.warning("close: lock %r not released (its lease runs out with its ttl): %s", hold.handle.name, exc)
                failures.append(exc)

        for hold in holds:
            hold.handle.mark_giving_back()  # before any release starts, each as its own thread would
        releases = [
            threading.Thread(target=release, args=(hold,), name=f"nbdb-unlock-{hold.handle.name}", daemon=True)
            for hold in holds
        ]
        for thread in releases:
            thread.start()
        deadline = time.monotonic() + self.bound
        for thread, hold in zip(releases, holds, strict=True):
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning(
                    "close: lock %r: no answer from the server in %ss; its lease runs out with its ttl",
                    hold.handle.name,
                    self.bound,
                )
                hold.handle.mark_lost()
        return list(failures)


class _Lock(AbstractContextManager[LockHandle]):
    """What :meth:`Database.lock` returns: takes the lock on each ``with``, so one may be kept and reused.

    (A backend's lock is a one-shot generator context manager: a second ``with`` on it raised
    AttributeError.) Each thread's holds are its own; leaving a block that holds nothing does nothing.
    """

    def __init__(
        self,
        take: Callable[[], AbstractContextManager[LockHandle]],
        name: str,
        holding: threading.local,
        holds: _Holds,
    ) -> None:
        self._take = take
        self._held = threading.local()
        self._name = name
        self._holding = holding
        """The handles this thread holds through the Database, by lock name (shared by all its locks)."""
        self._holds = holds

    def __enter__(self) -> LockHandle:
        names: dict[str, list[LockHandle]] = self._holding.__dict__.setdefault("names", {})
        if any(not (held.lost or held.giving_back) for held in names.get(self._name, ())):
            # Entered again inside its own block (a helper that takes the lock its caller holds): the
            # second take waited for the first, which its renewal kept alive: a hang without a timeout.
            # A hold that was lost waits for nothing: taking the lock back is how a worker goes on.
            raise errors.ValidationError(
                f"lock {self._name!r} is held by this thread through this Database already: "
                "locks are not reentrant (taking it again would wait for itself)"
            )
        manager = self._take()
        hold = _Hold(manager, manager.__enter__())
        if not self._holds.add(hold):
            # The Database closed while the lock was being taken: nothing would give it back. Given back as
            # close() gives back the others (bounded, its error logged): the release's own error (or a wait
            # without end) reached the caller instead.
            failures = self._holds.give_back([hold])
            raise errors.BackendUnavailableError(
                "the Database was closed while the lock was being taken (it was given back)"
            ) from (failures[0] if failures else None)
        names.setdefault(self._name, []).append(hold.handle)
        stack: list[_Hold] = self._held.__dict__.setdefault("stack", [])
        stack.append(hold)
        return hold.handle

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        stack: list[_Hold] = self._held.__dict__.get("stack", [])
        if not stack:
            return None
        hold = stack.pop()
        names: dict[str, list[LockHandle]] = self._holding.__dict__.get("names", {})
        holds = names.get(self._name, [])
        if hold.handle in holds:
            holds.remove(hold.handle)
            if not holds:
                del names[self._name]
        try:
            # None if Database.close gave the lock back already (the exception, if any, goes on).
            return hold.release(exc_type, exc, tb, wait=False)
        finally:
            # Only now: a close() meanwhile waits for this release before it closes the backend under it.
            self._holds.discard(hold)


_OPEN: weakref.WeakSet[Database] = weakref.WeakSet()
"""The Databases not closed yet, closed at interpreter exit (held weakly: one dropped is not kept alive)."""
_EXIT_LOCK = threading.Lock()


def _close_at_exit() -> None:
    """Close every Database still open when the interpreter exits: their locks are given back at once.

    A process that ended without ``close()`` (a script that falls off its end, a leader's loop on a
    daemon thread inside its lock's block) kept its locks until their ttl: the next replica waited for
    it, although the docs said a lock is given up "when its Database closes, even ... at exit". Each
    close is bounded (see :meth:`Database.close`); one that fails is logged and the others still run. A
    callback still running is not waited for (its daemon thread ends with the interpreter; see ``EXITING``).
    """
    EXITING.set()
    from nbdb.controller import stop_at_exit  # at run time: the controller module imports the cache's

    stop_at_exit()  # first: their running reconciles finish against open Databases (bounded)
    for db in _open_now():
        try:
            db.close()
        except Exception:
            log.warning("closing %r at exit failed", db, exc_info=True)


def _open_now() -> list[Database]:
    """The Databases open now: a copy taken under the lock their adds and discards take.

    A WeakSet copied while another thread opened or closed a Database raised RuntimeError ("Set changed
    size during iteration"), and the exit hook closed none of them.
    """
    with _EXIT_LOCK:
        return list(_OPEN)


def _forget_in_child() -> None:
    """A forked child does not own its parent's Databases: its exit must not close them.

    Closing them at the child's exit gave the parent's locks back on the server (the child holds the
    same tokens) while the parent still led, and wrote through the parent's connections' copies.
    """
    _OPEN.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def _track(db: Database) -> None:
    """Close ``db`` at exit unless it closed before (registered at a Database, not at import)."""
    with _EXIT_LOCK:
        # Registered again after the backend was made: exit hooks run last-in first-out, and a backend's own
        # (weakref.finalize, which SQLite's connections use) must run after the close, not before it.
        atexit.unregister(_close_at_exit)
        atexit.register(_close_at_exit)
        _OPEN.add(db)


@functools.cache
def _lock_takes_closed(backend: type[Backend]) -> bool:
    """Whether ``backend.lock`` takes the ``closed`` event by that name (the SPI's later argument)."""
    try:
        params = inspect.signature(backend.lock).parameters.values()
    except (TypeError, ValueError):  # a signature Python cannot tell: pass it, as the SPI says
        return True
    return any((p.name == "closed" and p.kind is not p.POSITIONAL_ONLY) or p.kind is p.VAR_KEYWORD for p in params)


class Database:
    """A connection to one northbound database, through one backend.

    Get one with :func:`nbdb.connect`. It owns the backend's connections and
    threads, and every cache and watch it made: :meth:`close` (or leaving a
    ``with`` block) releases them.
    """

    def __init__(self, backend: Backend, url: str = "", *, reap: bool = True) -> None:
        self._backend = backend
        self._url = url
        # Weak: a cache or watch the caller closed and dropped must not be kept alive here.
        self._caches: weakref.WeakSet[Cache | Replica] = weakref.WeakSet()
        self._watches: weakref.WeakSet[Watch] = weakref.WeakSet()
        self._closed = False
        self._closing = False
        self._ended = threading.Event()
        """Set with ``_closed``: every lock still being taken through this Database stops waiting
        (BackendUnavailableError), on every backend (see :meth:`nbdb.spi.Backend.lock`)."""
        self._context = CommitContext(backend)
        """Checks, the commit seam and revision stamps: shared with every Transaction of this Database."""
        self._hub: WatchHub | None = None
        self._hub_lock = threading.Lock()
        self._holding = threading.local()
        """The lock names each thread holds through this Database (see :class:`_Lock`)."""
        self._holds = _Holds(backend.request_timeout)
        """Every lock held through this Database, in any thread: :meth:`close` gives them back."""
        self._replicas: dict[tuple[Any, ...], tuple[Replica, int]] = {}
        """The shared replicas by (models, topics), and how many open handles read each."""
        if self._context.watermark is not None:
            self._context.watermark.went_back = self._store_went_back
        self._reaper: Reaper | None = None
        if reap and backend.capabilities.expiry is Expiry.REAPER and type(backend).reap is not Backend.reap:
            self._reaper = Reaper(backend)
        _track(self)

    def __repr__(self) -> str:
        return f"<nbdb.Database {type(self._backend).__name__}>"

    def _open(self) -> None:
        """BackendUnavailableError once :meth:`close` ran (writes check it in the commit context)."""
        if self._closed:
            raise errors.BackendUnavailableError("the Database is closed")

    @property
    def backend(self) -> Backend:
        """The backend object (for tools and tests; applications need not touch it)."""
        return self._backend

    @property
    def capabilities(self) -> Capabilities:
        """The backend's static declaration of what it guarantees."""
        return self._backend.capabilities

    # ---------------------------------------------------------------- CRUD

    def create(
        self, obj: M, *, may_exist: bool = False, ttl: float | None = None, fence: LockHandle | None = None
    ) -> M:
        """Store a new object; returns the stored copy (version 1).

        Raises ConflictError if its id exists, UniqueViolationError (a
        ConflictError) if another object holds one of its unique values, and
        ReferenceError if a reference points to a missing object.
        ``may_exist``: return the stored object instead of failing (as
        ovsdbapp's ``may_exist``, nothing written) when one holds its unique
        value or is stored under its id (a create retried after a
        CommitUnknownError, a controller's deterministic id), is of the
        same topic and has the same required references (the same switch of a
        port); one of another topic or owner is not the object asked for, and
        the error stands (UniqueViolationError, ConflictError), as
        ``ovn-nbctl lsp-add sw2 p1 --may-exist`` refuses a p1 of sw1. ``ttl``: the object lives
        that many seconds unless :meth:`refresh` ed. ``fence``: commit only
        while that lock is held (LockLostError otherwise).
        """
        obj = self._context.checked_new(obj, may_exist, ttl)
        put, planned = put_of(obj, 0, ttl, self._context.deferred)
        if may_exist and (held := self._read_only_existing(put)) is not None:
            return cast("M", held)
        for _attempt in range(_MAY_EXIST_ATTEMPTS):
            try:
                result = self._context.commit_ops([put], fence)
            except errors.ConflictError as exc:
                if not may_exist:
                    raise
                existing = may_take(exc, put, type(obj), self.get)
                if existing is None:
                    continue  # deleted meanwhile: the create may go through now
                return existing
            return as_stored(
                planned, result.versions[0], self._context.stamp(result.revision), self._context.store_token
            )
        raise errors.ConflictError(f"{obj.nbdb_table} {obj.id}: its unique value keeps changing hands; try again")

    def _read_only_existing(self, put: Put) -> Model | None:
        """What ``create(..., may_exist=True)`` of ``put`` takes, looked up before the commit, when the store
        reads its table but cannot write it (``unwritable``: OVN's ``Load_Balancer_Group`` in a namespace); None
        otherwise.

        The commit would refuse the table (UnsupportedError) before finding the object stored under the id
        or holding a unique value: a controller's idempotent "ensure the group" raised although nothing was
        to be written. The same rules as after a conflict (:func:`may_take`: topic, owner).
        """
        if self._backend.unwritable(put.table) is None:
            return None
        obj = cast("Model", put.value)
        model = type(obj)
        record = self._backend.read(put.table, put.id)
        if record is not None:
            # The object stored under the id, read once: may_take takes it as read (it read it again).
            stored = decode(model, record)
            exc = errors.ConflictError(f"{put.table} {put.id} already exists", key=(put.table, put.id))
            if (found := may_take(exc, put, model, lambda _model, _id: stored)) is not None:
                return found
        for field, value in obj.unique_values():
            key = self._backend.stored_unique(put.table, UniqueKey(field, value))
            owner = self._backend.unique_owner(put.table, key)
            if owner is None:
                continue
            exc = errors.UniqueViolationError(
                f"{put.table}: {field} {value} is held by {owner}",
                table=put.table,
                field=field,
                value=value,
                existing=owner,
            )
            if (found := may_take(exc, put, model, self.get)) is not None:
                return found
        return None  # nothing stored: the commit raises the store's UnsupportedError

    def check_model(self, model: type[Model]) -> None:
        """Raise UnsupportedError, saying why, if this database cannot store ``model``'s objects.

        Every model fits most backends; OVSDB stores only the tables of the
        schemas it serves (``Chassis`` is no OVN_Northbound table).
        """
        model = check_model_class(model)
        self._backend.check_table(model.nbdb_table)

    def get(self, model: type[M], id: UUID | str) -> M:
        """The stored object; NotFoundError if there is none."""
        model = check_model_class(model)  # type: ignore[assignment]
        uid = check_uuid(id)
        if self._closed:  # _open()'s test inline: a get on memory:// is ~1.3 µs, the call ~4 % of it
            self._open()
        record = self._backend.read(model.nbdb_table, uid)
        if record is None:
            raise errors.NotFoundError(f"{model.nbdb_table} {uid} does not exist", key=(model.nbdb_table, uid))
        return decode(model, record)

    def get_by(self, model: type[M], **values: Any) -> M | None:
        """The object whose unique field (or group of fields) holds ``values``, or None.

        ``db.get_by(LogicalSwitchPort, name="vm1")``: the names must be one
        of the model's ``nbdb_unique`` groups.
        """
        model = check_model_class(model)  # type: ignore[assignment]
        self._open()
        group = tuple(sorted(values))
        if group not in {tuple(sorted(g)) for g in model.nbdb_unique_fields}:
            raise errors.ValidationError(
                f"{model.__name__} has no unique field group {'+'.join(group)!r} (nbdb_unique: {model.nbdb_unique})"
            )
        self._context.need("unique", self.capabilities.unique, "enforce unique fields")
        spec = next(g for g in model.nbdb_unique_fields if tuple(sorted(g)) == group)
        key = self._backend.stored_unique(model.nbdb_table, UniqueKey("+".join(spec), model.unique_text(spec, values)))
        owner = self._backend.unique_owner(model.nbdb_table, key)
        if owner is None:
            return None
        try:
            found = self.get(model, owner)
        except errors.NotFoundError:
            return None
        if (key.field, key.value) in found.unique_values():
            return found
        # A claim naming an object without the value hid the object that holds it (None, for ever):
        # another writer's claim is CorruptRecordError; one that moved meanwhile was a race.
        self._backend.check_unique_claim(model.nbdb_table, key, owner)
        return None

    def update(self, obj: M, *, fence: LockHandle | None = None) -> M:
        """Compare-and-swap: store ``obj`` if the stored copy is still at ``obj.version``.

        Returns the new stored copy (carrying its ``nbdb_revision``);
        ConflictError if somebody wrote in between.
        """
        obj = self._context.checked_stored(obj)
        put, planned = put_of(obj, obj.version, None, self._context.deferred)
        result = self._context.commit_ops([put], fence)
        return as_stored(planned, result.versions[0], self._context.stamp(result.revision), self._context.store_token)

    def mutate(
        self,
        target: M | tuple[type[M], UUID | str],
        *,
        add: FieldMutation | None = None,
        remove: FieldMutation | None = None,
        fence: LockHandle | None = None,
    ) -> M:
        """Add and remove members of list, set or map fields, whatever the stored version.

        ``db.mutate(group, add={"ports": [p1, p2]})``; ``remove={"external_ids":
        ["k"]}`` drops map keys, ``add={"external_ids": {"k": "v"}}`` sets
        them. Two writers mutating one object both succeed: the change is
        re-applied to the latest version when another writer got there first
        (references and the model's rules are checked each time); a store
        with native mutations (OVSDB) applies it to whatever it holds, without
        comparing versions (the model's rules are checked against the copy
        read before). Returns the stored copy after the change (the current
        one if nothing changed).
        """
        model, uid = self._context.target(target)
        add, remove = mutation_args(add, remove)
        for _attempt in range(_MUTATION_ATTEMPTS):
            current = self.get(model, uid)
            new = mutate(current, add, remove)  # validates the change (and finds one that changes nothing)
            if new is current:
                if fence is not None:
                    self._context.check_fence(fence)  # nothing to write, but not for a holder that lost the lock
                return current  # type: ignore[return-value]
            if self._backend.handles_mutations:
                # The store applies the change itself to whatever it holds then: no version to compare.
                result, _ = self._context.commit([mutation_of(model, uid, add, remove)], fence)
                return self._context.read_back(self.get(model, uid), result.versions[0], result.revision)  # type: ignore[return-value]
            try:
                return self.update(new, fence=fence)  # type: ignore[return-value]
            except errors.ConflictError as exc:
                if isinstance(exc, errors.UniqueViolationError) or exc.key not in (None, (model.nbdb_table, uid)):
                    raise
                log.debug("mutate: %s %s changed meanwhile; applying the change again", model.nbdb_table, uid)
        raise errors.ConflictError(f"{model.nbdb_table} {uid} kept changing; the mutation was not applied")

    def refresh(self, obj: M | tuple[type[M], UUID | str], ttl: float) -> None:
        """Give an object created with a ttl another ``ttl`` seconds of life.

        NotFoundError if it expired (or was deleted) already; ValidationError
        if it was created without a ttl.
        """
        model, uid = self._context.target(obj)
        check_seconds("ttl", ttl)
        self._open()
        self._context.need("expiry", self.capabilities.expiry is not Expiry.NONE, "expire objects")
        self._backend.refresh(model.nbdb_table, uid, ttl)

    @overload
    def delete(
        self,
        obj: Model | tuple[type[Model], UUID | str],
        *,
        cascade: bool = ...,
        if_exists: bool = ...,
        fence: LockHandle | None = ...,
    ) -> Revision | None: ...
    @overload
    def delete(
        self,
        obj: type[Model],
        id: UUID | str,
        *,
        cascade: bool = ...,
        if_exists: bool = ...,
        fence: LockHandle | None = ...,
    ) -> int | None: ...

    def delete(
        self,
        obj: Model | type[Model] | tuple[type[Model], UUID | str],
        id: UUID | str | None = None,
        *,
        cascade: bool = False,
        if_exists: bool = False,
        fence: LockHandle | None = None,
    ) -> Revision | None:
        """Delete an object (compare-and-swap on its version), or ``Model, id`` or a ``(Model, id)`` key (any version).

        Returns the revision of the commit (None if ``if_exists`` found
        nothing to delete). ReferenceError if other objects still reference
        it, unless ``cascade``: then, in one transaction, dependents whose
        reference is required are deleted too (recursively), and optional or
        list references to it are cleared. The dependents are nbdb's own reads:
        one that another writer changed or deleted before the commit, or an
        object that started referring to one meanwhile (a ReferenceError of the
        commit), is read again and the cascade planned again, as :meth:`mutate` does (only the
        version of an object given, the root, is the caller's to compare).
        Weak references to it (``Reference(..., weak=True)``: a port group's
        ports) are dropped in the same commit either way, as ovsdb-server drops
        them, and planned again the same way when a referrer changes meanwhile.
        """
        check_flag("cascade", cascade)
        self._open()
        op = self._context.delete_op(obj, id, if_exists)
        if op is None:
            if fence is not None:
                self._context.check_fence(fence)  # gone already, but not for a holder that lost the lock
            return None
        root = (op.table, op.id)
        last: errors.NbdbError | None = None  # why the last plan was dropped: the cause of giving up
        refused: frozenset[tuple[str, UUID]] | None = None  # the plan a ReferenceError refused last
        # A plain delete plans too when a weak reference can point to its table, or a model is owned by it
        # (see weak_drops): the walk lists the referrers and plans the drops and the objects it takes along.
        # It walks before its first commit when this table's last delete took something along (a meter's
        # bands always hold it: an owner's walks before the first too), else it goes alone first and plans
        # once refused: most targets (a port in no port group, a bare switch) have none, and their delete
        # stays one request without listing the referrers first. Which comes first is all the hint decides
        # (plain_delete_plans, the rule a transaction's deletes follow too): a lone delete refused plans as
        # before, a walk finding nothing commits the delete alone, and both end in the same outcome.
        if cascade:
            planned = plan_now = True
        else:
            planned, plan_now = plain_delete_plans(op.table, self._context.delete_order)
        walks = plan_now  # whether it walked first (what it took is learned unless cascade)
        known: Known | None = None  # the root's referrers a refusal named, as read to weigh it
        stale_named: frozenset[RefKey] | None = None  # the referrers the last (stale) refusal named
        for _attempt in range(_MUTATION_ATTEMPTS if planned else 1):
            ops: _List[WriteOp] | None = None
            try:
                try:
                    if not plan_now:
                        ops = [op]
                    elif cascade:
                        ops = cascade_ops(self._backend, op)
                    else:
                        walk = walk_deletes(self._backend, [root], known)
                        ops = [op]
                        if walk.owned or walk.referrers:  # (most owners' walks find nothing: a bare switch)
                            ops += drops_of(walk, frozenset())
                except errors.CorruptRecordError as corrupt:
                    # A referrer its walk cannot read (another writer corrupted it): an owner's delete
                    # planned before any refusal goes alone, and a refusal stands (store_decides; a
                    # cascade reports the record, and so does a plan made again after a conflict).
                    if cascade or (last is not None and not isinstance(last, errors.ReferenceError)):
                        raise
                    store_decides(corrupt, last)
                    ops = [op]
                known = None
                result, revision = self._context.commit(ops, fence)
            except errors.ReferenceError as exc:
                # A referrer that appeared after the cascade read the referrers (a port group another
                # controller just added the port to) refused a delete the caller asked to cascade:
                # "pass cascade=True", to a caller who had. Planned again, it is cleared too; a plan that
                # came out the same (a referrer the plan cannot see) leaves the refusal standing.
                plan = None if ops is None else frozenset((o.table, o.id) for o in ops)
                if not planned or plan is None or plan == refused:
                    raise
                if not cascade and exc.target == root and exc.referrers is not None:
                    # The store read every referrer of the target to refuse it: one the plain delete can
                    # neither drop nor take along (a switch's port) refuses any plan; else, if the delete
                    # alone was refused, the plan walks from them as read here (an owner's delete listed
                    # and read them again). A refused plan's own drops are not among those named.
                    weighed = weigh_refusal(self._backend, exc, stale_named)
                    if weighed is None:
                        raise
                    read, stale_named = weighed
                    if read is AFRESH:
                        # Stale: a named referrer let go of the root meanwhile (another writer may have
                        # put it in a referrer not named). The walk lists them again, and its plan is not
                        # weighed against this one, made from what the store held then (named stale twice
                        # running, the same ones, the refusal stood: weigh_refusal).
                        plan = None
                    elif plan == {root}:
                        known = read
                refused, last, plan_now = plan, exc, True
                log.debug("delete: %s %s gained a referrer meanwhile; planning the cascade again", *root)
            except errors.NotFoundError as exc:
                if if_exists and exc.key == root:
                    return None
                if not planned or exc.key in (None, root):
                    raise
                last = exc
                log.debug("delete: dependent %s of %s %s is gone; planning the cascade again", exc.key, *root)
            except errors.ConflictError as exc:
                # A dependent changed since the cascade read it (a port group another controller adds
                # members to): the caller never held its version, so a ConflictError about it asked
                # them to "re-read it and retry" an object they never read.
                if not planned or isinstance(exc, errors.UniqueViolationError) or exc.key in (None, root):
                    raise
                last = exc
                log.debug("delete: dependent %s of %s %s changed meanwhile; planning the cascade again", exc.key, *root)
            else:
                # (A lone delete that went alone first took nothing along: nothing to learn, no call.)
                if plan_now and not cascade and walks != (len(ops) > 1):
                    learn_order(self._context.delete_order, op.table, walks, len(ops) > 1)
                return None if 0 in result.skipped else revision
        raise errors.ConflictError(
            f"{op.table} {op.id}: its dependents kept changing; nothing was deleted", key=root
        ) from last

    def list(
        self,
        model: type[M],
        topic: str | None = None,
        *,
        skip_corrupt: bool = False,
        limit: int | None = None,
        after: str | None = None,
    ) -> ListResult[M]:
        """Every object of ``model`` (in ``topic`` if given), with the revision it reflects.

        A corrupt record raises CorruptRecordError unless ``skip_corrupt``.
        ``limit``: one page of about that many objects, with a
        ``continue_token`` to pass as ``after`` for the next; every page
        reflects the first one's revision (HistoryGoneError once the store
        can no longer show it). Use :meth:`iter` to walk a large table.
        """
        model = check_model_class(model)  # type: ignore[assignment]
        if topic is not None:
            check_topic(topic)
        check_flag("skip_corrupt", skip_corrupt)
        self._open()
        topics = None if topic is None else [topic]
        if limit is not None or after is not None:
            # A page that large is the whole table; stores count in 64 bits.
            limit = min(check_page_size("limit", limit), _MAX_PAGE)
            self._context.need("pages", self.capabilities.pages, "list in pages")
            after = page_token.of_listing(after, (model.nbdb_table, topic))
        out: _List[M] = []
        # The collector is paused from the scan on, as over a cache's load: the scan's records (a
        # key, an id, the stored bytes) all stay alive until decoded, and full collections walked
        # them again and again as they grew (etcd, 100,000 ports: 22 us an object, 15 at 10,000).
        with bulk():
            if limit is None and after is None:
                snapshot = self._backend.scan([model.nbdb_table], topics)
            else:
                snapshot = self._backend.scan_page([model.nbdb_table], topics, limit, after)  # type: ignore[arg-type]
            for record, decoded in zip(snapshot.records, decode_each(model, snapshot.records), strict=True):
                if not isinstance(decoded, errors.CorruptRecordError):
                    out.append(decoded)
                elif skip_corrupt:
                    log.warning("list: skipping corrupt %s %s", record.table, record.id)
                else:
                    raise decoded
        return ListResult(out, snapshot.revision, page_token.tag(snapshot.after, (model.nbdb_table, topic)))

    def iter(self, model: type[M], topic: str | None = None, *, page_size: int = 1000) -> Iterator[M]:
        """Every object of ``model``, page by page at one revision, in bounded memory.

        Stores without consistent pages (``capabilities.pages`` False) are
        read in one list. ``page_size`` is checked on every store, when called.
        """
        model = check_model_class(model)  # type: ignore[assignment]
        if topic is not None:
            check_topic(topic)
        # Checked here, not at the first page: a store without pages never looks at it, and took
        # page_size=0, -1 or "a" silently where every other store refused it.
        check_page_size("page_size", page_size)
        return self._iter(model, topic, page_size)

    def _iter(self, model: type[M], topic: str | None, page_size: int) -> Iterator[M]:
        if not self.capabilities.pages:
            yield from self.list(model, topic)
            return
        after: str | None = None
        while True:
            page = self.list(model, topic, limit=page_size, after=after)
            yield from page
            if page.continue_token is None:
                return
            after = page.continue_token

    def transaction(self, *, fence: LockHandle | None = None) -> Transaction:
        """Collect writes and commit them together when the ``with`` block ends (``fence``: see :meth:`create`)."""
        self._open()
        if self.capabilities.transactions is Atomicity.NONE:
            raise errors.UnsupportedError(f"{type(self._backend).__name__} has no multi-object transactions")
        return Transaction(self._context, self.get, fence)

    # ---------------------------------------------------------------- change streams

    def _models(self, models: type[Model] | Sequence[type[Model]] | None) -> _List[type[Model]]:
        if models is None:
            return list(all_models())
        if isinstance(models, type | Model):
            return [check_model_class(models)]
        if isinstance(models, str | bytes) or not isinstance(models, Iterable):
            raise errors.ValidationError(f"expected a Model subclass, several, or None; got {models!r}")
        return [check_model_class(m) for m in models]

    def watch(
        self,
        model: type[Model] | Sequence[type[Model]] | None = None,
        topics: Collection[str | None] | None = None,
        since: int | None = None,
        on_error: ErrorHandler | None = None,
    ) -> Watch:
        """Every change after revision ``since`` (None: from now), each once, in order per object.

        ``model``: a model class, several, or None for every model defined.
        ``topics``: only objects of these topics (None in the set means
        objects without a topic). Raises HistoryGoneError (when iterated) if
        ``since`` is older than the backend's history, or ahead of the store
        (a revision of another store or namespace).
        """
        models = self._models(model)
        topics = check_topics(topics)
        since = check_since(since)
        _check_on_error(on_error)
        self._open()
        now = self._backend.current_revision()
        stream: RecordStream
        if since is not None and since > now:
            # Not a revision of this store (another store's or namespace's, or the store was replaced or lost
            # data): a stream from it waited for the store to reach it, and skipped every change up to it.
            stream = _Ahead(since, now)
        else:
            stream = open_stream(self._backend, [m.nbdb_table for m in models], topics, now if since is None else since)
        watch = Watch(stream, {m.nbdb_table: m for m in models}, on_error)
        self._watches.add(watch)
        return watch

    def cache(
        self,
        models: type[Model] | Sequence[type[Model]] | None = None,
        topics: Collection[str | None] | None = None,
        on_change: Subscriber | None = None,
        on_error: Callable[[errors.CorruptRecordError], None] | None = None,
        *,
        fields: Mapping[type[Any], Iterable[str]] | Iterable[str] | None = None,
        shared: bool = True,
    ) -> Cache:
        """A local replica of ``models`` (in ``topics``), loading in the background.

        Call ``wait_synced()`` before relying on its content. ``on_change``
        receives every event from the first list on (off the cache's thread,
        as every subscriber: :mod:`nbdb.dispatch`). ``fields`` keeps only those fields (a list for a
        one-model cache, or a mapping from model to fields): ``get`` and
        ``find`` then return read-only partial views (:mod:`nbdb.projection`).
        The caches of one Database share one change stream from the server
        (:mod:`nbdb.hub`), and caches of the same models and topics (without
        ``fields``) share one replica too: a :class:`~nbdb.cache.SharedCache`
        handle each, with its own subscriptions, queues and ``on_error``.
        ``shared=False`` gives this one a stream and a replica of its own.
        """
        followed = self._models(models)
        topics = check_topics(topics)
        check_flag("shared", shared)
        _check_on_error(on_error)
        self._open()
        # Its list runs in the background, which retries a backend error: a table the server does not
        # serve is refused here (UnsupportedError), not waited for.
        self._backend.check_readable([m.nbdb_table for m in followed])
        key = (tuple(followed), None if topics is None else frozenset(topics))
        with self._hub_lock:
            if shared and self._hub is None:
                self._hub = WatchHub(self._backend)
            streams = self._hub.stream if shared and self._hub is not None else None
            if not shared or fields is not None:
                cache = Cache(
                    self._backend,
                    followed,
                    topics,
                    on_change,
                    on_error,
                    fields=fields,
                    commit_times=self._context.commit_times,
                    streams=streams,
                    watermark=self._context.watermark,
                )
                self._caches.add(cache)
                # Its replica too: its thread keeps the replica alive when the caller drops the handle without
                # closing it, and close() below must still stop it (it retried against the closed backend).
                self._caches.add(cache._replica)
                return cache
            core, handles = self._replicas.get(key, (None, 0))
            fresh = core is None
            if core is None:
                core = Replica(
                    self._backend,
                    followed,
                    topics,
                    commit_times=self._context.commit_times,
                    streams=streams,
                    watermark=self._context.watermark,
                )
                self._caches.add(core)
            self._replicas[key] = (core, handles + 1)
        handle = SharedCache(core, functools.partial(self._release_replica, key, core), on_change, on_error)
        if fresh:
            core.start()
        self._caches.add(handle)
        return handle

    def _store_went_back(self, seen: int, revision: int) -> None:
        """A commit came back at ``revision``, below ``seen``: the store lost data; every cache lists again.

        (See :class:`nbdb.revision.Watermark`.) Each replica is told first (its ``wait_for`` waits from
        now until it listed again), then the shared stream's history is declared gone.
        """
        log.warning(
            "the store went back in time (a commit at revision %d, after revision %d was seen): it lost data "
            "(a restart without persistence, a failover); every cache of this Database lists again",
            revision,
            seen,
        )
        with self._hub_lock:
            replicas = [c for c in list(self._caches) if isinstance(c, Replica)]
            hub = self._hub
        for replica in replicas:
            replica.store_went_back()
        if hub is not None:
            hub.history_gone(
                errors.HistoryGoneError(f"the store went back from revision {seen} to {revision}: it lost data")
            )

    def _release_replica(self, key: tuple[Any, ...], core: Replica) -> None:
        """A handle on ``core`` closed: close the replica with its last handle."""
        with self._hub_lock:
            held, handles = self._replicas.get(key, (None, 0))
            if held is not core:
                return  # closed already (Database.close)
            if handles > 1:
                self._replicas[key] = (core, handles - 1)
                return
            del self._replicas[key]
        core.close()

    # ---------------------------------------------------------------- coordination

    def lock(self, name: str, ttl: float = 10.0, timeout: float | None = None) -> AbstractContextManager[LockHandle]:
        """Mutual exclusion among the clients that share this database.

        The lock lives on a lease of ``ttl`` seconds that is renewed while the
        block runs; ``handle.lost`` turns True if renewal fails, ``handle.giving_back``
        once the block ends or the Database closes (a fenced write fails from then on:
        check ``lost or giving_back`` before acting unfenced). ``timeout``: give up
        with LockTimeoutError after that many seconds (None: wait). A wait still
        going on when this Database closes ends at once with BackendUnavailableError.
        """
        check_name("lock", name)
        check_seconds("lock ttl", ttl)
        timeout = timeout_of(timeout, "lock timeout")
        self._open()

        def take() -> AbstractContextManager[LockHandle]:
            self._open()
            if _lock_takes_closed(type(self._backend)):
                return self._backend.lock(name, ttl, timeout, closed=self._ended)
            # A backend written before the SPI's lock took ``closed`` (three arguments) still locks; only
            # its waits do not end with the Database's close.
            return self._backend.lock(name, ttl, timeout)

        return _Lock(take, name, self._holding, self._holds)

    def allocate_id(self, name: str) -> int:
        """The next value (1, 2, 3, ...) of the named counter, unique among all clients.

        An id below 1, or anything but a whole number, is never handed out: it is a counter another
        writer damaged (:class:`nbdb.CorruptRecordError`), whichever backend counted it. (The families
        test what a counter holds before they move it, :func:`nbdb.families.rules.counter_value`, so
        that a damaged one stays where it is.)
        """
        check_name("counter", name)
        self._open()
        value = self._backend.allocate_id(name)
        if type(value) is not int or value < 1:
            raise errors.CorruptRecordError(
                f"id counter {name!r} gave {value!r}, not a whole number from 1: nbdb did not write it", key=name
            )
        return value

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Give back every lock still held through this Database, stop its caches and watches, release the backend.

        A lock whose ``with`` block still runs (closed from another thread, or at exit) is released on the
        server, as leaving the block would, so that another client takes it at once rather than after its
        ttl; its handle turns ``giving_back`` before the release starts (a write fenced on it raises
        LockLostError rather than racing the release), then ``released`` and ``lost`` once it ended, and
        leaving the block later does nothing. Best effort: the releases run at once, and close waits for
        them at most the backend's ``request_timeout`` (:data:`GIVE_BACK_SECONDS`, 10 s, for a backend that
        declares none); one that fails or does not end by then is logged, its handle marked lost, and its
        lease runs out with its ttl.
        """
        if self._closed or self._closing:
            return
        # Closing from here: a second close() (atexit beside a controller's thread) returns at once, as it did
        # before the queues below were stopped first (their feeds wait for a running callback) and not closed.
        self._closing = True
        with _EXIT_LOCK:  # the exit hook's copy of the open Databases never sees the set change under it
            _OPEN.discard(self)
        # Every step runs even when one raises or is interrupted (Ctrl-C while a step waits for a running
        # callback or a lock's give-back): the rest closes, then the first exception is raised. (Interrupted,
        # close() left the watches, the other caches and the backend open, and a second close() returned at
        # once.) Each step's waits are bounded, so the whole close is.
        failures: list[BaseException] = []

        def step(action: Callable[[], object]) -> None:
            try:
                action()
            except BaseException as exc:
                if failures:
                    log.warning("close: %r while closing after %r", exc, failures[0])
                failures.append(exc)

        for cache in list(self._caches):
            if isinstance(cache, Cache):  # first: no controller starts a reconcile that finds the Database closed
                step(cache.stop_queues)
        self._closed = True
        self._context.closed = True
        self._ended.set()  # a lock() still waiting for another holder gives up, with or without a timeout
        step(lambda: self._holds.give_back(self._holds.close()))
        if self._reaper is not None:
            step(self._reaper.close)
        for cache in list(self._caches):
            step(cache.close)
        self._replicas.clear()
        for watch in list(self._watches):
            step(watch.close)
        if self._hub is not None:
            step(self._hub.close)
        step(self._backend.close)
        if failures:
            raise failures[0]

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
