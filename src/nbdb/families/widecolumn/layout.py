"""Where nbdb's records live in a wide-column store: the tables, and every statement the family runs.

Every partition key starts with the namespace (``ns``)::

    nbdb_data   ((ns, topic), kind, rev, tbl, id)
                kind 0, rev 0:  one object (data, version, refs, referrers, oid; uniq: the unique
                                values it holds; ttl_ms, deadline: if it expires; wrev: the revision
                                of the commit that wrote it, null on a row an older nbdb wrote)
                kind 1, rev G:  the change commit G made to (tbl, id): new and old value, and the
                                revisions that wrote them (wrev, old_wrev; TTL'd)
                static last_rev: every commit at or below it has landed here or never will
    nbdb_seq    ((ns, bucket), g)    the revision sequencer and its index of commits:
                static head: the last revision handed out in the bucket;
                row g: which topic (partition) and tables commit g was for, or void (TTL'd)
    nbdb_topics (ns, topic)          the topics that ever held data (for unfiltered lists)
    nbdb_meta   ((ns, name))         allocate_id counters, the history floor, the bucket hint
    nbdb_locks  ((ns, name))         lock leases (TTL'd rows)
    nbdb_fences ((ns, name), part, rev)  fenced commits of a lock's holder that may be in flight
    nbdb_unique ((ns, tbl, key))     a unique value's claim: the object that holds it (or is taking it),
                                     its partition and the revision of the commit that took it
    nbdb_expiry ((ns), tbl, id, rev) every object that expires, per create (rev: the create's revision):
                                     its partition and a copy of its deadline (for the reaper)

A topic is a partition of ``nbdb_data`` (``~``: no topic). References are text ``"<table>/<id>"``;
a referrer entry maps a source to ``""`` (written by the source's own commit,
in the same partition) or to ``"<reservation>:<source partition>"`` (a
cross-partition reservation, see :mod:`nbdb.families.widecolumn.references`).
"""

from __future__ import annotations

import hashlib
import uuid

from nbdb import errors
from nbdb.families.widecolumn.primitives import (
    Column,
    ColumnType,
    Compare,
    Delete,
    EntryEquals,
    Insert,
    Select,
    Table,
    Update,
)
from nbdb.spi import RefKey, UniqueKey

__all__ = [
    "BUCKET_SIZE",
    "CHANGE",
    "OBJECT",
    "TABLES",
    "bucket_of",
    "parse_ref",
    "ref_text",
    "unique_text",
]


BUCKET_SIZE = 100_000
"""Revisions per ``nbdb_seq`` partition: bounds the partition size of the commit index.

Part of the stored layout: every client of a keyspace must agree on it."""

OBJECT = 0
"""``kind`` of an object row."""
CHANGE = 1
"""``kind`` of a change row."""
INTENT_PAGE = 1000
"""Index rows a watcher reads at once."""

DATA, SEQ, TOPICS, META, LOCKS = "nbdb_data", "nbdb_seq", "nbdb_topics", "nbdb_meta", "nbdb_locks"
FENCES, UNIQUE, EXPIRY = "nbdb_fences", "nbdb_unique", "nbdb_expiry"

_T = ColumnType
TABLES: tuple[Table, ...] = (
    Table(
        DATA,
        ("ns", "topic"),
        ("kind", "rev", "tbl", "id"),
        (
            Column("ns", _T.TEXT), Column("topic", _T.TEXT), Column("kind", _T.INT8), Column("rev", _T.INT64),
            Column("tbl", _T.TEXT), Column("id", _T.UUID), Column("oid", _T.UUID), Column("data", _T.BYTES),
            Column("version", _T.INT32), Column("old_data", _T.BYTES), Column("old_version", _T.INT32),
            Column("refs", _T.TEXT_SET), Column("referrers", _T.TEXT_MAP), Column("last_rev", _T.INT64, static=True),
            Column("uniq", _T.FROZEN_TEXT_SET), Column("ttl_ms", _T.INT64), Column("deadline", _T.INT64),
            Column("wrev", _T.INT64), Column("old_wrev", _T.INT64),
        ),
        indexed=("oid",),
    ),
    Table(
        SEQ,
        ("ns", "bucket"),
        ("g",),
        (
            Column("ns", _T.TEXT), Column("bucket", _T.INT64), Column("g", _T.INT64), Column("topic", _T.TEXT),
            Column("tables", _T.FROZEN_TEXT_SET), Column("cid", _T.UUID), Column("at", _T.TIMESTAMP),
            Column("void", _T.BOOL), Column("head", _T.INT64, static=True),
        ),
    ),
    Table(TOPICS, ("ns",), ("topic",), (Column("ns", _T.TEXT), Column("topic", _T.TEXT))),
    Table(
        META,
        ("ns", "name"),
        (),
        (Column("ns", _T.TEXT), Column("name", _T.TEXT), Column("value", _T.INT64), Column("owner", _T.UUID)),
    ),
    Table(LOCKS, ("ns", "name"), (), (Column("ns", _T.TEXT), Column("name", _T.TEXT), Column("holder", _T.TEXT))),
    Table(
        FENCES,
        ("ns", "name"),
        ("part", "rev"),
        (Column("ns", _T.TEXT), Column("name", _T.TEXT), Column("part", _T.TEXT), Column("rev", _T.INT64),
         Column("holder", _T.TEXT)),
    ),
    Table(
        UNIQUE,
        ("ns", "tbl", "key"),
        (),
        (Column("ns", _T.TEXT), Column("tbl", _T.TEXT), Column("key", _T.TEXT), Column("owner", _T.UUID),
         Column("prev", _T.UUID), Column("part", _T.TEXT), Column("rev", _T.INT64)),
    ),
    Table(
        EXPIRY,
        ("ns",),
        ("tbl", "id", "rev"),
        (Column("ns", _T.TEXT), Column("tbl", _T.TEXT), Column("id", _T.UUID), Column("part", _T.TEXT),
         Column("rev", _T.INT64), Column("deadline", _T.INT64)),
    ),
)  # fmt: skip

# ---------------------------------------------------------------- nbdb_data

PARTITION = ("ns", "topic")
OBJECT_KEY = ("ns", "topic", "kind", "rev", "tbl", "id")
"""Parameters: namespace, partition, OBJECT, 0, table, id."""

Q_ROW = Select(DATA, ("data", "version", "refs", "referrers", "uniq", "ttl_ms", "deadline", "wrev"), OBJECT_KEY)
Q_RECORD = Select(DATA, ("data", "version", "wrev"), OBJECT_KEY)
Q_LOCATE = Select(DATA, ("ns", "topic", "tbl", "data", "version", "ttl_ms", "wrev"), ("oid",))
Q_LAST = Select(DATA, ("last_rev",), PARTITION, limit=1)
Q_LIST = Select(DATA, ("id", "data", "version", "last_rev", "wrev"), ("ns", "topic", "kind", "rev", "tbl"))
Q_PAGE = Select(DATA, ("id", "data", "version", "last_rev", "wrev"), ("ns", "topic", "kind", "rev", "tbl"), paged=True)
"""The first objects of a table in a partition (the last parameter: how many)."""
Q_PAGE_AFTER = Select(
    DATA,
    ("id", "data", "version", "last_rev", "wrev"),
    ("ns", "topic", "kind", "rev", "tbl"),
    (("id", ">"),),
    paged=True,
)
"""The objects of a table in a partition after an id, in the store's order (the last parameter: how many)."""
Q_LIST_AFTER = Select(
    DATA, ("id", "data", "version", "last_rev", "wrev"), ("ns", "topic", "kind", "rev", "tbl"), (("id", ">"),)
)
"""Every object of a table in a partition after an id, in the store's order."""
Q_LIST_BETWEEN = Select(
    DATA,
    ("id", "data", "version", "last_rev", "wrev"),
    ("ns", "topic", "kind", "rev", "tbl"),
    (("id", ">"), ("id", "<=")),
)
"""The objects of a table in a partition after an id, up to another (included), in the store's order."""
Q_CHANGES = Select(
    DATA,
    ("rev", "tbl", "id", "data", "version", "old_data", "old_version", "wrev", "old_wrev"),
    ("ns", "topic", "kind"),
    (("rev", ">="), ("rev", "<=")),
)

W_CREATE = Insert(
    DATA,
    ("ns", "topic", "kind", "rev", "tbl", "id", "oid", "data", "version", "refs", "referrers", "wrev"),
    if_not_exists=True,
)
W_CREATE_MARKED = Insert(
    DATA,
    ("ns", "topic", "kind", "rev", "tbl", "id", "oid", "data", "version", "refs", "referrers", "uniq", "ttl_ms",
     "deadline", "wrev"),
    if_not_exists=True,
)  # fmt: skip
"""A create of an object that holds unique values or expires (:data:`W_CREATE` writes no such columns)."""
W_UPDATE = Update(DATA, OBJECT_KEY, set=("data", "version", "refs", "wrev"), conditions=(Compare("version"),))
W_UPDATE_UNIQUE = Update(
    DATA, OBJECT_KEY, set=("data", "version", "refs", "uniq", "wrev"), conditions=(Compare("version"),)
)
"""An update that changes the unique values the object holds."""
W_UPDATE_WRITTEN = Update(
    DATA, OBJECT_KEY, set=("data", "version", "refs", "wrev"), conditions=(Compare("version"), Compare("wrev"))
)
W_UPDATE_UNIQUE_WRITTEN = Update(
    DATA,
    OBJECT_KEY,
    set=("data", "version", "refs", "uniq", "wrev"),
    conditions=(Compare("version"), Compare("wrev")),
)
""":data:`W_UPDATE` and :data:`W_UPDATE_UNIQUE` of a copy that knows the revision that wrote it: that one too."""
W_RAW = Update(DATA, OBJECT_KEY, set=("data", "version", "oid", "wrev"))
"""``write_raw``'s: another writer's bytes, stamped with the revision of its commit as every write's row is."""
W_DELETE = Delete(DATA, OBJECT_KEY, conditions=(Compare("version"), Compare("referrers")))
W_DELETE_WRITTEN = Delete(DATA, OBJECT_KEY, conditions=(Compare("version"), Compare("referrers"), Compare("wrev")))
"""A delete of a copy that knows the revision that wrote it: that one too."""
W_DELETE_EXPIRED = Delete(DATA, OBJECT_KEY, conditions=(Compare("version"), Compare("referrers"), Compare("deadline")))
"""The reaper's delete: only while the deadline it read is the stored one (a refresh that lands first wins)."""
W_REFRESH = Update(DATA, OBJECT_KEY, set=("deadline",), conditions=(Compare("version", ">"),))
"""A new deadline for an object that exists (parameter of the condition: 0)."""
W_REF_ADD_EXISTING = Update(
    DATA, OBJECT_KEY, add=("referrers",), conditions=(Compare("version", ">"), Compare("ttl_ms"))
)
"""Add referrer entries to a target that must exist and not expire (parameters of the conditions: 0, None)."""
W_REF_ADD = Update(DATA, OBJECT_KEY, add=("referrers",))
W_REF_DROP = Update(DATA, OBJECT_KEY, remove=("referrers",))
W_REF_RESERVE = Update(DATA, OBJECT_KEY, add=("referrers",), conditions=(Compare("version", ">"), Compare("ttl_ms")))
"""Reserve an entry on a target in another partition that must exist and not expire (0, None)."""
W_REF_RELEASE = Update(DATA, OBJECT_KEY, remove=("referrers",), conditions=(EntryEquals("referrers"),))
W_LAST_ABOVE = Update(DATA, PARTITION, set=("last_rev",), conditions=(Compare("last_rev", "<"),))
"""Raise ``last_rev`` to G if it is below: parameters namespace, partition, G, G."""
W_LAST_FIRST = Update(DATA, PARTITION, set=("last_rev",), conditions=(Compare("last_rev"),))
"""Set ``last_rev`` of a partition that has none: parameters namespace, partition, G, None."""
W_CHANGE = Insert(
    DATA,
    ("ns", "topic", "kind", "rev", "tbl", "id", "data", "version", "old_data", "old_version", "wrev", "old_wrev"),
    ttl=True,
)

# ---------------------------------------------------------------- nbdb_seq

Q_HEAD = Select(SEQ, ("head",), ("ns", "bucket"), limit=1)
Q_HEAD_HINT = Select(SEQ, ("head",), ("ns", "bucket"), limit=1, hint=True)
Q_INTENTS = Select(SEQ, ("g", "topic", "tables", "void"), ("ns", "bucket"), (("g", ">"),), limit=INTENT_PAGE)
Q_INTENT = Select(SEQ, ("cid", "void"), ("ns", "bucket", "g"))
Q_TAKEN = Select(SEQ, ("cid", "head"), ("ns", "bucket", "g"))
W_HEAD = Update(SEQ, ("ns", "bucket"), set=("head",), conditions=(Compare("head"),))
W_INTENT = Insert(SEQ, ("ns", "bucket", "g", "topic", "tables", "cid", "at"), ttl=True)
W_VOID = Update(SEQ, ("ns", "bucket", "g"), set=("void",), ttl=True)
W_DROP_INTENTS = Delete(SEQ, ("ns", "bucket"), (("g", "<="),))

# ---------------------------------------------------------------- nbdb_topics, nbdb_meta, nbdb_locks

W_TOPIC = Insert(TOPICS, ("ns", "topic"))
Q_TOPICS = Select(TOPICS, ("topic",), ("ns",))
Q_META = Select(META, ("value", "owner"), ("ns", "name"))
W_META = Update(META, ("ns", "name"), set=("value", "owner"), conditions=(Compare("value"),))
W_LOCK = Insert(LOCKS, ("ns", "name", "holder"), if_not_exists=True, ttl=True)
Q_LOCK = Select(LOCKS, ("holder",), ("ns", "name"))
W_LOCK_REFRESH = Update(LOCKS, ("ns", "name"), set=("holder",), conditions=(Compare("holder"),), ttl=True)
W_LOCK_DELETE = Delete(LOCKS, ("ns", "name"), conditions=(Compare("holder"),))

# ---------------------------------------------------------------- nbdb_fences, nbdb_unique, nbdb_expiry

Q_FENCES = Select(FENCES, ("part", "rev"), ("ns", "name"))
W_FENCE = Insert(FENCES, ("ns", "name", "part", "rev", "holder"))
W_FENCE_DROP = Delete(FENCES, ("ns", "name", "part", "rev"))

Q_CLAIM = Select(UNIQUE, ("owner", "prev", "part", "rev"), ("ns", "tbl", "key"))
W_CLAIM = Insert(UNIQUE, ("ns", "tbl", "key", "owner", "part", "rev"), if_not_exists=True)
W_CLAIM_MARKED = Insert(UNIQUE, ("ns", "tbl", "key", "owner", "prev", "part", "rev"), if_not_exists=True)
"""An early claim of an id the caller gave, marked by a ``prev`` that names no object (an id drawn for this
claim): another create of that id may claim it under the same guess, and a claim whose reply was lost is its
sender's own only if it carries the sender's mark. Readers find no row of the mark: it never holds the value."""
W_CLAIM_SET = Update(
    UNIQUE, ("ns", "tbl", "key"), set=("owner", "prev", "part", "rev"), conditions=(Compare("owner"), Compare("rev"))
)
"""Re-tie, take over or move a claim, if it is still the one read (parameters of the conditions: owner, rev)."""
W_CLAIM_DROP = Delete(UNIQUE, ("ns", "tbl", "key"), conditions=(Compare("owner"), Compare("rev")))
W_CLAIM_GIVE_UP = Delete(UNIQUE, ("ns", "tbl", "key"), conditions=(Compare("owner"), Compare("rev", "<")))
"""Drop a value's claim after a landed commit gave it up (parameters of the conditions: the owner that gave
it up, the commit's revision): one compare-and-set instead of a read and a compare-and-set on what it read."""

Q_EXPIRIES = Select(EXPIRY, ("tbl", "id", "part", "rev", "deadline"), ("ns",))
W_EXPIRY = Insert(EXPIRY, ("ns", "tbl", "id", "part", "rev", "deadline"))
W_EXPIRY_DEADLINE = Update(EXPIRY, ("ns", "tbl", "id", "rev"), set=("part", "deadline"))
W_EXPIRY_DROP = Delete(EXPIRY, ("ns", "tbl", "id", "rev"))
"""Plain writes only: the key names one create, so no two writers race on a row that matters (Cassandra
orders a plain write and a lightweight transaction on one row by their timestamps, not by when they ran)."""


# ---------------------------------------------------------------- names


def ref_text(table: str, id: uuid.UUID) -> str:
    """A reference as stored: ``"<table>/<id>"``."""
    return f"{table}/{id}"


def parse_ref(text: str) -> RefKey:
    """The inverse of :func:`ref_text`; CorruptRecordError for a text nbdb does not write.

    Another writer's entry in an object's ``refs`` or ``referrers`` (no table, no id) was a raw
    ValueError out of every update, delete and ``referrers()`` that read it.
    """
    table, _, id = text.rpartition("/")
    try:
        if table:
            return table, uuid.UUID(id)
    except ValueError:
        pass
    raise errors.CorruptRecordError(f"reference {text!r} is not '<table>/<id>': nbdb did not write it", key=text)


def unique_text(key: UniqueKey) -> str:
    """A unique value as an object row lists it and a claim row is keyed: ``"<field>:<digest of the value>"``.

    The value (canonical JSON, any length) is digested so that a key stays
    small; 128 bits of SHA-256 make a collision as unlikely as a repeated id.
    """
    return f"{key.field}:{hashlib.sha256(key.value.encode()).hexdigest()[:32]}"


def bucket_of(revision: int, bucket_size: int = BUCKET_SIZE) -> int:
    """The ``nbdb_seq`` partition holding revision ``revision`` (>= 1): bucket b holds b*size+1 .. (b+1)*size."""
    return (revision - 1) // bucket_size
