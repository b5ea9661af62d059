"""The etcd v3 backend (``etcd://``, ``etcd+https://``); see docs/backends/etcd.md.

Needs the ``etcd`` extra (``grpcio``). Importing this package does no work.
"""

from __future__ import annotations

from nbdb.backends.etcd.backend import EtcdBackend
from nbdb.backends.etcd.client import EtcdClient, EtcdSettings

__all__ = ["EtcdBackend", "EtcdClient", "EtcdSettings"]
