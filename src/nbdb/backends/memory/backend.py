"""The ``memory://`` backend: the SPI over a :class:`~nbdb.backends.memory.store.MemoryStore`."""

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
from nbdb.backends.memory.store import DEFAULT_HISTORY, MemoryStore, unique_slot
from nbdb.capabilities import Atomicity, Capabilities, Durability, Expiry
from nbdb.families import rules
from nbdb.families.history import changes_after
from nbdb.families.lease import hold_lease
from nbdb.options import Options
from nbdb.pool import Lease, SharedResources
from nbdb.spi import (
    Backend,
    CommitResult,
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

__all__ = ["MemoryBackend"]

_NO_REFS: frozenset[RefKey] = frozenset()


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
        with store.lock:
            while not self._closed and store.revision <= self._revision:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return []
                store.wait(remaining)
            if self._closed:
                return []
            tables, topics = self._tables, self._topics
            out = [
                c
                for c in changes_after(store.history, self._revision, store.compacted)
                if c.table in tables and (topics is None or c.topic in topics)
            ]
            self._revision = store.revision
            return out

    @property
    def revision(self) -> int:
        return self._revision

    def close(self) -> None:
        with self._store.lock:
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
        cas_across_recreate=True,
        notes="In-process only: data, locks and ids are shared by the Database objects of one process "
        "that connect to the same memory://NAME. Reads share the object each write validated.",
    )

    keeps_values: ClassVar[bool] = True

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

    @property
    def store_token(self) -> int:
        return self.store.token

    def read(self, table: str, id: uuid.UUID) -> Record | None:
        return self.store.records.get((table, id.int))

    def scan(self, tables: Sequence[str], topics: Collection[str | None] | None) -> Snapshot:
        store = self.store
        wanted = frozenset(tables)
        with store.lock:
            records = [
                record
                for (topic, table), part in store.parts.items()
                if table in wanted and (topics is None or topic in topics)
                for record in part.values()
            ]
            return Snapshot(records, store.revision)

    def commit(self, ops: Sequence[WriteOp]) -> CommitResult:
        store = self.store
        with store.lock:
            return store.commit(ops)

    def commit_fenced(self, ops: Sequence[WriteOp], fence: LockHandle) -> CommitResult:
        store = self.store
        with store.lock:
            if not store.leases.holds(fence.name, fence.token.encode()):
                raise rules.lock_lost(fence.name)
            return store.commit(ops)

    def refresh(self, table: str, id: uuid.UUID, ttl: float) -> None:
        store = self.store
        with store.lock:
            if (table, id.int) not in store.records:
                raise rules.not_found((table, id), "expired or deleted")
            if (table, id) not in store.expiry:
                raise rules.no_ttl((table, id))
            store.expiry[(table, id)] = (ttl, time.monotonic() + ttl)

    def ttls(self, tables: Sequence[str]) -> dict[RefKey, float]:
        wanted = frozenset(tables)
        with self.store.lock:
            return {key: ttl for key, (ttl, _) in self.store.expiry.items() if key[0] in wanted}

    def unique_owner(self, table: str, key: UniqueKey) -> uuid.UUID | None:
        return self.store.uniques.get(unique_slot(table, key))

    def scan_page(
        self, tables: Sequence[str], topics: Collection[str | None] | None, limit: int, after: str | None
    ) -> Snapshot:
        """A page in (table, id) order, as the store was at the first page's revision (rewound through history)."""
        revision, last = page_token.decode(after)
        store = self.store
        wanted = frozenset(tables)
        with store.lock:
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
        with self.store.lock:
            return self.store.referrers_of((table, id.int))

    def watch(self, tables: Sequence[str], topics: Collection[str | None] | None, since: int) -> RecordStream:
        if since < 0:
            raise errors.ValidationError(f"a revision is >= 0, not {since}")
        return _MemoryStream(self.store, frozenset(tables), None if topics is None else frozenset(topics), since)

    def current_revision(self) -> int:
        return self.store.revision

    def lock(
        self, name: str, ttl: float, timeout: float | None, closed: threading.Event | None = None
    ) -> AbstractContextManager[LockHandle]:
        return hold_lease(self, name, ttl, timeout, closed)

    def allocate_id(self, name: str) -> int:
        with self.store.lock:
            value = self.store.counters.get(name, 0) + 1
            self.store.counters[name] = value
            return value

    def compact_history(self) -> None:
        store = self.store
        with store.lock:
            store.compacted = store.revision
            store.history.clear()

    def write_raw(self, table: str, id: uuid.UUID, topic: str | None, data: bytes) -> None:
        store = self.store
        with store.lock:
            key = (table, id.int)
            old = store.records.get(key)
            put = Put(table, id, topic, data, 0 if old is None else old.version, store.refs.get(key, _NO_REFS))
            store.apply([put], [1 if old is None else old.version + 1])

    def close(self) -> None:
        """Release this backend's hold on a named store (the data goes with the last one)."""
        if self._shared is not None:
            self._finalizer()

    # ---------------------------------------------------------------- leases (nbdb.families.lease)

    def acquire_lease(self, name: str, token: bytes, ttl: float) -> bool:
        """Take the lease for ``token`` unless another live holder has it."""
        with self.store.lock:
            return self.store.leases.acquire(name, token, ttl)

    def renew_lease(self, name: str, token: bytes, ttl: float) -> bool:
        """Extend the lease if ``token`` still holds it."""
        with self.store.lock:
            return self.store.leases.renew(name, token, ttl)

    def release_lease(self, name: str, token: bytes) -> None:
        """Drop the lease if ``token`` still holds it."""
        with self.store.lock:
            self.store.leases.release(name, token)
