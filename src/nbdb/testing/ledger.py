"""Accounting for commits under faults: what was acknowledged against what was applied (pure logic).

Writers record every commit they attempt as an :class:`Attempt` with its :class:`Outcome`:

- ``OK``: acknowledged, so applied exactly once;
- ``UNKNOWN``: ``CommitUnknownError``, so applied at most once;
- ``FAILED``: any other nbdb error (a conflict, an unreachable server...), so not applied.

A *transfer* moves ``amount`` from one account to another in one transaction, and every
account version it writes names it (see :mod:`nbdb.testing.workload`); a *create* makes one object
with a unique name. :class:`Ledger` sets the attempts against what the store shows — the
final balances, the final objects and, when a :class:`~nbdb.testing.history.WatchChecker`
followed everything, each account's history — and reports:

- **double applies**: a transfer or create applied more than once;
- **false failures**: a commit reported as failed (e.g. a false ``ConflictError``) that was
  applied;
- **lost acknowledged writes**: an acknowledged commit that is not there;
- **torn transfers**: a transfer seen on one account and not the other, or at two revisions;
- **unexplained balances**: a final balance that no subset of the outcome-unknown transfers
  explains (checked from the final state alone, so it holds even without a watcher).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from nbdb import errors
from nbdb.testing.history import Violation, WatchChecker

__all__ = ["Attempt", "Ledger", "LedgerReport", "Outcome", "Transfer", "outcome_of"]

_MAX_SUMS = 1 << 20  # bound on the subset sums tracked per account


class Outcome(StrEnum):
    """What the caller was told about a commit."""

    OK = "ok"
    """Acknowledged: it must be applied exactly once."""
    UNKNOWN = "unknown"
    """CommitUnknownError: applied at most once."""
    FAILED = "failed"
    """Any other nbdb error: it must not be applied."""
    LEAKED = "leaked"
    """An exception that is not an nbdb error (a contract breach of its own); counted as unknown."""


def outcome_of(exc: BaseException | None) -> Outcome:
    """The outcome a caller must assume for a commit that raised ``exc`` (None: it returned)."""
    if exc is None:
        return Outcome.OK
    if isinstance(exc, errors.CommitUnknownError):
        return Outcome.UNKNOWN
    if isinstance(exc, errors.NbdbError):
        return Outcome.FAILED
    return Outcome.LEAKED


@dataclass(frozen=True, slots=True)
class Transfer:
    """Move ``amount`` from account ``source`` to account ``target`` (accounts by name)."""

    id: str
    source: str
    target: str
    amount: int

    def delta(self, account: str) -> int:
        """What this transfer does to ``account``'s balance."""
        return (-self.amount if account == self.source else 0) + (self.amount if account == self.target else 0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One commit call and what the caller was told."""

    op: str
    """``"transfer"`` or ``"create"``."""
    key: str
    """The transfer's id, or the created object's unique name."""
    outcome: Outcome
    error: str = ""
    started: float = 0.0
    ended: float = 0.0
    revision: int | None = None
    """The commit's revision when acknowledged and known."""
    worker: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Attempt:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**data, "outcome": Outcome(data["outcome"])})


@dataclass
class LedgerReport:
    """What :meth:`Ledger.check` found. ``violations`` lists every breach; ``ok`` is True when there is none."""

    acknowledged: int = 0
    unknown: int = 0
    failed: int = 0
    leaked: int = 0
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing breaches the contract."""
        return not self.violations

    def count(self, kind: str) -> int:
        """How many violations of ``kind``."""
        return sum(1 for v in self.violations if v.kind == kind)


class Ledger:
    """Transfers and creates attempted by the writers, checked against the store (see the module doc)."""

    def __init__(self, opening: Mapping[str, int]) -> None:
        self.opening = dict(opening)
        self.transfers: dict[str, Transfer] = {}
        self.attempts: dict[tuple[str, str], list[Attempt]] = {}

    def add_transfer(self, transfer: Transfer) -> None:
        """Declare a transfer (before or after its attempts)."""
        if transfer.source not in self.opening or transfer.target not in self.opening:
            raise ValueError(f"transfer {transfer.id} names an account that was not opened")
        self.transfers[transfer.id] = transfer

    def record(self, attempt: Attempt) -> None:
        """Add one attempt."""
        self.attempts.setdefault((attempt.op, attempt.key), []).append(attempt)

    def record_all(self, attempts: Iterable[Attempt]) -> None:
        """Add attempts in order."""
        for attempt in attempts:
            self.record(attempt)

    def _bounds(self, op: str, key: str) -> tuple[int, int]:
        """How many times the attempts of ``(op, key)`` say it must, and may, have been applied."""
        tries = self.attempts.get((op, key), [])
        must = sum(1 for a in tries if a.outcome is Outcome.OK)
        may = must + sum(1 for a in tries if a.outcome in (Outcome.UNKNOWN, Outcome.LEAKED))
        return must, may

    def check(
        self,
        balances: Mapping[str, int],
        created: Mapping[str, int] | None = None,
        watch: WatchChecker | None = None,
    ) -> LedgerReport:
        """Set the attempts against the store.

        ``balances``: final balance per account name. ``created``: how many objects exist
        now per unique name of the creates. ``watch``: a checker that followed every
        change since before the first attempt (its account histories, the changes that
        carry a ``balance`` field, give exact counts).
        """
        report = LedgerReport()
        for tries in self.attempts.values():
            for attempt in tries:
                if attempt.outcome is Outcome.OK:
                    report.acknowledged += 1
                elif attempt.outcome is Outcome.UNKNOWN:
                    report.unknown += 1
                elif attempt.outcome is Outcome.LEAKED:
                    report.leaked += 1
                    report.violations.append(
                        Violation("untranslated", f"{attempt.op} {attempt.key} raised {attempt.error}")
                    )
                else:
                    report.failed += 1
        if created is not None:
            keys = {key for op, key in self.attempts if op == "create"}
            for name in sorted(keys):
                self._judge("create", name, created.get(name, 0), report)
        if watch is None:
            report.notes.append("no watcher: transfers are checked on final balances only")
        elif not watch.complete:
            report.notes.append(
                f"the watcher lost history {len(watch.resets)} time(s): transfers are checked on final balances only"
            )
        else:
            self._check_histories(watch, report)
        self._check_balances(balances, report)
        return report

    def _judge(self, op: str, key: str, applied: int, report: LedgerReport) -> None:
        must, may = self._bounds(op, key)
        if applied > 1 and applied > may:
            report.violations.append(Violation("double-apply", f"{op} {key} applied {applied} times"))
        elif applied > may:
            report.violations.append(
                Violation("false-failure", f"{op} {key} was applied although every attempt reported a failure")
            )
        elif applied < must:
            report.violations.append(Violation("lost-write", f"acknowledged {op} {key} is not in the store"))

    def _check_balances(self, balances: Mapping[str, int], report: LedgerReport) -> None:
        if set(balances) != set(self.opening):
            report.violations.append(
                Violation("lost-write", f"accounts {sorted(set(self.opening) ^ set(balances))} missing or unexpected")
            )
        for account in sorted(set(balances) & set(self.opening)):
            base = self.opening[account]
            uncertain: list[int] = []
            for transfer in self.transfers.values():
                delta = transfer.delta(account)
                if not delta:
                    continue
                must, may = self._bounds("transfer", transfer.id)
                base += must * delta
                uncertain += [delta] * (may - must)
            if not _reachable(balances[account] - base, uncertain):
                report.violations.append(
                    Violation(
                        "balance",
                        f"{account}: balance {balances[account]} is not its opening plus the acknowledged transfers "
                        f"and any of its {len(uncertain)} outcome-unknown ones (expected {base} + a subset)",
                    )
                )

    def _check_histories(self, watch: WatchChecker, report: LedgerReport) -> None:
        seen: dict[str, dict[str, list[int]]] = {}  # transfer -> account -> revisions
        for history in watch.histories.values():
            if not any("balance" in change.fields for change in history):
                continue
            previous: int | None = None
            for change in history:
                name = str(change.fields.get("name", ""))
                balance = change.fields.get("balance")
                transfer_id = str(change.fields.get("transfer", ""))
                if change.new_version is None:
                    continue
                if change.listed:
                    previous = balance if isinstance(balance, int) else None
                    continue
                if change.old_version is not None and transfer_id:
                    seen.setdefault(transfer_id, {}).setdefault(name, []).append(change.revision)
                    transfer = self.transfers.get(transfer_id)
                    if transfer is None:
                        report.violations.append(
                            Violation("foreign", f"{name} v{change.new_version} names unknown transfer {transfer_id}")
                        )
                    elif previous is not None and isinstance(balance, int):
                        if balance - previous != transfer.delta(name):
                            report.violations.append(
                                Violation(
                                    "lost-update",
                                    f"{name} v{change.new_version}: transfer {transfer_id} changed the balance by "
                                    f"{balance - previous}, not {transfer.delta(name)}",
                                )
                            )
                previous = balance if isinstance(balance, int) else None
        for transfer_id, transfer in sorted(self.transfers.items()):
            per_account = seen.get(transfer_id, {})
            source = per_account.get(transfer.source, [])
            target = per_account.get(transfer.target, [])
            if len(source) != len(target) or sorted(source) != sorted(target):
                report.violations.append(
                    Violation(
                        "torn",
                        f"transfer {transfer_id}: {transfer.source} at revisions {source}, "
                        f"{transfer.target} at revisions {target}",
                    )
                )
            self._judge("transfer", transfer_id, max(len(source), len(target)), report)


def _reachable(target: int, deltas: list[int]) -> bool:
    """Whether some subset of ``deltas`` sums to ``target``."""
    sums = {0}
    for delta in deltas:
        sums |= {s + delta for s in sums}
        if len(sums) > _MAX_SUMS:
            return True  # too many to tell: do not claim a breach
    return target in sums
