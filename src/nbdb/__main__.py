"""``python -m nbdb``: the ``nbdb`` command, for an environment whose scripts are not on ``PATH``.

Run as the console script is (:mod:`nbdb_cli`); ``nbdb/__init__.py`` set its Ctrl-C guard before importing.
"""

from __future__ import annotations

import sys

from nbdb_cli import main

if __name__ == "__main__":
    sys.exit(main())
