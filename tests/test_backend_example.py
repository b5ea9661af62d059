"""A backend in a package of its own: installed with pip, found by its URL scheme, checked by the kit.

The example package (``examples/nbdb-sqlite-example``) is installed the way a
user installs a third-party backend, into a throwaway directory with no index
and no dependencies (offline), and used from a fresh interpreter.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

import nbdb

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
    # The nbdb under test (this tree's, not whichever the interpreter installed) beside the example.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(Path(nbdb.__file__).parents[1])])}
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


GUIDE = Path(__file__).parents[1] / "docs" / "writing-a-backend.md"


def _guide_code() -> list[ast.Module]:
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    return [ast.parse(textwrap.dedent(block)) for block in blocks]


def test_the_guide_s_calls_of_family_helpers_match_their_signatures() -> None:
    """An author copies them: a helper called with an argument too few fails only in the first commit."""
    from nbdb.families import kvstore

    calls = [
        node
        for tree in _guide_code()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "kvstore"
    ]
    assert {c.func.attr for c in calls} >= {"condition_holds"}  # type: ignore[attr-defined]
    for call in calls:
        helper = getattr(kvstore, call.func.attr)  # type: ignore[attr-defined]
        inspect.signature(helper).bind(*call.args, **{k.arg: k.value for k in call.keywords if k.arg})


def test_the_guide_s_capabilities_are_the_sqlite_backend_s() -> None:
    """The walkthrough's declaration names every capability sqlite declares beyond the defaults."""
    from nbdb.backends.sqlite import SqliteBackend
    from nbdb.capabilities import Capabilities

    declared = [
        {k.arg for k in node.keywords}
        for tree in _guide_code()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Capabilities"
    ]
    assert len(declared) == 1
    caps = SqliteBackend.capabilities
    beyond = {f.name for f in fields(Capabilities) if f.default is MISSING or getattr(caps, f.name) != f.default}
    assert beyond <= declared[0], f"the guide leaves out {sorted(beyond - declared[0])}"
