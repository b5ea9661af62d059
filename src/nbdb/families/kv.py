"""The key-value family: objects, versions, references, topics, locks and ids on a KV store.

A backend of this family supplies a handful of primitives — get, range by
prefix at one revision, an atomic conditional commit of several keys, a watch
from a revision, and TTL'd lease keys — and everything else is built here once
(the key layout and the commit planner live in :mod:`nbdb.families.kvplan`).

Exactly-once commits. A store reached over a network can lose the reply to a
commit that it applied. A backend that can (``commit_tokens = True``) gets a
fresh :class:`CommitToken` with every commit: the family adds the condition
"the token key is absent" and writes the token key as part of the same atomic
commit, so one token applies at most once however often its request is sent.
When the backend cannot tell whether a request landed, it raises
:class:`nbdb.CommitUnknownError` and the family *settles* the token: it voids
it atomically if it is still absent (the lost request can then never apply,
and the commit is planned again) or finds it applied (and returns that
commit's revision). A commit is therefore never applied twice and never
reported as a conflict because of its own earlier attempt; only if the store
stays unreachable for the whole retry policy does the caller see
CommitUnknownError. Token keys live under ``t/`` with a TTL long enough to
outlive any retry.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
import time
import uuid
from abc import abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar

from nbdb import errors, page_token
from nbdb.families import kvexpiry, rules
from nbdb.families.kvgroup import CommitGroup, GroupCommitter, Outcome, PipelinedGroup
from nbdb.families.kvplan import (
    TOPIC_PROBES,
    Claims,
    Index,
    KeyLayout,
    Plan,
    check_claim_held,
    diagnose,
    plan_commit,
    vet_released,
    wildcard_split,
)
from nbdb.families.kvtypes import (
    APPLIED,
    VOID,
    CommitToken,
    Condition,
    Exists,
    KeyChange,
    KeyCommit,
    KeyStream,
    KeyValue,
    LeaseHeld,
    PrefixUnchangedSince,
    ValueIs,
    VersionIs,
    WrittenAt,
    applied_at,
    write_count,
)
from nbdb.families.lease import hold_lease
from nbdb.retry import RetryPolicy
from nbdb.spi import (
    Backend,
    CommitResult,
    LockHandle,
    Record,
    RecordChange,
    RecordStream,
    RefKey,
    Snapshot,
    UniqueKey,
    WriteOp,
)

__all__ = [
    "APPLIED",
    "VOID",
    "CommitToken",
    "Condition",
    "Exists",
    "KeyChange",
    "KeyCommit",
    "KeyStream",
    "KeyValue",
    "KeyValueBackend",
    "LeaseHeld",
    "PrefixUnchangedSince",
    "ValueIs",
    "VersionIs",
    "WrittenAt",
]

log = logging.getLogger(__name__)

_COMMIT_ATTEMPTS = 8


class _RecordStream(RecordStream):
    """Turns a KeyStream of object keys into RecordChanges of the wanted tables."""

    def __init__(self, layout: KeyLayout, keys: KeyStream, tables: frozenset[str], written: bool = False) -> None:
        self._layout = layout
        self._keys = keys
        self._tables = tables
        self._written = written
        """Whether a new record carries the revision that wrote it (see KeyValueBackend.records_written)."""

    def poll(self, timeout: float | None) -> list[RecordChange]:
        return self._records(self._keys.poll(timeout))

    def deliver_to(self, sink: Callable[[list[RecordChange], int], None]) -> bool:
        return self._keys.deliver_to(lambda changes, revision: sink(self._records(changes), revision))

    def _records(self, changes: list[KeyChange]) -> list[RecordChange]:
        out: list[RecordChange] = []
        for change in changes:
            parsed = self._layout.parse_object(change.key)
            if parsed is None or parsed[1] not in self._tables:
                continue
            topic, table, id = parsed
            old = (
                None if change.prev_value is None else Record(table, id, topic, change.prev_version, change.prev_value)
            )
            new = (
                None
                if change.value is None
                else Record(
                    table, id, topic, change.version, change.value, None, change.revision if self._written else None
                )
            )
            if old is not None or new is not None:
                out.append(RecordChange(table, id, topic, old, new, change.revision))
        return out

    @property
    def revision(self) -> int:
        return self._keys.revision

    def reach(self, revision: int) -> None:
        self._keys.reach(revision)

    def close(self) -> None:
        self._keys.close()


class KeyValueBackend(Backend):
    """Base of key-value backends: subclass it and implement the ``*_keys`` and lease primitives."""

    whole_point_reads: ClassVar[bool] = True
    """True if a read of one key never sees a commit half applied (an index written, its object not yet).

    Then an index that names a place holding no object is damage (see
    :meth:`_unplaced`); a store whose commits land key by key for point reads
    (Hazelcast: whole only under its commit lock) reads such an object as absent.
    """
    commit_tokens: ClassVar[bool] = False
    """True for stores that can lose the reply to a commit (every networked one)."""
    token_ttl: ClassVar[float] = 600.0
    """Seconds a commit token is kept: it must outlive every retry of its commit."""
    MISSING: ClassVar[Any] = object()
    """What :meth:`topic_of` returns for an object that does not exist."""
    reap_batch: ClassVar[int] = 100
    """The most expired objects one :meth:`reap` pass deletes."""
    topic_wildcard: ClassVar[bool] = False
    """True if :meth:`range_keys` and :meth:`range_rows` take ``o/*/<table>/`` prefixes (see :data:`kvplan.ANY_TOPIC`).

    Then a scan of a few tables with no topic filter reads those tables' keys under each topic
    present at its revision, not every object key (issue 13)."""
    group_commit: int = 1
    """The most commits of concurrent threads one request may carry (see :mod:`nbdb.families.kvgroup`).

    1 sends every commit alone. A backend that implements :meth:`commit_group`
    raises it (per instance, from its URL)."""

    records_written: bool = False

    def __init__(self, key_prefix: str = "", retry: RetryPolicy | None = None) -> None:
        self.key_prefix = key_prefix
        self.layout = KeyLayout(key_prefix)
        self.records_written = self.capabilities.cas_across_recreate
        """Whether records carry the revision that wrote them (:attr:`nbdb.spi.Record.written`): a key's
        mod revision, which the store's ``WrittenAt`` condition compares (``capabilities.cas_across_recreate``)."""
        self.retry = retry if retry is not None else RetryPolicy()
        # id -> (topic, ttl) is immutable for an object's life, so it caches well
        # and saves get() a round trip; a miss or a stale entry falls back to i/.
        # Keyed by the id's integer: hashed in C (UUID.__hash__ is Python, twice per write).
        self._topic_cache: dict[tuple[str, int], tuple[str | None, float | None]] = {}
        self.reap_warned: dict[str, float] = {}
        """When the reaper last warned of each expiry key it cannot reap (:func:`kvexpiry.reap`)."""
        self._committer = GroupCommitter(
            self._commit_alone, self.commit_group, self.new_commit_group, prepare=self.prepare_grouped
        )
        self._token_prefix = secrets.token_hex(10)
        self._token_count = itertools.count()  # next() on it is atomic under the GIL

    def _written(self, kv: KeyValue) -> int | None:
        """The revision that wrote ``kv`` as a record carries it (None: unknown, or not compared by this store)."""
        return (kv.mod_revision or None) if self.records_written else None

    # ---------------------------------------------------------------- primitives

    @abstractmethod
    def get_key(self, key: str) -> KeyValue | None:
        """The key, or None."""

    def get_keys(self, keys: Sequence[str]) -> list[KeyValue | None]:
        """Several keys (backends override this to batch the round trips)."""
        return [self.get_key(k) for k in keys]

    def whole_keys(self, keys: Sequence[str]) -> list[KeyValue | None]:
        """:meth:`get_keys`, each key read where no commit is half applied (for a diagnosis: error paths only).

        The default is :meth:`get_keys`, for stores whose point reads see whole commits
        (:attr:`whole_point_reads`); one whose commits land key by key (Hazelcast) reads them under its
        commit lock. A unique claim's holder is read this way: a claim may land before its holder's index.
        """
        return self.get_keys(keys)

    def whole_index(self, table: str, id: uuid.UUID) -> Index | None:
        """:meth:`index_record` read through :meth:`whole_keys` (nothing remembered)."""
        kv = self.whole_keys([self.layout.index(table, id)])[0]
        return None if kv is None else self.layout.decode_index(kv)

    @abstractmethod
    def range_keys(self, prefixes: Sequence[str]) -> tuple[list[KeyValue], int]:
        """Every key under any of ``prefixes``, all read at one revision, and that revision."""

    def range_rows(self, prefixes: Sequence[str]) -> tuple[Sequence[Sequence[Any]], int]:
        """:meth:`range_keys` for a scan: rows whose first three items are a key, its value and its version,
        and the fourth its mod revision where :attr:`records_written`.

        A backend whose client hands out such rows already (sqlite's) returns
        them as they are: a list or a cache's load reads nothing else of them.
        """
        return self.range_keys(prefixes)

    @abstractmethod
    def commit_keys(
        self,
        conditions: Sequence[Condition],
        puts: Mapping[str, bytes],
        deletes: Sequence[str],
        token: CommitToken | None = None,
    ) -> int | None:
        """If every condition holds, apply puts and deletes atomically and return the new revision; else None.

        None must mean "not applied, and never will be". When an attempt's
        outcome cannot be told, raise :class:`nbdb.CommitUnknownError` (the
        family settles ``token``). See :class:`CommitToken`.
        """

    def commit_group(self, commits: Sequence[KeyCommit]) -> list[Outcome]:
        """Send several independent commits in one request; each one's outcome, in order.

        Only called with commits a :meth:`new_commit_group` admitted, when
        :attr:`group_commit` is above 1. Each commit applies atomically by
        itself or not at all, as :meth:`commit_keys` (or
        :meth:`commit_with_token`) would apply it alone; its outcome is its
        revision, None (its conditions failed: never applies), or the error it
        ends with (:class:`nbdb.CommitUnknownError` when its own outcome cannot
        be told: the family settles its token). An error raised instead is
        every commit's outcome.
        """
        raise NotImplementedError(f"{type(self).__name__} does not send commits in groups")

    def prepare_grouped(self, commit: KeyCommit) -> KeyCommit:
        """``commit`` with what :meth:`commit_group` will send of it (``prepared``), made ahead.

        Called by the committing thread while another request is in flight, so
        that the next request leaves as soon as that one is back. The default
        prepares nothing.
        """
        return commit

    def new_commit_group(self) -> CommitGroup[KeyCommit]:
        """An empty group of the commits one request of :meth:`commit_group` may carry."""
        return PipelinedGroup(self.group_commit)

    @abstractmethod
    def watch_keys(self, prefixes: Sequence[str], since: int) -> KeyStream:
        """Changes under ``prefixes`` after revision ``since``, in revision order, with previous values."""

    @abstractmethod
    def revision_now(self) -> int:
        """The store's current revision."""

    def range_page(self, prefix: str, after: str | None, limit: int, revision: int) -> tuple[list[KeyValue], int]:
        """Keys under ``prefix`` after ``after`` (in key order, at most ``limit``) as they were at ``revision``.

        ``revision`` 0 means "now"; returns the keys and the revision read.
        Optional: stores that keep old revisions (etcd) offer it and declare
        ``capabilities.pages``; HistoryGoneError once ``revision`` is compacted.
        """
        raise errors.UnsupportedError(
            f"{type(self).__name__} cannot read keys as they were at a revision (it has no range_page, which "
            "a backend declaring capabilities.pages or topic_wildcard implements)"
        )

    page_reads = 1
    """How many prefixes of a page one :meth:`range_pages` reads together (1: one after another)."""

    def range_pages(
        self, reads: Sequence[tuple[str, str | None]], limit: int, revision: int
    ) -> tuple[list[list[KeyValue]], int]:
        """:meth:`range_page` of each ``(prefix, after)``, at most ``limit`` keys each, all at ``revision``.

        ``revision`` 0 means "now" (the first read's); returns the keys of each and the revision
        read. The default reads them one after another; a store that answers several ranges
        in one round trip (etcd: a read-only transaction) overrides it and :attr:`page_reads`.
        """
        out: list[list[KeyValue]] = []
        for prefix, after in reads:
            kvs, revision = self.range_page(prefix, after, limit, revision)
            out.append(kvs)
        return out, revision

    def compact_keys(self, revision: int) -> None:
        """Drop the change history up to ``revision`` (test hook; optional)."""
        raise errors.UnsupportedError(f"{type(self).__name__} cannot compact its history on demand")

    @abstractmethod
    def acquire_lease(self, name: str, token: bytes, ttl: float) -> bool:
        """Take the lease ``name`` for ``token`` if nobody holds it (idempotent: True if ``token`` holds it)."""

    @abstractmethod
    def renew_lease(self, name: str, token: bytes, ttl: float) -> bool:
        """Extend the lease if ``token`` still holds it; False if it does not."""

    @abstractmethod
    def release_lease(self, name: str, token: bytes) -> None:
        """Drop the lease if ``token`` still holds it."""

    # ---------------------------------------------------------------- what the planner reads

    def index_record(self, table: str, id: uuid.UUID) -> Index | None:
        """The object's index record, read from the store; None if the object does not exist."""
        kv = self.get_key(self.layout.index(table, id))
        if kv is None:
            self.forget(table, id)
            return None
        index = self.layout.decode_index(kv)
        self._remember(table, id, index.topic, index.ttl)
        return index

    def target_index(self, table: str, id: uuid.UUID) -> Index | None:
        """Where a referenced object lives and whether it expires (cached); None if it does not exist."""
        cached = self._topic_cache.get((table, id.int))
        if cached is not None:
            return Index(cached[0], frozenset(), (), cached[1])
        return self.index_record(table, id)

    def known_index(
        self, table: str, id: uuid.UUID, refs: frozenset[RefKey], unique: tuple[UniqueKey, ...]
    ) -> Index | None:
        """The index as a caller that holds the stored copy knows it, if the topic is cached (else None)."""
        cached = self._topic_cache.get((table, id.int))
        return None if cached is None else Index(cached[0], refs, unique, cached[1])

    def topic_of(self, table: str, id: uuid.UUID) -> Any:
        """The object's topic (cached), or :attr:`MISSING` if the object does not exist."""
        cached = self._topic_cache.get((table, id.int))
        if cached is not None:
            return cached[0]
        found = self.index_record(table, id)
        return self.MISSING if found is None else found.topic

    def referrers_at(self, table: str, id: uuid.UUID) -> tuple[list[RefKey], int]:
        """Every object that references ``table``/``id``, and the revision it was read at."""
        target = (table, id)
        kvs, revision = self.range_keys([self.layout.referrers(target)])
        return [self.layout.parse_referrer(target, kv.key) for kv in kvs], revision

    def _remember(self, table: str, id: uuid.UUID, topic: str | None, ttl: float | None) -> None:
        if len(self._topic_cache) > 200_000:
            self._topic_cache.clear()
        self._topic_cache[(table, id.int)] = (topic, ttl)

    def forget(self, table: str, id: uuid.UUID) -> None:
        """Drop what this client remembers of an object that is gone (its topic and ttl)."""
        self._topic_cache.pop((table, id.int), None)

    # ---------------------------------------------------------------- Backend

    def read(self, table: str, id: uuid.UUID) -> Record | None:
        for _attempt in range(2):
            topic = self.topic_of(table, id)
            if topic is self.MISSING:
                return None
            kv = self.get_key(self.layout.object(topic, table, id))
            if kv is not None:
                return Record(table, id, topic, kv.version, kv.value, None, self._written(kv))
            # Deleted (or re-created elsewhere) since the topic was cached.
            self.forget(table, id)
        return self._unplaced(table, id)

    def read_many(self, keys: Sequence[RefKey]) -> list[Record | None]:
        # The objects whose topic this client knows in batches of get_keys (one round trip each on
        # Redis and etcd), not a round trip per object: a cascade reads every port of a switch.
        # Any other (topic unknown, or no object where the topic says) is read as read() does.
        out: list[Record | None] = [None] * len(keys)
        unknown = [key for key in keys if (key[0], key[1].int) not in self._topic_cache]
        for start in range(0, len(unknown), self.referrer_batch):  # their index records first, as topic_of reads
            asked = unknown[start : start + self.referrer_batch]
            for (table, id), kv in zip(asked, self.get_keys([self.layout.index(*k) for k in asked]), strict=True):
                if kv is not None:
                    index = self.layout.decode_index(kv)
                    self._remember(table, id, index.topic, index.ttl)
        placed = [(i, cached[0]) for i, (t, id) in enumerate(keys) if (cached := self._topic_cache.get((t, id.int)))]
        for start in range(0, len(placed), self.referrer_batch):
            batch = placed[start : start + self.referrer_batch]
            names = [self.layout.object(topic, *keys[i]) for i, topic in batch]
            for (i, topic), kv in zip(batch, self.get_keys(names), strict=True):
                if kv is not None:
                    out[i] = Record(keys[i][0], keys[i][1], topic, kv.version, kv.value, None, self._written(kv))
        return [found if found is not None else self.read(*key) for found, key in zip(out, keys, strict=True)]

    def _unplaced(self, table: str, id: uuid.UUID) -> Record | None:
        """None if the object is gone; CorruptRecordError if its index names a place that holds no object.

        A commit writes an object's index and its bytes together, so an index
        that stays the same around a read that found nothing where it points
        is another writer's damage (on Redis: the object's topic field). Taken
        for absent, the object vanished from every read without a report.
        """
        if not self.whole_point_reads:
            return None
        key = self.layout.index(table, id)
        before = self.get_key(key)
        if before is None:
            return None
        topic = self.layout.decode_index(before).topic
        kv = self.get_key(self.layout.object(topic, table, id))
        if kv is not None:  # re-created since (or the first reads raced a commit)
            return Record(table, id, topic, kv.version, kv.value, None, self._written(kv))
        after = self.get_key(key)
        if after is None or after[2:] != before[2:]:  # version, mod_revision
            return None  # deleted, or written, while read: absent at some point of this read
        self.forget(table, id)
        raise errors.CorruptRecordError(
            f"stored {table} {id}: its index names topic {topic!r}, where no such object is", table=table, key=key
        )

    def scan(self, tables: Sequence[str], topics: Collection[str | None] | None) -> Snapshot:
        wanted = frozenset(tables)
        rows, revision = self.range_rows(self.layout.object_prefixes(tables, topics, self.topic_wildcard))
        return Snapshot(self.layout.records(rows, wanted, self.records_written), revision)

    def scan_page(
        self, tables: Sequence[str], topics: Collection[str | None] | None, limit: int, after: str | None
    ) -> Snapshot:
        revision, last = page_token.decode(after)
        prefixes, revision = self._page_prefixes(tables, topics, revision or 0)
        wanted = frozenset(tables)
        # A page that ended with a prefix names the next one and no key ("": from its start; read as
        # a key, it read the whole store up to that prefix: every namespace's keys, and resumed after them).
        position, key = (0, None) if last is None else (_position(last, len(prefixes)), last[1] or None)
        if key is not None and not key.startswith(prefixes[position]):
            raise errors.ValidationError("not a continue token of this listing (it names another set of prefixes)")
        records: list[Record] = []
        # How many prefixes the next read takes: etcd walks every key of a range to answer it (it counts
        # them), whatever its limit, so a batch's prefixes past the one that fills the page cost their
        # whole size. A page after the first reads its first prefix alone (the last page ended in it or
        # just before it); after a prefix ends, the next read takes as many as would fill the room were
        # they the size of the largest one this page read (200 topics of 2 routers: all at once; 16 of
        # 2,000: one or two; an empty one after a large one does not widen it), one that went on from
        # the last page counting as a page (its tail says nothing of its size). The first page knows no
        # size: it reads them all together (page_reads), once per listing.
        width, biggest = (self.page_reads if last is None else 1), 0
        while position < len(prefixes):
            # The next prefixes in one round trip where the store can (page_reads; at most max(8, room) of
            # them), each read up to a share of the room left (at least 16 keys): a page across many small
            # topics costs a read or two, and reads at most 16 keys more per prefix than the page holds.
            # A prefix that fills its share is read on from its last key before the next one is used.
            room = limit - len(records) + 1  # one key past the page tells whether there is more
            batch = prefixes[position : position + max(1, min(self.page_reads, max(8, room), width))]
            share = room if len(batch) == 1 else min(room, max(16, -(-room // len(batch))))
            got, revision = self.range_pages(
                [(p, key if i == 0 else None) for i, p in enumerate(batch)], share, revision
            )
            for kvs in got:
                asked, held = share, (limit if key is not None else 0)
                while True:
                    room = limit - len(records)
                    for kv in kvs[:room]:
                        parsed = self.layout.parse_object(kv.key)
                        if parsed is not None and parsed[1] in wanted:
                            records.append(
                                Record(parsed[1], parsed[2], parsed[0], kv.version, kv.value, None, self._written(kv))
                            )
                        key = kv.key
                    held += len(kvs)
                    if len(kvs) > room:
                        return Snapshot(records, revision, page_token.encode(revision, (str(position), key or "")))
                    if len(kvs) < asked:
                        break  # the prefix's last key was read
                    asked = limit - len(records) + 1
                    kvs, revision = self.range_page(prefixes[position], key, asked, revision)
                position, key, biggest = position + 1, None, max(biggest, held)
            width = -(-(limit - len(records) + 1) // max(biggest, 1))
        return Snapshot(records, revision)

    def _page_prefixes(
        self, tables: Sequence[str], topics: Collection[str | None] | None, revision: int
    ) -> tuple[list[str], int]:
        """The prefixes a listing in pages reads, in order, and the revision they were found at (0: not read).

        With :attr:`topic_wildcard`, a few tables with no topic filter are read under each topic
        present at the listing's revision (:meth:`object_topics`; every page reads at it, so every
        page finds the same topics and the token's position means the same prefix). Past
        :data:`kvplan.TOPIC_PROBES` topics, ``o/`` whole.
        """
        prefixes = self.layout.object_prefixes(tables, topics, self.topic_wildcard)
        objects = self.layout.objects
        wild = [t for p in prefixes if (t := wildcard_split(p, objects)) is not None]
        if not wild:
            return sorted(prefixes), revision
        found, revision = self.object_topics(revision)
        if found is None:
            return [objects], revision
        return sorted(f"{objects}{topic}/{table}" for topic in found for table in wild), revision

    def object_topics(self, revision: int) -> tuple[list[str] | None, int]:
        """The topics (as keys spell them) with keys under ``o/`` at ``revision`` (0: now), and the revision read.

        None past :data:`kvplan.TOPIC_PROBES` topics. The default is a skip scan through
        :meth:`range_page`: the first key under ``o/``, then the first after that topic's keys,
        and so on, one key per read. Every key under ``o/<topic>/`` counts, another writer's
        too: no topic present at that revision is missed.
        """
        objects = self.layout.objects
        found: list[str] = []
        after: str | None = None
        while True:
            kvs, revision = self.range_page(objects, after, 1, revision)
            if not kvs:
                return found, revision
            if len(found) == TOPIC_PROBES:
                return None, revision
            topic = kvs[0].key[len(objects) :].partition("/")[0]
            found.append(topic)
            after = f"{objects}{topic}/\U0010ffff"  # past every key of the topic (its tables and ids are ASCII)

    def referrers(self, table: str, id: uuid.UUID) -> list[RefKey]:
        return self.referrers_at(table, id)[0]

    referrer_batch: ClassVar[int] = 1000
    """The most targets :meth:`referrers_at_many` reads the referrers of in one :meth:`range_keys`."""

    def referrers_of(self, targets: Sequence[RefKey]) -> dict[RefKey, list[RefKey]]:
        return {target: found for target, (found, _revision) in self.referrers_at_many(targets).items()}

    def referrers_at_many(self, targets: Sequence[RefKey]) -> dict[RefKey, tuple[list[RefKey], int]]:
        """:meth:`referrers_at` of each of ``targets``: one :meth:`range_keys` per :attr:`referrer_batch` of them.

        A read per target was a range script per port of a cascade (or of a delete planned again),
        and on Redis each one copies the last commit's whole log entry to learn the head: after one
        transaction made a switch's 40,000 ports, quadratic (minutes).
        """
        out: dict[RefKey, tuple[list[RefKey], int]] = {}
        unique = list(dict.fromkeys(targets))
        for start in range(0, len(unique), self.referrer_batch):
            under = {self.layout.referrers(t): t for t in unique[start : start + self.referrer_batch]}
            kvs, revision = self.range_keys(list(under))
            found: dict[RefKey, list[RefKey]] = {target: [] for target in under.values()}
            for kv in kvs:
                # A reverse reference is <layout prefix>r/<table>/<id>/<source table>/<source id>: its
                # target's prefix ends at the third '/' after the layout's prefix (tables and ids hold none).
                key = kv.key
                cut = key.find("/", key.find("/", key.find("/", len(self.layout.prefix)) + 1) + 1) + 1
                target = under.get(key[:cut])
                if target is not None:
                    found[target].append(self.layout.parse_referrer(target, key))
            out.update((target, (sources, revision)) for target, sources in found.items())
        return out

    def watch(self, tables: Sequence[str], topics: Collection[str | None] | None, since: int) -> RecordStream:
        stream = self.watch_keys(self.layout.object_prefixes(tables, topics), since)
        return _RecordStream(self.layout, stream, frozenset(tables), self.records_written)

    def current_revision(self) -> int:
        return self.revision_now()

    def commit(self, ops: Sequence[WriteOp]) -> CommitResult:
        return self._commit_ops(ops, ())

    def commit_fenced(self, ops: Sequence[WriteOp], fence: LockHandle) -> CommitResult:
        held = LeaseHeld(fence.name, fence.token.encode())
        return self._commit_ops(ops, (held,))

    def _commit_ops(self, ops: Sequence[WriteOp], extra: Sequence[Condition]) -> CommitResult:
        if not ops:
            return CommitResult(self.revision_now(), [])
        shape = rules.shape_of(ops)
        claims: Claims = {}
        for attempt in range(_COMMIT_ATTEMPTS):
            # The first plan takes deleted objects to be unreferenced; a failed commit reads them.
            plan = plan_commit(self, ops, shape, time.time(), attempt == 0, claims)
            conditions = [*plan.conditions, *extra]
            self._check_limits(len(ops), conditions, plan)
            revision = self.commit_once(conditions, plan.puts, plan.deletes)
            if revision is not None:
                for key, index in plan.indexes:
                    if index is None:
                        self.forget(*key)
                    else:
                        self._remember(key[0], key[1], index.topic, index.ttl)
                return CommitResult(revision, plan.versions)
            for condition in extra:
                if isinstance(condition, LeaseHeld) and not self.lease_held(condition.name, condition.token):
                    raise rules.lock_lost(condition.name)
            diagnose(self, ops, shape)
            if attempt < _COMMIT_ATTEMPTS - 1:  # what it reads is for the next plan: none after the last
                vet_released(self, ops, plan, claims)
        raise errors.ConflictError("the commit kept conflicting with concurrent writers; try again")

    def store_ops(self, conditions: Sequence[Condition], puts: Mapping[str, bytes], deletes: Sequence[str]) -> int:
        """The operations the store counts for this commit, its commit token included (see capabilities.max_txn_ops).

        The default counts the longer of its conditions and its writes, each
        one operation; a store that nests or merges them (etcd) overrides it.
        """
        token = 1 if self.commit_tokens else 0
        return max(len(conditions) + token, write_count(puts, deletes) + token)

    def _check_limits(self, objects: int, conditions: Sequence[Condition], plan: Plan) -> None:
        """Refuse, before sending it, a commit larger than the store takes (capabilities.max_txn_*)."""
        caps = self.capabilities
        operations = 0 if caps.max_txn_ops is None else self.store_ops(conditions, plan.puts, plan.deletes)
        if caps.max_txn_ops is not None and operations > caps.max_txn_ops:
            raise errors.ValidationError(
                f"this commit of {objects} object(s) takes {operations} store operations and "
                f"{type(self).__name__} takes at most {caps.max_txn_ops} (max_txn_ops): split it, "
                "or raise the server's limit and the backend's max_txn_ops option with it"
            )
        if caps.max_txn_bytes is not None:
            size = sum(len(k) + len(v) for k, v in plan.puts.items())
            if size > caps.max_txn_bytes:
                raise errors.ValidationError(
                    f"this commit of {objects} object(s) carries {size} bytes and {type(self).__name__} "
                    f"takes at most {caps.max_txn_bytes} (max_txn_bytes): split it"
                )

    def lease_held(self, name: str, token: bytes) -> bool:
        """Whether ``token`` holds the lease ``name`` now (to tell a lost lock from a conflict).

        For stores whose leases are ordinary keys (etcd); others override it.
        """
        kv = self.get_key(self.layout.lock(name))
        return kv is not None and kv.value == token

    def unique_owner(self, table: str, key: UniqueKey) -> uuid.UUID | None:
        kv = self.get_key(self.layout.unique(table, key))
        if kv is None:
            return None
        try:
            return uuid.UUID(kv.value.decode())
        except (ValueError, UnicodeDecodeError):
            raise errors.CorruptRecordError(f"unique key {kv.key!r} holds {kv.value[:40]!r}", key=kv.key) from None

    def check_unique_claim(self, table: str, key: UniqueKey, owner: uuid.UUID) -> None:
        claim = self.get_key(self.layout.unique(table, key))
        if claim is None or claim.value != str(owner).encode():
            return  # it moved meanwhile
        held = self.whole_index(table, owner)  # a claim may land before its holder's index (Hazelcast)
        if held is not None and key in held.unique:
            return  # it holds the value now (renamed back and forth meanwhile)
        check_claim_held(self, claim, table, owner, "does not exist" if held is None else "does not hold it")

    def refresh(self, table: str, id: uuid.UUID, ttl: float) -> None:
        kvexpiry.refresh(self, table, id, ttl)

    def ttls(self, tables: Sequence[str]) -> dict[RefKey, float]:
        return kvexpiry.ttls(self, tables)

    def reap(self) -> int:
        """Delete the objects whose ttl ran out (one pass, at most :attr:`reap_batch`); how many it deleted."""
        return kvexpiry.reap(self)

    # ---------------------------------------------------------------- exactly-once

    def commit_once(
        self, conditions: Sequence[Condition], puts: Mapping[str, bytes], deletes: Sequence[str]
    ) -> int | None:
        """Apply one conditional commit at most once: its revision, or None if its conditions failed."""
        token = CommitToken(self.layout.token(self.new_token()), self.token_ttl) if self.commit_tokens else None
        commit = KeyCommit(conditions, puts, deletes, token)
        try:
            if self.group_commit > 1:
                return self._committer.commit(commit)
            return self._commit_alone(commit)
        except errors.CommitUnknownError as exc:
            if token is None:
                raise
            log.info("a commit's outcome is unknown (%s); settling its token", exc)
            return self.settle(token)

    def new_token(self) -> str:
        """A commit token no other commit of any client has: this backend's random prefix and a count.

        Drawing 96 random bits per commit cost a system call, which lets go of
        the GIL in the middle of every commit of a busy process.
        """
        return f"{self._token_prefix}{next(self._token_count):x}"

    def _commit_alone(self, commit: KeyCommit) -> int | None:
        if commit.token is None:
            return self.commit_keys(commit.conditions, commit.puts, commit.deletes)
        return self.commit_with_token(commit.conditions, commit.puts, commit.deletes, commit.token)

    def commit_with_token(
        self, conditions: Sequence[Condition], puts: Mapping[str, bytes], deletes: Sequence[str], token: CommitToken
    ) -> int | None:
        """One commit that also writes ``token`` (if it is absent); a store with native tokens overrides it."""
        sent = KeyCommit(conditions, puts, deletes, token).with_token_key()
        return self.commit_keys(sent.conditions, sent.puts, sent.deletes, token)

    def void_token(self, token: CommitToken) -> int | None:
        """Void ``token`` if it is absent; the revision its commit applied at, or None if it never will.

        Raises BackendUnavailableError (or CommitUnknownError) when the store
        does not answer; a store with native tokens overrides it.
        """
        if self.commit_keys([VersionIs(token.key, 0)], {token.key: VOID}, [], token) is not None:
            return None
        kv = self.get_key(token.key)
        if kv is None:
            raise errors.BackendUnavailableError("the commit token vanished while it was being settled")
        return applied_at(kv)

    def settle(self, token: CommitToken) -> int | None:
        """The revision the token's commit applied at, or None once it is certain it never will.

        Voids the token if it is still absent, under the retry policy;
        CommitUnknownError if the store stays unreachable until it runs out.
        """
        attempts = self.retry.begin()
        while True:
            try:
                revision = self.void_token(token)
                if revision is not None:
                    log.info("a commit whose reply was lost had been applied (revision %d)", revision)
                return revision
            except errors.BackendUnavailableError as exc:
                failure = exc
            if not attempts.wait():
                raise errors.CommitUnknownError(
                    f"the commit may or may not have been applied: its reply was lost and the store did not "
                    f"answer in time to tell ({failure})"
                ) from None

    # ---------------------------------------------------------------- locks and ids

    def lock(
        self, name: str, ttl: float, timeout: float | None, closed: threading.Event | None = None
    ) -> AbstractContextManager[LockHandle]:
        return hold_lease(self, name, ttl, timeout, closed)

    def allocate_id(self, name: str) -> int:
        # The counter and its mark (KeyLayout.counter_mark), read together. The mark is at least every id
        # handed out: moved a block ahead when the counter passes it, so one commit in MARK_BLOCK writes it.
        # The counter deleted, it counts on from the mark (skipping at most a block); the mark deleted, it is
        # written again; both deleted (or a namespace's keys wiped), it starts again at 1: nothing is left.
        counter, mark = keys = self.layout.counter(name), self.layout.counter_mark(name)
        while True:
            found, marked = self.get_keys(keys)
            high = 0 if marked is None else rules.counter_value(marked.value, name, mark, text=True)
            current = high if found is None else rules.counter_value(found.value, name, counter, text=True)
            after = current + 1
            puts = {counter: str(after).encode()}
            if after > high:
                puts[mark] = str(after + MARK_BLOCK - 1).encode()
            conditions = [
                VersionIs(key, 0 if kv is None else kv.version) for key, kv in zip(keys, (found, marked), strict=True)
            ]
            if self.commit_once(conditions, puts, []) is not None:
                return after

    def compact_history(self) -> None:
        self.compact_keys(self.revision_now())

    def write_raw(self, table: str, id: uuid.UUID, topic: str | None, data: bytes) -> None:
        puts = {self.layout.object(topic, table, id): data}
        if self.index_record(table, id) is None:
            puts[self.layout.index(table, id)] = self.layout.encode_index(Index(topic, frozenset()))
        if self.commit_once([], puts, []) is None:
            raise errors.ConflictError("raw write failed")


MARK_BLOCK = 64
"""Ids an id counter's mark is moved ahead of it at a time (see ``KeyValueBackend.allocate_id``)."""


def _position(last: Sequence[str], count: int) -> int:
    try:
        position = int(last[0])
    except (IndexError, ValueError):
        position = -1
    if not 0 <= position < count or len(last) != 2:
        raise errors.ValidationError("not a continue token of this listing (it names another set of prefixes)")
    return position
