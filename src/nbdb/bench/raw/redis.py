"""Redis baseline with redis-py: one hash of values and one of versions per table, Lua for CAS.

This is how a Redis-savvy application stores versioned objects: ``HGET`` of
value and version in one pipelined round trip, compare-and-swap writes and
atomic multi-object creates as one ``EVALSHA`` each (one round trip, like a
``WATCH``/``MULTI`` without its retries), a table listed with one
``HGETALL``, and changes fanned out with ``PUBLISH`` from the same script.

:class:`ContractClient` (``raw+contract`` in the report) is the second
baseline: the server work nbdb's contract needs, written by hand as a
Redis-savvy application would, still one ``EVALSHA`` per commit. A commit
is exactly-once (a token key checked first and written last, with a TTL);
a create checks that the object it references exists and records the reverse
reference (a set per target), claims its unique name (a hash of names) and keeps
what it references and claims in an index hash (so a delete can release
them); a delete refuses an object that is still referenced; every commit
takes the next revision (``INCR``) and appends its changes, with each
object's previous value and version, to one change stream a watcher could
resume from. It does nothing else: no topics, no per-topic streams, no
directory sets for consistent batched lists, no group commit.
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import Sequence
from typing import Any

from nbdb.bench.raw.base import Follower, RawClient, RawConflict

__all__ = ["BASELINES", "Client", "ContractClient"]

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


# ARGV: namespace, token, then per write seven fields: kind (c create, u update,
# d delete), table, id, value, expected version, referenced table/id ('' none),
# unique name ('' none). Returns the revision, 0 on a failed condition, -1 if
# the token had applied already.
_CONTRACT = """
local ns, token = ARGV[1], ARGV[2]
local tk = ns .. '#ct:' .. token
if redis.call('EXISTS', tk) == 1 then return -1 end
local writes = {}
for i = 3, #ARGV, 7 do
  local t = ns .. '/' .. ARGV[i + 1]
  writes[#writes + 1] = {ARGV[i], t, ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4]), ARGV[i + 5], ARGV[i + 6]}
end
local old, claimed = {}, {}
for j, w in ipairs(writes) do
  local kind, t, id = w[1], w[2], w[3]
  local cur = redis.call('HMGET', t .. '#v', id)[1]
  if kind == 'c' then
    if cur then return 0 end
    if w[6] ~= '' then
      local tt, tid = w[6]:match('^(.*)/([^/]*)$')
      if redis.call('HEXISTS', ns .. '/' .. tt .. '#v', tid) == 0 then return 0 end
    end
    if w[7] ~= '' then
      -- Claimed below, once every condition held: a failed commit leaves no claim behind.
      if claimed[t .. '#' .. w[7]] or redis.call('HEXISTS', t .. '#u', w[7]) == 1 then return 0 end
      claimed[t .. '#' .. w[7]] = true
    end
  else
    if tonumber(cur) ~= w[5] then return 0 end
    if kind == 'd' and redis.call('SCARD', 'refs:' .. t .. '/' .. id) > 0 then return 0 end
    old[j] = redis.call('HGET', t, id)
  end
end
local rev = redis.call('INCR', ns .. '#rev')
local log = {}
for j, w in ipairs(writes) do
  local kind, t, id, value = w[1], w[2], w[3], w[4]
  if kind == 'd' then
    local index = redis.call('HGET', t .. '#i', id) or ''
    local ref, name = index:match('^([^\\n]*)\\n(.*)$')
    if ref and ref ~= '' then redis.call('SREM', 'refs:' .. ns .. '/' .. ref, id) end
    if name and name ~= '' then redis.call('HDEL', t .. '#u', name) end
    redis.call('HDEL', t, id)
    redis.call('HDEL', t .. '#v', id)
    redis.call('HDEL', t .. '#i', id)
    log[#log + 1] = id .. '\\n\\n0\\n' .. old[j]
  else
    local version = kind == 'c' and 1 or w[5] + 1
    redis.call('HSET', t, id, value)
    redis.call('HSET', t .. '#v', id, version)
    if kind == 'c' then
      redis.call('HSET', t .. '#i', id, w[6] .. '\\n' .. w[7])
      if w[7] ~= '' then redis.call('HSET', t .. '#u', w[7], id) end
      if w[6] ~= '' then redis.call('SADD', 'refs:' .. ns .. '/' .. w[6], id) end
    end
    log[#log + 1] = id .. '\\n' .. value .. '\\n' .. version .. '\\n' .. (old[j] or '')
  end
end
redis.call('XADD', ns .. '#log', 'MAXLEN', '~', 10000, rev .. '-0', 't', token, 'c', table.concat(log, '\\0'))
redis.call('SET', tk, rev, 'PX', 600000)
return rev
"""

_REFERENCES = {"switch": "LogicalSwitch"}
"""The fields of a raw document that reference another object, and the table it is in."""


class ContractClient(Client):
    """The server work of nbdb's contract by hand: tokens, references, unique names, a change log (module doc)."""

    def __init__(self, url: str, namespace: str) -> None:
        super().__init__(url, namespace)
        self._commit = self._redis.register_script(_CONTRACT)
        self._tokens = (f"{secrets.token_hex(8)}{n:x}" for n in itertools.count())

    def _write(self, kind: str, key: str, value: bytes, expect_version: int) -> list[Any]:
        table, _, id = key.rpartition("/")
        ref = name = ""
        if kind == "c":
            doc = json.loads(value)
            name = doc.get("name") or ""
            for field, target in _REFERENCES.items():
                if doc.get(field):
                    ref = f"{target}/{doc[field]}"
        return [kind, table.rpartition("/")[2], id, value, expect_version, ref, name]

    def _run(self, writes: list[Any], key: str) -> int:
        revision = int(self._commit(args=[self.namespace, next(self._tokens), *writes]))
        if revision == 0:
            raise RawConflict(key)
        return revision

    def create(self, key: str, value: bytes) -> int:
        self._run(self._write("c", key, value, 0), key)
        return 1

    def update(self, key: str, value: bytes, expect_version: int) -> int:
        self._run(self._write("u", key, value, expect_version), key)
        return expect_version + 1

    def delete(self, key: str, expect_version: int) -> None:
        self._run(self._write("d", key, b"", expect_version), key)

    def create_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        writes: list[Any] = []
        for key, value in items:
            writes += self._write("c", key, value, 0)
        self._run(writes, items[0][0])

    def cleanup(self) -> None:
        super().cleanup()
        for pattern in (f"{self.namespace}#*", f"refs:{self.namespace}/*"):
            keys = list(self._redis.scan_iter(match=pattern, count=1000))
            for i in range(0, len(keys), 500):
                self._redis.delete(*keys[i : i + 500])


BASELINES: dict[str, type[RawClient]] = {"contract": ContractClient}
"""Baselines beside :class:`Client`, by name: ``raw+contract`` in the report."""
