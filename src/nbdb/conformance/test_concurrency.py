"""Concurrent writers: no lost update, unique ids, mutual exclusion."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import cast

import pytest

import nbdb
from nbdb.conformance.kit import KitCounter, KitParent, check_lease_primitives
from nbdb.families.kv import KeyValueBackend
from nbdb.families.lease import LeaseStore

pytestmark = [pytest.mark.nbdb_kit, pytest.mark.timeout(120)]

THREADS = 4
INCREMENTS = 15


def _run(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
        assert not t.is_alive(), "worker did not finish"


def test_concurrent_read_modify_write_loses_no_update(db_factory: Callable[..., nbdb.Database]) -> None:
    counter = db_factory().create(KitCounter())
    errors: list[BaseException] = []
    conflicts = [0]

    def worker() -> None:
        db = db_factory()
        try:
            for _ in range(INCREMENTS):
                while True:
                    current = db.get(KitCounter, counter.id)
                    try:
                        db.update(current.replace(count=current.count + 1))
                        break
                    except nbdb.ConflictError:
                        conflicts[0] += 1
        except BaseException as exc:
            errors.append(exc)

    _run([threading.Thread(target=worker) for _ in range(THREADS)])
    assert errors == []
    final = db_factory().get(KitCounter, counter.id)
    assert final.count == THREADS * INCREMENTS
    assert final.version == THREADS * INCREMENTS + 1


def test_allocate_id_is_unique_and_increasing_across_clients(db_factory: Callable[..., nbdb.Database]) -> None:
    if not db_factory().capabilities.allocate_id:
        with pytest.raises(nbdb.UnsupportedError):
            db_factory().allocate_id("tunnel-key")
        return
    results: list[list[int]] = [[] for _ in range(THREADS)]

    def worker(slot: int) -> None:
        db = db_factory()
        for _ in range(INCREMENTS):
            results[slot].append(db.allocate_id("tunnel-key"))

    _run([threading.Thread(target=worker, args=(i,)) for i in range(THREADS)])
    every = [v for r in results for v in r]
    assert sorted(every) == list(range(1, THREADS * INCREMENTS + 1))
    for r in results:
        assert r == sorted(r), "ids seen by one client must increase"
    assert db_factory().allocate_id("other-counter") == 1


def test_allocate_id_rejects_bad_names(db: nbdb.Database) -> None:
    with pytest.raises(nbdb.ValidationError):
        db.allocate_id("")


def test_lock_gives_mutual_exclusion(db_factory: Callable[..., nbdb.Database]) -> None:
    if not db_factory().capabilities.locks:
        with pytest.raises(nbdb.UnsupportedError):
            with db_factory().lock("l"):
                pass
        return
    inside = [0]
    overlaps = [0]
    entered = [0]

    def worker() -> None:
        db = db_factory()
        for _ in range(4):
            with db.lock("critical", ttl=10, timeout=60) as handle:
                inside[0] += 1
                if inside[0] > 1:
                    overlaps[0] += 1
                entered[0] += 1
                time.sleep(0.01)
                assert not handle.lost
                inside[0] -= 1

    _run([threading.Thread(target=worker) for _ in range(THREADS)])
    assert entered[0] == THREADS * 4
    assert overlaps[0] == 0


def test_lock_timeout_and_release(db_factory: Callable[..., nbdb.Database]) -> None:
    if not db_factory().capabilities.locks:
        pytest.skip("backend declares no locks")
    holder, other = db_factory(), db_factory()
    with holder.lock("busy", ttl=10):
        started = time.monotonic()
        with pytest.raises(nbdb.LockTimeoutError):
            with other.lock("busy", ttl=10, timeout=0.3):
                pass
        assert time.monotonic() - started < 10
    with other.lock("busy", ttl=10, timeout=10) as handle:
        assert not handle.lost


def test_a_released_lock_is_free_at_once(db_factory: Callable[..., nbdb.Database]) -> None:
    """The end of a ``with`` block releases the lock on the server: another client takes it within 2 s.

    Not when its 30 s ttl runs out: a backend that skipped its release (one reading ``handle.lost``
    while nbdb gives the lock back) passed ``test_lock_timeout_and_release``, whose lease just expired.
    """
    if not db_factory().capabilities.locks:
        pytest.skip("backend declares no locks")
    holder, other = db_factory(), db_factory()
    with holder.lock("given back", ttl=30) as held:
        assert not held.lost and not held.giving_back
    assert held.giving_back and held.lost and held.released
    with other.lock("given back", ttl=30, timeout=2) as taken:
        assert not taken.lost
    with holder.lock("given back", ttl=30, timeout=2) as again:  # and back again: released twice over
        assert not again.lost


def test_lock_is_kept_alive_beyond_its_ttl(db_factory: Callable[..., nbdb.Database]) -> None:
    if not db_factory().capabilities.locks:
        pytest.skip("backend declares no locks")
    holder, other = db_factory(), db_factory()
    with holder.lock("renewed", ttl=1.0) as handle:
        time.sleep(2.5)
        assert not handle.lost
        with pytest.raises(nbdb.LockTimeoutError):
            with other.lock("renewed", ttl=1.0, timeout=0.2):
                pass


def test_closing_a_database_gives_its_locks_back(db_factory: Callable[..., nbdb.Database]) -> None:
    """A Database closed while a lock's block runs (a controller shut down, an atexit) releases the lock.

    Another client takes it at once, not when its 30 s ttl runs out; the closed holder's handle says lost
    and fences nothing; leaving its block afterwards raises nothing and does not release the lock again
    (the successor still holds it).
    """
    holder, successor, third = db_factory(), db_factory(), db_factory()
    if not holder.capabilities.locks:
        pytest.skip("backend declares no locks")
    obj = successor.create(KitParent(name="fenced after close"))
    with ExitStack() as holders_block:
        handle = holders_block.enter_context(holder.lock("closed-holder", ttl=30))
        assert not handle.lost
        holder.close()
        with successor.lock("closed-holder", ttl=30, timeout=5) as taken:
            assert handle.lost and handle.released
            holders_block.close()  # the holder's block ends after its Database closed
            assert not taken.lost
            with pytest.raises(nbdb.LockTimeoutError):
                with third.lock("closed-holder", ttl=30, timeout=0.3):
                    pass
            if successor.capabilities.fencing:
                with pytest.raises(nbdb.LockLostError):
                    successor.update(obj.replace(size=1), fence=handle)
                obj = successor.update(obj.replace(size=2), fence=taken)
    assert successor.get(KitParent, obj.id).size in (0, 2)


@pytest.mark.parametrize("timeout", [None, 60.0], ids=["no-timeout", "timeout"])
def test_closing_a_database_ends_its_lock_waits(
    db_factory: Callable[..., nbdb.Database], timeout: float | None
) -> None:
    """A thread waiting for a lock another client holds, whose Database is closed, gives up at once.

    It raises BackendUnavailableError instead of waiting for as long as the other holder keeps the lock,
    or until its timeout (memory:// and sqlite:// waited so: their lease loop never asked whether the
    Database had closed, and their store still answered; so did OVSDB, whose lock waits on a connection of
    its own). Database.lock hands the backend an event its close sets, which the lease loop waits on.
    """
    holder, waiter = db_factory(), db_factory()
    if not holder.capabilities.locks:
        pytest.skip("backend declares no locks")
    outcome: list[BaseException | str] = []

    def wait() -> None:
        try:
            with waiter.lock("held elsewhere", ttl=30, timeout=timeout):
                outcome.append("taken")
        except BaseException as exc:  # the test reports what ended the wait
            outcome.append(exc)

    with holder.lock("held elsewhere", ttl=30):
        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        time.sleep(0.2)  # the waiter is in its retry loop (the outcome does not depend on it)
        waiter.close()
        thread.join(10)  # a bound for the hang this test is about, not a speed assertion
        assert not thread.is_alive(), "lock() went on waiting after its Database closed"
    assert len(outcome) == 1 and isinstance(outcome[0], nbdb.BackendUnavailableError), outcome


def _lease_store(db: nbdb.Database, what: str) -> LeaseStore:
    """``db``'s backend as the lease primitives it holds locks with; a skip naming what is not tested if none."""
    backend = db.backend
    if not all(callable(getattr(backend, n, None)) for n in ("acquire_lease", "renew_lease", "release_lease")):
        pytest.skip(
            f"{type(backend).__name__} declares locks={db.capabilities.locks}, fencing={db.capabilities.fencing} "
            f"but offers no lease primitives (acquire_lease, renew_lease, release_lease): {what} is not tested "
            "by the kit here; the backend's own tests must take a lock away behind its handle"
        )
    return cast(LeaseStore, backend)


def test_lease_primitives_keep_one_holder(db: nbdb.Database) -> None:
    """A backend's leases: no renewal or release of a lost holder touches its successor's lease."""
    if not db.capabilities.locks:
        pytest.skip("backend declares no locks")
    store = _lease_store(db, "the lease primitives' contract")
    check_lease_primitives(store, f"kit-lease-{time.monotonic_ns()}")


def test_a_fenced_write_is_refused_by_the_store_once_the_lease_changed_hands(
    db_factory: Callable[..., nbdb.Database],
) -> None:
    """The fence is checked where the write lands, not only by the handle.

    The lease changes hands (its holder paused past its ttl) before the holder's handle can know: a
    backend whose fenced commit did not check the lease wrote for a holder that no longer held it, and
    passed every test where the handle already knew (released, closed).
    """
    db, rival = db_factory(), db_factory()
    if not (db.capabilities.locks and db.capabilities.fencing):
        pytest.skip("backend declares no fencing")
    backend = _lease_store(rival, "a fenced commit the store refuses once the lock changed hands")
    obj = db.create(KitParent(name="fenced by the store"))
    name = f"kit-fence-{time.monotonic_ns()}"
    with db.lock(name, ttl=30) as held:
        backend.release_lease(name, held.token.encode())  # as its ttl running out would, unknown to the handle
        assert backend.acquire_lease(name, b"kit-rival", 30)
        try:
            with pytest.raises(nbdb.LockLostError):
                db.update(obj.replace(size=9), fence=held)
        finally:
            backend.release_lease(name, b"kit-rival")
    assert db.get(KitParent, obj.id).size == 0, "a fenced write landed after its lease changed hands"


def test_lease_held_sees_the_leases_acquire_lease_takes(db: nbdb.Database) -> None:
    """``lease_held`` answers for the leases the backend's own primitives keep.

    Its default reads the key ``layout.lock(name)``; a store that keeps leases elsewhere and does not
    override it reports every fenced write that merely conflicts as a lost lock.
    """
    backend = db.backend
    if not isinstance(backend, KeyValueBackend):
        pytest.skip(f"{type(backend).__name__} is not of the key-value family (its locks are checked through lock())")
    if not db.capabilities.locks:
        pytest.skip("backend declares no locks")
    name, token = f"kit-held-{time.monotonic_ns()}", b"kit-holder"
    assert backend.acquire_lease(name, token, 30), "acquire_lease: a free lease was refused"
    try:
        assert backend.lease_held(name, token), (
            f"{type(backend).__name__}.lease_held says the token that acquire_lease just gave the lease to does not "
            "hold it: a backend keeping leases outside its keys (a table, a dict) overrides lease_held to read "
            "them (docs/writing-a-backend.md, the primitives' table)"
        )
        assert not backend.lease_held(name, b"kit-other"), f"{type(backend).__name__}.lease_held: a stranger holds it"
    finally:
        backend.release_lease(name, token)
    assert not backend.lease_held(name, token), f"{type(backend).__name__}.lease_held: held after release_lease"


def test_a_refused_fenced_write_says_the_lock_is_lost_at_once(db_factory: Callable[..., nbdb.Database]) -> None:
    """A fenced write refused with LockLostError turns ``handle.lost`` True at once, not at the next renewal.

    The lease is taken away under the holder (released with its token, as a lease that ran out would be)
    and a rival takes the lock; the holder's renewal is a third of its 30 s ttl away. A controller that read
    ``held.lost`` after its write was refused went on as the leader until then. The holder's block then ends
    without releasing the rival's lock.
    """
    holder, rival = db_factory(), db_factory()
    if not holder.capabilities.fencing:
        pytest.skip("backend declares no fencing")
    store = _lease_store(holder, "a fenced write refused once the lock was taken away behind its handle")
    obj = holder.create(KitParent(name="fenced, then lost"))
    with holder.lock("taken away", ttl=30) as held:
        obj = holder.update(obj.replace(size=1), fence=held)
        store.release_lease(held.name, held.token.encode())
        with rival.lock("taken away", ttl=30, timeout=5) as taken:
            assert not held.lost
            with pytest.raises(nbdb.LockLostError):
                holder.update(obj.replace(size=2), fence=held)
            assert held.lost
            assert not taken.lost
    assert held.lost
    assert holder.get(KitParent, obj.id).size == 1
