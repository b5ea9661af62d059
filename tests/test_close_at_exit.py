"""A process that exits without closing its Database gives its locks back at exit, not after their ttl."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

import nbdb

pytestmark = pytest.mark.timeout(120)

_TTL = 30.0
"""Far longer than the test waits for the lock: a lock freed only by its ttl fails it."""

_HOLDER = textwrap.dedent(
    """
    import sys, threading
    import nbdb

    db = nbdb.connect(sys.argv[1])
    ttl = float(sys.argv[2])
    if sys.argv[3] == "thread":
        # A leader's loop on a daemon thread (as a controller runs it), inside its lock's block at exit.
        ready = threading.Event()

        def lead():
            with db.lock("leader", ttl=ttl):
                ready.set()
                threading.Event().wait()

        threading.Thread(target=lead, daemon=True).start()
        assert ready.wait(30)
    else:
        held = db.lock("leader", ttl=ttl)
        held.__enter__()  # a block that never ends: the script just finishes
    print("held", flush=True)
    # No db.close(): the interpreter exits.
    """
)


def _hold_and_exit(url: str, how: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(nbdb.__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", _HOLDER, url, str(_TTL), how], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0 and "held" in done.stdout, done.stderr


@pytest.mark.parametrize("kind", ["sqlite", "redis", "etcd"])
@pytest.mark.parametrize("how", ["main", "thread"])
def test_a_lock_held_by_a_process_that_exits_without_closing_is_free_at_once(
    kind: str, how: str, url_of: Callable[[str], str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/nb-{uuid.uuid4().hex[:6]}.db" if kind == "sqlite" else url_of(kind)
    _hold_and_exit(url, how)
    with nbdb.connect(url) as db:
        started = time.monotonic()
        with db.lock("leader", ttl=5, timeout=10) as held:  # LockTimeoutError: still held until the ttl
            assert not held.lost
        assert time.monotonic() - started < 10


def test_a_database_dropped_unclosed_is_not_kept_alive_for_exit() -> None:
    """The exit hook holds Databases weakly: one dropped (and collected) is not kept, nor closed twice."""
    import gc
    import weakref

    db = nbdb.connect("memory://")
    ref = weakref.ref(db)
    del db
    gc.collect()
    assert ref() is None


_BLOCKED = textwrap.dedent(
    """
    import atexit, sys, threading, time
    import nbdb
    from nbdb.models import LogicalSwitch

    spent = {}
    atexit.register(lambda: print(f"closed in {time.monotonic() - spent['from']:.1f}", flush=True))  # runs last
    db = nbdb.connect("memory://")
    running = threading.Semaphore(0)

    def stuck(event):
        running.release()
        threading.Event().wait()  # a callback that never returns (it waits for the main thread, say)

    for _ in range(4):
        db.cache([LogicalSwitch]).subscribe(stuck)
    db.create(LogicalSwitch(name="x"))
    for _ in range(4):
        assert running.acquire(timeout=30)
    atexit.register(lambda: spent.setdefault("from", time.monotonic()))  # runs first, before nbdb's close
    print("stuck", flush=True)
    # No db.close(): the interpreter exits.
    """
)


def _exit_of(script: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """The run of ``script``, which prints "stuck" and then how long its exit hooks took; and that time."""
    env = {**os.environ, "PYTHONPATH": str(Path(nbdb.__file__).parents[1])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=90)
    assert done.returncode == 0 and "stuck" in done.stdout, done.stderr
    return done, float(done.stdout.split("closed in ")[1])


def test_exit_does_not_wait_for_callbacks_that_never_return() -> None:
    """The exit hook's close leaves running callbacks to their daemon threads: it waited 5 s for each one."""
    _, spent = _exit_of(_BLOCKED)
    assert spent < 3.0, f"the exit hook waited {spent} s for 4 callbacks that never return"


_STUCK = textwrap.dedent(
    """
    import atexit, threading, time
    import nbdb, nbdb.controller
    from nbdb.models import LogicalSwitch

    nbdb.controller.STOP_AT_EXIT_SECONDS = 0.5
    spent = {}
    atexit.register(lambda: print(f"closed in {time.monotonic() - spent['from']:.1f}", flush=True))  # runs last
    db = nbdb.connect("memory://")
    running = threading.Event()

    def reconcile(key, obj):
        running.set()
        threading.Event().wait()  # a reconcile that never returns (it waits for the main thread, say)

    nbdb.run_controller(db.cache([LogicalSwitch]), reconcile)
    db.create(LogicalSwitch(name="x"))
    assert running.wait(30)
    atexit.register(lambda: spent.setdefault("from", time.monotonic()))  # runs first, before nbdb's close
    print("stuck", flush=True)
    """
)


def test_the_exit_waits_for_a_running_reconcile_no_longer_than_its_bound() -> None:
    """The exit stops a running controller first (its reconciles finish), but within STOP_AT_EXIT_SECONDS."""
    done, spent = _exit_of(_STUCK)
    assert spent < 3.0, f"the exit waited {spent} s for a reconcile that never returns (bound: 0.5 s)"
    assert "a reconcile still ran at exit" in done.stderr


_FORKS = textwrap.dedent(
    """
    import os, sys
    import nbdb

    db = nbdb.connect(sys.argv[1])
    held = db.lock("leader", ttl=float(sys.argv[2]))
    held.__enter__()
    pid = os.fork()
    if pid == 0:
        sys.exit(0)  # a forked child that ends normally: its exit hooks run, on the parent's Databases too
    _, status = os.waitpid(pid, 0)
    assert status == 0, status
    with nbdb.connect(sys.argv[1]) as other:
        try:
            with other.lock("leader", ttl=5, timeout=1):
                print("taken: the child gave the parent's lock back", flush=True)
        except nbdb.LockTimeoutError:
            print("still held", flush=True)
    held.__exit__(None, None, None)
    db.close()
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork")
def test_a_forked_child_exiting_leaves_the_parents_databases_alone(url_of: Callable[[str], str]) -> None:
    """The exit hook of a forked child closed the parent's Databases: it gave the parent's locks back."""
    env = {**os.environ, "PYTHONPATH": str(Path(nbdb.__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", _FORKS, url_of("redis"), str(_TTL)], capture_output=True, text=True, env=env, timeout=90
    )
    assert done.returncode == 0, done.stderr
    assert "still held" in done.stdout, done.stdout + done.stderr


def test_the_exit_hooks_copy_of_open_databases_survives_opens_and_closes_on_other_threads() -> None:
    # list() of the WeakSet raised RuntimeError ("Set changed size during iteration") when another
    # thread opened or closed a Database meanwhile, and the exit hook then closed none of them.
    from nbdb import api

    held = [nbdb.connect("memory://") for _ in range(2000)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        while not stop.is_set():
            nbdb.connect("memory://").close()

    worker = threading.Thread(target=churn, daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                api._open_now()
            except RuntimeError as exc:
                errors.append(exc)
    finally:
        stop.set()
        worker.join(10)
        for db in held:
            db.close()
    assert errors == []
