"""One backend under test: its URL, fresh namespaces, and its raw client."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace

import nbdb
from nbdb.bench.raw import RawClient, open_raw

__all__ = ["Target"]


@dataclass(slots=True)
class Target:
    """A backend the run measures, reachable at ``url``.

    Every workload step works in a namespace of its own (``bench-<run>-<n>``), so
    steps never see each other's objects and a shared server is left with
    nothing but the bench's own namespaces.
    """

    name: str
    url: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    raw_reason: str | None = None
    """Why there is no raw baseline for this backend (None: there is one)."""
    baseline: str | None = None
    """Which of the backend's extra raw baselines :meth:`raw` opens (None: its plain raw client)."""
    _counter: int = 0

    def namespace(self) -> str:
        """A fresh namespace for one workload step."""
        self._counter += 1
        return f"bench-{self.run_id}-{self._counter}"

    def open(self, namespace: str) -> nbdb.Database:
        """A Database on the backend, in ``namespace`` (several opens of one namespace share data)."""
        return nbdb.connect(self.url, namespace=namespace)

    def raw(self, namespace: str) -> RawClient:
        """The backend's raw client in ``namespace``; LookupError if there is none."""
        return open_raw(self.name, self.url, namespace, self.baseline)

    def with_baseline(self, baseline: str) -> Target:
        """This target, whose :meth:`raw` opens the extra baseline ``baseline``."""
        return replace(self, baseline=baseline)
