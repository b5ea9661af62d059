"""Watch fan-out: one writer updates ports at a steady rate, N caches of one Database follow; commit-to-applied latency.

Latency runs from the moment the writer calls ``update`` to the moment each
cache's subscriber sees the change (so it includes the commit itself). The
writer is paced (``Sizes.fanout_rate`` writes/s, a busy control plane) so the
figure is propagation, not a queue growing behind a writer that outruns its
readers. The raw baseline is the same with the backend's own change feed
(a condition variable in memory, ``PUBLISH``/``SUBSCRIBE`` on Redis), each
follower parsing the JSON into a dict.
"""

from __future__ import annotations

import json
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

__all__ = ["run_nbdb", "run_raw"]

_PORTS = 100
_DRAIN_TIMEOUT = 30.0


def _latencies(sent: dict[str, int], stamps: list[list[tuple[str, int]]]) -> tuple[list[int], int]:
    lat = [t - sent[seq] for per in stamps for seq, t in per if seq in sent]
    expected = len(sent) * len(stamps)
    return lat, expected - len(lat)


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
                record = stamps[i].append

                def on_change(ev: nbdb.ChangeEvent[Any], record: Any = record) -> None:
                    new = ev.new
                    if new is not None and "seq" in new.external_ids:
                        record((new.external_ids["seq"], now()))

                followers.append(reader.cache(LogicalSwitchPort, on_change=on_change))
            for cache in followers:
                if not cache.wait_synced(60):
                    raise TimeoutError("a cache did not load in time")
            sent: dict[str, int] = {}
            start = now()
            for s in range(writes):
                pace(start, s, sizes.fanout_rate)
                j = s % len(ports)
                p = ports[j]
                seq = str(s)
                sent[seq] = now()
                ports[j] = db.update(p.replace(external_ids={**p.external_ids, "seq": seq}))
            elapsed = now() - start
            _drain(stamps, writes)
        finally:
            for reader in dbs:
                reader.close()
    lat, missing = _latencies(sent, stamps)
    return [
        Measurement(
            "watch.fanout",
            target.name,
            "nbdb",
            len(lat),
            elapsed,
            "events",
            summarize(lat),
            {"caches": caches},
            {"missing_events": float(missing), "write_rate": sizes.fanout_rate},
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
    lat, missing = _latencies(sent, stamps)
    return [
        Measurement(
            "watch.fanout",
            target.name,
            "raw",
            len(lat),
            elapsed,
            "events",
            summarize(lat),
            {"caches": caches},
            {"missing_events": float(missing), "write_rate": sizes.fanout_rate},
        )
    ]
