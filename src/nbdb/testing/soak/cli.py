"""``nbdb soak KIND``: several minutes of transfers under member kills, and what broke.

Added to the ``nbdb`` command by :func:`register`. Exit status 0 when nothing breached
the contract, 1 when something did, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from nbdb.testing.soak.runner import SOAK_KINDS, SoakConfig, run_soak

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``soak`` sub-command."""
    parser = subparsers.add_parser(
        "soak",
        help="transfers, creates and a watcher while cluster members are killed; reports every breach",
        description=(
            "Start a cluster with the test harness, run writer processes (bank transfers in transactions, "
            "uniquely named creates) and one watcher following everything, kill a member (the leader where "
            "there is one) every few seconds, then report double applies, lost acknowledged writes, "
            "skipped, duplicate or torn changes, outcome-unknown commits and stalls after kills."
        ),
        epilog="kinds: " + "; ".join(f"{kind}: --members counts {what}" for kind, what in SOAK_KINDS.items()),
    )
    parser.add_argument("kind", choices=sorted(SOAK_KINDS), metavar="KIND", help=", ".join(sorted(SOAK_KINDS)))
    parser.add_argument("--members", type=int, default=None, help="cluster size (default 3; 1 for redis)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, default=None, help="how long the writers run (default 5)")
    length.add_argument("--seconds", type=float, default=None, help="the same, in seconds")
    parser.add_argument("--kill-every", type=float, default=5.0, metavar="S", help="seconds between kills (5)")
    parser.add_argument("--down", type=float, default=None, metavar="S", help="seconds a killed member stays down (1)")
    parser.add_argument("--writers", type=int, default=4, help="writer processes (4)")
    parser.add_argument("--accounts", type=int, default=8, help="accounts the transfers move money between (8)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the workload and of the kills")
    parser.add_argument(
        "--max-stall",
        type=float,
        default=None,
        metavar="S",
        help="fail when a kill stalls writers or the watcher longer",
    )
    parser.add_argument(
        "--replicas", type=int, default=1, metavar="N", help="redis-sentinel: replicas of the master (1)"
    )
    parser.add_argument(
        "--wait-replicas",
        type=int,
        default=1,
        metavar="N",
        help="redis-sentinel: replicas each commit waits for, the clients' wait_replicas (1)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=_soak)


def _soak(args: argparse.Namespace) -> int:
    members = args.members if args.members is not None else (1 if args.kind == "redis" else 3)
    seconds = args.seconds if args.seconds is not None else 60.0 * (args.minutes if args.minutes is not None else 5)
    # Finite too: NaN passed every "<= 0" test (a run bounded by nothing), and so did inf.
    durations = [seconds, args.kill_every, *(d for d in (args.max_stall,) if d is not None)]
    timed = all(math.isfinite(d) and d > 0 for d in durations) and (
        args.down is None or (math.isfinite(args.down) and args.down >= 0)
    )
    if members < 1 or not timed or args.writers < 1 or args.accounts < 2:
        sys.stderr.write(
            "nbdb soak: --members, --writers, time, --kill-every and --max-stall must be positive and --down "
            "at least 0 (all finite); --accounts >= 2\n"
        )
        return 2
    config = SoakConfig(
        kind=args.kind,
        members=members,
        seconds=seconds,
        kill_every=args.kill_every,
        down=args.down,
        writers=args.writers,
        accounts=args.accounts,
        seed=args.seed,
        max_stall=args.max_stall,
        replicas=args.replicas,
        wait_replicas=args.wait_replicas,
    )
    try:
        config.server_options()
    except ValueError as exc:
        sys.stderr.write(f"nbdb soak: {exc}\n")
        return 2
    report = run_soak(config)
    sys.stdout.write((json.dumps(report.as_dict(), indent=2) if args.json else report.render()) + "\n")
    return 0 if report.ok else 1
