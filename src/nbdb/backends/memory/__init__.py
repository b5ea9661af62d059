"""The embedded default: an in-process store of objects, in microseconds.

``memory://`` gives a private store; ``memory://NAME`` a store shared by every
``connect()`` of that name in the process. ``?history=N`` bounds the change
history (default 10,000 record changes) so that a watcher that falls further
behind gets HistoryGoneError and a cache re-lists, as on any server backend.

Unlike the server backends, this store does not go through a family of key
layouts: it keeps records in dictionaries — by id, by (topic, table), and a
reverse-reference index — and checks the shared commit rules
(:mod:`nbdb.families.rules`) directly under one lock, so a commit is a few
dictionary operations. It also keeps the object each write was validated as
(:attr:`nbdb.spi.Record.value`): reads, watches and caches of the process
share that immutable object instead of decoding bytes again.
"""

from nbdb.backends.memory.backend import MemoryBackend
from nbdb.backends.memory.store import MemoryStore

__all__ = ["MemoryBackend", "MemoryStore"]
