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
