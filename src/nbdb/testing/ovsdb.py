"""ovsdb-server: standalone or a raft cluster, with the OVN Northbound schema by default."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

from nbdb.testing.base import Member, Server
from nbdb.testing.errors import INSTALL_HINT, HarnessError, ServerNotInstalledError
from nbdb.testing.probes import run_tool
from nbdb.testing.process import find_binary
from nbdb.testing.tls import TlsFiles, make_tls_files

__all__ = ["OvsdbServer", "find_ovn_nb_schema"]

log = logging.getLogger(__name__)

_SCHEMA_DIRS = ("/usr/share/ovn", "/usr/local/share/ovn", "/usr/share/openvswitch")


def find_ovn_nb_schema() -> Path:
    """Path of the installed OVN Northbound schema (``$OVN_NB_SCHEMA`` wins)."""
    env = os.environ.get("OVN_NB_SCHEMA")
    candidates = [Path(env)] if env else []
    candidates += [Path(d) / "ovn-nb.ovsschema" for d in _SCHEMA_DIRS]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ServerNotInstalledError(
        f"OVN Northbound schema not found in {', '.join(map(str, candidates))} "
        f"(Debian package ovn-common); {INSTALL_HINT}"
    )


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
    """

    kind = "ovsdb"
    binaries = (
        ("ovsdb-server", "openvswitch-common"),
        ("ovsdb-tool", "openvswitch-common"),
        ("ovsdb-client", "openvswitch-common"),
        ("ovs-appctl", "openvswitch-common"),
    )
    default_timeout = 30.0
    option_names = ("schema", "database", "model_schema", "tls")

    def __init__(
        self,
        *,
        schema: str | Path | None = None,
        database: str | None = None,
        model_schema: bool = False,
        tls: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.schema = str(schema) if schema is not None else None
        self.database = database
        self.model_schema = model_schema
        self.tls = tls

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

    def _model_db(self, member_dir: Path, tool: str) -> list[str]:
        """With ``model_schema``: a second database for the nbdb models that have no OVN table.

        The schema is generated (``nbdb schema ovsdb``) from the models defined
        when the server starts, so import them first.
        """
        if not self.model_schema:
            return []
        if self.clustered:
            raise HarnessError("model_schema is supported on a standalone ovsdb-server only")
        from nbdb.backends.ovsdb import generate_schema

        schema_file = member_dir / "nbdb.ovsschema"
        schema_file.write_text(json.dumps(generate_schema()))
        db_file = member_dir / "nbdb.db"
        run_tool([tool, "create", str(db_file), str(schema_file)])
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
        ports = {n: {"client": self._alloc(), **({"raft": self._alloc()} if self.clustered else {})} for n in names}
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
                db_files = [str(db_file), *self._model_db(member_dir, tool)]
            except subprocess.CalledProcessError as exc:
                raise HarnessError(f"ovsdb-tool failed: {exc.stderr.strip()}") from exc
            ctl = member_dir / "ovsdb.ctl"
            files = self.tls_files
            if files is None:
                remote = [f"--remote=ptcp:{ports[name]['client']}:127.0.0.1"]
            else:
                remote = [
                    f"--remote=pssl:{ports[name]['client']}:127.0.0.1",
                    f"--private-key={files.server_key}",
                    f"--certificate={files.server_cert}",
                    f"--ca-cert={files.ca_cert}",
                ]
            argv = [
                server_bin,
                *db_files,
                *remote,
                f"--unixctl={ctl}",
                "--no-chdir",
                "-vconsole:info",
                "-vsyslog:off",
            ]
            self.members.append(
                Member(
                    self,
                    name,
                    host="127.0.0.1",
                    ports=ports[name],
                    data_dir=member_dir,
                    process=self._process(argv, member_dir),
                    extra={"db_file": str(db_file), "ctl": str(ctl)},
                )
            )

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
        if not self.clustered:
            return True
        status = self.cluster_status(member)
        return "Status: cluster member" in status and not re.search(r"^Leader: unknown", status, re.M)

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
