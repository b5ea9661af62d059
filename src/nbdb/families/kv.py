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

import logging
import secrets
import uuid
from abc import abstractmethod
from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar

from nbdb import errors
from nbdb.families import rules
from nbdb.families.kvplan import KeyLayout, diagnose, plan_commit
from nbdb.families.lease import hold_lease
from nbdb.retry import RetryPolicy
from nbdb.spi import Backend, CommitResult, LockHandle, Record, RecordChange, RecordStream, RefKey, Snapshot, WriteOp

__all__ = [
    "APPLIED",
    "VOID",
    "CommitToken",
    "Condition",
    "Exists",
    "KeyChange",
    "KeyStream",
    "KeyValue",
    "KeyValueBackend",
    "PrefixUnchangedSince",
    "VersionIs",
]

log = logging.getLogger(__name__)

_COMMIT_ATTEMPTS = 8
APPLIED = b"1"
"""The value of a token key written by its commit."""
VOID = b"0"
"""The value of a token key written by a settlement: that commit will never apply."""


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


@dataclass(frozen=True, slots=True)
class CommitToken:
    """Makes one commit exactly-once (see the module docstring).

    The family has already added ``VersionIs(key, 0)`` to the commit's
    conditions and ``key`` to its puts. The backend keeps ``key`` for at
    least ``ttl`` seconds (then may drop it). If it sends the request again
    after an attempt whose reply was lost and the conditions then fail, it
    may read ``key``: holding the value of the puts means the earlier attempt
    applied at that key's ``mod_revision``.
    """

    key: str
    ttl: float


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


class _RecordStream(RecordStream):
    """Turns a KeyStream of object keys into RecordChanges of the wanted tables."""

    def __init__(self, layout: KeyLayout, keys: KeyStream, tables: frozenset[str]) -> None:
        self._layout = layout
        self._keys = keys
        self._tables = tables

    def poll(self, timeout: float | None) -> list[RecordChange]:
        out: list[RecordChange] = []
        for change in self._keys.poll(timeout):
            parsed = self._layout.parse_object(change.key)
            if parsed is None or parsed[1] not in self._tables:
                continue
            topic, table, id = parsed
            old = (
                None if change.prev_value is None else Record(table, id, topic, change.prev_version, change.prev_value)
            )
            new = None if change.value is None else Record(table, id, topic, change.version, change.value)
            if old is not None or new is not None:
                out.append(RecordChange(table, id, topic, old, new, change.revision))
        return out

    @property
    def revision(self) -> int:
        return self._keys.revision

    def close(self) -> None:
        self._keys.close()


class KeyValueBackend(Backend):
    """Base of key-value backends: subclass it and implement the ``*_keys`` and lease primitives."""

    commit_tokens: ClassVar[bool] = False
    """True for stores that can lose the reply to a commit (every networked one)."""
    token_ttl: ClassVar[float] = 600.0
    """Seconds a commit token is kept: it must outlive every retry of its commit."""
    MISSING: ClassVar[Any] = object()
    """What :meth:`topic_of` returns for an object that does not exist."""

    def __init__(self, key_prefix: str = "", retry: RetryPolicy | None = None) -> None:
        self.key_prefix = key_prefix
        self.layout = KeyLayout(key_prefix)
        self.retry = retry if retry is not None else RetryPolicy()
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
    def acquire_lease(self, name: str, token: bytes, ttl: float) -> bool:
        """Take the lease ``name`` for ``token`` if nobody holds it (idempotent: True if ``token`` holds it)."""

    @abstractmethod
    def renew_lease(self, name: str, token: bytes, ttl: float) -> bool:
        """Extend the lease if ``token`` still holds it; False if it does not."""

    @abstractmethod
    def release_lease(self, name: str, token: bytes) -> None:
        """Drop the lease if ``token`` still holds it."""

    # ---------------------------------------------------------------- what the planner reads

    def index_of(self, table: str, id: uuid.UUID) -> tuple[KeyValue, str | None, frozenset[RefKey]] | None:
        """The object's index record (key, topic, references), read from the store; None if absent."""
        kv = self.get_key(self.layout.index(table, id))
        if kv is None:
            self._topic_cache.pop((table, id), None)
            return None
        topic, refs = self.layout.decode_index(kv)
        self._remember_topic(table, id, topic)
        return kv, topic, refs

    def topic_of(self, table: str, id: uuid.UUID) -> Any:
        """The object's topic (cached), or :attr:`MISSING` if the object does not exist."""
        try:
            return self._topic_cache[(table, id)]
        except KeyError:
            found = self.index_of(table, id)
            return self.MISSING if found is None else found[1]

    def referrers_at(self, table: str, id: uuid.UUID) -> tuple[list[RefKey], int]:
        """Every object that references ``table``/``id``, and the revision it was read at."""
        target = (table, id)
        kvs, revision = self.range_keys([self.layout.referrers(target)])
        return [self.layout.parse_referrer(target, kv.key) for kv in kvs], revision

    def _remember_topic(self, table: str, id: uuid.UUID, topic: str | None) -> None:
        if len(self._topic_cache) > 200_000:
            self._topic_cache.clear()
        self._topic_cache[(table, id)] = topic

    # ---------------------------------------------------------------- Backend

    def read(self, table: str, id: uuid.UUID) -> Record | None:
        for _attempt in range(2):
            topic = self.topic_of(table, id)
            if topic is self.MISSING:
                return None
            kv = self.get_key(self.layout.object(topic, table, id))
            if kv is not None:
                return Record(table, id, topic, kv.version, kv.value)
            # Deleted (or re-created elsewhere) since the topic was cached.
            self._topic_cache.pop((table, id), None)
        return None

    def scan(self, tables: Sequence[str], topics: Collection[str | None] | None) -> Snapshot:
        wanted = frozenset(tables)
        kvs, revision = self.range_keys(self.layout.object_prefixes(tables, topics))
        records = []
        for kv in kvs:
            parsed = self.layout.parse_object(kv.key)
            if parsed is None or parsed[1] not in wanted:
                continue
            topic, table, id = parsed
            records.append(Record(table, id, topic, kv.version, kv.value))
        return Snapshot(records, revision)

    def referrers(self, table: str, id: uuid.UUID) -> list[RefKey]:
        return self.referrers_at(table, id)[0]

    def watch(self, tables: Sequence[str], topics: Collection[str | None] | None, since: int) -> RecordStream:
        stream = self.watch_keys(self.layout.object_prefixes(tables, topics), since)
        return _RecordStream(self.layout, stream, frozenset(tables))

    def current_revision(self) -> int:
        return self.revision_now()

    def commit(self, ops: Sequence[WriteOp]) -> CommitResult:
        if not ops:
            return CommitResult(self.revision_now(), [])
        shape = rules.shape_of(ops)
        for _attempt in range(_COMMIT_ATTEMPTS):
            plan = plan_commit(self, ops, shape)
            revision = self.commit_once(plan.conditions, plan.puts, plan.deletes)
            if revision is not None:
                for key, topic in plan.topics.items():
                    if key in shape.deleted:
                        self._topic_cache.pop(key, None)
                    else:
                        self._remember_topic(key[0], key[1], topic)
                return CommitResult(revision, plan.versions)
            diagnose(self, ops, shape)
        raise errors.ConflictError("the commit kept conflicting with concurrent writers; try again")

    # ---------------------------------------------------------------- exactly-once

    def commit_once(
        self, conditions: Sequence[Condition], puts: Mapping[str, bytes], deletes: Sequence[str]
    ) -> int | None:
        """Apply one conditional commit at most once: its revision, or None if its conditions failed."""
        if not self.commit_tokens:
            return self.commit_keys(conditions, puts, deletes)
        token = CommitToken(self.layout.token(secrets.token_hex(12)), self.token_ttl)
        try:
            return self.commit_with_token(conditions, puts, deletes, token)
        except errors.CommitUnknownError as exc:
            log.info("a commit's outcome is unknown (%s); settling its token", exc)
            return self.settle(token)

    def commit_with_token(
        self, conditions: Sequence[Condition], puts: Mapping[str, bytes], deletes: Sequence[str], token: CommitToken
    ) -> int | None:
        """One commit that also writes ``token`` (if it is absent); a store with native tokens overrides it."""
        return self.commit_keys([*conditions, VersionIs(token.key, 0)], {**puts, token.key: APPLIED}, deletes, token)

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
        return kv.mod_revision if kv.value == APPLIED else None

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

    def lock(self, name: str, ttl: float, timeout: float | None) -> AbstractContextManager[LockHandle]:
        return hold_lease(self, name, ttl, timeout)

    def allocate_id(self, name: str) -> int:
        key = self.layout.counter(name)
        while True:
            kv = self.get_key(key)
            try:
                current = 0 if kv is None else int(kv.value)
            except ValueError:
                raise errors.CorruptRecordError(
                    f"id counter {name!r} holds {(kv.value if kv else b'')[:40]!r}, not an integer", key=key
                ) from None
            condition = VersionIs(key, 0 if kv is None else kv.version)
            if self.commit_once([condition], {key: str(current + 1).encode()}, []) is not None:
                return current + 1

    def compact_history(self) -> None:
        self.compact_keys(self.revision_now())

    def write_raw(self, table: str, id: uuid.UUID, topic: str | None, data: bytes) -> None:
        puts = {self.layout.object(topic, table, id): data}
        if self.index_of(table, id) is None:
            puts[self.layout.index(table, id)] = self.layout.encode_index(topic, frozenset())
        if self.commit_once([], puts, []) is None:
            raise errors.ConflictError("raw write failed")
