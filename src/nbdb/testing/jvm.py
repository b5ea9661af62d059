"""What the Java servers of the harness share: the JDK and the Maven-fetched jar directories."""

from __future__ import annotations

import os
from pathlib import Path

from nbdb.testing.errors import INSTALL_HINT, ServerNotInstalledError
from nbdb.testing.process import find_binary

__all__ = ["find_java", "maven_server_home", "require_java"]


def find_java() -> str | None:
    """The ``java`` of ``$JAVA_HOME``, else the one on PATH, or None."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    return find_binary("java")


def require_java() -> str:
    """The ``java`` executable, or :class:`ServerNotInstalledError` naming the Debian package."""
    java = find_java()
    if java is None:
        raise ServerNotInstalledError(f"'java' not found (Debian package openjdk-17-jre-headless); {INSTALL_HINT}")
    return java


def maven_server_home(name: str) -> Path:
    """Directory with ``lib/`` (the jars) and ``VERSION`` of a server fetched from Maven Central.

    ``.ci/install-servers.sh`` fills ``${NBDB_CACHE:-~/.cache/nbdb}/<name>``;
    ``$NBDB_<NAME>_HOME`` points the harness at another directory of the same layout.
    """
    env = os.environ.get(f"NBDB_{name.upper()}_HOME")
    if env:
        return Path(env)
    cache = os.environ.get("NBDB_CACHE") or str(Path.home() / ".cache" / "nbdb")
    return Path(cache) / name
