"""How big a run is: the sizes of each workload for ``--quick``, the full run, and the tests."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["BACKENDS", "OVN_SCALE_PROBE_FROM_PORTS", "OVN_SCALE_PROBE_MS", "SIZES", "Sizes", "spawn_options"]

#: Every backend nbdb ships, in report order, with the harness server kind that runs it.
BACKENDS: dict[str, str | None] = {
    "memory": None,
    "sqlite": None,
    "redis": "redis",
    "etcd": "etcd",
    "ovsdb": "ovsdb",
    "cassandra": "cassandra",
    "hazelcast": "hazelcast",
}

#: The server-side inactivity probe (ms) of a spawned ovsdb-server when the OVN sweep reaches
#: :data:`OVN_SCALE_PROBE_FROM_PORTS` ports. At 100,000 ports the initial monitor reply is a
#: 35-40 MB message: the ``ovs`` IDL (ovsdbapp's too) answers no probe while it parses and
#: applies it, and ovsdb-server's default 5 s probe drops it, again at every reconnect. OVN
#: deployments of that size raise ``inactivity_probe`` on their NB ``Connection`` row
#: (``ovn-nbctl --inactivity-probe=MS set-connection ...``). 60 s, a hang-up after 120 s of
#: silence, covers the IDL's 26-45 s load of 100,000 ports (it answers no echo before the end)
#: with room for a busier host. Both sides talk to the same server, so both get it; nbdb still
#: sends its own echoes while it loads.
OVN_SCALE_PROBE_MS = 60_000
#: The smallest OVN sweep size that gets :data:`OVN_SCALE_PROBE_MS`. The server hangs up after 10 s
#: of silence by default; ovsdbapp's IDL loads 10,000 ports in 4-5 s at load 8 on 2 cores, but took
#: 8-14 s at load 13 and more, was dropped, reloaded, was dropped again, until its first ``lsp_add``
#: timed out: a quick run (1,000 and 10,000 ports) on a busy host had no baseline at 10,000.
OVN_SCALE_PROBE_FROM_PORTS = 10_000


@dataclass(frozen=True, slots=True)
class Sizes:
    """The size of every workload of one run."""

    name: str
    crud_ops: int
    """Operations of each of create / get / update / delete."""
    txn_sizes: tuple[int, ...]
    """Objects per transaction."""
    txn_objects: int
    """Objects written in total by each transaction size."""
    list_objects: int
    """Objects returned by one ``list``."""
    load_objects: tuple[int, ...]
    """Cold-load sizes (the scale sweep over objects); the largest is the headline figure."""
    cache_gets: int
    cache_finds: int
    fanout_caches: tuple[int, ...]
    """Cache counts of the fan-out sweep; the largest is the headline figure."""
    fanout_writes: int
    fanout_rate: float
    """Writes per second of the fan-out writer (paced, so latency is not queueing)."""
    fanout_spread: tuple[tuple[int, int], ...]
    """(processes, caches in all) of the spread fan-out: caches in several processes, as a deployment has them."""
    churn_ops: int
    churn_rate: float
    churn_tenants: int
    rounds: int
    """Each figure is the best of this many rounds (nbdb and raw interleaved)."""
    ovn_ports: tuple[int, ...] = (100,)
    """Ports on the switch of the OVN scale sweep (OVSDB only)."""
    ovn_writes: int = 20
    """Single port creates / updates / deletes (and followed writes) per sweep size."""
    ovn_txns: int = 2
    """Transactions of 100 ports per sweep size."""
    ovn_seconds: float = 60.0
    """Time budget of each timed OVN workload on each side: the writes (or transactions) done by
    then are the figure, so a client whose cost grows with the switch cannot hold the run."""
    load_cap: dict[str, int] = field(default_factory=dict)
    """The largest cold-load size per backend where the sweep's top is out of reach (filling a server)."""
    spread_threads: tuple[int, ...] = (16,)
    """Threads of the concurrent workload's second case: each thread in a topic of its own."""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able form."""
        return asdict(self)


SIZES: dict[str, Sizes] = {
    # The tests: seconds in all, figures meaningless.
    "tiny": Sizes(
        name="tiny",
        crud_ops=30,
        txn_sizes=(5,),
        txn_objects=20,
        list_objects=50,
        load_objects=(50, 100),
        cache_gets=2_000,
        cache_finds=500,
        fanout_caches=(1, 2),
        fanout_writes=10,
        fanout_rate=500.0,
        fanout_spread=((2, 4),),
        churn_ops=30,
        churn_rate=500.0,
        churn_tenants=2,
        rounds=1,
        spread_threads=(4,),
    ),
    # `--quick`: under a minute on the embedded default, for the README.
    "quick": Sizes(
        name="quick",
        crud_ops=1_000,
        txn_sizes=(10, 100),
        txn_objects=1_000,
        list_objects=2_000,
        load_objects=(1_000, 10_000),
        cache_gets=200_000,
        cache_finds=50_000,
        fanout_caches=(1, 10),
        fanout_writes=200,
        fanout_rate=200.0,
        fanout_spread=(),  # ten processes starting is not quick
        churn_ops=500,
        churn_rate=500.0,
        churn_tenants=4,
        rounds=1,
        ovn_ports=(1_000, 10_000),
        ovn_writes=300,
        # Five transactions per side made one slow transaction (a full collection, another
        # process on the cores) swing the ratio from 0.6 to 2.0 between runs.
        ovn_txns=20,
    ),
    # The full run behind docs/benchmarks.md.
    "full": Sizes(
        name="full",
        crud_ops=5_000,
        txn_sizes=(10, 100),
        txn_objects=5_000,
        list_objects=10_000,
        load_objects=(1_000, 10_000, 100_000, 1_000_000),
        # Filling a networked server with a million ports takes longer than the rest of the run.
        load_cap={"redis": 100_000, "etcd": 100_000, "ovsdb": 100_000, "cassandra": 100_000, "hazelcast": 100_000},
        cache_gets=1_000_000,
        cache_finds=200_000,
        fanout_caches=(1, 10, 50),
        fanout_writes=1_000,
        fanout_rate=200.0,
        fanout_spread=((10, 500),),
        churn_ops=3_000,
        churn_rate=500.0,
        churn_tenants=10,
        rounds=3,
        ovn_ports=(1_000, 10_000, 100_000),
        ovn_writes=1_000,
        ovn_txns=30,
    ),
}


def spawn_options(backend: str, sizes: Sizes, groups: tuple[str, ...]) -> dict[str, Any]:
    """Options of the server the bench spawns for ``backend`` when running ``groups`` at ``sizes``.

    Only an OVN sweep reaching :data:`OVN_SCALE_PROBE_FROM_PORTS` ports changes anything: its
    ovsdb-server gets the inactivity probe a deployment of that size has (the other workloads of
    the run share that server; the probe only acts on idle connections).
    """
    if backend == "ovsdb" and "ovn" in groups and max(sizes.ovn_ports) >= OVN_SCALE_PROBE_FROM_PORTS:
        return {"inactivity_probe_ms": OVN_SCALE_PROBE_MS}
    return {}
