"""``ovsdb+tcp://``, ``ovsdb+ssl://`` and ``ovsdb+unix://`` URLs, parsed into a :class:`Target`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from nbdb import errors
from nbdb.options import Options

__all__ = ["DEFAULT_MODEL_DB", "DEFAULT_NB", "Target", "parse_url"]

DEFAULT_NB = "OVN_Northbound"
DEFAULT_MODEL_DB = "nbdb"
_OPTIONS = frozenset({"database", "model_db", "timeout", "probe", "private_key", "certificate", "ca_cert", "namespace"})


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how to connect: the remotes of one database (a server, a raft cluster or relays)."""

    scheme: str
    """``tcp``, ``ssl`` or ``unix``."""
    remotes: tuple[str, ...]
    """``host:port`` each, or one socket path."""
    database: str
    model_db: str
    timeout: float
    probe: float
    """Seconds of silence after which the connection is probed (and dropped after twice as long)."""
    private_key: str | None
    certificate: str | None
    ca_cert: str | None
    namespace: str

    def describe(self) -> str:
        """The remotes as a URL without options (no secrets), for logs and errors."""
        return f"ovsdb+{self.scheme}://" + ",".join(self.remotes)


def parse_url(url: str, options: dict[str, Any]) -> Target:
    """The :class:`Target` of an OVSDB URL plus keyword options (keywords win); ValidationError if bad."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("ovsdb+tcp", "ovsdb+ssl", "ovsdb+unix"):
        raise errors.ValidationError(f"not an OVSDB URL: {url!r} (want ovsdb+tcp://, ovsdb+ssl:// or ovsdb+unix://)")
    opts = Options.from_url(
        parts.query,
        {k: str(v) for k, v in options.items() if v is not None},
        _OPTIONS,
        "ovsdb",
        keep_blank_values=False,
    )
    kind = scheme.split("+")[1]
    if kind == "unix":
        path = unquote(parts.netloc + parts.path)
        if not path:
            raise errors.ValidationError("ovsdb+unix:// needs a socket path: ovsdb+unix:///var/run/ovn/ovnnb_db.sock")
        remotes: tuple[str, ...] = (path,)
        database = opts.text("database", DEFAULT_NB)
    else:
        hosts = [h.strip() for h in parts.netloc.split(",") if h.strip()]
        if not hosts:
            raise errors.ValidationError(f"{scheme}:// needs host:port")
        for host in hosts:
            if ":" not in host or not host.rsplit(":", 1)[1].isdigit():
                raise errors.ValidationError(f"{scheme}:// remote {host!r} is not host:port")
        remotes = tuple(hosts)
        database = parts.path.strip("/") or opts.text("database", DEFAULT_NB)
    target = Target(
        kind,
        remotes,
        database,
        opts.text("model_db") or DEFAULT_MODEL_DB,
        opts.number("timeout", 20.0, minimum=0.001),
        opts.number("probe", 3.0, minimum=0.05),
        opts.text("private_key"),
        opts.text("certificate"),
        opts.text("ca_cert"),
        opts.text("namespace", ""),
    )
    if kind == "ssl" and not (target.private_key and target.certificate and target.ca_cert):
        raise errors.ValidationError("ovsdb+ssl:// needs private_key, certificate and ca_cert (query or options)")
    for tls_file in (target.private_key, target.certificate, target.ca_cert):
        if tls_file is not None and not os.path.isfile(tls_file):
            raise errors.ValidationError(f"ovsdb+ssl:// file {tls_file!r} does not exist")
    return target
