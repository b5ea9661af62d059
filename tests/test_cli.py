"""The nbdb command: the demo, the backend listing, and the generated capability matrix."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
from collections.abc import Callable

import pytest

import nbdb
from nbdb import errors
from nbdb.cli import capability_matrix, main

pytestmark = pytest.mark.timeout(60)
ROOT = pathlib.Path(__file__).resolve().parents[1]
ThirdParty = Callable[[dict[str, str]], dict[str, str]]
"""conftest's ``third_party``: declare backends of another package, get the environment that finds them."""


def test_demo_runs_on_the_embedded_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "none from tenant-b" in out
    assert "a stale update is refused" in out
    assert "hv0 flow table: tenant-a-vm" in out, "the agent converged its flow table"
    assert "its flow is gone" in out, "read-your-writes, then the controller removed the flow"
    assert "1 retried" in out


def test_demo_runs_on_a_durable_sqlite_file(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--url", f"sqlite:///{tmp_path}/nb.db"]) == 0
    out = capsys.readouterr().out
    assert "durability=durable" in out and "none from tenant-b" in out
    assert (tmp_path / "nb.db").stat().st_size > 0


def test_demo_again_on_the_same_file_says_why_before_writing(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The second run stopped half-way with a UniqueViolationError on the first run's chassis."""
    import nbdb
    from nbdb.models import LogicalSwitch

    url = f"sqlite:///{tmp_path}/nb.db"
    assert main(["demo", "--url", url]) == 0
    with nbdb.connect(url) as db:
        before = db.list(LogicalSwitch)
    capsys.readouterr()
    assert main(["demo", "--url", url]) == 2
    assert "ValidationError: the demo builds its network in an empty database" in capsys.readouterr().err
    with nbdb.connect(url) as db:
        assert db.list(LogicalSwitch) == before


@pytest.mark.timeout(120)
def test_demo_on_an_ovsdb_without_ovn_s_tables_writes_nothing(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """OVN_Northbound alone has no Chassis (a southbound table), the model database alone none of OVN's tables:
    the demo stopped at the first table missing, or (the model database) after the three chassis were written,
    at the tunnel keys (no NB_Global), and a second run refused the database it had left."""
    import json

    from nbdb.backends.ovsdb import generate_schema
    from nbdb.models import Chassis
    from nbdb.testing import require_server
    from nbdb.testing.ovsdb import OvsdbServer

    require_server("ovsdb")
    schema = tmp_path / "model.ovsschema"
    schema.write_text(json.dumps(generate_schema(name="nbdb")))
    with OvsdbServer() as nb, OvsdbServer(schema=schema) as models:
        for url, said in [
            (nb.url, "cannot store Chassis (table 'Chassis' has no OVSDB table"),
            (f"{models.url}/nbdb", "cannot store LogicalSwitch, LogicalRouter"),
        ]:
            capsys.readouterr()
            assert main(["demo", "--url", url]) == 2
            err = capsys.readouterr().err
            assert "the demo builds an OVN logical network" in err and said in err and "nothing was written" in err
        with nbdb.connect(f"{models.url}/nbdb") as db:
            assert db.list(Chassis) == [], "the demo wrote part of its network"


def test_backends_lists_memory(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends"]) == 0
    assert "memory" in capsys.readouterr().out


def test_bad_url_is_a_clean_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--url", "nosuch://x"]) == 2
    assert "ValidationError" in capsys.readouterr().err


def test_docs_capability_matrix_is_generated_from_code() -> None:
    """Every backend of nbdb's generated row stands in the docs as generated (CI installs them all)."""
    doc = (ROOT / "docs" / "capabilities.md").read_text()
    generated = [line for line in capability_matrix(markdown=True, builtin=True).splitlines() if line.strip()]
    missing = [line for line in generated if line not in doc.splitlines()]
    assert missing == [], "docs/capabilities.md is stale: regenerate it with scripts/gen-docs.sh"


def test_gen_docs_lists_only_nbdb_s_own_backends(tmp_path: pathlib.Path, third_party: ThirdParty) -> None:
    """A backend another package installed on the machine that ran scripts/gen-docs.sh went into nbdb's docs."""
    env = third_party({"kitextra": "from nbdb.backends.sqlite import SqliteBackend as Backend\n"})
    (tmp_path / "repo" / "scripts").mkdir(parents=True)
    (tmp_path / "repo" / "docs").mkdir()
    script = shutil.copy(ROOT / "scripts" / "gen-docs.sh", tmp_path / "repo" / "scripts")
    command = tmp_path / "nbdb"
    command.write_text(f'#!/bin/sh\nexec {sys.executable} -m nbdb.cli "$@"\n')
    command.chmod(0o755)
    done = subprocess.run(
        ["bash", script], env={**env, "NBDB": str(command)}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    written = (tmp_path / "repo" / "docs" / "capabilities.md").read_text()
    assert "kitextra" not in written
    assert written == (ROOT / "docs" / "capabilities.md").read_text()
    listed = subprocess.run(
        [sys.executable, "-m", "nbdb.cli", "backends"], env=env, capture_output=True, text=True, timeout=60
    )
    assert "kitextra" in listed.stdout, "nbdb backends (without --builtin) lists what is installed"


def _checkout_copy(tmp_path: pathlib.Path) -> tuple[pathlib.Path, dict[str, str]]:
    """A copy of the checkout's script, src/ and docs/capabilities.md, and an environment whose PATH starts
    with another `nbdb` (an installed release's, another checkout's) that lists a backend nbdb has not."""
    import os

    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "docs").mkdir()
    shutil.copy(ROOT / "scripts" / "gen-docs.sh", repo / "scripts")
    shutil.copy(ROOT / "docs" / "capabilities.md", repo / "docs")
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__"))
    elsewhere = tmp_path / "bin"
    elsewhere.mkdir()
    (elsewhere / "nbdb").write_text("#!/bin/sh\necho '| `another` | nbdb |'\n")
    (elsewhere / "nbdb").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("NBDB", "BIN", "PYTHON", "PYTHONPATH")}
    return repo, {**env, "PATH": f"{elsewhere}{os.pathsep}{env.get('PATH', '')}"}


def test_gen_docs_runs_the_checkout_s_nbdb_not_the_one_on_path(tmp_path: pathlib.Path) -> None:
    """Without a .venv in the checkout (a worktree), gen-docs.sh ran whatever `nbdb` was on PATH."""
    repo, env = _checkout_copy(tmp_path)
    done = subprocess.run(
        ["bash", str(repo / "scripts" / "gen-docs.sh")],
        env={**env, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (repo / "docs" / "capabilities.md").read_text() == (ROOT / "docs" / "capabilities.md").read_text()


def test_gen_docs_without_a_usable_python_fails_and_leaves_the_docs(tmp_path: pathlib.Path) -> None:
    repo, env = _checkout_copy(tmp_path)
    done = subprocess.run(
        ["bash", str(repo / "scripts" / "gen-docs.sh")],
        env={**env, "PYTHON": str(tmp_path / "no-python")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "no-python is not an executable Python" in done.stderr
    assert (repo / "docs" / "capabilities.md").read_text() == (ROOT / "docs" / "capabilities.md").read_text()
    assert sorted(p.name for p in (repo / "docs").iterdir()) == ["capabilities.md"]


def test_schema_ovsdb_covers_models_without_an_ovn_table(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["schema", "ovsdb", "--models", "nbdb.conformance.kit"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["name"] == "nbdb"
    assert {"KitParent", "KitChild"} <= set(schema["tables"])
    assert "LogicalSwitch" not in schema["tables"]


@pytest.mark.parametrize("name", ["", "bad name!", "_reserved", "9lives"])
def test_schema_ovsdb_refuses_a_database_name_ovsdb_cannot_read(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`nbdb schema ovsdb --name ""` printed a schema and exited 0; ovsdb-tool then refused the file."""
    assert main(["schema", "ovsdb", "--name", name]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "ValidationError: the database name" in captured.err and "cannot be an OVSDB name" in captured.err


def test_generate_schema_refuses_a_version_ovsdb_cannot_read() -> None:
    from nbdb.backends.ovsdb import generate_schema

    with pytest.raises(errors.ValidationError, match=r"is not <x>\.<y>\.<z>"):
        generate_schema(version="1.0")
    assert generate_schema(name="My_models2", version="2.10.0")["version"] == "2.10.0"


def test_output_piped_into_head_ends_quietly(tmp_path: pathlib.Path) -> None:
    """`nbdb dump URL | head -1` printed a BrokenPipeError traceback (twice: again at exit)."""
    import os
    import subprocess
    import sys

    import nbdb
    from nbdb.models import LogicalSwitch

    url = f"sqlite:///{tmp_path}/nb.db"
    with nbdb.connect(url) as db, db.transaction() as txn:
        for i in range(2000):  # some 200 kB of dump: more than a pipe's buffer
            txn.create(LogicalSwitch(name=f"sw{i}", external_ids={"k": "v" * 50}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    dump = subprocess.Popen(
        [sys.executable, "-m", "nbdb.cli", "dump", url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert dump.stdout is not None and dump.stderr is not None
    assert dump.stdout.readline().startswith(b'{"counts"')
    dump.stdout.close()  # what head does after its line
    err = dump.stderr.read().decode()
    assert dump.wait(timeout=50) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


@pytest.mark.parametrize("url", ["cassandra://127.0.0.1:1/nbdb", "hazelcast://127.0.0.1:1/nbdb?connect_timeout=2"])
def test_a_server_that_is_down_is_one_line_not_driver_tracebacks(url: str) -> None:
    """The Cassandra and Hazelcast drivers logged a traceback (or a warning) per connection attempt."""
    import os
    import subprocess
    import sys

    pytest.importorskip(url.split(":", 1)[0])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run(
        [sys.executable, "-m", "nbdb.cli", "dump", url], capture_output=True, text=True, env=env, timeout=50
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines()[-1].startswith("nbdb: BackendUnavailableError: "), run.stderr
    assert "Traceback" not in run.stderr and "WARNING" not in run.stderr, run.stderr


def test_models_generate_refuses_a_reference_to_a_table_the_schema_lacks(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The module was written and imported; it failed only at the first write, naming a table 'x.Nope'."""
    import json

    schema = tmp_path / "x.ovsschema"
    column = {"type": {"key": {"type": "uuid", "refTable": "Nope"}}}
    schema.write_text(json.dumps({"name": "x", "version": "1.0.0", "tables": {"T": {"columns": {"a": column}}}}))
    assert main(["models", "generate", str(schema), "-o", str(tmp_path / "x.py")]) == 2
    assert "T.a: refTable 'Nope' is no table of the schema" in capsys.readouterr().err
    assert not (tmp_path / "x.py").exists()


# The import of nbdb.api held until Ctrl-C comes: the moment a user pressed it while `nbdb bench` was
# still importing. Also a child's sitecustomize (imported at its start, before `-m nbdb` imports the package).
_STALL_NBDB_API = """
import importlib, importlib.abc, sys, time

class Stall(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "nbdb.api":
            sys.stderr.write("importing nbdb.api\\n")
            sys.stderr.flush()
            time.sleep(60)
        return None

sys.meta_path.insert(0, Stall())
"""

# The console script's start (as pip's wrapper: import the entry point, call it), stalled so.
_START_STALLED_IN_IMPORTS = (
    _STALL_NBDB_API
    + """
module, _, function = sys.argv.pop(1).partition(":")
sys.exit(getattr(importlib.import_module(module), function)())
"""
)


def test_ctrl_c_while_the_console_script_imports_exits_130_with_one_line() -> None:
    """Ctrl-C in the first fraction of a second of `nbdb bench` printed the traceback of an import."""
    import os
    import signal
    import subprocess
    import sys
    import tomllib

    entry = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["nbdb"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [sys.executable, "-c", _START_STALLED_IN_IMPORTS, entry, "bench", "--help"]
    run = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        assert run.stderr is not None
        assert run.stderr.readline() == b"importing nbdb.api\n"
        run.send_signal(signal.SIGINT)
        err = run.communicate(timeout=50)[1].decode()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 130, err
    assert err == "nbdb: interrupted\n"


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "start", [["-m", "nbdb"], ["-c", "import sys; from nbdb_cli import main; sys.exit(main())"]], ids=["-m", "script"]
)
def test_ctrl_c_pressed_again_and_again_while_nbdb_imports_exits_130_without_a_traceback(
    tmp_path: pathlib.Path, start: list[str]
) -> None:
    """`python -m nbdb` imports the package before its __main__ (and any try of nbdb's): a traceback."""
    import os
    import signal

    (tmp_path / "sitecustomize.py").write_text(_STALL_NBDB_API)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    run = subprocess.Popen(
        [sys.executable, *start, "bench", "--help"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    try:
        assert run.stderr is not None
        assert run.stderr.readline() == b"importing nbdb.api\n"
        for _ in range(2500):  # Ctrl-C until it ends (at most some 50 s)
            run.send_signal(signal.SIGINT)
            try:
                run.wait(timeout=0.02)
                break
            except subprocess.TimeoutExpired:
                continue
        err = run.communicate(timeout=50)[1].decode()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert "Traceback" not in err
    assert run.returncode == 130, err
    assert err == "nbdb: interrupted\n"


def test_the_ctrl_c_guard_leaves_a_sigint_the_process_was_started_ignoring() -> None:
    """A shell's background job (`nbdb copy --follow … &` in a script) starts with SIGINT ignored: the guard
    replaced that with its exit, so a Ctrl-C meant for the script stopped the copy; and lifted, it left
    Python's KeyboardInterrupt in place of the ignore."""
    import os
    import signal

    child = (
        "import os, signal, time\n"
        "from nbdb_cli import guard, lift_guard\n"
        "guard()\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "time.sleep(0.2)\n"
        "lift_guard()\n"
        "print(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run(
        [sys.executable, "-c", child],
        capture_output=True,
        env=env,
        timeout=60,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert (run.returncode, run.stdout.decode().strip()) == (0, "True"), run.stderr.decode()


_WITHOUT_NBDB_CLI = """\
import os, runpy, sys
copy = sys.argv.pop(1)
# Only the package, as a vendored copy has it: no directory that holds nbdb_cli.py beside it (the checkout's
# src/ the editable install puts on the path) stays on the path.
sys.path[:] = [copy] + [p for p in sys.path if not os.path.exists(os.path.join(p or ".", "nbdb_cli.py"))]
import nbdb
assert nbdb.__file__.startswith(copy), nbdb.__file__
print(nbdb.connect("memory://").__class__.__name__)
runpy.run_module("nbdb", run_name="__main__", alter_sys=True)  # python -m nbdb backends
"""


def test_the_package_copied_without_nbdb_cli_imports_and_runs(tmp_path: pathlib.Path) -> None:
    """nbdb/__init__.py imported the top-level nbdb_cli (the console script's Ctrl-C guard): a copy of the
    package alone failed at `import nbdb` with "No module named 'nbdb_cli'"."""
    import nbdb

    package = pathlib.Path(nbdb.__file__).parent  # the one under test
    shutil.copytree(package, tmp_path / "nbdb", ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_NBDB_CLI, str(tmp_path), "backends"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Database\n"), done.stdout
    assert "memory" in done.stdout


def test_python_dash_m_nbdb_is_the_nbdb_command() -> None:
    # `python -m nbdb` said "No module named nbdb.__main__".
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "nbdb", "backends"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "memory" in done.stdout


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`nbdb --version` was refused ("the following arguments are required: command")."""
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"nbdb {nbdb.__version__}\n"
