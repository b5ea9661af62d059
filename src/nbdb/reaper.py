"""The expiry thread of a Database on a store whose clients reap expired objects.

Objects created with a ``ttl`` must disappear when their owner stops
refreshing them (a chassis that died), and watchers must see them deleted. A
store that cannot expire them itself (``capabilities.expiry`` is ``reaper``)
relies on its connected clients: every open Database calls the backend's
:meth:`~nbdb.spi.Backend.reap` about once a second, at a jittered pace so
that many clients do not reap in step. Each reap is an ordinary conditional
delete, so two clients reaping the same object delete it once, and a refresh
that lands first wins.
"""

from __future__ import annotations

import logging
import random
import threading

from nbdb import errors
from nbdb.spi import Backend

__all__ = ["Reaper"]

log = logging.getLogger(__name__)

_INTERVAL = 1.0
_IDLE_INTERVAL = 5.0
"""Seconds between passes once a pass found nothing to reap (expiring objects are rare)."""


class Reaper:
    """Calls ``backend.reap()`` from a daemon thread until :meth:`close`."""

    def __init__(self, backend: Backend, interval: float = _INTERVAL) -> None:
        self._backend = backend
        self._interval = interval
        self._stop = threading.Event()
        self.reaped = 0
        """How many objects this thread deleted."""
        self._thread = threading.Thread(target=self._run, name="nbdb-reaper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        jitter = random.Random()  # its own: the application's random state is not ours to draw from
        pause = self._interval * jitter.uniform(0.5, 1.0)
        while not self._stop.wait(pause):
            try:
                found = self._backend.reap()
            except errors.NbdbError as exc:
                log.debug("reaper: pass failed (the next one retries): %s", exc)
                found = 0
            except Exception:
                log.exception("reaper: unexpected error; the next pass retries")
                found = 0
            self.reaped += found
            base = self._interval if found else max(self._interval, _IDLE_INTERVAL / 5)
            pause = base * jitter.uniform(0.75, 1.25)

    def close(self) -> None:
        """Stop the thread and wait for its pass to end."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()
