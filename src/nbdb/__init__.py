"""nbdb: one typed northbound-database API for SDN controllers, over pluggable backends.

>>> import nbdb
>>> from nbdb.models import LogicalSwitch
>>> with nbdb.connect("memory://") as db:
...     ls = db.create(LogicalSwitch(name="sw0"))
...     db.get(LogicalSwitch, ls.id).name
'sw0'
"""

from __future__ import annotations

from typing import Any

from nbdb.api import Database, ListResult, Transaction
from nbdb.cache import Cache
from nbdb.capabilities import Atomicity, Capabilities, Durability
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
    UnsupportedError,
    ValidationError,
)
from nbdb.events import ChangeEvent, EventKind
from nbdb.models.base import Model, Reference
from nbdb.watch import Watch

__all__ = [
    "Atomicity",
    "AuthError",
    "BackendUnavailableError",
    "Cache",
    "Capabilities",
    "ChangeEvent",
    "CommitUnknownError",
    "ConflictError",
    "CorruptRecordError",
    "Database",
    "Durability",
    "EventKind",
    "HistoryGoneError",
    "ListResult",
    "LockLostError",
    "LockTimeoutError",
    "Model",
    "NbdbError",
    "NotFoundError",
    "Reference",
    "ReferenceError",
    "Transaction",
    "UnsupportedError",
    "ValidationError",
    "Watch",
    "connect",
]

__version__ = "0.1.0"


def connect(url: str | None = None, **options: Any) -> Database:
    """Open the database at ``url`` (default ``memory://``, the embedded backend).

    The scheme picks the backend from the ``nbdb.backends`` entry points
    (``memory``, ``redis``, ``etcd``, ...); ``options`` and the URL's query
    string configure it. An unknown scheme or a bad option raises
    :class:`ValidationError`.
    """
    from nbdb.loader import load_backend
    from nbdb.options import redact

    backend = load_backend(url, **options)
    return Database(backend, redact(url or "memory://"))
