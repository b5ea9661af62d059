"""The key-value family's layout and commit planner: write operations -> conditional key writes.

Key layout (under the backend's ``key_prefix``)::

    o/<topic>/<table>/<id>               the object's bytes; key version == object version
    i/<table>/<id>                       {"t": topic, "r": [[table, id], ...], "u": [[field, value]...], "x": ttl}
    r/<table>/<id>/<src_table>/<src_id>  a reverse reference: <src> points to <table>/<id>
    u/<table>/<field>/<hash of value>    a unique value: the id of the object that holds it
    e/<table>/<id>                       an expiring object's deadline (wall-clock seconds)
    t/<token>                            a commit token (see nbdb.families.kv): "1" applied, "0" voided
    l/<name>                             a lock (lease key holding the owner's token)
    n/<name>                             an id counter
    p/<topic>                            a topic in use (etcd and Hazelcast: their registries, see
                                         EtcdBackend.object_topics, HazelcastBackend.scan_spans)

Topic-first object keys let a cache that follows one tenant range and watch
only that tenant's keys (``~`` stands for "no topic"). Reference integrity is
atomic: a create checks that its targets exist (:class:`Exists`) in the same
commit that writes the reverse-reference keys, and a delete checks that its
reverse-reference prefix did not change since it was read
(:class:`PrefixUnchangedSince`). Whichever of two racing commits lands second
sees the other's keys and fails. A delete that drops no reference to its
target is first planned without reading the prefix: it asks that the prefix be
empty (``PrefixUnchangedSince(prefix, 0)``, which no stored key satisfies), the
same rule checked by the store in the commit itself, one round trip fewer; only
if that fails is the prefix read and the delete planned again (``optimistic``).
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
import logging
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import pydantic

from nbdb import errors
from nbdb.families import rules
from nbdb.families.kvtypes import Condition, Exists, KeyValue, PrefixUnchangedSince, ValueIs, VersionIs, WrittenAt
from nbdb.spi import ANY_VERSION, Put, Record, RefKey, UniqueKey, WriteOp

if TYPE_CHECKING:  # the planner reads through the backend it plans for (a type only: no import cycle)
    from nbdb.families.kv import KeyValueBackend

__all__ = [
    "ANY_TOPIC",
    "TOPIC_PROBES",
    "Index",
    "KeyLayout",
    "Plan",
    "decode_deadline",
    "diagnose",
    "encode_deadline",
    "id_text",
    "outside_tables",
    "plan_commit",
    "vet_released",
    "wildcard_split",
]

log = logging.getLogger(__name__)

_UUIDS = pydantic.TypeAdapter(list[uuid.UUID])
"""Object ids in bulk (see :meth:`KeyLayout.records`)."""

_new_tuple = tuple.__new__
"""A Record built without its Python ``__new__`` (a Python call per listed object)."""

_json_text = json.encoder.encode_basestring_ascii
"""A string as ``json.dumps`` writes it (quoted, escaped, ASCII)."""


_TEXTS_LIMIT = 65536
_TEXTS: dict[int, str] = {}
"""Recent ids as text (bounded), keyed by the id's integer. ``UUID.__str__`` is Python code, and a
commit names the ids it writes and points to in four to eight keys: a port's switch is named by
every port's commit. Not keyed by the UUID: its ``__hash__`` is Python code too, and a UUID kept
is an object the garbage collector tracks (one per object created, each a full collection's work
sooner); an int is hashed in C and not tracked."""


def id_text(id: uuid.UUID | str) -> str:
    """``str(id)``, remembered for the next commit that names the same object."""
    try:
        number = id.int  # type: ignore[union-attr]
    except AttributeError:
        return str(id)  # already text
    text = _TEXTS.get(number)
    if text is None:
        if len(_TEXTS) >= _TEXTS_LIMIT:
            _TEXTS.clear()  # bounded: a workload that moves between parents starts over
        text = _TEXTS[number] = str(id)
    return text


_REFS_JSON: dict[tuple[str, int], str] = {}
"""``[table, "id"]`` of recent references, by (table, the id's integer): bounded like :data:`_TEXTS`."""
_TOPICS_JSON: dict[str | None, str] = {}
"""An index record's opening up to its references, by topic (bounded)."""


def _ref_json(table: str, id: uuid.UUID) -> str:
    """A reference as an index record lists it (a pair ``json.dumps`` writes), remembered."""
    memo = (table, id.int)
    text = _REFS_JSON.get(memo)
    if text is None:
        if len(_REFS_JSON) >= _TEXTS_LIMIT:
            _REFS_JSON.clear()
        text = _REFS_JSON[memo] = f'[{_json_text(table)}, "{id_text(id)}"]'
    return text


def _topic_json(topic: str | None) -> str:
    """``{"t": <topic>, "r": [`` for ``topic``, remembered."""
    text = _TOPICS_JSON.get(topic)
    if text is None:
        if len(_TOPICS_JSON) >= _TEXTS_LIMIT:
            _TOPICS_JSON.clear()
        text = _TOPICS_JSON[topic] = f'{{"t": {_json_text(rules.topic_part(topic))}, "r": ['
    return text


ANY_TOPIC = "*"
"""The topic component of a scan prefix ``o/*/<table>/``: the table's objects under every topic.

Not a topic's spelling (``*`` is no legal topic character, nor is ``~``, :data:`rules.NO_TOPIC`).
Only a backend that declares ``topic_wildcard`` is given such prefixes, and only to
``range_keys``/``range_rows`` (never to watches or ``range_page``): it reads, at the range's one
revision, the topics present under ``o/`` and then ``o/<topic>/<table>/`` of each.
"""


TOPIC_PROBES = 32
"""The most topics a scan of a wildcard finds one by one (a skip scan: a read each) before it reads ``o/`` whole."""


def wildcard_split(prefix: str, objects: str) -> str | None:
    """The ``<table>/`` after ``o/*/`` of a wildcard prefix (see :data:`ANY_TOPIC`); None for any other prefix."""
    head = f"{objects}{ANY_TOPIC}/"
    return prefix[len(head) :] if prefix.startswith(head) else None


def outside_tables(key: str, objects: str, tables: tuple[str, ...]) -> bool:
    """Whether a key a whole ``o/`` range read falls outside the ``<table>/`` parts of wildcard prefixes.

    What a store that reads ``o/`` whole in place of wildcards (etcd past too many unregistered
    topics) drops, so that its range holds what the prefixes asked for; Hazelcast checks by it the
    keys its member already kept. Redis no longer uses it: past ``batch`` keys its batched read
    spells the wildcard out with the topics its range script found (see ``RedisBackend.range_keys``).
    """
    return key.startswith(objects) and not key[len(objects) :].partition("/")[2].startswith(tables)


_UNIQUE_LIMIT = 16384
"""Unique values' keys a layout remembers (each ≈ 200 bytes with its lookup key)."""


class KeyLayout:
    """Names the family's keys under one prefix, and reads them back.

    Ids may be given as text (``str(id)``): the planner spells each id once per commit.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.objects = f"{prefix}o/"
        self._expiries = f"{prefix}e/"
        self._referrers = f"{prefix}r/"
        self._unique: dict[tuple[str, str, str], str] = {}
        """(table, field, value) -> unique key: plain tuples of text, which the garbage collector
        stops tracking (a UniqueKey kept in the key was two tracked objects per object created)."""

    def object(self, topic: str | None, table: str, id: uuid.UUID | str) -> str:
        """The key of an object's bytes."""
        return f"{self.objects}{rules.topic_part(topic)}/{table}/{id}"

    @property
    def topic_marks(self) -> str:
        """The prefix of the registry of topics a store may keep (``p/<topic>``: see ``kvregistry``)."""
        return f"{self.prefix}p/"

    def topic_mark(self, part: str) -> str:
        """The registry key of a topic (``part``: as keys spell it, ``~`` for none)."""
        return f"{self.prefix}p/{part}"

    def index(self, table: str, id: uuid.UUID | str) -> str:
        """The key that says where an object lives and what it references."""
        return f"{self.prefix}i/{table}/{id}"

    def referrers(self, target: RefKey) -> str:
        """The prefix of every reverse reference to ``target``."""
        return f"{self.prefix}r/{target[0]}/{id_text(target[1])}/"

    def referrer(self, target: RefKey, source: RefKey, source_text: str | None = None) -> str:
        """The reverse reference "``source`` points to ``target``" (``source_text``: its id as text, if known)."""
        return f"{self.referrers(target)}{source[0]}/{source_text or id_text(source[1])}"

    @staticmethod
    def referrer_under(referrers: str, source: RefKey) -> str:
        """The reverse reference of ``source`` under a target's prefix (:meth:`referrers`)."""
        return f"{referrers}{source[0]}/{id_text(source[1])}"

    def unique(self, table: str, key: UniqueKey) -> str:
        """The key that names the holder of a unique value (the value is hashed: any text fits a key).

        Remembered (bounded): an update or a delete names the unique values its object already
        holds, and the SHA-256 and its hex were ≈ 1 µs of every such commit.
        """
        field, value = key
        memo = (table, field, value)
        found = self._unique.get(memo)
        if found is None:
            if len(self._unique) >= _UNIQUE_LIMIT:
                self._unique.clear()
            digest = hashlib.sha256(value.encode()).hexdigest()[:40]
            found = self._unique[memo] = f"{self.prefix}u/{table}/{field}/{digest}"
        return found

    def unique_table(self, key: str) -> str | None:
        """The table of a unique value's key (:meth:`unique`); None for a key of another kind."""
        start = len(self.prefix) + 2
        if not (key.startswith(self.prefix) and key.startswith("u/", start - 2)):
            return None
        end = key.find("/", start)
        return key[start:end] if end > start else None

    def expiry(self, table: str, id: uuid.UUID | str) -> str:
        """The key that holds an expiring object's deadline (the reaper ranges them)."""
        return f"{self.prefix}e/{table}/{id}"

    @property
    def expiries(self) -> str:
        """The prefix of every expiry key."""
        return self._expiries

    def parse_expiry(self, key: str) -> RefKey | None:
        """(table, id) of an expiry key."""
        table, _, id = key[len(self.expiries) :].partition("/")
        try:
            return table, uuid.UUID(id)
        except ValueError:
            return None

    def token(self, token: str) -> str:
        """The key of a commit token."""
        return f"{self.prefix}t/{token}"

    def lock(self, name: str) -> str:
        """The lease key of a lock."""
        return f"{self.prefix}l/{name}"

    def counter(self, name: str) -> str:
        """The key of an id counter."""
        return f"{self.prefix}n/{name}"

    def counter_mark(self, name: str) -> str:
        """The key of an id counter's high-water mark (at least every id handed out), under a prefix of its own.

        A counter key another writer deleted (``etcdctl del``, a cleanup of ``n/``) restarted at 1 and handed
        out ids already in use: nothing told its absence from a new counter's. The counter counts on from
        its mark when it is gone (see ``KeyValueBackend.allocate_id``).
        """
        return f"{self.prefix}h/{name}"

    def range_root(self, key: str) -> int | None:
        """How much of ``key``'s path the family may range over: the length of the shortest prefix it asks for.

        0: any ancestor directory (object keys: lists by topic, by table, or
        all); n > 0: only prefixes of at least n characters (reverse
        references, listed per target); None: the key is only ever read by
        name. Stores that index directories for ranges index only what this says.
        """
        if key.startswith(self.objects):
            return len(self.prefix)
        if key.startswith(self._expiries):
            return len(self._expiries)
        referrers = self._referrers
        if key.startswith(referrers):
            table_end = key.find("/", len(referrers))
            id_end = key.find("/", table_end + 1)
            return None if table_end < 0 or id_end < 0 else id_end + 1
        return None

    def object_prefixes(
        self, tables: Sequence[str] | None, topics: Collection[str | None] | None, any_topic: bool = False
    ) -> list[str]:
        """The fewest key prefixes that cover the objects of ``tables`` in ``topics``.

        ``any_topic`` (a store's range reads them, see ``KeyValueBackend.topic_wildcard``): with no
        topic filter, a few tables are named as ``o/*/<table>/`` (:data:`ANY_TOPIC`), "that table
        under every topic", instead of ``o/``, every object of every table, which a scan of a small
        table beside a large one read and dropped (issue 13).
        """
        if topics is None:
            if any_topic and tables is not None and 0 < len(tables) <= 16:
                return [f"{self.objects}{ANY_TOPIC}/{table}/" for table in sorted(set(tables))]
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
            id = None
        if id is None or str(id) != parts[2]:
            # Only an id's own spelling: an alias ("{id}", upper case, no dashes) that another writer stored
            # would be a second copy of the object, and its deletion the deletion of the object, for readers.
            log.warning("ignoring key %r: not an object key", key)
            return None
        return rules.topic_of_part(parts[0]), parts[1], id

    def records(self, rows: Sequence[Sequence[Any]], tables: Collection[str], written: bool = False) -> list[Record]:
        """The records of the objects of ``tables`` among ``rows`` (key, value, version): a scan's, in one pass.

        What :meth:`parse_object` finds of each key, without a tuple per key:
        a key that is no object key, or an object of another table, is left
        out before its id is parsed, and the ids of the rest are parsed in one
        call, in C (``uuid.UUID(text)`` is about 1.4 µs of Python per key,
        pydantic's validator about a third of that). A key whose id is
        refused sends the rows through :meth:`parse_object`, whose answer (a
        warning and no record for such a key) is the rule.
        """
        objects = self.objects
        start = len(objects)
        kept: list[Sequence[Any]] = []
        heads: list[list[str]] = []
        texts: list[str] = []
        for row in rows:
            key = row[0]
            if key.startswith(objects):
                parts = key[start:].split("/")
                if len(parts) == 3 and parts[1] in tables:
                    kept.append(row)
                    heads.append(parts)
                    texts.append(parts[2])
        try:
            ids = _UUIDS.validate_python(texts)
            # Ids spelled their own way only (see parse_object): 36 characters, none upper case.
            joined = "".join(texts)
            if len(set(map(len, texts)) - {36}) or joined.lower() != joined:
                raise ValueError(joined)
        except (pydantic.ValidationError, ValueError):
            parsed = ((row, self.parse_object(row[0])) for row in kept)
            return [
                Record(p[1], p[2], p[0], row[2], row[1], None, (row[3] or None) if written else None)
                for row, p in parsed
                if p is not None
            ]
        no_topic = rules.NO_TOPIC
        # Built as tuples (Record's own __new__ is a Python call per listed object). ``written``: each
        # record carries its row's fourth item, the key's mod revision (see nbdb.spi.Record.written).
        if written:
            return [
                _new_tuple(
                    Record,
                    (parts[1], id, None if parts[0] == no_topic else parts[0], row[2], row[1], None, row[3] or None),
                )
                for row, parts, id in zip(kept, heads, ids, strict=True)
            ]
        return [
            _new_tuple(Record, (parts[1], id, None if parts[0] == no_topic else parts[0], row[2], row[1], None, None))
            for row, parts, id in zip(kept, heads, ids, strict=True)
        ]

    def parse_referrer(self, target: RefKey, key: str) -> RefKey:
        """The source named by a reverse-reference key of ``target``; CorruptRecordError for one nbdb did not write.

        Another writer's key under the target's prefix with no id after the table was a raw
        ValueError out of every delete of the target and every ``referrers()`` of it.
        """
        source_table, _, source_id = key[len(self.referrers(target)) :].partition("/")
        try:
            if source_table:
                return source_table, uuid.UUID(source_id)
        except ValueError:
            pass
        raise errors.CorruptRecordError(
            f"reverse reference {key!r} names no '<table>/<id>': nbdb did not write it", key=key
        )

    @staticmethod
    def encode_index(index: Index) -> bytes:
        """The index record of an object: the JSON ``json.dumps`` writes, spelled out (it is on every write).

        Its parts are remembered (bounded): the opening per topic and each reference's pair per
        (table, id's integer), which every port of a switch repeats; one reference or one unique
        value, every port's case, is written without a generator's frame.
        """
        refs = index.refs
        if len(refs) == 1:
            for table, id in refs:
                listed = _ref_json(table, id)
        else:
            listed = ", ".join([_ref_json(t, i) for t, _, i in sorted([(t, id_text(i), i) for t, i in refs])])
        out = f"{_topic_json(index.topic)}{listed}]"
        unique = index.unique
        if unique:
            if len(unique) == 1:
                out += f', "u": [[{_json_text(unique[0][0])}, {_json_text(unique[0][1])}]]'
            else:
                out += ', "u": [' + ", ".join([f"[{_json_text(f)}, {_json_text(v)}]" for f, v in unique]) + "]"
        if index.ttl is not None:
            out += f', "x": {json.dumps(index.ttl)}'
        return (out + "}").encode()

    @staticmethod
    def decode_index(kv: KeyValue) -> Index:
        """The index record; CorruptRecordError if another writer damaged it."""
        try:
            doc = json.loads(kv.value)
            topic = doc["t"]
            refs = frozenset((str(t), uuid.UUID(i)) for t, i in doc["r"])
            unique = tuple(UniqueKey(str(f), str(v)) for f, v in doc.get("u", ()))
            ttl = doc.get("x")
            ttl = None if ttl is None else float(ttl)
        except (ValueError, KeyError, TypeError, RecursionError) as exc:  # JSON nested past the recursion limit
            raise errors.CorruptRecordError(f"index record {kv.key!r} is corrupt: {exc}", key=kv.key) from None
        return Index(rules.topic_of_part(topic), refs, unique, ttl, kv.version)


class Index(NamedTuple):
    """What an object's index record says: where it lives, what it references, what it holds.

    A named tuple: a write builds one or two per object (a frozen dataclass took 2.5 times as long).
    """

    topic: str | None
    refs: frozenset[RefKey]
    unique: tuple[UniqueKey, ...] = ()
    ttl: float | None = None
    """Seconds it lives unless refreshed (None: it does not expire)."""
    version: int = 0
    """The index key's version (0: not read from the store)."""


@dataclass(slots=True)
class Plan:
    """One attempt at a commit: the conditions it needs and the keys it writes."""

    conditions: list[Condition] = field(default_factory=list)
    puts: dict[str, bytes] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    indexes: list[tuple[RefKey, Index | None]] = field(default_factory=list)
    """Each written object and its index after the commit (None: deleted), in the order of the operations.

    A list, not a dict keyed by (table, id): hashing that key calls ``UUID.__hash__`` (Python)."""
    released: dict[str, bytes] = field(default_factory=dict)
    """Each unique claim the commit releases, and the id (as stored) of the first object releasing it."""


Claims = dict[str, tuple[bytes | None, bool]]
"""Released claims as a failed commit's diagnosis found them (:func:`vet_released`): claim key -> (the id it
holds, None if absent; whether it is another object's, which holds the value, and stays)."""


def plan_commit(
    backend: KeyValueBackend,
    ops: Sequence[WriteOp],
    shape: rules.TransactionShape,
    now: float,
    optimistic: bool = False,
    claims: Claims | None = None,
) -> Plan:
    """Read what ``ops`` need to know and turn them into one conditional multi-key commit (``now``: wall clock).

    ``optimistic``: a deleted object whose references the commit leaves alone
    is taken to have no referrers (the store checks that its reverse-reference
    prefix is empty) instead of reading them first. ``claims``: released claims
    an earlier attempt's diagnosis read (:func:`vet_released`).
    """

    layout = backend.layout
    written = backend.records_written
    plan = Plan()
    conditions, puts, versions, indexes = plan.conditions, plan.puts, plan.versions, plan.indexes
    olds: list[Index] = []
    """Each written object's index before the commit, in the order of ``ops``."""
    old_refs: dict[RefKey, frozenset[RefKey]] = {}
    """The references of each written object that has some (a created one has none)."""
    # Per object, nothing is looked up by (table, id) that a local can hold: the tuple's hash
    # calls UUID.__hash__, Python code, and a create of a port paid ≈ 16 of them here.
    for op in ops:
        sid = id_text(op.id)  # remembered: an update or delete names an id its create did
        okey = layout.object(op.topic, op.table, sid)
        ikey = layout.index(op.table, sid)
        if isinstance(op, Put) and op.expect_version == 0:
            # The index key is written with every object key: its absence is the object's.
            conditions.append(_new_tuple(VersionIs, (ikey, 0)))
            versions.append(1)
            was = _new_tuple(Index, (op.topic, _NO_REFS, (), None, 0))
        else:
            me = (op.table, op.id)
            found = None
            if op.old_refs is not None and op.old_unique is not None and op.expect_version != ANY_VERSION:
                found = backend.known_index(op.table, op.id, op.old_refs, op.old_unique)
            if found is None:
                found = backend.index_record(op.table, op.id)
                if found is None:
                    raise rules.not_found(me)
            was = found
            if was.topic != op.topic:
                raise rules.topic_changed(me, was.topic, op.topic)
            if isinstance(op, Put) and op.ttl is not None:
                raise errors.ValidationError(f"{op.table} {op.id}: a ttl is given when an object is created")
            if was.refs:
                old_refs[me] = was.refs
            expect = op.expect_version
            if expect == ANY_VERSION:
                current = backend.get_key(okey)
                if current is None:
                    raise rules.not_found(me)
                # A delete of whatever version removes a damaged record too (the way to be rid of it).
                expect = rules.stored_version(me, current.version) if isinstance(op, Put) else current.version
            if op.expect_written is not None and written:
                # The copy's write, exactly (see WrittenAt): its version, and no re-creation of the id since.
                conditions.append(_new_tuple(WrittenAt, (okey, op.expect_written)))
            else:
                conditions.append(_new_tuple(VersionIs, (okey, expect)))
            versions.append(expect + 1 if isinstance(op, Put) else 0)
        olds.append(was)
        if isinstance(op, Put):
            puts[okey] = op.data
            ttl = op.ttl if op.expect_version == 0 else was.ttl
            index = _new_tuple(Index, (op.topic, op.refs, op.unique, ttl, 0))
            indexes.append(((op.table, op.id), index))
            if op.expect_version == 0 or (index.topic, index.refs, index.unique, index.ttl) != (
                was.topic, was.refs, was.unique, was.ttl
            ):  # fmt: skip
                puts[ikey] = layout.encode_index(index)
            if op.ttl is not None:
                puts[layout.expiry(op.table, sid)] = encode_deadline(now + op.ttl)
        else:
            indexes.append(((op.table, op.id), None))
            plan.deletes += [okey, ikey]
            if was.ttl is not None:
                plan.deletes.append(layout.expiry(op.table, sid))

    changes = rules.ref_changes(ops, old_refs, shape)
    checked: set[RefKey] = set()
    for target, sources in changes.added.items():
        if target not in shape.created and target not in checked:
            checked.add(target)
            found = backend.target_index(*target)
            if found is None:
                raise rules.dangling(sources[0], target)
            if found.ttl is not None:
                raise rules.ttl_referenced(sources[0], target)
            conditions.append(Exists(layout.object(found.topic, target[0], id_text(target[1]))))
        elif target in shape.created and any(
            isinstance(op, Put) and op.ttl is not None and (op.table, op.id) == target for op in ops
        ):
            raise rules.ttl_referenced(sources[0], target)
        under = layout.referrers(target)  # the target's part of the key, spelled once for all its sources
        for source in sources:
            puts[layout.referrer_under(under, source)] = b""
    for target, sources in changes.dropped.items():
        under = layout.referrers(target)
        plan.deletes += [layout.referrer_under(under, source) for source in sources]

    # The referrers of the deleted targets that must be read, in batched reads (a cascade planned
    # again deletes every port of a switch: a range per port was quadratic on Redis, see referrers_at_many).
    read = [t for t in shape.deleted if not optimistic or changes.dropped.get(t)]
    held = backend.referrers_at_many(read) if read else {}
    for target in shape.deleted:
        if optimistic and not changes.dropped.get(target):
            # Any referrer left would refuse the delete, so "none at all" is the rule itself.
            conditions.append(PrefixUnchangedSince(layout.referrers(target), 0))
            continue
        referrers, revision = held[target]
        remaining = rules.remaining_referrers(target, referrers, changes)
        if remaining:
            remaining = _real_referrers(backend, layout, target, remaining, plan)
        if remaining:
            raise rules.still_referenced(target, remaining, every=True)
        conditions.append(PrefixUnchangedSince(layout.referrers(target), revision))
    _plan_unique(layout, ops, olds, plan, claims)
    return plan


_NO_REFS: frozenset[RefKey] = frozenset()


def _real_referrers(
    backend: KeyValueBackend, layout: KeyLayout, target: RefKey, remaining: list[RefKey], plan: Plan
) -> list[RefKey]:
    """The referrers that refuse ``target``'s delete: each source's index is read (only on this path).

    A reverse reference lands with its source's index in one commit and goes with it: one whose
    source does not exist, or does not reference ``target``, is another writer's. Trusted, it
    refused every delete of the target for good, naming an object that does not exist. Such keys
    go with the delete (whose condition on the referrers' prefix stops it if one is written meanwhile).
    """
    real = []
    for source in remaining:
        found = backend.index_record(*source)
        if found is not None and target in found.refs:
            real.append(source)
        else:
            plan.deletes.append(layout.referrer(target, source))
    return real


def _plan_unique(
    layout: KeyLayout, ops: Sequence[WriteOp], olds: Sequence[Index], plan: Plan, claims: Claims | None
) -> None:
    """Claim the unique values the commit adds and release the ones it drops, atomically with it.

    ``olds``: each written object's index before the commit, in the order of ``ops``. A released claim is
    deleted on condition that it still names the object releasing it (:class:`ValueIs`): deleted unread, one
    another tool had pointed at another object freed the value under that object. ``claims``: what a failed
    attempt found instead (:func:`vet_released`): a claim gone is left so (its absence the condition), one
    naming another holder of the value stays with it.
    """

    released = plan.released  # in the order of the operations, as the store is sent them
    claimed: dict[str, uuid.UUID] = {}
    releasers: dict[str, tuple[WriteOp, Index]] = {}
    for op, was in zip(ops, olds, strict=True):
        if was.unique:  # none for a create
            keep = set(op.unique) if isinstance(op, Put) else ()
            for key in was.unique:
                if key not in keep:
                    ukey = layout.unique(op.table, key)
                    if ukey not in released:
                        released[ukey] = id_text(op.id).encode()
                        releasers[ukey] = (op, was)
    conditions, puts = plan.conditions, plan.puts
    for op, was in zip(ops, olds, strict=True):
        if not isinstance(op, Put) or not op.unique:
            continue
        sid = None
        for key in op.unique:
            ukey = layout.unique(op.table, key)
            if ukey in claimed:
                raise rules.unique_taken(op.table, key.field, key.value, claimed[ukey])
            claimed[ukey] = op.id
            if key in was.unique:
                continue  # already ours
            if ukey not in released:
                conditions.append(_new_tuple(VersionIs, (ukey, 0)))
            if sid is None:
                sid = id_text(op.id).encode()
            puts[ukey] = sid
    if not released:
        return
    deletes = plan.deletes
    pinned: set[str] = set()
    for ukey, holder in released.items():
        found = None if claims is None else claims.get(ukey)
        if found is None:  # as planned: it names the object releasing it
            conditions.append(_new_tuple(ValueIs, (ukey, holder)))
            if ukey not in claimed:
                deletes.append(ukey)
            continue
        # What an earlier attempt found of the claim is trusted only for the index this plan read: the
        # index and the object's version are two reads (a delete of any version), and a rename landing
        # between them, trusted, released the old value's claim as "gone" while the new value's claim
        # stayed behind the deleted object, naming it for ever. Pinned only on this path (a damaged or
        # moved claim's retry): the first attempt's ValueIs already fails on such a rename.
        op, was = releasers[ukey]
        ikey = layout.index(op.table, id_text(op.id))
        if was.version and ikey not in pinned:
            pinned.add(ikey)
            conditions.append(_new_tuple(VersionIs, (ikey, was.version)))
        if found[0] is None:  # gone already: it stays so (the commit's puts of it, if any, take it)
            conditions.append(_new_tuple(VersionIs, (ukey, 0)))
        else:
            conditions.append(_new_tuple(ValueIs, (ukey, found[0])))
            if not found[1] and ukey not in claimed:
                deletes.append(ukey)


def vet_released(backend: KeyValueBackend, ops: Sequence[WriteOp], plan: Plan, claims: Claims) -> bool:
    """After a commit's conditions failed, read the claims it released into ``claims`` for the next plan.

    nbdb writes a claim in the commit that writes its holder's index, naming that holder, and releases it
    in the commit that drops the value from it. A released claim that names another object is another
    writer's damage, of one record or the other:

    - the claim is true: the object it names exists and its index holds the value, so the index of the object
      written is the damaged one (another tool made it a second holder). The claim stays with its holder and
      the commit goes ahead without its delete: deleted, it freed the value under its true holder (a create
      of the value then succeeded beside it), and refused, the object written could never go;
    - the claim lies: it holds no id, or names an object that does not exist or whose index does not hold
      the value. CorruptRecordError naming the key (:func:`check_claim_held`, the rule of every claim found
      wrong), which stays as it was (its delete destroyed the evidence), once a second read finds it
      unchanged (else it moved meanwhile: planned again).

    A claim naming another object the commit writes, or gone, is noted for the next plan as it is.
    Returns whether the next plan releases any claim otherwise than ``plan`` did (found gone, with its true
    holder, or moved meanwhile): if not, the claims did not fail the commit, and a retry that cannot see
    another change (the reaper's, whose deadline was read once) fails again.
    """
    if not plan.released:
        return False
    layout = backend.layout
    keys = list(plan.released)
    writers = {id_text(op.id).encode() for op in ops}
    differs = False
    for key, kv in zip(keys, backend.get_keys(keys), strict=True):
        planned = claims.get(key, (plan.released[key], False))
        if kv is None:
            found: tuple[bytes | None, bool] = (None, False)
        elif kv.value == plan.released[key] or kv.value in writers:
            found = (kv.value, False)
        else:
            table = layout.unique_table(key)
            if table is None:  # pragma: no cover - the planner releases claims only
                continue
            owner = _owner(kv.value)
            if owner is not None and str(owner).encode() != kv.value:
                owner = None  # an id spelt otherwise: no write of its holder would release it
            why = _claim_held(backend, table, key, owner)
            if why is not None:
                check_claim_held(backend, kv, table, kv.value if owner is None else owner, why, released=True)
                claims.pop(key, None)  # it moved meanwhile
                differs = True
                continue
            found = (kv.value, True)  # a true claim: the index of the object written lies
        claims[key] = found
        differs = differs or found != planned
    return differs


def _claim_held(backend: KeyValueBackend, table: str, key: str, owner: uuid.UUID | None) -> str | None:
    """Why the object the claim ``key`` names, ``owner``, does not hold its value (worded for
    :func:`check_claim_held`); None if it does.

    It holds it if its index record lists a value whose claim is ``key``. ``owner`` is None if the claim
    holds no id spelt as the family spells ids: a claim naming its holder otherwise would be released by
    no write of it.
    """
    if owner is None:
        return "is no id"
    layout = backend.layout
    found = backend.whole_keys([layout.index(table, owner)])[0]
    if found is None:
        return "does not exist"
    try:
        unique = layout.decode_index(found).unique
    except errors.CorruptRecordError:
        return "has a damaged index"
    if any(layout.unique(table, value) == key for value in unique):
        return None
    return "does not hold it"


def encode_deadline(deadline: float) -> bytes:
    """An expiry key's value: the wall-clock second (with ms) after which the object may be reaped."""
    return f"{deadline:.3f}".encode()


def decode_deadline(value: bytes) -> float | None:
    """The deadline an expiry key holds (None if another writer damaged it)."""
    try:
        return float(value)
    except ValueError:
        return None


def diagnose(backend: KeyValueBackend, ops: Sequence[WriteOp], shape: rules.TransactionShape) -> None:
    """After a commit's conditions failed, raise the error that explains it (or return to re-plan)."""
    layout = backend.layout
    for op in ops:
        me = (op.table, op.id)
        found = backend.index_record(op.table, op.id)
        if me in shape.created:
            if found is not None:
                raise rules.already_exists(me)
            continue
        if found is None:
            raise rules.not_found(me, "deleted concurrently?")
        # Through ``read``: an index naming a place that holds no object (another writer's damage, on
        # Redis the object's topic or version field) is CorruptRecordError there, as for a get; taken
        # for absent, an update or delete of an object every get reports as corrupt said it was gone.
        record = backend.read(op.table, op.id)
        if record is None:
            raise rules.not_found(me, "deleted concurrently?")
        if op.expect_version not in (ANY_VERSION, rules.stored_version(me, record.version)):
            raise rules.stale(me, record.version, op.expect_version)
        if rules.written_differs(op.expect_written, record.written):
            raise rules.recreated(me, record.version)
    for op in ops:
        if not isinstance(op, Put):
            continue
        for target in op.refs - (op.old_refs or frozenset()) - shape.created:
            # Read through to the store: the topic cache may still hold a target deleted meanwhile.
            if backend.index_record(*target) is None:
                raise rules.dangling((op.table, op.id), target)
        for key in op.unique:
            holder = backend.get_key(layout.unique(op.table, key))
            if holder is not None and holder.value != str(op.id).encode():
                owner = _owner(holder.value)
                if owner is not None:
                    # Read whole: a claim may land before its holder's index (Hazelcast: under its commit lock).
                    held = backend.whole_index(op.table, owner)
                    if held is None:
                        check_claim_held(backend, holder, op.table, owner)
                        continue  # its holder went, and the value with it: the next plan may take it
                    if key not in held.unique:
                        # Its holder does not hold the value (its index, written with each of its claims,
                        # does not list it): a claim another writer pointed at it, or the holder gave it
                        # up meanwhile (then the claim moved: the next plan sees it).
                        check_claim_held(backend, holder, op.table, owner, "does not hold it")
                        continue
                raise rules.unique_taken(op.table, key.field, key.value, owner)
    # Otherwise a referrer appeared (or came and went): the next plan sees which.


def check_claim_held(
    backend: KeyValueBackend,
    claim: KeyValue,
    table: str,
    owner: uuid.UUID | bytes,
    why: str = "does not exist",
    released: bool = False,
) -> None:
    """CorruptRecordError if ``claim`` names ``owner`` still, unchanged, though ``owner`` was found not to
    hold its value (``why``: it does not exist, does not hold it, is no id, ...); if it moved, nothing.

    nbdb writes and deletes a claim in the commit that writes its holder's index with the value and the one
    that drops it, so a claim that stayed put across a read that found its holder without the value named
    no holder at that read: another writer's (or one it left). A claim that "was taken" by nobody made a
    create fail for ever (``UniqueViolationError`` by an object ``get`` did not find, ``may_exist`` a
    ``ConflictError`` "try again"). The one rule, and error, of every claim found wrong on every key-value
    store: a create's (:func:`diagnose`, ``check_unique_claim``) and a release's (:func:`vet_released`,
    ``released``: the write releases the claim). The caller reads the holder whole
    (:meth:`~nbdb.families.kv.KeyValueBackend.whole_keys`: on Hazelcast a claim may land before its
    holder's index). ``owner`` is the claim's stored value when it holds no id.
    """
    named = owner if isinstance(owner, uuid.UUID) else repr(owner[:40].decode(errors="replace"))
    again = backend.get_key(claim.key)
    if again is not None and again[1:] == claim[1:]:  # value, version, mod_revision
        # The advice was "delete the key" whatever: when another tool had pointed the claim away from the
        # object whose index holds the value, following it freed the value under that holder, and a create
        # of it then succeeded beside it (two holders). Read which object holds it (an error path: a range
        # of the table's indexes) and name it, as sqlite's release does.
        try:
            holders: list[uuid.UUID] | None = _value_holders(backend, table, claim.key)
        except errors.CorruptRecordError:  # another damaged record of the table: the holders are not known
            holders = None
        if holders is None:
            advice = f"set the key to the id of the {table} whose index holds the value, or delete the key if none does"
        elif holders:
            advice = (
                f"{table} {holders[0]} holds the value: set the key to its id"
                if len(holders) == 1
                else f"{', '.join(map(str, holders))} hold the value: set the key to the id of the one that "
                "should keep it, and delete or rename the others"
            )
        else:
            advice = f"no {table} holds the value: delete the key to free it"
        releases = ", which this write releases," if released else ""
        raise errors.CorruptRecordError(
            f"unique key {claim.key!r}{releases} names {table} {named}, which {why}: another writer's ({advice})",
            table=table,
            key=claim.key,
        )


def _value_holders(backend: KeyValueBackend, table: str, key: str) -> list[uuid.UUID]:
    """The objects of ``table`` whose index lists the unique value whose claim is ``key``.

    A scan of the table and a read of its indexes: for error paths only. The objects are found by the scan
    (not a range of the indexes: Redis keeps no directory of them); an index another writer damaged is
    skipped (it holds nothing a create could collide with).
    """
    layout = backend.layout
    ids = sorted({record.id for record in backend.scan([table], None).records}, key=str)
    found = []
    for id, kv in zip(ids, backend.get_keys([layout.index(table, id) for id in ids]), strict=True):
        if kv is None:
            continue
        try:
            unique = layout.decode_index(kv).unique
        except errors.CorruptRecordError:
            continue
        if any(layout.unique(table, value) == key for value in unique):
            found.append(id)
    return found


def _owner(value: bytes) -> uuid.UUID | None:
    try:
        return uuid.UUID(value.decode())
    except (ValueError, UnicodeDecodeError):
        return None
