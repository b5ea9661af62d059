"""The key-value family: objects, versions, references, topics, locks and ids on a KV store.

A backend of this family supplies a handful of primitives (get, range by
prefix at one revision, an atomic conditional commit of several keys, a watch
from a revision, and TTL'd lease keys); everything else is built here once.

Key layout (under the backend's ``key_prefix``)::

    o/<topic>/<table>/<id>               the object's bytes; key version == object version
    i/<table>/<id>                       {"t": topic, "r": [[table, id], ...]}: where it lives, what it references
    r/<table>/<id>/<src_table>/<src_id>  a reverse reference: <src> points to <table>/<id>
    l/<name>                             a lock (lease key holding the owner's token)
    n/<name>                             an id counter

Topic-first object keys let a cache that follows one tenant range and watch
only that tenant's keys. ``~`` stands for "no topic" (not a legal topic char).
Reference integrity is atomic: a create checks that its targets exist
(:class:`Exists`) in the same commit that writes the reverse-reference keys,
and a delete checks that its reverse-reference prefix did not change since it
was read (:class:`PrefixUnchangedSince`). Whichever of two racing commits lands
second sees the other's keys and fails.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from abc import abstractmethod
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from nbdb import errors
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
    WriteOp,
)

__all__ = [
    "ChangeReader",
    "ChangeSignal",
    "Condition",
    "Exists",
    "KeyChange",
    "KeyStream",
    "KeyValue",
    "KeyValueBackend",
    "PolledKeyStream",
    "PrefixUnchangedSince",
    "VersionIs",
    "condition_holds",
    "key_changes",
]

log = logging.getLogger(__name__)

NO_TOPIC = "~"
_COMMIT_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class KeyValue:
    """A stored key: value, number of writes since creation, revision of the last write."""

    key: str
    value: bytes
    version: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class KeyChange:
    """One key changed at ``revision`` (value None: deleted)."""

    key: str
    value: bytes | None
    version: int
    prev_value: bytes | None
    prev_version: int
    revision: int


@dataclass(frozen=True, slots=True)
class VersionIs:
    """The key's version is ``version`` (0: the key is absent)."""

    key: str
    version: int


@dataclass(frozen=True, slots=True)
class Exists:
    """The key is present."""

    key: str


@dataclass(frozen=True, slots=True)
class PrefixUnchangedSince:
    """No key under ``prefix`` was created or modified after ``revision``."""

    prefix: str
    revision: int


Condition = VersionIs | Exists | PrefixUnchangedSince


class KeyStream:
    """Changes of keys under some prefixes, from a revision on, in revision order.

    Backends implement ``poll`` and ``revision`` like :class:`nbdb.spi.RecordStream`.
    """

    @abstractmethod
    def poll(self, timeout: float | None) -> list[KeyChange]:
        """The next key changes; [] after ``timeout``; HistoryGoneError if the revision is gone."""

    @property
    @abstractmethod
    def revision(self) -> int:
        """Every change up to this revision has been returned."""

    @abstractmethod
    def close(self) -> None:
        """Stop; a blocked ``poll`` returns []."""


def condition_holds(
    condition: Condition, stored: Mapping[str, KeyValue], changed_under: Callable[[str, int], bool]
) -> bool:
    """Whether ``condition`` holds, for a store that checks conditions itself inside its own transaction.

    ``stored`` holds the current value of every key a VersionIs or Exists
    condition names (absent: no such key); ``changed_under(prefix, revision)``
    tells whether a key under ``prefix`` was written after ``revision``.
    """
    if isinstance(condition, VersionIs):
        found = stored.get(condition.key)
        return (0 if found is None else found.version) == condition.version
    if isinstance(condition, Exists):
        return condition.key in stored
    return not changed_under(condition.prefix, condition.revision)


def key_changes(
    stored: Mapping[str, KeyValue], puts: Mapping[str, bytes], deletes: Sequence[str], revision: int
) -> list[KeyChange]:
    """What a commit at ``revision`` does to each key, for a store that keeps versions and a change log itself.

    ``stored`` holds the current value of every written key. A put counts one
    more write (version 1 on creation); a delete of a present key leaves
    version 0; deleting an absent key changes nothing; a key both put and
    deleted ends deleted.
    """
    out = []
    dropped = set(deletes)
    for key, value in puts.items():
        if key in dropped:
            continue
        old = stored.get(key)
        if old is None:
            out.append(KeyChange(key, value, 1, None, 0, revision))
        else:
            out.append(KeyChange(key, value, old.version + 1, old.value, old.version, revision))
    for key in dropped:
        old = stored.get(key)
        if old is not None:
            out.append(KeyChange(key, None, 0, old.value, old.version, revision))
    return out


class ChangeSignal:
    """Wakes the polling watchers of one store in this process when this process commits to it.

    A store whose changes are read from a log rather than pushed (a change
    table in SQL) shares one signal between every backend of this process
    that opens it; commits of other processes are found by polling.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self.generation = 0
        """Counts the commits notified so far."""

    def notify(self) -> None:
        """Tell the waiting watchers that a commit landed."""
        with self._cond:
            self.generation += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> None:
        """Sleep up to ``timeout`` seconds unless a commit came after generation ``seen`` (no lost wake-up)."""
        with self._cond:
            if self.generation == seen:
                self._cond.wait(timeout)


ChangeReader = Callable[[int], tuple[list[KeyChange], int]]
"""Reads the changes after a revision from a store's log: (changes, revision they bring the reader to)."""


class PolledKeyStream(KeyStream):
    """A KeyStream for stores whose change log is read, not pushed: the backend supplies one read.

    ``read(revision)`` returns the wanted changes committed after ``revision``
    and the store's revision at that read, reading both at one snapshot (or
    raises HistoryGoneError); the stream calls it when ``signal`` says this
    process committed, and every ``interval`` seconds for other processes.
    ``on_close`` releases what the reads use (a connection).
    """

    def __init__(
        self,
        read: ChangeReader,
        since: int,
        signal: ChangeSignal,
        interval: float,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._read, self._signal, self._interval, self._on_close = read, signal, interval, on_close
        self._revision = since
        self._closed = False

    def poll(self, timeout: float | None) -> list[KeyChange]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed:
            seen = self._signal.generation
            try:
                changes, revision = self._read(self._revision)
            except errors.BackendUnavailableError:
                if self._closed:  # closed by another thread while reading
                    break
                raise
            self._revision = max(self._revision, revision)
            if changes:
                return changes
            remaining = self._interval if deadline is None else min(self._interval, deadline - time.monotonic())
            if remaining <= 0:
                break
            self._signal.wait(seen, remaining)
        return []

    @property
    def revision(self) -> int:
        return self._revision

    def close(self) -> None:
        self._closed = True
        self._signal.notify()
        if self._on_close is not None:
            self._on_close()


def _uuid(text: str) -> uuid.UUID:
    return uuid.UUID(text)


class _RecordStream(RecordStream):
    """Turns a KeyStream of object keys into RecordChanges of the wanted tables."""

    def __init__(self, backend: KeyValueBackend, keys: KeyStream, tables: frozenset[str] | None) -> None:
        self._backend = backend
        self._keys = keys
        self._tables = tables

    def poll(self, timeout: float | None) -> list[RecordChange]:
        out: list[RecordChange] = []
        for change in self._keys.poll(timeout):
            parsed = self._backend._parse_object_key(change.key)
            if parsed is None:
                continue
            topic, table, id = parsed
            if self._tables is not None and table not in self._tables:
                continue
            old = (
                None if change.prev_value is None else Record(table, id, topic, change.prev_version, change.prev_value)
            )
            new = None if change.value is None else Record(table, id, topic, change.version, change.value)
            if old is None and new is None:
                continue
            out.append(RecordChange(table, id, topic, old, new, change.revision))
        return out

    @property
    def revision(self) -> int:
        return self._keys.revision

    def close(self) -> None:
        self._keys.close()


@dataclass(slots=True)
class _Plan:
    conditions: list[Condition]
    puts: dict[str, bytes]
    deletes: list[str]
    versions: list[int]
    topics: dict[RefKey, str | None]
    deleted: set[RefKey]


class KeyValueBackend(Backend):
    """Base of key-value backends: subclass it and implement the ``*_keys``/lease primitives."""

    key_prefix: str = ""

    def __init__(self, key_prefix: str = "") -> None:
        self.key_prefix = key_prefix
        # id -> topic is immutable for an object's life, so it caches well and
        # saves get() a round trip; a miss or a stale entry falls back to i/.
        self._topic_cache: dict[tuple[str, uuid.UUID], str | None] = {}

    # ---------------------------------------------------------------- primitives

    @abstractmethod
    def get_key(self, key: str) -> KeyValue | None:
        """The key, or None."""

    def get_keys(self, keys: Sequence[str]) -> list[KeyValue | None]:
        """Several keys (backends override this to batch the round trips)."""
        return [self.get_key(k) for k in keys]

    @abstractmethod
    def range_keys(self, prefixes: Sequence[str]) -> tuple[list[KeyValue], int]:
        """Every key under any of ``prefixes``, all read at one revision, and that revision."""

    @abstractmethod
    def commit_keys(
        self, conditions: Sequence[Condition], puts: Mapping[str, bytes], deletes: Sequence[str]
    ) -> int | None:
        """If every condition holds, apply puts and deletes atomically and return the new revision; else None."""

    @abstractmethod
    def watch_keys(self, prefixes: Sequence[str], since: int) -> KeyStream:
        """Changes under ``prefixes`` after revision ``since``, in revision order, with previous values."""

    @abstractmethod
    def revision_now(self) -> int:
        """The store's current revision."""

    def compact_keys(self, revision: int) -> None:
        """Drop the change history up to ``revision`` (test hook; optional)."""
        raise errors.UnsupportedError(f"{type(self).__name__} cannot compact its history on demand")

    @abstractmethod
    def put_lease(self, key: str, value: bytes, ttl: float) -> bool:
        """Create ``key`` with a TTL if it is absent; True if created."""

    @abstractmethod
    def refresh_lease(self, key: str, value: bytes, ttl: float) -> bool:
        """Extend the TTL of ``key`` if it still holds ``value``; True if it did."""

    @abstractmethod
    def delete_lease(self, key: str, value: bytes) -> bool:
        """Delete ``key`` if it still holds ``value``; True if it did."""

    # ---------------------------------------------------------------- keys

    def _okey(self, topic: str | None, table: str, id: uuid.UUID) -> str:
        return f"{self.key_prefix}o/{topic or NO_TOPIC}/{table}/{id}"

    def _ikey(self, table: str, id: uuid.UUID) -> str:
        return f"{self.key_prefix}i/{table}/{id}"

    def _rprefix(self, table: str, id: uuid.UUID) -> str:
        return f"{self.key_prefix}r/{table}/{id}/"

    def _rkey(self, target: RefKey, source: RefKey) -> str:
        return f"{self._rprefix(*target)}{source[0]}/{source[1]}"

    def _object_prefixes(self, tables: Sequence[str] | None, topics: Collection[str | None] | None) -> list[str]:
        base = f"{self.key_prefix}o/"
        if topics is None:
            return [base]
        names = sorted(topic or NO_TOPIC for topic in topics)
        if tables is not None and len(tables) * len(names) <= 16:
            return [f"{base}{t}/{table}/" for t in names for table in tables]
        return [f"{base}{t}/" for t in names]

    def _parse_object_key(self, key: str) -> tuple[str | None, str, uuid.UUID] | None:
        rest = key[len(self.key_prefix) :]
        parts = rest.split("/")
        if len(parts) != 4 or parts[0] != "o":
            return None
        try:
            id = _uuid(parts[3])
        except ValueError:
            log.warning("ignoring key %r: not an object key", key)
            return None
        return (None if parts[1] == NO_TOPIC else parts[1]), parts[2], id

    def _decode_index(self, kv: KeyValue) -> tuple[str | None, frozenset[RefKey]]:
        try:
            doc = json.loads(kv.value)
            topic = doc["t"]
            refs = frozenset((str(t), _uuid(i)) for t, i in doc["r"])
        except (ValueError, KeyError, TypeError) as exc:
            raise errors.CorruptRecordError(f"index record {kv.key!r} is corrupt: {exc}", key=kv.key) from None
        return (None if topic == NO_TOPIC else topic), refs

    @staticmethod
    def _encode_index(topic: str | None, refs: frozenset[RefKey]) -> bytes:
        return json.dumps({"t": topic or NO_TOPIC, "r": sorted([t, str(i)] for t, i in refs)}).encode()

    def _index(self, table: str, id: uuid.UUID) -> tuple[KeyValue, str | None, frozenset[RefKey]] | None:
        kv = self.get_key(self._ikey(table, id))
        if kv is None:
            self._topic_cache.pop((table, id), None)
            return None
        topic, refs = self._decode_index(kv)
        self._remember_topic(table, id, topic)
        return kv, topic, refs

    def _remember_topic(self, table: str, id: uuid.UUID, topic: str | None) -> None:
        if len(self._topic_cache) > 200_000:
            self._topic_cache.clear()
        self._topic_cache[(table, id)] = topic

    _MISSING = object()

    def _topic_of(self, table: str, id: uuid.UUID) -> Any:
        """The object's topic, or _MISSING if the object does not exist."""
        try:
            return self._topic_cache[(table, id)]
        except KeyError:
            found = self._index(table, id)
            return self._MISSING if found is None else found[1]

    # ---------------------------------------------------------------- Backend

    def read(self, table: str, id: uuid.UUID) -> Record | None:
        for _attempt in range(2):
            topic = self._topic_of(table, id)
            if topic is self._MISSING:
                return None
            kv = self.get_key(self._okey(topic, table, id))
            if kv is not None:
                return Record(table, id, topic, kv.version, kv.value)
            # Deleted (or re-created elsewhere) since the topic was cached.
            self._topic_cache.pop((table, id), None)
        return None

    def scan(self, tables: Sequence[str], topics: Collection[str | None] | None) -> Snapshot:
        wanted = frozenset(tables)
        kvs, revision = self.range_keys(self._object_prefixes(tables, topics))
        records = []
        for kv in kvs:
            parsed = self._parse_object_key(kv.key)
            if parsed is None or parsed[1] not in wanted:
                continue
            topic, table, id = parsed
            records.append(Record(table, id, topic, kv.version, kv.value))
        return Snapshot(records, revision)

    def referrers(self, table: str, id: uuid.UUID) -> list[RefKey]:
        return self._referrers(table, id)[0]

    def _referrers(self, table: str, id: uuid.UUID) -> tuple[list[RefKey], int]:
        prefix = self._rprefix(table, id)
        kvs, revision = self.range_keys([prefix])
        out = []
        for kv in kvs:
            source_table, _, source_id = kv.key[len(prefix) :].partition("/")
            out.append((source_table, _uuid(source_id)))
        return out, revision

    def watch(self, tables: Sequence[str], topics: Collection[str | None] | None, since: int) -> RecordStream:
        stream = self.watch_keys(self._object_prefixes(tables, topics), since)
        return _RecordStream(self, stream, frozenset(tables))

    def current_revision(self) -> int:
        return self.revision_now()

    def commit(self, ops: Sequence[WriteOp]) -> CommitResult:
        if not ops:
            return CommitResult(self.revision_now(), [])
        seen: set[RefKey] = set()
        for op in ops:
            if (op.table, op.id) in seen:
                raise errors.ValidationError(f"{op.table} {op.id} appears twice in one transaction")
            seen.add((op.table, op.id))
        for _ in range(_COMMIT_ATTEMPTS):
            plan = self._plan(ops)
            revision = self.commit_keys(plan.conditions, plan.puts, plan.deletes)
            if revision is not None:
                for key, topic in plan.topics.items():
                    if key in plan.deleted:
                        self._topic_cache.pop(key, None)
                    else:
                        self._remember_topic(key[0], key[1], topic)
                return CommitResult(revision, plan.versions)
            self._diagnose(ops)
        raise errors.ConflictError("the commit kept conflicting with concurrent writers; try again")

    def _plan(self, ops: Sequence[WriteOp]) -> _Plan:
        created = {(op.table, op.id) for op in ops if isinstance(op, Put) and op.expect_version == 0}
        deleted = {(op.table, op.id) for op in ops if isinstance(op, Delete)}
        plan = _Plan([], {}, [], [], {}, deleted)
        new_refs: dict[RefKey, frozenset[RefKey]] = {}
        old_refs: dict[RefKey, frozenset[RefKey]] = {}
        for op in ops:
            me = (op.table, op.id)
            okey = None
            if isinstance(op, Put) and op.expect_version == 0:
                plan.conditions.append(VersionIs(self._ikey(op.table, op.id), 0))
                old = frozenset[RefKey]()
                okey = self._okey(op.topic, op.table, op.id)
                plan.conditions.append(VersionIs(okey, 0))
                plan.versions.append(1)
            else:
                expect = op.expect_version
                stored_topic: Any
                if op.old_refs is not None and expect != ANY_VERSION:
                    stored_topic = self._topic_of(op.table, op.id)
                    old = op.old_refs
                else:
                    found = self._index(op.table, op.id)
                    if found is None:
                        raise errors.NotFoundError(f"{op.table} {op.id} does not exist")
                    _, stored_topic, old = found
                if stored_topic is self._MISSING:
                    raise errors.NotFoundError(f"{op.table} {op.id} does not exist")
                if stored_topic != op.topic:
                    raise errors.ValidationError(
                        f"{op.table} {op.id} lives in topic {stored_topic!r}; topic cannot change to {op.topic!r}"
                    )
                okey = self._okey(op.topic, op.table, op.id)
                if expect == ANY_VERSION:
                    current = self.get_key(okey)
                    if current is None:
                        raise errors.NotFoundError(f"{op.table} {op.id} does not exist")
                    expect = current.version
                plan.conditions.append(VersionIs(okey, expect))
                plan.versions.append(0 if isinstance(op, Delete) else expect + 1)
            old_refs[me] = old
            plan.topics[me] = op.topic
            if isinstance(op, Put):
                plan.puts[okey] = op.data
                new_refs[me] = op.refs
                if op.refs != old or op.expect_version == 0:
                    plan.puts[self._ikey(op.table, op.id)] = self._encode_index(op.topic, op.refs)
            else:
                new_refs[me] = frozenset()
                plan.deletes += [okey, self._ikey(op.table, op.id)]

        for me, refs in new_refs.items():
            old = old_refs[me]
            for target in refs - old:
                if target in deleted:
                    raise errors.ReferenceError(
                        f"{me[0]} {me[1]} references {target[0]} {target[1]}, deleted in the same transaction"
                    )
                if target not in created:
                    topic = self._topic_of(*target)
                    if topic is self._MISSING:
                        raise errors.ReferenceError(
                            f"{me[0]} {me[1]} references {target[0]} {target[1]}, which does not exist"
                        )
                    plan.conditions.append(Exists(self._okey(topic, *target)))
                plan.puts[self._rkey(target, me)] = b""
            for target in old - refs:
                plan.deletes.append(self._rkey(target, me))

        for target in deleted:
            referrers, revision = self._referrers(*target)
            # A referrer stops counting if this commit drops its reference.
            remaining = [src for src in referrers if target in new_refs.get(src, frozenset([target]))]
            if remaining:
                names = ", ".join(f"{t} {i}" for t, i in remaining[:5])
                raise errors.ReferenceError(
                    f"{target[0]} {target[1]} is still referenced by {names}"
                    + (f" and {len(remaining) - 5} more" if len(remaining) > 5 else "")
                    + "; delete those first or pass cascade=True"
                )
            plan.conditions.append(PrefixUnchangedSince(self._rprefix(*target), revision))
        return plan

    def _diagnose(self, ops: Sequence[WriteOp]) -> None:
        """After a failed commit, raise the error that explains it (or return to retry)."""
        for op in ops:
            found = self._index(op.table, op.id)
            if isinstance(op, Put) and op.expect_version == 0:
                if found is not None:
                    raise errors.ConflictError(f"{op.table} {op.id} already exists")
                continue
            if found is None:
                raise errors.NotFoundError(f"{op.table} {op.id} does not exist (deleted concurrently?)")
            kv = self.get_key(self._okey(found[1], op.table, op.id))
            if kv is None:
                raise errors.NotFoundError(f"{op.table} {op.id} does not exist (deleted concurrently?)")
            if op.expect_version not in (ANY_VERSION, kv.version):
                raise errors.ConflictError(
                    f"{op.table} {op.id} is at version {kv.version}, not {op.expect_version}: re-read it and retry"
                )
        created = {(op.table, op.id) for op in ops if isinstance(op, Put) and op.expect_version == 0}
        for op in ops:
            if not isinstance(op, Put):
                continue
            for target in op.refs - (op.old_refs or frozenset()) - created:
                # Read through to the store: the topic cache may still hold a target deleted meanwhile.
                if self._index(*target) is None:
                    raise errors.ReferenceError(
                        f"{op.table} {op.id} references {target[0]} {target[1]}, which does not exist"
                    )
        # Otherwise a referrer appeared (or came and went): the next plan() sees which.

    # ---------------------------------------------------------------- locks and ids

    @contextmanager
    def lock(self, name: str, ttl: float, timeout: float | None) -> Iterator[LockHandle]:
        if ttl <= 0:
            raise errors.ValidationError("lock ttl must be positive")
        key = f"{self.key_prefix}l/{name}"
        handle = LockHandle(name, uuid.uuid4().hex)
        token = handle.token.encode()
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.005
        while not self.put_lease(key, token, ttl):
            if deadline is not None and time.monotonic() >= deadline:
                raise errors.LockTimeoutError(f"lock {name!r} is held by another owner; gave up after {timeout}s")
            time.sleep(delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic())))
            delay = min(delay * 2, 0.1)
        stop = threading.Event()

        def keep_alive() -> None:
            while not stop.wait(ttl / 3):
                try:
                    alive = self.refresh_lease(key, token, ttl)
                except errors.NbdbError as exc:
                    log.warning("lock %r: renewal failed: %s", name, exc)
                    alive = False
                if not alive:
                    log.error("lock %r was lost (its lease expired or the server dropped it)", name)
                    handle.mark_lost()
                    return

        keeper = threading.Thread(target=keep_alive, name=f"nbdb-lock-{name}", daemon=True)
        keeper.start()
        try:
            yield handle
        finally:
            stop.set()
            keeper.join()
            if not handle.lost:
                self.delete_lease(key, token)

    def allocate_id(self, name: str) -> int:
        key = f"{self.key_prefix}n/{name}"
        while True:
            kv = self.get_key(key)
            try:
                current = 0 if kv is None else int(kv.value)
            except ValueError:
                raise errors.CorruptRecordError(
                    f"id counter {name!r} holds {(kv.value if kv else b'')[:40]!r}, not an integer", key=key
                ) from None
            condition = VersionIs(key, 0 if kv is None else kv.version)
            if self.commit_keys([condition], {key: str(current + 1).encode()}, []) is not None:
                return current + 1

    def compact_history(self) -> None:
        self.compact_keys(self.revision_now())

    def write_raw(self, table: str, id: uuid.UUID, topic: str | None, data: bytes) -> None:
        found = self._index(table, id)
        puts = {self._okey(topic, table, id): data}
        if found is None:
            puts[self._ikey(table, id)] = self._encode_index(topic, frozenset())
        if self.commit_keys([], puts, []) is None:
            raise errors.ConflictError("raw write failed")
