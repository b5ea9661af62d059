"""What the A/B scripts here share: run a worker script on one checkout's ``src/`` and read its JSON line."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "ETCD_CALLS",
    "ETCD_REPLAYED",
    "ab_parser",
    "ab_sizes_parser",
    "callgrind_ab",
    "callgrind_phases",
    "env",
    "in_turns",
    "loadavg",
    "run_json",
    "sizes_on_fresh_redis",
    "start_redis",
    "stores",
]


# Worker source (to prepend to a worker's): ``counted(db)`` wraps the etcd client's ``call`` of ``db`` and returns
# the list it appends each request's name to (clear it between runs).
ETCD_CALLS = r"""
def counted(db):
    client = db.backend.client
    real = client.call
    calls = []
    def call(method, request, what, **kwargs):
        calls.append(what)
        return real(method, request, what, **kwargs)
    client.call = call
    return calls
"""

# Worker source (to prepend to a worker's): ``replayed_ports(db, count)`` creates ``count`` ports (real round trips),
# updates the first once for real, and from then on gives that update's reply back to every call of ``db``'s etcd
# client (no gRPC: planning, encoding, parsing); it returns the ports and a function that puts the real call back.
ETCD_REPLAYED = r"""
from nbdb.bench.data import make_port
from nbdb.bench.workloads.common import populate
def replayed_ports(db, count):
    client = db.backend.client
    switch = populate(db, 0)[0]
    ports = [db.create(make_port(switch, i)) for i in range(count)]
    call = client.call
    replies = []
    def record(method, request, what, *, write=False):
        reply = call(method, request, what, write=write)
        replies.append(reply)
        return reply
    client.call = record  # the reply of one real update, then given back to every call
    ports[0] = db.update(ports[0].replace(up=True))
    client.call = lambda method, request, what, *, write=False: replies[-1]
    def restore():
        client.call = call
    return ports, restore
"""


def env(src: str | None) -> dict[str, str]:
    """This process's environment, importing nbdb from ``src`` (a checkout's ``src/``) if given."""
    out = dict(os.environ)
    if src is not None:
        out["PYTHONPATH"] = str(Path(src).resolve())
    return out


def run_json(src: str, worker: str, args: list[str], timeout: float = 900) -> Any:
    """Run ``worker`` (Python source) with ``args`` on ``src``'s nbdb; the JSON of its last line of output."""
    out = subprocess.run(
        [sys.executable, "-c", worker, *args], env=env(src), capture_output=True, text=True, timeout=timeout
    )
    if out.returncode != 0:
        raise RuntimeError(f"{src} {' '.join(args)} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def nbdb_bench(src: str, args: list[str], timeout: float = 600) -> Any:
    """``nbdb bench ARGS --out DIR`` on ``src``'s nbdb (``--no-plots`` among ``args``): its ``bench.json``."""
    worker = "import sys; from nbdb.cli import main; sys.exit(main())"
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            [sys.executable, "-c", worker, "bench", *args, "--out", out],
            env=env(src),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        return json.loads((Path(out) / "bench.json").read_text())


def callgrind_phases(src: str, worker: str, args: list[str], timeout: float = 1800) -> list[int]:
    """Run ``worker`` (Python source) with ``args`` on ``src``'s nbdb under callgrind, collecting only inside
    ``operator.call`` and dumping after each (``--toggle-collect``, ``--dump-after``): the instructions of
    each phase the worker ran inside one, in order (hashing seeded, so runs of one build agree)."""
    work = Path(tempfile.mkdtemp(prefix="nbdb-callgrind-"))
    try:
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/cg.out", "--collect-atstart=no"]
        argv += ["--toggle-collect=_operator_call", "--dump-after=_operator_call"]
        out = subprocess.run(
            [*argv, sys.executable, "-c", worker, *args],
            env={**env(src), "PYTHONHASHSEED": "0"},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if out.returncode != 0:
            raise RuntimeError(f"{src} failed: {out.stderr[-2000:]}")
        totals = []
        for dump in sorted(work.glob("cg.out.*"), key=lambda p: int(p.name.rsplit(".", 1)[1])):
            found = re.search(r"^(?:totals|summary): (\d+)", dump.read_text(errors="replace"), re.M)
            totals.append(int(found.group(1)) if found else 0)
        return totals
    finally:
        shutil.rmtree(work, ignore_errors=True)


def callgrind_total(src: str, worker: str, args: list[str], timeout: float = 3600) -> int:
    """Run ``worker`` (Python source) with ``args`` on ``src``'s nbdb under callgrind: its whole run's instructions."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-c", worker, *args]
        subprocess.run(argv, env=env(src), check=True, capture_output=True, timeout=timeout)
        summary = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
        assert summary is not None
        return int(summary.group(1))


def ab_sizes_parser(doc: str | None, count: int, sizes: str) -> argparse.ArgumentParser:
    """:func:`ab_parser` with ``--sizes`` (comma-separated, default ``sizes``) and ``--timeout`` (of one run)."""
    parser = ab_parser(doc, count)
    parser.add_argument("--sizes", default=sizes)
    parser.add_argument("--timeout", type=float, default=600)
    return parser


def sizes_on_fresh_redis(
    args: argparse.Namespace,
    worker: str,
    extra: list[str],
    failed: Callable[[Exception], dict[str, Any]] | None = None,
) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """``worker`` on each side (``args.a``, ``args.b``) in turns, ``args.rounds`` per size (``args.sizes``,
    see :func:`ab_sizes_parser`), each run on a fresh
    redis-server (:func:`start_redis`) with arguments ``[url, size, *extra]``: its JSON per (side, size), each
    printed as it comes with the load before and after. ``failed(error)``, if given, is a failed run's result."""
    rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
    print(f"load average before: {loadavg()}", flush=True)
    for n in (int(size) for size in args.sizes.split(",")):
        for _round, side in in_turns(args.rounds):
            src = args.a if side == "a" else args.b
            with tempfile.TemporaryDirectory() as work:
                server, url = start_redis(Path(work))
                try:
                    got = run_json(src, worker, [url, str(n), *extra], timeout=args.timeout)
                except Exception as exc:
                    if failed is None:
                        raise
                    got = failed(exc)
                finally:
                    server.terminate()
                    server.wait()
            rows.setdefault((side, n), []).append(got)
            print(side, n, json.dumps(got), flush=True)
    print(f"load average after: {loadavg()}")
    return rows


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split(" ", 3)[:3])


def print_medians(rows: dict[str, list[dict[str, float]]], width: int = 14, digits: int = 9) -> None:
    """Each figure's median over side ``a``'s rounds and side ``b``'s, and b/a."""
    print("medians (a | b):")
    for key in rows["a"][0]:
        a = statistics.median(r[key] for r in rows["a"])
        b = statistics.median(r[key] for r in rows["b"])
        print(f"  {key:{width}s} {a:{digits}.3f} | {b:{digits}.3f}   b/a {b / a if a else float('nan'):.3f}")


def in_turns(rounds: int) -> Iterator[tuple[int, str]]:
    """(round, side) for sides "a" and "b", each round in the other order than the one before."""
    for n in range(rounds):
        for side in ("a", "b") if n % 2 == 0 else ("b", "a"):
            yield n, side


def ab_rounds(
    sides: dict[str, str],
    rounds: int,
    worker: str,
    args: list[str],
    extra: Callable[[], Callable[[], dict[str, Any]]] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """``worker`` run on each side in turns (:func:`in_turns`), its JSON per side, the rounds and the load printed.

    ``extra``: called before each run; what it returns is called after it, and its figures join the run's.
    """
    print(f"load average before: {loadavg().split()}", flush=True)
    results: dict[str, list[dict[str, Any]]] = {}
    for n, side in in_turns(rounds):
        after = extra() if extra is not None else None
        got = run_json(sides[side], worker, args)
        if after is not None:
            got.update(after())
        results.setdefault(side, []).append(got)
        print(f"round {n} {side} {got}", flush=True)
    print(f"load average after: {loadavg().split()}")
    return results


def callgrind_ab(
    args: argparse.Namespace,
    worker: str,
    phases: tuple[str, ...],
    worker_args: Callable[[str], list[str]],
    what: str = "object",
) -> None:
    """:func:`callgrind_phases` of ``worker`` on ``args.a`` and ``args.b`` in turns (:func:`in_turns`, ``args.rounds``),
    each phase's instructions per ``args.count`` printed for each round, then the medians of each side.

    ``worker_args(tag)``: the worker's arguments for one run, ``tag`` a fresh path prefix of its own (for files).
    """
    sides = {"a": args.a, "b": args.b}
    results: dict[str, list[list[float]]] = {"a": [], "b": []}
    print(f"load average before: {loadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="nbdb-cg-ab-") as work:
        for n, side in in_turns(args.rounds):
            totals = callgrind_phases(sides[side], worker, worker_args(f"{work}/{side}{n}"))
            if len(totals) != len(phases):
                raise RuntimeError(f"{sides[side]}: {len(totals)} phases, expected {len(phases)}")
            results[side].append([total / args.count for total in totals])
            print(f"round {n} {side}: " + "  ".join(f"{t / args.count / 1000:7.1f}k" for t in totals), flush=True)
    print(f"instructions per {what}, medians (k):")
    width = max(map(len, phases))
    for k, phase in enumerate(phases):
        a, b = (statistics.median(r[k] for r in results[s]) / 1000 for s in ("a", "b"))
        print(f"  {phase:{width}} a {a:7.1f}  b {b:7.1f}  b-a {b - a:+6.1f}k  b/a {b / a:5.3f}")


def ab_parser(doc: str | None, count: int) -> argparse.ArgumentParser:
    """The options of an A/B script: the two checkouts' src/, the rounds, the operations per round."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, help="the first checkout's src/ (e.g. main's)")
    parser.add_argument("--b", required=True, help="the second checkout's src/")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--count", type=int, default=count)
    return parser


def start_redis(
    work: Path, wrapper: list[str] | None = None, timeout: float = 30
) -> tuple[subprocess.Popen[bytes], str]:
    """A throwaway redis-server on loopback (no persistence, data in ``work``), run under ``wrapper``
    (e.g. callgrind) if given, once it answers PING; the process and its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    binary = shutil.which("redis-server") or "redis-server"
    argv = [*(wrapper or []), binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--hz", "1", "--dir", str(work)]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return server, f"redis://127.0.0.1:{port}/0"
        except OSError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            server.terminate()
            raise RuntimeError(f"redis-server did not answer: {' '.join(argv)}")
        time.sleep(0.1)


@contextlib.contextmanager
def stores(backends: str, prefix: str) -> Iterator[dict[str, str]]:
    """A URL per backend of ``backends`` (comma-separated, in that order): servers started on loopback by
    the test harness, sqlite in a temporary directory named from ``prefix``, ``memory://`` as it is.
    A server's options may follow its kind as a query (``hazelcast?heap=1g``: the spawned member's heap).
    Stopped and removed on leaving."""
    from urllib.parse import parse_qsl

    from nbdb.testing.servers import start_server

    servers = []
    urls: dict[str, str] = {}
    tmp = tempfile.TemporaryDirectory(prefix=prefix)
    try:
        for backend in backends.split(","):
            if backend == "sqlite":
                urls[backend] = f"sqlite://{tmp.name}/store.db"
            elif backend == "memory":
                urls[backend] = "memory://"
            else:
                kind, _, query = backend.partition("?")
                server = start_server(kind, **dict(parse_qsl(query)))
                servers.append(server)
                urls[backend] = server.url
        yield urls
    finally:
        for server in servers:
            server.stop()
        tmp.cleanup()
