"""What every blocking call of the public API does with its ``timeout``, written once.

``None`` waits without bound, and so does a timeout longer than a thread can
wait (``math.inf``, ``1e300``: Python's waits raise OverflowError past
``threading.TIMEOUT_MAX``); zero or less does not wait. NaN, a bool or
anything that is not a number is a ValidationError (NaN made a work queue's
``get`` and a watch's ``poll`` wait forever).
"""

from __future__ import annotations

import math
import threading
from typing import Any

from nbdb import errors

__all__ = ["check_seconds", "timeout_of"]


def timeout_of(timeout: Any, what: str = "timeout") -> float | None:
    """``timeout`` as a wait can take it: None (no bound) or a finite number of seconds."""
    if timeout is None:
        return None
    if timeout.__class__ is not float and (isinstance(timeout, bool) or not isinstance(timeout, int | float)):
        raise errors.ValidationError(f"{what} must be a number of seconds or None, not {timeout!r}")
    if timeout > threading.TIMEOUT_MAX:
        return None
    if timeout < -threading.TIMEOUT_MAX:
        return 0.0  # does not wait (a whole number below a float's range raised OverflowError in math.isnan)
    if math.isnan(timeout):
        raise errors.ValidationError(f"{what} must be a number of seconds or None, not {timeout!r}")
    return timeout


def check_seconds(what: str, value: Any) -> float:
    """``value`` as a finite, positive number of seconds that a timer can wait; ValidationError otherwise.

    No bool, NaN or infinity: such a ttl once killed a lock's renewal thread
    (a wait longer than ``threading.TIMEOUT_MAX`` overflows) with the lock
    reported held.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise errors.ValidationError(f"{what} must be a number of seconds, not {value!r}")
    # Bounds first: math.isfinite() of a whole number past a float's range (a ttl of 10**400) raised OverflowError.
    if not (0 < value <= threading.TIMEOUT_MAX and math.isfinite(value)):
        raise errors.ValidationError(f"{what} must be a positive, finite number of seconds, not {value!r}")
    return value
