"""Raw baselines: each backend's own client doing the same server work as nbdb, without nbdb.

One small module per backend (``nbdb.bench.raw.<backend>``) defines a
:class:`RawClient` subclass named ``Client``; adding a baseline for a new
backend is adding that module. A backend without one is reported as "no raw
baseline", never silently compared with something else.
"""

from __future__ import annotations

import importlib

from nbdb.bench.raw.base import Follower, RawClient, RawConflict

__all__ = ["Follower", "RawClient", "RawConflict", "open_raw"]


def open_raw(backend: str, url: str, namespace: str) -> RawClient:
    """The raw client of ``backend`` on the server at ``url``, writing under ``namespace``.

    Raises LookupError (with the reason) when there is no baseline for that
    backend or its client library is not installed.
    """
    try:
        module = importlib.import_module(f"nbdb.bench.raw.{backend}")
    except ModuleNotFoundError as exc:
        if exc.name == f"nbdb.bench.raw.{backend}":
            raise LookupError(f"no raw baseline for {backend} yet (add nbdb/bench/raw/{backend}.py)") from None
        raise LookupError(f"the raw {backend} client cannot be imported: {exc}") from None
    client: RawClient = module.Client(url, namespace)
    return client
