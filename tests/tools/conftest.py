"""Shared helpers of the tools' tests: a full OVN-style logical network, and fresh memory stores."""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import pytest

import nbdb
from nbdb import errors
from nbdb.models import (
    ACL,
    BFD,
    DNS,
    NAT,
    AddressSet,
    Chassis,
    ChassisTemplateVar,
    Copp,
    DHCPOptions,
    ForwardingGroup,
    GatewayChassis,
    HAChassis,
    HAChassisGroup,
    LoadBalancer,
    LoadBalancerGroup,
    LoadBalancerHealthCheck,
    LogicalRouter,
    LogicalRouterPolicy,
    LogicalRouterPort,
    LogicalRouterStaticRoute,
    LogicalSwitch,
    LogicalSwitchPort,
    Meter,
    MeterBand,
    Mirror,
    Model,
    PortGroup,
    QoS,
    StaticMACBinding,
)

OVN_MODELS: tuple[type[Model], ...] = (
    ACL,
    BFD,
    DNS,
    NAT,
    AddressSet,
    Chassis,
    ChassisTemplateVar,
    Copp,
    DHCPOptions,
    ForwardingGroup,
    GatewayChassis,
    HAChassis,
    HAChassisGroup,
    LoadBalancer,
    LoadBalancerGroup,
    LoadBalancerHealthCheck,
    LogicalRouter,
    LogicalRouterPolicy,
    LogicalRouterPort,
    LogicalRouterStaticRoute,
    LogicalSwitch,
    LogicalSwitchPort,
    Meter,
    MeterBand,
    Mirror,
    PortGroup,
    QoS,
    StaticMACBinding,
)
"""The logical schema (tests define models of their own; copies in these tests stick to these)."""

NB_MODELS: tuple[type[Model], ...] = tuple(m for m in OVN_MODELS if m is not Chassis)
"""The models with an OVN_Northbound table (Chassis lives in the southbound database)."""


def build_network(
    db: nbdb.Database,
    tenants: Sequence[str | None] = ("tenant-a", "tenant-b"),
    ports: int = 3,
    chassis: bool = True,
    prefix: str = "",
) -> int:
    """Every kind of object, referencing each other as OVN does; returns how many were created.

    Lists are sorted and free of duplicates, so that a backend storing them as
    sets (OVSDB) returns them unchanged.
    """
    count = 0

    def create(obj: Model) -> Model:
        nonlocal count
        count += 1
        return db.create(obj)

    hosts = [create(Chassis(name=f"{prefix}hv{i}", encap_ip=f"192.168.0.{i + 1}")) for i in range(2)] if chassis else []
    for n, topic in enumerate(tenants):
        lb = create(LoadBalancer(name=f"{prefix}lb{n}", vips={"10.0.0.100:80": "10.0.0.5:8080"}, topic=topic))
        sw = create(LogicalSwitch(name=f"{prefix}sw{n}", load_balancer=[lb.id], topic=topic, external_ids={"k": "v"}))
        dhcp = create(DHCPOptions(cidr=f"10.{n}.0.0/24", options={"router": f"10.{n}.0.1"}, topic=topic))
        lsps = [
            create(
                LogicalSwitchPort(
                    switch=sw,
                    name=f"{prefix}t{n}-p{i}",
                    addresses=[f"0a:00:00:00:{n:02x}:{i:02x} 10.{n}.0.{i + 10}"],
                    dhcpv4_options=dhcp,
                    chassis=hosts[i % len(hosts)] if hosts else None,
                    up=bool(i % 2),
                    topic=topic,
                )
            )
            for i in range(ports)
        ]
        pg = create(PortGroup(name=f"{prefix}pg{n}", ports=sorted(p.id for p in lsps), topic=topic))
        create(ACL(port_group=pg, direction="to-lport", priority=1001, match="ip4", action="allow", topic=topic))
        create(ACL(switch=sw, direction="from-lport", priority=900, match="arp", action="drop", topic=topic))
        create(QoS(switch=sw, priority=10, direction="from-lport", match="ip4", bandwidth={"rate": 1000}, topic=topic))
        lr = create(LogicalRouter(name=f"{prefix}lr{n}", load_balancer=[lb.id], topic=topic))
        group = create(HAChassisGroup(name=f"{prefix}hag{n}", topic=topic))
        for i, host in enumerate((f"{prefix}hv0", f"{prefix}hv1")):
            create(HAChassis(group=group, chassis_name=host, priority=10 - i, topic=topic))
        lrp = create(
            LogicalRouterPort(
                router=lr,
                name=f"{prefix}lrp{n}",
                mac=f"0a:00:00:01:00:{n:02x}",
                networks=[f"10.{n}.0.1/24"],
                gateway_chassis=sorted(h.id for h in hosts),
                ha_chassis_group=group.id,
                topic=topic,
            )
        )
        create(
            GatewayChassis(port=lrp, name=f"{prefix}lrp{n}-hv0", chassis_name=f"{prefix}hv0", priority=20, topic=topic)
        )
        create(
            LogicalRouterPolicy(
                router=lr,
                priority=100,
                match="ip4.src == 10.0.0.0/8",
                action="reroute",
                nexthops=["172.16.0.1"],
                topic=topic,
            )
        )
        create(NAT(router=lr, type="snat", external_ip=f"172.16.0.{n + 1}", logical_ip=f"10.{n}.0.0/24", topic=topic))
        create(LogicalRouterStaticRoute(router=lr, ip_prefix="0.0.0.0/0", nexthop="172.16.0.254", topic=topic))
        create(AddressSet(name=f"{prefix}as{n}", addresses=[f"10.{n}.0.10", f"10.{n}.0.11"], topic=topic))
    return count


@dataclass
class Churn:
    """Random creates, updates and deletes of switches and ports, from a thread, for a bounded count."""

    db: nbdb.Database
    topic: str | None = "tenant-a"
    count: int = 200
    seed: int = 1
    prefix: str = ""
    pause: float = 0.0
    """Seconds between writes (to keep a copy running alongside)."""
    done: int = 0
    errors: list[BaseException] = field(default_factory=list)
    _thread: threading.Thread | None = None

    def run(self) -> None:
        rng = random.Random(self.seed)
        switches: list[LogicalSwitch] = []
        ports: list[LogicalSwitchPort] = []
        names = itertools.count()
        try:
            while self.done < self.count:
                choice = rng.random()
                if not switches or choice < 0.15:
                    switches.append(
                        self.db.create(LogicalSwitch(name=f"{self.prefix}churn{next(names)}", topic=self.topic))
                    )
                elif choice < 0.55:
                    sw = rng.choice(switches)
                    ports.append(
                        self.db.create(
                            LogicalSwitchPort(
                                switch=sw, name=f"{self.prefix}cp{next(names)}", topic=self.topic, up=False
                            )
                        )
                    )
                elif choice < 0.85 and ports:
                    i = rng.randrange(len(ports))
                    ports[i] = self.db.update(ports[i].replace(up=not ports[i].up, tag=rng.randrange(1, 4096)))
                elif ports:
                    self.db.delete(ports.pop(rng.randrange(len(ports))))
                else:
                    sw = switches.pop()
                    self.db.delete(sw, cascade=True)
                    ports = [p for p in ports if p.switch != sw.id]
                self.done += 1
                if self.pause:
                    time.sleep(self.pause)
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)

    def start(self) -> Churn:
        self._thread = threading.Thread(target=self.run, name="churn", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float = 60) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the writer did not finish"
        if self.errors:
            raise self.errors[0]


@pytest.fixture
def memory_urls() -> Iterator[Callable[[], str]]:
    """Make URLs of fresh named memory stores, kept alive for the test (named stores die with their last user)."""
    keep: list[nbdb.Database] = []

    def make() -> str:
        url = f"memory://tools-{uuid.uuid4().hex[:10]}"
        keep.append(nbdb.connect(url))
        return url

    yield make
    for db in keep:
        db.close()


def count_objects(db: nbdb.Database, models: Sequence[type[Model]] = OVN_MODELS) -> int:
    """Objects of ``models`` in ``db``."""
    return sum(len(db.list(m)) for m in models)


def assert_no_dangling(db: nbdb.Database, models: Sequence[type[Model]] = OVN_MODELS) -> None:
    """Every reference of every object resolves."""
    for model in models:
        for obj in db.list(model):
            for table, id in obj.ref_keys():
                target = next(m for m in OVN_MODELS if m.nbdb_table == table)
                try:
                    db.get(target, id)
                except errors.NotFoundError:
                    pytest.fail(f"{obj.nbdb_table} {obj.id} references missing {table} {id}")


def interrupt_when(marker: str, *argv: str) -> tuple[int, str]:
    """Run ``nbdb ARGV`` and send it SIGINT once ``marker`` shows on its stderr: (exit code, stderr)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.Popen([sys.executable, "-m", "nbdb.cli", *argv], stderr=subprocess.PIPE, env=env)
    try:
        assert run.stderr is not None
        seen = b""
        while marker.encode() not in seen and run.poll() is None:
            seen += os.read(run.stderr.fileno(), 4096)
        run.send_signal(signal.SIGINT)
        err = (seen + run.communicate(timeout=60)[1]).decode()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    return run.returncode, err
