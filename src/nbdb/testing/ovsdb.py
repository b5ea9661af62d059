"""ovsdb-server: standalone or a raft cluster, with the OVN Northbound schema by default."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from nbdb.testing.base import Member, Server
from nbdb.testing.errors import INSTALL_HINT, HarnessError, ServerNotInstalledError
from nbdb.testing.probes import run_tool
from nbdb.testing.process import find_binary
from nbdb.testing.tls import TlsFiles, make_tls_files

__all__ = ["LISTENER_DB", "OVN_SCHEMAS", "OvsdbServer", "find_ovn_nb_schema", "find_ovn_schema", "listener_schema"]

log = logging.getLogger(__name__)

_SCHEMA_DIRS = ("/usr/share/ovn", "/usr/local/share/ovn", "/usr/share/openvswitch")


OVN_SCHEMAS = {"nb": "OVN Northbound", "sb": "OVN Southbound"}
"""The OVN schemas the harness finds by a short name (``nbdb servers up ovsdb --schema sb``)."""


def find_ovn_schema(which: str = "nb") -> Path:
    """Path of the installed OVN schema ``which`` (``nb`` or ``sb``; ``$OVN_NB_SCHEMA``/``$OVN_SB_SCHEMA`` win)."""
    if which not in OVN_SCHEMAS:
        raise ValueError(f"no OVN schema {which!r}: one of {', '.join(OVN_SCHEMAS)}")
    env = os.environ.get(f"OVN_{which.upper()}_SCHEMA")
    candidates = [Path(env)] if env else []
    candidates += [Path(d) / f"ovn-{which}.ovsschema" for d in _SCHEMA_DIRS]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ServerNotInstalledError(
        f"{OVN_SCHEMAS[which]} schema not found in {', '.join(map(str, candidates))} "
        f"(Debian package ovn-common); {INSTALL_HINT}"
    )


def find_ovn_nb_schema() -> Path:
    """Path of the installed OVN Northbound schema (``$OVN_NB_SCHEMA`` wins)."""
    return find_ovn_schema("nb")


def _connection_table(schema: dict[str, Any]) -> tuple[str, str]:
    """The root table and its ``connections`` column through which ``schema`` configures remotes.

    OVN's databases keep their listeners in a ``Connection`` table referenced from the root
    row (``NB_Global.connections``, ``SB_Global.connections``), which is what ``ovn-nbctl
    set-connection`` writes and ``ovn-ctl`` points ``--remote=db:...`` at; a referenced
    table needs ``target`` and ``inactivity_probe`` columns to carry a probe.
    """
    tables: dict[str, Any] = schema.get("tables", {})
    for name, table in tables.items():
        key = table.get("columns", {}).get("connections", {}).get("type", {}).get("key", {})
        ref = key.get("refTable") if isinstance(key, dict) else None
        if table.get("isRoot") and ref in tables and {"target", "inactivity_probe"} <= set(tables[ref]["columns"]):
            return name, str(ref)
    raise HarnessError(
        f"schema {schema.get('name')!r} has no root table with a 'connections' column referencing "
        "a table of 'target' and 'inactivity_probe': inactivity_probe_ms needs one (OVN NB or SB)"
    )


def _connection_ops(schema: dict[str, Any], target: str, probe_ms: int) -> list[Any]:
    """An ``ovsdb-tool transact`` request writing one connection row for ``target`` with ``probe_ms``."""
    root, connection = _connection_table(schema)
    return [
        schema["name"],
        {
            "op": "insert",
            "table": connection,
            "row": {"target": target, "inactivity_probe": probe_ms},
            "uuid-name": "listener",
        },
        {"op": "insert", "table": root, "row": {"connections": ["named-uuid", "listener"]}},
    ]


LISTENER_DB = "nbdb_listener"
"""The database of a raft member's or a relay's own listener row (see :func:`listener_schema`)."""


def listener_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A database of one server's own listener: ``schema``'s root ``connections`` and its connection table.

    OVN's members and relays all read their listeners from the replicated
    ``NB_Global.connections`` (one ``ptcp:6641`` for hosts of their own); on
    one loopback they need a port each, so a member of a cluster or a relay
    reads its row from a small standalone database of its own instead, with
    the very column types ``ovsdb-server`` reads the probe from.
    """
    root, connection = _connection_table(schema)
    tables: dict[str, Any] = schema["tables"]
    connections = tables[root]["columns"]["connections"]
    return {
        "name": LISTENER_DB,
        "version": "1.0.0",
        "tables": {
            root: {"isRoot": True, "maxRows": 1, "columns": {"connections": connections}},
            connection: tables[connection],
        },
    }


def _server_argv(server_bin: str, databases: list[str], remotes: list[str], ctl: Path) -> list[str]:
    """An ``ovsdb-server`` command line: its databases (files or ``relay:`` sources), remotes and control socket."""
    return [server_bin, *databases, *remotes, f"--unixctl={ctl}", "--no-chdir", "-vconsole:info", "-vsyslog:off"]


class OvsdbServer(Server):
    """ovsdb-server serving one database over TCP (or SSL) on loopback.

    ``members=1`` gives a standalone database, ``members=3`` a raft cluster built with
    ``ovsdb-tool create-cluster``/``join-cluster``. ``schema`` is a schema file path
    (default: the OVN Northbound schema). URL: ``ovsdb+tcp://127.0.0.1:P`` or, for a
    cluster, ``ovsdb+tcp://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3``; ``remotes`` gives the
    same in OVS syntax (``tcp:127.0.0.1:P1,...``) for ``ovn-nbctl --db``.

    With ``tls`` the client remotes are SSL only (``pssl:P:127.0.0.1``, certificates from a
    throwaway CA in ``<base_dir>/tls``, see :attr:`tls_files`; ovsdb-server always asks
    for a client certificate signed by that CA). The URL becomes
    ``ovsdb+ssl://127.0.0.1:P?private_key=…&certificate=…&ca_cert=…`` (the client key and
    certificate) and ``remotes`` ``ssl:127.0.0.1:P``. Raft traffic between members stays
    on TCP.

    ``relays=R`` adds R relay servers (``ovsdb-server relay:DB:<members>``, OVN's way to
    serve thousands of readers) in front of the members: :attr:`relays` lists them, and
    :attr:`url` then names the relays (clients read through them; their transactions are
    forwarded to the leader) while :attr:`members_url` names the members. ``unix`` makes
    every member also listen on ``<member dir>/db.sock`` and :attr:`url` use the first
    one. ``model_schema`` works standalone and clustered (a second raft database).

    ``inactivity_probe_ms`` sets the server-side inactivity probe of the client listener
    (ovsdb-server's default is 5,000 ms: a client silent that long gets an echo request,
    and is dropped if it stays silent as long again; 0 turns the probe off). It is set the
    way an OVN deployment sets it: the listener is a row of the schema's ``Connection``
    table referenced from the root row (``NB_Global.connections``), written before the
    server starts, and the server reads its remotes from there
    (``--remote=db:OVN_Northbound,NB_Global,connections``). The database therefore starts
    with that root row and that connection row. Each member of a raft cluster, and each relay,
    needs a listener of its own on this one loopback (OVN's hosts share one target in the
    replicated row): it reads its row from a standalone database of its own
    (:data:`LISTENER_DB`, :func:`listener_schema`), which it serves next to the others. Schemas
    with such a table (OVN NB or SB) only.
    """

    kind = "ovsdb"
    binaries = (
        ("ovsdb-server", "openvswitch-common"),
        ("ovsdb-tool", "openvswitch-common"),
        ("ovsdb-client", "openvswitch-common"),
        ("ovs-appctl", "openvswitch-common"),
    )
    default_timeout = 30.0
    option_names = ("schema", "database", "model_schema", "tls", "relays", "unix", "inactivity_probe_ms")

    def __init__(
        self,
        *,
        schema: str | Path | None = None,
        database: str | None = None,
        model_schema: bool = False,
        tls: bool = False,
        relays: int = 0,
        unix: bool = False,
        inactivity_probe_ms: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.schema = str(schema) if schema is not None else None
        self.database = database
        self.model_schema = model_schema
        self.tls = tls
        self.relays_count = relays
        self.unix = unix
        if inactivity_probe_ms is not None and inactivity_probe_ms < 0:
            raise ValueError("inactivity_probe_ms must be >= 0 (0 turns the probe off)")
        self.inactivity_probe_ms = inactivity_probe_ms
        self.relays: list[Member] = []
        """The relay servers (not raft members: :meth:`leader` and :meth:`followers` ignore them)."""

    @property
    def tls_files(self) -> TlsFiles | None:
        """The CA and the server and client certificates of an SSL server (None without ``tls``)."""
        if not self.tls or self.base_dir is None:
            return None
        return TlsFiles.in_directory(self.base_dir / "tls")

    def _ssl_options(self) -> list[str]:
        """``--private-key``/``--certificate``/``--ca-cert`` with the client certificate (for ovsdb-client)."""
        files = self.tls_files
        if files is None:
            return []
        return [
            f"--private-key={files.client_key}",
            f"--certificate={files.client_cert}",
            f"--ca-cert={files.ca_cert}",
        ]

    def _model_schema_file(self) -> Path:
        """The generated schema of the model database (``nbdb schema ovsdb``), written once."""
        assert self.base_dir is not None
        path = self.base_dir / "nbdb.ovsschema"
        if not path.exists():
            from nbdb.backends.ovsdb import generate_schema

            path.write_text(json.dumps(generate_schema()))
        return path

    def _model_db(
        self, member_dir: Path, tool: str, index: int, raft: dict[str, dict[str, int]], names: list[str]
    ) -> list[str]:
        """With ``model_schema``: a second database for the nbdb models that have no OVN table.

        The schema is generated from the models defined when the server starts,
        so import them first. In a cluster it is a raft database of its own.
        """
        if not self.model_schema:
            return []
        schema_file = self._model_schema_file()
        db_file = member_dir / "nbdb.db"
        name = names[index]
        if not self.clustered:
            run_tool([tool, "create", str(db_file), str(schema_file)])
        elif index == 0:
            run_tool([tool, "create-cluster", str(db_file), str(schema_file), f"tcp:127.0.0.1:{raft[name]['raft2']}"])
        else:
            run_tool(
                [
                    tool,
                    "join-cluster",
                    str(db_file),
                    "nbdb",
                    f"tcp:127.0.0.1:{raft[name]['raft2']}",
                    f"tcp:127.0.0.1:{raft[names[0]]['raft2']}",
                ]
            )
        return [str(db_file)]

    @property
    def clustered(self) -> bool:
        """True for a raft cluster (even a one-member one is not built here)."""
        return self.size > 1

    def _tool(self, name: str) -> str:
        path = find_binary(name)
        assert path is not None
        return path

    def _prepare(self) -> None:
        schema = Path(self.schema) if self.schema is not None else find_ovn_nb_schema()
        if not schema.is_file():
            raise HarnessError(f"schema file {schema} does not exist")
        self.schema = str(schema)
        tool = self._tool("ovsdb-tool")
        self.database = run_tool([tool, "schema-name", str(schema)]).strip()
        if self.tls:
            assert self.base_dir is not None
            make_tls_files(self.base_dir / "tls")
        server_bin = self._tool("ovsdb-server")
        names = [f"ovsdb{i}" for i in range(1, self.size + 1)]
        ports: dict[str, dict[str, int]] = {}
        for n in names:
            ports[n] = {"client": self._alloc()}
            if self.clustered:
                ports[n]["raft"] = self._alloc()
                if self.model_schema:
                    ports[n]["raft2"] = self._alloc()
        for index, name in enumerate(names):
            member_dir = self._member_dir(name)
            db_file = member_dir / "db.db"
            try:
                if not self.clustered:
                    run_tool([tool, "create", str(db_file), str(schema)])
                elif index == 0:
                    run_tool(
                        [tool, "create-cluster", str(db_file), str(schema), f"tcp:127.0.0.1:{ports[name]['raft']}"]
                    )
                else:
                    run_tool(
                        [
                            tool,
                            "join-cluster",
                            str(db_file),
                            self.database,
                            f"tcp:127.0.0.1:{ports[name]['raft']}",
                            f"tcp:127.0.0.1:{ports[names[0]]['raft']}",
                        ]
                    )
                db_files = [str(db_file), *self._model_db(member_dir, tool, index, ports, names)]
            except subprocess.CalledProcessError as exc:
                raise HarnessError(f"ovsdb-tool failed: {exc.stderr.strip()}") from exc
            ctl = member_dir / "ovsdb.ctl"
            files = self.tls_files
            listener = f"{'pssl' if files else 'ptcp'}:{ports[name]['client']}:127.0.0.1"
            if self.clustered:
                remote_db, own = self._own_listener(member_dir, listener)
                db_files += own
            else:
                remote_db = self._listener_remote(db_file, listener)
            remote = [f"--remote={remote_db}"]
            if files is not None:
                remote += [
                    f"--private-key={files.server_key}",
                    f"--certificate={files.server_cert}",
                    f"--ca-cert={files.ca_cert}",
                ]
            extra = {"db_file": str(db_file), "ctl": str(ctl)}
            if self.unix:
                extra["unix"] = str(member_dir / "db.sock")
                remote.append(f"--remote=punix:{extra['unix']}")
            argv = _server_argv(server_bin, db_files, remote, ctl)
            self.members.append(
                Member(
                    self,
                    name,
                    host="127.0.0.1",
                    ports=ports[name],
                    data_dir=member_dir,
                    process=self._process(argv, member_dir),
                    extra=extra,
                )
            )
        self._prepare_relays(server_bin)

    def _schema_document(self) -> dict[str, Any]:
        assert self.schema is not None
        document: dict[str, Any] = json.loads(Path(self.schema).read_text())
        return document

    def _listener_remote(self, db_file: Path, listener: str, document: dict[str, Any] | None = None) -> str:
        """The ``--remote`` of the client listener: itself, or with a probe the connection row naming it.

        The row is written into ``db_file`` (of schema ``document``, by default the served one).
        """
        if self.inactivity_probe_ms is None:
            return listener
        document = document or self._schema_document()
        ops = _connection_ops(document, listener, self.inactivity_probe_ms)
        try:
            reply = run_tool([self._tool("ovsdb-tool"), "transact", str(db_file), json.dumps(ops)])
        except subprocess.CalledProcessError as exc:
            raise HarnessError(f"ovsdb-tool transact failed: {exc.stderr.strip()}") from exc
        # ovsdb-tool exits 0 when an operation fails: the error is in its reply.
        failed = [r for r in json.loads(reply) if isinstance(r, dict) and "error" in r]
        if failed:
            raise HarnessError(f"cannot write the connection row: {failed}")
        root, _ = _connection_table(document)
        return f"db:{document['name']},{root},connections"

    def _own_listener(self, server_dir: Path, listener: str) -> tuple[str, list[str]]:
        """The ``--remote`` of a member's or relay's listener, and the database files it adds (with a probe)."""
        if self.inactivity_probe_ms is None:
            return listener, []
        document = listener_schema(self._schema_document())
        schema_file = server_dir / "listener.ovsschema"
        db_file = server_dir / "listener.db"
        schema_file.write_text(json.dumps(document))
        try:
            run_tool([self._tool("ovsdb-tool"), "create", str(db_file), str(schema_file)])
        except subprocess.CalledProcessError as exc:
            raise HarnessError(f"ovsdb-tool create failed: {exc.stderr.strip()}") from exc
        return self._listener_remote(db_file, listener, document), [str(db_file)]

    def _prepare_relays(self, server_bin: str) -> None:
        """Relay servers whose source is every member (they follow the leader by themselves)."""
        if self.relays_count and self.tls:
            raise HarnessError("relays are supported without tls only")
        for _ in range(self.relays_count):
            self._relay(server_bin, [m.address for m in self.members])

    def _relay(self, server_bin: str, sources: Sequence[str]) -> Member:
        """A relay server (not started) of every database, following ``sources`` (``host:port``)."""
        name = f"relay{len(self.relays) + 1}"
        member_dir = self._member_dir(name)
        port = self._alloc()
        ctl = member_dir / "ovsdb.ctl"
        source = ",".join(f"tcp:{address}" for address in sources)
        databases = [str(self.database)] + (["nbdb"] if self.model_schema else [])
        relayed = [f"relay:{db}:{source}" for db in databases]
        remote, own = self._own_listener(member_dir, f"ptcp:{port}:127.0.0.1")
        argv = _server_argv(server_bin, [*relayed, *own], [f"--remote={remote}"], ctl)
        relay = Member(
            self,
            name,
            host="127.0.0.1",
            ports={"client": port},
            data_dir=member_dir,
            process=self._process(argv, member_dir),
            extra={"ctl": str(ctl), "relay": True},
        )
        self.relays.append(relay)
        return relay

    def add_relay(self, sources: Sequence[str] | None = None, timeout: float | None = None) -> Member:
        """Start one more relay, in front of the members or of ``sources`` (``host:port``), once ready.

        ``sources`` lets a test put a fault proxy between a relay and its
        source (``FaultProxy([...member addresses]).addresses``) to make that
        relay lag or lose its source while clients keep talking to it.
        """
        if not self._started or self.tls:
            raise HarnessError("add_relay() needs a started server without tls")
        relay = self._relay(self._tool("ovsdb-server"), list(sources or [m.address for m in self.members]))
        relay.process.start()
        relay.wait_ready(timeout)
        return relay

    def _start_members(self) -> None:
        super()._start_members()
        for relay in self.relays:
            relay.process.start()

    def ready(self) -> bool:
        return super().ready() and all(self.member_ready(r) for r in self.relays)

    def processes(self) -> list[Member]:
        # The relays last: restart_all starts their sources first.
        return [*self.members, *self.relays]

    def stop(self) -> None:
        for relay in self.relays:
            try:
                relay.process.kill()
            except HarnessError:
                log.exception("could not stop ovsdb relay %s", relay.name)
        super().stop()

    def cluster_status(self, member: Member, timeout: float = 2.0) -> str:
        """Text of ``ovs-appctl -t <ctl> cluster/status <db>`` for ``member``."""
        return run_tool(
            [
                self._tool("ovs-appctl"),
                f"--timeout={max(1, int(timeout))}",
                "-t",
                member.extra["ctl"],
                "cluster/status",
                str(self.database),
            ],
            timeout=timeout + 1,
        )

    def member_ready(self, member: Member) -> bool:
        dbs = run_tool(
            [self._tool("ovsdb-client"), "--timeout=2", *self._ssl_options(), "list-dbs", self._remote(member)],
            timeout=3,
        ).split()
        if self.database not in dbs:
            return False
        if member.extra.get("relay"):
            return self._relay_has_its_source(member)
        if not self.clustered:
            return True
        status = self.cluster_status(member)
        return "Status: cluster member" in status and not re.search(r"^Leader: unknown", status, re.M)

    def _relay_has_its_source(self, relay: Member) -> bool:
        """Whether every database ``relay`` relays is connected to its source and has its schema.

        A relay lists its databases and accepts clients before it reaches its source, and once
        it does it drops every client that did not ask to be told of database changes
        ("disconnecting (database OVN_Northbound connected to storage)"): a test's first client
        could be that one.
        """
        select = {"op": "select", "table": "Database", "where": [], "columns": ["model", "connected", "schema"]}
        reply = run_tool(
            [
                self._tool("ovsdb-client"),
                "--timeout=2",
                "transact",
                self._remote(relay),
                json.dumps(["_Server", select]),
            ],
            timeout=3,
        )
        rows = json.loads(reply)[0].get("rows", [])
        relayed = [row for row in rows if row.get("model") == "relay"]
        return bool(relayed) and all(
            row.get("connected") is True and row.get("schema") != ["set", []] for row in relayed
        )

    def leader(self) -> Member:
        """The raft leader (``Role: leader`` in ``cluster/status``); the server if standalone."""
        if not self.clustered:
            return self.members[0]
        errors: list[str] = []
        for member in self.members:
            if not member.is_running() or member.is_paused():
                continue
            try:
                status = self.cluster_status(member)
            except (subprocess.SubprocessError, OSError) as exc:
                errors.append(f"{member.name}: {exc}")
                continue
            if re.search(r"^Role: leader$", status, re.M):
                return member
        raise HarnessError(f"no ovsdb member is raft leader now ({errors or 'election running'})")

    def _remote(self, member: Member) -> str:
        return f"{'ssl' if self.tls else 'tcp'}:{member.address}"

    @property
    def remotes(self) -> str:
        """OVS-style remote list (``tcp:127.0.0.1:P1,...`` or ``ssl:…``) for ovsdb-client or ovn-nbctl.

        With ``tls``, the tools also need ``-p``/``-c``/``-C`` (or ``--private-key``,
        ``--certificate``, ``--ca-cert``) with the files of :attr:`tls_files`.
        """
        return ",".join(self._remote(m) for m in self.members)

    @property
    def url(self) -> str:
        """The nbdb URL clients use: the relays if any, else a unix socket with ``unix``, else the members."""
        if self.relays:
            return "ovsdb+tcp://" + ",".join(r.address for r in self.relays)
        if self.unix and self.members:
            return f"ovsdb+unix://{self.members[0].extra['unix']}"
        return self.members_url

    @property
    def members_url(self) -> str:
        """The nbdb URL of the members themselves (TCP or SSL), relays or not."""
        addresses = ",".join(m.address for m in self.members)
        files = self.tls_files
        if files is None:
            return "ovsdb+tcp://" + addresses
        query = "&".join(
            f"{name}={quote(str(path))}"
            for name, path in (
                ("private_key", files.client_key),
                ("certificate", files.client_cert),
                ("ca_cert", files.ca_cert),
            )
        )
        return f"ovsdb+ssl://{addresses}?{query}"

    def _extra_info(self) -> dict[str, Any]:
        files = self.tls_files
        return {
            "database": self.database,
            "schema": self.schema,
            "remotes": self.remotes,
            "tls": files.to_state() if files else None,
        }
