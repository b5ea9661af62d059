"""Settings for every test under ``tests/``.

Hypothesis: no per-example deadline. CI and development machines are small and shared
(two cores, servers and benchmarks beside the tests); a property must fail on a wrong
answer, never on a slow example. Each test keeps its own ``max_examples``.
"""

from hypothesis import HealthCheck, settings

settings.register_profile("nbdb", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("nbdb")


# ---------------------------------------------------------------- the four stores the bad-input rounds run on

import os  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

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


# ---------------------------------------------------------------- backends of another package

ThirdParty = Callable[[dict[str, str]], dict[str, str]]


@pytest.fixture
def third_party(tmp_path: Path) -> ThirdParty:
    """Declare backends by entry point (scheme -> module source) in a directory, as pip leaves a distribution.

    Returns the environment of a Python that finds them (in ``kit_<scheme>_backend:Backend``) and this tree's nbdb.
    """
    site = tmp_path / "third-party-site"

    def declare(backends: dict[str, str]) -> dict[str, str]:
        info = site / "kitthirdparty-0.1.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kitthirdparty\nVersion: 0.1\n")
        points = "".join(f"{scheme} = kit_{scheme}_backend:Backend\n" for scheme in backends)
        (info / "entry_points.txt").write_text(f"[nbdb.backends]\n{points}")
        for scheme, source in backends.items():
            (site / f"kit_{scheme}_backend.py").write_text(source)
        return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(Path(nbdb.__file__).parents[1])])}

    return declare
