"""Helpers shared by the backend tests (no fixtures here: each backend's come from nbdb.testing.fixtures)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pytest

import nbdb
from nbdb.conformance.kit import KitParent
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.models.ovn import LogicalRouter
from nbdb.testing.probes import run_tool
from nbdb.testing.process import find_binary

if TYPE_CHECKING:
    from nbdb.backends.hazelcast import HazelcastBackend


def versions_until_quiet(watch: Any, rounds: int = 15, wait: float = 0.2) -> list[tuple[str, int]]:
    """(name, version) of each change ``watch`` delivers, polled until it goes quiet after the first (bounded)."""
    seen: list[tuple[str, int]] = []
    for _ in range(rounds):
        got = watch.poll(wait)
        seen += [(e.object.name, e.object.version) for e in got]
        if seen and not got:
            break
    return seen


def fill_topics(db: nbdb.Database, routers: list[str | None], ports: list[str | None]) -> None:
    """A router ``lr-i`` in each of ``routers``' topics; a port ``p-i`` in each of ``ports``', on that topic's
    switch ``ls-TOPIC`` (created with its first port)."""
    switches: dict[str | None, LogicalSwitch] = {}
    for i, topic in enumerate(routers):
        db.create(LogicalRouter(name=f"lr-{i}", topic=topic))
    for i, topic in enumerate(ports):
        if topic not in switches:
            switches[topic] = db.create(LogicalSwitch(name=f"ls-{topic}", topic=topic))
        db.create(LogicalSwitchPort(name=f"p-{i}", switch=switches[topic].id, topic=topic))


def median_get_ms(backend: Any, n: int = 100) -> float:
    """The median time of ``n`` gets of an absent key through ``backend``, in milliseconds."""
    took = []
    for _ in range(n):
        began = time.perf_counter()
        backend.get_key("x/none")
        took.append(time.perf_counter() - began)
    return sorted(took)[n // 2] * 1e3


def assert_reactor_wake_up_kept(
    backend: Any, work: Sequence[Callable[[int], object]], seconds: float = 3.0, before: float | None = None
) -> None:
    """Each of ``work`` called over and over in a thread of its own for ``seconds`` (with how many calls it
    made before), then a get's median through a Hazelcast ``backend``: well under the reactor's 10 ms poll
    tick, which every request waits once hazelcast-python-client 5.7 lost the reactor's wake-up. ``before``:
    the median measured before the threads, for the failure's message."""
    end = time.monotonic() + seconds
    calls = [0] * len(work)

    def run(n: int) -> None:
        while time.monotonic() < end:
            work[n](calls[n])
            calls[n] += 1

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    after = median_get_ms(backend)
    was = "" if before is None else f" (it was {before:.2f} ms before)"
    assert after < 5, f"a get's median is {after:.2f} ms after {calls} calls{was}"


def ovsdb_transact(address: str, ops: Sequence[Any]) -> list[Any]:
    """Play another OVSDB client (ovn-nbctl, ovn-northd) writing OVN_Northbound at ``address`` directly:
    ``ops`` in one ``ovsdb-client transact``, and its results."""
    out = run_tool(
        [str(find_binary("ovsdb-client")), "--timeout=10", "transact", f"tcp:{address}",
         json.dumps(["OVN_Northbound", *ops])],
        timeout=15,
    )  # fmt: skip
    result: list[Any] = json.loads(out)
    return result


CANNOT_READ = "cannot read it"
"""A task the member cannot read: a refusal of :func:`another_protocol` (the other: one it runs without a condition
kind)."""


@contextlib.contextmanager
def another_protocol(
    url: str, refusal: str = CANNOT_READ
) -> Iterator[tuple[nbdb.Database, HazelcastBackend, KitParent, Any]]:
    """A client committing in the members, then, until ``fixed.undo()``, speaking the next task protocol.

    As if the lock's owner were replaced by a member whose jar speaks another protocol (a rolling
    deploy): the client's protocol is patched (its own objects), so that its copies' updates carry a
    condition kind the member does not know (as ``WrittenAt`` to a protocol-1 member: handed back,
    nothing written), or its tasks are of a form the member cannot read (``CANNOT_READ``).
    """
    from nbdb.backends.hazelcast import HazelcastBackend, _backend, _member  # the client is optional

    with nbdb.connect(url, namespace="m" + uuid.uuid4().hex[:10]) as db, pytest.MonkeyPatch.context() as fixed:
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        assert backend.member_commit
        parent = db.create(KitParent(name="p"))
        fixed.setattr(_backend, "PROTOCOL", _member.PROTOCOL + 1)
        if refusal == CANNOT_READ:
            fixed.setattr(_member.CommitTask, "CLASS_ID", 99)
        else:
            fixed.setattr(_member, "_WRITTEN_AT", 99)
        yield db, backend, parent, fixed
