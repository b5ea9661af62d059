"""Object ids: the fast version-4 UUID is the one ``uuid`` would make from the same bytes."""

from __future__ import annotations

import copy
import os
import pickle
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

import nbdb
from nbdb.codec import decode, encode
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.models import ids as ids_module
from nbdb.models.ids import BATCH, new_id, v4_from_bytes
from nbdb.spi import Record
from nbdb.writes import put_of

pytestmark = pytest.mark.timeout(60)


@given(st.binary(min_size=16, max_size=16))
def test_an_id_is_uuid4_of_the_same_bytes(raw: bytes) -> None:
    made, expected = v4_from_bytes(raw), uuid.UUID(bytes=raw, version=4)
    assert type(made) is uuid.UUID
    assert made == expected and hash(made) == hash(expected) and str(made) == str(expected)
    assert made.int == expected.int and made.is_safe is expected.is_safe
    assert made.version == 4 and made.variant == uuid.RFC_4122


@given(st.binary(min_size=16, max_size=16), st.integers(0, BATCH - 1))
def test_a_drawn_batch_is_uuid4_of_each_sixteen_bytes(block: bytes, at: int) -> None:
    # The batch sets the version and variant bits in the buffer and cuts it in C: every id is still the one
    # uuid makes of its 16 bytes (a newline byte included: the cut matches any byte).
    raw = os.urandom(16 * at) + block + os.urandom(16 * (BATCH - 1 - at))
    original = ids_module._urandom
    ids_module._urandom = lambda n: raw  # nbdb's own module attribute, put back below
    try:
        numbers = list(ids_module._draw())
    finally:
        ids_module._urandom = original
    assert numbers == [uuid.UUID(bytes=raw[i : i + 16], version=4).int for i in range(0, 16 * BATCH, 16)]


def test_new_ids_are_version_4_and_distinct() -> None:
    ids = [new_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    for value in ids:
        assert value.version == 4 and value.variant == uuid.RFC_4122
        assert uuid.UUID(str(value)) == value
        assert pickle.loads(pickle.dumps(value)) == value and copy.deepcopy(value) == value


def test_a_model_built_without_an_id_gets_a_new_one() -> None:
    a, b = LogicalSwitch(name="a"), LogicalSwitch(name="b")
    assert type(a.id) is uuid.UUID and a.id.version == 4 and a.id != b.id
    with pytest.raises(TypeError):
        a.id.int = 1  # type: ignore[misc]  # still an immutable UUID


def test_threads_drawing_ids_at_once_never_share_one() -> None:
    import threading

    out: list[list[uuid.UUID]] = [[] for _ in range(4)]
    start = threading.Barrier(4)

    def draw(mine: list[uuid.UUID]) -> None:
        start.wait()
        mine.extend(new_id() for _ in range(5_000))  # many batches each, refilled concurrently

    threads = [threading.Thread(target=draw, args=(mine,)) for mine in out]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    every = [value for mine in out for value in mine]
    assert len(every) == 20_000 and len(set(every)) == 20_000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_repeat_its_parents_next_ids() -> None:
    new_id()  # the parent holds a drawn batch
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write, b"".join(new_id().bytes for _ in range(BATCH)))
        finally:
            os._exit(0)
    os.close(write)
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    os.close(read)
    os.waitpid(pid, 0)
    child = {uuid.UUID(bytes=data[i : i + 16]) for i in range(0, len(data), 16)}
    parent = {new_id() for _ in range(BATCH)}
    assert len(child) == BATCH and not child & parent


def test_the_public_fallback_makes_the_same_ids() -> None:
    # What the module uses if a Python release changes UUID's layout (checked at import).
    from nbdb.models import ids

    assert ids._same_as_public(bytes(range(16)))
    raw = bytes(range(16, 32))
    assert ids._public_v4_from_bytes(raw) == v4_from_bytes(raw)
    made = ids._public_new_id()
    assert made.version == 4 and made.variant == uuid.RFC_4122 and made != ids._public_new_id()


# ---------------------------------------------------------------------------- unsubmitted ids (Put.fresh_id)


def _fresh(obj: LogicalSwitch) -> bool:
    """Whether a create of ``obj`` now would be marked as the first create of its id."""
    return put_of(obj, 0)[0].fresh_id


_COPIES = {
    "replace(name)": lambda o: o.replace(name=o.name + "'"),
    "replace(topic)": lambda o: o.replace(topic="other"),
    "model_copy": lambda o: o.model_copy(),
    "model_copy(update)": lambda o: o.model_copy(update={"topic": "third"}),
    "model_copy(deep)": lambda o: o.model_copy(deep=True),
    "copy.copy": copy.copy,
    "copy.deepcopy": copy.deepcopy,
    "explicit id": lambda o: LogicalSwitch(id=o.id, name="x", topic="fourth"),
    "dump/validate": lambda o: LogicalSwitch.model_validate(o.model_dump()),
    "json round trip": lambda o: LogicalSwitch.model_validate_json(o.model_dump_json()),
    "decoded": lambda o: decode(LogicalSwitch, Record(o.nbdb_table, o.id, o.topic, 1, encode(o))),
}


@given(st.lists(st.tuples(st.integers(0, 20), st.sampled_from([*_COPIES, "create", "pickle"])), max_size=25))
def test_only_the_first_create_of_a_made_id_is_fresh_whatever_copies_carry_it(
    steps: list[tuple[int, str]],
) -> None:
    # Every copy of an object shares its id: of all their creates, only the first may skip the
    # search of the other partitions, and none after the id left the process (pickled).
    lineage = [LogicalSwitch(name="sw", topic="t")]
    created = left = False
    for pick, step in steps:
        obj = lineage[pick % len(lineage)]
        if step == "create":
            assert _fresh(obj) is (not created and not left)
            created = True
        elif step == "pickle":
            lineage.append(pickle.loads(pickle.dumps(obj)))
            left = True
        else:
            lineage.append(_COPIES[step](obj))
    assert all(o.id == lineage[0].id for o in lineage)
    assert not _fresh(lineage[-1]) or not (created or left)


def test_ids_made_elsewhere_and_updates_are_never_fresh() -> None:
    assert not _fresh(LogicalSwitch(id=uuid.uuid4(), name="given"))
    assert not _fresh(LogicalSwitch(id=str(uuid.uuid4()), name="given as text"))
    made = LogicalSwitch(name="made")
    assert not put_of(made.replace(version=1), 1)[0].fresh_id  # an update claims nothing
    assert _fresh(made)


def test_a_stored_copy_and_what_derives_from_it_are_never_fresh() -> None:
    with nbdb.connect("memory://") as db:
        made = LogicalSwitch(name="sw", topic="a")
        early = made.replace(topic="b")  # a copy made before the first create
        stored = db.create(made)
        for obj in (made, early, stored, stored.replace(topic="b"), db.get(LogicalSwitch, made.id)):
            assert not _fresh(obj)
        with db.transaction() as txn:
            created = txn.create(LogicalSwitch(name="in a transaction", topic="a"))
        assert not _fresh(created.replace(topic="b"))


def test_a_failed_create_still_takes_the_id() -> None:
    # Whatever a create's outcome (refused here; unknown elsewhere), the id may have reached the store.
    with nbdb.connect("memory://") as db:
        port = LogicalSwitchPort(switch=uuid.uuid4(), name="p", topic="a")
        with pytest.raises(nbdb.ReferenceError):
            db.create(port)
        assert not _fresh(port.replace(topic="b"))


def test_two_threads_creating_one_made_id_never_both_see_it_fresh() -> None:
    import threading

    for _ in range(50):
        obj = LogicalSwitch(name="raced")
        start = threading.Barrier(4)
        seen: list[bool] = []

        def create(o: LogicalSwitch, start: threading.Barrier, seen: list[bool]) -> None:
            start.wait()
            seen.append(_fresh(o))

        threads = [threading.Thread(target=create, args=(obj, start, seen)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        assert sorted(seen) == [False, False, False, True]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_after_a_fork_neither_process_sees_an_earlier_id_as_fresh() -> None:
    before = LogicalSwitch(name="made before the fork")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            after = LogicalSwitch(name="made in the child")
            os.write(write, bytes([_fresh(before), _fresh(after)]))
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 2)
    os.close(read)
    os.waitpid(pid, 0)
    assert child == bytes([False, True])
    assert not _fresh(before)
    assert _fresh(LogicalSwitch(name="made in the parent after the fork"))


def test_unsubmitted_ids_are_bounded_and_forgetting_them_is_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    from nbdb.models import ids

    monkeypatch.setattr(ids, "UNSUBMITTED_LIMIT", 2 * BATCH)
    old = LogicalSwitch(name="built long before its create")
    for _ in range(4 * BATCH):
        new_id()
    assert len(ids._unsubmitted) <= 3 * BATCH
    assert not _fresh(old)  # forgotten: its create searches the store, as for any id made elsewhere
    assert _fresh(LogicalSwitch(name="recent"))
