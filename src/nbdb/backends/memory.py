"""The embedded default: a thread-safe in-process key-value store.

``memory://`` gives a private store; ``memory://NAME`` a store shared by every
``connect()`` of that name in the process. ``?history=N`` bounds the change
history (default 10,000 changes) so that a watcher that falls further behind
gets HistoryGoneError and a cache re-lists, as on any server backend.
"""

from __future__ import annotations

import bisect
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

from nbdb import errors
from nbdb.capabilities import Atomicity, Capabilities, Durability
from nbdb.families.kv import (
    CommitToken,
    Condition,
    Exists,
    KeyChange,
    KeyStream,
    KeyValue,
    KeyValueBackend,
    PrefixUnchangedSince,
    VersionIs,
)
from nbdb.options import Options
from nbdb.pool import Lease, SharedResources

__all__ = ["MemoryBackend", "MemoryStore"]

DEFAULT_HISTORY = 10_000


@dataclass(slots=True)
class _Entry:
    value: bytes
    version: int
    mod_revision: int


class MemoryStore:
    """The data of one in-memory database: keys, revision, bounded history, leases."""

    def __init__(self, history: int = DEFAULT_HISTORY) -> None:
        if history < 1:
            raise errors.ValidationError("memory:// history must be at least 1")
        self.history_limit = history
        self.cond = threading.Condition(threading.Lock())
        self.data: dict[str, _Entry] = {}
        self.sorted_keys: list[str] = []
        self.revision = 0
        self.compacted = 0
        self.history: list[KeyChange] = []
        self.leases: dict[str, tuple[bytes, float]] = {}

    def range(self, prefix: str) -> list[tuple[str, _Entry]]:
        """Keys under ``prefix``, in order. Caller holds ``cond``."""
        keys = self.sorted_keys
        start = bisect.bisect_left(keys, prefix)
        end = bisect.bisect_left(keys, prefix + "\U0010ffff")
        return [(k, self.data[k]) for k in keys[start:end]]

    def holds(self, condition: Condition) -> bool:
        """Whether ``condition`` holds now. Caller holds ``cond``."""
        if isinstance(condition, VersionIs):
            entry = self.data.get(condition.key)
            return (0 if entry is None else entry.version) == condition.version
        if isinstance(condition, Exists):
            return condition.key in self.data
        if isinstance(condition, PrefixUnchangedSince):
            return all(e.mod_revision <= condition.revision for _, e in self.range(condition.prefix))
        raise TypeError(f"unknown condition {condition!r}")

    def apply(self, puts: Mapping[str, bytes], deletes: Sequence[str]) -> int:
        """Write one commit. Caller holds ``cond``."""
        self.revision += 1
        rev = self.revision
        for key, value in puts.items():
            old = self.data.get(key)
            if old is None:
                bisect.insort(self.sorted_keys, key)
                entry = _Entry(value, 1, rev)
                self.data[key] = entry
                self.history.append(KeyChange(key, value, 1, None, 0, rev))
            else:
                self.data[key] = _Entry(value, old.version + 1, rev)
                self.history.append(KeyChange(key, value, old.version + 1, old.value, old.version, rev))
        for key in deletes:
            old = self.data.pop(key, None)
            if old is None:
                continue
            del self.sorted_keys[bisect.bisect_left(self.sorted_keys, key)]
            self.history.append(KeyChange(key, None, 0, old.value, old.version, rev))
        excess = len(self.history) - self.history_limit
        if excess > 0:
            # Trim in chunks so trimming stays amortised O(1) per change.
            cut = max(excess, self.history_limit // 4)
            cut = min(cut, len(self.history))
            self.compacted = self.history[cut - 1].revision
            del self.history[:cut]
        self.cond.notify_all()
        return rev


class _MemoryKeyStream(KeyStream):
    def __init__(self, store: MemoryStore, prefixes: Sequence[str], since: int) -> None:
        self._store = store
        self._prefixes = tuple(prefixes)
        self._revision = since
        self._closed = False

    def poll(self, timeout: float | None) -> list[KeyChange]:
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
            out = [c for c in history[start:] if c.key.startswith(self._prefixes)]
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


class MemoryBackend(KeyValueBackend):
    """Key-value backend over a :class:`MemoryStore` in this process."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        transactions=Atomicity.ATOMIC,
        linearizable_reads=True,
        server_side_topic_filter=True,
        durability=Durability.VOLATILE,
        history="the last 10,000 changes (memory://?history=N)",
        cross_process=False,
        notes="In-process only: data, locks and ids are shared by the Database objects of one process "
        "that connect to the same memory://NAME.",
    )

    def __init__(self, store: MemoryStore | None = None, shared: Lease[str, MemoryStore] | None = None) -> None:
        super().__init__()
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

    def get_key(self, key: str) -> KeyValue | None:
        with self.store.cond:
            entry = self.store.data.get(key)
            return None if entry is None else KeyValue(key, entry.value, entry.version, entry.mod_revision)

    def range_keys(self, prefixes: Sequence[str]) -> tuple[list[KeyValue], int]:
        with self.store.cond:
            out = [KeyValue(k, e.value, e.version, e.mod_revision) for p in prefixes for k, e in self.store.range(p)]
            return out, self.store.revision

    def commit_keys(
        self,
        conditions: Sequence[Condition],
        puts: Mapping[str, bytes],
        deletes: Sequence[str],
        token: CommitToken | None = None,
    ) -> int | None:
        with self.store.cond:
            if not all(self.store.holds(c) for c in conditions):
                return None
            return self.store.apply(puts, deletes)

    def watch_keys(self, prefixes: Sequence[str], since: int) -> KeyStream:
        return _MemoryKeyStream(self.store, prefixes, since)

    def revision_now(self) -> int:
        with self.store.cond:
            return self.store.revision

    def compact_keys(self, revision: int) -> None:
        with self.store.cond:
            history = self.store.history
            cut = bisect.bisect_right(history, revision, key=lambda c: c.revision)
            if cut:
                self.store.compacted = max(self.store.compacted, history[cut - 1].revision)
                del history[:cut]
            self.store.compacted = max(self.store.compacted, revision)

    def acquire_lease(self, name: str, token: bytes, ttl: float) -> bool:
        now = time.monotonic()
        with self.store.cond:
            held = self.store.leases.get(name)
            if held is not None and held[1] > now and held[0] != token:
                return False
            self.store.leases[name] = (token, now + ttl)
            return True

    def renew_lease(self, name: str, token: bytes, ttl: float) -> bool:
        now = time.monotonic()
        with self.store.cond:
            held = self.store.leases.get(name)
            if held is None or held[0] != token or held[1] <= now:
                return False
            self.store.leases[name] = (token, now + ttl)
            return True

    def release_lease(self, name: str, token: bytes) -> None:
        with self.store.cond:
            held = self.store.leases.get(name)
            if held is not None and held[0] == token:
                del self.store.leases[name]

    def close(self) -> None:
        """Release this backend's hold on a named store (the data goes with the last one)."""
        if self._shared is not None:
            self._finalizer()
