"""Finding a backend by URL scheme: the ``nbdb.backends`` entry-point group.

A third-party package adds a backend by declaring, in its own metadata::

    [project.entry-points."nbdb.backends"]
    mystore = "mypkg.backend:MyStoreBackend"

The entry point names a :class:`nbdb.spi.Backend` subclass with a
``from_url(url, **options)`` class method.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping
from typing import Any, Protocol, cast
from urllib.parse import parse_qs

from nbdb import errors
from nbdb.spi import Backend

__all__ = ["BACKEND_GROUP", "BackendFactory", "installed_backends", "load_backend", "redact", "url_options"]

log = logging.getLogger(__name__)

BACKEND_GROUP = "nbdb.backends"
DEFAULT_URL = "memory://"


class BackendFactory(Protocol):
    """What an entry point of the ``nbdb.backends`` group loads to."""

    def from_url(self, url: str, **options: Any) -> Backend:
        """Open the backend named by ``url``."""


_SECRET_OPTIONS = re.compile(r"([?&][A-Za-z_]*(?:password|secret|token)=)[^&]*", re.IGNORECASE)


def redact(url: str) -> str:
    """``url`` with any password (in the authority or the query) replaced by ``***``, for logs and errors."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority = rest.split("/", 1)[0].split("?", 1)[0]
    if "@" in authority:
        creds, _, host = rest.partition("@")
        rest = f"{creds.split(':', 1)[0]}:***@{host}"
    return scheme + "://" + _SECRET_OPTIONS.sub(r"\1***", rest)


def url_options(
    query: str,
    options: Mapping[str, Any],
    allowed: Collection[str],
    label: str,
    *,
    keep_blank_values: bool = True,
) -> dict[str, Any]:
    """A URL's query-string options merged with keyword options (keywords win).

    Every backend's ``from_url`` takes its options this way; a name not in
    ``allowed`` raises :class:`nbdb.ValidationError` naming the backend by ``label``.
    """
    merged: dict[str, Any] = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=keep_blank_values).items()}
    merged.update(options)
    unknown = set(merged) - set(allowed)
    if unknown:
        raise errors.ValidationError(f"unknown {label} option(s): {', '.join(sorted(unknown))}")
    return merged


def _extension_manager() -> Any:
    from stevedore import ExtensionManager

    return ExtensionManager(namespace=BACKEND_GROUP, invoke_on_load=False, on_load_failure_callback=_load_failed)


def _load_failed(manager: Any, entry_point: Any, exc: BaseException) -> None:
    log.debug("backend %r failed to load: %s", getattr(entry_point, "name", entry_point), exc)


def installed_backends() -> dict[str, type[Backend]]:
    """Scheme -> backend class, for every backend installed (and importable)."""
    found: dict[str, type[Backend]] = {}
    for ext in _extension_manager():
        found[ext.name] = ext.plugin
    if "memory" not in found:
        # Running from a source tree without installed metadata.
        from nbdb.backends.memory import MemoryBackend

        found["memory"] = MemoryBackend
    return found


def load_backend(url: str | None, **options: Any) -> Backend:
    """Open the backend that ``url``'s scheme names."""
    url = url or DEFAULT_URL
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise errors.ValidationError(f"not a database URL (want scheme://...): {redact(url)!r}")
    scheme = scheme.lower()
    if scheme == "memory":
        from nbdb.backends.memory import MemoryBackend

        return MemoryBackend.from_url(url, **options)
    from stevedore import DriverManager
    from stevedore.exception import NoMatches

    try:
        manager: Any = DriverManager(namespace=BACKEND_GROUP, name=scheme, invoke_on_load=False)
    except NoMatches:
        known = ", ".join(sorted(installed_backends()))
        raise errors.ValidationError(
            f"no backend for URL scheme {scheme!r} (installed: {known}); "
            f"a server backend may need its extra, e.g. pip install 'nbdb[{scheme.split('+')[0]}]'"
        ) from None
    except ImportError as exc:
        raise errors.UnsupportedError(
            f"the {scheme!r} backend cannot be imported ({exc}); install its extra: "
            f"pip install 'nbdb[{scheme.split('+')[0]}]'"
        ) from None
    factory = cast(BackendFactory, manager.driver)
    return factory.from_url(url, **options)
