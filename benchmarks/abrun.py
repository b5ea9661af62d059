"""What the A/B scripts here share: run a worker script on one checkout's ``src/`` and read its JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["env", "loadavg", "run_json"]


def env(src: str | None) -> dict[str, str]:
    """This process's environment, importing nbdb from ``src`` (a checkout's ``src/``) if given."""
    out = dict(os.environ)
    if src is not None:
        out["PYTHONPATH"] = str(Path(src).resolve())
    return out


def run_json(src: str, worker: str, args: list[str], timeout: float = 900) -> Any:
    """Run ``worker`` (Python source) with ``args`` on ``src``'s nbdb; the JSON of its last line of output."""
    out = subprocess.run(
        [sys.executable, "-c", worker, *args], env=env(src), capture_output=True, text=True, timeout=timeout
    )
    if out.returncode != 0:
        raise RuntimeError(f"{src} {' '.join(args)} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split(" ", 3)[:3])
