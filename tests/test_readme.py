"""The README's Python examples run as written."""

from __future__ import annotations

import pathlib
import re

import pytest

pytestmark = pytest.mark.timeout(60)
ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# The pages whose examples open memory:// and run as written (the others need a server or a backend's internals).
RUNNABLE = [README, ROOT / "docs" / "controllers.md"]


def _blocks(page: pathlib.Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


def test_readme_python_blocks_run() -> None:
    blocks = _blocks(README)
    assert len(blocks) >= 2
    for block in blocks:
        namespace: dict[str, object] = {"__name__": "readme_example"}
        exec(compile(block, str(README), "exec"), namespace)


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: p.name)
def test_the_examples_run_on_sqlite_too(page: pathlib.Path, tmp_path: pathlib.Path) -> None:
    # "or sqlite:///PATH": the same example on the durable embedded store (and the pages besides the README).
    url = f"sqlite:///{tmp_path}/nb.db"
    for block in _blocks(page):
        assert '"memory://"' in block or "nbdb.connect" not in block
        namespace: dict[str, object] = {"__name__": "docs_example"}
        exec(compile(block.replace('"memory://"', repr(url)), str(page), "exec"), namespace)
