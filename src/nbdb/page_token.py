"""The continue token of a paged listing: the revision of its first page and where the last page ended.

Opaque to the caller, who only passes it back as ``after=``; a token that
another writer mangled is a :class:`nbdb.ValidationError`, never a crash.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence

from nbdb import errors

__all__ = ["decode", "encode", "of_listing", "tag"]


def encode(revision: int, last: Sequence[str]) -> str:
    """The token of a page read at ``revision`` that ended at the key parts ``last``."""
    text = json.dumps([revision, list(last)], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode(token: str | None) -> tuple[int | None, tuple[str, ...] | None]:
    """(revision, last key parts) of a token; (None, None) for the first page."""
    if token is None:
        return None, None
    if not isinstance(token, str):
        raise errors.ValidationError(f"after= takes a continue token (text), not {token!r}")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        revision, last = json.loads(raw)
        if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
            raise ValueError("bad revision")
        if not isinstance(last, list) or not all(isinstance(part, str) for part in last):
            raise ValueError("bad position")
    except (ValueError, TypeError, binascii.Error):
        raise errors.ValidationError(f"not a continue token of this listing: {token[:40]!r}") from None
    return revision, tuple(last)


def _mark(listing: Sequence[str | None]) -> str:
    return hashlib.blake2s(json.dumps(list(listing)).encode(), digest_size=6).hexdigest()


def tag(token: str | None, listing: Sequence[str | None]) -> str | None:
    """A backend's ``token`` marked as one of ``listing`` (its table and topic), for :func:`of_listing`."""
    return None if token is None else f"{_mark(listing)}.{token}"


def of_listing(token: str | None, listing: Sequence[str | None]) -> str | None:
    """The backend's token in ``token``, if :func:`tag` marked it as one of ``listing``; ValidationError if not.

    A token of another listing (another model, another topic) was taken as a position in this one: its
    pages silently left objects out.
    """
    if token is None:
        return None
    if not isinstance(token, str):
        raise errors.ValidationError(f"after= takes a continue token (text), not {token!r}")
    mark, dot, inner = token.partition(".")
    if not dot or mark != _mark(listing):
        raise errors.ValidationError(
            f"not a continue token of this listing (a token is good only for the model and topic it was "
            f"listed with): {token[:40]!r}"
        )
    return inner
