"""An in-process key-value store: the family's primitives in their smallest form.

The key-value family's logic (planning, races, commit tokens) is tested on it
without a server: it is a real store with real conditions, history and
leases, small enough that a test can step between a plan and its commit.
(``memory://`` itself keeps objects, not keys: see nbdb.backends.memory.)
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Mapping, Sequence
from typing import ClassVar

from nbdb import errors
from nbdb.capabilities import Atomicity, Capabilities, Durability, Expiry
from nbdb.families.history import changes_after, trim_history
from nbdb.families.kv import (
    CommitToken,
    Condition,
    KeyChange,
    KeyCommit,
    KeyStream,
    KeyValue,
    KeyValueBackend,
)
from nbdb.families.kvgroup import CommitGroup, Outcome, SnapshotGroup
from nbdb.families.kvstore import condition_holds, key_changes
from nbdb.families.lease import LeaseTable

__all__ = ["KVMemoryBackend", "MemoryStore"]

DEFAULT_HISTORY = 10_000


class MemoryStore:
    """The data of one in-memory database: keys, revision, bounded history, leases."""

    def __init__(self, history: int = DEFAULT_HISTORY) -> None:
        if history < 1:
            raise errors.ValidationError("memory:// history must be at least 1")
        self.history_limit = history
        self.cond = threading.Condition(threading.Lock())
        self.data: dict[str, KeyValue] = {}
        self.sorted_keys: list[str] = []
        self.revision = 0
        self.compacted = 0
        self.history: list[KeyChange] = []
        self.leases = LeaseTable()

    def range(self, prefix: str) -> list[tuple[str, KeyValue]]:
        """Keys under ``prefix``, in order. Caller holds ``cond``."""
        keys = self.sorted_keys
        start = bisect.bisect_left(keys, prefix)
        end = bisect.bisect_left(keys, prefix + "\U0010ffff")
        return [(k, self.data[k]) for k in keys[start:end]]

    def holds(self, condition: Condition) -> bool:
        """Whether ``condition`` holds now. Caller holds ``cond``."""
        return condition_holds(condition, self.data, self._changed_under, self._lease_holds)

    def _lease_holds(self, name: str, token: bytes) -> bool:
        return self.leases.holds(name, token)

    def _changed_under(self, prefix: str, revision: int) -> bool:
        return any(kv.mod_revision > revision for _, kv in self.range(prefix))

    def apply(self, puts: Mapping[str, bytes], deletes: Sequence[str]) -> int:
        """Write one commit. Caller holds ``cond``."""
        return self.apply_many([(puts, deletes)])

    def apply_many(self, commits: Sequence[tuple[Mapping[str, bytes], Sequence[str]]]) -> int:
        """Write commits that touch disjoint keys at one revision (a group). Caller holds ``cond``."""
        self.revision += 1
        rev = self.revision
        changes = [change for puts, deletes in commits for change in key_changes(self.data, puts, deletes, rev)]
        for change in changes:
            key = change.key
            if change.value is None:
                del self.data[key]
                del self.sorted_keys[bisect.bisect_left(self.sorted_keys, key)]
            else:
                if change.prev_value is None:
                    bisect.insort(self.sorted_keys, key)
                self.data[key] = KeyValue(key, change.value, change.version, rev)
            self.history.append(change)
        compacted = trim_history(self.history, self.history_limit)
        if compacted is not None:
            self.compacted = compacted
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
            changes = changes_after(store.history, self._revision, store.compacted)
            out = [c for c in changes if c.key.startswith(self._prefixes)]
            self._revision = store.revision
            return out

    @property
    def revision(self) -> int:
        return self._revision

    def close(self) -> None:
        with self._store.cond:
            self._closed = True
            self._store.cond.notify_all()


class KVMemoryBackend(KeyValueBackend):
    """Key-value backend over a :class:`MemoryStore` in this process."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        transactions=Atomicity.ATOMIC,
        linearizable_reads=True,
        server_side_topic_filter=True,
        durability=Durability.VOLATILE,
        history="the last 10,000 key changes",
        cross_process=False,
        unique=True,
        fencing=True,
        expiry=Expiry.REAPER,
    )

    def __init__(self, store: MemoryStore | None = None, group_commit: int = 1) -> None:
        super().__init__()
        self.store = store if store is not None else MemoryStore()
        self.group_commit = group_commit

    def get_key(self, key: str) -> KeyValue | None:
        with self.store.cond:
            entry = self.store.data.get(key)
            return entry

    def range_keys(self, prefixes: Sequence[str]) -> tuple[list[KeyValue], int]:
        with self.store.cond:
            out = [kv for p in prefixes for _, kv in self.store.range(p)]
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

    def commit_group(self, commits: Sequence[KeyCommit]) -> list[Outcome]:
        """Like one etcd transaction of nested ones: every condition checked first, the rest at one revision."""
        sent = [c.with_token_key() if self.commit_tokens else c for c in commits]
        with self.store.cond:
            holds = [all(self.store.holds(cond) for cond in c.conditions) for c in sent]
            applied = [(c.puts, c.deletes) for c, ok in zip(sent, holds, strict=True) if ok]
            revision = self.store.apply_many(applied) if applied else None
        return [revision if ok else None for ok in holds]

    def new_commit_group(self) -> CommitGroup[KeyCommit]:
        return SnapshotGroup(self.group_commit, self.layout.lock, lambda c: (0, 0), None, None)

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
        with self.store.cond:
            return self.store.leases.acquire(name, token, ttl)

    def renew_lease(self, name: str, token: bytes, ttl: float) -> bool:
        with self.store.cond:
            return self.store.leases.renew(name, token, ttl)

    def release_lease(self, name: str, token: bytes) -> None:
        with self.store.cond:
            self.store.leases.release(name, token)

    def lease_held(self, name: str, token: bytes) -> bool:
        with self.store.cond:
            return self.store._lease_holds(name, token)

    def close(self) -> None:
        """Nothing to release."""
