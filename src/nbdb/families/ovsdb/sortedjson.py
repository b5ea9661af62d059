"""``json.dumps(value, sort_keys=True)`` byte for byte, made by orjson where that is provably the same.

Every nbdb client stores and compares a row's digest (``nbdb:digest``) and the JSON text of
fields kept in ``external_ids`` byte for byte: a different rendering would make every existing
row read as changed by another writer. ``json`` takes ≈ 13x the CPU of orjson for a port's
document, but their output differs in general (separators, ``ensure_ascii``, floats' text,
integers beyond 64 bits, NaN, non-str keys, subclasses, types ``json`` refuses). The fast path
is taken only where both write the same bytes:

- the value is made of ``dict``, ``list``, ``tuple``, ``str``, ``int``, ``bool`` and ``None``
  only (exact types: no float, no subclass, nothing ``json`` refuses; checked by a walk after
  orjson succeeded, so never deeper than orjson's limit);
- orjson writes it (it refuses integers beyond 64 bits and non-str keys, nests at most 255
  deep), and its output is ASCII without DEL (``json`` escapes every other character as
  ``\\uXXXX``; orjson escapes quotes, backslashes and control characters as ``json`` does);
- for ``json``'s default separators (``", "``, ``": "``), the output holds no backslash, so its
  ``"`` delimit strings exactly: the separators are spaced outside them only.

Anything else is written by ``json`` itself, as before.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_LEAVES = frozenset({str, int, bool, type(None)})
_SORT = orjson.OPT_SORT_KEYS
_SPACED = json.JSONEncoder(sort_keys=True)
_COMPACT = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def _plain(value: Any) -> bool:
    """Whether ``value`` is made of dict, list, tuple, str, int, bool and None only (exact types)."""
    kind = type(value)
    if kind is dict:
        items = value.values()
    elif kind is list or kind is tuple:
        items = value
    else:
        return kind in _LEAVES
    if set(map(type, items)) <= _LEAVES:
        return True
    return all(type(item) in _LEAVES or _plain(item) for item in items)


def _orjson(value: Any) -> bytes | None:
    """orjson's sorted compact text of ``value`` if it is ``json``'s compact text too (None: not known to be)."""
    try:
        out = orjson.dumps(value, option=_SORT)
    except orjson.JSONEncodeError:
        return None
    if not out.isascii() or b"\x7f" in out:
        return None
    try:
        if not _plain(value):
            return None
    except RecursionError:
        return None
    return out


def sorted_bytes(value: Any) -> bytes:
    """``json.dumps(value, sort_keys=True).encode()``, the same bytes."""
    out = _orjson(value)
    if out is None or b"\\" in out:
        return _SPACED.encode(value).encode()
    # No backslash: every '"' opens or closes a string, so the even parts are outside strings.
    # NUL cannot be in orjson's output (escaped), so it joins and splits them back unchanged.
    parts = out.split(b'"')
    outside = b"\x00".join(parts[0::2]).replace(b",", b", ").replace(b":", b": ")
    parts[0::2] = outside.split(b"\x00")
    return b'"'.join(parts)


def sorted_text(value: Any) -> str:
    """``json.dumps(value, sort_keys=True)``, the same text."""
    return sorted_bytes(value).decode("ascii")  # (json's text is ASCII: ensure_ascii)


def compact_text(value: Any) -> str:
    """``json.dumps(value, sort_keys=True, separators=(",", ":"))``, the same text."""
    out = _orjson(value)
    if out is None:
        return _COMPACT.encode(value)
    return out.decode("ascii")
