"""Other writers' spellings: text a model reads as another value (``FD00::5`` as ``fd00::5``).

``ovn-nbctl`` stores a MAC, an address or a network as it was typed; nbdb's models normalise
what they read (``0A:00:00:00:00:01`` reads ``0a:00:00:00:00:01``), while the server compares
text. So nbdb compares what a column *reads as*, not its text:

* an update leaves a column whose value as read it does not change as it is stored
  (:func:`keep_spelling`): writing it back in nbdb's spelling changed what ``ovn-nbctl``
  shows, in a column the caller never touched;
* a removal of a member removes every stored member that reads as it, however spelled
  (:func:`stored_spellings`).

Normalising a member is a pydantic validation (≈ µs each). An update normalises only the
stored members that its new value lacks; a removal looks up, per row and column, a memo of
the members that do not read as themselves (:class:`_Memo`), validating only the members
the row gained since its last removal: not the whole set each time.
"""

from __future__ import annotations

import threading
import typing
from collections import Counter, OrderedDict
from collections.abc import Iterable
from typing import Any

from nbdb import errors
from nbdb.families.ovsdb.mapping import ColumnMap, TableMap
from nbdb.families.ovsdb.rows import NewRow, column_value
from nbdb.models.base import Model, field_value, model_for_table

__all__ = ["keep_spelling", "kept_members", "stored_spellings"]

_MEMO_MEMBERS = 300_000
"""Members a Database's memos of a table hold at most (the least recently used rows go first): about
35 MB at worst (113 MB measured for 1,000,000: each memo keeps its own set of the row's text, and
the text of rows deleted since until they are pushed out), thirty sets of 10,000 addresses."""

_NONE: Any = object()
"""What a member reads as when the model refuses it: equal to nothing a caller gives."""


def _model(tm: TableMap, cm: ColumnMap) -> type[Model] | None:
    """The model whose field reads ``cm``'s atoms, if they may read as other text (None: they read as they are)."""
    if cm.json or cm.type.value is not None or cm.type.key.kind != "string" or cm.empty_is_none:
        return None
    try:
        model = model_for_table(tm.table)
    except errors.NotFoundError:
        return None
    info = model.model_fields.get(cm.field)
    if info is None:
        return None
    annotation = info.annotation
    items = typing.get_args(annotation) if cm.shape.container != "scalar" else (annotation,)
    if not info.metadata and items in ((str,), (str | None,)):
        return None  # plain text: every member reads as itself
    return model


def _reads(
    model: type[Model], cm: ColumnMap, atoms: Iterable[str], known: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Each atom -> what ``model`` reads it as (:data:`_NONE` if it refuses it).

    ``known``: the reads of ``cm``'s atoms already made for the same update (taken from it, and the
    new ones added): an update that replaces a member read the member it drops twice, once to tell
    whether the column changes at all (:func:`keep_spelling`), again for the members it keeps
    (:func:`kept_members`), a pydantic validation each.
    """
    out: dict[str, Any] = {}
    scalar = cm.shape.container == "scalar"
    for atom in atoms:
        if known is not None and atom in known:
            out[atom] = known[atom]
            continue
        try:
            read = field_value(model, cm.field, atom if scalar else [atom])
        except errors.ValidationError:
            read = _NONE  # another writer's garbage: nothing a caller could have read it as
        else:
            if not scalar:
                read = next(iter(read), _NONE) if len(read) == 1 else _NONE
        out[atom] = read
        if known is not None:
            known[atom] = read
    return out


def _atoms(cell: Any) -> set[str] | None:
    """The text atoms of a cell (a set, one atom, or None: empty); None for anything else."""
    if isinstance(cell, set):
        return cell if all(type(a) is str for a in cell) else None
    if cell is None:
        return set()
    return {cell} if type(cell) is str else None


def _reads_alike(
    model: type[Model], cm: ColumnMap, stored: Any, new: Any, given: Any, known: dict[str, Any] | None = None
) -> bool:
    """Whether the stored cell reads as the new one (cells that differ as text).

    Only the atoms on either side alone are normalised: with ``only`` the stored atoms the new
    cell lacks and ``extra`` the reverse, the two read alike when every atom of ``only`` reads as
    one of the new cell and every atom of ``extra`` is what one of ``only`` reads as (reading is
    idempotent: what it gives reads as itself). A real change costs one validation, as a rule.

    ``given`` is the field's value as the caller gave it: a list keeps the duplicates a set cell
    loses, and a model reads two spellings of one value (``FD00::5``, ``fd00::5``) as it twice. The
    stored cell reads as the update only with as many of each value: else an update that drops
    the twin was not written, and returned a copy the server does not hold.
    """
    mine, theirs = _atoms(stored), _atoms(new)
    if mine is None or theirs is None:
        return False
    only, extra = mine - theirs, theirs - mine
    if not only or len(extra) > len(only):
        return False  # nothing stored reads otherwise, or more new values than stored atoms to read as them
    read = set()
    for atom in only:  # one at a time: a real change is told by its first dropped atom, as a rule
        value = _reads(model, cm, (atom,), known)[atom]
        if value is _NONE or value not in theirs:
            return False
        read.add(value)
    if not extra <= read:
        return False
    if isinstance(given, list | tuple):
        reads = Counter(mine & theirs)
        reads.update(_reads(model, cm, only, known).values())
        return reads == Counter(given)
    return True


def keep_spelling(
    tm: TableMap,
    cm: ColumnMap,
    stored: Any,
    row: NewRow,
    given: Any,
    known: dict[str, Any] | None = None,
) -> bool:
    """Whether the stored cell of ``cm`` (which differs as text from the update's ``row``) reads as the update's;
    if so, it is taken back into the row's ``cells``, ``wire`` and ``values``. ``known``: see :func:`_reads`
    (the stored atoms read are added to it).

    The column is then not written (its cell equals the stored one), and the row as written, its
    document and digest, are what the server keeps.
    """
    model = _model(tm, cm)
    if model is None or not _reads_alike(model, cm, stored, row.cells[cm.column], given, known):
        return False
    kept = set(stored) if isinstance(stored, set) else stored  # the replica changes its sets in place
    row.cells[cm.column] = kept
    row.wire[cm.column] = cm.to_wire(kept)
    row.values[cm.field] = column_value(cm, kept)
    return True


def source_as_written(
    tm: TableMap, respelled: list[ColumnMap], values: dict[str, Any], doc: dict[str, Any]
) -> dict[str, Any] | None:
    """The update's document (``doc``) with the fields whose stored spellings it keeps as written
    (``values``), if each reads as the caller gave it (in the same order); else None.

    Whether the row as written reads back as the caller's copy is told by comparing documents (see
    ``rows.reads_back_as``): with another writer's spelling kept, the text differs though it reads
    as the copy does, and the copy was not handed to the caches (each decoded the row again). One
    validation per field kept.
    """
    model = model_for_table(tm.table)
    for cm in respelled:
        try:
            read = field_value(model, cm.field, values[cm.field])
        except errors.ValidationError:
            return None
        given = doc.get(cm.field)
        if (list(read) if isinstance(read, list | tuple) else read) != given:
            return None
    return {**doc, **{cm.field: values[cm.field] for cm in respelled}}


_FEW = 64
"""Stored members that differ as text from an update's at most, read one by one; past that, through the row's memo."""


def kept_members(
    tm: TableMap,
    cm: ColumnMap,
    row_id: int,
    stored: set[str],
    only: set[str],
    new: set[str],
    known: dict[str, Any] | None = None,
) -> dict[str, str]:
    """The members of ``new`` (an update's set, in nbdb's text) that ``stored`` holds in another
    spelling only -> that spelling: an update that leaves them as stored writes them so (one spelling
    per value). ``only``: the stored members ``new`` lacks, the only ones read (the update's are
    nbdb's text, which reads as itself); many (an ``ovn-nbctl`` set of upper-case addresses) through
    the row's memo (:func:`_odd`). ``known``: see :func:`_reads`.
    """
    model = _model(tm, cm)
    if model is None or not only:
        return {}
    if len(only) <= _FEW:
        reads = _reads(model, cm, only, known)
    else:
        odd = _odd(tm, cm, model, row_id, stored)
        reads = {atom: odd.get(atom, atom) for atom in only}
    spelled: dict[str, str] = {}
    for atom in sorted(only):  # sorted: the same spelling kept whatever the set's order
        read = reads[atom]
        if read is not _NONE and read in new and read not in stored and read not in spelled:
            spelled[read] = atom
    return spelled


class _Memo:
    """The members of one row's column that read as another text, and every member looked at."""

    __slots__ = ("odd", "seen")

    def __init__(self) -> None:
        self.seen: frozenset[str] = frozenset()
        self.odd: dict[str, Any] = {}


class _Memos:
    """A table's memos by (row id's int, column), least recently used first, and the members they hold."""

    __slots__ = ("held", "lock", "rows")

    def __init__(self) -> None:
        self.rows: OrderedDict[tuple[int, str], _Memo] = OrderedDict()
        self.held = 0
        self.lock = threading.Lock()  # a table map's own: one Database's validations do not hold up another's


_LOCK = threading.Lock()
"""Held only to make a table map's memos."""


def _odd(tm: TableMap, cm: ColumnMap, model: type[Model], row_id: int, cell: set[str]) -> dict[str, Any]:
    """The members of ``cell`` that do not read as themselves -> what they read as.

    Remembered per row and column: only the members the cell gained since are validated (the
    set differences are C loops, far below one validation per member).
    """
    key = (row_id, cm.column)
    with _LOCK:
        memos: _Memos = tm.spellings if tm.spellings is not None else _Memos()
        tm.spellings = memos
    with memos.lock:  # commits of one Database are planned one at a time: never contended
        memo = memos.rows.pop(key, None) or _Memo()
        memos.held -= len(memo.seen)
        fresh = cell - memo.seen
        odd = {atom: read for atom, read in memo.odd.items() if atom in cell}
        for atom, read in _reads(model, cm, fresh).items():
            if read != atom:
                odd[atom] = read
        while memos.rows and memos.held + len(cell) > _MEMO_MEMBERS:
            memos.held -= len(memos.rows.popitem(last=False)[1].seen)
        memo.seen, memo.odd = frozenset(cell), odd
        memos.rows[key] = memo
        memos.held += len(cell)
    return odd


def _wanted(model: type[Model], cm: ColumnMap, members: Iterable[Any]) -> set[Any]:
    """What the removed members read as (a member the model refuses reads as nothing stored)."""
    return {read for read in _reads(model, cm, [m for m in members if type(m) is str]).values() if read is not _NONE}


def stored_spellings(tm: TableMap, cm: ColumnMap, row_id: int, cell: set[str], removed: Iterable[Any]) -> list[str]:
    """The stored members of ``cell`` that read as one of ``removed`` (as given or as the model reads it)
    and are not among them: those a removal must name too, the server's ``delete`` comparing text."""
    model = _model(tm, cm)
    if model is None or not cell:
        return []
    given = set(removed)
    wanted = _wanted(model, cm, given)
    found = {w for w in wanted if w in cell}  # stored as the model reads it
    found.update(atom for atom, read in _odd(tm, cm, model, row_id, cell).items() if read in wanted)
    return sorted(found - given)
