"""The sqlite backend tried as a new user would: its file deleted or replaced under a running process, and more."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import nbdb
from nbdb.models import LogicalSwitch

pytestmark = pytest.mark.timeout(120)


def _delete(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        (path.parent / f"{path.name}{suffix}").unlink(missing_ok=True)


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_file_deleted_or_replaced_under_a_process_is_unavailable_never_a_silent_loss(
    tmp_path: Path, how: str
) -> None:
    # SQLite kept writing the unlinked file: the commit was acknowledged and gone once the process closed it,
    # and the process's reads and watchers never saw the new file's writers.
    path = tmp_path / "nb.db"
    with nbdb.connect(f"sqlite://{path}") as db:
        before = db.create(LogicalSwitch(name="before"))
        watch = db.watch(LogicalSwitch)
        _delete(path)
        if how == "replaced":
            with nbdb.connect(f"sqlite://{path}") as other:
                other.create(LogicalSwitch(name="in-the-new-file"))
        with pytest.raises(nbdb.BackendUnavailableError, match="deleted or replaced"):
            db.create(LogicalSwitch(name="lost"))
        time.sleep(0.25)  # reads look at the path at most every 0.2 s
        with pytest.raises(nbdb.BackendUnavailableError, match="deleted or replaced"):
            db.list(LogicalSwitch)
        time.sleep(0.25)
        with pytest.raises(nbdb.BackendUnavailableError, match="deleted or replaced"):
            db.get(LogicalSwitch, before.id)
        time.sleep(0.25)
        with pytest.raises(nbdb.BackendUnavailableError, match="deleted or replaced"):
            next(iter(watch))
        watch.close()
    with nbdb.connect(f"sqlite://{path}") as db:
        names = {s.name for s in db.list(LogicalSwitch)}
    assert names == ({"in-the-new-file"} if how == "replaced" else set())


def _file_of_switches(path: Path, count: int) -> None:
    with nbdb.connect(f"sqlite://{path}") as db:
        for i in range(count):
            db.create(LogicalSwitch(name=f"s{i}"))


def test_a_truncated_file_is_a_corrupt_record_at_connect_and_under_a_running_process(tmp_path: Path) -> None:
    # SQLite's "database disk image is malformed" came out as BackendUnavailableError, which says "try
    # again later"; the docs promise CorruptRecordError for a damaged file at connect.
    path = tmp_path / "nb.db"
    _file_of_switches(path, 50)
    with nbdb.connect(f"sqlite://{path}") as db:
        os.truncate(path, os.path.getsize(path) // 2)
        with pytest.raises(nbdb.CorruptRecordError, match="damaged"):
            db.list(LogicalSwitch)
        with pytest.raises(nbdb.CorruptRecordError, match="damaged"):
            db.create(LogicalSwitch(name="more"))
    with pytest.raises(nbdb.CorruptRecordError, match="damaged"):
        nbdb.connect(f"sqlite://{path}")


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs under ``tmp_path``, holding an nbdb file, then remounted read-only (root only)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a read-only filesystem needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr!r}")
    try:
        _file_of_switches(mount / "nb.db", 1)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True, capture_output=True)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False, capture_output=True)


def test_a_file_on_a_read_only_filesystem_is_refused_as_read_only_not_unavailable(read_only_mount: Path) -> None:
    # "unable to open database file" became BackendUnavailableError, as if a retry could help.
    for name in ("nb.db", "new.db"):
        with pytest.raises(nbdb.AuthError, match="read-only"):
            nbdb.connect(f"sqlite://{read_only_mount / name}")


_OTHER_WRITER = """
import sys
import nbdb
from nbdb.models import LogicalSwitch
with nbdb.connect(f"sqlite://{sys.argv[1]}") as db:
    for i in range(30):
        db.create(LogicalSwitch(name=f"other-{i}"))
print("acknowledged")
"""


def _shm_deleted_then_another_writes(tmp_path: Path, late_writes: bool) -> set[str]:
    """Delete the -shm file under a running Database, let another process commit 30 creates; the names left."""
    path = tmp_path / "nb.db"
    with nbdb.connect(f"sqlite://{path}") as db:
        db.create(LogicalSwitch(name="first"))
        (tmp_path / "nb.db-shm").unlink()
        other = subprocess.run(
            [sys.executable, "-c", _OTHER_WRITER, str(path)],
            capture_output=True,
            text=True,
            timeout=90,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert other.stdout.strip() == "acknowledged", other.stderr
        if late_writes:
            with pytest.raises(nbdb.BackendUnavailableError, match="deleted or replaced"):
                for i in range(30):
                    db.create(LogicalSwitch(name=f"late-{i}"))
    with nbdb.connect(f"sqlite://{path}") as db:
        return {s.name for s in db.list(LogicalSwitch)}


def test_a_process_whose_shm_file_was_deleted_refuses_to_write(tmp_path: Path) -> None:
    # The -shm file deleted under a running process: the next process to open the file made another index,
    # and both wrote the WAL at once, each on its own index: one's acknowledged commits were overwritten.
    _shm_deleted_then_another_writes(tmp_path, late_writes=True)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="Python 3.11's sqlite3 cannot turn off the close's checkpoint")
@pytest.mark.parametrize("late_writes", [False, True])
def test_a_process_whose_shm_file_was_deleted_leaves_another_s_commits_at_close(
    tmp_path: Path, late_writes: bool
) -> None:
    # Its close copied the WAL into the file by its stale index and deleted the WAL: the 30 acknowledged
    # commits of the other process were gone.
    assert {f"other-{i}" for i in range(30)} <= _shm_deleted_then_another_writes(tmp_path, late_writes)
