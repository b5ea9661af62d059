"""Redis backend: atomic Lua commits, a resumable change stream per topic, locks and ids.

URLs (see ``docs/backends/redis.md``)::

    redis://[[user]:password@]host[:port][/db][?option=value&...]
    rediss://...                                   (TLS)
    redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db][?...]

Every commit is one Lua script (EVALSHA, reloaded on NOSCRIPT) that checks the
conditions, writes the keys, bumps the revision and appends the commit to the
Redis Streams that watchers read, so a watcher that reconnects resumes from
its revision and misses nothing. The generic part (merging logs, anchors,
"history gone") lives in :mod:`nbdb.families.pubsub`.

Layout under the root ``<prefix>:{<namespace>}:`` (``nbdb:{}:`` by default)::

    k:<key>        hash {v: value, n: version, m: mod revision} of one family key
    d:<dir>        set of the children of a directory (``o/t/``: ``tbl/``...; leaves: ids)
    dmr            hash dir -> revision of the last change below it (validates batched lists)
    head           hash {r: revision, t: token of that commit}
    clog           stream <rev>-0 {t: token}: the commit log (anchors of watchers)
    log            stream <rev>-0 {t, c}: every object change of a commit
    log:<topic>    stream <rev>-0 {t, c}: the changes of one topic's objects
    logs           set of the topics that have a log
    ct:<token>     revision of an applied commit (10 minutes: makes a retried commit exactly-once)
    lease:<key>    lock tokens (SET NX PX)
    id:<name>      id counters (INCR)
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar
from urllib.parse import unquote, urlsplit

import redis
import redis.exceptions as rexc
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

from nbdb import errors
from nbdb.capabilities import Atomicity, Capabilities, Durability
from nbdb.families.kv import CommitToken, Condition, Exists, KeyValue, PrefixUnchangedSince, VersionIs
from nbdb.families.pubsub import (
    GENESIS,
    ChangeLogBackend,
    ChangeLogReader,
    LogEntry,
    LogRead,
    decode_changes,
)
from nbdb.options import Options, split_hosts, split_userinfo
from nbdb.retry import ErrorRule, ExceptionMap, RetryPolicy

__all__ = ["RedisBackend", "RedisConfig"]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_HISTORY = 10_000
_COMMIT_TOKEN_TTL_MS = 600_000
_SCHEMES = ("redis", "rediss", "redis+sentinel")

# ---------------------------------------------------------------- Lua

# Helpers shared by the scripts. P is the root of the namespace's keys.
# A "directory" is a key prefix ending in '/'; d:<dir> holds its children, so a
# range never needs KEYS or a SCAN of the whole database.
_LUA_PRELUDE = r"""
local P = ARGV[1]
local function split(path)
  local body, trail = path, ''
  if body:sub(-1) == '/' then body = body:sub(1, -2); trail = '/' end
  local pos = body:match('^.*()/')
  if pos then return body:sub(1, pos), body:sub(pos + 1) .. trail end
  return '', body .. trail
end
local function walk(prefix, fn)
  local pos = prefix:match('^.*()/')
  local stack
  if pos then stack = {{prefix:sub(1, pos), prefix:sub(pos + 1)}} else stack = {{'', prefix}} end
  while #stack > 0 do
    local top = table.remove(stack)
    local dir, filter = top[1], top[2]
    for _, m in ipairs(redis.call('SMEMBERS', P .. 'd:' .. dir)) do
      if filter == '' or m:sub(1, #filter) == filter then
        if m:sub(-1) == '/' then
          stack[#stack + 1] = {dir .. m, ''}
        elseif fn(dir .. m) == false then
          return false
        end
      end
    end
  end
  return true
end
"""

# ARGV: P, object prefix, token, history, nconds, (kind, a, b)*, nputs, (key, value)*, ndels, key*
# kinds: v key version | e key - | p prefix revision.  Returns {1, rev} applied,
# {2, rev} applied earlier (a retry), {0} a condition failed, {3} the token was voided
# (a settlement decided that this commit never applies).
_COMMIT_LUA = (
    _LUA_PRELUDE
    + r"""
local OBJ = ARGV[2]
local token = ARGV[3]
local history = tonumber(ARGV[4])
local done = redis.call('GET', P .. 'ct:' .. token)
if done == 'void' then return {3} end
if done then return {2, tonumber(done)} end
local i = 5
for _ = 1, tonumber(ARGV[i]) do
  local kind, a, b = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  i = i + 3
  if kind == 'v' then
    if (tonumber(redis.call('HGET', P .. 'k:' .. a, 'n')) or 0) ~= tonumber(b) then return {0} end
  elseif kind == 'e' then
    if redis.call('EXISTS', P .. 'k:' .. a) == 0 then return {0} end
  else
    local since = tonumber(b)
    local ok = walk(a, function(key)
      return (tonumber(redis.call('HGET', P .. 'k:' .. key, 'm')) or 0) <= since
    end)
    if not ok then return {0} end
  end
end
i = i + 1
local puts = {}
for _ = 1, tonumber(ARGV[i]) do
  puts[#puts + 1] = {ARGV[i + 1], ARGV[i + 2]}
  i = i + 2
end
i = i + 1
local dels = {}
for _ = 1, tonumber(ARGV[i]) do
  dels[#dels + 1] = ARGV[i + 1]
  i = i + 1
end

-- Pass 1: read every previous state before writing anything, so that a
-- failing read (a foreign key of the wrong type) aborts with nothing written.
local cur, changes = {}, {}
local function load(key)
  local s = cur[key]
  if s == nil then
    local old = redis.call('HMGET', P .. 'k:' .. key, 'v', 'n')
    if old[2] then s = {old[1], tonumber(old[2])} else s = false end
    cur[key] = s
  end
  return s
end
for _, kv in ipairs(puts) do
  local s = load(kv[1])
  local ver = s and (s[2] + 1) or 1
  changes[#changes + 1] = {kv[1], kv[2], ver, s and s[1] or false, s and s[2] or 0}
  cur[kv[1]] = {kv[2], ver}
end
for _, key in ipairs(dels) do
  local s = load(key)
  if s then
    changes[#changes + 1] = {key, false, 0, s[1], s[2]}
    cur[key] = false
  end
end

-- The revision: never behind the commit log (a deleted head self-heals).
local rev = tonumber(redis.call('HGET', P .. 'head', 'r')) or 0
local top = redis.call('XREVRANGE', P .. 'clog', '+', '-', 'COUNT', 1)[1]
if top then rev = math.max(rev, tonumber(top[1]:match('^(%d+)'))) end
rev = rev + 1

-- Pass 2: write keys and directories.
local dirs = {}
for _, c in ipairs(changes) do
  if c[2] then
    redis.call('HSET', P .. 'k:' .. c[1], 'v', c[2], 'n', c[3], 'm', rev)
    if c[5] == 0 then
      local path = c[1]
      while path ~= '' do
        local d, name = split(path)
        local dk = P .. 'd:' .. d
        if redis.call('SADD', dk, name) == 0 or redis.call('SCARD', dk) > 1 then break end
        path = d
      end
    end
  else
    redis.call('DEL', P .. 'k:' .. c[1])
    local path = c[1]
    while path ~= '' do
      local d, name = split(path)
      local dk = P .. 'd:' .. d
      if redis.call('SREM', dk, name) == 0 or redis.call('EXISTS', dk) == 1 then break end
      path = d
    end
  end
  local path = c[1]
  while path ~= '' do
    path = split(path)
    dirs[path] = true
  end
end
for d in pairs(dirs) do
  if d == '' or redis.call('EXISTS', P .. 'd:' .. d) == 1 then
    redis.call('HSET', P .. 'dmr', d, rev)
  else
    redis.call('HDEL', P .. 'dmr', d)
  end
end

-- The change feed: the commit log, the log of all objects, one log per topic.
local function enc(s)
  if not s then return struct.pack('>i4', -1) end
  return struct.pack('>i4', #s) .. s
end
local all, topics = {}, {}
for _, c in ipairs(changes) do
  if c[1]:sub(1, #OBJ) == OBJ then
    local rec = enc(c[1]) .. enc(c[2]) .. enc(tostring(c[3])) .. enc(c[4]) .. enc(tostring(c[5]))
    all[#all + 1] = rec
    local topic = c[1]:sub(#OBJ + 1):match('^([^/]*)/')
    if topic then
      if not topics[topic] then topics[topic] = {} end
      table.insert(topics[topic], rec)
    end
  end
end
local id = rev .. '-0'
redis.call('XADD', P .. 'clog', 'MAXLEN', '~', history, id, 't', token)
-- Change logs keep at least what the commit log keeps: a watcher whose
-- anchor is still in the commit log finds every later entry.
local first = redis.call('XRANGE', P .. 'clog', '-', '+', 'COUNT', 1)[1][1]
if #all > 0 then
  redis.call('XADD', P .. 'log', 'MINID', '~', first, id, 't', token, 'c', table.concat(all))
end
for topic, recs in pairs(topics) do
  redis.call('XADD', P .. 'log:' .. topic, 'MINID', '~', first, id, 't', token, 'c', table.concat(recs))
  redis.call('SADD', P .. 'logs', topic)
end
redis.call('HSET', P .. 'head', 'r', rev, 't', token)
redis.call('SET', P .. 'ct:' .. token, rev, 'PX', __TTL__)
return {1, rev}
"""
).replace("__TTL__", str(_COMMIT_TOKEN_TTL_MS))

# ARGV: P, limit, prefix*.  Returns {rev, token, 1, (key, value, version, modrev)*}
# if at most ``limit`` keys, else {rev, token, 0, key*}.
_RANGE_LUA = (
    _LUA_PRELUDE
    + r"""
local limit = tonumber(ARGV[2])
local keys, seen = {}, {}
for j = 3, #ARGV do
  walk(ARGV[j], function(k)
    if not seen[k] then seen[k] = true; keys[#keys + 1] = k end
  end)
end
local h = redis.call('HMGET', P .. 'head', 'r', 't')
local out = {tonumber(h[1]) or 0, h[2] or ''}
if #keys > limit then
  out[3] = 0
  for _, k in ipairs(keys) do out[#out + 1] = k end
  return out
end
out[3] = 1
for _, k in ipairs(keys) do
  local v = redis.call('HMGET', P .. 'k:' .. k, 'v', 'n', 'm')
  out[#out + 1] = k
  out[#out + 1] = v[1]
  out[#out + 1] = v[2]
  out[#out + 1] = v[3]
end
return out
"""
)

# ARGV: P, revision. Forget the change history before ``revision`` (exact MINID).
_COMPACT_LUA = r"""
local P = ARGV[1]
local min = ARGV[2] .. '-0'
redis.call('XTRIM', P .. 'clog', 'MINID', min)
redis.call('XTRIM', P .. 'log', 'MINID', min)
for _, topic in ipairs(redis.call('SMEMBERS', P .. 'logs')) do
  redis.call('XTRIM', P .. 'log:' .. topic, 'MINID', min)
end
return 1
"""

# KEYS: ct:<token>; ARGV: ttl ms.  The revision the token's commit applied at, or
# nil after voiding it (from now on a commit with this token never applies).
_VOID_LUA = r"""
local v = redis.call('GET', KEYS[1])
if v == false then
  redis.call('SET', KEYS[1], 'void', 'PX', ARGV[1])
  return false
end
if v == 'void' then return false end
return tonumber(v)
"""

# KEYS: lease key; ARGV: token, ttl ms.  1 if the token holds the lease now (taken, or already its own).
_ACQUIRE_LUA = r"""
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if v then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: id counter, ct:<token>; ARGV: ttl ms.  INCR exactly once per token.
_ALLOCATE_LUA = r"""
local done = redis.call('GET', KEYS[2])
if done then return tonumber(done) end
local v = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], v, 'PX', ARGV[1])
return v
"""

_REFRESH_LUA = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE_LUA = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# ---------------------------------------------------------------- configuration

_RETRYABLE_REPLIES = ("loading", "busy", "masterdown", "tryagain", "readonly", "noreplicas", "clusterdown")


@dataclass(frozen=True)
class RedisConfig:
    """Connection settings parsed from a URL and options. The password never appears in ``repr``."""

    scheme: str
    hosts: tuple[tuple[str, int], ...]
    db: int
    service: str | None
    username: str | None
    password: str | None
    namespace: str
    prefix: str
    history: int
    socket_timeout: float
    connect_timeout: float
    retry: RetryPolicy
    wait_replicas: int
    wait_timeout: float
    batch: int
    ssl: bool
    ssl_options: Mapping[str, Any]
    sentinel_username: str | None
    sentinel_password: str | None
    client_name: str | None

    def __repr__(self) -> str:
        where = ",".join(f"{h}:{p}" for h, p in self.hosts)
        return f"RedisConfig({self.scheme}://{where}/{self.service or self.db}, namespace={self.namespace!r})"

    @property
    def root(self) -> str:
        """The prefix of every Redis key of this namespace (a hash tag keeps them in one slot)."""
        return f"{self.prefix}:{{{self.namespace}}}:"


_OPTION_NAMES = frozenset(
    {
        "namespace", "prefix", "history", "socket_timeout", "connect_timeout", "retries", "retry_backoff",
        "retry_deadline", "wait_replicas", "wait_timeout", "batch", "db", "ssl", "ssl_ca_certs", "ssl_certfile",
        "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname", "sentinel_username", "sentinel_password",
        "client_name",
    }
)  # fmt: skip
_NAME_RE = re.compile(r"^[^{}\s]*$")


def parse_url(url: str, options: Mapping[str, Any]) -> RedisConfig:
    """Parse a redis URL plus keyword options (which win over the query string)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise errors.ValidationError(f"not a redis URL scheme: {scheme!r} (want one of {', '.join(_SCHEMES)})")
    opts = Options.from_url(parts.query, options, _OPTION_NAMES, "redis")
    username, password, netloc = split_userinfo(parts.netloc)
    if password is None and username is not None:
        # redis://secret@host: a lone credential is a password (as redis-cli reads it).
        password, username = username, None
    sentinel = scheme == "redis+sentinel"
    hosts = split_hosts(netloc or "127.0.0.1", 26379 if sentinel else 6379, "redis")
    path = [unquote(p) for p in parts.path.split("/") if p]

    service = None
    db_text = opts.text("db")
    if sentinel:
        if not path:
            raise errors.ValidationError(
                "redis+sentinel URL needs the service name: redis+sentinel://host:port/SERVICE"
            )
        service = path[0]
        if len(path) > 2:
            raise errors.ValidationError("redis+sentinel URL path is /SERVICE[/DB]")
        if len(path) > 1:
            db_text = db_text or path[1]
    else:
        if len(hosts) != 1:
            raise errors.ValidationError("a redis:// URL names one server; use redis+sentinel:// for several")
        if len(path) > 1:
            raise errors.ValidationError("redis URL path is /DB")
        if path:
            db_text = db_text or path[0]
    db = Options({"db": db_text or "0"}, "redis").integer("db", 0, minimum=0)

    namespace = opts.text("namespace", "")
    prefix = opts.text("prefix", "nbdb")
    for name, value in (("namespace", namespace), ("prefix", prefix)):
        if not _NAME_RE.match(value):
            raise errors.ValidationError(f"redis option {name} must not contain braces or spaces: {value!r}")
    if not prefix:
        raise errors.ValidationError("redis option prefix must not be empty")

    ssl_keys = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")
    ssl_flag = opts.flag("ssl")
    if scheme == "rediss":
        if ssl_flag is False:
            raise errors.ValidationError("rediss:// is TLS; ssl=false contradicts it (use redis://)")
        use_ssl = True
    elif scheme == "redis":
        use_ssl = False
        if ssl_flag or any(k in opts for k in ssl_keys):
            raise errors.ValidationError("TLS options on a redis:// URL: use rediss:// for TLS")
    else:
        use_ssl = bool(ssl_flag) or (ssl_flag is None and any(k in opts for k in ssl_keys))
    ssl_options: dict[str, Any] = {}
    if use_ssl:
        for key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            if key in opts:
                ssl_options[key] = opts.text(key)
        if "ssl_cert_reqs" in opts:
            ssl_options["ssl_cert_reqs"] = opts.choice("ssl_cert_reqs", "required", ("required", "optional", "none"))
        if "ssl_check_hostname" in opts:
            ssl_options["ssl_check_hostname"] = opts.flag("ssl_check_hostname", True)

    return RedisConfig(
        scheme=scheme,
        hosts=hosts,
        db=db,
        service=service,
        username=username,
        password=password,
        namespace=namespace,
        prefix=prefix,
        history=opts.integer("history", DEFAULT_HISTORY, minimum=1),
        socket_timeout=opts.number("socket_timeout", 5.0, minimum=0.01),
        connect_timeout=opts.number("connect_timeout", 2.0, minimum=0.01),
        retry=opts.retry_policy(
            RetryPolicy(attempts=9 if sentinel else 4, backoff=0.2, max_backoff=2.0, deadline=None)
        ),
        wait_replicas=opts.integer("wait_replicas", 0, minimum=0),
        wait_timeout=opts.number("wait_timeout", 1.0, minimum=0.001),
        batch=opts.integer("batch", 1000, minimum=1),
        ssl=use_ssl,
        ssl_options=ssl_options,
        sentinel_username=opts.text("sentinel_username"),
        sentinel_password=opts.text("sentinel_password"),
        client_name=opts.text("client_name"),
    )


# ---------------------------------------------------------------- errors and retries

_AUTH = (rexc.AuthenticationError, rexc.AuthorizationError, rexc.AuthenticationWrongNumberOfArgsError,
         rexc.NoPermissionError)  # fmt: skip
ERRORS = ExceptionMap(
    "redis",
    [
        ErrorRule(_AUTH, errors.AuthError, message="redis refused the credentials or the command"),
        # A connection that could not be opened carried no request.
        ErrorRule((rexc.ConnectionError,), errors.BackendUnavailableError, retryable=True, unsent=True,
                  contains=("connecting to", "connection refused", "error 111", "no master", "not the master",
                            "timeout connecting")),
        ErrorRule((MasterNotFoundError,), errors.BackendUnavailableError, retryable=True, unsent=True),
        ErrorRule((rexc.ReadOnlyError,), errors.BackendUnavailableError, retryable=True, unsent=True),
        ErrorRule((rexc.ConnectionError, rexc.TimeoutError), errors.BackendUnavailableError, retryable=True),
        ErrorRule((rexc.ResponseError,), errors.BackendUnavailableError, contains=_RETRYABLE_REPLIES, retryable=True,
                  unsent=True),
        ErrorRule((rexc.ResponseError,), errors.CorruptRecordError, contains=("wrongtype",),
                  message="a key of the nbdb namespace holds foreign data"),
    ],
)  # fmt: skip
"""How redis-py's exceptions become nbdb errors, and which may be retried."""


def _check_master(connection: Any, address: Any) -> None:
    connection.send_command("ROLE")
    role = connection.read_response()
    name = role[0].decode() if isinstance(role[0], bytes) else str(role[0])
    if name != "master":
        connection.disconnect()
        raise rexc.ConnectionError(f"{address[0]}:{address[1]} is a {name}, not the master (failover under way)")


class _MasterConnection(SentinelManagedConnection):
    """A Sentinel-managed connection that refuses a node that is not (any longer) the master.

    Reads on a demoted master would succeed and return stale data, unlike
    writes, which fail with READONLY.
    """

    def connect_to(self, address: Any) -> None:
        super().connect_to(address)  # type: ignore[no-untyped-call]
        _check_master(self, address)


class _MasterSSLConnection(SentinelManagedSSLConnection):
    """The TLS variant of :class:`_MasterConnection`."""

    def connect_to(self, address: Any) -> None:
        super().connect_to(address)  # type: ignore[no-untyped-call]
        _check_master(self, address)


class _QuorumSentinel(Sentinel):
    """Sentinel discovery that takes the master a majority of the sentinels agree on.

    redis-py takes the first sentinel's answer; right after a failover a
    lagging sentinel still names the old master, which may be back (empty,
    or about to be demoted) — writes acknowledged there would be lost.
    """

    def discover_master(self, service_name: str) -> tuple[str, int]:
        votes: dict[tuple[str, int], int] = {}
        problems: list[str] = []
        for sentinel in self.sentinels:
            try:
                masters: Any = sentinel.sentinel_masters()
                state = masters.get(service_name)
            except (rexc.ConnectionError, rexc.TimeoutError) as exc:
                problems.append(repr(exc))
                continue
            if state and self.check_master_state(state, service_name):  # type: ignore[no-untyped-call]
                address = (state["ip"], int(state["port"]))
                votes[address] = votes.get(address, 0) + 1
        majority = len(self.sentinels) // 2 + 1
        for address, count in votes.items():
            if count >= majority:
                return address
        raise MasterNotFoundError(
            f"no master of {service_name!r} named by a majority of the sentinels (votes {votes}; {problems})"
        )


class _Connector:
    """Builds redis-py clients (standalone or through Sentinel) and runs calls with bounded retries."""

    def __init__(self, config: RedisConfig) -> None:
        self.config = config
        self.where = ",".join(f"{h}:{p}" for h, p in config.hosts)
        self._sentinel: Any = None
        if config.scheme == "redis+sentinel":
            sentinel_kwargs: dict[str, Any] = {
                "socket_timeout": config.socket_timeout,
                "socket_connect_timeout": config.connect_timeout,
                "retry": Retry(NoBackoff(), 0),
            }
            if config.sentinel_password is not None:
                sentinel_kwargs["password"] = config.sentinel_password
                sentinel_kwargs["username"] = config.sentinel_username
            if config.ssl:
                sentinel_kwargs.update(ssl=True, **config.ssl_options)
            self._sentinel = _QuorumSentinel(list(config.hosts), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
            self.where = f"{self.where}/{config.service}"

    def _kwargs(self, socket_timeout: float) -> dict[str, Any]:
        cfg = self.config
        kwargs: dict[str, Any] = {
            "db": cfg.db,
            "username": cfg.username,
            "password": cfg.password,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": cfg.connect_timeout,
            "retry": Retry(NoBackoff(), 0),
            "client_name": cfg.client_name,
        }
        if cfg.ssl:
            kwargs.update(ssl=True, **cfg.ssl_options)
        return kwargs

    def client(self, socket_timeout: float | None = None) -> Any:
        """A new client with a pool of its own."""
        timeout = self.config.socket_timeout if socket_timeout is None else socket_timeout
        kwargs = self._kwargs(timeout)
        if self._sentinel is not None:
            kwargs["connection_class"] = _MasterSSLConnection if self.config.ssl else _MasterConnection
            return self._sentinel.master_for(self.config.service, **kwargs)
        host, port = self.config.hosts[0]
        return redis.Redis(host=host, port=port, **kwargs)

    def run(self, call: Callable[[], T], *, write: bool = False, stop: threading.Event | None = None) -> T:
        """``call()`` under the retry policy; nbdb errors only.

        Every write nbdb sends is safe to send again (commits, lock and id
        scripts carry a token), so a write is retried like a read; if its
        tries run out after one may have landed, CommitUnknownError.
        """
        return self.config.retry.call(call, ERRORS, context=f"at {self.where}", write=write, stop=stop)

    def close(self) -> None:
        if self._sentinel is not None:
            for s in self._sentinel.sentinels:
                s.close()


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# ---------------------------------------------------------------- change-log reader


class _RedisLogReader(ChangeLogReader):
    """A watcher's own connection: MULTI(head, anchor, XREAD) reads and XREAD BLOCK waits."""

    def __init__(self, backend: RedisBackend) -> None:
        self._backend = backend
        self._connector = backend._connector
        # The socket timeout must outlast a blocking XREAD.
        self._client = self._connector.client(backend.config.socket_timeout + 2.0)
        self._closed = threading.Event()

    def read(self, logs: Sequence[str], after: int, limit: int) -> LogRead:
        root = self._backend.root

        def call() -> list[Any]:
            pipe = self._client.pipeline(transaction=True)
            pipe.hmget(root + "head", "r", "t")
            if after > 0:
                pipe.xrange(root + "clog", f"{after}-0", f"{after}-0")
            else:
                pipe.xrange(root + "clog", "-", "+", count=1)
            pipe.xread({name: f"{after}-0" for name in logs}, count=limit)
            return list(pipe.execute())

        (head_r, head_t), anchor_entries, streams = self._connector.run(call, stop=self._closed)
        head = int(head_r or 0)
        head_token = _s(head_t) if head_t is not None else ""
        anchor: str | None
        if after > 0:
            anchor = _s(anchor_entries[0][1][b"t"]) if anchor_entries else None
        elif not anchor_entries:
            anchor = GENESIS if head == 0 else None
        else:
            anchor = GENESIS if anchor_entries[0][0] == b"1-0" else None
        entries: dict[str, list[LogEntry]] = {}
        truncated = set()
        for name, items in streams or []:
            batch = []
            for entry_id, fields in items:
                revision = int(entry_id.split(b"-")[0])
                batch.append(LogEntry(revision, _s(fields[b"t"]), decode_changes(fields.get(b"c", b""), revision)))
            key = _s(name)
            entries[key] = batch
            if len(batch) >= limit:
                truncated.add(key)
        return LogRead(head, head_token, anchor, entries, frozenset(truncated))

    def wait(self, logs: Sequence[str], after: int, timeout: float) -> None:
        block = max(1, int(timeout * 1000))
        self._connector.run(
            lambda: self._client.xread({name: f"{after}-0" for name in logs}, count=1, block=block),
            stop=self._closed,
        )

    def close(self) -> None:
        self._closed.set()
        try:
            self._client.connection_pool.disconnect()
        except Exception:  # closing must not fail
            log.debug("redis log reader: error while disconnecting", exc_info=True)


# ---------------------------------------------------------------- the backend


class RedisBackend(ChangeLogBackend):
    """Key-value backend over Redis (standalone, TLS, ACL, Sentinel)."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        transactions=Atomicity.ATOMIC,
        linearizable_reads=True,
        server_side_topic_filter=True,
        durability=Durability.CONFIGURABLE,
        history="at least the last 10,000 commits (?history=N; streams are trimmed approximately)",
        cross_process=True,
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
    token_ttl = _COMMIT_TOKEN_TTL_MS / 1000

    def __init__(self, config: RedisConfig) -> None:
        super().__init__("", config.retry)
        self.config = config
        self.root = config.root
        self.log_read_limit = min(config.batch, 1000)
        self._object_prefix = f"{self.key_prefix}o/"
        self._connector = _Connector(config)
        self._client = self._connector.client()
        self._commit_script = self._client.register_script(_COMMIT_LUA)
        self._range_script = self._client.register_script(_RANGE_LUA)
        self._compact_script = self._client.register_script(_COMPACT_LUA)
        self._refresh_script = self._client.register_script(_REFRESH_LUA)
        self._release_script = self._client.register_script(_RELEASE_LUA)
        self._void_script = self._client.register_script(_VOID_LUA)
        self._acquire_script = self._client.register_script(_ACQUIRE_LUA)
        self._allocate_script = self._client.register_script(_ALLOCATE_LUA)
        self._closed = False

    def __repr__(self) -> str:
        return f"<RedisBackend {self.config!r}>"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisBackend:
        """Open a redis, rediss or redis+sentinel URL; checks that the server answers (and the credentials)."""
        backend = cls(parse_url(url, options))
        try:
            backend._run(backend._client.ping)
        except BaseException:
            backend.close()
            raise
        return backend

    def _run(self, call: Callable[[], T], *, write: bool = False) -> T:
        if self._closed:
            raise errors.BackendUnavailableError("the redis backend is closed")
        return self._connector.run(call, write=write)

    # ---------------------------------------------------------------- reads

    def _kv(self, key: str, fields: Sequence[Any]) -> KeyValue | None:
        value, version, mod = fields
        if version is None:
            return None
        try:
            return KeyValue(key, value if value is not None else b"", int(version), int(mod or 0))
        except ValueError:
            raise errors.CorruptRecordError(f"key {key!r} has a damaged version", key=key) from None

    def get_key(self, key: str) -> KeyValue | None:
        fields = self._run(lambda: self._client.hmget(self.root + "k:" + key, "v", "n", "m"))
        return self._kv(key, fields)

    def get_keys(self, keys: Sequence[str]) -> list[KeyValue | None]:
        if len(keys) <= 1:
            return [self.get_key(k) for k in keys]

        def call() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(self.root + "k:" + key, "v", "n", "m")
            return list(pipe.execute())

        return [self._kv(k, f) for k, f in zip(keys, self._run(call), strict=True)]

    def range_keys(self, prefixes: Sequence[str]) -> tuple[list[KeyValue], int]:
        """Keys under ``prefixes`` at one revision.

        Up to ``batch`` keys: one script reads them all atomically. More: the
        script returns the key names at revision R0, values are read in
        pipelined batches, and the result stands only if no key under the
        prefixes changed since R0 (per-directory change revisions); otherwise
        it is retried, and finally read in one atomic script.
        """
        if not prefixes:
            return [], self.revision_now()
        for attempt in range(4):
            args = [self.root, self.config.batch if attempt < 3 else 2**31, *prefixes]
            reply = self._run(lambda args=args: self._range_script(args=args))  # type: ignore[misc]
            revision, token, complete = int(reply[0]), _s(reply[1]), int(reply[2])
            if complete:
                rows = reply[3:]
                out = [
                    kv for j in range(0, len(rows), 4) if (kv := self._kv(_s(rows[j]), rows[j + 1 : j + 4])) is not None
                ]
                self.remember_token(revision, token)
                return sorted(out, key=lambda kv: kv.key), revision
            keys = [_s(k) for k in reply[3:]]
            values: list[KeyValue | None] = []
            for start in range(0, len(keys), self.config.batch):
                values += self.get_keys(keys[start : start + self.config.batch])
            if all(v is not None for v in values) and self._unchanged_since(prefixes, revision):
                self.remember_token(revision, token)
                return sorted((v for v in values if v is not None), key=lambda kv: kv.key), revision
            patched = self._patch_from_log(prefixes, revision, token, keys, values)
            if patched is not None:
                return patched
            log.debug("redis: keys under %s changed during a batched read; retrying", prefixes)
        raise AssertionError("unreachable")  # pragma: no cover

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
            pipe.hmget(root + "head", "r", "t")
            pipe.xrange(root + "clog", f"{since}-0", f"{since}-0")
            pipe.xrange(root + "clog", "-", "+", count=1)
            pipe.xrange(root + "log", f"{since + 1}-0", "+")
            return list(pipe.execute())

        (head_r, head_t), anchor, first, entries = self._run(call)
        if since > 0 and not (anchor and _s(anchor[0][1][b"t"]) == token):
            return None
        if since == 0 and first and first[0][0] != b"1-0":
            return None
        state: dict[str, KeyValue | None] = dict(zip(keys, values, strict=True))
        wanted = tuple(prefixes)
        for entry_id, fields in entries:
            revision = int(entry_id.split(b"-")[0])
            for change in decode_changes(fields.get(b"c", b""), revision):
                if change.key.startswith(wanted):
                    state[change.key] = (
                        None if change.value is None else KeyValue(change.key, change.value, change.version, revision)
                    )
        head = int(head_r or 0)
        if head_t is not None:
            self.remember_token(head, _s(head_t))
        return sorted((kv for kv in state.values() if kv is not None), key=lambda kv: kv.key), head

    def _unchanged_since(self, prefixes: Sequence[str], revision: int) -> bool:
        chains = [_dir_chain(p) for p in prefixes]
        flat = [d for chain in chains for d in chain]
        found = self._run(lambda: self._client.hmget(self.root + "dmr", flat))
        pos = 0
        for chain in chains:
            values = found[pos : pos + len(chain)]
            pos += len(chain)
            # The deepest directory that still exists speaks for the prefix.
            changed = next((int(v) for v in values if v is not None), 0)
            if changed > revision:
                return False
        return True

    def revision_now(self) -> int:
        r, t = self._run(lambda: self._client.hmget(self.root + "head", "r", "t"))
        revision = int(r or 0)
        if t is not None:
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
        return self._commit(conditions, puts, deletes, secrets.token_hex(12))

    def commit_with_token(
        self, conditions: Sequence[Condition], puts: Mapping[str, bytes], deletes: Sequence[str], token: CommitToken
    ) -> int | None:
        # The script keeps the token itself (ct:<token>, with a TTL): no family key needed.
        return self._commit(conditions, puts, deletes, token.key.rpartition("/")[2])

    def _commit(
        self, conditions: Sequence[Condition], puts: Mapping[str, bytes], deletes: Sequence[str], token: str
    ) -> int | None:
        args: list[Any] = [self.root, self._object_prefix, token, self.config.history]
        args.append(len(conditions))
        for condition in conditions:
            if isinstance(condition, VersionIs):
                args += ["v", condition.key, condition.version]
            elif isinstance(condition, Exists):
                args += ["e", condition.key, ""]
            elif isinstance(condition, PrefixUnchangedSince):
                args += ["p", condition.prefix, condition.revision]
            else:  # pragma: no cover - the family has no other conditions
                raise TypeError(f"unknown condition {condition!r}")
        args.append(len(puts))
        for key, value in puts.items():
            args += [key, value]
        args.append(len(deletes))
        args += list(deletes)
        # The token makes sending the script again after a lost reply exactly-once.
        reply = self._write(lambda c: self._commit_script(args=args, client=c), check=lambda r: int(r[0]) in (1, 2))
        if int(reply[0]) not in (1, 2):
            return None
        revision = int(reply[1])
        self.remember_token(revision, token)
        return revision

    def void_token(self, token: CommitToken) -> int | None:
        key = self.root + "ct:" + token.key.rpartition("/")[2]
        revision = self._run(lambda: self._void_script(keys=[key], args=[_COMMIT_TOKEN_TTL_MS]), write=True)
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
            raise errors.BackendUnavailableError(
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
        return _RedisLogReader(self)

    # ---------------------------------------------------------------- leases, ids

    def _lease_key(self, name: str) -> str:
        return self.root + "lease:" + self.layout.lock(name)

    def acquire_lease(self, name: str, token: bytes, ttl: float) -> bool:
        ms = max(1, int(ttl * 1000))
        return bool(
            self._write(lambda c: self._acquire_script(keys=[self._lease_key(name)], args=[token, ms], client=c))
        )

    def renew_lease(self, name: str, token: bytes, ttl: float) -> bool:
        ms = max(1, int(ttl * 1000))
        return bool(self._run(lambda: self._refresh_script(keys=[self._lease_key(name)], args=[token, ms])))

    def release_lease(self, name: str, token: bytes) -> None:
        self._run(lambda: self._release_script(keys=[self._lease_key(name)], args=[token]), write=True)

    def allocate_id(self, name: str) -> int:
        keys = [self.root + "id:" + name, self.root + "ct:" + secrets.token_hex(12)]
        return int(self._write(lambda c: self._allocate_script(keys=keys, args=[_COMMIT_TOKEN_TTL_MS], client=c)))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._client.close()
            self._client.connection_pool.disconnect()
        except Exception:  # closing must not fail
            log.debug("redis: error while closing", exc_info=True)
        self._connector.close()


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
