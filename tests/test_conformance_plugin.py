"""The conformance kit's own options, run as a backend author runs the kit (a pytest of its own, memory://)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import nbdb

pytestmark = pytest.mark.timeout(120)


def kit(tmp_path: Path, *args: str, module: str = "nbdb.conformance.test_crud") -> subprocess.CompletedProcess[str]:
    """``pytest --pyargs MODULE ARGS`` on this tree's nbdb, from an empty directory."""
    env = {**os.environ, "PYTHONPATH": str(Path(nbdb.__file__).parents[1])}
    command = [sys.executable, "-m", "pytest", "--pyargs", module, "-q", "-rxX", "-p", "no:cacheprovider", *args]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=100)


def summary(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr


@pytest.mark.parametrize(
    "name",
    [
        "test_get_by_string_id",
        "test_get_by_string_id[memory://]",
        "test_crud.py::test_get_by_string_id",
        "nbdb/conformance/test_crud.py::test_get_by_string_id[memory://]",
    ],
)
def test_expect_fail_marks_exactly_the_named_test(tmp_path: Path, name: str) -> None:
    done = kit(tmp_path, "--nbdb-url=memory://", f"--nbdb-expect-fail={name}")
    # memory:// passes it: the one marked test is an unexpected pass, every other test passes as it is.
    assert "1 failed" in summary(done) and "xfail" not in summary(done), done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("[XPASS(strict)]") == 1 and "test_get_by_string_id" in done.stdout


@pytest.mark.parametrize("name", ["test_get", "get_by_string_id", "test_get_by_string_id[redis://]", "test_nope"])
def test_expect_fail_naming_no_kit_test_is_a_usage_error(tmp_path: Path, name: str) -> None:
    """A prefix (``test_get``) used to mark every test it began; a typo was a warning lost in the output."""
    done = kit(tmp_path, "--nbdb-url=memory://", f"--nbdb-expect-fail={name}")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"--nbdb-expect-fail {name!r}: no kit test of that name" in done.stderr


def test_expect_fail_of_a_kit_test_another_run_collects_is_no_error(tmp_path: Path) -> None:
    """A project's ini list names tests of every kit module: a run of one module must not refuse it."""
    done = kit(tmp_path, "--nbdb-url=memory://", "--nbdb-expect-fail=test_namespaces_isolate")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
