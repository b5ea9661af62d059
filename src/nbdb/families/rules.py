"""The commit rules every family applies, written once.

A family turns a list of :mod:`nbdb.spi` write operations into its store's
conditional writes. What the operations *mean* does not depend on the store,
and lives here: the shape of a transaction (each object at most once), which
objects it creates and deletes, how each object's references change, which
targets gain and lose a referrer, and the errors a caller sees when a rule is
broken — with the same words on every backend.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from nbdb import errors
from nbdb.spi import ANY_VERSION, Delete, Mutate, Put, RefKey, WriteOp

__all__ = [
    "NO_EXPIRY",
    "NO_TOPIC",
    "RefChanges",
    "TransactionShape",
    "already_exists",
    "counter_value",
    "dangling",
    "deleted_alongside",
    "foreign_lock",
    "lock_lost",
    "no_ttl",
    "not_found",
    "ref_changes",
    "shape_of",
    "stale",
    "still_referenced",
    "topic_changed",
    "topic_of_part",
    "topic_part",
    "ttl_referenced",
    "unique_taken",
]

NO_TOPIC = "~"
"""How stores spell "no topic" in a key or partition (``~`` is not a legal topic character)."""


def counter_value(value: object, name: str, key: str, last: int | None = None, *, text: bool = False) -> int:
    """What id counter ``name`` (stored at ``key``) holds: the whole number, 0 or more, its next id follows.

    The one test of a stored counter, made before it is moved: anything else (a negative number, text that is
    no whole number, a value of another type, a null, ``last`` or more where the store cannot count past it)
    is another writer's damage, :class:`nbdb.CorruptRecordError`, and the counter is left as it is. A
    negative one moved on handed out ids below 1 and, once counted back past 0, ids handed out before.
    ``text``: the store keeps the counter as text (``bytes`` or ``str``: key-value stores, OVSDB), read as a
    decimal number. A store that keeps it as a number (Hazelcast, Cassandra) passes False: text there is
    another writer's, and its number is not what a compare-and-swap against the stored value can match (Hazelcast
    spun for ever on ``"7"``). :meth:`nbdb.Database.allocate_id` refuses an id below 1 of any backend too.
    """
    number = value
    if text and isinstance(value, bytes | str):
        try:
            number = int(value)
        except ValueError:
            pass
    if type(number) is not int or number < 0 or (last is not None and number >= last):
        shown = value[:40] if isinstance(value, bytes | str) else value
        bound = "" if last is None else f" below {last}"
        raise errors.CorruptRecordError(
            f"id counter {name!r} holds {shown!r}, not a whole number from 0{bound}: nbdb did not write it", key=key
        )
    return number


def topic_part(topic: str | None) -> str:
    """The key or partition component of ``topic``."""
    return NO_TOPIC if topic is None else topic


def topic_of_part(part: str) -> str | None:
    """The topic a key or partition component stands for."""
    return None if part == NO_TOPIC else part


def _name(key: RefKey) -> str:
    return f"{key[0]} {key[1]}"


@dataclass(frozen=True, slots=True)
class TransactionShape:
    """What a list of write operations does, object by object."""

    keys: tuple[RefKey, ...]
    """Every written object, in operation order."""
    created: frozenset[RefKey]
    """Objects the operations create (a Put expecting version 0)."""
    deleted: frozenset[RefKey]
    """Objects the operations delete."""


def shape_of(ops: Sequence[WriteOp | Mutate]) -> TransactionShape:
    """The shape of ``ops``; ValidationError if one object appears twice."""
    keys: list[RefKey] = []
    seen: set[tuple[str, int]] = set()  # by the id's int: a uuid.UUID hashes in Python, an int in C
    created: set[RefKey] = set()
    deleted: set[RefKey] = set()
    for op in ops:
        key = (op.table, op.id)
        if (op.table, op.id.int) in seen:
            raise errors.ValidationError(f"{_name(key)} appears twice in one transaction")
        seen.add((op.table, op.id.int))
        keys.append(key)
        if isinstance(op, Delete):
            deleted.add(key)
        elif isinstance(op, Put) and op.expect_version == 0:
            created.add(key)
    return TransactionShape(tuple(keys), frozenset(created), frozenset(deleted))


@dataclass(slots=True)
class RefChanges:
    """How a transaction changes references, grouped by the object pointed to."""

    added: dict[RefKey, list[RefKey]] = field(default_factory=dict)
    """target -> the sources that start pointing to it."""
    dropped: dict[RefKey, list[RefKey]] = field(default_factory=dict)
    """target -> the sources that stop pointing to it."""
    new_refs: dict[RefKey, frozenset[RefKey]] = field(default_factory=dict)
    """source -> every reference it holds after the transaction (empty for a deleted one)."""

    def still_points(self, source: RefKey, target: RefKey) -> bool:
        """Whether ``source`` points to ``target`` after the transaction (True if it is not written)."""
        refs = self.new_refs.get(source)
        return refs is None or target in refs


def ref_changes(
    ops: Sequence[WriteOp], old_refs: Mapping[RefKey, frozenset[RefKey]], shape: TransactionShape
) -> RefChanges:
    """The reference additions and removals of ``ops``, given each written object's stored references.

    ``old_refs`` holds the references each updated or deleted object has now
    (created objects have none). A new reference to an object deleted in the
    same transaction raises ReferenceError.
    """
    changes = RefChanges()
    added, dropped, deleted = changes.added, changes.dropped, shape.deleted
    new_refs = changes.new_refs
    for op in ops:
        me = (op.table, op.id)
        # Each lookup by ``me`` hashes a UUID in Python: none where nothing can be found.
        old = old_refs.get(me, _NO_REFS) if old_refs else _NO_REFS
        new = op.refs if isinstance(op, Put) else _NO_REFS
        new_refs[me] = new
        if new is old:
            continue  # the same (shared) set: nothing changes
        # (table, id) tuples sort as themselves; one or none needs no sort (every create of a port).
        gained = new - old if old else new
        for target in sorted(gained) if len(gained) > 1 else gained:
            if deleted and target in deleted:
                raise deleted_alongside(me, target)
            sources = added.get(target)
            if sources is None:
                added[target] = [me]
            else:
                sources.append(me)
        if old:
            for target in sorted(old - new):
                dropped.setdefault(target, []).append(me)
    return changes


_NO_REFS: frozenset[RefKey] = frozenset()


def remaining_referrers(target: RefKey, referrers: Iterable[RefKey], changes: RefChanges) -> list[RefKey]:
    """The referrers of ``target`` that still point to it once the transaction is applied."""
    return [source for source in referrers if changes.still_points(source, target)]


# ---------------------------------------------------------------- the errors, in one voice


def already_exists(key: RefKey, where: str = "", *, visible: bool = True) -> errors.ConflictError:
    """A create of an id that is taken; not ``visible``: by an object the caller cannot read (no ``key`` to read)."""
    return errors.ConflictError(
        f"{_name(key)} already exists{f' ({where})' if where else ''}", key=key if visible else None
    )


def not_found(key: RefKey, why: str = "") -> errors.NotFoundError:
    """An update or delete of an object that is not stored."""
    return errors.NotFoundError(f"{_name(key)} does not exist{f' ({why})' if why else ''}", key=key)


def stale(key: RefKey, stored: int, expected: int) -> errors.ConflictError:
    """A compare-and-swap against a version that is no longer the stored one."""
    return errors.ConflictError(f"{_name(key)} is at version {stored}, not {expected}: re-read it and retry", key=key)


def recreated(key: RefKey, version: int) -> errors.ConflictError:
    """A compare-and-swap of a copy of an earlier creation of the id: deleted and created again since."""
    return errors.ConflictError(
        f"{_name(key)} was deleted and created again since this copy was read (the new one is at version"
        f" {version}): re-read it and retry",
        key=key,
    )


def changed_since_read(key: RefKey, version: int) -> errors.ConflictError:
    """A compare-and-swap of a copy whose content the stored record no longer holds (compared by content)."""
    return errors.ConflictError(
        f"{_name(key)} changed since this copy was read (it is at version {version} here, of other content): "
        "re-read it and retry",
        key=key,
    )


def written_differs(expected: int | None, stored: int | None) -> bool:
    """Whether a write of a copy written at revision ``expected`` must be refused by a record written at ``stored``.

    Unknown on either side (None: a copy built by hand) compares nothing (the version alone decides).
    """
    return expected is not None and stored is not None and expected != stored


def stored_version(key: RefKey, stored: object) -> int:
    """``stored``, the version a store holds for ``key``; CorruptRecordError unless it is a whole number >= 0.

    Another writer may set it to text (SQLite keeps any type in any column): compared with the
    caller's version it was a ConflictError ("is at version x, not 1") at every try, and added to
    it a TypeError. Neither says the record is damaged nor that re-reading cannot help.
    """
    if type(stored) is not int or stored < 0:
        raise errors.CorruptRecordError(
            f"stored {_name(key)} has version {stored!r}, not a whole number >= 0: another writer damaged it "
            "(delete it by its id, then create it again)",
            table=key[0],
        )
    return stored


def expected_version(op: WriteOp, stored: int) -> int:
    """The version ``op`` must find (``stored`` for a delete of whatever version); ConflictError if stale."""
    stored_version((op.table, op.id), stored)
    expect = op.expect_version
    if expect == ANY_VERSION:
        return stored
    if expect != stored:
        raise stale((op.table, op.id), stored, expect)
    return expect


def unique_taken(
    table: str, field: str, value: str, owner: uuid.UUID | None, where: str = ""
) -> errors.UniqueViolationError:
    """A unique value another object of the table holds (``value``: its canonical JSON; ``where``: who, if unnamed)."""
    try:
        shown: object = json.loads(value)
    except ValueError:
        shown = value
    holder = f" by {table} {owner}" if owner is not None else f" {where}" if where else ""
    return errors.UniqueViolationError(
        f"{table}.{field} = {value} is taken{holder}: unique fields may not repeat within a table",
        table=table,
        field=field,
        value=shown,
        existing=owner,
    )


def lock_lost(name: str) -> errors.LockLostError:
    """A fenced commit whose lock this holder no longer holds (it lapsed, or another holder took it)."""
    return errors.LockLostError(f"lock {name!r} is no longer held by this holder: nothing was written")


NO_EXPIRY = "was written without a lease or expiry (nbdb never writes one so): it would never expire"
"""What :func:`foreign_lock` says of a lease key nothing ever expires."""


def foreign_lock(name: str, key: str, what: str = NO_EXPIRY) -> errors.CorruptRecordError:
    """A lock's lease key another writer left damaged (``what`` it holds): the lock could never be taken again."""
    return errors.CorruptRecordError(
        f"lock {name!r}: its key {key!r} {what}: nobody could take the lock; delete the key to free it",
        key=key,
    )


def no_ttl(key: RefKey) -> errors.ValidationError:
    """A refresh of an object created without a ttl."""
    return errors.ValidationError(f"{_name(key)} was created without a ttl: there is nothing to refresh")


def ttl_referenced(source: RefKey, target: RefKey) -> errors.ReferenceError:
    """A reference to an object that expires (it could vanish under its referrer)."""
    return errors.ReferenceError(
        f"{_name(source)} references {_name(target)}, which was created with a ttl: "
        "objects that expire cannot be referenced"
    )


def topic_changed(key: RefKey, stored: str | None, wanted: str | None) -> errors.ValidationError:
    """An update that would move an object to another topic."""
    return errors.ValidationError(f"{_name(key)} lives in topic {stored!r}; topic cannot change to {wanted!r}")


def dangling(source: RefKey, target: RefKey) -> errors.ReferenceError:
    """A reference to an object that does not exist."""
    return errors.ReferenceError(f"{_name(source)} references {_name(target)}, which does not exist")


def deleted_alongside(source: RefKey, target: RefKey) -> errors.ReferenceError:
    """A new reference to an object the same transaction deletes."""
    return errors.ReferenceError(f"{_name(source)} references {_name(target)}, deleted in the same transaction")


def still_referenced(
    target: RefKey,
    referrers: Sequence[RefKey],
    *,
    every: bool = False,
    unseen: Sequence[RefKey] = (),
    undroppable: Sequence[RefKey] = (),
) -> errors.ReferenceError:
    """A delete of an object that others still point to; ``every``: ``referrers`` are all the store found
    still pointing to it (the error carries them, see :class:`nbdb.errors.ReferenceError`); ``unseen``:
    those of them the caller's Database cannot read; ``undroppable``: those no plan of it can drop (a second
    parent's set holds the target), read or not (both carried only with ``every``, sorted as ``referrers``
    usually are, and named in the message)."""
    # (None named: rows the store refused it for that it could not name, another client's or namespace's.)
    by = f" by {_names(referrers)}" if referrers else ""
    hidden = tuple(sorted(unseen, key=str)) if every else ()
    fixed = tuple(sorted(undroppable, key=str)) if every else ()
    if hidden:
        by += f" ({_names(hidden)} this Database cannot read: another namespace's or client's)"
    if fixed:
        by += f" ({_names(fixed)} cannot be dropped by any plan: a second parent's set holds it)"
    return errors.ReferenceError(
        f"{_name(target)} is still referenced{by}; delete those first or pass cascade=True",
        target=target if every else None,
        referrers=tuple(referrers) if every else None,
        unseen=hidden,
        undroppable=fixed,
    )


def _names(keys: Sequence[RefKey]) -> str:
    """The first five of ``keys`` named, and how many more."""
    more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
    return ", ".join(_name(key) for key in keys[:5]) + more
