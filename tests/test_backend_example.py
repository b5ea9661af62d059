"""A backend in a package of its own: installed with pip, found by its URL scheme, checked by the kit.

The example package (``examples/nbdb-sqlite-example``) is installed the way a
user installs a third-party backend, into a throwaway directory with no index
and no dependencies (offline), and used from a fresh interpreter.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[1] / "examples" / "nbdb-sqlite-example"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory the example package is pip-installed into (the source is copied: builds leave files)."""
    root = tmp_path_factory.mktemp("example")
    source = shutil.copytree(EXAMPLE, root / "source")
    target = root / "site"
    offline = ["--no-deps", "--no-build-isolation", "--no-index"]  # nothing to fetch: nbdb is already here
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *offline]
    subprocess.run([*pip, "--target", str(target), str(source)], check=True, timeout=240)
    return target


def run(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def test_the_installed_package_s_scheme_opens_its_backend(site: Path, tmp_path: Path) -> None:
    script = (
        "import nbdb\n"
        "from nbdb.models import LogicalSwitch\n"
        f"with nbdb.connect('examplesqlite:///{tmp_path}/x.db') as db:\n"
        "    db.create(LogicalSwitch(name='from-a-plugin'))\n"
        "    print(type(db.backend).__module__, [s.name for s in db.list(LogicalSwitch)])\n"
        "from nbdb.loader import installed_backends\n"
        "print('examplesqlite' in installed_backends())\n"
    )
    done = run(site, "-c", script, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["nbdb_sqlite_example ['from-a-plugin']", "True"]
    without = subprocess.run(
        [sys.executable, "-c", f"import nbdb; nbdb.connect('examplesqlite:///{tmp_path}/y.db')"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "no backend for URL scheme 'examplesqlite'" in without.stderr, "found without being installed"


def test_the_kit_runs_against_the_installed_backend_and_reports_unexpected_passes(site: Path, tmp_path: Path) -> None:
    done = run(
        site,
        *("-m", "pytest", "--pyargs", "nbdb.conformance", "-q", "-p", "no:cacheprovider"),
        f"--nbdb-url=examplesqlite:///{tmp_path}/kit.db",
        "--nbdb-expect-fail=test_namespaces_isolate",  # it passes: the kit must say so
        cwd=tmp_path,
    )
    summary = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "1 failed" in summary and " passed" in summary and "error" not in summary, summary
    assert "[XPASS(strict)] expected to fail on this backend" in done.stdout
