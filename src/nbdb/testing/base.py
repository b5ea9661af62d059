"""What every test server is: members (processes on loopback ports) and a lifecycle."""

from __future__ import annotations

import abc
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

from nbdb.options import redact
from nbdb.testing.errors import HarnessError
from nbdb.testing.ports import PortAllocator, release_ports
from nbdb.testing.process import ManagedProcess, require_binary, wait_until

__all__ = ["Member", "Server"]

log = logging.getLogger(__name__)


class Member:
    """One server process of a :class:`Server`: its address, ports, files and faults.

    ``ports`` maps a role (``"client"``, ``"peer"``, ``"raft"``, ``"storage"``...) to a port;
    ``port`` is the client port. The fault helpers act on this member only.
    """

    def __init__(
        self,
        server: Server,
        name: str,
        *,
        host: str,
        ports: Mapping[str, int],
        data_dir: Path,
        process: ManagedProcess,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.server = server
        self.name = name
        self.host = host
        self.ports = dict(ports)
        self.data_dir = data_dir
        self.process = process
        self.extra: dict[str, Any] = dict(extra or {})

    def __repr__(self) -> str:
        state = "paused" if self.is_paused() else "up" if self.is_running() else "down"
        return f"<Member {self.server.kind}/{self.name} {self.address} {state}>"

    @property
    def port(self) -> int:
        """The port clients connect to."""
        return self.ports["client"]

    @property
    def address(self) -> str:
        """``host:port`` of the client port."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id, or None before the first start."""
        return self.process.pid

    @property
    def log_path(self) -> Path:
        """The file the member's stdout and stderr go to."""
        return self.process.log_path

    def is_running(self) -> bool:
        """Tell whether the process is alive (paused counts as alive)."""
        return self.process.is_running()

    def is_paused(self) -> bool:
        """Tell whether the process is frozen by :meth:`pause`."""
        return self.process.is_paused()

    def kill(self) -> None:
        """Kill the member with SIGKILL (a crash: no shutdown, no flush)."""
        log.info("killing %s/%s (pid %s)", self.server.kind, self.name, self.pid)
        self.process.kill()

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the member gracefully (SIGTERM, then SIGKILL after ``timeout``)."""
        log.info("stopping %s/%s (pid %s)", self.server.kind, self.name, self.pid)
        self.process.terminate(timeout)

    def restart(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Start the member again with the same data directory, ports and options.

        A running member is stopped first. With ``wait``, return once it is ready again.
        """
        if self.is_running():
            self.stop()
        log.info("restarting %s/%s", self.server.kind, self.name)
        self.process.start()
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait (bounded) until this member answers its readiness probe."""
        limit = timeout if timeout is not None else self.server.timeout
        wait_until(
            lambda: self.server.member_ready(self),
            limit,
            f"{self.server.kind} member {self.name} at {self.address} to be ready",
            interval=0.1,
            process=self.process,
        )

    def pause(self) -> None:
        """Freeze the member with SIGSTOP: connections stay open but nothing answers."""
        log.info("pausing %s/%s (pid %s)", self.server.kind, self.name, self.pid)
        self.process.pause()

    def resume(self) -> None:
        """Continue a paused member with SIGCONT."""
        log.info("resuming %s/%s (pid %s)", self.server.kind, self.name, self.pid)
        self.process.resume()

    def info(self) -> dict[str, Any]:
        """Raw fields for tests that talk to the member directly."""
        return {
            "name": self.name,
            "host": self.host,
            "port": self.port,
            "ports": dict(self.ports),
            "address": self.address,
            "pid": self.pid,
            "running": self.is_running(),
            "data_dir": str(self.data_dir),
            "log": str(self.log_path),
            **{k: v for k, v in self.extra.items() if not k.startswith("_")},
        }

    def to_state(self) -> dict[str, Any]:
        """JSON-able form, see :meth:`Server.to_state`."""
        return {
            "name": self.name,
            "host": self.host,
            "ports": self.ports,
            "data_dir": str(self.data_dir),
            "extra": self.extra,
            "process": self.process.to_state(),
        }


class Server(abc.ABC):
    """A running server of one kind, single or clustered, owned by the caller.

    Use as a context manager or call :meth:`start` and :meth:`stop`. Everything a server
    writes lives in ``base_dir`` (a fresh temporary directory by default), which
    :meth:`stop` removes together with every process and port reservation.

    Subclasses set ``kind`` and ``binaries`` and implement :meth:`_prepare`,
    :meth:`member_ready` and :attr:`url`.
    """

    kind: ClassVar[str]
    #: (executable, Debian package) pairs the server needs.
    binaries: ClassVar[tuple[tuple[str, str], ...]] = ()
    default_timeout: ClassVar[float] = 30.0
    #: Constructor options saved in the state file (besides the common ones).
    option_names: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *,
        members: int = 1,
        base_dir: Path | str | None = None,
        timeout: float | None = None,
        die_with_parent: bool = True,
        keep_files: bool = False,
    ) -> None:
        if members < 1:
            raise ValueError("members must be >= 1")
        self.size = members
        self.base_dir: Path | None = Path(base_dir) if base_dir is not None else None
        self.timeout = timeout if timeout is not None else self.default_timeout
        self.die_with_parent = die_with_parent
        self.keep_files = keep_files
        self.members: list[Member] = []
        self._ports = PortAllocator()
        self._started = False

    # -- subclass hooks -------------------------------------------------------------------

    @abc.abstractmethod
    def _prepare(self) -> None:
        """Allocate ports, write configuration and data files, create :attr:`members`."""

    @abc.abstractmethod
    def member_ready(self, member: Member) -> bool:
        """One readiness probe of ``member``: True when it really serves clients."""

    def ready(self) -> bool:
        """One readiness probe of the whole server (default: every member is ready)."""
        return all(self.member_ready(m) for m in self.members)

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The nbdb URL of the server (may contain credentials: do not log it)."""

    def leader(self) -> Member:
        """The member that currently leads (the only one for a single server)."""
        if len(self.members) == 1:
            return self.members[0]
        raise HarnessError(f"{self.kind} has no leader")

    def _start_members(self) -> None:
        for member in self.members:
            member.process.start()

    def _after_ready(self) -> None:  # noqa: B027 - optional hook
        """Hook run once the server is ready for the first time."""

    def _extra_info(self) -> dict[str, Any]:
        return {}

    # -- lifecycle ------------------------------------------------------------------------

    @classmethod
    def check_installed(cls) -> None:
        """Raise :class:`ServerNotInstalledError` naming what is missing, if anything is."""
        for binary, package in cls.binaries:
            require_binary(binary, package)

    def start(self) -> Self:
        """Start every member and wait until the server is ready; return ``self``."""
        if self._started:
            raise HarnessError(f"{self!r} already started")
        self.check_installed()
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix=f"nbdb-{self.kind}-"))
        else:
            self.base_dir.mkdir(parents=True, exist_ok=True)
        self._started = True
        began = time.monotonic()
        try:
            self._prepare()
            self._start_members()
            self.wait_ready()
            self._after_ready()
        except BaseException:
            self.stop()
            raise
        log.info("%s ready in %.1fs: %s", self.kind, time.monotonic() - began, self.describe())
        return self

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait (bounded) until the whole server answers its readiness probe."""
        limit = timeout if timeout is not None else self.timeout
        deadline = time.monotonic() + limit
        for member in self.members:
            if member.is_running():
                member.wait_ready(max(0.1, deadline - time.monotonic()))
        wait_until(self.ready, max(0.1, deadline - time.monotonic()), f"{self.kind} to be ready")

    def processes(self) -> list[Member]:
        """Every process of the server: its members, and those that are not (OVSDB's relays)."""
        return list(self.members)

    def stop_all(self, timeout: float = 20.0) -> None:
        """Stop every process of the server at once, gracefully: a whole-server outage.

        :meth:`restart_all` ends it; the files and ports stay (unlike :meth:`stop`).
        """
        failed: list[HarnessError] = []

        def stop(member: Member) -> None:
            try:
                member.stop(timeout)
            except HarnessError as exc:
                failed.append(exc)

        threads = [threading.Thread(target=stop, args=(m,), daemon=True) for m in self.processes()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout + 10)
        if failed or any(t.is_alive() for t in threads):
            raise HarnessError(f"could not stop every {self.kind} process: {failed or 'a stop hung'}")

    def restart_all(self, first: Member | None = None, *, wait: bool = True, timeout: float | None = None) -> None:
        """Start every process that is down again: the end of a whole-server outage (:meth:`stop_all`).

        Members start one after the other from this thread (a member's process dies with the
        thread that started it: see :class:`~nbdb.testing.process.ManagedProcess`), ``first``
        first (the member that led before the outage); with ``wait``, return once the server
        is ready.
        """
        for member in self._restart_order(first):
            if not member.is_running():
                member.restart(wait=False, timeout=timeout)
        if wait:
            self.wait_ready(timeout)

    def _restart_order(self, first: Member | None) -> list[Member]:
        """The order :meth:`restart_all` starts the processes in."""
        return ([first] if first is not None else []) + [m for m in self.processes() if m is not first]

    def stop(self) -> None:
        """Stop every member, release the ports and remove ``base_dir``.

        The processes are killed outright when their files are removed anyway (faster,
        especially for Cassandra); with ``keep_files`` they are stopped gracefully.
        """
        for member in self.members:
            try:
                if self.keep_files:
                    member.process.terminate(timeout=20.0)
                else:
                    member.process.kill()
            except HarnessError:
                log.exception("could not stop %s/%s", self.kind, member.name)
        self._ports.release()
        release_ports([p for m in self.members for p in m.ports.values()])
        if self.base_dir is not None and not self.keep_files:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        self._started = False

    def __enter__(self) -> Self:
        return self if self._started else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- helpers --------------------------------------------------------------------------

    def transfer_port_reservations(self, pid: int) -> None:
        """Make process ``pid`` the holder of this server's port reservations.

        Used when the server outlives the process that started it (``nbdb servers up``).
        """
        self._ports.transfer(pid)

    def _alloc(self, host: str = "127.0.0.1") -> int:
        return self._ports.allocate(host)

    def _member_dir(self, name: str) -> Path:
        assert self.base_dir is not None
        path = self.base_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _process(self, argv: list[str], member_dir: Path, env: dict[str, str] | None = None) -> ManagedProcess:
        return ManagedProcess(
            argv,
            log_path=member_dir / "server.log",
            cwd=member_dir,
            env=env,
            die_with_parent=self.die_with_parent,
        )

    def member(self, name: str) -> Member:
        """The member called ``name``."""
        for member in self.members:
            if member.name == name:
                return member
        raise KeyError(name)

    def member_at(self, host: str, port: int) -> Member:
        """The member whose client address is ``host:port``."""
        for member in self.members:
            if member.port == port and member.host == host:
                return member
        raise HarnessError(f"no {self.kind} member at {host}:{port}")

    def followers(self) -> list[Member]:
        """Every member but the current leader."""
        lead = self.leader()
        return [m for m in self.members if m is not lead]

    @property
    def host(self) -> str:
        """Host of the first member."""
        return self.members[0].host

    @property
    def port(self) -> int:
        """Client port of the first member."""
        return self.members[0].port

    @property
    def ports(self) -> list[int]:
        """Client ports of every member."""
        return [m.port for m in self.members]

    def describe(self) -> str:
        """The URL with any password masked, for logs and ``repr``."""
        return redact(self.url) if self.members else f"{self.kind} (not started)"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe() if self._started else 'stopped'}>"

    def info(self) -> dict[str, Any]:
        """Raw fields: url, host, ports, per-member details and kind-specific extras."""
        return {
            "kind": self.kind,
            "url": self.url,
            "host": self.host,
            "port": self.port,
            "ports": self.ports,
            "base_dir": str(self.base_dir),
            "members": [m.info() for m in self.members],
            **self._extra_info(),
        }

    def options(self) -> dict[str, Any]:
        """The constructor options, as saved in the state file."""
        return {
            "members": self.size,
            "timeout": self.timeout,
            **{name: getattr(self, name) for name in self.option_names},
        }

    def to_state(self) -> dict[str, Any]:
        """JSON-able description from which another process can :meth:`from_state` it."""
        return {
            "kind": self.kind,
            "options": self.options(),
            "base_dir": str(self.base_dir),
            "keep_files": self.keep_files,
            "members": [m.to_state() for m in self.members],
            "created": time.time(),
            "creator_pid": os.getpid(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Self:
        """Rebuild a handle on a server started elsewhere (see :meth:`to_state`)."""
        server = cls(
            **state["options"],
            base_dir=state["base_dir"],
            die_with_parent=False,
            keep_files=state.get("keep_files", False),
        )
        for item in state["members"]:
            server.members.append(
                Member(
                    server,
                    item["name"],
                    host=item["host"],
                    ports=item["ports"],
                    data_dir=Path(item["data_dir"]),
                    process=ManagedProcess.from_state(item["process"]),
                    extra=item.get("extra"),
                )
            )
        server._started = True
        return server
