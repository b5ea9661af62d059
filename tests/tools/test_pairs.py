"""Copy, follow, resume and dump/load between every pair of backends, on real servers.

Servers are started once per session by the harness (:mod:`nbdb.testing`); each test works in
namespaces of its own. A server that is not installed skips its pairs locally and fails in CI.
"""

from __future__ import annotations

import io
import itertools
import pathlib
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

import nbdb
from nbdb import testing
from nbdb.capabilities import Atomicity
from nbdb.models import Model
from nbdb.tools import CheckpointFile, Copier, CopyIncomplete, CopyOptions, dump, load, verify

from .conftest import NB_MODELS, OVN_MODELS, Churn, assert_no_dangling, build_network, count_objects

pytestmark = pytest.mark.timeout(240)

BACKENDS = ["memory", "sqlite", "redis", "etcd", "ovsdb", "cassandra", "hazelcast"]
PAIRS = [(a, b) for a, b in itertools.permutations(BACKENDS, 2)]


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Kind -> URL of a running server, started on first use and stopped at the end of the session."""
    started: dict[str, testing.Server] = {}

    class Urls(dict[str, str]):
        def __missing__(self, kind: str) -> str:
            if kind == "sqlite":  # embedded: a file, no server
                self[kind] = f"sqlite:///{tmp_path_factory.mktemp('sqlite')}/tools.db"
                return self[kind]
            testing.require_server(kind)
            server = testing.start_server(kind)
            started[kind] = server
            self[kind] = server.url
            return server.url

    yield Urls()
    for server in started.values():
        server.stop()


@pytest.fixture
def open_db(servers: dict[str, str]) -> Iterator[Callable[[str], tuple[str, nbdb.Database]]]:
    """Open a database of a kind in a namespace private to the test; returns its URL too."""
    opened: list[nbdb.Database] = []

    def make(kind: str) -> tuple[str, nbdb.Database]:
        namespace = f"tools{uuid.uuid4().hex[:10]}"
        if kind == "memory":
            url = f"memory://{namespace}"
        else:
            base = servers[kind]
            url = f"{base}{'&' if '?' in base else '?'}namespace={namespace}"
        db = nbdb.connect(url)
        opened.append(db)
        return url, db

    yield make
    for db in opened:
        db.close()


def models_for(*kinds: str) -> tuple[type[Model], ...]:
    return NB_MODELS if "ovsdb" in kinds else OVN_MODELS


def unique() -> str:
    """A prefix for names: OVSDB keeps some names unique across the server, whatever the namespace."""
    return f"{uuid.uuid4().hex[:6]}-"


def ids(pair: tuple[str, str]) -> str:
    return f"{pair[0]}-to-{pair[1]}"


@pytest.mark.parametrize("pair", PAIRS, ids=ids)
def test_copy_and_verify(pair: tuple[str, str], open_db: Callable[[str], tuple[str, nbdb.Database]]) -> None:
    (_, src), (_, dst) = open_db(pair[0]), open_db(pair[1])
    models = models_for(*pair)
    n = build_network(src, chassis="ovsdb" not in pair, prefix=unique())
    result = Copier(src, dst, CopyOptions(models=models)).run()
    assert result.differences == []
    assert count_objects(dst, models) == n
    assert_no_dangling(dst, models)
    assert verify(src, dst, models) == []


@pytest.mark.parametrize("pair", PAIRS, ids=ids)
def test_follow_under_concurrent_writes(
    pair: tuple[str, str], open_db: Callable[[str], tuple[str, nbdb.Database]], tmp_path: pathlib.Path
) -> None:
    (src_url, src), (dst_url, dst) = open_db(pair[0]), open_db(pair[1])
    models = models_for(*pair)
    build_network(src, chassis="ovsdb" not in pair, prefix=unique())
    stop = threading.Event()
    state = tmp_path / "state.json"
    copier = Copier(
        src,
        dst,
        CopyOptions(models=models, follow=True),
        stop=stop,
        checkpoint=CheckpointFile(state),
        source_url=src_url,
        destination_url=dst_url,
    )
    results: list[object] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            results.append(copier.run())
        except BaseException as exc:
            failures.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    _wait_for_phase(state, "follow")  # the first sync pass is done: what follows must be followed
    with nbdb.connect(src_url) as writer:  # another client of the source
        Churn(writer, count=150, pause=0.002, prefix=unique()).run()
    time.sleep(0.5)
    stop.set()
    runner.join(120)
    assert not runner.is_alive()
    assert not failures, failures
    assert copier.result.differences == []
    assert copier.result.changes > 0
    assert verify(src, dst, models) == []


@pytest.mark.parametrize("pair", PAIRS, ids=ids)
def test_an_interrupted_copy_is_resumed(
    pair: tuple[str, str], open_db: Callable[[str], tuple[str, nbdb.Database]], tmp_path: pathlib.Path
) -> None:
    (src_url, src), (dst_url, dst) = open_db(pair[0]), open_db(pair[1])
    models = models_for(*pair)
    n = build_network(src, chassis="ovsdb" not in pair, prefix=unique())
    state = CheckpointFile(tmp_path / "state.json")

    def copier(**options: object) -> Copier:
        opts = CopyOptions(models=models, batch=4, **options)  # type: ignore[arg-type]
        return Copier(src, dst, opts, checkpoint=state, source_url=src_url, destination_url=dst_url)

    with pytest.raises(CopyIncomplete):
        copier(limit=n // 2).run()
    assert 0 < count_objects(dst, models) < n
    Churn(src, count=40, seed=9, prefix=unique()).run()  # the source moves on meanwhile
    result = copier().run()
    assert result.resumed == "sync"
    assert result.differences == []
    assert count_objects(dst, models) == count_objects(src, models)
    assert_no_dangling(dst, models)


@pytest.mark.parametrize("kind", BACKENDS)
def test_dump_load_round_trip(kind: str, open_db: Callable[[str], tuple[str, nbdb.Database]]) -> None:
    models = models_for(kind)
    with nbdb.connect() as origin:
        n = build_network(origin, chassis=kind != "ovsdb", prefix=unique())
        first = io.BytesIO()
        dump(origin, first, models=models)
        _, db = open_db(kind)
        atomic = db.capabilities.transactions is Atomicity.ATOMIC
        if not atomic:
            with pytest.raises(nbdb.UnsupportedError, match="--resume"):
                load(db, io.BytesIO(first.getvalue()))
            assert count_objects(db, models) == 0
        summary = load(db, io.BytesIO(first.getvalue()), resume=not atomic)
        assert summary.written == n
        second = io.BytesIO()
        dump(db, second, models=models)
        assert second.getvalue().splitlines()[1:-1] == first.getvalue().splitlines()[1:-1]
        assert verify(origin, db, models) == []


def _wait_for_phase(path: pathlib.Path, phase: str, timeout: float = 60) -> None:
    import json

    deadline = time.monotonic() + timeout
    while not (path.exists() and json.loads(path.read_text() or "{}").get("phase") == phase):
        assert time.monotonic() < deadline, f"the copy did not reach its {phase} phase"
        time.sleep(0.05)


def test_the_command_killed_while_following_resumes_and_stops_cleanly_on_sigint(
    open_db: Callable[[str], tuple[str, nbdb.Database]], tmp_path: pathlib.Path
) -> None:
    import signal
    import subprocess
    import sys

    (src_url, src), (dst_url, dst) = open_db("redis"), open_db("etcd")
    build_network(src, prefix=unique())
    state = tmp_path / "state.json"
    command = [sys.executable, "-m", "nbdb.cli", "copy", src_url, dst_url, "--state", str(state)]
    command += ["--models", *[m.nbdb_table for m in OVN_MODELS]]

    proc = subprocess.Popen([*command, "--follow"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_phase(state, "follow")
        Churn(src, count=60, pause=0.005, prefix=unique()).run()
        proc.kill()  # SIGKILL: no clean-up at all
        proc.wait(10)
        Churn(src, count=60, seed=2, pause=0.001, prefix=unique()).run()

        before = state.stat().st_mtime_ns
        proc = subprocess.Popen([*command, "--follow"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        Churn(src, count=30, seed=3, pause=0.005, prefix=unique()).run()
        deadline = time.monotonic() + 60
        while state.stat().st_mtime_ns == before:  # the resumed copy saved a new checkpoint: it is following
            assert time.monotonic() < deadline, "the resumed copy did not follow"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)  # the normal end of a --follow: catch up, verify
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        assert b"resumed from its follow phase" in err
        assert b"verified: both sides hold the same objects" in err
    finally:
        if proc.poll() is None:
            proc.kill()
    assert verify(src, dst, OVN_MODELS) == []
    assert not state.exists()


def test_the_command_copies_one_sqlite_file_into_another(tmp_path: pathlib.Path) -> None:
    from nbdb.cli import main

    src_url, dst_url = f"sqlite:///{tmp_path}/old.db", f"sqlite:///{tmp_path}/new.db"
    with nbdb.connect(src_url) as src:
        n = build_network(src)
    assert main(["copy", src_url, dst_url, "--state", str(tmp_path / "state.json")]) == 0
    assert main(["verify", src_url, dst_url]) == 0
    with nbdb.connect(dst_url) as dst:
        assert count_objects(dst, OVN_MODELS) == n
        assert_no_dangling(dst, OVN_MODELS)


def test_models_a_backend_cannot_store_are_left_out_only_when_empty(
    open_db: Callable[[str], tuple[str, nbdb.Database]], tmp_path: pathlib.Path
) -> None:
    from nbdb.models import Chassis

    # The commands run in a process of their own: "every model" there is the built-in ones
    # (this process holds models other tests defined); the source is a sqlite file they can open too.
    src_url, (dst_url, _) = f"sqlite:///{tmp_path}/src.db", open_db("ovsdb")
    with nbdb.connect(src_url) as src:
        n = build_network(src, chassis=False, prefix=unique())

    def cli(*argv: str) -> tuple[int, str]:
        code = "import sys; from nbdb.cli import main; sys.exit(main(sys.argv[1:]))"
        out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
        return out.returncode, out.stderr

    # No --models: every model, but Chassis (no OVN_Northbound table) holds nothing here, so it is left out.
    code, err = cli("copy", src_url, dst_url, "--state", str(tmp_path / "a"))
    assert code == 0, err
    assert f"{n} objects at the last sync" in err
    assert cli("verify", src_url, dst_url)[0] == 0
    with nbdb.connect(src_url) as src:
        src.create(Chassis(name=f"{unique()}hv"))
    code, err = cli("copy", src_url, dst_url, "--state", str(tmp_path / "b"), "--overwrite")
    assert code == 2
    assert "the source holds Chassis objects but the destination cannot store them" in err
    code, err = cli("copy", src_url, dst_url, "--models", "Chassis", "--state", str(tmp_path / "c"))
    assert code == 2
    assert "leave Chassis out of --models" in err


def test_a_copy_or_load_larger_than_one_etcd_commit_takes_is_written_in_smaller_commits(
    servers: dict[str, str],
) -> None:
    # A --batch (200) over etcd's limit on one commit (128 operations; 8 here) failed the whole copy and a
    # load --resume with "split it": the applier now halves a group the destination refuses as too large.
    testing.require_server("etcd")
    base = servers["etcd"]
    url = f"{base}{'&' if '?' in base else '?'}max_txn_ops=8&namespace="
    with nbdb.connect() as origin:
        n = build_network(origin, prefix=unique())
        with nbdb.connect(url + f"c{uuid.uuid4().hex[:10]}") as dst:
            result = Copier(origin, dst, CopyOptions(models=OVN_MODELS)).run()
            assert result.differences == [] and result.written == n
        data = io.BytesIO()
        dump(origin, data, models=OVN_MODELS)
        with nbdb.connect(url + f"l{uuid.uuid4().hex[:10]}") as dst:
            with pytest.raises(nbdb.ValidationError, match=r"max_txn_ops.*nothing was written: pass --resume"):
                load(dst, io.BytesIO(data.getvalue()))
            assert count_objects(dst) == 0
            assert load(dst, io.BytesIO(data.getvalue()), resume=True).written == n
            assert verify(origin, dst, OVN_MODELS) == []
