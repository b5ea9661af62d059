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
``heartbeat``           seconds (default 1): a connection that received nothing for that long is sent a
                        heartbeat, and one whose heartbeat is not answered within it is closed, so a node
                        that hangs (or a link that goes silent) is marked down within 2-3 heartbeats
``retries``             extra tries of a read that failed for a passing reason (default 2); ``retry_backoff``,
                        ``retry_deadline`` (seconds). Conditional writes are settled, never retried blindly
``clock``               (keyword only) a callable returning seconds; stamps the diagnostic ``at`` column
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from nbdb import errors
from nbdb.families.widecolumn import WideColumnOptions
from nbdb.options import Options, split_hosts, split_userinfo
from nbdb.retry import RetryPolicy

__all__ = ["DEFAULT_PORT", "CassandraUrl", "parse_url"]

DEFAULT_PORT = 9042
LABEL = "cassandra://"
_KEYSPACE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
_DATACENTER = re.compile(r"^[A-Za-z0-9_.-]+$")
CONSISTENCY = ("QUORUM", "LOCAL_QUORUM", "EACH_QUORUM", "ALL")
SERIAL_CONSISTENCY = ("SERIAL", "LOCAL_SERIAL")
READ_RETRIES = RetryPolicy(attempts=3, backoff=0.05, max_backoff=0.5, deadline=15.0)
"""Default policy of reads and plain writes that failed for a passing reason (``retries``, ``retry_backoff``,
``retry_deadline``). A compare-and-set is never retried blindly: the family settles it."""
_OPTIONS = {
    "namespace", "rf", "replication", "consistency", "serial_consistency", "local_dc", "tls", "ca", "cert",
    "key", "check_hostname", "history", "settle", "timeout", "connect_timeout", "clock", "retries",
    "retry_backoff", "retry_deadline", "heartbeat",
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
    heartbeat: float = 1.0
    """The driver's ``idle_heartbeat_interval`` and ``idle_heartbeat_timeout`` (docs/backends/cassandra.md,
    "A node that hangs")."""
    retry: RetryPolicy = READ_RETRIES

    @property
    def session_key(self) -> tuple[Any, ...]:
        """What two URLs must share to share a session."""
        return (
            self.endpoints, self.username, self.password, self.tls, self.ca, self.cert, self.key,
            self.check_hostname, self.local_dc, self.connect_timeout, self.heartbeat,
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


def parse_url(url: str, keywords: Mapping[str, Any]) -> CassandraUrl:
    """Check and type a ``cassandra://`` URL and its options (ValidationError on anything wrong)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "cassandra":
        raise errors.ValidationError(f"not a cassandra:// URL: {parts.scheme}://...")
    opts = Options.from_url(parts.query, keywords, _OPTIONS, LABEL)
    username, password, hosts = split_userinfo(parts.netloc)
    if username is not None and password is None:
        password = ""
    endpoints = split_hosts(hosts, DEFAULT_PORT, LABEL)
    if not endpoints:
        raise errors.ValidationError(f"{LABEL} URL needs at least one host")
    keyspace = parts.path.strip("/") or "nbdb"
    if not _KEYSPACE.match(keyspace):
        raise errors.ValidationError(f"not a Cassandra keyspace name: {keyspace!r}")
    consistency = opts.choice("consistency", "LOCAL_QUORUM", CONSISTENCY)
    tls = opts.flag("tls", False)
    if not tls and any(k in opts for k in ("ca", "cert", "key")):
        raise errors.ValidationError(f"{LABEL} options ca, cert and key need tls=1")
    namespace = opts.namespace()
    clock = opts.raw("clock")
    if clock is not None and not callable(clock):
        raise errors.ValidationError(f"{LABEL} option clock must be a callable returning seconds")
    family = WideColumnOptions(
        namespace=namespace,
        history=opts.integer("history", 86_400, minimum=1),
        settle=opts.number("settle", 2.0, minimum=0.0),
        **({"clock": clock} if clock is not None else {}),
    )
    return CassandraUrl(
        endpoints=endpoints,
        keyspace=keyspace,
        family=family,
        consistency=consistency,
        serial_consistency=opts.choice("serial_consistency", "LOCAL_SERIAL", SERIAL_CONSISTENCY),
        replication=_replication(opts),
        username=username,
        password=password,
        tls=tls,
        ca=opts.text("ca"),
        cert=opts.text("cert"),
        key=opts.text("key"),
        check_hostname=opts.flag("check_hostname", True),
        local_dc=opts.text("local_dc"),
        request_timeout=opts.number("timeout", 15.0, minimum=0.1),
        connect_timeout=opts.number("connect_timeout", 10.0, minimum=0.1),
        heartbeat=opts.number("heartbeat", 1.0, minimum=0.1),
        retry=opts.retry_policy(READ_RETRIES),
    )


def _replication(opts: Options) -> str:
    if "replication" in opts:
        if "rf" in opts:
            raise errors.ValidationError(f"{LABEL} takes rf or replication, not both")
        text = opts.text("replication", "")
        dcs = {}
        for item in text.split(","):
            dc, sep, count = item.partition(":")
            dc = dc.strip()
            if not sep or not dc:
                raise errors.ValidationError(f"{LABEL} replication is dc:N[,dc:N...], not {text!r}")
            if not _DATACENTER.match(dc):
                raise errors.ValidationError(f"{LABEL} replication: not a datacenter name: {dc!r}")
            dcs[dc] = Options({"replication": count.strip()}, LABEL).integer("replication", 1, minimum=1)
        body = ", ".join(f"'{dc}': {n}" for dc, n in dcs.items())
        return f"{{'class': 'NetworkTopologyStrategy', {body}}}"
    rf = opts.integer("rf", 1, minimum=1)
    return f"{{'class': 'SimpleStrategy', 'replication_factor': {rf}}}"
