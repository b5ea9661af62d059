"""Id counters in ``NB_Global.external_ids``: the increment and how a lost one is settled.

A counter is the entry ``nbdb:id:<namespace>/<name>`` = ``"<value> <token>@<value> ..."``:
its value and the tokens of its last increments (a window, as commit tokens are
kept in rows), so an increment whose reply was lost is found by a later read.
Each increment compares the entry itself, never the row's ``_version``.
"""

from __future__ import annotations

from typing import Any

from nbdb import errors
from nbdb.families.ovsdb.datum import wire_map
from nbdb.families.ovsdb.mapping import EXTERNAL_IDS
from nbdb.families.ovsdb.rows import VERSION_LIMIT
from nbdb.families.rules import counter_value

__all__ = ["COUNTER_PREFIX", "increment_ops", "parse_counter", "settle_increments"]

COUNTER_PREFIX = "nbdb:id:"
"""The ``external_ids`` key of a counter is this, then ``<namespace>/<name>``."""


def _nb_global_wait(where: list[Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "op": "wait",
        "table": "NB_Global",
        "timeout": 0,
        "where": where,
        "columns": [],
        "until": "==",
        "rows": rows,
    }


def increment_ops(row: dict[str, Any] | None, key: str, old: str | None, entry: str) -> list[dict[str, Any]]:
    """One increment of a counter entry in ``NB_Global.external_ids``, compared on the entry itself.

    Not on the row's ``_version``: a relay numbers its copies itself, so the
    ``_version`` it shows never matches the leader's.
    """
    if row is None:
        # Create NB_Global, if nobody did meanwhile.
        return [
            _nb_global_wait([], []),
            {"op": "insert", "table": "NB_Global", "row": {EXTERNAL_IDS: wire_map([(key, entry)])}},
        ]
    where = [["_uuid", "==", row["_uuid"]]]
    new = wire_map([(key, entry)])
    mutate = {"op": "mutate", "table": "NB_Global", "where": where, "mutations": [[EXTERNAL_IDS, "insert", new]]}
    if old is None:
        # A map insert leaves an existing key alone: check that ours is the one stored.
        return [mutate, _nb_global_wait([*where, [EXTERNAL_IDS, "includes", new]], [{}])]
    mutate["mutations"] = [[EXTERNAL_IDS, "delete", ["set", [key]]], *mutate["mutations"]]
    return [_nb_global_wait([*where, [EXTERNAL_IDS, "includes", wire_map([(key, old)])]], [{}]), mutate]


def settle_increments(lost: set[int], current: int, pairs: list[tuple[str, int]], token: str, name: str) -> int | None:
    """The value one of the ``lost`` increments made, if the entry shows it; drops those that cannot land.

    Raises CommitUnknownError when later increments hide whether one landed.
    """
    for value in sorted(lost):
        if (token, value) in pairs:
            return value
        if any(v == value for _t, v in pairs):
            lost.discard(value)  # another increment made this value: ours compared the entry before it
        elif current >= value:
            raise errors.CommitUnknownError(
                f"id counter {name!r}: the reply of an increment was lost and later increments hide whether it "
                "landed; the value it would have returned may be used by nobody"
            )
    return None


def parse_counter(entry: str | None, name: str) -> tuple[int, str]:
    """The value and the token window of a counter entry (``"<value> <token>@<value> ..."``)."""
    value, _, window = (entry or "0").partition(" ")
    # A negative one too: it handed out ids below 1. And one another writer set at 2**63 - 1 or more: its next
    # value would be written into the token window where parse_window cannot read it back, and a lost
    # reply's increment could then not be found (CommitUnknownError although it landed).
    return counter_value(value, name, name, last=VERSION_LIMIT - 1, text=True), window
