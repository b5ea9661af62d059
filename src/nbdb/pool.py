"""One reference-counted registry for resources that backends of one process share.

Some things are too expensive to open per :class:`nbdb.Database` and safe to
share: a Cassandra ``Cluster`` session, an OVSDB connection driver, the data
of a named ``memory://NAME`` store. Each backend used to keep its own global
dict and counter; :class:`SharedResources` is that pattern once. A registry is
an explicit object owned by the backend module that needs it; nothing is
opened at import time, and the last :meth:`SharedResources.release` closes
the resource.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Lease", "SharedResources"]

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(eq=False, slots=True)
class _Entry(Generic[V]):
    value: V
    users: int


class Lease(Generic[K, V]):
    """One user's hold on a shared resource; :meth:`release` once (later calls do nothing)."""

    __slots__ = ("_entry", "_registry", "key", "value")

    def __init__(self, registry: SharedResources[K, V], key: K, entry: _Entry[V]) -> None:
        self._registry: SharedResources[K, V] | None = registry
        self._entry = entry
        self.key = key
        self.value = entry.value

    def release(self) -> None:
        """Give the resource back; the last user's release closes it."""
        registry, self._registry = self._registry, None
        if registry is not None:
            registry._release(self.key, self._entry)


class SharedResources(Generic[K, V]):
    """Resources opened once per key and closed when their last user releases them.

    ``close`` runs outside the registry's lock, so a slow shutdown never
    blocks other keys. Opening runs under it, so two users of one key never
    open it twice.
    """

    def __init__(self, name: str, close: Callable[[V], None]) -> None:
        self.name = name
        self._close = close
        self._lock = threading.Lock()
        self._entries: dict[K, _Entry[V]] = {}

    def acquire(self, key: K, open: Callable[[], V]) -> Lease[K, V]:
        """The resource of ``key``, opened by ``open()`` if no one holds it."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = _Entry(open(), 0)
                self._entries[key] = entry
            entry.users += 1
            return Lease(self, key, entry)

    def users(self, key: K) -> int:
        """How many leases of ``key`` are held (0: not open)."""
        with self._lock:
            entry = self._entries.get(key)
            return 0 if entry is None else entry.users

    def _release(self, key: K, entry: _Entry[V]) -> None:
        with self._lock:
            entry.users -= 1
            if entry.users > 0:
                return
            if self._entries.get(key) is entry:
                del self._entries[key]
        try:
            self._close(entry.value)
        except Exception:  # closing must not fail the caller
            log.debug("%s: closing a shared resource failed", self.name, exc_info=True)
