"""The check a batched Redis range makes after its reads: each ``dmr`` field asked once, decided per prefix.

A one-table scan spelled out under T topics checks 4 directories per prefix (the table's, the
topic's, ``o/`` and the root); asked per prefix, ``o/<topic>/``, ``o/`` and the root repeated
across the tables of a topic and across all topics (16 tables under 10,000 topics: 640,000
fields in one HMGET, 170,002 distinct). Now each distinct field is asked once, and the answer is
still the per-prefix one: the deepest directory that has a mark speaks for its prefix.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.backends.redis import RedisBackend
from nbdb.testing.fixtures import redis_server  # noqa: F401 - pytest fixture
from nbdb.testing.redis import RedisServer

redis = pytest.importorskip("redis")

TOPICS = ["t1", "t2", "t3"]
TABLES = ["LogicalSwitch", "LogicalRouter", "LogicalSwitchPort"]
DIRS = ["", "o/"] + [f"o/{t}/" for t in TOPICS] + [f"o/{t}/{tb}/" for t in TOPICS for tb in TABLES]


@pytest.fixture
def backend(redis_server: RedisServer) -> Iterator[RedisBackend]:  # noqa: F811 - the fixture
    with nbdb.connect(redis_server.url, namespace=f"dmr-{uuid.uuid4().hex[:10]}") as db:
        assert isinstance(db.backend, RedisBackend)
        yield db.backend


def _reference(prefix: str, marks: dict[str, bytes], revision: int) -> bool:
    """Whether ``prefix`` is unchanged since ``revision``, decided by itself: its directory and each ancestor."""
    directory = prefix[: prefix.rfind("/") + 1]
    while True:
        if directory in marks:
            return marks[directory].isdigit() and int(marks[directory]) <= revision
        if not directory:
            return True
        directory = directory[: directory.rfind("/", 0, len(directory) - 1) + 1]


@pytest.mark.timeout(120)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prefixes=st.lists(
        st.builds(
            lambda t, tb, rest: f"o/{t}/{tb}/{rest}",
            st.sampled_from(TOPICS),
            st.sampled_from(TABLES),
            st.sampled_from(["", "ab"]),
        ),
        min_size=1,
        max_size=10,
    ),
    marks=st.dictionaries(st.sampled_from(DIRS), st.sampled_from([b"0", b"4", b"9", b"12", b"x4", b""])),
    revision=st.integers(0, 10),
)
def test_the_dmr_check_asks_each_directory_once_and_decides_as_each_prefix_alone(
    backend: RedisBackend, prefixes: list[str], marks: dict[str, bytes], revision: int
) -> None:
    raw = redis.Redis(host="127.0.0.1", port=backend.config.hosts[0][1], db=backend.config.db)
    asked: list[list[Any]] = []
    real = backend._client.hmget

    def hmget(name: str, keys: list[Any], *args: Any) -> Any:
        asked.append(list(keys))
        return real(name, keys, *args)

    # Set before the try: a failure before it made the finally's del raise AttributeError, hiding it.
    backend._client.hmget = hmget  # type: ignore[method-assign]
    try:
        raw.delete(backend.root + "dmr")
        if marks:
            raw.hset(backend.root + "dmr", mapping=dict(marks))
        got = backend._unchanged_since(prefixes, revision)
    finally:
        del backend._client.hmget
        raw.close()
    assert got == all(_reference(p, marks, revision) for p in prefixes)
    [fields] = asked
    assert len(fields) == len(set(fields)), "a dmr field asked more than once"
    chains = {p[: i + 1] for p in prefixes for i, c in enumerate(p) if c == "/"} | {""}
    assert set(fields) == chains
