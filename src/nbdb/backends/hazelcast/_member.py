"""nbdb's member-side code for Hazelcast, as the client sees it: the tasks it sends and their replies.

The members run ``io.nbdb.hazelcast.CommitTask`` (java/hazelcast-member): the client's own commit
protocol (see the package docstring), with the same stored bytes, in the member that owns the
commit lock, so that a commit is one client round trip. :class:`ProbeTask` tells at connect
whether the members have that code.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from hazelcast.serialization.api import IdentifiedDataSerializable, ObjectDataInput, ObjectDataOutput

from nbdb.families.kv import (
    Condition,
    Exists,
    KeyCommit,
    LeaseHeld,
    PrefixUnchangedSince,
    ValueIs,
    VersionIs,
    WrittenAt,
)

__all__ = [
    "APPLIED",
    "BUSY",
    "FACTORY_ID",
    "FALLBACK",
    "PROTOCOL",
    "CommitTask",
    "ProbeTask",
    "encode_task",
    "factories",
]

FACTORY_ID = 7301
"""The serializer factory id the members register (``io.nbdb.hazelcast.NbdbFactory``)."""
PROTOCOL = 3
"""The task's wire form and reply; the members' ``CommitTask.PROTOCOL`` must be the same (2: ``WrittenAt``,
``ValueIs``; 3: a task whose anchor ``head`` holds replies "in at head", never runs its commit again). A member of
another one (a rolling upgrade) turns the member's path off: the client's protocol commits meanwhile."""
APPLIED, FALLBACK, BUSY = 0, 1, 2
"""A commit task's reply status: done (``[APPLIED, revision, ok...]``); nothing written, commit with the
client's own protocol; nothing written, the lock was not granted in time."""
_VERSION_IS, _EXISTS, _LEASE_HELD, _PREFIX_UNCHANGED, _WRITTEN_AT = 1, 2, 3, 4, 5
_VALUE_IS = 6
"""A released unique claim's condition: the key holds the token's bytes."""


class CommitTask(IdentifiedDataSerializable):
    """Commits at one revision, to run in a member (``CommitTask.java`` reads this wire form)."""

    CLASS_ID = 3
    """3 since protocol 3 (1 before): a member of an older jar refuses the task unread (no class 3 in its factory),
    so it is never run without the checks the client counts on (see ``PROTOCOL``), then probed, and the member's
    path turned off."""

    def __init__(
        self,
        maps: Sequence[str] = (),
        object_prefix: str = "",
        anchor: str = "",
        lock_lease: float = 0.0,
        lock_wait: float = 0.0,
        commits: Sequence[KeyCommit] = (),
    ) -> None:
        self.maps = tuple(maps)
        """The ``kv``, ``log``, ``meta`` and ``lease`` maps' names."""
        self.object_prefix = object_prefix
        self.anchor = anchor
        self.lock_lease = lock_lease
        self.lock_wait = lock_wait
        self.commits = tuple(commits)

    def write_data(self, out: ObjectDataOutput) -> None:
        # One write of the task's bytes, laid out by encode_task as the members' readData reads them: the
        # client's writer costs a Python call or more per field, most of a small commit's serialization.
        out.write_from(encode_task(self, out.get_byte_order() == "BIG_ENDIAN"))

    def read_data(self, inp: ObjectDataInput) -> None:  # pragma: no cover - only members read tasks
        raise NotImplementedError("nbdb commit tasks are read by the members")

    def get_factory_id(self) -> int:
        return FACTORY_ID

    def get_class_id(self) -> int:
        return self.CLASS_ID


class ProbeTask(IdentifiedDataSerializable):
    """Asks a member for ``[PROTOCOL, commit tasks it ran]``; refused by a member without nbdb's code."""

    CLASS_ID = 2

    def write_data(self, out: ObjectDataOutput) -> None:
        pass

    def read_data(self, inp: ObjectDataInput) -> None:  # pragma: no cover - only members read tasks
        pass

    def get_factory_id(self) -> int:
        return FACTORY_ID

    def get_class_id(self) -> int:
        return self.CLASS_ID


def factories() -> dict[int, dict[int, Any]]:
    """The client's ``data_serializable_factories`` for nbdb's tasks."""
    return {FACTORY_ID: {CommitTask.CLASS_ID: CommitTask, ProbeTask.CLASS_ID: ProbeTask}}


def encode_task(task: CommitTask, big_endian: bool = True) -> bytearray:
    """``task`` in the form ``CommitTask.readData`` reads (Hazelcast's ``ObjectDataOutput`` layout).

    Strings and byte arrays are an int length (-1 for None) and the bytes (strings in UTF-8),
    string and long arrays an int count and their items, numbers of the stream's byte order.
    """
    order = ">" if big_endian else "<"
    parts = [_task_head(task.maps, task.object_prefix, order)]
    add = parts.append
    integer = _INT[order].pack
    add(_string(task.anchor, order))
    add(_TIMES[order].pack(round(task.lock_lease * 1000), round(task.lock_wait * 1000), len(task.commits)))
    for commit in task.commits:
        add(integer(len(commit.conditions)))
        for condition in commit.conditions:
            kind, key, number, token = _condition(condition)
            add(_KIND[order].pack(kind))
            add(_string(key, order))
            add(_LONG[order].pack(number))
            add(integer(len(token)))
            add(token)
        puts = commit.puts
        ttls = {commit.token.key: commit.token.ttl} if commit.token is not None else {}
        add(integer(len(puts)))
        for key in puts:
            add(_string(key, order))
        for value in puts.values():
            add(integer(len(value)))
            add(value)
        add(integer(len(puts)))
        add(struct.pack(f"{order}{len(puts)}q", *(round(ttls.get(key, 0.0) * 1000) for key in puts)))
        add(integer(len(commit.deletes)))
        for key in commit.deletes:
            add(_string(key, order))
    return bytearray().join(parts)


_INT = {o: struct.Struct(f"{o}i") for o in "<>"}
_LONG = {o: struct.Struct(f"{o}q") for o in "<>"}
_KIND = {o: struct.Struct(f"{o}b") for o in "<>"}
_TIMES = {o: struct.Struct(f"{o}qqi") for o in "<>"}


def _string(text: str, order: str) -> bytes:
    data = text.encode()
    return _INT[order].pack(len(data)) + data


@lru_cache(maxsize=64)
def _task_head(maps: tuple[str, ...], object_prefix: str, order: str) -> bytes:
    """The part of a task that is the same for every commit of a namespace: the map names and object prefix."""
    return b"".join(_string(text, order) for text in (*maps, object_prefix))


def _condition(condition: Condition) -> tuple[int, str, int, bytes]:
    """A condition's wire form: kind, key (or lease name, or prefix), number, token."""
    if isinstance(condition, VersionIs):
        return _VERSION_IS, condition.key, condition.version, b""
    if isinstance(condition, Exists):
        return _EXISTS, condition.key, 0, b""
    if isinstance(condition, LeaseHeld):
        return _LEASE_HELD, condition.name, 0, condition.token
    if isinstance(condition, PrefixUnchangedSince):
        return _PREFIX_UNCHANGED, condition.prefix, condition.revision, b""
    if isinstance(condition, WrittenAt):
        return _WRITTEN_AT, condition.key, condition.revision, b""
    if isinstance(condition, ValueIs):
        return _VALUE_IS, condition.key, 0, condition.value
    raise TypeError(f"unknown condition {condition!r}")  # pragma: no cover - the family has no other conditions
