"""Readiness probes speaking each server's own protocol, with no client library.

The harness must work before nbdb's backends (and their client libraries) are installed,
so it carries just enough of RESP, HTTP/JSON and the CQL native protocol to ask a server
whether it is really serving.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import subprocess
import urllib.request
from typing import Any

__all__ = [
    "CqlError",
    "RespError",
    "cql_query",
    "cql_query_ok",
    "cql_rows_count",
    "http_json",
    "resp_command",
    "run_tool",
]


class RespError(Exception):
    """A Redis error reply (``-ERR ...``)."""


class CqlError(Exception):
    """A CQL ERROR frame or an unexpected CQL reply."""


def _connect(host: str, port: int, timeout: float, ssl_context: ssl.SSLContext | None) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    if ssl_context is not None:
        return ssl_context.wrap_socket(sock, server_hostname=host)
    return sock


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by server")
        self.buf += chunk

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def reply(self) -> Any:
        line = self.line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.exact(size + 2)[:-2]
            return data.decode("utf-8", "replace")
        if kind == b"*":
            count = int(rest)
            if count < 0:
                return None
            return [self.reply() for _ in range(count)]
        raise RespError(f"unexpected RESP reply {line[:40]!r}")


def _encode(args: tuple[str | int, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def resp_command(
    host: str,
    port: int,
    *args: str | int,
    username: str | None = None,
    password: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 2.0,
) -> Any:
    """Send one Redis command (after AUTH when credentials are given); return its reply."""
    with _connect(host, port, timeout, ssl_context) as sock:
        reader = _Reader(sock)
        if password is not None:
            auth: tuple[str, ...] = ("AUTH", username, password) if username else ("AUTH", password)
            sock.sendall(_encode(auth))
            reader.reply()
        sock.sendall(_encode(args))
        return reader.reply()


def http_json(
    url: str,
    body: dict[str, Any] | None = None,
    *,
    timeout: float = 2.0,
    ssl_context: ssl.SSLContext | None = None,
) -> Any:
    """GET (or POST ``body`` as JSON to) ``url`` and decode the JSON reply."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout, context=ssl_context) as response:
        return json.loads(response.read().decode())


def run_tool(argv: list[str], timeout: float = 5.0) -> str:
    """Run a server's CLI tool; return stdout, raise ``CalledProcessError`` on failure."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, argv, output=result.stdout, stderr=result.stderr)
    return result.stdout


# --- CQL native protocol v4: just OPTIONS, STARTUP, AUTH_RESPONSE and QUERY ----------------

_CQL_VERSION = 0x04
_OP_ERROR, _OP_STARTUP, _OP_READY, _OP_AUTHENTICATE = 0x00, 0x01, 0x02, 0x03
_OP_OPTIONS, _OP_SUPPORTED, _OP_QUERY, _OP_RESULT = 0x05, 0x06, 0x07, 0x08
_OP_AUTH_RESPONSE, _OP_AUTH_SUCCESS = 0x0F, 0x10
_CONSISTENCY_ONE = 0x0001


def _cql_string(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">H", len(data)) + data


def _cql_long_string(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">i", len(data)) + data


class _CqlConnection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = _Reader(sock)
        self.stream = 0

    def request(self, opcode: int, body: bytes = b"") -> tuple[int, bytes]:
        self.stream += 1
        header = struct.pack(">BBhBi", _CQL_VERSION, 0, self.stream, opcode, len(body))
        self.sock.sendall(header + body)
        _version, _flags, _stream, op, length = struct.unpack(">BBhBi", self.reader.exact(9))
        payload = self.reader.exact(length)
        if op == _OP_ERROR:
            code = struct.unpack(">i", payload[:4])[0]
            (size,) = struct.unpack(">H", payload[4:6])
            raise CqlError(f"CQL error 0x{code:04x}: {payload[6 : 6 + size].decode()}")
        return op, payload


def cql_query(
    host: str,
    port: int,
    query: str,
    *,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 3.0,
) -> bytes:
    """Handshake with a CQL server, run ``query`` and return the RESULT frame's body."""
    with _connect(host, port, timeout, None) as sock:
        conn = _CqlConnection(sock)
        op, _ = conn.request(_OP_OPTIONS)
        if op != _OP_SUPPORTED:
            raise CqlError(f"OPTIONS answered with opcode {op:#x}")
        startup = struct.pack(">H", 1) + _cql_string("CQL_VERSION") + _cql_string("3.0.0")
        op, _ = conn.request(_OP_STARTUP, startup)
        if op == _OP_AUTHENTICATE:
            if username is None or password is None:
                raise CqlError("server requires authentication")
            token = b"\0" + username.encode() + b"\0" + password.encode()
            op, _ = conn.request(_OP_AUTH_RESPONSE, struct.pack(">i", len(token)) + token)
            if op != _OP_AUTH_SUCCESS:
                raise CqlError(f"AUTH_RESPONSE answered with opcode {op:#x}")
        elif op != _OP_READY:
            raise CqlError(f"STARTUP answered with opcode {op:#x}")
        body = _cql_long_string(query) + struct.pack(">HB", _CONSISTENCY_ONE, 0)
        op, payload = conn.request(_OP_QUERY, body)
        if op != _OP_RESULT:
            raise CqlError(f"QUERY answered with opcode {op:#x}")
        return payload


def cql_query_ok(
    host: str,
    port: int,
    query: str = "SELECT release_version FROM system.local",
    *,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 3.0,
) -> bool:
    """Handshake with a CQL server and run ``query``; True when it returns a RESULT."""
    cql_query(host, port, query, username=username, password=password, timeout=timeout)
    return True


def cql_rows_count(
    host: str,
    port: int,
    query: str,
    *,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 3.0,
) -> int:
    """Number of rows ``query`` returns (its columns must be of simple CQL types)."""
    body = cql_query(host, port, query, username=username, password=password, timeout=timeout)
    kind, flags, columns = struct.unpack(">iii", body[:12])
    if kind != 0x0002:
        raise CqlError(f"query returned result kind {kind}, not rows")
    pos = 12

    def skip_string() -> None:
        nonlocal pos
        (size,) = struct.unpack(">H", body[pos : pos + 2])
        pos += 2 + size

    if flags & 0x0002:  # has_more_pages: paging state [bytes]
        (size,) = struct.unpack(">i", body[pos : pos + 4])
        pos += 4 + max(0, size)
    if not flags & 0x0004:  # metadata present
        global_spec = bool(flags & 0x0001)
        if global_spec:
            skip_string()
            skip_string()
        for _ in range(columns):
            if not global_spec:
                skip_string()
                skip_string()
            skip_string()
            (type_id,) = struct.unpack(">H", body[pos : pos + 2])
            pos += 2
            if type_id == 0x0000 or type_id >= 0x0020:
                raise CqlError("cql_rows_count supports simple column types only")
    (rows,) = struct.unpack(">i", body[pos : pos + 4])
    return int(rows)
