"""The fault tests' workload: bank transfers, uniquely named creates and a watcher that follows everything.

Accounts are OVN ``LogicalSwitch`` rows named ``acct-N`` whose ``external_ids`` hold the
balance and the id of the transfer that wrote the version; creates are ``AddressSet`` rows
with unique names. Only OVN models are used, so the workload runs on every backend,
including the OVN Northbound database of an OVSDB raft cluster.

Each operation goes through the public API only and records what the caller was told
(:class:`~nbdb.testing.ledger.Attempt`), the way an application that follows the docs
behaves: on a ``ConflictError`` re-read and re-apply; on another failure that says "not
applied" try again; on ``CommitUnknownError`` stop and leave it to the ledger. Both the
conformance kit (threads) and ``nbdb soak`` (processes) run these.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from uuid import UUID

import nbdb
from nbdb import errors
from nbdb.capabilities import Atomicity
from nbdb.models import Model
from nbdb.models.ovn import AddressSet, LogicalSwitch
from nbdb.retry import Attempts, RetryPolicy
from nbdb.testing.history import Observed, Reset
from nbdb.testing.ledger import Attempt, Outcome, Transfer, outcome_of

__all__ = [
    "ACCOUNT",
    "BANK_TOPIC",
    "CREATED",
    "MODELS",
    "Follower",
    "account",
    "balance_of",
    "create_named",
    "moved",
    "open_accounts",
    "transfer",
]

log = logging.getLogger(__name__)

BANK_TOPIC = "bank"
"""Every account and created object lives in this one topic: single-partition backends can transact on them."""

ACCOUNT: type[LogicalSwitch] = LogicalSwitch
"""The model of an account."""
CREATED: type[AddressSet] = AddressSet
"""The model of the uniquely named creates."""
MODELS: list[type[Model]] = [ACCOUNT, CREATED]
"""What the follower watches."""

_BALANCE = "kit-balance"
_TRANSFER = "kit-transfer"

Record = Callable[[Attempt], None]


def account(name: str, balance: int) -> LogicalSwitch:
    """A new account."""
    return LogicalSwitch(name=name, topic=BANK_TOPIC, external_ids={_BALANCE: str(balance), _TRANSFER: ""})


def balance_of(obj: Model) -> int:
    """The balance an account holds (ValueError if it is not one)."""
    return int(obj.external_ids[_BALANCE])


def moved(obj: LogicalSwitch, delta: int, transfer_id: str) -> LogicalSwitch:
    """``obj`` with ``delta`` added to its balance by transfer ``transfer_id``."""
    ids = {**obj.external_ids, _BALANCE: str(balance_of(obj) + delta), _TRANSFER: transfer_id}
    return obj.replace(external_ids=ids)


def _fields(obj: Model) -> dict[str, object]:
    """What the checkers read of a state: its name, and for an account its balance and transfer."""
    fields: dict[str, object] = {"name": getattr(obj, "name", "")}
    if _BALANCE in obj.external_ids:
        try:
            fields["balance"] = balance_of(obj)
        except ValueError:
            fields["balance"] = None
        fields["transfer"] = obj.external_ids.get(_TRANSFER, "")
    return fields


def _describe(exc: BaseException | None) -> str:
    return "" if exc is None else f"{type(exc).__module__}.{type(exc).__name__}: {exc}"[:300]


def open_accounts(db: nbdb.Database, count: int, opening: int) -> dict[str, UUID]:
    """Create ``count`` accounts ``acct-0``… with ``opening`` each; returns their ids by name.

    Done before any fault, so a failure here is raised, not recorded.
    """
    made = [account(f"acct-{index}", opening) for index in range(count)]
    if db.capabilities.transactions is Atomicity.NONE:
        for obj in made:
            db.create(obj)
    else:
        with db.transaction() as txn:
            for obj in made:
                txn.create(obj)
    return {obj.name: obj.id for obj in made}


def _tries(deadline: float, max_attempts: int) -> Attempts:
    """The retries of one operation: short backoff, bounded in count and by ``deadline``."""
    left = max(0.001, deadline - time.monotonic())
    return RetryPolicy(attempts=max_attempts, backoff=0.01, max_backoff=0.5, deadline=left).begin()


def transfer(
    db: nbdb.Database,
    accounts: Mapping[str, UUID],
    move: Transfer,
    record: Record,
    *,
    worker: str = "",
    deadline: float,
    max_attempts: int = 40,
) -> Outcome:
    """Apply ``move`` in one transaction (read both accounts, write both), as a careful caller would.

    Every commit attempt is recorded. Returns the last outcome: OK, UNKNOWN (stop: the
    ledger decides), LEAKED, or FAILED when the attempts or the time ran out.
    """
    tries = _tries(deadline, max_attempts)
    while True:
        try:
            source = db.get(LogicalSwitch, accounts[move.source])
            target = db.get(LogicalSwitch, accounts[move.target])
        except errors.NbdbError as exc:
            # Reading commits nothing: wait and read again.
            log.debug("transfer %s: read failed: %s", move.id, exc)
            if not tries.wait():
                return Outcome.FAILED
            continue
        started = time.monotonic()
        txn = db.transaction()
        problem: BaseException | None = None
        try:
            with txn:
                txn.update(moved(source, -move.amount, move.id))
                txn.update(moved(target, move.amount, move.id))
        except Exception as exc:
            problem = exc
        outcome = outcome_of(problem)
        revision = txn.revision if outcome is Outcome.OK else None
        record(Attempt("transfer", move.id, outcome, _describe(problem), started, time.monotonic(), revision, worker))
        if outcome is not Outcome.FAILED or not tries.wait():
            return outcome


def create_named(
    db: nbdb.Database,
    name: str,
    record: Record,
    *,
    worker: str = "",
    deadline: float,
    max_attempts: int = 40,
) -> Outcome:
    """Create one object called ``name``; after a failure that says "not applied", build it again and retry.

    A new object (a new id) per attempt, as an application rebuilding its request would:
    a create reported as failed that had landed then shows as two objects of one name.
    """
    tries = _tries(deadline, max_attempts)
    while True:
        started = time.monotonic()
        problem: BaseException | None = None
        try:
            db.create(AddressSet(name=name, topic=BANK_TOPIC))
        except Exception as exc:
            problem = exc
        outcome = outcome_of(problem)
        record(Attempt("create", name, outcome, _describe(problem), started, time.monotonic(), None, worker))
        if outcome is not Outcome.FAILED or not tries.wait():
            return outcome


class Follower:
    """Follows every change of ``models`` from revision ``since``, through faults, into ``sink``.

    Each delivered change becomes an :class:`~nbdb.testing.history.Observed` (with the
    ``name``, and for an account its ``balance`` and ``transfer``); on a ``HistoryGoneError`` it
    records a :class:`~nbdb.testing.history.Reset`, re-lists (each object's state as a
    ``listed`` Observed) and watches on from the list's revision;
    when the server is unreachable the watch is reopened from its last revision, as the
    docs tell users to. Non-nbdb exceptions are kept in ``leaked``.
    """

    def __init__(
        self,
        db: nbdb.Database,
        since: int,
        sink: Callable[[Observed | Reset], None],
        models: Sequence[type[Model]] = MODELS,
    ) -> None:
        self.db = db
        self.models = list(models)
        self.revision = since
        self.sink = sink
        self.leaked: list[str] = []
        self.reopened = 0
        self._batch = 0
        self._stop = threading.Event()

    def stop(self) -> None:
        """Make :meth:`run` return after its current poll."""
        self._stop.set()

    def run(self, until: float) -> None:
        """Follow until :meth:`stop` or the monotonic time ``until``."""
        watch: nbdb.Watch | None = None
        gone = False
        delay = 0.05
        try:
            while not self._stop.is_set() and time.monotonic() < until:
                try:
                    if gone:
                        self._relist()
                        gone = False
                    if watch is None:
                        watch = self.db.watch(self.models, since=self.revision)
                    batch = watch.poll(0.3)
                    self.revision = watch.revision
                    delay = 0.05
                except errors.HistoryGoneError:
                    self._close(watch)
                    watch = None
                    gone = True
                    continue
                except errors.NbdbError as exc:
                    log.info("follower: %s; reopening from revision %d", exc, self.revision)
                    self._close(watch)
                    watch = None
                    self.reopened += 1
                    self._stop.wait(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                except Exception as exc:
                    self.leaked.append(_describe(exc))
                    self._close(watch)
                    watch = None
                    self._stop.wait(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                if batch:
                    self._batch += 1
                    now = time.monotonic()
                    for event in batch:
                        self.sink(self._observed(event, now))
        finally:
            self._close(watch)

    def _relist(self) -> None:
        """After lost history, as the docs say: list, then watch from the list's revision."""
        lists = [(model, self.db.list(model)) for model in self.models]
        self.revision = min(found.revision for _, found in lists)
        now = time.monotonic()
        self.sink(Reset(self.revision, now))
        self._batch += 1
        for model, found in lists:
            for obj in found:
                state = Observed(
                    self._batch,
                    model.nbdb_table,
                    str(obj.id),
                    None,
                    obj.version,
                    found.revision,
                    now,
                    _fields(obj),
                    True,
                )
                self.sink(state)

    def _close(self, watch: nbdb.Watch | None) -> None:
        """Close ``watch`` if any."""
        if watch is not None:
            try:
                watch.close()
            except Exception as exc:  # closing a broken watch must not stop the follower
                log.debug("follower: closing the watch: %s", exc)

    def _observed(self, event: nbdb.ChangeEvent[Model], now: float) -> Observed:
        return Observed(
            self._batch,
            event.model.nbdb_table,
            str(event.id),
            None if event.old is None else event.old.version,
            None if event.new is None else event.new.version,
            event.revision,
            now,
            _fields(event.object),
        )
