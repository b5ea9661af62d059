"""``nbdb servers up|status|down``: test servers from the command line.

Servers started by ``up`` are detached and outlive the command; ``status`` and ``down``
find them through the state file in ``$NBDB_SERVERS_DIR`` (default
``~/.cache/nbdb/servers``). The lead's ``nbdb`` command adds this with :func:`register`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any, TextIO

from nbdb.testing.base import Server
from nbdb.testing.errors import HarnessError
from nbdb.testing.ovsdb import OVN_SCHEMAS, find_ovn_schema
from nbdb.testing.servers import SERVER_KINDS, server_class
from nbdb.testing.state import ServerRegistry

__all__ = ["register"]

log = logging.getLogger(__name__)

_CLI_KINDS = ("redis", "redis-sentinel", "etcd", "ovsdb", "cassandra", "hazelcast")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``servers`` sub-command (with ``up``, ``status`` and ``down``)."""
    parser = subparsers.add_parser(
        "servers",
        help="start, list and stop real test servers on loopback",
        description=(
            "Start real servers (redis, etcd, ovsdb-server, Cassandra, Hazelcast) on free 127.0.0.1 "
            "ports and print their nbdb URLs. Install them first with "
            "`bash .ci/install-servers.sh`."
        ),
    )
    parser.set_defaults(func=lambda args: _help(parser))
    actions = parser.add_subparsers(dest="servers_command", metavar="{up,status,down}")

    up = actions.add_parser("up", help="start servers (detached) and print their URLs")
    up.add_argument(
        "kinds", nargs="+", choices=_CLI_KINDS, metavar="KIND", help=f"one or more of: {', '.join(_CLI_KINDS)}"
    )
    up.add_argument(
        "--cluster",
        type=int,
        default=1,
        metavar="N",
        help="members per server: etcd, ovsdb (raft), cassandra and hazelcast nodes; "
        "for redis, N sentinels around a master and a replica",
    )
    up.add_argument("--timeout", type=float, default=None, help="seconds to wait for each server to be ready")
    up.add_argument(
        "--schema",
        default=None,
        metavar="nb|sb|FILE",
        help="ovsdb: the database it serves — nb (OVN_Northbound, the default), sb (OVN_Southbound) or an "
        ".ovsschema file of yours; the URL names it (?database=) unless it is OVN_Northbound",
    )
    up.add_argument(
        "--model-schema",
        action="store_true",
        help="ovsdb: also serve the database 'nbdb' for the models without a table in that schema "
        "(generated from nbdb's models; the URL's model_db)",
    )
    up.add_argument("--json", action="store_true", help="print the servers as JSON")
    up.set_defaults(func=_up)

    status = actions.add_parser("status", help="list the servers started by `up`")
    status.add_argument("--json", action="store_true", help="print the servers as JSON")
    status.set_defaults(func=_status)

    down = actions.add_parser("down", help="stop servers and remove their files")
    down.add_argument("targets", nargs="*", metavar="KIND_OR_ID", help="kinds or ids to stop (default: all)")
    down.set_defaults(func=_down)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _out(text: str, stream: TextIO | None = None) -> None:
    print(text, file=stream or sys.stdout)


def _build(
    kind: str, cluster: int, timeout: float | None, registry: ServerRegistry, ovsdb: dict[str, Any]
) -> tuple[str, Server]:
    options: dict[str, Any] = {"die_with_parent": False, **(ovsdb if kind == "ovsdb" else {})}
    if timeout is not None:
        options["timeout"] = timeout
    if kind == "redis" and cluster > 1:
        kind = "redis-sentinel"
    if kind == "redis-sentinel":
        options["sentinels"] = max(cluster, 3) if cluster > 1 else 3
    elif cluster > 1:
        options["members"] = cluster
    server_id, base_dir = registry.new_base_dir(kind)
    return server_id, server_class(kind)(base_dir=base_dir, **options)


def _url(server: Server) -> str:
    """The server's nbdb URL, naming its database when a client would not find it by default."""
    from nbdb.backends.ovsdb.url import DEFAULT_NB

    database = getattr(server, "database", None) if server.kind == "ovsdb" else None
    if database is None or database == DEFAULT_NB:
        return server.url
    return f"{server.url}{'&' if '?' in server.url else '?'}database={database}"


def _describe(server_id: str, server: Server) -> dict[str, Any]:
    return {"id": server_id, **server.info(), "url": _url(server)}


def _ovsdb_options(args: argparse.Namespace) -> dict[str, Any] | str:
    """The ovsdb options of ``up``'s flags, or what is wrong with them."""
    options: dict[str, Any] = {}
    if args.schema is None and not args.model_schema:
        return options
    if "ovsdb" not in args.kinds:
        return "--schema and --model-schema are options of ovsdb, which is not among the kinds"
    if args.schema in OVN_SCHEMAS:
        options["schema"] = str(find_ovn_schema(args.schema))
    elif args.schema is not None:
        path = Path(args.schema)
        if not path.is_file():
            return f"--schema {args.schema}: no such file (nb, sb or an .ovsschema file)"
        options["schema"] = str(path.resolve())  # the servers outlive this command and its directory
    if args.model_schema:
        options["model_schema"] = True
    return options


def _up(args: argparse.Namespace) -> int:
    timeout = args.timeout
    if args.cluster < 1 or (timeout is not None and not (math.isfinite(timeout) and timeout > 0)):
        # --cluster 0 started one member, --timeout -5 a server with no readiness bound, without a word.
        _out("nbdb servers up: --cluster must be at least 1 and --timeout a positive number of seconds", sys.stderr)
        return 2
    try:
        ovsdb = _ovsdb_options(args)
    except HarnessError as exc:  # nb or sb, and OVN's schemas not installed
        _out(f"nbdb servers up: {exc}", sys.stderr)
        return 1
    if isinstance(ovsdb, str):
        _out(f"nbdb servers up: {ovsdb}", sys.stderr)
        return 2
    registry = ServerRegistry()
    started: list[tuple[str, Server]] = []
    try:
        for kind in args.kinds:
            server_id, server = _build(kind, args.cluster, args.timeout, registry, ovsdb)
            server.start()
            # The servers outlive this command: let their first process hold the ports.
            first_pid = server.members[0].pid
            if first_pid is not None:
                server.transfer_port_reservations(first_pid)
            registry.add(server_id, server)
            started.append((server_id, server))
    except HarnessError as exc:
        _out(f"nbdb servers up: {exc}", sys.stderr)
        for server_id, server in started:
            server.stop()
            registry.remove(server_id)
        return 1
    if args.json:
        _out(json.dumps([_describe(i, s) for i, s in started], indent=2))
    else:
        for server_id, server in started:
            _out(f"{server.kind}\t{_url(server)}\t{server_id}")
    return 0


def _status(args: argparse.Namespace) -> int:
    registry = ServerRegistry()
    rows = []
    for entry in registry.entries():
        server = registry.load(entry)
        rows.append((entry["id"], server))
    if args.json:
        _out(json.dumps([_describe(i, s) for i, s in rows], indent=2))
        return 0
    if not rows:
        _out(f"no servers (state in {registry.path})")
    for server_id, server in rows:
        states = ",".join(
            f"{m.name}:{'paused' if m.is_paused() else 'up' if m.is_running() else 'down'}" for m in server.members
        )
        _out(f"{server.kind}\t{_url(server)}\t{server_id}\t{states}")
    return 0


def _down(args: argparse.Namespace) -> int:
    registry = ServerRegistry()
    targets = set(args.targets)
    unknown = targets - {e["id"] for e in registry.entries()} - set(SERVER_KINDS)
    if unknown:
        _out(f"nbdb servers down: unknown kind or id: {', '.join(sorted(unknown))}", sys.stderr)
        return 2
    matched: set[str] = set()
    for entry in registry.entries():
        if targets and entry["id"] not in targets and entry["kind"] not in targets:
            continue
        matched |= {entry["id"], entry["kind"]}
        server = registry.load(entry)
        server.stop()
        registry.remove(entry["id"])
        _out(f"stopped {entry['kind']}\t{entry['id']}")
    # Nothing to stop is no error (down is idempotent), but said: a silent success read as "stopped".
    idle = sorted(targets - matched) if targets else ([] if matched else ["any kind"])
    if idle:
        _out(f"nbdb servers down: no server running of {', '.join(idle)} (state in {registry.path})", sys.stderr)
    return 0
