"""The memory store's one-object commit path against its general one, for every sequence of writes.

A commit of one object takes :meth:`MemoryStore.check_one` and the
shortcuts of :meth:`MemoryStore.apply` for created objects and unchanged
references or unique values; a transaction takes :meth:`MemoryStore.check`.
Both must reach the same outcome (the same error, or the same versions) and
leave the same records, references, referrers and unique claims.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbdb import errors
from nbdb.backends.memory import MemoryBackend
from nbdb.backends.memory.store import MemoryStore, key_of
from nbdb.spi import ANY_VERSION, Delete, Put, RefKey, UniqueKey, WriteOp

pytestmark = pytest.mark.timeout(120)

_PARENTS = [uuid.UUID(int=i + 1) for i in range(3)]
_CHILDREN = [uuid.UUID(int=i + 101) for i in range(3)]
_NAMES = ['"a"', '"b"']

# One step: (kind, child or parent, which id, which version to expect, which parents, which name).
_step = st.tuples(
    st.sampled_from(["create", "update", "delete", "delete_any", "delete_if_exists"]),
    st.booleans(),
    st.integers(0, 2),
    st.sampled_from(["current", "stale", "zero"]),
    st.frozensets(st.integers(0, 2), max_size=2),
    st.sampled_from([None, *_NAMES]),
)


def _op(store: MemoryStore, step: tuple[Any, ...]) -> WriteOp:
    kind, child, which, expect, parents, name = step
    table, id = ("Child", _CHILDREN[which]) if child else ("Parent", _PARENTS[which])
    current = store.records.get(key_of((table, id)))
    version = 0 if current is None else current.version
    expect_version = {"current": version, "stale": max(0, version - 1), "zero": 0}[expect]
    if kind.startswith("delete"):
        if kind == "delete_any":
            expect_version = ANY_VERSION
        return Delete(table, id, None, expect_version, None, kind == "delete_if_exists")
    if kind == "create":
        expect_version = 0
    refs = frozenset(("Parent", _PARENTS[p]) for p in parents) if child else frozenset()
    unique = (UniqueKey("name", name),) if child and name is not None else ()
    old_refs = store.refs.get(key_of((table, id)), frozenset()) if expect_version else frozenset()
    return Put(table, id, None, b"{}", expect_version, refs, old_refs, None, unique)


def _outcome(commit: Any) -> tuple[str, Any]:
    try:
        return "ok", commit()
    except errors.NbdbError as exc:
        return type(exc).__name__, str(exc)


def _state(store: MemoryStore) -> tuple[Any, ...]:
    referrers = {target: frozenset(sources) for target, sources in store.referrers.items()}
    return (
        {key: record.version for key, record in store.records.items()},
        dict(store.refs),
        referrers,
        dict(store.uniques),
        dict(store.held),
        store.revision,
        {where: {id: record.version for id, record in part.items()} for where, part in store.parts.items() if part},
        [(c.table, c.id, c.topic, c.old and c.old.version, c.new and c.new.version, c.revision) for c in store.history],
    )


def _general(store: MemoryStore, ops: list[WriteOp]) -> list[int]:
    applied, versions = store.check(ops)
    if applied:
        store.apply(applied, versions)
    return versions if applied else [0]


def _indexes(objects: dict[RefKey, tuple[frozenset[RefKey], tuple[UniqueKey, ...]]]) -> tuple[Any, ...]:
    """The reference and unique indexes that ``objects`` (key -> (refs, unique values)) must leave.

    The store keys its own dictionaries by :func:`key_of`; referrers and unique owners name the SPI's keys.
    """
    referrers: dict[RefKey, set[RefKey]] = {}
    for source, (refs, _) in objects.items():
        for target in refs:
            referrers.setdefault(key_of(target), set()).add(key_of(source))
    return (
        {key_of(key): refs for key, (refs, _) in objects.items() if refs},
        {target: frozenset(sources) for target, sources in referrers.items()},
        {(key[0], *u): key[1] for key, (_, unique) in objects.items() for u in unique},
        {key_of(key): tuple((key[0], *u) for u in unique) for key, (_, unique) in objects.items() if unique},
    )


def _same_history(steps: list[tuple[Any, ...]]) -> tuple[MemoryStore, MemoryStore]:
    """Two stores that went through ``steps`` one commit at a time: one for the fast path, one for the general."""
    fast, general = MemoryStore(), MemoryStore()
    for step in steps:
        op = _op(fast, step)
        for store in (fast, general):
            _outcome(lambda: store.commit([op]))  # noqa: B023 - called right here
    return fast, general


def _assert_same_batch(fast: MemoryStore, general: MemoryStore, ops: list[WriteOp]) -> None:
    """``ops`` committed on ``fast`` and by check/apply on ``general``: the same outcome, state and indexes."""
    got = _outcome(lambda: fast.commit(ops).versions)
    want = _outcome(lambda: _general(general, ops))
    assert got == want
    assert _state(fast) == _state(general)
    objects = {(r.table, r.id): (fast.refs.get(key, frozenset()),
                                 tuple(UniqueKey(*slot[1:]) for slot in fast.held.get(key, ())))
               for key, r in fast.records.items()}  # fmt: skip
    assert _state(fast)[1:5] == _indexes(objects)


@settings(max_examples=300, deadline=None)
@given(st.lists(_step, min_size=1, max_size=25))
def test_one_object_commits_match_the_general_path(steps: list[tuple[Any, ...]]) -> None:
    fast, general = MemoryStore(), MemoryStore()
    objects: dict[RefKey, tuple[frozenset[RefKey], tuple[UniqueKey, ...]]] = {}
    for step in steps:
        op = _op(fast, step)
        assert _op(general, step) == op  # both stores hold the same state, so the step is the same op
        got = _outcome(lambda: fast.commit([op]).versions)  # noqa: B023 - called right here
        want = _outcome(lambda: _general(general, [op]))  # noqa: B023
        assert got[0] == want[0], (op, got, want)
        if got[0] == "ok":
            assert got[1] == want[1]
            if isinstance(op, Put):
                objects[(op.table, op.id)] = (op.refs, op.unique)
            else:
                objects.pop((op.table, op.id), None)
        assert _state(fast) == _state(general)
        assert _state(fast)[1:5] == _indexes(objects)  # what apply's shortcuts must leave, too


def test_an_update_keeping_its_unique_value_keeps_its_claim() -> None:
    store = MemoryStore()
    parent = ("Parent", _PARENTS[0])
    me = ("Child", _CHILDREN[0])
    store.commit([Put(*parent, None, b"{}", 0)])
    refs = frozenset({parent})
    name = (UniqueKey("name", '"a"'),)
    store.commit([Put(*me, None, b"{}", 0, refs, frozenset(), None, name)])
    store.commit([Put(*me, None, b"{}", 1, refs, refs, None, name)])  # the very same reference set
    assert store.uniques == {("Child", "name", '"a"'): me[1]}
    assert store.referrers == {key_of(parent): {key_of(me)}}
    with pytest.raises(errors.UniqueViolationError):
        store.commit([Put("Child", _CHILDREN[1], None, b"{}", 0, frozenset(), frozenset(), None, name)])
    with pytest.raises(errors.ReferenceError):
        store.commit([Delete(*parent, None, 1)])
    store.commit([Put(*me, None, b"{}", 2, frozenset(), refs, None, ())])  # drops both
    assert store.uniques == {} and store.held == {} and store.referrers == {}


# A batch of creates: (parent or child, which id, which parents, which name) each.
_create = st.tuples(st.booleans(), st.integers(0, 2), st.frozensets(st.integers(0, 2), max_size=2),
                    st.sampled_from([None, *_NAMES]))  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(_step, max_size=12), st.lists(_create, min_size=2, max_size=6), st.booleans())
def test_a_batch_of_creates_matches_the_general_path(
    steps: list[tuple[Any, ...]], batch: list[Any], shared: bool
) -> None:
    """:meth:`MemoryStore.create_all` (one pass, checking as it applies) reaches what :meth:`MemoryStore.check`
    reaches, from any state, and leaves the store as it was when it cannot show the batch valid.

    ``shared``: equal reference sets are one object, as the model layer hands them out (siblings
    pointing to one parent), which :meth:`MemoryStore.create_all` indexes a run of at once.
    """
    fast, general = _same_history(steps)
    assert _state(fast) == _state(general)
    ops: list[WriteOp] = [_op(fast, ("create", child, which, "zero", parents, name))
                          for child, which, parents, name in batch]  # fmt: skip
    if shared:
        interned: dict[frozenset[RefKey], frozenset[RefKey]] = {}
        ops = [op._replace(refs=interned.setdefault(op.refs, op.refs)) if isinstance(op, Put) else op for op in ops]
    _assert_same_batch(fast, general, ops)


# A batch of updates: (child or parent, which id, which version to expect, keep the references and
# name or take these, which parents, which name) each.
_update = st.tuples(st.booleans(), st.integers(0, 2), st.sampled_from(["current", "stale"]), st.booleans(),
                    st.frozensets(st.integers(0, 2), max_size=2), st.sampled_from([None, *_NAMES]))  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(_step, max_size=15), st.lists(_update, min_size=2, max_size=6), st.booleans())
def test_a_batch_of_updates_matches_the_general_path(
    steps: list[tuple[Any, ...]], batch: list[Any], shared: bool
) -> None:
    """:meth:`MemoryStore.updates_ok` (one pass) reaches what :meth:`MemoryStore.check` reaches, from any state.

    ``keep``: the update keeps the object's references and name (the shape the one-pass path
    takes), else it takes those drawn; ``shared``: a kept reference set is the stored object
    itself, as the model layer hands it out, else an equal copy.
    """
    fast, general = _same_history(steps)
    ops: list[WriteOp] = []
    for child, which, expect, keep, parents, name in batch:
        op = _op(fast, ("update", child, which, expect, parents, name))
        me = key_of((op.table, op.id))
        if keep and me in fast.records:
            refs = fast.refs.get(me, frozenset())
            unique = tuple(UniqueKey(*slot[1:]) for slot in fast.held.get(me, ()))
            assert isinstance(op, Put)
            op = op._replace(refs=refs if shared else frozenset(refs), unique=unique)
        ops.append(op)
    _assert_same_batch(fast, general, ops)


def test_a_batch_of_updates_keeping_references_and_names_takes_one_pass() -> None:
    store = MemoryStore()
    parent = ("Parent", _PARENTS[0])
    refs = frozenset({parent})
    children = [("Child", c) for c in _CHILDREN]
    store.commit([Put(*parent, None, b"{}", 0)])
    store.commit([Put(*c, None, b"{}", 0, refs, frozenset(), None, (UniqueKey("name", f'"{i}"'),))
                  for i, c in enumerate(children)])  # fmt: skip
    ops: list[WriteOp] = [Put(*c, None, b"{}", 1, refs, refs, None, (UniqueKey("name", f'"{i}"'),))
                          for i, c in enumerate(children)]  # fmt: skip
    assert store.updates_ok(ops) == [2, 2, 2]
    assert store.commit(ops).versions == [2, 2, 2]
    assert [store.records[key_of(c)].version for c in children] == [2, 2, 2]
    assert [(c.old.version, c.new.version) for c in store.history[-3:] if c.old and c.new] == [(1, 2)] * 3
    assert {c.revision for c in store.history[-3:]} == {store.revision}
    stale = [Put(*c, None, b"{}", 1, refs, refs, None, (UniqueKey("name", f'"{i}"'),)) for i, c in enumerate(children)]
    assert store.updates_ok(stale) is None
    with pytest.raises(errors.ConflictError):
        store.commit(stale)
    renamed = [op._replace(expect_version=2) for op in ops]
    renamed[0] = renamed[0]._replace(unique=(UniqueKey("name", '"1"'),))  # a name another holds
    assert store.updates_ok(renamed) is None
    with pytest.raises(errors.UniqueViolationError):
        store.commit(renamed)
    assert store.revision == 3


def test_a_batch_of_creates_may_reference_each_other() -> None:
    store = MemoryStore()
    parent, child = ("Parent", _PARENTS[0]), ("Child", _CHILDREN[0])
    refs = frozenset({parent})
    name = (UniqueKey("name", '"a"'),)
    ops: list[WriteOp] = [Put(*child, None, b"{}", 0, refs, frozenset(), None, name), Put(*parent, None, b"{}", 0)]
    assert store.commit(ops).versions == [1, 1]
    assert store.referrers == {key_of(parent): {key_of(child)}}
    assert store.uniques == {("Child", "name", '"a"'): child[1]}
    taken = [Put("Child", _CHILDREN[1], None, b"{}", 0, frozenset(), frozenset(), None, name),
             Put("Child", _CHILDREN[2], None, b"{}", 0)]  # fmt: skip
    before = _state(store)
    assert store.create_all(taken) is None
    assert _state(store) == before and store.parts.keys() == {(None, "Child"), (None, "Parent")}
    with pytest.raises(errors.UniqueViolationError):
        store.commit(taken)
    dangling = [Put("Child", _CHILDREN[1], None, b"{}", 0, frozenset({("Parent", _PARENTS[1])})),
                Put("Child", _CHILDREN[2], None, b"{}", 0)]  # fmt: skip
    with pytest.raises(errors.ReferenceError):
        store.commit(dangling)
    twice = [Put("Child", _CHILDREN[1], None, b"{}", 0), Put("Child", _CHILDREN[1], None, b"{}", 0)]
    with pytest.raises(errors.ValidationError):
        store.commit(twice)
    assert store.revision == 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.uuids(), min_size=5, max_size=5, unique=True),
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1), st.booleans()), max_size=12),
)
def test_the_spi_names_objects_by_uuid_whatever_the_store_keys(ids: list[uuid.UUID], steps: list[Any]) -> None:
    """The store keys its dictionaries by ``id.int``; every answer of the backend names ``(table, UUID)``.

    Children (any UUID, the whole 128 bits) point to parents and claim names; reads, referrers,
    unique owners and a refused delete's error name them as a model of the same writes does.
    """
    backend = MemoryBackend(MemoryStore())
    parents, children = [("Parent", i) for i in ids[:2]], [("Child", i) for i in ids[2:]]
    backend.commit([Put(*p, None, b"{}", 0) for p in parents])
    model: dict[RefKey, tuple[RefKey, str]] = {}  # child -> (its parent, its name)
    for which, parent, delete in steps:
        child = children[which]
        current = backend.read(*child)
        if delete and current is not None:
            backend.commit([Delete(*child, None, current.version, frozenset({model[child][0]}))])
            del model[child]
        elif current is None:
            name = f'"{which}"'
            refs = frozenset({parents[parent]})
            backend.commit([Put(*child, None, b"{}", 0, refs, frozenset(), None, (UniqueKey("name", name),))])
            model[child] = (parents[parent], name)
    for child in children:
        record = backend.read(*child)
        assert (record is not None) == (child in model)
        if record is not None:
            assert (record.table, record.id) == child and type(record.id) is uuid.UUID
            assert backend.unique_owner("Child", UniqueKey("name", model[child][1])) == child[1]
    for p in parents:
        pointing = sorted(c for c, (target, _) in model.items() if target == p)
        assert backend.referrers(*p) == pointing
        if pointing:
            with pytest.raises(errors.ReferenceError) as refused:
                backend.commit([Delete(*p, None, 1)])
            assert all(str(c[1]) in str(refused.value) for c in pointing)
    assert {(r.table, r.id) for r in backend.scan(["Child"], None).records} == set(model)


def test_a_batch_of_creates_it_cannot_show_valid_leaves_the_store_as_it_was() -> None:
    """:meth:`MemoryStore.create_all` applies as it checks: what it applied before a doubt is taken back."""
    store = MemoryStore()
    parent = ("Parent", _PARENTS[0])
    name = (UniqueKey("name", '"a"'),)
    store.commit([Put(*parent, None, b"{}", 0), Put("Child", _CHILDREN[0], None, b"{}", 0, unique=name)])
    before = (_state(store), dict(store.parts), len(store.history))
    refs = frozenset({parent})
    batches: list[list[WriteOp]] = [
        # applied first: an object of a new table (its part is new), one pointing to the parent, one holding a name
        [Put("Other", _CHILDREN[1], None, b"{}", 0), Put("Child", _CHILDREN[1], None, b"{}", 0, refs,
             unique=(UniqueKey("name", '"b"'),)), Put("Child", _CHILDREN[2], None, b"{}", 0, unique=name)],
        [Put("Other", _CHILDREN[1], None, b"{}", 0), Put("Child", _CHILDREN[1], None, b"{}", 0, refs),
         Put("Child", _CHILDREN[2], None, b"{}", 0, frozenset({("Parent", _PARENTS[1])}))],  # dangling, seen last
        [Put("Other", _CHILDREN[1], None, b"{}", 0, unique=(UniqueKey("name", '"b"'),)),
         Put("Other", _CHILDREN[2], None, b"{}", 0, unique=(UniqueKey("name", '"b"'),))],  # one name twice
        [Put("Other", _CHILDREN[1], None, b"{}", 0), Put("Other", _CHILDREN[1], None, b"{}", 0)],  # one id twice
        [Put("Other", _CHILDREN[1], None, b"{}", 0), Put(*parent, None, b"{}", 0)],  # stored already
        [Put("Other", _CHILDREN[1], None, b"{}", 0, refs), Delete(*parent, None, 1)],  # not a create (and dangling)
    ]  # fmt: skip
    for ops in batches:
        assert store.create_all(ops) is None
        assert (_state(store), dict(store.parts), len(store.history)) == before
        with pytest.raises(errors.NbdbError):
            store.commit(ops)
        assert (_state(store), dict(store.parts), len(store.history)) == before
    assert store.referrers == {} and store.revision == 1
