"""Connections to Redis: clients (standalone or through Sentinel), the exception map, retries."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

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
from nbdb.backends.redis.config import RedisConfig
from nbdb.backends.redis.lua import REFUSED_MARK, UNLOGGED_MARK
from nbdb.retry import ErrorRule, ExceptionMap

__all__ = ["ERRORS", "Connector", "ReadLine", "ScriptLine", "argument_head", "text"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_RETRYABLE_REPLIES = ("loading", "busy", "masterdown", "tryagain", "readonly", "noreplicas", "clusterdown")


class PartlyApplied(rexc.RedisError):
    """A retryable reply to one script of a pipeline in which another script applied.

    The reply alone (READONLY, BUSY, LOADING) says its own script never ran: classified by
    itself it is "unsent", and when the tries ran out the whole group was reported not
    applied although some of its commits were (a caller writing again applied them twice).
    """


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
        # A LOADING reply: the server refused the command without running it (redis-py makes it a
        # ConnectionError, which the rule below takes as "may have been sent").
        ErrorRule((rexc.BusyLoadingError,), errors.BackendUnavailableError, retryable=True, unsent=True),
        # A pipeline of commit scripts in which one was refused for a retryable reason after
        # another had applied: tried again (every script carries its token), but never "unsent".
        ErrorRule((PartlyApplied,), errors.BackendUnavailableError, retryable=True),
        ErrorRule((rexc.ConnectionError, rexc.TimeoutError), errors.BackendUnavailableError, retryable=True),
        # Before the retryable replies' words: a commit refused at a key it writes unread (lua.REFUSED_MARK):
        # its reply names the key, whose topic, table or namespace may hold a retryable reply's word
        # ('busy-tenant'), which made it an unavailability retried until the attempts ran out (in a group,
        # every commit's outcome). A commit whose log entries failed twice (lua.UNLOGGED_MARK: another
        # writer's entry past 2^53 in a stream it appends to), nothing of it applied: it was a
        # BackendUnavailableError, an unavailability.
        ErrorRule((rexc.ResponseError,), errors.CorruptRecordError, contains=(REFUSED_MARK, UNLOGGED_MARK),
                  message="a key of the nbdb namespace holds foreign data"),
        # INCR of the revision counter (or any counter) that another writer set to text, a fraction or
        # 2^63 - 1: the commit's first write, refused, so nothing was written. It was a
        # BackendUnavailableError, an unavailability retried and reported for every commit until the key
        # was repaired. Before the retryable replies' words: "out of range" is none of them, but a key in
        # the reply may be.
        ErrorRule((rexc.ResponseError,), errors.CorruptRecordError,
                  contains=("value is not an integer or out of range", "increment or decrement would overflow"),
                  message="a counter of the nbdb namespace holds foreign data (not a whole number nbdb can count on)"),
        ErrorRule((rexc.ResponseError,), errors.BackendUnavailableError, contains=_RETRYABLE_REPLIES, retryable=True,
                  unsent=True),
        ErrorRule((rexc.ResponseError,), errors.CorruptRecordError, contains=("wrongtype",),
                  message="a key of the nbdb namespace holds foreign data"),
        # A script's struct.unpack of a value another writer put there (a reverse-reference hash's
        # field): raised in the read phase, before any write. It was a BackendUnavailableError.
        ErrorRule((rexc.ResponseError,), errors.CorruptRecordError, contains=("data string too short",),
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


_new_sentinel: Any = _QuorumSentinel
"""The class, called untyped: redis-py 8.1 leaves ``Sentinel.__init__`` unannotated and 8.2 annotates it, so
neither a ``type: ignore`` nor its absence type-checks under both."""


class Connector:
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
            self._sentinel = _new_sentinel(list(config.hosts), sentinel_kwargs=sentinel_kwargs)
            self.where = f"{self.where}/{config.service}"
        self._context = f"at {self.where}"
        """Every call's context in errors, spelled once."""

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
        return self.config.retry.call(call, ERRORS, context=self._context, write=write, stop=stop)

    def close(self) -> None:
        if self._sentinel is not None:
            for s in self._sentinel.sentinels:
                s.close()


class _Line:
    """Commands packed by nbdb, sent on connections of their own, without the client's per-command work.

    redis-py's command path (a ``Script`` call, a pipeline) goes through the
    pool's checkout (a lock, a poll of the socket for unread data, connection
    metrics), its own retry wrapper, argument encoding and packing in Python,
    per command. Here a command (or many, pipelined) is packed into bytes once
    and sent on a connection of the line's own (made by the client's pool, so
    with its address, credentials, TLS and Sentinel master check): its replies
    always read in full, or the connection closed.

    Its connections are counted, in use and idle: at most ``limit`` (and no
    more than the pool's own ``max_connections``); a caller finding them all
    busy waits up to ``wait`` seconds for one to come back, then gets
    redis-py's ``ConnectionError`` (nothing was sent). :meth:`close` closes
    the idle ones, and each one in use as it comes back.

    Only public redis-py calls: ``ConnectionPool.make_connection``,
    ``Connection.send_packed_command`` and ``read_response``. Retries stay
    with the caller (nbdb's retry policy), as for every other call.
    """

    def __init__(self, client: Any, *, limit: int = 32, wait: float = 5.0) -> None:
        if limit < 1:
            raise ValueError("a line of connections needs at least one connection")
        self._client = client
        self._pool = client.connection_pool
        pool_limit = getattr(self._pool, "max_connections", None)
        self.limit = min(limit, pool_limit) if isinstance(pool_limit, int) and pool_limit > 0 else limit
        """The most connections the line keeps, in use and idle."""
        self._wait = wait
        self._cond = threading.Condition(threading.Lock())
        self._idle: list[Any] = []
        """Popped without the lock (list.pop is atomic: each connection goes to one taker); filled under it."""
        self._open = 0
        self._pid = os.getpid()
        self._closed = False

    @property
    def connections(self) -> int:
        """The connections the line holds now, in use and idle."""
        return self._open

    def _exchange(self, packed: bytes, replies: int, sound: tuple[type[BaseException], ...] = ()) -> list[Any]:
        """Send ``packed`` (``replies`` commands) and read every reply; redis-py's exceptions on failure.

        After an exception of ``sound`` (an error reply, read in full) the connection is kept;
        after any other it is closed: a reply may be left half read or unread.
        """
        connection = self._take()
        try:
            _connect_if_closed(connection)
            connection.send_packed_command([packed])
            out = [connection.read_response() for _ in range(replies)]
        except BaseException as exc:
            self._put_back_after(connection, exc, sound)
            raise
        self._put_back(connection)
        return out

    def _take(self) -> Any:
        """An idle connection, else a new one while under the limit, else the first to come back."""
        if self._pid != os.getpid():  # a forked child must not talk on its parent's sockets
            self._cond = threading.Condition(threading.Lock())
            self._idle, self._open, self._pid = [], 0, os.getpid()
        try:
            return self._idle.pop()
        except IndexError:
            pass
        with self._cond:
            deadline = None
            while not self._idle and self._open >= self.limit:
                now = time.monotonic()
                deadline = now + self._wait if deadline is None else deadline
                if now >= deadline:
                    raise rexc.ConnectionError(
                        f"all {self.limit} connections of nbdb's own stayed busy for {self._wait:g}s"
                    )
                self._cond.wait(deadline - now)
            if self._idle:
                return self._idle.pop()
            self._open += 1
        try:
            return self._pool.make_connection()
        except BaseException:
            self._forget()
            raise

    def _put_back_after(self, connection: Any, exc: BaseException, sound: tuple[type[BaseException], ...]) -> None:
        """Put ``connection`` back after ``exc``, closed unless ``exc`` is ``sound``: a reply may be left unread."""
        if not isinstance(exc, sound):
            connection.disconnect()
        self._put_back(connection)

    def _put_back(self, connection: Any) -> None:
        with self._cond:
            if not self._closed:
                self._idle.append(connection)
                self._cond.notify()
                return
        self._forget()
        _disconnect(connection)

    def _forget(self) -> None:
        """One connection fewer (closed, or never made)."""
        with self._cond:
            self._open -= 1
            self._cond.notify()

    def close(self) -> None:
        """Close the idle connections (one in use is closed when it comes back)."""
        with self._cond:
            self._closed = True
        while True:
            try:
                connection = self._idle.pop()
            except IndexError:
                break
            self._forget()
            _disconnect(connection)


def _connect_if_closed(connection: Any) -> None:
    """Connect ``connection`` before it is used, if it says it is not connected.

    connect() is how a Sentinel-managed connection finds the master: sending on a closed
    one would connect it to its default address instead. Once connected it is a no-op,
    but one that costs a retry wrapper and two closures per command: asked only when
    the connection says it is not connected (redis-py before 5.1 cannot say: always).
    """
    if not getattr(connection, "is_connected", False):
        connection.connect()


def _disconnect(connection: Any) -> None:
    try:
        connection.disconnect()
    except Exception:  # closing must not fail
        log.debug("redis: error while closing a connection of nbdb's own", exc_info=True)


class ScriptLine(_Line):
    """One Lua script sent as ``EVALSHA`` on connections kept for it (see :class:`_Line`).

    Per commit redis-py's ``Script`` call was as much client CPU as nbdb's own
    planning, on every write. Here the command is packed with the fixed
    arguments ahead of time.
    """

    def __init__(
        self, client: Any, script: str, fixed: Sequence[str | bytes], *, limit: int = 32, wait: float = 5.0
    ) -> None:
        super().__init__(client, limit=limit, wait=wait)
        self._script = script
        self.sha = hashlib.sha1(script.encode()).hexdigest()
        self._fixed = [a.encode() if isinstance(a, str) else a for a in fixed]
        self._heads: dict[int, bytes] = {}

    def _head(self, count: int) -> bytes:
        """``EVALSHA sha 0`` and the fixed arguments, packed, for ``count`` more arguments.

        Without the last argument's closing ``\\r\\n``: the next :func:`argument_head` (or
        :meth:`pack`'s end) has it.
        """
        head = self._heads.get(count)
        if head is None:
            parts = [b"EVALSHA", self.sha.encode(), b"0", *self._fixed]
            head = b"*%d\r\n" % (len(parts) + count) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
            head = self._heads[count] = head[:-2]
        return head

    def pack(self, args: Sequence[bytes], framed: Sequence[bytes] = ()) -> bytes:
        """The whole command for ``args`` then ``framed`` (after the fixed ones), as it goes down the socket.

        ``framed`` are more arguments, each already preceded by its :func:`argument_head`
        (``[head, argument, head, argument...]``), as a caller that builds them in one pass has them.
        """
        parts = [self._head(len(args) + len(framed) // 2)]
        for arg in args:
            parts += (argument_head(len(arg)), arg)
        parts += framed
        parts.append(b"\r\n")
        return b"".join(parts)

    def call(self, packed: bytes) -> Any:
        """Send a command :meth:`pack` made; the script's reply (redis-py's exceptions on failure)."""
        try:
            return self._exchange(packed, 1, _ERROR_REPLY)[0]
        except rexc.NoScriptError:
            # A restarted or flushed server forgot the script: nothing ran. Load it and send again.
            self._client.script_load(self._script)
            return self._exchange(packed, 1, _ERROR_REPLY)[0]


_HEADS = tuple(b"\r\n$%d\r\n" % n for n in range(1024))


def argument_head(size: int) -> bytes:
    """What goes before a command's argument of ``size`` bytes: the closing ``\\r\\n`` of the
    one before it, and its length (RESP's ``$<size>\\r\\n``).

    Looked up, not formatted: a bytes format per argument cost one and a half times the
    instructions of the whole commit's packing (callgrind).
    """
    return _HEADS[size] if size < 1024 else b"\r\n$%d\r\n" % size


_ERROR_REPLY = (rexc.ResponseError,)
"""An error reply: read in full, so the connection that carried it is sound."""


class ReadLine(_Line):
    """Many ``HMGET`` in one pipeline, packed by nbdb (see :class:`_Line`).

    A list of 10,000 ports reads them in pipelines of ``batch`` HMGETs:
    through redis-py's pipeline that was ≈ 8.5 µs of client time per key
    (building, packing and the pipeline's bookkeeping of each command), packed
    here ≈ 2.7 µs, the same commands and replies on the server.
    """

    def __init__(self, client: Any, *, limit: int = 32, wait: float = 5.0) -> None:
        super().__init__(client, limit=limit, wait=wait)
        self._fields: dict[tuple[str, ...], bytes] = {}

    def _packed_fields(self, fields: tuple[str, ...]) -> bytes:
        packed = self._fields.get(fields)
        if packed is None:
            if len(self._fields) >= 64:
                self._fields.clear()  # bounded: a grouped key (a referrer) reads a field of its own
            packed = self._fields[fields] = b"".join(b"$%d\r\n%s\r\n" % (len(f), f) for f in map(str.encode, fields))
        return packed

    def _packed(self, reads: Sequence[tuple[str, tuple[str, ...]]]) -> bytes:
        parts = []
        for name, fields in reads:
            key = name.encode()
            parts.append(b"*%d\r\n$5\r\nHMGET\r\n$%d\r\n%s\r\n" % (2 + len(fields), len(key), key))
            parts.append(self._packed_fields(fields))
        return b"".join(parts)

    def hmget_many(self, reads: Sequence[tuple[str, tuple[str, ...]]]) -> list[Any]:
        """The reply of ``HMGET name *fields`` for each ``(name, fields)``, in order.

        redis-py's exceptions on failure; the connection is then closed (replies may be left unread).
        """
        return self._exchange(self._packed(reads), len(reads))

    def hmget_batches(
        self,
        batches: Sequence[Sequence[tuple[str, tuple[str, ...]]]],
        handle: Callable[[int, list[Any]], None],
    ) -> None:
        """:meth:`hmget_many` of each batch on one connection, the next batch sent before a batch's replies are read.

        ``handle(i, replies)`` runs as the replies of batch ``i`` are in, while
        the server is already answering batch ``i + 1``: a list's reads on the
        server and its parsing here overlap instead of taking turns (two cores,
        two processes). At most two batches are in flight, so the server holds
        at most two batches of replies for this connection. On failure
        redis-py's exception (the connection is then closed); ``handle`` may
        have run for the batches before.
        """
        connection = self._take()
        try:
            _connect_if_closed(connection)
            if batches:
                connection.send_packed_command([self._packed(batches[0])])
            for i, reads in enumerate(batches):
                if i + 1 < len(batches):
                    connection.send_packed_command([self._packed(batches[i + 1])])
                handle(i, [_reply_or_error(connection) for _ in range(len(reads))])
        except BaseException as exc:
            self._put_back_after(connection, exc, ())
            raise
        self._put_back(connection)


def _reply_or_error(connection: Any) -> Any:
    """The next reply, or the ResponseError of an error reply (read in full: the connection goes on)."""
    try:
        return connection.read_response()
    except rexc.ResponseError as exc:
        return exc


def text(value: Any) -> str:
    """A reply as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
