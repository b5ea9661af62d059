"""replaced_atomically: the old file or the new one, never half of one, and no temporary left."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import nbdb
from nbdb.atomicfile import replaced_atomically

pytestmark = pytest.mark.timeout(30)


def test_a_finished_block_replaces_the_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_bytes(b"old")
    with replaced_atomically(target, ".out.") as f:
        f.write(b"new")
        assert target.read_bytes() == b"old"  # not before the block ends
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_a_failed_block_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), replaced_atomically(target, ".out.") as f:
        f.write(b"half")
        raise RuntimeError("the writer failed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_a_failed_first_write_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "dump.nbdb"
    with pytest.raises(RuntimeError), replaced_atomically(str(target), ".nbdb-dump.") as f:
        f.write(b"half")
        raise RuntimeError("the writer failed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to see the system calls")
def test_the_rename_is_made_durable_by_syncing_the_directory(tmp_path: Path) -> None:
    """After the rename, the directory is fsynced: else a crash can bring the old file back after success."""
    if subprocess.run(["strace", "-o", os.devnull, "true"], capture_output=True, timeout=20).returncode:
        pytest.skip("strace cannot trace here (ptrace not allowed)")
    target = tmp_path / "data" / "out.json"
    target.parent.mkdir()
    trace = tmp_path / "trace"
    script = "import sys\nfrom nbdb.atomicfile import replaced_atomically\n"
    script += "with replaced_atomically(sys.argv[1], '.out.') as f:\n    f.write(b'new')\n"
    src = str(Path(nbdb.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src}
    traced = ["strace", "-f", "-qq", "-e", "trace=openat,fsync,rename,renameat,renameat2", "-o", str(trace)]
    subprocess.run([*traced, sys.executable, "-c", script, str(target)], env=env, check=True, timeout=20)
    assert target.read_bytes() == b"new"
    lines = trace.read_text().splitlines()
    renamed = [i for i, line in enumerate(lines) if "rename" in line and f'"{target}"' in line]
    assert renamed, "the file was not renamed into place"
    after = lines[renamed[-1] :]
    directory = [line for line in after if "openat(" in line and f'"{target.parent}"' in line and "O_DIRECTORY" in line]
    assert directory, "the directory was not opened after the rename"
    fd = directory[0].rsplit("=", 1)[1].strip()
    assert any(f"fsync({fd})" in line and line.rstrip().endswith("= 0") for line in after), "no fsync of the directory"
