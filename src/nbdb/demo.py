"""The newcomer's main job: build a small cloud's logical network and watch a controller follow it.

Two tenants get switches, ports, a router with NAT and ACLs; three chassis
register; a local controller on one chassis keeps a topic-filtered cache and
reacts to port bindings, updates and deletions as they are committed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import nbdb
from nbdb.events import ChangeEvent, EventKind
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

__all__ = ["run_demo"]


def _mac(n: int) -> str:
    return "0a:00:00:" + ":".join(f"{(n >> s) & 0xFF:02x}" for s in (16, 8, 0))


def run_demo(url: str | None = None, ports_per_tenant: int = 6, out: Callable[[str], None] = print) -> int:
    """Run the demo against ``url`` (default: the embedded memory backend); returns an exit code."""
    with nbdb.connect(url) as db:
        out(
            f"nbdb demo on {url or 'memory://'}  (capabilities: transactions={db.capabilities.transactions}, "
            f"durability={db.capabilities.durability})"
        )
        chassis = [
            db.create(Chassis(name=f"hv{i}", hostname=f"hv{i}.example", encap_ip=f"192.0.2.{i + 1}")) for i in range(3)
        ]
        out(
            f"registered {len(chassis)} chassis; tunnel keys "
            + ", ".join(str(db.allocate_id("tunnel-key")) for _ in chassis)
        )

        # The local controller on hv0 follows tenant-a and the global objects.
        applied = threading.Condition()
        log: list[ChangeEvent[Model]] = []

        def on_change(event: ChangeEvent[Model]) -> None:
            with applied:
                log.append(event)
                applied.notify_all()

        controller = db.cache(topics=["tenant-a", None], on_change=on_change)
        if not controller.wait_synced(30):
            out("the controller's cache did not sync within 30s")
            return 1
        out(f"controller on hv0: cache synced at revision {controller.revision} with {len(controller)} objects")

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
        victim = next(p for p in db.list(LogicalSwitchPort, topic="tenant-a") if p.name.endswith("vm0"))
        db.delete(victim, cascade=True)  # also removes it from the port group
        final_revision = db.list(LogicalSwitch).revision

        with applied:
            applied.wait_for(lambda: controller.revision >= final_revision, timeout=30)
        elapsed = time.perf_counter() - started
        mine = controller.find(LogicalSwitchPort, chassis=chassis[0].id)
        kinds = {k: sum(1 for e in log if e.kind is k) for k in EventKind}
        out(
            f"controller applied {len(log)} events ({kinds[EventKind.CREATED]} created, "
            f"{kinds[EventKind.UPDATED]} updated, {kinds[EventKind.DELETED]} deleted) in {elapsed * 1000:.0f} ms; "
            "none from tenant-b (topic filter)"
        )
        out(f"ports bound to hv0 (index lookup): {sorted(p.name for p in mine)}")
        pg = controller.find(PortGroup, name="tenant-a_web")[0]
        out(f"port group tenant-a_web now has {len(pg.ports)} ports (vm0 removed by the cascade)")
        stale = mine[0] if mine else None
        if stale is not None:
            db.update(stale.replace(up=False))
            try:
                db.update(stale.replace(up=True))
            except nbdb.ConflictError as exc:
                out(f"a stale update is refused: {exc}")
        tenant_b_seen = any(e.object.topic == "tenant-b" for e in log)
        return 1 if tenant_b_seen else 0
