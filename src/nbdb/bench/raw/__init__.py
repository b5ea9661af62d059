"""Raw baselines: each backend's own client doing the same server work as nbdb, without nbdb.

One small module per backend (``nbdb.bench.raw.<backend>``) defines a
:class:`RawClient` subclass named ``Client``; adding a baseline for a new
backend is adding that module. A backend without one is reported as "no raw
baseline", never silently compared with something else.

Where nbdb's contract needs more server work than the plain operation (a
change log, a revision sequence), the module may also name, in ``BASELINES``,
clients doing that work by hand; the report shows each as ``raw+<name>``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from nbdb.bench.raw.base import Follower, RawClient, RawConflict

__all__ = ["Follower", "RawClient", "RawConflict", "extra_baselines", "open_raw"]


def _module(backend: str) -> ModuleType:
    try:
        return importlib.import_module(f"nbdb.bench.raw.{backend}")
    except ModuleNotFoundError as exc:
        if exc.name == f"nbdb.bench.raw.{backend}":
            raise LookupError(f"no raw baseline for {backend} yet (add nbdb/bench/raw/{backend}.py)") from None
        raise LookupError(f"the raw {backend} client cannot be imported: {exc}") from None


def extra_baselines(backend: str) -> list[str]:
    """The names of the baselines ``backend`` has beside its plain raw client (its ``BASELINES``)."""
    try:
        return sorted(getattr(_module(backend), "BASELINES", {}))
    except LookupError:
        return []


def open_raw(backend: str, url: str, namespace: str, baseline: str | None = None) -> RawClient:
    """The raw client of ``backend`` on the server at ``url``, writing under ``namespace``.

    ``baseline`` names one of the module's extra baselines instead of its plain
    client. Raises LookupError (with the reason) when there is no baseline for
    that backend or its client library is not installed.
    """
    module = _module(backend)
    factory = module.Client if baseline is None else module.BASELINES[baseline]
    client: RawClient = factory(url, namespace)
    return client
