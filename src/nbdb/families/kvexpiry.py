"""Expiry on a key-value store: deadlines under ``e/``, refreshed by compare-and-set, reaped by clients.

An object created with a ttl gets a deadline key (``e/<table>/<id>``) written in
its create's commit, and its index record keeps the ttl. ``refresh`` moves the
deadline on the condition that the index did not change; ``reap`` deletes the
objects whose deadline passed as ordinary commits (watchers see them), each on
the condition that its deadline did not move since it was read, so a refresh
that lands first wins. A Database runs ``reap`` periodically (:mod:`nbdb.reaper`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from nbdb import errors
from nbdb.families import rules
from nbdb.families.kvplan import Claims, decode_deadline, encode_deadline, plan_commit, vet_released
from nbdb.families.kvtypes import VersionIs
from nbdb.spi import ANY_VERSION, Delete, RefKey

if TYPE_CHECKING:  # the functions work through the backend they serve (a type only: no import cycle)
    from nbdb.families.kv import KeyValueBackend

__all__ = ["COMMIT_ATTEMPTS", "reap", "refresh", "ttls"]

log = logging.getLogger(__name__)

COMMIT_ATTEMPTS = 8
"""How often a refresh is tried again while its object keeps changing."""


def refresh(backend: KeyValueBackend, table: str, id: uuid.UUID, ttl: float) -> None:
    """Give an object created with a ttl ``ttl`` more seconds (its deadline moves if its index did not)."""
    for _attempt in range(COMMIT_ATTEMPTS):
        index = backend.index_record(table, id)
        if index is None:
            raise rules.not_found((table, id), "expired or deleted")
        if index.ttl is None:
            raise rules.no_ttl((table, id))
        ikey = backend.layout.index(table, id)
        deadline = encode_deadline(time.time() + ttl)
        if backend.commit_once([VersionIs(ikey, index.version)], {backend.layout.expiry(table, id): deadline}, []):
            return
    raise errors.ConflictError(f"{table} {id} kept changing while it was refreshed; try again")


def ttls(backend: KeyValueBackend, tables: Sequence[str]) -> dict[RefKey, float]:
    """The ttl each object of ``tables`` was created with (for copies that keep them)."""
    wanted = frozenset(tables)
    out: dict[RefKey, float] = {}
    kvs, _ = backend.range_keys([backend.layout.expiries])
    for kv in kvs:
        target = backend.layout.parse_expiry(kv.key)
        if target is None or target[0] not in wanted:
            continue
        index = backend.index_record(*target)
        if index is not None and index.ttl is not None:
            out[target] = index.ttl
    return out


def reap(backend: KeyValueBackend) -> int:
    """Delete the objects whose ttl ran out (one pass, at most the backend's ``reap_batch``); how many it deleted.

    Each deletion is a normal commit (watchers see it) on the condition
    that the object's deadline did not move since it was read, so a
    refresh that lands first wins. Stale deadlines of objects deleted
    otherwise are dropped.
    """
    kvs, _ = backend.range_keys([backend.layout.expiries])
    now = time.time()
    reaped = 0
    for kv in kvs:
        deadline = decode_deadline(kv.value)
        if deadline is not None and deadline > now:
            continue
        target = backend.layout.parse_expiry(kv.key)
        index = None if target is None else backend.index_record(*target)
        keep = VersionIs(kv.key, kv.version)
        try:
            if target is None or index is None or index.ttl is None:
                backend.commit_once([keep], {}, [kv.key])
                continue
            op = Delete(target[0], target[1], index.topic, ANY_VERSION, index.refs, False, index.unique)
            shape = rules.shape_of([op])
            claims: Claims = {}
            for attempt in range(2):
                plan = plan_commit(backend, [op], shape, now, claims=claims)
                if backend.commit_once([*plan.conditions, keep], plan.puts, plan.deletes) is not None:
                    backend.forget(*target)
                    reaped += 1
                    break
                # Again only once a released claim was found otherwise than planned (gone, or with its true
                # holder). Else what failed was ``keep`` (a refresh landed first), which, read once, fails
                # every retry of this pass, or the object or a referrer changed: the next pass sees them.
                if attempt or not vet_released(backend, [op], plan, claims):
                    break
        except errors.CorruptRecordError as exc:
            # Another writer's damage (a released claim that lies, see vet_released): no later pass reaps it
            # until someone repairs it, so it is said where it is seen, once per WARN_EVERY (a pass a second).
            _warn_unreapable(backend, kv.key, exc)
        except errors.NbdbError as exc:
            # Referenced meanwhile, moved on, or the store is busy: the next pass sees it again.
            log.debug("reaper: %s not deleted this pass: %s", kv.key, exc)
        if reaped >= backend.reap_batch:
            break
    return reaped


WARN_EVERY = 600.0
"""Seconds between two warnings of one expiry key the reaper cannot reap for a damaged record."""


def _warn_unreapable(backend: KeyValueBackend, key: str, exc: errors.CorruptRecordError) -> None:
    """Warn that the object of expiry key ``key`` outlives its ttl for ``exc``: once per key per :data:`WARN_EVERY`."""
    now = time.monotonic()
    warned = backend.reap_warned
    last = warned.get(key)
    if last is not None and now - last < WARN_EVERY:
        log.debug("reaper: %s not deleted this pass: %s", key, exc)
        return
    if len(warned) >= 10_000:
        warned.clear()  # bounded: a store damaged in bulk warns again, no worse
    warned[key] = now
    log.warning("reaper: %s expired but cannot be deleted until the damaged record is repaired: %s", key, exc)
