"""The local cache: a replica of some models (and topics), kept current by a watch.

It lists at a revision, then watches from that revision, so no change falls
between the two. When the backend cannot resume (history compacted or trimmed,
server restarted), it re-lists and emits events for exactly the difference —
synthetic ``updated``/``created`` events and tombstones (``deleted``) for
objects that vanished — so consumers never see a reload storm.

A :class:`Replica` holds the objects and indexes and the thread that keeps
them; a :class:`Cache` is a handle on one (its own, or one that caches of the
same models and topics share: :class:`SharedCache`), with its own
subscriptions, work queues and ``on_error``. The replica's thread only applies
changes; subscribers run on its delivery thread (:mod:`nbdb.dispatch`: one
for all the subscribers of a replica), work queues are fed from subscriptions
(:mod:`nbdb.controller`), and projections keep partial views
(:mod:`nbdb.projection`). Reads take no lock and copy nothing.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from operator import attrgetter, itemgetter
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from nbdb import errors, metrics
from nbdb.codec import bulk, decode, decode_each
from nbdb.commit_context import check_flag, check_model_class
from nbdb.dispatch import Dispatcher, Predicate, Subscriber, Subscription, check_not_async
from nbdb.events import ChangeEvent, EventKind, Key, in_commit_order
from nbdb.hub import open_stream
from nbdb.models.base import Model, check_field_value, check_held_object, written_of
from nbdb.projection import PartialView, projections
from nbdb.replica import Indexes, bucket_objects, index, index_all, index_nulls, matches, reindex, unindex
from nbdb.revision import Revision, Watermark
from nbdb.spi import Backend, Record, RecordChange, RecordStream
from nbdb.timeouts import timeout_of
from nbdb.waits import Waits
from nbdb.writes import check_uuid

if TYPE_CHECKING:
    from nbdb.controller import CacheQueue
    from nbdb.workqueue import RateLimiter

__all__ = ["Cache", "Replica", "SharedCache", "Subscriber"]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Model)
_List = list  # Cache.list() shadows the builtin inside the class body

_TABLE = itemgetter(0)
"""A record's table."""
_ID_INT = attrgetter("id.int")
"""The int of an object's id: what a replica keys its objects by."""
_SCALARS = frozenset({str, UUID, int})
"""Value types that are never a Model (find skips the isinstance check for them)."""
_UNINDEXED = frozenset({list, dict, set})
"""Value types find compares one by one (a list field matched against a list, an unhashable value)."""


class _Closed(dict[Any, Any]):
    """What a closed cache handle reads through: every read raises BackendUnavailableError.

    A closed cache (closed by the caller, or by its Database's close()) is
    no longer kept current: ``get``/``list``/``find`` answered from what it
    held at close, silently stale. Its containers are swapped for this one
    at close, so the open handle's reads pay nothing for the check.
    """

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise errors.BackendUnavailableError("the cache is closed: it no longer follows the store")

    get = __getitem__ = values = items = keys = __iter__ = __contains__ = __len__ = _refuse


_CLOSED: dict[Any, Any] = _Closed()

_POLL_SECONDS = 0.5
_MAX_BACKOFF = 5.0
_CLOSE_WAIT = 5.0
EXITING = threading.Event()
"""Set by the exit hook (nbdb.api) before it closes the open Databases: a close then waits for no callback
that is running. Its thread is a daemon, which the interpreter leaves as it is; waiting for a callback that
never returns (one that waits for the main thread, or for a lost server) only held the exit 5 s for each."""


def _close_wait() -> float:
    """How long a close waits for a running callback (:data:`_CLOSE_WAIT`, none at interpreter exit)."""
    return 0.0 if EXITING.is_set() else _CLOSE_WAIT


def object_id(model: type[Model], field: str, value: Any) -> UUID:
    """The id a find() of ``model`` by ``field`` compares, for an object given as its value.

    ValidationError for an object the field cannot hold: one of another table than the one it
    references (find(LogicalSwitchPort, switch=router) took the router's id and silently found
    nothing), or any object for a field that is no reference and holds no UUID (name=switch).
    A projected cache's view of an object stands for it (it was refused as no UUID).
    """
    if not check_held_object(model, field, value) and field in model.model_fields:
        try:
            check_field_value(model, field, value.id)  # a plain UUID field may hold any object's id
        except errors.ValidationError:
            raise errors.ValidationError(
                f"{model.__name__}.{field} is no reference: find it by its value, not a {type(value).__name__}"
            ) from None
    found: UUID = value.id
    return found


def _unchanged(held: Any, record: Record) -> bool:
    """Whether the cached ``held`` is what a re-list's ``record`` stores: its version, and its revision where told.

    A version alone does not tell an object deleted and created again (at version 1 again, and on to the
    same version) between two lists from the one held: the revision that wrote the record does, where the
    store gives it (:attr:`Record.written`) and the held copy carries one (a decoded copy its record's, a
    write's result its commit's; a projected view carries none, and is compared by version as before).
    """
    if held is None or held.version != record.version:
        return False
    written = record.written
    if written is None:
        return True
    stamp = written_of(held, held.version)  # a write's result of this process: its commit's token on OVSDB
    return stamp is None or stamp == written


class Replica:
    """What the caches of one list+watch share: the objects, their indexes, and the thread that keeps them.

    It lists at a revision, then follows the changes from it (re-listing when
    history is gone), applies each change once, and hands the events to the
    subscriptions of every handle (:class:`Cache`) through one delivery thread
    (:class:`~nbdb.dispatch.Dispatcher`). Handles read its containers
    directly; it closes when its owner says so (the last handle, or the
    Database).
    """

    def __init__(
        self,
        backend: Backend,
        models: Sequence[type[Model]],
        topics: Collection[str | None] | None = None,
        *,
        fields: Mapping[type[Any], Iterable[str]] | Iterable[str] | None = None,
        commit_times: metrics.CommitTimes | None = None,
        streams: Callable[[Sequence[str], Collection[str | None] | None, int], RecordStream] | None = None,
        watermark: Watermark | None = None,
    ) -> None:
        self._backend = backend
        self._watermark = watermark
        """Its Database's highest revision seen of the store: the replica raises it as it follows."""
        self._streams = streams or functools.partial(open_stream, backend)
        self._models = {m.nbdb_table: m for m in models}
        self._tables = sorted(self._models)
        self._topics = None if topics is None else frozenset(topics)
        self._views = projections(models, fields)
        self._objects: dict[type[Model], dict[int, Model]] = {m: {} for m in models}
        # Keyed by the id's integer (``id.int``): hashed and compared in C. Keyed by the UUID,
        # every get() ran UUID.__hash__ and, for an id that is not the very object held (a
        # caller's copy, another cache's), UUID.__eq__, both Python (about half of a get).
        # An index bucket is the one object that holds a value, or a dict by id
        # once several share it (a set per near-unique value, like a name, costs ~200 bytes).
        self._indexes: dict[type[Model], Indexes] = {m: {f: {} for f in self._index_fields(m)} for m in models}
        self._nulls: dict[type[Model], set[str]] = {m: set() for m in models}
        """The indexed fields whose None values are indexed too: those a find() asked None of (see index_nulls)."""
        self._fields = {
            m: frozenset(self._views[m].nbdb_fields if m in self._views else m.model_fields) for m in models
        }
        self._lock = threading.RLock()
        self._scope = backend.revision_scope
        self._subscriptions: list[Subscription] = []
        self._dispatcher = Dispatcher("+".join(self._tables))
        """The one delivery thread of this replica's subscribers (and of every handle's)."""
        self._awaiting_sync: list[Subscription] = []
        self._waits = Waits(self)
        self._error_subs: list[Subscription] = []
        """Every handle's ``on_error`` (replaced, not changed in place: the apply thread iterates it)."""
        handles = metrics.active()
        self._metrics = None if handles is None else handles.backend(backend)
        self._commit_times = commit_times if self._metrics is not None else None
        if self._metrics is not None:
            self._metrics.track(self)
        self.corrupt: dict[tuple[str, UUID], errors.CorruptRecordError] = {}
        """Records that failed to decode, by (table, id); cleared when a good copy arrives."""
        self._relists = 0
        self._revision = 0
        self._resets = 0
        """How many times its Database saw the store go back in time (see :meth:`store_went_back`)."""
        self._listed = 0
        """The value of ``_resets`` when the last list began: below ``_resets``, what is held is of a lost history."""
        self._synced = threading.Event()
        self._closed = threading.Event()
        self._sync_changed = threading.Condition(threading.Lock())
        """Notified when the first list loads, the replica closes or a handle closes (``wait_synced`` waits on it)."""
        self._stream: RecordStream | None = None
        self._wanted = 0
        """The highest revision a wait asked for (:meth:`want`), told again to a stream opened later."""
        self._emitted: list[ChangeEvent[Model]] = []
        """The events of the batch being applied, delivered (in commit order) when it ends (under the lock)."""
        self._thread = threading.Thread(target=self._run, name="nbdb-cache", daemon=True)

    def start(self) -> None:
        """Start listing and following (once its first handle is attached)."""
        self._thread.start()

    def _index_fields(self, model: type[Model]) -> tuple[str, ...]:
        view = self._views.get(model)
        return model.nbdb_index_fields if view is None else view.nbdb_index_fields

    def followed(self, model: type[Model]) -> type[Model]:
        """``model`` if this replica follows it; ValidationError otherwise."""
        try:
            followed = model in self._objects
        except TypeError:  # unhashable: an object given for its class (cache.get(port, id)), a list
            followed = False
        if not followed:
            if not isinstance(model, type):
                raise errors.ValidationError(f"expected a Model class, got a {type(model).__name__} object")
            raise errors.ValidationError(f"this cache does not follow {model.__name__}")
        return model

    # ---------------------------------------------------------------- what its helpers read (nbdb.waits)

    @property
    def lock(self) -> threading.RLock:
        """Held while a batch of changes is applied: what is read under it is one batch's state."""
        return self._lock

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def topics(self) -> frozenset[str | None] | None:
        """The topics followed (None: all)."""
        return self._topics

    @property
    def revision_scope(self) -> object:
        """The sequence this replica's revisions belong to (see :attr:`nbdb.spi.Backend.revision_scope`)."""
        return self._scope

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def reached(self, revision: int) -> bool:
        """Whether the first list is loaded and every change up to ``revision`` applied (under :attr:`lock`)."""
        return self._revision >= revision and self._synced.is_set() and self._listed >= self._resets

    def want(self, revision: int) -> None:
        """A wait needs every change up to ``revision``: its stream is told (see :meth:`RecordStream.reach`)."""
        self._wanted = max(self._wanted, revision)
        stream = self._stream
        if stream is not None:
            stream.reach(revision)

    def reached_exactly(self, revision: int) -> bool:
        """Whether :meth:`reached` holds and the replica stands at ``revision`` itself (under :attr:`lock`)."""
        return self._revision == revision and self.reached(revision)

    @property
    def watermark(self) -> Watermark | None:
        """Its Database's highest revision seen of the store (None: revisions count per connection)."""
        return self._watermark

    @property
    def stale(self) -> bool:
        """True from a reset of the store its Database saw until the replica listed again (under :attr:`lock`).

        What it holds then, and its revision, are of a history the store lost: a revision of the new one
        compares below it, and an object written since is not held (nor known to be deleted).
        """
        return self._listed < self._resets

    def store_went_back(self) -> None:
        """Its Database saw the store go back in time (a commit below a revision seen): list again.

        Until a list that began after this call is loaded, :meth:`reached` is False and
        :meth:`nbdb.Cache.wait_for` waits (it said True at once: the new, lower revision was below the
        replica's old one). The replica's thread sees it after its current poll (a shared stream's poll
        ends at once: the Database ends the hub's streams too) and lists again, emitting the difference.
        """
        with self._lock:
            self._resets += 1

    def held(self, model: type[Model], id: UUID) -> Model | None:
        """The copy of ``model`` ``id`` held now, or None (``model`` must be followed)."""
        return self._objects[model].get(id.int)

    def models_of(self, models: type[Model] | Sequence[type[Model]] | None) -> _List[type[Model]]:
        """``models`` checked against the followed ones (None: all of them)."""
        if models is None:
            return list(self._objects)
        if isinstance(models, type):
            models = [models]
        elif isinstance(models, Model):
            check_model_class(models)  # raises, naming the object's class
        elif isinstance(models, str | bytes) or not isinstance(models, Iterable):
            raise errors.ValidationError(f"expected a Model subclass, several, or None; got {models!r}")
        return [self.followed(m) for m in models]

    def _subscribe(
        self,
        callback: Callable[[Any], None],
        models: type[Model] | Sequence[type[Model]] | None,
        predicate: Predicate | None,
        replay: bool,
        *,
        name: str = "",
        tick: tuple[float, Callable[[], None]] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> Subscription:
        """Register a subscription (replaying what is cached if asked), delivered by this replica's thread."""
        if not callable(callback):
            # Taken, it failed at each delivery, logged, and delivered nothing.
            raise errors.ValidationError(f"a subscriber is a callable (event), not {callback!r}")
        if not (predicate is None or callable(predicate)):
            # A controller's bad predicate= was reported naming its work queue's own callback.
            raise errors.ValidationError(f"predicate= takes a callable (event) or None, not {predicate!r}")
        check_not_async("a subscriber", callback)
        check_not_async("predicate=", predicate)
        followed = self.models_of(models)
        sub = Subscription(
            callback,
            followed,
            predicate,
            name=name,
            detach=self._detach,
            tick=tick,
            dispatcher=self._dispatcher,
            on_close=on_close,
        )
        with self._lock:
            if replay:
                replayed = [
                    ChangeEvent(EventKind.CREATED, model, None, obj, self._revision, True)
                    for model in followed
                    for obj in self._objects[model].values()
                ]
                for event in in_commit_order(replayed):  # one revision: the referenced first
                    sub.offer(event)
            self._subscriptions.append(sub)
            if self._synced.is_set():
                sub.mark_replayed()
            else:
                self._awaiting_sync.append(sub)
        return sub

    def _detach(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscriptions:
                self._subscriptions.remove(sub)
            if sub in self._awaiting_sync:
                self._awaiting_sync.remove(sub)

    def metric_samples(self) -> Iterator[tuple[str, tuple[str, ...], float]]:
        """The ``cache_objects`` and ``handler_pending`` gauges (see :mod:`nbdb.metrics`)."""
        label = metrics.backend_label(self._backend)
        for model, objs in self._objects.items():
            yield "cache_objects", (label, model.nbdb_table), float(len(objs))
        yield "handler_pending", (label,), float(sum(s.pending for s in list(self._subscriptions)))

    def __len__(self) -> int:
        return sum(len(objs) for objs in self._objects.values())

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Stop following changes, end every subscription, and join the replica's threads."""
        self._closed.set()
        self.sync_changed()
        stream = self._stream
        if stream is not None:
            stream.close()
        if self._thread.ident is not None and threading.current_thread() is not self._thread:
            self._thread.join()  # (not started: closed by the Database while its first handle was being made)
        with self._lock:
            subs = list(self._subscriptions)
            self._waits.release_all()
        wait = _close_wait()
        for sub in subs:
            sub.close(wait)
        for errors_sub in self._error_subs:
            errors_sub.close(wait)
        if not self._dispatcher.close(wait):
            log.warning("cache: a subscriber is still running %.1fs after close()", wait)

    # ---------------------------------------------------------------- the thread

    def _run(self) -> None:
        need_list = True
        backoff = 0.05
        while not self._closed.is_set():
            try:
                if need_list:
                    self._relist()
                    need_list = False
                try:
                    self._stream = self._streams(self._tables, self._topics, self._revision)
                finally:
                    # Synced once the stream is open (or failed to: the list is loaded all the same), so a
                    # commit made after wait_synced() is on its way at once (see nbdb.hub's _await_open).
                    if not self._synced.is_set():
                        self._announce_synced()
                if self._closed.is_set():
                    break
                if self._wanted > self._revision:
                    self._stream.reach(self._wanted)
                while not self._closed.is_set():
                    # Also the delivery thread's watchdog: it looks again while a callback runs long.
                    changes = self._stream.poll(self._dispatcher.watchdog(_POLL_SECONDS))
                    with self._lock:
                        try:
                            for change in changes:
                                self._apply(change)
                            self._revision = max(self._revision, self._stream.revision)
                            stale = self._listed < self._resets
                            if self._watermark is not None and not stale:
                                self._watermark.observed(self._revision)
                        finally:
                            self._after_batch(bool(changes))  # what was applied is delivered, whatever raised
                        if stale:
                            raise errors.HistoryGoneError(
                                f"the store went back in time (a commit came back below revision "
                                f"{self._revision}): it lost the history this cache stands on"
                            )
                    if changes and self._metrics is not None:
                        self._metrics.applied(changes, self._commit_times)
                    backoff = 0.05
            except errors.HistoryGoneError as exc:
                log.info("cache: history gone after revision %d (%s); re-listing", self._revision, exc)
                need_list = True
                self._relists += 1
                if self._metrics is not None:
                    self._metrics.relisted()
            except errors.CorruptRecordError as exc:
                # The list failed whole on a key another writer damaged that no one record stands for (a
                # Redis directory set of another type): the cache keeps serving what it holds, reports it
                # through on_error at every try (the backoff bounds them), and lists again until it passes.
                log.warning("cache: list failed at revision %d, retrying in %.2fs: %s", self._revision, backoff, exc)
                for errors_sub in self._error_subs:
                    errors_sub.put(exc)
                self._closed.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
            except errors.NbdbError as exc:
                log.warning("cache: backend error at revision %d, retrying in %.2fs: %s", self._revision, backoff, exc)
                self._closed.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
            except Exception:
                # A bug must not silently freeze the replica: log it, and
                # rebuild from a fresh list so the cache converges again.
                log.exception("cache: unexpected error at revision %d; re-listing", self._revision)
                need_list = True
                self._closed.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
            finally:
                if self._stream is not None:
                    self._stream.close()
                    self._stream = None

    def _after_batch(self, changed: bool = True) -> None:
        if self._emitted:
            # Each commit's events in the one order that shows no dangling reference (nbdb.events).
            emitted, self._emitted = in_commit_order(self._emitted), []
            for sub in self._subscriptions:
                for event in emitted:
                    sub.offer(event)
        if changed:
            for sub in self._subscriptions:
                sub.wake()
        if self._waits.pending:
            self._waits.wake()

    def _relist(self) -> None:
        # The collector is paused from the scan on (bulk): the scan builds a few tracked objects
        # per record (its Record, key, id) that all stay alive until applied, and it re-scanned
        # them over and over (Redis, 10,000 ports: 15 -> 10 us a port with it paused).
        resets = self._resets  # read before the scan: a reset seen during it may not be in what it reads
        with bulk():
            snapshot = self._backend.scan(self._tables, self._topics)
            revision = snapshot.revision
            fresh = self._by_model(snapshot.records)
            # The listed records (keys, stored bytes: about as much again as the objects
            # they become) go as they are applied, not when this frame returns: a caller
            # woken by wait_synced() must not find them still held (seen as ~900 B more
            # per cached port on Redis and etcd, whenever the caller measured first).
            del snapshot
            with self._lock:
                for model in list(fresh):
                    self._reload(model, fresh.pop(model), revision)
                self._revision = revision
                self._listed = resets
                if self._watermark is not None:
                    self._watermark.observed(revision)
                self._after_batch()

    def _announce_synced(self) -> None:
        """The first list is loaded (and its stream opened): wake ``wait_synced`` and the replays."""
        with self._lock:
            self._synced.set()
            for sub in self._awaiting_sync:
                sub.mark_replayed()
            self._awaiting_sync.clear()
            if self._waits.pending:
                self._waits.wake()
        self.sync_changed()

    def sync_changed(self) -> None:
        """Wake every ``wait_synced``: the replica synced, or it or one of its handles closed."""
        with self._sync_changed:
            self._sync_changed.notify_all()

    def _by_model(self, records: Iterable[Record]) -> dict[type[Model], _List[Record]]:
        """The records of each followed model (others are left out)."""
        if len(self._models) == 1 and isinstance(records, list):
            # One model (a cache's usual case): the scan's list as it is, when it holds that
            # model's records only, as a scan of its table does (told in C, not a step per record).
            ((table, only),) = self._models.items()
            if not records or set(map(_TABLE, records)) == {table}:
                return {only: records}
        fresh: dict[type[Model], _List[Record]] = {m: [] for m in self._objects}
        for record in records:
            model = self._models.get(record.table)
            if model is not None:
                fresh[model].append(record)
        return fresh

    def _reload(self, model: type[Model], records: _List[Record], revision: int) -> None:
        """Make ``model``'s objects those listed in ``records`` at ``revision``, emitting the difference."""
        current = self._objects[model]
        if current:  # a re-list: what vanished since is deleted (a first load has nothing to compare)
            listed = {record.id.int for record in records}
            for key in [i for i in current if i not in listed]:
                gone = current[key]
                self._remove(model, gone)
                self.corrupt.pop((model.nbdb_table, gone.id), None)
                self._emit(ChangeEvent(EventKind.DELETED, model, gone, None, revision, True))
            held = current.get
            records = [r for r in records if not _unchanged(held(r.id.int), r)]  # changed since
        if not current:
            self._load(model, records, revision)
            return
        view = self._views.get(model)
        indexes, nulls = self._indexes[model], self._nulls[model]
        for record, decoded in zip(records, decode_each(model, records), strict=True):
            if isinstance(decoded, errors.CorruptRecordError):
                self._corrupt(model, record, revision, decoded)
                continue
            if self.corrupt:
                self.corrupt.pop((model.nbdb_table, record.id), None)
            new: Model = decoded if view is None else view.of(decoded)  # type: ignore[assignment]
            key = new.id.int  # the record's id (decode checked it): the int the object holds, no second one
            old = current.get(key)
            if old is None:  # _put's first case, inline
                current[key] = new
                index(indexes, new, nulls)
            else:
                self._put(model, old, new)
            if self._subscriptions:
                kind = EventKind.CREATED if old is None else EventKind.UPDATED
                self._emit(ChangeEvent(kind, model, old, new, revision, True))

    def _load(self, model: type[Model], records: _List[Record], revision: int) -> None:
        """:meth:`_reload` into no objects (a first load): every object put, then indexed field by field."""
        current = self._objects[model]
        loaded: _List[Any] = decode_each(model, records)
        if any(issubclass(kind, errors.CorruptRecordError) for kind in set(map(type, loaded))):  # told in C
            decoded, loaded = loaded, []
            for record, obj in zip(records, decoded, strict=True):
                if isinstance(obj, errors.CorruptRecordError):
                    self._corrupt(model, record, revision, obj)
                else:
                    loaded.append(obj)
        if self.corrupt:  # records that failed before (a re-list that found no object left)
            table = model.nbdb_table
            for obj in loaded:
                self.corrupt.pop((table, obj.id), None)
        view = self._views.get(model)
        if view is not None:
            loaded = [view.of(obj) for obj in loaded]
        # Keyed by the int each object holds (decode checked it is the record's id), read once for both.
        keys = list(map(_ID_INT, loaded))
        current.update(zip(keys, loaded, strict=True))
        if len(current) == len(loaded):
            index_all(self._indexes[model], loaded, self._nulls[model], keys)
            if self._subscriptions:
                for new in loaded:
                    self._emit(ChangeEvent(EventKind.CREATED, model, None, new, revision, True))
            return
        # Two records of one id (copies in two topics, which no writer of nbdb makes): one after the other.
        current.clear()
        for new in loaded:
            old = current.get(new.id.int)
            self._put(model, old, new)
            if self._subscriptions:
                kind = EventKind.CREATED if old is None else EventKind.UPDATED
                self._emit(ChangeEvent(kind, model, old, new, revision, True))

    def _decode(self, model: type[Model], record: Record, revision: int) -> Model | None:
        try:
            obj = decode(model, record)
        except errors.CorruptRecordError as exc:
            self._corrupt(model, record, revision, exc)
            return None
        if self.corrupt:
            self.corrupt.pop((model.nbdb_table, record.id), None)
        view = self._views.get(model)
        return obj if view is None else view.of(obj)  # type: ignore[return-value]

    def _corrupt(self, model: type[Model], record: Record, revision: int, exc: errors.CorruptRecordError) -> None:
        """Keep the last good copy of ``record``'s object, and say why."""
        self.corrupt[(model.nbdb_table, record.id)] = exc
        log.warning(
            "cache: keeping the last good copy of %s %s at revision %d: %s",
            model.nbdb_table,
            record.id,
            revision,
            exc,
        )
        if self._metrics is not None:
            self._metrics.corrupt()
        for errors_sub in self._error_subs:
            errors_sub.put(exc)

    def _apply(self, change: RecordChange) -> None:
        model = self._models.get(change.table)
        if model is None:
            return
        current = self._objects[model].get(change.id.int)
        if change.new is None:
            self.corrupt.pop((change.table, change.id), None)
            if current is None:
                return
            self._remove(model, current)
            if self._subscriptions:
                self._emit(ChangeEvent(EventKind.DELETED, model, current, None, change.revision, change.synthetic))
            return
        version = change.new.version
        if current is not None and version.__class__ is int and current.version >= version >= 0:
            if not _new_incarnation(current, change.new):
                return  # already applied (a re-delivered change); a version that is none is the decode's to report
        new = self._decode(model, change.new, change.revision)
        if new is None:
            return
        self._put(model, current, new)
        if self._subscriptions:
            kind = EventKind.CREATED if current is None else EventKind.UPDATED
            self._emit(ChangeEvent(kind, model, current, new, change.revision, change.synthetic))

    def _put(self, model: type[Model], old: Model | None, new: Model) -> None:
        self._objects[model][new.id.int] = new
        if old is None:
            index(self._indexes[model], new, self._nulls[model])
        else:
            reindex(self._indexes[model], old, new, self._nulls[model])

    def index_nulls(self, model: type[Model], field: str) -> None:
        """Index ``field``'s None values from now on (a find() asks for them), under the lock the apply thread holds."""
        with self._lock:
            nulls = self._nulls[model]
            if field not in nulls:
                index_nulls(self._indexes[model][field], self._objects[model].values(), field)
                nulls.add(field)  # after the bucket is built: a reader that sees the field listed finds it whole

    def _remove(self, model: type[Model], old: Model) -> None:
        unindex(self._indexes[model], old)
        del self._objects[model][old.id.int]
        if self._waits.pending:
            self._waits.deleted(model, old.id)

    def _emit(self, event: ChangeEvent[Model]) -> None:
        """Deliver ``event`` to the subscribers with the rest of its batch (see :meth:`_after_batch`)."""
        self._emitted.append(event)


def _new_incarnation(current: Any, record: Record) -> bool:
    """Whether ``record`` is the object ``current`` holds deleted and created again at its version (OVSDB).

    A store that keeps no version across a delete (OVSDB, whose version is its row's content) tells a
    re-creation seen merged as an update at the same version whose record carries another
    :attr:`nbdb.spi.Record.written`: the copy held is stale (every write of it is refused).
    """
    if record.written is None or current.version != record.version:
        return False
    # A copy this process wrote carries its commit's token (written_of: its revision's), as a read copy its
    # record's; one that carries none, or only one connection's revision (a Revision left: no record's), tells nothing.
    stamp = written_of(current, current.version)
    return stamp is not None and type(stamp) is not Revision and stamp != record.written


class Cache:
    """A local, indexed replica of some models, following the backend's changes.

    Reads (:meth:`get`, :meth:`find`, :meth:`list`) never touch the network.
    Subscribers (:meth:`subscribe`) and work queues (:meth:`queue`) receive
    each :class:`ChangeEvent` after it is applied, in order per object, off
    the cache's thread (:mod:`nbdb.dispatch`). A corrupt record is reported (see ``corrupt`` and
    ``on_error``), the last good copy of that object is kept, and the cache
    goes on. With ``fields`` the cache keeps partial views
    (:mod:`nbdb.projection`).

    A cache is a handle on a :class:`Replica`: its own, or one it shares
    (:class:`SharedCache`). The handle owns its subscriptions, work queues and
    ``on_error``; the replica, the objects and the thread that keeps them.
    """

    def __init__(
        self,
        backend: Backend,
        models: Sequence[type[Model]],
        topics: Collection[str | None] | None = None,
        on_change: Subscriber | None = None,
        on_error: Callable[[errors.CorruptRecordError], None] | None = None,
        *,
        fields: Mapping[type[Any], Iterable[str]] | Iterable[str] | None = None,
        commit_times: metrics.CommitTimes | None = None,
        streams: Callable[[Sequence[str], Collection[str | None] | None, int], RecordStream] | None = None,
        watermark: Watermark | None = None,
    ) -> None:
        replica = Replica(
            backend, models, topics, fields=fields, commit_times=commit_times, streams=streams, watermark=watermark
        )
        self._attach(replica, replica.close, on_change, on_error, replay=False)
        replica.start()

    def _attach(
        self,
        replica: Replica,
        release: Callable[[], None],
        on_change: Subscriber | None,
        on_error: Callable[[errors.CorruptRecordError], None] | None,
        *,
        replay: bool,
    ) -> None:
        self._replica = replica
        self._release = release
        # The replica's containers (never replaced), read without a hop: reads are the hot path.
        self._objects = replica._objects
        self._indexes = replica._indexes
        self._nulls = replica._nulls
        self._fields = replica._fields
        self._views = replica._views
        self._lock = replica._lock
        self.corrupt = replica.corrupt
        """Records that failed to decode, by (table, id); cleared when a good copy arrives."""
        self._own: list[Subscription] = []
        self._queues: list[CacheQueue] = []
        self._closed = threading.Event()
        self._error_subs: list[Subscription] = []
        if on_error is not None:
            sub = Subscription(on_error, name="on_error")
            with replica._lock:
                replica._error_subs = [*replica._error_subs, sub]  # the apply thread iterates the old list
            self._error_subs.append(sub)
        if on_change is not None:
            self.feed(on_change, None, None, replay)

    # ---------------------------------------------------------------- reads

    @property
    def revision(self) -> int:
        """The revision the cache content reflects."""
        return self._replica._revision

    @property
    def relists(self) -> int:
        """How many times the cache had to re-list because history was gone."""
        return self._replica._relists

    @property
    def closed(self) -> bool:
        """True once this cache was closed (by :meth:`close`, or its Database's close): its reads raise
        BackendUnavailableError, its waits return False, its queues and controllers stopped.

        (A controller's loop had no way to ask: ``cache.closed`` raised AttributeError, as subscriptions,
        queues and controllers each say it.)
        """
        return self._closed.is_set()

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Block until the initial list is loaded and the change stream opened (or failed to); False on timeout.

        A change committed after it returns is on its way to the cache at once (a
        stream opened later could reach it late: etcd serves a watcher that starts
        behind from a sync loop that runs every 100 ms).
        False too once this cache closed before its first list loaded: it never will (a cache closed
        while its server was down was waited for without end).
        """
        seconds = timeout_of(timeout)
        replica = self._replica
        synced = replica._synced
        if synced.is_set():
            return True
        over = self._closed
        with replica._sync_changed:
            replica._sync_changed.wait_for(
                lambda: synced.is_set() or over.is_set() or replica._closed.is_set(), seconds
            )
        return synced.is_set()

    def get(self, model: type[M], id: UUID | str) -> M | None:
        """The cached object, or None. In a projected model's cache, a :class:`~nbdb.projection.PartialView`.

        The object itself, as the cache holds it (it is immutable): no copy, no lock.
        """
        if type(id) is UUID:
            try:
                objects = self._objects.get(model)
            except TypeError:  # an object given for its class (get(port, id)): refused below, not a TypeError
                objects = None
            if objects is not None:
                return objects.get(id.int)  # type: ignore[return-value]
        objects = self._objects[self._followed(model)]
        if type(id) is not UUID:
            try:
                id = UUID(str(id))
            except ValueError:
                raise errors.ValidationError(f"not an object id (UUID): {id!r}") from None
        return objects.get(id.int)  # type: ignore[return-value]

    def list(self, model: type[M]) -> list[M]:
        """Every cached object of ``model``."""
        with self._lock:
            return list(self._objects[self._followed(model)].values())  # type: ignore[arg-type]

    def snapshot(self) -> tuple[_List[Model], int]:
        """Every cached object and the revision they reflect, read in one step."""
        with self._lock:
            return [obj for objs in self._objects.values() for obj in objs.values()], self._replica._revision

    def find(self, model: type[M], **equals: Any) -> _List[M]:
        """Objects whose fields equal the given values (a list field matches if it contains the value).

        Uses the model's declared indexes (and reference fields) when one of
        the fields is indexed; otherwise scans the model's objects. In a
        projected cache only the kept fields can be searched. An indexed
        field's None values are indexed from the first find() of None on it
        (which builds that bucket, under the replica's lock): most objects
        hold None in most optional references, and a cold load does not pay
        for a lookup few callers make.
        """
        # No lock: the apply thread replaces dict entries and grows or shrinks
        # buckets; list() of a dict view is one step under the GIL, so a read
        # sees each bucket as it was at some instant.
        if len(equals) == 1:
            # The common lookup (ports of a switch, the object of a name): straight to its bucket.
            (key,) = equals
            value = equals[key]
            try:
                indexes = self._indexes.get(model)
            except TypeError:  # unhashable (an object given for its class): refused in _scan
                indexes = None
            if indexes is not None:
                buckets = indexes.get(key)
                if buckets is not None and type(value) not in _UNINDEXED:
                    if type(value) not in _SCALARS and isinstance(value, Model | PartialView):
                        value = object_id(model, key, value)
                    elif value is None and key not in self._nulls[model]:
                        self._replica.index_nulls(model, key)
                    try:
                        bucket = buckets.get(value)
                    except TypeError:
                        pass  # unhashable: compared one by one below
                    else:
                        if bucket is not None:
                            return bucket_objects(bucket)
                        if type(value) is not str:
                            if value is not None and type(value) is not UUID:
                                # find(name=5) found nothing, without a word: 5 is no name.
                                check_field_value(model, key, value)
                            return []
                        # A miss on text: a reference's id given as text is looked up as the id (in _scan).
        return self._scan(model, equals)

    def _scan(self, model: type[M], equals: dict[str, Any]) -> _List[M]:
        try:
            fields = self._fields.get(model)
        except TypeError:  # find(port, ...) for find(LogicalSwitchPort, ...): a TypeError from hashing it
            fields = None
        if fields is None:
            self._followed(model)  # says why: no model class, or one this cache does not follow
            raise errors.ValidationError(f"this cache does not follow {getattr(model, '__name__', model)}")
        for key, value in equals.items():
            if key not in fields:
                kept = " (not kept by this cache's projection)" if model in self._views else ""
                raise errors.ValidationError(f"{model.__name__} has no field {key!r}{kept}")
            if isinstance(value, Model | PartialView):  # a projected cache's view of the object too
                equals[key] = object_id(model, key, value)
            elif type(value) is str and (key == "id" or any(ref.field == key for ref in model.nbdb_references)):
                # The id as text (from JSON, a CLI) was compared with the UUIDs stored: never equal, so a
                # port of a switch given by str(switch.id) was silently not found (and find(id=text) too).
                equals[key] = check_uuid(value)
            elif type(value) in _UNINDEXED and any(ref.field == key and not ref.many for ref in model.nbdb_references):
                # A reference holds one id: a collection of them never equals it (it silently found nothing).
                raise errors.ValidationError(
                    f"{model.__name__}.{key} references one object: find by one id or object, not a "
                    f"{type(value).__name__} (one find() per id)"
                )
        objects = self._objects[model]
        indexes = self._indexes[model]
        indexed = next((k for k in equals if k in indexes and type(equals[k]) not in _UNINDEXED), None)
        candidates: Iterable[Any]
        if indexed is None:
            candidates = list(objects.values())
        else:
            if equals[indexed] is None and indexed not in self._nulls[model]:
                self._replica.index_nulls(model, indexed)
            try:
                bucket = indexes[indexed].get(equals[indexed])
            except TypeError:
                bucket = None
                candidates = list(objects.values())
            else:
                if bucket is None:
                    candidates = ()
                else:
                    candidates = bucket_objects(bucket)
        found = [obj for obj in candidates if all(matches(obj, k, v) for k, v in equals.items())]
        if not found:
            for key, value in equals.items():
                if value is not None and type(value) is not UUID:
                    check_field_value(model, key, value)  # find(name=5) found nothing, without a word
        return found

    def _followed(self, model: type[Model]) -> type[Model]:
        return self._replica.followed(model)

    def __len__(self) -> int:
        return len(self._replica)

    # ---------------------------------------------------------------- read-your-writes

    def wait_for(self, target: Model | int | None, timeout: float | None = None) -> bool:
        """Block until the cache reflects a write; False on timeout (or if the cache closes first).

        ``target`` is a stored object (as ``create``/``update`` return it, or
        any copy read back): wait until the cache holds that version of it or
        a later one, or has applied its deletion. Or a revision (of a
        transaction, of ``delete()``, ``obj.nbdb_revision``): wait until the
        cache reflects every change up to it, whatever it touched.

        Revisions are compared only within their sequence. On backends whose
        revisions count per connection (OVSDB), a :class:`~nbdb.revision.Revision`
        obtained through another connection raises UnsupportedError (wait for
        the object instead); an object carrying one is waited for by version.
        An object of a model or topic the cache does not follow raises
        ValidationError: it would never arrive. See :mod:`nbdb.waits`.
        None (a ``delete(..., if_exists=True)`` that found nothing) is
        reflected already: True at once.

        A write result whose revision the cache stands at without it proves the
        store went back in time: the cache lists again (once per wait), and if
        that list still stands at or past the revision without it, the write
        was lost: HistoryGoneError, at once (not False: no timeout passed).
        """
        timeout = timeout_of(timeout)
        if target is None:
            return True
        return self._replica._waits.wait(target, timeout)

    # ---------------------------------------------------------------- subscribers and queues

    def subscribe(
        self,
        callback: Subscriber,
        models: type[Model] | Sequence[type[Model]] | None = None,
        predicate: Predicate | None = None,
        replay: bool = False,
    ) -> Subscription:
        """Call ``callback(event)`` after each change of ``models`` (default: all followed) is applied.

        The callback runs on the replica's delivery thread, never under the
        cache's lock (see :mod:`nbdb.dispatch` for the rules); ``predicate``
        filters events before the callback. With ``replay=True`` it first gets
        a ``created`` event (``synthetic``) for every object already cached,
        atomically with the registration, so it sees every object exactly once
        from then on. ``wait_replayed()`` on the returned subscription tells
        when the replay and the cache's first list were delivered.
        """
        check_flag("replay", replay)
        return self.feed(callback, models, predicate, replay)

    def feed(
        self,
        callback: Callable[[Any], None],
        models: type[Model] | Sequence[type[Model]] | None,
        predicate: Predicate | None,
        replay: bool,
        *,
        name: str = "",
        tick: tuple[float, Callable[[], None]] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> Subscription:
        """:meth:`subscribe` for nbdb's own consumers (a controller's work queue): ``name`` labels the
        subscription, ``tick`` is ``(seconds, call)``, a call made that often on a thread of its own, and
        ``on_close()`` is called once when the subscription closes, however it closes."""
        if self._closed.is_set():
            raise errors.ValidationError("this cache is closed")
        sub = self._replica._subscribe(callback, models, predicate, replay, name=name, tick=tick, on_close=on_close)
        with self._lock:
            self._own = [s for s in self._own if not s.closed] + [sub]
        return sub

    def models_of(self, models: type[Model] | Sequence[type[Model]] | None) -> _List[type[Model]]:
        """``models`` checked against the followed ones (None: all of them)."""
        return self._replica.models_of(models)

    def unsubscribe(self, subscription: Subscription | Subscriber) -> None:
        """Stop a subscription of this cache (or the one of ``callback``); see :meth:`Subscription.close`."""
        if isinstance(subscription, Subscription):
            subscription.close()
            return
        with self._lock:
            found = next((s for s in self._own if s.callback == subscription and not s.closed), None)
        if found is None:
            raise errors.NotFoundError(f"{subscription!r} is not subscribed to this cache")
        found.close()

    def queue(
        self,
        models: type[Model] | Sequence[type[Model]] | None = None,
        predicate: Predicate | None = None,
        resync: float | None = None,
        *,
        name: str = "",
        rate_limiter: RateLimiter[Key] | None = None,
    ) -> CacheQueue:
        """A keyed work queue of ``(Model, id)`` fed by this cache's changes; see :class:`nbdb.controller.CacheQueue`.

        Every cached key is queued first, then every changed key (if
        ``predicate(event)`` lets it through); ``resync`` seconds: re-queue
        every cached key that often.
        """
        from nbdb.controller import CacheQueue

        queue = CacheQueue(self, models, predicate, resync, name=name, rate_limiter=rate_limiter)
        with self._lock:
            self._queues = [q for q in self._queues if not q.closed] + [queue]
        return queue

    # ---------------------------------------------------------------- lifecycle

    def stop_queues(self) -> None:
        """Shut this cache's work queues down at once: no key is handed out from now on (see :meth:`close`).

        :meth:`nbdb.Database.close` calls it before it closes anything: a controller's workers started
        reconciles against the closing Database, each failing with "the Database is closed" and logged (about
        300 per shutdown of a busy controller on Redis).
        """
        with self._lock:
            queues = list(self._queues)
        for queue in queues:
            queue.shutdown()  # its workers could not read a key's object any more: nothing is handed out

    def close(self) -> None:
        """End this cache's subscriptions, queues and ``on_error``; its replica closes with its last handle."""
        if self._closed.is_set():
            return
        self._closed.set()
        # Reads of a closed handle raise (see _Closed), at no cost to the open ones' reads.
        self._objects = self._indexes = self._fields = _CLOSED
        replica = self._replica
        with self._lock:
            subs, self._own = list(self._own), []
            mine = set(self._error_subs)
            replica._error_subs = [s for s in replica._error_subs if s not in mine]
        replica.sync_changed()
        self.stop_queues()
        wait = _close_wait()
        for sub in subs:
            sub.close(wait)
        for errors_sub in self._error_subs:
            errors_sub.close(wait)
        self._release()

    def __enter__(self) -> Cache:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class SharedCache(Cache):
    """One handle on a replica that several caches of a Database share.

    A process that opens many caches of the same models and topics (one per
    controller, as client-go's shared informers serve them) keeps one replica:
    one apply per change, one set of indexes, one copy of each object, however
    many handles read it. Each handle has its own subscriptions, work queues
    and ``on_error``; closing it ends those and calls ``release`` (the
    Database closes the replica with its last handle). Reads, ``wait_synced``
    and ``wait_for`` are the replica's. ``on_change`` first receives a
    ``created`` event (``synthetic``) for every object the replica holds
    already, as a cache's first list delivers them.
    """

    def __init__(
        self,
        replica: Replica,
        release: Callable[[], None],
        on_change: Subscriber | None = None,
        on_error: Callable[[errors.CorruptRecordError], None] | None = None,
    ) -> None:
        self._attach(replica, release, on_change, on_error, replay=True)
