"""Hazelcast 5 (open source) members from the Maven Central jar, run on the machine's JDK 17."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from nbdb.testing.base import Member, Server
from nbdb.testing.errors import INSTALL_HINT, HarnessError, ServerNotInstalledError
from nbdb.testing.jvm import maven_server_home, require_java

__all__ = ["HazelcastServer", "hazelcast_home", "member_health", "member_jar"]

log = logging.getLogger(__name__)

#: Module access Hazelcast asks for on JDK 17 (its own start-up warning lists them).
_JVM17_OPTIONS: tuple[str, ...] = (
    "--add-modules", "java.se",
    "--add-exports", "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang=ALL-UNNAMED",
    "--add-opens", "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens", "java.management/sun.management=ALL-UNNAMED",
    "--add-opens", "jdk.management/com.sun.management.internal=ALL-UNNAMED",
)  # fmt: skip

#: A small, quick member for a shared 2-core machine: serial GC, C1 only, IPv4.
_JVM_OPTIONS: tuple[str, ...] = (
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xss512k",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.net.preferIPv4Stack=true",
)

# Loopback only: TCP-IP join on the listed ports (no multicast, no cloud discovery), bound to
# 127.0.0.1 alone. Failure detection within ~5 s so that a killed member's partitions move
# to their backups quickly. The REST API serves the health-check group only (readiness).
_CONFIG = """hazelcast:
  cluster-name: {cluster_name}
  properties:
    hazelcast.phone.home.enabled: false
    hazelcast.socket.bind.any: false
    hazelcast.partition.count: {partitions}
    hazelcast.heartbeat.interval.seconds: 1
    hazelcast.max.no.heartbeat.seconds: 3
    hazelcast.client.max.no.heartbeat.seconds: 10
    hazelcast.logging.type: jdk
  network:
    public-address: 127.0.0.1:{port}
    port:
      auto-increment: false
      port: {port}
    reuse-address: true
    interfaces:
      enabled: true
      interfaces:
        - 127.0.0.1
    join:
      auto-detection:
        enabled: false
      multicast:
        enabled: false
      tcp-ip:
        enabled: true
        member-list:
{members}
    rest-api:
      enabled: true
      endpoint-groups:
        HEALTH_CHECK:
          enabled: true
  jet:
    enabled: false
{serialization}  map:
    default:
      backup-count: {backup_count}
      async-backup-count: 0
"""


def hazelcast_home() -> Path:
    """Directory with ``lib/hazelcast-*.jar`` and ``VERSION``, as the install script fills it.

    ``$NBDB_HAZELCAST_HOME`` wins; else ``${NBDB_CACHE:-~/.cache/nbdb}/hazelcast``.
    """
    return maven_server_home("hazelcast")


#: nbdb's member-side code (java/hazelcast-member): its serializer factory, in the member config.
_SERIALIZATION = """  serialization:
    data-serializable-factories:
      - factory-id: 7301
        class-name: io.nbdb.hazelcast.NbdbFactory
"""


def member_jar() -> Path:
    """nbdb's member-side jar (java/hazelcast-member), as the install script builds it."""
    return hazelcast_home() / "nbdb" / "nbdb-hazelcast-member.jar"


def member_health(host: str, port: int, timeout: float = 2.0) -> dict[str, Any] | None:
    """The member's ``/hazelcast/health`` document, or None if it does not answer (yet)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/hazelcast/health", timeout=timeout) as response:
            health: dict[str, Any] = json.loads(response.read().decode())
            return health
    except (OSError, ValueError, urllib.error.URLError):
        return None


class HazelcastServer(Server):
    """Hazelcast members on loopback: ``hazelcast://127.0.0.1:P1[,…]/<cluster_name>``.

    One member by default; ``members=3`` starts three that join by TCP-IP on their loopback
    ports. Every map keeps ``backup_count`` synchronous backups (default 1: a cluster of 3
    loses nothing when one member dies). The open-source server keeps data in memory only:
    a member's restart brings it back empty, and it refills from the others' backups.
    ``cluster_name`` is the one shared secret the open-source server checks. Readiness: every
    member's health endpoint says ``ACTIVE``, sees the whole cluster and is migration-safe.
    ``member_code`` (default on) deploys nbdb's member-side jar (:func:`member_jar`) on the
    members' classpath and registers its serializer factory, so commits run in one round trip;
    off, the members are stock and clients commit with their own six-round-trip protocol.
    """

    kind = "hazelcast"
    binaries = (("java", "openjdk-17-jre-headless"),)
    default_timeout = 90.0
    option_names = ("cluster_name", "heap", "backup_count", "partitions", "member_code")

    def __init__(
        self,
        *,
        cluster_name: str = "nbdb",
        heap: str = "192m",
        backup_count: int = 1,
        partitions: int = 71,
        member_code: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.member_code = member_code
        self.cluster_name = cluster_name
        self.heap = heap
        self.backup_count = backup_count
        self.partitions = partitions

    @classmethod
    def check_installed(cls) -> None:
        require_java()
        if not any((hazelcast_home() / "lib").glob("hazelcast-*.jar")):
            raise ServerNotInstalledError(
                f"Hazelcast jar not found in {hazelcast_home() / 'lib'} (it is fetched from Maven Central "
                f"with .ci/maven/hazelcast/pom.xml); {INSTALL_HINT}"
            )

    @property
    def version(self) -> str:
        """The Hazelcast version of the installed jar."""
        path = hazelcast_home() / "VERSION"
        return path.read_text().strip() if path.is_file() else "unknown"

    def _prepare(self) -> None:
        ports = [self._alloc() for _ in range(self.size)]
        listed = "\n".join(f"          - 127.0.0.1:{p}" for p in ports)
        java = require_java()
        classpath = [f"{hazelcast_home() / 'lib'}/*"]
        serialization = ""
        if self.member_code:
            if member_jar().is_file():
                classpath.append(str(member_jar()))
                serialization = _SERIALIZATION
            else:
                log.warning("hazelcast: %s is missing (built by .ci/install-servers.sh): stock members", member_jar())
        for index, port in enumerate(ports):
            name = f"hazelcast{index + 1}"
            member_dir = self._member_dir(name)
            config = member_dir / "hazelcast.yaml"
            config.write_text(
                _CONFIG.format(
                    cluster_name=self.cluster_name,
                    port=port,
                    members=listed,
                    backup_count=self.backup_count,
                    partitions=self.partitions,
                    serialization=serialization,
                )
            )
            argv = [
                java,
                f"-Xms{self.heap}",
                f"-Xmx{self.heap}",
                *_JVM_OPTIONS,
                *_JVM17_OPTIONS,
                f"-Dhazelcast.config={config}",
                "-cp",
                ":".join(classpath),
                "com.hazelcast.core.server.HazelcastMemberStarter",
            ]
            self.members.append(
                Member(
                    self,
                    name,
                    host="127.0.0.1",
                    ports={"client": port},
                    data_dir=member_dir,
                    process=self._process(argv, member_dir),
                    extra={"config": str(config)},
                )
            )

    def member_ready(self, member: Member) -> bool:
        health = member_health(member.host, member.port)
        return health is not None and health.get("nodeState") == "ACTIVE"

    def ready(self) -> bool:
        running = [m for m in self.members if m.is_running()]
        for member in running:
            health = member_health(member.host, member.port)
            if (
                health is None
                or health.get("nodeState") != "ACTIVE"
                or health.get("clusterSize") != len(running)
                or not health.get("clusterSafe")
            ):
                return False
        return bool(running)

    def leader(self) -> Member:
        """A one-member server returns its member; a cluster has no data leader (raises).

        Every member owns some partitions and backs up others; pick a member instead.
        """
        if self.size == 1:
            return self.members[0]
        raise HarnessError("Hazelcast partitions have no single leader: pick a member instead")

    @property
    def url(self) -> str:
        hosts = ",".join(m.address for m in self.members)
        return f"hazelcast://{hosts}/{self.cluster_name}"

    def _extra_info(self) -> dict[str, Any]:
        return {
            "cluster_name": self.cluster_name,
            "version": self.version,
            "backup_count": self.backup_count,
        }
