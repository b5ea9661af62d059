"""The service-provider interface between :class:`nbdb.Database` and a backend.

The Database validates models, encodes them to bytes and works out references;
a backend stores opaque records. A backend rarely implements this interface
directly: it subclasses a family (:mod:`nbdb.families`) that builds these
operations on top of a few server primitives.

Records are addressed by ``(table, id)``; ``topic`` is the partition a record
lives in, fixed at creation. ``version`` counts the writes of one object (1
after create). A *revision* is an ordered resume token for the whole store:
every commit gets a larger one.
"""

from __future__ import annotations

import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from nbdb.capabilities import Capabilities
from nbdb.errors import UnsupportedError

__all__ = [
    "ANY_VERSION",
    "DEFERRED",
    "Backend",
    "CheckedData",
    "CommitResult",
    "Deferred",
    "Delete",
    "FieldChange",
    "LockHandle",
    "Mutate",
    "Put",
    "Record",
    "RecordChange",
    "RecordStream",
    "RefKey",
    "Snapshot",
    "UniqueKey",
    "WriteOp",
]

RefKey = tuple[str, uuid.UUID]
"""A reference target: (table, id)."""

ANY_VERSION = -1
"""``Delete.expect_version`` that accepts whatever version is stored."""


class CheckedData(bytes):
    """``Record.data`` whose enumerated fields hold values the store's own schema checked (OVSDB's columns).

    ``admitted``: field -> the values its column admits that the model's enum
    lacks (a newer schema's), as text (an integer's or a real's as ``str`` spells it).
    The codec reads such a value into the field as
    a newer member of its enum (:func:`nbdb.models.enums.newer_value`) instead of refusing the record; only a
    store whose server refuses any other value there may hand these bytes out,
    and only a backend makes them (what a store of records holds is plain
    bytes, however written). Equal to the same plain bytes, but hashed apart
    from them, and equal to other checked bytes only with the same ``admitted``:
    no memo of decoded records (``nbdb.codec.decode``'s) mixes the two, nor
    lends the read one store's schema vouched for to bytes another's does not.
    Pickled and copied with ``admitted``.
    """

    admitted: dict[str, frozenset[str]]

    def __new__(cls, data: bytes, admitted: dict[str, frozenset[str]]) -> CheckedData:
        self = super().__new__(cls, data)
        self.admitted = admitted
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        # bytes' own reduction rebuilds through __new__ with the bytes alone.
        return (CheckedData, (bytes(self), self.admitted))

    def __hash__(self) -> int:
        return hash((bytes(self), CheckedData, frozenset(self.admitted.items())))

    def __eq__(self, other: object) -> bool:
        if type(other) is CheckedData and other.admitted != self.admitted:
            return False
        return bytes.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal


class Deferred(bytes):
    """The type of :data:`DEFERRED` (no encoded object is ever one: check the type, not the identity)."""


DEFERRED: bytes = Deferred()
"""``Put.data`` for a backend that ``keeps_values``: the bytes are not made at write time.

Such a store keeps ``Put.value`` (the validated stored copy) and encodes it
only if somebody reads the record's bytes; in-process readers share the value.
"""


# The records and operations that cross the SPI on every write and every change
# are named tuples: immutable and hashable like frozen dataclasses, and built in
# one C call (a frozen dataclass sets each field through object.__setattr__: four
# times the cost, paid several times per write).


class Record(NamedTuple):
    """One stored object as the backend sees it: opaque bytes plus addressing.

    ``value`` is the decoded object when an in-process store kept the one the
    Database validated on write (see :attr:`Put.value`); readers then share
    it instead of decoding ``data`` again. Stores that hold only bytes leave
    it None. A backend never looks inside it.
    """

    table: str
    id: uuid.UUID
    topic: str | None
    version: int
    data: bytes
    value: object = None
    written: int | None = None
    """The revision of the commit that wrote this record (its last write: its store's *mod revision*), on
    stores with ``capabilities.cas_across_recreate``; None elsewhere, or where not known (a past value).
    Revisions only grow, so it tells two records of one id and version apart: one of an object deleted
    and created again since has a later one."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Records read at one revision.

    A page of a paged scan also says where the next page starts (``after``,
    an opaque text); None when this is the last page, or when not paged.
    """

    records: list[Record]
    revision: int
    after: str | None = None


class UniqueKey(NamedTuple):
    """A value an object holds in a unique field (or group of fields) of its table.

    ``field`` names the field, or the fields joined by ``+``; ``value`` is the
    canonical JSON of the value(s). No two objects of a table may hold the
    same (field, value); a store enforces it atomically with the commit.
    """

    field: str
    value: str


class RecordChange(NamedTuple):
    """One committed change of one record (old None: created; new None: deleted).

    ``synthetic`` marks a change of a *merged catch-up*: after a reconnect
    some servers (OVSDB) can only say how the data differs from what the
    stream last saw, several commits merged into one difference. Such a change
    is exact as a difference, but it is not one commit: a watch stops with
    :class:`nbdb.HistoryGoneError` before it, a cache applies it like the
    events of a re-list.
    """

    table: str
    id: uuid.UUID
    topic: str | None
    old: Record | None
    new: Record | None
    revision: int
    synthetic: bool = False


class Put(NamedTuple):
    """Create (``expect_version == 0``) or compare-and-swap update of one record.

    ``refs`` is the full set of references of the new state; ``old_refs`` those
    of the stored state at ``expect_version`` if the caller knows them (None:
    the backend reads them). ``value`` is the object as it will be stored (its
    next version), for in-process stores that keep objects. ``unique`` holds
    every unique value of the new state (stores with ``capabilities.unique``
    enforce them), ``old_unique`` those of the stored state at
    ``expect_version`` if the caller knows them (None: read them). ``ttl``:
    seconds the object lives unless refreshed (creates only; stores with
    ``capabilities.expiry``). ``fresh_id``: a create whose id was made by
    this process (:func:`nbdb.models.ids.new_id`) and carried by no create
    before it (:func:`nbdb.models.ids.claim`), so no store holds that id
    anywhere yet; a store that keeps ids per partition may then check only
    the partition it writes instead of searching them all. False (always
    safe) for anything else, or when unknown.
    """

    table: str
    id: uuid.UUID
    topic: str | None
    data: bytes
    expect_version: int
    refs: frozenset[RefKey] = frozenset()
    old_refs: frozenset[RefKey] | None = None
    value: object = None
    unique: tuple[UniqueKey, ...] = ()
    ttl: float | None = None
    old_unique: tuple[UniqueKey, ...] | None = None
    fresh_id: bool = False
    expect_written: int | None = None
    """An update's: the :attr:`Record.written` the stored record must have, with ``expect_version``
    (the revision that wrote the copy the caller holds: a copy of an object deleted and created again
    since is stale even at the same version); None (a copy built by hand): the version alone is compared.
    Only stores with ``capabilities.cas_across_recreate`` compare it."""


class Delete(NamedTuple):
    """Delete one record, if it is at ``expect_version`` (or ANY_VERSION) and unreferenced.

    ``old_refs`` are the references the stored record holds, ``old_unique``
    its unique values, if known (None: the backend reads them). ``if_exists``:
    nothing to do (not an error) if the record does not exist when the
    commit applies.
    """

    table: str
    id: uuid.UUID
    topic: str | None
    expect_version: int = ANY_VERSION
    old_refs: frozenset[RefKey] | None = None
    if_exists: bool = False
    old_unique: tuple[UniqueKey, ...] | None = None
    expect_written: int | None = None
    """As :attr:`Put.expect_written`: the revision that wrote the deleted copy (None: not compared)."""


@dataclass(frozen=True, slots=True)
class FieldChange:
    """Members added to and removed from one set, list or map field (map: keys to remove, pairs to add)."""

    field: str
    add: tuple[object, ...] = ()
    remove: tuple[object, ...] = ()


@dataclass(frozen=True, slots=True)
class Mutate:
    """A commutative change of some set, list or map fields, applied to whatever version is stored.

    Stores with native mutations (OVSDB, see :meth:`Backend.commit_mutations`)
    apply ``changes``; for every other store the Database calls
    ``rebase(stored)`` on the record it read and commits the Put it returns as
    a compare-and-swap, reading and rebasing again if another writer got
    there first — so the caller never sees a conflict for a change that
    commutes, short of losing every one of the store's attempts (OVSDB writes a
    column whose size bounds no order of its mutations respects as such a
    compare-and-swap too, see docs/backends/ovsdb.md).
    """

    table: str
    id: uuid.UUID
    changes: tuple[FieldChange, ...]
    rebase: Callable[[Record], Put]


WriteOp = Put | Delete


class LockHandle:
    """A held lock. ``lost`` turns True if the backend could not keep it alive, or once it is released.

    A lock lives on a lease with a TTL that a background thread renews; when the
    renewal fails (server gone, lease expired), the lock is lost and anyone may
    take it: check ``lost`` before acting on the assumption of exclusivity.
    ``lost`` also turns True at once when a write fenced on it is refused with
    :class:`nbdb.LockLostError` (another holder has the lock), before the next renewal would tell.
    Leaving the ``with`` block releases it: ``released`` and ``lost`` are True
    from then on (anyone may hold it), and a write fenced on it raises
    :class:`nbdb.LockLostError`.

    ``giving_back`` turns True the moment nbdb starts giving the lock up (the
    block's end, or :meth:`nbdb.Database.close` while the block still runs),
    before the backend's release: a write fenced on it raises
    :class:`nbdb.LockLostError` from then on. ``lost`` keeps the meaning a
    backend's release relies on (release on the server unless ``lost``): it
    turns True only once the release ended, so a worker that acts without a
    fence checks ``lost or giving_back``.
    """

    def __init__(self, name: str, token: str, issuer: object = None) -> None:
        self.name = name
        self.token = token
        self.issuer = issuer
        """What took the lock (the lease store), if it says: a refused fenced write marks the handle lost
        only where the store that refused it is the one holding the lock (see CommitContext.commit_ops)."""
        self._lost = threading.Event()
        self._released = False
        self._giving_back = False

    @property
    def lost(self) -> bool:
        """True once the lock may be held by somebody else (its lease is gone, or it was released).

        A backend releases the lock on the server unless it is ``lost``: a lock being given back
        (:attr:`giving_back`) is not lost until its release ended.
        """
        return self._lost.is_set()

    @property
    def giving_back(self) -> bool:
        """True once nbdb started giving the lock up (:meth:`mark_giving_back`), before its release ends.

        The holder may no longer act on it: a write fenced on it raises :class:`nbdb.LockLostError`
        rather than racing the release on the server (and landing if it got there first).
        """
        return self._giving_back

    def mark_giving_back(self) -> None:
        """Record that the holder is giving the lock up, before the backend releases it (nbdb calls it).

        Only :attr:`giving_back` changes: ``lost`` stays as it was, so that the backend still releases
        the lock on the server (a release that skips a ``lost`` lock left it taken until its ttl ran out).
        """
        self._giving_back = True

    @property
    def released(self) -> bool:
        """True once the ``with`` block that held the lock ended (the lock was given up, not lost)."""
        return self._released

    def mark_lost(self) -> None:
        """Record that the lease behind the lock is gone."""
        self._lost.set()

    def mark_released(self) -> None:
        """Record that the holder gave the lock up (the backend released it, or let its lease run out)."""
        self._released = True
        self._lost.set()

    def __repr__(self) -> str:
        state = ", released" if self._released else ", giving back" if self._giving_back else ""
        return f"LockHandle(name={self.name!r}, lost={self.lost}{state})"


class CommitResult(NamedTuple):
    """The outcome of a commit: its revision and each op's new version (0 for deletes).

    ``skipped`` holds the positions of ops that did nothing: deletes
    ``if_exists`` of records that were gone. (A named tuple, as the records
    and operations: one is built per commit, and a frozen dataclass cost
    twice as much.)
    """

    revision: int
    versions: Sequence[int] = ()
    skipped: frozenset[int] = frozenset()


class RecordStream(ABC):
    """A stream of committed changes from a revision on, in revision order.

    ``poll`` returns the next batch (empty after ``timeout``), raises
    :class:`nbdb.HistoryGoneError` when the backend cannot resume, and
    :class:`nbdb.BackendUnavailableError` when the server is gone for good.
    ``revision`` is the resume point: every change up to it was returned.
    """

    @abstractmethod
    def poll(self, timeout: float | None) -> list[RecordChange]:
        """The next changes, waiting at most ``timeout`` seconds (None: forever)."""

    @property
    @abstractmethod
    def revision(self) -> int:
        """Every change with a revision up to this one has been returned."""

    @abstractmethod
    def close(self) -> None:
        """Stop the stream; a ``poll`` blocked in another thread returns []."""

    def deliver_to(self, sink: Callable[[list[RecordChange], int], None]) -> bool:
        """Hand changes to ``sink`` from the stream's own reader thread as they arrive; False if it cannot.

        Optional. A stream that reads on a thread of its own (the etcd watch) can
        call ``sink(changes, revision)`` there instead of queueing the changes for
        the thread that polls: one thread wake less per change. Every call gives
        whole revisions in order, and every change up to ``revision`` has then been
        given; nothing is given twice. ``poll`` must still be called: it returns []
        and raises what it always raises (HistoryGoneError, a failure), and may
        give queued changes to ``sink`` itself, in order with the reader's.
        """
        return False

    def reach(self, revision: int) -> None:
        """Somebody waits for every change up to ``revision`` (``Cache.wait_for``): find out soon.

        Optional, called from any thread, returns at once. A stream whose
        ``revision`` moves only with the changes it delivers, or at the server's
        rare progress notifications (etcd), does what makes it learn, soundly,
        that it has delivered every change up to ``revision`` (etcd: once the
        wait outlasts a short grace, asks for a progress notification, or
        watches wider for a while). It is told at once, and when to act is its
        own policy. The default does nothing: the other streams' revisions
        follow the store's on their own.
        """
        return


class Backend(ABC):
    """What :class:`nbdb.Database` needs from a store. Families implement it."""

    capabilities: ClassVar[Capabilities]
    """The backend's static declaration of guarantees."""

    metrics_label: ClassVar[str | None] = None
    """The ``backend`` label of its metrics, its URL scheme's name (``sqlite``); None: the class's name less
    ``Backend``, lowercased (``RedisBackend``: ``redis``). A variant class of one scheme sets its scheme's."""

    @abstractmethod
    def read(self, table: str, id: uuid.UUID) -> Record | None:
        """The stored record, or None."""

    @abstractmethod
    def scan(self, tables: Sequence[str], topics: Collection[str | None] | None) -> Snapshot:
        """Every record of ``tables`` (in ``topics``, or all if None), read at one revision."""

    @abstractmethod
    def commit(self, ops: Sequence[WriteOp]) -> CommitResult:
        """Apply ``ops`` all or nothing, checking versions and references atomically.

        Raises :class:`nbdb.ConflictError` on a version mismatch and
        :class:`nbdb.ReferenceError` when a reference would dangle.
        """

    @abstractmethod
    def referrers(self, table: str, id: uuid.UUID) -> list[RefKey]:
        """The (table, id) of every record that references this one."""

    def read_many(self, keys: Sequence[RefKey]) -> list[Record | None]:
        """:meth:`read` of each of ``keys``, in order (a backend batches the round trips; not one snapshot)."""
        return [self.read(*key) for key in keys]

    def referrers_of(self, targets: Sequence[RefKey]) -> dict[RefKey, list[RefKey]]:
        """:meth:`referrers` of each of ``targets`` (a cascade's level); a backend reads them in batches.

        Not one read at one revision: like separate :meth:`referrers` calls, each target's list is
        as the store held it at some point of the call (a commit's conditions check what it relies on).
        """
        return {target: self.referrers(*target) for target in targets}

    @abstractmethod
    def watch(self, tables: Sequence[str], topics: Collection[str | None] | None, since: int) -> RecordStream:
        """Changes of ``tables`` (in ``topics``) committed after revision ``since``."""

    @abstractmethod
    def current_revision(self) -> int:
        """The revision of the latest commit."""

    @property
    def revision_scope(self) -> object:
        """Which revision sequence this backend's revisions belong to.

        None (the default): every connection to the store shares one sequence.
        A backend whose revisions count per connection returns a token of its
        own sequence, equal for connections that share it; see
        :class:`nbdb.revision.Revision`.
        """
        return None

    @property
    def store_token(self) -> int | str | None:
        """Which store this backend reaches: equal for every connection to one store, None if unknown.

        Revisions of a global sequence (``revision_scope`` None) are plain
        numbers: a write result of another store carries one that a cache of
        this store may have reached already. A backend that can name its store
        cheaply (in-process stores) returns a token (a number or text, never
        another object: stored copies keep it); the write results of its
        Databases carry it, and :meth:`nbdb.Cache.wait_for` refuses an object
        another store wrote instead of reporting it reflected at once.
        """
        return None

    @abstractmethod
    def lock(
        self, name: str, ttl: float, timeout: float | None, closed: threading.Event | None = None
    ) -> AbstractContextManager[LockHandle]:
        """A context manager holding the named lock; see :meth:`nbdb.Database.lock`.

        ``closed`` is set when the Database asking closes (:meth:`nbdb.Database.lock` always passes its
        own): a wait for another holder then ends at once with BackendUnavailableError, with or without a
        ``timeout`` (:func:`nbdb.families.lease.hold_lease` does it for every lease store). None: nothing
        ends the wait but ``timeout`` (a caller of the backend's own).
        """

    @property
    def request_timeout(self) -> float | None:
        """How long one request may wait for the server's reply (the URL's timeout), in seconds.

        :meth:`nbdb.Database.close` waits that long for the locks it gives back (a silent server must not
        hold it up: each lease then runs out with its ttl). None (the default): not declared (in-process
        stores, whose calls return at once); close then waits at most ``nbdb.api.GIVE_BACK_SECONDS`` (10 s).
        """
        return None

    @abstractmethod
    def allocate_id(self, name: str) -> int:
        """The next value of the named counter (1, 2, 3, ...), unique among all clients."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and threads."""

    def check_table(self, table: str) -> None:
        """Raise UnsupportedError (saying why) if this store cannot hold objects of ``table``.

        Most stores hold any table; OVSDB holds only the tables its served
        schemas have. Reads of such a table find nothing (but see :meth:`check_readable`); writes raise.
        """
        return None

    def unwritable(self, table: str) -> str | None:
        """Why this store reads objects of ``table`` but cannot write them (the message of the UnsupportedError
        its commit raises for a write of one), or None if it writes them: the one hook a store overrides, and
        the one question nbdb asks (a delete's walk, ``create(may_exist=True)``, a copy).

        Most stores write what they read; OVSDB cannot write a table whose schema has no ``external_ids``
        (OVN's ``Load_Balancer_Group``) through a Database with a namespace, which such a row cannot hold. Such a store
        must drop a weak reference to a deleted object from a row of ``table`` itself (ovsdb-server
        does): a delete plans no rewrite of it (:mod:`nbdb.cascade`). Deletes of its rows are allowed.
        Asked of every referrer a delete's walk reads: cheap, and no exception to catch.
        """
        return None

    def check_readable(self, tables: Sequence[str]) -> None:
        """Raise UnsupportedError (saying why) if this store serves a database meant to hold one of ``tables``
        without that table: a read of it would find nothing where the table is missing, not empty.

        ``read``, ``scan`` and ``watch`` check it themselves; a cache, whose list runs in the background
        (and is retried), asks first. Most stores hold any table.
        """
        return None

    def unmodelled(self) -> dict[str, int]:
        """Rows this store holds in tables no model of the process maps, by table (how many each); on
        OVSDB also rows holding a value in a column no field maps, by ``table.column``.

        Most stores hold only models' objects: none. OVSDB serves a schema of its own, whose tables
        other clients fill (a newer OVN's tables, a user's own): ``nbdb copy`` refuses to leave
        such rows behind without saying so. Only the default namespace holds them (rows other
        clients write carry none).
        """
        return {}

    def fixed_fields(self, table: str) -> dict[str, Any]:
        """The fields of ``table`` this store keeps nowhere, each with the one value it can hold (JSON form).

        Most stores keep every field; OVSDB keeps a field in its column, and a served schema without
        that column (an older one) holds only the field's default: a write of any other value raises
        UnsupportedError. ``nbdb copy`` checks a source against it before it writes anything.
        """
        return {}

    # ---------------------------------------------------------------- optional, per capability
    # A backend offers these when its capabilities say so; the defaults refuse.

    handles_mutations: ClassVar[bool] = False
    """True if :meth:`commit_mutations` applies :class:`Mutate` ops natively."""

    maps_columns: ClassVar[bool] = False
    """True if the store keeps a model's fields as columns of its own schema, not a record's bytes (OVSDB).

    A store of records keeps every field a record holds, including fields of a
    newer version of the model that this one lacks (the codec reads around
    them and writes them back). A store of columns keeps what its schema has:
    a newer model's fields are a newer schema's columns (schema skew).
    """

    keeps_values: ClassVar[bool] = False
    """True if the store keeps each Put's ``value`` and makes its bytes only when they are read.

    The Database then sends ``data=DEFERRED`` in its puts (encoding a port was
    a tenth of an in-process write), and the store's records encode their
    value on demand (``Record.data`` of a :class:`DEFERRED` put). Only for
    in-process stores: everything else needs the bytes to send them.
    """

    def commit_mutations(self, ops: Sequence[WriteOp | Mutate], fence: LockHandle | None = None) -> CommitResult:
        """``commit`` (or, with ``fence``, ``commit_fenced``) with native mutations among the ops.

        For stores that declare ``handles_mutations``. A Mutate's version in
        the result is the one the object has once the store shows the change.
        """
        raise UnsupportedError(f"{type(self).__name__} has no native mutations")

    def commit_fenced(self, ops: Sequence[WriteOp], fence: LockHandle) -> CommitResult:
        """``commit(ops)`` only while ``fence`` still holds its lock, checked atomically with it.

        Raises :class:`nbdb.LockLostError` (and writes nothing) when the lock
        is no longer held by that holder (``capabilities.fencing``).
        """
        raise UnsupportedError(f"{type(self).__name__} cannot fence writes on a lock")

    def refresh(self, table: str, id: uuid.UUID, ttl: float) -> None:
        """Give a record created with a ttl another ``ttl`` seconds of life (``capabilities.expiry``).

        NotFoundError if it is gone (expired or deleted); ValidationError if
        it was created without a ttl.
        """
        raise UnsupportedError(f"{type(self).__name__} does not expire objects")

    def scan_page(
        self, tables: Sequence[str], topics: Collection[str | None] | None, limit: int, after: str | None
    ) -> Snapshot:
        """One page of :meth:`scan`: at most about ``limit`` records, from where ``after`` left off.

        Every page of one listing reflects the revision of the first page
        (``capabilities.pages``); HistoryGoneError once the store can no
        longer show it.
        """
        raise UnsupportedError(f"{type(self).__name__} cannot list in pages")

    def ttls(self, tables: Sequence[str]) -> dict[RefKey, float]:
        """The ttl of every object of ``tables`` created with one (tools carry them across a copy)."""
        return {}

    def reap(self) -> int:
        """Delete objects whose ttl ran out, once; how many (stores with ``expiry=reaper`` that need a client to).

        A Database calls it periodically while it is open. Stores that expire
        objects themselves (or reap in a thread of their own) do not offer it.
        """
        raise UnsupportedError(f"{type(self).__name__} has nothing to reap")

    def unique_owner(self, table: str, key: UniqueKey) -> uuid.UUID | None:
        """The id of the object that holds the unique value ``key``, if any (``capabilities.unique``)."""
        raise UnsupportedError(f"{type(self).__name__} does not enforce unique fields")

    def check_unique_claim(self, table: str, key: UniqueKey, owner: uuid.UUID) -> None:
        """CorruptRecordError if the store's claim of ``key`` names ``owner``, which does not hold that value.

        Called by ``Database.get_by`` only when the object :meth:`unique_owner` named was read without
        the value: a claim that moved meanwhile is no error (return), one that stays put is another
        writer's damage. Stores whose claims cannot lie (a server-side index) keep this default.
        """
        return

    def stored_unique(self, table: str, key: UniqueKey) -> UniqueKey:
        """``key`` as this store keeps the value, and as the object holding it reads back.

        Most stores keep a value as it is given. OVSDB keeps a list field of its own schema in a set
        column, unordered: ``tags=["y", "x"]`` reads back ``["x", "y"]`` and its index compares the
        set, so a lookup by a value in any order must find the object (``Database.get_by``).
        """
        return key

    # ---------------------------------------------------------------- test hooks
    # The conformance kit plays "another writer" and "the server forgot its
    # history" through these. A backend that cannot offer one raises
    # UnsupportedError and the kit reports the tests that need it as skipped.

    def compact_history(self) -> None:
        """Forget the change history up to the current revision (as compaction or trimming would)."""
        raise UnsupportedError(f"{type(self).__name__} cannot drop its history on demand")

    def write_raw(self, table: str, id: uuid.UUID, topic: str | None, data: bytes) -> None:
        """Store ``data`` as the record's bytes, bypassing every check.

        For tests of corrupt-record handling only (the conformance kit uses it
        to play "another writer"); a backend that cannot do it raises
        UnsupportedError.
        """
        raise UnsupportedError(f"{type(self).__name__} cannot write raw records")
