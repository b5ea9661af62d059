"""Port allocation: free, distinct, reserved across processes, stale ones reclaimed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from nbdb.testing.ports import PortAllocator, _reservation_dir, is_port_free


@pytest.mark.timeout(30)
def test_ports_are_free_distinct_and_released() -> None:
    alloc = PortAllocator()
    ports = [alloc.allocate() for _ in range(20)]
    assert len(set(ports)) == 20
    assert all(20000 <= p < 32000 for p in ports)
    assert all(is_port_free(p) for p in ports)
    assert all((_reservation_dir() / str(p)).read_text() == str(os.getpid()) for p in ports)
    alloc.release()
    assert not any((_reservation_dir() / str(p)).exists() for p in ports)


@pytest.mark.timeout(30)
def test_bound_port_is_not_free() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not is_port_free(sock.getsockname()[1])


@pytest.mark.timeout(30)
def test_reservation_of_live_process_is_respected_and_dead_one_reclaimed() -> None:
    alloc = PortAllocator()
    port = alloc.allocate()
    from nbdb.testing.ports import _try_reserve

    assert not _try_reserve(port, os.getpid() + 1)  # held by this (live) process
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    alloc.transfer(int(dead.stdout))
    other = PortAllocator()
    assert _try_reserve(port, other.owner)  # the holder is gone: reclaimed
    assert (_reservation_dir() / str(port)).read_text() == str(os.getpid())
    alloc.release()
