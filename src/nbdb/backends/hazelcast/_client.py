"""Reaching a Hazelcast cluster: the URL and its options, the client, and its errors in nbdb's terms."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from nbdb import errors
from nbdb.loader import redact, url_options

try:
    import hazelcast.errors as hzerrors
    from hazelcast.client import HazelcastClient
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        f"the hazelcast backend needs hazelcast-python-client: pip install 'nbdb[hazelcast]' ({exc})"
    ) from exc

__all__ = ["DEFAULT_HISTORY", "DEFAULT_PORT", "HazelcastConfig", "connect", "parse_url", "translate"]

T = TypeVar("T")

DEFAULT_PORT = 5701
DEFAULT_HISTORY = 10_000
_NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]{0,64}$")
_OPTIONS = frozenset(
    {"namespace", "history", "timeout", "connect_timeout", "commit_lease", "client_name", "smart_routing"}
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

    @property
    def where(self) -> str:
        """``host:port,...`` of the members, for messages."""
        return ",".join(f"{h}:{p}" for h, p in self.members)

    def __repr__(self) -> str:
        # The cluster name is the cluster's only shared secret: keep it out of logs.
        return f"HazelcastConfig(hazelcast://{self.where}/***, namespace={self.namespace!r})"


def _number(name: str, text: Any, kind: Callable[[str], T], minimum: float) -> T:
    try:
        value = kind(str(text))
    except ValueError:
        raise errors.ValidationError(f"hazelcast option {name} must be a number, not {text!r}") from None
    if value < minimum:  # type: ignore[operator]
        raise errors.ValidationError(f"hazelcast option {name} must be >= {minimum}, not {text!r}")
    return value


def _member(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise errors.ValidationError(f"hazelcast URL: missing host in {text!r}")
    return host, _number("port", port or DEFAULT_PORT, int, 1)


def parse_url(url: str, options: Mapping[str, Any]) -> HazelcastConfig:
    """Parse ``hazelcast://host:port[,...]/cluster-name`` plus options (keywords win over the query)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "hazelcast":
        raise errors.ValidationError(f"not a hazelcast URL: {redact(url)!r}")
    query = url_options(parts.query, {k: v for k, v in options.items() if v is not None}, _OPTIONS, "hazelcast")
    netloc = parts.netloc
    if "@" in netloc:
        raise errors.UnsupportedError(
            "hazelcast URL: credentials need a member security realm, an Enterprise feature; "
            "the open-source cluster checks only the cluster name (the URL path)"
        )
    enterprise = sorted(k for k in query if k in _ENTERPRISE_OPTIONS)
    if enterprise:
        what = ", ".join(sorted({_ENTERPRISE_OPTIONS[k] for k in enterprise}))
        raise errors.UnsupportedError(
            f"hazelcast option(s) {', '.join(enterprise)}: {what} is Hazelcast Enterprise only; "
            "the open-source cluster checks only the cluster name"
        )
    members = tuple(_member(m) for m in (netloc or "127.0.0.1").split(",") if m)
    path = [unquote(p) for p in parts.path.split("/") if p]
    if len(path) > 1:
        raise errors.ValidationError("hazelcast URL path is /CLUSTER-NAME")
    namespace = str(query.get("namespace", ""))
    if not _NAMESPACE.match(namespace):
        raise errors.ValidationError(
            f"hazelcast option namespace may hold letters, digits, '_', '.', '-': {namespace!r}"
        )
    smart = str(query.get("smart_routing", "1")).strip().lower()
    if smart not in ("0", "1", "true", "false"):
        raise errors.ValidationError(f"hazelcast option smart_routing must be 0 or 1, not {smart!r}")
    return HazelcastConfig(
        members=members,
        cluster_name=path[0] if path else "dev",
        namespace=namespace,
        history=_number("history", query.get("history", DEFAULT_HISTORY), int, 1),
        timeout=_number("timeout", query.get("timeout", 10), float, 1.0),
        connect_timeout=_number("connect_timeout", query.get("connect_timeout", 10), float, 0.1),
        commit_lease=_number("commit_lease", query.get("commit_lease", 30), float, 1.0),
        client_name=query.get("client_name"),
        smart_routing=smart in ("1", "true"),
    )


def translate(exc: BaseException, where: str) -> errors.NbdbError:
    """The nbdb error for a hazelcast-python-client exception."""
    if isinstance(exc, errors.NbdbError):
        return exc
    if isinstance(exc, hzerrors.AuthenticationError | hzerrors.SecurityError | hzerrors.AccessControlError):
        return errors.AuthError(f"hazelcast at {where} refused the client: {exc}")
    if isinstance(exc, hzerrors.HazelcastSerializationError | hzerrors.ClassCastError):
        return errors.CorruptRecordError(f"a map of the nbdb namespace at {where} holds foreign data: {exc}")
    if isinstance(exc, hzerrors.UnsupportedOperationError):
        return errors.UnsupportedError(f"hazelcast at {where} does not support this: {exc}")
    return errors.BackendUnavailableError(f"hazelcast at {where} failed: {type(exc).__name__}: {exc}")


def connect(config: HazelcastConfig) -> Any:
    """A client connected to the cluster; AuthError when the members answer but refuse the cluster name."""
    try:
        return HazelcastClient(
            cluster_name=config.cluster_name,
            cluster_members=[f"{h}:{p}" for h, p in config.members],
            cluster_connect_timeout=config.connect_timeout,
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
        )
    except hzerrors.IllegalStateError:
        raise _unreachable(config) from None
    except hzerrors.HazelcastError as exc:
        raise translate(exc, config.where) from None


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
