"""Settings of the wide-column family (a backend builds them from its URL), and its retry loops."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from nbdb.retry import RetryPolicy

__all__ = ["Clock", "WideColumnOptions", "tries"]

Clock = Callable[[], float]
"""Wall-clock seconds (``time.time`` by default; injectable for tests)."""


def tries(policy: RetryPolicy) -> Iterator[int]:
    """0, 1, 2, ...: one number per try of a loop that retries under ``policy`` (pausing between tries)."""
    attempts = policy.begin()
    number = 0
    while True:
        yield number
        if not attempts.wait():
            return
        number += 1


@dataclass(frozen=True, slots=True)
class WideColumnOptions:
    """What the family needs to know beyond the store itself."""

    namespace: str = ""
    """A component of every partition key: isolates one application's data."""
    history: int = 86_400
    """Seconds of change history kept (TTL of the change rows and the commit index)."""
    settle: float = 2.0
    """Seconds a watcher waits for an in-flight commit before sealing its partition."""
    poll_interval: float = 0.05
    """Pause between two reads of the commit index by an idle watcher (it grows to 0.25 s)."""
    contention: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(attempts=200, backoff=0.002, max_backoff=0.05, deadline=30.0)
    )
    """Tries of a compare-and-set that lost a race (sequencer, seals, counters)."""
    commit: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(attempts=25, backoff=0.005, max_backoff=0.1, deadline=None)
    )
    """Plans of a commit that lost a race to a concurrent commit of its partition."""
    settling: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(attempts=5, backoff=0.05, max_backoff=1.0, deadline=15.0)
    )
    """Tries to settle a conditional write whose reply was lost, before raising CommitUnknownError."""
    serial_reads: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(attempts=5, backoff=0.005, max_backoff=0.05, deadline=None)
    )
    """Tries of a serial read (a Paxos round: under contention it fails like a compare-and-set)."""
    clock: Clock = time.time
    """Stamps the diagnostic ``at`` column of the commit index; no guarantee depends on it."""
