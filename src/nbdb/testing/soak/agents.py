"""The soak's processes: writers that transfer and create, and one watcher that follows everything.

Each runs in a process of its own (``multiprocessing`` with the *spawn* start method: no
client library state crosses a fork) and writes what happened as JSON lines, one file
per process, flushed line by line so that a crash loses nothing already recorded:

- a writer: ``{"transfer": …}`` before each transfer is tried, then ``{"attempt": …}`` per
  commit attempt (:class:`~nbdb.testing.ledger.Attempt`);
- the watcher: ``{"ready": revision}`` once it follows, then ``{"seen": …}`` per delivered
  change (:class:`~nbdb.testing.history.Observed`) and ``{"reset": revision}`` per lost
  history, and ``{"end": revision}`` when it caught up after the writers stopped.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar
from uuid import UUID

import nbdb
from nbdb.testing.history import Observed, Reset
from nbdb.testing.ledger import Attempt, Transfer
from nbdb.testing.workload import MODELS, Follower, create_named, transfer

__all__ = ["WriterPlan", "run_watcher", "run_writer", "when_available"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class _Lines:
    """Append-only JSON lines, flushed one by one."""

    def __init__(self, path: str) -> None:
        self._file: IO[str] = open(path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, **item: Any) -> None:
        with self._lock:
            self._file.write(json.dumps(item, separators=(",", ":")) + "\n")
            self._file.flush()

    def close(self) -> None:
        self._file.close()


class WriterPlan(dict[str, Any]):
    """What one writer does (a plain dict, so that it crosses into a spawned process as is).

    Keys: ``url``, ``namespace``, ``accounts`` (name -> id text), ``worker`` (its name),
    ``seed``, ``until`` (monotonic end time), ``create_every`` (one create per so many
    operations), ``out`` (its JSON lines file).
    """


def run_writer(plan: WriterPlan) -> None:
    """Transfers between random accounts and uniquely named creates until ``plan["until"]``."""
    out = _Lines(plan["out"])
    accounts = {name: UUID(text) for name, text in plan["accounts"].items()}
    names = sorted(accounts)
    rng = random.Random(plan["seed"])
    worker = plan["worker"]
    until = float(plan["until"])
    db = _connect(plan["url"], plan["namespace"], until)
    try:

        def record(attempt: Attempt) -> None:
            out.write(attempt=attempt.to_dict())

        step = 0
        while time.monotonic() < until:
            step += 1
            # Each operation may outlive the run by a bounded time: its outcome must be recorded.
            deadline = max(until, time.monotonic()) + 30
            if step % plan["create_every"] == 0:
                create_named(db, f"{worker}-c{step}", record, worker=worker, deadline=deadline)
                continue
            source, target = rng.sample(names, 2)
            move = Transfer(f"{worker}-t{step}", source, target, rng.randint(1, 50))
            out.write(transfer=move.to_dict())
            transfer(db, accounts, move, record, worker=worker, deadline=deadline)
    finally:
        db.close()
        out.close()


def run_watcher(url: str, namespace: str, out_path: str, done_path: str, until: float) -> None:
    """Follow every change of the workload's models until the writers are done and it caught up.

    It takes its start revision itself (revisions may be per connection, as OVSDB's are)
    and says so with ``{"ready": revision}``; the writers start after that. Once
    ``done_path`` exists it reads the store's current revision and follows until it
    delivered up to there (or ``until``).
    """
    out = _Lines(out_path)
    db = _connect(url, namespace, until)
    try:
        start = when_available(lambda: db.list(MODELS[0]).revision, until)
        out.write(ready=start)

        def sink(item: Observed | Reset) -> None:
            if isinstance(item, Reset):
                out.write(**item.to_dict())
            else:
                out.write(seen=item.to_dict())

        follower = Follower(db, start, sink)
        thread = threading.Thread(target=follower.run, args=(until,), daemon=True)
        thread.start()
        while not Path(done_path).exists() and time.monotonic() < until:
            time.sleep(0.2)
        final = when_available(lambda: db.list(MODELS[0]).revision, until)
        while follower.revision < final and time.monotonic() < until:
            time.sleep(0.2)
        follower.stop()
        thread.join(30)
        out.write(end=follower.revision, target=final, leaked=follower.leaked, reopened=follower.reopened)
    finally:
        db.close()
        out.close()


def _connect(url: str, namespace: str, until: float) -> nbdb.Database:
    return when_available(lambda: nbdb.connect(url, namespace=namespace), until)


def when_available(action: Callable[[], T], until: float) -> T:
    """``action()``, retried while the server is unreachable (a member may be down) until ``until``."""
    delay = 0.1
    while True:
        try:
            return action()
        except nbdb.BackendUnavailableError:
            if time.monotonic() >= until:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
