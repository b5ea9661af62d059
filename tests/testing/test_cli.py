"""``nbdb servers up|status|down`` in real subprocesses: servers outlive the command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbdb.testing.probes import resp_command

_DRIVER = (
    "import argparse, sys\n"
    "from nbdb.testing.cli import register\n"
    "parser = argparse.ArgumentParser(prog='nbdb')\n"
    "register(parser.add_subparsers())\n"
    "args = parser.parse_args(sys.argv[1:])\n"
    "sys.exit(args.func(args))\n"
)


def _nbdb(state_dir: Path, *argv: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NBDB_SERVERS_DIR=str(state_dir))
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-c", _DRIVER, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] not in ("Z", "X")


@pytest.mark.timeout(180)
def test_up_status_down(tmp_path: Path) -> None:
    state_dir = tmp_path / "servers"
    up = _nbdb(state_dir, "servers", "up", "redis", "etcd", "ovsdb")
    assert up.returncode == 0, up.stderr
    lines = [line.split("\t") for line in up.stdout.splitlines()]
    assert [line[0] for line in lines] == ["redis", "etcd", "ovsdb"]
    urls = {line[0]: line[1] for line in lines}
    assert urls["redis"].startswith("redis://127.0.0.1:") and urls["redis"].endswith("/0")
    assert urls["etcd"].startswith("etcd://127.0.0.1:")
    assert urls["ovsdb"].startswith("ovsdb+tcp://127.0.0.1:")

    # The command has exited; the servers are still serving.
    redis_port = int(urls["redis"].rsplit(":", 1)[1].split("/")[0])
    assert resp_command("127.0.0.1", redis_port, "PING") == "PONG"

    status = _nbdb(state_dir, "servers", "status", "--json")
    assert status.returncode == 0, status.stderr
    servers = json.loads(status.stdout)
    assert {s["kind"] for s in servers} == {"redis", "etcd", "ovsdb"}
    pids = [m["pid"] for s in servers for m in s["members"]]
    dirs = [Path(s["base_dir"]) for s in servers]
    assert all(_pid_alive(pid) for pid in pids)
    assert all(d.is_dir() and d.parent == state_dir for d in dirs)
    assert all(m["running"] for s in servers for m in s["members"])

    down_etcd = _nbdb(state_dir, "servers", "down", "etcd")
    assert down_etcd.returncode == 0 and "stopped etcd" in down_etcd.stdout
    status = _nbdb(state_dir, "servers", "status")
    assert "etcd" not in status.stdout and "redis" in status.stdout

    down = _nbdb(state_dir, "servers", "down")
    assert down.returncode == 0, down.stderr
    assert not any(_pid_alive(pid) for pid in pids)
    assert not any(d.exists() for d in dirs)
    assert json.loads((state_dir / "state.json").read_text()) == []
    assert "no servers" in _nbdb(state_dir, "servers", "status").stdout


@pytest.mark.timeout(180)
def test_up_cluster(tmp_path: Path) -> None:
    state_dir = tmp_path / "servers"
    up = _nbdb(state_dir, "servers", "up", "redis", "ovsdb", "--cluster", "3", "--json")
    try:
        assert up.returncode == 0, up.stderr
        servers = json.loads(up.stdout)
        kinds = {s["kind"]: s for s in servers}
        assert set(kinds) == {"redis-sentinel", "ovsdb"}
        assert kinds["redis-sentinel"]["url"].startswith("redis+sentinel://127.0.0.1:")
        assert kinds["redis-sentinel"]["url"].endswith("/nbdb")
        assert len(kinds["redis-sentinel"]["sentinels"]) == 3
        assert kinds["ovsdb"]["url"].count(",") == 2
    finally:
        down = _nbdb(state_dir, "servers", "down")
    assert down.returncode == 0, down.stderr
    assert not [p for p in state_dir.iterdir() if p.is_dir()]


@pytest.mark.timeout(60)
def test_missing_binary_fails_with_install_hint(tmp_path: Path) -> None:
    up = _nbdb(tmp_path / "servers", "servers", "up", "redis", path=str(tmp_path))
    assert up.returncode == 1
    assert "install-servers.sh" in up.stderr and "redis-server" in up.stderr
    state = tmp_path / "servers" / "state.json"
    assert not state.exists() or json.loads(state.read_text()) == []


@pytest.mark.timeout(60)
def test_down_unknown_target(tmp_path: Path) -> None:
    result = _nbdb(tmp_path / "servers", "servers", "down", "nosuchkind")
    assert result.returncode == 2 and "nosuchkind" in result.stderr


@pytest.mark.timeout(60)
def test_down_of_what_is_not_running_says_so(tmp_path: Path) -> None:
    """`down etcd` with no etcd started exited 0 without a word, as if it had stopped one."""
    result = _nbdb(tmp_path / "servers", "servers", "down", "etcd")
    assert result.returncode == 0 and result.stdout == ""
    assert "no server running of etcd" in result.stderr
    result = _nbdb(tmp_path / "servers", "servers", "down")
    assert result.returncode == 0 and "no server running of any kind" in result.stderr


@pytest.mark.timeout(180)
def test_up_ovsdb_serves_the_schema_asked_for_and_the_model_database(tmp_path: Path) -> None:
    """`servers up ovsdb` served OVN_Northbound and nothing else: no flag chose SB, another schema, or the
    second database of the models without a table there (the harness's schema= and model_schema=)."""
    import nbdb
    from nbdb.models import Chassis

    state_dir = tmp_path / "servers"
    up = _nbdb(state_dir, "servers", "up", "ovsdb", "--schema", "sb", "--model-schema")
    try:
        assert up.returncode == 0, up.stderr
        kind, url, _ = up.stdout.strip().split("\t")
        assert kind == "ovsdb" and url.endswith("?database=OVN_Southbound"), url
        address = url.removeprefix("ovsdb+tcp://").partition("?")[0]
        dbs = subprocess.run(
            ["ovsdb-client", "list-dbs", f"tcp:{address}"], capture_output=True, text=True, timeout=30, check=True
        )
        assert set(dbs.stdout.split()) == {"OVN_Southbound", "nbdb", "_Server"}
        with nbdb.connect(url) as db:  # the printed URL is the one to use: it names the database
            chassis = db.create(Chassis(name="c1", hostname="h1"))  # no SB table of nbdb's: the model database
            assert db.get(Chassis, chassis.id).hostname == "h1"
        status = _nbdb(state_dir, "servers", "status")
        assert status.stdout.split("\t")[1] == url  # what `status` prints after the command exited
    finally:
        down = _nbdb(state_dir, "servers", "down")
    assert down.returncode == 0, down.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["redis", "--schema", "sb"], "options of ovsdb"),
        (["ovsdb", "--schema", "/nonexistent/x.ovsschema"], "no such file"),
    ],
)
def test_up_refuses_ovsdb_flags_it_cannot_use_before_starting_anything(
    tmp_path: Path, argv: list[str], said: str
) -> None:
    up = _nbdb(tmp_path / "servers", "servers", "up", *argv)
    assert (up.returncode, up.stdout) == (2, "")
    assert said in up.stderr
    state = tmp_path / "servers" / "state.json"
    assert not state.exists() or json.loads(state.read_text()) == []
