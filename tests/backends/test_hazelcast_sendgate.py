"""Hazelcast's send gate (``_sendgate.SendGate``) under load and faults, against real members."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

import nbdb
from nbdb.models.ovn import LogicalSwitch
from nbdb.testing import HazelcastServer
from nbdb.testing.fixtures import hazelcast_server  # noqa: F401

pytest.importorskip("hazelcast")

from nbdb.backends.hazelcast import HazelcastBackend


def _ns() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("member_commit", [True, False])
def test_a_writer_commits_while_eight_threads_read(
    hazelcast_server: HazelcastServer,  # noqa: F811
    member_commit: bool,
) -> None:
    """Eight threads of gets and one of creates for 3 s: the creates keep going (200+ in 3 s before the send gate).

    A lock request, an unlock and the commit task wait for the gate to be idle; each reply used to send what
    queued meanwhile, so with eight readers the gate was never idle and every commit waited out ``timeout``
    (1 commit in 3 s, taking 3 s: it went once the readers stopped)."""
    url = hazelcast_server.url + ("" if member_commit else "?member_commit=0")
    with nbdb.connect(url, namespace=_ns()) as db:
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        db.create(LogicalSwitch(name="seed"))
        stop = threading.Event()
        reads = [0] * 8
        commits: list[float] = []

        def read(n: int) -> None:
            while not stop.is_set():
                backend.get_key(f"x/{n}")
                reads[n] += 1

        def write() -> None:
            i = 0
            while not stop.is_set():
                began = time.monotonic()
                db.create(LogicalSwitch(name=f"w{i}"))
                commits.append(time.monotonic() - began)
                i += 1

        threads = [threading.Thread(target=read, args=(n,), daemon=True) for n in range(8)]
        threads.append(threading.Thread(target=write, daemon=True))
        for thread in threads:
            thread.start()
        time.sleep(3)
        stop.set()
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads)
        assert len(commits) >= 10, f"{len(commits)} commits in 3 s beside {sum(reads)} reads: {commits}"
        assert max(commits) < 1.0
