"""The Redis backend's own command packing, held to redis-py's (no server needed)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

redis = pytest.importorskip("redis")

from nbdb.backends.redis.connection import ScriptLine, argument_head  # noqa: E402

_ARGS = st.lists(st.one_of(st.binary(max_size=40), st.binary(min_size=1000, max_size=1100), st.just(b"")), max_size=12)


@settings(max_examples=200, deadline=None)
@given(fixed=st.lists(st.binary(max_size=20), max_size=3), args=_ARGS, more=_ARGS)
def test_a_packed_evalsha_is_the_command_redis_py_would_send(
    fixed: list[bytes], args: list[bytes], more: list[bytes]
) -> None:
    """Every argument's header (looked up by length, or formatted past the kept lengths), whether
    given plain or already framed, the closing CRLFs and the count match redis-py's own packing."""
    client = redis.Redis()  # never connects: only its pool is looked at
    line = ScriptLine(client, "return 1", fixed)
    try:
        framed = [part for arg in more for part in (argument_head(len(arg)), arg)]
        ours = line.pack(args, framed)
        theirs = b"".join(redis.connection.Connection().pack_command("EVALSHA", line.sha, 0, *fixed, *args, *more))
        assert ours == theirs
    finally:
        line.close()
        client.close()


_KEYS = st.sampled_from(["o/t/T/1", "i/T/1", "u/T/name/x", "r/S/2/T/1", "o/t/T/3", "i/T/3"])


def _parsed(
    fields: list[bytes],
) -> tuple[set[tuple[str, str, str]], list[tuple[str, bytes, str]], list[tuple[str, str]]]:
    """The commit script's reading of its items (see COMMIT_LUA): conditions, puts and deletes."""
    conditions: set[tuple[str, str, str]] = set()
    puts: list[tuple[str, bytes, str]] = []
    deletes: list[tuple[str, str]] = []
    pos = 0
    while pos < len(fields):
        kind = fields[pos].decode()
        if kind in ("P", "C"):
            puts.append((fields[pos + 1].decode(), fields[pos + 2], fields[pos + 3].decode()))
            if kind == "C":
                conditions.add(("v", fields[pos + 1].decode(), "0"))
            pos += 4
        elif kind == "D":
            deletes.append((fields[pos + 1].decode(), fields[pos + 2].decode()))
            pos += 3
        else:
            conditions.add((kind, fields[pos + 1].decode(), fields[pos + 2].decode()))
            pos += 3
    return conditions, puts, deletes


@settings(max_examples=200, deadline=None)
@given(
    versions=st.lists(st.tuples(_KEYS, st.integers(0, 3)), max_size=6),
    exists=st.lists(_KEYS, max_size=2),
    puts=st.dictionaries(_KEYS, st.binary(max_size=8), max_size=6),
    deletes=st.lists(_KEYS, max_size=3),
)
def test_a_put_expected_absent_goes_with_its_condition_and_nothing_else_changes(
    versions: list[tuple[str, int]], exists: list[str], puts: dict[str, bytes], deletes: list[str]
) -> None:
    """A put whose key has a condition 'version 0' is sent as one item 'C' (the put and that
    condition); the script reads the same conditions, puts (in order) and deletes as from the
    items sent separately, every field framed by its own header."""
    from nbdb.backends.redis.backend import _payload
    from nbdb.families.kv import Exists, VersionIs

    conditions = [VersionIs(k, v) for k, v in versions] + [Exists(k) for k in exists]

    def root(key: str) -> int | None:
        return 0 if key.startswith("o/") else None

    out = _payload(conditions, puts, deletes, root, lambda name: name)
    fields = out[1::2]
    assert out[0::2] == [argument_head(len(f)) for f in fields]
    got_conditions, got_puts, got_deletes = _parsed(fields)
    expected = {("v", k, str(v)) for k, v in versions} | {("e", k, "") for k in exists}
    assert got_conditions == expected
    assert got_puts == [(k, v, "0" if k.startswith("o/") else "-1") for k, v in puts.items()]
    assert got_deletes == [(k, "0" if k.startswith("o/") else "-1") for k in deletes]
    # Each fused condition is sent with its put, not as an item of its own.
    fused = sum(1 for k, v in versions if v == 0 and k in puts)
    assert len(fields) == 4 * len(puts) + 3 * (len(deletes) + len(conditions) - fused)
