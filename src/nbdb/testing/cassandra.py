"""Apache Cassandra 5.0 from Maven Central jars, run on the machine's JDK 17."""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from nbdb.testing.base import Member, Server
from nbdb.testing.errors import INSTALL_HINT, HarnessError, ServerNotInstalledError
from nbdb.testing.jvm import maven_server_home, require_java
from nbdb.testing.probes import cql_query_ok, cql_rows_count

__all__ = ["JVM17_OPTIONS", "CassandraServer", "cassandra_home"]

log = logging.getLogger(__name__)

#: The module access flags of Cassandra 5.0's conf/jvm17-server.options, which the server
#: needs on JDK 17 (off-heap buffers, Unsafe, reflection into java.base internals).
JVM17_OPTIONS: tuple[str, ...] = (
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports", "java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports", "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-exports", "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-exports", "java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports", "java.sql/java.sql=ALL-UNNAMED",
    "--add-exports", "java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports", "jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens", "jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens", "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens", "java.base/java.io=ALL-UNNAMED",
    "--add-opens", "java.base/java.nio=ALL-UNNAMED",
    "--add-opens", "java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens", "java.base/java.util=ALL-UNNAMED",
    "--add-opens", "java.base/java.util.concurrent.atomic=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang=ALL-UNNAMED",
    "--add-opens", "java.base/java.math=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens", "java.base/java.net=ALL-UNNAMED",
)  # fmt: skip

#: Settings of conf/jvm-server.options and cassandra-env.sh that matter for a test node.
_JVM_SERVER_OPTIONS: tuple[str, ...] = (
    "-Xss256k",
    "-XX:+UseG1GC",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:+UseThreadPriorities",
    "-XX:+PerfDisableSharedMem",
    "-Djava.net.preferIPv4Stack=true",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dcassandra-foreground=yes",
    # Start fast: a throwaway node has no gossip to wait for and no superuser to delay.
    "-Dcassandra.skip_wait_for_gossip_to_settle=0",
    "-Dcassandra.superuser_setup_delay_ms=0",
)

_RING_DELAY_MS = {True: 1000, False: 30000}
"""Ring delay of a lone node / of a cluster member. A member joining a cluster gives up if the seed does not
answer its first gossip round within the ring delay: on a loaded machine that takes more than a second."""

_LOGBACK = """<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="${level}"><appender-ref ref="STDOUT"/></root>
</configuration>
"""


def cassandra_home() -> Path:
    """Directory with ``lib/`` (the jars) and ``VERSION``, as the install script fills it.

    ``$NBDB_CASSANDRA_HOME`` wins; else ``${NBDB_CACHE:-~/.cache/nbdb}/cassandra``.
    """
    return maven_server_home("cassandra")


class CassandraServer(Server):
    """Cassandra 5.0 on loopback: ``cassandra://127.0.0.1:PORT/nbdb``.

    One node by default; ``members=3`` starts three nodes on 127.0.0.1-3 (slow: kept out of
    the default test run). Readiness is a CQL native-protocol handshake plus a query of
    ``system.local``; then the ``keyspace`` is created (``SimpleStrategy``, replication
    factor ``min(3, members)``) unless ``create_keyspace`` is false. ``auth`` turns on
    ``PasswordAuthenticator`` with the default ``cassandra``/``cassandra`` superuser.
    ``durable`` syncs the commit log before acknowledging a write (``commitlog_sync: batch``);
    without it (Cassandra's default, periodic sync every 10 s) a ``kill -9`` loses the
    writes of the last seconds. ``heap`` is the JVM's maximum heap (``-Xmx``).
    """

    kind = "cassandra"
    binaries = (("java", "openjdk-17-jre-headless"),)
    default_timeout = 180.0
    option_names = ("keyspace", "create_keyspace", "auth", "heap", "durable")

    def __init__(
        self,
        *,
        keyspace: str = "nbdb",
        create_keyspace: bool = True,
        auth: bool = False,
        heap: str = "1g",
        durable: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.durable = durable
        self.keyspace = keyspace
        self.create_keyspace = create_keyspace
        self.auth = auth
        self.heap = heap

    @classmethod
    def check_installed(cls) -> None:
        require_java()
        lib = cassandra_home() / "lib"
        if not any(lib.glob("cassandra-all-*.jar")):
            raise ServerNotInstalledError(
                f"Cassandra jars not found in {lib} (they are fetched from Maven Central "
                f"with .ci/maven/cassandra/pom.xml); {INSTALL_HINT}"
            )

    @property
    def version(self) -> str:
        """The Cassandra version of the installed jars."""
        path = cassandra_home() / "VERSION"
        return path.read_text().strip() if path.is_file() else "unknown"

    @property
    def username(self) -> str | None:
        """CQL user when ``auth`` is on."""
        return "cassandra" if self.auth else None

    @property
    def password(self) -> str | None:
        """CQL password when ``auth`` is on."""
        return "cassandra" if self.auth else None

    def _jvm_argv(self, member_dir: Path, config: Path, logback: Path) -> list[str]:
        java = require_java()
        lib = cassandra_home() / "lib"
        jamm = sorted(lib.glob("jamm-*.jar"))
        return [
            java,
            f"-Xms{min_heap(self.heap)}",
            f"-Xmx{self.heap}",
            *_JVM_SERVER_OPTIONS,
            f"-Dcassandra.ring_delay_ms={_RING_DELAY_MS[self.size == 1]}",
            *JVM17_OPTIONS,
            *([f"-javaagent:{jamm[-1]}"] if jamm else []),
            f"-Dcassandra.config={config.as_uri()}",
            f"-Dcassandra.storagedir={member_dir}",
            f"-Dcassandra.logdir={member_dir}",
            f"-Dcassandra.triggers_dir={member_dir / 'triggers'}",
            f"-Dlogback.configurationFile={logback.as_uri()}",
            "-cp",
            f"{lib}/*",
            "org.apache.cassandra.service.CassandraDaemon",
        ]

    def _prepare(self) -> None:
        template = Template(resources.files("nbdb.testing").joinpath("data/cassandra.yaml").read_text())
        hosts = [f"127.0.0.{i}" for i in range(1, self.size + 1)]
        ports = [{"client": self._alloc(h), "storage": self._alloc(h), "ssl_storage": self._alloc(h)} for h in hosts]
        seeds = f"{hosts[0]}:{ports[0]['storage']}"
        for index, host in enumerate(hosts):
            name = f"cassandra{index + 1}"
            member_dir = self._member_dir(name)
            (member_dir / "triggers").mkdir(exist_ok=True)
            # Evenly spread single tokens over the Murmur3 ring.
            token = -(2**63) + index * (2**64 // self.size)
            config = member_dir / "cassandra.yaml"
            config.write_text(
                template.substitute(
                    cluster_name=f"nbdb-{self.base_dir.name if self.base_dir else 'test'}",
                    initial_token=str(token),
                    data_dir=str(member_dir),
                    seeds=seeds,
                    listen_address=host,
                    storage_port=ports[index]["storage"],
                    ssl_storage_port=ports[index]["ssl_storage"],
                    native_port=ports[index]["client"],
                    commitlog_sync=(
                        "commitlog_sync: batch"
                        if self.durable
                        else "commitlog_sync: periodic\ncommitlog_sync_period: 10000ms"
                    ),
                    authenticator="PasswordAuthenticator" if self.auth else "AllowAllAuthenticator",
                    authorizer="CassandraAuthorizer" if self.auth else "AllowAllAuthorizer",
                )
            )
            logback = member_dir / "logback.xml"
            logback.write_text(Template(_LOGBACK).substitute(level="INFO"))
            self.members.append(
                Member(
                    self,
                    name,
                    host=host,
                    ports=ports[index],
                    data_dir=member_dir,
                    process=self._process(self._jvm_argv(member_dir, config, logback), member_dir),
                    extra={"config": str(config)},
                )
            )

    def _start_members(self) -> None:
        # Nodes join one at a time: concurrent joins confuse token ownership.
        for member in self.members:
            member.process.start()
            member.wait_ready(self.timeout)

    def member_ready(self, member: Member) -> bool:
        return cql_query_ok(member.host, member.port, username=self.username, password=self.password)

    def ready(self) -> bool:
        if not super().ready():
            return False
        if self.size > 1:
            # Every node must see all the others as peers before tests rely on replication.
            for member in self.members:
                peers = cql_rows_count(
                    member.host,
                    member.port,
                    "SELECT peer FROM system.peers_v2",
                    username=self.username,
                    password=self.password,
                )
                if peers < self.size - 1:
                    return False
        return True

    def _after_ready(self) -> None:
        if not self.create_keyspace:
            return
        replication = min(3, self.size)
        query = (
            f"CREATE KEYSPACE IF NOT EXISTS {self.keyspace} WITH replication = "
            f"{{'class': 'SimpleStrategy', 'replication_factor': {replication}}}"
        )
        member = self.members[0]
        if not cql_query_ok(
            member.host, member.port, query, username=self.username, password=self.password, timeout=30.0
        ):
            raise HarnessError(f"could not create keyspace {self.keyspace}")

    def leader(self) -> Member:
        """Cassandra has no leader; a one-node server returns its node."""
        if self.size == 1:
            return self.members[0]
        raise HarnessError("Cassandra is leaderless: pick a member instead")

    @property
    def url(self) -> str:
        creds = "cassandra:cassandra@" if self.auth else ""
        hosts = ",".join(m.address for m in self.members)
        return f"cassandra://{creds}{hosts}/{self.keyspace}"

    def _extra_info(self) -> dict[str, Any]:
        return {
            "keyspace": self.keyspace,
            "version": self.version,
            "contact_points": [m.host for m in self.members],
            "username": self.username,
            "password": self.password,
        }


def min_heap(heap: str) -> str:
    """The initial heap: half of ``heap`` when it is given in g or m (a quicker start)."""
    unit = heap[-1].lower()
    if unit in "gm" and heap[:-1].isdigit():
        mib = int(heap[:-1]) * (1024 if unit == "g" else 1)
        return f"{max(256, mib // 2)}m"
    return heap
