"""The one-shot flag a commit's threads hand off with (``Done``): set once, every waiter wakes (no server)."""

from __future__ import annotations

import threading
import time

import pytest

from nbdb.families.ovsdb.done import Done

pytestmark = pytest.mark.timeout(30)


def test_a_wait_times_out_until_set_and_returns_at_once_after() -> None:
    done = Done()
    assert not done.is_set()
    started = time.monotonic()
    assert done.wait(0.05) is False
    assert time.monotonic() - started >= 0.04
    assert done.wait(0) is False
    done.set()
    assert done.is_set()
    assert done.wait(0) is True
    assert done.wait(None) is True
    assert done.wait(-1) is True


def test_setting_it_again_changes_nothing() -> None:
    done = Done()
    for _ in range(3):
        done.set()
        assert done.wait(0)


def test_every_waiter_wakes_when_it_is_set_once() -> None:
    done = Done()
    woken: list[bool] = []
    lock = threading.Lock()

    def waiter() -> None:
        got = done.wait(10)
        with lock:
            woken.append(got)

    threads = [threading.Thread(target=waiter) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    assert woken == []
    done.set()
    for t in threads:
        t.join(10)
    assert woken == [True] * 8
    assert done.wait(0)


def test_concurrent_sets_and_waits_leave_it_set() -> None:
    for _ in range(200):
        done = Done()
        results: list[bool] = []

        def waiter(flag: Done = done, into: list[bool] = results) -> None:
            into.append(flag.wait(10))

        setters = [threading.Thread(target=done.set) for _ in range(3)]
        waiters = [threading.Thread(target=waiter) for _ in range(3)]
        for t in waiters + setters:
            t.start()
        for t in waiters + setters:
            t.join(10)
        assert results == [True] * 3
        assert done.is_set() and done.wait(0)
