"""The session fixtures of ``nbdb.testing.fixtures`` start one server for the session, however many modules import them.

pytest makes a fixture imported into two modules two fixtures: each started a server of its own and
kept it to the session's end (nbdb's own suite held eight Cassandra JVMs at once). Checked in a pytest
run of its own, as a suite outside nbdb imports the fixtures.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbdb.testing import require_server

_MODULE = """
from pathlib import Path

from nbdb.testing.fixtures import redis_server  # noqa: F401


def test_records_its_server(redis_server):
    with open({out!r}, "a") as out:
        out.write(f"{{redis_server.port}} {{redis_server.members[0].pid}}\\n")
"""


@pytest.mark.timeout(60)
def test_a_fixture_imported_by_two_modules_is_one_server(tmp_path: Path) -> None:
    require_server("redis")
    out = tmp_path / "servers.txt"
    suite = tmp_path / "suite"
    suite.mkdir()
    for name in ("test_one.py", "test_two.py"):
        (suite / name).write_text(_MODULE.format(out=str(out)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(suite), str(suite)],
        cwd=suite, env=env, capture_output=True, text=True, timeout=50, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    seen = out.read_text().split("\n")[:-1]
    assert len(seen) == 2
    assert seen[0] == seen[1], f"each module started a server of its own: {seen}"
    pid = int(seen[0].split()[1])
    assert not Path(f"/proc/{pid}").exists() or _zombie(pid), "the server outlived the session"


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2 :].split()[0] in ("Z", "X")
