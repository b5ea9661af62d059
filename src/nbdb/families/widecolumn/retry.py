"""How long to wait before trying again, and how often.

One policy object instead of hand-written loops (the shape of ``redis-py``'s
``Retry``): a number of attempts, an exponential backoff with full jitter, a
ceiling, and an optional deadline.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``attempts`` tries; before try n+1 a pause drawn from [0, min(max_backoff, backoff * 2**n)]."""

    attempts: int = 5
    backoff: float = 0.01
    max_backoff: float = 1.0
    deadline: float | None = None
    """Seconds after the first try past which no new try starts (None: attempts alone bound it)."""

    def delay(self, attempt: int) -> float:
        """The pause after failed try number ``attempt`` (0-based), with full jitter."""
        return random.uniform(0, min(self.max_backoff, self.backoff * 2 ** min(attempt, 30)))

    def tries(self) -> Iterator[int]:
        """0, 1, 2, ...: one number per try, sleeping between them; stops when attempts or deadline run out."""
        start = time.monotonic()
        for attempt in range(self.attempts):
            if attempt:
                pause = self.delay(attempt - 1)
                if self.deadline is not None:
                    left = self.deadline - (time.monotonic() - start)
                    if left <= 0:
                        return
                    pause = min(pause, left)
                time.sleep(pause)
            yield attempt
