"""Copying a live logical network from one database to another (``nbdb copy``).

The copy is list + watch, like a cache:

1. **sync**: read every object of the copied models at one source revision R
   (:func:`nbdb.tools.snapshot.take_snapshot`) and make the destination hold
   exactly that (:class:`nbdb.tools.apply.Applier`: parents first, ids kept,
   idempotent upserts; objects the destination holds but the source does not
   are deleted — only on a resumed copy or with ``overwrite``);
2. **follow**: apply every source change after R, commit by commit, until
   caught up (or, with ``follow``, until stopped); each batch of whole commits
   is applied as its net effect, in one transaction where the destination
   allows;
3. **verify**: read both sides at one revision each and compare object by object.

The checkpoint (phase and the source revision the destination reflects) is
saved as the copy goes, so an interrupted copy resumes: from the sync phase
with a new sync pass that writes only what is missing or different; from the
follow phase with a watch from the saved revision; when the source's history
no longer reaches that revision (HistoryGoneError), with a new sync pass.
Object versions are per backend: the destination counts its own writes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from nbdb import errors
from nbdb.api import Database
from nbdb.codec import plain
from nbdb.commit_context import check_flag, check_since
from nbdb.events import ChangeEvent
from nbdb.models import enums
from nbdb.models.base import Model, RefSpec, all_models
from nbdb.timeouts import check_seconds
from nbdb.tools.apply import Applier, WriteLimitReached
from nbdb.tools.checkpoint import Checkpoint, CheckpointFile
from nbdb.tools.order import ObjectKey, table_order
from nbdb.tools.progress import Progress
from nbdb.tools.snapshot import Snapshot, refuse_unmodelled, take_snapshot, unsupported_models
from nbdb.tools.verify import Difference, compare

__all__ = ["Copier", "CopyIncomplete", "CopyOptions", "CopyResult", "copy_scope", "unstorable"]

log = logging.getLogger(__name__)

_CHECKPOINT_EVERY = 1.0


class CopyIncomplete(Exception):
    """The copy stopped before it was complete (``limit`` reached); run it again to resume."""


@dataclass(slots=True)
class CopyOptions:
    """What to copy and how; see ``nbdb copy --help``."""

    models: Sequence[type[Model]] | None = None
    """Models to copy (default: every model defined)."""
    topics: Collection[str | None] | None = None
    """Only objects of these topics (None in it: objects without a topic); default all."""
    follow: bool = False
    """Keep applying changes until ``stop`` is set, ``until_revision`` or ``duration``."""
    until_revision: int | None = None
    duration: float | None = None
    overwrite: bool = False
    """Allow a fresh copy into a destination that already holds objects: make it equal to the source."""
    verify: bool = True
    ignore_list_order: bool = False
    """Verify list fields as sets (a destination such as OVSDB stores them sorted, without duplicates)."""
    verify_rounds: int = 5
    """A live source may change between the two reads of a verification: compare again this many times."""
    batch: int = 200
    limit: int | None = None
    """Stop (CopyIncomplete) after this many objects written — to test or pace resumption."""
    skip_corrupt: bool = False
    read_timeout: float = 300.0
    poll_interval: float = 0.5

    def __post_init__(self) -> None:
        # --duration nan followed for ever (NaN is no deadline), -1 ended at once; --until-revision -5 and
        # --limit -1 were taken as they were; --duration or --until-revision without --follow were ignored.
        check_flag("follow", self.follow)
        if self.duration is not None:
            check_seconds("duration", self.duration)
        if self.until_revision is not None:
            # It said "since= takes a revision", an option `nbdb copy --until-revision -1` has not.
            check_since(self.until_revision, "until_revision (--until-revision)")
        if not self.follow and (self.duration is not None or self.until_revision is not None):
            raise errors.ValidationError("duration and until_revision bound a follow: they need follow=True")
        for what, count, least in (
            ("batch", self.batch, 1),
            ("limit", self.limit, 0),
            ("verify_rounds", self.verify_rounds, 1),
        ):
            if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < least):
                raise errors.ValidationError(f"{what} must be a whole number of at least {least}, not {count!r}")
        check_seconds("read_timeout", self.read_timeout)
        check_seconds("poll_interval", self.poll_interval)


@dataclass(slots=True)
class CopyResult:
    """What a copy did."""

    resumed: str | None = None
    """The phase a saved checkpoint resumed from, or None for a fresh copy."""
    objects: int = 0
    """Objects in the source at the last sync pass."""
    written: int = 0
    """Objects the copy created, updated or deleted in the destination."""
    changes: int = 0
    """Source changes applied while following."""
    syncs: int = 0
    """Full sync passes (1, plus one per lost history or inconsistency)."""
    revision: int = 0
    """The source revision the destination reflects."""
    differences: list[Difference] | None = field(default=None)
    """What verification found (empty: identical); None if not verified."""


def unstorable(destination: Database, objects: Collection[Model], held: str = "nothing was written") -> None:
    """Raise UnsupportedError, before anything is written, if ``destination`` cannot hold some of ``objects``.

    What the model check (``check_model``) cannot see, found object by object: a reference to a table
    the destination has none of (a port bound to a ``Chassis``, copied into OVN_Northbound), a
    value other than the default of a field the destination keeps nowhere (a column its schema
    lacks), and an object of a table the destination reads but cannot write (``unwritable``:
    OVN's ``Load_Balancer_Group``, which has no ``external_ids``, in a namespace). Each made a copy stop half-way, the
    destination holding part of the source. ``held`` says what the destination holds then (the first
    pass: nothing of it).
    """
    backend = destination.backend
    tables: dict[str, str | None] = {}  # a referenced table -> why the destination cannot hold it

    def why_not(table: str) -> str | None:
        if table not in tables:
            try:
                backend.check_table(table)
                tables[table] = None
            except errors.UnsupportedError as exc:
                tables[table] = str(exc)
        return tables[table]

    # Per model, once: its references to tables the destination cannot store, and its fixed fields. Most
    # objects have neither (a copy into a store of the same models): they cost a dict lookup.
    checks: dict[type[Model], tuple[list[tuple[RefSpec, str]], dict[str, Any], str | None]] = {}
    found: dict[tuple[str, str], list[Any]] = {}  # (Table.field, why) -> [count, an example id]
    newer = enums.newer_values_made() and not backend.maps_columns  # see nbdb.models.enums
    for obj in objects:
        model = type(obj)
        check = checks.get(model)
        if check is None:
            refs = [(spec, why) for spec in model.nbdb_references if (why := why_not(spec.target)) is not None]
            check = checks[model] = (refs, backend.fixed_fields(model.nbdb_table), backend.unwritable(model.nbdb_table))
        refs, fixed, read_only = check
        if newer and (carried := enums.newer_held(obj)):
            for name, texts in carried.items():
                what = f"{model.nbdb_table}.{name} holds a newer schema's enum values ({', '.join(map(repr, texts))})"
                why = "the destination is a store of records, which checks no enum and could not read them back"
                found.setdefault((what, why), [0, obj.id])[0] += 1
        if read_only is not None:
            found.setdefault((f"{model.nbdb_table} objects", read_only), [0, obj.id])[0] += 1
        for spec, why in refs:
            if spec.ids(obj):
                what = f"{model.nbdb_table}.{spec.field} references {spec.target}, which the destination cannot store"
                found.setdefault((what, why), [0, obj.id])[0] += 1
        if fixed:
            values = plain(obj)
            for name, default in fixed.items():
                if values.get(name, default) != default:
                    what = f"{model.nbdb_table}.{name} holds values other than its default {default!r}"
                    why = "the destination keeps no such field (its schema has no such column)"
                    found.setdefault((what, why), [0, obj.id])[0] += 1
    if found:
        lines = [f"{what} ({n} objects, e.g. {id}): {why}" for (what, why), (n, id) in sorted(found.items())]
        raise errors.UnsupportedError(f"the destination cannot store all the source holds; {held}: " + "; ".join(lines))


def refuse_corrupt_references(snap: Snapshot) -> None:
    """Raise ReferenceError, before anything is written, if an object references a corrupt record left out.

    With --skip-corrupt, a port group listing a port whose record does not decode was written with the
    other objects, and then failed in the destination's own reference check: the copy stopped half-way,
    with a message that did not say the missing port was a corrupt record.
    """
    if not snap.corrupt:
        return
    referrers = [(obj, t) for obj in snap.objects.values() for t in obj.ref_keys() if t in snap.corrupt]
    if referrers:
        obj, (table, id) = referrers[0]
        raise errors.ReferenceError(
            f"{len(referrers)} reference(s) point to corrupt source records left out by --skip-corrupt, e.g. "
            f"{obj.nbdb_table} {obj.id} -> {table} {id}; nothing was written: repair or delete those records "
            "in the source, or leave their referrers out (--models, --topics)"
        )


def copy_scope(models: Sequence[type[Model]], topics: Collection[str | None] | None) -> str:
    """A stable description of what a copy covers (a checkpoint resumes only the same scope)."""
    tables = ",".join(sorted(m.nbdb_table for m in models))
    names = "*" if topics is None else ",".join(sorted("~" if t is None else t for t in topics))
    return f"models={tables};topics={names}"


class Copier:
    """Copies ``source`` to ``destination``; see the module docstring.

    ``checkpoint`` (with ``source_url`` and ``destination_url`` naming the
    two sides) makes the copy resumable. ``stop`` ends a ``follow`` (it then
    catches up, verifies and returns). ``progress`` draws the progress line.
    """

    def __init__(
        self,
        source: Database,
        destination: Database,
        options: CopyOptions | None = None,
        *,
        checkpoint: CheckpointFile | None = None,
        source_url: str = "",
        destination_url: str = "",
        stop: threading.Event | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.source = source
        self.destination = destination
        self.options = options or CopyOptions()
        self.models = list(table_order(self.options.models or all_models()).models)
        self.topics = None if self.options.topics is None else frozenset(self.options.topics)
        self._models_checked = False
        self.checkpoint = checkpoint
        self.stop = stop or threading.Event()
        self.progress = progress or Progress(False)
        self.result = CopyResult()
        self._cp = Checkpoint(source_url, destination_url, copy_scope(self.models, self.topics))
        self._saved_at = 0.0
        self._applier: Applier | None = None

    # ---------------------------------------------------------------- the whole copy

    def run(self) -> CopyResult:
        """Copy, follow if asked, verify; returns what happened.

        Raises CopyIncomplete when ``limit`` stops it (the checkpoint is kept).
        """
        try:
            self._run()
        except WriteLimitReached as exc:
            raise CopyIncomplete(f"{exc}; run the same copy again to resume") from None
        finally:
            self.progress.close()
        return self.result

    def _check_models(self) -> None:
        """Leave out the models a side cannot store, when that loses nothing; else refuse."""
        if self._models_checked:
            return
        self._models_checked = True
        explicit = self.options.models is not None
        source = unsupported_models(self.source, self.models)
        destination = unsupported_models(self.destination, self.models)
        dropped = []
        for model in self.models:
            why = source.get(model) or destination.get(model)
            if why is None:
                continue
            if explicit:
                raise errors.UnsupportedError(f"{why} (leave {model.nbdb_table} out of --models)")
            if model not in source and model in destination and self.source.list(model):
                raise errors.UnsupportedError(
                    f"the source holds {model.nbdb_table} objects but the destination cannot store them: {why}"
                )
            dropped.append(model)
        for model in dropped:
            log.info("leaving out %s: %s", model.nbdb_table, source.get(model) or destination.get(model))
            self.models.remove(model)
        if not explicit:
            refuse_unmodelled(self.source, "a copy", self.topics)

    def _run(self) -> None:
        opts = self.options
        self._check_models()
        saved = None
        if self.checkpoint is not None:
            saved = self.checkpoint.load(self._cp.source, self._cp.destination, self._cp.scope)
        if saved is not None:
            self.result.resumed = saved.phase
            log.info("resuming the copy from its %s phase at revision %d", saved.phase, saved.revision)
        # Objects that expire keep their ttl on the destination (from creation on there).
        expiring = self.source.backend.ttls([m.nbdb_table for m in self.models])
        self._applier = Applier(
            self.destination,
            self._destination_state(),
            batch=opts.batch,
            limit=opts.limit,
            on_write=self._on_write,
            ttls=expiring,
        )
        if saved is None and self._applier.state and not opts.overwrite:
            raise errors.ValidationError(
                f"the destination already holds {len(self._applier.state)} object(s) of the copied models; "
                "copy into an empty database, resume with the copy's --state, or pass --overwrite to make "
                "it equal to the source (objects absent from the source are deleted)"
            )
        if saved is None or saved.phase == "sync":
            revision = self._sync(refresh=False)
        else:
            revision = saved.revision
            self._cp.phase, self._cp.revision = "follow", revision
        if opts.follow:
            deadline = None if opts.duration is None else time.monotonic() + opts.duration

            def stopped(applied: int, idle: bool) -> bool:
                if opts.until_revision is not None and applied >= opts.until_revision:
                    return True
                return self.stop.is_set() or (deadline is not None and time.monotonic() >= deadline)

            revision = self._follow(revision, stopped, "following")
        revision = self._catch_up(revision)
        if opts.verify:
            revision = self._verify(revision)
        self.result.revision = revision
        self._cp.phase, self._cp.revision = "done", revision
        self._save(force=True)
        if self.checkpoint is not None and self.result.differences == []:
            # A finished copy is not resumed: a later copy into the (now live)
            # destination must be asked for again, with --overwrite.
            self.checkpoint.clear()

    # ---------------------------------------------------------------- phases

    def _destination_state(self) -> dict[ObjectKey, Model]:
        snap = take_snapshot(self.destination, self.models, self.topics, timeout=self.options.read_timeout)
        return snap.objects

    def _on_write(self, n: int) -> None:
        self.result.written += n

    def _sync(self, refresh: bool = True) -> int:
        """Make the destination equal to one snapshot of the source; returns its revision."""
        opts = self.options
        assert self._applier is not None
        if refresh:
            self._applier.state = self._destination_state()
        self.progress.show("reading the source...", force=True)
        snap = take_snapshot(
            self.source, self.models, self.topics, timeout=opts.read_timeout, skip_corrupt=opts.skip_corrupt
        )
        refuse_corrupt_references(snap)
        unstorable(self.destination, snap.objects.values())
        self._cp.phase = "sync"
        self._save(force=True)
        self.result.objects = len(snap.objects)
        self.result.syncs += 1
        wanted: dict[ObjectKey, Model | None] = dict.fromkeys(self._applier.state)
        wanted.update(snap.objects)
        total = self._applier.needed(wanted)
        start = self.result.written
        self.progress.restart()

        def shown(n: int) -> None:
            self._on_write(n)
            self.progress.count("copying", self.result.written - start, total)

        self._applier.on_write = shown
        try:
            self._applier.apply(wanted)
        finally:
            self._applier.on_write = self._on_write
        self.progress.count("copying", self.result.written - start, total, force=True)
        self.progress.close()
        log.info(
            "synced %d objects at source revision %d (%d written)",
            len(snap.objects),
            snap.revision,
            self.result.written - start,
        )
        self._cp.phase, self._cp.revision = "follow", snap.revision
        self._save(force=True)
        return snap.revision

    def _current_revision(self) -> int:
        with self.source.watch(self.models, self.topics) as watch:
            return watch.revision

    def _catch_up(self, revision: int, target: int | None = None) -> int:
        """Apply changes until the destination reflects ``target`` (default: the source now)."""
        goal = self._current_revision() if target is None else target
        idle = [0]

        def reached(applied: int, was_idle: bool) -> bool:
            # A filtered stream may not advance past commits of other data:
            # two idle polls in a row also mean there is nothing left to apply.
            idle[0] = idle[0] + 1 if was_idle else 0
            return applied >= goal or idle[0] >= 2

        return self._follow(revision, reached, "catching up")

    def _follow(self, since: int, until: Callable[[int, bool], bool], label: str) -> int:
        """Apply source changes after ``since`` until ``until(applied, idle)``; returns the revision applied."""
        applied = since
        while True:
            try:
                return self._follow_from(applied, until, label)
            except errors.HistoryGoneError as exc:
                log.warning("the source's history no longer reaches revision %d (%s): syncing again", applied, exc)
            except errors.ReferenceError as exc:
                # A replay over a destination that an interrupted run had taken
                # further than the checkpoint: converge from a fresh snapshot.
                log.warning("replaying changes hit %s: syncing again", exc)
            applied = self._sync()

    def _follow_from(self, since: int, until: Callable[[int, bool], bool], label: str) -> int:
        assert self._applier is not None
        applied = since
        if until(applied, False):
            return applied
        held: list[ChangeEvent[Model]] = []
        watch = self.source.watch(self.models, self.topics, since=since, on_error=self._on_corrupt)
        try:
            while True:
                events = watch.poll(self.options.poll_interval)
                held += events
                complete = watch.revision
                ready = [e for e in held if e.revision <= complete]
                if ready:
                    held = [e for e in held if e.revision > complete]
                    wanted: dict[ObjectKey, Model | None] = {}
                    for event in ready:
                        wanted[(event.model.nbdb_table, event.id)] = event.new
                    # As the first pass is checked: a batch none of which is written, and the same report.
                    unstorable(
                        self.destination,
                        [obj for obj in wanted.values() if obj is not None],
                        f"a change made while following was not applied (nor any after it; a resumed copy starts "
                        f"again from source revision {applied})",
                    )
                    self._applier.apply(wanted)
                    self.result.changes += len(ready)
                if complete > applied and not held:
                    applied = complete
                    self._cp.phase, self._cp.revision = "follow", applied
                    self._save()
                self.progress.show(f"{label}: revision {applied}, {self.result.changes} changes applied")
                if until(applied, not events):
                    return applied
        finally:
            watch.close()
            self._save(force=True)

    def _on_corrupt(self, exc: errors.CorruptRecordError) -> None:
        if not self.options.skip_corrupt:
            raise exc
        log.warning("skipping a corrupt source record: %s", exc)

    def _verify(self, revision: int) -> int:
        """Compare both sides, catching up between rounds while the source moves."""
        opts = self.options
        self.progress.show("verifying...", force=True)
        diffs: list[Difference] = []
        for _ in range(max(1, opts.verify_rounds)):
            snap = take_snapshot(
                self.source, self.models, self.topics, timeout=opts.read_timeout, skip_corrupt=opts.skip_corrupt
            )
            if snap.revision > revision:
                revision = self._catch_up(revision, snap.revision)
            mine = take_snapshot(self.destination, self.models, self.topics, timeout=opts.read_timeout)
            diffs = compare(snap, mine, ignore_list_order=opts.ignore_list_order)
            if not diffs:
                break
            log.info("verification found %d differences; the source may be moving: comparing again", len(diffs))
        self.progress.close()
        self.result.differences = diffs
        return revision

    def _save(self, force: bool = False) -> None:
        if self.checkpoint is None:
            return
        now = time.monotonic()
        if not force and now - self._saved_at < _CHECKPOINT_EVERY:
            return
        self._saved_at = now
        self.checkpoint.save(self._cp)
