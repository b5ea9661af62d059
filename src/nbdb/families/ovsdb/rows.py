"""Rows <-> records: the model document of a row, the row of a document, and derived versions.

A row here is a dict of column -> cell (see :mod:`.datum`). nbdb keeps its
bookkeeping in ``external_ids`` under keys starting with ``nbdb:``:

* ``nbdb:topic``, ``nbdb:ns``: the object's topic and the writer's namespace;
* ``nbdb:version``, ``nbdb:digest``: the version nbdb wrote and a digest of the
  content it wrote (see :class:`VersionBook`);
* ``nbdb:txn``: the commit tokens of the last few nbdb writes of the row with
  the version each wrote (``token@version``, newest first), which tell a
  client whose commit reply was lost whether its commit landed;
* ``nbdb:field:<name>``: JSON of a field the table has no column for;
* ``nbdb:parent:<field>``: a child's parent, as a hint for replicas that do
  not follow the parent (the parent's set column is the truth);
* ``nbdb:raw``: bytes stored verbatim by :meth:`write_raw` (a test hook);
* ``nbdb:ttl``, ``nbdb:expires``: an expiring object's ttl (seconds, as
  created) and the wall-clock time after which it may be reaped (moved by
  each refresh);
* ``nbdb:m:<token>``: the mark of a native mutation (its commit token, valued
  with its expiry: the wall-clock second it was planned plus :data:`LEDGER_SETTLE`),
  which tells a client whose reply was lost whether its mutation landed; marks
  more than :data:`LEDGER_SKEW` past their expiry are dropped by the next nbdb
  write of the row (:func:`stale_marks`).

None of them is part of the object: a change of only these keys (a refresh,
a mark) changes neither its content nor its version.
"""

from __future__ import annotations

import base64
import collections
import datetime
import decimal
import hashlib
import json
import os
import random
import threading
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import orjson

from nbdb import errors, storable
from nbdb.families.ovsdb.datum import INT_MAX, INT_MIN, default_cell, escape, escape_each, wire_map
from nbdb.families.ovsdb.mapping import EXTERNAL_IDS, ColumnMap, TableMap
from nbdb.families.ovsdb.ops import parse_uuid, uuid_text
from nbdb.models import shared
from nbdb.models.shared import FrozenDict, FrozenList, FrozenSet
from nbdb.spi import CheckedData

_K = TypeVar("_K")
_V = TypeVar("_V")

__all__ = [
    "CONTENT_STAMP",
    "EXT_DIGEST",
    "EXT_EXPIRES",
    "EXT_FIELD",
    "EXT_MARK",
    "EXT_NAMESPACE",
    "EXT_PARENT",
    "EXT_PREFIX",
    "EXT_RAW",
    "EXT_TOPIC",
    "EXT_TTL",
    "EXT_TXN",
    "EXT_VERSION",
    "LEDGER_SETTLE",
    "LEDGER_SKEW",
    "RESULT_STAMPS_KEPT",
    "Doc",
    "KeptMap",
    "NewRow",
    "Row",
    "RowState",
    "VersionBook",
    "Written",
    "carried",
    "column_value",
    "content_digest",
    "content_stamp",
    "field_cell",
    "keep_result_stamps",
    "kept_wire",
    "new_row",
    "new_token",
    "next_version",
    "parse_window",
    "plain_state",
    "push_window",
    "reads_back_as",
    "refs_of",
    "render",
    "render_written",
    "render_written_as",
    "result_stamp",
    "row_namespace",
    "same_content",
    "sealed",
    "stale_marks",
    "stored_columns",
    "to_keep",
    "written_token",
    "written_version",
]

EXT_PREFIX = "nbdb:"
EXT_VERSION = "nbdb:version"
EXT_DIGEST = "nbdb:digest"
EXT_TOPIC = "nbdb:topic"
EXT_NAMESPACE = "nbdb:ns"
EXT_TXN = "nbdb:txn"
EXT_RAW = "nbdb:raw"
EXT_FIELD = "nbdb:field:"
EXT_PARENT = "nbdb:parent:"
EXT_TTL = "nbdb:ttl"
EXT_EXPIRES = "nbdb:expires"
EXT_MARK = "nbdb:m:"

LEDGER_SETTLE = 600.0
"""Seconds, on the writer's own monotonic clock from its start, that a commit may rely on its marks (a native
mutation's on its row, or its mark in the ledger, ``NB_Global.external_ids``: see :func:`.planner._plan_ledger`):
it is sent, settled and sent again only within them (every commit's deadline is capped at them), and each mark
holds the wall-clock time they end (its *expiry*, :func:`.mutations.mark_of`). A commit still unsettled then is
CommitUnknownError."""

LEDGER_SKEW = 3600.0
"""Seconds past a mark's expiry before another writer drops it (:func:`stale_marks`): the clocks of the
writers may disagree by that much, and a mark is never dropped while its writer may need it."""

WINDOW = 4
"""How many (token, version) pairs a row keeps: enough to see one's own write under a few later ones."""

Row = dict[str, Any]
"""One OVSDB row: column -> cell."""


class RowState(NamedTuple):
    """What a row's version is derived from: its content digest and nbdb's stored bookkeeping.

    A named tuple of a str, an int and a str, so that what keeps one per row (``Replica.states``,
    :class:`VersionBook`) keeps it as a plain tuple (:func:`plain_state`): CPython's collector untracks an exact
    tuple of atomic values at its first collection, where a slotted dataclass (or a tuple subclass)
    stays tracked for the row's life, walked by every full collection (see docs/benchmarks.md,
    "OVSDB replica rows the collector no longer walks")."""

    digest: str
    stored_version: int
    stored_digest: str


class Shared(dict[_K, _V]):
    """Immutable values shared by key: ``table.get(key)``, else ``table.keep(key, value)``.

    At most ``limit`` are kept: past it the table is cleared, and the values already handed out
    stay valid (they are never changed in place), only no longer shared. For values that many
    rows would otherwise each hold a copy of (a port's one reference, its parents map); the caller
    makes a value only when the key is not kept, from the objects it has (a value rebuilt from the
    key would hold new ids, which compare by ``UUID.__eq__`` where the same objects compare by
    identity).
    """

    __slots__ = ("limit",)

    def __init__(self, limit: int = 4096) -> None:
        super().__init__()
        self.limit = limit

    def keep(self, key: _K, value: _V) -> _V:
        """Share ``value`` under ``key`` (clearing the table first when full); returns it."""
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value


class KeptMap(dict[_K, _V]):
    """A dict the cyclic collector keeps tracked: for a map with an entry per row whose keys and values are atomic.

    A full collection untracks a plain dict holding only atomic keys and values (CPython does it
    for exact dicts only), and the next insertion of a new key tuple makes it tracked again as a
    new object: the young collections that follow then walk it whole, a stall growing with the
    replica (33 + 35 ms at 100,000 ports) after every full collection. Kept tracked, such a map
    stays with the old objects and only full collections walk it (a few ms among hundreds).
    """

    __slots__ = ()


def plain_state(state: RowState) -> tuple[str, int, str]:
    """``state`` as an exact tuple (equal to it): how a store of one per row keeps it (see :class:`RowState`)."""
    return (state.digest, state.stored_version, state.stored_digest)


@dataclass(frozen=True, slots=True)
class Doc:
    """A row rendered as a model document, before a version is assigned."""

    topic: str | None
    namespace: str
    state: RowState
    data: bytes
    refs: frozenset[tuple[str, uuid.UUID]]


class Written(NamedTuple):
    """A row as a commit of this client writes it (see ``Replica.expect``)."""

    row: Row
    parents: Mapping[str, uuid.UUID]
    doc: Doc
    """The row rendered as the model document it reads back as."""
    wire: bytes | None
    """Every mapped column and ``external_ids`` in wire form: what a compare-and-swap of the row,
    read back as written, compares (``stored_columns`` of the row, made once), as :func:`to_keep`
    keeps it (None: not kept)."""
    value: object = None
    """The stored copy the Database validated and wrote (``Put.value``), if ``doc`` is its document
    exactly (see :func:`reads_back_as`): a record of the row read back as written carries it, and
    readers decoding into its model share it instead of validating the document again. None: not
    known to be, and readers decode."""


def reads_back_as(
    doc: Mapping[str, Any], back: dict[str, Any], optional: Mapping[str, Any], loose: Collection[str]
) -> bool:
    """Whether ``back`` (a rendered row's document, as a dict) decodes as ``doc`` (the written model's) does.

    The same keys and equal values (one comparison in C). Python's ``==`` holds ``1``, ``1.0``
    and ``True`` equal: a field of one atomic kind (string, integer, real, boolean, uuid, enum;
    or a list, set or map of one) decodes such values alike, to what its type makes of them, but
    a ``loose`` one (``json``: ``Any``, unions, nested models) keeps their types, so those are
    compared as JSON text. A field ``back`` leaves out (``optional``: one kept in
    ``external_ids``, written only when it is not at its default, with its default's JSON)
    decodes to its default: allowed if ``doc`` holds that default (it is filled into ``back``).
    """
    for name, default in optional.items():
        if name not in back and name in doc:
            back[name] = default
    if back != doc:
        return False
    for name in loose:
        if name in doc and json.dumps(doc[name], sort_keys=True) != json.dumps(back[name], sort_keys=True):
            return False
    return True


_PLAIN_ATOMS = frozenset(
    {str, int, float, bool, type(None), bytes, uuid.UUID, datetime.datetime, datetime.date, datetime.time}
    | {datetime.timedelta, decimal.Decimal}
)
"""The atoms most values are, each found by its exact class in one look-up (the others by ``IMMUTABLE``)."""


def _sealed_value(value: Any, depth: int = 0) -> bool:
    """Whether nothing in ``value`` (a loose field's, frozen through by its stored copy) can change in place."""
    kind = type(value)
    if kind in _PLAIN_ATOMS:
        return True
    if kind is tuple or kind is frozenset or kind is FrozenList or kind is FrozenSet:
        return depth <= 8 and all(_sealed_value(v, depth + 1) for v in value)
    if kind is FrozenDict:
        return depth <= 8 and all(_sealed_value(v, depth + 1) for v in value.values())
    # What a frozen copy keeps as it is (a caller's declared classes too); a list or map inside, a nested
    # model: the holder's to change.
    return isinstance(value, shared.IMMUTABLE)


_JSON_ATOMS = frozenset({str, int, float, bool, type(None)})
"""What JSON holds and reads back as itself, where a field may hold a value of any class (``Any``)."""


def _json_value(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` (a field's of any class, frozen through) is what its JSON decodes to there, and
    nothing in it can change in place: JSON's atoms (by exact class), frozen lists of them, frozen maps
    of them by text keys. Bytes, an address, a path, a UUID, a date, an enum's member read back as text
    or a number, a tuple or a set as a list, a key of another class as text."""
    kind = type(value)
    if kind in _JSON_ATOMS:
        return True
    if kind is FrozenList:
        return depth <= 8 and all(_json_value(v, depth + 1) for v in value)
    if kind is FrozenDict:
        return depth <= 8 and all(type(k) is str and _json_value(v, depth + 1) for k, v in value.items())
    return False


def sealed(value: Any, loose: Collection[str]) -> bool:
    """Whether the stored copy ``value`` holds nothing its holder can change in place, frozen through,
    and only what a read of its document decodes to.

    A stored copy freezes its lists, maps and sets (see ``Model.stored_copy``): those of a field
    of atoms or of a flat list, map or set of atoms at the top, which is all such a field can hold
    (its values are validated), and those of a field that may nest (``Model.nbdb_deep_fields``) at
    every depth. So of the ``loose`` fields (``json``: a nested model, a list of lists, a union),
    only those that may nest are looked at, value by value, and only atoms (what a frozen copy keeps
    as it is, ``nbdb.models.shared.IMMUTABLE``) and frozen lists, maps, sets and tuples of them
    pass: a nested model (frozen too since issue #12, but a class derived from another is frozen
    only in part, and this check does not rely on it), a newer model's fields
    (``__pydantic_extra__``) or any value the copy's holder could change in place keep the copy
    from being shared. Shared with a cache, such a change would be the cache's too, and the cache
    would hold what the server does not. A field that may hold a value of any class (``Any``, at
    any depth) reads back as JSON's own types, and one of a union (``str | bytes``) may read back as
    another choice (``nbdb.storable.json_typed_fields``): there only JSON's types pass (see
    :func:`_json_value`), or the cache would hold bytes, an address or a tuple where every read of
    the row, and every other client's cache, holds text or a list.
    """
    if loose:
        model = type(value)
        fields, deep, as_json = value.__dict__, model.nbdb_deep_fields, storable.json_typed_fields(model)
        for name in loose:
            if name in as_json:
                if not _json_value(fields.get(name)):
                    return False
            elif name in deep and not _sealed_value(fields.get(name)):
                return False
    # The fields of a newer model are held in a plain dict (``model_extra``), itself changeable.
    return not value.__pydantic_extra__


class VersionBook:
    """Derives monotonic per-object versions from row states.

    OVSDB's ``_version`` is a UUID and other writers (``ovn-nbctl``,
    ``ovn-northd``) never bump an integer, so every nbdb write stores the
    version ``N`` it makes and a digest of the content it wrote. A row whose
    content still has that digest is at version ``N`` for every client; a row
    another writer changed since is at ``N+1``, and each further foreign change
    this connection sees bumps it again, so versions only grow (a return to the
    content nbdb wrote, after this connection saw another, bumps it too).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: KeptMap[tuple[str, int], tuple[int, tuple[str, int, str]]] = KeptMap()
        """Keyed by the id's int (hashed in C, unlike a uuid.UUID); the state kept as a plain tuple
        (see :class:`RowState`), which compares equal to the named one."""

    def version(self, table: str, id: uuid.UUID | int, state: RowState) -> int:
        """The version of ``table/id`` (the id or its int) in ``state`` (remembered, so it only grows)."""
        key = (table, id if isinstance(id, int) else id.int)
        with self._lock:
            prev = self._seen.get(key)
            if prev is not None and prev[1] == state:
                return prev[0]
            if state.digest == state.stored_digest:
                version = max(state.stored_version, 1)
                if prev is not None and prev[0] >= version:
                    # Back to a content nbdb wrote after this connection saw it otherwise (another
                    # writer's change undone, a child let go by a second parent; or another client's
                    # write from an older version): at that version again, it went backwards, and a
                    # cache holding the newer one kept it (a change of a version it holds is one
                    # already applied), stale, or its corrupt mark, for good.
                    version = prev[0] + 1
            elif prev is None:
                version = state.stored_version + 1
            else:
                version = max(state.stored_version + 1, prev[0] + 1)
            self._seen[key] = (version, plain_state(state))
            return version

    def past(self, table: str, id: int, state: tuple[str, int, str], version: int) -> int:
        """The version of ``table/id`` (the id's int) in ``state``, past ``version`` (remembered, so it only grows).

        ``version`` was given to another content of the row that this connection never saw: a commit of
        it whose change, and another writer's undoing it, reached the replica merged (no change of their
        own to count). The content shown is then a change after it: counted past it, the row's next
        version is never one given to two contents. A version this state holds past it already (another
        replica of this connection counted it so) is kept.
        """
        key = (table, id)
        with self._lock:
            prev = self._seen.get(key)
            if prev is not None and prev[1] == state and prev[0] > version:
                return prev[0]
            counted = max(version, 0 if prev is None else prev[0]) + 1
            self._seen[key] = (counted, state)
            return counted

    def forget(self, table: str, id: uuid.UUID | int) -> None:
        """The object was deleted: a re-created one starts again at version 1 (``id``: the id or its int)."""
        with self._lock:
            self._seen.pop((table, id if isinstance(id, int) else id.int), None)


def apart(ours: Mapping[str, str], theirs: Mapping[str, str]) -> bool:
    """Whether two rows' ``external_ids`` show different histories under one id: their ``nbdb:txn`` windows
    hold a version each with another commit's token. A row created again since (by an nbdb writer: a window
    of its own, from version 1) is then no older copy of the one seen, whatever version it shows; a copy
    lagging by more writes than a window keeps, or one without a window, cannot be told apart (False)."""
    seen = dict((v, t) for t, v in parse_window(ours.get(EXT_TXN)))
    return any(seen.get(v, t) != t for t, v in parse_window(theirs.get(EXT_TXN)))


def written_version(ext: Mapping[str, str]) -> int:
    """The version nbdb's last write of a row stored in its ``external_ids`` (0: none).

    Another writer's garbage there (not a number, or negative) falls back to the newest version
    of the row's token window (``nbdb:txn``), which nbdb's writes push with it. Read as 0, it
    turned the row's version back to 1 for a client that had not seen it, and made the next nbdb
    write of the row look like several commits in one update: a merged catch-up, which ended every
    plain watch of the database with HistoryGoneError. A number below the window's newest entry
    (``0``, another writer's too) is read as that entry, for the same reason.
    """
    text = ext.get(EXT_VERSION, "0")
    try:
        version = int(text)
    except ValueError:
        version = -1
    if version < 0 or version >= VERSION_LIMIT:
        # Past the limit: no count of writes, and one of 4300 digits (as many as int() reads) made the
        # row's next write raise ValueError (str() of one more refuses it): no update of it ever went.
        window = parse_window(ext.get(EXT_TXN))
        return max((v for _token, v in window), default=0)
    txn = ext.get(EXT_TXN)
    if txn:
        # Never below the newest entry of the window (which nbdb's writes push with the version, so
        # the two agree): another writer's smaller number ("0") made the row's next nbdb write show
        # two commits since the version read (a merged catch-up: every plain watch of the database
        # ended with HistoryGoneError). Only the newest entry is read (this runs per row): the first
        # one parse_window takes. Read from the first word alone, garbage before it ("junk a@9",
        # " a@9") left the version at 0, and the next write showed the whole window as new commits.
        token, _, head_text = txn.partition(" ")[0].partition("@")
        if head_text == text and token.isalnum() and head_text.isascii() and head_text.isdigit():
            return version  # as nbdb writes a row: its first entry is the version (no whitespace in it)
        head = _newest(txn)
        if head is not None and version < head:
            return head
    return version


def written_token(ext: Mapping[str, str]) -> int | None:
    """The nbdb commit that wrote a row's content last: the newest token of its ``nbdb:txn`` window, as an int.

    A row's *incarnation* as well as its version: every nbdb write pushes a fresh random token (see
    :func:`new_token`), and a row deleted and created again under its id starts a window of its own,
    so two rows of one id at one version (versions restart at 1) never share it. Records carry it as
    :attr:`nbdb.spi.Record.written`, the copies decoded from them too, and a commit compares it with
    the row it plans from (see :func:`.planner.plan_commit`), whose ``wait`` holds the whole window.
    None for a row no nbdb write has stamped (ovn-nbctl's, or another writer's garbage in its first
    word): such a row's copies are compared by their version alone.
    """
    txn = ext.get(EXT_TXN)
    if not txn or txn[16:17] != "@":
        return None
    # The first entry as new_token writes one: 16 hex digits before its "@". Not checked further (this runs
    # for every row change, and a str method costs as much as the int): another writer's text there that
    # int() reads all the same ("+", "_", spaces) is read so by every client alike, which is all it needs.
    try:
        return int(txn[:16], 16)
    except ValueError:
        return None


CONTENT_STAMP = 1 << 80
"""Where :func:`content_stamp` numbers start: past every commit token (:func:`written_token`, below ``2**64``)."""


def content_stamp(digest: str) -> int:
    """The :attr:`nbdb.spi.Record.written` of a row without ``external_ids`` (``Load_Balancer_Group``): its content.

    Such a row keeps no commit token, so what a copy of it was read at is its content: the digest of its
    document (``RowState.digest``, the same on every client), as a number past every token. A copy whose
    stamp is not the row's is stale, whichever connection read it and whether or not the row was deleted
    and created again since (a re-creation of the same content is the same state, and passes).
    """
    return CONTENT_STAMP + int(digest, 16)


RESULT_STAMPS_KEPT = 65536
"""How many rows' :func:`result_stamp` a process keeps, over the newest commits (the oldest dropped first): a result
of an older one is refused (:func:`result_stamp` knows no content for it), never compared by its version alone.
Bounded by rows, not commits: a commit of many rows without ``external_ids`` holds that many stamps."""

_result_stamps: dict[int, dict[tuple[str, int], int]] = {}
_result_order: collections.deque[tuple[int, dict[tuple[str, int], int]]] = collections.deque()
"""The commits kept, oldest first, each with its stamps: dropping the oldest costs O(1) (a dict's first key,
found by ``next(iter(...))``, is a scan past every entry deleted before it)."""
_result_rows = 0
"""The rows :data:`_result_order` holds (at least those :data:`_result_stamps` does)."""
_result_stamps_lock = threading.Lock()


def keep_result_stamps(token: int, stamps: dict[tuple[str, int], int]) -> None:
    """Keep the content stamp of each row without ``external_ids`` a commit of several rows put (by its token).

    Such a commit's results carry its token as their stamp (:attr:`nbdb.revision.Revision.written`, one per
    commit), which the rows without ``external_ids`` do not keep (:func:`content_stamp`): :func:`result_stamp`
    turns it back into the content each was written with, in this process, on every connection. The oldest
    commits are dropped until this one fits in :data:`RESULT_STAMPS_KEPT` rows; one of more rows than that is
    not kept (nor anything dropped for it): its results are refused as a later compare-and-swap's copy.
    """
    global _result_rows
    size = len(stamps)
    if not size or size > RESULT_STAMPS_KEPT:
        return
    with _result_stamps_lock:
        while _result_order and _result_rows + size > RESULT_STAMPS_KEPT:
            old, kept = _result_order.popleft()
            _result_rows -= len(kept)
            if _result_stamps.get(old) is kept:
                del _result_stamps[old]
        _result_stamps[token] = stamps
        _result_order.append((token, stamps))
        _result_rows += size


def result_stamp(token: int, key: tuple[str, int]) -> int | None:
    """The content stamp the commit ``token`` wrote row ``key`` (table, id) with (:func:`keep_result_stamps`).

    None: not known here (another process's result, an unpickled one, one dropped for the newest
    :data:`RESULT_STAMPS_KEPT` rows, or one of more rows than that): the caller refuses the copy rather than
    compare its version alone.
    """
    stamps = _result_stamps.get(token)
    return None if stamps is None else stamps.get(key)


def _newest(text: str) -> int | None:
    """The version of the first entry :func:`parse_window` takes from ``text`` (None: none), reading no further."""
    words = text.split(None, 1)
    while words:
        token, _, version = words[0].partition("@")
        if token and version.isascii() and version.isdigit() and len(version) <= 19:
            number = int(version)
            if number < VERSION_LIMIT:
                return number
        words = words[1].split(None, 1) if len(words) > 1 else []
    return None


def parse_window(text: str | None) -> list[tuple[str, int]]:
    """The (token, version) pairs of an ``nbdb:txn`` value, newest first (garbage is skipped)."""
    out = []
    for item in (text or "").split():
        token, _, version = item.partition("@")
        # isascii: str.isdigit() holds for digits int() refuses ('²', another writer's garbage), whose
        # ValueError killed the connection's I/O thread on every update of the row. int() refuses
        # ASCII digits too past sys.get_int_max_str_digits() (4300): no version nbdb wrote is that long.
        if token and version.isascii() and version.isdigit() and len(version) <= 19:
            number = int(version)
            if number < VERSION_LIMIT:
                out.append((token, number))
    return out


VERSION_LIMIT = 2**63
"""Versions nbdb reads from a row are below this (19 digits at most): far more than any count of writes."""


def next_version(table: str, id: uuid.UUID, version: int) -> int:
    """The version nbdb's update of ``table/id``, read at ``version``, writes: ``version + 1``.

    Never :data:`VERSION_LIMIT` or more, which no read takes back (:func:`written_version`,
    :func:`parse_window`): only another writer's version just below it gets there (no count of
    writes does), and nbdb's writes from there on were read as an older entry of the token window,
    then, the window filled with them, as version 0: two merged commits of the row were no longer
    seen as merged, and a watch could miss a change. CorruptRecordError instead, before anything is
    sent; the row stays readable, and a delete (which writes no version) or a repair of its
    ``nbdb:version`` and ``nbdb:txn`` by that writer lets it be written again.
    """
    version += 1
    if version >= VERSION_LIMIT:
        raise errors.CorruptRecordError(
            f"{table} {id} is at version {version - 1}: its version was set near the limit by another writer "
            f"(nbdb writes none from 2**63 on, which it cannot read back); it can be deleted, or written again "
            f"once its external_ids nbdb:version and nbdb:txn are put back below",
            table=table,
            key=str(id),
        )
    return version


_TOKENS = random.Random()
"""nbdb's own generator of commit tokens, seeded from the system's entropy (and again in a forked
child): an application that seeds the ``random`` module (``random.seed(42)``) in several processes
must not make their tokens collide."""
os.register_at_fork(after_in_child=_TOKENS.seed)


def new_token() -> str:
    """A commit token: 64 random bits as 16 hex digits.

    From :data:`_TOKENS`, not ``os.urandom``: a token is made on every commit,
    and the ``getrandom`` system call behind ``uuid.uuid4()`` gives up the
    interpreter lock, which a writer then waits to get back from the threads
    applying the previous commit. Tokens only need to differ between the
    commits that can meet in one row's window, not to be unpredictable.
    """
    return f"{_TOKENS.getrandbits(64):016x}"


def push_window(text: str | None, token: str, version: int) -> str:
    """``nbdb:txn`` after a write of ``version`` by the commit ``token``.

    ``" ".join(f"{t}@{v}" for t, v in [(token, version), *parse_window(text)][:WINDOW])``, reading no
    entry past the last one kept (an update's window is full: its oldest entry was parsed for nothing).
    """
    out = [f"{token}@{version}"]
    for item in (text or "").split():
        old, _, number = item.partition("@")
        # As parse_window reads an entry (see there).
        if old and number.isascii() and number.isdigit() and len(number) <= 19:
            value = int(number)
            if value < VERSION_LIMIT:
                out.append(f"{old}@{value}")
                if len(out) == WINDOW:
                    break
    return " ".join(out)


def _json_or_text(text: str) -> Any:
    """The JSON value of a text nbdb stores as JSON, or the text as it is if it holds none.

    Another writer's text nested deeper than the interpreter's recursion limit (``[[[[...``) made
    ``json.loads`` raise RecursionError, not ValueError: it killed the connection's I/O thread,
    and the row's change was lost for good. As text, the model refuses it: a corrupt record.
    """
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def _doc_value(cm: ColumnMap, cell: Any) -> Any:
    if cm.json:
        if isinstance(cell, str) and cell:
            return _json_or_text(cell)
        return None
    if isinstance(cell, set):
        if cm.one_of_set and len(cell) < 2:
            return next(iter(cell)) if cell else None
        return sorted(cell)
    if cell == "" and cm.type.is_scalar and cm.shape.optional and cm.shape.default is None:
        # A required string column read into an optional field: "" means unset.
        return None
    return cell


def column_value(cm: ColumnMap, cell: Any) -> Any:
    """What :func:`render` makes of the cell ``cell`` of ``cm`` (None: the column's default)."""
    return _doc_value(cm, default_cell(cm.type) if cell is None else cell)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:20]


def refs_of(
    tm: TableMap, doc: Mapping[str, Any], parents: Mapping[str, uuid.UUID] | None = None
) -> frozenset[tuple[str, uuid.UUID]]:
    """Every (table, id) the document references.

    ``parents``: the parents the document's parent fields were rendered from
    (their ids as they are, not parsed back from the document's text).
    """
    out: list[tuple[str, uuid.UUID]] = []
    for spec in tm.shape.references:
        if parents is not None and spec.field in tm.parents:
            parent = parents.get(spec.field)
            if parent is not None:
                out.append((spec.target, parent))
            continue
        value = doc.get(spec.field)
        for item in value if isinstance(value, list) else (value,):
            if item is None:
                continue
            target = parse_uuid(item)
            if target is not None:
                out.append((spec.target, target))
    if len(out) == 1:
        # The common case (a port and its switch): the set found by the id's int, not made, which
        # would hash the (table, UUID) pair, a UUID.__hash__ call in Python per plan and render.
        table, target = out[0]
        key = (table, target.int)
        return _ONE_REF.get(key) or _ONE_REF.keep(key, frozenset(out))
    return frozenset(out)


_ONE_REF: Shared[tuple[str, int], frozenset[tuple[str, uuid.UUID]]] = Shared()
"""Recent sets of one reference (:func:`refs_of`), by its table and its id's int."""


_Parents = Mapping[str, uuid.UUID]
_Values = Mapping[str, Any] | None
"""Field -> a mapped column's value in the rendered document (see :func:`new_row`); None: made from the row."""


_SORTED = json.JSONEncoder(sort_keys=True)
"""What ``json.dumps(doc, sort_keys=True)`` encodes with (the same settings), made once instead of per call."""


def _rendered(
    tm: TableMap, id: uuid.UUID, row: Row, parents: _Parents, values: _Values = None, id_text: str | None = None
) -> tuple[dict[str, Any] | None, bytes]:
    """The model document of a row (None: raw bytes stored by a test hook) and its bytes.

    ``values``: the document's value of every mapped column, made from the
    row's cells already (:func:`new_row` makes them as it makes the cells);
    ``id_text``: ``str(id)``, if the caller made it already.
    """
    ext: dict[str, str] = row.get(EXTERNAL_IDS) or {}
    raw = ext.get(EXT_RAW)
    if raw is not None:
        try:
            return None, base64.b64decode(raw, validate=True)
        except ValueError:
            return None, raw.encode()
    doc: dict[str, Any] = {"id": uuid_text(id) if id_text is None else id_text, "topic": ext.get(EXT_TOPIC)}
    if values is not None:
        doc.update(values)
    else:
        for name, cm in tm.columns.items():
            cell = row.get(cm.column)
            doc[name] = _doc_value(cm, default_cell(cm.type) if cell is None else cell)
    for name in tm.ext_fields:
        text = ext.get(EXT_FIELD + name)
        if text is not None:
            doc[name] = _json_or_text(text)
    for name, fshape in tm.missing.items():
        doc[name] = fshape.default
    for name in tm.parents:
        parent = parents.get(name)
        doc[name] = None if parent is None else uuid_text(parent)
    doc[EXTERNAL_IDS] = {k: v for k, v in ext.items() if not k.startswith(EXT_PREFIX)}
    namespace = ext.get(EXT_NAMESPACE)
    if namespace is not None and "/" in namespace:
        # Not the row's topic: the decode reports the row as corrupt, saying why (see render).
        doc["topic"] = _NO_NAMESPACE if doc["topic"] != _NO_NAMESPACE else _NO_NAMESPACE + "."
    try:
        return doc, _encoded(tm, doc)
    except RecursionError:
        # Another writer's JSON nested about as deep as the recursion limit: read, but too deep to
        # write out again here. No document: bytes the codec refuses (a corrupt record), never a
        # dead I/O thread.
        return None, b"a value nested too deeply to decode"


def _encoded(tm: TableMap, doc: Mapping[str, Any]) -> bytes:
    """The bytes of a row's document: :class:`~nbdb.spi.CheckedData` if it holds a newer schema's enum value.

    Such a value came from a column whose enum the server checks (``tm.newer``): the codec reads it
    into the model's field as a newer value rather than report the row as corrupt. Only the rows
    that hold one pay for the look (a served schema whose enums are the models' has no ``tm.newer``).
    """
    data = _SORTED.encode(doc).encode()
    newer = tm.newer
    if newer and any(_holds(doc.get(name), values) for name, values in newer.items()):
        return CheckedData(data, newer)
    return data


def _holds(value: Any, values: frozenset[str]) -> bool:
    """Whether a document's ``value`` (an atom, or a list or map of them) is or holds one of ``values``.

    ``values`` are texts (:attr:`.mapping.ColumnMap.newer`): an integer's or a real's as ``str`` spells it.
    """
    if type(value) is list:
        return any(_is_one_of(item, values) for item in value)
    if type(value) is dict:
        return any(_is_one_of(item, values) for item in value.values())
    return _is_one_of(value, values)


def _is_one_of(atom: Any, values: frozenset[str]) -> bool:
    kind = type(atom)
    return (kind is str and atom in values) or ((kind is int or kind is float) and str(atom) in values)


def render(
    tm: TableMap,
    id: uuid.UUID,
    row: Row,
    parents: _Parents,
    values: _Values = None,
    several: Mapping[str, list[uuid.UUID]] | None = None,
    elsewhere: Mapping[str, uuid.UUID] | None = None,
) -> Doc:
    """The model document of a row (bytes the codec decodes; garbage in, CorruptRecordError out).

    ``several``: parent fields whose child is in more than one parent row's set (another writer's
    doing): the document says so in the field instead of an id, which the model refuses.
    ``elsewhere``: parent fields whose parent nbdb wrote (the hint) no longer holds the child, and
    whose holder this replica does not follow (another writer moved it out of the scope): likewise.
    """
    doc, data = _rendered(tm, id, row, parents, values)
    ext: dict[str, str] = row.get(EXTERNAL_IDS) or {}
    refs = frozenset() if doc is None else refs_of(tm, doc, parents)
    if elsewhere and doc is not None:
        for name, hinted in elsewhere.items():
            doc[name] = (
                f"moved by another writer from {hinted} to a parent outside this cache's or watch's topics "
                "(get() reads it)"
            )
        data = _encoded(tm, doc)
    if several and doc is not None:
        for name, held in several.items():
            doc[name] = f"held by {len(held)} parents: " + ", ".join(str(p) for p in held)
        data = _encoded(tm, doc)
        # It references every parent that holds it: a delete of any of them names it.
        targets = {spec.field: spec.target for spec in tm.shape.references}
        refs = refs | {(targets[name], p) for name, held in several.items() if name in targets for p in held}
    state = RowState(_digest(data), written_version(ext), ext.get(EXT_DIGEST, ""))
    return Doc(ext.get(EXT_TOPIC), row_namespace(ext), state, data, refs)


_NO_NAMESPACE = "nbdb:ns-names-no-namespace"
"""The topic the document of a row whose ``nbdb:ns`` names no namespace carries (see :func:`row_namespace`)."""


def row_namespace(ext: Mapping[str, str]) -> str:
    """The namespace a row belongs to: its ``nbdb:ns``, none for none.

    Another writer's value with a '/' names no namespace (none can have one, see
    ``Options.namespace``): the row belonged to none, and vanished from every one with no report.
    It is the default namespace's (which follows every row, as it follows everything
    ``ovn-nbctl`` makes), where its document's topic is a text saying so, not the row's:
    a corrupt record there (``get``, ``list``, ``cache.corrupt``). A valid value of another
    namespace moves the row there: the namespace it left sees it deleted.
    """
    namespace = ext.get(EXT_NAMESPACE, "")
    return "" if "/" in namespace else namespace


def content_digest(tm: TableMap, id: uuid.UUID, row: Row, parents: Mapping[str, uuid.UUID]) -> str:
    """The digest of what :func:`render` makes of a row (``render(...).state.digest``, for less)."""
    return _digest(_rendered(tm, id, row, parents)[1])


def render_written(tm: TableMap, id: uuid.UUID, row: Row, parents: _Parents, values: _Values = None) -> Doc:
    """What :func:`render` makes of a row a commit writes, and its digest stored in it.

    ``row``'s ``external_ids`` lack ``nbdb:digest``: it is set here to the
    document's digest (no ``nbdb:`` key is part of the document, so adding it
    changes nothing else), and the returned document is the row's as it will
    be read back. ``values``: the document values of its mapped columns, as
    :func:`new_row` returns them with the cells (the same bytes, for less).
    """
    return render_written_as(tm, id, row, parents, values)[0]


def render_written_as(
    tm: TableMap,
    id: uuid.UUID,
    row: Row,
    parents: _Parents,
    values: _Values = None,
    source: Mapping[str, Any] | None = None,
    optional: Mapping[str, Any] | None = None,
    loose: Collection[str] = (),
    id_text: str | None = None,
) -> tuple[Doc, bool]:
    """:func:`render_written`, and whether the document is ``source`` (the written model's) as it decodes.

    True only if :func:`reads_back_as` says so of the rendered document (as a dict, before its
    bytes are made: no parse again); ``optional`` and ``loose`` as there; ``id_text``: ``str(id)``.
    """
    doc, data = _rendered(tm, id, row, parents, values, id_text)
    ext: dict[str, str] = row.get(EXTERNAL_IDS) or {}
    refs = frozenset() if doc is None else refs_of(tm, doc, parents)
    digest = _digest(data)
    ext[EXT_DIGEST] = digest
    same = doc is not None and source is not None and reads_back_as(source, doc, optional or {}, loose)
    state = RowState(digest, written_version(ext), digest)
    return Doc(ext.get(EXT_TOPIC), ext.get(EXT_NAMESPACE, ""), state, data, refs), same


def stored_columns(tm: TableMap, row: Mapping[str, Any]) -> dict[str, Any]:
    """The wire form of the columns a compare-and-swap of ``tm``'s row compares: every mapped one.

    Columns nbdb does not map (``dynamic_addresses``, set by ovn-northd) may
    change without failing it; ``external_ids`` holds nbdb's version and
    tokens, so any nbdb write fails it. A column the row lacks is compared at
    its default: the server leaves default cells out of the rows it sends, and
    skipping them would let a commit land over another writer's change of one.
    """
    out = {}
    for cm in tm.columns.values():
        cell = row.get(cm.column)
        out[cm.column] = cm.to_wire(default_cell(cm.type) if cell is None else cell)
    if tm.external_ids is not None:
        out[EXTERNAL_IDS] = wire_map((row.get(EXTERNAL_IDS) or {}).items())
    return out


def to_keep(wire: Mapping[str, Any]) -> bytes | None:
    """A row's wire form (:func:`stored_columns`) as a replica keeps it: JSON bytes (None: not kept).

    A replica keeps the wire form of every row that reads back as this
    client's commit wrote it, until the row changes. As datums, that is some
    thirty lists per port, each tracked by the cyclic collector: they reach
    its oldest generation, where each full collection scans them and where
    their number makes full collections come more often (measured, most of
    the collector's time per single create). One bytes object per row is not
    tracked. :func:`kept_wire` gives the datums back, equal to what
    ``stored_columns`` makes (lists; a float or integer reads back as
    written; what orjson cannot write, an integer beyond 64 bits, is not
    kept).
    """
    try:
        return orjson.dumps(wire)
    except orjson.JSONEncodeError:
        return None


def kept_wire(data: bytes) -> dict[str, Any]:
    """The wire form :func:`to_keep` kept: a fresh dict of fresh datums, the caller's to change."""
    out: dict[str, Any] = orjson.loads(data)
    return out


def same_content(tm: TableMap, row: Row, other: Row) -> bool:
    """Whether two rows render alike: equal ``external_ids`` and every mapped column (a missing one at its default).

    :func:`render` reads nothing else of a row. Cells of one column have one
    type on both sides (an nbdb write reads back as the cells it wrote, which is
    what its stored digest already relies on).
    """
    if (row.get(EXTERNAL_IDS) or {}) != (other.get(EXTERNAL_IDS) or {}):
        return False
    for cm in tm.columns.values():
        column = cm.column
        mine, theirs = row.get(column), other.get(column)
        if mine != theirs and (mine if mine is not None else default_cell(cm.type)) != (
            theirs if theirs is not None else default_cell(cm.type)
        ):
            return False
    return True


def field_cell(cm: ColumnMap, value: Any) -> Any:
    """The cell of column ``cm`` holding the field value ``value`` (as a document holds it)."""
    if cm.json:
        return json.dumps(value, sort_keys=True)
    if cm.one_of_set:
        return set() if value is None else {value}
    if cm.type.is_set:
        if not isinstance(value, list | tuple | set | frozenset):
            raise errors.ValidationError(f"expected a list, got {value!r}")
        return set(value)
    if value is None and cm.type.is_scalar:
        return default_cell(cm.type)
    if cm.type.value is not None and cm.type.key.kind in _KEY_FROM_TEXT and isinstance(value, dict):
        # A document holds a map's keys as JSON does, as text: an integer, real or boolean key is
        # that atom again (QoS.queues, Bridge.flow_tables), or the server would get "1" for 1.
        parse = _KEY_FROM_TEXT[cm.type.key.kind]
        try:
            return {parse(k) if isinstance(k, str) else k: v for k, v in value.items()}
        except ValueError:
            raise errors.ValidationError(f"expected {cm.type.key.kind} keys, got {sorted(value)!r}") from None
    return value


def _bool_from_text(text: str) -> bool:
    if text not in ("true", "false"):
        raise ValueError(text)
    return text == "true"


_KEY_FROM_TEXT: dict[str, Any] = {"integer": int, "real": float, "boolean": _bool_from_text}


class NewRow(NamedTuple):
    """What :func:`new_row` makes of a document."""

    cells: Row
    wire: dict[str, Any]
    """The cells in wire form, by column."""
    ext: dict[str, str]
    """The ``external_ids``: user keys and field keys."""
    parents: dict[str, uuid.UUID]
    values: dict[str, Any]
    """Field -> the value the document rendered from the cells holds (see :func:`render_written`)."""


def no_external_ids(tm: TableMap, what: str) -> str:
    """Why ``what`` cannot be written to a row of a table without ``external_ids`` (OVN's ``Load_Balancer_Group``).

    Such rows are written with only their mapped columns: their version is counted by each connection
    from the changes it sees, their compare-and-swap compares the content of the caller's copy
    (:func:`content_stamp`), and a commit whose reply was lost is settled by its mark in the database's
    configuration row (``NB_Global``/``SB_Global``, :func:`.planner._plan_ledger`), else by the other rows
    of its transaction, or is CommitUnknownError (:func:`.settle.settle`). What nbdb keeps in
    ``external_ids`` has nowhere to go: a topic, a namespace, a ttl, a model's own ``external_ids`` or a
    field kept there.
    """
    return f"{tm.db}.{tm.db_table} has no external_ids column, where nbdb keeps {what}: its objects cannot hold it"


def new_row(tm: TableMap, doc: Mapping[str, Any]) -> NewRow:
    """The cells, their wire form, the ``external_ids``, parents and rendered values of a document.

    Raises ValidationError for a value a column cannot hold, and
    UnsupportedError for a value of a field whose column the served schema lacks.
    """
    cells: Row = {}
    wire: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for name, cm in tm.columns.items():
        value = doc.get(name)
        plain = cm.plain
        if plain:
            # The shapes OVN's rows are made of, in one step: what field_cell, to_wire and
            # _doc_value below make of them (a test compares the two paths for every OVN model).
            column = cm.column
            if plain == "optional":
                if value is None:
                    cells[column], wire[column], values[name] = None, ["set", []], None
                    continue
                if type(value) is cm.plain_type and (type(value) is not int or INT_MIN <= value <= INT_MAX):
                    cells[column] = values[name] = value
                    wire[column] = escape(value) if type(value) is str else value
                    continue
            elif plain == "string":
                if type(value) is str:
                    cells[column] = value
                    wire[column] = escape(value)
                    values[name] = None if value == "" and cm.empty_is_none else value
                    continue
            elif plain == "strings":
                if type(value) is list and all(type(a) is str for a in value):
                    cells[column] = set(value)
                    ordered = sorted(cells[column])
                    wire[column] = ["set", escape_each(ordered)]
                    values[name] = ordered
                    continue
            elif type(value) is dict and all(type(k) is str and type(v) is str for k, v in value.items()):
                cells[column] = values[name] = value
                wire[column] = wire_map(value.items())
                continue
        cell = field_cell(cm, value)
        try:
            wire[cm.column] = cm.to_wire(cell)
        except errors.ValidationError as exc:
            raise errors.ValidationError(f"{tm.table}.{name}: {exc}") from None
        cells[cm.column] = cell
        # What render() makes of the row's cell, made here once.
        values[name] = _doc_value(cm, default_cell(cm.type) if cell is None else cell)
    for name, fshape in tm.missing.items():
        if name in doc and doc[name] != fshape.default:
            raise errors.UnsupportedError(
                f"{tm.table}.{name} = {doc[name]!r}: the served schema of {tm.db}.{tm.db_table} has no column "
                f"{name!r} (an older schema); only its default {fshape.default!r} can be stored"
            )
    user = doc.get(EXTERNAL_IDS) or {}
    ext = {str(k): str(v) for k, v in user.items()}
    reserved = sorted(k for k in ext if k.startswith(EXT_PREFIX))
    if reserved:
        raise errors.ValidationError(f"external_ids keys starting with {EXT_PREFIX!r} are reserved: {reserved}")
    for name in tm.ext_fields:
        value = doc.get(name)
        if value is not None and value != [] and value != {}:
            ext[EXT_FIELD + name] = json.dumps(value, sort_keys=True)
    parents: dict[str, uuid.UUID] = {}
    for name in tm.parents:
        value = doc.get(name)
        if value is not None:
            # The few parents of many children (a switch's ports) are parsed once, not once per write,
            # into the copy the replica's updates name them by too (see ops.parse_uuid): the row read
            # back then holds the very parent its written form does, compared by identity.
            parent = parse_uuid(value)
            if parent is None:
                raise errors.ValidationError(f"{tm.table}.{name}: not an id: {value!r}")
            parents[name], ext[EXT_PARENT + name] = parent, uuid_text(parent)
    if ext and tm.external_ids is None:
        raise errors.UnsupportedError(no_external_ids(tm, f"{sorted(ext)}"))
    return NewRow(cells, wire, ext, parents, values)


def carried(ext: Mapping[str, str], now: float, drop: Collection[str] = ()) -> dict[str, str]:
    """The bookkeeping of a stored row that an update keeps: its expiry, and the marks still needed.

    A rewrite of ``external_ids`` must not drop the mark of a mutation whose
    writer may still be settling a lost reply (any but the stale ones and
    ``drop``, which the writer knows are settled), nor an expiring object's ttl.
    """
    out = {k: v for k, v in ext.items() if k in (EXT_TTL, EXT_EXPIRES)}
    horizon = now - LEDGER_SKEW
    for key, value in ext.items():
        if key.startswith(EXT_MARK) and key not in drop and not _stale_mark(value, horizon):
            out[key] = value
    return out


def stale_marks(ext: Mapping[str, str], now: float) -> list[str]:
    """The marks in ``ext`` (a row's ``external_ids``, or the ledger's) more than :data:`LEDGER_SKEW` past their expiry.

    A mark holds its writer's expiry (its start plus :data:`LEDGER_SETTLE`, on its clock); its writer
    never relies on it after that (its own monotonic clock), so only a clock more than an hour off
    could drop a mark still needed. Another value (not a number) is not nbdb's: dropped. (A mark of an
    older nbdb holds its start instead: kept an hour longer. An older nbdb drops marks five minutes past
    their value on its clock, so a mark holding its expiry lives ten minutes longer there than before.)
    """
    horizon = now - LEDGER_SKEW
    return sorted(k for k, v in ext.items() if k.startswith(EXT_MARK) and _stale_mark(v, horizon))


def _stale_mark(value: str, horizon: float) -> bool:
    try:
        return float(value) < horizon
    except ValueError:
        return True  # not a mark nbdb wrote: nothing waits for it
