"""The local cache: a replica of some models (and topics), kept current by a watch.

It lists at a revision, then watches from that revision, so no change falls
between the two. When the backend cannot resume (history compacted or trimmed,
server restarted), it re-lists and emits events for exactly the difference —
synthetic ``updated``/``created`` events and tombstones (``deleted``) for
objects that vanished — so consumers never see a reload storm.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar
from uuid import UUID

from nbdb import errors
from nbdb.codec import bulk, decode
from nbdb.events import ChangeEvent, EventKind
from nbdb.models.base import Model
from nbdb.spi import Backend, Record, RecordChange, RecordStream

__all__ = ["Cache", "Subscriber"]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Model)
Subscriber = Callable[[ChangeEvent[Model]], None]
_List = list  # Cache.list() shadows the builtin inside the class body

_POLL_SECONDS = 0.5
_MAX_BACKOFF = 5.0


class Cache:
    """A local, indexed replica of some models, following the backend's changes.

    Reads (:meth:`get`, :meth:`find`, :meth:`list`) never touch the network.
    Subscribers receive each :class:`ChangeEvent` after it is applied, in
    order per object, from the cache's own thread. A subscriber that raises is
    logged and does not stop the cache; a corrupt record is reported (see
    ``corrupt``), the last good copy of that object is kept, and the cache goes on.
    """

    def __init__(
        self,
        backend: Backend,
        models: Sequence[type[Model]],
        topics: Collection[str | None] | None = None,
        on_change: Subscriber | None = None,
        on_error: Callable[[errors.CorruptRecordError], None] | None = None,
    ) -> None:
        self._backend = backend
        self._models = {m.nbdb_table: m for m in models}
        self._tables = sorted(self._models)
        self._topics = None if topics is None else frozenset(topics)
        self._objects: dict[type[Model], dict[UUID, Model]] = {m: {} for m in models}
        self._indexes: dict[type[Model], dict[str, dict[Any, set[UUID]]]] = {
            m: {f: {} for f in m.nbdb_index_fields} for m in models
        }
        self._fields = {m: frozenset(m.model_fields) for m in models}
        self._lock = threading.RLock()
        self._subscribers: list[Subscriber] = [on_change] if on_change else []
        self._on_error = on_error
        self.corrupt: dict[tuple[str, UUID], errors.CorruptRecordError] = {}
        """Records that failed to decode, by (table, id); cleared when a good copy arrives."""
        self.relists = 0
        """How many times the cache had to re-list because history was gone."""
        self._revision = 0
        self._synced = threading.Event()
        self._closed = threading.Event()
        self._stream: RecordStream | None = None
        self._thread = threading.Thread(target=self._run, name="nbdb-cache", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- reads

    @property
    def revision(self) -> int:
        """The revision the cache content reflects."""
        return self._revision

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Block until the initial list is loaded; False on timeout."""
        return self._synced.wait(timeout)

    def get(self, model: type[M], id: UUID | str) -> M | None:
        """The cached object, or None."""
        if not isinstance(id, UUID):
            try:
                id = UUID(str(id))
            except ValueError:
                raise errors.ValidationError(f"not an object id (UUID): {id!r}") from None
        try:
            return self._objects[model].get(id)  # type: ignore[return-value]
        except KeyError:
            raise errors.ValidationError(f"this cache does not follow {getattr(model, '__name__', model)}") from None

    def list(self, model: type[M]) -> list[M]:
        """Every cached object of ``model``."""
        with self._lock:
            return list(self._objects[self._followed(model)].values())  # type: ignore[arg-type]

    def find(self, model: type[M], **equals: Any) -> _List[M]:
        """Objects whose fields equal the given values (a list field matches if it contains the value).

        Uses the model's declared indexes (and reference fields) when one of
        the fields is indexed; otherwise scans the model's objects.
        """
        fields = self._fields.get(model)
        if fields is None:
            raise errors.ValidationError(f"this cache does not follow {getattr(model, '__name__', model)}")
        for key, value in equals.items():
            if key not in fields:
                raise errors.ValidationError(f"{model.__name__} has no field {key!r}")
            if isinstance(value, Model):
                equals[key] = value.id
        objects = self._objects[self._followed(model)]
        indexes = self._indexes[model]
        with self._lock:
            indexed = next((k for k in equals if k in indexes), None)
            if indexed is None:
                candidates: Iterable[Model] = list(objects.values())
                rest = equals
            else:
                ids = indexes[indexed].get(equals[indexed], ())
                candidates = [objects[i] for i in ids]
                if len(equals) == 1:
                    return candidates  # type: ignore[return-value]
                rest = {k: v for k, v in equals.items() if k != indexed}
        return [obj for obj in candidates if all(_matches(obj, k, v) for k, v in rest.items())]  # type: ignore[misc]

    def _followed(self, model: type[Model]) -> type[Model]:
        if model not in self._objects:
            raise errors.ValidationError(f"this cache does not follow {getattr(model, '__name__', model)}")
        return model

    def __len__(self) -> int:
        return sum(len(objs) for objs in self._objects.values())

    # ---------------------------------------------------------------- subscribers

    def subscribe(self, callback: Subscriber, replay: bool = False) -> None:
        """Call ``callback(event)`` after each change is applied.

        With ``replay=True`` the callback first gets a ``created`` event for
        every object already cached, atomically with the registration, so it
        sees every object exactly once from then on.
        """
        with self._lock:
            if replay:
                for model, objs in self._objects.items():
                    for obj in objs.values():
                        self._call(callback, ChangeEvent(EventKind.CREATED, model, None, obj, self._revision, True))
            self._subscribers.append(callback)

    def unsubscribe(self, callback: Subscriber) -> None:
        """Stop calling ``callback``."""
        with self._lock:
            self._subscribers.remove(callback)

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Stop following changes and join the cache's thread."""
        self._closed.set()
        stream = self._stream
        if stream is not None:
            stream.close()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def __enter__(self) -> Cache:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---------------------------------------------------------------- the thread

    def _run(self) -> None:
        need_list = True
        backoff = 0.05
        while not self._closed.is_set():
            try:
                if need_list:
                    self._relist()
                    need_list = False
                self._stream = self._backend.watch(self._tables, self._topics, self._revision)
                if self._closed.is_set():
                    break
                while not self._closed.is_set():
                    changes = self._stream.poll(_POLL_SECONDS)
                    with self._lock:
                        for change in changes:
                            self._apply(change)
                        self._revision = max(self._revision, self._stream.revision)
                    backoff = 0.05
            except errors.HistoryGoneError as exc:
                log.info("cache: history gone (%s); re-listing", exc)
                need_list = True
                self.relists += 1
            except errors.NbdbError as exc:
                log.warning("cache: backend error, retrying in %.2fs: %s", backoff, exc)
                self._closed.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
            except Exception:
                # A bug must not silently freeze the replica: log it, and
                # rebuild from a fresh list so the cache converges again.
                log.exception("cache: unexpected error; re-listing")
                need_list = True
                self._closed.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
            finally:
                if self._stream is not None:
                    self._stream.close()
                    self._stream = None

    def _relist(self) -> None:
        snapshot = self._backend.scan(self._tables, self._topics)
        fresh: dict[type[Model], dict[UUID, Record]] = {m: {} for m in self._objects}
        for record in snapshot.records:
            model = self._models.get(record.table)
            if model is not None:
                fresh[model][record.id] = record
        with self._lock, bulk():
            for model, records in fresh.items():
                current = self._objects[model]
                for id in [i for i in current if i not in records]:
                    gone = current[id]
                    self._remove(model, gone)
                    self.corrupt.pop((model.nbdb_table, id), None)
                    self._emit(ChangeEvent(EventKind.DELETED, model, gone, None, snapshot.revision, True))
                for id, record in records.items():
                    old = current.get(id)
                    if old is not None and old.version == record.version:
                        continue
                    new = self._decode(model, record, share=False)
                    if new is None:
                        continue
                    self._put(model, old, new)
                    if self._subscribers:
                        kind = EventKind.CREATED if old is None else EventKind.UPDATED
                        self._emit(ChangeEvent(kind, model, old, new, snapshot.revision, True))
            self._revision = snapshot.revision
        self._synced.set()

    def _decode(self, model: type[Model], record: Record, share: bool = True) -> Model | None:
        try:
            obj = decode(model, record, share=share)
        except errors.CorruptRecordError as exc:
            self.corrupt[(model.nbdb_table, record.id)] = exc
            log.warning("cache: keeping the last good copy of %s %s: %s", model.nbdb_table, record.id, exc)
            if self._on_error is not None:
                try:
                    self._on_error(exc)
                except Exception:
                    log.exception("cache: on_error callback failed")
            return None
        self.corrupt.pop((model.nbdb_table, record.id), None)
        return obj

    def _apply(self, change: RecordChange) -> None:
        model = self._models.get(change.table)
        if model is None:
            return
        current = self._objects[model].get(change.id)
        if change.new is None:
            self.corrupt.pop((change.table, change.id), None)
            if current is None:
                return
            self._remove(model, current)
            self._emit(ChangeEvent(EventKind.DELETED, model, current, None, change.revision, change.synthetic))
            return
        if current is not None and current.version >= change.new.version:
            return  # already applied (a re-delivered change)
        new = self._decode(model, change.new)
        if new is None:
            return
        self._put(model, current, new)
        kind = EventKind.CREATED if current is None else EventKind.UPDATED
        self._emit(ChangeEvent(kind, model, current, new, change.revision, change.synthetic))

    def _put(self, model: type[Model], old: Model | None, new: Model) -> None:
        if old is not None:
            self._unindex(model, old)
        self._objects[model][new.id] = new
        for field, index in self._indexes[model].items():
            for value in new.index_values(field):
                index.setdefault(value, set()).add(new.id)

    def _remove(self, model: type[Model], old: Model) -> None:
        self._unindex(model, old)
        del self._objects[model][old.id]

    def _unindex(self, model: type[Model], old: Model) -> None:
        for field, index in self._indexes[model].items():
            for value in old.index_values(field):
                ids = index.get(value)
                if ids is not None:
                    ids.discard(old.id)
                    if not ids:
                        del index[value]

    def _emit(self, event: ChangeEvent[Model]) -> None:
        for callback in self._subscribers:
            self._call(callback, event)

    @staticmethod
    def _call(callback: Subscriber, event: ChangeEvent[Model]) -> None:
        try:
            callback(event)
        except Exception:
            log.exception("cache: subscriber %r failed on %s %s", callback, event.kind, event.id)


def _matches(obj: Model, field: str, value: Any) -> bool:
    attr = getattr(obj, field)
    if isinstance(attr, list) and not isinstance(value, list):
        return value in attr
    return bool(attr == value)
