"""The memory backend's baseline: a dict of (bytes, version) behind one lock.

It is what an application would write for an in-process store with
compare-and-swap and a change feed: the floor under nbdb's memory backend.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Sequence

from nbdb.bench.raw.base import Follower, RawClient, RawConflict

__all__ = ["Client"]


class Client(RawClient):
    """A dict and a lock; a list of changes and a condition for followers."""

    def __init__(self, url: str, namespace: str) -> None:
        super().__init__(url, namespace)
        self._data: dict[str, tuple[bytes, int]] = {}
        self._cond = threading.Condition(threading.Lock())
        self._log: list[tuple[int, str, bytes | None]] = []
        self._seq = 0

    def create(self, key: str, value: bytes) -> int:
        with self._cond:
            if key in self._data:
                raise RawConflict(key)
            self._data[key] = (value, 1)
            return 1

    def get(self, key: str) -> tuple[bytes, int] | None:
        with self._cond:
            return self._data.get(key)

    def update(self, key: str, value: bytes, expect_version: int) -> int:
        with self._cond:
            current = self._data.get(key)
            if current is None or current[1] != expect_version:
                raise RawConflict(key)
            self._data[key] = (value, expect_version + 1)
            return expect_version + 1

    def delete(self, key: str, expect_version: int) -> None:
        with self._cond:
            current = self._data.get(key)
            if current is None or current[1] != expect_version:
                raise RawConflict(key)
            del self._data[key]

    def create_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        with self._cond:
            if any(key in self._data for key, _ in items):
                raise RawConflict(items[0][0])
            for key, value in items:
                self._data[key] = (value, 1)

    def scan(self, prefix: str) -> list[bytes]:
        with self._cond:
            return [value for key, (value, _) in self._data.items() if key.startswith(prefix)]

    def publish(self, key: str, value: bytes, expect_version: int) -> int:
        with self._cond:
            current = self._data.get(key)
            if current is None or current[1] != expect_version:
                raise RawConflict(key)
            version = expect_version + 1
            self._data[key] = (value, version)
            self._seq += 1
            self._log.append((self._seq, key, value))
            self._cond.notify_all()
            return version

    def follower(self) -> Follower:
        return _Follower(self)

    def close(self) -> None:
        self._data.clear()
        self._log.clear()


class _Follower(Follower):
    def __init__(self, client: Client) -> None:
        self._client = client
        with client._cond:
            self._seen = client._seq
        self._closed = False

    def poll(self, timeout: float) -> list[tuple[str, bytes | None]]:
        client = self._client
        deadline = time.monotonic() + timeout
        with client._cond:
            while not self._closed and client._seq <= self._seen:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                client._cond.wait(remaining)
            log = client._log
            start = bisect.bisect_right(log, self._seen, key=lambda entry: entry[0])
            out = [(key, value) for _, key, value in log[start:]]
            self._seen = client._seq
            return out

    def close(self) -> None:
        with self._client._cond:
            self._closed = True
            self._client._cond.notify_all()
