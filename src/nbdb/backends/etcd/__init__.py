"""The etcd v3 backend (``etcd://``, ``etcd+https://``); see docs/backends/etcd.md.

Needs the ``etcd`` extra (``grpcio``). Importing this package does no work.
"""

from __future__ import annotations

from nbdb.backends.etcd._backend import EtcdBackend

__all__ = ["EtcdBackend"]
