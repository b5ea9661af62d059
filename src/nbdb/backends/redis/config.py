"""The Redis backend's URL: ``redis://``, ``rediss://`` (TLS) and ``redis+sentinel://``, and its options."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from nbdb import errors
from nbdb.options import Options, split_hosts, split_userinfo
from nbdb.retry import RetryPolicy

__all__ = ["DEFAULT_COMMIT_CONNECTIONS", "DEFAULT_HISTORY", "SCHEMES", "RedisConfig", "parse_url"]

DEFAULT_HISTORY = 10_000
SCHEMES = ("redis", "rediss", "redis+sentinel")

_RETRY = RetryPolicy(attempts=4, backoff=0.2, max_backoff=2.0, deadline=None)
# With Sentinel a failed-over master is found by asking the sentinels again, on the next try:
# pauses of at most 0.5 s find it within half a second of the sentinels naming it (with pauses
# growing to 2 s, a writer lost up to 2 s after a failover, measured in `nbdb soak`). As many
# tries as before cover the same ~11 s, a failover and then some. The deadline keeps a call
# that nests retries (settling a lost reply's token retries a write that retries) as bounded as
# nine tries of up to 2 s were.
_SENTINEL_RETRY = RetryPolicy(attempts=25, backoff=0.1, max_backoff=0.5, deadline=15.0)


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
    group_commit: int
    commit_connections: int
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


DEFAULT_GROUP_COMMIT = 32
"""The most commits of concurrent threads one pipeline carries (0 or 1: every commit alone)."""

DEFAULT_COMMIT_CONNECTIONS = 32
"""The most connections the commit script keeps, in use and idle (see ``ScriptLine``)."""

_OPTION_NAMES = frozenset(
    {
        "namespace", "prefix", "history", "socket_timeout", "connect_timeout", "retries", "retry_backoff",
        "retry_deadline", "wait_replicas", "wait_timeout", "batch", "group_commit", "commit_connections", "db",
        "ssl", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname",
        "sentinel_username", "sentinel_password", "client_name",
    }
)  # fmt: skip
_NAME_RE = re.compile(r"^[^{}\s]*$")


def parse_url(url: str, options: Mapping[str, Any]) -> RedisConfig:
    """Parse a redis URL plus keyword options (which win over the query string)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise errors.ValidationError(f"not a redis URL scheme: {scheme!r} (want one of {', '.join(SCHEMES)})")
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
        retry=opts.retry_policy(_SENTINEL_RETRY if sentinel else _RETRY),
        wait_replicas=opts.integer("wait_replicas", 0, minimum=0),
        wait_timeout=opts.number("wait_timeout", 1.0, minimum=0.001),
        batch=opts.integer("batch", 1000, minimum=1),
        group_commit=opts.integer("group_commit", DEFAULT_GROUP_COMMIT, minimum=0),
        commit_connections=opts.integer("commit_connections", DEFAULT_COMMIT_CONNECTIONS, minimum=1),
        ssl=use_ssl,
        ssl_options=ssl_options,
        sentinel_username=opts.text("sentinel_username"),
        sentinel_password=opts.text("sentinel_password"),
        client_name=opts.text("client_name"),
    )
