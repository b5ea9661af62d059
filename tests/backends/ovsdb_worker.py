"""Another process writing the same OVSDB server, for the OVSDB data API's multi-process tests.

Run as ``python ovsdb_worker.py race URL SWITCH_ID NAME START_AT``: at the
wall-clock time START_AT it creates a port called NAME on the switch and
prints ``won ID`` or ``lost HOLDER_ID`` (one flushed line).
"""

from __future__ import annotations

import sys
import time
import uuid

import nbdb
from nbdb.models import LogicalSwitchPort


def say(*words: object) -> None:
    sys.stdout.write(" ".join(map(str, words)) + "\n")
    sys.stdout.flush()


def race(url: str, switch: str, name: str, start_at: str) -> None:
    """Create port ``name`` at ``start_at``; say who holds the name afterwards."""
    with nbdb.connect(url) as db:
        db.get(nbdb.models.LogicalSwitch, switch)  # connected and loaded before the start
        time.sleep(max(0.0, float(start_at) - time.time()))
        port = LogicalSwitchPort(switch=uuid.UUID(switch), name=name)
        try:
            say("won", db.create(port).id)
        except nbdb.UniqueViolationError as exc:
            say("lost", exc.existing)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command != "race":
        raise SystemExit(f"unknown command {command!r}")
    race(*args)
