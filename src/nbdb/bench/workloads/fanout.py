"""Watch fan-out: one writer updates ports at a steady rate, N caches of one Database follow; commit-to-applied latency.

Latency runs from the moment the writer calls ``update`` to the moment each
cache's subscriber sees the change (so it includes the commit itself). The
writer is paced (``Sizes.fanout_rate`` writes/s, a busy control plane) so the
figure is propagation, not a queue growing behind a writer that outruns its
readers. The raw baseline is the same with the backend's own change feed
(a condition variable in memory, ``PUBLISH``/``SUBSCRIBE`` on Redis), each
follower parsing the JSON into a dict.

The spread point (:func:`run_spread`, workload ``watch.spread``) is the
deployment shape: the caches live in several processes (each its own
``Database``, one shared change stream per process), as the local
controllers of many nodes would; latency is measured on the system-wide
monotonic clock, which every process on the machine reads alike.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import threading
import time
from time import perf_counter_ns as now
from typing import Any

import nbdb
from nbdb.bench.config import Sizes
from nbdb.bench.raw import Follower
from nbdb.bench.results import Measurement
from nbdb.bench.stats import summarize
from nbdb.bench.target import Target
from nbdb.bench.workloads.common import PORT, pace, populate, populate_raw
from nbdb.models.ovn import LogicalSwitchPort

__all__ = ["SPREAD_BACKENDS", "run_nbdb", "run_raw", "run_spread"]

_PORTS = 100
_DRAIN_TIMEOUT = 30.0
_START_TIMEOUT = 180.0
"""Time for every follower process to start, connect and load its caches."""

SPREAD_BACKENDS = ("redis", "etcd", "ovsdb", "cassandra", "hazelcast")
"""Backends a cache in another process can follow (a server; ``memory://`` lives in one process)."""


def _latencies(sent: dict[str, int], stamps: list[list[tuple[str, int]]]) -> tuple[list[int], int]:
    lat = [t - sent[seq] for per in stamps for seq, t in per if seq in sent]
    expected = len(sent) * len(stamps)
    return lat, expected - len(lat)


def _measure(
    workload: str,
    target: Target,
    impl: str,
    sent: dict[str, int],
    stamps: list[list[tuple[str, int]]],
    elapsed: int,
    sizes: Sizes,
    params: dict[str, Any],
) -> Measurement:
    """The commit-to-applied latencies of one fan-out run, and the events that never arrived."""
    lat, missing = _latencies(sent, stamps)
    extra = {"missing_events": float(missing), "write_rate": sizes.fanout_rate}
    return Measurement(workload, target.name, impl, len(lat), elapsed, "events", summarize(lat), params, extra)


def _drain(stamps: list[list[tuple[str, int]]], writes: int) -> None:
    deadline = time.monotonic() + _DRAIN_TIMEOUT
    while time.monotonic() < deadline and any(len(s) < writes for s in stamps):
        time.sleep(0.005)


def run_nbdb(target: Target, sizes: Sizes, *, caches: int) -> list[Measurement]:
    """``sizes.fanout_writes`` paced updates, followed by ``caches`` caches of one reading Database.

    The caches of a Database share one change stream from the server (as a
    process of a controller would hold them), so each change is read and
    decoded once for all of them.
    """
    namespace = target.namespace()
    writes = sizes.fanout_writes
    stamps: list[list[tuple[str, int]]] = [[] for _ in range(caches)]
    dbs: list[nbdb.Database] = []
    followers: list[nbdb.Cache] = []
    with target.open(namespace) as db:
        _, ports = populate(db, min(_PORTS, writes))
        try:
            reader = target.open(namespace)
            dbs.append(reader)
            for i in range(caches):
                followers.append(reader.cache(LogicalSwitchPort, on_change=_stamping(stamps[i].append, now)))
            for cache in followers:
                if not cache.wait_synced(60):
                    raise TimeoutError("a cache did not load in time")
            sent, elapsed = _write_paced(db, ports, writes, sizes.fanout_rate, now)
            _drain(stamps, writes)
        finally:
            for reader in dbs:
                reader.close()
    return [_measure("watch.fanout", target, "nbdb", sent, stamps, elapsed, sizes, {"caches": caches})]


def _write_paced(
    db: nbdb.Database, ports: list[Any], writes: int, rate: float, clock: Any
) -> tuple[dict[str, int], int]:
    """``writes`` updates at ``rate``/s, each stamped with ``seq``; when each was sent (on ``clock``), the wall time."""
    sent: dict[str, int] = {}
    start = now()
    for s in range(writes):
        pace(start, s, rate)
        j = s % len(ports)
        p = ports[j]
        seq = str(s)
        sent[seq] = clock()
        ports[j] = db.update(p.replace(external_ids={**p.external_ids, "seq": seq}))
    return sent, now() - start


def _stamping(record: Any, clock: Any) -> Any:
    """A subscriber that records ``(seq, clock())`` for every change the writer stamped."""

    def on_change(ev: nbdb.ChangeEvent[Any]) -> None:
        new = ev.new
        if new is not None and "seq" in new.external_ids:
            record((new.external_ids["seq"], clock()))

    return on_change


def _follower_process(url: str, namespace: str, caches: int, writes: int, pipe: Any) -> None:
    """One follower process of :func:`run_spread`: ``caches`` caches of one Database, stamping what they see.

    Protocol on ``pipe``: sends ``("ready", None)`` once its caches are loaded, waits
    for the writer to be done, drains, then sends ``("stamps", stamps)``; on any
    failure it sends ``("error", text)`` instead.
    """
    stamps: list[list[tuple[str, int]]] = [[] for _ in range(caches)]
    try:
        with nbdb.connect(url, namespace=namespace) as db:
            followers = [db.cache(LogicalSwitchPort, on_change=_stamping(s.append, time.monotonic_ns)) for s in stamps]
            if not all(cache.wait_synced(_START_TIMEOUT) for cache in followers):
                raise TimeoutError("a cache did not load in time")
            pipe.send(("ready", None))
            pipe.recv()  # the writer is done
            _drain(stamps, writes)
            pipe.send(("stamps", stamps))
    except BaseException as exc:  # the parent reports it; a child must not die silently
        with contextlib.suppress(OSError):  # unless the parent is gone already
            pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        pipe.close()


def _receive(pipe: Any, kind: str, deadline: float) -> Any:
    """The payload of the next ``kind`` message on ``pipe``, before ``deadline`` (monotonic)."""
    if not pipe.poll(max(0.0, deadline - time.monotonic())):
        raise TimeoutError(f"a follower process sent no {kind!r} in time")
    got, payload = pipe.recv()
    if got == "error":
        raise RuntimeError(f"a follower process failed: {payload}")
    if got != kind:
        raise RuntimeError(f"a follower process sent {got!r}, expected {kind!r}")
    return payload


def run_spread(target: Target, sizes: Sizes, *, processes: int, caches: int) -> list[Measurement]:
    """The writer of :func:`run_nbdb`, followed by ``caches`` caches spread evenly over ``processes`` processes.

    Each follower process holds one Database and its share of the caches (one
    shared change stream per process). ``caches`` is the total; the figure is
    every cache's commit-to-applied latency.
    """
    if caches < processes or caches % processes:
        raise ValueError(f"caches ({caches}) must be a positive multiple of processes ({processes})")
    namespace = target.namespace()
    writes = sizes.fanout_writes
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds client threads
    pipes: list[Any] = []
    children: list[Any] = []
    with target.open(namespace) as db:
        _, ports = populate(db, min(_PORTS, writes))
        try:
            for _ in range(processes):
                parent_end, child_end = context.Pipe()
                child = context.Process(
                    target=_follower_process,
                    args=(target.url, namespace, caches // processes, writes, child_end),
                    daemon=True,
                )
                child.start()
                child_end.close()
                pipes.append(parent_end)
                children.append(child)
            deadline = time.monotonic() + _START_TIMEOUT
            for pipe in pipes:
                _receive(pipe, "ready", deadline)
            sent, elapsed = _write_paced(db, ports, writes, sizes.fanout_rate, time.monotonic_ns)
            for pipe in pipes:
                pipe.send("done")
            deadline = time.monotonic() + _DRAIN_TIMEOUT + 30.0
            stamps = [s for pipe in pipes for s in _receive(pipe, "stamps", deadline)]
        finally:
            for pipe in pipes:  # a child still waiting for "done" reads the end of the pipe and stops
                pipe.close()
            for child in children:
                child.join(10)
                if child.is_alive():
                    child.terminate()
                    child.join(5)
    return [
        _measure(
            "watch.spread", target, "nbdb", sent, stamps, elapsed, sizes, {"processes": processes, "caches": caches}
        )
    ]


def run_raw(target: Target, sizes: Sizes, *, caches: int) -> list[Measurement]:
    """The same writes through the raw client's change feed, into ``caches`` dict replicas."""
    writes = sizes.fanout_writes
    client = target.raw(target.namespace())
    stamps: list[list[tuple[str, int]]] = [[] for _ in range(caches)]
    stop = threading.Event()
    followers: list[Follower] = []
    threads: list[threading.Thread] = []
    try:
        _, docs = populate_raw(client, min(_PORTS, writes))
        versions = [1] * len(docs)

        def follow(feed: Follower, record: Any) -> None:
            replica: dict[str, Any] = {}
            while not stop.is_set():
                for _key, value in feed.poll(0.2):
                    if value is None:
                        continue
                    doc = json.loads(value)
                    replica[doc["id"]] = doc
                    seq = doc["external_ids"].get("seq")
                    if seq is not None:
                        record((seq, now()))

        for i in range(caches):
            feed = client.follower()
            followers.append(feed)
            thread = threading.Thread(target=follow, args=(feed, stamps[i].append), daemon=True)
            thread.start()
            threads.append(thread)
        sent: dict[str, int] = {}
        start = now()
        for s in range(writes):
            pace(start, s, sizes.fanout_rate)
            j = s % len(docs)
            seq = str(s)
            sent[seq] = now()
            doc = {**docs[j], "external_ids": {**docs[j]["external_ids"], "seq": seq}}  # type: ignore[dict-item]
            versions[j] = client.publish(client.key(PORT, str(doc["id"])), json.dumps(doc).encode(), versions[j])
            docs[j] = doc
        elapsed = now() - start
        _drain(stamps, writes)
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
        for feed in followers:
            feed.close()
        client.cleanup()
        client.close()
    return [_measure("watch.fanout", target, "raw", sent, stamps, elapsed, sizes, {"caches": caches})]
