"""Redis: a single server (password, ACL user, TLS, append-only file) or Sentinel."""

from __future__ import annotations

import logging
import re
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from nbdb.testing.base import Member, Server
from nbdb.testing.errors import HarnessError
from nbdb.testing.probes import RespError, resp_command
from nbdb.testing.process import find_binary, log_tail, wait_until
from nbdb.testing.tls import TlsFiles, make_tls_files

__all__ = ["RedisSentinel", "RedisServer", "SentinelDataMember"]

log = logging.getLogger(__name__)


class _RedisBase(Server):
    binaries = (("redis-server", "redis-server"),)
    default_timeout = 30.0
    option_names: ClassVar[tuple[str, ...]] = (
        "password",
        "username",
        "tls",
        "tls_client_auth",
        "appendonly",
    )

    def __init__(
        self,
        *,
        password: str | None = None,
        username: str | None = None,
        tls: bool = False,
        tls_client_auth: bool = False,
        appendonly: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if username is not None and password is None:
            raise ValueError("an ACL username needs a password")
        self.password = password
        self.username = username
        self.tls = tls or tls_client_auth
        self.tls_client_auth = tls_client_auth
        self.appendonly = appendonly

    @property
    def tls_files(self) -> TlsFiles | None:
        """The CA and certificates of a TLS server (None without TLS)."""
        if not self.tls or self.base_dir is None:
            return None
        return TlsFiles.in_directory(self.base_dir / "tls")

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client SSL context trusting the test CA (None without TLS)."""
        files = self.tls_files
        if files is None:
            return None
        return files.client_context(with_client_cert=self.tls_client_auth)

    def _make_tls(self) -> None:
        if self.tls:
            assert self.base_dir is not None
            make_tls_files(self.base_dir / "tls")

    def _common_config(self, port: int, member_dir: Path) -> list[str]:
        lines = [
            "bind 127.0.0.1",
            f"dir {member_dir}",
            "daemonize no",
            'logfile ""',
            "loglevel notice",
            "protected-mode no",
            "appendfsync everysec",
        ]
        if self.tls:
            files = self.tls_files
            assert files is not None
            lines += [
                "port 0",
                f"tls-port {port}",
                f"tls-cert-file {files.server_cert}",
                f"tls-key-file {files.server_key}",
                f"tls-ca-cert-file {files.ca_cert}",
                # Replication and sentinel links present the client certificate.
                f"tls-client-cert-file {files.client_cert}",
                f"tls-client-key-file {files.client_key}",
                f"tls-auth-clients {'yes' if self.tls_client_auth else 'no'}",
                "tls-replication yes",
            ]
        else:
            lines.append(f"port {port}")
        return lines

    def _data_config(self, port: int, member_dir: Path) -> list[str]:
        lines = self._common_config(port, member_dir)
        lines += [
            f"appendonly {'yes' if self.appendonly else 'no'}",
            # Without appendonly the server is a cache: no RDB snapshots either, so restarts
            # start empty (what "not durable" means in the tests).
            'save ""' if not self.appendonly else "save 60 1",
        ]
        if self.username is not None:
            lines += [
                "user default off",
                f"user {self.username} on >{self.password} ~* &* +@all",
                f"masteruser {self.username}",
                f"masterauth {self.password}",
            ]
        elif self.password is not None:
            lines += [f"requirepass {self.password}", f"masterauth {self.password}"]
        return lines

    def _redis_argv(self, config: Path, *extra: str) -> list[str]:
        binary = find_binary("redis-server")
        assert binary is not None
        return [binary, str(config), *extra]

    def command(self, member: Member, *args: str | int, timeout: float = 2.0) -> Any:
        """Send one command to ``member`` (authenticating to data members)."""
        auth = member.extra.get("role") != "sentinel"
        return resp_command(
            member.host,
            member.port,
            *args,
            username=self.username if auth else None,
            password=self.password if auth else None,
            ssl_context=self.ssl_context(),
            timeout=timeout,
        )

    def _credentials(self) -> str:
        if self.password is None:
            return ""
        user = quote(self.username, safe="") if self.username else ""
        return f"{user}:{quote(self.password, safe='')}@"

    def _query(self) -> str:
        files = self.tls_files
        if files is None:
            return ""
        query = f"?ssl_ca_certs={quote(str(files.ca_cert))}"
        if self.tls_client_auth:
            query += f"&ssl_certfile={quote(str(files.client_cert))}&ssl_keyfile={quote(str(files.client_key))}"
        return query

    def _extra_info(self) -> dict[str, Any]:
        files = self.tls_files
        return {
            "username": self.username,
            "password": self.password,
            "tls": files.to_state() if files else None,
            "appendonly": self.appendonly,
        }


class RedisServer(_RedisBase):
    """A standalone Redis server: ``redis://127.0.0.1:PORT/0``.

    Options: ``password`` (``requirepass``), ``username`` (an ACL user with that password;
    the default user is then disabled), ``tls`` (TLS only, URL scheme ``rediss``, the CA path
    in the ``ssl_ca_certs`` query parameter), ``tls_client_auth`` (clients must present the
    client certificate) and ``appendonly`` (durable: AOF with fsync every second).
    """

    kind = "redis"
    default_timeout = 20.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.size != 1:
            raise ValueError("a standalone Redis has one member; use RedisSentinel for more")

    def _prepare(self) -> None:
        self._make_tls()
        port = self._alloc()
        member_dir = self._member_dir("redis1")
        config = member_dir / "redis.conf"
        config.write_text("\n".join(self._data_config(port, member_dir)) + "\n")
        self.members.append(
            Member(
                self,
                "redis1",
                host="127.0.0.1",
                ports={"client": port},
                data_dir=member_dir,
                process=self._process(self._redis_argv(config), member_dir),
                extra={"role": "master", "config": str(config)},
            )
        )

    def member_ready(self, member: Member) -> bool:
        return bool(self.command(member, "PING") == "PONG")

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self._credentials()}{self.host}:{self.port}/0{self._query()}"


_REPLICA_PRIORITY = 100
"""Redis's default ``replica-priority``: a replica Sentinel may promote."""

_REJOIN_KEYS = ("replicaof", "slaveof", "replica-priority", "slave-priority")

_INFO_PERIOD_MS = 1000
"""How often the harness's sentinels refresh a member's INFO (Sentinel's default: 10 s)."""

_INFO_VALIDITY_MS = 5000
"""The INFO age Sentinel still promotes a replica with once the master is down (5 pings)."""


def sentinel_record(reply: Sequence[Any]) -> dict[str, str]:
    """One ``SENTINEL MASTER`` / ``SENTINEL REPLICAS`` entry (field, value, field, ...) as a dict."""
    return {str(key): str(value) for key, value in zip(reply[::2], reply[1::2], strict=True)}


_EVENT = re.compile(r"^\d+:X (\d\d \w{3} \d{4} \d\d:\d\d:\d\d\.\d{3}) [#*] ([+-][\w-]+)")


def last_try_since_switch(log_lines: Sequence[str]) -> float | None:
    """When a sentinel last tried or voted for a failover of its current master (epoch seconds), or None.

    From its log: a ``+try-failover`` or ``+vote-for-leader`` after its last ``+switch-master``
    (which clears the time of the last try: a new master may fail over at once). Sentinel then
    starts no failover of that master for twice the failover-timeout.
    """
    last: float | None = None
    for line in log_lines:
        event = _EVENT.match(line)
        if event is None:
            continue
        at, name = event.groups()
        if name == "+switch-master":
            last = None
        elif name in ("+try-failover", "+vote-for-leader"):
            seconds, millis = at.rsplit(".", 1)
            last = time.mktime(time.strptime(seconds, "%d %b %Y %H:%M:%S")) + int(millis) / 1000
    return last


def replica_refusal(record: Mapping[str, str]) -> str | None:
    """Why a sentinel would not promote this replica were its master to die now, or None.

    ``record`` is the replica's ``SENTINEL REPLICAS`` entry: Sentinel's own view, from the
    replica's last INFO, not the replica's (sentinel.c, ``sentinelSelectSlave``): flagged down
    or disconnected, no ping answered or INFO read for 5 s, or ``replica-priority 0``. The
    harness also wants its replication link up (in sync): the cluster whole.
    """
    name = record.get("name", "?")
    flags = record.get("flags", "")
    if flags != "slave":
        return f"{name} flagged {flags}"
    if record.get("master-link-status") != "ok":
        return f"{name} link to its master {record.get('master-link-status')}"
    if record.get("slave-priority") == "0":
        return f"{name} replica-priority 0 (as of its last INFO)"
    for field in ("last-ok-ping-reply", "info-refresh"):
        age = int(record.get(field, "-1"))
        if not 0 <= age <= _INFO_VALIDITY_MS:
            return f"{name} {field} {age} ms"
    return None


class SentinelDataMember(Member):
    """A master or replica under Sentinel: it restarts as a replica of the current master.

    A node restarted on its own comes back as what its configuration file says, and the
    file of a killed master still says "master": it returns as a second master, with
    only what it had persisted (nothing without ``appendonly``). Sentinel converts it to
    a replica only after several seconds; meanwhile it lists it as a replica of the new
    master and, choosing whom to promote, does not look at the role a replica reports.
    So a failover in that window (a spurious one on a loaded machine is enough) promotes
    it, and the new master resyncs from it: every acknowledged write is gone. Redis
    documents this ("Safety of replication when master has persistence turned off": do
    not let such a node restart by itself). The harness restarts a data node the way a
    careful supervisor does instead: as a replica of the master a majority of the
    sentinels name, with ``replica-priority 0`` (never promoted) until it is in sync.
    """

    server: RedisSentinel
    _rejoining = False

    def restart(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Start the member again, as a replica of the current master (see the class).

        The master itself, without persistence and with a replica running, is brought back
        only after the sentinels elected another master: it would otherwise return empty
        and its replicas would resync from it.
        """
        if self.is_running():
            self.stop()
        self._rejoining = self.server.prepare_rejoin(self, timeout)
        super().restart(wait=wait, timeout=timeout)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the member serves (a replica: in sync); then it may be promoted again."""
        super().wait_ready(timeout)
        if self._rejoining:
            self.server.command(self, "CONFIG", "SET", "replica-priority", _REPLICA_PRIORITY)
            self._rejoining = False


class RedisSentinel(_RedisBase):
    """Redis with Sentinel: one master, ``replicas`` replicas and ``sentinels`` sentinels.

    URL: ``redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/SERVICE`` (sentinel
    addresses; credentials in the URL are those of the data nodes; sentinels themselves
    need none). :meth:`leader` is the current master as the sentinels report it. A data
    member's :meth:`~SentinelDataMember.restart` brings it back as a replica of the current
    master, never as a second (empty) master.
    """

    kind = "redis-sentinel"
    default_timeout = 40.0
    option_names = (*_RedisBase.option_names, "replicas", "service_name", "down_after_ms")

    def __init__(
        self,
        *,
        replicas: int = 1,
        sentinels: int | None = None,
        service_name: str = "nbdb",
        down_after_ms: int = 1000,
        members: int = 3,
        **kwargs: Any,
    ) -> None:
        # ``members`` is the number of sentinels (what the URL lists).
        super().__init__(members=sentinels if sentinels is not None else members, **kwargs)
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        self.replicas = replicas
        self.service_name = service_name
        self.down_after_ms = down_after_ms

    @property
    def failover_timeout_ms(self) -> int:
        """The sentinels' ``failover-timeout``: no new try at a master within twice it of the last."""
        return max(5000, 4 * self.down_after_ms)

    @property
    def data_members(self) -> list[Member]:
        """The master and replicas (as started; roles change on failover)."""
        return [m for m in self.members if m.extra.get("role") != "sentinel"]

    @property
    def sentinel_members(self) -> list[Member]:
        """The sentinels."""
        return [m for m in self.members if m.extra.get("role") == "sentinel"]

    @property
    def quorum(self) -> int:
        """Sentinels that must agree a master is down."""
        return self.size // 2 + 1

    def _prepare(self) -> None:
        self._make_tls()
        master_port = self._alloc()
        for index in range(self.replicas + 1):
            name = "master" if index == 0 else f"replica{index}"
            port = master_port if index == 0 else self._alloc()
            member_dir = self._member_dir(name)
            lines = self._data_config(port, member_dir)
            if index > 0:
                lines.append(f"replicaof 127.0.0.1 {master_port}")
            config = member_dir / "redis.conf"
            config.write_text("\n".join(lines) + "\n")
            self.members.append(
                SentinelDataMember(
                    self,
                    name,
                    host="127.0.0.1",
                    ports={"client": port},
                    data_dir=member_dir,
                    process=self._process(self._redis_argv(config), member_dir),
                    extra={"role": "master" if index == 0 else "replica", "config": str(config)},
                )
            )
        svc = self.service_name
        for index in range(1, self.size + 1):
            name = f"sentinel{index}"
            port = self._alloc()
            member_dir = self._member_dir(name)
            lines = self._common_config(port, member_dir)
            lines += [
                f"sentinel monitor {svc} 127.0.0.1 {master_port} {self.quorum}",
                f"sentinel down-after-milliseconds {svc} {self.down_after_ms}",
                f"sentinel failover-timeout {svc} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {svc} 1",
            ]
            if self.username is not None:
                lines.append(f"sentinel auth-user {svc} {self.username}")
            if self.password is not None:
                lines.append(f"sentinel auth-pass {svc} {self.password}")
            config = member_dir / "sentinel.conf"
            config.write_text("\n".join(lines) + "\n")
            self.members.append(
                Member(
                    self,
                    name,
                    host="127.0.0.1",
                    ports={"client": port},
                    data_dir=member_dir,
                    process=self._process(self._redis_argv(config, "--sentinel"), member_dir),
                    extra={"role": "sentinel", "config": str(config)},
                )
            )

    def member_ready(self, member: Member) -> bool:
        if self.command(member, "PING") != "PONG":
            return False
        role = member.extra.get("role")
        if role == "sentinel":
            if self.command(member, "SENTINEL", "get-master-addr-by-name", self.service_name) is None:
                return False
            self._tune(member)
            return True
        info = self.command(member, "INFO", "replication")
        if "role:slave" in info:
            return "master_link_status:up" in info
        return True

    def ready(self) -> bool:
        if not all(self.member_ready(m) for m in self.members):
            return False
        # Every sentinel must know the replicas and the other sentinels, or a failover
        # test could start before the sentinels can agree on anything.
        svc = self.service_name
        for sentinel in self.sentinel_members:
            replicas = self.command(sentinel, "SENTINEL", "replicas", svc)
            peers = self.command(sentinel, "SENTINEL", "sentinels", svc)
            if len(replicas) < self.replicas or len(peers) < self.size - 1:
                return False
        return True

    def _tune(self, sentinel: Member) -> None:
        """Have ``sentinel`` read each member's INFO every second instead of every 10 s.

        Sentinel decides whom it may promote from the replicas' last INFO: a rejoined member
        made promotable again (``replica-priority``) is only seen so at the next one. A
        runtime setting (``SENTINEL DEBUG``, Redis 7.0): set again whenever a sentinel is
        found ready, as after a restart. An older Redis keeps 10 s.
        """
        try:
            self.command(sentinel, "SENTINEL", "DEBUG", "INFO-PERIOD", _INFO_PERIOD_MS)
        except RespError as exc:
            log.debug("%s keeps its INFO period: %s", sentinel.name, exc)

    def _live_sentinels(self) -> list[Member]:
        return [s for s in self.sentinel_members if s.is_running() and not s.is_paused()]

    def _view(self, sentinel: Member) -> tuple[dict[str, str], list[dict[str, str]]]:
        """``sentinel``'s record of the master and of each replica (``SENTINEL MASTER`` / ``REPLICAS``)."""
        svc = self.service_name
        master = sentinel_record(self.command(sentinel, "SENTINEL", "MASTER", svc))
        return master, [sentinel_record(r) for r in self.command(sentinel, "SENTINEL", "REPLICAS", svc)]

    def failover_blockers(self, master: Member) -> list[str]:
        """Why a failover might not follow ``master``'s death now, as the sentinels see it; [] if none.

        Each running sentinel must name ``master``, flag it only ``master``, know the other
        sentinels, not be in TILT, and see every other running data member as a replica it
        may promote (:func:`replica_refusal`). Whichever sentinel wins the election then has
        a replica to promote: one that finds none aborts, and Sentinel waits twice the
        failover-timeout before it tries again. Nor may a sentinel have tried or voted for a
        failover of ``master`` within that time (:func:`last_try_since_switch`): on a loaded
        machine a sentinel can flag a just-promoted master down, try and abort, and no
        failover of it follows a kill until the time is up.
        """
        expected = {m.address for m in self.data_members if m is not master and m.is_running()}
        blockers: list[str] = []
        for sentinel in self._live_sentinels():
            try:
                info = str(self.command(sentinel, "INFO", "sentinel"))
                view, replicas = self._view(sentinel)
            except (OSError, RespError) as exc:
                blockers.append(f"{sentinel.name}: {exc}")
                continue
            reasons = []
            if "sentinel_tilt:0" not in info:
                reasons.append("in TILT")
            if f"{view.get('ip')}:{view.get('port')}" != master.address or view.get("flags") != "master":
                reasons.append(f"master {view.get('ip')}:{view.get('port')} flagged {view.get('flags')}")
            if view.get("num-other-sentinels") != str(self.size - 1):
                reasons.append(f"knows {view.get('num-other-sentinels')} other sentinels")
            tried = last_try_since_switch(log_tail(sentinel.log_path, 400).splitlines())
            if tried is not None and time.time() < tried + 2 * self.failover_timeout_ms / 1000 + 1:
                reasons.append(
                    f"tried or voted for a failover of it at {time.strftime('%H:%M:%S', time.localtime(tried))}"
                )
            seen = {r.get("name") for r in replicas}
            reasons += [f"{address} not listed" for address in sorted(expected - seen)]
            reasons += [why for r in replicas if r.get("name") in expected and (why := replica_refusal(r))]
            if reasons:
                blockers.append(f"{sentinel.name}: {', '.join(reasons)}")
        return blockers

    def describe_sentinels(self, lines: int = 8) -> str:
        """Each sentinel's view of the master and replicas and its last events (a failure's diagnosis)."""
        parts = []
        for sentinel in self.sentinel_members:
            try:
                view, replicas = self._view(sentinel)
                state = f"master {view.get('name')} at {view.get('ip')}:{view.get('port')} {view.get('flags')}; " + (
                    "; ".join(
                        f"replica {r.get('name')} {r.get('flags')} link {r.get('master-link-status')} "
                        f"priority {r.get('slave-priority')} info {r.get('info-refresh')} ms ago"
                        for r in replicas
                    )
                    or "no replica"
                )
            except (OSError, RespError) as exc:
                state = f"no answer ({exc})"
            events = [line for line in log_tail(sentinel.log_path, 200).splitlines() if " # " in line or " * +" in line]
            parts.append(f"{sentinel.name}: {state}\n    " + "\n    ".join(events[-lines:]))
        return "\n  ".join(parts)

    def _master_views(self) -> tuple[list[tuple[str, int]], list[str]]:
        """The master's address as each running sentinel names it, and the sentinels that did not answer."""
        views: list[tuple[str, int]] = []
        errors: list[str] = []
        for sentinel in self._live_sentinels():
            try:
                reply = self.command(sentinel, "SENTINEL", "get-master-addr-by-name", self.service_name)
            except (OSError, RespError) as exc:
                errors.append(f"{sentinel.name}: {exc}")
                continue
            if reply:
                views.append((str(reply[0]), int(reply[1])))
        return views, errors

    def master_address(self) -> tuple[str, int]:
        """``(host, port)`` of the master according to the first sentinel that answers."""
        views, errors = self._master_views()
        if not views:
            raise HarnessError(f"no sentinel reports a master for {self.service_name!r}: {errors}")
        return views[0]

    def leader(self) -> Member:
        """The data member that the sentinels currently report as master."""
        host, port = self.master_address()
        return self.member_at(host, port)

    def agreed_master(self) -> Member | None:
        """The data member a majority of the sentinels name as master, or None."""
        views, _ = self._master_views()
        for host, port in set(views):
            if views.count((host, port)) >= self.quorum:
                return self.member_at(host, port)
        return None

    def failover(self, timeout: float | None = None) -> Member:
        """Make the sentinels fail over now (``SENTINEL FAILOVER``); the new master.

        Retried while Sentinel has no replica it may promote yet (``NOGOODSLAVE``: e.g. a
        restarted member not in sync, or not yet seen in sync) or another failover runs.
        """
        before = self.agreed_master()
        sentinel = next(m for m in self.sentinel_members if m.is_running() and not m.is_paused())

        def started() -> bool:
            try:
                return bool(self.command(sentinel, "SENTINEL", "FAILOVER", self.service_name) == "OK")
            except RespError as exc:
                log.debug("SENTINEL FAILOVER refused: %s", exc)
                return False

        limit = timeout if timeout is not None else self.timeout
        wait_until(started, limit, "Sentinel to accept a failover", interval=0.5)
        master = self._await_master(lambda m: m not in (before, None), limit, "the failover to end")
        assert master is not None
        return master

    def _await_master(self, accept: Callable[[Member | None], bool], limit: float, what: str) -> Member | None:
        """Wait (bounded) until :meth:`agreed_master` gives a master ``accept`` takes; that master."""
        found: list[Member | None] = [None]

        def accepted() -> bool:
            found[0] = self.agreed_master()
            return accept(found[0])

        wait_until(accepted, limit, what, interval=0.2)
        return found[0]

    def prepare_rejoin(self, member: Member, timeout: float | None = None) -> bool:
        """Write ``member``'s configuration so that it starts as a replica of the current master.

        True if it will start as a replica (unpromotable until it is in sync, see
        :class:`SentinelDataMember`); False if it starts as the master (it is the one the
        sentinels name and it keeps its data, or no other data member is running).
        """
        master: Member | None = None
        if any(m is not member and m.is_running() for m in self.data_members):
            # Wait for a master a majority agrees on; if it is this member itself (no failover
            # yet) and it has no persistence, wait for the failover: back now, it would be an
            # empty master that its replicas copy.
            master = self._await_master(
                lambda m: m is not None and (m is not member or self.appendonly),
                timeout if timeout is not None else self.timeout,
                f"the sentinels to agree on a master {member.name} can rejoin",
            )
        config = Path(member.extra["config"])
        lines = [line for line in config.read_text().splitlines() if not line.startswith(_REJOIN_KEYS)]
        rejoin = master is not None and master is not member
        if rejoin:
            assert master is not None
            lines += [f"replicaof {master.host} {master.port}", "replica-priority 0"]
            log.info("%s restarts as a replica of %s", member.name, master.name)
        config.write_text("\n".join(lines) + "\n")
        return rejoin

    def _restart_order(self, first: Member | None) -> list[Member]:
        # The sentinels first: a data member other than the first restarts as a replica of the
        # master they agree on (SentinelDataMember.restart).
        data = super()._restart_order(first)
        return self.sentinel_members + [m for m in data if m.extra.get("role") != "sentinel"]

    def master(self) -> Member:
        """Alias of :meth:`leader`."""
        return self.leader()

    @property
    def url(self) -> str:
        hosts = ",".join(m.address for m in self.sentinel_members)
        query = self._query()
        return f"redis+sentinel://{self._credentials()}{hosts}/{self.service_name}{query}"

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> RedisSentinel:
        """Rebuild a handle on a Sentinel setup started elsewhere (data members restart as replicas)."""
        server = super().from_state(state)
        server.members = [
            SentinelDataMember(
                server,
                m.name,
                host=m.host,
                ports=m.ports,
                data_dir=m.data_dir,
                process=m.process,
                extra=m.extra,
            )
            if m.extra.get("role") != "sentinel"
            else m
            for m in server.members
        ]
        return server

    def _extra_info(self) -> dict[str, Any]:
        return {
            **super()._extra_info(),
            "service_name": self.service_name,
            "sentinels": [m.address for m in self.sentinel_members],
            "master": self.data_members[0].address,
        }
