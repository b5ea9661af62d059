"""Lost replies: every commit is applied once, or reported as of unknown outcome, never falsely failed.

A fault proxy forwards a request of the client under test, drops the server's reply and
cuts the connection (the request lands, the reply never arrives). Each commit kind runs
once per step of its conversation with the server: the reply of the 1st request that
names the commit's objects is lost, then on a fresh object the 2nd one's, and so on
until the operation no longer reaches that step. After each run, a second client reads
the truth and the test holds the caller's answer to it:

- returned: applied, exactly once;
- ``CommitUnknownError``: applied once or not at all;
- any other nbdb error: not applied (a ``ConflictError`` for a commit that landed is the
  false conflict of issue 12).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

import nbdb
from nbdb.capabilities import Atomicity
from nbdb.conformance.faultkit import id_patterns, proxied, require_fired, require_visible
from nbdb.conformance.kit import KitParent, eventually
from nbdb.testing.faults import Mode, ProxiedUrl
from nbdb.testing.ledger import Outcome, outcome_of

__all__ = ["proxied"]

pytestmark = [pytest.mark.nbdb_kit, pytest.mark.timeout(240)]

MAX_STEPS = 8  # requests of one operation whose reply is lost in turn
LOCK_TTL = 4.0


def _name() -> str:
    return f"f-{uuid.uuid4().hex}"


def _state(db: nbdb.Database, id: uuid.UUID) -> KitParent | None:
    try:
        return db.get(KitParent, id)
    except nbdb.NotFoundError:
        return None


def judge(what: str, applied: bool | None, exc: BaseException | None) -> None:
    """Hold the caller's answer (``exc``: None if it returned) to what the store shows (None: partly applied)."""
    outcome = outcome_of(exc)
    if outcome is Outcome.LEAKED:
        pytest.fail(f"{what}: an exception that is not an nbdb error reached the caller: {exc!r}")
    if applied is None:
        pytest.fail(f"{what}: the commit is partly applied (torn) after {exc!r}")
    if outcome is Outcome.OK and not applied:
        pytest.fail(f"{what}: acknowledged but not applied")
    if outcome is Outcome.FAILED and applied:
        pytest.fail(f"{what}: applied, yet the caller was told {type(exc).__name__}: {exc}")


@dataclass
class Case:
    """One run of one commit kind: the patterns naming it, the operation, and the check of its result."""

    patterns: list[bytes]
    run: Callable[[], object]
    verify: Callable[[BaseException | None], None]
    notes: list[str] = field(default_factory=list)


Scenario = Callable[[nbdb.Database, nbdb.Database], Case]


def _create(direct: nbdb.Database, client: nbdb.Database) -> Case:
    obj = KitParent(name=_name())

    def verify(exc: BaseException | None) -> None:
        stored = _state(direct, obj.id)
        judge("create", stored is not None, exc)
        if stored is not None:
            assert (stored.name, stored.version) == (obj.name, 1), "a create stores version 1, once"

    def run() -> None:
        client.create(obj)

    return Case(id_patterns(obj.id), run, verify)


def _update(direct: nbdb.Database, client: nbdb.Database) -> Case:
    base = direct.create(KitParent(name=_name()))
    new_name = _name()

    def verify(exc: BaseException | None) -> None:
        stored = _state(direct, base.id)
        assert stored is not None
        judge("CAS update", stored.version == 2, exc)
        assert (stored.name, stored.version) in ((base.name, 1), (new_name, 2)), f"unexpected {stored}"

    def run() -> None:
        client.update(base.replace(name=new_name))

    return Case(id_patterns(base.id), run, verify)


def _delete(direct: nbdb.Database, client: nbdb.Database) -> Case:
    base = direct.create(KitParent(name=_name()))

    def verify(exc: BaseException | None) -> None:
        stored = _state(direct, base.id)
        judge("CAS delete", stored is None, exc)
        if stored is not None:
            assert stored.version == 1

    return Case(id_patterns(base.id), lambda: client.delete(base), verify)


def _transaction(direct: nbdb.Database, client: nbdb.Database) -> Case:
    if direct.capabilities.transactions is Atomicity.NONE:
        pytest.skip("backend declares no transactions")
    kept = direct.create(KitParent(name=_name()))
    doomed = direct.create(KitParent(name=_name()))
    born = KitParent(name=_name())

    def run() -> None:
        with client.transaction() as txn:
            txn.create(born)
            txn.update(kept.replace(size=5))
            txn.delete(doomed)

    def verify(exc: BaseException | None) -> None:
        parts = (
            _state(direct, born.id) is not None,
            direct.get(KitParent, kept.id).version == 2,
            _state(direct, doomed.id) is None,
        )
        judge("transaction", parts[0] if len(set(parts)) == 1 else None, exc)

    return Case(id_patterns(born.id, kept.id, doomed.id), run, verify)


def _allocate_id(direct: nbdb.Database, client: nbdb.Database) -> Case:
    if not direct.capabilities.allocate_id:
        pytest.skip("backend declares no allocate_id")
    name = _name()
    first = direct.allocate_id(name)
    got: list[int] = []

    def verify(exc: BaseException | None) -> None:
        following = direct.allocate_id(name)
        advanced = following - first - 1  # times the client's call moved the counter
        assert advanced in (0, 1), f"allocate_id: the counter moved {advanced} times for one call (a value was lost)"
        judge("allocate_id", advanced == 1, exc)
        if got:
            assert got == [first + 1], f"allocate_id returned {got[0]} after {first}"

    return Case([name.encode()], lambda: got.append(client.allocate_id(name)), verify)


def _lock(direct: nbdb.Database, client: nbdb.Database) -> Case:
    if not direct.capabilities.locks:
        pytest.skip("backend declares no locks")
    name = _name()
    held: list[bool] = []

    def run() -> None:
        with client.lock(name, ttl=LOCK_TTL, timeout=LOCK_TTL / 2) as handle:
            try:
                with direct.lock(name, ttl=LOCK_TTL, timeout=0.2):
                    held.append(False)
            except nbdb.LockTimeoutError:
                held.append(not handle.lost)

    def verify(exc: BaseException | None) -> None:
        if isinstance(exc, nbdb.LockTimeoutError):
            pytest.fail(f"lock: nobody else held {name!r}, yet acquiring it timed out (its own lost acquire?): {exc}")
        judge("lock", bool(held), exc)
        if held:
            assert held == [True], "while the lock was held, another client took it"
        # Released (or, after an unknown outcome, expired): free again within its ttl.
        limit = 3.0 if exc is None else LOCK_TTL + 3.0
        with direct.lock(name, ttl=LOCK_TTL, timeout=limit):
            pass

    return Case([name.encode()], run, verify)


SCENARIOS: dict[str, Scenario] = {
    "create": _create,
    "update": _update,
    "delete": _delete,
    "transaction": _transaction,
    "allocate_id": _allocate_id,
    "lock": _lock,
}


def _run(case: Case) -> BaseException | None:
    try:
        case.run()
    except Exception as exc:
        return exc
    return None


@pytest.mark.parametrize("kind", list(SCENARIOS))
def test_lost_reply_at_every_step(kind: str, proxied: ProxiedUrl, db_factory: Callable[..., nbdb.Database]) -> None:
    require_visible(proxied)
    direct, client = db_factory(), db_factory(url=proxied.url)
    proxy = proxied.proxy
    fired_at = []
    for step in range(1, MAX_STEPS + 1):
        case = SCENARIOS[kind](direct, client)
        before = proxy.stats
        proxy.lose_next_reply(case.patterns, nth=step)
        exc = _run(case)
        proxy.disarm()
        fired = proxy.stats.fired > before.fired
        if fired:
            fired_at.append(step)
            # The window closes by itself; let it, so that runs do not overlap.
            cut_before = before.cut
            assert proxy.wait(lambda s: s.cut > cut_before, 10), "the lost-reply window never closed"  # noqa: B023
        case.verify(exc)
        if not fired:
            break
    require_fired(proxied, bool(fired_at), kind)


FOREIGN = ["create", "update", "transaction"]


@pytest.mark.parametrize("kind", FOREIGN)
def test_lost_reply_then_a_foreign_write(
    kind: str, proxied: ProxiedUrl, db_factory: Callable[..., nbdb.Database]
) -> None:
    """Issue 12: the commit lands, its reply is lost, another client writes one of its objects, then the retry."""
    require_visible(proxied)
    direct, client = db_factory(), db_factory(url=proxied.url)
    if kind == "transaction" and direct.capabilities.transactions is Atomicity.NONE:
        pytest.skip("backend declares no transactions")
    marker = _name()
    base = direct.create(KitParent(name=_name())) if kind != "create" else None
    target = KitParent(name=marker)
    extra = KitParent(name=_name())

    def commit() -> None:
        if base is None:
            client.create(target)
        elif kind == "update":
            client.update(base.replace(name=marker))
        else:
            with client.transaction() as txn:
                txn.update(base.replace(name=marker))
                txn.create(extra)

    changed_id = target.id if base is None else base.id
    answer: list[BaseException | None] = []
    worker = threading.Thread(target=lambda: answer.append(_run(Case([], commit, lambda e: None))), daemon=True)
    # The marker is in the commit only: its request loses its reply, and the client's retry
    # is held (blackhole) until the other client has written.
    proxied.proxy.lose_next_reply(marker.encode(), window=0.5, then=Mode.BLACKHOLE)
    worker.start()
    try:
        require_fired(proxied, proxied.proxy.wait_fired(timeout=30), f"{kind} with a lost reply")
        assert proxied.proxy.wait(lambda s: s.cut >= 1, 10)
        landed = eventually(lambda: (s := _state(direct, changed_id)) is not None and s.name == marker, timeout=10)
        current = _state(direct, changed_id)
        if current is not None:
            direct.update(current.replace(size=current.size + 100))  # the foreign write
    finally:
        proxied.proxy.heal()
    worker.join(120)
    assert not worker.is_alive(), f"{kind}: the commit did not return within 120 s after the network healed"
    exc = answer[0]
    stored = _state(direct, changed_id)
    if not landed:
        pytest.skip(f"the {kind} had not landed 10 s after its request was forwarded: the scenario did not happen")
    judge(f"{kind}, reply lost, then another client's write", True, exc)
    assert stored is not None and stored.name == marker
    assert stored.version == (2 if base is None else 3), f"{kind} applied more than once: {stored}"
    if kind == "transaction":
        assert _state(direct, extra.id) is not None


def test_close_returns_while_a_held_locks_server_is_silent(
    proxied: ProxiedUrl, db_factory: Callable[..., nbdb.Database]
) -> None:
    """close() gives back the locks still held: a server that stopped answering must not hang it.

    close() waits for the releases at most the backend's request timeout; the lease then runs out with its ttl.
    """
    holder = db_factory(url=proxied.url)
    if not holder.capabilities.locks:
        pytest.skip("backend declares no locks")
    with holder.lock("silenced", ttl=30) as handle:
        proxied.proxy.blackhole()
        closing = threading.Thread(target=holder.close, daemon=True)
        closing.start()
        closing.join(180)
        assert not closing.is_alive(), "close() hung on the silent server"
        assert handle.lost
    proxied.proxy.heal()
