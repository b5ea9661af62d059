"""Choosing a backend by URL."""

from __future__ import annotations

import pytest

import nbdb
from nbdb.loader import installed_backends
from nbdb.options import redact

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(
    "url",
    [
        "nosuch://host",
        "not a url",
        "://x",
        # urllib's ValueError reached the caller for these
        "redis://[::1",
        "etcd://[::1:2379",
        "sqlite://[x/nb.db",
        "memory://]",
        "ovsdb+tcp://[::1",
        "cassandra://[::1",
        "hazelcast://[::1",
    ],
)
def test_unknown_or_malformed_urls_are_validation_errors(url: str) -> None:
    with pytest.raises(nbdb.ValidationError):
        nbdb.connect(url)


def test_an_unknown_scheme_is_said_once_and_not_taken_for_an_extra(caplog: pytest.LogCaptureFixture) -> None:
    """stevedore logged a WARNING ("Could not load nosuch") above the error, and the error advised
    pip install 'nbdb[nosuch]', an extra nbdb has not."""
    with caplog.at_level("DEBUG"), pytest.raises(nbdb.ValidationError, match="no backend for URL scheme 'nosuch'") as e:
        nbdb.connect("nosuch://host")
    assert [r for r in caplog.records if r.levelno >= 30] == []
    assert "nbdb[" not in str(e.value) and "'nbdb.backends' entry-point group" in str(e.value)


@pytest.mark.parametrize("url", [5, b"memory://", ["memory://"]])
def test_a_url_that_is_not_text_is_a_validation_error(url: object) -> None:
    with pytest.raises(nbdb.ValidationError):
        nbdb.connect(url)  # type: ignore[arg-type]


def test_memory_is_the_default() -> None:
    with nbdb.connect() as db:
        assert db.capabilities.durability is nbdb.Durability.VOLATILE
    with nbdb.connect(None) as db:
        assert db.capabilities.durability is nbdb.Durability.VOLATILE


@pytest.mark.parametrize("url", ["", " ", "\t\n"])
def test_an_empty_url_is_refused_not_taken_for_the_default(url: str) -> None:
    # connect(os.environ.get("NB_URL", "")) with the variable unset opened a fresh memory:// instead.
    with pytest.raises(nbdb.ValidationError, match="empty"):
        nbdb.connect(url)


def test_memory_is_found_through_entry_points() -> None:
    assert "memory" in installed_backends()


def test_passwords_are_redacted() -> None:
    assert redact("redis://user:secret@host:6379/0") == "redis://user:***@host:6379/0"
    assert redact("redis://host:6379/0") == "redis://host:6379/0"
    with nbdb.connect("memory://") as db:
        assert "secret" not in repr(db)


def test_query_string_secrets_are_redacted() -> None:
    assert redact("etcd://h:2379?user=a&password=s3cret&timeout=1") == "etcd://h:2379?user=a&password=***&timeout=1"
    assert "x1" not in redact("redis+sentinel://h:1,h:2/svc?sentinel_password=x1")
    assert redact("redis://h/0?ssl_ca_certs=/etc/ca.pem") == "redis://h/0?ssl_ca_certs=/etc/ca.pem"
