"""The ``copy``, ``dump``, ``load`` and ``verify`` sub-commands of ``nbdb``.

Exit codes: 0 done (and, for copy and verify, both sides identical); 1
verification found differences (printed on stdout); 2 an error (printed by
``nbdb.cli.main``); 3 the copy stopped early on purpose (``--limit``) and
resumes when run again; 130 interrupted; 141 stdout closed early (a pipe into
``head``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from types import FrameType
from typing import Any, BinaryIO

import nbdb
from nbdb import errors
from nbdb.atomicfile import replaced_atomically
from nbdb.models.base import Model, all_models, model_for_table
from nbdb.options import redact
from nbdb.tools.checkpoint import CheckpointFile, default_state_path
from nbdb.tools.copy import Copier, CopyIncomplete, CopyOptions, copy_scope
from nbdb.tools.dump import LoadSummary, dump, load
from nbdb.tools.progress import Progress
from nbdb.tools.snapshot import refuse_unmodelled, unsupported_models
from nbdb.tools.verify import format_differences, verify

__all__ = ["register"]

EXIT_DIFFERENCES = 1
EXIT_INCOMPLETE = 3
NO_TOPIC = "~"


def _say(text: str) -> None:
    sys.stderr.write(f"nbdb: {text}\n")


def _scope_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--topics",
        nargs="+",
        metavar="TOPIC",
        help=f"only objects of these topics (comma or space separated; {NO_TOPIC} means objects without a topic)",
    )
    parser.add_argument("--models", nargs="+", metavar="TABLE", help="only these models (table names)")
    parser.add_argument(
        "--models-from",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first, so that the models it defines are known (repeatable)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed for reading a database")


def _verify_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ignore-list-order",
        action="store_true",
        help="compare list fields as sets (OVSDB stores them sorted, without duplicates)",
    )


def _progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress line on stderr (default: when stderr is a terminal)",
    )


def _models(args: argparse.Namespace) -> list[type[Model]] | None:
    """The models named by --models (None: every model defined, minus those a side cannot store)."""
    for name in args.models_from:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise errors.ValidationError(f"--models-from {name}: {exc}") from None
    if not getattr(args, "models", None):
        return None
    out = []
    for item in args.models:
        for table in filter(None, item.split(",")):
            try:
                out.append(model_for_table(table))
            except errors.NotFoundError:
                known = ", ".join(sorted(m.nbdb_table for m in all_models()))
                raise errors.ValidationError(f"unknown model {table!r} (known: {known})") from None
    return out


def _url(url: str, what: str) -> None:
    """Refuse an empty ``url``.

    ``nbdb.connect("")`` opened a fresh ``memory://`` (it refuses it now too): an unset shell variable
    (``nbdb copy "$SRC" ...``) copied an empty source over the destination (with --overwrite deleting all
    of it) and verified it. Checked here first, to name the argument.
    """
    if not url.strip():
        raise errors.ValidationError(f"{what} is empty: give a database URL (memory:// for the embedded store)")


def _topics(args: argparse.Namespace) -> list[str | None] | None:
    if not args.topics:
        return None
    names = [t for item in args.topics for t in item.split(",") if t]
    if not names:
        # --topics "" (an unset shell variable, say) dumped, copied and verified nothing, successfully.
        raise errors.ValidationError(f"--topics names no topic: {' '.join(args.topics)!r} (leave it out for all)")
    return [None if t == NO_TOPIC else t for t in names]


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """First Ctrl-C (or SIGTERM): stop following, catch up and verify; second: abort."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        _say("stopping: catching up and verifying (interrupt again to abort; the copy resumes when run again)")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _cmd_copy(args: argparse.Namespace) -> int:
    _url(args.source, "SOURCE_URL")
    _url(args.destination, "DESTINATION_URL")
    models = _models(args)
    topics = _topics(args)
    options = CopyOptions(
        models=models,
        topics=topics,
        follow=args.follow,
        until_revision=args.until_revision,
        duration=args.duration,
        overwrite=args.overwrite,
        verify=args.verify,
        batch=args.batch,
        limit=args.limit,
        skip_corrupt=args.skip_corrupt,
        read_timeout=args.timeout,
        ignore_list_order=args.ignore_list_order,
    )
    scope = copy_scope(models or all_models(), topics)
    state = args.state or default_state_path(args.source, args.destination, scope)
    checkpoint = CheckpointFile(state)
    stop = threading.Event()
    with nbdb.connect(args.source) as src, nbdb.connect(args.destination) as dst:
        copier = Copier(
            src,
            dst,
            options,
            checkpoint=checkpoint,
            source_url=args.source,
            destination_url=args.destination,
            stop=stop,
            progress=Progress(args.progress),
        )
        try:
            with _stop_on_signals(stop) if args.follow else _nothing():
                result = copier.run()
        except CopyIncomplete as exc:
            _say(f"copy incomplete: {exc} (state: {checkpoint.path})")
            return EXIT_INCOMPLETE
        except KeyboardInterrupt:
            # Exit 130 said nothing: whether the destination now holds half a copy, and what next.
            _say(
                f"interrupted: the destination may hold part of the copy; it resumes when run again "
                f"(state: {checkpoint.path})"
            )
            raise
    resumed = f" (resumed from its {result.resumed} phase)" if result.resumed else ""
    _say(
        f"copied {redact(args.source)} -> {redact(args.destination)}{resumed}: {result.objects} objects at the "
        f"last sync, {result.written} written, {result.changes} changes followed; source revision {result.revision}"
    )
    return _report(result.differences, checkpoint.path if result.differences else None)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _report(differences: Sequence[Any] | None, state: os.PathLike[str] | None = None) -> int:
    if differences is None:
        return 0
    if not differences:
        _say("verified: both sides hold the same objects")
        return 0
    # Every difference, as docs/tools.md says: stdout is the list (for grep, wc -l or a file), stderr the count.
    for line in format_differences(differences, limit=len(differences)):
        sys.stdout.write(line + "\n")
    sys.stdout.flush()
    where = f"; the copy resumes from {state}" if state else ""
    _say(f"verification found {len(differences)} differences{where}")
    return EXIT_DIFFERENCES


def _cmd_verify(args: argparse.Namespace) -> int:
    _url(args.source, "SOURCE_URL")
    _url(args.destination, "DESTINATION_URL")
    models = _models(args)
    with nbdb.connect(args.source) as src, nbdb.connect(args.destination) as dst:
        if models is None:
            cannot = unsupported_models(src, list(all_models())) | unsupported_models(dst, list(all_models()))
            models = [m for m in all_models() if m not in cannot]
        differences = verify(
            src, dst, models, _topics(args), timeout=args.timeout, ignore_list_order=args.ignore_list_order
        )
    return _report(differences)


def _cmd_dump(args: argparse.Namespace) -> int:
    _url(args.url, "URL")
    models = _models(args)
    progress = Progress(args.progress)
    if args.output not in (None, "-"):
        # -o DIR or -o /no/such/dir/f ended in a traceback, the first only after the whole read.
        directory = os.path.dirname(os.path.abspath(args.output))
        if os.path.isdir(args.output) or not os.path.isdir(directory) or not os.access(directory, os.W_OK):
            raise errors.ValidationError(
                f"-o {args.output}: cannot write it (want a file in an existing, writable directory)"
            )
    with nbdb.connect(args.url) as db:
        if models is None:
            refuse_unmodelled(db, "a dump")
            cannot = unsupported_models(db, list(all_models()))
            models = [m for m in all_models() if m not in cannot]
        # A file is written beside the target and renamed: a failed dump leaves no half file.
        to_stdout = args.output in (None, "-")
        target = nullcontext(sys.stdout.buffer) if to_stdout else replaced_atomically(args.output, ".nbdb-dump.")
        with target as out:
            summary = dump(
                db,
                out,
                models=models,
                topics=_topics(args),
                source=redact(args.url),
                skip_corrupt=args.skip_corrupt,
                timeout=args.timeout,
                progress=progress,
            )
    _say(f"dumped {summary.count} objects at source revision {summary.revision} (sha256 {summary.sha256[:16]}...)")
    return 0


def _cmd_load(args: argparse.Namespace) -> int:
    _url(args.url, "URL")
    _models(args)
    progress = Progress(args.progress)
    try:
        summary = _load_into(args, progress)
    except KeyboardInterrupt:
        if args.resume:
            _say("interrupted: the destination may hold part of the dump; run the same load again to complete it")
        else:
            _say("interrupted: the load is one transaction, so the destination holds all of the dump or none of it")
        raise
    _say(f"loaded {summary.count} objects ({summary.written} written, {summary.mode})")
    return 0


def _load_into(args: argparse.Namespace, progress: Progress) -> LoadSummary:
    if args.input in (None, "-") and sys.stdin.isatty():
        # `nbdb load URL` without `< FILE` waited for a dump typed in, without a word.
        raise errors.ValidationError("no dump to read: give FILE, or redirect stdin from one (< backup.jsonl)")
    stream: AbstractContextManager[BinaryIO]
    if args.input in (None, "-"):
        stream = nullcontext(sys.stdin.buffer)
    else:
        # Opened before connecting: a missing FILE left a new, empty database file (sqlite://) behind.
        try:
            stream = open(args.input, "rb")
        except OSError as exc:
            raise errors.ValidationError(f"cannot read {args.input}: {exc}") from None
    with stream as lines, nbdb.connect(args.url) as db:
        summary = load(db, lines, resume=args.resume, batch=args.batch, progress=progress)
    return summary


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``copy``, ``dump``, ``load`` and ``verify`` to the ``nbdb`` command."""
    copy = subparsers.add_parser(
        "copy",
        help="copy every object from one database to another (live, resumable, verified)",
        description="Copy every object of the models from SOURCE to DESTINATION, parents first, keeping ids "
        "and references; with --follow keep applying the source's changes until interrupted; then compare "
        "both sides object by object. An interrupted copy resumes when run again (see --state).",
    )
    copy.add_argument("source", metavar="SOURCE_URL")
    copy.add_argument("destination", metavar="DESTINATION_URL")
    copy.add_argument("--follow", action="store_true", help="keep applying changes until Ctrl-C/SIGTERM")
    copy.add_argument("--until-revision", type=int, metavar="REV", help="with --follow: stop at this source revision")
    copy.add_argument("--duration", type=float, metavar="SECONDS", help="with --follow: stop after this long")
    copy.add_argument(
        "--state", metavar="PATH", help="checkpoint file (default: ${NBDB_CACHE:-~/.cache/nbdb}/copy-<hash>.json)"
    )
    copy.add_argument(
        "--overwrite",
        action="store_true",
        help="allow a fresh copy into a non-empty destination: make it equal to the source (deletes the rest)",
    )
    copy.add_argument("--batch", type=int, default=200, help="objects per destination transaction (default 200)")
    copy.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="stop after N writes to the destination (exit 3; run again): one per object created, updated or "
        "deleted, two for one that moved topic (deleted and re-created)",
    )
    copy.add_argument("--no-verify", dest="verify", action="store_false", help="skip the final comparison")
    copy.add_argument("--skip-corrupt", action="store_true", help="leave out source records that do not decode")
    _scope_options(copy)
    _verify_options(copy)
    _progress_option(copy)
    copy.set_defaults(func=_cmd_copy)

    dump_cmd = subparsers.add_parser(
        "dump",
        help="write every object to a versioned JSON-lines file",
        description="Write every object of URL, read at one revision, as nbdb-dump JSON lines (docs/tools.md).",
    )
    dump_cmd.add_argument("url", metavar="URL")
    dump_cmd.add_argument("-o", "--output", metavar="FILE", help="write here (atomically) instead of stdout")
    dump_cmd.add_argument("--skip-corrupt", action="store_true", help="leave out records that do not decode")
    _scope_options(dump_cmd)
    _progress_option(dump_cmd)
    dump_cmd.set_defaults(func=_cmd_dump)

    load_cmd = subparsers.add_parser(
        "load",
        help="validate a dump, then write it into a database",
        description="Validate the whole dump first; then write it in one transaction (atomic backends), or "
        "with --resume as idempotent upserts in batches that a second run completes.",
    )
    load_cmd.add_argument("url", metavar="URL")
    load_cmd.add_argument("input", nargs="?", metavar="FILE", help="read this file instead of stdin")
    load_cmd.add_argument("--resume", action="store_true", help="upsert in batches (any backend; safe to re-run)")
    load_cmd.add_argument("--batch", type=int, default=200, help="objects per transaction with --resume (default 200)")
    load_cmd.add_argument(
        "--models-from", action="append", default=[], metavar="MODULE", help="import MODULE first (repeatable)"
    )
    _progress_option(load_cmd)
    load_cmd.set_defaults(func=_cmd_load)

    verify_cmd = subparsers.add_parser(
        "verify",
        help="compare two databases object by object",
        description="Read both databases (each at one revision) and print every object that differs.",
    )
    verify_cmd.add_argument("source", metavar="SOURCE_URL")
    verify_cmd.add_argument("destination", metavar="DESTINATION_URL")
    _scope_options(verify_cmd)
    _verify_options(verify_cmd)
    verify_cmd.set_defaults(func=_cmd_verify)
