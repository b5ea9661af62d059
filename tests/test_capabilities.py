"""Capability declarations and what an application requires of them (no server)."""

from __future__ import annotations

import pytest

import nbdb
from nbdb.capabilities import Atomicity, Capabilities, Durability, Expiry

pytestmark = pytest.mark.timeout(30)

CAPS = Capabilities(
    transactions=Atomicity.SINGLE_PARTITION,
    linearizable_reads=True,
    server_side_topic_filter=False,
    durability=Durability.CONFIGURABLE,
    history="x",
    cross_process=True,
    unique=True,
    expiry=Expiry.REAPER,
    max_txn_ops=128,
)


@pytest.mark.parametrize(
    "require",
    [
        {"transactions"},
        {"transactions": "single-partition"},
        {"durability": "volatile"},
        {"durability": "configurable"},
        {"unique": True, "expiry": "reaper"},
        {"max_txn_ops": 100},
        {"server_side_topic_filter": False},
        ["locks", "cross_process"],
    ],
)
def test_what_the_backend_has_is_accepted(require: object) -> None:
    CAPS.check(require)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("require", "named"),
    [
        ({"transactions": "atomic"}, "transactions=single-partition"),
        ({"durability": "durable"}, "durability=configurable"),
        ({"expiry": "native"}, "expiry=reaper"),
        ({"server_side_topic_filter"}, "server_side_topic_filter=False"),
        ({"max_txn_ops": 300}, "max_txn_ops=128"),
        ({"fencing", "pages"}, "fencing=False"),
    ],
)
def test_what_it_lacks_is_named_at_connect(require: object, named: str) -> None:
    with pytest.raises(nbdb.UnsupportedError, match=named):
        CAPS.check(require)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "require",
    [{"nosuch"}, {"transactions": "sometimes"}, {"max_txn_ops": "many"}, {"unique": "yes"}, {"notes"}],
)
def test_unknown_names_and_levels_are_validation_errors(require: object) -> None:
    with pytest.raises(nbdb.ValidationError):
        CAPS.check(require)  # type: ignore[arg-type]


def test_connect_checks_require_and_closes_what_it_opened() -> None:
    with nbdb.connect("memory://", require={"transactions": "atomic"}) as db:
        assert db.capabilities.transactions is Atomicity.ATOMIC
    with pytest.raises(nbdb.UnsupportedError, match="durability=volatile"):
        nbdb.connect("memory://", require={"durability": "durable"})
