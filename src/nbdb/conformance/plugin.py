"""The conformance kit's pytest plugin (entry point ``pytest11: nbdb``).

A backend author runs the whole kit against a server with::

    pytest --pyargs nbdb.conformance --nbdb-url=redis://127.0.0.1:6379/0

``--nbdb-url`` may be given several times; every kit test runs once per URL.
``--nbdb-expect-fail=TEST`` (or the ``nbdb_expect_fail`` ini list) names kit
tests known to fail on the backend: they are reported as xfail while they
fail, and as an unexpected pass (``XPASS(strict)``, a failure) once they pass,
so a fixed bug never stays marked as broken.
``--nbdb-url=spawn:KIND`` (``spawn:redis``, ``spawn:etcd``, ...) starts a
throwaway server with :mod:`nbdb.testing` for the session; harness options follow as a
query (``spawn:etcd?members=3``). Without the option,
``$NBDB_URL`` or ``memory://`` is used.

Each test gets databases in a namespace of its own, so tests never see each
other's data on a shared server.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import logging
import os
import site
import sysconfig
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import pytest

import nbdb
from nbdb.capabilities import Capabilities
from nbdb.testing.databases import databases

if TYPE_CHECKING:
    from nbdb.testing import Server

__all__ = [
    "pytest_addoption",
    "pytest_collection_modifyitems",
    "pytest_generate_tests",
    "pytest_runtest_call",
    "pytest_runtest_makereport",
]


# What a spawned server needs to hold the kit's own models.
_SPAWN_OPTIONS: dict[str, dict[str, Any]] = {
    # OVN_Northbound has no tables for user models: serve the generated model database too.
    "ovsdb": {"model_schema": True},
}


# The scheme of the URL a spawned server of a harness kind has, where the two differ.
_SPAWN_SCHEMES = {"ovsdb": "ovsdb+tcp", "redis-sentinel": "redis+sentinel"}


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--nbdb-url``."""
    group = parser.getgroup("nbdb", "nbdb conformance kit")
    group.addoption(
        "--nbdb-url",
        action="append",
        default=[],
        metavar="URL",
        help="database URL the conformance kit runs against (repeatable); spawn:KIND starts a server",
    )
    group.addoption(
        "--nbdb-expect-fail",
        action="append",
        default=[],
        metavar="TEST",
        help="a kit test known to fail on this backend (its exact name, test_x or test_x[PARAMS]; repeatable): "
        "xfail while it fails, an unexpected pass (a failure) once it passes",
    )
    parser.addini("nbdb_expect_fail", "kit tests known to fail on this backend (see --nbdb-expect-fail)", "linelist")


def pytest_configure(config: pytest.Config) -> None:
    """Register the kit's markers."""
    config.addinivalue_line("markers", "nbdb_kit: a test of the nbdb conformance kit")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the kit tests named by ``--nbdb-expect-fail`` as strict xfails.

    A name is a kit test's exact name: ``test_x`` (every parameter), ``test_x[memory://]`` (one), or
    either after its file (``test_crud.py::test_x``, or a whole node id as a report prints it). A name
    no kit test has, or one whose test was collected but no item of it matches (a wrong parameter),
    is a usage error: a typo must not leave a failing test unmarked, nor a fixed one marked for ever.
    """
    kit = [item for item in items if item.get_closest_marker("nbdb_kit") is not None]
    if kit:
        _check_backends_load(_urls(config))
    expected = [*config.getoption("nbdb_expect_fail"), *config.getini("nbdb_expect_fail")]
    if not expected:
        return
    matched: set[str] = set()
    for item in kit:
        names = [name for name in expected if _names_item(name, item)]
        if names:
            matched.update(names)
            reason = f"expected to fail on this backend (--nbdb-expect-fail {names[0]})"
            item.add_marker(pytest.mark.xfail(strict=True, reason=reason))
    collected = {getattr(item, "originalname", item.name) for item in kit}
    wrong = []
    for name in expected:
        if name in matched:
            continue
        function = _function_of(name)
        if function not in _kit_test_names() or function in collected:
            wrong.append(name)  # not a kit test at all, or its test ran here under other parameters
    if wrong:
        raise pytest.UsageError(
            f"--nbdb-expect-fail {', '.join(map(repr, wrong))}: no kit test of that name "
            "(give a test's exact name, e.g. test_get_by_string_id, or test_get_by_string_id[memory://] "
            "for one URL; see --co -q for the names)"
        )


def _check_backends_load(urls: list[str]) -> None:
    """Stop the run once, before any test, if a URL's backend cannot be imported (or no backend has its scheme).

    Otherwise every kit test errors alike, each with the same traceback of the same import.
    """
    from nbdb.errors import BackendLoadError, ValidationError
    from nbdb.loader import BUILTIN_BACKENDS, backend_class

    for url in urls:
        if url.startswith("spawn:"):
            kind = url.removeprefix("spawn:").partition("?")[0]
            scheme = _SPAWN_SCHEMES.get(kind, kind)
            if scheme not in BUILTIN_BACKENDS:
                continue  # a harness kind of no backend of ours: start_server says what it is
        else:
            scheme, sep, _ = url.partition("://")
            if not sep or not scheme:
                continue  # not a URL: connect says so, in each test
        try:
            backend_class(scheme)  # an entry point that names no usable Backend is a BackendLoadError too
        except (BackendLoadError, ValidationError) as exc:  # it cannot be imported, or no backend has the scheme
            raise pytest.UsageError(f"--nbdb-url {url}: {exc}") from exc


# ---------------------------------------------------------------- what to fix, when a backend lets a foreign error out

_LOGGED = pytest.StashKey[list[str]]()
"""The backend's foreign errors that nbdb logged (and retried) while a kit test ran."""

_HINT_TITLE = "nbdb kit: what to fix"


_OWN_MODULES = (
    "nbdb", "pytest", "_pytest", "pluggy", "pytest_timeout", "hypothesis", "_hypothesis_pytestplugin",
    "pydantic", "pydantic_core", "typing_extensions", "annotated_types",
)  # fmt: skip
"""nbdb and what nbdb itself (and its test run) runs on, wherever pip put them."""


def _site_roots() -> tuple[str, ...]:
    """Where pip puts packages: the environment's site-packages (a venv's lies inside its stdlib dir), the user's."""
    paths = sysconfig.get_paths()
    roots = {paths["purelib"], paths["platlib"], site.getusersitepackages(), *site.getsitepackages()}
    return tuple(sorted(root.rstrip(os.sep) + os.sep for root in roots if root))


def _own_code() -> tuple[tuple[str, ...], frozenset[str]]:
    """Directories (the stdlib's, the own packages') and single files (own modules) of code that is not a backend's."""
    paths = sysconfig.get_paths()
    dirs = {paths["stdlib"], paths["platstdlib"]}
    files = set()
    for name in _OWN_MODULES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None:
            continue
        if spec.submodule_search_locations:  # a package: everything under its directory
            dirs.update(spec.submodule_search_locations)
        elif spec.origin and os.path.isabs(spec.origin):  # a single-file module (pytest_timeout.py) beside others
            files.add(spec.origin)
    return tuple(sorted(root.rstrip(os.sep) + os.sep for root in dirs)), frozenset(files)


_SITE = _site_roots()
_OWN_DIRS, _OWN_FILES = _own_code()


def _is_own_code(filename: str) -> bool:
    """Whether code in ``filename`` is nbdb's, the standard library's or its test run's (no backend's, no client's).

    A stdlib directory counts only outside site-packages: a venv's ``lib/python3.X`` holds every installed package.
    """
    if filename in _OWN_FILES or filename.startswith("<"):
        return True
    own = [root for root in _OWN_DIRS if filename.startswith(root)]
    if not own:
        return False
    site_roots = [root for root in _SITE if filename.startswith(root)]
    return not site_roots or max(map(len, own)) > max(map(len, site_roots))  # the innermost root decides


def foreign_origin(exc: BaseException) -> str | None:
    """``file:line (function)`` of the innermost frame of backend code ``exc`` came through, if it is no nbdb error.

    None for nbdb's errors, assertion failures, pytest's outcomes (skip, fail) and exceptions that never
    passed through code outside nbdb, the standard library and pytest (a bug of nbdb's own).
    """
    if not isinstance(exc, Exception) or isinstance(exc, nbdb.errors.NbdbError | AssertionError):
        return None
    return _backend_frame(_frames(exc.__traceback__))


def _frames(tb: TracebackType | None) -> list[TracebackType]:
    entries = []
    while tb is not None:
        entries.append(tb)
        tb = tb.tb_next
    return entries


def _backend_frame(entries: list[TracebackType]) -> str | None:
    """``file:line (function)`` of the innermost of traceback ``entries`` outside nbdb, the stdlib and pytest."""
    origin = None
    for entry in entries:
        code = entry.tb_frame.f_code
        if not _is_own_code(code.co_filename):
            origin = f"{code.co_filename}:{entry.tb_lineno} ({code.co_name})"
    return origin


def _is_signal_handler(frame: FrameType) -> bool:
    """Whether ``frame`` runs a signal handler: a call of (signum, the frame the signal interrupted)."""
    code = frame.f_code
    if code.co_argcount < 2:
        return False
    signum, interrupted = (frame.f_locals.get(name) for name in code.co_varnames[:2])
    return isinstance(signum, int) and interrupted is not None and interrupted is frame.f_back


def _timed_out_in(exc: BaseException) -> str | None:
    """Where in the backend a test stood when pytest-timeout ended it (its signal method raises there)."""
    if not (isinstance(exc, pytest.fail.Exception) and str(exc).startswith("Timeout")):
        return None
    entries = _frames(exc.__traceback__)
    handler = next((i for i, entry in enumerate(entries) if _is_signal_handler(entry.tb_frame)), len(entries))
    where = _backend_frame(entries[:handler])  # what ran when the signal came, not the handler that raised
    if where is None:
        return None
    return (
        f"The test timed out while the backend was at {where}.\n"
        "A backend's call must return, or raise an nbdb.errors exception (BackendUnavailableError when the "
        "store does not answer), within its request timeout. Every kit test waits its own timeout: while a call "
        "can hang, run the kit with -x."
    )


def _foreign_hint(exc: BaseException, origin: str, how: str) -> str:
    return (
        f"{type(exc).__module__}.{type(exc).__qualname__}: {exc} {how} {origin}.\n"
        "Only nbdb.errors exceptions may leave a backend: map the client library's exceptions to them with an "
        "nbdb.retry.ExceptionMap (docs/writing-a-backend.md, 'Errors'), or fix the backend's bug that raised it."
    )


class _ForeignErrorLog(logging.Handler):
    """Keeps what nbdb logs of a backend's foreign errors it survived (a watch stream re-opened after one)."""

    def __init__(self, found: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.found = found

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        origin = None if exc is None else foreign_origin(exc)
        if exc is not None and origin is not None:
            hint = _foreign_hint(exc, origin, f"(logged by {record.name}, which went on) came out of the backend at")
            if hint not in self.found and len(self.found) < 3:
                self.found.append(hint)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Watch nbdb's log during a kit test for foreign errors of the backend that nbdb retried."""
    if item.get_closest_marker("nbdb_kit") is None:
        return (yield)
    found: list[str] = []
    handler, logger = _ForeignErrorLog(found), logging.getLogger("nbdb")
    item.stash[_LOGGED] = found
    logger.addHandler(handler)
    try:
        return (yield)
    finally:
        logger.removeHandler(handler)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Say what to fix when a kit test failed on an exception that is no nbdb error (raised or logged), or hung."""
    report = yield
    if report.failed and item.get_closest_marker("nbdb_kit") is not None:
        hints = []
        exc = call.excinfo.value if call.excinfo is not None else None
        origin = None if exc is None else foreign_origin(exc)
        if exc is not None and origin is not None:
            hints.append(_foreign_hint(exc, origin, "reached nbdb from the backend at"))
        stuck = None if exc is None else _timed_out_in(exc)
        if stuck is not None:
            hints.append(stuck)
        if call.when == "call":
            hints += [h for h in item.stash.get(_LOGGED, []) if h not in hints]
        if hints:
            report.sections.append((_HINT_TITLE, "\n".join(hints)))
    return report


def _function_of(name: str) -> str:
    """The test function a ``--nbdb-expect-fail`` name names (its node id's last part, parameters off)."""
    return name.rpartition("::")[2].partition("[")[0]


def _names_item(name: str, item: pytest.Item) -> bool:
    """Whether ``name`` is ``item``'s name, with or without parameters, or a node id ending in it."""
    function = getattr(item, "originalname", item.name)
    cls = getattr(item, "cls", None)
    scoped = [f"{cls.__name__}::{n}" for n in (item.name, function)] if cls is not None else []
    own = {item.name, function, *scoped}
    if name in own:
        return True
    file = item.path.name
    in_file = {f"{file}::{n}" for n in (*scoped, item.name, function)}
    return any(name == tail or name.endswith("/" + tail) for tail in in_file)


@functools.cache
def _kit_test_names() -> frozenset[str]:
    """The names of every kit test function (read from the kit's sources, so a partial run knows them all)."""
    names: set[str] = set()
    for path in Path(__file__).parent.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
                names.add(node.name)
    return frozenset(names)


def _urls(config: pytest.Config) -> list[str]:
    urls: list[str] = config.getoption("nbdb_url") or []
    if not urls:
        urls = [u for u in os.environ.get("NBDB_URL", "memory://").split() if u]
    return urls


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every kit test once per ``--nbdb-url``."""
    if "nbdb_url_spec" in metafunc.fixturenames:
        urls = _urls(metafunc.config)
        ids = [u if u.startswith("spawn:") else u.split("?")[0] for u in urls]
        metafunc.parametrize("nbdb_url_spec", urls, ids=ids, scope="session")


@pytest.fixture(scope="session")
def nbdb_server(nbdb_url_spec: str) -> Iterator[Server | None]:
    """The harness server that ``spawn:KIND`` started (None for a plain URL).

    Fault tests restart it; a test that stops or pauses a member puts it back.
    """
    if not nbdb_url_spec.startswith("spawn:"):
        yield None
        return
    import nbdb.conformance.kit  # noqa: F401  (the kit's models must exist before a schema is generated)
    from nbdb import testing

    kind, _, query = nbdb_url_spec.removeprefix("spawn:").partition("?")
    options = dict(_SPAWN_OPTIONS.get(kind, {}))
    for name, values in parse_qs(query).items():
        value = values[-1]
        options[name] = int(value) if value.isdigit() else {"true": True, "false": False}.get(value, value)
    testing.require_server(kind)  # fails in CI, skips with the install hint elsewhere
    from nbdb.testing.fixtures import shared_server

    # The server of the same kind and options a session fixture of nbdb.testing.fixtures holds, if one does
    # (nbdb's own suite runs its tests and the kit in one session): one Cassandra JVM started, not two.
    with shared_server(kind, **options) as server:
        yield server


@pytest.fixture(scope="session")
def nbdb_url(nbdb_url_spec: str, nbdb_server: Server | None) -> str:
    """The URL under test; ``spawn:KIND`` starts a server for the session."""
    return nbdb_url_spec if nbdb_server is None else nbdb_server.url


@pytest.fixture
def db_factory(nbdb_url: str) -> Iterator[Callable[..., nbdb.Database]]:
    """Open Databases that share one namespace private to the test.

    ``url=`` reaches the same server another way (the fault tests' proxied URL).
    """
    with databases(nbdb_url, f"kit-{uuid.uuid4().hex[:12]}") as factory:
        yield factory


@pytest.fixture
def db(db_factory: Callable[..., nbdb.Database]) -> nbdb.Database:
    """A Database in the test's own namespace."""
    return db_factory()


@pytest.fixture
def capabilities(db: nbdb.Database) -> Capabilities:
    """The backend's declared capabilities."""
    return db.capabilities
