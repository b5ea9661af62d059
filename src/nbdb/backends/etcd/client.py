"""A small synchronous etcd v3 gRPC client: endpoints with failover, TLS, token auth, errors.

Requests and responses are raw bytes (see :mod:`._wire`); gRPC carries them
without protobuf. One channel per endpoint is opened lazily; a call that meets a
connection failure moves to the next endpoint, with bounded retries, and then
raises :class:`nbdb.BackendUnavailableError`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc  # type: ignore[import-untyped,import-not-found,unused-ignore]

from nbdb import errors
from nbdb.backends.etcd import wire
from nbdb.retry import ErrorRule, ExceptionMap, Failure, RetryPolicy

__all__ = ["ERRORS", "WAKE", "EtcdClient", "EtcdSettings", "Route", "Wake", "WatchSession"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_KV = "/etcdserverpb.KV/"
_RANGE = _KV + "Range"
_TXN = _KV + "Txn"
_COMPACT = _KV + "Compact"
_WATCH = "/etcdserverpb.Watch/Watch"
_LEASE_GRANT = "/etcdserverpb.Lease/LeaseGrant"
_LEASE_REVOKE = "/etcdserverpb.Lease/LeaseRevoke"
_LEASE_KEEPALIVE = "/etcdserverpb.Lease/LeaseKeepAlive"
_STATUS = "/etcdserverpb.Maintenance/Status"
_AUTHENTICATE = "/etcdserverpb.Auth/Authenticate"

_MAX_MESSAGE = 256 * 1024 * 1024

# Failures that say the request never reached a member that could apply it:
# a mutation is then retried elsewhere without any doubt about its outcome.
_NOT_SENT = (
    "failed to connect",
    "connection refused",
    "connect failed",
    "no leader",
    "dns resolution failed",
    "name resolution",
    "handshake",
    "not leader",
    "server stopped",
    "not capable",
)


def _code(exc: BaseException) -> object:
    code = getattr(exc, "code", None)
    return code() if callable(code) else None


def _details(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    return str((details() if callable(details) else None) or exc)


_S = grpc.StatusCode
_RPC = (grpc.RpcError,)
ERRORS = ExceptionMap(
    "etcd",
    [
        ErrorRule(_RPC, errors.BackendUnavailableError, codes=(_S.UNAVAILABLE,), contains=_NOT_SENT,
                  retryable=True, unsent=True),
        ErrorRule(_RPC, errors.BackendUnavailableError, codes=(_S.UNAVAILABLE, _S.DEADLINE_EXCEEDED, _S.CANCELLED,
                  _S.ABORTED), retryable=True),
        ErrorRule(_RPC, errors.BackendUnavailableError, codes=(_S.FAILED_PRECONDITION,), contains=("not leader",),
                  retryable=True, unsent=True),
        ErrorRule(_RPC, errors.AuthError, codes=(_S.UNAUTHENTICATED,), message="etcd refused the credentials"),
        ErrorRule(_RPC, errors.AuthError, codes=(_S.PERMISSION_DENIED,), message="permission denied by etcd"),
        ErrorRule(_RPC, errors.AuthError, contains=("authentication failed", "user name is empty", "auth: ")),
        ErrorRule(_RPC, errors.HistoryGoneError, contains=("required revision has been compacted",)),
        ErrorRule(_RPC, errors.BackendUnavailableError, contains=("required revision is a future revision",),
                  retryable=True, unsent=True, message="a lagging member"),
        ErrorRule(_RPC, errors.ValidationError, contains=("too many operations in txn",),
                  message="the transaction has more operations than the etcd server allows (--max-txn-ops); "
                  "split it, or tell the backend the server's limit (?max_txn_ops=N)"),
        ErrorRule(_RPC, errors.ValidationError, contains=("request is too large",),
                  message="request larger than the server accepts (--max-request-bytes)"),
        ErrorRule(_RPC, errors.ValidationError, codes=(_S.RESOURCE_EXHAUSTED,), contains=("message larger",),
                  message="request larger than the server accepts (--max-request-bytes)"),
        ErrorRule(_RPC, errors.BackendUnavailableError, codes=(_S.RESOURCE_EXHAUSTED,), contains=("too many requests",),
                  retryable=True, unsent=True),
        ErrorRule(_RPC, errors.ValidationError, codes=(_S.INVALID_ARGUMENT,), message="etcd rejected the request"),
    ],
    code=_code,
    text=_details,
)  # fmt: skip
"""How gRPC failures of etcd calls become nbdb errors, and which may be retried."""


@dataclass(frozen=True)
class EtcdSettings:
    """Connection settings parsed from an ``etcd://`` URL (the password is never shown)."""

    endpoints: tuple[str, ...]
    tls: bool = False
    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    user: str | None = None
    password: str | None = None
    timeout: float = 2.0
    """Seconds one request may take before it is tried on the next member (commits carry tokens: safe)."""
    retry: RetryPolicy | None = None
    """None: :meth:`default_retry` for the number of endpoints."""
    max_txn_ops: int = 128
    """The server's --max-txn-ops (128 by default): compares, and writes, per transaction."""
    max_request_bytes: int = 1_572_864
    """The server's --max-request-bytes (1.5 MiB by default)."""
    group_commit: int = 32
    """The most commits of concurrent threads one transaction carries (0 or 1: every commit alone)."""

    def __repr__(self) -> str:
        auth = f", user={self.user!r}, password=***" if self.user else ""
        return f"EtcdSettings(endpoints={list(self.endpoints)!r}, tls={self.tls}{auth}, timeout={self.timeout})"

    @staticmethod
    def default_retry(endpoints: int) -> RetryPolicy:
        """Enough tries to visit every endpoint three times and outlast a leader election."""
        return RetryPolicy(attempts=max(4, 3 * endpoints), backoff=0.05, max_backoff=1.0, deadline=None)

    @property
    def policy(self) -> RetryPolicy:
        """The retry policy in force."""
        return self.retry if self.retry is not None else self.default_retry(len(self.endpoints))


class _Failed(Exception):
    """An attempt's failure that is not a gRPC error, classified by the attempt itself."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(str(failure.error))
        self.failure = failure


class EtcdClient:
    """Unary calls and streams to an etcd cluster, failing over between endpoints."""

    def __init__(self, settings: EtcdSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._channels: dict[str, Any] = {}
        self._rpcs: dict[tuple[str, str], Any] = {}
        """Each endpoint's unary callables by method: making one per call was ≈ 10 µs of a commit's client CPU."""
        self._current = 0
        self._token: str | None = None
        self._token_generation = 0
        self._auth_off = False
        self._closed = False
        self._credentials: Any = None
        if settings.tls:
            self._credentials = grpc.ssl_channel_credentials(
                root_certificates=settings.ca, private_key=settings.key, certificate_chain=settings.cert
            )

    def __repr__(self) -> str:
        return f"EtcdClient({self.settings!r})"

    # ---------------------------------------------------------------- channels

    def _channel(self, endpoint: str) -> Any:
        with self._lock:
            if self._closed:
                raise errors.BackendUnavailableError("the etcd client is closed")
            channel = self._channels.get(endpoint)
            if channel is None:
                options = [
                    ("grpc.max_receive_message_length", _MAX_MESSAGE),
                    ("grpc.max_send_message_length", _MAX_MESSAGE),
                    ("grpc.keepalive_time_ms", 10_000),
                    ("grpc.keepalive_timeout_ms", 5_000),
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.min_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 1_000),
                ]
                if self._credentials is not None:
                    channel = grpc.secure_channel(endpoint, self._credentials, options=options)
                else:
                    channel = grpc.insecure_channel(endpoint, options=options)
                self._channels[endpoint] = channel
            return channel

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def current_endpoint(self) -> str:
        """The endpoint calls go to now."""
        return self.settings.endpoints[self._current % len(self.settings.endpoints)]

    def _advance(self, failed: str) -> None:
        with self._lock:
            if self.current_endpoint() == failed:
                self._current += 1
                log.info("etcd: %s failed; moving to %s", failed, self.current_endpoint())

    def metadata(self, *, require_leader: bool = False) -> list[tuple[str, str]]:
        """Call metadata: the auth token and, for watches, "fail if the member has no leader"."""
        md = []
        if require_leader:
            md.append(("hasleader", "true"))
        if self._token is not None:
            md.append(("token", self._token))
        return md

    # ---------------------------------------------------------------- auth

    def _authenticate(self, endpoint: str, generation: int) -> None:
        settings = self.settings
        if settings.user is None:
            raise errors.AuthError("etcd requires authentication: give user:password in the URL")
        with self._lock:
            if self._token_generation != generation:
                return  # another thread already refreshed the token
        rpc = self._channel(endpoint).unary_unary(_AUTHENTICATE)
        try:
            reply = rpc(wire.authenticate_request(settings.user, settings.password or ""), timeout=settings.timeout)
        except grpc.RpcError as exc:
            if "authentication is not enabled" in _details(exc):
                # Credentials for a server without auth: nothing to present.
                with self._lock:
                    self._auth_off = True
                    self._token_generation += 1
                return
            raise  # the caller classifies it (a member that is down is tried again elsewhere)
        token = wire.parse_authenticate(reply)
        with self._lock:
            self._token = token or None
            self._token_generation += 1

    def ensure_token(self) -> None:
        """Authenticate once up front when credentials were given."""
        if self.settings.user is not None and self._token is None and not self._auth_off:
            self.call(_AUTHENTICATE, None, "authenticate")

    # ---------------------------------------------------------------- calls

    def call(
        self, method: str, request: bytes | None, what: str, *, write: bool = False, policy: RetryPolicy | None = None
    ) -> tuple[bytes, bool]:
        """Run a unary RPC with failover; return the reply and whether an earlier failed try may have applied.

        ``request`` None means "only authenticate". Every etcd request nbdb
        sends is safe to send again (commits carry a token, lease and
        compaction requests are idempotent), so a failure is retried on the
        next endpoint under the retry policy; for a ``write`` whose tries may
        have been applied, running out of tries raises CommitUnknownError.
        """

        def attempt(endpoint: str, generation: int) -> bytes:
            if self.settings.user is not None and not self._auth_off and (self._token is None or request is None):
                self._authenticate(endpoint, generation)
                if request is None:
                    return b""
            assert request is not None
            rpc = self._rpcs.get((endpoint, method))
            if rpc is None:
                rpc = self._rpcs[(endpoint, method)] = self._channel(endpoint).unary_unary(method)
            # A member without a leader refuses at once (no leader: unsent) instead of holding the request.
            reply: bytes = rpc(request, timeout=self.settings.timeout, metadata=self.metadata(require_leader=True))
            return reply

        return self._with_failover(attempt, what, write=write, policy=policy)

    def _with_failover(
        self, attempt: Callable[[str, int], T], what: str, *, write: bool, policy: RetryPolicy | None = None
    ) -> tuple[T, bool]:
        """``attempt(endpoint, token generation)`` under the retry policy; its result and whether it may have applied.

        A retryable failure moves on to the next endpoint; an expired auth token is renewed once; a
        ``write`` whose failed tries may have been applied raises CommitUnknownError, never its failure.
        """
        attempts = (policy or self.settings.policy).begin()
        maybe_applied = False
        reauthenticated = False
        expired: int | None = None  # the token generation that expired, while its renewal is to be done
        while True:
            endpoint = self.current_endpoint()
            generation = self._token_generation
            try:
                if expired is not None:
                    # Inside the try: a refused renewal (a rotated password) or a member gone meanwhile
                    # is classified like any failure, never gRPC's own exception. The expired generation:
                    # a token another thread renewed meanwhile is not renewed again (bcrypt on the server).
                    self._authenticate(endpoint, expired)
                    expired = None
                    generation = self._token_generation
                return attempt(endpoint, generation), maybe_applied
            except grpc.RpcError as exc:
                failure = ERRORS.classify(exc, what)
            except _Failed as exc:
                failure = exc.failure
            if failure.retryable:
                maybe_applied = maybe_applied or (write and not failure.unsent)
                log.debug("etcd: %s failed on %s (try %d): %s", what, endpoint, attempts.number, failure.error)
                self._advance(endpoint)
                if attempts.wait():
                    continue
                if maybe_applied:
                    raise errors.CommitUnknownError(
                        f"etcd: {what} may or may not have been applied; no endpoint answered in time ({failure.error})"
                    )
                raise errors.BackendUnavailableError(
                    f"etcd: {what} failed on every endpoint after {attempts.number} tries ({failure.error})"
                )
            if self._token_expired(failure.error) and not reauthenticated:
                # The token expired (simple tokens last --auth-token-ttl): get a new one once.
                reauthenticated = True
                expired = generation
                continue
            if maybe_applied:
                raise errors.CommitUnknownError(
                    f"etcd: {what} may or may not have been applied before it failed ({failure.error})"
                )
            raise failure.error

    def _token_expired(self, error: errors.NbdbError) -> bool:
        return isinstance(error, errors.AuthError) and "token" in str(error).lower() and self.settings.user is not None

    def range(
        self, key: bytes, range_end: bytes = b"", *, limit: int = 0, revision: int = 0, count_only: bool = False
    ) -> tuple[wire.Header, list[wire.KV], bool, int]:
        """A linearizable Range."""
        request = wire.range_request(key, range_end, limit=limit, revision=revision, count_only=count_only)
        reply, _ = self.call(_RANGE, request, "range")
        return wire.parse_range(reply)

    def txn(
        self, request: bytes, *, write: bool = True, policy: RetryPolicy | None = None
    ) -> tuple[wire.Header, bool, list[list[wire.KV]], bool]:
        """A Txn: header, succeeded, range results, and whether an earlier failed try may have applied
        (``policy``: its tries instead of the client's)."""
        reply, maybe_applied = self.call(_TXN, request, "transaction", write=write, policy=policy)
        header, succeeded, ranges = wire.parse_txn(reply)
        return header, succeeded, ranges, maybe_applied

    def read_txn(self, request: bytes) -> tuple[wire.Header, bool, list[list[wire.KV]], bytes]:
        """A read-only Txn: header, succeeded, range results, and the reply (``wire.range_counts`` reads how many
        keys each range held: parsed only when asked)."""
        reply, _ = self.call(_TXN, request, "transaction", write=False)
        header, succeeded, ranges = wire.parse_txn(reply)
        return header, succeeded, ranges, reply

    def nested_txns(self, request: bytes) -> tuple[wire.Header, list[tuple[bool, list[list[wire.KV]]]], bool]:
        """A Txn of nested ones: header, each nested one's succeeded and ranges, and maybe-applied (as :meth:`txn`)."""
        reply, maybe_applied = self.call(_TXN, request, "transaction", write=True)
        header, nested = wire.parse_nested_txns(reply)
        return header, nested, maybe_applied

    def compact(self, revision: int) -> None:
        """Compact the key history up to ``revision`` (physically, so watchers see it at once)."""
        self.call(_COMPACT, wire.compact_request(revision, physical=True), "compact")

    def status(self) -> tuple[wire.Header, str, int]:
        """The current member's status: header, version, leader id."""
        reply, _ = self.call(_STATUS, b"", "status")
        return wire.parse_status(reply)

    def lease_grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: (id, granted ttl)."""
        reply, _ = self.call(_LEASE_GRANT, wire.lease_grant_request(ttl), "lease grant")
        _, lease_id, granted, error = wire.parse_lease(reply)
        if error or not lease_id:
            raise errors.BackendUnavailableError(f"etcd: lease grant failed: {error or 'no lease id'}")
        return lease_id, granted

    def lease_revoke(self, lease_id: int) -> bool:
        """Revoke a lease (and delete its keys); False if it no longer exists."""
        try:
            self.call(_LEASE_REVOKE, wire.lease_id_request(lease_id), "lease revoke")
        except errors.BackendUnavailableError as exc:
            if "lease not found" in str(exc):
                return False
            raise
        return True

    def lease_keepalive(self, lease_id: int) -> int:
        """Renew a lease once; its new TTL, or 0 if it has expired."""

        def attempt(endpoint: str, generation: int) -> int:
            stream = self._channel(endpoint).stream_stream(_LEASE_KEEPALIVE)
            call = stream(iter([wire.lease_id_request(lease_id)]), timeout=self.settings.timeout,
                          metadata=self.metadata())  # fmt: skip
            try:
                reply = next(call)
            except StopIteration:
                raise _Failed(
                    Failure(errors.BackendUnavailableError("keep-alive stream closed without a reply"), True, True)
                ) from None
            finally:
                call.cancel()
            _, _, ttl, _ = wire.parse_lease(reply)
            return max(0, ttl)

        return self._with_failover(attempt, "lease keep-alive", write=False)[0]

    def watch(self, key: bytes, range_end: bytes, start_revision: int, *, route: Route | None = None) -> WatchSession:
        """Open a watch stream on the current endpoint (errors arrive on the session's queue).

        ``route``, if given, sees every response on the reader thread first (see :class:`WatchSession`).
        """
        endpoint = self.current_endpoint()
        return WatchSession(self, endpoint, key, range_end, start_revision, route)

    def failed(self, endpoint: str, exc: BaseException) -> Failure:
        """Classify a watch stream's failure on ``endpoint``; move on from the endpoint if it may recover."""
        if isinstance(exc, grpc.RpcError):
            failure = ERRORS.classify(exc, "watch")
        elif isinstance(exc, errors.NbdbError):
            failure = Failure(exc, isinstance(exc, errors.BackendUnavailableError), False)
        else:
            failure = Failure(errors.BackendUnavailableError(f"etcd watch: {exc}"), True, False)
        if failure.retryable:
            self._advance(endpoint)
        return failure

    def refresh_token(self, endpoint: str) -> None:
        """Get a new auth token (after a stream was refused for its token)."""
        try:
            self._authenticate(endpoint, self._token_generation)
        except grpc.RpcError as exc:
            raise ERRORS.translate(exc, "authenticate") from None

    def close(self) -> None:
        """Close every channel."""
        with self._lock:
            self._closed = True
            channels = list(self._channels.values())
            self._channels.clear()
            self._rpcs.clear()
        for channel in channels:
            channel.close()


class Wake:
    """What :meth:`WatchSession.wake` puts on the queue of responses: no response, a call to look again."""


WAKE = Wake()

Route = Callable[["WatchSession", wire.WatchResponse], bool]
"""Called on a session's reader thread with each response: True if it took the response, False to queue it."""


class WatchSession:
    """One gRPC watch stream with one watcher; responses (or the failure) land in ``responses``.

    With a ``route``, the reader thread offers each response to it first and queues
    only those it declines; ``pending`` is for the route's owner to count what is
    queued (the session never touches it).
    """

    def __init__(
        self,
        client: EtcdClient,
        endpoint: str,
        key: bytes,
        range_end: bytes,
        start_revision: int,
        route: Route | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.responses: queue.Queue[wire.WatchResponse | BaseException | Wake | None] = queue.Queue()
        self.pending = 0
        """Responses the route declined that are not handled yet (kept by the route's owner, under its lock)."""
        self._route = route
        self._requests: queue.Queue[bytes | None] = queue.Queue()
        self._requests.put(wire.watch_create_request(key, range_end, start_revision))
        self._cancelled = False
        self._call: Any = None
        try:
            stream = client._channel(endpoint).stream_stream(_WATCH)
            self._call = stream(self._outgoing(), metadata=client.metadata(require_leader=True))
        except errors.NbdbError as exc:
            self.responses.put(exc)
            return
        self._reader = threading.Thread(target=self._read, name="nbdb-etcd-watch", daemon=True)
        self._reader.start()

    def _outgoing(self) -> Iterator[bytes]:
        while True:
            item = self._requests.get()
            if item is None:
                return
            yield item

    def _read(self) -> None:
        try:
            route = self._route
            for raw in self._call:
                response = wire.parse_watch(raw)
                if route is None or not route(self, response):
                    self.responses.put(response)
            if not self._cancelled:
                self.responses.put(errors.BackendUnavailableError("etcd: the watch stream was ended by the server"))
        except grpc.RpcError as exc:
            if not self._cancelled:
                self.responses.put(exc)
        except wire.WireError as exc:
            self.responses.put(errors.BackendUnavailableError(f"etcd sent an undecodable watch response: {exc}"))
        finally:
            self.responses.put(None)

    def request_progress(self) -> None:
        """Ask the server for a progress notification (only safe on servers that order it)."""
        self._requests.put(wire.watch_progress_request())

    def wake(self) -> None:
        """Wake the thread that polls ``responses`` (it gets :data:`WAKE`)."""
        self.responses.put(WAKE)

    def close(self) -> None:
        """Stop the stream and its threads."""
        self._cancelled = True
        self._requests.put(None)
        if self._call is not None:
            self._call.cancel()


def safe_progress_requests(version: str) -> bool:
    """Whether a server orders requested progress notifications after pending events.

    etcd before 3.4.25 / 3.5.8 answered a progress request on the stream's control channel with the
    store's revision, beside (so possibly ahead of) events queued for its watchers and of watchers still
    catching up (etcd-io/etcd#15220), which would make its revision an unsafe resume point. The fix
    ("etcdserver: guarantee order of requested progress notification") is in 3.4.25, not 3.4.24: the
    server's watch code is the same in 3.4.23 and 3.4.24.
    """
    try:
        parts = tuple(int(p) for p in version.split("-")[0].split(".")[:3])
    except ValueError:
        return False
    if len(parts) < 3:
        return False
    if parts[:2] == (3, 4):
        return parts >= (3, 4, 25)
    if parts[:2] == (3, 5):
        return parts >= (3, 5, 8)
    return parts >= (3, 6, 0)


def chunked(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """``items`` in slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
