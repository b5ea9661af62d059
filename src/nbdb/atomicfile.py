"""Writing a file so that a crash or a failure leaves the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

__all__ = ["replaced_atomically"]


@contextmanager
def replaced_atomically(path: str | os.PathLike[str], prefix: str) -> Iterator[BinaryIO]:
    """A file to write that replaces ``path`` when the block ends without an exception.

    It is written beside ``path`` (a temporary named ``prefix``...), synced to disk, then renamed over
    ``path``; if the block raises, the temporary is removed and ``path`` is left as it was.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
