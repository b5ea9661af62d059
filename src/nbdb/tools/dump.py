"""``nbdb dump`` and ``nbdb load``: a versioned JSON-lines backup format.

Format ``nbdb-dump`` version 1 (UTF-8, one JSON object per line, ``\\n`` ends
every line)::

    {"format": "nbdb-dump", "version": 1, "created": "<ISO 8601 UTC>", "nbdb": "<version>",
     "source": "<URL, password redacted>", "revision": <source revision>,
     "topics": null | ["<topic>", null, ...], "models": ["<table>", ...], "counts": {"<table>": n}}
    {"table": "<table>", "data": {<fields but version, as model_dump(mode="json"); a newer model's too>}}
    ...
    {"end": true, "count": <number of object lines>, "sha256": "<hex>"}

Objects are read at one source revision and written parents first (every
reference points to an earlier line or outside the file). ``sha256`` is the
digest of every byte before the end line (the header and object lines with
their newlines), so a truncated or altered file is detected. Versions are not
kept: they count one backend's writes, and the destination counts its own.

``load`` reads and validates the whole file first (header, every object
against its model, no duplicate, the end line's count and digest, every
reference resolving within the file or the destination) and writes nothing if
anything is wrong. It then writes in one transaction when the destination's
transactions are ``atomic``; elsewhere it needs ``resume=True``: objects are
upserted in dependency order in batches, and running the same load again after
an interruption completes it without duplicates.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO

from nbdb import __version__, errors
from nbdb.api import Database
from nbdb.capabilities import Atomicity, Expiry
from nbdb.codec import from_plain, plain
from nbdb.commit_context import check_flag
from nbdb.models.base import Model, all_models, model_for_table
from nbdb.tools.apply import Applier
from nbdb.tools.copy import unstorable
from nbdb.tools.order import ObjectKey, key_of, object_order, table_order
from nbdb.tools.progress import Progress
from nbdb.tools.snapshot import take_snapshot

__all__ = [
    "FORMAT",
    "VERSION",
    "DumpFile",
    "DumpFormatError",
    "DumpSummary",
    "LoadSummary",
    "dump",
    "load",
    "read_dump",
]

FORMAT = "nbdb-dump"
VERSION = 1


class DumpFormatError(errors.ValidationError):
    """The input is not a complete, valid nbdb dump (foreign, corrupt, truncated or newer)."""


@dataclass(frozen=True, slots=True)
class DumpSummary:
    """What :func:`dump` wrote."""

    count: int
    revision: int
    sha256: str


@dataclass(frozen=True, slots=True)
class DumpFile:
    """A validated dump: its header and its objects, in file (dependency) order, and their ttls."""

    header: dict[str, Any]
    objects: list[Model]
    ttls: dict[ObjectKey, float] = field(default_factory=dict)
    """The ttl of each object that was created with one."""


@dataclass(frozen=True, slots=True)
class LoadSummary:
    """What :func:`load` did: ``mode`` is ``transaction`` or ``resumable``."""

    count: int
    written: int
    mode: str


def _line(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def dump(
    db: Database,
    out: BinaryIO,
    *,
    models: Sequence[type[Model]] | None = None,
    topics: Collection[str | None] | None = None,
    source: str = "",
    skip_corrupt: bool = False,
    timeout: float = 300.0,
    progress: Progress | None = None,
) -> DumpSummary:
    """Write every object of ``models`` (in ``topics``) of ``db`` to ``out``, read at one revision."""
    progress = progress or Progress(False)
    order = table_order(models or all_models())
    progress.show("reading...", force=True)
    snap = take_snapshot(db, order.models, topics, timeout=timeout, skip_corrupt=skip_corrupt)
    objects = object_order(snap.objects.values(), order)
    counts: dict[str, int] = {}
    for obj in objects:
        counts[obj.nbdb_table] = counts.get(obj.nbdb_table, 0) + 1
    header = {
        "format": FORMAT,
        "version": VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "nbdb": __version__,
        "source": source,
        "revision": snap.revision,
        "topics": None if topics is None else sorted(topics, key=lambda t: (t is None, t or "")),
        "models": [t for t in order.tables if t in counts],
        "counts": counts,
    }
    digest = hashlib.sha256()
    line = _line(header)
    digest.update(line)
    out.write(line)
    ttls = db.backend.ttls(order.tables) if db.capabilities.expiry is not Expiry.NONE else {}
    for i, obj in enumerate(objects, 1):
        doc: dict[str, Any] = {"table": obj.nbdb_table, "data": plain(obj)}
        ttl = ttls.get(key_of(obj))
        if ttl is not None:
            doc["ttl"] = ttl
        line = _line(doc)
        digest.update(line)
        out.write(line)
        progress.count("dumping", i, len(objects))
    out.write(_line({"end": True, "count": len(objects), "sha256": digest.hexdigest()}))
    out.flush()
    progress.count("dumping", len(objects), len(objects), force=True)
    progress.close()
    return DumpSummary(len(objects), snap.revision, digest.hexdigest())


def _json(raw: bytes, number: int) -> dict[str, Any]:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise DumpFormatError(f"line {number}: not a JSON object (the file is corrupt or truncated)") from None
    if not isinstance(doc, dict):
        raise DumpFormatError(f"line {number}: not a JSON object")
    return doc


def _check_header(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        raise DumpFormatError("the input is empty: not an nbdb dump")
    try:
        header = _json(raw, 1)
    except DumpFormatError:
        raise DumpFormatError(
            f'not an nbdb dump: line 1 is not a dump header (want {{"format": "{FORMAT}", ...}})'
        ) from None
    if header.get("format") != FORMAT:
        raise DumpFormatError(f"not an nbdb dump: line 1 has format {header.get('format')!r}, not {FORMAT!r}")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise DumpFormatError(f"line 1: the dump format version {version!r} is not an integer")
    if version > VERSION:
        raise DumpFormatError(
            f"this dump has format version {version}, written by a newer nbdb; this one reads version {VERSION}"
        )
    if version != VERSION:
        raise DumpFormatError(f"unknown dump format version {version}; this nbdb reads version {VERSION}")
    return header


def read_dump(stream: Iterable[bytes]) -> DumpFile:
    """Read and validate a whole dump; DumpFormatError (with the line number) if anything is wrong.

    ``stream`` yields the file's lines as bytes (a binary file does).
    """
    lines = iter(stream)
    first = next(lines, None)
    header = _check_header(first)
    digest = hashlib.sha256(first or b"")
    objects: list[Model] = []
    ttls: dict[ObjectKey, float] = {}
    seen: set[ObjectKey] = set()
    trailer: dict[str, Any] | None = None
    number = 1
    for number, raw in enumerate(lines, 2):
        if trailer is not None:
            if raw.strip():
                raise DumpFormatError(f"line {number}: data after the end line")
            continue
        doc = _json(raw, number)
        if "end" in doc:
            _check_trailer(doc, len(objects), digest.hexdigest(), number)
            trailer = doc
            continue
        digest.update(raw)
        obj = _object(doc, number, seen)
        objects.append(obj)
        if doc.get("ttl") is not None:
            ttls[key_of(obj)] = float(doc["ttl"])
    if trailer is None:
        raise DumpFormatError(f"the dump is truncated: it ends at line {number} without its end line")
    return DumpFile(header, objects, ttls)


def _object(doc: dict[str, Any], number: int, seen: set[ObjectKey]) -> Model:
    shape = {"table", "data"} <= set(doc) <= {"table", "data", "ttl"}
    if not shape or not isinstance(doc["table"], str) or not isinstance(doc["data"], dict):
        raise DumpFormatError(f'line {number}: not an object line (want {{"table": ..., "data": {{...}}}})')
    ttl = doc.get("ttl")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0):
        raise DumpFormatError(f"line {number}: ttl must be a positive number of seconds, not {ttl!r}")
    try:
        model = model_for_table(doc["table"])
    except errors.NotFoundError:
        raise DumpFormatError(
            f"line {number}: unknown table {doc['table']!r} (import the module that defines it: --models-from)"
        ) from None
    data = {k: v for k, v in doc["data"].items() if k != "version"}
    try:
        obj = from_plain(model, data)
    except errors.ValidationError as exc:
        raise DumpFormatError(f"line {number}: {exc}", exc.errors) from None
    key = key_of(obj)
    if key in seen:
        raise DumpFormatError(f"line {number}: {key[0]} {key[1]} appears twice")
    seen.add(key)
    return obj


def _check_trailer(trailer: dict[str, Any], count: int, sha256: str, number: int) -> None:
    if trailer.get("end") is not True or set(trailer) != {"end", "count", "sha256"}:
        raise DumpFormatError(f"line {number}: a malformed end line")
    if trailer["count"] != count:
        raise DumpFormatError(
            f"line {number}: the end line counts {trailer['count']} objects but the file holds {count}: it is corrupt"
        )
    if trailer["sha256"] != sha256:
        raise DumpFormatError(
            f"line {number}: the dump's sha256 does not match its content: the file is corrupt or was altered"
        )


def load(
    db: Database,
    stream: Iterable[bytes],
    *,
    resume: bool = False,
    batch: int = 200,
    timeout: float = 300.0,
    progress: Progress | None = None,
) -> LoadSummary:
    """Validate the dump in ``stream``, then write its objects into ``db``; see the module docstring.

    Without ``resume``: every object must be new to ``db`` and the load is one
    transaction (``atomic`` destinations only). With ``resume``: objects are
    upserted in dependency order in batches, safe to run again.
    """
    # resume="no" (from a configuration file) upserted into a database that already held objects, and a
    # batch of 0 or "200" was taken without resume and failed, or not, only once the dump was read.
    check_flag("resume", resume)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise errors.ValidationError(f"batch must be a whole number of at least 1, not {batch!r}")
    progress = progress or Progress(False)
    progress.show("validating...", force=True)
    dumped = read_dump(stream)
    objects = dumped.objects
    present = {key_of(obj) for obj in objects}
    targets = {t for obj in objects for t in obj.ref_keys()} - present
    tables = {k[0] for k in present} | {t[0] for t in targets}
    models = table_order(model_for_table(t) for t in tables).models
    # One read of the destination answers both "is it new?" and "do outside references resolve?".
    held = take_snapshot(db, models, None, timeout=timeout).objects
    dangling = sorted(targets - held.keys(), key=lambda k: (k[0], str(k[1])))
    if dangling:
        table, id = dangling[0]
        raise errors.ReferenceError(
            f"{len(dangling)} reference target(s) are neither in the dump nor in the destination, "
            f"e.g. {table} {id}; nothing was written"
        )
    # As a copy checks (tools/copy.py): an object the destination reads but cannot write (OVN's
    # Load_Balancer_Group) made a resumed load upsert the batches before it, then raise, every run again.
    unstorable(db, objects)
    ordered = object_order(objects, table_order(models))
    if not resume:
        clashes = [k for k in present if k in held]
        if clashes:
            table, id = clashes[0]
            raise errors.ConflictError(
                f"the destination already holds {len(clashes)} of the dump's objects (e.g. {table} {id}); "
                "nothing was written. Load into an empty database, or pass --resume to upsert"
            )
        if db.capabilities.transactions is not Atomicity.ATOMIC:
            raise errors.UnsupportedError(
                f"this destination's transactions are {db.capabilities.transactions}, so a load cannot be one "
                "transaction; pass --resume to load in batches (safe to run again after an interruption)"
            )
        progress.show(f"loading {len(ordered)} objects in one transaction...", force=True)
        if ordered:
            try:
                with db.transaction() as txn:
                    for obj in ordered:
                        txn.create(obj.model_copy(update={"version": 0}), ttl=dumped.ttls.get(key_of(obj)))
            except errors.ValidationError as exc:
                # The objects were validated as the file was read: this is the destination's limit on one
                # commit (etcd: 128 operations), whose message said "split it", not how.
                raise errors.ValidationError(
                    f"{exc}; nothing was written: pass --resume to load in batches", exc.errors
                ) from None
        progress.close()
        return LoadSummary(len(ordered), len(ordered), "transaction")
    done = [0]

    def shown(n: int) -> None:
        done[0] += n
        progress.count("loading", done[0], total)

    applier = Applier(db, held, batch=batch, on_write=shown, ttls=dumped.ttls)
    wanted: dict[ObjectKey, Model | None] = {key_of(obj): obj for obj in ordered}
    total = applier.needed(wanted)
    written = applier.apply(wanted)
    progress.count("loading", done[0], total, force=True)
    progress.close()
    return LoadSummary(len(ordered), written, "resumable")
