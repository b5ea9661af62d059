"""The key-value family's layout and commit planner: write operations -> conditional key writes.

Key layout (under the backend's ``key_prefix``)::

    o/<topic>/<table>/<id>               the object's bytes; key version == object version
    i/<table>/<id>                       {"t": topic, "r": [[table, id], ...]}: where it lives, what it references
    r/<table>/<id>/<src_table>/<src_id>  a reverse reference: <src> points to <table>/<id>
    t/<token>                            a commit token (see nbdb.families.kv): "1" applied, "0" voided
    l/<name>                             a lock (lease key holding the owner's token)
    n/<name>                             an id counter

Topic-first object keys let a cache that follows one tenant range and watch
only that tenant's keys (``~`` stands for "no topic"). Reference integrity is
atomic: a create checks that its targets exist (:class:`Exists`) in the same
commit that writes the reverse-reference keys, and a delete checks that its
reverse-reference prefix did not change since it was read
(:class:`PrefixUnchangedSince`). Whichever of two racing commits lands second
sees the other's keys and fails.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nbdb import errors
from nbdb.families import rules
from nbdb.spi import ANY_VERSION, Delete, Put, RefKey, WriteOp

if TYPE_CHECKING:
    from nbdb.families.kv import Condition, KeyValue, KeyValueBackend

__all__ = ["KeyLayout", "Plan", "diagnose", "plan_commit"]

log = logging.getLogger(__name__)


class KeyLayout:
    """Names the family's keys under one prefix, and reads them back."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.objects = f"{prefix}o/"

    def object(self, topic: str | None, table: str, id: uuid.UUID) -> str:
        """The key of an object's bytes."""
        return f"{self.objects}{rules.topic_part(topic)}/{table}/{id}"

    def index(self, table: str, id: uuid.UUID) -> str:
        """The key that says where an object lives and what it references."""
        return f"{self.prefix}i/{table}/{id}"

    def referrers(self, target: RefKey) -> str:
        """The prefix of every reverse reference to ``target``."""
        return f"{self.prefix}r/{target[0]}/{target[1]}/"

    def referrer(self, target: RefKey, source: RefKey) -> str:
        """The reverse reference "``source`` points to ``target``"."""
        return f"{self.referrers(target)}{source[0]}/{source[1]}"

    def token(self, token: str) -> str:
        """The key of a commit token."""
        return f"{self.prefix}t/{token}"

    def lock(self, name: str) -> str:
        """The lease key of a lock."""
        return f"{self.prefix}l/{name}"

    def counter(self, name: str) -> str:
        """The key of an id counter."""
        return f"{self.prefix}n/{name}"

    def object_prefixes(self, tables: Sequence[str] | None, topics: Collection[str | None] | None) -> list[str]:
        """The fewest key prefixes that cover the objects of ``tables`` in ``topics``."""
        if topics is None:
            return [self.objects]
        names = sorted(rules.topic_part(topic) for topic in topics)
        if tables is not None and len(tables) * len(names) <= 16:
            return [f"{self.objects}{t}/{table}/" for t in names for table in tables]
        return [f"{self.objects}{t}/" for t in names]

    def parse_object(self, key: str) -> tuple[str | None, str, uuid.UUID] | None:
        """(topic, table, id) of an object key; None for any other key."""
        if not key.startswith(self.objects):
            return None
        parts = key[len(self.objects) :].split("/")
        if len(parts) != 3:
            return None
        try:
            id = uuid.UUID(parts[2])
        except ValueError:
            log.warning("ignoring key %r: not an object key", key)
            return None
        return rules.topic_of_part(parts[0]), parts[1], id

    def parse_referrer(self, target: RefKey, key: str) -> RefKey:
        """The source named by a reverse-reference key of ``target``."""
        source_table, _, source_id = key[len(self.referrers(target)) :].partition("/")
        return source_table, uuid.UUID(source_id)

    @staticmethod
    def encode_index(topic: str | None, refs: frozenset[RefKey]) -> bytes:
        """The index record of an object."""
        return json.dumps({"t": rules.topic_part(topic), "r": sorted([t, str(i)] for t, i in refs)}).encode()

    @staticmethod
    def decode_index(kv: KeyValue) -> tuple[str | None, frozenset[RefKey]]:
        """(topic, references) of an index record; CorruptRecordError if another writer damaged it."""
        try:
            doc = json.loads(kv.value)
            topic = doc["t"]
            refs = frozenset((str(t), uuid.UUID(i)) for t, i in doc["r"])
        except (ValueError, KeyError, TypeError) as exc:
            raise errors.CorruptRecordError(f"index record {kv.key!r} is corrupt: {exc}", key=kv.key) from None
        return rules.topic_of_part(topic), refs


@dataclass(slots=True)
class Plan:
    """One attempt at a commit: the conditions it needs and the keys it writes."""

    conditions: list[Condition] = field(default_factory=list)
    puts: dict[str, bytes] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    topics: dict[RefKey, str | None] = field(default_factory=dict)


def plan_commit(backend: KeyValueBackend, ops: Sequence[WriteOp], shape: rules.TransactionShape) -> Plan:
    """Read what ``ops`` need to know and turn them into one conditional multi-key commit."""
    from nbdb.families.kv import Exists, PrefixUnchangedSince, VersionIs

    layout = backend.layout
    plan = Plan()
    old_refs: dict[RefKey, frozenset[RefKey]] = {}
    for op in ops:
        me = (op.table, op.id)
        okey = layout.object(op.topic, op.table, op.id)
        if isinstance(op, Put) and op.expect_version == 0:
            # The index key is written with every object key: its absence is the object's.
            plan.conditions.append(VersionIs(layout.index(op.table, op.id), 0))
            plan.versions.append(1)
        else:
            if op.old_refs is not None and op.expect_version != ANY_VERSION:
                stored_topic = backend.topic_of(op.table, op.id)
                old_refs[me] = op.old_refs
            else:
                found = backend.index_of(op.table, op.id)
                if found is None:
                    raise rules.not_found(me)
                _, stored_topic, old_refs[me] = found
            if stored_topic is backend.MISSING:
                raise rules.not_found(me)
            if stored_topic != op.topic:
                raise rules.topic_changed(me, stored_topic, op.topic)
            expect = op.expect_version
            if expect == ANY_VERSION:
                current = backend.get_key(okey)
                if current is None:
                    raise rules.not_found(me)
                expect = current.version
            plan.conditions.append(VersionIs(okey, expect))
            plan.versions.append(0 if isinstance(op, Delete) else expect + 1)
        plan.topics[me] = op.topic
        if isinstance(op, Put):
            plan.puts[okey] = op.data
            if op.expect_version == 0 or op.refs != old_refs.get(me):
                plan.puts[layout.index(op.table, op.id)] = layout.encode_index(op.topic, op.refs)
        else:
            plan.deletes += [okey, layout.index(op.table, op.id)]

    changes = rules.ref_changes(ops, old_refs, shape)
    checked: set[RefKey] = set()
    for target, sources in changes.added.items():
        if target not in shape.created and target not in checked:
            checked.add(target)
            topic = backend.topic_of(*target)
            if topic is backend.MISSING:
                raise rules.dangling(sources[0], target)
            plan.conditions.append(Exists(layout.object(topic, *target)))
        for source in sources:
            plan.puts[layout.referrer(target, source)] = b""
    for target, sources in changes.dropped.items():
        plan.deletes += [layout.referrer(target, source) for source in sources]

    for target in shape.deleted:
        referrers, revision = backend.referrers_at(*target)
        remaining = rules.remaining_referrers(target, referrers, changes)
        if remaining:
            raise rules.still_referenced(target, remaining)
        plan.conditions.append(PrefixUnchangedSince(layout.referrers(target), revision))
    return plan


def diagnose(backend: KeyValueBackend, ops: Sequence[WriteOp], shape: rules.TransactionShape) -> None:
    """After a commit's conditions failed, raise the error that explains it (or return to re-plan)."""
    layout = backend.layout
    for op in ops:
        me = (op.table, op.id)
        found = backend.index_of(op.table, op.id)
        if me in shape.created:
            if found is not None:
                raise rules.already_exists(me)
            continue
        if found is None:
            raise rules.not_found(me, "deleted concurrently?")
        kv = backend.get_key(layout.object(found[1], op.table, op.id))
        if kv is None:
            raise rules.not_found(me, "deleted concurrently?")
        if op.expect_version not in (ANY_VERSION, kv.version):
            raise rules.stale(me, kv.version, op.expect_version)
    for op in ops:
        if not isinstance(op, Put):
            continue
        for target in op.refs - (op.old_refs or frozenset()) - shape.created:
            # Read through to the store: the topic cache may still hold a target deleted meanwhile.
            if backend.index_of(*target) is None:
                raise rules.dangling((op.table, op.id), target)
    # Otherwise a referrer appeared (or came and went): the next plan sees which.
