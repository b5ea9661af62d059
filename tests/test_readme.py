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


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: p.name)
def test_the_examples_run_as_written(page: pathlib.Path) -> None:
    # controllers.md's example ran only with sqlite:// put in; as written it opens memory://.
    blocks = _blocks(page)
    assert len(blocks) >= (2 if page == README else 1)
    for block in blocks:
        namespace: dict[str, object] = {"__name__": "readme_example"}
        exec(compile(block, str(page), "exec"), namespace)


@pytest.mark.timeout(180)
def test_the_harness_and_fault_proxy_examples_run() -> None:
    """docs/harness.md's cluster example as written; docs/faults.md's proxy in front of a real etcd cluster."""
    from nbdb.testing import start_server
    from nbdb.testing.servers import require_server

    require_server("etcd")
    (harness,) = [b for b in _blocks(ROOT / "docs" / "harness.md") if "start_server(" in b]
    exec(compile(harness, "harness.md", "exec"), {"__name__": "docs_example"})
    (faults,) = [b for b in _blocks(ROOT / "docs" / "faults.md") if "proxy_url(" in b]
    # The page names two members' client ports (it used to name etcd's peer port, 2380): put in a live cluster's.
    placeholder = '"etcd://127.0.0.1:2379,127.0.0.1:22379"'
    assert placeholder in faults
    with start_server("etcd", members=2) as etcd:
        code = faults.replace(placeholder, repr(etcd.url))
        exec(compile(code, "faults.md", "exec"), {"__name__": "docs_example"})


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: p.name)
def test_the_examples_run_on_sqlite_too(page: pathlib.Path, tmp_path: pathlib.Path) -> None:
    # "or sqlite:///PATH": the same example on the durable embedded store (and the pages besides the README).
    url = f"sqlite:///{tmp_path}/nb.db"
    for block in _blocks(page):
        assert '"memory://"' in block or "nbdb.connect" not in block
        namespace: dict[str, object] = {"__name__": "docs_example"}
        exec(compile(block.replace('"memory://"', repr(url)), str(page), "exec"), namespace)
