"""What the kit's fault tests share: a fault proxy in front of the server under test, and honest skips.

The fault tests reach the server twice: *directly* (``db_factory()``, the URL under test)
to set up, to play another client and to read the truth, and *through a proxy*
(``db_factory(url=proxied.url)``) for the client whose traffic is broken. The proxy
stands in front of every endpoint the URL names (see :mod:`nbdb.testing.faults`); a URL
without a TCP endpoint (``memory://``) skips these tests, with the reason.

A fault that did not fire proves nothing: :func:`require_fired` fails the test when every
request should have gone through the proxy, and skips it, naming the bypass, when the
client is known to reach some servers around it (Cassandra peers).
"""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID

import pytest

from nbdb.testing.faults import ProxiedUrl, ProxyUnsupportedError, Route, proxy_url

__all__ = ["id_patterns", "proxied", "require_fired", "require_visible"]


@pytest.fixture
def proxied(nbdb_url: str) -> Iterator[ProxiedUrl]:
    """A fault proxy in front of the server under test, private to the test."""
    try:
        proxy = proxy_url(nbdb_url)
    except ProxyUnsupportedError as exc:
        pytest.skip(f"fault tests need a server reached over TCP: {exc}")
    if not proxy.route.data_through_proxy:
        proxy.close()
        pytest.skip(f"requests do not go through a proxy in front of this URL's endpoints: {proxy.route.bypass}")
    try:
        yield proxy
    finally:
        proxy.close()


def require_visible(proxied: ProxiedUrl) -> None:
    """Skip a test whose trigger looks for bytes a TLS connection hides."""
    if proxied.route.encrypted:
        pytest.skip("TLS: the proxy cannot see which request carries the commit; run the fault tests on cleartext")


def require_fired(proxied: ProxiedUrl, fired: bool, what: str) -> None:
    """Fail (or skip, for a scheme whose client goes around the proxy) when a fault did not fire."""
    if fired:
        return
    scheme = proxied.url.split("://", 1)[0]
    if proxied.route.route is Route.ALL:
        pytest.fail(f"{what}: no request went through the proxy, yet {scheme}:// clients use only the URL's endpoints")
    pytest.skip(f"{what}: the fault did not fire ({proxied.route.bypass or f'{scheme}:// is not known to the kit'})")


def id_patterns(*ids: UUID) -> list[bytes]:
    """Every form an object id takes on the wire (text, hex, 16 bytes), for a lost-reply trigger."""
    return [form for i in ids for form in (str(i).encode(), i.hex.encode(), i.bytes)]
