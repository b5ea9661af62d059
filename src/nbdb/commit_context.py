"""What a Database's writes need, built once per Database and shared by its transactions.

:class:`CommitContext` is the seam between the data API's two writers, the
:class:`~nbdb.api.Database` (one write a call) and a
:class:`~nbdb.transaction.Transaction` (writes collected, then committed
together): the checks of a caller's arguments, the one path to the SPI's
commit (fence, native mutations, metrics), and how a commit's revision is
stamped on its stored copies. Both call it; neither reaches into the other.
It is internal: an application never sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar, cast
from uuid import UUID

import pydantic
from pydantic import TypeAdapter

from nbdb import errors, metrics
from nbdb.capabilities import Expiry
from nbdb.models import enums
from nbdb.models.base import Model
from nbdb.models.types import Topic
from nbdb.options import check_unicode
from nbdb.revision import GLOBAL_SCOPE, Revision, Watermark
from nbdb.spi import ANY_VERSION, Backend, CommitResult, Delete, LockHandle, Mutate, Put, WriteOp
from nbdb.timeouts import check_seconds
from nbdb.writes import check_uuid, delete_of, stored

__all__ = [
    "CommitContext",
    "check_model",
    "check_model_class",
    "check_name",
    "check_since",
    "check_topic",
    "check_topics",
]

M = TypeVar("M", bound=Model)


def check_model(obj: Any) -> Model:
    """``obj`` if it is a model instance; ValidationError otherwise."""
    if not isinstance(obj, Model):
        raise errors.ValidationError(f"expected an nbdb Model instance, got {type(obj).__name__}")
    return obj


def check_model_class(model: Any) -> type[Model]:
    """``model`` if it is a concrete model class; ValidationError otherwise."""
    if not (isinstance(model, type) and issubclass(model, Model)) or model is Model:
        if isinstance(model, Model):  # pydantic iterates an object as its (field, value) pairs: name it whole
            name = type(model).__name__
            raise errors.ValidationError(f"expected a Model subclass, got a {name} object: pass the class, {name}")
        raise errors.ValidationError(f"expected a Model subclass, got {model!r}")
    return model


def check_name(what: str, name: Any) -> str:
    """``name`` if it names a lock or a counter (non-empty text without '/'); ValidationError otherwise."""
    if not isinstance(name, str) or not name or "/" in name:
        raise errors.ValidationError(f"{what} name must be non-empty text with no '/': {name!r}")
    return check_unicode(f"{what} name", name)


def check_topics(topics: Any) -> Collection[str | None] | None:
    """``topics`` if it is None or a collection of topics (text, or None for objects without one).

    A string alone is refused: iterated, it would follow the topics of its
    letters and silently miss every change of the topic it names.
    """
    if topics is None:
        return None
    if isinstance(topics, str | bytes) or not isinstance(topics, Collection):
        raise errors.ValidationError(f"topics must be a collection of topics (e.g. [{topics!r}]), not {topics!r}")
    for topic in topics:
        if topic is not None:
            check_topic(topic)
    return cast("Collection[str | None]", topics)


_TOPIC: TypeAdapter[str] = TypeAdapter(Topic)


def check_topic(topic: Any) -> str:
    """``topic`` if an object can have it (see :data:`nbdb.models.types.Topic`); ValidationError otherwise.

    Key-value stores keep the objects without a topic under a reserved key part ("~"): a listing, a
    watch or a cache of topic "~" followed those objects there (and nothing on memory://); any other
    topic no object can have was a typo that silently found nothing.
    """
    if not isinstance(topic, str):
        raise errors.ValidationError(f"a topic is text (or None for objects without one), not {topic!r}")
    try:
        return _TOPIC.validate_python(topic)
    except pydantic.ValidationError:
        raise errors.ValidationError(
            f"no object can have topic {topic!r} (a topic is 1 to 128 letters, digits and ._:@-, "
            "starting with a letter or digit)"
        ) from None


def check_since(since: Any, what: str = "since=") -> int | None:
    """``since`` if it is None or a revision (a whole number >= 0); ValidationError (naming ``what``) otherwise."""
    if since is None:
        return None
    if isinstance(since, bool) or not isinstance(since, int) or since < 0:
        raise errors.ValidationError(f"{what} takes a revision (a whole number >= 0) or None, not {since!r}")
    # A plain int: a write's Revision (an int subclass) reached redis-py, which sends an int as its repr,
    # "Revision(7)": the log script read no number and every watch from a write's revision failed there.
    return int(since)


def check_page_size(what: str, size: Any) -> int:
    """``size`` if it is a whole number of objects >= 1 (a page's size); ValidationError otherwise."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise errors.ValidationError(f"{what} must be a positive whole number, not {size!r}")
    return size


def check_flag(what: str, value: Any) -> bool:
    """``value`` if it is True or False; ValidationError otherwise.

    A flag read from configuration as text ("false", "no") is true: ``cascade="false"`` deleted the
    dependents it was meant to keep, ``if_exists="no"`` hid a missing object.
    """
    if value is not True and value is not False:
        raise errors.ValidationError(f"{what}= takes True or False, not {value!r}")
    return value


class CommitContext:
    """The write side of one Database: argument checks, the commit seam and revision stamps.

    ``deferred``: the backend keeps values (``keeps_values``), so puts carry
    no bytes: the store keeps the stored copy and encodes it only if its
    bytes are read; and deletes carry no references or unique values: such
    a store keeps its own. ``commit_times``: start times of recent commits, for the
    caches' commit-to-applied lag (None without metrics).
    """

    __slots__ = (
        "_metrics",
        "_scope",
        "backend",
        "closed",
        "commit_times",
        "deferred",
        "delete_order",
        "store_token",
        "watermark",
    )

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._scope = backend.revision_scope
        self.store_token = backend.store_token
        """The store's token (see :attr:`nbdb.spi.Backend.store_token`), kept by the copies a write returns."""
        self.deferred: bool = backend.keeps_values
        handles = metrics.active()
        self._metrics = None if handles is None else handles.backend(backend)
        self.commit_times: metrics.CommitTimes | None = None if handles is None else metrics.CommitTimes()
        self.closed = False
        """Set by Database.close(): a commit after it (a transaction left open, say) is refused."""
        self.watermark: Watermark | None = Watermark() if self._scope is GLOBAL_SCOPE else None
        """The highest revision seen of the store, to tell when it went back in time (one global sequence only:
        per-connection revisions say nothing of the store)."""
        self.delete_order: dict[str, tuple[bool, bool]] = {}
        """Per table whose deletes plan (``nbdb.cascade.plain_delete_plans``): whether the last delete of one of
        its rows through this Database (plain, or queued in a transaction) that committed took something along
        or dropped a weak reference (absent: not yet known). It orders a delete's work only: walk first, or the
        delete alone first. Written without a lock: one entry per table, any thread's last word as good as
        another's."""

    # ---------------------------------------------------------------- commits

    def revision(self, revision: int) -> Revision:
        """``revision`` of this backend's sequence, as the caller sees it."""
        return Revision(revision, self._scope)

    def stamp(self, revision: int) -> int:
        """How a stored copy keeps the revision of its commit (see :meth:`nbdb.models.base.Model.committed_at`).

        A plain int on backends of one global sequence (no Revision to build
        and convert back on every write), the scoped Revision otherwise.
        """
        if self._scope is GLOBAL_SCOPE:
            return revision
        if type(revision) is Revision and revision.scope is self._scope:
            return revision  # the backend's own, which may carry more (OVSDB: its commit's token)
        return Revision(revision, self._scope)

    def mark(self, copies: Sequence[Model]) -> None:
        """Record on stamped write results the store that wrote them (only when the backend names it)."""
        token = self.store_token
        if token is not None:
            for copy in copies:
                copy.__pydantic_private__["_store"] = token  # type: ignore[index]  # stamped: a dict of its own

    def read_back(self, copy: M, version: int, revision: int) -> M:
        """A copy read back after a native mutation committed ``version`` at ``revision``, stamped as a write's result.

        The store applied the mutation itself (``handles_mutations``): what it
        made is read back. When that is the version the commit made, it carries
        the commit's revision as ``create``/``update`` results do (it carried
        none, so ``wait_for(result.nbdb_revision)`` returned at once); a later
        version (another writer came in between) is returned as read.
        """
        if copy.version != version:
            return copy
        # int(): a copy the store mutated keeps the token of the commit that put its row, not this one's
        stamped = stored(copy, version, self.stamp(int(revision)))
        self.mark((stamped,))
        return stamped

    def commit(self, ops: Sequence[WriteOp | Mutate], fence: LockHandle | None = None) -> tuple[CommitResult, Revision]:
        """Commit ``ops`` (fenced on a held lock if ``fence``); the result and its revision."""
        result = self.commit_ops(ops, fence)
        return result, Revision(result.revision, self._scope)

    def commit_ops(self, ops: Sequence[WriteOp | Mutate], fence: LockHandle | None = None) -> CommitResult:
        """Commit ``ops`` (fenced on a held lock if ``fence``).

        Mutate ops (only for a backend that ``handles_mutations``) go to its
        ``commit_mutations``. A fenced commit the store refuses with LockLostError marks ``fence`` lost.
        """
        if self.closed:
            raise errors.BackendUnavailableError("the Database is closed: nothing was written")
        backend = self.backend
        if fence is not None:
            self.check_fence(fence)
        if enums.MADE and not backend.maps_columns:
            refuse_newer_values(ops)

        # Only a backend that handles mutations is ever given Mutate ops (see Database.mutate()).
        commit: Callable[[Sequence[Any]], CommitResult]
        if backend.handles_mutations and any(isinstance(op, Mutate) for op in ops):
            commit = lambda ops: backend.commit_mutations(ops, fence)  # noqa: E731
        elif fence is None:
            commit = cast("Callable[[Sequence[Any]], CommitResult]", backend.commit)  # no closure per commit
        else:
            commit = lambda ops: backend.commit_fenced(ops, fence)  # noqa: E731

        watermark = self.watermark
        before = 0 if watermark is None else watermark.seen
        try:
            if self._metrics is None:
                result = commit(ops)
            else:
                result = self._metrics.commit(commit, ops, self.commit_times)
        except errors.LockLostError:
            # The store refused the write because this holder no longer holds the lock: the handle says so
            # at once, on every backend (it said so only at its next renewal, up to a third of its ttl
            # later: a controller that read ``lost`` after a refused write went on as the leader).
            # Only a lock this store holds: one taken through another Database (another namespace or store)
            # is refused here without being lost there, and marked lost it was never given back.
            if fence is not None and fence.issuer is backend:
                fence.mark_lost()
            raise
        if watermark is not None:
            watermark.committed(before, result.revision)
        return result

    # ---------------------------------------------------------------- checks

    def check_fence(self, fence: LockHandle) -> None:
        """ValidationError unless ``fence`` is a lock handle; LockLostError unless this holder still holds it.

        Every fenced write checks it before its commit, and so does one that finds nothing to write (a
        ``mutate`` that changes nothing, a ``delete(..., if_exists=True)`` of an object already gone): it
        answered as a write made under the lock while the lock was released or lost, so a controller that
        was no longer the leader took the answer for a leader's. Such a write asks the store nothing: a lease
        taken over before the handle could know is found by the next write that commits.
        """
        if not isinstance(fence, LockHandle):
            raise errors.ValidationError(f"fence= takes the handle of a held lock, not {fence!r}")
        self.need("fencing", self.backend.capabilities.fencing, "fence writes on a lock")
        if fence.lost or fence.giving_back:  # being given back: the write would race the release
            how = (
                "released (its with block ended)"
                if fence.released
                else "lost"
                if fence.lost
                else "being given back (its with block ends, or its Database closed)"
            )
            raise errors.LockLostError(f"lock {fence.name!r} was {how}: nothing was written")

    def need(self, capability: str, present: bool, what: str) -> None:
        """UnsupportedError, naming the capability, unless ``present``."""
        if not present:
            raise errors.UnsupportedError(f"{type(self.backend).__name__} does not {what} (capabilities.{capability})")

    def checked_new(self, obj: M, may_exist: bool = False, ttl: float | None = None) -> M:
        """``obj`` if it may be created (with ``may_exist`` and ``ttl``); ValidationError or UnsupportedError if not."""
        if not isinstance(obj, Model):  # check_model's test, without its call on every write
            check_model(obj)
        if may_exist is not False and may_exist is not True:
            check_flag("may_exist", may_exist)
        if obj.version != 0:
            raise errors.ValidationError(
                f"{obj.nbdb_table} {obj.id} has version {obj.version}: it was stored already; use update()"
            )
        if may_exist and obj.nbdb_unique_fields:
            # Without unique fields the object is found by its own id alone (a retried create, a derived id),
            # which every store can do; a unique value's holder needs a store that enforces them.
            self.need("unique", self.backend.capabilities.unique, "enforce unique fields")
        if ttl is not None:
            check_seconds("ttl", ttl)
            self.need("expiry", self.backend.capabilities.expiry is not Expiry.NONE, "expire objects")
        return obj

    def checked_stored(self, obj: M) -> M:
        """``obj`` if it is a stored copy (version 1 or more); ValidationError if not."""
        if not isinstance(obj, Model):
            check_model(obj)
        if obj.version == 0:
            raise errors.ValidationError(f"{obj.nbdb_table} {obj.id} has version 0: create() it first")
        return obj

    def target(self, target: Model | tuple[type[Model], UUID | str]) -> tuple[type[Model], UUID]:
        """The model and id of a stored object or of a ``(Model, id)`` pair."""
        if isinstance(target, Model):
            return type(target), target.id
        if isinstance(target, tuple) and len(target) == 2:
            return check_model_class(target[0]), check_uuid(target[1])
        raise errors.ValidationError(f"expected a stored object or (Model, id), got {target!r}")

    def delete_op(
        self, obj_or_model: Model | type[Model] | tuple[type[Model], UUID | str], id: UUID | str | None, if_exists: bool
    ) -> Delete | None:
        """The Delete of an object (at its version) or of ``Model, id`` or a ``(Model, id)`` key (any version).

        None if ``if_exists`` and ``Model, id`` is gone already; NotFoundError
        if it is gone and not ``if_exists``.
        """
        if if_exists is not False and if_exists is not True:
            check_flag("if_exists", if_exists)
        if isinstance(obj_or_model, Model):
            if id is not None:  # delete(port, switch.id) deleted the port and ignored the id
                raise errors.ValidationError(
                    f"delete() takes a stored object, or a Model class and an id, not an object and id {id!r}"
                )
            obj = self.checked_stored(obj_or_model)
            return delete_of(obj, if_exists, lineage=not self.deferred)
        if isinstance(obj_or_model, tuple) and id is None:
            # A controller's key, as mutate() and refresh() take it: "expected a Model subclass, got (...)".
            obj_or_model, id = self.target(obj_or_model)
        model = check_model_class(obj_or_model)
        if id is None:
            raise errors.ValidationError("delete(Model, id) needs an id")
        uid = check_uuid(id)
        current = self.backend.read(model.nbdb_table, uid)
        if current is None:
            if if_exists:
                return None
            raise errors.NotFoundError(f"{model.nbdb_table} {uid} does not exist", key=(model.nbdb_table, uid))
        return Delete(model.nbdb_table, uid, current.topic, ANY_VERSION, None, if_exists)


def refuse_newer_values(ops: Sequence[Any]) -> None:
    """ValidationError, before anything is sent, if a put holds a newer schema's enum value (see nbdb.models.enums).

    Such a value was read from a store whose schema checks it (OVSDB's columns); a store of records
    checks nothing, and its reads would report the record as corrupt (as they report another
    writer's value outside the enum): the write is refused rather than leave a record nobody reads.
    """
    for op in ops:
        value = op.value if isinstance(op, Put) else None
        held = None if value is None else enums.newer_held(value)
        if held:
            shown = enums.shown_held(held)
            raise errors.ValidationError(
                f"{op.table} {op.id} holds values a newer schema added to its enums ({shown}), read from a store "
                "whose schema checks them: this store checks none, and could not read them back"
            )
