"""``python -m nbdb``: the ``nbdb`` command, for an environment whose scripts are not on ``PATH``.

Run as the console script is (:mod:`nbdb_cli`); ``nbdb/__init__.py`` set its Ctrl-C guard before importing.
A copy of the package without :mod:`nbdb_cli` runs :func:`nbdb.cli.main` (see :mod:`nbdb._guard`).
"""

from __future__ import annotations

import sys

from nbdb._guard import console_main

if __name__ == "__main__":
    sys.exit(console_main()())
