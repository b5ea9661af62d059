"""``nbdb copy`` between memory stores: full copy, follow under writes, resume, verify, the CLI."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

import nbdb
from nbdb.cli import main
from nbdb.models import ACL, LogicalSwitch, LogicalSwitchPort, PortGroup
from nbdb.tools import CheckpointFile, Copier, CopyIncomplete, CopyOptions, verify

from .conftest import OVN_MODELS, Churn, assert_no_dangling, build_network, count_objects, interrupt_when

pytestmark = pytest.mark.timeout(60)

URLs = Callable[[], str]


def copier(src: nbdb.Database, dst: nbdb.Database, state: pathlib.Path | None = None, **options: object) -> Copier:
    opts = CopyOptions(models=OVN_MODELS, **options)  # type: ignore[arg-type]
    checkpoint = CheckpointFile(state) if state is not None else None
    return Copier(src, dst, opts, checkpoint=checkpoint, source_url="memory://src", destination_url="memory://dst")


def test_copy_keeps_ids_references_and_content() -> None:
    with nbdb.connect() as src, nbdb.connect() as dst:
        n = build_network(src)
        port = src.list(LogicalSwitchPort)[0]
        src.update(src.update(port.replace(up=True)).replace(tag=7))  # version 3 in the source
        result = copier(src, dst).run()
        assert result.differences == []
        assert result.objects == n and result.written == n
        assert count_objects(dst) == n
        copied = dst.get(LogicalSwitchPort, port.id)
        assert copied.tag == 7 and copied.up is True
        assert copied.version == 1  # versions are per backend: the destination counts its own writes
        assert_no_dangling(dst)
        assert verify(src, dst, OVN_MODELS) == []


def test_a_fresh_copy_refuses_a_non_empty_destination_unless_overwrite() -> None:
    with nbdb.connect() as src, nbdb.connect() as dst:
        build_network(src)
        stray = dst.create(LogicalSwitch(name="stray"))
        with pytest.raises(nbdb.ValidationError, match="already holds 1 object"):
            copier(src, dst).run()
        assert count_objects(dst) == 1
        result = copier(src, dst, overwrite=True).run()
        assert result.differences == []
        with pytest.raises(nbdb.NotFoundError):
            dst.get(LogicalSwitch, stray.id)


def test_copy_of_some_topics_only() -> None:
    with nbdb.connect() as src, nbdb.connect() as dst:
        build_network(src, tenants=["tenant-a", "tenant-b"], chassis=False)
        result = copier(src, dst, topics=["tenant-a"]).run()
        assert result.differences == []
        assert {o.topic for m in OVN_MODELS for o in dst.list(m)} == {"tenant-a"}


def test_a_topic_referencing_outside_the_copy_is_refused_before_writing_the_child() -> None:
    with nbdb.connect() as src, nbdb.connect() as dst:
        sw = src.create(LogicalSwitch(name="shared"))  # no topic
        src.create(LogicalSwitchPort(switch=sw, name="p", topic="tenant-a"))
        with pytest.raises(nbdb.ReferenceError, match="neither copied nor in the destination"):
            copier(src, dst, topics=["tenant-a"]).run()
        # With objects without a topic included, it works.
        assert copier(src, dst, topics=["tenant-a", None]).run().differences == []


def test_follow_under_concurrent_writes_ends_identical() -> None:
    with nbdb.connect() as src, nbdb.connect() as dst:
        build_network(src)
        stop = threading.Event()
        c = copier(src, dst, follow=True)
        c.stop = stop
        results: list[object] = []
        runner = threading.Thread(target=lambda: results.append(c.run()))
        runner.start()
        churn = Churn(src, count=400, pause=0.003).start()
        churn.join()
        time.sleep(0.3)
        stop.set()
        runner.join(30)
        assert not runner.is_alive()
        (result,) = results
        assert isinstance(result, type(c.result))
        assert result.differences == []
        assert result.changes > 0
        assert verify(src, dst, OVN_MODELS) == []
        assert_no_dangling(dst)


def test_follow_stops_at_a_revision() -> None:
    with nbdb.connect() as src, nbdb.connect() as dst:
        build_network(src)
        Churn(src, count=50).run()
        target = src.list(LogicalSwitch).revision
        result = copier(src, dst, follow=True, until_revision=target).run()
        assert result.revision >= target
        assert result.differences == []


def test_an_interrupted_copy_resumes_without_duplicates_or_losses(tmp_path: pathlib.Path) -> None:
    state = tmp_path / "state.json"
    with nbdb.connect() as src, nbdb.connect() as dst:
        n = build_network(src, ports=10)
        with pytest.raises(CopyIncomplete):
            copier(src, dst, state, limit=17, batch=5).run()
        assert count_objects(dst) == 17
        assert json.loads(state.read_text())["phase"] == "sync"
        # The source moves on while the copy is stopped.
        doomed = src.list(PortGroup)[0]
        src.delete(next(acl for acl in src.list(ACL) if acl.port_group == doomed.id))
        src.delete(doomed)
        extra = src.create(LogicalSwitch(name="late", topic="tenant-a"))
        result = copier(src, dst, state, batch=5).run()
        assert result.resumed == "sync"
        assert result.differences == []
        assert dst.get(LogicalSwitch, extra.id).name == "late"
        assert count_objects(dst) == count_objects(src) == n - 2 + 1  # a port group and its ACL gone, a switch new
        assert not state.exists()  # a finished, verified copy leaves no state to resume


def run_until_interrupted_while_following(src: nbdb.Database, dst: nbdb.Database, state: pathlib.Path) -> None:
    """Copy with --follow and a write limit that the changes made after the first sync pass exhaust."""
    total = count_objects(src)
    c = copier(src, dst, state, follow=True, limit=total + 20, batch=1)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            c.run()
        except BaseException as exc:
            failures.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    deadline = time.monotonic() + 20
    while not (state.exists() and json.loads(state.read_text())["phase"] == "follow"):
        assert time.monotonic() < deadline, "the first sync pass did not finish"
        time.sleep(0.01)
    Churn(src, count=100, seed=3, pause=0.001).run()
    runner.join(20)
    assert not runner.is_alive()
    assert len(failures) == 1 and isinstance(failures[0], CopyIncomplete), failures


def test_an_interrupted_follow_resumes_from_its_revision(tmp_path: pathlib.Path) -> None:
    state = tmp_path / "state.json"
    with nbdb.connect() as src, nbdb.connect() as dst:
        n = build_network(src)
        run_until_interrupted_while_following(src, dst, state)
        saved = json.loads(state.read_text())
        assert saved["phase"] == "follow" and saved["revision"] > n
        result = copier(src, dst, state).run()
        assert result.resumed == "follow"
        assert result.syncs == 0  # resumed by watching from the saved revision, not by a new full pass
        assert result.changes > 0
        assert result.differences == []
        assert count_objects(dst) == count_objects(src)


def test_a_resume_after_the_history_is_gone_syncs_again(tmp_path: pathlib.Path) -> None:
    state = tmp_path / "state.json"
    with nbdb.connect() as src, nbdb.connect() as dst:
        build_network(src)
        run_until_interrupted_while_following(src, dst, state)
        victim = src.list(LogicalSwitchPort)[0]
        src.delete(victim, cascade=True)
        src.backend.compact_history()
        result = copier(src, dst, state).run()
        assert result.syncs == 1
        assert result.differences == []
        with pytest.raises(nbdb.NotFoundError):
            dst.get(LogicalSwitchPort, victim.id)


def test_a_state_file_of_another_copy_is_refused(tmp_path: pathlib.Path) -> None:
    state = tmp_path / "state.json"
    with nbdb.connect() as src, nbdb.connect() as dst:
        build_network(src)
        with pytest.raises(CopyIncomplete):
            copier(src, dst, state, limit=3).run()
        other = Copier(
            src, dst, CopyOptions(models=OVN_MODELS), checkpoint=CheckpointFile(state), source_url="memory://x"
        )
        with pytest.raises(nbdb.ValidationError, match="belongs to another copy"):
            other.run()


# ---------------------------------------------------------------- the command line


def test_cli_copy_verify_and_exit_codes(
    memory_urls: URLs, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = memory_urls(), memory_urls()
    with nbdb.connect(a) as src:
        n = build_network(src)
    state = str(tmp_path / "copy.json")
    assert main(["copy", a, b, "--state", state, "--limit", "5"]) == 3
    assert "copy incomplete" in capsys.readouterr().err
    assert main(["copy", a, b, "--state", state, "--progress"]) == 0
    err = capsys.readouterr().err
    assert "resumed from its sync phase" in err and "verified: both sides hold the same objects" in err
    assert "copying:" in err  # the progress line
    assert main(["verify", a, b]) == 0
    with nbdb.connect(b) as dst:
        assert count_objects(dst) == n
        sw = dst.list(LogicalSwitch)[0]
        dst.update(sw.replace(name="renamed"))
    capsys.readouterr()
    assert main(["verify", a, b]) == 1
    out = capsys.readouterr().out
    assert f"different: LogicalSwitch {sw.id}: name" in out
    # A fresh copy into the now non-empty destination is refused (exit 2), then forced.
    assert main(["copy", a, b, "--state", state]) == 2
    assert "already holds" in capsys.readouterr().err
    assert main(["copy", a, b, "--state", state, "--overwrite"]) == 0
    assert main(["verify", a, b]) == 0


def test_cli_copy_of_topics_and_models(memory_urls: URLs, tmp_path: pathlib.Path) -> None:
    a, b = memory_urls(), memory_urls()
    with nbdb.connect(a) as src:
        build_network(src, chassis=False)
    args = ["--topics", "tenant-b", "--models", "LogicalSwitch,LoadBalancer", "--state", str(tmp_path / "s")]
    assert main(["copy", a, b, *args]) == 0
    with nbdb.connect(b) as dst:
        assert [s.name for s in dst.list(LogicalSwitch)] == ["sw1"]
        assert dst.list(LogicalSwitchPort) == []


def test_cli_follow_for_a_duration(memory_urls: URLs, tmp_path: pathlib.Path) -> None:
    a, b = memory_urls(), memory_urls()
    with nbdb.connect(a) as src:
        build_network(src)
        churn = Churn(src, count=150, pause=0.005).start()
        code = main(["copy", a, b, "--follow", "--duration", "1.5", "--state", str(tmp_path / "s")])
        churn.join()
        assert code in (0, 1)  # the writer may still be running when the copy stops
        assert main(["copy", a, b, "--state", str(tmp_path / "s2"), "--overwrite"]) == 0
        assert main(["verify", a, b]) == 0


def test_cli_unknown_model_is_an_error(memory_urls: URLs, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["copy", memory_urls(), memory_urls(), "--models", "NoSuchTable"]) == 2
    assert "unknown model 'NoSuchTable'" in capsys.readouterr().err


def test_cli_an_empty_url_is_refused_before_anything_is_written(
    memory_urls: URLs, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``nbdb copy "$SRC" DST --overwrite`` with SRC unset emptied DST: "" opened a fresh memory://."""
    b = memory_urls()
    with nbdb.connect(b) as dst:
        n = build_network(dst)
    state = str(tmp_path / "s")
    assert main(["copy", "", b, "--overwrite", "--state", state]) == 2
    assert "SOURCE_URL is empty" in capsys.readouterr().err
    with nbdb.connect(b) as dst:
        assert count_objects(dst) == n
    assert main(["copy", b, " ", "--state", state]) == 2
    assert main(["verify", "", ""]) == 2
    assert main(["dump", "", "-o", str(tmp_path / "d.jsonl")]) == 2
    assert main(["load", "", str(tmp_path / "d.jsonl")]) == 2
    assert capsys.readouterr().err.count("is empty") == 4
    assert not (tmp_path / "d.jsonl").exists()


def test_cli_verify_lists_every_difference(memory_urls: URLs, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/tools.md: the differences are listed on stdout, one per line (it stopped at 50)."""
    a, b = memory_urls(), memory_urls()
    with nbdb.connect(a) as src:
        for i in range(60):
            src.create(LogicalSwitch(name=f"sw{i}"))
    assert main(["verify", a, b]) == 1
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 60
    assert all(line.startswith("missing: LogicalSwitch ") for line in captured.out.splitlines())
    assert "verification found 60 differences" in captured.err


def test_cli_ctrl_c_in_a_copy_says_that_it_resumes(tmp_path: pathlib.Path) -> None:
    """Ctrl-C during a copy (no --follow) exited 130 without a word on what the destination holds."""
    src, dst, state = f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db", tmp_path / "copy.json"
    _fill_sqlite(src)
    scope = ["--state", str(state), "--models", "LogicalSwitch,LogicalSwitchPort"]  # as other tests define models
    code, err = interrupt_when("copying", "copy", src, dst, *scope, "--progress", "--batch", "10")
    assert code == 130, err
    assert "interrupted: the destination may hold part of the copy; it resumes when run again" in err, err
    assert "Traceback" not in err
    assert main(["copy", src, dst, *scope]) == 0


# Run as `python -m` runs nbdb.cli (runpy, then Py_RunMain's exit), with a Ctrl-C raised as the storable check that
# the first write of a model builds (generated code, see nbdb.storable) starts running: where a Ctrl-C arriving
# while that code compiles is raised.
_CTRL_C_AS_THE_CHECK_STARTS = """
import sys

def trace(frame, event, arg):
    if event == "call" and frame.f_code.co_name == "<module>" and frame.f_back.f_code.co_name == "_check_of":
        sys.settrace(None)
        raise KeyboardInterrupt
    return None

sys.settrace(trace)
from nbdb.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_cli_ctrl_c_as_a_models_storable_check_is_built_exits_130(tmp_path: pathlib.Path) -> None:
    # CI once saw `nbdb copy` exit -2 (killed by SIGINT, no traceback) after printing its "interrupted" line:
    # the check was run by exec() of its source, and CPython takes a KeyboardInterrupt escaping code that
    # exec() compiled from a string for the program's unhandled one, and a `python -m` ends in SIGINT then.
    src, dst = f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"
    with nbdb.connect(src) as db:
        db.create(LogicalSwitch(name="sw0"))
    (tmp_path / "ctrl_c_as_the_check_starts.py").write_text(_CTRL_C_AS_THE_CHECK_STARTS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    argv = ["copy", src, dst, "--state", str(tmp_path / "copy.json"), "--models", "LogicalSwitch"]
    run = subprocess.run(
        [sys.executable, "-m", "ctrl_c_as_the_check_starts", *argv], capture_output=True, env=env, timeout=60
    )
    err = run.stderr.decode()
    assert run.returncode == 130, err
    assert "interrupted: the destination may hold part of the copy; it resumes when run again" in err, err
    assert "Traceback" not in err, err


def test_cli_ctrl_c_in_a_resumable_load_says_to_run_it_again(tmp_path: pathlib.Path) -> None:
    src, dst, dump = f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db", str(tmp_path / "d.jsonl")
    _fill_sqlite(src)
    assert main(["dump", src, "-o", dump]) == 0
    code, err = interrupt_when("loading", "load", dst, dump, "--resume", "--progress", "--batch", "10")
    assert code == 130, err
    assert "interrupted: the destination may hold part of the dump; run the same load again" in err, err
    assert main(["load", dst, dump, "--resume"]) == 0
    assert main(["verify", src, dst]) == 0


def _fill_sqlite(url: str) -> None:
    with nbdb.connect(url) as db, db.transaction() as txn:
        for i in range(20):
            sw = txn.create(LogicalSwitch(name=f"sw{i}"))
            for j in range(150):
                txn.create(LogicalSwitchPort(switch=sw, name=f"p{i}-{j}"))
