"""``WideColumnBackend``: the :class:`nbdb.spi.Backend` of every wide-column store, over its primitives.

A backend of the family hands a :class:`WideColumnStore` to this class and
declares its capabilities; every rule lives here and in the modules it
wires together:

===================  ==========================================================
``layout``           the tables and statements
``partitions``       typed reads of objects, ``last_rev`` and seals
``planner``          a transaction -> one conditional batch (pure)
``commit``           reads, revision, batch, settling a lost reply
``references``       references across partitions
``sequencer``        dense revisions, group commit, the commit index
``stream``           the change stream (watch)
``snapshot``         list() at one exact revision
``lease``            locks
``fences``           fenced commits (writes that land only under a held lock)
``unique``           unique values (claims across partitions)
``expiry``           objects that expire, and the reaper's pass
``pages``            list() in pages at one revision
``counters``         allocate_id
===================  ==========================================================
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import ClassVar

from nbdb import errors
from nbdb.families import rules
from nbdb.families.lease import hold_lease
from nbdb.families.widecolumn import counters, pages, snapshot
from nbdb.families.widecolumn import layout as L
from nbdb.families.widecolumn.commit import Committer
from nbdb.families.widecolumn.expiry import Expiry
from nbdb.families.widecolumn.fences import Fences
from nbdb.families.widecolumn.lease import LeaseRows
from nbdb.families.widecolumn.options import WideColumnOptions, tries
from nbdb.families.widecolumn.partitions import Partitions
from nbdb.families.widecolumn.planner import WRITTEN, Change, Plan
from nbdb.families.widecolumn.primitives import WideColumnStore
from nbdb.families.widecolumn.references import ReferenceProtocol
from nbdb.families.widecolumn.sequencer import RevisionSequencer
from nbdb.families.widecolumn.sharing import NamespaceState
from nbdb.families.widecolumn.stream import ChangeStream
from nbdb.families.widecolumn.unique import UniqueClaims
from nbdb.spi import Backend, CommitResult, LockHandle, Record, RecordStream, RefKey, Snapshot, UniqueKey, WriteOp

__all__ = ["WideColumnBackend"]


class WideColumnBackend(Backend):
    """Base of wide-column backends: give it a store; subclasses add ``from_url`` and ``capabilities``.

    ``shared``: what this backend shares with the other backends of the process
    on the same namespace (their watchers wake on each other's commits, their
    commits take revisions together); a backend of its own if None.
    """

    reap_batch: ClassVar[int] = 100
    """The most expired objects one :meth:`reap` pass deletes."""

    def __init__(
        self, store: WideColumnStore, options: WideColumnOptions, shared: NamespaceState | None = None
    ) -> None:
        self.store = store
        self.options = options
        self._closed = False
        store.create_tables(L.TABLES)
        self._shared = shared = shared or NamespaceState()
        self.partitions = Partitions(store, options.namespace or rules.NO_TOPIC, options)
        self.sequencer = RevisionSequencer(store, self.partitions, options, shared.queue)
        self.references = ReferenceProtocol(self.partitions, self.sequencer)
        fences = Fences(self.partitions)
        self._leases = LeaseRows(self.partitions, fences)
        self.claims = UniqueClaims(self.partitions, options)
        self.committer = Committer(
            self.partitions, self.sequencer, self.references, options, shared, self.claims, fences
        )
        self.expiry = Expiry(self.partitions, options, lambda ops, guards: self.committer.commit(ops, guards=guards))

    # ---------------------------------------------------------------- reads

    def read(self, table: str, id: uuid.UUID) -> Record | None:
        self._check_open()
        part = self.partitions.cached_partition((table, id))
        if part is not None:
            record = self.partitions.record(part, table, id)
            if record is not None:
                return record
        found = self.partitions.locate(table, id)
        return None if found is None else found[1]

    def referrers(self, table: str, id: uuid.UUID) -> list[RefKey]:
        self._check_open()
        return self.references.referrers(table, id)

    def scan(self, tables: Sequence[str], topics: Collection[str | None] | None) -> Snapshot:
        self._check_open()
        return snapshot.scan(self.partitions, self.sequencer, tables, topics)

    def scan_page(
        self, tables: Sequence[str], topics: Collection[str | None] | None, limit: int, after: str | None
    ) -> Snapshot:
        self._check_open()
        return pages.scan_page(self.partitions, self.sequencer, list(tables), topics, limit, after)

    def unique_owner(self, table: str, key: UniqueKey) -> uuid.UUID | None:
        self._check_open()
        return self.claims.owner(table, key)

    def ttls(self, tables: Sequence[str]) -> dict[RefKey, float]:
        self._check_open()
        return self.expiry.ttls(tables)

    def current_revision(self) -> int:
        self._check_open()
        return self.sequencer.current()

    def watch(self, tables: Sequence[str], topics: Collection[str | None] | None, since: int) -> RecordStream:
        self._check_open()
        parts = None if topics is None else frozenset(rules.topic_part(t) for t in topics)
        return ChangeStream(
            self.partitions, self.sequencer, self.options, self._shared, frozenset(tables), parts, since
        )

    # ---------------------------------------------------------------- writes

    def commit(self, ops: Sequence[WriteOp]) -> CommitResult:
        self._check_open()
        return self.committer.commit(ops)

    def commit_fenced(self, ops: Sequence[WriteOp], fence: LockHandle) -> CommitResult:
        self._check_open()
        return self.committer.commit(ops, fence)

    def refresh(self, table: str, id: uuid.UUID, ttl: float) -> None:
        self._check_open()
        self.expiry.refresh(table, id, ttl)

    def reap(self) -> int:
        """Delete objects whose ttl ran out (one pass, at most :attr:`reap_batch`); how many it deleted."""
        self._check_open()
        return self.expiry.reap(self.reap_batch)

    @contextmanager
    def lock(
        self, name: str, ttl: float, timeout: float | None, closed: threading.Event | None = None
    ) -> Iterator[LockHandle]:
        self._check_open()
        with hold_lease(self._leases, name, ttl, timeout, closed) as handle:
            yield handle

    # The lease primitives lock() holds its leases with (:class:`nbdb.families.lease.LeaseStore`), public as a
    # key-value backend's are: the conformance kit takes a lease away behind its handle with them, to see the
    # store refuse a fenced commit of the holder that lost it.

    def acquire_lease(self, name: str, token: bytes, ttl: float) -> bool:
        """Take lock ``name``'s lease for ``token`` if free (earlier holders' fenced commits sealed out)."""
        self._check_open()
        return self._leases.acquire_lease(name, token, ttl)

    def renew_lease(self, name: str, token: bytes, ttl: float) -> bool:
        """Extend lock ``name``'s lease if ``token`` still holds it."""
        self._check_open()
        return self._leases.renew_lease(name, token, ttl)

    def release_lease(self, name: str, token: bytes) -> None:
        """Drop lock ``name``'s lease if ``token`` still holds it."""
        self._check_open()
        self._leases.release_lease(name, token)

    def allocate_id(self, name: str) -> int:
        self._check_open()
        return counters.allocate_id(self.partitions, name, self.options.contention)

    # ---------------------------------------------------------------- test hooks and lifecycle

    def compact_history(self) -> None:
        self._check_open()
        self._shared.recent.forget_through(self.sequencer.compact())

    def write_raw(self, table: str, id: uuid.UUID, topic: str | None, data: bytes) -> None:
        self._check_open()
        p = self.partitions
        part = rules.topic_part(topic)
        self.committer.register(part)
        for _ in tries(self.options.commit):
            current = p.record(part, table, id)
            old_version = 0 if current is None else current.version
            # Another writer's write is a commit at a revision of its own, as any: its row names that
            # revision (wrev), which its copies (read, listed, watched) carry and its next write compares.
            raw = Plan(part)
            raw.stamp(L.W_RAW, (p.ns, part, L.OBJECT, 0, table, id, data, old_version + 1, id, WRITTEN))
            old_data, old_written = (None, None) if current is None else (current.data, current.written)
            raw.changes.append(Change(table, id, data, old_version + 1, old_data, old_version, old_written))
            if self.committer.send(part, self.sequencer.allocate(part, frozenset([table])), raw):
                p.remember((table, id), part)
                return
        raise errors.ConflictError("raw write kept conflicting")

    @property
    def before_commit(self) -> Callable[[int], None] | None:
        """Test hook: called with a commit's revision between its allocation and its batch."""
        return self.committer.before_commit

    @before_commit.setter
    def before_commit(self, hook: Callable[[int], None] | None) -> None:
        self.committer.before_commit = hook

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.claims.close()
        finally:
            self.store.close()

    def _check_open(self) -> None:
        if self._closed:
            raise errors.BackendUnavailableError("the backend is closed")
