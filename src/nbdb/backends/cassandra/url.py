"""The ``cassandra://`` URL: hosts, credentials, keyspace and options, checked and typed.

::

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
``clock``               (keyword only) a callable returning seconds; stamps the diagnostic ``at`` column
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from nbdb import errors
from nbdb.families.widecolumn import WideColumnOptions
from nbdb.loader import url_options

__all__ = ["DEFAULT_PORT", "CassandraUrl", "parse_url"]

DEFAULT_PORT = 9042
LABEL = "cassandra://"
_KEYSPACE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
CONSISTENCY = ("QUORUM", "LOCAL_QUORUM", "EACH_QUORUM", "ALL")
SERIAL_CONSISTENCY = ("SERIAL", "LOCAL_SERIAL")
_OPTIONS = {
    "namespace", "rf", "replication", "consistency", "serial_consistency", "local_dc", "tls", "ca", "cert",
    "key", "check_hostname", "history", "settle", "timeout", "connect_timeout", "clock",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class CassandraUrl:
    """Everything a ``cassandra://`` URL says, checked."""

    endpoints: tuple[tuple[str, int], ...]
    keyspace: str
    family: WideColumnOptions
    consistency: str = "LOCAL_QUORUM"
    serial_consistency: str = "LOCAL_SERIAL"
    replication: str = "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    check_hostname: bool = True
    local_dc: str | None = None
    request_timeout: float = 15.0
    connect_timeout: float = 10.0

    @property
    def session_key(self) -> tuple[Any, ...]:
        """What two URLs must share to share a session."""
        return (
            self.endpoints, self.username, self.password, self.tls, self.ca, self.cert, self.key,
            self.check_hostname, self.local_dc, self.connect_timeout,
        )  # fmt: skip

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context (None without ``tls=1``); ValidationError if a certificate cannot be loaded."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca)
        except (OSError, ssl.SSLError) as exc:
            raise errors.ValidationError(f"{LABEL} cannot load the CA file: {exc}") from None
        context.check_hostname = self.check_hostname
        if self.cert:
            try:
                context.load_cert_chain(self.cert, self.key)
            except (OSError, ssl.SSLError) as exc:
                raise errors.ValidationError(f"{LABEL} cannot load the client certificate: {exc}") from None
        return context


def parse_url(url: str, options: Mapping[str, Any]) -> CassandraUrl:
    """Check and type a ``cassandra://`` URL and its options (ValidationError on anything wrong)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "cassandra":
        raise errors.ValidationError(f"not a cassandra:// URL: {parts.scheme}://...")
    query = url_options(parts.query, options, _OPTIONS, LABEL)
    netloc = parts.netloc
    username = password = None
    if "@" in netloc:
        creds, _, netloc = netloc.rpartition("@")
        user, sep, secret = creds.partition(":")
        username, password = unquote(user), (unquote(secret) if sep else "")
    keyspace = parts.path.strip("/") or "nbdb"
    if not _KEYSPACE.match(keyspace):
        raise errors.ValidationError(f"not a Cassandra keyspace name: {keyspace!r}")
    consistency = _choice(query, "consistency", "LOCAL_QUORUM", CONSISTENCY, " (nbdb needs quorum reads and writes)")
    serial = _choice(query, "serial_consistency", "LOCAL_SERIAL", SERIAL_CONSISTENCY, "")
    tls = _flag(query, "tls", False)
    if not tls and any(k in query for k in ("ca", "cert", "key")):
        raise errors.ValidationError(f"{LABEL} options ca, cert and key need tls=1")
    namespace = str(query.get("namespace", ""))
    if "/" in namespace:
        raise errors.ValidationError(f"{LABEL} namespace must not contain '/': {namespace!r}")
    clock = query.get("clock")
    if clock is not None and not callable(clock):
        raise errors.ValidationError(f"{LABEL} option clock must be a callable returning seconds")
    family = WideColumnOptions(
        namespace=namespace,
        history=_number(query, "history", 86_400, int, 1),
        settle=_number(query, "settle", 2.0, float, 0.0),
        **({"clock": clock} if clock is not None else {}),
    )
    local_dc = query.get("local_dc")
    return CassandraUrl(
        endpoints=_endpoints(netloc),
        keyspace=keyspace,
        family=family,
        consistency=consistency,
        serial_consistency=serial,
        replication=_replication(query),
        username=username,
        password=password,
        tls=tls,
        ca=query.get("ca"),
        cert=query.get("cert"),
        key=query.get("key"),
        check_hostname=_flag(query, "check_hostname", True),
        local_dc=None if local_dc is None else str(local_dc),
        request_timeout=_number(query, "timeout", 15.0, float, 0.1),
        connect_timeout=_number(query, "connect_timeout", 10.0, float, 0.1),
    )


def _endpoints(netloc: str) -> tuple[tuple[str, int], ...]:
    endpoints = []
    for item in netloc.split(","):
        if not item:
            continue
        if item.startswith("["):  # [v6]:port
            host, _, rest = item[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            host, sep, port_text = item.rpartition(":")
            if not sep:
                host, port_text = item, ""
        port = _number({"port": port_text}, "port", DEFAULT_PORT, int, 1) if port_text else DEFAULT_PORT
        if port > 65535:
            raise errors.ValidationError(f"{LABEL} port must be at most 65535, not {port}")
        endpoints.append((host, port))
    if not endpoints:
        raise errors.ValidationError(f"{LABEL} URL needs at least one host")
    return tuple(endpoints)


def _replication(query: Mapping[str, Any]) -> str:
    if "replication" in query:
        if "rf" in query:
            raise errors.ValidationError(f"{LABEL} takes rf or replication, not both")
        dcs = {}
        for item in str(query["replication"]).split(","):
            dc, sep, count = item.partition(":")
            if not sep or not dc.strip():
                raise errors.ValidationError(f"{LABEL} replication is dc:N[,dc:N...], not {query['replication']!r}")
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", dc.strip()):
                raise errors.ValidationError(f"{LABEL} replication: not a datacenter name: {dc.strip()!r}")
            dcs[dc.strip()] = _number({"replication": count}, "replication", 1, int, 1)
        body = ", ".join(f"'{dc}': {n}" for dc, n in dcs.items())
        return f"{{'class': 'NetworkTopologyStrategy', {body}}}"
    rf = _number(query, "rf", 1, int, 1)
    return f"{{'class': 'SimpleStrategy', 'replication_factor': {rf}}}"


def _choice(query: Mapping[str, Any], name: str, default: str, allowed: tuple[str, ...], why: str) -> str:
    value = str(query.get(name, default)).upper()
    if value not in allowed:
        raise errors.ValidationError(f"{LABEL} {name} must be one of {', '.join(allowed)}{why}, not {value!r}")
    return value


def _flag(query: Mapping[str, Any], name: str, default: bool) -> bool:
    value = query.get(name, default)
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise errors.ValidationError(f"{LABEL} option {name} must be 0 or 1, not {value!r}")


def _number(query: Mapping[str, Any], name: str, default: Any, kind: type[int] | type[float], low: float) -> Any:
    value = query.get(name, default)
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise errors.ValidationError(f"{LABEL} option {name} must be a number, not {value!r}") from None
    if number < low:
        raise errors.ValidationError(f"{LABEL} option {name} must be at least {low}, not {value!r}")
    return number
