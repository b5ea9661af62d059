"""Running a benchmark: find or start each backend's server, then run every workload on it.

Per backend and per round, each workload runs through the raw client and then
through nbdb, one after the other, so both sides see the same machine load;
each figure kept is the best of the rounds. A backend that cannot be used
(no nbdb backend yet, no URL, client missing, server unreachable) is skipped
with its reason in the report; a workload that fails on a backend is
recorded as an error and the run goes on.
"""

from __future__ import annotations

import datetime
import gc
import importlib
import logging
import os
import platform
import tempfile
import traceback
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import nbdb
from nbdb.bench.config import BACKENDS, Sizes, spawn_options
from nbdb.bench.raw import extra_baselines
from nbdb.bench.results import BenchResult, PartialRun
from nbdb.bench.target import Target
from nbdb.bench.workloads import GROUPS, Group
from nbdb.models.ovn import LogicalSwitch
from nbdb.options import redact

__all__ = ["Progress", "Step", "plan", "resolve_targets", "run_bench"]

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
"""Called before each step with its description (the CLI draws a progress bar with it)."""


@dataclass(frozen=True, slots=True)
class Step:
    """One call of one workload group on one backend through one side."""

    target: Target
    group: Group
    impl: str
    params: Mapping[str, Any]
    round: int

    @property
    def params_text(self) -> str:
        """The parameters as the table shows them (``threads=16 topics=16``; empty: none)."""
        return " ".join(f"{k}={v}" for k, v in self.params.items())

    def describe(self, rounds: int) -> str:
        """A one-line description for the progress bar."""
        suffix = f" (round {self.round + 1}/{rounds})" if rounds > 1 else ""
        return f"{self.target.name} · {self.group.name} {self.params_text} · {self.impl}{suffix}".replace("  ", " ")


def _backend_importable(name: str) -> str | None:
    """Why nbdb's backend ``name`` cannot be used here, or None."""
    if name == "memory":
        return None
    try:
        importlib.import_module(f"nbdb.backends.{name}")
    except ImportError as exc:
        return f"nbdb has no working {name} backend here ({exc})"
    return None


def resolve_targets(
    backends: Sequence[str],
    urls: Mapping[str, str],
    spawn: bool,
    stack: ExitStack,
    result: BenchResult,
    notify: Progress | None = None,
    server_options: Callable[[str], Mapping[str, Any]] | None = None,
) -> list[Target]:
    """The backends that can be measured, starting harness servers with ``spawn``.

    Every backend that cannot be measured gets a ``skipped`` entry with its
    reason in ``result.backends``. Servers started here stop when ``stack`` closes;
    ``server_options(backend)`` gives the options such a server starts with.
    """
    targets = []
    for name in backends:
        if name not in BACKENDS:
            raise nbdb.ValidationError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
        reason = _backend_importable(name)
        if reason is not None:
            result.backends[name] = {"status": "skipped", "reason": reason}
            continue
        url = urls.get(name)
        spawned = False
        options: dict[str, Any] = {}
        if url is None and name == "memory":
            url = "memory://"
        if url is None and name == "sqlite":
            # The embedded file store needs no server: a file in a directory removed after the run.
            url = f"sqlite:///{stack.enter_context(tempfile.TemporaryDirectory(prefix='nbdb-bench-'))}/bench.db"
        if url is None and spawn:
            kind = BACKENDS[name]
            assert kind is not None
            from nbdb.testing import missing_reason, start_server

            missing = missing_reason(kind)
            if missing is not None:
                result.backends[name] = {"status": "skipped", "reason": f"cannot spawn {kind}: {missing}"}
                continue
            options = dict(server_options(name)) if server_options is not None else options
            if notify is not None:
                notify(f"starting a {kind} server" + "".join(f", {k}={v}" for k, v in options.items()))
            try:
                server = start_server(kind, **options)
            except Exception as exc:
                result.backends[name] = {"status": "skipped", "reason": f"{kind} server did not start: {exc}"}
                continue
            stack.callback(server.stop)
            url = server.url
            spawned = True
        if url is None:
            result.backends[name] = {
                "status": "skipped",
                "reason": f"no URL: pass --urls {name}=URL, or --spawn to start a throwaway server",
            }
            continue
        target = Target(name, url)
        try:
            with target.open(target.namespace()) as db:
                db.list(LogicalSwitch)
                capabilities = {k: str(v) for k, v in db.capabilities.as_dict().items()}
        except Exception as exc:
            result.backends[name] = {"status": "skipped", "reason": f"cannot use {redact(url)}: {exc}"}
            continue
        try:
            target.raw(target.namespace()).close()
        except LookupError as exc:
            target.raw_reason = str(exc)
        except Exception as exc:
            target.raw_reason = f"the raw client cannot reach the server: {exc}"
        result.backends[name] = {
            "status": "ok",
            "url": redact(url),
            "spawned": spawned,
            **({"server_options": options} if spawned and options else {}),
            "raw_baseline": target.raw_reason or "yes",
            "capabilities": capabilities,
        }
        targets.append(target)
    return targets


def plan(targets: Sequence[Target], sizes: Sizes, groups: Sequence[Group] = GROUPS) -> list[Step]:
    """Every step of the run, in order."""
    steps = []
    for target in targets:
        for rnd in range(sizes.rounds):
            for group in groups:
                if group.backends and target.name not in group.backends:
                    continue
                for params in group.params(sizes):
                    if params.get("objects", 0) > sizes.load_cap.get(target.name, params.get("objects", 0)):
                        continue
                    if group.raw is not None and target.raw_reason is None:
                        steps.append(Step(target, group, "raw", params, rnd))
                        for name in extra_baselines(target.name) if group.writes else []:
                            steps.append(Step(target.with_baseline(name), group, f"raw+{name}", params, rnd))
                    steps.append(Step(target, group, "nbdb", params, rnd))
    return steps


def _meta(sizes: Sizes, argv: Sequence[str] | None) -> dict[str, Any]:
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return {
        "nbdb_version": nbdb.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "nbdb bench " + " ".join(argv or []),
        "sizes": sizes.as_dict(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": list(load),
    }


def run_bench(
    backends: Sequence[str],
    sizes: Sizes,
    *,
    urls: Mapping[str, str] | None = None,
    spawn: bool = False,
    progress: Callable[[int], Progress] | None = None,
    notify: Progress | None = None,
    argv: Sequence[str] | None = None,
    groups: Sequence[Group] = GROUPS,
) -> BenchResult:
    """Run the benchmark on ``backends`` and return every figure.

    ``progress(total)`` is called once with the number of steps and returns the
    callback told of each step; ``notify`` gets the other news (servers starting).
    """
    result = BenchResult(meta=_meta(sizes, argv))
    with ExitStack() as stack:
        names = tuple(g.name for g in groups)
        targets = resolve_targets(
            backends, urls or {}, spawn, stack, result, notify, lambda backend: spawn_options(backend, sizes, names)
        )
        steps = plan(targets, sizes, groups)
        tick = progress(len(steps)) if progress is not None else None
        # A failed step is not run again in later rounds; other parameters of its group still are.
        failed: set[tuple[str, str, str, str]] = set()
        running: list[str] = []
        try:
            _run_steps(steps, sizes, tick, result, failed, running)
        except KeyboardInterrupt:
            # Ctrl-C in a run of an hour lost every figure measured: they are kept, and the
            # step that was cut short is named (its figure, and those after it, are missing).
            result.meta["interrupted"] = running[-1] if running else "before the first step"
        try:
            result.meta["loadavg_at_end"] = list(os.getloadavg())
        except OSError:
            pass
    return result


def _run_steps(
    steps: Sequence[Step],
    sizes: Sizes,
    tick: Progress | None,
    result: BenchResult,
    failed: set[tuple[str, str, str, str]],
    running: list[str],
) -> None:
    """Run ``steps`` into ``result``; ``running`` ends with the step under way."""
    for step in steps:
        running.append(step.describe(sizes.rounds))
        if tick is not None:
            tick(step.describe(sizes.rounds))
        key = (step.target.name, step.group.name, step.impl, step.params_text)
        if key in failed:
            continue
        runner = step.group.nbdb if step.impl == "nbdb" else step.group.raw
        assert runner is not None
        # Start every step with no collector debt from the steps before it (or from
        # imports): one full collection of the process's heap landing inside a
        # 20 ms step would decide that step's figure. The collections a step's own
        # objects cause are still inside its measurement.
        gc.collect()
        try:
            measured = runner(step.target, sizes, **step.params)
            for m in measured:  # an extra baseline reports itself as raw: say which it is
                m.impl = step.impl
            result.add(measured)
        except Exception as exc:
            failed.add(key)
            cause: BaseException = exc
            if isinstance(exc, PartialRun):
                for m in exc.measured:
                    m.impl = step.impl
                result.add(exc.measured)
                cause = exc.cause
            if step.impl != "nbdb" and isinstance(exc, NotImplementedError):
                # The raw client has nothing doing this group's work: no baseline for it, not a failure.
                unsupported = result.backends[step.target.name].setdefault("raw_unsupported", {})
                unsupported[step.group.name] = str(exc) or "not supported by the raw client"
                continue
            log.debug("bench step failed", exc_info=True)
            result.errors.append(
                {
                    "backend": step.target.name,
                    "workload": step.group.name,
                    "impl": step.impl,
                    "params": step.params_text,
                    "error": f"{type(cause).__name__}: {cause}",
                    "where": "".join(traceback.format_exception(cause, limit=-2)).strip().splitlines()[-3:][0].strip(),
                }
            )
