"""OVSDB baseline with the ``ovs`` library's JSON-RPC: OVN Northbound rows, as ``ovn-nbctl`` writes them.

A port is a ``Logical_Switch_Port`` row whose columns hold the port's fields
(name, type, addresses, port_security, options, up, external_ids), added to
its switch's ``ports`` set by a ``mutate`` in the same transaction (as
``ovn-nbctl lsp-add``). The raw client's own bookkeeping sits in
``external_ids``, like Neutron's ``neutron:revision_number``: ``raw:ns`` (the
namespace), ``raw:version`` (the version a compare-and-swap checks with a
``wait``) and ``raw:<field>`` (JSON of a field without a column). So:

* create: one ``transact`` of ``insert`` (the row uuid named) + ``mutate`` of
  ``Logical_Switch.ports``;
* get: one ``transact`` of two ``select``: the row, and its switch (the
  switch whose ``ports`` include it, as ``ovn-nbctl lsp-get-ls``);
* update: ``wait`` on the version + ``update`` of the row;
* delete: ``wait`` on the version + ``mutate delete`` of the switch's set +
  ``delete`` of the row;
* list: ``select`` of the namespace's ports and switches;
* followers: one connection each with a ``monitor`` of both tables.

nbdb's OVSDB backend does the same server work for each operation, plus its
own: a read of the current row before each write, a wait on the full content
instead of one version, and waiting for its monitor to show the commit.
Messages go through ``ovs.jsonrpc`` (the library's JSON parser, as nbdb's
IDL uses) on a blocking connection per client.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from nbdb.bench.raw.base import Follower, RawClient, RawConflict

__all__ = ["Client"]

_STR, _SET, _MAP, _OPT = "string", "set", "map", "optional"
_NS = "raw:ns"
_VERSION = "raw:version"
_FIELD = "raw:"
_CONFLICTS = ("timed out", "duplicate uuid", "constraint violation")
"""OVSDB errors that mean "not the state the compare expected": a failed ``wait``, an existing row."""


@dataclass(frozen=True, slots=True)
class _Table:
    name: str
    columns: dict[str, str]
    parent: tuple[str, str, str] | None = None
    """(doc field, parent table, parent's set column) of a child row."""


_TABLES = {
    "LogicalSwitchPort": _Table(
        "Logical_Switch_Port",
        {
            "name": _STR,
            "type": _STR,
            "addresses": _SET,
            "port_security": _SET,
            "options": _MAP,
            "up": _OPT,
            "external_ids": _MAP,
        },
        ("switch", "Logical_Switch", "ports"),
    ),
    "LogicalSwitch": _Table("Logical_Switch", {"name": _STR, "other_config": _MAP, "external_ids": _MAP}),
}


def _to_datum(kind: str, value: Any) -> Any:
    if kind == _SET:
        return ["set", list(value or ())]
    if kind == _MAP:
        return ["map", [[k, v] for k, v in (value or {}).items()]]
    if kind == _OPT:
        return ["set", []] if value is None else value
    return value or ""


def _from_datum(kind: str, datum: Any) -> Any:
    is_set = isinstance(datum, list) and datum[0] == "set"
    if kind == _SET:
        return list(datum[1]) if is_set else [datum]
    if kind == _MAP:
        return dict(datum[1])
    if kind == _OPT:
        return (datum[1][0] if datum[1] else None) if is_set else datum
    return datum


def _members(datum: Any) -> list[str]:
    """The uuids of a set-of-uuid datum (a single element comes as a bare atom)."""
    if datum[0] == "uuid":
        return [datum[1]]
    return [atom[1] for atom in datum[1]]


def _where(row: str) -> list[Any]:
    return [["_uuid", "==", ["uuid", row]]]


def _remote(url: str) -> tuple[str, str]:
    """The first ``ovs.stream`` remote of an ``ovsdb+tcp|ssl|unix://`` URL, and the database name."""
    parts = urlsplit(url)
    kind = parts.scheme.partition("+")[2]
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if kind == "unix":
        return f"unix:{unquote(parts.netloc + parts.path)}", query.get("database", "OVN_Northbound")
    if kind == "ssl":
        import ovs.stream

        ovs.stream.Stream.ssl_set_private_key_file(query["private_key"])
        ovs.stream.Stream.ssl_set_certificate_file(query["certificate"])
        ovs.stream.Stream.ssl_set_ca_cert_file(query["ca_cert"])
    host = parts.netloc.split(",")[0]
    return f"{kind}:{host}", parts.path.strip("/") or query.get("database", "OVN_Northbound")


class _Connection:
    """One blocking ``ovs.jsonrpc.Connection`` that answers the server's echo probes."""

    def __init__(self, remote: str) -> None:
        import ovs.jsonrpc

        self._jsonrpc = ovs.jsonrpc
        self._remote = remote
        self.conn = self._open()

    def _open(self) -> Any:
        import ovs.stream

        error, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(self._remote), 10_000)
        if error:
            raise ConnectionError(f"cannot connect to OVSDB at {self._remote}: {os.strerror(error)}")
        return self._jsonrpc.Connection(stream)

    def _drain(self) -> None:
        """Answer what came in since the last reply; connect again if the server hung up.

        ovsdb-server drops a client that sent nothing for two probe intervals (10 s by
        default), as one busy parsing a big reply with the library's Python parser may be.
        """
        while True:
            error, msg = self.conn.recv()
            if error == errno.EAGAIN:
                return
            if error:
                self.conn.close()
                self.conn = self._open()
                return
            self.handle(msg)

    def handle(self, msg: Any) -> bool:
        """Answer an echo request; True if ``msg`` was one."""
        if msg.type == self._jsonrpc.Message.T_REQUEST and msg.method == "echo":
            self.conn.send(self._jsonrpc.Message.create_reply(msg.params, msg.id))
            return True
        return False

    def call(self, method: str, params: list[Any]) -> Any:
        """Send a request and wait for its reply (other messages than echoes are dropped)."""
        Message = self._jsonrpc.Message
        self._drain()
        request = Message.create_request(method, params)
        error = self.conn.send(request)
        while not error:
            error, msg = self.conn.recv_block()
            if msg is None or self.handle(msg):
                continue
            if msg.type in (Message.T_REPLY, Message.T_ERROR) and msg.id == request.id:
                if msg.type == Message.T_ERROR:
                    raise RuntimeError(f"OVSDB {method} failed: {msg.error}")
                return msg.result
        raise ConnectionError(f"OVSDB connection failed: {os.strerror(error) if error > 0 else 'closed'}")

    def close(self) -> None:
        self.conn.close()


class Client(RawClient):
    """A JSON-RPC connection to the OVN Northbound database."""

    def __init__(self, url: str, namespace: str) -> None:
        super().__init__(url, namespace)
        self._remote, self._db = _remote(url)
        self._rpc = _Connection(self._remote)
        # populate_raw gives every namespace's switch the same id, and OVSDB row uuids are
        # database-wide: mix ids with the namespace (reversibly) so namespaces never collide.
        self._mask = int.from_bytes(hashlib.sha256(namespace.encode()).digest()[:16], "big")

    # ---------------------------------------------------------------- mapping

    def row_uuid(self, id: str) -> str:
        """The ``_uuid`` of the row of object ``id``."""
        return str(uuid.UUID(int=uuid.UUID(id).int ^ self._mask))

    def object_id(self, row: str) -> str:
        """The object id of row ``row`` (the inverse of :meth:`row_uuid`)."""
        return self.row_uuid(row)

    def topic_table(self, table: str, topic: int) -> str:
        # OVSDB has no partitions: a topic's ports are rows of the one table, on their
        # topic's switch, as nbdb's OVSDB backend keeps them (the topic in external_ids).
        return table

    @staticmethod
    def _split(key: str) -> tuple[_Table, str]:
        rest, _, id = key.rpartition("/")
        return _TABLES[rest.rpartition("/")[2]], id

    def _row(self, table: _Table, doc: dict[str, Any], version: int) -> dict[str, Any]:
        row: dict[str, Any] = {}
        ext = dict(doc.get("external_ids") or {})
        for field, value in doc.items():
            if field in ("id", "external_ids") or (table.parent is not None and field == table.parent[0]):
                continue
            if field in table.columns:
                row[field] = _to_datum(table.columns[field], value)
            else:
                ext[_FIELD + field] = json.dumps(value)
        ext[_NS] = self.namespace
        ext[_VERSION] = str(version)
        row["external_ids"] = _to_datum(_MAP, ext)
        return row

    def doc(self, table: _Table, row: dict[str, Any], parent: str | None) -> tuple[dict[str, Any], int]:
        """The object (as the workloads' dict) and version of a selected or monitored row."""
        doc: dict[str, Any] = {"id": self.object_id(row["_uuid"][1])}
        for column, kind in table.columns.items():
            if column != "external_ids" and column in row:
                doc[column] = _from_datum(kind, row[column])
        ext = _from_datum(_MAP, row["external_ids"])
        version = int(ext.pop(_VERSION, 0))
        ext.pop(_NS, None)
        for key in [k for k in ext if k.startswith(_FIELD)]:
            doc[key[len(_FIELD) :]] = json.loads(ext.pop(key))
        doc["external_ids"] = ext
        if table.parent is not None:
            doc[table.parent[0]] = None if parent is None else self.object_id(parent)
        return doc, version

    def _columns(self, table: _Table) -> list[str]:
        return ["_uuid", *table.columns]

    # ---------------------------------------------------------------- transactions

    def _transact(self, ops: list[dict[str, Any]], key: str) -> list[Any]:
        result: list[Any] = self._rpc.call("transact", [self._db, *ops])
        for item in result:
            if isinstance(item, dict) and "error" in item:
                if item["error"] in _CONFLICTS:
                    raise RawConflict(key)
                raise RuntimeError(f"OVSDB transaction failed: {item['error']}: {item.get('details', '')}")
        return result

    def _version_wait(self, table: _Table, row: str, version: int) -> dict[str, Any]:
        where = [*_where(row), ["external_ids", "includes", _to_datum(_MAP, {_VERSION: str(version)})]]
        return {"op": "wait", "table": table.name, "timeout": 0, "where": where, "columns": [], "until": "==",
                "rows": [{}]}  # fmt: skip

    def _inserts(self, items: Iterable[tuple[str, bytes]]) -> list[dict[str, Any]]:
        ops: list[dict[str, Any]] = []
        children: dict[tuple[str, str, str], list[Any]] = {}
        for key, value in items:
            table, id = self._split(key)
            doc = json.loads(value)
            row = self.row_uuid(id)
            ops.append({"op": "insert", "table": table.name, "uuid": row, "row": self._row(table, doc, 1)})
            if table.parent is not None:
                field, ptable, pcolumn = table.parent
                children.setdefault((ptable, pcolumn, self.row_uuid(doc[field])), []).append(["uuid", row])
        for (ptable, pcolumn, parent_row), rows in children.items():
            ops.append({"op": "mutate", "table": ptable, "where": _where(parent_row),
                        "mutations": [[pcolumn, "insert", ["set", rows]]]})  # fmt: skip
        return ops

    def _check_parents(self, ops: list[dict[str, Any]], result: list[Any], key: str) -> None:
        # A child row that no parent holds is garbage-collected at commit: say so, do not lose it silently.
        for op, res in zip(ops, result, strict=False):
            if op["op"] == "mutate" and res.get("count") == 0:
                raise RuntimeError(f"{key}: its parent row {op['where'][0][2][1]} does not exist")

    def create(self, key: str, value: bytes) -> int:
        ops = self._inserts([(key, value)])
        self._check_parents(ops, self._transact(ops, key), key)
        return 1

    def get(self, key: str) -> tuple[bytes, int] | None:
        table, id = self._split(key)
        row = self.row_uuid(id)
        ops: list[dict[str, Any]] = [
            {"op": "select", "table": table.name, "where": _where(row), "columns": self._columns(table)}
        ]
        if table.parent is not None:
            _, ptable, pcolumn = table.parent
            where = [[pcolumn, "includes", ["set", [["uuid", row]]]]]
            ops.append({"op": "select", "table": ptable, "where": where, "columns": ["_uuid"]})
        result = self._transact(ops, key)
        rows = result[0]["rows"]
        if not rows:
            return None
        parents = result[1]["rows"] if len(result) > 1 else []
        doc, version = self.doc(table, rows[0], parents[0]["_uuid"][1] if parents else None)
        return json.dumps(doc).encode(), version

    def update(self, key: str, value: bytes, expect_version: int) -> int:
        table, id = self._split(key)
        row = self.row_uuid(id)
        new = self._row(table, json.loads(value), expect_version + 1)
        ops = [self._version_wait(table, row, expect_version),
               {"op": "update", "table": table.name, "where": _where(row), "row": new}]  # fmt: skip
        self._transact(ops, key)
        return expect_version + 1

    def delete(self, key: str, expect_version: int) -> None:
        table, id = self._split(key)
        row = self.row_uuid(id)
        ops = [self._version_wait(table, row, expect_version)]
        if table.parent is not None:
            _, ptable, pcolumn = table.parent
            member = ["set", [["uuid", row]]]
            ops.append({"op": "mutate", "table": ptable, "where": [[pcolumn, "includes", member]],
                        "mutations": [[pcolumn, "delete", member]]})  # fmt: skip
        ops.append({"op": "delete", "table": table.name, "where": _where(row)})
        self._transact(ops, key)

    def create_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        ops = self._inserts(items)
        self._check_parents(ops, self._transact(ops, items[0][0]), items[0][0])

    def scan(self, prefix: str) -> list[bytes]:
        table = _TABLES[prefix.rstrip("/").rpartition("/")[2]]
        mine = [["external_ids", "includes", _to_datum(_MAP, {_NS: self.namespace})]]
        ops: list[dict[str, Any]] = [
            {"op": "select", "table": table.name, "where": mine, "columns": self._columns(table)}
        ]
        if table.parent is not None:
            _, ptable, pcolumn = table.parent
            ops.append({"op": "select", "table": ptable, "where": mine, "columns": ["_uuid", pcolumn]})
        result = self._transact(ops, prefix)
        parents: dict[str, str] = {}
        if table.parent is not None:
            for prow in result[1]["rows"]:
                for child in _members(prow[table.parent[2]]):
                    parents[child] = prow["_uuid"][1]
        docs = [self.doc(table, row, parents.get(row["_uuid"][1]))[0] for row in result[0]["rows"]]
        return [json.dumps(doc).encode() for doc in docs]

    def publish(self, key: str, value: bytes, expect_version: int) -> int:
        return self.update(key, value, expect_version)  # every committed row change reaches the monitors

    def follower(self) -> Follower:
        return _Follower(self)

    def cleanup(self) -> None:
        mine = [["external_ids", "includes", _to_datum(_MAP, {_NS: self.namespace})]]
        # Switches and their ports go in one transaction (the ports are held by strong references).
        ops = [{"op": "delete", "table": t.name, "where": mine} for t in _TABLES.values()]
        self._transact(ops, self.namespace)

    def close(self) -> None:
        self._rpc.close()

    @property
    def remote(self) -> tuple[str, str]:
        """The ``ovs.stream`` remote and the database name."""
        return self._remote, self._db


class _Follower(Follower):
    """A ``monitor`` of ports and switches on a connection of its own."""

    def __init__(self, client: Client) -> None:
        self._client = client
        remote, db = client.remote
        self._rpc = _Connection(remote)
        ports = _TABLES["LogicalSwitchPort"]
        assert ports.parent is not None
        self._ports = ports
        self._parent_table, self._parent_column = ports.parent[1], ports.parent[2]
        self._parents: dict[str, str] = {}
        requests = {
            ports.name: {"columns": list(ports.columns), "select": {"initial": False}},
            self._parent_table: {"columns": [self._parent_column]},
        }
        # The reply carries the switches as they are now; updates after it are what poll returns.
        initial = self._rpc.call("monitor", [db, None, requests])
        self._apply(initial)

    def _apply(self, updates: dict[str, Any]) -> list[tuple[str, bytes | None]]:
        for parent, change in updates.get(self._parent_table, {}).items():
            new = change.get("new")
            if new is not None and self._parent_column in new:
                for child in _members(new[self._parent_column]):
                    self._parents[child] = parent
        out: list[tuple[str, bytes | None]] = []
        client = self._client
        for row, change in updates.get(self._ports.name, {}).items():
            new, old = change.get("new"), change.get("old")
            current = new if new is not None else old
            if current is None or _from_datum(_MAP, current["external_ids"]).get(_NS) != client.namespace:
                continue
            key = client.key("LogicalSwitchPort", client.object_id(row))
            if new is None:
                self._parents.pop(row, None)
                out.append((key, None))
            else:
                doc, _ = client.doc(self._ports, {**new, "_uuid": ["uuid", row]}, self._parents.get(row))
                out.append((key, json.dumps(doc).encode()))
        return out

    def poll(self, timeout: float) -> list[tuple[str, bytes | None]]:
        import ovs.poller
        import ovs.timeval

        conn = self._rpc.conn
        deadline = ovs.timeval.msec() + timeout * 1000
        out: list[tuple[str, bytes | None]] = []
        while True:
            conn.run()
            error, msg = conn.recv()
            if error == errno.EAGAIN:
                remaining = deadline - ovs.timeval.msec()
                if out or remaining <= 0:
                    return out
                poller = ovs.poller.Poller()
                conn.wait(poller)
                conn.recv_wait(poller)
                poller.timer_wait(max(1, int(remaining)))
                poller.block()
                continue
            if error:
                reason = os.strerror(error) if error > 0 else "closed"
                raise ConnectionError(f"the OVSDB monitor connection failed: {reason}")
            if self._rpc.handle(msg):
                continue
            if msg.method == "update":
                out += self._apply(msg.params[1])

    def close(self) -> None:
        self._rpc.close()
