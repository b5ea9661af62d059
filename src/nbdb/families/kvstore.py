"""Building blocks for key-value stores that keep keys themselves (SQL tables, in-process maps).

A store with its own transactions (SQLite, an in-process dictionary) checks
the family's conditions and keeps versions and a change log itself. The rules
for doing so are the same for every such store and live here: when a
condition holds, what a commit does to each key's version, and a change
stream that reads the log instead of being pushed changes.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from nbdb import errors
from nbdb.families.kv import Condition, Exists, KeyChange, KeyStream, KeyValue, LeaseHeld, VersionIs, WrittenAt

if TYPE_CHECKING:
    from nbdb.families.kvplan import KeyLayout

__all__ = [
    "ChangeReader",
    "ChangeSignal",
    "PolledKeyStream",
    "check_released_claims",
    "condition_holds",
    "key_changes",
    "named_keys",
]


def condition_holds(
    condition: Condition,
    stored: Mapping[str, KeyValue],
    changed_under: Callable[[str, int], bool],
    lease_holds: Callable[[str, bytes], bool],
) -> bool:
    """Whether ``condition`` holds, for a store that checks conditions itself inside its own transaction.

    ``stored`` holds the current value of every key a VersionIs or Exists
    condition names (absent: no such key); ``changed_under(prefix, revision)``
    tells whether a key under ``prefix`` was written after ``revision``;
    ``lease_holds(name, token)`` whether that token holds that unexpired lease.
    """
    if isinstance(condition, VersionIs):
        found = stored.get(condition.key)
        return (0 if found is None else found.version) == condition.version
    if isinstance(condition, Exists):
        return condition.key in stored
    if isinstance(condition, LeaseHeld):
        return lease_holds(condition.name, condition.token)
    if isinstance(condition, WrittenAt):
        # And a version of the store's own (another tool's text fails here, and the family's diagnosis names it).
        found = stored.get(condition.key)
        return found is not None and found.mod_revision == condition.revision and type(found.version) is int
    return not changed_under(condition.prefix, condition.revision)


def named_keys(conditions: Sequence[Condition]) -> list[str]:
    """The keys whose stored values :func:`condition_holds` needs for these conditions."""
    return [c.key for c in conditions if isinstance(c, VersionIs | Exists | WrittenAt)]


def check_released_claims(
    layout: KeyLayout,
    stored: Mapping[str, KeyValue],
    puts: Mapping[str, bytes],
    deletes: Sequence[str],
    read: Callable[[Sequence[str]], Mapping[str, KeyValue]],
) -> Sequence[str]:
    """The keys the commit deletes, less the claims it must leave to their holders; CorruptRecordError for a lie.

    The family releases a claim (a delete, an update that drops the value) in the commit that writes its
    holder's index, and the claim names that holder. One naming another object is another writer's damage,
    of one record or the other:

    - the claim is true: the object it names exists and its index holds the value, so the index of the object
      written is the damaged one (another tool made it a second holder). The claim is left out of the deletes
      and the commit goes ahead: the release deleted it unseen, freeing the value under its true holder (a
      create of the value then succeeded beside it), and refused, the object written could never go;
    - the claim lies: it holds no id, or names an object that does not exist or whose index does not hold
      the value. CorruptRecordError, and the key stays as it was (the release deleted the evidence).

    ``stored`` holds the current value of every deleted key, as :func:`key_changes` needs; a commit that
    writes no object of the claim's table (a key deleted by hand) is left alone. For a store that checks
    conditions itself, inside its transaction: one pass over the deletes, and only for a claim naming another
    object the index of the object it names, through ``read`` (keys -> their stored values, in the transaction).
    ``deletes`` itself is returned when every release stands.
    """
    written: set[str] | None = None
    kept: set[str] = set()
    for key in deletes:
        held = stored.get(key)
        if held is None:
            continue
        table = layout.unique_table(key)
        if table is None:
            continue
        if written is None:
            written = {*puts, *deletes}
        objects = layout.index(table, "")
        if not any(k.startswith(objects) for k in written):
            continue  # no write of an object of its table: a key deleted by hand
        value = held.value
        owner = value.decode(errors="replace") if isinstance(value, bytes) else repr(value)
        if layout.index(table, owner) in written:
            continue
        why = _claim_held(layout, table, key, owner, read)
        if why is None:
            kept.add(key)  # a true claim: the index of the object written lies
            continue
        raise errors.CorruptRecordError(
            f"unique key {key!r}, which this write releases, names {owner[:40]!r}, not the {table} written, and "
            f"{why}: another writer's (set the key to the id of the {table} that holds the value, the one written "
            "if no other one holds it, then write again)",
            table=table,
            key=key,
        )
    return [key for key in deletes if key not in kept] if kept else deletes


def _claim_held(
    layout: KeyLayout, table: str, key: str, owner: str, read: Callable[[Sequence[str]], Mapping[str, KeyValue]]
) -> str | None:
    """Why the object the claim ``key`` names, ``owner`` (its text), does not hold its value; None if it does.

    It holds it if its index record lists a value whose claim is ``key``. The id must be spelt as the family
    spells ids: a claim naming its holder otherwise would be released by no write of it.
    """
    try:
        spelt = str(uuid.UUID(owner)) == owner
    except ValueError:
        spelt = False
    if not spelt:
        return "that is no id"
    index = layout.index(table, owner)
    found = read([index]).get(index)
    if found is None:
        return f"no such {table} exists"
    try:
        unique = layout.decode_index(found).unique
    except errors.CorruptRecordError:
        return "its index is damaged too"
    if any(layout.unique(table, value) == key for value in unique):
        return None
    return "that one does not hold the value"


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
        elif type(old.version) is not int or old.version < 0:
            # Another writer's: old.version + 1 was a TypeError out of the store's transaction.
            raise errors.CorruptRecordError(
                f"key {key!r} holds the version {old.version!r}, not a whole number >= 0: another writer "
                "damaged it (delete the object by its id, then create it again)",
                key=key,
            )
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
