"""The OVSDB-transactional family: the SPI on top of a replica and one transaction primitive.

A backend of this family supplies:

* ``_transact(db, ops, deadline)``: one OVSDB transaction, answered by the
  server; it raises :class:`TransactNotSent` when the request certainly did
  not reach the server and :class:`TransactLost` when it may have (the reply
  was lost, or did not come by ``deadline``);
* ``_sync(db, deadline)``: returns once the replicas show every commit
  acknowledged (to anybody) before the call;
* ``_replica_for(tables, topics)``: a replica kept current by a monitor of
  those tables in those topics, filtered on the server (None, None: the main
  one, every mapped table of the namespace); and :attr:`mapping` and
  :attr:`namespace`.

Everything else is here: reads from the replica, commits planned from it and
guarded by ``wait``s (:mod:`.planner`), exactly-once retries after a lost
reply (commit tokens, :func:`.settle.settle`), references, revisions,
watches and id allocation; and the data API (:mod:`.data`): unique fields,
native mutations, fenced commits (a backend supplies ``_fenced``), pages and
expiry.
"""

from __future__ import annotations

import functools
import logging
import re
import time
import uuid
from abc import abstractmethod
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, ClassVar

from nbdb import errors
from nbdb.codec import bulk
from nbdb.families import rules
from nbdb.families.ovsdb import results
from nbdb.families.ovsdb.counters import COUNTER_PREFIX, increment_ops, parse_counter, settle_increments
from nbdb.families.ovsdb.data import OvsdbDataApi
from nbdb.families.ovsdb.datum import cell_from_wire, default_cell, wire_map
from nbdb.families.ovsdb.group import GroupTransact, Transact
from nbdb.families.ovsdb.holders import (
    Holders,
    Released,
    WeakExpected,
    WeakWait,
    holder_queries,
    holders_found,
    released_by,
    weak_holders,
    weak_holders_elsewhere,
    weak_targets,
)
from nbdb.families.ovsdb.mapping import EXTERNAL_IDS, Mapping_
from nbdb.families.ovsdb.mutations import LedgerBook, MarkBook
from nbdb.families.ovsdb.ops import wait
from nbdb.families.ovsdb.ovn import DERIVED_COLUMNS, SERVER_TABLES
from nbdb.families.ovsdb.planner import Plan, plan_commit
from nbdb.families.ovsdb.replica import Replica, RevisionClock
from nbdb.families.ovsdb.rows import (
    EXT_NAMESPACE,
    EXT_RAW,
    EXT_TOPIC,
    LEDGER_SETTLE,
    keep_result_stamps,
    new_token,
    no_external_ids,
    parse_window,
    push_window,
)
from nbdb.families.ovsdb.settle import Outcome, reflects, settle, shown_at
from nbdb.families.ovsdb.stream import ReplicaStream
from nbdb.families.ovsdb.unique import key_cells
from nbdb.revision import Revision
from nbdb.spi import CommitResult, LockHandle, Mutate, Record, RecordStream, RefKey, Snapshot, WriteOp

__all__ = ["OvsdbFamilyBackend", "Transact", "TransactLost", "TransactNotSent"]

log = logging.getLogger(__name__)

_ATTEMPTS = 16
_FENCED_GRACE = 0.002
"""Seconds a fenced commit waits for its update on the monitor's connection before asking for a barrier."""
_COUNTER_ATTEMPTS = 64
_WEAK_REPLANS = 3
"""Times a Database without a namespace plans a delete again because another namespace's rows holding the
target weakly changed under it (see _weak_elsewhere): past that, a ConflictError says to try again."""


class TransactNotSent(errors.BackendUnavailableError):
    """The transaction certainly did not reach the server (no connection): safe to send again."""


class TransactLost(errors.BackendUnavailableError):
    """The transaction was sent and its reply lost: it may or may not have committed."""


# ovsdb-server's reason for refusing a delete that a strong reference still holds (ovsdb/transaction.c).
_STILL_HELD = re.compile(r"cannot delete (\w+) row ([0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12})")

_UNSETTLED = (
    "the reply of a commit was lost and its outcome could not be settled ({}): it may or may not have been "
    "applied; re-read the objects before acting again"
)


def _backoff(attempt: int) -> float:
    return float(min(0.01 * 2**attempt, 0.5))


class OvsdbFamilyBackend(OvsdbDataApi):
    """Base of OVSDB backends: subclass it and supply ``_transact``, ``_sync`` and a live replica."""

    mapping: Mapping_
    clock: RevisionClock
    namespace: str = ""
    nb_db: str | None = None
    commit_timeout: float = 20.0
    """Seconds a commit may take: one deadline bounds its sends, the waits for their replies and the settling of a
    lost one (then it says CommitUnknownError, or BackendUnavailableError if nothing was sent)."""
    handles_mutations: ClassVar[bool] = True
    maps_columns: ClassVar[bool] = True
    """Mutations are OVSDB's own ``mutate`` (see :mod:`.mutations`)."""

    @abstractmethod
    def _transact(self, db: str, ops: list[dict[str, Any]], deadline: float | None = None) -> list[Any]:
        """Run one OVSDB transaction on ``db`` and return its result array; TransactLost if no reply by ``deadline``
        (``time.monotonic()``; None: the backend's timeout from now)."""

    @abstractmethod
    def _sync(self, db: str, deadline: float | None = None) -> None:
        """Return once the replicas of ``db`` reflect every commit acknowledged before this call.

        BackendUnavailableError if that cannot be known by ``deadline`` (None: the backend's timeout from now).
        """

    @abstractmethod
    def _replica_for(self, tables: Collection[str] | None, topics: Collection[str | None] | None) -> Replica:
        """A live replica of ``tables`` (None: all) in ``topics`` (None: all), loaded."""

    @property
    def replica(self) -> Replica:
        """The main replica: every mapped table of the namespace (what commits are planned from)."""
        return self._replica_for(None, None)

    def _scoped(self, tables: Sequence[str], topics: Collection[str | None] | None) -> Replica:
        """The replica to read ``tables`` in ``topics`` from: filtered on the server when topics are given."""
        if topics is None:
            return self.replica
        # A child's parent is the parent row whose set column holds it. Objects without a topic include
        # every row another writer made, whose children carry no nbdb:parent hint (ovn-nbctl's ports),
        # and another writer that moves a child between parents' sets (ovn-nbctl remove ... ports --
        # add ... ports) leaves nbdb's hint naming the old one: the parents' tables are followed too,
        # in the same topics (the server filters them as it filters the children).
        mapped = self._with_parents([t for t in tables if t in self.mapping.tables])
        return self._replica_for(mapped, topics)

    def _with_parents(self, tables: list[str]) -> list[str]:
        """``tables`` and the tables of their parents."""
        out = list(tables)
        for table in tables:
            tm = self.mapping.tables[table]
            for ptable, _column in tm.parents.values():
                for parent in self.mapping.by_db_table.get((tm.db, ptable), ()):
                    if parent.table not in out:
                        out.append(parent.table)
        return out

    # ---------------------------------------------------------------- reads

    def _db_of(self, table: str) -> str | None:
        tm = self.mapping.tables.get(table)
        return None if tm is None else tm.db

    def check_table(self, table: str) -> None:
        self.mapping.get(table)

    def unwritable(self, table: str) -> str | None:
        # A row without external_ids cannot hold the namespace (nor a topic, refused per write): in a
        # namespace, it would be written where this Database never reads it.
        tm = self.mapping.tables.get(table)
        if tm is None or tm.external_ids is not None or not self.namespace:
            return None
        return no_external_ids(tm, f"the namespace ({self.namespace!r})")

    def fixed_fields(self, table: str) -> dict[str, Any]:
        # What new_row refuses: a value other than the default of a field whose column the schema lacks.
        tm = self.mapping.tables.get(table)
        return {} if tm is None else {name: fshape.default for name, fshape in tm.missing.items()}

    def unmodelled(self) -> dict[str, int]:
        # Tables of a served database that hold no model, nor a model's children: rows in them are
        # other clients' (ovn-nbctl's meters...). Not the server's own configuration.
        # And columns of mapped tables no field maps, where a row holds a value (a newer schema's
        # column): "<db>.<table>.<column>".
        if self.namespace:
            return {}
        held: dict[str, int] = {}
        for db in self.mapping.databases():
            schema = self.mapping.schemas[db]
            mapped = {t for d, t in self.mapping.by_db_table if d == db} | {t for d, t in self.mapping.links if d == db}
            skip = SERVER_TABLES.get(db, frozenset())
            tables = sorted(t for t in schema.tables if t not in mapped and t not in skip)
            held.update(self._unmapped_values(db))
            if not tables:
                continue
            selects = [{"op": "select", "table": t, "where": [], "columns": ["_uuid"]} for t in tables]
            for table, result in zip(tables, self._idempotent(db, selects), strict=True):
                if rows := len(result.get("rows", [])):
                    held[f"{db}.{table}"] = rows
        return held

    def _unmapped_values(self, db: str) -> dict[str, int]:
        """Rows of mapped tables holding a value other than the default in a column no field maps, by column.

        Updates keep such a value (they write the mapped columns only); a copy or dump reads the models'
        fields and loses it. Columns the server's other clients derive (``DERIVED_COLUMNS``) are not counted.
        """
        schema = self.mapping.schemas[db]
        derived = DERIVED_COLUMNS.get(db, {})
        unmapped: dict[str, list[str]] = {}
        for (d, table), maps in self.mapping.by_db_table.items():
            if d != db or table not in schema.tables:
                continue
            mapped = {c.column for tm in maps for c in tm.columns.values()} | {EXTERNAL_IDS}
            mapped |= {link.column for link in self.mapping.links.get((db, table), [])}
            mapped |= derived.get(table, frozenset())
            if columns := sorted(set(schema.tables[table].columns) - mapped):
                unmapped[table] = columns
        tables = sorted(unmapped)
        selects = [{"op": "select", "table": t, "where": [], "columns": unmapped[t]} for t in tables]
        held: dict[str, int] = {}
        for table, result in zip(tables, self._idempotent(db, selects) if selects else [], strict=True):
            schemas = schema.tables[table].columns
            for column in unmapped[table]:
                ctype = schemas[column].type
                default = default_cell(ctype)
                rows = sum(
                    1
                    for row in result.get("rows", [])
                    if column in row and cell_from_wire(ctype, row[column]) != default
                )
                if rows:
                    held[f"{db}.{table}.{column}"] = rows
        return held

    def check_readable(self, tables: Sequence[str]) -> None:
        # A generated model whose table the served database lacks (see Mapping_.check_served).
        for table in tables:
            self.mapping.check_served(table)  # (a table the mapping holds is served: it returns at once)

    def read(self, table: str, id: uuid.UUID) -> Record | None:
        db = self._db_of(table)
        if db is None:
            self.mapping.check_served(table)
            return None
        self._sync(db)
        with self.replica.cond:
            return self.replica.record(table, id)

    def scan(self, tables: Sequence[str], topics: Collection[str | None] | None) -> Snapshot:
        # A model with no OVSDB table has no objects here (a write of one says why: UnsupportedError),
        # unless its table is one of a served database, whose schema lacks it: UnsupportedError.
        self.check_readable(tables)
        replica = self._scoped(tables, topics)
        for db in sorted({db for t in tables if (db := self._db_of(t)) is not None}):
            self._sync(db)
        with replica.cond:
            return Snapshot(replica.select(tables, topics), replica.revision)

    def referrers(self, table: str, id: uuid.UUID) -> list[RefKey]:
        db = self._db_of(table)
        if db is None:
            return []
        self._sync(db)
        with self.replica.cond:
            return sorted(self.replica.referrer_keys(table, id), key=lambda k: (k[0], str(k[1])))

    def watch(self, tables: Sequence[str], topics: Collection[str | None] | None, since: int) -> RecordStream:
        self.check_readable(tables)
        return ReplicaStream(self._scoped(tables, topics), tables, topics, since)

    def current_revision(self) -> int:
        return self.clock.now()

    @property
    def revision_scope(self) -> object:
        # Revisions count per connection: every replica it feeds shares its clock.
        return self.clock

    def _replicas(self) -> list[Replica]:
        """Every replica this backend made (the test hook below forgets all their histories)."""
        return [self.replica]

    def compact_history(self) -> None:
        for replica in self._replicas():
            replica.compact()

    # ---------------------------------------------------------------- commits

    @functools.cached_property
    def _marks(self) -> MarkBook:
        """This writer's settled mutation marks (see :mod:`.mutations`)."""
        return MarkBook()

    @functools.cached_property
    def _weak_expected(self) -> WeakExpected:
        """The other namespaces' weak holders a refused delete found, for the commits deleting it again."""
        return WeakExpected()

    @functools.cached_property
    def _ledger(self) -> LedgerBook:
        """This writer's settled ledger marks (see :func:`.planner._plan_ledger`)."""
        return LedgerBook()

    @functools.cached_property
    def _ledger_drop(self) -> Callable[[], Sequence[str]]:
        """``self._ledger.droppable``, bound once: every commit hands it to the planner, which asks it only
        of a commit that writes a ledger mark (none of rows with ``external_ids``)."""
        return self._ledger.droppable

    def _select_ledger(self, plan: Plan) -> dict[str, str]:
        """The ``external_ids`` of the ledger row of ``plan`` as the server holds it ({}: no row)."""
        assert plan.ledger is not None
        select = {"op": "select", "table": plan.ledger[0], "where": [], "columns": [EXTERNAL_IDS]}
        rows = self._idempotent(plan.db, [select])[0].get("rows", [])
        return {} if not rows else dict(rows[0].get(EXTERNAL_IDS, ["map", []])[1])

    @functools.cached_property
    def _grouped(self) -> GroupTransact:
        """Unfenced commits' transactions: concurrent ones go out together (see :mod:`.group`)."""
        return GroupTransact(self._transact, TransactLost, TransactNotSent)

    def _fenced(self, fence: LockHandle) -> tuple[str, Transact]:
        """The OVSDB lock behind ``fence`` and a transaction on the session that holds it (backends supply it)."""
        raise errors.UnsupportedError(f"{type(self).__name__} cannot fence writes on a lock")

    def commit(self, ops: Sequence[WriteOp]) -> CommitResult:
        return self._commit(ops, None)

    def commit_fenced(self, ops: Sequence[WriteOp], fence: LockHandle) -> CommitResult:
        return self._commit(ops, fence)

    def commit_mutations(self, ops: Sequence[WriteOp | Mutate], fence: LockHandle | None = None) -> CommitResult:
        return self._commit(ops, fence)

    def _commit(self, ops: Sequence[WriteOp | Mutate], fence: LockHandle | None) -> CommitResult:
        """One commit, sent on the backend's session, or with ``fence`` on the lock's own after its ``assert``."""
        if not ops:
            return CommitResult(self.clock.now(), [])
        replica = self.replica  # once: each lookup builds and hashes a scope under the driver's lock
        lock, transact = (None, self._grouped) if fence is None else self._fenced(fence)
        token = new_token()
        started = time.time()
        # Capped: a commit relies on its marks (a mutation's, the ledger's) only that long (see rows.LEDGER_SETTLE).
        deadline = time.monotonic() + min(self.commit_timeout, LEDGER_SETTLE)
        synced = False
        holder_gone = False
        ledger_made = False
        lost: Plan | None = None  # sent, its reply lost: until settled, a copy of it may still land
        moved = False  # the server refused a copy of ``lost`` because a row it compares changed
        # (See weak_holders_elsewhere: asked on a refusal, and kept for the deletes planned again after it.)
        elsewhere = None if self.namespace else self._weak_expected.expected()
        weak_replans = 0
        for attempt in range(_ATTEMPTS):
            plan = None
            if lost is not None:
                outcome = self._settle(lost, deadline, moved, resend=fence is None)
                if outcome is Outcome.LANDED:
                    lost.settled = True
                    return self._result(lost, deadline, fence is not None)
                if fence is not None:
                    # The lock's connection was the lease: nothing may be sent again under it.
                    raise _fence_lost(fence, outcome)
                if outcome is Outcome.PENDING:
                    if time.monotonic() >= deadline:
                        # Not landed *yet*: a relay may hold the copy sent (its source down) and pass it on later.
                        raise errors.CommitUnknownError(_UNSETTLED.format("no reply within the commit's timeout"))
                    plan = lost  # the same plan again: its waits let at most one copy land
                else:
                    lost, synced = None, True
            if plan is None:
                try:
                    # A plan keeps every operation it builds until it is sent: with the collector
                    # running, they were promoted to the oldest generation, and the full collections
                    # that followed (over the whole replica) cost more than planning itself.
                    with replica.cond, bulk():
                        plan = plan_commit(
                            self.mapping, replica, ops, token, now=started, fence=lock, book=self._marks,
                            ledger_drop=self._ledger_drop, elsewhere=elsewhere,
                        )  # fmt: skip
                        if plan.refused is None:
                            replica.expect(plan.written)
                except (errors.ConflictError, errors.NotFoundError, errors.ReferenceError, errors.CorruptRecordError):
                    # The replica may lag: confirm against a current one before saying so.
                    if synced:
                        raise
                    self._sync(self.mapping.get(ops[0].table).db)
                    synced = True
                    continue
                if plan.refused is not None:
                    raise self._unique_holder(plan) or plan.refused
                if plan.skipped and not synced:
                    # "Gone, nothing to delete" is a decision too: make it on a current replica.
                    self._sync(plan.db)
                    synced = True
                    continue
                if not plan.ops:
                    return CommitResult(self.clock.now(), plan.versions, frozenset(plan.skipped))
            try:
                result = transact(plan.db, plan.ops, deadline)
            except TransactLost as exc:
                log.info("ovsdb: the reply of a commit was lost (%s); settling it", exc)
                lost, moved = plan, False
                continue
            except TransactNotSent as exc:
                expired = time.monotonic() >= deadline  # (then nothing was sent: the time ran out before)
                if fence is not None and not expired:
                    raise _fence_lost(fence, Outcome.NOT_LANDED) from None
                if expired or attempt == _ATTEMPTS - 1:
                    # (Not a ConflictError after the last attempt: nothing conflicted, nothing was sent.)
                    if lost is not None:
                        raise errors.CommitUnknownError(_UNSETTLED.format(exc)) from None
                    raise errors.BackendUnavailableError(f"OVSDB commit not sent: {exc}") from None
                time.sleep(_backoff(attempt))
                synced = False
                continue
            failure = results.check(result)
            if failure is None:
                if elsewhere:
                    self._weak_expected.forget(weak_targets(plan.reasons))
                return self._result(plan, deadline, fence is not None)
            kind = plan.reason(failure.index)[0]
            if isinstance(failure, results.NotOwner) and fence is not None:
                raise _fence_lost(fence, Outcome.NOT_LANDED)
            if isinstance(failure, results.TimedOut) and kind == "marked":
                # A copy sent before landed: its mutation's mark is there (or its ledger mark).
                if plan.ledger is not None:
                    try:
                        self._sync(plan.db, deadline)  # past that copy: its rows keep no token to wait for (reflects)
                    except errors.BackendUnavailableError as exc:
                        # It landed, but no result can be read back: never "not sent" (BackendUnavailableError).
                        raise errors.CommitUnknownError(
                            f"a commit whose reply was lost landed (its mark is there), and the server went away "
                            f"before this client read it back ({exc}): re-read the objects before acting again"
                        ) from None
                    plan.settled = True
                return self._result(plan, deadline, fence is not None)
            if lost is not None:
                if isinstance(failure, results.TimedOut) and kind in ("cas", "absent", "exists"):
                    # Maybe because the lost copy landed, maybe another writer: the rows will tell,
                    # once this client's replica shows the change the server saw.
                    moved = True
                    continue
                if not isinstance(failure, results.NotLeader):
                    # This copy failed; the lost one may still be on its way and meet other rows.
                    raise errors.CommitUnknownError(_UNSETTLED.format(self._diagnose(plan, failure))) from None
            if plan.unique and _refused_unique(failure, kind):
                violation = self._unique_holder(plan)
                if violation is not None:
                    raise violation
                if not holder_gone:
                    holder_gone = True  # its holder is gone already: plan again, once
                    self._sync(plan.db)
                    synced = True
                    continue
            if kind == "ledger" and isinstance(failure, results.TimedOut) and not ledger_made:
                # The database has no configuration row to mark (a server nobody ran ovn-nbctl init or
                # ovn-northd against): make it, unless another client did meanwhile (maxRows 1), and plan again.
                ledger_made = True
                table = plan.reason(failure.index)[1]
                try:
                    self._idempotent(plan.db, [wait(table, [], []), {"op": "insert", "table": table, "row": {}}])
                except errors.BackendUnavailableError:
                    pass  # made by another client meanwhile, or the server is away: the next plan tells
                continue
            if kind == "absent" and isinstance(failure, results.TimedOut):
                # A row has the id of an object this commit creates (the ``wait`` before its insert).
                taken = self._id_elsewhere(plan, plan.reason(failure.index)[1])
                if taken is not None:
                    raise taken
            if kind == "weakly_referenced" and not self.namespace and isinstance(failure, results.TimedOut):
                # Only a weak column's wait (planned after every other: a strong refusal is reported first, and
                # diagnosed below with no sync more). A Database without a namespace waits on every row of a weak
                # column (see weak_holders_elsewhere): another namespace's row holding a deleted target weakly
                # refuses nothing (the server drops its reference), so the plan expects the ones the replica shows.
                # When those changed under the wait (one added or dropped meanwhile, or not shown yet by a lagging
                # replica), plan again, for a plain delete and a transaction's alike; bounded (_WEAK_REPLANS),
                # then a ConflictError. What it found is kept for the commits that delete the target again
                # (WeakExpected): the walk's plan after a refusal for this Database's own holder expects them
                # too. A holder of its own the replica shows fails the wait whatever the others': diagnosed at
                # once then (the delete's walk drops it), not sent again first.
                # Neither those nor a holder of its own on the synced replica (a row another namespace added and
                # dropped again before the refusal was read, which the wait met): planned again too, bounded
                # alike; diagnosed, it named nobody and a transaction's refusal stood.
                found = self._weak_elsewhere(plan, elsewhere or {})
                if found is not None:
                    self._weak_expected.learn(weak_targets(plan.reasons), found)
                    elsewhere = self._weak_expected.expected()
                if not self._weakly_held_here(plan):
                    if weak_replans == _WEAK_REPLANS:
                        raise errors.ConflictError(
                            "another namespace's rows holding a deleted row weakly kept changing under the "
                            f"commit ({_WEAK_REPLANS + 1} times); try again"
                        )
                    weak_replans += 1
                    continue
            if isinstance(failure, results.ReferentialIntegrityViolation):
                named = self._held_past_plan(plan, failure)
                if named is True:
                    # Refused for a parent another writer moved the row to after it was planned (the plan took
                    # it out of its old parent's set: nothing): planned again from the replica _held_past_plan
                    # synced, which shows the new parent, as after a compare-and-swap's refusal (bounded alike).
                    synced = True
                    continue
                raise named if isinstance(named, errors.ReferenceError) else self._unnamed(plan, failure)
            if self._retryable(plan, failure):
                if isinstance(failure, results.NotLeader) or attempt > 1:
                    # A new leader, or a replica behind the server (through a relay): give it time.
                    time.sleep(_backoff(attempt))
                self._sync(plan.db)
                synced = True
                continue
            raise self._diagnose(plan, failure)
        if lost is not None:
            raise errors.CommitUnknownError(_UNSETTLED.format("too many attempts"))
        raise errors.ConflictError("the commit kept conflicting with concurrent writers; try again")

    def _settle(self, plan: Plan, deadline: float, moved: bool = False, resend: bool = True) -> Outcome:
        """The outcome of a commit whose reply was lost, from a replica synced after reconnecting.

        ``moved``: the server said a row the plan compares changed, so the
        replica must show that change before the rows can tell (a relay's copy,
        and so the replica, may lag the leader that refused the copy).
        ``resend``: the commit may be planned again under its token (see :func:`.settle.settle`).
        """
        while True:
            try:
                self._sync(plan.db, deadline)
                break
            except errors.BackendUnavailableError as exc:
                if time.monotonic() > deadline:
                    raise errors.CommitUnknownError(
                        f"the reply of a commit was lost and the server stayed unreachable ({exc}): it may or "
                        "may not have been applied; re-read the objects before acting again"
                    ) from None
                time.sleep(0.1)
        absent = False
        if plan.ledger is not None:
            # The commit's mark in the ledger row says, for the whole transaction (its rows keep no token).
            try:
                ledger = self._select_ledger(plan)
            except errors.BackendUnavailableError:
                ledger = None
            if ledger is not None and ledger.get(plan.ledger[1]) == plan.ledger[2]:
                log.info("ovsdb: a commit whose reply was lost: landed (its ledger mark)")
                return Outcome.LANDED
            # Absent says "not landed" only before the deadline: past it another writer may drop the mark.
            absent = ledger is not None and time.monotonic() < deadline
        with self.replica.cond:
            outcome = settle(plan, self.replica, resend, absent)
            while moved and outcome is Outcome.PENDING:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise errors.CommitUnknownError(
                        _UNSETTLED.format("the server saw its rows change, this client's copy of them did not")
                    )
                self.replica.cond.wait(min(remaining, 0.5))
                outcome = settle(plan, self.replica, resend, absent)
        log.info("ovsdb: a commit whose reply was lost: %s", outcome.value)
        if outcome is Outcome.UNKNOWN:
            raise errors.CommitUnknownError(
                "the reply of a commit was lost and its rows no longer tell whether it was applied (they were "
                "deleted or rewritten since): re-read the objects before acting again"
            )
        return outcome

    def _result(self, plan: Plan, deadline: float, fenced: bool = False) -> CommitResult:
        """The commit's result, once the replica is known to have passed it (read-your-writes).

        ovsdb-server applies a commit before it replies (a relay its source's
        update before it passes the reply on), and sends a connection every
        monitor update it holds before any reply on it (``jsonrpc-server.c``
        flushes the session's monitors first, since OVS 2.3): the reply found
        the replica past the commit, and nearly always showing it. When it
        does not show it, another writer may have deleted or rewritten the
        commit's rows since: that update came right behind the reply, or was
        merged with the commit's own into nothing (a relay, a raft member, a
        busy connection), and the replica will never show the commit. Or the
        reply came on another connection (a fenced commit's, on its lock's),
        or the monitor is being asked for again (a schema conversion cancelled
        it). One empty transaction on the monitor's connection (``_sync``)
        settles it then: its reply comes after the updates of everything the
        server had committed, this commit included, and after the monitors
        asked for again. Waiting for the rows instead stalled such a commit
        for its whole timeout.

        ``fenced``: the reply came on the lock's connection, and the update
        on the monitor's a moment later (nearly always after the reply): it
        is waited for up to ``_FENCED_GRACE`` first, less than a sync's round
        trip costs; the sync decides if it does not come.
        """
        if plan.marks or plan.dropped:
            self._marks.settled(plan.marks, plan.dropped)  # (a lock taken for nothing on every other commit)
        if plan.ledger is not None:
            self._ledger.settled(plan.ledger[1], plan.ledger_dropped, lambda: self._select_ledger(plan))
        replica = self.replica
        passed = synced = False
        while True:
            with replica.cond:
                if not passed and fenced:
                    replica.cond.wait_for(lambda: reflects(plan, replica), _FENCED_GRACE)
                if passed or reflects(plan, replica):
                    undone = passed and not reflects(plan, replica)
                    if not undone:
                        keys = plan.keys
                        # (One row, nearly always: its change, without a generator and max().)
                        revision = (
                            replica.changed(*keys[0])
                            if len(keys) == 1
                            else max((replica.changed(*key) for key in keys), default=0)
                        )
                    else:
                        # Undone by another writer since: its rows' last change is that writer's, later than
                        # this commit. Stamped with that, a cache standing there without the object took the
                        # write for lost, and a watch from it never delivered the undoing change.
                        # Rows of it no revision showed (a relay merged their writes with another writer's
                        # delete, or their delete with its creation again) are told as a merged catch-up, even
                        # when a revision showed the others.
                        revision, unseen = shown_at(plan, replica)
                        if synced and unseen:
                            revision = self._merged_away(plan, unseen)
                    versions = list(plan.versions)
                    for index, key in plan.mutated:
                        record = replica.record(*key)
                        versions[index] = 0 if record is None else record.version
                    # The revision carries the commit's token (rows.written_token of every row it put): the
                    # planner compares a result's token with its row's, as a read copy's, never its revision
                    # with the clock's (a revision read before the commit showed was refused once the update
                    # came as 'created again').
                    written = (
                        _written_stamp(plan) if plan.bare else int(plan.token, 16)
                    )  # (no call: an ordinary commit)
                    stamp = Revision(revision or replica.revision, self.clock, written)
                    result = CommitResult(stamp, versions, frozenset(plan.skipped) if plan.skipped else _NONE_SKIPPED)
                    if not undone:
                        return result
                    break
            passed = True
            try:
                self._sync(plan.db, deadline)
                synced = True
            except errors.BackendUnavailableError as exc:
                # It landed all the same: the replica shows it, or what came after, once reconnected.
                log.warning("ovsdb: could not confirm that this client's monitor passed a commit: %s", exc)
        replica.hand_over_now()  # what _merged_away recorded, if anything (not under cond)
        if synced:
            self._merged_away_scoped(plan, replica)
        return result

    def _merged_away_scoped(self, plan: Plan, main: Replica) -> None:
        """Tell each other replica (a cache or watch of some tables or topics) of the undone commit's rows it
        never showed, as :meth:`_merged_away` told the main one (called after it: later revisions than the
        result's). The same merged update never showed them the commit either, and a watch of the commit's
        topic from its result went on without hearing its object was gone (or back)."""
        for replica in self._replicas():
            if replica is main:
                continue
            with replica.cond:
                unseen = shown_at(plan, replica)[1]
                topics = replica.topics
                if topics is not None:
                    # A put row of another topic never reaches it: not unseen, unfollowed (held ones are followed).
                    unseen = frozenset(
                        key for key in unseen if key not in plan.written or plan.written[key].doc.topic in topics
                    )
                if not unseen:
                    continue
                self._merged_away(plan, unseen, replica)
            replica.hand_over_now()

    def _merged_away(self, plan: Plan, unseen: Collection[tuple[str, int]], replica: Replica | None = None) -> int:
        """The revision to stamp a commit with whose rows ``unseen`` no revision of the replica showed (under ``cond``).

        Their update was merged with the one of another writer's change that undid them (a relay, a busy
        connection), the whole commit's or just those rows': :meth:`.Replica.merged_away` records that
        at a new revision, and this is the one before it (a watch from it stops there and lists again; a
        cache stands past it, never exactly at it without the object: the store did not go back in
        time). Stamped at a revision that showed the commit's other rows, a cache standing there without
        an unseen row took its write for lost, and a watch from it never heard the row was gone. A row
        the commit deleted and the replica holds again (created again under its id) is told as it is
        now: stamped after that, a watch from the result never heard it was back. ``replica``: another than
        the main one (see :meth:`_merged_away_scoped`).
        """
        replica = self.replica if replica is None else replica
        rows: list[tuple[Record | None, Record | None]] = []
        for key, written in plan.written.items():
            if key not in unseen:
                continue
            table, id = key[0], uuid.UUID(int=key[1])
            doc = written.doc
            record = Record(table, id, doc.topic, plan.puts[key], doc.data, None, plan.stamp_of(key))
            rows.append((record, replica.record(table, id)))
        for key in sorted(unseen - plan.written.keys()):
            # A row it deleted, held again: another writer created it again, merged with the delete.
            rows.append((None, replica.record(key[0], uuid.UUID(int=key[1]))))
        before = replica.revision
        replica.merged_away(rows)
        log.info("ovsdb: a commit came and went unseen (merged with another writer's change): told as a catch-up")
        return before

    @staticmethod
    def _retryable(plan: Plan, failure: results.OperationError) -> bool:
        """A failure that planning again from a current replica settles (or a leader change)."""
        if isinstance(failure, results.NotLeader):
            return True
        kind = plan.reason(failure.index)[0]
        if isinstance(failure, results.TimedOut):
            return kind in ("cas", "absent", "exists")
        return isinstance(failure, results.DuplicateUuid)

    def _diagnose(self, plan: Plan, failure: results.OperationError) -> errors.NbdbError:
        kind, detail = plan.reason(failure.index)
        if isinstance(failure, results.TimedOut):
            if kind == "ledger":
                return errors.UnsupportedError(
                    f"{plan.db} has no {detail} row, where nbdb marks a commit of rows without external_ids "
                    "(ovn-nbctl init or ovn-northd makes it)"
                )
            if kind == "target":
                (table, id), target = detail
                return rules.dangling((table, id), target)
            if kind in ("children", "referenced", "weakly_referenced"):
                # Named as every referrer when the synced replica's rows show no holder it cannot name
                # (see Replica.names_every_referrer): a plain delete refused for one it can neither drop
                # nor take along (a switch's port) then stands at once, not after the same plan's second
                # refusal, and one planned again walks from them rather than listing them again.
                # The replica shows the rows as they were before the commit: those the plan deletes itself
                # (a port deleted with its switch) hold the target no more once it is applied, so they are
                # no holders to name, as the other stores name only what would still point to it (they
                # still count as accounted for when asking whether the rest is every holder).
                # When the replica cannot tell (a namespace's: another namespace's or client's rows never
                # reach it), the server's rows do: see _held_on_server.
                self._sync(plan.db)
                going = {why[1] for why in plan.reasons if why[0] == "delete"}
                unseen: list[RefKey] = []
                with self.replica.cond:
                    found = self.replica.referrer_keys(*detail)
                    every = self.replica.names_every_referrer(detail[0], detail[1], found)
                second: list[RefKey] = []
                if not every:
                    # (Its parents' sets too, but the rows the commit takes it out of: another holding it still is
                    # a second parent another client put it in, which refuses it as any strong holder; a parent
                    # another writer moved it to after the plan (stale) is none: the walk's plan releases it.)
                    held = self._held_on_server(detail, released_by(plan.ops, detail[1]))
                    if held is not None:
                        found, unseen, second, every = held.found, held.unseen, held.second, True
                return self._still_held(detail, going, found, unseen, every, second)
        if kind == "unique" or (isinstance(failure, results.ConstraintViolation) and failure.unique_index):
            return errors.ConflictError(f"another object holds a unique value of this commit: {failure.details}")
        if isinstance(failure, results.ConstraintViolation):
            return errors.ValidationError(f"OVSDB refused a value: {failure.details}")
        if isinstance(failure, results.ReferentialIntegrityViolation):
            named = self._held_past_plan(plan, failure)
            return named if isinstance(named, errors.ReferenceError) else self._unnamed(plan, failure)
        return errors.ValidationError(f"OVSDB refused the commit: {failure}")

    def _unnamed(self, plan: Plan, failure: results.OperationError) -> errors.ReferenceError:
        """The server's referential-integrity refusal, its holders not named as objects (see _held_past_plan)."""
        return errors.ReferenceError(f"OVSDB referential integrity: {failure.details}{self._holders(plan.db, failure)}")

    def _weak_elsewhere(
        self, plan: Plan, expected: Mapping[WeakWait, Sequence[str]]
    ) -> dict[WeakWait, list[str]] | None:
        """The rows of other namespaces holding ``plan``'s deleted targets weakly (weak_holders_elsewhere), when
        they are not the ``expected`` ones its waits failed on; None when they are, on a synced replica too (the
        refusal is not theirs). Read first as the replica stands (no round trip when it shows the change), then
        once more after a sync (a replica behind the server)."""
        targets = [why[1] for why in plan.reasons if why[0] == "weakly_referenced"]
        keys = weak_targets(plan.reasons)
        expected = {wait: rows for wait, rows in expected.items() if wait[0] in keys}  # (kept for other targets too)
        for sync in (False, True):
            if sync:
                self._sync(plan.db)
            with self.replica.cond:
                found = weak_holders_elsewhere(self.mapping, self.replica.rows_of, "", targets)
            if found != expected:
                return found
        return None

    @staticmethod
    def _still_held(
        target: RefKey,
        going: Collection[RefKey],
        found: Iterable[RefKey],
        unseen: Iterable[RefKey],
        every: bool,
        second: Iterable[RefKey] = (),
    ) -> errors.ReferenceError:
        """The refusal of ``target``'s delete for ``found`` (those the commit deletes itself left out: they hold it
        no more once it is applied, as the other stores name only what would still point to it); ``unseen``:
        those this Database cannot read, ``second``: those no plan of it drops (see :class:`.holders.Holders`)."""
        refs = sorted((ref for ref in found if ref not in going), key=str)
        hidden = [ref for ref in unseen if ref not in going]
        fixed = [ref for ref in second if ref not in going]
        return rules.still_referenced(target, refs, every=every and bool(refs), unseen=hidden, undroppable=fixed)

    def _held_past_plan(self, plan: Plan, failure: results.OperationError) -> errors.ReferenceError | bool:
        """The server's own refusal of a row ``plan`` deletes (``cannot delete T row U``: a strong reference no
        wait of the plan covers, as a second parent's set another client put the row in, or a column no model
        maps), named as every holder the server's rows show once the commit's own writes are applied: the row's
        own parent, whose set the commit takes it out of, is none. False when they cannot be named; True when
        the plan was stale (:attr:`.holders.Holders.stale`: another writer moved the row to another parent after
        it was planned, from a replica behind the server; the replica is synced here: plan again)."""
        still = _STILL_HELD.search(failure.details or "")
        going = [why[1] for why in plan.reasons if why[0] == "delete"]
        if still is None:
            return False
        db_table, row = still.groups()
        target = next((k for k in going if str(k[1]) == row and self.mapping.get(k[0]).db_table == db_table), None)
        if target is None:
            return False
        try:
            self._sync(plan.db)  # (its own namespace's holders shown, not taken for unseen ones)
        except errors.BackendUnavailableError:
            return False
        held = self._held_on_server(target, released_by(plan.ops, target[1]))
        if held is None:
            return False
        if held.stale:
            return True
        if not [ref for ref in held.found if ref not in going]:
            return False
        return self._still_held(target, going, held.found, held.unseen, True, held.second)

    def _weakly_held_here(self, plan: Plan) -> bool:
        """Whether the replica shows a row of this Database (no ``nbdb:ns``) that ``plan`` neither writes nor
        deletes holding one of its weak waits' targets in a column it waits on: those waits fail for it whatever
        the other namespaces' rows, so planning again for theirs cannot land the commit (read on a refusal)."""
        targets = [why[1] for why in plan.reasons if why[0] == "weakly_referenced"]
        written = {key[1] for key in plan.written} | {why[1][1].int for why in plan.reasons if why[0] == "delete"}
        with self.replica.cond:
            found = weak_holders(self.mapping, self.replica.rows_of, "", targets, mine=True)
        return any(uuid.UUID(row).int not in written for rows in found.values() for row in rows)

    def _held_on_server(self, target: RefKey, released: Released | None = None) -> Holders | None:
        """Every object holding ``target`` as the server's rows show them, those of them this client's replica
        does not show (another namespace's or client's rows) and its second parents (:class:`.holders.Holders`);
        None when they cannot be named (see :func:`.holders.holders_found`) or the server cannot be asked now.

        One transaction of one ``select`` per column that can hold it, on a refusal only (see
        :mod:`.holders`): the replica, synced before, shows every holder of this namespace it selects.
        """
        queried = holder_queries(self.mapping, *target, self.namespace, released)
        if queried is None:
            return None
        db, queries = queried
        try:
            replies = self._transact(db, [query.op for query in queries])
        except errors.NbdbError:
            return None
        if results.check(replies) is not None:
            return None
        replica = self.replica
        with replica.cond:
            return holders_found(
                self.mapping, db, target[1], queries, replies, lambda t, i: replica.record(t, i) is not None
            )

    def _holders(self, db: str, failure: results.OperationError) -> str:
        """The rows whose strong references made the server refuse a delete, as text to add to its error.

        The server names the row it could not delete, not who holds it; when that is a column no model
        maps (``NAT.allowed_ext_ips`` holding an ``Address_Set``), nbdb's own referrers know nothing of
        it either. One ``select`` per column of the served schema that references the row's table finds
        them; "" when the reason is not that one or the server cannot be asked now.
        """
        found = _STILL_HELD.search(failure.details or "")
        schema = self.mapping.schemas.get(db)
        if found is None or schema is None:
            return ""
        target, row = found.groups()
        columns: list[tuple[str, str]] = []
        for table in schema.tables.values():
            for column in table.columns.values():
                key = column.type.key
                if column.type.value is None and key.ref_table == target and key.ref_type == "strong":
                    columns.append((table.name, column.name))
        if not columns:
            return ""
        selects = [
            {"op": "select", "table": t, "where": [[c, "includes", ["uuid", row]]], "columns": ["_uuid"]}
            for t, c in columns
        ]
        try:
            replies = self._transact(db, selects)
        except errors.NbdbError:
            return ""
        if results.check(replies) is not None:
            return ""
        held = [
            f"{table} {found_row['_uuid'][1]} ({column})"
            for (table, column), reply in zip(columns, replies, strict=False)
            for found_row in reply.get("rows", [])
        ]
        return f"; held by {', '.join(sorted(held))}" if held else ""

    # ---------------------------------------------------------------- ids and raw writes

    def _select_nb_global(self) -> dict[str, Any] | None:
        assert self.nb_db is not None
        select = {"op": "select", "table": "NB_Global", "where": [], "columns": ["_uuid", EXTERNAL_IDS]}
        rows = sorted(self._idempotent(self.nb_db, [select])[0].get("rows", []), key=lambda r: str(r["_uuid"][1]))
        return rows[0] if rows else None

    def allocate_id(self, name: str) -> int:
        """The next value of a counter kept in ``NB_Global.external_ids:nbdb:id:<namespace>/<name>``.

        The entry holds the value and the tokens of its last increments, so an
        increment whose reply was lost is recognised (or proven not applied)
        by a later read. A read may lag (a relay answers it from its copy):
        a value not reached yet proves nothing, and the loop computes the
        same increment again, which can land only if the lost one did not.
        """
        schema = self.mapping.schemas.get(self.nb_db or "")
        if self.nb_db is None or schema is None or schema.table("NB_Global") is None:
            raise errors.UnsupportedError("allocate_id needs the OVN_Northbound database (NB_Global)")
        key = f"{COUNTER_PREFIX}{self.namespace}/{name}"
        token = new_token()
        deadline = time.monotonic() + self.commit_timeout
        lost: set[int] = set()  # values of increments whose reply was lost
        for attempt in range(_COUNTER_ATTEMPTS):
            try:
                row = self._select_nb_global()
            except errors.BackendUnavailableError as exc:
                if lost and time.monotonic() > deadline:
                    raise errors.CommitUnknownError(f"id counter {name!r}: {_UNSETTLED.format(exc)}") from None
                if not lost:
                    raise
                time.sleep(_backoff(attempt))  # the session fails at once while the server stays down
                continue
            ext = {} if row is None else dict(row[EXTERNAL_IDS][1])
            current, window = parse_counter(ext.get(key), name)
            landed = settle_increments(lost, current, parse_window(window), token, name)
            if landed is not None:
                return landed
            value = current + 1
            entry = f"{value} {push_window(window, token, value)}"
            ops = increment_ops(row, key, ext.get(key), entry)
            try:
                result = self._transact(self.nb_db, ops, deadline)
            except TransactLost:
                lost.add(value)
                continue
            except TransactNotSent as exc:
                if attempt == _COUNTER_ATTEMPTS - 1 or time.monotonic() > deadline:
                    if lost:
                        raise errors.CommitUnknownError(f"id counter {name!r}: {_UNSETTLED.format(exc)}") from None
                    raise errors.BackendUnavailableError(f"id counter {name!r}: not sent: {exc}") from None
                time.sleep(_backoff(attempt))
                continue
            if results.check(result) is None:
                return value
            time.sleep(min(0.001 * 2 ** min(attempt, 8), 0.05))
        if lost:
            raise errors.CommitUnknownError(f"id counter {name!r}: {_UNSETTLED.format('too many attempts')}")
        raise errors.ConflictError(f"id counter {name!r}: too much contention; try again")

    def write_raw(self, table: str, id: uuid.UUID, topic: str | None, data: bytes) -> None:
        """Store ``data`` as the record's content (kept verbatim in ``external_ids:nbdb:raw``)."""
        import base64

        tm = self.mapping.get(table)
        ext = {EXT_RAW: base64.b64encode(data).decode()}
        if topic is not None:
            ext[EXT_TOPIC] = topic
        if self.namespace:
            ext[EXT_NAMESPACE] = self.namespace
        self._sync(tm.db)
        with self.replica.cond:
            row = self.replica.row(tm, id)
            old = None if row is None else dict(row.get(EXTERNAL_IDS) or {})
        if old is None:
            if not tm.is_root:
                raise errors.UnsupportedError(f"{tm.db_table} rows live only inside a parent; cannot write one raw")
            row_json = {EXTERNAL_IDS: wire_map(ext.items()), **key_cells(tm, self.namespace, id, ())}
            op: dict[str, Any] = {"op": "insert", "table": tm.db_table, "uuid": str(id), "row": row_json}
        else:
            old.update(ext)
            where = [["_uuid", "==", ["uuid", str(id)]]]
            op = {"op": "update", "table": tm.db_table, "where": where, "row": {EXTERNAL_IDS: wire_map(old.items())}}
        failure = results.check(self._transact(tm.db, [op]))
        if failure is not None:
            raise errors.BackendUnavailableError(f"OVSDB refused a raw write: {failure}")


def _refused_unique(failure: results.OperationError, kind: str) -> bool:
    """The server refused a commit for a unique value: its own index, or the plan's ``wait``."""
    if isinstance(failure, results.ConstraintViolation):
        return failure.unique_index
    return isinstance(failure, results.TimedOut) and kind == "unique"


_NONE_SKIPPED: frozenset[int] = frozenset()
"""A result's ``skipped`` when its commit skipped nothing (every commit nearly): one shared empty set."""


def _written_stamp(plan: Plan) -> int:
    """What a commit's result carries as :attr:`.Revision.written` (see :func:`nbdb.models.base.written_of`).

    The commit's token, which every row it puts keeps; a commit of one row without ``external_ids``
    (which keeps none) its content's stamp instead (:func:`.rows.content_stamp`), so that its result compares
    with the row as a read copy does, on every connection. A commit of several rows gives them all the token
    (one per commit), which the rows without ``external_ids`` do not keep: the content stamp of each is kept
    by the token (:func:`.rows.keep_result_stamps`), which :func:`.planner._current` compares as a read copy's
    (a result whose token it does not know is refused, never compared by its version alone). Asked only of
    a plan with such puts (``plan.bare``): an ordinary one's result carries its token, at no cost.
    """
    if len(plan.puts) == 1 and len(plan.written) == 1:
        (key,) = plan.written
        return plan.stamp_of(key)  # (a row with external_ids: the token)
    token = int(plan.token, 16)
    keep_result_stamps(token, {key: stamp for key in plan.written if (stamp := plan.stamp_of(key)) != token})
    return token


def _fence_lost(fence: LockHandle, outcome: Outcome) -> errors.NbdbError:
    """The error of a fenced commit whose lock is gone: nothing written, or nobody can tell (``outcome``)."""
    fence.mark_lost()
    if outcome is Outcome.NOT_LANDED:
        return rules.lock_lost(fence.name)
    return errors.CommitUnknownError(
        f"lock {fence.name!r} was lost with the reply of a fenced commit, which may yet land or not: "
        "re-read the objects before acting again"
    )
