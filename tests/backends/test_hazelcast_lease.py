"""Hazelcast: a list that outlasts the commit lock's lease (``commit_lease``) is still exact (issue 12).

A list reads its table under the namespace's commit lock. A read longer than the lock's lease
(a million ports took longer than the default 30 s) lost the lock in the member before it
ended: its unlock failed (logged) and commits of other clients interleaved with its read, so
the list could hold some objects before a commit and some after it, with no error.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

import nbdb
from nbdb import errors
from nbdb.conformance.kit import eventually
from nbdb.models import LogicalSwitch
from nbdb.testing.faults import ProxiedServer
from nbdb.testing.fixtures import hazelcast_server  # noqa: F401 - pytest fixture

pytest.importorskip("hazelcast")

from nbdb.backends.hazelcast import HazelcastBackend

pytestmark = pytest.mark.timeout(120)

_WRITERS = 2
"""Clients committing at once: the commit lock is rarely free, so a read without it meets commits mid-way."""
_BETWEEN = 200
"""Switches each commit updates between its first and last (the member applies a commit's keys one by one)."""
_LISTS = 2
_COMMITS = 25
"""Commits of each writer during each list: about a second of them, from when the reader holds the lock."""


def _backend(db: nbdb.Database) -> HazelcastBackend:
    assert isinstance(db.backend, HazelcastBackend)
    return db.backend


def test_a_list_that_outlasts_the_commit_lease_is_a_snapshot_or_refused(hazelcast_server: Any) -> None:  # noqa: F811
    """Two clients each update their own ``first``, 200 switches and ``last`` in every commit, as fast as
    they can, once the reader holds the commit lock. The reader's ``commit_lease`` is 1 s and its traffic
    goes through a proxy adding 0.6 s each way, so its read reaches the member once its lock's lease has
    run out, while the member applies their commits (key by key). The code before returned switches of a
    commit beside switches of the one before (revisions 6 and 8, listed at 7), in 5
    runs of 5. Now each list is a snapshot (every switch of a writer at one revision, not past the one
    listed), or refused with BackendUnavailableError; never torn."""
    namespace = f"hzlease-{uuid.uuid4().hex[:10]}"
    writers = [nbdb.connect(hazelcast_server.url, namespace=namespace) for _ in range(_WRITERS)]
    switches: list[list[LogicalSwitch]] = []
    try:
        for w, writer in enumerate(writers):
            with writer.transaction() as txn:
                made = [txn.create(LogicalSwitch(name=f"first-{w}", topic=f"a{w}"))]
                made += [txn.create(LogicalSwitch(name=f"s{w}-{i}", topic=f"m{w}")) for i in range(_BETWEEN)]
                made.append(txn.create(LogicalSwitch(name=f"last-{w}", topic=f"z{w}")))
            switches.append(made)
        commits = [0] * _WRITERS

        def write(w: int) -> None:
            # Once the reader holds the commit lock (so that it is not kept from it), as fast as it can.
            assert eventually(lambda: _backend(writers[w])._meta.is_locked("commit"), interval=0.002), (
                "the reader took no lock"
            )
            for _ in range(_COMMITS):
                n = str(commits[w] + 1)
                with writers[w].transaction() as txn:
                    switches[w] = [txn.update(s.replace(external_ids={"n": n})) for s in switches[w]]
                commits[w] += 1

        with ProxiedServer(hazelcast_server) as proxied:
            reader = nbdb.connect(proxied.url, namespace=namespace, commit_lease=1, timeout=20)
            try:
                backend = _backend(reader)
                assert len(reader.list(LogicalSwitch)) == _WRITERS * (_BETWEEN + 2)  # reads the registry first
                proxied.proxy.delay(0.6)
                for _ in range(_LISTS):
                    threads = [threading.Thread(target=write, args=(w,), daemon=True) for w in range(_WRITERS)]
                    for thread in threads:
                        thread.start()
                    try:
                        kvs, revision = backend.range_keys(["o/*/LogicalSwitch/"])
                    except errors.BackendUnavailableError as exc:
                        assert "commit_lease" in str(exc)
                        kvs = None
                    for thread in threads:
                        thread.join(30)
                    if kvs is None:
                        continue
                    for w in range(_WRITERS):
                        mine = {
                            kv.mod_revision for kv in kvs if kv.key.startswith((f"o/a{w}/", f"o/m{w}/", f"o/z{w}/"))
                        }
                        assert len(mine) == 1 and max(mine) <= revision, f"torn at revision {revision}: {sorted(mine)}"
            finally:
                proxied.proxy.heal()
                reader.close()
        assert min(commits) == _LISTS * _COMMITS
    finally:
        for writer in writers:
            writer.close()


@pytest.mark.timeout(120)
def test_a_stale_fenced_write_under_a_held_lock_is_a_conflict(hazelcast_server: Any) -> None:  # noqa: F811
    """Leases live in a map of their own: the family's lease_held (which reads a key) took every one as lost."""
    with nbdb.connect(hazelcast_server.url, namespace=f"t{uuid.uuid4().hex[:10]}") as db:
        stale = db.create(LogicalSwitch(name="fenced"))
        db.update(stale.replace(name="moved on"))
        with db.lock("leader", ttl=10) as held:
            with pytest.raises(errors.ConflictError):
                db.update(stale.replace(name="stale"), fence=held)
            assert _backend(db).lease_held("leader", held.token.encode())
            assert not held.lost
