"""Redis baseline with redis-py: one hash of values and one of versions per table, Lua for CAS.

This is how a Redis-savvy application stores versioned objects: ``HGET`` of
value and version in one pipelined round trip, compare-and-swap writes and
atomic multi-object creates as one ``EVALSHA`` each (one round trip, like a
``WATCH``/``MULTI`` without its retries), a table listed with one
``HGETALL``, and changes fanned out with ``PUBLISH`` from the same script.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nbdb.bench.raw.base import Follower, RawClient, RawConflict

__all__ = ["Client"]

_CREATE = """
for i, field in ipairs(ARGV) do
  if i % 2 == 1 and redis.call('HEXISTS', KEYS[2], field) == 1 then return 0 end
end
for i = 1, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('HSET', KEYS[2], ARGV[i], 1)
end
return 1
"""

_UPDATE = """
local v = redis.call('HGET', KEYS[2], ARGV[1])
if v ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local n = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[1] .. '\\n' .. ARGV[2]) end
return n
"""

_DELETE = """
local v = redis.call('HGET', KEYS[2], ARGV[1])
if v ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""


class Client(RawClient):
    """redis-py on one connection pool."""

    def __init__(self, url: str, namespace: str) -> None:
        super().__init__(url, namespace)
        import redis

        self._redis: Any = redis.Redis.from_url(url.split("?", 1)[0] if url.startswith("redis://") else url)
        self._create = self._redis.register_script(_CREATE)
        self._update = self._redis.register_script(_UPDATE)
        self._delete = self._redis.register_script(_DELETE)
        self._channel = f"{namespace}/changes"

    def _split(self, key: str) -> tuple[str, str, str]:
        table, _, field = key.rpartition("/")
        return table, f"{table}#v", field

    def create(self, key: str, value: bytes) -> int:
        values, versions, field = self._split(key)
        if not self._create(keys=[values, versions], args=[field, value]):
            raise RawConflict(key)
        return 1

    def get(self, key: str) -> tuple[bytes, int] | None:
        values, versions, field = self._split(key)
        pipe = self._redis.pipeline(transaction=False)
        pipe.hget(values, field)
        pipe.hget(versions, field)
        value, version = pipe.execute()
        return None if value is None else (value, int(version))

    def update(self, key: str, value: bytes, expect_version: int) -> int:
        values, versions, field = self._split(key)
        version = self._update(keys=[values, versions], args=[field, value, expect_version, ""])
        if not version:
            raise RawConflict(key)
        return int(version)

    def delete(self, key: str, expect_version: int) -> None:
        values, versions, field = self._split(key)
        if not self._delete(keys=[values, versions], args=[field, expect_version]):
            raise RawConflict(key)

    def create_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        values, versions, _ = self._split(items[0][0])
        args: list[Any] = []
        for key, value in items:
            args += [self._split(key)[2], value]
        if not self._create(keys=[values, versions], args=args):
            raise RawConflict(items[0][0])

    def scan(self, prefix: str) -> list[bytes]:
        return list(self._redis.hgetall(prefix.rstrip("/")).values())

    def publish(self, key: str, value: bytes, expect_version: int) -> int:
        values, versions, field = self._split(key)
        version = self._update(keys=[values, versions], args=[field, value, expect_version, self._channel])
        if not version:
            raise RawConflict(key)
        return int(version)

    def follower(self) -> Follower:
        return _Follower(self._redis, self._channel)

    def cleanup(self) -> None:
        keys = list(self._redis.scan_iter(match=f"{self.namespace}/*", count=1000))
        for i in range(0, len(keys), 500):
            self._redis.delete(*keys[i : i + 500])

    def close(self) -> None:
        self._redis.close()


class _Follower(Follower):
    def __init__(self, client: Any, channel: str) -> None:
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(channel)
        # Wait for the subscription to be confirmed, so no publish is missed.
        self._pubsub.get_message(timeout=1.0, ignore_subscribe_messages=False)

    def poll(self, timeout: float) -> list[tuple[str, bytes | None]]:
        out: list[tuple[str, bytes | None]] = []
        message = self._pubsub.get_message(timeout=timeout)
        while message is not None:
            field, _, value = message["data"].partition(b"\n")
            out.append((field.decode(), value))
            message = self._pubsub.get_message(timeout=0.0)
        return out

    def close(self) -> None:
        self._pubsub.close()
