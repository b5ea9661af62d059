"""replaced_atomically: the old file or the new one, never half of one, and no temporary left."""

from __future__ import annotations

from pathlib import Path

import pytest

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
