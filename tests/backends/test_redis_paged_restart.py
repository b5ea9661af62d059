"""A paged directory walk (``_names_paged``) that meets another server process between two pages.

An ``SSCAN`` cursor is a bucket position in one process's hash table, and the bucket of a
name depends on the process's random hash seed: a cursor from before a restart (or a
Sentinel failover, the promoted replica being another process) points anywhere in the new
process's table, and the walk continued with it skipped names that were there throughout.
Neither the ``dmr`` marks nor the change log knew of them: a list silently missing objects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import nbdb
from nbdb.backends.redis import RedisBackend
from nbdb.testing.fixtures import server_factory  # noqa: F401 - pytest fixture

redis = pytest.importorskip("redis")


@pytest.mark.timeout(120)
def test_a_walk_that_meets_a_restarted_server_returns_every_name(server_factory: Callable[..., Any]) -> None:  # noqa: F811
    server = server_factory("redis", appendonly=True)
    member = server.members[0]
    with nbdb.connect(server.url, namespace="walk", retries=20) as db:
        backend = db.backend
        assert isinstance(backend, RedisBackend)
        wanted = [f"ls-{i:05d}" for i in range(6000)]
        raw = redis.Redis(host=member.host, port=member.ports["client"])
        try:
            raw.sadd(backend.root + "d:o/t1/LogicalSwitch/", *wanted)
        finally:
            raw.close()
        rounds = 0
        real = backend._client.pipeline

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            nonlocal rounds
            rounds += 1
            if rounds == 2:  # after the first page: the walk goes on on another process
                member.restart()
            return real(*args, **kwargs)

        backend._client.pipeline = pipeline  # type: ignore[method-assign]
        try:
            got = backend._names_paged(["o/t1/LogicalSwitch/"])
        finally:
            del backend._client.pipeline
        assert rounds >= 2, "the directory fitted one page: nothing tested"
        assert got == [f"o/t1/LogicalSwitch/{n}" for n in wanted]


@pytest.mark.timeout(120)
def test_a_walk_by_a_user_refused_info_still_pages_every_name(server_factory: Callable[..., Any]) -> None:  # noqa: F811
    """The process is asked with INFO; an ACL user without it (``-@dangerous``) walks as before."""
    server = server_factory("redis")
    member = server.members[0]
    host, port = member.host, member.ports["client"]
    raw = redis.Redis(host=host, port=port)
    try:
        raw.execute_command("ACL", "SETUSER", "walker", "on", ">walk-pw", "~*", "&*", "+@all", "-info")
        walker = redis.Redis(host=host, port=port, username="walker", password="walk-pw")
        with pytest.raises(redis.exceptions.NoPermissionError):
            walker.info("server")
        walker.close()
        with nbdb.connect(f"redis://walker:walk-pw@{host}:{port}/0", namespace="acl") as db:
            backend = db.backend
            assert isinstance(backend, RedisBackend)
            wanted = [f"ls-{i:05d}" for i in range(3000)]
            raw.sadd(backend.root + "d:o/t1/LogicalSwitch/", *wanted)
            assert backend._names_paged(["o/t1/LogicalSwitch/"]) == [f"o/t1/LogicalSwitch/{n}" for n in wanted]
    finally:
        raw.close()
