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
from collections.abc import Callable, Mapping, Sequence

from nbdb import errors
from nbdb.families.kv import (
    Condition,
    Exists,
    KeyChange,
    KeyStream,
    KeyValue,
    LeaseHeld,
    ValueIs,
    VersionIs,
    WrittenAt,
)

__all__ = [
    "ChangeReader",
    "ChangeSignal",
    "PolledKeyStream",
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
    if isinstance(condition, ValueIs):
        found = stored.get(condition.key)
        return found is not None and found.value == condition.value
    if isinstance(condition, WrittenAt):
        # And a version of the store's own (another tool's text fails here, and the family's diagnosis names it).
        found = stored.get(condition.key)
        return found is not None and found.mod_revision == condition.revision and type(found.version) is int
    return not changed_under(condition.prefix, condition.revision)


def named_keys(conditions: Sequence[Condition]) -> list[str]:
    """The keys whose stored values :func:`condition_holds` needs for these conditions."""
    return [c.key for c in conditions if isinstance(c, VersionIs | Exists | WrittenAt | ValueIs)]


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
