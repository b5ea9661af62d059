"""The user-facing change stream returned by :meth:`nbdb.Database.watch`."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType

from nbdb import errors
from nbdb.codec import decode
from nbdb.events import ChangeEvent, EventKind, in_commit_order
from nbdb.models.base import Model
from nbdb.spi import Record, RecordChange, RecordStream
from nbdb.timeouts import timeout_of

__all__ = ["ErrorHandler", "Watch", "to_event"]

log = logging.getLogger(__name__)

ErrorHandler = Callable[[errors.CorruptRecordError], None]


def _log_corrupt(exc: errors.CorruptRecordError) -> None:
    log.warning("skipping a corrupt record: %s", exc)


def to_event(model: type[Model], change: RecordChange) -> ChangeEvent[Model]:
    """Decode a record change; CorruptRecordError if its new side does not decode, or a delete's old side.

    A delete carries nothing but its old value: without it the event named no object (``event.id`` raised
    an ``AssertionError`` in the caller's hands), so a delete of a corrupt record is one, reported to
    ``on_error`` like any other.
    """
    if change.new is None and change.old is not None:
        try:
            return ChangeEvent(EventKind.DELETED, model, decode(model, change.old), None, change.revision)
        except errors.CorruptRecordError as exc:
            raise errors.CorruptRecordError(
                f"{change.table} {change.id} was deleted; its last stored value is corrupt: {exc}",
                table=exc.table,
                key=exc.key,
            ) from exc
    old = None if change.old is None else _decode_old(model, change.old)
    new = None if change.new is None else decode(model, change.new)
    if old is None:
        kind = EventKind.CREATED
    elif new is None:
        kind = EventKind.DELETED
    else:
        kind = EventKind.UPDATED
    return ChangeEvent(kind, model, old, new, change.revision)


def _decode_old(model: type[Model], record: Record) -> Model | None:
    # An old value that another writer corrupted must not hide the new, valid
    # state: report it as "created" from nothing rather than drop the change.
    try:
        return decode(model, record)
    except errors.CorruptRecordError as exc:
        log.warning("previous value is corrupt, reporting the change without it: %s", exc)
        return None


class Watch(Iterator[ChangeEvent[Model]]):
    """Every change after a revision, each once, in order per object.

    Iterate it (blocking) or call :meth:`poll`. It raises
    :class:`nbdb.HistoryGoneError` if the backend cannot resume from the
    revision; corrupt records are reported to ``on_error`` and skipped.
    ``revision`` is the resume token: pass it as ``since`` to a new watch to go
    on where this one stopped.
    """

    def __init__(
        self,
        stream: RecordStream,
        models: Mapping[str, type[Model]],
        on_error: ErrorHandler | None = None,
    ) -> None:
        self._stream = stream
        self._models = dict(models)
        self._on_error = on_error or _log_corrupt
        self._pending: deque[ChangeEvent[Model]] = deque()
        self._closed = False
        # Set at a merged catch-up (a synthetic change): where delivery stopped, and the error to raise.
        self._stopped_at: int | None = None
        self._gone: errors.HistoryGoneError | None = None

    @property
    def revision(self) -> int:
        """Resume token: every change up to this revision has been delivered.

        Tokens have commit granularity: stopping in the middle of a
        multi-object commit and resuming from here delivers that commit again.
        """
        if self._pending:
            return self._pending[0].revision - 1
        if self._stopped_at is not None:
            return self._stopped_at
        return self._stream.revision

    def _fetch(self, timeout: float | None) -> list[ChangeEvent[Model]]:
        if self._gone is not None:
            raise self._gone
        events = []
        stop: BaseException | None = None
        for change in self._stream.poll(timeout):
            if change.synthetic:
                # Several commits merged (a backend's catch-up after a reconnect): a watch
                # promises each commit on its own, so it ends here, after what came before.
                self._stopped_at = change.revision - 1
                self._gone = errors.HistoryGoneError(
                    f"after revision {self._stopped_at} the backend could only deliver a merged catch-up of "
                    "several commits (it reconnected); list again, or use a cache, which applies it"
                )
                break
            model = self._models.get(change.table)
            if model is None:
                continue
            try:
                events.append(to_event(model, change))
            except errors.CorruptRecordError as exc:
                if stop is not None:
                    _log_corrupt(exc)
                    continue
                try:
                    self._on_error(exc)
                except Exception:
                    # Raised out of poll(), it lost every other change of the batch: the stream was past them.
                    log.exception("watch: on_error failed on a corrupt record (%s); going on", exc)
                except BaseException as raised:
                    # Asked to stop (asyncio's CancelledError, KeyboardInterrupt): it goes to the caller, but
                    # after the batch, which is kept for the next poll -- the stream is past it, and the rest
                    # of the batch was lost, with `revision` saying it was delivered.
                    stop = raised
        # A poll holds whole commits: each one's events in the order that shows no dangling reference.
        events = in_commit_order(events)
        if stop is not None:
            self._pending.extend(events)
            raise stop
        if not events and self._gone is not None:
            raise self._gone
        return events

    def poll(self, timeout: float | None = None) -> list[ChangeEvent[Model]]:
        """The next changes; an empty list after ``timeout`` seconds or once closed."""
        timeout = timeout_of(timeout)
        if self._pending:
            out = list(self._pending)
            self._pending.clear()
            return out
        if self._closed:
            return []
        return self._fetch(timeout)

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> ChangeEvent[Model]:
        while not self._pending:
            if self._closed:
                raise StopIteration
            self._pending.extend(self._fetch(0.5))
        return self._pending.popleft()

    def close(self) -> None:
        """Stop the stream; an iteration in another thread ends."""
        self._closed = True
        self._stream.close()

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
