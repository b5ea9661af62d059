"""Writing a file so that a crash or a failure leaves the old file or the new one, never half of one."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

__all__ = ["replaced_atomically"]


@contextmanager
def replaced_atomically(path: str | os.PathLike[str], prefix: str) -> Iterator[BinaryIO]:
    """A file to write that replaces ``path`` when the block ends without an exception.

    It is written beside ``path`` (a temporary named ``prefix``..., mode 0600), synced to disk, renamed
    over ``path``, and the directory synced, so that the rename too outlives a crash once the block
    has ended; if the block raises, the temporary is removed and ``path`` is left as it was.
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
    _sync_directory(directory)


def _sync_directory(directory: str) -> None:
    """fsync ``directory``, so that a rename in it is on disk (a file system that cannot: nothing to do)."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)
