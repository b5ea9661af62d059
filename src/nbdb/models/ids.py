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

An id made here is also **unsubmitted** until the first create that carries it
(:func:`claim`): no store can hold an object with that id yet, whatever copy of
the object is created, so a store that keeps ids per partition may skip its
search of the other partitions for it (``nbdb.spi.Put.fresh_id``). The rule is
about the id's value, not an instance: every copy (``replace``, ``model_copy``,
an explicit ``id=other.id``) shares it, and the first create of any of them
takes it. What forgets unsubmitted ids (never wrongly claims one): a fork, in
parent and child; pickling an object (its id may be created by the process
that unpickles it); more than :data:`UNSUBMITTED_LIMIT` of them waiting.
"""

from __future__ import annotations

import os
import pickle
import re
import uuid
from collections.abc import Iterator

from nbdb.models.shared import slot_setter

__all__ = ["BATCH", "UNSUBMITTED_LIMIT", "claim", "forget", "new_id", "v4_from_bytes"]

BATCH = 256
"""How many ids' worth of randomness one ``os.urandom`` call draws."""

UNSUBMITTED_LIMIT = 1 << 16
"""At most this many ids made and not created yet are remembered as such (past it they are all forgotten:
a create of one of them then searches the store for its id, as for any id made elsewhere)."""

_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
"""The variant and version bits of a UUID's integer."""
_SET = (0x8000 << 48) | (4 << 76)
"""Variant RFC 4122, version 4 (what ``UUID(..., version=4)`` sets)."""
_VERSION_4 = bytes((byte & 0x0F) | 0x40 for byte in range(256))
"""Byte 6 of an id with version 4 (its high nibble), as ``_CLEAR`` and ``_SET`` make it."""
_RFC_4122 = bytes((byte & 0x3F) | 0x80 for byte in range(256))
"""Byte 8 of an id with variant RFC 4122 (its two high bits)."""
_SIXTEEN = re.compile(b".{16}", re.DOTALL)
_UNKNOWN = uuid.SafeUUID.unknown
_bare = uuid.UUID.__new__
_from_bytes = int.from_bytes
_urandom = os.urandom


# Where UUID has no such slots, the general call (:func:`_same_as_public` then decides whether the shortcut is kept).
_set_int = slot_setter(uuid.UUID, "int")
_set_is_safe = slot_setter(uuid.UUID, "is_safe")


def v4_from_bytes(raw: bytes) -> uuid.UUID:
    """``uuid.UUID(bytes=raw, version=4)`` (``raw``: 16 bytes), without the general constructor."""
    value = _bare(uuid.UUID)
    _set_int(value, _from_bytes(raw) & _CLEAR | _SET)
    _set_is_safe(value, _UNKNOWN)
    return value


def _draw() -> Iterator[int]:
    """The integers of :data:`BATCH` new version-4 ids, from one ``os.urandom`` call (unsubmitted, all)."""
    # The version and variant bits set in the buffer, a byte table for all ids at once, and the ids cut and
    # read in C: the 128-bit & and | per id, and a slice and its call per id in a comprehension, cost more
    # than the rest of new_id. Each id is uuid.UUID(bytes=its 16 bytes, version=4)'s.
    raw = bytearray(_urandom(16 * BATCH))
    raw[6::16] = raw[6::16].translate(_VERSION_4)
    raw[8::16] = raw[8::16].translate(_RFC_4122)
    numbers = list(map(_from_bytes, _SIXTEEN.findall(raw)))
    if len(_unsubmitted) >= UNSUBMITTED_LIMIT:
        _unsubmitted.clear()  # bounded: ids made and never created (forgetting one is always safe)
    _unsubmitted.update(dict.fromkeys(numbers, True))  # one call per batch: nothing per id
    return iter(numbers)


_drawn: Iterator[int] = iter(())
"""The integers drawn and not handed out yet. ``next()`` on a list iterator is atomic under the GIL:
two threads never get the same one (two that refill at once each take a fresh batch)."""

_unsubmitted: dict[int, bool] = {}
"""The integers of ids made here that no create has carried yet (see :func:`claim`)."""


def claim(id: uuid.UUID) -> bool:
    """True, once, if ``id`` was made by :func:`new_id` in this process and no create carried it before.

    The Database calls it when it turns an object into a create, whatever that
    commit's outcome: of two creates of one id (of the same object, of copies
    of it, in one thread or two) at most the first is told True. ``dict.pop``
    is one atomic step.
    """
    return _unsubmitted.pop(id.int, False)


def forget(id: uuid.UUID) -> None:
    """``id`` may reach a store by another way than a create of this process (it is being pickled)."""
    _unsubmitted.pop(id.int, None)


def _forget_drawn() -> None:
    """Before and after a fork, in both processes: each now holds the other's objects, whose ids
    either may create, so none of the ids made so far is unsubmitted any more (and the child
    must not hand out the parent's next ids)."""
    global _drawn
    _drawn = iter(())
    _unsubmitted.clear()


os.register_at_fork(before=_forget_drawn, after_in_parent=_forget_drawn, after_in_child=_forget_drawn)


def new_id() -> uuid.UUID:
    """A new random object id: what ``uuid.uuid4()`` returns, in about a fifth of its time."""
    global _drawn
    number = next(_drawn, None)
    if number is None:
        _drawn = _draw()
        number = next(_drawn)
    value = _bare(uuid.UUID)
    _set_int(value, number)
    _set_is_safe(value, _UNKNOWN)
    return value


def _public_v4_from_bytes(raw: bytes) -> uuid.UUID:
    return uuid.UUID(bytes=raw, version=4)


def _public_new_id() -> uuid.UUID:
    return uuid.UUID(bytes=_urandom(16), version=4)  # never unsubmitted: every create of it searches the store


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
