"""Neutron's client library, ovsdbapp, driving the ``ovs`` IDL from its own thread."""

from __future__ import annotations

from typing import Any

__all__ = ["OvsdbApp"]


class OvsdbApp:
    """``OvnNbApiIdlImpl`` on a connection of its own (every NB table registered, as Neutron does)."""

    def __init__(self, remote: str, timeout: float = 180.0) -> None:
        # 180 s: Neutron's default for ovsdbapp's connection (``[ovn] ovsdb_connection_timeout``),
        # which bounds the initial load of the IDL and every transaction.
        try:
            from ovsdbapp.backend.ovs_idl import connection
            from ovsdbapp.schema.ovn_northbound import impl_idl
        except ImportError as exc:
            raise LookupError(f"ovsdbapp is not installed (pip install 'nbdb[bench]'): {exc}") from None
        idl = connection.OvsdbIdl.from_server(remote, "OVN_Northbound")
        self._connection = connection.Connection(idl=idl, timeout=timeout)
        # ovsdbapp keeps the first connection on the API class (for the process's one database):
        # a class of our own per connection lets one process talk to several servers.
        api_class = type("OvnNbApi", (impl_idl.OvnNbApiIdlImpl,), {})
        self.api: Any = api_class(self._connection)

    def lsp_add(self, switch: str, name: str, addresses: list[str]) -> None:
        """``lsp_add`` then the addresses in the same transaction (as Neutron creates a port)."""
        with self.api.transaction(check_error=True) as txn:
            txn.add(self.api.lsp_add(switch, name))
            txn.add(self.api.lsp_set_addresses(name, addresses))

    def lsp_set_addresses(self, name: str, addresses: list[str]) -> None:
        """``lsp_set_addresses``."""
        self.api.lsp_set_addresses(name, addresses).execute(check_error=True)

    def lsp_del(self, name: str) -> None:
        """``lsp_del``."""
        self.api.lsp_del(name).execute(check_error=True)

    def close(self) -> None:
        """Stop ovsdbapp's IDL thread."""
        self._connection.stop()
