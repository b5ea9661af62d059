"""Missing servers: a clear error naming the install script; skipped locally, fatal in CI."""

from __future__ import annotations

import pytest

from nbdb.testing import (
    HarnessError,
    ServerNotInstalledError,
    missing_reason,
    require_server,
    start_server,
)
from nbdb.testing import process as process_mod


@pytest.fixture
def no_binaries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process_mod, "find_binary", lambda name: None)


@pytest.mark.timeout(30)
@pytest.mark.usefixtures("no_binaries")
@pytest.mark.parametrize("kind", ["redis", "redis-sentinel", "etcd", "ovsdb"])
def test_missing_binary_says_what_to_install(kind: str) -> None:
    with pytest.raises(ServerNotInstalledError, match=r"install-servers\.sh") as info:
        start_server(kind)
    assert isinstance(info.value, HarnessError)
    assert isinstance(info.value, RuntimeError)
    assert "Debian package" in str(info.value)


@pytest.mark.timeout(30)
def test_missing_cassandra_jars(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("NBDB_CASSANDRA_HOME", str(tmp_path))
    reason = missing_reason("cassandra")
    assert reason is not None and "Maven Central" in reason and "install-servers.sh" in reason
    with pytest.raises(ServerNotInstalledError):
        start_server("cassandra")


@pytest.mark.timeout(30)
def test_missing_ovn_schema(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    from nbdb.testing import ovsdb

    monkeypatch.setattr(ovsdb, "_SCHEMA_DIRS", (str(tmp_path),))
    monkeypatch.delenv("OVN_NB_SCHEMA", raising=False)
    with pytest.raises(ServerNotInstalledError, match="ovn-common"):
        start_server("ovsdb")


@pytest.mark.timeout(30)
@pytest.mark.usefixtures("no_binaries")
def test_require_server_raises_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(ServerNotInstalledError, match="required in CI"):
        require_server("etcd")


@pytest.mark.timeout(30)
@pytest.mark.usefixtures("no_binaries")
def test_require_server_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"install-servers\.sh"):
        require_server("etcd")


@pytest.mark.timeout(30)
def test_require_server_passes_when_installed() -> None:
    for kind in ("redis", "etcd", "ovsdb", "cassandra"):
        require_server(kind)  # installed on every machine that runs these tests


@pytest.mark.timeout(30)
def test_unknown_kind() -> None:
    with pytest.raises(HarnessError, match="unknown server kind"):
        start_server("mongodb")
