"""Shared helpers of the harness's own tests."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from nbdb.testing import Server


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cassandra_cluster: 3-node Cassandra (slow); runs only with NBDB_TEST_CASSANDRA_CLUSTER=1",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("NBDB_TEST_CASSANDRA_CLUSTER") == "1":
        return
    skip = pytest.mark.skip(reason="opt-in: set NBDB_TEST_CASSANDRA_CLUSTER=1")
    for item in items:
        if "cassandra_cluster" in item.keywords:
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
