"""The embedded default: an in-process store of objects, in microseconds.

``memory://`` gives a private store; ``memory://NAME`` a store shared by every
``connect()`` of that name in the process. ``?history=N`` bounds the change
history (default 10,000 record changes) so that a watcher that falls further
behind gets HistoryGoneError and a cache re-lists, as on any server backend.

Unlike the server backends, this store does not go through a family of key
layouts: it keeps records in dictionaries — by id, by (topic, table), and a
reverse-reference index — and checks the shared commit rules
(:mod:`nbdb.families.rules`) directly under one lock, so a commit is a few
dictionary operations. It also keeps the object each write was validated as
(:attr:`nbdb.spi.Record.value`): reads, watches and caches of the process
share that immutable object instead of decoding bytes again.
"""

from __future__ import annotations

import bisect
import heapq
import threading
import time
import uuid
import weakref
from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar
from urllib.parse import urlsplit

from nbdb import errors, page_token
from nbdb.capabilities import Atomicity, Capabilities, Durability, Expiry
from nbdb.families import rules
from nbdb.families.lease import LeaseTable, hold_lease
from nbdb.options import Options
from nbdb.pool import Lease, SharedResources
from nbdb.spi import (
    ANY_VERSION,
    Backend,
    CommitResult,
    Delete,
    LockHandle,
    Put,
    Record,
    RecordChange,
    RecordStream,
    RefKey,
    Snapshot,
    UniqueKey,
    WriteOp,
)

__all__ = ["MemoryBackend", "MemoryStore"]

DEFAULT_HISTORY = 10_000
_NO_REFS: frozenset[RefKey] = frozenset()


class MemoryStore:
    """The data of one in-memory database: records, references, revision, bounded history, leases."""

    def __init__(self, history: int = DEFAULT_HISTORY) -> None:
        if history < 1:
            raise errors.ValidationError("memory:// history must be at least 1")
        self.history_limit = history
        self.cond = threading.Condition(threading.Lock())
        self.records: dict[RefKey, Record] = {}
        self.parts: dict[tuple[str | None, str], dict[uuid.UUID, Record]] = {}
        self.refs: dict[RefKey, frozenset[RefKey]] = {}
        self.referrers: dict[RefKey, set[RefKey]] = {}
        self.revision = 0
        self.compacted = 0
        self.history: list[RecordChange] = []
        self.leases = LeaseTable()
        self.counters: dict[str, int] = {}
        self.uniques: dict[tuple[str, UniqueKey], uuid.UUID] = {}
        self.held: dict[RefKey, tuple[UniqueKey, ...]] = {}
        self.expiry: dict[RefKey, tuple[float, float]] = {}
        """(ttl, deadline) of every object created with a ttl."""
        self._reaper: threading.Thread | None = None

    # ---------------------------------------------------------------- commits (caller holds cond)

    def check(self, ops: Sequence[WriteOp]) -> tuple[list[WriteOp], list[int]]:
        """Every rule of the commit, against the current state: the ops to apply and their versions.

        A delete ``if_exists`` of a missing record is dropped.
        """
        ops = [
            op for op in ops if not (isinstance(op, Delete) and op.if_exists and (op.table, op.id) not in self.records)
        ]
        shape = rules.shape_of(ops)
        versions: list[int] = []
        old_refs: dict[RefKey, frozenset[RefKey]] = {}
        for op in ops:
            me = (op.table, op.id)
            current = self.records.get(me)
            if me in shape.created:
                if current is not None:
                    raise rules.already_exists(me)
                versions.append(1)
                continue
            if current is None:
                raise rules.not_found(me)
            if current.topic != op.topic:
                raise rules.topic_changed(me, current.topic, op.topic)
            if op.expect_version not in (ANY_VERSION, current.version):
                raise rules.stale(me, current.version, op.expect_version)
            if isinstance(op, Put) and op.ttl is not None:
                raise errors.ValidationError(f"{op.table} {op.id}: a ttl is given when an object is created")
            old_refs[me] = self.refs.get(me, _NO_REFS)
            versions.append(0 if isinstance(op, Delete) else current.version + 1)
        changes = rules.ref_changes(ops, old_refs, shape)
        for target, sources in changes.added.items():
            if target not in shape.created and target not in self.records:
                raise rules.dangling(sources[0], target)
            if target in self.expiry or any(
                isinstance(op, Put) and op.ttl is not None and (op.table, op.id) == target for op in ops
            ):
                raise rules.ttl_referenced(sources[0], target)
        for target in shape.deleted:
            remaining = rules.remaining_referrers(target, self.referrers.get(target, ()), changes)
            if remaining:
                raise rules.still_referenced(target, sorted(remaining))
        self._check_unique(ops)
        return ops, versions

    def _check_unique(self, ops: Sequence[WriteOp]) -> None:
        released: set[tuple[str, UniqueKey]] = set()
        claimed: dict[tuple[str, UniqueKey], uuid.UUID] = {}
        for op in ops:
            me = (op.table, op.id)
            keep = set(op.unique) if isinstance(op, Put) else set()
            released.update((op.table, key) for key in self.held.get(me, ()) if key not in keep)
        for op in ops:
            if not isinstance(op, Put):
                continue
            for key in op.unique:
                slot = (op.table, key)
                owner = claimed.get(slot, self.uniques.get(slot))
                if owner is not None and owner != op.id and (slot in claimed or slot not in released):
                    raise rules.unique_taken(op.table, key.field, key.value, owner)
                claimed[slot] = op.id

    def apply(self, ops: Sequence[WriteOp], versions: Sequence[int]) -> int:
        """Write a checked commit at the next revision."""
        self.revision += 1
        rev = self.revision
        history = self.history
        for op, version in zip(ops, versions, strict=True):
            me = (op.table, op.id)
            old = self.records.get(me)
            part = self.parts.setdefault((op.topic, op.table), {})
            if isinstance(op, Put):
                new = Record(op.table, op.id, op.topic, version, op.data, op.value)
                self.records[me] = new
                part[op.id] = new
                self._set_refs(me, op.refs)
                self._set_unique(me, op.unique)
                if op.ttl is not None:
                    self.expiry[me] = (op.ttl, time.monotonic() + op.ttl)
                    self._start_reaper()
            else:
                new = None
                del self.records[me]
                del part[op.id]
                self._set_refs(me, _NO_REFS)
                self._set_unique(me, ())
                self.expiry.pop(me, None)
            history.append(RecordChange(op.table, op.id, op.topic, old, new, rev))
        excess = len(history) - self.history_limit
        if excess > 0:
            # Trim in chunks so trimming stays amortised O(1) per change.
            cut = min(max(excess, self.history_limit // 4), len(history))
            self.compacted = history[cut - 1].revision
            del history[:cut]
        self.cond.notify_all()
        return rev

    def _set_unique(self, me: RefKey, keys: tuple[UniqueKey, ...]) -> None:
        for key in self.held.pop(me, ()):
            if self.uniques.get((me[0], key)) == me[1]:
                del self.uniques[(me[0], key)]
        for key in keys:
            self.uniques[(me[0], key)] = me[1]
        if keys:
            self.held[me] = keys

    def _start_reaper(self) -> None:
        if self._reaper is None or not self._reaper.is_alive():
            self._reaper = threading.Thread(
                target=_reap, args=(weakref.ref(self),), name="nbdb-memory-reaper", daemon=True
            )
            self._reaper.start()

    def reap(self) -> float | None:
        """Delete what has expired (caller holds ``cond``); seconds until the next deadline, None if none."""
        now = time.monotonic()
        expired = [key for key, (_, deadline) in self.expiry.items() if deadline <= now]
        if expired:
            ops: list[WriteOp] = [
                Delete(t, i, self.records[(t, i)].topic) for t, i in expired if (t, i) in self.records
            ]
            self.apply(ops, [0] * len(ops))
        if not self.expiry:
            return None
        return max(0.0, min(deadline for _, deadline in self.expiry.values()) - now)

    def _set_refs(self, me: RefKey, refs: frozenset[RefKey]) -> None:
        old = self.refs.pop(me, _NO_REFS)
        for target in old - refs:
            sources = self.referrers.get(target)
            if sources is not None:
                sources.discard(me)
                if not sources:
                    del self.referrers[target]
        for target in refs - old:
            self.referrers.setdefault(target, set()).add(me)
        if refs:
            self.refs[me] = refs


def _reap(ref: weakref.ReferenceType[MemoryStore]) -> None:
    """The expiry thread of a store: deletes expired objects (watchers see it) until none expire."""
    while True:
        store = ref()
        if store is None:
            return
        with store.cond:
            pause = store.reap()
            if pause is None:
                store._reaper = None
                return
            store.cond.wait(min(pause, 1.0))
        del store


class _MemoryStream(RecordStream):
    def __init__(
        self, store: MemoryStore, tables: frozenset[str], topics: frozenset[str | None] | None, since: int
    ) -> None:
        self._store = store
        self._tables = tables
        self._topics = topics
        self._revision = since
        self._closed = False

    def poll(self, timeout: float | None) -> list[RecordChange]:
        store = self._store
        deadline = None if timeout is None else time.monotonic() + timeout
        with store.cond:
            while not self._closed and store.revision <= self._revision:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return []
                store.cond.wait(remaining)
            if self._closed:
                return []
            if self._revision < store.compacted:
                raise errors.HistoryGoneError(
                    f"revision {self._revision} is older than the kept history (from {store.compacted})"
                )
            history = store.history
            start = bisect.bisect_right(history, self._revision, key=lambda c: c.revision)
            tables, topics = self._tables, self._topics
            out = [
                c for c in history[start:] if c.table in tables and (topics is None or c.topic in topics)
            ]  # fmt: skip
            self._revision = store.revision
            return out

    @property
    def revision(self) -> int:
        return self._revision

    def close(self) -> None:
        with self._store.cond:
            self._closed = True
            self._store.cond.notify_all()


def _forget(store: MemoryStore) -> None:
    """Nothing to close: a named store's data goes when its last backend is closed or collected."""


_NAMED: SharedResources[str, MemoryStore] = SharedResources("memory://NAME", _forget)


class MemoryBackend(Backend):
    """The embedded store (see the module docstring)."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        transactions=Atomicity.ATOMIC,
        linearizable_reads=True,
        server_side_topic_filter=True,
        durability=Durability.VOLATILE,
        history="the last 10,000 record changes (memory://?history=N)",
        cross_process=False,
        unique=True,
        fencing=True,
        expiry=Expiry.REAPER,
        pages=True,
        notes="In-process only: data, locks and ids are shared by the Database objects of one process "
        "that connect to the same memory://NAME. Reads share the object each write validated.",
    )

    def __init__(self, store: MemoryStore | None = None, shared: Lease[str, MemoryStore] | None = None) -> None:
        self.store = store if store is not None else shared.value if shared is not None else MemoryStore()
        self._shared = shared
        if shared is not None:
            # A backend dropped without close() must still let its named store go.
            self._finalizer = weakref.finalize(self, shared.release)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryBackend:
        """Open ``memory://[NAME][?history=N]``; ``namespace=`` selects an isolated store of that name."""
        parts = urlsplit(url)
        opts = Options.from_url(parts.query, options, {"history", "namespace"}, "memory://", keep_blank_values=False)
        namespace = opts.text("namespace", "")
        history = opts.integer("history", DEFAULT_HISTORY, minimum=1)
        name = parts.netloc + parts.path
        if namespace:
            # A namespace isolates one application's (or one test's) data.
            name = f"{name}#{namespace}"
        if not name:
            return cls(MemoryStore(history))
        return cls(shared=_NAMED.acquire(name, lambda: MemoryStore(history)))

    # ---------------------------------------------------------------- Backend

    def read(self, table: str, id: uuid.UUID) -> Record | None:
        return self.store.records.get((table, id))

    def scan(self, tables: Sequence[str], topics: Collection[str | None] | None) -> Snapshot:
        store = self.store
        wanted = frozenset(tables)
        with store.cond:
            records = [
                record
                for (topic, table), part in store.parts.items()
                if table in wanted and (topics is None or topic in topics)
                for record in part.values()
            ]
            return Snapshot(records, store.revision)

    def commit(self, ops: Sequence[WriteOp]) -> CommitResult:
        store = self.store
        with store.cond:
            return self._commit(ops)

    def _commit(self, ops: Sequence[WriteOp]) -> CommitResult:
        store = self.store
        if not ops:
            return CommitResult(store.revision, [])
        applied, versions = store.check(ops)
        revision = store.apply(applied, versions) if applied else store.revision
        by_key = {(op.table, op.id): v for op, v in zip(applied, versions, strict=True)}
        skipped = frozenset(i for i, op in enumerate(ops) if (op.table, op.id) not in by_key)
        return CommitResult(revision, [by_key.get((op.table, op.id), 0) for op in ops], skipped)

    def commit_fenced(self, ops: Sequence[WriteOp], fence: LockHandle) -> CommitResult:
        store = self.store
        with store.cond:
            if not store.leases.holds(fence.name, fence.token.encode()):
                raise errors.LockLostError(f"lock {fence.name!r} is no longer held by this holder: nothing was written")
            return self._commit(ops)

    def refresh(self, table: str, id: uuid.UUID, ttl: float) -> None:
        store = self.store
        with store.cond:
            if (table, id) not in store.records:
                raise rules.not_found((table, id), "expired or deleted")
            if (table, id) not in store.expiry:
                raise errors.ValidationError(f"{table} {id} was created without a ttl: there is nothing to refresh")
            store.expiry[(table, id)] = (ttl, time.monotonic() + ttl)

    def ttls(self, tables: Sequence[str]) -> dict[RefKey, float]:
        wanted = frozenset(tables)
        with self.store.cond:
            return {key: ttl for key, (ttl, _) in self.store.expiry.items() if key[0] in wanted}

    def unique_owner(self, table: str, key: UniqueKey) -> uuid.UUID | None:
        return self.store.uniques.get((table, key))

    def scan_page(
        self, tables: Sequence[str], topics: Collection[str | None] | None, limit: int, after: str | None
    ) -> Snapshot:
        """A page in (table, id) order, as the store was at the first page's revision (rewound through history)."""
        revision, last = page_token.decode(after)
        store = self.store
        wanted = frozenset(tables)
        with store.cond:
            if revision is None:
                revision = store.revision
            elif revision < store.compacted:
                raise errors.HistoryGoneError(
                    f"the listing's revision {revision} is older than the kept history; list again from the start"
                )
            state = {
                (table, record.id): record
                for (topic, table), part in store.parts.items()
                if table in wanted and (topics is None or topic in topics)
                for record in part.values()
            }
            start = bisect.bisect_right(store.history, revision, key=lambda c: c.revision)
            for change in reversed(store.history[start:]):
                if change.table in wanted and (topics is None or change.topic in topics):
                    if change.old is None:
                        state.pop((change.table, change.id), None)
                    else:
                        state[(change.table, change.id)] = change.old
        keys = heapq.nsmallest(limit + 1, (k for k in state if last is None or (k[0], str(k[1])) > last),
                               key=lambda k: (k[0], str(k[1])))  # fmt: skip
        page = keys[:limit]
        more = len(keys) > limit
        token = page_token.encode(revision, (page[-1][0], str(page[-1][1]))) if more else None
        return Snapshot([state[k] for k in page], revision, token)

    def referrers(self, table: str, id: uuid.UUID) -> list[RefKey]:
        with self.store.cond:
            return sorted(self.store.referrers.get((table, id), ()))

    def watch(self, tables: Sequence[str], topics: Collection[str | None] | None, since: int) -> RecordStream:
        if since < 0:
            raise errors.ValidationError(f"a revision is >= 0, not {since}")
        return _MemoryStream(self.store, frozenset(tables), None if topics is None else frozenset(topics), since)

    def current_revision(self) -> int:
        return self.store.revision

    def lock(self, name: str, ttl: float, timeout: float | None) -> AbstractContextManager[LockHandle]:
        return hold_lease(self, name, ttl, timeout)

    def allocate_id(self, name: str) -> int:
        with self.store.cond:
            value = self.store.counters.get(name, 0) + 1
            self.store.counters[name] = value
            return value

    def compact_history(self) -> None:
        store = self.store
        with store.cond:
            store.compacted = store.revision
            store.history.clear()

    def write_raw(self, table: str, id: uuid.UUID, topic: str | None, data: bytes) -> None:
        store = self.store
        with store.cond:
            old = store.records.get((table, id))
            put = Put(table, id, topic, data, 0 if old is None else old.version, store.refs.get((table, id), _NO_REFS))
            store.apply([put], [1 if old is None else old.version + 1])

    def close(self) -> None:
        """Release this backend's hold on a named store (the data goes with the last one)."""
        if self._shared is not None:
            self._finalizer()

    # ---------------------------------------------------------------- leases (nbdb.families.lease)

    def acquire_lease(self, name: str, token: bytes, ttl: float) -> bool:
        """Take the lease for ``token`` unless another live holder has it."""
        with self.store.cond:
            return self.store.leases.acquire(name, token, ttl)

    def renew_lease(self, name: str, token: bytes, ttl: float) -> bool:
        """Extend the lease if ``token`` still holds it."""
        with self.store.cond:
            return self.store.leases.renew(name, token, ttl)

    def release_lease(self, name: str, token: bytes) -> None:
        """Drop the lease if ``token`` still holds it."""
        with self.store.cond:
            self.store.leases.release(name, token)
