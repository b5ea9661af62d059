"""A transaction's owner delete refused by the store, with another writer racing it (review of wip/txntails).

The branch weighed a store's refusal of a transaction's delete from the copies its walk read BEFORE the
refused commit (``read_refusal(seen=)``, ``Walk.seen``). A referrer another writer changed between that
walk and the commit, or after the refusal, is then judged from a copy the store no longer holds: the
refusal stands where main read the referrer again, planned the drop (or found the refusal stale) and
committed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Annotated, ClassVar
from uuid import UUID

import pytest

import nbdb
from nbdb.models import LogicalSwitch, LogicalSwitchPort, Model, Reference
from nbdb.testing.fixtures import shared_store

pytestmark = pytest.mark.timeout(120)


class RaceTarget(Model):
    """An owner's table (a part is owned by it): a transaction's delete of one walks before its first commit."""

    nbdb_table: ClassVar[str] = "Rev33RaceTarget"
    label: str = ""


class RacePart(Model):
    nbdb_table: ClassVar[str] = "Rev33RacePart"
    nbdb_owned_by: ClassVar[tuple[str, ...]] = ("owner",)
    owner: Annotated[UUID, Reference("Rev33RaceTarget")]


class RaceHolder(Model):
    """Holds a target strongly or weakly (a weak reference is dropped by the target's delete)."""

    nbdb_table: ClassVar[str] = "Rev33RaceHolder"
    strong: Annotated[UUID | None, Reference("Rev33RaceTarget")] = None
    weak: Annotated[UUID | None, Reference("Rev33RaceTarget", weak=True)] = None


@pytest.fixture(params=["memory", "sqlite", "redis", "ovsdb"])
def db(request: pytest.FixtureRequest) -> Iterator[nbdb.Database]:
    with shared_store(request.param) as database:
        yield database


@pytest.fixture(params=["memory", "sqlite", "redis"])  # (models no OVSDB schema has)
def custom_db(request: pytest.FixtureRequest) -> Iterator[nbdb.Database]:
    with shared_store(request.param) as database:
        yield database


def _around_first_commit(
    db: nbdb.Database, before: Callable[[], object] | None = None, refused: Callable[[], object] | None = None
) -> list[int]:
    """Run another writer's write right ``before`` the first commit of ``db``'s backend from now on, or right
    after the store ``refused`` it (through the real commit: the other writer's own, unhooked); the commits."""
    backend = db.backend
    real = backend.commit
    count = [0]

    def foreign(write: Callable[[], object]) -> None:
        backend.commit = real  # type: ignore[method-assign]
        try:
            write()
        finally:
            backend.commit = commit  # type: ignore[method-assign]

    def commit(ops, *args, **kwargs):  # type: ignore[no-untyped-def]
        count[0] += 1
        if count[0] == 1 and before is not None:
            foreign(before)
        try:
            return real(ops, *args, **kwargs)
        except nbdb.ReferenceError:
            if count[0] == 1 and refused is not None:
                foreign(refused)
            raise

    backend.commit = commit  # type: ignore[method-assign]
    return count


@pytest.mark.parametrize("plain", [False, True], ids=["transaction", "plain"])
def test_an_owner_delete_refused_for_a_referrer_that_turned_weak_before_its_commit_drops_it(
    custom_db: nbdb.Database, plain: bool
) -> None:
    # The walk before the first commit reads the holder holding the target strongly; another writer then
    # makes it hold the target weakly, and the store refuses the commit naming it (its weak reference was not
    # dropped). At no time could the holder refuse the delete: main's transaction read it again, planned the
    # drop and committed (as docs/semantics.md says, "a referrer that changes meanwhile is read again and the
    # drop planned again"); the branch weighed the refusal from the copy read before the commit and it stood.
    # A plain delete (an owner's walks before its first commit too) weighed it from that copy on main too.
    db = custom_db
    target = db.create(RaceTarget(label="t"))
    holder = db.create(RaceHolder(strong=target.id))
    commits = _around_first_commit(
        db, before=lambda: db.update(db.get(RaceHolder, holder.id).replace(strong=None, weak=target.id))
    )
    if plain:
        db.delete(RaceTarget, target.id)
    else:
        with db.transaction() as txn:
            txn.delete(target)
    assert db.list(RaceTarget) == [] and commits[0] == 2, commits
    stored = db.get(RaceHolder, holder.id)
    assert stored.strong is None and stored.weak is None


def test_a_transactions_switch_delete_refused_for_a_port_deleted_right_after_the_refusal_commits(
    db: nbdb.Database,
) -> None:
    # A switch's delete walks first (its table is an owner's), reads its one port and is refused for it; the
    # port is then deleted by another writer before the refusal is weighed. Main read the port again, found
    # the refusal stale, listed again and committed (two commits). The branch weighs the refusal from the copy
    # read before the commit: a ReferenceError naming a port that no longer exists, the switch kept, where
    # the delete would now succeed.
    sw = db.create(LogicalSwitch(name=f"sw-{uuid.uuid4().hex[:8]}"))
    port = db.create(LogicalSwitchPort(switch=sw, name=f"p-{uuid.uuid4().hex[:8]}"))
    commits = _around_first_commit(db, refused=lambda: db.delete(LogicalSwitchPort, port.id))
    with db.transaction() as txn:
        txn.delete(sw)
    assert sw.id not in {s.id for s in db.list(LogicalSwitch)} and commits[0] == 2, commits
