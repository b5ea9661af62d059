"""Helpers shared by the backend tests (no fixtures here: each backend's come from nbdb.testing.fixtures)."""

from __future__ import annotations

from typing import Any


def versions_until_quiet(watch: Any, rounds: int = 15, wait: float = 0.2) -> list[tuple[str, int]]:
    """(name, version) of each change ``watch`` delivers, polled until it goes quiet after the first (bounded)."""
    seen: list[tuple[str, int]] = []
    for _ in range(rounds):
        got = watch.poll(wait)
        seen += [(e.object.name, e.object.version) for e in got]
        if seen and not got:
            break
    return seen
