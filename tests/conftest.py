"""Settings for every test under ``tests/``.

Hypothesis: no per-example deadline. CI and development machines are small and shared
(two cores, servers and benchmarks beside the tests); a property must fail on a wrong
answer, never on a slow example. Each test keeps its own ``max_examples``.
"""

from hypothesis import HealthCheck, settings

settings.register_profile("nbdb", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("nbdb")


# ---------------------------------------------------------------- the four stores the bad-input rounds run on

import uuid  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402

import pytest  # noqa: E402

import nbdb  # noqa: E402
from nbdb.testing.servers import start_server  # noqa: E402

STORES = ["memory", "sqlite", "redis", "etcd"]
"""The embedded stores and one server of each key-value kind: what a rule of the API layer is checked on."""


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    """A Redis and an etcd on loopback for the module's tests (their URLs by kind)."""
    with start_server("redis") as redis, start_server("etcd") as etcd:
        yield {"redis": redis.url, "etcd": etcd.url}


@pytest.fixture
def url_of(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """A fresh store's URL of a kind of :data:`STORES` (a new namespace on the module's servers)."""

    def url(kind: str) -> str:
        if kind in ("redis", "etcd"):
            return f"{request.getfixturevalue('servers')[kind]}?namespace=t{uuid.uuid4().hex[:8]}"
        return f"{kind}://"

    return url


@pytest.fixture(params=STORES)
def store_db(request: pytest.FixtureRequest, url_of: Callable[[str], str]) -> Iterator[nbdb.Database]:
    """A Database on a fresh store of each kind of :data:`STORES`."""
    with nbdb.connect(url_of(request.param)) as database:
        yield database
