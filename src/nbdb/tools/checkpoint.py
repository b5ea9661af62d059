"""The resume point of a copy, kept in a small JSON file written atomically.

A copy records which phase it is in and the source revision the destination
reflects. ``sync``: the first full pass started (the destination holds a
partial copy, written by this copy); ``follow``: the destination holds the
source as of ``revision`` (every commit up to it applied); ``done``: same, and
the copy stopped cleanly. The file holds no secret: URLs are redacted.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from nbdb import errors
from nbdb.atomicfile import replaced_atomically
from nbdb.options import redact

__all__ = ["Checkpoint", "CheckpointFile", "default_state_path"]

_FORMAT = "nbdb-copy-state"
_VERSION = 1
PHASES = ("sync", "follow", "done")


def default_state_path(source_url: str, destination_url: str, scope: str = "") -> pathlib.Path:
    """``$NBDB_CACHE`` (default ``~/.cache/nbdb``) ``/copy-<hash>.json``, one per copy."""
    digest = hashlib.sha256("\0".join([source_url, destination_url, scope]).encode()).hexdigest()[:16]
    base = os.environ.get("NBDB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "nbdb"
    )
    return pathlib.Path(base) / f"copy-{digest}.json"


@dataclass(slots=True)
class Checkpoint:
    """Where a copy stands."""

    source: str
    destination: str
    scope: str
    """The models and topics copied, as a stable string: a checkpoint only resumes the same copy."""
    phase: str = "sync"
    revision: int = 0
    updated: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


class CheckpointFile:
    """Load and save one :class:`Checkpoint` at ``path`` (atomically: write, fsync, rename)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = pathlib.Path(path)

    def load(self, source: str, destination: str, scope: str) -> Checkpoint | None:
        """The saved checkpoint of this copy, None if there is none; ValidationError if it is another copy's."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise errors.ValidationError(f"cannot read the copy state {self.path}: {exc}") from None
        try:
            doc: dict[str, Any] = json.loads(text)
            if doc.get("format") != _FORMAT or doc.get("version") != _VERSION:
                raise ValueError("not a copy state file of this nbdb")
            cp = Checkpoint(
                source=str(doc["source"]),
                destination=str(doc["destination"]),
                scope=str(doc["scope"]),
                phase=str(doc["phase"]),
                revision=int(doc["revision"]),
                updated=str(doc.get("updated", "")),
            )
            if cp.phase not in PHASES:
                raise ValueError(f"unknown phase {cp.phase!r}")
        except (ValueError, KeyError, TypeError) as exc:
            raise errors.ValidationError(f"the copy state {self.path} is unreadable ({exc}); remove it") from None
        want = (redact(source), redact(destination), scope)
        if (cp.source, cp.destination, cp.scope) != want:
            raise errors.ValidationError(
                f"the copy state {self.path} belongs to another copy ({cp.source} -> {cp.destination}, "
                f"{cp.scope}); pass another --state or remove it"
            )
        return cp

    def save(self, cp: Checkpoint) -> None:
        """Write ``cp`` so that a crash leaves the old or the new file, never half of one."""
        cp.updated = datetime.now(UTC).isoformat(timespec="seconds")
        doc = {"format": _FORMAT, "version": _VERSION, **asdict(cp)}
        doc["source"], doc["destination"] = redact(cp.source), redact(cp.destination)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with replaced_atomically(self.path, f".{self.path.name}.") as f:
            f.write((json.dumps(doc, indent=1) + "\n").encode())

    def clear(self) -> None:
        """Remove the file (a finished copy that will not be resumed)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
