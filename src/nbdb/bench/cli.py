"""The ``nbdb bench`` sub-command (registered by :mod:`nbdb.cli`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from nbdb import errors
from nbdb._guard import EXIT_INTERRUPTED
from nbdb.bench.config import BACKENDS, SIZES

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``bench`` to the ``nbdb`` command."""
    p = subparsers.add_parser(
        "bench",
        help="benchmark backends through nbdb and through their raw clients, side by side",
        description="Run the control-plane workloads on each backend through nbdb and through the backend's own "
        "client in the same run; print a table, write bench.json and PNG plots.",
    )
    p.add_argument(
        "--backends",
        default="memory",
        help=f"comma-separated backends to measure (default: memory; known: {','.join(BACKENDS)})",
    )
    p.add_argument(
        "--urls",
        action="append",
        default=[],
        metavar="NAME=URL[,NAME=URL]",
        help="server URL of a backend, e.g. redis=redis://127.0.0.1:6379/0 (repeatable)",
    )
    p.add_argument(
        "--spawn", action="store_true", help="start a throwaway server from nbdb.testing for each backend without a URL"
    )
    p.add_argument("--quick", action="store_true", help="small sizes: under a minute on the embedded default")
    p.add_argument("--sizes", choices=sorted(SIZES), default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--workloads",
        default=None,
        help="comma-separated workload groups to run "
        "(default: all: crud,threads,txn,list,cache,fanout,spread,churn,ovn)",
    )
    p.add_argument(
        "--ovn-ports",
        default=None,
        metavar="N[,N]",
        help="ports on the switch of the OVN scale sweep, e.g. 100000 to measure only that size "
        "(default: 1000,10000 with --quick, else 1000,10000,100000)",
    )
    p.add_argument("--out", default="bench-out", type=Path, help="directory for bench.json and the plots")
    p.add_argument("--no-plots", action="store_true", help="do not draw the PNG plots")
    p.add_argument(
        "--doc",
        type=Path,
        default=None,
        help="also rewrite the generated section of this Markdown file (docs/benchmarks.md)",
    )
    p.set_defaults(func=_cmd_bench)


def _parse_counts(option: str, text: str) -> tuple[int, ...]:
    """A comma-separated list of positive counts (``1000,100000``)."""
    try:
        counts = tuple(int(v.strip().replace("_", "")) for v in text.split(",") if v.strip())
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise errors.ValidationError(f"{option} wants positive counts separated by commas, got {text!r}")
    return counts


def _parse_urls(values: list[str], backends: list[str]) -> dict[str, str]:
    urls: dict[str, str] = {}
    for value in values:
        for item in filter(None, (v.strip() for v in value.split(","))):
            name, sep, url = item.partition("=")
            name, url = name.strip(), url.strip()
            if not sep or not name or "://" not in url:
                raise errors.ValidationError(f"--urls wants NAME=URL, got {item!r}")
            if urls.get(name, url) != url:
                # The last one silently won: a run measured one of two servers, whichever the user meant.
                raise errors.ValidationError(f"--urls gives {name!r} two URLs: {urls[name]} and {url}")
            urls[name] = url
    # A URL of a backend not measured was dropped without a word (--urls redis2=..., or --urls redis=...
    # without --backends redis): the run then measured something else, for up to an hour.
    unused = [name for name in urls if name not in backends]
    if unused:
        raise errors.ValidationError(
            f"--urls names {', '.join(map(repr, unused))}, which --backends {','.join(backends)} leaves out "
            f"(known backends: {', '.join(BACKENDS)})"
        )
    return urls


@contextmanager
def _progress() -> Iterator[tuple[Callable[[int], Callable[[str], None]], Callable[[str], None]]]:
    """A progress bar on stderr (rich if installed, else one line per step)."""
    try:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
    except ImportError:  # pragma: no cover - the bench extra brings rich
        count = [0, 0]

        def start_plain(total: int) -> Callable[[str], None]:
            count[1] = total

            def tick(text: str) -> None:
                count[0] += 1
                sys.stderr.write(f"[{count[0]}/{count[1]}] {text}\n")

            return tick

        def say(text: str) -> None:
            sys.stderr.write(text + "\n")

        yield start_plain, say
        return
    console = Console(stderr=True)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    task: list[TaskID] = []

    def start(total: int) -> Callable[[str], None]:
        task.append(bar.add_task("nbdb bench", total=total))
        first = [True]

        def tick(text: str) -> None:
            if not first[0]:
                bar.advance(task[0])
            first[0] = False
            bar.update(task[0], description=text)
            if not console.is_terminal:
                console.print(f"bench: {text}", highlight=False, markup=False)

        return tick

    def say_above(text: str) -> None:
        bar.console.print(text, highlight=False, markup=False)

    with bar:
        yield start, say_above


def _can_plot() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _check_writable(out: Path, doc: Path | None) -> None:
    """Make the output directory, and check the doc to update can be written; ValidationError if not.

    (A directory that could not be made, or a doc in a missing directory, was a traceback after the
    whole run, its figures lost.)
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise errors.ValidationError(f"--out {out}: cannot make the directory: {exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise errors.ValidationError(f"--out {out}: the directory is not writable")
    if doc is not None:
        if doc.exists():
            writable = doc.is_file() and os.access(doc, os.W_OK)
        else:
            writable = doc.parent.is_dir() and os.access(doc.parent, os.W_OK | os.X_OK)
        if not writable:
            raise errors.ValidationError(f"--doc {doc}: cannot write it (a file in an existing, writable directory)")


def _cmd_bench(args: argparse.Namespace) -> int:
    from nbdb.bench.report import markdown, print_report, update_doc
    from nbdb.bench.runner import run_bench
    from nbdb.bench.workloads import GROUPS

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        # A server's URL given here (--backends redis://...) is refused as a name: say where a URL goes.
        urls_hint = "; a server's URL goes in --urls NAME=URL" if any("://" in b for b in unknown) else ""
        raise errors.ValidationError(
            f"unknown backend(s) {', '.join(map(repr, unknown)) or '(none given)'}; known: {', '.join(BACKENDS)}"
            + urls_hint
        )
    groups = GROUPS
    if args.workloads is not None:
        wanted = [w.strip() for w in args.workloads.split(",") if w.strip()]
        names = [g.name for g in GROUPS]
        bad = [w for w in wanted if w not in names]
        if bad or not wanted:
            # An empty list ran every group ('') or none, and exited 0 with nothing measured (',').
            given = ", ".join(bad) or "(none given)"
            raise errors.ValidationError(f"unknown workload group(s) {given}; known: {', '.join(names)}")
        groups = tuple(g for g in GROUPS if g.name in wanted)
    urls = _parse_urls(args.urls, backends)
    sizes = SIZES[args.sizes or ("quick" if args.quick else "full")]
    if args.ovn_ports is not None:
        sizes = replace(sizes, ovn_ports=_parse_counts("--ovn-ports", args.ovn_ports))
    plots = not args.no_plots
    if plots and not _can_plot():
        # Say so before the run, not after it: the figures are worth having without plots.
        sys.stderr.write("nbdb bench: matplotlib is not installed, so no plots (pip install 'nbdb[bench]')\n")
        plots = False
    out: Path = args.out
    _check_writable(out, args.doc)  # before the run, not after it: a run can take an hour
    argv = sys.argv[2:] if len(sys.argv) > 2 and sys.argv[1] == "bench" else None
    with _progress() as (start, notify):
        result = run_bench(
            backends,
            sizes,
            urls=urls,
            spawn=args.spawn,
            progress=start,
            notify=notify,
            argv=argv,
            groups=groups,
        )
    result.write_json(out / "bench.json")
    images: dict[str, Path] = {}
    if plots and result.measurements:
        from nbdb.bench.plots import write_plots

        images = write_plots(result, out)
    print_report(result, sys.stdout)
    sys.stdout.write(f"\nfigures: {out / 'bench.json'}" + "".join(f"\nplot: {p}" for p in images.values()) + "\n")
    interrupted = result.meta.get("interrupted")
    if interrupted is not None:
        sys.stderr.write(
            f"nbdb bench: interrupted during {interrupted}: the figures above are those measured before it"
            f"{'; --doc left unchanged' if args.doc is not None else ''}\n"
        )
        return EXIT_INTERRUPTED
    if args.doc is not None:
        doc: Path = args.doc
        rel = {title: os.path.relpath(path, doc.parent) for title, path in images.items()}
        update_doc(doc, markdown(result, rel))
        sys.stdout.write(f"updated: {doc}\n")
    measured = any(info.get("status") == "ok" for info in result.backends.values())
    return 0 if measured and not result.errors else 1
