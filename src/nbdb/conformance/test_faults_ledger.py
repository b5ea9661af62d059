"""Concurrent transfers under faults keep the ledger.

Several clients, each through the fault proxy, move money between accounts in
transactions (each transfer has a unique id, written on both accounts) and create uniquely
named objects, while the proxy loses replies, cuts connections, delays and blackholes. A
watcher on a direct connection follows every change. At the end every account's balance
must be its opening plus the acknowledged transfers plus some of the outcome-unknown ones;
no transfer or create may be applied twice, none reported failed may be applied, none
acknowledged may be missing, and no transfer may show on one account without the other
(see :mod:`nbdb.testing.ledger`).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

import pytest

import nbdb
from nbdb.capabilities import Atomicity
from nbdb.conformance.faultkit import proxied, require_fired
from nbdb.conformance.kit import eventually
from nbdb.models.ovn import AddressSet, LogicalSwitch
from nbdb.testing.faults import FaultProxy, ProxiedUrl
from nbdb.testing.history import Observed, Reset, WatchChecker, caught_up
from nbdb.testing.ledger import Attempt, Ledger, Transfer
from nbdb.testing.workload import BANK_TOPIC, Follower, balance_of, create_named, open_accounts, transfer

__all__ = ["proxied"]

pytestmark = [pytest.mark.nbdb_kit, pytest.mark.timeout(300)]

WORKERS = 4
ACCOUNTS = 4  # few accounts: retries meet other clients' writes, as in issue 12
OPENING = 1000
DURATION = 15.0  # seconds of faults
TRANSFER_MARK = b"kit-transfer"


def _faults(proxy: FaultProxy, stop: threading.Event, seed: int) -> None:
    """Cycle through every fault the proxy has until ``stop``."""
    rng = random.Random(seed)
    while not stop.is_set():
        fault = rng.choice(["lose", "lose", "lose", "cut", "delay", "blackhole", "pass"])
        if fault == "lose" and rng.random() < 0.6:
            # The next transfer commit (its request carries the balance field's name).
            proxy.lose_next_reply(TRANSFER_MARK, window=0.2)
        elif fault == "lose":
            proxy.lose_next_reply(nth=rng.randint(1, 6), window=0.2)
        elif fault == "cut":
            proxy.cut()
        elif fault == "delay":
            proxy.delay(rng.choice([0.02, 0.1]))
        elif fault == "blackhole":
            proxy.blackhole()
        stop.wait(rng.uniform(0.2, 0.8))
        proxy.heal()
        stop.wait(rng.uniform(0.1, 0.4))


def test_transfers_under_faults_keep_the_ledger(proxied: ProxiedUrl, db_factory: Callable[..., nbdb.Database]) -> None:
    direct = db_factory()
    if direct.capabilities.transactions is Atomicity.NONE:
        pytest.skip("backend declares no transactions: transfers cannot be atomic")
    start = direct.list(LogicalSwitch).revision
    seen: list[Observed | Reset] = []
    follower = Follower(direct, start, seen.append)
    watching = threading.Thread(target=follower.run, args=(time.monotonic() + 240,), daemon=True)
    watching.start()
    accounts = open_accounts(direct, ACCOUNTS, OPENING)
    ledger = Ledger(dict.fromkeys(accounts, OPENING))
    lock = threading.Lock()

    def record(attempt: Attempt) -> None:
        with lock:
            ledger.record(attempt)

    deadline = time.monotonic() + DURATION
    clients = [db_factory(url=proxied.url) for _ in range(WORKERS)]

    token = uuid.uuid4().hex[:8]  # OVN's Address_Set names are unique server-wide

    def work(number: int) -> None:
        rng = random.Random(number)
        client = clients[number]
        names = sorted(accounts)
        step = 0
        while time.monotonic() < deadline:
            step += 1
            if step % 4 == 0:
                create_named(client, f"{token}-w{number}-c{step}", record, worker=str(number), deadline=deadline + 30)
                continue
            source, target = rng.sample(names, 2)
            move = Transfer(f"w{number}-t{step}", source, target, rng.randint(1, 40))
            with lock:
                ledger.add_transfer(move)
            transfer(client, accounts, move, record, worker=str(number), deadline=deadline + 30)

    stop = threading.Event()
    faulting = threading.Thread(target=_faults, args=(proxied.proxy, stop, 12), daemon=True)
    workers = [threading.Thread(target=work, args=(n,), daemon=True) for n in range(WORKERS)]
    faulting.start()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(DURATION + 120)
    stop.set()
    faulting.join(10)
    proxied.proxy.heal()
    assert not any(t.is_alive() for t in workers), "a worker did not finish"
    stats = proxied.proxy.stats
    require_fired(proxied, stats.fired + stats.cut > 0, "faults on the transfer clients")

    if not direct.capabilities.linearizable_reads:
        # Reads may lag commits the workers had acknowledged (an OVSDB relay reads its own copy):
        # a write of the reader's own, which it always reads back, orders the reads after them.
        direct.create(AddressSet(name=f"{token}-barrier", topic=BANK_TOPIC))
    final = direct.list(LogicalSwitch)
    truth = {str(a.id): a.version for a in final}
    assert eventually(lambda: follower.revision >= final.revision or caught_up(list(seen), truth), timeout=60), (
        "the watcher never caught up with the last transfer"
    )
    follower.stop()
    watching.join(30)

    checker = WatchChecker().feed_all(list(seen))
    names = Counter(s.name for s in direct.list(AddressSet))
    report = ledger.check({a.name: balance_of(a) for a in final}, created=names, watch=checker)
    problems = [str(v) for v in checker.violations + report.violations]
    assert follower.leaked == [], f"untranslated exceptions in the watcher: {follower.leaked}"
    assert problems == [], (
        f"{len(problems)} breaches ({report.acknowledged} acknowledged, {report.unknown} unknown, "
        f"{report.failed} failed attempts; proxy {stats}):\n" + "\n".join(problems[:30])
    )
    assert report.acknowledged > 0, "no commit succeeded under faults"
    assert sum(balance_of(a) for a in final) == ACCOUNTS * OPENING
