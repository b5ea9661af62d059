"""What a soak found, from the records of its processes (pure logic, no server).

:func:`build_report` reads what the writers and the watcher recorded (as parsed JSON
lines), the final state of the store and the times of the kills, runs the ledger
(:mod:`nbdb.testing.ledger`) and the watch checker (:mod:`nbdb.testing.history`), and
measures how long writers and the watcher stalled after each kill.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from nbdb.testing.history import Observed, Reset, Violation, WatchChecker
from nbdb.testing.ledger import Attempt, Ledger, LedgerReport, Outcome, Transfer

__all__ = ["Kill", "SoakReport", "build_report", "read_lines", "stall_after"]

# How the report names each kind of breach, in the order it prints them.
BREACHES = {
    "double-apply": "double applies",
    "false-failure": "commits reported failed that were applied",
    "lost-write": "lost acknowledged writes",
    "torn": "torn transactions",
    "skipped": "skipped changes",
    "duplicate": "duplicate changes",
    "out-of-order": "changes out of order",
    "bad-version": "bad versions",
    "lost-update": "lost updates",
    "balance": "unexplained balances",
    "foreign": "writes by nobody",
    "untranslated": "untranslated exceptions",
}


@dataclass(frozen=True)
class Kill:
    """One fault the soak injected: ``member`` was killed at ``at`` (monotonic) and back at ``back``.

    ``failover``: when a majority of the sentinels first named another master (Sentinel only).
    """

    member: str
    at: float
    back: float | None = None
    failover: float | None = None


@dataclass
class SoakReport:
    """The soak's findings; ``ok`` when nothing breached the contract."""

    title: str
    seconds: float
    kills: list[Kill]
    ledger: LedgerReport
    watch_violations: list[Violation]
    resets: int
    delivered: int
    transfers: int
    creates: int
    writer_stall: float | None
    """Longest time after a kill until every writer had a commit acknowledged again (capped at the run's end)."""
    watcher_stall: float | None
    """Longest time after a kill until the watcher delivered a change committed after it."""
    watcher_lag: float | None
    """Longest time between a transfer's acknowledgement and its delivery to the watcher."""
    stalls: list[tuple[float, float]] = field(default_factory=list)
    """Per kill, in order: (writer stall, watcher stall)."""
    problems: list[str] = field(default_factory=list)
    """Failures of the run itself (a process that hung or died, a watcher that never caught up)."""

    @property
    def violations(self) -> list[Violation]:
        """Every breach, ledger's and watcher's."""
        return self.ledger.violations + self.watch_violations

    @property
    def ok(self) -> bool:
        """True when nothing breached the contract and the run itself completed."""
        return not self.violations and not self.problems

    def counts(self) -> dict[str, int]:
        """Breaches by kind (every kind listed, zeros included)."""
        found = {kind: 0 for kind in BREACHES}
        for violation in self.violations:
            found[violation.kind] = found.get(violation.kind, 0) + 1
        return found

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (for ``nbdb soak --json``)."""
        return {
            "title": self.title,
            "ok": self.ok,
            "seconds": self.seconds,
            "kills": [
                {**asdict(k), "writer_stall": w, "watcher_stall": v}
                for k, (w, v) in zip(self.kills, self.stalls, strict=False)
            ],
            "acknowledged": self.ledger.acknowledged,
            "unknown": self.ledger.unknown,
            "failed": self.ledger.failed,
            "transfers": self.transfers,
            "creates": self.creates,
            "delivered": self.delivered,
            "history_gone": self.resets,
            "breaches": self.counts(),
            "writer_stall": self.writer_stall,
            "watcher_stall": self.watcher_stall,
            "watcher_lag": self.watcher_lag,
            "violations": [str(v) for v in self.violations],
            "notes": self.ledger.notes,
            "problems": self.problems,
        }

    def render(self, limit: int = 20) -> str:
        """The report as text."""
        lines = [
            self.title,
            f"  {len(self.kills)} kills; {self.transfers} transfers and {self.creates} creates tried",
            f"  commits: {self.ledger.acknowledged} acknowledged, {self.ledger.unknown} outcome unknown, "
            f"{self.ledger.failed} failed (not applied)",
            f"  watcher: {self.delivered} changes delivered, history gone {self.resets} time(s)",
        ]
        counts = self.counts()
        lines += [f"  {name}: {counts[kind]}" for kind, name in BREACHES.items()]
        lines.append(
            f"  max writer stall after a kill: {_seconds(self.writer_stall)}; "
            f"max watcher stall after a kill: {_seconds(self.watcher_stall)}; "
            f"max watcher lag: {_seconds(self.watcher_lag)}"
        )
        if self.kills and all(k.failover is not None for k in self.kills):
            # Where a Sentinel stall goes: the sentinels' failover, then the clients.
            lines.append(
                "  per kill, seconds to: failover / old master back in sync / writers / watcher: "
                + ", ".join(
                    f"{k.failover - k.at:.1f}/{(k.back or k.failover) - k.at:.1f}/{w:.1f}/{v:.1f}"
                    for k, (w, v) in zip(self.kills, self.stalls, strict=False)
                    if k.failover is not None
                )
            )
        lines += [f"  note: {note}" for note in self.ledger.notes]
        lines += [f"  problem: {problem}" for problem in self.problems]
        breaches = self.violations
        if breaches:
            lines.append(f"  first breaches ({min(limit, len(breaches))} of {len(breaches)}):")
            lines += [f"    {v}" for v in breaches[:limit]]
        lines.append(f"  verdict: {'PASS' if self.ok else 'FAIL'}")
        return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def stall_after(kill_at: float, events: Sequence[float], end: float) -> float:
    """Time from ``kill_at`` to the first of ``events`` after it (to ``end`` when there is none)."""
    later = [t for t in events if t > kill_at]
    return (min(later) if later else end) - kill_at


def build_report(
    title: str,
    *,
    writer_lines: Iterable[Mapping[str, Any]],
    watcher_lines: Iterable[Mapping[str, Any]],
    opening: Mapping[str, int],
    balances: Mapping[str, int],
    created: Mapping[str, int],
    kills: Sequence[Kill],
    started: float,
    ended: float,
) -> SoakReport:
    """Set every record of a soak against the final store (see the module doc)."""
    ledger = Ledger(opening)
    attempts: list[Attempt] = []
    for line in writer_lines:
        if "transfer" in line:
            ledger.add_transfer(Transfer(**line["transfer"]))
        elif "attempt" in line:
            attempt = Attempt.from_dict(line["attempt"])
            ledger.record(attempt)
            attempts.append(attempt)
    checker = WatchChecker()
    problems: list[str] = []
    caught_up = False
    for line in watcher_lines:
        if "seen" in line:
            checker.feed(Observed.from_dict(line["seen"]))
        elif "reset" in line:
            checker.feed(Reset(line["reset"], line.get("at", 0.0)))
        elif "end" in line:
            caught_up = line["end"] >= line["target"]
            problems += [f"watcher: untranslated exception {text}" for text in line.get("leaked", [])]
    if not caught_up:
        problems.append("the watcher did not deliver up to the store's last revision before the run's end")
    report = ledger.check(balances, created=created, watch=checker)
    per_kill, lag = _stalls(attempts, checker, kills, ended)
    return SoakReport(
        title=title,
        seconds=ended - started,
        kills=list(kills),
        ledger=report,
        watch_violations=list(checker.violations),
        resets=len(checker.resets),
        delivered=checker.delivered,
        transfers=len(ledger.transfers),
        creates=len({a.key for a in attempts if a.op == "create"}),
        writer_stall=max((w for w, _ in per_kill), default=None),
        watcher_stall=max((w for _, w in per_kill), default=None),
        watcher_lag=lag,
        stalls=per_kill,
        problems=problems,
    )


def _stalls(
    attempts: Sequence[Attempt], checker: WatchChecker, kills: Sequence[Kill], end: float
) -> tuple[list[tuple[float, float]], float | None]:
    """Per kill, (writer stall, watcher stall); and the longest watcher lag."""
    acked = [a for a in attempts if a.outcome is Outcome.OK]
    by_worker: dict[str, list[float]] = {}
    for attempt in acked:
        by_worker.setdefault(attempt.worker, []).append(attempt.ended)
    delivered: dict[str, float] = {}  # transfer id -> first delivery time
    for history in checker.histories.values():
        for change in history:
            transfer_id = str(change.fields.get("transfer", ""))
            if transfer_id and transfer_id not in delivered:
                delivered[transfer_id] = change.at
    per_kill = []
    for kill in kills:
        writer = max((stall_after(kill.at, times, end) for times in by_worker.values()), default=end - kill.at)
        after = [delivered[a.key] for a in acked if a.op == "transfer" and a.started > kill.at and a.key in delivered]
        per_kill.append((writer, stall_after(kill.at, after, end)))
    lags = [delivered[a.key] - a.ended for a in acked if a.op == "transfer" and a.key in delivered]
    return per_kill, (max(lags) if lags else None)


def read_lines(text: str) -> list[dict[str, Any]]:
    """Parse JSON lines, ignoring a last line cut short by a crash."""
    out = []
    for raw in text.splitlines():
        try:
            out.append(json.loads(raw))
        except json.JSONDecodeError:
            continue
    return out
