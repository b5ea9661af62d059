"""The ``nbdb`` console script: :func:`nbdb.cli.main`, imported under a Ctrl-C guard.

Outside the ``nbdb`` package on purpose: importing any module of it imports ``nbdb`` first (pydantic, the
models, the API, then each sub-command's parts: a quarter of a second and more), and a Ctrl-C in that time
(``nbdb bench`` started, and stopped at once) printed the import's traceback, where a running command exits
130. Here nothing is imported before the guard but :mod:`os`, :mod:`signal` and :mod:`sys`.

``python -m nbdb`` imports the package ``nbdb`` before its ``__main__`` (runpy does, where no ``try`` of
ours can catch a KeyboardInterrupt): ``nbdb/__init__.py`` sets the guard first when it is imported so
(:func:`running_as_module`). The guard is a SIGINT handler, not a ``try``: it ends the process at once,
whatever frame the signal lands in. :func:`nbdb.cli.main` lifts it when the sub-command starts (which
handles Ctrl-C itself); once a Ctrl-C has ended the command, a further one is ignored while exiting
(it printed the traceback of the frame it landed in, a second Ctrl-C pressed "to make sure").
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

__all__ = ["EXIT_INTERRUPTED", "guard", "lift_guard", "main", "running_as_module"]

EXIT_INTERRUPTED = 130
"""128 + SIGINT, what a shell reports for a command that Ctrl-C ended (as :func:`nbdb.cli.main` returns)."""


def _exit_interrupted(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.write(2, b"nbdb: interrupted\n")
    os._exit(EXIT_INTERRUPTED)  # nothing to flush or close yet: the command has not started


def guard() -> None:
    """Until :func:`lift_guard`: Ctrl-C ends the process with 130 and ``nbdb: interrupted``, no traceback.

    Only in place of Python's own handler: a SIGINT the process was started ignoring (a shell's background
    job, ``trap '' INT``, ``nohup``-like launchers) or one a program installed stays as it is.
    """
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _exit_interrupted)


def lift_guard() -> None:
    """Ctrl-C raises KeyboardInterrupt again, if :func:`guard` had set it otherwise (else nothing changes)."""
    if signal.getsignal(signal.SIGINT) is _exit_interrupted:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def running_as_module(name: str) -> bool:
    """Whether this is ``python -m name`` and its package is being imported (before ``__main__`` runs)."""
    # While the module of -m is located, sys.argv[0] is "-m"; sys.orig_argv ends with "-m name" (or "-mname")
    # and the same arguments after it.
    if sys.argv[:1] != ["-m"] or len(sys.orig_argv) < len(sys.argv):
        return False
    return sys.orig_argv[len(sys.orig_argv) - len(sys.argv)] in (name, "-m" + name)


def main() -> int:
    """Import the CLI and run it; 130 and one line on stderr if Ctrl-C comes before it runs."""
    guard()
    try:
        from nbdb.cli import main as run

        code = run()
    except KeyboardInterrupt:
        # Once running, nbdb.cli.main turns Ctrl-C into 130 itself: this is a Ctrl-C landing in between.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.stderr.write("nbdb: interrupted\n")
        return EXIT_INTERRUPTED
    if code == EXIT_INTERRUPTED:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # exiting: a second Ctrl-C changes nothing
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
