"""create / get / update (CAS) / delete of single ports, as a control plane does per VM.

Each operation is timed as a caller pays for it: through nbdb that includes
building and validating the model and encoding it; raw, building the dict and
``json.dumps`` (or ``json.loads`` on a read).
"""

from __future__ import annotations

import json
from time import perf_counter_ns as now
from typing import Any

from nbdb.bench.config import Sizes
from nbdb.bench.data import make_port, port_doc
from nbdb.bench.results import Measurement
from nbdb.bench.stats import summarize
from nbdb.bench.target import Target
from nbdb.bench.workloads.common import PORT, populate, populate_raw
from nbdb.models.ovn import LogicalSwitchPort

__all__ = ["run_nbdb", "run_raw"]


def _measure(name: str, target: Target, impl: str, lat: list[int], elapsed: int) -> Measurement:
    return Measurement(name, target.name, impl, len(lat), elapsed, "ops", summarize(lat))


def run_nbdb(target: Target, sizes: Sizes, **_: Any) -> list[Measurement]:
    """The four operations through nbdb, on ``sizes.crud_ops`` ports."""
    n = sizes.crud_ops
    with target.open(target.namespace()) as db:
        switch, _ports = populate(db, 0)
        out = []
        lat: list[int] = []
        ports: list[LogicalSwitchPort] = []
        start = now()
        for i in range(n):
            t0 = now()
            ports.append(db.create(make_port(switch, i)))
            lat.append(now() - t0)
        out.append(_measure("write.create", target, "nbdb", lat, now() - start))

        lat = []
        start = now()
        for p in ports:
            t0 = now()
            db.get(LogicalSwitchPort, p.id)
            lat.append(now() - t0)
        out.append(_measure("read.get", target, "nbdb", lat, now() - start))

        lat = []
        start = now()
        for i, p in enumerate(ports):
            t0 = now()
            ports[i] = db.update(p.replace(up=True, external_ids={**p.external_ids, "neutron:revision_number": "2"}))
            lat.append(now() - t0)
        out.append(_measure("write.update", target, "nbdb", lat, now() - start))

        lat = []
        start = now()
        for p in ports:
            t0 = now()
            db.delete(p)
            lat.append(now() - t0)
        out.append(_measure("write.delete", target, "nbdb", lat, now() - start))
        return out


def run_raw(target: Target, sizes: Sizes, **_: Any) -> list[Measurement]:
    """The same four operations with the backend's own client."""
    n = sizes.crud_ops
    client = target.raw(target.namespace())
    try:
        switch_id, _docs = populate_raw(client, 0)
        out = []
        lat: list[int] = []
        docs: list[dict[str, Any]] = []
        versions: list[int] = []
        start = now()
        for i in range(n):
            t0 = now()
            doc = port_doc(switch_id, i)
            versions.append(client.create(client.key(PORT, doc["id"]), json.dumps(doc).encode()))
            docs.append(doc)
            lat.append(now() - t0)
        out.append(_measure("write.create", target, "raw", lat, now() - start))

        lat = []
        start = now()
        for doc in docs:
            t0 = now()
            found = client.get(client.key(PORT, doc["id"]))
            assert found is not None
            json.loads(found[0])
            lat.append(now() - t0)
        out.append(_measure("read.get", target, "raw", lat, now() - start))

        lat = []
        start = now()
        for i, doc in enumerate(docs):
            t0 = now()
            new = {**doc, "up": True, "external_ids": {**doc["external_ids"], "neutron:revision_number": "2"}}
            versions[i] = client.update(client.key(PORT, doc["id"]), json.dumps(new).encode(), versions[i])
            docs[i] = new
            lat.append(now() - t0)
        out.append(_measure("write.update", target, "raw", lat, now() - start))

        lat = []
        start = now()
        for i, doc in enumerate(docs):
            t0 = now()
            client.delete(client.key(PORT, doc["id"]), versions[i])
            lat.append(now() - t0)
        out.append(_measure("write.delete", target, "raw", lat, now() - start))
        return out
    finally:
        client.cleanup()
        client.close()
