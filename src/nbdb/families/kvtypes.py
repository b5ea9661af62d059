"""The key-value family's vocabulary: stored keys, key changes, commit conditions, tokens and commits.

These are the values a key-value backend exchanges with the family
(:mod:`nbdb.families.kv`, which re-exports them): what a store returns, what a
commit asks of it, and the commit token that makes a commit exactly-once.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "APPLIED",
    "VOID",
    "CommitToken",
    "Condition",
    "Exists",
    "KeyChange",
    "KeyCommit",
    "KeyStream",
    "KeyValue",
    "LeaseHeld",
    "PrefixUnchangedSince",
    "ValueIs",
    "VersionIs",
    "WrittenAt",
    "applied_at",
    "write_count",
]


def write_count(puts: Mapping[str, bytes], deletes: Sequence[str]) -> int:
    """The put and delete operations a commit sends (a key both put and deleted is only put)."""
    if not deletes:  # every create and update: no set to build
        return len(puts)
    return len(puts) + len({*deletes} - puts.keys())


APPLIED = b"1"
"""The value of a token key written by its commit."""
VOID = b"0"
"""The value of a token key written by a settlement: that commit will never apply."""


class KeyValue(NamedTuple):
    """A stored key: value, number of writes since creation, revision of the last write.

    A named tuple: a list or a cache's load builds one per key, and a frozen
    dataclass took about 2.5 times as long to build (1.2 against 0.46 µs).
    """

    key: str
    value: bytes
    version: int
    mod_revision: int


def applied_at(token: KeyValue | None) -> int | None:
    """The revision a commit applied at, read from its token key ``token``; None if the key is absent or void.

    Only the commit writes its token as :data:`APPLIED` (a settlement writes :data:`VOID`), so a key holding
    it says that commit is in, at the key's revision: the settle's rule, and Hazelcast's for a commit sent
    again after it landed."""
    return token.mod_revision if token is not None and token.value == APPLIED else None


@dataclass(frozen=True, slots=True)
class KeyChange:
    """One key changed at ``revision`` (value None: deleted)."""

    key: str
    value: bytes | None
    version: int
    prev_value: bytes | None
    prev_version: int
    revision: int


class VersionIs(NamedTuple):
    """The key's version is ``version`` (0: the key is absent)."""

    key: str
    version: int


class WrittenAt(NamedTuple):
    """The key is present and its last write was at ``revision`` (its mod revision is ``revision``).

    A compare-and-swap of a copy that knows the revision that wrote it (:attr:`nbdb.spi.Put.expect_written`),
    in place of its ``VersionIs``: revisions only grow and a commit writes a key once, so the key's mod
    revision names the version the copy holds, and a key deleted and created again since has a later one
    whatever its version. Only stores with ``capabilities.cas_across_recreate`` are sent one.
    """

    key: str
    revision: int


class ValueIs(NamedTuple):
    """The key is present and holds ``value``.

    The planner's condition on each unique claim a commit releases (a delete, an update that drops the
    value): the claim must still name the object releasing it. Deleted unread, a claim another tool had
    pointed at another object was freed under that object, and a third writer could take the value: two
    holders. When it fails, the family reads the claim and plans again (see ``kvplan.vet_released``).
    """

    key: str
    value: bytes


class Exists(NamedTuple):
    """The key is present."""

    key: str


class PrefixUnchangedSince(NamedTuple):
    """No key under ``prefix`` was created or modified after ``revision``."""

    prefix: str
    revision: int


class LeaseHeld(NamedTuple):
    """The lease (lock) ``name`` is held by ``token`` and has not expired (fenced writes)."""

    name: str
    token: bytes


Condition = VersionIs | Exists | PrefixUnchangedSince | LeaseHeld | WrittenAt | ValueIs
"""A commit's condition. Named tuples, built several times per write (a frozen dataclass took 2.5 times
as long); tell them apart by type (``isinstance``), never by ``==``: a tuple's equality ignores its class."""


@dataclass(frozen=True, slots=True)
class CommitToken:
    """Makes one commit exactly-once (see the module docstring).

    The family has already added ``VersionIs(key, 0)`` to the commit's
    conditions and ``key`` to its puts. The backend keeps ``key`` for at
    least ``ttl`` seconds (then may drop it). If it sends the request again
    after an attempt whose reply was lost and the conditions then fail, it
    may read ``key``: holding the value of the puts means the earlier attempt
    applied at that key's ``mod_revision``.
    """

    key: str
    ttl: float


@dataclass(frozen=True, slots=True)
class KeyCommit:
    """One conditional commit of keys, as the family hands it to a store (alone or in a group)."""

    conditions: Sequence[Condition]
    puts: Mapping[str, bytes]
    deletes: Sequence[str]
    token: CommitToken | None = None
    prepared: object = None
    """What a backend made of it for a group (its encoding), while its thread waited to be sent."""

    def with_token_key(self) -> KeyCommit:
        """This commit as a store without native tokens sends it: the token key absent, then written."""
        token = self.token
        if token is None:
            return self
        return KeyCommit(
            [*self.conditions, VersionIs(token.key, 0)], {**self.puts, token.key: APPLIED}, self.deletes, token
        )


class KeyStream:
    """Changes of keys under some prefixes, from a revision on, in revision order.

    Backends implement ``poll`` and ``revision`` like :class:`nbdb.spi.RecordStream`.
    """

    @abstractmethod
    def poll(self, timeout: float | None) -> list[KeyChange]:
        """The next key changes; [] after ``timeout``; HistoryGoneError if the revision is gone."""

    @property
    @abstractmethod
    def revision(self) -> int:
        """Every change up to this revision has been returned."""

    @abstractmethod
    def close(self) -> None:
        """Stop; a blocked ``poll`` returns []."""

    def deliver_to(self, sink: Callable[[list[KeyChange], int], None]) -> bool:
        """As :meth:`nbdb.spi.RecordStream.deliver_to`, of key changes; False (the default) if unsupported."""
        return False

    def reach(self, revision: int) -> None:
        """As :meth:`nbdb.spi.RecordStream.reach` (the default does nothing)."""
        return
