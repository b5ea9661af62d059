"""The state file of servers started by ``nbdb servers up`` (they outlive the command)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nbdb.atomicfile import replaced_atomically
from nbdb.testing.base import Server
from nbdb.testing.servers import server_class

__all__ = ["ServerRegistry", "servers_dir"]


def servers_dir() -> Path:
    """``$NBDB_SERVERS_DIR``, default ``~/.cache/nbdb/servers``."""
    env = os.environ.get("NBDB_SERVERS_DIR")
    return Path(env) if env else Path.home() / ".cache" / "nbdb" / "servers"


class ServerRegistry:
    """Servers recorded in ``<directory>/state.json``, each with its own sub-directory.

    The file may hold credentials of test servers, so it is created readable by its owner
    only; every change happens under an exclusive lock.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory if directory is not None else servers_dir()
        self.path = self.directory / "state.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[dict[str, Any]]]:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock_path = self.directory / ".lock"
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = self._read()
            yield entries
            # Written beside and renamed; mkstemp's file is 0600, as servers' options may hold passwords.
            with replaced_atomically(self.path, ".state.") as fh:
                fh.write(json.dumps(entries, indent=2).encode())

    def _read(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        return list(data) if isinstance(data, list) else []

    def entries(self) -> list[dict[str, Any]]:
        """Every recorded server as saved (``id`` plus :meth:`Server.to_state`)."""
        return self._read()

    def new_base_dir(self, kind: str) -> tuple[str, Path]:
        """A fresh id and the directory a new server of ``kind`` keeps its files in."""
        server_id = f"{kind}-{secrets.token_hex(3)}"
        return server_id, self.directory / server_id

    def add(self, server_id: str, server: Server) -> None:
        """Record a started server."""
        with self._locked() as entries:
            entries.append({"id": server_id, **server.to_state()})

    def remove(self, server_id: str) -> None:
        """Forget a server (after stopping it)."""
        with self._locked() as entries:
            entries[:] = [e for e in entries if e.get("id") != server_id]

    @staticmethod
    def load(entry: dict[str, Any]) -> Server:
        """A handle on a recorded server, to query or stop it."""
        return server_class(entry["kind"]).from_state(entry)
