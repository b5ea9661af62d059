"""A fault proxy in front of every endpoint of an nbdb URL, or of a harness server.

The authority of every networked nbdb URL scheme is a comma-separated ``host:port`` list
(``etcd://h1:p1,h2:p2``, ``ovsdb+tcp://…``, ``redis+sentinel://…/service``,
``cassandra://…/keyspace``). :func:`proxy_url` starts one :class:`FaultProxy` listening on a
loopback port per endpoint and returns the URL with the authority rewritten to the
proxy's ports (credentials, path and query unchanged).

What the proxy does not see: a client that learns other addresses from the server and
connects there directly. :class:`Route` says, per scheme, whether every connection goes
through the URL's endpoints (``ALL``) or only the first hop (``FIRST_HOP``, with the
reason), so that a fault test can tell "the fault did not fire because the traffic went
around the proxy" from "the backend is broken".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Self
from urllib.parse import parse_qs, urlsplit

from nbdb.testing.base import Server
from nbdb.testing.faults.proxy import FaultProxy

__all__ = ["ProxiedServer", "ProxiedUrl", "ProxyUnsupportedError", "Route", "SchemeRoute", "proxy_url", "scheme_route"]


class ProxyUnsupportedError(ValueError):
    """The URL names no TCP endpoint a proxy can stand in front of (``memory://``, a socket path...)."""


class Route(StrEnum):
    """How much of a client's traffic goes through the endpoints its URL names."""

    ALL = "all"
    """Every connection goes to an endpoint of the URL: the proxy sees all of it."""
    FIRST_HOP = "first-hop"
    """The client also connects to addresses the server hands out, around the proxy."""
    UNKNOWN = "unknown"
    """A scheme this module does not know; assume nothing."""


@dataclass(frozen=True)
class SchemeRoute:
    """What the proxy covers for one URL scheme."""

    route: Route
    default_port: int | None = None
    bypass: str = ""
    """For FIRST_HOP: which connections go around the proxy."""
    encrypted: bool = False
    """TLS: the proxy forwards the bytes but cannot see what they say (no pattern triggers)."""
    data_through_proxy: bool = True
    """False when requests never go to the URL's endpoints (only discovery does): data faults cannot be injected."""


_SENTINEL_BYPASS = (
    "the sentinels hand out the master's address and data connections go there directly: the proxy "
    "covers the sentinel connections only"
)
_CASSANDRA_BYPASS = (
    "the driver connects directly to the peers it discovers in system.peers; only the contact points "
    "go through the proxy (a one-node cluster is covered whole)"
)

_HAZELCAST_BYPASS = (
    "the client connects to every cluster member it learns of (smart routing); only the listed members "
    "go through the proxy (a one-member cluster is covered whole)"
)

_ROUTES: dict[str, SchemeRoute] = {
    "redis": SchemeRoute(Route.ALL, 6379),
    "rediss": SchemeRoute(Route.ALL, 6379, encrypted=True),
    "redis+sentinel": SchemeRoute(Route.FIRST_HOP, 26379, _SENTINEL_BYPASS, data_through_proxy=False),
    "etcd": SchemeRoute(Route.ALL, 2379),
    "etcd+https": SchemeRoute(Route.ALL, 2379, encrypted=True),
    "ovsdb+tcp": SchemeRoute(Route.ALL),
    "ovsdb+ssl": SchemeRoute(Route.ALL, encrypted=True),
    "cassandra": SchemeRoute(Route.FIRST_HOP, 9042, _CASSANDRA_BYPASS),
    "hazelcast": SchemeRoute(Route.FIRST_HOP, 5701, _HAZELCAST_BYPASS),
}
_NO_NETWORK = {"memory", "ovsdb+unix", "sqlite"}
_TRUE = {"1", "true", "yes", "on"}


def scheme_route(url: str) -> SchemeRoute:
    """What a proxy in front of ``url``'s endpoints covers; ProxyUnsupportedError if nothing."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in _NO_NETWORK or not parts.netloc:
        raise ProxyUnsupportedError(f"{scheme}:// names no TCP endpoint: there is nothing to put a proxy in front of")
    known = _ROUTES.get(scheme, SchemeRoute(Route.UNKNOWN))
    query = {k.lower(): v[-1].lower() for k, v in parse_qs(parts.query).items()}
    if not known.encrypted and any(query.get(k) in _TRUE for k in ("tls", "ssl")):
        return dataclasses.replace(known, encrypted=True)
    return known


def _split_authority(url: str) -> tuple[str, str, list[str], str]:
    """``(scheme://, userinfo@, [host:port…], /path?query#fragment)`` of ``url``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ProxyUnsupportedError(f"not a URL with an authority: {scheme[:20]!r}…")
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    userinfo, at, hosts = authority.rpartition("@")
    return scheme + sep, userinfo + at, [h for h in hosts.split(",") if h.strip()], tail


def _endpoint(text: str, default_port: int | None) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = text, ""
    if not port:
        if default_port is None:
            raise ProxyUnsupportedError(f"endpoint {text!r} has no port and its scheme has no default")
        return host, default_port
    if not port.isdigit():
        raise ProxyUnsupportedError(f"endpoint {text!r} has no numeric port")
    return host, int(port)


class ProxiedUrl:
    """A started :class:`FaultProxy` in front of every endpoint of a URL, and the rewritten URL.

    ``url`` reaches the same servers through the proxy (it keeps the original's
    credentials: do not log it). ``route`` says what the proxy covers. Close it (or use
    it as a context manager) to stop the proxy.
    """

    def __init__(self, url: str, *, host: str = "127.0.0.1") -> None:
        self.route = scheme_route(url)
        prefix, userinfo, hosts, tail = _split_authority(url)
        if not hosts:
            raise ProxyUnsupportedError("the URL names no endpoint")
        self.upstreams = [_endpoint(h, self.route.default_port) for h in hosts]
        self.proxy = FaultProxy(self.upstreams, host=host).start()
        listen = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.proxy.addresses)
        self.url = f"{prefix}{userinfo}{listen}{tail}"

    def __repr__(self) -> str:
        return f"<ProxiedUrl route={self.route.route} {self.proxy!r}>"

    def close(self) -> None:
        """Stop the proxy (its connections are cut)."""
        self.proxy.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def proxy_url(url: str, *, host: str = "127.0.0.1") -> ProxiedUrl:
    """Start a fault proxy in front of every endpoint of ``url``; see :class:`ProxiedUrl`."""
    return ProxiedUrl(url, host=host)


class ProxiedServer(ProxiedUrl):
    """A harness :class:`Server` whose URL goes through a fault proxy.

    ``server`` is the server itself (for kills and restarts: a member restarts on the same
    ports, so the proxy keeps reaching it); ``url`` goes through the proxy, one listening
    port per endpoint the server's URL names (the members' client ports; for
    ``redis-sentinel``, the sentinels — see :class:`Route`).
    """

    def __init__(self, server: Server, *, host: str = "127.0.0.1") -> None:
        super().__init__(server.url, host=host)
        self.server = server

    def __repr__(self) -> str:
        return f"<ProxiedServer {self.server!r} via {self.proxy!r}>"
