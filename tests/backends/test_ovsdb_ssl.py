"""OVSDB over SSL (``ovsdb+ssl://``): the backend against ovsdb-server's ``pssl:`` remote.

The servers come from :class:`nbdb.testing.OvsdbServer` with ``tls=True``: a throwaway CA
signs the server's and the client's certificates, and ovsdb-server refuses clients without
a certificate from that CA. The conformance kit runs over SSL too
(``--nbdb-url='spawn:ovsdb?tls=true'`` in scripts/test.sh).
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

import nbdb
import nbdb.conformance.kit  # its models belong in the generated model schema
from nbdb import errors
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.testing import wait_until
from nbdb.testing.ovsdb import OvsdbServer
from nbdb.testing.process import find_binary
from nbdb.testing.tls import TlsFiles, make_tls_files

pytestmark = pytest.mark.timeout(120)


def _ssl_url(address: str, key: Path, cert: Path, ca: Path, **extra: str) -> str:
    query = f"private_key={quote(str(key))}&certificate={quote(str(cert))}&ca_cert={quote(str(ca))}"
    query += "".join(f"&{k}={v}" for k, v in extra.items())
    return f"ovsdb+ssl://{address}?{query}"


def _files(server: OvsdbServer) -> TlsFiles:
    files = server.tls_files
    assert files is not None
    return files


@pytest.fixture(scope="module")
def server() -> Iterator[OvsdbServer]:
    with OvsdbServer(tls=True, model_schema=True) as srv:
        yield srv


@pytest.fixture
def db(server: OvsdbServer) -> Iterator[nbdb.Database]:
    with nbdb.connect(server.url, namespace=f"s{uuid.uuid4().hex[:10]}") as database:
        yield database


@pytest.fixture(scope="module")
def foreign_ca(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """Certificates from a CA the server does not know."""
    return make_tls_files(tmp_path_factory.mktemp("foreign-ca"))


@pytest.mark.timeout(60)
def test_harness_serves_only_ssl(server: OvsdbServer) -> None:
    files = _files(server)
    address = server.members[0].address
    assert server.url == _ssl_url(address, files.client_key, files.client_cert, files.ca_cert)
    assert server.remotes == f"ssl:{address}"
    assert server.options()["tls"] is True and server.info()["tls"]["ca_cert"] == str(files.ca_cert)
    argv = " ".join(server.members[0].process.argv)
    assert f"--remote=pssl:{server.port}:127.0.0.1" in argv and "ptcp:" not in argv
    # Plain TCP to the SSL port gets no OVSDB answer.
    plain = subprocess.run(
        [str(find_binary("ovsdb-client")), "--timeout=2", "list-dbs", f"tcp:{address}"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert plain.returncode != 0


@pytest.mark.timeout(60)
def test_create_get_update_delete_over_ssl(db: nbdb.Database) -> None:
    ls = db.create(LogicalSwitch(name="sw-ssl", external_ids={"via": "ssl"}))
    port = db.create(LogicalSwitchPort(switch=ls, name=f"p-{ls.id}", addresses=["0a:00:00:00:00:01 10.0.0.1"]))
    assert db.get(LogicalSwitch, ls.id) == ls
    assert db.get(LogicalSwitchPort, port.id).switch == ls.id
    renamed = db.update(ls.replace(name="sw-ssl-2"))
    assert renamed.version == ls.version + 1
    with pytest.raises(errors.ConflictError):
        db.update(ls.replace(name="stale"))
    assert db.get(LogicalSwitch, ls.id).name == "sw-ssl-2"
    db.delete(port)
    db.delete(renamed)
    with pytest.raises(errors.NotFoundError):
        db.get(LogicalSwitch, ls.id)


@pytest.mark.timeout(60)
def test_cache_follows_a_change_made_by_another_connection(server: OvsdbServer) -> None:
    namespace = f"c{uuid.uuid4().hex[:10]}"
    with nbdb.connect(server.url, namespace=namespace) as db:
        ls = db.create(LogicalSwitch(name="watched"))
        cache = db.cache(LogicalSwitch)
        assert cache.wait_synced(10)
        # A second process-like client: another target, so its own IDL and SSL session.
        with nbdb.connect(server.url + "&timeout=10", namespace=namespace) as other:
            other.update(other.get(LogicalSwitch, ls.id).replace(name="changed"))
        wait_until(
            lambda: getattr(cache.get(LogicalSwitch, ls.id), "name", None) == "changed",
            10,
            "the cache to see the change",
        )


@pytest.mark.timeout(60)
def test_lock_over_ssl(db: nbdb.Database) -> None:
    with db.lock("ssl-lock", timeout=5) as handle:
        assert not handle.lost
    with db.lock("ssl-lock", timeout=5):
        pass


@pytest.mark.timeout(60)
def test_ovn_nbctl_sees_switches_written_over_ssl(server: OvsdbServer, db: nbdb.Database) -> None:
    nbctl = find_binary("ovn-nbctl")
    assert nbctl is not None, "ovn-nbctl (ovn-central) is installed by install-servers.sh"
    ls = db.create(LogicalSwitch(name=f"nbctl-{uuid.uuid4().hex[:6]}"))
    files = _files(server)
    shown = subprocess.run(
        [
            nbctl,
            f"--db={server.remotes}",
            "-p",
            str(files.client_key),
            "-c",
            str(files.client_cert),
            "-C",
            str(files.ca_cert),
            "--timeout=10",
            "show",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    assert f"switch {ls.id} ({ls.name})" in shown


@pytest.mark.timeout(60)
def test_client_certificate_from_another_ca_is_refused(server: OvsdbServer, foreign_ca: TlsFiles) -> None:
    url = _ssl_url(
        server.members[0].address, foreign_ca.client_key, foreign_ca.client_cert, _files(server).ca_cert, timeout="5"
    )
    began = time.monotonic()
    with pytest.raises(errors.AuthError, match="refused the TLS connection"):
        nbdb.connect(url)
    assert time.monotonic() - began < 5


@pytest.mark.timeout(60)
def test_server_certificate_from_another_ca_is_refused(server: OvsdbServer, foreign_ca: TlsFiles) -> None:
    files = _files(server)
    url = _ssl_url(server.members[0].address, files.client_key, files.client_cert, foreign_ca.ca_cert, timeout="5")
    began = time.monotonic()
    with pytest.raises(errors.AuthError, match="ca_cert"):
        nbdb.connect(url)
    assert time.monotonic() - began < 5


@pytest.mark.timeout(60)
def test_missing_or_unreadable_files_are_validation_errors(server: OvsdbServer, tmp_path: Path) -> None:
    files = _files(server)
    address = server.members[0].address
    with pytest.raises(errors.ValidationError, match="does not exist"):
        nbdb.connect(_ssl_url(address, tmp_path / "none.key", files.client_cert, files.ca_cert))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(errors.ValidationError, match="certificate"):
        nbdb.connect(_ssl_url(address, files.client_key, garbage, files.ca_cert))
    with pytest.raises(errors.ValidationError, match="ca_cert"):
        nbdb.connect(_ssl_url(address, files.client_key, files.client_cert, garbage))
    # The key of another pair does not match the certificate.
    with pytest.raises(errors.ValidationError, match="private_key"):
        nbdb.connect(_ssl_url(address, files.server_key, files.client_cert, files.ca_cert))


@pytest.mark.timeout(90)
def test_two_servers_with_different_cas_in_one_process(server: OvsdbServer) -> None:
    """Each target keeps its own certificates, also when its IDL reconnects after the other opened."""
    with OvsdbServer(tls=True) as second, nbdb.connect(server.url, namespace="two-a") as db_a:
        cache = db_a.cache(LogicalSwitch)
        assert cache.wait_synced(10)
        with nbdb.connect(second.url, namespace="two-b") as db_b:
            db_b.create(LogicalSwitch(name="on-b"))
            # Drop db_a's SSL session: its IDL must reconnect with server A's certificates.
            server.members[0].stop()
            server.members[0].restart()
            created = db_a.create(LogicalSwitch(name="on-a"))
            wait_until(lambda: cache.get(LogicalSwitch, created.id) is not None, 20, "db_a's cache after reconnect")
            assert [s.name for s in db_b.list(LogicalSwitch)] == ["on-b"]


@pytest.mark.timeout(120)
def test_raft_cluster_over_ssl_survives_leader_loss() -> None:
    with OvsdbServer(tls=True, members=3) as cluster:
        assert cluster.remotes == ",".join(f"ssl:{m.address}" for m in cluster.members)
        assert cluster.url.startswith("ovsdb+ssl://" + ",".join(m.address for m in cluster.members) + "?")
        with nbdb.connect(cluster.url, namespace="raft-ssl") as db:
            ls = db.create(LogicalSwitch(name="before"))
            cluster.leader().kill()
            deadline = time.monotonic() + 60
            while True:
                try:
                    after = db.create(LogicalSwitch(name="after"))
                    break
                except (errors.BackendUnavailableError, errors.ConflictError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            assert {s.id for s in db.list(LogicalSwitch)} >= {ls.id, after.id}
