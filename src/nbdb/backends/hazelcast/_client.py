"""Reaching a Hazelcast cluster: the URL and its options, the client, and its errors in nbdb's terms."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from nbdb import errors
from nbdb.options import Options, redact, split_hosts, split_userinfo
from nbdb.retry import ErrorRule, ExceptionMap, RetryPolicy

try:
    import hazelcast.errors as hzerrors
    from hazelcast.client import HazelcastClient
    from hazelcast.config import ReconnectMode
    from hazelcast.lifecycle import LifecycleState

    from nbdb.backends.hazelcast._member import factories
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        f"the hazelcast backend needs hazelcast-python-client: pip install 'nbdb[hazelcast]' ({exc})"
    ) from exc

__all__ = [
    "DEFAULT_GROUP_COMMIT",
    "DEFAULT_HISTORY",
    "DEFAULT_MEMBER_PROBES",
    "DEFAULT_PORT",
    "ERRORS",
    "HazelcastConfig",
    "connect",
    "parse_url",
]

T = TypeVar("T")

DEFAULT_PORT = 5701
DEFAULT_HISTORY = 10_000
DEFAULT_GROUP_COMMIT = 32
DEFAULT_MEMBER_PROBES = 7
"""Probes of the members' code in the window a connect or a membership change opens, at most (the connect's probe or
one at once, then 1, 3, 7, 15, 31, 63 s after): main's window."""
RECONNECT_MAX_BACKOFF = 1.0
"""Seconds, at most, between two attempts of a client to reach its cluster again after losing it."""
_NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]{0,64}$")
_OPTIONS = frozenset(
    {
        "namespace",
        "history",
        "timeout",
        "connect_timeout",
        "commit_lease",
        "client_name",
        "smart_routing",
        "group_commit",
        "member_commit",
        "member_probes",
    }
    | {"retries", "retry_backoff", "retry_deadline"}
    | {"username", "password", "ssl", "tls", "ssl_cafile", "ssl_certfile", "ssl_keyfile"}
)
_ENTERPRISE_OPTIONS = {
    "username": "client authentication (a member security realm)",
    "password": "client authentication (a member security realm)",
    "ssl": "TLS",
    "tls": "TLS",
    "ssl_cafile": "TLS",
    "ssl_certfile": "TLS",
    "ssl_keyfile": "TLS",
}


@dataclass(frozen=True)
class HazelcastConfig:
    """Connection settings parsed from a URL and options."""

    members: tuple[tuple[str, int], ...]
    cluster_name: str
    namespace: str
    history: int
    timeout: float
    connect_timeout: float
    commit_lease: float
    client_name: str | None
    smart_routing: bool
    group_commit: int
    member_commit: bool
    """Commit with nbdb's member-side task when the members have it (one round trip a commit)."""
    member_probes: int
    """While member commits are off, how many probes the window after a connect or a membership change sends at most
    (0: no timed re-probes and no membership listener, the connect's probe only, besides the one a refused or handed
    back task sends; see ``HazelcastBackend._reprobe_member_code``)."""
    retry: RetryPolicy

    @property
    def where(self) -> str:
        """``host:port,...`` of the members, for messages."""
        return ",".join(f"{h}:{p}" for h, p in self.members)

    def __repr__(self) -> str:
        # The cluster name is the cluster's only shared secret: keep it out of logs.
        return f"HazelcastConfig(hazelcast://{self.where}/***, namespace={self.namespace!r})"


def parse_url(url: str, options: Mapping[str, Any]) -> HazelcastConfig:
    """Parse ``hazelcast://host:port[,...]/cluster-name`` plus options (keywords win over the query)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "hazelcast":
        raise errors.ValidationError(f"not a hazelcast URL: {redact(url)!r}")
    opts = Options.from_url(parts.query, options, _OPTIONS, "hazelcast")
    user, password, netloc = split_userinfo(parts.netloc)
    if user is not None or password is not None:
        raise errors.UnsupportedError(
            "hazelcast URL: credentials need a member security realm, an Enterprise feature; "
            "the open-source cluster checks only the cluster name (the URL path)"
        )
    enterprise = sorted(k for k in opts.names() if k in _ENTERPRISE_OPTIONS)
    if enterprise:
        what = ", ".join(sorted({_ENTERPRISE_OPTIONS[k] for k in enterprise}))
        raise errors.UnsupportedError(
            f"hazelcast option(s) {', '.join(enterprise)}: {what} is Hazelcast Enterprise only; "
            "the open-source cluster checks only the cluster name"
        )
    path = [unquote(p) for p in parts.path.split("/") if p]
    if len(path) > 1:
        raise errors.ValidationError("hazelcast URL path is /CLUSTER-NAME")
    namespace = opts.text("namespace", "")
    if not _NAMESPACE.match(namespace):
        raise errors.ValidationError(
            f"hazelcast option namespace may hold letters, digits, '_', '.', '-': {namespace!r}"
        )
    timeout = opts.number("timeout", 10.0, minimum=1.0)
    return HazelcastConfig(
        members=split_hosts(netloc or "127.0.0.1", DEFAULT_PORT, "hazelcast"),
        cluster_name=path[0] if path else "dev",
        namespace=namespace,
        history=opts.integer("history", DEFAULT_HISTORY, minimum=1),
        timeout=timeout,
        connect_timeout=opts.number("connect_timeout", 10.0, minimum=0.1),
        commit_lease=opts.number("commit_lease", 30.0, minimum=1.0),
        client_name=opts.text("client_name"),
        smart_routing=opts.flag("smart_routing", True),
        group_commit=opts.integer("group_commit", DEFAULT_GROUP_COMMIT, minimum=0),
        member_commit=opts.flag("member_commit", True),
        member_probes=opts.integer("member_probes", DEFAULT_MEMBER_PROBES, minimum=0),
        retry=opts.retry_policy(RetryPolicy(attempts=6, backoff=0.02, max_backoff=1.0, deadline=timeout)),
    )


_GONE = (
    hzerrors.TargetDisconnectedError,
    hzerrors.HazelcastClientNotActiveError,
    hzerrors.OperationTimeoutError,
    hzerrors.MemberLeftError,
    hzerrors.HazelcastIOError,
    hzerrors.HazelcastTimeoutError,
    hzerrors.TransactionError,
    hzerrors.TransactionNotActiveError,
    hzerrors.TransactionTimedOutError,
    hzerrors.IllegalStateError,
)
_REFUSED = (
    hzerrors.ClientOfflineError,
    hzerrors.TargetNotMemberError,
    hzerrors.WrongTargetError,
    hzerrors.PartitionMigratingError,
    hzerrors.RetryableHazelcastError,
    hzerrors.HazelcastInstanceNotActiveError,
)

ERRORS = ExceptionMap(
    "hazelcast",
    [
        ErrorRule((hzerrors.AuthenticationError, hzerrors.SecurityError, hzerrors.AccessControlError),
                  errors.AuthError, message="the cluster refused the client"),
        ErrorRule((hzerrors.HazelcastSerializationError, hzerrors.ClassCastError), errors.CorruptRecordError,
                  message="a map of the nbdb namespace holds data nbdb did not write"),
        ErrorRule((hzerrors.UnsupportedOperationError,), errors.UnsupportedError),
        ErrorRule(_REFUSED, errors.BackendUnavailableError, retryable=True, unsent=True),
        ErrorRule(_GONE, errors.BackendUnavailableError, retryable=True),
    ],
)  # fmt: skip
"""hazelcast-python-client's exceptions in nbdb's terms: refusals never ran, lost replies may have."""


def connect(config: HazelcastConfig) -> Any:
    """A client connected to the cluster; AuthError when the members answer but refuse the cluster name.

    The client never gives up on the cluster once it reached it: a client whose
    ``cluster_connect_timeout`` runs out while the cluster is away shuts itself down for good, and
    every later call of its Database would fail ("Client is not active") after the cluster came
    back. So the client reconnects forever in the background (backoff capped at
    :data:`RECONNECT_MAX_BACKOFF`); ``connect_timeout`` bounds the first connection only: this
    function waits that long for it. While the client has no connection, a request waits for it
    (the client's ``ReconnectMode.ON``: it is retried until ``invocation_timeout``, then fails as
    a request that may have run, which a commit settles through its token). The client's
    ``ReconnectMode.ASYNC`` was tried and dropped: it refuses requests while offline with an error
    that its own internal retry of a request already sent also raises, so a refusal cannot be taken
    as "never sent" (a member killed under writes made commits that had landed report a conflict).
    """
    connected = threading.Event()
    gone = threading.Event()

    def on_state(state: str) -> None:
        if state == LifecycleState.CONNECTED:
            connected.set()
        elif state in (LifecycleState.SHUTTING_DOWN, LifecycleState.SHUTDOWN):
            gone.set()
            connected.set()

    try:
        client = HazelcastClient(
            cluster_name=config.cluster_name,
            cluster_members=[f"{h}:{p}" for h, p in config.members],
            async_start=True,
            reconnect_mode=ReconnectMode.ON,
            cluster_connect_timeout=-1,
            retry_initial_backoff=0.1,
            retry_max_backoff=RECONNECT_MAX_BACKOFF,
            retry_multiplier=1.5,
            retry_jitter=0.2,
            lifecycle_listeners=[on_state],
            connection_timeout=min(config.connect_timeout, 5.0),
            invocation_timeout=config.timeout,
            # A frozen member keeps its sockets open: only a missed heartbeat ends a request
            # that was sent to it, so the heartbeat bounds every call by ``timeout`` too.
            heartbeat_interval=1.0,
            heartbeat_timeout=config.timeout,
            # Requests to a dead member's partitions are retried until its backups take over;
            # the default 1 s pause between tries would add most of a second to every failover.
            invocation_retry_pause=0.1,
            smart_routing=config.smart_routing,
            redo_operation=False,
            statistics_enabled=False,
            client_name=config.client_name,
            data_serializable_factories=factories(),
        )
    except hzerrors.IllegalStateError:
        raise _unreachable(config) from None
    except hzerrors.HazelcastError as exc:
        raise ERRORS.translate(exc, f"at {config.where}") from None
    if connected.wait(config.connect_timeout) and not gone.is_set():
        return client
    try:
        client.shutdown()
    except Exception:  # giving up must not fail
        pass
    raise _unreachable(config)


def _unreachable(config: HazelcastConfig) -> errors.NbdbError:
    """Why the client found no cluster: members that accept TCP but refuse the client mean a wrong cluster name."""
    for host, port in config.members:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return errors.AuthError(
                    f"hazelcast members at {config.where} answer but refused the client: "
                    "check the cluster name in the URL path (the cluster's shared secret)"
                )
        except OSError:
            continue
    return errors.BackendUnavailableError(
        f"hazelcast at {config.where} is unreachable (no member answered within {config.connect_timeout}s)"
    )
