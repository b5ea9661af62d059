"""Finding a backend by URL scheme: nbdb's own by name, others through entry points.

The built-in schemes are known here by name (:data:`BUILTIN_BACKENDS`), so a
backend module never needs to import the loader, and a scheme's module is
imported only when a URL names it. A third-party package adds a backend by
declaring, in its own metadata::

    [project.entry-points."nbdb.backends"]
    mystore = "mypkg.backend:MyStoreBackend"

The entry point names a :class:`nbdb.spi.Backend` subclass with a
``from_url(url, **options)`` class method.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

from nbdb import errors
from nbdb.options import redact
from nbdb.spi import Backend

__all__ = [
    "BACKEND_GROUP",
    "BUILTIN_BACKENDS",
    "BackendFactory",
    "backend_class",
    "installed_backends",
    "load_backend",
    "redact",
    "unfit_backend",
]

log = logging.getLogger(__name__)

BACKEND_GROUP = "nbdb.backends"
DEFAULT_URL = "memory://"

BUILTIN_BACKENDS: dict[str, str] = {
    "memory": "nbdb.backends.memory:MemoryBackend",
    "redis": "nbdb.backends.redis:RedisBackend",
    "rediss": "nbdb.backends.redis:RedisBackend",
    "redis+sentinel": "nbdb.backends.redis:RedisBackend",
    "etcd": "nbdb.backends.etcd:EtcdBackend",
    "etcd+https": "nbdb.backends.etcd:EtcdBackend",
    "ovsdb+tcp": "nbdb.backends.ovsdb:OvsdbBackend",
    "ovsdb+ssl": "nbdb.backends.ovsdb:OvsdbBackend",
    "ovsdb+unix": "nbdb.backends.ovsdb:OvsdbBackend",
    "cassandra": "nbdb.backends.cassandra:CassandraBackend",
    "hazelcast": "nbdb.backends.hazelcast:HazelcastBackend",
    "sqlite": "nbdb.backends.sqlite:SqliteBackend",
}
"""nbdb's own schemes and the class that serves each (``module:Class``)."""

_EXTRAS = {"rediss": "redis", "redis+sentinel": "redis", "etcd+https": "etcd"}


class BackendFactory(Protocol):
    """What an entry point of the ``nbdb.backends`` group loads to."""

    def from_url(self, url: str, **options: Any) -> Backend:
        """Open the backend named by ``url``."""


def _import(target: str) -> type[Backend]:
    module, _, name = target.partition(":")
    return cast(type[Backend], getattr(importlib.import_module(module), name))


def _extension_manager() -> Any:
    from stevedore import ExtensionManager

    return ExtensionManager(namespace=BACKEND_GROUP, invoke_on_load=False, on_load_failure_callback=_load_failed)


def _load_failed(manager: Any, entry_point: Any, exc: BaseException) -> None:
    log.debug("backend %r failed to load: %s", getattr(entry_point, "name", entry_point), exc)


def installed_backends() -> dict[str, type[Backend]]:
    """Scheme -> backend class, for every backend installed (and importable)."""
    found: dict[str, type[Backend]] = {}
    for scheme, target in BUILTIN_BACKENDS.items():
        try:
            found[scheme] = _import(target)
        except ImportError as exc:
            log.debug("built-in backend %r is not importable (missing extra?): %s", scheme, exc)
    for ext in _extension_manager():
        found.setdefault(ext.name, ext.plugin)
    return found


def _extra(scheme: str) -> str:
    return _EXTRAS.get(scheme, scheme.split("+")[0])


def load_backend(url: str | None, **options: Any) -> Backend:
    """Open the backend that ``url``'s scheme names."""
    if url is None:
        url = DEFAULT_URL
    if not isinstance(url, str):
        raise errors.ValidationError(f"a database URL is text, not {type(url).__name__}")
    if not url.strip():
        # Only None means the default: "" (an unset variable, connect(os.environ.get("NB_URL", ""))) opened a
        # fresh, empty memory:// in its place, and what the caller wrote there vanished with the process.
        raise errors.ValidationError(
            f"the database URL is empty ({url!r}): give one (scheme://...), or None for {DEFAULT_URL}"
        )
    try:
        urlsplit(url)  # what every backend's parse starts with: its ValueError is bad input, said once here
    except ValueError as exc:
        raise errors.ValidationError(f"not a valid URL ({exc}): {redact(url)!r}") from None
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise errors.ValidationError(f"not a database URL (want scheme://...): {redact(url)!r}")
    return cast(BackendFactory, backend_class(scheme)).from_url(url, **options)


def backend_class(scheme: str) -> type[Backend]:
    """The backend class that serves URL scheme ``scheme``, imported but not opened.

    A scheme no backend has is a :class:`~nbdb.errors.ValidationError`; a backend whose module
    fails to import (a missing driver package, a broken third-party module) is a
    :class:`~nbdb.errors.BackendLoadError` naming it, with the import's exception as its cause.
    """
    scheme = scheme.lower()
    target = BUILTIN_BACKENDS.get(scheme)
    if target is not None:
        try:
            return _import(target)
        except Exception as exc:
            hint = f"; install its extra: pip install 'nbdb[{_extra(scheme)}]'" if isinstance(exc, ImportError) else ""
            raise _load_error(scheme, target, exc, hint) from exc
    from stevedore import DriverManager
    from stevedore.exception import NoMatches

    try:
        # Asked for a name no entry point has, stevedore logs a WARNING ("Could not load foo") besides
        # raising: nbdb.connect("foo://") wrote it to the caller's log, and `nbdb copy foo://...` to stderr,
        # above the error that says it all. A scheme no entry point names is settled before asking it.
        if scheme not in {ep.name for ep in entry_points(group=BACKEND_GROUP)}:
            raise NoMatches(scheme)
        manager: Any = DriverManager(
            namespace=BACKEND_GROUP, name=scheme, invoke_on_load=False, on_load_failure_callback=_raise_load_failure
        )
    except NoMatches:
        known = ", ".join(sorted(installed_backends()))
        raise errors.ValidationError(
            # Every scheme of nbdb's own is served above (with its extra's name when a driver is missing):
            # this one is a typo or another package's, and "pip install 'nbdb[foo]'" named an extra nbdb has not.
            f"no backend for URL scheme {scheme!r} (installed: {known}): a typo, or another package's backend "
            f"that is not installed (it registers its scheme in the {BACKEND_GROUP!r} entry-point group)"
        ) from None
    found = manager.driver
    unfit = unfit_backend(found)
    if unfit:  # nbdb.connect raised an AttributeError on from_url, or a TypeError on instantiating it
        raise errors.BackendLoadError(f"the {scheme!r} entry point names {unfit}", scheme)
    return cast(type[Backend], found)


def unfit_backend(found: object) -> str | None:
    """What keeps an entry point's object from serving a URL (None: nothing)."""
    name = getattr(found, "__qualname__", repr(found))
    if not (isinstance(found, type) and issubclass(found, Backend)):
        return f"{name}, which is no nbdb.spi.Backend subclass (subclass a family's base, e.g. KeyValueBackend)"
    if not callable(getattr(found, "from_url", None)):
        return f"{name}, which has no from_url(url, **options) class method"
    missing = sorted(getattr(found, "__abstractmethods__", ()))
    if missing:
        return f"{name}, which leaves abstract methods unimplemented: {', '.join(missing)}"
    return None


def _load_error(scheme: str, target: str, exc: BaseException, hint: str = "") -> errors.BackendLoadError:
    return errors.BackendLoadError(
        f"backend {scheme!r} could not be loaded ({target}): {type(exc).__name__}: {exc}{hint}", scheme
    )


def _raise_load_failure(manager: Any, entry_point: Any, exc: BaseException) -> None:
    raise _load_error(entry_point.name, entry_point.value, exc) from exc
