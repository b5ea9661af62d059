"""etcd v3: a single member or a cluster of ``members`` (3 for fault tests)."""

from __future__ import annotations

import logging
from typing import Any

from nbdb.testing.base import Member, Server
from nbdb.testing.errors import HarnessError
from nbdb.testing.probes import http_json
from nbdb.testing.process import find_binary

__all__ = ["EtcdServer"]

log = logging.getLogger(__name__)


class EtcdServer(Server):
    """etcd on loopback: ``etcd://127.0.0.1:P`` or ``etcd://127.0.0.1:P1,127.0.0.1:P2,...``.

    Readiness is the member's ``/health`` endpoint (true only once the cluster has a
    leader); :meth:`leader` asks the v3 maintenance status of a member that answers.
    Election timing is shortened (heartbeat 50 ms, election 500 ms) so failover tests are
    quick. ``quota_bytes`` raises the backend's size quota (``--quota-backend-bytes``; etcd's
    own default of 2 GiB when None, and etcd suggests at most 8 GiB): a benchmark of a million
    ports, four keys each, needs more than 2 GiB.
    """

    kind = "etcd"
    binaries = (("etcd", "etcd-server"),)
    default_timeout = 30.0
    option_names = ("heartbeat_ms", "election_ms", "quota_bytes")

    def __init__(
        self, *, heartbeat_ms: int = 50, election_ms: int = 500, quota_bytes: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.quota_bytes = quota_bytes

    def _prepare(self) -> None:
        binary = find_binary("etcd")
        assert binary is not None and self.base_dir is not None
        names = [f"etcd{i}" for i in range(1, self.size + 1)]
        ports = {name: {"client": self._alloc(), "peer": self._alloc()} for name in names}
        initial = ",".join(f"{n}=http://127.0.0.1:{ports[n]['peer']}" for n in names)
        token = f"nbdb-{self.base_dir.name}"
        for name in names:
            member_dir = self._member_dir(name)
            client = f"http://127.0.0.1:{ports[name]['client']}"
            peer = f"http://127.0.0.1:{ports[name]['peer']}"
            argv = [
                binary,
                "--name", name,
                "--data-dir", str(member_dir / "data"),
                "--listen-client-urls", client,
                "--advertise-client-urls", client,
                "--listen-peer-urls", peer,
                "--initial-advertise-peer-urls", peer,
                "--initial-cluster", initial,
                "--initial-cluster-token", token,
                "--initial-cluster-state", "new",
                "--heartbeat-interval", str(self.heartbeat_ms),
                "--election-timeout", str(self.election_ms),
                "--logger", "zap",
                "--log-outputs", "stderr",
            ]  # fmt: skip
            if self.quota_bytes is not None:
                argv += ["--quota-backend-bytes", str(self.quota_bytes)]
            self.members.append(
                Member(
                    self,
                    name,
                    host="127.0.0.1",
                    ports=ports[name],
                    data_dir=member_dir,
                    process=self._process(argv, member_dir),
                    extra={"client_url": client, "peer_url": peer},
                )
            )

    def member_ready(self, member: Member) -> bool:
        reply = http_json(f"http://{member.address}/health")
        return bool(reply.get("health") == "true")

    def status(self, member: Member, timeout: float = 2.0) -> dict[str, Any]:
        """The member's v3 ``Maintenance.Status`` (``header.member_id``, ``leader``...)."""
        reply: dict[str, Any] = http_json(f"http://{member.address}/v3/maintenance/status", {}, timeout=timeout)
        return reply

    def leader(self) -> Member:
        """The member that is the raft leader, as a reachable member reports it."""
        errors: list[str] = []
        statuses: dict[str, dict[str, Any]] = {}
        for member in self.members:
            if not member.is_running() or member.is_paused():
                continue
            try:
                statuses[member.name] = self.status(member)
            except OSError as exc:
                errors.append(f"{member.name}: {exc}")
        ids = {str(s["header"]["member_id"]): name for name, s in statuses.items()}
        for status in statuses.values():
            leader_id = str(status.get("leader", "0"))
            if leader_id in ids:
                return self.member(ids[leader_id])
        raise HarnessError(f"no etcd member reports a reachable leader ({errors or 'no leader'})")

    @property
    def url(self) -> str:
        return "etcd://" + ",".join(m.address for m in self.members)

    def _extra_info(self) -> dict[str, Any]:
        return {"endpoints": [m.extra["client_url"] for m in self.members]}
