"""The Redis backend's own command packing, held to redis-py's (no server needed)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import example, given, settings
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
        elif kind in ("O", "K"):
            # An object's put and its index's, or no referrer left of an object and its deletes
            # and its index's: the index is i/<table>/<id>, the referrers r/<table>/<id>/.
            key = fields[pos + 1].decode()
            _, _, table, oid = key.split("/")
            index = f"i/{table}/{oid}"
            if kind == "O":
                puts += [(key, fields[pos + 2], "0"), (index, fields[pos + 3], "-1")]
                conditions.add(("v", index, "0"))
                pos += 4
            else:
                conditions.add(("p", f"r/{table}/{oid}/", "0"))
                deletes += [(key, "0"), (index, "-1")]
                pos += 2
        elif kind == "e":
            conditions.add(("e", fields[pos + 1].decode(), ""))
            pos += 2
        else:
            conditions.add((kind, fields[pos + 1].decode(), fields[pos + 2].decode()))
            pos += 3
    return conditions, puts, deletes


@settings(max_examples=200, deadline=None)
@given(
    versions=st.lists(st.tuples(_KEYS, st.integers(0, 3)), max_size=6),
    exists=st.lists(_KEYS, max_size=2),
    prefixes=st.lists(st.tuples(st.sampled_from(["r/T/1/", "r/T/3/", "r/S/2/"]), st.integers(0, 1)), max_size=2),
    puts=st.dictionaries(_KEYS, st.binary(max_size=8), max_size=6),
    deletes=st.lists(_KEYS, max_size=3),
)
@example(  # a create: 'O'
    versions=[("i/T/1", 0)], exists=["o/t/S/2"], prefixes=[], puts={"o/t/T/1": b"o", "i/T/1": b"i"}, deletes=[]
)
@example(  # a delete: 'K'
    versions=[("o/t/T/1", 2)], exists=[], prefixes=[("r/T/1/", 0)], puts={}, deletes=["o/t/T/1", "i/T/1", "u/T/name/x"]
)
@example(  # neither: the index not next, the prefix another object's or not at 0
    versions=[("i/T/1", 0)],
    exists=[],
    prefixes=[("r/T/3/", 0), ("r/T/1/", 1)],
    puts={"o/t/T/1": b"o", "u/T/name/x": b"u", "i/T/1": b"i"},
    deletes=["o/t/T/1", "i/T/1"],
)
def test_a_put_expected_absent_goes_with_its_condition_and_nothing_else_changes(
    versions: list[tuple[str, int]],
    exists: list[str],
    prefixes: list[tuple[str, int]],
    puts: dict[str, bytes],
    deletes: list[str],
) -> None:
    """A put whose key has a condition 'version 0' is sent as one item 'C' (the put and that
    condition); the script reads the same conditions, puts (in order) and deletes as from the
    items sent separately, every field framed by its own header."""
    from nbdb.backends.redis.backend import _payload
    from nbdb.families.kv import Exists, PrefixUnchangedSince, VersionIs

    conditions = [VersionIs(k, v) for k, v in versions] + [Exists(k) for k in exists]
    conditions += [PrefixUnchangedSince(k, r) for k, r in prefixes]

    def root(key: str) -> int | None:
        return 0 if key.startswith("o/") else None

    out = _payload(conditions, puts, deletes, root, lambda name: name)
    fields = out[1::2]
    assert out[0::2] == [argument_head(len(f)) for f in fields]
    got_conditions, got_puts, got_deletes = _parsed(fields)
    expected = {("v", k, str(v)) for k, v in versions} | {("e", k, "") for k in exists}
    expected |= {("p", k, str(r)) for k, r in prefixes}
    assert got_conditions == expected
    assert got_puts == [(k, v, "0" if k.startswith("o/") else "-1") for k, v in puts.items()]
    assert got_deletes == [(k, "0" if k.startswith("o/") else "-1") for k in deletes]
    # Each fused condition is sent with its put, not as an item of its own; an object's put right
    # before its index's expected absent is one item 'O' (4 fields, not 8), an object's delete
    # right before its index's one item 'K' (2 fields, not 6).
    fresh = {k for k, v in versions if v == 0}
    fused = sum(1 for k, v in versions if v == 0 and k in puts)
    names = list(puts)
    objects = sum(
        1
        for a, b in itertools.pairwise(names)
        if a.startswith("o/") and a not in fresh and b == "i/" + a.split("/", 2)[2] and b in fresh
    )
    # The first 'p' of r/<table>/<id>/ at 0 and the first two deletes, o/<topic>/<table>/<id> and
    # i/<table>/<id>: one item 'K' (2 fields, not 9).
    dropped = (
        len(deletes) > 1
        and deletes[0].startswith("o/")
        and deletes[1] == "i/" + deletes[0].split("/", 2)[2]
        and ("r/" + deletes[0].split("/", 2)[2] + "/", 0) in prefixes
    )
    expected_fields = 4 * len(puts) + 3 * (len(deletes) + len(conditions) - fused) - 4 * objects - 7 * dropped
    expected_fields -= len(exists)  # 'e key', two fields
    assert len(fields) == expected_fields
