"""Shared helpers of the harness's own tests."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from nbdb.testing import Server

# The harness's fixtures, shared by every test module here (imported, as a test suite
# outside nbdb would do, rather than registered as a plugin).
from nbdb.testing.fixtures import (  # noqa: F401
    cassandra_server,
    etcd_cluster,
    etcd_server,
    hazelcast_cluster,
    hazelcast_server,
    ovsdb_cluster,
    ovsdb_server,
    redis_sentinel,
    redis_server,
    server_factory,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cassandra_extra: extra Cassandra starts (3 nodes, durable); only with NBDB_TEST_CASSANDRA_EXTRA=1",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("NBDB_TEST_CASSANDRA_EXTRA") == "1":
        return
    skip = pytest.mark.skip(reason="opt-in: set NBDB_TEST_CASSANDRA_EXTRA=1")
    for item in items:
        if "cassandra_extra" in item.keywords:
            item.add_marker(skip)


def pid_alive(pid: int) -> bool:
    """True when ``pid`` is a live (non-zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] not in ("Z", "X")


def _assert_cleaned_up(server: Server, pids: list[int], base_dir: Path) -> None:
    assert pids, "no process recorded"
    assert all(not pid_alive(pid) for pid in pids), f"processes left: {pids}"
    assert not base_dir.exists(), f"{base_dir} left behind"
    from nbdb.testing.ports import _reservation_dir

    for member in server.members:
        for port in member.ports.values():
            assert not (_reservation_dir() / str(port)).exists(), f"port {port} still reserved"


@pytest.fixture
def assert_cleaned_up() -> Callable[[Server, list[int], Path], None]:
    """Check, after ``server.stop()``, that no process, file or port reservation is left."""
    return _assert_cleaned_up
