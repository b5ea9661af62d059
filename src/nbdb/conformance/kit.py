"""Models and helpers shared by the kit's tests.

The kit defines its own small models (a user's models must work on every
backend) and also uses the OVN-style schema.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, ClassVar
from uuid import UUID

import pytest
from pydantic import Field, field_validator

from nbdb.models.base import Model, Reference
from nbdb.spi import Backend, RecordChange, RecordStream

if TYPE_CHECKING:
    from nbdb.api import Database
    from nbdb.cache import Cache
    from nbdb.errors import CorruptRecordError
    from nbdb.families.lease import LeaseStore
    from nbdb.watch import Watch

__all__ = [
    "RAISING_NAME",
    "KitChild",
    "KitCounter",
    "KitGroup",
    "KitNamed",
    "KitNote",
    "KitOwned",
    "KitOwnedSet",
    "KitParent",
    "KitWeakGroup",
    "Watched",
    "check_lease_primitives",
    "check_namespaces_isolate_locks",
    "check_stale_copies_refused",
    "eventually",
    "held_watches",
    "paused_watches",
    "sink_deliveries",
    "watched_and_cached",
]


class KitParent(Model):
    """A parent that children point to."""

    nbdb_table: ClassVar[str] = "KitParent"
    nbdb_indexes: ClassVar[tuple[str, ...]] = ("name",)

    name: str
    size: int = 0

    @field_validator("name")
    @classmethod
    def _raises_on_a_name(cls, value: str) -> str:
        # A user's validator may raise what pydantic lets through as it is (not a ValueError): a record
        # another writer stored with such a value must be corrupt to a reader, not kill its watch or cache.
        if value == RAISING_NAME:
            raise RuntimeError(f"a KitParent named {RAISING_NAME!r} makes its validator raise")
        return value


RAISING_NAME = "kit: the validator raises on this name"
"""A name :class:`KitParent`'s validator raises RuntimeError on (see test_corrupt)."""


class KitChild(Model):
    """A child with a required reference to its parent."""

    nbdb_table: ClassVar[str] = "KitChild"
    nbdb_indexes: ClassVar[tuple[str, ...]] = ("name",)

    parent: Annotated[UUID, Reference("KitParent")]
    name: str
    value: int = 0


class KitNote(Model):
    """An object with an optional reference."""

    nbdb_table: ClassVar[str] = "KitNote"

    about: Annotated[UUID | None, Reference("KitParent")] = None
    text: str = ""


class KitGroup(Model):
    """An object with a list of references."""

    nbdb_table: ClassVar[str] = "KitGroup"

    members: list[Annotated[UUID, Reference("KitChild")]] = Field(default_factory=list)


class KitWeakGroup(Model):
    """An object with a list of weak references (as a port group's ports): a plain delete drops a member."""

    nbdb_table: ClassVar[str] = "KitWeakGroup"

    members: list[Annotated[UUID, Reference("KitChild", weak=True)]] = Field(default_factory=list)
    pinned: Annotated[UUID | None, Reference("KitChild", weak=True)] = None


class KitOwned(Model):
    """An object its child owns (``nbdb_owned_by``, as a router port owns its gateway chassis): a plain
    delete of the child takes it along."""

    nbdb_table: ClassVar[str] = "KitOwned"
    nbdb_owned_by: ClassVar[tuple[str, ...]] = ("owner",)

    owner: Annotated[UUID, Reference("KitChild")]
    label: str = ""


class KitOwnedSet(Model):
    """Weak references to owned objects (as a chassis list naming gateway chassis): they lose one its
    owner's delete takes along."""

    nbdb_table: ClassVar[str] = "KitOwnedSet"

    owned: list[Annotated[UUID, Reference("KitOwned", weak=True)]] = Field(default_factory=list)
    note: str = ""


class KitCounter(Model):
    """A counter for read-modify-write races."""

    nbdb_table: ClassVar[str] = "KitCounter"

    count: int = 0


class KitNamed(Model):
    """An object with a unique name, and an optional unique pair (zone, slot)."""

    nbdb_table: ClassVar[str] = "KitNamed"
    nbdb_unique: ClassVar[tuple[str | tuple[str, ...], ...]] = ("name", ("zone", "slot"))

    name: str
    zone: str | None = None
    slot: int | None = None
    tags: list[str] = Field(default_factory=list)


def eventually(check: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``check`` until it is true or ``timeout`` passes; returns its last result."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def check_stale_copies_refused(db: Database) -> KitParent:
    """Assert the compare-and-swap across a delete and re-create of one id (ABA) on a ``cas_across_recreate`` store.

    An object's written, read and listed copies, the object deleted and its id created again (at version 1
    again, as the copies): each copy's update and delete raise ConflictError, and the new object is left as
    it is. Returns the new object.
    """
    from nbdb.errors import ConflictError

    first = db.create(KitParent(name="first"))
    read = db.get(KitParent, first.id)
    listed = next(o for o in db.list(KitParent) if o.id == first.id)
    db.delete(read)
    again = db.create(KitParent(id=first.id, name="again"))
    for stale in (first, read, listed):
        assert stale.version == again.version == 1  # the versions do not tell them apart
        with pytest.raises(ConflictError):
            db.update(stale.replace(size=7))
        with pytest.raises(ConflictError):
            db.delete(stale)
    assert db.get(KitParent, first.id) == again
    return again


def check_lease_primitives(store: LeaseStore, name: str, ttl: float = 1.0) -> None:
    """Assert the three lease primitives' contract (:class:`nbdb.families.lease.LeaseStore`) on lease ``name``.

    A renewal that brings back a lease which expired and another holder took
    (or a release that drops another's lease) gives two holders one lock, and
    no test through ``Database.lock`` sees it without stopping the renewals.
    Takes about ``ttl`` seconds (the first holder's lease must run out).
    """
    first, second, third = b"kit-first", b"kit-second", b"kit-third"
    assert store.acquire_lease(name, first, ttl), "acquire_lease: a free lease was refused"
    assert store.acquire_lease(name, first, ttl), "acquire_lease: not idempotent (the holder was refused)"
    assert not store.acquire_lease(name, second, 30), "acquire_lease: took a lease another token holds"
    assert not store.renew_lease(name, second, 30), "renew_lease: renewed a lease another token holds"
    store.release_lease(name, second)
    assert not store.acquire_lease(name, second, 30), "release_lease: dropped a lease another token holds"
    assert store.renew_lease(name, first, ttl), "renew_lease: the holder's unexpired lease was not renewed"
    taken = eventually(lambda: store.acquire_lease(name, second, 30), timeout=ttl + 15, interval=0.1)
    assert taken, f"acquire_lease: the lease was still held {ttl + 15:.0f}s after its {ttl}s ttl ran out"
    assert not store.renew_lease(name, first, 30), "renew_lease: revived an expired lease another token took since"
    store.release_lease(name, first)
    assert not store.acquire_lease(name, third, 30), (
        "a lost holder's renew or release took the lease from its new holder"
    )
    store.release_lease(name, second)
    assert store.acquire_lease(name, third, 30), "release_lease: the holder's release left the lease held"
    store.release_lease(name, third)


def check_namespaces_isolate_locks(a: Database, b: Database, timeout: float = 5.0) -> None:
    """Fail unless ``b`` (another namespace of ``a``'s store) takes a lock name while ``a`` holds it."""
    from nbdb.errors import LockTimeoutError

    with a.lock("kit-iso-lock", ttl=10):
        try:
            with b.lock("kit-iso-lock", ttl=10, timeout=timeout) as held:
                assert not held.lost
        except LockTimeoutError:
            pytest.fail("a lock held in one namespace blocks the same name in another: keep leases per namespace")


class _HeldStream(RecordStream):
    """A watch not opened on the server until ``gate`` is set: a consumer cut off from it."""

    def __init__(self, open_stream: Callable[[], RecordStream], since: int, gate: threading.Event) -> None:
        self._open = open_stream
        self._since = since
        self._gate = gate
        self._inner: RecordStream | None = None
        self._closed = False

    def poll(self, timeout: float | None) -> list[RecordChange]:
        if self._inner is None:
            if not self._gate.wait(timeout) or self._closed:
                return []
            self._inner = self._open()
        return self._inner.poll(timeout)

    @property
    def revision(self) -> int:
        return self._since if self._inner is None else self._inner.revision

    def reach(self, revision: int) -> None:
        if self._inner is not None:
            self._inner.reach(revision)

    def close(self) -> None:
        self._closed = True
        if self._inner is not None:
            self._inner.close()


@contextmanager
def held_watches(backend: Backend) -> Iterator[threading.Event]:
    """Hold back every watch ``backend`` opens in the block until the yielded event is set.

    Plays a consumer cut off from the server (a slow network, a paused
    process) without faking the server: each stream is the backend's own,
    opened from the same revision once the event is set.
    """
    gate = threading.Event()
    with _watches_wrapped(backend, gate, lambda open_stream, since: _HeldStream(open_stream, since, gate)):
        yield gate


@contextmanager
def _watches_wrapped(
    backend: Backend, release: threading.Event, wrap: Callable[[Callable[[], RecordStream], int], RecordStream]
) -> Iterator[None]:
    """Every watch ``backend`` opens in the block as ``wrap(open_it, since)``; ``release`` is set at its end."""
    original = backend.watch

    def watch(tables: Sequence[str], topics: Collection[str | None] | None, since: int) -> RecordStream:
        return wrap(lambda: original(tables, topics, since), since)

    backend.watch = watch  # type: ignore[method-assign]
    try:
        yield
    finally:
        release.set()
        del backend.watch  # back to the class's method


class _PausedStream(RecordStream):
    """A stream whose consumer, after each poll that brought changes, polls again only once ``flowing`` is set."""

    def __init__(self, inner: RecordStream, flowing: threading.Event) -> None:
        self._inner = inner
        self._flowing = flowing
        self._paused = False

    def poll(self, timeout: float | None) -> list[RecordChange]:
        if self._paused:
            if not self._flowing.wait(timeout):
                return []
            self._paused = False
        changes = self._inner.poll(timeout)
        self._paused = bool(changes) and not self._flowing.is_set()
        return changes

    @property
    def revision(self) -> int:
        return self._inner.revision

    def reach(self, revision: int) -> None:
        self._inner.reach(revision)

    def close(self) -> None:
        self._inner.close()


@contextmanager
def paused_watches(backend: Backend) -> Iterator[threading.Event]:
    """Pause every watch ``backend`` opens in the block after each poll that brought changes, until the
    yielded event is set.

    Plays a consumer busy with what it just got (a slow callback, a loaded machine): whatever the stream
    holds back for its next poll stays back while the test looks at what the consumer has.
    """
    flowing = threading.Event()
    with _watches_wrapped(backend, flowing, lambda open_stream, _: _PausedStream(open_stream(), flowing)):
        yield flowing


@dataclass
class Watched:
    """A watch and a synced cache of one model (:func:`watched_and_cached`), with what each reported."""

    watch: Watch
    cache: Cache
    watch_reports: list[CorruptRecordError] = field(default_factory=list)
    cache_reports: list[CorruptRecordError] = field(default_factory=list)


@contextmanager
def watched_and_cached(db: Database, model: type[Model]) -> Iterator[Watched]:
    """A watch of ``model`` and a cache of it, synced, each reporting corrupt records (``on_error``) to a list."""
    watch_reports: list[CorruptRecordError] = []
    cache_reports: list[CorruptRecordError] = []
    with (
        db.watch(model, on_error=watch_reports.append) as watch,
        db.cache(model, on_error=cache_reports.append) as cache,
    ):
        assert cache.wait_synced(15)
        yield Watched(watch, cache, watch_reports, cache_reports)


def sink_deliveries(
    db: Database, model: type[Model], write: Callable[[], None]
) -> tuple[list[tuple[str, list[RecordChange], int]], list[RecordChange]] | None:
    """What a stream of ``model``'s table, given a sink (``deliver_to``), hands it while ``write()`` runs.

    Each hand-over as (the thread that ran the sink, its changes, its revision), once the stream
    reached the store's revision after ``write()``; and what ``poll`` returned meanwhile, called
    from a thread of its own as the Database's shared watch calls it beside the sink. None (and
    ``write`` not run) if the stream declines a sink (``deliver_to`` is optional).
    """
    backend = db.backend
    stream = backend.watch([model.nbdb_table], None, backend.current_revision())
    given: list[tuple[str, list[RecordChange], int]] = []
    polled: list[RecordChange] = []

    def sink(changes: list[RecordChange], revision: int) -> None:
        given.append((threading.current_thread().name, list(changes), revision))

    try:
        if not stream.deliver_to(sink):
            return None
        stop = threading.Event()

        def pump() -> None:
            while not stop.is_set():
                polled.extend(stream.poll(0.1))

        thread = threading.Thread(target=pump, daemon=True)
        thread.start()
        try:
            write()
            final = backend.current_revision()
            assert eventually(lambda: stream.revision >= final, timeout=20)
        finally:
            stop.set()
            thread.join(timeout=10)
    finally:
        stream.close()
    return given, polled
