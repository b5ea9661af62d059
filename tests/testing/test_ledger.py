"""The ledger: honest outcomes pass; double applies, false failures, lost and torn writes are named."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbdb import errors
from nbdb.testing.history import Observed, Reset, WatchChecker
from nbdb.testing.ledger import Attempt, Ledger, Outcome, Transfer, outcome_of

pytestmark = pytest.mark.timeout(60)

ACCOUNTS = ["a0", "a1", "a2", "a3"]
OPENING = 100


class Store:
    """A faithful store: applies transfers in one commit each and records what a watcher would see."""

    def __init__(self) -> None:
        self.balance = dict.fromkeys(ACCOUNTS, OPENING)
        self.version = dict.fromkeys(ACCOUNTS, 1)
        self.revision = 1
        self.events = [Observed(0, "KitAccount", a, None, 1, 1, 0, self._fields(a, "")) for a in ACCOUNTS]

    def _fields(self, account: str, transfer: str) -> dict[str, object]:
        return {"name": account, "balance": self.balance[account], "transfer": transfer}

    def apply(self, transfer: Transfer, *, torn: bool = False) -> None:
        self.revision += 1
        for account in (transfer.source, transfer.target):
            self.balance[account] += transfer.delta(account)
            old = self.version[account]
            self.version[account] += 1
            fields = self._fields(account, transfer.id)
            self.events.append(Observed(self.revision, "KitAccount", account, old, old + 1, self.revision, 0, fields))
            if torn:
                self.revision += 1

    def watch(self) -> WatchChecker:
        return WatchChecker().feed_all(self.events)


_transfers = st.lists(
    st.tuples(
        st.sampled_from(ACCOUNTS),
        st.sampled_from(ACCOUNTS),
        st.integers(min_value=1, max_value=40),
        st.sampled_from([Outcome.OK, Outcome.UNKNOWN, Outcome.FAILED]),
        st.booleans(),
    ).filter(lambda t: t[0] != t[1]),
    max_size=25,
)


def _run(plan: list[tuple[str, str, int, Outcome, bool]]) -> tuple[Ledger, Store]:
    """Transfers whose store effect matches their outcome (an unknown one lands or not, as drawn)."""
    ledger, store = Ledger(dict.fromkeys(ACCOUNTS, OPENING)), Store()
    for index, (source, target, amount, outcome, lands) in enumerate(plan):
        transfer = Transfer(f"t{index}", source, target, amount)
        ledger.add_transfer(transfer)
        ledger.record(Attempt("transfer", transfer.id, outcome))
        if outcome is Outcome.OK or (outcome is Outcome.UNKNOWN and lands):
            store.apply(transfer)
    return ledger, store


@settings(deadline=None)  # a loaded machine must not turn slowness into failures
@given(plan=_transfers)
def test_honest_outcomes_pass_with_and_without_a_watcher(plan: list[tuple[str, str, int, Outcome, bool]]) -> None:
    ledger, store = _run(plan)
    assert ledger.check(store.balance, watch=store.watch()).violations == []
    assert ledger.check(store.balance).violations == []


@settings(deadline=None)  # a loaded machine must not turn slowness into failures
@given(plan=_transfers.filter(lambda p: any(t[3] is Outcome.OK for t in p)), data=st.data())
def test_a_second_apply_of_an_acknowledged_transfer_is_a_double_apply(
    plan: list[tuple[str, str, int, Outcome, bool]], data: st.DataObject
) -> None:
    ledger, store = _run(plan)
    acked = [t for t in ledger.transfers.values() if ledger.attempts[("transfer", t.id)][0].outcome is Outcome.OK]
    store.apply(data.draw(st.sampled_from(acked)))
    report = ledger.check(store.balance, watch=store.watch())
    assert report.count("double-apply") == 1
    if not any(step[3] is Outcome.UNKNOWN for step in plan):
        assert report.count("balance") >= 1, "without unknown outcomes, the final balances alone show it too"


def test_the_issue_12_sequence_is_a_false_failure_then_a_double_apply() -> None:
    # A commit lands, its reply is lost, a foreign write follows, the client says
    # "conflict"; the caller re-applies as the docs say: the transfer is applied twice.
    ledger, store = Ledger(dict.fromkeys(ACCOUNTS, OPENING)), Store()
    transfer = Transfer("t", "a0", "a1", 5)
    ledger.add_transfer(transfer)
    store.apply(transfer)
    ledger.record(Attempt("transfer", "t", outcome_of(errors.ConflictError("stale"))))
    alone = ledger.check(store.balance, watch=store.watch())
    assert [v.kind for v in alone.violations] == ["false-failure", "balance", "balance"]
    store.apply(transfer)
    ledger.record(Attempt("transfer", "t", outcome_of(None)))
    report = ledger.check(store.balance, watch=store.watch())
    assert report.count("double-apply") == 1


def test_an_acknowledged_transfer_missing_is_a_lost_write() -> None:
    ledger, store = Ledger(dict.fromkeys(ACCOUNTS, OPENING)), Store()
    ledger.add_transfer(Transfer("t", "a0", "a1", 5))
    ledger.record(Attempt("transfer", "t", Outcome.OK))
    report = ledger.check(store.balance, watch=store.watch())
    assert report.count("lost-write") == 1 and report.count("balance") == 2


def test_a_transfer_seen_at_two_revisions_is_torn() -> None:
    ledger, store = Ledger(dict.fromkeys(ACCOUNTS, OPENING)), Store()
    transfer = Transfer("t", "a0", "a1", 5)
    ledger.add_transfer(transfer)
    ledger.record(Attempt("transfer", "t", Outcome.OK))
    store.apply(transfer, torn=True)
    assert ledger.check(store.balance, watch=store.watch()).count("torn") == 1


def test_a_balance_that_ignores_the_transfer_named_is_a_lost_update() -> None:
    ledger, store = Ledger(dict.fromkeys(ACCOUNTS, OPENING)), Store()
    transfer = Transfer("t", "a0", "a1", 5)
    ledger.add_transfer(transfer)
    ledger.record(Attempt("transfer", "t", Outcome.OK))
    store.apply(transfer)
    store.events[-1] = Observed(2, "KitAccount", "a1", 1, 2, 2, 0, {"name": "a1", "balance": 100, "transfer": "t"})
    assert ledger.check(store.balance, watch=store.watch()).count("lost-update") == 1


def test_a_lost_history_falls_back_to_balances() -> None:
    ledger, store = _run([("a0", "a1", 5, Outcome.OK, True)])
    watch = store.watch()
    watch.feed(Reset(99))
    report = ledger.check(store.balance, watch=watch)
    assert report.ok and "lost history" in report.notes[0]


def test_creates_are_counted_by_name() -> None:
    ledger = Ledger({})
    ledger.record_all(
        [
            Attempt("create", "c1", Outcome.OK),
            Attempt("create", "c2", Outcome.UNKNOWN),
            Attempt("create", "c3", Outcome.FAILED),
            Attempt("create", "c3", Outcome.OK),
            Attempt("create", "c4", Outcome.FAILED),
        ]
    )
    assert ledger.check({}, created={"c1": 1, "c3": 1}).violations == []
    assert ledger.check({}, created={"c1": 1, "c2": 1, "c3": 1}).violations == []
    bad = ledger.check({}, created={"c2": 1, "c3": 2, "c4": 1})
    assert sorted(v.kind for v in bad.violations) == ["double-apply", "false-failure", "lost-write"]


def test_outcomes_of_errors() -> None:
    assert outcome_of(None) is Outcome.OK
    assert outcome_of(errors.CommitUnknownError("?")) is Outcome.UNKNOWN
    assert outcome_of(errors.BackendUnavailableError("down")) is Outcome.FAILED
    assert outcome_of(errors.ConflictError("stale")) is Outcome.FAILED
    assert outcome_of(KeyError("x")) is Outcome.LEAKED
    assert Attempt.from_dict(Attempt("create", "c", Outcome.UNKNOWN, revision=3).to_dict()).outcome is Outcome.UNKNOWN


def test_a_leaked_exception_is_a_violation() -> None:
    ledger = Ledger({})
    ledger.record(Attempt("create", "c", Outcome.LEAKED, error="grpc.RpcError: boom"))
    report = ledger.check({}, created={"c": 1})
    assert report.count("untranslated") == 1 and report.leaked == 1
