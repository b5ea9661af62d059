"""Object ids: the fast version-4 UUID is the one ``uuid`` would make from the same bytes."""

from __future__ import annotations

import copy
import os
import pickle
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nbdb.models import LogicalSwitch
from nbdb.models.ids import BATCH, new_id, v4_from_bytes

pytestmark = pytest.mark.timeout(60)


@given(st.binary(min_size=16, max_size=16))
def test_an_id_is_uuid4_of_the_same_bytes(raw: bytes) -> None:
    made, expected = v4_from_bytes(raw), uuid.UUID(bytes=raw, version=4)
    assert type(made) is uuid.UUID
    assert made == expected and hash(made) == hash(expected) and str(made) == str(expected)
    assert made.int == expected.int and made.is_safe is expected.is_safe
    assert made.version == 4 and made.variant == uuid.RFC_4122


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
