"""OVSDB backend: the OVN Northbound database itself, through nbdb's typed models.

RFC 7047 spoken directly (no private state of the ``ovs`` package), one job
per module:

* :mod:`.url` — ``ovsdb+tcp|ssl|unix://`` URLs;
* :mod:`.transport` — sockets (TCP, TLS, unix) and JSON framing;
* :mod:`.rpc` — a JSON-RPC connection with one I/O thread;
* :mod:`.cluster` — choosing a writable server: raft leader, standalone or relay;
* :mod:`.session` — the kept-up connection: monitors, leader tracking, resume;
* :mod:`.locks` — OVSDB's native locks;
* :mod:`.backend` — :class:`OvsdbBackend`.
"""

from nbdb.backends.ovsdb.backend import OvsdbBackend, generate_schema

__all__ = ["OvsdbBackend", "generate_schema"]
