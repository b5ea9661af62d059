"""A consistent snapshot of several models: every object, read at one revision.

``Database.list()`` reads one model at a time, each at its own revision, so a
port listed after its switch was deleted could point nowhere. The cache lists
every model it follows in one read and then applies whole commits under its
lock; ``Cache.snapshot()`` hands over its content and revision atomically.
That gives every object at one revision through the public API only.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from nbdb import errors
from nbdb.api import Database
from nbdb.cache import Cache
from nbdb.models.base import Model
from nbdb.timeouts import check_seconds
from nbdb.tools.order import ObjectKey, key_of

__all__ = ["Snapshot", "refuse_unmodelled", "take_snapshot", "unsupported_models"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Objects (by (table, id)) read at one ``revision`` of their database."""

    objects: dict[ObjectKey, Model]
    revision: int
    corrupt: frozenset[ObjectKey] = frozenset()
    """The records that did not decode and were left out (``skip_corrupt``)."""

    def count(self, model: type[Model]) -> int:
        """How many objects of ``model`` the snapshot holds."""
        return sum(1 for table, _ in self.objects if table == model.nbdb_table)


def take_snapshot(
    db: Database,
    models: Sequence[type[Model]],
    topics: Collection[str | None] | None = None,
    *,
    timeout: float = 300.0,
    skip_corrupt: bool = False,
) -> Snapshot:
    """Every object of ``models`` (in ``topics``) in ``db``, read at one revision.

    Raises BackendUnavailableError if the first read does not finish within
    ``timeout`` seconds (the cache logs why), and CorruptRecordError if a
    stored record does not decode, unless ``skip_corrupt`` (then it is left out
    and logged).
    """
    check_seconds("timeout", timeout)  # -1 or 0 was reported as a database that could not be read in time
    if not models:
        return Snapshot({}, 0)
    cache = db.cache(list(models), topics)
    try:
        if not cache.wait_synced(timeout):
            raise errors.BackendUnavailableError(
                f"could not read the database within {timeout:g}s (see the log for the backend's errors)"
            )
        snapshot = _replay(cache)
        if cache.corrupt and skip_corrupt:
            snapshot = Snapshot(snapshot.objects, snapshot.revision, frozenset(cache.corrupt))
        elif cache.corrupt:
            (table, id), first = next(iter(cache.corrupt.items()))
            raise errors.CorruptRecordError(
                f"{len(cache.corrupt)} stored record(s) do not decode, e.g. {table} {id}: {first} "
                "(pass --skip-corrupt to leave them out)",
                table=table,
            )
        return snapshot
    finally:
        cache.close()


def _replay(cache: Cache) -> Snapshot:
    objects, revision = cache.snapshot()
    return Snapshot({key_of(obj): obj for obj in objects}, revision)


def unsupported_models(db: Database, models: Sequence[type[Model]]) -> dict[type[Model], errors.UnsupportedError]:
    """The models ``db``'s backend cannot store (e.g. a table OVSDB does not have), with why.

    Asks the backend (no I/O on most); any other error is raised.
    """
    out: dict[type[Model], errors.UnsupportedError] = {}
    for model in models:
        try:
            db.check_model(model)
        except errors.UnsupportedError as exc:
            out[model] = exc
    return out


def refuse_unmodelled(db: Database, what: str, topics: Collection[str | None] | None = None) -> None:
    """Raise UnsupportedError, before anything is written, if ``db`` holds rows or values no model maps.

    ``what`` (``"a copy"``, ``"a dump"``) reads every model (no --models): it read what the models
    map and said nothing of the rest, so an ``OVN_Northbound`` with meters or static MAC bindings
    lost them in the destination; a column of a mapped table that no field maps (a newer schema's
    ``OVN_Northbound.Logical_Switch.site_note``) is named with its table where a row holds a value.
    ``topics``: the copy takes only these (None: all); rows of a table no model maps hold no topic, so a
    copy of named topics only (no None among them) would never take them and is not refused for them (a
    tenant's copy out of an NB with meters was refused until every model was named); values in unmapped
    columns of mapped tables still refuse it, as they may be in its topics.
    """
    held = db.backend.unmodelled()
    if topics is not None and None not in topics:
        held = {name: rows for name, rows in held.items() if name.count(".") >= 2}
    if held:
        tables = ", ".join(f"{table} ({rows} rows)" for table, rows in sorted(held.items()))
        raise errors.UnsupportedError(
            f"the source holds rows of tables, or values in columns, no model maps, which {what} would leave "
            f"behind: {tables}; nothing was written: define models (or fields) for them (`nbdb models generate` "
            "writes them from the schema), or name the models (--models) to leave them behind knowingly"
        )
