"""The sqlite backend beyond the kit: URLs, foreign files, history, and real processes sharing one file.

The kit (``--nbdb-url=sqlite:///...``) checks the semantics; these tests check what
only a file shared by processes can show: a writer killed with SIGKILL in the
middle of its commits loses nothing it acknowledged and leaves no partial
transaction, another process's cache follows with no gap, and locks and ids
hold across processes.
"""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.backends.sqlite import SqliteBackend, SqliteMemoryBackend, _upper
from nbdb.capabilities import Durability
from nbdb.conformance.kit import watched_and_cached
from nbdb.events import EventKind
from nbdb.families.kv import KeyCommit, VersionIs
from nbdb.models import LogicalSwitch, LogicalSwitchPort

pytestmark = pytest.mark.timeout(120)

WORKER = Path(__file__).with_name("sqlite_worker.py")
PORTS_PER_SWITCH = 40  # long commits: a kill lands inside one more often than between two


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'nb.db'}"


class Worker:
    """A worker process on the same file; its stdout lines are what it acknowledged."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def line(self) -> str:
        text = self.proc.stdout.readline() if self.proc.stdout else ""
        if not text:
            self.proc.wait(10)
            raise AssertionError(f"worker ended: {self.proc.stderr.read() if self.proc.stderr else ''}")
        return text.strip()

    def kill(self) -> list[str]:
        """SIGKILL (no clean-up at all); the lines it had written before."""
        self.proc.kill()
        out, _ = self.proc.communicate(timeout=30)
        return out.splitlines()

    def finish(self) -> None:
        _, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        if worker.proc.poll() is None:
            worker.kill()


# ---------------------------------------------------------------- key ranges


@given(prefix=st.text(min_size=1).map(lambda p: p + "/"), keys=st.lists(st.text(), max_size=30))
def test_a_prefix_range_in_sqlite_holds_exactly_the_keys_with_that_prefix(prefix: str, keys: list[str]) -> None:
    """Namespaces and topics are user text: the SQL range must match str.startswith for any of it."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE k (key TEXT PRIMARY KEY) WITHOUT ROWID")
    candidates = {*keys, *(prefix + k for k in keys), prefix, prefix[:-1]}
    db.executemany("INSERT INTO k VALUES (?)", [(k,) for k in candidates])
    found = {k for (k,) in db.execute("SELECT key FROM k WHERE key >= ? AND key < ?", (prefix, _upper(prefix)))}
    assert found == {k for k in candidates if k.startswith(prefix)}


# ---------------------------------------------------------------- URLs and files


def test_a_path_is_durable_and_no_path_is_volatile(url: str) -> None:
    with nbdb.connect(url) as db:
        assert isinstance(db.backend, SqliteBackend) and db.capabilities.durability is Durability.DURABLE
        switch = db.create(LogicalSwitch(name="kept"))
    with nbdb.connect(url) as db:
        assert db.get(LogicalSwitch, switch.id) == switch
    for volatile in ("sqlite://", "sqlite://:memory:"):
        with nbdb.connect(volatile) as a, nbdb.connect(volatile) as b:
            assert isinstance(a.backend, SqliteMemoryBackend) and not a.capabilities.cross_process
            a.create(LogicalSwitch(name="private"))
            assert list(b.list(LogicalSwitch)) == []


def test_a_relative_path_is_relative_to_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with nbdb.connect("sqlite://data.db") as db:
        db.create(LogicalSwitch(name="x"))
    assert (tmp_path / "data.db").exists()


def test_namespaces_share_the_file_not_the_data(url: str) -> None:
    with nbdb.connect(url, namespace="a") as a, nbdb.connect(url, namespace="b") as b:
        a.create(LogicalSwitch(name="in-a"))
        assert list(b.list(LogicalSwitch)) == []


@pytest.mark.parametrize(
    "query", ["history=0", "history=many", "timeout=-1", "poll_interval=0", "synchronous=sometimes", "colour=red"]
)
def test_bad_options_are_validation_errors(url: str, query: str) -> None:
    with pytest.raises(nbdb.ValidationError):
        nbdb.connect(f"{url}?{query}")


def test_a_nul_in_the_path_is_a_validation_error(tmp_path: Path) -> None:
    with pytest.raises(nbdb.ValidationError):  # was sqlite3's ValueError "embedded null byte"
        nbdb.connect(f"sqlite:///{tmp_path}/nb%00.db")


@pytest.mark.parametrize("url", ["sqlite://", "file"])
@pytest.mark.parametrize("nested", ["a/o", "a/i/x", "/a", "a/"])
def test_a_namespace_cannot_nest_in_another(url: str, nested: str, tmp_path: Path) -> None:
    # "a/o" was taken: its keys sat under namespace "a"'s, which then listed them as corrupt objects of topic "o".
    target = url if url == "sqlite://" else f"sqlite:///{tmp_path / 'nb.db'}"
    with pytest.raises(nbdb.ValidationError, match="namespace"):
        nbdb.connect(target, namespace=nested)


def test_files_that_are_not_nbdb_databases_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all, but long enough to have a header of sixteen bytes\n" * 20)
    with pytest.raises(nbdb.ValidationError, match="not a usable SQLite database"):
        nbdb.connect(f"sqlite:///{text}")
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as raw:
        raw.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(nbdb.ValidationError, match="another application"):
        nbdb.connect(f"sqlite:///{other}")
    newer = tmp_path / "newer.db"
    nbdb.connect(f"sqlite:///{newer}").close()
    with sqlite3.connect(newer) as raw:
        raw.execute("PRAGMA user_version = 99")
    with pytest.raises(nbdb.UnsupportedError, match="schema 99"):
        nbdb.connect(f"sqlite:///{newer}")


def test_a_missing_directory_is_backend_unavailable(tmp_path: Path) -> None:
    with pytest.raises(nbdb.BackendUnavailableError):
        nbdb.connect(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")


def test_a_writer_holding_the_lock_past_the_timeout_is_backend_unavailable(url: str) -> None:
    with nbdb.connect(f"{url}?timeout=0.2") as db:
        raw = sqlite3.connect(url.removeprefix("sqlite://"), isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")  # another client takes SQLite's write lock and keeps it
        try:
            with pytest.raises(nbdb.BackendUnavailableError, match="locked"):
                db.create(LogicalSwitch(name="blocked"))
            assert list(db.list(LogicalSwitch)) == [], "readers are not blocked by the writer (WAL)"
        finally:
            raw.execute("ROLLBACK")
            raw.close()
        assert db.create(LogicalSwitch(name="after")).version == 1


# ---------------------------------------------------------------- history


def test_history_is_bounded_and_watchers_behind_it_are_told(url: str) -> None:
    with nbdb.connect(f"{url}?history=10") as db:
        start = db.list(LogicalSwitch).revision
        for i in range(30):
            db.create(LogicalSwitch(name=f"s{i}"))
        with pytest.raises(nbdb.HistoryGoneError, match="trimmed"):
            db.watch(LogicalSwitch, since=start).poll(1)
        # A create changes two keys (the object and its index record): 10 changes are 5 creates.
        recent = db.list(LogicalSwitch).revision - 5
        assert len(db.watch(LogicalSwitch, since=recent).poll(1)) == 5, "at least `history` changes are kept"
        kept = sqlite3.connect(url.removeprefix("sqlite://")).execute("SELECT count(*) FROM nbdb_changes").fetchone()
        assert 10 <= kept[0] <= 12


@pytest.mark.parametrize("trimmer", ["b", ""], ids=["namespace", "no-namespace"])
def test_history_is_a_namespace_s_own(url: str, trimmer: str) -> None:
    # The log's count and trim were the file's: the namespace of the smallest history= trimmed every
    # other's, and a watcher of a quiet namespace got HistoryGoneError after another's commits.
    def connect(namespace: str, history: int) -> nbdb.Database:
        return nbdb.connect(f"{url}?history={history}" + (f"&namespace={namespace}" if namespace else ""))

    with connect("a", 100_000) as quiet, connect(trimmer, 10) as busy:
        start = quiet.list(LogicalSwitch).revision
        quiet.create(LogicalSwitch(name="first"))
        for i in range(30):
            busy.create(LogicalSwitch(name=f"s{i}"))
        quiet.create(LogicalSwitch(name="last"))
        events = quiet.watch(LogicalSwitch, since=start).poll(1)
        assert [e.object.name for e in events] == ["first", "last"]
        with pytest.raises(nbdb.HistoryGoneError, match="trimmed"):  # the busy one's own bound holds
            busy.watch(LogicalSwitch, since=start).poll(1)
        recent = busy.list(LogicalSwitch).revision - 6  # 5 creates, and the quiet one's last
        assert len(busy.watch(LogicalSwitch, since=recent).poll(1)) == 5
        busy.backend.compact_history()  # a namespace's compaction is its own too
        assert [e.object.name for e in quiet.watch(LogicalSwitch, since=start).poll(1)] == ["first", "last"]
        with pytest.raises(nbdb.HistoryGoneError):
            busy.watch(LogicalSwitch, since=recent).poll(1)
        page = quiet.list(LogicalSwitch, limit=5)  # a page looks back at the quiet one's log, kept whole
        assert sorted(s.name for s in page) == ["first", "last"]


def test_commits_below_history_write_no_trim_row(url: str) -> None:
    # The namespace's count was written with every commit (a statement and a WAL page each, +8 % of a
    # create); the file's count bounds it, so nothing is written until a trim may be due.
    with nbdb.connect(f"{url}?history=100&namespace=a") as db:
        for i in range(20):
            db.create(LogicalSwitch(name=f"s{i}"))
        assert db.allocate_id("n") == 1
    raw = sqlite3.connect(url.removeprefix("sqlite://"))
    assert raw.execute("SELECT * FROM nbdb_trims").fetchall() == []
    assert raw.execute("SELECT count(*) FROM nbdb_changes").fetchone()[0] == 42


@settings(max_examples=15, deadline=None)
@example(history=(8, 8), commits=[(2, 3)] * 3 + [(0, 1)] * 20 + [(1, 1)] * 5 + [(0, 2)] * 10)  # counted on, then not
@given(
    history=st.tuples(st.integers(min_value=8, max_value=20), st.integers(min_value=8, max_value=20)),
    commits=st.lists(st.tuples(st.integers(min_value=0, max_value=2), st.integers(min_value=1, max_value=3)),
                     max_size=60),
)  # fmt: skip
def test_each_namespace_keeps_its_history_and_no_more_across_connections(
    tmp_path_factory: pytest.TempPathFactory, history: tuple[int, int], commits: list[tuple[int, int]]
) -> None:
    # Two backends of namespace a (two processes, each counting from the log since its own last commit)
    # and one of b, committing in any order: each namespace keeps at least its history= of changes,
    # and at most its bound (5/4 of it, or a commit's changes past it), whatever the others wrote.
    path = tmp_path_factory.mktemp("trims") / "nb.db"
    url = f"sqlite:///{path}?synchronous=normal"
    backends = [
        SqliteBackend.from_url(f"{url}&namespace=a&history={history[0]}"),
        SqliteBackend.from_url(f"{url}&namespace=a&history={history[0]}"),
        SqliteBackend.from_url(f"{url}&namespace=b&history={history[1]}"),
    ]
    raw = sqlite3.connect(path)
    logged = {"a/": 0, "b/": 0}
    try:
        for n, (which, size) in enumerate(commits):
            backend = backends[which]
            prefix = backend.layout.prefix
            assert backend.commit_keys([], {f"{prefix}o/{n}/{k}": b"v" for k in range(size)}, []) is not None
            logged[prefix] += size
            for other, h in zip(("a/", "b/"), history, strict=True):
                kept = raw.execute(
                    "SELECT count(*) FROM nbdb_changes WHERE key >= ? AND key < ?", (other, _upper(other))
                ).fetchone()[0]
                assert kept >= min(logged[other], h)
                assert kept <= max(h * 5 // 4, h + 2)
    finally:
        raw.close()
        for backend in backends:
            backend.close()


def test_a_file_of_nbdb_before_per_namespace_history_counts_on(url: str) -> None:
    # A file of nbdb's schema 1 (no nbdb_trims) is brought to schema 2 at its first connect, so nbdb of
    # schema 1 refuses it from then on: that nbdb read only the file-wide trim mark, and a watcher of it
    # started at a revision a namespace's own trim had dropped got the later changes, silently.
    with nbdb.connect(url) as db:
        db.create(LogicalSwitch(name="s0"))
    raw = sqlite3.connect(url.removeprefix("sqlite://"), isolation_level=None)
    raw.execute("DROP TABLE nbdb_trims")
    raw.execute("PRAGMA user_version=1")
    raw.close()
    with nbdb.connect(f"{url}?history=4") as db:
        raw = sqlite3.connect(url.removeprefix("sqlite://"), isolation_level=None)
        try:
            assert raw.execute("PRAGMA user_version").fetchone()[0] == 2
            assert raw.execute("SELECT count(*) FROM sqlite_schema WHERE name = 'nbdb_trims'").fetchone()[0] == 1
        finally:
            raw.close()
        assert [e.object.name for e in db.watch(LogicalSwitch, since=0).poll(1)] == ["s0"]
        for i in range(1, 6):
            db.create(LogicalSwitch(name=f"s{i}"))
        with pytest.raises(nbdb.HistoryGoneError, match="trimmed"):
            db.watch(LogicalSwitch, since=0).poll(1)
        assert len(db.list(LogicalSwitch)) == 6


def test_a_revision_from_a_replaced_database_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "nb.db"
    with nbdb.connect(f"sqlite:///{path}") as db:
        for i in range(5):
            db.create(LogicalSwitch(name=f"s{i}"))
        saved = db.list(LogicalSwitch).revision
    for leftover in tmp_path.iterdir():
        leftover.unlink()
    with nbdb.connect(f"sqlite:///{path}") as db:
        db.create(LogicalSwitch(name="new"))
        with pytest.raises(nbdb.HistoryGoneError, match="replaced"):
            db.watch(LogicalSwitch, since=saved).poll(1)


# ---------------------------------------------------------------- processes sharing the file


def test_a_writer_killed_mid_commit_loses_no_acknowledged_write_and_leaves_no_partial_one(
    url: str, workers: list[Worker]
) -> None:
    rng = random.Random(19)
    acknowledged: set[str] = set()
    for round in range(3):
        worker = Worker("transactions", url, str(PORTS_PER_SWITCH), f"round{round}-")
        workers.append(worker)
        for _ in range(rng.randint(3, 12)):
            worker.line()
        time.sleep(rng.uniform(0, 0.05))  # land anywhere in the next commits
        lines = worker.kill()
        acknowledged |= {line.split()[1] for line in lines if line.startswith("committed")}
    assert acknowledged
    path = url.removeprefix("sqlite://")
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    with nbdb.connect(url) as db:
        switches = {s.name: s for s in db.list(LogicalSwitch)}
        ports = list(db.list(LogicalSwitchPort))
        stored = set(switches)
        assert acknowledged <= stored, f"acknowledged but lost: {sorted(acknowledged - stored)}"
        by_switch: dict[object, int] = {}
        for port in ports:
            by_switch[port.switch] = by_switch.get(port.switch, 0) + 1
        assert set(by_switch) <= {s.id for s in switches.values()}, "a port of a switch that was never committed"
        for switch in switches.values():
            assert by_switch.get(switch.id) == PORTS_PER_SWITCH, f"{switch.name} was committed in part"
            assert len(db.backend.referrers("LogicalSwitch", switch.id)) == PORTS_PER_SWITCH
        db.create(LogicalSwitch(name="after-the-crashes"))


def test_another_process_s_cache_follows_every_write_with_no_gap(url: str, workers: list[Worker]) -> None:
    count = 30
    with nbdb.connect(f"{url}?poll_interval=0.005") as db:
        cache = db.cache(LogicalSwitch)
        assert cache.wait_synced(10)
        watch = db.watch(LogicalSwitch)
        worker = Worker("churn", url, str(count))
        workers.append(worker)
        final = int(worker.line().split()[1])
        worker.finish()
        versions: dict[object, list[int]] = {}
        deleted: set[object] = set()
        deadline = time.monotonic() + 30
        while watch.revision < final and time.monotonic() < deadline:
            for event in watch.poll(0.5):
                versions.setdefault(event.id, []).append(event.object.version)
                if event.kind is EventKind.DELETED:
                    deleted.add(event.id)
        assert watch.revision >= final
        assert len(versions) == count
        for id, seen in versions.items():
            assert seen == ([1, 2, 3, 3] if id in deleted else [1, 2, 3]), "every version once, in order"
        assert len(deleted) == count - count * 2 // 3
        deadline = time.monotonic() + 30
        while cache.revision < final and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sorted(cache.list(LogicalSwitch), key=str) == sorted(db.list(LogicalSwitch), key=str)
        assert cache.relists == 0

        # A watcher that stops and resumes from its revision picks up what another process wrote meanwhile.
        resume = watch.revision
        watch.close()
        worker = Worker("churn", url, "3")
        workers.append(worker)
        worker.line()
        worker.finish()
        with db.watch(LogicalSwitch, since=resume) as again:
            events = []
            deadline = time.monotonic() + 30
            while len(events) < 3 * 3 + 1 and time.monotonic() < deadline:
                events += again.poll(0.5)
        assert [e.kind for e in events].count(EventKind.CREATED) == 3
        assert len(events) == 3 * 3 + 1


def test_a_lock_excludes_other_processes_until_its_holder_dies(url: str, workers: list[Worker]) -> None:
    holder = Worker("hold-lock", url, "leader")
    workers.append(holder)
    assert holder.line() == "locked"
    with nbdb.connect(url) as db:
        with pytest.raises(nbdb.LockTimeoutError):
            with db.lock("leader", ttl=1.0, timeout=0.5):
                pass
        holder.kill()  # its lease is no longer renewed and expires after its ttl
        started = time.monotonic()
        with db.lock("leader", ttl=1.0, timeout=20) as handle:
            assert not handle.lost
        assert time.monotonic() - started < 20


def test_ids_are_unique_across_processes(url: str, workers: list[Worker]) -> None:
    others = [Worker("allocate", url, "25") for _ in range(2)]
    workers.extend(others)
    with nbdb.connect(url) as db:
        mine = [db.allocate_id("tunnel-key") for _ in range(25)]
    theirs = [int(i) for w in others for i in w.line().split()]
    for worker in others:
        worker.finish()
    assert sorted(mine + theirs) == list(range(1, 76))


def test_the_file_is_in_wal_mode_so_readers_never_block(url: str) -> None:
    nbdb.connect(url).close()
    assert sqlite3.connect(url.removeprefix("sqlite://")).execute("PRAGMA journal_mode").fetchone() == ("wal",)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from("abcdefgh"), st.one_of(st.none(), st.binary(min_size=1, max_size=3))),
        min_size=1,
        max_size=25,
    ),
    limit=st.integers(1, 4),
    prefix=st.sampled_from(["p/", "p/b"]),
)
def test_pages_at_a_revision_show_the_keys_as_they_were_then(
    steps: list[tuple[str, bytes | None]], limit: int, prefix: str
) -> None:
    """Paging at any kept revision, after any later puts and deletes, walks exactly that revision's keys."""
    backend = SqliteMemoryBackend.from_url("sqlite://")
    try:
        states: dict[int, dict[str, bytes]] = {}  # revision 0 (empty) cannot be asked for: 0 means "now"
        state: dict[str, bytes] = {}
        for name, value in steps:
            key = "p/" + name
            if value is None and key not in state:
                continue
            puts, deletes = ({key: value}, []) if value is not None else ({}, [key])
            revision = backend.commit_keys([], puts, deletes)
            assert revision is not None
            state = {k: v for k, v in {**state, **puts}.items() if k not in deletes}
            states[revision] = state
        if not states:
            return
        latest = max(states)
        for revision, expected in [*states.items(), (0, states[latest])]:  # 0: "now", read at the latest
            walked: list[tuple[str, bytes]] = []
            after = None
            while True:
                page, read_at = backend.range_page(prefix, after, limit, revision)
                assert read_at == (revision or latest) and len(page) <= limit
                revision = read_at
                walked += [(kv.key, kv.value) for kv in page]
                if len(page) < limit:
                    break
                after = page[-1].key
            assert walked == sorted((k, v) for k, v in expected.items() if k.startswith(prefix))
    finally:
        backend.close()


# ---------------------------------------------------------------- group commit


def test_threads_of_one_database_share_transactions_each_commit_whole(url: str) -> None:
    """Concurrent commits go into one SQLite transaction (one disk sync), each with its own revision."""
    with nbdb.connect(url) as db, nbdb.connect(url) as other:
        switch = db.create(LogicalSwitch(name="sw"))
        watch = other.watch([LogicalSwitchPort], since=other.list(LogicalSwitchPort).revision)
        backend = db.backend
        assert isinstance(backend, SqliteBackend) and backend.group_commit > 1
        results: list[object] = []
        start = threading.Barrier(8)

        def body(n: int) -> None:
            start.wait(10)
            for i in range(15):
                # Threads 0 and 1 race for the same names: one of each pair wins, wherever they meet.
                name = f"p{i}" if n < 2 else f"p{n}-{i}"
                try:
                    results.append(db.create(LogicalSwitchPort(switch=switch, name=name)))
                except nbdb.UniqueViolationError as exc:
                    results.append(exc)

        threads = [threading.Thread(target=body, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        created = [r for r in results if isinstance(r, LogicalSwitchPort)]
        assert len(created) == 15 + 6 * 15 and len(results) == 8 * 15
        assert backend._committer.grouped > 0, "no commits were grouped"
        revisions = [p.nbdb_revision for p in created]
        assert len(set(revisions)) == len(revisions), "each commit has its own revision"
        seen = []
        deadline = time.monotonic() + 30
        while len(seen) < len(created) and time.monotonic() < deadline:
            seen += [e.new.id for e in watch.poll(1.0) if e.new is not None]
        watch.close()
        assert sorted(seen) == sorted(p.id for p in created)


def test_a_commit_that_fails_in_a_group_leaves_the_others_applied(tmp_path: Path) -> None:
    """A member whose conditions fail (or that errs) is rolled back to its savepoint alone."""
    with nbdb.connect(f"sqlite:///{tmp_path / 'g.db'}") as db:
        backend = db.backend
        assert isinstance(backend, SqliteBackend)
        outcomes = backend.commit_group(
            [
                KeyCommit([VersionIs("a", 0)], {"a": b"1"}, []),
                KeyCommit([VersionIs("a", 0)], {"a": b"2", "b": b"2"}, []),  # a exists by now: fails whole
                KeyCommit([VersionIs("a", 1)], {"c": b"3"}, ["a"]),
            ]
        )
        assert isinstance(outcomes[0], int) and outcomes[1] is None and isinstance(outcomes[2], int)
        assert outcomes[2] == outcomes[0] + 1
        assert backend.get_key("a") is None and backend.get_key("b") is None
        stored = backend.get_key("c")
        assert stored is not None and stored.value == b"3"


# ---------------------------------------------------------------- another writer's rows


def _write_raw_version(path: Path, obj: LogicalSwitch, version: object) -> None:
    """What another writer might do: a valid value with a version column of any type, logged like a commit."""
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        key = next(k for (k,) in raw.execute("SELECT key FROM nbdb_keys") if k.startswith("o/") and str(obj.id) in k)
    finally:
        raw.close()
    _write_raw_key(path, key, obj.replace(name="raw").model_dump_json(exclude={"version"}).encode(), version)


@pytest.mark.parametrize("version", ["abc", b"\x01", 2.5, -3], ids=["text", "blob", "real", "negative"])
def test_a_version_column_another_writer_spoiled_is_a_corrupt_record(tmp_path: Path, version: object) -> None:
    # It was handed out as the object's version by get() and watches, and a cache hit TypeError comparing it.
    path = tmp_path / "nb.db"
    with nbdb.connect(f"sqlite:///{path}") as db:
        victim = db.create(LogicalSwitch(name="victim"))
        with watched_and_cached(db, LogicalSwitch) as watched:
            watch, cache, reports = watched.watch, watched.cache, watched.watch_reports
            _write_raw_version(path, victim, version)
            after = db.create(LogicalSwitch(name="after"))
            events: list[nbdb.ChangeEvent[nbdb.Model]] = []
            while not any(e.new is not None and e.new.id == after.id for e in events):
                events += watch.poll(0.2)
            assert [e.new.id for e in events if e.new is not None] == [after.id]
            assert len(reports) == 1
            assert cache.wait_for(after, 15)
            assert cache.get(LogicalSwitch, victim.id) == victim
            assert (LogicalSwitch.nbdb_table, victim.id) in cache.corrupt
        with pytest.raises(nbdb.CorruptRecordError, match="has version"):
            db.get(LogicalSwitch, victim.id)
        assert db.list(LogicalSwitch, skip_corrupt=True) == [after]
        db.delete(LogicalSwitch, victim.id)  # the way out: a delete of whatever version
        assert db.list(LogicalSwitch) == [after]


def _write_raw_key(path: Path, key: str, value: bytes | None, version: object = None) -> None:
    """Another writer puts (or, with None, deletes) one key, logged like a commit.

    ``version``: what the version column gets, if not the next version.
    """
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        raw.execute("BEGIN IMMEDIATE")
        (revision,) = raw.execute("SELECT revision + 1 FROM nbdb_state").fetchone()
        old = raw.execute("SELECT value, version FROM nbdb_keys WHERE key = ?", (key,)).fetchone()
        old_value, old_version = old if old is not None else (None, 0)
        if value is None:
            raw.execute("DELETE FROM nbdb_keys WHERE key = ?", (key,))
        else:
            new_version = old_version + 1 if version is None else version
            raw.execute("INSERT OR REPLACE INTO nbdb_keys VALUES (?, ?, ?, ?)", (key, value, new_version, revision))
        new_version = 0 if value is None else new_version
        raw.execute(
            "INSERT INTO nbdb_changes VALUES (?, ?, ?, ?, ?, ?)",
            (revision, key, value, new_version, old_value, old_version),
        )
        raw.execute("UPDATE nbdb_state SET revision = ?, changes = changes + 1", (revision,))
        raw.execute("COMMIT")
    finally:
        raw.close()


@pytest.mark.parametrize("spelling", ["{%s}", "%S", "%x", "urn:uuid:%s"], ids=["braces", "upper", "hex", "urn"])
def test_an_object_key_with_its_id_spelled_another_way_is_no_second_copy(tmp_path: Path, spelling: str) -> None:
    # uuid.UUID() reads all of these: the object was listed twice, and the alias's deletion deleted it from caches.
    path = tmp_path / "nb.db"
    with nbdb.connect(f"sqlite:///{path}") as db:
        kept = db.create(LogicalSwitch(name="kept"))
        text = {"%s": str(kept.id), "%S": str(kept.id).upper(), "%x": kept.id.hex}
        alias = spelling.replace("%s", text["%s"]).replace("%S", text["%S"]).replace("%x", text["%x"])
        key = f"o/~/LogicalSwitch/{alias}"
        with db.cache(LogicalSwitch) as cache:
            assert cache.wait_synced(15)
            _write_raw_key(path, key, kept.replace(name="alias").model_dump_json(exclude={"version"}).encode())
            assert db.list(LogicalSwitch) == [kept]
            assert list(db.iter(LogicalSwitch, page_size=1)) == [kept]
            _write_raw_key(path, key, None)
            marker = db.create(LogicalSwitch(name="marker"))
            assert cache.wait_for(marker, 15)
            assert cache.get(LogicalSwitch, kept.id) == kept
        assert db.get(LogicalSwitch, kept.id) == kept


def _damaged_file(path: Path, names: list[str], offset: int, data: bytes) -> None:
    """A file of ``names`` switches, closed (its WAL checkpointed), with ``data`` written over it at ``offset``."""
    with nbdb.connect(f"sqlite://{path}") as db:
        for name in names:
            db.create(LogicalSwitch(name=name))
    with open(path, "r+b") as raw:
        raw.seek(offset)
        raw.write(data)


def _cell_pointers(path: Path) -> int:
    """The file offset of the first cell pointer of the key table's root page (a leaf, for a few keys)."""
    with sqlite3.connect(path) as raw:
        page_size = raw.execute("PRAGMA page_size").fetchone()[0]
        root = raw.execute("SELECT rootpage FROM sqlite_schema WHERE name = 'nbdb_keys'").fetchone()[0]
    return (root - 1) * page_size + 8  # a leaf page's header is 8 bytes; its cell pointers follow


@pytest.mark.timeout(60)
def test_a_file_with_damaged_pages_is_refused_at_connect(tmp_path: Path) -> None:
    # Two cell pointers of the key table's page overwritten: SQLite read the page without an error,
    # and list() returned 2 of 5 objects, silently.
    path = tmp_path / "nb.db"
    _damaged_file(path, [f"s{i}" for i in range(5)], 0, b"")
    offset = _cell_pointers(path) + 2 * 2
    with open(path, "r+b") as raw:
        raw.seek(offset)
        raw.write(b"\xff\xf0\xff\xf0")
    with pytest.raises(nbdb.CorruptRecordError, match="quick_check"):
        nbdb.connect(f"sqlite://{path}")
    with nbdb.connect(f"sqlite://{path}?verify=none"):  # the check skipped, at the caller's word
        pass
    with pytest.raises(nbdb.ValidationError):
        nbdb.connect(f"sqlite://{path}?verify=full")


@settings(max_examples=60, deadline=None)
@given(at=st.integers(min_value=100, max_value=6 * 4096), data=st.binary(min_size=1, max_size=16))
def test_damage_anywhere_is_a_typed_error_or_a_listing_never_a_crash(
    tmp_path_factory: pytest.TempPathFactory, at: int, data: bytes
) -> None:
    # Whatever bytes land wherever in the file: connect refuses it, a read raises a typed error, or
    # the list returns objects. Damage in the schema's text escaped as sqlite3's own
    # UnicodeDecodeError. (Fewer objects is possible: SQLite keeps no checksum of a key's or a
    # value's bytes, and a key whose text changed is no object's key any more; docs/backends/sqlite.md.)
    path = tmp_path_factory.mktemp("damage") / "nb.db"
    names = [f"s{i}" for i in range(5)]
    _damaged_file(path, names, at, data)
    try:
        with nbdb.connect(f"sqlite://{path}") as db:
            listed = db.list(LogicalSwitch)
    except nbdb.NbdbError:
        return
    assert len(listed) <= len(names) and all(isinstance(s, LogicalSwitch) for s in listed)


def test_a_schema_whose_text_is_damaged_is_refused_with_a_typed_error(tmp_path: Path) -> None:
    # Bytes over the table definitions: sqlite3 failed to decode SQLite's own error message and
    # raised UnicodeDecodeError, which no caller of nbdb expects.
    path = tmp_path / "nb.db"
    _damaged_file(path, ["s0"], 0, b"")
    with open(path, "rb") as raw:
        offset = raw.read().index(b"expires REAL")  # in nbdb_leases' CREATE TABLE, on the file's first page
    with open(path, "r+b") as raw:
        raw.seek(offset)
        raw.write(b"'\xbf")
    with pytest.raises(nbdb.CorruptRecordError):
        nbdb.connect(f"sqlite://{path}")
