"""The OVN scale sweep (OVSDB only): one switch of N ports, nbdb against the ``ovs`` IDL and ovsdbapp.

Per size N, on a switch already holding N ports (populated untimed with
plain transactions, in the shape ``ovn-nbctl`` writes):

* ``ovn.cold_load``: connect and load the N ports (nbdb: a cache; raw: the ``ovs`` IDL);
* ``ovn.create`` / ``ovn.update`` / ``ovn.delete``: single port writes
  (raw: ovsdbapp's ``lsp_add`` with addresses, ``lsp_set_addresses``, ``lsp_del``);
* ``ovn.txn100``: transactions creating 100 ports (raw: one IDL transaction each);
* ``ovn.follow``: another client adds ports one transaction each, as fast as
  the server takes them; the rate at which the follower has them (nbdb: a
  cache; raw: the IDL).
"""

from __future__ import annotations

import gc
import threading
import time
import uuid
from collections.abc import Callable
from time import perf_counter_ns as now
from typing import Any

import nbdb
from nbdb.bench.config import Sizes
from nbdb.bench.ovn.wire import RawNb, ovs_remote, port_row
from nbdb.bench.results import Measurement, PartialRun
from nbdb.bench.stats import summarize
from nbdb.bench.target import Target
from nbdb.models.ovn import LogicalSwitchPort

__all__ = ["run_nbdb", "run_raw"]

_TIMEOUT = 900.0


class _Scene:
    """A switch of N ports in a fresh namespace, removed at the end."""

    def __init__(self, target: Target, ports: int) -> None:
        self.url = target.url
        self.namespace = target.namespace()
        # A connection of its own for each step: an idle one would be dropped by the server's probe.
        wire = RawNb(target.url)
        try:
            self.switch = wire.add_switch(f"scale-{self.namespace}", self.namespace)
            wire.add_ports(self.switch, [self.name("p", i) for i in range(ports)], self.namespace)
        finally:
            wire.close()

    def name(self, kind: str, i: int) -> str:
        """A port name unique on the server."""
        return f"{self.namespace}-{kind}{i}"

    def follow_writes(self, count: int) -> None:
        """Another client adds ``count`` ports, one transaction each, pipelined."""
        writer = RawNb(self.url)
        try:
            ids = []
            for i in range(count):
                pid = str(uuid.uuid4())
                ops: list[dict[str, Any]] = [
                    {
                        "op": "insert",
                        "table": "Logical_Switch_Port",
                        "uuid": pid,
                        "row": port_row(self.name("f", i), i, self.namespace),
                    },
                    {
                        "op": "mutate",
                        "table": "Logical_Switch",
                        "where": [["_uuid", "==", ["uuid", str(self.switch)]]],
                        "mutations": [["ports", "insert", ["set", [["uuid", pid]]]]],
                    },
                ]
                ids.append(writer.send(ops))
            for mid in ids:
                writer.reply(mid)
        finally:
            writer.close()

    def close(self) -> None:
        """Remove the switch and its ports."""
        wire = RawNb(self.url)
        try:
            wire.delete_switch(self.switch)
        finally:
            wire.close()


def _m(
    name: str, impl: str, count: int, elapsed: int, unit: str, ports: int, lat: list[int] | None = None
) -> Measurement:
    return Measurement(name, "ovsdb", impl, count, elapsed, unit, summarize(lat) if lat else None, {"ports": ports})


def _timed(count: int, op: Callable[[int], Any], budget: float) -> tuple[int, list[int]]:
    """Run ``op(0)``, ``op(1)``... up to ``count`` times or until ``budget`` seconds have passed.

    The elapsed time and each call's latency; ``len(latencies)`` calls were made (at least one).
    A client whose cost per call grows with the switch is measured on what it does in the budget
    rather than holding the run for hours (ovsdbapp's ``lsp_del`` at 100,000 ports).
    """
    lat: list[int] = []
    start = now()
    stop = start + int(budget * 1e9)
    for i in range(count):
        t0 = now()
        op(i)
        t1 = now()
        lat.append(t1 - t0)
        if t1 > stop:
            break
    return now() - start, lat


def _address(i: int) -> list[str]:
    return [f"0a:10:00:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x} 10.20.{(i >> 8) & 255}.{i & 255}"]


def _settle_heap() -> None:
    """A full collection, untimed, between the cold load and the writes (on both sides).

    A load leaves millions of new tracked objects, and the collector's first passes over them
    (seconds at 100,000 ports, whenever they come) would otherwise fall among a few hundred
    timed writes of whichever side deferred them: nbdb loads with the collector paused, the
    IDL pays them as it loads. Settled here, the writes are measured in steady state.
    """
    gc.collect()


def _wait(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + _TIMEOUT
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen in time")
        time.sleep(0.001)


def run_nbdb(target: Target, sizes: Sizes, *, ports: int) -> list[Measurement]:
    """The sweep through nbdb."""
    scene = _Scene(target, ports)
    out: list[Measurement] = []
    try:
        _run_nbdb(target, sizes, scene, ports, out)
    except Exception as exc:
        if out:
            raise PartialRun(out, exc) from exc
        raise
    return out


def _run_nbdb(target: Target, sizes: Sizes, scene: _Scene, ports: int, out: list[Measurement]) -> None:
    try:
        start = now()
        db = nbdb.connect(target.url, namespace=scene.namespace)
        try:
            cache = db.cache(LogicalSwitchPort)
            if not cache.wait_synced(_TIMEOUT) or len(cache) != ports:
                raise TimeoutError(f"the cache did not load {ports} ports in time")
            out.append(_m("ovn.cold_load", "nbdb", ports, now() - start, "objects", ports))
            _settle_heap()

            k = sizes.ovn_writes
            made: list[LogicalSwitchPort] = []

            def create(i: int) -> None:
                made.append(
                    db.create(LogicalSwitchPort(switch=scene.switch, name=scene.name("w", i), addresses=_address(i)))
                )

            budget = sizes.ovn_seconds
            elapsed, lat = _timed(k, create, budget)
            out.append(_m("ovn.create", "nbdb", len(lat), elapsed, "ops", ports, lat))

            def update(i: int) -> None:
                made[i] = db.update(made[i].replace(addresses=_address(i + k)))

            elapsed, lat = _timed(len(made), update, budget)
            out.append(_m("ovn.update", "nbdb", len(lat), elapsed, "ops", ports, lat))
            elapsed, lat = _timed(len(made), lambda i: db.delete(made[i]), budget)
            out.append(_m("ovn.delete", "nbdb", len(lat), elapsed, "ops", ports, lat))
            # The ports the budget left undeleted go with the switch at the end.

            def txn100(b: int) -> None:
                with db.transaction() as txn:
                    for i in range(100):
                        n = b * 100 + i
                        txn.create(
                            LogicalSwitchPort(switch=scene.switch, name=scene.name("t", n), addresses=_address(n))
                        )

            elapsed, lat = _timed(sizes.ovn_txns, txn100, budget)
            out.append(_m("ovn.txn100", "nbdb", len(lat) * 100, elapsed, "objects", ports, lat))

            expected = len(cache) + k
            writer = threading.Thread(target=scene.follow_writes, args=(k,))
            start = now()
            writer.start()
            _wait(lambda: len(cache) >= expected, "the cache following another writer")
            out.append(_m("ovn.follow", "nbdb", k, now() - start, "events", ports))
            writer.join()
        finally:
            db.close()
    finally:
        scene.close()


def run_raw(target: Target, sizes: Sizes, *, ports: int) -> list[Measurement]:
    """The sweep through the ``ovs`` IDL (cold load, transactions, following) and ovsdbapp (single writes).

    ovsdbapp failing (at 100,000 ports its IDL may not load before the server's probe drops it)
    leaves the IDL's workloads measured; the failure is reported with them.
    """
    remote = ovs_remote(target.url)
    scene = _Scene(target, ports)
    out: list[Measurement] = []
    failure: list[BaseException] = []
    try:
        _run_raw(target, sizes, scene, remote, ports, out, failure)
    except Exception as exc:
        if failure:
            # Both failed: say what ovsdbapp did first, then what stopped the IDL.
            first = failure[0]
            raise PartialRun(out, RuntimeError(f"ovsdbapp: {type(first).__name__}: {first}; then {exc!r}")) from exc
        if out:
            raise PartialRun(out, exc) from exc
        raise
    if failure:
        raise PartialRun(out, failure[0]) from failure[0]
    return out


def _run_raw(
    target: Target,
    sizes: Sizes,
    scene: _Scene,
    remote: str,
    ports: int,
    out: list[Measurement],
    failure: list[BaseException],
) -> None:
    from nbdb.bench.ovn.idl import RawIdl
    from nbdb.bench.ovn.ovsdbapp import OvsdbApp

    try:
        start = now()
        idl = RawIdl(target.url, remote)
        try:
            idl.run_until(lambda: idl.ports() >= ports, _TIMEOUT)
            out.append(_m("ovn.cold_load", "raw", ports, now() - start, "objects", ports))
            _settle_heap()

            k = sizes.ovn_writes
            budget = sizes.ovn_seconds
            app = None
            try:
                app = OvsdbApp(remote)
                switch = str(scene.switch)
                elapsed, lat = _timed(k, lambda i: app.lsp_add(switch, scene.name("w", i), _address(i)), budget)
                out.append(_m("ovn.create", "raw", len(lat), elapsed, "ops", ports, lat))
                made = len(lat)
                elapsed, lat = _timed(
                    made, lambda i: app.lsp_set_addresses(scene.name("w", i), _address(i + k)), budget
                )
                out.append(_m("ovn.update", "raw", len(lat), elapsed, "ops", ports, lat))
                elapsed, lat = _timed(made, lambda i: app.lsp_del(scene.name("w", i)), budget)
                out.append(_m("ovn.delete", "raw", len(lat), elapsed, "ops", ports, lat))
            except LookupError:
                pass  # ovsdbapp is not installed: no baseline for the single writes
            except Exception as exc:
                failure.append(exc)
            finally:
                if app is not None:
                    app.close()

            def txn100(b: int) -> None:
                idl.create_ports(scene.switch, [scene.name("t", b * 100 + i) for i in range(100)], scene.namespace)

            # Untimed: an IDL left idle while ovsdbapp wrote may have been dropped by the server's
            # probe; one small transaction reconnects it and loads the switch again before the clock runs.
            idl.create_ports(scene.switch, [scene.name("warm", 0)], scene.namespace)
            elapsed, lat = _timed(sizes.ovn_txns, txn100, budget)
            out.append(_m("ovn.txn100", "raw", len(lat) * 100, elapsed, "objects", ports, lat))

            idl.run_until(lambda: True, 1.0)
            expected = idl.ports() + k
            writer = threading.Thread(target=scene.follow_writes, args=(k,))
            start = now()
            writer.start()
            idl.run_until(lambda: idl.ports() >= expected, _TIMEOUT)
            out.append(_m("ovn.follow", "raw", k, now() - start, "events", ports))
            writer.join()
        finally:
            idl.close()
    finally:
        scene.close()
