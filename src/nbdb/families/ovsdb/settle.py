"""Settling a commit whose reply was lost, from what the replica shows of its rows.

A plan (:mod:`.planner`) leaves evidence in the rows it writes: its commit
token, with the version it made, in ``external_ids:nbdb:txn`` of every put
row, and its mark on every natively mutated row. Read back from a replica
synced after the loss, that evidence decides: landed, never will (a row the
plan compares was changed by somebody else), or not yet (every compared row
as planned, or older: the same plan may be sent again, and at most one copy
lands). Anything else cannot be told.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from typing import Any

from nbdb.families.ovsdb.datum import default_cell
from nbdb.families.ovsdb.mapping import EXTERNAL_IDS, TableMap
from nbdb.families.ovsdb.planner import Plan
from nbdb.families.ovsdb.replica import Replica
from nbdb.families.ovsdb.rows import EXT_TXN, EXT_VERSION, apart, parse_window, stored_columns, written_version
from nbdb.spi import RefKey

__all__ = ["Outcome", "reflects", "settle", "shown_at"]


class Outcome(enum.Enum):
    """What the replica says of a commit whose reply was lost."""

    LANDED = "landed"
    NOT_LANDED = "not landed"
    """It did not land and never will: a row it compares has changed."""
    PENDING = "pending"
    """It has not landed yet and might still: sending the same plan again lands it at most once."""
    UNKNOWN = "unknown"


def _put_outcome(plan: Plan, replica: Replica, key: RefKey, version: int, unmarked: bool, resend: bool) -> Outcome:
    tm = replica.mapping.get(key[0])
    row = replica.row(tm, key[1])
    if unmarked and tm.external_ids is None:
        # The commit's ledger mark is absent: it has not landed. As planned (no row for a create), the
        # same plan may be sent again (its wait for that mark lets one copy land at most); changed, it
        # never will (planned again under its token and mark: still at most one copy).
        expected = plan.expected.get((key[0], key[1].int))
        if (row is None and expected is None) or (
            row is not None and expected is not None and stored_columns(tm, row) == expected
        ):
            return Outcome.PENDING
        return Outcome.NOT_LANDED if resend else Outcome.PENDING
    if row is None or tm.external_ids is None:
        # A row without external_ids (OVN's Load_Balancer_Group) keeps no token: as planned, it may
        # have met the commit and another writer put its content back since (a monitor's merged
        # update shows neither change), so sending again could apply it twice; changed, it may be
        # this commit's doing. It says nothing: the other rows of the commit decide, else unknown.
        return Outcome.UNKNOWN
    ext = row.get(EXTERNAL_IDS) or {}
    window = parse_window(ext.get(EXT_TXN))
    if (plan.token, version) in window:
        return Outcome.LANDED
    if any(v == version for _t, v in window):
        return Outcome.NOT_LANDED
    expected = plan.expected.get((key[0], key[1].int))
    if expected is None:
        return Outcome.UNKNOWN
    if _not_past(tm, row, expected):
        return Outcome.PENDING
    if EXT_VERSION in ext and written_version(ext) < version:
        return Outcome.NOT_LANDED
    return Outcome.UNKNOWN


def _not_past(tm: TableMap, row: Mapping[str, Any], expected: dict[str, Any]) -> bool:
    """Whether the replica shows ``row`` as the plan expects it, or older (a replica that lags the server).

    The commit compares the row to ``expected`` and only lands on it; a row
    as expected has not met the commit yet, and a row at an older nbdb
    version than expected is a copy from before the plan (a relay's copy
    lagging the one the plan was made from): neither says anything yet.
    """
    if stored_columns(tm, row) == expected:
        return True
    planned = written_version(_read_ext(expected))
    return written_version(row.get(EXTERNAL_IDS) or {}) < planned


def _read_ext(expected: Mapping[str, Any]) -> dict[str, str]:
    """The ``external_ids`` of the row a commit was planned against (``expected``: its columns as sent)."""
    return dict(expected.get(EXTERNAL_IDS, ["map", []])[1])


def _created_again(row: Mapping[str, Any], expected: dict[str, Any]) -> bool:
    """Whether ``row`` shows a history other than the one a delete read (see :func:`.rows.apart`): not an older
    copy of it at a lower version, but the row created again since by an nbdb writer (version 1, its own window)."""
    return apart(_read_ext(expected), row.get(EXTERNAL_IDS) or {})


def _continues(row: Mapping[str, Any], expected: dict[str, Any]) -> bool:
    """Whether ``row`` is the one a delete read, changed since (never deleted): its ``nbdb:txn`` window still holds
    the newest write of the row the delete was planned against. Every nbdb write pushes its own entry on the
    window and keeps the others (up to its capacity); a row created again under the id starts one of its own."""
    read = parse_window(_read_ext(expected).get(EXT_TXN))
    return bool(read) and read[0] in parse_window((row.get(EXTERNAL_IDS) or {}).get(EXT_TXN))


def _marked(plan: Plan, row: Mapping[str, Any] | None, key: RefKey) -> bool:
    """Whether ``row`` bears the mark of the plan's mutation of ``key``."""
    mark, stamp = plan.marks[key]
    return row is not None and (row.get(EXTERNAL_IDS) or {}).get(mark) == stamp


def _column_moved(plan: Plan, row: Mapping[str, Any], key: RefKey) -> bool:
    """Whether a column the plan's mutation of ``key`` writes whole (behind a ``wait``) no longer holds
    the value that ``wait`` compares: no copy of the plan lands on it while it does not."""
    for cm, before in plan.compared.get(key, ()):
        cell = row.get(cm.column)
        if (default_cell(cm.type) if cell is None else cell) != before:
            return True
    return False


def reflects(plan: Plan, replica: Replica) -> bool:
    """Whether the replica shows a commit that succeeded, or a later state: read-your-writes holds.

    Every put row carries its token, or a later nbdb version (a row without ``external_ids``: its
    content is the commit's, at the version this connection counts for it or later) (the commit
    compared the row, so a later version was written on top of it: the
    token may have left the row's short window while this client's monitor
    sent several commits merged, as after a reconnect); its marks are there;
    its deletes are gone. False says nothing more: another writer may have
    undone the commit since, and the replica will never show it (the caller
    then asks for a barrier, see ``OvsdbFamilyBackend._result``).
    """
    puts, marks = plan.puts, plan.marks
    for key in plan.keys:
        tm = replica.mapping.get(key[0])
        row = replica.row(tm, key[1])
        # Looked up by (table, id.int), and the marks only if there are any: a key holding a
        # uuid.UUID hashes it in Python at every lookup, even in an empty map.
        version = puts.get((key[0], key[1].int))
        if marks and key in marks:
            if not _marked(plan, row, key):
                return False
        elif version is None:
            if row is not None:
                return False
        elif row is None:
            return False
        elif tm.external_ids is None:
            # No token to look for: the version this connection counts for the row (every change
            # it sees bumps it; the commit compared the row, so the count is at or past the plan's),
            # and its content. Settled after a lost reply, the replica was synced past the commit
            # already. Another content than the commit's may be another writer's change after it, or
            # one merged with it into an update that showed this connection no change of its own to
            # count (the row put back), or one change for two: False, and the caller finds which
            # (``shown_at``), or counts the commit's content as a change (``Replica.merged_away``).
            # A put that changes nothing wrote nothing: its version alone.
            record = replica.record(key[0], key[1])
            if record is None or (record.version < version and not plan.settled):
                return False
            ikey = (key[0], key[1].int)
            if record.written != plan.stamp_of(ikey) and ikey not in plan.unchanged:
                return False
        else:
            ext = row.get(EXTERNAL_IDS) or {}
            txn = ext.get(EXT_TXN) or ""
            if _newest_is(txn, plan.token, version):
                continue  # (nearly always: the row as this commit wrote it, its entry first)
            if (plan.token, version) not in parse_window(txn) and written_version(ext) <= version:
                return False
    return True


def _newest_is(txn: str, token: str, version: int) -> bool:
    """Whether the first entry of the ``nbdb:txn`` value ``txn`` is ``token@version`` (then :func:`.rows.parse_window`
    holds that pair: a token nbdb made and a version it wrote read back as themselves), without parsing the rest."""
    head = f"{token}@{version}"
    return bool(token) and txn.startswith(head) and txn[len(head) : len(head) + 1] in ("", " ")


def settle(plan: Plan, replica: Replica, resend: bool = True, unmarked: bool = False) -> Outcome:
    """Whether a commit whose reply was lost landed, from a replica synced after it (call under ``cond``).

    Decisive answers come from the commit token in the put rows and from rows
    the commit compares: a row changed by somebody else means it never will.
    A row still as the plan expects (or older) means the commit has not
    landed *in this replica*: PENDING, and re-sending the same plan is safe
    (every copy waits for that same content, so at most one lands). Through
    a relay the replica may lag the leader, so the caller settles again,
    never plans anew, when such a copy is refused. A deleted row shown at
    another version is NOT_LANDED only while its token window still holds
    the write the delete read (:func:`_continues`), or, a row without
    ``external_ids``, when the ledger mark is absent; otherwise it may be a
    row created again after the delete landed: UNKNOWN.

    ``resend``: the commit may be planned again under its token (not a fenced one, whose lock's
    connection was its lease). Only then does a column a mutation writes whole, shown changed with
    the mutation's mark absent, say NOT_LANDED: should the column come back to the value compared
    and the copy sent before land after all, the new plan's ``wait`` for the same mark keeps it
    to one copy. Otherwise it is PENDING, as any mutation without its mark.

    ``unmarked``: the server showed the commit's ledger mark absent (:func:`.planner._plan_ledger`; its
    presence is LANDED, told before): its rows without ``external_ids`` then vote as such a mutation's.
    Without a ledger they keep no evidence and vote UNKNOWN.
    """
    votes: list[Outcome] = []
    for key in plan.keys:
        version = plan.puts.get((key[0], key[1].int))
        if version is not None:
            votes.append(_put_outcome(plan, replica, key, version, unmarked, resend))
            continue
        tm = replica.mapping.get(key[0])
        row = replica.row(tm, key[1])
        if key in plan.marks:
            # Its mark is there: it landed. Else sending it again is safe: a copy lands only while the mark is absent.
            if row is None:
                votes.append(Outcome.UNKNOWN)
            elif _marked(plan, row, key):
                votes.append(Outcome.LANDED)
            else:
                votes.append(Outcome.NOT_LANDED if resend and _column_moved(plan, row, key) else Outcome.PENDING)
            continue
        expected = plan.expected.get((key[0], key[1].int))
        if row is None or expected is None:
            votes.append(Outcome.UNKNOWN)
        elif _not_past(tm, row, expected) and not _created_again(row, expected):
            # As read, or an older copy of it (a lagging replica); not one created again since at a lower
            # version (an nbdb writer's, a window of its own): that one is told below, not waited for.
            votes.append(Outcome.PENDING)
        elif unmarked if tm.external_ids is None else _continues(row, expected):
            votes.append(Outcome.NOT_LANDED)
        else:
            # A row of another version whose token window no longer holds the write the delete read (or a
            # row without external_ids, keeping none, whose commit's ledger mark did not say): created again
            # under its id since, or rewritten past it, it cannot be told from the row read changed: the delete
            # may have landed before it came back (never a guessed conflict).
            votes.append(Outcome.UNKNOWN)
    for outcome in (Outcome.LANDED, Outcome.NOT_LANDED, Outcome.PENDING):
        if outcome in votes:
            return outcome
    return Outcome.UNKNOWN


def shown_at(plan: Plan, replica: Replica) -> tuple[int, frozenset[tuple[str, int]]]:
    """Where the replica showed a commit it no longer shows (call under ``cond``): (revision or 0, rows never shown).

    Another writer undid the commit since (deleted or rewrote its rows): their last change is that
    writer's, later than the commit. A result stamped with it read as written there: a cache standing
    at that revision without the object took the write for lost (the store "went back in time"), and a
    watch from it never delivered the undoing change. The commit's own change is the one of a row it
    put carrying its token (unique to it); a commit that only deletes is shown by the latest deletion
    of one of its rows after it was planned, which precedes the row's creation again that undid it
    (``reflects`` is False). Read from the kept history, newest first, back to the plan's revision: only
    such a commit pays for it. Revision 0 when the history no longer holds it, or a relay or a busy
    connection merged the commit and the undoing change into one update (or none): then no revision of
    this replica shows the commit at all.

    The rows never shown: the ones the commit wrote that no kept change shows with its token and the replica
    does not hold as written either, and the ones it deleted that the replica holds again with no kept
    change after the plan showing them gone or created (another writer created them again under the same id,
    merged with the delete into a change of content, or none; a replica that never held such a row before
    the delete, of another topic or opened after it, shows its creation). A relay may merge the commit with
    another writer's change of just one of its rows: the revision found shows the others only, and the
    caller must still tell of that row (``OvsdbFamilyBackend._merged_away``), or a cache from the result
    calls it lost, and a watch from it never hears the row was gone, or is back.
    """
    puts = plan.puts
    keys = {(table, id.int) for table, id in plan.keys if not (plan.marks and (table, id) in plan.marks)}
    unseen = {key for key in plan.written if key in keys and key not in plan.unchanged}  # (those wrote nothing)
    # Each row shows the commit by its stamp: the token, or a row without external_ids its content's.
    stamps = {key: plan.stamp_of(key) for key in unseen}
    records = replica.records
    back = {key for key in keys if key not in puts and key in records}
    revision = 0
    base = plan.base
    for change in reversed(replica.history):
        if change.revision <= base:
            break  # planned after it: no change this old shows the commit
        key = (change.table, change.id.int)
        if key not in keys:
            continue
        new = change.new
        if key not in puts and (new is None or change.old is None):
            # Shown gone, or shown created again (a replica of another topic, or opened after the delete,
            # never held it before): nothing of the delete was merged away here.
            back.discard(key)
        if new is None:
            if not (puts or revision):
                revision = change.revision
        elif key in puts and new.written == stamps.get(key):
            revision = revision or change.revision
            unseen.discard(key)
        if revision and not unseen and not back:
            break
    for key in list(unseen):
        record = replica.record(key[0], uuid.UUID(int=key[1]))
        if record is not None and record.written == stamps[key]:
            unseen.discard(key)
    return revision, frozenset(unseen | back)
