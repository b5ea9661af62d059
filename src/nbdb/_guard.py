"""The console script's Ctrl-C guard (:mod:`nbdb_cli`), as the package uses it: when it is there.

:mod:`nbdb_cli` is a top-level module next to the package, on purpose (see its docstring), and the package
that is copied or vendored without it still imports and runs: then no guard was ever set, so there is
none to lift, and ``python -m nbdb`` runs :func:`nbdb.cli.main` directly. Imports nothing of nbdb, so that
``nbdb/__init__.py`` can set the guard before its own imports.
"""

from __future__ import annotations

import importlib
import signal
from collections.abc import Callable
from types import ModuleType

__all__ = ["EXIT_INTERRUPTED", "console_main", "guard", "lift_guard", "running_as_module"]


def _script() -> ModuleType | None:
    try:
        return importlib.import_module("nbdb_cli")
    except ModuleNotFoundError as exc:
        if exc.name != "nbdb_cli":
            raise
        return None


_SCRIPT = _script()

EXIT_INTERRUPTED: int = _SCRIPT.EXIT_INTERRUPTED if _SCRIPT is not None else 128 + signal.SIGINT
"""What a command that Ctrl-C ended returns (:data:`nbdb_cli.EXIT_INTERRUPTED`: 128 + SIGINT)."""


def running_as_module(name: str) -> bool:
    """:func:`nbdb_cli.running_as_module` (without :mod:`nbdb_cli`: False, there is no guard to set)."""
    return _SCRIPT is not None and bool(_SCRIPT.running_as_module(name))


def guard() -> None:
    """:func:`nbdb_cli.guard` (without :mod:`nbdb_cli`: nothing)."""
    if _SCRIPT is not None:
        _SCRIPT.guard()


def lift_guard() -> None:
    """:func:`nbdb_cli.lift_guard` (without :mod:`nbdb_cli`, no guard was set: nothing to do)."""
    if _SCRIPT is not None:
        _SCRIPT.lift_guard()


def console_main() -> Callable[[], int]:
    """The ``nbdb`` command's entry: :func:`nbdb_cli.main`, or :func:`nbdb.cli.main` without it."""
    if _SCRIPT is not None:
        main: Callable[[], int] = _SCRIPT.main
        return main
    from nbdb.cli import main as run

    return run
