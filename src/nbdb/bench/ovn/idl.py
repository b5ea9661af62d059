"""The raw ``ovs`` IDL, used as OVN's own Python clients use it (public API only)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from nbdb.bench.ovn.wire import NB, RawNb

__all__ = ["RawIdl"]

PORT_COLUMNS = ["name", "addresses", "port_security", "external_ids", "options", "type", "up", "enabled"]


class RawIdl:
    """An ``ovs.db.idl.Idl`` of ``Logical_Switch`` and ``Logical_Switch_Port``, run from this thread."""

    def __init__(self, url: str, remote: str) -> None:
        import ovs.db.idl

        wire = RawNb(url)
        try:
            schema = wire.call("get_schema", [NB])
        finally:
            wire.close()
        helper = ovs.db.idl.SchemaHelper(None, schema)
        helper.register_columns("Logical_Switch_Port", PORT_COLUMNS)
        helper.register_columns("Logical_Switch", ["name", "ports", "external_ids"])
        self.idl = ovs.db.idl.Idl(remote, helper)

    def run_until(self, done: Any, timeout: float) -> None:
        """Run the IDL until ``done()`` holds (TimeoutError after ``timeout`` seconds)."""
        import ovs.poller

        deadline = time.monotonic() + timeout
        while True:
            self.idl.run()
            if done():
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the IDL did not get there in time")
            poller = ovs.poller.Poller()
            self.idl.wait(poller)
            poller.timer_wait(100)
            poller.block()

    def catch_up(self) -> None:
        """Process every update already received (``run`` handles a bounded number per call)."""
        for _ in range(100_000):
            before = self.idl.change_seqno
            self.idl.run()
            if self.idl.change_seqno == before:
                return

    def ports(self) -> int:
        """How many ports the replica holds."""
        return len(self.idl.tables["Logical_Switch_Port"].rows)

    def create_ports(self, switch: uuid.UUID, names: list[str], namespace: str) -> None:
        """One IDL transaction inserting ports and adding them to the switch's set (as ``lsp-add``).

        Retried on "try again" (the IDL reconnected or its copy was behind), as IDL users do.
        """
        import ovs.db.idl

        deadline = time.monotonic() + 300
        for _attempt in range(30):
            # Monitoring again (an idle IDL may have been dropped by the server's probe and reconnected).
            left = max(1.0, deadline - time.monotonic())
            self.run_until(lambda: self.idl.state == self.idl.IDL_S_MONITORING and switch in self._switches(), left)
            self.catch_up()
            txn = ovs.db.idl.Transaction(self.idl)
            parent = self._switches()[switch]
            for index, name in enumerate(names):
                row = txn.insert(self.idl.tables["Logical_Switch_Port"])
                row.name = name
                mac = "0a:00:" + ":".join(f"{(index >> s) & 255:02x}" for s in (24, 16, 8, 0))
                row.addresses = [f"{mac} 10.9.{(index >> 8) & 255}.{index & 255}"]
                row.external_ids = {"nbdb:ns": namespace, "neutron:device_owner": "compute:nova"}
                parent.addvalue("ports", row.uuid)
            seqno = self.idl.change_seqno
            status = txn.commit_block()
            if status == ovs.db.idl.Transaction.SUCCESS:
                return
            if status != ovs.db.idl.Transaction.TRY_AGAIN:
                raise RuntimeError(f"IDL transaction failed: {status} {txn.get_error()}")
            # The IDL's documented protocol: wait for its copy to change before trying again
            # (after an idle spell the server's probe dropped the connection; the IDL reconnects
            # and loads the switch again, and a commit sent before that only asks to try again).
            self.run_until(
                lambda seqno=seqno: bool(self.idl.change_seqno != seqno), max(1.0, deadline - time.monotonic())
            )
        raise RuntimeError("IDL transaction kept asking to try again")

    def _switches(self) -> Any:
        return self.idl.tables["Logical_Switch"].rows

    def close(self) -> None:
        """Close the IDL's connection."""
        self.idl.close()
