"""How a large commit becomes one etcd transaction within the server's ``--max-txn-ops``.

etcd (``checkTxnRequest``, 3.4 to 3.6) counts a transaction's operations as the
longest of its three lists (compares, success, failure), and lets each nested
transaction in those lists count only what its parent leaves: the limit minus
the parent's own count. So what a transaction takes is its own count plus the
most any of its nested transactions takes (:func:`etcd_count`), the sum along
the deepest path of the nesting.

Two rules make a commit of hundreds of keys fit a default server (128) without
changing what it means:

* **Writes nest.** Puts and deletes go into nested transactions without
  compares (which always apply) under the commit's compares: etcd applies the
  whole success branch, nested transactions included, as one change at one
  revision, so the commit stays atomic and a watcher still sees it as one
  revision. :func:`shape_writes` picks the nesting — a balanced tree of fan-out
  ``g`` and depth ``d`` under the top level — that etcd counts lowest, and
  :func:`nest` lays the writes out in it.
* **Absence checks merge.** A create checks that its keys are absent
  (``version == 0``), one compare per key. When those do not fit, the backend
  reads the keys at one revision R, finds them all absent, and compares
  ``create_revision < R+1`` over the smallest key ranges holding them
  (:func:`merge_runs`). Every key in such a range was created at or before R
  and ours were absent at R, so ours are still absent: the check is exactly as
  strict. A key some other writer creates inside a range after R fails the
  commit (it is planned again: a false conflict, never a wrong pass), so runs
  join the closest neighbours first and never span two directories of keys.

A transaction is limited in bytes as well (``--max-request-bytes``): every
request built from a list the caller sizes is cut by :func:`split` to both
limits, and a commit whose compares make it too large merges its absence
checks as above, to fit the bytes instead of the count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from typing import Generic, TypeVar

__all__ = [
    "FRAME", "Nested", "WriteShape", "etcd_count", "fewest_runs", "fitting", "merge_runs", "nest", "run_bytes",
    "runs_within", "shape_writes", "split",
]  # fmt: skip

T = TypeVar("T")

_MAX_DEPTH = 3
"""Nesting levels under the top tried at most: 3 levels of fan-out 64 hold far more than the byte limit lets in."""


FRAME = 8
"""Bytes an operation adds to a transaction beside its own, generously: a RequestOp's (or Compare's) tag and
length varint (at most 1 + 4 below 256 MiB), and the TxnRequest's field tag."""


def fitting(items: Sequence[T], budget: int | None, weigh: Callable[[T], int] = len) -> int:  # type: ignore[assignment]
    """How many of the first ``items`` one request holds within ``budget`` bytes, each ``weigh(item)`` plus
    :data:`FRAME`: at least one (an item larger than the budget goes alone, and the server says no to it).
    None: no byte limit, all of them."""
    if budget is None:
        return len(items)
    total = 0
    for count, item in enumerate(items):
        total += weigh(item) + FRAME
        if total > budget:
            return max(1, count)
    return len(items)


def split(
    items: Sequence[T],
    count: int,
    budget: int | None,
    weigh: Callable[[T], int] = len,  # type: ignore[assignment]
) -> Iterator[Sequence[T]]:
    """``items`` in order, in consecutive slices of at most ``count`` items and ``budget`` bytes (as
    :func:`fitting` weighs them), each as long as both allow: nothing dropped, nothing repeated."""
    count = max(1, count)
    start = 0
    while start < len(items):
        end = start + fitting(items[start : start + count], budget, weigh)
        yield items[start:end]
        start = end


@dataclass(frozen=True, slots=True)
class Nested(Generic[T]):
    """A nested transaction without compares: its items (writes, or nested transactions) always apply."""

    items: list[T | Nested[T]]


@dataclass(frozen=True, slots=True)
class WriteShape:
    """How a transaction's writes are laid out, and the operations etcd counts for the transaction."""

    fanout: int
    """Entries per nested transaction (0: no nesting, the writes sit in the success list itself)."""
    depth: int
    """Levels of nested transactions under the top (0: none)."""
    count: int
    """The operations etcd counts for the whole transaction laid out so (see :func:`etcd_count`)."""


def etcd_count(compares: int, success: Sequence[T | Nested[T]], failure: int) -> int:
    """The smallest ``--max-txn-ops`` etcd accepts a transaction under (``failure``: its failure ops, none nested)."""
    own = max(compares, len(success), failure)
    return own + max((etcd_count(0, item.items, 0) for item in success if isinstance(item, Nested)), default=0)


@lru_cache(maxsize=4096)
def shape_writes(compares: int, writes: int, failure: int, limit: int | None) -> WriteShape:
    """The layout of ``writes`` under ``compares`` that etcd counts lowest; flat whenever that fits ``limit``.

    Flat (the writes in the success list) is one message with no extra
    framing, so it is kept while it fits; otherwise the writes go into
    ``ceil(writes / g**d)`` nested transactions of fan-out ``g`` and depth
    ``d``, counted ``max(compares, failure, top entries) + d * g``. The count
    may still exceed ``limit``: the caller then merges compares or refuses.
    Remembered per arguments (a pure function of four counts, asked several
    times per commit, and a fan-out search of up to ``3 * limit`` steps).
    """
    flat = WriteShape(0, 0, max(compares, writes, failure))
    if limit is None or flat.count <= limit or writes <= 1:
        return flat
    best = flat
    for depth in range(1, _MAX_DEPTH + 1):
        for fanout in range(2, max(2, limit) + 1):
            per_entry = fanout**depth
            entries = -(-writes // per_entry)
            count = max(compares, failure, entries) + depth * fanout
            if count < best.count:
                best = WriteShape(fanout, depth, count)
            if per_entry >= writes:
                break  # one entry holds them all: a wider fan-out only costs more
    return best


def nest(writes: Sequence[T], shape: WriteShape) -> list[T | Nested[T]]:
    """``writes`` laid out as ``shape`` says, in order: the success list of the transaction."""
    if shape.depth == 0:
        return list(writes)
    per_entry = shape.fanout**shape.depth
    return [_branch(writes[i : i + per_entry], shape.fanout, shape.depth) for i in range(0, len(writes), per_entry)]


def _branch(writes: Sequence[T], fanout: int, depth: int) -> Nested[T]:
    if depth == 1:
        return Nested(list(writes))
    per_entry = fanout ** (depth - 1)
    return Nested([_branch(writes[i : i + per_entry], fanout, depth - 1) for i in range(0, len(writes), per_entry)])


def merge_runs(keys: Iterable[str], runs: int) -> list[list[str]]:
    """The distinct ``keys`` in key order, cut into at most ``runs`` runs of neighbours, each in one directory.

    A run is a maximal list of keys adjacent in key order that share their
    directory (what precedes their last ``/``); the closest neighbours are
    joined first, so the key ranges the runs span stay narrow. Keys of ``d``
    directories never make fewer than ``d`` runs: with ``runs`` below that,
    each directory is one run.
    """
    ordered = sorted(set(keys))
    joins = len(ordered) - max(runs, 0)
    joined: set[int] = set()
    if joins > 0:
        places = [_place(key) for key in ordered]
        gaps = sorted(
            (b[1] - a[1], i) for i, (a, b) in enumerate(pairwise(places)) if a[0] == b[0]
        )  # neighbours of one directory, closest first
        joined = {i for _, i in gaps[:joins]}
    out: list[list[str]] = []
    for i, key in enumerate(ordered):
        if i and i - 1 in joined:
            out[-1].append(key)
        else:
            out.append([key])
    return out


def run_bytes(run: Sequence[str]) -> int:
    """The bytes the compare of a run of :func:`merge_runs` adds to a transaction, generously: a key's
    ``version == 0``, or ``create_revision < R+1`` over the run's first key to its last's successor."""
    if len(run) == 1:
        return len(run[0].encode()) + 16 + FRAME
    return len(run[0].encode()) + len(run[-1].encode()) + 1 + 32 + FRAME


def runs_within(keys: Sequence[str], most: int, room: int) -> int:
    """The most runs, up to ``most``, that :func:`merge_runs` may cut ``keys`` into for their compares to take at
    most ``room`` bytes (:func:`run_bytes`); :func:`fewest_runs` if even those take more (the caller refuses)."""
    low, high = fewest_runs(keys), max(most, 0)
    if high <= low:
        return high
    if sum(run_bytes(run) for run in merge_runs(keys, high)) <= room:
        return high
    while low < high:  # every run count from low to high joins the same closest neighbours first: monotone
        middle = (low + high + 1) // 2
        if sum(run_bytes(run) for run in merge_runs(keys, middle)) <= room:
            low = middle
        else:
            high = middle - 1
    return low


def fewest_runs(keys: Iterable[str]) -> int:
    """The fewest runs :func:`merge_runs` can cut ``keys`` into: one per directory."""
    return len({key.rpartition("/")[0] for key in keys})


def _place(key: str) -> tuple[str, int]:
    """A key's directory, and where its name lies in key order (its first 16 bytes as a number)."""
    directory, _, name = key.rpartition("/")
    return directory, int.from_bytes(name.encode()[:16].ljust(16, b"\0"))
