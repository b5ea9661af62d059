"""Mixed churn: tenants add networks, ports come and go and are bound to chassis; a cache per tenant.

The writer works at a steady rate (``Sizes.churn_rate``) on a mix drawn with a
fixed seed: 10% new network, 40% new port, 30% port bound to a chassis (and
up), 20% port deleted. Each tenant's controller keeps a cache of its own
topic only (server-side topic filtering where the backend has it). Measured:
the achieved rate, and the latency from each write to its tenant's cache
(``churn``: a subscriber sees the event) or to the reconcile that reflects it
(``churn.controller``: events -> work queue -> ``reconcile`` on two workers,
coalescing included). nbdb only: references, topics and filtered caches have
no raw equivalent short of re-writing nbdb.
"""

from __future__ import annotations

import bisect
import random
import threading
import time
from collections import defaultdict
from time import perf_counter_ns as now
from typing import Any

import nbdb
from nbdb.bench.config import Sizes
from nbdb.bench.data import make_chassis, make_port, make_switch
from nbdb.bench.results import Measurement
from nbdb.bench.stats import summarize
from nbdb.bench.target import Target
from nbdb.bench.workloads.common import pace
from nbdb.controller import Reconciler
from nbdb.models.ovn import Chassis, LogicalSwitch, LogicalSwitchPort

__all__ = ["run_nbdb"]

_CHASSIS = 10
_DRAIN_TIMEOUT = 30.0


def _reconciled(sent: dict[tuple[Any, int], int], stamps: list[tuple[Any, int, int]]) -> list[int]:
    """Latency of each write to the first reconcile after it that saw its version, a later one, or the deletion."""
    by_id: dict[Any, list[tuple[int, int]]] = defaultdict(list)
    for id, version, at in stamps:
        by_id[id].append((at, version))
    lat = []
    for (id, version), at in sent.items():
        seen = sorted(by_id.get(id, ()))
        for when, saw in seen[bisect.bisect_left(seen, (at, -2)) :]:
            if saw == -1 or (version != -1 and saw >= version):
                lat.append(when - at)
                break
    return lat


def run_nbdb(target: Target, sizes: Sizes, *, controller: bool = False, **_: Any) -> list[Measurement]:
    """``sizes.churn_ops`` mixed writes over ``sizes.churn_tenants`` tenants, each followed by its own cache.

    ``controller``: each tenant's cache feeds a controller (two workers), and
    the latency runs to the reconcile that reflects each write.
    """
    rng = random.Random(8)
    namespace = target.namespace()
    tenants = [f"tenant-{t}" for t in range(sizes.churn_tenants)]
    seen: list[tuple[Any, int]] = []
    record = seen.append
    caches: list[nbdb.Cache] = []
    readers: list[nbdb.Database] = []
    stamps: list[tuple[Any, int, int]] = []  # (id, version seen or -1 if gone, when) per reconcile
    stamp_lock = threading.Lock()

    def on_change(ev: nbdb.ChangeEvent[Any]) -> None:
        if ev.synthetic:
            return
        key = (ev.id, -1) if ev.new is None else (ev.id, ev.new.version)
        record((key, now()))

    def reconciler(cache: nbdb.Cache) -> Reconciler:
        def reconcile(key: nbdb.Key, obj: Any) -> None:
            live = cache.get(*key)
            with stamp_lock:
                stamps.append((key[1], -1 if live is None else live.version, now()))

        return reconcile

    with target.open(namespace) as db:
        try:
            chassis: list[Chassis | None] = [db.create(make_chassis(i)) for i in range(_CHASSIS)]
        except nbdb.UnsupportedError:  # a backend without the Chassis table (OVN Northbound has none)
            chassis = [None]
        switches: dict[str, list[LogicalSwitch]] = {t: [db.create(make_switch(0, t))] for t in tenants}
        ports: dict[str, list[LogicalSwitchPort]] = {t: [] for t in tenants}
        try:
            for tenant in tenants:
                reader = target.open(namespace)
                readers.append(reader)
                caches.append(
                    reader.cache(
                        [LogicalSwitch, LogicalSwitchPort],
                        topics=[tenant],
                        on_change=None if controller else on_change,
                    )
                )
            for cache in caches:
                if not cache.wait_synced(60):
                    raise TimeoutError("a cache did not load in time")
            controllers = (
                [nbdb.run_controller(c, reconciler(c), workers=2, name="churn") for c in caches] if controller else []
            )
            for ctl in controllers:
                if not ctl.wait_idle(60):
                    raise TimeoutError("a controller did not settle in time")
            del seen[:]
            del stamps[:]
            sent: dict[tuple[Any, int], int] = {}
            counter = 0
            start = now()
            for s in range(sizes.churn_ops):
                pace(start, s, sizes.churn_rate)
                tenant = tenants[rng.randrange(len(tenants))]
                roll = rng.random()
                mine = ports[tenant]
                counter += 1
                if roll < 0.1:
                    new_switch = make_switch(counter, tenant)
                    sent[(new_switch.id, 1)] = now()
                    switches[tenant].append(db.create(new_switch))
                elif roll < 0.5 or not mine:
                    port = make_port(rng.choice(switches[tenant]), counter, tenant)
                    sent[(port.id, 1)] = now()
                    mine.append(db.create(port))
                elif roll < 0.8:
                    j = rng.randrange(len(mine))
                    port = mine[j]
                    sent[(port.id, port.version + 1)] = now()
                    mine[j] = db.update(port.replace(chassis=rng.choice(chassis), up=True))
                else:
                    port = mine.pop(rng.randrange(len(mine)))
                    sent[(port.id, -1)] = now()
                    db.delete(port)
            elapsed = now() - start
            deadline = time.monotonic() + _DRAIN_TIMEOUT
            if controller:
                while time.monotonic() < deadline and len(_reconciled(sent, list(stamps))) < len(sent):
                    time.sleep(0.05)
            while not controller and time.monotonic() < deadline and len(seen) < len(sent):
                time.sleep(0.005)
        finally:
            for reader in readers:
                reader.close()
    if controller:
        lat = _reconciled(sent, stamps)
    else:
        lat = [t - sent[key] for key, t in seen if key in sent]
    return [
        Measurement(
            "churn.controller" if controller else "churn",
            target.name,
            "nbdb",
            sizes.churn_ops,
            elapsed,
            "ops",
            summarize(lat),
            {"tenants": sizes.churn_tenants},
            {"target_rate": sizes.churn_rate, "missing_events": float(len(sent) - len(lat))},
        )
    ]
