"""References across partitions: reserve on the target before the commit, verify before a delete.

A conditional batch is one partition, so a reference from an object of topic
A to an object of topic B cannot be checked atomically with the commit that
writes it. The protocol, with no clock involved:

1. Before its commit, the source *reserves* an entry on the target with a
   compare-and-set (``IF EXISTS``); the entry names the reservation and the
   source's partition. A target that is gone makes this fail: ReferenceError.
2. A delete of the target reads its referrers. An entry written by a same-
   partition commit is live. A reserved entry is live if its source holds the
   reference. If the source does not (yet), its commit is either abandoned or
   in flight: the deleter takes a new revision for the source's partition
   and *seals* it there, so an in-flight commit of the source fails (its
   writer re-plans and must reserve again, which fails once the target is
   gone). Then it checks again, drops the entry, and re-plans.
3. When a source stops pointing to a target in another partition, its entry
   is dropped after the commit; an entry left behind by a failure is cleared
   by the next delete of the target, as in 2.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from nbdb import errors
from nbdb.families import rules
from nbdb.families.widecolumn import layout as L
from nbdb.families.widecolumn.partitions import Partitions
from nbdb.families.widecolumn.planner import Plan
from nbdb.families.widecolumn.primitives import OutcomeUnknown, Write
from nbdb.families.widecolumn.sequencer import RevisionSequencer
from nbdb.spi import RefKey

__all__ = ["ReferenceProtocol", "Replan"]

log = logging.getLogger(__name__)

Reservations = dict[tuple[str, RefKey, str], str]
"""(target partition, target, source ref) -> the reservation written there."""


class Replan(Exception):
    """Internal: the commit repaired a stale reservation (or could not tell); plan it again."""


class ReferenceProtocol:
    """Reservations of cross-partition references, and the checks of a delete."""

    def __init__(self, partitions: Partitions, sequencer: RevisionSequencer) -> None:
        self._p = partitions
        self._sequencer = sequencer

    def holds_reference(self, source: RefKey, target: RefKey) -> bool:
        """Whether ``source`` exists and references ``target`` (verifies a reservation)."""
        found = self._p.find(source)
        return found is not None and target in found[1].refs

    def referrers(self, table: str, id: uuid.UUID) -> list[RefKey]:
        """The verified referrers of an object."""
        found = self._p.find((table, id))
        if found is None:
            return []
        out = []
        for text, reservation in sorted(found[1].referrers.items()):
            source = L.parse_ref(text)
            if not reservation or self.holds_reference(source, (table, id)):
                out.append(source)
        return out

    def reserve(self, plan: Plan, reserved: Reservations) -> None:
        """Reserve the plan's cross-partition references on their targets (one compare-and-set each)."""
        for target_part, target, source in plan.reserve:
            reservation = f"{uuid.uuid4().hex}:{plan.partition}"
            reserved[(target_part, target, source)] = reservation
            statement = (
                L.W_REF_RESERVE,
                (self._p.ns, target_part, L.OBJECT, 0, *target, {source: reservation}, 0, None),
            )
            try:
                result = self._p.store.apply([statement])
            except OutcomeUnknown:
                row = self._p.object_row(target_part, *target)
                if row is not None and row.ttl_ms is None:
                    raise Replan() from None  # plan again: reserving anew is harmless
                expires = row is not None
            else:
                if result.applied:
                    continue
                expires = result.value("version") is not None and result.value("ttl_ms") is not None
            self._p.forget(target)
            if expires:
                raise rules.ttl_referenced(L.parse_ref(source), target)
            raise rules.dangling(L.parse_ref(source), target)

    def check_deletes(self, plan: Plan) -> None:
        """ReferenceError if a deleted object is still referenced; Replan after clearing an abandoned entry."""
        for target in sorted(set(plan.live) | set(plan.verify)):
            live = list(plan.live.get(target, ()))
            if live:
                live = self._drop_foreign_entries(plan.partition, target, live)
            abandoned = []
            for source, reservation in plan.verify.get(target, ()):
                if self.holds_reference(L.parse_ref(source), target):
                    live.append(source)
                else:
                    abandoned.append((source, reservation))
            if live:
                # Every entry of the target's row read for the plan was weighed (its own commits' sources
                # checked, each reservation's source asked): these are all its referrers, and a plain
                # delete refused for one it can neither drop nor take along stands at once.
                raise rules.still_referenced(target, [L.parse_ref(text) for text in sorted(live)], every=True)
            for source, reservation in abandoned:
                source_part = reservation.partition(":")[2]
                # Stop the source's commit if it is still in flight: after the seal
                # it either landed (and holds the reference) or never will.
                self._p.seal(source_part, self._sequencer.allocate(source_part, frozenset()))
                if self.holds_reference(L.parse_ref(source), target):
                    raise rules.still_referenced(target, [L.parse_ref(source)])
                self._release_entry(plan.partition, target, source, reservation)
            if abandoned:
                raise Replan()

    def _drop_foreign_entries(self, part: str, target: RefKey, live: list[str]) -> list[str]:
        """Before a delete is refused for ``live`` referrers (entries a source's own commit wrote), check them.

        Such an entry lands with its source, in one batch of the partition, and goes with it: one
        whose source does not exist or does not point here is another writer's. Trusted, it refused
        the delete for good (ReferenceError naming an object that does not exist, and cascade=True
        failed with NotFoundError on it). The sources are read only when the delete is refused
        anyway; foreign entries are dropped: the real referrers are returned, and with none the
        delete is planned again.

        The drop holds only if no commit landed in the partition since the sources were read (its
        ``last_rev``, read first, is unchanged): a source that dropped the reference and took it
        again meanwhile wrote the same '' entry, which a drop conditioned on the entry alone took,
        letting the delete leave that source's reference dangling.
        """
        last = self._p.last_rev(part, serial=True)
        real = [text for text in live if self._holds_here(part, L.parse_ref(text), target)]
        foreign = [text for text in live if text not in real]
        if foreign:
            for text in foreign:
                log.warning("dropping the referrer entry %s of %s: no such reference (another writer's)", text, target)
            statements: list[tuple[Write, tuple[Any, ...]]] = [
                (L.W_REF_RELEASE, (self._p.ns, part, L.OBJECT, 0, *target, {text}, text, "")) for text in foreign
            ]
            statements.append((L.W_LAST_FIRST, (self._p.ns, part, last, last)))  # changes nothing: a condition
            try:
                self._p.store.apply(statements)
            except OutcomeUnknown:
                pass  # the next delete of the target checks them again
        if not real:
            raise Replan()
        return real

    def _holds_here(self, part: str, source: RefKey, target: RefKey) -> bool:
        """Whether ``source`` exists in ``part`` and references ``target`` (a serial read of its row)."""
        found = self._p.stored_object(self._p.read(*self._p.row_query(part, *source), serial=True))
        return found is not None and target in found.refs

    def release(self, part: str, target: RefKey, source: str, reservation: str | None = None) -> None:
        """Drop the entry ``source`` from ``target``'s referrers (only if it is ``reservation``, when given)."""
        try:
            if reservation is None:
                row = self._p.object_row(part, *target)
                if row is None or source not in row.referrers:
                    return
                reservation = row.referrers[source]
            self._release_entry(part, target, source, reservation)
        except errors.NbdbError as exc:
            # A leftover entry is repaired by the next delete of the target.
            log.warning("could not drop the reference %s -> %s: %s", source, L.ref_text(*target), exc)

    def release_all(self, reserved: Reservations, keep: frozenset[tuple[str, RefKey, str]] = frozenset()) -> None:
        """Drop every reservation of ``reserved`` except those in ``keep``."""
        for key, reservation in reserved.items():
            if key not in keep:
                self.release(*key, reservation=reservation)

    def _release_entry(self, part: str, target: RefKey, source: str, reservation: str) -> None:
        try:
            self._p.store.apply(
                [(L.W_REF_RELEASE, (self._p.ns, part, L.OBJECT, 0, *target, {source}, source, reservation))]
            )
        except OutcomeUnknown:
            pass  # dropping an entry is safe to leave undone: the next delete of the target repairs it
