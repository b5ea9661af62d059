"""The etcd v3 backend: the key-value family's primitives on etcd transactions, ranges and watches."""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise
from typing import Any, ClassVar, TypeVar
from urllib.parse import unquote, urlsplit

from nbdb import errors
from nbdb.backends.etcd import txnshape, wire
from nbdb.backends.etcd.client import EtcdClient, EtcdSettings, safe_progress_requests
from nbdb.backends.etcd.stream import EtcdKeyStream
from nbdb.capabilities import Atomicity, Capabilities, Durability, Expiry
from nbdb.families import rules
from nbdb.families.kv import (
    CommitToken,
    Condition,
    Exists,
    KeyCommit,
    KeyStream,
    KeyValue,
    KeyValueBackend,
    LeaseHeld,
    PrefixUnchangedSince,
    ValueIs,
    VersionIs,
    WrittenAt,
)
from nbdb.families.kvgroup import CommitGroup, Outcome, SnapshotGroup
from nbdb.families.kvplan import TOPIC_PROBES, outside_tables, wildcard_split
from nbdb.families.kvregistry import Registrations, gaps, parse_marks, topic_of, topics_of
from nbdb.families.kvtypes import APPLIED, write_count
from nbdb.options import Options, check_tls_files, check_unicode, redact, split_hosts, split_userinfo
from nbdb.spi import CommitResult, LockHandle, Put, WriteOp

__all__ = ["EtcdBackend"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

DEFAULT_PORT = 2379
DEFAULT_PREFIX = "nbdb/"
_PAGE = 2000
_MAX_PAGE = 16_000
"""A range is read in pages that double from ``_PAGE`` up to this many keys.

etcd answers every page of a range by walking the index of all the keys left
in it (to count them), so pages of a fixed size cost the server O(N²/page) for
N keys: at 100,000 ports 51 pages of 2,000 took 25 µs a port, against 6.5 at
10,000. Doubling pages only divide that by the cap (about 0.6 s of etcd a page
at 1M ports), so a range with more than a few pages left is read as sub-ranges
of its ids' leading digits (see ``EtcdBackend._read_span``); the cap bounds one
reply (≈ 10 MB of ports) beside the list the load keeps anyway.
"""
_SPLIT_PAGES = 4
"""A range with more than this many first pages left after its first is read as sub-ranges (see _read_span)."""
_SPLIT_DEPTH = 512
"""Sub-ranges go no deeper than keys this long (a guard against keys sharing very long prefixes)."""
_CLUSTER = 2
"""A long range's page whose keys share more than this many characters past its prefix is read on upwards
from them (ids clustered on a prefix: see ``EtcdBackend._read_ladder``), not one digit deeper."""
_STEP_DIGITS = 12
"""A limited read's steps end at ids of this many hex digits (see ``EtcdBackend._read_from``)."""
_PROBE = b"7fff"
"""A table's first page is read whole only if no id starts with these digits (see ``EtcdBackend._first_pages``)."""
_PROBE_FROM, _PROBE_END = b"7f", b"81"
"""The range that tells a large table from a short one once a ``_PROBE`` id is found (see :func:`_large`): the ids
that start with ``7f`` or ``80``."""
_PROBE_SHARE = 128
"""Random ids in the probe's range: about one in this many."""
_BEFORE = 4
"""The probe range's first keys read: a large table of random ids has that many (some 31 or more) below ``7fff``."""
_UUID4 = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
"""A random UUID (v4): its leading hex digits spread the ids (see ``EtcdBackend._read_from``)."""
_FIRST_STEP_DIGITS = 4
"""A large table's first page is read from its first step: the ids that start with this many zeros."""
_PRUNE_EVERY = 60.0  # seconds between two checks of one topic for a dead registry key (see _prune)
_PRUNE_FROM = 32  # topics without the scanned tables' keys a scan must find before it checks them (see _prune)
_MAX_TXN_OPS = 128  # etcd's default --max-txn-ops; larger batches of reads are split
_LARGEST_REVISION = 2**63 - 2
"""The largest revision a merged absence check names (it compares with the next): sizes a commit before its read."""
_OPTIONS = {
    "namespace", "tls", "ca", "cert", "key", "user", "password", "timeout", "retries", "retry_backoff",
    "retry_deadline", "progress_interval", "max_txn_ops", "max_request_bytes", "group_commit",
}  # fmt: skip


def parse_url(url: str, options: Mapping[str, Any]) -> tuple[EtcdSettings, str, float]:
    """Settings, key prefix and progress-request interval from an ``etcd://`` URL and keyword options."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("etcd", "etcd+https"):
        raise errors.ValidationError(f"not an etcd URL: {redact(url)!r}")
    opts = Options.from_url(parts.query, options, _OPTIONS, "etcd://")
    user, password, hosts = split_userinfo(parts.netloc)
    if "user" in opts:
        user = opts.text("user") or None
    if "password" in opts:
        password = opts.text("password")
    if password is not None and user is None:
        raise errors.ValidationError("etcd:// password given without a user")
    addresses = split_hosts(hosts or f"127.0.0.1:{DEFAULT_PORT}", DEFAULT_PORT, "etcd://")
    if not addresses:
        raise errors.ValidationError(f"empty host in etcd URL {redact(url)!r}")
    endpoints = tuple(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in addresses)
    tls = scheme == "etcd+https" or opts.flag("tls", any(k in opts for k in ("ca", "cert", "key")))
    if ("cert" in opts) != ("key" in opts):
        raise errors.ValidationError("etcd:// options cert and key go together (client certificate and its key)")

    def read(name: str) -> bytes | None:
        path = opts.text(name)
        if not path:
            return None
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except OSError as exc:
            raise errors.ValidationError(f"cannot read the etcd:// {name} file {path!r}: {exc.strerror}") from None

    ca, cert, key = read("ca"), read("cert"), read("key")  # each readable: OSError named above
    if tls:
        given = {name: opts.text(name) if name in opts else None for name in ("ca", "cert", "key")}
        check_tls_files("etcd://", ("ca", given["ca"]), ("cert", given["cert"]), ("key", given["key"]))
    settings = EtcdSettings(
        endpoints=endpoints,
        tls=tls,
        ca=ca,
        cert=cert,
        key=key,
        user=user,
        password=password,
        # At most a day, as retry_deadline: gRPC took 1e10 s for a deadline already past (its nanoseconds
        # overflow), so a live cluster was "unavailable" at connect.
        timeout=opts.number("timeout", 2.0, minimum=0.05, maximum=86_400.0),
        retry=opts.retry_policy(EtcdSettings.default_retry(len(endpoints))),
        max_txn_ops=opts.integer("max_txn_ops", 128, minimum=4),
        max_request_bytes=opts.integer("max_request_bytes", 1_572_864, minimum=65_536),
        group_commit=opts.integer("group_commit", EtcdSettings.group_commit, minimum=0),
    )
    path = check_unicode("etcd:// URL path", unquote(parts.path).strip("/"))
    prefix = f"{path}/" if path else DEFAULT_PREFIX
    namespace = opts.namespace()
    if namespace:
        prefix = f"{prefix}{namespace}/"
    # At most a day: a watch's poll(None) waits this long for a response, and a queue's wait past
    # threading.TIMEOUT_MAX raises OverflowError (on servers where progress requests are safe).
    return settings, prefix, opts.number("progress_interval", 5.0, minimum=0.0, maximum=86_400.0)


_new_tuple = tuple.__new__


def _kv(kv: wire.KV) -> KeyValue:
    return KeyValue(kv.key.decode(errors="replace"), kv.value, kv.version, kv.mod_revision)


def _kvs(kvs: list[wire.KV]) -> list[KeyValue]:
    """:func:`_kv` of each of a range's keys, without a Python call per key (a list's, a cache load's)."""
    return [_new_tuple(KeyValue, (key.decode(errors="replace"), value, version, mod))
            for key, _, mod, version, value, _ in kvs]  # fmt: skip


def _id_bound(base: bytes, value: int, digits: int) -> bytes | None:
    """The key where ids of ``digits`` hex digits after ``base`` reach ``value`` (``base`` and ``value`` in
    ``digits`` hex digits); None from ``16**digits`` on, past every such id."""
    return base + b"%0*x" % (digits, value) if value < 16**digits else None


def _large(base: bytes, first: list[wire.KV], count: int) -> bool:
    """Whether the table ``base`` is large by its probe range ``[7f, 81)`` (see ``EtcdBackend._first_pages``): its
    ``count`` keys are more than ``_SPLIT_PAGES`` pages themselves, or say the table holds that many as random ids
    spread (``_PROBE_SHARE`` ids a key) and are spread on both sides of ``7fff``: its ``first`` ``_BEFORE`` keys lie
    below it (random ids of a table that large put some 31 or more there, fewer than 4 about once in 1e10). Ids
    clustered from ``7fff`` on (UUIDv1s made in one burst across that moment of their clock: 100 of them are no
    12,800 spread ids) are no sign of a large table."""
    pages = _SPLIT_PAGES * _PAGE
    if count > pages:
        return True
    return count * _PROBE_SHARE > pages and len(first) == _BEFORE and first[-1].key < base + _PROBE


def _shared(a: bytes, b: bytes) -> bytes:
    """The longest prefix of ``a`` that ``b`` starts with."""
    n = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return a[:n]


def _absent_keys(conditions: Sequence[Condition], token_key: str | None) -> list[str]:
    """The keys of the absence checks that may merge into range compares.

    Not the commit token's: its exact check is what makes a commit apply once.
    """
    return [c.key for c in conditions if isinstance(c, VersionIs) and c.version == 0 and c.key != token_key]


def _utf8_len(key: str) -> int:
    """The bytes ``key`` takes on the wire: its length for ASCII, else its UTF-8 form's (up to 4 a character)."""
    return len(key) if key.isascii() else len(key.encode())


def _txn_bytes(commit: KeyCommit, lock_key: Callable[[str], str]) -> int:
    """The bytes a commit adds to a transaction, generously (the byte limit keeps a tenth in reserve besides).

    Every key the request carries: a range compare's end repeats its prefix, a fence compares the lock's key
    with its token, and the commit token's key is compared, put and read on failure (``with_token_key`` is
    applied only as the group is sent). A group is admitted by this sum and sent as one request.
    """
    size = sum(_utf8_len(k) + len(v) for k, v in commit.puts.items()) + sum(_utf8_len(k) for k in commit.deletes)
    for c in commit.conditions:
        if isinstance(c, PrefixUnchangedSince):
            size += 2 * _utf8_len(c.prefix) + 16  # [prefix, prefix_end), and a revision and two enums
        elif isinstance(c, LeaseHeld):
            size += _utf8_len(lock_key(c.name)) + len(c.token)
        elif isinstance(c, ValueIs):
            size += _utf8_len(c.key) + len(c.value)
        else:
            size += _utf8_len(c.key)
    ops = len(commit.conditions) + write_count(commit.puts, commit.deletes) + 1  # and its nested transaction
    if commit.token is not None:
        size += 3 * _utf8_len(commit.token.key) + len(APPLIED)
        ops += 3
    # Each operation's own framing, generously: it covers the few bytes a nested transaction adds too.
    return size + 16 * ops


def _encode_nested(items: Sequence[bytes | txnshape.Nested[bytes]]) -> list[bytes]:
    """Request ops, each nested transaction encoded as one (without compares: it always applies)."""
    return [
        item if isinstance(item, bytes) else wire.request_txn(wire.txn_request([], _encode_nested(item.items)))
        for item in items
    ]


def _compare(condition: Condition, lock_key: Callable[[str], str]) -> bytes:
    if isinstance(condition, VersionIs):
        return wire.compare(condition.key.encode(), wire.TARGET_VERSION, wire.CMP_EQUAL, condition.version)
    if isinstance(condition, Exists):
        return wire.compare(condition.key.encode(), wire.TARGET_VERSION, wire.CMP_GREATER, 0)
    if isinstance(condition, WrittenAt):
        # The key's mod_revision (0 when absent: unequal), in place of its version's compare: one compare still.
        return wire.compare(condition.key.encode(), wire.TARGET_MOD, wire.CMP_EQUAL, condition.revision)
    if isinstance(condition, ValueIs):
        # A released claim still names its holder (an absent key compares unequal): one compare.
        return wire.compare(condition.key.encode(), wire.TARGET_VALUE, wire.CMP_EQUAL, condition.value)
    if isinstance(condition, LeaseHeld):
        # The lock's key holds the holder's token while its lease lives (an absent key compares unequal).
        return wire.compare(lock_key(condition.name).encode(), wire.TARGET_VALUE, wire.CMP_EQUAL, condition.token)
    if isinstance(condition, PrefixUnchangedSince):
        # Over a range, every key must satisfy the compare; an empty range compares as
        # an absent key (mod_revision 0), so "nothing under the prefix" also holds.
        prefix = condition.prefix.encode()
        return wire.compare(
            prefix, wire.TARGET_MOD, wire.CMP_LESS, condition.revision + 1, range_end=wire.prefix_end(prefix)
        )
    raise TypeError(f"unknown condition {condition!r}")


class EtcdBackend(KeyValueBackend):
    """nbdb on etcd v3: commits are etcd transactions and the nbdb revision is etcd's revision."""

    topic_wildcard: ClassVar[bool] = True  # a one-table scan reads that table under each topic (see _concrete)

    capabilities: ClassVar[Capabilities] = Capabilities(
        transactions=Atomicity.ATOMIC,
        linearizable_reads=True,
        server_side_topic_filter=True,
        durability=Durability.DURABLE,
        history="until etcd compacts it (--auto-compaction-*; etcd keeps all history by default)",
        cross_process=True,
        unique=True,
        fencing=True,
        expiry=Expiry.REAPER,
        pages=True,
        max_txn_ops=128,
        max_txn_bytes=1_400_000,
        cas_across_recreate=True,
        notes="A transaction is one etcd Txn, so it is limited by the server's --max-txn-ops (128 by default) "
        "and --max-request-bytes (1.5 MiB); max_txn_ops counts as etcd does, nested transactions included: "
        "a commit's writes nest and the absence checks of its creates merge into key ranges, so one transaction "
        "takes hundreds of creates (100 ports and more), 127 updates or 63 deletes (42 of objects holding a unique "
        "value each, 31 holding two: each value released is one compare). A watch of "
        "several topics follows the smallest key range covering them and drops the other topics' keys on the "
        "client. Lock TTLs are whole seconds, at least the server's minimum lease TTL.",
    )

    commit_tokens = True

    def __init__(self, client: EtcdClient, key_prefix: str = DEFAULT_PREFIX, progress_interval: float = 5.0) -> None:
        super().__init__(key_prefix, client.settings.policy)
        self.client = client
        self.group_commit = client.settings.group_commit
        # The limits are the server's flags, which the URL can say were raised.
        settings = client.settings
        if (settings.max_txn_ops, settings.max_request_bytes) != (128, 1_572_864):
            # This instance declares the limits its URL gives (the class declares the defaults).
            vars(self)["capabilities"] = dataclasses.replace(
                type(self).capabilities,
                max_txn_ops=settings.max_txn_ops,
                max_txn_bytes=settings.max_request_bytes * 9 // 10,
            )
        self._read_ops = self.capabilities.max_txn_ops or _MAX_TXN_OPS
        """How many ranges one read-only transaction holds: the URL's max_txn_ops, less if the server refused it."""
        self.page_reads = max(1, self._read_ops - 1)
        """First pages a listing reads a round trip (_first_pages): one fewer than ranges (a nested form's need)."""
        self.progress_interval = progress_interval
        self.safe_progress = False
        self.server_version = ""
        self._leases: dict[tuple[str, bytes], int] = {}  # (lock key, holder's token) -> etcd lease
        self._leases_lock = threading.Lock()
        self._topics: Registrations[None] = Registrations()
        """The topics this client put in the registry (``p/<topic>``, see _register; registered one
        request at a time: none in flight) and when it last checked each for :meth:`_prune`."""
        # Commit tokens ride on one lease, replaced halfway through its life, so that
        # every token lives between token_ttl and twice that, at one grant per token_ttl/2.
        self._token_lease = (0, 0.0)

    def __repr__(self) -> str:
        return f"EtcdBackend(endpoints={list(self.client.settings.endpoints)!r}, prefix={self.key_prefix!r})"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> EtcdBackend:
        """Open ``etcd://[user:password@]host[:port][,host[:port]...][/prefix][?options]``.

        See docs/backends/etcd.md for the options. Connects (and authenticates)
        at once: an unreachable cluster raises BackendUnavailableError and
        wrong credentials AuthError.
        """
        settings, prefix, progress = parse_url(url, options)
        client = EtcdClient(settings)
        backend = cls(client, prefix, progress)
        try:
            client.ensure_token()
            _, version, _ = client.status()
        except BaseException:
            client.close()
            raise
        backend.server_version = version
        backend.safe_progress = safe_progress_requests(version)
        log.debug("etcd: connected to %s (etcd %s)", client.current_endpoint(), version)
        return backend

    # ---------------------------------------------------------------- primitives

    def get_key(self, key: str) -> KeyValue | None:
        _, kvs, _, _ = self.client.range(key.encode())
        return _kv(kvs[0]) if kvs else None

    def get_keys(self, keys: Sequence[str]) -> list[KeyValue | None]:
        # Read-only transactions of as many point reads as the scans send (_read_txn: fewer if refused), and no
        # more bytes than a commit may send (_fitting).
        out: list[KeyValue | None] = []
        while len(out) < len(keys):
            reads = self._fitting([wire.request_range(k.encode()) for k in keys[len(out) : len(out) + self._read_ops]])
            if (got := self._read_txn(reads)) is not None:
                out += [_kv(kvs[0]) if kvs else None for kvs in got[1]]
        return out

    def range_keys(self, prefixes: Sequence[str]) -> tuple[list[KeyValue], int]:
        if not prefixes:
            return [], self.revision_now()
        for attempt in range(3):
            revision = 0
            out: list[KeyValue] = []
            try:
                concrete, revision, whole, topics = self._concrete(prefixes)
                # The first page of each prefix (a table under each topic, or each table of a cache) in read-only
                # transactions (200 topics: 2 round trips, not 200), none counting a large table whole
                # (_first_pages); then the rest of a full one, a large one's as sub-ranges of its ids at once.
                spans = [(p.encode(), wire.prefix_end(p.encode())) for p in concrete]
                first = max(16, _PAGE // max(1, len(spans)))
                pages, revision = self._first_pages(spans, first, revision)
                for (base, end), (kvs, step, left) in zip(spans, pages, strict=True):
                    out += _kvs(kvs)
                    if left is not None:  # a full plain first page: the rest read as its count says
                        revision = self._read_rest(kvs, end, base, left, revision, out)
                    elif len(kvs) == first:  # the large table's first step holds more
                        revision = self._read_span(kvs[-1].key + b"\0", step or end, base, revision, out)
                    if step is not None:
                        revision = self._read_span(step, end, base, revision, out, split=True)
                objects = self.layout.objects
                if whole is not None:  # too many topics: o/ was read whole, and only the tables asked for are kept
                    out = [kv for kv in out if not outside_tables(kv.key, objects, whole)]
                if topics:
                    held = topics_of(objects, (kv.key for kv in out))
                    self._prune([t for t in topics if t not in held], revision)
                return out, revision
            except errors.HistoryGoneError:
                # Compacted while paging through one snapshot: read a newer one.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _first_pages(
        self, spans: Sequence[tuple[bytes, bytes]], limit: int, revision: int
    ) -> tuple[list[tuple[list[wire.KV], bytes | None, int | None]], int]:
        """The first page of each table ``[base, end)`` at ``revision`` (0: now), none counting a large table whole.

        etcd 3.4 counts every key from a range's start to its end, whatever the limit: one read of a
        table's first page counts the table (a million keys: 2-3 s, past nbdb's default 2 s request).
        So a large table's first page is read from its first step ``[base, base + "0001")`` only,
        which counts about N/65,536 keys. Large means that one of its ids starts with ``_PROBE`` (ids
        are UUIDs: a table of N ids holds one there with probability about 1 - e^(-N/65,536); 78 % of
        tables of 100,000 ids, all but every one of 1M) and that the keys of its probe range, the ids
        that start with ``7f`` or ``80`` (``_PROBE_FROM``, ``_PROBE_END``: one random id in ``_PROBE_SHARE``),
        say it holds more than ``_SPLIT_PAGES`` pages: they are that many, or enough as random ids spread
        and spread below ``7fff`` too (:func:`_large`; 1M ids: about 7,800 keys counted, 4 returned; UUIDv1s
        made in one burst across ``7fff…``, clustered from there on, are no large table). A
        short table with an id there (one id in 65,536: a list of one table across 40 topics of one
        object each met one about once in 1,600) was read as a large one, its rest in 16 sub-ranges
        one request after another (20 requests for that list, not 3); now it is read as the others
        are, in the second transaction. Up to ``_read_ops`` tables a round trip, in
        one read-only transaction whose compares ask whether no table holds such an id (each compare
        reads those few keys): if none does (tables of some thousands of keys, most likely), it reads
        every table's plain first page, as one read did before; if one does, it reads instead each
        table's probe range (its first ``_BEFORE`` keys and count; a table without a ``7fff`` id in a
        batch with one is judged by it as well), and a second transaction reads each large
        table's first step and the others' plain first pages. Plain ranges only: etcd serves a transaction of
        ranges as a read; one of nested transactions (which could pick per table) went through raft,
        a proposal and a disk write for each list of several tables.
        Either way the keys returned are the first of the table (the step is where it starts);
        returns, for each table, them, the end of the step (None: the read was the table's plain
        first page) and, for a full plain first page, how many keys of the table are left past it
        (from its count, which etcd paid for anyway; else None), and the revision read, which every
        read is at. The probe only picks the read: a
        wrong guess costs round trips (or, for the plain read, the count of the table as before),
        never keys. ``7fff``, not ``0000``: ids that are counters (``0000…``, dense there: a compare
        would read them all) or time-ordered (UUIDv7: ``01…`` today) leave it empty and are read as
        before (their first page counts the table, once: its count then says how to read the rest,
        :meth:`_read_rest`). No read that returns a short table whole in one round trip can tell a
        large table of ids clustered under an unknown prefix from it without counting it: a probe
        for the prefix (bisecting key bytes) would cost every short table round trips.
        """
        out: list[tuple[list[wire.KV], bytes | None, int | None]] = []
        while len(out) < len(spans):
            batch = spans[len(out) : len(out) + self._read_ops]
            parts = []
            for base, end in batch:
                probe = base + _PROBE
                parts.append(
                    (
                        wire.compare(probe, wire.TARGET_VERSION, wire.CMP_EQUAL, 0, range_end=wire.prefix_end(probe)),
                        wire.request_range(base, end, limit=limit, revision=revision),
                        wire.request_range(
                            base + _PROBE_FROM, base + _PROBE_END, limit=_BEFORE, revision=revision, keys_only=True
                        ),
                    )
                )
            parts = parts[: txnshape.fitting(parts, self.capabilities.max_txn_bytes, lambda p: len(p[0]) + len(p[1]))]
            batch = batch[: len(parts)]
            request = wire.txn_request([p[0] for p in parts], [p[1] for p in parts], [p[2] for p in parts])
            try:
                header, small, ranges, reply = self.client.read_txn(request)
            except errors.ValidationError as exc:
                self._refused(exc, len(parts))
                continue
            revision = revision or header.revision
            if small:
                full = any(len(kvs) == limit for kvs in ranges)
                counts = wire.range_counts(reply) if full else [0] * len(ranges)
                out += [
                    (kvs, None, count - len(kvs) if len(kvs) == limit else None)
                    for kvs, count in zip(ranges, counts, strict=True)
                ]
                continue
            probed = zip(batch, ranges, wire.range_counts(reply), strict=True)
            steps = [
                _id_bound(base, 1, _FIRST_STEP_DIGITS) if _large(base, first, count) else None
                for (base, _), first, count in probed
            ]
            reads = [(base, end if step is None else step) for (base, end), step in zip(batch, steps, strict=True)]
            got, revision = self._read_many(reads, limit, revision)
            out += [(kvs, step, None) for kvs, step in zip(got, steps, strict=True)]
        return out, revision

    def _read_span(
        self, start: bytes, end: bytes, base: bytes | None, revision: int, out: list[KeyValue], split: bool = False
    ) -> int:
        """Every key of ``[start, end)`` at ``revision`` (0: now) appended to ``out`` in order; the revision read.

        etcd 3.4 walks every key from a page's start to the range's end to count them (whatever the
        limit), so pages of one range cost the rest of the range each: quadratic in the table. When the
        first page's count says more than ``_SPLIT_PAGES`` pages are left, the rest is read as the
        sub-ranges ``[base + c, base + c')`` for consecutive ``c`` of ``_SPLIT_DIGITS`` (ids are UUIDs:
        about a sixteenth each), each the same way, so a page counts only its own sub-range. The
        sub-ranges, with the stretches before the first and after the last (read in plain pages), cover
        ``[start, end)`` exactly whatever the keys; ids that share leading digits split again one digit
        deeper, keys of other digits land in the stretches; ids that share more than ``_CLUSTER``
        characters past ``base`` (one sub-range of each digit holds them all) are read on upwards
        from the page instead (:meth:`_read_ladder`). ``base``: where the digits go (the table's
        prefix at first; None: plain pages only). ``split``: read as sub-ranges at once (``base`` given:
        the range is known to be large), without a first page.
        """
        page = _PAGE
        while True:
            if not split:
                header, kvs, more, count = self.client.range(start, end, limit=page, revision=revision)
                revision = revision or header.revision
                out += _kvs(kvs)
                if not more or not kvs:
                    return revision
                start = kvs[-1].key + b"\0"
                split = count - len(kvs) > _SPLIT_PAGES * _PAGE
                if split and base is not None and self._clustered(kvs, base):
                    return self._read_ladder(start, end, base, kvs, count - len(kvs), revision, out)
            if base is not None and split and len(base) < _SPLIT_DEPTH:
                bounds = [_id_bound(base, d, 1) or wire.prefix_end(base) for d in range(17)]
                pieces = [(None, b"", bounds[0])] + [(low, low, high) for low, high in pairwise(bounds)]
                pieces.append((None, bounds[-1], end))  # keys past base's (none under a table's prefix)
                for sub_base, low, high in pieces:
                    low, high = max(low, start), min(high, end)
                    if low < high:
                        revision = self._read_span(low, high, sub_base, revision, out)
                return revision
            split = False
            page = min(page * 2, _MAX_PAGE)

    @staticmethod
    def _clustered(kvs: list[wire.KV], base: bytes) -> bool:
        """Whether a page's keys share more than ``_CLUSTER`` characters past ``base`` (see :meth:`_read_ladder`)."""
        return len(base) + _CLUSTER < len(_shared(kvs[0].key, kvs[-1].key)) < _SPLIT_DEPTH

    def _read_rest(
        self, kvs: list[wire.KV], end: bytes, base: bytes, left: int, revision: int, out: list[KeyValue]
    ) -> int:
        """The ``left`` keys of ``[base, end)`` past its full first page ``kvs`` (whose count said how many) appended
        to ``out``; the revision read. Few: in plain pages; ids clustered on a prefix: upwards from the page
        (:meth:`_read_ladder`); else as sub-ranges of the ids' leading digits at once (:meth:`_read_span`)."""
        start = kvs[-1].key + b"\0"
        if left <= _SPLIT_PAGES * _PAGE:
            return self._read_span(start, end, base, revision, out)
        if self._clustered(kvs, base):
            return self._read_ladder(start, end, base, kvs, left, revision, out)
        return self._read_span(start, end, base, revision, out, split=True)

    def _read_ladder(
        self, start: bytes, end: bytes, base: bytes, kvs: list[wire.KV], left: int, revision: int, out: list[KeyValue]
    ) -> int:
        """The ``left`` keys of ``[start, end)`` at ``revision`` appended to ``out``, read on from a page ``kvs`` whose
        keys all share a prefix ``shared`` (``base`` and more than ``_CLUSTER`` characters); the revision read.

        Ids that share leading characters past a range's next digit (counters' UUIDs, ``00000000-0000-…``;
        time-ordered ones, UUIDv7's ``01…``; names) sit in one or two of that digit's sub-ranges, and
        splitting one digit deeper at a time counted the whole cluster once a digit (a list of 100,000
        counters' ids walked 1.3 million keys). So the rest is read upwards from the page, one character at
        a time: the rest of the ids that share ``shared``, then those that share all but its last
        character, and so on back to ``base``. Each step is a range of ids that share its prefix: read as
        :meth:`_read_span` reads a range (a first page, sub-ranges of its digits if long), whole if the
        keys left are few, as sub-ranges of its digits at once if not, and none once ``left`` keys came
        (every read is at one revision: the first page's count is the range's). The steps cover
        ``[start, end)`` exactly whatever the keys.
        """
        shared = _shared(kvs[0].key, kvs[-1].key)
        want = len(out) + left
        for n in range(len(shared), len(base) - 1, -1):
            high = min(end, wire.prefix_end(shared[:n]))
            if start < high:
                many = want - len(out) > _SPLIT_PAGES * _PAGE
                revision = self._read_span(start, high, shared[:n], revision, out, split=many)
                start = high
            if len(out) >= want:
                return revision
        return self._read_span(start, end, None, revision, out) if start < end else revision

    def _concrete(self, prefixes: Sequence[str]) -> tuple[list[str], int, tuple[str, ...] | None, list[str] | None]:
        """``prefixes`` with each ``o/*/<table>/`` (kvplan.ANY_TOPIC) spelled out for every topic present.

        Returns them, the revision the topics were read at (0 if none was read: no wildcard), None
        and the topics (None: no wildcard); or, past :data:`TOPIC_PROBES` topics, ``o/`` in place
        of the wildcards, the ``<table>/`` parts the range keeps of it and None. The topics are
        :meth:`object_topics`' at one revision, which the rest of the range reads at too.
        """
        objects = self.layout.objects
        tables = [t for p in prefixes if (t := wildcard_split(p, objects)) is not None]
        if not tables:
            return list(prefixes), 0, None, None
        rest = [p for p in prefixes if wildcard_split(p, objects) is None]
        topics, revision = self.object_topics(0)
        if topics is None:
            return [*rest, objects], revision, tuple(tables), None
        spelled = [f"{objects}{topic}/{table}" for table in tables for topic in topics]
        return [*rest, *spelled], revision, None, topics

    def object_topics(self, revision: int) -> tuple[list[str] | None, int]:
        """The topics with keys under ``o/`` at ``revision`` (0: now): the registry's, and any other writer's.

        The registry (``p/<topic>``, see :meth:`_register`) is read first; then each gap between
        its topics' ranges is probed for a key (one key per reply, at that revision): a topic
        no commit of nbdb registered (another writer's keys, or data written before the
        registry) is found there, and registered. A probe costs etcd a walk of the index of every
        key in its range (etcd counts them): a probe over ``o/`` whole, the family's skip scan,
        cost 100 to 400 ms beside 100,000 ports, the gaps between registered topics hold no key.
        """
        objects = self.layout.objects
        marks = self.layout.topic_marks
        header, kvs, _, _ = self.client.range(marks.encode(), wire.prefix_end(marks.encode()), revision=revision)
        revision = revision or header.revision
        # A registry key no topic spells (a '/' in it: another writer's) is skipped (see kvregistry.parse_marks).
        names, foreign = parse_marks(marks, (kv.key.decode(errors="replace") for kv in kvs))
        if foreign:
            log.warning("etcd: registry keys %s name no topic (another writer's?): ignored", sorted(foreign))
        registered, between = gaps(objects, names)
        found = [start[len(objects) : -1] for start in registered]
        low, high = objects.encode(), wire.prefix_end(objects.encode())
        spans = [
            (low if after is None else wire.prefix_end(after.encode()), high if before is None else before.encode())
            for after, before in between
        ]
        strays: list[str] = []
        # Every gap probed at once (read-only transactions); a gap that holds a key is walked on.
        spans = [(start, end) for start, end in spans if start < end]
        firsts, revision = self._read_many(spans, 1, revision)
        for (start, end), got in zip(spans, firsts, strict=True):
            while got:
                topic = topic_of(objects, got[0].key.decode(errors="replace"))
                strays.append(topic)
                if len(strays) > TOPIC_PROBES:
                    # o/ is read whole; what was found is registered all the same, so that the scans
                    # after this one find fewer topics outside the registry, until none (a namespace
                    # of many topics written before the registry is not probed and read whole forever).
                    self._adopt(strays)
                    return None, revision
                start = wire.prefix_end(f"{objects}{topic}/".encode())
                if not start < end:
                    break
                _, got, _, _ = self.client.range(start, end, limit=1, revision=revision)
        if strays:
            self._adopt(strays)
        return [*found, *strays], revision

    def _read_many(
        self, spans: Sequence[tuple[bytes, bytes]], limit: int, revision: int
    ) -> tuple[list[list[wire.KV]], int]:
        """The first ``limit`` keys of each ``[start, end)`` at ``revision`` (0: now), and the revision read.

        Sent together, as read-only transactions of at most ``max_txn_ops`` ranges (128), each at
        one revision (the first one's, if ``revision`` is 0): a round trip per 128 ranges. A server
        that refuses that many (its --max-txn-ops is lower than the URL says) gets half as many,
        and this client sends no more from then on: a read is no commit, and splitting it changes
        nothing but its round trips (the URL's ``max_txn_ops`` still bounds commits). Nor more bytes than a
        commit may send (:meth:`_fitting`).
        """
        out: list[list[wire.KV]] = []
        done = 0
        while done < len(spans):
            chunk = spans[done : done + self._read_ops]
            reads = self._fitting(
                [wire.request_range(start, end, limit=limit, revision=revision) for start, end in chunk]
            )
            got = self._read_txn(reads)
            if got is None:
                continue
            header, ranges = got
            revision = revision or header.revision
            out += ranges
            done += len(reads)
        if not spans and not revision:
            revision = self.revision_now()
        return out, revision

    def _fitting(self, reads: list[bytes]) -> list[bytes]:
        """The first of ``reads`` that one transaction holds within the URL's request bytes (``max_txn_bytes``, as
        a commit; at least one). etcd refuses a read-only transaction larger than --max-request-bytes (and
        gRPC's margin) as it does a commit: ``max_txn_ops`` ranges of long keys may be."""
        return reads[: txnshape.fitting(reads, self.capabilities.max_txn_bytes)]

    def _read_txn(self, reads: Sequence[bytes]) -> tuple[wire.Header, list[list[wire.KV]]] | None:
        """The header and ranges of one read-only transaction of ``reads``; None if the server refused that many
        (see :meth:`_refused`)."""
        try:
            header, _, ranges, _ = self.client.txn(wire.txn_request([], reads), write=False)
        except errors.ValidationError as exc:
            self._refused(exc, len(reads))
            return None
        return header, ranges

    def _refused(self, exc: errors.ValidationError, ops: int) -> None:
        """``exc`` raised unless the server refused a read-only transaction of ``ops`` operations as too many (its
        --max-txn-ops is lower than the URL says): it gets half as many from now on (``_read_ops``)."""
        if ops == 1 or "too many operations" not in str(exc):
            raise exc
        self._read_ops = max(1, ops // 2)
        log.warning("etcd: the server refused %d ranges in one transaction: %d from now on", ops,
                    self._read_ops)  # fmt: skip

    def _prune(self, candidates: list[str], revision: int) -> None:
        """Delete the registry keys of the ``candidates`` (topics a scan found none of its tables' keys under at
        ``revision``) whose topic holds no key at all, so that scans stop reading a range per dead topic.

        Only from :data:`_PRUNE_FROM` such topics: fewer dead keys cost a scan a few ranges inside
        transactions it sends anyway (31: a list of 10 routers 2.18 ms against 1.62, see
        benchmarks/etcd_prune_from.py), while the check is a read of one key under each ``o/<topic>/``
        at ``revision``, which etcd answers by walking every key of the topic (10,000 ports beside
        routers: 6 ms more for a list of routers). Each topic is checked at most once a minute by this
        client (a table most topics hold none of costs one more read a minute, not one per scan), and
        first a minute after this client first found it a candidate: a new client's first lists never
        pay it (40 topics of 1,000 switches: a fresh client's first list of routers took 23 ms with
        the check, 5.9 without).
        Then, for the empty ones, one transaction of nested ones, each deleting
        ``p/<topic>`` only if ``o/<topic>/`` is still empty and the key was not put again since
        ``revision`` (a create that registered since keeps it). A create whose registration came
        before and whose object comes after finds its topic outside the registry: the next scan
        finds it by a gap probe and registers it again (:meth:`object_topics`), so no object is missed.
        Best effort: an error leaves the registry as it was.
        """
        # A topic is first checked a period after this client first found it a candidate: a client that
        # lives less (a CLI call, a short job) never pays the walk; one that runs on prunes for all.
        now = time.monotonic()
        due = self._topics.due(candidates, now, _PRUNE_FROM, _PRUNE_EVERY)
        if not due:
            return
        objects = self.layout.objects
        budget = self.capabilities.max_txn_bytes
        checks = []
        for t in due:
            start, end = f"{objects}{t}/".encode(), wire.prefix_end(f"{objects}{t}/".encode())
            checks.append((t, start, end, wire.request_range(start, end, limit=1, revision=revision, keys_only=True)))
        try:
            # The scan's own reads found the server's limit; long keys take more transactions (max_txn_bytes).
            for chunk in txnshape.split(checks, self._read_ops, budget, lambda check: len(check[3])):
                _, _, ranges, _ = self.client.txn(wire.txn_request([], [c[3] for c in chunk]), write=False)
                self._topics.checked_at((c[0] for c in chunk), now)
                dead = [(t, start, end) for (t, start, end, _), got in zip(chunk, ranges, strict=True) if not got]
                if not dead:
                    continue
                self._topics.forget(t for t, _, _ in dead)
                nested = []
                for t, start, end in dead:
                    mark = self.layout.topic_mark(t).encode()
                    empty = wire.compare(start, wire.TARGET_VERSION, wire.CMP_EQUAL, 0, range_end=end)
                    unchanged = wire.compare(mark, wire.TARGET_MOD, wire.CMP_LESS, revision + 1)
                    delete = [wire.request_delete(mark)]
                    nested.append((t, wire.request_txn(wire.txn_request([empty, unchanged], delete))))
                # etcd lets a nested transaction hold max_txn_ops less its parent's operations: 2 compares each.
                for part in txnshape.split(nested, self._read_ops - 2, budget, lambda item: len(item[1])):
                    _, answers, _ = self.client.nested_txns(wire.txn_request([], [n for _, n in part]))
                    pruned = [t for (t, _), (done, _) in zip(part, answers, strict=False) if done]
                    log.debug("etcd: topics %s hold no object: their registry keys were deleted", pruned)
        except errors.NbdbError:
            log.debug("etcd: could not prune the registry of topics %s", due, exc_info=True)

    def _adopt(self, strays: list[str]) -> None:
        """Register ``strays``, topics a scan found holding objects outside the registry."""
        log.info(
            "etcd: topics %s hold objects but are not registered (created while a scan pruned them, or another "
            "writer's): registering",
            strays,
        )
        # a registry key deleted by hand (or pruned by another client) since this client put it is put again
        self._register(self._topics.adopt(strays), quiet=True)

    def commit(self, ops: Sequence[WriteOp]) -> CommitResult:
        self._register_created(ops)
        return super().commit(ops)

    def commit_fenced(self, ops: Sequence[WriteOp], fence: LockHandle) -> CommitResult:
        self._register_created(ops)
        return super().commit_fenced(ops, fence)

    def _register_created(self, ops: Sequence[WriteOp]) -> None:
        """:meth:`_register` the topics of the objects ``ops`` create that this client has not registered."""
        known = self._topics.registered
        new = [
            part
            for op in ops
            if type(op) is Put and op.expect_version == 0 and (part := rules.topic_part(op.topic)) not in known
        ]
        if new:
            self._register(new)

    def _register(self, topics: Sequence[str], quiet: bool = False) -> None:
        """Put ``p/<topic>`` of each topic this client has not registered yet, before the commit that uses it.

        Its own request (an idempotent put, before the objects: at every revision an object of
        the topic exists, the topic is registered), once per topic and client: a commit at the
        store's operation limit still fits. A put whose outcome is unknown (its reply lost past the
        client's tries) is sent once more at once, before the objects: the same put, so landing
        twice changes nothing, and its answer says the key is there (registered here, no put on
        the next create, and a put that had not landed lands before the objects, so no scan has
        to find the topic by its gap probes and adopt it). Unknown again: the topic stays
        unmarked here (the next create puts it again; a scan meanwhile finds it by a probe).
        ``quiet``: a scan's, whose failure to write (a reader's credentials) leaves the scan as it was.
        """
        new = self._topics.new(topics)
        mark = self.layout.topic_mark
        # Idempotent puts need no one transaction: as many as fit the URL's request bytes each (long keys:
        # a long URL path or namespace), and the commit of the objects is refused by the family if it is too large.
        for part in txnshape.split(new, len(new), self.capabilities.max_txn_bytes, lambda t: len(mark(t).encode()) + 8):
            puts = {mark(t): b"" for t in part}
            try:
                try:
                    self.commit_keys([], puts, [])
                except errors.CommitUnknownError:
                    log.info("etcd: the registry put of topics %s may not have landed: put again", part)
                    self.commit_keys([], puts, [])
            except errors.CommitUnknownError:
                continue
            except errors.NbdbError:
                if not quiet:
                    raise
                log.warning("etcd: could not register topics %s", part, exc_info=True)
                return
            self._topics.settled(part, registered=True)

    def range_page(self, prefix: str, after: str | None, limit: int, revision: int) -> tuple[list[KeyValue], int]:
        start = prefix.encode() if after is None else after.encode() + b"\0"
        end = wire.prefix_end(prefix.encode())
        if limit == 1:  # a skip scan's probe
            header, kvs, _, _ = self.client.range(start, end, limit=limit, revision=revision)
            return _kvs(kvs), revision or header.revision
        if after is None:  # a listing's first page: the table's, or its first step's, in one round trip
            pages, revision = self._first_listing_pages([(start, end)], limit, revision)
            return pages[0], revision
        out: list[KeyValue] = []
        base, key = prefix.encode(), after.encode()
        if key.startswith(base) and not _UUID4.fullmatch(key[len(base) :]):  # ids not known to spread: from key
            return out, self._read_up(key, end, base, limit, revision, out)
        return out, self._read_from(start, end, base, limit, revision, out)

    def _read_up(self, after: bytes, end: bytes, base: bytes, limit: int, revision: int, out: list[KeyValue]) -> int:
        """The first ``limit`` keys of ``[after + "\\0", end)`` at ``revision`` (0: now) appended to ``out``; the
        revision read.

        :meth:`_read_from` steps by the ids' first ``_STEP_DIGITS`` hex digits, which spread random UUIDs
        (v4) but not ids that share them (counters' UUIDs, ``00000000-0000-…``; time-ordered ones, UUIDv7's;
        names): its first step held the rest of the table, which etcd 3.4 counts whole for each page
        (paging a table: quadratic). So a page on from any other key is read upwards from it in the same
        steps over all of ``after``'s hex digits past ``base`` (its other characters kept: a step ends at
        ``after`` with a greater number in those digits, in order as keys of its shape are), the first one
        unit wide: from the keys just past ``after`` on; while steps come back empty each 16 times wider
        than the last (two a request), then as wide as the keys read say the page's room needs. A step
        counts only its own keys; the steps cover the range exactly whatever the keys (the last one
        reaches ``end``). Ids that vary far from their end (UUIDv7's milliseconds, 20 hex digits before
        it) take a request per 2 digits of empty steps. A key without hex digits is read on as before.
        """
        places = [i for i in range(len(base), len(after)) if after[i] in b"0123456789abcdef"]
        if not places:
            return self._read_from(after + b"\0", end, base, limit, revision, out)
        template = bytearray(after)

        def bound(value: int) -> bytes | None:
            if value >= 16 ** len(places):
                return None
            for i, c in zip(places, b"%0*x" % (len(places), value), strict=True):
                template[i] = c
            return bytes(template)

        at = int(bytes(after[i] for i in places) or b"0", 16)
        return self._read_steps(after + b"\0", end, bound, at, 1, limit, revision, out)

    def _read_from(
        self, start: bytes, end: bytes, base: bytes, limit: int, revision: int, out: list[KeyValue], read: int = 0
    ) -> int:
        """The first ``limit`` keys of ``[start, end)`` at ``revision`` (0: now) appended to ``out``; the revision read.

        etcd 3.4 walks every key from a range's start to its end to count them, whatever the limit,
        so one read of a page from ``start`` to the table's end costs the rest of the table (paging
        through it: quadratic). Ids are UUIDs, spread evenly over the values of their leading hex
        digits, so a page on from a key is read in steps ``[start, s1)``, ``[s1, s2)``... that end at
        ids of ``_STEP_DIGITS`` hex digits after ``base``. The first step is the rest of the ids that
        share ``start``'s leading hex digits (up to ``_STEP_DIGITS``); while steps come back empty
        (the ids' spread unknown) each is 16 times wider than the last, two to a request (a
        read-only transaction of their ranges); once keys came, one step as wide as they say the
        page's room needs (16 times the last at most). A step counts only its own keys, so a page
        walks about its own keys: at most the step that fills it, 16 times as wide as the one
        before, where ids cluster. The steps cover ``[start, end)`` exactly whatever the keys: keys
        that are no hex ids land in some step (the last one reaches ``end``). A listing's first page
        (:meth:`range_page` without ``after``) is :meth:`_first_pages`: a short table's only page costs
        one round trip. ``read``: keys read from ``base`` to ``start`` (a first page's step, which
        ends at a bound of ids): the steps on are as wide as they say the page's room needs.
        """
        digits = start[len(base) : len(base) + _STEP_DIGITS]
        known = next((i for i, c in enumerate(digits) if c not in b"0123456789abcdef"), len(digits))
        at = int(digits[:known] or b"0", 16) * 16 ** (_STEP_DIGITS - known)  # at or before start, in id digits
        step = 16 ** (_STEP_DIGITS - known) if known else 1  # no digits: from the first id on, widening
        return self._read_steps(
            start, end, lambda value: _id_bound(base, value, _STEP_DIGITS), at, step, limit, revision, out, read
        )

    def _read_steps(
        self,
        start: bytes,
        end: bytes,
        bound_of: Callable[[int], bytes | None],
        at: int,
        step: int,
        limit: int,
        revision: int,
        out: list[KeyValue],
        read: int = 0,
    ) -> int:
        """:meth:`_read_from`'s steps from ``start`` (at or past the id ``at``; the first ``step`` wide) to
        ``end``: ``bound_of`` gives the key where ids reach a value (None: past them all)."""
        first = 0 if read else at
        if read:
            step = max(1, min(step * 16, -(-(limit - len(out)) * at // read)))
        while True:
            # The steps of one request (a read-only transaction of their ranges): one as wide as the keys
            # so far say, or while none came (their spread unknown) two, the second 16 times wider.
            spans: list[tuple[bytes, bytes]] = []
            for rung in range(2):
                step *= 16 if rung else 1
                stop = at + step
                while (bound := bound_of(stop)) is not None and bound <= start:
                    step *= 16  # start is past these digits (a key that is no hex id): widen until it is not
                    stop = at + step
                high = end if bound is None else min(end, bound)
                spans.append((start, high))
                start, at = high, stop
                if read or high == end:
                    break
            got, revision = self._read_many(spans, limit - len(out), revision)
            came = sum(len(kvs) for kvs in got)
            for kvs in got:
                out += _kvs(kvs[: limit - len(out)])
            if len(out) >= limit or start == end:
                return revision
            read += came
            # As wide as the keys so far (over the ids from first to at) need to fill the room, at most 16 times
            # wider; 16 times wider after an empty step (past a cluster, its density says nothing of the rest).
            step = step * 16 if not came else max(1, min(step * 16, -(-(limit - len(out)) * (at - first) // read)))

    def range_pages(
        self, reads: Sequence[tuple[str, str | None]], limit: int, revision: int
    ) -> tuple[list[list[KeyValue]], int]:
        # One read-only transaction per max_txn_ops prefixes (a page across 200 small topics: 2 round trips, not 200).
        if len(reads) == 1:  # one table, or a page's first prefix on from the last page's key: read in steps
            kvs, revision = self.range_page(reads[0][0], reads[0][1], limit, revision)
            return [kvs], revision
        spans = [
            (prefix.encode() if after is None else after.encode() + b"\0", wire.prefix_end(prefix.encode()))
            for prefix, after in reads
        ]
        if all(after is None for _, after in reads):  # a listing's first pages: none counts a large table whole
            return self._first_listing_pages(spans, limit, revision)
        got, revision = self._read_many(spans, limit, revision)
        return [_kvs(kvs) for kvs in got], revision

    def _first_listing_pages(
        self, spans: Sequence[tuple[bytes, bytes]], limit: int, revision: int
    ) -> tuple[list[list[KeyValue]], int]:
        """The first ``limit`` keys of each table ``[base, end)`` at ``revision`` (0: now), and the revision read.

        Their first pages by :meth:`_first_pages` (one round trip for short tables); a large table's
        first step short of ``limit`` goes on in steps sized by the keys it held (:meth:`_read_from`).
        """
        pages, revision = self._first_pages(spans, limit, revision)
        out = []
        for (base, end), (kvs, step, _) in zip(spans, pages, strict=True):
            out.append(_kvs(kvs))
            if step is not None and len(kvs) < limit:
                revision = self._read_from(step, end, base, limit, revision, out[-1], len(kvs))
        return out, revision

    def commit_keys(
        self,
        conditions: Sequence[Condition],
        puts: Mapping[str, bytes],
        deletes: Sequence[str],
        token: CommitToken | None = None,
    ) -> int | None:
        return self._commit(KeyCommit(conditions, puts, deletes, token))

    def commit_with_token(
        self, conditions: Sequence[Condition], puts: Mapping[str, bytes], deletes: Sequence[str], token: CommitToken
    ) -> int | None:
        # The family's, without a second KeyCommit built from the first one's fields (every commit).
        return self._commit(KeyCommit(conditions, puts, deletes, token).with_token_key())

    def _commit(self, commit: KeyCommit) -> int | None:
        """:meth:`commit_keys` of ``commit``: one transaction, or None if a key it needs absent is there."""
        return self._on_a_live_token_lease(lambda: self._commit_as_planned(commit))

    def _on_a_live_token_lease(self, send: Callable[[], _T]) -> _T:
        """``send()``, sent again once on a new lease if etcd refused it because its tokens' lease is gone.

        The lease is granted for twice the tokens' ttl and replaced halfway, without keep-alives: one
        revoked (another client, an operator), or run out while this host slept (its monotonic clock
        stood still), made every commit a BackendUnavailableError until the next replacement, up to
        5 minutes. etcd checks a put's lease before it applies anything, so the refused commit is sent
        again, once, on a new lease (``send`` builds its request again).
        """
        try:
            return send()
        except errors.BackendUnavailableError as exc:
            if "requested lease not found" not in str(exc):
                raise
            with self._leases_lock:
                self._token_lease = (0, 0.0)
            log.info("etcd: the commit tokens' lease is gone (%s); granting another", exc)
        return send()

    def _commit_as_planned(self, commit: KeyCommit) -> int | None:
        budget = self.capabilities.max_txn_bytes
        exact, runs = self._merge_plan(commit)
        if runs and budget is not None:
            # Merged for the count: sized at the largest revision a compare can name before its keys are read,
            # so that a commit too large for the bytes as well reads its keys once, for the bytes' merge.
            largest = self._merged(exact, runs, _LARGEST_REVISION)
            if len(wire.txn_request(*self._txn_parts(commit, largest))) > budget:
                return self._send(commit, self._fitted_request(commit, budget))
        compares = self._read_merged(exact, runs)
        if compares is None:
            return None  # a key it needs absent was there: nothing was sent
        request = wire.txn_request(*self._txn_parts(commit, compares))
        if budget is not None and len(request) > budget:
            fitted = self._fitted_request(commit, budget)
            if fitted is None:
                return None
            request = fitted
        return self._send(commit, request)

    def _send(self, commit: KeyCommit, request: bytes | None) -> int | None:
        """``commit``'s outcome once ``request`` is sent; None (nothing sent) for no request."""
        if request is None:
            return None
        header, succeeded, ranges, maybe_applied = self.client.txn(request)
        return self._outcome(commit, succeeded, ranges, header.revision, maybe_applied)

    def _fitted_request(self, commit: KeyCommit, budget: int) -> bytes | None:
        """``commit``'s transaction, too large for ``budget`` bytes with a compare per absence check, with those
        merged into key ranges as :meth:`_fitted_compares` merges them for the count; None if a key checked
        absent is present. The family counts only a commit's puts against ``max_txn_bytes``: its compares
        repeat the keys it creates (a create of long keys, a long URL path or namespace, takes twice its
        puts' key bytes). ValidationError, before anything is written, if the commit cannot fit.
        """
        _, writes, failure = self._txn_parts(commit, [])
        room = budget - len(wire.txn_request([], writes, failure))
        compares = self._fitted_compares(commit, room)
        if compares is None:
            return None
        request = wire.txn_request(*self._txn_parts(commit, compares))
        if len(request) > budget:  # run_bytes is generous: not expected
            raise self._too_large(len(request), budget)
        return request

    def _too_large(self, size: int, budget: int) -> errors.ValidationError:
        return errors.ValidationError(
            f"this commit takes {size} bytes as one etcd transaction, even with its absence checks merged, and "
            f"{type(self).__name__} takes at most {budget} (max_txn_bytes, 9/10 of the URL's max_request_bytes): "
            "split it, or raise the server's --max-request-bytes and the backend's max_request_bytes option with it"
        )

    def store_ops(self, conditions: Sequence[Condition], puts: Mapping[str, bytes], deletes: Sequence[str]) -> int:
        """The operations etcd counts for this commit as :meth:`commit_keys` sends it (writes nested, checks merged)."""
        limit = self.capabilities.max_txn_ops
        writes = write_count(puts, deletes) + 1  # and the commit token's put, compare and read on failure
        count = txnshape.shape_writes(len(conditions) + 1, writes, 1, limit).count
        if limit is None or count <= limit:
            return count
        absent = _absent_keys(conditions, None)
        fewest = len(conditions) + 1 - len(absent) + txnshape.fewest_runs(absent)
        return txnshape.shape_writes(fewest, writes, 1, limit).count

    def _fitted_compares(self, commit: KeyCommit, room: int | None = None) -> list[bytes] | None:
        """The commit's compares, absence checks merged into as few ranges as it takes to fit the server's limit.

        ``room``: the most bytes the compares may take besides (None: the count alone bounds them). None if
        a key checked absent is present (the commit cannot apply). See
        :mod:`nbdb.backends.etcd.txnshape` for why a merged check is as strict.
        """
        return self._read_merged(*self._merge_plan(commit, room))

    def _merge_plan(self, commit: KeyCommit, room: int | None = None) -> tuple[list[bytes], list[list[str]]]:
        """:meth:`_fitted_compares` before its read: the compares kept exact, and the runs of absence checks
        merged (none: the exact compares are all). ValidationError if the commit cannot fit."""
        lock = self.layout.lock
        limit = self.capabilities.max_txn_ops
        writes = write_count(commit.puts, commit.deletes)
        failure = 0 if commit.token is None else 1
        low, high = 0, len(commit.conditions)
        if limit is None or txnshape.shape_writes(high, writes, failure, limit).count <= limit:
            if room is None:
                return [_compare(c, lock) for c in commit.conditions], []
            low = high  # the count fits as it is: only the bytes do not
        # The most compares that leave room for the writes (the count grows with the compares).
        while low < high and limit is not None:
            middle = (low + high + 1) // 2
            if txnshape.shape_writes(middle, writes, failure, limit).count <= limit:
                low = middle
            else:
                high = middle - 1
        token_key = None if commit.token is None else commit.token.key
        absent = _absent_keys(commit.conditions, token_key)
        merging = set(absent)
        exact = [c for c in commit.conditions if not (isinstance(c, VersionIs) and c.version == 0 and c.key in merging)]
        most = low - len(exact)
        compares = [_compare(c, lock) for c in exact]
        if room is not None:
            room -= sum(len(c) + txnshape.FRAME for c in compares)
            most = txnshape.runs_within(absent, most, room)
        runs = txnshape.merge_runs(absent, most)
        if len(exact) + len(runs) > low:  # the family refuses such a commit first (store_ops)
            raise errors.ValidationError(f"this commit takes more than the {limit} operations etcd allows")
        if room is not None and (need := sum(txnshape.run_bytes(run) for run in runs)) > room:
            budget = self.capabilities.max_txn_bytes or 0
            raise self._too_large(budget - room + need, budget)  # before its reads
        return compares, runs

    def _read_merged(self, exact: list[bytes], runs: list[list[str]]) -> list[bytes] | None:
        """``exact`` and a compare per run of :meth:`_merge_plan`, its keys read absent now; None if one is not."""
        if not runs:
            return exact  # nothing merged: every commit but the largest
        revision = self._absent_at([key for run in runs if len(run) > 1 for key in run])
        if revision is None:
            return None
        return self._merged(exact, runs, revision)

    @staticmethod
    def _merged(exact: list[bytes], runs: list[list[str]], revision: int) -> list[bytes]:
        """``exact``, then each run's compare: its key's absence, or no key of its range created after ``revision``."""
        compares = list(exact)
        for run in runs:
            first = run[0].encode()
            if len(run) == 1:
                compares.append(wire.compare(first, wire.TARGET_VERSION, wire.CMP_EQUAL, 0))
            else:
                end = run[-1].encode() + b"\0"
                compares.append(wire.compare(first, wire.TARGET_CREATE, wire.CMP_LESS, revision + 1, range_end=end))
        return compares

    def _absent_at(self, keys: Sequence[str]) -> int | None:
        """A revision at which every one of ``keys`` was absent, read now; None if one was present."""
        limit = self.capabilities.max_txn_ops or _MAX_TXN_OPS
        revision = 0
        done = 0
        try:
            while done < len(keys):
                # As many reads as a commit may hold operations, and bytes (_fitting): long keys take several.
                chunk = keys[done : done + limit]
                reads = self._fitting(
                    [wire.request_range(k.encode(), revision=revision, keys_only=True) for k in chunk]
                )
                header, _, ranges, _ = self.client.txn(wire.txn_request([], reads), write=False)
                revision = revision or header.revision
                if any(ranges):
                    return None
                done += len(reads)
        except errors.HistoryGoneError:
            return None  # compacted between two reads: the family plans the commit again
        return revision

    def _txn_parts(
        self, commit: KeyCommit, compares: list[bytes] | None = None
    ) -> tuple[list[bytes], list[bytes], list[bytes]]:
        """A commit's compares, writes (nested as they must be to fit), and its token's read when the compares fail."""
        token = commit.token
        puts = commit.puts
        if compares is None:
            compares = [_compare(c, self.layout.lock) for c in commit.conditions]
        request_put = wire.request_put
        if token is None:
            ops = [request_put(k.encode(), v) for k, v in puts.items()]
            failure = []
        else:
            lease, token_key = self._lease_for_tokens(token.ttl), token.key
            ops = [request_put(k.encode(), v, lease if k == token_key else 0) for k, v in puts.items()]
            # When the compares fail, read the token in the same round trip: after a lost
            # reply it tells whether the earlier try is the one that wrote it.
            failure = [wire.request_range(token_key.encode())]
        if commit.deletes:
            ops += [wire.request_delete(k.encode()) for k in dict.fromkeys(commit.deletes) if k not in puts]
        # Nested transactions without compares always apply, with the rest, at one revision.
        shape = txnshape.shape_writes(len(compares), len(ops), len(failure), self.capabilities.max_txn_ops)
        if not shape.depth:
            return compares, ops, failure  # flat: every single write, and most transactions
        return compares, _encode_nested(txnshape.nest(ops, shape)), failure

    def _txn_cost(self, commit: KeyCommit) -> tuple[int, int]:
        """The operations etcd counts for a commit as a nested transaction of a group, and the bytes it adds."""
        token = 0 if commit.token is None else 1
        writes = write_count(commit.puts, commit.deletes) + token
        count = txnshape.shape_writes(len(commit.conditions) + token, writes, token, self.capabilities.max_txn_ops)
        return count.count, _txn_bytes(commit, self.layout.lock)

    def _outcome(
        self, commit: KeyCommit, succeeded: bool, ranges: list[list[wire.KV]], revision: int, maybe_applied: bool
    ) -> int | None:
        """What a transaction's answer means for ``commit``: its revision, None, or CommitUnknownError."""
        if succeeded:
            return revision
        token = commit.token
        if token is not None and maybe_applied:
            stored = ranges[0] if ranges else []
            if stored and stored[0].value == commit.puts[token.key]:
                log.info("etcd: a commit whose reply was lost had been applied (revision %d)", stored[0].mod_revision)
                return stored[0].mod_revision
            # Not applied as of this read; the family voids the token so that it never will be.
            raise errors.CommitUnknownError("etcd: a lost reply left the commit's outcome open")
        return None

    def commit_group(self, commits: Sequence[KeyCommit]) -> list[Outcome]:
        """One transaction holding each commit as a nested transaction, all at one revision.

        etcd checks every nested transaction's compares against the state before
        the transaction and applies the ones that hold, so each commit gets its own
        outcome in one round trip; :class:`SnapshotGroup` admits only commits
        whose keys are disjoint, for which that equals applying them one by one.
        """
        sent = [c.with_token_key() for c in commits]

        def send() -> tuple[wire.Header, list[tuple[bool, list[list[wire.KV]]]], bool]:
            request = wire.txn_request([], [wire.request_txn(wire.txn_request(*self._txn_parts(c))) for c in sent])
            return self.client.nested_txns(request)

        header, answers, maybe_applied = self._on_a_live_token_lease(send)
        if len(answers) != len(sent):
            raise errors.BackendUnavailableError(f"etcd answered {len(answers)} of {len(sent)} nested transactions")
        outcomes: list[Outcome] = []
        for commit, (succeeded, ranges) in zip(sent, answers, strict=True):
            try:
                outcomes.append(self._outcome(commit, succeeded, ranges, header.revision, maybe_applied))
            except errors.CommitUnknownError as exc:
                outcomes.append(exc)
        return outcomes

    def new_commit_group(self) -> CommitGroup[KeyCommit]:
        caps = self.capabilities
        return SnapshotGroup(self.group_commit, self.layout.lock, self._txn_cost, caps.max_txn_ops, caps.max_txn_bytes)

    def _lease_for_tokens(self, ttl: float) -> int:
        lease, granted = self._token_lease
        now = time.monotonic()
        if lease and now - granted < ttl / 2:
            return lease
        with self._leases_lock:
            lease, granted = self._token_lease
            if lease and now - granted < ttl / 2:
                return lease
            lease, _ = self.client.lease_grant(max(1, math.ceil(2 * ttl)))
            self._token_lease = (lease, now)
            return lease

    def watch_keys(self, prefixes: Sequence[str], since: int) -> KeyStream:
        return EtcdKeyStream(self, prefixes, since)

    def revision_now(self) -> int:
        return self.header_now().revision

    def header_now(self) -> wire.Header:
        """The header of a linearizable read: the store's revision, and the cluster's current raft term."""
        header, _, _, _ = self.client.range(self.key_prefix.encode(), count_only=True)
        return header

    def compact_keys(self, revision: int) -> None:
        try:
            self.client.compact(revision)
        except errors.HistoryGoneError:
            pass  # already compacted at or past it

    # ---------------------------------------------------------------- leases

    @property
    def request_timeout(self) -> float:
        return self.client.settings.timeout

    def acquire_lease(self, name: str, token: bytes, ttl: float) -> bool:
        key = self.layout.lock(name)
        _, kvs, _, _ = self.client.range(key.encode())
        if kvs:
            if kvs[0].lease == 0 and kvs[0].value != token:
                # Another writer's key on no lease: nothing ever expires it, and every take of the lock
                # waited for it until its timeout (LockTimeoutError, for ever). A lock's key is damage there.
                raise rules.foreign_lock(name, key)
            return kvs[0].value == token
        lease_id, _ = self.client.lease_grant(max(1, math.ceil(ttl)))
        bkey = key.encode()
        request = wire.txn_request(
            [wire.compare(bkey, wire.TARGET_VERSION, wire.CMP_EQUAL, 0)],
            [wire.request_put(bkey, token, lease_id)],
            [wire.request_range(bkey)],
        )
        try:
            _, succeeded, ranges, _ = self.client.txn(request)
            # A retry after a lost reply finds the key it wrote itself.
            succeeded = succeeded or bool(ranges and ranges[0] and ranges[0][0].value == token)
        except BaseException:
            self._revoke_quietly(lease_id)
            raise
        if succeeded:
            with self._leases_lock:
                self._leases[(key, token)] = lease_id
            return True
        self._revoke_quietly(lease_id)
        return False

    def _revoke_quietly(self, lease_id: int) -> None:
        try:
            self.client.lease_revoke(lease_id)
        except errors.NbdbError as exc:
            log.debug("etcd: could not revoke lease %x (it will expire): %s", lease_id, exc)

    def renew_lease(self, name: str, token: bytes, ttl: float) -> bool:
        key = self.layout.lock(name)
        with self._leases_lock:
            lease_id = self._leases.get((key, token))
        if lease_id is None:
            return False
        if self.client.lease_keepalive(lease_id) <= 0:
            with self._leases_lock:
                self._leases.pop((key, token), None)
            return False
        _, kvs, _, _ = self.client.range(key.encode())
        return bool(kvs) and kvs[0].value == token and kvs[0].lease == lease_id

    def release_lease(self, name: str, token: bytes) -> None:
        key = self.layout.lock(name)
        # Only this token's etcd lease: revoking another holder's (a thread of this client that took the
        # lock after this one lost it) would delete its lock key.
        with self._leases_lock:
            lease_id = self._leases.pop((key, token), None)
        bkey = key.encode()
        request = wire.txn_request(
            [wire.compare(bkey, wire.TARGET_VALUE, wire.CMP_EQUAL, token)], [wire.request_delete(bkey)]
        )
        self.client.txn(request)
        if lease_id is not None:
            self._revoke_quietly(lease_id)

    def close(self) -> None:
        """Close the connections (held leases expire on the server by their TTL)."""
        self.client.close()
