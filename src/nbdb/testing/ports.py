"""Free loopback ports that parallel test workers do not hand out twice.

Ports are drawn at random below the kernel's ephemeral range (so that the many outgoing
connections of clients and cluster members never sit on a port a server is about to bind)
and reserved with a lock file per port in a directory shared by every process of the user.
A reservation whose owner process is gone is reclaimed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import socket
import tempfile
from pathlib import Path

__all__ = ["PortAllocator", "free_port", "is_port_free", "release_ports"]

log = logging.getLogger(__name__)

_LOW, _HIGH = 20000, 32000
_ATTEMPTS = 2000


def _reservation_dir() -> Path:
    path = Path(tempfile.gettempdir()) / f"nbdb-ports-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def is_port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Tell whether a TCP listener could bind ``host:port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _try_reserve(port: int, owner: int) -> bool:
    path = _reservation_dir() / str(port)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        try:
            holder = int(path.read_text().strip() or "0")
        except (OSError, ValueError):
            return False
        if holder and _pid_alive(holder):
            return False
        # Stale reservation from a dead process: reclaim it atomically by renaming.
        stale = path.with_name(f"{port}.stale.{os.getpid()}")
        try:
            os.rename(path, stale)
        except OSError:
            return False
        stale.unlink(missing_ok=True)
        return _try_reserve(port, owner)
    with os.fdopen(fd, "w") as fh:
        fh.write(str(owner))
    return True


def release_ports(ports: list[int] | tuple[int, ...]) -> None:
    """Drop the reservations of ``ports`` (ignores ports that are not reserved)."""
    for port in ports:
        with contextlib.suppress(OSError):
            (_reservation_dir() / str(port)).unlink()


class PortAllocator:
    """Hands out free, reserved loopback ports and remembers them for release.

    ``owner`` is the pid whose life keeps the reservations (default: this process).
    """

    def __init__(self, owner: int | None = None) -> None:
        self.owner = owner if owner is not None else os.getpid()
        self.ports: list[int] = []

    def allocate(self, host: str = "127.0.0.1") -> int:
        """Reserve and return one port that is free on ``host``."""
        rng = random.SystemRandom()
        for _ in range(_ATTEMPTS):
            port = rng.randrange(_LOW, _HIGH)
            if port in self.ports or not is_port_free(port, host):
                continue
            if not _try_reserve(port, self.owner):
                continue
            # Re-check after reserving: someone outside the harness may have bound it.
            if not is_port_free(port, host):
                release_ports([port])
                continue
            self.ports.append(port)
            log.debug("reserved port %s:%d", host, port)
            return port
        raise OSError(errno.EADDRINUSE, f"no free port found on {host} in {_LOW}-{_HIGH}")

    def transfer(self, owner: int) -> None:
        """Make ``owner`` (a pid) the holder of every port this allocator reserved."""
        self.owner = owner
        for port in self.ports:
            with contextlib.suppress(OSError):
                (_reservation_dir() / str(port)).write_text(str(owner))

    def release(self) -> None:
        """Release every port this allocator reserved."""
        release_ports(self.ports)
        self.ports.clear()


def free_port(host: str = "127.0.0.1") -> int:
    """Return a free port on ``host``, reserved for the life of this process."""
    return PortAllocator().allocate(host)
