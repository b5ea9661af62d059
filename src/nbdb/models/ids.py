"""Object ids: random (version 4) UUIDs, made without :class:`uuid.UUID`'s general constructor.

Every model built without an id gets one here, so this is on the path of every
create. ``uuid.uuid4()`` goes through ``UUID.__init__``, which sorts out which
of five spellings it was given and checks the version (about 1 µs here); the
id below is the same value built the way ``UUID.__init__`` and
``UUID.__setstate__`` themselves finish: its two slots, ``int`` and
``is_safe``, set on a bare instance. The randomness is ``os.urandom``, as
``uuid.uuid4`` uses, drawn for :data:`BATCH` ids at a time: one system call per
id was about a twentieth of building a port. A forked child drops what its parent drew
(it would otherwise hand out the parent's next ids).
"""

from __future__ import annotations

import os
import pickle
import uuid
from collections.abc import Iterator

__all__ = ["BATCH", "new_id", "v4_from_bytes"]

BATCH = 256
"""How many ids' worth of randomness one ``os.urandom`` call draws."""

_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
"""The variant and version bits of a UUID's integer."""
_SET = (0x8000 << 48) | (4 << 76)
"""Variant RFC 4122, version 4 (what ``UUID(..., version=4)`` sets)."""
_UNKNOWN = uuid.SafeUUID.unknown
_bare = uuid.UUID.__new__
_set = object.__setattr__
_from_bytes = int.from_bytes
_urandom = os.urandom


def v4_from_bytes(raw: bytes) -> uuid.UUID:
    """``uuid.UUID(bytes=raw, version=4)`` (``raw``: 16 bytes), without the general constructor."""
    value = _bare(uuid.UUID)
    _set(value, "int", _from_bytes(raw) & _CLEAR | _SET)
    _set(value, "is_safe", _UNKNOWN)
    return value


def _draw() -> Iterator[int]:
    """The integers of :data:`BATCH` new version-4 ids, from one ``os.urandom`` call."""
    raw = _urandom(16 * BATCH)
    return iter([_from_bytes(raw[i : i + 16]) & _CLEAR | _SET for i in range(0, 16 * BATCH, 16)])


_drawn: Iterator[int] = iter(())
"""The integers drawn and not handed out yet. ``next()`` on a list iterator is atomic under the GIL:
two threads never get the same one (two that refill at once each take a fresh batch)."""


def _forget_drawn() -> None:
    global _drawn
    _drawn = iter(())


os.register_at_fork(after_in_child=_forget_drawn)


def new_id() -> uuid.UUID:
    """A new random object id: what ``uuid.uuid4()`` returns, in about a fifth of its time."""
    global _drawn
    number = next(_drawn, None)
    if number is None:
        _drawn = _draw()
        number = next(_drawn)
    value = _bare(uuid.UUID)
    _set(value, "int", number)
    _set(value, "is_safe", _UNKNOWN)
    return value


def _public_v4_from_bytes(raw: bytes) -> uuid.UUID:
    return uuid.UUID(bytes=raw, version=4)


def _public_new_id() -> uuid.UUID:
    return uuid.UUID(bytes=_urandom(16), version=4)


def _same_as_public(raw: bytes) -> bool:
    try:
        built, public = v4_from_bytes(raw), _public_v4_from_bytes(raw)
        return (
            built == public
            and hash(built) == hash(public)
            and str(built) == str(public)
            and built.version == 4
            and built.is_safe is public.is_safe
            and pickle.loads(pickle.dumps(built)) == public
            and not hasattr(built, "__dict__")
        )
    except Exception:  # a changed layout: any failure means "do not use the shortcut"
        return False


if not all(_same_as_public(raw) for raw in (bytes(16), b"\xff" * 16, bytes(range(16)))):  # pragma: no cover
    v4_from_bytes = _public_v4_from_bytes
    new_id = _public_new_id
