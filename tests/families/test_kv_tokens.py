"""The key-value family's exactly-once commits: lost replies settled by commit tokens.

The store is the real in-process memory store; the fault is injected between
the family and it: a commit that is applied but whose reply is "lost" (the
backend raises CommitUnknownError after applying), a request that is lost
before it applies, and a foreign writer acting between the loss and the
retry — the race that made etcd and OVSDB report a landed commit as a
conflict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.api import Database
from nbdb.families.kv import APPLIED, VOID, CommitToken, Condition
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.retry import RetryPolicy
from nbdb.testing.kvmemory import KVMemoryBackend as MemoryBackend
from nbdb.testing.kvmemory import MemoryStore

pytestmark = pytest.mark.timeout(60)


class LossyBackend(MemoryBackend):
    """A memory backend that can lose the next replies, or the next requests, on purpose.

    ``script`` holds what happens to the next commits in order: "reply" (apply,
    then lose the reply), "request" (lose the request: nothing applied), "down"
    (the store does not answer: nothing applied), "ok". ``between`` runs after a
    loss, before the family's next call (another writer acting meanwhile).
    """

    commit_tokens = True

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store)
        self.retry = RetryPolicy(attempts=3, backoff=0.0, deadline=None)
        self.script: list[str] = []
        self.between: Callable[[], None] | None = None
        self.sent: list[Mapping[str, bytes]] = []

    def commit_keys(
        self,
        conditions: Sequence[Condition],
        puts: Mapping[str, bytes],
        deletes: Sequence[str],
        token: CommitToken | None = None,
    ) -> int | None:
        what = self.script.pop(0) if self.script else "ok"
        self.sent.append(dict(puts))
        if what == "down" or what == "request":
            self._after_loss()
            raise nbdb.CommitUnknownError(f"injected: {what}")
        revision = super().commit_keys(conditions, puts, deletes, token)
        if what == "reply":
            self._after_loss()
            raise nbdb.CommitUnknownError("injected: the reply was lost")
        return revision

    def _after_loss(self) -> None:
        hook, self.between = self.between, None
        if hook is not None:
            hook()


@pytest.fixture
def lossy() -> Iterator[tuple[Database, Database, LossyBackend]]:
    store = MemoryStore()
    backend = LossyBackend(store)
    with Database(backend, reap=False) as db, Database(MemoryBackend(store), reap=False) as other:
        yield db, other, backend


def _tokens(backend: LossyBackend) -> dict[str, bytes]:
    with backend.store.cond:
        return {k: e.value for k, e in backend.store.data.items() if k.startswith("t/")}


def test_lost_reply_then_foreign_write_is_neither_a_conflict_nor_a_double_apply(lossy: Any) -> None:
    db, other, backend = lossy
    ls = db.create(LogicalSwitch(name="sw"))
    # Our update lands, its reply is lost, and another client updates the same object
    # before we find out: the old content comparison called this a conflict.
    backend.script = ["reply"]
    backend.between = lambda: other.update(other.get(LogicalSwitch, ls.id).replace(name="theirs"))
    mine = db.update(ls.replace(name="mine"))
    assert mine.version == 2
    stored = other.get(LogicalSwitch, ls.id)
    assert (stored.name, stored.version) == ("theirs", 3)
    assert list(_tokens(backend).values()).count(APPLIED) >= 2


def test_lost_request_is_applied_once_by_the_retry(lossy: Any) -> None:
    db, other, backend = lossy
    backend.script = ["request"]
    ls = db.create(LogicalSwitch(name="sw"))
    assert other.get(LogicalSwitch, ls.id).version == 1
    # The first token was voided, so that a late delivery of that request could never apply.
    assert VOID in _tokens(backend).values()


def test_lost_reply_of_a_create_returns_the_created_object(lossy: Any) -> None:
    db, other, backend = lossy
    backend.script = ["reply"]
    ls = db.create(LogicalSwitch(name="sw"))
    assert ls.version == 1
    assert [s.id for s in other.list(LogicalSwitch)] == [ls.id]


def test_lost_reply_of_a_delete(lossy: Any) -> None:
    db, other, backend = lossy
    ls = db.create(LogicalSwitch(name="sw"))
    backend.script = ["reply"]
    db.delete(ls)
    with pytest.raises(nbdb.NotFoundError):
        other.get(LogicalSwitch, ls.id)


def test_lost_reply_of_a_transaction(lossy: Any) -> None:
    db, other, backend = lossy
    ls = db.create(LogicalSwitch(name="sw"))
    backend.script = ["reply"]
    with db.transaction() as txn:
        txn.create(LogicalSwitchPort(switch=ls, name="p1"))
        txn.create(LogicalSwitchPort(switch=ls, name="p2"))
    assert sorted(p.name for p in other.list(LogicalSwitchPort)) == ["p1", "p2"]
    assert txn.results[0] is not None and txn.results[0].version == 1


def test_lost_reply_of_allocate_id_hands_out_that_id(lossy: Any) -> None:
    db, other, backend = lossy
    assert db.allocate_id("c") == 1
    backend.script = ["reply"]
    assert db.allocate_id("c") == 2
    assert other.allocate_id("c") == 3


def test_unreachable_store_is_commit_unknown_never_conflict(lossy: Any) -> None:
    db, other, backend = lossy
    ls = db.create(LogicalSwitch(name="sw"))
    backend.script = ["reply"] + ["down"] * 10
    with pytest.raises(nbdb.CommitUnknownError):
        db.update(ls.replace(name="mine"))
    # It had landed: the caller was told "unknown", not "conflict", and re-reading shows it.
    assert other.get(LogicalSwitch, ls.id).name == "mine"


def test_a_real_conflict_after_a_lost_request_is_still_a_conflict(lossy: Any) -> None:
    db, other, backend = lossy
    ls = db.create(LogicalSwitch(name="sw"))
    backend.script = ["request"]
    backend.between = lambda: other.update(other.get(LogicalSwitch, ls.id).replace(name="theirs"))
    with pytest.raises(nbdb.ConflictError):
        db.update(ls.replace(name="mine"))
    assert other.get(LogicalSwitch, ls.id).name == "theirs"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["ok", "reply", "request", "down"]), min_size=1, max_size=16))
def test_every_acknowledged_increment_counts_once(script: list[str]) -> None:
    """Whatever replies and requests are lost, an acknowledged write counts once, an unknown one at most once."""
    store = MemoryStore()
    backend = LossyBackend(store)
    db, other = Database(backend, reap=False), Database(MemoryBackend(store), reap=False)
    ls = db.create(LogicalSwitch(name="counter", external_ids={"n": "0"}))
    backend.script = list(script)
    acknowledged = unknown = 0
    for _ in range(len(script)):
        current = other.get(LogicalSwitch, ls.id)
        try:
            db.update(current.replace(external_ids={"n": str(int(current.external_ids["n"]) + 1)}))
            acknowledged += 1
        except nbdb.CommitUnknownError:
            unknown += 1
    final = other.get(LogicalSwitch, ls.id)
    applied = int(final.external_ids["n"])
    assert acknowledged <= applied <= acknowledged + unknown
    assert final.version == 1 + applied
