"""Running a soak: a real cluster, writer and watcher processes, and a member killed every few seconds.

:func:`run_soak` starts the server with the harness, starts one watcher process that
follows everything from its own start revision, opens the accounts, starts the writer
processes, and kills a member (the leader, where there is one) every ``kill_every``
seconds, bringing it back after ``down`` seconds. When the time is up it waits for the
writers (every operation is bounded), lets the watcher catch up, reads the final state
and hands everything to :func:`~nbdb.testing.soak.report.build_report`.
"""

from __future__ import annotations

import logging
import multiprocessing
import random
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import nbdb
from nbdb.testing.base import Member, Server
from nbdb.testing.errors import HarnessError
from nbdb.testing.process import wait_until
from nbdb.testing.redis import RedisSentinel
from nbdb.testing.servers import start_server
from nbdb.testing.soak.agents import WriterPlan, run_watcher, run_writer, when_available
from nbdb.testing.soak.report import Kill, SoakReport, build_report, read_lines
from nbdb.testing.workload import ACCOUNT, CREATED, balance_of, open_accounts

__all__ = ["SOAK_KINDS", "SoakConfig", "run_soak"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Server kinds a soak runs on, and what "members" means for each.
SOAK_KINDS = {
    "etcd": "etcd members (the leader is killed)",
    "ovsdb": "ovsdb-server raft members, OVN Northbound (the leader is killed)",
    "redis-sentinel": (
        "sentinels, over a master and --replicas replicas (1); commits wait for --wait-replicas of them (1)"
        " (the master is killed; it returns as a replica)"
    ),
    "redis": "must be 1: a durable (appendonly) server, killed and restarted",
    "cassandra": "Cassandra nodes, replication factor min(3, nodes) (a random node is killed)",
    "hazelcast": (
        "Hazelcast members, one synchronous backup per partition (a random member is killed; it returns"
        " empty, and the next kill waits until the cluster is migration-safe again)"
    ),
}

#: Kinds without a leader to kill: a random running member dies instead.
_LEADERLESS = ("cassandra", "hazelcast")

_JOIN_GRACE = 90.0  # writers finish their last operation (each bounded by 30 s of retries)
_CATCH_UP = 120.0  # the watcher delivers what was committed


@dataclass(frozen=True)
class SoakConfig:
    """What a soak runs: see ``nbdb soak --help``."""

    kind: str
    members: int = 3
    seconds: float = 300.0
    kill_every: float = 5.0
    down: float | None = None
    """Seconds a killed member stays down (default: 1, or until Sentinel has failed over)."""
    writers: int = 4
    accounts: int = 8
    opening: int = 100_000
    create_every: int = 4
    seed: int = 1
    max_stall: float | None = None
    """Fail the run when writers or the watcher stall longer than this after a kill (None: only report)."""
    replicas: int = 1
    """redis-sentinel: replicas of the master."""
    wait_replicas: int = 1
    """redis-sentinel: replicas each commit waits for (the clients' ``wait_replicas``)."""

    def server_options(self) -> dict[str, Any]:
        """The harness options of the soak's server."""
        if self.kind not in SOAK_KINDS:
            raise ValueError(f"nbdb soak runs on {', '.join(SOAK_KINDS)}, not {self.kind!r}")
        if self.kind == "redis":
            if self.members != 1:
                raise ValueError("a standalone redis has one member; use redis-sentinel for more")
            return {"appendonly": True}
        if self.replicas != 1 or self.wait_replicas != 1:
            if self.kind != "redis-sentinel":
                raise ValueError("--replicas and --wait-replicas are for redis-sentinel")
            if not 0 <= self.wait_replicas <= self.replicas or self.replicas < 1:
                raise ValueError("redis-sentinel needs 1 or more replicas and 0 <= wait-replicas <= replicas")
        if self.kind == "redis-sentinel":
            # Durable data nodes: a restarted master reloads its data before rejoining.
            # Commits wait for wait_replicas of the replicas (see client_url).
            return {"sentinels": self.members, "replicas": self.replicas, "appendonly": True}
        return {"members": self.members}

    def client_url(self, url: str) -> str:
        """The URL the soak's clients use on a server whose own URL is ``url``.

        Redis replication is asynchronous: only a commit that a replica acknowledged
        (``wait_replicas``) can survive the failover that follows a master's death, and only
        one that every replica acknowledged is sure to: with fewer, Sentinel may promote a
        replica that lacks it (it ranks replicas by offsets up to seconds old). Without any,
        the writes the dead master had not passed on are lost. The Redis backend's page says
        so. With one replica, while the old master is down the new one has no replica:
        commits are applied but unconfirmed until it rejoins; with two, the one left confirms.
        """
        if self.kind != "redis-sentinel" or self.wait_replicas == 0:
            return url
        return f"{url}{'&' if '?' in url else '?'}wait_replicas={self.wait_replicas}"

    def title(self) -> str:
        """One line saying what ran."""
        topology = ""
        if self.kind == "redis-sentinel":
            topology = f" (master + {self.replicas} replica(s), wait_replicas={self.wait_replicas})"
        return (
            f"nbdb soak {self.kind}: {self.members} member(s){topology}, {self.seconds:.0f} s, a kill every "
            f"{self.kill_every:g} s, {self.writers} writers, {self.accounts} accounts"
        )


def run_soak(config: SoakConfig) -> SoakReport:
    """Run one soak and return its report (see the module doc)."""
    options = config.server_options()
    work = Path(tempfile.mkdtemp(prefix="nbdb-soak-"))
    try:
        with start_server(config.kind, **options) as server:
            return _Soak(config, server, work).run()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _children_ignore_interrupts() -> AbstractContextManager[None]:
    """Start processes that ignore Ctrl-C: the soak's own process handles it and ends them.

    A Ctrl-C reaches the whole process group: each writer and the watcher printed a
    KeyboardInterrupt traceback. A spawned Python keeps an ignored SIGINT ignored (it installs
    its own handler only over the default), also while it imports, before any code of ours runs.
    """
    if threading.current_thread() is not threading.main_thread():
        return nullcontext()
    return _ignoring_sigint()


@contextmanager
def _ignoring_sigint() -> Iterator[None]:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Soak:
    def __init__(self, config: SoakConfig, server: Server, work: Path) -> None:
        self.config = config
        self.server = server
        self.work = work
        self.url = config.client_url(server.url)
        self.namespace = f"soak-{uuid.uuid4().hex[:10]}"
        self.rng = random.Random(config.seed)
        self.kills: list[Kill] = []
        self.problems: list[str] = []
        self.context = multiprocessing.get_context("spawn")

    def run(self) -> SoakReport:
        config = self.config
        hard_end = time.monotonic() + config.seconds + _JOIN_GRACE + _CATCH_UP + 120
        watcher_out, done = self.work / "watcher.jsonl", self.work / "done"
        watcher = self.context.Process(
            target=run_watcher,
            args=(self.url, self.namespace, str(watcher_out), str(done), hard_end),
            name="nbdb-soak-watcher",
            daemon=True,
        )
        with _children_ignore_interrupts():
            watcher.start()

        def following() -> bool:
            if not watcher.is_alive():
                raise HarnessError(f"the soak's watcher exited with code {watcher.exitcode} before following")
            return _has_line(watcher_out, "ready")

        wait_until(following, 120, "the soak's watcher to follow", interval=0.2)
        with nbdb.connect(self.url, namespace=self.namespace) as db:
            accounts = open_accounts(db, config.accounts, config.opening)
            started = time.monotonic()
            until = started + config.seconds
            writers = [self._writer(n, accounts, until) for n in range(config.writers)]
            self._kill_until(until)
            ended = time.monotonic()
            for process in writers:
                process.join(max(1.0, until + _JOIN_GRACE - time.monotonic()))
                if process.is_alive():
                    self.problems.append(f"{process.name} still running {_JOIN_GRACE:.0f} s after the end: killed")
                    process.kill()
                elif process.exitcode:
                    self.problems.append(f"{process.name} exited with code {process.exitcode}")
            self._all_up()
            done.touch()
            watcher.join(_CATCH_UP)
            if watcher.is_alive():
                self.problems.append("the watcher did not finish catching up: killed")
                watcher.kill()
            balances = {a.name: balance_of(a) for a in when_available(lambda: db.list(ACCOUNT), time.monotonic() + 120)}
            names = [c.name for c in when_available(lambda: db.list(CREATED), time.monotonic() + 120)]
        writer_lines = [line for n in range(config.writers) for line in _read(self.work / f"writer{n}.jsonl")]
        report = build_report(
            config.title(),
            writer_lines=writer_lines,
            watcher_lines=_read(watcher_out),
            opening=dict.fromkeys(accounts, config.opening),
            balances=balances,
            created={name: names.count(name) for name in set(names)},
            kills=self.kills,
            started=started,
            ended=ended,
        )
        report.problems += self.problems
        limit = config.max_stall
        for what, stall in (("writers", report.writer_stall), ("the watcher", report.watcher_stall)):
            if limit is not None and stall is not None and stall > limit:
                report.problems.append(f"{what} stalled {stall:.1f} s after a kill (more than {limit:g} s)")
        return report

    def _writer(self, number: int, accounts: dict[str, uuid.UUID], until: float) -> Any:
        plan = WriterPlan(
            url=self.url,
            namespace=self.namespace,
            accounts={name: str(id) for name, id in accounts.items()},
            worker=f"w{number}",
            seed=self.config.seed * 1000 + number,
            until=until,
            create_every=self.config.create_every,
            out=str(self.work / f"writer{number}.jsonl"),
        )
        process = self.context.Process(target=run_writer, args=(plan,), name=f"nbdb-soak-writer{number}", daemon=True)
        with _children_ignore_interrupts():
            process.start()
        return process

    # ---------------------------------------------------------------- faults

    def _kill_until(self, until: float) -> None:
        # No kill in the last interval: each kill leaves the writers time to show their recovery.
        every = self.config.kill_every
        next_kill = time.monotonic() + every
        while True:
            if next_kill + every > until:
                time.sleep(max(0.0, until - time.monotonic()))
                return
            wait = next_kill - time.monotonic()
            time.sleep(max(0.0, wait))
            at = time.monotonic()
            self._kill_one()
            next_kill = max(at + self.config.kill_every, time.monotonic() + 0.5)

    def _victim(self) -> Member:
        server = self.server
        if isinstance(server, RedisSentinel):
            candidates = server.data_members
        else:
            candidates = list(server.members)
        if self.config.kind not in _LEADERLESS:
            try:
                return server.leader()
            except HarnessError as exc:
                log.info("soak: no leader to kill (%s); killing a random member", exc)
        running = [m for m in candidates if m.is_running()] or candidates
        return self.rng.choice(running)

    def _kill_one(self) -> None:
        victim = self._failover_ready(self.server) if isinstance(self.server, RedisSentinel) else self._victim()
        at = time.monotonic()
        victim.kill()
        down = self.config.down if self.config.down is not None else 1.0
        time.sleep(down)
        failover: float | None = None
        if isinstance(self.server, RedisSentinel):
            # Bring the old master back only once a majority of the sentinels name another one:
            # it then rejoins as a replica. One sentinel's word is not enough: back while the
            # majority still names it (a failover under way), it would restart as the master
            # with its own data, and the failover could end with two masters.
            sentinel = self.server

            def failed_over() -> bool:
                agreed = sentinel.agreed_master()
                return agreed is not None and agreed is not victim

            try:
                wait_until(failed_over, 60, "a majority of the sentinels to name a new master", interval=0.1)
                failover = time.monotonic()
            except HarnessError as exc:
                self.problems.append(
                    f"no failover after killing {victim.name}: {exc}; the sentinels:\n  {sentinel.describe_sentinels()}"
                )
        try:
            victim.restart(wait=True)
            if isinstance(self.server, RedisSentinel):
                self._rejoined(self.server, victim)
            elif self.config.kind == "hazelcast":
                self._migrated()
        except HarnessError as exc:
            self.problems.append(f"{victim.name} did not come back: {exc}")
        self.kills.append(Kill(victim.name, at, time.monotonic(), failover))
        log.info("soak: killed %s at +%.1fs", victim.name, at)

    @staticmethod
    def _rejoined(sentinel: RedisSentinel, member: Member) -> None:
        """Wait until Sentinel made the restarted old master a replica in sync with the new one.

        Until then it still says it is a master, with only the writes it had when it died;
        killing the new master meanwhile can get it promoted, and Sentinel then drops every
        write made since the first failover. That is Sentinel's hazard, not the client's:
        the soak leaves the cluster whole before the next kill, as an operator would.
        """

        def replica() -> bool:
            info = str(sentinel.command(member, "INFO", "replication"))
            return "role:slave" in info and "master_link_status:up" in info

        wait_until(replica, 60, f"{member.name} to rejoin as a replica", interval=0.5)

    def _failover_ready(self, sentinel: RedisSentinel) -> Member:
        """The master to kill, once every sentinel could fail it over at once (the cluster whole as they see it).

        A replica in sync by its own INFO is not yet one the sentinels may promote: they judge it
        by their last INFO of it, and the one elected to fail over, finding none, aborts; nor
        does a sentinel start a failover within twice the failover-timeout of a try or vote
        (RedisSentinel.failover_blockers). Killed then, the master is not replaced for seconds,
        or at all while that repeats. Past 60 s the kill goes ahead, the reasons in a problem.
        """
        blockers: list[str] = []
        agreed: list[Member | None] = [None]

        def ready() -> bool:
            agreed[0] = master = sentinel.agreed_master()
            blockers[:] = ["no master named by a majority"] if master is None else sentinel.failover_blockers(master)
            return not blockers

        try:
            wait_until(ready, 60, "the sentinels to be able to fail the master over", interval=0.2)
        except HarnessError as exc:
            self.problems.append(f"killing all the same: {exc}: {'; '.join(blockers)}")
        return agreed[0] or self._victim()

    def _migrated(self) -> None:
        """Wait until every Hazelcast member sees the whole cluster and calls it migration-safe.

        A restarted member comes back empty; until the partitions' migrations end, some
        partitions may have their only copy on one member (one backup each). Killing that member
        then loses the partition's data: two failures at once, more than one backup survives.
        The soak leaves the cluster whole (every backup made) before the next kill, as an
        operator would: it waits until each member's health says ``clusterSafe``.
        """
        wait_until(self.server.ready, 120, "the Hazelcast cluster to be migration-safe", interval=0.2)

    def _all_up(self) -> None:
        for member in self.server.members:
            if not member.is_running():
                try:
                    member.restart(wait=True)
                except HarnessError as exc:
                    self.problems.append(f"{member.name} did not come back for the final reads: {exc}")


def _has_line(path: Path, key: str) -> bool:
    return any(key in line for line in _read(path))


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        return read_lines(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
