"""Databases opened for one test and all closed when it ends (the kit's ``db_factory``, the backend tests')."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import nbdb


@contextlib.contextmanager
def databases(url: str, namespace: str | None = None) -> Iterator[Callable[..., nbdb.Database]]:
    """A factory of Databases on ``url`` in ``namespace``; every one it opened is closed on leaving.

    The factory takes ``connect``'s options; ``url=`` reaches the same store another way (a fault
    proxy's address) and ``namespace=`` overrides the shared one::

        with databases(server.url, "t-1") as open_db:
            writer, watcher = open_db(), open_db(cache_ttl=0)
    """
    opened: list[nbdb.Database] = []
    default = url

    def factory(url: str | None = None, **options: Any) -> nbdb.Database:
        if namespace is not None:
            options.setdefault("namespace", namespace)
        db = nbdb.connect(url or default, **options)
        opened.append(db)
        return db

    try:
        yield factory
    finally:
        for db in opened:
            db.close()
