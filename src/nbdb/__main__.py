"""``python -m nbdb``: the ``nbdb`` command, for an environment whose scripts are not on ``PATH``."""

from __future__ import annotations

import sys

from nbdb.cli import main

if __name__ == "__main__":
    sys.exit(main())
