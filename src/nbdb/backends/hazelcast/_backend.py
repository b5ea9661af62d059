"""The Hazelcast backend: the change-log family's primitives on IMaps and two-phase transactions."""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from functools import partial
from typing import Any, ClassVar, NamedTuple, TypeVar

import hazelcast.errors as hzerrors
from hazelcast.config import IndexType
from hazelcast.future import ImmediateFuture, combine_futures
from hazelcast.lifecycle import LifecycleState
from hazelcast.predicate import and_, between, less_or_equal, or_, paging, regex

from nbdb import errors
from nbdb.backends.hazelcast._client import ERRORS, HazelcastConfig, connect, parse_url
from nbdb.backends.hazelcast._member import APPLIED, BUSY, FALLBACK, PROTOCOL, CommitTask, ProbeTask
from nbdb.backends.hazelcast._reader import HazelcastLogReader
from nbdb.backends.hazelcast._records import (
    FORMAT,
    FORMAT_KEY,
    HEAD,
    TOKEN_BYTES,
    TRIM,
    Redo,
    decode_head,
    decode_kv,
    decode_redo,
    encode_entry,
    encode_head,
    encode_kv,
    entry_token,
    listed_rows,
)
from nbdb.backends.hazelcast._sendgate import SendGate
from nbdb.capabilities import Atomicity, Capabilities, Durability, Expiry
from nbdb.families.kv import (
    CommitToken,
    Condition,
    Exists,
    KeyChange,
    KeyCommit,
    KeyValue,
    LeaseHeld,
    PrefixUnchangedSince,
    ValueIs,
    VersionIs,
    WrittenAt,
)
from nbdb.families.kvgroup import CommitGroup, Outcome, SnapshotGroup
from nbdb.families.kvplan import outside_tables, wildcard_split
from nbdb.families.kvregistry import Registrations, gaps, parse_marks, topic_of, topics_of
from nbdb.families.kvtypes import APPLIED as TOKEN_APPLIED
from nbdb.families.kvtypes import applied_at
from nbdb.families.pubsub import ChangeLogBackend, ChangeLogReader, refuse_stored_format
from nbdb.families.rules import counter_value
from nbdb.retry import Outage

__all__ = ["HazelcastBackend"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_COMMIT_LOCK = "commit"
_ROLL_FORWARD_ROUNDS = 16
"""How many decided-but-unapplied commits of others one commit applies before giving up (one per lapsed client)."""
_TRIM_EVERY = 64
_TASK_LANDED_SCAN = 64
"""At most this many log entries past the floor are read to tell whether a member's task sent before landed."""
_TOPIC_RANGES = 256
"""Registered topics a one-table scan names one by one (see :meth:`HazelcastBackend.scan_spans`); past that,
``o/`` whole and the regular expression, per object of the store, as before (issue 13)."""
_REGISTRY_AGE = 1.0
"""Seconds a client scans with the registry it read last before it waits for a fresh read (see
:meth:`HazelcastBackend._registry_future`); a stale one costs a scan, never its exactness."""
_KEYS_PER_TOPIC = 32
"""The keys of ``kv`` per registered topic below which a one-table scan reads ``o/`` whole all the same: a
topic's range and gap cost the member and client ≈ 30 µs, the expression ≈ 2.5 to 7 µs a key (an object is
two or three keys of ``kv``: its bytes, its index key, its references), so on few objects a topic the
ranges cost more than they save (200 topics of 5 objects: list 6 -> 40 ms, docs/benchmarks.md)."""
_REGISTERING = 4 * _TOPIC_RANGES
"""Registry puts a client has in flight at most (see :meth:`HazelcastBackend._register`): fire and forget, so
bounded (and one per topic), lest a cluster that stopped answering collect one per scan or commit until
``timeout``. Past it a topic is left to a later commit or scan; a registry past :data:`_TOPIC_RANGES` is
not read whole anyway."""
_MAX_BOUNCES = 20
"""How often a burst waits for one more reply to leave from the reactor thread (see ``then_send``)."""
_LOCK_POLL_FIRST = 0.001
_LOCK_POLL_MAX = 0.02
"""Pauses (s) between a key lock's ``tryLock`` attempts while another holds it: from the first, doubling to the last."""
_LOCK_QUEUE_FIRST = 0.02
_LOCK_QUEUE_MAX = 0.1
"""Past the pauses, how long (s) each ``tryLock`` waits in the member's queue of waiters: from the first, doubling to
the last (each holds the send gate that long at most; see ``_key_lock``); not in the last 4 waits of ``timeout``."""
_REPROBE_FIRST = 1.0
_REPROBE_MAX = 60.0
"""Seconds after member commits were turned off (the lock's owner lacked the jar or spoke another protocol)
before a commit asks the owner again, without waiting for the answer: from the first, doubling to the last
while it still cannot, back to the first when the cluster's membership changes (a rolling upgrade)."""
_WARNED: set[str] = set()
"""Clusters whose lack of nbdb's member-side code was logged already (once a process each)."""
_LEASE_REREADS = 2
"""How often a list whose commit lock lapsed while it read, a commit decided meanwhile, is read again (see
:meth:`HazelcastBackend._range`) before it is refused (BackendUnavailableError) rather than returned torn."""
_EXPIRY_GRAIN = 1.0
"""Hazelcast keeps entry times in whole seconds, so an entry may expire up to a second before its
TTL; leases ask for this much more, so that a lease never lapses before the TTL nbdb promised."""


class HazelcastBackend(ChangeLogBackend):
    """Key-value backend over an open-source Hazelcast 5 cluster (see the package docstring)."""

    topic_wildcard: ClassVar[bool] = True  # a one-table scan's query reads that table's keys on the member (_queries)

    whole_point_reads: ClassVar[bool] = False  # a commit's keys land one by one; a list reads them locked
    capabilities: ClassVar[Capabilities] = Capabilities(
        transactions=Atomicity.ATOMIC,
        linearizable_reads=True,
        server_side_topic_filter=False,
        durability=Durability.VOLATILE,
        history="the last 10,000 commits (?history=N)",
        cross_process=True,
        unique=True,
        fencing=True,
        expiry=Expiry.REAPER,
        cas_across_recreate=True,
        notes=(
            "An in-memory grid: with backup-count >= 1 (the default) every acknowledged write survives the "
            "loss of one member, but a restart of the whole cluster loses everything (Persistence is Enterprise "
            "only); watchers then get HistoryGoneError and caches re-list. Commits are serialized by one commit "
            "lock per namespace. list() filters topics on the server (key-range queries on a sorted index); "
            "watch() reads the namespace's one change log and filters topics in the client. Locks and ids live "
            "in IMaps (the CP Subsystem is Enterprise only since 5.5): they survive a member's loss, not a split "
            "brain. TLS and client credentials are Enterprise only: the cluster name is the one shared secret."
        ),
    )

    commit_tokens = True

    def __init__(self, config: HazelcastConfig, client: Any) -> None:
        super().__init__("", config.retry)
        self.config = config
        self.group_commit = config.group_commit
        self._client = client
        self._object_prefix = self.layout.objects
        root = f"nbdb.{config.namespace}." if config.namespace else "nbdb."
        self._kv_async = client.get_map(root + "kv")
        self._kv = self._kv_async.blocking()
        self.log_async = client.get_map(root + "log")
        """The change log's map, asynchronous (the log reader, :mod:`._reader`, sends its reads on it)."""
        self._log = self.log_async.blocking()
        self.meta_async = client.get_map(root + "meta")
        """The head, trim mark and commit lock's map, asynchronous."""
        self._meta = self.meta_async.blocking()
        self._lease_async = client.get_map(root + "lease")
        self._lease = self._lease_async.blocking()
        self._ids_async = client.get_map(root + "ids")
        self._ids = self._ids_async.blocking()
        self._kv_name, self._log_name, self._meta_name = self._kv.name, self._log.name, self._meta.name
        self._lease_name = self._lease.name
        self._closed = False
        self._log_cond = threading.Condition()
        self._log_latest = 0
        self._log_listener: str | None = None
        self._log_registering: Any = None
        """The ``head`` listener's registration in flight (its future), while unanswered (:meth:`open_log_reader`)."""
        self._log_listening = threading.Lock()
        """Guards ``_log_listener``, ``_log_registering``; held over no wait (not ``_log_cond``: _on_head takes it)."""
        self._local_commit = threading.Lock()
        """Held around every request for the commit lock, so that one thread of this backend asks at a time."""
        self._given_up_task: Any = None
        """The reply of this client's last commit task given up on at ``timeout`` (see _task_given_up_ended)."""
        self._lock_requests = 0
        self._reactor_thread = -1
        """The client's reactor thread, once a reply callback showed it (see ``then_send``)."""
        self._lock_requests_guard = threading.Lock()
        self.commit_lock_requests_peak = 0
        """The most commit-lock requests this backend had outstanding at once (1 while threads take turns)."""
        self._executor = client.get_executor("nbdb.commit")
        self.gate = SendGate()
        """Caller threads' requests, one wake-up of the client's reactor at a time (see :class:`SendGate`)."""
        self._outage = Outage(config.timeout)
        """Since when the client has been without a connection to the cluster: see :meth:`_admit`."""
        self._probing = threading.Lock()
        """Held while a probe of the connection is in flight (see :meth:`_probe`)."""
        client.lifecycle_service.add_listener(self._on_state)
        self.member_commit = False
        """Whether commits run as nbdb's task in the members (one round trip), as the last probe found (at connect, on a
        refused task, or a re-probe: see :meth:`_reprobe_member_code`)."""
        self.member_commits = 0
        """Commits (or groups) the member-side task decided and applied."""
        self._reprobe_at: float | None = None
        """When member commits, off, may be asked for again (monotonic time; see :meth:`_reprobe_member_code`);
        None while on, while a re-probe is in flight, or with ``member_commit=0``."""
        self._reprobe_delay = _REPROBE_FIRST
        self._reprobes_left = max(config.member_probes - 1, 0)
        """Re-probes (:meth:`_reprobe_member_code`) still to be sent, at most, in the window the connect or the last
        membership change opened: ``member_probes`` probes in all, the connect's own probe the first of the
        connect's window (so one fewer here), the re-probe sent at once the first of a membership change's.

        A member gains the jar or another protocol only by restarting, which the membership listener sees; the
        probes after a connect or a membership change (on the back-off: 1, 3, 7, 15, 31, 63 s) cover the
        partitions' migration, while the lock's owner may change (a client that connects during it may have
        missed the change that started it: a join before its listener, or one already in its first member list).
        Each probe a stock member cannot read is a SEVERE with a stack trace in its log: probing on for the
        client's life only spammed them. Only these re-probes count: the probe that tells why a task was refused
        or handed back (:meth:`_member_code_present`) is not the window's, and uses none of it."""
        self._reprobing = threading.Lock()
        """Held while a re-probe is in flight: one at a time."""
        self.member_reprobes = 0
        """Re-probes sent (each one task, sent beside a commit, never waited for)."""
        self._members_listener = (
            client.cluster_service.add_listener(member_added=self._on_members, member_removed=self._on_members)
            if config.member_commit and config.member_probes
            else None
        )
        self.member_fallbacks = 0
        """Member-side commits handed back to the client's own protocol (a decided commit to roll forward...)."""
        self._topics: Registrations[tuple[list[str] | None, bool]] = Registrations(_REGISTERING)
        """The topics this client has put in the registry (``p/<topic>``, see :meth:`_register`: the put
        answered), those whose put is in flight (at most :data:`_REGISTERING`, one put each), the generation
        (registrations answered: a registry read sent before one is stale) and the registry read last, as
        :meth:`_send_registry` made of it. Its own lock guards it (changed by callers and by reply callbacks)."""
        self.gap_keys = 0
        """Object keys one-table scans found outside the registry's topics (checked by the member's regex)."""

    def __repr__(self) -> str:
        return f"<HazelcastBackend {self.config!r}>"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> HazelcastBackend:
        """Connect to the cluster; AuthError when the members answer but refuse the cluster name."""
        config = parse_url(url, options)
        client = connect(config)
        backend = cls(config, client)
        try:
            # Range reads of key prefixes use this index instead of scanning every entry.
            backend.call(lambda: backend._kv.add_index(attributes=["__key"], index_type=IndexType.SORTED))
            backend._check_format()
            if config.member_commit:
                backend._probe_member_code()
        except BaseException:
            backend.close()
            raise
        return backend

    def _check_format(self) -> None:
        """Mark an empty namespace with this version's stored format; refuse one written in another.

        Format 1 (before the change log decided commits) wrote no marker: a namespace
        with a ``head`` and no marker is format 1. Reading it would misread its log.
        """
        found = self.call(lambda: self._meta.get(FORMAT_KEY))
        if found is None:
            if self.call(lambda: self._meta.get(HEAD)) is not None:
                found = "1"
            else:
                found = self.call(lambda: self._meta.put_if_absent(FORMAT_KEY, FORMAT)) or FORMAT
        refuse_stored_format(
            str(found),
            FORMAT,
            where=f"hazelcast at {self.config.where}: namespace {self.config.namespace!r}",
            page="docs/backends/hazelcast.md",
        )

    def _probe_member_code(self) -> None:
        """Commit in the members if they have nbdb's code (java/hazelcast-member) in this protocol; else say so once."""
        try:
            reply = self._executor.execute_on_key_owner(_COMMIT_LOCK, ProbeTask()).result()
        except (hzerrors.HazelcastSerializationError, hzerrors.ClassCastError) as exc:
            first_line = str(exc).partition("\n")[0]
            why = f"the members lack nbdb's member-side jar ({first_line})"
        except hzerrors.HazelcastError as exc:
            raise ERRORS.translate(exc, f"at {self.config.where}") from None
        else:
            if list(reply)[:1] == [PROTOCOL]:
                self.member_commit = True
                return
            why = f"the members' nbdb jar speaks protocol {list(reply)[:1]}, this client {PROTOCOL}"
        # Off, asked again on the back-off within the connect's window (member_probes): the partitions may still
        # migrate after a membership change this client never saw, and the lock's owner change with them.
        self._member_commit_off()
        if self.config.where not in _WARNED:
            _WARNED.add(self.config.where)
            log.warning(
                "hazelcast at %s: %s; commits take six round trips each (see docs/backends/hazelcast.md, "
                "'Member-side commits')",
                self.config.where,
                why,
            )

    def call(self, call: Callable[[], T]) -> T:
        """``call()`` past :meth:`_admit`, with Hazelcast's errors translated into nbdb's.

        The gate of every request but the member-side commit task's (which passes :meth:`_admit`
        itself): each call path sends its first request from inside ``call`` (the requests that
        follow leave from replies, or right after one). A future's result waited for here is
        translated the same way; the reply to a request sent before is :meth:`_reply`'s, not held.
        """
        self._admit()
        try:
            return call()
        except hzerrors.HazelcastError as exc:
            raise ERRORS.translate(exc, f"at {self.config.where}") from None

    def _reply(self, future: Any) -> Any:
        """The reply to a request already sent (past :meth:`_admit`), Hazelcast's errors translated into nbdb's.

        Not held by an outage: the hold is for requests not yet sent, and a reply (a lock's grant, a
        commit's reads) may be in already, or be the client's to retry until ``timeout``. Held, a grant
        that came in after the client reported the connection gone was refused as never sent, while
        this client held the lock in the cluster until its lease ran out.
        """
        try:
            return future.result()
        except hzerrors.HazelcastError as exc:
            raise ERRORS.translate(exc, f"at {self.config.where}") from None

    def _ask(self, start: Callable[[], Any]) -> Any:
        """A read ``start()`` sends, through the gate, its reply waited for at most ``timeout`` (then
        BackendUnavailableError; see :meth:`SendGate.result`), Hazelcast's errors translated."""
        return self.call(lambda: self.gate.ask(start, self.config.timeout))

    def _tell(self, start: Callable[[], Any]) -> Any:
        """A write ``start()`` sends, through the gate: its reply, waited for until it comes.

        Not given up on while queued (as :meth:`_ask` does): a write given up on could still leave
        later (a lease released after its holder was told it failed and took it again). Sent, the
        client fails it at its invocation timeout; queued, it leaves when the request ahead of it does.
        """
        return self.call(lambda: self.gate.send(start).result())

    def _tell_locked(self, start: Callable[[], Any]) -> Any:
        """A write ``start()`` sends to a key another thread may hold the lock of (a lease): its reply, waited for.

        The member holds such a write until the lock is released: through :meth:`_tell` it held the gate
        that long, and the holder's own requests (a renewal's read and write, its unlock; a commit's
        reads under a lease condition) queued behind it: the renewal failed with BackendUnavailableError
        after 2 x ``timeout``. A read goes through the gate and the write leaves once, from its reply's
        callback (the reactor's thread, which wakes nothing), holding nothing: as a commit task does.
        Sent from this thread right after the gate was idle without holding it (then a marker read from
        this thread), two wake-ups in a row from one thread lost the reactor's in 4 of 4 runs of
        ``test_threads_of_ids_leases_and_revisions_keep_the_clients_reactor_wake_up``.
        """
        return self.call(
            lambda: self.gate.send(
                lambda: self.meta_async.get(TRIM), lambda marker: self.then_send(marker, lambda _: start())
            ).result()
        )

    def _admit(self, deadline: float | None = None) -> None:
        """The one check before a request is sent (by :meth:`call`, or before a commit task) or while a commit
        waits for its local turn.

        BackendUnavailableError once closed. While the client is without the cluster, the request
        is held here, not sent, until the connection is back, or until ``timeout`` after the outage
        began or the caller's ``deadline`` (None: ``timeout`` from now), whichever comes first
        (:meth:`nbdb.retry.Outage.limit`, as OVSDB's session waits); then it fails with the client's
        own refusal (ClientOfflineError: never sent), at once once the outage is ``timeout`` old.
        Without this, in a long outage each call, and each commit queued behind another, waited a
        whole ``timeout`` of its own (an update behind a create took over 40 s); and a call made
        early in an outage was handed to the client, which retried it until its invocation timeout,
        ``timeout`` after the call began, past the outage's limit.
        """
        if self._closed:
            raise errors.BackendUnavailableError("the hazelcast backend is closed")
        if self._outage.down_since is None:
            return
        self._probe()
        end = time.monotonic() + self.config.timeout if deadline is None else deadline
        if not self._outage.wait_up(end, stop=lambda: self._closed):
            if self._closed:
                raise errors.BackendUnavailableError("the hazelcast backend is closed")
            offline = hzerrors.ClientOfflineError()  # type: ignore[no-untyped-call]
            raise ERRORS.translate(offline, f"at {self.config.where}")

    def _probe(self) -> None:
        """Send a harmless read (one at a time) while the client is taken for offline; its reply marks it up.

        The client may report DISCONNECTED after a newer CONNECTED (:class:`nbdb.retry.Outage`): without
        this, every call was then held ``timeout`` and refused, and refused at once afterwards, for as long
        as the client stayed connected. Sent while really offline, the client retries it until its
        ``timeout`` (then the next call sends another); a DISCONNECTED reported after it was sent wins.
        """
        if self._closed or not self._probing.acquire(blocking=False):
            return
        downs = self._outage.downs

        def answered(reply: Any) -> None:
            self._probing.release()
            if reply.exception() is None:
                self._outage.mark_up(downs)

        try:
            self.gate.send(lambda: self.meta_async.get(TRIM)).add_done_callback(answered)
        except Exception:  # refused at once (the client shutting down): no probe in flight, and the next may go
            self._probing.release()

    def _on_state(self, state: str) -> None:
        """Follow the client's connection to the cluster (a lifecycle listener)."""
        if state == LifecycleState.DISCONNECTED:
            self._outage.mark_down()
            self._probe()  # a late DISCONNECTED (the client connected) ends one reply later, before any call waits
        elif state == LifecycleState.CONNECTED:
            self._outage.mark_up()

    # ---------------------------------------------------------------- reads

    def get_key(self, key: str) -> KeyValue | None:
        return decode_kv(
            key,
            self.call(lambda: self.gate.ask(lambda: self._kv_async.get(key), self.config.timeout)),
        )

    def whole_keys(self, keys: Sequence[str]) -> list[KeyValue | None]:
        # Under the commit lock: a commit's keys land one by one, and a claim may land before its holder's index.
        with self._commit_lock():
            return self.get_keys(keys)

    def get_keys(self, keys: Sequence[str]) -> list[KeyValue | None]:
        if len(keys) <= 1:
            return [self.get_key(k) for k in keys]
        # A getAll is a request per partition: a burst, which from a caller's thread can lose the reactor's
        # wake-up on its own (a loaded machine: the reactor preempted in its waker). So the first key is one
        # request through the gate, and the rest leave from its reply's callback (one round trip more).
        first, rest = keys[0], list(dict.fromkeys(keys[1:]))

        def others(got: Any) -> Any:
            return self._kv_async.get_all(rest).continue_with(lambda found: {**found.result(), first: got.result()})

        found = self.call(
            lambda: self.gate.result(
                self.gate.send(lambda: self._kv_async.get(first), lambda sent: self.then_send(sent, others)),
                self.config.timeout,
            )
        )
        return [decode_kv(k, found.get(k)) for k in keys]

    def range_keys(self, prefixes: Sequence[str]) -> tuple[list[KeyValue], int]:
        """Keys under ``prefixes`` at one revision (see :meth:`_range`)."""
        found, revision = self._range(prefixes)
        found, starts = self._kept(found, prefixes)
        return [kv for key, raw in found if key.startswith(starts) and (kv := decode_kv(key, raw, True))], revision

    def range_rows(self, prefixes: Sequence[str]) -> tuple[Sequence[Sequence[Any]], int]:
        # A scan's (key, value, version, mod revision) rows, each stored value read inline (listed_rows: what
        # decode_kv gives).
        found, revision = self._range(prefixes)
        found, starts = self._kept(found, prefixes)
        return listed_rows(found, starts), revision

    def _kept(
        self, found: list[tuple[str, Any]], prefixes: Sequence[str]
    ) -> tuple[list[tuple[str, Any]], tuple[str, ...]]:
        """``found`` and the plain prefixes a key must start with: a wildcard's (``o/*/<table>/``) keys checked here.

        The member already kept only the wildcards' tables (see :meth:`_queries`); this is the
        client's check of the same rule, as the plain prefixes' is.
        """
        objects = self._object_prefix
        tables = tuple(t for p in prefixes if (t := wildcard_split(p, objects)) is not None)
        if not tables:
            return found, tuple(prefixes)
        plain = tuple(p for p in prefixes if wildcard_split(p, objects) is None)
        kept = [
            item
            for item in found
            if item[0].startswith(plain)
            or (item[0].startswith(objects) and not outside_tables(item[0], objects, tables))
        ]
        return kept, (*plain, objects)

    def scan_spans(self, prefix: str, topics: Sequence[str] | None) -> list[tuple[list[tuple[str, str]], str | None]]:
        """The queries of the keys under ``prefix``: each its key spans (inclusive) and a regular expression or None.

        The member's sorted index of ``__key`` hands each query the keys in its spans; with a
        regular expression, the member matches it against each of them. A plain prefix is one
        span. A wildcard ``o/*/<table>/`` (kvplan.ANY_TOPIC) is, for each topic of the registry
        (``topics``, read before the commit lock, see :meth:`_send_registry`), the span
        ``o/<topic>/<table>/``: that table's keys only. The rest of ``o/`` (the gaps between
        those topics' whole spans) goes with the regular expression of ``o/<any topic>/<table>/...``:
        a topic no registry names (another writer's, data written before the registry, a registry
        key deleted by hand) is still read, in the same query under the commit lock, so the list
        stays exact whatever the registry says; with every topic registered the gaps hold no
        key, and the member reads no key of another table (issue 13: before, it matched the
        regular expression against every object key of the store). ``topics`` None, or more
        than :data:`_TOPIC_RANGES`: ``o/`` whole with the regular expression, as before.
        """
        table = wildcard_split(prefix, self._object_prefix)
        if table is None:
            return [([(prefix, prefix + "\uffff")], None)]
        objects = self._object_prefix
        match = f"{_java_literal(objects)}[^/]*/{_java_literal(table)}.*"
        if topics is None or len(topics) > _TOPIC_RANGES:
            return [([(objects, objects + "\uffff")], match)]
        # Java compares strings by UTF-16 unit: the topics' spans in that order, and the gaps between them.
        starts, stretches = gaps(objects, topics, lambda k: k.encode("utf-16-be"))
        queries: list[tuple[list[tuple[str, str]], str | None]] = []
        if starts:
            queries.append(([(f"{s}{table}", f"{s}{table}\uffff") for s in starts], None))
        # Inclusive bounds overlapping the topics' whole spans at their ends: together they cover o/ to o/U+FFFF.
        spans = [
            (objects if after is None else f"{after}\uffff", objects + "\uffff" if before is None else before)
            for after, before in stretches
        ]
        queries.append((spans, match))
        return queries

    def _queries(self, prefix: str, topics: Sequence[str] | None) -> list[tuple[Any, bool]]:
        """:meth:`scan_spans` as Hazelcast predicates, each with whether it reads outside the registry's topics."""
        out: list[tuple[Any, bool]] = []
        for spans, match in self.scan_spans(prefix, topics):
            ranges = [between("__key", low, high) for low, high in spans]
            query = ranges[0] if len(ranges) == 1 else or_(*ranges)
            out.append((query, False) if match is None else (and_(query, regex("__key", match)), True))
        return out

    def _range(self, prefixes: Sequence[str]) -> tuple[list[tuple[str, Any]], int]:
        """The stored items under ``prefixes`` at one revision, in key order (filtered by prefix by the caller).

        Objects are read under the commit lock, which makes the list exact (see the package
        docstring). A read that outlasts the lock's lease (``commit_lease``: a table of a million
        objects) is told by its failed unlock (one that succeeds proves the lock held throughout,
        so the common case costs nothing more); then, if a commit was decided since its ``head``
        (:meth:`_unchanged_since`, two reads), it is read again under a lease twice as long as it
        took, at most :data:`_LEASE_REREADS` times, then refused with BackendUnavailableError:
        never returned torn. Other keys — the reverse references a delete checks — are read without
        it, at ``head`` read first: every commit up to ``head`` is wholly applied (``head``
        moves only once its commit's writes are in). A key that a later commit already
        changed carries a later revision, so the delete's ``PrefixUnchangedSince`` condition
        fails and it is planned again. Writers never wait for a delete's reads.
        """
        objects = self._object_prefix
        if any(p.startswith(objects) for p in prefixes):
            lease = self.config.commit_lease
            for _read in range(_LEASE_REREADS + 1):
                began = time.monotonic()
                head_raw, found, revision, token, held = self._range_locked(prefixes, lease)
                if not held.lost or self._unchanged_since(head_raw, revision):
                    break
                # Lost meanwhile, and a commit was decided since: read again, under a lease twice as long as this
                # read took (the same table, read again, takes about as long).
                lease = max(lease, 2 * (time.monotonic() - began))
                log.info(
                    "hazelcast: a list outlasted the commit lock's lease and a commit was decided meanwhile: "
                    "read again under a lease of %.1fs",
                    lease,
                )
            else:
                raise errors.BackendUnavailableError(
                    f"hazelcast at {self.config.where}: a list outlasted the commit lock's lease "
                    f"({self.config.commit_lease}s, then up to {lease:.1f}s) {_LEASE_REREADS + 1} times, and each "
                    "time another client committed meanwhile: refused rather than a torn snapshot (raise "
                    "commit_lease above the list's time)"
                )
            self.remember_token(revision, token)
        else:
            # head first (every commit up to it is applied), then the keys, from its reply callback.
            def read() -> tuple[Any, dict[str, Any]]:
                return self.call(  # type: ignore[no-any-return]
                    lambda: self.gate.ask(
                        lambda: self.meta_async.get(HEAD),
                        self.config.timeout,
                        lambda pending: self.then_send(
                            pending,
                            lambda head: self._send_range(prefixes, None).continue_with(
                                lambda got: (head.result(), got.result()[1])
                            ),
                        ),
                    )
                )

            head_raw, found = read()
            try:
                if self.head_deleted(head_raw):
                    raise errors.CorruptRecordError("hazelcast: head is missing while the change log holds entries")
                revision = decode_head(head_raw)[0]
            except errors.CorruptRecordError:
                self.put_back_head()
                head_raw, found = read()
                revision = decode_head(head_raw)[0]
        return sorted(found.items()), revision

    def _range_locked(self, prefixes: Sequence[str], lease: float) -> tuple[Any, dict[str, Any], int, str, _Held]:
        """``head``, the stored items under ``prefixes``, ``head``'s revision and token, all read under the commit
        lock held with ``lease`` (see :meth:`_range`), and the lock (``lost``: whether its unlock failed)."""
        objects = self._object_prefix
        # The registry's topics are read once the lock is granted, from the grant's callback, and the
        # topics the scan finds in gaps are registered from the unlock's reply callback (the reactor's
        # thread: a send from the caller's outside the local turn could lose the reactor's wake-up, see
        # _commit_lock; and after the list's last reply: it never waits for them).
        # The list's exactness does not depend on them (see _queries), only what the member reads.
        wildcard = any(wildcard_split(p, objects) for p in prefixes)
        gaps: list[str] = []  # topics found in gaps, reserved to register (see _adopt)

        def send() -> Any:
            if not wildcard:
                return self._send_range(prefixes, None)
            registry, generation = self._registry_future()
            # registry: a future of (the registry's topics, whether a scan names them one by one).

            def adopt(done: Any) -> tuple[Any, dict[str, Any], list[str]]:
                got: tuple[Any, dict[str, Any], list[str]] = done.result()
                if got[2]:
                    gaps.extend(self._adopt(got[2], generation))  # before the list has its result
                return got

            return registry.continue_with(lambda got: self._send_range(prefixes, got.result())).continue_with(adopt)

        def resend() -> Any:
            # After a repair, from this thread: one read through the gate, the burst from its reply.
            return self.gate.send(
                lambda: self.meta_async.get(TRIM), lambda pending: self.then_send(pending, lambda _: send())
            )

        def register() -> None:
            self._send_registrations(gaps)

        with self._commit_lock(send, after=register, lease=lease) as lock:
            head_raw, found, _ = self._reply(lock.follow)
            for _round in range(_ROLL_FORWARD_ROUNDS):
                if head_raw is None and self._repair_head(None):
                    head_raw, found, _ = self.call(lambda: resend().result())
                    continue
                try:
                    revision, token = decode_head(head_raw)
                    break
                except errors.CorruptRecordError:
                    # Another writer damaged ``head``: put back here, under the lock, as a commit would.
                    if not self._repair_head(head_raw):
                        raise
                head_raw, found, _ = self.call(lambda: resend().result())
            else:
                revision, token = decode_head(head_raw)
        return head_raw, found, revision, token, lock

    def _unchanged_since(self, head_raw: Any, revision: int) -> bool:
        """Whether no commit was decided since ``head`` read ``head_raw`` (at ``revision``): ``head`` is the same
        and the change log holds no entry ``revision + 1``.

        No lock needed: every commit (the client's protocol and the member's task) decides by putting that
        entry before it writes any key, and moves ``head`` after. So a write a read saw of a commit after
        ``revision`` followed its entry, which this check, sent once that read's reply was in, finds; a
        trim takes an entry only ``history`` commits after it, and ``head`` has moved by then.
        """
        now, decided = self.call(
            lambda: self.gate.ask(
                lambda: self.meta_async.get(HEAD),
                self.config.timeout,
                lambda pending: self.then_send(
                    pending,
                    lambda head: self.log_async.contains_key(revision + 1).continue_with(
                        lambda found: (head.result(), found.result())
                    ),
                ),
            )
        )
        return bool(now == head_raw and not decided)

    def _send_range(self, prefixes: Sequence[str], registry: tuple[list[str] | None, bool] | None) -> Any:
        """Read ``head`` and every key under ``prefixes``, all at once (``registry``: see :meth:`_send_registry`).

        A future of ``(head, {key: value}, [object keys read outside the registry's topics])``.
        """
        # Every key under a prefix sorts between it and prefix + U+FFFF (Java compares UTF-16 units);
        # the result is filtered by prefix all the same.
        topics, ranged = registry if registry is not None else (None, False)
        queries = [query for p in prefixes for query in self._queries(p, topics if ranged else None)]
        pending = [self.meta_async.get(HEAD), *(self._kv_async.entry_set(query) for query, _ in queries)]
        objects = self._object_prefix

        def assemble(done: Any) -> tuple[Any, dict[str, Any], list[str]]:
            head, *ranges = done.result()
            found: dict[str, Any] = {}
            outside: list[str] = []
            for entries, (_, gap) in zip(ranges, queries, strict=True):
                found.update(entries)
                if gap and ranged:
                    outside += (key for key, _ in entries)
                elif gap and topics is not None:  # o/ whole: the keys whose topic the registry does not name
                    known = set(topics)
                    outside += (key for key, _ in entries if topic_of(objects, key) not in known)
            return head, found, outside

        return combine_futures(pending).continue_with(assemble)

    def _registry_future(self) -> tuple[Any, int]:
        """The registry a scan uses: read at most :data:`_REGISTRY_AGE` ago, else a read sent now (a future),
        and the registry generation it belongs to (see :meth:`_adopt`).

        A scan waits for the read only when this client has none yet (or a registration of its own was
        answered since: :meth:`_register`); past the age it uses the last one and sends a read for the
        scans after it. Exact either way (:meth:`scan_spans`): a topic registered since is in a gap,
        matched by the expression, for at most that long. A reply kept only if no registration was
        answered since its read was sent, nor a later read kept: a stale one never replaces a newer state.
        """
        now = time.monotonic()
        held, young, generation = self._topics.held(now, _REGISTRY_AGE)
        if held is not None and young:
            return ImmediateFuture(held[1]), generation  # type: ignore[no-untyped-call]

        def keep(read: Any) -> None:
            if read.exception() is None:
                self._topics.keep(now, read.result(), generation)

        fresh = self._send_registry()
        fresh.add_done_callback(keep)
        return (fresh if held is None else ImmediateFuture(held[1])), generation  # type: ignore[no-untyped-call]

    def _send_registry(self) -> Any:
        """Read the registry of topics (``p/<topic>``, see :meth:`_register`) and the size of ``kv``.

        A future of ``(topics, ranged)``: ``ranged`` if a one-table scan names the topics one by
        one (:meth:`scan_spans`): at most :data:`_TOPIC_RANGES` of them, and ``kv`` holds at least
        :data:`_KEYS_PER_TOPIC` keys per topic. Either way the scan is exact. A name with a ``/``
        (another writer's key) is no topic: its range would overlap a topic's. ``topics`` None:
        more registry keys than :data:`_TOPIC_RANGES`, of which the member sends that many and one
        (a page): the registry only grows, and a read of all of it, each second a client scans, cost
        10,000 topics 67 ms (42 of the client's CPU) and 50,000 topics 504 ms, for a scan that
        reads ``o/`` whole all the same.
        """
        marks = self.layout.topic_marks
        page = paging(between("__key", marks, marks + "\uffff"), _TOPIC_RANGES + 1)
        # Sent from a reply callback (see _range): not through call(), whose outage hold would block the reactor.
        pending = combine_futures([self._kv_async.key_set(page), self._kv_async.size()])

        def topics(done: Any) -> tuple[list[str] | None, bool]:
            keys, size = done.result()
            if len(keys) > _TOPIC_RANGES:
                return None, False
            names, _ = parse_marks(marks, keys)
            return names, size >= _KEYS_PER_TOPIC * len(names)

        return pending.continue_with(topics)

    def _new_topics(self, commits: Sequence[KeyCommit]) -> set[str]:
        """The topics of the object keys ``commits`` put that this client has not registered yet."""
        objects, known = self._object_prefix, self._topics.registered
        return {
            part
            for commit in commits
            for key in commit.puts
            if key.startswith(objects) and (part := topic_of(objects, key)) not in known
        }

    def _register_from_reply(self, future: Any, topics: set[str]) -> None:
        """Register ``topics`` (:meth:`_register`) from ``future``'s reply callback: the reactor's thread
        (through :meth:`then_send`, which bounces once more if the reply was in before)."""
        if topics:
            self.then_send(future, lambda _: self._register(topics))

    def _register(self, topics: Iterable[str]) -> None:
        """Put ``p/<topic>`` for each of ``topics`` (if absent): the registry one-table scans read (:meth:`_queries`).

        Fire and forget, outside the commit protocol: neither a commit nor a list waits for it (a list
        that had its result waited up to ``timeout`` when the cluster dropped then). A registry key
        makes a scan cheaper, never more exact, so a lost one costs a scan the regular expression over
        that topic's keys until a scan finds them and registers it (:meth:`_adopt`); its failure is
        logged at debug. Bounded: one put in flight per topic, at most :data:`_REGISTERING` at once
        (the rest are left to a later commit or scan). An answered put makes the next scan read the
        registry again (a read sent before it is dropped, see :meth:`_registry_future`).
        """
        self._send_registrations(self._reserve(topics))

    def _reserve(self, topics: Iterable[str]) -> list[str]:
        """Those of ``topics`` neither registered nor in flight, now in flight (room permitting): to send."""
        if self._closed or self._outage.down_since is not None:
            return []
        return self._topics.reserve(topics)

    def _send_registrations(self, new: list[str]) -> None:
        """Send the registry puts of ``new``, topics :meth:`_reserve` handed out (see :meth:`_register`)."""
        if not new:
            return

        def done(reply: Any, topic: str) -> None:
            failed = reply.exception()
            self._topics.settled([topic], registered=failed is None)
            if failed is not None and not self._closed:
                log.debug("hazelcast: could not register topic %r (a later commit or scan will): %s", topic, failed)

        try:
            pending = [self._kv_async.put_if_absent(self.layout.topic_mark(t), encode_kv(1, 0, b"")) for t in new]
        except Exception as exc:  # refused at once (the client shutting down): registered by a later commit or scan
            self._topics.settled(new, registered=False)
            log.debug("hazelcast: could not register topics %s: %s", new, exc)
            return
        for topic, reply in zip(new, pending, strict=True):
            reply.add_done_callback(partial(done, topic=topic))

    def _adopt(self, keys: Sequence[str], generation: int) -> list[str]:
        """The topics of ``keys``, objects a scan found outside the registry (another writer's?), to register:
        reserved (:meth:`_reserve`) for :meth:`_send_registrations`, which the caller sends once the list has
        its last reply.

        ``generation``: the registry generation of the scan's registry read (:meth:`_registry_future`).
        A topic this client registered is in a gap of a read sent before that registration was answered
        (nothing to do), or its registry key was deleted by hand since (the read is of the current
        generation: put it again). Logged once per registration sent, not per scan that finds it.
        """
        self.gap_keys += len(keys)
        new = self._topics.adopt(topics_of(self._object_prefix, keys), generation)
        if new:
            log.info("hazelcast: topics %s hold objects outside the registry (another writer's?): registering", new)
        return self._reserve(new)

    def revision_now(self) -> int:
        try:
            head_raw = self._ask(lambda: self.meta_async.get(HEAD))
            if self.head_deleted(head_raw):
                raise errors.CorruptRecordError("hazelcast: head is missing while the change log holds entries")
            revision, token = decode_head(head_raw)
        except errors.CorruptRecordError:
            self.put_back_head()
            revision, token = self._read_head()
        self.remember_token(revision, token)
        return revision

    def put_back_head(self) -> None:
        """Put back a ``head`` another writer damaged, as the next commit would: under the commit lock.

        For readers (lists, watches, caches, ``current_revision``) that find ``head`` damaged: they
        raised ``CorruptRecordError`` until some writer's commit put it back, so a reader depended on
        a later writer. The repair is the commit's own (:meth:`_repair_head`: roll the newest log
        entry forward, whose compare-and-sets change nothing that is applied already), under the same
        lock, and only when ``head`` is still damaged once the lock is held. ``CorruptRecordError``
        if the log holds nothing to put it back from (as for a commit).
        """
        with self._commit_lock():
            for _round in range(_ROLL_FORWARD_ROUNDS):
                head_raw = self._ask(lambda: self.meta_async.get(HEAD))
                if head_raw is None:
                    if not self._repair_head(None):
                        return  # a new namespace: no head and nothing in the log
                    continue
                try:
                    decode_head(head_raw)
                    return
                except errors.CorruptRecordError:
                    if not self._repair_head(head_raw):
                        raise
            self._read_head()

    def head_deleted(self, head_raw: Any) -> bool:
        """Whether ``head`` is missing while the log holds entries: another writer deleted it (a reader's check).

        Read as revision 0, a watch from now started at 0 and commits caught up entry by entry.
        Only a namespace without ``head`` pays the extra request (a new one, or a first commit in
        flight, which :meth:`put_back_head` waits for under the commit lock).
        """
        return head_raw is None and not self._ask(lambda: self.log_async.is_empty())

    def _trim_mark(self) -> int:
        raw = self._ask(lambda: self.meta_async.get(TRIM))
        return int(raw) if isinstance(raw, int) else 0

    # ---------------------------------------------------------------- commits

    @contextmanager
    def _commit_lock(
        self,
        then: Callable[[], Any] | None = None,
        after: Callable[[], None] | None = None,
        lease: float | None = None,
    ) -> Iterator[_Held]:
        """Hold the namespace's commit lock (see the package docstring); ``then`` and ``after`` as in :meth:`_key_lock`,
        ``lease`` the lock's (None: ``commit_lease``).

        Threads of this backend take turns locally before asking the cluster. The cluster
        serializes commits anyway, so this costs no throughput, and it keeps the client's
        requests coming from one thread at a time: hazelcast-python-client 5.7's reactor
        can lose its wake-up when several threads send at once, after which every request
        waits for the reactor's 10 ms poll tick (measured: creates of 8 threads went from
        about 200/s to 9/s, and the client never recovered).
        """
        if not self._local_commit.acquire(blocking=False):
            self._wait_local_turn()
        try:
            self._task_given_up_ended()
            lease = self.config.commit_lease if lease is None else lease
            with self._key_lock(self.meta_async, _COMMIT_LOCK, lease, then, after) as held:
                yield held
        finally:
            self._local_commit.release()

    def _task_given_up_ended(self) -> None:
        """Wait (up to ``timeout``) for this client's commit task given up on at ``timeout`` to end in the member.

        Called with the local turn held, before asking for the commit lock (or sending a task). The member still
        runs such a task (CommitUnknownError was raised for it) and holds the commit lock until it ends: the next
        commit's task then waited ``timeout / 2`` for the lock and came back BUSY, again on each retry, for up to
        ``timeout`` in all, while its reply would have said when the lock was free. Waited for here, the commit
        leaves the moment the task ends. Still running after ``timeout``: BackendUnavailableError (the caller's
        request, a commit or a read taken under the commit lock, was not sent; the retry policy may try again),
        saying so, rather than a BUSY that names no cause.
        """
        running = self._given_up_task
        if running is None:
            return
        if not running.done():
            ended = threading.Event()
            running.add_done_callback(lambda _: ended.set())
            if not ended.wait(self.config.timeout):
                raise errors.BackendUnavailableError(
                    f"hazelcast at {self.config.where}: a commit of this client given up on after "
                    f"{self.config.timeout}s still runs in the member and holds the commit lock; this request (a "
                    "commit, or a read taken under the commit lock) was not sent"
                )
        self._given_up_task = None

    def _wait_local_turn(self) -> None:
        """Wait up to ``timeout`` for this thread's turn among the backend's threads to ask for the commit lock.

        Both commit paths take the turn (see :meth:`_commit_lock`): ``_local_commit``, tried first
        without waiting; the caller releases it. The holder waits on the cluster: once the client
        has been without it for ``timeout``, so would we, and :meth:`_admit` refuses.
        """
        end = time.monotonic() + self.config.timeout
        while not self._local_commit.acquire(timeout=max(0.0, min(0.25, self._outage.limit(end) - time.monotonic()))):
            self._admit(end)
            if time.monotonic() >= end:
                raise errors.BackendUnavailableError(
                    f"hazelcast at {self.config.where}: another commit of this client held the commit lock "
                    f"for over {self.config.timeout}s"
                )

    @contextmanager
    def _key_lock(
        self,
        imap: Any,
        key: str,
        lease: float,
        then: Callable[[], Any] | None = None,
        after: Callable[[], None] | None = None,
    ) -> Iterator[_Held]:
        """Hold the lock of ``key`` in ``imap`` (an async proxy), waiting at most ``timeout``.

        The client never times a lock request out by itself (it waits through a frozen
        member), so the wait is bounded here; a grant that arrives after we gave up is
        released at once. ``lease`` bounds how long a stalled holder keeps others waiting.

        ``then`` sends the requests that follow the grant from the grant's callback (as
        ``held.follow``): requests sent from the client's reactor thread never wake it, and
        several wake-ups in a row from other threads are what loses one (see
        :meth:`_commit_lock`). ``after`` runs from the unlock's reply callback (best-effort requests
        that nothing waits for, sent from the reactor's thread, see :meth:`then_send`).
        """
        counted = imap is self.meta_async and key == _COMMIT_LOCK
        held = _Held()

        def follow(sent: Any) -> Any:
            if then is None:
                return sent
            # Sent from the grant's callback; an attempt refused sends nothing (its follow is None).
            held.follow = self.then_send(sent, lambda grant: then() if grant.result() else None)
            return sent

        def send(wait: float) -> Any:
            if counted:
                with self._lock_requests_guard:
                    self._lock_requests += 1
                    self.commit_lock_requests_peak = max(self.commit_lock_requests_peak, self._lock_requests)
            # tryLock without waiting: answered at once, so it holds the gate until its reply like any request
            # (see SendGate.send_here). A blocking lock left the gate early and a marker read followed it from
            # this thread: two wake-ups in a row, and the reactor's was lost (renewals of 4 threads beside 4
            # of gets: 4 runs of 4).
            try:
                return self.gate.send_here(
                    lambda: imap.try_lock(key, lease_time=lease, timeout=wait), self.config.timeout, follow
                )
            except BaseException:
                if counted:  # never sent: no reply will count it done
                    self._lock_request_done()
                raise

        end = time.monotonic() + self.config.timeout
        pause = _LOCK_POLL_FIRST
        wait = 0.0
        pending: Any = None
        try:
            while True:
                pending = self.call(partial(send, wait))
                granted = threading.Event()
                pending.add_done_callback(lambda _, done=granted: done.set())
                if counted:
                    pending.add_done_callback(lambda _: self._lock_request_done())
                if not granted.wait(max(0.0, end - time.monotonic())):
                    raise errors.BackendUnavailableError(
                        f"hazelcast at {self.config.where}: the lock of {key!r} was not granted "
                        f"within {self.config.timeout}s"
                    )
                if self._reply(pending):
                    break
                # Held by another client (or thread): asked again, at growing intervals, then waiting in the
                # member's queue of waiters, until ``timeout``. Polled only, a lock the member hands from one
                # queued waiter to the next as each unlocks (other clients' member-side commits) was refused
                # every time: lists beside 4 clients of 4 writing threads failed (12 of 51, ``timeout`` 1 s). A
                # wait holds the send gate (this client's other requests queue behind it) that long at most.
                # Near ``timeout`` polled again, and no attempt starts in its last 20 ms: an attempt whose reply
                # came after we gave up (sent with no time left, its holder unlocking meanwhile) was a late grant,
                # released, but its ``then`` ran for nothing.
                left = end - time.monotonic()
                queued = min(_LOCK_QUEUE_MAX, max(wait * 2, _LOCK_QUEUE_FIRST))
                if pause <= _LOCK_POLL_MAX or queued * 4 > left:
                    wait = 0.0
                    time.sleep(max(0.0, min(pause, _LOCK_POLL_MAX, left)))
                    pause *= 2
                else:
                    wait = queued
                if end - time.monotonic() < _LOCK_POLL_MAX:
                    pending = None
                    raise errors.BackendUnavailableError(
                        f"hazelcast at {self.config.where}: the lock of {key!r} was not granted "
                        f"within {self.config.timeout}s"
                    )
        except BaseException:
            if pending is not None:
                pending.add_done_callback(lambda grant: self._release_abandoned(imap, key, grant))
            if after is not None:
                # A late grant still runs ``then`` (held.follow): ``after`` follows it, as it would the unlock
                # (a list's scan reserves the topics it finds for ``after`` to register: else in flight for good).
                late = after
                last = held.follow if held.follow is not None else pending
                if last is None:
                    late()
                else:
                    self.then_send(last, lambda _: late())
            raise
        try:
            yield held
        finally:
            # Lock ownership is per thread, so the unlock leaves from this one; waiting for it keeps
            # this thread's next request from waking the reactor twice in a row (see _commit_lock).
            try:
                unlocked = self.gate.send_here(lambda: imap.unlock(key), self.config.timeout)
                if after is not None:
                    then_run = after
                    self.then_send(unlocked, lambda _: then_run())
                unlocked.result()
            except hzerrors.HazelcastError as exc:
                # The lease ran out or the member dropped our locks: nothing left to release. A list checks
                # whether a commit came meanwhile (see _range).
                held.lost = True
                if not self._closed:
                    log.warning("hazelcast: releasing the lock of %r failed: %s", key, exc)

    def _lock_request_done(self) -> None:
        with self._lock_requests_guard:
            self._lock_requests -= 1

    def _release_abandoned(self, imap: Any, key: str, grant: Any) -> None:
        if grant.exception() is None and grant.result() and not self._closed:
            try:
                imap.force_unlock(key)
            except hzerrors.HazelcastError as exc:
                log.warning("hazelcast: releasing an abandoned lock of %r failed (its lease frees it): %s", key, exc)

    def commit_keys(
        self,
        conditions: Sequence[Condition],
        puts: Mapping[str, bytes],
        deletes: Sequence[str],
        token: CommitToken | None = None,
    ) -> int | None:
        """One commit under the commit lock, decided by its change-log entry (see the package docstring).

        A failure before the entry is sent leaves nothing behind and is retried under the
        retry policy. A failure once it is sent may have decided the commit:
        CommitUnknownError, and the family settles ``token`` with a commit of its own,
        which first applies any decided commit it finds, so it sees the real outcome.
        """
        outcome = self._commit_retrying([KeyCommit(conditions, puts, deletes, token)])[0]
        if isinstance(outcome, BaseException):  # pragma: no cover - one commit's errors are raised, not returned
            raise outcome
        return outcome

    def commit_group(self, commits: Sequence[KeyCommit]) -> list[Outcome]:
        """Commits of concurrent threads as one commit at one revision, each keeping its own conditions.

        :class:`SnapshotGroup` admits only commits whose keys are disjoint, so checking
        each one's conditions against the same reads equals applying them one by one;
        those whose conditions hold share one log entry (and revision), the others get None.
        """
        return self._commit_retrying([c.with_token_key() for c in commits])

    def new_commit_group(self) -> CommitGroup[KeyCommit]:
        return SnapshotGroup(self.group_commit, lambda name: f"lease/{name}", _commit_cost, None, None)

    def _commit_retrying(self, commits: Sequence[KeyCommit]) -> list[Outcome]:
        topics = self._new_topics(commits)  # registered from a reply of the commit (see _register_from_reply)
        sends = _Sends(secrets.token_hex(TOKEN_BYTES // 2))
        if self.member_commit:
            outcomes = self._member_commit_retrying(commits, topics, sends)
            if outcomes is not None:
                return outcomes
            self.member_fallbacks += 1
        elif (due := self._reprobe_at) is not None and time.monotonic() >= due:
            # Read once: another thread's re-probe sets it to None meanwhile (then compared with None: TypeError).
            self._reprobe_member_code()  # sent beside this commit, which goes on with the client's protocol
        conditions = [c for commit in commits for c in commit.conditions]
        keys = {k for commit in commits for k in (*commit.puts, *commit.deletes)}
        leases = sorted({c.name for c in conditions if isinstance(c, LeaseHeld)})

        def attempt() -> list[Outcome]:
            with ExitStack() as held:
                for name in leases:
                    # The lease entry's lock keeps its holder from releasing or renewing it until we are done.
                    held.enter_context(self._key_lock(self._lease_async, name, self.config.commit_lease))
                with self._commit_lock(partial(self._send_reads, conditions, keys, topics)) as lock:
                    return self._commit_locked(commits, conditions, keys, lock, sends)

        return self._retrying(attempt, sends)

    def _retrying(self, attempt: Callable[[], T], sends: _Sends) -> T:
        """``attempt()``, again under the retry policy while it fails as "not applied".

        A refusal (``_REFUSED``) is taken for "never ran", and the commit is sent again (an earlier send that
        landed after all is then acknowledged: see :func:`_landed_before`). But Hazelcast answers some requests
        that ran with such an error: once the policy runs out, a commit one of whose sends got no reply that
        settled it (``sends.unsettled``) ends as CommitUnknownError, which the family settles by its token,
        never as a plain BackendUnavailableError ("not applied", docs/semantics.md).
        """
        attempts = self.retry.begin()
        while True:
            try:
                return attempt()
            except errors.CommitUnknownError:
                raise
            except errors.BackendUnavailableError as exc:
                if not attempts.wait():
                    if sends.unsettled:
                        raise errors.CommitUnknownError(
                            f"hazelcast at {self.config.where}: a send of the commit was refused, and Hazelcast "
                            f"refuses some requests that ran ({exc})"
                        ) from None
                    raise
                log.debug("hazelcast: commit not applied (%s); retrying", exc)

    def _commit_locked(
        self,
        commits: Sequence[KeyCommit],
        conditions: Sequence[Condition],
        keys: set[str],
        lock: _Held,
        sends: _Sends,
    ) -> list[Outcome]:
        """Read, decide (the log entry), apply, publish ``head``; each commit's revision, or None if it failed.

        Six round trips in a row whatever the commits' size: the lock, the reads all at once
        (sent from the grant's callback), the entry, the writes all at once and then ``head``
        (sent from the entry's reply callback), the unlock.
        """
        reads_f = lock.follow
        for _pending in range(_ROLL_FORWARD_ROUNDS):
            if reads_f is None:  # after a repair or roll-forward, from this thread: through the gate
                reads_f = self.gate.send(
                    lambda: self.meta_async.get(TRIM),
                    lambda pending: self.then_send(pending, lambda _: self._send_reads(conditions, keys)),
                )
            head_raw, reads = self._reply(reads_f)
            reads_f = None
            if head_raw is None and self._repair_head(None):
                continue  # another writer deleted ``head`` (the log holds entries): put back from the log
            try:
                head = decode_head(head_raw)
            except errors.CorruptRecordError:
                if not self._repair_head(head_raw):
                    raise
                continue
            if sends.unsettled and any(c.token is None for c in commits):
                # An earlier send of this call may have landed, and a commit without a token may still hold its
                # conditions after its own write (a blind write): asked before it is planned, never applied twice.
                earlier = self._untokened_landed(commits, head, sends)
                if earlier is not None:
                    self._acknowledged([earlier], sends.anchor)
                    return [earlier]
            revision = head[0] + 1
            redo: list[Redo] = []
            changes: list[KeyChange] = []
            outcomes: list[Outcome] = []
            landed = False
            for commit in commits:
                ttls = {commit.token.key: commit.token.ttl} if commit.token is not None else {}
                planned = _plan(commit, ttls, reads, revision)
                if planned is None:
                    # An earlier send of this very commit may have landed (see _landed_before).
                    token = commit.token
                    before = _landed_before(
                        commit, None if token is None else decode_kv(token.key, reads[0].get(token.key))
                    )
                    landed = landed or before is not None
                    outcomes.append(before)
                    continue
                outcomes.append(revision)
                redo += planned[0]
                changes += planned[1]
            # A failed condition stands, unless a decided commit is still unapplied (its client died, or one of these
            # landed before, at ``revision``, not yet published): applied first, then planned again. So a commit
            # that landed before is acknowledged at a revision ``head`` has reached.
            if (None in outcomes or landed) and self._roll_forward(revision, head_raw):
                continue
            if revision not in outcomes:
                self._acknowledged(outcomes, sends.anchor)
                return outcomes
            anchor = sends.anchor
            objects = [c for c in changes if c.key.startswith(self._object_prefix)]
            entry = encode_entry(anchor, objects, redo)
            new_head = encode_head(revision, anchor)
            sends.unsettled += 1  # until a reply settles this send
            sends.at.append(revision)
            decided = self.gate.send(partial(self.log_async.put_if_absent, revision, entry))
            # Applied and published only if the entry was ours, each sent from the previous reply's callback.
            done = self.then_send(decided, partial(self._after_decided, redo, head_raw, new_head))
            try:
                taken = decided.result()
            except hzerrors.HazelcastError as exc:
                failure = ERRORS.classify(exc, f"at {self.config.where}")
                if failure.unsent or not failure.retryable:
                    raise failure.error from None  # answered as refused (it may have run: `sends` keeps it counted)
                raise errors.CommitUnknownError(
                    f"hazelcast at {self.config.where}: the reply to commit {revision} was lost ({exc})"
                ) from None
            if taken is not None:
                # Another commit took this revision (a client whose lock lapsed, or one that died unapplied), or
                # this call did: the client library sends a request answered with a retryable error again by
                # itself, and an earlier send of this call may have decided it. Rolled forward either way; an entry
                # of this call's (its anchor) stays counted, so that the next round acknowledges it (by ``head``'s
                # anchor, or by its token), never plans it again.
                if entry_token(revision, taken) != anchor:
                    sends.unsettled -= 1  # this send wrote nothing
                    sends.at.remove(revision)
                self._reply(done)
                self._roll_forward(revision, head_raw)
                continue
            try:
                done.result()
            except hzerrors.HazelcastError as exc:
                raise errors.CommitUnknownError(
                    f"hazelcast at {self.config.where}: commit {revision} is decided but applying it failed "
                    f"({exc}); the next commit applies it"
                ) from None
            self._acknowledged(outcomes, anchor)
            return outcomes
        raise errors.BackendUnavailableError(
            f"hazelcast at {self.config.where}: commits of other clients kept taking the next revision"
        )

    def _acknowledged(self, outcomes: Sequence[Outcome], anchor: str) -> None:
        """:meth:`_committed` for each revision ``outcomes`` acknowledge: this send's, and that of an earlier send
        that landed (see :func:`_landed_before`; every send of one call writes the same ``anchor``), so that
        ``token_of`` knows this client's own commit however its reply came."""
        for landed in sorted({r for r in outcomes if isinstance(r, int)}):
            self._committed(landed, anchor)

    def _committed(self, revision: int, anchor: str) -> None:
        """After a commit of ours is applied at ``revision``: remember its token, trim the log now and then."""
        self.remember_token(revision, anchor)
        if revision % _TRIM_EVERY == 0 and revision > self.config.history:
            self._trim(revision - self.config.history)

    def _member_commit_retrying(
        self, commits: Sequence[KeyCommit], topics: set[str], sends: _Sends
    ) -> list[Outcome] | None:
        """The commits as one task run in the member owning the commit lock; None: commit with the client's protocol.

        One round trip. The task runs the protocol of :meth:`_commit_locked` in the member
        and writes the same bytes. It hands back, having written nothing, whatever needs the
        client (a decided commit to apply first, data nbdb did not write). A lost reply may
        have decided the commits: CommitUnknownError, settled by the commit tokens as on the
        client's path.
        """
        task = CommitTask(
            (self._kv_name, self._log_name, self._meta_name, self._lease_name),
            self._object_prefix,
            sends.anchor,
            self.config.commit_lease,
            self.config.timeout / 2,
            commits,
        )

        tokenless = any(c.token is None for c in commits)

        def attempt() -> list[int] | None:
            if tokenless and sends.floor is None and not sends.unsettled:
                # A task does not say its revision: a send of it refused, the re-send looks for this call's anchor
                # in the entries past the floor (see _landed_at). Read now, not a revision seen before: ``head`` may
                # have moved on since (others' commits) or gone back (the cluster lost its data). Commits with a
                # token (the family's) are told by it and pay nothing. Before the first send only: read on a
                # re-send (the first read met a damaged ``head``), it may lie past a task that landed.
                try:
                    sends.floor = self._read_head()[0]
                except errors.CorruptRecordError:
                    pass  # not judged here (the task hands it back for repair); refused, no floor: unknown
            if sends.unsettled and tokenless:
                # Sent again after a send that may have run: a commit without a token whose conditions still hold
                # after its own write was applied twice. Asked first (one read of ``head``, on a re-send only).
                earlier = self._untokened_landed_now(
                    commits, sends, (errors.CorruptRecordError,), "a send of a commit without a token may have run"
                )
                if earlier is not None:
                    return [APPLIED, earlier, 1]
            reply = self._send_commit_task(task, topics, sends)
            if reply is not None and reply[0] == BUSY:  # nothing was written
                sends.unsettled -= 1
                raise errors.BackendUnavailableError(
                    f"hazelcast at {self.config.where}: the commit lock was not granted "
                    f"within {self.config.timeout / 2}s"
                )
            return reply

        reply = self._retrying(attempt, sends)
        if reply is None:
            return None
        if reply[0] == FALLBACK:
            # Data nbdb did not write, a decided commit to roll forward, or a member of another protocol
            # (one of protocol 1 hands back a task with a condition kind it does not know, nothing written):
            # asked again, so that such a member costs one task, not one more round trip every commit.
            sends.unsettled -= 1  # handed back having written nothing
            self._member_code_present()
            return None
        if reply[0] != APPLIED:  # pragma: no cover - the task replies nothing else
            raise errors.CommitUnknownError(f"hazelcast at {self.config.where}: the member replied {reply!r}")
        revision = reply[1]
        outcomes: list[Outcome] = [revision if ok else None for ok in reply[2:]]
        if revision in outcomes:
            self.member_commits += 1
        sends.unsettled -= 1  # this send's reply says what it did (but see _landed_before_any)
        outcomes = self._landed_before_any(commits, outcomes, sends)
        self._acknowledged(outcomes, sends.anchor)
        return outcomes

    def _landed_before_any(self, commits: Sequence[KeyCommit], outcomes: list[Outcome], sends: _Sends) -> list[Outcome]:
        """``outcomes`` of a member's task, each failed commit that an earlier send of it applied given that
        revision instead (see :func:`_landed_before`): a read of their tokens, only when some failed.

        The task's reply says only which commits' conditions held. A read that fails cannot tell a
        conflict from a commit that landed: CommitUnknownError, which the family settles by the token.
        A failed commit without a token is told by ``head`` (see :meth:`_untokened_landed`): after an earlier
        send that may have run, and, a lone one, whatever ``sends.unsettled`` says: the client library runs a
        task answered with a retryable error again by itself, unseen by nbdb, and that run fails on the first
        one's write (a group's reply that wrote its entry put this call's anchor at ``head`` itself).
        """
        if (len(commits) == 1 or sends.unsettled) and any(
            o is None and c.token is None for c, o in zip(commits, outcomes, strict=True)
        ):
            earlier = self._untokened_landed_now(
                commits,
                sends,
                (errors.BackendUnavailableError, errors.CorruptRecordError),  # (damaged by another writer)
                "a commit without a token run in the member failed its conditions",
            )
            if earlier is not None:
                outcomes = [earlier]
        failed = [
            i
            for i, (commit, outcome) in enumerate(zip(commits, outcomes, strict=True))
            if outcome is None and commit.token is not None and commit.puts.get(commit.token.key) == TOKEN_APPLIED
        ]
        if not failed:
            return outcomes
        try:
            tokens = self.get_keys([commits[i].token.key for i in failed])  # type: ignore[union-attr]
        except errors.BackendUnavailableError as exc:
            raise errors.CommitUnknownError(
                f"hazelcast at {self.config.where}: a commit run in the member failed its conditions and "
                f"whether an earlier send of it had landed could not be read ({exc})"
            ) from None
        landed = list(outcomes)
        for i, found in zip(failed, tokens, strict=True):
            landed[i] = _landed_before(commits[i], found)
        return landed

    def _read_head(self) -> tuple[int, str]:
        """``head`` read and decoded, not repaired (missing: (0, GENESIS); damaged: CorruptRecordError)."""
        return decode_head(self._ask(lambda: self.meta_async.get(HEAD)))

    def _untokened_landed_now(
        self, commits: Sequence[KeyCommit], sends: _Sends, unknown: tuple[type[Exception], ...], why: str
    ) -> int | None:
        """:meth:`_untokened_landed` at ``head`` read now; a read failing with one of ``unknown`` (``why`` says what
        may have run) is CommitUnknownError, its cause chained: whether the commit landed could not be read."""
        try:
            head = self._read_head()
        except unknown as exc:
            raise errors.CommitUnknownError(
                f"hazelcast at {self.config.where}: {why}, and whether it landed could not be read ({exc})"
            ) from exc
        return self._untokened_landed(commits, head, sends)

    def _untokened_landed(self, commits: Sequence[KeyCommit], head: tuple[int, str], sends: _Sends) -> int | None:
        """The revision a lone commit without a token is in at if an earlier send of this call landed it; None if
        none did (it is then planned, or its failure stands); CommitUnknownError if it cannot be told.

        A commit with a token is told by it (:func:`_landed_before`, ``void_token``'s read-back). One without (a
        caller of ``commit_keys`` with ``token=None``), sent again after a send that landed but was answered as
        refused, either fails on its own writes (a ConflictError would report a write the store holds) or still
        holds its conditions (a blind write: applied twice). Every send of one call writes the same anchor into
        its log entry and ``head``, and an entry is written only for commits whose conditions held: a lone
        commit is in where the anchor is found (see :meth:`_landed_at`). A group's entry does not say which of
        its commits it holds: CommitUnknownError.
        """
        landed = self._landed_at(head, sends)
        if landed is None:
            return None
        if len(commits) == 1:
            return landed
        raise errors.CommitUnknownError(
            f"hazelcast at {self.config.where}: an earlier send of a group holding a commit without a token "
            f"landed at {landed}, and which of its commits it holds cannot be told"
        )

    def _landed_at(self, head: tuple[int, str], sends: _Sends) -> int | None:
        """The revision an earlier send of this call landed at, None if none did; CommitUnknownError if unknown.

        ``head`` holding this call's anchor: at ``head``'s revision. Else, with no send unsettled, none did. Else the
        entries that may hold an unsettled send are read: those at the revisions of the client's protocol's sends
        (``sends.at``) that ``head`` has passed, and, a member's task not saying its revision, every one past
        ``sends.floor`` (``head``'s revision read just before the first task left) up to ``head``: none when
        ``head`` has not moved since (a task refused unrun is then sent again). The entry at ``head + 1``, if any, is
        rolled forward when met (see :meth:`_commit_locked`). More than ``_TASK_LANDED_SCAN`` revisions past the
        floor, ``head`` below it (it went back: the cluster lost its data), or an entry trimmed away, cannot be
        told: CommitUnknownError, never a guessed conflict nor a second apply.
        """
        revision, holder = head
        if holder == sends.anchor:
            return revision
        if not sends.unsettled:
            return None
        unknown = f"hazelcast at {self.config.where}: an earlier send of this commit may have landed, and "
        candidates = {r for r in sends.at if r <= revision}
        if sends.unsettled > len(sends.at):
            # A member's task: it does not say its revision, but lands past ``sends.floor`` if at all.
            floor = sends.floor
            if floor is None or not floor <= revision <= floor + _TASK_LANDED_SCAN:  # (below the floor: head went back)
                raise errors.CommitUnknownError(
                    unknown + f"head has moved from {floor} to {revision} since a task of it was sent"
                )
            candidates.update(range(floor + 1, revision + 1))
        passed = sorted(candidates)
        if not passed:
            return None
        found = self._ask(lambda: self.log_async.get_all(passed))
        for at in passed:
            raw = found.get(at)
            if raw is None:
                raise errors.CommitUnknownError(unknown + f"the change log entry of revision {at} is trimmed")
            if entry_token(at, raw) == sends.anchor:
                return at
        return None

    def _send_commit_task(self, task: CommitTask, topics: set[str], sends: _Sends) -> list[int] | None:
        """Run ``task`` in the member owning the commit lock: its reply, or None if that member lacks nbdb's code.

        The reply (and the gated read the task may leave after) is waited for at most ``timeout``: the client
        fails a request to a member that does not answer, but the lock's owner answers its heartbeats while the
        task waits on another member, frozen, until the members drop that one (60 s stock). Given up on before
        it left, the task is never sent (BackendUnavailableError); after, CommitUnknownError.
        """
        # One thread of this backend sends at a time (see _commit_lock).
        if not self._local_commit.acquire(blocking=False):
            self._wait_local_turn()
        pending: Any = None
        try:
            # Not through call(): its failures are classified here (a lost reply may have committed).
            # The wait first: a close() meanwhile is then refused by _admit, the task never sent.
            self._task_given_up_ended()
            self._admit()
            sent: list[bool] = []
            given_up: list[bool] = []
            guard = threading.Lock()

            def send_task(_: Any) -> Any:
                with guard:  # given up on (below) before it left: never sent
                    if given_up:
                        raise hzerrors.OperationTimeoutError("the commit task was given up on before it was sent")
                    sent.append(True)
                    sends.unsettled += 1  # until a reply settles this send
                return self._executor.execute_on_key_owner(_COMMIT_LOCK, task)

            # The task leaves from a reply's callback (the reactor's thread, which wakes nothing): that of a read
            # sent through the gate, which holds the gate until then only (the task's reply may be long in
            # coming). Sent from this thread, it woke the reactor beside other threads' gated requests and the
            # wake-up was lost (8 writers and a reader: 2 of 3 runs).
            if self.gate.alone():
                # No other thread of this client sends: the task leaves from here, one wake-up, one request.
                pending = send_task(None)
            else:
                pending = self.gate.send(
                    lambda: self.meta_async.get(TRIM), lambda marker: self.then_send(marker, send_task)
                )
            self._register_from_reply(pending, topics)
            return list(self.gate.result(pending, self.config.timeout))
        except hzerrors.HazelcastError as exc:
            with guard:
                given_up.append(True)
            if not sent:
                raise errors.BackendUnavailableError(
                    f"hazelcast at {self.config.where}: the read sent before a commit task failed ({exc}); "
                    "the task was not sent"
                ) from None
            failure = ERRORS.classify(exc, f"at {self.config.where}")
            if failure.unsent:
                raise failure.error from None
            if isinstance(exc, hzerrors.HazelcastSerializationError) and not self._member_code_present():
                # The member refused the task unread (a member that joined without the jar, or with one of
                # another protocol): nothing ran.
                sends.unsettled -= 1
                return None
            if pending is not None and not pending.done():
                self._given_up_task = pending  # the member may still run it, holding the commit lock
            raise errors.CommitUnknownError(
                f"hazelcast at {self.config.where}: the reply to a commit run in the member was lost ({exc})"
            ) from None
        finally:
            self._local_commit.release()

    def _member_code_present(self) -> bool:
        """Whether the member owning the commit lock runs nbdb's tasks in this client's protocol (asked again;
        off if not, a member without the jar, or with one of another protocol, as a rolling deploy brings,
        until a re-probe after the back-off finds them again: see :meth:`_reprobe_member_code`)."""
        try:
            reply = self.gate.send(lambda: self._executor.execute_on_key_owner(_COMMIT_LOCK, ProbeTask())).result()
        except hzerrors.HazelcastSerializationError:
            why = "a member lacks nbdb's member-side jar"
        except hzerrors.HazelcastError:
            return True  # cannot tell: the caller reports the outcome as unknown
        else:
            if list(reply)[:1] == [PROTOCOL]:
                return True
            why = f"the member owning the commit lock speaks protocol {list(reply)[:1]}, this client {PROTOCOL}"
        self._member_commit_off()
        log.warning(
            "hazelcast at %s: %s: commits go back to six round trips (%s)",
            self.config.where,
            why,
            self._when_asked_again(),
        )
        return False

    def _when_asked_again(self) -> str:
        """When member commits, just turned off, are asked for again (:meth:`_member_commit_off`), for a log line."""
        due = self._reprobe_at
        if due is not None:
            return f"asked again at the first commit {math.ceil(max(0.0, due - time.monotonic()))}s from now"
        if self._members_listener is None:
            return "not asked again: member_probes=0"
        return (
            "not asked again until a member joins or leaves: the window of probes the connect or the last "
            f"membership change opened (member_probes={self.config.member_probes}) is used up"
        )

    def _member_commit_off(self) -> None:
        """Commit with the client's own protocol until a re-probe, due after the back-off, finds the code again
        (none once the window the connect or the last membership change opened is used up: ``_reprobes_left``)."""
        self.member_commit = False
        if self._reprobes_left <= 0:
            self._reprobe_at = None  # until the membership changes (see _on_members)
            return
        self._reprobe_at = time.monotonic() + self._reprobe_delay
        self._reprobe_delay = min(2 * self._reprobe_delay, _REPROBE_MAX)

    def _on_members(self, _member: Any) -> None:
        """A member joined or left (a membership listener, on the client's reactor thread): while member
        commits are off, the lock's owner may now have the code (a rolling upgrade, or a rollback); ask again
        at the next commit, and on the back-off's timer while the partitions migrate (the owner may change
        only then), ``member_probes`` times at most."""
        self._reprobe_delay = _REPROBE_FIRST
        self._reprobes_left = self.config.member_probes
        if self._reprobes_left > 0 and not self.member_commit and not self._reprobing.locked():
            self._reprobe_at = time.monotonic()

    def _reprobe_member_code(self) -> None:
        """Ask the member owning the commit lock again, not waiting (the commit in hand goes on without it).

        Member commits come back on only when that member answers with this client's protocol. A
        commit chooses its path once, before it sends anything, and the member's task takes the same
        commit lock as the client's protocol: commits already on their way with the client's protocol
        finish so, the next ones go as tasks. If the owner changes again (a task refused, or handed back),
        nothing was written and :meth:`_member_code_present` turns them off, the back-off doubled.
        """
        if self._closed or not self._reprobing.acquire(blocking=False):
            return
        # Checked again under the lock: another thread's re-probe may have been answered since this commit
        # found it due (member commits on, or the next one scheduled): not a second probe right after it.
        due = self._reprobe_at
        if self.member_commit or due is None or time.monotonic() < due:
            self._reprobing.release()
            return
        self._reprobe_at = None
        self._reprobes_left -= 1
        self.member_reprobes += 1

        def answered(reply: Any) -> None:
            try:
                found = None if reply.exception() is not None else list(reply.result())[:1]
                if found == [PROTOCOL]:
                    log.info("hazelcast at %s: the members run nbdb's commit tasks again", self.config.where)
                    self.member_commit = True
                else:
                    log.debug("hazelcast at %s: member commits still off (%s)", self.config.where, found)
                    self._member_commit_off()
            finally:
                self._reprobing.release()

        try:
            sent = self.gate.send(lambda: self._executor.execute_on_key_owner(_COMMIT_LOCK, ProbeTask()))
            sent.add_done_callback(answered)
        except Exception:  # refused at once (the client shutting down): asked again after the back-off
            self._member_commit_off()
            self._reprobing.release()

    def then_send(self, future: Any, send: Callable[[Any], Any]) -> Any:
        """A future of what ``send(future)`` returns (a future is followed), ``send`` run from a reply callback.

        hazelcast-python-client 5.7's reactor loses a wake-up when it is woken several times
        in a row by other threads (see :meth:`_commit_lock`), and every request (a ``getAll``
        is one per partition) wakes it. Requests sent from a reply's callback run on the
        reactor's own thread and wake nothing, so bursts leave from there. A callback runs at
        once on the attaching thread if the reply was in already (a busy machine); it then
        bounces through one more request (as often as that happens, up to a bound), whose
        reply callback sends the burst.
        """
        attacher = threading.get_ident()

        def step(done: Any, bounces: int = 0) -> Any:
            here = threading.get_ident()
            if here != attacher:
                self._reactor_thread = here  # a reply callback that did not run at once: the reactor's thread
            elif here != self._reactor_thread and bounces < _MAX_BOUNCES:
                # The reply was in before the callback was attached (so the reactor has handled this thread's
                # last wake-up): one more single request, and the burst leaves from its reply's callback.
                return self.gate.send(
                    lambda: self.meta_async.get(TRIM),
                    lambda sent: sent.continue_with(lambda _: step(done, bounces + 1)),
                )
            return send(done)

        return future.continue_with(step)

    def _send_reads(self, conditions: Sequence[Condition], keys: set[str], topics: set[str] | None = None) -> Any:
        """Read ``head``, every key the commits check or change, lease holders and prefix contents, all at once.

        A future of ``(head, _Reads)``. ``topics``: registered too (:meth:`_register`), sent from the
        commit lock's grant callback with the reads.
        """
        if topics:
            self._register(topics)
        keys = set(keys)
        for condition in conditions:
            if isinstance(condition, VersionIs | Exists | WrittenAt | ValueIs):
                keys.add(condition.key)
        leases = [c.name for c in conditions if isinstance(c, LeaseHeld)]
        prefixes = [c.prefix for c in conditions if isinstance(c, PrefixUnchangedSince)]
        pending = [
            self.meta_async.get(HEAD),
            # get_all of no keys answers {} without a request.
            self._kv_async.get_all(list(keys)),
            *(self._lease_async.get(name) for name in leases),
            *(self._kv_async.values(between("__key", p, p + "\uffff")) for p in prefixes),
        ]

        def assemble(done: Any) -> tuple[Any, _Reads]:
            head, current, *rest = done.result()
            holders = dict(zip(leases, rest[: len(leases)], strict=True))
            inside = dict(zip(prefixes, rest[len(leases) :], strict=True))
            return head, _Reads(current, holders, inside)

        return combine_futures(pending).continue_with(assemble)

    def _after_decided(self, redo: Sequence[Redo], old_head: Any, new_head: bytearray, decided: Any) -> Any:
        """Once the log entry is written: if it was ours, apply and publish (a future of the last reply); else None."""
        if decided.result() is not None:
            return None
        return self._apply_and_publish(redo, old_head, new_head)

    def _apply_and_publish(self, redo: Sequence[Redo], old_head: Any, new_head: bytearray) -> Any:
        """Send a decided commit's writes, then (once they are in) move ``head``: a future of the last reply."""
        return self._send_apply(redo).continue_with(
            lambda applied: (applied.result(), self._send_head(old_head, new_head))[1]
        )

    def _send_apply(self, redo: Sequence[Redo]) -> Any:
        """Send a decided commit's writes, all at once; each changes a key only from its old bytes. A future."""
        pending = []
        for r in redo:
            if r.new is not None and r.old is None:
                pending.append(self._kv_async.put_if_absent(r.key, bytearray(r.new), r.ttl or None))
            elif r.new is not None and r.old is not None:
                pending.append(self._kv_async.replace_if_same(r.key, bytearray(r.old), bytearray(r.new)))
            elif r.old is not None:
                pending.append(self._kv_async.remove_if_same(r.key, bytearray(r.old)))
        return combine_futures(pending)

    def _send_head(self, old: Any, new: bytearray) -> Any:
        """Move ``head`` from ``old`` (as read) to ``new``; a client whose lock lapsed cannot move it back."""
        if old is None:
            return self.meta_async.put_if_absent(HEAD, new)
        return self.meta_async.replace_if_same(HEAD, old, new)

    def _roll_forward(self, revision: int, head_raw: Any) -> bool:
        """Apply the commit of ``revision`` if it is decided but ``head`` is still below it; whether it was."""
        raw = self._ask(lambda: self.log_async.get(revision))
        if raw is None:
            return False
        try:
            token, redo = decode_redo(revision, raw)
        except errors.HistoryGoneError as exc:
            # nbdb writes an entry whole, in one put: a damaged one past ``head`` is another writer's,
            # no commit. Taken for one, it failed every commit of the namespace from then on. It goes
            # (if still the same), and the revision is free again.
            log.warning("hazelcast: removing a change log entry nbdb did not write past head: %s", exc)
            self._tell(lambda: self.log_async.remove_if_same(revision, raw))
            return True
        log.info("hazelcast: applying commit %d, decided by a client that did not finish it", revision)
        self.call(
            lambda: self.gate.send(
                lambda: self.meta_async.get(HEAD),
                lambda pending: self.then_send(
                    pending, lambda _: self._apply_and_publish(redo, head_raw, encode_head(revision, token))
                ),
            ).result()
        )
        return True

    def _repair_head(self, head_raw: Any) -> bool:
        """Put back a ``head`` another writer damaged, from the log (under the commit lock); whether it was.

        Every entry below the newest was applied before ``head`` passed it (an entry is written at
        ``head + 1`` only): the newest is rolled forward (its compare-and-sets change nothing if it
        was applied), which moves ``head`` to it from the damaged value. Left as it was, it failed
        every commit and list of the namespace with CorruptRecordError, for good.
        """
        listed = self._ask(lambda: self.log_async.key_set())
        keys = [k for k in listed if isinstance(k, int) and not isinstance(k, bool) and 0 < k < 2**31]
        # nbdb's keys are Integers. Another client's (a Long: Java's, or Python's with another
        # default_int_type) is listed as the same int, yet nbdb's get of that number reads its own
        # Integer key: not nbdb's entry. Taken for the newest, the repair found nothing and gave up.
        found = self._ask(lambda: self.log_async.get_all(keys)) if keys else {}
        if not found:
            return False
        newest = max(found)
        what = "is missing" if head_raw is None else "holds data nbdb did not write"
        log.warning("hazelcast: head %s; putting it back at revision %d", what, newest)
        # Rolled forward whole, as a commit does: an entry that had landed is written again with
        # the same bytes, and its token with it. Replaying only what the data shows unapplied kept
        # an expired token from coming back for one more lifetime, but could put ``head`` back
        # without a token whose write was lost, and a caller voiding it applied the commit twice.
        return self._roll_forward(newest, head_raw)

    def _trim(self, through: int) -> None:
        """Drop ``log`` entries up to ``through``; the mark goes first so readers know a hole is a trim."""
        try:
            # Through the gate (from the committing thread, after its unlock), as every caller's request.
            current = self.gate.result(self.gate.send(lambda: self.meta_async.get(TRIM)), self.config.timeout)
            if isinstance(current, int) and current >= through:
                return
            self.gate.send(lambda: self.meta_async.set(TRIM, through)).result()
            self.gate.send(lambda: self.log_async.remove_all(less_or_equal("__key", through))).result()
        except hzerrors.HazelcastError as exc:
            log.warning("hazelcast: trimming the change log failed (retried on a later commit): %s", exc)

    def compact_keys(self, revision: int) -> None:
        with self._commit_lock():
            mark = max(revision, self._trim_mark())
            self._tell(lambda: self.meta_async.set(TRIM, mark))
            self._tell(lambda: self.log_async.remove_all(less_or_equal("__key", revision)))

    # ---------------------------------------------------------------- change log

    def logs_for(self, prefixes: Sequence[str]) -> list[str]:
        for prefix in prefixes:
            if not prefix.startswith(self._object_prefix):
                raise errors.UnsupportedError(f"hazelcast keeps a change log for object keys only, not {prefix!r}")
        return [self._log_name]

    def open_log_reader(self) -> ChangeLogReader:
        """A reader of the change log, once the backend's ``head`` listener is registered (the first call registers it).

        The registration's reply is waited for holding no lock that :meth:`_on_head` takes: that callback runs on
        the client's reactor thread, the thread that reads the reply. Under ``_log_cond`` (as before), a ``head``
        event that the member sent ahead of the reply (a commit moved ``head`` as the listener was added: 2 in 300
        registrations beside three committing clients) blocked the reactor on the lock this thread held while it
        waited for the reply that reactor was to read: neither moved again, for the client's life (the watch hub's
        pump stuck in here, and ``Database.close()`` joining it).

        The reply is waited for at most ``timeout`` (then BackendUnavailableError, which the watch hub retries): a
        registration is no write that must not be given up (see :meth:`_tell`), and a registration on a connection
        the member does not answer is failed by the client only once its heartbeat finds the connection dead. One
        given up on stays in flight: a later call waits for that one rather than register another, and it is kept
        (not leaked) if it is answered after all, or dropped if it fails (:meth:`_registered`).
        """
        if self._closed:
            raise errors.BackendUnavailableError("the hazelcast backend is closed")
        with self._log_listening:
            pending = self._log_registering
            if self._log_listener is None and pending is None:
                # ``head`` moves once a commit is applied, after its log entry was written: waking on the
                # entry would have readers poll while the commit is still being applied.
                pending = self._log_registering = self.call(
                    lambda: self.gate.send(
                        lambda: self.meta_async.add_entry_listener(
                            include_value=True, key=HEAD, added_func=self._on_head, updated_func=self._on_head
                        )
                    )
                )
                registered = pending
            else:
                registered = None
        if registered is not None:
            registered.add_done_callback(self._registered)  # outside the lock: it runs here if the reply is in
        if pending is not None:
            self.call(lambda: self.gate.result(pending, self.config.timeout))
        return HazelcastLogReader(self)

    def _registered(self, future: Any) -> None:
        """The ``head`` listener's registration is answered: keep its id, or let the next reader register again."""
        failed = future.exception()
        with self._log_listening:
            if self._log_registering is future:
                self._log_registering = None
            if failed is None and self._log_listener is None:
                self._log_listener = future.result()

    def _on_head(self, event: Any) -> None:
        try:
            revision = decode_head(event.value)[0]
        except errors.CorruptRecordError:
            revision = self._log_latest + 1  # not ours to judge here: the reader reports it
        with self._log_cond:
            self._log_latest = max(self._log_latest, revision)
            self._log_cond.notify_all()

    def wake_log_waiters(self) -> None:
        """Wake the readers waiting in :meth:`wait_for_log`."""
        with self._log_cond:
            self._log_cond.notify_all()

    def wait_for_log(self, after: int, timeout: float, closed: Callable[[], bool]) -> None:
        """Until the log is known past ``after``, ``timeout`` passes, ``closed()`` or the backend closes."""
        # Events only wake readers early; a reader re-reads after ``timeout`` regardless, so
        # an event lost in a reconnect costs latency, never a change.
        end = time.monotonic() + timeout
        with self._log_cond:
            while self._log_latest <= after and not closed() and not self._closed:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return
                self._log_cond.wait(remaining)

    # ---------------------------------------------------------------- leases, ids

    @property
    def request_timeout(self) -> float:
        return self.config.timeout

    def acquire_lease(self, name: str, token: bytes, ttl: float) -> bool:
        holder = self._tell_locked(
            lambda: self._lease_async.put_if_absent(name, bytearray(token), ttl=ttl + _EXPIRY_GRAIN)
        )
        return holder is None or _holder(holder) == token

    def renew_lease(self, name: str, token: bytes, ttl: float) -> bool:
        # Under the entry's lock no other client can take or drop the lease between the check and the renewal.
        with self._key_lock(self._lease_async, name, max(ttl, 1.0)):
            holder = self._ask(lambda: self._lease_async.get(name))
            if holder is None or _holder(holder) != token:
                return False
            # From this thread, the lock's owner: sent from a reply's callback (another thread id), the write
            # waited for the lock this thread holds, and the unlock for the write, until the lock's lease ran out.
            self.call(
                lambda: self.gate.send_here(
                    lambda: self._lease_async.set(name, bytearray(token), ttl=ttl + _EXPIRY_GRAIN), self.config.timeout
                ).result()
            )
            return True

    def release_lease(self, name: str, token: bytes) -> None:
        self._tell_locked(lambda: self._lease_async.remove_if_same(name, bytearray(token)))

    def lease_held(self, name: str, token: bytes) -> bool:
        """Whether ``token`` holds the lease now: read from the lease map (the family's default reads a key).

        Without it a fenced write that failed on a stale version, its lock still held, was LockLostError.
        """
        holder = self._ask(lambda: self._lease_async.get(name))
        return holder is not None and _holder(holder) == token

    def allocate_id(self, name: str) -> int:
        """The next id: a compare-and-swap on the counter (an id of a lost reply is skipped, never reused)."""
        while True:
            current = self._ask(lambda: self._ids_async.get(name))
            if current is None:
                if self._tell(lambda: self._ids_async.put_if_absent(name, 1)) is None:
                    return 1
                continue
            current = counter_value(current, name, name)
            if self._tell(partial(self._ids_async.replace_if_same, name, current, current + 1)):
                return current + 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.wake_log_waiters()
        try:
            if self._members_listener is not None:
                self._client.cluster_service.remove_listener(self._members_listener)
            self._client.shutdown()
        except Exception:  # closing must not fail
            log.debug("hazelcast: error while shutting the client down", exc_info=True)


class _Sends:
    """What the sends of one commit (or group) share: the anchor of its log entry, how many sends got no reply
    that settled them (sent, then refused or unanswered: each may have run; see :meth:`HazelcastBackend._retrying`),
    and at which revisions (see :meth:`HazelcastBackend._landed_at`)."""

    __slots__ = ("anchor", "at", "floor", "unsettled")

    def __init__(self, anchor: str) -> None:
        self.anchor = anchor
        self.unsettled = 0
        self.at: list[int] = []
        """The revisions of the unsettled sends of the client's protocol (a member's task does not say its own)."""
        self.floor: int | None = None
        """``head``'s revision read just before the first task of a call without a token left (None for a call with
        tokens): a task that landed did so past it, unless the cluster lost its data in between (see docs)."""


class _Held:
    """A held key lock and what the grant's callback sent (``follow``)."""

    __slots__ = ("follow", "lost")

    def __init__(self) -> None:
        self.follow: Any = None
        self.lost = False
        """Whether the unlock failed: the lock may have lapsed (its lease ran out, or the member dropped it) while
        held, so another client may have taken it meanwhile. An unlock that succeeds proves it held throughout."""


class _Reads(NamedTuple):
    """What a commit read: stored keys, lease holders, the values under each checked prefix."""

    current: Mapping[str, Any]
    holders: Mapping[str, Any]
    prefixes: Mapping[str, list[Any]]


def _holder(value: Any) -> bytes | None:
    """The token of a lease's holder; None for a value nbdb does not write (another writer's holder).

    ``bytes(value)`` of another writer's text was a raw TypeError out of ``lock()``; such a value
    holds the lease for someone else, as any token not the caller's does.
    """
    return bytes(value) if isinstance(value, bytes | bytearray) else None


def _commit_cost(commit: KeyCommit) -> tuple[int, int]:
    """What a commit adds to a group: nothing the group limits (the group size is the one bound)."""
    return 0, 0


def _plan(
    commit: KeyCommit, ttls: Mapping[str, float], reads: _Reads, revision: int
) -> tuple[list[Redo], list[KeyChange]] | None:
    """The stored bytes a commit writes and its changes, from what was read; None if a condition fails."""
    current, holders, prefixes = reads
    conditions, puts, deletes = commit.conditions, commit.puts, commit.deletes
    for condition in conditions:
        if isinstance(condition, VersionIs):
            found = decode_kv(condition.key, current.get(condition.key))
            if (found.version if found else 0) != condition.version:
                return None
        elif isinstance(condition, Exists):
            if current.get(condition.key) is None:
                return None
        elif isinstance(condition, WrittenAt):
            # Present, last written at that revision: a key deleted and created again since has a later one.
            found = decode_kv(condition.key, current.get(condition.key))
            if found is None or found.mod_revision != condition.revision:
                return None
        elif isinstance(condition, ValueIs):
            found = decode_kv(condition.key, current.get(condition.key))
            if found is None or found.value != condition.value:
                return None
        elif isinstance(condition, LeaseHeld):
            holder = holders.get(condition.name)
            if holder is None or _holder(holder) != condition.token:
                return None
        elif isinstance(condition, PrefixUnchangedSince):
            inside = (decode_kv(condition.prefix, raw) for raw in prefixes.get(condition.prefix, ()))
            if any(found.mod_revision > condition.revision for found in inside if found is not None):
                return None
        else:  # pragma: no cover - the family has no other conditions
            raise TypeError(f"unknown condition {condition!r}")
    redo: list[Redo] = []
    changes: list[KeyChange] = []
    for key, value in puts.items():
        raw = current.get(key)
        previous = decode_kv(key, raw)
        old_version = previous.version if previous else 0
        stored = encode_kv(old_version + 1, revision, value)
        redo.append(Redo(key, None if raw is None else bytes(raw), bytes(stored), ttls.get(key, 0.0)))
        changes.append(
            KeyChange(key, value, old_version + 1, previous.value if previous else None, old_version, revision)
        )
    for key in deletes:
        raw = current.get(key)
        previous = decode_kv(key, raw)
        if raw is not None and previous is not None:
            redo.append(Redo(key, bytes(raw), None, 0.0))
            changes.append(KeyChange(key, None, 0, previous.value, previous.version, revision))
    return redo, changes


def _landed_before(commit: KeyCommit, token: KeyValue | None) -> int | None:
    """The revision an earlier send of ``commit`` applied it at, read from its token key (``token``), or None.

    A commit whose conditions failed may have failed on its own writes: Hazelcast answers some requests that
    ran with an error taken as "never ran" (a retryable one: the member-side write to a member just killed,
    a migrating partition), and the client itself, as well as the retry policy, sends such a request again.
    Its commit token (written only by it, see ``KeyCommit.with_token_key``) then holds "applied": the commit
    is in, at the token's revision, and a ConflictError would report a write the store holds as refused
    (both writers of ``test_member_killed_during_writes_loses_nothing`` once died of it). A commit that does
    not write its token as applied (a settle voiding one) is taken at its word.
    """
    if commit.token is None or commit.puts.get(commit.token.key) != TOKEN_APPLIED:
        return None
    return applied_at(token)


def _java_literal(text: str) -> str:
    """``text`` as a Java regular expression that matches it alone (each character not a letter or digit escaped)."""
    return "".join(c if c.isalnum() else "\\" + c for c in text)
