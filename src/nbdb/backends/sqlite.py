"""The durable embedded backend: the key-value family on one SQLite file, with Python's own ``sqlite3``.

``sqlite:///path/to/nbdb.db`` opens (or creates) a database file that survives
restarts and that every process of the host may share: WAL mode lets readers
run beside the one writer SQLite's own lock admits at a time.
``sqlite://`` (or ``sqlite://:memory:``) is an in-process database, volatile
like ``memory://``, through the same code.

Five tables: the family's keys (``nbdb_keys``), the change log every commit
appends to in the same transaction (``nbdb_changes``), the revision counter
(``nbdb_state``), each namespace's trim mark (``nbdb_trims``) and the lock leases (``nbdb_leases``). A watcher
reads the log after its revision when its own process commits, and polls the
revision counter for other processes' commits, as kine does for etcd's API on SQL.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import logging
import operator
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, ClassVar, NoReturn
from urllib.parse import unquote, urlsplit

from nbdb import errors, timeouts
from nbdb.capabilities import Atomicity, Capabilities, Durability, Expiry
from nbdb.families import kv, kvplan, kvstore
from nbdb.families.kvgroup import GroupInterrupted, Outcome
from nbdb.options import Options
from nbdb.pool import Lease, SharedResources
from nbdb.retry import ErrorRule, ExceptionMap
from nbdb.spi import LockHandle, UniqueKey

__all__ = ["ERRORS", "SqliteBackend", "SqliteMemoryBackend"]

log = logging.getLogger(__name__)

DEFAULT_GROUP_COMMIT = 32
"""The most commits of concurrent threads one SQLite transaction carries (0 or 1: every commit alone)."""
APPLICATION_ID = 0x6E626462  # "nbdb" in PRAGMA application_id: the file is ours
SCHEMA_VERSION = 2  # PRAGMA user_version
"""2: each namespace trims only its own history (nbdb_trims). A file of 1 is brought to 2 at its first
connect; nbdb before that refuses a file of 2, as it read only the file-wide mark and missed events."""
_OLDER_SCHEMA = 1
DEFAULT_HISTORY = 10_000
_SCHEMA = """
CREATE TABLE nbdb_keys (key TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE nbdb_changes (revision INTEGER NOT NULL, key TEXT NOT NULL, value BLOB, version INTEGER NOT NULL,
    prev_value BLOB, prev_version INTEGER NOT NULL, PRIMARY KEY (revision, key)) WITHOUT ROWID;
CREATE TABLE nbdb_state (revision INTEGER NOT NULL, compacted INTEGER NOT NULL, changes INTEGER NOT NULL);
INSERT INTO nbdb_state VALUES (0, 0, 0);
CREATE TABLE nbdb_leases (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE nbdb_trims (prefix TEXT PRIMARY KEY, compacted INTEGER NOT NULL, changes INTEGER NOT NULL) WITHOUT ROWID;
"""
_TRIMS = (
    "CREATE TABLE IF NOT EXISTS nbdb_trims (prefix TEXT PRIMARY KEY, compacted INTEGER NOT NULL, "
    "changes INTEGER NOT NULL) WITHOUT ROWID"
)
"""Each namespace's own trim mark and count of logged changes (``history=`` is a namespace's: see _apply).

Not in ``_TABLES``: a file of nbdb before it has none, and gets it at its first commit by this one."""
_NO_TRIMS = "no such table: nbdb_trims"
_TABLES = ("nbdb_keys", "nbdb_changes", "nbdb_state", "nbdb_leases")
_MEMORY = ":memory:"
_Inode = tuple[int, int] | None  # a file's device and inode (None: no file)
_NO_CHECKPOINT_ON_CLOSE: int | None = getattr(sqlite3, "SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE", None)  # Python >= 3.12
_WAIT_SLICE = 0.1  # seconds of SQLite's wait for the write lock between looks at Ctrl-C, close() and a caller's bound
_LOOK_EVERY = 0.2  # seconds between reads' looks at whether the path still names the opened file
_BATCH = 500  # keys per IN (...), far below SQLite's limit on bound variables


_FIRST_KEY = "SELECT key FROM nbdb_keys WHERE key >= ? AND key < ? ORDER BY key LIMIT 1"


def _upper(prefix: str) -> str:
    """The smallest key above every key that starts with ``prefix`` (keys sort as UTF-8 bytes)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


ERRORS = ExceptionMap(
    "sqlite",
    [
        # The busy timeout ran out before the write lock (or a read mark) was free: nothing was done.
        ErrorRule((sqlite3.OperationalError,), errors.BackendUnavailableError, contains=("locked", "busy"),
                  retryable=True, unsent=True, message="another connection kept the database locked past ?timeout="),
        # SQLITE_READONLY: the file (or its directory, where the -wal and -shm files live) is not writable by
        # this process. Not retried, and no "unavailable": waiting changes nothing, its permissions must.
        ErrorRule((sqlite3.OperationalError,), errors.AuthError, contains=("readonly database",),
                  message="the database file is read-only for this process (it, or its directory, is not "
                  "writable: check their permissions and owner); nothing was written"),
        ErrorRule((sqlite3.DatabaseError,), errors.ValidationError, contains=("not a database",),
                  message="not a usable SQLite database"),
        # SQLITE_CORRUPT: a page SQLite read is damaged (a file truncated, or written over by another program).
        # Waiting or retrying mends nothing: the file's content is at fault, as quick_check's findings are.
        ErrorRule((sqlite3.DatabaseError,), errors.CorruptRecordError, contains=("malformed",),
                  message="the database file is damaged: restore it from a backup, or recover what is readable "
                  "with the sqlite3 shell's .recover"),
    ],
)  # fmt: skip
"""How sqlite3's exceptions become nbdb errors (anything else: BackendUnavailableError)."""


_SERIALS = itertools.count(1)  # each _Block its own number (next() of a count is atomic); 0: none (_take_over)
_CALL = operator.methodcaller("__call__")  # C, as operator.call (benchmarks/embedded_cg.py counts inside that)
_ONCE, _NONE = (True,), (None,)
_get_ident, _compress = threading.get_ident, itertools.compress


def _atomically(*steps: Callable[[], object]) -> None:
    """Call ``steps`` (C functions: no Python code runs between them) one after the other, with no Ctrl-C between two.

    CPython raises a signal's exception (KeyboardInterrupt) only between bytecodes: as a call returns, at
    a loop's end, as a function starts. Calls made from C, one after the other, leave it nowhere to land:
    taking the lock and recording who holds it, or forgetting that and letting go, happen both or neither.
    (A block's own take and let-go, on every call, chain their two C calls through C iterators instead:
    a third of the instructions. This serves the rare hand-over.)
    """
    collections.deque(map(_CALL, steps), maxlen=0)


def _taken_over() -> errors.BackendUnavailableError:
    """What a block's exit raises once another block of its thread took its lock over (see _Connection._take_over)."""
    return errors.BackendUnavailableError("sqlite: a later call of this thread rolled this transaction back")


class _Block:
    """One thread's turn at a _Connection: its lock held from enter to exit, in a transaction given a mode.

    ``committed`` (:meth:`_Connection.transaction`) gets True appended once COMMIT has run, also when an
    interrupt (Ctrl-C) lands right after it: the caller then knows its transaction's outcome whatever
    interrupts it.

    A class, not a generator: a Ctrl-C that landed after the generator took the lock and began (it had
    yielded) but before the caller's ``with`` held it, or as ``__exit__`` began, left it suspended, kept
    alive by the KeyboardInterrupt's traceback (in a REPL, ``sys.last_traceback``) with the lock held and
    the transaction open: the thread's next read, and every other thread's, waited for that lock for ever.
    Here each step runs under a ``try`` that rolls back and lets go, and the lock is taken and let go
    together with its record (C calls from C, see :func:`_atomically`). Where a Ctrl-C still lands outside
    them (as ``__exit__`` starts, before its ``try``), the record stays: the thread's next block takes the
    lock over and rolls the transaction back (:meth:`_Connection._take_over`), and a collected block lets
    it go. The record is the thread's id alone: nothing it keeps can keep a frame, a traceback or the
    block itself alive (a frame kept there kept a Ctrl-C'd group's block, through commit_group's stored
    KeyboardInterrupt, for ever). So a block opened while one of the same thread is still open on the
    connection (nested, unsupported: nbdb's own code never does) is taken for one a Ctrl-C left: the
    outer transaction is rolled back, and its ``__exit__`` raises BackendUnavailableError.
    """

    __slots__ = ("committed", "conn", "mode", "serial")

    def __init__(self, conn: _Connection, mode: str | None = None, committed: list[bool] | None = None) -> None:
        self.conn, self.mode, self.committed = conn, mode, committed
        self.serial = next(_SERIALS)

    def __enter__(self) -> sqlite3.Connection:
        conn, mode, serial = self.conn, self.mode, self.serial
        held = conn._held
        thread = _get_ident()
        try:
            old = conn._take_over(serial, thread) if held else 0
            if old:
                if conn._roll_back():  # what the block it took over left open (Ctrl-C): never committed
                    conn._undone = old  # its exit, if it is still to come, says so (and only then)
            else:
                # lock.acquire(), then held[serial] = thread: compress() calls map's acquire, then update() sets.
                held.update(_compress(((serial, thread),), map(conn._acquire, _ONCE)))
            if mode is not None:
                if mode == "IMMEDIATE":
                    conn._begin_write()
                else:
                    conn.sql.execute(f"BEGIN {mode}")
                conn._same_file(every=mode == "IMMEDIATE")
        except BaseException as exc:
            if serial not in held:  # interrupted before it took the lock: nothing to undo
                raise
            try:
                replaced = self._rolled_back(exc, committing=False)
            finally:
                conn._let_go(serial)
            if replaced is None:
                raise
            raise replaced from None
        return conn.sql

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        conn, serial = self.conn, self.serial
        if serial not in conn._held:  # another block of this thread's took its lock over: see _take_over
            raise _taken_over()
        try:
            if self.mode is None:
                return
            if exc is None:
                try:
                    conn._commit()
                    if self.committed is not None:
                        self.committed.append(True)
                    return
                except BaseException as error:
                    if serial not in conn._held:  # taken over as it committed: the connection is not its own
                        self._taken_over_committing(error)  # any more (another thread may hold it): no rollback
                    exc, committing = error, True
            else:
                committing = False
            replaced = self._rolled_back(exc, committing)
            if replaced is not None:
                raise replaced from None
            if committing:
                raise exc
        finally:
            # Not conn._held.pop(serial): a block of this thread's that took the lock over while this one exited
            # (a signal handler's close, a nested block in a commit hook) popped it, and a KeyError replaced
            # the outcome; that block let the lock go itself.
            conn._let_go(serial)

    def _taken_over_committing(self, error: BaseException) -> NoReturn:
        """Raise the outcome of a commit during which another block of this thread took the lock over (a signal
        handler's block or close, a nested block): ``error`` is what the commit raised.

        Rolled back by that takeover (the transaction was still open, its COMMIT had not run): said so. Else the
        transaction had ended: by its COMMIT, unless COMMIT itself failed (``error`` SQLite's), where the outcome is
        what a failed COMMIT's is (:meth:`_rolled_back`: unknown for a write). Never a rollback that did not happen.
        """
        if self.conn._undone == self.serial:
            raise _taken_over() from None
        if isinstance(error, sqlite3.Error):
            if self.mode == "IMMEDIATE":
                raise errors.CommitUnknownError(f"sqlite: the commit may or may not be durable: {error}") from None
            raise ERRORS.translate(error) from None
        if self.committed is not None and not self.committed:
            self.committed.append(True)  # COMMIT ran: the takeover found no transaction open
        raise error

    def _rolled_back(self, exc: BaseException, committing: bool) -> BaseException | None:
        """Roll back after ``exc``; the error to raise instead (None: ``exc`` itself)."""
        open_ = self.conn._roll_back()
        if not isinstance(exc, sqlite3.Error):
            if committing and not open_ and self.committed is not None and not self.committed:
                self.committed.append(True)  # COMMIT ran (it ends the transaction only when it succeeds)
            return None
        if committing and self.mode == "IMMEDIATE":
            # In WAL mode a failed fsync leaves the commit record in the log: a restart may keep it.
            return errors.CommitUnknownError(f"sqlite: the commit may or may not be durable: {exc}")
        return ERRORS.translate(exc)

    def __del__(self) -> None:
        # Collected while it still holds the lock: a Ctrl-C left it so, and nothing of this thread's took it
        # over since. Other threads wait for it: roll back and let go (from whatever thread collects it).
        conn = self.conn
        if self.serial not in conn._held:
            return
        mine = next(_SERIALS)
        if conn._hand_over(self.serial, mine, _get_ident()):
            try:
                conn._roll_back()
            finally:
                conn._let_go(mine)


class _Connection:
    """One sqlite3 connection, used by one thread at a time, and the commit signal of its database."""

    def __init__(
        self,
        target: str,
        signal: kvstore.ChangeSignal,
        timeout: float,
        synchronous: str,
        *,
        check_schema: bool = False,
        verify: bool = False,
        writer: bool = False,
        identity: tuple[_Inode, _Inode] | None = None,
    ) -> None:
        self.target, self.signal, self._settings = target, signal, (timeout, synchronous)
        self.lock = threading.Lock()  # one _Block at a time; taken and let go only with its record (_Block)
        self._acquire = self.lock.acquire  # bound once: a block's steps
        self._unlock: Callable[..., object] = self.lock.__exit__  # release(), taking any arguments
        # While a _Block holds the lock: its serial number -> its thread's id (an int: it keeps nothing alive).
        self._held: dict[int, int] = {}
        self._undone = 0  # the serial of the last block whose open transaction a takeover rolled back (_Block)
        self._closing = False
        self._looked = -_LOOK_EVERY  # time.monotonic() of the last look at the path (_same_file)
        self._gone = False  # the path was seen to name another file, or none
        self._waits = threading.local()  # .deadline: a caller's own bound on this thread's wait for the write lock
        try:
            # isolation_level=None: no implicit transactions, every BEGIN is ours.
            self.sql = sqlite3.connect(target, timeout=timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise _opening_error(exc, target) from None
        try:
            if target != _MEMORY and self.sql.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                # Persistent: once per file. A filesystem without shared memory (NFS) refuses it.
                if self.sql.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
                    log.warning("%s cannot use WAL mode: readers will wait for writers", target)
            self.sql.execute(f"PRAGMA synchronous={synchronous}")
            if writer:
                # SQLite's wait for the write lock sleeps in C, deaf to Ctrl-C and close(): wait in slices.
                self.sql.execute(f"PRAGMA busy_timeout={_ms(min(timeout, _WAIT_SLICE))}")
            if verify and target != _MEMORY:
                self._verify()
            # The files this connection reads and writes (a reopened one: the first connection's), by device and
            # inode: the database and WAL's -shm index (made by the first read in WAL mode, so looked at after it).
            self.identity = identity
            if check_schema:
                self._check_schema()
            if self.identity is None and target != _MEMORY:
                self.sql.execute("SELECT count(*) FROM sqlite_schema").fetchone()  # a read: WAL's -shm exists
                with contextlib.suppress(OSError):  # cannot be looked at: not looked at later either
                    self.identity = _identity(target), _identity(f"{target}-shm")
        except BaseException as exc:
            self.sql.close()
            if isinstance(exc, sqlite3.Error):
                raise _opening_error(exc, target) from None
            if isinstance(exc, UnicodeDecodeError):  # sqlite3 could not even decode SQLite's message about it
                raise errors.CorruptRecordError(f"sqlite: {target} is damaged: its schema cannot be read") from None
            raise

    def reopen(self, *, writer: bool = False) -> _Connection:
        """Another connection to the same file (an in-memory database has only this one).

        ``writer``: for write transactions, waiting for the write lock in slices (:meth:`_begin_write`).
        """
        if self.target == _MEMORY:
            return self
        return _Connection(self.target, self.signal, *self._settings, writer=writer, identity=self.identity)

    def transaction(self, mode: str = "DEFERRED", committed: list[bool] | None = None) -> _Block:
        """One transaction; IMMEDIATE takes the write lock first, so a writer never fails half-way for it.

        ``committed`` gets True appended once COMMIT has run, also when an interrupt (Ctrl-C) lands
        right after it: the caller then knows its transaction's outcome whatever interrupts it. Not to be
        opened inside this thread's own open block on this connection: that one is rolled back (see :class:`_Block`).
        """
        return _Block(self, mode, committed)

    def one(self, statement: str, args: Sequence[Any] = ()) -> Any:
        """The first row of one statement, which runs as a transaction of its own."""
        if self._held:
            self._recover()
        with self.lock:  # a lock's with-statement is C's: no Ctrl-C lands between taking and holding it
            self._same_file()
            try:
                return self.sql.execute(statement, args).fetchone()
            except sqlite3.Error as exc:
                raise ERRORS.translate(exc) from None

    def every(self, statement: str, args: Sequence[Any] = ()) -> list[Any]:
        """Every row of one statement, which runs as a transaction of its own."""
        if self._held:
            self._recover()
        with self.lock:
            self._same_file()
            try:
                return self.sql.execute(statement, args).fetchall()
            except sqlite3.Error as exc:
                raise ERRORS.translate(exc) from None

    def _take_over(self, serial: int, thread: int) -> int:
        """Make block ``serial`` of ``thread`` the holder of a lock that thread's block left.

        A block this thread left holding :attr:`lock` (a Ctrl-C landed where its own clean-up could not
        run) hands it over: the lock is not re-entrant, so waiting for itself hung the thread (and every
        other) for ever. The old block's serial: so handed over (roll back what it left); 0: take the lock as usual.
        A block of this thread's that is still open (one nested in it, unsupported) is taken over too.
        """
        for old, holder in tuple(self._held.items()):  # at most one
            if holder == thread and self._hand_over(old, serial, thread):
                return old
        return 0

    def _recover(self) -> None:
        """Roll back and let go what a block of this thread left holding the lock (a Ctrl-C): see :meth:`_take_over`."""
        if _get_ident() in self._held.values():  # not another thread's: it lets go by itself
            with _Block(self):
                pass

    def _hand_over(self, old: int, new: int, thread: int) -> bool:
        """Make block ``new`` of ``thread`` the holder of block ``old``'s lock, unless ``old`` let it go."""
        try:
            _atomically(partial(self._held.pop, old), partial(self._held.__setitem__, new, thread))
        except KeyError:  # it let go meanwhile (collected in another thread: _Block.__del__)
            return False
        return True

    def _roll_back(self) -> bool:
        """``ROLLBACK`` if a transaction is open; whether one was (unknown, on a closed connection: True)."""
        open_ = True  # not taken for a COMMIT that ran
        with contextlib.suppress(sqlite3.Error):  # SQLite has rolled back by itself after some errors
            open_ = self.sql.in_transaction
            if open_:
                self.sql.execute("ROLLBACK")
        return open_

    def _let_go(self, serial: int) -> None:
        """Let :attr:`lock` go, if block ``serial`` still holds it.

        ``held.pop(serial, None)``, then the lock's release (its ``__exit__``, which takes any arguments)
        with what it popped, if anything: C calls from C (filter, map, any), no Ctrl-C between them.
        """
        any(map(self._unlock, filter(None, map(self._held.pop, (serial,), _NONE))))

    def _same_file(self, every: bool = False) -> None:
        """Raise BackendUnavailableError if the path no longer names the file this connection has open.

        SQLite keeps using the file it opened: deleted (or replaced by a new one, another process's
        ``rm`` and reconnect), its commits were acknowledged and lost when the process closed it, its
        reads and watchers saw nothing of the new file's writers. Its ``-shm`` file deleted, the next
        process to open the file made another: two WAL indexes, two writers at once, and one's
        acknowledged commits overwritten by the other's. Two ``stat``s: before ``every`` write,
        and before a read at most every ``_LOOK_EVERY`` seconds (a stat per read made a get ~40 % slower).
        """
        if self.identity is None:  # in memory, or still opening
            return
        now = time.monotonic()
        if not every and now < self._looked + _LOOK_EVERY and not self._gone:
            return
        self._looked = now
        # Once seen gone, gone for good (another thread's look, the reaper's, must not let a read through).
        with contextlib.suppress(OSError):  # a path that cannot be looked at now (EACCES, EIO) is no proof
            self._gone = self._gone or (_identity(self.target), _identity(f"{self.target}-shm")) != self.identity
        if self._gone:
            raise errors.BackendUnavailableError(
                f"sqlite: {self.target} (or its -shm file) was deleted or replaced since this process opened it: "
                "nothing is read or written through the old one; connect again"
            )

    def _commit(self) -> None:
        """``COMMIT``, tried again while readers keep the file locked (it stays pending), up to ``timeout=``.

        Only where the file is not in WAL mode (a filesystem without shared memory): a commit then
        waits for every reader's lock. A writer connection waits one slice per try, and a busy
        COMMIT was reported as CommitUnknownError after 0.1 s though SQLite had kept the
        transaction open, written nothing. Given up, it is rolled back: BackendUnavailableError.
        """
        started = time.monotonic()
        while True:
            try:
                self.sql.execute("COMMIT")
                return
            except sqlite3.OperationalError as exc:
                if not (_busy(exc) and self.sql.in_transaction):
                    raise
                if self._closing or time.monotonic() >= started + self._settings[0]:
                    # transaction() rolls it back: the transaction stays open until then, so that an interrupt
                    # landing here is never taken for a COMMIT that ran.
                    raise errors.BackendUnavailableError(
                        f"sqlite: readers kept {self.target} locked: the commit was not written"
                    ) from None

    def _begin_write(self) -> None:
        """``BEGIN IMMEDIATE``, waiting for another connection's write lock up to ``timeout=``.

        On a writer connection (:meth:`reopen`) each try waits one slice: between
        them a Ctrl-C is raised, a close() ends the wait, and a caller's shorter
        bound (:meth:`waiting_at_most`) is kept (to within a slice). SQLite's own
        wait sleeps in C for the whole timeout: a Ctrl-C was raised, and a
        close() of another thread returned, only after it.
        """
        started = time.monotonic()
        while True:
            try:
                self.sql.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
                if self._closing:
                    raise errors.BackendUnavailableError(
                        f"sqlite: {self.target} was closed while waiting for its write lock"
                    ) from None
                capped = getattr(self._waits, "deadline", None)
                if capped is not None and capped < started + self._settings[0]:
                    if time.monotonic() >= capped:
                        raise errors.BackendUnavailableError(
                            f"sqlite: another connection kept {self.target} locked past the caller's timeout"
                        ) from None
                elif time.monotonic() >= started + self._settings[0]:
                    raise

    @contextmanager
    def waiting_at_most(self, timeout: float | None) -> Iterator[None]:
        """Within the block, this thread waits at most ``timeout`` seconds for the write lock (None: ``timeout=``)."""
        if timeout is None:
            yield
            return
        self._waits.deadline = time.monotonic() + timeout
        try:
            yield
        finally:
            self._waits.deadline = None

    def close(self) -> None:
        self._closing = True  # a thread waiting for the write lock gives up at its next slice
        if self._held:
            self._recover()
        with self.lock:
            with contextlib.suppress(errors.BackendUnavailableError):
                self._same_file(every=True)
            if self._gone and _NO_CHECKPOINT_ON_CLOSE is not None:
                # The last connection's close copies the WAL into the file by its own index, then deletes
                # the WAL: on a stale index (its -shm deleted) that wiped the commits of the process that
                # made the new one. Python 3.12's setconfig() can turn it off; 3.11 has no way (docs).
                with contextlib.suppress(sqlite3.Error):
                    self.sql.setconfig(_NO_CHECKPOINT_ON_CLOSE, True)  # type: ignore[attr-defined,unused-ignore]
            self.sql.close()

    def _verify(self) -> None:
        """Refuse a file whose pages are damaged (``PRAGMA quick_check``), before anything reads it.

        SQLite finds most damage as it reads a page, but not all of it: bytes
        over a table page's cell pointers made a list return 2 of 5 objects
        with no error. The check reads every page once (≈ 0.2 s for 60 MB,
        50,000 ports with their change log), so a damaged file is refused at
        connect instead of misread; ``?verify=none`` skips it.
        """
        problems = [row[0] for row in self.sql.execute("PRAGMA quick_check(5)").fetchall()]
        if problems != ["ok"]:
            raise errors.CorruptRecordError(
                f"sqlite: {self.target} is damaged (PRAGMA quick_check: {'; '.join(problems)[:500]}); "
                "restore it from a backup, or recover what is readable with the sqlite3 shell's .recover"
            )

    def _check_schema(self) -> None:
        """Create the tables in an empty database; refuse a file that is not an nbdb database of this version.

        A file that is already nbdb's is only read: opening it never waits for
        another process's write transaction (it waited, and failed after
        ``timeout=``, behind a long one). Only an empty file takes the write lock.
        """
        with self.transaction() as sql:
            if self._holds_schema(sql):
                return
        with self.transaction("IMMEDIATE") as sql:
            held = self._holds_schema(sql)
            if held:  # another process created the tables, or brought them to this version, meanwhile
                return
            if held is None:  # nbdb's schema 1: history was trimmed file-wide, by the file's mark only
                sql.execute(_TRIMS)
                sql.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                return
            for statement in filter(str.strip, _SCHEMA.split(";")):  # executescript() would COMMIT
                sql.execute(statement)
            sql.execute(f"PRAGMA application_id={APPLICATION_ID}")
            sql.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _holds_schema(self, sql: sqlite3.Connection) -> bool | None:
        """Whether the file holds nbdb's tables of this version (False: it is empty; None: of schema 1, to bring
        to this one); raise if it is anything else.

        A file of schema 1 is brought to 2 (``nbdb_trims``) before anything else, and 2 makes nbdb of
        schema 1 refuse it: that nbdb read only the file-wide trim mark, so a watcher of it started
        from a revision another namespace's trim had dropped got the later changes with no error.
        """
        app, version = (sql.execute(f"PRAGMA {p}").fetchone()[0] for p in ("application_id", "user_version"))
        if app == 0 and version == 0:
            if sql.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]:
                raise errors.ValidationError(f"{self.target} holds another application's tables")
            return False
        if app != APPLICATION_ID:
            raise errors.ValidationError(f"{self.target} belongs to another application (id {app:#x})")
        if version not in (SCHEMA_VERSION, _OLDER_SCHEMA):
            raise errors.UnsupportedError(f"{self.target} has nbdb schema {version}, not {SCHEMA_VERSION}")
        names = ", ".join(f"'{name}'" for name in _TABLES)
        found = {row[0] for row in sql.execute(f"SELECT name FROM sqlite_schema WHERE name IN ({names})")}
        state = sql.execute("SELECT count(*) FROM nbdb_state").fetchone()[0] if "nbdb_state" in found else 0
        if found != set(_TABLES) or state != 1:
            missing = ", ".join(sorted(set(_TABLES) - found)) or f"nbdb_state's one row ({state} rows)"
            raise errors.CorruptRecordError(
                f"sqlite: {self.target} is marked as nbdb's but is damaged: it lacks {missing}; "
                "restore it from a backup"
            )
        return True if version == SCHEMA_VERSION else None


# What this process's backends share: the commit signal of each file, and each namespace's in-memory database.
_SIGNALS: SharedResources[str, kvstore.ChangeSignal] = SharedResources("sqlite:///PATH signals", lambda _: None)
_STORES: SharedResources[str, _Connection] = SharedResources("sqlite://?namespace=NAME", _Connection.close)


def _let_go(conn: _Connection | None, shared: Lease[str, Any] | None, writer: _Connection | None = None) -> None:
    for each in (writer, conn):
        if each is not None:
            each.close()
    if shared is not None:
        shared.release()


class SqliteBackend(kv.KeyValueBackend):
    """Key-value backend on one SQLite database file, shared by the processes of one host."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        transactions=Atomicity.ATOMIC,
        linearizable_reads=True,
        server_side_topic_filter=True,
        durability=Durability.DURABLE,
        history="at least the last 10,000 changes of each namespace (sqlite:///PATH?history=N)",
        cross_process=True,
        unique=True,
        fencing=True,
        expiry=Expiry.REAPER,
        pages=True,
        cas_across_recreate=True,
        notes="One file on one host: its processes share data, locks and ids (WAL mode, so the file must be on a "
        "local filesystem, not NFS); other hosts cannot. One writer at a time, by SQLite's own lock. Watchers "
        "see their own process's commits at once and other processes' within ?poll_interval= (default 0.01 s). "
        "?synchronous=normal makes commits faster and still survives a process crash, but not a power loss. "
        "Lock leases use the wall clock. sqlite:// without a path is in-process and volatile, like memory://.",
    )

    def __init__(
        self,
        conn: _Connection,
        key_prefix: str = "",
        history: int = DEFAULT_HISTORY,
        shared: Lease[str, Any] | None = None,
    ) -> None:
        """A backend on ``conn``; it closes ``conn`` unless it is the value of ``shared``, which it releases.

        Writes go through a connection of their own (:meth:`_Connection.reopen`): a Ctrl-C or a close()
        ends their wait for another process's write lock, and reads never wait behind this one's writes.
        """
        super().__init__(key_prefix)
        self._conn, self._history = conn, history
        # The change-log rows of this namespace's keys: its prefix's range; without a namespace, the keys
        # whose first part is one of the family's letters (a namespace's keys start with its name and '/';
        # a namespace named as one of those letters shares the keys of no namespace anyway).
        own = f"key GLOB '[{_family_letters()}]/*'" if not key_prefix else "key >= ? AND key < ?"
        self._own: tuple[str, tuple[str, ...]] = (own, (key_prefix, _upper(key_prefix)) if key_prefix else ())
        self._tally: tuple[int, int, tuple[object, int]] | None = None
        """This namespace's changes in the log as of a revision this backend committed, and the trim marks
        (the namespace's, the file's) then: see _keep_history. None: not known (a commit of it rolled back)."""
        self.poll_interval = 0.01
        """Seconds between a watcher's looks for other processes' commits."""
        owned = None if shared is not None and shared.value is conn else conn
        try:
            self._writer = conn.reopen(writer=True)
        except BaseException:
            _let_go(owned, shared)
            raise
        # A backend dropped without close() must still let go of what it holds.
        self._let_go = weakref.finalize(self, _let_go, owned, shared, None if self._writer is conn else self._writer)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SqliteBackend:
        """Open ``sqlite:///ABSOLUTE/PATH``, ``sqlite://RELATIVE/PATH`` or ``sqlite://`` (in memory)."""
        parts = urlsplit(url)
        allowed = {"namespace", "history", "synchronous", "timeout", "poll_interval", "group_commit", "verify"}
        opts = Options.from_url(parts.query, options, allowed, "sqlite://", keep_blank_values=False)
        namespace = opts.namespace()
        history = opts.integer("history", DEFAULT_HISTORY, minimum=1)
        timeout = opts.number("timeout", 5.0, minimum=0.0)
        synchronous = opts.choice("synchronous", "FULL", ("FULL", "NORMAL", "EXTRA"))
        verify = opts.choice("verify", "QUICK", ("QUICK", "NONE")) == "QUICK"
        path = unquote(parts.netloc + parts.path)
        if "\x00" in path:
            raise errors.ValidationError(f"sqlite URL: a path holds no NUL character: {path!r}")
        prefix = f"{namespace}/" if namespace else ""
        backend: SqliteBackend
        if path in ("", _MEMORY):

            def store() -> _Connection:
                return _Connection(_MEMORY, kvstore.ChangeSignal(), timeout, synchronous, check_schema=True)

            # Like memory://, the Databases of one namespace share one store.
            shared = _STORES.acquire(namespace, store) if namespace else None
            conn = store() if shared is None else shared.value
            backend = SqliteMemoryBackend(conn, prefix, history, shared)
        else:
            path = os.path.abspath(path)
            signal = _SIGNALS.acquire(path, kvstore.ChangeSignal)
            try:
                conn = _Connection(path, signal.value, timeout, synchronous, check_schema=True, verify=verify)
            except BaseException:
                signal.release()
                raise
            backend = cls(conn, prefix, history, signal)
        backend.poll_interval = opts.number("poll_interval", 0.01, minimum=0.001)
        backend.group_commit = opts.integer("group_commit", DEFAULT_GROUP_COMMIT, minimum=0)
        return backend

    # ---------------------------------------------------------------- the family's primitives

    def get_key(self, key: str) -> kv.KeyValue | None:
        row = self._conn.one("SELECT * FROM nbdb_keys WHERE key = ?", (key,))
        return None if row is None else kv.KeyValue(*row)

    def get_keys(self, keys: Sequence[str]) -> list[kv.KeyValue | None]:
        # One statement (``IN (...)``, one snapshot): an id counter and its mark cost one read, not two.
        unique = list(dict.fromkeys(keys))
        if len(unique) <= 1 or len(unique) > _BATCH:
            return super().get_keys(keys)
        found = {row[0]: kv.KeyValue(*row) for row in self._conn.every(_keys_statement(len(unique)), unique)}
        return [found.get(key) for key in keys]

    topic_wildcard: ClassVar[bool] = True

    def _concrete(self, sql: Any, prefixes: Sequence[str]) -> list[str]:
        """``prefixes`` with each ``o/*/<table>/`` (see kvplan.ANY_TOPIC) spelled out for every topic present.

        The topics are found in the read's own transaction, one indexed lookup each: the first key
        under ``o/``, then the first after that topic's keys, and so on (a skip scan). Every key
        under ``o/<topic>/`` counts, another writer's too: no topic present is missed.
        """
        objects = self.layout.objects
        out: list[str] = []
        topics: list[str] | None = None
        for prefix in prefixes:
            table = kvplan.wildcard_split(prefix, objects)
            if table is None:
                out.append(prefix)
                continue
            if topics is None:
                topics = []
                start, end = objects, _upper(objects)
                while (row := sql.execute(_FIRST_KEY, (start, end)).fetchone()) is not None:
                    topic = row[0][len(objects) :].partition("/")[0]
                    topics.append(topic)
                    start = _upper(f"{objects}{topic}/")
            out += [f"{objects}{topic}/{table}" for topic in topics]
        return out

    def range_keys(self, prefixes: Sequence[str]) -> tuple[list[kv.KeyValue], int]:
        with self._conn.transaction() as sql:
            revision = _state(sql)[0]
            out: list[kv.KeyValue] = []
            for prefix in self._concrete(sql, prefixes):
                rows = sql.execute("SELECT * FROM nbdb_keys WHERE key >= ? AND key < ?", (prefix, _upper(prefix)))
                out += map(kv.KeyValue._make, rows)  # a row is a KeyValue's fields, in order (SELECT *)
        return out, revision

    def range_rows(self, prefixes: Sequence[str]) -> tuple[Sequence[Sequence[Any]], int]:
        # sqlite3's own rows, (key, value, version, mod_revision): no KeyValue per key, and no column a scan
        # does not read (the mod revision: the revision that wrote each record, see Record.written).
        with self._conn.transaction() as sql:
            revision = _state(sql)[0]
            out: list[tuple[str, bytes, int, int]] = []
            for prefix in self._concrete(sql, prefixes):
                out += sql.execute(
                    "SELECT key, value, version, mod_revision FROM nbdb_keys WHERE key >= ? AND key < ?",
                    (prefix, _upper(prefix)),
                )
        return out, revision

    def commit_keys(
        self,
        conditions: Sequence[kv.Condition],
        puts: Mapping[str, bytes],
        deletes: Sequence[str],
        token: kv.CommitToken | None = None,
    ) -> int | None:
        # No commit tokens: SQLite answers every commit (or says it cannot know: CommitUnknownError).
        try:
            with self._writer.transaction("IMMEDIATE") as sql:
                revision = self._apply(sql, kv.KeyCommit(conditions, puts, deletes))
        except BaseException:
            self._tally = None  # counted in a transaction that may have been rolled back
            raise
        if revision is not None:
            self._conn.signal.notify()
        return revision

    def commit_group(self, commits: Sequence[kv.KeyCommit]) -> list[Outcome]:
        """The commits one after the other in one SQLite transaction: one disk sync for all of them.

        Each commit has its own savepoint, revision and change-log rows: one
        that fails its conditions or meets an error leaves no trace, the
        others still apply. An error that ends the whole transaction (SQLite
        rolled it back) is every commit's outcome. Interrupted (Ctrl-C in this,
        the sending thread): :class:`GroupInterrupted` says whether it committed.
        """
        outcomes: list[Outcome] = []
        committed: list[bool] = []
        interrupt: BaseException | None = None
        try:
            with self._writer.transaction("IMMEDIATE", committed) as sql:
                for commit in commits:
                    sql.execute("SAVEPOINT nbdb_commit")
                    try:
                        outcomes.append(self._apply(sql, commit))
                    except sqlite3.Error as exc:
                        if not sql.in_transaction:
                            raise  # nothing of the group is left to commit
                        self._tally = None
                        sql.execute("ROLLBACK TO nbdb_commit")
                        outcomes.append(ERRORS.translate(exc))
                    except errors.CorruptRecordError as exc:  # a key of this commit's that another tool spoiled
                        self._tally = None
                        sql.execute("ROLLBACK TO nbdb_commit")
                        outcomes.append(exc)
                    sql.execute("RELEASE nbdb_commit")
        except Exception:
            self._tally = None  # counted in a transaction rolled back, or of an unknown outcome
            raise
        except BaseException as exc:
            self._tally = None
            # Ctrl-C in the sending thread: SQLite knows whether the group committed (each commit's outcome
            # stands) or was rolled back (none applied: the other threads' commits are sent again).
            if not committed:
                raise GroupInterrupted(None) from exc
            interrupt = exc
        if any(isinstance(o, int) for o in outcomes):
            self._conn.signal.notify()
        if interrupt is not None:
            raise GroupInterrupted(outcomes) from interrupt
        return outcomes

    def _apply(self, sql: sqlite3.Connection, commit: kv.KeyCommit) -> int | None:
        """Check ``commit``'s conditions and write it at the next revision, inside the caller's transaction."""
        conditions, puts, deletes = commit.conditions, commit.puts, commit.deletes
        stored = _select(sql, [*puts, *deletes, *kvstore.named_keys(conditions)])
        changed, holds = partial(_changed_under, sql), partial(_lease_holds, sql, self.layout.lock)
        if not all(kvstore.condition_holds(c, stored, changed, holds) for c in conditions):
            return None
        revision, file_compacted, file_changes = _state(sql)
        revision += 1
        changes = kvstore.key_changes(stored, puts, deletes, revision)
        upserts = [(c.key, c.value, c.version, revision) for c in changes if c.value is not None]
        sql.executemany("INSERT OR REPLACE INTO nbdb_keys VALUES (?, ?, ?, ?)", upserts)
        sql.executemany("DELETE FROM nbdb_keys WHERE key = ?", [(c.key,) for c in changes if c.value is None])
        log = [(revision, c.key, c.value, c.version, c.prev_value, c.prev_version) for c in changes]
        sql.executemany("INSERT INTO nbdb_changes VALUES (?, ?, ?, ?, ?, ?)", log)
        sql.execute("UPDATE nbdb_state SET revision = ?, changes = changes + ?", (revision, len(log)))
        # ``history`` counts this namespace's changes and trims only them: the file-wide count let the
        # namespace of the smallest ``history=`` trim every other's (issue 12).
        self._keep_history(sql, revision, len(log), file_compacted, file_changes + len(log))
        return int(revision)

    def _keep_history(self, sql: sqlite3.Connection, revision: int, logged: int, file_compacted: int,
                      file_changes: int) -> None:  # fmt: skip
        """Trim this namespace's changes once the log holds over ``history * 5 / 4`` of them, after a commit.

        Nothing is written for it until a trim is due (a row written with every commit cost +8 % of a
        create's instructions, a page more in the WAL): the namespace's changes are some of the file's,
        which nbdb_state counts anyway, so while the file holds no more than the bound none is due. Above
        it they are counted from the log itself: once, then only the rows logged since this backend's last
        count (``_tally``, by revision through the log's primary key), so other processes' commits are
        counted as its own are; recounted whole when the namespace's or the file's trim mark moved.

        A mark another writer spoiled (not whole numbers) is mended: the history before ``revision``
        is dropped (watchers behind it get HistoryGoneError and caches re-list, as
        :meth:`_compacted` tells them meanwhile), so every commit of the namespace does not fail for it.

        The namespace's row of nbdb_trims is read once here and its mark handed to the count, :meth:`_trim`
        and :meth:`_drop` (each read it again: four reads in a commit that trims).
        """
        row = _trims_row(sql, self.layout.prefix)
        if row is not None and not (type(row[0]) is int and type(row[1]) is int and row[0] >= 0 and row[1] >= 0):
            log.warning("sqlite: the trim mark of namespace %r was %r: dropping its history", self.layout.prefix, row)
            self._tally = None
            self._drop(sql, revision - 1, _own_mark(row))
            mended = "UPDATE nbdb_trims SET compacted = ?, changes = ? WHERE prefix = ?"
            sql.execute(mended, (revision - 1, logged, self.layout.prefix))
            return
        bound = self._history * 5 // 4  # trim in chunks: amortised O(1) per change
        if file_changes <= bound:
            return
        marks = (None if row is None else row[0], file_compacted)
        own, bounds = self._own
        tally = self._tally
        if tally is not None and tally[2] == marks and tally[1] < revision:
            newer = f"SELECT count(*) FROM nbdb_changes WHERE revision > ? AND {own}"
            count = tally[0] + sql.execute(newer, (tally[1], *bounds)).fetchone()[0]
        else:
            whole = f"SELECT count(*) FROM nbdb_changes WHERE revision > ? AND {own}"
            count = sql.execute(whole, (_own_mark(row), *bounds)).fetchone()[0]
        self._tally = (count, revision, marks)
        if count > bound:
            self._tally = None  # the trim moves the mark: counted again when next due
            self._trim(sql, count - self._history, _own_mark(row))

    def _trim(self, sql: sqlite3.Connection, excess: int, mark: int) -> None:
        """Drop this namespace's changes of whole commits from the log's start: at most ``excess``, ``history`` kept.

        ``mark``: the namespace's own trim mark (:func:`_own_mark`), as the caller read it in this transaction.
        """
        own, bounds = self._own
        first = f"SELECT revision FROM nbdb_changes WHERE revision > ? AND {own} ORDER BY revision LIMIT 1 OFFSET ?"
        for (kept,) in sql.execute(first, (mark, *bounds, excess)).fetchall():
            self._drop(sql, kept - 1, mark)

    def _drop(self, sql: sqlite3.Connection, revision: int, mark: int) -> None:
        """Drop this namespace's changes up to ``revision``, and mark its history as starting after it.

        ``mark``: the namespace's own trim mark (:func:`_own_mark`), as the caller read it in this transaction.
        """
        own, bounds = self._own
        drop = f"DELETE FROM nbdb_changes WHERE revision > ? AND revision <= ? AND {own}"
        dropped = sql.execute(drop, (mark, revision, *bounds)).rowcount
        sql.execute("UPDATE nbdb_state SET changes = changes - ?", (dropped,))  # the file's, as nbdb before kept it
        marked = "INSERT INTO nbdb_trims VALUES (?, ?, 0) ON CONFLICT (prefix) DO UPDATE SET "
        marked += "compacted = max(compacted, excluded.compacted), changes = max(changes - ?, 0)"
        _with_trims(sql, marked, (self.layout.prefix, revision, dropped))

    def _compacted(self, sql: sqlite3.Connection, file_compacted: int) -> int:
        """The last revision whose changes of this namespace are trimmed: its own mark, or the file's if later."""
        row = _trims_row(sql, self.layout.prefix)
        if row is None:  # no trim of this namespace yet
            return file_compacted
        if type(row[0]) is not int:  # another writer's: nothing before now is known kept (mended by _keep_history)
            return _state(sql)[0]
        return max(file_compacted, row[0])

    def watch_keys(self, prefixes: Sequence[str], since: int) -> kv.KeyStream:
        # A file's watcher reads through a connection of its own: it never waits behind this backend's writes.
        conn = self._conn.reopen()
        ranges = " OR ".join("(key >= ? AND key < ?)" for _ in prefixes)
        columns = "key, value, version, prev_value, prev_version, revision"  # KeyChange's fields
        # Only the rows of the revisions the counter has reached, and whole numbers: a row another writer
        # logged with a text revision sorted after every number, and was read again after every commit.
        query = f"SELECT {columns} FROM nbdb_changes WHERE revision > ? AND revision <= ? AND ({ranges})"
        query += " ORDER BY revision"
        bounds = [bound for prefix in prefixes for bound in (prefix, _upper(prefix))]

        own = conn is not self._conn
        seen = [-1]  # PRAGMA data_version at the last read: it moves with every commit of another connection

        def read(since: int) -> tuple[list[kv.KeyChange], int]:
            version = conn.one("PRAGMA data_version")[0] if own else -1
            if own and version == seen[0]:
                return [], since  # nothing committed since: no transaction, a few microseconds per poll
            with conn.transaction() as sql:
                revision, compacted, _ = _state(sql)
                compacted = self._compacted(sql, compacted)
                if not compacted <= since <= revision:
                    raise errors.HistoryGoneError(
                        f"revision {since} is not in the kept history ({compacted} to {revision}): "
                        + ("the database file was replaced" if since > revision else "it was trimmed")
                    )
                rows = sql.execute(query, (since, revision, *bounds)).fetchall() if revision > since else []
            seen[0] = version
            return [kv.KeyChange(*row) for row in rows], revision

        return kvstore.PolledKeyStream(read, since, conn.signal, self.poll_interval, conn.close if own else None)

    def range_page(self, prefix: str, after: str | None, limit: int, revision: int) -> tuple[list[kv.KeyValue], int]:
        # The keys as they were at ``revision``: today's keys, with every key changed since put back to
        # the value before its first change after ``revision`` (the change log keeps it; None: absent).
        above = after is not None and after >= prefix
        low, high, start = (after if above else prefix), _upper(prefix), ("key > ?" if above else "key >= ?")
        with self._conn.transaction() as sql:
            now, compacted, _ = _state(sql)
            compacted = self._compacted(sql, compacted)
            revision = revision or now
            if not compacted <= revision <= now:
                raise errors.HistoryGoneError(f"revision {revision} is not in the kept history ({compacted} to {now})")
            # SQLite takes the bare columns of a MIN() aggregate from the row holding the minimum.
            earliest = "SELECT key, prev_value, prev_version, MIN(revision) FROM nbdb_changes "
            earliest += f"WHERE revision > ? AND revision <= ? AND {start} AND key < ? GROUP BY key"
            changed = {row[0]: row for row in sql.execute(earliest, (revision, now, low, high))}
            # Of today's first ``limit + len(changed)`` keys, at least ``limit`` are unchanged or the page ends.
            current = f"SELECT * FROM nbdb_keys WHERE {start} AND key < ? ORDER BY key LIMIT ?"
            rows = sql.execute(current, (low, high, limit + len(changed))).fetchall()
        # Past values beyond today's last read key sort after ``limit`` unchanged ones: never in the page.
        page = {row[0]: kv.KeyValue(*row) for row in rows if row[0] not in changed}
        for key, value, version, _ in changed.values():
            if value is not None:
                page[key] = kv.KeyValue(key, value, version, 0)  # mod_revision of a past value: not kept, not used
        return [page[key] for key in sorted(page)[:limit]], revision

    def revision_now(self) -> int:
        with self._conn.transaction() as sql:
            return _state(sql)[0]

    def compact_keys(self, revision: int) -> None:
        with self._writer.transaction("IMMEDIATE") as sql:  # this namespace's history only, as a trim
            self._drop(sql, revision, _own_mark(_trims_row(sql, self.layout.prefix)))

    @contextmanager
    def lock(
        self, name: str, ttl: float, timeout: float | None, closed: threading.Event | None = None
    ) -> Iterator[LockHandle]:
        # The family's loop keeps ``timeout`` between tries; this keeps it within one, while another
        # process's long transaction holds the write lock (a try waited all of ?timeout=, 5 s by default).
        held = contextlib.ExitStack()
        with self._writer.waiting_at_most(timeouts.timeout_of(timeout, "lock timeout")):
            handle = held.enter_context(super().lock(name, ttl, timeout, closed))
        with held:
            yield handle

    def acquire_lease(self, name: str, token: bytes, ttl: float) -> bool:
        now = time.time()  # the wall clock: the one clock every process of the host shares
        take = "INSERT INTO nbdb_leases VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
        take += f"expires = excluded.expires WHERE NOT {_TIMED} OR expires <= ? OR value = excluded.value"
        return self._lease(take, (self.layout.lock(name), token, now + ttl, now))

    def renew_lease(self, name: str, token: bytes, ttl: float) -> bool:
        now = time.time()
        extend = f"UPDATE nbdb_leases SET expires = ? WHERE key = ? AND value = ? AND {_TIMED} AND expires > ?"
        return self._lease(extend, (now + ttl, self.layout.lock(name), token, now))

    def lease_held(self, name: str, token: bytes) -> bool:
        with self._conn.transaction() as sql:
            return _lease_holds(sql, self.layout.lock, name, token)

    def release_lease(self, name: str, token: bytes) -> None:
        self._lease("DELETE FROM nbdb_leases WHERE key = ? AND value = ?", (self.layout.lock(name), token))

    def _lease(self, statement: str, args: tuple[Any, ...]) -> bool:
        with self._writer.transaction("IMMEDIATE") as sql:
            return bool(sql.execute(statement, args).rowcount == 1)

    def close(self) -> None:
        """Close this backend's connection, and let go of what it shares with others in this process."""
        self._let_go()


class SqliteMemoryBackend(SqliteBackend):
    """``sqlite://`` without a path: the same code on an in-process database."""

    capabilities: ClassVar[Capabilities] = dataclasses.replace(
        SqliteBackend.capabilities,
        durability=Durability.VOLATILE,
        history="at least the last 10,000 changes (sqlite://?history=N)",
        cross_process=False,
        notes="In-process and volatile, like memory://; the Databases of one namespace share one store.",
    )
    metrics_label: ClassVar[str | None] = "sqlite"  # one scheme, one label (not "sqlitememory")


def _select(sql: sqlite3.Connection, keys: Sequence[str]) -> dict[str, kv.KeyValue]:
    unique = list(dict.fromkeys(keys))
    found: dict[str, kv.KeyValue] = {}
    for i in range(0, len(unique), _BATCH):
        chunk = unique[i : i + _BATCH]
        found.update((row[0], kv.KeyValue(*row)) for row in sql.execute(_keys_statement(len(chunk)), chunk))
    return found


_FEW = 16
"""Keys up to which a read of several is one point read each (``UNION ALL``), not ``IN (...)``."""


def _keys_statement(count: int) -> str:
    """The statement reading ``count`` distinct keys of nbdb_keys (bound in order), ``SELECT *`` of each found.

    SQLite builds a temporary b-tree of an ``IN (...)`` list of more than one value: for the two
    keys of an id counter and its mark, or of a create, that cost more than the reads themselves
    (a fresh page zeroed each time: 7.6 against 3.6 µs for two keys; even at 16).
    """
    if 1 < count <= _FEW:
        return " UNION ALL ".join(["SELECT * FROM nbdb_keys WHERE key = ?"] * count)
    return f"SELECT * FROM nbdb_keys WHERE key IN ({','.join('?' * count)})"


def _family_letters() -> str:
    """The first parts of the family's keys without a namespace (one letter each: ``o/``, ``i/``, ...)."""
    layout, id = kvplan.KeyLayout(""), uuid.UUID(int=0)
    keys = (
        layout.objects, layout.index("t", id), layout.referrers(("t", id)), layout.unique("t", UniqueKey("f", "v")),
        layout.expiries, layout.token("x"), layout.lock("x"), layout.counter("x"), layout.counter_mark("x"),
        layout.topic_marks,
    )  # fmt: skip
    letters = {key.partition("/")[0] for key in keys}
    assert all(len(letter) == 1 and letter.isalpha() for letter in letters), letters
    return "".join(sorted(letters))


def _trims_row(sql: sqlite3.Connection, prefix: str) -> Any:
    """The namespace's row of nbdb_trims (compacted, changes), None if it has none (or the file no such table)."""
    try:
        return sql.execute("SELECT compacted, changes FROM nbdb_trims WHERE prefix = ?", (prefix,)).fetchone()
    except sqlite3.OperationalError as exc:
        if _NO_TRIMS not in str(exc):
            raise
        return None


def _own_mark(row: Any) -> int:
    """The revision up to which a namespace's changes are surely dropped already (0: none known), by its
    :func:`_trims_row`.

    A trim's statements start after it: the log's primary key begins with the revision, and the
    whole log below (other namespaces' kept changes) was walked at every trim: 200,000 rows of a
    namespace of a large ``history=`` made each commit of a small one's 2 ms instead of 0.2.
    """
    return row[0] if row is not None and type(row[0]) is int and row[0] >= 0 else 0


def _with_trims(sql: sqlite3.Connection, statement: str, args: tuple[Any, ...]) -> sqlite3.Cursor:
    """``statement`` on nbdb_trims in a write transaction, the table made first in a file of nbdb before it."""
    try:
        return sql.execute(statement, args)
    except sqlite3.OperationalError as exc:
        if _NO_TRIMS not in str(exc):
            raise
    sql.execute(_TRIMS)
    return sql.execute(statement, args)


def _opening_error(exc: sqlite3.Error, target: str) -> errors.NbdbError:
    """The nbdb error for ``exc``, met opening ``target``.

    On a read-only filesystem SQLite opens the file read-only and then cannot make WAL's ``-shm``
    file: "unable to open database file", which read as BackendUnavailableError (a retry helps) where
    only a writable mount does. The same is AuthError for a directory this process may not write.
    """
    if target != _MEMORY and "unable to open" in str(exc):
        with contextlib.suppress(OSError, ValueError):
            if os.statvfs(os.path.dirname(target) or ".").f_flag & os.ST_RDONLY:
                return errors.AuthError(
                    f"sqlite opening {target!r}: its filesystem is mounted read-only; WAL mode needs to write "
                    f"its -wal and -shm files next to it, so nbdb cannot open it there ({exc})"
                )
    return ERRORS.translate(exc, f"opening {target!r}")


def _identity(path: str) -> _Inode:
    """The device and inode of the file at ``path`` (None: there is none); OSError if it cannot be looked at."""
    if path == _MEMORY:
        return None
    try:
        found = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return found.st_dev, found.st_ino


def _ms(seconds: float) -> int:
    """``seconds`` as PRAGMA busy_timeout takes it: whole milliseconds, at most what a C int holds."""
    return min(int(seconds * 1000), 2**31 - 1)


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Whether ``exc`` is SQLite's "the database is locked" (another connection holds the lock)."""
    text = str(exc)
    return "locked" in text or "busy" in text


def _state(sql: sqlite3.Connection) -> tuple[int, int, int]:
    """The state row (revision, compacted, changes) of ``sql``'s snapshot; CorruptRecordError if it is spoiled."""
    row = sql.execute("SELECT revision, compacted, changes FROM nbdb_state").fetchone()
    if row is None or type(row[0]) is not int or type(row[1]) is not int or type(row[2]) is not int:
        raise errors.CorruptRecordError(
            f"sqlite: the revision counter (nbdb_state) is {row!r}, not one row of whole numbers: "
            "another writer spoiled it; restore the file from a backup"
        )
    revision, compacted, changes = row
    return revision, compacted, changes


_TIMED = "typeof(expires) IN ('real', 'integer')"
"""A lease whose expiry is a number: one another tool set to text (which SQLite sorts after every
number) is expired, not held for ever."""


def _lease_holds(sql: sqlite3.Connection, key_of: Callable[[str], str], name: str, token: bytes) -> bool:
    held = f"SELECT 1 FROM nbdb_leases WHERE key = ? AND value = ? AND {_TIMED} AND expires > ?"
    return sql.execute(held, (key_of(name), token, time.time())).fetchone() is not None


def _changed_under(sql: sqlite3.Connection, prefix: str, revision: int) -> bool:
    newer = "SELECT key, mod_revision FROM nbdb_keys WHERE key >= ? AND key < ? AND mod_revision > ? LIMIT 1"
    row = sql.execute(newer, (prefix, _upper(prefix), revision)).fetchone()
    if row is not None and type(row[1]) is not int:  # text sorts after every number: it read as "changed" for ever
        raise errors.CorruptRecordError(
            f"sqlite: key {row[0]!r} holds the revision {row[1]!r}, not a whole number: another writer spoiled "
            "it; delete the key or restore the file from a backup"
        )
    return row is not None
