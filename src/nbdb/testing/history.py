"""Checking what a watcher delivered against the change-stream contract (pure logic).

A watcher's deliveries are recorded as :class:`Observed` changes (and :class:`Reset` when it
met ``HistoryGoneError`` and went on from a newer revision). :class:`WatchChecker` replays
them and reports every breach of the contract in ``docs/semantics.md``:

- **duplicate**: a change of an object delivered twice;
- **skipped**: a change of an object never delivered (its versions jump);
- **out-of-order**: a revision lower than one already delivered;
- **torn**: the changes of one revision (one commit) delivered apart: in different
  polls, or with another revision's changes between them;
- **bad-version**: a creation not at version 1, an update not one version up.

After a :class:`Reset` (the contract's way out: the watcher says it lost history) no gap
is reported across it. The watcher then re-lists: each object's state comes as an
``Observed`` marked ``listed``, a new starting point for its versions, and changes the
list already included may be delivered again by the watch that follows, without being
flagged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Observed", "Reset", "Violation", "WatchChecker", "caught_up"]


@dataclass(frozen=True, slots=True)
class Observed:
    """One change as a watcher delivered it."""

    batch: int
    """Number of the poll that delivered it (changes of one poll share it)."""
    table: str
    id: str
    old_version: int | None
    """Version before the change (None: a creation)."""
    new_version: int | None
    """Version after the change (None: a deletion)."""
    revision: int
    at: float = 0.0
    """When it was delivered (``time.monotonic()``, comparable across processes of a machine)."""
    fields: Mapping[str, Any] = field(default_factory=dict)
    """Fields of interest of the new state (of the old one for a deletion)."""
    listed: bool = False
    """Not a change: the object's state as a re-list after a :class:`Reset` found it."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {**asdict(self), "fields": dict(self.fields)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Observed:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**data, "fields": dict(data.get("fields", {}))})


@dataclass(frozen=True, slots=True)
class Reset:
    """The watcher met HistoryGoneError and went on from ``revision`` (changes in between unseen)."""

    revision: int
    at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"reset": self.revision, "at": self.at}


@dataclass(frozen=True, slots=True)
class Violation:
    """One breach of the contract, with what shows it."""

    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


class WatchChecker:
    """Replays a watcher's deliveries and collects :class:`Violation` s.

    ``histories`` holds, per ``(table, id)``, the changes delivered for it, in order.
    """

    def __init__(self) -> None:
        self.violations: list[Violation] = []
        self.histories: dict[tuple[str, str], list[Observed]] = {}
        self.resets: list[Reset] = []
        self.delivered = 0
        self._last: dict[tuple[str, str], int | None] = {}  # last version seen (None: deleted)
        self._revision: int | None = None  # revision of the group being delivered
        self._batch: int | None = None  # the poll that delivered that group
        self._listed: set[tuple[str, str]] = set()  # objects whose versions start from a re-list
        self._closed: set[int] = set()  # revisions whose group was followed by another

    def feed_all(self, items: Iterable[Observed | Reset]) -> WatchChecker:
        """Feed every item in order; returns self."""
        for item in items:
            self.feed(item)
        return self

    def feed(self, item: Observed | Reset) -> None:
        """Account for one delivered change (or a reset)."""
        if isinstance(item, Reset):
            self.resets.append(item)
            self._last.clear()
            self._listed.clear()
            self._closed.clear()
            self._revision, self._batch = item.revision, None
            return
        key = (item.table, item.id)
        history = self.histories.setdefault(key, [])
        if item.listed:
            history.append(item)
            self._last[key] = item.new_version
            self._listed.add(key)
            return
        self.delivered += 1
        name = f"{item.table} {item.id}"
        if key in self._listed and self._covered(item, key):
            return
        if history and item.revision <= history[-1].revision and key in self._last:
            # An object changes at most once per commit: this one was delivered before.
            again = any((h.revision, h.old_version, h.new_version) == _change(item) for h in history)
            kind = "duplicate" if again else "out-of-order"
            self._flag(
                kind, f"{name} {_describe(item)} at revision {item.revision} after revision {history[-1].revision}"
            )
            history.append(item)
            return
        history.append(item)
        if self._check_versions(item, key, name):
            self._check_revision(item, name)

    def _covered(self, item: Observed, key: tuple[str, str]) -> bool:
        """Whether a change of a listed object was already in the list (then it is not checked)."""
        last = self._last.get(key)
        if last is not None and item.new_version is not None and item.new_version <= last:
            return True
        self._listed.discard(key)
        return False

    def _check_revision(self, item: Observed, name: str) -> None:
        current = self._revision
        if current is None or item.revision > current:
            if current is not None:
                self._closed.add(current)
            self._revision, self._batch = item.revision, item.batch
        elif item.revision < current:
            if item.revision in self._closed:
                self._flag(
                    "torn",
                    f"{name}: a change of revision {item.revision} came after revision {current}'s "
                    "(one commit delivered in parts)",
                )
            else:
                self._flag("out-of-order", f"{name}: revision {item.revision} after revision {current}")
        elif self._batch is not None and item.batch != self._batch:
            self._flag("torn", f"{name}: the changes of revision {current} arrived in different polls")
            self._batch = item.batch

    def _check_versions(self, item: Observed, key: tuple[str, str], name: str) -> bool:
        """Check the object's version chain; False when the change is a re-delivery."""
        if item.old_version is None and item.new_version != 1:
            self._flag("bad-version", f"{name} created at version {item.new_version}")
        if item.old_version is not None and item.new_version is not None and item.new_version != item.old_version + 1:
            self._flag("bad-version", f"{name} went from version {item.old_version} to {item.new_version}")
        if key not in self._last:
            # First sight (or first since a reset): nothing to compare with.
            self._last[key] = item.new_version
            return True
        last = self._last[key]
        if item.old_version != last:
            if last is None:
                self._flag("skipped", f"{name} changed ({_describe(item)}) after its deletion was delivered")
            elif item.old_version is None:
                self._flag("duplicate", f"{name} created again after version {last} was delivered")
                return False
            elif item.old_version < last:
                self._flag("duplicate", f"{name} {_describe(item)} delivered again after version {last}")
                return False
            else:
                self._flag(
                    "skipped",
                    f"{name}: versions {last + 1}..{item.old_version} never delivered (next was {_describe(item)})",
                )
        self._last[key] = item.new_version
        return True

    def _flag(self, kind: str, detail: str) -> None:
        self.violations.append(Violation(kind, detail))

    def count(self, kind: str) -> int:
        """How many violations of ``kind`` were found."""
        return sum(1 for v in self.violations if v.kind == kind)

    @property
    def complete(self) -> bool:
        """True when no reset cut the history: every change since the start was delivered or flagged."""
        return not self.resets


def caught_up(items: Iterable[Observed | Reset], versions: Mapping[str, int]) -> bool:
    """Whether the last state delivered of each object id in ``versions`` is at that version."""
    last: dict[str, int | None] = {}
    for item in items:
        if isinstance(item, Observed):
            last[item.id] = item.new_version
    return all(last.get(key) == version for key, version in versions.items())


def _change(item: Observed) -> tuple[int, int | None, int | None]:
    return item.revision, item.old_version, item.new_version


def _describe(item: Observed) -> str:
    if item.old_version is None:
        return f"creation (v{item.new_version})"
    if item.new_version is None:
        return f"deletion of v{item.old_version}"
    return f"v{item.old_version}->v{item.new_version}"
