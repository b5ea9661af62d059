"""The ``nbdb`` command.

Sub-commands: ``demo`` (the main job on the embedded default), ``backends``
(installed backends and their capabilities), and those that optional parts
register (``servers`` from :mod:`nbdb.testing`, ``bench``, ``schema``, ...).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import select
import sys
from collections.abc import Sequence

from nbdb import __version__, errors
from nbdb._guard import EXIT_INTERRUPTED, lift_guard  # nbdb_cli's, when the package has it beside it

__all__ = ["build_parser", "capability_matrix", "main"]

# Modules that add sub-commands with a register(subparsers) function. They are
# imported only if present, so a trimmed install still has a working CLI.
_PLUGGABLE_COMMANDS = ("nbdb.testing.cli", "nbdb.testing.soak.cli", "nbdb.bench.cli", "nbdb.tools.cli")


def capability_matrix(markdown: bool, builtin: bool = False) -> str:
    """The capability declarations of every installed backend, as a table.

    ``builtin``: nbdb's own backends only, whatever else is installed (what docs/capabilities.md holds,
    so that it is the same on every machine); one that cannot be imported is a BackendLoadError.
    """
    from nbdb.loader import BUILTIN_BACKENDS, backend_class, installed_backends
    from nbdb.spi import Backend

    backends = {s: backend_class(s) for s in BUILTIN_BACKENDS} if builtin else installed_backends()
    by_class: dict[type[Backend], list[str]] = {}
    for scheme, cls in sorted(backends.items()):
        by_class.setdefault(cls, []).append(scheme)
    rows = [(", ".join(schemes), cls.capabilities.as_dict()) for cls, schemes in by_class.items()]
    fields = [f for f in rows[0][1] if f != "notes"] if rows else []
    if markdown:
        lines = ["| schemes | " + " | ".join(fields) + " |", "|" + "---|" * (len(fields) + 1)]
        lines += [f"| `{schemes}` | " + " | ".join(str(caps[f]) for f in fields) + " |" for schemes, caps in rows]
        lines.append("")
        lines += [f"- **{schemes}**: {caps['notes']}" for schemes, caps in rows if caps["notes"]]
        return "\n".join(lines) + "\n"
    out = []
    for schemes, caps in rows:
        out.append(schemes)
        out += [f"    {k}: {v}" for k, v in caps.items() if v]
    return "\n".join(out) + "\n"


def _cmd_backends(args: argparse.Namespace) -> int:
    sys.stdout.write(capability_matrix(args.markdown, builtin=args.builtin))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from nbdb.demo import run_demo

    return run_demo(args.url, ports_per_tenant=args.ports)


def _cmd_schema(args: argparse.Namespace) -> int:
    import json

    from nbdb.backends.ovsdb import generate_schema

    for module in args.models:
        try:
            importlib.import_module(module)
        except ImportError as exc:  # a traceback before; as dump's --models-from says it
            raise errors.ValidationError(f"--models {module}: {exc}") from None
    sys.stdout.write(json.dumps(generate_schema(name=args.name), indent=2, sort_keys=True) + "\n")
    return 0


def _cmd_models_generate(args: argparse.Namespace) -> int:
    import json

    from nbdb.families.ovsdb.modelgen import generate_models
    from nbdb.families.ovsdb.schema import DatabaseSchema

    try:
        with open(args.schema, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as exc:
        raise errors.ValidationError(f"cannot read the OVSDB schema {args.schema}: {exc}") from None
    source = generate_models(DatabaseSchema.parse(doc))
    if args.output in (None, "-"):
        sys.stdout.write(source)
    else:
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(source)
        except OSError as exc:  # a traceback before
            raise errors.ValidationError(f"cannot write the models to {args.output}: {exc}") from None
    return 0


_CHATTY_DRIVER_LOGGERS = ("cassandra", "hazelcast")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available sub-command."""
    parser = argparse.ArgumentParser(prog="nbdb", description="nbdb: one northbound-database API, many backends")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log at INFO level to stderr (and the Cassandra and Hazelcast drivers' own warnings)",
    )
    # The version a dump's header records and a bug report needs: `nbdb --version` was "command required".
    parser.add_argument("--version", action="version", version=f"nbdb {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="build a logical network and watch a controller's cache follow it")
    demo.add_argument("--url", default=None, help="database URL (default: memory://)")
    demo.add_argument("--ports", type=int, default=6, help="ports per tenant (default 6; at most 245)")
    demo.set_defaults(func=_cmd_demo)

    backends = sub.add_parser("backends", help="installed backends and their declared capabilities")
    backends.add_argument("--markdown", action="store_true", help="print the capability matrix as Markdown")
    backends.add_argument(
        "--builtin",
        action="store_true",
        help="only nbdb's own backends, not those other packages install (an error if one cannot be imported)",
    )
    backends.set_defaults(func=_cmd_backends)

    schema = sub.add_parser("schema", help="generate a server schema for the models defined")
    schema.add_argument("kind", choices=["ovsdb"], help="ovsdb: an .ovsschema for models without an OVN table")
    schema.add_argument("--name", default="nbdb", help="database name in the schema (default: nbdb)")
    schema.add_argument(
        "--models", action="append", default=[], metavar="MODULE", help="import MODULE first (repeatable)"
    )
    schema.set_defaults(func=_cmd_schema)

    models = sub.add_parser("models", help="typed models from a server schema")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    generate = models_sub.add_parser(
        "generate", help="write nbdb models for every table of an OVSDB schema (.ovsschema)"
    )
    generate.add_argument("schema", help="the .ovsschema file (OVN_Northbound, OVN_Southbound, Open_vSwitch, yours)")
    generate.add_argument("-o", "--output", default=None, help="write the module here (default: stdout)")
    generate.set_defaults(func=_cmd_models_generate)

    for module_name in _PLUGGABLE_COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nbdb`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:
        # A server that is down is one line, `nbdb: BackendUnavailableError: ...`, naming the cause:
        # these drivers logged a traceback per attempt too (Hazelcast's some 40 lines in 10 s).
        for name in _CHATTY_DRIVER_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)
    lift_guard()  # the command handles Ctrl-C (KeyboardInterrupt) itself
    try:
        code: int = args.func(args)
    except errors.NbdbError as exc:
        sys.stderr.write(f"nbdb: {type(exc).__name__}: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `nbdb dump URL | head`: the reader left. A traceback before, and another one when the
        # interpreter flushed stdout on exit. Quiet and non-zero, as a tool that SIGPIPE ended.
        fd = _stdout_fd()
        if fd is None or not _reader_gone(fd):
            raise  # some other pipe: not the user's doing
        _drop(fd)
        return EXIT_BROKEN_PIPE
    return code


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool that the signal ended


def _stdout_fd() -> int | None:
    try:
        return sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return None  # not a real file (a test's capture)


def _reader_gone(fd: int) -> bool:
    """Whether ``fd`` is a pipe whose reading end is closed (poll says POLLERR)."""
    poll = select.poll()
    poll.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poll.poll(0))


def _drop(fd: int) -> None:
    """Point ``fd`` at /dev/null, so that the flush at exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
