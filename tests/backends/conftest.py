"""Helpers shared by the backend tests (no fixtures here: each backend's come from nbdb.testing.fixtures)."""

from __future__ import annotations

from typing import Any

import nbdb
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.models.ovn import LogicalRouter


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
