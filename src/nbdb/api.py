"""The one applicative API: :class:`Database` and its :class:`Transaction`.

The Database validates, works out references, encodes, and calls the backend's
small SPI (:mod:`nbdb.spi`). It holds no per-backend logic.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, TypeVar, overload
from uuid import UUID

from nbdb import errors
from nbdb.cache import Cache, Subscriber
from nbdb.capabilities import Atomicity, Capabilities
from nbdb.codec import bulk, decode, encode
from nbdb.models.base import Model, all_models, model_for_table
from nbdb.spi import ANY_VERSION, Backend, Delete, LockHandle, Put, WriteOp
from nbdb.watch import ErrorHandler, Watch

__all__ = ["Database", "ListResult", "Transaction"]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Model)
_List = list  # Database.list() shadows the builtin inside the class body


class ListResult(list[M]):
    """The objects of a :meth:`Database.list`, with the ``revision`` they reflect."""

    revision: int

    def __init__(self, items: Iterator[M] | list[M], revision: int) -> None:
        super().__init__(items)
        self.revision = revision


def _as_uuid(value: UUID | str) -> UUID:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise errors.ValidationError(f"not an object id (UUID): {value!r}") from None


def _check_model(obj: Any) -> Model:
    if not isinstance(obj, Model):
        raise errors.ValidationError(f"expected an nbdb Model instance, got {type(obj).__name__}")
    return obj


def _check_model_class(model: Any) -> type[Model]:
    if not (isinstance(model, type) and issubclass(model, Model)) or model is Model:
        raise errors.ValidationError(f"expected a Model subclass, got {model!r}")
    return model


def _stored(obj: M, version: int) -> M:
    return obj.stored_copy(version, obj.ref_keys())


def _put(obj: M, expect_version: int) -> tuple[Put, M]:
    """The write of ``obj`` against ``expect_version``, and the stored copy it will leave (version + 1)."""
    refs = obj.ref_keys()
    stored = obj.stored_copy(expect_version + 1, refs)
    old_refs = obj._stored_refs if expect_version else frozenset()
    put = Put(obj.nbdb_table, obj.id, obj.topic, encode(obj), expect_version, refs, old_refs, stored)
    return put, stored


def _as_stored(obj: M, planned: M, version: int) -> M:
    """The stored copy at the version the backend reports (the planned one, unless it differs)."""
    return planned if planned.version == version else _stored(obj, version)


class Transaction:
    """Writes collected by ``with db.transaction() as txn:`` and committed on exit.

    All or nothing where the backend's capabilities say ``atomic``. After the
    block, ``results`` holds the stored copy of each created or updated object
    (None for deletes), in call order, and ``revision`` the commit's revision.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._ops: list[WriteOp] = []
        self._objects: list[tuple[Model, Model] | None] = []
        self.results: list[Model | None] = []
        self.revision: int | None = None

    def create(self, obj: M) -> M:
        """Queue the creation of ``obj``; returns it as it will be stored (version 1)."""
        obj = _check_model(obj)  # type: ignore[assignment]
        self._db._check_new(obj)
        put, stored = _put(obj, 0)
        self._ops.append(put)
        self._objects.append((obj, stored))
        return stored

    def update(self, obj: M) -> M:
        """Queue a compare-and-swap update of ``obj`` (against ``obj.version``)."""
        obj = _check_model(obj)  # type: ignore[assignment]
        self._db._check_stored(obj)
        put, stored = _put(obj, obj.version)
        self._ops.append(put)
        self._objects.append((obj, stored))
        return stored

    def delete(self, obj_or_model: Model | type[Model], id: UUID | str | None = None) -> None:
        """Queue the deletion of an object (at its version) or of ``Model, id`` (any version)."""
        self._ops.append(self._db._delete_op(obj_or_model, id))
        self._objects.append(None)

    def commit(self) -> None:
        """Commit the queued writes now (the ``with`` block does it on exit)."""
        if not self._ops:
            self.revision = self._db._backend.current_revision()
            return
        result = self._db._backend.commit(self._ops)
        self.revision = result.revision
        self.results = [
            None if pair is None else _as_stored(pair[0], pair[1], version)
            for pair, version in zip(self._objects, result.versions, strict=True)
        ]
        self._ops = []

    def __enter__(self) -> Transaction:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.commit()


class Database:
    """A connection to one northbound database, through one backend.

    Get one with :func:`nbdb.connect`. It owns the backend's connections and
    threads, and every cache and watch it made: :meth:`close` (or leaving a
    ``with`` block) releases them.
    """

    def __init__(self, backend: Backend, url: str = "") -> None:
        self._backend = backend
        self._url = url
        # Weak: a cache or watch the caller closed and dropped must not be kept alive here.
        self._caches: weakref.WeakSet[Cache] = weakref.WeakSet()
        self._watches: weakref.WeakSet[Watch] = weakref.WeakSet()
        self._closed = False

    def __repr__(self) -> str:
        return f"<nbdb.Database {type(self._backend).__name__}>"

    @property
    def backend(self) -> Backend:
        """The backend object (for tools and tests; applications need not touch it)."""
        return self._backend

    @property
    def capabilities(self) -> Capabilities:
        """The backend's static declaration of what it guarantees."""
        return self._backend.capabilities

    # ---------------------------------------------------------------- checks

    def _check_new(self, obj: Model) -> None:
        if obj.version != 0:
            raise errors.ValidationError(
                f"{obj.nbdb_table} {obj.id} has version {obj.version}: it was stored already; use update()"
            )

    def _check_stored(self, obj: Model) -> None:
        if obj.version == 0:
            raise errors.ValidationError(f"{obj.nbdb_table} {obj.id} has version 0: create() it first")

    def _delete_op(self, obj_or_model: Model | type[Model], id: UUID | str | None) -> Delete:
        if isinstance(obj_or_model, Model):
            obj = obj_or_model
            self._check_stored(obj)
            return Delete(obj.nbdb_table, obj.id, obj.topic, obj.version, old_refs=obj._stored_refs)
        model = _check_model_class(obj_or_model)
        if id is None:
            raise errors.ValidationError("delete(Model, id) needs an id")
        uid = _as_uuid(id)
        current = self._backend.read(model.nbdb_table, uid)
        if current is None:
            raise errors.NotFoundError(f"{model.nbdb_table} {uid} does not exist")
        return Delete(model.nbdb_table, uid, current.topic, ANY_VERSION)

    # ---------------------------------------------------------------- CRUD

    def create(self, obj: M) -> M:
        """Store a new object; returns the stored copy (version 1).

        Raises ConflictError if its id exists, ReferenceError if a reference
        points to a missing object.
        """
        obj = _check_model(obj)  # type: ignore[assignment]
        self._check_new(obj)
        put, stored = _put(obj, 0)
        result = self._backend.commit([put])
        return _as_stored(obj, stored, result.versions[0])

    def get(self, model: type[M], id: UUID | str) -> M:
        """The stored object; NotFoundError if there is none."""
        model = _check_model_class(model)  # type: ignore[assignment]
        uid = _as_uuid(id)
        record = self._backend.read(model.nbdb_table, uid)
        if record is None:
            raise errors.NotFoundError(f"{model.nbdb_table} {uid} does not exist")
        return decode(model, record)

    def update(self, obj: M) -> M:
        """Compare-and-swap: store ``obj`` if the stored copy is still at ``obj.version``.

        Returns the new stored copy; ConflictError if somebody wrote in between.
        """
        obj = _check_model(obj)  # type: ignore[assignment]
        self._check_stored(obj)
        put, stored = _put(obj, obj.version)
        result = self._backend.commit([put])
        return _as_stored(obj, stored, result.versions[0])

    @overload
    def delete(self, obj: Model, *, cascade: bool = ...) -> None: ...
    @overload
    def delete(self, obj: type[Model], id: UUID | str, *, cascade: bool = ...) -> None: ...

    def delete(self, obj: Model | type[Model], id: UUID | str | None = None, *, cascade: bool = False) -> None:
        """Delete an object (compare-and-swap on its version) or ``Model, id`` (whatever version).

        ReferenceError if other objects still reference it, unless ``cascade``:
        then, in one transaction, dependents whose reference is required are
        deleted too (recursively), and optional or list references to it are
        cleared.
        """
        op = self._delete_op(obj, id)
        if not cascade:
            self._backend.commit([op])
            return
        self._backend.commit(self._cascade(op))

    def _cascade(self, root: Delete) -> list[WriteOp]:
        deletes: dict[tuple[str, UUID], WriteOp] = {(root.table, root.id): root}
        updates: dict[tuple[str, UUID], Model] = {}
        queue = [(root.table, root.id)]
        while queue:
            target = queue.pop()
            for source in self._backend.referrers(*target):
                if source in deletes:
                    continue
                obj = updates.get(source)
                if obj is None:
                    obj = self.get(model_for_table(source[0]), source[1])
                changes: dict[str, Any] = {}
                doomed = False
                for spec in obj.nbdb_references:
                    if spec.target != target[0] or target[1] not in spec.ids(obj):
                        continue
                    if spec.many:
                        changes[spec.field] = [i for i in getattr(obj, spec.field) if i != target[1]]
                    elif spec.optional:
                        changes[spec.field] = None
                    else:
                        doomed = True
                if not doomed and changes:
                    try:
                        updates[source] = obj.replace(**changes)
                    except errors.ValidationError:
                        # Clearing the reference breaks the model's own rules (an
                        # ACL must belong to a switch or a port group): it goes too.
                        doomed = True
                if doomed:
                    updates.pop(source, None)
                    deletes[source] = Delete(source[0], source[1], obj.topic, obj.version, old_refs=obj._stored_refs)
                    queue.append(source)
        ops: list[WriteOp] = list(deletes.values())
        ops += [_put(obj, obj.version)[0] for obj in updates.values()]
        return ops

    def list(self, model: type[M], topic: str | None = None, *, skip_corrupt: bool = False) -> ListResult[M]:
        """Every object of ``model`` (in ``topic`` if given), with the revision it reflects.

        A corrupt record raises CorruptRecordError unless ``skip_corrupt``.
        """
        model = _check_model_class(model)  # type: ignore[assignment]
        snapshot = self._backend.scan([model.nbdb_table], None if topic is None else [topic])
        out: _List[M] = []
        with bulk():
            for record in snapshot.records:
                try:
                    out.append(decode(model, record, share=False))
                except errors.CorruptRecordError:
                    if not skip_corrupt:
                        raise
                    log.warning("list: skipping corrupt %s %s", record.table, record.id)
        return ListResult(out, snapshot.revision)

    def transaction(self) -> Transaction:
        """Collect writes and commit them together when the ``with`` block ends."""
        if self.capabilities.transactions is Atomicity.NONE:
            raise errors.UnsupportedError(f"{type(self._backend).__name__} has no multi-object transactions")
        return Transaction(self)

    # ---------------------------------------------------------------- change streams

    def _models(self, models: type[Model] | Sequence[type[Model]] | None) -> _List[type[Model]]:
        if models is None:
            return list(all_models())
        if isinstance(models, type):
            return [_check_model_class(models)]
        return [_check_model_class(m) for m in models]

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
        ``since`` is older than the backend's history.
        """
        models = self._models(model)
        start = self._backend.current_revision() if since is None else since
        stream = self._backend.watch([m.nbdb_table for m in models], topics, start)
        watch = Watch(stream, {m.nbdb_table: m for m in models}, on_error)
        self._watches.add(watch)
        return watch

    def cache(
        self,
        models: type[Model] | Sequence[type[Model]] | None = None,
        topics: Collection[str | None] | None = None,
        on_change: Subscriber | None = None,
        on_error: Callable[[errors.CorruptRecordError], None] | None = None,
    ) -> Cache:
        """A local replica of ``models`` (in ``topics``), loading in the background.

        Call ``wait_synced()`` before relying on its content. ``on_change``
        receives every event from the first list on.
        """
        cache = Cache(self._backend, self._models(models), topics, on_change, on_error)
        self._caches.add(cache)
        return cache

    # ---------------------------------------------------------------- coordination

    def lock(self, name: str, ttl: float = 10.0, timeout: float | None = None) -> AbstractContextManager[LockHandle]:
        """Mutual exclusion among the clients that share this database.

        The lock lives on a lease of ``ttl`` seconds that is renewed while the
        block runs; ``handle.lost`` turns True if renewal fails. ``timeout``:
        give up with LockTimeoutError after that many seconds (None: wait).
        """
        if not name or "/" in name:
            raise errors.ValidationError(f"lock name must be non-empty and have no '/': {name!r}")
        return self._backend.lock(name, ttl, timeout)

    def allocate_id(self, name: str) -> int:
        """The next value (1, 2, 3, ...) of the named counter, unique among all clients."""
        if not name or "/" in name:
            raise errors.ValidationError(f"counter name must be non-empty and have no '/': {name!r}")
        return self._backend.allocate_id(name)

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Stop every cache and watch this Database made, and release the backend."""
        if self._closed:
            return
        self._closed = True
        for cache in list(self._caches):
            cache.close()
        for watch in list(self._watches):
            watch.close()
        self._backend.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
