"""The cache: cold load of N ports, memory per cached port, ``get`` and ``find`` in one thread.

The raw baseline is a hand-made replica: a scan parsed with ``json.loads``
into a dict by id, plus a dict from name to ids for ``find``.
"""

from __future__ import annotations

import gc
import json
import random
import tracemalloc
from collections.abc import Callable
from time import perf_counter_ns as now
from typing import Any

from nbdb.bench.config import Sizes
from nbdb.bench.results import Measurement
from nbdb.bench.target import Target
from nbdb.bench.workloads.common import PORT, populate, populate_raw
from nbdb.models.ovn import LogicalSwitchPort

__all__ = ["run_nbdb", "run_raw"]

_SYNC_TIMEOUT = 600.0


def _traced(load: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``load`` under tracemalloc; what it returns and the bytes it kept allocated."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = load()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return kept, float(after - before)


def _lookups(ids: list[Any], count: int) -> list[Any]:
    rng = random.Random(8)
    return [ids[rng.randrange(len(ids))] for _ in range(min(count, 100_000))]


def _best_of(times: int, loop: Callable[[], int]) -> int:
    """The fastest of ``times`` runs of ``loop`` (which returns its elapsed ns): the least disturbed one."""
    return min(loop() for _ in range(times))


def _cycle(keys: list[Any], count: int) -> list[Any]:
    """``count`` keys, cycling over ``keys``."""
    rounds, rest = divmod(count, len(keys))
    return keys * rounds + keys[:rest]


def run_nbdb(target: Target, sizes: Sizes, *, objects: int) -> list[Measurement]:
    """Cold-load ``objects`` ports into a cache; then time ``get`` and ``find(name=...)``."""
    params = {"objects": objects}
    namespace = target.namespace()
    with target.open(namespace) as db:
        _, ports = populate(db, objects)
        del ports
        with target.open(namespace) as reader:
            start = now()
            cache = reader.cache(LogicalSwitchPort)
            if not cache.wait_synced(_SYNC_TIMEOUT):
                raise TimeoutError("the cache did not load in time")
            elapsed = now() - start
            assert len(cache) == objects, (len(cache), objects)
            cache.close()

        with target.open(namespace) as reader2:

            def load() -> Any:
                c = reader2.cache(LogicalSwitchPort)
                c.wait_synced(_SYNC_TIMEOUT)
                return c

            cache, kept = _traced(load)
            load_m = Measurement(
                "cache.cold_load",
                target.name,
                "nbdb",
                objects,
                elapsed,
                "objects",
                None,
                params,
                {"bytes_per_object": kept / objects},
            )
            ports = cache.list(LogicalSwitchPort)
            ids = _cycle(_lookups([p.id for p in ports], sizes.cache_gets), sizes.cache_gets)
            names = _cycle(_lookups([p.name for p in ports], sizes.cache_finds), sizes.cache_finds)
            get, find, model = cache.get, cache.find, LogicalSwitchPort

            def gets() -> int:
                start = now()
                for i in ids:
                    get(model, i)
                return now() - start

            def finds() -> int:
                start = now()
                for n in names:
                    find(model, name=n)
                return now() - start

            got, found = _best_of(3, gets), _best_of(3, finds)
            cache.close()
    return [
        load_m,
        Measurement("cache.get", target.name, "nbdb", sizes.cache_gets, got, "ops", None, params),
        Measurement("cache.find", target.name, "nbdb", sizes.cache_finds, found, "ops", None, params),
    ]


def _replica(values: list[bytes]) -> tuple[dict[str, dict[str, Any]], dict[str, set[str]]]:
    objs: dict[str, dict[str, Any]] = {}
    by_name: dict[str, set[str]] = {}
    for value in values:
        doc = json.loads(value)
        objs[doc["id"]] = doc
        by_name.setdefault(doc["name"], set()).add(doc["id"])
    return objs, by_name


def run_raw(target: Target, sizes: Sizes, *, objects: int) -> list[Measurement]:
    """A dict replica of the same ports; dict ``get`` and an index dict for ``find``."""
    params = {"objects": objects}
    client = target.raw(target.namespace())
    try:
        populate_raw(client, objects)
        prefix = client.prefix(PORT)
        start = now()
        objs, by_name = _replica(client.scan(prefix))
        elapsed = now() - start
        del objs, by_name
        (objs, by_name), kept = _traced(lambda: _replica(client.scan(prefix)))
    finally:
        client.cleanup()
        client.close()
    ids = _cycle(_lookups(list(objs), sizes.cache_gets), sizes.cache_gets)
    names = _cycle(_lookups([d["name"] for d in objs.values()], sizes.cache_finds), sizes.cache_finds)
    get, index = objs.get, by_name.get

    def gets() -> int:
        start = now()
        for i in ids:
            get(i)
        return now() - start

    def finds() -> int:
        start = now()
        for n in names:
            [objs[i] for i in index(n, ())]
        return now() - start

    got, found = _best_of(3, gets), _best_of(3, finds)
    return [
        Measurement(
            "cache.cold_load",
            target.name,
            "raw",
            objects,
            elapsed,
            "objects",
            None,
            params,
            {"bytes_per_object": kept / objects},
        ),
        Measurement("cache.get", target.name, "raw", sizes.cache_gets, got, "ops", None, params),
        Measurement("cache.find", target.name, "raw", sizes.cache_finds, found, "ops", None, params),
    ]
