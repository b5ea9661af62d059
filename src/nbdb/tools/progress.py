"""A one-line progress display on stderr, with no dependency.

Shown only when enabled (by default: when stderr is a terminal); redrawn in
place with ``\\r`` at most ten times a second.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Draw ``label done/total (pct) rate/s`` on one line of ``stream``."""

    def __init__(self, enabled: bool | None = None, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self._last = 0.0
        self._width = 0
        self._start = time.monotonic()

    def show(self, text: str, force: bool = False) -> None:
        """Replace the line with ``text`` (throttled unless ``force``)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        pad = max(0, self._width - len(text))
        self._width = len(text)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()

    def count(self, label: str, done: int, total: int | None = None, force: bool = False) -> None:
        """Show a count, with a percentage when ``total`` is known and a rate."""
        elapsed = max(time.monotonic() - self._start, 1e-6)
        if total:
            text = f"{label}: {done}/{total} ({100 * done // total}%)"
        else:
            text = f"{label}: {done}"
        self.show(f"{text}, {done / elapsed:.0f}/s", force)

    def restart(self) -> None:
        """Reset the rate's clock (a new phase)."""
        self._start = time.monotonic()

    def close(self) -> None:
        """End the line."""
        if self.enabled and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
