"""Another process on the same SQLite file, for the sqlite backend's multi-process tests.

Run as ``python sqlite_worker.py COMMAND URL [ARG...]``; it reports on stdout, one
flushed line per acknowledged step, so the test knows exactly what was
acknowledged when it kills the process.
"""

from __future__ import annotations

import itertools
import sys
import time

import nbdb
from nbdb.models import LogicalSwitch, LogicalSwitchPort


def say(*words: object) -> None:
    sys.stdout.write(" ".join(map(str, words)) + "\n")
    sys.stdout.flush()


def transactions(db: nbdb.Database, ports: int, prefix: str) -> None:
    """Commit a switch and its ``ports`` ports in one transaction, forever; print each name once committed."""
    for n in itertools.count():
        name = f"{prefix}{n}"
        with db.transaction() as txn:
            switch = txn.create(LogicalSwitch(name=name))
            for i in range(ports):
                txn.create(LogicalSwitchPort(switch=switch, name=f"{name}-p{i}"))
        say("committed", name)


def churn(db: nbdb.Database, count: int) -> None:
    """Create ``count`` switches, update each twice, delete every third; print the last revision."""
    made = [db.create(LogicalSwitch(name=f"c{i}")) for i in range(count)]
    for round in range(2):
        made = [db.update(s.replace(other_config={"round": str(round)})) for s in made]
    for switch in made[::3]:
        db.delete(switch)
    say("revision", db.list(LogicalSwitch).revision)


def hold_lock(db: nbdb.Database, name: str) -> None:
    """Take the lock ``name`` (ttl 1 s) and hold it until killed."""
    with db.lock(name, ttl=1.0, timeout=30):
        say("locked")
        time.sleep(120)


def allocate(db: nbdb.Database, count: int) -> None:
    """Allocate ``count`` ids and print them."""
    say(*(db.allocate_id("tunnel-key") for _ in range(count)))


def main() -> None:
    command, url, *args = sys.argv[1:]
    arg = args[0] if args else ""
    with nbdb.connect(url) as db:
        if command == "transactions":
            transactions(db, int(arg), args[1])
        elif command == "churn":
            churn(db, int(arg))
        elif command == "hold-lock":
            hold_lock(db, arg)
        elif command == "allocate":
            allocate(db, int(arg))
        else:
            raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
