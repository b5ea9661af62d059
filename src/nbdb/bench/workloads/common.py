"""Helpers the workloads share: populating a namespace, timing, pacing."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import nbdb
from nbdb.bench.data import make_port, make_switch, port_doc
from nbdb.bench.raw import RawClient
from nbdb.models.ovn import LogicalSwitch, LogicalSwitchPort

__all__ = ["PORT", "SWITCH", "pace", "populate", "populate_raw"]

PORT = "LogicalSwitchPort"
SWITCH = "LogicalSwitch"

# Small enough for every backend's transaction limit (etcd: 128 operations).
_BATCH = 20


def populate(
    db: nbdb.Database, n: int, topic: str | None = "tenant-0"
) -> tuple[LogicalSwitch, list[LogicalSwitchPort]]:
    """A switch and ``n`` ports on it (untimed set-up), in transactions where the backend has them."""
    switch = db.create(make_switch(0, topic))
    ports: list[LogicalSwitchPort] = []
    try:
        for start in range(0, n, _BATCH):
            with db.transaction() as txn:
                for i in range(start, min(n, start + _BATCH)):
                    txn.create(make_port(switch, i, topic))
            ports += [p for p in txn.results if isinstance(p, LogicalSwitchPort)]
    except nbdb.UnsupportedError:
        ports += [db.create(make_port(switch, i, topic)) for i in range(len(ports), n)]
    return switch, ports


def populate_raw(
    client: RawClient, n: int, topic: str | None = "tenant-0", *, switch: int = 0
) -> tuple[str, list[dict[str, object]]]:
    """The raw equivalent of :func:`populate`: a switch key and ``n`` port docs.

    ``switch`` numbers the switch, for a namespace that needs several (one per topic).
    """
    switch_id = f"00000000-0000-4000-8000-{switch:012d}"
    doc = {"id": switch_id, "name": f"net-{switch}", "topic": topic}  # names are unique (raw+contract claims them)
    client.create(client.key(SWITCH, switch_id), json.dumps(doc).encode())
    docs = [port_doc(switch_id, i, topic) for i in range(n)]
    for start in range(0, n, 500):
        chunk = docs[start : start + 500]
        client.create_many([(client.key(PORT, str(d["id"])), json.dumps(d).encode()) for d in chunk])
    return switch_id, docs


def pace(start_ns: int, index: int, rate: float) -> None:
    """Sleep until the ``index``-th operation is due at ``rate`` per second from ``start_ns``."""
    due = start_ns + int(index * 1e9 / rate)
    delay = due - time.perf_counter_ns()
    if delay > 0:
        time.sleep(delay / 1e9)


def chunks(items: Sequence[object], size: int) -> list[Sequence[object]]:
    """``items`` cut in slices of ``size``."""
    return [items[i : i + size] for i in range(0, len(items), size)]
