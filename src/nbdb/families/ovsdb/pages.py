"""Pages of a listing (``list(..., limit=N, after=token)``), every one at the revision of the first.

The replica holds every record in memory already, so a page costs no server
round trip; what a listing needs is a fixed point in time. The first page
sorts the records of the scope (by table, then id) at the replica's revision
and keeps that sorted list for the later pages: a few recent listings, for a
few minutes. A page of a listing no longer kept is rebuilt from the replica,
rolled back to the listing's revision through its change history;
HistoryGoneError once that history is gone (or the revision is not of this
connection).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import OrderedDict
from collections.abc import Collection, Sequence

from nbdb import errors, page_token
from nbdb.families.ovsdb.replica import Replica
from nbdb.spi import Record, RefKey, Snapshot

__all__ = ["Listings", "state_at"]

_KEEP = 8
"""How many listings are kept sorted."""
_MAX_AGE = 300.0
"""Seconds a listing is kept after its last page was read."""

_Scope = tuple[Replica, tuple[str, ...], frozenset[str | None] | None, int]


def _order(record: Record) -> tuple[str, str]:
    return record.table, str(record.id)


def state_at(
    replica: Replica, revision: int, tables: Collection[str], topics: Collection[str | None] | None
) -> list[Record]:
    """The records of ``tables`` (in ``topics``) as they were at ``revision``, sorted (call under ``cond``)."""
    if not replica.oldest <= revision <= replica.revision:
        raise errors.HistoryGoneError(
            f"revision {revision} of a paged listing is no longer (or never was) in this connection's history: "
            "list again from the first page"
        )
    wanted = frozenset(tables)
    state: dict[RefKey, Record] = {(r.table, r.id): r for r in replica.select(wanted, topics)}
    for change in reversed(replica.history):
        if change.revision <= revision:
            break
        if change.table not in wanted:
            continue
        key = (change.table, change.id)
        old = change.old
        if old is None or (topics is not None and old.topic not in topics):
            state.pop(key, None)
        else:
            state[key] = old
    return sorted(state.values(), key=_order)


class Listings:
    """The sorted records of a backend's recent paged listings."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: OrderedDict[_Scope, tuple[float, list[Record]]] = OrderedDict()

    def page(
        self,
        replica: Replica,
        tables: Sequence[str],
        topics: Collection[str | None] | None,
        limit: int,
        after: str | None,
    ) -> Snapshot:
        """One page of at most ``limit`` records after the position ``after`` names (None: the first page)."""
        revision, last = page_token.decode(after)
        wanted = tuple(sorted(set(tables)))
        chosen = None if topics is None else frozenset(topics)
        if revision is None:
            with replica.cond:
                revision = replica.revision
                records = sorted(replica.select(wanted, topics), key=_order)
            self._keep((replica, wanted, chosen, revision), records)
            start = 0
        else:
            if last is None or len(last) != 2 or last[0] not in wanted:
                raise errors.ValidationError("not a continue token of this listing (it names another table)")
            scope = (replica, wanted, chosen, revision)
            found = self._recall(scope)
            if found is None:
                with replica.cond:
                    found = state_at(replica, revision, wanted, topics)
                self._keep(scope, found)
            records = found
            start = bisect.bisect_right(records, (last[0], last[1]), key=_order)
        chunk = records[start : start + limit]
        more = start + limit < len(records)
        return Snapshot(chunk, revision, page_token.encode(revision, _order(chunk[-1])) if more else None)

    def _keep(self, scope: _Scope, records: list[Record]) -> None:
        with self._lock:
            self._kept[scope] = (time.monotonic(), records)
            self._kept.move_to_end(scope)
            self._expire()

    def _recall(self, scope: _Scope) -> list[Record] | None:
        with self._lock:
            self._expire()
            entry = self._kept.get(scope)
            if entry is None:
                return None
            self._kept[scope] = (time.monotonic(), entry[1])
            self._kept.move_to_end(scope)
            return entry[1]

    def _expire(self) -> None:
        horizon = time.monotonic() - _MAX_AGE
        while self._kept and (len(self._kept) > _KEEP or next(iter(self._kept.values()))[0] < horizon):
            self._kept.popitem(last=False)
