"""The newcomer's main job: build a small cloud's logical network and run a local controller on it.

Two tenants get switches, ports, a router with NAT and ACLs; three chassis
register. A chassis agent on hv0 — a controller built on nbdb's runtime —
keeps a topic-filtered, projected cache, and reconciles each port into a local
"flow table": ports bound to hv0 get a flow, others have none. Its datapath
fails once (a retry with backoff), it reads its own writes through the cache,
and it prints its metrics.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from uuid import UUID

import nbdb
from nbdb import metrics
from nbdb.events import ChangeEvent, EventKind, Key
from nbdb.models import (
    ACL,
    NAT,
    ACLAction,
    Chassis,
    Direction,
    LogicalRouter,
    LogicalRouterPort,
    LogicalSwitch,
    LogicalSwitchPort,
    Model,
    NATType,
    PortGroup,
    PortType,
)
from nbdb.options import redact
from nbdb.tools.snapshot import unsupported_models

__all__ = ["run_demo"]

_BUILT: tuple[type[Model], ...] = (
    Chassis,
    LogicalSwitch,
    LogicalRouter,
    LogicalRouterPort,
    LogicalSwitchPort,
    PortGroup,
    ACL,
    NAT,
)


def _mac(n: int) -> str:
    return "0a:00:00:" + ":".join(f"{(n >> s) & 0xFF:02x}" for s in (16, 8, 0))


def _check_storable(db: nbdb.Database, url: str | None) -> None:
    """UnsupportedError, before anything is written, naming the tables of the demo ``db`` cannot store.

    An OVSDB serving OVN_Northbound only has no Chassis (a southbound table); one serving other
    schemas (Open_vSwitch, the model database alone) has none of OVN's tables.
    """
    missing = [(model.nbdb_table, str(exc)) for model, exc in unsupported_models(db, _BUILT).items()]
    if missing:
        raise nbdb.UnsupportedError(
            f"the demo builds an OVN logical network with chassis, and {redact(url or 'memory://')} cannot store "
            f"{', '.join(t for t, _ in missing)} ({missing[0][1]}); nothing was written. Run it on memory://, "
            "sqlite://, a key-value server, or an OVSDB serving OVN_Northbound and the model database "
            "(`nbdb schema ovsdb`)"
        )


def run_demo(url: str | None = None, ports_per_tenant: int = 6, out: Callable[[str], None] = print) -> int:
    """Run the demo against ``url`` (default: the embedded memory backend); returns an exit code."""
    if isinstance(ports_per_tenant, bool) or not isinstance(ports_per_tenant, int) or not 1 <= ports_per_tenant <= 245:
        # 0 ended in StopIteration (the demo unbinds tenant-a's vm0), more than 245 in an address 10.n.0.256.
        raise nbdb.ValidationError(f"the demo takes 1 to 245 ports per tenant, not {ports_per_tenant!r}")
    with nbdb.connect(url) as db:
        out(
            f"nbdb demo on {url or 'memory://'}  (capabilities: transactions={db.capabilities.transactions}, "
            f"durability={db.capabilities.durability})"
        )
        # A second run on a durable store (README: `nbdb demo --url sqlite:///tmp/nb.db`) stopped
        # half-way on the first run's chassis names; say so before writing anything.
        held = [m.nbdb_table for m in _BUILT if db.list(m, limit=1)]
        if held:
            raise nbdb.ValidationError(
                f"the demo builds its network in an empty database, and {redact(url or 'memory://')} already "
                f"holds {', '.join(held)} objects (an earlier demo?): give it a new file or an empty database"
            )
        _check_storable(db, url)
        chassis = [
            db.create(Chassis(name=f"hv{i}", hostname=f"hv{i}.example", encap_ip=f"192.0.2.{i + 1}")) for i in range(3)
        ]
        out(
            f"registered {len(chassis)} chassis; tunnel keys "
            + ", ".join(str(db.allocate_id("tunnel-key")) for _ in chassis)
        )

        # The chassis agent on hv0 follows tenant-a and the global objects, and
        # keeps of each port only what it needs to program its datapath.
        events: list[ChangeEvent[Model]] = []
        cache = db.cache(
            [LogicalSwitch, LogicalSwitchPort, PortGroup, Chassis],
            topics=["tenant-a", None],
            on_change=events.append,
            fields={LogicalSwitchPort: ["name", "switch", "chassis", "addresses", "up"]},
        )
        if not cache.wait_synced(30):
            out("the agent's cache did not sync within 30s")
            return 1
        out(f"agent on hv0: cache synced at revision {cache.revision} with {len(cache)} objects")
        agent = _ChassisAgent(cache, chassis[0].id)
        controller = nbdb.run_controller(cache, agent.reconcile, LogicalSwitchPort, workers=2, name="hv0-agent")

        started = time.perf_counter()
        for n, tenant in enumerate(("tenant-a", "tenant-b")):
            with db.transaction() as txn:
                sw = txn.create(LogicalSwitch(name=f"{tenant}-net", topic=tenant))
                router = txn.create(LogicalRouter(name=f"{tenant}-router", topic=tenant))
                txn.create(
                    LogicalRouterPort(
                        router=router,
                        name=f"{tenant}-rp",
                        mac=_mac(0xF000 + n),
                        networks=[f"10.{n}.0.1/24"],
                        topic=tenant,
                    )
                )
                txn.create(
                    LogicalSwitchPort(
                        switch=sw,
                        name=f"{tenant}-to-router",
                        type=PortType.ROUTER,
                        addresses=["router"],
                        options={"router-port": f"{tenant}-rp"},
                        topic=tenant,
                    )
                )
                txn.create(
                    NAT(
                        router=router,
                        type=NATType.SNAT,
                        external_ip=f"203.0.113.{n + 1}",
                        logical_ip=f"10.{n}.0.0/24",
                        topic=tenant,
                    )
                )
                ports = [
                    txn.create(
                        LogicalSwitchPort(
                            switch=sw,
                            name=f"{tenant}-vm{i}",
                            topic=tenant,
                            addresses=[f"{_mac(n * 256 + i)} 10.{n}.0.{i + 10}"],
                        )
                    )
                    for i in range(ports_per_tenant)
                ]
                pg = txn.create(PortGroup(name=f"{tenant}_web", ports=[p.id for p in ports], topic=tenant))
                txn.create(
                    ACL(
                        port_group=pg,
                        direction=Direction.TO_LPORT,
                        priority=1001,
                        match="tcp.dst == 80",
                        action=ACLAction.ALLOW_RELATED,
                        topic=tenant,
                    )
                )
            out(
                f"{tenant}: committed switch, router, NAT, port group, ACL and {ports_per_tenant} ports "
                f"in one transaction (revision {txn.revision})"
            )

        # Bind tenant-a's ports to chassis, as the compute service would.
        for i, port in enumerate(db.list(LogicalSwitchPort, topic="tenant-a")):
            if port.type is PortType.NORMAL:
                db.update(port.replace(chassis=chassis[i % 3].id, up=True))
        out("compute service bound tenant-a's ports to hv0, hv1, hv2")
        victim = next(p for p in db.list(LogicalSwitchPort, topic="tenant-a") if p.name.endswith("vm0"))
        db.delete(victim, cascade=True)  # also removes it from the port group
        final_revision = db.list(LogicalSwitch).revision

        # Read your writes: the agent's cache reflects the last commit, then the
        # controller converges on it.
        if not (cache.wait_for(final_revision, 30) and controller.wait_idle(30)):
            out("the agent did not converge within 30s")
            return 1
        elapsed = time.perf_counter() - started
        mine = cache.find(LogicalSwitchPort, chassis=chassis[0].id)
        kinds = {k: sum(1 for e in events if e.kind is k) for k in EventKind}
        out(
            f"agent applied {len(events)} events ({kinds[EventKind.CREATED]} created, "
            f"{kinds[EventKind.UPDATED]} updated, {kinds[EventKind.DELETED]} deleted) in {elapsed * 1000:.0f} ms; "
            "none from tenant-b (topic filter)"
        )
        out(f"ports bound to hv0 (index lookup on a partial view): {sorted(p.name for p in mine)}")
        out("hv0 flow table: " + "; ".join(sorted(agent.flows.values())))
        pg = cache.find(PortGroup, name="tenant-a_web")[0]
        out(f"port group tenant-a_web now has {len(pg.ports)} ports (vm0 removed by the cascade)")
        if mine:
            unbound = db.update(db.get(LogicalSwitchPort, mine[0].id).replace(chassis=None, up=False))
            cache.wait_for(unbound, 30)  # right after the write, the cache holds it
            controller.wait_idle(30)
            out(
                f"unbound {unbound.name} at revision {unbound.nbdb_revision}: the agent's cache holds version "
                f"{cache.get(LogicalSwitchPort, unbound.id).version}, its flow is "  # type: ignore[union-attr]
                + ("gone" if unbound.id not in agent.flows else "still there")
            )
        stale = db.list(LogicalSwitchPort, topic="tenant-a")[0]
        db.update(stale.replace(up=False))
        try:
            db.update(stale.replace(up=True))
        except nbdb.ConflictError as exc:
            out(f"a stale update is refused: {exc}")
        controller.wait_idle(30)
        _print_metrics(controller, cache, out)
        controller.close()
        tenant_b_seen = any(e.object.topic == "tenant-b" for e in events)
        return 1 if tenant_b_seen else 0


class _ChassisAgent:
    """Programs hv0's datapath: a flow for every port bound to hv0, none for the others."""

    def __init__(self, cache: nbdb.Cache, me: UUID) -> None:
        self.cache = cache
        self.me = me
        self.flows: dict[UUID, str] = {}
        self._lock = threading.Lock()
        self._flaky = True

    def reconcile(self, key: Key, port: Model | None) -> None:
        _, id = key
        live = self.cache.get(LogicalSwitchPort, id)  # level-triggered: read the current state
        with self._lock:
            if live is None or live.chassis != self.me:
                self.flows.pop(id, None)  # deleted (``port`` is its last copy) or bound elsewhere
                return
            if self._flaky:
                self._flaky = False
                raise RuntimeError("datapath busy")  # once: the runtime retries with backoff
            mac_ip = live.addresses[0] if live.addresses else "?"
            self.flows[id] = f"{live.name} -> {mac_ip}"


def _print_metrics(controller: nbdb.Controller, cache: nbdb.Cache, out: Callable[[str], None]) -> None:
    out(
        f"agent metrics: {controller.reconciled} reconciles, {controller.failed} retried, "
        f"queue depth {len(controller.queue)}, cache relists {cache.relists}, corrupt records {len(cache.corrupt)}"
    )
    if metrics.active() is None:
        out("(pip install 'nbdb[metrics]' for the Prometheus metrics)")
        return
    import prometheus_client

    wanted = ("_total", "_count", "_sum", "nbdb_cache_objects", "nbdb_queue_depth")
    for line in prometheus_client.generate_latest().decode().splitlines():
        if line.startswith("nbdb_") and any(w in line.split("{")[0] for w in wanted):
            out("  " + line)
