"""nbdb's member-side code for Hazelcast, as the client sees it: the tasks it sends and their replies.

The members run ``io.nbdb.hazelcast.CommitTask`` (java/hazelcast-member): the client's own commit
protocol (see the package docstring), with the same stored bytes, in the member that owns the
commit lock, so that a commit is one client round trip. :class:`ProbeTask` tells at connect
whether the members have that code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hazelcast.serialization.api import IdentifiedDataSerializable, ObjectDataInput, ObjectDataOutput

from nbdb.families.kv import Condition, Exists, KeyCommit, LeaseHeld, PrefixUnchangedSince, VersionIs

__all__ = ["APPLIED", "BUSY", "FACTORY_ID", "FALLBACK", "PROTOCOL", "CommitTask", "ProbeTask", "factories"]

FACTORY_ID = 7301
"""The serializer factory id the members register (``io.nbdb.hazelcast.NbdbFactory``)."""
PROTOCOL = 1
"""The task's wire form and reply; the members' ``CommitTask.PROTOCOL`` must be the same."""
APPLIED, FALLBACK, BUSY = 0, 1, 2
"""A commit task's reply status: done (``[APPLIED, revision, ok...]``); nothing written, commit with the
client's own protocol; nothing written, the lock was not granted in time."""
_VERSION_IS, _EXISTS, _LEASE_HELD, _PREFIX_UNCHANGED = 1, 2, 3, 4


class CommitTask(IdentifiedDataSerializable):
    """Commits at one revision, to run in a member (``CommitTask.java`` reads this wire form)."""

    CLASS_ID = 1

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
        for name in self.maps:
            out.write_string(name)
        out.write_string(self.object_prefix)
        out.write_string(self.anchor)
        out.write_long(round(self.lock_lease * 1000))
        out.write_long(round(self.lock_wait * 1000))
        out.write_int(len(self.commits))
        for commit in self.commits:
            out.write_int(len(commit.conditions))
            for condition in commit.conditions:
                kind, key, number, token = _condition(condition)
                out.write_byte(kind)
                out.write_string(key)
                out.write_long(number)
                out.write_byte_array(bytearray(token))
            ttls = {commit.token.key: commit.token.ttl} if commit.token is not None else {}
            out.write_string_array(list(commit.puts))
            for value in commit.puts.values():
                out.write_byte_array(bytearray(value))
            out.write_long_array([round(ttls.get(key, 0.0) * 1000) for key in commit.puts])
            out.write_string_array(list(commit.deletes))

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
    raise TypeError(f"unknown condition {condition!r}")  # pragma: no cover - the family has no other conditions
