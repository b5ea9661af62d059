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
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc  # type: ignore[import-untyped,import-not-found,unused-ignore]

from nbdb import errors
from nbdb.backends.etcd import _wire as wire

__all__ = ["EtcdClient", "EtcdSettings", "WatchSession"]

log = logging.getLogger(__name__)

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
_NOT_SENT_MARKERS = (
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
    timeout: float = 5.0
    retries: int = 0  # 0: derived from the number of endpoints

    def __repr__(self) -> str:
        auth = f", user={self.user!r}, password=***" if self.user else ""
        return f"EtcdSettings(endpoints={list(self.endpoints)!r}, tls={self.tls}{auth}, timeout={self.timeout})"

    @property
    def attempts(self) -> int:
        """How many tries a request gets across the endpoints before it fails."""
        return self.retries if self.retries > 0 else max(4, 3 * len(self.endpoints))


class _Transient(Exception):
    """A failure worth retrying on another endpoint (``sent``: it may have been applied)."""

    def __init__(self, message: str, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


def _describe(exc: Any) -> tuple[Any, str]:
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else str(exc)) or ""
    return code, details


def translate(exc: Any, what: str) -> Exception:
    """The nbdb error (or a retryable ``_Transient``) for a gRPC failure of ``what``."""
    code, details = _describe(exc)
    low = details.lower()
    codes = grpc.StatusCode
    if code in (codes.UNAVAILABLE, codes.DEADLINE_EXCEEDED, codes.CANCELLED, codes.ABORTED):
        sent = code != codes.UNAVAILABLE or not any(m in low for m in _NOT_SENT_MARKERS)
        return _Transient(f"{what}: {code.name}: {details}", sent)
    if code == codes.FAILED_PRECONDITION and "not leader" in low:
        return _Transient(f"{what}: {details}", False)
    if code == codes.UNAUTHENTICATED:
        return errors.AuthError(f"{what}: etcd refused the credentials ({details})")
    if code == codes.PERMISSION_DENIED:
        return errors.AuthError(f"{what}: permission denied by etcd ({details})")
    if "authentication failed" in low or "user name is empty" in low or "auth: " in low:
        return errors.AuthError(f"{what}: {details}")
    if "required revision has been compacted" in low:
        return errors.HistoryGoneError(f"{what}: {details}")
    if "required revision is a future revision" in low:
        return _Transient(f"{what}: {details} (a lagging member)", False)
    if "too many operations in txn" in low:
        return errors.UnsupportedError(
            f"{what}: the transaction has more operations than the etcd server allows "
            "(--max-txn-ops, 128 by default); split it or raise the server's limit"
        )
    if "request is too large" in low or (code == codes.RESOURCE_EXHAUSTED and "message larger" in low):
        return errors.UnsupportedError(f"{what}: request larger than the server accepts (--max-request-bytes)")
    if code == codes.RESOURCE_EXHAUSTED:
        if "too many requests" in low:
            return _Transient(f"{what}: {details}", False)
        return errors.BackendUnavailableError(f"{what}: {details}")
    if code == codes.INVALID_ARGUMENT:
        return errors.ValidationError(f"{what}: etcd rejected the request: {details}")
    return errors.BackendUnavailableError(f"{what}: {getattr(code, 'name', code)}: {details}")


def _read_file(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise errors.ValidationError(f"cannot read the TLS {what} file {path!r}: {exc.strerror}") from None


class EtcdClient:
    """Unary calls and streams to an etcd cluster, failing over between endpoints."""

    def __init__(self, settings: EtcdSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._channels: dict[str, Any] = {}
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

    def _backoff(self, attempt: int) -> None:
        # Spread retries over a leader election (etcd's default election timeout is 1s).
        time.sleep(min(0.05 * (2 ** (attempt // max(1, len(self.settings.endpoints)))), 1.0))

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
            if "authentication is not enabled" in (_describe(exc)[1] or ""):
                # Credentials for a server without auth: nothing to present.
                with self._lock:
                    self._auth_off = True
                    self._token_generation += 1
                return
            raise translate(exc, "authenticate") from None
        token = wire.parse_authenticate(reply)
        with self._lock:
            self._token = token or None
            self._token_generation += 1

    def ensure_token(self) -> None:
        """Authenticate once up front when credentials were given."""
        if self.settings.user is not None and self._token is None and not self._auth_off:
            self.call(_AUTHENTICATE, None, "authenticate")

    # ---------------------------------------------------------------- calls

    def call(self, method: str, request: bytes | None, what: str, *, mutation: bool = False) -> tuple[bytes, bool]:
        """Run a unary RPC with failover; return the reply and whether an earlier try may have applied.

        ``request`` None means "only authenticate".
        """
        attempts = self.settings.attempts
        maybe_applied = False
        reauthenticated = False
        last = "no attempt"
        for attempt in range(attempts):
            endpoint = self.current_endpoint()
            generation = self._token_generation
            try:
                if self.settings.user is not None and not self._auth_off and (self._token is None or request is None):
                    self._authenticate(endpoint, generation)
                    if request is None:
                        return b"", False
                assert request is not None
                rpc = self._channel(endpoint).unary_unary(method)
                reply = rpc(request, timeout=self.settings.timeout, metadata=self.metadata())
                return reply, maybe_applied
            except grpc.RpcError as exc:
                error = translate(exc, what)
            except errors.NbdbError:
                raise
            except _Transient as exc:
                error = exc
            if isinstance(error, _Transient):
                if error.sent and mutation:
                    maybe_applied = True
                last = str(error)
                log.debug("etcd: %s failed on %s (attempt %d/%d): %s", what, endpoint, attempt + 1, attempts, error)
                self._advance(endpoint)
                self._backoff(attempt)
                continue
            if (
                isinstance(error, errors.AuthError)
                and "token" in str(error).lower()
                and self.settings.user is not None
                and not reauthenticated
            ):
                # The token expired (simple tokens last --auth-token-ttl): get a new one once.
                reauthenticated = True
                self._authenticate(endpoint, generation)
                continue
            raise error
        raise errors.BackendUnavailableError(
            f"etcd: {what} failed on every endpoint after {attempts} attempts (last: {last})"
        )

    def range(
        self, key: bytes, range_end: bytes = b"", *, limit: int = 0, revision: int = 0, count_only: bool = False
    ) -> tuple[wire.Header, list[wire.KV], bool, int]:
        """A linearizable Range."""
        request = wire.range_request(key, range_end, limit=limit, revision=revision, count_only=count_only)
        reply, _ = self.call(_RANGE, request, "range")
        return wire.parse_range(reply)

    def txn(self, request: bytes, *, mutation: bool = True) -> tuple[wire.Header, bool, list[list[wire.KV]], bool]:
        """A Txn: header, succeeded, range results, and whether an earlier failed try may have applied."""
        reply, maybe_applied = self.call(_TXN, request, "transaction", mutation=mutation)
        header, succeeded, ranges = wire.parse_txn(reply)
        return header, succeeded, ranges, maybe_applied

    def compact(self, revision: int) -> None:
        """Compact the key history up to ``revision`` (physically, so watchers see it at once)."""
        self.call(_COMPACT, wire.compact_request(revision, physical=True), "compact", mutation=True)

    def status(self) -> tuple[wire.Header, str, int]:
        """The current member's status: header, version, leader id."""
        reply, _ = self.call(_STATUS, b"", "status")
        return wire.parse_status(reply)

    def lease_grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: (id, granted ttl)."""
        reply, _ = self.call(_LEASE_GRANT, wire.lease_grant_request(ttl), "lease grant", mutation=True)
        _, lease_id, granted, error = wire.parse_lease(reply)
        if error or not lease_id:
            raise errors.BackendUnavailableError(f"etcd: lease grant failed: {error or 'no lease id'}")
        return lease_id, granted

    def lease_revoke(self, lease_id: int) -> bool:
        """Revoke a lease (and delete its keys); False if it no longer exists."""
        try:
            self.call(_LEASE_REVOKE, wire.lease_id_request(lease_id), "lease revoke", mutation=True)
        except errors.BackendUnavailableError as exc:
            if "lease not found" in str(exc):
                return False
            raise
        return True

    def lease_keepalive(self, lease_id: int) -> int:
        """Renew a lease once; its new TTL, or 0 if it has expired."""
        attempts = self.settings.attempts
        last = ""
        reauthenticated = False
        for attempt in range(attempts):
            endpoint = self.current_endpoint()
            generation = self._token_generation
            try:
                stream = self._channel(endpoint).stream_stream(_LEASE_KEEPALIVE)
                call = stream(iter([wire.lease_id_request(lease_id)]), timeout=self.settings.timeout,
                              metadata=self.metadata())  # fmt: skip
                try:
                    reply = next(call)
                finally:
                    call.cancel()
                _, _, ttl, _ = wire.parse_lease(reply)
                return max(0, ttl)
            except StopIteration:
                last = "keep-alive stream closed without a reply"
            except grpc.RpcError as exc:
                error = translate(exc, "lease keep-alive")
                token_expired = isinstance(error, errors.AuthError) and "token" in str(error).lower()
                if token_expired and self.settings.user is not None and not reauthenticated:
                    reauthenticated = True
                    self._authenticate(endpoint, generation)
                    continue
                if not isinstance(error, _Transient):
                    raise error from None
                last = str(error)
            self._advance(endpoint)
            self._backoff(attempt)
        raise errors.BackendUnavailableError(f"etcd: lease keep-alive failed on every endpoint ({last})")

    def watch(self, key: bytes, range_end: bytes, start_revision: int) -> WatchSession:
        """Open a watch stream on the current endpoint (errors arrive on the session's queue)."""
        endpoint = self.current_endpoint()
        return WatchSession(self, endpoint, key, range_end, start_revision)

    def failed(self, endpoint: str, exc: Exception) -> Exception:
        """Classify a stream failure on ``endpoint``; move on from it if it is transient."""
        error = translate(exc, "watch") if isinstance(exc, grpc.RpcError) else exc
        if isinstance(error, _Transient):
            self._advance(endpoint)
        return error

    def refresh_token(self, endpoint: str) -> None:
        """Get a new auth token (after a stream was refused for its token)."""
        self._authenticate(endpoint, self._token_generation)

    def close(self) -> None:
        """Close every channel."""
        with self._lock:
            self._closed = True
            channels = list(self._channels.values())
            self._channels.clear()
        for channel in channels:
            channel.close()


class WatchSession:
    """One gRPC watch stream with one watcher; responses (or the failure) land in ``responses``."""

    def __init__(self, client: EtcdClient, endpoint: str, key: bytes, range_end: bytes, start_revision: int) -> None:
        self.endpoint = endpoint
        self.responses: queue.Queue[wire.WatchResponse | Exception | None] = queue.Queue()
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
            for raw in self._call:
                self.responses.put(wire.parse_watch(raw))
            if not self._cancelled:
                self.responses.put(_Transient("watch stream ended by the server", True))
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

    def close(self) -> None:
        """Stop the stream and its threads."""
        self._cancelled = True
        self._requests.put(None)
        if self._call is not None:
            self._call.cancel()


def is_transient(exc: BaseException) -> bool:
    """Whether a failure from :meth:`EtcdClient.failed` is worth a retry elsewhere."""
    return isinstance(exc, _Transient)


def safe_progress_requests(version: str) -> bool:
    """Whether a server orders requested progress notifications after pending events.

    etcd before 3.4.24 / 3.5.8 could send a requested progress notification
    ahead of events it had not sent yet (etcd-io/etcd#15220), which would make
    its revision an unsafe resume point.
    """
    try:
        parts = tuple(int(p) for p in version.split("-")[0].split(".")[:3])
    except ValueError:
        return False
    if len(parts) < 3:
        return False
    if parts[:2] == (3, 4):
        return parts >= (3, 4, 24)
    if parts[:2] == (3, 5):
        return parts >= (3, 5, 8)
    return parts >= (3, 6, 0)


def chunked(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """``items`` in slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
