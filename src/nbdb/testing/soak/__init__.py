"""``nbdb soak``: the contract held for minutes under member kills, measured.

Writer processes move money between accounts in transactions and create uniquely named
objects; one watcher process follows everything from a revision; every few seconds a
member of a real cluster (the etcd or OVSDB raft leader, the Redis Sentinel master, a
Cassandra node) is killed and brought back. The report counts double applies, lost
acknowledged writes, skipped, duplicate and torn changes, outcome-unknown commits, and the
longest writer and watcher stalls after a kill. See ``docs/faults.md``.
"""

from __future__ import annotations

from nbdb.testing.soak.report import Kill, SoakReport, build_report
from nbdb.testing.soak.runner import SOAK_KINDS, SoakConfig, run_soak

__all__ = ["SOAK_KINDS", "Kill", "SoakConfig", "SoakReport", "build_report", "run_soak"]
