"""The data of an in-memory database and its commits: records, references, unique claims, history, leases.

A commit is checked against the shared commit rules (:mod:`nbdb.families.rules`,
the same words on every backend) and applied under the store's lock, in a few
dictionary operations. The commit of one object, the common write, takes a
path of its own (:meth:`MemoryStore.check_one`) that states the same rules
without the bookkeeping only a transaction of several objects needs; the
tests hold both paths to the same outcome for every sequence of writes.

The store's own dictionaries (records, parts, references, referrers, unique
claims held) are keyed by :data:`Key`, ``(table, id.int)``, not by the SPI's
``(table, UUID)``: such a tuple hashes in C, where ``UUID.__hash__`` is a
Python call (eight of them per created object, before), and the cyclic
collector stops tracking it (a tuple holding a UUID stays tracked for good).
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
import weakref
from collections.abc import Sequence
from typing import cast

from nbdb import errors
from nbdb.codec import encode
from nbdb.families import rules
from nbdb.families.history import trim_history
from nbdb.families.lease import LeaseTable
from nbdb.models.base import Model
from nbdb.spi import ANY_VERSION, CommitResult, Deferred, Delete, Put, Record, RecordChange, RefKey, UniqueKey, WriteOp

__all__ = ["DEFAULT_HISTORY", "Key", "MemoryStore", "StoredRecord", "UniqueSlot", "key_of", "ref_of", "unique_slot"]

DEFAULT_HISTORY = 10_000
_NO_REFS: frozenset[RefKey] = frozenset()
_FIRST = frozenset({0})
_NONE: frozenset[int] = frozenset()
_new_tuple = tuple.__new__
"""Builds a named tuple from its fields as its own ``__new__`` does, minus one Python call per record."""


class StoredRecord(Record):
    """A record of the store: its bytes are its value's, encoded when first asked for.

    The Database sends this store no bytes (``keeps_values``): every reader
    in the process shares the value, and most never want the bytes. A put
    that carried bytes (``write_raw``, a cascade) keeps them as they are.
    """

    __slots__ = ()

    @property
    def data(self) -> bytes:  # the field, made on demand
        """The stored bytes (the value's encoding, for a put that carried none)."""
        data = cast(bytes, tuple.__getitem__(self, 4))
        if type(data) is Deferred:
            return encode(cast(Model, self.value))
        return data


Key = tuple[str, int]
"""(table, id.int): the key of a stored object in the store's dictionaries (hashed in C, untracked by the collector)."""


def key_of(ref: RefKey) -> Key:
    """The store's key of the object ``ref`` (``(table, UUID)``) names."""
    return (ref[0], ref[1].int)


def ref_of(key: Key) -> RefKey:
    """The SPI's ``(table, UUID)`` of a store's key (for what names objects: errors, ``referrers()``)."""
    return (key[0], uuid.UUID(int=key[1]))


UniqueSlot = tuple[str, str, str]
"""(table, field, value) of a unique claim: a plain tuple of strings, which the cyclic collector
stops tracking once it has looked at it (a tuple holding a :class:`UniqueKey` stays tracked)."""


def unique_slot(table: str, key: UniqueKey) -> UniqueSlot:
    """The key of ``key``'s claim in :attr:`MemoryStore.uniques`."""
    return (table, key[0], key[1])


_TOKENS = itertools.count(1)


class MemoryStore:
    """The data of one in-memory database: records, references, revision, bounded history, leases."""

    def __init__(self, history: int = DEFAULT_HISTORY) -> None:
        if history < 1:
            raise errors.ValidationError("memory:// history must be at least 1")
        self.history_limit = history
        self.token = next(_TOKENS)
        """Which store this is (see :attr:`nbdb.spi.Backend.store_token`): unique in the process."""
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.waiting = 0
        """Threads in :meth:`wait` (a commit notifies only when somebody waits)."""
        self.records: dict[Key, Record] = {}
        self.parts: dict[tuple[str | None, str], dict[int, Record]] = {}
        """The records of each (topic, table), by ``id.int``."""
        self.refs: dict[Key, frozenset[RefKey]] = {}
        self.referrers: dict[Key, set[Key]] = {}
        """target -> the objects pointing to it (see :meth:`referrers_of` for the SPI's keys)."""
        self.revision = 0
        self.compacted = 0
        self.history: list[RecordChange] = []
        self.leases = LeaseTable()
        self.counters: dict[str, int] = {}
        self.uniques: dict[UniqueSlot, uuid.UUID] = {}
        self.held: dict[Key, tuple[UniqueSlot, ...]] = {}
        """The unique claims of each object, as the keys of :attr:`uniques` (no second copy of them)."""
        self.expiry: dict[RefKey, tuple[float, float]] = {}
        """(ttl, deadline) of every object created with a ttl."""
        self._reaper: threading.Thread | None = None

    # ---------------------------------------------------------------- commits (caller holds lock)

    def commit(self, ops: Sequence[WriteOp]) -> CommitResult:
        """Check ``ops`` against the current state and apply them at the next revision, all or nothing.

        Each copy installed is stamped with its commit's revision and this store's token (see
        :meth:`nbdb.models.base.Model.committed_at`), under the lock, before any reader is handed it:
        a copy the store writes itself (a weak reference dropped, an owned object's delete) is
        stamped by no writer after, and an unstamped copy's compare-and-swap would hold its version
        only (an object deleted and created again since would take its write). The writer's stamp
        sets the same values again. Inline where each record is installed (a call per object was
        measurable on memory's single writes).
        """
        if len(ops) == 1:
            # One object, the common write: its rules need no transaction shape.
            op = ops[0]
            version = self.check_one(op)
            if version is None:
                return CommitResult(self.revision, [0], _FIRST)
            if type(op) is Put and op.expect_version == 0 and op.ttl is None:
                return _new_tuple(CommitResult, (self.apply_created((op,)), [1], _NONE))
            return _new_tuple(CommitResult, (self.apply((op,), (version,)), [version], _NONE))
        if not ops:
            return CommitResult(self.revision, [])
        revision = self.create_all(ops)
        if revision is not None:
            # A batch of new objects breaking no rule (the common transaction): checked as it is applied.
            return _new_tuple(CommitResult, (revision, [1] * len(ops), _NONE))
        versions = self.updates_ok(ops)
        if versions is not None:
            # A batch of updates that keep their references and unique values: checked in one pass.
            return _new_tuple(CommitResult, (self.apply_updated(ops, versions), versions, _NONE))  # type: ignore[arg-type]
        applied, versions = self.check(ops)
        revision = self.apply(applied, versions) if applied else self.revision
        if len(applied) == len(ops):
            return CommitResult(revision, versions)
        by_key = {(op.table, op.id.int): v for op, v in zip(applied, versions, strict=True)}
        skipped = frozenset(i for i, op in enumerate(ops) if (op.table, op.id.int) not in by_key)
        return CommitResult(revision, [by_key.get((op.table, op.id.int), 0) for op in ops], skipped)

    def check_one(self, op: WriteOp) -> int | None:
        """:meth:`check` of a commit of ``op`` alone: its new version (0: deleted), None if skipped.

        The same rules in the same order, minus what only a transaction of
        several objects can break (an object twice, a reference to an object
        deleted alongside).
        """
        key = (op.table, op.id.int)
        current = self.records.get(key)
        if isinstance(op, Put):
            if op.expect_version == 0:
                if current is not None:
                    raise rules.already_exists((op.table, op.id))
                version, old = 1, _NO_REFS
            else:
                self._check_stored(op, current)
                assert current is not None
                if op.ttl is not None:
                    raise errors.ValidationError(f"{op.table} {op.id}: a ttl is given when an object is created")
                version, old = current.version + 1, self.refs.get(key, _NO_REFS)
            new = op.refs
            if new and new != old:
                me = (op.table, op.id)
                added = new - old if old else new
                for target in sorted(added) if len(added) > 1 else added:
                    if target != me and (target[0], target[1].int) not in self.records:
                        raise rules.dangling(me, target)
                    if (self.expiry and target in self.expiry) or (target == me and op.ttl is not None):
                        raise rules.ttl_referenced(me, target)
            if op.unique:
                uniques = self.uniques
                for claim in op.unique:
                    owner = uniques.get((op.table, claim[0], claim[1]))  # unique_slot, inlined (hot)
                    if owner is not None and owner is not op.id and owner != op.id:
                        raise rules.unique_taken(op.table, claim.field, claim.value, owner)
            return version
        if current is None:
            if op.if_exists:
                return None
            raise rules.not_found((op.table, op.id))
        self._check_stored(op, current)
        referrers = self.referrers.get(key)
        if referrers and (len(referrers) > 1 or key not in referrers):
            raise rules.still_referenced((op.table, op.id), self.referrers_of(key, key), every=True)
        return 0

    def referrers_of(self, key: Key, but: Key | None = None) -> list[RefKey]:
        """The objects pointing to ``key`` (but ``but``), as the SPI's keys, sorted."""
        return sorted(ref_of(source) for source in self.referrers.get(key, ()) if source != but)

    def create_all(self, ops: Sequence[WriteOp]) -> int | None:
        """Commit ``ops`` if they only create objects (without a ttl) and break no rule of :meth:`check`: the revision.

        One pass that checks each new object as it applies it (its record,
        part, references and unique claims; the referrers once all are shown
        to exist): a transaction of new objects is the common batch, and
        :meth:`check` states the rules of any mix of writes. None says only
        "not shown here", with the store as it was (what the pass applied is
        taken back before the caller, who holds the lock, goes on): the caller
        then runs :meth:`check`, which finds the rule broken, if any, and
        raises what it raises for it.
        """
        records, parts, uniques, held, stored_refs = self.records, self.parts, self.uniques, self.held, self.refs
        history = self.history
        append = history.append
        mark = len(history)
        rev = self.revision + 1
        part_table: str | None = None
        part_topic: str | None = None
        part: dict[int, Record] = {}
        made_parts: list[tuple[str | None, str]] = []
        # Siblings point to one shared set of parents (every port of a switch): the objects pointing
        # to the same set in a row are checked, and added to each target's referrers, at once.
        runs: list[tuple[frozenset[RefKey], list[Key]]] = []
        pointing: frozenset[RefKey] = _NO_REFS
        sources: list[Key] = []
        done = 0
        for op in ops:
            if type(op) is not Put or op.expect_version != 0 or op.ttl is not None:
                break
            table, id, topic = op.table, op.id, op.topic
            number = id.int
            key = (table, number)
            if key in records:
                break  # stored already, or twice in this batch (applied above)
            unique = op.unique
            if unique:
                if len(unique) == 1:  # the common case (one unique name), without a comprehension's frame
                    slots: tuple[UniqueSlot, ...] = ((table, unique[0][0], unique[0][1]),)  # unique_slot, inlined
                    if slots[0] in uniques:
                        break  # held, or claimed by an object of this batch (applied above)
                else:
                    slots = tuple([(table, field, value) for field, value in unique])
                    if len(set(slots)) != len(slots) or any(slot in uniques for slot in slots):
                        break
            if table is not part_table or topic != part_topic:  # a transaction's objects mostly share them
                part_table, part_topic = table, topic
                part = parts.get((topic, table))  # type: ignore[assignment]
                if part is None:
                    part = parts[(topic, table)] = {}
                    made_parts.append((topic, table))
            new = _new_tuple(StoredRecord, (table, id, topic, 1, op.data, op.value, rev))
            private = getattr(op.value, "__pydantic_private__", None)  # a stored copy's (see commit)
            if private:  # (not the shared empty marker)
                private["_store"], private["_revision"] = self.token, rev
            records[key] = new
            part[number] = new
            refs = op.refs
            if refs:
                stored_refs[key] = refs
                if refs is not pointing:
                    pointing, sources = refs, []
                    runs.append((refs, sources))
                sources.append(key)
            if unique:
                for slot in slots:
                    uniques[slot] = id
                held[key] = slots
            append(_new_tuple(RecordChange, (table, id, topic, None, new, rev, False)))
            done += 1
        else:
            if self._targets_ok(runs):
                for refs, sources in runs:
                    _point_all(self.referrers, refs, sources)
                self.revision = rev
                if len(history) > self.history_limit:
                    self._trim_history()
                if self.waiting:
                    self.cond.notify_all()
                return rev
        self._take_back(ops[:done], mark, made_parts)
        return None

    def _targets_ok(self, runs: Sequence[tuple[frozenset[RefKey], list[Key]]]) -> bool:
        """Whether every target of these reference sets is stored (or created alongside) and has no ttl."""
        records, expiry = self.records, self.expiry
        checked: frozenset[RefKey] = _NO_REFS
        for refs, _ in runs:
            if refs is checked:
                continue
            checked = refs
            for target in refs:
                if (target[0], target[1].int) not in records:
                    return False
                if expiry and target in expiry:
                    return False
        return True

    def _take_back(self, ops: Sequence[WriteOp], mark: int, made_parts: Sequence[tuple[str | None, str]]) -> None:
        """Undo what :meth:`create_all` applied of ``ops`` (all created by it) before it returned None."""
        records, parts, uniques, held, stored_refs = self.records, self.parts, self.uniques, self.held, self.refs
        for op in ops:
            key = (op.table, op.id.int)
            del records[key]
            del parts[(op.topic, op.table)][key[1]]
            stored_refs.pop(key, None)
            for slot in held.pop(key, ()):
                del uniques[slot]
        del self.history[mark:]
        for where in made_parts:
            if not parts[where]:
                del parts[where]

    def updates_ok(self, ops: Sequence[WriteOp]) -> list[int] | None:
        """The new versions if ``ops`` only update stored objects, keeping their references and unique values.

        Such a batch (a status written to many objects) breaks a rule of
        :meth:`check` only by a stale version or a changed topic, and needs
        none of its reference or unique bookkeeping. None says only "not
        shown here": the caller then runs :meth:`check`.
        """
        records, stored_refs, held = self.records, self.refs, self.held
        seen: set[Key] = set()
        versions: list[int] = []
        for op in ops:
            if type(op) is not Put or op.ttl is not None:
                return None
            key = (op.table, op.id.int)
            current = records.get(key)
            if current is None or current.version != op.expect_version or current.topic != op.topic:
                return None
            expected = op.expect_written
            if expected is not None and expected != current[6]:
                return None  # a copy of an object deleted and created again since: check() refuses it
            refs = op.refs
            old = stored_refs.get(key, _NO_REFS)
            if refs is not old and refs != old:
                return None
            unique = op.unique
            slots = held.get(key, ())
            if len(unique) != len(slots):
                return None
            for (field, value), slot in zip(unique, slots, strict=True):
                if field != slot[1] or value != slot[2]:
                    return None  # a claim moves (or only its order does): check() settles it
            seen.add(key)
            versions.append(current.version + 1)
        if len(seen) != len(ops):
            return None  # an object twice
        return versions

    def apply_updated(self, ops: Sequence[Put], versions: Sequence[int]) -> int:
        """:meth:`apply` of a checked commit of :meth:`updates_ok`: new records, the same indexes, the history."""
        self.revision += 1
        rev = self.revision
        history = self.history
        append = history.append
        records, parts, stored_refs = self.records, self.parts, self.refs
        part_table: str | None = None
        part_topic: str | None = None
        part: dict[int, Record] = {}
        for op, version in zip(ops, versions, strict=True):
            table, id, topic = op.table, op.id, op.topic
            number = id.int
            key = (table, number)
            if table is not part_table or topic != part_topic:
                part_table, part_topic = table, topic
                part = parts[(topic, table)]  # the objects are stored: so is their part
            old = records[key]
            new = _new_tuple(StoredRecord, (table, id, topic, version, op.data, op.value, rev))
            private = getattr(op.value, "__pydantic_private__", None)  # a stored copy's (see commit)
            if private:  # (not the shared empty marker)
                private["_store"], private["_revision"] = self.token, rev
            records[key] = new
            part[number] = new
            refs = op.refs
            if refs and stored_refs[key] is not refs:
                stored_refs[key] = refs  # an equal set: keep the one the write holds, as apply() does
            append(_new_tuple(RecordChange, (table, id, topic, old, new, rev, False)))
        if len(history) > self.history_limit:
            self._trim_history()
        if self.waiting:
            self.cond.notify_all()
        return rev

    def _check_stored(self, op: WriteOp, current: Record | None) -> None:
        """The rules of a write to a stored object: it exists, in the op's topic, at the expected version."""
        if current is None:
            raise rules.not_found((op.table, op.id))
        if current.topic != op.topic:
            raise rules.topic_changed((op.table, op.id), current.topic, op.topic)
        if op.expect_version not in (ANY_VERSION, current.version):
            raise rules.stale((op.table, op.id), current.version, op.expect_version)
        expected = op.expect_written  # (rules.written_differs, inline: every record here knows its revision)
        if expected is not None and expected != current[6]:
            raise rules.recreated((op.table, op.id), current.version)

    def check(self, ops: Sequence[WriteOp]) -> tuple[list[WriteOp], list[int]]:
        """Every rule of the commit, against the current state: the ops to apply and their versions.

        A delete ``if_exists`` of a missing record is dropped.
        """
        records = self.records
        ops = [
            op for op in ops if not (isinstance(op, Delete) and op.if_exists and (op.table, op.id.int) not in records)
        ]
        shape = rules.shape_of(ops)
        versions: list[int] = []
        old_refs: dict[RefKey, frozenset[RefKey]] = {}
        for op in ops:
            me = (op.table, op.id)
            current = records.get((op.table, op.id.int))
            if me in shape.created:
                if current is not None:
                    raise rules.already_exists(me)
                versions.append(1)
                continue
            self._check_stored(op, current)
            assert current is not None
            if isinstance(op, Put) and op.ttl is not None:
                raise errors.ValidationError(f"{op.table} {op.id}: a ttl is given when an object is created")
            old_refs[me] = self.refs.get((op.table, op.id.int), _NO_REFS)
            versions.append(0 if isinstance(op, Delete) else current.version + 1)
        changes = rules.ref_changes(ops, old_refs, shape)
        expiring = {(op.table, op.id) for op in ops if isinstance(op, Put) and op.ttl is not None}
        for target, sources in changes.added.items():
            if target not in shape.created and key_of(target) not in records:
                raise rules.dangling(sources[0], target)
            if target in self.expiry or target in expiring:
                raise rules.ttl_referenced(sources[0], target)
        for target in shape.deleted:
            remaining = rules.remaining_referrers(target, self.referrers_of(key_of(target)), changes)
            if remaining:
                raise rules.still_referenced(target, sorted(remaining), every=True)
        self._check_unique(ops)
        return ops, versions

    def _check_unique(self, ops: Sequence[WriteOp]) -> None:
        released: set[UniqueSlot] = set()
        claimed: dict[UniqueSlot, uuid.UUID] = {}
        held = self.held
        for op in ops:
            if type(op) is Put and op.expect_version == 0:
                continue  # a new object holds nothing yet
            mine = held.get((op.table, op.id.int))
            if mine:
                keep = {unique_slot(op.table, key) for key in op.unique} if type(op) is Put else ()
                released.update(slot for slot in mine if slot not in keep)
        for op in ops:
            if type(op) is not Put or not op.unique:
                continue
            for key in op.unique:
                slot = unique_slot(op.table, key)
                owner = claimed.get(slot, self.uniques.get(slot))
                if owner is not None and owner != op.id and (slot in claimed or slot not in released):
                    raise rules.unique_taken(op.table, key.field, key.value, owner)
                claimed[slot] = op.id

    def apply_created(self, ops: Sequence[Put]) -> int:
        """:meth:`apply` of a checked commit that only creates objects, without a ttl (one :meth:`check_one` passed).

        The same records, indexes and history, in one loop with nothing to
        look up first: a new object holds no references or claims yet.
        """
        self.revision += 1
        rev = self.revision
        history = self.history
        records, parts = self.records, self.parts
        referrers, stored_refs, held, uniques = self.referrers, self.refs, self.held, self.uniques
        append = history.append
        part_table: str | None = None
        part_topic: str | None = None
        part: dict[int, Record] = {}
        # Siblings point to one shared set of parents (every port of a switch): the objects
        # pointing to the same set in a row are added to each target's referrers at once.
        pointing: frozenset[RefKey] = _NO_REFS
        sources: list[Key] = []
        for op in ops:
            table, id, topic = op.table, op.id, op.topic
            number = id.int
            key = (table, number)
            if table is not part_table or topic != part_topic:  # a transaction's objects mostly share them
                part_table, part_topic = table, topic
                part = parts.get((topic, table))  # type: ignore[assignment]
                if part is None:
                    part = parts[(topic, table)] = {}
            new = _new_tuple(StoredRecord, (table, id, topic, 1, op.data, op.value, rev))
            private = getattr(op.value, "__pydantic_private__", None)  # a stored copy's (see commit)
            if private:  # (not the shared empty marker)
                private["_store"], private["_revision"] = self.token, rev
            records[key] = new
            part[number] = new
            refs = op.refs
            if refs:
                stored_refs[key] = refs
                if refs is not pointing:
                    if sources:
                        _point_all(referrers, pointing, sources)
                    pointing, sources = refs, []
                sources.append(key)
            unique = op.unique
            if unique:
                if len(unique) == 1:  # the common case (one unique name), without a comprehension's frame
                    slot = (table, unique[0][0], unique[0][1])  # unique_slot, inlined
                    uniques[slot] = id
                    held[key] = (slot,)
                else:
                    slots = tuple([(table, field, value) for field, value in unique])
                    for slot in slots:
                        uniques[slot] = id
                    held[key] = slots
            append(_new_tuple(RecordChange, (table, id, topic, None, new, rev, False)))
        if sources:
            _point_all(referrers, pointing, sources)
        if len(history) > self.history_limit:
            self._trim_history()
        if self.waiting:
            self.cond.notify_all()
        return rev

    def _trim_history(self) -> None:
        """Drop the oldest changes beyond the history limit, a quarter of it at a time (amortised O(1))."""
        compacted = trim_history(self.history, self.history_limit)
        if compacted is not None:
            self.compacted = compacted

    def apply(self, ops: Sequence[WriteOp], versions: Sequence[int], created: bool = False) -> int:
        """Write a checked commit at the next revision (``created``: it only creates objects)."""
        self.revision += 1
        rev = self.revision
        history = self.history
        records, parts = self.records, self.parts
        referrers, stored_refs, held = self.referrers, self.refs, self.held
        for op, version in zip(ops, versions, strict=True):
            key = (op.table, op.id.int)
            old = None if created else records.get(key)
            part = parts.get((op.topic, op.table))
            if part is None:
                part = parts[(op.topic, op.table)] = {}
            if type(op) is Put:
                new = _new_tuple(StoredRecord, (op.table, op.id, op.topic, version, op.data, op.value, rev))
                private = getattr(op.value, "__pydantic_private__", None)  # a stored copy's (see commit)
                if private:  # (not the shared empty marker)
                    private["_store"], private["_revision"] = self.token, rev
                records[key] = new
                part[key[1]] = new
                refs = op.refs
                # A created object holds no references or unique values yet (a delete drops them).
                if old is None:
                    added = refs
                elif refs or key in stored_refs:
                    added = self._drop_refs(key, refs)
                else:
                    added = _NO_REFS
                if added:
                    _point(referrers, added, key)
                if refs:
                    stored_refs[key] = refs
                if op.unique or (old is not None and key in held):
                    self._set_unique(key, op.id, op.unique, old is None)
                if op.ttl is not None:
                    self.expiry[(op.table, op.id)] = (op.ttl, time.monotonic() + op.ttl)
                    self._start_reaper()
            else:
                new = None
                del records[key]
                del part[key[1]]
                if key in stored_refs:
                    self._drop_refs(key, _NO_REFS)
                if key in held:
                    self._set_unique(key, op.id, ())
                if self.expiry:
                    self.expiry.pop((op.table, op.id), None)
            history.append(_new_tuple(RecordChange, (op.table, op.id, op.topic, old, new, rev, False)))
        if len(history) > self.history_limit:
            self._trim_history()
        if self.waiting:
            self.cond.notify_all()
        return rev

    def wait(self, timeout: float | None) -> None:
        """Wait (holding ``lock``) until a commit, a close or ``timeout``."""
        self.waiting += 1
        try:
            self.cond.wait(timeout)
        finally:
            self.waiting -= 1

    def _set_unique(self, key: Key, id: uuid.UUID, keys: tuple[UniqueKey, ...], created: bool = False) -> None:
        """The object ``key`` (of id ``id``) holds ``keys`` now (``created``: it held none: nothing to release)."""
        table = key[0]
        uniques, held = self.uniques, self.held
        slots = tuple([(table, field, value) for field, value in keys]) if keys else ()  # unique_slot, inlined
        if not created:
            before = held.pop(key, ())
            if before == slots:  # an update that keeps its unique values: the claims stand
                if before:
                    held[key] = before
                return
            for slot in before:
                owner = uniques.get(slot)
                if owner is id or owner == id:
                    del uniques[slot]
        for slot in slots:
            uniques[slot] = id
        if slots:
            held[key] = slots

    def _start_reaper(self) -> None:
        if self._reaper is None or not self._reaper.is_alive():
            self._reaper = threading.Thread(
                target=_reap, args=(weakref.ref(self),), name="nbdb-memory-reaper", daemon=True
            )
            self._reaper.start()

    def reap(self) -> float | None:
        """Delete what has expired (caller holds ``lock``); seconds until the next deadline, None if none."""
        now = time.monotonic()
        expired = [key for key, (_, deadline) in self.expiry.items() if deadline <= now]
        if expired:
            records = self.records
            ops: list[WriteOp] = [Delete(t, i, records[(t, i.int)].topic) for t, i in expired if (t, i.int) in records]
            self.apply(ops, [0] * len(ops))
        if not self.expiry:
            return None
        return max(0.0, min(deadline for _, deadline in self.expiry.values()) - now)

    def _drop_refs(self, key: Key, refs: frozenset[RefKey]) -> frozenset[RefKey]:
        """``key`` (a stored object) points to ``refs`` from now: release the references it drops.

        Returns the references it gains, for the caller to add (one loop for
        created and updated objects, in :meth:`apply`).
        """
        referrers = self.referrers
        old = self.refs.pop(key, _NO_REFS)
        if refs is old:  # the same (shared) set: an update that keeps its references
            return _NO_REFS
        if old:
            for target in old - refs:
                at = (target[0], target[1].int)  # key_of, inlined
                sources = referrers.get(at)
                if sources is not None:
                    sources.discard(key)
                    if not sources:
                        del referrers[at]
            return refs - old
        return refs


def _point(referrers: dict[Key, set[Key]], targets: frozenset[RefKey], source: Key) -> None:
    """Record that ``source`` points to each of ``targets``."""
    for target in targets:
        at = (target[0], target[1].int)  # key_of, inlined
        sources = referrers.get(at)
        if sources is None:
            referrers[at] = {source}
        else:
            sources.add(source)


def _point_all(referrers: dict[Key, set[Key]], targets: frozenset[RefKey], sources: list[Key]) -> None:
    """Record that each of ``sources`` points to each of ``targets`` (:func:`_point` of many sources at once)."""
    for target in targets:
        at = (target[0], target[1].int)  # key_of, inlined
        known = referrers.get(at)
        if known is None:
            referrers[at] = set(sources)
        else:
            known.update(sources)


def _reap(ref: weakref.ReferenceType[MemoryStore]) -> None:
    """The expiry thread of a store: deletes expired objects (watchers see it) until none expire."""
    while True:
        store = ref()
        if store is None:
            return
        with store.lock:
            pause = store.reap()
            if pause is None:
                store._reaper = None
                return
            store.wait(min(pause, 1.0))
        del store
