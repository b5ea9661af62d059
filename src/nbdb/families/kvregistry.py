"""The topic registry of the key-value family: the rules, written once, without I/O.

A store that scans one table across topics (``o/*/<table>/``, :data:`kvplan.ANY_TOPIC`) keeps a
registry of the topics that hold objects: a key ``p/<topic>`` (:meth:`kvplan.KeyLayout.topic_mark`)
per topic, put before (etcd) or beside (Hazelcast) the commit that creates its first object. A scan
reads the registry, names each registered topic's range, and reads the *gaps* between them as well
(:func:`gaps`), so that a topic no registry names (another writer's, data written before the
registry, a key deleted by hand) is still found: a *stray*, which the scan registers (adopts). A
registry key whose topic holds nothing any more costs each scan a range: :meth:`Registrations.due`
says which of them a client checks, and when.

This module decides; the backends do the I/O (etcd: synchronous transactions; Hazelcast: futures,
sent and settled from the reactor's thread, see docs/backends/hazelcast.md "Threads").
:class:`Registrations` is safe to share between threads: its own lock guards every change.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["Registrations", "gaps", "parse_marks", "topic_of", "topics_of"]

V = TypeVar("V")


def parse_marks(marks: str, keys: Iterable[Any]) -> tuple[list[str], list[str]]:
    """The topics the registry keys ``keys`` (under ``marks``, ``p/``) name, and the names that are no topic.

    A name with a ``/`` (another writer's key) is *foreign*: no topic spells it (a topic part never holds
    a ``/``), and its ``o/<name>/`` would overlap a topic's range, whose keys a gap read would then find
    again. Keys that are no text or not under ``marks`` are dropped. Both lists keep ``keys``' order.
    """
    names = [k[len(marks) :] for k in keys if isinstance(k, str) and k.startswith(marks)]
    return [n for n in names if "/" not in n], [n for n in names if "/" in n]


def topic_of(objects: str, key: str) -> str:
    """The topic part of the object key ``key`` (under ``objects``, ``o/``): ``o/<topic>/...``."""
    return key[len(objects) :].partition("/")[0]


def topics_of(objects: str, keys: Iterable[str]) -> set[str]:
    """The topics of those of ``keys`` that are object keys (under ``objects``)."""
    return {topic_of(objects, key) for key in keys if key.startswith(objects)}


def _utf8(text: str) -> bytes:
    return text.encode()


def gaps(
    objects: str, topics: Iterable[str], order: Callable[[str], Any] = _utf8
) -> tuple[list[str], list[tuple[str | None, str | None]]]:
    """The registered topics' prefixes (``o/<topic>/``) in key order, and the gaps of ``o/`` between them.

    ``order``: how the store compares keys (etcd: their UTF-8 bytes, the default; Hazelcast, as
    Java: UTF-16 units). A gap is ``(after, before)``: it starts after every key under the prefix
    ``after`` (None: at ``objects``) and ends before ``before`` (None: after every key under
    ``objects``). Each backend spells the bounds its way; together the prefixes and the gaps
    cover every key under ``objects``, and no gap holds a key of a registered topic. Duplicate
    topics count once.
    """
    starts = sorted({f"{objects}{t}/" for t in topics}, key=order)
    afters: list[str | None] = [None, *starts]
    befores: list[str | None] = [*starts, None]
    return starts, list(zip(afters, befores, strict=True))


class Registrations(Generic[V]):
    """One client's bookkeeping of the registry: topics registered, registrations in flight, checks for pruning.

    ``limit``: registrations in flight at most (None: no bound, nor any tracking of them: a caller
    that registers synchronously needs none). ``generation`` counts the registrations answered: a
    registry read sent before one is stale (:meth:`keep`, :meth:`adopt`). ``V``: what a backend
    makes of a registry read, held by :meth:`keep` for :meth:`held`.
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.registered: set[str] = set()
        """Topics this client put in the registry, as keys spell them: the put answered."""
        self.in_flight: set[str] = set()
        """Topics whose registry put is in flight (at most ``limit``, one put each)."""
        self.generation = 0
        self.read: tuple[float, V] | None = None
        """When the registry was last read, and what the backend made of it (see :meth:`keep`)."""
        self.checked: dict[str, float] = {}
        """When this client last checked each topic for a dead registry key (see :meth:`due`)."""
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- registering

    def new(self, topics: Iterable[str]) -> list[str]:
        """Those of ``topics`` neither registered nor in flight, sorted."""
        with self._lock:
            return sorted(set(topics) - self.registered - self.in_flight)

    def reserve(self, topics: Iterable[str]) -> list[str]:
        """Those of ``topics`` neither registered nor in flight, now in flight (room permitting): to send."""
        with self._lock:
            new = sorted(set(topics) - self.registered - self.in_flight)
            if self.limit is not None:
                new = new[: max(0, self.limit - len(self.in_flight))]
                self.in_flight.update(new)
            return new

    def settled(self, topics: Iterable[str], registered: bool) -> None:
        """The registration of ``topics`` answered (``registered``) or failed: no longer in flight.

        An answered one makes the registry read before it stale: the next scan reads it again.
        """
        topics = list(topics)
        with self._lock:
            self.in_flight.difference_update(topics)
            if registered and topics:
                self.registered.update(topics)
                self.generation += len(topics)
                self.read = None

    def adopt(self, strays: Collection[str], generation: int | None = None) -> list[str]:
        """Of ``strays``, topics a scan found holding objects outside the registry, those to register.

        A topic this client registered is there either because its registry key was deleted (by
        hand, or pruned by another client) since: put it again; or, with ``generation`` (that of
        the scan's registry read, see :meth:`held`), because the read was sent before this
        client's registration was answered: nothing to do. None: the read is never stale.
        """
        with self._lock:
            if generation is None or generation == self.generation:
                self.registered.difference_update(strays)
            return sorted(set(strays) - self.registered - self.in_flight)

    # ---------------------------------------------------------------- a registry read held for a while

    def held(self, now: float, age: float) -> tuple[tuple[float, V] | None, bool, int]:
        """The registry read last kept, whether it is younger than ``age`` seconds at ``now``, and the generation."""
        with self._lock:
            read, generation = self.read, self.generation
        return read, read is not None and now - read[0] < age, generation

    def keep(self, sent: float, value: V, generation: int) -> None:
        """Hold ``value``, a registry read sent at ``sent`` in ``generation``: only if no registration was
        answered since it was sent, nor a read sent later kept (a stale one never replaces a newer state)."""
        with self._lock:
            if self.generation == generation and (self.read is None or self.read[0] <= sent):
                self.read = (sent, value)

    # ---------------------------------------------------------------- pruning

    def due(self, candidates: Sequence[str], now: float, start_from: int, every: float) -> list[str]:
        """The ``candidates`` (topics a scan found none of its tables' keys under) to check for a dead
        registry key at ``now``: none below ``start_from`` candidates; each topic at most once per
        ``every`` seconds, and first ``every`` seconds after it was first a candidate (a client that
        lives less never checks). Mark the checked ones with :meth:`checked_at`.
        """
        if len(candidates) < start_from:
            return []
        with self._lock:
            checked = self.checked
            if len(checked) > 100_000:
                checked.clear()
            return [t for t in candidates if now - checked.setdefault(t, now) >= every]

    def checked_at(self, topics: Iterable[str], now: float) -> None:
        """``topics`` were checked at ``now`` (see :meth:`due`)."""
        with self._lock:
            self.checked.update((t, now) for t in topics)

    def forget(self, topics: Iterable[str]) -> None:
        """``topics``' registry keys are (to be) deleted: register them again on their next create."""
        with self._lock:
            self.registered.difference_update(topics)
