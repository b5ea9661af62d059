"""SQLite baseline: Python's ``sqlite3`` on the same file, the way an application would use it by hand.

One table of ``(key, value, version)`` in WAL mode at the URL's ``synchronous``
setting (so both sides pay for the same fsyncs); compare-and-swap is one
``UPDATE ... WHERE version = ?``, a create one ``INSERT`` (a taken key is a
conflict), an atomic multi-create one ``BEGIN IMMEDIATE`` transaction, a
table read one range over the key. Changes are followed through a second
table that :meth:`Client.publish` appends to in the same transaction; followers
of this process are woken at once, as nbdb's are. No index records, no
references, no revision log for every write: that is what the ratio measures.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from urllib.parse import parse_qs, unquote, urlsplit

from nbdb.bench.raw.base import Follower, RawClient, RawConflict
from nbdb.families.kvstore import ChangeSignal

__all__ = ["Client"]

_TABLES = """
CREATE TABLE IF NOT EXISTS raw_objects (key TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS raw_changes (id INTEGER PRIMARY KEY, key TEXT NOT NULL, value BLOB)
"""


class Client(RawClient):
    """One connection (and one more per follower) to the file of a ``sqlite://`` URL."""

    def __init__(self, url: str, namespace: str) -> None:
        super().__init__(url, namespace)
        parts = urlsplit(url)
        path = unquote(parts.netloc + parts.path) or ":memory:"
        self._path = path
        self._synchronous = parse_qs(parts.query).get("synchronous", ["full"])[-1]
        self._db = self._connect()
        self._lock = threading.Lock()  # one connection, used by one thread at a time
        self._published = ChangeSignal()  # the wake-up nbdb's watchers get, so latencies compare
        for statement in _TABLES.split(";"):
            self._db.execute(statement)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, timeout=5.0, isolation_level=None, check_same_thread=False)
        if self._path != ":memory:":
            db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self._synchronous}")
        return db

    def create(self, key: str, value: bytes) -> int:
        try:
            with self._lock:
                self._db.execute("INSERT INTO raw_objects VALUES (?, ?, 1)", (key, value))
        except sqlite3.IntegrityError:
            raise RawConflict(key) from None
        return 1

    def get(self, key: str) -> tuple[bytes, int] | None:
        with self._lock:
            row = self._db.execute("SELECT value, version FROM raw_objects WHERE key = ?", (key,)).fetchone()
        return None if row is None else (row[0], row[1])

    def update(self, key: str, value: bytes, expect_version: int) -> int:
        with self._lock:
            cas = "UPDATE raw_objects SET value = ?, version = version + 1 WHERE key = ? AND version = ?"
            if self._db.execute(cas, (value, key, expect_version)).rowcount != 1:
                raise RawConflict(key)
        return expect_version + 1

    def delete(self, key: str, expect_version: int) -> None:
        with self._lock:
            cas = "DELETE FROM raw_objects WHERE key = ? AND version = ?"
            if self._db.execute(cas, (key, expect_version)).rowcount != 1:
                raise RawConflict(key)

    def create_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT INTO raw_objects VALUES (?, ?, 1)", items)
            except sqlite3.IntegrityError:
                self._db.execute("ROLLBACK")
                raise RawConflict(items[0][0]) from None
            self._db.execute("COMMIT")

    def scan(self, prefix: str) -> list[bytes]:
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        with self._lock:
            rows = self._db.execute("SELECT value FROM raw_objects WHERE key >= ? AND key < ?", (prefix, upper))
            return [value for (value,) in rows]

    def publish(self, key: str, value: bytes, expect_version: int) -> int:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            cas = "UPDATE raw_objects SET value = ?, version = version + 1 WHERE key = ? AND version = ?"
            if self._db.execute(cas, (value, key, expect_version)).rowcount != 1:
                self._db.execute("ROLLBACK")
                raise RawConflict(key)
            self._db.execute("INSERT INTO raw_changes (key, value) VALUES (?, ?)", (key, value))
            self._db.execute("COMMIT")
        self._published.notify()
        return expect_version + 1

    def follower(self) -> Follower:
        if self._path == ":memory:":
            return _Follower(self._db, self._lock, self._published, owned=False)
        return _Follower(self._connect(), threading.Lock(), self._published, owned=True)

    def cleanup(self) -> None:
        upper = self.namespace + "0"  # "/" + 1: every key under "<namespace>/"
        with self._lock:
            self._db.execute("DELETE FROM raw_objects WHERE key >= ? AND key < ?", (self.namespace + "/", upper))
            self._db.execute("DELETE FROM raw_changes WHERE key >= ? AND key < ?", (self.namespace + "/", upper))

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _Follower(Follower):
    """Reads the change table after the last id seen; woken by this process's publishes, else polls."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock, published: ChangeSignal, owned: bool) -> None:
        self._db, self._lock, self._published, self._owned = db, lock, published, owned
        with lock:
            self._seen = db.execute("SELECT coalesce(max(id), 0) FROM raw_changes").fetchone()[0]
        self._closed = False

    def poll(self, timeout: float) -> list[tuple[str, bytes | None]]:
        deadline = time.monotonic() + timeout
        while not self._closed:
            generation = self._published.generation
            with self._lock:
                rows = self._db.execute("SELECT id, key, value FROM raw_changes WHERE id > ?", (self._seen,)).fetchall()
            if rows:
                self._seen = rows[-1][0]
                return [(key, value) for _, key, value in rows]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._published.wait(generation, min(remaining, 0.01))
        return []

    def close(self) -> None:
        self._closed = True
        if self._owned:
            with self._lock:
                self._db.close()
