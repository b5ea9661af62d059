"""The ``nbdb`` console script: :func:`nbdb.cli.main`, imported under a Ctrl-C guard.

Outside the ``nbdb`` package on purpose: importing any module of it imports ``nbdb`` first (pydantic, the
models, the API, then each sub-command's parts: a quarter of a second and more), and a Ctrl-C in that time
(``nbdb bench`` started, and stopped at once) printed the import's traceback, where a running command exits
130. Here nothing is imported before the guard but :mod:`sys`.
"""

from __future__ import annotations

import sys

__all__ = ["EXIT_INTERRUPTED", "main"]

EXIT_INTERRUPTED = 130
"""128 + SIGINT, what a shell reports for a command that Ctrl-C ended (as :func:`nbdb.cli.main` returns)."""


def main() -> int:
    """Import the CLI and run it; 130 and one line on stderr if Ctrl-C comes before it runs."""
    try:
        from nbdb.cli import main as run

        return run()
    except KeyboardInterrupt:
        # Once running, nbdb.cli.main turns Ctrl-C into 130 itself: this is the time before (its imports,
        # and the sub-commands' that its parser loads).
        sys.stderr.write("nbdb: interrupted\n")
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
