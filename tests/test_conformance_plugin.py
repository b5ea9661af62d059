"""The conformance kit's own options, run as a backend author runs the kit (a pytest of its own, memory://)."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import pytest_timeout

import nbdb
from nbdb.conformance import plugin

pytestmark = pytest.mark.timeout(120)

ThirdParty = Callable[[dict[str, str]], dict[str, str]]
"""conftest's ``third_party``: declare backends of another package, get the environment that finds them."""


def kit(tmp_path: Path, *args: str, module: str = "nbdb.conformance.test_crud") -> subprocess.CompletedProcess[str]:
    """``pytest --pyargs MODULE ARGS`` on this tree's nbdb, from an empty directory."""
    env = {**os.environ, "PYTHONPATH": str(Path(nbdb.__file__).parents[1])}
    command = [sys.executable, "-m", "pytest", "--pyargs", module, "-q", "-rxX", "-p", "no:cacheprovider", *args]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=100)


def summary(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr


@pytest.mark.parametrize(
    "name",
    [
        "test_get_by_string_id",
        "test_get_by_string_id[memory://]",
        "test_crud.py::test_get_by_string_id",
        "nbdb/conformance/test_crud.py::test_get_by_string_id[memory://]",
    ],
)
def test_expect_fail_marks_exactly_the_named_test(tmp_path: Path, name: str) -> None:
    done = kit(tmp_path, "--nbdb-url=memory://", f"--nbdb-expect-fail={name}")
    # memory:// passes it: the one marked test is an unexpected pass, every other test passes as it is.
    assert "1 failed" in summary(done) and "xfail" not in summary(done), done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("[XPASS(strict)]") == 1 and "test_get_by_string_id" in done.stdout


@pytest.mark.parametrize("name", ["test_get", "get_by_string_id", "test_get_by_string_id[redis://]", "test_nope"])
def test_expect_fail_naming_no_kit_test_is_a_usage_error(tmp_path: Path, name: str) -> None:
    """A prefix (``test_get``) used to mark every test it began; a typo was a warning lost in the output."""
    done = kit(tmp_path, "--nbdb-url=memory://", f"--nbdb-expect-fail={name}")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"--nbdb-expect-fail {name!r}: no kit test of that name" in done.stderr


def test_expect_fail_of_a_kit_test_another_run_collects_is_no_error(tmp_path: Path) -> None:
    """A project's ini list names tests of every kit module: a run of one module must not refuse it."""
    done = kit(tmp_path, "--nbdb-url=memory://", "--nbdb-expect-fail=test_namespaces_isolate")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture
def broken_backends(third_party: ThirdParty) -> dict[str, str]:
    """One third-party backend whose module has a syntax error, one whose driver package is missing."""
    return third_party({"kitsyntax": "def broken(:\n    pass\n", "kitnodriver": "import nbdb_kit_no_such_driver\n"})


@pytest.mark.parametrize(
    ("scheme", "cause"),
    [("kitsyntax", "SyntaxError"), ("kitnodriver", "No module named 'nbdb_kit_no_such_driver'")],
)
def test_a_backend_that_fails_to_import_is_one_clear_error(
    tmp_path: Path, broken_backends: dict[str, str], scheme: str, cause: str
) -> None:
    env = broken_backends
    connect = f"import nbdb\ntry:\n    nbdb.connect('{scheme}://x')\nexcept nbdb.errors.BackendLoadError as e:\n"
    connect += "    print(e.scheme, '|', e)\n"
    done = subprocess.run([sys.executable, "-c", connect], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith(f"{scheme} | backend {scheme!r} could not be loaded"), (
        done.stdout + done.stderr
    )
    assert cause in done.stdout
    command = [sys.executable, "-m", "pytest", "--pyargs", "nbdb.conformance.test_crud", "-q", "-p", "no:cacheprovider"]
    run = subprocess.run(
        [*command, f"--nbdb-url={scheme}://x"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=100
    )
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"backend {scheme!r} could not be loaded" in run.stderr and cause in run.stderr
    assert "Traceback" not in run.stdout + run.stderr and " error" not in run.stdout


LITERAL_WILDCARD = """
from nbdb.backends.sqlite import SqliteBackend
from nbdb.families.kvplan import wildcard_split


class Backend(SqliteBackend):
    \"\"\"Declares topic_wildcard (as SqliteBackend does) but reads o/*/<table>/ as it is, where no key is.\"\"\"

    def range_keys(self, prefixes):
        return super().range_keys([p for p in prefixes if wildcard_split(p, self.layout.objects) is None])

    def range_rows(self, prefixes):
        return super().range_rows([p for p in prefixes if wildcard_split(p, self.layout.objects) is None])

    @classmethod
    def from_url(cls, url, **options):
        return super().from_url(url.replace("kitwild://", "sqlite://", 1), **options)
"""


def test_a_wrong_topic_wildcard_declaration_is_named_by_the_kit(tmp_path: Path, third_party: ThirdParty) -> None:
    """Lists of a table came back empty, far from the claim that made them so."""
    env = third_party({"kitwild": LITERAL_WILDCARD})
    command = [sys.executable, "-m", "pytest", "--pyargs", "nbdb.conformance.test_capabilities", "-q", "-rf"]
    done = subprocess.run(
        [*command, "-p", "no:cacheprovider", f"--nbdb-url=kitwild:///{tmp_path}/kit.db"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    # The lists that come back empty still fail (test_cross_process_clients_share_data); one failure says why.
    assert "FAILED " in done.stdout and "test_topic_wildcard_is_declared_truly" in done.stdout
    assert "Backend declares topic_wildcard = True, but range_keys(" in done.stdout
    assert "or declare topic_wildcard = False" in done.stdout


def test_a_url_no_backend_serves_is_one_clear_error(tmp_path: Path) -> None:
    done = kit(tmp_path, "--nbdb-url=nosuchscheme://x")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout[-3000:] + done.stderr[-3000:]
    assert "--nbdb-url nosuchscheme://x: no backend for URL scheme 'nosuchscheme'" in done.stderr


KIT = "nbdb.conformance"
SLIPS = "test_namespaces_isolate or test_lease_held_sees_the_leases_acquire_lease_takes"

SLOPPY = """
from nbdb.backends.sqlite import SqliteBackend
from nbdb.families.kv import KeyValueBackend


class Backend(SqliteBackend):
    \"\"\"Two slips of a first backend: leases kept in a table without a lease_held, namespace= dropped.\"\"\"

    lease_held = KeyValueBackend.lease_held  # the default: reads a lease key this store never writes

    @classmethod
    def from_url(cls, url, **options):
        options.pop("namespace", None)
        return super().from_url(url.replace("kitsloppy://", "sqlite://", 1), **options)
"""

FOREIGN_ERRORS = """
from nbdb.backends.sqlite import SqliteBackend
from nbdb.families.kv import KeyStream


class _Exploding(KeyStream):
    def poll(self, timeout):
        raise RuntimeError("kit-watch-driver-exploded")

    @property
    def revision(self):
        return 0

    def close(self):
        pass


class Backend(SqliteBackend):
    \"\"\"Lets its client library's exceptions out: a point read raises, and so does every watch.\"\"\"

    def get_key(self, key):
        raise RuntimeError("kit-driver-exploded")

    def watch_keys(self, prefixes, since):
        return _Exploding()

    @classmethod
    def from_url(cls, url, **options):
        return super().from_url(url.replace("kitforeign://", "sqlite://", 1), **options)
"""


Completed = subprocess.CompletedProcess[str]


def third_party_kit(env: dict[str, str], cwd: Path, *args: str) -> Completed:
    """pytest ARGS with the environment ``third_party`` made (its backends found by entry point)."""
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=100)


def kit_on(third_party: ThirdParty, tmp_path: Path, scheme: str, source: str, args: str) -> Completed:
    """The kit (``args``, shell words) against a third-party backend of ``source`` under ``scheme``, on a file."""
    env = third_party({scheme: source})
    return third_party_kit(env, tmp_path, "--pyargs", *shlex.split(args), f"--nbdb-url={scheme}:///{tmp_path}/kit.db")


def assert_kit_failed(done: Completed, failed: int, *said: str) -> None:
    """The kit failed ``failed`` tests and its output says each of ``said``."""
    assert f"{failed} failed" in summary(done), done.stdout[-3000:] + done.stderr[-3000:]
    for text in said:
        assert text in done.stdout


def test_a_backend_s_slips_are_named_with_what_to_fix(tmp_path: Path, third_party: ThirdParty) -> None:
    """A dropped namespace failed as ``assert False``; a missing lease_held surfaced as a lost lock elsewhere."""
    done = kit_on(
        third_party, tmp_path, "kitsloppy", SLOPPY, f"{KIT}.test_capabilities {KIT}.test_concurrency -k '{SLIPS}'"
    )
    assert_kit_failed(
        done,
        2,
        "is listed in namespace kit-iso-b: from_url must honour namespace=",
        "Backend.lease_held says the token that acquire_lease just gave the lease to does not hold it",
    )


def test_an_error_that_is_no_nbdb_error_is_named_where_the_backend_let_it_out(
    tmp_path: Path, third_party: ThirdParty
) -> None:
    """The kit said only ``RuntimeError`` (raised), or ``assert False`` after a wait (a cache's watch re-opened)."""
    done = kit_on(
        third_party,
        tmp_path,
        "kitforeign",
        FOREIGN_ERRORS,
        f"{KIT}.test_crud {KIT}.test_cache -k 'test_get_by_string_id or test_cache_loads_then_follows'",
    )
    assert "2 failed" in summary(done), done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("nbdb kit: what to fix") == 2, done.stdout[-3000:]
    raised = "builtins.RuntimeError: kit-driver-exploded reached nbdb from the backend at "
    logged = "builtins.RuntimeError: kit-watch-driver-exploded (logged by nbdb."
    for hint in (raised, logged):
        assert hint in done.stdout, done.stdout[-3000:]
        assert "kit_kitforeign_backend.py:" in done.stdout.split(hint, 1)[1].splitlines()[0]
    assert "map the client library's exceptions to them with an nbdb.retry.ExceptionMap" in done.stdout


LEAST = """
from dataclasses import replace

from nbdb.backends.sqlite import SqliteBackend
from nbdb.capabilities import Atomicity, Expiry


class Backend(SqliteBackend):
    \"\"\"SQLite declaring the least a backend may: no transactions, unique fields, fencing, expiry nor pages.\"\"\"

    @classmethod
    def from_url(cls, url, **options):
        backend = super().from_url(url.replace("kitleast://", "sqlite://", 1), **options)
        least = dict(transactions=Atomicity.NONE, unique=False, fencing=False, expiry=Expiry.NONE, pages=False)
        backend.capabilities = replace(backend.capabilities, **least)
        return backend
"""


def test_a_backend_declaring_the_least_passes_or_skips_every_kit_test(tmp_path: Path, third_party: ThirdParty) -> None:
    """test_writes_tell_the_revision_they_committed_at opened a transaction on a backend that declares none."""
    done = kit_on(third_party, tmp_path, "kitleast", LEAST, f"{KIT} -k 'not faults' -rfs")
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    assert "backend declares transactions=none" in done.stdout


UNFIT = {
    "kitnotbackend": "class Backend:\n    @classmethod\n    def from_url(cls, url, **options):\n        return cls()\n",
    "kitabstract": (
        "from nbdb.families.kv import KeyValueBackend\n\n\n"
        "class Backend(KeyValueBackend):\n    def get_key(self, key):\n        return None\n\n"
        "    @classmethod\n    def from_url(cls, url, **options):\n        return cls()\n"
    ),
}


@pytest.mark.parametrize(
    ("scheme", "says"),
    [
        ("kitnotbackend", "names Backend, which is no nbdb.spi.Backend subclass"),
        (
            "kitabstract",
            "names Backend, which leaves abstract methods unimplemented: acquire_lease, close, commit_keys",
        ),
    ],
)
def test_an_entry_point_that_names_no_usable_backend_is_one_clear_error(
    tmp_path: Path, third_party: ThirdParty, scheme: str, says: str
) -> None:
    """Every kit test errored alike (an AttributeError on from_url, a TypeError on instantiating)."""
    done = third_party_kit(
        third_party(UNFIT), tmp_path, "--pyargs", "nbdb.conformance.test_crud", f"--nbdb-url={scheme}://x"
    )
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"--nbdb-url {scheme}://x: the {scheme!r} entry point {says}" in done.stderr


@pytest.mark.parametrize("scheme", sorted(UNFIT))
def test_connecting_to_an_entry_point_that_names_no_usable_backend_is_a_backend_load_error(
    third_party: ThirdParty, scheme: str
) -> None:
    """nbdb.connect raised a bare AttributeError (no from_url) or TypeError (abstract methods left)."""
    env = third_party(UNFIT)
    connect = f"import nbdb\ntry:\n    nbdb.connect('{scheme}://x')\nexcept nbdb.errors.BackendLoadError as e:\n"
    connect += "    print(e.scheme, '|', e)\n"
    done = subprocess.run([sys.executable, "-c", connect], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith(f"{scheme} | the {scheme!r} entry point names Backend"), (
        done.stdout + done.stderr
    )


HANGING = """
import threading

from nbdb.backends.sqlite import SqliteBackend


class Backend(SqliteBackend):
    \"\"\"A point read that never returns (a client library waiting on a server that never answers).\"\"\"

    def get_key(self, key):
        threading.Event().wait()

    @classmethod
    def from_url(cls, url, **options):
        return super().from_url(url.replace("kithang://", "sqlite://", 1), **options)
"""


def test_a_test_that_timed_out_in_the_backend_says_where_it_hung(tmp_path: Path, third_party: ThirdParty) -> None:
    """pytest-timeout's report showed every thread's stack; which frame was the backend's was the reader's guess."""
    done = kit_on(third_party, tmp_path, "kithang", HANGING, f"{KIT}.test_crud -k test_get_by_string_id -x")
    assert "1 failed" in summary(done), done.stdout[-3000:] + done.stderr[-3000:]
    assert "The test timed out while the backend was at " in done.stdout, done.stdout[-3000:]
    assert "kit_kithang_backend.py:" in done.stdout.split("The test timed out while the backend was at ", 1)[1]


def installed_code(path: str, source: str) -> dict[str, Any]:
    """The namespace of ``source`` run as if from the file ``path`` (a module pip installed there)."""
    namespace: dict[str, Any] = {}
    exec(compile(source, path, "exec"), namespace)
    return namespace


# Where pip installs a backend (and its client library): a venv's site-packages lies inside its lib/python3.X,
# which sysconfig names the venv's platstdlib; a user's or Debian's lies outside every stdlib directory.
SITE_PACKAGES = sorted({*(sysconfig.get_paths()[key] for key in ("purelib", "platlib")), site.getusersitepackages()})


@pytest.mark.parametrize("site_dir", SITE_PACKAGES)
def test_a_backend_pip_installed_in_site_packages_is_blamed_for_its_foreign_error(site_dir: str) -> None:
    """A venv's site-packages counted as the stdlib: a pip-installed backend's ValueError went unnamed."""
    backend = os.path.join(site_dir, "nbdb_kitblame_backend", "backend.py")
    get_key = installed_code(backend, "def get_key():\n    raise ValueError('from the client library')\n")["get_key"]
    with pytest.raises(ValueError) as caught:
        get_key()
    assert plugin.foreign_origin(caught.value) == f"{backend}:2 (get_key)"


def test_a_timeout_names_the_interrupted_backend_frame_not_the_signal_handler() -> None:
    """The innermost frame outside nbdb was the handler that raised the timeout, not the backend call it stopped."""
    backend = os.path.join(sysconfig.get_paths()["purelib"], "nbdb_kitblame_backend", "backend.py")
    source = "import threading\n\ndef get_key():\n    threading.Event().wait(30)\n"
    get_key = installed_code(backend, source)["get_key"]

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        pytest.fail("Timeout (>0.01s) from a signal handler outside pytest-timeout")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.01)
        with pytest.raises(pytest.fail.Exception) as caught:
            get_key()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    hint = plugin._timed_out_in(caught.value)
    expected = f"The test timed out while the backend was at {backend}:4 (get_key)."
    assert hint is not None and hint.startswith(expected), hint


def test_a_timeout_names_the_backend_where_pytest_timeout_is_outside_the_stdlib(
    tmp_path: Path, third_party: ThirdParty
) -> None:
    """Where pip put pytest-timeout outside the stdlib directory (Debian's dist-packages, --user), it was blamed."""
    env = third_party({"kithang": HANGING})
    site_dir = Path(env["PYTHONPATH"].split(os.pathsep)[0])
    shutil.copy(pytest_timeout.__file__, site_dir / "pytest_timeout.py")  # found first: pytest loads this one
    done = third_party_kit(
        env, tmp_path, "--pyargs", f"{KIT}.test_crud", "-k", "test_get_by_string_id", "-x", "--trace-config",
        f"--nbdb-url=kithang:///{tmp_path}/kit.db",
    )  # fmt: skip
    assert "1 failed" in summary(done), done.stdout[-3000:] + done.stderr[-3000:]
    copy = f"<module 'pytest_timeout' from '{site_dir / 'pytest_timeout.py'}'>"
    assert copy in done.stdout, done.stdout[:3000]  # the copy ran, not the venv's
    where = done.stdout.split("The test timed out while the backend was at ", 1)[1]
    assert where.startswith(str(site_dir / "kit_kithang_backend.py")), done.stdout[-3000:]


POLLED_STREAM = """
from nbdb.backends.sqlite import SqliteBackend
from nbdb.families.kvtypes import KeyStream


class Mutant(KeyStream):
    \"\"\"SQLite's key stream, with one slip of a stream's own (``slip``) in what each poll returns.\"\"\"

    def __init__(self, inner):
        self.inner = inner
        self.kept = []

    @property
    def revision(self):
        return self.inner.revision

    def close(self):
        self.inner.close()

    def poll(self, timeout):
        changes = self.kept + self.inner.poll(0 if self.kept else timeout)
        self.kept = []
        return slip(self, changes)


class Backend(SqliteBackend):
    def watch_keys(self, prefixes, since):
        return Mutant(super().watch_keys(prefixes, since))

    @classmethod
    def from_url(cls, url, **options):
        return super().from_url("sqlite://" + url.split("://", 1)[1], **options)
"""

SLIPS_OF_A_STREAM = {
    # The last change of a poll handed again with the next: a resume point kept one change behind.
    "kitdup": (
        "def slip(stream, changes):\n"
        "    again, stream.last = getattr(stream, 'last', []), changes[-1:] or getattr(stream, 'last', [])\n"
        "    return again + changes if changes else changes\n",
        "duplicate: ",
    ),
    # A commit's last change held back to the next poll: a reader that stops at a page size, not a revision.
    "kittear": (
        "def slip(stream, changes):\n"
        "    if len(changes) > 1 and changes[-1].revision == changes[-2].revision:\n"
        "        stream.kept = [changes.pop()]\n"
        "    return changes\n",
        "torn: ",
    ),
}


@pytest.mark.parametrize("scheme", sorted(SLIPS_OF_A_STREAM))
def test_a_stream_that_hands_a_change_twice_or_a_commit_apart_fails_the_kit(
    tmp_path: Path, third_party: ThirdParty, scheme: str
) -> None:
    """Both passed the kit: its watch tests wrote everything before the first poll, and only the fault tests
    (through a proxy: no SQLite, no memory) polled between writes."""
    source, says = SLIPS_OF_A_STREAM[scheme]
    done = kit_on(third_party, tmp_path, scheme, POLLED_STREAM + source, f"{KIT}.test_faults_watch -k followed")
    assert "1 failed" in summary(done), done.stdout[-3000:] + done.stderr[-3000:]
    assert says in done.stdout and "test_a_followed_watch_delivers_each_commit_once_whole" in done.stdout


TORN_COMMIT_CATCHERS = (
    "test_transaction_changes_arrive_together",
    "test_a_watch_resumed_after_one_poll_of_a_transaction_misses_none_of_it",
    "test_a_cache_that_reached_a_transactions_revision_holds_all_of_it",
)


def test_a_commit_handed_over_two_polls_fails_the_kit_in_three_more_ways(
    tmp_path: Path, third_party: ThirdParty
) -> None:
    """Only the followed workload caught it: the watch test of a transaction gathered its changes over any
    number of polls, no test resumed after the poll that brought part of a commit, and no cache saw one."""
    source, _ = SLIPS_OF_A_STREAM["kittear"]
    names = " or ".join(TORN_COMMIT_CATCHERS)
    done = kit_on(
        third_party, tmp_path, "kittear", POLLED_STREAM + source,
        f"{KIT}.test_watch {KIT}.test_cache -k '{names}'",
    )  # fmt: skip
    assert_kit_failed(done, len(TORN_COMMIT_CATCHERS), *TORN_COMMIT_CATCHERS, "torn: ")


SCAN_THEN_REVISION = """
import time

from nbdb.backends.sqlite import SqliteBackend


class Backend(SqliteBackend):
    \"\"\"Reads a scan's revision in a read of its own, after the rows (a store without snapshot reads).\"\"\"

    def range_rows(self, prefixes):
        rows, _ = super().range_rows(prefixes)
        time.sleep(0.05)  # the window, widened: another client commits meanwhile
        return rows, self.revision_now()

    def range_keys(self, prefixes):
        keys, _ = super().range_keys(prefixes)
        time.sleep(0.05)
        return keys, self.revision_now()

    @classmethod
    def from_url(cls, url, **options):
        return super().from_url("sqlite://" + url.split("://", 1)[1], **options)
"""


def test_a_scan_whose_revision_is_read_after_its_rows_fails_the_kit(tmp_path: Path, third_party: ThirdParty) -> None:
    """It passed the kit: no test loaded a cache while another client wrote."""
    done = kit_on(third_party, tmp_path, "kitscanlate", SCAN_THEN_REVISION, f"{KIT}.test_cache -k loaded_while")
    assert "1 failed" in summary(done), done.stdout[-3000:] + done.stderr[-3000:]
    assert "for good: a scan's revision must be the one its rows were read at" in done.stdout


def test_a_scan_whose_revision_is_read_after_its_rows_fails_the_kit_on_a_fast_store(
    tmp_path: Path, third_party: ThirdParty
) -> None:
    """Without a widened window the loading test above caught it in 2 runs of 5 (SQLite on a local file): a write
    now lands before each step of the load, between the rows and the revision read apart from them too."""
    fast = SCAN_THEN_REVISION.replace(
        "        time.sleep(0.05)  # the window, widened: another client commits meanwhile\n", ""
    )
    fast = fast.replace("        time.sleep(0.05)\n", "")
    assert "sleep" not in fast
    done = kit_on(third_party, tmp_path, "kitscanfast", fast, f"{KIT}.test_cache -k between_writes")
    # Both the cache of the Database's shared watch and one with a stream of its own.
    assert_kit_failed(done, 2, "test_a_cache_loaded_between_writes_ends_equal_to_the_store", "missed ")


REVISION_AHEAD = """
from nbdb.backends.sqlite import SqliteBackend
from nbdb.families.kvtypes import KeyStream


class Ahead(KeyStream):
    \"\"\"SQLite's key stream, whose revision is the store's when asked, not what it returned.\"\"\"

    def __init__(self, inner, backend):
        self.inner, self.backend = inner, backend

    def poll(self, timeout):
        return self.inner.poll(timeout)

    @property
    def revision(self):
        return max(self.inner.revision, self.backend.revision_now())

    def close(self):
        self.inner.close()


class Backend(SqliteBackend):
    def watch_keys(self, prefixes, since):
        return Ahead(super().watch_keys(prefixes, since), self)

    @classmethod
    def from_url(cls, url, **options):
        return super().from_url("sqlite://" + url.split("://", 1)[1], **options)
"""


def test_a_stream_whose_revision_runs_ahead_of_its_deliveries_fails_the_kit(
    tmp_path: Path, third_party: ThirdParty
) -> None:
    """It failed only the random state machine test, now and then: every resume token was taken after a poll."""
    done = kit_on(third_party, tmp_path, "kitahead", REVISION_AHEAD, f"{KIT}.test_watch -k resume_token")
    assert "1 failed" in summary(done), done.stdout[-3000:] + done.stderr[-3000:]
    assert "a watch gave before a poll" in done.stdout


UNFENCED = """
from nbdb.backends.sqlite import SqliteBackend


class Backend(SqliteBackend):
    \"\"\"Declares fencing (as SqliteBackend does), but commits a fenced write without checking its lease.\"\"\"

    def commit_fenced(self, ops, fence):
        return self.commit(ops)

    @classmethod
    def from_url(cls, url, **options):
        return super().from_url("sqlite://" + url.split("://", 1)[1], **options)
"""


def test_a_fenced_commit_that_does_not_check_its_lease_fails_the_kit(tmp_path: Path, third_party: ThirdParty) -> None:
    """It passed the kit: the fencing tests lost the lock only in ways the handle knew of (released, closed)."""
    done = kit_on(
        third_party, tmp_path, "kitunfenced", UNFENCED, f"{KIT}.test_concurrency {KIT}.test_data_api -k fence"
    )
    # Two kit tests take the lease away behind the handle's back, and the store must refuse both writes.
    assert_kit_failed(
        done,
        2,
        "test_a_fenced_write_is_refused_by_the_store_once_the_lease_changed_hands",
        "test_a_refused_fenced_write_says_the_lock_is_lost_at_once",
    )
