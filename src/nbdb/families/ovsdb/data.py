"""The OVSDB family's data API around commits: who holds a unique value, pages, and expiry.

* **Unique holders** are found with a ``select`` on the server (the rows that
  hold a value, in any namespace), both for :meth:`unique_owner` and to name
  the holder when the server refused a commit.
* **Pages** come from the replica at one revision (:mod:`.pages`).
* **Expiry** is a documented reaper: an object created with a ttl keeps its
  ttl and its deadline (wall-clock seconds) in ``external_ids`` (``nbdb:ttl``,
  ``nbdb:expires``), which :meth:`refresh` moves; every connected Database
  calls :meth:`reap`, which deletes the objects past their deadline, each with
  an ordinary commit whose compare-and-swap covers the deadline: a refresh
  that lands first wins, two reapers delete an object once, a referenced
  object stays until its referrers go, and watchers see the deletion.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from abc import abstractmethod
from collections.abc import Collection, Sequence
from typing import Any

from nbdb import errors
from nbdb.families import rules
from nbdb.families.ovsdb import results
from nbdb.families.ovsdb.datum import atom_to_wire, wire_map
from nbdb.families.ovsdb.mapping import EXTERNAL_IDS, Mapping_
from nbdb.families.ovsdb.ops import where_uuid
from nbdb.families.ovsdb.pages import Listings
from nbdb.families.ovsdb.planner import Plan, plan_commit
from nbdb.families.ovsdb.replica import Replica
from nbdb.families.ovsdb.rows import EXT_EXPIRES, EXT_TTL
from nbdb.families.ovsdb.unique import diagnose, holder_select, holder_where, owner, selected_namespace, stored_value
from nbdb.spi import ANY_VERSION, Backend, Delete, RefKey, Snapshot, UniqueKey

__all__ = ["OvsdbDataApi"]

log = logging.getLogger(__name__)

_ATTEMPTS = 16
REAP_BATCH = 100
"""The most objects one reaper pass deletes (the next pass goes on)."""


class OvsdbDataApi(Backend):
    """Unique holders, pages and expiry on top of the family's replica and transactions."""

    mapping: Mapping_
    namespace: str = ""

    @property
    @abstractmethod
    def replica(self) -> Replica:
        """The main replica (see :class:`nbdb.families.ovsdb.OvsdbFamilyBackend`)."""

    @abstractmethod
    def _transact(self, db: str, ops: list[dict[str, Any]], deadline: float | None = None) -> list[Any]:
        """One OVSDB transaction."""

    @abstractmethod
    def _sync(self, db: str, deadline: float | None = None) -> None:
        """Return once the replicas show every commit acknowledged before the call."""

    @abstractmethod
    def _scoped(self, tables: Sequence[str], topics: Collection[str | None] | None) -> Replica:
        """The replica that follows ``tables`` in ``topics``."""

    def _loaded_replica(self) -> Replica | None:
        """The main replica if it is loaded already (None: this Database has not needed it; it need not reap)."""
        return self.replica

    @functools.cached_property
    def _listings(self) -> Listings:
        return Listings()

    def _idempotent(self, db: str, ops: list[dict[str, Any]]) -> list[Any]:
        """The results of operations that may run twice (reads, a refresh), sent again while the server is away."""
        for attempt in range(_ATTEMPTS):
            try:
                result = self._transact(db, ops)
            except errors.BackendUnavailableError:
                time.sleep(min(0.01 * 2**attempt, 0.5))
                continue
            failure = results.check(result)
            if failure is not None:
                raise errors.BackendUnavailableError(f"OVSDB refused a request on {db}: {failure}")
            return result
        raise errors.BackendUnavailableError(f"OVSDB requests on {db} kept failing")

    # ---------------------------------------------------------------- unique values

    def _unique_holder(self, plan: Plan) -> errors.UniqueViolationError | None:
        """The unique value of ``plan`` another row holds now, naming it (None: nobody holds any)."""
        tables = self.mapping.tables
        checks = [c for c in plan.unique if c.rule.key_column is not None or c.rule.where_ok]
        if not checks:
            return None
        selects = [
            holder_select(tables[c.key[0]], holder_where(tables[c.key[0]], c.rule, self.namespace, c.value))
            for c in checks
        ]
        found = [r.get("rows", []) for r in self._idempotent(plan.db, selects)]
        return diagnose(checks, found, tables, self.namespace, (key[1] for key in plan.keys))

    def _id_elsewhere(self, plan: Plan, key: RefKey) -> errors.ConflictError | None:
        """The error of a create of ``key`` the server refused because a row has its id, if that row is another
        namespace's (None: no row has it now, or this namespace's: planning again on a synced replica settles).

        That row is never in this namespace's replica, so planning again never sees it, and the server
        refused the insert every time until the commit gave up as "kept conflicting" (after seconds).
        """
        tm = self.mapping.get(key[0])
        select = {"op": "select", "table": tm.db_table, "where": where_uuid(key[1]), "columns": [EXTERNAL_IDS]}
        rows = self._idempotent(plan.db, [select])[0].get("rows", [])
        if not rows or selected_namespace(rows[0]) == self.namespace:
            return None
        # Not named (no key): reading it here finds nothing, so create(may_exist=True) raises this too.
        return rules.already_exists(key, "as a row of another namespace, not visible in this one", visible=False)

    def stored_unique(self, table: str, key: UniqueKey) -> UniqueKey:
        tm = self.mapping.tables.get(table)
        rule = None if tm is None else tm.unique_rule(key.field)
        if tm is None or rule is None:
            return key
        return UniqueKey(key.field, stored_value(tm, rule, key.value))

    def unique_owner(self, table: str, key: UniqueKey) -> uuid.UUID | None:
        tm = self.mapping.get(table)
        rule = tm.unique_rule(key.field)
        if rule is None:
            raise errors.ValidationError(f"{table} has no unique field group {key.field!r}")
        select = holder_select(tm, holder_where(tm, rule, self.namespace, key.value))
        rows = self._idempotent(tm.db, [select])[0].get("rows", [])
        return owner(tm, rule, self.namespace, rows, ())[1]

    # ---------------------------------------------------------------- pages

    def scan_page(
        self, tables: Sequence[str], topics: Collection[str | None] | None, limit: int, after: str | None
    ) -> Snapshot:
        if after is None:
            for db in sorted({tm.db for t in tables if (tm := self.mapping.tables.get(t)) is not None}):
                self._sync(db)
        mapped = [t for t in tables if t in self.mapping.tables]
        return self._listings.page(self._scoped(mapped, topics), mapped, topics, limit, after)

    # ---------------------------------------------------------------- expiry

    def refresh(self, table: str, id: uuid.UUID, ttl: float) -> None:
        tm = self.mapping.get(table)
        self._sync(tm.db)
        with self.replica.cond:
            found = self.replica.record(table, id) is not None
            row = self.replica.row(tm, id) if found else None
        if row is None:
            raise rules.not_found((table, id), "expired or deleted")
        if EXT_TTL not in (row.get(EXTERNAL_IDS) or {}):
            raise rules.no_ttl((table, id))
        deadline = f"{time.time() + ttl:.3f}"
        mutations = [
            [EXTERNAL_IDS, "delete", ["set", [atom_to_wire("string", EXT_EXPIRES)]]],
            [EXTERNAL_IDS, "insert", wire_map([(EXT_EXPIRES, deadline)])],
        ]
        mutate = {"op": "mutate", "table": tm.db_table, "where": where_uuid(id), "mutations": mutations}
        if self._idempotent(tm.db, [mutate])[0].get("count") != 1:
            raise rules.not_found((table, id), "expired or deleted")

    def ttls(self, tables: Sequence[str]) -> dict[RefKey, float]:
        wanted = frozenset(tables)
        out: dict[RefKey, float] = {}
        replica = self.replica
        with replica.cond:
            for key in replica.expiring:
                tm = self.mapping.tables.get(key[0])
                row = None if tm is None or key[0] not in wanted else replica.row(tm, key[1])
                try:
                    ttl = None if row is None else float((row.get(EXTERNAL_IDS) or {})[EXT_TTL])
                except (KeyError, ValueError):
                    ttl = None
                if ttl is not None:
                    out[key] = ttl
        return out

    def reap(self) -> int:
        """Delete the objects past their deadline (at most :data:`REAP_BATCH`); how many it deleted.

        Each deletion is its own transaction, planned from the replica: it
        waits for the row exactly as the replica shows it (deadline included),
        so a refresh or any other write that lands first makes it fail, and
        the object is looked at again on a later pass.
        """
        replica = self._loaded_replica()
        if replica is None:
            return 0  # a Database that only follows some topics leaves reaping to those that write
        now = time.time()
        plans: list[Plan] = []
        with replica.cond:
            due = sorted((deadline, key) for key, deadline in replica.expiring.items() if deadline <= now)
            for _deadline, key in due[:REAP_BATCH]:
                record = replica.record(*key)
                if record is None:
                    continue
                delete = Delete(key[0], key[1], record.topic, ANY_VERSION)
                try:
                    plans.append(plan_commit(self.mapping, replica, [delete], uuid.uuid4().hex[:16], now=now))
                except errors.NbdbError as exc:
                    log.debug("reaper: %s %s not deleted this pass: %s", *key, exc)
        reaped = 0
        for plan in plans:
            try:
                failure = results.check(self._transact(plan.db, plan.ops))
            except errors.BackendUnavailableError as exc:
                log.debug("reaper: pass stopped (%s); the next one goes on", exc)
                break
            if failure is None:
                reaped += 1
            else:
                log.debug("reaper: %s %s changed, was refreshed or is referenced: %s", *plan.keys[0], failure)
        return reaped
