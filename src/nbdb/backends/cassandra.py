"""Apache Cassandra 5.0+ (SAI): the wide-column family over ``cassandra-driver``.

URL::

    cassandra://[USER:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/KEYSPACE[?OPTIONS]

Options (query string or keyword arguments of :func:`nbdb.connect`):

``namespace``           isolates one application's data: a component of every partition key
``rf``                  create the keyspace (if missing) with SimpleStrategy and this replication factor (default 1)
``replication``         create it with NetworkTopologyStrategy instead: ``dc1:3,dc2:3``
``consistency``         QUORUM, LOCAL_QUORUM (default), EACH_QUORUM or ALL
``serial_consistency``  SERIAL or LOCAL_SERIAL (default): the Paxos phase of lightweight transactions
``local_dc``            the datacenter the token-aware policy prefers
``tls``                 1 to connect with TLS; ``ca``, ``cert``, ``key``, ``check_hostname`` (default 1)
``history``             seconds of change history kept for ``watch(since=...)`` (default 86400)
``settle``              seconds a watcher waits for an in-flight commit before sealing it (default 2)
``timeout``             request timeout in seconds (default 15); ``connect_timeout`` (default 10)

Sessions are shared, reference-counted, by every backend of the process that
connects with the same servers, credentials and TLS settings (a Cassandra
session is expensive and thread-safe).
"""

from __future__ import annotations

import logging
import re
import ssl
import threading
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from nbdb import errors
from nbdb.capabilities import Atomicity, Capabilities, Durability
from nbdb.families.widecolumn import OutcomeUnknownError, WideColumnBackend, WideColumnOptions
from nbdb.options import Options

try:
    import cassandra
    from cassandra import ConsistencyLevel
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
    from cassandra.connection import DefaultEndPoint
    from cassandra.policies import (
        DCAwareRoundRobinPolicy,
        ExponentialReconnectionPolicy,
        RoundRobinPolicy,
        TokenAwarePolicy,
    )
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(f"the cassandra backend needs cassandra-driver: pip install 'nbdb[cassandra]' ({exc})") from exc

__all__ = ["CassandraBackend"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 9042
_CAS_WRITE_UNKNOWN = 0x1700
"""Protocol v5 error: a contended LWT's proposal reached some replicas but not a quorum (the driver has no
class for it). Its outcome is decided later, by whichever Paxos round comes next."""
_KEYSPACE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
_CONSISTENCY = {name: getattr(ConsistencyLevel, name) for name in ("QUORUM", "LOCAL_QUORUM", "EACH_QUORUM", "ALL")}
_SERIAL = {name: getattr(ConsistencyLevel, name) for name in ("SERIAL", "LOCAL_SERIAL")}
_OPTIONS = {
    "namespace", "rf", "replication", "consistency", "serial_consistency", "local_dc", "tls", "ca", "cert",
    "key", "check_hostname", "history", "settle", "timeout", "connect_timeout", "clock",
}  # fmt: skip


def _flag(name: str, value: Any) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise errors.ValidationError(f"cassandra:// option {name} must be 0 or 1, not {value!r}")


def _number(name: str, value: Any, kind: type[int] | type[float], low: float) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise errors.ValidationError(f"cassandra:// option {name} must be a number, not {value!r}") from None
    if number < low:
        raise errors.ValidationError(f"cassandra:// option {name} must be at least {low}, not {value!r}")
    return number


class _SharedSession:
    """One Cluster + Session, shared by the backends that connect with identical settings."""

    def __init__(self, key: tuple[Any, ...], cluster: Any, session: Any) -> None:
        self.key = key
        self.cluster = cluster
        self.session = session
        self.users = 0


_SESSIONS: dict[tuple[Any, ...], _SharedSession] = {}
_SESSIONS_LOCK = threading.Lock()


def _is_auth_failure(exc: BaseException) -> bool:
    if isinstance(exc, cassandra.AuthenticationFailed | cassandra.Unauthorized):
        return True
    if isinstance(exc, NoHostAvailable):
        return any(_is_auth_failure(e) for e in (exc.errors or {}).values() if isinstance(e, BaseException))
    return "AuthenticationFailed" in type(exc).__name__ or "Bad credentials" in str(exc)


def translate_error(exc: BaseException, cas: bool = False) -> Exception:
    """The nbdb error for a cassandra-driver exception (OutcomeUnknownError for a CAS timeout)."""
    from cassandra.cluster import OperationTimedOut

    if isinstance(exc, errors.NbdbError | OutcomeUnknownError):
        return exc
    if _is_auth_failure(exc):
        return errors.AuthError(f"Cassandra refused the credentials or the permission: {exc}")
    if cas and (
        isinstance(exc, cassandra.WriteTimeout | OperationTimedOut | cassandra.WriteFailure)
        or getattr(exc, "code", None) == _CAS_WRITE_UNKNOWN
    ):
        return OutcomeUnknownError(str(exc))
    if isinstance(exc, cassandra.InvalidRequest | cassandra.ConfigurationException):
        return errors.NbdbError(f"Cassandra rejected a request: {exc}")
    if isinstance(exc, cassandra.DriverException | NoHostAvailable | OperationTimedOut | OSError):
        return errors.BackendUnavailableError(f"Cassandra is unavailable: {exc}")
    if isinstance(exc, cassandra.RequestExecutionException | cassandra.RequestValidationException):
        return errors.BackendUnavailableError(f"Cassandra failed the request: {exc}")
    return errors.BackendUnavailableError(f"Cassandra client error ({type(exc).__name__}): {exc}")


class CassandraBackend(WideColumnBackend):
    """Backend for ``cassandra://`` URLs. See the module docstring for the URL grammar."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        transactions=Atomicity.SINGLE_PARTITION,
        linearizable_reads=True,
        server_side_topic_filter=True,
        durability=Durability.CONFIGURABLE,
        history="`history` seconds of changes (default 86400; cassandra://...?history=S), "
        "or since the last compact_history()",
        cross_process=True,
        notes="A topic is a partition: a transaction commits atomically (one conditional batch) when all its "
        "objects share one topic, and raises UnsupportedError otherwise; single-object writes always work. "
        "Every commit costs two lightweight transactions: one on the revision sequencer row, shared by the "
        "namespace (a ceiling of a few hundred commits per second per namespace), one on the topic's partition. "
        "References within a topic are checked atomically; a reference to another topic is first reserved on "
        "the target (an LWT), and a delete of the target stops an in-flight reserving commit by sealing the "
        "source's partition, so no reference dangles (docs/backends/cassandra.md). "
        "Durability: a write is acknowledged at the consistency level (LOCAL_QUORUM); it survives a crash "
        "of all replicas only with commitlog_sync: batch (the default periodic sync may lose ~10 s). "
        "Reads are linearizable at the quorum levels nbdb accepts (ONE is refused). "
        "Watchers and list() write a little (sealing a partition with an LWT), so they need write access.",
    )

    protocol_version: ClassVar[int] = 5
    """CQL native protocol spoken (Cassandra 4.0+: v5; a ScyllaDB subclass would say 4)."""

    def __init__(self, shared: _SharedSession, options: WideColumnOptions) -> None:
        self._shared: _SharedSession | None = shared
        try:
            super().__init__(shared.session, options)
        except BaseException:
            self.close_session()
            raise

    # ---------------------------------------------------------------- hooks

    def translate(self, exc: BaseException, cas: bool = False) -> Exception:
        return translate_error(exc, cas)

    def close_session(self) -> None:
        shared, self._shared = self._shared, None
        if shared is None:
            return
        with _SESSIONS_LOCK:
            shared.users -= 1
            if shared.users > 0:
                return
            if _SESSIONS.get(shared.key) is shared:
                del _SESSIONS[shared.key]
        try:
            shared.cluster.shutdown()
        except Exception as exc:  # shutting down must not fail the caller
            log.debug("cassandra cluster shutdown: %s", exc)

    # ---------------------------------------------------------------- URL

    @classmethod
    def from_url(cls, url: str, **options: Any) -> CassandraBackend:
        """Open ``cassandra://[user:pass@]host[:port][,host...]/keyspace[?options]``."""
        parts = urlsplit(url)
        if parts.scheme.lower() != "cassandra":
            raise errors.ValidationError(f"not a cassandra:// URL: {parts.scheme}://...")
        query = Options.merged(parts.query, options, _OPTIONS, "cassandra://")

        netloc = parts.netloc
        username = password = None
        if "@" in netloc:
            creds, _, netloc = netloc.rpartition("@")
            user, sep, secret = creds.partition(":")
            username, password = unquote(user), (unquote(secret) if sep else "")
        endpoints = []
        for item in netloc.split(","):
            if not item:
                continue
            host, sep, port_text = item.rpartition(":") if not item.endswith("]") else (item, "", "")
            if not sep:
                host, port_text = item, ""
            host = host.strip("[]")
            port = _number("port", port_text, int, 1) if port_text else DEFAULT_PORT
            endpoints.append((host, port))
        if not endpoints:
            raise errors.ValidationError("cassandra:// URL needs at least one host")
        keyspace = parts.path.strip("/") or "nbdb"
        if not _KEYSPACE.match(keyspace):
            raise errors.ValidationError(f"not a Cassandra keyspace name: {keyspace!r}")

        consistency_name = str(query.get("consistency", "LOCAL_QUORUM")).upper()
        if consistency_name not in _CONSISTENCY:
            raise errors.ValidationError(
                f"cassandra:// consistency must be one of {', '.join(_CONSISTENCY)} (nbdb needs quorum reads "
                f"and writes to keep its guarantees), not {consistency_name!r}"
            )
        serial_name = str(query.get("serial_consistency", "LOCAL_SERIAL")).upper()
        if serial_name not in _SERIAL:
            raise errors.ValidationError("cassandra:// serial_consistency must be SERIAL or LOCAL_SERIAL")
        replication = _replication(query)
        tls = _flag("tls", query.get("tls", "0"))
        ssl_context = _ssl_context(query) if tls else None
        if not tls and any(k in query for k in ("ca", "cert", "key")):
            raise errors.ValidationError("cassandra:// options ca, cert and key need tls=1")
        namespace = str(query.get("namespace", ""))
        if "/" in namespace:
            raise errors.ValidationError(f"cassandra:// namespace must not contain '/': {namespace!r}")
        clock = query.get("clock")
        if clock is not None and not callable(clock):
            raise errors.ValidationError("cassandra:// option clock must be a callable returning seconds")
        settings = WideColumnOptions(
            keyspace=keyspace,
            namespace=namespace,
            consistency=_CONSISTENCY[consistency_name],
            serial_consistency=_SERIAL[serial_name],
            history=_number("history", query.get("history", 86_400), int, 1),
            settle=_number("settle", query.get("settle", 2.0), float, 0.0),
            request_timeout=_number("timeout", query.get("timeout", 15.0), float, 0.1),
            replication=replication,
            **({"clock": clock} if clock is not None else {}),
        )
        connect_timeout = _number("connect_timeout", query.get("connect_timeout", 10.0), float, 0.1)
        local_dc = query.get("local_dc")
        key = (
            tuple(endpoints), username, password, tls, query.get("ca"), query.get("cert"), query.get("key"),
            query.get("check_hostname"), local_dc, connect_timeout,
        )  # fmt: skip
        shared = _open_session(key, endpoints, username, password, ssl_context, local_dc, connect_timeout)
        return cls(shared, settings)

    def __repr__(self) -> str:
        return f"<CassandraBackend keyspace={self._ks!r} namespace={self._o.namespace!r}>"


def _replication(query: dict[str, Any]) -> str:
    if "replication" in query:
        if "rf" in query:
            raise errors.ValidationError("cassandra:// takes rf or replication, not both")
        dcs = {}
        for item in str(query["replication"]).split(","):
            dc, sep, count = item.partition(":")
            if not sep or not dc.strip():
                raise errors.ValidationError(
                    f"cassandra:// replication is dc:N[,dc:N...], not {query['replication']!r}"
                )
            dcs[dc.strip()] = _number("replication", count, int, 1)
        body = ", ".join(f"'{dc}': {n}" for dc, n in dcs.items())
        return f"{{'class': 'NetworkTopologyStrategy', {body}}}"
    rf = _number("rf", query.get("rf", 1), int, 1)
    return f"{{'class': 'SimpleStrategy', 'replication_factor': {rf}}}"


def _ssl_context(query: dict[str, Any]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=query.get("ca"))
    context.check_hostname = _flag("check_hostname", query.get("check_hostname", "1"))
    if query.get("cert"):
        try:
            context.load_cert_chain(query["cert"], query.get("key"))
        except (OSError, ssl.SSLError) as exc:
            raise errors.ValidationError(f"cassandra:// cannot load the client certificate: {exc}") from None
    return context


def _open_session(
    key: tuple[Any, ...],
    endpoints: list[tuple[str, int]],
    username: str | None,
    password: str | None,
    ssl_context: ssl.SSLContext | None,
    local_dc: Any,
    connect_timeout: float,
) -> _SharedSession:
    with _SESSIONS_LOCK:
        shared = _SESSIONS.get(key)
        if shared is not None:
            shared.users += 1
            return shared
        child = DCAwareRoundRobinPolicy(local_dc=str(local_dc)) if local_dc else RoundRobinPolicy()
        profile = ExecutionProfile(load_balancing_policy=TokenAwarePolicy(child), request_timeout=15.0)
        cluster = Cluster(
            contact_points=[DefaultEndPoint(host, port) for host, port in endpoints],
            auth_provider=None if username is None else PlainTextAuthProvider(username, password or ""),
            ssl_context=ssl_context,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            reconnection_policy=ExponentialReconnectionPolicy(0.2, 2.0),
            connect_timeout=connect_timeout,
            control_connection_timeout=connect_timeout,
            protocol_version=CassandraBackend.protocol_version,
            idle_heartbeat_interval=5,
            idle_heartbeat_timeout=5,
        )
        try:
            session = cluster.connect()
        except Exception as exc:
            cluster.shutdown()
            raise translate_error(exc) from exc
        shared = _SharedSession(key, cluster, session)
        shared.users = 1
        _SESSIONS[key] = shared
        return shared
