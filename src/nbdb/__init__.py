"""nbdb: one typed northbound-database API for SDN controllers, over pluggable backends.

>>> import nbdb
>>> from nbdb.models import LogicalSwitch
>>> with nbdb.connect("memory://") as db:
...     ls = db.create(LogicalSwitch(name="sw0"))
...     db.get(LogicalSwitch, ls.id).name
'sw0'
"""

from __future__ import annotations

from nbdb import _guard

if _guard.running_as_module("nbdb"):  # `python -m nbdb`: a Ctrl-C while this imports exits 130 (nbdb_cli)
    _guard.guard()

from collections.abc import Collection, Mapping
from typing import Any

from nbdb.api import Database, ListResult, Transaction
from nbdb.cache import Cache
from nbdb.capabilities import Atomicity, Capabilities, Durability, Expiry
from nbdb.controller import CacheQueue, Controller, run_controller
from nbdb.dispatch import Subscription
from nbdb.errors import (
    AuthError,
    BackendUnavailableError,
    CommitUnknownError,
    ConflictError,
    CorruptRecordError,
    HistoryGoneError,
    LockLostError,
    LockTimeoutError,
    NbdbError,
    NotFoundError,
    ReferenceError,
    StoredFormatError,
    UniqueViolationError,
    UnsupportedError,
    ValidationError,
)
from nbdb.events import ChangeEvent, EventKind, Key
from nbdb.models.base import Model, Reference
from nbdb.projection import PartialView
from nbdb.revision import Revision
from nbdb.watch import Watch
from nbdb.workqueue import RateLimiter, WorkQueue

__all__ = [
    "Atomicity",
    "AuthError",
    "BackendUnavailableError",
    "Cache",
    "CacheQueue",
    "Capabilities",
    "ChangeEvent",
    "CommitUnknownError",
    "ConflictError",
    "Controller",
    "CorruptRecordError",
    "Database",
    "Durability",
    "EventKind",
    "Expiry",
    "HistoryGoneError",
    "Key",
    "ListResult",
    "LockLostError",
    "LockTimeoutError",
    "Model",
    "NbdbError",
    "NotFoundError",
    "PartialView",
    "RateLimiter",
    "Reference",
    "ReferenceError",
    "Revision",
    "StoredFormatError",
    "Subscription",
    "Transaction",
    "UniqueViolationError",
    "UnsupportedError",
    "ValidationError",
    "Watch",
    "WorkQueue",
    "connect",
    "run_controller",
]

__version__ = "0.1.0"


def connect(
    url: str | None = None, *, require: Collection[str] | Mapping[str, Any] | None = None, **options: Any
) -> Database:
    """Open the database at ``url`` (default ``memory://``, the embedded backend).

    The scheme picks the backend (``memory``, ``redis``, ``etcd``, ...; others
    through the ``nbdb.backends`` entry points); ``options`` and the URL's
    query string configure it. An unknown scheme or a bad option raises
    :class:`ValidationError`. ``require`` names capabilities the application
    needs — a set of names ("supported at all") or a mapping of name to level
    (``{"transactions": "atomic", "durability": "durable"}``): a backend that
    lacks one fails here with :class:`UnsupportedError` naming it.
    """
    from nbdb.loader import load_backend
    from nbdb.options import redact

    backend = load_backend(url, **options)
    if require is not None:
        try:
            backend.capabilities.check(require)
        except BaseException:
            backend.close()
            raise
    return Database(backend, redact("memory://" if url is None else url))
