"""One server process: start detached or tied to its parent, kill, pause, wait."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from nbdb.testing.errors import (
    INSTALL_HINT,
    ServerNotInstalledError,
    ServerStartError,
    ServerTimeoutError,
)

__all__ = ["ManagedProcess", "find_binary", "log_tail", "wait_until"]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
# Debian installs some daemons (ovsdb-server) in sbin, which a non-root PATH lacks.
_EXTRA_PATHS = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def find_binary(name: str) -> str | None:
    """Return the path of executable ``name`` on PATH or in the sbin directories."""
    found = shutil.which(name)
    if found:
        return found
    for directory in _EXTRA_PATHS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def require_binary(name: str, package: str) -> str:
    """Return the path of ``name`` or raise :class:`ServerNotInstalledError`."""
    path = find_binary(name)
    if path is None:
        raise ServerNotInstalledError(f"{name!r} not found (Debian package {package}); {INSTALL_HINT}")
    return path


def log_tail(path: Path | str, lines: int = 25) -> str:
    """Return the last ``lines`` lines of a log file, or a note when it is unreadable."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            data = fh.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(data.splitlines()[-lines:])


def _process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (guards against pid reuse)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def _process_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[0]


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel to SIGKILL the server when
    # the process (thread) that started it dies, so a crashed test run leaks nothing.
    # Only where setpriv is missing: Python code between fork and exec can deadlock on a
    # lock another thread held at fork time (a dlopen, gRPC's or a driver's threads).
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _pdeathsig_argv(argv: Sequence[str]) -> tuple[list[str], Callable[[], None] | None]:
    """``argv`` run so that the kernel kills it when its parent thread dies, without code after fork.

    util-linux's ``setpriv`` (essential on Debian) sets the parent-death signal and execs the
    server, which keeps the pid; without it, fall back to prctl in a preexec function.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        return [setpriv, "--pdeathsig", "KILL", "--", *argv], None
    return list(argv), _die_with_parent


class ManagedProcess:
    """A server process started in its own session, with its output in a log file.

    The object can be rebuilt from :meth:`to_state` by another process (the ``nbdb servers``
    CLI) to signal or stop a server it did not start.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path | str,
        cwd: Path | str | None = None,
        env: Mapping[str, str] | None = None,
        die_with_parent: bool = True,
    ) -> None:
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self.cwd = Path(cwd) if cwd is not None else None
        self.env = dict(env) if env is not None else None
        self.die_with_parent = die_with_parent
        self.pid: int | None = None
        self._start_time: int | None = None
        self._popen: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<ManagedProcess {Path(self.argv[0]).name} pid={self.pid}>"

    def start(self) -> None:
        """Start the process; its stdout and stderr are appended to ``log_path``."""
        if self.is_running():
            raise ServerStartError(f"{self!r} is already running")
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log.debug("starting %s", " ".join(self.argv))
        argv, preexec = _pdeathsig_argv(self.argv) if self.die_with_parent else (self.argv, None)
        with open(self.log_path, "ab") as out:
            self._popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=env,
                start_new_session=True,
                preexec_fn=preexec,
            )
        self.pid = self._popen.pid
        self._start_time = _process_start_time(self.pid)

    def is_running(self) -> bool:
        """Tell whether the process is alive (a stopped process counts as running)."""
        if self.pid is None:
            return False
        if self._popen is not None:
            if self._popen.poll() is not None:
                return False
            return True
        start = _process_start_time(self.pid)
        if start is None or start != self._start_time:
            return False
        return _process_state(self.pid) not in (None, "Z", "X")

    def is_paused(self) -> bool:
        """Tell whether the process is stopped by SIGSTOP."""
        return self.is_running() and _process_state(self.pid or 0) == "T"

    @property
    def returncode(self) -> int | None:
        """Exit status when the process was started here and has exited."""
        if self._popen is None:
            return None
        return self._popen.poll()

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process (no-op when it is not running)."""
        if not self.is_running() or self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL the process and wait until it is gone."""
        if not self.is_running() or self.pid is None:
            return
        # Kill the whole session the server leads: some daemons fork helpers.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.signal(signal.SIGKILL)
        self._wait_gone(timeout)

    def terminate(self, timeout: float = 10.0) -> None:
        """SIGTERM the process, SIGKILL it if it is still alive after ``timeout``."""
        if not self.is_running():
            return
        self.signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
        self.signal(signal.SIGTERM)
        try:
            self._wait_gone(timeout)
        except ServerTimeoutError:
            log.warning("%r ignored SIGTERM for %.0fs; killing it", self, timeout)
            self.kill()

    def pause(self, timeout: float = 5.0) -> None:
        """Freeze the process with SIGSTOP (it keeps its sockets, answers nothing).

        Signal delivery is asynchronous: wait until the kernel reports the
        process stopped, so callers can rely on it being frozen on return.
        """
        self.signal(signal.SIGSTOP)
        deadline = time.monotonic() + timeout
        while self.is_running() and not self.is_paused():
            if time.monotonic() >= deadline:
                raise ServerTimeoutError(f"{self!r} did not stop within {timeout:.0f}s of SIGSTOP")
            time.sleep(0.005)

    def resume(self) -> None:
        """Let a paused process continue with SIGCONT."""
        self.signal(signal.SIGCONT)

    def _wait_gone(self, timeout: float) -> None:
        if self._popen is not None:
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired as exc:
                raise ServerTimeoutError(f"{self!r} still alive after {timeout:.0f}s") from exc
            return
        wait_until(lambda: not self.is_running(), timeout, f"{self!r} to exit", interval=0.05)

    def to_state(self) -> dict[str, Any]:
        """JSON-able description of the process, for :meth:`from_state`."""
        return {
            "argv": self.argv,
            "log_path": str(self.log_path),
            "cwd": str(self.cwd) if self.cwd else None,
            "env": self.env,
            "pid": self.pid,
            "start_time": self._start_time,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ManagedProcess:
        """Rebuild a process handle saved by :meth:`to_state` (possibly by another process)."""
        proc = cls(
            state["argv"],
            log_path=state["log_path"],
            cwd=state.get("cwd"),
            env=state.get("env"),
            die_with_parent=False,
        )
        proc.pid = state.get("pid")
        proc._start_time = state.get("start_time")
        return proc


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    *,
    interval: float = 0.1,
    process: ManagedProcess | None = None,
) -> None:
    """Poll ``predicate`` until it is true; raise a clear error after ``timeout`` seconds.

    When ``process`` is given and exits meanwhile, raise :class:`ServerStartError` at once
    with the tail of its log instead of waiting for the timeout.
    """
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            if predicate():
                return
            last_exc = None
        except Exception as exc:
            last_exc = exc
        if process is not None and process.pid is not None and not process.is_running():
            raise ServerStartError(
                f"{Path(process.argv[0]).name} (pid {process.pid}) exited with status "
                f"{process.returncode} while waiting for {what}; "
                f"log {process.log_path}:\n{log_tail(process.log_path)}"
            )
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            tail = f"; log {process.log_path}:\n{log_tail(process.log_path)}" if process else ""
            raise ServerTimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{tail}")
        time.sleep(interval)
