"""Network faults for tests: a TCP fault proxy, and proxied URLs and servers.

See ``docs/faults.md``. :class:`FaultProxy` sits between clients and server endpoints and
loses replies, cuts connections, delays, blackholes or refuses on demand;
:func:`proxy_url` puts one in front of every endpoint of an nbdb URL, and
:class:`ProxiedServer` does it for a server of the harness.
"""

from __future__ import annotations

from nbdb.testing.faults.proxy import FaultProxy, Mode, ProxyStats
from nbdb.testing.faults.urls import (
    ProxiedServer,
    ProxiedUrl,
    ProxyUnsupportedError,
    Route,
    SchemeRoute,
    proxy_url,
    scheme_route,
)

__all__ = [
    "FaultProxy",
    "Mode",
    "ProxiedServer",
    "ProxiedUrl",
    "ProxyStats",
    "ProxyUnsupportedError",
    "Route",
    "SchemeRoute",
    "proxy_url",
    "scheme_route",
]
