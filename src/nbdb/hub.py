"""One backend watch per Database, shared by all its caches.

A process that runs fifty caches (a chassis agent with one per tenant, a
controller with one per model) should not open fifty change streams to the
server, nor read and decode every change fifty times. The :class:`WatchHub`
of a Database keeps one backend stream over everything its caches follow (the
union of their tables and topics), buffers the recent changes, and hands each
cache a :class:`HubStream` — an ordinary :class:`~nbdb.spi.RecordStream` that
delivers, from the cache's own revision on, the changes of its tables and
topics, whole commits at a time. Records are shared, so the codec's memo
decodes each change once for every cache.

Resuming keeps the contract: a stream asked for a revision the buffer no
longer reaches raises HistoryGoneError (the cache re-lists, at a revision the
hub does reach), and so does every stream when the backend's stream itself
loses its history. When a cache follows more than the hub does, the hub
re-opens its backend stream, wider, from the revision it had reached, and
serves the new tables (or topics) from that revision on: a cache that listed
before it re-lists once rather than miss a change.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Callable, Collection, Sequence

from nbdb import errors
from nbdb.spi import Backend, Record, RecordChange, RecordStream

__all__ = ["HubStream", "WatchHub", "open_stream"]

log = logging.getLogger(__name__)

_BUFFER = 20_000
_SHARED_WINDOW = 256
"""Buffered changes further back than this give up the decoded copies they carry (see ``WatchHub._forget_values``)."""
_new_tuple = tuple.__new__
"""Changes kept for streams that join behind the hub (a cache that just listed)."""
_POLL = 0.5
_OPEN_WAIT = 5.0
"""How long :meth:`WatchHub.stream` waits for the backend stream that covers it to open (then it goes on)."""


_CLOSE_GRACE = 5.0
"""How much longer than the backend's request timeout :meth:`WatchHub.close` waits for the hub's thread to stop."""


_ALL = object()
"""The coverage key of "every topic"."""

_IDLE_POLL = 0.5
"""How often a stream that follows no topic reads the store's revision."""


def open_stream(
    backend: Backend, tables: Sequence[str], topics: Collection[str | None] | None, since: int
) -> RecordStream:
    """``backend.watch(tables, topics, since)``, also when ``topics`` is empty (no topic is followed).

    Stores filter topics on the server, and an empty set of topics was a query or a script they could
    not run (SQLite's, Redis'): a watch of it failed, and a cache of it retried for ever. Nothing of
    such a stream is ever delivered; only its revision moves, with the store's.
    """
    if topics is not None and not topics:
        return _NoTopics(backend, since)
    return backend.watch(tables, topics, since)


class _NoTopics(RecordStream):
    """The stream of a watch that follows no topic: no change, a revision that follows the store's."""

    def __init__(self, backend: Backend, since: int) -> None:
        self._backend = backend
        self._revision = since
        self._closed = threading.Event()

    @property
    def revision(self) -> int:
        return self._revision

    def poll(self, timeout: float | None) -> list[RecordChange]:
        wait = _IDLE_POLL if timeout is None else max(0.0, min(timeout, _IDLE_POLL))
        if self._closed.wait(wait):
            return []
        self._revision = max(self._revision, self._backend.current_revision())
        return []

    def close(self) -> None:
        self._closed.set()


class WatchHub:
    """The shared change stream of one Database (see the module docstring)."""

    def __init__(self, backend: Backend, buffer: int = _BUFFER) -> None:
        self._backend = backend
        self._limit = buffer
        self._cond = threading.Condition(threading.Lock())
        self._buffer: list[RecordChange] = []
        self._offset = 0
        """The absolute position of ``_buffer[0]`` (positions only grow)."""
        self._plain_from = 0
        """The absolute position from which buffered changes may still carry decoded copies."""
        self._base = 0
        """Every change after this revision is in the buffer or still to come."""
        self._revision = 0
        """Every change up to this revision has been read from the backend."""
        self._tables: dict[str, int] = {}
        """Each followed table, and the revision from which the buffer holds its changes."""
        self._topics: dict[object, int] = {}
        """Each followed topic (_ALL: every one), and the revision from which the buffer holds it."""
        self._streams: set[HubStream] = set()
        self._stream: RecordStream | None = None
        self._reopen = False
        self._opens_started = 0
        """Backend stream opens begun (each covers what was followed when it began)."""
        self._opens_done = 0
        """The number (of ``_opens_started``) of the last open that succeeded."""
        self._open_failures = 0
        self._thread: threading.Thread | None = None
        self._closed = False
        self._epoch = 0
        """Raised when the history is gone: what was buffered and the revision reached are of a lost history."""
        self._restart = False
        """The history went: the next stream starts the hub again from its own revision, as an idle hub does."""
        self._wanted = 0
        """The highest revision a wait asked the streams to reach (:meth:`reach`), for a backend stream opened later."""

    def stream(self, tables: Sequence[str], topics: Collection[str | None] | None, since: int) -> HubStream:
        """A stream of the changes of ``tables`` (in ``topics``) after revision ``since``."""
        wanted_tables = frozenset(tables)
        wanted_topics = None if topics is None else frozenset(topics)
        with self._cond:
            if self._closed:
                raise errors.BackendUnavailableError("the database is closed")
            if (self._thread is None or self._restart) and not self._streams:
                # Idle (or its history gone: what it buffered and reached is of a history the store lost, and a
                # stream that listed again starts below it): start again from this stream's revision, empty.
                self._restart = False
                self._buffer.clear()
                self._plain_from = self._offset
                self._tables.clear()
                self._topics.clear()
                self._drop_stream()
                self._base = self._revision = since
            start = self._revision
            keys: list[object] = [_ALL] if wanted_topics is None else list(wanted_topics)
            if _ALL not in self._topics:
                missing = [k for k in keys if k not in self._topics]
                if missing:
                    if _ALL in missing:
                        self._topics = {_ALL: start}
                    else:
                        self._topics.update(dict.fromkeys(missing, start))
                    self._reopen = True
            for table in wanted_tables - self._tables.keys():
                self._tables[table] = start
                self._reopen = True
            covered = max(
                [self._base]
                + [self._tables[t] for t in wanted_tables]
                + [self._topics.get(k, self._topics.get(_ALL, 0)) for k in keys]
            )
            stream = HubStream(self, wanted_tables, wanted_topics, since)
            stream.position = self._position(since)
            if since < covered:
                stream.gone = errors.HistoryGoneError(
                    f"revision {since} is older than what this database's shared watch holds for these "
                    f"tables and topics (from {covered}); list again"
                )
            self._streams.add(stream)
            if self._thread is None:
                self._thread = threading.Thread(target=self._pump, name="nbdb-watch-hub", daemon=True)
                self._thread.start()
            self._cond.notify_all()
            self._await_open(stream)
        return stream

    def _await_open(self, stream: HubStream) -> None:
        """Wait (under the lock) until a backend stream that covers ``stream`` is open, or it failed.

        A cache opens its stream right after it listed, and only then says it is
        synced: what is committed after that should reach it at once. Some servers
        serve a watch that starts behind a while later (etcd's background sync of
        such watchers runs every 100 ms), so the open must not lag behind the
        caller's next commit. Bounded: after :data:`_OPEN_WAIT` seconds, or when an
        open fails (the pump retries), the stream is returned anyway; it still
        delivers every change from its revision on.
        """
        if self._reopen:
            wanted = self._opens_started + 1  # the next open covers it
        elif self._stream is None:
            wanted = self._opens_started  # the open under way covers it
        else:
            return
        failures = self._open_failures
        self._cond.wait_for(
            lambda: (
                self._opens_done >= wanted
                or self._open_failures != failures
                or self._closed
                or stream.gone is not None
                or stream not in self._streams
            ),
            _OPEN_WAIT,
        )

    def _position(self, revision: int) -> int:
        """The absolute position of the first buffered change after ``revision``."""
        return self._offset + bisect.bisect_right(self._buffer, revision, key=lambda c: c.revision)

    def _pump(self) -> None:
        """Read the backend stream into the buffer, re-opening it wider when a stream asks."""
        backoff = 0.05
        while True:
            with self._cond:
                if self._closed or not self._streams:
                    self._drop_stream()
                    self._thread = None
                    return
                if self._stream is None or self._reopen:
                    self._drop_stream()
                    tables = sorted(self._tables)
                    topics = None if _ALL in self._topics else [t for t in self._topics if t is not _ALL]
                    since = self._revision
                    self._reopen = False
                    self._opens_started += 1
                    number = self._opens_started
                    epoch = self._epoch
                    opening = True
                else:
                    opening = False
            if opening:
                try:
                    opened = open_stream(self._backend, tables, topics, since)  # type: ignore[arg-type]
                except Exception as exc:
                    backoff = self._failed("opening the stream", exc, backoff)
                    continue
                with self._cond:
                    if epoch != self._epoch:
                        opened.close()  # opened from a revision of the history that went meanwhile
                        continue
                    self._stream = opened
                    self._opens_done = number
                    self._cond.notify_all()
                    wanted = self._wanted
                if wanted > since:
                    opened.reach(wanted)
                # A stream that reads on a thread of its own hands its changes over there (one wake less
                # per change); this thread's poll then only handles what that thread queued and failures.
                opened.deliver_to(self._receiver(opened))
            stream = self._stream
            if stream is None:
                continue
            try:
                changes = stream.poll(_POLL)
            except Exception as exc:
                # Not only nbdb's errors: a bug in a backend's stream or its reader (a sink it hands changes
                # to) must not end this thread, or every cache of the Database stops receiving changes
                # without a word. The stream re-opens from the revision every change up to which is
                # buffered: nothing is missed.
                backoff = self._failed("reading the stream", exc, backoff)
                continue
            backoff = 0.05
            with self._cond:
                if stream is not self._stream or self._reopen:
                    continue  # re-opened meanwhile (wider): it reads on from the same revision
                if changes:
                    self._buffer.extend(changes)
                    self._forget_values()
                self._revision = max(self._revision, stream.revision)
                self._trim()
                self._cond.notify_all()

    def _receiver(self, stream: RecordStream) -> Callable[[list[RecordChange], int], None]:
        """What ``stream`` gives its changes to from its own thread: the pump's own step after a poll."""

        def receive(changes: list[RecordChange], revision: int) -> None:
            with self._cond:
                if stream is not self._stream or self._reopen:
                    return  # re-opened meanwhile (wider): it reads on from the same revision
                if changes:
                    self._buffer.extend(changes)
                    self._forget_values()
                self._revision = max(self._revision, revision)
                self._trim()
                self._cond.notify_all()

        return receive

    def _forget_values(self) -> None:
        """Changes more than :data:`_SHARED_WINDOW` back in the buffer without the decoded copies they carry.

        A backend that keeps only bytes may hand a change carrying the copy its own writer
        validated (OVSDB: a row read back as written), for the streams to share rather than
        decode. Kept for the whole buffer (20,000 changes), those copies would outlive the
        caches' newer ones by far (about a kilobyte of objects per port, which the cyclic
        collector goes over too). A stream that far behind decodes the bytes, as it would
        without. Records of an in-process store (not plain ``Record``: their bytes are made from
        the copy, which the store holds anyway) keep theirs. Call under ``_cond``.
        """
        buffer, offset = self._buffer, self._offset
        end = offset + len(buffer) - _SHARED_WINDOW
        for at in range(max(self._plain_from, offset) - offset, end - offset):
            change = buffer[at]
            new = change.new
            if new is not None and new.value is not None and type(new) is Record:
                plain = _new_tuple(Record, (*new[:5], None, new[6]))
                buffer[at] = _new_tuple(RecordChange, (*change[:4], plain, *change[5:]))
        self._plain_from = max(self._plain_from, end)

    def _trim(self) -> None:
        excess = len(self._buffer) - self._limit
        if excess <= 0:
            return
        # Cut in chunks (amortised), and only between revisions: commits stay whole.
        cut = max(excess, self._limit // 4)
        revision = self._buffer[cut - 1].revision
        cut = bisect.bisect_right(self._buffer, revision, key=lambda c: c.revision)
        del self._buffer[:cut]
        self._offset += cut
        self._base = max(self._base, revision)

    def reach(self, revision: int) -> None:
        """A cache waits for every change up to ``revision``: the backend stream is told (see RecordStream.reach)."""
        with self._cond:
            if revision <= self._revision:
                return
            self._wanted = max(self._wanted, revision)
            stream = None if self._reopen else self._stream
        if stream is not None:
            stream.reach(revision)

    def history_gone(self, exc: errors.HistoryGoneError) -> None:
        """The history every stream stands on is gone (the store went back in time): each raises ``exc``
        at its next poll (its cache lists again), and the hub starts again from the next stream's revision."""
        self._history_gone(exc)

    def _history_gone(self, exc: errors.HistoryGoneError) -> None:
        log.info("watch hub: the backend lost the history; every stream re-lists (%s)", exc)
        with self._cond:
            for stream in self._streams:
                stream.gone = exc
            self._streams.clear()
            self._drop_stream()
            self._epoch += 1
            self._restart = True
            self._cond.notify_all()

    def _failed(self, doing: str, exc: Exception, pause: float) -> float:
        """After ``doing`` (opening or reading the stream) raised: the pause before the next failure's re-open.

        The history gone: every stream re-lists (the pause stays). An nbdb error, or a bug of the backend's
        (logged with its traceback): re-open after ``pause`` seconds, and the next pause is doubled, at most 5 s.
        """
        if isinstance(exc, errors.HistoryGoneError):
            self._history_gone(exc)
            return pause
        if isinstance(exc, errors.NbdbError):
            log.warning("watch hub: %s failed, re-opening in %.2fs: %s", doing, pause, exc)
        else:
            log.error("watch hub: %s raised unexpectedly, re-opening in %.2fs", doing, pause, exc_info=exc)
        with self._cond:
            self._reopen = True
            self._open_failures += 1
            self._cond.notify_all()
            if not self._closed:
                self._cond.wait(pause)
        return min(pause * 2, 5.0)

    def _drop_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def _detach(self, stream: HubStream) -> None:
        with self._cond:
            self._streams.discard(stream)
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the hub; every stream's poll returns []."""
        with self._cond:
            self._closed = True
            for stream in self._streams:
                stream.closed = True
            self._cond.notify_all()
            thread = self._thread
            self._drop_stream()
        if thread is not None and thread is not threading.current_thread():
            # Bounded: a pump in a backend call returns within the request's timeout, once every call it makes
            # is bounded; a pump stuck past that (a backend's bug: Hazelcast's listener registration once waited
            # for a reply its own reactor could not read) must not hold the Database's close for ever.
            bound = (self._backend.request_timeout or 0.0) + _CLOSE_GRACE
            thread.join(bound)
            if thread.is_alive():
                log.warning(
                    "watch hub: the stream's thread did not stop within %.1fs of close (stuck in a backend call); "
                    "left to end on its own",
                    bound,
                )


class HubStream(RecordStream):
    """One cache's view of the hub: its tables and topics, from its revision on."""

    def __init__(self, hub: WatchHub, tables: frozenset[str], topics: frozenset[str | None] | None, since: int) -> None:
        self._hub = hub
        self.tables = tables
        self.topics = topics
        self._revision = since
        self.position = 0
        """The absolute buffer position of the next change to look at."""
        self.closed = False
        self.gone: errors.HistoryGoneError | None = None

    @property
    def revision(self) -> int:
        return self._revision

    def poll(self, timeout: float | None) -> list[RecordChange]:
        hub = self._hub
        with hub._cond:
            while True:
                if self.gone is not None:
                    raise self.gone
                if self.closed:
                    return []
                if self.position < hub._offset:
                    raise errors.HistoryGoneError(
                        f"revision {self._revision} is older than the changes this database keeps "
                        f"for its caches (from {hub._base})"
                    )
                if hub._revision > self._revision:
                    return self._take(hub)
                if not hub._cond.wait(timeout):
                    return []

    def reach(self, revision: int) -> None:
        self._hub.reach(revision)

    def _take(self, hub: WatchHub) -> list[RecordChange]:
        since, tables, topics = self._revision, self.tables, self.topics
        start = self.position - hub._offset
        out = [
            c for c in hub._buffer[start:]
            if c.revision > since and c.table in tables and (topics is None or c.topic in topics)
        ]  # fmt: skip
        self.position = hub._offset + len(hub._buffer)
        self._revision = hub._revision
        return out

    def close(self) -> None:
        self.closed = True
        self._hub._detach(self)
