"""The sqlite backend beside other writers of its file: long transactions, Ctrl-C, close(), spoiled rows.

Another connection holding SQLite's write lock stands for another process's
long transaction (the lock is the file's, whatever process holds it); rows
written with the ``sqlite3`` module stand for an edit with the ``sqlite3`` shell.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import nbdb
from nbdb.backends.sqlite import SqliteBackend
from nbdb.conformance.kit import watched_and_cached
from nbdb.families.kvgroup import GroupInterrupted
from nbdb.families.kvtypes import KeyCommit
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.spi import UniqueKey

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "nb.db"


@contextmanager
def write_locked(path: Path) -> Iterator[None]:
    """Another connection to an nbdb file holds SQLite's write lock within the block."""
    nbdb.connect(f"sqlite:///{path}").close()
    raw = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    raw.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        raw.execute("ROLLBACK")
        raw.close()


def test_an_nbdb_file_opens_and_reads_while_another_process_holds_a_long_write_transaction(path: Path) -> None:
    # Opening took the write lock to check the schema: it waited ?timeout= and failed.
    with write_locked(path), nbdb.connect(f"sqlite:///{path}?timeout=0.2") as db:
        assert db.list(LogicalSwitch) == []
        with pytest.raises(nbdb.BackendUnavailableError, match="locked"):
            db.create(LogicalSwitch(name="waits"))


def test_close_ends_another_thread_s_wait_for_the_write_lock(path: Path) -> None:
    # The wait slept in SQLite for all of ?timeout=, and close() waited behind it.
    db = nbdb.connect(f"sqlite:///{path}?timeout=30")
    outcome: list[BaseException] = []
    waiting = threading.Event()

    def write() -> None:
        waiting.set()
        try:
            db.create(LogicalSwitch(name="waits"))
        except BaseException as exc:  # the test looks at it
            outcome.append(exc)

    with write_locked(path):
        writer = threading.Thread(target=write)
        writer.start()
        waiting.wait(10)
        time.sleep(0.3)  # into the wait, most likely (else close() comes first: "closed" as well)
        db.close()
        writer.join(60)
    assert len(outcome) == 1
    assert isinstance(outcome[0], nbdb.BackendUnavailableError)
    assert "closed" in str(outcome[0]), "close() ended the wait, not ?timeout="


def test_a_lock_s_timeout_bounds_its_wait_for_the_write_lock(path: Path) -> None:
    # Each try to take the lease waited all of ?timeout= (30 s here) for SQLite's write lock.
    with nbdb.connect(f"sqlite:///{path}?timeout=30") as db, write_locked(path):
        with pytest.raises(nbdb.BackendUnavailableError, match="caller's timeout"):
            with db.lock("leader", ttl=5, timeout=0.2):
                pass


def _run_script(script: str, hung: str) -> tuple[str, str]:
    """The output and errors of ``python -c script``; the test fails with ``hung`` if it takes over 90 s."""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        return proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(hung)


def test_ctrl_c_ends_a_wait_for_the_write_lock(path: Path) -> None:
    # SQLite's wait sleeps in C: Python raised the KeyboardInterrupt only after all of ?timeout= (600 s here).
    script = textwrap.dedent(
        f"""
        import os, signal, sqlite3, threading
        import nbdb
        from nbdb.models import LogicalSwitch
        db = nbdb.connect("sqlite:///{path}?timeout=600")
        raw = sqlite3.connect({str(path)!r}, isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            db.create(LogicalSwitch(name="waits"))
        except KeyboardInterrupt:
            print("interrupted", raw.in_transaction, flush=True)
        """
    )
    out, err = _run_script(script, "Ctrl-C did not end the wait for the write lock")
    assert out.split() == ["interrupted", "True"], err


def _interrupting(method: str, event: str) -> Any:
    """A profile function raising KeyboardInterrupt, as a signal's would, at ``event`` of a write block's ``method``.

    The write block: the connection's ``transaction("IMMEDIATE")`` context manager (a generator's before it
    was a class: both are matched, so that these tests ran on the code before the fix). The profile turns
    itself off as it raises.
    """

    def interrupt(frame: Any, seen: str, arg: object) -> None:
        if seen != event or frame.f_code.co_name != method:
            return
        held = frame.f_locals.get("self")
        gen = getattr(held, "gen", None)
        if gen is not None and gen.gi_code.co_name == "transaction":
            mode = gen.gi_frame.f_locals.get("mode") if gen.gi_frame is not None else None
        else:
            mode = getattr(held, "mode", None) if type(held).__name__ == "_Block" else None
        if mode == "IMMEDIATE":
            sys.setprofile(None)
            raise KeyboardInterrupt

    return interrupt


def _write_interrupted(db: nbdb.Database, method: str = "__enter__", event: str = "return") -> KeyboardInterrupt:
    """The KeyboardInterrupt a create got at ``event`` of its write block's ``method`` (the caller keeps it alive)."""
    sys.setprofile(_interrupting(method, event))
    try:
        db.create(LogicalSwitch(name="interrupted"))
    except KeyboardInterrupt as exc:
        return exc
    finally:
        sys.setprofile(None)
    raise AssertionError("the KeyboardInterrupt was not raised where the test meant it")


def _within(seconds: float, work: Any) -> list[Any]:
    """``[work()]``, run in a daemon thread; ``[]`` if it did not end within ``seconds`` (it hung) or raised."""
    done: list[Any] = []
    worker = threading.Thread(target=lambda: done.append(work()), daemon=True)
    worker.start()
    worker.join(seconds)
    return done


def test_ctrl_c_as_a_write_transaction_begins_does_not_hang_the_close(path: Path) -> None:
    # A Ctrl-C landing after the connection's transaction generator yielded (the write lock taken) but before
    # the caller's `with` had it left the generator suspended, kept alive by the KeyboardInterrupt's traceback:
    # `nbdb copy` printed "interrupted" and its close waited for that lock for ever.
    db = nbdb.connect(f"sqlite:///{path}")
    db.list(LogicalSwitch)

    def write_then_close() -> str:
        interrupt = _write_interrupted(db)
        db.close()  # while the exception (and its traceback) is alive, as the CLI's with-block closes
        return type(interrupt).__name__

    assert _within(4, write_then_close) == ["KeyboardInterrupt"], "the close hung on the interrupted transaction"
    with nbdb.connect(f"sqlite:///{path}") as again:
        assert again.list(LogicalSwitch) == []  # rolled back as the connection closed


@pytest.mark.parametrize("in_memory", [False, True], ids=["file", "in-memory"])
@pytest.mark.parametrize(
    ("method", "event"), [("__enter__", "return"), ("__exit__", "call")], ids=["as-it-begins", "as-it-ends"]
)
def test_ctrl_c_at_a_write_transaction_s_edge_hangs_no_later_call(
    path: Path, method: str, event: str, in_memory: bool
) -> None:
    # The Ctrl-C lands where the block's own clean-up cannot run: as __enter__ returns (the lock taken, the
    # transaction begun, the caller's `with` not yet holding it) or as __exit__ starts (the writes made, not
    # committed). Its traceback stays alive, as sys.last_traceback keeps it in a REPL. The thread's next write
    # (in memory, also its reads: they use the writer's connection), and another thread's write, each waited
    # for the lock for ever; now the thread's next call takes it over and rolls the transaction back.
    db = nbdb.connect("sqlite://" if in_memory else f"sqlite:///{path}")
    before = db.create(LogicalSwitch(name="before"))
    kept: list[BaseException] = []  # the KeyboardInterrupt, its traceback and the frames it holds

    def interrupted_then_more() -> list[object]:
        kept.append(_write_interrupted(db, method, event))
        listed = sorted(s.name for s in db.list(LogicalSwitch))
        return [listed, db.get(LogicalSwitch, before.id) == before, db.create(LogicalSwitch(name="after")).name]

    assert _within(4, interrupted_then_more) == [[["before"], True, "after"]], "the thread's next call hung"
    assert _within(4, lambda: db.create(LogicalSwitch(name="other")).name) == ["other"], "another thread's hung"
    assert sorted(s.name for s in db.list(LogicalSwitch)) == ["after", "before", "other"]
    db.close()
    if not in_memory:
        with nbdb.connect(f"sqlite:///{path}") as again:
            assert sorted(s.name for s in again.list(LogicalSwitch)) == ["after", "before", "other"]


def test_a_write_transaction_left_by_a_ctrl_c_lets_its_lock_go_when_its_traceback_goes(path: Path) -> None:
    # Nothing of the interrupted thread's takes the lock over: another thread's write waits only until the
    # KeyboardInterrupt (and the block it keeps) is collected.
    db = nbdb.connect(f"sqlite:///{path}")
    db.list(LogicalSwitch)
    kept = _within(4, lambda: _write_interrupted(db))
    assert len(kept) == 1
    kept.clear()
    gc.collect()
    assert _within(4, lambda: db.create(LogicalSwitch(name="other")).name) == ["other"], "the write hung"
    db.close()
    with nbdb.connect(f"sqlite:///{path}") as again:
        assert [s.name for s in again.list(LogicalSwitch)] == ["other"]


def test_a_group_s_block_left_by_a_ctrl_c_after_its_commit_lets_its_lock_go_when_its_traceback_goes(path: Path) -> None:
    # A Ctrl-C lands after a group's COMMIT, in its block's __exit__ just before the lock is let go (at the any()
    # of its let-go chain; before, at the call of _let_go). commit_group keeps that KeyboardInterrupt in a local
    # (``interrupt``, the cause of its GroupInterrupted). The block's record of its holder keeping the frame of its
    # `with` (commit_group's, finished) kept that local, hence the traceback and the block itself, reachable from
    # the connection: never collected, its lock never let go; another thread's write waited for ever.
    db = nbdb.connect(f"sqlite:///{path}")
    db.list(LogicalSwitch)
    backend = db.backend
    assert isinstance(backend, SqliteBackend)

    def interrupt(frame: Any, seen: str, arg: object) -> None:
        at = frame if seen == "c_call" and arg is any else None
        if seen == "call" and frame.f_code.co_name == "_let_go":
            at = frame.f_back
        if at is not None and at.f_code.co_name == "__exit__":
            if getattr(at.f_locals.get("self"), "mode", None) == "IMMEDIATE":
                sys.setprofile(None)
                raise KeyboardInterrupt

    sys.setprofile(interrupt)
    try:
        with pytest.raises(GroupInterrupted) as raised:
            backend.commit_group([KeyCommit([], {f"{backend.layout.prefix}zz": b"1"}, [])])
    finally:
        sys.setprofile(None)
    assert raised.value.outcomes == [1] and isinstance(raised.value.__cause__, KeyboardInterrupt)
    del raised
    gc.collect()
    assert _within(4, lambda: db.create(LogicalSwitch(name="other")).name) == ["other"], "the write hung"
    db.close()


def _opened_writer(path: Path) -> tuple[nbdb.Database, Any]:
    """A database on ``path``, its schema made, and its backend's writer connection (nbdb's own _Connection)."""
    db = nbdb.connect(f"sqlite:///{path}")
    db.list(LogicalSwitch)
    backend = db.backend
    assert isinstance(backend, SqliteBackend)
    return db, backend._writer


@pytest.mark.parametrize("when", ["in-its-body", "as-it-commits"])
@pytest.mark.parametrize("inner", ["nested", "close"])
def test_a_block_or_close_inside_its_thread_s_open_transaction_rolls_it_back_and_says_so(
    path: Path, inner: str, when: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nested blocks are unsupported (docs/backends/sqlite.md): a block's holder record is its thread alone, so a
    # block (or a close) inside the thread's open one takes it for one a Ctrl-C left and rolls it back; the outer
    # exit must say so, never lose its writes without a word or hang. close() there took it for a nested block and
    # raised UnsupportedError after it had marked the connection closing: half-closed, still open, and its every
    # later wait for the write lock gave up at once. Now it closes.
    # "as-it-commits": the inner block (or a close: a signal handler's, say) comes while the outer exit commits,
    # past its look at whether it still holds the lock (the writer's _commit, nbdb's own, patched to run it
    # first); the exit's COMMIT then fails. That exit popped its record with no default: a KeyError replaced the
    # outcome. It now lets go the one way the other paths do (_let_go), says the transaction was rolled back, and
    # leaves the connection alone (not its block's any more: another thread may hold it by then).
    db, writer = _opened_writer(path)
    commit = writer._commit

    def take_over() -> None:
        if inner == "close":
            writer.close()
        else:
            with writer.transaction():
                pass

    def taken_over_then_commit() -> None:
        monkeypatch.undo()  # once
        take_over()
        commit()

    if when == "as-it-commits":
        monkeypatch.setattr(writer, "_commit", taken_over_then_commit)
    with pytest.raises(nbdb.BackendUnavailableError, match="rolled this transaction back"):
        with writer.transaction("IMMEDIATE") as sql:
            sql.execute("INSERT INTO nbdb_leases VALUES ('left', x'00', 0)")
            if when == "in-its-body":
                take_over()
    assert not writer._held and not writer.lock.locked()
    if inner == "close":
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            sql.execute("SELECT 1")
    else:
        assert _within(4, lambda: db.create(LogicalSwitch(name="after")).name) == ["after"], "another thread's hung"
    db.close()
    other = sqlite3.connect(path)
    try:
        assert other.execute("SELECT key FROM nbdb_leases").fetchall() == []  # nothing of the rolled back one
    finally:
        other.close()
    with nbdb.connect(f"sqlite:///{path}") as again:  # nor is the file's write lock held
        assert _within(4, lambda: again.create(LogicalSwitch(name="again")).name) == ["again"]


def test_ctrl_c_in_the_leader_of_a_group_commit_leaves_the_others_commits_applied(path: Path) -> None:
    # The main thread leads a group (two other threads' commits behind its own) and waits for the write lock
    # another connection holds; Ctrl-C. SQLite rolled the group back, yet the other threads each got
    # CommitUnknownError: their commits are now sent again, and applied once the lock is free.
    # The steps are seconds apart: "first" holds the one request in flight until ?timeout= (4 s) ends it,
    # the main thread queues at 0.5 s, b and c behind it at 1 s; it leads from 4 s and is interrupted at 6 s.
    script = textwrap.dedent(
        f"""
        import os, signal, sqlite3, threading, time
        import nbdb
        from nbdb.models import LogicalSwitch
        db = nbdb.connect("sqlite:///{path}?timeout=4")
        db.list(LogicalSwitch)
        raw = sqlite3.connect({str(path)!r}, isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")
        results = {{}}

        def create(name):
            try:
                results[name] = type(db.create(LogicalSwitch(name=name))).__name__
            except BaseException as exc:
                results[name] = type(exc).__name__

        first = threading.Thread(target=create, args=("first",))
        first.start()
        time.sleep(0.5)
        later = [threading.Thread(target=create, args=(name,)) for name in ("b", "c")]
        threading.Timer(0.5, lambda: [t.start() for t in later]).start()
        threading.Timer(5.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            create("leader")
        except KeyboardInterrupt:
            results["leader"] = "KeyboardInterrupt"
        raw.execute("ROLLBACK")
        for t in [first, *later]:
            t.join(30)
        print(sorted(results.items()), sorted(s.name for s in db.list(LogicalSwitch)), flush=True)
        """
    )
    out, err = _run_script(script, "the group commit hung")
    expected = [("b", "LogicalSwitch"), ("c", "LogicalSwitch"), ("first", "BackendUnavailableError")]
    assert out.strip() == f"{sorted([*expected, ('leader', 'KeyboardInterrupt')])} ['b', 'c']", err


@pytest.mark.parametrize("revision", ["x", 99], ids=["text", "ahead-of-the-counter"])
def test_a_change_log_row_of_no_commit_is_not_delivered(path: Path, revision: object) -> None:
    # A text revision sorted after every number: every read of the log returned it, a watch delivered a
    # change no commit made, and a cache re-listed after a TypeError, again and again; a page showed its
    # "previous" value. A row ahead of the revision counter was delivered before its revision was reached.
    with nbdb.connect(f"sqlite:///{path}") as db:
        victim = db.create(LogicalSwitch(name="victim"))
        key = f"o/~/LogicalSwitch/{victim.id}"
        with watched_and_cached(db, LogicalSwitch) as watched:
            raw = sqlite3.connect(path, isolation_level=None)
            (value,) = raw.execute("SELECT value FROM nbdb_keys WHERE key = ?", (key,)).fetchone()
            ghost = value.replace(b"victim", b"ghost")
            raw.execute("INSERT INTO nbdb_changes VALUES (?, ?, ?, 2, ?, 1)", (revision, key, ghost, ghost))
            raw.close()
            after = db.create(LogicalSwitch(name="after"))
            events: list[nbdb.ChangeEvent[LogicalSwitch]] = []
            for _ in range(50):
                events += watched.watch.poll(0.2)
                if any(e.new is not None and e.new.id == after.id for e in events):
                    break
            assert [(e.kind, e.object.name) for e in events] == [(nbdb.EventKind.CREATED, "after")]
            assert watched.cache.wait_for(after, 15)
            assert sorted(s.name for s in watched.cache.list(LogicalSwitch)) == ["after", "victim"]
            assert watched.cache.relists == 0
        assert sorted(s.name for s in db.list(LogicalSwitch, limit=10)) == ["after", "victim"]


def test_a_spoiled_revision_counter_is_a_corrupt_record(path: Path) -> None:
    # Every read and write hit a TypeError unpacking the missing row.
    with nbdb.connect(f"sqlite:///{path}") as db:
        switch = db.create(LogicalSwitch(name="s"))
        sqlite3.connect(path, isolation_level=None).execute("DELETE FROM nbdb_state").connection.close()
        for call in (
            lambda: db.list(LogicalSwitch),
            lambda: db.list(LogicalSwitch, limit=5),
            lambda: db.create(LogicalSwitch(name="t")),
            lambda: db.delete(switch),
            lambda: db.watch(LogicalSwitch, since=0).poll(1),
        ):
            with pytest.raises(nbdb.CorruptRecordError, match="nbdb_state"):
                call()
    with pytest.raises(nbdb.CorruptRecordError, match="nbdb_state"):
        nbdb.connect(f"sqlite:///{path}")


def test_a_file_marked_as_nbdb_s_without_its_tables_is_refused(path: Path) -> None:
    # It opened, and every call was a BackendUnavailableError "no such table".
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute(f"PRAGMA application_id={0x6E626462}")
    raw.execute("PRAGMA user_version=1")
    raw.close()
    with pytest.raises(nbdb.CorruptRecordError, match="lacks nbdb_changes, nbdb_keys, nbdb_leases, nbdb_state"):
        nbdb.connect(f"sqlite:///{path}")


def test_a_lease_whose_expiry_another_tool_set_to_text_expires(path: Path) -> None:
    # Text sorts after every number in SQLite: `expires <= now` never held, and the lock was taken for ever.
    with nbdb.connect(f"sqlite:///{path}") as db:
        with db.lock("spoiled", ttl=5, timeout=1):
            raw = sqlite3.connect(path, isolation_level=None)
            raw.execute("UPDATE nbdb_leases SET expires = 'never', value = X'00'")
            raw.close()
        with db.lock("spoiled", ttl=5, timeout=2) as handle:
            assert not handle.lost


def test_a_referrer_whose_revision_another_tool_set_to_text_is_a_corrupt_record(path: Path) -> None:
    # A text mod_revision read as "changed since" for ever: a delete that checks the referrers was
    # refused as a conflict at every try.
    with nbdb.connect(f"sqlite:///{path}") as db:
        switch = db.create(LogicalSwitch(name="s"))
        db.create(LogicalSwitchPort(name="p", switch=switch.id))
        other = db.create(LogicalSwitch(name="t"))
        raw = sqlite3.connect(path, isolation_level=None)
        spoiled = raw.execute("UPDATE nbdb_keys SET mod_revision = 'x' WHERE key LIKE 'r/%'").rowcount
        raw.close()
        assert spoiled == 1
        with pytest.raises(nbdb.CorruptRecordError, match="not a whole number"):
            db.delete(switch, cascade=True)
        db.delete(other)  # a commit beside it is not held up
        assert [s.name for s in db.list(LogicalSwitch)] == ["s"]


def test_a_commit_readers_hold_up_outside_wal_mode_waits_for_them_or_is_not_written(path: Path) -> None:
    # Outside WAL mode (a filesystem without shared memory) a commit waits for every reader's lock. The
    # writer connection's 0.1 s wait applied to COMMIT too, and its busy error (SQLite keeps the
    # transaction open: nothing written) was reported as CommitUnknownError.
    from nbdb.backends.sqlite import _Connection
    from nbdb.families import kvstore

    writer = _Connection(str(path), kvstore.ChangeSignal(), 0.6, "NORMAL", writer=True)
    try:
        writer.sql.execute("PRAGMA journal_mode=DELETE")
        # Leaving WAL deleted the -shm file the connection saw at open (nbdb never leaves WAL): look at the
        # files as they are now, as a connection opened outside WAL mode does.
        writer.identity = None
        writer.sql.execute("CREATE TABLE t (v INTEGER)")
        reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM t").fetchone()  # a shared lock, held
        with pytest.raises(nbdb.BackendUnavailableError, match="not written"):
            with writer.transaction("IMMEDIATE") as sql:
                sql.execute("INSERT INTO t VALUES (1)")
        assert not writer.sql.in_transaction
        reader.execute("COMMIT")
        assert reader.execute("SELECT count(*) FROM t").fetchone() == (0,)
        # A reader that lets go while the commit waits: it is written.
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM t").fetchone()
        letting_go = threading.Timer(0.25, lambda: reader.execute("COMMIT"))
        letting_go.start()
        with writer.transaction("IMMEDIATE") as sql:
            sql.execute("INSERT INTO t VALUES (2)")
        letting_go.join(10)
        assert reader.execute("SELECT v FROM t").fetchall() == [(2,)]
        reader.close()
    finally:
        writer.sql.close()


def _without_root_s_file_access() -> list[str]:
    """A prefix that runs a command without the power to ignore file permissions (root has it)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root writes read-only files, and setpriv (to run without that power) is missing")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}"]


_READ_ONLY_SCRIPT = """
import sys, threading
import nbdb
from nbdb.models import LogicalSwitch
try:
    db = nbdb.connect("sqlite://" + sys.argv[1])
except nbdb.NbdbError as exc:
    sys.exit(f"connect: {type(exc).__name__}: {exc}")
print("read", [s.name for s in db.list(LogicalSwitch)])
out = []
def create(name):
    try:
        db.create(LogicalSwitch(name=name))
        out.append("written")
    except nbdb.NbdbError as exc:
        out.append(f"{type(exc).__name__}: {exc}")
create("alone")
threads = [threading.Thread(target=create, args=(f"t{n}",)) for n in range(6)]  # some commit in groups
for t in threads:
    t.start()
for t in threads:
    t.join(30)
print("\\n".join(sorted(set(out))))
"""


@pytest.mark.parametrize("read_only", ["file", "directory"])
def test_a_read_only_database_file_is_said_to_be_read_only_not_unavailable(path: Path, read_only: str) -> None:
    # Writing to a file this process may not write raised BackendUnavailableError ("attempt to write a readonly
    # database"), as if the server were down and a retry could help; a read-only directory refused the
    # connect so. Reads of a read-only file go on working.
    with nbdb.connect(f"sqlite:///{path}") as db:
        db.create(LogicalSwitch(name="a"))
    target = path if read_only == "file" else path.parent
    mode = target.stat().st_mode
    target.chmod(0o444 if read_only == "file" else 0o555)
    try:
        done = subprocess.run(
            [*_without_root_s_file_access(), sys.executable, "-c", _READ_ONLY_SCRIPT, str(path)],
            capture_output=True,
            text=True,
            timeout=90,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
    finally:
        target.chmod(mode)
    if read_only == "file":
        lines = done.stdout.splitlines()
        assert lines[0] == "read ['a']", done.stderr
        assert len(lines) == 2 and lines[1].startswith("AuthError: sqlite: the database file is read-only"), lines
    else:
        assert done.returncode == 1 and done.stderr.startswith(f"connect: AuthError: sqlite opening '{path}'")
        assert "the database file is read-only" in done.stderr
    with nbdb.connect(f"sqlite:///{path}") as db:
        assert [s.name for s in db.list(LogicalSwitch)] == ["a"]


def test_an_object_whose_version_another_tool_set_to_text_is_a_corrupt_record_on_write(path: Path) -> None:
    # Its update and delete were a ConflictError ("is at version x, not 1: re-read it and retry") at every
    # try; a write of whatever version, a TypeError out of the commit. Watchers and caches go on.
    with nbdb.connect(f"sqlite:///{path}") as db:
        victim = db.create(LogicalSwitch(name="victim"))
        other = db.create(LogicalSwitch(name="other"))
        with watched_and_cached(db, LogicalSwitch) as watched:
            raw = sqlite3.connect(path, isolation_level=None)
            key = f"o/~/LogicalSwitch/{victim.id}"
            assert raw.execute("UPDATE nbdb_keys SET version = 'x' WHERE key = ?", (key,)).rowcount == 1
            raw.close()
            for write in (
                lambda: db.update(victim.model_copy(update={"name": "renamed"})),
                lambda: db.delete(victim),
                lambda: db.mutate((LogicalSwitch, victim.id), add={"external_ids": {"k": "v"}}),
            ):
                with pytest.raises(nbdb.CorruptRecordError, match=f"{victim.id} has version 'x'"):
                    write()
            db.update(other.model_copy(update={"name": "other2"}))  # a write beside it is not held up
            after = db.create(LogicalSwitch(name="after"))
            assert watched.cache.wait_for(after, 15)
            events: list[nbdb.ChangeEvent[LogicalSwitch]] = []
            for _ in range(50):
                events += watched.watch.poll(0.2)
                if any(e.new is not None and e.new.id == after.id for e in events):
                    break
            assert [(e.kind, e.object.name) for e in events] == [
                (nbdb.EventKind.UPDATED, "other2"), (nbdb.EventKind.CREATED, "after")
            ]  # fmt: skip
            gone = db.delete(LogicalSwitch, victim.id)  # the way to be rid of it: a delete of whatever version
            assert gone is not None and watched.cache.wait_for(int(gone), 15)
            assert sorted(s.name for s in watched.cache.list(LogicalSwitch)) == ["after", "other2"]
        assert sorted(s.name for s in db.list(LogicalSwitch)) == ["after", "other2"]


@pytest.mark.parametrize("spoil", ["compacted = 'x'", "changes = -5", "changes = 2.5"])
def test_a_namespace_s_trim_mark_another_tool_spoiled_drops_its_history_and_writes_go_on(
    path: Path, spoil: str
) -> None:
    # nbdb_trims is read on every commit: spoiled, each one would fail. Watchers behind are told
    # (HistoryGoneError) and a cache re-lists; the next commit mends the mark.
    with nbdb.connect(f"sqlite:///{path}?namespace=a") as db:
        start = db.list(LogicalSwitch).revision
        db.create(LogicalSwitch(name="s0"))
        with watched_and_cached(db, LogicalSwitch) as watched:
            raw = sqlite3.connect(path, isolation_level=None)
            # The row a trim writes (commits below history= write none), spoiled.
            raw.execute("INSERT OR IGNORE INTO nbdb_trims VALUES ('a/', 0, 0)")
            raw.execute(f"UPDATE nbdb_trims SET {spoil}")
            raw.close()
            after = db.create(LogicalSwitch(name="after"))
            with pytest.raises(nbdb.HistoryGoneError):
                db.watch(LogicalSwitch, since=start).poll(1)
            assert [e.object.name for e in db.watch(LogicalSwitch, since=after.nbdb_revision - 1).poll(1)] == ["after"]
            assert watched.cache.wait_for(after, 15)
            assert sorted(s.name for s in watched.cache.list(LogicalSwitch)) == ["after", "s0"]
            assert watched.watch_reports == watched.cache_reports == []
        again = sqlite3.connect(path).execute("SELECT typeof(compacted), changes FROM nbdb_trims").fetchone()
        assert again == ("integer", 2)


@pytest.mark.parametrize("group_commit", [32, 0], ids=["grouped", "alone"])
@pytest.mark.parametrize("lie", ["another object", "no such object", "no id"])
def test_a_released_unique_claim_another_tool_spoiled_is_a_corrupt_record_not_deleted(
    path: Path, lie: str, group_commit: int
) -> None:
    # A rename or delete released its claim unread: one another tool pointed at an object that does not hold
    # the value (or spoiled) was deleted with it, the evidence gone. It is refused, and the key stays as it
    # was; a write of another object is not held up. (One naming the value's true holder: the next test.)
    with nbdb.connect(f"sqlite:///{path}?group_commit={group_commit}") as db:
        switch = db.create(LogicalSwitch(name="sw"))
        a, b = (db.create(LogicalSwitchPort(switch=switch.id, name=n)) for n in ("a", "b"))
        backend = db.backend
        assert isinstance(backend, SqliteBackend)
        claim = backend.layout.unique(
            "LogicalSwitchPort", UniqueKey("name", LogicalSwitchPort.unique_text(("name",), {"name": "a"}))
        )
        # b does not hold "a"; no object has the id; the claim holds no id: the claim lies, whoever holds "a".
        spoiled = {"another object": str(b.id), "no such object": str(uuid.uuid4()), "no id": "\x00not an id"}[lie]
        raw = sqlite3.connect(path, isolation_level=None)
        try:
            assert raw.execute("UPDATE nbdb_keys SET value = ? WHERE key = ?", (spoiled.encode(), claim)).rowcount == 1
            for write in (lambda: db.update(a.replace(name="renamed")), lambda: db.delete(a)):
                with pytest.raises(nbdb.CorruptRecordError, match="which this write releases") as refused:
                    write()
                assert refused.value.key == claim
                stays = raw.execute("SELECT value FROM nbdb_keys WHERE key = ?", (claim,)).fetchone()
                assert stays == (spoiled.encode(),)
            assert db.get(LogicalSwitchPort, a.id).name == "a"
            db.update(b.replace(name="b2"))  # a write beside it is not held up
            # The repair the error names: the key set to the holder of the value, the port written (no other).
            repair = "UPDATE nbdb_keys SET value = CAST(? AS BLOB) WHERE key = ?"
            assert raw.execute(repair, (str(a.id), claim)).rowcount == 1
        finally:
            raw.close()
        db.delete(a)
        assert [s.name for s in db.list(LogicalSwitchPort)] == ["b2"]
        db.create(LogicalSwitchPort(switch=switch.id, name="a"))  # the value was freed with its holder


@pytest.mark.parametrize("group_commit", [32, 0], ids=["grouped", "alone"])
@pytest.mark.parametrize("release", ["delete", "in a transaction"])
def test_a_duplicate_whose_index_another_tool_spoiled_goes_without_freeing_its_value_under_the_true_holder(
    path: Path, release: str, group_commit: int
) -> None:
    # Another tool made ``dup``'s index a second holder of "x"; the claim is true (it names ``holder``). The
    # release of "x" by dup's delete (by id: the index read) was refused as a lying claim (dup could never
    # go), and the advised repair (delete the key) freed "x" under its holder: a create of "x" then succeeded.
    with nbdb.connect(f"sqlite:///{path}") as db:
        switch = db.create(LogicalSwitch(name="sw"))
        holder, dup = (db.create(LogicalSwitchPort(switch=switch.id, name=n)) for n in ("x", "z"))
        backend = db.backend
        assert isinstance(backend, SqliteBackend)
        x = LogicalSwitchPort.unique_text(("name",), {"name": "x"})
        claim, index = (
            backend.layout.unique("LogicalSwitchPort", UniqueKey("name", x)),
            backend.layout.index("LogicalSwitchPort", dup.id),
        )
    with sqlite3.connect(path) as raw:
        doc = json.loads(raw.execute("SELECT value FROM nbdb_keys WHERE key = ?", (index,)).fetchone()[0])
        doc["u"] = [["name", x]]
        raw.execute("UPDATE nbdb_keys SET value = ? WHERE key = ?", (json.dumps(doc).encode(), index))
    with nbdb.connect(f"sqlite:///{path}?group_commit={group_commit}") as db:  # no index of dup remembered
        if release == "delete":
            db.delete(LogicalSwitchPort, dup.id)
        else:  # beside another write of the table, which claims a value of its own
            with db.transaction() as txn:
                txn.delete(LogicalSwitchPort, dup.id)
                txn.create(LogicalSwitchPort(switch=switch.id, name="w"))
        with sqlite3.connect(path) as raw:
            assert raw.execute("SELECT value FROM nbdb_keys WHERE key = ?", (claim,)).fetchone() == (
                str(holder.id).encode(),
            )
        assert db.get_by(LogicalSwitchPort, name="x").id == holder.id
        with pytest.raises(nbdb.UniqueViolationError):
            db.create(LogicalSwitchPort(switch=switch.id, name="x"))
        db.delete(holder)  # the true holder's release frees it
        db.create(LogicalSwitchPort(switch=switch.id, name="x"))


def test_a_block_taken_over_after_its_commit_ran_is_never_said_rolled_back(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A signal handler that closes the connection (taking the block's lock over) and raises, landing right after
    # COMMIT ran: the transaction is durable. The exit must not say "rolled this transaction back" (a wrong
    # outcome, and ``committed`` left empty); it knows COMMIT ran, or says the outcome is unknown.
    db, writer = _opened_writer(path)
    commit = writer._commit

    def commit_then_handler() -> None:
        monkeypatch.undo()
        commit()  # COMMIT ran: durable
        with writer.transaction():  # the handler's own block takes the lock over (rolls back nothing: none open)
            pass
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "_commit", commit_then_handler)
    committed: list[bool] = []
    with pytest.raises(BaseException) as raised:
        with writer.transaction("IMMEDIATE", committed) as sql:
            sql.execute("INSERT INTO nbdb_leases VALUES ('kept', x'00', 0)")
    assert raised.type is KeyboardInterrupt  # the handler's interrupt goes on, the outcome known (committed)
    assert not writer._held and not writer.lock.locked()
    assert writer.one("SELECT count(*) FROM nbdb_leases WHERE key = 'kept'")[0] == 1  # it was committed
    assert "rolled this transaction back" not in str(raised.value), raised.value
    assert committed == [True]  # COMMIT ran, whatever interrupted it (the _Block contract)
    db.close()
