"""Sockets to an OVSDB server (TCP, TLS, unix) and the framing of its JSON stream.

RFC 7047 sends JSON-RPC messages back to back with no separator. orjson
parses and writes them; the standard library's ``json`` is the fallback for
what orjson refuses and ``json`` takes (``NaN``, ``Infinity``; on writing,
integers beyond 64 bits, which the server then refuses). OVSDB's integers are
64-bit and the server checks every value it stores, so no integer orjson would
read inexactly (beyond 64 bits, it reads a float) reaches the wire. The ``ovs`` package's parser is pure Python
and, measured on a 10,000-port monitor reply, about ten times slower than
``json``, which made cold loads and big updates cost most of their time in
parsing; orjson writes a transaction's request in about a twentieth of
``json.dumps``'s time and parses a small update several times faster (see
docs/benchmarks.md, "OVSDB on the wire: orjson").
"""

from __future__ import annotations

import json
import re
import socket
import ssl
from typing import Any

import orjson

from nbdb import errors
from nbdb.backends.ovsdb.url import Target

__all__ = ["JsonFramer", "dumps", "open_socket", "ssl_context"]

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_WS = b" \t\r\n"


def _default(value: Any) -> Any:
    """What ``json.dumps`` would also write for a value orjson does not know (a tuple's subclass)."""
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(message: Any) -> bytes:
    """``message`` as compact JSON bytes (what ``json.dumps(message, separators=(",", ":"))`` writes)."""
    try:
        return orjson.dumps(message, default=_default)
    except orjson.JSONEncodeError:
        # An integer beyond 64 bits: the server refuses it with its own error, as before.
        return json.dumps(message, separators=(",", ":")).encode()


def ssl_context(target: Target) -> ssl.SSLContext:
    """The client TLS context of ``target``: its key and certificate, trusting ``ca_cert`` only."""
    assert target.private_key is not None and target.certificate is not None and target.ca_cert is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Like OVS's own clients: the peer must chain to the CA; its name is not checked.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_verify_locations(cafile=target.ca_cert)
    except (ssl.SSLError, OSError) as exc:
        raise errors.ValidationError(f"ovsdb+ssl:// cannot load ca_cert {target.ca_cert!r}: {exc}") from None
    try:
        context.load_cert_chain(target.certificate, target.private_key)
    except (ssl.SSLError, OSError) as exc:
        raise errors.ValidationError(
            f"ovsdb+ssl:// cannot load certificate {target.certificate!r} with private_key "
            f"{target.private_key!r}: {exc}"
        ) from None
    return context


def tls_refused(remote: str, exc: BaseException) -> errors.AuthError:
    """The error of a server that ended the TLS session with an alert."""
    return errors.AuthError(
        f"the OVSDB server at {remote} refused the TLS connection: {exc} "
        "(is the client certificate signed by a CA the server trusts?)"
    )


def open_socket(target: Target, remote: str, timeout: float, context: ssl.SSLContext | None) -> socket.socket:
    """A connected, non-blocking socket to ``remote`` (TLS handshake done); errors translated.

    AuthError when TLS certificates are refused either way;
    BackendUnavailableError when the server cannot be reached.
    """
    try:
        if target.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(remote)
            except BaseException:
                sock.close()
                raise
        else:
            host, port = remote.rsplit(":", 1)
            sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if context is not None:
                try:
                    sock = context.wrap_socket(sock)
                except BaseException:
                    sock.close()
                    raise
    except ssl.SSLCertVerificationError as exc:
        raise errors.AuthError(
            f"TLS handshake with {remote} failed: {exc.verify_message} (is ca_cert the CA that signed the "
            "server's certificate?)"
        ) from None
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as exc:
        # A server that closes during the handshake is not (yet) serving TLS: retried.
        raise errors.BackendUnavailableError(f"TLS handshake with {remote} was cut: {exc}") from None
    except ssl.SSLError as exc:
        raise tls_refused(remote, exc) from None
    except OSError as exc:
        raise errors.BackendUnavailableError(f"cannot connect to OVSDB at {remote}: {exc}") from None
    sock.setblocking(False)
    return sock


class JsonFramer:
    """Splits a byte stream of concatenated JSON objects into parsed messages.

    A message is parsed once its braces balance and it ends in ``}``. The
    count is a hint — braces inside strings are counted too, to keep the scan
    at C speed — so when the socket has nothing more to read, :meth:`idle`
    checks the exact balance (strings stripped) before trying: at once when
    forced (the connection has been quiet for a while), else only once the
    buffer has doubled since the last check, so a big message trickling in
    is not re-scanned for every chunk.
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._balance = 0
        self._checked = 0
        self._closing = False
        """Whether the buffer, blanks aside, ends in ``}`` (a chunk of blanks alone leaves it as it was)."""

    @property
    def buffered(self) -> int:
        """Bytes of a message not complete yet."""
        return self._size

    def feed(self, data: bytes) -> list[Any]:
        """Messages completed by ``data``."""
        self._parts.append(data)
        self._size += len(data)
        self._balance += data.count(b"{") - data.count(b"}")
        tail = data.rstrip(_WS)
        if tail:
            self._closing = tail.endswith(b"}")
        if self._balance != 0 or not self._closing:
            return []
        return self._parse()

    def idle(self, force: bool = False) -> list[Any]:
        """Messages complete in the buffer whatever the hint says (the sender paused)."""
        if not self._parts or not self._closing:
            return []
        if not force and self._size < 2 * self._checked:
            return []
        self._checked = self._size
        buffer = b"".join(self._parts)
        self._parts = [buffer]
        stripped = _STRING.sub(b"", buffer)
        if stripped.count(b"{") != stripped.count(b"}"):
            return []
        return self._parse()

    def _parse(self) -> list[Any]:
        # Not ``json.loads`` first: a transaction's update and its reply mostly arrive in one
        # read, and ``loads`` parses the whole update before it refuses the reply after it
        # ("extra data"), so every such update was parsed twice.
        return self._split(b"".join(self._parts))

    def _split(self, buffer: bytes) -> list[Any]:
        """The messages complete in ``buffer`` (one, several, or none: an incomplete one whose braces balanced)."""
        # A commit's update and its reply mostly arrive in one read, back to back: split where the
        # first "}{" is. A JSON value's end is fixed by its own bytes, so a cut there parses only
        # when it is the first message's end (a "}{" inside a string of it leaves it unparsed, and
        # the path below decides): no parse of the whole read that fails on the second message.
        ahead: list[Any] = []
        while (cut := buffer.find(b"}{") + 1) > 0:
            try:
                ahead.append(orjson.loads(buffer[:cut]))
            except orjson.JSONDecodeError:
                break
            buffer = buffer[cut:]
        try:
            # Most reads hold one whole message (a big one always alone): parsed once, from the bytes.
            message = orjson.loads(buffer)
        except orjson.JSONDecodeError as exc:
            stop: int | None = exc.pos
        else:
            self._keep(b"")
            ahead.append(message)
            return ahead
        # The buffer ends in "}", so it never ends inside a character: bytes that do not decode
        # are the peer's fault, and waiting for more would stall the connection for good.
        try:
            text = buffer.decode()
        except UnicodeDecodeError as exc:
            raise ValueError(f"the peer sent a message that is not UTF-8 ({exc.reason} at byte {exc.start})") from exc
        out: list[Any] = ahead
        index = 0
        while True:
            while index < len(text) and text[index] in " \t\r\n":
                index += 1
            if index >= len(text):
                break
            if stop is None:
                try:
                    out.append(orjson.loads(text[index:]))
                except orjson.JSONDecodeError as exc:
                    stop = index + exc.pos
                else:
                    index = len(text)
                    break
            found = _first(text, index, stop)
            stop = None
            if found is None:
                break
            message, index = found
            out.append(message)
        self._keep(text[index:].encode())
        return out

    def _keep(self, rest: bytes) -> None:
        """Keep ``rest``, the start of a message not complete yet, as the whole buffer."""
        self._parts = [rest] if rest else []
        self._size = len(rest)
        self._balance = rest.count(b"{") - rest.count(b"}")
        self._checked = 0
        self._closing = rest.rstrip(_WS).endswith(b"}")


_DECODER = json.JSONDecoder()


def _first(text: str, index: int, stop: int) -> tuple[Any, int] | None:
    """The message starting at ``text[index]`` and the index after it; None when it is not complete (or not JSON).

    ``stop`` is where orjson, parsing the whole rest, stopped: the end of the
    first message when another one follows it (the usual case: a transaction's
    update and its reply arrive in one read), so that message alone is parsed
    again. Only the exact first message parses as a whole document; any other
    cut fails, and the standard decoder then decides (an incomplete message,
    or one orjson refuses: ``NaN``, ``Infinity``).
    """
    if index < stop < len(text):
        try:
            return orjson.loads(text[index:stop]), stop
        except orjson.JSONDecodeError:
            pass
    try:
        return _DECODER.raw_decode(text, index)
    except ValueError:
        return None
