"""Where the wide-column family believes objects live: a bounded map that answers as a plain one would."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbdb.families.widecolumn import partitions as P
from nbdb.families.widecolumn.options import WideColumnOptions

_IDS = [uuid.UUID(int=i | (4 << 76) | (0x8000 << 48)) for i in range(6)]
_keys = st.tuples(st.sampled_from(["ports", "switches"]), st.sampled_from(_IDS))
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("remember"), _keys, st.sampled_from(["a", "b"]), st.sampled_from([None, True, False])),
        st.tuples(st.just("forget"), _keys, st.just(""), st.just(None)),
    ),
    max_size=40,
)


def _partitions() -> P.Partitions:
    return P.Partitions(None, "ns", WideColumnOptions())  # type: ignore[arg-type]  # no read is made


@given(_steps)
def test_it_answers_as_a_dict_of_keys_would(steps: list[tuple[str, tuple[str, uuid.UUID], str, bool | None]]) -> None:
    p = _partitions()
    model: dict[tuple[str, uuid.UUID], tuple[str, bool]] = {}
    for kind, key, part, mortal in steps:
        if kind == "remember":
            step_mortal = mortal
            if mortal is None:
                known = model.get(key)
                mortal = known is not None and known[0] == part and known[1]
            p.remember(key, part, step_mortal)
            model[key] = (part, mortal)
        else:
            p.forget(key)
            model.pop(key, None)
    for table in ("ports", "switches"):
        for id in _IDS:
            known = model.get((table, id))
            assert p.cached_partition((table, id)) == (None if known is None else known[0])
            assert p.cached_mortal((table, id)) == (known is not None and known[1])


def test_a_key_is_its_table_and_id_not_the_id_alone() -> None:
    p = _partitions()
    id = uuid.uuid4()
    p.remember(("ports", id), "t1", False)
    assert p.cached_partition(("switches", id)) is None
    assert p.cached_partition(("ports", uuid.UUID(str(id)))) == "t1"  # an equal UUID, another object


def test_it_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    p = _partitions()
    limit = 50
    monkeypatch.setattr(P, "_TOPIC_CACHE_SIZE", limit)
    ids = [uuid.uuid4() for _ in range(3 * limit)]
    for i, id in enumerate(ids):
        p.remember(("ports", id), f"t{i % 3}", False)
        assert sum(1 for j in ids[: i + 1] if p.cached_partition(("ports", j)) is not None) <= limit
        p.remember(("ports", id), f"t{i % 3}", False)  # the same again: no growth
    assert p.cached_partition(("ports", ids[-1])) == f"t{(3 * limit - 1) % 3}"


def test_objects_in_one_partition_share_one_place() -> None:
    p = _partitions()
    a, b = uuid.uuid4(), uuid.uuid4()
    p.remember(("ports", a), "".join(["to", "pic"]), False)
    p.remember(("ports", b), "".join(["top", "ic"]), False)
    assert p._where_of(("ports", a)) is p._where_of(("ports", b))


def _replay(p: P.Partitions, steps: list[tuple[str, tuple[str, uuid.UUID], str, bool | None]]) -> None:
    for kind, key, part, mortal in steps:
        if kind == "remember":
            p.remember(key, part, mortal)
        else:
            p.forget(key)


@settings(max_examples=400)
@given(
    _steps,
    st.sampled_from(["ports", "switches"]),
    st.lists(st.sampled_from(_IDS), unique=True),
    st.sampled_from(["a", "b"]),
    st.sampled_from([3, 8, 200_000]),
)
def test_remember_all_is_remember_of_each(
    steps: list[tuple[str, tuple[str, uuid.UUID], str, bool | None]],
    table: str,
    ids: list[uuid.UUID],
    part: str,
    limit: int,
) -> None:
    # A listing's ids remembered in one step (the scan of a cold load) answer as one call per id would:
    # mortality as known before, bounded the same way (a small bound: the ids one by one).
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(P, "_TOPIC_CACHE_SIZE", limit)
        one, many = _partitions(), _partitions()
        _replay(one, steps)
        _replay(many, steps)
        for id in ids:
            one.remember((table, id), part)
        many.remember_all(table, ids, part)
        for key in [(t, id) for t in ("ports", "switches") for id in _IDS]:
            assert many.cached_partition(key) == one.cached_partition(key)
            assert many.cached_mortal(key) == one.cached_mortal(key)
        assert many._where_size == one._where_size == sum(map(len, one._where.values()))


def test_remember_all_keeps_what_was_known_of_a_ttl_in_the_same_partition() -> None:
    p = _partitions()
    p.remember(("ports", _IDS[0]), "a", True)
    p.remember(("ports", _IDS[1]), "b", True)
    p.remember_all("ports", _IDS[:3], "a")
    assert [p.cached_partition(("ports", id)) for id in _IDS[:3]] == ["a", "a", "a"]
    assert [p.cached_mortal(("ports", id)) for id in _IDS[:3]] == [True, False, False]
