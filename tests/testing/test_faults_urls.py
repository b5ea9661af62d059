"""Proxied URLs: the authority rewritten to the proxy's ports, everything else kept."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from nbdb.testing.faults import ProxiedUrl, ProxyUnsupportedError, Route, proxy_url, scheme_route

pytestmark = pytest.mark.timeout(30)


def _ports(proxied: ProxiedUrl) -> list[str]:
    return [f"{h}:{p}" for h, p in proxied.proxy.addresses]


@pytest.mark.parametrize(
    ("url", "upstreams", "template"),
    [
        ("etcd://127.0.0.1:2001,127.0.0.1:2002", [("127.0.0.1", 2001), ("127.0.0.1", 2002)], "etcd://{0},{1}"),
        ("redis://u:p%40ss@127.0.0.1:7000/3?namespace=x", [("127.0.0.1", 7000)], "redis://u:p%40ss@{0}/3?namespace=x"),
        ("redis://127.0.0.1", [("127.0.0.1", 6379)], "redis://{0}"),
        (
            "redis+sentinel://127.0.0.1:1,127.0.0.1:2/nbdb",
            [("127.0.0.1", 1), ("127.0.0.1", 2)],
            "redis+sentinel://{0},{1}/nbdb",
        ),
        ("ovsdb+tcp://127.0.0.1:6641", [("127.0.0.1", 6641)], "ovsdb+tcp://{0}"),
        ("cassandra://127.0.0.1/ks?timeout=3", [("127.0.0.1", 9042)], "cassandra://{0}/ks?timeout=3"),
        ("etcd://[::1]:2379?namespace=a", [("::1", 2379)], "etcd://{0}?namespace=a"),
    ],
)
def test_authority_is_rewritten_and_the_rest_kept(url: str, upstreams: list[tuple[str, int]], template: str) -> None:
    with proxy_url(url) as proxied:
        assert proxied.upstreams == upstreams
        assert proxied.url == template.format(*_ports(proxied))


def test_routes_say_what_the_proxy_covers() -> None:
    assert scheme_route("etcd://h:1").route is Route.ALL
    assert scheme_route("redis://h:1/0").route is Route.ALL
    assert scheme_route("ovsdb+tcp://h:1").route is Route.ALL
    sentinel = scheme_route("redis+sentinel://h:1/nbdb")
    assert sentinel.route is Route.FIRST_HOP and "master" in sentinel.bypass
    assert scheme_route("cassandra://h/ks").route is Route.FIRST_HOP
    assert scheme_route("hazelcast://h/dev").default_port == 5701
    assert scheme_route("thirdparty://h:1").route is Route.UNKNOWN
    assert scheme_route("rediss://h:1").encrypted
    assert scheme_route("cassandra://h/ks?tls=1").encrypted
    assert not scheme_route("etcd://h:1?tls=0").encrypted


@pytest.mark.parametrize("url", ["memory://", "ovsdb+unix:///run/nb.sock", "sqlite:///tmp/x.db", "ovsdb+tcp://h"])
def test_urls_without_a_tcp_endpoint_are_refused(url: str) -> None:
    with pytest.raises(ProxyUnsupportedError):
        proxy_url(url)


class _Echo(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EchoHandler)


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def echo() -> Iterator[_Echo]:
    server = _Echo()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_rewritten_url_reaches_the_server(echo: _Echo) -> None:
    host, port = echo.server_address[:2]
    with proxy_url(f"thirdparty://{host}:{port}/x") as proxied:
        target = proxied.url.split("://")[1].split("/")[0]
        phost, pport = target.rsplit(":", 1)
        with socket.create_connection((phost, int(pport)), timeout=5) as sock:
            sock.sendall(b"ping")
            assert sock.recv(4) == b"ping"
        assert proxied.proxy.stats.bytes_up == 4
