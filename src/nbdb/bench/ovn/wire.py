"""A minimal blocking RFC 7047 client: populates a switch with N ports and writes as "another client"."""

from __future__ import annotations

import itertools
import json
import socket
import uuid
from typing import Any
from urllib.parse import unquote, urlsplit

from nbdb.backends.ovsdb.transport import JsonFramer

__all__ = ["NB", "RawNb", "ovs_remote", "port_row"]

NB = "OVN_Northbound"


def ovs_remote(url: str) -> str:
    """The ``ovs`` library's remote (``tcp:HOST:PORT`` or ``unix:PATH``) of the first server of an nbdb URL."""
    parts = urlsplit(url)
    kind = parts.scheme.partition("+")[2]
    if kind == "unix":
        return f"unix:{unquote(parts.netloc + parts.path)}"
    if kind != "tcp":
        raise LookupError("the OVN scale baselines connect over tcp or unix only")
    return f"tcp:{parts.netloc.split(',')[0]}"


def port_row(name: str, index: int, namespace: str) -> dict[str, Any]:
    """A ``Logical_Switch_Port`` row as a VM's port (and an nbdb port in ``namespace``)."""
    mac = "0a:" + ":".join(f"{(index >> s) & 255:02x}" for s in (32, 24, 16, 8, 0))
    ip = f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"
    ext = [["neutron:device_owner", "compute:nova"], ["nbdb:ns", namespace], ["nbdb:topic", "tenant-0"]]
    return {"name": name, "addresses": f"{mac} {ip}", "port_security": f"{mac} {ip}", "external_ids": ["map", ext]}


class RawNb:
    """One blocking connection to the Northbound database (answers the server's echo probes)."""

    def __init__(self, url: str) -> None:
        remote = ovs_remote(url)
        kind, _, address = remote.partition(":")
        if kind == "unix":
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._sock.connect(address)
        else:
            host, port = address.rsplit(":", 1)
            self._sock = socket.create_connection((host, int(port)))
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._framer = JsonFramer()
        self._ids = itertools.count(1)
        self._inbox: list[Any] = []

    def send(self, ops: list[dict[str, Any]], method: str = "transact", db: str | None = NB) -> int:
        """Send one request (a transaction by default) without waiting; its request id."""
        mid = next(self._ids)
        params = [db, *ops] if db is not None else ops
        self._sock.sendall(json.dumps({"id": mid, "method": method, "params": params}).encode())
        return mid

    def call(self, method: str, params: list[Any]) -> Any:
        """One request and its result."""
        return self.reply(self.send(params, method, None))

    def reply(self, mid: int) -> Any:
        """Wait for the reply to request ``mid``, telling the server every 2 s that this client lives.

        ovsdb-server drops a client silent for two of its probe intervals (5 s each), and at
        100,000 ports on a loaded machine it may itself take that long to answer a transaction.
        """
        while True:
            for index, msg in enumerate(self._inbox):
                if msg.get("id") == mid and msg.get("method") is None:
                    del self._inbox[index]
                    return msg.get("result")
            self._sock.settimeout(2.0)
            try:
                data = self._sock.recv(1 << 20)
            except TimeoutError:
                self._sock.sendall(json.dumps({"id": "keepalive", "method": "echo", "params": []}).encode())
                continue
            finally:
                self._sock.settimeout(None)
            if not data:
                raise ConnectionError("the OVSDB server closed the connection")
            for msg in self._framer.feed(data) + self._framer.idle():
                if msg.get("method") == "echo":
                    reply = {"id": msg["id"], "result": msg.get("params"), "error": None}
                    self._sock.sendall(json.dumps(reply).encode())
                elif msg.get("id") != "keepalive":
                    self._inbox.append(msg)

    def transact(self, ops: list[dict[str, Any]]) -> list[Any]:
        """One transaction; RuntimeError if the server refused it."""
        result = self.reply(self.send(ops))
        errors = [r for r in result if isinstance(r, dict) and "error" in r]
        if errors:
            raise RuntimeError(f"OVSDB refused a transaction: {errors[0]}")
        return list(result)

    def add_switch(self, name: str, namespace: str) -> uuid.UUID:
        """A new logical switch in ``namespace``."""
        sid = uuid.uuid4()
        row = {"name": name, "external_ids": ["map", [["nbdb:ns", namespace], ["nbdb:topic", "tenant-0"]]]}
        self.transact([{"op": "insert", "table": "Logical_Switch", "uuid": str(sid), "row": row}])
        return sid

    def add_ports(self, switch: uuid.UUID, names: list[str], namespace: str, first: int = 0) -> list[uuid.UUID]:
        """Ports on ``switch``, created in transactions of up to 2,000."""
        out: list[uuid.UUID] = []
        for start in range(0, len(names), 2000):
            ids = [uuid.uuid4() for _ in names[start : start + 2000]]
            ops: list[dict[str, Any]] = [
                {
                    "op": "insert",
                    "table": "Logical_Switch_Port",
                    "uuid": str(i),
                    "row": port_row(names[start + k], first + start + k, namespace),
                }
                for k, i in enumerate(ids)
            ]
            members = ["set", [["uuid", str(i)] for i in ids]]
            ops.append(
                {
                    "op": "mutate",
                    "table": "Logical_Switch",
                    "where": [["_uuid", "==", ["uuid", str(switch)]]],
                    "mutations": [["ports", "insert", members]],
                }
            )
            self.transact(ops)
            out += ids
        return out

    def delete_switch(self, switch: uuid.UUID) -> None:
        """Delete a switch and (by garbage collection) its ports, 5,000 ports a transaction.

        One transaction removing 100,000 ports kept ovsdb-server busy for longer than its
        inactivity probe, and it dropped this connection before the reply.
        """
        where = [["_uuid", "==", ["uuid", str(switch)]]]
        [selected] = self.transact([{"op": "select", "table": "Logical_Switch", "where": where, "columns": ["ports"]}])
        for row in selected.get("rows", []):
            members = row["ports"][1] if row["ports"][0] == "set" else [row["ports"]]
            for start in range(0, len(members), 5000):
                chunk = ["set", members[start : start + 5000]]
                self.transact([{"op": "mutate", "table": "Logical_Switch", "where": where,
                                "mutations": [["ports", "delete", chunk]]}])  # fmt: skip
        self.transact([{"op": "delete", "table": "Logical_Switch", "where": where}])

    def close(self) -> None:
        """Close the connection."""
        self._sock.close()
