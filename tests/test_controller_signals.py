"""A controller stopped by SIGTERM (systemd, Kubernetes, ``kill``) exits: its reconciles finish, its locks go back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import nbdb
from nbdb.models import LogicalSwitch
from nbdb.testing.fixtures import shared_server

pytestmark = pytest.mark.timeout(120)

_TTL = 30.0
"""Far longer than the test waits for the lock: a lock freed only by its ttl fails it."""

_AGENT = textwrap.dedent(
    """
    import sys, threading, time
    import nbdb
    from nbdb.models import LogicalSwitch

    db = nbdb.connect(sys.argv[1])
    held = db.lock("leader", ttl=float(sys.argv[2]))
    held.__enter__()  # a leader: the lock is held until the process ends
    cache = db.cache([LogicalSwitch])
    running = threading.Event()

    def reconcile(key, obj):
        running.set()
        time.sleep(0.5)  # in flight when the signal comes
        print("reconciled", flush=True)

    nbdb.run_controller(cache, reconcile)  # no with block, no handler of its own: the usual agent's main
    db.create(LogicalSwitch(name="x"))
    assert running.wait(30)
    print("running", flush=True)
    threading.Event().wait()  # the main thread waits for ever: the signal ends it
    """
)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with shared_server("redis") as server:
        yield server.url


def _signalled(script: str, args: list[str], ready: str, signum: int) -> subprocess.CompletedProcess[str]:
    """Run ``script``, send it ``signum`` once it printed the line ``ready``, and wait for its end (bounded)."""
    env = {**os.environ, "PYTHONPATH": str(Path(nbdb.__file__).parents[1])}
    agent = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert agent.stdout is not None
        line = agent.stdout.readline()  # bounded by the test's timeout
        assert line == f"{ready}\n", line + (agent.stderr.read() if agent.stderr else "")
        agent.send_signal(signum)
        out, err = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    return subprocess.CompletedProcess(agent.args, agent.returncode, line + out, err)


@pytest.mark.parametrize(
    ("kind", "signum"), [("sqlite", signal.SIGTERM), ("redis", signal.SIGTERM), ("sqlite", signal.SIGINT)]
)
def test_a_signal_lets_the_running_reconcile_finish_and_gives_the_lock_back_at_once(
    kind: str, signum: int, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Python's default SIGTERM ended the agent without its exit hooks: the next replica waited the ttl.

    Ctrl-C (Python's KeyboardInterrupt, left as it is) gave the lock back, but closed the Database under the
    reconcile still running: the work in flight was cut off.
    """
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path}/nb.db"
    else:
        url = f"{request.getfixturevalue('redis_url')}?namespace=sig{uuid.uuid4().hex[:8]}"
    done = _signalled(_AGENT, [url, str(_TTL)], "running", signum)
    if signum == signal.SIGTERM:
        assert done.returncode == 0, (done.returncode, done.stderr)  # an exit, asked for: not a failure
    else:
        assert "KeyboardInterrupt" in done.stderr, done.stderr  # as before
    assert "reconciled" in done.stdout, done.stdout + done.stderr  # the reconcile in flight was not cut off
    with nbdb.connect(url) as db:
        started = time.monotonic()
        with db.lock("leader", ttl=5, timeout=10) as held:  # LockTimeoutError: still held until the ttl
            assert not held.lost
        assert time.monotonic() - started < 10


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals: main thread")
def test_the_handler_is_installed_only_over_the_default_and_put_back_by_the_last_close() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        pytest.skip("the test runner handles SIGTERM itself")
    with nbdb.connect("memory://") as db:
        cache = db.cache([LogicalSwitch])
        first = nbdb.run_controller(cache, lambda key, obj: None)
        second = nbdb.run_controller(cache, lambda key, obj: None)
        installed = signal.getsignal(signal.SIGTERM)
        assert installed is not signal.SIG_DFL and callable(installed)
        first.close()
        assert signal.getsignal(signal.SIGTERM) is installed  # another controller still runs
        second.close()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

        def mine(signum: int, frame: object) -> None:
            pass

        signal.signal(signal.SIGTERM, mine)
        try:
            with nbdb.run_controller(cache, lambda key, obj: None):
                assert signal.getsignal(signal.SIGTERM) is mine  # the program's own handler is left alone
            assert signal.getsignal(signal.SIGTERM) is mine
        finally:
            signal.signal(signal.SIGTERM, previous)


def test_a_controller_started_off_the_main_thread_installs_nothing() -> None:
    before = signal.getsignal(signal.SIGTERM)
    seen: list[object] = []
    with nbdb.connect("memory://") as db:
        cache = db.cache([LogicalSwitch])

        def start() -> None:
            with nbdb.run_controller(cache, lambda key, obj: None):
                seen.append(signal.getsignal(signal.SIGTERM))

        thread = threading.Thread(target=start)
        thread.start()
        thread.join(30)
    assert seen == [before]


_CLOSED_OFF_MAIN = textwrap.dedent(
    """
    import threading
    import nbdb
    from nbdb.models import LogicalSwitch

    db = nbdb.connect("memory://")
    controller = nbdb.run_controller(db.cache([LogicalSwitch]), lambda key, obj: None)
    closer = threading.Thread(target=controller.close)  # closed off the main thread: the handler stays
    closer.start()
    closer.join(30)
    print("closed", flush=True)
    threading.Event().wait()
    """
)


def test_a_signal_once_no_controller_runs_takes_the_default_action() -> None:
    """The handler left behind (closed off the main thread, which cannot set handlers) acts as the default."""
    done = _signalled(_CLOSED_OFF_MAIN, [], "closed", signal.SIGTERM)
    assert done.returncode == -signal.SIGTERM, done.stderr


_CLOSING = textwrap.dedent(
    """
    import signal, sys, threading, time
    import nbdb
    from nbdb.models import LogicalSwitch

    db = nbdb.connect(sys.argv[1])
    db.lock("leader", ttl=30).__enter__()
    cache = db.cache([LogicalSwitch])
    controllers = []
    running = threading.Event()

    def reconcile(key, obj):
        running.set()
        deadline = time.monotonic() + 30
        while not controllers[0].stopped and time.monotonic() < deadline:  # the main thread is in its close()
            time.sleep(0.001)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)  # SIGTERM during that close
        time.sleep(0.3)  # still in flight when the handler runs
        print("reconciled", flush=True)

    controllers.append(nbdb.run_controller(cache, reconcile))
    if sys.argv[2] == "another":  # another controller still runs: the handler stays installed
        controllers.append(nbdb.run_controller(cache, lambda key, obj: None))
    db.create(LogicalSwitch(name="x"))
    assert running.wait(30)
    controllers[0].close()  # the program's own orderly stop: waits for the reconcile in flight
    print("closed", flush=True)
    """
)


@pytest.mark.parametrize("others", ["none", "another"])
def test_a_sigterm_during_a_controllers_close_exits_once_its_reconcile_finished(others: str, tmp_path: Path) -> None:
    """The last controller's close() put the default action back before it waited for its workers: one
    SIGTERM then ended the process, the reconcile cut off and the lock kept until its ttl. With another
    controller running, the exit raised in that wait found the closing one gone from the running ones
    (and Python 3.11's join, interrupted, took its worker for ended): the Database closed under its
    reconcile, cut off too."""
    url = f"sqlite:///{tmp_path}/nb.db"
    env = {**os.environ, "PYTHONPATH": str(Path(nbdb.__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", _CLOSING, url, others], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, (done.returncode, done.stderr)  # was -15 for the last one
    assert done.stdout == "reconciled\n", done.stdout + done.stderr  # an exit in close(): "closed" never comes
    with nbdb.connect(url) as db, db.lock("leader", ttl=5, timeout=3) as held:  # LockTimeoutError: kept
        assert not held.lost


def test_closes_beside_controllers_starting_and_closing_on_another_thread_raise_nothing() -> None:
    """close() iterated the running controllers (a WeakSet) while another thread added to it: RuntimeError
    "Set changed size during iteration" (about 20 of 3000 closes), and so could the signal handler."""
    switch = sys.getswitchinterval()
    with nbdb.connect("memory://") as db:
        cache = db.cache([LogicalSwitch])
        kept = [nbdb.run_controller(cache, lambda key, obj: None) for _ in range(200)]
        done = nbdb.run_controller(cache, lambda key, obj: None)
        done.close(5)
        stop = threading.Event()
        failures: list[BaseException] = []

        def starter() -> None:
            started = []
            try:
                while not stop.is_set():
                    started.append(nbdb.run_controller(cache, lambda key, obj: None))
            finally:
                for controller in started:
                    controller.close(1)

        thread = threading.Thread(target=starter)
        sys.setswitchinterval(1e-6)
        try:
            thread.start()
            for _ in range(5000):
                try:
                    done.close(0)
                except RuntimeError as exc:
                    failures.append(exc)
        finally:
            stop.set()
            sys.setswitchinterval(switch)
            thread.join(30)
            for controller in kept:
                controller.close(1)
    assert not failures, failures[:1]
