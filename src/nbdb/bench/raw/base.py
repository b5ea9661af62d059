"""What a raw baseline does: the natural way to do nbdb's server work with the backend's own client.

Values are the JSON bytes an application would store for a port (the same
fields nbdb stores); keys are ``<namespace>/<table>/<id>``. Every write is a
compare-and-swap on a per-key version, as nbdb's are, so the baseline pays
for the same guarantee, but nothing else: no validation, no references, no
topic layout, no history for watchers beyond what :meth:`RawClient.publish`
needs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

__all__ = ["Follower", "RawClient", "RawConflict"]


class RawConflict(Exception):
    """A raw compare-and-swap found another version (or an existing key on create)."""


class Follower(ABC):
    """A raw change feed: what a hand-written replica would listen to."""

    @abstractmethod
    def poll(self, timeout: float) -> list[tuple[str, bytes | None]]:
        """The next (key, value) changes; [] after ``timeout`` seconds."""

    @abstractmethod
    def close(self) -> None:
        """Stop listening."""


class RawClient(ABC):
    """The backend's own client, used the way an application without nbdb would."""

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self.namespace = namespace

    def key(self, table: str, id: str) -> str:
        """Where one object lives."""
        return f"{self.namespace}/{table}/{id}"

    def prefix(self, table: str) -> str:
        """Where every object of ``table`` lives."""
        return f"{self.namespace}/{table}/"

    def topic_table(self, table: str, topic: int) -> str:
        """The table under which topic number ``topic`` keeps its objects of ``table``.

        nbdb keeps each topic in a partition of its own (a key range, a
        wide-column partition), so by default a topic's objects get a key range
        of their own. A store without such partitions keeps them in ``table``.
        """
        return f"{table}-{topic}"

    @abstractmethod
    def create(self, key: str, value: bytes) -> int:
        """Store a new key (RawConflict if it exists); its version, 1."""

    @abstractmethod
    def get(self, key: str) -> tuple[bytes, int] | None:
        """The value and version, or None."""

    @abstractmethod
    def update(self, key: str, value: bytes, expect_version: int) -> int:
        """Compare-and-swap on the version; the new version (RawConflict on a mismatch)."""

    @abstractmethod
    def delete(self, key: str, expect_version: int) -> None:
        """Compare-and-swap delete (RawConflict on a mismatch)."""

    @abstractmethod
    def create_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Create several keys atomically (all or nothing)."""

    @abstractmethod
    def scan(self, prefix: str) -> list[bytes]:
        """Every value under ``prefix``."""

    def publish(self, key: str, value: bytes, expect_version: int) -> int:
        """An update that followers see (the raw equivalent of a watched write)."""
        raise NotImplementedError

    def follower(self) -> Follower:
        """A feed of the changes :meth:`publish` makes."""
        raise NotImplementedError

    def cleanup(self) -> None:  # noqa: B027 - optional hook
        """Remove everything written under the namespace (best effort)."""

    @abstractmethod
    def close(self) -> None:
        """Release the client's connections."""
