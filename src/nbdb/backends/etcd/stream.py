"""The etcd backend's change stream: one etcd watch, resumed from the last revision it delivered."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from nbdb import errors
from nbdb.backends.etcd import wire
from nbdb.backends.etcd.client import Wake, WatchSession
from nbdb.families.kv import KeyChange, KeyStream
from nbdb.retry import RetryPolicy

if TYPE_CHECKING:
    from nbdb.backends.etcd.backend import EtcdBackend

__all__ = ["EtcdKeyStream"]

log = logging.getLogger(__name__)

_CREATED_WAIT = 2.0
"""How long opening a stream waits for etcd to confirm its watcher (then it goes on without)."""

_WANT_GRACE = 0.05
"""Seconds a :meth:`EtcdKeyStream.reach` is left to the watch before the stream acts on it: most waits are
for a commit the stream follows, whose event is on its way, and acting at once swapped a caught-up watcher
for a wide one fed at etcd's 100 ms sync (3.4.23, a read-your-writes loop: p90 21 ms against 0.6 ms)."""
_ASK_FOR = 2.0
"""How long after a :meth:`EtcdKeyStream.reach` the stream asks again for progress while a member lags behind it."""
_REASK = 0.01
"""The pause before asking again after a progress notification below the revision wanted (a member behind)."""
_MARK_AFTER = 0.25
"""How long a wide watch may stay behind a wait before the stream writes the namespace's progress mark (older
servers): a commit of the namespace brings it there within etcd's 100 ms sync of a watcher opened from the past."""
_MARK_TRIES = RetryPolicy(attempts=1, deadline=None)
"""The progress mark is written on the polling thread: one try (bounded by the request timeout), not the
client's whole retry budget, so :meth:`EtcdKeyStream.poll` overruns its timeout by one request at most. A mark
that failed is not tried again for its wait, which ends at the namespace's next commit or its timeout."""
_MARK_KEY = "w/mark"
"""The key, under the backend's namespace and outside every table's prefix, of the progress mark."""
_WIDE_LINGER = 1.0
"""How long the whole namespace stays watched after the last wait it served, before the watch narrows again."""
_WIDE_FOR = 30.0
"""How long after the last :meth:`EtcdKeyStream.reach` a revision not reached keeps the namespace watched (a
revision no commit of the namespace will pass: another program's, or past the store's): then the watch narrows."""


class EtcdKeyStream(KeyStream):
    """One etcd watch over the smallest key range covering the prefixes, filtered here.

    A single watcher keeps etcd's per-watcher guarantees: events in revision
    order, every event of one revision in one response, and a progress
    notification only once every earlier event was sent. So the resume point is
    the revision of the last response (events or progress). The stream reconnects
    to another endpoint from that revision when a member fails.

    Given a sink (:meth:`deliver_to`, the Database's shared watch), a response of
    plain events goes to it from the gRPC reader thread, one thread wake less per
    change than the queue to the polling thread. Anything else (the watcher's
    confirmation, progress, a cancel, a compaction, a delete without its old value,
    a failure) is queued for :meth:`poll`, and so is every response after one that
    is queued, until ``poll`` has handled it: the sink sees the responses in the
    order etcd sent them, each once.

    A wait for a revision the stream has not delivered (:meth:`reach`: a commit
    to keys it does not watch moves no watcher of it) would end only at a progress
    notification. The stream leaves it to the watch for :data:`_WANT_GRACE` (the
    commonest wait is for a commit the stream follows, whose event is on its way),
    then acts. On a server that orders requested notifications after pending
    events (:func:`~nbdb.backends.etcd.client.safe_progress_requests`) it asks for
    one. On older servers (Debian 12's 3.4.23) a requested notification is no
    proof, so the stream watches the backend's whole namespace instead, from the
    revision it reached (one watcher again: in order, nothing skipped, the other
    keys dropped here), until it has passed the revision — the commit's own event
    brings it there, or, for a commit outside the namespace, the progress mark
    (:meth:`_mark`) — and narrows again after :data:`_WIDE_LINGER` seconds without
    a wait.
    """

    def __init__(self, backend: EtcdBackend, prefixes: Sequence[str], since: int) -> None:
        self._client = backend.client
        self._header_now = backend.header_now
        self._prefixes = tuple(prefixes)
        encoded = [p.encode() for p in prefixes] or [backend.key_prefix.encode()]
        self._start = min(encoded)
        self._end = max(wire.prefix_end(p) for p in encoded)
        namespace = backend.key_prefix.encode()
        self._whole = (min(namespace, self._start), max(wire.prefix_end(namespace), self._end))
        """The backend's whole namespace: every commit of nbdb's there writes a key in it."""
        self._safe_progress = backend.safe_progress
        self._wanted = 0
        """The highest revision a wait asked for (:meth:`reach`) that the stream pursues: lowered to where a
        progress mark landed when the mark showed the waits above it past the store (see :attr:`_beyond`)."""
        self._beyond = 0
        """The highest revision a wait asked for that a progress mark showed past the store (it landed below):
        the watch stays wide for it until :attr:`_wide_until`, but no grace, widening or mark is decided by it,
        so one wait past the store (a restore, another cluster's revision, a mistake) does not leave every
        later wait without its grace and its mark."""
        self._due = 0.0
        """When the stream acts for :attr:`_wanted` if the watch has not brought it there (see :data:`_WANT_GRACE`)."""
        self._ask_until = 0.0
        self._asked = False
        """A progress request is out (safe servers), not yet answered."""
        self._next_ask = 0.0
        self._wide = False
        """The session watches :attr:`_whole` (older servers, while a wait is behind)."""
        self._wide_until = 0.0
        self._served = 0.0
        """When the wide watch last reached what a wait wanted."""
        self._widened = 0.0
        """When the watch last became wide."""
        self._mark_key = (backend.key_prefix + _MARK_KEY).encode()
        self._marked = 0
        """The revision the last progress mark landed at (its commit's; older servers, see :meth:`_mark`), or the
        wanted revision a refused mark was tried for: a wait at or below it needs no other mark."""
        self._mark_for = 0
        """The wanted revision the progress mark due (:attr:`_mark_due`) is written for."""
        self._mark_due = False
        self._revision = since
        self._term = 0
        """The highest raft term of a confirmation or events of this stream: a cluster never lowers it (see
        :meth:`_check_store`). Not a progress notification's: a member cut off from its leader may send one
        at a term it campaigned at (etcd 3.4 without pre-vote), which the cluster may never reach."""
        self._closed = False
        self._failures = 0
        self._reauthenticated = False
        self._progress_interval = backend.progress_interval if backend.safe_progress else 0.0
        self._last_heard = time.monotonic()
        self._mutex = threading.Lock()
        """Held while a response is handled (on the reader thread or in poll): one at a time, in order."""
        self._sink: Callable[[list[KeyChange], int], None] | None = None
        self._halted = False
        """True once handling a response raised (HistoryGoneError, a cancel) or the sink did: every later
        response is queued for :meth:`poll`, so none past the one that failed reaches the sink first."""
        self._session: WatchSession = self._open(since)
        self._early: wire.WatchResponse | BaseException | Wake | None = None
        """The first response, when it was not the confirmation :meth:`_await_created` waited for."""
        self._await_created()

    def _await_created(self) -> None:
        """Return once etcd confirms the watcher (or after :data:`_CREATED_WAIT` seconds).

        etcd sends a commit straight to a watcher that is registered and caught up
        (its "synced" group), but one registered from a revision that was already
        committed waits for a background sync that runs every 100 ms. A cache
        lists, opens its stream, then says it is synced: once the watcher is
        confirmed, the commits made after that reach it at once (measured on the
        fan-out bench: the first ~20 commits after a cache loaded took 50-100 ms).
        Anything else that arrives first is kept for :meth:`poll`.
        """
        try:
            item = self._session.responses.get(timeout=_CREATED_WAIT)
        except queue.Empty:
            return
        if isinstance(item, wire.WatchResponse) and item.created and not item.canceled and not item.events:
            with self._mutex:
                self._session.pending -= 1
                self._handle(item)
        else:
            self._early = item

    def _open(self, since: int) -> WatchSession:
        start, end = self._whole if self._wide else (self._start, self._end)
        return self._client.watch(start, end, since + 1, route=self._route)

    def reach(self, revision: int) -> None:
        with self._mutex:
            if revision <= self._revision or self._closed:
                return
            now = time.monotonic()
            if self._wanted <= self._revision:
                self._due = now + _WANT_GRACE  # no wait outstanding: this one is given its grace
            self._wanted = max(self._wanted, revision)
            self._ask_until = max(now, self._due) + _ASK_FOR
            self._wide_until = max(now, self._due) + _WIDE_FOR
            self._next_ask = 0.0
            self._session.wake()  # under the lock: a session swapped meanwhile is woken, not the one before it

    def _pursue(self) -> float | None:
        """On the polling thread: act for a wait the stream is behind (see the class); how soon to look again."""
        with self._mutex:
            if self._closed:
                return None
            now = time.monotonic()
            behind = self._wanted > self._revision
            if behind and now < self._due:
                return self._due - now
            if self._safe_progress:
                if not behind or now >= self._ask_until:
                    return None
                if self._asked or now < self._next_ask:
                    return max(0.0, self._next_ask - now) if not self._asked else None
                self._session.request_progress()
                self._asked = True
                return None
            if (behind or self._beyond > self._revision) and now < self._wide_until:
                if not self._wide:
                    self._swap(wide=True)
                    self._widened = now
                self._served = now
                if not behind or self._marked >= self._wanted:
                    return None
                if now - self._widened < _MARK_AFTER:
                    return self._widened + _MARK_AFTER - now
                self._mark_for = self._wanted
                self._mark_due = True
                return 0.0
            if not self._wide:
                return None
            if now - self._served < _WIDE_LINGER:
                return self._served + _WIDE_LINGER - now
            self._swap(wide=False)
            return None

    def _mark(self) -> None:
        """Write the namespace's progress mark (older servers, a wide watch still behind a wait).

        A revision no commit of the namespace passes — another namespace's commit, another program's —
        moves no watcher of it: the wait ended only at the namespace's next commit or the 10-minute
        progress notification (False at its timeout). The mark is a commit of the namespace, after the
        awaited one when the store had passed it: its event comes on the wide watch (one watcher: in
        order, after every event before it), moves the resume point past the awaited revision, and is
        dropped here like any key outside the prefixes. A write the server refuses (a read-only user)
        leaves the wait as it was (no mark is tried again for it).

        The mark lands at the store's revision. Below the wanted revision, the waits above it are past
        the store (a restore, another cluster's revision, a caller's mistake): they go to
        :attr:`_beyond`, and the stream pursues only what the mark covers, so a later wait is given its
        grace and, for a revision past the mark, a mark of its own.
        """
        self._mark_due = False
        wanted = self._mark_for
        try:
            request = wire.txn_request([], [wire.request_put(self._mark_key, b"")])
            header, _, _, _ = self._client.txn(request, policy=_MARK_TRIES)
        except errors.NbdbError as exc:
            log.info(
                "etcd watch: could not write the progress mark %r (%s); the wait ends at the namespace's "
                "next commit or a progress notification",
                self._mark_key,
                exc,
            )
            self._marked = max(self._marked, wanted)
            return
        landed = header.revision
        log.debug("etcd watch: progress mark at revision %d (for %d)", landed, wanted)
        with self._mutex:
            self._marked = max(self._marked, landed)
            if landed < wanted:
                self._beyond = max(self._beyond, wanted)
                if self._wanted <= wanted:  # no later wait asked for more meanwhile (that one is marked again)
                    self._wanted = landed

    def _swap(self, wide: bool) -> None:
        """Watch the whole namespace (or only the prefixes again) from the revision reached (under the mutex)."""
        log.debug("etcd watch: %s from revision %d", "widening" if wide else "narrowing", self._revision)
        self._session.close()
        self._wide = wide
        self._session = self._open(self._revision)
        if self._closed:  # close() ran meanwhile (it does not take the mutex) and closed the session before
            self._session.close()

    def deliver_to(self, sink: Callable[[list[KeyChange], int], None]) -> bool:
        with self._mutex:
            self._sink = sink
        return True

    def _route(self, session: WatchSession, response: wire.WatchResponse) -> bool:
        """On the reader thread: give a response of plain events to the sink, or count it as queued."""
        with self._mutex:
            sink = self._sink  # None until the constructor is done (so self._session is set when it is read)
            if (
                sink is not None
                and not session.pending
                and not self._halted
                and session is self._session
                and not self._closed
            ):
                if _plain(response):
                    changes = self._changes(response)
                    revision = max(self._revision, response.events[-1].kv.mod_revision)
                    try:
                        sink(changes, revision)
                    except Exception:
                        # Not on this thread, where it would end the watch unseen: poll hands this
                        # response to the sink again, on the thread that reports a failure.
                        log.exception("etcd watch: the sink failed on the reader thread; handing over in poll")
                        self._halted = True
                        session.pending += 1
                        return False
                    self._revision = revision
                    self._term = max(self._term, response.header.raft_term)
                    self._failures = 0
                    self._last_heard = time.monotonic()
                    return True
            session.pending += 1
            return False

    @property
    def revision(self) -> int:
        return self._revision

    def close(self) -> None:
        self._closed = True
        self._session.close()
        self._session.responses.put(None)

    def _reopen(self, exc: BaseException | None) -> None:
        endpoint = self._session.endpoint
        self._session.close()
        if self._client.closed:
            raise errors.BackendUnavailableError("the etcd backend was closed")
        failure = self._client.failed(endpoint, exc if exc is not None else errors.BackendUnavailableError("ended"))
        error = failure.error
        if isinstance(error, errors.AuthError) and "token" in str(error).lower() and self._client.settings.user:
            self._client.refresh_token(endpoint)
        elif not failure.retryable:
            raise error
        self._failures += 1
        self._asked = False  # a progress request on the stream that failed is answered by none
        if self._failures > self._client.settings.policy.attempts:
            raise errors.BackendUnavailableError(
                f"etcd: the watch could not be re-established on any endpoint ({error})"
            )
        log.info("etcd: watch on %s failed (%s); resuming from revision %d", endpoint, error, self._revision)
        time.sleep(min(0.05 * 2 ** (self._failures // max(1, len(self._client.settings.endpoints))), 1.0))
        self._session = self._open(self._revision)
        self._last_heard = time.monotonic()

    def poll(self, timeout: float | None) -> list[KeyChange]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return []
            wait = remaining
            if self._progress_interval > 0:
                wait = self._progress_interval if wait is None else min(wait, self._progress_interval)
            again = self._pursue() if self._wanted or self._wide else None
            if self._mark_due:
                self._mark()
            if again is not None:
                wait = again if wait is None else min(wait, again)
            session = self._session
            try:
                item = self._early if self._early is not None else session.responses.get(timeout=wait)
                self._early = None
            except queue.Empty:
                if self._progress_interval > 0 and time.monotonic() - self._last_heard >= self._progress_interval:
                    self._session.request_progress()
                    self._last_heard = time.monotonic()
                continue
            if self._closed:
                return []
            if isinstance(item, Wake):
                continue
            if item is None or isinstance(item, BaseException):
                self._reopen(item)
                continue
            before = self._revision
            store = self._read_store(item)  # before the lock: reach() returns at once, never behind a read
            with self._mutex:
                try:
                    changes = self._handle(item, store)
                except BaseException:
                    self._halted = True  # the caller re-lists or re-opens: nothing after this reaches the sink
                    raise
                finally:
                    session.pending -= 1
                sink = self._sink
                if sink is not None:
                    if item.events:
                        sink(changes, self._revision)
                    return []
            if changes or self._revision > before:
                return changes  # a revision moved on without a change (progress, other keys): a wait may be over
        return []

    def _read_store(self, response: wire.WatchResponse) -> wire.Header | errors.NbdbError | None:
        """The store's header (or the read's failure) when ``response`` confirms the watcher below its resume
        point or term (see :meth:`_check_store`), read outside the stream's lock; None when it does not."""
        header = response.header
        if not response.created or response.canceled or response.compact_revision > 0:
            return None
        if header.revision >= self._revision and header.raft_term >= self._term:
            return None
        try:
            return self._header_now()
        except errors.NbdbError as exc:
            return exc

    def _handle(
        self, response: wire.WatchResponse, store: wire.Header | errors.NbdbError | None = None
    ) -> list[KeyChange]:
        self._failures = 0
        self._last_heard = time.monotonic()
        if response.compact_revision > 0:
            raise errors.HistoryGoneError(
                f"etcd compacted its history up to revision {response.compact_revision}; "
                f"cannot resume after revision {self._revision}"
            )
        if response.canceled:
            reason = response.cancel_reason or "the server cancelled the watch"
            if "permission denied" in reason.lower() or "auth token" in reason.lower():
                if self._client.settings.user is not None and not self._reauthenticated:
                    # An expired token cancels a new watcher ("invalid auth token", or
                    # "permission denied" on some versions): renew it once before believing it.
                    self._reauthenticated = True
                    endpoint = self._session.endpoint
                    self._session.close()
                    self._client.refresh_token(endpoint)
                    self._session = self._open(self._revision)
                    return []
                raise errors.AuthError(f"etcd refused the watch: {reason}")
            raise errors.BackendUnavailableError(f"etcd cancelled the watch: {reason}")
        header = response.header
        if response.created:
            self._reauthenticated = False
            if header.revision < self._revision or header.raft_term < self._term:
                self._check_store(header, store)
            self._term = max(self._term, header.raft_term)
            return []
        if not response.events:
            # A progress notification: every change up to this revision was sent.
            self._revision = max(self._revision, response.header.revision)
            if self._asked:
                self._asked = False
                self._next_ask = time.monotonic() + _REASK  # below the wait's revision: a member behind
            return []
        out = self._changes(response)
        # A response holds whole revisions, so its last event's revision is a safe resume point.
        self._revision = max(self._revision, response.events[-1].kv.mod_revision)
        self._term = max(self._term, header.raft_term)
        return out

    def _check_store(self, member: wire.Header, store: wire.Header | errors.NbdbError | None = None) -> None:
        """HistoryGoneError if the store is not the one this watch followed (it lost data).

        A watch reopened after a member lost its disk (or a restore from an older snapshot) was served
        from a revision the new store had not reached: etcd waits for it, then delivers what comes after,
        and the first commits of the new history were lost without a word (the rule a watch opened ahead
        of the store keeps: HistoryGoneError). The member that confirmed the watcher said it stands below
        (``member.revision``). A watch reopened only once the new store had passed the resume point (a
        watch nobody polled meanwhile) sees no such revision, but the new cluster's raft term starts low,
        and a cluster never lowers its own: a term below the highest this stream saw tells it. A lagging
        member may say either (a follower behind, a term it has not heard of yet), so a linearizable read
        decides: the member that serves it has heard from the current leader. A read that fails decides
        nothing, and going on would skip the new history's first commits if the store did go back:
        BackendUnavailableError, so the consumer opens the watch again and this check runs again.

        ``store`` is that read when :meth:`poll` made it before taking the lock (:meth:`_read_store`).
        """
        try:
            if isinstance(store, errors.NbdbError):
                raise store
            now = store if store is not None else self._header_now()
        except errors.NbdbError as exc:
            raise errors.BackendUnavailableError(
                f"etcd: the watch was confirmed at revision {member.revision}, term {member.raft_term}, below its "
                f"resume point {self._revision} or term {self._term}, and the read that tells whether the store "
                f"lost data failed ({exc}); opening it again"
            ) from exc
        if now.revision < self._revision:
            raise errors.HistoryGoneError(
                f"etcd is at revision {now.revision} (the member serving the watch at {member.revision}), below "
                f"this watch's {self._revision}: the store lost data (a member restarted without its disk, a "
                "restore); list again"
            )
        if now.raft_term < self._term:
            raise errors.HistoryGoneError(
                f"etcd's raft term is {now.raft_term}, below the {self._term} this watch saw (a cluster never "
                "lowers it): another store, one that lost data (a member restarted without its disk, a restore); "
                "list again"
            )

    def _changes(self, response: wire.WatchResponse) -> list[KeyChange]:
        """The key changes of a response's events (under the watched prefixes)."""
        out: list[KeyChange] = []
        for event in response.events:
            kv = event.kv
            key = kv.key.decode(errors="replace")
            if not key.startswith(self._prefixes):
                continue
            prev = event.prev
            if event.deleted:
                if prev is None:
                    # The old value is already compacted away: without it the delete
                    # cannot be reported, so make the consumer re-list instead.
                    raise errors.HistoryGoneError(f"etcd no longer has the value {key!r} had before its deletion")
                out.append(KeyChange(key, None, 0, prev.value, prev.version, kv.mod_revision))
            else:
                out.append(
                    KeyChange(
                        key,
                        kv.value,
                        kv.version,
                        None if prev is None else prev.value,
                        0 if prev is None else prev.version,
                        kv.mod_revision,
                    )
                )
        return out


def _plain(response: wire.WatchResponse) -> bool:
    """A response of events only, each of which can be reported (a delete with its old value)."""
    return (
        bool(response.events)
        and not response.created
        and not response.canceled
        and response.compact_revision <= 0
        and all(event.prev is not None for event in response.events if event.deleted)
    )
