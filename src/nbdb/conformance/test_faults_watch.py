"""Change streams through faults: no gap, no duplicate, no torn transaction; caches converge.

A watcher follows every change from a revision while its connections are cut, its
in-flight events are dropped, or the server restarts. It resumes the way the docs say
(a new watch from ``watch.revision``; after ``HistoryGoneError``, from now). What it
delivered is replayed by :class:`nbdb.testing.history.WatchChecker`: per object, versions
consecutive from its creation; per commit, one revision, delivered in one poll.
"""

from __future__ import annotations

import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

import nbdb
from nbdb.capabilities import Atomicity, Durability
from nbdb.conformance.faultkit import proxied, require_fired
from nbdb.conformance.kit import eventually
from nbdb.events import ChangeEvent
from nbdb.models import Model
from nbdb.models.ovn import LogicalSwitch
from nbdb.testing import Server
from nbdb.testing.faults import ProxiedUrl
from nbdb.testing.history import Observed, Reset, WatchChecker, caught_up
from nbdb.testing.ledger import Attempt, Outcome, Transfer
from nbdb.testing.workload import ACCOUNT, CREATED, MODELS, Follower, create_named, moved, open_accounts, transfer

__all__ = ["proxied"]

pytestmark = [pytest.mark.nbdb_kit, pytest.mark.timeout(240)]


class Writer:
    """Direct writes of every shape a watcher must deliver whole: transfers (two objects, one commit), creates."""

    def __init__(self, db: nbdb.Database) -> None:
        self.db = db
        self.accounts = open_accounts(db, 4, 100)
        self.names = sorted(self.accounts)
        self.rounds = 0
        self.token = uuid.uuid4().hex[:8]  # OVN's Address_Set names are unique server-wide

    def round(self) -> None:
        """One transfer (one commit of two accounts, or two commits without transactions) and one create."""
        index = self.rounds
        self.rounds += 1
        deadline = time.monotonic() + 30
        source, target = self.names[index % 4], self.names[(index + 1) % 4]
        move = Transfer(f"w{index}", source, target, 1)
        if self.db.capabilities.transactions is Atomicity.NONE:
            for name, delta in ((source, -1), (target, 1)):
                self.db.update(moved(self.db.get(LogicalSwitch, self.accounts[name]), delta, move.id))
        elif transfer(self.db, self.accounts, move, _ignore, deadline=deadline) is not Outcome.OK:
            raise nbdb.BackendUnavailableError(f"transfer {move.id} did not commit")
        name = f"obj-{self.token}-{index}"
        if create_named(self.db, name, _ignore, deadline=deadline) is not Outcome.OK:
            raise nbdb.BackendUnavailableError(f"create {name} did not commit")


def _ignore(attempt: Attempt) -> None:
    """Writes of these tests are checked through what the watcher delivers, not attempt by attempt."""


@contextmanager
def following(db: nbdb.Database, since: int) -> Iterator[tuple[Follower, list[Observed | Reset]]]:
    """A :class:`Follower` running in a thread for the block."""
    seen: list[Observed | Reset] = []
    follower = Follower(db, since, seen.append)
    thread = threading.Thread(target=follower.run, args=(time.monotonic() + 200,), daemon=True)
    thread.start()
    try:
        yield follower, seen
    finally:
        follower.stop()
        thread.join(30)
        assert not thread.is_alive(), "the follower did not stop"


def _wait_delivered(seen: list[Observed | Reset], db: nbdb.Database) -> None:
    truth = _truth(db)
    if not eventually(lambda: caught_up(list(seen), truth), timeout=60):
        last = {i.id: i.new_version for i in seen if isinstance(i, Observed)}
        behind = {k: (last.get(k), v) for k, v in truth.items() if last.get(k) != v}
        resets = sum(isinstance(i, Reset) for i in seen)
        pytest.fail(f"the watcher never delivered the last changes ({resets} resets); (seen, stored): {behind}")


def _truth(db: nbdb.Database) -> dict[str, int]:
    return {str(o.id): o.version for model in MODELS for o in db.list(model)}


def check_delivery(seen: list[Observed | Reset], follower: Follower, truth: dict[str, int]) -> WatchChecker:
    """Assert the contract on what the follower delivered; returns the checker."""
    assert follower.leaked == [], f"exceptions that are not nbdb errors reached the watcher: {follower.leaked}"
    checker = WatchChecker().feed_all(list(seen))
    assert checker.violations == [], "\n".join(map(str, checker.violations[:20]))
    if checker.complete:
        for key in truth:
            history = checker.histories.get((ACCOUNT.nbdb_table, key)) or checker.histories.get(
                (CREATED.nbdb_table, key)
            )
            assert history and history[0].old_version is None, f"the creation of {key} was never delivered"
    else:
        warnings.warn(
            f"the watch raised HistoryGoneError {len(checker.resets)} time(s) on reconnecting: every cache re-lists",
            stacklevel=2,
        )
    return checker


def test_watch_resumes_across_connection_drops(proxied: ProxiedUrl, db_factory: Callable[..., nbdb.Database]) -> None:
    direct, watcher = db_factory(), db_factory(url=proxied.url)
    start = direct.list(ACCOUNT).revision
    proxy = proxied.proxy
    with following(watcher, start) as (follower, seen):
        writer = Writer(direct)
        cuts = 0
        for cycle in range(3):
            writer.round()
            _wait_delivered(seen, direct)
            # A connection cut between deliveries...
            require_fired(proxied, proxy.wait(lambda s: s.open > 0, 30), "the watcher's connection")
            cuts += proxy.cut()
            # ...and, once the stream is live again, one with deliveries in flight: held by
            # the proxy, then thrown away with the connection (a server that pushes changes
            # has sent them; one that is polled has its poll held).
            writer.round()
            _wait_delivered(seen, direct)
            proxy.blackhole()
            held = proxy.stats.received_down
            writer.round()
            writer.round()
            proxy.wait(lambda s: s.received_down > held, 2)  # noqa: B023
            cuts += proxy.cut()
            proxy.heal()
            if cycle % 2:
                proxy.delay(0.05)
                writer.round()
                _wait_delivered(seen, direct)
                proxy.heal()
        require_fired(proxied, cuts > 0, "cutting the watcher's connections")
        truth = _truth(direct)
        assert eventually(lambda: caught_up(list(seen), truth), timeout=60), (
            "the watcher never delivered the last changes"
        )
    check_delivery(seen, follower, truth)


def test_cache_converges_across_connection_drops(proxied: ProxiedUrl, db_factory: Callable[..., nbdb.Database]) -> None:
    direct, watcher = db_factory(), db_factory(url=proxied.url)
    events: list[ChangeEvent[Model]] = []
    with watcher.cache(MODELS, on_change=events.append) as cache:
        assert cache.wait_synced(30)
        writer = Writer(direct)
        for _ in range(5):
            writer.round()
            proxied.proxy.cut()
            proxied.proxy.blackhole()
            writer.round()
            proxied.proxy.cut()
            proxied.proxy.heal()
        truth = _truth(direct)

        def converged() -> bool:
            return {str(o.id): o.version for m in MODELS for o in cache.list(m)} == truth

        assert eventually(converged, timeout=60), "the cache never caught up with the store"
    last: dict[object, int] = {}
    for event in events:
        version = event.object.version
        assert version > last.get(event.id, 0) or event.new is None, f"{event.id} went back to version {version}"
        last[event.id] = version


@pytest.mark.parametrize("how", ["graceful", "crash"])
def test_watch_across_a_server_restart(
    how: str, nbdb_server: Server | None, db_factory: Callable[..., nbdb.Database]
) -> None:
    if nbdb_server is None:
        pytest.skip("needs --nbdb-url=spawn:KIND: the kit restarts only a server it started")
    direct = db_factory()
    start = direct.list(ACCOUNT).revision
    member = nbdb_server.leader()
    with following(direct, start) as (follower, seen):
        writer = Writer(direct)
        for _ in range(3):
            writer.round()
        before = _truth(direct)
        if how == "crash":
            member.kill()
            member.restart()
        else:
            member.restart()
        nbdb_server.wait_ready()
        # The client may still be reconnecting: wait until it reads again.
        assert eventually(lambda: _retry(lambda: direct.list(ACCOUNT)), timeout=60, interval=0.5)
        lost = set(before) - set(_truth(direct))
        if lost:
            assert direct.capabilities.durability is not Durability.DURABLE, (
                f"a durable backend lost {len(lost)} objects"
            )
            # Data lost in the restart: the watch must say so rather than go on as if nothing happened.
            assert eventually(lambda: any(isinstance(i, Reset) for i in seen), timeout=60), (
                f"the restart lost {len(lost)} objects and the watch raised no HistoryGoneError"
            )
        else:
            assert eventually(lambda: _retry(writer.round), timeout=60, interval=0.5), "no write succeeded"
            writer.round()
            truth = _truth(direct)
            assert eventually(lambda: caught_up(list(seen), truth), timeout=60), "the watcher never caught up"
    checker = WatchChecker().feed_all(list(seen))
    assert follower.leaked == [], f"exceptions that are not nbdb errors reached the watcher: {follower.leaked}"
    assert checker.violations == [], "\n".join(map(str, checker.violations[:20]))


def _retry(action: Callable[[], object]) -> bool:
    try:
        action()
    except nbdb.BackendUnavailableError:
        return False
    return True
