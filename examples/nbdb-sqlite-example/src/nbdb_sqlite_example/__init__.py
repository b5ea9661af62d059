"""An nbdb backend that lives outside nbdb: the packaging around a backend class.

A third-party backend is a :class:`nbdb.families.kv.KeyValueBackend` subclass
(or one of another family) with a ``from_url`` class method and a
``capabilities`` declaration, plus one entry point in its package metadata
(see ``pyproject.toml``). ``docs/writing-a-backend.md`` builds such a class
step by step; to stay one file, this example reuses the class that walkthrough
ends with, nbdb's own sqlite backend, under a scheme of its own.
"""

from __future__ import annotations

from typing import Any

from nbdb.backends.sqlite import SqliteBackend
from nbdb.errors import ValidationError

__all__ = ["ExampleSqliteBackend"]

SCHEME = "examplesqlite"


class ExampleSqliteBackend(SqliteBackend):
    """The sqlite backend, reached as ``examplesqlite:///PATH`` (or ``examplesqlite://`` in memory)."""

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SqliteBackend:
        """Open the database ``url`` names; keyword options (``namespace=``...) as for ``sqlite://``."""
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() != SCHEME:
            raise ValidationError(f"not an {SCHEME}:// URL")
        return super().from_url(f"sqlite://{rest}", **options)
