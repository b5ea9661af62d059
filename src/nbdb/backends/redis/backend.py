"""The Redis backend: the pub/sub family's primitives as Lua scripts (see :mod:`nbdb.backends.redis`)."""

from __future__ import annotations

import dataclasses
import logging
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar, cast

import redis.exceptions as rexc

from nbdb import errors
from nbdb.backends.redis.config import RedisConfig, parse_url
from nbdb.backends.redis.connection import ERRORS, Connector, PartlyApplied, ReadLine, ScriptLine, argument_head
from nbdb.backends.redis.connection import text as _s
from nbdb.backends.redis.logs import RedisLogReader, lost_after
from nbdb.backends.redis.lua import (
    ACQUIRE_LUA,
    ALLOCATE_LUA,
    COMMIT_LUA,
    COMMIT_TOKEN_TTL_MS,
    COMPACT_LUA,
    FORMAT,
    FORMAT_LUA,
    HEAD_LUA,
    LOG_READ_LUA,
    LOST_LUA,
    RANGE_LUA,
    REFRESH_LUA,
    RELEASE_LUA,
    VOID_LUA,
)
from nbdb.capabilities import Atomicity, Capabilities, Durability, Expiry
from nbdb.codec import Damage
from nbdb.families import rules
from nbdb.families.kv import (
    CommitToken,
    Condition,
    Exists,
    KeyCommit,
    KeyValue,
    LeaseHeld,
    PrefixUnchangedSince,
    ValueIs,
    VersionIs,
    WrittenAt,
)
from nbdb.families.kvgroup import Outcome
from nbdb.families.kvplan import wildcard_split
from nbdb.families.pubsub import ChangeLogBackend, ChangeLogReader, decode_changes, refuse_stored_format
from nbdb.options import check_tls_files
from nbdb.spi import RefKey

__all__ = ["RedisBackend"]

log = logging.getLogger(__name__)

T = TypeVar("T")


_TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
"""The options naming TLS files, in :func:`nbdb.options.check_tls_files`'s order (ca, cert, key)."""


class RedisBackend(ChangeLogBackend):
    """Key-value backend over Redis (standalone, TLS, ACL, Sentinel)."""

    topic_wildcard: ClassVar[bool] = True  # the range script spells o/*/<table>/ out by d:o/ (see RANGE_LUA)

    capabilities: ClassVar[Capabilities] = Capabilities(
        transactions=Atomicity.ATOMIC,
        linearizable_reads=True,
        server_side_topic_filter=True,
        durability=Durability.CONFIGURABLE,
        history="at least the last 10,000 commits (?history=N; streams are trimmed approximately)",
        cross_process=True,
        unique=True,
        fencing=True,
        expiry=Expiry.REAPER,
        cas_across_recreate=True,
        notes=(
            "Durable only with appendonly yes (appendfsync always: every acknowledged write; everysec: up to "
            "about a second can be lost on a crash). Without persistence a restart loses everything and "
            "watchers get HistoryGoneError. Replication is asynchronous: across a Sentinel failover "
            "acknowledged writes (and locks) can be lost unless ?wait_replicas=N makes each commit wait for N "
            "replicas; watchers detect the lost history and caches re-list. Every read and write goes to "
            "the master."
        ),
    )

    commit_tokens = True
    token_ttl = COMMIT_TOKEN_TTL_MS / 1000

    def __init__(self, config: RedisConfig) -> None:
        super().__init__("", config.retry)
        self.config = config
        self.group_commit = config.group_commit
        self.root = config.root
        self.log_read_limit = min(config.batch, 1000)
        self._object_prefix = f"{self.key_prefix}o/"
        self.connector = Connector(config)
        self._client = self.connector.client()
        self._commit_script = self._client.register_script(COMMIT_LUA)
        self._commit_line = ScriptLine(
            self._client,
            COMMIT_LUA,
            [self.root, self._object_prefix],
            limit=config.commit_connections,
            wait=config.socket_timeout,
        )
        """The commit script sent on connections of its own (see ScriptLine): every write goes through it."""
        self._read_line = ReadLine(self._client, limit=config.commit_connections, wait=config.socket_timeout)
        """Batched reads (a long list's values) packed by nbdb, on connections of their own (see ReadLine)."""
        self._history_arg = str(config.history).encode()
        self._range_script = self._client.register_script(RANGE_LUA)
        self._lost_script = self._client.register_script(LOST_LUA)
        self._compact_script = self._client.register_script(COMPACT_LUA)
        self._refresh_script = self._client.register_script(REFRESH_LUA)
        self._release_script = self._client.register_script(RELEASE_LUA)
        self._void_script = self._client.register_script(VOID_LUA)
        self._acquire_script = self._client.register_script(ACQUIRE_LUA)
        self._allocate_script = self._client.register_script(ALLOCATE_LUA)
        self._head_script = self._client.register_script(HEAD_LUA)
        self.log_read_script = self._client.register_script(LOG_READ_LUA)
        """The watchers' read (see LOG_READ_LUA); each reader runs it on its own connection."""
        self._closed = False

    def __repr__(self) -> str:
        return f"<RedisBackend {self.config!r}>"

    @property
    def commit_connections(self) -> int:
        """The connections the commit script holds now, in use and idle (at most ``?commit_connections``)."""
        return self._commit_line.connections

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisBackend:
        """Open a redis, rediss or redis+sentinel URL; checks that the server answers (and the credentials)."""
        config = parse_url(url, options)
        # Files TLS cannot use are a mistake in the URL, named here: they failed at the first connection, the
        # server taken for down (BackendUnavailableError), as etcd's ca, cert and key are checked.
        check_tls_files("redis", *((name, config.ssl_options.get(name)) for name in _TLS_FILES))
        backend = cls(config)
        try:
            backend._run(backend._client.ping)
            backend._check_format()
        except BaseException:
            backend.close()
            raise
        return backend

    def _check_format(self) -> None:
        """Mark an empty namespace with this version's stored format; refuse one written in another.

        Reading another format would misread it silently (format 1 keeps the
        head and the commit log elsewhere), so it is an error at connect.
        """
        found = _s(self._run(lambda: self._client.eval(FORMAT_LUA, 0, self.root, FORMAT)))
        refuse_stored_format(
            found,
            FORMAT,
            where=f"redis: namespace {self.config.namespace!r} (keys {self.root}*)",
            page="docs/backends/redis.md, 'Stored format'",
        )

    def _run(self, call: Callable[[], T], *, write: bool = False) -> T:
        if self._closed:
            raise errors.BackendUnavailableError("the redis backend is closed")
        return self.connector.run(call, write=write)

    # ---------------------------------------------------------------- reads

    def _where(self, key: str) -> tuple[str, tuple[str, ...], bytes | None]:
        """A family key's hash, the fields to read, and the topic an object key needs (``loc`` in the scripts)."""
        if key.startswith("o/"):
            parts = key[2:].split("/")
            if len(parts) == 3 and parts[1] and parts[2]:
                return f"{self.root}k:i/{parts[1]}/{parts[2]}", _OBJECT_FIELDS, parts[0].encode()
        elif key.startswith("r/") and (grouped := _REFERRER.fullmatch(key)):
            return f"{self.root}k:{grouped[1]}", (grouped[2],), _GROUPED
        return self.root + "k:" + key, _KEY_FIELDS, None

    def _kv(self, key: str, fields: Sequence[Any], topic: bytes | None = None, listed: bool = False) -> KeyValue | None:
        if topic is _GROUPED:
            packed = fields[0]
            if packed is None:
                return None
            try:
                version, mod = _GROUP_HEADER.unpack_from(packed)
            except struct.error:
                raise errors.CorruptRecordError(f"key {key!r} has a damaged version", key=key) from None
            return KeyValue(key, packed[_GROUP_HEADER.size :], version, mod)
        value, version, mod = fields[:3]
        if version is None:
            return None
        if topic is not None and fields[3] != topic:
            if not listed:
                return None  # not under this topic (a read by a topic remembered from before a re-create)
            version = MISPLACED  # listed under its topic, its topic field says another: damaged, reported
        try:
            return KeyValue(key, value if value is not None else b"", _version(version), int(mod or 0))
        except ValueError:
            if not (listed and key.startswith("o/")):
                raise errors.CorruptRecordError(f"key {key!r} has a damaged version", key=key) from None
        # An object's in a range, damaged by another writer: kept as it is, the decode reports it as that
        # record's corruption, so a list can skip it and a cache loads around it. Raised here, it failed
        # every list of the table, skip_corrupt or not, and every re-list of a cache following it.
        return KeyValue(key, value if value is not None else b"", _damage(self._where(key)[0], version), _mod(mod))

    def get_key(self, key: str) -> KeyValue | None:
        name, wanted, topic = self._where(key)
        fields = self._run(lambda: self._client.hmget(name, wanted))
        return self._kv(key, fields, topic)

    def get_keys(self, keys: Sequence[str]) -> list[KeyValue | None]:
        if len(keys) <= 1:
            return [self.get_key(k) for k in keys]

        # A pipeline of HMGETs, not a script: a script that packs the fields saved the client a
        # quarter of its CPU per key but cost the server 2.5 times as much (4 -> 11 us per key),
        # and the server is what every client of a namespace shares. Packed by nbdb (ReadLine):
        # redis-py's pipeline cost about three times as much client time per key.
        where = [self._where(key) for key in keys]
        reads = [(name, wanted) for name, wanted, _topic in where]
        replies = self._run(lambda: self._read_line.hmget_many(reads))
        return [self._kv(k, f, w[2]) for k, f, w in zip(keys, replies, where, strict=True)]

    def _get_batched(self, keys: Sequence[str]) -> list[KeyValue | None]:
        """:meth:`get_keys` of many keys, ``batch`` at a time, two batches in flight (see ``hmget_batches``)."""
        size = self.config.batch
        where = [self._where(key) for key in keys]
        batches = [[(name, wanted) for name, wanted, _topic in where[i : i + size]] for i in range(0, len(keys), size)]
        values: list[KeyValue | None] = []

        def handle(i: int, replies: list[Any]) -> None:
            first = i * size
            kv = self._kv
            values.extend(
                kv(keys[first + j], _foreign(keys[first + j], f, where[first + j][2]), where[first + j][2], True)
                for j, f in enumerate(replies)
            )

        def read() -> None:
            values.clear()  # a retried read starts over
            self._read_line.hmget_batches(batches, handle)

        self._run(read)
        return values

    def range_keys(self, prefixes: Sequence[str]) -> tuple[list[KeyValue], int]:
        """Keys under ``prefixes`` at one revision.

        Up to ``batch`` keys (or a target's referrers, however many: their
        hash's ``HGETALL`` holds the values): one script reads them all atomically. More: the
        script returns the key names at revision R0, values are read in
        pipelined batches, and the result stands only if no key under the
        prefixes changed since R0 (per-directory change revisions), or once
        the change log since R0 is replayed over it; otherwise it is retried,
        and finally read in one atomic script.

        More than ``names_in_script`` names (a table of a million objects):
        the script returns only R0, and the names are paged with ``SSCAN``
        after it, so that no script holds the server for seconds (Redis
        answers every other client ``BUSY`` meanwhile). A name read after R0
        is as good as one read at it: whatever changed since R0 is either
        absent from every directory changed since (then the result stands) or
        in the log replayed over the result. The last try is then paged too:
        when the log no longer reaches back to R0 after it,
        :class:`nbdb.BackendUnavailableError`.
        """
        if not prefixes:
            return [], self.revision_now()
        objects = self.layout.objects
        tables = tuple(t for p in prefixes if (t := wildcard_split(p, objects)) is not None)
        cap = self.names_in_script
        for attempt in range(4):
            args = [self.root, self.config.batch if attempt < 3 else 2**31, cap, *prefixes]
            reply = self._run(lambda args=args: self._range_script(args=args))  # type: ignore[misc]
            revision, token, complete = int(reply[0]), _s(reply[1]), int(reply[2])
            if complete == 3:
                key = _s(reply[3])
                raise _foreign_directory(key, _s(reply[4]), "hash" if key.startswith(self.root + "k:") else "set")
            if complete == 1:
                rows = _unpack(reply[3])
                out = [
                    kv
                    for j in range(0, len(rows), 4)
                    if (name := _name(rows[j])) is not None
                    and (kv := self._kv(name, rows[j + 1 : j + 4], None, True)) is not None
                ]
                self.remember_token(revision, token)
                return sorted(out, key=lambda kv: kv.key), revision
            # More than one script's read of a table under o/*/ (kvplan.ANY_TOPIC): the topics the
            # script spelled it out with at R0 (every topic of those tables then) name the
            # directories the names are paged from and checked by; a topic created after R0 held
            # none of the tables at R0, and its keys are in the log the patch replays (it matches
            # the wildcard, not the names). Before, the range read o/ whole and dropped the rest.
            spelled = _spell(prefixes, objects, _unpack(reply[4])) if tables else prefixes
            # The names are put in order, not the records read: a list of str sorts without a key
            # function in C (100,000 keys: 0.24 us a key against 0.65 for the records by a lambda,
            # and 0.14 against 0.24 at 10,000), and the values come back in the order asked for.
            keys = (
                sorted(n for k in _unpack(reply[3]) if (n := _name(k)) is not None)
                if complete == 0
                else self._names_paged(spelled)
            )
            values = self._get_batched(keys)
            if all(v is not None for v in values) and self._unchanged_since(spelled, revision):
                self.remember_token(revision, token)
                return cast("list[KeyValue]", values), revision
            patched = self._patch_from_log(prefixes, revision, token, keys, values)
            if patched is not None:
                return patched
            log.debug("redis: keys under %s changed during a batched read; retrying", prefixes)
        raise errors.BackendUnavailableError(
            f"redis: could not read the {len(keys):,} keys under {', '.join(prefixes)} at one revision: they changed "
            f"during each of 4 reads and the change log ({self.config.history:,} commits) no longer reached back"
        )

    def referrers_of(self, targets: Sequence[RefKey]) -> dict[RefKey, list[RefKey]]:
        """Each target's referrers: the field names of its hash (``HKEYS``), pipelined, 1,000 targets a round trip.

        No script: a cascade needs no revision (each target's list is as some moment held it, as
        from separate reads; the commit's conditions check what it relies on). A script learnt the
        head from the last entry of ``log``, copied whole (after one transaction made a switch's
        40,000 ports, its change record of all of them: ≈ 0.1 s a copy); it now takes it from
        ``last`` (see ``head`` in the scripts), but still copies the entry in a namespace an older
        nbdb commits to.
        """
        out: dict[RefKey, list[RefKey]] = {}
        unique = list(dict.fromkeys(targets))
        for start in range(0, len(unique), self.referrer_batch):
            batch = unique[start : start + self.referrer_batch]
            unders = [self.layout.referrers(target) for target in batch]
            names = [self.root + "k:" + under for under in unders]

            def call(names: list[str] = names) -> list[Any]:
                pipe = self._client.pipeline(transaction=False)
                for name in names:
                    pipe.hkeys(name)
                replies: list[Any] = pipe.execute(raise_on_error=False)
                for reply in replies:  # any error but WRONGTYPE is the whole call's (translated, retried)
                    if isinstance(reply, Exception) and "WRONGTYPE" not in str(reply):
                        raise reply
                return replies

            for target, under, name, reply in zip(batch, unders, names, self._run(call), strict=True):
                if isinstance(reply, Exception):  # another writer's key of another type: as a range reports it
                    raise _foreign_directory(name, _s(self._run(lambda k=name: self._client.type(k))), "hash")  # type: ignore[misc]
                fields = (n for f in reply if (n := _name(f)) is not None)
                out[target] = [self.layout.parse_referrer(target, under + field) for field in fields]
        return out

    @property
    def names_in_script(self) -> int:
        """The most key names a range script gathers; a range over more pages them (see :meth:`range_keys`)."""
        return 100 * self.config.batch

    def _names_paged(self, prefixes: Sequence[str]) -> list[str]:
        """Every key under ``prefixes``, sorted: the directory sets walked with ``SSCAN``, a page per call.

        A name present throughout is returned; one added or removed meanwhile
        may or may not be (the caller settles those by the change log).
        """
        for _ in range(_WALKS):
            names = self._walk(prefixes)
            if names is not None:
                return sorted(names)
        raise errors.BackendUnavailableError(
            f"redis: the directories under {', '.join(prefixes)} could not be walked on one server process: "
            f"it changed (a restart or failover) during each of {_WALKS} walks"
        )

    def _walk(self, prefixes: Sequence[str]) -> set[str] | None:
        """The names of :meth:`_names_paged`; None if the server process changed during the walk.

        An ``SSCAN`` cursor is a position in one process's hash table, whose buckets depend on its
        random hash seed: continued on another process (restarted, or a promoted replica) it skipped
        names that were there throughout (6,000 names, one restart after the first page: 821 lost),
        and no ``dmr`` mark nor log entry told of them. Each pipeline asks the process's ``run_id``.
        """
        root, count = self.root, max(1000, self.config.batch)
        names: set[str] = set()
        walked: set[tuple[str, str]] = set()
        empty: list[str] = []  # directories whose first page was empty and the last
        process: Any = _UNKNOWN
        # (directory, filter, cursor) still to read. The directories are independent, so each round
        # sends every pending SSCAN (first pages, subdirectories found, continuations) in one pipeline:
        # one SSCAN per directory in turn was a round trip each (2,000 topics: 2,000 round trips).
        pending: list[tuple[str, str, int]] = []
        for place in map(_dir_and_filter, prefixes):
            if place not in walked:
                walked.add(place)
                pending.append((*place, 0))
        while pending:
            round_, pending = pending[:_SCANS_PER_PIPELINE], pending[_SCANS_PER_PIPELINE:]
            keys = [root + "d:" + directory for directory, _, _ in round_]

            def call(round_: list[tuple[str, str, int]] = round_, keys: list[str] = keys) -> tuple[Any, list[Any]]:
                pipe = self._client.pipeline(transaction=False)
                pipe.info("server")
                for key, (_, filter, cursor) in zip(keys, round_, strict=True):
                    pipe.sscan(key, cursor, match=_glob_escape(filter) + "*" if filter else None, count=count)
                info, *replies = pipe.execute(raise_on_error=False)
                for reply in replies:  # any error but WRONGTYPE is the whole call's (translated, retried)
                    if isinstance(reply, Exception) and "WRONGTYPE" not in str(reply):
                        raise reply
                # INFO refused (an ACL without @dangerous): no process to compare, the walk as before.
                return (info.get("run_id") if isinstance(info, dict) else None), replies

            now, replies = self._run(call)
            if process is _UNKNOWN:
                process = now
            elif now != process:
                return None
            for key, (directory, filter, asked), reply in zip(keys, round_, replies, strict=True):
                if isinstance(reply, Exception):  # WRONGTYPE: replaced since the range script walked it
                    kind = _s(self._run(lambda k=key: self._client.type(k)))  # type: ignore[misc]
                    raise _foreign_directory(key, kind)
                cursor, members = reply
                if not asked and not int(cursor) and not members:
                    empty.append(directory)
                for member in members:
                    name = _name(member)
                    if name is None:
                        continue
                    if not name.endswith("/"):
                        names.add(directory + name)
                    elif (place := (directory + name, "")) not in walked:
                        walked.add(place)
                        pending.append((*place, 0))
                if int(cursor):
                    pending.append((directory, filter, int(cursor)))
        if empty:
            # A set found empty: gone while its parent names it is another writer's deletion (the
            # range script's lost()), which listed nothing under it. One script asks them all.
            gone = self._run(lambda: self._lost_script(args=[root, *dict.fromkeys(empty)]))
            if gone:
                raise _foreign_directory(_s(gone[0]), _s(gone[1]))
        return names

    def _patch_from_log(
        self, prefixes: Sequence[str], since: int, token: str, keys: Sequence[str], values: Sequence[KeyValue | None]
    ) -> tuple[list[KeyValue], int] | None:
        """Bring a batched read of object keys to one revision by replaying the change log.

        Every key was read at some moment after ``since``; a key that no
        commit touched after ``since`` still has the value read, and the log
        holds the latest state of every key that was touched. Returns None if
        the prefixes are not object keys or the log no longer reaches back.
        """
        if not all(p.startswith(self._object_prefix) for p in prefixes):
            return None
        root = self.root

        def call() -> list[Any]:
            pipe = self._client.pipeline(transaction=True)
            pipe.xrange(root + "log", f"{since}-0", f"{since}-0")
            pipe.xrange(root + "log", "-", "+", count=1)
            pipe.xrange(root + "log", f"{since + 1}-0", "+")
            return list(pipe.execute())

        anchor, first, entries = self._run(call)
        if since > 0 and not (anchor and _s(anchor[0][1][b"t"]) == token):
            return None
        if since == 0 and first and first[0][0] != b"1-0":
            return None
        state: dict[str, KeyValue | None] = dict(zip(keys, values, strict=True))
        objects = self.layout.objects
        tables = tuple(t for p in prefixes if (t := wildcard_split(p, objects)) is not None)
        wanted = tuple(p for p in prefixes if wildcard_split(p, objects) is None)
        prev = since
        for entry_id, fields in entries:
            revision = int(entry_id.split(b"-")[0])
            if lost_after(prev, revision, fields) is not None:
                return None  # another writer deleted an entry: its change cannot be replayed
            prev = revision
            for change in decode_changes(fields.get(b"c", b""), revision):
                key = change.key
                # o/*/<table>/ holds the table under every topic, one created after R0 too.
                if key.startswith(wanted) or (
                    tables and key.startswith(objects) and key[len(objects) :].partition("/")[2].startswith(tables)
                ):
                    state[key] = None if change.value is None else KeyValue(key, change.value, change.version, revision)
        # 'log' holds every commit: its last entry is the head.
        head, head_t = (int(entries[-1][0].split(b"-")[0]), entries[-1][1][b"t"]) if entries else (since, None)
        if head_t is not None:
            self.remember_token(head, _s(head_t))
        return sorted((kv for kv in state.values() if kv is not None), key=lambda kv: kv.key), head

    def _unchanged_since(self, prefixes: Sequence[str], revision: int) -> bool:
        chains = [_dir_chain(p) for p in prefixes]
        # Each field once: a table's prefixes under 10,000 topics share o/<topic>/, o/ and the root,
        # and asked per prefix they were 4 fields each (16 tables: 640,000 fields, 170,002 distinct).
        fields = list(dict.fromkeys(d for chain in chains for d in chain))
        try:
            found = self._run(lambda: self._client.hmget(self.root + "dmr", fields))
        except errors.CorruptRecordError:  # WRONGTYPE: another writer's key (it refuses every commit too)
            kind = _s(self._run(lambda: self._client.type(self.root + "dmr")))
            raise _foreign_directory(self.root + "dmr", kind, "hash") from None
        return _unchanged(chains, dict(zip(fields, found, strict=True)), revision)

    def revision_now(self) -> int:
        r, t = self._run(lambda: self._head_script(args=[self.root]))
        revision = int(r)
        if t:
            self.remember_token(revision, _s(t))
        return revision

    # ---------------------------------------------------------------- commits

    def commit_keys(
        self,
        conditions: Sequence[Condition],
        puts: Mapping[str, bytes],
        deletes: Sequence[str],
        token: CommitToken | None = None,
    ) -> int | None:
        return self._commit(conditions, puts, deletes, self.new_token())

    def commit_with_token(
        self, conditions: Sequence[Condition], puts: Mapping[str, bytes], deletes: Sequence[str], token: CommitToken
    ) -> int | None:
        # The script keeps the token itself (ct:<token>, with a TTL): no family key needed.
        return self._commit(conditions, puts, deletes, _token_text(token))

    def _commit_args(self, commit: KeyCommit) -> list[Any]:
        """The commit script's arguments (see COMMIT_LUA); without a family token, a fresh one."""
        token = self.new_token() if commit.token is None else _token_text(commit.token)
        items = _payload(commit.conditions, commit.puts, commit.deletes, self.layout.range_root, self._lease_key)
        return [self.root, self._object_prefix, token, self.config.history, *items[1::2]]

    def _applied(self, reply: Any, token: str) -> int | None:
        """The revision a commit script's reply says the commit applied at, or None."""
        if int(reply[0]) not in (1, 2):
            return None
        revision = int(reply[1])
        self.remember_token(revision, token)
        return revision

    def _commit(
        self, conditions: Sequence[Condition], puts: Mapping[str, bytes], deletes: Sequence[str], token: str
    ) -> int | None:
        """One commit script, carrying ``token``: sending it again after a lost reply is exactly-once."""
        items = _payload(conditions, puts, deletes, self.layout.range_root, self._lease_key)
        if self.config.wait_replicas:
            args = [self.root, self._object_prefix, token, self.config.history, *items[1::2]]
            reply = self._write(lambda c: self._commit_script(args=args, client=c), check=lambda r: int(r[0]) in (1, 2))
            return self._applied(reply, token)
        line = self._commit_line
        packed = line.pack((token.encode(), self._history_arg), items)  # the arguments of _commit_args
        return self._applied(self._run(lambda: line.call(packed), write=True), token)

    def prepare_grouped(self, commit: KeyCommit) -> KeyCommit:
        return dataclasses.replace(commit, prepared=self._commit_args(commit))

    def commit_group(self, commits: Sequence[KeyCommit]) -> list[Outcome]:
        """Every commit's script in one pipeline: Redis runs them one after the other, each atomically.

        Each script carries its commit's token, so the whole pipeline is sent
        again after a lost reply (the scripts that had applied answer "applied
        earlier"). A script that fails by itself (foreign data under a key)
        fails only its commit.
        """
        argv = [c.prepared if isinstance(c.prepared, list) else self._commit_args(c) for c in commits]
        wanted, tries = self.config.wait_replicas, 0

        def call() -> list[Any]:
            nonlocal tries
            tries += 1
            for _load in range(2):
                pipe = self._client.pipeline(transaction=False)
                for args in argv:
                    pipe.execute_command("EVALSHA", self._commit_script.sha, 0, *args)
                if wanted:
                    pipe.execute_command("WAIT", wanted, max(1, int(self.config.wait_timeout * 1000)))
                replies = list(pipe.execute(raise_on_error=False))
                if not any(isinstance(r, rexc.NoScriptError) for r in replies):
                    break
                self._client.script_load(COMMIT_LUA)  # a restarted or flushed server forgot it: nothing ran
            retry_for(replies[: len(argv)])
            return replies

        replies = self._run(call, write=True)
        outcomes: list[Outcome] = []
        for args, reply in zip(argv, replies, strict=False):
            if not isinstance(reply, Exception):
                outcomes.append(self._applied(reply, args[2]))
            elif tries > 1:  # an earlier try's reply was lost: this script's first run may have applied
                outcomes.append(errors.CommitUnknownError(f"redis: a commit's outcome is unknown ({reply})"))
            else:
                outcomes.append(ERRORS.translate(reply, "commit"))
        acked = 0 if not wanted or isinstance(replies[-1], Exception) else int(replies[-1])
        if wanted and acked < wanted and any(isinstance(o, int) for o in outcomes):
            # Applied, but it may not survive a failover: its outcome is unknown, never "not
            # applied" (a caller that took it for a failure and wrote again applied it twice).
            late = errors.CommitUnknownError(
                f"the write is applied on the master but only {acked} of {wanted} replicas acknowledged "
                f"it within {self.config.wait_timeout}s; it may be lost if the master fails"
            )
            outcomes = [late if isinstance(o, int) else o for o in outcomes]
        return outcomes

    def void_token(self, token: CommitToken) -> int | None:
        key = self.root + "ct:" + _token_text(token)
        # Waits for the replicas like a commit: a void (or a commit found applied) that only the
        # master knows is lost with it.
        revision = self._write(
            lambda c: self._void_script(keys=[key], args=[COMMIT_TOKEN_TTL_MS], client=c), check=lambda r: True
        )
        return None if revision is None else int(revision)

    def _write(self, command: Callable[[Any], Any], check: Callable[[Any], bool] = bool) -> Any:
        """Run one write; with ``wait_replicas``, WAIT for the replicas on the same connection.

        WAIT counts the replicas that acknowledged this connection's writes,
        so the write and the WAIT go down one pipeline. ``check(reply)`` says
        whether the command wrote anything worth waiting for.
        """
        wanted = self.config.wait_replicas
        if not wanted:
            return self._run(lambda: command(self._client), write=True)
        ms = max(1, int(self.config.wait_timeout * 1000))

        def call() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            command(pipe)
            pipe.execute_command("WAIT", wanted, ms)
            return list(pipe.execute())

        reply, acked = self._run(call, write=True)
        if check(reply) and int(acked) < wanted:
            raise errors.CommitUnknownError(
                f"the write is applied on the master but only {acked} of {wanted} replicas acknowledged it "
                f"within {self.config.wait_timeout}s; it may be lost if the master fails"
            )
        return reply

    def compact_keys(self, revision: int) -> None:
        self._run(lambda: self._compact_script(args=[self.root, revision]))

    # ---------------------------------------------------------------- change logs

    def logs_for(self, prefixes: Sequence[str]) -> list[str]:
        logs: set[str] = set()
        for prefix in prefixes:
            if not prefix.startswith(self._object_prefix):
                raise errors.UnsupportedError(f"redis keeps a change feed for object keys only, not {prefix!r}")
            rest = prefix[len(self._object_prefix) :]
            topic, slash, _ = rest.partition("/")
            logs.add(self.root + (f"log:{topic}" if slash else "log"))
        if self.root + "log" in logs:
            return [self.root + "log"]
        return sorted(logs)

    def open_log_reader(self) -> ChangeLogReader:
        if self._closed:
            raise errors.BackendUnavailableError("the redis backend is closed")
        return RedisLogReader(self)

    # ---------------------------------------------------------------- leases, ids

    def _lease_key(self, name: str) -> str:
        return self.root + "lease:" + self.layout.lock(name)

    def acquire_lease(self, name: str, token: bytes, ttl: float) -> bool:
        ms = max(1, int(ttl * 1000))
        key = self._lease_key(name)
        try:
            taken = self._write(lambda c: self._acquire_script(keys=[key], args=[token, ms], client=c))
        except errors.CorruptRecordError as exc:  # WRONGTYPE: named as the key a user deletes
            raise rules.foreign_lock(name, key, "holds a value of the wrong type") from exc
        if taken == -1:  # another writer's key without an expiry (as etcd's lock key on no lease)
            raise rules.foreign_lock(name, key)
        return bool(taken)

    @property
    def request_timeout(self) -> float:
        return self.config.socket_timeout

    def lease_held(self, name: str, token: bytes) -> bool:
        return bool(self._run(lambda: self._client.get(self._lease_key(name))) == token)

    def renew_lease(self, name: str, token: bytes, ttl: float) -> bool:
        ms = max(1, int(ttl * 1000))
        return bool(self._run(lambda: self._refresh_script(keys=[self._lease_key(name)], args=[token, ms])))

    def release_lease(self, name: str, token: bytes) -> None:
        self._run(lambda: self._release_script(keys=[self._lease_key(name)], args=[token]), write=True)

    def allocate_id(self, name: str) -> int:
        keys = [self.root + "id:" + name, self.root + "ct:" + self.new_token()]
        reply = self._write(lambda c: self._allocate_script(keys=keys, args=[COMMIT_TOKEN_TTL_MS], client=c))
        if isinstance(reply, list):
            raise errors.CorruptRecordError(
                f"id counter {name!r} holds {_s(reply[0])[:40]!r}, not a whole number >= 0: nbdb did not write it",
                key=keys[0],
            )
        return int(reply)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._commit_line.close()
            self._read_line.close()
            self._client.close()
            self._client.connection_pool.disconnect()
        except Exception:  # closing must not fail
            log.debug("redis: error while closing", exc_info=True)
        self.connector.close()


_REFERRER = re.compile(r"(r/[^/]+/[^/]+/)(.+)", re.S)
"""A reverse reference: its target's hash and its field in it (see ``group`` in the scripts)."""


def retry_for(replies: Sequence[Any]) -> None:
    """Raise what makes a group commit's whole pipeline be tried again, if one of its scripts' ``replies`` asks for it.

    Every script carries its commit's token, so sending them all again is exactly-once. A
    retryable reply is raised as it is only when no other script of the pipeline applied;
    otherwise as :class:`PartlyApplied`, which may have landed: if the tries run out, the
    group's outcome is unknown, not "not applied".
    """
    for reply in replies:
        if isinstance(reply, Exception) and ERRORS.classify(reply).retryable:
            if any(not isinstance(other, Exception) for other in replies):
                raise PartlyApplied(f"a script of the pipeline was refused after another applied: {reply}") from reply
            raise reply


class _Grouped(bytes):
    """The type of :data:`_GROUPED` (no topic's bytes are ever one)."""


_GROUPED = _Grouped()
"""The ``topic`` that marks a reverse reference's field (its value packs version and revision)."""
_GROUP_HEADER = struct.Struct(">iq")  # a revision outgrows 32 bits (2^31 commits: weeks at 1,000/s)
_KEY_FIELDS = ("v", "n", "m")
_OBJECT_FIELDS = ("ov", "on", "om", "ot")
"""An object's fields in its index key's hash (see ``loc`` in the scripts), and its topic."""

_length_at = struct.Struct(">i").unpack_from


def _unpack(blob: bytes) -> list[bytes | None]:
    """The fields a script packed (see ``pack`` in the scripts' prelude); length -1 is None."""
    out: list[bytes | None] = []
    add = out.append
    pos, end = 0, len(blob)
    try:
        while pos < end:
            (size,) = _length_at(blob, pos)
            pos += 4
            if size < 0:
                add(None)
            else:
                add(blob[pos : pos + size])
                pos += size
    except struct.error:
        raise errors.BackendUnavailableError("redis: a script's reply was cut short") from None
    if pos != end:
        raise errors.BackendUnavailableError("redis: a script's reply was cut short")
    return out


def _payload(
    conditions: Sequence[Condition],
    puts: Mapping[str, bytes],
    deletes: Sequence[str],
    range_root: Callable[[str], int | None],
    lock_key: Callable[[str], str],
) -> list[bytes]:
    """The commit script's arguments after the token and the history (see COMMIT_LUA), framed.

    Each item's fields are separate arguments (unpacking one packed blob in
    Lua cost the server ~0.4 us a field), and each field comes with its RESP
    header (:func:`argument_head`) in the same pass, so that
    :meth:`ScriptLine.pack` only joins them: ``[head, field, head, field...]``;
    ``[1::2]`` are the plain fields.
    """
    out: list[bytes] = []
    add = out.extend
    head = argument_head
    # A put of a key the commit expects absent (a create's object index and unique claims) goes as
    # one item 'C', its condition with it: 4 arguments instead of 7, each a string Redis makes.
    fresh = {c.key for c in conditions if type(c) is VersionIs and c.version == 0}
    if fresh:
        fresh.intersection_update(puts)
    released: dict[str, bytes] | None = None
    """Released claims whose condition goes with their delete (see 'X' in the commit script)."""
    dropped: set[str] = set()
    first = 0
    """Deletes already sent (as the item 'K', see below)."""
    drop = _dropped_referrers(conditions, deletes, range_root) if len(deletes) > 1 else None
    for condition in conditions:
        if isinstance(condition, VersionIs):
            if condition.key in fresh and condition.version == 0:
                continue
            key, number = condition.key.encode(), str(condition.version).encode()
            add((*_KIND_V, head(len(key)), key, head(len(number)), number))
        elif isinstance(condition, Exists):
            key = condition.key.encode()
            add((*_KIND_E, head(len(key)), key))  # 2 arguments (3 before: an empty second field)
        elif isinstance(condition, PrefixUnchangedSince):
            if condition.prefix == drop and condition.revision == 0 and not first:
                # A delete's 'p r/<table>/<id>/ 0' (no referrer left) and its first two deletes, the
                # object and its index: one item 'K key' (2 arguments instead of 9).
                key, first = deletes[0].encode(), 2
                add((*_KIND_DROP, head(len(key)), key))
                continue
            key, number = condition.prefix.encode(), str(condition.revision).encode()
            add((*_KIND_PREFIX, head(len(key)), key, head(len(number)), number))
        elif isinstance(condition, WrittenAt):
            key, number = condition.key.encode(), str(condition.revision).encode()
            add((*_KIND_W, head(len(key)), key, head(len(number)), number))
        elif isinstance(condition, LeaseHeld):
            key = lock_key(condition.name).encode()
            add((*_KIND_L, head(len(key)), key, head(len(condition.token)), condition.token))
        elif isinstance(condition, ValueIs):
            # A released unique claim: with its delete, one item 'X key value' (where the 'D' would be).
            if released is None:
                released, dropped = {}, set(deletes)
            name = condition.key
            if name in dropped and name not in puts and range_root(name) is None:
                released[name] = condition.value
                continue
            key = name.encode()
            add((*_KIND_X, head(len(key)), key, head(len(condition.value)), condition.value))
        else:  # pragma: no cover - the family has no other conditions
            raise TypeError(f"unknown condition {condition!r}")
    roots = _ROOTS
    # An object's put followed by its index's, expected absent (a create): one item 'O key value
    # index' (4 arguments instead of 8; the script derives the index's key from the object's).
    index = None
    """The index key of the object put just before, while its put may still join it."""
    for name, value in puts.items():
        if index is not None:
            if name == index and name in fresh and range_root(name) is None:
                # The object's 'P key value 0' (8 parts framed) becomes 'O key value index'.
                out[-8:] = (*_KIND_OBJECT, *out[-6:-2], head(len(value)), value)
                index = None
                continue
            index = None
        key, at = name.encode(), range_root(name)
        if at == 0 and fresh and name not in fresh:  # a commit with no fresh key (an update) folds nothing
            index = _index_of(name)
        root = roots.get(at) or _framed_root(at)
        add((*(_KIND_CREATE if name in fresh else _KIND_PUT), head(len(key)), key, head(len(value)), value, *root))
    for name in deletes[first:] if first else deletes:
        key = name.encode()
        if released and (held := released.pop(name, None)) is not None:
            add((*_KIND_RELEASE, head(len(key)), key, head(len(held)), held))
            continue
        at = range_root(name)
        root = roots.get(at) or _framed_root(at)
        add((*_KIND_DELETE, head(len(key)), key, *root))
    return out


def _dropped_referrers(
    conditions: Sequence[Condition], deletes: Sequence[str], range_root: Callable[[str], int | None]
) -> str | None:
    """The reverse-reference prefix ``r/<table>/<id>/`` of the commit's first delete when that is an
    object key whose index is the second delete, neither released as a claim (what 'K' stands for
    with the condition 'no referrer left' on that prefix); None otherwise."""
    index = deletes[1]
    if range_root(deletes[0]) != 0 or index != _index_of(deletes[0]) or range_root(index) is not None:
        return None
    if any(isinstance(c, ValueIs) and c.key in deletes[:2] for c in conditions):
        return None
    return f"r/{index[2:]}/"


def _index_of(key: str) -> str | None:
    """The index key of an object key ``o/<topic>/<table>/<id>`` as the commit script derives it
    for the items 'O' and 'K' (``i/<table>/<id>``, its pattern OKEY); None for any other key."""
    if key[:2] != "o/" or key.count("/") != 3:
        return None
    rest = key[key.index("/", 2) + 1 :]  # <table>/<id>, each non-empty
    if rest[0] == "/" or rest[-1] == "/":
        return None
    return "i/" + rest


def _framed(field: bytes) -> tuple[bytes, bytes]:
    return argument_head(len(field)), field


_KIND_V, _KIND_E, _KIND_PREFIX, _KIND_L = _framed(b"v"), _framed(b"e"), _framed(b"p"), _framed(b"l")
_KIND_W = _framed(b"w")
_KIND_X, _KIND_RELEASE = _framed(b"x"), _framed(b"X")
"""A key holds a value (ValueIs); a released unique claim's ValueIs and its delete in one item."""
_KIND_PUT, _KIND_CREATE, _KIND_DELETE = _framed(b"P"), _framed(b"C"), _framed(b"D")
_KIND_OBJECT, _KIND_DROP = _framed(b"O"), _framed(b"K")
"""An object's put and its index's put expected absent, one item; the condition 'no referrer left' of an
object, its delete and its index's, one item."""
_NEVER_RANGED = _framed(b"-1")
"""The range root of a key only ever read by name, framed once."""


_ROOTS: dict[int | None, tuple[bytes, bytes]] = {None: _NEVER_RANGED}
"""Range roots as framed arguments: a handful of lengths, each a key prefix's (see KeyLayout.range_root)."""


def _framed_root(root: int | None) -> tuple[bytes, bytes]:
    """``root`` as a framed argument (-1: never ranged), remembered."""
    framed = _framed(b"-1" if root is None else str(root).encode())
    if len(_ROOTS) < 1024:  # bounded: one per length of a referrers prefix in use
        _ROOTS[root] = framed
    return framed


def _token_text(token: CommitToken) -> str:
    """The token a family commit token names (its key's last part): the script keeps it as ``ct:<token>``."""
    return token.key.rpartition("/")[2]


_WALKS = 4
"""The most walks :meth:`RedisBackend._names_paged` makes, each cut short by a change of server process."""

_UNKNOWN = object()
"""The server process of a walk before its first page."""

_SCANS_PER_PIPELINE = 256
"""The most directory SSCANs :meth:`RedisBackend._names_paged` sends in one pipeline (each answers ``count`` names)."""


def _name(value: bytes | str | None) -> str | None:
    """A key or directory member's name as text; None for one that is not UTF-8 (or none).

    nbdb spells every name it writes in ASCII, so a name that is not UTF-8 is another writer's and
    no nbdb object is under it: lists leave it out, as they leave out a name whose key is gone.
    Decoded, it raised a bare UnicodeDecodeError out of every list and cache load of its table.
    """
    if value is None or isinstance(value, str):
        return value
    try:
        return value.decode()
    except UnicodeDecodeError:
        return None


def _spell(prefixes: Sequence[str], objects: str, topics: Sequence[bytes | None]) -> list[str]:
    """``prefixes`` with each ``o/*/<table>/`` spelled out for ``topics`` (each ``<topic>/``), as RANGE_LUA does.

    A name in ``d:o/`` that is not UTF-8 is another writer's: no nbdb object is under it (a topic is
    ASCII), so it is left out, as the range script's walk of it finds none. Decoded, it raised a bare
    UnicodeDecodeError out of every list of a table past ``batch`` keys (served before, o/ read whole).
    """
    names = [n for t in topics if t is not None and (n := _name(t)) is not None]
    out: list[str] = []
    for p in prefixes:
        table = wildcard_split(p, objects)
        out += [p] if table is None else [f"{objects}{t}{table}" for t in names]
    return out


def _dir_chain(prefix: str) -> list[str]:
    """The directory holding ``prefix`` and every ancestor, deepest first ('' is the root)."""
    cut = prefix.rfind("/")
    directory = prefix[: cut + 1]
    chain = [directory]
    while directory:
        cut = directory.rfind("/", 0, len(directory) - 1)
        directory = directory[: cut + 1]
        chain.append(directory)
    return chain


def _unchanged(chains: Sequence[Sequence[str]], found: Mapping[str, bytes | None], revision: int) -> bool:
    """Whether no directory chain (:func:`_dir_chain`) changed after ``revision``, by the ``dmr`` fields ``found``.

    The deepest directory that still exists speaks for its prefix. Another writer's text there, not a
    whole number, tells nothing: taken as a change, the log decides (int() of it raised ValueError out
    of the list, untranslated).
    """
    for chain in chains:
        changed = next((v for d in chain if (v := found[d]) is not None), b"0")
        if not changed.isdigit() or int(changed) > revision:
            return False
    return True


def _dir_and_filter(prefix: str) -> tuple[str, str]:
    """A range prefix as (its directory, the start of the names wanted in it), as the scripts' walk splits it."""
    cut = prefix.rfind("/") + 1
    return prefix[:cut], prefix[cut:]


_GLOB = re.compile(r"([\\*?\[\]])")


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob pattern."""
    return _GLOB.sub(r"\\\1", text)


_EXACT = 2**53
"""The least version the scripts' Lua numbers (doubles) cannot bump exactly: 2^53 + 1 rounds to 2^53."""


def _version(stored: Any) -> int:
    """A stored version; ValueError if it is no whole number, or one the scripts cannot compare and bump.

    From 2^53 (another writer's value) the commit script's version check rounded both sides alike and
    its next version rounded back to the same digits: every update of the object succeeded and left
    its version as it was, so two writers of one read copy both won (a lost update), and the version
    returned to the caller was never stored.
    """
    version = int(stored)
    if version >= _EXACT:
        raise ValueError(version)
    return version


def _mod(mod: Any) -> int:
    """A damaged object's modification revision, 0 if it is damaged too."""
    try:
        return int(mod or 0)
    except ValueError:
        return 0


def _foreign_directory(key: str, kind: str, wanted: str = "set") -> errors.CorruptRecordError:
    """The error of a range through ``key``, a directory set (or a hash) that another writer replaced.

    The range cannot tell which objects are under it, so it fails whole, naming the key: nothing
    listed around it (that would be a silent loss), nothing of it rewritten (the key is left as
    it is, as commits leave it).
    """
    if kind == "none":
        # Gone, though its parent's set names it (the range script's lost()): another writer deleted it.
        return errors.CorruptRecordError(
            f"redis: the directory set {key} is missing while its parent's set names it; another writer "
            "deleted it, and no range through it can tell which objects are under it until it is restored",
            key=key,
        )
    return errors.CorruptRecordError(
        f"redis: {key} holds a {kind} where nbdb keeps a {wanted}; another writer put it there, and no range "
        "through it can be read until it is removed or restored",
        key=key,
    )


FOREIGN = b"WRONGTYPE"
"""The version a range gives an object whose key holds another type (``FOREIGN`` in the range script)."""
MISPLACED = b"MISPLACED"
"""The version a range gives an object whose topic field is not its directory's (``MISPLACED`` in the script)."""


def _damage(where: str, version: Any) -> Any:
    """What is wrong with the object stored in the hash ``where``, whose version read as ``version``.

    A :class:`~nbdb.codec.Damage`, carried where the record's version goes (as the raw marker was), so
    that the decode reports that one record in these words.
    """
    if version == FOREIGN:
        return Damage(f"its Redis key {where} holds another type than the hash nbdb keeps there (another writer's)")
    if version == MISPLACED:
        return Damage(f"its Redis hash {where} names another topic (field ot) than the one it is listed under")
    return Damage(f"its Redis hash {where} holds version {version!r} (field on), not a whole number below 2^53")


def _foreign(key: str, reply: Any, topic: bytes | None) -> Any:
    """A batched read's reply for ``key``; an object's key of another type reads as a record of version FOREIGN.

    Any other error reply is raised (translated by the caller's retry policy), as before.
    """
    if not isinstance(reply, Exception):
        return reply
    if key.startswith("o/") and "WRONGTYPE" in str(reply):
        return [None, FOREIGN, None, topic]
    raise reply
