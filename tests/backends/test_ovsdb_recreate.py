"""Compare-and-swap across a delete and a re-create of one id on OVSDB, where the kit cannot look.

The id is the row's ``_uuid`` (inserts name it), so a row created again under an id has the same
``_uuid`` as the one deleted: what tells them apart is the token of the nbdb commit that wrote
each (``external_ids:nbdb:txn``), which a copy read from a record carries, and the revision on
this connection's clock at which the replica saw the row change, which a write's result carries.
Here: another connection's copies and writes, and a re-creation this connection only sees merged
into one change (a reconnect's catch-up), the row being created again exactly as it was.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import nbdb
from nbdb.backends.ovsdb import OvsdbBackend
from nbdb.conformance.kit import eventually
from nbdb.families.ovsdb.rows import EXT_TXN, push_window, written_token
from nbdb.models import LogicalSwitch
from nbdb.testing.faults import FaultProxy
from nbdb.testing.fixtures import ovsdb_server  # noqa: F401
from nbdb.testing.ovsdb import OvsdbServer
from nbdb.testing.probes import run_tool
from nbdb.testing.process import find_binary

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def two(ovsdb_server: OvsdbServer) -> Iterator[tuple[nbdb.Database, nbdb.Database]]:  # noqa: F811
    """Two Databases on connections of their own (another timeout: another driver, clock and replica)."""
    with nbdb.connect(ovsdb_server.url) as mine, nbdb.connect(ovsdb_server.url, timeout=19) as theirs:
        assert isinstance(mine.backend, OvsdbBackend) and isinstance(theirs.backend, OvsdbBackend)
        assert mine.backend.clock is not theirs.backend.clock
        yield mine, theirs


def _switch() -> LogicalSwitch:
    return LogicalSwitch(name=f"aba-{uuid.uuid4().hex[:10]}")


def _read_token(obj: LogicalSwitch) -> int | None:
    """The token of the nbdb commit that wrote a read copy's record (rows.written_token)."""
    return obj.__pydantic_private__.get("_written")  # type: ignore[union-attr,no-any-return]


def _again_as_it_was(db: nbdb.Database, obj: LogicalSwitch) -> LogicalSwitch:
    """``obj``'s id deleted and created again with the very content it had (at version 1 again)."""
    db.delete(db.get(LogicalSwitch, obj.id))
    again = db.create(LogicalSwitch(id=obj.id, name=obj.name))
    assert again.version == 1 and again.model_dump(exclude={"version"}) == obj.model_dump(exclude={"version"})
    return again


@contextlib.contextmanager
def _cuttable(server: OvsdbServer) -> Iterator[tuple[FaultProxy, nbdb.Database, nbdb.Database]]:
    """A fault proxy, a Database ("mine") whose connection goes through it, and another ("theirs") on its own."""
    member = server.members[0]
    with FaultProxy([(member.host, member.port)]) as proxy, nbdb.connect(server.url) as theirs:
        host, port = proxy.addresses[0]
        with nbdb.connect(f"ovsdb+tcp://{host}:{port}", timeout=15) as mine:
            yield proxy, mine, theirs


def _again_while_cut(proxy: FaultProxy, theirs: nbdb.Database, obj: LogicalSwitch) -> None:
    """``obj`` created again as it was while the proxy's connection is down: it sees one merged change."""
    proxy.refuse()
    proxy.cut()
    _again_as_it_was(theirs, obj)
    proxy.heal()


def test_a_stale_copy_is_refused_once_its_id_is_created_again_as_it_was(
    two: tuple[nbdb.Database, nbdb.Database],
) -> None:
    mine, theirs = two
    first = mine.create(_switch())
    read = mine.get(LogicalSwitch, first.id)
    again = _again_as_it_was(theirs, first)  # same id, name and version: only the commit that wrote it differs
    for stale in (first, read):
        with pytest.raises(nbdb.ConflictError, match="created again"):
            mine.update(stale.replace(other_config={"k": "v"}))
        with pytest.raises(nbdb.ConflictError, match="created again"):
            mine.delete(stale)
    assert theirs.get(LogicalSwitch, first.id) == again
    # Their write's result and their read: copies of the object stored now, on another connection, write here.
    moved = mine.update(again.replace(other_config={"by": "mine"}))
    assert moved.version == 2
    assert mine.update(theirs.get(LogicalSwitch, first.id).replace(other_config={})).version == 3


def test_copies_of_another_connection_are_never_refused_while_their_object_stands(
    two: tuple[nbdb.Database, nbdb.Database],
) -> None:
    # A write's result carries the revision of its own connection's clock, which says nothing on another:
    # compared by its version there; a read carries the writing commit's token, the same on every client.
    mine, theirs = two
    obj = theirs.create(_switch())
    for step in range(3):
        obj = mine.update(obj.replace(other_config={"step": str(step)}))
        obj = theirs.update(obj.replace(other_config={"step": f"{step}+"}))
        obj = theirs.update(mine.get(LogicalSwitch, obj.id).replace(other_config={"read": str(step)}))
    assert mine.get(LogicalSwitch, obj.id).version == obj.version == 10


def test_a_re_creation_seen_merged_after_a_reconnect_makes_the_copies_before_it_stale_and_reaches_caches(
    ovsdb_server: OvsdbServer,  # noqa: F811
) -> None:
    # The merged re-creation changed the record's token without an event: a cache kept the old copy, which every
    # write refuses, and a controller retrying from its cache looped for ever. It is told as a merged change
    # carrying the new incarnation's copy.
    with _cuttable(ovsdb_server) as (proxy, mine, theirs):
        first = mine.create(_switch())
        read = mine.get(LogicalSwitch, first.id)
        token = read.__pydantic_private__["_written"]  # type: ignore[index]
        cache = mine.cache(LogicalSwitch, shared=False)
        assert cache.wait_synced(10)
        assert eventually(lambda: cache.get(LogicalSwitch, first.id) is not None)
        _again_while_cut(proxy, theirs, first)

        def reread() -> bool:
            got = mine.get(LogicalSwitch, first.id)
            return got.__pydantic_private__["_written"] != token  # type: ignore[index]

        assert eventually(reread)
        for stale in (first, read):
            with pytest.raises(nbdb.ConflictError, match="created again"):
                mine.update(stale.replace(other_config={"k": "v"}))
            with pytest.raises(nbdb.ConflictError, match="created again"):
                mine.delete(stale)
        fresh = mine.get(LogicalSwitch, first.id)
        assert (fresh.version, fresh.name) == (1, first.name)
        new_token = fresh.__pydantic_private__["_written"]  # type: ignore[index]

        def cached() -> LogicalSwitch | None:
            got = cache.get(LogicalSwitch, first.id)
            return got if got is not None and got.__pydantic_private__.get("_written") == new_token else None  # type: ignore[union-attr]

        assert eventually(lambda: cached() is not None, timeout=3)
        from_cache = cached()
        assert from_cache is not None
        # A controller retries from its cache: the copy it hands out is writable.
        assert mine.update(from_cache.replace(other_config={"k": "v"})).version == 2
        cache.close()


def test_a_cache_holding_this_processs_own_write_takes_a_re_creation_seen_merged(
    ovsdb_server: OvsdbServer,  # noqa: F811
) -> None:
    # The cache holds the copy this process's create returned (its token inside its revision, not in
    # "_written"): the check of an update at the version it holds read "_written" alone and kept it, so the
    # copy it handed out was refused ("created again") until the row changed again.
    with _cuttable(ovsdb_server) as (proxy, mine, theirs):
        cache = mine.cache(LogicalSwitch)  # shared: it takes the copy the write returned
        assert cache.wait_synced(10)
        first = mine.create(_switch())
        assert eventually(lambda: cache.get(LogicalSwitch, first.id) is first, timeout=5)  # the write's result
        old = _read_token(mine.get(LogicalSwitch, first.id))
        assert old is not None and first.nbdb_revision.written == old  # type: ignore[union-attr]
        _again_while_cut(proxy, theirs, first)
        token = _read_token(theirs.get(LogicalSwitch, first.id))
        assert token is not None and token != old
        assert eventually(lambda: _read_token(mine.get(LogicalSwitch, first.id)) == token)

        def cached() -> LogicalSwitch | None:
            got = cache.get(LogicalSwitch, first.id)
            return got if got is not None and _read_token(got) == token else None

        assert eventually(lambda: cached() is not None, timeout=3), "the cache kept the old incarnation"
        from_cache = cached()
        assert from_cache is not None and (from_cache.version, from_cache.name) == (1, first.name)
        # cas_across_recreate: the result of the create before is of the object deleted, so its write is
        # refused; the cache's copy is of the one stored now, so its write passes.
        with pytest.raises(nbdb.ConflictError, match="created again"):
            mine.update(first.replace(other_config={"k": "w"}))
        assert mine.update(from_cache.replace(other_config={"k": "v"})).version == 2
        cache.close()


def test_a_re_list_keeps_the_copies_this_process_wrote_without_decoding_them_again(
    ovsdb_server: OvsdbServer,  # noqa: F811
) -> None:
    # A re-list compares each held copy's stamp with its record's: a write's result held its commit's token
    # inside its revision, which the compare did not read, so every copy this process wrote was decoded again.
    with nbdb.connect(ovsdb_server.url) as db:
        cache = db.cache(LogicalSwitch)  # shared: it takes the copy the write returned
        assert cache.wait_synced(10)
        mine = [db.create(_switch()) for _ in range(3)]
        mine[1] = db.update(mine[1].replace(other_config={"k": "v"}))
        assert eventually(lambda: all(cache.get(LogicalSwitch, m.id) is m for m in mine), timeout=5)
        cache._replica._relist()  # what a cache does when its history is gone (a list compared with what it holds)
        assert all(cache.get(LogicalSwitch, m.id) is m for m in mine), "a copy this process wrote was decoded again"
        cache.close()


def test_a_result_returned_before_the_monitor_showed_its_commit_is_not_taken_for_a_re_creation(
    ovsdb_server: OvsdbServer,  # noqa: F811
) -> None:
    # The monitor shows a commit only after its reply (a relay's), later than the commit waits for it: the
    # result carried a revision from before its commit, the update moved the row's past it, and the next write
    # of that result was refused as "deleted and created again" though nothing was.
    with nbdb.connect(ovsdb_server.url) as db:
        backend = db.backend
        assert isinstance(backend, OvsdbBackend)
        first = db.create(LogicalSwitch(name=f"rc-{uuid.uuid4().hex[:10]}"))
        replica = backend.replica
        apply = replica.apply
        held: list[tuple[tuple[Any, ...], dict[str, Any]]] | None = []
        lock = threading.Lock()

        def held_apply(*args: Any, **kwargs: Any) -> None:
            with lock:
                if held is not None:
                    held.append((args, kwargs))  # shown later, as a relay forwards it after the reply
                    return
            apply(*args, **kwargs)

        replica.apply = held_apply  # type: ignore[method-assign]
        backend.commit_timeout = 0.3
        try:
            result = db.update(first.replace(other_config={"k": "1"}))  # its update held: the wait gives up
        finally:
            backend.commit_timeout = 20.0
            with lock:
                assert held is not None
                for args, kwargs in held:
                    apply(*args, **kwargs)
                held = None
            replica.apply = apply  # type: ignore[method-assign]
        assert eventually(lambda: db.get(LogicalSwitch, first.id).version == result.version)
        assert db.update(result.replace(other_config={"k": "2"})).other_config == {"k": "2"}


def test_a_switch_ovn_nbctl_adds_again_under_its_name_is_another_object(ovsdb_server: OvsdbServer) -> None:  # noqa: F811
    # ovn-nbctl's rows carry no nbdb token (their copies compare their version alone), and ovn-nbctl never
    # makes a row again under its _uuid: "ls-del" then "ls-add" of a name is a row of another id.
    name = _switch().name

    def nbctl(*args: str) -> None:
        run_tool([str(find_binary("ovn-nbctl")), f"--db={ovsdb_server.remotes}", "--timeout=10", *args], timeout=20)

    def named() -> LogicalSwitch | None:
        return next((s for s in db.list(LogicalSwitch) if s.name == name), None)

    with nbdb.connect(ovsdb_server.url) as db:
        nbctl("ls-add", name)
        old = named()
        assert old is not None
        nbctl("ls-del", name, "--", "ls-add", name)
        assert eventually(lambda: (got := named()) is not None and got.id != old.id)
        with pytest.raises(nbdb.NotFoundError):
            db.update(old.replace(other_config={"k": "v"}))
        new = named()
        assert new is not None
        written = db.update(new.replace(other_config={"k": "v"}))
        assert db.update(written.replace(other_config={})).version == written.version + 1
        nbctl("ls-del", name)


@pytest.mark.parametrize(
    ("txn", "token"),
    [
        ("0123456789abcdef@3 fedcba9876543210@2", 0x0123456789ABCDEF),
        ("0123456789abcdef@1", 0x0123456789ABCDEF),
        (None, None),
        ("", None),
        ("junk 0123456789abcdef@1", None),  # the first word only, as nbdb writes it
        ("+123456789abcdef@1", 0x123456789ABCDEF),  # what int() reads of it, alike on every client
        ("0123456789abcdeg@1", None),
        ("0123456789abcdef0@1", None),
        ("0123456789abcdef", None),  # no version: no entry of the window (see parse_window)
        (" 0123456789abcdef@1", None),
        ("0123456789abcdez@1", None),
    ],
)
def test_written_token_is_the_newest_token_nbdb_wrote_or_none(txn: str | None, token: int | None) -> None:
    assert written_token({} if txn is None else {EXT_TXN: txn}) == token


@given(writes=st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(1, 2**62)), min_size=1, max_size=8))
def test_written_token_is_the_token_of_the_last_write_pushed(writes: list[tuple[int, int]]) -> None:
    text = None
    for token, version in writes:
        text = push_window(text, f"{token:016x}", version)
    assert written_token({EXT_TXN: text or ""}) == writes[-1][0]


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_deep_copied_or_unpickled_result_of_a_deleted_row_is_refused(
    two: tuple[nbdb.Database, nbdb.Database], how: str
) -> None:
    # Review (wip/rev7): Revision.__reduce__ drops the commit's token and swaps the scope for a fresh object(),
    # so a write's result deep-copied (pydantic model_copy(deep=True), copy.deepcopy) or pickled carries a
    # revision of no clock and no token: the planner compares its version alone, and a copy of the deleted
    # incarnation overwrites the one created again at its version (a lost update). The token is the same on
    # every client (rows.written_token): nothing process-local to drop.
    import copy
    import pickle

    mine, theirs = two
    first = mine.create(_switch())
    kept = first.model_copy(deep=True) if how == "deepcopy" else pickle.loads(pickle.dumps(first))
    again = _again_as_it_was(theirs, first)
    assert again.version == kept.version == 1
    with pytest.raises(nbdb.ConflictError, match="created again"):
        mine.update(kept.replace(other_config={"k": "lost"}))
    assert copy.copy(theirs.get(LogicalSwitch, first.id)).other_config == {}
