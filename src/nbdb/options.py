"""Reading a backend's URL: typed options, host lists, credentials, and redaction for logs.

Every backend's ``from_url(url, **options)`` takes its settings the same way:
the URL's query string merged with :func:`nbdb.connect`'s keyword options
(keywords win), unknown names refused, each value read with the type it must
have. A bad value is a :class:`nbdb.ValidationError` that names the option and
the backend, never a ``ValueError`` from deep inside a client library::

    opts = Options.from_url(parts.query, keywords, {"timeout", "tls"}, label="etcd://")
    timeout = opts.number("timeout", 5.0, minimum=0.05)
    tls = opts.flag("tls", False)
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar, overload
from urllib.parse import parse_qs, unquote

from nbdb import errors
from nbdb.retry import RetryPolicy

__all__ = ["Options", "check_tls_files", "check_unicode", "redact", "split_hosts", "split_userinfo"]

T = TypeVar("T")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_SECRET_OPTIONS = re.compile(r"([?&][A-Za-z_]*(?:password|secret|token)=)[^&]*", re.IGNORECASE)
_MISSING: Any = object()


def redact(url: str) -> str:
    """``url`` with any password (in the authority or the query) replaced by ``***``, for logs and errors."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority = rest.split("/", 1)[0].split("?", 1)[0]
    if "@" in authority:
        creds, _, host = rest.partition("@")
        rest = f"{creds.split(':', 1)[0]}:***@{host}"
    return scheme + "://" + _SECRET_OPTIONS.sub(r"\1***", rest)


def split_userinfo(netloc: str) -> tuple[str | None, str | None, str]:
    """``user:password@hosts`` -> (user, password, hosts); missing parts are None (percent-decoded)."""
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        return None, None, netloc
    name, colon, secret = userinfo.partition(":")
    return (unquote(name) or None), (unquote(secret) if colon else None), hosts


def split_hosts(text: str, default_port: int, label: str) -> tuple[tuple[str, int], ...]:
    """A comma-separated ``host[:port]`` list (``[v6]:port`` for IPv6), ports defaulted and checked."""
    out: list[tuple[str, int]] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):
            host, closed, rest = item[1:].partition("]")
            if not closed or (rest and not rest.startswith(":")):
                raise errors.ValidationError(f"{label} URL: bad IPv6 address in {item!r}")
            port_text = rest[1:]
        elif item.count(":") > 1:
            raise errors.ValidationError(f"{label} URL: write an IPv6 address as [address]:port, not {item!r}")
        else:
            host, _, port_text = item.partition(":")
        if not host:
            raise errors.ValidationError(f"{label} URL: missing host in {item!r}")
        if not port_text:
            port = default_port
        elif port_text.isdigit() and 0 < int(port_text) < 65536:
            port = int(port_text)
        else:
            raise errors.ValidationError(f"{label} URL: bad port {port_text!r} in {item!r}")
        out.append((host, port))
    return tuple(out)


class Options:
    """A backend's options: a URL's query string merged with keyword options, read with types.

    Keywords win over the query string. Values from the query string are
    text; keyword values may already have their type (``timeout=2.5``,
    ``tls=True``) or be text. A read of an absent option returns the default.
    Every problem raises :class:`nbdb.ValidationError` naming ``label``.
    """

    def __init__(self, values: Mapping[str, Any], label: str) -> None:
        self._values = dict(values)
        self.label = label

    @classmethod
    def from_url(
        cls,
        query: str,
        keywords: Mapping[str, Any],
        allowed: Collection[str],
        label: str,
        *,
        keep_blank_values: bool = True,
    ) -> Options:
        """Merge ``query`` (the URL's query string) with ``keywords``; refuse names not in ``allowed``."""
        given = parse_qs(query, keep_blank_values=keep_blank_values)
        twice = sorted(k for k, v in given.items() if len(set(v)) > 1)
        if twice:
            # The last one silently won: `?history=10&history=20` kept 20, whichever the user meant.
            raise errors.ValidationError(f"{label} option(s) given twice with different values: {', '.join(twice)}")
        merged: dict[str, Any] = {k: v[-1] for k, v in given.items()}
        merged.update({k: v for k, v in keywords.items() if v is not None})
        unknown = set(merged) - set(allowed)
        if unknown:
            raise errors.ValidationError(f"unknown {label} option(s): {', '.join(sorted(unknown))}")
        return cls(merged, label)

    @classmethod
    def merged(
        cls,
        query: str,
        keywords: Mapping[str, Any],
        allowed: Collection[str],
        label: str,
        *,
        keep_blank_values: bool = True,
    ) -> dict[str, Any]:
        """The merged options as a plain dict (for code that reads them itself)."""
        return dict(cls.from_url(query, keywords, allowed, label, keep_blank_values=keep_blank_values)._values)

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __repr__(self) -> str:
        return f"Options({self.label}, {sorted(self._values)})"

    def names(self) -> frozenset[str]:
        """The options that were given."""
        return frozenset(self._values)

    def raw(self, name: str, default: Any = None) -> Any:
        """The value as given (text from the URL, anything from a keyword)."""
        return self._values.get(name, default)

    def namespace(self) -> str:
        """The ``namespace`` option ('' for none): text without '/'.

        A backend keeps a namespace's keys under ``namespace/``: with a '/'
        in it, one namespace ("a/o") would nest inside another's ("a") and
        its keys would be read there as that namespace's (corrupt) objects.
        """
        namespace = self.text("namespace", "")
        if "/" in namespace:
            raise errors.ValidationError(f"{self.label} option namespace must not contain '/': {namespace!r}")
        check_unicode(f"{self.label} option namespace", namespace)
        return namespace

    def _bad(self, name: str, want: str, value: Any) -> errors.ValidationError:
        return errors.ValidationError(f"{self.label} option {name} must be {want}, not {_shown(value)}")

    @overload
    def text(self, name: str, default: str) -> str: ...
    @overload
    def text(self, name: str, default: None = None) -> str | None: ...

    def text(self, name: str, default: str | None = None) -> str | None:
        """The value as text (a keyword may also give a number or a path).

        Anything else is refused: ``namespace=b"x"`` named the namespace ``"b'x'"``, and
        ``namespace=object()`` one that changed with every run (its repr), silently.
        """
        value = self._values.get(name, _MISSING)
        if value is _MISSING:
            return default
        if isinstance(value, str):
            return value
        if isinstance(value, os.PathLike):
            return str(os.fspath(value))
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._bad(name, "text", value)
        return str(value)

    @overload
    def flag(self, name: str, default: bool) -> bool: ...
    @overload
    def flag(self, name: str, default: None = None) -> bool | None: ...

    def flag(self, name: str, default: bool | None = None) -> bool | None:
        """A boolean: 1/true/yes/on or 0/false/no/off (or empty)."""
        value = self._values.get(name, _MISSING)
        if value is _MISSING:
            return default
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise self._bad(name, "true or false", value)

    def integer(self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
        """A whole number within the bounds (an absent option is ``default``, unchecked)."""
        if name not in self._values:
            return default
        number = self._read(name, "a whole number", lambda v: v if isinstance(v, int) else int(str(v).strip()))
        self._check_bounds(name, number, minimum, maximum)
        return number

    def number(self, name: str, default: float, *, minimum: float | None = None, maximum: float | None = None) -> float:
        """A (finite) number within the bounds; seconds, for durations (an absent option is ``default``, unchecked:
        a caller may pass on a value the user gave elsewhere, such as Hazelcast's ``timeout`` as ``retry_deadline``'s
        default)."""
        if name not in self._values:
            return default
        number = self._read(name, "a number", lambda v: float(v if isinstance(v, int | float) else str(v).strip()))
        if number != number or number in (float("inf"), float("-inf")):
            raise self._bad(name, "a finite number", self._values[name])
        self._check_bounds(name, number, minimum, maximum)
        return number

    def _read(self, name: str, want: str, read: Callable[[Any], T]) -> T:
        """``read(value)`` of the (present) option; a ValidationError saying it must be ``want`` where
        ``read`` cannot (ValueError; OverflowError: a keyword's int past a float's range), or the value is a bool
        (an int to Python, never meant as a number here)."""
        value = self._values[name]
        if isinstance(value, bool):
            raise self._bad(name, want, value)
        try:
            return read(value)
        except (ValueError, OverflowError):
            raise self._bad(name, want, value) from None

    def _check_bounds(self, name: str, number: float, minimum: float | None, maximum: float | None) -> None:
        if minimum is not None and number < minimum:
            raise errors.ValidationError(f"{self.label} option {name} must be at least {minimum}, not {_shown(number)}")
        if maximum is not None and number > maximum:
            raise errors.ValidationError(f"{self.label} option {name} must be at most {maximum}, not {_shown(number)}")

    def choice(self, name: str, default: str, choices: Collection[str], *, fold: bool = True) -> str:
        """One of ``choices`` (compared case-insensitively when ``fold``; returned as listed)."""
        value = self._values.get(name, _MISSING)
        if value is _MISSING:
            return default
        text = str(value).strip()
        for option in choices:
            if option == text or (fold and option.lower() == text.lower()):
                return option
        raise self._bad(name, "one of " + ", ".join(choices), value)

    def retry_policy(self, default: RetryPolicy) -> RetryPolicy:
        """The retry policy: ``retries`` (extra tries), ``retry_backoff`` and ``retry_deadline`` (seconds).

        ``retry_deadline=0`` means no overall deadline (attempts alone bound the retries).
        """
        retries = self.integer("retries", default.attempts - 1, minimum=0, maximum=1000)
        backoff = self.number("retry_backoff", default.backoff, minimum=0.0, maximum=60.0)
        deadline_default = 0.0 if default.deadline is None else default.deadline
        deadline = self.number("retry_deadline", deadline_default, minimum=0.0, maximum=86_400.0)
        return default.replace(
            attempts=retries + 1,
            backoff=backoff,
            max_backoff=max(default.max_backoff, backoff),
            deadline=deadline or None,
        )


def _shown(value: Any) -> str:
    """``value`` for a message: its repr, but an int too long for Python to print (past 4300 digits, repr raises
    ValueError) by its size."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 10_000:
        return f"a whole number of about {int(value.bit_length() * 0.30103)} digits"
    return repr(value)


def check_unicode(what: str, text: str) -> str:
    """``text`` if it encodes as UTF-8; ValidationError otherwise (a lone surrogate: no key can hold it, and
    the first request that named it raised ``UnicodeEncodeError``, not at connect)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        raise errors.ValidationError(f"{what} must be Unicode text: {text!r}") from None
    return text


def check_tls_files(
    label: str,
    ca: tuple[str, str | None] = ("", None),
    cert: tuple[str, str | None] = ("", None),
    key: tuple[str, str | None] = ("", None),
) -> None:
    """ValidationError naming the option whose file TLS cannot use, at connect; each is (option name, path or None).

    ``ca`` must hold PEM certificates; ``cert`` a PEM certificate and ``key`` (None: in ``cert``'s file)
    its unencrypted private key. A file that was none of these reached the TLS layer only at the first
    connection: etcd's gRPC logged its complaints on stderr and connect() said the cluster was unavailable
    (BackendUnavailableError), as Redis did, of a mistake in the URL.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # The files' form is checked here, not the TLS policy: at OpenSSL's default security level a 1024-bit
    # key or a SHA-1 signature is refused as it loads (EE_KEY_TOO_SMALL), which etcd's gRPC client takes,
    # and the server decides whether to accept it.
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    (ca_name, ca_path), (cert_name, cert_path), (key_name, key_path) = ca, cert, key
    if ca_path:
        try:
            context.load_verify_locations(cafile=ca_path)
        except (ssl.SSLError, OSError) as exc:
            raise errors.ValidationError(
                f"{label} option {ca_name}: {ca_path!r} is not a file of PEM CA certificates ({_reason(exc)})"
            ) from None
    if cert_path:
        what = f"option {cert_name}" + (f" with {key_name}" if key_path else "")
        try:
            # An encrypted key is refused (no password is asked for on the terminal): neither client takes one.
            context.load_cert_chain(cert_path, key_path or None, password=lambda: b"")
        except (ssl.SSLError, OSError) as exc:
            raise errors.ValidationError(
                f"{label} {what}: {cert_path!r}"
                + (f" and {key_path!r}" if key_path else "")
                + f" are not a PEM certificate and its unencrypted private key ({_reason(exc)})"
            ) from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    return str(exc.strerror or exc) if isinstance(exc, OSError) else str(exc)
